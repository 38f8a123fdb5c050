//! Receiving DTMF key presses as RFC 4733 telephone-events over RTP.
//!
//! A sender reports one key press as a series of packets that all carry the
//! RTP timestamp of the moment the press began (RFC 4733 section 2.5.1):
//! a first packet (marker bit set), continuation packets with a growing
//! duration, and an end packet (E bit) that is usually sent three times
//! (same section). Any of them may be lost or reordered, so an event is
//! identified by its (SSRC, timestamp) pair and reported on the first packet
//! of it that arrives, whatever kind that is.
//!
//! Known limitation: a key held longer than the duration field can express
//! (65,535 units, 8.2 s at 8 kHz) is sent as several segments with new
//! timestamps (section 2.5.1) and would be reported once per segment.

use rtp_rs::RtpReader;

/// How many recent events are remembered to recognise late retransmissions;
/// a retransmitted end packet arrives within about 100 ms, during which a
/// person presses at most a key or two.
const RECENT_EVENTS: usize = 16;

/// The payload of one telephone-event packet (RFC 4733 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event code (section 3.2: 0-9, 10 `*`, 11 `#`, 12-15 `A`-`D`).
    pub event: u8,
    /// The E bit: this packet reports the end of the event (section 2.3.2).
    pub end: bool,
    /// Power level in -dBm0, 0 to 63 (section 2.3.4).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units (section 2.3.5).
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first four bytes of a telephone-event payload; `None` if
    /// it is shorter. Further bytes (redundant events) are ignored.
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let [event, flags, high, low, ..] = *payload else {
            return None;
        };
        Some(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([high, low]),
        })
    }

    /// The DTMF key of this event, or `None` for the non-DTMF events that
    /// share the payload format (flash, fax tones, ...).
    pub fn key(&self) -> Option<char> {
        dtmf_key(self.event)
    }
}

/// The key for a DTMF event code (RFC 4733 section 3.2), or `None`
/// if the code is not one of the 16 DTMF keys.
pub fn dtmf_key(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// Turns the RTP packets of a call's inbound stream into key presses, each
/// reported exactly once however many of its packets arrive.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    payload_type: u8,
    /// (SSRC, timestamp) of recent events, oldest overwritten first.
    recent: [Option<(u32, u32)>; RECENT_EVENTS],
    next_slot: usize,
}

impl DtmfReceiver {
    /// A receiver for the telephone-event payload type negotiated in SDP
    /// (`a=rtpmap:<pt> telephone-event/8000`); 101 is common but the type is
    /// dynamic, so it must come from the negotiation.
    pub fn new(payload_type: u8) -> Self {
        DtmfReceiver {
            payload_type,
            recent: [None; RECENT_EVENTS],
            next_slot: 0,
        }
    }

