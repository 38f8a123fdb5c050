//! Whole calls through the user agent on a fake clock: what RFC 3261 and
//! RFC 3515 say must go on the wire, checked message by message.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::sip::sdp::LocalMedia;

const PEER: &str = "127.0.0.1:5070";

mod admission;
mod failover;

struct Rig {
    ua: UserAgent,
    now: Instant,
    start: Instant,
    sent: Vec<(Duration, SocketAddr, String)>,
    /// Over what each of `sent` went.
    transports: Vec<crate::sip::transport::Transport>,
    /// Where the rig's messages come from.
    source: crate::sip::transport::Peer,
    events: Vec<(CallHandle, UaEvent)>,
}

fn invite(call_id: &str, branch: &str, extra: &str, body: &str) -> String {
    format!(
        "INVITE sip:8000@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
From: sipp <sip:+37120000000@127.0.0.1:5070>;tag=caller1\r\n\
To: <sip:8000@127.0.0.1:5060>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:sipp@127.0.0.1:5070>\r\n\
Max-Forwards: 70\r\n{extra}\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn in_dialog(
    method: &str,
    call_id: &str,
    to_tag: &str,
    cseq: u32,
    branch: &str,
    extra: &str,
    body: &str,
) -> String {
    format!(
        "{method} sip:callflow@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
From: sipp <sip:+37120000000@127.0.0.1:5070>;tag=caller1\r\n\
To: <sip:8000@127.0.0.1:5060>;tag={to_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} {method}\r\n\
Max-Forwards: 70\r\n{extra}\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Our media for an answer.
fn media() -> LocalMedia {
    LocalMedia {
        addr: "127.0.0.1".parse().unwrap(),
        port: 20000,
        session_id: 1,
        session_version: 1,
    }
}

impl Rig {
    fn new() -> Self {
        Self::with(UaConfig::new("127.0.0.1:5060".parse().unwrap()))
    }

    fn with(config: UaConfig) -> Self {
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let now = Instant::now();
        Self {
            ua: UserAgent::new(config),
            now,
            start: now,
            sent: Vec::new(),
            transports: Vec::new(),
            source: crate::sip::transport::Peer::udp(PEER.parse().unwrap()),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.ua.poll_output() {
            match o {
                UaOutput::Transmit { to, bytes } => {
                    self.transports.push(to.transport);
                    self.sent.push((
                        self.now - self.start,
                        to.addr,
                        String::from_utf8_lossy(&bytes).into_owned(),
                    ))
                }
                UaOutput::Event(c, e) => self.events.push((c, e)),
            }
        }
    }

    fn recv(&mut self, text: &str) {
        self.ua
            .handle_datagram(self.now, self.source, text.as_bytes());
        self.drain();
    }

    /// Advances the fake clock to `at` (after start), firing timers on the way.
    fn run_until(&mut self, at: Duration) {
        let end = self.start + at;
        while let Some(t) = self.ua.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.ua.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    fn statuses(&self) -> Vec<String> {
        self.sent
            .iter()
            .map(|(_, _, t)| t.lines().next().unwrap_or("").to_string())
            .collect()
    }

    fn to_tag(&self) -> String {
        let text = &self
            .sent
            .iter()
            .rev()
            .find(|(_, _, t)| t.starts_with("SIP/2.0 200"))
            .unwrap()
            .2;
        let to = text.lines().find(|l| l.starts_with("To:")).unwrap();
        to.split("tag=").nth(1).unwrap().trim().to_string()
    }

    /// The call the last event announced as incoming.
    fn last_incoming(&self) -> CallHandle {
        match self.events.last() {
            Some((c, UaEvent::Incoming(_))) => *c,
            other => panic!("{other:?}"),
        }
    }

    fn incoming(&mut self, call_id: &str) -> CallHandle {
        self.incoming_with(call_id, "")
    }

    /// A new INVITE with `extra` header lines; returns its call.
    fn incoming_with(&mut self, call_id: &str, extra: &str) -> CallHandle {
        self.recv(&invite(call_id, "z9hG4bK-inv1", extra, OFFER));
        match self.events.last() {
            Some((c, UaEvent::Incoming(i))) => {
                assert_eq!(i.caller, "+37120000000");
                assert_eq!(i.called, "8000");
                *c
            }
            other => panic!("{other:?}"),
        }
    }

    /// Answers `call` with 200 OK (our media, a stand-in SDP body).
    fn accept(&mut self, call: CallHandle) -> bool {
        let media = crate::sip::sdp::MediaSession::new(media());
        self.ua.accept(self.now, call, media, b"v=0\r\n", false)
    }

    fn answered(&mut self, call_id: &str) -> (CallHandle, String) {
        self.answered_with(call_id, "")
    }

    /// A call whose INVITE had `extra` header lines, answered and acked.
    fn answered_with(&mut self, call_id: &str, extra: &str) -> (CallHandle, String) {
        let call = self.incoming_with(call_id, extra);
        assert!(self.accept(call));
        self.drain();
        let tag = self.to_tag();
        self.recv(&in_dialog("ACK", call_id, &tag, 1, "z9hG4bK-ack1", "", ""));
        (call, tag)
    }
}

#[test]
fn invite_gets_100_trying_then_200_and_the_ack_confirms() {
    let mut rig = Rig::new();
    let (call, _) = rig.answered("c1");
    assert_eq!(rig.statuses(), ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]);
    assert_eq!(
        rig.sent[0].1,
        PEER.parse().unwrap(),
        "answers go to the Via sent-by"
    );
    let ok = &rig.sent[1].2;
    assert!(
        ok.contains("Contact: <sip:callflow@127.0.0.1:5060>"),
        "{ok}"
    );
    assert!(ok.contains("Content-Type: application/sdp"));
    assert_eq!(
        rig.events.last(),
        Some(&(call, UaEvent::Confirmed { answer: None }))
    );
    rig.run_until(Duration::from_secs(40));
    assert_eq!(rig.sent.len(), 2, "no 2xx retransmission after the ACK");
}

#[test]
fn a_call_over_tcp_keeps_to_its_connection_and_nothing_is_retransmitted() {
    use crate::sip::transport::{Peer, Transport};
    let mut rig = Rig::new();
    // The connection's remote port is not the Via's: replies follow the
    // connection (RFC 3261 18.2.2), not the Via.
    let connection: SocketAddr = "127.0.0.1:40123".parse().unwrap();
    rig.source = Peer::tcp(connection);
    let tcp = |m: String| m.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    rig.recv(&tcp(invite("t1", "z9hG4bK-t1", "", OFFER)));
    let call = rig.last_incoming();
    assert!(rig.accept(call));
    rig.drain();
    let tag = rig.to_tag();
    rig.recv(&tcp(in_dialog("ACK", "t1", &tag, 1, "z9hG4bK-ta", "", "")));
    let ok = &rig.sent[1].2;
    assert!(
        ok.contains("Contact: <sip:callflow@127.0.0.1:5060;transport=tcp>"),
        "{ok}"
    );
    rig.ua.hangup(rig.now, call);
    rig.drain();
    let bye = rig.sent.last().unwrap().2.clone();
    assert!(
        bye.starts_with("BYE sip:sipp@127.0.0.1:5070 SIP/2.0"),
        "{bye}"
    );
    assert!(bye.contains("Via: SIP/2.0/TCP 127.0.0.1:5060;"), "{bye}");
    // Timer E does not run on a reliable transport: one BYE, however
    // long its answer takes.
    rig.run_until(Duration::from_secs(20));
    assert_eq!(
        rig.statuses(),
        [
            "SIP/2.0 100 Trying",
            "SIP/2.0 200 OK",
            bye.lines().next().unwrap()
        ]
    );
    assert!(rig.sent.iter().all(|(_, to, _)| *to == connection));
    assert!(rig.transports.iter().all(|t| *t == Transport::Tcp));
}

/// A user agent taking TLS on 5061 beside UDP and TCP on 5060.
fn tls_rig() -> Rig {
    let mut config = UaConfig::new("127.0.0.1:5060".parse().unwrap());
    config.tls_port = Some(5061);
    Rig::with(config)
}

#[test]
fn a_call_over_tls_to_a_sips_uri_is_a_secure_dialog_on_the_tls_port() {
    use crate::sip::transport::{Peer, Transport};
    let mut rig = tls_rig();
    let connection: SocketAddr = "127.0.0.1:40125".parse().unwrap();
    rig.source = Peer::tls(connection);
    let tls = |m: String| {
        m.replace("SIP/2.0/UDP", "SIP/2.0/TLS")
            .replace("INVITE sip:8000", "INVITE sips:8000")
            .replace("<sip:sipp@127.0.0.1:5070>", "<sips:sipp@127.0.0.1:5071>")
    };
    rig.recv(&tls(invite("s1", "z9hG4bK-s1", "", OFFER)));
    let call = rig.last_incoming();
    assert!(rig.accept(call));
    rig.drain();
    let tag = rig.to_tag();
    let ok = rig.sent[1].2.clone();
    assert!(
        ok.contains("Contact: <sips:callflow@127.0.0.1:5061>"),
        "{ok}"
    );
    rig.recv(&tls(in_dialog("ACK", "s1", &tag, 1, "z9hG4bK-sa", "", "")));
    rig.ua.hangup(rig.now, call);
    rig.drain();
    let bye = rig.sent.last().unwrap().2.clone();
    assert!(
        bye.starts_with("BYE sips:sipp@127.0.0.1:5071 SIP/2.0"),
        "{bye}"
    );
    assert!(bye.contains("Via: SIP/2.0/TLS 127.0.0.1:5061;"), "{bye}");
    assert!(
        bye.contains("Contact: <sips:callflow@127.0.0.1:5061>"),
        "{bye}"
    );
    assert!(rig.sent.iter().all(|(_, to, _)| *to == connection));
    assert!(rig.transports.iter().all(|t| *t == Transport::Tls));
}

#[test]
fn a_call_over_tls_to_a_sip_uri_says_its_transport_in_the_contact() {
    use crate::sip::transport::Peer;
    let mut rig = tls_rig();
    rig.source = Peer::tls("127.0.0.1:40126".parse().unwrap());
    let tls = |m: String| m.replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    rig.recv(&tls(invite("s2", "z9hG4bK-s2", "", OFFER)));
    let call = rig.last_incoming();
    assert!(rig.accept(call));
    rig.drain();
    let ok = rig.sent[1].2.clone();
    assert!(
        ok.contains("Contact: <sip:callflow@127.0.0.1:5061;transport=tls>"),
        "{ok}"
    );
    // A sips: top Record-Route makes it secure too (RFC 3261 12.1.1).
    let via_proxy = tls(invite(
        "s3",
        "z9hG4bK-s3",
        "Record-Route: <sips:proxy.test;lr>\r\n",
        OFFER,
    ));
    rig.recv(&via_proxy);
    let call = rig.last_incoming();
    assert!(rig.accept(call));
    rig.drain();
    let ok = rig.sent.last().unwrap().2.clone();
    assert!(
        ok.contains("Contact: <sips:callflow@127.0.0.1:5061>"),
        "{ok}"
    );
}

#[test]
fn a_refusal_over_tcp_is_sent_once() {
    use crate::sip::transport::Peer;
    let mut rig = Rig::new();
    rig.source = Peer::tcp("127.0.0.1:40124".parse().unwrap());
    let tcp = |m: String| m.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    rig.recv(&tcp(invite("t2", "z9hG4bK-t2", "", OFFER)));
    let call = rig.last_incoming();
    rig.ua.reject(rig.now, call, 486, "Busy Here", &[]);
    rig.drain();
    // No Timer G over TCP: the 486 is not sent again while no ACK comes.
    rig.run_until(Duration::from_secs(40));
    assert_eq!(
        rig.statuses(),
        ["SIP/2.0 100 Trying", "SIP/2.0 486 Busy Here"]
    );
}

/// The request lines and statuses sent so far, after the first `skip`.
fn first_lines(rig: &Rig, skip: usize) -> Vec<String> {
    rig.statuses().into_iter().skip(skip).collect()
}

#[test]
fn a_session_interval_below_90_s_gets_422_with_our_min_se() {
    let mut rig = Rig::new();
    rig.recv(&invite(
        "st1",
        "z9hG4bK-st1",
        "Session-Expires: 60\r\n",
        OFFER,
    ));
    assert_eq!(rig.statuses(), ["SIP/2.0 422 Session Interval Too Small"]);
    assert!(
        rig.sent[0].2.contains("Min-SE: 90\r\n"),
        "{}",
        rig.sent[0].2
    );
    assert!(rig.events.is_empty(), "no call");
}

#[test]
fn a_session_the_peer_refreshes_ends_with_our_bye_when_its_refresh_stops() {
    let mut rig = Rig::new();
    let extra = "Supported: timer\r\nSession-Expires: 120\r\n";
    let (call, tag) = rig.answered_with("st2", extra);
    let ok = rig.sent[1].2.clone();
    assert!(
        ok.contains("Session-Expires: 120;refresher=uac\r\n"),
        "{ok}"
    );
    assert!(ok.contains("Require: timer\r\n"), "{ok}");
    assert!(ok.contains("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY, UPDATE"));
    // The peer refreshes at 50 s with UPDATE: the session goes on.
    rig.run_until(Duration::from_secs(50));
    rig.recv(&in_dialog(
        "UPDATE",
        "st2",
        &tag,
        2,
        "z9hG4bK-u1",
        extra,
        "",
    ));
    let answer = rig.sent.last().unwrap().2.clone();
    assert!(answer.starts_with("SIP/2.0 200 OK"), "{answer}");
    assert!(
        answer.contains("Session-Expires: 120;refresher=uac"),
        "{answer}"
    );
    rig.run_until(Duration::from_secs(100));
    assert!(
        first_lines(&rig, 3).is_empty(),
        "no BYE after a refresh: {:?}",
        rig.statuses()
    );
    // No refresh after that: BYE 32 s before the interval ends.
    rig.run_until(Duration::from_secs(140));
    let bye = rig.sent.iter().find(|(_, _, t)| t.starts_with("BYE "));
    let (at, _, _) = bye.unwrap_or_else(|| panic!("{:?}", rig.statuses()));
    assert_eq!(*at, Duration::from_secs(50 + 88));
    assert!(rig
        .events
        .contains(&(call, UaEvent::Ended(EndReason::SessionExpired))));
}

#[test]
fn we_refresh_a_session_by_update_and_end_it_when_the_refresh_is_not_answered() {
    let mut rig = Rig::new();
    let extra = "Allow: INVITE, ACK, BYE, UPDATE\r\nSession-Expires: 120\r\n";
    let (call, tag) = rig.answered_with("st3", extra);
    let ok = rig.sent[1].2.clone();
    assert!(
        ok.contains("Session-Expires: 120;refresher=uas\r\n"),
        "{ok}"
    );
    assert!(
        !ok.contains("Require: timer"),
        "the peer does not support it: {ok}"
    );
    // Our refresh at half the interval.
    rig.run_until(Duration::from_secs(61));
    let (at, _, update) = rig.sent[2].clone();
    assert_eq!(at, Duration::from_secs(60));
    assert!(
        update.starts_with("UPDATE sip:sipp@127.0.0.1:5070 SIP/2.0"),
        "{update}"
    );
    assert!(
        update.contains("Session-Expires: 120;refresher=uac\r\n"),
        "{update}"
    );
    let branch = update
        .lines()
        .find(|l| l.starts_with("Via:"))
        .and_then(|v| v.split("branch=").nth(1))
        .map(|b| b.split(';').next().unwrap_or(b).to_string())
        .unwrap();
    let cseq = update
        .lines()
        .find(|l| l.starts_with("CSeq:"))
        .unwrap()
        .to_string();
    let answer = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport\r\n\
From: <sip:8000@127.0.0.1:5060>;tag={tag}\r\nTo: sipp <sip:+37120000000@127.0.0.1:5070>;tag=caller1\r\n\
Call-ID: st3\r\n{cseq}\r\nSession-Expires: 120;refresher=uac\r\nContent-Length: 0\r\n\r\n"
    );
    rig.recv(&answer);
    // The next refresh is due 60 s after that answer; this one gets none,
    // and the session expires 32 s before its interval ends (RFC 4028 10),
    // before the UPDATE's own transaction would give up.
    rig.run_until(Duration::from_secs(120));
    let later = |rig: &Rig, from: u64| {
        rig.sent
            .iter()
            .filter(|(at, _, t)| *at > Duration::from_secs(from) && t.starts_with("UPDATE"))
            .count()
    };
    assert_eq!(later(&rig, 61), 0, "not yet");
    rig.run_until(Duration::from_secs(122));
    assert!(later(&rig, 120) > 0, "60 s after the answer");
    rig.run_until(Duration::from_secs(200));
    let updates = rig
        .sent
        .iter()
        .filter(|(_, _, t)| t.starts_with("UPDATE"))
        .count();
    assert!(updates >= 2, "{:?}", rig.statuses());
    let bye = rig.sent.iter().find(|(_, _, t)| t.starts_with("BYE"));
    let (at, _, _) = bye.unwrap_or_else(|| panic!("{:?}", rig.statuses()));
    assert_eq!(
        *at,
        Duration::from_secs(61 + 120 - 32),
        "the session's expiry"
    );
    assert!(rig
        .events
        .contains(&(call, UaEvent::Ended(EndReason::SessionExpired))));
}

#[test]
fn retransmitted_invite_never_creates_a_second_call() {
    let mut rig = Rig::new();
    rig.incoming("c2");
    rig.recv(&invite("c2", "z9hG4bK-inv1", "", OFFER));
    let incoming = rig
        .events
        .iter()
        .filter(|(_, e)| matches!(e, UaEvent::Incoming(_)))
        .count();
    assert_eq!(incoming, 1);
    assert_eq!(
        rig.statuses(),
        ["SIP/2.0 100 Trying", "SIP/2.0 100 Trying"],
        "the retransmission gets the last provisional again"
    );
}

#[test]
fn two_xx_is_retransmitted_until_t2_and_abandoned_with_bye_after_64_t1() {
    let mut rig = Rig::new();
    let call = rig.incoming("c3");
    rig.accept(call);
    rig.drain();
    rig.run_until(Duration::from_secs(33));
    let times: Vec<f64> = rig
        .sent
        .iter()
        .filter(|(_, _, t)| t.starts_with("SIP/2.0 200"))
        .map(|(d, _, _)| d.as_secs_f64())
        .collect();
    assert_eq!(
        times,
        [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert!(rig
        .sent
        .iter()
        .any(|(_, _, t)| t.starts_with("BYE sip:sipp@127.0.0.1:5070 SIP/2.0")));
    assert!(rig
        .events
        .contains(&(call, UaEvent::Ended(EndReason::AckTimeout))));
}

#[test]
fn cancel_before_answer_gets_200_and_the_invite_487() {
    let mut rig = Rig::new();
    let call = rig.incoming("c4");
    let cancel = invite("c4", "z9hG4bK-inv1", "", "")
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace("Content-Type: application/sdp\r\n", "");
    rig.recv(&cancel);
    assert_eq!(
        rig.statuses(),
        [
            "SIP/2.0 100 Trying",
            "SIP/2.0 200 OK",
            "SIP/2.0 487 Request Terminated"
        ]
    );
    assert!(rig.sent[1].2.contains("CSeq: 1 CANCEL"));
    assert!(rig.sent[2].2.contains("CSeq: 1 INVITE"));
    assert!(rig
        .events
        .contains(&(call, UaEvent::Ended(EndReason::Cancelled))));
    // The 487 is retransmitted (Timer G) until its ACK.
    rig.run_until(Duration::from_millis(600));
    assert_eq!(rig.statuses().len(), 4);
    let ack = invite("c4", "z9hG4bK-inv1", "", "")
        .replace("INVITE sip:", "ACK sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    rig.recv(&ack);
    rig.run_until(Duration::from_secs(40));
    assert_eq!(
        rig.statuses().len(),
        4,
        "the ACK stopped the retransmissions"
    );
}

#[test]
fn bye_ends_the_call_and_a_retransmitted_bye_gets_the_same_200() {
    let mut rig = Rig::new();
    let (call, tag) = rig.answered("c5");
    let bye = in_dialog("BYE", "c5", &tag, 2, "z9hG4bK-bye1", "", "");
    rig.recv(&bye);
    rig.recv(&bye);
    let statuses = rig.statuses();
    assert_eq!(&statuses[2..], ["SIP/2.0 200 OK", "SIP/2.0 200 OK"]);
    assert!(rig
        .events
        .contains(&(call, UaEvent::Ended(EndReason::RemoteBye))));
    assert_eq!(rig.ua.active_calls(), 0);
}

#[test]
fn requests_for_an_unknown_dialog_get_481() {
    let mut rig = Rig::new();
    rig.recv(&in_dialog("BYE", "nope", "x", 2, "z9hG4bK-b", "", ""));
    assert_eq!(
        rig.statuses(),
        ["SIP/2.0 481 Call/Transaction Does Not Exist"]
    );
}

#[test]
fn options_outside_a_dialog_is_answered_for_keep_alive() {
    let mut rig = Rig::new();
    let options = invite("o1", "z9hG4bK-o1", "", "")
        .replace("INVITE sip:", "OPTIONS sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS");
    rig.recv(&options);
    assert_eq!(rig.statuses(), ["SIP/2.0 200 OK"]);
    assert!(rig.sent[0]
        .2
        .contains("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY"));
}

#[test]
fn malformed_invite_gets_400_with_a_reason() {
    let mut rig = Rig::new();
    let broken =
        invite("m1", "z9hG4bK-m1", "", OFFER).replace("Content-Length: ", "Content-Length: 9");
    rig.recv(&broken);
    let status = &rig.statuses()[0];
    assert!(
        status.starts_with("SIP/2.0 400 Bad Request (Content-Length"),
        "{status}"
    );
    assert!(rig.events.is_empty());
}

#[test]
fn info_dtmf_relay_and_plain_dtmf_are_keys() {
    let mut rig = Rig::new();
    let (call, tag) = rig.answered("c6");
    rig.recv(&in_dialog(
        "INFO",
        "c6",
        &tag,
        2,
        "z9hG4bK-i1",
        "Content-Type: application/dtmf-relay\r\n",
        "Signal=5\r\nDuration=160\r\n",
    ));
    rig.recv(&in_dialog(
        "INFO",
        "c6",
        &tag,
        3,
        "z9hG4bK-i2",
        "Content-Type: application/dtmf\r\n",
        "#",
    ));
    let digits: Vec<char> = rig
        .events
        .iter()
        .filter_map(|(c, e)| match e {
            UaEvent::Digit(d) if *c == call => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(digits, ['5', '#']);
}

fn notify(call_id: &str, tag: &str, cseq: u32, branch: &str, frag: &str, state: &str) -> String {
    in_dialog(
        "NOTIFY",
        call_id,
        tag,
        cseq,
        branch,
        &format!(
            "Event: refer\r\nSubscription-State: {state}\r\nContent-Type: message/sipfrag\r\n"
        ),
        frag,
    )
}

fn respond_to_last(rig: &mut Rig, status: &str) {
    let request = rig.sent.last().unwrap().2.clone();
    let mut lines = vec![format!("SIP/2.0 {status}")];
    for l in request.lines().skip(1) {
        if ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
            .iter()
            .any(|h| l.starts_with(h))
        {
            lines.push(if l.starts_with("To:") {
                format!("{l};tag=callee9")
            } else {
                l.to_string()
            });
        }
    }
    lines.push("Content-Length: 0".into());
    rig.recv(&(lines.join("\r\n") + "\r\n\r\n"));
}

#[test]
fn refer_202_and_a_2xx_sipfrag_complete_the_transfer() {
    let mut rig = Rig::new();
    let (call, tag) = rig.answered("c7");
    let target = refer_to(
        "sip:support@acd.example.net",
        &[("X-Queue".into(), "support".into())],
    );
    let on_request = [("X-Context-account".to_string(), "123".to_string())];
    rig.ua.refer(rig.now, call, &target, &on_request);
    rig.drain();
    let refer = rig.sent.last().unwrap().2.clone();
    assert!(
        refer.starts_with("REFER sip:sipp@127.0.0.1:5070 SIP/2.0\r\n"),
        "{refer}"
    );
    assert!(refer.contains("\r\nX-Context-account: 123\r\n"), "{refer}");
    assert!(refer.contains("Refer-To: <sip:support@acd.example.net?X-Queue=support>"));
    assert!(refer.contains("Referred-By: <sip:callflow@127.0.0.1:5060>"));
    assert!(refer.contains(&format!("From: <sip:8000@127.0.0.1:5060>;tag={tag}")));
    assert!(refer.contains("To: sipp <sip:+37120000000@127.0.0.1:5070>;tag=caller1"));
    respond_to_last(&mut rig, "202 Accepted");
    assert_eq!(rig.events.last(), Some(&(call, UaEvent::TransferAccepted)));
    rig.recv(&notify(
        "c7",
        &tag,
        2,
        "z9hG4bK-n1",
        "SIP/2.0 100 Trying\r\n",
        "active;expires=60",
    ));
    rig.recv(&notify(
        "c7",
        &tag,
        3,
        "z9hG4bK-n2",
        "SIP/2.0 200 OK\r\n",
        "terminated;reason=noresource",
    ));
    assert_eq!(
        rig.events.last(),
        Some(&(call, UaEvent::TransferResult(Ok(()))))
    );
    assert_eq!(
        rig.statuses()
            .iter()
            .filter(|s| *s == "SIP/2.0 200 OK")
            .count(),
        3,
        "the 200 to INVITE and one per NOTIFY"
    );
}

#[test]
fn a_rejected_refer_or_a_failing_sipfrag_or_silence_fail_the_transfer() {
    let mut rig = Rig::new();
    let (call, tag) = rig.answered("c8");
    rig.ua.refer(rig.now, call, "<sip:q@acd>", &[]);
    rig.drain();
    respond_to_last(&mut rig, "405 Method Not Allowed");
    assert_eq!(
        rig.events.last(),
        Some(&(
            call,
            UaEvent::TransferResult(Err("REFER rejected: 405 Method Not Allowed".into()))
        ))
    );

    rig.ua.refer(rig.now, call, "<sip:q@acd>", &[]);
    rig.drain();
    respond_to_last(&mut rig, "202 Accepted");
    rig.recv(&notify(
        "c8",
        &tag,
        2,
        "z9hG4bK-n3",
        "SIP/2.0 503 Service Unavailable\r\n",
        "terminated",
    ));
    assert_eq!(
        rig.events.last(),
        Some(&(
            call,
            UaEvent::TransferResult(Err("503 Service Unavailable".into()))
        ))
    );

    rig.ua.refer(rig.now, call, "<sip:q@acd>", &[]);
    rig.drain();
    respond_to_last(&mut rig, "202 Accepted");
    rig.run_until(Duration::from_secs(31));
    assert_eq!(
        rig.events.last(),
        Some(&(
            call,
            UaEvent::TransferResult(Err("no final NOTIFY in time".into()))
        ))
    );
}

#[test]
fn draining_answers_new_invites_503_with_retry_after() {
    let mut rig = Rig::new();
    rig.ua.set_accepting(false);
    rig.recv(&invite("d1", "z9hG4bK-d1", "", OFFER));
    assert_eq!(rig.statuses(), ["SIP/2.0 503 Service Unavailable"]);
    assert!(rig.sent[0].2.contains("Retry-After: 30"));
    assert!(rig.events.is_empty());
    // Counted for the metrics, once, retransmissions or not.
    rig.recv(&invite("d1", "z9hG4bK-d1", "", OFFER));
    assert_eq!(rig.ua.counters().draining_refused, 1);
}

/// A load balancer's OPTIONS probe learns that a draining node takes no
/// calls; a call in progress still gets its in-dialog OPTIONS answered.
#[test]
fn draining_answers_options_probes_503_but_not_in_dialog_options() {
    let mut rig = Rig::new();
    let (_, tag) = rig.answered("d2");
    rig.ua.set_accepting(false);
    let probe = invite("o2", "z9hG4bK-o2", "", "")
        .replace("INVITE sip:", "OPTIONS sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS");
    rig.sent.clear();
    rig.recv(&probe);
    assert_eq!(rig.statuses(), ["SIP/2.0 503 Service Unavailable"]);
    assert!(rig.sent[0].2.contains("Retry-After: 30"));
    rig.sent.clear();
    rig.recv(&in_dialog("OPTIONS", "d2", &tag, 3, "z9hG4bK-o2d", "", ""));
    assert_eq!(rig.statuses(), ["SIP/2.0 200 OK"]);
    rig.ua.set_accepting(true);
    rig.sent.clear();
    rig.recv(&probe.replace("z9hG4bK-o2", "z9hG4bK-o3"));
    assert_eq!(rig.statuses(), ["SIP/2.0 200 OK"]);
}

/// A node that is not ready (its store unreachable) tells probes so, but
/// still takes the calls that reach it.
#[test]
fn a_node_not_ready_answers_probes_503_and_still_takes_calls() {
    let mut rig = Rig::new();
    rig.ua.set_ready(false);
    let probe = invite("r1", "z9hG4bK-r1", "", "")
        .replace("INVITE sip:", "OPTIONS sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS");
    rig.recv(&probe);
    assert_eq!(rig.statuses(), ["SIP/2.0 503 Service Unavailable"]);
    rig.sent.clear();
    rig.answered("r2");
    assert!(rig.statuses().contains(&"SIP/2.0 200 OK".to_string()));
    rig.ua.set_ready(true);
    rig.sent.clear();
    rig.recv(&probe.replace("z9hG4bK-r1", "z9hG4bK-r3"));
    assert_eq!(rig.statuses(), ["SIP/2.0 200 OK"]);
}

#[test]
fn unknown_methods_get_501_and_unsupported_extensions_420() {
    let mut rig = Rig::new();
    let foo = invite("u1", "z9hG4bK-u1", "", "")
        .replace("INVITE sip:", "FOO sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 FOO");
    rig.recv(&foo);
    rig.recv(&invite("u2", "z9hG4bK-u2", "Require: 100rel\r\n", OFFER));
    assert_eq!(
        rig.statuses(),
        ["SIP/2.0 501 Not Implemented", "SIP/2.0 420 Bad Extension"]
    );
    assert!(rig.sent[1].2.contains("Unsupported: 100rel"));
}

#[test]
fn record_route_is_copied_into_the_180_and_200_and_our_requests_follow_it() {
    let mut rig = Rig::new();
    let rr = "Record-Route: <sip:10.9.9.1;lr;ftag=x>\r\nRecord-Route: <sip:127.0.0.1:5071;lr>\r\n";
    let call = rig.incoming_with("rr1", rr);
    rig.ua.ring(rig.now, call);
    assert!(rig.accept(call));
    rig.drain();
    assert_eq!(
        rig.statuses(),
        [
            "SIP/2.0 100 Trying",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 200 OK"
        ]
    );
    let routes = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("Record-Route:"))
            .map(str::to_string)
            .collect()
    };
    let expected = [
        "Record-Route: <sip:10.9.9.1;lr;ftag=x>",
        "Record-Route: <sip:127.0.0.1:5071;lr>",
    ];
    assert!(routes(&rig.sent[0].2).is_empty(), "100 creates no dialog");
    assert_eq!(routes(&rig.sent[1].2), expected, "in order, in the 180");
    assert_eq!(routes(&rig.sent[2].2), expected, "in order, in the 200");
    // The ACK comes back through the proxy: another source, same dialog.
    let tag = rig.to_tag();
    rig.recv(&in_dialog("ACK", "rr1", &tag, 1, "z9hG4bK-rrack", "", ""));
    assert_eq!(
        rig.events.last(),
        Some(&(call, UaEvent::Confirmed { answer: None }))
    );
    rig.ua.hangup(rig.now, call);
    rig.drain();
    let (_, to, bye) = rig.sent.last().unwrap();
    assert!(
        bye.starts_with("BYE sip:sipp@127.0.0.1:5070 SIP/2.0"),
        "{bye}"
    );
    assert_eq!(
        routes(&bye.replace("Route:", "Record-Route:")),
        expected,
        "the route set, in order"
    );
    assert_eq!(
        *to,
        "10.9.9.1:5060".parse::<SocketAddr>().unwrap(),
        "to the first route"
    );
}

#[test]
fn a_strict_first_route_becomes_the_request_uri() {
    let mut rig = Rig::new();
    let rr = "Record-Route: <sip:127.0.0.1:5071>\r\n";
    let call = rig.incoming_with("sr1", rr);
    assert!(rig.accept(call));
    rig.drain();
    let tag = rig.to_tag();
    rig.recv(&in_dialog("ACK", "sr1", &tag, 1, "z9hG4bK-srack", "", ""));
    rig.ua.hangup(rig.now, call);
    rig.drain();
    let bye = rig.sent.last().unwrap().2.clone();
    assert!(bye.starts_with("BYE sip:127.0.0.1:5071 SIP/2.0"), "{bye}");
    assert!(
        bye.contains("Route: <sip:sipp@127.0.0.1:5070>\r\n"),
        "{bye}"
    );
}

#[test]
fn we_hang_up_with_bye_to_the_contact() {
    let mut rig = Rig::new();
    let (call, _) = rig.answered("c9");
    rig.ua.hangup(rig.now, call);
    rig.drain();
    assert!(rig
        .sent
        .last()
        .unwrap()
        .2
        .starts_with("BYE sip:sipp@127.0.0.1:5070 SIP/2.0"));
    assert!(rig
        .events
        .contains(&(call, UaEvent::Ended(EndReason::LocalBye))));
    respond_to_last(&mut rig, "200 OK");
    assert_eq!(rig.ua.active_calls(), 0);
}

// ---- calls we place (callbacks) ----

const TRUNK: &str = "127.0.0.1:5070";

fn originate(rig: &mut Rig, password: Option<&str>) -> CallHandle {
    originate_over(rig, password, crate::sip::transport::Transport::Udp)
}

fn originate_over(
    rig: &mut Rig,
    password: Option<&str>,
    transport: crate::sip::transport::Transport,
) -> CallHandle {
    let call = rig.ua.originate(
        rig.now,
        OutgoingCall {
            target: "sip:+37167000000@127.0.0.1:5070".into(),
            from_user: "+37160000000".into(),
            destination: crate::sip::transport::Peer {
                transport,
                addr: TRUNK.parse().unwrap(),
            },
            media: crate::sip::sdp::MediaSession::new(crate::sip::sdp::LocalMedia {
                addr: "127.0.0.1".parse().unwrap(),
                port: 30000,
                session_id: 1,
                session_version: 1,
            }),
            credentials: password.map(|p| crate::sip::auth::Credentials {
                username: "callflow".into(),
                password: p.into(),
            }),
            ring_timeout: Duration::from_secs(30),
            media_networks: crate::sip::admission::Networks::loopback(),
            headers: vec![
                ("X-Queue".into(), "support".into()),
                ("X-Context-note".into(), "two\r\nVia: injected".into()),
                ("Bad Name".into(), "x".into()),
            ],
            session_expires: Some(crate::sip::ua::SESSION_EXPIRES),
            alternates: Vec::new(),
        },
    );
    rig.drain();
    call
}

/// A response to the last request sent, with the callee's tag.
fn answer_last(rig: &mut Rig, status: &str, extra: &str) {
    let request = rig.sent.last().unwrap().2.clone();
    let mut lines = vec![format!("SIP/2.0 {status}")];
    for l in request.lines().skip(1) {
        if ["Via:", "From:", "Call-ID:", "CSeq:"]
            .iter()
            .any(|h| l.starts_with(h))
        {
            lines.push(l.to_string());
        } else if l.starts_with("To:") {
            lines.push(format!("{l};tag=callee7"));
        }
    }
    lines.push(format!("{extra}Content-Length: 0"));
    rig.recv(&(lines.join("\r\n") + "\r\n\r\n"));
}

fn header<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
}

#[test]
fn a_call_placed_over_tcp_says_so_is_not_retransmitted_and_is_acked_over_its_connection() {
    use crate::sip::transport::Transport;
    let mut rig = Rig::new();
    originate_over(&mut rig, None, Transport::Tcp);
    let invite = rig.sent[0].2.clone();
    assert!(
        invite.contains("Via: SIP/2.0/TCP 127.0.0.1:5060;"),
        "{invite}"
    );
    assert!(
        invite.contains("Contact: <sip:callflow@127.0.0.1:5060;transport=tcp>"),
        "{invite}"
    );
    // No Timer A over a stream: one INVITE however long the answer takes.
    rig.run_until(Duration::from_secs(10));
    assert_eq!(rig.sent.len(), 1, "{:?}", rig.statuses());
    rig.source = crate::sip::transport::Peer::tcp(TRUNK.parse().unwrap());
    answer_last(
        &mut rig,
        "200 OK",
        "Contact: <sip:callee@127.0.0.1:5071;transport=tcp>\r\n",
    );
    let ack = rig.sent.last().unwrap().2.clone();
    assert!(
        ack.starts_with("ACK sip:callee@127.0.0.1:5071;transport=tcp SIP/2.0"),
        "{ack}"
    );
    assert!(ack.contains("Via: SIP/2.0/TCP "), "{ack}");
    assert_eq!(
        rig.sent.last().unwrap().1,
        TRUNK.parse().unwrap(),
        "over the connection the INVITE went on"
    );
    assert!(rig.transports.iter().all(|t| *t == Transport::Tcp));
}

#[test]
fn an_answered_call_is_acked_to_its_contact_and_reported_once() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, None);
    let invite = rig.sent[0].2.clone();
    assert!(
        invite.starts_with("INVITE sip:+37167000000@127.0.0.1:5070 SIP/2.0\r\n"),
        "{invite}"
    );
    assert_eq!(rig.sent[0].1, TRUNK.parse().unwrap());
    assert!(invite.contains("From: <sip:+37160000000@127.0.0.1:5060>;tag="));
    assert!(invite.contains("\r\nX-Queue: support\r\n"), "{invite}");
    assert!(
        !invite.contains("injected") && !invite.contains("Bad Name"),
        "a header that could break the request is left out: {invite}"
    );
    answer_last(&mut rig, "180 Ringing", "");
    assert_eq!(rig.events.last(), Some(&(call, UaEvent::Ringing)));
    answer_last(
        &mut rig,
        "200 OK",
        "Contact: <sip:callee@127.0.0.1:5071>\r\n",
    );
    let ack = rig.sent.last().unwrap();
    assert!(
        ack.2
            .starts_with("ACK sip:callee@127.0.0.1:5071 SIP/2.0\r\n"),
        "{}",
        ack.2
    );
    assert_eq!(
        ack.1,
        "127.0.0.1:5071".parse().unwrap(),
        "the ACK goes to the Contact"
    );
    assert!(header(&ack.2, "To:").ends_with(";tag=callee7"));
    assert_eq!(header(&ack.2, "CSeq:"), "CSeq: 1 ACK");
    assert_ne!(
        header(&ack.2, "Via:"),
        header(&invite, "Via:"),
        "the 2xx ACK is a new transaction"
    );
    let answered = rig
        .events
        .iter()
        .filter(|(_, e)| matches!(e, UaEvent::Answered { .. }))
        .count();
    // A retransmitted 200 gets the ACK again but is not a second answer.
    rig.sent
        .push((Duration::ZERO, TRUNK.parse().unwrap(), invite.clone()));
    let sent = rig.sent.len();
    answer_last(
        &mut rig,
        "200 OK",
        "Contact: <sip:callee@127.0.0.1:5071>\r\n",
    );
    assert_eq!(answered, 1);
    assert_eq!(
        rig.events
            .iter()
            .filter(|(_, e)| matches!(e, UaEvent::Answered { .. }))
            .count(),
        1
    );
    assert!(rig.sent.len() > sent);
}

#[test]
fn a_407_is_answered_once_with_digest_credentials() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, Some("s3cret"));
    let challenge = "Proxy-Authenticate: Digest realm=\"trunk\", nonce=\"abc123\", qop=\"auth\", algorithm=SHA-256\r\n";
    answer_last(&mut rig, "407 Proxy Authentication Required", challenge);
    let ack = &rig.sent[1].2;
    assert!(
        ack.starts_with("ACK "),
        "the 407 is acknowledged by the transaction: {ack}"
    );
    assert_eq!(
        header(ack, "Via:"),
        header(&rig.sent[0].2, "Via:"),
        "same branch as the INVITE"
    );
    let retry = rig.sent[2].2.clone();
    assert!(retry.starts_with("INVITE "));
    assert_eq!(header(&retry, "CSeq:"), "CSeq: 2 INVITE");
    let auth = header(&retry, "Proxy-Authorization:")
        .trim_start_matches("Proxy-Authorization:")
        .trim();
    assert_eq!(
        crate::sip::auth::verify(auth, "s3cret", "INVITE", b"v=0\r\n"),
        Ok(true),
        "{auth}"
    );
    // A retransmitted 407 for the first INVITE still gets its ACK.
    let first = rig.sent[0].2.clone();
    rig.sent
        .push((Duration::ZERO, TRUNK.parse().unwrap(), first));
    let before = rig.sent.len();
    answer_last(&mut rig, "407 Proxy Authentication Required", challenge);
    assert!(rig.sent[before..]
        .iter()
        .any(|(_, _, t)| t.starts_with("ACK ")));
    assert!(!rig
        .events
        .iter()
        .any(|(_, e)| matches!(e, UaEvent::DialFailed { .. })));
    // The same nonce on the new INVITE means the credentials are wrong.
    rig.sent
        .push((Duration::ZERO, TRUNK.parse().unwrap(), retry.clone()));
    answer_last(&mut rig, "407 Proxy Authentication Required", challenge);
    assert!(
        matches!(rig.events.last(), Some((c, UaEvent::DialFailed { status: 407, .. })) if *c == call)
    );
}

#[test]
fn a_proxy_then_a_trunk_challenge_are_both_answered_on_the_last_retry() {
    let mut rig = Rig::new();
    originate(&mut rig, Some("s3cret"));
    let proxy = "Proxy-Authenticate: Digest realm=\"proxy\", nonce=\"p1\", qop=\"auth\"\r\n";
    answer_last(&mut rig, "407 Proxy Authentication Required", proxy);
    let trunk = "WWW-Authenticate: Digest realm=\"trunk\", nonce=\"t1\", algorithm=MD5\r\n";
    answer_last(&mut rig, "401 Unauthorized", trunk);
    let last = rig.sent.last().unwrap().2.clone();
    assert!(last.starts_with("INVITE "), "{last}");
    assert_eq!(header(&last, "CSeq:"), "CSeq: 3 INVITE");
    for name in ["Proxy-Authorization:", "Authorization:"] {
        let value = header(&last, name).trim_start_matches(name).trim();
        assert_eq!(
            crate::sip::auth::verify(value, "s3cret", "INVITE", b"v=0\r\n"),
            Ok(true),
            "{name} {value}"
        );
    }
    assert_eq!(
        last.matches("Authorization:").count(),
        2,
        "one per realm: {last}"
    );
}

#[test]
fn a_new_nonce_for_the_same_realm_is_a_refusal_unless_it_is_stale() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, Some("s3cret"));
    let challenge = |nonce: &str, stale: bool| {
        format!(
            "WWW-Authenticate: Digest realm=\"trunk\", nonce=\"{nonce}\"{}\r\n",
            if stale { ", stale=true" } else { "" }
        )
    };
    answer_last(&mut rig, "401 Unauthorized", &challenge("n1", false));
    answer_last(&mut rig, "401 Unauthorized", &challenge("n2", true));
    let invites = |rig: &Rig| {
        rig.sent
            .iter()
            .filter(|(_, _, t)| t.starts_with("INVITE "))
            .count()
    };
    assert_eq!(invites(&rig), 3, "a stale nonce is answered again");
    assert!(!rig
        .events
        .iter()
        .any(|(_, e)| matches!(e, UaEvent::DialFailed { .. })));
    answer_last(&mut rig, "401 Unauthorized", &challenge("n3", false));
    assert_eq!(invites(&rig), 3, "a fresh nonce that is not stale: refused");
    assert!(matches!(
        rig.events.last(),
        Some((c, UaEvent::DialFailed { cause: DialFailure::Refused, status: 401, reason })) if *c == call && reason.contains("refused")
    ));
}

