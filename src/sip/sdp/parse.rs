//! The SDP parser: the description model and the line-by-line reader
//! (RFC 8866 sections 5 and 9).
//!
//! SDP is one `<type>=<value>` per line, session-level lines first and then
//! one section per `m=` line, so a single pass with "the current media
//! section" as the only state is enough. Trunks are sloppy in predictable
//! ways (LF instead of CRLF, trailing blanks, vendor attributes), so the
//! reader skips what it does not need and rejects only what it cannot read.

use std::net::IpAddr;

use super::Direction;

/// A parsed session description: the parts the IVR negotiates on.
///
/// Lines the IVR does not act on (`i=`, `b=`, `t=`, `a=rtcp`, ...) are
/// skipped; the RFC 8866 section 5 order of lines is not enforced either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line, which identifies the session and its version
    /// (RFC 8866 section 5.2); a re-INVITE whose offer keeps the version
    /// changes nothing (RFC 3264 section 8).
    pub origin: Origin,
    /// The `s=` line, often `-` or a vendor name; empty if absent.
    pub session_name: String,
    /// The session-level `c=` address, the default for every media section
    /// without its own (RFC 8866 section 5.7).
    pub connection: Option<IpAddr>,
    /// A session-level direction attribute, the default for every media
    /// section without its own (RFC 8866 section 6.7).
    pub direction: Option<Direction>,
    /// The `m=` sections in order; answers must keep that order
    /// (RFC 3264 section 6).
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Where the peer receives this section's media: its own `c=` if it has
    /// one, else the session-level `c=` (RFC 8866 section 5.7).
    pub fn connection_for(&self, media: &MediaDescription) -> Option<IpAddr> {
        media.connection.or(self.connection)
    }

    /// This section's direction as the peer states it: its own attribute,
    /// else the session-level one, else `sendrecv` (RFC 8866 section 6.7).
    pub fn direction_for(&self, media: &MediaDescription) -> Direction {
        media.direction.or(self.direction).unwrap_or_default()
    }
}

/// The `o=` line (RFC 8866 section 5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The user name, usually `-`.
    pub username: String,
    /// The session id, kept as text: only ever compared, and some devices
    /// send numbers longer than 64 bits.
    pub session_id: String,
    /// The session version, bumped by the peer whenever its SDP changes.
    pub session_version: u64,
    /// The address of the machine that created the session; may be a host
    /// name and is informational only, so it is not parsed further.
    pub address: String,
}

/// One `m=` section (RFC 8866 section 5.14) with the attributes that matter
/// for RTP audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// The media type: `audio`, `video`, `image` (T.38), `application`, ...
    pub media: String,
    /// The transport port; 0 means the stream is disabled or rejected
    /// (RFC 3264 sections 5.1 and 6).
    pub port: u16,
    /// The transport protocol: `RTP/AVP`, `RTP/SAVP`, `udptl`, ...
    pub proto: String,
    /// The formats as written: payload type numbers for RTP, anything for
    /// other protocols (so a T.38 `m=image` line still parses).
    pub formats: Vec<String>,
    /// This section's own `c=` address, if it has one; see
    /// [`SessionDescription::connection_for`].
    pub connection: Option<IpAddr>,
    /// The `a=rtpmap` attributes, in order (RFC 8866 section 6.6).
    pub rtpmaps: Vec<RtpMap>,
    /// The `a=fmtp` attributes, in order (RFC 8866 section 6.15).
    pub fmtps: Vec<Fmtp>,
    /// `a=ptime`: how many milliseconds of media the peer wants per packet
    /// it receives (RFC 8866 section 6.4).
    pub ptime_ms: Option<u32>,
    /// `a=maxptime`: the most milliseconds of media per packet the peer can
    /// receive (RFC 8866 section 6.5).
    pub maxptime_ms: Option<u32>,
    /// This section's own direction attribute, if any; see
    /// [`SessionDescription::direction_for`].
    pub direction: Option<Direction>,
    /// The `a=crypto` values (RFC 4568 SDES keys), in order, as written;
    /// at most [`MAX_CRYPTO`] are kept.
    pub crypto: Vec<super::sdes::Crypto>,
}

/// `a=crypto` lines kept per section: an offer lists a few suites, never
/// hundreds.
pub const MAX_CRYPTO: usize = 8;

