//! SDP (RFC 8866, formerly RFC 4566) and the offer/answer model (RFC 3264)
//! for an IVR that takes calls from SIP trunks.
//!
//! The IVR speaks exactly one kind of media: one G.711 audio stream
//! ([`Codec::Pcmu`] or [`Codec::Pcma`]) over plain RTP (`RTP/AVP`), with
//! RFC 4733 `telephone-event` for DTMF. That narrow scope keeps negotiation
//! a handful of plain rules instead of a general SDP engine:
//!
//! * [`parse()`] reads what the trunk sent. It is hand-written and liberal
//!   (CRLF or LF, stray whitespace, unknown lines and attributes are
//!   skipped) but rejects text that is not SDP with an [`SdpError`] naming
//!   the line. It never panics, whatever the input.
//! * [`answer`] answers an offer from an INVITE (RFC 3264 section 6).
//! * [`offer`] writes our offer for a delayed-offer INVITE (one without a
//!   body: our offer goes in the 200 OK, the answer comes in the ACK), and
//!   [`accept_answer`] takes that answer.
//!
//! All of it is pure: text in, text and a [`Negotiated`] out. Sockets belong
//! to the server layer, which reads [`Negotiated`] to know where to send RTP.

mod negotiate;
mod parse;
pub mod sdes;
mod session;
#[cfg(test)]
mod tests;
mod write;

use std::fmt;

pub use negotiate::{
    accept_answer, answer, offer, offer_codecs, LocalMedia, Negotiated, NegotiationError,
};
pub use parse::{parse, Fmtp, MediaDescription, Origin, RtpMap, SdpError, SessionDescription};
pub use session::{MediaSession, SessionError};

/// The RTP clock rate of every codec we speak and of the DTMF events we
/// send with them: G.711 is sampled at 8 kHz (RFC 3551 section 4.5.14).
pub const CLOCK_RATE: u32 = 8000;

/// The packetisation interval we ask for and use by default, in
/// milliseconds; 20 ms is what RFC 3551 section 4.5 recommends for G.711
/// and what every trunk accepts.
pub const DEFAULT_PTIME_MS: u32 = 20;

/// The payload type we offer `telephone-event` at. RFC 4733 gives it no
/// static number; 101 is what Asterisk, FreeSWITCH and SIPp's DTMF pcaps
/// use, so offering it avoids rewriting payload types anywhere.
pub const OFFERED_DTMF_PAYLOAD_TYPE: u8 = 101;

/// An audio codec the IVR can send and receive: the two G.711 laws.
///
/// Every trunk supports at least one of them and they need no transcoding
/// library, so the prompt cache can store both encodings ready to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 mu-law, static payload type 0 (RFC 3551 section 6); the North
    /// American and Japanese default.
    Pcmu,
    /// G.711 A-law, static payload type 8 (RFC 3551 section 6); the default
    /// nearly everywhere else.
    Pcma,
}

impl Codec {
    /// Both codecs, in the order we prefer them in our own offers.
    pub const ALL: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

    /// The static RTP payload type of the codec (RFC 3551 section 6).
    ///
    /// A peer may map either codec to a dynamic payload type instead; the
    /// number to put in RTP headers is then [`Negotiated::payload_type`].
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name as written in `a=rtpmap` (RFC 3551 section 6).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec for a static payload type, for formats offered without an
    /// `a=rtpmap` (allowed for static types, RFC 8866 section 6.6).
    pub fn from_static_payload_type(payload_type: u8) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|codec| codec.payload_type() == payload_type)
    }

    /// The codec for an `a=rtpmap` encoding name and clock rate. Encoding
    /// names are case-insensitive (RFC 8866 section 6.6), and G.711 is only
    /// ever defined at 8000 Hz.
    pub fn from_encoding(name: &str, clock_rate: u32) -> Option<Codec> {
        if clock_rate != CLOCK_RATE {
            return None;
        }
        Codec::ALL
            .into_iter()
            .find(|codec| codec.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name(), CLOCK_RATE)
    }
}

/// Which way media flows on a stream, from the point of view of the side
/// whose SDP carries the attribute (RFC 8866 sections 6.7.1-6.7.4).
///
/// Holding a call is an offer of `sendonly` (RFC 3264 section 8.4); the
/// answer then says `recvonly`, see [`Direction::reversed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Both ways; the default when no direction attribute is present.
    #[default]
    SendRecv,
    /// This side only sends: offered by a side that puts the other on hold.
    SendOnly,
    /// This side only receives.
    RecvOnly,
    /// No media either way, but the stream stays set up.
    Inactive,
}

impl Direction {
    /// The direction attribute name as written in SDP (`a=sendrecv`, ...).
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Parses a direction attribute name; `None` for other attributes.
    pub fn from_attribute(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|direction| direction.attribute().eq_ignore_ascii_case(name))
    }

    /// The same flow seen from the other side: what an answer says to an
    /// offer's direction when it accepts it as is (RFC 3264 section 6.1).
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// This direction with sending taken away: used when the peer gave no
    /// address to send to (`c=0.0.0.0`, RFC 3264 section 8.4).
    pub fn without_sending(self) -> Direction {
        match self {
            Direction::SendRecv | Direction::RecvOnly => Direction::RecvOnly,
            Direction::SendOnly | Direction::Inactive => Direction::Inactive,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute())
    }
}
