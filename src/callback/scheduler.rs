//! When to dial a callback again: pure decisions, no IO and no clock.
//!
//! The dialler reports how an attempt went; [`RetryPolicy::next_after`] turns
//! that, the current time and the request's [`Window`] into a [`Next`], which
//! the store applies. Keeping the rules here means the back-off, the attempt
//! limit and the opening-hours arithmetic are tested with fixed instants, and
//! the store stays a plain keeper of state.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{AttemptOutcome, Callback};
use crate::flow::schedule::Schedule;

/// How far ahead [`Window::next_open`] looks for an opening before giving
/// up: a year covers any schedule that opens at all, including long holiday
/// closures, while bounding the work for one that never opens.
pub const OPENING_SEARCH_HORIZON: TimeDelta = TimeDelta::days(366);

/// The rules for retrying a callback whose attempt did not reach a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included; after the last failed one
    /// the request fails.
    pub max_attempts: u32,
    /// The wait after the 1st, 2nd, ... failed attempt; the last entry
    /// repeats for later attempts, and an empty list retries at once.
    pub backoff: Vec<Duration>,
    /// How long an outbound call rings before it is cancelled as no answer
    /// (the dialler's timer; kept here so one policy describes an attempt).
    pub ring_timeout: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts, 5 then 15 minutes apart, ringing 30 s each: long
    /// enough for a busy caller to finish a call, short enough that the
    /// callback still feels like an answer.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: vec![Duration::from_secs(5 * 60), Duration::from_secs(15 * 60)],
            ring_timeout: Duration::from_secs(30),
        }
    }
}

/// What to do with a request after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Dial again at this instant (already inside the window and the
    /// opening hours).
    RetryAt(DateTime<Utc>),
    /// The callee reached the queue: the promise is kept.
    Complete,
    /// Give up, for this reason (shown to admins and in call records).
    Fail(String),
}

/// When a request may be dialled: its own bounds and its queue's hours.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window<'a> {
    /// Not before this instant.
    pub not_before: Option<DateTime<Utc>>,
    /// Not after this instant.
    pub not_after: Option<DateTime<Utc>>,
    /// The queue's opening hours; `None` means always open.
    pub hours: Option<&'a Schedule>,
}

impl<'a> Window<'a> {
    /// The window of a stored request, with its queue's hours.
    pub fn of(callback: &Callback, hours: Option<&'a Schedule>) -> Self {
        Window {
            not_before: callback.not_before,
            not_after: callback.not_after,
            hours,
        }
    }

    /// The first instant at or after `from` when dialling is allowed, or
    /// `None` if there is none before `not_after` (or within
    /// [`OPENING_SEARCH_HORIZON`]).
    ///
    /// The hours are searched minute by minute in UTC:
    /// [`Schedule::is_open`] only changes at whole local minutes, and every
    /// local minute that exists is some UTC minute, so the scan is exact
    /// across midnight spills, DST gaps and repeats, and in any time zone
    /// with whole-minute offsets. A coarser step or a bisection could jump
    /// over a short opening, since open and closed alternate.
    pub fn next_open(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = self.not_before.map_or(from, |nb| nb.max(from));
        let end = self
            .not_after
            .unwrap_or(start + OPENING_SEARCH_HORIZON)
            .min(start + OPENING_SEARCH_HORIZON);
        if start > end {
            return None;
        }
        match self.hours {
            Some(hours) => hours.next_open_between(start, end),
            None => Some(start),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt_number` (1-based).
    pub fn backoff_after(&self, attempt_number: u32) -> Duration {
        let index = attempt_number.saturating_sub(1) as usize;
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// Decides what follows attempt `attempt_number` (1-based, as counted
    /// by the store when it claimed the request) that ended with `outcome`
    /// at `now`.
    ///
    /// `Connected` and `Completed` complete the request. Everything else is
    /// a missed call, `Answered` included (as a last word it means nobody
    /// pressed the key: voicemail or a hang-up), and is retried after the
    /// back-off at the next instant the window allows, unless the attempts
    /// are used up or the window has no such instant.
    pub fn next_after(
        &self,
        attempt_number: u32,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
        window: &Window<'_>,
    ) -> Next {
        match outcome {
            AttemptOutcome::Connected | AttemptOutcome::Completed => return Next::Complete,
            AttemptOutcome::Refused(why) => {
                return Next::Fail(format!("the dialling policy refuses the number: {why}"))
            }
            AttemptOutcome::Answered
            | AttemptOutcome::Busy
            | AttemptOutcome::NoAnswer
            | AttemptOutcome::Failed(_) => {}
        }
        if attempt_number >= self.max_attempts {
            return Next::Fail(format!(
                "{attempt_number} of {} attempts made, the last {outcome}",
                self.max_attempts
            ));
        }
        // A back-off too long for chrono is "never" in practice.
        let Some(earliest) = TimeDelta::from_std(self.backoff_after(attempt_number))
            .ok()
            .and_then(|wait| now.checked_add_signed(wait))
        else {
            return Next::Fail(format!(
                "the back-off after attempt {attempt_number} is too long"
            ));
        };
        match window.next_open(earliest) {
            Some(at) => Next::RetryAt(at),
            None => Next::Fail(format!(
                "after attempt {attempt_number} ({outcome}) no time is left in the window to dial again"
            )),
        }
    }
}
