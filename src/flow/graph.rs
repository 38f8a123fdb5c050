//! The checked, resolved form of a set of flows, which the interpreter runs.
//!
//! Names are resolved to indexes once at load, so a call step is an array
//! lookup, and prompts are interned so that a `Play` action is a reference
//! count bump rather than a list of strings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::condition::Condition;
use super::numbers::NumberList;
use super::schedule::Schedule;
use super::template::Template;
use crate::diagnostic::Position;

/// A prompt, by its index in [`FlowSet::prompt_names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PromptId(pub u32);

/// A sequence of prompts played one after the other, shared between calls.
pub type PromptSeq = Arc<[PromptId]>;

/// A node anywhere in the set: flow index and node index within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRef {
    /// Index into [`FlowSet::flows`].
    pub flow: u32,
    /// Index into [`Flow::nodes`].
    pub node: u32,
}

/// Every loaded flow, checked and resolved.
#[derive(Debug, Default)]
pub struct FlowSet {
    /// The flows, in load order.
    pub flows: Vec<Flow>,
    /// Prompt names by [`PromptId`].
    pub prompt_names: Vec<String>,
    /// Where each prompt's file is, by [`PromptId`].
    pub prompt_files: Vec<PathBuf>,
    pub(crate) by_name: HashMap<String, u32>,
}

impl NodeRef {
    /// Marks a reference that could not be resolved while compiling a
    /// broken flow; such a set is reported and never run.
    pub const UNRESOLVED: u32 = u32::MAX - 1;
}

impl FlowSet {
    /// The flow called `name`.
    pub fn flow_index(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The flow with this index.
    pub fn flow(&self, index: u32) -> &Flow {
        &self.flows[index as usize]
    }

    /// The node at `at`.
    pub fn node(&self, at: NodeRef) -> &Node {
        &self.flows[at.flow as usize].nodes[at.node as usize]
    }

    /// A prompt's name.
    pub fn prompt_name(&self, id: PromptId) -> &str {
        &self.prompt_names[id.0 as usize]
    }

    /// The start node of the flow called `name`.
    pub fn start_of(&self, name: &str) -> Option<NodeRef> {
        let flow = self.flow_index(name)?;
        Some(NodeRef {
            flow,
            node: self.flow(flow).start,
        })
    }

    /// `flow.node` for messages and records.
    pub fn qualified_name(&self, at: NodeRef) -> String {
        format!("{}.{}", self.flow(at.flow).name, self.node(at).name)
    }
}

/// One flow.
#[derive(Debug)]
pub struct Flow {
    /// Its name.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Its description, if any.
    pub description: Option<String>,
    /// Index of the start node.
    pub start: u32,
    /// The agent key and the node it leads to.
    pub agent: Option<(char, NodeRef)>,
    /// Variables every call starts with.
    pub vars: Vec<(String, Template)>,
    /// The nodes, in file order.
    pub nodes: Vec<Node>,
    /// Node indexes by name.
    pub node_index: HashMap<String, u32>,
    /// Queues, by index.
    pub queues: Vec<Queue>,
    /// Schedules, by index.
    pub schedules: Vec<(String, Schedule)>,
    /// Number lists, by index.
    pub lists: Vec<(String, NumberList)>,
}

/// An ACD queue.
#[derive(Debug, Clone)]
pub struct Queue {
    /// Its name in the flow.
    pub name: String,
    /// The REFER target.
    pub uri: String,
    /// Priority sent with transfers.
    pub priority: Option<i32>,
    /// Offer a callback when the wait is longer than this (what
    /// `long_wait` conditions copy at load).
    pub callback_offer_after: Option<Duration>,
    /// The queue's opening hours: a schedule of the flow, by index.
    pub hours: Option<u32>,
    /// How calls are handed over.
    pub handoff: super::model::Handoff,
    /// Send the context as User-to-User too.
    pub user_to_user: bool,
    /// Where a REFER carries the context.
    pub refer_context: super::model::ReferContext,
    /// How long a bridged call to the queue may ring.
    pub ring_timeout: Duration,
    /// A bridged call uses SRTP only.
    pub srtp: bool,
}

/// One node of a flow.
#[derive(Debug)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// Where it is defined (the key's position).
    pub position: Position,
    /// What it does.
    pub kind: NodeKind,
}

