//! `callflow report`: what callers did in the flows, read from the call
//! records (one JSON line per call, from one node or gathered from many).
//!
//! Per flow: calls, where they ended, containment (finished in the IVR),
//! abandonment and where it happened, transfers and callbacks by queue,
//! time to reach an agent, agent-key use, keys pressed per node, invalid
//! and no-input rates, and how many calls took each step from node to
//! node; per node (`callflow serve` instance) the same headline figures.
//! As text, JSON, or an HTML page that draws each flow with its figures.
//!
//! Records are read one line at a time, so a file of millions of calls
//! costs the memory of its figures, not of its lines. Lines that are not
//! records (a torn last line after a crash, say) are counted and skipped,
//! with the first one's line number and error.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::record::{FailedTransfer, FlowInput, InputKind};

/// The share of a flow's calls that, hanging up at one node, flags it in
/// the HTML diagram.
const FLAG_ABANDONED: f64 = 0.10;

/// The share of a node's visits with an invalid key or a silence that
/// flags it.
const FLAG_INPUT_ERRORS: f64 = 0.20;

/// Which records a report covers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Calls that started at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Calls of this flow only.
    pub flow: Option<String>,
}

/// The fields of a call record the report reads; records written by
/// older versions lack some and still count.
#[derive(Debug, Deserialize)]
struct Record {
    flow: String,
    start: String,
    end: String,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    digits: String,
    outcome: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    agent_answer: Option<String>,
    #[serde(default)]
    inputs: Vec<FlowInput>,
    #[serde(default)]
    failed_transfers: Vec<FailedTransfer>,
    #[serde(default)]
    node: Option<String>,
}

/// Median and 90th percentile of a set of durations, in seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Spread {
    /// How many calls.
    pub calls: u64,
    /// Half were faster.
    pub median_seconds: f64,
    /// Nine in ten were faster.
    pub p90_seconds: f64,
}

/// A queue's transfers.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QueueFigures {
    /// Calls handed to it.
    pub transferred: u64,
    /// Transfers to it that failed (the flow went on).
    pub failed: u64,
    /// Callbacks booked for it.
    pub callbacks: u64,
}

/// One node of a flow.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeFigures {
    /// Calls that reached it (once per call).
    pub calls: u64,
    /// Callers who hung up while there.
    pub hung_up: u64,
    /// Keys it took, by key.
    pub keys: BTreeMap<char, u64>,
    /// Keys it refused (or entries it refused).
    pub invalid: u64,
    /// Silences it timed out on.
    pub no_input: u64,
    /// The agent key, pressed there.
    pub agent_key: u64,
}

/// A step from one node to the next, and how many calls took it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transition {
    /// From, `flow.node`.
    pub from: String,
    /// To, `flow.node`.
    pub to: String,
    /// Calls (each counted once per step it took).
    pub calls: u64,
}

/// The headline figures of a set of calls.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Headline {
    /// Calls.
    pub calls: u64,
    /// Finished in the IVR (the flow's end).
    pub contained: u64,
    /// Callers who hung up before the flow's end.
    pub abandoned: u64,
    /// Handed to an agent.
    pub transferred: u64,
    /// Booked a callback.
    pub callbacks: u64,
    /// Failed (see the records' detail).
    pub failed: u64,
}

impl Headline {
    fn add(&mut self, outcome: &str) {
        self.calls += 1;
        match outcome {
            "completed" => self.contained += 1,
            "caller_hung_up" => self.abandoned += 1,
            "transferred" => self.transferred += 1,
            "callback_requested" => self.callbacks += 1,
            _ => self.failed += 1,
        }
    }
}

