//! Session timers (RFC 4028): a trunk that asks for them refreshes the
//! call (or has us refresh it) every interval, and a call whose refresh
//! does not come is over, so a call lost on one side does not hang on the
//! other. What a request asks is read here; the user agent answers with
//! the agreed interval and refresher, refreshes with UPDATE when it is the
//! refresher, and ends the call with BYE when the session expires.

use std::time::{Duration, Instant};

use super::{CallHandle, DialogState, EndReason, TimerOwner, UaEvent, UserAgent};
use crate::sip::message::{param, Message, Method};
use crate::sip::transaction::TransactionKey;
use crate::sip::transport::Peer;

/// The smallest interval we take (RFC 4028 4: 90 s at least); a request
/// asking less gets 422 with this as our Min-SE.
pub const MIN_SE: Duration = Duration::from_secs(90);
/// [`MIN_SE`] as a header value.
pub const MIN_SE_TEXT: &str = "90";

/// Who sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// We do (`refresher=uas` for a call we answered).
    Us,
    /// The peer does.
    Them,
}

/// A dialog's session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    /// The session interval.
    pub interval: Duration,
    /// Who refreshes.
    pub refresher: Refresher,
    /// Whether the peer said `Supported: timer` (then our 2xx requires it).
    pub peer_supports: bool,
    /// When the session was last refreshed (or started).
    pub since: Instant,
    /// Our refresh is out and not yet answered.
    pub refreshing: bool,
    /// Our last refresh failed and was tried once more.
    pub retried: bool,
}

/// Why a request's session timer cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSmall;

/// Whether the header `name`'s option list names `option`.
fn lists(m: &Message, name: &str, option: &str) -> bool {
    m.headers_named(name)
        .flat_map(|v| v.split(','))
        .any(|o| o.trim().eq_ignore_ascii_case(option))
}

/// The `Session-Expires` of a message: its interval and refresher, if it
/// has a well-formed one.
pub fn session_expires(m: &Message) -> Option<(Duration, Option<&'static str>)> {
    let value = m.header("Session-Expires")?;
    let (seconds, params) = value.split_once(';').unwrap_or((value, ""));
    // A day at most: the interval is added to the clock, and no session
    // needs longer between refreshes.
    let seconds: u64 = seconds.trim().parse::<u64>().ok()?.min(86_400);
    let refresher = match param(params, "refresher") {
        Some(v) if v.eq_ignore_ascii_case("uac") => Some("uac"),
        Some(v) if v.eq_ignore_ascii_case("uas") => Some("uas"),
        _ => None,
    };
    (seconds > 0).then(|| (Duration::from_secs(seconds), refresher))
}

impl SessionTimer {
    /// The timer a request from the peer (INVITE, re-INVITE or UPDATE)
    /// asks for, starting `now`: none without Session-Expires (RFC 4028 9:
    /// the timer is then off), [`TooSmall`] below our Min-SE. When we are
    /// to refresh, we do by UPDATE if the peer takes it, else by
    /// re-INVITE.
    pub fn requested(m: &Message, now: Instant) -> Result<Option<Self>, TooSmall> {
        let Some((interval, refresher)) = session_expires(m) else {
            return Ok(None);
        };
        if interval < MIN_SE {
            return Err(TooSmall);
        }
        let peer_supports = lists(m, "Supported", "timer") || lists(m, "Require", "timer");
        let refresher = match refresher {
            Some("uas") => Refresher::Us,
            Some(_) => Refresher::Them,
            // Ours to choose: the peer refreshes if it can.
            None if peer_supports => Refresher::Them,
            None => Refresher::Us,
        };
        Ok(Some(Self {
            interval,
            refresher,
            peer_supports,
            since: now,
            refreshing: false,
            retried: false,
        }))
    }

    /// The Session-Expires value of our answers and refreshes, for a call
    /// we answered (the peer is the UAC).
    pub fn header(&self) -> String {
        let who = match self.refresher {
            Refresher::Us => "uas",
            Refresher::Them => "uac",
        };
        format!("{};refresher={who}", self.interval.as_secs())
    }

    /// The Session-Expires of our own refresh: we send it, so we are the
    /// refresh transaction's UAC (RFC 4028 7.4).
    pub fn request_header(&self) -> String {
        format!("{};refresher=uac", self.interval.as_secs())
    }

    /// When the session expires without a refresh: RFC 4028 10 leaves the
    /// refresher a third of the interval (at most 32 s) of grace.
    pub fn expires_at(&self) -> Instant {
        let grace = (self.interval / 3).min(Duration::from_secs(32));
        self.since + self.interval - grace
    }

    /// When the timer is next due: our refresh at half the interval (RFC
    /// 4028 7.4), or the expiry.
    pub fn deadline(&self) -> Instant {
        match self.refresher {
            Refresher::Us if !self.refreshing => self.since + self.interval / 2,
            _ => self.expires_at(),
        }
    }

    /// Whether the peer may be sent UPDATE, from its Allow (an INVITE
    /// without Allow says nothing, and UPDATE is not assumed).
    pub fn allows_update(m: &Message) -> bool {
        lists(m, "Allow", "UPDATE")
    }
}

