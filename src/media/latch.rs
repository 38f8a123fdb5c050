//! Which RTP a call accepts: symmetric RTP with latching (RFC 4961). A
//! datagram that reaches a call's port is a claim, not a fact: anyone who
//! finds the port could press keys in someone else's call. So RTP counts
//! only from the address the caller's SDP gave (or, for a peer behind NAT,
//! the first address seen), and only for the SSRC first seen from it: one
//! for audio and one for RFC 4733 events, since some gateways send the two
//! as separate streams.

use std::net::SocketAddr;

use crate::sip::admission::Networks;

/// Where a call's RTP goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPeer {
    /// The address to send to.
    pub addr: SocketAddr,
    /// Whether only new media can change it: it is the latched source, or
    /// the SDP's address where no other source may be latched. The edge
    /// may then connect the call's socket to it, so the kernel routes once
    /// and drops strangers' datagrams before we see them.
    pub fixed: bool,
}

/// The latch of one call's inbound RTP.
#[derive(Debug, Clone)]
pub struct RtpLatch {
    /// The SDP's address and port; `None` until media is negotiated.
    expected: Option<SocketAddr>,
    /// Latch the first source whatever the SDP says (a peer behind NAT,
    /// whose SDP names its private address).
    latch_first: bool,
    /// Where a first source may be latched from (the trunk's media
    /// networks): NAT latching never takes a stranger's address.
    media: Networks,
    source: Option<SocketAddr>,
    audio_ssrc: Option<u32>,
    event_ssrc: Option<u32>,
    audio_payload_type: Option<u8>,
    event_payload_type: Option<u8>,
    dropped: u64,
}

impl RtpLatch {
    /// A latch that accepts nothing until [`RtpLatch::expect`].
    pub fn new(latch_first: bool, media: Networks) -> Self {
        Self {
            expected: None,
            latch_first,
            media,
            source: None,
            audio_ssrc: None,
            event_ssrc: None,
            audio_payload_type: None,
            event_payload_type: None,
            dropped: 0,
        }
    }

    /// New media was negotiated (answer, ACK, re-INVITE): latch afresh to
    /// `remote`, whose audio uses `audio_payload_type` and whose RFC 4733
    /// events use `event_payload_type`.
    pub fn expect(
        &mut self,
        remote: SocketAddr,
        audio_payload_type: u8,
        event_payload_type: Option<u8>,
    ) {
        if self.expected != Some(remote) {
            self.source = None;
            self.audio_ssrc = None;
            self.event_ssrc = None;
        }
        self.expected = Some(remote);
        self.audio_payload_type = Some(audio_payload_type);
        self.event_payload_type = event_payload_type;
    }

    /// Whether `packet` from `from` belongs to the call.
    pub fn accept(&mut self, from: SocketAddr, packet: &[u8]) -> bool {
        let ok = self.check(from, packet);
        if !ok {
            self.dropped += 1;
        }
        ok
    }

    fn check(&mut self, from: SocketAddr, packet: &[u8]) -> bool {
        let Some(expected) = self.expected else {
            return false;
        };
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return false;
        }
        let payload_type = Some(packet[1] & 0x7f);
        let negotiated =
            payload_type == self.audio_payload_type || payload_type == self.event_payload_type;
        match self.source {
            Some(source) if source != from => return false,
            Some(_) => {}
            None if from == expected => self.source = Some(from),
            // Latching decides where our RTP goes too, so a first source
            // other than the SDP's must at least send what was negotiated
            // (a port scan with random datagrams latches nothing).
            None if self.latch_first && self.media.contains(from.ip()) && negotiated => {
                self.source = Some(from)
            }
            None => return false,
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let is_event = self.event_payload_type == payload_type;
        let latched = if is_event {
            &mut self.event_ssrc
        } else {
            &mut self.audio_ssrc
        };
        *latched.get_or_insert(ssrc) == ssrc
    }

    /// Where RTP to the peer goes: the latched source once there is one
    /// (symmetric RTP, RFC 4961: a peer behind NAT is reached where it
    /// sends from, not at the private address its SDP names), else the
    /// SDP's address.
    pub fn peer(&self) -> Option<RtpPeer> {
        match (self.source, self.expected) {
            (Some(addr), _) => Some(RtpPeer { addr, fixed: true }),
            // Without NAT latching only this address is ever accepted.
            (None, Some(addr)) => Some(RtpPeer {
                addr,
                fixed: !self.latch_first,
            }),
            (None, None) => None,
        }
    }

