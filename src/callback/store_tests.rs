//! The store's rules: booking and merging, attempt outcomes, the admin's
//! state changes and the schema. Claiming is in `claim_tests`.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

use super::scheduler::Next;
use super::store::{CallbackStore, StoreError};
use super::{AttemptOutcome, ListFilter, NewCallback, Requested, State};

/// "YYYY-MM-DD HH:MM" in UTC.
pub(super) fn utc(text: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M")
        .unwrap()
        .and_utc()
}

pub(super) fn new_callback(number: &str, queue: &str, priority: i32) -> NewCallback {
    NewCallback {
        number: number.into(),
        queue: queue.into(),
        priority,
        context: vec![("account".into(), "123456".into())],
        not_before: None,
        not_after: None,
    }
}

pub(super) fn no_limit(_: &str) -> usize {
    usize::MAX
}

pub(super) fn ids(callbacks: &[super::Callback]) -> Vec<i64> {
    callbacks.iter().map(|c| c.id).collect()
}

pub(super) fn memory() -> CallbackStore {
    CallbackStore::open_in_memory().unwrap()
}

#[test]
fn second_request_from_same_number_and_queue_is_merged() {
    let mut store = memory();
    let first = store
        .request(
            new_callback("37120000001", "support", 5),
            utc("2026-06-10 09:00"),
        )
        .unwrap();
    let mut again = new_callback("37120000001", "support", 8);
    again.context = vec![
        ("account".into(), "999999".into()),
        ("vip".into(), "1".into()),
    ];
    let second = store.request(again, utc("2026-06-10 09:10")).unwrap();
    assert_eq!(second, Requested::Merged(first.id()));
    let lower = new_callback("37120000001", "support", 1);
    assert_eq!(
        store.request(lower, utc("2026-06-10 09:20")).unwrap(),
        Requested::Merged(first.id())
    );

    let merged = store.get(first.id()).unwrap();
    assert_eq!(
        merged.requested_at,
        utc("2026-06-10 09:00"),
        "earliest kept"
    );
    assert_eq!(merged.priority, 8, "higher priority kept");
    assert_eq!(merged.context, vec![("account".into(), "123456".into())]);
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 1);

    // Another queue is another promise.
    let other = store
        .request(
            new_callback("37120000001", "billing", 5),
            utc("2026-06-10 09:30"),
        )
        .unwrap();
    assert!(matches!(other, Requested::Created(id) if id != first.id()));
}

#[test]
fn request_being_dialled_still_absorbs_a_new_request_but_a_finished_one_does_not() {
    let mut store = memory();
    let now = utc("2026-06-10 09:00");
    let id = store
        .request(new_callback("3712", "q", 1), now)
        .unwrap()
        .id();
    store.claim_due(now, &no_limit, 10).unwrap();
    assert_eq!(
        store.request(new_callback("3712", "q", 1), now).unwrap(),
        Requested::Merged(id)
    );
    store
        .settle_attempt(id, now, &AttemptOutcome::Completed, &Next::Complete)
        .unwrap();
    let again = store.request(new_callback("3712", "q", 1), now).unwrap();
    assert!(matches!(again, Requested::Created(new) if new != id));
}

#[test]
fn bad_number_or_queue_is_refused_and_nothing_is_stored() {
    let mut store = memory();
    let now = utc("2026-06-10 09:00");
    for number in ["", "+3712", "371 20", "37a"] {
        let err = store
            .request(new_callback(number, "q", 1), now)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidNumber(_)),
            "{number}: {err}"
        );
    }
    let err = store
        .request(new_callback("3712", " ", 1), now)
        .unwrap_err();
    assert!(matches!(err, StoreError::EmptyQueue));
    assert!(store.list(&ListFilter::default()).unwrap().is_empty());
}

