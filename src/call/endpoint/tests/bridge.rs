//! The bridge hand-off in the lab: the caller (peer 0) reaches the ACD
//! (peer 1, at the queue's URI) through a call we place, and the audio and
//! RFC 4733 events are relayed both ways.

use std::time::Duration;

use super::lab::Lab;
use super::{answered, called, clean_then_lossy, first_record, LOSS, SEEDS};
use crate::call::record::{CallOutcome, Party};
use crate::flow::model::Handoff;
use crate::sip::message::{Message, Method};

/// The ACD's SIP port, as the `bridge` flow's queues name it.
const ACD: u16 = 5391;

/// A caller on the `bridge` flow and an ACD answering as `answers` say;
/// the caller's trunk answers REFER with `refer`.
fn bridged_lab(loss: f64, seed: u64, answers: Vec<u16>, refer: (u16, u16)) -> Lab {
    let mut lab = called(loss, seed, "802");
    lab.peers[0].refer_answer = refer;
    let acd = lab.add_peer(ACD, "unused");
    lab.peers[acd].invite_answers = answers;
    // The ACD numbers its events differently: the relay renumbers them.
    lab.peers[acd].dtmf_pt = 96;
    answered(&mut lab);
    lab.run_for(Duration::from_millis(300));
    lab
}

/// The INVITE the ACD received.
fn acd_invite(lab: &Lab) -> &Message {
    lab.peers[1]
        .received
        .iter()
        .find(|m| m.is_request() && m.method() == Method::Invite)
        .unwrap_or_else(|| panic!("the ACD got no INVITE"))
}

/// Runs until the ACD's answer is confirmed by our ACK.
fn agent_answered(lab: &mut Lab, seed: u64) {
    lab.run_until(Duration::from_secs(60), |l| {
        l.peers[1].confirmed_at.is_some()
    });
    assert!(
        lab.peers[1].confirmed_at.is_some(),
        "seed {seed}: the ACD's answer was never ACKed"
    );
    // Our ACK may still be on its way when the ACD's 200 went out again.
    lab.run_for(Duration::from_millis(500));
}

/// Packets peer `peer` received with payload `fill` in their first byte.
fn heard(lab: &Lab, peer: usize, ssrc: u32) -> usize {
    lab.rtp[peer]
        .iter()
        .filter(|p| p.bytes.len() > 12 && p.bytes[8..12] == ssrc.to_be_bytes())
        .count()
}

