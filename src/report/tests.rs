//! The report on a generated record file whose answers are known.

use super::*;
use serde_json::json;

/// A record of flow `flow` starting `second` seconds into the day, on
/// server node `node`, with `outcome` and `detail`.
fn record(flow: &str, node: &str, second: u32, outcome: &str, detail: &str) -> serde_json::Value {
    let start = format!("2026-12-01T10:{:02}:{:02}.000Z", second / 60, second % 60);
    json!({
        "call_id": format!("c{second}"),
        "from": "<sip:1@a>", "to": "<sip:2@b>", "caller": "1", "called": "2",
        "flow": flow, "start": start, "answer": start, "end": start,
        "nodes": [format!("{flow}.welcome"), format!("{flow}.menu")],
        "digits": "", "outcome": outcome, "detail": detail, "node": node,
    })
}

/// Sets the end `seconds` after the start.
fn ends_after(r: &mut serde_json::Value, field: &str, seconds: u32) {
    let start = parse_time(r["start"].as_str().unwrap()).unwrap();
    let end = start + chrono::Duration::seconds(i64::from(seconds));
    r[field] = json!(crate::call::record::timestamp(end));
}

/// Ten calls of `support` and two of `sales`, a torn line and a blank one.
fn corpus() -> String {
    let mut lines = Vec::new();
    // 4 contained: two pressed 1 at the menu and went to hours.
    for s in 0..4 {
        let mut r = record("support", "a", s, "completed", "support.hours");
        if s < 2 {
            r["nodes"] = json!(["support.welcome", "support.menu", "support.hours"]);
            r["digits"] = json!("1");
            r["inputs"] = json!([{"at": "support.menu", "input": "key", "key": "1"}]);
        }
        lines.push(r);
    }
    // 3 hung up at the menu; one pressed a wrong key twice, one was silent
    // three times.
    for s in 4..7 {
        let mut r = record("support", "b", s, "caller_hung_up", "support.menu");
        if s == 4 {
            r["digits"] = json!("99");
            r["inputs"] = json!([
                {"at": "support.menu", "input": "invalid", "key": "9"},
                {"at": "support.menu", "input": "invalid", "key": "9"},
            ]);
        }
        if s == 5 {
            r["inputs"] = json!([
                {"at": "support.menu", "input": "no_input"},
                {"at": "support.menu", "input": "no_input"},
                {"at": "support.menu", "input": "no_input"},
            ]);
        }
        lines.push(r);
    }
    // 2 reached billing's agents: one bridged (30 s to the agent's answer)
    // after a busy first try, one by REFER (10 s to the transfer's end)
    // with the agent key.
    let mut r = record("support", "a", 7, "transferred", "billing");
    r["nodes"] = json!(["support.welcome", "support.menu", "support.agent"]);
    r["handoff"] = json!("bridge");
    ends_after(&mut r, "agent_answer", 30);
    ends_after(&mut r, "end", 200);
    r["failed_transfers"] = json!([{"target": "billing", "reason": "486 Busy Here"}]);
    r["digits"] = json!("2");
    r["inputs"] = json!([{"at": "support.menu", "input": "key", "key": "2"}]);
    lines.push(r);
    let mut r = record("support", "b", 8, "transferred", "billing");
    r["nodes"] = json!(["support.welcome", "support.menu", "support.agent"]);
    ends_after(&mut r, "end", 10);
    r["digits"] = json!("0");
    r["inputs"] = json!([{"at": "support.menu", "input": "agent_key"}]);
    lines.push(r);
    // 1 booked a callback.
    lines.push(record("support", "a", 9, "callback_requested", "billing"));
    // 2 calls of another flow, one of them an hour later.
    lines.push(record("sales", "a", 10, "completed", "sales.menu"));
    let mut late = record("sales", "a", 10, "completed", "sales.menu");
    late["start"] = json!("2026-12-01T11:00:10.000Z");
    lines.push(late);
    let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    text.push('\n');
    text.push_str("{\"call_id\":\"torn\",\"flo");
    text
}

