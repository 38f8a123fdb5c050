//! RFC 3261 section 17.2.3: matching requests to server transactions.

use super::*;

const BRANCH: &str = "z9hG4bK776asdhds";
const SENT_BY: &str = "pc33.atlanta.com:5060";

fn key(branch: &str, sent_by: &str, method: &str) -> TransactionKey {
    TransactionKey::new(branch, sent_by, method).unwrap_or_else(|| panic!("{branch}"))
}

#[test]
fn ack_matches_the_invite() {
    assert_eq!(key(BRANCH, SENT_BY, "ACK"), key(BRANCH, SENT_BY, "INVITE"));
}

#[test]
fn retransmission_matches_and_case_of_branch_and_host_does_not_matter() {
    assert_eq!(key(BRANCH, SENT_BY, "BYE"), key(BRANCH, SENT_BY, "BYE"));
    assert_eq!(
        key("Z9HG4BK776ASDHDS", "PC33.Atlanta.COM:5060", "INVITE"),
        key(BRANCH, SENT_BY, "INVITE")
    );
}

#[test]
fn different_branch_does_not_match() {
    assert_ne!(
        key("z9hG4bK776asdhdt", SENT_BY, "INVITE"),
        key(BRANCH, SENT_BY, "INVITE")
    );
}

#[test]
fn different_sent_by_does_not_match() {
    assert_ne!(
        key(BRANCH, "pc34.atlanta.com:5060", "INVITE"),
        key(BRANCH, SENT_BY, "INVITE")
    );
}

#[test]
fn cancel_has_its_own_transaction() {
    // Section 9.2: a CANCEL carries the INVITE's branch but is a separate
    // transaction; only ACK is folded onto INVITE.
    assert_ne!(
        key(BRANCH, SENT_BY, "CANCEL"),
        key(BRANCH, SENT_BY, "INVITE")
    );
    assert_ne!(key(BRANCH, SENT_BY, "ack"), key(BRANCH, SENT_BY, "INVITE"));
}

#[test]
fn branch_without_magic_cookie_needs_a_legacy_key() {
    assert_eq!(TransactionKey::new("776asdhds", SENT_BY, "INVITE"), None);
    assert_eq!(TransactionKey::new("z9hG4b", SENT_BY, "INVITE"), None);
    assert_eq!(TransactionKey::new("", SENT_BY, "INVITE"), None);
    assert!(TransactionKey::is_rfc3261_branch(BRANCH));
    assert!(!TransactionKey::is_rfc3261_branch("ü9hG4bK"));
    assert!(!key(BRANCH, SENT_BY, "INVITE").is_legacy());
}

fn legacy_invite() -> LegacyRequest<'static> {
    LegacyRequest {
        request_uri: "sip:bob@biloxi.com",
        from_tag: "1928301774",
        call_id: "a84b4c76e66710",
        cseq: 314159,
        method: "INVITE",
        top_via: "SIP/2.0/UDP pc33.atlanta.com",
    }
}

#[test]
fn legacy_ack_matches_the_legacy_invite() {
    let invite = TransactionKey::legacy(&legacy_invite());
    assert!(invite.is_legacy());
    let ack = TransactionKey::legacy(&LegacyRequest {
        method: "ACK",
        ..legacy_invite()
    });
    assert_eq!(ack, invite);
    assert_eq!(TransactionKey::legacy(&legacy_invite()), invite);
}

#[test]
fn legacy_keys_differ_on_any_identifying_part() {
    let invite = TransactionKey::legacy(&legacy_invite());
    let variants = [
        LegacyRequest {
            request_uri: "sip:carol@biloxi.com",
            ..legacy_invite()
        },
        LegacyRequest {
            from_tag: "other",
            ..legacy_invite()
        },
        LegacyRequest {
            call_id: "other",
            ..legacy_invite()
        },
        LegacyRequest {
            cseq: 314160,
            ..legacy_invite()
        },
        LegacyRequest {
            method: "CANCEL",
            ..legacy_invite()
        },
        LegacyRequest {
            top_via: "SIP/2.0/UDP pc34.atlanta.com",
            ..legacy_invite()
        },
    ];
    for variant in variants {
        assert_ne!(TransactionKey::legacy(&variant), invite, "{variant:?}");
    }
}

#[test]
fn legacy_and_rfc3261_keys_never_match() {
    let legacy = TransactionKey::legacy(&legacy_invite());
    assert_ne!(legacy, key(BRANCH, "pc33.atlanta.com", "INVITE"));
}

#[test]
fn keys_work_in_a_map() {
    let mut transactions = std::collections::HashMap::new();
    transactions.insert(key(BRANCH, SENT_BY, "INVITE"), "invite server");
    assert_eq!(
        transactions.get(&key(BRANCH, SENT_BY, "ACK")),
        Some(&"invite server")
    );
    assert_eq!(transactions.get(&key(BRANCH, SENT_BY, "CANCEL")), None);
}
