//! RFC 3261 section 17.2.2, Figure 8.

use super::*;

#[test]
fn retransmitted_request_in_trying_is_absorbed() {
    let clock = Clock::new();
    let mut tx = NonInviteServerTransaction::new(Timers::default(), false);
    tx.on_request(clock.at(500));
    assert_eq!(drain(&mut tx), vec![]);
    assert_eq!(tx.state(), NonInviteServerState::Trying);
    assert_eq!(tx.poll_timeout(), None, "Trying has no timer");
}

#[test]
fn retransmitted_request_in_proceeding_resends_provisional() {
    let clock = Clock::new();
    let mut tx = NonInviteServerTransaction::new(Timers::default(), false);
    assert_eq!(tx.send_provisional(clock.at(0), bytes("100")), Ok(()));
    assert_eq!(tx.state(), NonInviteServerState::Proceeding);
    tx.on_request(clock.at(500));
    assert_eq!(drain(&mut tx), vec![transmit("100"), transmit("100")]);
}

#[test]
fn timer_j_absorbs_retransmitted_requests() {
    let clock = Clock::new();
    let mut tx = NonInviteServerTransaction::new(Timers::default(), false);
    assert_eq!(tx.send_final(clock.at(0), 200, bytes("200")), Ok(()));
    assert_eq!(tx.state(), NonInviteServerState::Completed);
    assert_eq!(tx.poll_timeout(), Some(clock.at(32_000)), "Timer J = 64*T1");

    // The client's Timer E keeps retransmitting if our 200 was lost: each
    // copy gets the 200 again, none reaches the TU.
    for ms in [500, 1_500, 3_500, 31_999] {
        tx.on_request(clock.at(ms));
    }
    assert_eq!(drain(&mut tx), vec![transmit("200"); 5]);

    let seen = run_until(&mut tx, clock, 120_000);
    assert_eq!(seen, [(32_000, Output::Terminated)]);
    tx.on_request(clock.at(32_001));
    assert_eq!(drain(&mut tx), vec![]);
}

#[test]
fn reliable_transport_makes_timer_j_zero() {
    let clock = Clock::new();
    let mut tx = NonInviteServerTransaction::new(Timers::default(), true);
    assert_eq!(tx.send_provisional(clock.at(0), bytes("100")), Ok(()));
    assert_eq!(tx.send_final(clock.at(0), 202, bytes("202")), Ok(()));
    assert_eq!(
        drain(&mut tx),
        vec![transmit("100"), transmit("202"), Output::Terminated]
    );
    assert_eq!(tx.state(), NonInviteServerState::Terminated);
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn non_invite_server_sends_one_final_response() {
    let clock = Clock::new();
    let mut tx = NonInviteServerTransaction::new(Timers::default(), false);
    assert_eq!(
        tx.send_final(clock.at(0), 99, bytes("99")),
        Err(TransactionError::NotFinal { status: 99 })
    );
    assert_eq!(tx.send_final(clock.at(0), 481, bytes("481")), Ok(()));
    assert_eq!(
        tx.send_final(clock.at(1), 200, bytes("200")),
        Err(TransactionError::WrongState {
            action: "send a final response",
            state: "Completed",
        })
    );
    assert_eq!(
        tx.send_provisional(clock.at(1), bytes("100")),
        Err(TransactionError::WrongState {
            action: "send a provisional response",
            state: "Completed",
        })
    );
    assert_eq!(drain(&mut tx), vec![transmit("481")]);
}

#[test]
fn non_invite_server_transport_error_terminates() {
    let clock = Clock::new();
    let mut tx = NonInviteServerTransaction::new(Timers::default(), false);
    assert_eq!(tx.send_final(clock.at(0), 200, bytes("200")), Ok(()));
    drain(&mut tx);
    tx.on_transport_error();
    assert_eq!(
        drain(&mut tx),
        vec![Output::TransportError, Output::Terminated]
    );
    assert_eq!(tx.poll_timeout(), None);
}
