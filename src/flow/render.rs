//! Diagrams of one flow for `callflow graph`: Graphviz DOT and Mermaid for
//! those who already use these tools, and an SVG laid out here so that a
//! picture needs nothing else installed.
//!
//! All three are drawn from one [`Diagram`], so they show the same boxes and
//! edges. The SVG layout is a small layered (Sugiyama-style) drawing, which
//! suits call flows: they run from a greeting down to transfers and hang-ups,
//! with a few edges looping back to a shared fallback.

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
        Format::Dot => dot(&d),
        Format::Mermaid => mermaid(&d),
        Format::Svg => svg(&d),
    }
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
        let (start, agent) = (false, false);
        self.vertices.push(Vertex {
            id,
            lines,
            shape,
            start,
            agent,
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

fn dot_char(c: char) -> Option<&'static str> {
    Some(match c {
        '"' => "\\\"",
        '\\' => "\\\\",
        '\n' => "\\n",
        '\r' => "",
        _ => return None,
    })
}

/// Mermaid reads `#name;` as an entity and treats `"`, `|`, `<`, `>` as
/// syntax or HTML, so all of them are written as entities.
fn mermaid_char(c: char) -> Option<&'static str> {
    Some(match c {
        '"' => "#quot;",
        '#' => "#35;",
        '<' => "#lt;",
        '>' => "#gt;",
        '&' => "#amp;",
        '|' => "#124;",
        '\n' | '\r' => " ",
        _ => return None,
    })
}

fn xml_char(c: char) -> Option<&'static str> {
    Some(match c {
        '&' => "&amp;",
        '<' => "&lt;",
        '>' => "&gt;",
        '"' => "&quot;",
        '\'' => "&apos;",
        _ => return None,
    })
}

fn xml(s: &str) -> String {
    escape(s, xml_char)
}

fn dot(d: &Diagram) -> String {
    let q = |s: &str| format!("\"{}\"", escape(s, dot_char));
    let title = q(&d.title);
    let mut s =
        format!("digraph {title} {{\n  graph [label={title}, labelloc=t, fontname=Helvetica];\n");
    s += "  node [shape=box, style=\"rounded,filled\", fontname=Helvetica, fontsize=11];\n";
    s += "  edge [fontname=Helvetica, fontsize=10];\n";
    for v in &d.vertices {
        let (id, label, colour) = (q(&v.id), q(&v.lines.join("\n")), fill(v.shape));
        let mut attrs = format!("label={label}, fillcolor=\"{colour}\"");
        attrs += match v.shape {
            Shape::Flow => ", shape=component",
            Shape::AgentKey => ", shape=note, fontsize=10",
            Shape::Node(_) => "",
        };
        if v.start {
            attrs += ", peripheries=2, penwidth=2";
        }
        if v.agent {
            attrs += &format!(", color=\"{AGENT}\", penwidth=2");
        }
        s += &format!("  {id} [{attrs}];\n");
    }
    if let Some(v) = d.vertices.iter().find(|v| v.start) {
        s += "  \"m_start\" [label=\"start\", shape=plaintext, style=\"\", fontsize=10];\n";
        s += &format!("  \"m_start\" -> {};\n", q(&v.id));
    }
    for e in &d.edges {
        let mut attrs = Vec::new();
        if !e.label.is_empty() {
            attrs.push(format!("label={}", q(&e.label)));
        }
        if e.dashed {
            attrs.push(format!("style=dashed, color=\"{AGENT}\""));
        }
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", attrs.join(", "))
        };
        let (from, to) = (q(&d.vertices[e.from].id), q(&d.vertices[e.to].id));
        s += &format!("  {from} -> {to}{attrs};\n");
    }
    s + "}\n"
}

fn mermaid(d: &Diagram) -> String {
    let mut s = format!(
        "flowchart TD\n  %% flow {}\n",
        escape(&d.title, mermaid_char)
    );
    let mut styles = String::new();
    for v in &d.vertices {
        let lines: Vec<String> = v.lines.iter().map(|l| escape(l, mermaid_char)).collect();
        let (id, label) = (&v.id, lines.join("<br/>"));
        s += &match v.shape {
            Shape::Node(_) => format!("  {id}[\"{label}\"]\n"),
            Shape::Flow => format!("  {id}[[\"{label}\"]]\n"),
            Shape::AgentKey => format!("  {id}>\"{label}\"]\n"),
        };
        let stroke = match (v.start, v.agent) {
            (_, true) => format!(",stroke:{AGENT},stroke-width:3px"),
            (true, false) => ",stroke-width:3px".into(),
            _ => String::new(),
        };
        styles += &format!("  style {id} fill:{}{stroke}\n", fill(v.shape));
    }
    if let Some(v) = d.vertices.iter().find(|v| v.start) {
        s += &format!("  m_start((\"start\")) --> {}\n", v.id);
    }
    for e in &d.edges {
        let arrow = if e.dashed { "-.->" } else { "-->" };
        let label = match e.label.as_str() {
            "" => String::new(),
            l => format!("|\"{}\"|", escape(l, mermaid_char)),
        };
        let (from, to) = (&d.vertices[e.from].id, &d.vertices[e.to].id);
        s += &format!("  {from} {arrow}{label} {to}\n");
    }
    s + &styles
}

