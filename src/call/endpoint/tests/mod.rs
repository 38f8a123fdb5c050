//! Whole calls driven against the Endpoint with no sockets: the journeys of
//! the SIPp tests, played by a peer of our own on a virtual clock, first on
//! a clean network and then with 10% of the packets lost each way.

mod bridge;
mod lab;
mod peer;

use std::time::Duration;

use lab::Lab;

use crate::call::endpoint::OutboundTrunk;
use crate::call::record::CallOutcome;
use crate::callback::{AttemptOutcome, Callback, State};
use crate::media::g711::Codec;
use crate::sip::message::Method;

/// Seeds for the lossy runs: each a different pattern of losses.
const SEEDS: std::ops::Range<u64> = 1..21;

/// 10% of the packets lost each way.
const LOSS: f64 = 0.10;

/// Runs `journey` once on a clean network, then at 10% loss over every
/// seed.
fn clean_then_lossy(journey: fn(f64, u64)) {
    journey(0.0, 1);
    for seed in SEEDS {
        journey(LOSS, seed);
    }
}

/// The first call record, which the journey must have produced.
fn first_record(lab: &Lab, seed: u64) -> &crate::call::record::CallRecord {
    lab.records
        .first()
        .unwrap_or_else(|| panic!("seed {seed}: no record"))
}

/// A lab with one caller (peer 0) who has dialled `number`.
fn called(loss: f64, seed: u64, number: &str) -> Lab {
    let mut lab = Lab::new(lab::config(), loss, seed);
    lab.add_peer(5070, &format!("call-{seed}@peer"));
    let now = lab.now;
    lab.peers[0].invite(now, number);
    lab
}

/// Runs until the caller's INVITE was answered and ACKed (the endpoint's
/// retransmissions of the 200 stop once its ACK arrives).
fn answered(lab: &mut Lab) {
    lab.run_until(Duration::from_secs(40), |l| {
        l.peers[0].answered_at.is_some()
    });
    assert!(
        lab.peers[0].answered_at.is_some(),
        "the INVITE was never answered"
    );
}

/// The prompt `name` as PCMU.
fn prompt(name: &str) -> Vec<u8> {
    let runtime = lab::runtime();
    let id = runtime
        .flows
        .prompt_names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no prompt {name}"));
    runtime
        .prompts
        .get(id as u32, Codec::Pcmu)
        .map(|a| a.to_vec())
        .unwrap_or_default()
}

#[test]
fn the_greeting_is_streamed_packet_by_packet_as_paced_pcmu_of_the_prompt() {
    let mut lab = called(0.0, 7, "800");
    answered(&mut lab);
    lab.run_for(Duration::from_secs(2));
    let audio = prompt("digit-1");
    let packets = &lab.rtp[0];
    let chunks = audio.len().div_ceil(160);
    assert!(packets.len() > chunks, "{} packets", packets.len());
    let first = &packets[0];
    let (seq0, ts0) = (
        u16::from_be_bytes([first.bytes[2], first.bytes[3]]),
        u32::from_be_bytes([
            first.bytes[4],
            first.bytes[5],
            first.bytes[6],
            first.bytes[7],
        ]),
    );
    assert_eq!(first.bytes[0], 0x80, "RTP version 2, no padding, no CSRC");
    let fixed: Vec<_> = lab.rtp_peers.values().flatten().collect();
    assert!(
        fixed.len() == 1 && fixed[0].fixed && lab.peer_by_addr(fixed[0].addr).is_some(),
        "the caller's RTP address is fixed from the answer (no NAT latching): {fixed:?}"
    );
    assert_eq!(first.bytes[1] & 0x7f, 0, "PCMU");
    for (i, p) in packets.iter().take(chunks).enumerate() {
        let seq = u16::from_be_bytes([p.bytes[2], p.bytes[3]]);
        let ts = u32::from_be_bytes([p.bytes[4], p.bytes[5], p.bytes[6], p.bytes[7]]);
        assert_eq!(seq, seq0.wrapping_add(i as u16), "packet {i}: sequence");
        assert_eq!(
            ts,
            ts0.wrapping_add(160 * i as u32),
            "packet {i}: timestamp"
        );
        assert_eq!(
            p.at.duration_since(first.at),
            Duration::from_millis(20 * i as u64),
            "packet {i}: paced at 20 ms"
        );
        let payload = &p.bytes[12..];
        let want = &audio[160 * i..(160 * (i + 1)).min(audio.len())];
        assert_eq!(
            &payload[..want.len()],
            want,
            "packet {i}: the prompt's audio"
        );
    }
}

