//! Several nodes on one PostgreSQL callback store: Debian's PostgreSQL is
//! started by the test in a temporary data directory (as the unprivileged
//! `postgres` user when the tests run as root), two `callflow serve`
//! nodes share it, SIPp books callbacks through both and plays the trunk
//! they dial.

#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use callflow::callback::{ListFilter, State};
use callflow::server::postgres::PgStore;

use crate::sipp::{free_udp_port, sipp_uas, Server};

/// A PostgreSQL server of the test's own, stopped when dropped.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL (apt-get install -y postgresql)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("pg_ctl").exists())
            .max()
            .expect("pg_ctl under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().expect("tempdir");
        // initdb refuses root: the server runs as `postgres` then.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the data directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let pg = Postgres {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("path"),
                "-U",
                "callflow",
                "-A",
                "trust",
            ],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            pg.dir.path().display()
        );
        let log = pg.dir.path().join("postgres.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("path"),
                "-l",
                log.to_str().expect("path"),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://callflow@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = std::panic::catch_unwind(|| {
            self.run(
                "pg_ctl",
                &["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"],
            )
        });
    }
}

/// A node `name` on the store at `url`, dialling through a trunk on
/// `trunk_port`, with claims leased for `lease`.
fn node(name: &str, url: &str, trunk_port: u16, lease: &str) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "node: {name}\n\
             trunk: {{ address: \"127.0.0.1:{trunk_port}\", domain: trunk.test, from: \"37160000000\" }}\n\
             dialler: {{ poll: 200ms, max_attempts: 1, max_in_progress: 10, lease: {lease} }}\n"
        ),
    )
    .expect("write config");
    let config = config.display().to_string();
    Server::start_in(
        dir,
        &[
            "--route",
            "8002=cb",
            "--config",
            &config,
            "--callbacks",
            url,
        ],
    )
}

/// `n` callers, numbers `prefix1` .. `prefixN`, book a callback each
/// through `server`.
fn book(server: &Server, prefix: &str, n: usize) {
    let out = server.sipp(
        "callback_book",
        &[
            "-m",
            &n.to_string(),
            "-l",
            "10",
            "-r",
            "20",
            "-key",
            "prefix",
            prefix,
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        server.explain("callback_book", &out)
    );
}

/// Waits up to `within` for every request in the store to be `state`.
fn wait_all(store: &mut PgStore, n: usize, state: State, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let list = store.list(&ListFilter::default()).expect("list");
        if list.len() == n && list.iter().all(|c| c.state == state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all {n} {state}: {:?}",
            list.iter()
                .map(|c| (c.id, c.state.as_str(), c.attempts))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The callback ids in a node's records of calls it placed.
fn dialled(server: &Server) -> Vec<i64> {
    let path = server.dir.path().join("calls.jsonl");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["callback"]["id"].as_i64())
        .collect()
}

/// SIPp as a trunk where everyone is busy, for `calls` INVITEs.
fn busy_trunk(dir: &Path, port: u16, calls: usize) -> Child {
    sipp_uas(
        dir,
        "trunk_busy_any",
        "127.0.0.1",
        port,
        &["-m", &calls.to_string(), "-timeout", "90s"],
    )
}

#[test]
fn fifty_callbacks_booked_on_two_nodes_are_each_dialled_exactly_once() {
    let pg = Postgres::start();
    let trunk_port = free_udp_port();
    let trunk_dir = tempfile::tempdir().expect("tempdir");
    let trunk = busy_trunk(trunk_dir.path(), trunk_port, 50);
    let a = node("node-a", &pg.url(), trunk_port, "30s");
    let b = node("node-b", &pg.url(), trunk_port, "30s");
    std::thread::scope(|s| {
        s.spawn(|| book(&a, "3712100", 25));
        s.spawn(|| book(&b, "3712200", 25));
    });
    let mut store = PgStore::open(&pg.url()).expect("the store");
    // Busy, with one attempt allowed: each request fails after its one call.
    wait_all(&mut store, 50, State::Failed, Duration::from_secs(60));
    let out = trunk.wait_with_output().expect("the trunk");
    assert_eq!(
        out.status.code(),
        Some(0),
        "the trunk took exactly 50 calls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for c in store.list(&ListFilter::default()).expect("list") {
        assert_eq!(c.attempts, 1, "{c:?}");
        assert_eq!(store.attempts(c.id).expect("attempts").len(), 1);
    }
    let (by_a, by_b) = (dialled(&a), dialled(&b));
    let mut all: Vec<i64> = by_a.iter().chain(&by_b).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        50,
        "every request dialled once: {by_a:?} {by_b:?}"
    );
    assert_eq!(by_a.len() + by_b.len(), 50, "and none twice");
    assert!(
        !by_a.is_empty() && !by_b.is_empty(),
        "both nodes dialled: {} and {}",
        by_a.len(),
        by_b.len()
    );
}

#[test]
fn a_node_killed_while_dialling_has_its_callbacks_dialled_by_the_other_after_the_lease() {
    let pg = Postgres::start();
    // Node A's trunk takes the INVITEs and never answers: A is mid-dial.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut a = node(
        "node-a",
        &pg.url(),
        silent.local_addr().expect("addr").port(),
        "3s",
    );
    book(&a, "3712300", 5);
    let mut store = PgStore::open(&pg.url()).expect("the store");
    wait_all(&mut store, 5, State::Dialling, Duration::from_secs(20));
    let _ = Command::new("kill")
        .args(["-KILL", &a.child.id().to_string()])
        .status();
    let _ = a.child.wait();
    let killed = chrono::Utc::now();
    // Node B starts after A died: A's claims are not B's, so B takes them
    // only once their leases run out (3 s after A's last renewal).
    let trunk_port = free_udp_port();
    let trunk_dir = tempfile::tempdir().expect("tempdir");
    let trunk = busy_trunk(trunk_dir.path(), trunk_port, 5);
    let b = node("node-b", &pg.url(), trunk_port, "3s");
    wait_all(&mut store, 5, State::Failed, Duration::from_secs(30));
    let out = trunk.wait_with_output().expect("the trunk");
    assert_eq!(out.status.code(), Some(0), "B dialled each once");
    for c in store.list(&ListFilter::default()).expect("list") {
        let attempts = store.attempts(c.id).expect("attempts");
        assert_eq!(attempts.len(), 2, "A's and B's: {attempts:?}");
        assert_eq!(attempts[0].result.as_deref(), Some("interrupted"));
        assert_eq!(attempts[1].result.as_deref(), Some("busy"));
        // Never two at once: B's call started after A was gone.
        assert!(attempts[1].started_at >= killed - chrono::TimeDelta::milliseconds(500));
    }
    assert_eq!(dialled(&b).len(), 5, "{}", b.log());
    assert!(b.log().contains("lease expired"), "{}", b.log());
}