// Monospace metrics: the SVG asks for a monospace font, so text widths are
// known from the character count alone.
const NAME_CW: f64 = 7.3;
const TEXT_CW: f64 = 6.7;
const LABEL_CW: f64 = 6.1;
const PAD: f64 = 9.0;
const RANK_GAP: f64 = 62.0;
const GAP: f64 = 34.0;
const DUMMY_GAP: f64 = 12.0;
const LOOP: f64 = 46.0;
const DETAIL_MAX: usize = 30;

/// A laid-out box (`x`, `y` its centre): a vertex, or a dummy point (no
/// height) that a long edge passes through so that it runs between boxes
/// rather than across them.
#[derive(Clone, Copy)]
struct Item {
    rank: usize,
    w: f64,
    h: f64,
    x: f64,
    y: f64,
}

/// An edge as a chain of items from the upper rank to the lower; `rev`
/// when the edge itself points upwards.
struct Route {
    edge: usize,
    chain: Vec<usize>,
    rev: bool,
}

fn shown(line: &str, max: usize) -> String {
    if line.chars().count() <= max {
        return line.to_string();
    }
    line.chars().take(max - 1).chain(['…']).collect()
}

fn item(v: &Vertex, rank: usize) -> Item {
    let mut w = v.lines[0].chars().count() as f64 * NAME_CW;
    for l in &v.lines[1..] {
        w = w.max(shown(l, DETAIL_MAX).chars().count() as f64 * TEXT_CW);
    }
    let h = 15.0 + 14.0 * (v.lines.len() - 1) as f64 + 2.0 * PAD - 4.0;
    Item {
        rank,
        w: (w + 2.0 * PAD).max(72.0),
        h,
        x: 0.0,
        y: 0.0,
    }
}

/// Ranks vertices by the longest path from the start over the edges that
/// do not close a cycle, rather than by BFS depth: shared fallbacks (agent,
/// callback, goodbye) then sink below every node that leads to them, so
/// nearly all edges point down. Vertices the start does not reach go below,
/// ranked the same way. Also returns the depth-first discovery order.
fn rank(d: &Diagram, out: &[Vec<usize>]) -> (Vec<usize>, Vec<usize>) {
    let n = d.vertices.len();
    let start = d.vertices.iter().position(|v| v.start);
    let (mut state, mut pre, mut post) = (vec![0u8; n], vec![usize::MAX; n], Vec::new());
    let (mut back, mut reached, mut seen) = (vec![false; d.edges.len()], vec![false; n], 0);
    for root in start.into_iter().chain(0..n) {
        if state[root] != 0 || d.vertices[root].shape == Shape::AgentKey {
            continue;
        }
        let mut stack = vec![(root, 0)];
        (state[root], pre[root], seen) = (1, seen, seen + 1);
        while let Some(top) = stack.last_mut() {
            let v = top.0;
            if let Some(&e) = out[v].get(top.1) {
                top.1 += 1;
                let t = d.edges[e].to;
                match state[t] {
                    0 => {
                        (state[t], pre[t], seen) = (1, seen, seen + 1);
                        stack.push((t, 0));
                    }
                    1 => back[e] = true,
                    _ => {}
                }
            } else {
                state[v] = 2;
                post.push(v);
                stack.pop();
            }
        }
        if Some(root) == start {
            reached = state.iter().map(|&s| s == 2).collect();
        }
    }
    let mut rank = vec![0usize; n];
    for &v in post.iter().rev() {
        for &e in &out[v] {
            let t = d.edges[e].to;
            if !back[e] && reached[v] == reached[t] {
                rank[t] = rank[t].max(rank[v] + 1);
            }
        }
    }
    let base = (0..n).filter(|&v| reached[v]).map(|v| rank[v] + 1).max();
    for v in (0..n).filter(|&v| !reached[v]) {
        rank[v] += base.unwrap_or(0);
    }
    (rank, pre)
}

