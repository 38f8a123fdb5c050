//! The interpreter: one call's walk through the flow graph, as a pure state
//! machine.
//!
//! It is fed [`Event`]s with the current time and appends [`Action`]s to a
//! caller-supplied buffer; it never reads a clock, sleeps or does IO, so the
//! simulator, the tests and the SIP server drive it the same way:
//!
//! ```text
//! interp.handle(now, Event::Start, &mut actions);
//! // play prompts, set timers ... then feed what happens back in:
//! interp.handle(now, Event::Digit('1'), &mut actions);
//! ```
//!
//! Every playback and timer carries an id; a late event for a playback or
//! timer that was already replaced is ignored, so the IO edge may race.

mod io;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

pub use io::*;

use super::condition::Env;
use super::graph::{FlowSet, NodeKind, NodeRef, PromptId, PromptSeq, TransferTarget};
use super::numbers::normalise;
use super::speak;

/// At most this many nodes are run for one event. Load checks refuse loops
/// that never wait, so this only stops a flow set that skipped the checks.
pub const MAX_STEPS_PER_EVENT: usize = 256;

/// Keys typed ahead and not yet used; more than this is noise.
const MAX_TYPE_AHEAD: usize = 32;

/// `path` is sent to agents in a SIP header; a caller who loops through
/// menus for an hour must not make it grow without bound. The oldest steps
/// are dropped first.
const MAX_PATH_LEN: usize = 400;

/// Inter-digit timeout when a caller types a callback number.
const CALLBACK_INTER_DIGIT: Duration = Duration::from_secs(3);

/// Where a choice in a menu-like step leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Node(NodeRef),
    CallbackAccept,
    CallbackDecline,
    CallbackConfirm,
    CallbackOther,
}

/// Which menu-like step is waiting for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MenuStage {
    Menu,
    /// The offer, with the wait sentence first when there is one.
    CallbackOffer(PromptSeq),
    CallbackConfirm(PromptSeq),
}

/// Which digit entry is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryStage {
    Collect,
    CallbackNumber,
}

#[derive(Debug)]
enum Phase {
    Idle,
    Playing {
        barge_in: bool,
        next: NodeRef,
    },
    Menu {
        stage: MenuStage,
        tries: u32,
    },
    Entry {
        stage: EntryStage,
        tries: u32,
        digits: String,
    },
    Transferring {
        target: String,
    },
    Recording {
        queue: String,
        /// Tries at the number entry so far (a refused number counts).
        tries: u32,
    },
    /// Playing the callback's outcome prompt; then `next`.
    CallbackDone {
        next: NodeRef,
    },
    HangingUp,
    Done,
}

/// What a handler decided.
enum Next {
    Stay,
    Go(NodeRef),
}

/// A menu-like step, viewed uniformly.
struct MenuSpec {
    prompt: PromptSeq,
    reprompt_invalid: PromptSeq,
    reprompt_no_input: PromptSeq,
    timeout: Duration,
    retries: u32,
    fail: Choice,
}

/// A digit entry, viewed uniformly.
struct EntrySpec {
    prompt: PromptSeq,
    reprompt_invalid: PromptSeq,
    reprompt_no_input: PromptSeq,
    min: u32,
    max: u32,
    terminator: Option<char>,
    first_timeout: Duration,
    inter_timeout: Duration,
    retries: u32,
}

/// One call's interpreter.
pub struct Interpreter {
    set: Arc<FlowSet>,
    call: CallInfo,
    at: NodeRef,
    phase: Phase,
    vars: HashMap<String, String>,
    path: String,
    visited: Vec<NodeRef>,
    type_ahead: VecDeque<char>,
    playback: Option<PlaybackId>,
    timer: Option<TimerId>,
    next_id: u64,
    now: Instant,
    callback_booked: Option<String>,
    outcome: Option<Outcome>,
}

impl Interpreter {
    /// A call that will start at `entry` once [`Event::Start`] arrives.
    pub fn new(set: Arc<FlowSet>, entry: NodeRef, call: CallInfo) -> Self {
        let now = call.started;
        Self {
            set,
            call,
            at: entry,
            phase: Phase::Idle,
            vars: HashMap::new(),
            path: String::new(),
            visited: Vec::new(),
            type_ahead: VecDeque::new(),
            playback: None,
            timer: None,
            next_id: 0,
            now,
            callback_booked: None,
            outcome: None,
        }
    }

    /// How the call ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// The nodes visited, in order.
    pub fn visited(&self) -> &[NodeRef] {
        &self.visited
    }