/// Everything about one flow.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowReport {
    /// The flow.
    pub flow: String,
    /// Its calls by outcome.
    #[serde(flatten)]
    pub headline: Headline,
    /// `contained / calls`.
    pub containment: f64,
    /// `abandoned / calls`.
    pub abandonment: f64,
    /// The same per node (`callflow serve` instance).
    pub by_node: BTreeMap<String, Headline>,
    /// Calls by outcome, as the records name them.
    pub outcomes: BTreeMap<String, u64>,
    /// Transfers and callbacks by queue (a transfer to a URI: the URI).
    pub queues: BTreeMap<String, QueueFigures>,
    /// From the call's start to an agent (its answer, for a bridged call;
    /// the transfer's end, for a REFER).
    pub time_to_agent: Option<Spread>,
    /// Calls that pressed the agent key.
    pub agent_key_calls: u64,
    /// `agent_key_calls / calls`.
    pub agent_key_rate: f64,
    /// Keys pressed in all.
    pub keys_pressed: u64,
    /// Calls with at least one key refused.
    pub invalid_input_calls: u64,
    /// `invalid_input_calls / calls`.
    pub invalid_input_rate: f64,
    /// Calls with at least one silence timed out.
    pub no_input_calls: u64,
    /// `no_input_calls / calls`.
    pub no_input_rate: f64,
    /// Per node of the flow (`flow.node`).
    pub nodes: BTreeMap<String, NodeFigures>,
    /// Steps taken, the most taken first.
    pub transitions: Vec<Transition>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Calls counted.
    pub calls: u64,
    /// Calls counted per node (`callflow serve` instance).
    pub by_node: BTreeMap<String, Headline>,
    /// Lines that were not call records.
    pub skipped_lines: u64,
    /// The first of them: its line number and why.
    pub first_skipped: Option<String>,
    /// The earliest start counted, if any call was.
    pub first_call: Option<String>,
    /// The latest start counted.
    pub last_call: Option<String>,
    /// Per flow, by name.
    pub flows: Vec<FlowReport>,
}

/// What one flow's calls add up to while reading.
#[derive(Default)]
struct FlowTally {
    headline: Headline,
    by_node: BTreeMap<String, Headline>,
    outcomes: BTreeMap<String, u64>,
    queues: BTreeMap<String, QueueFigures>,
    to_agent: Vec<f64>,
    agent_key_calls: u64,
    keys_pressed: u64,
    invalid_calls: u64,
    no_input_calls: u64,
    nodes: BTreeMap<String, NodeFigures>,
    transitions: HashMap<(String, String), u64>,
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl FlowTally {
    fn add(&mut self, r: &Record, start: DateTime<Utc>) {
        self.headline.add(&r.outcome);
        let node = r.node.clone().unwrap_or_else(|| "-".to_string());
        self.by_node.entry(node).or_default().add(&r.outcome);
        *self.outcomes.entry(r.outcome.clone()).or_default() += 1;
        match r.outcome.as_str() {
            "transferred" => {
                self.queues.entry(r.detail.clone()).or_default().transferred += 1;
                let reached = r.agent_answer.as_deref().unwrap_or(&r.end);
                if let Some(at) = parse_time(reached) {
                    self.to_agent
                        .push((at - start).num_milliseconds().max(0) as f64 / 1000.0);
                }
            }
            "callback_requested" => {
                self.queues.entry(r.detail.clone()).or_default().callbacks += 1;
            }
            "caller_hung_up" if !r.detail.is_empty() => {
                self.nodes.entry(r.detail.clone()).or_default().hung_up += 1;
            }
            _ => {}
        }
        for f in &r.failed_transfers {
            self.queues.entry(f.target.clone()).or_default().failed += 1;
        }
        self.keys_pressed += r.digits.chars().count() as u64;
        let mut seen: Vec<&str> = Vec::with_capacity(r.nodes.len());
        for n in &r.nodes {
            if !seen.contains(&n.as_str()) {
                seen.push(n);
                self.nodes.entry(n.clone()).or_default().calls += 1;
            }
        }
        for pair in r.nodes.windows(2) {
            *self
                .transitions
                .entry((pair[0].clone(), pair[1].clone()))
                .or_default() += 1;
        }
        let (mut invalid, mut silent, mut agent) = (false, false, false);
        for i in &r.inputs {
            let n = self.nodes.entry(i.at.clone()).or_default();
            match i.input {
                InputKind::Key => {
                    if let Some(k) = i.key {
                        *n.keys.entry(k).or_default() += 1;
                    }
                }
                InputKind::AgentKey => {
                    n.agent_key += 1;
                    agent = true;
                }
                InputKind::Invalid => {
                    n.invalid += 1;
                    invalid = true;
                }
                InputKind::NoInput => {
                    n.no_input += 1;
                    silent = true;
                }
            }
        }
        self.agent_key_calls += u64::from(agent);
        self.invalid_calls += u64::from(invalid);
        self.no_input_calls += u64::from(silent);
    }

    fn finish(self, flow: String) -> FlowReport {
        let calls = self.headline.calls;
        let share = |n: u64| {
            if calls == 0 {
                0.0
            } else {
                round(n as f64 / calls as f64)
            }
        };
        let mut transitions: Vec<Transition> = self
            .transitions
            .into_iter()
            .map(|((from, to), calls)| Transition { from, to, calls })
            .collect();
        transitions.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
        });
        FlowReport {
            flow,
            containment: share(self.headline.contained),
            abandonment: share(self.headline.abandoned),
            headline: self.headline,
            by_node: self.by_node,
            outcomes: self.outcomes,
            queues: self.queues,
            time_to_agent: spread(self.to_agent),
            agent_key_calls: self.agent_key_calls,
            agent_key_rate: share(self.agent_key_calls),
            keys_pressed: self.keys_pressed,
            invalid_input_calls: self.invalid_calls,
            invalid_input_rate: share(self.invalid_calls),
            no_input_calls: self.no_input_calls,
            no_input_rate: share(self.no_input_calls),
            nodes: self.nodes,
            transitions,
        }
    }
}

