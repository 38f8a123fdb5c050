//! RFC 3261 section 13.3.1.4: the UAS core retransmits its 2xx until ACKed.

use super::*;

#[test]
fn two_xx_retransmits_until_ack() {
    let clock = Clock::new();
    let mut retransmitter = TwoXxRetransmitter::new(clock.at(0), bytes("200"), Timers::default());
    assert_eq!(
        drain(&mut retransmitter),
        vec![],
        "the first 200 is already sent"
    );
    let seen = run_until(&mut retransmitter, clock, 10_000);
    // T1, 2*T1, 4*T1, then capped at T2.
    assert_eq!(transmit_times(&seen), [500, 1_500, 3_500, 7_500]);
    assert!(seen.iter().all(|(_, output)| *output == transmit("200")));

    retransmitter.on_ack();
    retransmitter.on_ack();
    assert_eq!(drain(&mut retransmitter), vec![Output::Terminated]);
    assert!(retransmitter.is_terminated());
    assert_eq!(retransmitter.poll_timeout(), None);
}

#[test]
fn two_xx_gives_up_after_64_t1() {
    let clock = Clock::new();
    let mut retransmitter = TwoXxRetransmitter::new(clock.at(0), bytes("200"), Timers::default());
    let seen = run_until(&mut retransmitter, clock, 120_000);
    assert_eq!(
        transmit_times(&seen),
        [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert_eq!(
        events(&seen),
        [(32_000, Output::AckTimedOut), (32_000, Output::Terminated)],
        "the TU ends the session with a BYE"
    );
}

#[test]
fn two_xx_follows_configured_timers() {
    // A longer T1 (section 17.1.1.1 allows it) stretches everything.
    let clock = Clock::new();
    let timers = Timers {
        t1: Duration::from_secs(1),
        t2: Duration::from_secs(2),
        ..Timers::default()
    };
    let mut retransmitter = TwoXxRetransmitter::new(clock.at(0), bytes("200"), timers);
    let seen = run_until(&mut retransmitter, clock, 7_000);
    assert_eq!(transmit_times(&seen), [1_000, 3_000, 5_000, 7_000]);
    assert_eq!(retransmitter.poll_timeout(), Some(clock.at(9_000)));
}