/// A caller over TLS offering SRTP (RFC 4568 SDES): answered with
/// `RTP/SAVP` and a key of ours; the greeting goes out encrypted (it opens
/// with our key, and is the prompt), a key press sealed with the caller's
/// key transfers the call, and one sent in the clear counts for nothing.
#[test]
fn over_tls_an_srtp_offer_gets_srtp_both_ways() {
    use crate::sip::sdp::sdes::SdesKey;
    let mut lab = Lab::new(lab::config(), 0.0, 3);
    lab.add_peer(5070, "srtp-3@peer");
    lab.peers[0].tls = true;
    lab.peers[0].srtp_key = Some(SdesKey([7; 30]));
    let now = lab.now;
    lab.peers[0].invite(now, "800");
    answered(&mut lab);
    let answer = lab.peers[0].remote_sdp.clone().unwrap_or_default();
    assert!(answer.contains(" RTP/SAVP 0 101\r\n"), "{answer}");
    let ours = lab.peers[0]
        .endpoint_srtp_key()
        .expect("our key in the answer");
    assert_ne!(ours, SdesKey([7; 30]), "a key of our own");
    // An unsealed key press: as if it never came.
    lab.press(0, 0, 777);
    lab.run_for(Duration::from_secs(2));
    let mut open = lab::srtp_context(&ours);
    let audio = prompt("digit-1");
    let packets: Vec<Vec<u8>> = lab.rtp[0]
        .iter()
        .map(|r| {
            open.decrypt_rtp(&r.bytes)
                .expect("our RTP authenticates with our key")
                .to_vec()
        })
        .collect();
    assert!(packets.len() > 10);
    let first = &packets[0][12..];
    assert_eq!(&first[..160], &audio[..160], "the prompt, once opened");
    assert_ne!(&lab.rtp[0][0].bytes[12..172], &audio[..160], "sent sealed");
    assert!(lab.records.is_empty(), "the clear key press did nothing");
    let rtp = lab.peers[0].rtp;
    lab.sealers
        .insert(rtp, lab::srtp_context(&SdesKey([7; 30])));
    lab.press(0, 0, 12345);
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    let record = first_record(&lab, 3);
    assert_eq!(record.outcome, CallOutcome::Transferred, "{record:?}");
    assert_eq!(record.digits, "0");
}

/// On a call that came over TLS, a re-INVITE that comes another way is
/// refused: our answer would carry our SRTP key in the clear.
#[test]
fn a_reinvite_outside_tls_on_an_srtp_call_is_refused() {
    use crate::sip::sdp::sdes::SdesKey;
    let mut lab = Lab::new(lab::config(), 0.0, 6);
    lab.add_peer(5070, "srtp-6@peer");
    lab.peers[0].tls = true;
    lab.peers[0].srtp_key = Some(SdesKey([7; 30]));
    let now = lab.now;
    lab.peers[0].invite(now, "800");
    answered(&mut lab);
    let ours = lab.peers[0].endpoint_srtp_key();
    lab.peers[0].tls = false;
    let again = lab.peers[0].sdp().replace("o=peer 1 1", "o=peer 1 2");
    let now = lab.now;
    lab.peers[0].in_dialog(now, "INVITE", "", &again);
    lab.run_for(Duration::from_millis(500));
    assert!(
        lab.peers[0].finals(Method::Invite).contains(&488),
        "{:?}",
        lab.peers[0].finals(Method::Invite)
    );
    assert_eq!(lab.peers[0].endpoint_srtp_key(), ours, "no new SDP sent");
}

