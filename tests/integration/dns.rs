//! Trunks by name (RFC 3263): NSD (Debian's `nsd`, an authoritative DNS
//! server) is started by each test on loopback with a zone of NAPTR, SRV
//! and A records, and callflow is pointed at it (`dns.servers`). The
//! trunk's first SRV target is out of service, so the callback must be
//! dialled through the second; its answers come from addresses only DNS
//! names, so admission must have learnt them too.
//!
//! `.ci/run` installs NSD (`apt-get install -y nsd`).

#![allow(clippy::disallowed_methods)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::sipp::{callbacks_cli, free_udp_port, sipp_uas, Server};

/// An authoritative server for `example.test` on a loopback port.
struct Nsd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nsd {
    /// Serves `example.test` with `records` (zone file lines, relative
    /// to the origin) besides its SOA and NS.
    fn start(records: &str) -> Nsd {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_udp_port();
        let zone = format!(
            "$ORIGIN example.test.\n$TTL 60\n@ IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 60\n@ IN NS ns.example.test.\nns IN A 127.0.0.1\n{records}\n"
        );
        std::fs::write(dir.path().join("example.test.zone"), zone).expect("zone");
        let d = dir.path().display();
        let conf = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  database: \"\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 2\nremote-control:\n  control-enable: no\nzone:\n  name: example.test\n  zonefile: example.test.zone\n"
        );
        let conf_path = dir.path().join("nsd.conf");
        std::fs::write(&conf_path, conf).expect("nsd.conf");
        let child = Command::new("nsd")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // NSD forks a worker; a group of their own lets Drop end both.
            .process_group(0)
            .spawn()
            .expect("run nsd (apt-get install -y nsd)");
        let log = dir.path().join("nsd.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("nsd started")) {
            assert!(
                Instant::now() < deadline,
                "nsd did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nsd {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .status();
        let _ = self.child.wait();
    }
}

/// The number the caller books.
const NUMBER: &str = "37120000000";

/// Writes a configuration whose trunk is `address` (one, or a YAML list
/// `[a, b]`), located through the name server on `dns_port`, and which
/// takes SIP only from 127.0.0.1 besides what DNS names.
fn config(dir: &Path, address: &str, dns_port: u16, extra: &str) -> String {
    let path = dir.join("config.yaml");
    let address = if address.starts_with('[') {
        address.to_string()
    } else {
        format!("\"{address}\"")
    };
    let text = format!(
        "trunk: {{ address: {address}, domain: trunk.test, from: \"37160000000\", username: callflow, password: s3cret{extra} }}\n\
         dns: {{ servers: \"127.0.0.1:{dns_port}\", timeout: 1s }}\n\
         trunks: {{ callers: {{ sources: 127.0.0.1/32 }} }}\n\
         dialler: {{ poll: 200ms, backoff: [30s] }}\n"
    );
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// Waits up to 20 s for the booked request to be in `state`.
fn wait_state(server: &Server, state: &str) -> String {
    let db = server.dir.path().join("callbacks.db");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = callbacks_cli(&db, &["list", "--state", state]);
        if list.contains(NUMBER) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "the callback never became {state}: {}\n{}",
            callbacks_cli(&db, &["list"]),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn passed(server: &Server, child: Child, scenario: &str) {
    let out = child.wait_with_output().expect("wait for sipp");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        server.explain(scenario, &out)
    );
}

#[test]
fn a_trunk_by_name_is_found_by_naptr_and_srv_and_its_second_server_takes_the_call() {
    let (down_port, up_port) = (free_udp_port(), free_udp_port());
    let dns = Nsd::start(&format!(
        "trunk IN NAPTR 10 50 \"s\" \"SIP+D2U\" \"\" _sip._udp.trunk.example.test.\n\
         _sip._udp.trunk IN SRV 10 0 {down_port} down.example.test.\n\
         _sip._udp.trunk IN SRV 20 0 {up_port} up.example.test.\n\
         down IN A 127.0.0.2\n\
         up IN A 127.0.0.3\n"
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "trunk.example.test", dns.port, "");
    let down = sipp_uas(dir.path(), "trunk_unavailable", "127.0.0.2", down_port, &[]);
    let up = sipp_uas(dir.path(), "trunk_answer", "127.0.0.3", up_port, &[]);
    let server = Server::start_in(dir, &["--route", "8002=cb", "--config", &cfg]);
    server.call("callback_confirm", &[]);
    passed(&server, down, "trunk_unavailable");
    passed(&server, up, "trunk_answer");
    wait_state(&server, "completed");
    let log = server.log();
    assert!(
        log.contains("located") && log.contains("127.0.0.3"),
        "the lookup is in the log: {log}"
    );
    assert!(server.stop().success());
}

#[test]
fn a_refused_connection_moves_the_call_on_at_once_over_tcp() {
    let (refused_port, up_port) = (free_udp_port(), free_udp_port());
    let dns = Nsd::start(&format!(
        "_sip._tcp.trunk IN SRV 10 0 {refused_port} down.example.test.\n\
         _sip._tcp.trunk IN SRV 20 0 {up_port} up.example.test.\n\
         down IN A 127.0.0.2\n\
         up IN A 127.0.0.3\n"
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        "trunk.example.test",
        dns.port,
        ", transport: tcp",
    );
    let up = sipp_uas(
        dir.path(),
        "trunk_answer",
        "127.0.0.3",
        up_port,
        &["-t", "t1"],
    );
    let started = Instant::now();
    let server = Server::start_in(dir, &["--route", "8002=cb", "--config", &cfg]);
    server.call("callback_confirm", &[]);
    passed(&server, up, "trunk_answer");
    wait_state(&server, "completed");
    let log = server.log();
    assert!(
        log.contains("cannot connect") && log.contains("trying the next address"),
        "{log}"
    );
    // Timer B would have taken 32 s; the refused connection takes none.
    assert!(started.elapsed() < Duration::from_secs(30), "{log}");
    assert!(server.stop().success());
}

#[test]
fn a_name_dns_cannot_place_fails_the_attempt_with_why() {
    let dns = Nsd::start("other IN A 127.0.0.2\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "missing.example.test", dns.port, "");
    let server = Server::start_in(dir, &["--route", "8002=cb", "--config", &cfg]);
    server.call("callback_confirm", &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = server.log();
        if log.contains("callback attempt could not start") {
            assert!(
                log.contains("missing.example.test") && log.contains("DNS"),
                "the reason names the lookup: {log}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failed attempt: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let db = server.dir.path().join("callbacks.db");
    let list = callbacks_cli(&db, &["list"]);
    assert!(list.contains(NUMBER), "the request is kept: {list}");
    assert!(server.stop().success());
}

/// A bridged queue by name: the flow's queue URI names `acd.example.test`,
/// whose first server (over TCP) refuses the connection; the call is
/// bridged to the second (over UDP) with audio both ways.
#[test]
fn a_queue_by_name_is_bridged_to_its_second_server_when_the_first_refuses() {
    let (closed, acd_port) = (free_udp_port(), free_udp_port());
    let dns = Nsd::start(&format!(
        "_sip._tcp.acd IN SRV 10 0 {closed} down.example.test.\n\
         _sip._udp.acd IN SRV 10 0 {acd_port} up.example.test.\n\
         down IN A 127.0.0.4\n\
         up IN A 127.0.0.2\n"
    ));
    let files = tempfile::tempdir().expect("tempdir");
    let flows = files.path().join("flows");
    std::fs::create_dir(&flows).expect("flows dir");
    let shipped = crate::common::repo("tests/sipp/flows");
    for entry in std::fs::read_dir(&shipped).expect("flows") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        std::fs::copy(&path, flows.join(name)).expect("copy");
    }
    let bridge = std::fs::read_to_string(shipped.join("bridge.yaml")).expect("bridge.yaml");
    let named = bridge
        .replace("flow: bridge", "flow: bridge_dns")
        .replace("sip:agents@127.0.0.2:5391", "sip:agents@acd.example.test");
    std::fs::write(flows.join("bridge_dns.yaml"), named).expect("write");
    let cfg = files.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "dns: {{ servers: \"127.0.0.1:{}\", timeout: 1s }}\n",
            dns.port
        ),
    )
    .expect("config");
    let server = crate::bridge::bridged_call(
        &[
            "--route",
            "802=bridge_dns",
            "--flows",
            flows.to_str().expect("path"),
            "--config",
            cfg.to_str().expect("path"),
        ],
        acd_port,
        &[],
    );
    let log = server.log();
    assert!(
        log.contains("cannot connect") && log.contains("trying the next address"),
        "{log}"
    );
    assert!(server.stop().success());
}

/// A trunk whose `sources` is a host name: calls from the addresses DNS
/// gives it are taken (their media at those addresses too), and a caller
/// from any other address gets no answer at all.
#[test]
fn a_trunk_named_in_sources_is_admitted_from_the_addresses_dns_gives() {
    let dns = Nsd::start("sbc IN A 127.0.0.5\nsbc IN A 127.0.0.6\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "dns: {{ servers: \"127.0.0.1:{}\", timeout: 1s }}\n\
             trunks: {{ probe: {{ sources: 127.0.0.1/32 }}, carrier: {{ sources: [sbc.example.test] }} }}\n",
            dns.port
        ),
    )
    .expect("write config");
    let server = Server::start_in(dir, &["--config", &path.display().to_string()]);
    for ip in ["127.0.0.5", "127.0.0.6"] {
        let out = server.sipp_from(ip, server.port, "admission_probe", &["-m", "1"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            server.explain("admission_probe", &out)
        );
    }
    let records = server.records(2);
    for ip in ["127.0.0.5", "127.0.0.6"] {
        assert!(
            records
                .iter()
                .any(|r| r["from"].as_str().unwrap_or("").contains(ip)),
            "{records:?}"
        );
    }
    let out = server.sipp_from("127.0.0.9", server.port, "unanswered", &["-m", "1"]);
    let seen = std::fs::read_to_string(server.dir.path().join("unanswered-messages.log"))
        .unwrap_or_default();
    assert!(
        seen.contains("message sent"),
        "{}",
        server.explain("unanswered", &out)
    );
    assert!(
        !seen.contains("message received"),
        "a stranger got an answer:\n{seen}"
    );
    assert!(server.stop().success());
}

/// A trunk with two addresses (a name and an IP address): the first
/// answers 503, so the callback is placed at the second, whose answers
/// are admitted like the first's.
#[test]
fn a_trunk_listing_two_addresses_takes_the_call_at_the_second() {
    let (down_port, up_port) = (free_udp_port(), free_udp_port());
    let dns = Nsd::start("down IN A 127.0.0.2\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!("[\"down.example.test:{down_port}\", \"127.0.0.3:{up_port}\"]"),
        dns.port,
        "",
    );
    let down = sipp_uas(dir.path(), "trunk_unavailable", "127.0.0.2", down_port, &[]);
    let up = sipp_uas(dir.path(), "trunk_answer", "127.0.0.3", up_port, &[]);
    let server = Server::start_in(dir, &["--route", "8002=cb", "--config", &cfg]);
    server.call("callback_confirm", &[]);
    passed(&server, down, "trunk_unavailable");
    passed(&server, up, "trunk_answer");
    wait_state(&server, "completed");
    let log = server.log();
    assert!(log.contains("trying the next address"), "{log}");
    assert!(server.stop().success());
}

/// A reload that bridges to a new name starts following it without
/// forgetting the names followed since the start: the trunk by name still
/// takes a callback afterwards, and the new name is located.
#[test]
fn a_reload_that_adds_a_bridged_name_keeps_the_trunks_name() {
    let up_port = free_udp_port();
    let dns = Nsd::start("trunk IN A 127.0.0.3\nacd IN A 127.0.0.2\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = dir.path().join("flows");
    crate::bridge::copy_flows(&flows, "127.0.0.2:5391", "127.0.0.2:5391");
    let cfg = config(
        dir.path(),
        &format!("trunk.example.test:{up_port}"),
        dns.port,
        "",
    );
    let server = Server::start_in(
        dir,
        &[
            "--route",
            "8002=cb",
            "--config",
            &cfg,
            "--flows",
            flows.to_str().expect("path"),
        ],
    );
    crate::bridge::copy_flows(&flows, "127.0.0.2:5391", "acd.example.test:5391");
    server.reload();
    let log = server.log();
    assert!(
        log.contains("bridge somewhere new") && log.contains("acd.example.test"),
        "{log}"
    );
    let up = sipp_uas(server.dir.path(), "trunk_answer", "127.0.0.3", up_port, &[]);
    server.call("callback_confirm", &[]);
    passed(&server, up, "trunk_answer");
    wait_state(&server, "completed");
    assert!(server.stop().success());
}
