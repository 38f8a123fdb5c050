//! The admin's view of the store: listing, cancelling and retrying, as
//! `callflow callbacks list|cancel|retry` does on the live database.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::row::{self, millis, RawCallback, ATTEMPT_COLUMNS, CALLBACK_COLUMNS};
use super::store::{CallbackStore, StoreError};
use super::transition::{get_in, require};
use super::{Attempt, Callback, CallbackId, ListFilter, State, StoreStats};

impl CallbackStore {
    /// The requests matching `filter`, oldest id first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Callback>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CALLBACK_COLUMNS} FROM callbacks
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR queue = ?2) ORDER BY id
             LIMIT ?3"
        ))?;
        // SQLite reads a negative limit as none.
        let limit = filter
            .limit
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let rows = stmt.query_map(
            params![filter.state.map(State::as_str), filter.queue, limit],
            RawCallback::read,
        )?;
        rows.map(|raw| raw?.into_callback()).collect()
    }

    /// Whether the database answers a read (cheap: one partial index), for
    /// the readiness check every few seconds.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn.query_row(
            "SELECT COUNT(*) FROM callbacks WHERE state = 'dialling'",
            [],
            |r| r.get::<_, i64>(0),
        )?;
        Ok(())
    }

    /// How many requests are in each state, and when the oldest pending
    /// one was made. Counting reads every row, so the metrics ask for it
    /// only when scraped.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut counts: Vec<(State, u64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM callbacks GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            if let Some(c) = counts.iter_mut().find(|(s, _)| s.as_str() == state) {
                c.1 = u64::try_from(n).unwrap_or(0);
            }
        }
        let oldest: Option<i64> = self.conn.query_row(
            "SELECT MIN(requested_at) FROM callbacks WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(StoreStats {
            by_state: counts,
            oldest_pending: oldest.and_then(DateTime::<Utc>::from_timestamp_millis),
        })
    }

    /// One request.
    pub fn get(&self, id: CallbackId) -> Result<Callback, StoreError> {
        get_in(&self.conn, id)
    }

    /// A request's attempts, first first, including those before a retry.
    pub fn attempts(&self, id: CallbackId) -> Result<Vec<Attempt>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE request_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([id], row::read_attempt)?;
        rows.map(|r| row::into_attempt(r?)).collect()
    }

    /// Withdraws a pending or dialling request (a dialler still holding it
    /// sees `cancelled` when it reports the outcome). Connected and final
    /// requests cannot be cancelled.
    pub fn cancel(&mut self, id: CallbackId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let tx = self.begin()?;
        require(&tx, id, &[State::Pending, State::Dialling], "cancelled")?;
        tx.execute(
            "UPDATE callbacks SET state = 'cancelled', updated_at = ?2 WHERE id = ?1",
            params![id, millis(now)],
        )?;
        tx.commit()?;
        tracing::info!(id, "callback cancelled");
        Ok(())
    }

    /// An admin's second chance: a failed, cancelled or pending request
    /// becomes pending, due at `now`, with a fresh count of attempts (its
    /// past attempts stay in its history).
    pub fn retry(&mut self, id: CallbackId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let tx = self.begin()?;
        require(
            &tx,
            id,
            &[State::Failed, State::Cancelled, State::Pending],
            "retried",
        )?;
        let other: Option<CallbackId> = tx
            .query_row(
                "SELECT b.id FROM callbacks a JOIN callbacks b
                   ON b.number = a.number AND b.queue = a.queue AND b.id != a.id
                 WHERE a.id = ?1 AND b.state IN ('pending', 'dialling')",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(existing) = other {
            return Err(StoreError::AlreadyOpen { id, existing });
        }
        tx.execute(
            "UPDATE callbacks SET state = 'pending', attempts = 0, next_attempt_at = ?2,
                 updated_at = ?2, last_error = NULL
             WHERE id = ?1",
            params![id, millis(now)],
        )?;
        tx.commit()?;
        tracing::info!(id, "callback retried by an admin");
        Ok(())
    }
}
