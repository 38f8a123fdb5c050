//! Placing a callback: the listener turns a claimed request into an
//! outbound INVITE through the trunk and a call task that runs the queue's
//! callback flow once the callee answers.

use std::sync::Arc;
use std::time::Instant;

use crate::call::callback_leg::CallbackLeg;
use crate::call::{Call, CallSetup};
use crate::callback::{AttemptOutcome, Callback};
use crate::sip::sdp;
use crate::sip::ua::{IncomingCall, OutgoingCall};

use super::{rtp_seed, wall_now, Server};

impl Server {
    /// Dials `callback`; an attempt that cannot even start is settled as
    /// failed at once (and retried by the policy).
    pub(super) fn dial(&mut self, t: Instant, callback: Callback) {
        let config = &self.shared.config;
        let leg = CallbackLeg::of(&callback, config.dialler.priority_boost);
        let span = tracing::info_span!("callback", id = leg.id, attempt = leg.attempt);
        let _entered = span.enter();
        let Some(trunk) = config.trunk.clone() else {
            self.attempt_failed(&leg, "no trunk configured".into());
            return;
        };
        let flow = config.callback_flow_for(&leg.queue).to_string();
        let runtime = self.shared.runtime();
        let Some(entry) = runtime.entry(&flow) else {
            self.attempt_failed(&leg, format!("the callback flow `{flow}` is not loaded"));
            return;
        };
        // The last guard against toll fraud: whatever stored the request,
        // a number the policy refuses is never dialled.
        if let Err(why) = self.shared.dialling.callback.check(&leg.number) {
            tracing::warn!(id = leg.id, number = %leg.number, "callback refused by the dialling policy: {why}");
            self.shared
                .settle_callback(&leg, AttemptOutcome::Refused(why));
            return;
        }
        let (socket, local) = match self.open_rtp() {
            Ok(opened) => opened,
            Err(e) => {
                self.attempt_failed(&leg, e);
                return;
            }
        };
        let port = local.port;
        let target = trunk.target(&leg.number);
        let policy = config.dialler.retry_policy();
        let handle = self.ua.originate(
            t,
            OutgoingCall {
                target: target.clone(),
                from_user: trunk.from.clone(),
                destination: trunk.address,
                sdp: sdp::offer(&local).into_bytes(),
                credentials: trunk.credentials(),
                ring_timeout: policy.ring_timeout,
            },
        );
        let since_request = (wall_now() - leg.requested_at).num_microseconds();
        tracing::info!(
            number = %leg.number, queue = %leg.queue, flow = %flow, since_request_us = since_request,
            "dialling a callback"
        );
        let mut vars = self.shared.waits.as_vars(t);
        vars.extend(leg.vars());
        let call = Call::new(CallSetup {
            incoming: IncomingCall {
                call_id: self.ua.call_id(handle).unwrap_or_default().to_string(),
                caller: leg.number.clone(),
                called: leg.queue.clone(),
                from: format!("<sip:{}@{}>", trunk.from, self.ua_advertised),
                to: format!("<{target}>"),
                offer: None,
                source: trunk.address,
                trunk: "outbound".into(),
                media_networks: self.shared.outbound_media.clone(),
            },
            flows: Arc::clone(&runtime.flows),
            prompts: Arc::clone(&runtime.prompts),
            entry,
            started: t,
            started_wall: wall_now(),
            rtp_seed: rtp_seed(),
            rtp_timeout: config.rtp_timeout.0,
            vars,
            callback: Some(leg),
            dialling: Arc::clone(&self.shared.dialling),
            rtp_latch_first: self.shared.config.rtp_latch_first,
            hold_timeout: config.hold_timeout.0,
            max_duration: config.max_call_duration.0,
        });
        drop(_entered);
        self.spawn_call(handle, call, socket, port, span);
    }

    fn attempt_failed(&self, leg: &CallbackLeg, reason: String) {
        tracing::warn!(id = leg.id, "callback attempt could not start: {reason}");
        self.shared
            .settle_callback(leg, AttemptOutcome::Failed(reason));
    }
}
