//! SIP over TLS against TCP and UDP, measured on `callflow serve` (the
//! release build, started here on the `stream` flow with a certificate
//! from a CA made here):
//!
//! - call setup: CLIENTS clients, each on its own connection (or UDP
//!   socket), place calls one after another for SECONDS: INVITE, wait for
//!   the 200, ACK, BYE, wait for its 200. Reported: calls a second, the
//!   server's CPU per call, and failures.
//! - idle connections: N connections opened (over TLS: handshake done),
//!   each sends one OPTIONS and gets its 200, then stays silent; the
//!   server's RSS before and after, per connection.
//!
//! `cargo bench --bench tls -- [--clients N] [--seconds S] [--idle N]`
//! (default 16 clients, 10 s, 1000 idle connections). The clients run on
//! the same machine, so on a small one they compete with the server; the
//! report shows their CPU share too.

// A benchmark is an IO edge: it reads the clock.
#![allow(clippy::disallowed_methods)]

mod common;
use common::proc_stats;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;

const SIP_PORT: u16 = 5986;
const TLS_PORT: u16 = 5987;

struct Options {
    clients: usize,
    seconds: u64,
    idle: usize,
}

fn options() -> Options {
    let mut o = Options {
        clients: 16,
        seconds: 10,
        idle: 1000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), value) {
            ("--clients", Some(v)) => o.clients = v as usize,
            ("--seconds", Some(v)) => o.seconds = v,
            ("--idle", Some(v)) => o.idle = v as usize,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// A CA, and the server's certificate and key, as PEM files in `dir`;
/// the CA's certificate for the clients.
fn pki(dir: &std::path::Path) -> rustls::RootCertStore {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("key"))
        .expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("sign");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("pem"))
        .expect("root");
    roots
}

fn start_server(dir: &std::path::Path) -> Child {
    let root = env!("CARGO_MANIFEST_DIR");
    let bin =
        std::env::var("CALLFLOW_BIN").unwrap_or_else(|_| format!("{root}/target/release/callflow"));
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "tcp: true\ntls: {{ port: {TLS_PORT}, certificate: \"{}\", key: \"{}\" }}\n",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ),
    )
    .expect("config");
    let child = Command::new(&bin)
        .current_dir(root)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{SIP_PORT}")])
        .args(["--rtp-ports", "20000-45000", "--flows", "benches/flows"])
        .args(["--default-flow", "stream"])
        .arg("--call-records")
        .arg(dir.join("calls.jsonl"))
        .arg("--callbacks")
        .arg(dir.join("callbacks.db"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (cargo build --release first)"));
    std::thread::sleep(Duration::from_millis(800));
    child
}

/// How a client talks to the server.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Udp,
    Tcp,
    Tls,
}

impl Kind {
    fn token(self) -> &'static str {
        match self {
            Kind::Udp => "UDP",
            Kind::Tcp => "TCP",
            Kind::Tls => "TLS",
        }
    }
}

/// A client's connection: messages in and out.
enum Conn {
    Udp(UdpSocket),
    Stream(Box<dyn ReadWrite>, Vec<u8>),
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

impl Conn {
    /// A connection from `source` (a loopback address).
    fn open(
        kind: Kind,
        tls: &Arc<rustls::ClientConfig>,
        source: std::net::Ipv4Addr,
    ) -> std::io::Result<(Conn, SocketAddr)> {
        match kind {
            Kind::Udp => {
                let s = UdpSocket::bind((source, 0))?;
                s.connect(("127.0.0.1", SIP_PORT))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let me = s.local_addr()?;
                Ok((Conn::Udp(s), me))
            }
            Kind::Tcp | Kind::Tls => {
                let port = if kind == Kind::Tls {
                    TLS_PORT
                } else {
                    SIP_PORT
                };
                let socket = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                socket.bind(&SocketAddr::from((source, 0)).into())?;
                socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
                let s: TcpStream = socket.into();
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let me = s.local_addr()?;
                let stream: Box<dyn ReadWrite> = if kind == Kind::Tls {
                    let name = rustls::pki_types::ServerName::IpAddress(
                        std::net::IpAddr::from([127, 0, 0, 1]).into(),
                    );
                    let c = rustls::ClientConnection::new(Arc::clone(tls), name)
                        .map_err(std::io::Error::other)?;
                    let mut t = rustls::StreamOwned::new(c, s);
                    // Finish the handshake now, not with the first message.
                    while t.conn.is_handshaking() {
                        t.conn.complete_io(&mut t.sock)?;
                    }
                    Box::new(t)
                } else {
                    Box::new(s)
                };
                Ok((Conn::Stream(stream, Vec::new()), me))
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Udp(s) => s.send(bytes).map(|_| ()),
            Conn::Stream(s, _) => {
                s.write_all(bytes)?;
                s.flush()
            }
        }
    }

    /// The next message.
    fn recv(&mut self) -> std::io::Result<String> {
        match self {
            Conn::Udp(s) => {
                let mut buf = [0u8; 4096];
                let n = s.recv(&mut buf)?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            }
            Conn::Stream(s, pending) => loop {
                if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
                    let length: usize = header(&head, "Content-Length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if pending.len() >= end + 4 + length {
                        let message: Vec<u8> = pending.drain(..end + 4 + length).collect();
                        return Ok(String::from_utf8_lossy(&message).into_owned());
                    }
                }
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                pending.extend_from_slice(&buf[..n]);
            },
        }
    }