/// Key 0: the ACD gets our INVITE with the context, answers; audio and
/// keys flow both ways; the agent hangs up and so does the caller's leg.
/// With `fast`, the lab relays by the endpoint's relay rules as the edge
/// does; without, every packet goes through the endpoint.
fn bridge_journey(loss: f64, seed: u64, fast: bool) {
    let mut lab = bridged_lab(loss, seed, vec![200], (202, 200));
    lab.fast_relay = fast;
    lab.press(0, 0, 4000);
    agent_answered(&mut lab, seed);

    let invite = acd_invite(&lab);
    assert_eq!(invite.header("X-Queue"), Some("agents"), "seed {seed}");
    assert_eq!(invite.header("X-Priority"), Some("7"));
    assert_eq!(invite.header("X-Context-intent"), Some("billing"));
    assert!(invite.header("X-Context-path").is_some());
    let uui = invite.header("User-to-User").unwrap_or_default();
    assert!(
        uui.starts_with("0471756575653d6167656e7473")
            && uui.ends_with(";encoding=hex;purpose=isdn-uui"),
        "IA5 `queue=agents...`, hex: {uui}"
    );
    assert!(
        invite
            .header("From")
            .unwrap_or_default()
            .contains("sip:37120000000@"),
        "the agent sees the caller's number"
    );
    let offer = String::from_utf8_lossy(&invite.body).to_string();
    assert!(
        offer.contains("m=audio 30004 RTP/AVP 0 101\r\n"),
        "the caller's codec alone: {offer}"
    );
    assert_eq!(
        lab.peers[0].requests(Method::Refer),
        0,
        "bridged, not referred"
    );

    // Caller to agent, and agent to caller.
    let before = lab.rtp[0].len();
    lab.speak(0, 50, 0xCA11_E500, 0x11);
    lab.speak(1, 50, 0xA6E7_0001, 0x22);
    lab.run_for(Duration::from_secs(2));
    let (to_agent, to_caller) = (heard(&lab, 1, 0xCA11_E500), heard(&lab, 0, 0xA6E7_0001));
    let floor = if loss > 0.0 { 25 } else { 50 };
    assert!(
        to_agent >= floor,
        "seed {seed}: {to_agent} of the caller's 50 packets reached the agent"
    );
    assert!(
        to_caller >= floor,
        "seed {seed}: {to_caller} of the agent's 50 reached the caller"
    );
    assert!(
        lab.rtp[0][before..]
            .iter()
            .all(|p| p.bytes[8..12] == 0xA6E7_0001u32.to_be_bytes()),
        "seed {seed}: no prompt audio once bridged"
    );
    // The agent's key, sent as payload type 96, reaches the caller as 101.
    lab.press(1, 5, 9000);
    lab.run_for(Duration::from_millis(500));
    let events: Vec<_> = lab.rtp[0]
        .iter()
        .filter(|p| p.bytes[1] & 0x7f == 101)
        .collect();
    if loss == 0.0 {
        assert_eq!(events.len(), 6, "every event packet relayed");
        assert!(events.iter().all(|p| p.bytes[12] == 5));
    }
    if fast && loss == 0.0 {
        // The first packet of each stream latches it: the endpoint's. The
        // rules take the rest (the events have an SSRC of their own).
        assert_eq!(lab.fast_relayed, 49 + 49 + 5, "seed {seed}");
    } else if !fast {
        assert_eq!(lab.fast_relayed, 0);
    }

    let now = lab.now;
    lab.peers[1].in_dialog(now, "BYE", "", "");
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    lab.run_for(Duration::from_secs(40));
    assert!(
        lab.peers[0].got_bye,
        "seed {seed}: the caller's leg ended too"
    );
    let record = first_record(&lab, seed);
    assert_eq!(
        record.outcome,
        CallOutcome::Transferred,
        "seed {seed}: {record:?}"
    );
    assert_eq!(record.detail, "agents");
    assert_eq!(record.handoff, Some(Handoff::Bridge));
    assert_eq!(record.hung_up_by, Some(Party::Agent));
    assert!(record.agent_answer.is_some(), "when the agent answered");
    assert!(lab.open_ports.is_empty(), "seed {seed}: both ports freed");
    assert!(lab.endpoint.is_idle(), "seed {seed}: nothing left");
}

#[test]
fn a_bridged_call_relays_audio_and_keys_both_ways_and_ends_with_the_agent() {
    bridge_journey(0.0, 1, true);
}

#[test]
fn a_bridged_call_holds_together_at_ten_percent_loss() {
    for seed in SEEDS {
        bridge_journey(LOSS, seed, true);
    }
}

/// The endpoint's own relay, which the rules stand in for, carries the
/// same journey alone (an edge that never applies a rule).
#[test]
fn the_endpoint_relays_a_bridged_call_by_itself_too() {
    bridge_journey(0.0, 1, false);
    for seed in SEEDS.take(5) {
        bridge_journey(LOSS, seed, false);
    }
}

/// The caller hangs up a bridged call: the agent gets our BYE.
fn caller_hangs_up_journey(loss: f64, seed: u64) {
    let mut lab = bridged_lab(loss, seed, vec![200], (202, 200));
    lab.press(0, 0, 4000);
    agent_answered(&mut lab, seed);
    let now = lab.now;
    lab.peers[0].in_dialog(now, "BYE", "", "");
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    lab.run_for(Duration::from_secs(40));
    assert!(lab.peers[1].got_bye, "seed {seed}: the agent's leg ended");
    let record = first_record(&lab, seed);
    assert_eq!(record.outcome, CallOutcome::Transferred);
    assert_eq!(record.hung_up_by, Some(Party::Caller));
    assert!(lab.open_ports.is_empty() && lab.endpoint.is_idle());
}