#[test]
fn a_trunk_that_only_ever_says_stale_is_given_up_on() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, Some("s3cret"));
    for i in 0..10 {
        let challenge =
            format!("WWW-Authenticate: Digest realm=\"trunk\", nonce=\"s{i}\", stale=true\r\n");
        answer_last(&mut rig, "401 Unauthorized", &challenge);
    }
    let invites = rig
        .sent
        .iter()
        .filter(|(_, _, t)| t.starts_with("INVITE "))
        .count();
    assert_eq!(invites, 1 + MAX_CHALLENGES_FOR_TESTS);
    assert!(matches!(
        rig.events.last(),
        Some((c, UaEvent::DialFailed { status: 401, .. })) if *c == call
    ));
}

const MAX_CHALLENGES_FOR_TESTS: usize = 6;

#[test]
fn busy_is_a_failure_with_its_status() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, None);
    answer_last(&mut rig, "486 Busy Here", "");
    assert!(rig.sent.last().unwrap().2.starts_with("ACK "));
    assert_eq!(
        rig.events.last(),
        Some(&(
            call,
            UaEvent::DialFailed {
                cause: DialFailure::Busy,
                status: 486,
                reason: "Busy Here".into()
            }
        ))
    );
}

#[test]
fn a_call_ringing_past_its_timeout_is_cancelled_and_reads_as_no_answer() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, None);
    answer_last(&mut rig, "180 Ringing", "");
    let invite = rig.sent[0].2.clone();
    rig.run_until(Duration::from_secs(31));
    let cancel = rig
        .sent
        .iter()
        .find(|(_, _, t)| t.starts_with("CANCEL "))
        .expect("a CANCEL")
        .2
        .clone();
    assert_eq!(
        header(&cancel, "Via:"),
        header(&invite, "Via:"),
        "CANCEL has the INVITE's branch (9.1)"
    );
    assert_eq!(header(&cancel, "CSeq:"), "CSeq: 1 CANCEL");
    answer_last(&mut rig, "200 OK", "");
    // The 487 for the INVITE (build it from the INVITE, not the CANCEL).
    rig.sent
        .push((Duration::ZERO, TRUNK.parse().unwrap(), invite));
    answer_last(&mut rig, "487 Request Terminated", "");
    assert_eq!(
        rig.events.last(),
        Some(&(
            call,
            UaEvent::DialFailed {
                cause: DialFailure::NoAnswer,
                status: 487,
                reason: "no answer".into()
            }
        ))
    );
}

