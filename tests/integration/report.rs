//! `callflow report` on generated records of the shipped support flow,
//! from two nodes' files: the figures it prints are the ones the generator
//! knows, and its HTML is opened in a real browser (Debian's chromium,
//! headless) and photographed.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::repo;

/// What the generator made, to hold the report against.
#[derive(Default)]
struct Known {
    calls: u64,
    contained: u64,
    abandoned: u64,
    transferred: u64,
    callbacks: u64,
    agent_key: u64,
    invalid_calls: u64,
    no_input_calls: u64,
    hung_up_at_main: u64,
    billing_transferred: u64,
    tech_failed: u64,
    to_agent: Vec<u64>,
}

/// One call of journey `kind` (0..10), starting `i` seconds into the day.
fn call(i: u64, kind: u64, known: &mut Known) -> Value {
    let start = chrono::DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
        .expect("time")
        .to_utc()
        + chrono::Duration::seconds(i as i64);
    let at = |s: u64| {
        (start + chrono::Duration::seconds(s as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let head = ["support.welcome", "support.hours", "support.main"];
    let mut nodes: Vec<&str> = head.to_vec();
    let mut inputs = Vec::new();
    let mut failed = Vec::new();
    let (outcome, detail, length) = match kind {
        // Billing by menu: reached an agent after 20-29 s.
        0..=2 => {
            nodes.extend(["support.billing", "support.to_billing"]);
            inputs.push(json!({"at": "support.main", "input": "key", "key": "1"}));
            known.billing_transferred += 1;
            ("transferred", "billing", 20 + i % 10)
        }
        // Hung up at the menu, after a silence.
        3 | 4 => {
            inputs.push(json!({"at": "support.main", "input": "no_input"}));
            known.no_input_calls += 1;
            known.hung_up_at_main += 1;
            ("caller_hung_up", "support.main", 12)
        }
        // The agent key at the menu: general, after 40 s.
        5 => {
            nodes.extend(["support.check_wait", "support.to_agent"]);
            inputs.push(json!({"at": "support.main", "input": "agent_key"}));
            known.agent_key += 1;
            ("transferred", "general", 40)
        }
        // A wrong key, then the agent key, then a callback.
        6 => {
            nodes.extend([
                "support.check_wait",
                "support.mark_offered",
                "support.offer_callback",
                "support.goodbye",
            ]);
            inputs.push(json!({"at": "support.main", "input": "invalid", "key": "7"}));
            inputs.push(json!({"at": "support.main", "input": "agent_key"}));
            known.invalid_calls += 1;
            known.agent_key += 1;
            ("callback_requested", "general", 50)
        }
        // Hung up during the welcome.
        7 => {
            nodes.truncate(1);
            ("caller_hung_up", "support.welcome", 3)
        }
        // Tech refused (busy), the offer declined, general took it at 90 s.
        8 => {
            nodes.extend([
                "support.tech",
                "support.to_tech",
                "support.mark_offered",
                "support.offer_callback",
                "support.agent_again",
            ]);
            inputs.push(json!({"at": "support.main", "input": "key", "key": "2"}));
            failed.push(json!({"target": "tech", "reason": "486 Busy Here"}));
            known.tech_failed += 1;
            ("transferred", "general", 90)
        }
        // Closed: the flow's end.
        _ => {
            nodes.truncate(2);
            nodes.push("support.closed");
            ("completed", "support.closed", 8)
        }
    };
    known.calls += 1;
    match outcome {
        "transferred" => {
            known.transferred += 1;
            known.to_agent.push(length);
        }
        "caller_hung_up" => known.abandoned += 1,
        "callback_requested" => known.callbacks += 1,
        _ => known.contained += 1,
    }
    let digits: String = inputs
        .iter()
        .map(|i| match i["input"].as_str() {
            Some("agent_key") => "0".to_string(),
            _ => i["key"].as_str().unwrap_or("").to_string(),
        })
        .collect();
    let mut record = json!({
        "call_id": format!("gen-{i}"), "from": "<sip:+37120000000@trunk>;tag=1",
        "to": "<sip:8000@ivr>", "caller": "+37120000000", "called": "8000",
        "flow": "support", "start": at(0), "answer": at(0), "end": at(length),
        "nodes": nodes, "digits": digits, "outcome": outcome, "detail": detail,
        "node": if i % 2 == 0 { "node-a" } else { "node-b" },
    });
    if !inputs.is_empty() {
        record["inputs"] = json!(inputs);
    }
    if !failed.is_empty() {
        record["failed_transfers"] = json!(failed);
    }
    record
}

/// Two nodes' record files: 500 calls in a pattern of journeys.
fn generate(dir: &Path) -> (Vec<String>, Known) {
    let mut known = Known::default();
    let mut files = [String::new(), String::new()];
    for i in 0..500 {
        // Journeys in a shuffled but fixed order.
        let kind = (i * 7 + i / 10) % 10;
        let record = call(i, kind, &mut known);
        files[(i % 2) as usize] += &format!("{record}\n");
    }
    let paths: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(n, text)| {
            let path = dir.join(format!("calls-{n}.jsonl"));
            std::fs::write(&path, text).expect("write records");
            path.display().to_string()
        })
        .collect();
    (paths, known)
}

fn report(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_callflow"))
        .current_dir(repo(""))
        .arg("report")
        .args(args)
        .output()
        .expect("run callflow report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_report_of_two_nodes_records_has_the_known_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (files, known) = generate(dir.path());
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    args.extend(["--format", "json"]);
    let r: Value = serde_json::from_str(&report(&args)).expect("JSON");
    assert_eq!(r["calls"], known.calls);
    assert_eq!(r["by_node"]["node-a"]["calls"], 250);
    assert_eq!(r["by_node"]["node-b"]["calls"], 250);
    let f = &r["flows"][0];
    assert_eq!(f["flow"], "support");
    for (field, value) in [
        ("calls", known.calls),
        ("contained", known.contained),
        ("abandoned", known.abandoned),
        ("transferred", known.transferred),
        ("callbacks", known.callbacks),
        ("agent_key_calls", known.agent_key),
        ("invalid_input_calls", known.invalid_calls),
        ("no_input_calls", known.no_input_calls),
    ] {
        assert_eq!(f[field], value, "{field}");
    }
    let share = |n: u64| (n as f64 / known.calls as f64 * 10_000.0).round() / 10_000.0;
    assert_eq!(f["containment"], share(known.contained));
    assert_eq!(f["abandonment"], share(known.abandoned));
    assert_eq!(f["nodes"]["support.main"]["hung_up"], known.hung_up_at_main);
    assert_eq!(
        f["queues"]["billing"]["transferred"],
        known.billing_transferred
    );
    assert_eq!(f["queues"]["tech"]["failed"], known.tech_failed);
    let mut waits = known.to_agent.clone();
    waits.sort();
    let rank = |p: f64| waits[((p * waits.len() as f64).ceil() as usize).max(1) - 1] as f64;
    assert_eq!(f["time_to_agent"]["median_seconds"], rank(0.5));
    assert_eq!(f["time_to_agent"]["p90_seconds"], rank(0.9));

    // Narrowed to the last ten minutes of calls, and as text.
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    args.extend(["--since", "2026-12-01T08:06:40Z"]);
    let text = report(&args);
    assert!(
        text.starts_with("100 calls, 2026-12-01T08:06:40.000Z to 2026-12-01T08:08:19.000Z"),
        "{text}"
    );
    let (status, _) = {
        let out = Command::new(env!("CARGO_BIN_EXE_callflow"))
            .args(["report", "--since", "last week"])
            .arg(&files[0])
            .output()
            .expect("run");
        (out.status, out.stderr)
    };
    assert!(!status.success(), "a bad --since is refused");
}

/// The HTML page, opened in headless Chromium: the flow is drawn with its
/// figures. The screenshot is kept beside the records for a person to
/// look at (`CALLFLOW_REPORT_SHOT=path` copies it out).
#[test]
fn the_html_report_renders_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (files, _) = generate(dir.path());
    let page = dir.path().join("report.html");
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    args.extend(["--format", "html", "-o", page.to_str().expect("path")]);
    report(&args);
    let html = std::fs::read_to_string(&page).expect("the page");
    assert!(html.contains("<svg"), "the support flow is drawn");
    assert!(html.contains("hung up ("), "with where callers hung up");
    let shot = dir.path().join("report.png");
    let profile = dir.path().join("chromium-profile");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium (apt-get install -y chromium)");
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    // Width and height from the IHDR chunk.
    let dim = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    assert_eq!((dim(16), dim(20)), (1400, 2400));
    // A blank page compresses to almost nothing; boxes, text and arrows
    // do not.
    assert!(
        png.len() > 40_000,
        "the page has content: {} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("CALLFLOW_REPORT_SHOT") {
        std::fs::copy(&shot, keep).expect("copy the screenshot");
    }
}
