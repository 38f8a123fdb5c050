//! End-to-end tests of keeping callback promises: SIPp plays the caller who
//! books a callback (flow `cb`, route 8002) and, as a second process, the
//! trunk that receives callflow's outbound INVITE: it challenges, answers,
//! is busy or does not answer, presses the key and takes the REFER to the
//! queue. The tests then check the callback database through the admin CLI
//! and the call records.

#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::sipp::{callbacks_cli, free_udp_port, sipp_uas, Server};

/// The number the caller books (SIPp's From, as the dialling policy keeps it).
const NUMBER: &str = "37120000000";

/// Writes the server configuration for a trunk on `trunk_port`.
fn config(dir: &Path, trunk_port: u16, dialler: &str) -> String {
    let path = dir.join("config.yaml");
    let text = format!(
        "trunk: {{ address: \"127.0.0.1:{trunk_port}\", domain: trunk.test, from: \"37160000000\", username: callflow, password: s3cret }}\ndialler: {{ {dialler} }}\n"
    );
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// SIPp as the trunk: one call of `scenario`, listening on `port`.
fn trunk(dir: &Path, scenario: &str, port: u16) -> Child {
    sipp_uas(dir, scenario, "127.0.0.1", port, &[])
}

/// A server in `dir` whose trunk is SIPp playing `scenario` on a port of
/// its own, with the `dialler` settings; returns the trunk's port too.
fn with_trunk(dir: tempfile::TempDir, scenario: &str, dialler: &str) -> (Server, Child, u16) {
    let trunk_port = free_udp_port();
    let cfg = config(dir.path(), trunk_port, dialler);
    let sipp = trunk(dir.path(), scenario, trunk_port);
    let server = Server::start_in(dir, &["--route", "8002=cb", "--config", &cfg]);
    (server, sipp, trunk_port)
}

/// [`with_trunk`] in a new directory, after a caller booked a callback.
fn booked(scenario: &str, dialler: &str) -> (Server, Child, u16) {
    let (server, sipp, port) = with_trunk(tempfile::tempdir().expect("tempdir"), scenario, dialler);
    server.call("callback_confirm", &[]);
    (server, sipp, port)
}

/// Waits for the trunk's SIPp, which must have passed its one call.
fn trunk_passed(server: &Server, child: Child, scenario: &str) {
    let out = child.wait_with_output().expect("wait for sipp");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        server.explain(scenario, &out)
    );
}

/// Waits up to 10 s for the request to be in `state`.
fn wait_state(server: &Server, state: &str) -> String {
    let db = server.dir.path().join("callbacks.db");
    let deadline = Instant::now() + Duration::from_secs(10);
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

/// The records of calls we placed for callbacks, in attempt order.
fn attempts(server: &Server, n: usize) -> Vec<Value> {
    let mut found: Vec<Value> = server
        .records(n + 1)
        .into_iter()
        .filter(|r| r.get("callback").is_some())
        .collect();
    found.sort_by_key(|r| r["callback"]["attempt"].as_u64());
    assert_eq!(found.len(), n, "{found:?}\n{}", server.log());
    found
}

fn time(record: &Value, field: &str) -> DateTime<Utc> {
    record[field]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("no {field} in {record}"))
}

#[test]
fn a_booked_callback_is_dialled_through_a_challenging_trunk_and_handed_to_the_queue() {
    let (server, sipp, _) = booked("trunk_auth", "poll: 1s");
    trunk_passed(&server, sipp, "trunk_auth");
    wait_state(&server, "completed");
    let record = &attempts(&server, 1)[0];
    assert_eq!(record["outcome"], "transferred", "{record}");
    assert_eq!(record["callback"]["result"], "completed", "{record}");
    assert_eq!(record["caller"], NUMBER, "{record}");
    assert_eq!(record["flow"], "callback", "{record}");
    assert_eq!(record["digits"], "1", "{record}");
    let booking = server
        .records(2)
        .into_iter()
        .find(|r| r["outcome"] == "callback_requested")
        .expect("the booking call's record");
    assert_eq!(
        booking["callback_id"], record["callback"]["id"],
        "the records link the booking to its attempts: {booking}"
    );
    // For the closing note: confirmed request to outbound INVITE.
    if let Some(us) = server
        .log()
        .split("since_request_us=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next().map(str::to_string))
    {
        eprintln!("request stored -> INVITE sent: {us} us");
    }
    assert!(server.stop().success());
}

#[test]
fn a_busy_callee_is_dialled_again_after_the_back_off() {
    let (server, busy, trunk_port) =
        booked("trunk_busy", "backoff: [2s], max_attempts: 3, poll: 100ms");
    trunk_passed(&server, busy, "trunk_busy");
    let answer = trunk(server.dir.path(), "trunk_answer", trunk_port);
    trunk_passed(&server, answer, "trunk_answer");
    wait_state(&server, "completed");
    let tries = attempts(&server, 2);
    assert_eq!(tries[0]["outcome"], "busy", "{}", tries[0]);
    assert_eq!(tries[0]["callback"]["result"], "busy");
    assert_eq!(tries[1]["callback"]["result"], "completed", "{}", tries[1]);
    let gap = time(&tries[1], "start") - time(&tries[0], "end");
    assert!(
        gap >= chrono::TimeDelta::milliseconds(1900),
        "the second attempt waited for the back-off: {gap}"
    );
    assert!(server.stop().success());
}

#[test]
fn an_unanswered_callback_is_cancelled_after_the_ring_timeout() {
    let (server, sipp, _) = booked(
        "trunk_no_answer",
        "ring_timeout: 2s, max_attempts: 1, poll: 100ms",
    );
    trunk_passed(&server, sipp, "trunk_no_answer");
    let list = wait_state(&server, "failed");
    assert!(list.contains("no-answer"), "{list}");
    let record = &attempts(&server, 1)[0];
    assert_eq!(record["outcome"], "no_answer", "{record}");
    let rang = time(record, "end") - time(record, "start");
    assert!(
        rang >= chrono::TimeDelta::milliseconds(1900),
        "CANCEL only after the ring timeout: {rang}"
    );
    assert!(server.stop().success());
}

#[test]
fn a_callback_booked_before_a_kill_9_is_dialled_after_the_restart() {
    let mut first = Server::start(&["--route", "8002=cb"]);
    let db = first.dir.path().join("callbacks.db");
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| first.sipp("callback_confirm", &["-m", "1", "-timeout", "5s"]));
        // The request is committed before the confirmation prompt starts;
        // kill the engine the moment it is there.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !callbacks_cli(&db, &["list"]).contains(NUMBER) {
            assert!(Instant::now() < deadline, "no callback was stored");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(first.child.id().to_string())
            .status();
        let _ = caller.join();
    });
    let _ = first.child.wait();
    let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().expect("tempdir"));
    drop(first);
    let (second, sipp, _) = with_trunk(dir, "trunk_answer", "poll: 100ms");
    trunk_passed(&second, sipp, "trunk_answer");
    wait_state(&second, "completed");
    assert!(second.stop().success());
}

