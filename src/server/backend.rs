//! The store a server keeps its callbacks in: the embedded SQLite file (the
//! default) or a PostgreSQL database that several nodes share. Both have
//! the same schema and transitions; this only forwards.

use chrono::{DateTime, Utc};

use super::postgres::PgStore;
use crate::callback::scheduler::Next;
use crate::callback::store::{CallbackStore, Claimant, StoreError};
use crate::callback::{
    Attempt, AttemptOutcome, Callback, CallbackId, ListFilter, NewCallback, Requested, State,
    StoreStats,
};

/// Where callbacks are kept.
#[derive(Debug)]
pub enum Backend {
    /// A SQLite file.
    Sqlite(CallbackStore),
    /// A PostgreSQL database.
    Postgres(Box<PgStore>),
}

/// Where a configuration says callbacks are kept: a file, or PostgreSQL
/// (a `postgres://` or `postgresql://` URL, or the `host=... dbname=...`
/// form, which must never become a file name with a password in it).
pub fn is_postgres(location: &str) -> bool {
    location.starts_with("postgres://")
        || location.starts_with("postgresql://")
        || location.split_whitespace().any(|w| {
            ["host=", "dbname=", "user="]
                .iter()
                .any(|k| w.starts_with(k))
        })
}

macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Backend::Sqlite($s) => $call,
            Backend::Postgres($s) => $call,
        }
    };
}

impl Backend {
    /// Opens the store at `location` (a file path or a PostgreSQL URL).
    pub fn open(location: &str) -> Result<Self, StoreError> {
        if is_postgres(location) {
            Ok(Backend::Postgres(Box::new(PgStore::open(location)?)))
        } else {
            Ok(Backend::Sqlite(CallbackStore::open(location)?))
        }
    }

    /// Claims from now on are `claimant`'s.
    pub fn set_claimant(&mut self, claimant: Claimant) {
        forward!(self, s => s.set_claimant(claimant))
    }

    /// See [`CallbackStore::request`].
    pub fn request(
        &mut self,
        new: NewCallback,
        now: DateTime<Utc>,
    ) -> Result<Requested, StoreError> {
        forward!(self, s => s.request(new, now))
    }

    /// See [`CallbackStore::claim_due`].
    pub fn claim_due(
        &mut self,
        now: DateTime<Utc>,
        limit_per_queue: &dyn Fn(&str) -> usize,
        max: usize,
    ) -> Result<Vec<Callback>, StoreError> {
        forward!(self, s => s.claim_due(now, limit_per_queue, max))
    }

    /// See [`CallbackStore::finish_attempt`].
    pub fn finish_attempt(
        &mut self,
        id: CallbackId,
        now: DateTime<Utc>,
        outcome: &AttemptOutcome,
    ) -> Result<Callback, StoreError> {
        forward!(self, s => s.finish_attempt(id, now, outcome))
    }

    /// See [`CallbackStore::settle_attempt`].
    pub fn settle_attempt(
        &mut self,
        id: CallbackId,
        now: DateTime<Utc>,
        outcome: &AttemptOutcome,
        next: &Next,
    ) -> Result<State, StoreError> {
        forward!(self, s => s.settle_attempt(id, now, outcome, next))
    }

    /// One request.
    pub fn get(&mut self, id: CallbackId) -> Result<Callback, StoreError> {
        forward!(self, s => s.get(id))
    }

    /// A request's attempts.
    pub fn attempts(&mut self, id: CallbackId) -> Result<Vec<Attempt>, StoreError> {
        forward!(self, s => s.attempts(id))
    }

    /// See [`CallbackStore::list`].
    pub fn list(&mut self, filter: &ListFilter) -> Result<Vec<Callback>, StoreError> {
        forward!(self, s => s.list(filter))
    }

    /// See [`CallbackStore::stats`].
    pub fn stats(&mut self) -> Result<StoreStats, StoreError> {
        forward!(self, s => s.stats())
    }

    /// See [`CallbackStore::cancel`].
    pub fn cancel(&mut self, id: CallbackId, now: DateTime<Utc>) -> Result<(), StoreError> {
        forward!(self, s => s.cancel(id, now))
    }

    /// See [`CallbackStore::retry`].
    pub fn retry(&mut self, id: CallbackId, now: DateTime<Utc>) -> Result<(), StoreError> {
        forward!(self, s => s.retry(id, now))
    }

    /// Whether the store answers.
    pub fn ping(&mut self) -> Result<(), StoreError> {
        forward!(self, s => s.ping())
    }

    /// See [`CallbackStore::recover`].
    pub fn recover(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        forward!(self, s => s.recover(now))
    }

    /// See [`CallbackStore::renew`].
    pub fn renew(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        forward!(self, s => s.renew(now))
    }
}
