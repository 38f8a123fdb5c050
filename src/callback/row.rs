//! Reading stored rows back into [`Callback`] and [`Attempt`] values, with
//! every unreadable value reported rather than guessed.

use chrono::{DateTime, Utc};
use rusqlite::Row;

use super::store::StoreError;
use super::{Attempt, Callback, CallbackId, State};

/// The `callbacks` columns in the order [`RawCallback::read`] expects.
pub(crate) const CALLBACK_COLUMNS: &str = "id, number, queue, priority, context, requested_at, \
     not_before, not_after, state, attempts, next_attempt_at, updated_at, last_error";

/// Milliseconds since the epoch, the stored form of every instant.
pub(crate) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn instant(id: CallbackId, what: &str, value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(value).ok_or_else(|| StoreError::Corrupt {
        id,
        what: format!("{what} ({value})"),
    })
}

fn optional_instant(
    id: CallbackId,
    what: &str,
    value: Option<i64>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    value.map(|v| instant(id, what, v)).transpose()
}

/// A `callbacks` row as SQLite types; converted outside the row closure so
/// that a bad value becomes a [`StoreError::Corrupt`] naming the request.
pub(crate) struct RawCallback {
    id: i64,
    number: String,
    queue: String,
    priority: i32,
    context: String,
    requested_at: i64,
    not_before: Option<i64>,
    not_after: Option<i64>,
    state: String,
    attempts: i64,
    next_attempt_at: i64,
    updated_at: i64,
    last_error: Option<String>,
}

impl RawCallback {
    /// Reads a row selected with [`CALLBACK_COLUMNS`].
    pub(crate) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawCallback {
            id: row.get(0)?,
            number: row.get(1)?,
            queue: row.get(2)?,
            priority: row.get(3)?,
            context: row.get(4)?,
            requested_at: row.get(5)?,
            not_before: row.get(6)?,
            not_after: row.get(7)?,
            state: row.get(8)?,
            attempts: row.get(9)?,
            next_attempt_at: row.get(10)?,
            updated_at: row.get(11)?,
            last_error: row.get(12)?,
        })
    }

    /// Reads a PostgreSQL row selected with [`CALLBACK_COLUMNS`] (the same
    /// columns; `priority` and `attempts` are INTEGER there).
    pub(crate) fn from_pg(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(RawCallback {
            id: row.try_get(0)?,
            number: row.try_get(1)?,
            queue: row.try_get(2)?,
            priority: row.try_get(3)?,
            context: row.try_get(4)?,
            requested_at: row.try_get(5)?,
            not_before: row.try_get(6)?,
            not_after: row.try_get(7)?,
            state: row.try_get(8)?,
            attempts: i64::from(row.try_get::<_, i32>(9)?),
            next_attempt_at: row.try_get(10)?,
            updated_at: row.try_get(11)?,
            last_error: row.try_get(12)?,
        })
    }

    /// Sort key of the dialling order: priority first, then age.
    pub(crate) fn dialling_order(&self) -> (std::cmp::Reverse<i32>, i64, i64) {
        (std::cmp::Reverse(self.priority), self.requested_at, self.id)
    }

    /// The id, before conversion (for updates by id).
    pub(crate) fn id(&self) -> CallbackId {
        self.id
    }

    /// Converts, checking every value.
    pub(crate) fn into_callback(self) -> Result<Callback, StoreError> {
        let id = self.id;
        let corrupt = |what: &str| StoreError::Corrupt {
            id,
            what: what.to_string(),
        };
        Ok(Callback {
            id,
            context: serde_json::from_str(&self.context)
                .map_err(|e| corrupt(&format!("context ({e})")))?,
            requested_at: instant(id, "requested_at", self.requested_at)?,
            not_before: optional_instant(id, "not_before", self.not_before)?,
            not_after: optional_instant(id, "not_after", self.not_after)?,
            state: self
                .state
                .parse::<State>()
                .map_err(|_| corrupt(&format!("state `{}`", self.state)))?,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| corrupt(&format!("attempts ({})", self.attempts)))?,
            next_attempt_at: instant(id, "next_attempt_at", self.next_attempt_at)?,
            updated_at: instant(id, "updated_at", self.updated_at)?,
            number: self.number,
            queue: self.queue,
            priority: self.priority,
            last_error: self.last_error,
        })
    }
}

/// The `attempts` columns in the order [`read_attempt`] expects.
pub(crate) const ATTEMPT_COLUMNS: &str = "request_id, started_at, ended_at, result";

/// Reads an attempt row selected with [`ATTEMPT_COLUMNS`].
pub(crate) fn read_attempt(
    row: &Row<'_>,
) -> rusqlite::Result<(CallbackId, i64, Option<i64>, Option<String>)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

/// Converts what [`read_attempt`] read, checking the instants.
pub(crate) fn into_attempt(
    (request_id, started_at, ended_at, result): (CallbackId, i64, Option<i64>, Option<String>),
) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        request_id,
        started_at: instant(request_id, "attempt started_at", started_at)?,
        ended_at: optional_instant(request_id, "attempt ended_at", ended_at)?,
        result,
    })
}
