//! The load benchmark, measured by the receiver: a load generator of our
//! own places N calls to `callflow serve` (the release build, started here
//! on the `stream` flow, prompts without a pause), holds them, and receives
//! every RTP packet on one socket, demultiplexed by SSRC. Lateness is
//! taken from arrival times against the 20 ms grid within each talkspurt
//! (a packet's offset `arrival - timestamp/8000` less the smallest offset
//! of its talkspurt), never from the server's own counters, on 20 calls'
//! streams (the others go to 64 sinks no one reads, as SIPp's would). With
//! `--send-rtp` every caller also sends 50 packets a second, as a phone does.
//!
//! Reported per run: calls, failed, the server's CPU, its CPU per RTP
//! packet sent (and received, with `--send-rtp`), RSS per call, and
//! p50/p99/max lateness. Compare with `cargo bench --bench kernel_probe
//! -- CALLS` (as many destinations as calls) taken in the same session.
//!
//! With `--bridge` every call is bridged (flow `relay`) to the generator's
//! own ACD, and both sides send 50 packets a second: what is measured then
//! is the relay's added delay, from the send time each packet carries in
//! its payload to the kernel's arrival stamp on the other side, both ways.
//! With `--mixed` the timed calls and every other call after them are
//! bridged, and the rest run the `stream` flow with their callers sending
//! RTP, as an IVR's calls do: the same readers then carry relays and
//! packets for their workers, and what is measured is the relay delay of
//! the bridged calls among them.
//!
//! `LOAD_WORKERS=N` runs the server with N call workers (default: one per
//! core).
//!
//! `cargo bench --bench load -- [CALLS...] [--send-rtp] [--bridge] [--mixed] [--one-sink]
//! [--hold SECONDS] [--rate CALLS_PER_SECOND]` (default 1000 2000, hold
//! 20 s of measurement, ramp at 200 calls a second). The generator is one
//! thread for SIP, one for receiving and one for sending RTP; at the
//! highest levels on a 2-core machine it competes with the server for CPU,
//! which the report shows as its own CPU share.

// A benchmark is an IO edge: it reads the clock.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{proc_stats, proc_times};

use std::collections::HashMap;
use std::io::{IoSliceMut, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIP_PORT: u16 = 5996;
/// The generator's ACD, where flow `relay` bridges calls.
const ACD_PORT: u16 = 5997;
const RTP_PORT: u16 = 17000;
/// The agents' side of bridged calls, timed.
const AGENT_RTP_PORT: u16 = 17004;
/// Sockets the untimed calls' RTP goes to, each side, call by call in
/// turn. On loopback the sender pays for the receiving socket too: with
/// one sink for thousands of calls, every packet from both cores would
/// bump that one socket's counters, a cost no call to its own peer pays.
/// `--one-sink` measures as stop 23 and before did.
const SINKS: usize = 64;
/// SSRCs of what callers and agents send (plus the call's index).
const CALLER_SSRC: u32 = 0x1000_0000;
const AGENT_SSRC: u32 = 0x2000_0000;
/// Calls whose RTP is timed; the rest go to a sink nobody reads (the
/// kernel drops there), so that timing 100,000 packets a second does not
/// take the CPU the server is being measured on.
const TIMED: usize = 20;

struct Options {
    levels: Vec<usize>,
    /// New calls a second while ramping up.
    rate: u64,
    send_rtp: bool,
    bridge: bool,
    /// Only some calls bridged (see the module's documentation).
    mixed: bool,
    hold: Duration,
    /// Sinks for the untimed calls' RTP, each side.
    sinks: usize,
}

fn options() -> Options {
    let mut o = Options {
        levels: Vec::new(),
        rate: 200,
        send_rtp: false,
        bridge: false,
        mixed: false,
        hold: Duration::from_secs(20),
        sinks: SINKS,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--send-rtp" => o.send_rtp = true,
            "--one-sink" => o.sinks = 1,
            "--bridge" => {
                o.bridge = true;
                o.send_rtp = true;
            }
            "--mixed" => {
                o.bridge = true;
                o.mixed = true;
                o.send_rtp = true;
            }
            "--hold" => {
                let s = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
                o.hold = Duration::from_secs(s);
            }
            "--rate" => {
                o.rate = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(200)
                    .max(1)
            }
            "--bench" => {}
            n => o.levels.extend(n.parse::<usize>().ok()),
        }
    }
    if o.levels.is_empty() {
        o.levels = vec![1000, 2000];
    }
    o
}

