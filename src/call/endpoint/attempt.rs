//! What a finished call we placed means for its callback request.

use crate::call::record::{CallOutcome, CallRecord};
use crate::callback::AttemptOutcome;

/// How far a call we placed got, beyond what its record says.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// The ACD accepted a transfer (202).
    pub(super) handed_over: bool,
    /// ... and then reported it failed (a non-2xx NOTIFY, a REFER error).
    pub(super) refused: bool,
    /// The server is stopping: the call was cut short.
    pub(super) stopping: bool,
}

impl Progress {
    /// What a finished call we placed means for its callback request: a
    /// confirmed transfer keeps the promise, and so does one the ACD took
    /// whose end we did not see (the callee hung up first, or the NOTIFY
    /// was late): dialling them again could ring someone talking to the
    /// agent. An answered call that never got there (voicemail, a hang-up
    /// before the key) counts as missed.
    pub(super) fn outcome(&self, record: &CallRecord) -> AttemptOutcome {
        match record.outcome {
            CallOutcome::Transferred => AttemptOutcome::Completed,
            _ if self.handed_over && !self.refused => AttemptOutcome::Connected,
            CallOutcome::Busy => AttemptOutcome::Busy,
            CallOutcome::NoAnswer => AttemptOutcome::NoAnswer,
            _ if record.answer.is_some() => AttemptOutcome::Answered,
            _ => AttemptOutcome::Failed(record.detail.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: CallOutcome, answered: bool) -> CallRecord {
        CallRecord {
            call_id: "c".into(),
            from: String::new(),
            to: String::new(),
            caller: "37120000000".into(),
            called: "general".into(),
            flow: "callback".into(),
            start: String::new(),
            answer: answered.then(String::new),
            end: String::new(),
            nodes: Vec::new(),
            digits: String::new(),
            outcome,
            detail: "why".into(),
            callback: None,
            callback_id: None,
            handoff: None,
            refer_failed: None,
            agent_answer: None,
            inputs: Vec::new(),
            failed_transfers: Vec::new(),
            hung_up_by: None,
            node: None,
        }
    }

    #[test]
    fn an_attempt_reads_its_outcome_from_the_record_and_the_transfer() {
        let fresh = Progress::default();
        assert_eq!(
            fresh.outcome(&record(CallOutcome::Transferred, true)),
            AttemptOutcome::Completed
        );
        assert_eq!(
            fresh.outcome(&record(CallOutcome::Busy, false)),
            AttemptOutcome::Busy
        );
        assert_eq!(
            fresh.outcome(&record(CallOutcome::NoAnswer, false)),
            AttemptOutcome::NoAnswer
        );
        assert_eq!(
            fresh.outcome(&record(CallOutcome::CallerHungUp, true)),
            AttemptOutcome::Answered,
            "voicemail or a hang-up before the key: missed"
        );
        assert_eq!(
            fresh.outcome(&record(CallOutcome::DialFailed, false)),
            AttemptOutcome::Failed("why".into())
        );
        let taken = Progress {
            handed_over: true,
            ..Progress::default()
        };
        assert_eq!(
            taken.outcome(&record(CallOutcome::CallerHungUp, true)),
            AttemptOutcome::Connected,
            "the ACD took the callee; its NOTIFY never came"
        );
        let refused = Progress {
            handed_over: true,
            refused: true,
            stopping: false,
        };
        assert_eq!(
            refused.outcome(&record(CallOutcome::Completed, true)),
            AttemptOutcome::Answered
        );
    }
}
