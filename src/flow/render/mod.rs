//! Diagrams of one flow for `callflow graph`: Graphviz DOT and Mermaid for
//! those who already use these tools, and an SVG laid out here so that a
//! picture needs nothing else installed.
//!
//! All three are drawn from one `Diagram`, so they show the same boxes and
//! edges. The SVG layout is a small layered (Sugiyama-style) drawing, which
//! suits call flows: they run from a greeting down to transfers and hang-ups,
//! with a few edges looping back to a shared fallback.
//!
//! This module holds the diagram and the text helpers that the formats
//! share; each format has its own module, and the SVG's layout is kept apart
//! from its drawing so that the placement can be read without the markup.

mod dot;
mod layout;
mod mermaid;
mod svg;

use std::collections::{BTreeMap, BTreeSet};

use super::graph::{FlowSet, NodeKind, NodeRef, PromptId, TransferTarget};

/// Output formats for `callflow graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Graphviz source, for `dot -Tpng` and the many tools that read it.
    Dot,
    /// A Mermaid flowchart, which GitHub and many wikis draw inline.
    Mermaid,
    /// A finished picture, laid out here.
    Svg,
}

/// Renders the flow at index `flow` of `set` (and a box for each other flow
/// it jumps to via goto, shown as a distinct "flow" shape, without
/// expanding it).
///
/// An index with no flow gives an empty diagram rather than a panic, since a
/// set loaded with errors is still meant to be shown.
pub fn render(set: &FlowSet, flow: u32, format: Format) -> String {
    let d = build(set, flow);
    match format {
        Format::Dot => dot::dot(&d),
        Format::Mermaid => mermaid::mermaid(&d),
        Format::Svg => svg::svg(&d),
    }
}

/// Figures to write onto a flow's SVG (what `callflow report --format
/// html` draws): per node, by its `flow.node` name, extra lines and
/// whether to flag it; per transition between two nodes, how many calls
/// took it; and how many used the agent key.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// Lines added to a node's box, and whether it is flagged.
    pub nodes: std::collections::HashMap<String, (Vec<String>, bool)>,
    /// Calls that went from one node to the next.
    pub transitions: std::collections::HashMap<(String, String), u64>,
    /// Calls that pressed the agent key.
    pub agent_key: u64,
}

