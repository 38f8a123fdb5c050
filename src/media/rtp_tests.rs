//! Tests of [`RtpSender`] on a fake clock.

use super::*;
use rtp_rs::RtpReader;

const SSRC: u32 = 0x1234_5678;
const MS: Duration = Duration::from_millis(1);

fn base() -> Instant {
    #[allow(clippy::disallowed_methods)] // a fake clock needs a base
    Instant::now()
}

fn audio(bytes: usize, value: u8) -> Arc<[u8]> {
    vec![value; bytes].into()
}

/// A parsed packet, checked for the fields every packet shares.
struct Sent {
    info: PacketInfo,
    sequence: u16,
    timestamp: u32,
    marker: bool,
    payload: Vec<u8>,
}

fn send(sender: &mut RtpSender, now: Instant, buf: &mut Vec<u8>) -> Option<Sent> {
    let info = sender.poll_packet(now, buf)?;
    assert_eq!(buf.len(), info.len);
    assert_eq!(info.len, PACKET_LEN);
    let packet = RtpReader::new(buf).unwrap();
    assert_eq!(packet.version(), 2);
    assert_eq!(packet.padding(), None);
    assert_eq!(packet.csrc_count(), 0);
    assert_eq!(packet.ssrc(), SSRC);
    assert_eq!(packet.payload().len(), SAMPLES_PER_PACKET);
    assert_eq!(u16::from(packet.sequence_number()), info.sequence);
    assert_eq!(packet.timestamp(), info.timestamp);
    assert_eq!(packet.mark(), info.marker);
    Some(Sent {
        info,
        sequence: u16::from(packet.sequence_number()),
        timestamp: packet.timestamp(),
        marker: packet.mark(),
        payload: packet.payload().to_vec(),
    })
}

/// Sends everything due at `now`.
fn drain(sender: &mut RtpSender, now: Instant) -> Vec<Sent> {
    let mut buf = Vec::new();
    std::iter::from_fn(|| send(sender, now, &mut buf)).collect()
}

#[test]
fn one_second_is_fifty_packets_at_exact_20ms_steps() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, 1000, 5000);
    sender.play(t0, vec![audio(8_000, 0x11)]);
    let mut buf = Vec::with_capacity(PACKET_LEN);
    let storage = buf.as_ptr();
    for n in 0..50u16 {
        let due = sender.poll_timeout().unwrap();
        assert_eq!(due, t0 + PACKET_DURATION * u32::from(n));
        assert!(sender
            .poll_packet(due - Duration::from_nanos(1), &mut buf)
            .is_none());
        let sent = send(&mut sender, due, &mut buf).unwrap();
        assert_eq!(sent.sequence, 1000 + n);
        assert_eq!(sent.timestamp, 5000 + 160 * u32::from(n));
        assert_eq!(sent.marker, n == 0);
        assert_eq!(sent.info.last, n == 49);
        assert_eq!(sent.info.skipped, 0);
        assert_eq!(sent.payload, [0x11; 160]);
        assert!(
            send(&mut sender, due, &mut buf).is_none(),
            "one packet per slot"
        );
    }
    assert_eq!(sender.poll_timeout(), None);
    assert!(!sender.is_playing());
    assert_eq!(buf.as_ptr(), storage, "the buffer was never reallocated");
    assert_eq!((sender.packets_sent(), sender.octets_sent()), (50, 8_000));
}

#[test]
fn header_carries_payload_type_and_version() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 8, 0, 0);
    sender.play(t0, vec![audio(160, 0x55)]);
    let mut buf = Vec::new();
    sender.poll_packet(t0, &mut buf).unwrap();
    assert_eq!(buf[..2], [0x80, 0x80 | 8]);
    assert_eq!(RtpReader::new(&buf).unwrap().payload_type(), 8);
    assert_eq!(sender.ssrc(), SSRC);
}

#[test]
fn late_caller_gets_the_overdue_packets_in_order_with_scheduled_timestamps() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, 7, 100);
    sender.play(t0, vec![audio(8_000, 1)]);
    let sent = drain(&mut sender, t0 + 110 * MS);
    assert_eq!(sent.len(), 6, "packets due at 0, 20, .., 100 ms");
    for (n, p) in (0u16..).zip(&sent) {
        assert_eq!(p.sequence, 7 + n);
        assert_eq!(p.timestamp, 100 + 160 * u32::from(n));
    }
    // The schedule is unchanged: the next packet is due at 120 ms.
    assert_eq!(sender.poll_timeout(), Some(t0 + 120 * MS));
}

#[test]
fn very_late_caller_skips_ahead_instead_of_bursting() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, 7, 100);
    let mut prompt = vec![0u8; 8_000];
    prompt[25 * 160] = 0x42;
    sender.play(t0, vec![prompt.into()]);
    let sent = drain(&mut sender, t0 + 505 * MS);
    assert_eq!(sent.len(), 1, "only the packet of the current slot");
    let p = &sent[0];
    assert_eq!(p.info.skipped, 25);
    assert_eq!(p.sequence, 7, "skipped packets take no sequence numbers");
    assert_eq!(
        p.timestamp,
        100 + 25 * 160,
        "the timestamp follows real time"
    );
    assert_eq!(p.payload[0], 0x42, "audio resumes where real time is");
    assert!(p.marker, "the receiver is told to resynchronise");
    assert_eq!(sender.poll_timeout(), Some(t0 + 520 * MS));
    let next = drain(&mut sender, t0 + 520 * MS);
    assert_eq!((next[0].sequence, next[0].marker), (8, false));
}