#[test]
fn outcomes_move_the_request_and_the_attempt_keeps_the_latest() {
    let mut store = memory();
    let now = utc("2026-06-10 09:00");
    let id = store.request(new_callback("1", "q", 1), now).unwrap().id();
    store.claim_due(now, &no_limit, 1).unwrap();
    let step =
        |store: &mut CallbackStore, outcome| store.finish_attempt(id, now, &outcome).unwrap().state;
    assert_eq!(step(&mut store, AttemptOutcome::Answered), State::Dialling);
    assert_eq!(
        step(&mut store, AttemptOutcome::Connected),
        State::Connected
    );
    assert_eq!(
        step(&mut store, AttemptOutcome::Completed),
        State::Completed
    );
    let attempts = store.attempts(id).unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].result.as_deref(), Some("completed"));
    assert_eq!(attempts[0].ended_at, Some(now));
    // Outcomes of a request never claimed are refused.
    let other = store.request(new_callback("2", "q", 1), now).unwrap().id();
    let err = store
        .finish_attempt(other, now, &AttemptOutcome::Busy)
        .unwrap_err();
    assert!(matches!(err, StoreError::NoAttempt(i) if i == other));
    assert!(matches!(
        store.get(999).unwrap_err(),
        StoreError::NotFound(999)
    ));
}

#[test]
fn failed_attempt_results_are_recorded_as_text() {
    let mut store = memory();
    let mut now = utc("2026-06-10 09:00");
    let id = store.request(new_callback("1", "q", 1), now).unwrap().id();
    let outcomes = [
        AttemptOutcome::Busy,
        AttemptOutcome::NoAnswer,
        AttemptOutcome::Failed("503".into()),
    ];
    for outcome in &outcomes {
        store.claim_due(now, &no_limit, 1).unwrap();
        now += TimeDelta::minutes(1);
        store
            .settle_attempt(id, now, outcome, &Next::RetryAt(now))
            .unwrap();
    }
    store.claim_due(now, &no_limit, 1).unwrap();
    let state = store
        .settle_attempt(
            id,
            now,
            &AttemptOutcome::Busy,
            &Next::Fail("3 attempts".into()),
        )
        .unwrap();
    assert_eq!(state, State::Failed);
    let results: Vec<_> = store
        .attempts(id)
        .unwrap()
        .into_iter()
        .map(|a| a.result.unwrap())
        .collect();
    assert_eq!(results, ["busy", "no-answer", "failed: 503", "busy"]);
    let failed = store.get(id).unwrap();
    assert_eq!(
        (failed.attempts, failed.last_error.as_deref()),
        (4, Some("3 attempts"))
    );
}

#[test]
fn cancel_is_for_open_requests_only() {
    let mut store = memory();
    let now = utc("2026-06-10 09:00");
    let pending = store.request(new_callback("1", "q", 1), now).unwrap().id();
    let dialling = store.request(new_callback("2", "q", 1), now).unwrap().id();
    store.cancel(pending, now).unwrap();
    store.claim_due(now, &no_limit, 1).unwrap();
    store.cancel(dialling, now).unwrap();
    // The dialler learns of the cancel when it reports; its decision is dropped.
    let state = store
        .settle_attempt(dialling, now, &AttemptOutcome::Busy, &Next::RetryAt(now))
        .unwrap();
    assert_eq!(state, State::Cancelled);
    assert_eq!(
        store.attempts(dialling).unwrap()[0].result.as_deref(),
        Some("busy")
    );

    let connected = store.request(new_callback("3", "q", 1), now).unwrap().id();
    store.claim_due(now, &no_limit, 1).unwrap();
    store
        .finish_attempt(connected, now, &AttemptOutcome::Connected)
        .unwrap();
    for (id, state) in [(pending, State::Cancelled), (connected, State::Connected)] {
        let err = store.cancel(id, now).unwrap_err();
        assert!(
            matches!(err, StoreError::WrongState { state: s, .. } if s == state),
            "{err}"
        );
    }
    store.complete(connected, now).unwrap();
    let err = store.cancel(connected, now).unwrap_err();
    assert_eq!(
        err.to_string(),
        "callback 3 is completed; it cannot be cancelled"
    );
}

