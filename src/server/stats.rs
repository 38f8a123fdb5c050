//! Media pacing counters shared by all call tasks: how late packets leave
//! compared with their schedule (start + n*20 ms). Logged every minute and
//! at shutdown; the load benchmark reads them to tell "RTP still paced".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Lateness buckets, in milliseconds (upper bounds; the last is open).
const BOUNDS_MS: [u64; 5] = [2, 5, 10, 20, 50];

/// Counts of packets sent and how late they were.
#[derive(Default)]
pub struct MediaStats {
    sent: AtomicU64,
    buckets: [AtomicU64; 6],
    max_late_us: AtomicU64,
}

impl MediaStats {
    /// Counts one packet sent `late` after its due time.
    pub fn record(&self, late: Duration) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let ms = late.as_millis() as u64;
        let i = BOUNDS_MS
            .iter()
            .position(|b| ms < *b)
            .unwrap_or(BOUNDS_MS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.max_late_us
            .fetch_max(late.as_micros() as u64, Ordering::Relaxed);
    }

    /// A one-line summary: packets, share later than 20 ms, worst.
    pub fn summary(&self) -> String {
        let sent = self.sent.load(Ordering::Relaxed);
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
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
            self.max_late_us.load(Ordering::Relaxed) as f64 / 1000.0
        )
    }
}
