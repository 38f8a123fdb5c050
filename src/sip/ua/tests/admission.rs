//! Admission control as the user agent applies it: trunk ACLs, per-source
//! rate limits, per-trunk limits, inbound digest and media networks.

use super::*;
use crate::sip::admission::{
    AdmissionConfig, InboundDigest, Networks, Rate, TrunkPolicy, UnknownSources,
};
use crate::sip::auth::{authorize, Challenge, Credentials};

const CARRIER: &str = "192.0.2.10:5060";
const PBX: &str = "198.51.100.20:5060";

fn nets(list: &[&str]) -> Networks {
    Networks::new(list.iter().map(|n| n.parse().unwrap()).collect())
}

fn trunk(name: &str, source: &str) -> TrunkPolicy {
    TrunkPolicy {
        name: name.into(),
        sources: nets(&[source]),
        media: nets(&["127.0.0.0/8"]),
        digest: None,
        max_calls: 100,
        calls_per_second: Rate::per_second(100.0),
        source_rate: Rate::per_second(1000.0),
        located: Vec::new(),
        located_media: false,
    }
}

fn rig_with(trunks: Vec<TrunkPolicy>, unknown: UnknownSources) -> Rig {
    let mut config = UaConfig::new("127.0.0.1:5060".parse().unwrap());
    config.admission = AdmissionConfig {
        trunks,
        unknown,
        ..AdmissionConfig::default()
    };
    Rig::with(config)
}

impl Rig {
    /// Feeds `text` as if it came from `from`.
    fn recv_from(&mut self, from: &str, text: &str) {
        self.ua.handle_datagram(
            self.now,
            from.parse::<std::net::SocketAddr>().unwrap(),
            text.as_bytes(),
        );
        self.drain();
    }

    fn last_status(&self) -> String {
        self.statuses().last().cloned().unwrap_or_default()
    }

    fn incoming_count(&self) -> usize {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, UaEvent::Incoming(_)))
            .count()
    }
}

#[test]
fn a_source_outside_every_trunk_gets_nothing() {
    let mut rig = rig_with(vec![trunk("carrier", "192.0.2.0/24")], UnknownSources::Drop);
    for (i, from) in ["203.0.113.9:5060", "127.0.0.1:5070"].iter().enumerate() {
        rig.recv_from(from, &invite(&format!("u{i}"), "z9hG4bK-u", "", OFFER));
        rig.recv_from(from, &options("z9hG4bK-uo"));
    }
    assert!(rig.sent.is_empty(), "{:?}", rig.statuses());
    assert!(rig.events.is_empty());
    assert_eq!(rig.ua.admission_counters().unknown_dropped, 4);

    rig.recv_from(CARRIER, &options("z9hG4bK-ok"));
    assert_eq!(rig.last_status(), "SIP/2.0 200 OK");
}