    /// The queue (or URI) of the transfer under way, if one is.
    pub fn transferring_to(&self) -> Option<&str> {
        match &self.phase {
            Phase::Transferring { target } => Some(target),
            _ => None,
        }
    }

    /// The node the call is at.
    pub fn current(&self) -> NodeRef {
        self.at
    }

    /// A variable's value, built-ins included.
    pub fn var(&self, name: &str) -> Option<&str> {
        match name {
            "caller" => Some(&self.call.caller),
            "called" => Some(&self.call.called),
            "call_id" => Some(&self.call.call_id),
            "flow" => Some(&self.set.flow(self.at.flow).name),
            "node" => Some(&self.set.node(self.at).name),
            "path" => Some(&self.path),
            _ => self.vars.get(name).map(String::as_str),
        }
    }

    /// The flow set this call runs on (kept alive while the call lasts, so a
    /// reload does not disturb calls in progress).
    pub fn flow_set(&self) -> &Arc<FlowSet> {
        &self.set
    }

    /// Feeds one event at time `now`; actions are appended to `out`.
    pub fn handle(&mut self, now: Instant, event: Event, out: &mut Vec<Action>) {
        self.now = now;
        if matches!(self.phase, Phase::Done) {
            return;
        }
        let next = match event {
            Event::Start => {
                if !matches!(self.phase, Phase::Idle) || !self.visited.is_empty() {
                    return;
                }
                self.init_vars();
                Next::Go(self.at)
            }
            Event::HungUp => {
                self.cancel_timer(out);
                let outcome = match self.callback_booked.take() {
                    Some(queue) => Outcome::CallbackRequested { queue },
                    None => Outcome::CallerHungUp {
                        node: self.set.qualified_name(self.at),
                    },
                };
                self.finish(outcome, out);
                return;
            }
            Event::PromptFinished(id) => {
                if self.playback != Some(id) {
                    return;
                }
                self.playback = None;
                self.on_prompt_finished(out)
            }
            Event::Timer(id) => {
                if self.timer != Some(id) {
                    return;
                }
                self.timer = None;
                self.on_timer(out)
            }
            Event::Digit(d) => self.on_digit(d, out),
            Event::TransferSucceeded => {
                if let Phase::Transferring { target } = &self.phase {
                    let target = target.clone();
                    self.stop_playback(out);
                    self.finish(Outcome::Transferred { target }, out);
                }
                return;
            }
            Event::TransferFailed(reason) => match self.set.node(self.at).kind {
                NodeKind::Transfer(ref t) if matches!(self.phase, Phase::Transferring { .. }) => {
                    let on_fail = t.on_fail;
                    self.stop_playback(out);
                    self.step(StepKind::TransferFailed(reason), out);
                    Next::Go(on_fail)
                }
                _ => Next::Stay,
            },
            Event::CallbackRecorded(result) => self.on_callback_recorded(result, out),
        };
        if let Next::Go(target) = next {
            self.run(target, out);
        }
    }

