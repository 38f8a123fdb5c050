//! RFC 3261 section 17.1.2, Figure 6.

use super::*;

fn bye_sent(clock: Clock, reliable: bool) -> NonInviteClientTransaction {
    let mut tx =
        NonInviteClientTransaction::new(clock.at(0), bytes("BYE"), Timers::default(), reliable);
    assert_eq!(drain(&mut tx), vec![transmit("BYE")], "sent at once");
    assert_eq!(tx.state(), NonInviteClientState::Trying);
    tx
}

#[test]
fn timer_e_doubles_to_t2_then_stays() {
    let clock = Clock::new();
    let mut tx = bye_sent(clock, false);
    let seen = run_until(&mut tx, clock, 31_999);
    // MIN(2*T1, T2), MIN(4*T1, T2)... then T2 for good.
    assert_eq!(
        transmit_times(&seen),
        [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert!(seen.iter().all(|(_, output)| *output == transmit("BYE")));
}

#[test]
fn timer_e_in_proceeding_uses_t2() {
    let clock = Clock::new();
    let mut tx = bye_sent(clock, false);
    assert_eq!(transmit_times(&run_until(&mut tx, clock, 500)), [500]);

    assert!(
        tx.on_response(clock.at(600), 100),
        "a provisional goes to the TU"
    );
    assert_eq!(tx.state(), NonInviteClientState::Proceeding);
    // Timer E was already set for 1.5 s; from its firing in Proceeding on,
    // it is reset to T2 each time.
    let seen = run_until(&mut tx, clock, 14_000);
    assert_eq!(transmit_times(&seen), [1_500, 5_500, 9_500, 13_500]);
}

#[test]
fn timer_f_times_out_non_invite_client() {
    let clock = Clock::new();
    let mut tx = bye_sent(clock, false);
    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(
        events(&seen),
        [(32_000, Output::TimedOut), (32_000, Output::Terminated)]
    );
    assert_eq!(tx.state(), NonInviteClientState::Terminated);
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn timer_f_also_times_out_proceeding() {
    let clock = Clock::new();
    let mut tx = bye_sent(clock, false);
    assert!(tx.on_response(clock.at(100), 100));
    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(
        events(&seen),
        [(32_000, Output::TimedOut), (32_000, Output::Terminated)]
    );
}

#[test]
fn retransmitted_final_is_absorbed_by_client() {
    let clock = Clock::new();
    let mut tx = bye_sent(clock, false);
    assert!(tx.on_response(clock.at(100), 100));
    assert!(
        tx.on_response(clock.at(150), 100),
        "every provisional goes up"
    );
    assert!(
        tx.on_response(clock.at(200), 200),
        "the first final goes up"
    );
    assert_eq!(tx.state(), NonInviteClientState::Completed);
    assert!(
        !tx.on_response(clock.at(700), 200),
        "its retransmission not"
    );
    assert!(
        !tx.on_response(clock.at(800), 180),
        "nor a late provisional"
    );
    assert!(!tx.on_response(clock.at(900), 500), "nor another final");
    assert_eq!(drain(&mut tx), vec![], "and nothing is sent");
}

#[test]
fn timer_k_terminates_completed_client() {
    let clock = Clock::new();
    let mut tx = bye_sent(clock, false);
    assert!(tx.on_response(clock.at(1_000), 481));
    assert_eq!(tx.poll_timeout(), Some(clock.at(6_000)), "Timer K = T4");
    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(seen, [(6_000, Output::Terminated)], "E and F stopped");
}

#[test]
fn reliable_transport_has_no_timer_e_and_zero_timer_k() {
    let clock = Clock::new();
    let mut tx = bye_sent(clock, true);
    assert_eq!(tx.poll_timeout(), Some(clock.at(32_000)), "only Timer F");
    assert!(tx.on_response(clock.at(300), 200));
    assert_eq!(drain(&mut tx), vec![Output::Terminated], "Timer K is zero");
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn reliable_transport_still_needs_timer_f() {
    let clock = Clock::new();
    let mut tx = bye_sent(clock, true);
    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(
        seen,
        [(32_000, Output::TimedOut), (32_000, Output::Terminated)]
    );
}

#[test]
fn status_outside_100_699_is_ignored() {
    let clock = Clock::new();
    let mut tx = bye_sent(clock, false);
    assert!(!tx.on_response(clock.at(100), 99));
    assert!(!tx.on_response(clock.at(100), 700));
    assert_eq!(tx.state(), NonInviteClientState::Trying);
}

#[test]
fn transport_error_terminates_non_invite_client() {
    let clock = Clock::new();
    let mut tx = bye_sent(clock, false);
    tx.on_transport_error();
    assert_eq!(
        drain(&mut tx),
        vec![Output::TransportError, Output::Terminated]
    );
    assert_eq!(tx.poll_timeout(), None);
    assert!(!tx.on_response(clock.at(100), 200), "too late for the TU");
}