#[test]
fn a_caller_hanging_up_a_bridged_call_ends_the_agents_leg_even_at_ten_percent_loss() {
    clean_then_lossy(caller_hangs_up_journey);
}

/// The trunk refuses REFER (405): the queue's `refer_then_bridge` places
/// the call itself, and the record says why.
fn refer_refused_journey(loss: f64, seed: u64) {
    let mut lab = bridged_lab(loss, seed, vec![200], (405, 0));
    lab.press(0, 2, 4000);
    agent_answered(&mut lab, seed);
    assert!(lab.peers[0].requests(Method::Refer) >= 1, "REFER first");
    let invite = acd_invite(&lab);
    assert_eq!(invite.header("X-Context-intent"), Some("refund"));
    assert!(
        invite.header("User-to-User").is_none(),
        "this queue sends no UUI"
    );
    let now = lab.now;
    lab.peers[1].in_dialog(now, "BYE", "", "");
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    let record = first_record(&lab, seed);
    assert_eq!(
        record.outcome,
        CallOutcome::Transferred,
        "seed {seed}: {record:?}"
    );
    assert_eq!(record.handoff, Some(Handoff::Bridge));
    assert!(
        record
            .refer_failed
            .as_deref()
            .is_some_and(|r| r.contains("405")),
        "seed {seed}: {:?}",
        record.refer_failed
    );
}

#[test]
fn a_refused_refer_falls_back_to_a_bridge_even_at_ten_percent_loss() {
    clean_then_lossy(refer_refused_journey);
}

/// A busy ACD: the transfer fails, the flow's `on_fail` plays, and the
/// agent leg's port is freed at once.
#[test]
fn a_busy_queue_takes_the_flows_on_fail_and_frees_the_agent_port() {
    let mut lab = bridged_lab(0.0, 2, vec![486], (202, 200));
    lab.press(0, 0, 4000);
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    lab.run_for(Duration::from_secs(5));
    let record = &lab.records[0];
    assert_eq!(record.outcome, CallOutcome::Completed, "{record:?}");
    assert!(
        record.nodes.contains(&"bridge.fallback".to_string()),
        "{:?}",
        record.nodes
    );
    assert_eq!(record.handoff, None);
    assert!(lab.open_ports.is_empty() && lab.endpoint.is_idle());
}

/// The caller hangs up while the queue still rings: our CANCEL reaches it.
#[test]
fn a_caller_hanging_up_while_the_queue_rings_cancels_the_agents_leg() {
    let mut lab = bridged_lab(0.0, 3, vec![180], (202, 200));
    lab.press(0, 0, 4000);
    lab.run_until(Duration::from_secs(10), |l| {
        l.peers[1].requests(Method::Invite) > 0
    });
    lab.run_for(Duration::from_millis(500));
    let now = lab.now;
    lab.peers[0].in_dialog(now, "BYE", "", "");
    lab.run_until(Duration::from_secs(60), |l| !l.records.is_empty());
    lab.run_for(Duration::from_secs(40));
    assert!(lab.peers[1].requests(Method::Cancel) > 0, "our CANCEL");
    let record = &lab.records[0];
    assert_eq!(record.outcome, CallOutcome::CallerHungUp, "{record:?}");
    assert_eq!(record.hung_up_by, Some(Party::Caller));
    assert!(lab.open_ports.is_empty() && lab.endpoint.is_idle());
}

