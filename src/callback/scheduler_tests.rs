//! The retry rules with fixed instants: back-off, attempt limit, the
//! request's window and the queue's opening hours (midnight, DST, zones).
//! Priority order and pacing are the store's, tested in `store_tests`.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, TimeZone, Utc};

use super::scheduler::{Next, RetryPolicy, Window};
use super::store_tests::utc;
use super::AttemptOutcome;
use crate::flow::model::ScheduleDef;
use crate::flow::schedule::Schedule;

fn schedule(tz: &str, open: &[(&str, &str)], closed: &[&str]) -> Schedule {
    Schedule::compile(&ScheduleDef {
        timezone: tz.into(),
        open: open.iter().map(|&(k, v)| (k.into(), v.into())).collect(),
        closed_dates: closed.iter().map(|&d| d.into()).collect(),
        special_dates: Default::default(),
    })
    .unwrap()
}

/// Office hours in Riga (UTC+3 in summer, +2 in winter).
fn riga_office() -> Schedule {
    schedule("Europe/Riga", &[("mon-fri", "08:00-20:00")], &[])
}

/// "YYYY-MM-DD HH:MM" local time in `schedule`'s zone, as UTC.
fn local(schedule: &Schedule, text: &str) -> DateTime<Utc> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap();
    let zone = schedule.timezone();
    zone.from_local_datetime(&naive).single().unwrap().to_utc()
}

fn busy_retry(hours: &Schedule, now: DateTime<Utc>) -> Next {
    let window = Window {
        hours: Some(hours),
        ..Window::default()
    };
    RetryPolicy::default().next_after(1, &AttemptOutcome::Busy, now, &window)
}

#[test]
fn default_policy_is_three_attempts_five_then_fifteen_minutes_apart() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.max_attempts, 3);
    assert_eq!(policy.backoff_after(1), Duration::from_secs(300));
    assert_eq!(policy.backoff_after(2), Duration::from_secs(900));
    assert_eq!(policy.ring_timeout, Duration::from_secs(30));
}

#[test]
fn missed_calls_back_off_then_fail_after_max_attempts() {
    let policy = RetryPolicy::default();
    let always = Window::default();
    let now = utc("2026-06-10 09:00");
    let after = |n, outcome| policy.next_after(n, &outcome, now, &always);
    assert_eq!(
        after(1, AttemptOutcome::Busy),
        Next::RetryAt(utc("2026-06-10 09:05"))
    );
    assert_eq!(
        after(2, AttemptOutcome::NoAnswer),
        Next::RetryAt(utc("2026-06-10 09:15"))
    );
    // A callee who answered but never pressed the key (voicemail) is missed too.
    assert_eq!(
        after(1, AttemptOutcome::Answered),
        Next::RetryAt(utc("2026-06-10 09:05"))
    );
    let Next::Fail(reason) = after(3, AttemptOutcome::Failed("503".into())) else {
        panic!("the third attempt is the last");
    };
    assert_eq!(reason, "3 of 3 attempts made, the last failed: 503");
}

#[test]
fn reaching_the_queue_completes_whatever_the_attempt_number() {
    let policy = RetryPolicy::default();
    let now = utc("2026-06-10 09:00");
    for outcome in [AttemptOutcome::Connected, AttemptOutcome::Completed] {
        assert_eq!(
            policy.next_after(3, &outcome, now, &Window::default()),
            Next::Complete
        );
    }
}

#[test]
fn last_backoff_repeats_and_an_empty_list_retries_at_once() {
    let mut policy = RetryPolicy {
        max_attempts: 6,
        backoff: vec![Duration::from_secs(60), Duration::from_secs(600)],
        ..RetryPolicy::default()
    };
    assert_eq!(policy.backoff_after(5), Duration::from_secs(600));
    let now = utc("2026-06-10 09:00");
    let next = policy.next_after(4, &AttemptOutcome::Busy, now, &Window::default());
    assert_eq!(next, Next::RetryAt(utc("2026-06-10 09:10")));
    policy.backoff.clear();
    let next = policy.next_after(4, &AttemptOutcome::Busy, now, &Window::default());
    assert_eq!(next, Next::RetryAt(now));
}

#[test]
fn retry_waits_for_not_before_and_fails_past_not_after() {
    let policy = RetryPolicy::default();
    let now = utc("2026-06-10 09:00");
    let window = Window {
        not_before: Some(utc("2026-06-10 10:00")),
        not_after: Some(utc("2026-06-10 10:30")),
        hours: None,
    };
    let next = policy.next_after(1, &AttemptOutcome::Busy, now, &window);
    assert_eq!(next, Next::RetryAt(utc("2026-06-10 10:00")));
    let just_in = utc("2026-06-10 10:25");
    let next = policy.next_after(1, &AttemptOutcome::Busy, just_in, &window);
    assert_eq!(
        next,
        Next::RetryAt(utc("2026-06-10 10:30")),
        "the end is inclusive"
    );
    let late = utc("2026-06-10 10:26");
    let Next::Fail(reason) = policy.next_after(1, &AttemptOutcome::Busy, late, &window) else {
        panic!("10:31 is past the window");
    };
    assert!(reason.contains("no time is left in the window"), "{reason}");
}

#[test]
fn retry_after_closing_time_moves_to_next_morning_in_riga() {
    let office = riga_office();
    // Thursday 19:58 in Riga (16:58 UTC): 20:03 is closed.
    let next = busy_retry(&office, local(&office, "2026-06-11 19:58"));
    assert_eq!(next, Next::RetryAt(local(&office, "2026-06-12 08:00")));
    assert_eq!(next, Next::RetryAt(utc("2026-06-12 05:00")));
}

