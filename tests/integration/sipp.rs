//! End-to-end tests against SIPp, an independent SIP implementation:
//! `callflow serve` runs on a free loopback port with the flows in
//! `tests/sipp/flows/`, SIPp plays the caller/trunk and the ACD with the
//! scenarios in `tests/sipp/`, and the tests check what SIPp saw (its exit
//! code: 0 means every call passed) and the engine's call records.
//!
//! `.ci/run` installs SIPp (`apt-get install -y sip-tester`); the RFC 4733
//! scenarios replay SIPp's pcaps, which needs root (CI runs as root).

// These tests are an IO edge: they watch real packets on the real clock.
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::repo;

/// Each server gets its own RTP port range so tests can run in parallel.
// Below the ephemeral range (32768 and up on Linux), where free_udp_port
// and SIPp's media ports come from, so the two can never collide.
static NEXT_RTP_SLOT: AtomicU16 = AtomicU16::new(0);

/// SIPp media ports come from a range of their own, 10 apart, so two SIPp
/// processes (or SIPp and any socket on an ephemeral port) never want the
/// same one: SIPp binds its `-mp` port and the one two above it, and exits
/// if either is taken.
static NEXT_SIPP_MEDIA: AtomicU16 = AtomicU16::new(0);

/// A SIPp `-mp` port whose audio and video sockets are both free now.
pub(crate) fn sipp_media_port() -> u16 {
    loop {
        let n = NEXT_SIPP_MEDIA.fetch_add(1, Ordering::SeqCst);
        let port = 10000 + (n % 990) * 10;
        let free = |p: u16| UdpSocket::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 1) && free(port + 2) && free(port + 3) {
            return port;
        }
    }
}

/// SIPp answering on `ip:port` (a trunk, an ACD) for one call of
/// `scenario`, its logs in `dir`; `extra` is added to its command line.
pub(crate) fn sipp_uas(
    dir: &std::path::Path,
    scenario: &str,
    ip: &str,
    port: u16,
    extra: &[&str],
) -> Child {
    let media = sipp_media_port().to_string();
    let child = Command::new("sipp")
        .current_dir(dir)
        .arg("-sf")
        .arg(repo(&format!("tests/sipp/{scenario}.xml")))
        .args(["-i", ip, "-p", &port.to_string(), "-mp", &media])
        .args(["-m", "1", "-nostdin", "-timeout", "40s", "-timeout_error"])
        .args(["-trace_err", "-trace_msg"])
        .arg("-error_file")
        .arg(dir.join(format!("{scenario}-errors.log")))
        .arg("-message_file")
        .arg(dir.join(format!("{scenario}-messages.log")))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sipp (apt-get install -y sip-tester)");
    // SIPp binds within a few milliseconds; give it ample time.
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// A loopback port free for UDP and, at the moment, for TCP too (a
/// server started with --tcp listens on both).
pub(crate) fn free_udp_port() -> u16 {
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = s.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) dir: tempfile::TempDir,
    /// The server's RTP ports, first and last.
    pub(crate) rtp_ports: (u16, u16),
}

impl Server {
    pub(crate) fn start(extra: &[&str]) -> Server {
        Self::start_in(tempfile::tempdir().expect("tempdir"), extra)
    }

