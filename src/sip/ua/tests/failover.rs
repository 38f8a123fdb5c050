//! Moving on to the next address DNS gave (RFC 3263 4.3): an INVITE or a
//! REGISTER whose server answers 503, never answers, or cannot be reached
//! goes to the next one as a new transaction.

use super::*;
use crate::sip::locate::{Candidate, Host, Located, SipTarget};
use crate::sip::transport::Peer;

fn at(s: &str) -> Peer {
    Peer::udp(s.parse().unwrap())
}

fn call_to(destination: Peer, alternates: Vec<Peer>) -> OutgoingCall {
    OutgoingCall {
        target: "sip:+37167000000@trunk.example.test".into(),
        from_user: "+37160000000".into(),
        destination,
        media: crate::sip::sdp::MediaSession::new(crate::sip::sdp::LocalMedia {
            addr: "127.0.0.1".parse().unwrap(),
            port: 30000,
            session_id: 1,
            session_version: 1,
        }),
        credentials: None,
        ring_timeout: Duration::from_secs(120),
        media_networks: crate::sip::admission::Networks::loopback(),
        headers: Vec::new(),
        session_expires: None,
        alternates,
    }
}

/// Where each INVITE went (its retransmissions not counted), with its
/// branch and CSeq.
fn invites(rig: &Rig) -> Vec<(SocketAddr, String, String)> {
    let mut out: Vec<(SocketAddr, String, String)> = Vec::new();
    for (_, to, text) in &rig.sent {
        if !text.starts_with("INVITE ") {
            continue;
        }
        let via = header(text, "Via:").to_string();
        if out.iter().any(|(_, v, _)| *v == via) {
            continue;
        }
        out.push((*to, via, header(text, "CSeq:").to_string()));
    }
    out
}

#[test]
fn an_invite_moves_on_after_a_503_a_transport_error_and_silence_but_not_a_486() {
    let mut rig = Rig::new();
    let (a, b, c, d) = (
        at("127.0.0.2:5060"),
        at("127.0.0.3:5060"),
        at("127.0.0.4:5060"),
        at("127.0.0.5:5060"),
    );
    let call = rig.ua.originate(rig.now, call_to(a, vec![b, c, d]));
    rig.drain();
    answer_last(&mut rig, "503 Service Unavailable", "");
    let acks: Vec<SocketAddr> = rig
        .sent
        .iter()
        .filter(|(_, _, t)| t.starts_with("ACK "))
        .map(|(_, to, _)| *to)
        .collect();
    assert_eq!(acks, vec![a.addr], "the 503 is ACKed where it came from");
    rig.ua.on_transport_error(rig.now, b);
    rig.drain();
    // C never answers: after four seconds of silence the call moves on
    // (Timer B would take 32 s).
    let since = rig.now - rig.start;
    rig.run_until(since + Duration::from_secs(5));
    let sent = invites(&rig);
    let places: Vec<SocketAddr> = sent.iter().map(|(to, ..)| *to).collect();
    assert_eq!(places, vec![a.addr, b.addr, c.addr, d.addr]);
    let mut branches: Vec<&String> = sent.iter().map(|(_, via, _)| via).collect();
    branches.dedup();
    assert_eq!(branches.len(), 4, "a new transaction each time");
    let cseqs: Vec<&String> = sent.iter().map(|(.., cseq)| cseq).collect();
    assert!(
        cseqs.windows(2).all(|w| w[0] != w[1]),
        "no request that could be taken for a merged one: {cseqs:?}"
    );
    assert!(
        !rig.events
            .iter()
            .any(|(_, e)| matches!(e, UaEvent::DialFailed { .. })),
        "{:?}",
        rig.events
    );
    // A busy callee is busy whichever server says so.
    answer_last(&mut rig, "486 Busy Here", "");
    assert!(matches!(
        rig.events.last(),
        Some((c, UaEvent::DialFailed { cause: DialFailure::Busy, .. })) if *c == call
    ));
}

#[test]
fn the_last_address_failing_fails_the_call() {
    let mut rig = Rig::new();
    let (a, b) = (at("127.0.0.2:5060"), at("127.0.0.3:5060"));
    let call = rig.ua.originate(rig.now, call_to(a, vec![b]));
    rig.drain();
    answer_last(&mut rig, "503 Service Unavailable", "");
    answer_last(&mut rig, "503 Service Unavailable", "");
    assert!(matches!(
        rig.events.last(),
        Some((c, UaEvent::DialFailed { status: 503, .. })) if *c == call
    ));
    assert_eq!(invites(&rig).len(), 2);
}