    /// Handles one received RTP packet and returns the key if it is the
    /// first packet seen of a DTMF event.
    ///
    /// Packets of other payload types (the audio itself), malformed packets
    /// and non-DTMF events return `None`: the network is not trusted.
    pub fn on_rtp(&mut self, packet: &[u8]) -> Option<char> {
        let rtp = RtpReader::new(packet).ok()?;
        if rtp.payload_type() != self.payload_type {
            return None;
        }
        let key = TelephoneEvent::parse(rtp.payload())?.key()?;
        let id = (rtp.ssrc(), rtp.timestamp());
        if self.recent.contains(&Some(id)) {
            return None;
        }
        self.recent[self.next_slot] = Some(id);
        self.next_slot = (self.next_slot + 1) % RECENT_EVENTS;
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp_rs::{RtpPacketBuilder, Seq};

    const PT: u8 = 101;

    fn packet(ssrc: u32, seq: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(PT)
            .ssrc(ssrc)
            .sequence(Seq::from(seq))
            .timestamp(timestamp)
            .payload(payload)
            .build()
            .unwrap()
    }

    fn event(code: u8, end: bool, duration: u16) -> [u8; 4] {
        let [high, low] = duration.to_be_bytes();
        [code, if end { 0x80 | 10 } else { 10 }, high, low]
    }

    /// The packets a typical phone sends for one press: start, three
    /// continuations, three copies of the end.
    fn press(code: u8, timestamp: u32, first_seq: u16) -> Vec<Vec<u8>> {
        let payloads = [
            event(code, false, 400),
            event(code, false, 800),
            event(code, false, 1_200),
            event(code, false, 1_600),
            event(code, true, 1_920),
            event(code, true, 1_920),
            event(code, true, 1_920),
        ];
        (0..)
            .zip(payloads)
            .map(|(i, p)| packet(1, first_seq + i, timestamp, &p))
            .collect()
    }

    fn keys(receiver: &mut DtmfReceiver, packets: &[Vec<u8>]) -> String {
        packets.iter().filter_map(|p| receiver.on_rtp(p)).collect()
    }

    #[test]
    fn rfc4733_typical_press_counts_once() {
        let mut receiver = DtmfReceiver::new(PT);
        assert_eq!(keys(&mut receiver, &press(5, 8_000, 1)), "5");
    }

    #[test]
    fn rfc4733_end_packets_only_count_once() {
        let mut receiver = DtmfReceiver::new(PT);
        assert_eq!(keys(&mut receiver, &press(11, 8_000, 1)[4..]), "#");
    }

    #[test]
    fn continuation_packets_only_count_once() {
        let mut receiver = DtmfReceiver::new(PT);
        assert_eq!(keys(&mut receiver, &press(10, 8_000, 1)[1..4]), "*");
    }

    #[test]
    fn two_presses_of_the_same_key_count_twice() {
        let mut receiver = DtmfReceiver::new(PT);
        let mut packets = press(1, 8_000, 1);
        packets.extend(press(1, 12_000, 8));
        assert_eq!(keys(&mut receiver, &packets), "11");
    }

    #[test]
    fn late_retransmission_of_an_older_end_packet_does_not_count_again() {
        let mut receiver = DtmfReceiver::new(PT);
        let first = press(4, 8_000, 1);
        let second = press(2, 12_000, 8);
        assert_eq!(keys(&mut receiver, &first[..5]), "4");
        assert_eq!(keys(&mut receiver, &second), "2");
        assert_eq!(keys(&mut receiver, &first[5..]), "", "reordered end of 4");
    }

    #[test]
    fn events_are_keyed_per_ssrc() {
        let mut receiver = DtmfReceiver::new(PT);
        let a = packet(1, 1, 8_000, &event(7, true, 800));
        let b = packet(2, 1, 8_000, &event(7, true, 800));
        assert_eq!(keys(&mut receiver, &[a.clone(), b, a]), "77");
    }

    #[test]
    fn remembers_the_recent_events_then_forgets() {
        let mut receiver = DtmfReceiver::new(PT);
        let presses: Vec<Vec<u8>> = (0..RECENT_EVENTS as u32)
            .map(|i| packet(1, i as u16, 1_000 * i, &event(0, true, 800)))
            .collect();
        assert_eq!(keys(&mut receiver, &presses).len(), RECENT_EVENTS);
        assert_eq!(keys(&mut receiver, &presses).len(), 0, "all remembered");
        receiver.on_rtp(&packet(1, 99, 999_999, &event(0, true, 800)));
        assert_eq!(keys(&mut receiver, &presses[..1]), "0", "oldest forgotten");
    }

    #[test]
    fn every_dtmf_code_maps_to_its_key() {
        let all: String = (0..=15).filter_map(dtmf_key).collect();
        assert_eq!(all, "0123456789*#ABCD");
        assert_eq!(dtmf_key(16), None, "flash is not DTMF");
        let mut receiver = DtmfReceiver::new(PT);
        assert_eq!(
            receiver.on_rtp(&packet(1, 1, 0, &event(16, false, 400))),
            None
        );
    }

    #[test]
    fn parses_the_payload_fields() {
        let parsed = TelephoneEvent::parse(&[9, 0x80 | 0x3F, 0x01, 0x02, 0xFF]).unwrap();
        assert_eq!(
            parsed,
            TelephoneEvent {
                event: 9,
                end: true,
                volume: 63,
                duration: 0x0102
            }
        );
        assert_eq!(parsed.key(), Some('9'));
    }

    #[test]
    fn short_payload_is_ignored() {
        let mut receiver = DtmfReceiver::new(PT);
        assert_eq!(receiver.on_rtp(&packet(1, 1, 0, &[5, 0x80, 0])), None);
        assert_eq!(receiver.on_rtp(&packet(1, 1, 0, &[])), None);
        assert_eq!(TelephoneEvent::parse(&[5, 0, 0]), None);
    }

    #[test]
    fn wrong_payload_type_is_ignored() {
        let mut receiver = DtmfReceiver::new(PT);
        let audio = RtpPacketBuilder::new()
            .payload_type(0)
            .payload(&event(5, true, 800))
            .build()
            .unwrap();
        assert_eq!(receiver.on_rtp(&audio), None);
    }

    #[test]
    fn malformed_packets_return_none_without_panicking() {
        let mut receiver = DtmfReceiver::new(PT);
        let good = packet(1, 1, 0, &event(5, true, 800));
        assert_eq!(receiver.on_rtp(&good[..11]), None, "shorter than a header");
        let mut version1 = good.clone();
        version1[0] = 0x40;
        assert_eq!(receiver.on_rtp(&version1), None);
        let mut bad_padding = good.clone();
        bad_padding[0] |= 0x20;
        *bad_padding.last_mut().unwrap() = 200;
        assert_eq!(receiver.on_rtp(&bad_padding), None);
        let mut too_many_csrcs = good.clone();
        too_many_csrcs[0] |= 0x0F;
        assert_eq!(receiver.on_rtp(&too_many_csrcs), None);
        // Every truncation and a run of pseudo-random bytes: none may panic.
        for len in 0..good.len() {
            receiver.on_rtp(&good[..len]);
        }
        let mut state = 0x2545_F491_u32;
        for _ in 0..10_000 {
            let bytes: Vec<u8> = (0..(state % 40) as usize)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state >> 24) as u8 | 0x80
                })
                .collect();
            receiver.on_rtp(&bytes);
        }
    }
}