    /// Starts a server whose files (records, callback database, logs) are
    /// in `dir`, e.g. one a crashed server used.
    pub(crate) fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let port = free_udp_port();
        // 600 ports (300 calls) each: the load test holds 100 calls at once,
        // and a port is reused only after its call task has ended.
        // 21 slots of 600 from 20000 to 32599, reused in turn: counting on
        // ran past 32768 (then past 65535, a panic) once the tests started
        // more servers than that. Tests run two at a time with at most
        // three servers each, so a slot's last server is long gone when
        // the slot comes round again.
        let slot = NEXT_RTP_SLOT.fetch_add(1, Ordering::SeqCst) % 21;
        let base = 20000 + slot * 600;
        let records = dir.path().join("calls.jsonl");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("serve.log"))
            .expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_callflow"));
        cmd.current_dir(repo(""))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--rtp-ports", &format!("{base}-{}", base + 599)])
            .args(if extra.contains(&"--flows") {
                &[][..]
            } else {
                &["--flows", "tests/sipp/flows"][..]
            })
            .args([
                "--prompts",
                "prompts",
                "--default-flow",
                "e2e",
                // A flow there bridges over TCP, which needs SIP over TCP.
                "--tcp",
            ])
            .arg("--call-records")
            .arg(&records);
        if !extra.contains(&"--callbacks") {
            cmd.arg("--callbacks").arg(dir.path().join("callbacks.db"));
        }
        cmd.args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("start callflow serve");
        let server = Server {
            child,
            port,
            dir,
            rtp_ports: (base, base + 599),
        };
        server.wait_ready();
        server
    }

    /// Whether the server answers an OPTIONS ping within 10 s.
    pub(crate) fn answers_options(&self) -> bool {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100))).ok();
        let me = s.local_addr().expect("addr");
        let mut buf = [0u8; 4096];
        for n in 0..100 {
            let ping = format!(
                "OPTIONS sip:ping@127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-alive{n}\r\nFrom: <sip:t@{me}>;tag=1\r\nTo: <sip:ping@127.0.0.1:{p}>\r\nCall-ID: alive-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                p = self.port
            );
            let _ = s.send_to(ping.as_bytes(), ("127.0.0.1", self.port));
            while let Ok((len, _)) = s.recv_from(&mut buf) {
                if buf[..len].starts_with(b"SIP/2.0 200") {
                    return true;
                }
            }
        }
        false
    }

    /// Waits until the server answers an OPTIONS ping.
    fn wait_ready(&self) {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100))).ok();
        let me = s.local_addr().expect("addr");
        let ping = format!(
            "OPTIONS sip:ping@127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ping{n}\r\nFrom: <sip:t@{me}>;tag=1\r\nTo: <sip:ping@127.0.0.1:{p}>\r\nCall-ID: ping-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            p = self.port,
            n = self.port
        );
        let mut buf = [0u8; 2048];
        for _ in 0..100 {
            let _ = s.send_to(ping.as_bytes(), ("127.0.0.1", self.port));
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
        }
        panic!("callflow serve did not start:\n{}", self.log());
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Runs a SIPp scenario against the server; `args` are added.
    pub(crate) fn sipp(&self, scenario: &str, args: &[&str]) -> Output {
        self.sipp_to(self.port, scenario, args)
    }

    /// Runs a SIPp scenario against one of the server's ports.
    pub(crate) fn sipp_to(&self, port: u16, scenario: &str, args: &[&str]) -> Output {
        self.sipp_from("127.0.0.1", port, scenario, args)
    }

    /// Runs a SIPp scenario from the loopback address `ip` (each test
    /// source of a trunk has its own: 127.0.0.2, 127.0.0.3, ...).
    pub(crate) fn sipp_from(&self, ip: &str, port: u16, scenario: &str, args: &[&str]) -> Output {
        self.sipp_command(ip, port, scenario, args)
            .output()
            .expect("run sipp (apt-get install -y sip-tester)")
    }

    /// The SIPp command line for `scenario` from `ip`, not yet started.
    pub(crate) fn sipp_command(
        &self,
        ip: &str,
        port: u16,
        scenario: &str,
        args: &[&str],
    ) -> Command {
        let sipp_port = free_udp_port().to_string();
        let media_port = sipp_media_port().to_string();
        let errors = self.dir.path().join(format!("{scenario}-errors.log"));
        let messages = self.dir.path().join(format!("{scenario}-messages.log"));
        let mut command = Command::new("sipp");
        command
            .current_dir(self.dir.path())
            .arg(format!("127.0.0.1:{port}"))
            .arg("-sf")
            .arg(repo(&format!("tests/sipp/{scenario}.xml")))
            .args(["-i", ip, "-p", &sipp_port, "-mp", &media_port])
            .args(["-nostdin", "-timeout", "60s", "-timeout_error"])
            .args(["-trace_err", "-trace_msg"])
            .arg("-error_file")
            .arg(&errors)
            .arg("-message_file")
            .arg(&messages)
            .args(args);
        command
    }

    /// The call records written so far, waiting up to 5 s for `n` of them.
    pub(crate) fn records(&self, n: usize) -> Vec<Value> {
        let path = self.dir.path().join("calls.jsonl");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let records: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if records.len() >= n || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn explain(&self, scenario: &str, out: &Output) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "sipp {scenario} exited {:?}\n--- sipp stderr\n{}\n--- sipp errors\n{}\n--- messages\n{}\n--- server log\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            read(&format!("{scenario}-errors.log")),
            read(&format!("{scenario}-messages.log")),
            self.log()
        )
    }

    /// Runs one call of `scenario`, which must pass.
    pub(crate) fn call(&self, scenario: &str, args: &[&str]) {
        let mut all = vec!["-m", "1"];
        all.extend_from_slice(args);
        let out = self.sipp(scenario, &all);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            self.explain(scenario, &out)
        );
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGHUP and waits up to 10 s for the flows to be reloaded.
    pub(crate) fn reload(&self) {
        let _ = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains("flows reloaded") {
            assert!(Instant::now() < deadline, "no reload:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// SIGTERM, and the exit status.
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("callflow did not stop after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RTP packets as they arrived.
type Arrivals = Vec<(Instant, Vec<u8>)>;

/// A UDP port that records every RTP packet with its arrival time, until
/// 1.5 s pass without one; SDP can point a call's media at it.
fn rtp_sink() -> (String, std::thread::JoinHandle<Arrivals>) {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sink.set_read_timeout(Some(Duration::from_millis(1500)))
        .ok();
    let port = sink.local_addr().expect("addr").port().to_string();
    let receiver = std::thread::spawn(move || {
        let mut packets = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = sink.recv(&mut buf) {
            if n > 12 {
                packets.push((Instant::now(), buf[..n].to_vec()));
            }
        }
        packets
    });
    (port, receiver)
}

fn nodes(record: &Value) -> Vec<String> {
    record["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn greeting_is_streamed_as_paced_pcmu_of_the_prompt() {
    let server = Server::start(&[]);
    let (sink_port, receiver) = rtp_sink();
    server.call("greeting", &["-key", "rtp_sink", &sink_port]);
    let packets = receiver.join().expect("receiver");

    // The greeting is the first talkspurt: up to the next marker bit.
    let end = packets
        .iter()
        .skip(1)
        .position(|(_, p)| p[1] & 0x80 != 0)
        .map_or(packets.len(), |i| i + 1);
    let greeting = &packets[..end];

    let prompts = callflow::media::prompts::PromptCache::load(&[repo("prompts/digit-1.wav")])
        .expect("prompt");
    let audio = prompts
        .get(0, callflow::media::g711::Codec::Pcmu)
        .expect("pcmu");
    assert_eq!(
        greeting.len(),
        audio.len().div_ceil(160),
        "one packet per 20 ms of the prompt"
    );
    let mut payload: Vec<u8> = greeting
        .iter()
        .flat_map(|(_, p)| p[12..].to_vec())
        .collect();
    assert_eq!(greeting[0].1[1] & 0x7f, 0, "payload type 0 (PCMU)");
    assert_eq!(
        greeting[0].1[1] & 0x80,
        0x80,
        "marker bit on the first packet"
    );
    payload.truncate(audio.len());
    assert_eq!(
        &payload[..],
        &audio[..],
        "the payload is the encoded prompt"
    );
    // Pacing: packet n is due at start + n*20 ms. Loopback adds little
    // jitter, but the machine is shared: allow generous slack.
    let start = greeting[0].0;
    let late: Vec<f64> = greeting
        .iter()
        .enumerate()
        .map(|(i, (at, _))| at.duration_since(start).as_secs_f64() * 1000.0 - 20.0 * i as f64)
        .collect();
    let worst = late.iter().fold(0f64, |m, d| m.max(d.abs()));
    assert!(
        worst < 60.0,
        "packets drift from the 20 ms schedule by up to {worst:.1} ms"
    );
    let total = greeting
        .last()
        .expect("packets")
        .0
        .duration_since(start)
        .as_secs_f64()
        * 1000.0;
    let expected = 20.0 * (greeting.len() - 1) as f64;
    assert!(
        (total - expected).abs() < 60.0,
        "{} packets took {total:.0} ms, expected {expected:.0}",
        greeting.len()
    );
    assert!(server.stop().success());
}

#[test]
fn a_queue_may_want_the_context_on_the_refer_itself_and_as_user_to_user() {
    // SIPp checks the REFER: a bare Refer-To, the X- headers and the
    // User-to-User (hex of the IA5 text, RFC 7433) on the request.
    let server = Server::start(&["--route", "8010=refer_headers"]);
    server.call("transfer_refer_headers", &[]);
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "transferred", "{r}");
    assert_eq!(r["detail"], "support");
}

#[test]
fn rfc4733_keys_lead_to_a_refer_with_context_and_the_call_is_transferred() {
    let server = Server::start(&[]);
    server.call("transfer_rfc4733", &[]);
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "transferred", "{r}");
    assert_eq!(r["detail"], "support");
    assert_eq!(r["digits"], "10");
    assert_eq!(
        nodes(r),
        [
            "e2e.hello",
            "e2e.menu",
            "e2e.billing",
            "e2e.menu2",
            "e2e.agent"
        ]
    );
    // What the caller did where, for `callflow report`.
    assert_eq!(
        r["inputs"],
        serde_json::json!([
            {"at": "e2e.menu", "input": "key", "key": "1"},
            {"at": "e2e.menu2", "input": "agent_key"},
        ]),
        "{r}"
    );
}

#[test]
fn silence_retries_the_menu_then_takes_the_no_input_branch() {
    let server = Server::start(&[]);
    server.call("no_input", &[]);
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "completed", "{r}");
    assert_eq!(
        nodes(r),
        ["e2e.hello", "e2e.menu", "e2e.no_input", "e2e.bye"]
    );
    assert_eq!(
        r["inputs"],
        serde_json::json!([
            {"at": "e2e.menu", "input": "no_input"},
            {"at": "e2e.menu", "input": "no_input"},
        ]),
        "{r}"
    );
}

#[test]
fn a_caller_hanging_up_mid_prompt_is_recorded_where() {
    let server = Server::start(&["--node", "node-a"]);
    server.call("hangup_mid_prompt", &[]);
    let r = &server.records(1)[0];
    assert_eq!(
        (r["outcome"].as_str(), r["detail"].as_str()),
        (Some("caller_hung_up"), Some("e2e.hello")),
        "{r}"
    );
    assert_eq!(r["node"], "node-a", "which node took the call: {r}");
}

#[test]
fn a_rejected_refer_or_a_failed_transfer_takes_on_fail() {
    let server = Server::start(&[]);
    server.call("refer_rejected", &[]);
    server.call("notify_503", &[]);
    for r in server.records(2) {
        assert_eq!(r["outcome"], "completed", "{r}");
        let n = nodes(&r);
        assert_eq!(
            &n[n.len() - 3..],
            ["e2e.agent", "e2e.fallback", "e2e.bye"],
            "{r}"
        );
        // The record says which transfer failed and why.
        let failed = &r["failed_transfers"][0];
        assert_eq!(failed["target"], "support", "{r}");
        assert!(!failed["reason"].as_str().unwrap_or("").is_empty(), "{r}");
    }
}

#[test]
fn sip_info_keys_work_like_rfc4733() {
    let server = Server::start(&[]);
    server.call("info_dtmf", &[]);
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "transferred", "{r}");
    assert_eq!(r["digits"], "10");
}

/// An ACD whose final NOTIFY overtakes its 202: the transfer counts as
/// done (RFC 6665 4.1.2.4), not as timed out to `on_fail`.
#[test]
fn a_notify_that_overtakes_the_202_completes_the_transfer() {
    let server = Server::start(&[]);
    server.call("refer_notify_first", &[]);
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "transferred", "{r}");
}

