//! A call worker's timer, to the kernel's resolution.
//!
//! tokio's timer rounds every deadline up to its next millisecond tick,
//! and the pacing wheel's deadlines are half a millisecond apart: a packet
//! waited up to a millisecond more than its slot. A timerfd wakes the
//! worker's poll at the deadline itself (within the thread's timer slack).
//! Where no timerfd can be had, tokio's timer stands in.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;

/// The slack asked for on a worker's thread: the default 50 µs would let
/// the kernel merge its wake-ups with others' that late.
const SLACK_NS: u64 = 10_000;

/// A worker's timer: one deadline at a time, re-armed only when it moves.
pub(super) struct Timer {
    fd: Option<AsyncFd<OwnedFd>>,
    armed: Option<Instant>,
}

impl Timer {
    /// A timer for the calling thread's runtime (it registers there).
    pub(super) fn new() -> Self {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .map_err(std::io::Error::from)
        .and_then(watch);
        let fd = match fd {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!("no timerfd ({e}); pacing to the millisecond");
                None
            }
        };
        if let Some(slack) = std::num::NonZeroU64::new(SLACK_NS) {
            if let Err(e) = rustix::thread::set_current_timer_slack(Some(slack)) {
                tracing::debug!("cannot narrow the timer slack: {e}");
            }
        }
        Self { fd, armed: None }
    }

    /// Returns at `deadline` (at once if it has passed), never without one.
    pub(super) async fn until(&mut self, deadline: Option<Instant>) {
        let Some(deadline) = deadline else {
            return std::future::pending().await;
        };
        let Some(fd) = &self.fd else {
            return super::sleep_until(Some(deadline)).await;
        };
        loop {
            let left = deadline.saturating_duration_since(super::now());
            if left.is_zero() {
                // Ready at once, as it is on every turn of a worker behind
                // schedule: it takes from the task's budget like tokio's
                // own timer, so the worker still yields to its runtime.
                return tokio::task::coop::consume_budget().await;
            }
            if self.armed != Some(deadline) {
                if let Err(e) = arm(fd, left) {
                    // Said once: the millisecond timer stands in from now.
                    tracing::warn!("cannot arm the timerfd ({e}); pacing to the millisecond");
                    self.fd = None;
                    return super::sleep_until(Some(deadline)).await;
                }
                self.armed = Some(deadline);
            }
            let Ok(mut ready) = fd.readable().await else {
                return super::sleep_until(Some(deadline)).await;
            };
            let mut expirations = [0u8; 8];
            match ready.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut expirations).map_err(std::io::Error::from)
            }) {
                Ok(_) => {
                    // Not armed again until re-armed: the next wait need
                    // not try a read that would only find it empty.
                    ready.clear_ready();
                    self.armed = None;
                    return;
                }
                // Readiness left from a deadline since moved: wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

/// Registers the timerfd with this thread's runtime. `AsyncFd::new` is
/// deprecated because an arbitrary `AsRawFd` may close its descriptor
/// while registered; an `OwnedFd` moved into the `AsyncFd` cannot (and
/// the crate forbids the unsafe `register`).
#[allow(deprecated)]
fn watch(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}

/// Arms `fd` to expire once, `left` from now. Re-arming also clears an
/// expiry not read yet (timerfd_settime(2)).
fn arm(fd: &AsyncFd<OwnedFd>, left: Duration) -> std::io::Result<()> {
    let value = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        },
    };
    timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &value)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn wakes_from_the_timerfd_and_never_early() {
        let mut timer = Timer::new();
        assert!(timer.fd.is_some(), "Linux has timerfd: no fallback here");
        for _ in 0..50 {
            let deadline = super::super::now() + Duration::from_micros(300);
            timer.until(Some(deadline)).await;
            assert!(super::super::now() >= deadline, "never early");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_moved_deadline_replaces_the_armed_one() {
        let mut timer = Timer::new();
        let far = super::super::now() + Duration::from_secs(3600);
        // Armed for an hour, then dropped (as a select! drops it) ...
        tokio::select! {
            _ = timer.until(Some(far)) => panic!("an hour passed"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        // ... and re-armed for now-ish: it must not wait the hour.
        let soon = super::super::now() + Duration::from_millis(2);
        tokio::time::timeout(Duration::from_secs(10), timer.until(Some(soon)))
            .await
            .expect("the new deadline, not the old one");
        // A passed deadline returns at once; none never returns.
        timer.until(Some(soon)).await;
        let none = tokio::time::timeout(Duration::from_millis(20), timer.until(None)).await;
        assert!(none.is_err());
    }
}