fn options(branch: &str) -> String {
    format!(
        "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n\
From: <sip:probe@192.0.2.10>;tag=p1\r\n\
To: <sip:127.0.0.1:5060>\r\n\
Call-ID: {branch}\r\n\
CSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn unknown_sources_may_be_told_403_but_never_get_a_call() {
    let mut rig = rig_with(
        vec![trunk("carrier", "192.0.2.0/24")],
        UnknownSources::Reject,
    );
    rig.recv_from("203.0.113.9:5060", &invite("r1", "z9hG4bK-r1", "", OFFER));
    assert_eq!(rig.last_status(), "SIP/2.0 403 Forbidden");
    assert_eq!(rig.incoming_count(), 0);
    assert_eq!(rig.ua.admission_counters().unknown_forbidden, 1);
}

/// Three INVITEs from the carrier: two calls, then a 503 with this
/// Retry-After.
fn three_calls_and_the_third_is_refused(rig: &mut Rig, retry_after: &str) {
    for i in 0..3 {
        rig.recv_from(
            CARRIER,
            &invite(&format!("c{i}"), &format!("z9hG4bK-c{i}"), "", OFFER),
        );
    }
    assert_eq!(rig.incoming_count(), 2);
    let refusal = rig.sent.last().unwrap().2.clone();
    assert!(refusal.starts_with("SIP/2.0 503 "), "{refusal}");
    let header = format!("\r\nRetry-After: {retry_after}\r\n");
    assert!(refusal.contains(&header), "{refusal}");
}

#[test]
fn a_trunk_at_its_call_limit_gets_503_with_retry_after_while_another_trunk_works() {
    let mut carrier = trunk("carrier", "192.0.2.0/24");
    carrier.max_calls = 2;
    let mut rig = rig_with(
        vec![carrier, trunk("pbx", "198.51.100.0/24")],
        UnknownSources::Drop,
    );
    three_calls_and_the_third_is_refused(&mut rig, "5");
    assert_eq!(rig.ua.trunk_calls("carrier"), 2);

    rig.recv_from(PBX, &invite("p1", "z9hG4bK-p1", "", OFFER));
    assert_eq!(rig.incoming_count(), 3, "the other trunk is not affected");

    // A call that ends frees its place at once.
    let first = rig
        .events
        .iter()
        .find_map(|(c, e)| matches!(e, UaEvent::Incoming(_)).then_some(*c))
        .unwrap();
    rig.ua.reject(rig.now, first, 486, "Busy Here", &[]);
    assert_eq!(rig.ua.trunk_calls("carrier"), 1);
    rig.recv_from(CARRIER, &invite("c9", "z9hG4bK-c9", "", OFFER));
    assert_eq!(rig.incoming_count(), 4);
}

#[test]
fn a_trunk_over_its_call_rate_gets_503_until_the_next_second() {
    let mut carrier = trunk("carrier", "192.0.2.0/24");
    carrier.calls_per_second = Rate::per_second(2.0);
    let mut rig = rig_with(vec![carrier], UnknownSources::Drop);
    three_calls_and_the_third_is_refused(&mut rig, "1");
    rig.now += Duration::from_millis(600);
    rig.recv_from(CARRIER, &invite("c9", "z9hG4bK-c9", "", OFFER));
    assert_eq!(rig.incoming_count(), 3);
    assert_eq!(rig.ua.admission_counters().over_rate, 1);
}

#[test]
fn a_flooding_source_is_blocked_whatever_the_method_and_others_go_on() {
    let mut carrier = trunk("carrier", "192.0.2.0/24");
    carrier.source_rate = Rate {
        per_second: 10.0,
        burst: 20.0,
    };
    let mut rig = rig_with(vec![carrier], UnknownSources::Drop);
    for i in 0..200 {
        rig.recv_from(CARRIER, &options(&format!("z9hG4bK-f{i}")));
    }
    assert_eq!(rig.sent.len(), 20, "the burst, then nothing");
    let c = rig.ua.admission_counters();
    assert_eq!((c.rate_limited, c.sources_blocked), (180, 1));
    // Another address of the same trunk has its own allowance.
    rig.recv_from("192.0.2.11:5060", &invite("o1", "z9hG4bK-o1", "", OFFER));
    assert_eq!(rig.incoming_count(), 1);
    // The block lasts, even for a source that goes quiet for a while...
    rig.now += Duration::from_secs(5);
    rig.recv_from(CARRIER, &options("z9hG4bK-later"));
    assert_eq!(
        rig.sent.len(),
        21,
        "only the 100 Trying to the other source"
    );
    // ...and ends.
    rig.now += Duration::from_secs(6);
    rig.recv_from(CARRIER, &options("z9hG4bK-after"));
    assert_eq!(rig.last_status(), "SIP/2.0 200 OK");
}

#[test]
fn an_address_that_only_answers_our_calls_cannot_start_one() {
    let mut config = UaConfig::new("127.0.0.1:5060".parse().unwrap());
    config.admission = AdmissionConfig {
        trunks: vec![trunk("carrier", "192.0.2.0/24")],
        also_from: vec!["203.0.113.50".parse().unwrap()],
        ..AdmissionConfig::default()
    };
    let mut rig = Rig::with(config);
    rig.recv_from("203.0.113.50:5060", &invite("x1", "z9hG4bK-x1", "", OFFER));
    assert!(rig.last_status().starts_with("SIP/2.0 403"));
    assert_eq!(rig.incoming_count(), 0);
}

#[test]
fn a_trunk_with_credentials_is_challenged_and_its_answer_checked() {
    let mut carrier = trunk("carrier", "192.0.2.0/24");
    carrier.digest = Some(InboundDigest {
        realm: "callflow".into(),
        username: "carrier".into(),
        password: "s3cret".into(),
    });
    let mut rig = rig_with(vec![carrier], UnknownSources::Drop);
    rig.recv_from(CARRIER, &invite("d1", "z9hG4bK-d1", "", OFFER));
    let challenge_text = rig.sent.last().unwrap().2.clone();
    assert!(
        challenge_text.starts_with("SIP/2.0 401 Unauthorized"),
        "{challenge_text}"
    );
    assert_eq!(rig.incoming_count(), 0);
    let value = challenge_text
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .unwrap();
    let challenge = Challenge::parse(value).unwrap();
    let uri = "sip:8000@127.0.0.1:5060";
    let answer = |password: &str| {
        authorize(
            &challenge,
            &Credentials {
                username: "carrier".into(),
                password: password.into(),
            },
            "INVITE",
            uri,
            1,
            "c0ffee",
            b"",
        )
    };
    // Wrong password: challenged again, no call.
    let wrong = format!("Authorization: {}\r\n", answer("guess"));
    rig.recv_from(CARRIER, &invite("d2", "z9hG4bK-d2", &wrong, OFFER));
    assert!(rig.last_status().starts_with("SIP/2.0 401"));
    assert_eq!(rig.incoming_count(), 0);
    assert_eq!(rig.ua.admission_counters().bad_credentials, 1);
    // The same nonce from another address is not ours to honour.
    let right = format!("Authorization: {}\r\n", answer("s3cret"));
    rig.recv_from(
        "192.0.2.99:5060",
        &invite("d3", "z9hG4bK-d3", &right, OFFER),
    );
    assert!(rig.last_status().starts_with("SIP/2.0 401"));
    // Right: the call comes through.
    rig.recv_from(CARRIER, &invite("d4", "z9hG4bK-d4", &right, OFFER));
    assert_eq!(rig.incoming_count(), 1);
    // An old nonce with the right password: stale=true, so the client
    // retries without asking anyone.
    rig.now += Duration::from_secs(301);
    rig.recv_from(CARRIER, &invite("d5", "z9hG4bK-d5", &right, OFFER));
    let stale = rig.sent.last().unwrap().2.clone();
    assert!(stale.starts_with("SIP/2.0 401"), "{stale}");
    assert!(stale.contains("stale=true"), "{stale}");
}

#[test]
fn a_reinvite_moving_media_outside_the_trunks_networks_gets_488() {
    let mut rig = Rig::new();
    let (call, tag) = rig.answered("m1");
    let outside = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 198.51.100.7");
    rig.recv(&in_dialog(
        "INVITE",
        "m1",
        &tag,
        2,
        "z9hG4bK-re1",
        "Content-Type: application/sdp\r\n",
        &outside,
    ));
    assert!(
        rig.last_status().starts_with("SIP/2.0 488"),
        "{:?}",
        rig.statuses()
    );
    assert!(!rig
        .events
        .iter()
        .any(|(c, e)| *c == call && matches!(e, UaEvent::MediaChanged(_))));
}

#[test]
fn the_timer_heap_stays_bounded_when_owners_go_away() {
    let mut rig = Rig::new();
    for i in 0..3000 {
        rig.recv(&options(&format!("z9hG4bK-t{i}")));
    }
    // Every OPTIONS left a Timer J entry; they expire with their owners.
    rig.run_until(Duration::from_secs(40));
    assert_eq!(rig.ua.poll_timeout(), None);
}
