//! The non-INVITE server transaction: RFC 3261 section 17.2.2, Figure 8.

use std::sync::Arc;
use std::time::Instant;

use super::machine::{Machine, State};
use super::timer::Timer;
use super::{Output, Timers, TransactionError};

/// Where a [`NonInviteServerTransaction`] is in RFC 3261 Figure 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    /// The request arrived and nothing was sent yet; retransmissions of it
    /// are absorbed, since there is nothing to resend.
    Trying,
    /// A provisional was sent; retransmissions get it again.
    Proceeding,
    /// The final was sent; retransmissions get it again until Timer J.
    Completed,
    /// Over: forget the transaction.
    Terminated,
}

impl State for NonInviteServerState {
    const TERMINATED: Self = NonInviteServerState::Terminated;
}

impl NonInviteServerState {
    fn name(self) -> &'static str {
        match self {
            NonInviteServerState::Trying => "Trying",
            NonInviteServerState::Proceeding => "Proceeding",
            NonInviteServerState::Completed => "Completed",
            NonInviteServerState::Terminated => "Terminated",
        }
    }
}

/// The server side of a non-INVITE transaction (BYE, INFO, NOTIFY,
/// OPTIONS, REFER... that we receive; RFC 3261 section 17.2.2).
///
/// The client retransmits its request over UDP until it gets a final
/// response; this transaction answers each retransmission with the last
/// response instead of bothering the TU, and after the final lingers for
/// Timer J (64*T1 over UDP, zero otherwise) so that late retransmissions
/// are still answered, not taken for new requests.
///
/// It has no timeout of its own: the TU must answer every request.
#[derive(Debug, Clone)]
pub struct NonInviteServerTransaction {
    machine: Machine<NonInviteServerState>,
    last_response: Option<Arc<[u8]>>,
}

impl NonInviteServerTransaction {
    /// A transaction for a request that just arrived and matched no
    /// existing transaction (section 17.2.3), in the Trying state.
    /// `reliable` is true for TCP, TLS and SCTP, false for UDP.
    pub fn new(timers: Timers, reliable: bool) -> Self {
        NonInviteServerTransaction {
            machine: Machine::new(NonInviteServerState::Trying, timers, reliable),
            last_response: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> NonInviteServerState {
        self.machine.state
    }

    /// Whether the transaction has ended and can be forgotten.
    pub fn is_terminated(&self) -> bool {
        self.machine.is_terminated()
    }

    /// Sends a 1xx response and remembers it for retransmitted requests;
    /// Trying becomes Proceeding.
    ///
    /// Fails after the final response.
    pub fn send_provisional(
        &mut self,
        _now: Instant,
        response: Arc<[u8]>,
    ) -> Result<(), TransactionError> {
        match self.machine.state {
            NonInviteServerState::Trying | NonInviteServerState::Proceeding => {
                self.machine.transmit(&response);
                self.last_response = Some(response);
                self.machine.state = NonInviteServerState::Proceeding;
                Ok(())
            }
            state => Err(TransactionError::WrongState {
                action: "send a provisional response",
                state: state.name(),
            }),
        }
    }

    /// Sends the final response (200-699), enters Completed and starts
    /// Timer J: 64*T1 over UDP; zero on a reliable transport, which
    /// terminates the transaction at once.
    ///
    /// Fails on a status outside 200-699 and after a final response.
    pub fn send_final(
        &mut self,
        now: Instant,
        status: u16,
        response: Arc<[u8]>,
    ) -> Result<(), TransactionError> {
        if !(200..=699).contains(&status) {
            return Err(TransactionError::NotFinal { status });
        }
        match self.machine.state {
            NonInviteServerState::Trying | NonInviteServerState::Proceeding => {
                self.machine.transmit(&response);
                self.last_response = Some(response);
                self.machine.state = NonInviteServerState::Completed;
                let timeout = self.machine.config.sixty_four_t1();
                self.machine.linger_or_terminate(Timer::J, now, timeout);
                Ok(())
            }
            state => Err(TransactionError::WrongState {
                action: "send a final response",
                state: state.name(),
            }),
        }
    }

    /// A retransmission of the request arrived (it matched this
    /// transaction): the last response is sent again, if there is one.
    /// It never reaches the TU.
    pub fn on_request(&mut self, _now: Instant) {
        let resend = matches!(
            self.machine.state,
            NonInviteServerState::Proceeding | NonInviteServerState::Completed
        );
        if let (true, Some(response)) = (resend, &self.last_response) {
            self.machine.transmit(response);
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

    /// Runs the timers due at `now`: Timer J ends the transaction.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.machine.timers.expired(now) {
            if self.machine.timers.fire(timer, now) && timer == Timer::J {
                self.machine.terminate();
            }
        }
    }
}
