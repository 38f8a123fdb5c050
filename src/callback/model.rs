//! The values the callback store keeps and hands out; plain data shared by
//! the store and the scheduler so that neither depends on the other's
//! internals.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A callback request's id: the SQLite rowid, never reused (the table is
/// `AUTOINCREMENT`), so an id an admin saw in a list always names the same
/// request.
pub type CallbackId = i64;

/// Where a callback request is in its life.
///
/// Exactly one `pending` or `dialling` request exists per number and queue;
/// `completed`, `failed` and `cancelled` are final (only an admin's
/// `retry` brings a failed or cancelled request back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting for its next attempt (`next_attempt_at`).
    Pending,
    /// Claimed by a dialler: an outbound call is being placed or rings, or
    /// the callee answered and the callback flow runs.
    Dialling,
    /// The callee was handed to the queue (transferred to an agent).
    Connected,
    /// The promise was kept; final.
    Completed,
    /// Given up (attempts exhausted, window closed); final.
    Failed,
    /// Withdrawn by an admin; final.
    Cancelled,
}

impl State {
    /// Every state, in life order: for listings and parsing.
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Dialling,
        State::Connected,
        State::Completed,
        State::Failed,
        State::Cancelled,
    ];

    /// The lowercase name stored in the database and shown by the admin CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Dialling => "dialling",
            State::Connected => "connected",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    /// Whether nothing more happens to the request unless an admin acts.
    pub fn is_final(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`State::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a callback state; use pending, dialling, connected, completed, failed or cancelled")]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownState(text.to_string()))
    }
}

/// What one outbound attempt came to, as the dialler reports it.
///
/// An attempt may be reported several times as it progresses (`Answered`,
/// then `Connected`, then `Completed`); the attempt row keeps the latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The callee picked up and the callback flow runs. As the last word on
    /// an attempt it means no one pressed the key (voicemail, hang-up), which
    /// the scheduler retries like a missed call.
    Answered,
    /// 486 Busy Here (or 600/603 from the callee).
    Busy,
    /// The ring timeout ran out and the call was cancelled.
    NoAnswer,
    /// Any other failure, with its reason (e.g. `503`, `timeout`).
    Failed(String),
    /// The dialling policy refuses the number (e.g. a request stored before
    /// the policy changed): never dialled, and never retried.
    Refused(String),
    /// The callee pressed the key and was transferred to the queue.
    Connected,
    /// The transfer was confirmed: the promise is kept.
    Completed,
}

impl AttemptOutcome {
    /// The text recorded in the attempts table: `answered`, `busy`,
    /// `no-answer`, `failed: <reason>`, `connected`, `completed`.
    pub fn result_text(&self) -> String {
        match self {
            AttemptOutcome::Answered => "answered".into(),
            AttemptOutcome::Busy => "busy".into(),
            AttemptOutcome::NoAnswer => "no-answer".into(),
            AttemptOutcome::Failed(reason) => format!("failed: {reason}"),
            AttemptOutcome::Refused(reason) => format!("refused: {reason}"),
            AttemptOutcome::Connected => "connected".into(),
            AttemptOutcome::Completed => "completed".into(),
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.result_text())
    }
}

/// A request as the flow's `callback` node files it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCallback {
    /// The number to call, digits only (the dialling policy was checked by
    /// the flow before; the store only refuses what could never be dialled).
    pub number: String,
    /// The queue the callee is transferred to, and whose pacing applies.
    pub queue: String,
    /// Higher is dialled sooner.
    pub priority: i32,
    /// The flow context (what the caller entered, VIP flag, path), handed
    /// on with the transfer.
    pub context: Vec<(String, String)>,
    /// Not dialled before this instant (e.g. the queue's next opening).
    pub not_before: Option<DateTime<Utc>>,
    /// Not dialled after this instant; a request still pending then fails.
    pub not_after: Option<DateTime<Utc>>,
}

/// What [`crate::callback::store::CallbackStore::request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// A new request was stored.
    Created(CallbackId),
    /// The number already had a callback booked for the queue; that one was
    /// updated, so the flow can say "a callback is already booked".
    Merged(CallbackId),
}

impl Requested {
    /// The id of the stored request, new or merged.
    pub fn id(self) -> CallbackId {
        match self {
            Requested::Created(id) | Requested::Merged(id) => id,
        }
    }
}

/// A stored callback request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// Its id.
    pub id: CallbackId,
    /// The number to call.
    pub number: String,
    /// The queue it is for.
    pub queue: String,
    /// Higher is dialled sooner.
    pub priority: i32,
    /// The flow context to hand on with the transfer.
    pub context: Vec<(String, String)>,
    /// When it was first requested (the earliest, after merges).
    pub requested_at: DateTime<Utc>,
    /// Not dialled before this instant.
    pub not_before: Option<DateTime<Utc>>,
    /// Not dialled after this instant.
    pub not_after: Option<DateTime<Utc>>,
    /// Where it is in its life.
    pub state: State,
    /// Attempts started since it was requested or last retried by an admin:
    /// the count the retry policy's `max_attempts` is held against.
    pub attempts: u32,
    /// When it is due next (meaningful while pending).
    pub next_attempt_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Why it failed or was last rescheduled, for the admin list.
    pub last_error: Option<String>,
}

/// One outbound attempt of a request, kept for the call records and the
/// admin list (all attempts, including those before an admin's retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The request it belongs to.
    pub request_id: CallbackId,
    /// When the request was claimed for it.
    pub started_at: DateTime<Utc>,
    /// When its latest outcome was recorded; `None` while in progress.
    pub ended_at: Option<DateTime<Utc>>,
    /// [`AttemptOutcome::result_text`], or `interrupted` after a crash;
    /// `None` while in progress.
    pub result: Option<String>,
}

/// Which requests [`crate::callback::store::CallbackStore::list`] returns;
/// `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only requests in this state.
    pub state: Option<State>,
    /// Only requests for this queue.
    pub queue: Option<String>,
    /// At most this many (the oldest first).
    pub limit: Option<usize>,
}

/// How many requests are in each state, and how long the oldest pending
/// one has waited: what the metrics show of the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Requests by state, every state listed.
    pub by_state: Vec<(State, u64)>,
    /// When the oldest pending request was made, if any is pending.
    pub oldest_pending: Option<DateTime<Utc>>,
}
