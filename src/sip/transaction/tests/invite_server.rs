//! RFC 3261 section 17.2.1 (Figure 7) and RFC 6026 section 7.1.

use super::*;

fn trying_sent(clock: Clock, reliable: bool) -> InviteServerTransaction {
    let mut tx = InviteServerTransaction::new(Timers::default(), reliable);
    assert_eq!(tx.send_provisional(clock.at(0), bytes("100")), Ok(()));
    assert_eq!(drain(&mut tx), vec![transmit("100")]);
    tx
}

#[test]
fn retransmitted_invite_resends_last_provisional() {
    let clock = Clock::new();
    let mut tx = InviteServerTransaction::new(Timers::default(), false);
    tx.on_request(clock.at(10));
    assert_eq!(
        drain(&mut tx),
        vec![],
        "nothing sent yet, nothing to resend"
    );

    assert_eq!(tx.send_provisional(clock.at(20), bytes("100")), Ok(()));
    tx.on_request(clock.at(500));
    assert_eq!(drain(&mut tx), vec![transmit("100"), transmit("100")]);

    assert_eq!(tx.send_provisional(clock.at(600), bytes("180")), Ok(()));
    tx.on_request(clock.at(1500));
    assert_eq!(drain(&mut tx), vec![transmit("180"), transmit("180")]);
    assert_eq!(tx.state(), InviteServerState::Proceeding);
    assert_eq!(tx.poll_timeout(), None, "Proceeding has no timer");
}

#[test]
fn retransmitted_invite_in_completed_resends_final() {
    let clock = Clock::new();
    let mut tx = trying_sent(clock, false);
    assert_eq!(tx.send_final(clock.at(100), 486, bytes("486")), Ok(()));
    assert_eq!(tx.state(), InviteServerState::Completed);
    tx.on_request(clock.at(200));
    assert_eq!(drain(&mut tx), vec![transmit("486"), transmit("486")]);
}

