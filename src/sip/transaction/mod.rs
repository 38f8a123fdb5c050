//! SIP transactions (RFC 3261 section 17, with the RFC 6026 correction for
//! 2xx responses to INVITE) and the UAS core's 2xx retransmission (section
//! 13.3.1.4), as sans-IO state machines.
//!
//! A transaction matches a request to its responses and hides the
//! retransmissions that UDP needs. Here it knows nothing of SIP syntax:
//! messages are opaque bytes (`Arc<[u8]>`, so a retransmission is a
//! reference count, not a copy) and the caller, which has parsed them, says
//! what happened (`on_response(now, 486, ..)`, `on_ack(now)`). Matching a
//! message to its transaction is the caller's job too, with a
//! [`TransactionKey`] (section 17.2.3).
//!
//! No transaction reads the clock, sleeps or owns a socket. Each is fed
//! events with the current time and queues [`Output`]s; the IO edge drives
//! all of them with the same loop:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use callflow::sip::transaction::{NonInviteClientTransaction, Output, Timers};
//!
//! let start = Instant::now();
//! let bye: Arc<[u8]> = Arc::from(&b"BYE sip:alice@example.net SIP/2.0\r\n..."[..]);
//! let mut tx = NonInviteClientTransaction::new(start, bye, Timers::default(), false);
//! let mut now = start;
//! let mut sent = 0;
//! loop {
//!     // 1. Drain everything the transaction wants done.
//!     while let Some(output) = tx.poll_output() {
//!         match output {
//!             Output::Transmit(_bytes) => sent += 1, // socket.send_to(&bytes, peer)
//!             Output::TimedOut => { /* the TU treats it as a 408 (8.1.3.1) */ }
//!             Output::Terminated => { /* forget the transaction */ }
//!             _ => {}
//!         }
//!     }
//!     // 2. Sleep until the next timer or until a message arrives, then
//!     //    feed whichever came first: here, no response ever arrives.
//!     match tx.poll_timeout() {
//!         Some(at) => {
//!             now = at;
//!             tx.handle_timeout(now);
//!         }
//!         None => break,
//!     }
//! }
//! // Timer F gave up after 64*T1, having sent the BYE 11 times.
//! assert_eq!(now - start, Duration::from_secs(32));
//! assert_eq!(sent, 11);
//! ```
//!
//! Outputs are drained with `poll_output` (the str0m and quinn-proto
//! style) rather than appended to a caller's buffer, so that every event
//! method keeps the shape the RFC gives it (`on_ack(now)`) and a caller may
//! feed several events before draining. Every event method that a message
//! triggers takes `now`, even the few that ignore it today (a provisional,
//! a retransmitted request), so the edge feeds all messages alike.
//!
//! For reliable transports (TCP, TLS, SCTP) the retransmission timers
//! (A, E, G) are never armed and the lingering timers (D, I, J, K) are zero,
//! so the transaction terminates as soon as it completes (Table 4).

mod invite_client;
mod invite_server;
mod key;
mod machine;
mod non_invite_client;
mod non_invite_server;
mod timer;
mod two_xx;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every transaction of section 17 shares: it is run by its timers
/// and drained of what it wants sent, so a user agent can drive any kind
/// without knowing which it is. Requests and responses go to each kind's
/// own methods, since what they mean differs.
pub trait Transaction {
    /// The next thing to do (send, or report the end).
    fn poll_output(&mut self) -> Option<Output>;
    /// When [`Transaction::handle_timeout`] is next due.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Runs the timers due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The transport failed (RFC 3261 17.1.4, 17.2.4).
    fn on_transport_error(&mut self);
    /// Whether the transaction is over.
    fn is_terminated(&self) -> bool;
}

