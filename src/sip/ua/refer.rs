//! What the calls ask of the UA: answer, reject, transfer (REFER, RFC 3515)
//! and hang up; and how the transfer's NOTIFYs are read.

use std::fmt::Write as _;
use std::time::Instant;

use super::dialog::DialogState;
use super::{CallHandle, ClientTx, EndReason, UaEvent, UserAgent};
use crate::sip::message::{Message, Method};
use crate::sip::sdp::MediaSession;
use crate::sip::transaction::NonInviteClientTransaction;

/// Characters that may stand unescaped in a URI header value (RFC 3261
/// 25.1 `hvalue`: unreserved and hnv-unreserved).
fn is_hvalue_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()[]/?:+$".contains(&c)
}

/// Appends `text` percent-encoded for a URI header value.
fn escape_hvalue(out: &mut String, text: &str) {
    for &b in text.as_bytes() {
        if is_hvalue_char(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// A Refer-To value: the target URI with the context as URI headers
/// (`?X-Queue=support&X-Context-account=123`), which the transferee copies
/// into the INVITE it sends to the ACD (RFC 3261 19.1.1, RFC 3515 2.1).
pub fn refer_to(target: &str, headers: &[(String, String)]) -> String {
    let mut out = String::with_capacity(target.len() + 64);
    out.push('<');
    out.push_str(target);
    for (i, (name, value)) in headers.iter().enumerate() {
        out.push(if i == 0 && !target.contains('?') {
            '?'
        } else {
            '&'
        });
        escape_hvalue(&mut out, name);
        out.push('=');
        escape_hvalue(&mut out, value);
    }
    out.push('>');
    out
}

/// The status line of a `message/sipfrag` body (RFC 3420): `SIP/2.0 200 OK`.
pub fn sipfrag_status(body: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((code.parse().ok()?, reason.to_string()))
}

impl UserAgent {
    /// Answers the call with 200 OK and `sdp` (an answer to the caller's
    /// offer, or our offer when the INVITE had none: `offer_in_2xx`), both
    /// made by `media`, which the dialog keeps for the rest of the call.
    pub fn accept(
        &mut self,
        now: Instant,
        call: CallHandle,
        media: MediaSession,
        sdp: &[u8],
        offer_in_2xx: bool,
    ) -> bool {
        if !self.answer_invite(now, call, 200, "OK", &[], Some(sdp)) {
            return false;
        }
        if let Some(d) = self.dialogs.get_mut(&call) {
            d.state = DialogState::Answered;
            d.media = Some(media);
            d.offer_in_2xx = offer_in_2xx;
        }
        true
    }

    /// Sends 180 Ringing, for a call answered after a delay.
    pub fn ring(&mut self, now: Instant, call: CallHandle) {
        let Some(d) = self.dialogs.get(&call) else {
            return;
        };
        let Some((invite, key)) = &d.invite else {
            return;
        };
        let bytes = crate::sip::message::ResponseBuilder::new(
            invite,
            d.source.addr,
            180,
            "Ringing",
            Some(&d.local_tag),
        )
        .record_route(invite)
        .header(
            "Contact",
            &self.config.contact(d.source.transport, d.secure),
        )
        .build();
        let key = key.clone();
        if let Some(super::ServerTx::Invite { tx, .. }) = self.server.get_mut(&key) {
            let _ = tx.send_provisional(now, bytes.into());
            self.drain_server(&key);
        }
    }

    /// Refuses the call (e.g. 488 for an offer without a common codec).
    pub fn reject(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        self.answer_invite(now, call, status, reason, extra, None);
        self.forget(call);
    }

    /// Transfers the call: REFER with `refer_to` (see [`refer_to`]). The
    /// outcome comes as [`UaEvent::TransferAccepted`] then
    /// [`UaEvent::TransferResult`].
    pub fn refer(
        &mut self,
        now: Instant,
        call: CallHandle,
        refer_to: &str,
        extra: &[(String, String)],
    ) {
        let referred_by = format!("<sip:callflow@{}>", self.config.advertised);
        let mut headers = vec![("Refer-To", refer_to), ("Referred-By", &referred_by)];
        headers.extend(extra.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        self.send_in_dialog(now, call, Method::Refer, &headers);
        if let Some(d) = self.dialogs.get_mut(&call) {
            d.refer_sent = true;
            d.refer_settled_early = false;
        }
    }

    /// Ends the call: BYE once answered, 480 before.
    pub fn hangup(&mut self, now: Instant, call: CallHandle) {
        let Some(state) = self.dialogs.get(&call).map(|d| d.state) else {
            return;
        };
        match state {
            // A call we placed that still rings is cancelled; the INVITE
            // then ends with 487 and the call with DialFailed.
            DialogState::Early if self.cancel_invite(now, call) => {}
            DialogState::Early => {
                self.reject(now, call, 480, "Temporarily Unavailable", &[]);
                self.event(call, UaEvent::Ended(EndReason::Rejected(480)));
            }
            DialogState::Answered | DialogState::Confirmed => {
                self.send_bye(now, call);
                self.event(call, UaEvent::Ended(EndReason::LocalBye));
            }
            DialogState::Terminating => {}
        }
    }

    pub(super) fn send_bye(&mut self, now: Instant, call: CallHandle) {
        self.two_xx.remove(&call);
        self.send_in_dialog(now, call, Method::Bye, &[]);
        if let Some(d) = self.dialogs.get_mut(&call) {
            d.state = DialogState::Terminating;
            d.refer_deadline = None;
            // An ending dialog is refreshed no more.
            d.session = None;
        }
    }

    pub(super) fn send_in_dialog(
        &mut self,
        now: Instant,
        call: CallHandle,
        method: Method,
        extra: &[(&str, &str)],
    ) {
        let branch = format!("z9hG4bK{}", self.unique());
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        let bytes = d.request(&method, &branch, &self.config, extra, None);
        let to = d.destination();
        let reliable = to.transport.is_reliable();
        let tx = NonInviteClientTransaction::new(now, bytes.into(), self.config.timers, reliable);
        self.client.insert(
            branch.clone(),
            ClientTx {
                tx,
                to,
                call,
                method,
            },
        );
        self.drain_client(now, &branch);
    }

    pub(super) fn on_refer_response(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        m: &Message,
    ) {
        let early = self.dialogs.get_mut(&call).is_some_and(|d| {
            d.refer_sent = false;
            std::mem::take(&mut d.refer_settled_early)
        });
        if early {
            // Its NOTIFY came first and told the whole story.
            return;
        }
        if (200..300).contains(&status) {
            let deadline = now + self.config.transfer_timeout;
            if let Some(d) = self.dialogs.get_mut(&call) {
                d.refer_deadline = Some(deadline);
            }
            self.schedule(Some(deadline), super::TimerOwner::Refer(call));
            self.event(call, UaEvent::TransferAccepted);
        } else {
            let reason = match &m.start {
                crate::sip::message::StartLine::Response { reason, .. } => reason.clone(),
                _ => String::new(),
            };
            self.event(
                call,
                UaEvent::TransferResult(Err(format!("REFER rejected: {status} {reason}"))),
            );
        }
    }

    pub(super) fn on_notify(&mut self, _now: Instant, call: CallHandle, m: &Message) {
        let is_refer = m.header("Event").is_some_and(|e| {
            e.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("refer")
        });
        if !is_refer {
            return;
        }
        let pending = self
            .dialogs
            .get(&call)
            .is_some_and(|d| d.refer_deadline.is_some() || d.refer_sent);
        if !pending {
            return;
        }
        let terminated = m.header("Subscription-State").is_some_and(|s| {
            s.trim_start()
                .to_ascii_lowercase()
                .starts_with("terminated")
        });
        let result = match sipfrag_status(&m.body) {
            Some((status, _)) if (200..300).contains(&status) => Some(Ok(())),
            Some((status, reason)) if status >= 300 => Some(Err(format!("{status} {reason}"))),
            _ if terminated => Some(Err("subscription terminated without a final status".into())),
            _ => None,
        };
        if let Some(result) = result {
            let mut implied_accept = false;
            if let Some(d) = self.dialogs.get_mut(&call) {
                d.refer_deadline = None;
                if d.refer_sent {
                    // A NOTIFY implies the REFER was accepted.
                    d.refer_sent = false;
                    d.refer_settled_early = true;
                    implied_accept = true;
                }
            }
            if implied_accept {
                self.event(call, UaEvent::TransferAccepted);
            }
            self.event(call, UaEvent::TransferResult(result));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refer_to_carries_escaped_context_headers() {
        let headers = vec![
            ("X-Queue".to_string(), "support".to_string()),
            ("X-Context-path".to_string(), "welcome>main".to_string()),
            ("X-Context-note".to_string(), "a b&c".to_string()),
        ];
        assert_eq!(
            refer_to("sip:support@acd.example.net", &headers),
            "<sip:support@acd.example.net?X-Queue=support&X-Context-path=welcome%3Emain&X-Context-note=a%20b%26c>"
        );
    }

    #[test]
    fn sipfrag_status_line_is_read() {
        assert_eq!(
            sipfrag_status(b"SIP/2.0 200 OK\r\n"),
            Some((200, "OK".into()))
        );
        assert_eq!(
            sipfrag_status(b"SIP/2.0 503 Service Unavailable"),
            Some((503, "Service Unavailable".into()))
        );
        assert_eq!(sipfrag_status(b"garbage"), None);
    }
}