/// This process's own CPU ticks.
fn own_ticks() -> u64 {
    proc_stats(std::process::id()).0
}

/// The number a mixed run's IVR calls dial (flow `stream`); the others
/// dial 800 and run the default flow.
const IVR_NUMBER: &str = "801";

/// Whether call `i` is bridged: every call with `--bridge`; with
/// `--mixed` the timed calls and every other one after them.
fn bridged(i: usize, o: &Options) -> bool {
    o.bridge && (!o.mixed || i < TIMED || i % 2 == 1)
}

fn start_server(dir: &std::path::Path, flow: &str, mixed: bool) -> Child {
    let root = env!("CARGO_MANIFEST_DIR");
    // CALLFLOW_BIN compares another build (say, an older commit's).
    let bin =
        std::env::var("CALLFLOW_BIN").unwrap_or_else(|_| format!("{root}/target/release/callflow"));
    let mut command = Command::new(&bin);
    command.args(["serve", "--listen", &format!("127.0.0.1:{SIP_PORT}")]);
    // LOAD_WORKERS compares worker counts.
    if let Ok(w) = std::env::var("LOAD_WORKERS") {
        command.args(["--workers", &w]);
    }
    let child = command
        .current_dir(root)
        .args(["--rtp-ports", "20000-45000", "--flows", "benches/flows"])
        .args(["--default-flow", flow, "--rtp-timeout", "300s"])
        .args(if mixed {
            vec!["--route".to_string(), format!("{IVR_NUMBER}=stream")]
        } else {
            Vec::new()
        })
        .arg("--call-records")
        .arg(dir.join("calls.jsonl"))
        .arg("--callbacks")
        .arg(dir.join("callbacks.db"))
        .env(
            "RUST_LOG",
            std::env::var("LOAD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(std::env::temp_dir().join("callflow-load-serve.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (cargo build --release first)"));
    std::thread::sleep(Duration::from_millis(800));
    child
}

/// One call as the generator knows it.
#[derive(Default, Clone)]
struct Leg {
    to_tag: Option<String>,
    rtp: Option<SocketAddr>,
    answered: bool,
    ended_by_server: bool,
    /// Bridged mode: the server's port for the agent's side, once the
    /// ACD has answered.
    agent_rtp: Option<SocketAddr>,
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l[name.len()..].starts_with(':')
        })
        .map(|l| l[name.len() + 1..].trim())
}

