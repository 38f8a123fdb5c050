//! Calls we place (RFC 3261 section 13.2, the UAC side): callbacks dialled
//! out through the trunk. The INVITE goes through an INVITE client
//! transaction; a 401/407 is answered once per challenge with digest
//! credentials (section 22.2); a call not answered within the ring timeout
//! is cancelled (section 9.1); the 2xx is acknowledged by us, the UAC core,
//! with a new transaction (section 13.2.2.4).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dialog::{Dialog, DialogState};
use super::{CallHandle, ClientTx, DialFailure, TimerOwner, UaEvent, UserAgent};
use crate::sip::auth::{self, Challenge, Credentials};
use crate::sip::message::{self, Message, Method};
use crate::sip::transaction::{InviteClientTransaction, NonInviteClientTransaction, Output};
use crate::sip::transport::{Peer, Transport};

/// A call to place.
#[derive(Debug, Clone)]
pub struct OutgoingCall {
    /// The Request-URI, e.g. `sip:+37167000000@trunk.example.net`.
    pub target: String,
    /// The user part of our From (the number presented to the callee).
    pub from_user: String,
    /// Where the INVITE goes (the trunk or outbound proxy), and over what.
    pub destination: Peer,
    /// The leg's media: our offer comes from it, the callee's answer goes
    /// to it, and the dialog keeps it for re-INVITEs.
    pub media: crate::sip::sdp::MediaSession,
    /// Digest credentials for trunks that challenge.
    pub credentials: Option<Credentials>,
    /// Cancel the call if it is not answered by then.
    pub ring_timeout: Duration,
    /// Where the callee may ask us to send RTP, in the answer and in any
    /// re-INVITE: anything else is refused (488), so that no peer can
    /// point our audio at a third party.
    pub media_networks: crate::sip::admission::Networks,
    /// More headers for the INVITE (a bridged call's `X-` context and
    /// User-to-User). Names must be tokens and values free of control
    /// characters: see [`header_safe`].
    pub headers: Vec<(String, String)>,
    /// Ask for a session timer of this interval (RFC 4028), refreshed by
    /// the callee (`refresher=uas`, which it must then honour): a call
    /// whose far end vanished ends when the refreshes stop, rather than
    /// holding an agent or a line until someone notices.
    pub session_expires: Option<Duration>,
    /// Where to send the INVITE next if `destination` fails it: a
    /// transport error, a timeout or a 503 moves the call on to the next
    /// (RFC 3263 4.3), as DNS ordered them.
    pub alternates: Vec<Peer>,
}

/// The session interval we ask for on calls we place (RFC 4028 4
/// recommends 1800 s).
pub const SESSION_EXPIRES: Duration = Duration::from_secs(1800);

/// Whether `name: value` may go into a request as it is: the name a token
/// (RFC 3261 25.1) and the value without CR, LF or other control
/// characters, so that text from a flow's variables (which a caller may
/// have typed) can never start a header of its own.
pub fn header_safe(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        && value.bytes().all(|b| b == b'\t' || !b.is_ascii_control())
}

/// Challenges answered for one call at most: a proxy and a trunk, each
/// with a stale nonce or two, fit; a peer that never stops challenging
/// does not keep us dialling.
const MAX_CHALLENGES: usize = 6;