fn layout(d: &Diagram) -> (Vec<Item>, Vec<Route>) {
    let n = d.vertices.len();
    let solid = |e: &usize| !d.edges[*e].dashed && d.edges[*e].from != d.edges[*e].to;
    let solid: Vec<usize> = (0..d.edges.len()).filter(solid).collect();
    let mut out = vec![Vec::new(); n];
    for &e in &solid {
        out[d.edges[e].from].push(e);
    }
    let (rank, pre) = rank(d, &out);
    let mut items: Vec<Item> = d
        .vertices
        .iter()
        .zip(&rank)
        .map(|(v, &r)| item(v, r))
        .collect();
    let mut key: Vec<(usize, usize)> = pre.iter().map(|&p| (p, 0)).collect();
    let mut routes = Vec::new();
    for (k, &e) in solid.iter().enumerate() {
        let (f, t) = (d.edges[e].from, d.edges[e].to);
        let (a, b) = if rank[f] < rank[t] { (f, t) } else { (t, f) };
        let mut chain = vec![a];
        for r in rank[a] + 1..rank[b] {
            chain.push(items.len());
            key.push((pre[a], k + 1));
            items.push(Item {
                rank: r,
                w: 6.0,
                h: 0.0,
                x: 0.0,
                y: 0.0,
            });
        }
        chain.push(b);
        routes.push(Route {
            edge: e,
            chain,
            rev: a != f,
        });
    }
    let marker = d.edges.iter().find(|e| e.dashed).map(|e| (e.from, e.to));
    let mut placed: Vec<usize> = (0..items.len())
        .filter(|&i| Some(i) != marker.map(|m| m.0))
        .collect();
    placed.sort_by_key(|&i| key[i]);
    let ranks = placed.iter().map(|&i| items[i].rank + 1).max().unwrap_or(0);
    let mut order = vec![Vec::new(); ranks];
    for i in placed {
        order[items[i].rank].push(i);
    }
    let (mut up, mut down) = (vec![Vec::new(); items.len()], vec![Vec::new(); items.len()]);
    for w in routes.iter().flat_map(|r| r.chain.windows(2)) {
        down[w[0]].push(w[1]);
        up[w[1]].push(w[0]);
    }
    // Barycentre sweeps down and up, keeping the order with fewest crossings.
    let mut best = (crossings(&order, &down), order.clone());
    for it in 0..8 {
        let mut pos = positions(&order);
        let nb = if it % 2 == 0 { &up } else { &down };
        for r in sweep(order.len(), it) {
            let bary = |i: usize| match nb[i].len() {
                0 => pos[&i],
                k => nb[i].iter().map(|j| pos[j]).sum::<f64>() / k as f64,
            };
            let mut keyed: Vec<(f64, f64, usize)> =
                order[r].iter().map(|&i| (bary(i), pos[&i], i)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            order[r] = keyed.into_iter().map(|k| k.2).collect();
            pos.extend(order[r].iter().enumerate().map(|(p, &i)| (i, p as f64)));
        }
        let c = crossings(&order, &down);
        if c < best.0 {
            best = (c, order.clone());
        }
    }
    order = best.1;
    // The agent-key marker sits beside the agent node, on the outer side.
    let marker = marker.map(|(m, t)| {
        let r = items[t].rank;
        items[m].rank = r;
        let p = order[r].iter().position(|&i| i == t).unwrap_or(0);
        let right = p * 2 + 1 >= order[r].len();
        order[r].insert(if right { p + 1 } else { p }, m);
        (m, t, if right { 1.0 } else { -1.0 })
    });
    assign_x(&mut items, &order, [&up, &down], marker);
    let mut y = 0.0;
    for rank in &order {
        let h = rank.iter().map(|&i| items[i].h).fold(0.0, f64::max);
        for &i in rank {
            items[i].y = y + h / 2.0;
        }
        y += h + RANK_GAP;
    }
    (items, routes)
}

fn positions(order: &[Vec<usize>]) -> BTreeMap<usize, f64> {
    let at = |rank: &Vec<usize>| {
        rank.iter()
            .enumerate()
            .map(|(p, &i)| (i, p as f64))
            .collect::<Vec<_>>()
    };
    order.iter().flat_map(at).collect()
}

/// Ranks top to bottom on even passes, bottom to top on odd ones.
fn sweep(n: usize, pass: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| if pass % 2 == 0 { k } else { n - 1 - k })
}