/// The agent puts the caller on hold with a re-INVITE: the agent's leg
/// answers it (as a leg we placed, it has its own media session), the
/// caller's audio stops going to the agent, and comes back on resume.
#[test]
fn the_agent_can_hold_and_resume_a_bridged_call() {
    let mut lab = bridged_lab(0.0, 4, vec![200], (202, 200));
    lab.press(0, 0, 4000);
    agent_answered(&mut lab, 4);
    let held = lab.peers[1].sdp().replace("a=sendrecv", "a=sendonly");
    let now = lab.now;
    lab.peers[1].in_dialog(now, "INVITE", "", &held);
    lab.run_for(Duration::from_millis(500));
    assert_eq!(
        lab.peers[1].finals(Method::Invite),
        vec![200],
        "the hold re-INVITE is answered"
    );
    let answer = lab.peers[1].remote_sdp.clone().unwrap_or_default();
    assert!(answer.contains("a=recvonly"), "{answer}");
    assert!(
        answer.contains("m=audio 30004 RTP/AVP 0 96\r\n"),
        "the caller's codec alone, the agent's event numbering: {answer}"
    );
    lab.speak(0, 20, 0xCA11_E501, 0x11);
    lab.run_for(Duration::from_secs(1));
    assert_eq!(
        heard(&lab, 1, 0xCA11_E501),
        0,
        "nothing sent to a held agent"
    );
    let caller_port = lab.open_ports[0];
    assert!(
        !lab.relays.contains_key(&caller_port),
        "no rule sends to a held agent"
    );
    let resumed = lab.peers[1].sdp().replace("o=peer 1 1", "o=peer 1 2");
    let now = lab.now;
    lab.peers[1].in_dialog(now, "INVITE", "", &resumed);
    lab.run_for(Duration::from_millis(500));
    assert_eq!(lab.peers[1].finals(Method::Invite), vec![200, 200]);
    // The same stream (a phone keeps its SSRC; the latch holds it).
    let relayed = lab.fast_relayed;
    lab.speak(0, 20, 0xCA11_E501, 0x11);
    lab.run_for(Duration::from_secs(1));
    assert_eq!(heard(&lab, 1, 0xCA11_E501), 20, "audio again once resumed");
    assert_eq!(
        lab.fast_relayed,
        relayed + 20,
        "by the rule given back on resume"
    );
}

/// The caller switches to PCMA with a re-INVITE while bridged to an agent
/// on PCMU: the agent still gets PCMU, re-encoded (A-law silence arrives
/// as mu-law near-silence), never A-law bytes under a mu-law label (which
/// would play as a loud buzz).
#[test]
fn a_caller_who_switches_law_mid_bridge_is_transcoded_for_the_agent() {
    let mut lab = bridged_lab(0.0, 5, vec![200], (202, 200));
    lab.press(0, 0, 4000);
    agent_answered(&mut lab, 5);
    let pcma = lab.peers[0]
        .sdp()
        .replace("RTP/AVP 0 101", "RTP/AVP 8 101")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000")
        .replace("o=peer 1 1", "o=peer 1 2");
    let now = lab.now;
    lab.peers[0].in_dialog(now, "INVITE", "", &pcma);
    lab.run_for(Duration::from_millis(500));
    assert_eq!(lab.peers[0].finals(Method::Invite), vec![200, 200]);
    lab.peers[0].audio_pt = 8;
    let relayed = lab.fast_relayed;
    lab.speak(0, 10, 0xCA11_E500, 0xD5);
    lab.run_for(Duration::from_secs(1));
    let got: Vec<_> = lab.rtp[1]
        .iter()
        .filter(|p| p.bytes[8..12] == 0xCA11_E500u32.to_be_bytes())
        .collect();
    assert_eq!(got.len(), 10);
    for p in got {
        assert_eq!(p.bytes[1] & 0x7f, 0, "labelled PCMU");
        assert!(
            p.bytes[12..]
                .iter()
                .all(|b| crate::media::g711::ulaw_to_linear(*b).abs() <= 16),
            "mu-law (near) silence: {:?}",
            &p.bytes[12..16]
        );
    }
    assert_eq!(
        lab.fast_relayed,
        relayed + 9,
        "transcoded by the rule once the first packet latched the audio"
    );
}

