//! Interpreter events per second, and the load time of a 1,000-node flow.
//!
//! `cargo bench --bench flow`. Report figures as ratios or with the machine
//! named: these machines are shared and noisy.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use callflow::flow::interpreter::{Action, CallInfo, Event, Interpreter};
use callflow::flow::{load_sources, FlowSet, LoadOptions};

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn options() -> LoadOptions {
    LoadOptions {
        prompts_dir: repo("prompts"),
    }
}

/// A call that goes through play, switch, menu (one wrong key), collect and
/// transfer: the common shape of a real IVR call.
const FLOW: &str = r#"
flow: bench
start: welcome
agent_key: "0"
agent: agent
vars: { intent: general }
queues: { general: { uri: "sip:general@acd.example.net", priority: 5 } }
schedules:
  office: { timezone: Europe/Riga, open: { mon-fri: "08:00-20:00" }, closed_dates: [2026-12-25] }
lists: { vip: vip.csv }
nodes:
  welcome: { play: welcome, next: hours }
  hours:
    switch:
      - { when: { not: { open: office } }, goto: agent }
      - { when: { caller_in: vip }, goto: agent }
    default: main
  main:
    menu: { prompt: main-menu, options: { "1": account, "2": agent }, invalid: invalid-choice }
    on_fail: agent
  account:
    collect: { prompt: enter-account, into: account, min: 6, max: 10 }
    next: mark
  mark: { set: { intent: account }, next: agent }
  agent:
    transfer: { queue: general, context: { intent: "${intent}", account: "${account}", path: "${path}" } }
    on_fail: bye
  bye: { hangup: {} }
"#;

fn bench_interpreter(c: &mut Criterion) {
    let loaded = load_sources(&[(repo("flows/bench.yaml"), FLOW.to_string())], &options());
    let set: Arc<FlowSet> = Arc::new(loaded.into_result().expect("bench flow loads").0);
    let entry = set.start_of("bench").expect("start");
    #[allow(clippy::disallowed_methods)] // a benchmark is an IO edge
    let t0 = Instant::now();
    let wall = Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap();
    let digits = ['9', '1', '1', '2', '3', '4', '5', '6', '7', '#'];
    // Start, welcome finished, menu prompt finished, ten keys, transfer result.
    let events_per_call = 1 + 1 + 1 + digits.len() as u64 + 1;
    let mut group = c.benchmark_group("interpreter");
    group.throughput(Throughput::Elements(events_per_call));
    group.bench_function("call_events", |b| {
        let mut out: Vec<Action> = Vec::with_capacity(64);
        b.iter(|| {
            let mut interp = Interpreter::new(
                Arc::clone(&set),
                entry,
                CallInfo {
                    caller: "+37120000099".into(),
                    called: "8000".into(),
                    call_id: "bench".into(),
                    started: t0,
                    started_wall: wall,
                    dialling: Default::default(),
                    vars: Vec::new(),
                },
            );
            // Returns the playback started by this event, if any.
            let feed = |interp: &mut Interpreter, e: Event, out: &mut Vec<Action>| {
                out.clear();
                interp.handle(t0, e, out);
                out.iter().rev().find_map(|a| match a {
                    Action::Play { id, .. } => Some(*id),
                    _ => None,
                })
            };
            let mut playing = feed(&mut interp, Event::Start, &mut out);
            for _ in 0..2 {
                if let Some(id) = playing.take() {
                    playing = feed(&mut interp, Event::PromptFinished(id), &mut out);
                }
            }
            for d in digits {
                feed(&mut interp, Event::Digit(d), &mut out);
            }
            feed(&mut interp, Event::TransferSucceeded, &mut out);
            black_box(interp.outcome().is_some())
        })
    });
    group.finish();
}

/// A 1,000-node flow: groups of a menu, a collect, a switch and a play,
/// chained so every node is reachable.
fn generated_flow(nodes: usize) -> String {
    let mut y = String::from(
        "flow: big\nstart: n0\nagent_key: \"0\"\nagent: agent\nqueues: { general: { uri: \"sip:general@acd.example.net\" } }\nnodes:\n",
    );
    let groups = (nodes - 2) / 4;
    for g in 0..groups {
        let (m, c, s, p) = (4 * g, 4 * g + 1, 4 * g + 2, 4 * g + 3);
        let next = if g + 1 < groups {
            format!("n{}", 4 * (g + 1))
        } else {
            "bye".into()
        };
        let _ = writeln!(y, "  n{m}:\n    menu: {{ prompt: main-menu, options: {{ \"1\": n{c}, \"2\": n{s}, \"3\": n{p} }}, timeout: 5s, invalid: invalid-choice }}\n    on_fail: agent");
        let _ = writeln!(y, "  n{c}:\n    collect: {{ prompt: enter-account, into: v{g}, min: 4, max: 8 }}\n    next: n{s}\n    on_fail: agent");
        let _ = writeln!(y, "  n{s}:\n    switch:\n      - {{ when: {{ var: v{g}, starts_with: \"1\" }}, goto: n{p} }}\n    default: {next}");
        let _ = writeln!(y, "  n{p}: {{ play: welcome, next: {next} }}");
    }
    y.push_str("  agent: { transfer: { queue: general }, on_fail: bye }\n  bye: { hangup: { prompt: goodbye } }\n");
    y
}

fn bench_load(c: &mut Criterion) {
    let text = generated_flow(1000);
    let sources = vec![(repo("flows/big.yaml"), text)];
    let check = load_sources(&sources, &options());
    assert!(!check.has_errors(), "{:?}", check.diagnostics.first());
    let nodes: usize = check.set.as_ref().map_or(0, |s| s.flows[0].nodes.len());
    assert!(nodes >= 998, "generated {nodes} nodes");
    let mut group = c.benchmark_group("load");
    group.sample_size(20);
    group.bench_function("generated_1000_nodes", |b| {
        b.iter(|| black_box(load_sources(&sources, &options()).has_errors()))
    });
    group.finish();
}

criterion_group!(benches, bench_interpreter, bench_load);
criterion_main!(benches);
