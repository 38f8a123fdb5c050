//! Parsing what real peers send and answering it per RFC 3261 8.2.6.

use std::net::SocketAddr;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).unwrap()
}

fn source() -> SocketAddr {
    "192.0.2.10:5099".parse().unwrap()
}

#[test]
fn sipp_invite_parses_with_its_sdp() {
    let m = parse(&fixture("sipp-invite.sip")).unwrap();
    assert_eq!(m.method(), Method::Invite);
    assert_eq!(m.call_id(), "1-42@127.0.0.1");
    assert_eq!(m.cseq().unwrap(), (1, "INVITE"));
    assert_eq!(m.from_tag(), Some("1"));
    assert_eq!(m.to_tag(), None);
    assert_eq!(m.body.len(), 129);
    assert!(m.body.starts_with(b"v=0"));
    let via = m.top_via().unwrap();
    assert_eq!(via.host, "127.0.0.1");
    assert_eq!(via.port, Some(5070));
    assert_eq!(via.branch.as_deref(), Some("z9hG4bK-1-0"));
}

#[test]
fn compact_forms_folding_and_via_lists_are_understood() {
    let m = parse(&fixture("trunk-invite-compact.sip")).unwrap();
    assert_eq!(m.call_id(), "7a9f@trunk");
    assert_eq!(m.headers_named("Via").count(), 3);
    assert_eq!(m.headers_named("Record-Route").count(), 2);
    assert_eq!(m.header("Subject"), Some("folded line"));
    assert_eq!(m.from_tag(), Some("abc"));
    assert_eq!(
        uri_of(m.header("Contact").unwrap()),
        "sip:+37120000000@192.0.2.10:5060;transport=udp"
    );
}

#[test]
fn response_copies_every_via_in_order_and_stamps_the_top_one() {
    let m = parse(&fixture("trunk-invite-compact.sip")).unwrap();
    let bytes = ResponseBuilder::new(&m, source(), 180, "Ringing", Some("xyz")).build();
    let text = String::from_utf8(bytes).unwrap();
    let expected = "SIP/2.0 180 Ringing\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKaaa;rport=5099;received=192.0.2.10\r\n\
Via: SIP/2.0/UDP 192.0.2.20:5080;branch=z9hG4bKbbb\r\n\
Via: SIP/2.0/UDP 192.0.2.30;branch=z9hG4bKccc\r\n\
From: \"Caller, Jr.\" <sip:+37120000000@trunk.example.net>;tag=abc\r\n\
To: <sip:+37167000000@10.0.0.5>;tag=xyz\r\n\
Call-ID: 7a9f@trunk\r\n\
CSeq: 4711 INVITE\r\n\
Content-Length: 0\r\n\r\n";
    assert_eq!(text, expected);
    let via = m.top_via().unwrap();
    assert_eq!(
        response_destination(via, source()),
        source(),
        "rport: answer the source"
    );
}

#[test]
fn without_rport_responses_go_to_the_sent_by_port() {
    let m = parse(&fixture("sipp-invite.sip")).unwrap();
    let via = m.top_via().unwrap();
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    assert_eq!(
        response_destination(via, from),
        "127.0.0.1:5070".parse().unwrap()
    );
}

#[test]
fn missing_mandatory_header_is_a_bad_request() {
    let text = String::from_utf8(fixture("sipp-invite.sip")).unwrap();
    let without = text.replace("Call-ID: 1-42@127.0.0.1\r\n", "");
    match parse(without.as_bytes()) {
        Err(ParseError::BadRequest { reason, .. }) => assert_eq!(reason, "missing Call-ID header"),
        other => panic!("{other:?}"),
    }
    let no_via = text.replace("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-0\r\n", "");
    assert!(matches!(
        parse(no_via.as_bytes()),
        Err(ParseError::Garbage(_))
    ));
}

#[test]
fn content_length_beyond_the_datagram_is_a_bad_request() {
    let text = String::from_utf8(fixture("sipp-invite.sip")).unwrap();
    let longer = text.replace("Content-Length:   129", "Content-Length: 500");
    assert!(matches!(
        parse(longer.as_bytes()),
        Err(ParseError::BadRequest { .. })
    ));
    let extra = format!("{text}trailing junk");
    assert_eq!(
        parse(extra.as_bytes()).unwrap().body.len(),
        129,
        "extra bytes are cut"
    );
}

#[test]
fn unknown_methods_parse_so_they_can_be_answered_501() {
    let text = String::from_utf8(fixture("sipp-invite.sip")).unwrap();
    let foo = text.replace("INVITE sip:", "FOO sip:");
    let m = parse(foo.as_bytes()).unwrap();
    assert_eq!(m.method(), Method::Other("FOO".into()));
}

