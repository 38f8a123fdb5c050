//! Placing a callback: a claimed request becomes an outbound INVITE through
//! the trunk and a call that runs the queue's callback flow once the callee
//! answers.

use std::time::Instant;

use crate::call::callback_leg::CallbackLeg;
use crate::callback::{AttemptOutcome, Callback};
use crate::sip::sdp::MediaSession;
use crate::sip::ua::{IncomingCall, OutgoingCall};

use super::{Endpoint, EndpointOutput};

impl Endpoint {
    /// Dials `callback`; an attempt that cannot even start is settled as
    /// failed at once (and retried by the policy).
    pub fn dial(&mut self, now: Instant, callback: Callback) {
        let leg = CallbackLeg::of(&callback, self.config.priority_boost);
        let span = tracing::info_span!("callback", id = leg.id, attempt = leg.attempt);
        let entered = span.enter();
        let Some(trunk) = self.config.trunk.clone() else {
            self.attempt_failed(leg, "no trunk configured".into());
            return;
        };
        let flow = self
            .config
            .routing
            .callback_flow_for(&leg.queue)
            .to_string();
        let Some(entry) = self.runtime.entry(&flow) else {
            self.attempt_failed(leg, format!("the callback flow `{flow}` is not loaded"));
            return;
        };
        // The last guard against toll fraud: whatever stored the request,
        // a number the policy refuses is never dialled.
        if let Err(why) = self.config.dialling.callback.check(&leg.number) {
            tracing::warn!(id = leg.id, number = %leg.number, "callback refused by the dialling policy: {why}");
            self.out.push_back(EndpointOutput::SettleCallback {
                leg,
                outcome: AttemptOutcome::Refused(why),
            });
            return;
        }
        // Where the trunk is now, best first: a name DNS cannot place
        // fails the attempt with why, like any other failure to dial.
        let located = self.config.ua.directory.locate_all(
            std::iter::once(&trunk.address).chain(&trunk.backups),
            &mut self.rng,
        );
        let mut peers = match located {
            Ok(peers) => peers,
            Err(e) => {
                self.attempt_failed(leg, format!("the trunk {}: {e}", trunk.address));
                return;
            }
        };
        // A trunk by name may answer from any of its addresses, and have
        // its media at any of theirs.
        let media_networks = match trunk.address.host {
            crate::sip::locate::Host::Ip(_) if trunk.backups.is_empty() => {
                self.config.outbound_media.clone()
            }
            _ => self.media_networks_for(&peers),
        };
        let key = match self.secure_leg(trunk.srtp, &mut peers) {
            Ok(key) => key,
            Err(e) => {
                self.attempt_failed(leg, format!("the trunk {}: {e}", trunk.address));
                return;
            }
        };
        let destination = peers.remove(0);
        let local = match self.open_media() {
            Ok(local) => local,
            Err(e) => {
                self.attempt_failed(leg, e);
                return;
            }
        };
        let port = local.port;
        let mut media = MediaSession::new(local);
        if let Some(key) = key {
            media = media.srtp_only(key);
        }
        let target = trunk.target(&leg.number);
        let handle = self.ua.originate(
            now,
            OutgoingCall {
                target: target.clone(),
                from_user: trunk.from.clone(),
                destination,
                alternates: peers,
                media,
                media_networks: media_networks.clone(),
                credentials: trunk.credentials.clone(),
                ring_timeout: self.config.ring_timeout,
                headers: Vec::new(),
                session_expires: Some(crate::sip::ua::SESSION_EXPIRES),
            },
        );
        let since_request = (self.wall(now) - leg.requested_at).num_microseconds();
        tracing::info!(
            number = %leg.number, queue = %leg.queue, flow = %flow, since_request_us = since_request,
            "dialling a callback"
        );
        let mut vars = self.env.queue_vars(now);
        vars.extend(leg.vars());
        let incoming = IncomingCall {
            call_id: self.ua.call_id(handle).unwrap_or_default().to_string(),
            caller: leg.number.clone(),
            called: leg.queue.clone(),
            from: format!("<sip:{}@{}>", trunk.from, self.config.ua.advertised),
            to: format!("<{target}>"),
            offer: None,
            source: destination.addr,
            trunk: "outbound".into(),
            media_networks,
            secure: false,
        };
        let call = self.new_call(now, incoming, entry, vars, Some(leg));
        drop(entered);
        self.activate(now, handle, call, port, span);
        self.pump(now);
    }

    fn attempt_failed(&mut self, leg: CallbackLeg, reason: String) {
        tracing::warn!(id = leg.id, "callback attempt could not start: {reason}");
        self.out.push_back(EndpointOutput::SettleCallback {
            leg,
            outcome: AttemptOutcome::Failed(reason),
        });
    }
}
