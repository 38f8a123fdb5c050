//! Whole-set checks that need every flow compiled: variables read but never
//! set, unreachable nodes, and cycles that would spin without input.

use std::collections::HashSet;

use super::compile::VarRef;
use super::graph::{FlowSet, NodeKind, NodeRef};
use crate::diagnostic::Diagnostic;

/// Variables every call has without a flow setting them.
pub const BUILTIN_VARS: &[&str] = &["caller", "called", "call_id", "flow", "node", "path"];

/// `goto` without a node was compiled before the target flow's start was
/// known; point it at that start now.
pub(crate) fn resolve_flow_starts(set: &mut FlowSet) {
    let starts: Vec<u32> = set.flows.iter().map(|f| f.start).collect();
    for flow in &mut set.flows {
        for node in &mut flow.nodes {
            if let NodeKind::Goto { target } = &mut node.kind {
                if target.node == u32::MAX {
                    target.node = starts.get(target.flow as usize).copied().unwrap_or(0);
                }
            }
        }
    }
}

/// Every variable read must be set somewhere (a flow's `vars`, a `set` or a
/// `collect`), or be built in; a misspelt name would otherwise read as empty.
pub(crate) fn check_variables(set: &FlowSet, refs: &[VarRef], diags: &mut Vec<Diagnostic>) {
    let mut known: HashSet<&str> = BUILTIN_VARS.iter().copied().collect();
    // `wait_QUEUE` is provided by the server for every queue (estimated wait).
    let waits: Vec<String> = set
        .flows
        .iter()
        .flat_map(|f| f.queues.iter().map(|q| format!("wait_{}", q.name)))
        .collect();
    known.extend(waits.iter().map(String::as_str));
    for flow in &set.flows {
        known.extend(flow.vars.iter().map(|(n, _)| n.as_str()));
        for node in &flow.nodes {
            match &node.kind {
                NodeKind::Set { assignments, .. } => {
                    known.extend(assignments.iter().map(|(n, _)| n.as_str()))
                }
                NodeKind::Collect(c) => {
                    known.insert(c.into.as_str());
                }
                _ => {}
            }
        }
    }
    for r in refs {
        if !known.contains(r.name.as_str()) {
            diags.push(Diagnostic::error(
                &r.file,
                r.position,
                format!(
                    "variable `{}` is never set; set it with `set`, `collect` or the flow's `vars` (built in: {}, and wait_QUEUE for each queue)",
                    r.name,
                    BUILTIN_VARS.join(", ")
                ),
            ));
        }
    }
}

fn index(set: &FlowSet) -> (Vec<usize>, usize) {
    let mut offsets = Vec::with_capacity(set.flows.len());
    let mut total = 0;
    for f in &set.flows {
        offsets.push(total);
        total += f.nodes.len();
    }
    (offsets, total)
}

/// Nodes that no call can reach are reported as warnings. Every flow's
/// start and agent node are entry points (the server routes numbers to any
/// flow, and the agent key works from every menu).
pub(crate) fn check_reachability(set: &FlowSet, diags: &mut Vec<Diagnostic>) {
    let (offsets, total) = index(set);
    let id = |r: NodeRef| offsets[r.flow as usize] + r.node as usize;
    let mut seen = vec![false; total];
    let mut stack: Vec<NodeRef> = Vec::new();
    for (fi, flow) in set.flows.iter().enumerate() {
        stack.push(NodeRef {
            flow: fi as u32,
            node: flow.start,
        });
        if let Some((_, agent)) = flow.agent {
            stack.push(agent);
        }
    }
    while let Some(r) = stack.pop() {
        if (r.node as usize) >= set.flow(r.flow).nodes.len() || seen[id(r)] {
            continue;
        }
        seen[id(r)] = true;
        stack.extend(set.node(r).kind.edges().into_iter().map(|(_, t)| t));
    }
    for (fi, flow) in set.flows.iter().enumerate() {
        for (ni, node) in flow.nodes.iter().enumerate() {
            if !seen[offsets[fi] + ni] {
                diags.push(Diagnostic::warning(
                    &flow.file,
                    node.position,
                    format!(
                        "node `{}` cannot be reached from the flow's start",
                        node.name
                    ),
                ));
            }
        }
    }
}

/// A cycle made only of nodes that do not wait (play, switch, set, goto)
/// would run forever without the caller doing anything: refused at load.
/// Found as strongly connected components (Kosaraju, iterative).
pub(crate) fn check_spin_loops(set: &FlowSet, diags: &mut Vec<Diagnostic>) {
    let (offsets, total) = index(set);
    let mut refs = Vec::with_capacity(total);
    for (fi, flow) in set.flows.iter().enumerate() {
        for ni in 0..flow.nodes.len() {
            refs.push(NodeRef {
                flow: fi as u32,
                node: ni as u32,
            });
        }
    }
    let id = |r: NodeRef| offsets[r.flow as usize] + r.node as usize;
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); total];
    let mut inn: Vec<Vec<usize>> = vec![Vec::new(); total];
    for (i, &r) in refs.iter().enumerate() {
        let kind = &set.node(r).kind;
        if kind.waits() {
            continue;
        }
        for (_, t) in kind.edges() {
            if (t.node as usize) < set.flow(t.flow).nodes.len() && !set.node(t).kind.waits() {
                out[i].push(id(t));
                inn[id(t)].push(i);
            }
        }
    }

    // First pass: finishing order.
    let mut visited = vec![false; total];
    let mut order = Vec::with_capacity(total);
    for s in 0..total {
        if visited[s] {
            continue;
        }
        visited[s] = true;
        let mut stack = vec![(s, 0usize)];
        while let Some((v, i)) = stack.pop() {
            if i < out[v].len() {
                stack.push((v, i + 1));
                let w = out[v][i];
                if !visited[w] {
                    visited[w] = true;
                    stack.push((w, 0));
                }
            } else {
                order.push(v);
            }
        }
    }
    // Second pass on the reversed graph: components.
    let mut comp = vec![usize::MAX; total];
    let mut components: Vec<Vec<usize>> = Vec::new();
    for &s in order.iter().rev() {
        if comp[s] != usize::MAX {
            continue;
        }
        let c = components.len();
        let mut members = vec![s];
        comp[s] = c;
        let mut stack = vec![s];
        while let Some(v) = stack.pop() {
            for &w in &inn[v] {
                if comp[w] == usize::MAX {
                    comp[w] = c;
                    members.push(w);
                    stack.push(w);
                }
            }
        }
        components.push(members);
    }
    for mut members in components {
        let cyclic = members.len() > 1 || out[members[0]].contains(&members[0]);
        if !cyclic {
            continue;
        }
        members.sort_unstable();
        let first = refs[members[0]];
        let names: Vec<String> = members
            .iter()
            .map(|&m| {
                let r = refs[m];
                if r.flow == first.flow {
                    set.node(r).name.clone()
                } else {
                    set.qualified_name(r)
                }
            })
            .collect();
        let flow = set.flow(first.flow);
        diags.push(Diagnostic::error(
            &flow.file,
            set.node(first).position,
            format!(
                "nodes {} form a loop that never waits for the caller; a call would spin here. Add a menu or collect to the loop, or end it",
                names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
}
