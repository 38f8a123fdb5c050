//! The text of all three formats, for the shipped flows and for names and
//! conditions that need escaping.

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
        out.contains("\"m_agent\" -> \"n_check_wait\" [style=dashed"),
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
    assert!(out.contains("m_agent -.-> n_check_wait"), "{out}");
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