fn crossings(order: &[Vec<usize>], down: &[Vec<usize>]) -> usize {
    let pos = positions(order);
    let mut total = 0;
    for rank in order {
        let segs: Vec<(f64, f64)> = rank
            .iter()
            .flat_map(|i| down[*i].iter().map(|j| (pos[i], pos[j])))
            .collect();
        for (k, a) in segs.iter().enumerate() {
            total += segs[k + 1..]
                .iter()
                .filter(|b| (a.0 - b.0) * (a.1 - b.1) < 0.0)
                .count();
        }
    }
    total
}

/// Moves each box towards the mean of its neighbours, rank by rank (down,
/// up, then both ways), keeping the order and the gaps between boxes.
fn assign_x(
    items: &mut [Item],
    order: &[Vec<usize>],
    nb: [&[Vec<usize>]; 2],
    marker: Option<(usize, usize, f64)>,
) {
    let sep =
        |a: &Item, b: &Item| (a.w + b.w) / 2.0 + if a.h * b.h == 0.0 { DUMMY_GAP } else { GAP };
    for rank in order {
        for k in 1..rank.len() {
            items[rank[k]].x = items[rank[k - 1]].x + sep(&items[rank[k - 1]], &items[rank[k]]);
        }
    }
    for it in 0..14 {
        for rank in sweep(order.len(), it).map(|r| &order[r]) {
            let near = |i: usize| -> Vec<usize> {
                let [up, down] = nb;
                match it {
                    10.. => up[i].iter().chain(&down[i]).copied().collect(),
                    _ => nb[it % 2][i].clone(),
                }
            };
            let desired: Vec<f64> = rank
                .iter()
                .map(|&i| match (marker, near(i)) {
                    (Some((m, t, s)), _) if m == i => {
                        items[t].x + s * ((items[t].w + items[m].w) / 2.0 + GAP)
                    }
                    (_, nb) if nb.is_empty() => items[i].x,
                    (_, nb) => nb.iter().map(|&j| items[j].x).sum::<f64>() / nb.len() as f64,
                })
                .collect();
            // Dummies weigh more, which keeps long edges straight.
            let weight: Vec<f64> = rank
                .iter()
                .map(|&i| if items[i].h == 0.0 { 2.0 } else { 1.0 })
                .collect();
            let seps: Vec<f64> = rank
                .windows(2)
                .map(|w| sep(&items[w[0]], &items[w[1]]))
                .collect();
            for (&i, x) in rank.iter().zip(place(&desired, &seps, &weight)) {
                items[i].x = x;
            }
        }
    }
}

/// The positions nearest `desired` (weighted least squares) that keep the
/// order and the minimum centre distances `sep`: subtracting the running
/// offsets turns this into a monotone fit, which pool-adjacent-violators
/// solves exactly.
fn place(desired: &[f64], sep: &[f64], weight: &[f64]) -> Vec<f64> {
    let offsets: Vec<f64> = std::iter::once(0.0)
        .chain(sep.iter().scan(0.0, |acc, s| {
            *acc += s;
            Some(*acc)
        }))
        .collect();
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for ((d, o), &w) in desired.iter().zip(&offsets).zip(weight) {
        let mut b = (d - o, w, 1);
        while let Some(&(m, pw, c)) = blocks.last().filter(|last| last.0 > b.0) {
            blocks.pop();
            b = ((m * pw + b.0 * b.1) / (pw + b.1), pw + b.1, c + b.2);
        }
        blocks.push(b);
    }
    let fitted = blocks
        .iter()
        .flat_map(|&(m, _, c)| std::iter::repeat_n(m, c));
    fitted.zip(&offsets).map(|(m, o)| m + o).collect()
}

type Pt = (f64, f64);

fn pt(p: Pt) -> String {
    format!("{:.1},{:.1}", p.0, p.1)
}

fn bezier(s: &[Pt; 4], t: f64) -> Pt {
    let u = 1.0 - t;
    let k = [u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t];
    (
        s.iter().zip(k).map(|(p, k)| p.0 * k).sum(),
        s.iter().zip(k).map(|(p, k)| p.1 * k).sum(),
    )
}

/// Cubic segments through `pts` with vertical tangents, except where the
/// first or last control point is given (edges that use a box's side).
fn through(pts: &[Pt], first: Option<Pt>, last: Option<Pt>) -> Vec<[Pt; 4]> {
    let n = pts.len();
    let seg = |(k, w): (usize, &[Pt])| {
        let (a, b, dy) = (w[0], w[1], (w[1].1 - w[0].1) / 2.0);
        let c1 = first.filter(|_| k == 0).unwrap_or((a.0, a.1 + dy));
        let c2 = last.filter(|_| k == n - 2).unwrap_or((b.0, b.1 - dy));
        [a, c1, c2, b]
    };
    pts.windows(2).enumerate().map(seg).collect()
}

