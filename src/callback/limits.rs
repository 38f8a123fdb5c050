//! How many callbacks may be booked for one number, and from one source
//! address, within a window: a caller who may book callbacks at will could
//! have callflow ring someone's phone all day, or run up the trunk's bill
//! on numbers that pass the dialling policy.
//!
//! Pure and bounded: the edge passes the time in, and at most `max_keys`
//! numbers and sources are remembered (expired ones are forgotten first;
//! when the table is still full, bookings are refused rather than let
//! memory grow).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The limits: at most `per_number` bookings for one number and
/// `per_source` from one address within any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingRules {
    /// Bookings for one number.
    pub per_number: usize,
    /// Bookings from one signalling source address (behind an SBC, all its
    /// callers share its address).
    pub per_source: usize,
    /// The window both are counted over.
    pub window: Duration,
    /// Numbers and sources remembered at most.
    pub max_keys: usize,
}

impl Default for BookingRules {
    fn default() -> Self {
        Self {
            per_number: 3,
            per_source: 200,
            window: Duration::from_secs(3600),
            max_keys: 100_000,
        }
    }
}

/// Why a booking was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingRefusal {
    /// The number has had its bookings for now: the caller may give
    /// another.
    Number,
    /// The source has booked its share (or the table is full): nothing the
    /// caller types changes that.
    Source,
}

/// Recent bookings.
#[derive(Debug)]
pub struct BookingLimits {
    rules: BookingRules,
    numbers: Recent<String>,
    sources: Recent<IpAddr>,
}

impl BookingLimits {
    /// Nothing booked yet.
    pub fn new(rules: BookingRules) -> Self {
        Self {
            rules,
            numbers: Recent::default(),
            sources: Recent::default(),
        }
    }

    /// Books one for `number` from `source` at `now`, or says why not (and
    /// then counts nothing).
    pub fn book(
        &mut self,
        now: Instant,
        number: &str,
        source: IpAddr,
    ) -> Result<(), BookingRefusal> {
        let r = self.rules;
        let source = source.to_canonical();
        if !self
            .sources
            .has_room(now, &source, r.per_source, r.window, r.max_keys)
        {
            return Err(BookingRefusal::Source);
        }
        if !self
            .numbers
            .has_room(now, number, r.per_number, r.window, r.max_keys)
        {
            return Err(BookingRefusal::Number);
        }
        self.sources.record(now, source);
        self.numbers.record(now, number.to_string());
        Ok(())
    }
}

/// When each key booked within the window, oldest first.
#[derive(Debug)]
struct Recent<K> {
    seen: HashMap<K, VecDeque<Instant>>,
}

impl<K> Default for Recent<K> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Recent<K> {
    fn has_room<Q>(
        &mut self,
        now: Instant,
        key: &Q,
        limit: usize,
        window: Duration,
        max_keys: usize,
    ) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let expired = |at: &Instant| now.saturating_duration_since(*at) >= window;
        if let Some(times) = self.seen.get_mut(key) {
            while times.front().is_some_and(expired) {
                times.pop_front();
            }
            return times.len() < limit;
        }
        if self.seen.len() >= max_keys {
            self.seen
                .retain(|_, times| times.back().is_some_and(|t| !expired(t)));
        }
        limit > 0 && self.seen.len() < max_keys
    }

    fn record(&mut self, now: Instant, key: K) {
        self.seen.entry(key).or_default().push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(per_number: usize, per_source: usize, max_keys: usize) -> BookingRules {
        BookingRules {
            per_number,
            per_source,
            window: Duration::from_secs(3600),
            max_keys,
        }
    }

    #[test]
    fn a_number_gets_its_share_per_window_then_another_number_may_be_given() {
        let mut limits = BookingLimits::new(rules(2, 10, 100));
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let t0 = Instant::now();
        let src: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(limits.book(t0, "37120000000", src), Ok(()));
        assert_eq!(limits.book(t0, "37120000000", src), Ok(()));
        assert_eq!(
            limits.book(t0, "37120000000", src),
            Err(BookingRefusal::Number)
        );
        assert_eq!(limits.book(t0, "37120000001", src), Ok(()));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(limits.book(later, "37120000000", src), Ok(()));
    }

    #[test]
    fn one_source_cannot_book_many_numbers() {
        let mut limits = BookingLimits::new(rules(3, 5, 100));
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let t0 = Instant::now();
        let src: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..5 {
            assert_eq!(limits.book(t0, &format!("3712000000{i}"), src), Ok(()));
        }
        assert_eq!(
            limits.book(t0, "37129999999", src),
            Err(BookingRefusal::Source)
        );
        let other: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        assert_eq!(limits.book(t0, "37129999999", other), Ok(()));
    }

    #[test]
    fn the_tables_are_bounded_and_expired_entries_make_room() {
        let mut limits = BookingLimits::new(rules(3, 3, 10));
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let t0 = Instant::now();
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        for i in 0..10 {
            assert_eq!(limits.book(t0, &format!("5550{i}"), ip(i)), Ok(()));
        }
        assert_eq!(
            limits.book(t0, "55599", ip(99)),
            Err(BookingRefusal::Source),
            "full: refused, not grown"
        );
        let later = t0 + Duration::from_secs(3601);
        assert_eq!(limits.book(later, "55599", ip(99)), Ok(()));
        assert_eq!(limits.sources.seen.len(), 1);
    }
}
