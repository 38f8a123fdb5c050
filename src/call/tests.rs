//! A call driven on a fake clock: prompts go out as paced RTP, RFC 4733 keys
//! come in, the flow transfers, and the record says what happened.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};

use super::*;
use crate::flow::{load_sources, LoadOptions};
use crate::sip::sdp::{Codec, Direction, Negotiated};

const FLOW: &str = r#"
flow: t
start: hello
agent_key: "0"
agent: agent
queues: { support: { uri: "sip:support@acd.example.net", priority: 7 } }
nodes:
  hello: { play: digit-1, next: menu }
  menu:
    menu: { prompt: digit-2, options: { "1": agent }, timeout: 2s, retries: 0 }
    on_fail: bye
  agent:
    transfer: { queue: support, hold: digit-3, context: { path: "${path}" } }
    on_fail: bye
  bye: { hangup: {} }
"#;

fn call() -> (Call, Instant) {
    call_with_silence_limit(Duration::from_secs(60))
}

fn call_with_silence_limit(rtp_timeout: Duration) -> (Call, Instant) {
    call_with(Limits {
        rtp_timeout,
        ..Limits::default()
    })
}

/// What a test call may vary.
struct Limits {
    rtp_timeout: Duration,
    hold_timeout: Duration,
    max_duration: Duration,
    /// Where the caller's SDP puts its RTP.
    remote: &'static str,
    /// Latch the first source in the media networks (a caller behind NAT).
    latch_first: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rtp_timeout: Duration::from_secs(60),
            hold_timeout: Duration::from_secs(600),
            max_duration: Duration::from_secs(4 * 3600),
            remote: "127.0.0.1:6000",
            latch_first: false,
        }
    }
}

fn call_with(limits: Limits) -> (Call, Instant) {
    let Limits {
        rtp_timeout,
        hold_timeout,
        max_duration,
        remote,
        latch_first,
    } = limits;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let loaded = load_sources(
        &[(root.join("flows/t.yaml"), FLOW.to_string())],
        &LoadOptions {
            prompts_dir: root.join("prompts"),
        },
    );
    let (set, _) = loaded.into_result().unwrap();
    let prompts = PromptCache::load(&set.prompt_files).unwrap();
    let entry = set.start_of("t").unwrap();
    #[allow(clippy::disallowed_methods)] // a fake clock needs a base
    let started = Instant::now();
    let incoming = IncomingCall {
        call_id: "abc".into(),
        caller: "+37120000000".into(),
        called: "8000".into(),
        from: "<sip:+37120000000@x>;tag=1".into(),
        to: "<sip:8000@y>".into(),
        offer: None,
        source: "127.0.0.1:5070".parse().unwrap(),
        trunk: "local".into(),
        media_networks: crate::sip::admission::Networks::loopback(),
        secure: false,
    };
    let mut call = Call::new(CallSetup {
        incoming,
        flows: Arc::new(set),
        prompts: Arc::new(prompts),
        entry,
        started,
        started_wall: Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap(),
        rtp_seed: (0x1234, 100, 1000),
        rtp_timeout,
        vars: Vec::new(),
        callback: None,
        dialling: Default::default(),
        rtp_latch_first: latch_first,
        hold_timeout,
        max_duration,
    });
    call.set_media(Negotiated {
        codec: Codec::Pcmu,
        payload_type: 0,
        remote: remote.parse().unwrap(),
        dtmf_payload_type: Some(101),
        ptime_ms: 20,
        direction: Direction::SendRecv,
        srtp: None,
    });
    (call, started)
}

/// Where the caller's SDP said its RTP is.
fn caller_rtp() -> std::net::SocketAddr {
    "127.0.0.1:6000".parse().unwrap()
}

/// Sends every packet due until `until`; returns (time, packet) pairs.
fn pump(call: &mut Call, from: Instant, until: Instant) -> Vec<(Instant, Vec<u8>)> {
    let mut sent = Vec::new();
    let mut now = from;
    let mut buf = Vec::new();
    while let Some(t) = call.poll_timeout().filter(|t| *t <= until) {
        now = t.max(now);
        while call.poll_packet(now, &mut buf).is_some() {
            sent.push((now, buf.clone()));
        }
        call.handle_timeout(now);
    }
    sent
}

