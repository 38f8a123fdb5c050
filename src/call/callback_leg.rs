//! What a call we placed to keep a callback promise carries: the request it
//! serves, so that its transfer reaches the agent with the caller's original
//! context, marked as a callback, at a raised priority.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::callback::{Callback, CallbackId};
use crate::flow::interpreter::TransferRequest;

use super::record::timestamp;

/// The callback request behind an outbound call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackLeg {
    /// The request's id.
    pub id: CallbackId,
    /// The queue the callee is handed to.
    pub queue: String,
    /// The number dialled.
    pub number: String,
    /// The request's priority.
    pub priority: i32,
    /// What the caller entered and the path taken, when they asked.
    pub context: Vec<(String, String)>,
    /// When the callback was first requested.
    pub requested_at: DateTime<Utc>,
    /// Which attempt this call is (1-based).
    pub attempt: u32,
    /// Added to the transfer's priority.
    pub priority_boost: i32,
}

impl CallbackLeg {
    /// The leg for a claimed request.
    pub fn of(callback: &Callback, priority_boost: i32) -> Self {
        Self {
            id: callback.id,
            queue: callback.queue.clone(),
            number: callback.number.clone(),
            priority: callback.priority,
            context: callback.context.clone(),
            requested_at: callback.requested_at,
            attempt: callback.attempts,
            priority_boost,
        }
    }

    /// Variables the callback flow starts with: the original context, and
    /// `callback_*` facts for prompts and conditions.
    pub fn vars(&self) -> Vec<(String, String)> {
        let mut vars = self.context.clone();
        vars.push(("callback_id".into(), self.id.to_string()));
        vars.push(("callback_number".into(), self.number.clone()));
        vars.push(("callback_queue".into(), self.queue.clone()));
        vars.push(("callback_attempt".into(), self.attempt.to_string()));
        vars.push(("callback_requested".into(), timestamp(self.requested_at)));
        vars
    }

    /// Makes the callback flow's transfer carry the original context (the
    /// flow's own entries win where both name a key), `callback=true`, the
    /// request's time and id, and a priority above both the flow's and the
    /// request's.
    pub fn extend(&self, t: &mut TransferRequest) {
        let mut context = self.context.clone();
        for (k, v) in t.context.drain(..) {
            match context.iter_mut().find(|(key, _)| *key == k) {
                Some(entry) => entry.1 = v,
                None => context.push((k, v)),
            }
        }
        context.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "callback" | "callback_requested" | "callback_id"
            )
        });
        context.push(("callback".into(), "true".into()));
        context.push(("callback_requested".into(), timestamp(self.requested_at)));
        context.push(("callback_id".into(), self.id.to_string()));
        t.context = context;
        let base = t.priority.unwrap_or(0).max(self.priority);
        t.priority = Some(base.saturating_add(self.priority_boost));
    }

    /// The call record's note of which request and attempt this was.
    pub fn record(&self, result: String) -> CallbackAttemptRecord {
        CallbackAttemptRecord {
            id: self.id,
            queue: self.queue.clone(),
            attempt: self.attempt,
            requested_at: timestamp(self.requested_at),
            result,
        }
    }
}

/// The callback part of an outbound call's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallbackAttemptRecord {
    /// The request's id (as `callflow callbacks list` shows it).
    pub id: CallbackId,
    /// Its queue.
    pub queue: String,
    /// Which attempt this call was.
    pub attempt: u32,
    /// When the callback was requested.
    pub requested_at: String,
    /// How the attempt went: `completed`, `busy`, `no-answer`, ...
    pub result: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg() -> CallbackLeg {
        CallbackLeg {
            id: 7,
            queue: "general".into(),
            number: "37120000000".into(),
            priority: 4,
            context: vec![
                ("intent".into(), "billing".into()),
                ("vip".into(), "no".into()),
            ],
            requested_at: DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_default(),
            attempt: 2,
            priority_boost: 1,
        }
    }

    #[test]
    fn the_transfer_carries_the_original_context_marked_as_a_callback() {
        let mut t = TransferRequest {
            uri: "sip:general@acd".into(),
            queue: Some("general".into()),
            priority: Some(5),
            context: vec![
                ("vip".into(), "yes".into()),
                ("callback".into(), "no".into()),
            ],
            ..TransferRequest::default()
        };
        leg().extend(&mut t);
        let get = |k: &str| {
            t.context
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("intent"), Some("billing"));
        assert_eq!(get("vip"), Some("yes"), "the callback flow's value wins");
        assert_eq!(
            get("callback"),
            Some("true"),
            "never overridden by the flow"
        );
        assert_eq!(get("callback_requested"), Some("2026-11-25T10:00:00.000Z"));
        assert_eq!(get("callback_id"), Some("7"));
        assert_eq!(t.priority, Some(6), "above the queue's 5");
    }

    #[test]
    fn the_priority_is_raised_above_the_requests_own() {
        let mut t = TransferRequest {
            uri: "sip:general@acd".into(),
            queue: None,
            priority: None,
            context: Vec::new(),
            ..TransferRequest::default()
        };
        leg().extend(&mut t);
        assert_eq!(t.priority, Some(5));
    }
}
