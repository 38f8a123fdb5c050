//! The call detail record: one JSON line per finished call.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::flow::interpreter::Outcome;

/// What happened on one call, written when it ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The From header.
    pub from: String,
    /// The To header.
    pub to: String,
    /// ANI.
    pub caller: String,
    /// DNIS.
    pub called: String,
    /// The flow the call was routed to.
    pub flow: String,
    /// When the INVITE arrived (RFC 3339).
    pub start: String,
    /// When we answered, if we did.
    pub answer: Option<String>,
    /// When the call ended.
    pub end: String,
    /// The nodes visited, `flow.node`, in order.
    pub nodes: Vec<String>,
    /// Every key the caller pressed, in order.
    pub digits: String,
    /// `completed`, `transferred`, `callback_requested`, `caller_hung_up`
    /// or `failed`; for calls we placed also `busy`, `no_answer` and
    /// `dial_failed`.
    pub outcome: &'static str,
    /// The node, queue or reason that goes with the outcome.
    pub detail: String,
    /// For a call placed to keep a callback promise: which request and
    /// attempt, and how it went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<super::callback_leg::CallbackAttemptRecord>,
    /// For a call that booked a callback: the request's id, which the
    /// records of the calls placed for it name too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_id: Option<crate::callback::CallbackId>,
}

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The outcome's kind and detail for the record.
pub fn outcome_fields(outcome: &Outcome) -> (&'static str, String) {
    match outcome {
        Outcome::Completed { node } => ("completed", node.clone()),
        Outcome::Transferred { target } => ("transferred", target.clone()),
        Outcome::CallbackRequested { queue } => ("callback_requested", queue.clone()),
        Outcome::CallerHungUp { node } => ("caller_hung_up", node.clone()),
        Outcome::Failed { reason } => ("failed", reason.clone()),
    }
}

impl CallRecord {
    /// The record as one JSON line (with the newline).
    pub fn to_json_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"call_id\":{:?},\"error\":{:?}}}",
                self.call_id,
                e.to_string()
            )
        });
        line.push('\n');
        line
    }
}
