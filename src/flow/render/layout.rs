//! Where the SVG's boxes go: ranks by longest path, an order within each
//! rank with few crossings, then x and y coordinates.

use std::collections::BTreeMap;

use super::{shown, Diagram, Shape, Vertex, DETAIL_MAX, NAME_CW, PAD, TEXT_CW};

const RANK_GAP: f64 = 62.0;
const GAP: f64 = 34.0;
const DUMMY_GAP: f64 = 12.0;

/// A laid-out box (`x`, `y` its centre): a vertex, or a dummy point (no
/// height) that a long edge passes through so that it runs between boxes
/// rather than across them.
#[derive(Clone, Copy)]
pub(super) struct Item {
    rank: usize,
    pub(super) w: f64,
    pub(super) h: f64,
    pub(super) x: f64,
    pub(super) y: f64,
}

/// An edge as a chain of items from the upper rank to the lower; `rev`
/// when the edge itself points upwards.
pub(super) struct Route {
    pub(super) edge: usize,
    pub(super) chain: Vec<usize>,
    pub(super) rev: bool,
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

pub(super) fn layout(d: &Diagram) -> (Vec<Item>, Vec<Route>) {
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
