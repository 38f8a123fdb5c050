//! Writing our SDP: always the same small shape, with CRLF line ends as
//! RFC 8866 section 5 requires (some trunks reject bare LF).

use std::fmt::{self, Write as _};

use super::sdes::{self, SrtpKeys};
use super::{Direction, LocalMedia, MediaDescription, CLOCK_RATE, DEFAULT_PTIME_MS};

/// One payload type we list on our `m=audio` line.
pub(super) struct Format<'a> {
    /// The RTP payload type.
    pub payload_type: u8,
    /// The `a=rtpmap` encoding name (at [`CLOCK_RATE`]).
    pub encoding: &'a str,
    /// The `a=fmtp` parameters, if any.
    pub fmtp: Option<&'a str>,
}

/// Appends one line and its CRLF.
fn line(out: &mut String, args: fmt::Arguments<'_>) {
    // Writing into a String cannot fail.
    let _ = out.write_fmt(args);
    out.push_str("\r\n");
}

/// The session-level lines: `v=`, `o=`, `s=`, `c=`, `t=`.
///
/// `c=` is written once at session level, so rejected streams need none of
/// their own. IPv4-mapped IPv6 addresses are written as IPv4, since that is
/// what a peer can actually reach.
pub(super) fn session(local: &LocalMedia) -> String {
    let addr = local.addr.to_canonical();
    let family = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(256);
    line(&mut out, format_args!("v=0"));
    line(
        &mut out,
        format_args!(
            "o=callflow {} {} IN {family} {addr}",
            local.session_id, local.session_version
        ),
    );
    line(&mut out, format_args!("s=callflow"));
    line(&mut out, format_args!("c=IN {family} {addr}"));
    // "t=0 0": the session is not bounded in time (RFC 8866 section 5.9).
    line(&mut out, format_args!("t=0 0"));
    out
}

/// Our `m=audio` section: `RTP/SAVP` with our key when `srtp` is set.
pub(super) fn audio(
    out: &mut String,
    port: u16,
    formats: &[Format<'_>],
    direction: Direction,
    srtp: Option<&SrtpKeys>,
) {
    let mut payload_types = String::new();
    for format in formats {
        let _ = write!(payload_types, " {}", format.payload_type);
    }
    let proto = if srtp.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    line(out, format_args!("m=audio {port} {proto}{payload_types}"));
    if let Some(keys) = srtp {
        line(
            out,
            format_args!("a=crypto:{}", sdes::attribute(keys.tag, &keys.send)),
        );
    }
    for format in formats {
        line(
            out,
            format_args!(
                "a=rtpmap:{} {}/{CLOCK_RATE}",
                format.payload_type, format.encoding
            ),
        );
    }
    for format in formats {
        if let Some(fmtp) = format.fmtp {
            line(out, format_args!("a=fmtp:{} {fmtp}", format.payload_type));
        }
    }
    line(out, format_args!("a=ptime:{DEFAULT_PTIME_MS}"));
    line(out, format_args!("a={direction}"));
}

/// An offered stream we reject: the same media and protocol with port 0
/// (RFC 3264 section 6). Its formats are echoed because SDP needs at least
/// one and the offerer ignores them.
pub(super) fn rejected(out: &mut String, media: &MediaDescription) {
    let formats = if media.formats.is_empty() {
        "0".to_owned()
    } else {
        media.formats.join(" ")
    };
    line(
        out,
        format_args!("m={} 0 {} {formats}", media.media, media.proto),
    );
}