fn dtmf_packet(seq: u16, ts: u32, event: u8, end: bool) -> Vec<u8> {
    let mut p = vec![0x80, 101, (seq >> 8) as u8, seq as u8];
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0xabcdu32.to_be_bytes());
    p.extend_from_slice(&[event, if end { 0x80 | 10 } else { 10 }, 0x03, 0x20]);
    p
}

fn outputs(call: &mut Call) -> Vec<CallOutput> {
    std::iter::from_fn(|| call.poll_output()).collect()
}

#[test]
fn the_greeting_goes_out_as_paced_rtp_then_the_menu_follows() {
    let (mut call, t0) = call();
    call.on_sip(t0, UaEvent::Confirmed { answer: None });
    let welcome = call.prompts.duration(0).unwrap();
    let sent = pump(&mut call, t0, t0 + welcome + Duration::from_millis(500));
    let expected = welcome.as_millis().div_ceil(20) as usize;
    let first_prompt: Vec<_> = sent.iter().take(expected).collect();
    for (i, (at, p)) in first_prompt.iter().enumerate() {
        assert_eq!(
            *at - t0,
            Duration::from_millis(20 * i as u64),
            "packet {i} leaves at start + n*20ms"
        );
        assert_eq!(p.len(), 172);
    }
    // The menu prompt started right after, as a new talkspurt (marker bit).
    let next = &sent[expected].1;
    assert_eq!(
        next[1] & 0x80,
        0x80,
        "marker on the first packet of the next prompt"
    );
    let seq = |p: &Vec<u8>| u16::from_be_bytes([p[2], p[3]]);
    assert_eq!(
        seq(next),
        seq(&sent[expected - 1].1).wrapping_add(1),
        "sequence continues"
    );
}

#[test]
fn an_rfc4733_key_transfers_with_context_and_a_2xx_ends_the_call() {
    let (mut call, t0) = call();
    call.on_sip(t0, UaEvent::Confirmed { answer: None });
    let t1 = t0 + Duration::from_millis(300);
    pump(&mut call, t0, t1);
    // The key barges into the greeting and is kept for the menu.
    for (i, end) in [(0u16, false), (1, false), (2, true), (3, true), (4, true)] {
        call.on_rtp(t1, caller_rtp(), &dtmf_packet(i, 8000, 1, end));
    }
    let out = outputs(&mut call);
    assert_eq!(
        out,
        [CallOutput::Sip(CallCommand::Refer {
            target: "<sip:support@acd.example.net?X-Queue=support&X-Priority=7&X-Context-path=hello%3Emenu%3Eagent>".into(),
            headers: Vec::new(),
        })],
        "one key press, counted once"
    );
    call.on_sip(t1, UaEvent::TransferAccepted);
    call.on_sip(t1 + Duration::from_secs(1), UaEvent::TransferResult(Ok(())));
    let out = outputs(&mut call);
    assert_eq!(
        out[0],
        CallOutput::Sip(CallCommand::Hangup),
        "a 2xx sipfrag ends our side with BYE"
    );
    let CallOutput::Finished(record) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(record.outcome, CallOutcome::Transferred);
    assert_eq!(record.detail, "support");
    assert_eq!(record.digits, "1");
    assert_eq!(record.nodes, ["t.hello", "t.menu", "t.agent"]);
    assert_eq!(record.start, "2026-11-25T08:00:00.000Z");
    assert!(call.is_finished());
}

#[test]
fn a_caller_who_hangs_up_mid_prompt_is_recorded_at_that_node() {
    let (mut call, t0) = call();
    call.on_sip(t0, UaEvent::Confirmed { answer: None });
    pump(&mut call, t0, t0 + Duration::from_millis(100));
    call.on_sip(
        t0 + Duration::from_millis(100),
        UaEvent::Ended(EndReason::RemoteBye),
    );
    let out = outputs(&mut call);
    assert_eq!(out.len(), 1, "no BYE back to a caller who left");
    let CallOutput::Finished(record) = &out[0] else {
        panic!()
    };
    assert_eq!(
        (record.outcome, record.detail.as_str()),
        (CallOutcome::CallerHungUp, "t.hello")
    );
}