/// The store itself, two nodes' handles on one database: a booking by
/// both merges, a lapsed lease is taken over, the old holder's late word
/// is refused, and a node's new run takes back its old run's claims.
#[test]
fn leases_and_fencing_on_postgres() {
    use callflow::callback::scheduler::Next;
    use callflow::callback::store::{Claimant, StoreError};
    use callflow::callback::{AttemptOutcome, NewCallback, Requested};

    let pg = Postgres::start();
    let claimant = |node: &str, run: &str| Claimant {
        node: node.into(),
        run: run.into(),
        lease: Duration::from_secs(30),
    };
    let mut a = PgStore::open(&pg.url()).expect("a");
    a.set_claimant(claimant("a", "1"));
    let mut b = PgStore::open(&pg.url()).expect("b");
    b.set_claimant(claimant("b", "1"));
    let now = chrono::DateTime::parse_from_rfc3339("2026-06-10T09:00:00Z")
        .expect("time")
        .to_utc();
    let t = |s: i64| now + chrono::TimeDelta::seconds(s);
    let new = |number: &str, priority| NewCallback {
        number: number.into(),
        queue: "q".into(),
        priority,
        context: vec![("intent".into(), "billing".into())],
        not_before: None,
        not_after: None,
    };
    let first = a.request(new("371", 1), now).expect("request");
    let again = b.request(new("371", 5), t(1)).expect("request");
    assert!(matches!(first, Requested::Created(_)));
    assert_eq!(again, Requested::Merged(first.id()));
    assert_eq!(a.get(first.id()).expect("get").priority, 5);
    let id = first.id();

    let no_limit = |_: &str| usize::MAX;
    assert_eq!(a.claim_due(t(2), &no_limit, 10).expect("claim").len(), 1);
    assert!(b.claim_due(t(20), &no_limit, 10).expect("claim").is_empty());
    assert_eq!(a.renew(t(20)).expect("renew"), 1);
    assert!(b.claim_due(t(45), &no_limit, 10).expect("claim").is_empty());
    assert_eq!(b.recover(t(46)).expect("recover"), 0, "not b's own");
    let taken = b.claim_due(t(51), &no_limit, 10).expect("claim");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].attempts, 2);
    let late = a.settle_attempt(id, t(52), &AttemptOutcome::Busy, &Next::RetryAt(t(60)));
    assert!(
        matches!(late, Err(StoreError::LostClaim { ref by, .. }) if by == "b#1"),
        "{late:?}"
    );
    let attempts = b.attempts(id).expect("attempts");
    assert_eq!(attempts[0].result.as_deref(), Some("interrupted"));

    // b restarts as a new run: its old run's claim comes back at once.
    let mut b2 = PgStore::open(&pg.url()).expect("b2");
    b2.set_claimant(claimant("b", "2"));
    assert_eq!(b2.recover(t(53)).expect("recover"), 1);
    assert_eq!(b2.get(id).expect("get").state, State::Pending);
    let stats = b2.stats().expect("stats");
    assert!(stats.by_state.contains(&(State::Pending, 1)));
    b2.ping().expect("ping");

    // The admin CLI on the same database.
    let url = pg.url();
    let db = Path::new(&url);
    let shown = crate::sipp::callbacks_cli(db, &["show", &id.to_string()]);
    assert_eq!(
        shown.lines().filter(|l| l.starts_with("attempt")).count(),
        2,
        "{shown}"
    );
    assert!(crate::sipp::callbacks_cli(db, &["cancel", &id.to_string()]).contains("cancelled"));
    assert!(crate::sipp::callbacks_cli(db, &["list", "--state", "cancelled"]).contains("371"));
    assert!(crate::sipp::callbacks_cli(db, &["retry", &id.to_string()]).contains("due again"));
    assert_eq!(b2.get(id).expect("get").state, State::Pending);
}
