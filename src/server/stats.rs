//! Media pacing counters: how late packets leave compared with their
//! schedule (start + n*20 ms). Each worker has its own, written by it alone
//! (shared ones put a cache line in contention on every packet), and the
//! summary adds them up: logged every minute and at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Lateness buckets, in milliseconds (upper bounds; the last is open).
const BOUNDS_MS: [u64; 5] = [2, 5, 10, 20, 50];

/// One worker's counts of packets sent and how late they were.
#[derive(Default)]
pub struct MediaStats {
    sent: AtomicU64,
    buckets: [AtomicU64; 6],
    max_late_us: AtomicU64,
    /// The sum of the lateness, for the histogram's `_sum`.
    late_us_sum: AtomicU64,
    /// RTP packets that reached the worker's calls.
    received: AtomicU64,
}

/// All workers' media counts added up, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MediaCounts {
    /// RTP packets sent.
    pub sent: u64,
    /// RTP packets received.
    pub received: u64,
    /// Packets sent within each of [`LATENESS_BOUNDS`] and over the last
    /// (not cumulative).
    pub buckets: [u64; 6],
    /// The lateness of all packets sent, added up, in microseconds.
    pub late_us_sum: u64,
}

/// The lateness histogram's upper bounds, in seconds.
pub const LATENESS_BOUNDS: [f64; 5] = [0.002, 0.005, 0.010, 0.020, 0.050];

impl MediaStats {
    /// Counts one packet sent `late` after its due time.
    pub fn record(&self, late: Duration) {
        bump(&self.sent);
        let ms = late.as_millis() as u64;
        let i = BOUNDS_MS
            .iter()
            .position(|b| ms < *b)
            .unwrap_or(BOUNDS_MS.len());
        bump(&self.buckets[i]);
        let us = late.as_micros() as u64;
        add(&self.late_us_sum, us);
        // Written by one thread only: a load and a store, no locked op.
        if us > self.max_late_us.load(Ordering::Relaxed) {
            self.max_late_us.store(us, Ordering::Relaxed);
        }
    }

    /// Counts `n` packets a relay rule passed on as they came: sent, and
    /// no later than they arrived.
    pub fn relayed(&self, n: u64) {
        add(&self.sent, n);
        add(&self.buckets[0], n);
    }

    /// Counts `n` RTP packets received.
    pub fn received(&self, n: u64) {
        add(&self.received, n);
    }

    /// All workers' counts added up.
    pub fn counts(all: &[std::sync::Arc<MediaStats>]) -> MediaCounts {
        let mut c = MediaCounts::default();
        for s in all {
            c.sent += s.sent.load(Ordering::Relaxed);
            c.received += s.received.load(Ordering::Relaxed);
            c.late_us_sum += s.late_us_sum.load(Ordering::Relaxed);
            for (sum, b) in c.buckets.iter_mut().zip(&s.buckets) {
                *sum += b.load(Ordering::Relaxed);
            }
        }
        c
    }

    /// A one-line summary of all workers' counts: packets, the shares
    /// later than 2, 20 and 50 ms, the worst.
    pub fn summary(all: &[std::sync::Arc<MediaStats>]) -> String {
        let sent: u64 = all.iter().map(|s| s.sent.load(Ordering::Relaxed)).sum();
        let counts: Vec<u64> = (0..BOUNDS_MS.len() + 1)
            .map(|i| {
                all.iter()
                    .map(|s| s.buckets[i].load(Ordering::Relaxed))
                    .sum()
            })
            .collect();
        let max_late_us = all
            .iter()
            .map(|s| s.max_late_us.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        let late20: u64 = counts[4..].iter().sum();
        let pct = |n: u64| {
            if sent == 0 {
                0.0
            } else {
                100.0 * n as f64 / sent as f64
            }
        };
        format!(
            "rtp packets={sent} late>=2ms={:.3}% late>=20ms={:.3}% late>=50ms={:.3}% max_late={:.1}ms",
            pct(counts[1..].iter().sum()),
            pct(late20),
            pct(counts[5]),
            max_late_us as f64 / 1000.0
        )
    }
}

/// Adds one to a counter that only its worker writes: a plain load and
/// store, cheaper than a locked add on every packet.
fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Adds `n` to a counter that only its worker writes.
fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_summary_adds_up_the_workers() {
        let (a, b) = (
            Arc::new(MediaStats::default()),
            Arc::new(MediaStats::default()),
        );
        a.record(Duration::from_micros(500));
        a.record(Duration::from_millis(3));
        b.record(Duration::from_millis(25));
        b.record(Duration::from_millis(60));
        assert_eq!(
            MediaStats::summary(&[a, b]),
            "rtp packets=4 late>=2ms=75.000% late>=20ms=50.000% late>=50ms=25.000% max_late=60.0ms"
        );
    }
}