#[test]
fn retry_reopens_failed_or_cancelled_with_a_fresh_count() {
    let mut store = memory();
    let now = utc("2026-06-10 09:00");
    let id = store.request(new_callback("1", "q", 1), now).unwrap().id();
    store.claim_due(now, &no_limit, 1).unwrap();
    let err = store.retry(id, now).unwrap_err();
    assert!(matches!(
        err,
        StoreError::WrongState {
            state: State::Dialling,
            ..
        }
    ));
    store.fail(id, now, "no answer three times").unwrap();

    let later = utc("2026-06-11 10:00");
    store.retry(id, later).unwrap();
    let retried = store.get(id).unwrap();
    assert_eq!(retried.state, State::Pending);
    assert_eq!((retried.attempts, retried.next_attempt_at), (0, later));
    assert_eq!(retried.last_error, None);
    assert_eq!(store.attempts(id).unwrap().len(), 1, "history kept");

    // A cancelled one cannot reopen beside a newer open request.
    store.cancel(id, later).unwrap();
    let newer = store
        .request(new_callback("1", "q", 1), later)
        .unwrap()
        .id();
    let err = store.retry(id, later).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyOpen { existing, .. } if existing == newer));
    store.cancel(newer, later).unwrap();
    store.retry(id, later).unwrap();
    // The dialler's late word on a cancelled request changes nothing.
    assert_eq!(store.complete(newer, later).unwrap(), State::Cancelled);
}

#[test]
fn list_filters_by_state_and_queue() {
    let mut store = memory();
    let now = utc("2026-06-10 09:00");
    let earlier = utc("2026-06-10 08:30");
    store
        .request(new_callback("1", "sales", 1), earlier)
        .unwrap();
    store.request(new_callback("2", "support", 1), now).unwrap();
    store.request(new_callback("3", "support", 1), now).unwrap();
    store
        .claim_due(now, &|q| usize::from(q == "support"), 10)
        .unwrap();
    let count = |state, queue: Option<&str>| {
        let filter = ListFilter {
            state,
            queue: queue.map(String::from),
            limit: None,
        };
        store.list(&filter).unwrap().len()
    };
    assert_eq!(count(None, None), 3);
    assert_eq!(count(Some(State::Pending), None), 2);
    assert_eq!(count(None, Some("support")), 2);
    assert_eq!(count(Some(State::Dialling), Some("support")), 1);
    assert_eq!(count(Some(State::Dialling), Some("sales")), 0);
    let first = store
        .list(&ListFilter {
            limit: Some(2),
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(first.len(), 2);
    assert!(first[0].id < first[1].id);
    // Dialling one of support's leaves two pending; the oldest pending is
    // the first booked of them.
    let stats = store.stats().unwrap();
    let by = |s| stats.by_state.iter().find(|(x, _)| *x == s).unwrap().1;
    assert_eq!(
        (by(State::Pending), by(State::Dialling), by(State::Failed)),
        (2, 1, 0)
    );
    assert_eq!(stats.oldest_pending, Some(earlier));
}

#[test]
fn schema_is_versioned_and_a_newer_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbacks.db");
    let now = utc("2026-06-10 09:00");
    let id = {
        let mut store = CallbackStore::open(&path).unwrap();
        store.request(new_callback("1", "q", 1), now).unwrap().id()
    };
    // Reopening migrates nothing and keeps the data.
    assert_eq!(
        CallbackStore::open(&path).unwrap().get(id).unwrap().number,
        "1"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let versions: i64 = conn
        .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(versions, super::schema::latest_version());
    conn.execute("INSERT INTO schema_version (version) VALUES (99)", [])
        .unwrap();
    let err = CallbackStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}