#[test]
fn timer_g_doubles_capped_at_t2() {
    let clock = Clock::new();
    let mut tx = trying_sent(clock, false);
    assert_eq!(tx.send_final(clock.at(0), 486, bytes("486")), Ok(()));
    assert_eq!(drain(&mut tx), vec![transmit("486")]);
    let seen = run_until(&mut tx, clock, 31_999);
    // T1, then MIN(2*T1, T2), doubling, then T2 for good.
    assert_eq!(
        transmit_times(&seen),
        [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert!(seen.iter().all(|(_, output)| *output == transmit("486")));
}

#[test]
fn timer_h_fires_when_ack_never_comes() {
    let clock = Clock::new();
    let mut tx = trying_sent(clock, false);
    assert_eq!(tx.send_final(clock.at(0), 486, bytes("486")), Ok(()));
    drain(&mut tx);
    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(
        events(&seen),
        [(32_000, Output::TimedOut), (32_000, Output::Terminated)]
    );
    assert_eq!(transmit_times(&seen).last(), Some(&31_500));
    assert_eq!(tx.state(), InviteServerState::Terminated);
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn ack_moves_completed_to_confirmed_and_timer_i_terminates() {
    let clock = Clock::new();
    let mut tx = trying_sent(clock, false);
    assert_eq!(tx.send_final(clock.at(0), 486, bytes("486")), Ok(()));
    drain(&mut tx);
    assert_eq!(
        transmit_times(&run_until(&mut tx, clock, 2_000)),
        [500, 1_500]
    );

    assert_eq!(tx.on_ack(clock.at(2_000)), AckDisposition::Absorbed);
    assert_eq!(tx.state(), InviteServerState::Confirmed);
    assert_eq!(tx.poll_timeout(), Some(clock.at(7_000)), "Timer I = T4");

    // Confirmed absorbs everything: a late INVITE and retransmitted ACKs.
    tx.on_request(clock.at(2_100));
    assert_eq!(tx.on_ack(clock.at(2_200)), AckDisposition::Absorbed);
    assert_eq!(drain(&mut tx), vec![]);

    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(seen, [(7_000, Output::Terminated)], "no G, no H");
}

#[test]
fn accepted_state_absorbs_invite_retransmissions_until_timer_l() {
    let clock = Clock::new();
    let mut tx = trying_sent(clock, false);
    assert_eq!(tx.send_final(clock.at(0), 200, bytes("200")), Ok(()));
    assert_eq!(drain(&mut tx), vec![transmit("200")]);
    assert_eq!(tx.state(), InviteServerState::Accepted);
    assert_eq!(tx.poll_timeout(), Some(clock.at(32_000)), "Timer L = 64*T1");

    tx.on_request(clock.at(500));
    assert_eq!(
        drain(&mut tx),
        vec![],
        "the TU's 2xx retransmissions answer it"
    );

    // The TU may route its 2xx retransmissions through the transaction.
    assert_eq!(tx.send_final(clock.at(500), 200, bytes("200")), Ok(()));
    assert_eq!(drain(&mut tx), vec![transmit("200")]);

    assert_eq!(tx.on_ack(clock.at(700)), AckDisposition::PassToTu);
    assert_eq!(
        tx.state(),
        InviteServerState::Accepted,
        "ACK does not end it"
    );
    tx.on_request(clock.at(900));
    assert_eq!(drain(&mut tx), vec![]);

    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(seen, [(32_000, Output::Terminated)], "no TimedOut");
}

#[test]
fn reliable_transport_has_no_timer_g_and_zero_timer_i() {
    let clock = Clock::new();
    let mut tx = trying_sent(clock, true);
    assert_eq!(tx.send_final(clock.at(0), 486, bytes("486")), Ok(()));
    assert_eq!(drain(&mut tx), vec![transmit("486")]);
    assert_eq!(tx.poll_timeout(), Some(clock.at(32_000)), "only Timer H");

    assert_eq!(tx.on_ack(clock.at(50)), AckDisposition::Absorbed);
    assert_eq!(drain(&mut tx), vec![Output::Terminated], "Timer I is zero");
    assert_eq!(tx.state(), InviteServerState::Terminated);
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn reliable_transport_still_needs_timer_h() {
    let clock = Clock::new();
    let mut tx = trying_sent(clock, true);
    assert_eq!(tx.send_final(clock.at(0), 503, bytes("503")), Ok(()));
    drain(&mut tx);
    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(
        seen,
        [(32_000, Output::TimedOut), (32_000, Output::Terminated)]
    );
}

#[test]
fn one_final_response_per_transaction() {
    let clock = Clock::new();
    let mut tx = trying_sent(clock, false);
    assert_eq!(
        tx.send_final(clock.at(0), 180, bytes("180")),
        Err(TransactionError::NotFinal { status: 180 })
    );
    assert_eq!(tx.send_final(clock.at(0), 486, bytes("486")), Ok(()));
    let wrong = |action| TransactionError::WrongState {
        action,
        state: "Completed",
    };
    assert_eq!(
        tx.send_final(clock.at(1), 200, bytes("200")),
        Err(wrong("send a final response"))
    );
    assert_eq!(
        tx.send_provisional(clock.at(1), bytes("180")),
        Err(wrong("send a provisional response"))
    );
    assert_eq!(
        drain(&mut tx),
        vec![transmit("486")],
        "refusals send nothing"
    );
}

#[test]
fn accepted_refuses_a_non_2xx_final() {
    let clock = Clock::new();
    let mut tx = trying_sent(clock, false);
    assert_eq!(tx.send_final(clock.at(0), 200, bytes("200")), Ok(()));
    assert_eq!(
        tx.send_final(clock.at(1), 486, bytes("486")),
        Err(TransactionError::WrongState {
            action: "send a final response",
            state: "Accepted",
        })
    );
}

#[test]
fn transport_error_informs_tu_and_terminates() {
    let clock = Clock::new();
    let mut tx = trying_sent(clock, false);
    assert_eq!(tx.send_final(clock.at(0), 486, bytes("486")), Ok(()));
    drain(&mut tx);
    tx.on_transport_error();
    tx.on_transport_error();
    assert_eq!(
        drain(&mut tx),
        vec![Output::TransportError, Output::Terminated],
        "reported once"
    );
    assert_eq!(tx.poll_timeout(), None);
    tx.on_request(clock.at(100));
    assert_eq!(drain(&mut tx), vec![], "a terminated transaction is silent");
}
