//! Which transaction a message belongs to: RFC 3261 sections 17.1.3 and
//! 17.2.3.

/// The prefix of every branch an RFC 3261 element generates (section
/// 8.1.1.7). Its presence promises the branch is unique per transaction, so
/// the branch alone (with sent-by and method) identifies the transaction.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Identifies a transaction, so that retransmissions and ACKs find the
/// transaction they belong to instead of creating a new one.
///
/// Build it from the parsed message (this module parses nothing) and use it
/// as a map key: two keys are equal exactly when RFC 3261 section 17.2.3
/// says the requests match. The same key serves responses on the client
/// side (section 17.1.3 matches branch and CSeq method; the sent-by of a
/// response's top Via is the one we wrote, so including it changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionKey {
    kind: KeyKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KeyKind {
    /// Branch with the magic cookie, sent-by and method (17.2.3).
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: String,
    },
    /// An RFC 2543 element's request, whose branch (if any) is not unique.
    Legacy {
        request_uri: String,
        from_tag: String,
        call_id: String,
        cseq: u32,
        method: String,
        top_via: String,
    },
}

/// The parts of a request from a pre-RFC 3261 (RFC 2543) element that
/// identify its transaction, for [`TransactionKey::legacy`]. Named fields
/// because six look-alike strings in a row invite swapping two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyRequest<'a> {
    /// The Request-URI, as received.
    pub request_uri: &'a str,
    /// The tag parameter of the From header ("" if absent).
    pub from_tag: &'a str,
    /// The Call-ID.
    pub call_id: &'a str,
    /// The CSeq sequence number.
    pub cseq: u32,
    /// The method (the CSeq method, which equals the request's).
    pub method: &'a str,
    /// The whole topmost Via header field value, as received.
    pub top_via: &'a str,
}

/// RFC 3261 section 17.2.3: "the method of the request matches the one
/// that created the transaction, except for ACK, where the method of the
/// request that created the transaction is INVITE". Methods are
/// case-sensitive (section 7.1), so only "ACK" is an ACK.
fn transaction_method(method: &str) -> String {
    match method {
        "ACK" => "INVITE".to_owned(),
        other => other.to_owned(),
    }
}

impl TransactionKey {
    /// The key of an RFC 3261 request (or of a response to one), from the
    /// topmost Via's `branch` and sent-by (`host[:port]`) and the method:
    /// an ACK gets the key of its INVITE, so the ACK for a 3xx-6xx finds
    /// the INVITE server transaction; a CANCEL does not (it has a
    /// transaction of its own, section 9.2).
    ///
    /// Returns `None` when the branch lacks the magic cookie `z9hG4bK`: such
    /// a branch may not be unique, and the request needs
    /// [`TransactionKey::legacy`] instead.
    ///
    /// Branch and sent-by are compared case-insensitively, as section 7.3.1
    /// has it for parameter values and host names.
    pub fn new(branch: &str, sent_by: &str, method: &str) -> Option<Self> {
        if !Self::is_rfc3261_branch(branch) {
            return None;
        }
        Some(TransactionKey {
            kind: KeyKind::Rfc3261 {
                branch: branch.to_ascii_lowercase(),
                sent_by: sent_by.to_ascii_lowercase(),
                method: transaction_method(method),
            },
        })
    }

    /// The key of a request from a pre-RFC 3261 element, whose branch
    /// (without the magic cookie) cannot be trusted to be unique. Section
    /// 17.2.3 then matches on Request-URI, tags, Call-ID, CSeq and the top
    /// Via; as with [`TransactionKey::new`], an ACK matches its INVITE.
    ///
    /// The To tag is left out on purpose: the RFC compares an ACK's To tag
    /// with the tag of our response, not of the INVITE, which a key fixed
    /// at the INVITE cannot do; and a retransmission repeats the To tag
    /// anyway, while CSeq and method already tell apart the requests that
    /// could differ in it.
    pub fn legacy(request: &LegacyRequest<'_>) -> Self {
        TransactionKey {
            kind: KeyKind::Legacy {
                request_uri: request.request_uri.trim().to_owned(),
                from_tag: request.from_tag.to_owned(),
                call_id: request.call_id.to_owned(),
                cseq: request.cseq,
                method: transaction_method(request.method),
                top_via: request.top_via.trim().to_owned(),
            },
        }
    }

    /// Whether `branch` starts with the magic cookie (in any case, as
    /// parameter values are case-insensitive), i.e. whether
    /// [`TransactionKey::new`] applies to it rather than
    /// [`TransactionKey::legacy`].
    pub fn is_rfc3261_branch(branch: &str) -> bool {
        branch
            .get(..MAGIC_COOKIE.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(MAGIC_COOKIE))
    }

    /// Whether this key was built by [`TransactionKey::legacy`].
    pub fn is_legacy(&self) -> bool {
        matches!(self.kind, KeyKind::Legacy { .. })
    }
}
