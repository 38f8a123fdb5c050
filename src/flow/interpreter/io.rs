//! What goes into the interpreter (events) and what comes out (actions).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::flow::dialling::Dialling;
use crate::flow::graph::{NodeRef, PromptSeq};

/// Identifies one playback, so that a late "finished" from a playback that
/// was already replaced is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlaybackId(pub u64);

/// Identifies one timer, so that a timer that fires after it was cancelled
/// is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(pub u64);

/// What the interpreter knows about a call when it starts.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The caller's number (ANI), as the trunk sent it.
    pub caller: String,
    /// The dialled number (DNIS).
    pub called: String,
    /// The SIP Call-ID, for records.
    pub call_id: String,
    /// The monotonic time the call started, the base of all timers.
    pub started: Instant,
    /// The wall-clock time at `started`, for opening hours.
    pub started_wall: DateTime<Utc>,
    /// Variables the server provides at the start (e.g. `wait_support`,
    /// the queue's estimated wait in seconds); the flow's own `vars` may
    /// use them.
    pub vars: Vec<(String, String)>,
    /// Which numbers the call may have dialled (callbacks, caller-filled
    /// transfer targets).
    pub dialling: Arc<Dialling>,
}

/// Something that happened to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The call is answered: run the flow from its entry node.
    Start,
    /// A playback ended by itself (not by [`Action::StopPlayback`]).
    PromptFinished(PlaybackId),
    /// The caller pressed a key (RFC 4733 event or SIP INFO).
    Digit(char),
    /// A timer set by [`Action::SetTimer`] is due.
    Timer(TimerId),
    /// The ACD accepted the transfer (a 2xx sipfrag): the call has left us.
    TransferSucceeded,
    /// The transfer was refused or timed out.
    TransferFailed(String),
    /// The callback request was stored durably (`Ok`), or was not.
    CallbackRecorded(Result<Booked, CallbackError>),
    /// The caller hung up.
    HungUp,
}

/// Something the call must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Stop whatever plays and play these prompts in order. With `barge_in`
    /// a key press stops them.
    Play {
        /// Which playback this is, for [`Event::PromptFinished`].
        id: PlaybackId,
        /// The prompts.
        prompts: PromptSeq,
        /// Whether a key stops them.
        barge_in: bool,
    },
    /// Stop the current playback (a key barged in, or the step moved on).
    StopPlayback,
    /// Deliver [`Event::Timer`] with `id` at `at`.
    SetTimer {
        /// The timer.
        id: TimerId,
        /// When it is due.
        at: Instant,
    },
    /// Forget a timer.
    CancelTimer(TimerId),
    /// Hand the call over: SIP REFER, or a bridged call, as the queue says.
    Transfer(TransferRequest),
    /// Store a callback request durably, then answer with
    /// [`Event::CallbackRecorded`].
    RequestCallback(CallbackRequest),
    /// End the call from our side (SIP BYE).
    Hangup,
    /// A step, for the call's detail record and transcripts.
    Step(Step),
    /// The flow is over; no further actions follow.
    Finished(Outcome),
}

/// How a stored callback request was booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booked {
    /// A new request.
    New,
    /// The number already had one for the queue; it was updated, and the
    /// caller is told a callback is already booked.
    Merged,
}

/// Why a callback request was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackError {
    /// The number may not be dialled (the server's dialling policy): the
    /// caller is told so and may enter another.
    Refused(String),
    /// The store failed: the flow's failure branch runs.
    Failed(String),
}

/// A transfer to hand to the SIP layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransferRequest {
    /// The REFER target.
    pub uri: String,
    /// The queue name, when the target is a queue.
    pub queue: Option<String>,
    /// The priority to send.
    pub priority: Option<i32>,
    /// Context for the agent, in the flow's order.
    pub context: Vec<(String, String)>,
    /// REFER, bridge, or REFER then bridge (a literal URI: REFER).
    pub handoff: crate::flow::model::Handoff,
    /// Send the context as User-to-User too.
    pub user_to_user: bool,
    /// Where a REFER carries the context.
    pub refer_context: crate::flow::model::ReferContext,
    /// For a bridged call: how long it may ring.
    pub ring_timeout: std::time::Duration,
    /// For a bridged call: SRTP only.
    pub srtp: bool,
}

