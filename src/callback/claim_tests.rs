//! Claiming for dialling: order, pacing, windows, exclusivity between
//! handles, and recovery of what a crash left being dialled.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use chrono::TimeDelta;

use super::crash_tests::dial_pause;
use super::scheduler::Next;
use super::store::{CallbackStore, Claimant, StoreError};
use super::store_tests::{ids, memory, new_callback, no_limit, utc};
use super::{AttemptOutcome, Callback, State};

#[test]
fn claim_takes_highest_priority_first_then_oldest() {
    let mut store = memory();
    let mut at = utc("2026-06-10 09:00");
    let mut id_of = Vec::new();
    for (number, priority) in [("1", 1), ("2", 5), ("3", 1), ("4", 9), ("5", 5)] {
        id_of.push(
            store
                .request(new_callback(number, "q", priority), at)
                .unwrap()
                .id(),
        );
        at += TimeDelta::minutes(1);
    }
    let claimed = store.claim_due(at, &no_limit, 3).unwrap();
    assert_eq!(ids(&claimed), [id_of[3], id_of[1], id_of[4]]);
    assert!(claimed
        .iter()
        .all(|c| c.state == State::Dialling && c.attempts == 1));
    let rest = store.claim_due(at, &no_limit, 10).unwrap();
    assert_eq!(ids(&rest), [id_of[0], id_of[2]]);
    assert!(store.claim_due(at, &no_limit, 10).unwrap().is_empty());
}

#[test]
fn claim_keeps_each_queue_within_its_pacing_limit() {
    let mut store = memory();
    let now = utc("2026-06-10 09:00");
    for i in 0..5 {
        store
            .request(new_callback(&format!("10{i}"), "sales", 1), now)
            .unwrap();
        store
            .request(new_callback(&format!("20{i}"), "support", 1), now)
            .unwrap();
    }
    let limit = |queue: &str| if queue == "sales" { 2 } else { 1 };
    let first = store.claim_due(now, &limit, 10).unwrap();
    let count = |cs: &[Callback], q: &str| cs.iter().filter(|c| c.queue == q).count();
    assert_eq!((count(&first, "sales"), count(&first, "support")), (2, 1));
    // The slots are taken until an attempt ends.
    assert!(store.claim_due(now, &limit, 10).unwrap().is_empty());
    let done = first.iter().find(|c| c.queue == "sales").unwrap().id;
    store
        .settle_attempt(done, now, &AttemptOutcome::Completed, &Next::Complete)
        .unwrap();
    let next = store.claim_due(now, &limit, 10).unwrap();
    assert_eq!((count(&next, "sales"), count(&next, "support")), (1, 0));
    // A closed queue (limit 0) is not dialled at all.
    assert!(store.claim_due(now, &|_| 0, 10).unwrap().is_empty());
}

#[test]
fn claim_waits_for_not_before_and_next_attempt_and_expires_after_not_after() {
    let mut store = memory();
    // Hours pass between the claims here, with no store thread renewing:
    // a lease longer than that keeps them.
    store.set_claimant(Claimant {
        lease: std::time::Duration::from_secs(86_400),
        ..Claimant::default()
    });
    let now = utc("2026-06-10 09:00");
    let mut later = new_callback("1", "q", 1);
    later.not_before = Some(utc("2026-06-10 12:00"));
    let later = store.request(later, now).unwrap().id();
    let mut short = new_callback("2", "q", 1);
    short.not_after = Some(utc("2026-06-10 09:30"));
    let short = store.request(short, now).unwrap().id();
    let retried = store.request(new_callback("3", "q", 1), now).unwrap().id();

    assert_eq!(ids(&store.claim_due(now, &|_| 1, 10).unwrap()), [short]);
    store
        .settle_attempt(
            short,
            now,
            &AttemptOutcome::Busy,
            &Next::RetryAt(utc("2026-06-10 09:20")),
        )
        .unwrap();
    assert_eq!(
        ids(&store.claim_due(now, &no_limit, 10).unwrap()),
        [retried]
    );
    store
        .settle_attempt(
            retried,
            now,
            &AttemptOutcome::NoAnswer,
            &Next::RetryAt(utc("2026-06-10 11:00")),
        )
        .unwrap();
    // 09:40: `short` was due at 09:20 but its window ended at 09:30.
    assert!(store
        .claim_due(utc("2026-06-10 09:40"), &no_limit, 10)
        .unwrap()
        .is_empty());
    let expired = store.get(short).unwrap();
    assert_eq!(expired.state, State::Failed);
    assert!(expired.last_error.unwrap().contains("not_after"));
    assert_eq!(
        ids(&store
            .claim_due(utc("2026-06-10 11:00"), &no_limit, 10)
            .unwrap()),
        [retried]
    );
    assert_eq!(
        ids(&store
            .claim_due(utc("2026-06-10 12:00"), &no_limit, 10)
            .unwrap()),
        [later]
    );
    assert_eq!(store.get(retried).unwrap().attempts, 2);
}

