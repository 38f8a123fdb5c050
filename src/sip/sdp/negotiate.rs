//! The offer/answer model (RFC 3264) reduced to what an IVR needs: one
//! G.711 audio stream plus RFC 4733 DTMF, everything else rejected.

use std::net::{IpAddr, SocketAddr};

use super::sdes::{self, SdesKey, SrtpKeys};
use super::write::{self, Format};
use super::{
    Codec, Direction, MediaDescription, SessionDescription, CLOCK_RATE, DEFAULT_PTIME_MS,
    OFFERED_DTMF_PAYLOAD_TYPE,
};

/// The RFC 4733 encoding name for DTMF and other telephony events.
const TELEPHONE_EVENT: &str = "telephone-event";

/// The events we offer: DTMF 0-9, *, #, A-D (0-15) and flash (16), the
/// set Asterisk and most trunks offer (RFC 4733 section 3.2).
const OFFERED_EVENTS: &str = "0-16";

/// The events RFC 4733 section 7.1.1 implies when an offer has no fmtp.
const DEFAULT_EVENTS: &str = "0-15";

/// Packet intervals we accept from a peer's `a=ptime`; anything outside is
/// treated as a typo and replaced by [`DEFAULT_PTIME_MS`].
const PTIME_RANGE_MS: std::ops::RangeInclusive<u32> = 10..=60;

/// How many offered formats a [`NegotiationError::NoCommonCodec`] lists, so
/// that a hostile offer cannot make a Warning header of any length.
const MAX_LISTED_FORMATS: usize = 8;

/// Our side of the media: where we receive RTP and how our `o=` line reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address we receive RTP on, written in `o=` and `c=` (as
    /// `IN IP4` or `IN IP6`). It must be reachable by the peer, so never a
    /// wildcard address.
    pub addr: IpAddr,
    /// The UDP port we receive RTP on (RTCP, if any, is the next one up,
    /// RFC 3550 section 11).
    pub port: u16,
    /// The `o=` session id: chosen once per dialog and then kept, since it
    /// identifies the session (RFC 8866 section 5.2).
    pub session_id: u64,
    /// The `o=` session version. It is the caller's to increment: each SDP
    /// we send later in the same dialog (e.g. answering a re-INVITE) must
    /// carry the previous version plus one if anything changed, and the
    /// same version if nothing did (RFC 3264 section 8). This module writes
    /// it as given.
    pub session_version: u64,
}

/// What the call will use after negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The audio codec, the same both ways.
    pub codec: Codec,
    /// The RTP payload type of [`Negotiated::codec`], for RTP headers both
    /// ways: usually its static number, but a peer may have mapped it to a
    /// dynamic one, which must then be used (RFC 3264 section 6.1).
    pub payload_type: u8,
    /// Where to send RTP: the peer's `c=` address and `m=` port. An
    /// unspecified address (`c=0.0.0.0`, the RFC 2543 way of holding a
    /// call) means send nothing (RFC 3264 section 8.4); [`Negotiated::direction`]
    /// then already excludes sending. Port 0 would mean the same, but a
    /// stream with port 0 is never negotiated. Use [`Negotiated::sends_rtp`].
    pub remote: SocketAddr,
    /// The payload type of RFC 4733 `telephone-event`, both ways; `None` if
    /// the peer did not offer it (then DTMF can only come by SIP INFO).
    pub dtmf_payload_type: Option<u8>,
    /// Milliseconds of audio per RTP packet we send: the peer's `a=ptime`
    /// (what it prefers to receive, RFC 8866 section 6.4) capped by its
    /// `a=maxptime`, or 20 if it stated neither (or nonsense).
    pub ptime_ms: u32,
    /// Our direction as answered: `RecvOnly` when the peer holds the call,
    /// `Inactive` when neither side may send (RFC 3264 section 6.1).
    pub direction: Direction,
    /// SRTP's keys when the stream is `RTP/SAVP` (RFC 4568); `None` for
    /// plain RTP.
    pub srtp: Option<SrtpKeys>,
}

