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

/// One leg's SRTP contexts.
pub(super) struct Srtp {
    keys: SrtpKeys,
    send: Context,
    receive: Context,
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

impl Srtp {
    /// Contexts for `keys`.
    pub(super) fn new(keys: SrtpKeys) -> Result<Self, String> {
        Ok(Self {
            send: context(&keys.send, false)?,
            receive: context(&keys.receive, true)?,
            keys,
            refused: 0,
        })
    }

    /// New keys from a re-offer: only a context whose key changed starts
    /// afresh (a kept one keeps its rollover counter, RFC 3711 3.3.1).
    pub(super) fn rekey(&mut self, keys: SrtpKeys) -> Result<(), String> {
        if keys.send != self.keys.send {
            self.send = context(&keys.send, false)?;
        }
        if keys.receive != self.keys.receive {
            self.receive = context(&keys.receive, true)?;
        }
        self.keys = keys;
        Ok(())
    }

    /// Encrypts the RTP packet at `buf[start..]` in place (it grows by the
    /// 10-byte authentication tag); false, with the packet removed, if it
    /// could not be (then it must not go out in the clear).
    pub(super) fn protect(&mut self, buf: &mut Vec<u8>, start: usize) -> bool {
        match self.send.encrypt_rtp(&buf[start..]) {
            Ok(sealed) => {
                buf.truncate(start);
                buf.extend_from_slice(&sealed);
                true
            }
            Err(_) => {
                buf.truncate(start);
                false
            }
        }
    }

    /// The RTP packet inside an SRTP one, if it is authentic and new.
    pub(super) fn unprotect(&mut self, packet: &[u8]) -> Option<bytes::BytesMut> {
        match self.receive.decrypt_rtp(packet) {
            Ok(plain) => Some(plain),
            Err(_) => {
                self.refused += 1;
                None
            }
        }
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
        let mut us = Srtp::new(keys(1, 2)).unwrap();
        let mut them = Srtp::new(keys(2, 1)).unwrap();
        // The packet sits after others in the batch buffer.
        let mut buf = b"xx".to_vec();
        buf.extend_from_slice(&rtp(7));
        assert!(us.protect(&mut buf, 2));
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
        let mut us = Srtp::new(keys(1, 2)).unwrap();
        let mut them = Srtp::new(keys(2, 1)).unwrap();
        let mut p = rtp(1);
        assert!(us.protect(&mut p, 0));
        assert!(them.unprotect(&p).is_some());
        // They re-offer with a new key of theirs; ours stays.
        us.rekey(keys(1, 3)).unwrap();
        them.rekey(keys(3, 1)).unwrap();
        let mut p = rtp(2);
        assert!(us.protect(&mut p, 0));
        assert!(them.unprotect(&p).is_some());
        let mut back = rtp(9);
        assert!(them.protect(&mut back, 0));
        assert!(us.unprotect(&back).is_some());
    }
}
