//! The INVITE client transaction: RFC 3261 section 17.1.1 (Figure 5) with
//! the Accepted state of RFC 6026 section 7.2.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::machine::{doubled, Machine, State};
use super::timer::Timer;
use super::{Output, Timers, TIMER_D_UNRELIABLE};

/// Where an [`InviteClientTransaction`] is in RFC 3261 Figure 5, as RFC 6026
/// corrects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientState {
    /// The INVITE was sent; over UDP Timer A retransmits it until any
    /// response arrives or Timer B gives up.
    Calling,
    /// A provisional arrived: no more retransmissions and no Timer B; how
    /// long to keep ringing is the TU's decision (it CANCELs, section 9).
    Proceeding,
    /// A 3xx-6xx arrived and was ACKed; Timer D absorbs its
    /// retransmissions, ACKing each again.
    Completed,
    /// RFC 6026: a 2xx arrived. Until Timer M, further 2xx (retransmitted
    /// or from other forks) still go to the TU, which ACKs them itself.
    Accepted,
    /// Over: forget the transaction.
    Terminated,
}

impl State for InviteClientState {
    const TERMINATED: Self = InviteClientState::Terminated;
}

/// The client side of an INVITE transaction (RFC 3261 section 17.1.1, RFC
/// 6026 section 7.2): an INVITE we send, for outbound callback calls.
///
/// Over UDP it retransmits the INVITE at T1, 2*T1, 4*T1... (Timer A, not
/// capped) until a response arrives, and gives up after 64*T1 without one
/// (Timer B, [`Output::TimedOut`]). The RFC has the transaction build the
/// ACK for a 3xx-6xx from the response; being parser-free, it takes that
/// ACK from the caller in [`on_response`](Self::on_response) and resends
/// it for every retransmission of the final.
#[derive(Debug, Clone)]
pub struct InviteClientTransaction {
    machine: Machine<InviteClientState>,
    request: Arc<[u8]>,
    /// Timer A's current interval (`None` on a reliable transport).
    retransmit_interval: Option<Duration>,
    /// The ACK for the 3xx-6xx, resent on each retransmission of it.
    ack: Option<Arc<[u8]>>,
}

impl InviteClientTransaction {
    /// Starts the transaction for the INVITE `request` at `now`, in the
    /// Calling state: the INVITE is queued for sending at once, Timer A
    /// (UDP only) and Timer B (64*T1) are started. `reliable` is true for
    /// TCP, TLS and SCTP.
    pub fn new(now: Instant, request: Arc<[u8]>, timers: Timers, reliable: bool) -> Self {
        let mut machine = Machine::new(InviteClientState::Calling, timers, reliable);
        machine.transmit(&request);
        let retransmit_interval = machine.start_retransmit(Timer::A, now);
        let timeout = timers.sixty_four_t1();
        machine.timers.set(Timer::B, now, timeout);
        InviteClientTransaction {
            machine,
            request,
            retransmit_interval,
            ack: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> InviteClientState {
        self.machine.state
    }

    /// Whether the transaction has ended and can be forgotten.
    pub fn is_terminated(&self) -> bool {
        self.machine.is_terminated()
    }

    /// A response with this `status` matched this transaction (section
    /// 17.1.3). Returns whether it must go to the TU.
    ///
    /// - 1xx in Calling or Proceeding: to the TU; Calling becomes
    ///   Proceeding, which stops Timers A and B.
    /// - 2xx in Calling or Proceeding: to the TU, enter Accepted with Timer
    ///   M (64*T1). In Accepted every 2xx goes to the TU (RFC 6026), which
    ///   sends the ACK for 2xx itself (section 13.2.2.4).
    /// - 3xx-6xx in Calling or Proceeding: to the TU; `ack` (the ACK the
    ///   caller built from this response per section 17.1.1.3) is sent,
    ///   and the transaction enters Completed for Timer D (32 s over UDP,
    ///   zero otherwise, which terminates it at once).
    /// - 3xx-6xx in Completed: a retransmission, absorbed; the first ACK is
    ///   sent again, so `ack` may be `None` here.
    ///
    /// Everything else is absorbed, as is a status outside 100-699. `ack`
    /// is ignored except for a 3xx-6xx.
    pub fn on_response(&mut self, now: Instant, status: u16, ack: Option<Arc<[u8]>>) -> bool {
        use InviteClientState::{Accepted, Calling, Completed, Proceeding};
        match (self.machine.state, status) {
            (Calling | Proceeding, 100..=199) => {
                self.stop_calling_timers();
                self.machine.state = Proceeding;
                true
            }
            (Calling | Proceeding, 200..=299) => {
                self.stop_calling_timers();
                self.machine.state = Accepted;
                let timeout = self.machine.config.sixty_four_t1();
                self.machine.timers.set(Timer::M, now, timeout);
                true
            }
            (Accepted, 200..=299) => true,
            (Calling | Proceeding, 300..=699) => {
                self.stop_calling_timers();
                match &ack {
                    Some(ack) => self.machine.transmit(ack),
                    // The server will resend its final until Timer H.
                    None => tracing::warn!(status, "INVITE rejected but no ACK given to send"),
                }
                self.ack = ack;
                self.machine.state = Completed;
                self.machine
                    .linger_or_terminate(Timer::D, now, TIMER_D_UNRELIABLE);
                true
            }
            (Completed, 300..=699) => {
                if let Some(ack) = &self.ack {
                    self.machine.transmit(ack);
                }
                false
            }
            _ => false,
        }
    }

    /// The transport could not send the INVITE or the ACK (section 17.1.4):
    /// the transaction tells the TU ([`Output::TransportError`]) and
    /// terminates at once.
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

    /// Runs the timers due at `now`: Timer A retransmits the INVITE, Timer
    /// B gives up ([`Output::TimedOut`]), Timers D and M end the lingering.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.machine.timers.expired(now) {
            if !self.machine.timers.fire(timer, now) {
                continue;
            }
            match timer {
                Timer::A => self.retransmit_request(now),
                Timer::B => self.machine.time_out(),
                Timer::D | Timer::M => self.machine.terminate(),
                _ => {}
            }
        }
    }

    /// Any response proves the server has the INVITE: Timer A stops
    /// retransmitting it and Timer B, which only guards Calling, stops too.
    fn stop_calling_timers(&mut self) {
        self.machine.timers.stop(Timer::A);
        self.machine.timers.stop(Timer::B);
    }

    /// Timer A (17.1.1.2): "reset with a value of 2*T1", then 4*T1 and so
    /// on. Unlike Timers E and G it is not capped at T2: Timer B ends it
    /// after six retransmissions with the default T1.
    fn retransmit_request(&mut self, now: Instant) {
        let Some(interval) = self.retransmit_interval else {
            return;
        };
        self.machine.transmit(&self.request);
        let next = doubled(interval, None);
        self.retransmit_interval = Some(next);
        self.machine.timers.set(Timer::A, now, next);
    }
}
