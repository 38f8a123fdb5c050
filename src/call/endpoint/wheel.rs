//! The pacing wheel: every call's next deadline, in slots of half a
//! millisecond, so that scheduling a call's next packet and finding the
//! calls that are due cost the same with 10,000 calls as with ten (a heap
//! paid a logarithm on both, per packet).
//!
//! A deadline within the wheel's horizon (RTP every 20 ms, most timers)
//! lands in the slot of its time rounded up to the slot: it is never
//! expired early, and at most one slot late. Deadlines further out (a flow
//! timer of seconds), and those whose slot has already been expired, wait
//! in a small heap, exactly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A slot's width.
const TICK: Duration = Duration::from_micros(500);
/// Slots in the wheel: its horizon is `SLOTS * TICK` (64 ms), three RTP
/// periods.
const SLOTS: u64 = 128;
/// Ticks after which the origin moves up (about half a minute), so tick
/// numbers stay small however long the process runs.
const REBASE_AT: u64 = 1 << 16;

/// Deadlines of items `T` (call handles).
pub(super) struct Wheel<T> {
    /// Time of tick 0.
    origin: Instant,
    /// The first tick not yet expired: slots hold ticks `next_tick ..
    /// next_tick + SLOTS`.
    next_tick: u64,
    slots: Vec<Vec<(Instant, T)>>,
    /// Deadlines outside the horizon.
    later: BinaryHeap<Reverse<(Instant, T)>>,
    len: usize,
}

