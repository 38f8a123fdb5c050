//! SRTP for a leg whose SDP agreed on it (RFC 3711, keyed by SDES, RFC
//! 4568): every packet we send on the leg is encrypted and authenticated
//! with our key, every packet it sends us is checked and decrypted with
//! its key, and one that fails (a forgery, a replay, a stranger) is
//! dropped and counted. The cipher is rtc-srtp's (webrtc-rs), on ring.

use rtc_srtp::context::Context;
use rtc_srtp::protection_profile::ProtectionProfile;

use crate::sip::sdp::sdes::{SdesKey, SrtpKeys};

/// Packets the replay check remembers per source (RFC 3711 3.3.2 asks
/// for at least 64).
const REPLAY_WINDOW: usize = 128;

/// Sources (SSRCs) that proved themselves, kept per leg: a peer has one,
/// two across a media server switch.
const MAX_KNOWN: usize = 4;

/// Unproven sources the probe context holds state for before it is
/// rebuilt: rtc-srtp keeps state per SSRC before it checks a packet, so a
/// flood of packets with random SSRCs must not reach the context that
/// carries the call.
const MAX_PROBED: usize = 16;

/// One leg's SRTP contexts.
pub(super) struct Srtp {
    keys: SrtpKeys,
    /// `None` when the keys could not be set up: then nothing goes out
    /// and nothing comes in (never audio in the clear on a leg that
    /// agreed on SRTP).
    send: Option<Context>,
    /// For sources already proven.
    receive: Option<Context>,
    /// For the first packets of sources not yet proven.
    probe: Option<Context>,
    known: Vec<u32>,
    probed: usize,
    /// What relayed packets go out as (the ACD's own numbering must not
    /// drive our keystream: a restart of its sequence on the same SSRC
    /// would repeat it, RFC 3711 9.1).
    relay_ssrc: u32,
    relay_seq: u16,
    /// Packets that failed authentication or the replay check.
    pub(super) refused: u64,
}

fn context(key: &SdesKey, replay: bool) -> Result<Context, String> {
    let provider = rtc_srtp::crypto::default_provider().map_err(|e| format!("SRTP: {e}"))?;
    let option = replay.then(|| rtc_srtp::option::srtp_replay_protection(REPLAY_WINDOW));
    Context::new(
        key.master_key(),
        key.master_salt(),
        ProtectionProfile::Aes128CmHmacSha1_80,
        option,
        None,
        provider.crypto(),
    )
    .map_err(|e| format!("SRTP: {e}"))
}

/// The length of an RTP packet's header (fixed part, CSRCs, extension),
/// if the packet holds all of it (RFC 3550 5.1, 5.3.1).
fn header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (packet.len() >= len && first >> 6 == 2).then_some(len)
}

impl Srtp {
    /// Contexts for `keys`; relayed packets go out as `relay_ssrc`. An
    /// error leaves a leg that passes nothing either way.
    pub(super) fn new(keys: SrtpKeys, relay_ssrc: u32) -> (Self, Result<(), String>) {
        let mut s = Self {
            keys,
            send: None,
            receive: None,
            probe: None,
            known: Vec::new(),
            probed: 0,
            relay_ssrc,
            relay_seq: 0,
            refused: 0,
        };
        let result = s.build(keys);
        (s, result)
    }

    fn build(&mut self, keys: SrtpKeys) -> Result<(), String> {
        self.send = None;
        self.receive = None;
        self.probe = None;
        self.send = Some(context(&keys.send, false)?);
        self.receive = Some(context(&keys.receive, true)?);
        self.probe = Some(context(&keys.receive, true)?);
        self.keys = keys;
        self.known.clear();
        self.probed = 0;
        Ok(())
    }

    /// New keys from a re-offer: only a side whose key changed starts
    /// afresh (a kept one keeps its rollover counter, RFC 3711 3.3.1).
    pub(super) fn rekey(&mut self, keys: SrtpKeys) -> Result<(), String> {
        if self.send.is_none() || self.receive.is_none() {
            return self.build(keys);
        }
        if keys.send != self.keys.send {
            self.send = None;
            self.send = Some(context(&keys.send, false)?);
        }
        if keys.receive != self.keys.receive {
            self.receive = None;
            self.probe = None;
            self.receive = Some(context(&keys.receive, true)?);
            self.probe = Some(context(&keys.receive, true)?);
            self.known.clear();
            self.probed = 0;
        }
        self.keys = keys;
        Ok(())
    }

    /// Encrypts the RTP packet at `buf[start..]` in place (it grows by the
    /// 10-byte authentication tag); `relayed` packets first get our
    /// source and sequence. False, with the packet removed, if it could
    /// not be (a malformed header, no keys): then it must not go out.
    pub(super) fn protect(&mut self, buf: &mut Vec<u8>, start: usize, relayed: bool) -> bool {
        let sealed = match (&mut self.send, header_len(&buf[start..])) {
            (Some(send), Some(_)) => {
                if relayed {
                    let seq = self.relay_seq;
                    self.relay_seq = seq.wrapping_add(1);
                    buf[start + 2..start + 4].copy_from_slice(&seq.to_be_bytes());
                    buf[start + 8..start + 12].copy_from_slice(&self.relay_ssrc.to_be_bytes());
                }
                send.encrypt_rtp(&buf[start..]).ok()
            }
            _ => None,
        };
        buf.truncate(start);
        match sealed {
            Some(sealed) => {
                buf.extend_from_slice(&sealed);
                true
            }
            None => false,
        }
    }