/// Where each edge is drawn: downward edges from the bottom of a box to the
/// top of the next, their ends spread along the box edge in the order of the
/// other end so that the fan out of a menu does not start in one point;
/// upward edges from side to side, so that they loop beside the boxes
/// instead of hiding behind the downward ones.
fn paths(d: &Diagram, items: &[Item], routes: &[Route]) -> Vec<(usize, Vec<[Pt; 4]>)> {
    let mut ports: BTreeMap<(usize, bool), Vec<(f64, usize)>> = BTreeMap::new();
    for (k, r) in routes.iter().enumerate().filter(|(_, r)| !r.rev) {
        let (c, n) = (&r.chain, r.chain.len());
        ports
            .entry((c[0], true))
            .or_default()
            .push((items[c[1]].x, k));
        ports
            .entry((c[n - 1], false))
            .or_default()
            .push((items[c[n - 2]].x, k));
    }
    let mut port_x = BTreeMap::new();
    for ((v, bottom), list) in &mut ports {
        list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let step = ((items[*v].w - 24.0) / list.len() as f64).min(16.0);
        for (k, &(_, route)) in list.iter().enumerate() {
            let off = (k as f64 - (list.len() - 1) as f64 / 2.0) * step;
            port_x.insert((route, *bottom), items[*v].x + off);
        }
    }
    let mut paths = Vec::new();
    for (k, r) in routes.iter().enumerate() {
        let mids: Vec<Pt> = r.chain[1..r.chain.len() - 1]
            .iter()
            .map(|&i| (items[i].x, items[i].y))
            .collect();
        let (top, bot) = (items[r.chain[0]], items[r.chain[r.chain.len() - 1]]);
        if !r.rev {
            let a = (
                port_x.get(&(k, true)).copied().unwrap_or(top.x),
                top.y + top.h / 2.0,
            );
            let z = (
                port_x.get(&(k, false)).copied().unwrap_or(bot.x),
                bot.y - bot.h / 2.0,
            );
            paths.push((
                r.edge,
                through(&[vec![a], mids, vec![z]].concat(), None, None),
            ));
            continue;
        }
        // Without dummies both ends use the side towards the target, which
        // keeps the loop clear of the downward edge between the same boxes.
        let side = |from: f64, to: f64| if to < from - 0.5 { -1.0 } else { 1.0 };
        let next = mids.last().map_or(top.x, |p| p.0);
        let (s1, s2) = match mids.first() {
            Some(p) => (side(bot.x, next), side(top.x, p.0)),
            None => (side(bot.x, top.x), side(bot.x, top.x)),
        };
        let a = (bot.x + s1 * bot.w / 2.0, bot.y - bot.h / 5.0);
        let z = (top.x + s2 * top.w / 2.0, top.y + top.h / 5.0);
        let pts = [vec![a], mids.into_iter().rev().collect(), vec![z]].concat();
        paths.push((
            r.edge,
            through(
                &pts,
                Some((a.0 + s1 * LOOP, a.1)),
                Some((z.0 + s2 * LOOP, z.1)),
            ),
        ));
    }
    for (e, edge) in d.edges.iter().enumerate() {
        let (f, t) = (items[edge.from], items[edge.to]);
        if edge.from == edge.to {
            let (x, y) = (f.x + f.w / 2.0, f.y);
            paths.push((
                e,
                vec![[
                    (x, y - 8.0),
                    (x + 36.0, y - 26.0),
                    (x + 36.0, y + 26.0),
                    (x, y + 8.0),
                ]],
            ));
        } else if edge.dashed {
            let s = if t.x > f.x { 1.0 } else { -1.0 };
            let (a, z) = ((f.x + s * f.w / 2.0, f.y), (t.x - s * t.w / 2.0, t.y));
            paths.push((
                e,
                vec![[a, (a.0 + s * 10.0, a.1), (z.0 - s * 10.0, z.1), z]],
            ));
        }
    }
    paths.sort_by_key(|p| p.0);
    paths
}

/// Bounds of the drawing: min x, min y, max x, max y.
struct Bounds(f64, f64, f64, f64);

impl Bounds {
    fn add(&mut self, (x, y): Pt) {
        *self = Bounds(self.0.min(x), self.1.min(y), self.2.max(x), self.3.max(y));
    }
}

