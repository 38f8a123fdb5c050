//! What admission control costs per INVITE, against what handling the
//! INVITE costs in all: the verdict on the source (trunk lookup, the
//! source's token bucket) and the trunk's call limits, beside a whole new
//! INVITE through the user agent (parse, transaction, dialog, 100 Trying).
//! A flooding source's datagrams stop at the first of these, before they
//! are parsed.
//!
//! `cargo bench --bench admission`. Report figures as ratios or with the
//! machine named: these machines are shared and noisy.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use callflow::sip::admission::{Admission, AdmissionConfig, Networks, Rate, TrunkPolicy, Verdict};
use callflow::sip::ua::{UaConfig, UserAgent};

/// Ten trunks of which the INVITEs come from the last: the lookup's worst
/// case for a small deployment.
fn config() -> AdmissionConfig {
    let trunks = (0..10u8)
        .map(|i| TrunkPolicy {
            name: format!("t{i}"),
            sources: Networks::new(vec![format!("10.{i}.0.0/16").parse().unwrap()]),
            media: Networks::new(vec![format!("10.{i}.0.0/16").parse().unwrap()]),
            digest: None,
            max_calls: usize::MAX,
            calls_per_second: Rate::per_second(1e12),
            source_rate: Rate::per_second(1e12),
            located: Vec::new(),
            located_media: false,
        })
        .collect();
    AdmissionConfig {
        trunks,
        ..AdmissionConfig::default()
    }
}

fn invite(n: u64) -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 10.9.0.1\r\ns=-\r\nc=IN IP4 10.9.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    format!(
        "INVITE sip:8000@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.0.1:5060;branch=z9hG4bK-{n}\r\nFrom: <sip:+37120000000@10.9.0.1>;tag={n}\r\nTo: <sip:8000@10.0.0.5>\r\nCall-ID: {n}@bench\r\nCSeq: 1 INVITE\r\nContact: <sip:c@10.9.0.1:5060>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn admission(c: &mut Criterion) {
    #[allow(clippy::disallowed_methods)] // a benchmark is an IO edge
    let t0 = Instant::now();
    let source: IpAddr = "10.9.0.1".parse().unwrap();
    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Elements(1));

    let mut a = Admission::new(config(), [1; 16]);
    let mut now = t0;
    group.bench_function("verdict_and_call_limits", |b| {
        b.iter(|| {
            now += Duration::from_micros(10);
            let Verdict::Trunk(trunk) = a.on_datagram(now, black_box(source)) else {
                unreachable!("the source is a trunk's")
            };
            black_box(a.admit_call(now, trunk)).ok();
            a.call_ended(trunk);
        })
    });

    // A blocked source: what each datagram of a flood costs once it is.
    let mut blocking = config();
    blocking.trunks[9].source_rate = Rate {
        per_second: 1.0,
        burst: 1.0,
    };
    let mut a = Admission::new(blocking, [1; 16]);
    a.on_datagram(t0, source);
    a.on_datagram(t0, source);
    group.bench_function("blocked_source_dropped", |b| {
        b.iter(|| black_box(a.on_datagram(t0, black_box(source))))
    });

    let mut n = 0u64;
    group.bench_function("whole_new_invite", |b| {
        b.iter_batched(
            || {
                n += 1;
                let mut ua_config = UaConfig::new(SocketAddr::from(([10, 0, 0, 5], 5060)));
                ua_config.admission = config();
                (UserAgent::new(ua_config), invite(n))
            },
            |(mut ua, datagram)| {
                ua.handle_datagram(t0, SocketAddr::new(source, 5060), &datagram);
                while let Some(out) = ua.poll_output() {
                    black_box(out);
                }
                ua
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
