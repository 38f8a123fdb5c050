//! The bridge hand-off end to end with SIPp on both sides: SIPp as the
//! caller's trunk refuses REFER, callflow places the call to SIPp as the
//! ACD itself, and the test's own sockets (the SDP media ports of both
//! SIPp scenarios) check that audio and RFC 4733 events are relayed both
//! ways, with the event payload type renumbered (101 for the caller, 96
//! for the ACD).

// An IO edge: real packets on the real clock.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::sipp::{sipp_uas, Server};

const CALLER_SSRC: u32 = 0xCA11_E500;
const AGENT_SSRC: u32 = 0xA6E7_0001;

/// SIPp playing the ACD on `ip`:`port` (where the flow's queues point),
/// its SDP naming `rtp` as its media port.
fn acd(server: &Server, (ip, port): (&str, u16), rtp: u16, extra: &[&str]) -> Child {
    let rtp = rtp.to_string();
    let mut args = vec!["-set", "rtp", &rtp];
    args.extend_from_slice(extra);
    sipp_uas(server.dir.path(), "bridge_acd", ip, port, &args)
}

fn packet(pt: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(160 * u32::from(seq)).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn ssrc(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[8], p[9], p[10], p[11]])
}

/// What the two sockets saw.
#[derive(Default, Debug)]
struct Seen {
    /// Our caller audio that reached the agent's socket.
    to_agent: usize,
    /// Agent audio that reached the caller's socket.
    to_caller: usize,
    /// RFC 4733 packets at the caller's socket, by payload type.
    events_to_caller: Vec<u8>,
}