/// SDES keys sent over plain UDP would be anyone's: such an offer is
/// refused with 488, never answered in kind or in the clear.
#[test]
fn an_srtp_offer_outside_tls_is_refused() {
    use crate::sip::sdp::sdes::SdesKey;
    let mut lab = Lab::new(lab::config(), 0.0, 4);
    lab.add_peer(5070, "srtp-4@peer");
    lab.peers[0].srtp_key = Some(SdesKey([7; 30]));
    let now = lab.now;
    lab.peers[0].invite(now, "800");
    lab.run_for(Duration::from_secs(2));
    let finals = lab.peers[0].finals(Method::Invite);
    assert!(
        !finals.is_empty() && finals.iter().all(|s| *s == 488),
        "{finals:?}"
    );
    assert!(lab.open_ports.is_empty());
}

/// The agent key (RFC 4733) leads to REFER, the ACD's NOTIFY and our BYE.
fn agent_key_journey(loss: f64, seed: u64) {
    let mut lab = called(loss, seed, "800");
    answered(&mut lab);
    lab.run_for(Duration::from_millis(300));
    lab.press(0, 0, 12345);
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    lab.run_for(Duration::from_secs(40));
    let record = first_record(&lab, seed);
    assert_eq!(
        record.outcome,
        CallOutcome::Transferred,
        "seed {seed}: {record:?}"
    );
    assert_eq!(record.digits, "0", "seed {seed}");
    let refer = lab.peers[0]
        .received
        .iter()
        .find(|m| m.is_request() && m.method() == Method::Refer)
        .unwrap_or_else(|| panic!("seed {seed}: no REFER"));
    let target = refer.header("Refer-To").unwrap_or_default();
    assert!(target.contains("support@acd.example.net"), "{target}");
    assert!(target.contains("X-Queue=support"), "{target}");
    assert!(lab.peers[0].got_bye, "seed {seed}: no BYE after the NOTIFY");
    assert!(
        lab.peers[0].finals(Method::Notify).contains(&200),
        "seed {seed}: our 200 to the NOTIFY"
    );
    assert!(
        lab.open_ports.is_empty(),
        "seed {seed}: the RTP port is freed"
    );
    assert_eq!(lab.endpoint.calls(), 0);
    assert_eq!(lab.records.len(), 1, "seed {seed}: one record");
}

#[test]
fn an_rfc4733_agent_key_transfers_by_refer_and_notify() {
    agent_key_journey(0.0, 1);
}

#[test]
fn an_rfc4733_agent_key_transfers_at_ten_percent_loss() {
    for seed in SEEDS {
        agent_key_journey(LOSS, seed);
    }
}

/// A key in SIP INFO works like one over RTP.
fn info_key_journey(loss: f64, seed: u64) {
    // Flow `lab`: its menu outlasts the INFO's retransmissions.
    let mut lab = called(loss, seed, "801");
    answered(&mut lab);
    lab.run_for(Duration::from_millis(300));
    let now = lab.now;
    lab.peers[0].in_dialog(now, "INFO", "", "Signal=0\r\nDuration=160\r\n");
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    let record = first_record(&lab, seed);
    assert_eq!(
        record.outcome,
        CallOutcome::Transferred,
        "seed {seed}: {record:?}"
    );
    assert_eq!(record.digits, "0");
}

#[test]
fn a_sip_info_key_transfers_like_rfc4733_even_at_ten_percent_loss() {
    clean_then_lossy(info_key_journey);
}

/// Silence: the menu is tried again, then the no-input branch runs and
/// the call ends with our BYE.
fn no_input_journey(loss: f64, seed: u64) {
    let mut lab = called(loss, seed, "800");
    answered(&mut lab);
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    lab.run_for(Duration::from_secs(40));
    let record = first_record(&lab, seed);
    assert_eq!(
        record.outcome,
        CallOutcome::Completed,
        "seed {seed}: {record:?}"
    );
    let menus = record.nodes.iter().filter(|n| *n == "e2e.menu").count();
    assert!(
        record.nodes.contains(&"e2e.no_input".to_string()),
        "{:?}",
        record.nodes
    );
    assert!(menus >= 1, "{:?}", record.nodes);
    assert!(lab.peers[0].got_bye, "seed {seed}");
    assert!(lab.open_ports.is_empty());
}