/// One INVITE in flight (a new one after each challenge).
pub(super) struct Invite {
    pub tx: InviteClientTransaction,
    pub branch: String,
    pub cseq: u32,
    pub call: CallHandle,
    /// The request as sent, to build CANCEL and the non-2xx ACK from.
    pub request: OutgoingCall,
    /// Our SDP offer, the same in every INVITE of the call.
    pub offer: Vec<u8>,
    /// Challenges already answered: a second 401/407 for the same nonce
    /// means the credentials are wrong, so give up instead of looping.
    pub answered_nonces: Vec<String>,
    /// The challenges answered so far: a proxy and the trunk behind it may
    /// each challenge, and every later request carries answers to all of
    /// them (RFC 3261 22.3), the latest per realm.
    pub credentials: Vec<Answered>,
    /// The credential headers this INVITE carried; its 2xx ACK carries the
    /// same (13.2.2.4).
    pub sent_credentials: Vec<(&'static str, String)>,
    pub ring_deadline: Instant,
    pub answered: bool,
    /// Where cancelling this INVITE is.
    pub cancel: Cancel,
    /// The cancel was the ring timeout's: the end reads as "no answer",
    /// and a 2xx that crosses it is still a callee who picked up.
    pub no_answer: bool,
    /// A provisional response came: CANCEL may be sent (9.1).
    pub provisional: bool,
    /// Challenged and re-sent with credentials under a new branch; kept
    /// until Timer D so that retransmitted 401/407s still get their ACK.
    pub superseded: bool,
    /// With alternates left: when silence moves the call on.
    pub failover_at: Option<Instant>,
    /// Given up for silence while the call went on elsewhere: a late
    /// provisional gets a CANCEL, a late 2xx an ACK and a BYE.
    pub abandoned: bool,
}

/// How long an INVITE with an alternate address may go without any
/// response (not even 100 Trying, which a live server sends at once)
/// before the call moves on.
pub const SILENT_FAILOVER: Duration = Duration::from_secs(4);

/// A challenge we answer, with its nonce count and cnonce: each request
/// under the same nonce counts up (RFC 7616 3.4), never replays.
#[derive(Clone)]
pub(super) struct Answered {
    header: &'static str,
    challenge: Challenge,
    counter: auth::NonceCounter,
    cnonce: String,
}

/// Cancelling an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cancel {
    /// Not asked for.
    No,
    /// Asked for before any provisional response: sent when one comes
    /// (9.1); if none ever does, Timer B ends the INVITE.
    Wanted,
    /// Sent; if the 487 never comes, the call is given up at this instant
    /// (64*T1, as 9.1 advises).
    Sent(Instant),
}

impl UserAgent {
    /// Places a call; progress comes as [`UaEvent::Ringing`], then
    /// [`UaEvent::Answered`] or [`UaEvent::DialFailed`].
    pub fn originate(&mut self, now: Instant, call: OutgoingCall) -> CallHandle {
        self.next_call += 1;
        let handle = CallHandle(self.next_call);
        let local_tag = self.unique();
        let advertised = self.config.advertised;
        let dialog = Dialog {
            call_id: self.new_call_id(),
            local_tag: local_tag.clone(),
            local_party: format!("<sip:{}@{advertised}>", call.from_user),
            remote_party: format!("<{}>", call.target),
            remote_target: call.target.clone(),
            route_set: Vec::new(),
            local_cseq: 0,
            remote_cseq: 0,
            state: DialogState::Early,
            source: call.destination,
            invite: None,
            media: None,
            offer_in_2xx: false,
            refer_deadline: None,
            refer_sent: false,
            refer_settled_early: false,
            trunk: None,
            media_networks: Some(call.media_networks.clone()),
            // Calls we place ask for no session timer (yet).
            session: None,
            update_allowed: false,
            secure: call.destination.transport == Transport::Tls
                && call
                    .target
                    .get(..5)
                    .is_some_and(|s| s.eq_ignore_ascii_case("sips:")),
            reinvite_pending: false,
        };
        let mut dialog = dialog;
        let mut media = call.media.clone();
        let offer = media.offer().into_bytes();
        dialog.media = Some(media);
        self.by_tags
            .insert((dialog.call_id.clone(), local_tag), handle);
        self.dialogs.insert(handle, Box::new(dialog));
        let deadline = now + call.ring_timeout;
        self.send_invite(now, handle, (call, offer), Vec::new(), Vec::new(), deadline);
        self.schedule(Some(deadline), TimerOwner::Ring(handle));
        handle
    }

