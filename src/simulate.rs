//! `callflow simulate`: a scripted caller on a virtual clock.
//!
//! The same interpreter as for real calls runs here; prompts take as long as
//! their WAV files, timers fire when the virtual clock reaches them, and the
//! ACD and the callback store answer as the options say. The transcript is
//! what an admin reads to see where a caller would end up.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::flow::graph::{FlowSet, NodeRef, PromptSeq};
use crate::flow::interpreter::{
    Action, Booked, CallInfo, CallbackError, Event, Interpreter, Outcome, PlaybackId, TimerId,
};

/// One thing the scripted caller does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Listen until the current prompt ends, then press these keys.
    Keys(String),
    /// Press these keys at once, interrupting a prompt.
    Barge(String),
    /// Do nothing for a while.
    Wait(Duration),
    /// Hang up.
    HangUp,
}

/// Why a script could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("input item {index} `{text}`: {reason}")]
pub struct ScriptError {
    /// 1-based position in the script.
    pub index: usize,
    /// The item.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// Reads a script such as `1, wait 6s, 123456#, barge 0, hangup`.
pub fn parse_script(script: &str) -> Result<Vec<Input>, ScriptError> {
    let mut out = Vec::new();
    for (i, raw) in script.split(',').enumerate() {
        let item = raw.trim();
        let err = |reason: &str| ScriptError {
            index: i + 1,
            text: item.to_string(),
            reason: reason.to_string(),
        };
        if item.is_empty() {
            continue;
        }
        let keys_ok = |k: &str| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
        };
        if let Some(rest) = item.strip_prefix("wait") {
            let d = crate::flow::duration::FlowDuration::parse(rest.trim())
                .map_err(|e| err(&e.to_string()))?;
            out.push(Input::Wait(d.0));
        } else if let Some(rest) = item.strip_prefix("barge") {
            let keys = rest.trim();
            if !keys_ok(keys) {
                return Err(err("`barge` takes keys (0-9, *, #)"));
            }
            out.push(Input::Barge(keys.to_string()));
        } else if item == "hangup" || item == "hang up" {
            out.push(Input::HangUp);
        } else if keys_ok(item) {
            out.push(Input::Keys(item.to_string()));
        } else {
            return Err(err(
                "write keys (1, 123#), `wait 5s`, `barge 0` or `hangup`",
            ));
        }
    }
    Ok(out)
}

/// What the ACD or the callback store answers in a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Answer {
    /// Accepts.
    Ok,
    /// Refuses.
    Fail,
}

/// A simulated call.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The caller's number.
    pub caller: String,
    /// The dialled number.
    pub called: String,
    /// When the call starts.
    pub at: DateTime<Utc>,
    /// The caller's script.
    pub input: Vec<Input>,
    /// What the ACD answers to transfers.
    pub transfer: Answer,
    /// What the callback store answers.
    pub callback: Answer,
    /// Variables the server would provide, e.g. `wait_general=120`.
    pub vars: Vec<(String, String)>,
}

/// Time between keys when a caller types several.
const KEY_GAP: Duration = Duration::from_millis(200);
/// How long the ACD takes to answer a transfer.
const ACD_DELAY: Duration = Duration::from_secs(1);
/// A simulated call ends after this much virtual time.
const MAX_CALL: Duration = Duration::from_secs(3600);

/// The result: a readable transcript and the outcome.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// One line per step, key, prompt and decision.
    pub text: String,
    /// How the call ended (`None` if it was still in the IVR at the end).
    pub outcome: Option<Outcome>,
}

struct Sim<'a> {
    set: Arc<FlowSet>,
    interp: Interpreter,
    start: Instant,
    now: Instant,
    durations: &'a [Duration],
    playing: Option<(PlaybackId, Instant)>,
    timers: Vec<(TimerId, Instant)>,
    transfer_due: Option<Instant>,
    callback_due: bool,
    options: &'a Simulation,
    text: String,
    actions: Vec<Action>,
    /// The node the transcript is at: actions are printed in the order the
    /// interpreter emitted them, before and after it moved on.
    shown: NodeRef,
}