#[test]
fn the_figures_of_a_known_corpus() {
    let report = build(
        [("calls.jsonl".to_string(), corpus().as_bytes())],
        &Filter::default(),
    )
    .unwrap();
    assert_eq!(report.calls, 12);
    assert_eq!(report.skipped_lines, 1);
    assert!(
        report
            .first_skipped
            .as_deref()
            .unwrap()
            .starts_with("calls.jsonl:14:"),
        "{:?}",
        report.first_skipped
    );
    assert_eq!(report.by_node["a"].calls, 8);
    assert_eq!(report.by_node["b"].calls, 4);
    assert_eq!(
        report.first_call.as_deref(),
        Some("2026-12-01T10:00:00.000Z")
    );
    assert_eq!(
        report.last_call.as_deref(),
        Some("2026-12-01T11:00:10.000Z")
    );

    let names: Vec<&str> = report.flows.iter().map(|f| f.flow.as_str()).collect();
    assert_eq!(names, ["sales", "support"]);
    let f = &report.flows[1];
    assert_eq!(
        f.headline,
        Headline {
            calls: 10,
            contained: 4,
            abandoned: 3,
            transferred: 2,
            callbacks: 1,
            failed: 0,
        }
    );
    assert_eq!((f.containment, f.abandonment), (0.4, 0.3));
    assert_eq!(f.by_node["a"].calls, 6);
    assert_eq!(f.by_node["b"].abandoned, 3);
    assert_eq!(
        f.queues["billing"],
        QueueFigures {
            transferred: 2,
            failed: 1,
            callbacks: 1,
        }
    );
    assert_eq!(
        f.time_to_agent,
        Some(Spread {
            calls: 2,
            median_seconds: 10.0,
            p90_seconds: 30.0,
        })
    );
    assert_eq!((f.agent_key_calls, f.agent_key_rate), (1, 0.1));
    assert_eq!(f.keys_pressed, 6);
    assert_eq!((f.invalid_input_calls, f.invalid_input_rate), (1, 0.1));
    assert_eq!((f.no_input_calls, f.no_input_rate), (1, 0.1));
    let menu = &f.nodes["support.menu"];
    assert_eq!(menu.calls, 10);
    assert_eq!(menu.hung_up, 3);
    assert_eq!(menu.keys, BTreeMap::from([('1', 2), ('2', 1)]));
    assert_eq!((menu.invalid, menu.no_input, menu.agent_key), (2, 3, 1));
    assert_eq!(f.nodes["support.hours"].calls, 2);
    assert_eq!(
        f.transitions[0],
        Transition {
            from: "support.welcome".into(),
            to: "support.menu".into(),
            calls: 10,
        }
    );
    assert_eq!(
        f.transitions[1],
        Transition {
            from: "support.menu".into(),
            to: "support.agent".into(),
            calls: 2,
        }
    );
}

/// A line torn inside a UTF-8 character is skipped, not the end of the
/// report.
#[test]
fn a_line_that_is_not_utf8_is_skipped() {
    let mut bytes = corpus().into_bytes();
    bytes.extend_from_slice(b"\n{\"flow\":\"x\xc3");
    bytes.extend_from_slice(b"\n");
    bytes.extend_from_slice(corpus().lines().next().unwrap().as_bytes());
    let report = build(
        [("calls.jsonl".to_string(), &bytes[..])],
        &Filter::default(),
    )
    .unwrap();
    assert_eq!(report.calls, 13);
    assert_eq!(report.skipped_lines, 2);
}

#[test]
fn since_and_flow_narrow_the_calls() {
    let since = parse_since("2026-12-01T10:30:00Z", now()).unwrap();
    let filter = Filter {
        since: Some(since),
        flow: None,
    };
    let report = build([("calls.jsonl".to_string(), corpus().as_bytes())], &filter).unwrap();
    assert_eq!(report.calls, 1);
    let filter = Filter {
        since: None,
        flow: Some("support".into()),
    };
    let report = build([("calls.jsonl".to_string(), corpus().as_bytes())], &filter).unwrap();
    assert_eq!(report.calls, 10);
    assert_eq!(report.flows.len(), 1);
}