    fn send_invite(
        &mut self,
        now: Instant,
        handle: CallHandle,
        (call, offer): (OutgoingCall, Vec<u8>),
        mut credentials: Vec<Answered>,
        answered_nonces: Vec<String>,
        ring_deadline: Instant,
    ) {
        let branch = format!("z9hG4bK{}", self.unique());
        let Some(d) = self.dialogs.get_mut(&handle) else {
            return;
        };
        let sent_credentials: Vec<(&'static str, String)> = match &call.credentials {
            Some(creds) => credentials
                .iter_mut()
                .map(|a| {
                    let nc = a.counter.next(&a.challenge.nonce);
                    let value = auth::authorize(
                        &a.challenge,
                        creds,
                        "INVITE",
                        &call.target,
                        nc,
                        &a.cnonce,
                        &offer,
                    );
                    (a.header, value)
                })
                .collect(),
            None => Vec::new(),
        };
        let mut extra: Vec<(&str, &str)> = vec![("Allow", super::ALLOW)];
        let session_expires = call
            .session_expires
            .map(|se| format!("{};refresher=uas", se.as_secs()));
        if let Some(se) = &session_expires {
            extra.push(("Session-Expires", se));
            extra.push(("Min-SE", super::session_timer::MIN_SE_TEXT));
            extra.push(("Supported", "timer"));
        }
        for (name, value) in &sent_credentials {
            extra.push((name, value.as_str()));
        }
        for (name, value) in &call.headers {
            if header_safe(name, value) {
                extra.push((name.as_str(), value.as_str()));
            }
        }
        let bytes = d.request(
            &Method::Invite,
            &branch,
            &self.config,
            &extra,
            Some(("application/sdp", &offer)),
        );
        let cseq = d.local_cseq;
        let reliable = call.destination.transport.is_reliable();
        let tx = InviteClientTransaction::new(now, bytes.into(), self.config.timers, reliable);
        let failover_at = (!call.alternates.is_empty()).then(|| now + SILENT_FAILOVER);
        self.schedule(failover_at, TimerOwner::Invite(branch.clone()));
        self.invites.insert(
            branch.clone(),
            Box::new(Invite {
                tx,
                branch: branch.clone(),
                cseq,
                call: handle,
                request: call,
                offer,
                answered_nonces,
                credentials,
                sent_credentials,
                ring_deadline,
                answered: false,
                cancel: Cancel::No,
                no_answer: false,
                provisional: false,
                superseded: false,
                failover_at,
                abandoned: false,
            }),
        );
        self.drain_invite(now, &branch);
    }

    pub(super) fn drain_invite(&mut self, now: Instant, branch: &str) {
        if self.drain_invite_keeping(now, branch) {
            self.invites.remove(branch);
        }
    }

    /// [`Self::drain_invite`], but a transaction that terminates is left
    /// in place (and said so) for its final response to be acted on: over
    /// TCP and TLS the ACK of a 3xx-6xx ends it at once (Timer D is zero),
    /// and the challenge, Min-SE and failover decisions still read it.
    fn drain_invite_keeping(&mut self, now: Instant, branch: &str) -> bool {
        let Some(inv) = self.invites.get_mut(branch) else {
            return false;
        };
        let (to, call) = (inv.request.destination, inv.call);
        let outputs: Vec<Output> = std::iter::from_fn(|| inv.tx.poll_output()).collect();
        let next = inv.tx.poll_timeout();
        for o in outputs {
            match o {
                Output::Transmit(bytes) => self.transmit(to, bytes),
                Output::TimedOut | Output::TransportError => {
                    // One the call already left behind just goes.
                    let left = self
                        .invites
                        .get(branch)
                        .is_some_and(|i| i.abandoned || i.superseded);
                    let moved = !left && self.fail_over(now, branch);
                    self.invites.remove(branch);
                    if left || moved {
                        return false;
                    }
                    self.dial_failed(
                        call,
                        DialFailure::NoResponse,
                        408,
                        "no response from the trunk",
                    );
                    return false;
                }
                Output::Terminated => return true,
                _ => {}
            }
        }
        self.schedule(next, TimerOwner::Invite(branch.to_string()));
        false
    }