/// How long each prompt of `set` plays, from its WAV header (0 if unreadable).
pub fn prompt_durations(set: &FlowSet) -> Vec<Duration> {
    set.prompt_files
        .iter()
        .map(|f| match hound::WavReader::open(f) {
            Ok(r) => {
                let spec = r.spec();
                let frames = r.duration() as u64;
                Duration::from_micros(frames * 1_000_000 / u64::from(spec.sample_rate.max(1)))
            }
            Err(_) => Duration::ZERO,
        })
        .collect()
}

/// Runs a simulated call from `entry`.
pub fn simulate(
    set: Arc<FlowSet>,
    entry: NodeRef,
    durations: &[Duration],
    options: &Simulation,
) -> Transcript {
    // The virtual clock needs a base Instant; its absolute value never shows.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let call = CallInfo {
        caller: options.caller.clone(),
        called: options.called.clone(),
        call_id: "simulated".into(),
        started: start,
        started_wall: options.at,
        dialling: Default::default(),
        vars: options.vars.clone(),
    };
    let interp = Interpreter::new(Arc::clone(&set), entry, call);
    let mut sim = Sim {
        set,
        interp,
        start,
        now: start,
        durations,
        playing: None,
        timers: Vec::new(),
        transfer_due: None,
        callback_due: false,
        options,
        text: String::new(),
        actions: Vec::new(),
        shown: entry,
    };
    let _ = writeln!(
        sim.text,
        "call from {} to {} at {}",
        options.caller,
        options.called,
        options.at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    sim.feed(Event::Start);
    for input in &options.input {
        if sim.interp.outcome().is_some() {
            break;
        }
        match input {
            Input::Wait(d) => {
                let until = sim.now + *d;
                sim.advance_until(until);
            }
            Input::Keys(keys) | Input::Barge(keys) => {
                if matches!(input, Input::Keys(_)) {
                    sim.listen();
                }
                for (i, k) in keys.chars().enumerate() {
                    if i > 0 {
                        let until = sim.now + KEY_GAP;
                        sim.advance_until(until);
                    }
                    if sim.interp.outcome().is_some() {
                        break;
                    }
                    sim.line("caller presses", &k.to_string());
                    sim.feed(Event::Digit(k));
                }
            }
            Input::HangUp => {
                sim.line("caller hangs up", "");
                sim.feed(Event::HungUp);
            }
        }
    }
    // The script is over: let the flow run to its end.
    let limit = sim.start + MAX_CALL;
    while sim.interp.outcome().is_none() {
        match sim.next_due() {
            Some(t) if t <= limit => sim.advance_until(t),
            _ => {
                sim.line("(the caller stays silent and nothing more happens)", "");
                break;
            }
        }
    }
    Transcript {
        text: sim.text,
        outcome: sim.interp.outcome().cloned(),
    }
}