/// What a node does; successors are resolved [`NodeRef`]s.
#[derive(Debug)]
pub enum NodeKind {
    /// Play prompts, then `next`.
    Play {
        /// The prompts.
        prompts: PromptSeq,
        /// Whether a key stops them.
        barge_in: bool,
        /// The next node.
        next: NodeRef,
    },
    /// A menu.
    Menu(Menu),
    /// Digit collection.
    Collect(Collect),
    /// Ordered conditions.
    Switch {
        /// Condition and target, first match wins.
        cases: Vec<(Condition, NodeRef)>,
        /// Where to go when none holds.
        default: NodeRef,
    },
    /// Variable assignments.
    Set {
        /// Variable and value template, in order.
        assignments: Vec<(String, Template)>,
        /// The next node.
        next: NodeRef,
    },
    /// A jump to another flow.
    Goto {
        /// The target.
        target: NodeRef,
    },
    /// A transfer.
    Transfer(Transfer),
    /// A callback offer.
    Callback(Callback),
    /// The end of the call.
    Hangup {
        /// Goodbye prompts (possibly none).
        prompts: PromptSeq,
    },
}

impl NodeKind {
    /// The kind's name as written in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::Play { .. } => "play",
            NodeKind::Menu(_) => "menu",
            NodeKind::Collect(_) => "collect",
            NodeKind::Switch { .. } => "switch",
            NodeKind::Set { .. } => "set",
            NodeKind::Goto { .. } => "goto",
            NodeKind::Transfer(_) => "transfer",
            NodeKind::Callback(_) => "callback",
            NodeKind::Hangup { .. } => "hangup",
        }
    }

    /// Every successor with a label for diagrams (`next`, a key, ...).
    pub fn edges(&self) -> Vec<(String, NodeRef)> {
        let mut out = Vec::new();
        match self {
            NodeKind::Play { next, .. } | NodeKind::Set { next, .. } => {
                out.push((String::new(), *next))
            }
            NodeKind::Menu(m) => {
                for (key, target) in &m.options {
                    out.push((key.to_string(), *target));
                }
                out.push(("fail".into(), m.on_fail));
            }
            NodeKind::Collect(c) => {
                out.push((format!("{} entered", c.into), c.next));
                out.push(("fail".into(), c.on_fail));
            }
            NodeKind::Switch { cases, default } => {
                for (cond, target) in cases {
                    out.push((cond.to_string(), *target));
                }
                out.push(("default".into(), *default));
            }
            NodeKind::Goto { target } => out.push((String::new(), *target)),
            NodeKind::Transfer(t) => out.push(("fail".into(), t.on_fail)),
            NodeKind::Callback(c) => {
                out.push(("accept".into(), c.on_accept));
                out.push(("decline".into(), c.on_decline));
                if c.on_fail != c.on_decline {
                    out.push(("fail".into(), c.on_fail));
                }
            }
            NodeKind::Hangup { .. } => {}
        }
        out
    }

    /// Whether the node waits for the caller or the network before it moves
    /// on; a cycle of nodes that do not would spin without end.
    pub fn waits(&self) -> bool {
        matches!(
            self,
            NodeKind::Menu(_)
                | NodeKind::Collect(_)
                | NodeKind::Transfer(_)
                | NodeKind::Callback(_)
                | NodeKind::Hangup { .. }
        )
    }
}

/// A menu, resolved.
#[derive(Debug)]
pub struct Menu {
    /// The menu prompt.
    pub prompt: PromptSeq,
    /// The invalid-key prompt followed by the menu prompt.
    pub reprompt_invalid: PromptSeq,
    /// The no-input prompt followed by the menu prompt.
    pub reprompt_no_input: PromptSeq,
    /// Key to target.
    pub options: Vec<(char, NodeRef)>,
    /// Wait for a key after the prompt.
    pub timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
    /// Where to go out of tries.
    pub on_fail: NodeRef,
}

