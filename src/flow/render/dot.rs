//! Graphviz DOT, for `dot -Tpng` and the other tools that read it.

use super::{escape, fill, Diagram, Shape, AGENT};

fn dot_char(c: char) -> Option<&'static str> {
    Some(match c {
        '"' => "\\\"",
        '\\' => "\\\\",
        '\n' => "\\n",
        '\r' => "",
        _ => return None,
    })
}

pub(super) fn dot(d: &Diagram) -> String {
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
