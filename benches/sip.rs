//! What parsing one SIP datagram costs: a typical trunk INVITE with SDP
//! (behind two proxies, so three Vias and a Record-Route), an in-dialog
//! BYE, and every RFC 4475 torture message in turn.
//!
//! `cargo bench --bench sip`. Report figures as ratios or with the machine
//! named: these machines are shared and noisy.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use callflow::sip::message;

const INVITE: &str = "INVITE sip:8000@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.0.1:5060;branch=z9hG4bK-p2;rport\r\nVia: SIP/2.0/UDP 10.2.0.1:5060;branch=z9hG4bK-p1\r\nVia: SIP/2.0/UDP 10.9.0.1:5060;branch=z9hG4bK-uac\r\nRecord-Route: <sip:10.1.0.1;lr>, <sip:10.2.0.1;lr>\r\nFrom: \"Caller\" <sip:+37120000000@10.9.0.1>;tag=a73kszlfl\r\nTo: <sip:8000@10.0.0.5>\r\nCall-ID: 3848276298220188511@10.9.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:c@10.9.0.1:5060>\r\nMax-Forwards: 68\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY\r\nSupported: replaces, timer\r\nUser-Agent: Trunk/1.0\r\nContent-Type: application/sdp\r\nContent-Length: 126\r\n\r\nv=0\r\no=- 1 1 IN IP4 10.9.0.1\r\ns=-\r\nc=IN IP4 10.9.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";

const BYE: &str = "BYE sip:callflow@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.0.1:5060;branch=z9hG4bK-bye\r\nFrom: <sip:+37120000000@10.9.0.1>;tag=a73kszlfl\r\nTo: <sip:8000@10.0.0.5>;tag=8321234356\r\nCall-ID: 3848276298220188511@10.9.0.1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

fn parse(c: &mut Criterion) {
    // Measure the parse of messages we accept, not of a quick refusal.
    for m in [INVITE, BYE] {
        assert!(message::parse(m.as_bytes()).is_ok(), "{m}");
    }
    let mut group = c.benchmark_group("sip_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("trunk_invite", |b| {
        b.iter(|| black_box(message::parse(black_box(INVITE.as_bytes())).is_ok()))
    });
    group.bench_function("bye", |b| {
        b.iter(|| black_box(message::parse(black_box(BYE.as_bytes())).is_ok()))
    });
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rfc4475");
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sip"))
                .filter_map(|p| std::fs::read(p).ok())
                .collect()
        })
        .unwrap_or_default();
    corpus.sort();
    group.throughput(Throughput::Elements(corpus.len() as u64));
    group.bench_function("rfc4475_all", |b| {
        b.iter(|| {
            for m in &corpus {
                black_box(message::parse(black_box(m)).is_ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