    /// An INVITE with somewhere else to go that has heard nothing at all
    /// by [`SILENT_FAILOVER`]: the server is taken for down and the call
    /// moves on, rather than waiting out Timer B (32 s, longer than a
    /// callback rings). The abandoned INVITE is kept to be cancelled if
    /// it wakes up, and ended if it is answered.
    pub(super) fn silent_failover(&mut self, now: Instant, branch: &str) {
        let due = self.invites.get(branch).is_some_and(|i| {
            i.failover_at.is_some_and(|at| now >= at)
                && i.tx.state() == crate::sip::transaction::InviteClientState::Calling
                && !i.superseded
        });
        if due && self.fail_over(now, branch) {
            if let Some(i) = self.invites.get_mut(branch) {
                i.failover_at = None;
                i.cancel = Cancel::Wanted;
                i.abandoned = true;
            }
        }
    }

    /// Sends the INVITE of `branch`, which its destination failed, to the
    /// next of its alternates (RFC 3263 4.3) as a new transaction; false
    /// when there is none, or the call is being cancelled anyway.
    fn fail_over(&mut self, now: Instant, branch: &str) -> bool {
        let Some(inv) = self.invites.get_mut(branch) else {
            return false;
        };
        if inv.request.alternates.is_empty()
            || inv.cancel != Cancel::No
            || inv.answered
            || now >= inv.ring_deadline
        {
            return false;
        }
        inv.superseded = true;
        let failed = inv.request.destination;
        let (call, mut request, deadline) = (
            inv.call,
            (inv.request.clone(), inv.offer.clone()),
            inv.ring_deadline,
        );
        // Challenges were the failed server's: the next one sets its own.
        let (nonces, credentials) = (Vec::new(), Vec::new());
        let next = request.0.alternates.remove(0);
        request.0.destination = next;
        if let Some(d) = self.dialogs.get_mut(&call) {
            d.source = next;
        }
        tracing::info!(call = call.0, %failed, %next, "the INVITE failed there; trying the next address");
        self.send_invite(now, call, request, credentials, nonces, deadline);
        true
    }

    fn dial_failed(&mut self, call: CallHandle, cause: DialFailure, status: u16, reason: &str) {
        self.forget(call);
        self.event(
            call,
            UaEvent::DialFailed {
                cause,
                status,
                reason: reason.to_string(),
            },
        );
    }

    /// A response to one of our INVITEs.
    pub(super) fn on_invite_response(&mut self, now: Instant, branch: &str, m: &Message) {
        let Some(status) = m.status() else {
            return;
        };
        let Some(inv) = self.invites.get(branch) else {
            return;
        };
        let (call, cseq) = (inv.call, inv.cseq);
        // The ACK for a 3xx-6xx belongs to the transaction (17.1.1.3).
        let ack = (status >= 300).then(|| Arc::from(self.non_2xx_ack(inv, m)));
        let Some(inv) = self.invites.get_mut(branch) else {
            return;
        };
        let fresh = inv.tx.on_response(now, status, ack);
        let terminated = self.drain_invite_keeping(now, branch);
        self.act_on_invite_response(now, branch, (status, fresh), (call, cseq), m);
        if terminated {
            self.invites.remove(branch);
        }
    }

