//! Tests with SDP as real trunks and test tools send it. Fixtures are
//! written with LF for readability; `crlf` gives the on-the-wire form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;

/// SIPp 3.6 `uac` scenario body after `[local_ip]`/`[media_port]` are
/// substituted.
const SIPP_UAC: &str = "v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
";

/// Asterisk chan_pjsip towards a European trunk: A-law first, G.729, and
/// DTMF at 101.
const ASTERISK: &str = "v=0
o=- 1716811239 1716811239 IN IP4 192.0.2.10
s=Asterisk
c=IN IP4 192.0.2.10
t=0 0
m=audio 18642 RTP/AVP 8 0 18 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
";

/// Cisco CUBE: DTMF on dynamic payload type 96, no direction attribute.
const CISCO: &str = "v=0
o=CiscoSystemsSIP-GW-UserAgent 4711 2931 IN IP4 198.51.100.7
s=SIP Call
c=IN IP4 198.51.100.7
t=0 0
m=audio 16384 RTP/AVP 0 8 18 96
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:96 telephone-event/8000
a=fmtp:96 0-16
a=ptime:20
";

/// A softphone offering video first, then Opus and (static) G.711.
const VIDEO_AND_AUDIO: &str = "v=0
o=- 3 2 IN IP4 10.0.0.5
s=Talk
c=IN IP4 10.0.0.5
t=0 0
m=video 9078 RTP/AVP 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
m=audio 7078 RTP/AVP 96 0 8 101
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:101 telephone-event/8000
a=rtcp-fb:* ccm tmmbr
";

fn crlf(fixture: &str) -> String {
    fixture.replace('\n', "\r\n")
}

fn local() -> LocalMedia {
    LocalMedia {
        addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
        port: 40000,
        session_id: 42,
        session_version: 1,
    }
}

fn answer_to(fixture: &str) -> Result<(String, Negotiated), NegotiationError> {
    answer(&parse(&crlf(fixture)).expect("fixture parses"), &local())
}

/// An Asterisk offer with a different audio section.
fn asterisk_with(audio: &str) -> String {
    let head: String = ASTERISK.lines().take(5).map(|l| format!("{l}\n")).collect();
    crlf(&format!("{head}{audio}"))
}