impl UserAgent {
    /// `call`'s session timer is due: refresh it with UPDATE if that is
    /// ours to do, else (or if our refresh got no answer) the session is
    /// over.
    pub(super) fn session_due(&mut self, now: Instant, call: CallHandle) {
        let Some(t) = self.dialogs.get_mut(&call).and_then(|d| d.session.as_mut()) else {
            return;
        };
        if t.deadline() > now {
            return; // a stale entry: the timer moved on
        }
        if now >= t.expires_at() {
            self.session_lost(now, call, "no refresh before the session expired");
            return;
        }
        self.send_refresh(now, call);
    }

    /// Sends our refreshing UPDATE, and waits for its answer until the
    /// session would expire.
    fn send_refresh(&mut self, now: Instant, call: CallHandle) {
        let Some(t) = self.dialogs.get_mut(&call).and_then(|d| d.session.as_mut()) else {
            return;
        };
        t.refreshing = true;
        let (header, next) = (t.request_header(), t.deadline());
        let by_update = self.dialogs.get(&call).is_some_and(|d| d.update_allowed);
        if by_update {
            tracing::debug!(call = call.0, "refreshing the session (UPDATE)");
            self.send_in_dialog(
                now,
                call,
                Method::Update,
                &[("Session-Expires", header.as_str()), ("Supported", "timer")],
            );
        } else {
            self.send_reinvite_refresh(now, call);
        }
        self.schedule(Some(next), TimerOwner::Session(call));
    }

    /// The session is over (RFC 4028 10): BYE, and the call is told.
    pub(super) fn session_lost(&mut self, now: Instant, call: CallHandle, why: &str) {
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        if d.session.take().is_none() {
            return;
        }
        tracing::info!(call = call.0, %why, "session timer expired; ending the call");
        self.send_bye(now, call);
        self.event(call, UaEvent::Ended(EndReason::SessionExpired));
    }

    /// The answer to our refreshing UPDATE.
    pub(super) fn on_refresh_response(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        m: &Message,
    ) {
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        let Some(t) = d.session.as_mut() else {
            return;
        };
        match status {
            200..=299 => {
                t.since = now;
                t.refreshing = false;
                t.retried = false;
                if let Some((interval, refresher)) = session_expires(m) {
                    t.interval = interval.max(MIN_SE);
                    // `uac` is us: we sent the UPDATE.
                    t.refresher = match refresher {
                        Some("uas") => Refresher::Them,
                        _ => Refresher::Us,
                    };
                }
                let next = t.deadline();
                self.schedule(Some(next), TimerOwner::Session(call));
            }
            422 => {
                // Asked for too short an interval: take the peer's minimum
                // and refresh again at once, once.
                let min = m
                    .header("Min-SE")
                    .and_then(|v| v.split(';').next())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                match min.filter(|min| *min > t.interval && *min <= Duration::from_secs(86_400)) {
                    Some(min) => {
                        t.interval = min;
                        t.since = now;
                        self.send_refresh(now, call);
                    }
                    None => self.session_lost(now, call, "422 without a usable Min-SE"),
                }
            }
            // The dialog is gone, or the peer did not answer (RFC 4028 10).
            408 | 481 => self.session_lost(now, call, &format!("refresh answered {status}")),
            // The peer does not take UPDATE after all: ending a healthy
            // call for that would be worse than no session timer.
            405 | 501 => {
                tracing::warn!(
                    call = call.0,
                    status,
                    "the peer refused our UPDATE refresh; session timer off"
                );
                d.session = None;
            }
            // Anything else (a 500, 488, a challenge): tried once more in
            // 10 s, then the session stands until it expires.
            _ if !t.retried => {
                t.retried = true;
                t.refreshing = false;
                self.schedule(
                    Some(now + Duration::from_secs(10)),
                    TimerOwner::Session(call),
                );
            }
            _ => {}
        }
    }