fn sent_cancels(rig: &Rig) -> usize {
    rig.sent
        .iter()
        .filter(|(_, _, t)| t.starts_with("CANCEL "))
        .count()
}

#[test]
fn no_cancel_before_a_provisional_response_then_one_when_it_comes() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, None);
    // Only 100 Trying: the ring timeout may not CANCEL yet (9.1).
    answer_last(&mut rig, "100 Trying", "");
    rig.run_until(Duration::from_secs(31));
    assert_eq!(sent_cancels(&rig), 0);
    let invite = rig.sent[0].2.clone();
    rig.sent
        .push((Duration::ZERO, TRUNK.parse().unwrap(), invite.clone()));
    answer_last(&mut rig, "180 Ringing", "");
    assert_eq!(sent_cancels(&rig), 1, "sent as soon as the 180 came");
    // A hangup on top of the ring timeout sends no second CANCEL.
    rig.ua.hangup(rig.now, call);
    rig.drain();
    assert_eq!(sent_cancels(&rig), 1);
}

#[test]
fn a_cancel_that_never_brings_its_487_gives_the_call_up_after_64_t1() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, None);
    answer_last(&mut rig, "180 Ringing", "");
    rig.run_until(Duration::from_secs(31));
    assert!(
        sent_cancels(&rig) >= 1,
        "sent, and retransmitted until answered"
    );
    answer_last(&mut rig, "200 OK", "");
    rig.run_until(Duration::from_secs(61));
    assert!(
        !rig.events
            .iter()
            .any(|(_, e)| matches!(e, UaEvent::DialFailed { .. })),
        "{:?}\n{:?}",
        rig.events,
        rig.sent
    );
    rig.run_until(Duration::from_secs(31 + 33));
    assert_eq!(
        rig.events.last(),
        Some(&(
            call,
            UaEvent::DialFailed {
                cause: DialFailure::NoAnswer,
                status: 487,
                reason: "no answer".into()
            }
        ))
    );
    assert_eq!(rig.ua.active_calls(), 0);
}

