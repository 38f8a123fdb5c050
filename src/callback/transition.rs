//! State changes shared by the store's methods, each run inside the
//! caller's transaction so that several compose into one commit.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::row::{millis, RawCallback, CALLBACK_COLUMNS};
use super::scheduler::Next;
use super::store::StoreError;
use super::{AttemptOutcome, Callback, CallbackId, State};

pub(crate) fn get_in(conn: &Connection, id: CallbackId) -> Result<Callback, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE id = ?1"
    ))?
    .query_row([id], RawCallback::read)
    .optional()?
    .ok_or(StoreError::NotFound(id))?
    .into_callback()
}

/// The request's state, if it is one of `allowed`.
pub(crate) fn require(
    conn: &Connection,
    id: CallbackId,
    allowed: &[State],
    action: &'static str,
) -> Result<State, StoreError> {
    let text: String = conn
        .query_row("SELECT state FROM callbacks WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or(StoreError::NotFound(id))?;
    let state = text.parse::<State>().map_err(|_| StoreError::Corrupt {
        id,
        what: format!("state `{text}`"),
    })?;
    if allowed.contains(&state) {
        Ok(state)
    } else {
        Err(StoreError::WrongState { id, state, action })
    }
}

pub(crate) fn record_outcome(
    tx: &Transaction<'_>,
    id: CallbackId,
    now: DateTime<Utc>,
    outcome: &AttemptOutcome,
) -> Result<(), StoreError> {
    let state = require(tx, id, &State::ALL, "given an outcome")?;
    let now_ms = millis(now);
    let updated = tx.execute(
        "UPDATE attempts SET result = ?2, ended_at = ?3
         WHERE id = (SELECT MAX(id) FROM attempts WHERE request_id = ?1)",
        params![id, outcome.result_text(), now_ms],
    )?;
    if updated == 0 {
        return Err(StoreError::NoAttempt(id));
    }
    let to = match outcome {
        AttemptOutcome::Connected => State::Connected,
        AttemptOutcome::Completed => State::Completed,
        _ => state,
    };
    if to != state && matches!(state, State::Dialling | State::Connected) {
        tx.execute(
            "UPDATE callbacks SET state = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, to.as_str(), now_ms],
        )?;
    }
    tracing::info!(id, outcome = %outcome, "callback attempt outcome");
    Ok(())
}

pub(crate) fn apply_in(
    tx: &Transaction<'_>,
    id: CallbackId,
    now: DateTime<Utc>,
    next: &Next,
) -> Result<State, StoreError> {
    let now_ms = millis(now);
    let in_flight = [State::Dialling, State::Connected];
    if require(tx, id, &State::ALL, "decided")? == State::Cancelled {
        tracing::info!(id, ?next, "callback was cancelled; decision dropped");
        return Ok(State::Cancelled);
    }
    let state = match next {
        Next::RetryAt(at) => {
            require(tx, id, &in_flight, "rescheduled")?;
            tx.execute(
                "UPDATE callbacks SET state = 'pending', next_attempt_at = ?2, updated_at = ?3
                 WHERE id = ?1",
                params![id, millis(*at), now_ms],
            )?;
            State::Pending
        }
        Next::Complete => {
            // Completed already (the outcome said so) is fine: same end.
            let allowed = [State::Dialling, State::Connected, State::Completed];
            require(tx, id, &allowed, "completed")?;
            tx.execute(
                "UPDATE callbacks SET state = 'completed', updated_at = ?2 WHERE id = ?1",
                params![id, now_ms],
            )?;
            State::Completed
        }
        Next::Fail(reason) => {
            let allowed = [State::Pending, State::Dialling, State::Connected];
            require(tx, id, &allowed, "failed")?;
            tx.execute(
                "UPDATE callbacks SET state = 'failed', last_error = ?2, updated_at = ?3
                 WHERE id = ?1",
                params![id, reason, now_ms],
            )?;
            State::Failed
        }
    };
    tracing::info!(id, ?next, "callback decision applied");
    Ok(state)
}