#[test]
fn silence_takes_the_no_input_branch_even_at_ten_percent_loss() {
    clean_then_lossy(no_input_journey);
}

/// A caller who hangs up while the call rings: 200 to the CANCEL, 487 to
/// the INVITE, and no port ever taken.
fn cancel_journey(loss: f64, seed: u64) {
    let mut config = lab::config();
    config.answer_delay = Duration::from_secs(3);
    let mut lab = Lab::new(config, loss, seed);
    lab.add_peer(5070, &format!("cancel-{seed}@peer"));
    let now = lab.now;
    lab.peers[0].invite(now, "800");
    lab.run_for(Duration::from_secs(1));
    let now = lab.now;
    lab.peers[0].cancel(now);
    lab.run_for(Duration::from_secs(40));
    assert!(
        lab.peers[0].finals(Method::Cancel).contains(&200),
        "seed {seed}: CANCEL answered"
    );
    let invite = lab.peers[0].finals(Method::Invite);
    if invite.contains(&487) {
        assert!(
            lab.rtp[0].is_empty(),
            "seed {seed}: no media for a call never answered"
        );
    } else {
        // The CANCEL was lost until the call was answered: it crossed our
        // 200, and the caller ended the call with BYE (RFC 3261 9.1).
        assert!(invite.contains(&200), "seed {seed}: {invite:?}");
        assert!(
            lab.peers[0].finals(Method::Bye).contains(&200),
            "seed {seed}"
        );
    }
    assert!(lab.open_ports.is_empty(), "seed {seed}: no port left taken");
    assert_eq!(lab.endpoint.calls(), 0);
    assert!(lab.endpoint.is_idle(), "seed {seed}: nothing left");
}

#[test]
fn a_cancel_while_ringing_ends_the_call_with_487_even_at_ten_percent_loss() {
    clean_then_lossy(cancel_journey);
}

#[test]
fn a_lost_ack_is_made_good_by_the_retransmitted_200() {
    let mut lab = called(0.0, 3, "800");
    lab.peers[0].drop_acks = 2;
    answered(&mut lab);
    lab.run_for(Duration::from_secs(3));
    let oks = lab.peers[0].finals(Method::Invite);
    assert!(oks.len() >= 3, "the 200 was sent again: {oks:?}");
    lab.press(0, 0, 999);
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    assert_eq!(lab.records[0].outcome, CallOutcome::Transferred);
}

#[test]
fn no_ack_at_all_ends_the_call_as_failed_with_our_bye() {
    let mut lab = called(0.0, 4, "800");
    lab.peers[0].drop_acks = usize::MAX;
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    lab.run_for(Duration::from_secs(5));
    let r = &lab.records[0];
    assert_eq!(
        (r.outcome, r.detail.as_str()),
        (CallOutcome::Failed, "no ACK for the 200 OK")
    );
    assert!(lab.peers[0].got_bye);
    assert!(lab.open_ports.is_empty());
}

/// A re-INVITE putting the call on hold stops our RTP; taking it off hold
/// starts it again.
#[test]
fn a_reinvite_to_hold_stops_our_rtp_and_one_to_resume_restarts_it() {
    let mut lab = called(0.0, 5, "800");
    answered(&mut lab);
    lab.run_for(Duration::from_millis(200));
    let held = lab.peers[0].sdp().replace("a=sendrecv", "a=sendonly");
    let now = lab.now;
    lab.peers[0].in_dialog(now, "INVITE", "", &held);
    lab.run_for(Duration::from_millis(300));
    let answer = lab.peers[0].remote_sdp.clone().unwrap_or_default();
    assert!(answer.contains("a=recvonly"), "{answer}");
    let before = lab.rtp[0].len();
    lab.run_for(Duration::from_millis(500));
    assert_eq!(lab.rtp[0].len(), before, "no RTP while on hold");
    let resumed = lab.peers[0].sdp().replace("o=peer 1 1", "o=peer 1 2");
    let now = lab.now;
    lab.peers[0].in_dialog(now, "INVITE", "", &resumed);
    // The flow's next prompt (the menu's retry, or the no-input branch)
    // is heard once the call is off hold.
    lab.run_for(Duration::from_secs(3));
    assert!(lab.rtp[0].len() > before, "RTP again once resumed");
}