#[test]
fn retries_count_the_nonce_up_and_the_2xx_ack_carries_the_credentials() {
    let mut rig = Rig::new();
    originate(&mut rig, Some("s3cret"));
    let proxy = "Proxy-Authenticate: Digest realm=\"proxy\", nonce=\"p1\", qop=\"auth\"\r\n";
    answer_last(&mut rig, "407 Proxy Authentication Required", proxy);
    let first = header(&rig.sent.last().unwrap().2, "Proxy-Authorization:").to_string();
    let trunk = "WWW-Authenticate: Digest realm=\"trunk\", nonce=\"t1\", qop=\"auth\"\r\n";
    answer_last(&mut rig, "401 Unauthorized", trunk);
    let last = rig.sent.last().unwrap().2.clone();
    let again = header(&last, "Proxy-Authorization:").to_string();
    assert!(first.contains("nc=00000001"), "{first}");
    assert!(
        again.contains("nc=00000002"),
        "a second request, a new count: {again}"
    );
    let value = again.trim_start_matches("Proxy-Authorization:").trim();
    assert_eq!(
        crate::sip::auth::verify(value, "s3cret", "INVITE", b"v=0\r\n"),
        Ok(true)
    );
    answer_last(
        &mut rig,
        "200 OK",
        "Contact: <sip:callee@127.0.0.1:5070>\r\n",
    );
    let ack = rig.sent.last().unwrap().2.clone();
    assert!(ack.starts_with("ACK sip:callee@"), "{ack}");
    assert_eq!(header(&ack, "Proxy-Authorization:"), again, "13.2.2.4");
    assert_eq!(
        header(&ack, "Authorization:"),
        header(&last, "Authorization:")
    );
}