#[test]
fn no_rtp_from_the_caller_ends_the_call() {
    let (mut call, t0) = call_with_silence_limit(Duration::from_secs(1));
    call.on_sip(t0, UaEvent::Confirmed { answer: None });
    call.on_rtp(
        t0 + Duration::from_secs(1),
        caller_rtp(),
        &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    pump(&mut call, t0, t0 + Duration::from_secs(120));
    let out = outputs(&mut call);
    assert_eq!(out[0], CallOutput::Sip(CallCommand::Hangup));
    let CallOutput::Finished(r) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (r.outcome, r.end.as_str()),
        (CallOutcome::CallerHungUp, "2026-11-25T08:00:02.000Z")
    );
}

#[test]
fn an_ack_that_never_comes_is_a_failed_call_with_that_reason() {
    let (mut call, t0) = call();
    call.on_answered(t0);
    call.on_sip(
        t0 + Duration::from_secs(32),
        UaEvent::Ended(EndReason::AckTimeout),
    );
    let out = outputs(&mut call);
    assert_eq!(out.len(), 1, "the UA already sent its BYE: {out:?}");
    let CallOutput::Finished(r) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (r.outcome, r.detail.as_str()),
        (CallOutcome::Failed, "no ACK for the 200 OK")
    );
}

#[test]
fn keys_from_a_stranger_or_another_ssrc_are_ignored() {
    let (mut call, t0) = call();
    call.on_sip(t0, UaEvent::Confirmed { answer: None });
    let t1 = t0 + Duration::from_millis(300);
    pump(&mut call, t0, t1);
    let stranger: std::net::SocketAddr = "127.0.0.1:6002".parse().unwrap();
    for (i, end) in [(0u16, false), (1, true), (2, true), (3, true)] {
        call.on_rtp(t1, stranger, &dtmf_packet(i, 8000, 1, end));
    }
    // The caller's own events latch their SSRC; a second stream is not theirs.
    call.on_rtp(t1, caller_rtp(), &dtmf_packet(10, 4000, 5, false));
    let mut other = dtmf_packet(11, 9000, 1, true);
    other[8..12].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
    call.on_rtp(t1, caller_rtp(), &other);
    pump(&mut call, t1, t1 + Duration::from_millis(100));
    let out = outputs(&mut call);
    assert!(
        !out.iter()
            .any(|o| matches!(o, CallOutput::Sip(CallCommand::Refer { .. }))),
        "{out:?}"
    );
    assert!(
        !call.digits.contains('1'),
        "only the caller's 5: {}",
        call.digits
    );
}

/// The last output's record, after the call finished.
fn record_of(out: &[CallOutput]) -> &crate::call::record::CallRecord {
    out.iter()
        .find_map(|o| match o {
            CallOutput::Finished(r) => Some(&**r),
            _ => None,
        })
        .expect("the call finished")
}

#[test]
fn rtp_goes_where_a_caller_behind_nat_sends_from_once_it_is_latched() {
    let (mut call, t0) = call_with(Limits {
        latch_first: true,
        ..Limits::default()
    });
    let sdp = RtpPeer {
        addr: caller_rtp(),
        fixed: false,
    };
    assert_eq!(call.rtp_destination(), Some(sdp), "the SDP's address first");
    let mapped: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    assert!(call.on_rtp(t0, mapped, &dtmf_packet(1, 8000, 1, false)));
    assert_eq!(
        call.rtp_destination(),
        Some(RtpPeer {
            addr: mapped,
            fixed: true
        }),
        "then the address the caller's RTP comes from (RFC 4961)"
    );
}

#[test]
fn media_outside_the_trunks_networks_is_never_sent_to_and_ends_the_call() {
    let (mut call, t0) = call_with(Limits {
        remote: "198.51.100.7:6000",
        ..Limits::default()
    });
    assert_eq!(call.rtp_destination(), None);
    call.on_sip(t0, UaEvent::Confirmed { answer: None });
    let sent = pump(&mut call, t0, t0 + Duration::from_secs(1));
    assert!(sent.is_empty(), "no RTP at all");
    let out = outputs(&mut call);
    assert!(
        out.contains(&CallOutput::Sip(CallCommand::Hangup)),
        "{out:?}"
    );
    let r = record_of(&out);
    assert_eq!(r.outcome, CallOutcome::Failed);
    assert!(r.detail.contains("media networks"), "{}", r.detail);
}