    /// The next final response to `cseq`.
    fn final_for(&mut self, cseq: &str) -> std::io::Result<String> {
        loop {
            let m = self.recv()?;
            if m.starts_with("SIP/2.0 1") || !m.contains(cseq) {
                continue;
            }
            return Ok(m);
        }
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// One call: INVITE, 200, ACK, BYE, 200. Whether it went through.
fn call(conn: &mut Conn, kind: Kind, me: SocketAddr, id: &str) -> std::io::Result<bool> {
    let t = kind.token();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
    let from = format!("From: <sip:+37120000000@{me}>;tag=b{id}\r\nCall-ID: {id}\r\n");
    let invite = format!(
        "INVITE sip:8000@127.0.0.1:{SIP_PORT} SIP/2.0\r\nVia: SIP/2.0/{t} {me};branch=z9hG4bK{id}i;rport\r\nMax-Forwards: 70\r\n{from}To: <sip:8000@127.0.0.1>\r\nCSeq: 1 INVITE\r\nContact: <sip:b@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    conn.send(invite.as_bytes())?;
    let ok = conn.final_for("1 INVITE")?;
    if !ok.starts_with("SIP/2.0 200") {
        return Ok(false);
    }
    let to = header(&ok, "To").unwrap_or_default().to_string();
    let ack = format!(
        "ACK sip:8000@127.0.0.1:{SIP_PORT} SIP/2.0\r\nVia: SIP/2.0/{t} {me};branch=z9hG4bK{id}a;rport\r\nMax-Forwards: 70\r\n{from}To: {to}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    conn.send(ack.as_bytes())?;
    let bye = format!(
        "BYE sip:8000@127.0.0.1:{SIP_PORT} SIP/2.0\r\nVia: SIP/2.0/{t} {me};branch=z9hG4bK{id}b;rport\r\nMax-Forwards: 70\r\n{from}To: {to}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    conn.send(bye.as_bytes())?;
    Ok(conn.final_for("2 BYE")?.starts_with("SIP/2.0 200"))
}

fn setup_rate(kind: Kind, o: &Options, tls: &Arc<rustls::ClientConfig>, pid: u32) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (cpu0, _) = proc_stats(pid);
    let own0 = proc_stats(std::process::id()).0;
    let started = Instant::now();
    let threads: Vec<_> = (0..o.clients)
        .map(|c| {
            let (stop, done, failed, tls) = (
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&failed),
                Arc::clone(tls),
            );
            std::thread::spawn(move || {
                let Ok((mut conn, me)) = Conn::open(kind, &tls, [127, 0, 0, 1].into()) else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match call(&mut conn, kind, me, &format!("{}-{c}-{n}", kind.token())) {
                        Ok(true) => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(o.seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, _) = proc_stats(pid);
    let own1 = proc_stats(std::process::id()).0;
    let calls = done.load(Ordering::Relaxed);
    let tick = 100.0; // USER_HZ
    let cpu = (cpu1 - cpu0) as f64 / tick;
    println!(
        "call setup over {}: {:.0} calls/s ({calls} in {secs:.1} s, {} failed), server CPU {:.0}% = {:.0} us a call, clients' CPU {:.0}%",
        kind.token(),
        calls as f64 / secs,
        failed.load(Ordering::Relaxed),
        100.0 * cpu / secs,
        1e6 * cpu / calls.max(1) as f64,
        100.0 * (own1 - own0) as f64 / tick / secs,
    );
}

fn idle_connections(kind: Kind, n: usize, tls: &Arc<rustls::ClientConfig>, pid: u32) {
    let (_, rss0) = proc_stats(pid);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        // 50 from each address: under the bound of 64 per source.
        let a = i / 50;
        let source = std::net::Ipv4Addr::new(127, 1, (a / 250) as u8, (a % 250 + 1) as u8);
        let Ok((mut conn, me)) = Conn::open(kind, tls, source) else {
            break;
        };
        let options = format!(
            "OPTIONS sip:127.0.0.1:{SIP_PORT} SIP/2.0\r\nVia: SIP/2.0/{} {me};branch=z9hG4bKo{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:i@{me}>;tag=o{i}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: idle-{i}-{}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            kind.token(),
            kind.token()
        );
        if conn.send(options.as_bytes()).is_err() || conn.final_for("1 OPTIONS").is_err() {
            break;
        }
        held.push(conn);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (_, rss1) = proc_stats(pid);
    println!(
        "idle connections over {}: {} held, server RSS {} -> {} KB, {:.1} KB a connection",
        kind.token(),
        held.len(),
        rss0,
        rss1,
        (rss1 as f64 - rss0 as f64) / held.len().max(1) as f64
    );
    drop(held);
    std::thread::sleep(Duration::from_secs(1));
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().expect("tempdir");
    let roots = pki(dir.path());
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    // Each idle measurement on a fresh server: memory freed by earlier
    // work would be reused and hide what connections take.
    for kind in [Kind::Tcp, Kind::Tls] {
        let mut server = start_server(dir.path());
        idle_connections(kind, o.idle, &tls, server.id());
        let _ = server.kill();
        let _ = server.wait();
    }
    let mut server = start_server(dir.path());
    for kind in [Kind::Udp, Kind::Tcp, Kind::Tls] {
        setup_rate(kind, &o, &tls, server.id());
    }
    let _ = server.kill();
    let _ = server.wait();
}
