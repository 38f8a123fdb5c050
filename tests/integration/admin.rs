//! The admin HTTP listener against a running server: metrics scraped
//! during a SIPp load and checked against SIPp's own counts, readiness
//! through a drain, calls in progress, reloads and the callback list.

// The tests wait on the real clock for a real server.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::repo;
use crate::sipp::Server;

/// The admin token the tests configure.
const TOKEN: &str = "test-token-0123456789";

/// A loopback TCP port free at the moment.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One HTTP/1.1 request to the admin listener: the status and the body.
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin port");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // The server answers `Connection: close` requests unchunked, or in
    // chunks; undo the chunks.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The value of the sample `series` (name and labels, as written) in a
/// scrape, if there.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The sum of every sample of `family` whose labels contain `with`.
fn sum(text: &str, family: &str, with: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A server with the admin listener on, its flows in a copy that a test
/// may break; returns the server and the admin port.
fn start(dir: tempfile::TempDir, extra: &[&str]) -> (Server, u16, std::path::PathBuf) {
    let admin = free_tcp_port();
    let flows = dir.path().join("flows");
    copy_dir(&repo("tests/sipp/flows"), &flows);
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!("node: node-a\nadmin:\n  listen: 127.0.0.1:{admin}\n  token: {TOKEN}\n"),
    )
    .expect("write config");
    let mut args = vec![
        "--config",
        config.to_str().expect("path"),
        "--flows",
        flows.to_str().expect("path"),
    ];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_in(dir, &args);
    (server, admin, flows)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read flows") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// SIPp's message counts (`-trace_counts`): the last line, by column.
fn sipp_counts(dir: &Path) -> HashMap<String, u64> {
    let file = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with("_counts.csv"))
        .expect("SIPp's counts file");
    let text = std::fs::read_to_string(file.path()).expect("read counts");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(';').collect();
    let last: Vec<&str> = lines.last().expect("values").split(';').collect();
    header
        .iter()
        .zip(last)
        .filter_map(|(h, v)| Some((h.to_string(), v.parse().ok()?)))
        .collect()
}

#[test]
fn metrics_scraped_during_a_sipp_load_match_what_sipp_counted() {
    let (server, admin, _) = start(tempfile::tempdir().expect("tempdir"), &[]);
    assert_eq!(http(admin, "GET", "/health", None).0, 200);
    assert_eq!(http(admin, "GET", "/ready", None).0, 200);
    assert_eq!(http(admin, "GET", "/metrics", None).0, 401);
    assert_eq!(
        http(admin, "GET", "/metrics", Some("test-token-0123456780")).0,
        401
    );
    assert_eq!(http(admin, "GET", "/calls", None).0, 401);

    let calls = 300;
    let sipp = server
        .sipp_command(
            "127.0.0.1",
            server.port,
            "load",
            &[
                "-m",
                &calls.to_string(),
                "-l",
                "80",
                "-r",
                "100",
                "-trace_counts",
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sipp");
    // Mid-load: calls are in progress, and both lists say so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (during, listed) = loop {
        let (status, text) = http(admin, "GET", "/metrics", Some(TOKEN));
        assert_eq!(status, 200, "{text}");
        let active = sum(&text, "callflow_calls_active", "flow=\"e2e\"");
        if active > 0.0 {
            let (status, list) = http(admin, "GET", "/calls", Some(TOKEN));
            assert_eq!(status, 200);
            break (active, list);
        }
        assert!(
            Instant::now() < deadline,
            "no call seen in progress:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let list: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(list["node"], "node-a");
    let in_progress = list["calls"].as_array().expect("calls");
    assert!(!in_progress.is_empty(), "{list}");
    assert!(
        in_progress
            .iter()
            .all(|c| c["flow"] == "e2e" && c["caller"] == "+37120000000"),
        "{list}"
    );
    let out = sipp.wait_with_output().expect("sipp");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        server.explain("load", &out)
    );
    assert_eq!(server.records(calls).len(), calls);

    let (_, text) = http(admin, "GET", "/metrics", Some(TOKEN));
    let sipp = sipp_counts(server.dir.path());
    let sent = |m: &str| sipp[&format!("{m}_Sent")] + sipp[&format!("{m}_Retrans")];
    let got = |series: &str| sample(&text, series).unwrap_or(0.0) as u64;
    // What SIPp sent (retransmissions too) is what callflow took.
    assert_eq!(
        got("callflow_sip_requests_total{method=\"INVITE\",direction=\"received\"}"),
        sent("0_INVITE"),
        "{text}"
    );
    assert_eq!(
        got("callflow_sip_requests_total{method=\"ACK\",direction=\"received\"}"),
        sent("3_ACK")
    );
    assert_eq!(
        got("callflow_sip_requests_total{method=\"BYE\",direction=\"received\"}"),
        sent("5_BYE")
    );
    // Every 200 callflow sent reached SIPp (for the INVITE and the BYE),
    // but those answering the start-up OPTIONS pings.
    let seen = |m: &str| {
        sipp[&format!("{m}_Recv")] + sipp[&format!("{m}_Retrans")] + sipp[&format!("{m}_Unexp")]
    };
    let options = got("callflow_sip_requests_total{method=\"OPTIONS\",direction=\"received\"}");
    assert_eq!(
        got("callflow_sip_responses_total{status=\"200\",direction=\"sent\"}"),
        seen("2_200") + seen("6_200") + options,
        "{text}"
    );
    assert_eq!(
        got("callflow_call_setups_total{direction=\"inbound\"}"),
        calls as u64
    );
    assert_eq!(
        got("callflow_calls_total{flow=\"e2e\",outcome=\"caller_hung_up\"}"),
        calls as u64
    );
    assert!(got("callflow_rtp_packets_total{direction=\"sent\"}") > calls as u64 * 10);
    assert_eq!(
        got("callflow_rtp_pacing_lateness_seconds_count"),
        got("callflow_rtp_packets_total{direction=\"sent\"}")
    );
    assert_eq!(sum(&text, "callflow_calls_active", ""), 0.0, "{text}");
    assert_eq!(got("callflow_callback_store_up"), 1);
    assert!(during > 0.0);
}

#[test]
fn ready_flips_during_a_drain_while_health_stays_up() {
    let (server, admin, _) = start(tempfile::tempdir().expect("tempdir"), &["--drain", "2s"]);
    assert_eq!(http(admin, "GET", "/ready", None).0, 200);
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| server.sipp("drain", &["-m", "1"]));
        std::thread::sleep(Duration::from_millis(600));
        server.terminate();
        let deadline = Instant::now() + Duration::from_secs(2);
        let (status, body) = loop {
            let (status, body) = http(admin, "GET", "/ready", None);
            if status != 200 || Instant::now() > deadline {
                break (status, body);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("draining"), "{body}");
        // The loops still turn: healthy, only not taking calls.
        assert_eq!(http(admin, "GET", "/health", None).0, 200);
        let (_, text) = http(admin, "GET", "/metrics", Some(TOKEN));
        assert_eq!(sample(&text, "callflow_draining"), Some(1.0), "{text}");
        let out = caller.join().expect("sipp thread");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            server.explain("drain", &out)
        );
    });
    assert!(server.stop().success());
}