fn sdp_address(msg: &str) -> Option<SocketAddr> {
    let body = msg.split("\r\n\r\n").nth(1)?;
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim()
        .parse()
        .ok()?;
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Receiver-side lateness of every packet in the window, in microseconds.
#[derive(Default)]
struct Arrivals {
    /// Per SSRC: the current talkspurt's (first timestamp, offsets).
    spurts: HashMap<u32, (u32, Vec<f64>)>,
    lateness_us: Vec<f64>,
    packets: u64,
}

impl Arrivals {
    fn close(&mut self, spurt: (u32, Vec<f64>)) {
        let min = spurt.1.iter().copied().fold(f64::INFINITY, f64::min);
        self.lateness_us
            .extend(spurt.1.iter().map(|o| (o - min) * 1e6));
    }

    fn on_packet(&mut self, at: f64, packet: &[u8], measuring: bool) {
        if packet.len() < 12 {
            return;
        }
        self.packets += u64::from(measuring);
        let marker = packet[1] & 0x80 != 0;
        let ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        if !measuring {
            return;
        }
        if marker || !self.spurts.contains_key(&ssrc) {
            if let Some(old) = self.spurts.insert(ssrc, (ts, Vec::with_capacity(1024))) {
                self.close(old);
            }
        }
        if let Some((first, offsets)) = self.spurts.get_mut(&ssrc) {
            let since = f64::from(ts.wrapping_sub(*first)) / 8000.0;
            offsets.push(at - since);
        }
    }

    fn finish(mut self) -> (Vec<f64>, u64) {
        let spurts: Vec<_> = self.spurts.drain().map(|(_, s)| s).collect();
        for s in spurts {
            self.close(s);
        }
        self.lateness_us.sort_by(f64::total_cmp);
        (self.lateness_us, self.packets)
    }
}

/// Bridged mode: how long relayed packets took, from the send time in
/// their payload to their arrival, in microseconds.
#[derive(Default)]
struct Delays {
    us: Vec<f64>,
    packets: u64,
}

impl Delays {
    fn on_packet(&mut self, at: f64, packet: &[u8], measuring: bool) {
        if packet.len() < 20 || !measuring {
            return;
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        if ssrc & 0xf000_0000 != CALLER_SSRC && ssrc & 0xf000_0000 != AGENT_SSRC {
            return; // hold music before the bridge
        }
        self.packets += 1;
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&packet[12..20]);
        let sent = u64::from_be_bytes(sent) as f64 * 1e-9;
        self.us.push((at - sent) * 1e6);
    }

    fn finish(mut self) -> (Vec<f64>, u64) {
        self.us.sort_by(f64::total_cmp);
        (self.us, self.packets)
    }
}

/// The wall clock, as the kernel stamps arrivals.
fn realtime() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Receives on `socket` until `stop`, handing each datagram and its
/// kernel arrival stamp (realtime; or `fallback()` if the kernel gives
/// none) to `on_packet`.
fn receive(
    socket: &UdpSocket,
    stop: &AtomicBool,
    fallback: impl Fn() -> f64,
    mut on_packet: impl FnMut(f64, &[u8]),
) {
    let stamped = setsockopt(socket, sockopt::ReceiveTimestampns, &true).is_ok();
    let mut buf = [0u8; 2048];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    while !stop.load(Ordering::Relaxed) {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) else {
            continue;
        };
        let n = msg.bytes;
        let kernel = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|c| match c {
                ControlMessageOwned::ScmTimestampns(ts) => {
                    Some(ts.tv_sec() as f64 + ts.tv_nsec() as f64 * 1e-9)
                }
                _ => None,
            })
        });
        let at = match kernel {
            Some(at) if stamped => at,
            _ => fallback(),
        };
        on_packet(at, &buf[..n]);
    }
}

