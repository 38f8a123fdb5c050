//! RFC 3261 section 17.1.1 (Figure 5) and RFC 6026 section 7.2.

use super::*;

fn invite_sent(clock: Clock, reliable: bool) -> InviteClientTransaction {
    let mut tx =
        InviteClientTransaction::new(clock.at(0), bytes("INVITE"), Timers::default(), reliable);
    assert_eq!(drain(&mut tx), vec![transmit("INVITE")], "sent at once");
    assert_eq!(tx.state(), InviteClientState::Calling);
    tx
}

#[test]
fn timer_a_doubles_until_timer_b() {
    let clock = Clock::new();
    let mut tx = invite_sent(clock, false);
    let seen = run_until(&mut tx, clock, 120_000);
    // 2*T1, 4*T1, ... with no T2 cap: six retransmissions before 64*T1.
    assert_eq!(
        transmit_times(&seen),
        [500, 1_500, 3_500, 7_500, 15_500, 31_500]
    );
    assert_eq!(
        events(&seen),
        [(32_000, Output::TimedOut), (32_000, Output::Terminated)]
    );
    assert_eq!(tx.state(), InviteClientState::Terminated);
}

#[test]
fn provisional_stops_timers_a_and_b() {
    let clock = Clock::new();
    let mut tx = invite_sent(clock, false);
    assert_eq!(transmit_times(&run_until(&mut tx, clock, 600)), [500]);
    assert!(tx.on_response(clock.at(700), 100, None));
    assert_eq!(tx.state(), InviteClientState::Proceeding);
    assert_eq!(tx.poll_timeout(), None, "ringing may last: the TU CANCELs");
    assert!(tx.on_response(clock.at(900), 180, None), "each 1xx goes up");
    assert_eq!(drain(&mut tx), vec![]);
}

#[test]
fn non_2xx_final_is_acked_and_timer_d_absorbs_retransmissions() {
    let clock = Clock::new();
    let mut tx = invite_sent(clock, false);
    assert!(tx.on_response(clock.at(100), 180, None));
    assert!(tx.on_response(clock.at(200), 486, Some(bytes("ACK"))));
    assert_eq!(drain(&mut tx), vec![transmit("ACK")]);
    assert_eq!(tx.state(), InviteClientState::Completed);
    assert_eq!(tx.poll_timeout(), Some(clock.at(32_200)), "Timer D = 32 s");

    // The server's Timer G resends the 486; each copy gets the same ACK
    // and none reaches the TU.
    assert!(!tx.on_response(clock.at(700), 486, None));
    assert!(!tx.on_response(clock.at(1_700), 486, Some(bytes("other"))));
    assert_eq!(drain(&mut tx), vec![transmit("ACK"), transmit("ACK")]);

    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(seen, [(32_200, Output::Terminated)]);
}

#[test]
fn two_xx_moves_calling_to_accepted_until_timer_m() {
    let clock = Clock::new();
    let mut tx = invite_sent(clock, false);
    assert!(tx.on_response(clock.at(100), 200, Some(bytes("ACK"))));
    assert_eq!(
        drain(&mut tx),
        vec![],
        "the TU ACKs a 2xx, not the transaction"
    );
    assert_eq!(tx.state(), InviteClientState::Accepted);
    assert_eq!(tx.poll_timeout(), Some(clock.at(32_100)), "Timer M = 64*T1");

    assert!(
        tx.on_response(clock.at(600), 200, None),
        "2xx retransmissions go up"
    );
    assert!(!tx.on_response(clock.at(700), 486, None));
    assert!(!tx.on_response(clock.at(800), 180, None));

    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(seen, [(32_100, Output::Terminated)], "A and B stopped");
}

#[test]
fn reliable_transport_has_no_timer_a_and_zero_timer_d() {
    let clock = Clock::new();
    let mut tx = invite_sent(clock, true);
    assert_eq!(tx.poll_timeout(), Some(clock.at(32_000)), "only Timer B");
    assert!(tx.on_response(clock.at(100), 603, Some(bytes("ACK"))));
    assert_eq!(
        drain(&mut tx),
        vec![transmit("ACK"), Output::Terminated],
        "Timer D is zero"
    );
}

#[test]
fn reliable_transport_still_needs_timers_b_and_m() {
    let clock = Clock::new();
    let mut tx = invite_sent(clock, true);
    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(
        seen,
        [(32_000, Output::TimedOut), (32_000, Output::Terminated)]
    );

    let mut tx = invite_sent(clock, true);
    assert!(tx.on_response(clock.at(100), 200, None));
    assert_eq!(tx.poll_timeout(), Some(clock.at(32_100)));
}

#[test]
fn transport_error_terminates_invite_client() {
    let clock = Clock::new();
    let mut tx = invite_sent(clock, false);
    tx.on_transport_error();
    assert_eq!(
        drain(&mut tx),
        vec![Output::TransportError, Output::Terminated]
    );
    assert_eq!(tx.poll_timeout(), None);
}