impl<T: Copy + Ord> Wheel<T> {
    /// An empty wheel whose ticks count from `now`.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            origin: now,
            next_tick: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            later: BinaryHeap::new(),
            len: 0,
        }
    }

    /// Entries held, stale ones included.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn ticks(&self, at: Instant) -> Option<(u64, bool)> {
        let since = at.checked_duration_since(self.origin)?;
        let nanos = since.as_nanos();
        let tick = TICK.as_nanos();
        let floor = u64::try_from(nanos / tick).ok()?;
        Some((floor, nanos % tick != 0))
    }

    fn time_of(&self, tick: u64) -> Instant {
        // A tick count from a long sleep may be large: u64 nanoseconds
        // last centuries.
        let nanos = (TICK.as_nanos() as u64).saturating_mul(tick);
        self.origin + Duration::from_nanos(nanos)
    }

    /// Adds `item`, due at `at`.
    pub(super) fn insert(&mut self, at: Instant, item: T) {
        self.len += 1;
        let slot = self
            .ticks(at)
            .map(|(floor, partial)| floor + u64::from(partial))
            .filter(|t| (self.next_tick..self.next_tick + SLOTS).contains(t));
        match slot {
            Some(t) => self.slots[(t % SLOTS) as usize].push((at, item)),
            None => self.later.push(Reverse((at, item))),
        }
    }

    /// When [`Wheel::expire`] next has something to give: the earliest
    /// deadline, rounded up to its slot.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let wheel = (self.next_tick..self.next_tick + SLOTS)
            .find(|t| !self.slots[(t % SLOTS) as usize].is_empty())
            .map(|t| self.time_of(t));
        let later = self.later.peek().map(|Reverse((at, _))| *at);
        wheel.into_iter().chain(later).min()
    }

    /// Moves every entry due by `now` into `due`: the wheel's slot by
    /// slot, then the heap's (not merged in time order).
    pub(super) fn expire(&mut self, now: Instant, due: &mut Vec<(Instant, T)>) {
        let before = due.len();
        if let Some((upto, _)) = self.ticks(now) {
            if upto >= self.next_tick {
                let count = (upto - self.next_tick + 1).min(SLOTS);
                for t in self.next_tick..self.next_tick + count {
                    due.append(&mut self.slots[(t % SLOTS) as usize]);
                }
                self.next_tick = upto + 1;
                if self.next_tick > REBASE_AT {
                    self.rebase();
                }
            }
        }
        while let Some(&Reverse((at, item))) = self.later.peek() {
            if at > now {
                break;
            }
            self.later.pop();
            due.push((at, item));
        }
        self.len -= due.len() - before;
    }

    /// Keeps only the entries `keep` says are live.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(Instant, T) -> bool) {
        for slot in &mut self.slots {
            slot.retain(|&(at, item)| keep(at, item));
        }
        self.later.retain(|&Reverse((at, item))| keep(at, item));
        self.len = self.slots.iter().map(Vec::len).sum::<usize>() + self.later.len();
    }

    /// Moves the origin up to the next tick.
    fn rebase(&mut self) {
        let origin = self.time_of(self.next_tick);
        let mut slots: Vec<Vec<(Instant, T)>> = (0..SLOTS).map(|_| Vec::new()).collect();
        for t in self.next_tick..self.next_tick + SLOTS {
            std::mem::swap(
                &mut slots[((t - self.next_tick) % SLOTS) as usize],
                &mut self.slots[(t % SLOTS) as usize],
            );
        }
        self.slots = slots;
        self.origin = origin;
        self.next_tick = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // a fake clock needs a base
    fn base() -> Instant {
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn expire(w: &mut Wheel<u32>, now: Instant) -> Vec<u32> {
        let mut due = Vec::new();
        w.expire(now, &mut due);
        due.into_iter().map(|(_, i)| i).collect()
    }

    #[test]
    fn nothing_is_due_early_and_at_most_one_slot_late() {
        let t0 = base();
        let mut w = Wheel::new(t0);
        let at = t0 + ms(20) + Duration::from_micros(100);
        w.insert(at, 1);
        assert_eq!(w.next_deadline(), Some(t0 + ms(20) + TICK));
        assert!(expire(&mut w, at - Duration::from_micros(1)).is_empty());
        assert!(expire(&mut w, at).is_empty(), "its slot is not over yet");
        assert_eq!(expire(&mut w, t0 + ms(20) + TICK), vec![1]);
        assert_eq!((w.len(), w.next_deadline()), (0, None));
    }

    #[test]
    fn far_and_past_deadlines_wait_exactly_in_the_heap() {
        let t0 = base();
        let mut w = Wheel::new(t0 + ms(10));
        w.insert(t0 + ms(5000), 1);
        w.insert(t0, 2);
        w.insert(t0 + ms(30), 3);
        assert_eq!(w.next_deadline(), Some(t0), "the past one at once");
        assert_eq!(expire(&mut w, t0), vec![2]);
        assert_eq!(w.next_deadline(), Some(t0 + ms(30)));
        assert_eq!(expire(&mut w, t0 + ms(4999)), vec![3]);
        assert_eq!(w.next_deadline(), Some(t0 + ms(5000)));
        assert_eq!(expire(&mut w, t0 + ms(5000)), vec![1]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn many_calls_paced_for_a_long_time_come_due_in_order() {
        let t0 = base();
        let mut w = Wheel::new(t0);
        // 1,000 calls, each 20 ms apart, started at spread-out offsets.
        let mut next: Vec<Instant> = (0..1000u32)
            .map(|i| t0 + Duration::from_micros(u64::from(i) * 37 % 20_000))
            .collect();
        for (i, at) in next.iter().enumerate() {
            w.insert(*at, i as u32);
        }
        let mut now = t0;
        let mut sent = 0u64;
        // A minute: the wheel turns many times (and rebases its ticks).
        while now < t0 + Duration::from_secs(60) {
            now = w.next_deadline().expect("calls are paced");
            let mut due = Vec::new();
            w.expire(now, &mut due);
            assert!(!due.is_empty(), "woken for nothing at {now:?}");
            for (at, i) in due {
                assert!(at <= now, "early");
                assert!(now - at < TICK, "late by {:?}", now - at);
                assert_eq!(next[i as usize], at);
                next[i as usize] = at + ms(20);
                w.insert(at + ms(20), i);
                sent += 1;
            }
        }
        assert!(sent >= 1000 * 2999, "{sent}");
        assert_eq!(w.len(), 1000);
    }

    #[test]
    fn after_a_sleep_of_days_the_wheel_still_paces() {
        let t0 = base();
        let mut w = Wheel::new(t0);
        let later = t0 + Duration::from_secs(30 * 24 * 3600);
        assert!(expire(&mut w, later).is_empty());
        let at = later + ms(20) + Duration::from_micros(10);
        w.insert(at, 1);
        assert!(w.later.is_empty(), "in the wheel, not the heap");
        assert_eq!(w.next_deadline(), Some(later + ms(20) + TICK));
        assert_eq!(expire(&mut w, later + ms(20) + TICK), vec![1]);
    }

    #[test]
    fn retain_drops_stale_entries() {
        let t0 = base();
        let mut w = Wheel::new(t0);
        for i in 0..10 {
            w.insert(t0 + ms(i * 10), i as u32);
        }
        w.retain(|_, i| i % 2 == 0);
        assert_eq!(w.len(), 5);
        assert_eq!(expire(&mut w, t0 + ms(200)), vec![0, 2, 4, 6, 8]);
    }

    #[test]
    fn a_long_sleep_expires_the_whole_wheel() {
        let t0 = base();
        let mut w = Wheel::new(t0);
        w.insert(t0 + ms(1), 1);
        w.insert(t0 + ms(63), 2);
        assert_eq!(expire(&mut w, t0 + ms(500)), vec![1, 2]);
        w.insert(t0 + ms(510), 3);
        assert_eq!(expire(&mut w, t0 + ms(510)), vec![3]);
    }
}