impl Sim<'_> {
    fn line(&mut self, what: &str, detail: &str) {
        let at = self.now.duration_since(self.start).as_secs_f64();
        let node = &self.set.node(self.shown).name;
        let _ = writeln!(self.text, "{at:>8.3}s  {node:<16} {what} {detail}");
    }

    fn prompts_text(&self, prompts: &PromptSeq) -> (String, Duration) {
        let mut total = Duration::ZERO;
        let mut names = Vec::new();
        for p in prompts.iter() {
            total += self
                .durations
                .get(p.0 as usize)
                .copied()
                .unwrap_or_default();
            names.push(self.set.prompt_name(*p).to_string());
        }
        (names.join(" + "), total)
    }

    fn feed(&mut self, event: Event) {
        let mut actions = std::mem::take(&mut self.actions);
        self.interp.handle(self.now, event, &mut actions);
        for action in actions.drain(..) {
            self.apply(action);
        }
        self.actions = actions;
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Play {
                id,
                prompts,
                barge_in,
            } => {
                let (names, total) = self.prompts_text(&prompts);
                let barge = if barge_in { "" } else { ", heard whole" };
                self.line(
                    "play",
                    &format!("{names} ({:.1}s{barge})", total.as_secs_f64()),
                );
                self.playing = Some((id, self.now + total));
            }
            Action::StopPlayback => {
                if self.playing.take().is_some() {
                    self.line("prompt stopped", "");
                }
            }
            Action::SetTimer { id, at } => {
                let after = at.saturating_duration_since(self.now).as_secs_f64();
                self.line("waits for a key", &format!("up to {after:.1}s"));
                self.timers.push((id, at));
            }
            Action::CancelTimer(id) => self.timers.retain(|(t, _)| *t != id),
            Action::Transfer(t) => {
                let mut detail = format!("to {}", t.uri);
                if let Some(q) = &t.queue {
                    let _ = write!(detail, " (queue {q}");
                    if let Some(p) = t.priority {
                        let _ = write!(detail, ", priority {p}");
                    }
                    detail.push(')');
                }
                for (k, v) in &t.context {
                    let _ = write!(detail, "; {k}={v}");
                }
                self.line("TRANSFER", &detail);
                self.transfer_due = Some(self.now + ACD_DELAY);
            }
            Action::RequestCallback(c) => {
                let from = c
                    .not_before
                    .map(|t| format!(", from {}", t.format("%Y-%m-%d %H:%M UTC")))
                    .unwrap_or_default();
                self.line(
                    "CALLBACK REQUEST",
                    &format!("call {} back for queue {}{from}", c.number, c.queue),
                );
                self.callback_due = true;
            }
            Action::Hangup => self.line("hang up", ""),
            Action::Step(step) => {
                self.shown = step.node;
                let text = step.what.to_string();
                if text != "entered" {
                    self.line(&text, "");
                } else {
                    let at = step.at.as_secs_f64();
                    let name = self.set.qualified_name(step.node);
                    let kind = self.set.node(step.node).kind.name();
                    let _ = writeln!(self.text, "{at:>8.3}s  -> {name} ({kind})");
                }
            }
            Action::Finished(outcome) => {
                self.line("END:", &outcome.to_string());
                self.playing = None;
                self.timers.clear();
                self.transfer_due = None;
            }
        }
        if self.callback_due {
            self.callback_due = false;
            let result = match self.options.callback {
                Answer::Ok => {
                    self.line("callback stored", "");
                    Ok(Booked::New)
                }
                Answer::Fail => {
                    self.line("callback store refuses", "");
                    Err(CallbackError::Failed("the store is unavailable".into()))
                }
            };
            self.feed(Event::CallbackRecorded(result));
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let mut due: Option<Instant> = None;
        let mut consider = |t: Instant| due = Some(due.map_or(t, |d| d.min(t)));
        if let Some((_, t)) = self.playing {
            consider(t);
        }
        for (_, t) in &self.timers {
            consider(*t);
        }
        if let Some(t) = self.transfer_due {
            consider(t);
        }
        due
    }

    /// Delivers everything due up to `until`, in time order.
    fn advance_until(&mut self, until: Instant) {
        while self.interp.outcome().is_none() {
            let Some(t) = self.next_due().filter(|t| *t <= until) else {
                break;
            };
            self.now = self.now.max(t);
            if let Some((id, end)) = self.playing {
                if end <= t {
                    self.playing = None;
                    self.feed(Event::PromptFinished(id));
                    continue;
                }
            }
            if let Some(due) = self.transfer_due {
                if due <= t {
                    self.transfer_due = None;
                    match self.options.transfer {
                        Answer::Ok => {
                            self.line("ACD accepts the transfer", "");
                            self.feed(Event::TransferSucceeded);
                        }
                        Answer::Fail => {
                            self.line("ACD refuses the transfer", "(503 Service Unavailable)");
                            self.feed(Event::TransferFailed("503 Service Unavailable".into()));
                        }
                    }
                    continue;
                }
            }
            if let Some(pos) = self.timers.iter().position(|(_, at)| *at <= t) {
                let (id, _) = self.timers.remove(pos);
                self.feed(Event::Timer(id));
            }
        }
        self.now = self.now.max(until);
    }

    /// The caller listens until the prompt that plays now has ended.
    fn listen(&mut self) {
        if let Some((_, end)) = self.playing {
            self.advance_until(end);
        }
    }
}