/// Plays both media ends until the agent has heard the caller and the
/// caller the agent, or `limit` passes.
fn talk(caller: &UdpSocket, agent: &UdpSocket, limit: Duration) -> Seen {
    let mut seen = Seen::default();
    let mut buf = [0u8; 2048];
    let end = Instant::now() + limit;
    let (mut endpoint_caller_port, mut endpoint_agent_port): (
        Option<SocketAddr>,
        Option<SocketAddr>,
    ) = (None, None);
    let mut seq = 0u16;
    let mut agent_sent = 0u16;
    while Instant::now() < end
        && (seen.to_agent < 20 || seen.to_caller < 20 || seen.events_to_caller.is_empty())
    {
        // The caller's side: prompts (and later the agent) from the
        // endpoint's port, which is where our audio goes.
        while let Ok((n, from)) = caller.recv_from(&mut buf) {
            endpoint_caller_port.get_or_insert(from);
            if n > 12 && ssrc(&buf[..n]) == AGENT_SSRC {
                seen.to_caller += 1;
            }
            if n > 12 && buf[1] & 0x7f != 0 {
                seen.events_to_caller.push(buf[1] & 0x7f);
            }
        }
        while let Ok((n, from)) = agent.recv_from(&mut buf) {
            if n > 12 && ssrc(&buf[..n]) == CALLER_SSRC {
                seen.to_agent += 1;
                endpoint_agent_port.get_or_insert(from);
            }
        }
        if let Some(to) = endpoint_caller_port {
            seq = seq.wrapping_add(1);
            let _ = caller.send_to(&packet(0, seq, CALLER_SSRC, &[0x11; 160]), to);
        }
        if let Some(to) = endpoint_agent_port {
            agent_sent += 1;
            let _ = agent.send_to(&packet(0, agent_sent, AGENT_SSRC, &[0x22; 160]), to);
            if agent_sent == 10 {
                // Key 5 from the agent, as the ACD numbers events (96):
                // start, then end.
                let _ = agent.send_to(&packet(96 | 0x80, 1000, AGENT_SSRC, &[5, 10, 0, 160]), to);
                let _ = agent.send_to(&packet(96, 1000, AGENT_SSRC, &[5, 0x80 | 10, 1, 64]), to);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    seen
}

#[test]
fn a_trunk_refusing_refer_gets_the_call_bridged_to_the_acd_with_audio_both_ways() {
    let server = bridged_call(&["--route", "802=bridge"], 5391, &[]);
    assert!(server.stop().success());
}

/// The same with the ACD over TCP (its URI says ;transport=tcp): the
/// INVITE, the ACK and the BYE go over the connection callflow opens.
#[test]
fn a_bridged_call_reaches_an_acd_over_tcp() {
    let server = bridged_call(&["--route", "802=bridge_tcp"], 5392, &["-t", "t1"]);
    let messages = std::fs::read_to_string(server.dir.path().join("bridge_acd-messages.log"))
        .unwrap_or_default();
    assert!(
        messages.contains("TCP message received") && !messages.contains("UDP message received"),
        "SIPp took the ACD leg over TCP only:\n{messages}"
    );
    assert!(messages.contains("Via: SIP/2.0/TCP"), "{messages}");
    assert!(server.stop().success());
}

/// Waits for the caller's and the ACD's SIPp, each of which must have
/// passed its scenario.
fn both_passed(
    server: &Server,
    (caller, caller_scenario): (Child, &str),
    (acd, acd_scenario): (Child, &str),
) {
    let caller_out = caller.wait_with_output().expect("caller sipp");
    let acd_out = acd.wait_with_output().expect("acd sipp");
    let read =
        |name: &str| std::fs::read_to_string(server.dir.path().join(name)).unwrap_or_default();
    assert_eq!(
        acd_out.status.code(),
        Some(0),
        "the ACD's SIPp failed:\n{}\n--- errors\n{}\n--- messages\n{}\n--- server log\n{}",
        String::from_utf8_lossy(&acd_out.stderr),
        read(&format!("{acd_scenario}-errors.log")),
        read(&format!("{acd_scenario}-messages.log")),
        server.log()
    );
    assert_eq!(
        caller_out.status.code(),
        Some(0),
        "{}",
        server.explain(caller_scenario, &caller_out)
    );
}

/// Places a call that the trunk's REFER refusal sends to the ACD (SIPp on
/// 127.0.0.2:`acd_port`, with `acd_extra`) as a bridge, checks the audio
/// both ways and the record; the server is left running.
pub(crate) fn bridged_call(server_args: &[&str], acd_port: u16, acd_extra: &[&str]) -> Server {
    bridged_call_on(
        Server::start(server_args),
        ("127.0.0.2", acd_port),
        acd_extra,
    )
}

/// [`bridged_call`] on a running `server`, the ACD at `acd`.
fn bridged_call_on(server: Server, acd_at: (&str, u16), acd_extra: &[&str]) -> Server {
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let agent_rtp = UdpSocket::bind((acd_at.0, 0)).expect("bind the ACD's address");
    for s in [&caller_rtp, &agent_rtp] {
        s.set_read_timeout(Some(Duration::from_millis(2)))
            .expect("timeout");
    }
    let caller_port = caller_rtp.local_addr().expect("addr").port().to_string();
    let agent_port = agent_rtp.local_addr().expect("addr").port();
    let acd = acd(&server, acd_at, agent_port, acd_extra);
    let caller = server
        .sipp_command(
            "127.0.0.1",
            server.port,
            "bridge_caller",
            &["-m", "1", "-set", "rtp", &caller_port],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sipp");

    let seen = talk(&caller_rtp, &agent_rtp, Duration::from_secs(20));

    both_passed(&server, (caller, "bridge_caller"), (acd, "bridge_acd"));
    assert!(seen.to_agent >= 20, "{seen:?}");
    assert!(seen.to_caller >= 20, "{seen:?}");
    assert!(
        !seen.events_to_caller.is_empty() && seen.events_to_caller.iter().all(|pt| *pt == 101),
        "the agent's key reached the caller as payload type 101: {seen:?}"
    );

    let records = server.records(1);
    let r = &records[0];
    assert_eq!(r["outcome"], "transferred", "{r}");
    assert_eq!(r["handoff"], "bridge", "{r}");
    assert_eq!(r["hung_up_by"], "agent", "{r}");
    assert!(r["agent_answer"].is_string(), "{r}");
    assert!(
        r["refer_failed"]
            .as_str()
            .unwrap_or_default()
            .contains("405"),
        "{r}"
    );
    server
}

/// Session timers (RFC 4028) on a call we place, against SIPp as the
/// callee: the ACD answers the bridged INVITE with a 90 s interval and
/// callflow, the UAC, as the refresher; callflow refreshes with UPDATE
/// half-way (the ACD's scenario fails without it), and the call lasts
/// until the agent hangs up. The ACD listens on a port of its own (the
/// flows are copied with the queue's URI pointing there), so that this
/// long test shares no port with the other bridge tests.
#[test]
fn a_callee_that_makes_us_the_refresher_is_refreshed_by_update() {
    let acd_port = crate::sipp::free_udp_port();
    let files = tempfile::tempdir().expect("tempdir");
    let flows = files.path().join("flows");
    copy_flows(&flows, "127.0.0.2:5391", &format!("127.0.0.2:{acd_port}"));
    let server = Server::start(&[
        "--route",
        "802=bridge",
        "--rtp-timeout",
        "150s",
        "--flows",
        flows.to_str().expect("path"),
    ]);
    let agent_rtp = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let rtp = agent_rtp.local_addr().expect("addr").port().to_string();
    let acd = sipp_uas(
        server.dir.path(),
        "bridge_acd_timer",
        "127.0.0.2",
        acd_port,
        &["-set", "rtp", &rtp, "-timeout", "90s"],
    );
    // The caller of `bridge_caller`, waiting long enough for the end.
    let caller_scenario = server.dir.path().join("bridge_caller_long.xml");
    let text = std::fs::read_to_string(crate::common::repo("tests/sipp/bridge_caller.xml"))
        .expect("scenario")
        .replace(
            r#"<recv request="BYE" timeout="30000"/>"#,
            r#"<recv request="BYE" timeout="90000"/>"#,
        );
    std::fs::write(&caller_scenario, text).expect("write scenario");
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let caller_port = caller_rtp.local_addr().expect("addr").port().to_string();
    let started = Instant::now();
    let caller = std::process::Command::new("sipp")
        .current_dir(server.dir.path())
        .arg(format!("127.0.0.1:{}", server.port))
        .arg("-sf")
        .arg(&caller_scenario)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &crate::sipp::free_udp_port().to_string(),
        ])
        .args(["-mp", &crate::sipp::sipp_media_port().to_string()])
        .args(["-m", "1", "-set", "rtp", &caller_port])
        .args([
            "-nostdin",
            "-timeout",
            "90s",
            "-timeout_error",
            "-trace_err",
        ])
        .arg("-error_file")
        .arg(server.dir.path().join("bridge_caller-errors.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sipp");
    both_passed(
        &server,
        (caller, "bridge_caller"),
        (acd, "bridge_acd_timer"),
    );
    assert!(
        started.elapsed() >= Duration::from_secs(45),
        "the call outlived the first half of its interval"
    );
    let r = &server.records(1)[0];
    assert_eq!(r["hung_up_by"], "agent", "{r}");
    assert!(server.stop().success());
}

/// Copies the test flows into `to` with the ACD's address `from` replaced
/// by `at`.
pub(crate) fn copy_flows(to: &std::path::Path, from: &str, at: &str) {
    std::fs::create_dir_all(to).expect("flows dir");
    for entry in std::fs::read_dir(crate::common::repo("tests/sipp/flows")).expect("flows") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("flow");
        std::fs::write(
            to.join(path.file_name().expect("name")),
            text.replace(from, at),
        )
        .expect("write");
    }
}

/// A reload whose flows bridge to an ACD at a new address (127.0.0.3,
/// which no flow named at the start, and no trunk has) admits that
/// address before the flows are used: the ACD's answers are taken and the
/// call is bridged.
#[test]
fn a_reload_may_bridge_to_an_acd_at_a_new_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = dir.path().join("flows");
    copy_flows(&flows, "127.0.0.2:5391", "127.0.0.2:5391");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "trunks: { caller: { sources: 127.0.0.1/32 } }\n")
        .expect("write config");
    let config = config.display().to_string();
    let server = Server::start_in(
        dir,
        &[
            "--route",
            "802=bridge",
            "--flows",
            flows.to_str().expect("path"),
            "--config",
            &config,
        ],
    );
    let acd_port = crate::sipp::free_udp_port();
    copy_flows(&flows, "127.0.0.2:5391", &format!("127.0.0.3:{acd_port}"));
    server.reload();
    assert!(
        server.log().contains("bridge somewhere new"),
        "{}",
        server.log()
    );
    let server = bridged_call_on(server, ("127.0.0.3", acd_port), &[]);
    assert!(server.stop().success());
}