#[test]
fn protocol_errors_get_the_right_answers() {
    let server = Server::start(&[]);
    for scenario in ["malformed_invite", "bye_unknown_dialog", "g729_only"] {
        server.call(scenario, &[]);
    }
    assert!(server.records(0).is_empty(), "none of these made a call");
    // CANCEL and retransmissions need a call that rings before it is answered.
    let ringing = Server::start(&["--answer-delay", "2s"]);
    ringing.call("cancel", &[]);
    assert!(ringing.stop().success());
}

/// SIPp answers every repeated provisional by resending its request, so the
/// retransmission is sent by hand here: the same INVITE twice, then ACK and
/// BYE; exactly one call must come of it.
#[test]
fn a_retransmitted_invite_makes_one_call() {
    let server = Server::start(&[]);
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(500))).ok();
    let me = s.local_addr().expect("addr");
    let port = server.port;
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
    let request = |method: &str, cseq: u32, branch: &str, to_tag: &str, body: &str| {
        format!(
            "{method} sip:8000@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch}\r\nFrom: <sip:+37120000000@{me}>;tag=retx\r\nTo: <sip:8000@127.0.0.1:{port}>{to_tag}\r\nCall-ID: retransmitted-invite\r\nCSeq: {cseq} {method}\r\nContact: <sip:t@{me}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let invite = request("INVITE", 1, "z9hG4bK-retx-1", "", sdp);
    s.send_to(invite.as_bytes(), ("127.0.0.1", port))
        .expect("send");
    s.send_to(invite.as_bytes(), ("127.0.0.1", port))
        .expect("send");
    let mut tag = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 200") {
            let to = text
                .lines()
                .find(|l| l.starts_with("To:"))
                .unwrap_or_default();
            tag = format!(
                ";tag={}",
                to.split("tag=").nth(1).unwrap_or_default().trim()
            );
            break;
        }
    }
    assert!(!tag.is_empty(), "the INVITE was answered");
    s.send_to(
        request("ACK", 1, "z9hG4bK-retx-2", &tag, "").as_bytes(),
        ("127.0.0.1", port),
    )
    .expect("ack");
    std::thread::sleep(Duration::from_millis(200));
    s.send_to(
        request("BYE", 2, "z9hG4bK-retx-3", &tag, "").as_bytes(),
        ("127.0.0.1", port),
    )
    .expect("bye");
    let records = server.records(1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.records(1).len(), 1, "one call: {records:?}");
    assert!(server.stop().success());
}