#[test]
fn a_callback_ringing_when_the_engine_is_killed_is_dialled_again_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The first trunk is a bare socket: it takes the INVITE and says nothing,
    // so the request is `dialling` when the engine dies.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let silent_port = silent.local_addr().expect("addr").port();
    let cfg = config(dir.path(), silent_port, "poll: 100ms");
    let mut first = Server::start_in(dir, &["--route", "8002=cb", "--config", &cfg]);
    first.call("callback_confirm", &[]);
    let mut buf = [0u8; 4096];
    let (n, _) = silent.recv_from(&mut buf).expect("the callback INVITE");
    assert!(buf[..n].starts_with(b"INVITE sip:37120000000@trunk.test"));
    wait_state(&first, "dialling");
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(first.child.id().to_string())
        .status();
    let _ = first.child.wait();
    let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().expect("tempdir"));
    drop(first);
    let (second, sipp, _) = with_trunk(dir, "trunk_answer", "poll: 100ms");
    trunk_passed(&second, sipp, "trunk_answer");
    wait_state(&second, "completed");
    let db = second.dir.path().join("callbacks.db");
    let shown = callbacks_cli(&db, &["show", "1"]);
    let attempts: Vec<&str> = shown.lines().filter(|l| l.starts_with("attempt")).collect();
    assert_eq!(attempts.len(), 2, "{shown}");
    assert!(attempts[0].ends_with("interrupted"), "{shown}");
    assert!(attempts[1].ends_with("completed"), "{shown}");
    assert!(second.stop().success());
}

#[test]
fn an_admin_cancel_ends_the_callback_call_that_is_ringing() {
    let (server, sipp, _) = booked("trunk_no_answer", "ring_timeout: 30s, poll: 100ms");
    wait_state(&server, "dialling");
    let db = server.dir.path().join("callbacks.db");
    assert!(callbacks_cli(&db, &["cancel", "1"]).contains("cancelled"));
    // The trunk's scenario passes only if a CANCEL comes, long before the
    // 30 s ring timeout could send one.
    trunk_passed(&server, sipp, "trunk_no_answer");
    wait_state(&server, "cancelled");
    let record = &attempts(&server, 1)[0];
    assert!(
        record["detail"]
            .as_str()
            .is_some_and(|d| d.contains("cancelled by an admin")),
        "{record}"
    );
    let rang = time(record, "end") - time(record, "start");
    assert!(rang < chrono::TimeDelta::seconds(10), "{rang}");
    assert!(server.stop().success());
}

#[test]
fn a_spoofed_premium_from_is_never_called_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The trunk is a plain socket here: anything callflow dials shows up.
    let trunk = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    trunk
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok();
    let port = trunk.local_addr().expect("addr").port();
    let cfg = config(dir.path(), port, "poll: 100ms");
    let server = Server::start_in(dir, &["--route", "8002=cb", "--config", &cfg]);
    server.call("callback_spoofed", &[]);
    let r = &server.records(1)[0];
    assert_eq!(r["caller"], "0900123456", "{r}");
    assert_ne!(r["outcome"], "callback_requested", "{r}");
    let db = server.dir.path().join("callbacks.db");
    let list = callbacks_cli(&db, &["list"]);
    assert_eq!(list.lines().count(), 1, "nothing was stored: {list}");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, _)) = trunk.recv_from(&mut buf) {
            panic!(
                "callflow dialled out: {}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }
    assert!(server.stop().success());
}