    /// The RTP packet inside an SRTP one, if it is authentic and new.
    pub(super) fn unprotect(&mut self, packet: &[u8]) -> Option<bytes::BytesMut> {
        let opened = match header_len(packet) {
            Some(_) => {
                let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
                if self.known.contains(&ssrc) {
                    self.receive
                        .as_mut()
                        .and_then(|c| c.decrypt_rtp(packet).ok())
                } else {
                    self.first_of(ssrc, packet)
                }
            }
            None => None,
        };
        if opened.is_none() {
            self.refused += 1;
        }
        opened
    }

    /// A packet of a source not yet proven: checked in the probe context,
    /// which a flood of made-up sources only ever fills so far.
    fn first_of(&mut self, ssrc: u32, packet: &[u8]) -> Option<bytes::BytesMut> {
        if self.probed >= MAX_PROBED {
            self.probe = context(&self.keys.receive, true).ok();
            self.probed = 0;
        }
        self.probed += 1;
        let plain = self.probe.as_mut()?.decrypt_rtp(packet).ok()?;
        if self.known.len() >= MAX_KNOWN {
            self.known.remove(0);
        }
        self.known.push(ssrc);
        // The proven source's state starts in the main context with this
        // packet (its rollover count is zero at a stream's start).
        let _ = self.receive.as_mut()?.decrypt_rtp(packet);
        Some(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(send: u8, receive: u8) -> SrtpKeys {
        SrtpKeys {
            tag: 1,
            send: SdesKey([send; 30]),
            receive: SdesKey([receive; 30]),
        }
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0x55; 160]);
        p
    }

    #[test]
    fn what_one_side_seals_the_other_opens_once() {
        let mut us = Srtp::new(keys(1, 2), 9).0;
        let mut them = Srtp::new(keys(2, 1), 9).0;
        // The packet sits after others in the batch buffer.
        let mut buf = b"xx".to_vec();
        buf.extend_from_slice(&rtp(7));
        assert!(us.protect(&mut buf, 2, false));
        assert_eq!(&buf[..2], b"xx", "what came before is untouched");
        let buf = buf[2..].to_vec();
        assert_eq!(buf.len(), rtp(7).len() + 10, "an 80-bit tag");
        assert_eq!(buf[..12], rtp(7)[..12], "the header stays readable");
        assert_ne!(buf[12..172], rtp(7)[12..], "the payload is encrypted");
        let opened = them.unprotect(&buf).expect("authentic");
        assert_eq!(&opened[..], &rtp(7)[..]);
        assert!(them.unprotect(&buf).is_none(), "a replay is refused");
        let mut forged = buf.clone();
        forged[20] ^= 1;
        assert!(them.unprotect(&forged).is_none(), "a forgery is refused");
        assert_eq!(them.refused, 2);
    }

    #[test]
    fn a_rekey_keeps_the_side_whose_key_stayed() {
        let mut us = Srtp::new(keys(1, 2), 9).0;
        let mut them = Srtp::new(keys(2, 1), 9).0;
        let mut p = rtp(1);
        assert!(us.protect(&mut p, 0, false));
        assert!(them.unprotect(&p).is_some());
        // They re-offer with a new key of theirs; ours stays.
        us.rekey(keys(1, 3)).unwrap();
        them.rekey(keys(3, 1)).unwrap();
        let mut p = rtp(2);
        assert!(us.protect(&mut p, 0, false));
        assert!(them.unprotect(&p).is_some());
        let mut back = rtp(9);
        assert!(them.protect(&mut back, 0, false));
        assert!(us.unprotect(&back).is_some());
    }

    #[test]
    fn a_header_longer_than_its_packet_is_dropped_not_sealed() {
        let mut us = Srtp::new(keys(1, 2), 9).0;
        // X set, a one-word extension whose words are missing.
        let mut p = vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 1];
        p.extend_from_slice(&[0x1f; 17]);
        let mut buf = b"xx".to_vec();
        let short = {
            let mut q = p.clone();
            q.truncate(15);
            q
        };
        buf.extend_from_slice(&short);
        assert!(!us.protect(&mut buf, 2, true));
        assert_eq!(buf, b"xx", "nothing of it stays in the batch");
        assert!(us.unprotect(&short).is_none());
    }

    #[test]
    fn a_flood_of_made_up_sources_neither_grows_nor_stops_the_call() {
        let mut us = Srtp::new(keys(1, 2), 9).0;
        let mut them = Srtp::new(keys(2, 1), 9).0;
        let mut first = rtp(1);
        assert!(them.protect(&mut first, 0, false));
        assert!(us.unprotect(&first).is_some());
        for ssrc in 0..10_000u32 {
            let mut junk = rtp(2);
            junk[8..12].copy_from_slice(&ssrc.to_be_bytes());
            junk.extend_from_slice(&[0; 10]);
            assert!(us.unprotect(&junk).is_none());
        }
        assert!(us.probed <= MAX_PROBED && us.known.len() == 1);
        let mut next = rtp(2);
        assert!(them.protect(&mut next, 0, false));
        assert!(
            us.unprotect(&next).is_some(),
            "the caller still gets through"
        );
    }
}