#[test]
fn load_100_concurrent_calls_500_in_all_none_failed() {
    let server = Server::start(&[]);
    let out = server.sipp(
        "load",
        &["-m", "500", "-l", "100", "-r", "100", "-rp", "1000"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        server.explain("load", &out)
    );
    let records = server.records(500);
    assert_eq!(records.len(), 500);
    assert!(
        records.iter().all(|r| r["outcome"] == "caller_hung_up"),
        "every call ran until the caller hung up"
    );
    assert!(
        server.stop().success(),
        "SIGTERM with no calls left exits 0"
    );
}

fn raw_invite(port: u16, call_id: &str) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(1000))).ok();
    send_raw_invite(&s, port, call_id);
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("an answer");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The answer to one OPTIONS probe, as a load balancer sends it.
pub(crate) fn raw_options(port: u16, call_id: &str) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(1000))).ok();
    let me = s.local_addr().expect("addr");
    let probe = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}\r\nFrom: <sip:probe@{me}>;tag=x\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(probe.as_bytes(), ("127.0.0.1", port))
        .expect("send");
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("an answer");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Sends one INVITE for `call_id` from `s`.
fn send_raw_invite(s: &UdpSocket, port: u16, call_id: &str) {
    let me = s.local_addr().expect("addr");
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sip:8000@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}\r\nFrom: <sip:+37120000000@{me}>;tag=x\r\nTo: <sip:8000@127.0.0.1:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:t@{me}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    s.send_to(invite.as_bytes(), ("127.0.0.1", port))
        .expect("send");
}