#[test]
fn a_bad_reload_is_refused_with_its_errors_and_the_last_good_flows_answer() {
    let (server, admin, flows) = start(tempfile::tempdir().expect("tempdir"), &[]);
    assert_eq!(http(admin, "POST", "/reload", None).0, 401);
    let (status, body) = http(admin, "POST", "/reload", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"reloaded\":true"), "{body}");

    let broken = flows.join("e2e.yaml");
    let good = std::fs::read_to_string(&broken).expect("read");
    std::fs::write(&broken, good.replacen("nodes:", "nodes:\n  oops: {", 1)).expect("break");
    let (status, body) = http(admin, "POST", "/reload", Some(TOKEN));
    assert_eq!(status, 422, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["reloaded"], false);
    let error = answer["error"].as_str().expect("error");
    assert!(
        error.contains("e2e.yaml:"),
        "file, line and column: {error}"
    );
    // The last good flows still take calls.
    server.call("load", &[]);
    assert_eq!(server.records(1)[0]["flow"], "e2e");

    let (status, body) = http(admin, "GET", "/callbacks?state=pending", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "{\"callbacks\":[]}");
    let (status, body) = http(admin, "GET", "/callbacks?state=lost", Some(TOKEN));
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        http(admin, "GET", "/callbacks?colour=red", Some(TOKEN)).0,
        400
    );
}

/// The callback store stuck behind another process's write lock: the node
/// says it is not ready, to `/ready` and to load balancers' OPTIONS
/// probes, and is ready again once the store answers.
#[test]
fn a_stuck_callback_store_makes_the_node_not_ready_until_it_answers() {
    let (server, admin, _) = start(
        tempfile::tempdir().expect("tempdir"),
        &["--route", "8002=cb"],
    );
    assert_eq!(http(admin, "GET", "/ready", None).0, 200);
    let db = rusqlite::Connection::open(server.dir.path().join("callbacks.db")).expect("open");
    db.execute_batch("BEGIN IMMEDIATE")
        .expect("hold the write lock");
    std::thread::scope(|scope| {
        // The caller's booking waits for the lock, and the store with it.
        let caller = scope.spawn(|| server.sipp("callback_confirm", &["-m", "1"]));
        let deadline = Instant::now() + Duration::from_secs(8);
        let (status, body) = loop {
            let (status, body) = http(admin, "GET", "/ready", None);
            if status != 200 || Instant::now() > deadline {
                break (status, body);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("callback store"), "{body}");
        // Not ready once the store has not answered for 5 s.
        let deadline = Instant::now() + Duration::from_secs(9);
        // A new transaction each time: a repeated branch would get the
        // first answer again.
        let mut probes = 0u32..;
        while !crate::sipp::raw_options(
            server.port,
            &format!("stuck-{}", probes.next().unwrap_or_default()),
        )
        .starts_with("SIP/2.0 503")
        {
            assert!(
                Instant::now() < deadline,
                "probes still hear 200:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        db.execute_batch("ROLLBACK").expect("let go");
        let out = caller.join().expect("sipp thread");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            server.explain("callback_confirm", &out)
        );
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut probes = 0u32..;
    while !crate::sipp::raw_options(
        server.port,
        &format!("unstuck-{}", probes.next().unwrap_or_default()),
    )
    .starts_with("SIP/2.0 200")
    {
        assert!(
            Instant::now() < deadline,
            "not ready again:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http(admin, "GET", "/ready", None).0, 200);
    let (_, body) = http(
        admin,
        "GET",
        "/callbacks?state=pending&queue=support",
        Some(TOKEN),
    );
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(list["callbacks"][0]["number"], "37120000000", "{body}");
}