    fn init_vars(&mut self) {
        let provided = std::mem::take(&mut self.call.vars);
        self.vars.extend(provided);
        let flow = self.set.flow(self.at.flow);
        let rendered: Vec<(String, String)> = flow
            .vars
            .iter()
            .map(|(name, t)| (name.clone(), t.render(|v| self.var(v))))
            .collect();
        self.vars.extend(rendered);
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.call.started)
    }

    /// The wall-clock time now, derived from the monotonic clock so that a
    /// wall-clock jump mid-call cannot make a flow misbehave.
    fn wall_now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.elapsed()).unwrap_or_default();
        self.call.started_wall + elapsed
    }

    fn step(&self, what: StepKind, out: &mut Vec<Action>) {
        out.push(Action::Step(Step {
            at: self.elapsed(),
            node: self.at,
            what,
        }));
    }

    fn play(&mut self, prompts: PromptSeq, barge_in: bool, out: &mut Vec<Action>) {
        let id = PlaybackId(self.id());
        self.playback = Some(id);
        out.push(Action::Play {
            id,
            prompts,
            barge_in,
        });
    }

    fn stop_playback(&mut self, out: &mut Vec<Action>) {
        if self.playback.take().is_some() {
            out.push(Action::StopPlayback);
        }
    }

    fn set_timer(&mut self, after: Duration, out: &mut Vec<Action>) {
        self.cancel_timer(out);
        let id = TimerId(self.id());
        self.timer = Some(id);
        out.push(Action::SetTimer {
            id,
            at: self.now + after,
        });
    }

    fn cancel_timer(&mut self, out: &mut Vec<Action>) {
        if let Some(id) = self.timer.take() {
            out.push(Action::CancelTimer(id));
        }
    }

    fn finish(&mut self, outcome: Outcome, out: &mut Vec<Action>) {
        self.cancel_timer(out);
        self.playback = None;
        self.phase = Phase::Done;
        self.outcome = Some(outcome.clone());
        out.push(Action::Finished(outcome));
    }

    fn agent(&self) -> Option<(char, NodeRef)> {
        self.set.flow(self.at.flow).agent
    }

    /// Runs nodes from `target` until one waits for something.
    fn run(&mut self, mut target: NodeRef, out: &mut Vec<Action>) {
        let set = Arc::clone(&self.set);
        for _ in 0..MAX_STEPS_PER_EVENT {
            self.cancel_timer(out);
            self.at = target;
            self.visited.push(target);
            let node = set.node(target);
            if !self.path.is_empty() {
                self.path.push('>');
            }
            self.path.push_str(&node.name);
            if self.path.len() > MAX_PATH_LEN {
                let cut = self.path.len() - MAX_PATH_LEN;
                let from = self.path[cut..].find('>').map_or(cut, |i| cut + i + 1);
                self.path.replace_range(..from, "");
                self.path.insert_str(0, "...>");
            }
            self.step(StepKind::Entered, out);
            let next = match &node.kind {
                NodeKind::Play {
                    prompts,
                    barge_in,
                    next,
                } => {
                    // Keys typed ahead skip interruptible prompts, as callers who
                    // know the menu expect.
                    if prompts.is_empty() || (*barge_in && !self.type_ahead.is_empty()) {
                        self.stop_playback(out);
                        Next::Go(*next)
                    } else {
                        self.phase = Phase::Playing {
                            barge_in: *barge_in,
                            next: *next,
                        };
                        self.play(Arc::clone(prompts), *barge_in, out);
                        Next::Stay
                    }
                }
                NodeKind::Menu(_) => self.enter_menu(MenuStage::Menu, out),
                NodeKind::Collect(_) => self.enter_entry(EntryStage::Collect, out),
                NodeKind::Switch { cases, default } => {
                    let lookup = |v: &str| self.var(v);
                    let env = Env {
                        flow: set.flow(target.flow),
                        now: self.wall_now(),
                        lookup: &lookup,
                    };
                    let hit = cases.iter().find(|(c, _)| c.eval(&env));
                    let (what, to) = match hit {
                        Some((c, to)) => (Some(c.to_string()), *to),
                        None => (None, *default),
                    };
                    self.step(StepKind::Decided(what), out);
                    Next::Go(to)
                }
                NodeKind::Set { assignments, next } => {
                    for (var, t) in assignments {
                        let value = t.render(|v| self.var(v));
                        self.step(
                            StepKind::Set {
                                var: var.clone(),
                                value: value.clone(),
                            },
                            out,
                        );
                        self.vars.insert(var.clone(), value);
                    }
                    Next::Go(*next)
                }
                NodeKind::Goto { target } => Next::Go(*target),
                NodeKind::Transfer(_) => self.enter_transfer(out),
                NodeKind::Callback(_) => {
                    let offer = self.offer_with_wait();
                    self.enter_menu(MenuStage::CallbackOffer(offer), out)
                }
                NodeKind::Hangup { prompts } => {
                    if prompts.is_empty() {
                        self.hang_up(out);
                    } else {
                        self.phase = Phase::HangingUp;
                        self.play(Arc::clone(prompts), false, out);
                    }
                    Next::Stay
                }
            };
            match next {
                Next::Stay => return,
                Next::Go(t) => {
                    self.stop_playback(out);
                    target = t;
                }
            }
        }
        self.step(StepKind::StepLimit, out);
        out.push(Action::Hangup);
        self.finish(
            Outcome::Failed {
                reason: format!(
                    "more than {MAX_STEPS_PER_EVENT} steps without waiting at {}",
                    self.set.qualified_name(self.at)
                ),
            },
            out,
        );
    }

    fn hang_up(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Hangup);
        let outcome = match self.callback_booked.take() {
            Some(queue) => Outcome::CallbackRequested { queue },
            None => Outcome::Completed {
                node: self.set.qualified_name(self.at),
            },
        };
        self.finish(outcome, out);
    }

    fn on_prompt_finished(&mut self, out: &mut Vec<Action>) -> Next {
        match &self.phase {
            Phase::Playing { next, .. } => Next::Go(*next),
            Phase::Menu { stage, .. } => {
                let timeout = self.menu_spec(stage).timeout;
                self.set_timer(timeout, out);
                Next::Stay
            }
            Phase::Entry { stage, digits, .. } => {
                if digits.is_empty() {
                    let timeout = self.entry_spec(*stage).first_timeout;
                    self.set_timer(timeout, out);
                }
                Next::Stay
            }
            Phase::Transferring { .. } => {
                // Hold prompts repeat until the ACD answers: never dead air.
                if let NodeKind::Transfer(t) = &self.set.node(self.at).kind {
                    let hold = Arc::clone(&t.hold);
                    self.play(hold, false, out);
                }
                Next::Stay
            }
            Phase::CallbackDone { next } => Next::Go(*next),
            Phase::HangingUp => {
                self.hang_up(out);
                Next::Stay
            }
            Phase::Idle | Phase::Recording { .. } | Phase::Done => Next::Stay,
        }
    }

    fn on_timer(&mut self, out: &mut Vec<Action>) -> Next {
        match &mut self.phase {
            Phase::Menu { .. } => self.menu_retry(true, None, out),
            Phase::Entry { digits, .. } => {
                if digits.is_empty() {
                    self.entry_retry(true, String::new(), out)
                } else {
                    self.entry_done(out)
                }
            }
            _ => Next::Stay,
        }
    }

    fn on_digit(&mut self, d: char, out: &mut Vec<Action>) -> Next {
        match &self.phase {
            Phase::Playing { barge_in, .. } => {
                if *barge_in {
                    // The key stops the prompt and is kept for the next menu.
                    self.push_type_ahead(d);
                    self.on_prompt_finished_by_barge(out)
                } else {
                    Next::Stay
                }
            }
            Phase::Menu { .. } => self.menu_digit(d, out),
            Phase::Entry { .. } => self.entry_digit(d, out),
            // A key that arrives before the flow starts (its RTP overtook
            // the ACK that starts it, or the ACK was lost) is kept for the
            // first menu, like a key pressed during a prompt.
            Phase::Idle if self.visited.is_empty() => {
                self.push_type_ahead(d);
                Next::Stay
            }
            _ => Next::Stay,
        }
    }

    fn push_type_ahead(&mut self, d: char) {
        if self.type_ahead.len() < MAX_TYPE_AHEAD {
            self.type_ahead.push_back(d);
        }
    }

    fn on_prompt_finished_by_barge(&mut self, out: &mut Vec<Action>) -> Next {
        self.stop_playback(out);
        match self.phase {
            Phase::Playing { next, .. } => Next::Go(next),
            _ => Next::Stay,
        }
    }

    // ---- menus (menu nodes and the callback's questions) ----

    fn menu_spec(&self, stage: &MenuStage) -> MenuSpec {
        match (&self.set.node(self.at).kind, stage) {
            (NodeKind::Menu(m), _) => MenuSpec {
                prompt: Arc::clone(&m.prompt),
                reprompt_invalid: Arc::clone(&m.reprompt_invalid),
                reprompt_no_input: Arc::clone(&m.reprompt_no_input),
                timeout: m.timeout,
                retries: m.retries,
                fail: Choice::Node(m.on_fail),
            },
            (NodeKind::Callback(c), MenuStage::CallbackConfirm(readback)) => MenuSpec {
                prompt: Arc::clone(readback),
                reprompt_invalid: Arc::clone(readback),
                reprompt_no_input: Arc::clone(readback),
                timeout: c.timeout,
                retries: c.retries,
                fail: Choice::CallbackDecline,
            },
            // The wait is news once; a repeated question is the offer alone.
            (NodeKind::Callback(c), MenuStage::CallbackOffer(first)) => MenuSpec {
                prompt: Arc::clone(first),
                reprompt_invalid: Arc::clone(&c.prompts.offer),
                reprompt_no_input: Arc::clone(&c.prompts.offer),
                timeout: c.timeout,
                retries: c.retries,
                fail: Choice::CallbackDecline,
            },
            (NodeKind::Callback(c), MenuStage::Menu) => MenuSpec {
                prompt: Arc::clone(&c.prompts.offer),
                reprompt_invalid: Arc::clone(&c.prompts.offer),
                reprompt_no_input: Arc::clone(&c.prompts.offer),
                timeout: c.timeout,
                retries: c.retries,
                fail: Choice::CallbackDecline,
            },
            _ => MenuSpec {
                prompt: Arc::from(Vec::new()),
                reprompt_invalid: Arc::from(Vec::new()),
                reprompt_no_input: Arc::from(Vec::new()),
                timeout: Duration::from_secs(5),
                retries: 0,
                fail: Choice::CallbackDecline,
            },
        }
    }

    fn menu_option(&self, stage: &MenuStage, key: char) -> Option<Choice> {
        match (&self.set.node(self.at).kind, stage) {
            (NodeKind::Menu(m), _) => m
                .options
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, t)| Choice::Node(*t)),
            (NodeKind::Callback(_), MenuStage::CallbackOffer(_)) => match key {
                '1' => Some(Choice::CallbackAccept),
                '2' => Some(Choice::CallbackDecline),
                _ => None,
            },
            (NodeKind::Callback(_), MenuStage::CallbackConfirm(_)) => match key {
                '1' => Some(Choice::CallbackConfirm),
                '2' => Some(Choice::CallbackOther),
                _ => None,
            },
            _ => None,
        }
    }

    fn enter_menu(&mut self, stage: MenuStage, out: &mut Vec<Action>) -> Next {
        let prompt = self.menu_spec(&stage).prompt;
        self.phase = Phase::Menu { stage, tries: 0 };
        if let Some(d) = self.type_ahead.pop_front() {
            return self.menu_digit(d, out);
        }
        self.play(prompt, true, out);
        Next::Stay
    }

    fn menu_digit(&mut self, d: char, out: &mut Vec<Action>) -> Next {
        let Phase::Menu { stage, .. } = &self.phase else {
            return Next::Stay;
        };
        let stage = stage.clone();
        self.stop_playback(out);
        self.cancel_timer(out);
        if let Some(choice) = self.menu_option(&stage, d) {
            self.step(StepKind::Key(d), out);
            return self.choose(choice, out);
        }
        if let Some((key, agent)) = self.agent() {
            if key == d {
                self.step(StepKind::AgentKey, out);
                return Next::Go(agent);
            }
        }
        self.menu_retry(false, Some(d), out)
    }

    fn menu_retry(&mut self, no_input: bool, key: Option<char>, out: &mut Vec<Action>) -> Next {
        let Phase::Menu { stage, tries } = &mut self.phase else {
            return Next::Stay;
        };
        *tries += 1;
        let (tries, stage) = (*tries, stage.clone());
        let spec = self.menu_spec(&stage);
        match key {
            Some(k) => self.step(StepKind::Invalid(k, tries), out),
            None => self.step(StepKind::NoInput(tries), out),
        }
        if tries > spec.retries {
            self.step(StepKind::OutOfTries, out);
            return self.choose(spec.fail, out);
        }
        // Keys typed after a wrong one are stale: the caller hears why next.
        self.type_ahead.clear();
        let prompts = if no_input {
            spec.reprompt_no_input
        } else {
            spec.reprompt_invalid
        };
        self.play(prompts, true, out);
        Next::Stay
    }

    fn choose(&mut self, choice: Choice, out: &mut Vec<Action>) -> Next {
        let NodeKind::Callback(c) = &self.set.node(self.at).kind else {
            return match choice {
                Choice::Node(n) => Next::Go(n),
                _ => Next::Stay,
            };
        };
        let (on_decline, confirm_number) = (c.on_decline, c.confirm_number);
        match choice {
            Choice::Node(n) => Next::Go(n),
            Choice::CallbackDecline => {
                self.step(StepKind::CallbackDeclined, out);
                Next::Go(on_decline)
            }
            Choice::CallbackAccept => {
                let mut number = normalise(&self.call.caller);
                if !number.is_empty() {
                    // The From number is only a claim: a spoofed premium or
                    // foreign number must never be dialled (toll fraud), so
                    // such a caller is asked for a number instead.
                    if let Err(why) = self.call.dialling.callback.check(&number) {
                        self.step(StepKind::CallbackRefused(why), out);
                        number.clear();
                    }
                }
                if !confirm_number && !number.is_empty() {
                    self.request_callback(number, None, out)
                } else if number.is_empty() {
                    // No usable caller number (anonymous): ask for one.
                    self.enter_entry(EntryStage::CallbackNumber, out)
                } else {
                    let readback = self.readback(&number);
                    self.enter_menu(MenuStage::CallbackConfirm(readback), out)
                }
            }
            Choice::CallbackConfirm => {
                let number = normalise(&self.call.caller);
                self.request_callback(number, None, out)
            }
            Choice::CallbackOther => self.enter_entry(EntryStage::CallbackNumber, out),
        }
    }

    /// "The current wait is about six minutes. Press 1 for a callback ..."
    /// A wait that is missing or not a number leaves the offer alone: the
    /// sentence is a courtesy and must never hold up the call.
    fn offer_with_wait(&self) -> PromptSeq {
        let NodeKind::Callback(c) = &self.set.node(self.at).kind else {
            return Arc::from(Vec::new());
        };
        let offer = &c.prompts.offer;
        let Some(wait) = &c.say_wait else {
            return Arc::clone(offer);
        };
        let sentence: Option<Vec<PromptId>> = self
            .var(&wait.var)
            .and_then(speak::wait_sentence_for)
            .and_then(|names| {
                names
                    .iter()
                    .map(|name| wait.pieces.get(name).copied())
                    .collect()
            });
        match sentence {
            Some(mut seq) => {
                seq.extend(offer.iter().copied());
                seq.into()
            }
            None => Arc::clone(offer),
        }
    }

    /// "We will call you back at 3 7 1 ... Press 1 to confirm, 2 for another."
    fn readback(&self, number: &str) -> PromptSeq {
        let NodeKind::Callback(c) = &self.set.node(self.at).kind else {
            return Arc::from(Vec::new());
        };
        let p = &c.prompts;
        let mut seq: Vec<PromptId> = Vec::with_capacity(number.len() + 1 + p.confirm.len());
        seq.push(p.number_is);
        for d in number.chars().filter_map(|c| c.to_digit(10)) {
            seq.push(p.digits[d as usize]);
        }
        seq.extend(p.confirm.iter().copied());
        seq.into()
    }

    // ---- digit entry (collect nodes and the callback number) ----

    fn entry_spec(&self, stage: EntryStage) -> EntrySpec {
        match (&self.set.node(self.at).kind, stage) {
            (NodeKind::Collect(c), _) => EntrySpec {
                prompt: Arc::clone(&c.prompt),
                reprompt_invalid: Arc::clone(&c.reprompt_invalid),
                reprompt_no_input: Arc::clone(&c.reprompt_no_input),
                min: c.min,
                max: c.max,
                terminator: c.terminator,
                first_timeout: c.first_digit_timeout,
                inter_timeout: c.inter_digit_timeout,
                retries: c.retries,
            },
            (NodeKind::Callback(c), _) => EntrySpec {
                prompt: Arc::clone(&c.prompts.enter_number),
                reprompt_invalid: Arc::clone(&c.prompts.enter_number),
                reprompt_no_input: Arc::clone(&c.prompts.enter_number),
                min: c.min_digits,
                max: c.max_digits,
                terminator: Some('#'),
                first_timeout: c.timeout,
                inter_timeout: CALLBACK_INTER_DIGIT,
                retries: c.retries,
            },
            _ => EntrySpec {
                prompt: Arc::from(Vec::new()),
                reprompt_invalid: Arc::from(Vec::new()),
                reprompt_no_input: Arc::from(Vec::new()),
                min: 1,
                max: 1,
                terminator: None,
                first_timeout: Duration::from_secs(5),
                inter_timeout: Duration::from_secs(3),
                retries: 0,
            },
        }
    }

    fn enter_entry(&mut self, stage: EntryStage, out: &mut Vec<Action>) -> Next {
        self.phase = Phase::Entry {
            stage,
            tries: 0,
            digits: String::new(),
        };
        while let Some(d) = self.type_ahead.pop_front() {
            match self.entry_digit(d, out) {
                Next::Stay => {}
                go => return go,
            }
            if !matches!(&self.phase, Phase::Entry { digits, .. } if !digits.is_empty()) {
                // A rejected entry restarted the prompt; later keys are stale.
                self.type_ahead.clear();
                return Next::Stay;
            }
        }
        if matches!(&self.phase, Phase::Entry { digits, .. } if digits.is_empty()) {
            let prompt = self.entry_spec(stage).prompt;
            self.play(prompt, true, out);
        }
        Next::Stay
    }

    fn entry_digit(&mut self, d: char, out: &mut Vec<Action>) -> Next {
        let Phase::Entry { stage, digits, .. } = &self.phase else {
            return Next::Stay;
        };
        let (stage, first) = (*stage, digits.is_empty());
        let spec = self.entry_spec(stage);
        self.stop_playback(out);
        // The agent key counts only as the first key, so that it can still
        // be a digit inside an account number.
        if first && spec.terminator != Some(d) {
            if let Some((key, agent)) = self.agent() {
                if key == d {
                    self.cancel_timer(out);
                    self.step(StepKind::AgentKey, out);
                    return Next::Go(agent);
                }
            }
        }
        if spec.terminator == Some(d) {
            return self.entry_done(out);
        }
        if !d.is_ascii_digit() {
            if let Phase::Entry { digits, .. } = &self.phase {
                let mut entry = digits.clone();
                entry.push(d);
                return self.entry_retry(false, entry, out);
            }
        }
        let full = match &mut self.phase {
            Phase::Entry { digits, .. } => {
                digits.push(d);
                digits.len() >= spec.max as usize
            }
            _ => false,
        };
        if full {
            return self.entry_done(out);
        }
        self.set_timer(spec.inter_timeout, out);
        Next::Stay
    }

    fn entry_done(&mut self, out: &mut Vec<Action>) -> Next {
        self.cancel_timer(out);
        let Phase::Entry {
            stage,
            digits,
            tries,
        } = &mut self.phase
        else {
            return Next::Stay;
        };
        let (stage, entry, tries) = (*stage, std::mem::take(digits), *tries);
        let spec = self.entry_spec(stage);
        let length_ok = entry.len() >= spec.min as usize && entry.len() <= spec.max as usize;
        let pattern_ok = match &self.set.node(self.at).kind {
            NodeKind::Collect(c) => c.pattern.as_ref().is_none_or(|p| p.is_match(&entry)),
            _ => true,
        };
        if !(length_ok && pattern_ok) {
            return self.entry_retry(false, entry, out);
        }
        match (&self.set.node(self.at).kind, stage) {
            (NodeKind::Collect(c), EntryStage::Collect) => {
                let (var, next) = (c.into.clone(), c.next);
                self.step(
                    StepKind::Collected {
                        var: var.clone(),
                        value: entry.clone(),
                    },
                    out,
                );
                self.vars.insert(var, entry);
                Next::Go(next)
            }
            _ => self.request_callback(entry, Some(tries), out),
        }
    }

    fn entry_retry(&mut self, no_input: bool, entry: String, out: &mut Vec<Action>) -> Next {
        let Phase::Entry {
            stage,
            tries,
            digits,
        } = &mut self.phase
        else {
            return Next::Stay;
        };
        *tries += 1;
        digits.clear();
        let (stage, tries) = (*stage, *tries);
        let spec = self.entry_spec(stage);
        if no_input {
            self.step(StepKind::NoInput(tries), out);
        } else {
            self.step(StepKind::BadEntry(entry, tries), out);
        }
        if tries > spec.retries {
            self.step(StepKind::OutOfTries, out);
            return match &self.set.node(self.at).kind {
                NodeKind::Collect(c) => Next::Go(c.on_fail),
                NodeKind::Callback(c) => {
                    self.step(StepKind::CallbackDeclined, out);
                    Next::Go(c.on_decline)
                }
                _ => Next::Stay,
            };
        }
        self.type_ahead.clear();
        let prompts = if no_input {
            spec.reprompt_no_input
        } else {
            spec.reprompt_invalid
        };
        self.play(prompts, true, out);
        Next::Stay
    }

    // ---- transfer and callback ----

    fn enter_transfer(&mut self, out: &mut Vec<Action>) -> Next {
        let set = Arc::clone(&self.set);
        let NodeKind::Transfer(t) = &set.node(self.at).kind else {
            return Next::Stay;
        };
        let flow = set.flow(self.at.flow);
        let (uri, queue, target_name) = match &t.target {
            TransferTarget::Queue(q) => {
                let q = &flow.queues[*q as usize];
                (q.uri.clone(), Some(q), q.name.clone())
            }
            TransferTarget::Uri { scheme, user, rest } => {
                let user_value = user.render(|v| self.var(v));
                // The toll-fraud guard: a caller-filled user part is digits only.
                if !user.is_literal()
                    && (user_value.is_empty() || !user_value.chars().all(|c| c.is_ascii_digit()))
                {
                    self.step(
                        StepKind::TransferRefused(format!(
                            "`{user_value}` is not a number that may be dialled"
                        )),
                        out,
                    );
                    return Next::Go(t.on_fail);
                }
                if !user.is_literal() {
                    if let Err(why) = self.call.dialling.transfer.check(&user_value) {
                        self.step(StepKind::TransferRefused(why), out);
                        return Next::Go(t.on_fail);
                    }
                }
                let at = if user_value.is_empty() { "" } else { "@" };
                let host = rest.trim_start_matches('@');
                let uri = format!("{scheme}{user_value}{at}{host}");
                (uri.clone(), None, uri)
            }
        };
        let context = t
            .context
            .iter()
            .map(|(k, v)| (k.clone(), v.render(|name| self.var(name))))
            .collect();
        out.push(Action::Transfer(TransferRequest {
            uri,
            queue: queue.map(|q| q.name.clone()),
            priority: t.priority.or(queue.and_then(|q| q.priority)),
            context,
            handoff: queue.map(|q| q.handoff).unwrap_or_default(),
            user_to_user: queue.is_some_and(|q| q.user_to_user),
            refer_context: queue.map(|q| q.refer_context).unwrap_or_default(),
            ring_timeout: queue.map_or(std::time::Duration::from_secs(60), |q| q.ring_timeout),
            srtp: queue.is_some_and(|q| q.srtp),
        }));
        self.phase = Phase::Transferring {
            target: target_name,
        };
        if !t.hold.is_empty() {
            self.play(Arc::clone(&t.hold), false, out);
        }
        Next::Stay
    }

    /// Files the request; `entry_tries` is `Some` for a number the caller
    /// typed (with the tries so far), `None` for their own.
    fn request_callback(
        &mut self,
        number: String,
        entry_tries: Option<u32>,
        out: &mut Vec<Action>,
    ) -> Next {
        let entered = entry_tries.is_some();
        let NodeKind::Callback(c) = &self.set.node(self.at).kind else {
            return Next::Stay;
        };
        let queue = &self.set.flow(self.at.flow).queues[c.queue as usize];
        let (name, uri, priority) = (queue.name.clone(), queue.uri.clone(), queue.priority);
        // Closed now: the callback waits for the next opening (within a
        // year; a schedule that never opens leaves it to the store's window).
        let now = self.wall_now();
        let not_before = queue
            .hours
            .map(|h| &self.set.flow(self.at.flow).schedules[h as usize].1)
            .filter(|s| !s.is_open(now))
            .and_then(|s| s.next_open_between(now, now + chrono::TimeDelta::days(366)));
        let mut context: Vec<(String, String)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        context.sort();
        context.push(("path".into(), self.path.clone()));
        self.step(StepKind::CallbackRequested(number.clone()), out);
        out.push(Action::RequestCallback(CallbackRequest {
            queue: name.clone(),
            queue_uri: uri,
            number,
            priority,
            entered,
            not_before,
            context,
        }));
        self.phase = Phase::Recording {
            queue: name,
            tries: entry_tries.unwrap_or(0),
        };
        Next::Stay
    }

    fn on_callback_recorded(
        &mut self,
        result: Result<Booked, CallbackError>,
        out: &mut Vec<Action>,
    ) -> Next {
        let Phase::Recording { queue, tries } = &self.phase else {
            return Next::Stay;
        };
        let (queue, tries) = (queue.clone(), *tries);
        let NodeKind::Callback(c) = &self.set.node(self.at).kind else {
            return Next::Stay;
        };
        let (next, prompts) = match &result {
            Ok(Booked::New) => (c.on_accept, Arc::clone(&c.prompts.confirmed)),
            Ok(Booked::Merged) => (c.on_accept, Arc::clone(&c.prompts.already_booked)),
            Err(CallbackError::Refused(_)) => (c.on_decline, Arc::clone(&c.prompts.refused)),
            Err(CallbackError::Failed(_)) => (c.on_fail, Arc::clone(&c.prompts.failed)),
        };
        let retries = c.retries;
        match result {
            Ok(_) => self.callback_booked = Some(queue),
            Err(CallbackError::Refused(reason)) => {
                self.step(StepKind::CallbackRefused(reason), out);
                // Another number may do: ask again, as a new try.
                if tries < retries {
                    self.phase = Phase::Entry {
                        stage: EntryStage::CallbackNumber,
                        tries: tries + 1,
                        digits: String::new(),
                    };
                    let ask = self.entry_spec(EntryStage::CallbackNumber).prompt;
                    let both: Vec<PromptId> = prompts.iter().chain(ask.iter()).copied().collect();
                    self.play(both.into(), true, out);
                    return Next::Stay;
                }
                self.step(StepKind::OutOfTries, out);
            }
            Err(CallbackError::Failed(reason)) => self.step(StepKind::CallbackFailed(reason), out),
        }
        self.phase = Phase::CallbackDone { next };
        // The outcome is heard whole: the confirmation is the promise.
        self.play(prompts, false, out);
        Next::Stay
    }
}

#[cfg(test)]
mod tests;