#[test]
fn a_transport_error_after_a_provisional_response_changes_nothing() {
    let mut rig = Rig::new();
    let (a, b) = (at("127.0.0.2:5060"), at("127.0.0.3:5060"));
    rig.ua.originate(rig.now, call_to(a, vec![b]));
    rig.drain();
    answer_last(&mut rig, "180 Ringing", "");
    rig.ua.on_transport_error(rig.now, a);
    rig.drain();
    assert_eq!(invites(&rig).len(), 1, "the call is ringing there");
}

fn located(peers: &[Peer]) -> Located {
    Located {
        candidates: peers
            .iter()
            .enumerate()
            .map(|(i, p)| Candidate {
                rank: (0, i as u16),
                weight: 0,
                peers: vec![*p],
            })
            .collect(),
        ttl: Duration::from_secs(60),
    }
}

fn named_registration(name: &str) -> super::super::RegisterConfig {
    super::super::RegisterConfig {
        registrar: SipTarget {
            host: Host::Name(name.into()),
            port: None,
            transport: None,
        },
        backups: Vec::new(),
        domain: name.into(),
        user: "callflow7".into(),
        credentials: None,
        expires: Duration::from_secs(3600),
    }
}

#[test]
fn a_registrar_by_name_is_registered_with_at_its_next_address_when_the_first_fails() {
    let mut rig = Rig::new();
    let (a, b) = (at("127.0.0.2:5060"), at("127.0.0.3:5060"));
    let config = named_registration("sip.example.test");
    let mut known = std::collections::HashMap::new();
    known.insert(
        config.registrar.clone(),
        Ok(std::sync::Arc::new(located(&[a, b]))),
    );
    rig.ua.config.directory.publish(known);
    rig.ua.register(rig.now, config);
    rig.drain();
    answer_last(&mut rig, "503 Service Unavailable", "");
    let last = rig.sent.last().unwrap().clone();
    assert!(
        last.2.starts_with("REGISTER sip:sip.example.test "),
        "{}",
        last.2
    );
    assert_eq!(last.1, b.addr);
    answer_last(
        &mut rig,
        "200 OK",
        "Contact: <sip:callflow7@127.0.0.1:5060>;expires=3600\r\n",
    );
    assert_eq!(
        rig.ua.registration_state(),
        Some(&super::super::RegistrationState::Registered {
            expires: Duration::from_secs(3600)
        })
    );
    // The refresh (a minute before the end) goes where the binding is.
    rig.run_until(Duration::from_secs(3545));
    let last = rig.sent.last().unwrap();
    assert!(last.2.starts_with("REGISTER "));
    assert_eq!(last.1, b.addr);
    // Unanswered, it fails; the retry after the back-off asks DNS again
    // and starts from the first address.
    rig.run_until(Duration::from_secs(3610));
    assert!(
        rig.sent
            .iter()
            .any(|(t, to, text)| *t > Duration::from_secs(3575)
                && *to == a.addr
                && text.starts_with("REGISTER ")),
        "{:?}",
        rig.sent
            .iter()
            .map(|(t, to, _)| (t, to))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_registrar_dns_cannot_place_is_a_failure_with_why_and_retried() {
    let mut rig = Rig::new();
    let config = named_registration("nowhere.example.test");
    let mut known = std::collections::HashMap::new();
    known.insert(
        config.registrar.clone(),
        Err("DNS: nowhere.example.test: no record found".to_string()),
    );
    rig.ua.config.directory.publish(known);
    rig.ua.register(rig.now, config);
    rig.drain();
    assert!(rig.sent.is_empty());
    match rig.ua.registration_state() {
        Some(super::super::RegistrationState::Failed { reason }) => {
            assert!(reason.contains("nowhere.example.test"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // Once DNS knows it, the back-off's retry registers.
    let a = at("127.0.0.2:5060");
    let mut known = std::collections::HashMap::new();
    known.insert(
        named_registration("nowhere.example.test").registrar,
        Ok(std::sync::Arc::new(located(&[a]))),
    );
    rig.ua.config.directory.publish(known);
    rig.run_until(Duration::from_secs(31));
    assert!(rig
        .sent
        .last()
        .is_some_and(|(_, to, t)| *to == a.addr && t.starts_with("REGISTER ")));
}

#[test]
fn over_tcp_a_503_moves_the_call_on_and_a_challenge_is_answered() {
    use crate::sip::transport::Transport;
    let mut rig = Rig::new();
    let (a, b) = (
        Peer::tcp("127.0.0.2:5060".parse().unwrap()),
        Peer::tcp("127.0.0.3:5060".parse().unwrap()),
    );
    let mut request = call_to(a, vec![b]);
    request.credentials = Some(crate::sip::auth::Credentials {
        username: "callflow".into(),
        password: "s3cret".into(),
    });
    let call = rig.ua.originate(rig.now, request);
    rig.drain();
    // Timer D is zero over TCP: the ACK ends the transaction at once, and
    // the 503 must still move the call on.
    answer_last(&mut rig, "503 Service Unavailable", "");
    assert_eq!(
        invites(&rig).iter().map(|(to, ..)| *to).collect::<Vec<_>>(),
        vec![a.addr, b.addr]
    );
    assert!(rig.transports.iter().all(|t| *t == Transport::Tcp));
    answer_last(
        &mut rig,
        "407 Proxy Authentication Required",
        "Proxy-Authenticate: Digest realm=\"b\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"\r\n",
    );
    let last = &rig.sent.last().unwrap().2;
    assert!(
        last.starts_with("INVITE ") && last.contains("Proxy-Authorization: Digest"),
        "the challenge is answered over TCP too: {last}"
    );
    assert!(
        !rig.events
            .iter()
            .any(|(c, e)| *c == call && matches!(e, UaEvent::DialFailed { .. })),
        "{:?}",
        rig.events
    );
}

#[test]
fn a_silent_server_is_left_after_four_seconds_and_ended_if_it_answers_late() {
    let mut rig = Rig::new();
    let (a, b) = (at("127.0.0.2:5060"), at("127.0.0.3:5060"));
    let call = rig.ua.originate(rig.now, call_to(a, vec![b]));
    rig.drain();
    let first = rig.sent[0].2.clone();
    rig.run_until(Duration::from_millis(3900));
    assert_eq!(invites(&rig).len(), 1, "retransmitted, not yet moved on");
    rig.run_until(Duration::from_millis(4100));
    assert_eq!(
        invites(&rig).iter().map(|(to, ..)| *to).collect::<Vec<_>>(),
        vec![a.addr, b.addr]
    );
    // B rings; then A wakes up and answers the INVITE we left.
    answer_last(&mut rig, "180 Ringing", "");
    let sent_before = rig.sent.len();
    let mut late = vec!["SIP/2.0 200 OK".to_string()];
    for l in first.lines().skip(1) {
        if ["Via:", "From:", "Call-ID:", "CSeq:"]
            .iter()
            .any(|h| l.starts_with(h))
        {
            late.push(l.to_string());
        } else if l.starts_with("To:") {
            late.push(format!("{l};tag=stray9"));
        }
    }
    late.push("Contact: <sip:callee@127.0.0.2:5060>\r\nContent-Length: 0".into());
    rig.recv(&(late.join("\r\n") + "\r\n\r\n"));
    let after: Vec<&(Duration, SocketAddr, String)> = rig.sent[sent_before..].iter().collect();
    assert!(
        after
            .iter()
            .any(|(_, to, t)| *to == a.addr && t.starts_with("ACK sip:callee@127.0.0.2")),
        "{after:?}"
    );
    let bye = after
        .iter()
        .find(|(_, to, t)| *to == a.addr && t.starts_with("BYE sip:callee@127.0.0.2"))
        .expect("a BYE to the late server");
    assert!(bye.2.contains("tag=stray9"), "{}", bye.2);
    assert!(
        !rig.events.iter().any(|(c, e)| *c == call
            && matches!(
                e,
                UaEvent::Answered { .. } | UaEvent::Ended(_) | UaEvent::DialFailed { .. }
            )),
        "the call, ringing at B, is untouched: {:?}",
        rig.events
    );
}