/// A lab whose endpoint dials through peer 0 as its trunk (challenging
/// with 407 first), having just dialled callback request 42.
fn dialled(loss: f64, seed: u64, answers: Vec<u16>) -> Lab {
    dialled_through(
        loss,
        seed,
        answers,
        crate::sip::transport::Transport::Udp,
        false,
    )
}

/// [`dialled`] with the trunk over `transport`, with `srtp` or not.
fn dialled_through(
    loss: f64,
    seed: u64,
    answers: Vec<u16>,
    transport: crate::sip::transport::Transport,
    srtp: bool,
) -> Lab {
    let mut config = lab::config();
    let trunk_addr = std::net::SocketAddr::from(([127, 0, 0, 2], 5080));
    config.trunk = Some(OutboundTrunk {
        address: crate::sip::locate::SipTarget::at(trunk_addr, transport),
        backups: Vec::new(),
        domain: Some("trunk.test".into()),
        from: "37160000000".into(),
        credentials: Some(crate::sip::auth::Credentials {
            username: "callflow".into(),
            password: "s3cret".into(),
        }),
        srtp,
    });
    config.outbound_media =
        crate::sip::admission::Networks::new(vec![ipnet::IpNet::from(trunk_addr.ip())]);
    config.ring_timeout = Duration::from_secs(5);
    let mut lab = Lab::new(config, loss, seed);
    let trunk = lab.add_peer(5080, "unused");
    lab.peers[trunk].invite_answers = answers;
    let wall = chrono::DateTime::parse_from_rfc3339("2026-12-03T08:59:00Z")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    let now = lab.now;
    lab.endpoint.dial(
        now,
        Callback {
            id: 42,
            number: "37120000000".into(),
            queue: "support".into(),
            priority: 3,
            context: vec![("intent".into(), "billing".into())],
            requested_at: wall,
            not_before: None,
            not_after: None,
            state: State::Dialling,
            attempts: 1,
            next_attempt_at: wall,
            updated_at: wall,
            last_error: None,
        },
    );
    lab
}

/// A callback through a trunk with `srtp: true`, over TLS: the callee is
/// offered `RTP/SAVP` only, and what it hears is sealed with our key and
/// is the callback's greeting once opened.
#[test]
fn a_callback_through_an_srtp_trunk_is_offered_and_sent_srtp() {
    use crate::sip::sdp::sdes::SdesKey;
    let mut lab = dialled_through(
        0.0,
        3,
        vec![200],
        crate::sip::transport::Transport::Tls,
        true,
    );
    lab.peers[0].tls = true;
    lab.peers[0].srtp_key = Some(SdesKey([4; 30]));
    let callee_rtp = lab.peers[0].rtp;
    lab.sealers
        .insert(callee_rtp, lab::srtp_context(&SdesKey([4; 30])));
    lab.run_for(Duration::from_secs(3));
    let invite = lab.peers[0]
        .received
        .iter()
        .find(|m| m.is_request() && m.method() == Method::Invite)
        .expect("the callee got our INVITE");
    let offer = String::from_utf8_lossy(&invite.body).to_string();
    assert!(
        offer.contains(" RTP/SAVP 0 8 101\r\n") && offer.contains("a=crypto:1 "),
        "{offer}"
    );
    let ours = lab.peers[0].endpoint_srtp_key().expect("our key");
    let mut open = lab::srtp_context(&ours);
    let packets = lab.rtp[0].len();
    assert!(packets >= 20, "the greeting is sent: {packets}");
    let mut audible = 0;
    for p in &lab.rtp[0] {
        let plain = open.decrypt_rtp(&p.bytes).expect("all of it sealed");
        if plain[12..].iter().any(|b| *b != 0xff && *b != 0x7f) {
            audible += 1;
        }
    }
    assert!(audible >= 10, "the greeting, once opened: {audible}");
}