fn svg(d: &Diagram) -> String {
    let (items, routes) = layout(d);
    let boxes = &items[..d.vertices.len()];
    let mut b = Bounds(0.0, 0.0, 200.0, 0.0);
    if !boxes.is_empty() {
        b = Bounds(f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    }
    for i in boxes {
        b.add((i.x - i.w / 2.0 - 4.0, i.y - i.h / 2.0 - 4.0));
        b.add((i.x + i.w / 2.0 + 4.0, i.y + i.h / 2.0 + 4.0));
    }
    let mut body = String::new();
    let mut labels: Vec<(f64, f64, f64, &str)> = Vec::new();
    for (e, segs) in paths(d, &items, &routes) {
        let edge = &d.edges[e];
        let mut path = format!("M{}", pt(segs[0][0]));
        for [_, c1, c2, z] in &segs {
            path += &format!(" C{} {} {}", pt(*c1), pt(*c2), pt(*z));
        }
        segs.iter().flatten().for_each(|&p| b.add(p));
        let style = match edge.dashed {
            true => format!("stroke=\"{AGENT}\" stroke-dasharray=\"5,4\""),
            false => "stroke=\"#555\"".to_string(),
        };
        body += &format!("<path class=\"edge\" d=\"{path}\" fill=\"none\" {style} stroke-width=\"1.3\" marker-end=\"url(#arrow)\"/>\n");
        if edge.label.is_empty() {
            continue;
        }
        // Near the middle of the edge's first stretch, wherever it does not
        // cover another label or a box.
        let w = edge.label.chars().count() as f64 * LABEL_CW + 8.0;
        let free = |(x, y): Pt| {
            let clear = |cx: f64, cy: f64, cw: f64, ch: f64| {
                (cx - x).abs() >= (cw + w) / 2.0 || (cy - y).abs() >= (ch + 14.0) / 2.0
            };
            labels.iter().all(|l| clear(l.0, l.1, l.2, 14.0))
                && boxes.iter().all(|i| clear(i.x, i.y, i.w + 4.0, i.h + 4.0))
        };
        let spots = [0.5, 0.35, 0.65, 0.22, 0.78].map(|t| bezier(&segs[0], t));
        let (x, mut y) = spots.into_iter().find(|&p| free(p)).unwrap_or(spots[0]);
        while !free((x, y)) && y < b.3 {
            y += 15.0;
        }
        b.add((x - w / 2.0, y - 8.0));
        b.add((x + w / 2.0, y + 8.0));
        labels.push((x, y, w, &edge.label));
    }
    for (v, i) in d.vertices.iter().zip(boxes) {
        body += &node_svg(v, i);
    }
    for (x, y, w, text) in labels {
        let (left, top, base, text) = (x - w / 2.0, y - 7.0, y + 3.5, xml(text));
        body += &format!("<g class=\"label\"><rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{w:.1}\" height=\"14\" rx=\"3\" fill=\"white\" fill-opacity=\"0.92\"/><text x=\"{x:.1}\" y=\"{base:.1}\" text-anchor=\"middle\" font-size=\"10\" fill=\"#333\">{text}</text></g>\n");
    }
    if let Some(i) = d.vertices.iter().position(|v| v.start).map(|i| boxes[i]) {
        let (x, top) = (i.x, i.y - i.h / 2.0);
        let (dot, from, to, tx, ty) = (top - 30.0, top - 25.0, top - 4.0, i.x + 9.0, top - 26.0);
        body += &format!("<g class=\"start\"><circle cx=\"{x:.1}\" cy=\"{dot:.1}\" r=\"5\" fill=\"#333\"/><path d=\"M{x:.1},{from:.1} L{x:.1},{to:.1}\" stroke=\"#333\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/><text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"10\" fill=\"#333\">start</text></g>\n");
        b.add((x, top - 36.0));
    }
    let title = xml(&d.title);
    let mut head = format!("<text font-size=\"14\" font-weight=\"bold\">{title}</text>");
    if let Some(desc) = &d.description {
        head += &format!(
            "<text y=\"16\" font-size=\"11\" fill=\"#666\">{}</text>",
            xml(desc)
        );
    }
    let (m, head_h) = (16.0, if d.description.is_some() { 44.0 } else { 28.0 });
    let text_w = d
        .description
        .as_deref()
        .map_or(0.0, |s| s.chars().count() as f64 * TEXT_CW);
    let w = (b.2 - b.0)
        .max(text_w)
        .max(d.title.chars().count() as f64 * 8.5)
        + 2.0 * m;
    let (h, dx, dy, head_y) = (
        b.3 - b.1 + 2.0 * m + head_h,
        m - b.0,
        m + head_h - b.1,
        m + 14.0,
    );
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" font-size=\"12\">\n<title>{title}</title>\n<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<g transform=\"translate({m},{head_y})\">{head}</g>\n<g transform=\"translate({dx:.1},{dy:.1})\">\n{body}</g>\n</svg>\n"
    )
}