#[test]
fn a_call_still_ringing_at_sigterm_is_refused_with_503_not_answered() {
    let server = Server::start(&["--answer-delay", "3s", "--drain", "1s"]);
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(500))).ok();
    send_raw_invite(&s, server.port, "ringing-at-sigterm");
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    let mut terminated = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(n) = s.recv(&mut buf) {
            let line = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            if line.starts_with("SIP/2.0 180") && !terminated {
                server.terminate();
                terminated = true;
            }
            let last = !line.starts_with("SIP/2.0 1");
            seen.push(line);
            if last {
                break;
            }
        }
    }
    assert!(
        seen.iter().any(|l| l.starts_with("SIP/2.0 180")),
        "{seen:?}"
    );
    assert!(
        seen.last().is_some_and(|l| l.starts_with("SIP/2.0 503")),
        "refused, not answered: {seen:?}\n{}",
        server.log()
    );
}

#[test]
fn sigterm_refuses_new_calls_with_503_and_ends_calls_in_progress_after_the_drain() {
    let server = Server::start(&["--drain", "1s"]);
    assert!(raw_options(server.port, "probe-before-drain").starts_with("SIP/2.0 200 OK"));
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| server.sipp("drain", &["-m", "1"]));
        std::thread::sleep(Duration::from_millis(600));
        server.terminate();
        std::thread::sleep(Duration::from_millis(200));
        let answer = raw_invite(server.port, "during-drain");
        assert!(
            answer.starts_with("SIP/2.0 503 Service Unavailable"),
            "{answer}"
        );
        assert!(answer.contains("Retry-After: "), "{answer}");
        // A load balancer probing with OPTIONS (Kamailio's dispatcher)
        // learns it too, and sends new calls elsewhere.
        let probe = raw_options(server.port, "probe-during-drain");
        assert!(
            probe.starts_with("SIP/2.0 503 Service Unavailable") && probe.contains("Retry-After: "),
            "{probe}"
        );
        let out = caller.join().expect("sipp thread");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            server.explain("drain", &out)
        );
    });
    let r = &server.records(1)[0];
    assert_eq!(
        (r["outcome"].as_str(), r["detail"].as_str()),
        (Some("failed"), Some("server shutting down")),
        "{r}"
    );
    assert!(server.stop().success(), "exit 0 after the drain");
}

