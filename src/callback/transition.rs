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

/// Refuses an attempt's word unless `owner` still holds the claim: a
/// claim taken back (lease lapsed) is NULL or another's, even if the
/// request is pending or settled again since. Two diallers' words must
/// never mix.
pub(crate) fn held(conn: &Connection, id: CallbackId, owner: &str) -> Result<(), StoreError> {
    let holder: Option<String> = conn
        .query_row(
            "SELECT claimed_by FROM callbacks WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(StoreError::NotFound(id))?;
    match holder {
        Some(by) if by == owner => Ok(()),
        Some(by) => Err(StoreError::LostClaim { id, by }),
        None => {
            let attempted: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM attempts WHERE request_id = ?1)",
                [id],
                |r| r.get(0),
            )?;
            Err(if attempted {
                StoreError::LostClaim {
                    id,
                    by: "no one".to_string(),
                }
            } else {
                StoreError::NoAttempt(id)
            })
        }
    }
}

/// Refuses the word of `owner` on a request in flight that another holds
/// now (its lease ran out and another process took it over): two
/// diallers' decisions must never mix.
pub(crate) fn fence(conn: &Connection, id: CallbackId, owner: &str) -> Result<(), StoreError> {
    let holder: Option<String> = conn
        .query_row(
            "SELECT claimed_by FROM callbacks WHERE id = ?1 AND state IN ('dialling', 'connected')",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    match holder {
        Some(by) if by != owner => Err(StoreError::LostClaim { id, by }),
        _ => Ok(()),
    }
}

pub(crate) fn record_outcome(
    tx: &Transaction<'_>,
    id: CallbackId,
    now: DateTime<Utc>,
    outcome: &AttemptOutcome,
    owner: &str,
) -> Result<(), StoreError> {
    held(tx, id, owner)?;
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
            "UPDATE callbacks SET state = ?2, updated_at = ?3,
                 claimed_by = CASE WHEN ?2 = 'connected' THEN claimed_by END,
                 lease_until = CASE WHEN ?2 = 'connected' THEN lease_until END
             WHERE id = ?1",
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
    owner: &str,
) -> Result<State, StoreError> {
    fence(tx, id, owner)?;
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
                "UPDATE callbacks SET state = 'pending', next_attempt_at = ?2, updated_at = ?3,
                     claimed_by = NULL, lease_until = NULL
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
                "UPDATE callbacks SET state = 'completed', updated_at = ?2,
                     claimed_by = NULL, lease_until = NULL
                 WHERE id = ?1",
                params![id, now_ms],
            )?;
            State::Completed
        }
        Next::Fail(reason) => {
            let allowed = [State::Pending, State::Dialling, State::Connected];
            require(tx, id, &allowed, "failed")?;
            tx.execute(
                "UPDATE callbacks SET state = 'failed', last_error = ?2, updated_at = ?3,
                     claimed_by = NULL, lease_until = NULL
                 WHERE id = ?1",
                params![id, reason, now_ms],
            )?;
            State::Failed
        }
    };
    tracing::info!(id, ?next, "callback decision applied");
    Ok(state)
}