/// Implements [`Transaction`] by the inherent methods of the same names.
macro_rules! transaction {
    ($($t:ty),*) => {$(
        impl Transaction for $t {
            fn poll_output(&mut self) -> Option<Output> {
                <$t>::poll_output(self)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$t>::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
            fn on_transport_error(&mut self) {
                <$t>::on_transport_error(self)
            }
            fn is_terminated(&self) -> bool {
                <$t>::is_terminated(self)
            }
        }
    )*};
}

transaction!(
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction
);

pub use invite_client::{InviteClientState, InviteClientTransaction};
pub use invite_server::{AckDisposition, InviteServerState, InviteServerTransaction};
pub use key::{LegacyRequest, TransactionKey, MAGIC_COOKIE};
pub use non_invite_client::{NonInviteClientState, NonInviteClientTransaction};
pub use non_invite_server::{NonInviteServerState, NonInviteServerTransaction};
pub use two_xx::TwoXxRetransmitter;

/// The timer base values of RFC 3261 section 17.1.1.1 and Table 4, from
/// which every transaction timer is derived.
///
/// The RFC allows changing them (T1 on networks with a known longer
/// round-trip time, for example), which is why they are configuration and
/// not constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// T1, the round-trip time estimate: the first retransmission interval
    /// and, times 64, the transaction timeout (Timers B, F, H, J, L, M).
    pub t1: Duration,
    /// T2, the longest retransmission interval for non-INVITE requests and
    /// for responses to INVITE (Timers E and G).
    pub t2: Duration,
    /// T4, the longest time a message may stay in the network: how long
    /// a completed transaction lingers to absorb retransmissions (Timers I
    /// and K).
    pub t4: Duration,
}

impl Default for Timers {
    /// The values RFC 3261 recommends: T1 = 500 ms, T2 = 4 s, T4 = 5 s.
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64*T1: how long a transaction waits for its peer before giving up.
    /// Saturates instead of overflowing, so a silly T1 cannot panic.
    fn sixty_four_t1(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// Timer D for unreliable transports: "at least 32 seconds" (17.1.1.2),
/// long enough to absorb every retransmission of the final response that
/// the server's Timer G sends before its Timer H (64*T1) gives up.
const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

/// Something a transaction needs done, drained with `poll_output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes to the peer, exactly as they are: a request, a
    /// response, an ACK, or a retransmission of one of them.
    Transmit(Arc<[u8]>),
    /// Timer B, F or H fired: the peer never answered. Tell the TU, which
    /// treats it as a 408 (Request Timeout) (section 8.1.3.1).
    TimedOut,
    /// The transport reported a failure (sections 17.1.4 and 17.2.4), fed in
    /// with `on_transport_error`. Tell the TU, which treats it as a 503
    /// (Service Unavailable) for a request (section 8.1.3.1).
    TransportError,
    /// The 2xx to an INVITE was retransmitted for 64*T1 without an ACK
    /// (section 13.3.1.4): the dialog is confirmed but the session should be
    /// ended, so the TU sends a BYE.
    AckTimedOut,
    /// The transaction has ended and must be forgotten: any later message
    /// that would have matched it is new (section 17.1.1.2: "destroyed the
    /// instant it enters the Terminated state"). Always the last output.
    Terminated,
}

/// A transaction user (TU) asked for something the state machine forbids.
///
/// These are bugs in the caller, not network events: network events never
/// fail, whatever order they arrive in, because the network may reorder,
/// duplicate and lose messages at will.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// The status code is not of the class the method expects: a final
    /// response needs 200-699 (section 7.2).
    #[error("status {status} is not a final response status (200-699)")]
    NotFinal {
        /// The status code given.
        status: u16,
    },
    /// The transaction is in a state where it cannot send this: a server
    /// transaction sends at most one final response (sections 17.2.1 and
    /// 17.2.2), except the 2xx retransmissions of RFC 6026's Accepted state.
    #[error("cannot {action} in the {state} state")]
    WrongState {
        /// What the TU tried, e.g. "send a provisional response".
        action: &'static str,
        /// The state the transaction was in, as the RFC names it.
        state: &'static str,
    },
}