#[test]
fn two_handles_on_one_file_never_claim_the_same_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbacks.db");
    let now = utc("2026-06-10 09:00");
    let mut store = CallbackStore::open(&path).unwrap();
    for i in 0..60 {
        let queue = ["a", "b", "c"][i % 3];
        store
            .request(new_callback(&format!("{i:05}"), queue, (i % 4) as i32), now)
            .unwrap();
    }
    let start = Arc::new(Barrier::new(2));
    let claimers: Vec<_> = (0..2)
        .map(|_| {
            let (path, start) = (path.clone(), start.clone());
            std::thread::spawn(move || {
                let mut store = CallbackStore::open(&path).unwrap();
                let mut got = Vec::new();
                start.wait();
                loop {
                    let claimed = store.claim_due(now, &no_limit, 2).unwrap();
                    if claimed.is_empty() {
                        return got;
                    }
                    got.extend(ids(&claimed));
                    dial_pause();
                }
            })
        })
        .collect();
    let all: Vec<i64> = claimers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 60, "every request claimed exactly once");
    assert_eq!(unique.len(), 60);
    let attempts: usize = (1..=60).map(|id| store.attempts(id).unwrap().len()).sum();
    assert_eq!(attempts, 60, "one attempt row per claim");
}

#[test]
fn recover_after_a_crash_redials_what_was_being_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbacks.db");
    let now = utc("2026-06-10 09:00");
    let (ringing, answered, waiting) = {
        let mut store = CallbackStore::open(&path).unwrap();
        let ringing = store.request(new_callback("1", "q", 1), now).unwrap().id();
        let answered = store.request(new_callback("2", "q", 1), now).unwrap().id();
        store.claim_due(now, &no_limit, 2).unwrap();
        store
            .finish_attempt(answered, now, &AttemptOutcome::Answered)
            .unwrap();
        let waiting = store.request(new_callback("3", "q", 1), now).unwrap().id();
        // Dropped with two requests dialling: what a killed process leaves.
        (ringing, answered, waiting)
    };
    let restart = utc("2026-06-10 09:05");
    let mut store = CallbackStore::open(&path).unwrap();
    assert_eq!(store.recover(restart).unwrap(), 2);
    for id in [ringing, answered] {
        let callback = store.get(id).unwrap();
        assert_eq!(
            (callback.state, callback.next_attempt_at),
            (State::Pending, restart)
        );
    }
    let result = |id| store.attempts(id).unwrap()[0].result.clone();
    assert_eq!(result(ringing).as_deref(), Some("interrupted"));
    assert_eq!(result(answered).as_deref(), Some("answered, interrupted"));
    assert_eq!(
        store.get(waiting).unwrap().next_attempt_at,
        now,
        "untouched"
    );
    let redialled = store.claim_due(restart, &no_limit, 10).unwrap();
    assert_eq!(ids(&redialled), [ringing, answered, waiting]);
    assert_eq!(redialled[0].attempts, 2);
    assert_eq!(store.recover(restart).unwrap(), 3, "all three dialling now");
}

#[test]
fn recover_completes_what_was_already_handed_to_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbacks.db");
    let now = utc("2026-06-10 09:00");
    let id = {
        let mut store = CallbackStore::open(&path).unwrap();
        let id = store.request(new_callback("1", "q", 1), now).unwrap().id();
        store.claim_due(now, &no_limit, 1).unwrap();
        store
            .finish_attempt(id, now, &AttemptOutcome::Connected)
            .unwrap();
        id
    };
    let mut store = CallbackStore::open(&path).unwrap();
    assert_eq!(store.recover(utc("2026-06-10 09:05")).unwrap(), 0);
    let callback = store.get(id).unwrap();
    assert_eq!(callback.state, State::Completed);
    assert!(callback
        .last_error
        .unwrap_or_default()
        .contains("transfer accepted"));
    assert!(store
        .claim_due(utc("2026-06-10 09:06"), &no_limit, 10)
        .unwrap()
        .is_empty());
}

