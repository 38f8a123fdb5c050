//! The `callflow` binary as admins run it.

use std::process::{Command, Output};

use crate::common::repo;

fn callflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callflow"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("run callflow")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_shipped_flows() {
    let out = callflow(&["check", "flows"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: 3 flow(s)"));
}

#[test]
fn check_reports_problems_with_position_and_fails() {
    let out = callflow(&[
        "check",
        "tests/broken/04-unknown-target.yaml",
        "tests/broken/13-spin-loop.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("tests/broken/04-unknown-target.yaml:6:11: error: `mian` is not a node of flow `target`"), "{err}");
    assert!(
        err.contains("tests/broken/13-spin-loop.yaml:4:3: error: nodes `a`, `b` form a loop"),
        "{err}"
    );
    assert!(err.contains("2 error(s), 1 warning(s)"), "{err}");
}

#[test]
fn check_strict_fails_on_warnings() {
    let path = "tests/broken/14-unreachable-node.yaml";
    assert!(callflow(&["check", path]).status.success());
    assert_eq!(
        callflow(&["check", "--strict", path]).status.code(),
        Some(1)
    );
}

#[test]
fn simulate_prints_a_transcript_of_the_readme_journey() {
    let out = callflow(&[
        "simulate",
        "flows/support.yaml",
        "--at",
        "2026-11-25T10:00",
        "--tz",
        "Europe/Riga",
        "--input",
        "3, 12345678#",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("account = 12345678"), "{t}");
    assert!(t.ends_with("END: transferred to accounts\n"), "{t}");
}

#[test]
fn simulate_refuses_a_bad_script_with_a_reason() {
    let out = callflow(&["simulate", "flows/support.yaml", "--input", "1, press 2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("input item 2 `press 2`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn graph_renders_every_format() {
    for (format, start) in [
        ("dot", "digraph"),
        ("mermaid", "flowchart"),
        ("svg", "<svg"),
    ] {
        let out = callflow(&["graph", "support", "--format", format]);
        assert!(out.status.success(), "{format}: {}", text(&out.stderr));
        let t = text(&out.stdout);
        assert!(t.contains(start), "{format}: {t}");
        for node in [
            "welcome",
            "hours",
            "main",
            "account",
            "to_agent",
            "offer_callback",
            "goodbye",
        ] {
            assert!(t.contains(node), "{format} names {node}");
        }
    }
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let out = callflow(&["schema"]);
    let committed = std::fs::read_to_string(repo("flows/schema.json")).unwrap();
    assert_eq!(text(&out.stdout), committed);
}