/// Four decimals: shares read as percentages with two.
fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The median and 90th percentile (nearest rank).
fn spread(mut values: Vec<f64>) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let k = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
        round(values[k - 1])
    };
    Some(Spread {
        calls: values.len() as u64,
        median_seconds: rank(0.5),
        p90_seconds: rank(0.9),
    })
}

/// Reads records from `inputs` (each named, for the skipped lines'
/// places: records gathered from several nodes come in several files) and
/// adds up those `filter` lets through.
pub fn build<R: BufRead>(
    inputs: impl IntoIterator<Item = (String, R)>,
    filter: &Filter,
) -> std::io::Result<Report> {
    let mut flows: BTreeMap<String, FlowTally> = BTreeMap::new();
    let mut by_node: BTreeMap<String, Headline> = BTreeMap::new();
    let (mut skipped, mut first_skipped) = (0, None);
    let (mut first, mut last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
    // Lines as bytes: a line cut inside a UTF-8 character (a crash mid
    // write) is a line to skip, not an error that ends the report.
    let lines = inputs.into_iter().flat_map(|(name, input)| {
        input
            .split(b'\n')
            .enumerate()
            .map(move |(n, line)| (format!("{name}:{}", n + 1), line))
    });
    for (place, line) in lines {
        let line = String::from_utf8_lossy(&line?).into_owned();
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Record>(&line)
            .map_err(|e| e.to_string())
            .and_then(|r| match parse_time(&r.start) {
                Some(start) => Ok((r, start)),
                None => Err(format!("start `{}` is not RFC 3339", r.start)),
            });
        let (record, start) = match parsed {
            Ok(ok) => ok,
            Err(e) => {
                skipped += 1;
                first_skipped.get_or_insert_with(|| format!("{place}: {e}"));
                continue;
            }
        };
        if filter.since.is_some_and(|since| start < since)
            || filter.flow.as_ref().is_some_and(|f| *f != record.flow)
        {
            continue;
        }
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(start, |l| l.max(start)));
        let node = record.node.clone().unwrap_or_else(|| "-".to_string());
        by_node.entry(node).or_default().add(&record.outcome);
        flows
            .entry(record.flow.clone())
            .or_default()
            .add(&record, start);
    }
    let flows: Vec<FlowReport> = flows
        .into_iter()
        .map(|(name, tally)| tally.finish(name))
        .collect();
    Ok(Report {
        calls: flows.iter().map(|f| f.headline.calls).sum(),
        by_node,
        skipped_lines: skipped,
        first_skipped,
        first_call: first.map(crate::call::record::timestamp),
        last_call: last.map(crate::call::record::timestamp),
        flows,
    })
}

/// A share as a percentage.
fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

