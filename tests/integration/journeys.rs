//! Simulated caller journeys through the shipped flows. Each journey checks
//! where the caller ends up and what travelled with the call, and compares
//! the whole transcript with `tests/journeys/NAME.txt` (`UPDATE_GOLDEN=1`
//! rewrites them).

use chrono::{DateTime, TimeZone, Utc};

use callflow::flow::interpreter::Outcome;
use callflow::simulate::{parse_script, prompt_durations, simulate, Answer, Simulation};

use crate::common::{repo, shipped};

/// Wednesday 2026-11-25 10:00 in Riga: the office is open.
fn weekday_morning() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap()
}

fn journey(
    name: &str,
    caller: &str,
    at: DateTime<Utc>,
    input: &str,
    transfer: Answer,
) -> (String, Option<Outcome>) {
    journey_with_vars(name, caller, at, input, transfer, &[])
}

/// A journey with variables the server would provide (`wait_general`).
fn journey_with_vars(
    name: &str,
    caller: &str,
    at: DateTime<Utc>,
    input: &str,
    transfer: Answer,
    vars: &[(&str, &str)],
) -> (String, Option<Outcome>) {
    let set = shipped();
    let entry = set.start_of("support").unwrap();
    let durations = prompt_durations(&set);
    let options = Simulation {
        caller: caller.into(),
        called: "8000".into(),
        at,
        input: parse_script(input).unwrap(),
        transfer,
        callback: Answer::Ok,
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let t = simulate(set, entry, &durations, &options);
    let golden = repo(&format!("tests/journeys/{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &t.text).unwrap();
    } else {
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        assert_eq!(
            t.text,
            want,
            "transcript of {name} differs from {}",
            golden.display()
        );
    }
    (t.text, t.outcome)
}

#[test]
fn billing_caller_is_transferred_with_context() {
    let (text, outcome) = journey(
        "billing",
        "+37120000099",
        weekday_morning(),
        "1",
        Answer::Ok,
    );
    assert_eq!(
        outcome,
        Some(Outcome::Transferred {
            target: "billing".into()
        })
    );
    assert!(text.contains("TRANSFER to sip:billing@acd.example.net (queue billing, priority 5); intent=billing; vip=no; path=welcome>hours>main>billing>to_billing"), "{text}");
}

#[test]
fn account_number_travels_to_the_accounts_queue() {
    let (text, outcome) = journey(
        "account",
        "+37120000099",
        weekday_morning(),
        "3, 12345678#",
        Answer::Ok,
    );
    assert_eq!(
        outcome,
        Some(Outcome::Transferred {
            target: "accounts".into()
        })
    );
    assert!(text.contains("account = 12345678"), "{text}");
    assert!(text.contains("; account=12345678;"), "{text}");
}

#[test]
fn vip_caller_goes_straight_to_the_priority_queue() {
    let (text, outcome) = journey("vip", "+371 2000 0000", weekday_morning(), "", Answer::Ok);
    assert_eq!(
        outcome,
        Some(Outcome::Transferred {
            target: "priority".into()
        })
    );
    assert!(text.contains("caller in vip holds"), "{text}");
    assert!(
        text.contains("priority 9); intent=priority; vip=yes"),
        "{text}"
    );
    assert!(!text.contains("main-menu"), "a VIP never hears the menu");
}

#[test]
fn closed_on_christmas_offers_a_callback_that_is_booked() {
    // Friday 2026-12-25 10:00 in Riga: a weekday, but a holiday.
    let christmas = Utc.with_ymd_and_hms(2026, 12, 25, 8, 0, 0).unwrap();
    let (text, outcome) = journey(
        "closed-callback",
        "+37120000099",
        christmas,
        "1, 1",
        Answer::Ok,
    );
    assert_eq!(
        outcome,
        Some(Outcome::CallbackRequested {
            queue: "general".into()
        })
    );
    assert!(text.contains("-> closed.announce"), "{text}");
    assert!(
        text.contains("CALLBACK REQUEST call 37120000099 back for queue general"),
        "{text}"
    );
    assert!(text.contains("play goodbye"), "{text}");
}

#[test]
fn silent_caller_gets_an_agent_and_a_callback_when_agents_are_busy() {
    let (text, outcome) = journey(
        "no-input-callback",
        "+37120000099",
        weekday_morning(),
        "wait 60s, 1, 2, 5550123#",
        Answer::Fail,
    );
    assert!(text.contains("no input (try 3)"), "{text}");
    assert!(text.contains("out of tries"), "{text}");
    assert!(text.contains("-> support.to_agent (transfer)"), "{text}");
    assert!(text.contains("ACD refuses the transfer"), "{text}");
    assert!(
        text.contains("CALLBACK REQUEST call 5550123 back"),
        "{text}"
    );
    assert_eq!(
        outcome,
        Some(Outcome::CallbackRequested {
            queue: "general".into()
        })
    );
}

#[test]
fn agent_key_during_the_welcome_reaches_a_person() {
    let (text, outcome) = journey(
        "agent-key",
        "+37120000099",
        weekday_morning(),
        "barge 0",
        Answer::Ok,
    );
    assert!(text.contains("agent key"), "{text}");
    assert_eq!(
        outcome,
        Some(Outcome::Transferred {
            target: "general".into()
        })
    );
}

#[test]
fn caller_hanging_up_in_the_menu_is_recorded_there() {
    let (_, outcome) = journey(
        "hangup-in-menu",
        "+37120000099",
        weekday_morning(),
        "wait 7s, hangup",
        Answer::Ok,
    );
    assert_eq!(
        outcome,
        Some(Outcome::CallerHungUp {
            node: "support.main".into()
        })
    );
}

#[test]
fn busy_agents_offer_a_callback_saying_the_current_wait() {
    // Technical support cannot take the call; the general queue's wait is
    // 5 min 40 s, said rounded up.
    let (text, outcome) = journey_with_vars(
        "callback-wait",
        "+37120000099",
        weekday_morning(),
        "2, wait 2s, 1, 1",
        Answer::Fail,
        &[("wait_general", "340")],
    );
    assert!(
        text.contains("play wait-is-about + num-6 + minutes + callback-offer ("),
        "{text}"
    );
    assert_eq!(
        outcome,
        Some(Outcome::CallbackRequested {
            queue: "general".into()
        })
    );
}

#[test]
fn without_a_known_wait_the_offer_is_made_without_it() {
    let (text, outcome) = journey(
        "callback-no-wait",
        "+37120000099",
        weekday_morning(),
        "2, wait 2s, 1, 1",
        Answer::Fail,
    );
    assert!(text.contains("play callback-offer ("), "{text}");
    assert!(!text.contains("wait-is-about"), "{text}");
    assert!(!text.contains("wait-under-a-minute"), "{text}");
    assert_eq!(
        outcome,
        Some(Outcome::CallbackRequested {
            queue: "general".into()
        })
    );
}

#[test]
fn agent_key_with_a_long_wait_offers_a_callback_and_declining_still_reaches_the_queue() {
    // Ten minutes is over the general queue's callback_offer_after (90s).
    let (text, outcome) = journey_with_vars(
        "agent-key-long-wait",
        "+37120000099",
        weekday_morning(),
        "barge 0, 2",
        Answer::Ok,
        &[("wait_general", "600")],
    );
    assert!(text.contains("long_wait(general) holds"), "{text}");
    assert!(
        text.contains("play wait-is-about + num-10 + minutes + callback-offer ("),
        "{text}"
    );
    assert!(text.contains("-> support.agent_again (transfer)"), "{text}");
    assert!(
        !text.contains("-> support.to_agent"),
        "the offer comes before any wait in the queue: {text}"
    );
    assert_eq!(
        outcome,
        Some(Outcome::Transferred {
            target: "general".into()
        })
    );
}

#[test]
fn agent_key_with_a_short_wait_is_transferred_without_an_offer() {
    // Half a minute is under the general queue's callback_offer_after.
    let (text, outcome) = journey_with_vars(
        "agent-key-short-wait",
        "+37120000099",
        weekday_morning(),
        "barge 0",
        Answer::Ok,
        &[("wait_general", "30")],
    );
    assert!(text.contains("-> support.to_agent (transfer)"), "{text}");
    assert!(!text.contains("callback-offer"), "{text}");
    assert_eq!(
        outcome,
        Some(Outcome::Transferred {
            target: "general".into()
        })
    );
}

#[test]
fn agent_key_during_the_offer_reaches_a_person_instead_of_the_offer_again() {
    let (text, outcome) = journey_with_vars(
        "agent-key-during-offer",
        "+37120000099",
        weekday_morning(),
        "barge 0, wait 3s, barge 0",
        Answer::Ok,
        &[("wait_general", "600")],
    );
    assert_eq!(
        text.matches("-> support.offer_callback").count(),
        1,
        "{text}"
    );
    assert!(text.contains("callback_offered = \"yes\" holds"), "{text}");
    assert!(text.contains("-> support.to_agent (transfer)"), "{text}");
    assert_eq!(
        outcome,
        Some(Outcome::Transferred {
            target: "general".into()
        })
    );
}