/// `n` sockets nobody reads (the kernel drops there once each is full),
/// and their ports.
fn bind_sinks(n: usize) -> Vec<(UdpSocket, u16)> {
    (0..n.max(1))
        .map(|_| {
            let s = UdpSocket::bind(("127.0.0.1", 0)).expect("sink socket");
            let port = s.local_addr().expect("sink address").port();
            (s, port)
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run(calls: usize, o: &Options) {
    let dir = std::env::temp_dir().join(format!("callflow-load-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut server = start_server(&dir, if o.bridge { "relay" } else { "stream" }, o.mixed);
    let pid = server.id();
    let (_, idle_rss) = proc_stats(pid);
    let sip = UdpSocket::bind(("127.0.0.1", 0)).expect("sip socket");
    // Room for bursts of responses and RTP while a thread is descheduled
    // (root may exceed rmem_max; otherwise the default stays).
    let _ = setsockopt(&sip, sockopt::RcvBufForce, &(4 << 20));
    sip.set_read_timeout(Some(Duration::from_millis(5))).ok();
    let me = sip.local_addr().expect("addr");
    let sinks = bind_sinks(o.sinks);
    let rtp = UdpSocket::bind(("127.0.0.1", RTP_PORT)).expect("rtp socket");
    let _ = setsockopt(&rtp, sockopt::RcvBufForce, &(32 << 20));
    // Arrival times are stamped by the kernel as the datagram arrives (on
    // loopback: as the server sends it; see `receive`), so that the
    // receiver's own scheduling on a busy machine does not count as
    // lateness.
    rtp.set_read_timeout(Some(Duration::from_millis(50))).ok();
    let server_addr: SocketAddr = ([127, 0, 0, 1], SIP_PORT).into();
    let legs: Arc<Mutex<Vec<Leg>>> = Arc::new(Mutex::new(vec![Leg::default(); calls]));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();

    // Receiver: every packet, timestamped on arrival.
    let receiver = {
        let (rtp, stop, measuring) = (
            rtp.try_clone().expect("clone"),
            stop.clone(),
            measuring.clone(),
        );
        let bridge = o.bridge;
        std::thread::spawn(move || {
            let mut arrivals = Arrivals::default();
            let mut delays = Delays::default();
            receive(
                &rtp,
                &stop,
                || {
                    if bridge {
                        realtime()
                    } else {
                        t0.elapsed().as_secs_f64()
                    }
                },
                |at, p| {
                    let m = measuring.load(Ordering::Relaxed);
                    if bridge {
                        delays.on_packet(at, p, m)
                    } else {
                        arrivals.on_packet(at, p, m)
                    }
                },
            );
            if bridge {
                delays.finish()
            } else {
                arrivals.finish()
            }
        })
    };
    // Bridged mode: the agents' side of the relay.
    let agent_rtp = UdpSocket::bind(("127.0.0.1", AGENT_RTP_PORT)).expect("agent rtp socket");
    let _ = setsockopt(&agent_rtp, sockopt::RcvBufForce, &(32 << 20));
    agent_rtp
        .set_read_timeout(Some(Duration::from_millis(50)))
        .ok();
    let agent_sinks = bind_sinks(o.sinks);
    let agent_receiver = o.bridge.then(|| {
        let (sock, stop, measuring) = (
            agent_rtp.try_clone().expect("clone"),
            stop.clone(),
            measuring.clone(),
        );
        std::thread::spawn(move || {
            let mut delays = Delays::default();
            receive(&sock, &stop, realtime, |at, p| {
                delays.on_packet(at, p, measuring.load(Ordering::Relaxed))
            });
            delays.finish()
        })
    });
    // Sender (with --send-rtp): 50 packets a second per answered call.
    let sent = Arc::new(AtomicU64::new(0));
    let sender = o.send_rtp.then(|| {
        let clone_all = |all: &[(UdpSocket, u16)]| -> Vec<(UdpSocket, u16)> {
            all.iter()
                .map(|(s, p)| (s.try_clone().expect("clone"), *p))
                .collect()
        };
        let (sinks, agent_sinks) = (clone_all(&sinks), clone_all(&agent_sinks));
        let (rtp, stop, legs, sent, measuring) = (
            rtp.try_clone().expect("clone"),
            stop.clone(),
            legs.clone(),
            sent.clone(),
            measuring.clone(),
        );
        let agent_rtp = agent_rtp.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut packet = [0u8; 172];
            packet[0] = 0x80;
            // Each call sends at its own phase of the 20 ms period (call i
            // in millisecond i % 20), as a population of phones does, rather
            // than all at once.
            let mut tick = Instant::now();
            let mut k: u32 = 0;
            let mut targets: Vec<(usize, Option<SocketAddr>, Option<SocketAddr>)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if k % 20 == 0 {
                    targets = legs
                        .lock()
                        .map(|l| {
                            l.iter()
                                .enumerate()
                                .filter(|(_, l)| l.answered)
                                .map(|(i, l)| (i, l.rtp, l.agent_rtp))
                                .collect()
                        })
                        .unwrap_or_default();
                }
                let n = k / 20;
                for &(i, caller_to, agent_to) in
                    targets.iter().filter(|t| t.0 % 20 == (k % 20) as usize)
                {
                    packet[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                    packet[4..8].copy_from_slice(&(n * 160).to_be_bytes());
                    // From the address the call's SDP gave (latching).
                    let sides = [
                        (
                            caller_to,
                            CALLER_SSRC,
                            if i < TIMED {
                                &rtp
                            } else {
                                &sinks[i % sinks.len()].0
                            },
                        ),
                        (
                            agent_to,
                            AGENT_SSRC,
                            if i < TIMED {
                                &agent_rtp
                            } else {
                                &agent_sinks[i % agent_sinks.len()].0
                            },
                        ),
                    ];
                    for (to, base, from) in sides {
                        let Some(to) = to else { continue };
                        packet[8..12].copy_from_slice(&(base + i as u32).to_be_bytes());
                        // The send time, for the far side's relay delay.
                        let now = (realtime() * 1e9) as u64;
                        packet[12..20].copy_from_slice(&now.to_be_bytes());
                        if from.send_to(&packet, to).is_ok() && measuring.load(Ordering::Relaxed) {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                k = k.wrapping_add(1);
                tick += Duration::from_millis(1);
                std::thread::sleep(tick.saturating_duration_since(Instant::now()));
            }
        })
    });

    // SIP: INVITEs at 400 a second, ACK each 200, answer the server's BYEs.
    let invite = |i: usize| {
        let port = if i < TIMED {
            RTP_PORT
        } else {
            sinks[i % sinks.len()].1
        };
        let sdp = format!("v=0\r\no=load {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n");
        let number = if o.bridge && !bridged(i, o) {
            IVR_NUMBER
        } else {
            "800"
        };
        format!("INVITE sip:{number}@{server_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-inv{i}\r\nMax-Forwards: 70\r\nFrom: <sip:9{i}@{me}>;tag=l{i}\r\nTo: <sip:{number}@{server_addr}>\r\nCall-ID: load-{i}\r\nCSeq: 1 INVITE\r\nContact: <sip:load@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())
    };
    let in_dialog = |i: usize, method: &str, cseq: u32, tag: &str| {
        format!("{method} sip:800@{server_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{method}{i}\r\nMax-Forwards: 70\r\nFrom: <sip:9{i}@{me}>;tag=l{i}\r\nTo: <sip:800@{server_addr}>;tag={tag}\r\nCall-ID: load-{i}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n")
    };
    let acd = UdpSocket::bind(("127.0.0.1", ACD_PORT)).expect("acd socket");
    let _ = setsockopt(&acd, sockopt::RcvBufForce, &(4 << 20));
    acd.set_nonblocking(true).ok();
    let acd_addr = acd.local_addr().expect("addr");
    let mut acd_buf = vec![0u8; 65536];
    // The ACD answers every INVITE at once, and every BYE.
    let mut answer_acd = |legs: &Arc<Mutex<Vec<Leg>>>| {
        while let Ok((n, from)) = acd.recv_from(&mut acd_buf) {
            let msg = String::from_utf8_lossy(&acd_buf[..n]).to_string();
            let invite = msg.starts_with("INVITE ");
            if !invite && !msg.starts_with("BYE ") {
                continue;
            }
            let mut reply = String::from("SIP/2.0 200 OK\r\n");
            for l in msg.lines().filter(|l| {
                ["Via:", "From:", "Call-ID:", "CSeq:"]
                    .iter()
                    .any(|h| l.starts_with(h))
            }) {
                reply.push_str(l);
                reply.push_str("\r\n");
            }
            let to = header(&msg, "To").unwrap_or_default();
            if !invite {
                reply.push_str(&format!("To: {to}\r\nContent-Length: 0\r\n\r\n"));
                let _ = acd.send_to(reply.as_bytes(), from);
                continue;
            }
            let Some(i) = header(&msg, "X-Context-n")
                .and_then(|c| c.strip_prefix("9"))
                .and_then(|c| c.parse::<usize>().ok())
                .filter(|i| *i < calls)
            else {
                continue;
            };
            let port = if i < TIMED {
                AGENT_RTP_PORT
            } else {
                agent_sinks[i % agent_sinks.len()].1
            };
            let sdp = format!("v=0\r\no=agent {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n");
            reply.push_str(&format!(
                "To: {to};tag=a{i}\r\nContact: <sip:agent@{acd_addr}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ));
            let _ = acd.send_to(reply.as_bytes(), from);
            if let Ok(mut l) = legs.lock() {
                l[i].agent_rtp = sdp_address(&msg);
            }
        }
    };
    let mut buf = vec![0u8; 65536];
    let mut pump = |legs: &Arc<Mutex<Vec<Leg>>>| {
        answer_acd(legs);
        while let Ok((n, _)) = sip.recv_from(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let Some(i) = header(&msg, "Call-ID")
                .and_then(|c| c.strip_prefix("load-"))
                .and_then(|c| c.parse::<usize>().ok())
                .filter(|i| *i < calls)
            else {
                continue;
            };
            if msg.starts_with("BYE ") {
                let mut reply = String::from("SIP/2.0 200 OK\r\n");
                for l in msg.lines().filter(|l| {
                    ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                        .iter()
                        .any(|h| l.starts_with(h))
                }) {
                    reply.push_str(l);
                    reply.push_str("\r\n");
                }
                reply.push_str("Content-Length: 0\r\n\r\n");
                let _ = sip.send_to(reply.as_bytes(), server_addr);
                if let Ok(mut l) = legs.lock() {
                    l[i].ended_by_server = true;
                }
                continue;
            }
            let invite_ok = msg.starts_with("SIP/2.0 200")
                && header(&msg, "CSeq").is_some_and(|c| c.ends_with("INVITE"));
            if invite_ok {
                let tag = header(&msg, "To")
                    .and_then(|t| t.split(";tag=").nth(1))
                    .map(|t| t.split(';').next().unwrap_or(t).to_string())
                    .unwrap_or_default();
                let _ = sip.send_to(in_dialog(i, "ACK", 1, &tag).as_bytes(), server_addr);
                if let Ok(mut l) = legs.lock() {
                    l[i].answered = true;
                    l[i].rtp = sdp_address(&msg);
                    l[i].to_tag = Some(tag);
                }
            }
        }
    };
    let start = Instant::now();
    for i in 0..calls {
        let _ = sip.send_to(invite(i).as_bytes(), server_addr);
        let due = start + Duration::from_micros(1_000_000 / o.rate * (i as u64 + 1));
        while Instant::now() < due {
            pump(&legs);
        }
    }
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        pump(&legs);
    }
    // The measured window.
    let (user0, system0, _) = proc_times(pid);
    let own0 = own_ticks();
    let w0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    while w0.elapsed() < o.hold {
        pump(&legs);
    }
    measuring.store(false, Ordering::Relaxed);
    let window = w0.elapsed().as_secs_f64();
    let (user1, system1, rss) = proc_times(pid);
    let own1 = own_ticks();
    let snapshot = legs.lock().map(|l| l.clone()).unwrap_or_default();
    for (i, leg) in snapshot.iter().enumerate() {
        if let Some(tag) = &leg.to_tag {
            let _ = sip.send_to(in_dialog(i, "BYE", 2, tag).as_bytes(), server_addr);
        }
    }
    let drain = Instant::now() + Duration::from_secs(1);
    while Instant::now() < drain {
        pump(&legs);
    }
    stop.store(true, Ordering::Relaxed);
    let (lateness, received) = receiver.join().unwrap_or_default();
    let (agent_delays, agent_received) = agent_receiver
        .map(|r| r.join().unwrap_or_default())
        .unwrap_or_default();
    if let Some(s) = sender {
        let _ = s.join();
    }
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let mut err = String::new();
    if let Some(mut e) = server.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let unanswered = snapshot.iter().filter(|l| !l.answered).count();
    let ended = snapshot
        .iter()
        .filter(|l| l.answered && l.ended_by_server)
        .count();
    let failed = unanswered + ended;
    let tick = 100.0; // USER_HZ on Linux
    let user_s = user1.saturating_sub(user0) as f64 / tick;
    let cpu_s = user_s + system1.saturating_sub(system0) as f64 / tick;
    let own_s = (own1 - own0) as f64 / tick;
    let sent_pkts = sent.load(Ordering::Relaxed);
    // Every call streams alike: packets sent = the timed calls' share.
    if o.bridge {
        // Every bridged call relays alike: the timed calls' share, scaled.
        let bridged_calls = (0..calls).filter(|&i| bridged(i, o)).count();
        let scale = bridged_calls as f64 / TIMED.min(calls) as f64;
        let relayed = (received + agent_received) as f64 * scale;
        let mut both: Vec<f64> = lateness
            .iter()
            .chain(agent_delays.iter())
            .copied()
            .collect();
        both.sort_by(f64::total_cmp);
        // Mixed, the server's CPU also serves the IVR calls: per relayed
        // packet it would mean nothing.
        let (what, per_packet) = if o.mixed {
            (
                format!("calls ({bridged_calls} bridged, the rest IVR)"),
                format!("{:.0} pkts/s relayed", relayed / window),
            )
        } else {
            (
                "bridged calls".to_string(),
                format!(
                    "{:>5.2} us per relayed pkt ({:.2} in user space; {:.0} pkts/s relayed)",
                    cpu_s * 1e6 / relayed.max(1.0),
                    user_s * 1e6 / relayed.max(1.0),
                    relayed / window
                ),
            )
        };
        println!(
            "{calls:>6} {what} {failed:>4} failed ({unanswered} unanswered, {ended} ended early) | server cpu {:>4.0}% | {per_packet} | rss {:>5.1} KB/call | relay delay p50 {:>5.0} us p99 {:>6.0} us max {:>7.0} us (caller->agent p99 {:.0}, agent->caller p99 {:.0}) | generator cpu {:>3.0}%",
            cpu_s / window * 100.0,
            rss.saturating_sub(idle_rss) as f64 / calls as f64,
            percentile(&both, 0.5),
            percentile(&both, 0.99),
            both.last().copied().unwrap_or(0.0),
            percentile(&agent_delays, 0.99),
            percentile(&lateness, 0.99),
            own_s / window * 100.0,
        );
        return;
    }
    let packets_out = received as f64 * calls as f64 / TIMED.min(calls) as f64;
    let per_sent = cpu_s * 1e6 / packets_out.max(1.0);
    println!(
        "{calls:>6} calls {failed:>4} failed ({unanswered} unanswered, {ended} ended early) | server cpu {:>4.0}% | {:>5.2} us/pkt sent ({:.2} in user space){} | rss {:>5.1} KB/call | lateness p50 {:>6.0} us p99 {:>6.0} us max {:>7.0} us | generator cpu {:>3.0}%",
        cpu_s / window * 100.0,
        per_sent,
        user_s * 1e6 / packets_out.max(1.0),
        if o.send_rtp {
            format!(" ({} pkts in, {:.2} us/pkt both ways)", sent_pkts, cpu_s * 1e6 / (packets_out + sent_pkts as f64).max(1.0))
        } else {
            String::new()
        },
        rss.saturating_sub(idle_rss) as f64 / calls as f64,
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0.0),
        own_s / window * 100.0,
    );
}

fn main() {
    let o = options();
    // A build named by CALLFLOW_BIN is compared as it is; the tree, which
    // may be mid-edit, is not built for it.
    let built = if std::env::var_os("CALLFLOW_BIN").is_some() {
        Ok(std::process::ExitStatus::default())
    } else {
        Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "--bin", "callflow"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
    };
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("cargo build --release failed");
        return;
    }
    println!(
        "load: {} cores, hold {} s measured, callers {} RTP",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        o.hold.as_secs(),
        if o.send_rtp { "send" } else { "do not send" }
    );
    for &calls in &o.levels {
        run(calls, &o);
    }
}
