//! The transactions driven on a fake clock: one real `Instant` taken at the
//! start of each test as the base, then only offsets from it. No sleeps.

mod invite_client;
mod invite_server;
mod key;
mod non_invite_client;
mod non_invite_server;
mod two_xx;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// A fake clock: times are milliseconds after a base taken once.
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: Instant,
}

impl Clock {
    fn new() -> Self {
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let base = Instant::now();
        Clock { base }
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from((at - self.base).as_millis()).unwrap_or(u64::MAX)
    }
}

fn bytes(text: &str) -> Arc<[u8]> {
    Arc::from(text.as_bytes())
}

fn transmit(text: &str) -> Output {
    Output::Transmit(bytes(text))
}

/// What every transaction kind has in common, so one driver runs them all.
trait Driven {
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
}

macro_rules! driven {
    ($($kind:ty),*) => {$(
        impl Driven for $kind {
            fn poll_output(&mut self) -> Option<Output> {
                <$kind>::poll_output(self)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$kind>::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$kind>::handle_timeout(self, now)
            }
        }
    )*};
}

driven!(
    InviteServerTransaction,
    NonInviteServerTransaction,
    NonInviteClientTransaction,
    InviteClientTransaction,
    TwoXxRetransmitter
);

/// Everything queued now.
fn drain(tx: &mut impl Driven) -> Vec<Output> {
    std::iter::from_fn(|| tx.poll_output()).collect()
}

/// Jumps from timer to timer up to `until_ms` (inclusive), as the IO edge
/// would, and returns each output with the millisecond it came out at.
/// Outputs queued before the call would get no time, so callers drain them
/// first.
fn run_until(tx: &mut impl Driven, clock: Clock, until_ms: u64) -> Vec<(u64, Output)> {
    let mut seen = Vec::new();
    while let Some(at) = tx.poll_timeout() {
        if at > clock.at(until_ms) {
            break;
        }
        tx.handle_timeout(at);
        seen.extend(drain(tx).into_iter().map(|output| (clock.ms(at), output)));
    }
    seen
}

/// The milliseconds at which something was transmitted.
fn transmit_times(seen: &[(u64, Output)]) -> Vec<u64> {
    seen.iter()
        .filter(|(_, output)| matches!(output, Output::Transmit(_)))
        .map(|(ms, _)| *ms)
        .collect()
}

/// The outputs other than transmissions, with their times.
fn events(seen: &[(u64, Output)]) -> Vec<(u64, Output)> {
    seen.iter()
        .filter(|(_, output)| !matches!(output, Output::Transmit(_)))
        .cloned()
        .collect()
}

#[test]
fn default_timers_are_the_rfc_values() {
    let timers = Timers::default();
    assert_eq!(timers.t1, Duration::from_millis(500));
    assert_eq!(timers.t2, Duration::from_secs(4));
    assert_eq!(timers.t4, Duration::from_secs(5));
}

#[test]
fn zero_t1_cannot_loop_forever() {
    // A misconfiguration, but handle_timeout must still return: each due
    // timer runs once per call.
    let clock = Clock::new();
    let timers = Timers {
        t1: Duration::ZERO,
        ..Timers::default()
    };
    let mut tx = NonInviteClientTransaction::new(clock.at(0), bytes("BYE"), timers, false);
    drain(&mut tx);
    tx.handle_timeout(clock.at(0));
    assert!(tx.is_terminated(), "Timer F is 64*0 = 0");
}