impl Report {
    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} calls, {} to {}",
            self.calls,
            self.first_call.as_deref().unwrap_or("-"),
            self.last_call.as_deref().unwrap_or("-")
        );
        if self.skipped_lines > 0 {
            let _ = writeln!(
                s,
                "{} lines skipped (not call records; first: {})",
                self.skipped_lines,
                self.first_skipped.as_deref().unwrap_or("?")
            );
        }
        for (node, h) in &self.by_node {
            let _ = writeln!(s, "node {node}: {}", headline_text(h));
        }
        for f in &self.flows {
            let _ = writeln!(s, "\nflow {}: {}", f.flow, headline_text(&f.headline));
            let _ = writeln!(
                s,
                "  containment {}  abandonment {}  agent key {}  invalid input {}  no input {}  keys pressed {}",
                pct(f.containment),
                pct(f.abandonment),
                pct(f.agent_key_rate),
                pct(f.invalid_input_rate),
                pct(f.no_input_rate),
                f.keys_pressed
            );
            if let Some(t) = &f.time_to_agent {
                let _ = writeln!(
                    s,
                    "  time to an agent: median {:.1} s, p90 {:.1} s ({} calls)",
                    t.median_seconds, t.p90_seconds, t.calls
                );
            }
            for (node, h) in &f.by_node {
                let _ = writeln!(s, "  on {node}: {}", headline_text(h));
            }
            for (q, figures) in &f.queues {
                let _ = writeln!(
                    s,
                    "  queue {q}: {} transferred, {} transfers failed, {} callbacks",
                    figures.transferred, figures.failed, figures.callbacks
                );
            }
            let _ = writeln!(
                s,
                "  {:<28} {:>7} {:>8} {:>8} {:>8}  keys",
                "node", "calls", "hung up", "invalid", "silent"
            );
            for (name, n) in &f.nodes {
                let keys: Vec<String> = n.keys.iter().map(|(k, c)| format!("{k}:{c}")).collect();
                let _ = writeln!(
                    s,
                    "  {:<28} {:>7} {:>8} {:>8} {:>8}  {}",
                    name,
                    n.calls,
                    n.hung_up,
                    n.invalid,
                    n.no_input,
                    keys.join(" ")
                );
            }
        }
        s
    }

    /// The report as one HTML page: per flow its figures and, where the
    /// flow is in `set`, its diagram with the figures drawn on.
    pub fn to_html(&self, set: Option<&crate::flow::FlowSet>, note: Option<&str>) -> String {
        let mut body = String::new();
        body += &format!(
            "<h1>Call flows: {} calls</h1>\n<p class=\"when\">{} to {}</p>\n",
            self.calls,
            esc(self.first_call.as_deref().unwrap_or("-")),
            esc(self.last_call.as_deref().unwrap_or("-"))
        );
        if let Some(note) = note {
            body += &format!("<p class=\"note\">{}</p>\n", esc(note));
        }
        if self.skipped_lines > 0 {
            body += &format!(
                "<p class=\"note\">{} lines skipped (not call records; first: {})</p>\n",
                self.skipped_lines,
                esc(self.first_skipped.as_deref().unwrap_or("?"))
            );
        }
        body += &headline_table("server node", &self.by_node);
        for f in &self.flows {
            body += &format!("<section id=\"flow-{0}\"><h2>Flow {0}</h2>\n", esc(&f.flow));
            body += "<div class=\"cards\">";
            for (label, value) in [
                ("calls", f.headline.calls.to_string()),
                ("containment", pct(f.containment)),
                ("abandonment", pct(f.abandonment)),
                ("agent key", pct(f.agent_key_rate)),
                ("invalid input", pct(f.invalid_input_rate)),
                ("no input", pct(f.no_input_rate)),
                (
                    "to an agent (median / p90)",
                    f.time_to_agent.as_ref().map_or("-".to_string(), |t| {
                        format!("{:.1} s / {:.1} s", t.median_seconds, t.p90_seconds)
                    }),
                ),
            ] {
                body += &format!(
                    "<div class=\"card\"><div class=\"v\">{}</div><div class=\"k\">{label}</div></div>",
                    esc(&value)
                );
            }
            body += "</div>\n";
            let index = set.and_then(|s| s.flow_index(&f.flow).map(|i| (s, i)));
            match index {
                Some((set, i)) => {
                    body += "<div class=\"diagram\">";
                    body += &crate::flow::render::svg_with_figures(set, i, &figures_of(f));
                    body += "</div>\n";
                }
                None => body +=
                    "<p class=\"note\">No diagram: this flow is not among the flows loaded.</p>\n",
            }
            body += &headline_table("server node", &f.by_node);
            if !f.queues.is_empty() {
                body += "<table><tr><th>queue</th><th>transferred</th><th>transfers failed</th><th>callbacks</th></tr>\n";
                for (q, n) in &f.queues {
                    body += &format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                        esc(q),
                        n.transferred,
                        n.failed,
                        n.callbacks
                    );
                }
                body += "</table>\n";
            }
            body += "<table><tr><th>flow node</th><th>calls</th><th>hung up</th><th>invalid</th><th>silent</th><th>agent key</th><th>keys</th></tr>\n";
            for (name, n) in &f.nodes {
                let keys: Vec<String> = n.keys.iter().map(|(k, c)| format!("{k}: {c}")).collect();
                body += &format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    esc(name),
                    n.calls,
                    n.hung_up,
                    n.invalid,
                    n.no_input,
                    n.agent_key,
                    esc(&keys.join(", "))
                );
            }
            body += "</table></section>\n";
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>callflow report</title>\n<style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n"
        )
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
h2{margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:right}\
td:first-child,th:first-child{text-align:left}\
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #ddd;border-radius:6px;padding:.5em 1em}\
.v{font-size:1.4em;font-weight:bold}.k{color:#666;font-size:.85em}\
.note,.when{color:#666}.diagram{overflow-x:auto;margin:1em 0}";

fn headline_text(h: &Headline) -> String {
    format!(
        "{} calls: {} contained, {} abandoned, {} transferred, {} callbacks, {} failed",
        h.calls, h.contained, h.abandoned, h.transferred, h.callbacks, h.failed
    )
}

fn headline_table(what: &str, rows: &BTreeMap<String, Headline>) -> String {
    let mut t = format!("<table><tr><th>{what}</th><th>calls</th><th>contained</th><th>abandoned</th><th>transferred</th><th>callbacks</th><th>failed</th></tr>\n");
    for (name, h) in rows {
        t += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(name),
            h.calls,
            h.contained,
            h.abandoned,
            h.transferred,
            h.callbacks,
            h.failed
        );
    }
    t + "</table>\n"
}

/// What the diagram of `f` shows on its boxes and arrows.
fn figures_of(f: &FlowReport) -> crate::flow::render::Figures {
    let calls = f.headline.calls.max(1) as f64;
    let mut figures = crate::flow::render::Figures {
        agent_key: f.agent_key_calls,
        ..Default::default()
    };
    for (name, n) in &f.nodes {
        let mut lines = vec![format!("{} calls", n.calls)];
        if n.hung_up > 0 {
            lines.push(format!(
                "{} hung up ({})",
                n.hung_up,
                pct(n.hung_up as f64 / calls)
            ));
        }
        if n.invalid + n.no_input > 0 {
            lines.push(format!("{} invalid, {} silent", n.invalid, n.no_input));
        }
        let errors = (n.invalid + n.no_input) as f64 / n.calls.max(1) as f64;
        let flagged = n.hung_up as f64 / calls >= FLAG_ABANDONED || errors >= FLAG_INPUT_ERRORS;
        figures.nodes.insert(name.clone(), (lines, flagged));
    }
    for t in &f.transitions {
        figures
            .transitions
            .insert((t.from.clone(), t.to.clone()), t.calls);
    }
    figures
}

/// Text made safe for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `--since`: RFC 3339, a date (midnight UTC), or an age (`90m`, `24h`,
/// `7d`) before `now`.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Some(t) = parse_time(text) {
        return Ok(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(0));
    let n: i64 = digits.parse().map_err(|_| {
        format!("--since {text:?}: give RFC 3339, YYYY-MM-DD, or an age like 24h or 7d")
    })?;
    let age = match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        _ => None,
    }
    .ok_or_else(|| format!("--since {text:?}: the unit is s, m, h or d"))?;
    now.checked_sub_signed(age)
        .ok_or_else(|| format!("--since {text:?} is too far back"))
}

#[cfg(test)]
mod tests;
