//! Media hot paths: RTP packets paced per second by one core, DTMF packets
//! parsed per second, and G.711 encoding of one packet.
//!
//! `cargo bench --bench media`. Report figures as ratios or with the machine
//! named: these machines are shared and noisy.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtp_rs::{RtpPacketBuilder, Seq};

use callflow::media::rtp::{PACKET_DURATION, PACKET_LEN};
use callflow::media::{Codec, DtmfReceiver, RtpSender};

/// Steady state of one call's sender: the caller wakes every 20 ms and takes
/// one packet. The prompt is a minute long; restarting it costs one `play`
/// per 3,000 packets.
fn rtp_poll_packet(c: &mut Criterion) {
    let prompt: Arc<[u8]> = vec![0x55; 8_000 * 60].into();
    #[allow(clippy::disallowed_methods)] // a benchmark is an IO edge
    let mut now = Instant::now();
    let mut sender = RtpSender::new(0x1234_5678, 0, 0, 0);
    sender.play(now, vec![prompt.clone()]);
    let mut buf = Vec::with_capacity(PACKET_LEN);
    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("poll_packet", |b| {
        b.iter(|| {
            let info = sender.poll_packet(now, &mut buf);
            now += PACKET_DURATION;
            match info {
                Some(info) if info.last => sender.play(now, vec![prompt.clone()]),
                Some(info) => {
                    black_box(info);
                }
                None => unreachable!("a packet is due every 20 ms"),
            }
            black_box(&buf);
        })
    });
    group.finish();
}

/// A typical press (start, three continuations, three ends) for each of 64
/// presses, fed round robin: mostly duplicates, as on the wire.
fn dtmf_on_rtp(c: &mut Criterion) {
    let packets: Vec<Vec<u8>> = (0..64u32)
        .flat_map(|press| {
            let durations = [400u16, 800, 1_200, 1_600, 1_920, 1_920, 1_920];
            durations.into_iter().enumerate().map(move |(i, duration)| {
                let end = if i >= 4 { 0x80 } else { 0 };
                let [high, low] = duration.to_be_bytes();
                RtpPacketBuilder::new()
                    .payload_type(101)
                    .ssrc(7)
                    .sequence(Seq::from((press * 7 + i as u32) as u16))
                    .timestamp(press * 8_000)
                    .payload(&[(press % 16) as u8, end | 10, high, low])
                    .build()
                    .expect("a valid test packet")
            })
        })
        .collect();
    let mut receiver = DtmfReceiver::new(101);
    let mut next = packets.iter().cycle();
    let mut group = c.benchmark_group("dtmf");
    group.throughput(Throughput::Elements(1));
    group.bench_function("on_rtp", |b| {
        b.iter(|| {
            let packet = next.next().expect("cycle never ends");
            black_box(receiver.on_rtp(black_box(packet)))
        })
    });
    group.finish();
}

/// Encoding one 20 ms packet's worth of samples: only done at prompt load,
/// but it bounds how fast a prompt directory loads.
fn g711_encode(c: &mut Criterion) {
    let samples: Vec<i16> = (0..160)
        .map(|i| (i * 397 % 65_536 - 32_768) as i16)
        .collect();
    let mut group = c.benchmark_group("g711");
    group.throughput(Throughput::Elements(160));
    for codec in [Codec::Pcmu, Codec::Pcma] {
        group.bench_function(format!("encode_{codec:?}"), |b| {
            b.iter(|| codec.encode(black_box(&samples)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = rtp_poll_packet, dtmf_on_rtp, g711_encode
}
criterion_main!(benches);