    fn act_on_invite_response(
        &mut self,
        now: Instant,
        branch: &str,
        (status, fresh): (u16, bool),
        (call, cseq): (CallHandle, u32),
        m: &Message,
    ) {
        if self.invites.get(branch).is_some_and(|i| i.abandoned) {
            // The call went on elsewhere: this server gets a CANCEL when
            // it rings (the wanted cancel below), its 2xx an end.
            match status {
                200..=299 => self.end_stray_2xx(now, branch, m),
                101..=199 if fresh => {
                    let wanted = self.invites.get_mut(branch).is_some_and(|inv| {
                        inv.provisional = true;
                        inv.cancel == Cancel::Wanted
                    });
                    if wanted {
                        self.send_cancel(now, branch);
                    }
                }
                _ => {}
            }
            return;
        }
        if (200..300).contains(&status) {
            // Retransmitted 2xx too: each gets our ACK again (13.2.2.4);
            // the transaction passes every 2xx up (RFC 6026), so the first
            // one is told apart here.
            let credentials = self
                .invites
                .get(branch)
                .map(|inv| inv.sent_credentials.clone())
                .unwrap_or_default();
            self.ack_2xx(now, call, cseq, m, &credentials);
            let first = match self.invites.get_mut(branch) {
                Some(inv) if !inv.answered => {
                    inv.answered = true;
                    Some(inv.cancel != Cancel::No && !inv.no_answer)
                }
                _ => None,
            };
            match first {
                // We were hanging up when the callee answered: the 2xx
                // still makes a dialog, which we end at once (15).
                Some(true) => {
                    self.send_bye(now, call);
                    self.event(call, UaEvent::Ended(super::EndReason::LocalBye));
                }
                // Also when it crossed the ring timeout's CANCEL: someone
                // picked up after all.
                Some(false) => {
                    let answer = match self.dialogs.get_mut(&call).and_then(|d| d.media.as_mut()) {
                        Some(media) => media.accept_answer(&m.body).map_err(|e| e.to_string()),
                        None => Err("no media session to take the answer".to_string()),
                    };
                    self.start_placed_session_timer(now, call, m);
                    self.event(call, UaEvent::Answered { answer });
                }
                None => {}
            }
            return;
        }
        if !fresh {
            return;
        }
        match status {
            100 => {}
            101..=199 => {
                let wanted = match self.invites.get_mut(branch) {
                    Some(inv) => {
                        inv.provisional = true;
                        inv.cancel == Cancel::Wanted
                    }
                    None => false,
                };
                if wanted {
                    self.send_cancel(now, branch);
                }
                self.event(call, UaEvent::Ringing);
            }
            401 | 407 => self.answer_challenge(now, branch, status, m),
            422 if self.retry_with_min_se(now, branch, m) => {}
            // The server is out of service: another may not be (RFC 3263
            // 4.3; RFC 3261 21.5.4).
            503 if self.fail_over(now, branch) => {}
            _ => {
                let no_answer = self.invites.get(branch).is_some_and(|i| i.no_answer);
                let reason = match &m.start {
                    _ if no_answer => "no answer".to_string(),
                    message::StartLine::Response { reason, .. } => reason.clone(),
                    message::StartLine::Request { .. } => String::new(),
                };
                let cause = match status {
                    486 | 600 | 603 => DialFailure::Busy,
                    487 if no_answer => DialFailure::NoAnswer,
                    487 => DialFailure::Cancelled,
                    408 => DialFailure::NoResponse,
                    _ => DialFailure::Refused,
                };
                self.dial_failed(call, cause, status, &reason);
            }
        }
    }

    /// A 2xx to an INVITE we abandoned for silence: acknowledged and
    /// ended at once with a BYE of its own (RFC 3261 13.2.2.4, 15), sent
    /// where the INVITE went, so that the server we gave up on does not
    /// hold a call nobody is on. The call itself, elsewhere, is untouched.
    fn end_stray_2xx(&mut self, now: Instant, branch: &str, m: &Message) {
        let Some(inv) = self.invites.get_mut(branch) else {
            return;
        };
        if inv.answered {
            return; // a retransmission: our ACK and BYE are out already
        }
        inv.answered = true;
        let (to, cseq) = (inv.request.destination, inv.cseq);
        let target = m
            .header("Contact")
            .map(message::uri_of)
            .unwrap_or(inv.request.target.as_str())
            .to_string();
        let mut routes: Vec<&str> = m.headers_named("Record-Route").collect();
        routes.reverse();
        let ack_branch = format!("z9hG4bK{}", self.unique());
        let bye_branch = format!("z9hG4bK{}", self.unique());
        let sent_by = self.config.sent_by(to.transport);
        let request = |method: &str, number: u32, branch: &str| {
            let mut s = String::with_capacity(400);
            let _ = write!(s, "{method} {target} SIP/2.0\r\n");
            let _ = write!(
                s,
                "Via: SIP/2.0/{} {};branch={branch};rport{}\r\nMax-Forwards: 70\r\n",
                to.transport.via_token(),
                sent_by,
                to.transport.via_params()
            );
            for r in &routes {
                let _ = write!(s, "Route: {r}\r\n");
            }
            for h in ["From", "To", "Call-ID"] {
                if let Some(v) = m.header(h) {
                    let _ = write!(s, "{h}: {v}\r\n");
                }
            }
            let _ = write!(s, "CSeq: {number} {method}\r\nContent-Length: 0\r\n\r\n");
            s.into_bytes()
        };
        let ack = request("ACK", cseq, &ack_branch);
        let bye = request("BYE", cseq + 1, &bye_branch);
        tracing::info!(%to, "a server we had given up on answered; ending that call");
        self.transmit(to, ack.into());
        let tx = NonInviteClientTransaction::new(
            now,
            bye.into(),
            self.config.timers,
            to.transport.is_reliable(),
        );
        self.client.insert(
            bye_branch.clone(),
            ClientTx {
                tx,
                to,
                call: super::register::NO_CALL,
                method: Method::Bye,
            },
        );
        self.drain_client(now, &bye_branch);
    }

