//! The UAS core's retransmission of a 2xx to an INVITE until its ACK
//! arrives: RFC 3261 section 13.3.1.4.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::machine::{doubled, Machine, State};
use super::timer::Timer;
use super::{Output, Timers};

/// Whether the 2xx is still being retransmitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WaitingForAck,
    Terminated,
}

impl State for Phase {
    const TERMINATED: Self = Phase::Terminated;
}

/// Retransmits the 2xx to an INVITE until the ACK arrives (RFC 3261 section
/// 13.3.1.4), as the UAS core must, since the INVITE server transaction
/// hands the 2xx over and leaves its reliability to the endpoints.
///
/// Create it right after the 2xx was first sent (with
/// [`super::InviteServerTransaction::send_final`]); it retransmits at T1,
/// 2*T1, 4*T1... capped at T2 (so at 0.5, 1.5, 3.5, 7.5, 11.5... s with the
/// default timers) and, if no ACK came after 64*T1, reports
/// [`Output::AckTimedOut`]: the dialog stands but the session should end,
/// so the TU sends a BYE. Its transmissions may go straight to the
/// transport or, while the server transaction is in Accepted, through
/// [`super::InviteServerTransaction::send_final`]; the bytes on the wire
/// are the same.
///
/// It retransmits even over a reliable transport: "since 2xx is
/// retransmitted end-to-end, there may be hops between UAS and UAC that are
/// UDP", so it takes no `reliable` flag.
#[derive(Debug, Clone)]
pub struct TwoXxRetransmitter {
    machine: Machine<Phase>,
    response: Arc<[u8]>,
    /// The current interval: T1, doubling up to T2.
    interval: Duration,
}

impl TwoXxRetransmitter {
    /// Starts retransmitting `response`, which was first sent at `now`.
    pub fn new(now: Instant, response: Arc<[u8]>, timers: Timers) -> Self {
        // `reliable: false`: see the type's documentation.
        let mut machine = Machine::new(Phase::WaitingForAck, timers, false);
        machine.timers.set(Timer::TwoXxRetransmit, now, timers.t1);
        machine
            .timers
            .set(Timer::TwoXxGiveUp, now, timers.sixty_four_t1());
        TwoXxRetransmitter {
            machine,
            response,
            interval: timers.t1,
        }
    }

    /// Whether retransmission is over, by ACK or by giving up.
    pub fn is_terminated(&self) -> bool {
        self.machine.is_terminated()
    }

    /// The ACK for the 2xx arrived: retransmission stops and
    /// [`Output::Terminated`] is queued. Later ACKs (the UAC resends one for
    /// every 2xx it sees) change nothing.
    pub fn on_ack(&mut self) {
        self.machine.terminate();
    }

    /// The next thing to do, if any; call until `None` after every event.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.machine.poll_output()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next;
    /// `None` once terminated.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }

    /// Runs the timers due at `now`: retransmit the 2xx, or give up after
    /// 64*T1 with [`Output::AckTimedOut`] then [`Output::Terminated`].
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.machine.timers.expired(now) {
            if !self.machine.timers.fire(timer, now) {
                continue;
            }
            match timer {
                Timer::TwoXxRetransmit => {
                    self.machine.transmit(&self.response);
                    self.interval = doubled(self.interval, Some(self.machine.config.t2));
                    self.machine
                        .timers
                        .set(Timer::TwoXxRetransmit, now, self.interval);
                }
                Timer::TwoXxGiveUp => {
                    self.machine.emit(Output::AckTimedOut);
                    self.machine.terminate();
                }
                _ => {}
            }
        }
    }
}