/// Audio the rules relay keeps a bridged call alive past the silence limit
/// (60 s in the lab) although the endpoint never sees it; when both sides
/// fall silent, the call ends by that limit all the same.
#[test]
fn relayed_audio_keeps_a_bridged_call_alive_and_silence_still_ends_it() {
    let mut lab = bridged_lab(0.0, 8, vec![200], (202, 200));
    lab.press(0, 0, 4000);
    agent_answered(&mut lab, 8);
    let minute_and_a_half = 90 * 50;
    lab.speak(0, minute_and_a_half, 0xCA11_E500, 0x11);
    lab.speak(1, minute_and_a_half, 0xA6E7_0001, 0x22);
    lab.run_for(Duration::from_secs(91));
    assert!(lab.records.is_empty(), "{:?}", lab.records.first());
    assert!(
        lab.fast_relayed >= 2 * u64::from(minute_and_a_half) - 2,
        "{} relayed by the rules",
        lab.fast_relayed
    );
    assert!(!lab.peers[0].got_bye && !lab.peers[1].got_bye);
    lab.run_until(Duration::from_secs(65), |l| !l.records.is_empty());
    lab.run_for(Duration::from_secs(1));
    assert!(lab.peers[0].got_bye && lab.peers[1].got_bye);
    assert_eq!(lab.records[0].hung_up_by, Some(Party::Callflow));
}

/// A shutdown while bridged: when the drain time is over, both legs get
/// our BYE and both ports are freed; no agent is left talking to no one.
#[test]
fn a_drain_ends_both_legs_of_a_bridged_call() {
    let mut lab = bridged_lab(0.0, 6, vec![200], (202, 200));
    lab.press(0, 0, 4000);
    agent_answered(&mut lab, 6);
    let now = lab.now;
    lab.endpoint.drain(now, now + Duration::from_secs(2));
    // Until the drain is over: past it the server stops calling the
    // endpoint (its deadline stays in the past).
    lab.run_until(Duration::from_secs(30), |l| {
        l.endpoint.drain_finished(l.now)
    });
    assert!(lab.peers[0].got_bye, "the caller's leg");
    assert!(lab.peers[1].got_bye, "the agent's leg");
    let r = &lab.records[0];
    assert_eq!(r.hung_up_by, Some(Party::Callflow), "{r:?}");
    assert!(lab.open_ports.is_empty() && lab.endpoint.is_idle());
    assert!(lab.endpoint.drain_finished(lab.now));
}

/// The agent's side may not move our audio: a re-INVITE naming an address
/// outside the queue's networks gets 488, and the relay keeps going where
/// it went.
#[test]
fn an_agent_re_invite_pointing_elsewhere_is_refused() {
    let mut lab = bridged_lab(0.0, 7, vec![200], (202, 200));
    lab.press(0, 0, 4000);
    agent_answered(&mut lab, 7);
    let elsewhere = lab.peers[1]
        .sdp()
        .replace("c=IN IP4 127.0.0.2", "c=IN IP4 192.0.2.99")
        .replace("o=peer 1 1", "o=peer 1 2");
    let now = lab.now;
    lab.peers[1].in_dialog(now, "INVITE", "", &elsewhere);
    lab.run_for(Duration::from_millis(500));
    assert_eq!(lab.peers[1].finals(Method::Invite), vec![488]);
    lab.speak(0, 10, 0xCA11_E500, 0x11);
    lab.run_for(Duration::from_secs(1));
    assert_eq!(
        heard(&lab, 1, 0xCA11_E500),
        10,
        "still relayed to the agent"
    );
}

