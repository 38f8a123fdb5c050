//! Calls through Kamailio (Debian's `kamailio`), a record-routing proxy
//! started by each test on loopback in front of `callflow serve`, as most
//! trunks and SBCs are. Its configuration (`tests/kamailio/proxy.cfg`)
//! relays in-dialog requests only along the route set, so a 200 OK without
//! Record-Route fails every call here, as it did behind real proxies.
//!
//! `.ci/run` installs Kamailio (`apt-get install -y kamailio`).

#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::repo;
use crate::sipp::{free_udp_port, Server};

/// A Kamailio proxy relaying to one callflow server.
pub(crate) struct Proxy {
    child: Child,
    /// Its UDP port.
    pub(crate) port: u16,
    /// Where its log and run files are (and a test's own files may be).
    pub(crate) dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts Kamailio on a free port in front of `uas_port`.
    fn start(uas_port: u16) -> Proxy {
        Self::launch(
            tempfile::tempdir().expect("tempdir"),
            "proxy.cfg",
            &[format!("UAS_PORT={uas_port}")],
        )
    }

    /// Starts Kamailio with `tests/kamailio/{cfg}` and `defines` (each
    /// `NAME=VALUE`), its UDP port free and given as PROXY_PORT, its files
    /// in `dir`.
    pub(crate) fn launch(dir: tempfile::TempDir, cfg: &str, defines: &[String]) -> Proxy {
        Self::launch_file(dir, &repo(&format!("tests/kamailio/{cfg}")), defines)
    }

    /// [`Self::launch`] with a configuration file anywhere.
    pub(crate) fn launch_file(
        dir: tempfile::TempDir,
        cfg: &std::path::Path,
        defines: &[String],
    ) -> Proxy {
        let port = free_udp_port();
        let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log");
        let err = log.try_clone().expect("log");
        let mut command = Command::new("kamailio");
        // Kamailio changes to / after reading its config: absolute paths.
        command
            .arg("-f")
            .arg(cfg)
            .args(["-DD", "-E", "-n", "1", "-m", "32", "-M", "8"])
            .arg("-Y")
            .arg(dir.path().join("run"))
            .args(["-A", &format!("PROXY_PORT={port}")]);
        for define in defines {
            command.args(["-A", define]);
        }
        let child = command
            // Its children outlive a SIGKILL of the main process; a group
            // of their own lets Drop end them all.
            .process_group(0)
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("run kamailio (apt-get install -y kamailio)");
        let proxy = Proxy { child, port, dir };
        proxy.wait_ready();
        proxy
    }

    /// Waits until Kamailio answers an OPTIONS addressed to itself.
    fn wait_ready(&self) {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let me = s.local_addr().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while Instant::now() < deadline {
            n += 1;
            let probe = format!(
                "OPTIONS sip:127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-probe{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=1\r\nTo: <sip:127.0.0.1:{p}>\r\nCall-ID: probe-{n}-{p}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                p = self.port
            );
            let _ = s.send_to(probe.as_bytes(), ("127.0.0.1", self.port));
            if let Ok((len, _)) = s.recv_from(&mut buf) {
                if buf[..len].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
        }
        panic!("kamailio did not start:\n{}", self.log());
    }

    /// What Kamailio logged.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // `--`: without it procps' kill reads `-PGID` as an option and
        // signals every process (kill(-1)), this test runner included.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// A server with a proxy in front of it.
fn behind_proxy() -> (Server, Proxy) {
    let server = Server::start(&[]);
    let proxy = Proxy::start(server.port);
    (server, proxy)
}

/// Runs `scenario` through the proxy; it must pass.
fn through(server: &Server, proxy: &Proxy, scenario: &str, args: &[&str]) -> String {
    let out = server.sipp_to(proxy.port, scenario, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n--- kamailio\n{}",
        server.explain(scenario, &out),
        proxy.log()
    );
    std::fs::read_to_string(server.dir.path().join(format!("{scenario}-messages.log")))
        .unwrap_or_default()
}

#[test]
fn a_call_through_a_record_routing_proxy_is_acked_and_ended_through_it() {
    let (server, proxy) = behind_proxy();
    through(&server, &proxy, "proxy_call", &["-m", "1"]);
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "caller_hung_up", "{r}");
    assert!(r["answer"].is_string(), "{r}");
    assert!(
        !server.log().contains("no ACK"),
        "the ACK came through the proxy:\n{}",
        server.log()
    );
    assert!(server.stop().success());
}

#[test]
fn the_agent_key_transfers_through_the_proxy_with_refer_and_notify() {
    let (server, proxy) = behind_proxy();
    let messages = through(&server, &proxy, "proxy_transfer", &["-m", "1"]);
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "transferred", "{r}");
    assert_eq!(r["detail"], "support");
    // Our in-dialog requests followed the route set: the proxy's Via is on
    // top of the REFER and the BYE that SIPp received.
    let via = format!("Via: SIP/2.0/UDP 127.0.0.1:{};branch=", proxy.port);
    for method in ["REFER", "BYE"] {
        let received = messages
            .split("received [")
            .find(|m| m.contains(&format!("\n{method} sip:")))
            .unwrap_or_else(|| panic!("no {method} in:\n{messages}"));
        assert!(
            received.contains(&via),
            "{method} did not come through the proxy:\n{received}"
        );
    }
    assert!(server.stop().success());
}

#[test]
fn three_hundred_calls_through_the_proxy_all_complete() {
    let (server, proxy) = behind_proxy();
    through(
        &server,
        &proxy,
        "proxy_call",
        &["-m", "300", "-r", "60", "-l", "100"],
    );
    let records = server.records(300);
    assert_eq!(records.len(), 300);
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r["outcome"] != "caller_hung_up" || !r["answer"].is_string())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(server.stop().success());
}