    /// The callee's 2xx says whether a session timer runs (RFC 4028 7.2):
    /// with Session-Expires it does, refreshed by whom it names.
    fn start_placed_session_timer(&mut self, now: Instant, call: CallHandle, m: &Message) {
        use super::session_timer::{session_expires, Refresher, SessionTimer, MIN_SE};
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        d.update_allowed = SessionTimer::allows_update(m);
        let Some((interval, refresher)) = session_expires(m) else {
            return; // the callee runs none: neither do we
        };
        // `uac` is us: we sent the INVITE.
        let refresher = match refresher {
            Some("uac") => Refresher::Us,
            _ => Refresher::Them,
        };
        let timer = SessionTimer {
            interval: interval.max(MIN_SE),
            refresher,
            peer_supports: true,
            since: now,
            refreshing: false,
            retried: false,
        };
        d.session = Some(timer);
        self.schedule(Some(timer.deadline()), TimerOwner::Session(call));
    }

    /// A 422 to our INVITE: send it again at once with the callee's
    /// Min-SE (RFC 4028 7.4), once. Whether it was sent.
    fn retry_with_min_se(&mut self, now: Instant, branch: &str, m: &Message) -> bool {
        let min = m
            .header("Min-SE")
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let Some(inv) = self.invites.get_mut(branch) else {
            return false;
        };
        let asked = inv.request.session_expires;
        let Some(min) = min
            .filter(|min| asked.is_some_and(|a| *min > a) && *min <= Duration::from_secs(86_400))
        else {
            return false;
        };
        inv.superseded = true;
        let (call, mut request, nonces, credentials, deadline) = (
            inv.call,
            (inv.request.clone(), inv.offer.clone()),
            inv.answered_nonces.clone(),
            inv.credentials.clone(),
            inv.ring_deadline,
        );
        request.0.session_expires = Some(min);
        self.send_invite(now, call, request, credentials, nonces, deadline);
        true
    }

