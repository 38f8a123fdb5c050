//! The SVG picture: edges routed around the laid-out boxes as curves, and
//! the markup for boxes, labels and the title.

use std::collections::BTreeMap;

use super::layout::{layout, Item, Route};
use super::{escape, fill, shown, Diagram, Shape, Vertex, AGENT, DETAIL_MAX, PAD, TEXT_CW};

/// The outline of a flagged box.
const FLAGGED: &str = "#c62828";

/// Character width in edge labels, which are smaller than box text but in
/// the same monospace font.
const LABEL_CW: f64 = 6.1;
/// How far an upward edge swings out beside the boxes it joins.
const LOOP: f64 = 46.0;

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

pub(super) fn svg(d: &Diagram) -> String {
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
    let (stroke, sw) = match (v.flagged, v.agent) {
        (true, _) => (FLAGGED, 2.8),
        (false, true) => (AGENT, 2.4),
        (false, false) => ("#333", 1.2),
    };
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
