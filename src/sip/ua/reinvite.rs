//! Refreshing a session with re-INVITE (RFC 4028 7.4 and 9), for a peer
//! that takes no UPDATE: we must be the refresher of a peer without
//! session-timer support, and many trunks allow INVITE but not UPDATE.
//!
//! The re-INVITE offers the media as agreed (the agreed codec, a new
//! session version) through an INVITE client transaction of its own; its
//! 2xx is acknowledged by us like any 2xx, and its answer taken. While it
//! is out, an offer from the peer gets 491 (RFC 3261 14.2); a 491 to ours
//! is tried again after the wait of 14.1.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CallHandle, TimerOwner, UaEvent, UserAgent};
use crate::sip::message::{self, Message, Method};
use crate::sip::transaction::{InviteClientTransaction, Output};
use crate::sip::transport::Peer;

/// Our re-INVITE in flight.
pub(super) struct ReInvite {
    pub tx: InviteClientTransaction,
    pub call: CallHandle,
    pub cseq: u32,
    pub to: Peer,
    /// The request as sent: its non-2xx ACK copies its Request-URI, Via
    /// and Route (17.1.1.3).
    pub request: Arc<[u8]>,
    pub answered: bool,
}

impl UserAgent {
    /// Sends a re-INVITE refreshing `call`'s session.
    pub(super) fn send_reinvite_refresh(&mut self, now: Instant, call: CallHandle) {
        let branch = format!("z9hG4bK{}", self.unique());
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        let Some(header) = d.session.map(|t| t.request_header()) else {
            return;
        };
        let Some(offer) = d.media.as_mut().map(|m| m.refresh_offer()) else {
            return;
        };
        let extra = [
            ("Session-Expires", header.as_str()),
            ("Supported", "timer"),
            ("Allow", super::ALLOW),
        ];
        let bytes: Arc<[u8]> = d
            .request(
                &Method::Invite,
                &branch,
                &self.config,
                &extra,
                Some(("application/sdp", offer.as_bytes())),
            )
            .into();
        d.reinvite_pending = true;
        let (cseq, to) = (d.local_cseq, d.destination());
        let tx = InviteClientTransaction::new(
            now,
            Arc::clone(&bytes),
            self.config.timers,
            to.transport.is_reliable(),
        );
        tracing::debug!(call = call.0, "refreshing the session (re-INVITE)");
        self.reinvites.insert(
            branch.clone(),
            ReInvite {
                tx,
                call,
                cseq,
                to,
                request: bytes,
                answered: false,
            },
        );
        self.drain_reinvite(now, &branch);
    }

    pub(super) fn drain_reinvite(&mut self, now: Instant, branch: &str) {
        let Some(r) = self.reinvites.get_mut(branch) else {
            return;
        };
        let (to, call) = (r.to, r.call);
        let outputs: Vec<Output> = std::iter::from_fn(|| r.tx.poll_output()).collect();
        let next = r.tx.poll_timeout();
        for o in outputs {
            match o {
                Output::Transmit(bytes) => self.transmit(to, bytes),
                Output::TimedOut | Output::TransportError => {
                    self.reinvites.remove(branch);
                    self.reinvite_settled(call);
                    self.session_lost(now, call, "no answer to our refreshing re-INVITE");
                    return;
                }
                Output::Terminated => {
                    self.reinvites.remove(branch);
                    return;
                }
                _ => {}
            }
        }
        self.schedule(next, TimerOwner::ReInvite(branch.to_string()));
    }

    fn reinvite_settled(&mut self, call: CallHandle) {
        if let Some(d) = self.dialogs.get_mut(&call) {
            d.reinvite_pending = false;
        }
    }

    /// A response to our re-INVITE.
    pub(super) fn on_reinvite_response(&mut self, now: Instant, branch: &str, m: &Message) {
        let Some(status) = m.status() else {
            return;
        };
        let Some(r) = self.reinvites.get(branch) else {
            return;
        };
        let (call, cseq) = (r.call, r.cseq);
        let ack = (status >= 300)
            .then(|| non_2xx_ack(&r.request, m))
            .flatten();
        let Some(r) = self.reinvites.get_mut(branch) else {
            return;
        };
        let fresh = r.tx.on_response(now, status, ack.map(Arc::from));
        let first_2xx = (200..300).contains(&status) && !std::mem::replace(&mut r.answered, true);
        self.drain_reinvite(now, branch);
        if (200..300).contains(&status) {
            // A re-INVITE refreshes the target (12.2.1.2): the ACK goes to
            // the 2xx's Contact, and so does what follows.
            if let (Some(d), Some(contact)) = (self.dialogs.get_mut(&call), m.header("Contact")) {
                d.remote_target = message::uri_of(contact).to_string();
            }
            // Every 2xx, retransmissions too, gets our ACK (13.2.2.4).
            self.ack_2xx(now, call, cseq, m, &[]);
            if !first_2xx {
                return;
            }
            self.reinvite_settled(call);
            let moved = self
                .dialogs
                .get_mut(&call)
                .and_then(|d| d.media.as_mut())
                .map(|media| {
                    let before = media.negotiated().copied();
                    (before, media.accept_answer(&m.body))
                });
            match moved {
                Some((before, Ok(now_agreed))) if before != Some(now_agreed) => {
                    self.event(call, UaEvent::MediaChanged(now_agreed));
                }
                Some((_, Err(e))) => {
                    tracing::warn!(call = call.0, "the answer to our re-INVITE: {e}");
                }
                _ => {}
            }
            self.on_refresh_response(now, call, status, m);
            return;
        }
        if !fresh || status < 200 {
            return;
        }
        self.reinvite_settled(call);
        if status == 491 {
            // Glare: the peer's own offer crossed ours. Again after a wait
            // that keeps the two sides apart (RFC 3261 14.1): 2.1-4 s if
            // the Call-ID is ours (we placed the call; an incoming one
            // always has its trunk), else 0-2 s.
            let ours = self.dialogs.get(&call).is_some_and(|d| d.trunk.is_none());
            let wait = if ours {
                Duration::from_millis(2100 + u64::from(self.rng.u32(..1900)))
            } else {
                Duration::from_millis(u64::from(self.rng.u32(..2000)))
            };
            if let Some(t) = self.dialogs.get_mut(&call).and_then(|d| d.session.as_mut()) {
                t.refreshing = false;
            }
            self.schedule(Some(now + wait), TimerOwner::Session(call));
            return;
        }
        self.on_refresh_response(now, call, status, m);
    }
}

/// The ACK for a non-2xx final response to our re-INVITE `request`: its
/// Request-URI, top Via and Route, the response's To (17.1.1.3).
fn non_2xx_ack(request: &[u8], m: &Message) -> Option<Vec<u8>> {
    let sent = message::parse(request).ok()?;
    let uri = match &sent.start {
        message::StartLine::Request { uri, .. } => uri.clone(),
        message::StartLine::Response { .. } => return None,
    };
    let mut s = String::with_capacity(400);
    let _ = write!(s, "ACK {uri} SIP/2.0\r\n");
    let _ = write!(s, "Via: {}\r\n", sent.header("Via")?);
    let _ = write!(s, "Max-Forwards: 70\r\n");
    for route in sent.headers_named("Route") {
        let _ = write!(s, "Route: {route}\r\n");
    }
    let _ = write!(s, "From: {}\r\n", sent.header("From")?);
    let _ = write!(s, "To: {}\r\n", m.header("To")?);
    let cseq = sent.cseq().ok()?.0;
    let _ = write!(
        s,
        "Call-ID: {}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
        sent.call_id()
    );
    Some(s.into_bytes())
}