impl Negotiated {
    /// Whether we may send RTP now: our direction allows it and the peer
    /// gave an address to send to.
    pub fn sends_rtp(&self) -> bool {
        self.direction.sends() && !self.remote.ip().is_unspecified() && self.remote.port() != 0
    }

    /// Whether the peer may send us RTP now (so silence is not a fault).
    pub fn receives_rtp(&self) -> bool {
        self.direction.receives()
    }
}

/// Why an offer (or answer) cannot be used. For an offer, every variant
/// means "answer 488 Not Acceptable Here" (RFC 3261 section 13.3.1.3) with
/// a Warning header built from [`NegotiationError::warning_code`] and the
/// Display text, which never contains quotes or backslashes so it can go
/// inside the Warning's quoted string as is. For an answer in an ACK there
/// is nothing to respond to, so the call is ended with a BYE instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// No usable audio stream: no `m=audio` line, or every one has port 0.
    #[error("no audio stream offered")]
    NoAudio,
    /// Audio is offered over RTP/AVP, but in neither PCMU nor PCMA.
    #[error("no common codec: offered {offered}; we accept PCMU/8000 and PCMA/8000")]
    NoCommonCodec {
        /// The offered formats, for the Warning text and the logs.
        offered: String,
    },
    /// Audio is offered only over a transport we do not take: anything
    /// but RTP/AVP, or RTP/SAVP (SRTP) on a call whose signalling is not
    /// over TLS or whose keys are in a form we do not take.
    #[error("media transport {0} is not supported here")]
    UnsupportedTransport(String),
    /// Our SRTP offer was answered without a key under its tag.
    #[error("the answer has no SRTP key for our offer")]
    NoUsableKey,
    /// The audio stream has no `c=` line, neither its own nor at session
    /// level (RFC 8866 section 5.7 requires one or the other).
    #[error("no connection address (c=) for the audio stream")]
    NoConnectionAddress,
    /// The peer's media address is of the other IP family than ours, so
    /// neither side could reach the other.
    #[error("media address {theirs} cannot be reached from our address {ours}")]
    AddressFamilyMismatch {
        /// Our media address.
        ours: IpAddr,
        /// The peer's media address.
        theirs: IpAddr,
    },
}

impl NegotiationError {
    /// The RFC 3261 section 20.43 warning code that fits this error, for the
    /// Warning header of the 488.
    pub fn warning_code(&self) -> u16 {
        match self {
            NegotiationError::NoAudio => 304,
            NegotiationError::NoCommonCodec { .. } => 305,
            NegotiationError::UnsupportedTransport(_) => 302,
            NegotiationError::NoUsableKey => 399,
            NegotiationError::NoConnectionAddress => 399,
            NegotiationError::AddressFamilyMismatch { .. } => 301,
        }
    }
}

