//! The plumbing every transaction kind shares: its configuration, its timer
//! table and its queue of outputs. The kinds differ only in their states
//! and in what each event does, which stays in their own files.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::timer::{Timer, TimerTable};
use super::{Output, Timers};

/// A transaction kind's state enum, which the shared plumbing needs to
/// know only to enter Terminated.
pub(crate) trait State: Copy + Eq {
    /// The state a transaction ends in (every figure of section 17 has one).
    const TERMINATED: Self;
}

/// State, configuration, armed timers and pending outputs of one
/// transaction. The state lives here, next to the timers, so that
/// terminating (which must also stop every timer) is one call that cannot
/// half-happen.
#[derive(Debug, Clone)]
pub(crate) struct Machine<S> {
    /// Where the transaction is in its figure.
    pub(crate) state: S,
    /// T1, T2 and T4.
    pub(crate) config: Timers,
    /// Whether the transport is reliable (TCP, TLS, SCTP): no retransmission
    /// timers, zero lingering timers (Table 4).
    pub(crate) reliable: bool,
    /// The deadlines.
    pub(crate) timers: TimerTable,
    outputs: VecDeque<Output>,
}

impl<S: State> Machine<S> {
    pub(crate) fn new(state: S, config: Timers, reliable: bool) -> Self {
        Machine {
            state,
            config,
            reliable,
            timers: TimerTable::default(),
            // Most events produce one or two outputs before being drained.
            outputs: VecDeque::with_capacity(2),
        }
    }

    /// Queues `bytes` for sending. The `Arc` is shared, not copied.
    pub(crate) fn transmit(&mut self, bytes: &Arc<[u8]>) {
        self.outputs.push_back(Output::Transmit(Arc::clone(bytes)));
    }

    /// Queues an output for the TU.
    pub(crate) fn emit(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.state == S::TERMINATED
    }

    /// Arms the first retransmission of `timer` at T1 if the transport is
    /// unreliable, and returns the interval now in force (T1), or `None` on
    /// a reliable transport, where the transport itself retransmits.
    pub(crate) fn start_retransmit(&mut self, timer: Timer, now: Instant) -> Option<Duration> {
        if self.reliable {
            return None;
        }
        self.timers.set(timer, now, self.config.t1);
        Some(self.config.t1)
    }

    /// Arms a lingering `timer` (D, I, J, K) for `unreliable` over UDP.
    ///
    /// On a reliable transport the RFC makes these timers zero, since no
    /// retransmission will come to be absorbed; the transaction then
    /// terminates at once rather than arming a zero timer, which would only
    /// cost the edge a pointless wake-up before it may forget it.
    pub(crate) fn linger_or_terminate(&mut self, timer: Timer, now: Instant, unreliable: Duration) {
        if self.reliable || unreliable.is_zero() {
            self.terminate();
        } else {
            self.timers.set(timer, now, unreliable);
        }
    }

    /// Enters Terminated: every timer is stopped, so the transaction never
    /// wakes again, and [`Output::Terminated`] goes last in the queue.
    /// Terminating twice is harmless and reports once.
    pub(crate) fn terminate(&mut self) {
        if self.is_terminated() {
            return;
        }
        self.state = S::TERMINATED;
        self.timers.stop_all();
        self.outputs.push_back(Output::Terminated);
    }

    /// Ends the transaction on Timer B, F or H: the TU hears
    /// [`Output::TimedOut`], then [`Output::Terminated`].
    pub(crate) fn time_out(&mut self) {
        self.emit(Output::TimedOut);
        self.terminate();
    }

    /// Ends the transaction on a transport failure (17.1.4, 17.2.4).
    pub(crate) fn transport_error(&mut self) {
        if self.is_terminated() {
            return;
        }
        self.emit(Output::TransportError);
        self.terminate();
    }
}

/// The next retransmission interval: doubled, and capped at `cap` when the
/// RFC caps it (Timers E and G and the 2xx at T2; Timer A has no cap).
pub(crate) fn doubled(interval: Duration, cap: Option<Duration>) -> Duration {
    let next = interval.saturating_mul(2);
    match cap {
        Some(cap) => next.min(cap),
        None => next,
    }
}