impl MediaDescription {
    /// The `a=rtpmap` for a payload type, if the peer wrote one.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps
            .iter()
            .find(|map| map.payload_type == payload_type)
    }

    /// The `a=fmtp` parameters for a payload type, if the peer wrote any.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|fmtp| fmtp.payload_type == payload_type)
            .map(|fmtp| fmtp.parameters.as_str())
    }

    /// The formats that are RTP payload types (0-127), in the peer's order
    /// of preference (RFC 3264 section 5.1); others are skipped.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|format| parse_payload_type(format).ok())
    }
}

/// An `a=rtpmap:<payload type> <encoding>/<clock rate>[/<channels>]`
/// attribute (RFC 8866 section 6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type it describes.
    pub payload_type: u8,
    /// The encoding name as written (`PCMU`, `telephone-event`, ...); compare
    /// it case-insensitively.
    pub encoding: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The number of audio channels, if written (absent means 1).
    pub channels: Option<u16>,
}

/// An `a=fmtp:<payload type> <parameters>` attribute (RFC 8866 section
/// 6.15). The parameters are format-specific, e.g. the events `0-16` of
/// RFC 4733 section 2.4.1, so they are kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    /// The payload type it describes.
    pub payload_type: u8,
    /// Everything after the payload type, trimmed.
    pub parameters: String,
}

