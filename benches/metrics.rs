//! What the metrics cost: counting one call's SIP messages (each by its
//! first line, as the worker does), counting the call's end in the shared
//! tally, and encoding a whole scrape. Compare the per-call sum with the
//! server's CPU per call (`cargo bench --bench tls`: about 130 µs over UDP).
//!
//! `cargo bench --bench metrics`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

use callflow::call::record::{CallOutcome, CallRecord};
use callflow::server::metrics::{Direction, Scrape, SipCounts, Tally, WorkerSnapshot};

/// The first lines of one answered call, both ways: what a worker counts.
const CALL: [(&[u8], Direction); 6] = [
    (
        b"INVITE sip:8000@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n",
        Direction::Received,
    ),
    (
        b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n",
        Direction::Sent,
    ),
    (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n",
        Direction::Sent,
    ),
    (
        b"ACK sip:callflow@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n",
        Direction::Received,
    ),
    (
        b"BYE sip:callflow@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n",
        Direction::Received,
    ),
    (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n",
        Direction::Sent,
    ),
];

fn record(flow: &str) -> CallRecord {
    CallRecord {
        call_id: "1-42@10.0.0.1".into(),
        from: "<sip:+37120000000@10.0.0.1>;tag=1".into(),
        to: "<sip:8000@10.0.0.5>".into(),
        caller: "+37120000000".into(),
        called: "8000".into(),
        flow: flow.into(),
        start: String::new(),
        answer: None,
        end: String::new(),
        nodes: Vec::new(),
        digits: String::new(),
        outcome: CallOutcome::Transferred,
        detail: "billing".into(),
        callback: None,
        callback_id: None,
        handoff: None,
        refer_failed: None,
        agent_answer: None,
        inputs: Vec::new(),
        failed_transfers: Vec::new(),
        hung_up_by: None,
        node: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    let mut sip = SipCounts::default();
    group.bench_function("sip_counts_one_call", |b| {
        b.iter(|| {
            for (bytes, d) in CALL {
                sip.count(black_box(bytes), d);
            }
        })
    });
    let mut tally = Tally::default();
    let r = record("support");
    let queues = ["billing", "general"];
    let tally_lock = std::sync::Mutex::new(Tally::default());
    group.bench_function("tally_one_call_end", |b| {
        b.iter(|| {
            let mut t = tally_lock.lock().unwrap();
            t.call_ended(black_box(&r), |q| queues.contains(&q));
        })
    });
    tally.call_ended(&r, |q| queues.contains(&q));
    // A scrape of a node with 8 workers and 2,000 calls in progress.
    let calls: Vec<_> = (0..250)
        .map(|i| callflow::call::CallSummary {
            call_id: format!("{i}@10.0.0.1"),
            caller: "+37120000000".into(),
            called: "8000".into(),
            flow: "support".into(),
            at: "support.main".into(),
            since: "2026-12-04T08:00:00.000Z".into(),
            answered: true,
            bridged: false,
            callback: None,
        })
        .collect();
    group.bench_function("scrape_8_workers_2000_calls", |b| {
        b.iter(|| {
            let scrape = Scrape {
                workers: (0..8)
                    .map(|_| WorkerSnapshot {
                        calls: calls.clone(),
                        sip: sip.clone(),
                        ..WorkerSnapshot::default()
                    })
                    .collect(),
                tally: tally.clone(),
                ..Scrape::default()
            };
            black_box(scrape.to_text().unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
