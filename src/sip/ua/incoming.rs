//! Requests that arrive: new INVITEs, CANCEL, ACK, and requests inside a
//! dialog (BYE, re-INVITE, INFO, NOTIFY, OPTIONS).

use std::time::Instant;

use super::dialog::{user_of, without_tag, Dialog, DialogState};
use super::session_timer::{SessionTimer, TooSmall, MIN_SE_TEXT};
use super::{CallHandle, EndReason, IncomingCall, ServerTx, TrunkId, UaEvent, UserAgent, ALLOW};
use crate::sip::admission::DigestVerdict;
use crate::sip::message::{self, Message, Method, ResponseBuilder};
use crate::sip::sdp;
use crate::sip::transaction::{
    AckDisposition, InviteServerTransaction, LegacyRequest, NonInviteServerTransaction,
    TransactionKey, TwoXxRetransmitter,
};
use crate::sip::transport::{Peer, Transport};

/// What a draining server's 503s ask peers to wait, in seconds: about as
/// long as a drain takes, after which another node (or this one,
/// restarted) takes the calls.
const DRAINING_RETRY_AFTER: &str = "30";

/// Extensions we implement; a Require naming another gets 420 (RFC 3261
/// 8.2.2.3). Session timers (RFC 4028) are; Replaces (RFC 3891) is not,
/// so it is neither advertised nor accepted in a Require.
const SUPPORTED: &[&str] = &["timer"];

/// Adds a session timer's headers to a 2xx: the agreed interval and
/// refresher, `Require: timer` if the peer supports it (RFC 4028 9), and
/// `Supported: timer`.
fn session_headers(b: ResponseBuilder, t: &SessionTimer) -> ResponseBuilder {
    let b = b
        .header("Session-Expires", &t.header())
        .header("Supported", "timer");
    if t.peer_supports {
        b.header("Require", "timer")
    } else {
        b
    }
}

/// A new INVITE turned away: status, reason phrase, extra headers.
type Refusal = (u16, &'static str, Vec<(&'static str, String)>);

/// The server-transaction key of a request (RFC 3261 17.2.3): the branch
/// with the magic cookie plus sent-by and method, ACK matching its INVITE;
/// for pre-3261 peers, the fields of 17.2.3's older rule.
pub(super) fn transaction_key(m: &Message, method: &Method) -> TransactionKey {
    let via = m.top_via();
    let sent_by = via.map(|v| v.sent_by()).unwrap_or_default();
    let branch = via.and_then(|v| v.branch.as_deref()).unwrap_or("");
    TransactionKey::new(branch, &sent_by, method.as_str()).unwrap_or_else(|| {
        let request_uri = match &m.start {
            crate::sip::message::StartLine::Request { uri, .. } => uri.as_str(),
            crate::sip::message::StartLine::Response { .. } => "",
        };
        TransactionKey::legacy(&LegacyRequest {
            request_uri,
            from_tag: m.from_tag().unwrap_or(""),
            call_id: m.call_id(),
            cseq: m.cseq().map(|c| c.0).unwrap_or(0),
            method: method.as_str(),
            top_via: m.header("Via").unwrap_or(""),
        })
    })
}

/// The option tags of Require that we do not implement.
fn unsupported_extensions(m: &Message) -> Vec<&str> {
    m.headers_named("Require")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(e)))
        .collect()
}

/// Whether the request's Accept (if any) allows an `application/sdp` body.
fn accepts_sdp(m: &Message) -> bool {
    let mut values = m
        .headers_named("Accept")
        .flat_map(|v| v.split(','))
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty())
        .peekable();
    if values.peek().is_none() {
        return true; // no Accept: application/sdp is assumed (21.4.7... 20.1)
    }
    values.any(|t| matches!(t.as_str(), "application/sdp" | "application/*" | "*/*"))
}

/// A key typed as a DTMF digit.
fn dtmf_char(s: &str) -> Option<char> {
    let s = s.trim();
    let mut chars = s.chars();
    let c = chars.next()?;
    if chars.next().is_none() && (c.is_ascii_digit() || "*#ABCDabcd".contains(c)) {
        return Some(c.to_ascii_uppercase());
    }
    match s.parse::<u8>() {
        Ok(10) => Some('*'),
        Ok(11) => Some('#'),
        _ => None,
    }
}