/// A callback request to store.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRequest {
    /// The queue's name.
    pub queue: String,
    /// The queue's URI.
    pub queue_uri: String,
    /// The number to call back (digits, international form when known).
    pub number: String,
    /// The queue's priority, to order callbacks.
    pub priority: Option<i32>,
    /// Whether the caller typed the number (then the dialling policy
    /// applies) rather than confirming the number they called from.
    pub entered: bool,
    /// Booked while the queue is closed: not dialled before its next
    /// opening.
    pub not_before: Option<DateTime<Utc>>,
    /// Variables and path at the time of the request, for the agent.
    pub context: Vec<(String, String)>,
}

/// One step of the call.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Time since the call started.
    pub at: Duration,
    /// The node.
    pub node: NodeRef,
    /// What happened there.
    pub what: StepKind,
}

/// What happened at a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// The node was entered.
    Entered,
    /// A key was taken as input here.
    Key(char),
    /// The agent key was pressed.
    AgentKey,
    /// A key that is not an option (tries so far).
    Invalid(char, u32),
    /// No key in time (tries so far).
    NoInput(u32),
    /// Out of tries.
    OutOfTries,
    /// Digits were collected into a variable.
    Collected {
        /// The variable.
        var: String,
        /// The digits.
        value: String,
    },
    /// An entry was too short, too long or did not match (tries so far).
    BadEntry(String, u32),
    /// A switch case held (its text), or none did.
    Decided(Option<String>),
    /// A variable was set.
    Set {
        /// The variable.
        var: String,
        /// Its new value.
        value: String,
    },
    /// A transfer was refused before it started (e.g. a non-digit user part).
    TransferRefused(String),
    /// A transfer failed.
    TransferFailed(String),
    /// A callback number was chosen and the request sent to the store.
    CallbackRequested(String),
    /// The callback request could not be stored.
    CallbackFailed(String),
    /// The number the caller entered may not be dialled.
    CallbackRefused(String),
    /// The caller declined the callback.
    CallbackDeclined,
    /// The step limit per event was hit (a flow that spins).
    StepLimit,
}

/// How the flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The flow hung up at a node (e.g. after goodbye).
    Completed {
        /// The hangup node, `flow.node`.
        node: String,
    },
    /// The call was handed to the ACD.
    Transferred {
        /// The queue name, or the URI for a direct transfer.
        target: String,
    },
    /// A callback was booked (and the call then ended either way).
    CallbackRequested {
        /// The queue.
        queue: String,
    },
    /// The caller hung up while the flow was at a node.
    CallerHungUp {
        /// `flow.node`.
        node: String,
    },
    /// The flow could not go on.
    Failed {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Completed { node } => write!(f, "finished in the IVR at {node}"),
            Outcome::Transferred { target } => write!(f, "transferred to {target}"),
            Outcome::CallbackRequested { queue } => write!(f, "callback requested for {queue}"),
            Outcome::CallerHungUp { node } => write!(f, "caller hung up at {node}"),
            Outcome::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepKind::Entered => f.write_str("entered"),
            StepKind::Key(k) => write!(f, "key {k}"),
            StepKind::AgentKey => f.write_str("agent key"),
            StepKind::Invalid(k, n) => write!(f, "key {k} is not an option (try {n})"),
            StepKind::NoInput(n) => write!(f, "no input (try {n})"),
            StepKind::OutOfTries => f.write_str("out of tries"),
            StepKind::Collected { var, value } => write!(f, "{var} = {value}"),
            StepKind::BadEntry(v, n) => write!(f, "entry `{v}` not accepted (try {n})"),
            StepKind::Decided(Some(c)) => write!(f, "{c} holds"),
            StepKind::Decided(None) => f.write_str("no case holds: default"),
            StepKind::Set { var, value } => write!(f, "{var} = {value}"),
            StepKind::TransferRefused(r) => write!(f, "transfer refused: {r}"),
            StepKind::TransferFailed(r) => write!(f, "transfer failed: {r}"),
            StepKind::CallbackRequested(n) => write!(f, "callback to {n} requested"),
            StepKind::CallbackFailed(r) => write!(f, "callback not recorded: {r}"),
            StepKind::CallbackRefused(r) => write!(f, "callback number refused: {r}"),
            StepKind::CallbackDeclined => f.write_str("callback declined"),
            StepKind::StepLimit => f.write_str("step limit reached"),
        }
    }
}
