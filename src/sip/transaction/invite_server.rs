//! The INVITE server transaction: RFC 3261 section 17.2.1 (Figure 7) with
//! the Accepted state of RFC 6026 section 7.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::machine::{doubled, Machine, State};
use super::timer::Timer;
use super::{Output, Timers, TransactionError};

/// Where an [`InviteServerTransaction`] is in RFC 3261 Figure 7, as RFC 6026
/// corrects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    /// The INVITE arrived; provisional responses may be sent. A
    /// retransmitted INVITE gets the last provisional again.
    Proceeding,
    /// A 3xx-6xx was sent; it is retransmitted (Timer G) until the ACK
    /// arrives or Timer H gives up.
    Completed,
    /// The ACK for the 3xx-6xx arrived; Timer I absorbs its retransmissions.
    Confirmed,
    /// RFC 6026: a 2xx was sent. The transaction absorbs INVITE
    /// retransmissions until Timer L, while the TU retransmits the 2xx
    /// ([`super::TwoXxRetransmitter`]) and takes the ACK.
    Accepted,
    /// Over: forget the transaction.
    Terminated,
}

impl State for InviteServerState {
    const TERMINATED: Self = InviteServerState::Terminated;
}

impl InviteServerState {
    fn name(self) -> &'static str {
        match self {
            InviteServerState::Proceeding => "Proceeding",
            InviteServerState::Completed => "Completed",
            InviteServerState::Confirmed => "Confirmed",
            InviteServerState::Accepted => "Accepted",
            InviteServerState::Terminated => "Terminated",
        }
    }
}

/// What the caller must do with an ACK it matched to an
/// [`InviteServerTransaction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckDisposition {
    /// The transaction consumed it: it acknowledged our 3xx-6xx (or was a
    /// retransmission of that ACK). Nothing more to do.
    Absorbed,
    /// RFC 6026 section 7.1: in Accepted the ACK acknowledges the 2xx,
    /// which is the TU's business: pass it up (it stops the
    /// [`super::TwoXxRetransmitter`] and confirms the dialog).
    PassToTu,
}

/// The server side of an INVITE transaction (RFC 3261 section 17.2.1, RFC
/// 6026 section 7.1): it answers retransmitted INVITEs with the last
/// response, retransmits a 3xx-6xx over UDP until the ACK, and absorbs
/// INVITE retransmissions after a 2xx.
///
/// Create it when a new INVITE arrives, then have the TU send a 100 Trying
/// at once with [`send_provisional`](Self::send_provisional). The RFC makes
/// the transaction send 100 Trying itself after 200 ms "unless it knows that
/// the TU will generate a provisional or final response within 200 ms";
/// building one needs the request's headers, which this parser-free
/// transaction does not have, so the TU always sends it, immediately, and
/// retransmitted INVITEs stop at once (the 100 is what they get back).
///
/// A 2xx is sent once through [`send_final`](Self::send_final); its
/// retransmissions until the ACK are the UAS core's job (section 13.3.1.4)
/// with a [`super::TwoXxRetransmitter`], because a 2xx must reach the caller
/// across every hop even when this hop is reliable.
#[derive(Debug, Clone)]
pub struct InviteServerTransaction {
    machine: Machine<InviteServerState>,
    /// What a retransmitted INVITE gets: the last provisional in
    /// Proceeding, the final in Completed.
    last_response: Option<Arc<[u8]>>,
    /// Timer G's current interval: T1, doubling up to T2.
    retransmit_interval: Option<Duration>,
}