/// Why a body is not SDP we can read. Line numbers count from 1 over the
/// whole body, blank lines included, so they match what an editor shows.
///
/// A SIP UAS answers an INVITE whose SDP fails to parse with 400 or 488.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body has no lines at all (only whitespace, or nothing).
    #[error("the SDP body is empty")]
    Empty,
    /// The first line is not `v=`: the body is probably not SDP at all.
    #[error("line {line}: SDP must start with \"v=0\" (RFC 8866 section 5.1), found {found:?}")]
    MissingVersion {
        /// The first non-blank line.
        line: usize,
        /// The start of what was found there.
        found: String,
    },
    /// `v=` is present but not 0, the only version that exists.
    #[error("line {line}: SDP version {version:?} is not supported, only \"v=0\" exists")]
    UnsupportedVersion {
        /// The `v=` line.
        line: usize,
        /// The version as written.
        version: String,
    },
    /// A line is not of the form `<letter>=<value>` (RFC 8866 section 5),
    /// or holds a bare CR or NUL, which no SDP text may contain.
    #[error("line {line}: expected <type>=<value> with a one-letter type and no CR or NUL inside, found {text:?}")]
    MalformedLine {
        /// The offending line.
        line: usize,
        /// The start of its text.
        text: String,
    },
    /// There is no `o=` line, which RFC 8866 section 5.2 requires.
    #[error("no o= (origin) line; RFC 8866 section 5.2 requires one")]
    MissingOrigin,
    /// The `o=` line cannot be read.
    #[error("line {line}: bad o= line: {reason}")]
    BadOrigin {
        /// The `o=` line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A `c=` line cannot be read, or names a host instead of an address
    /// (the core cannot resolve names, and trunks send addresses anyway).
    #[error("line {line}: bad c= line: {reason}")]
    BadConnection {
        /// The `c=` line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An `m=` line cannot be read.
    #[error("line {line}: bad m= line: {reason}")]
    BadMedia {
        /// The `m=` line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An attribute the IVR negotiates on (`rtpmap`, `fmtp`, `ptime`,
    /// `maxptime`) cannot be read; other attributes are never checked.
    #[error("line {line}: bad a={name} attribute: {reason}")]
    BadAttribute {
        /// The `a=` line.
        line: usize,
        /// The attribute name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses an SDP body (RFC 8866).
///
/// Liberal where real peers differ (CRLF or LF line ends, blank lines,
/// surrounding whitespace, unknown line types and attributes, lines out of
/// the RFC's order), strict where a guess could route media wrongly: a
/// malformed `o=`, `c=`, `m=` or negotiated attribute is an [`SdpError`]
/// naming the line. Never panics.
pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty());

    let Some((line, first)) = lines.next() else {
        return Err(SdpError::Empty);
    };
    match first
        .split_once('=')
        .map(|(kind, value)| (kind, value.trim()))
    {
        Some(("v", "0")) => {}
        Some(("v", version)) => {
            return Err(SdpError::UnsupportedVersion {
                line,
                version: excerpt(version),
            })
        }
        _ => {
            return Err(SdpError::MissingVersion {
                line,
                found: excerpt(first),
            })
        }
    }

    let mut origin = None;
    let mut session_name = String::new();
    let mut connection = None;
    let mut direction = None;
    let mut media: Vec<MediaDescription> = Vec::new();
    for (line, text) in lines {
        // A CR or NUL inside a line is not SDP (RFC 8866 section 9), and
        // since an fmtp is echoed into our answer, passing a bare CR through
        // would let a peer smuggle a line into what we send.
        let is_clean = !text.contains(['\r', '\0']);
        let (kind, value) = match text.split_once('=') {
            Some((kind, value))
                if is_clean && kind.len() == 1 && kind.bytes().all(|b| b.is_ascii_alphabetic()) =>
            {
                (kind, value.trim())
            }
            _ => {
                return Err(SdpError::MalformedLine {
                    line,
                    text: excerpt(text),
                })
            }
        };
        match (kind, media.last_mut()) {
            ("o", None) if origin.is_none() => origin = Some(parse_origin(line, value)?),
            ("s", None) => session_name = value.to_owned(),
            ("c", None) => connection = Some(parse_connection(line, value)?),
            ("c", Some(section)) => section.connection = Some(parse_connection(line, value)?),
            ("m", _) => media.push(parse_media(line, value)?),
            // Only audio is negotiated; other streams are refused in the
            // answer (port 0), so an attribute there we cannot read (RFC
            // 4475 3.1.1.1's `a=rtpmap:31 LPC` on video) must not cost the
            // caller the audio.
            ("a", Some(section)) if !section.media.eq_ignore_ascii_case("audio") => {}
            ("a", Some(section)) => parse_media_attribute(line, value, section)?,
            // At session level only a direction matters: rtpmap and friends
            // are media-level attributes (RFC 8866 section 6).
            ("a", None) => {
                if let Some(found) = Direction::from_attribute(value) {
                    direction = Some(found);
                }
            }
            // i=, u=, e=, p=, b=, t=, r=, z=, k=, repeated o= and future
            // types: nothing the IVR negotiates on (RFC 8866 section 5 says
            // to ignore unknown types).
            _ => {}
        }
    }

    Ok(SessionDescription {
        origin: origin.ok_or(SdpError::MissingOrigin)?,
        session_name,
        connection,
        direction,
        media,
    })
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`
fn parse_origin(line: usize, value: &str) -> Result<Origin, SdpError> {
    let bad = |reason: String| SdpError::BadOrigin { line, reason };
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [username, session_id, session_version, _nettype, _addrtype, address, ..] = fields[..]
    else {
        return Err(bad(format!(
            "expected 6 fields \"<username> <session id> <version> IN IP4 <address>\", found {}",
            fields.len()
        )));
    };
    let session_version = session_version.parse().map_err(|_| {
        bad(format!(
            "session version {:?} is not a whole number",
            excerpt(session_version)
        ))
    })?;
    Ok(Origin {
        username: username.to_owned(),
        session_id: session_id.to_owned(),
        session_version,
        address: address.to_owned(),
    })
}

/// `c=<nettype> <addrtype> <address>[/<ttl>][/<count>]`; only the address
/// is kept, since the IVR sends unicast RTP to it.
fn parse_connection(line: usize, value: &str) -> Result<IpAddr, SdpError> {
    let bad = |reason: String| SdpError::BadConnection { line, reason };
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [_nettype, _addrtype, address, ..] = fields[..] else {
        return Err(bad(format!(
            "expected \"IN IP4 <address>\" or \"IN IP6 <address>\", found {:?}",
            excerpt(value)
        )));
    };
    // Multicast addresses carry /ttl and /count suffixes (RFC 8866 5.7).
    let address = address.split('/').next().unwrap_or(address);
    address.parse().map_err(|_| {
        bad(format!(
            "{:?} is not an IP address (host names are not supported)",
            excerpt(address)
        ))
    })
}

/// `m=<media> <port>[/<count>] <proto> <format> ...`
fn parse_media(line: usize, value: &str) -> Result<MediaDescription, SdpError> {
    let bad = |reason: String| SdpError::BadMedia { line, reason };
    let mut fields = value.split_whitespace();
    let (Some(media), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(bad(format!(
            "expected \"<media> <port> <proto> <format>...\", found {:?}",
            excerpt(value)
        )));
    };
    // A port count (hierarchical encoding, RFC 8866 5.14) is never used by
    // the IVR's single audio stream, so only the base port is kept.
    let port_text = port.split('/').next().unwrap_or(port);
    let port = port_text.parse().map_err(|_| {
        bad(format!(
            "port {:?} is not a number from 0 to 65535",
            excerpt(port_text)
        ))
    })?;
    Ok(MediaDescription {
        media: media.to_owned(),
        port,
        proto: proto.to_owned(),
        formats: fields.map(str::to_owned).collect(),
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime_ms: None,
        maxptime_ms: None,
        direction: None,
        crypto: Vec::new(),
    })
}

/// One media-level `a=<name>[:<value>]` line (RFC 8866 section 5.13).
fn parse_media_attribute(
    line: usize,
    text: &str,
    section: &mut MediaDescription,
) -> Result<(), SdpError> {
    let (name, value) = match text.split_once(':') {
        Some((name, value)) => (name.trim(), value.trim()),
        None => (text, ""),
    };
    let bad = |name: &'static str, reason: String| SdpError::BadAttribute { line, name, reason };
    // Names are case-sensitive in the RFC, but no two differ only in case,
    // so matching loosely costs nothing and accepts odd senders.
    match name.to_ascii_lowercase().as_str() {
        "rtpmap" => section
            .rtpmaps
            .push(parse_rtpmap(value).map_err(|reason| bad("rtpmap", reason))?),
        "fmtp" => {
            let (payload_type, parameters) = split_payload_type(value);
            let payload_type = parse_payload_type(payload_type).map_err(|r| bad("fmtp", r))?;
            section.fmtps.push(Fmtp {
                payload_type,
                parameters: parameters.to_owned(),
            });
        }
        "ptime" => section.ptime_ms = Some(parse_millis(value).map_err(|r| bad("ptime", r))?),
        "maxptime" => {
            section.maxptime_ms = Some(parse_millis(value).map_err(|r| bad("maxptime", r))?)
        }
        "crypto" if section.crypto.len() < MAX_CRYPTO => {
            section.crypto.push(super::sdes::Crypto(value.to_owned()))
        }
        other => {
            if let Some(found) = Direction::from_attribute(other) {
                section.direction = Some(found);
            }
        }
    }
    Ok(())
}

/// `<payload type> <encoding>/<clock rate>[/<channels>]`
fn parse_rtpmap(value: &str) -> Result<RtpMap, String> {
    let (payload_type, encoding) = split_payload_type(value);
    let payload_type = parse_payload_type(payload_type)?;
    let mut parts = encoding.split('/');
    let (Some(name), Some(clock_rate)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "expected \"<payload type> <encoding>/<clock rate>\", found {:?}",
            excerpt(value)
        ));
    };
    let clock_rate = clock_rate
        .trim()
        .parse()
        .map_err(|_| format!("clock rate {:?} is not a number", excerpt(clock_rate)))?;
    let channels = match parts.next() {
        Some(channels) => Some(
            channels
                .trim()
                .parse()
                .map_err(|_| format!("channel count {:?} is not a number", excerpt(channels)))?,
        ),
        None => None,
    };
    Ok(RtpMap {
        payload_type,
        encoding: name.trim().to_owned(),
        clock_rate,
        channels,
    })
}

/// Splits `<payload type> <rest>` at the first whitespace.
fn split_payload_type(value: &str) -> (&str, &str) {
    match value.split_once(char::is_whitespace) {
        Some((payload_type, rest)) => (payload_type, rest.trim()),
        None => (value, ""),
    }
}

/// An RTP payload type: 7 bits in the RTP header (RFC 3550 section 5.1).
fn parse_payload_type(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(payload_type) if payload_type <= 127 => Ok(payload_type),
        _ => Err(format!(
            "payload type {:?} is not a number from 0 to 127",
            excerpt(text)
        )),
    }
}

/// Milliseconds for `ptime`/`maxptime`. Some phones write a decimal such as
/// `20.0`; the fraction is dropped, since G.711 frames are whole ms anyway.
fn parse_millis(value: &str) -> Result<u32, String> {
    let whole = value.split('.').next().unwrap_or(value);
    whole
        .parse()
        .map_err(|_| format!("{:?} is not a number of milliseconds", excerpt(value)))
}

/// The start of some peer-supplied text, short enough to quote in an error.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    let mut short: String = text.chars().take(MAX_CHARS).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}