    /// An UPDATE from the peer (RFC 3311): a session refresh, and with an
    /// SDP offer a media change, answered in its 200 as a re-INVITE's
    /// would be (the same checks: media only within the trunk's networks,
    /// 491 while an offer of ours is unanswered).
    pub(super) fn on_update(
        &mut self,
        now: Instant,
        source: Peer,
        key: TransactionKey,
        m: Message,
    ) {
        let Some(call) = self.dialog_of(&m) else {
            let reason = "Call/Transaction Does Not Exist";
            self.respond(now, source, key, &m, 481, reason, &[], None);
            return;
        };
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        let tag = d.local_tag.clone();
        // RFC 3261 12.2.2: a lower CSeq is out of order (a replayed or
        // late UPDATE must not move the media back).
        let cseq = m.cseq().map(|c| c.0).unwrap_or(0);
        if cseq <= d.remote_cseq {
            let reason = "Server Internal Error";
            self.respond(now, source, key, &m, 500, reason, &[], Some(&tag));
            return;
        }
        d.remote_cseq = cseq;
        let session = SessionTimer::requested(&m, now);
        let mut answer: Option<(String, crate::sip::sdp::Negotiated)> = None;
        // A refused interval refuses the whole request: the offer is not
        // taken either.
        if !m.body.is_empty() && session.is_ok() {
            let allowed = self.media_allowed(call);
            let Some(d) = self.dialogs.get_mut(&call) else {
                return;
            };
            let refusal = match d.media.as_mut() {
                // An offer/answer of ours is open: our offer in a 2xx
                // waiting for the ACK, our re-INVITE, or the INVITE of an
                // early dialog (RFC 3311 5.2).
                Some(_)
                    if d.offer_in_2xx || d.reinvite_pending || d.state == DialogState::Early =>
                {
                    Some((491, "Request Pending"))
                }
                None => Some((491, "Request Pending")),
                // Our SRTP key would go out in the clear (RFC 4568 8.3).
                Some(media)
                    if media.has_srtp_key()
                        && source.transport != crate::sip::transport::Transport::Tls =>
                {
                    Some((488, "Not Acceptable Here"))
                }
                Some(media) => {
                    // Checked on a copy: a refused offer changes nothing.
                    let mut trial = media.clone();
                    match trial.answer(&m.body) {
                        Ok((_, negotiated)) if !allowed(&negotiated) => {
                            Some((488, "Not Acceptable Here"))
                        }
                        Ok((sdp, negotiated)) => {
                            *media = trial;
                            answer = Some((sdp, negotiated));
                            None
                        }
                        Err(_) => Some((488, "Not Acceptable Here")),
                    }
                }
            };
            if let Some((status, reason)) = refusal {
                self.respond(now, source, key, &m, status, reason, &[], Some(&tag));
                return;
            }
        }
        let Some(d) = self.dialogs.get_mut(&call) else {
            return;
        };
        let (d_transport, d_secure) = (d.source.transport, d.secure);
        match session {
            Err(TooSmall) => {
                let extra = [("Min-SE", MIN_SE_TEXT)];
                self.respond(
                    now,
                    source,
                    key,
                    &m,
                    422,
                    "Session Interval Too Small",
                    &extra,
                    Some(&tag),
                );
            }
            Ok(timer) => {
                d.session = timer;
                let header = timer.map(|t| t.header()).unwrap_or_default();
                let mut extra = vec![("Supported", "timer")];
                if let Some(t) = timer {
                    extra.push(("Session-Expires", header.as_str()));
                    if t.peer_supports {
                        extra.push(("Require", "timer"));
                    }
                    self.schedule(Some(t.deadline()), TimerOwner::Session(call));
                }
                // UPDATE refreshes the target (RFC 3311 5.2): our Contact.
                let contact = self.config.contact(d_transport, d_secure);
                extra.push(("Contact", contact.as_str()));
                let body = answer
                    .as_ref()
                    .map(|(sdp, _)| ("application/sdp", sdp.as_bytes()));
                self.respond_with(now, source, key, &m, 200, "OK", &extra, Some(&tag), body);
                if let Some((_, negotiated)) = answer {
                    self.event(call, UaEvent::MediaChanged(negotiated));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> Message {
        let text = format!(
            "INVITE sip:8000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:8000@127.0.0.1>\r\nCall-ID: st\r\nCSeq: 1 INVITE\r\n\
{extra}Content-Length: 0\r\n\r\n"
        );
        crate::sip::message::parse(text.as_bytes()).unwrap()
    }

    #[allow(clippy::disallowed_methods)] // a fake clock needs a base
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn no_session_expires_no_timer_and_too_small_is_refused() {
        let now = t0();
        assert_eq!(SessionTimer::requested(&request(""), now), Ok(None));
        assert_eq!(
            SessionTimer::requested(&request("Session-Expires: 60\r\n"), now),
            Err(TooSmall)
        );
        assert_eq!(
            SessionTimer::requested(&request("Session-Expires: soon\r\n"), now),
            Ok(None),
            "a malformed one is ignored"
        );
    }

    #[test]
    fn the_peer_refreshes_when_it_supports_timers_else_we_do() {
        let now = t0();
        let theirs =
            SessionTimer::requested(&request("Supported: timer, 100rel\r\nx: 1800\r\n"), now)
                .unwrap()
                .unwrap();
        assert_eq!(theirs.refresher, Refresher::Them);
        assert_eq!(theirs.header(), "1800;refresher=uac");
        assert_eq!(theirs.deadline(), now + Duration::from_secs(1800 - 32));

        let ours = SessionTimer::requested(&request("Session-Expires: 120\r\n"), now)
            .unwrap()
            .unwrap();
        assert_eq!(ours.refresher, Refresher::Us);
        assert_eq!(ours.header(), "120;refresher=uas");
        assert_eq!(ours.deadline(), now + Duration::from_secs(60), "half");
        let waiting = SessionTimer {
            refreshing: true,
            ..ours
        };
        assert_eq!(
            waiting.deadline(),
            now + Duration::from_secs(88),
            "no answer: expiry, 32 s before the interval ends"
        );

        let named = SessionTimer::requested(
            &request("Supported: timer\r\nSession-Expires: 300;refresher=uas\r\n"),
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!(named.refresher, Refresher::Us, "the request names us");
    }
}