#[test]
fn a_2xx_that_crosses_our_hangup_cancel_is_acked_and_ended_with_bye() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, None);
    answer_last(&mut rig, "180 Ringing", "");
    rig.ua.hangup(rig.now, call);
    rig.drain();
    assert_eq!(sent_cancels(&rig), 1);
    let invite = rig.sent[0].2.clone();
    rig.sent
        .push((Duration::ZERO, TRUNK.parse().unwrap(), invite));
    answer_last(
        &mut rig,
        "200 OK",
        "Contact: <sip:callee@127.0.0.1:5070>\r\n",
    );
    let tail: Vec<String> = rig.sent[rig.sent.len() - 2..]
        .iter()
        .map(|(_, _, t)| t.lines().next().unwrap_or("").to_string())
        .collect();
    assert!(tail[0].starts_with("ACK "), "{tail:?}");
    assert!(tail[1].starts_with("BYE "), "{tail:?}");
    assert!(!rig
        .events
        .iter()
        .any(|(_, e)| matches!(e, UaEvent::Answered { .. })));
}

#[test]
fn a_worker_places_calls_whose_call_id_comes_back_to_it() {
    for index in 0..3 {
        let mut config = UaConfig::new("127.0.0.1:5060".parse().unwrap());
        config.shard = Some((index, 3));
        let mut rig = Rig::with(config);
        for _ in 0..20 {
            let call = originate(&mut rig, None);
            let id = rig.ua.call_id(call).unwrap_or_default().to_string();
            assert_eq!(
                crate::sip::dispatch::shard_of(id.as_bytes(), 3),
                index,
                "{id}"
            );
        }
    }
}