#[test]
fn exactly_max_lateness_is_still_sent_in_order() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, 0, 0);
    sender.play(t0, vec![audio(8_000, 1)]);
    let sent = drain(&mut sender, t0 + MAX_LATENESS);
    assert_eq!(sent.len(), 11);
    assert!(sent.iter().all(|p| p.info.skipped == 0));
}

#[test]
fn skipping_ahead_never_skips_the_last_packet() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, 0, 0);
    sender.play(t0, vec![audio(8_000, 1)]);
    let sent = drain(&mut sender, t0 + Duration::from_secs(5));
    assert_eq!(sent.len(), 1);
    assert!(sent[0].info.last);
    assert_eq!(sent[0].info.skipped, 49);
    assert_eq!(
        sent[0].timestamp,
        49 * 160,
        "the last packet keeps its slot"
    );
}

#[test]
fn sequence_and_timestamp_continue_across_talkspurts_and_wrap() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, u16::MAX - 1, u32::MAX - 200);
    sender.play(t0, vec![audio(480, 1)]);
    let first = drain(&mut sender, t0 + 40 * MS);
    assert_eq!(first.len(), 3);
    assert!(first[2].info.last);
    let sequences: Vec<u16> = first.iter().map(|p| p.sequence).collect();
    assert_eq!(sequences, [u16::MAX - 1, u16::MAX, 0]);

    // 1,003 ms of silence after the first talkspurt began advance the
    // timestamp by 8 per ms.
    let t1 = t0 + 1_003 * MS;
    sender.play(t1, vec![audio(320, 2)]);
    assert_eq!(sender.poll_timeout(), Some(t1));
    let second = drain(&mut sender, t1 + 20 * MS);
    assert_eq!(second.len(), 2);
    assert_eq!(second[0].sequence, 1);
    assert_eq!(second[1].sequence, 2);
    assert_eq!(
        second[0].timestamp,
        (u32::MAX - 200).wrapping_add(8 * 1_003)
    );
    assert_eq!(second[1].timestamp, second[0].timestamp.wrapping_add(160));
    assert!(second[0].marker && !second[1].marker);
}

#[test]
fn timestamps_follow_the_clock_over_days_of_idle_time() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, 0, 17);
    sender.play(t0, vec![audio(160, 1)]);
    drain(&mut sender, t0);
    let later = t0 + Duration::from_secs(600_000);
    sender.play(later, vec![audio(160, 1)]);
    let sent = drain(&mut sender, later);
    let samples = 600_000u64 * 8_000;
    assert_eq!(sent[0].timestamp, 17u32.wrapping_add(samples as u32));
    assert_eq!(sender.timestamp_at(later), sent[0].timestamp);
}

#[test]
fn replacing_a_talkspurt_starts_after_the_packet_already_sent() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, 0, 0);
    sender.play(t0, vec![audio(8_000, 1)]);
    assert_eq!(drain(&mut sender, t0).len(), 1);
    // That packet covers 0-20 ms; the new audio may not overlap it.
    sender.play(t0 + 5 * MS, vec![audio(160, 2)]);
    assert_eq!(sender.poll_timeout(), Some(t0 + 20 * MS));
    let sent = drain(&mut sender, t0 + 20 * MS);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].sequence, sent[0].timestamp), (1, 160));
    assert!(sent[0].marker && sent[0].info.last);
    assert_eq!(sent[0].payload, [2; 160]);
}

#[test]
fn stop_mid_way_sends_nothing_more() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, 0, 0);
    sender.play(t0, vec![audio(8_000, 1)]);
    let sent = drain(&mut sender, t0 + 180 * MS);
    assert_eq!(sent.len(), 10);
    assert!(sent.iter().all(|p| !p.info.last));
    sender.stop();
    assert_eq!(sender.poll_timeout(), None);
    assert!(drain(&mut sender, t0 + Duration::from_secs(2)).is_empty());
    // The next prompt continues the sequence.
    sender.play(t0 + Duration::from_secs(3), vec![audio(160, 1)]);
    assert_eq!(
        drain(&mut sender, t0 + Duration::from_secs(3))[0].sequence,
        10
    );
}

#[test]
fn last_packet_is_padded_with_the_codec_silence() {
    for (payload_type, silence) in [(0, 0xFF), (8, 0xD5)] {
        let t0 = base();
        let mut sender = RtpSender::new(SSRC, payload_type, 0, 0);
        sender.play(t0, vec![audio(200, 0x11)]);
        let sent = drain(&mut sender, t0 + 20 * MS);
        assert_eq!(sent.len(), 2);
        assert!(sent[1].info.last);
        assert_eq!(sent[1].payload[..40], [0x11; 40]);
        assert_eq!(sent[1].payload[40..], [silence; 120]);
    }
}

#[test]
fn prompts_play_back_to_back_across_buffer_boundaries() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, 0, 0);
    sender.play(t0, vec![audio(100, 1), audio(0, 9), audio(100, 2)]);
    let sent = drain(&mut sender, t0 + 20 * MS);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].payload[..100], [1; 100]);
    assert_eq!(sent[0].payload[100..], [2; 60]);
    assert_eq!(sent[1].payload[..40], [2; 40]);
    assert_eq!(sent[1].payload[40..], [0xFF; 120]);
}

#[test]
fn empty_audio_still_reports_its_end() {
    let t0 = base();
    let mut sender = RtpSender::new(SSRC, 0, 0, 0);
    sender.play(t0, Vec::new());
    let sent = drain(&mut sender, t0);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].info.last && sent[0].marker);
    assert_eq!(sent[0].payload, [0xFF; 160]);
}