/// The key from an INFO body: `application/dtmf-relay` (`Signal=5`) or
/// `application/dtmf` (`5`).
pub(super) fn info_digit(content_type: &str, body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/dtmf-relay" => text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("signal")
                .then(|| dtmf_char(v))
                .flatten()
        }),
        "application/dtmf" => dtmf_char(text),
        _ => None,
    }
}

impl UserAgent {
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        source: Peer,
        m: Message,
        trunk: Option<TrunkId>,
    ) {
        let method = m.method();
        let key = transaction_key(&m, &method);
        if let Some(s) = self.server.get_mut(&key) {
            // A retransmission, or the ACK of a non-2xx final response.
            let pass_ack = match s {
                ServerTx::Invite { tx, .. } if method == Method::Ack => {
                    tx.on_ack(now) == AckDisposition::PassToTu
                }
                ServerTx::Invite { tx, .. } if method == Method::Invite => {
                    tx.on_request(now);
                    false
                }
                ServerTx::NonInvite { tx, .. } if method != Method::Ack => {
                    tx.on_request(now);
                    false
                }
                _ => false,
            };
            self.drain_server(&key);
            if !pass_ack {
                return;
            }
        } else if self.server.len() >= self.config.max_transactions && method != Method::Ack {
            // A full table cannot take another transaction: say so without
            // one, and let the sender retry later.
            self.counters.transactions_full += 1;
            self.respond_stateless(
                &m,
                source,
                503,
                "Service Unavailable",
                &[("Retry-After", "5")],
            );
            return;
        }
        // RFC 3261 8.2.2.3: an extension we lack in Require is refused
        // with 420, for every request but ACK and CANCEL (and INVITE, whose
        // own transaction answers it below).
        if !matches!(method, Method::Ack | Method::Cancel | Method::Invite) {
            let unsupported = unsupported_extensions(&m);
            if !unsupported.is_empty() {
                let list = unsupported.join(", ");
                self.respond(
                    now,
                    source,
                    key,
                    &m,
                    420,
                    "Bad Extension",
                    &[("Unsupported", &list)],
                    None,
                );
                return;
            }
        }
        match method {
            Method::Ack => self.on_ack(now, &m),
            Method::Invite if m.to_tag().is_none() => {
                self.on_new_invite(now, source, key, m, trunk)
            }
            Method::Invite => self.on_reinvite(now, source, key, m),
            Method::Cancel => self.on_cancel(now, source, key, m),
            // A load balancer's probe (Kamailio's dispatcher, say): while
            // draining, or not ready (the callback store unreachable), we
            // say so, so that it sends new calls to another node. OPTIONS
            // within a call still get 200.
            Method::Options if !(self.accepting && self.ready) && m.to_tag().is_none() => {
                let extra = [("Retry-After", DRAINING_RETRY_AFTER)];
                self.respond(
                    now,
                    source,
                    key,
                    &m,
                    503,
                    "Service Unavailable",
                    &extra,
                    None,
                );
            }
            Method::Options => {
                let extra = [("Allow", ALLOW), ("Accept", "application/sdp")];
                self.respond(now, source, key, &m, 200, "OK", &extra, None);
            }
            Method::Bye | Method::Info | Method::Notify => self.on_in_dialog(now, source, key, m),
            Method::Update => self.on_update(now, source, key, m),
            // We are no registrar.
            Method::Other(_) | Method::Register => self.respond(
                now,
                source,
                key,
                &m,
                501,
                "Not Implemented",
                &[("Allow", ALLOW)],
                None,
            ),
            _ => self.respond(
                now,
                source,
                key,
                &m,
                405,
                "Method Not Allowed",
                &[("Allow", ALLOW)],
                None,
            ),
        }
    }

    /// Answers a non-INVITE request through a new server transaction, which
    /// absorbs its retransmissions (RFC 3261 17.2.2).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond(
        &mut self,
        now: Instant,
        source: Peer,
        key: TransactionKey,
        request: &Message,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
        to_tag: Option<&str>,
    ) {
        self.respond_with(
            now, source, key, request, status, reason, extra, to_tag, None,
        );
    }

    /// [`UserAgent::respond`] with a body (content type, bytes).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond_with(
        &mut self,
        now: Instant,
        source: Peer,
        key: TransactionKey,
        request: &Message,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
        to_tag: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) {
        let Some(via) = request.top_via() else {
            return;
        };
        let tag = match to_tag {
            Some(t) => t.to_string(),
            None => self.unique(),
        };
        let mut b = ResponseBuilder::new(request, source.addr, status, reason, Some(&tag))
            .header("Server", &self.config.product);
        for (n, v) in extra {
            b = b.header(n, v);
        }
        if let Some((content_type, bytes)) = body {
            b = b.body(content_type, bytes);
        }
        let to = super::reply_to(via, source);
        let mut tx =
            NonInviteServerTransaction::new(self.config.timers, source.transport.is_reliable());
        if tx.send_final(now, status, b.build().into()).is_ok() {
            self.server
                .insert(key.clone(), ServerTx::NonInvite { tx, to });
            self.drain_server(&key);
        }
    }

    /// 481: the request names a dialog or transaction we do not have.
    fn respond_481(&mut self, now: Instant, source: Peer, key: TransactionKey, m: &Message) {
        let reason = "Call/Transaction Does Not Exist";
        self.respond(now, source, key, m, 481, reason, &[], None);
    }

    /// Keeps retransmitting a 2xx to INVITE until its ACK: the UAS core's
    /// job, not the transaction's (RFC 3261 13.3.1.4).
    fn retransmit_2xx(
        &mut self,
        now: Instant,
        call: CallHandle,
        bytes: std::sync::Arc<[u8]>,
        to: Peer,
    ) {
        let mut r = TwoXxRetransmitter::new(now, bytes, self.config.timers);
        // send_final already sent the first copy.
        let _ = std::iter::from_fn(|| r.poll_output()).count();
        let next = r.poll_timeout();
        self.two_xx.insert(call, (r, to));
        self.schedule(next, super::TimerOwner::TwoXx(call));
    }

    pub(super) fn dialog_of(&self, m: &Message) -> Option<CallHandle> {
        let tag = m.to_tag()?;
        self.by_tags
            .get(&(m.call_id().to_string(), tag.to_string()))
            .copied()
    }

    fn on_new_invite(
        &mut self,
        now: Instant,
        source: Peer,
        key: TransactionKey,
        m: Message,
        trunk: Option<TrunkId>,
    ) {
        let Some(via) = m.top_via() else {
            return;
        };
        let to = super::reply_to(via, source);
        let mut tx =
            InviteServerTransaction::new(self.config.timers, source.transport.is_reliable());
        let tag = self.unique();
        let product = self.config.product.clone();
        let answer = |status: u16, reason: &str, extra: &[(&str, &str)]| {
            let mut b = ResponseBuilder::new(&m, source.addr, status, reason, Some(&tag))
                .header("Server", &product);
            for (n, v) in extra {
                b = b.header(n, v);
            }
            b.build()
        };
        let unsupported = unsupported_extensions(&m);
        let content_type = m
            .header("Content-Type")
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        let refusal = if !self.accepting {
            self.counters.draining_refused += 1;
            Some((
                503,
                answer(
                    503,
                    "Service Unavailable",
                    &[("Retry-After", DRAINING_RETRY_AFTER)],
                ),
            ))
        } else if !unsupported.is_empty() {
            Some((
                420,
                answer(
                    420,
                    "Bad Extension",
                    &[("Unsupported", &unsupported.join(", "))],
                ),
            ))
        } else if !m.body.is_empty() && content_type.as_deref() != Some("application/sdp") {
            // RFC 3261 21.4.13: a body we cannot read is refused with what
            // we do read.
            Some((
                415,
                answer(
                    415,
                    "Unsupported Media Type",
                    &[("Accept", "application/sdp")],
                ),
            ))
        } else if !accepts_sdp(&m) {
            // The caller cannot take our SDP answer (RFC 3261 21.4.7).
            Some((
                406,
                answer(
                    406,
                    "Not Acceptable",
                    &[(
                        "Warning",
                        "399 callflow \"the answer can only be application/sdp\"",
                    )],
                ),
            ))
        } else {
            None
        };
        let update_allowed = SessionTimer::allows_update(&m);
        let session = SessionTimer::requested(&m, now);
        let refusal = match refusal {
            Some(r) => Some(r),
            None => self
                .admit(now, source, trunk, &m)
                .map(|(status, reason, headers)| {
                    let headers: Vec<(&str, &str)> =
                        headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                    (status, answer(status, reason, &headers))
                }),
        };
        let refusal = match (refusal, session) {
            (Some(r), _) => Some(r),
            (None, Err(TooSmall)) => Some((
                422,
                answer(
                    422,
                    "Session Interval Too Small",
                    &[("Min-SE", MIN_SE_TEXT)],
                ),
            )),
            (None, Ok(_)) => None,
        };
        if let Some((status, bytes)) = refusal {
            if tx.send_final(now, status, bytes.into()).is_ok() {
                self.server
                    .insert(key.clone(), ServerTx::Invite { tx, to, call: None });
                self.drain_server(&key);
            }
            return;
        }
        // 100 Trying at once stops the caller's retransmissions (17.2.1).
        let trying = ResponseBuilder::new(&m, source.addr, 100, "Trying", None).build();
        let _ = tx.send_provisional(now, trying.into());
        self.next_call += 1;
        let call = CallHandle(self.next_call);
        self.server.insert(
            key.clone(),
            ServerTx::Invite {
                tx,
                to,
                call: Some(call),
            },
        );
        self.drain_server(&key);

        let from = m.header("From").unwrap_or("").to_string();
        let to_header = m.header("To").unwrap_or("").to_string();
        let uri = match &m.start {
            message::StartLine::Request { uri, .. } => uri.clone(),
            message::StartLine::Response { .. } => String::new(),
        };
        let contact = m.header("Contact").map(|c| message::uri_of(c).to_string());
        let dialog = Dialog {
            call_id: m.call_id().to_string(),
            local_tag: tag.clone(),
            local_party: without_tag(&to_header),
            remote_party: from.clone(),
            remote_target: contact.unwrap_or_else(|| message::uri_of(&from).to_string()),
            route_set: m
                .headers_named("Record-Route")
                .map(str::to_string)
                .collect(),
            local_cseq: 0,
            remote_cseq: m.cseq().map(|c| c.0).unwrap_or(0),
            state: DialogState::Early,
            source,
            invite: None,
            media: None,
            offer_in_2xx: false,
            refer_deadline: None,
            refer_sent: false,
            refer_settled_early: false,
            trunk,
            media_networks: None,
            session: session.ok().flatten(),
            update_allowed,
            // RFC 3261 12.1.1: over TLS, with a sips: URI in the
            // Request-URI, the top Record-Route, or (without one) the
            // Contact: then our Contact must be sips: too.
            secure: source.transport == Transport::Tls && {
                let sips = |u: &str| u.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("sips:"));
                let next_hop = match m.headers_named("Record-Route").next() {
                    Some(rr) => Some(message::uri_of(rr)),
                    None => m.header("Contact").map(message::uri_of),
                };
                sips(&uri) || next_hop.is_some_and(sips)
            },
            reinvite_pending: false,
        };
        self.by_tags.insert((dialog.call_id.clone(), tag), call);
        let policy = trunk.and_then(|t| self.config.admission.trunks.get(t.0));
        let incoming = IncomingCall {
            call_id: dialog.call_id.clone(),
            caller: user_of(message::uri_of(&from)),
            // A trunk we registered with sends to our Contact, whose user
            // is the registration's: the number dialled is in the To.
            called: match self.registered_user() {
                Some(user) if user_of(&uri) == user => user_of(message::uri_of(&to_header)),
                _ => user_of(&uri),
            },
            from,
            to: to_header,
            offer: (!m.body.is_empty()).then(|| m.body.clone()),
            source: source.addr,
            trunk: policy.map(|p| p.name.clone()).unwrap_or_default(),
            media_networks: trunk
                .and_then(|t| self.admission.lock().media_of(t))
                .unwrap_or_default(),
            secure: source.transport == Transport::Tls,
        };
        let mut dialog = dialog;
        dialog.invite = Some((m, key));
        self.dialogs.insert(call, Box::new(dialog));
        self.event(call, UaEvent::Incoming(Box::new(incoming)));
    }

    /// Admission control's word on a new INVITE that is otherwise fine: a
    /// refusal (status, reason phrase, headers) or `None` to take it, in
    /// which case it now counts against its trunk's limits.
    fn admit(
        &mut self,
        now: Instant,
        source: Peer,
        trunk: Option<TrunkId>,
        m: &Message,
    ) -> Option<Refusal> {
        let Some(trunk) = trunk else {
            // An address that may answer our calls, but is no trunk.
            return Some((403, "Forbidden (not a trunk)", Vec::new()));
        };
        if self.dialogs.len() >= self.config.max_dialogs {
            self.counters.dialogs_full += 1;
            return Some((
                503,
                "Service Unavailable",
                vec![("Retry-After", "5".into())],
            ));
        }
        if let DigestVerdict::Challenge(value) =
            self.admission
                .lock()
                .check_digest(now, trunk, source.addr.ip(), m)
        {
            return Some((401, "Unauthorized", vec![("WWW-Authenticate", value)]));
        }
        let admitted = self.admission.lock().admit_call(now, trunk);
        if let Err(refusal) = admitted {
            return Some((
                503,
                refusal.phrase(),
                vec![("Retry-After", refusal.retry_after().into())],
            ));
        }
        None
    }

    /// Sends the final response to a dialog's pending INVITE.
    pub(super) fn answer_invite(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> bool {
        let Some(d) = self.dialogs.get_mut(&call) else {
            return false;
        };
        let Some((invite, key)) = d.invite.take() else {
            return false;
        };
        let Some(ServerTx::Invite { tx, to, .. }) = self.server.get_mut(&key) else {
            return false;
        };
        let source = d.source;
        let mut b = ResponseBuilder::new(&invite, source.addr, status, reason, Some(&d.local_tag))
            .header("Server", &self.config.product);
        if (200..300).contains(&status) {
            b = b
                .record_route(&invite)
                .header("Contact", &self.config.contact(source.transport, d.secure))
                .header("Allow", ALLOW);
        }
        for (n, v) in extra {
            b = b.header(n, v);
        }
        let session = d.session.as_mut().filter(|_| (200..300).contains(&status));
        match session {
            Some(t) => {
                // The session starts with our answer.
                t.since = now;
                b = session_headers(b, t);
            }
            // Said in every 2xx, so a peer may ask for it in a re-INVITE.
            None if (200..300).contains(&status) => b = b.header("Supported", "timer"),
            None => {}
        }
        let session = d.session.filter(|_| (200..300).contains(&status));
        if let Some(sdp) = body {
            b = b.body("application/sdp", sdp);
        }
        let bytes: std::sync::Arc<[u8]> = b.build().into();
        let to = *to;
        if tx.send_final(now, status, bytes.clone()).is_err() {
            return false;
        }
        self.drain_server(&key);
        if let Some(t) = session {
            self.schedule(Some(t.deadline()), super::TimerOwner::Session(call));
        }
        if (200..300).contains(&status) {
            // The 2xx is ours to retransmit until the ACK (13.3.1.4).
            self.retransmit_2xx(now, call, bytes, to);
        }
        true
    }

    fn on_ack(&mut self, _now: Instant, m: &Message) {
        let Some(call) = self.dialog_of(m) else {
            return; // an ACK is never answered, not even with 481
        };
        self.two_xx.remove(&call);
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        if !matches!(d.state, DialogState::Answered) {
            return; // a retransmitted ACK
        }
        d.state = DialogState::Confirmed;
        let answer = if std::mem::take(&mut d.offer_in_2xx) {
            let agreed = match d.media.as_mut() {
                Some(media) => media.accept_answer(&m.body).map_err(|e| e.to_string()),
                None => Err("no media session to take the answer".to_string()),
            };
            Some(agreed)
        } else {
            None
        };
        self.event(call, UaEvent::Confirmed { answer });
    }

    fn on_cancel(&mut self, now: Instant, source: Peer, key: TransactionKey, m: Message) {
        let invite_key = transaction_key(&m, &Method::Invite);
        let call = match self.server.get(&invite_key) {
            Some(ServerTx::Invite { call, .. }) => *call,
            _ => {
                self.respond(
                    now,
                    source,
                    key,
                    &m,
                    481,
                    "Call/Transaction Does Not Exist",
                    &[],
                    None,
                );
                return;
            }
        };
        let tag = call
            .and_then(|c| self.dialogs.get(&c))
            .map(|d| d.local_tag.clone());
        self.respond(now, source, key, &m, 200, "OK", &[], tag.as_deref());
        let Some(call) = call else {
            return;
        };
        let early = self
            .dialogs
            .get(&call)
            .is_some_and(|d| d.state == DialogState::Early);
        if early && self.answer_invite(now, call, 487, "Request Terminated", &[], None) {
            self.forget(call);
            self.event(call, UaEvent::Ended(EndReason::Cancelled));
        }
    }

    fn on_reinvite(&mut self, now: Instant, source: Peer, key: TransactionKey, m: Message) {
        let Some(via) = m.top_via() else {
            return;
        };
        let to = super::reply_to(via, source);
        let mut tx =
            InviteServerTransaction::new(self.config.timers, source.transport.is_reliable());
        let respond_final = |tx: &mut InviteServerTransaction,
                             status: u16,
                             reason: &str,
                             extra: &[(&str, &str)],
                             body: Option<&[u8]>,
                             tag: Option<&str>,
                             product: &str| {
            let mut b = ResponseBuilder::new(&m, source.addr, status, reason, tag)
                .header("Server", product);
            for (n, v) in extra {
                b = b.header(n, v);
            }
            if let Some(sdp) = body {
                b = b.body("application/sdp", sdp);
            }
            let bytes: std::sync::Arc<[u8]> = b.build().into();
            let _ = tx.send_final(now, status, bytes.clone());
            bytes
        };
        let product = self.config.product.clone();
        let Some(call) = self.dialog_of(&m) else {
            respond_final(
                &mut tx,
                481,
                "Call/Transaction Does Not Exist",
                &[],
                None,
                None,
                &product,
            );
            self.server
                .insert(key.clone(), ServerTx::Invite { tx, to, call: None });
            self.drain_server(&key);
            return;
        };
        let allowed = self.media_allowed(call);
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        let cseq = m.cseq().map(|c| c.0).unwrap_or(0);
        let tag = d.local_tag.clone();
        // A re-INVITE is a session refresh too (RFC 4028 9).
        let session = SessionTimer::requested(&m, now);
        let (status, reason, body, changed): (u16, &str, Option<Vec<u8>>, Option<sdp::Negotiated>) =
            match d.media.as_mut() {
                _ if session == Err(TooSmall) && d.state == DialogState::Confirmed => {
                    (422, "Session Interval Too Small", None, None)
                }
                // Not yet confirmed, or our own re-INVITE is out: glare.
                Some(_) if d.state != DialogState::Confirmed || d.reinvite_pending => {
                    (491, "Request Pending", None, None)
                }
                None => (491, "Request Pending", None, None),
                Some(_) if cseq <= d.remote_cseq => (500, "Server Internal Error", None, None),
                // Our SRTP key would go out in the clear (RFC 4568 8.3).
                Some(media) if media.has_srtp_key() && source.transport != Transport::Tls => {
                    (488, "Not Acceptable Here", None, None)
                }
                Some(media) => {
                    d.remote_cseq = cseq;
                    if m.body.is_empty() {
                        d.offer_in_2xx = true;
                        (200, "OK", Some(media.offer().into_bytes()), None)
                    } else {
                        // Media may only move within the trunk's networks:
                        // checked on a copy, so a refused offer changes
                        // nothing.
                        let mut trial = media.clone();
                        match trial.answer(&m.body) {
                            Ok((_, negotiated)) if !allowed(&negotiated) => {
                                (488, "Not Acceptable Here", None, None)
                            }
                            Ok((answer, negotiated)) => {
                                *media = trial;
                                (200, "OK", Some(answer.into_bytes()), Some(negotiated))
                            }
                            Err(_) => (488, "Not Acceptable Here", None, None),
                        }
                    }
                }
            };
        let contact = self.config.contact(source.transport, d.secure);
        let timer = session.ok().flatten().filter(|_| status == 200);
        let timer_headers = timer.map(|t| t.header()).unwrap_or_default();
        let mut extra: Vec<(&str, &str)> = match status {
            200 => vec![("Contact", contact.as_str()), ("Allow", ALLOW)],
            422 => vec![("Min-SE", MIN_SE_TEXT)],
            _ => vec![],
        };
        if let Some(t) = timer {
            extra.push(("Session-Expires", &timer_headers));
            extra.push(("Supported", "timer"));
            if t.peer_supports {
                extra.push(("Require", "timer"));
            }
        }
        if status == 200 {
            if let Some(d) = self.dialogs.get_mut(&call) {
                d.session = timer;
            }
        }
        let bytes = respond_final(
            &mut tx,
            status,
            reason,
            &extra,
            body.as_deref(),
            Some(&tag),
            &product,
        );
        self.server.insert(
            key.clone(),
            ServerTx::Invite {
                tx,
                to,
                call: Some(call),
            },
        );
        self.drain_server(&key);
        if let Some(t) = timer {
            self.schedule(Some(t.deadline()), super::TimerOwner::Session(call));
        }
        if status == 200 {
            if let Some(d) = self.dialogs.get_mut(&call) {
                d.state = DialogState::Answered;
            }
            self.retransmit_2xx(now, call, bytes, to);
        }
        if let Some(n) = changed {
            self.event(call, UaEvent::MediaChanged(n));
        }
    }

    /// Where `call`'s media may be moved by a new offer: its trunk's media
    /// networks (or, for a call we placed, the ones given with it), and
    /// nowhere (hold: an unspecified address).
    pub(super) fn media_allowed(&self, call: CallHandle) -> impl Fn(&sdp::Negotiated) -> bool {
        let media_networks = self.dialogs.get(&call).and_then(|d| {
            d.trunk
                .and_then(|t| self.admission.lock().media_of(t))
                .or_else(|| d.media_networks.clone())
        });
        move |n: &sdp::Negotiated| {
            let ip = n.remote.ip();
            ip.is_unspecified() || media_networks.as_ref().is_none_or(|m| m.contains(ip))
        }
    }

    fn on_in_dialog(&mut self, now: Instant, source: Peer, key: TransactionKey, m: Message) {
        let method = m.method();
        let Some(call) = self.dialog_of(&m) else {
            self.respond_481(now, source, key, &m);
            return;
        };
        let cseq = m.cseq().map(|c| c.0).unwrap_or(0);
        let tag = self.dialogs.get(&call).map(|d| d.local_tag.clone());
        let stale = self.dialogs.get_mut(&call).is_some_and(|d| {
            let stale = cseq <= d.remote_cseq;
            d.remote_cseq = d.remote_cseq.max(cseq);
            stale
        });
        if stale && method != Method::Notify {
            // RFC 3261 12.2.2: a lower CSeq is out of order.
            self.respond(
                now,
                source,
                key,
                &m,
                500,
                "Server Internal Error",
                &[],
                tag.as_deref(),
            );
            return;
        }
        match method {
            Method::Bye => {
                self.respond(now, source, key, &m, 200, "OK", &[], tag.as_deref());
                self.forget(call);
                self.event(call, UaEvent::Ended(EndReason::RemoteBye));
            }
            Method::Info => {
                let ct = m.header("Content-Type").unwrap_or("");
                match info_digit(ct, &m.body) {
                    Some(d) => {
                        self.respond(now, source, key, &m, 200, "OK", &[], tag.as_deref());
                        self.event(call, UaEvent::Digit(d));
                    }
                    None if m.body.is_empty() => {
                        // An empty INFO is a keep-alive some trunks send.
                        self.respond(now, source, key, &m, 200, "OK", &[], tag.as_deref());
                    }
                    None => self.respond(
                        now,
                        source,
                        key,
                        &m,
                        415,
                        "Unsupported Media Type",
                        &[("Accept", "application/dtmf-relay, application/dtmf")],
                        tag.as_deref(),
                    ),
                }
            }
            Method::Notify => {
                self.respond(now, source, key, &m, 200, "OK", &[], tag.as_deref());
                self.on_notify(now, call, &m);
            }
            _ => {}
        }
    }
}
