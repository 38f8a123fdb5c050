//! Registering with a trunk: Kamailio's registrar (Debian's `kamailio`,
//! `tests/kamailio/registrar.cfg`) on loopback challenges our REGISTER,
//! keeps the binding, and routes calls for a number to our registered
//! Contact with the number in the To, as a trunk that wants registration
//! does. callflow removes the binding when it stops.

#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::kamailio::Proxy;
use crate::sipp::Server;

fn registrar() -> Proxy {
    registrar_with(&[])
}

/// The registrar with more `defines` (see `registrar.cfg`).
fn registrar_with(defines: &[String]) -> Proxy {
    let mut all = vec![
        "REG_USER=\"callflow7\"".to_string(),
        "REG_PASSWORD=\"s3cret\"".to_string(),
    ];
    all.extend_from_slice(defines);
    Proxy::launch(tempfile::tempdir().expect("tempdir"), "registrar.cfg", &all)
}

/// callflow registering with the registrar on `port` with `password`.
fn registering(port: u16, password: &str) -> Server {
    registering_with(port, password, "", "")
}

/// As `registering`, with `trunk` added to the trunk's settings and
/// `top` to the config's.
fn registering_with(port: u16, password: &str, trunk: &str, top: &str) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "trunk: {{ address: \"127.0.0.1:{port}\", domain: trunk.test, from: \"37160000000\", username: callflow7, password: \"{password}\", register: {{ expires: 60s }}{trunk} }}\n{top}"
        ),
    )
    .expect("write config");
    Server::start_in(dir, &["--config", &config.display().to_string()])
}

/// Waits up to 10 s for `what` in the server's log.
fn logged(server: &Server, what: &str) -> bool {
    logged_within(server, what, Duration::from_secs(10))
}

/// Waits up to `within` for `what` in the server's log.
fn logged_within(server: &Server, what: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if server.log().contains(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The final status the proxy answers a new INVITE for 8000 with.
fn invite_status(proxy: &Proxy) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let me = s.local_addr().expect("addr");
    let p = proxy.port;
    let invite = format!(
        "INVITE sip:8000@127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-reg-probe;rport\r\nMax-Forwards: 70\r\nFrom: <sip:+37120000000@{me}>;tag=p1\r\nTo: <sip:8000@127.0.0.1:{p}>\r\nCall-ID: reg-probe-{p}\r\nCSeq: 1 INVITE\r\nContact: <sip:probe@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    s.send_to(invite.as_bytes(), ("127.0.0.1", p))
        .expect("send");
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = s.recv_from(&mut buf).expect("an answer");
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let line = text.lines().next().unwrap_or_default().to_string();
        if !line.starts_with("SIP/2.0 1") {
            return line;
        }
    }
}

#[test]
fn registered_with_a_trunk_a_call_for_a_number_comes_to_us_and_stopping_unregisters() {
    let proxy = registrar();
    let server = registering(proxy.port, "s3cret");
    assert!(
        logged(&server, "expires_s=60 refresh_in_s=30"),
        "{}\n--- kamailio\n{}",
        server.log(),
        proxy.log()
    );
    // A call for 8000 at the trunk reaches us by our registration.
    let out = server.sipp_to(proxy.port, "proxy_transfer", &["-m", "1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n--- kamailio\n{}",
        server.explain("proxy_transfer", &out),
        proxy.log()
    );
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "transferred", "{r}");
    assert_eq!(r["called"], "8000", "the number from the To: {r}");
    // Stopping removes the binding: the trunk has nowhere to send calls.
    server.terminate();
    assert!(logged(&server, "registration removed"), "{}", server.log());
    assert!(server.stop().success());
    assert_eq!(invite_status(&proxy), "SIP/2.0 404 Not registered");
}

#[test]
fn a_registration_with_the_wrong_password_fails_and_is_retried_later() {
    let proxy = registrar();
    let server = registering(proxy.port, "wrong");
    assert!(
        logged(&server, "registration failed"),
        "{}\n--- kamailio\n{}",
        server.log(),
        proxy.log()
    );
    let log = server.log();
    assert!(log.contains("refused our credentials"), "{log}");
    assert!(log.contains("retry_in_s="), "{log}");
    assert_eq!(invite_status(&proxy), "SIP/2.0 404 Not registered");
    assert!(server.stop().success());
}

/// RFC 5626 4.4.1 against an independent peer: Kamailio closes a TCP
/// connection idle for 2 s (measured: about 11 s, its reader holds a
/// connection for a while before the lifetime is checked), and answers
/// CRLF pings. Registered over TCP and
/// pinging every 500 ms, we keep our connection (Kamailio's pongs are seen);
/// without pings, Kamailio closes it, which shows the first half is no
/// accident of timing.
#[test]
fn over_tcp_our_keep_alives_hold_the_registrar_connection_open() {
    let lifetime = ["TCP_LIFETIME=2".to_string()];
    let quiet = Duration::from_secs(16);

    let proxy = registrar_with(&lifetime);
    let server = registering_with(
        proxy.port,
        "s3cret",
        ", transport: tcp",
        "streams: { keepalive: 500ms }\n",
    );
    assert!(
        logged(&server, "refresh_in_s=30"),
        "{}\n--- kamailio\n{}",
        server.log(),
        proxy.log()
    );
    assert!(
        logged(&server, "the peer answers keep-alives"),
        "{}",
        server.log()
    );
    std::thread::sleep(quiet);
    let log = server.log();
    assert!(!log.contains("our connection closed"), "{log}");
    assert!(server.stop().success());

    let proxy = registrar_with(&lifetime);
    let server = registering_with(
        proxy.port,
        "s3cret",
        ", transport: tcp",
        "streams: { keepalive: 0s }\n",
    );
    assert!(logged(&server, "refresh_in_s=30"), "{}", server.log());
    assert!(
        logged_within(&server, "our connection closed", quiet),
        "Kamailio should close an idle connection:\n{}\n--- kamailio\n{}",
        server.log(),
        proxy.log()
    );
    let log = server.log();
    assert!(log.contains("closed by the peer"), "{log}");
    assert!(!log.contains("answers keep-alives"), "{log}");
    // Stopping at once, while the closed connection is in its grace
    // period: the unregistration goes on a new one, and is answered.
    server.terminate();
    assert!(logged(&server, "registration removed"), "{}", server.log());
    assert!(server.stop().success());
}