/// A caller on SRTP (over TLS) bridged to an ACD on plain RTP: the agent
/// gets the caller's audio decrypted, the caller the agent's encrypted
/// with our key, and the ACD is offered plain RTP.
#[test]
fn an_srtp_caller_is_bridged_to_a_plain_rtp_agent() {
    use crate::sip::sdp::sdes::SdesKey;
    let mut lab = Lab::new(super::lab::config(), 0.0, 5);
    lab.add_peer(5070, "srtp-bridge@peer");
    lab.peers[0].tls = true;
    lab.peers[0].srtp_key = Some(SdesKey([7; 30]));
    let caller_rtp = lab.peers[0].rtp;
    lab.sealers
        .insert(caller_rtp, super::lab::srtp_context(&SdesKey([7; 30])));
    let acd = lab.add_peer(ACD, "unused");
    lab.peers[acd].invite_answers = vec![200];
    lab.peers[acd].dtmf_pt = 96;
    let now = lab.now;
    lab.peers[0].invite(now, "802");
    answered(&mut lab);
    lab.run_for(Duration::from_millis(300));
    lab.press(0, 0, 4000);
    agent_answered(&mut lab, 5);
    let offer = String::from_utf8_lossy(&acd_invite(&lab).body).to_string();
    assert!(
        offer.contains(" RTP/AVP 0 101\r\n") && !offer.contains("a=crypto"),
        "the ACD is offered plain RTP: {offer}"
    );
    let before = lab.rtp[0].len();
    lab.speak(0, 50, 0xCA11_E500, 0x11);
    lab.speak(1, 50, 0xA6E7_0001, 0x22);
    lab.run_for(Duration::from_secs(2));
    let to_agent: Vec<&[u8]> = lab.rtp[1]
        .iter()
        .filter(|p| p.bytes.len() > 12 && p.bytes[8..12] == 0xCA11_E500u32.to_be_bytes())
        .map(|p| &p.bytes[12..])
        .collect();
    assert_eq!(to_agent.len(), 50);
    assert!(to_agent
        .iter()
        .all(|payload| payload.iter().all(|b| *b == 0x11)));
    let ours = lab.peers[0].endpoint_srtp_key().expect("our key");
    let mut open = super::lab::srtp_context(&ours);
    let mut from_agent = Vec::new();
    for (i, p) in lab.rtp[0].iter().enumerate() {
        let plain = open
            .decrypt_rtp(&p.bytes)
            .expect("all the caller gets is sealed");
        if i >= before && plain[12..].iter().all(|b| *b == 0x22) {
            assert_ne!(&p.bytes[12..172], &plain[12..], "sent encrypted");
            from_agent.push(plain);
        }
    }
    assert_eq!(from_agent.len(), 50);
    assert!(
        lab.relays.is_empty() && lab.fast_relayed == 0,
        "sealing and opening SRTP is the endpoint's alone"
    );
    // Relayed under a source and sequence of ours: the ACD's numbering
    // never drives our keystream.
    assert!(from_agent
        .iter()
        .all(|p| p[8..12] != 0xA6E7_0001u32.to_be_bytes() && p[8..12] == from_agent[0][8..12]));
    let seqs: Vec<u16> = from_agent
        .iter()
        .map(|p| u16::from_be_bytes([p[2], p[3]]))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{seqs:?}"
    );
}

/// The test flows with the `bridge` flow's `agents` queue reached over TLS
/// with `srtp: true`.
fn srtp_queue_runtime() -> std::sync::Arc<crate::call::runtime::Runtime> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root.join("tests/sipp/flows")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let bridge = dir.path().join("bridge.yaml");
    let flow = std::fs::read_to_string(&bridge).unwrap().replacen(
        "    uri: \"sip:agents@127.0.0.2:5391\"\n    priority: 7\n",
        "    uri: \"sip:agents@127.0.0.2:5391;transport=tls\"\n    srtp: true\n    priority: 7\n",
        1,
    );
    assert!(flow.contains("srtp: true"), "{flow}");
    std::fs::write(&bridge, flow).unwrap();
    let runtime = crate::call::runtime::Runtime::load(dir.path(), &root.join("prompts"));
    std::sync::Arc::new(runtime.unwrap_or_else(|e| panic!("the flows load: {e}")))
}