fn node_svg(v: &Vertex, i: &Item) -> String {
    let (x, y, w, h, fill) = (i.x - i.w / 2.0, i.y - i.h / 2.0, i.w, i.h, fill(v.shape));
    let (class, id) = match v.shape {
        Shape::Node(_) => ("node", format!("node-{}", xml(&v.lines[0]))),
        Shape::Flow => ("flow", format!("flow-{}", &v.id[2..])),
        Shape::AgentKey => ("agent-key", "agent-key".to_string()),
    };
    let (stroke, sw) = if v.agent { (AGENT, 2.4) } else { ("#333", 1.2) };
    let (rx, dash) = match v.shape {
        Shape::AgentKey => (h / 2.0, " stroke-dasharray=\"4,3\""),
        _ => (6.0, ""),
    };
    let tip = xml(&v.lines.join(" · "));
    let mut s = format!("<g class=\"{class}\" id=\"{id}\"><title>{tip}</title>\n<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"{rx:.1}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"{dash}/>\n");
    if v.start {
        let (x, y, w, h) = (x - 3.5, y - 3.5, w + 7.0, h + 7.0);
        s += &format!("<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"8\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.2\"/>\n");
    }
    if v.shape == Shape::Flow {
        for x in [x + 6.0, x + w - 6.0] {
            s += &format!("<path d=\"M{x:.1},{y:.1} v{h:.1}\" stroke=\"#333\"/>\n");
        }
    }
    let (cx, mut y) = (i.x, y + PAD + 9.5);
    for (k, line) in v.lines.iter().enumerate() {
        let style = match k {
            0 if v.shape != Shape::AgentKey => " font-weight=\"bold\"",
            0 => " font-size=\"11\"",
            1 => " font-size=\"11\" font-style=\"italic\" fill=\"#666\"",
            _ => " font-size=\"11\"",
        };
        let text = xml(&if k == 0 {
            line.clone()
        } else {
            shown(line, DETAIL_MAX)
        });
        s += &format!(
            "<text x=\"{cx:.1}\" y=\"{y:.1}\" text-anchor=\"middle\"{style}>{text}</text>\n"
        );
        y += if k == 0 { 15.0 } else { 14.0 };
    }
    s + "</g>\n"
}
#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::flow::{load_paths, load_sources, LoadOptions};

    fn repo(p: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
    }

    fn options() -> LoadOptions {
        LoadOptions {
            prompts_dir: repo("prompts"),
        }
    }

    /// The shipped flows, the index of `support`, and its node names.
    fn shipped() -> (FlowSet, u32, Vec<String>) {
        let set = load_paths(&[repo("flows")], &options())
            .set
            .expect("the shipped flows load");
        let support = set.flow_index("support").expect("a support flow");
        let names = set
            .flow(support)
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .collect();
        (set, support, names)
    }

    /// A stack over start and end tags, with checks that `&` starts an
    /// entity and that quotes pair up: enough to catch unbalanced or
    /// unescaped output without an XML crate.
    fn check_xml(doc: &str) -> Result<(), String> {
        let (mut stack, mut roots, mut rest) = (Vec::<&str>::new(), 0, doc);
        let entities = ["amp;", "lt;", "gt;", "quot;", "apos;", "#"];
        while let Some(lt) = rest.find('<') {
            let gt = rest[lt..].find('>').ok_or("unclosed tag")? + lt;
            let (before, tag) = (&rest[..gt], &rest[lt + 1..gt]);
            for (k, _) in before.match_indices('&') {
                if !entities.iter().any(|e| before[k + 1..].starts_with(e)) {
                    return Err(format!("bare & in {before:?}"));
                }
            }
            if tag.contains('<') || tag.matches('"').count() % 2 == 1 {
                return Err(format!("bad tag {tag:?}"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop() != Some(name.trim()) {
                    return Err(format!("unbalanced </{name}>"));
                }
            } else if !tag.starts_with('?') && !tag.starts_with('!') {
                roots += usize::from(stack.is_empty());
                if !tag.ends_with('/') {
                    stack.push(tag.split_whitespace().next().unwrap_or(""));
                }
            }
            rest = &rest[gt + 1..];
        }
        match (stack.is_empty(), roots, rest.trim().is_empty()) {
            (true, 1, true) => Ok(()),
            _ => Err(format!("open at the end: {stack:?}, {roots} roots")),
        }
    }

    #[test]
    fn dot_names_every_node_and_key() {
        let (set, support, names) = shipped();
        let out = render(&set, support, Format::Dot);
        assert!(out.starts_with("digraph"), "{out}");
        for name in names {
            assert!(
                out.contains(&format!("\"n_{name}\" [label=\"{name}\\n")),
                "{name}:\n{out}"
            );
        }
        assert!(
            out.contains("\"n_main\" -> \"n_billing\" [label=\"1\"]"),
            "{out}"
        );
        assert!(out.contains("\"n_closed\" -> \"f_closed\";"), "{out}");
        assert!(out.contains("[label=\"→ flow closed\", fillcolor=\"#e6e0f8\", shape=component]"));
        assert!(out.contains("\"m_start\" -> \"n_welcome\""), "{out}");
        assert!(
            out.contains("\"m_agent\" -> \"n_to_agent\" [style=dashed"),
            "{out}"
        );
    }

    #[test]
    fn mermaid_names_every_node() {
        let (set, support, names) = shipped();
        let out = render(&set, support, Format::Mermaid);
        assert!(out.starts_with("flowchart TD"), "{out}");
        for name in names {
            assert!(
                out.contains(&format!("  n_{name}[\"{name}<br/>")),
                "{name}:\n{out}"
            );
        }
        assert!(out.contains("n_main -->|\"1\"| n_billing"), "{out}");
        assert!(out.contains("f_closed[[\"→ flow closed\"]]"), "{out}");
        assert!(out.contains("m_agent -.-> n_to_agent"), "{out}");
    }

    #[test]
    fn svg_is_well_formed_with_every_node() {
        let (set, support, names) = shipped();
        for flow in 0..set.flows.len() as u32 {
            let out = render(&set, flow, Format::Svg);
            check_xml(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
            assert!(
                out.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width="),
                "{out}"
            );
            assert!(out.contains(" viewBox=\"0 0 ") && out.contains("<marker id=\"arrow\""));
            assert!(out.contains(&format!("<title>{}</title>", set.flow(flow).name)));
        }
        let out = render(&set, support, Format::Svg);
        for name in names {
            let group = format!("<g class=\"node\" id=\"node-{name}\">");
            let at = out.find(&group).unwrap_or_else(|| panic!("{name}:\n{out}"));
            assert!(out[at..].contains(&format!("font-weight=\"bold\">{name}</text>")));
        }
        assert!(
            out.contains("<g class=\"flow\" id=\"flow-closed\">"),
            "{out}"
        );
        assert!(out.contains(">key 0 (any menu)</text>"), "{out}");
        assert_eq!(
            out,
            render(&set, support, Format::Svg),
            "the output is deterministic"
        );
        check_xml(&render(&set, 99, Format::Svg)).expect("a missing flow is still a picture");
        assert!(check_xml("<svg><g></svg>").is_err() && check_xml("<a>&b</a>").is_err());
    }

    #[test]
    fn escapes_condition_labels() {
        let yaml = r##"
flow: odd
start: check
nodes:
  check:
    switch:
      - when: { var: caller, equals: 'a"b' }
        goto: bye
      - when: { any: [{ var: called, gt: 5 }, { var: caller, starts_with: "<&'" }] }
        goto: bye
      - when: { var: caller, equals: "x\\ny" }
        goto: ask
    default: bye
  ask:
    menu: { prompt: main-menu, options: { "#": ask, "*": check } }
    on_fail: bye
  bye:
    hangup: {}
"##;
        let loaded = load_sources(&[(repo("flows/odd.yaml"), yaml.to_string())], &options());
        let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let set = loaded.set.expect("the flow is built");
        let dot = render(&set, 0, Format::Dot);
        let merged =
            r#"label="caller = \"a\"b\", (called > 5 or caller starts with \"<&'\"), default""#;
        assert!(dot.contains(merged), "{dot}");
        assert!(dot.contains(r#"label="caller = \"x\\ny\"""#), "{dot}");
        let mermaid = render(&set, 0, Format::Mermaid);
        assert!(
            mermaid.contains("|\"caller = #quot;a#quot;b#quot;, (called #gt; 5"),
            "{mermaid}"
        );
        assert!(mermaid.contains("n_ask -->|\"#35;\"| n_ask"), "{mermaid}");
        let svg = render(&set, 0, Format::Svg);
        check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        let text = "caller = &quot;a&quot;b&quot;, (called &gt; 5 or caller starts with &quot;&lt;&amp;&apos;&quot;)";
        assert!(svg.contains(text), "{svg}");
        // Merged labels, a self-loop and an upward edge: five paths.
        assert_eq!(svg.matches("class=\"edge\"").count(), 5, "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}
