//! The fuzz targets: one function per input that comes from outside, each
//! of which must return, whatever the bytes, without a panic. The coverage
//! -guided fuzzer in `fuzz/` (cargo-afl) calls them, and so does the
//! corpus test in `cargo test`, so that a crash once found stays fixed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::media::dtmf::DtmfReceiver;
use crate::media::latch::RtpLatch;
use crate::sip::admission::Networks;
use crate::sip::auth::{Authorization, Challenge};
use crate::sip::message;
use crate::sip::sdp::{self, LocalMedia};
use crate::sip::ua::{UaConfig, UaOutput, UserAgent};

/// One fuzz target: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/` and the corpus test know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("sip_parse", sip_parse),
    ("sip_message", sip_message),
    ("sdp", sdp_offer),
    ("rtp", rtp),
    ("digest", digest),
    ("flow", flow),
];

/// Where a target's seeds are, relative to the repository, and the file
/// extension they have (`None`: every file): the SIP targets start from the
/// RFC 4475 torture messages and our fixtures, the flow target from the
/// shipped flows, the test flows and the broken-flow corpus. `fuzz/run`
/// knows the same list.
pub fn seeds_of(target: &str) -> (&'static [&'static str], Option<&'static str>) {
    match target {
        "sip_parse" | "sip_message" => (&["tests/rfc4475", "tests/fixtures"], Some("sip")),
        "flow" => (&["flows", "tests/sipp/flows", "tests/broken"], Some("yaml")),
        "sdp" => (&["fuzz/corpus/sdp"], None),
        "rtp" => (&["fuzz/corpus/rtp"], None),
        _ => (&["fuzz/corpus/digest"], None),
    }
}

#[allow(clippy::disallowed_methods)] // any base will do: time only moves on from it
fn base() -> Instant {
    Instant::now()
}

/// A SIP datagram through the parser alone, and the accessors the user
/// agent reads: the fast target for long runs.
pub fn sip_parse(data: &[u8]) {
    match message::parse(data) {
        Ok(m) => {
            let _ = (m.top_via(), m.cseq(), m.call_id(), m.to_tag(), m.method());
            let _ = (
                m.header("Content-Type"),
                m.header("Contact").map(message::uri_of),
            );
            let _ = m.headers_named("Record-Route").count();
        }
        Err(message::ParseError::BadRequest { partial, .. })
        | Err(message::ParseError::Refuse { partial, .. }) => {
            let _ = (partial.top_via(), partial.method(), partial.call_id());
        }
        Err(_) => {}
    }
}

/// A SIP datagram: parsed, then fed to a user agent from a trunk address
/// whose timers are then run out, so that what the UA builds from the
/// message (responses, dialogs, transactions) is exercised too.
pub fn sip_message(data: &[u8]) {
    if let Ok(m) = message::parse(data) {
        let _ = (m.top_via(), m.cseq(), m.call_id(), m.to_tag(), m.method());
        let _ = m.headers_named("Record-Route").count();
    }
    let mut ua = UserAgent::new(UaConfig::new(SocketAddr::from(([127, 0, 0, 1], 5060))));
    let t0 = base();
    let peer = SocketAddr::from(([127, 0, 0, 1], 5070));
    ua.handle_datagram(t0, peer, data);
    // A second copy is a retransmission, or a request in a dialog the first
    // one made.
    ua.handle_datagram(t0, peer, data);
    while let Some(out) = ua.poll_output() {
        if let UaOutput::Event(call, _) = out {
            ua.hangup(t0, call);
        }
    }
    ua.handle_timeout(t0 + Duration::from_secs(64));
    while ua.poll_output().is_some() {}
}

/// An SDP offer: parsed and answered, and read as an answer to ours.
pub fn sdp_offer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(offer) = sdp::parse(&text) {
        let local = LocalMedia {
            addr: [127, 0, 0, 1].into(),
            port: 20000,
            session_id: 1,
            session_version: 1,
        };
        if let Ok((answer, _)) = sdp::answer(&offer, &local) {
            // Our own answer must always read back.
            assert!(
                sdp::parse(&answer).is_ok(),
                "our answer does not parse: {answer:?}"
            );
        }
        let _ = sdp::accept_answer(&offer);
    }
}

/// An RTP datagram at a call's port: the latch, the RFC 4733 receiver and
/// the RTP header reader.
pub fn rtp(data: &[u8]) {
    let from = SocketAddr::from(([127, 0, 0, 1], 6000));
    let mut latch = RtpLatch::new(true, Networks::loopback());
    latch.expect(from, 0, Some(101));
    let mut dtmf = DtmfReceiver::new(101);
    // The same bytes as several packets in a row, split where a payload
    // type byte would say, drive the receiver through its states.
    for chunk in data.chunks(16).chain(std::iter::once(data)) {
        if latch.accept(from, chunk) {
            let _ = dtmf.on_rtp(chunk);
        }
        let _ = rtp_rs::RtpReader::new(chunk);
    }
}

/// A digest challenge or credentials header value.
pub fn digest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(challenge) = Challenge::parse(&text) {
        let _ = challenge.preferred_qop();
    }
    if let Ok(auth) = Authorization::parse(&text) {
        let _ = auth.verify_as("user", "secret", "INVITE", data);
    }
    let _ = crate::sip::auth::verify(&text, "secret", "INVITE", b"");
}

/// A flow file.
pub fn flow(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let loaded = crate::flow::load_sources(
        &[(PathBuf::from("fuzz.yaml"), text)],
        &crate::flow::LoadOptions {
            prompts_dir: PathBuf::from("/nonexistent"),
        },
    );
    let _ = loaded.into_result();
}