#[test]
fn same_hours_in_utc_keep_the_retry_where_riga_defers_it() {
    let utc_office = schedule("UTC", &[("mon-fri", "08:00-20:00")], &[]);
    // 16:58 UTC is 19:58 in Riga but still mid-afternoon by UTC hours.
    let now = utc("2026-06-11 16:58");
    assert_eq!(
        busy_retry(&utc_office, now),
        Next::RetryAt(utc("2026-06-11 17:03"))
    );
    assert_eq!(
        busy_retry(&riga_office(), now),
        Next::RetryAt(utc("2026-06-12 05:00"))
    );
}

#[test]
fn friday_evening_retry_waits_for_monday_and_holidays_are_skipped() {
    let office = riga_office();
    let next = busy_retry(&office, local(&office, "2026-06-12 19:58"));
    assert_eq!(next, Next::RetryAt(local(&office, "2026-06-15 08:00")));
    // Midsummer: the 23rd and 24th are closed.
    let midsummer = schedule(
        "Europe/Riga",
        &[("mon-fri", "08:00-20:00")],
        &["2026-06-23", "2026-06-24"],
    );
    let next = busy_retry(&midsummer, local(&midsummer, "2026-06-22 19:58"));
    assert_eq!(next, Next::RetryAt(local(&midsummer, "2026-06-25 08:00")));
}

#[test]
fn hours_past_midnight_are_found_on_both_sides_of_it() {
    let night = schedule("Europe/Riga", &[("fri", "22:00-02:00")], &[]);
    let at = |text| local(&night, text);
    // Before opening on Friday: opens at 22:00 that evening.
    assert_eq!(
        busy_retry(&night, at("2026-06-12 21:50")),
        Next::RetryAt(at("2026-06-12 22:00"))
    );
    // In the spill after midnight: still open on Saturday 00:35.
    assert_eq!(
        busy_retry(&night, at("2026-06-13 00:30")),
        Next::RetryAt(at("2026-06-13 00:35"))
    );
    // 01:58 + 5 min is past 02:00 Saturday: next Friday night.
    assert_eq!(
        busy_retry(&night, at("2026-06-13 01:58")),
        Next::RetryAt(at("2026-06-19 22:00"))
    );
}

#[test]
fn opening_in_a_skipped_dst_hour_starts_when_the_clock_jumps() {
    // 2026-03-29: Riga skips 03:00-04:00 (01:00 UTC is 04:00 EEST).
    let sunday = schedule("Europe/Riga", &[("sun", "03:00-05:00")], &[]);
    let window = Window {
        hours: Some(&sunday),
        ..Window::default()
    };
    // 00:30 UTC is 02:30 EET, closed; the first open minute is 04:00 EEST.
    assert_eq!(
        window.next_open(utc("2026-03-29 00:30")),
        Some(utc("2026-03-29 01:00"))
    );
}

#[test]
fn opening_in_a_repeated_dst_hour_is_the_first_of_the_two() {
    // 2026-10-25: Riga repeats 03:00-04:00 (00:00 UTC is 03:00 EEST).
    let sunday = schedule("Europe/Riga", &[("sun", "03:00-04:00")], &[]);
    let window = Window {
        hours: Some(&sunday),
        ..Window::default()
    };
    assert_eq!(
        window.next_open(utc("2026-10-24 23:00")),
        Some(utc("2026-10-25 00:00"))
    );
    // After the first 03:xx, the repeat (01:00-02:00 UTC) is still open.
    assert_eq!(
        window.next_open(utc("2026-10-25 01:30")),
        Some(utc("2026-10-25 01:30"))
    );
}

#[test]
fn next_open_keeps_an_open_instant_and_rounds_a_closed_one_up() {
    let office = riga_office();
    let window = Window {
        hours: Some(&office),
        ..Window::default()
    };
    let open = local(&office, "2026-06-10 12:00") + TimeDelta::seconds(17);
    assert_eq!(window.next_open(open), Some(open));
    let closed = local(&office, "2026-06-10 07:59") + TimeDelta::seconds(30);
    assert_eq!(
        window.next_open(closed),
        Some(local(&office, "2026-06-10 08:00"))
    );
}

#[test]
fn no_opening_before_not_after_or_ever_gives_none() {
    let office = riga_office();
    let friday_night = local(&office, "2026-06-12 21:00");
    let weekend = Window {
        not_before: None,
        not_after: Some(local(&office, "2026-06-14 23:59")),
        hours: Some(&office),
    };
    assert_eq!(weekend.next_open(friday_night), None);
    let never = schedule("Europe/Riga", &[], &[]);
    let window = Window {
        hours: Some(&never),
        ..Window::default()
    };
    assert_eq!(window.next_open(friday_night), None);
    let always = Window::default();
    assert_eq!(always.next_open(friday_night), Some(friday_night));
}

#[test]
fn a_number_the_policy_refuses_fails_at_once_and_is_never_retried() {
    let next = RetryPolicy::default().next_after(
        1,
        &AttemptOutcome::Refused("numbers starting with 0900 may not be dialled".into()),
        utc("2026-06-10 09:00"),
        &Window::default(),
    );
    assert!(
        matches!(&next, Next::Fail(why) if why.contains("0900")),
        "{next:?}"
    );
}