#[test]
fn workers_sharing_admission_share_a_trunks_call_limit() {
    use crate::sip::admission::{Admission, SharedAdmission, TrunkPolicy};
    let mut base = UaConfig::new("127.0.0.1:5060".parse().unwrap());
    base.admission.trunks = vec![TrunkPolicy {
        max_calls: 1,
        ..base.admission.trunks[0].clone()
    }];
    let shared = SharedAdmission::new(Admission::new(base.admission.clone(), [7; 16]));
    let mut rigs: Vec<Rig> = (0..2)
        .map(|i| {
            let mut c = base.clone();
            c.shared_admission = Some(shared.clone());
            c.shard = Some((i, 2));
            Rig::with(c)
        })
        .collect();
    rigs[0].recv(&invite("first", "z9hG4bK-1", "", ""));
    rigs[1].recv(&invite("second", "z9hG4bK-2", "", ""));
    let last = rigs[1].sent.last().map(|s| s.2.clone()).unwrap_or_default();
    assert!(
        last.starts_with("SIP/2.0 503"),
        "the other worker's call counts against the trunk: {last}"
    );
}

#[test]
fn a_refresh_refused_as_too_short_is_sent_again_at_once_with_the_peers_minimum() {
    let mut rig = Rig::new();
    let extra = "Allow: INVITE, ACK, BYE, UPDATE\r\nSession-Expires: 120\r\n";
    let (call, _) = rig.answered_with("st4", extra);
    rig.run_until(Duration::from_secs(60));
    assert!(rig.sent.last().unwrap().2.starts_with("UPDATE"));
    answer_last(
        &mut rig,
        "422 Session Interval Too Small",
        "Min-SE: 300\r\n",
    );
    let retry = rig.sent.last().unwrap().2.clone();
    assert!(retry.starts_with("UPDATE"), "{:?}", rig.statuses());
    assert!(
        retry.contains("Session-Expires: 300;refresher=uac\r\n"),
        "{retry}"
    );
    assert!(!rig
        .events
        .contains(&(call, UaEvent::Ended(EndReason::SessionExpired))));
}

/// A registrar's response to the REGISTER `request`: its Via, From,
/// Call-ID and CSeq, a To with a tag, and `extra` header lines.
fn registrar_says(request: &str, status: &str, extra: &str) -> String {
    let header = |name: &str| {
        request
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {request}"))
            .to_string()
    };
    format!(
        "SIP/2.0 {status}\r\n{}\r\n{}\r\n{};tag=reg1\r\n{}\r\n{}\r\n{extra}Content-Length: 0\r\n\r\n",
        header("Via"),
        header("From"),
        header("To"),
        header("Call-ID"),
        header("CSeq"),
    )
}

fn registration(expires: u64) -> super::RegisterConfig {
    super::RegisterConfig {
        registrar: crate::sip::locate::SipTarget::at(
            "127.0.0.1:5090".parse().unwrap(),
            crate::sip::transport::Transport::Udp,
        ),
        backups: Vec::new(),
        domain: "trunk.test".into(),
        user: "callflow7".into(),
        credentials: Some(crate::sip::auth::Credentials {
            username: "callflow7".into(),
            password: "s3cret".into(),
        }),
        expires: Duration::from_secs(expires),
    }
}

const CHALLENGE: &str =
    "WWW-Authenticate: Digest realm=\"trunk.test\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"\r\n";

/// The REGISTERs sent so far, each once (not its retransmissions).
fn registers(rig: &Rig) -> Vec<(Duration, String)> {
    let mut seen = Vec::new();
    rig.sent
        .iter()
        .filter(|(_, _, t)| t.starts_with("REGISTER "))
        .filter(|(_, _, t)| {
            let cseq = t
                .lines()
                .find(|l| l.starts_with("CSeq:"))
                .map(str::to_string);
            let fresh = !seen.contains(&cseq);
            seen.push(cseq);
            fresh
        })
        .map(|(at, _, t)| (*at, t.clone()))
        .collect()
}

