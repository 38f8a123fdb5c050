//! The callback store and scheduler: durable requests per second, the
//! latency of claiming due requests among 10,000 pending, the store's share
//! of "confirmed request to outbound INVITE", and the opening-hours search.
//!
//! `cargo bench --bench callback`. The database is a file in a temporary
//! directory, in WAL mode with `synchronous=FULL`, so each commit waits for
//! the disk: the figures measure the machine's fsync as much as our code.
//! Report them with the machine and file system named.
//!
//! With `CALLFLOW_BENCH_POSTGRES=postgres://...` (an empty database on
//! the same machine, say a cluster started with `pg_ctl` in a temporary
//! directory) the request, claim and request-to-claim figures are taken on
//! PostgreSQL too, as `..._postgres`, for the multi-node store.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use callflow::callback::scheduler::Window;
use callflow::callback::store::CallbackStore;
use callflow::callback::{AttemptOutcome, NewCallback};
use callflow::flow::model::ScheduleDef;
use callflow::flow::schedule::Schedule;
use callflow::server::backend::Backend;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 10, 9, 0, 0).unwrap()
}

fn new_callback(i: u64, queues: u64) -> NewCallback {
    NewCallback {
        number: format!("3712{i:07}"),
        queue: format!("queue{}", i % queues),
        priority: (i % 7) as i32,
        context: vec![
            ("account".into(), "12345678".into()),
            ("path".into(), "welcome>main>account>to_agent".into()),
        ],
        not_before: None,
        not_after: None,
    }
}

/// Times `iters` runs of `timed`, each after an untimed `setup`, both
/// working on `state`.
fn timed_after<S>(
    iters: u64,
    state: &mut S,
    mut setup: impl FnMut(&mut S),
    mut timed: impl FnMut(&mut S),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        setup(state);
        #[allow(clippy::disallowed_methods)] // a benchmark is an IO edge
        let t0 = Instant::now();
        timed(state);
        total += t0.elapsed();
    }
    total
}

/// The stores to measure, each empty: a SQLite file in `dir`, and the
/// PostgreSQL database named by `CALLFLOW_BENCH_POSTGRES` (its tables
/// emptied first), with the names' suffix.
fn stores(dir: &std::path::Path, name: &str) -> Vec<(String, Backend)> {
    let file = dir.join(format!("{name}.db"));
    let mut all = vec![(
        String::new(),
        Backend::Sqlite(CallbackStore::open(file).unwrap()),
    )];
    if let Ok(url) = std::env::var("CALLFLOW_BENCH_POSTGRES") {
        empty_postgres(&url);
        all.push(("_postgres".to_string(), Backend::open(&url).unwrap()));
    }
    all
}

/// Empties the benchmark database, with psql.
fn empty_postgres(url: &str) {
    let _ = std::process::Command::new("psql")
        .arg(url)
        .args([
            "-q",
            "-c",
            "DROP TABLE IF EXISTS attempts, callbacks, schema_version",
        ])
        .status();
}

fn bench_request(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = start();
    let mut next = 0u64;
    let mut group = c.benchmark_group("callback");
    group.throughput(Throughput::Elements(1));
    for (suffix, mut store) in stores(dir.path(), "request") {
        group.bench_function(format!("request_durable{suffix}"), |b| {
            b.iter(|| {
                next += 1;
                black_box(store.request(new_callback(next, 10), now).unwrap())
            })
        });
    }
    group.finish();
}

/// `store` with `pending` requests over ten queues.
fn filled(mut store: Backend, pending: u64) -> Backend {
    for i in 0..pending {
        store.request(new_callback(i, 10), start()).unwrap();
    }
    store
}

fn bench_claim(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // In memory too: the query work without the synced commit.
    let memory = Backend::Sqlite(CallbackStore::open_in_memory().unwrap());
    let mut group = c.benchmark_group("callback");
    let mut all = stores(dir.path(), "claim");
    all.push(("_in_memory".to_string(), memory));
    for (suffix, store) in all {
        let name = format!("claim_due_10k_pending{suffix}");
        bench_claim_in(&mut group, &name, filled(store, 10_000));
    }
    group.finish();
}

fn bench_claim_in(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut store: Backend,
) {
    let now = start() + TimeDelta::minutes(1);
    // Up to 10 calls per tick, 5 in flight per queue: a busy contact centre.
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            timed_after(
                iters,
                &mut store,
                // Put the last claim back so every run sees 10,000 pending.
                |store| {
                    store.recover(now).unwrap();
                },
                |store| {
                    let claimed = store.claim_due(now, &|_| 5, 10).unwrap();
                    assert_eq!(black_box(claimed).len(), 10);
                },
            )
        })
    });
}

/// The store's part of the time from the caller's confirmation to the
/// outbound INVITE when the queue is free: commit the request, then claim
/// it on the scheduler's next tick.
fn bench_request_to_claim(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = start();
    let mut next = 0u64;
    let mut group = c.benchmark_group("callback");
    for (suffix, mut store) in stores(dir.path(), "request_then_claim") {
        group.bench_function(format!("request_then_claim{suffix}"), |b| {
            b.iter_custom(|iters| {
                // The store, and the call in progress from the previous run.
                let mut state = (&mut store, None);
                let complete = |(store, last): &mut (&mut Backend, Option<i64>)| {
                    if let Some(id) = last.take() {
                        store
                            .finish_attempt(id, now, &AttemptOutcome::Completed)
                            .unwrap();
                    }
                };
                let total = timed_after(
                    iters,
                    &mut state,
                    // Finish the previous call, untimed, to keep the queue free.
                    complete,
                    |(store, last)| {
                        next += 1;
                        store.request(new_callback(next, 1), now).unwrap();
                        let claimed = store.claim_due(now, &|_| 1, 1).unwrap();
                        assert_eq!(claimed.len(), 1);
                        *last = claimed.first().map(|c| c.id);
                    },
                );
                complete(&mut state);
                total
            })
        });
    }
    group.finish();
}

fn bench_next_open(c: &mut Criterion) {
    let office = Schedule::compile(&ScheduleDef {
        timezone: "Europe/Riga".into(),
        open: [("mon-fri".to_string(), "08:00-20:00".to_string())]
            .into_iter()
            .collect(),
        closed_dates: Vec::new(),
        special_dates: Default::default(),
    })
    .unwrap();
    let window = Window {
        hours: Some(&office),
        ..Window::default()
    };
    // Friday 20:05 in Riga: the search walks the weekend to Monday 08:00.
    let friday_evening = Utc.with_ymd_and_hms(2026, 6, 12, 17, 5, 0).unwrap();
    let mut group = c.benchmark_group("callback");
    group.bench_function("next_open_over_a_weekend", |b| {
        b.iter(|| black_box(window.next_open(black_box(friday_evening))))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_request,
    bench_claim,
    bench_request_to_claim,
    bench_next_open
);
criterion_main!(benches);