/// "Now", fixed: the library never reads the clock.
fn now() -> DateTime<Utc> {
    parse_time("2026-12-02T00:00:00Z").unwrap()
}

#[test]
fn since_takes_a_time_a_date_or_an_age() {
    let now = now();
    let at = |s| parse_since(s, now).map(crate::call::record::timestamp);
    assert_eq!(
        at("2026-12-01T12:00:00+02:00").unwrap(),
        "2026-12-01T10:00:00.000Z"
    );
    assert_eq!(at("2026-11-30").unwrap(), "2026-11-30T00:00:00.000Z");
    assert_eq!(at("36h").unwrap(), "2026-11-30T12:00:00.000Z");
    assert_eq!(at("7d").unwrap(), "2026-11-25T00:00:00.000Z");
    assert!(at("7w").is_err());
    assert!(at("yesterday").is_err());
    assert!(at("99999999999999d").is_err());
}

#[test]
fn text_json_and_html_say_the_same() {
    let report = build(
        [("calls.jsonl".to_string(), corpus().as_bytes())],
        &Filter::default(),
    )
    .unwrap();
    let text = report.to_text();
    assert!(text.contains("flow support: 10 calls: 4 contained, 3 abandoned, 2 transferred, 1 callbacks, 0 failed"), "{text}");
    assert!(
        text.contains("containment 40.0%  abandonment 30.0%"),
        "{text}"
    );
    assert!(
        text.contains("time to an agent: median 10.0 s, p90 30.0 s (2 calls)"),
        "{text}"
    );
    assert!(
        text.contains("queue billing: 2 transferred, 1 transfers failed, 1 callbacks"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["flows"][1]["containment"], 0.4);
    assert_eq!(json["flows"][1]["nodes"]["support.menu"]["keys"]["1"], 2);
    let html = report.to_html(None, Some("flows not loaded: <none>"));
    assert!(html.contains("<h2>Flow support</h2>"));
    assert!(html.contains("flows not loaded: &lt;none&gt;"), "escaped");
    assert!(html.contains("No diagram"));
}

/// The HTML draws a loaded flow with its figures: counts on the boxes,
/// on the arrows and on the agent key, and the box where callers give up
/// flagged.
#[test]
fn the_html_draws_the_figures_on_the_flow() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("support.yaml"),
        "flow: support\nstart: welcome\nagent_key: \"0\"\nagent: agent\n\
         queues:\n  billing: { uri: \"sip:billing@acd.example.net\" }\n\
         nodes:\n  welcome:\n    play: digit-1\n    next: menu\n  menu:\n    menu: { prompt: digit-2, options: { \"1\": hours, \"2\": agent } }\n    on_fail: hours\n\
         \x20 hours:\n    hangup: { prompt: digit-3 }\n  agent:\n    transfer: { queue: billing }\n    on_fail: hours\n",
    )
    .unwrap();
    let loaded = crate::flow::load_paths(
        &[dir.path().to_path_buf()],
        &crate::flow::LoadOptions {
            prompts_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts"),
        },
    );
    let (set, _) = loaded.into_result().expect("the flow loads");
    let report = build(
        [("calls.jsonl".to_string(), corpus().as_bytes())],
        &Filter::default(),
    )
    .unwrap();
    let html = report.to_html(Some(&set), None);
    assert!(html.contains("<svg"), "a diagram");
    assert!(html.contains("10 calls"), "visits on the boxes");
    assert!(html.contains("3 hung up (30.0%)"), "{html}");
    assert!(html.contains("2 invalid, 3 silent"));
    // The arrow from the welcome to the menu, and the agent key's.
    assert!(html.contains(">10 calls<"), "{html}");
    assert!(html.contains(">1 call<"), "{html}");
    assert!(html.contains("stroke=\"#c62828\""), "the menu is flagged");
    assert!(html.contains("No diagram"), "sales is not loaded");
}