    /// The latched source, and the SSRCs taken from it for audio and for
    /// events: what a relay rule may let through without asking again.
    pub fn latched(&self) -> Option<(SocketAddr, Option<u32>, Option<u32>)> {
        Some((self.source?, self.audio_ssrc, self.event_ssrc))
    }

    /// Datagrams refused so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 1, 0, 0, 0, 160];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 4]);
        p
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_sdp_address_and_its_first_ssrcs_are_accepted() {
        let mut latch = RtpLatch::new(false, Networks::default());
        assert!(
            !latch.accept(addr("192.0.2.1:6000"), &rtp(0, 1)),
            "no media yet"
        );
        latch.expect(addr("192.0.2.1:6000"), 0, Some(101));
        assert_eq!(
            latch.peer(),
            Some(RtpPeer {
                addr: addr("192.0.2.1:6000"),
                fixed: true
            }),
            "no other source may be latched: fixed before the first packet"
        );
        assert!(
            !latch.accept(addr("198.51.100.9:6000"), &rtp(101, 1)),
            "another host"
        );
        assert!(
            !latch.accept(addr("192.0.2.1:6001"), &rtp(101, 1)),
            "another port"
        );
        assert!(latch.accept(addr("192.0.2.1:6000"), &rtp(0, 7)));
        assert!(
            latch.accept(addr("192.0.2.1:6000"), &rtp(101, 8)),
            "events may have their own SSRC"
        );
        assert!(
            !latch.accept(addr("192.0.2.1:6000"), &rtp(101, 9)),
            "but only one"
        );
        assert!(!latch.accept(addr("192.0.2.1:6000"), &rtp(0, 9)));
        assert!(
            !latch.accept(addr("192.0.2.1:6000"), &[0x80, 0]),
            "too short"
        );
        assert_eq!(latch.dropped(), 6);
        latch.expect(addr("192.0.2.2:7000"), 0, Some(101));
        assert!(
            latch.accept(addr("192.0.2.2:7000"), &rtp(0, 9)),
            "a re-INVITE latches anew"
        );
    }

    fn nets(net: &str) -> Networks {
        Networks::new(vec![net.parse().unwrap()])
    }

    #[test]
    fn behind_nat_the_first_source_is_latched() {
        let mut latch = RtpLatch::new(true, nets("203.0.113.0/24"));
        assert_eq!(latch.peer(), None, "no media yet");
        latch.expect(addr("10.0.0.5:6000"), 0, None);
        let unlatched = RtpPeer {
            addr: addr("10.0.0.5:6000"),
            fixed: false,
        };
        assert_eq!(latch.peer(), Some(unlatched), "the SDP's address first");
        assert!(latch.accept(addr("203.0.113.5:40000"), &rtp(0, 1)));
        assert!(!latch.accept(addr("203.0.113.6:40000"), &rtp(0, 1)));
        assert_eq!(
            latch.peer(),
            Some(RtpPeer {
                addr: addr("203.0.113.5:40000"),
                fixed: true
            }),
            "then where the peer sends from"
        );
        latch.expect(addr("10.0.0.6:6000"), 0, None);
        assert_eq!(
            latch.peer().map(|p| p.fixed),
            Some(false),
            "new media unlatches"
        );
    }

    #[test]
    fn behind_nat_a_first_source_must_send_a_negotiated_payload_type() {
        let mut latch = RtpLatch::new(true, nets("203.0.113.0/24"));
        latch.expect(addr("10.0.0.5:6000"), 8, Some(101));
        assert!(
            !latch.accept(addr("203.0.113.9:40000"), &rtp(0, 1)),
            "PCMU was not negotiated"
        );
        assert_eq!(latch.peer().map(|p| p.fixed), Some(false), "not latched");
        assert!(latch.accept(addr("203.0.113.5:40000"), &rtp(8, 1)));
        assert_eq!(
            latch.peer().map(|p| p.addr),
            Some(addr("203.0.113.5:40000"))
        );
    }

    #[test]
    fn behind_nat_a_first_source_outside_the_media_networks_is_not_latched() {
        let mut latch = RtpLatch::new(true, nets("203.0.113.0/24"));
        latch.expect(addr("10.0.0.5:6000"), 0, None);
        assert!(!latch.accept(addr("198.51.100.7:40000"), &rtp(0, 1)));
        assert!(latch.accept(addr("203.0.113.5:40000"), &rtp(0, 1)));
    }
}
