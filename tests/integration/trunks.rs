//! Admission control end to end: `callflow serve` with a `trunks` section,
//! SIPp callers from different loopback addresses (127.0.0.2, 127.0.0.3,
//! ...; Linux answers on all of 127.0.0.0/8), and a raw-socket caller for
//! what SIPp cannot do (RTP from a second address).

// These tests are an IO edge: they watch real packets on the real clock.
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::sipp::Server;

/// A server whose trunks are `trunks` (YAML, indented under `trunks:`);
/// 127.0.0.1 is always a trunk of its own, for the readiness probe.
fn server_with(trunks: &str) -> Server {
    server_with_config(&format!(
        "trunks:\n  probe: {{ sources: 127.0.0.1/32 }}\n{trunks}"
    ))
}

/// A server started with `yaml` as its configuration file.
fn server_with_config(yaml: &str) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("callflow.yaml");
    std::fs::write(&config, yaml).expect("config");
    let path = config.to_string_lossy().into_owned();
    Server::start_in(dir, &["--config", &path])
}

/// How many 503s with Retry-After the SIPp run of `scenario` received.
fn refusals(server: &Server, scenario: &str) -> usize {
    let log = std::fs::read_to_string(server.dir.path().join(format!("{scenario}-messages.log")))
        .unwrap_or_default();
    log.lines()
        .filter(|l| l.starts_with("SIP/2.0 503 Service Unavailable (trunk"))
        .count()
}

/// How many call records came from `source_ip` (the caller's From host).
fn calls_from(server: &Server, n: usize, source_ip: &str) -> usize {
    server
        .records(n)
        .iter()
        .filter(|r| r["from"].as_str().unwrap_or("").contains(source_ip))
        .count()
}