#[test]
fn delayed_offer_gets_our_offer_and_media_follows_the_answer_in_the_ack() {
    let server = Server::start(&[]);
    let (sink_port, receiver) = rtp_sink();
    server.call("delayed_offer", &["-key", "rtp_sink", &sink_port]);
    let types: Vec<u8> = receiver
        .join()
        .expect("receiver")
        .iter()
        .map(|(_, p)| p[1] & 0x7f)
        .collect();
    assert!(
        types.len() > 20,
        "prompts stream after the ACK: {} packets",
        types.len()
    );
    assert!(types.iter().all(|t| *t == 8), "PCMA, as the answer chose");
}

#[test]
fn two_listen_addresses_both_take_calls() {
    let second = free_udp_port();
    let server = Server::start(&["--listen", &format!("127.0.0.1:{second}")]);
    for port in [server.port, second] {
        let out = server.sipp_to(port, "hangup_mid_prompt", &["-m", "1"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            server.explain("hangup_mid_prompt", &out)
        );
    }
    assert_eq!(server.records(2).len(), 2);
    assert!(server.stop().success());
}

/// `callflow callbacks ARGS --db` on the server's database.
pub(crate) fn callbacks_cli(db: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_callflow"))
        .arg("callbacks")
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .expect("run callflow callbacks");
    assert!(
        out.status.success(),
        "callbacks {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_confirmed_callback_is_stored_before_the_confirmation_and_merged_when_repeated() {
    let server = Server::start(&["--route", "8002=cb"]);
    server.call("callback_confirm", &[]);
    server.call("callback_confirm", &[]);
    for r in server.records(2) {
        assert_eq!(
            (r["outcome"].as_str(), r["detail"].as_str()),
            (Some("callback_requested"), Some("support")),
            "{r}"
        );
    }
    let db = server.dir.path().join("callbacks.db");
    let list = callbacks_cli(&db, &["list", "--state", "pending"]);
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(
        rows.len(),
        1,
        "the second request from the same number was merged: {list}"
    );
    assert!(
        rows[0].contains("37120000000") && rows[0].contains("support") && rows[0].contains("   7 "),
        "{list}"
    );
    let id = rows[0]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(callbacks_cli(&db, &["cancel", &id]).contains("cancelled"));
    assert!(callbacks_cli(&db, &["list", "--state", "cancelled"]).contains("37120000000"));
    assert!(callbacks_cli(&db, &["retry", &id]).contains("due again"));
    assert!(server.stop().success());
}

#[test]
fn a_typed_number_the_dialling_policy_forbids_is_refused_and_nothing_is_stored() {
    let server = Server::start(&["--route", "8002=cb"]);
    server.call("callback_refused", &[]);
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "caller_hung_up", "{r}");
    assert!(
        server.log().contains("callback number refused"),
        "{}",
        server.log()
    );
    let db = server.dir.path().join("callbacks.db");
    let list = callbacks_cli(&db, &["list"]);
    assert_eq!(
        list.lines().count(),
        1,
        "only the header: nothing was stored: {list}"
    );
    assert!(server.stop().success());
}

#[test]
fn the_estimated_wait_steers_the_flow_and_a_dead_status_endpoint_falls_back() {
    // Nothing listens on this port: every poll fails, so the default holds.
    let dead = free_udp_port();
    for (source, branch) in [
        ("{ wait: 2m }".to_string(), "wait.long"),
        (format!("{{ url: \"http://127.0.0.1:{dead}/status\", field: wait, timeout: 200ms, every: 100ms, default: 30s }}"), "wait.short"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("callflow.yaml");
        std::fs::write(&config, format!("queue_status:\n  support: {source}\n")).expect("config");
        let server = Server::start(&["--config", config.to_str().expect("path"), "--route", "8003=wait"]);
        std::thread::sleep(Duration::from_millis(300));
        server.call("wait_route", &[]);
        let r = &server.records(1)[0];
        assert_eq!(nodes(r)[1], branch, "{source}: {r}");
        assert!(server.stop().success());
    }
}

/// Session timers with a caller that neither supports them nor takes
/// UPDATE: we refresh by re-INVITE half-way through the interval (45 s).
#[test]
fn a_caller_that_takes_no_update_is_refreshed_by_re_invite() {
    let server = Server::start(&["--route", "8009=long", "--rtp-timeout", "150s"]);
    let started = Instant::now();
    server.call("session_reinvite", &["-timeout", "80s"]);
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_secs(44) && lasted < Duration::from_secs(60),
        "the re-INVITE came after {lasted:?}"
    );
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "caller_hung_up", "{r}");
}

