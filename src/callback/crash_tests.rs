//! Tests across processes: a writer killed mid-transaction loses nothing it
//! acknowledged, and two processes claiming from one file never share a
//! request.
//!
//! Each test re-runs this test binary as its child (`current_exe()` with
//! `--exact <its own name>`), switched into the child role by an
//! environment variable; the child reports on stdout, one line per fact.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::store::CallbackStore;
use super::store_tests::{new_callback, utc};
use super::ListFilter;

/// Set in the child: the database path to work on.
const CHILD_DB: &str = "CALLFLOW_CALLBACK_CHILD_DB";
/// How many acknowledged requests the writer makes before it aborts.
const ACKED_BEFORE_ABORT: usize = 25;

/// Runs this binary's test `name` as a child working on `db`.
fn child(name: &str, db: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(CHILD_DB, db)
        // An abort may leave a core file in the working directory: keep it
        // in the temporary directory, which is removed afterwards.
        .current_dir(db.parent().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The values after `tag` in the child's stdout lines (anywhere in the
/// line: libtest prints `test <name> ... ` before the test's own output).
fn reported(stdout: &[u8], tag: &str) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| line.split_once(tag).map(|(_, value)| value.to_string()))
        .collect()
}

/// Child role: books requests as fast as it can, printing each number once
/// `request()` returned Ok, while a watcher thread aborts the process
/// (no destructors, no SQLite close: like `kill -9`) as soon as enough are
/// acknowledged, which lands in the middle of the next transaction.
fn write_until_aborted(db: &str) -> ! {
    let mut store = CallbackStore::open(db).unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let watched = acked.clone();
    std::thread::spawn(move || loop {
        if watched.load(Ordering::SeqCst) >= ACKED_BEFORE_ABORT {
            std::process::abort();
        }
        std::thread::yield_now();
    });
    let now = utc("2026-06-10 09:00");
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let number = format!("3712{i:07}");
        store
            .request(new_callback(&number, "support", 1), now)
            .unwrap();
        writeln!(out, "acked {number}").unwrap();
        out.flush().unwrap();
        acked.fetch_add(1, Ordering::SeqCst);
    }
    unreachable!("the watcher aborts the process")
}

#[test]
fn every_acknowledged_request_survives_an_abort_mid_write() {
    if let Ok(db) = std::env::var(CHILD_DB) {
        write_until_aborted(&db);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("callbacks.db");
    let name = "callback::crash_tests::every_acknowledged_request_survives_an_abort_mid_write";
    let output = child(name, &db).output().unwrap();
    assert!(
        !output.status.success(),
        "the child must die, not finish: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let acked = reported(&output.stdout, "acked ");
    assert!(acked.len() >= ACKED_BEFORE_ABORT, "{acked:?}");

    let store = CallbackStore::open(&db).unwrap();
    let stored: HashSet<String> = store
        .list(&ListFilter::default())
        .unwrap()
        .into_iter()
        .map(|c| c.number)
        .collect();
    for number in &acked {
        assert!(stored.contains(number), "acknowledged {number} was lost");
    }
    // Only the request in flight at the abort may be there unacknowledged.
    assert!(stored.len() <= acked.len() + 1, "{} stored", stored.len());
}

/// Stands for the dialling between two claims. Without it, the process
/// holding the lock claims again at once while the other sleeps in SQLite's
/// busy handler, and one process takes everything: no contention to test.
pub(super) fn dial_pause() {
    std::thread::sleep(std::time::Duration::from_millis(1));
}

/// Child role: claims one request at a time until none is left, printing
/// each id it got.
fn claim_until_empty(db: &str) {
    let mut store = CallbackStore::open(db).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    loop {
        let claimed = store
            .claim_due(utc("2026-06-10 09:00"), &|_| usize::MAX, 1)
            .unwrap();
        if claimed.is_empty() {
            return;
        }
        for callback in claimed {
            writeln!(out, "claimed {}", callback.id).unwrap();
        }
        dial_pause();
    }
}

#[test]
fn two_processes_claiming_from_one_file_never_share_a_request() {
    if let Ok(db) = std::env::var(CHILD_DB) {
        claim_until_empty(&db);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("callbacks.db");
    let now = utc("2026-06-10 09:00");
    let mut store = CallbackStore::open(&db).unwrap();
    let total = 120;
    for i in 0..total {
        store
            .request(new_callback(&format!("{i:05}"), "support", 1), now)
            .unwrap();
    }
    let name = "callback::crash_tests::two_processes_claiming_from_one_file_never_share_a_request";
    let mut other = child(name, &db).spawn().unwrap();
    let mut lines = BufReader::new(other.stdout.take().unwrap()).lines();
    // Start together, so that the two really contend for the lock.
    while !lines.next().unwrap().unwrap().ends_with("ready") {}
    let mut mine = Vec::new();
    loop {
        let claimed = store.claim_due(now, &|_| usize::MAX, 1).unwrap();
        if claimed.is_empty() {
            break;
        }
        mine.extend(claimed.into_iter().map(|c| c.id.to_string()));
        dial_pause();
    }
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let output = other.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs = reported(rest.join("\n").as_bytes(), "claimed ");
    let all: Vec<&String> = mine.iter().chain(&theirs).collect();
    let unique: HashSet<&&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        total,
        "mine {}, theirs {}",
        mine.len(),
        theirs.len()
    );
    assert_eq!(unique.len(), total, "a request was claimed twice");
}
