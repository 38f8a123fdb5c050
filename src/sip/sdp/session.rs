//! One leg's offer/answer state (RFC 3264): every SDP a leg sends or takes
//! goes through its [`MediaSession`]. The first answer or offer, the answer
//! in an ACK or a 2xx, and every re-INVITE, whichever side made the call.

use std::net::IpAddr;

use super::negotiate::{accept_answer_with, answer_with, offer_codecs};
use super::sdes::SdesKey;
use super::{parse, Codec, LocalMedia, Negotiated, NegotiationError, SessionDescription};

/// Why a description could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// It is not SDP.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// It is SDP we cannot agree to.
    #[error(transparent)]
    Refused(#[from] NegotiationError),
}

impl SessionError {
    /// The Warning code for a 488 (RFC 3261 section 20.43).
    pub fn warning_code(&self) -> u16 {
        match self {
            SessionError::Malformed(_) => 399,
            SessionError::Refused(e) => e.warning_code(),
        }
    }
}

/// One leg's media as offer/answer shapes it.
#[derive(Debug, Clone)]
pub struct MediaSession {
    local: LocalMedia,
    /// The codecs this leg may agree on (a bridged leg: the caller's only,
    /// so that audio is relayed as it is).
    codecs: Vec<Codec>,
    /// A description went out already: the next one is a new version of
    /// the session (RFC 3264 section 8).
    sent: bool,
    negotiated: Option<Negotiated>,
    /// The codecs our last offer listed: its answer may pick only one of
    /// them (RFC 3264 6.1).
    offered: Vec<Codec>,
    /// Our SRTP key, when this leg may use SRTP (its signalling is over
    /// TLS): an `RTP/SAVP` offer is then answered in kind.
    srtp_key: Option<SdesKey>,
    /// The SRTP tag of our last offer, when it was one.
    offered_srtp: Option<u32>,
    /// This leg takes SRTP only: our first offer is `RTP/SAVP`, and a
    /// plain RTP offer or answer is refused (a leg configured for secure
    /// media never falls back to the clear).
    srtp_only: bool,
}

/// The `a=crypto` tag of an SRTP offer of ours (RFC 4568 9.1: any
/// number, unique within the media line).
const OUR_CRYPTO_TAG: u32 = 1;

fn parse_body(body: &[u8]) -> Result<SessionDescription, SessionError> {
    parse(&String::from_utf8_lossy(body)).map_err(|e| SessionError::Malformed(e.to_string()))
}

impl MediaSession {
    /// A leg receiving RTP at `local`, agreeing on any codec we speak.
    pub fn new(local: LocalMedia) -> Self {
        Self::with_codecs(local, &Codec::ALL)
    }

    /// A leg that may agree only on `codecs`.
    pub fn with_codecs(local: LocalMedia, codecs: &[Codec]) -> Self {
        Self {
            local,
            codecs: codecs.to_vec(),
            sent: false,
            negotiated: None,
            offered: Vec::new(),
            srtp_key: None,
            offered_srtp: None,
            srtp_only: false,
        }
    }

    /// Lets this leg take SRTP (RFC 4568), sending with `key`: only for a
    /// leg whose signalling is over TLS, since SDES keys travel in SDP.
    pub fn with_srtp(mut self, key: SdesKey) -> Self {
        self.srtp_key = Some(key);
        self
    }

    /// Makes this leg SRTP only, sending with `key`: for a call we place
    /// over TLS to a peer configured for secure media. Our offer is
    /// `RTP/SAVP` with `AES_CM_128_HMAC_SHA1_80`, and nothing in the clear
    /// is agreed to.
    pub fn srtp_only(mut self, key: SdesKey) -> Self {
        self.srtp_key = Some(key);
        self.srtp_only = true;
        self
    }

    /// Whether this leg has an SRTP key: every description it sends may
    /// carry it, so each must go over TLS only.
    pub fn has_srtp_key(&self) -> bool {
        self.srtp_key.is_some()
    }