/// `srtp: true` on a trunk reached without TLS never sends keys: the
/// attempt fails with why (the configuration check refuses this too).
#[test]
fn a_callback_through_an_srtp_trunk_without_tls_is_not_placed() {
    let mut lab = dialled_through(
        0.0,
        3,
        vec![200],
        crate::sip::transport::Transport::Udp,
        true,
    );
    lab.run_for(Duration::from_secs(1));
    assert!(
        lab.peers[0].received.is_empty(),
        "no INVITE with keys over UDP"
    );
    assert!(
        matches!(&lab.settled[..], [AttemptOutcome::Failed(why)] if why.contains("SRTP needs TLS")),
        "{:?}",
        lab.settled
    );
}

/// A booked callback dialled through a trunk that challenges with 407:
/// answered, key 1, REFER to the queue, NOTIFY, and the promise is kept.
fn callback_journey(loss: f64, seed: u64) {
    let mut lab = dialled(loss, seed, vec![407, 200]);
    let trunk = 0;
    lab.run_until(Duration::from_secs(60), |l| {
        l.peers[trunk].confirmed_at.is_some()
    });
    lab.run_for(Duration::from_millis(300));
    lab.press(trunk, 1, 777);
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    lab.run_for(Duration::from_secs(40));
    let invites = lab.peers[trunk]
        .received
        .iter()
        .filter(|m| m.is_request() && m.method() == Method::Invite)
        .collect::<Vec<_>>();
    assert!(
        invites
            .iter()
            .any(|m| m.header("Proxy-Authorization").is_some()),
        "seed {seed}: the 407 was answered with credentials"
    );
    let record = first_record(&lab, seed);
    assert_eq!(
        record.outcome,
        CallOutcome::Transferred,
        "seed {seed}: {record:?}"
    );
    assert_eq!(lab.settled, vec![AttemptOutcome::Completed], "seed {seed}");
    let refer = lab.peers[trunk]
        .received
        .iter()
        .find(|m| m.is_request() && m.method() == Method::Refer)
        .unwrap_or_else(|| panic!("seed {seed}: no REFER"));
    let target = refer.header("Refer-To").unwrap_or_default();
    assert!(target.contains("X-Context-callback_id=42"), "{target}");
    assert!(target.contains("X-Context-intent=billing"), "{target}");
    assert!(lab.open_ports.is_empty());
}

/// A busy callee, and one who lets it ring out: typed outcomes in the
/// record, and the attempt settled as such (the store retries them).
#[test]
fn a_busy_or_unanswered_callee_is_recorded_and_settled_as_such() {
    let mut lab = dialled(0.0, 1, vec![407, 486]);
    lab.run_until(Duration::from_secs(30), |l| !l.records.is_empty());
    assert_eq!(
        lab.records[0].outcome,
        CallOutcome::Busy,
        "{:?}",
        lab.records[0]
    );
    assert_eq!(lab.settled, vec![AttemptOutcome::Busy]);
    assert!(lab.open_ports.is_empty());

    let mut lab = dialled(LOSS, 3, vec![407, 180]);
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    let r = &lab.records[0];
    assert_eq!(
        (r.outcome, r.detail.as_str()),
        (CallOutcome::NoAnswer, "ring timeout")
    );
    assert_eq!(lab.settled, vec![AttemptOutcome::NoAnswer]);
    assert!(
        lab.peers[0].requests(Method::Cancel) > 0,
        "our CANCEL at the ring timeout"
    );
}

#[test]
fn a_callback_dialled_through_a_challenging_trunk_keeps_its_promise() {
    callback_journey(0.0, 1);
}

#[test]
fn a_callback_keeps_its_promise_at_ten_percent_loss() {
    for seed in SEEDS {
        callback_journey(LOSS, seed);
    }
}

