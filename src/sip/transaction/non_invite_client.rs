//! The non-INVITE client transaction: RFC 3261 section 17.1.2, Figure 6.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::machine::{doubled, Machine, State};
use super::timer::Timer;
use super::{Output, Timers};

/// Where a [`NonInviteClientTransaction`] is in RFC 3261 Figure 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    /// The request was sent; over UDP it is retransmitted by Timer E at
    /// intervals doubling from T1 up to T2.
    Trying,
    /// A provisional arrived: the server is alive, so retransmissions
    /// continue at T2 (they still guard against a lost final response).
    Proceeding,
    /// The final arrived; Timer K absorbs its retransmissions.
    Completed,
    /// Over: forget the transaction.
    Terminated,
}

impl State for NonInviteClientState {
    const TERMINATED: Self = NonInviteClientState::Terminated;
}

/// The client side of a non-INVITE transaction: a BYE, REFER, NOTIFY or
/// OPTIONS that we send (RFC 3261 section 17.1.2).
///
/// Over UDP it retransmits the request (Timer E) until a final response
/// arrives, gives up after 64*T1 (Timer F, [`Output::TimedOut`]), and
/// after the final lingers for Timer K (T4 over UDP, zero otherwise) so that
/// retransmitted finals are absorbed rather than seen as stray responses.
#[derive(Debug, Clone)]
pub struct NonInviteClientTransaction {
    machine: Machine<NonInviteClientState>,
    request: Arc<[u8]>,
    /// Timer E's current interval (`None` on a reliable transport).
    retransmit_interval: Option<Duration>,
}

impl NonInviteClientTransaction {
    /// Starts the transaction for `request` at `now`, in the Trying state:
    /// the request is queued for sending at once, Timer E (UDP only) and
    /// Timer F are started. `reliable` is true for TCP, TLS and SCTP.
    pub fn new(now: Instant, request: Arc<[u8]>, timers: Timers, reliable: bool) -> Self {
        let mut machine = Machine::new(NonInviteClientState::Trying, timers, reliable);
        machine.transmit(&request);
        let retransmit_interval = machine.start_retransmit(Timer::E, now);
        let timeout = timers.sixty_four_t1();
        machine.timers.set(Timer::F, now, timeout);
        NonInviteClientTransaction {
            machine,
            request,
            retransmit_interval,
        }
    }

    /// The current state.
    pub fn state(&self) -> NonInviteClientState {
        self.machine.state
    }

    /// Whether the transaction has ended and can be forgotten.
    pub fn is_terminated(&self) -> bool {
        self.machine.is_terminated()
    }

    /// A response with this `status` matched this transaction (section
    /// 17.1.3). Returns whether it must go to the TU: every provisional
    /// before the final, and the first final; retransmitted finals (and
    /// anything after the transaction ended) are absorbed.
    ///
    /// A final stops Timers E and F and enters Completed, which lasts Timer
    /// K: T4 over UDP, zero (immediate termination) otherwise. A status
    /// outside 100-699 is not a SIP response and is ignored.
    pub fn on_response(&mut self, now: Instant, status: u16) -> bool {
        let live = matches!(
            self.machine.state,
            NonInviteClientState::Trying | NonInviteClientState::Proceeding
        );
        match status {
            _ if !live => false,
            100..=199 => {
                self.machine.state = NonInviteClientState::Proceeding;
                true
            }
            200..=699 => {
                self.machine.timers.stop(Timer::E);
                self.machine.timers.stop(Timer::F);
                self.machine.state = NonInviteClientState::Completed;
                let t4 = self.machine.config.t4;
                self.machine.linger_or_terminate(Timer::K, now, t4);
                true
            }
            _ => false,
        }
    }

    /// The transport could not send the request (section 17.1.4): the
    /// transaction tells the TU ([`Output::TransportError`]) and terminates
    /// at once; failing over to another server is the TU's job.
    pub fn on_transport_error(&mut self) {
        self.machine.transport_error();
    }

    /// The next thing to do, if any; call until `None` after every event.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.machine.poll_output()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next;
    /// `None` when no timer is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }

    /// Runs the timers due at `now`: Timer E retransmits the request, Timer
    /// F gives up ([`Output::TimedOut`]), Timer K ends the lingering.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.machine.timers.expired(now) {
            if !self.machine.timers.fire(timer, now) {
                continue;
            }
            match timer {
                Timer::E => self.retransmit_request(now),
                Timer::F => self.machine.time_out(),
                Timer::K => self.machine.terminate(),
                _ => {}
            }
        }
    }

    /// Timer E (17.1.2.2): in Trying "MIN(2*T1, T2)", then doubling capped
    /// at T2; in Proceeding always T2, since the server has answered and
    /// only the final can still be lost.
    fn retransmit_request(&mut self, now: Instant) {
        let Some(interval) = self.retransmit_interval else {
            return;
        };
        self.machine.transmit(&self.request);
        let t2 = self.machine.config.t2;
        let next = match self.machine.state {
            NonInviteClientState::Proceeding => t2,
            _ => doubled(interval, Some(t2)),
        };
        self.retransmit_interval = Some(next);
        self.machine.timers.set(Timer::E, now, next);
    }
}
