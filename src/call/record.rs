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
    /// How the call ended, serialised by name (`completed`,
    /// `transferred`, ...).
    pub outcome: CallOutcome,
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
    /// For a transferred call: how it reached the queue (`refer` or
    /// `bridge`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<crate::flow::model::Handoff>,
    /// Why the REFER failed, when the call was then bridged instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refer_failed: Option<String>,
    /// For a bridged call: when the agent answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_answer: Option<String>,
    /// What the caller did at the flow's menus and entries (keys taken,
    /// the agent key, keys refused, silences), in order, at most
    /// [`MAX_INPUTS`]: what `callflow report` reads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<FlowInput>,
    /// Transfers that did not reach the queue (refused, no answer, no
    /// final NOTIFY), in order, at most [`MAX_FAILED_TRANSFERS`]: the
    /// flow went on to its `on_fail`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_transfers: Vec<FailedTransfer>,
    /// Who ended the call, when a side did (not for calls that never
    /// connected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hung_up_by: Option<Party>,
    /// The node (`callflow serve` instance) that handled the call, so that
    /// records gathered from several nodes say where each call ran; set
    /// by the record writer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The most failed transfers a record lists: a flow whose `on_fail` leads
/// back to the transfer could otherwise grow a record without end.
pub const MAX_FAILED_TRANSFERS: usize = 16;

/// The most inputs a record lists.
pub const MAX_INPUTS: usize = 64;

/// One thing the caller did (or did not do) at a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FlowInput {
    /// The node, `flow.node`.
    pub at: String,
    /// What happened.
    pub input: InputKind,
    /// The key, for `key` and `invalid`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<char>,
}

/// What a [`FlowInput`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// A key the node took (a menu option).
    Key,
    /// The agent key, from any menu or entry.
    AgentKey,
    /// A key the menu does not offer, or an entry that was refused.
    Invalid,
    /// No key in time.
    NoInput,
}

/// A transfer that did not reach its queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FailedTransfer {
    /// The queue, or the URI of a direct transfer.
    pub target: String,
    /// Why (a SIP status, a sipfrag, a timeout).
    pub reason: String,
}

/// A side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// The caller (or, for a callback, the callee we dialled).
    Caller,
    /// The agent a bridged call reached.
    Agent,
    /// callflow itself: the flow's end, a timeout, a shutdown.
    Callflow,
}

/// How a call ended: written by name (snake_case) in the call records, and
/// matched on, never compared as text, by what reads them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The flow reached its end.
    Completed,
    /// The call was handed to the ACD (a confirmed transfer).
    Transferred,
    /// The caller booked a callback.
    CallbackRequested,
    /// The caller hung up (or went silent) before the flow's end.
    CallerHungUp,
    /// The call ended for a reason of ours: see the detail.
    Failed,
    /// A call we placed: the callee was busy (486, 600, 603).
    Busy,
    /// A call we placed: it rang out.
    NoAnswer,
    /// A call we placed failed otherwise (a refusal, no response).
    DialFailed,
}

impl CallOutcome {
    /// The name written in the records.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Completed => "completed",
            CallOutcome::Transferred => "transferred",
            CallOutcome::CallbackRequested => "callback_requested",
            CallOutcome::CallerHungUp => "caller_hung_up",
            CallOutcome::Failed => "failed",
            CallOutcome::Busy => "busy",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::DialFailed => "dial_failed",
        }
    }
}

impl std::fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The outcome's kind and detail for the record.
pub fn outcome_fields(outcome: &Outcome) -> (CallOutcome, String) {
    match outcome {
        Outcome::Completed { node } => (CallOutcome::Completed, node.clone()),
        Outcome::Transferred { target } => (CallOutcome::Transferred, target.clone()),
        Outcome::CallbackRequested { queue } => (CallOutcome::CallbackRequested, queue.clone()),
        Outcome::CallerHungUp { node } => (CallOutcome::CallerHungUp, node.clone()),
        Outcome::Failed { reason } => (CallOutcome::Failed, reason.clone()),
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
