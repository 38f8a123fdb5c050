//! SIP over TCP end to end, against SIPp (`-t t1`: one connection): the
//! same journey as over UDP, with every reply and every request of ours
//! on SIPp's connection.

use crate::sipp::Server;

#[test]
fn over_tcp_rfc4733_keys_lead_to_a_refer_and_the_call_is_transferred() {
    let server = Server::start(&[]);
    server.call("transfer_rfc4733", &["-t", "t1"]);
    let r = &server.records(1)[0];
    assert_eq!(r["outcome"], "transferred", "{r}");
    assert_eq!(r["detail"], "support");
    assert_eq!(r["digits"], "10");
    // SIPp logs what it received: our REFER and BYE came over TCP, with
    // a TCP Via and a Contact that says so.
    let messages = std::fs::read_to_string(server.dir.path().join("transfer_rfc4733-messages.log"))
        .unwrap_or_default();
    let via = format!("Via: SIP/2.0/TCP 127.0.0.1:{};", server.port);
    for method in ["REFER sip:", "BYE sip:"] {
        // SIPp logs "TCP message received [n] bytes :" before each one.
        let request = messages
            .split("message received")
            .map(|m| m.split("message sent").next().unwrap_or(m))
            .find(|m| m.contains(method))
            .unwrap_or_else(|| panic!("no {method} in\n{messages}"));
        assert!(request.contains(&via), "{request}");
        assert!(request.contains(";transport=tcp>"), "{request}");
    }
    assert!(server.stop().success());
}