    fn answer_challenge(&mut self, now: Instant, branch: &str, status: u16, m: &Message) {
        let header = if status == 401 {
            "WWW-Authenticate"
        } else {
            "Proxy-Authenticate"
        };
        let challenges: Vec<Challenge> = m
            .headers_named(header)
            .filter_map(|v| Challenge::parse(v).ok())
            .collect();
        let Some(inv) = self.invites.get_mut(branch) else {
            return;
        };
        inv.superseded = true;
        let (call, request, nonces, mut credentials, deadline) = (
            inv.call,
            (inv.request.clone(), inv.offer.clone()),
            inv.answered_nonces.clone(),
            inv.credentials.clone(),
            inv.ring_deadline,
        );
        let chosen = auth::choose(&challenges).cloned();
        let (Some(challenge), Some(_)) = (chosen, &request.0.credentials) else {
            self.dial_failed(
                call,
                DialFailure::Refused,
                status,
                "authentication required and no usable credentials",
            );
            return;
        };
        let header = if status == 401 {
            "Authorization"
        } else {
            "Proxy-Authorization"
        };
        // A realm we answered already challenges again: the credentials
        // were refused, unless it says our nonce merely went stale (RFC
        // 7616 3.3). A trunk that keeps sending new nonces is given up on
        // instead of being answered until the ring timeout.
        let answered_before = credentials
            .iter()
            .any(|a| a.header == header && a.challenge.realm == challenge.realm);
        if nonces.contains(&challenge.nonce) || (answered_before && !challenge.stale) {
            self.dial_failed(
                call,
                DialFailure::Refused,
                status,
                "the trunk refused our credentials",
            );
            return;
        }
        if nonces.len() >= MAX_CHALLENGES {
            self.dial_failed(
                call,
                DialFailure::Refused,
                status,
                "challenged too many times",
            );
            return;
        }
        credentials.retain(|a| !(a.header == header && a.challenge.realm == challenge.realm));
        let mut nonces = nonces;
        nonces.push(challenge.nonce.clone());
        credentials.push(Answered {
            header,
            challenge,
            counter: auth::NonceCounter::new(),
            cnonce: auth::new_cnonce(&mut self.rng),
        });
        self.send_invite(now, call, request, credentials, nonces, deadline);
    }

    /// The ACK for a non-2xx final response: same branch and CSeq number
    /// as the INVITE, To with the response's tag (17.1.1.3).
    fn non_2xx_ack(&self, inv: &Invite, m: &Message) -> Vec<u8> {
        let mut s = String::with_capacity(300);
        let _ = write!(s, "ACK {} SIP/2.0\r\n", inv.request.target);
        let _ = write!(
            s,
            "Via: SIP/2.0/{} {};branch={};rport{}\r\n",
            inv.request.destination.transport.via_token(),
            self.config.sent_by(inv.request.destination.transport),
            inv.branch,
            inv.request.destination.transport.via_params()
        );
        let _ = write!(s, "Max-Forwards: 70\r\n");
        if let Some(from) = m.header("From") {
            let _ = write!(s, "From: {from}\r\n");
        }
        if let Some(to) = m.header("To") {
            let _ = write!(s, "To: {to}\r\n");
        }
        let _ = write!(
            s,
            "Call-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
            m.call_id(),
            inv.cseq
        );
        s.into_bytes()
    }