/// Digit collection, resolved.
#[derive(Debug)]
pub struct Collect {
    /// The prompt.
    pub prompt: PromptSeq,
    /// The invalid-entry prompt followed by the prompt.
    pub reprompt_invalid: PromptSeq,
    /// The no-input prompt followed by the prompt.
    pub reprompt_no_input: PromptSeq,
    /// The variable that receives the digits.
    pub into: String,
    /// Fewest digits.
    pub min: u32,
    /// Most digits.
    pub max: u32,
    /// The key that ends entry.
    pub terminator: Option<char>,
    /// Wait for the first digit after the prompt.
    pub first_digit_timeout: Duration,
    /// Wait between digits.
    pub inter_digit_timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
    /// A pattern the whole entry must match.
    pub pattern: Option<Regex>,
    /// After a good entry.
    pub next: NodeRef,
    /// Out of tries.
    pub on_fail: NodeRef,
}

/// Where a transfer goes.
#[derive(Debug)]
pub enum TransferTarget {
    /// A queue of the flow, by index.
    Queue(u32),
    /// A SIP URI; a template only where the user part takes caller digits.
    Uri {
        /// Text before the user part (`sip:`).
        scheme: String,
        /// The user part.
        user: Template,
        /// `@host...` and the rest, never templated.
        rest: String,
    },
}

/// A transfer, resolved.
#[derive(Debug)]
pub struct Transfer {
    /// Queue or URI.
    pub target: TransferTarget,
    /// Priority to send.
    pub priority: Option<i32>,
    /// Context name and value template.
    pub context: Vec<(String, Template)>,
    /// Played while the transfer is in progress.
    pub hold: PromptSeq,
    /// When the transfer fails.
    pub on_fail: NodeRef,
}

/// The prompts a callback offer uses.
#[derive(Debug)]
pub struct CallbackPrompts {
    /// "Press 1 for a callback, 2 to keep waiting."
    pub offer: PromptSeq,
    /// "We will call you back at".
    pub number_is: PromptId,
    /// "Press 1 to confirm, 2 to enter another number."
    pub confirm: PromptSeq,
    /// "Please enter the number..."
    pub enter_number: PromptSeq,
    /// "Your callback is booked."
    pub confirmed: PromptSeq,
    /// "We could not book your callback."
    pub failed: PromptSeq,
    /// "A callback is already booked for this number."
    pub already_booked: PromptSeq,
    /// "We cannot call that number; please enter another."
    pub refused: PromptSeq,
    /// `digit-0` .. `digit-9`, to read a number back.
    pub digits: [PromptId; 10],
}

/// The estimated-wait sentence before a callback offer (`say_wait`).
#[derive(Debug)]
pub struct WaitSentence {
    /// The variable that holds the wait in seconds, `wait_QUEUE`.
    pub var: String,
    /// Every piece [`crate::flow::speak::wait_sentence`] can name, resolved
    /// at load so that a call never meets a missing file.
    pub pieces: HashMap<&'static str, PromptId>,
}

/// A callback offer, resolved.
#[derive(Debug)]
pub struct Callback {
    /// The queue (index in the flow).
    pub queue: u32,
    /// Read back and confirm the number.
    pub confirm_number: bool,
    /// Say the estimated wait before the offer.
    pub say_wait: Option<WaitSentence>,
    /// Fewest digits of another number.
    pub min_digits: u32,
    /// Most digits of another number.
    pub max_digits: u32,
    /// Wait for a key.
    pub timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
    /// The prompts.
    pub prompts: CallbackPrompts,
    /// After the request is recorded.
    pub on_accept: NodeRef,
    /// When the caller declines.
    pub on_decline: NodeRef,
    /// When the request could not be recorded.
    pub on_fail: NodeRef,
}
