//! Two `callflow serve` nodes behind Kamailio's dispatcher, with the
//! configuration shipped in `deploy/kamailio/dispatcher.cfg` run as it is:
//! calls spread over both nodes; a node drained with SIGTERM answers the
//! dispatcher's OPTIONS probes 503 and gets no new calls, while its call
//! in progress finishes.

#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use crate::common::repo;
use crate::kamailio::Proxy;
use crate::sipp::Server;

/// Kamailio's dispatcher in front of `nodes`, probing every second.
fn dispatcher(nodes: &[&Server]) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("dispatcher.list");
    let lines: String = nodes
        .iter()
        .map(|n| format!("1 sip:127.0.0.1:{}\n", n.port))
        .collect();
    std::fs::write(&list, lines).expect("write the list");
    let defines = [
        format!("DISPATCHER_LIST=\"{}\"", list.display()),
        "PING_INTERVAL=1".to_string(),
    ];
    Proxy::launch_file(dir, &repo("deploy/kamailio/dispatcher.cfg"), &defines)
}

/// Places `n` calls (1 s of prompt each, ACK and BYE along the route
/// set) through the dispatcher; all must pass.
fn calls(via: &Server, proxy: &Proxy, n: usize) {
    let out = via.sipp_to(
        proxy.port,
        "proxy_call",
        &["-m", &n.to_string(), "-l", "5", "-r", "10"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n--- kamailio\n{}",
        via.explain("proxy_call", &out),
        proxy.log()
    );
}

/// How many records of `outcome` a node wrote.
fn count(server: &Server, outcome: &str) -> usize {
    server
        .records(0)
        .iter()
        .filter(|r| r["outcome"] == outcome)
        .count()
}

#[test]
fn calls_spread_over_two_nodes_and_a_drained_node_is_taken_out_without_dropping_its_call() {
    let a = Server::start(&["--node", "node-a", "--drain", "20s"]);
    let b = Server::start(&["--node", "node-b"]);
    let proxy = dispatcher(&[&a, &b]);
    // Round robin over both.
    calls(&a, &proxy, 20);
    let (on_a, on_b) = (a.records(10).len(), b.records(10).len());
    assert_eq!(on_a + on_b, 20);
    assert!(on_a >= 5 && on_b >= 5, "spread: {on_a} and {on_b}");

    std::thread::scope(|s| {
        // Two 3 s calls, one on each node by turn.
        let long = s.spawn(|| a.sipp_to(proxy.port, "proxy_long_call", &["-m", "2", "-l", "2"]));
        std::thread::sleep(Duration::from_millis(1000));
        a.terminate();
        // The probe sees node A's 503 within a second or two; calls that
        // reach A before that are sent on to B by the failure route.
        std::thread::sleep(Duration::from_millis(2500));
        calls(&b, &proxy, 10);
        let out = long.join().expect("sipp");
        assert_eq!(
            out.status.code(),
            Some(0),
            "the calls in progress finished: {}\n{}",
            a.explain("proxy_long_call", &out),
            proxy.log()
        );
    });
    // A's call in progress ran until the caller hung up; A took nothing
    // new.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&a, "caller_hung_up") < on_a + 1 {
        assert!(Instant::now() < deadline, "{}", a.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.records(0).len(), on_a + 1, "{}", a.log());
    assert_eq!(b.records(on_b + 11).len(), on_b + 11);
    assert!(a.stop().success(), "A exits 0 after its drain");
}