impl InviteServerTransaction {
    /// A transaction for an INVITE that just arrived and matched no
    /// existing transaction (section 17.2.3), in the Proceeding state.
    /// `reliable` is true for TCP, TLS and SCTP, false for UDP.
    pub fn new(timers: Timers, reliable: bool) -> Self {
        InviteServerTransaction {
            machine: Machine::new(InviteServerState::Proceeding, timers, reliable),
            last_response: None,
            retransmit_interval: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> InviteServerState {
        self.machine.state
    }

    /// Whether the transaction has ended and can be forgotten.
    pub fn is_terminated(&self) -> bool {
        self.machine.is_terminated()
    }

    /// Sends a 1xx response (section 17.2.1: "any provisional responses
    /// passed from the TU MUST be passed to the transport layer") and
    /// remembers it for retransmitted INVITEs.
    ///
    /// Fails unless the transaction is in Proceeding: after a final
    /// response no provisional may follow.
    pub fn send_provisional(
        &mut self,
        _now: Instant,
        response: Arc<[u8]>,
    ) -> Result<(), TransactionError> {
        let state = self.machine.state;
        if state != InviteServerState::Proceeding {
            return Err(TransactionError::WrongState {
                action: "send a provisional response",
                state: state.name(),
            });
        }
        self.machine.transmit(&response);
        self.last_response = Some(response);
        Ok(())
    }

    /// Sends a final response with this `status`.
    ///
    /// - 3xx-6xx from Proceeding: enter Completed, start Timer G (UDP only)
    ///   to retransmit it and Timer H (64*T1) to give up on the ACK.
    /// - 2xx from Proceeding: enter Accepted (RFC 6026) and start Timer L
    ///   (64*T1). The TU retransmits the 2xx itself.
    /// - 2xx in Accepted: RFC 6026 has the transaction pass it on, so the
    ///   TU may route its 2xx retransmissions through here.
    ///
    /// Fails on a status outside 200-699 and on any other state.
    pub fn send_final(
        &mut self,
        now: Instant,
        status: u16,
        response: Arc<[u8]>,
    ) -> Result<(), TransactionError> {
        if !(200..=699).contains(&status) {
            return Err(TransactionError::NotFinal { status });
        }
        let success = status < 300;
        match self.machine.state {
            InviteServerState::Proceeding if success => {
                self.machine.transmit(&response);
                self.machine.state = InviteServerState::Accepted;
                let timeout = self.machine.config.sixty_four_t1();
                self.machine.timers.set(Timer::L, now, timeout);
            }
            InviteServerState::Accepted if success => self.machine.transmit(&response),
            InviteServerState::Proceeding => {
                self.machine.transmit(&response);
                self.last_response = Some(response);
                self.machine.state = InviteServerState::Completed;
                self.retransmit_interval = self.machine.start_retransmit(Timer::G, now);
                let timeout = self.machine.config.sixty_four_t1();
                self.machine.timers.set(Timer::H, now, timeout);
            }
            state => {
                return Err(TransactionError::WrongState {
                    action: "send a final response",
                    state: state.name(),
                })
            }
        }
        Ok(())
    }

    /// A retransmission of the INVITE arrived (it matched this transaction).
    ///
    /// In Proceeding the last provisional is sent again, in Completed the
    /// final; otherwise it is absorbed: in Accepted RFC 6026 keeps it from
    /// the TU, whose own 2xx retransmissions answer it.
    pub fn on_request(&mut self, _now: Instant) {
        let resend = matches!(
            self.machine.state,
            InviteServerState::Proceeding | InviteServerState::Completed
        );
        if let (true, Some(response)) = (resend, &self.last_response) {
            self.machine.transmit(response);
        }
    }

    /// An ACK matched this transaction.
    ///
    /// In Completed it acknowledges the 3xx-6xx: retransmission stops and
    /// the transaction enters Confirmed, lingering for Timer I (T4 over
    /// UDP, zero otherwise, when it terminates at once) to absorb ACK
    /// retransmissions. In Accepted it belongs to the TU (RFC 6026).
    pub fn on_ack(&mut self, now: Instant) -> AckDisposition {
        match self.machine.state {
            InviteServerState::Completed => {
                self.machine.timers.stop(Timer::G);
                self.machine.timers.stop(Timer::H);
                self.machine.state = InviteServerState::Confirmed;
                let t4 = self.machine.config.t4;
                self.machine.linger_or_terminate(Timer::I, now, t4);
                AckDisposition::Absorbed
            }
            InviteServerState::Accepted => AckDisposition::PassToTu,
            _ => AckDisposition::Absorbed,
        }
    }

    /// The transport could not send a response (section 17.2.4): the
    /// transaction tells the TU ([`Output::TransportError`]) and terminates.
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

    /// Runs the timers due at `now`: Timer G retransmits the final, Timer H
    /// gives up waiting for the ACK ([`Output::TimedOut`]), Timers I and L
    /// end the lingering.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.machine.timers.expired(now) {
            if !self.machine.timers.fire(timer, now) {
                continue;
            }
            match timer {
                Timer::G => self.retransmit_final(now),
                Timer::H => self.machine.time_out(),
                Timer::I | Timer::L => self.machine.terminate(),
                _ => {}
            }
        }
    }

    /// Timer G: "MIN(2*T1, T2)", then doubling, capped at T2 (17.2.1).
    fn retransmit_final(&mut self, now: Instant) {
        let (Some(response), Some(interval)) = (&self.last_response, self.retransmit_interval)
        else {
            return;
        };
        self.machine.transmit(response);
        let next = doubled(interval, Some(self.machine.config.t2));
        self.retransmit_interval = Some(next);
        self.machine.timers.set(Timer::G, now, next);
    }
}
