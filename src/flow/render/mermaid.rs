//! A Mermaid flowchart, which GitHub and many wikis draw inline.

use super::{escape, fill, Diagram, Shape, AGENT};

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

pub(super) fn mermaid(d: &Diagram) -> String {
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