/// A plain caller bridged to a queue with `srtp: true`: the ACD is offered
/// `RTP/SAVP` only, with our key; it gets the caller's audio sealed with
/// that key, and the caller gets the agent's audio opened.
#[test]
fn a_queue_with_srtp_gets_the_bridged_call_encrypted() {
    use crate::sip::sdp::sdes::SdesKey;
    let mut lab = Lab::with_runtime(super::lab::config(), srtp_queue_runtime(), 0.0, 9);
    lab.add_peer(5070, "srtp-acd@peer");
    let acd = lab.add_peer(ACD, "unused");
    lab.peers[acd].invite_answers = vec![200];
    lab.peers[acd].tls = true;
    lab.peers[acd].srtp_key = Some(SdesKey([9; 30]));
    let acd_rtp = lab.peers[acd].rtp;
    lab.sealers
        .insert(acd_rtp, super::lab::srtp_context(&SdesKey([9; 30])));
    let now = lab.now;
    lab.peers[0].invite(now, "802");
    answered(&mut lab);
    lab.run_for(Duration::from_millis(300));
    lab.press(0, 0, 4000);
    agent_answered(&mut lab, 9);
    let offer = String::from_utf8_lossy(&acd_invite(&lab).body).to_string();
    assert!(
        offer.contains(" RTP/SAVP 0 101\r\n")
            && offer.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "the ACD is offered SRTP: {offer}"
    );
    let ours = lab.peers[acd].endpoint_srtp_key().expect("our key");
    lab.speak(0, 50, 0xCA11_E500, 0x11);
    lab.speak(acd, 50, 0xA6E7_0001, 0x22);
    lab.run_for(Duration::from_secs(2));
    // All the ACD gets is sealed with our key, the caller's audio inside.
    let mut open = super::lab::srtp_context(&ours);
    let mut from_caller = 0;
    for p in &lab.rtp[acd] {
        let plain = open.decrypt_rtp(&p.bytes).expect("sealed");
        if plain[12..].iter().all(|b| *b == 0x11) {
            assert_ne!(&p.bytes[12..172], &plain[12..], "sent encrypted");
            from_caller += 1;
        }
    }
    assert_eq!(from_caller, 50);
    // The caller, on plain RTP, hears the agent in the clear.
    assert_eq!(heard(&lab, 0, 0xA6E7_0001), 50);
    assert!(lab.rtp[0]
        .iter()
        .filter(|p| p.bytes[8..12] == 0xA6E7_0001u32.to_be_bytes())
        .all(|p| p.bytes[12..].iter().all(|b| *b == 0x22)));
}

/// An ACD that answers our SRTP offer in the clear is not bridged to: the
/// call is ended with it, and the caller goes on to the transfer's
/// `on_fail`.
#[test]
fn a_queue_with_srtp_answering_in_the_clear_is_not_bridged() {
    let mut lab = Lab::with_runtime(super::lab::config(), srtp_queue_runtime(), 0.0, 11);
    lab.add_peer(5070, "srtp-acd-plain@peer");
    let acd = lab.add_peer(ACD, "unused");
    lab.peers[acd].invite_answers = vec![200];
    lab.peers[acd].tls = true;
    let now = lab.now;
    lab.peers[0].invite(now, "802");
    answered(&mut lab);
    lab.run_for(Duration::from_millis(300));
    lab.press(0, 0, 4000);
    lab.run_for(Duration::from_secs(5));
    assert!(lab.peers[acd].got_bye, "the plain answer's call is ended");
    lab.speak(acd, 20, 0xA6E7_0001, 0x22);
    lab.run_for(Duration::from_secs(1));
    assert_eq!(heard(&lab, 0, 0xA6E7_0001), 0, "nothing relayed");
    lab.run_for(Duration::from_secs(10));
    let record = first_record(&lab, 11);
    assert_ne!(record.outcome, CallOutcome::Transferred, "{record:?}");
    assert!(
        record.nodes.iter().any(|n| n.ends_with("fallback")),
        "{record:?}"
    );
}