/// The SVG of the flow at index `flow` of `set`, with `figures` on its
/// boxes and arrows.
pub fn svg_with_figures(set: &FlowSet, flow: u32, figures: &Figures) -> String {
    let mut d = build(set, flow);
    for v in &mut d.vertices {
        if let Some((lines, flagged)) = figures.nodes.get(&v.place) {
            v.lines.extend(lines.iter().cloned());
            v.flagged = *flagged;
        }
    }
    for e in &mut d.edges {
        let n = if e.dashed {
            figures.agent_key
        } else {
            let key = (
                d.vertices[e.from].place.clone(),
                d.vertices[e.to].place.clone(),
            );
            figures.transitions.get(&key).copied().unwrap_or(0)
        };
        if n > 0 {
            let calls = if n == 1 {
                "1 call".to_string()
            } else {
                format!("{n} calls")
            };
            e.label = if e.label.is_empty() {
                calls
            } else {
                format!("{} · {calls}", e.label)
            };
        }
    }
    svg::svg(&d)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Node(&'static str),
    Flow,
    AgentKey,
}

struct Vertex {
    id: String,
    lines: Vec<String>,
    shape: Shape,
    start: bool,
    agent: bool,
    /// The place it stands for, `flow.node` (empty for the agent key).
    place: String,
    /// Drawn in alarm (the report marks where callers get lost).
    flagged: bool,
}

struct Edge {
    from: usize,
    to: usize,
    label: String,
    dashed: bool,
}

/// The format-neutral picture; the flow's nodes come first, in file order.
#[derive(Default)]
struct Diagram {
    title: String,
    description: Option<String>,
    vertices: Vec<Vertex>,
    edges: Vec<Edge>,
    ids: BTreeSet<String>,
    outside: BTreeMap<NodeRef, usize>,
}

fn build(set: &FlowSet, index: u32) -> Diagram {
    // Reserved so that no node's id can be the start marker's.
    let ids = BTreeSet::from(["m_start".to_string()]);
    let title = format!("flow #{index} (not loaded)");
    let mut d = Diagram {
        title,
        ids,
        ..Diagram::default()
    };
    let Some(flow) = set.flows.get(index as usize) else {
        return d;
    };
    (d.title, d.description) = (flow.name.clone(), flow.description.clone());
    for (i, node) in flow.nodes.iter().enumerate() {
        let kind = node.kind.name();
        let lines = [node.name.clone(), kind.to_string()].into_iter();
        let lines = lines.chain(detail(set, index, &node.kind)).collect();
        d.add("n", &node.name, lines, Shape::Node(kind));
        d.vertices[i].start = i as u32 == flow.start;
        d.vertices[i].place = format!("{}.{}", flow.name, node.name);
    }
    for (i, node) in flow.nodes.iter().enumerate() {
        for (label, to) in node.kind.edges() {
            let to = d.target(set, index, to);
            d.link(i, to, label, false);
        }
    }
    if let Some((key, to)) = flow.agent {
        let to = d.target(set, index, to);
        d.vertices[to].agent = true;
        let marker = d.add(
            "m",
            "agent",
            vec![format!("key {key} (any menu)")],
            Shape::AgentKey,
        );
        d.link(marker, to, String::new(), true);
    }
    d
}

impl Diagram {
    /// Adds a vertex with an id safe in every format (Mermaid allows only a
    /// few characters), unique even when two names sanitise alike.
    fn add(&mut self, prefix: &str, name: &str, lines: Vec<String>, shape: Shape) -> usize {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = format!("{prefix}_{clean}");
        let (mut id, mut n) = (base.clone(), 2);
        while !self.ids.insert(id.clone()) {
            (id, n) = (format!("{base}_{n}"), n + 1);
        }
        let (start, agent, flagged) = (false, false, false);
        self.vertices.push(Vertex {
            id,
            lines,
            shape,
            start,
            agent,
            place: String::new(),
            flagged,
        });
        self.vertices.len() - 1
    }

    /// The vertex for `to`: a node of this flow, or one box per place in
    /// another flow, so that a flow entered twice is drawn once.
    fn target(&mut self, set: &FlowSet, index: u32, to: NodeRef) -> usize {
        let own = set.flows.get(index as usize).map_or(0, |f| f.nodes.len());
        if to.flow == index && (to.node as usize) < own {
            return to.node as usize;
        }
        if let Some(&v) = self.outside.get(&to) {
            return v;
        }
        let other = set.flows.get(to.flow as usize);
        let name = other.map_or("?", |f| f.name.as_str());
        let mut lines = vec![format!("→ flow {name}")];
        if let Some(f) = other.filter(|f| f.start != to.node) {
            lines.extend(
                f.nodes
                    .get(to.node as usize)
                    .map(|n| format!("at {}", n.name)),
            );
        }
        let v = self.add("f", name, lines, Shape::Flow);
        self.vertices[v].place = set.qualified_name(to);
        self.outside.insert(to, v);
        v
    }

    /// Adds an edge, merged with one between the same boxes, because
    /// parallel arrows (a callback's accept and decline to one goodbye)
    /// would be drawn on top of each other.
    fn link(&mut self, from: usize, to: usize, label: String, dashed: bool) {
        let same = |e: &&mut Edge| e.from == from && e.to == to && e.dashed == dashed;
        match self.edges.iter_mut().find(same) {
            Some(e) if !e.label.is_empty() && !label.is_empty() => {
                e.label = format!("{}, {label}", e.label);
            }
            Some(e) => e.label += &label,
            None => self.edges.push(Edge {
                from,
                to,
                label,
                dashed,
            }),
        }
    }
}

fn prompt_list(set: &FlowSet, prompts: &[PromptId]) -> String {
    let names: Vec<&str> = prompts.iter().map(|&id| set.prompt_name(id)).collect();
    names.join(", ")
}

/// The one line that says what a node does beyond its kind.
fn detail(set: &FlowSet, index: u32, kind: &NodeKind) -> Option<String> {
    let queue = |q: u32| {
        let queue = set
            .flows
            .get(index as usize)
            .and_then(|f| f.queues.get(q as usize));
        format!("queue {}", queue.map_or("?", |q| q.name.as_str()))
    };
    let text = match kind {
        NodeKind::Play { prompts, .. } | NodeKind::Hangup { prompts } => prompt_list(set, prompts),
        NodeKind::Menu(m) => prompt_list(set, &m.prompt),
        NodeKind::Collect(c) => format!("into {}", c.into),
        NodeKind::Set { assignments, .. } => {
            let vars: Vec<&str> = assignments.iter().map(|(v, _)| v.as_str()).collect();
            vars.join(", ")
        }
        NodeKind::Transfer(t) => match &t.target {
            TransferTarget::Queue(q) => queue(*q),
            TransferTarget::Uri { scheme, user, rest } => format!("{scheme}{user}{rest}"),
        },
        NodeKind::Callback(c) => queue(c.queue),
        NodeKind::Switch { .. } | NodeKind::Goto { .. } => String::new(),
    };
    (!text.is_empty()).then_some(text)
}

const AGENT: &str = "#b8860b";

fn fill(shape: Shape) -> &'static str {
    match shape {
        Shape::Flow => "#e6e0f8",
        Shape::AgentKey => "#fff3c4",
        Shape::Node("menu" | "collect") => "#dcebfa",
        Shape::Node("transfer") => "#dcf2e0",
        Shape::Node("callback") => "#fde8d0",
        Shape::Node("hangup") => "#f6d6d6",
        Shape::Node("switch") => "#fdf6c8",
        Shape::Node("set" | "goto") => "#ececec",
        Shape::Node(_) => "#ffffff",
    }
}

fn escape(s: &str, table: fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match table(c) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
    }
    out
}

// Monospace metrics: the SVG asks for a monospace font, so text widths are
// known from the character count alone. Shared because the layout sizes the
// boxes from the same text that the drawing writes into them.
const NAME_CW: f64 = 7.3;
const TEXT_CW: f64 = 6.7;
const PAD: f64 = 9.0;
const DETAIL_MAX: usize = 30;

/// `line`, cut to `max` characters. The layout sizes a box by the text the
/// drawing will write into it, so both must cut it the same way.
fn shown(line: &str, max: usize) -> String {
    if line.chars().count() <= max {
        return line.to_string();
    }
    line.chars().take(max - 1).chain(['…']).collect()
}

#[cfg(test)]
mod tests;