#[test]
fn a_source_outside_every_trunk_gets_nothing_at_all() {
    let server = server_with("  carrier: { sources: 127.0.0.2/32, media: 127.0.0.0/8 }\n");
    let out = server.sipp_from("127.0.0.9", server.port, "unanswered", &["-m", "2"]);
    let seen = std::fs::read_to_string(server.dir.path().join("unanswered-messages.log"))
        .unwrap_or_default();
    assert!(
        seen.contains("message sent"),
        "SIPp did call:\n{}",
        server.explain("unanswered", &out)
    );
    assert!(
        !seen.contains("message received"),
        "a stranger got an answer:\n{seen}"
    );
    assert_eq!(out.status.code(), Some(1), "both calls time out");
    // The trunk itself is served.
    let out = server.sipp_from("127.0.0.2", server.port, "admission_probe", &["-m", "1"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(calls_from(&server, 1, "127.0.0.2"), 1);
}

#[test]
fn a_trunk_over_its_call_limit_gets_503_while_another_trunk_is_served() {
    let server = server_with(
        "  carrier: { sources: 127.0.0.2/32, media: 127.0.0.0/8, max_calls: 2 }\n  \
         pbx: { sources: 127.0.0.3/32, media: 127.0.0.0/8 }\n",
    );
    // Five calls at once from the carrier: two fit, three are turned away.
    let carrier = server
        .sipp_command(
            "127.0.0.2",
            server.port,
            "admission_probe",
            &["-m", "5", "-l", "5", "-r", "50"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp");
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile the PBX's calls are all answered.
    let sink = UdpSocket::bind("127.0.0.3:0").expect("bind");
    let sink_port = sink.local_addr().expect("addr").port().to_string();
    let pbx = server.sipp_from(
        "127.0.0.3",
        server.port,
        "greeting",
        &[
            "-m", "3", "-l", "3", "-r", "10", "-key", "rtp_sink", &sink_port,
        ],
    );
    let carrier = carrier.wait_with_output().expect("sipp");
    assert_eq!(
        carrier.status.code(),
        Some(0),
        "{}",
        server.explain("admission_probe", &carrier)
    );
    assert_eq!(
        pbx.status.code(),
        Some(0),
        "{}",
        server.explain("greeting", &pbx)
    );
    assert_eq!(refusals(&server, "admission_probe"), 3);
    assert_eq!(calls_from(&server, 5, "127.0.0.2"), 2);
    assert_eq!(calls_from(&server, 5, "127.0.0.3"), 3);
}

#[test]
fn a_trunk_over_its_call_rate_gets_503_with_retry_after() {
    let server = server_with(
        "  carrier: { sources: 127.0.0.2/32, media: 127.0.0.0/8, calls_per_second: 2 }\n",
    );
    // Ten calls in a tenth of a second against two a second.
    let out = server.sipp_from(
        "127.0.0.2",
        server.port,
        "admission_probe",
        &["-m", "10", "-l", "10", "-r", "100"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        server.explain("admission_probe", &out)
    );
    let refused = refusals(&server, "admission_probe");
    assert!(
        (6..=8).contains(&refused),
        "the burst of two (and a token or two refilled while SIPp sends) is taken, the rest refused: {refused}"
    );
    assert_eq!(calls_from(&server, 10 - refused, "127.0.0.2"), 10 - refused);
}

#[test]
fn an_invite_flood_from_one_source_does_not_stop_calls_from_another() {
    let server = server_with(
        "  carrier: { sources: 127.0.0.2/32, media: 127.0.0.0/8 }\n  \
         pbx: { sources: 127.0.0.3/32, media: 127.0.0.0/8 }\n",
    );
    // 5,000 INVITEs at 1,000 a second that are never ACKed: without
    // admission control each took an RTP port for 32 s.
    let flood = server
        .sipp_command(
            "127.0.0.2",
            server.port,
            "invite_flood",
            &["-m", "5000", "-r", "1000", "-l", "5000", "-nd"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp");
    std::thread::sleep(Duration::from_millis(500));
    let pbx = server.sipp_from(
        "127.0.0.3",
        server.port,
        "admission_probe",
        &["-m", "20", "-l", "20", "-r", "5"],
    );
    let _ = flood.wait_with_output();
    assert_eq!(
        pbx.status.code(),
        Some(0),
        "{}",
        server.explain("admission_probe", &pbx)
    );
    assert_eq!(refusals(&server, "admission_probe"), 0);
    assert_eq!(calls_from(&server, 20, "127.0.0.3"), 20);
}

/// A caller on a raw socket: INVITE, 200, ACK, then RFC 4733 key `0` (the
/// agent key, which transfers with REFER) sent from `rtp_from`. Returns
/// whether a REFER came within two seconds.
fn key_from(server: &Server, rtp_from: Option<&UdpSocket>) -> bool {
    let sip = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let media = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sip.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let me = sip.local_addr().expect("addr");
    let media_port = media.local_addr().expect("addr").port();
    let to = format!("127.0.0.1:{}", server.port);
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {media_port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    let call_id = format!("latch-{}", media_port);
    let head = |method: &str, cseq: u32, to_tag: &str| {
        format!(
            "{method} sip:8000@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{method}{cseq}{media_port}\r\nFrom: <sip:+37120000000@{me}>;tag=c1\r\nTo: <sip:8000@{to}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@{me}>\r\nMax-Forwards: 70\r\n"
        )
    };
    let invite = format!(
        "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        head("INVITE", 1, ""),
        sdp.len()
    );
    sip.send_to(invite.as_bytes(), &to).expect("send");
    let mut buf = [0u8; 4096];
    let mut answer = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while answer.is_none() && Instant::now() < deadline {
        if let Ok((n, _)) = sip.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with("SIP/2.0 200") {
                answer = Some(text);
            }
        }
    }
    let answer = answer.expect("the call is answered");
    let tag = answer
        .lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split("tag=").nth(1))
        .expect("a To tag")
        .trim()
        .to_string();
    let port: u16 = answer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("our RTP port");
    let ack = format!(
        "{}Content-Length: 0\r\n\r\n",
        head("ACK", 1, &format!(";tag={tag}"))
    );
    sip.send_to(ack.as_bytes(), &to).expect("ack");
    std::thread::sleep(Duration::from_millis(300));
    let sender = rtp_from.unwrap_or(&media);
    for (i, end) in [(0u16, false), (1, false), (2, true), (3, true), (4, true)] {
        let mut p = vec![0x80, 101, 0, i as u8];
        p.extend_from_slice(&8000u32.to_be_bytes());
        p.extend_from_slice(&0x5eed_u32.to_be_bytes());
        p.extend_from_slice(&[0, if end { 0x8a } else { 0x0a }, 0x03, 0x20]);
        sender.send_to(&p, ("127.0.0.1", port)).expect("rtp");
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut referred = false;
    while Instant::now() < deadline {
        if let Ok((n, _)) = sip.recv_from(&mut buf) {
            if buf[..n].starts_with(b"REFER ") {
                referred = true;
                break;
            }
        }
    }
    let bye = format!(
        "{}Content-Length: 0\r\n\r\n",
        head("BYE", 2, &format!(";tag={tag}"))
    );
    sip.send_to(bye.as_bytes(), &to).expect("bye");
    referred
}

#[test]
fn rtp_from_a_second_address_cannot_press_keys_in_a_call() {
    let server = Server::start(&[]);
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert!(
        !key_from(&server, Some(&stranger)),
        "a stranger's RFC 4733 key transferred the call:\n{}",
        server.log()
    );
    // The same key from the address the caller's SDP names does.
    assert!(
        key_from(&server, None),
        "the caller's own key did nothing:\n{}",
        server.log()
    );
}

#[test]
fn a_number_booked_as_often_as_the_limit_allows_is_refused_the_next_time() {
    let server = server_with_config(
        "routes: { \"8002\": cb }\nbooking_limits: { per_number: 1, per_source: 10, window: 1h }\n",
    );
    server.call("callback_confirm", &[]);
    let _ = server.sipp("callback_confirm", &["-m", "1"]);
    let records = server.records(2);
    assert_eq!(records.len(), 2, "{}", server.log());
    assert_eq!(
        records[0]["outcome"], "callback_requested",
        "{}",
        records[0]
    );
    assert_ne!(
        records[1]["outcome"], "callback_requested",
        "{}",
        records[1]
    );
    assert!(
        server.log().contains("over the booking limit"),
        "{}",
        server.log()
    );
}

#[test]
fn a_trunk_with_credentials_is_challenged_and_sipps_answer_is_accepted() {
    let server = server_with(
        "  pbx:\n    sources: 127.0.0.3/32\n    media: 127.0.0.0/8\n    \
         digest: { realm: callflow, username: pbx, password: s3cret }\n",
    );
    let out = server.sipp_from(
        "127.0.0.3",
        server.port,
        "inbound_auth",
        &["-m", "1", "-au", "pbx", "-ap", "s3cret"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        server.explain("inbound_auth", &out)
    );
    assert_eq!(calls_from(&server, 1, "127.0.0.3"), 1);
    // The wrong password: challenged again, never a call.
    let out = server.sipp_from(
        "127.0.0.3",
        server.port,
        "inbound_auth",
        &["-m", "1", "-au", "pbx", "-ap", "guess", "-timeout", "5s"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(calls_from(&server, 2, "127.0.0.3"), 1, "{}", server.log());
}

/// Sprays RFC 4733 key `0` (the agent key) at every even port of the
/// server's RTP range from a socket of our own, three times over.
fn spray_agent_key(server: &Server) {
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let (first, last) = server.rtp_ports;
    for round in 0..3u16 {
        for port in (first..=last).step_by(2) {
            for (i, end) in [(0u16, false), (1, true), (2, true), (3, true)] {
                let mut p = vec![0x80, 101];
                p.extend_from_slice(&(round * 4 + i).to_be_bytes());
                p.extend_from_slice(&(8000u32 * u32::from(round + 1)).to_be_bytes());
                p.extend_from_slice(&0xbad5_eed5_u32.to_be_bytes());
                p.extend_from_slice(&[0, if end { 0x8a } else { 0x0a }, 0x03, 0x20]);
                let _ = stranger.send_to(&p, ("127.0.0.1", port));
            }
        }
        std::thread::sleep(Duration::from_millis(400));
    }
}

/// A SIPp caller who presses nothing while `spray_agent_key` runs; whether
/// SIPp saw the call through without a REFER.
fn sipp_call_while_a_stranger_sprays_keys(server: &Server) -> bool {
    let caller = server
        .sipp_command("127.0.0.1", server.port, "stranger_keys", &["-m", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp");
    std::thread::sleep(Duration::from_millis(600));
    spray_agent_key(server);
    let out = caller.wait_with_output().expect("sipp");
    out.status.code() == Some(0)
}

#[test]
fn rtp_from_a_second_address_cannot_press_keys_in_a_sipp_call() {
    let server = Server::start(&[]);
    assert!(
        sipp_call_while_a_stranger_sprays_keys(&server),
        "a stranger's keys reached the flow:\n{}",
        server.log()
    );
    let r = &server.records(1)[0];
    assert_ne!(r["outcome"], "transferred", "{r}");
    assert!(!r["digits"].as_str().unwrap_or("").contains('0'), "{r}");
    // The spray does reach the call's port: with first-source latching
    // (for callers behind NAT) the stranger, first to send, is taken.
    let nat = server_with_config("rtp_latch_first: true\n");
    assert!(
        !sipp_call_while_a_stranger_sprays_keys(&nat),
        "the spray never reached the call, so the first check proved nothing"
    );
}