#[test]
fn sipp_uac_offer_parses() {
    let sdp = parse(&crlf(SIPP_UAC)).unwrap();
    assert_eq!(sdp.origin.username, "user1");
    assert_eq!(sdp.origin.session_id, "53655765");
    assert_eq!(sdp.origin.session_version, 2353687637);
    assert_eq!(sdp.session_name, "-");
    assert_eq!(sdp.connection, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let audio = &sdp.media[0];
    assert_eq!((audio.media.as_str(), audio.port), ("audio", 6000));
    assert_eq!(audio.proto, "RTP/AVP");
    assert_eq!(audio.formats, ["0"]);
    assert_eq!(audio.rtpmap(0).unwrap().encoding, "PCMU");
    assert_eq!(sdp.direction_for(audio), Direction::SendRecv);
}

#[test]
fn sipp_uac_offer_is_answered_with_pcmu_and_no_dtmf() {
    let (text, negotiated) = answer_to(SIPP_UAC).unwrap();
    assert!(text.contains("\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"));
    assert!(!text.contains("telephone-event"));
    assert_eq!(negotiated.codec, Codec::Pcmu);
    assert_eq!(negotiated.payload_type, 0);
    assert_eq!(negotiated.remote, "127.0.0.1:6000".parse().unwrap());
    assert_eq!(negotiated.dtmf_payload_type, None);
    assert!(negotiated.sends_rtp() && negotiated.receives_rtp());
}

#[test]
fn asterisk_offer_gets_golden_answer_with_callers_first_codec() {
    let (text, negotiated) = answer_to(ASTERISK).unwrap();
    let golden = "v=0\r\n\
        o=callflow 42 1 IN IP4 203.0.113.5\r\n\
        s=callflow\r\n\
        c=IN IP4 203.0.113.5\r\n\
        t=0 0\r\n\
        m=audio 40000 RTP/AVP 8 101\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=ptime:20\r\n\
        a=sendrecv\r\n";
    assert_eq!(text, golden);
    assert_eq!(
        negotiated,
        Negotiated {
            codec: Codec::Pcma,
            payload_type: 8,
            remote: "192.0.2.10:18642".parse().unwrap(),
            dtmf_payload_type: Some(101),
            ptime_ms: 20,
            direction: Direction::SendRecv,
            srtp: None,
        }
    );
}

#[test]
fn cisco_dynamic_telephone_event_payload_type_is_echoed() {
    let (text, negotiated) = answer_to(CISCO).unwrap();
    assert!(text.contains("m=audio 40000 RTP/AVP 0 96\r\n"));
    assert!(text.contains("a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\n"));
    assert_eq!(negotiated.codec, Codec::Pcmu);
    assert_eq!(negotiated.dtmf_payload_type, Some(96));
    assert_eq!(negotiated.direction, Direction::SendRecv);
}

#[test]
fn telephone_event_without_fmtp_is_answered_with_rfc4733_default_events() {
    let offer = asterisk_with("m=audio 5000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n");
    let (text, _) = answer(&parse(&offer).unwrap(), &local()).unwrap();
    assert!(text.contains("a=fmtp:101 0-15\r\n"));
}

#[test]
fn telephone_event_at_another_clock_rate_is_not_dtmf() {
    let offer = asterisk_with("m=audio 5000 RTP/AVP 0 100\na=rtpmap:100 telephone-event/48000\n");
    let (text, negotiated) = answer(&parse(&offer).unwrap(), &local()).unwrap();
    assert_eq!(negotiated.dtmf_payload_type, None);
    assert!(text.contains("m=audio 40000 RTP/AVP 0\r\n"));
}

#[test]
fn dynamic_payload_type_for_g711_is_kept() {
    let offer = asterisk_with("m=audio 5000 RTP/AVP 97\na=rtpmap:97 pcma/8000\n");
    let (text, negotiated) = answer(&parse(&offer).unwrap(), &local()).unwrap();
    assert_eq!(
        (negotiated.codec, negotiated.payload_type),
        (Codec::Pcma, 97)
    );
    assert!(text.contains("m=audio 40000 RTP/AVP 97\r\na=rtpmap:97 PCMA/8000\r\n"));
}

#[test]
fn g729_only_offer_has_no_common_codec() {
    let offer = asterisk_with(
        "m=audio 5000 RTP/AVP 18 101\na=rtpmap:18 G729/8000\na=rtpmap:101 telephone-event/8000\n",
    );
    let error = answer(&parse(&offer).unwrap(), &local()).unwrap_err();
    assert_eq!(
        error,
        NegotiationError::NoCommonCodec {
            offered: "G729/8000, telephone-event/8000".to_owned()
        }
    );
    assert_eq!(error.warning_code(), 305);
    assert_eq!(
        error.to_string(),
        "no common codec: offered G729/8000, telephone-event/8000; we accept PCMU/8000 and PCMA/8000"
    );
}

#[test]
fn no_common_codec_text_is_safe_for_a_warning_header() {
    let offer = asterisk_with("m=audio 5000 RTP/AVP 96\na=rtpmap:96 x\"y\\z/8000\n");
    let error = answer(&parse(&offer).unwrap(), &local()).unwrap_err();
    let text = error.to_string();
    assert!(!text.contains('"') && !text.contains('\\'), "{text}");
}

#[test]
fn video_is_rejected_with_port_zero_in_offer_order() {
    let (text, negotiated) = answer_to(VIDEO_AND_AUDIO).unwrap();
    let media: Vec<&str> = text.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(
        media,
        ["m=video 0 RTP/AVP 96 97", "m=audio 40000 RTP/AVP 0 101"]
    );
    assert_eq!(negotiated.codec, Codec::Pcmu);
    assert_eq!(negotiated.remote, "10.0.0.5:7078".parse().unwrap());
}

#[test]
fn srtp_offer_is_an_unsupported_transport() {
    let offer =
        asterisk_with("m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc\n");
    let error = answer(&parse(&offer).unwrap(), &local()).unwrap_err();
    assert_eq!(
        error,
        NegotiationError::UnsupportedTransport("RTP/SAVP".to_owned())
    );
    assert_eq!(error.warning_code(), 302);
}

#[test]
fn srtp_stream_is_rejected_when_plain_rtp_is_offered_beside_it() {
    let offer = asterisk_with("m=audio 5000 RTP/SAVP 0\nm=audio 5002 RTP/AVP 0\n");
    let (text, negotiated) = answer(&parse(&offer).unwrap(), &local()).unwrap();
    assert!(text.contains("m=audio 0 RTP/SAVP 0\r\nm=audio 40000 RTP/AVP 0\r\n"));
    assert_eq!(negotiated.remote.port(), 5002);
}

#[test]
fn offer_without_audio_is_no_audio() {
    let t38 = asterisk_with("m=image 5000 udptl t38\na=T38FaxVersion:0\n");
    let error = answer(&parse(&t38).unwrap(), &local()).unwrap_err();
    assert_eq!(error, NegotiationError::NoAudio);
    assert_eq!(error.warning_code(), 304);

    let disabled = asterisk_with("m=audio 0 RTP/AVP 0\n");
    let error = answer(&parse(&disabled).unwrap(), &local()).unwrap_err();
    assert_eq!(error, NegotiationError::NoAudio);
}

#[test]
fn sendonly_offer_is_hold_answered_recvonly() {
    let hold = crlf(&ASTERISK.replace("a=sendrecv", "a=sendonly"));
    let (text, negotiated) = answer(&parse(&hold).unwrap(), &local()).unwrap();
    assert!(text.ends_with("a=ptime:20\r\na=recvonly\r\n"));
    assert_eq!(negotiated.direction, Direction::RecvOnly);
    assert!(!negotiated.sends_rtp() && negotiated.receives_rtp());
}

#[test]
fn session_level_direction_applies_to_media_without_its_own() {
    let offer = crlf(&SIPP_UAC.replace("t=0 0\n", "t=0 0\na=recvonly\n"));
    let (text, negotiated) = answer(&parse(&offer).unwrap(), &local()).unwrap();
    assert!(text.ends_with("a=sendonly\r\n"));
    assert_eq!(negotiated.direction, Direction::SendOnly);
}

#[test]
fn inactive_offer_is_answered_inactive() {
    let offer = crlf(&ASTERISK.replace("a=sendrecv", "a=inactive"));
    let (_, negotiated) = answer(&parse(&offer).unwrap(), &local()).unwrap();
    assert_eq!(negotiated.direction, Direction::Inactive);
    assert!(!negotiated.sends_rtp() && !negotiated.receives_rtp());
}

#[test]
fn rfc2543_hold_with_zero_address_sends_nothing() {
    let hold = crlf(&ASTERISK.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0"));
    let (text, negotiated) = answer(&parse(&hold).unwrap(), &local()).unwrap();
    assert_eq!(negotiated.remote, "0.0.0.0:18642".parse().unwrap());
    assert_eq!(negotiated.direction, Direction::RecvOnly);
    assert!(!negotiated.sends_rtp());
    assert!(text.ends_with("a=recvonly\r\n"));
}

#[test]
fn media_level_connection_overrides_session_level() {
    let offer = asterisk_with("m=audio 5000 RTP/AVP 0\nc=IN IP4 192.0.2.99\n");
    let sdp = parse(&offer).unwrap();
    assert_eq!(sdp.connection, Some("192.0.2.10".parse().unwrap()));
    let (_, negotiated) = answer(&sdp, &local()).unwrap();
    assert_eq!(negotiated.remote, "192.0.2.99:5000".parse().unwrap());
}

#[test]
fn media_level_connection_alone_is_enough() {
    let offer = crlf(&CISCO.replace(
        "c=IN IP4 198.51.100.7\nt=0 0\nm=audio 16384 RTP/AVP 0 8 18 96\n",
        "t=0 0\nm=audio 16384 RTP/AVP 0 8 18 96\nc=IN IP4 198.51.100.8\n",
    ));
    let sdp = parse(&offer).unwrap();
    assert_eq!(sdp.connection, None);
    let (_, negotiated) = answer(&sdp, &local()).unwrap();
    assert_eq!(negotiated.remote, "198.51.100.8:16384".parse().unwrap());
}

#[test]
fn missing_connection_address_is_refused() {
    let offer = crlf(&SIPP_UAC.replace("c=IN IP4 127.0.0.1\n", ""));
    let error = answer(&parse(&offer).unwrap(), &local()).unwrap_err();
    assert_eq!(error, NegotiationError::NoConnectionAddress);
}

#[test]
fn lf_only_and_sloppy_whitespace_parse_like_crlf() {
    let sloppy = SIPP_UAC.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000  \n\n  ")
        + "y=an unknown line type\na=x-vendor-thing:1\n";
    assert_eq!(parse(SIPP_UAC).unwrap(), parse(&crlf(SIPP_UAC)).unwrap());
    assert_eq!(parse(&sloppy).unwrap(), parse(&crlf(SIPP_UAC)).unwrap());
}

#[test]
fn ptime_is_honoured_when_sending_but_we_ask_for_20() {
    let offer = asterisk_with("m=audio 5000 RTP/AVP 0\na=ptime:30\n");
    let (text, negotiated) = answer(&parse(&offer).unwrap(), &local()).unwrap();
    assert_eq!(negotiated.ptime_ms, 30);
    assert!(text.contains("a=ptime:20\r\n"));

    let capped = asterisk_with("m=audio 5000 RTP/AVP 0\na=ptime:30\na=maxptime:10\n");
    assert_eq!(
        answer(&parse(&capped).unwrap(), &local())
            .unwrap()
            .1
            .ptime_ms,
        10
    );

    let nonsense = asterisk_with("m=audio 5000 RTP/AVP 0\na=ptime:1000\n");
    assert_eq!(
        answer(&parse(&nonsense).unwrap(), &local())
            .unwrap()
            .1
            .ptime_ms,
        20
    );
}

#[test]
fn ipv6_offer_and_answer_use_in_ip6() {
    let offer = "v=0\r\no=- 1 1 IN IP6 2001:db8::10\r\ns=-\r\nc=IN IP6 2001:db8::10\r\n\
                 t=0 0\r\nm=audio 5004 RTP/AVP 0\r\n";
    let ours = LocalMedia {
        addr: IpAddr::V6("2001:db8::1".parse().unwrap()),
        ..local()
    };
    let (text, negotiated) = answer(&parse(offer).unwrap(), &ours).unwrap();
    assert!(text.contains("o=callflow 42 1 IN IP6 2001:db8::1\r\n"));
    assert!(text.contains("c=IN IP6 2001:db8::1\r\n"));
    let theirs: Ipv6Addr = "2001:db8::10".parse().unwrap();
    assert_eq!(negotiated.remote, SocketAddr::new(IpAddr::V6(theirs), 5004));

    let error = answer(&parse(offer).unwrap(), &local()).unwrap_err();
    assert!(matches!(
        error,
        NegotiationError::AddressFamilyMismatch { .. }
    ));
    assert_eq!(error.warning_code(), 301);
}

#[test]
fn session_version_is_written_as_given() {
    let reinvite = LocalMedia {
        session_version: 7,
        ..local()
    };
    let (text, _) = answer(&parse(&crlf(SIPP_UAC)).unwrap(), &reinvite).unwrap();
    assert!(text.contains("o=callflow 42 7 IN IP4 203.0.113.5\r\n"));
}

#[test]
fn delayed_offer_is_golden() {
    let golden = "v=0\r\n\
        o=callflow 42 1 IN IP4 203.0.113.5\r\n\
        s=callflow\r\n\
        c=IN IP4 203.0.113.5\r\n\
        t=0 0\r\n\
        m=audio 40000 RTP/AVP 0 8 101\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=ptime:20\r\n\
        a=sendrecv\r\n";
    assert_eq!(offer(&local()), golden);
}

#[test]
fn our_offer_parses_and_answers_itself() {
    let ours = parse(&offer(&local())).unwrap();
    let (_, negotiated) = answer(&ours, &local()).unwrap();
    assert_eq!(negotiated.codec, Codec::Pcmu);
    assert_eq!(negotiated.dtmf_payload_type, Some(101));
}

#[test]
fn answer_in_ack_is_accepted() {
    // SIPp's uas answer; then one choosing A-law with DTMF, holding us.
    let sipp = parse(&crlf(SIPP_UAC)).unwrap();
    let negotiated = accept_answer(&sipp).unwrap();
    assert_eq!(
        (negotiated.codec, negotiated.dtmf_payload_type),
        (Codec::Pcmu, None)
    );
    assert_eq!(negotiated.direction, Direction::SendRecv);

    let held = asterisk_with(
        "m=audio 5000 RTP/AVP 8 101\na=rtpmap:101 telephone-event/8000\na=recvonly\n",
    );
    let negotiated = accept_answer(&parse(&held).unwrap()).unwrap();
    assert_eq!(negotiated.codec, Codec::Pcma);
    assert_eq!(negotiated.dtmf_payload_type, Some(101));
    assert_eq!(negotiated.direction, Direction::SendOnly);
}

#[test]
fn rejected_or_unusable_answer_is_an_error() {
    let rejected = parse(&asterisk_with("m=audio 0 RTP/AVP 0\n")).unwrap();
    assert_eq!(accept_answer(&rejected), Err(NegotiationError::NoAudio));
    let g729 = parse(&asterisk_with("m=audio 5000 RTP/AVP 18\n")).unwrap();
    assert!(matches!(
        accept_answer(&g729),
        Err(NegotiationError::NoCommonCodec { .. })
    ));
}

#[test]
fn garbage_is_an_error_naming_the_line() {
    assert_eq!(parse(""), Err(SdpError::Empty));
    assert_eq!(parse(" \r\n\r\n"), Err(SdpError::Empty));
    assert!(matches!(
        parse("INVITE sip:ivr@example.com SIP/2.0"),
        Err(SdpError::MissingVersion { line: 1, .. })
    ));
    assert!(matches!(
        parse("v=1\r\n"),
        Err(SdpError::UnsupportedVersion { line: 1, .. })
    ));
    let error = parse("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nthis is not sdp\r\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 3: expected <type>=<value> with a one-letter type and no CR or NUL inside, found \"this is not sdp\""
    );
    assert_eq!(parse("v=0\r\ns=-\r\n"), Err(SdpError::MissingOrigin));
    let smuggled =
        asterisk_with("m=audio 5000 RTP/AVP 0 101\na=fmtp:101 0-16\rm=video 1 RTP/AVP 31\n");
    assert!(matches!(
        parse(&smuggled),
        Err(SdpError::MalformedLine { line: 7, .. })
    ));
}

#[test]
fn malformed_lines_are_errors_naming_the_line() {
    let cases = [
        ("o=- 1 1 IN IP4", "line 2: bad o= line"),
        ("o=- 1 x IN IP4 1.2.3.4", "line 2: bad o= line"),
        ("c=IN IP4 media.example.com", "line 3: bad c= line"),
        ("m=audio 70000 RTP/AVP 0", "line 3: bad m= line"),
        ("m=audio 5000", "line 3: bad m= line"),
        (
            "m=audio 5000 RTP/AVP 0\na=rtpmap:0 PCMU",
            "line 4: bad a=rtpmap",
        ),
        (
            "m=audio 5000 RTP/AVP 0\na=rtpmap:200 PCMU/8000",
            "line 4: bad a=rtpmap",
        ),
        (
            "m=audio 5000 RTP/AVP 0\na=fmtp:x 0-16",
            "line 4: bad a=fmtp",
        ),
        (
            "m=audio 5000 RTP/AVP 0\na=ptime:twenty",
            "line 4: bad a=ptime",
        ),
    ];
    for (bad, expected) in cases {
        let text = if bad.starts_with("o=") {
            format!("v=0\n{bad}\n")
        } else {
            format!("v=0\no=- 1 1 IN IP4 1.2.3.4\n{bad}\n")
        };
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.starts_with(expected), "{bad:?} gave {error:?}");
    }
}

#[test]
fn no_input_panics_parse_or_answer() {
    // A poor man's fuzzer: every prefix and every one-byte corruption of
    // the fixtures must come back as Ok or Err, never a panic.
    for fixture in [SIPP_UAC, ASTERISK, CISCO, VIDEO_AND_AUDIO] {
        let text = crlf(fixture);
        let mut inputs: Vec<String> = (0..=text.len())
            .filter(|&end| text.is_char_boundary(end))
            .map(|end| text[..end].to_owned())
            .collect();
        for index in 0..text.len() {
            for replacement in [b'=', b' ', b'/', b':', b'\n', b'0', b'9'] {
                let mut bytes = text.clone().into_bytes();
                bytes[index] = replacement;
                inputs.extend(String::from_utf8(bytes).ok());
            }
        }
        for input in inputs {
            if let Ok(sdp) = parse(&input) {
                let _ = answer(&sdp, &local());
                let _ = accept_answer(&sdp);
            }
        }
    }
}

/// RFC 4475 3.1.1.1's offer: its video rtpmap has no clock rate.
const RFC4475_WSINV: &str = "v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
";

#[test]
fn an_unreadable_line_in_a_video_stream_does_not_cost_the_audio() {
    let (text, negotiated) = answer_to(RFC4475_WSINV).expect("answered for its audio");
    assert_eq!(negotiated.codec, Codec::Pcmu);
    assert_eq!(
        negotiated.remote,
        "192.0.2.4:49217".parse::<SocketAddr>().unwrap()
    );
    assert!(text.contains("m=video 0 RTP/AVP 31\r\n"), "{text}");
    // The same line in the audio stream is still an error naming it.
    let broken = RFC4475_WSINV.replace("m=video 3227 RTP/AVP 31\n", "");
    assert!(parse(&crlf(&broken)).is_err());
}
