//! RFC 4475, the SIP torture test messages: each of its 49 messages (in
//! `tests/rfc4475/`, byte-exact) is fed to a fresh user agent, and what it
//! does (a response's status, a new call, or nothing) must be what the RFC
//! says a UAS does (`tests/rfc4475/expected.tsv`).

#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use callflow::sip::ua::{UaConfig, UaEvent, UaOutput, UserAgent};

use crate::common::repo;

/// What the user agent did with one message.
#[derive(Debug, PartialEq)]
enum Did {
    /// Sent nothing and reported nothing.
    Dropped,
    /// A new call for the flows (an INVITE accepted for processing).
    NewCall,
    /// Answered with this final status.
    Answered(u16),
}

fn feed(bytes: &[u8]) -> Did {
    let mut ua = UserAgent::new(UaConfig::new("127.0.0.1:5060".parse().unwrap()));
    ua.handle_datagram(
        Instant::now(),
        "127.0.0.1:5060".parse::<std::net::SocketAddr>().unwrap(),
        bytes,
    );
    let mut did = Did::Dropped;
    while let Some(out) = ua.poll_output() {
        match out {
            UaOutput::Event(_, UaEvent::Incoming(_)) => did = Did::NewCall,
            UaOutput::Transmit { bytes, .. } => {
                let text = String::from_utf8_lossy(&bytes);
                let status: u16 = text
                    .strip_prefix("SIP/2.0 ")
                    .and_then(|r| r.get(..3))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                if status >= 200 {
                    did = Did::Answered(status);
                }
            }
            UaOutput::Event(..) => {}
        }
    }
    did
}

/// Whether `did` is one of the behaviours `expected` allows (`process`,
/// `drop`, a status, or several joined by `-or-`).
fn allowed(expected: &str, did: &Did) -> bool {
    expected.split("-or-").any(|e| match e {
        "drop" => *did == Did::Dropped,
        // Processed: taken up as a call, or answered with anything but 400.
        "process" => match did {
            Did::NewCall => true,
            Did::Answered(s) => *s != 400,
            Did::Dropped => false,
        },
        code => code.parse::<u16>().is_ok_and(|c| *did == Did::Answered(c)),
    })
}

#[test]
fn every_rfc4475_message_is_handled_as_the_rfc_says_a_uas_should() {
    let manifest =
        std::fs::read_to_string(repo("tests/rfc4475/expected.tsv")).expect("expected.tsv");
    let mut wrong = Vec::new();
    let mut count = 0;
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (name, section, expected) = (cols[0], cols[1], cols[2]);
        let bytes = std::fs::read(repo(&format!("tests/rfc4475/{name}.sip"))).expect("message");
        let did = feed(&bytes);
        count += 1;
        if !allowed(expected, &did) {
            wrong.push(format!(
                "{name} ({section}): expected {expected}, did {did:?}"
            ));
        }
    }
    assert_eq!(count, 49, "the corpus has 49 messages");
    assert!(
        wrong.is_empty(),
        "{} of {count} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
