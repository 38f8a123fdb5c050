//! A call that comes in: routed to its flow, its offer checked, ringing
//! for the configured time (holding no RTP port), then answered.

use std::time::Instant;

use crate::call::Call;
use crate::sip::sdp::{MediaSession, SessionError};
use crate::sip::ua::{CallHandle, IncomingCall};

use super::Endpoint;

/// A call routed and its offer checked, not yet answered: it holds no RTP
/// port, so calls that ring (or are never answered) cost none.
pub(super) struct Ringing {
    /// When it is answered.
    pub(super) at: Instant,
    pub(super) handle: CallHandle,
    call: Call,
    /// The caller's offer, answered once the port is known.
    offer: Option<Vec<u8>>,
    /// Its INVITE came over TLS: an SRTP offer may be taken.
    secure: bool,
    span: tracing::Span,
}

impl Ringing {
    /// The admin's view of it.
    pub(super) fn summary(&self) -> crate::call::CallSummary {
        self.call.summary()
    }
}

impl Endpoint {
    pub(super) fn on_incoming(&mut self, now: Instant, handle: CallHandle, incoming: IncomingCall) {
        let span = tracing::info_span!("call", call_id = %incoming.call_id);
        let secure = incoming.secure;
        let Some((call, offer)) = span.in_scope(|| self.prepare(now, handle, incoming)) else {
            return;
        };
        let ringing = Ringing {
            at: now + self.config.answer_delay,
            handle,
            call,
            offer,
            secure,
            span,
        };
        if self.config.answer_delay.is_zero() {
            self.answer(now, ringing);
        } else {
            self.ua.ring(now, handle);
            self.ringing.push(ringing);
        }
    }

    /// Routes the call and checks its offer; `None` when the call was
    /// refused (and answered so).
    fn prepare(
        &mut self,
        now: Instant,
        handle: CallHandle,
        incoming: IncomingCall,
    ) -> Option<(Call, Option<Vec<u8>>)> {
        let flow = self.config.routing.flow_for(&incoming.called);
        let Some(entry) = self.runtime.entry(flow) else {
            self.ua.reject(now, handle, 404, "Not Found", &[]);
            return None;
        };
        // Checked now, before the call rings, so that an offer we cannot
        // take is refused at once; the RTP port is only taken when the
        // call is answered.
        let offer = incoming.offer.clone();
        let negotiated = match &offer {
            Some(body) => {
                match MediaSession::check_offer(body, self.config.rtp_ip, incoming.secure) {
                    Ok(n) => Some(n),
                    Err(SessionError::Malformed(e)) => {
                        tracing::info!("bad SDP offer: {e}");
                        self.ua
                            .reject(now, handle, 400, "Bad Request (malformed SDP)", &[]);
                        return None;
                    }
                    Err(e) => {
                        tracing::info!("offer refused: {e}");
                        let warning = format!("{} callflow \"{e}\"", e.warning_code());
                        self.ua.reject(
                            now,
                            handle,
                            488,
                            "Not Acceptable Here",
                            &[("Warning", &warning)],
                        );
                        return None;
                    }
                }
            }
            None => None,
        };
        if let Some(n) = &negotiated {
            let ip = n.remote.ip();
            if !ip.is_unspecified() && !incoming.media_networks.contains(ip) {
                tracing::warn!(remote = %n.remote, trunk = %incoming.trunk,
                    "offer refused: its media address is outside the trunk's media networks");
                self.ua.reject(
                    now,
                    handle,
                    488,
                    "Not Acceptable Here",
                    &[(
                        "Warning",
                        "305 callflow \"the media address is not allowed for this trunk\"",
                    )],
                );
                return None;
            }
        }
        let vars = self.env.queue_vars(now);
        let mut call = self.new_call(now, incoming, entry, vars, None);
        if let Some(n) = negotiated {
            call.set_media(n);
        }
        Some((call, offer))
    }

    /// Takes an RTP port for a ringing call and answers it; 503 when no
    /// port is free.
    pub(super) fn answer(&mut self, now: Instant, r: Ringing) {
        let Ringing {
            handle,
            mut call,
            offer,
            secure,
            span,
            ..
        } = r;
        let entered = span.enter();
        let local = match self.open_media() {
            Ok(local) => local,
            Err(e) => {
                tracing::warn!("{e}");
                self.counters.no_capacity += 1;
                self.ua.reject(
                    now,
                    handle,
                    503,
                    "Service Unavailable",
                    &[("Retry-After", "5")],
                );
                return;
            }
        };
        let port = local.port;
        let mut media = MediaSession::new(local);
        if secure {
            match self.env.srtp_key() {
                Ok(key) => media = media.with_srtp(key),
                // Without a key we can still answer a plain offer; an SRTP
                // one is refused below.
                Err(e) => tracing::error!("{e}"),
            }
        }
        let mut keys = None;
        let body = match &offer {
            Some(o) => match media.answer(o) {
                Ok((text, n)) => {
                    keys = n.srtp;
                    text
                }
                Err(e) => {
                    // It was answerable a moment ago with another port.
                    tracing::warn!("offer refused at answer: {e}");
                    self.ua.reject(now, handle, 488, "Not Acceptable Here", &[]);
                    self.out
                        .push_back(super::EndpointOutput::RtpClosed { port });
                    return;
                }
            },
            None => media.offer(),
        };
        if !self
            .ua
            .accept(now, handle, media, body.as_bytes(), offer.is_none())
        {
            self.out
                .push_back(super::EndpointOutput::RtpClosed { port });
            return;
        }
        call.on_answered(now);
        drop(entered);
        self.set_srtp(port, keys);
        self.activate(now, handle, call, port, span);
    }
}