/// Two hundred calls at once, paced from the endpoint's one heap: every
/// caller hears its greeting at exactly 20 ms intervals (time is virtual,
/// so any lateness is the scheduler's), and every call transfers.
#[test]
fn two_hundred_calls_at_once_are_each_paced_exactly_and_all_transfer() {
    const CALLS: u16 = 200;
    let mut lab = Lab::new(lab::config(), 0.0, 9);
    for i in 0..CALLS {
        let peer = lab.add_peer(6000 + i, &format!("many-{i}@peer"));
        let now = lab.now;
        lab.peers[peer].invite(now, "800");
    }
    lab.run_until(Duration::from_secs(10), |l| {
        l.peers.iter().all(|p| p.answered_at.is_some())
    });
    lab.run_for(Duration::from_millis(300));
    for i in 0..usize::from(CALLS) {
        lab.press(i, 0, 1000 + i as u32);
    }
    lab.run_until(Duration::from_secs(60), |l| {
        l.records.len() == usize::from(CALLS)
    });
    assert_eq!(lab.max_late, Duration::ZERO, "no packet left late");
    for (i, packets) in lab.rtp.iter().enumerate() {
        assert!(packets.len() >= 10, "call {i}: {} packets", packets.len());
        for pair in packets.windows(2).take(10) {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert_eq!(gap, Duration::from_millis(20), "call {i}");
        }
    }
    let transferred = lab
        .records
        .iter()
        .filter(|r| r.outcome == CallOutcome::Transferred)
        .count();
    assert_eq!(transferred, usize::from(CALLS));
    lab.run_for(Duration::from_secs(40));
    assert!(lab.open_ports.is_empty() && lab.endpoint.is_idle());
}

/// Compares `bytes` with the CRLF-exact fixture `name`; with
/// `UPDATE_FIXTURES=1` in the environment, writes it instead.
fn golden(name: &str, bytes: &[u8]) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/endpoint")
        .join(name);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        want == bytes,
        "{name} differs from what the endpoint sent:\n--- fixture\n{}\n--- sent\n{}",
        String::from_utf8_lossy(&want),
        String::from_utf8_lossy(bytes)
    );
}

/// What we send, byte for byte: with a seeded random source, the tags,
/// branches and SDP of a call are the same on every run.
#[test]
fn what_we_send_in_a_transferred_call_matches_the_golden_fixtures() {
    let mut lab = called(0.0, 11, "800");
    answered(&mut lab);
    lab.run_for(Duration::from_millis(300));
    lab.press(0, 0, 4242);
    lab.run_until(Duration::from_secs(30), |l| !l.records.is_empty());
    lab.run_for(Duration::from_secs(1));
    let peer = &lab.peers[0];
    assert_eq!(peer.requests(Method::Refer), 1, "one REFER, never resent");
    let sent = |pick: &dyn Fn(&crate::sip::message::Message) -> bool| {
        peer.received
            .iter()
            .position(pick)
            .map(|i| peer.raw[i].clone())
            .unwrap_or_default()
    };
    golden(
        "invite-200.sip",
        &sent(&|m| m.status() == Some(200) && m.method() == Method::Invite),
    );
    golden(
        "refer.sip",
        &sent(&|m| m.is_request() && m.method() == Method::Refer),
    );
    golden(
        "notify-200.sip",
        &sent(&|m| m.status() == Some(200) && m.method() == Method::Notify),
    );
    golden(
        "bye.sip",
        &sent(&|m| m.is_request() && m.method() == Method::Bye),
    );
}

/// The core never imports the runtime: only `src/server` (and the CLI)
/// may name tokio, so that every call can be driven as above.
#[test]
fn the_core_never_imports_tokio() {
    fn visit(dir: &std::path::Path, offenders: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                visit(&path, offenders);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // Spelt in two halves so this file does not match itself.
                if text.contains(concat!("tok", "io::")) {
                    offenders.push(path.display().to_string());
                }
            }
        }
    }
    let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for core in ["call", "sip", "media", "flow", "callback"] {
        visit(&src.join(core), &mut offenders);
    }
    assert!(offenders.is_empty(), "tokio in the core: {offenders:?}");
}
