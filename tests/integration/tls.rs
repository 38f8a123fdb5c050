//! SIP over TLS end to end, with Kamailio (Debian's `kamailio` and
//! `kamailio-tls-modules`) on loopback terminating TLS in front of
//! callflow (`tests/kamailio/tls.cfg`). A CA made by the test signs every
//! certificate, and every hop is mutual TLS: Kamailio demands callflow's
//! certificate and callflow (`client_ca`) demands Kamailio's.
//!
//! - SIPp (no TLS in Debian's build) calls Kamailio over UDP, which relays
//!   over TLS to callflow: the agent key, REFER, NOTIFY and BYE.
//! - A TLS client of our own (rustls) calls Kamailio over TLS.
//! - callflow dials a callback over TLS to Kamailio as its trunk, which
//!   carries it to SIPp as the callee.
//!
//! `.ci/run` installs Kamailio's TLS module.

#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;

use crate::kamailio::Proxy;
use crate::sipp::{free_udp_port, sipp_uas, Server};

/// A CA of the test's own, and the certificates it signs.
struct Pki {
    dir: PathBuf,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "callflow TLS test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        Self {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `names`, written as `{file}.pem` and `{file}.key`.
    fn leaf(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, file);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }
}

/// callflow behind Kamailio, TLS between them.
struct Lab {
    server: Server,
    proxy: Proxy,
    /// Kamailio's TLS port.
    proxy_tls: u16,
    /// callflow's TLS port.
    tls_port: u16,
    pki: Pki,
}

/// Starts callflow (TLS on a port of its own, Kamailio's TLS port as its
/// trunk) and Kamailio in front of it, relaying calls to numbers starting
/// 371 to `callee_port`.
fn lab(callee_port: u16) -> Lab {
    lab_with(callee_port, "", &[])
}

/// [`lab`] with `trunk` added to the trunk's settings and `args` to
/// callflow's.
fn lab_with(callee_port: u16, trunk: &str, args: &[&str]) -> Lab {
    let server_dir = tempfile::tempdir().expect("tempdir");
    let proxy_dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(proxy_dir.path());
    // Kamailio's certificate names it, not its address: callflow checks
    // the name the trunk's `tls_name` gives.
    let (proxy_cert, proxy_key) = pki.leaf("proxy", &["proxy.test"]);
    let (our_cert, our_key) = pki.leaf("callflow", &["127.0.0.1"]);
    let module = proxy_dir.path().join("tls-module.cfg");
    let ca = pki.ca();
    let side = |kind: &str| {
        format!(
            "[{kind}:default]\nmethod = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\nprivate_key = {}\ncertificate = {}\nca_list = {}\n\n",
            proxy_key.display(),
            proxy_cert.display(),
            ca.display()
        )
    };
    std::fs::write(&module, side("server") + &side("client")).expect("write");
    let proxy_tls = free_udp_port();
    let tls_port = free_udp_port();
    let config = server_dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "tls: {{ port: {tls_port}, certificate: \"{}\", key: \"{}\", client_ca: \"{}\", ca: \"{}\" }}\n\
             trunk: {{ address: \"127.0.0.1:{proxy_tls}\", transport: tls, tls_name: proxy.test, domain: trunk.test, from: \"37160000000\"{trunk} }}\n\
             dialler: {{ poll: 1s }}\n",
            our_cert.display(),
            our_key.display(),
            ca.display(),
            ca.display()
        ),
    )
    .expect("write config");
    let config = config.display().to_string();
    let mut all = vec!["--route", "8002=cb", "--config", &config];
    all.extend_from_slice(args);
    let server = Server::start_in(server_dir, &all);
    let proxy = Proxy::launch(
        proxy_dir,
        "tls.cfg",
        &[
            format!("PROXY_TLS_PORT={proxy_tls}"),
            format!("UAS_TLS_PORT={tls_port}"),
            format!("CALLEE_PORT={callee_port}"),
            format!("TLS_CONFIG=\"{}\"", module.display()),
        ],
    );
    Lab {
        server,
        proxy,
        proxy_tls,
        tls_port,
        pki,
    }
}