fn claimant(node: &str, run: &str, lease_s: u64) -> Claimant {
    Claimant {
        node: node.into(),
        run: run.into(),
        lease: std::time::Duration::from_secs(lease_s),
    }
}

/// Two nodes on one store: a dead node's claim is taken over by the other
/// once its lease runs out (not before, and not while it is renewed), and
/// the dead node's late word is then refused.
#[test]
fn a_lapsed_lease_is_taken_over_and_the_old_claimants_word_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbacks.db");
    let mut a = CallbackStore::open(&path).unwrap();
    a.set_claimant(claimant("a", "1", 30));
    let mut b = CallbackStore::open(&path).unwrap();
    b.set_claimant(claimant("b", "1", 30));
    let now = utc("2026-06-10 09:00");
    let id = a.request(new_callback("1", "q", 1), now).unwrap().id();
    assert_eq!(ids(&a.claim_due(now, &no_limit, 10).unwrap()), [id]);
    // Within the lease, and with it renewed, b leaves it alone.
    let t = |s: i64| now + TimeDelta::seconds(s);
    assert!(b.claim_due(t(20), &no_limit, 10).unwrap().is_empty());
    assert_eq!(a.renew(t(20)).unwrap(), 1);
    assert!(b.claim_due(t(45), &no_limit, 10).unwrap().is_empty());
    // b restarting does not take a's claim either: a is another node.
    assert_eq!(b.recover(t(46)).unwrap(), 0);
    // a stops renewing (dead): 30 s after its last renewal b takes over.
    let taken = b.claim_due(t(51), &no_limit, 10).unwrap();
    assert_eq!(ids(&taken), [id]);
    assert_eq!(taken[0].attempts, 2);
    let attempts = b.attempts(id).unwrap();
    assert_eq!(attempts[0].result.as_deref(), Some("interrupted"));
    // a's late word would overwrite b's attempt: refused.
    let late = a.settle_attempt(id, t(52), &AttemptOutcome::Busy, &Next::RetryAt(t(60)));
    assert!(
        matches!(late, Err(StoreError::LostClaim { ref by, .. }) if by == "b#1"),
        "{late:?}"
    );
    b.settle_attempt(id, t(53), &AttemptOutcome::Completed, &Next::Complete)
        .unwrap();
    assert_eq!(b.get(id).unwrap().state, State::Completed);

    // Taken back but not claimed again (its queue is full for b): the
    // request is pending, held by no one, and a's late word still counts
    // for nothing.
    let other = a.request(new_callback("2", "q", 1), t(60)).unwrap().id();
    a.claim_due(t(60), &no_limit, 10).unwrap();
    assert!(b.claim_due(t(95), &|_| 0, 10).unwrap().is_empty());
    assert_eq!(b.get(other).unwrap().state, State::Pending);
    let late = a.settle_attempt(other, t(96), &AttemptOutcome::Busy, &Next::Fail("x".into()));
    assert!(
        matches!(late, Err(StoreError::LostClaim { .. })),
        "{late:?}"
    );
    assert_eq!(b.get(other).unwrap().state, State::Pending);
}

/// A node's new run takes back its earlier run's claims at once (that run
/// is surely dead), but not another node's.
#[test]
fn a_restarted_node_takes_back_its_own_claims_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbacks.db");
    let now = utc("2026-06-10 09:00");
    let (mine, theirs) = {
        let mut a = CallbackStore::open(&path).unwrap();
        a.set_claimant(claimant("a", "1", 60));
        let mine = a.request(new_callback("1", "q", 1), now).unwrap().id();
        a.claim_due(now, &no_limit, 10).unwrap();
        let mut b = CallbackStore::open(&path).unwrap();
        b.set_claimant(claimant("b", "1", 60));
        let theirs = b.request(new_callback("2", "q", 1), now).unwrap().id();
        b.claim_due(now, &no_limit, 10).unwrap();
        (mine, theirs)
    };
    let mut a = CallbackStore::open(&path).unwrap();
    a.set_claimant(claimant("a", "2", 60));
    assert_eq!(a.recover(now + TimeDelta::seconds(5)).unwrap(), 1);
    assert_eq!(a.get(mine).unwrap().state, State::Pending);
    assert_eq!(a.get(theirs).unwrap().state, State::Dialling);
}