/// UPDATE with an offer (RFC 3311) from SIPp: answered with our SDP when
/// it moves the media, 488 when it offers only a codec we lack; the call
/// goes on and SIPp ends it.
#[test]
fn an_update_with_an_offer_is_answered_and_a_bad_one_refused() {
    let server = Server::start(&["--route", "8009=long"]);
    server.call("update_offer", &[]);
    let r = &server.records(1)[0];
    assert_eq!(r["hung_up_by"], "caller", "{r}");
}

/// Session timers (RFC 4028) against SIPp: a caller that supports them
/// refreshes once with UPDATE and then stops; callflow ends the call with
/// BYE when the session expires (30 s before its 90 s interval ends, 60 s
/// after the refresh). Too small an interval gets 422 with Min-SE.
#[test]
fn a_session_whose_refreshes_stop_is_ended_by_the_session_timer() {
    let server = Server::start(&["--route", "8009=long", "--rtp-timeout", "150s"]);
    server.call("session_too_small", &[]);
    let started = Instant::now();
    // The session lasts a minute: past SIPp's usual 60 s limit.
    server.call("session_timer", &["-timeout", "90s"]);
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_secs(60) && lasted < Duration::from_secs(75),
        "the BYE came after {lasted:?}"
    );
    let records = server.records(1);
    let r = records.last().expect("a record");
    assert!(
        r["detail"]
            .as_str()
            .unwrap_or("")
            .contains("session timer expired"),
        "{r}"
    );
}
