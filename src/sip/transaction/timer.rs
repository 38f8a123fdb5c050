//! The RFC 3261 timers as an enum indexing a table of deadlines, in the
//! style of quinn-proto: a transaction never sleeps, it only remembers when
//! each of its timers is due and reports the earliest one.

use std::time::{Duration, Instant};

/// The timers of RFC 3261 section 17 (Table 4), RFC 6026 (Timers L and M)
/// and the UAS core's 2xx retransmission (section 13.3.1.4, which leaves its
/// two timers unnamed).
///
/// Each transaction kind uses only a few of them; one enum for all keeps a
/// single table type and lets logs name a timer the way the RFC does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// INVITE client: retransmit the INVITE (17.1.1.2), unreliable only.
    A,
    /// INVITE client: give up waiting for any response (17.1.1.2).
    B,
    /// INVITE client: linger in Completed to absorb final retransmissions.
    D,
    /// Non-INVITE client: retransmit the request (17.1.2.2), unreliable only.
    E,
    /// Non-INVITE client: give up waiting for a final response (17.1.2.2).
    F,
    /// INVITE server: retransmit the non-2xx final (17.2.1), unreliable only.
    G,
    /// INVITE server: give up waiting for the ACK (17.2.1).
    H,
    /// INVITE server: linger in Confirmed to absorb ACK retransmissions.
    I,
    /// Non-INVITE server: linger in Completed to absorb request retransmissions.
    J,
    /// Non-INVITE client: linger in Completed to absorb final retransmissions.
    K,
    /// INVITE server, RFC 6026: linger in Accepted after a 2xx.
    L,
    /// INVITE client, RFC 6026: linger in Accepted to pass 2xx retransmissions up.
    M,
    /// UAS core: retransmit the 2xx to an INVITE (13.3.1.4).
    TwoXxRetransmit,
    /// UAS core: stop retransmitting the 2xx after 64*T1 without an ACK.
    TwoXxGiveUp,
}

impl Timer {
    /// How many timers there are: the size of a [`TimerTable`].
    const COUNT: usize = 14;

    const ALL: [Timer; Self::COUNT] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::K,
        Timer::L,
        Timer::M,
        Timer::TwoXxRetransmit,
        Timer::TwoXxGiveUp,
    ];
}

// `Timer as usize` indexes the table: the discriminants must be 0..COUNT.
const _: () = assert!(Timer::TwoXxGiveUp as usize + 1 == Timer::COUNT);

/// When each [`Timer`] is due, if it is armed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    /// Arms `timer` to fire `after` from `now`, replacing any earlier deadline.
    ///
    /// A deadline beyond what `Instant` can represent (only reachable with
    /// absurd configured durations) leaves the timer disarmed: it would
    /// never fire anyway, and this way nothing panics.
    pub(crate) fn set(&mut self, timer: Timer, now: Instant, after: Duration) {
        self.deadlines[timer as usize] = now.checked_add(after);
    }

    /// Disarms `timer`.
    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// Disarms every timer: a terminated transaction must never wake up.
    pub(crate) fn stop_all(&mut self) {
        self.deadlines = [None; Timer::COUNT];
    }

    /// The earliest deadline of all armed timers.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms `timer` and says so if it was due at `now`.
    ///
    /// Handlers call this for each timer of [`TimerTable::expired`] in turn,
    /// so a timer that an earlier handler stopped (Timer H terminating the
    /// transaction stops Timer G) is skipped.
    pub(crate) fn fire(&mut self, timer: Timer, now: Instant) -> bool {
        match self.deadlines[timer as usize] {
            Some(at) if at <= now => {
                self.deadlines[timer as usize] = None;
                true
            }
            _ => false,
        }
    }

    /// The timers due at `now`, earliest first.
    ///
    /// This is a snapshot: a retransmission timer re-armed by its handler is
    /// not visited again in the same call, so even a zero T1 cannot make
    /// `handle_timeout` loop forever.
    pub(crate) fn expired(&self, now: Instant) -> impl Iterator<Item = Timer> + use<> {
        let mut due: [Option<(Instant, Timer)>; Timer::COUNT] = [None; Timer::COUNT];
        for (slot, timer) in due.iter_mut().zip(Timer::ALL) {
            *slot = self.deadlines[timer as usize]
                .filter(|at| *at <= now)
                .map(|at| (at, timer));
        }
        due.sort_unstable();
        due.into_iter().flatten().map(|(_, timer)| timer)
    }
}