#[test]
fn keep_alives_and_garbage_are_told_apart() {
    assert_eq!(parse(b"\r\n\r\n"), Err(ParseError::KeepAlive));
    assert!(matches!(
        parse(b"GET / HTTP/1.1\r\n\r\n"),
        Err(ParseError::Garbage(_))
    ));
    assert!(matches!(
        parse(&[0xff, 0xfe, 0x00]),
        Err(ParseError::Garbage(_))
    ));
}

#[test]
fn no_prefix_or_mutation_of_a_message_panics() {
    let base = fixture("trunk-invite-compact.sip");
    for cut in 0..base.len() {
        let _ = parse(&base[..cut]);
    }
    let mut seed = 0x2545F4914F6CDD1Du64;
    for _ in 0..2000 {
        let mut m = base.clone();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % m.len();
            m[i] = (seed >> 32) as u8;
        }
        let _ = parse(&m);
    }
}

#[test]
fn uri_and_via_helpers_handle_ipv6_and_params() {
    assert_eq!(
        uri_host_port("sip:alice@[2001:db8::1]:5062;transport=udp"),
        Some(("2001:db8::1", Some(5062)))
    );
    assert_eq!(
        uri_host_port("sip:acd.example.net"),
        Some(("acd.example.net", None))
    );
    let via = Via::parse("SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx;rport").unwrap();
    assert_eq!(via.host, "2001:db8::9");
    assert!(via.rport);
    assert_eq!(tag_param("<sip:a@b>;tag=7;x=1"), Some("7"));
    assert_eq!(tag_param("sip:a@b;tag=8"), Some("8"));
    assert_eq!(
        split_list("<sip:a,b@x>, \"q,r\" <sip:c@y>"),
        ["<sip:a,b@x>", "\"q,r\" <sip:c@y>"]
    );
}

/// What the second parse through rsip used to catch is caught in the one
/// pass: each of these gets 400 with a reason that says what is wrong.
#[test]
fn the_grammar_a_ua_relies_on_is_checked_in_the_one_pass() {
    let base = |replace: (&str, &str)| {
        let m = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c1@y\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContact: <sip:x@192.0.2.1>\r\nContent-Length: 0\r\n\r\n";
        assert!(m.contains(replace.0), "{}", replace.0);
        parse(m.replace(replace.0, replace.1).as_bytes())
    };
    assert!(base(("Max-Forwards: 70", "Max-Forwards: 70")).is_ok());
    for (from, to, says) in [
        (
            "From: <sip:x@y>;tag=1",
            "From: nobody;tag=1",
            "From holds no URI",
        ),
        ("To: <sip:a@b>", "To: <>", "To holds no URI"),
        (
            "Contact: <sip:x@192.0.2.1>",
            "Contact: <just words>",
            "Contact without a URI",
        ),
        ("Call-ID: c1@y", "Call-ID: c1 @y", "malformed Call-ID"),
        (
            "Max-Forwards: 70",
            "Max-Forwards: seventy",
            "malformed Max-Forwards",
        ),
        ("Contact:", "Con tact:", "not a token"),
    ] {
        match base((from, to)) {
            Err(ParseError::BadRequest { reason, .. }) => {
                assert!(reason.contains(says), "{to}: {reason}")
            }
            other => panic!("{to}: {other:?}"),
        }
    }
    // A Via without a sent-by cannot be answered at all.
    assert!(matches!(
        base(("SIP/2.0/UDP 192.0.2.1:5060;branch", "SIP/2.0/UDP ;branch")),
        Err(ParseError::BadRequest { .. } | ParseError::Garbage(_))
    ));
}

#[test]
fn a_via_with_spaces_around_its_slashes_is_read_rfc4475_wsinv() {
    let via = Via::parse("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw").unwrap();
    assert_eq!(
        (via.transport.as_str(), via.host.as_str(), via.port),
        ("UDP", "192.0.2.2", None)
    );
    assert_eq!(via.branch.as_deref(), Some("390skdjuw"));
    let wsinv = format!("{}/tests/rfc4475/wsinv.sip", env!("CARGO_MANIFEST_DIR"));
    let m = parse(&std::fs::read(wsinv).unwrap()).unwrap();
    assert_eq!(m.top_via().map(|v| v.host.as_str()), Some("192.0.2.2"));
    assert_eq!(m.call_id(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(m.cseq(), Ok((9, "INVITE")));
}