/// The message in SIPp's log of `scenario` that starts with `start`.
fn received(server: &Server, scenario: &str, start: &str) -> String {
    let messages =
        std::fs::read_to_string(server.dir.path().join(format!("{scenario}-messages.log")))
            .unwrap_or_default();
    messages
        .split("received [")
        .find(|m| m.contains(&format!("\n{start}")))
        .unwrap_or_else(|| panic!("no {start} in:\n{messages}"))
        .to_string()
}

#[test]
fn a_call_kamailio_relays_over_tls_is_transferred_and_ended_over_it() {
    let lab = lab(free_udp_port());
    let out = lab
        .server
        .sipp_to(lab.proxy.port, "proxy_transfer", &["-m", "1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n--- kamailio\n{}",
        lab.server.explain("proxy_transfer", &out),
        lab.proxy.log()
    );
    let r = &lab.server.records(1)[0];
    assert_eq!(r["outcome"], "transferred", "{r}");
    assert_eq!(r["detail"], "support");
    // Our REFER and BYE left over TLS, from our TLS port, and came to
    // SIPp through Kamailio.
    let ours = format!("Via: SIP/2.0/TLS 127.0.0.1:{};", lab.tls_port);
    for method in ["REFER sip:", "BYE sip:"] {
        let m = received(&lab.server, "proxy_transfer", method);
        assert!(m.contains(&ours), "{method} not over TLS:\n{m}");
    }
    assert!(lab.server.stop().success());
}

#[test]
fn a_callback_is_dialled_over_tls_through_kamailio() {
    let callee_port = free_udp_port();
    let lab = lab(callee_port);
    let callee = sipp_uas(
        lab.server.dir.path(),
        "proxy_trunk_answer",
        "127.0.0.1",
        callee_port,
        &[],
    );
    lab.server.call("callback_confirm", &[]);
    let out = callee.wait_with_output().expect("wait for sipp");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n--- kamailio\n{}",
        lab.server.explain("proxy_trunk_answer", &out),
        lab.proxy.log()
    );
    let invite = received(
        &lab.server,
        "proxy_trunk_answer",
        "INVITE sip:37120000000@trunk.test",
    );
    assert!(
        invite.contains(&format!("Via: SIP/2.0/TLS 127.0.0.1:{};", lab.tls_port)),
        "the INVITE left callflow over TLS:\n{invite}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let attempt = loop {
        let found = lab
            .server
            .records(2)
            .into_iter()
            .find(|r| r.get("callback").is_some());
        if let Some(r) = found {
            break r;
        }
        assert!(Instant::now() < deadline, "{}", lab.server.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(attempt["outcome"], "transferred", "{attempt}");
    assert_eq!(attempt["callback"]["result"], "completed", "{attempt}");
    assert!(lab.server.stop().success());
}

/// One SIP message read from a stream: headers, then Content-Length bytes.
fn read_message(stream: &mut impl Read) -> String {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read a message");
        bytes.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&bytes).to_string();
    let length: usize = header(&head, "Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("read a body");
    head + &String::from_utf8_lossy(&body)
}

/// The value of the first header `name` in `message`.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

#[test]
fn a_tls_client_calls_through_kamailio_hears_the_greeting_and_hangs_up() {
    let lab = lab(free_udp_port());
    // Our client: trusts the CA, shows a certificate from it.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(lab.pki.ca()).expect("ca") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let (cert, key) = lab.pki.leaf("phone", &["phone.test"]);
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client config");
    let name = rustls::pki_types::ServerName::try_from("proxy.test").expect("name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(("127.0.0.1", lab.proxy_tls)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let me: SocketAddr = tcp.local_addr().expect("addr");
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("rtp");
    rtp.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let rtp_port = rtp.local_addr().expect("addr").port();
    let sdp = format!(
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    let p = lab.proxy_tls;
    let common =
        "From: <sips:+37120000007@phone.test>;tag=phone1\r\nCall-ID: tls-phone-1\r\nMax-Forwards: 70\r\n";
    let invite = format!(
        "INVITE sips:8000@127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-phone1;rport\r\n{common}To: <sips:8000@127.0.0.1:{p}>\r\nCSeq: 1 INVITE\r\nContact: <sips:phone@{me};ob>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    tls.write_all(invite.as_bytes()).expect("send INVITE");
    let ok = loop {
        let m = read_message(&mut tls);
        if m.starts_with("SIP/2.0 1") {
            continue;
        }
        break m;
    };
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}\n{}", lab.proxy.log());
    assert!(
        header(&ok, "Contact").is_some_and(|c| c.starts_with("<sips:callflow@127.0.0.1:")),
        "a sips: INVITE over TLS makes a secure dialog: {ok}"
    );
    // The UAC's route set: the Record-Route, reversed (RFC 3261 12.1.2).
    let mut routes: Vec<&str> = ok
        .lines()
        .filter_map(|l| l.strip_prefix("Record-Route:"))
        .map(str::trim)
        .collect();
    routes.reverse();
    let route_lines: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let to = header(&ok, "To").expect("To").to_string();
    let target = header(&ok, "Contact")
        .and_then(|c| c.strip_prefix('<'))
        .and_then(|c| c.split('>').next())
        .expect("Contact")
        .to_string();
    let ack = format!(
        "ACK {target} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-phone2;rport\r\n{route_lines}{common}To: {to}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(ack.as_bytes()).expect("send ACK");
    // The greeting arrives as RTP.
    let mut buf = [0u8; 2048];
    let mut packets = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while packets < 25 && Instant::now() < until {
        if let Ok((n, _)) = rtp.recv_from(&mut buf) {
            if n == 172 && buf[1] & 0x7f == 0 {
                packets += 1;
            }
        }
    }
    assert_eq!(packets, 25, "the greeting's RTP\n{}", lab.server.log());
    let bye = format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-phone3;rport\r\n{route_lines}{common}To: {to}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(bye.as_bytes()).expect("send BYE");
    let answer = read_message(&mut tls);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert!(answer.contains("CSeq: 2 BYE"), "{answer}");
    let r = &lab.server.records(1)[0];
    assert_eq!(r["outcome"], "caller_hung_up", "{r}");
    assert!(r["answer"].is_string(), "{r}");
    assert!(lab.server.stop().success());
}

/// baresip (Debian's `baresip-core`), a real phone with its own SRTP (the
/// `srtp` module, libre's), calls callflow over TLS with SRTP mandatory
/// (`mediaenc=srtp-mand`). callflow answers `RTP/SAVP` with a key of its
/// own; baresip must decrypt the greeting (its decoded audio, dumped by
/// the `sndfile` module, is not silence), and callflow must decrypt
/// baresip's audio (`--rtp-timeout 3s` would end a call whose packets all
/// failed authentication; baresip hangs up after 8 s instead).
#[test]
fn baresip_calls_over_tls_with_srtp_and_the_audio_gets_through_both_ways() {
    let phone_dir = tempfile::tempdir().expect("tempdir");
    let server_dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(phone_dir.path());
    let (cert, key) = pki.leaf("callflow", &["127.0.0.1"]);
    let tls_port = free_udp_port();
    let config = server_dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "tls: {{ port: {tls_port}, certificate: \"{}\", key: \"{}\" }}\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let server = Server::start_in(
        server_dir,
        &[
            "--config",
            &config.display().to_string(),
            "--rtp-timeout",
            "3s",
            // A flow that talks for longer than baresip stays.
            "--route",
            "800=long",
        ],
    );
    let phone = phone_dir.path();
    baresip_config(
        phone,
        free_udp_port(),
        &pki.ca(),
        "<sip:caller@127.0.0.1;transport=tls>;mediaenc=srtp-mand;regint=0;audio_codecs=PCMU",
    );
    let mut baresip = std::process::Command::new("baresip");
    baresip
        .arg("-f")
        .arg(phone)
        .args(["-n", "127.0.0.1", "-t", "8", "-e"])
        .arg(format!("/dial sip:800@127.0.0.1:{tls_port};transport=tls"));
    let log = srtp_call(baresip, || {}, || server.log());
    let record = &server.records(1)[0];
    assert_eq!(
        record["hung_up_by"],
        "caller",
        "callflow heard baresip's SRTP all along: {record}\n{}",
        server.log()
    );
    let (samples, rms) = decoded_audio(phone, &log);
    assert!(
        samples >= 1600 && rms > 300.0,
        "baresip decrypted our greeting: {samples} samples, rms {rms:.0}"
    );
    assert!(
        !server.log().contains("failed authentication"),
        "{}",
        server.log()
    );
    assert!(server.stop().success());
}

/// How many samples baresip decoded (its `sndfile` dump in `phone`), and
/// their RMS level: silence or noise from a failed decryption is low.
fn decoded_audio(phone: &Path, log: &str) -> (usize, f64) {
    let decoded = std::fs::read_dir(phone)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("no decoded audio dumped: {log}"));
    let samples: Vec<i16> = hound::WavReader::open(&decoded)
        .expect("wav")
        .into_samples::<i16>()
        .map_while(Result::ok)
        .collect();
    let rms = (samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>()
        / samples.len().max(1) as f64)
        .sqrt();
    (samples.len(), rms)
}

/// Writes a baresip configuration in `phone` listening on `port`, with
/// `account` as its only account.
fn baresip_config(phone: &Path, port: u16, ca: &Path, account: &str) {
    std::fs::write(
        phone.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{port}\nsip_cafile {}\n\
             audio_player aubridge,x\naudio_source aubridge,x\naudio_alert aubridge,x\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aubridge.so\n\
             module srtp.so\nmodule sndfile.so\nmodule account.so\nmodule menu.so\n\
             snd_path {}\n",
            ca.display(),
            phone.display()
        ),
    )
    .expect("baresip config");
    std::fs::write(phone.join("accounts"), format!("{account}\n")).expect("accounts");
}

/// SRTP on a call callflow places: a callback through a trunk with
/// `srtp: true`, over TLS to Kamailio, which relays it to baresip as the
/// callee (SRTP mandatory, answering by itself). Our INVITE offers
/// `RTP/SAVP` only; baresip must decrypt the callback's greeting, and
/// callflow must decrypt baresip's audio (`--rtp-timeout 3s` would end a
/// call whose packets all failed).
#[test]
fn a_callback_over_a_tls_trunk_with_srtp_reaches_baresip_encrypted() {
    let callee_port = free_udp_port();
    let lab = lab_with(callee_port, ", srtp: true", &["--rtp-timeout", "3s"]);
    let phone_dir = tempfile::tempdir().expect("tempdir");
    let phone = phone_dir.path();
    baresip_config(
        phone,
        callee_port,
        &lab.pki.ca(),
        "<sip:37120000000@127.0.0.1>;mediaenc=srtp-mand;regint=0;answermode=auto;audio_codecs=PCMU",
    );
    let mut baresip = std::process::Command::new("baresip");
    baresip
        .arg("-f")
        .arg(phone)
        .args(["-n", "127.0.0.1", "-t", "14"]);
    let log = srtp_call(
        baresip,
        || {
            std::thread::sleep(Duration::from_millis(500));
            lab.server.call("callback_confirm", &[]);
        },
        || format!("{}\n--- kamailio\n{}", lab.server.log(), lab.proxy.log()),
    );
    let (samples, rms) = decoded_audio(phone, &log);
    assert!(
        samples >= 1600 && rms > 300.0,
        "baresip decrypted the callback's greeting: {samples} samples, rms {rms:.0}"
    );
    let server_log = lab.server.log();
    assert!(server_log.contains("callback answered"), "{server_log}");
    assert!(
        !server_log.contains("failed authentication"),
        "{server_log}"
    );
    // The callback's flow ran to its end (the greeting, 3 s for a key,
    // the goodbye): no RTP timeout cut it short.
    let attempt = lab
        .server
        .records(2)
        .into_iter()
        .find(|r| r.get("callback").is_some())
        .expect("the callback's record");
    assert_eq!(attempt["detail"], "callback.bye", "{attempt}");
    let call_id = attempt["call_id"].as_str().unwrap_or_default();
    assert!(
        !server_log.contains(&format!(
            "no RTP from the caller; ending the call call_id={call_id}"
        )),
        "{server_log}"
    );
    assert!(lab.server.stop().success());
}

/// Two listen addresses on one IP, each with its own TLS port
/// (`tls.port: [A, B]`): a call over TLS to either is answered by that
/// listener, whose Contact names its own TLS port, and its BYE is taken
/// there. (One TLS port between them could not tell their calls apart.)
#[test]
fn two_listen_addresses_on_one_ip_each_take_tls_on_their_own_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.leaf("callflow", &["127.0.0.1"]);
    let (first, second) = (free_udp_port(), free_udp_port());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "tls: {{ port: [{first}, {second}], certificate: \"{}\", key: \"{}\" }}\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("config");
    let other_listen = format!("127.0.0.1:{}", free_udp_port());
    let config = config.display().to_string();
    let server = Server::start_in(
        dir,
        &[
            "--config",
            &config,
            "--listen",
            &other_listen,
            "--route",
            "800=long",
        ],
    );
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.ca()).expect("ca") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    for (n, port) in [first, second].into_iter().enumerate() {
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let connection = rustls::ClientConnection::new(Arc::clone(&client), name).expect("client");
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("TLS on {port}: {e}\n{}", server.log()));
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let me: SocketAddr = tcp.local_addr().expect("addr");
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        let sdp = "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        let common = format!(
            "From: <sip:+37120000007@phone.test>;tag=p{n}\r\nCall-ID: two-tls-{n}\r\nMax-Forwards: 70\r\nTo: <sip:800@127.0.0.1:{port}>"
        );
        let invite = format!(
            "INVITE sip:800@127.0.0.1:{port};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-two{n}a;rport\r\n{common}\r\nCSeq: 1 INVITE\r\nContact: <sip:phone@{me};transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        tls.write_all(invite.as_bytes()).expect("send INVITE");
        let ok = loop {
            let m = read_message(&mut tls);
            if !m.starts_with("SIP/2.0 1") {
                break m;
            }
        };
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}\n{}", server.log());
        let contact = header(&ok, "Contact").expect("Contact").to_string();
        assert!(
            contact.contains(&format!("127.0.0.1:{port};transport=tls")),
            "listener {n} names its own TLS port: {contact}"
        );
        let to = header(&ok, "To").expect("To").to_string();
        let target = contact
            .trim_start_matches('<')
            .split('>')
            .next()
            .expect("uri")
            .to_string();
        let from_to = common.replace(
            &format!("To: <sip:800@127.0.0.1:{port}>"),
            &format!("To: {to}"),
        );
        let ack = format!(
            "ACK {target} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-two{n}b;rport\r\n{from_to}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        tls.write_all(ack.as_bytes()).expect("send ACK");
        let bye = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-two{n}c;rport\r\n{from_to}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        tls.write_all(bye.as_bytes()).expect("send BYE");
        let answer = read_message(&mut tls);
        assert!(
            answer.starts_with("SIP/2.0 200") && answer.contains("CSeq: 2 BYE"),
            "{answer}\n{}",
            server.log()
        );
    }
    let records = server.records(2);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records.iter().all(|r| r["outcome"] == "caller_hung_up"),
        "{records:?}"
    );
    assert!(server.stop().success());
}

/// Runs baresip as `command` says, does `then` (placing the call, if
/// callflow calls baresip), waits up to 30 s for baresip to quit, and
/// returns what it printed: it must have had an SRTP call established
/// (`context` says what else to show if not).
fn srtp_call(
    mut command: std::process::Command,
    then: impl FnOnce(),
    context: impl Fn() -> String,
) -> String {
    let mut baresip = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run baresip (apt-get install -y baresip-core)");
    then();
    let deadline = Instant::now() + Duration::from_secs(30);
    while baresip.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = baresip.kill();
    let out = baresip.wait_with_output().expect("baresip");
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)")
            && log.contains("Call established"),
        "{log}\n--- server\n{}",
        context()
    );
    log
}
