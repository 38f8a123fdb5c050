//! Relay rules: what lets the edge relay a bridged call's RTP itself.
//!
//! Relayed through the endpoint, every packet of a bridged call crossed
//! from the thread that read it to the call's worker and back out: two
//! hand-offs, and a wait for the worker's turn, on every packet both ways.
//! The relay itself needs little: the packet's source and SSRC checked
//! against what the leg's latch took, its payload type renumbered, at most
//! its G.711 law changed. So once a bridge is up and both legs are latched
//! the endpoint hands the edge a [`RelayRule`] per direction and the thread
//! that reads the packet sends it on at once.
//!
//! The endpoint stays the authority: a packet the rule does not cover
//! exactly (a new source or SSRC, a payload type not agreed, SRTP, a
//! header the payload cannot be found past) is left untouched for
//! [`super::Endpoint::handle_rtp`], whose answer may be a new rule or none.
//! The edge tells the endpoint how many packets it relayed now and then
//! ([`super::Endpoint::handle_relayed`]), so that a call being relayed is
//! not taken for a silent one.

use std::net::SocketAddr;

use crate::media::g711;

/// How one stream of a relayed direction passes: audio, or RFC 4733
/// events (some gateways send them with an SSRC of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayStream {
    /// Its payload type as the sending leg numbers it.
    pub payload_type: u8,
    /// The SSRC the sending leg's latch took for it.
    pub ssrc: u32,
    /// Its payload type as the receiving leg numbers it.
    pub to_payload_type: u8,
}

/// RTP that reaches one port and may be relayed by the edge without the
/// endpoint (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRule {
    /// The only source it covers: the sending leg's latched address.
    pub source: SocketAddr,
    /// The sending leg's audio.
    pub audio: RelayStream,
    /// Its events, once their SSRC is latched and both legs agreed on them.
    pub events: Option<RelayStream>,
    /// The audio's law as sent, and as the receiving leg agreed it, when
    /// they differ (a caller who re-INVITEd to the other law).
    pub transcode: Option<(g711::Codec, g711::Codec)>,
    /// The port (the other leg's socket) to send from.
    pub out_port: u16,
    /// Where to.
    pub to: SocketAddr,
}

impl RelayRule {
    /// If the rule covers `packet` from `from`, rewrites it in place for
    /// the receiving leg and says so; otherwise leaves it untouched (it is
    /// the endpoint's to judge).
    pub fn forward(&self, from: SocketAddr, packet: &mut [u8]) -> bool {
        if from != self.source || packet.len() < 12 || packet[0] >> 6 != 2 {
            return false;
        }
        let pt = packet[1] & 0x7f;
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let (stream, audio) = if pt == self.audio.payload_type {
            (self.audio, true)
        } else {
            match self.events {
                Some(e) if e.payload_type == pt => (e, false),
                _ => return false,
            }
        };
        if ssrc != stream.ssrc {
            return false;
        }
        if let (true, Some((from_law, to_law))) = (audio, self.transcode) {
            let Some(payload) = payload_range(packet) else {
                return false;
            };
            from_law.transcode(to_law, &mut packet[payload]);
        }
        packet[1] = (packet[1] & 0x80) | stream.to_payload_type;
        true
    }
}