/// Answers an offer (RFC 3264 section 6).
///
/// The rules, each because of what an IVR is:
/// * Audio: the first `m=audio` stream with a non-zero port, `RTP/AVP`
///   transport and a common codec is accepted. The codec is the first of
///   the peer's formats that is PCMU or PCMA (the peer's order is its
///   preference, RFC 3264 section 6.1): static 0 or 8, or any payload type
///   whose `a=rtpmap` says `PCMU/8000` or `PCMA/8000`. The answer lists only
///   that codec, at the peer's payload type, so it cannot change mid-call.
/// * DTMF: if the peer offered `telephone-event/8000`, it is accepted at the
///   peer's payload type with the peer's `a=fmtp` echoed (or `0-15`, the
///   RFC 4733 default).
/// * Every other `m=` line (video, T.38, a second audio stream) is answered
///   with port 0, in the offer's order, as RFC 3264 section 6 requires.
/// * Direction mirrors the offer: sendrecv to sendrecv, sendonly (hold) to
///   recvonly, recvonly to sendonly, inactive to inactive. If the offer's
///   address is unspecified (`c=0.0.0.0`, RFC 2543 hold) we have nowhere
///   to send, so sending is dropped: recvonly or inactive.
/// * We ask for 20 ms packets; we send at the peer's `a=ptime`.
///
/// Returns the answer text and what was agreed.
pub fn answer(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<(String, Negotiated), NegotiationError> {
    answer_with(offer, local, &Codec::ALL, None)
}

/// [`answer`], agreeing only to one of `codecs`; with `srtp_key`, an
/// `RTP/SAVP` stream is taken too (its key is what we send with).
pub(super) fn answer_with(
    offer: &SessionDescription,
    local: &LocalMedia,
    codecs: &[Codec],
    srtp_key: Option<&SdesKey>,
) -> Result<(String, Negotiated), NegotiationError> {
    let (index, codec, payload_type, crypto) = choose_audio(offer, codecs, srtp_key.is_some())?;
    let srtp = match (crypto, srtp_key) {
        (Some((tag, theirs)), Some(ours)) => Some(SrtpKeys {
            tag,
            send: *ours,
            receive: theirs,
        }),
        _ => None,
    };
    let section = &offer.media[index];
    let remote_ip = offer
        .connection_for(section)
        .ok_or(NegotiationError::NoConnectionAddress)?;
    check_reachable(local.addr, remote_ip)?;

    let mut direction = offer.direction_for(section).reversed();
    if remote_ip.is_unspecified() {
        direction = direction.without_sending();
    }
    let dtmf = telephone_event(section);

    let mut formats = vec![Format {
        payload_type,
        encoding: codec.name(),
        fmtp: None,
    }];
    if let Some((dtmf_payload_type, events)) = dtmf {
        formats.push(Format {
            payload_type: dtmf_payload_type,
            encoding: TELEPHONE_EVENT,
            fmtp: Some(events.unwrap_or(DEFAULT_EVENTS)),
        });
    }
    let mut sdp = write::session(local);
    for (position, media) in offer.media.iter().enumerate() {
        if position == index {
            write::audio(&mut sdp, local.port, &formats, direction, srtp.as_ref());
        } else {
            write::rejected(&mut sdp, media);
        }
    }

    let negotiated = Negotiated {
        codec,
        payload_type,
        remote: SocketAddr::new(remote_ip, section.port),
        dtmf_payload_type: dtmf.map(|(payload_type, _)| payload_type),
        ptime_ms: send_ptime(section),
        direction,
        srtp,
    };
    Ok((sdp, negotiated))
}

/// Our offer, for an INVITE that came without SDP (delayed offer, RFC 3261
/// section 13.2.1): it goes in the 200 OK and the answer comes in the ACK,
/// for [`accept_answer`]. It offers PCMU, then PCMA, then
/// `telephone-event/8000` at payload type 101 with events 0-16, 20 ms
/// packets and sendrecv.
pub fn offer(local: &LocalMedia) -> String {
    offer_codecs(local, &Codec::ALL, None)
}

/// An offer like [`offer`] with only `codecs` (and telephone-event): a
/// bridged call offers the caller's codec alone, so the audio is relayed
/// as it comes, never transcoded. With `crypto` (tag and our key) it is
/// an `RTP/SAVP` offer (RFC 4568).
pub fn offer_codecs(
    local: &LocalMedia,
    codecs: &[Codec],
    crypto: Option<(u32, &SdesKey)>,
) -> String {
    let mut formats: Vec<Format<'_>> = codecs
        .iter()
        .copied()
        .map(|codec| Format {
            payload_type: codec.payload_type(),
            encoding: codec.name(),
            fmtp: None,
        })
        .collect();
    formats.push(Format {
        payload_type: OFFERED_DTMF_PAYLOAD_TYPE,
        encoding: TELEPHONE_EVENT,
        fmtp: Some(OFFERED_EVENTS),
    });
    let mut sdp = write::session(local);
    // Only our half is known yet; the answer brings the peer's.
    let keys = crypto.map(|(tag, key)| SrtpKeys {
        tag,
        send: *key,
        receive: *key,
    });
    write::audio(
        &mut sdp,
        local.port,
        &formats,
        Direction::SendRecv,
        keys.as_ref(),
    );
    sdp
}

/// Takes the answer (from the ACK) to our [`offer`] (RFC 3264 section 7).
///
/// Our offer had a single `m=audio` line, so the answer's first audio
/// stream is the one; port 0 there means the peer rejected it. The codec
/// is the first PCMU or PCMA the answer lists, DTMF its `telephone-event`,
/// and our direction the reverse of the answer's (with sending dropped if
/// the answer's address is unspecified).
pub fn accept_answer(answer: &SessionDescription) -> Result<Negotiated, NegotiationError> {
    accept_answer_with(answer, &Codec::ALL, None)
}

/// [`accept_answer`], taking only one of `codecs` (what we offered); if
/// we offered SRTP (`crypto`: its tag and our key), the answer must take
/// it with a key of its own under the same tag.
pub(super) fn accept_answer_with(
    answer: &SessionDescription,
    codecs: &[Codec],
    crypto: Option<(u32, SdesKey)>,
) -> Result<Negotiated, NegotiationError> {
    let section = answer
        .media
        .iter()
        .find(|media| is_audio(media))
        .filter(|media| media.port != 0)
        .ok_or(NegotiationError::NoAudio)?;
    let srtp = match crypto {
        None if is_rtp_avp(section) => None,
        Some((tag, ours)) if is_rtp_savp(section) => {
            let theirs = section
                .crypto
                .iter()
                .filter_map(|v| sdes::parse(&v.0))
                .find(|(t, _)| *t == tag)
                .map(|(_, key)| key)
                .ok_or(NegotiationError::NoUsableKey)?;
            Some(SrtpKeys {
                tag,
                send: ours,
                receive: theirs,
            })
        }
        _ => {
            return Err(NegotiationError::UnsupportedTransport(sanitize(
                &section.proto,
            )))
        }
    };
    let (codec, payload_type) =
        first_codec(section, codecs).ok_or_else(|| NegotiationError::NoCommonCodec {
            offered: describe_formats(section),
        })?;
    let remote_ip = answer
        .connection_for(section)
        .ok_or(NegotiationError::NoConnectionAddress)?;
    let mut direction = answer.direction_for(section).reversed();
    if remote_ip.is_unspecified() {
        direction = direction.without_sending();
    }
    Ok(Negotiated {
        codec,
        payload_type,
        remote: SocketAddr::new(remote_ip, section.port),
        dtmf_payload_type: telephone_event(section).map(|(payload_type, _)| payload_type),
        ptime_ms: send_ptime(section),
        direction,
        srtp,
    })
}

/// Finds the audio stream to accept: its index in the offer, the codec
/// and the codec's payload type. When none fits, the error describes the
/// most specific reason: a codec mismatch beats a transport mismatch beats
/// no audio at all.
#[allow(clippy::type_complexity)]
fn choose_audio(
    offer: &SessionDescription,
    codecs: &[Codec],
    srtp: bool,
) -> Result<(usize, Codec, u8, Option<(u32, SdesKey)>), NegotiationError> {
    let mut no_codec = None;
    let mut other_transport = None;
    for (index, section) in offer.media.iter().enumerate() {
        if !is_audio(section) || section.port == 0 {
            continue;
        }
        // SRTP only where it may be (keys sent over TLS), with a suite
        // and key form we take; anything else is as if not offered.
        let crypto = match (is_rtp_avp(section), is_rtp_savp(section) && srtp) {
            (true, _) => None,
            (false, true) => match sdes::first_usable(&section.crypto) {
                Some(found) => Some(found),
                None => {
                    other_transport.get_or_insert_with(|| {
                        format!("{} without a key we take", sanitize(&section.proto))
                    });
                    continue;
                }
            },
            (false, false) => {
                other_transport.get_or_insert_with(|| sanitize(&section.proto));
                continue;
            }
        };
        match first_codec(section, codecs) {
            Some((codec, payload_type)) => return Ok((index, codec, payload_type, crypto)),
            None => {
                no_codec.get_or_insert_with(|| describe_formats(section));
            }
        }
    }
    Err(match (no_codec, other_transport) {
        (Some(offered), _) => NegotiationError::NoCommonCodec { offered },
        (None, Some(proto)) => NegotiationError::UnsupportedTransport(proto),
        (None, None) => NegotiationError::NoAudio,
    })
}

/// The first of the section's formats that is G.711, with its payload type.
fn first_codec(section: &MediaDescription, codecs: &[Codec]) -> Option<(Codec, u8)> {
    section.payload_types().find_map(|payload_type| {
        let codec = match section.rtpmap(payload_type) {
            // Stereo G.711 exists on paper; the IVR's audio is mono.
            Some(map) if map.channels.is_some_and(|channels| channels != 1) => None,
            Some(map) => Codec::from_encoding(&map.encoding, map.clock_rate),
            None => Codec::from_static_payload_type(payload_type),
        };
        codec
            .filter(|c| codecs.contains(c))
            .map(|codec| (codec, payload_type))
    })
}

/// The section's `telephone-event/8000` payload type and its fmtp, if any.
/// Events at other clock rates belong to other codecs (RFC 4733 2.1).
fn telephone_event(section: &MediaDescription) -> Option<(u8, Option<&str>)> {
    section.payload_types().find_map(|payload_type| {
        let map = section.rtpmap(payload_type)?;
        let is_dtmf =
            map.encoding.eq_ignore_ascii_case(TELEPHONE_EVENT) && map.clock_rate == CLOCK_RATE;
        is_dtmf.then(|| (payload_type, section.fmtp(payload_type)))
    })
}

/// The packet interval to send at; see [`Negotiated::ptime_ms`].
fn send_ptime(section: &MediaDescription) -> u32 {
    let wanted = section.ptime_ms.unwrap_or(DEFAULT_PTIME_MS);
    let wanted = section.maxptime_ms.map_or(wanted, |max| wanted.min(max));
    if PTIME_RANGE_MS.contains(&wanted) {
        wanted
    } else {
        DEFAULT_PTIME_MS
    }
}

/// Rejects a peer address we could not send to from our address family.
/// An unspecified peer address is fine: nothing will be sent to it.
fn check_reachable(ours: IpAddr, theirs: IpAddr) -> Result<(), NegotiationError> {
    let (ours, theirs) = (ours.to_canonical(), theirs.to_canonical());
    if theirs.is_unspecified() || ours.is_ipv4() == theirs.is_ipv4() {
        Ok(())
    } else {
        Err(NegotiationError::AddressFamilyMismatch { ours, theirs })
    }
}

fn is_audio(section: &MediaDescription) -> bool {
    section.media.eq_ignore_ascii_case("audio")
}

fn is_rtp_avp(section: &MediaDescription) -> bool {
    section.proto.eq_ignore_ascii_case("RTP/AVP")
}

fn is_rtp_savp(section: &MediaDescription) -> bool {
    section.proto.eq_ignore_ascii_case("RTP/SAVP")
}

/// The section's formats as `name/rate` where known, for error messages.
fn describe_formats(section: &MediaDescription) -> String {
    let mut names: Vec<String> =
        section
            .formats
            .iter()
            .take(MAX_LISTED_FORMATS)
            .map(|format| {
                let known = format.parse().ok().and_then(|payload_type| {
                    match section.rtpmap(payload_type) {
                        Some(map) => Some(format!("{}/{}", map.encoding, map.clock_rate)),
                        None => static_name(payload_type).map(|name| format!("{name}/8000")),
                    }
                });
                sanitize(&known.unwrap_or_else(|| format!("payload type {format}")))
            })
            .collect();
    if section.formats.len() > MAX_LISTED_FORMATS {
        names.push("...".to_owned());
    }
    if names.is_empty() {
        "no formats".to_owned()
    } else {
        names.join(", ")
    }
}

/// Names of the static audio payload types trunks still offer
/// (RFC 3551 section 6), so a 488 can say "G729" rather than "18".
fn static_name(payload_type: u8) -> Option<&'static str> {
    Some(match payload_type {
        0 => "PCMU",
        3 => "GSM",
        4 => "G723",
        8 => "PCMA",
        9 => "G722",
        13 => "CN",
        15 => "G728",
        18 => "G729",
        _ => return None,
    })
}

/// Peer text made safe for a Warning header's quoted string (RFC 3261
/// section 25.1): printable ASCII without quotes or backslashes.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| (c.is_ascii_graphic() && *c != '"' && *c != '\\') || *c == ' ')
        .take(64)
        .collect()
}
