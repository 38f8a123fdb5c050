//! What SRTP adds per packet (rtc-srtp on ring, AES_CM_128_HMAC_SHA1_80, as
//! an SRTP leg uses it): sealing one 172-byte G.711 packet, and opening
//! one, beside the cost of pacing a plain one (`cargo bench --bench media`).
//!
//! `cargo bench --bench srtp`. Report figures as ratios or with the machine
//! named: these machines are shared and noisy.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtc_srtp::context::Context;
use rtc_srtp::protection_profile::ProtectionProfile;

fn context(replay: bool) -> Context {
    let provider = rtc_srtp::crypto::default_provider().expect("ring");
    let key = [7u8; 30];
    Context::new(
        &key[..16],
        &key[16..],
        ProtectionProfile::Aes128CmHmacSha1_80,
        replay.then(|| rtc_srtp::option::srtp_replay_protection(128)),
        None,
        provider.crypto(),
    )
    .expect("context")
}

fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(160 * u32::from(seq)).to_be_bytes());
    p.extend_from_slice(&[0x55; 160]);
    p
}

fn seal_and_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp");
    group.throughput(Throughput::Elements(1));
    let mut send = context(false);
    let mut seq = 0u16;
    let mut plain = packet(0);
    group.bench_function("seal_172_bytes", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            plain[2..4].copy_from_slice(&seq.to_be_bytes());
            black_box(send.encrypt_rtp(&plain).expect("sealed"));
        })
    });
    // Sealed ahead, opened in order, as they arrive.
    let mut sealer = context(false);
    let sealed: Vec<Vec<u8>> = (0..50_000u16)
        .map(|s| sealer.encrypt_rtp(&packet(s)).expect("sealed").to_vec())
        .collect();
    let mut open = context(true);
    let mut i = 0usize;
    group.bench_function("open_172_bytes", |b| {
        b.iter(|| {
            if i == sealed.len() {
                open = context(true);
                i = 0;
            }
            black_box(open.decrypt_rtp(&sealed[i]).ok());
            i += 1;
        })
    });
    group.finish();
}

criterion_group!(benches, seal_and_open);
criterion_main!(benches);