/// Where an RTP packet's payload is: after the CSRCs and any header
/// extension, before any padding (RFC 3550 5.1, 5.3.1); `None` when the
/// header says more than the packet holds.
pub(super) fn payload_range(packet: &[u8]) -> Option<std::ops::Range<usize>> {
    let csrcs = usize::from(packet.first()? & 0x0f);
    let mut start = 12 + 4 * csrcs;
    if packet[0] & 0x10 != 0 {
        let words = packet.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    (start <= end).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: u32 = 0xCA11_E500;

    fn rule() -> RelayRule {
        RelayRule {
            source: "127.0.0.2:15060".parse().unwrap(),
            audio: RelayStream {
                payload_type: 0,
                ssrc: CALLER,
                to_payload_type: 0,
            },
            events: Some(RelayStream {
                payload_type: 101,
                ssrc: CALLER,
                to_payload_type: 96,
            }),
            transcode: None,
            out_port: 30002,
            to: "127.0.0.2:15391".parse().unwrap(),
        }
    }

    fn packet(marker_pt: u8, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, marker_pt, 0, 1, 0, 0, 0, 160];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn audio_and_events_from_the_latched_source_are_renumbered() {
        let r = rule();
        let mut audio = packet(0, CALLER, &[0xff; 160]);
        assert!(r.forward(r.source, &mut audio));
        assert_eq!(audio, packet(0, CALLER, &[0xff; 160]));
        // The marker bit stays; the events' number changes.
        let mut event = packet(0x80 | 101, CALLER, &[5, 0x0a, 0, 160]);
        assert!(r.forward(r.source, &mut event));
        assert_eq!(event, packet(0x80 | 96, CALLER, &[5, 0x0a, 0, 160]));
    }

    #[test]
    fn anything_else_is_left_untouched_for_the_endpoint() {
        let r = rule();
        let stranger: SocketAddr = "127.0.0.9:15060".parse().unwrap();
        let cases = [
            (stranger, packet(0, CALLER, &[1; 160])),
            (r.source, packet(0, 0xBAD, &[1; 160])),
            (r.source, packet(101, 0xBAD, &[1; 4])),
            (r.source, packet(13, CALLER, &[1])),
            (r.source, vec![0x80, 0, 0, 1]),
            (r.source, {
                let mut p = packet(0, CALLER, &[1; 160]);
                p[0] = 0x40; // RTP version 1
                p
            }),
        ];
        for (from, mut p) in cases {
            let before = p.clone();
            assert!(!r.forward(from, &mut p), "{from} {before:?}");
            assert_eq!(p, before);
        }
        let mut no_events = rule();
        no_events.events = None;
        let mut event = packet(101, CALLER, &[5, 0x0a, 0, 160]);
        assert!(!no_events.forward(r.source, &mut event));
    }

    #[test]
    fn a_law_change_is_transcoded_and_a_header_past_the_end_is_not_touched() {
        let mut r = rule();
        r.transcode = Some((g711::Codec::Pcmu, g711::Codec::Pcma));
        r.audio.to_payload_type = 8;
        let mut p = packet(0, CALLER, &[0xff; 160]);
        assert!(r.forward(r.source, &mut p));
        let mut expected = vec![0xff; 160];
        g711::Codec::Pcmu.transcode(g711::Codec::Pcma, &mut expected);
        assert_eq!(p, packet(8, CALLER, &expected));
        // Events are never transcoded.
        let mut event = packet(101, CALLER, &[5, 0x0a, 0, 160]);
        assert!(r.forward(r.source, &mut event));
        assert_eq!(event[12..], [5, 0x0a, 0, 160]);
        // An extension claimed longer than the packet: the endpoint's.
        let mut bad = packet(0, CALLER, &[0xbe, 0xde, 0, 9]);
        bad[0] |= 0x10;
        let before = bad.clone();
        assert!(!r.forward(r.source, &mut bad));
        assert_eq!(bad, before);
    }

    #[test]
    fn the_payload_is_found_past_csrcs_and_extensions_and_before_padding() {
        let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(&[9; 160]);
        assert_eq!(payload_range(&p), Some(12..172));
        let mut x = vec![0x80 | 0x10 | 0x20 | 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        x.extend_from_slice(&[0, 0, 0, 2]); // one CSRC
        x.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // a one-word extension
        x.extend_from_slice(&[9; 20]);
        x.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        assert_eq!(payload_range(&x), Some(24..44));
        assert_eq!(
            payload_range(&[0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
            None,
            "15 CSRCs claimed, none there"
        );
    }
}