    /// Whether `offer` could be answered by a leg receiving at `addr`: a
    /// check before any port is taken (the port does not change what can
    /// be agreed).
    /// With `srtp`, an SRTP offer counts as answerable (what this returns
    /// carries no keys: they come with the answer).
    pub fn check_offer(offer: &[u8], addr: IpAddr, srtp: bool) -> Result<Negotiated, SessionError> {
        let local = LocalMedia {
            addr,
            port: 0,
            session_id: 0,
            session_version: 1,
        };
        let offer = parse_body(offer)?;
        let placeholder = SdesKey([0; super::sdes::KEY_LEN]);
        let mut agreed = answer_with(&offer, &local, &Codec::ALL, srtp.then_some(&placeholder))?.1;
        // Whether SRTP would be used is all a check says: no placeholder
        // key may reach a call.
        agreed.srtp = None;
        Ok(agreed)
    }

    /// Where this leg receives RTP.
    pub fn local(&self) -> &LocalMedia {
        &self.local
    }

    /// What was agreed last, if anything.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    fn next_version(&mut self) {
        if self.sent {
            self.local.session_version += 1;
        }
        self.sent = true;
    }

    /// Our offer: in an INVITE we send, or in the 2xx to one that came
    /// without SDP.
    pub fn offer(&mut self) -> String {
        self.next_version();
        self.offered = self.codecs.clone();
        // A first offer of ours is plain RTP (we cannot know the peer
        // takes SRTP) unless the leg is SRTP only; later ones keep what
        // was agreed.
        let crypto = self.agreed_crypto();
        self.offered_srtp = crypto.map(|(tag, _)| tag);
        offer_codecs(
            &self.local,
            &self.codecs,
            crypto.as_ref().map(|(t, k)| (*t, k)),
        )
    }

    /// The SRTP tag and our key to offer with: what the session agreed
    /// on, else (an SRTP-only leg) our own tag.
    fn agreed_crypto(&self) -> Option<(u32, SdesKey)> {
        let agreed = self
            .negotiated
            .and_then(|n| n.srtp)
            .map(|keys| (keys.tag, keys.send));
        agreed.or_else(|| {
            self.srtp_key
                .filter(|_| self.srtp_only)
                .map(|key| (OUR_CRYPTO_TAG, key))
        })
    }

    /// Refuses plain RTP on an SRTP-only leg.
    fn secure_enough(&self, agreed: &Negotiated) -> Result<(), SessionError> {
        if self.srtp_only && agreed.srtp.is_none() {
            return Err(SessionError::Refused(
                NegotiationError::UnsupportedTransport("RTP/AVP (this leg takes SRTP only)".into()),
            ));
        }
        Ok(())
    }

    /// Answers the peer's offer. A refused offer changes nothing: the
    /// media agreed before stays (RFC 3264 section 8: a rejected
    /// re-offer leaves the session as it was).
    pub fn answer(&mut self, offer: &[u8]) -> Result<(String, Negotiated), SessionError> {
        let mut offer = parse_body(offer)?;
        if self.srtp_only {
            // Streams in the clear are rejected (port 0 in the answer), so
            // that an SRTP stream beside one is the one agreed.
            for media in &mut offer.media {
                if media.media.eq_ignore_ascii_case("audio")
                    && !media.proto.eq_ignore_ascii_case("RTP/SAVP")
                {
                    media.port = 0;
                }
            }
        }
        let mut local = self.local.clone();
        if self.sent {
            local.session_version += 1;
        }
        let (text, negotiated) = answer_with(&offer, &local, &self.codecs, self.srtp_key.as_ref())?;
        self.secure_enough(&negotiated)?;
        self.local = local;
        self.sent = true;
        self.negotiated = Some(negotiated);
        Ok((text, negotiated))
    }

    /// An offer that keeps the session as agreed (a session refresh, RFC
    /// 4028): the agreed codec alone, as a new version (every codec of
    /// ours before anything was agreed).
    pub fn refresh_offer(&mut self) -> String {
        self.next_version();
        self.offered = match self.negotiated {
            Some(n) => vec![n.codec],
            None => self.codecs.clone(),
        };
        let crypto = self.agreed_crypto();
        self.offered_srtp = crypto.map(|(tag, _)| tag);
        offer_codecs(
            &self.local,
            &self.offered,
            crypto.as_ref().map(|(t, k)| (*t, k)),
        )
    }

    /// Takes the peer's answer to our offer (from a 2xx, or an ACK).
    pub fn accept_answer(&mut self, answer: &[u8]) -> Result<Negotiated, SessionError> {
        let answer = parse_body(answer)?;
        let codecs = if self.offered.is_empty() {
            &self.codecs
        } else {
            &self.offered
        };
        let crypto = match (self.offered_srtp, self.srtp_key) {
            (Some(tag), Some(key)) => Some((tag, key)),
            _ => None,
        };
        let negotiated = accept_answer_with(&answer, codecs, crypto)?;
        self.secure_enough(&negotiated)?;
        self.negotiated = Some(negotiated);
        Ok(negotiated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalMedia {
        LocalMedia {
            addr: "127.0.0.1".parse().unwrap(),
            port: 30000,
            session_id: 7,
            session_version: 1,
        }
    }

    const PCMA_OFFER: &str = "v=0\r\no=x 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

    #[test]
    fn each_description_after_the_first_is_a_new_version() {
        let mut s = MediaSession::new(local());
        assert!(s.offer().contains("o=callflow 7 1 IN IP4"));
        let (answer, n) = s.answer(PCMA_OFFER.as_bytes()).unwrap();
        assert!(answer.contains("o=callflow 7 2 IN IP4"), "{answer}");
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(s.negotiated(), Some(&n));
    }

    #[test]
    fn a_leg_held_to_one_codec_agrees_to_no_other() {
        let mut s = MediaSession::with_codecs(local(), &[Codec::Pcmu]);
        let offer = s.offer();
        assert!(offer.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{offer}");
        let (_, n) = s.answer(PCMA_OFFER.as_bytes()).unwrap();
        assert_eq!(n.codec, Codec::Pcmu, "PCMU from the offer's list");
        let only_pcma = PCMA_OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 8 101");
        let refused = s.answer(only_pcma.as_bytes());
        assert!(
            matches!(refused, Err(SessionError::Refused(_))),
            "{refused:?}"
        );
        assert_eq!(
            s.negotiated(),
            Some(&n),
            "a refused re-offer keeps what was agreed"
        );
        assert!(
            s.accept_answer(only_pcma.as_bytes()).is_err(),
            "an answer we never offered"
        );
    }

    #[test]
    fn garbage_is_malformed_not_refused() {
        let mut s = MediaSession::new(local());
        assert!(matches!(
            s.answer(b"\xff\x00"),
            Err(SessionError::Malformed(_))
        ));
        assert!(MediaSession::check_offer(PCMA_OFFER.as_bytes(), local().addr, false).is_ok());
    }

    #[test]
    fn the_answer_to_a_refresh_may_pick_only_the_codec_offered() {
        let mut session = MediaSession::new(local());
        session.answer(PCMA_OFFER.as_bytes()).unwrap();
        let offer = session.refresh_offer();
        assert!(offer.contains("m=audio 30000 RTP/AVP 8 101"), "{offer}");
        let pcmu = "v=0\r\no=x 1 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert!(
            session.accept_answer(pcmu.as_bytes()).is_err(),
            "not offered"
        );
        let pcma = pcmu.replace("RTP/AVP 0", "RTP/AVP 8");
        assert!(session.accept_answer(pcma.as_bytes()).is_ok());
    }

    #[test]
    fn an_srtp_session_answers_in_kind_and_refreshes_with_its_key() {
        use crate::sip::sdp::sdes::{self, SdesKey};
        let theirs = sdes::attribute(3, &SdesKey([9; 30]));
        let offer = PCMA_OFFER.replace("RTP/AVP", "RTP/SAVP") + &format!("a=crypto:{theirs}\r\n");
        // Without a key of ours (no TLS), refused.
        assert!(MediaSession::new(local()).answer(offer.as_bytes()).is_err());
        assert!(MediaSession::check_offer(offer.as_bytes(), local().addr, false).is_err());
        assert!(MediaSession::check_offer(offer.as_bytes(), local().addr, true).is_ok());
        let mut session = MediaSession::new(local()).with_srtp(SdesKey([1; 30]));
        let (answer, agreed) = session.answer(offer.as_bytes()).unwrap();
        assert!(
            answer.contains("m=audio 30000 RTP/SAVP 8 101\r\n"),
            "{answer}"
        );
        let ours = sdes::attribute(3, &SdesKey([1; 30]));
        assert!(answer.contains(&format!("a=crypto:{ours}\r\n")), "{answer}");
        let keys = agreed.srtp.expect("SRTP agreed");
        assert_eq!(
            (keys.tag, keys.send, keys.receive),
            (3, SdesKey([1; 30]), SdesKey([9; 30]))
        );
        // A session refresh offers the same key under the same tag; the
        // answer may bring a new key of theirs, never plain RTP.
        let refresh = session.refresh_offer();
        assert!(refresh.contains("RTP/SAVP 8 101"), "{refresh}");
        assert!(
            refresh.contains(&format!("a=crypto:{ours}\r\n")),
            "{refresh}"
        );
        let rekeyed = sdes::attribute(3, &SdesKey([5; 30]));
        let answer = PCMA_OFFER.replace("RTP/AVP 8 0 101", "RTP/SAVP 8 101")
            + &format!("a=crypto:{rekeyed}\r\n");
        let agreed = session.accept_answer(answer.as_bytes()).unwrap();
        assert_eq!(agreed.srtp.map(|k| k.receive), Some(SdesKey([5; 30])));
        session.refresh_offer();
        let plain = PCMA_OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 8 101");
        assert!(session.accept_answer(plain.as_bytes()).is_err());
    }

    #[test]
    fn an_srtp_only_leg_offers_srtp_and_agrees_to_nothing_in_the_clear() {
        use crate::sip::sdp::sdes::{self, SdesKey};
        let mut session = MediaSession::new(local()).srtp_only(SdesKey([1; 30]));
        let offer = session.offer();
        assert!(offer.contains("m=audio 30000 RTP/SAVP 0 8 101"), "{offer}");
        let ours = sdes::attribute(1, &SdesKey([1; 30]));
        assert!(offer.contains(&format!("a=crypto:{ours}\r\n")), "{offer}");
        // An answer in the clear to our SRTP offer is refused.
        let plain = PCMA_OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 8 101");
        assert!(session.accept_answer(plain.as_bytes()).is_err());
        assert_eq!(session.negotiated(), None);
        // One taking it, with a key of its own under our tag, is agreed.
        let theirs = sdes::attribute(1, &SdesKey([9; 30]));
        let answer = PCMA_OFFER.replace("RTP/AVP 8 0 101", "RTP/SAVP 8 101")
            + &format!("a=crypto:{theirs}\r\n");
        let agreed = session.accept_answer(answer.as_bytes()).unwrap();
        let keys = agreed.srtp.expect("SRTP agreed");
        assert_eq!(
            (keys.tag, keys.send, keys.receive),
            (1, SdesKey([1; 30]), SdesKey([9; 30]))
        );
        // A re-offer that drops to plain RTP is refused and changes
        // nothing; one in SRTP is answered in kind.
        assert!(matches!(
            session.answer(plain.as_bytes()),
            Err(SessionError::Refused(_))
        ));
        assert_eq!(session.negotiated(), Some(&agreed));
        // An offer with a stream in the clear before an SRTP one: the SRTP
        // one is agreed, the other rejected.
        let reoffer = format!(
            "{}m=audio 4002 RTP/SAVP 8 101\r\na=crypto:{}\r\n",
            PCMA_OFFER,
            sdes::attribute(4, &SdesKey([6; 30]))
        );
        let (text, n) = session.answer(reoffer.as_bytes()).unwrap();
        assert!(text.contains("m=audio 0 RTP/AVP"), "{text}");
        assert!(text.contains("m=audio 30000 RTP/SAVP 8\r\n"), "{text}");
        assert_eq!(n.remote.port(), 4002);
        assert_eq!(
            n.srtp.map(|k| (k.tag, k.receive)),
            Some((4, SdesKey([6; 30])))
        );
    }
}