/// Presses `1` at `t` from the caller's address: the flow transfers and
/// then waits for the ACD, so only a timeout can end the call.
fn press_one_to_transfer(call: &mut Call, t: Instant) -> Instant {
    pump(call, t, t + Duration::from_millis(300));
    let t = t + Duration::from_millis(300);
    for (i, end) in [(0u16, false), (1, true), (2, true), (3, true)] {
        call.on_rtp(t, caller_rtp(), &dtmf_packet(i, 8000, 1, end));
    }
    pump(call, t, t + Duration::from_millis(200));
    let out = outputs(call);
    assert!(
        out.iter()
            .any(|o| matches!(o, CallOutput::Sip(CallCommand::Refer { .. }))),
        "{out:?}"
    );
    t + Duration::from_millis(200)
}

#[test]
fn a_held_call_gets_the_longer_silence_limit_and_then_ends() {
    let (mut call, t0) = call_with(Limits {
        rtp_timeout: Duration::from_secs(5),
        hold_timeout: Duration::from_secs(30),
        ..Limits::default()
    });
    call.on_sip(t0, UaEvent::Confirmed { answer: None });
    let t1 = press_one_to_transfer(&mut call, t0);
    call.on_sip(
        t1,
        UaEvent::MediaChanged(Negotiated {
            codec: Codec::Pcmu,
            payload_type: 0,
            remote: caller_rtp(),
            dtmf_payload_type: Some(101),
            ptime_ms: 20,
            direction: Direction::RecvOnly,
            srtp: None,
        }),
    );
    pump(&mut call, t1, t1 + Duration::from_secs(20));
    assert!(!call.is_finished(), "held: 5 s of silence is normal");
    pump(&mut call, t1, t1 + Duration::from_secs(31));
    assert!(call.is_finished(), "but not half a minute");
}

#[test]
fn a_call_ends_at_its_maximum_duration() {
    let (mut call, t0) = call_with(Limits {
        max_duration: Duration::from_secs(3),
        ..Limits::default()
    });
    call.on_sip(t0, UaEvent::Confirmed { answer: None });
    let t1 = press_one_to_transfer(&mut call, t0);
    pump(&mut call, t1, t0 + Duration::from_millis(2900));
    assert!(!call.is_finished());
    pump(&mut call, t1, t0 + Duration::from_secs(4));
    let out = outputs(&mut call);
    let r = record_of(&out);
    assert_eq!(r.detail, "maximum call duration reached");
}

fn transfer(refer_context: crate::flow::model::ReferContext, uui: bool) -> TransferRequest {
    TransferRequest {
        uri: "sip:support@acd.example.net".into(),
        queue: Some("support".into()),
        priority: Some(3),
        context: vec![("account".into(), "12\r\n34".into())],
        handoff: Handoff::Refer,
        user_to_user: uui,
        refer_context,
        ring_timeout: Duration::from_secs(60),
        srtp: false,
    }
}

#[test]
fn a_refer_carries_the_context_where_the_queue_says_with_user_to_user_if_asked() {
    use crate::flow::model::ReferContext;
    let (target, headers) = transfer_refer(&transfer(ReferContext::Uri, false));
    assert_eq!(
        target,
        "<sip:support@acd.example.net?X-Queue=support&X-Priority=3&X-Context-account=12%0D%0A34>"
    );
    assert!(headers.is_empty());

    let (target, headers) = transfer_refer(&transfer(ReferContext::Request, true));
    assert_eq!(target, "<sip:support@acd.example.net>");
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["X-Queue", "X-Priority", "X-Context-account", "User-to-User"]
    );
    assert_eq!(headers[2].1, "1234", "no line breaks a caller typed");
    assert!(
        headers[3].1.ends_with(";encoding=hex;purpose=isdn-uui"),
        "{}",
        headers[3].1
    );

    let (target, headers) = transfer_refer(&transfer(ReferContext::Both, true));
    assert!(target.contains("&User-to-User="), "{target}");
    assert!(
        target.contains("%3Bencoding%3Dhex"),
        "escaped in the URI: {target}"
    );
    assert_eq!(headers.len(), 4);
}