    /// Confirms the dialog from the 2xx and sends its ACK, a transaction of
    /// its own, to the remote target (13.2.2.4, 12.1.2).
    pub(super) fn ack_2xx(
        &mut self,
        _now: Instant,
        call: CallHandle,
        cseq: u32,
        m: &Message,
        credentials: &[(&'static str, String)],
    ) {
        let branch = format!("z9hG4bK{}", self.unique());
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        let advertised = self.config.sent_by(d.source.transport);
        if d.state == DialogState::Early {
            if let Some(to) = m.header("To") {
                d.remote_party = to.to_string();
            }
            if let Some(contact) = m.header("Contact") {
                d.remote_target = message::uri_of(contact).to_string();
            }
            // The UAC's route set is the Record-Route in reverse (12.1.2).
            d.route_set = m
                .headers_named("Record-Route")
                .map(str::to_string)
                .collect();
            d.route_set.reverse();
            d.state = DialogState::Confirmed;
        }
        let mut s = String::with_capacity(300);
        let _ = write!(s, "ACK {} SIP/2.0\r\n", d.remote_target);
        let _ = write!(
            s,
            "Via: SIP/2.0/{} {advertised};branch={branch};rport{}\r\nMax-Forwards: 70\r\n",
            d.source.transport.via_token(),
            d.source.transport.via_params()
        );
        for r in &d.route_set {
            let _ = write!(s, "Route: {r}\r\n");
        }
        for (name, value) in credentials {
            let _ = write!(s, "{name}: {value}\r\n");
        }
        let _ = write!(
            s,
            "From: {};tag={}\r\nTo: {}\r\n",
            d.local_party, d.local_tag, d.remote_party
        );
        let _ = write!(
            s,
            "Call-ID: {}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            d.call_id
        );
        let to = d.destination();
        self.transmit(to, s.into_bytes().into());
    }

    /// The ring timer: CANCEL an INVITE still unanswered (9.1), and give
    /// the call up if a CANCEL sent 64*T1 ago never brought the 487.
    pub(super) fn ring_timeout(&mut self, now: Instant, call: CallHandle) {
        let Some(inv) = self.live_invite(call) else {
            return;
        };
        match inv.cancel {
            Cancel::Sent(give_up) if now >= give_up => {
                let no_answer = inv.no_answer;
                let branch = inv.branch.clone();
                self.invites.remove(&branch);
                let (cause, reason) = if no_answer {
                    (DialFailure::NoAnswer, "no answer")
                } else {
                    (DialFailure::Cancelled, "cancelled")
                };
                tracing::debug!(call = call.0, "no 487 after our CANCEL; giving the call up");
                self.dial_failed(call, cause, 487, reason);
            }
            Cancel::No if now >= inv.ring_deadline => {
                let branch = inv.branch.clone();
                if let Some(inv) = self.invites.get_mut(&branch) {
                    inv.no_answer = true;
                }
                self.cancel_invite(now, call);
            }
            _ => {}
        }
    }

    /// The call's INVITE that is neither answered nor replaced by a retry
    /// with credentials.
    fn live_invite(&self, call: CallHandle) -> Option<&Invite> {
        self.invites
            .values()
            .map(|i| &**i)
            .find(|i| i.call == call && !i.answered && !i.superseded)
    }

    /// Cancels the call's unanswered INVITE: at once when a provisional
    /// response came, else as soon as one does (9.1). False when there is
    /// none (answered already, or never sent).
    pub(super) fn cancel_invite(&mut self, now: Instant, call: CallHandle) -> bool {
        let Some(inv) = self.live_invite(call) else {
            return false;
        };
        let branch = inv.branch.clone();
        match (inv.cancel, inv.provisional) {
            (Cancel::No, true) => self.send_cancel(now, &branch),
            (Cancel::No, false) => {
                if let Some(inv) = self.invites.get_mut(&branch) {
                    inv.cancel = Cancel::Wanted;
                }
            }
            // Asked for already: one CANCEL per INVITE.
            _ => {}
        }
        true
    }

    fn send_cancel(&mut self, now: Instant, branch: &str) {
        let Some(inv) = self.invites.get(branch) else {
            return;
        };
        let call = inv.call;
        let mut s = String::with_capacity(300);
        let _ = write!(s, "CANCEL {} SIP/2.0\r\n", inv.request.target);
        let _ = write!(
            s,
            "Via: SIP/2.0/{} {};branch={};rport{}\r\nMax-Forwards: 70\r\n",
            inv.request.destination.transport.via_token(),
            self.config.sent_by(inv.request.destination.transport),
            inv.branch,
            inv.request.destination.transport.via_params()
        );
        let Some(d) = self.dialogs.get(&call) else {
            return;
        };
        let _ = write!(
            s,
            "From: {};tag={}\r\nTo: <{}>\r\n",
            d.local_party, d.local_tag, inv.request.target
        );
        let _ = write!(
            s,
            "Call-ID: {}\r\nCSeq: {} CANCEL\r\nContent-Length: 0\r\n\r\n",
            d.call_id, inv.cseq
        );
        let (to, key) = (inv.request.destination, format!("{}-cancel", inv.branch));
        let give_up = now + self.config.timers.t1 * 64;
        if let Some(inv) = self.invites.get_mut(branch) {
            inv.cancel = Cancel::Sent(give_up);
        }
        self.schedule(Some(give_up), TimerOwner::Ring(call));
        let reliable = to.transport.is_reliable();
        let tx = NonInviteClientTransaction::new(
            now,
            s.into_bytes().into(),
            self.config.timers,
            reliable,
        );
        self.client.insert(
            key.clone(),
            ClientTx {
                tx,
                to,
                call,
                method: Method::Cancel,
            },
        );
        self.drain_client(now, &key);
    }
}