#[test]
fn a_registration_answers_the_challenge_and_is_refreshed_before_it_expires() {
    use super::RegistrationState;
    let mut rig = Rig::new();
    rig.ua.register(rig.now, registration(120));
    rig.drain();
    let first = registers(&rig)[0].1.clone();
    assert!(
        first.starts_with("REGISTER sip:trunk.test SIP/2.0\r\n"),
        "{first}"
    );
    for line in [
        "From: <sip:callflow7@trunk.test>;tag=",
        "To: <sip:callflow7@trunk.test>\r\n",
        "CSeq: 1 REGISTER",
        "Contact: <sip:callflow7@127.0.0.1:5060>",
        "Expires: 120",
    ] {
        assert!(first.contains(line), "{line} in {first}");
    }
    assert_eq!(
        rig.ua.registration_state(),
        Some(&RegistrationState::Registering)
    );
    rig.recv(&registrar_says(&first, "401 Unauthorized", CHALLENGE));
    let second = registers(&rig)[1].1.clone();
    assert!(second.contains("CSeq: 2 REGISTER"), "{second}");
    assert!(
        second.contains("Authorization: Digest username=\"callflow7\""),
        "{second}"
    );
    assert!(second.contains("uri=\"sip:trunk.test\""), "{second}");
    let call_id = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("Call-ID:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(call_id(&first), call_id(&second), "one Call-ID (10.2.4)");
    // The registrar grants less than asked, in our Contact's expires.
    rig.recv(&registrar_says(
        &second,
        "200 OK",
        "Contact: <sip:other@192.0.2.9>;expires=3000, <sip:callflow7@127.0.0.1:5060>;expires=90\r\n",
    ));
    assert_eq!(
        rig.ua.registration_state(),
        Some(&RegistrationState::Registered {
            expires: Duration::from_secs(90)
        })
    );
    // Refreshed at 45 s (half of a short binding), with the credentials.
    rig.run_until(Duration::from_secs(44));
    assert_eq!(registers(&rig).len(), 2);
    rig.run_until(Duration::from_secs(46));
    let refresh = registers(&rig)[2].1.clone();
    assert!(refresh.contains("CSeq: 3 REGISTER"), "{refresh}");
    assert!(refresh.contains("Authorization: Digest"), "{refresh}");
    assert!(
        refresh.contains("nc=00000002"),
        "the nonce is counted on: {refresh}"
    );
    // Its nonce expired: a new challenge is answered, not taken as refusal.
    rig.recv(&registrar_says(
        &refresh,
        "401 Unauthorized",
        &CHALLENGE.replace("n1", "n2"),
    ));
    let again = registers(&rig)[3].1.clone();
    assert!(again.contains("nonce=\"n2\""), "{again}");
    rig.recv(&registrar_says(&again, "200 OK", "Expires: 3600\r\n"));
    assert_eq!(
        rig.ua.registration_state(),
        Some(&RegistrationState::Registered {
            expires: Duration::from_secs(3600)
        })
    );
}

#[test]
fn a_refused_registration_backs_off_doubling_and_a_423_raises_the_interval() {
    use super::RegistrationState;
    let mut rig = Rig::new();
    rig.ua.register(rig.now, registration(120));
    rig.drain();
    let first = registers(&rig)[0].1.clone();
    rig.recv(&registrar_says(&first, "401 Unauthorized", CHALLENGE));
    let second = registers(&rig)[1].1.clone();
    // The same realm challenges the answer again: the credentials are wrong.
    rig.recv(&registrar_says(
        &second,
        "401 Unauthorized",
        &CHALLENGE.replace("n1", "n9"),
    ));
    assert!(matches!(
        rig.ua.registration_state(),
        Some(RegistrationState::Failed { reason }) if reason.contains("refused our credentials")
    ));
    // Retried after 15-30 s, not before.
    rig.run_until(Duration::from_secs(14));
    assert_eq!(registers(&rig).len(), 2);
    rig.run_until(Duration::from_secs(31));
    assert_eq!(registers(&rig).len(), 3);
    let (_, third) = registers(&rig)[2].clone();
    // A 403 doubles the wait: 30-60 s from it.
    rig.recv(&registrar_says(&third, "403 Forbidden", ""));
    let refused = rig.now - rig.start;
    rig.run_until(refused + Duration::from_secs(29));
    assert_eq!(registers(&rig).len(), 3);
    rig.run_until(refused + Duration::from_secs(61));
    let (at4, fourth) = registers(&rig)[3].clone();
    // No answer at all (Timer F) is a failure too: 60-120 s after.
    rig.run_until(at4 + Duration::from_secs(33));
    assert!(matches!(
        rig.ua.registration_state(),
        Some(RegistrationState::Failed { reason }) if reason.contains("timeout")
    ));
    assert_eq!(registers(&rig).len(), 4, "only retransmissions of {fourth}");
    rig.run_until(at4 + Duration::from_secs(32 + 29));
    assert_eq!(registers(&rig).len(), 4);
    // Answered as soon as it is sent (by 32 + 120 s).
    let mut t = at4 + Duration::from_secs(32 + 29);
    while registers(&rig).len() < 5 {
        t += Duration::from_millis(100);
        assert!(
            t <= at4 + Duration::from_secs(32 + 121),
            "no fifth REGISTER"
        );
        rig.run_until(t);
    }
    let (_, fifth) = registers(&rig).last().unwrap().clone();
    // The registrar wants a longer binding.
    rig.recv(&registrar_says(
        &fifth,
        "423 Interval Too Brief",
        "Min-Expires: 600\r\n",
    ));
    let sixth = registers(&rig).last().unwrap().1.clone();
    assert!(sixth.contains("Expires: 600"), "{sixth}");
    rig.recv(&registrar_says(&sixth, "200 OK", ""));
    assert_eq!(
        rig.ua.registration_state(),
        Some(&RegistrationState::Registered {
            expires: Duration::from_secs(600)
        }),
        "without an expiry in the answer, the one asked for"
    );
}

#[test]
fn unregistering_removes_the_binding_and_nothing_is_refreshed_after() {
    use super::RegistrationState;
    let mut rig = Rig::new();
    rig.ua.register(rig.now, registration(120));
    rig.drain();
    let first = registers(&rig)[0].1.clone();
    rig.recv(&registrar_says(&first, "200 OK", "Expires: 120\r\n"));
    rig.ua.unregister(rig.now);
    rig.drain();
    let removal = registers(&rig)[1].1.clone();
    assert!(removal.contains("Expires: 0\r\n"), "{removal}");
    assert!(rig.ua.registration_busy());
    rig.recv(&registrar_says(&removal, "200 OK", ""));
    assert!(!rig.ua.registration_busy());
    assert_eq!(
        rig.ua.registration_state(),
        Some(&RegistrationState::Unregistered)
    );
    rig.run_until(Duration::from_secs(600));
    assert_eq!(registers(&rig).len(), 2, "no refresh after");
}

#[test]
fn an_invite_to_our_registered_contact_is_for_the_number_in_its_to() {
    let mut config = UaConfig::new("127.0.0.1:5060".parse().unwrap());
    config.registered_user = Some("callflow7".into());
    let mut rig = Rig::with(config);
    let to_contact =
        invite("r1", "z9hG4bK-r1", "", OFFER).replace("INVITE sip:8000@", "INVITE sip:callflow7@");
    rig.recv(&to_contact);
    match rig.events.last() {
        Some((_, UaEvent::Incoming(i))) => assert_eq!(i.called, "8000"),
        other => panic!("{other:?}"),
    }
    // Any other Request-URI is its own number.
    rig.recv(
        &invite("r2", "z9hG4bK-r2", "", OFFER).replace("INVITE sip:8000@", "INVITE sip:8001@"),
    );
    match rig.events.last() {
        Some((_, UaEvent::Incoming(i))) => assert_eq!(i.called, "8001"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_call_we_place_asks_for_a_session_timer_the_callee_refreshes() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, None);
    let invite = rig.sent[0].2.clone();
    for line in [
        "Session-Expires: 1800;refresher=uas\r\n",
        "Min-SE: 90\r\n",
        "Supported: timer\r\n",
    ] {
        assert!(invite.contains(line), "{line} in {invite}");
    }
    // The callee wants longer: sent again at once with its minimum.
    answer_last(
        &mut rig,
        "422 Session Interval Too Small",
        "Min-SE: 3600\r\n",
    );
    let again = rig.sent.last().unwrap().2.clone();
    assert!(again.starts_with("INVITE "), "{again}");
    assert!(
        again.contains("Session-Expires: 3600;refresher=uas"),
        "{again}"
    );
    assert!(again.contains("CSeq: 2 INVITE"), "{again}");
    answer_last(
        &mut rig,
        "200 OK",
        "Contact: <sip:callee@127.0.0.1:5071>\r\nSession-Expires: 3600;refresher=uas\r\nRequire: timer\r\n",
    );
    assert!(matches!(
        rig.events.last(),
        Some((c, UaEvent::Answered { .. })) if *c == call
    ));
    // The callee never refreshes: the call ends at 3600 - 32 s with BYE.
    rig.run_until(Duration::from_secs(3567));
    assert!(!rig.statuses().iter().any(|s| s.starts_with("BYE ")));
    rig.run_until(Duration::from_secs(3569));
    assert!(
        rig.statuses().iter().any(|s| s.starts_with("BYE ")),
        "{:?}",
        rig.statuses()
    );
    assert!(rig
        .events
        .iter()
        .any(|(c, e)| *c == call && *e == UaEvent::Ended(EndReason::SessionExpired)));
}

#[test]
fn a_callee_that_makes_us_the_refresher_gets_our_updates() {
    let mut rig = Rig::new();
    originate(&mut rig, None);
    answer_last(
        &mut rig,
        "200 OK",
        "Contact: <sip:callee@127.0.0.1:5071>\r\nSession-Expires: 120;refresher=uac\r\nAllow: INVITE, ACK, BYE, UPDATE\r\n",
    );
    rig.run_until(Duration::from_secs(59));
    assert!(!rig.statuses().iter().any(|s| s.starts_with("UPDATE ")));
    rig.run_until(Duration::from_secs(61));
    let update = rig.sent.last().unwrap().2.clone();
    assert!(
        update.starts_with("UPDATE sip:callee@127.0.0.1:5071 SIP/2.0"),
        "{update}"
    );
    assert!(
        update.contains("Session-Expires: 120;refresher=uac"),
        "{update}"
    );
}

#[test]
fn a_callee_without_session_timers_gets_none() {
    let mut rig = Rig::new();
    let call = originate(&mut rig, None);
    answer_last(
        &mut rig,
        "200 OK",
        "Contact: <sip:callee@127.0.0.1:5071>\r\n",
    );
    rig.run_until(Duration::from_secs(7200));
    assert!(
        !rig.events
            .iter()
            .any(|(c, e)| *c == call && matches!(e, UaEvent::Ended(_))),
        "no timer: the call stands"
    );
}

#[test]
fn an_update_with_an_offer_moves_the_media_within_the_trunks_networks() {
    let mut rig = Rig::new();
    let (call, tag) = rig.answered("up1");
    let moved = OFFER.replace("m=audio 6000", "m=audio 6100");
    rig.recv(&in_dialog(
        "UPDATE",
        "up1",
        &tag,
        2,
        "z9hG4bK-up1",
        "Content-Type: application/sdp\r\n",
        &moved,
    ));
    let ok = rig.sent.last().unwrap().2.clone();
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    assert!(ok.contains("Content-Type: application/sdp"), "{ok}");
    assert!(ok.contains("m=audio 20000 RTP/AVP 0"), "our answer: {ok}");
    assert!(
        ok.contains("Contact: <sip:callflow@127.0.0.1:5060>"),
        "{ok}"
    );
    assert!(
        rig.events
            .iter()
            .any(|(c, e)| *c == call
                && matches!(e, UaEvent::MediaChanged(n) if n.remote.port() == 6100)),
        "{:?}",
        rig.events
    );
    // Media pointed outside the trunk's networks: refused, nothing moves.
    let away = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 192.0.2.66");
    rig.recv(&in_dialog(
        "UPDATE",
        "up1",
        &tag,
        3,
        "z9hG4bK-up2",
        "Content-Type: application/sdp\r\n",
        &away,
    ));
    let refused = rig.sent.last().unwrap().2.clone();
    assert!(refused.starts_with("SIP/2.0 488"), "{refused}");
    let moves = rig
        .events
        .iter()
        .filter(|(_, e)| matches!(e, UaEvent::MediaChanged(_)))
        .count();
    assert_eq!(moves, 1);
}

/// The peer's answer to the last request we sent in a dialog: its Via,
/// From, To, Call-ID and CSeq as they are, and `extra` lines and `body`.
fn peer_answers(rig: &mut Rig, status: &str, extra: &str, body: &str) {
    let request = rig.sent.last().unwrap().2.clone();
    let mut lines = vec![format!("SIP/2.0 {status}")];
    for l in request.lines().skip(1) {
        if ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
            .iter()
            .any(|h| l.starts_with(h))
        {
            lines.push(l.to_string());
        }
    }
    let body_lines = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    lines.push(format!("{extra}{body_lines}Content-Length: {}", body.len()));
    rig.recv(&(lines.join("\r\n") + "\r\n\r\n" + body));
}

/// A call answered with a real SDP answer to its offer (the media agreed,
/// as the endpoint does it), and acknowledged.
fn answered_for_real(rig: &mut Rig, call_id: &str, extra: &str) -> (CallHandle, String) {
    rig.recv(&invite(call_id, "z9hG4bK-inv1", extra, OFFER));
    let call = rig.last_incoming();
    let mut session = crate::sip::sdp::MediaSession::new(media());
    let (answer, _) = session.answer(OFFER.as_bytes()).unwrap();
    assert!(rig
        .ua
        .accept(rig.now, call, session, answer.as_bytes(), false));
    rig.drain();
    let tag = rig.to_tag();
    rig.recv(&in_dialog("ACK", call_id, &tag, 1, "z9hG4bK-ack1", "", ""));
    (call, tag)
}

#[test]
fn a_peer_that_takes_no_update_is_refreshed_by_re_invite() {
    let mut rig = Rig::new();
    // No Supported: timer, no UPDATE in Allow: we refresh, by re-INVITE.
    let extra = "Allow: INVITE, ACK, BYE, CANCEL\r\nSession-Expires: 120\r\n";
    let (call, tag) = answered_for_real(&mut rig, "ri1", extra);
    let ok = rig.sent[1].2.clone();
    assert!(ok.contains("Session-Expires: 120;refresher=uas"), "{ok}");
    rig.run_until(Duration::from_secs(59));
    assert!(!rig.statuses().iter().any(|s| s.starts_with("INVITE ")));
    rig.run_until(Duration::from_secs(61));
    let reinvite = rig.sent.last().unwrap().2.clone();
    assert!(
        reinvite.starts_with("INVITE sip:sipp@127.0.0.1:5070 SIP/2.0"),
        "{reinvite}"
    );
    assert!(
        reinvite.contains("Session-Expires: 120;refresher=uac"),
        "{reinvite}"
    );
    assert!(
        reinvite.contains("m=audio 20000 RTP/AVP 0 "),
        "the agreed codec: {reinvite}"
    );
    assert!(reinvite.contains(&format!("From: <sip:8000@127.0.0.1:5060>;tag={tag}")));
    // The peer's own offer crosses ours: 491 (RFC 3261 14.2).
    rig.recv(&in_dialog(
        "INVITE",
        "ri1",
        &tag,
        2,
        "z9hG4bK-ri-glare",
        "Content-Type: application/sdp\r\n",
        OFFER,
    ));
    assert!(
        rig.sent.last().unwrap().2.starts_with("SIP/2.0 491"),
        "{:?}",
        rig.statuses()
    );
    // Ours is answered: ACKed, and the session goes on.
    let reinvite_at = rig
        .sent
        .iter()
        .rposition(|(_, _, t)| t.starts_with("INVITE "))
        .unwrap();
    rig.sent.truncate(reinvite_at + 1);
    peer_answers(
        &mut rig,
        "200 OK",
        "Contact: <sip:sipp@127.0.0.1:5070>\r\n",
        OFFER,
    );
    let ack = rig.sent.last().unwrap().2.clone();
    assert!(
        ack.starts_with("ACK sip:sipp@127.0.0.1:5070 SIP/2.0"),
        "{ack}"
    );
    assert!(ack.contains("CSeq: 1 ACK"), "{ack}");
    rig.run_until(Duration::from_secs(115));
    assert!(!rig.statuses().iter().any(|s| s.starts_with("BYE ")));
    // The next refresh comes half an interval after the last (at 121 s).
    let refreshes = |rig: &Rig| {
        rig.sent
            .iter()
            .filter(|(_, _, t)| t.starts_with("INVITE "))
            .map(|(_, _, t)| header(t, "CSeq:").to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert_eq!(refreshes(&rig), 1, "{:?}", rig.statuses());
    rig.run_until(Duration::from_secs(125));
    assert_eq!(refreshes(&rig), 2, "{:?}", rig.statuses());
    assert!(!rig
        .events
        .iter()
        .any(|(c, e)| *c == call && matches!(e, UaEvent::Ended(_))));
}

#[test]
fn a_refreshing_re_invite_refused_with_491_is_sent_again_soon() {
    let mut rig = Rig::new();
    let extra = "Session-Expires: 120\r\n";
    answered_for_real(&mut rig, "ri2", extra);
    rig.run_until(Duration::from_secs(61));
    peer_answers(&mut rig, "491 Request Pending", "", "");
    let ack = rig.sent.last().unwrap().2.clone();
    assert!(
        ack.starts_with("ACK sip:sipp@127.0.0.1:5070 SIP/2.0"),
        "{ack}"
    );
    assert!(ack.contains("CSeq: 1 ACK"), "the transaction's ACK: {ack}");
    let invites = |rig: &Rig| {
        rig.sent
            .iter()
            .filter(|(_, _, t)| t.starts_with("INVITE "))
            .map(|(_, _, t)| header(t, "CSeq:").to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert_eq!(invites(&rig), 1, "not at once");
    rig.run_until(Duration::from_millis(63_100));
    assert_eq!(
        invites(&rig),
        2,
        "again within 2 s of the 491: the caller's Call-ID"
    );
}

#[test]
fn a_session_interval_too_large_for_the_clock_is_taken_as_a_day() {
    let mut rig = Rig::new();
    let (call, _) = rig.answered_with(
        "big1",
        "Supported: timer\r\nSession-Expires: 9999999999999999999\r\n",
    );
    let ok = rig.sent[1].2.clone();
    assert!(ok.contains("Session-Expires: 86400;refresher=uac"), "{ok}");
    rig.run_until(Duration::from_secs(86_400 - 33));
    assert!(!rig
        .events
        .iter()
        .any(|(c, e)| *c == call && matches!(e, UaEvent::Ended(_))));
}

#[test]
fn an_update_with_too_small_an_interval_takes_nothing_of_its_offer() {
    let mut rig = Rig::new();
    let (_, tag) = rig.answered("small1");
    let moved = OFFER.replace("m=audio 6000", "m=audio 6100");
    rig.recv(&in_dialog(
        "UPDATE",
        "small1",
        &tag,
        2,
        "z9hG4bK-sm1",
        "Session-Expires: 30\r\nContent-Type: application/sdp\r\n",
        &moved,
    ));
    assert!(rig.sent.last().unwrap().2.starts_with("SIP/2.0 422"));
    assert!(!rig
        .events
        .iter()
        .any(|(_, e)| matches!(e, UaEvent::MediaChanged(_))));
    // A late copy of an older UPDATE is out of order.
    rig.recv(&in_dialog(
        "UPDATE",
        "small1",
        &tag,
        2,
        "z9hG4bK-sm2",
        "",
        "",
    ));
    assert!(rig.sent.last().unwrap().2.starts_with("SIP/2.0 500"));
}

#[test]
fn after_our_bye_the_session_is_refreshed_no_more() {
    let mut rig = Rig::new();
    let (call, _) = answered_for_real(&mut rig, "byeref", "Session-Expires: 120\r\n");
    rig.run_until(Duration::from_secs(10));
    rig.ua.hangup(rig.now, call);
    rig.drain();
    rig.run_until(Duration::from_secs(200));
    assert!(
        !rig.statuses().iter().any(|s| s.starts_with("INVITE ")),
        "{:?}",
        rig.statuses()
    );
    let ends = rig
        .events
        .iter()
        .filter(|(c, e)| *c == call && matches!(e, UaEvent::Ended(_)))
        .count();
    assert!(ends <= 1, "{:?}", rig.events);
}
