//! One call: the SIP dialog's events, the media (RTP out, RFC 4733 keys in)
//! and the flow interpreter, composed as one sans-IO state machine.
//!
//! The IO edge owns the RTP socket and the clock. It feeds the call SIP
//! events, received RTP packets and timeouts; it asks for RTP packets when
//! they are due (`poll_packet`) and drains [`CallOutput`]s: SIP commands
//! (REFER, BYE) and, at the end, the call record.

pub mod callback_leg;
pub mod endpoint;
pub mod record;
pub mod runtime;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::flow::dialling::Dialling;
use crate::flow::graph::NodeRef;
use crate::flow::interpreter::{
    Action, Booked, CallInfo, CallbackError, CallbackRequest, Event, Interpreter, PlaybackId,
    StepKind, TimerId, TransferRequest,
};
use crate::flow::model::Handoff;
use crate::flow::FlowSet;
use crate::media::dtmf::DtmfReceiver;
use crate::media::g711::Codec as MediaCodec;
use crate::media::latch::{RtpLatch, RtpPeer};
use crate::media::prompts::PromptCache;
use crate::media::rtp::RtpSender;
use crate::sip::sdp::{Codec, Negotiated};
use crate::sip::ua::{refer_to, DialFailure, EndReason, IncomingCall, UaEvent, NO_FINAL_NOTIFY};
use callback_leg::CallbackLeg;
use record::{
    outcome_fields, timestamp, CallOutcome, CallRecord, FailedTransfer, FlowInput, InputKind,
    Party, MAX_FAILED_TRANSFERS, MAX_INPUTS,
};

/// How a bridged hand-off stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BridgeState {
    /// No bridge asked for.
    None,
    /// The call to the queue is placed and rings; the caller hears the
    /// transfer's hold prompts.
    Ringing,
    /// The agent answered: audio is relayed both ways, and the flow is
    /// over.
    Up,
}

/// What the SIP side must do for this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallCommand {
    /// Send REFER with this Refer-To value and these extra headers.
    Refer {
        /// The Refer-To value.
        target: String,
        /// Headers on the REFER itself (the context, when the queue wants
        /// it there).
        headers: Vec<(String, String)>,
    },
    /// End the call (BYE).
    Hangup,
}

/// What the call asks of the IO edge.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutput {
    /// A SIP command.
    Sip(CallCommand),
    /// Place a call to the queue and bridge the caller to it; answer with
    /// [`Call::bridge_answered`] or [`Call::bridge_failed`].
    Bridge(TransferRequest),
    /// Store this callback request durably, then call
    /// [`Call::callback_stored`] with the result.
    StoreCallback(CallbackRequest),
    /// The call is over; write its record. Always the last output.
    Finished(Box<CallRecord>),
}

/// Everything a call needs at its start.
pub struct CallSetup {
    /// The INVITE's facts.
    pub incoming: IncomingCall,
    /// The flows (kept for the whole call, so reloads do not disturb it).
    pub flows: Arc<FlowSet>,
    /// The prompts of `flows`, encoded.
    pub prompts: Arc<PromptCache>,
    /// Where the flow starts.
    pub entry: NodeRef,
    /// When the INVITE arrived.
    pub started: Instant,
    /// The wall-clock time then.
    pub started_wall: DateTime<Utc>,
    /// A random SSRC, sequence and timestamp base (RFC 3550 5.1).
    pub rtp_seed: (u32, u16, u32),
    /// End the call after this long without RTP from the caller.
    pub rtp_timeout: Duration,
    /// Variables for the flow (e.g. estimated waits, `wait_QUEUE`).
    pub vars: Vec<(String, String)>,
    /// For a call we placed to keep a callback promise: the request.
    pub callback: Option<CallbackLeg>,
    /// Which numbers the flow may have dialled.
    pub dialling: Arc<Dialling>,
    /// Latch inbound RTP to the first source seen rather than the SDP's
    /// address (a peer behind NAT).
    pub rtp_latch_first: bool,
    /// End a held call (media not both ways) after this long without RTP.
    pub hold_timeout: Duration,
    /// End the call this long after it started, whatever it is doing.
    pub max_duration: Duration,
}

/// A call in progress, as `GET /calls` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CallSummary {
    /// The SIP Call-ID.
    pub call_id: String,
    /// ANI, as the From claims it.
    pub caller: String,
    /// DNIS.
    pub called: String,
    /// The flow it runs.
    pub flow: String,
    /// The node it is at (`flow.node`).
    pub at: String,
    /// When its INVITE arrived (or we placed it), RFC 3339.
    pub since: String,
    /// Whether it was answered.
    pub answered: bool,
    /// Whether it is bridged to an agent.
    pub bridged: bool,
    /// For a call we placed to keep a callback promise: the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::callback::CallbackId>,
}

/// One call.
///
/// `repr(C)` so that what a due packet reads (the sender, and whether the
/// flow moved) comes first, next to the endpoint's pacing fields in front
/// of it: with thousands of calls each packet's state is a cache miss, and
/// the compiler's own order scattered it over lines 1.5 KB apart.
#[repr(C)]
pub struct Call {
    sender: Option<RtpSender>,
    out: VecDeque<CallOutput>,
    /// The flow took an event since [`Call::take_stirred`] last asked.
    stirred: bool,
    finished: bool,
    sip_ended: bool,
    /// The peer asked for media somewhere its trunk may not have RTP sent:
    /// the call ends at the next timeout.
    media_refused: bool,
    interp: Interpreter,
    prompts: Arc<PromptCache>,
    incoming: IncomingCall,
    flow_name: String,
    rtp_seed: (u32, u16, u32),
    media: Option<Negotiated>,
    dtmf: Option<DtmfReceiver>,
    /// Which inbound RTP counts (the caller's, not a stranger's).
    latch: RtpLatch,
    /// The interpreter's playback the sender is playing.
    playing: Option<PlaybackId>,
    timer: Option<(TimerId, Instant)>,
    last_rtp: Instant,
    rtp_timeout: Duration,
    hold_timeout: Duration,
    max_duration: Duration,
    started: Instant,
    started_wall: DateTime<Utc>,
    answered: Option<Instant>,
    digits: String,
    /// Set when the call was ended from outside the flow (shutdown).
    forced_end: Option<String>,
    /// The request a call we placed serves.
    callback: Option<CallbackLeg>,
    /// How placing the call failed, as the record's outcome and detail.
    dial_failure: Option<(CallOutcome, String)>,
    bridge: BridgeState,
    /// For `refer_then_bridge`: the bridge to place if the REFER fails.
    bridge_fallback: Option<TransferRequest>,
    /// Why the REFER failed before the call was bridged instead.
    refer_failed: Option<String>,
    /// How the call was handed over, once it was.
    handoff: Option<Handoff>,
    agent_answered: Option<Instant>,
    failed_transfers: Vec<FailedTransfer>,
    inputs: Vec<FlowInput>,
    hung_up_by: Option<Party>,
    actions: Vec<Action>,
}

impl Call {
    /// A call that has been accepted but not yet confirmed.
    pub fn new(setup: CallSetup) -> Self {
        let latch = RtpLatch::new(setup.rtp_latch_first, setup.incoming.media_networks.clone());
        let flow_name = setup.flows.flow(setup.entry.flow).name.clone();
        let info = CallInfo {
            caller: setup.incoming.caller.clone(),
            called: setup.incoming.called.clone(),
            call_id: setup.incoming.call_id.clone(),
            started: setup.started,
            started_wall: setup.started_wall,
            vars: setup.vars,
            dialling: setup.dialling,
        };
        Self {
            interp: Interpreter::new(setup.flows, setup.entry, info),
            prompts: setup.prompts,
            incoming: setup.incoming,
            flow_name,
            rtp_seed: setup.rtp_seed,
            media: None,
            sender: None,
            dtmf: None,
            latch,
            playing: None,
            timer: None,
            last_rtp: setup.started,
            rtp_timeout: setup.rtp_timeout,
            hold_timeout: setup.hold_timeout,
            max_duration: setup.max_duration,
            media_refused: false,
            started: setup.started,
            started_wall: setup.started_wall,
            answered: None,
            digits: String::new(),
            sip_ended: false,
            finished: false,
            forced_end: None,
            callback: setup.callback,
            dial_failure: None,
            bridge: BridgeState::None,
            bridge_fallback: None,
            refer_failed: None,
            handoff: None,
            agent_answered: None,
            failed_transfers: Vec::new(),
            inputs: Vec::new(),
            hung_up_by: None,
            actions: Vec::with_capacity(16),
            out: VecDeque::new(),
            stirred: false,
        }
    }

    /// The negotiated media (at answer, from the ACK, or after a re-INVITE).
    /// Media at an address outside the trunk's media networks is never
    /// used: the call ends instead, since a stranger's INVITE must not make
    /// us stream at a host of its choosing.
    pub fn set_media(&mut self, negotiated: Negotiated) {
        let ip = negotiated.remote.ip();
        if !ip.is_unspecified() && !self.incoming.media_networks.contains(ip) {
            tracing::warn!(call_id = %self.incoming.call_id, remote = %negotiated.remote,
                trunk = %self.incoming.trunk, "media outside the trunk's media networks; ending the call");
            self.media_refused = true;
            self.media = None;
            self.sender = None;
            return;
        }
        let same_type = self
            .media
            .is_some_and(|m| m.payload_type == negotiated.payload_type);
        if self.sender.is_none() || !same_type {
            // A new payload type starts a new stream; the same one keeps the
            // sequence and timestamps running across a re-INVITE.
            let (ssrc, seq, ts) = self.rtp_seed;
            self.sender = Some(RtpSender::new(ssrc, negotiated.payload_type, seq, ts));
        }
        self.dtmf = negotiated.dtmf_payload_type.map(DtmfReceiver::new);
        self.latch.expect(
            negotiated.remote,
            negotiated.payload_type,
            negotiated.dtmf_payload_type,
        );
        self.media = Some(negotiated);
    }

    /// The negotiated media, once there is any.
    pub fn media(&self) -> Option<&Negotiated> {
        self.media.as_ref()
    }

    /// Where RTP goes now, if we may send.
    pub fn rtp_destination(&self) -> Option<RtpPeer> {
        self.media.filter(|m| m.sends_rtp())?;
        self.latch.peer()
    }

    /// Which inbound RTP the call takes (for the relay rules of a bridge).
    pub fn latch(&self) -> &RtpLatch {
        &self.latch
    }

    /// RTP from the caller that the edge relayed without us (see
    /// `RelayRule`): a sign of life, as [`Call::on_rtp`] would count it.
    pub fn relayed_rtp(&mut self, now: Instant) {
        self.last_rtp = self.last_rtp.max(now);
    }

    /// The peer of the call's RTP, sending or not (on hold the socket
    /// stays connected to it, so that its RTP still arrives).
    pub fn rtp_peer(&self) -> Option<RtpPeer> {
        self.media?;
        self.latch.peer()
    }

    fn codec(&self) -> MediaCodec {
        match self.media.map(|m| m.codec) {
            Some(Codec::Pcma) => MediaCodec::Pcma,
            _ => MediaCodec::Pcmu,
        }
    }

    /// Whether the call is over (its record was emitted).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }

    /// A SIP event for this call.
    pub fn on_sip(&mut self, now: Instant, event: UaEvent) {
        match event {
            UaEvent::Confirmed { .. } => {
                self.answered.get_or_insert(now);
                self.last_rtp = now;
                self.feed(now, Event::Start);
            }
            UaEvent::MediaChanged(n) => {
                // Silence is measured afresh from a hold or an unhold.
                self.last_rtp = now;
                self.set_media(n)
            }
            UaEvent::Digit(d) => self.on_digit(now, d),
            UaEvent::TransferAccepted => {}
            UaEvent::TransferResult(Ok(())) => {
                self.bridge_fallback = None;
                self.handoff = Some(Handoff::Refer);
                self.feed(now, Event::TransferSucceeded)
            }
            UaEvent::TransferResult(Err(reason)) => {
                // Refused, or failed on the way: bridge instead, where the
                // queue allows it. Silence after a 202 is not a refusal
                // (the caller may be talking to the agent already).
                match self.bridge_fallback.take() {
                    Some(t) if reason != NO_FINAL_NOTIFY => {
                        tracing::info!(call_id = %self.incoming.call_id, %reason,
                            "REFER failed; bridging the call to the queue instead");
                        self.refer_failed = Some(reason);
                        self.start_bridge(t);
                    }
                    _ => self.transfer_failed(now, reason),
                }
            }
            UaEvent::Ended(reason) => {
                self.sip_ended = true;
                if matches!(reason, EndReason::RemoteBye | EndReason::Cancelled) {
                    self.hung_up_by.get_or_insert(Party::Caller);
                }
                match reason {
                    EndReason::LocalBye => return,
                    // The caller never confirmed our answer: a failed call
                    // (often a proxy that dropped the ACK), not a hang-up.
                    EndReason::AckTimeout => {
                        self.forced_end = Some("no ACK for the 200 OK".to_string())
                    }
                    EndReason::SessionExpired => {
                        self.forced_end = Some("the session timer expired (RFC 4028)".to_string())
                    }
                    _ => {}
                }
                self.feed(now, Event::HungUp);
                self.finish(now);
            }
            // Events of calls we place; a received call never gets them.
            UaEvent::Incoming(_)
            | UaEvent::Ringing
            | UaEvent::Answered { .. }
            | UaEvent::DialFailed { .. } => {}
        }
    }

    /// A call we placed did not get through: `status` and `reason` as the
    /// user agent reported them (busy, no answer, refused, no response).
    pub fn dial_failed(&mut self, now: Instant, cause: DialFailure, status: u16, reason: &str) {
        self.sip_ended = true;
        self.dial_failure = Some(match cause {
            DialFailure::Busy => (CallOutcome::Busy, format!("{status} {reason}")),
            DialFailure::NoAnswer => (CallOutcome::NoAnswer, "ring timeout".to_string()),
            DialFailure::Cancelled | DialFailure::NoResponse | DialFailure::Refused => {
                (CallOutcome::DialFailed, format!("{status} {reason}"))
            }
        });
        self.finish(now);
    }

    /// Whether the caller is bridged to an agent (the flow is over; the
    /// endpoint relays the audio).
    pub fn is_bridged(&self) -> bool {
        self.bridge == BridgeState::Up
    }

    /// The agent answered the bridged call: our prompts stop, the flow
    /// ends as transferred, and the call lasts until either side hangs up.
    pub fn bridge_answered(&mut self, now: Instant) {
        if self.bridge != BridgeState::Ringing || self.finished {
            return;
        }
        self.bridge = BridgeState::Up;
        self.handoff = Some(Handoff::Bridge);
        self.agent_answered = Some(now);
        if let Some(s) = self.sender.as_mut() {
            s.stop();
        }
        self.playing = None;
        self.feed(now, Event::TransferSucceeded);
    }

    /// The bridged call did not reach an agent: the flow's `on_fail` runs.
    pub fn bridge_failed(&mut self, now: Instant, reason: String) {
        if self.bridge != BridgeState::Ringing {
            return;
        }
        self.bridge = BridgeState::None;
        self.transfer_failed(now, reason);
    }

    /// The transfer under way failed: noted for the record, then the
    /// flow's `on_fail` runs.
    fn transfer_failed(&mut self, now: Instant, reason: String) {
        if let Some(target) = self.interp.transferring_to() {
            if self.failed_transfers.len() < MAX_FAILED_TRANSFERS {
                self.failed_transfers.push(FailedTransfer {
                    target: target.to_string(),
                    reason: reason.clone(),
                });
            }
        }
        self.feed(now, Event::TransferFailed(reason));
    }

    /// The agent hung up a bridged call: so do we, to the caller.
    pub fn agent_hung_up(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        self.hung_up_by.get_or_insert(Party::Agent);
        self.hang_up_if_needed();
        self.finish(now);
    }

    fn start_bridge(&mut self, t: TransferRequest) {
        self.bridge = BridgeState::Ringing;
        self.out.push_back(CallOutput::Bridge(t));
    }

    /// What the admin's list of calls in progress shows of this one.
    pub fn summary(&self) -> CallSummary {
        let set = self.interp.flow_set();
        CallSummary {
            call_id: self.incoming.call_id.clone(),
            caller: self.incoming.caller.clone(),
            called: self.incoming.called.clone(),
            flow: self.flow_name.clone(),
            at: set.qualified_name(self.interp.current()),
            since: timestamp(self.started_wall),
            answered: self.answered.is_some(),
            bridged: self.is_bridged(),
            callback: self.callback.as_ref().map(|l| l.id),
        }
    }

    /// Where the call's INVITE came from (for a call we placed, the trunk).
    pub fn source(&self) -> std::net::SocketAddr {
        self.incoming.source
    }

    /// The caller's number (ANI), as their From claims it.
    pub fn caller(&self) -> &str {
        &self.incoming.caller
    }

    /// The request this call serves, if it is a callback we placed.
    pub fn callback(&self) -> Option<&CallbackLeg> {
        self.callback.as_ref()
    }

    /// Marks the call answered (the 200 OK went out).
    pub fn on_answered(&mut self, now: Instant) {
        self.answered.get_or_insert(now);
    }

    fn on_digit(&mut self, now: Instant, d: char) {
        if self.digits.len() < 256 {
            self.digits.push(d);
        }
        self.feed(now, Event::Digit(d));
    }

    /// The store's answer to [`CallOutput::StoreCallback`].
    pub fn callback_stored(&mut self, now: Instant, result: Result<Booked, CallbackError>) {
        self.feed(now, Event::CallbackRecorded(result));
    }

    /// An RTP packet that reached the call's port from `from`; counted
    /// (as a key, or as a sign of life) only when it is the caller's, which
    /// the return value says. Once bridged, keys are the agent's business:
    /// they are relayed, not read.
    pub fn on_rtp(&mut self, now: Instant, from: std::net::SocketAddr, packet: &[u8]) -> bool {
        if !self.latch.accept(from, packet) {
            return false;
        }
        self.last_rtp = now;
        if self.bridge == BridgeState::Up {
            return true;
        }
        let key = self.dtmf.as_mut().and_then(|d| d.on_rtp(packet));
        if let Some(k) = key {
            self.on_digit(now, k);
        }
        true
    }

    /// When [`Call::handle_timeout`] or [`Call::poll_packet`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        [self.next_packet_due(), self.timers_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When [`Call::handle_timeout`] is next due: the call's timers, not
    /// its packets. Only an event (input, or a prompt that ends) brings it
    /// closer, and [`Call::take_stirred`] tells of those.
    pub fn timers_due(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let timer = self.timer.map(|(_, at)| at);
        let silence = self.silence_deadline();
        let refused = self.media_refused.then_some(self.started);
        let longest = self.started.checked_add(self.max_duration);
        [timer, silence, refused, longest]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the flow took an event since the last call (so it may have
    /// new timers), or the call has outputs waiting or is over; clears the
    /// first.
    pub fn take_stirred(&mut self) -> bool {
        std::mem::take(&mut self.stirred) || !self.out.is_empty() || self.finished
    }

    /// When the call ends for want of RTP: after `rtp_timeout`, or the
    /// longer `hold_timeout` while media does not flow both ways (on hold
    /// many phones send nothing at all).
    fn silence_deadline(&self) -> Option<Instant> {
        self.answered?;
        let media = self.media?;
        let held = media.direction != crate::sip::sdp::Direction::SendRecv;
        let limit = if held {
            self.hold_timeout
        } else {
            self.rtp_timeout
        };
        Some(self.last_rtp + limit)
    }

    /// Runs the flow's timer and the silence check.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((id, at)) = self.timer {
            if at <= now {
                self.timer = None;
                self.feed(now, Event::Timer(id));
            }
        }
        if self.finished {
            return;
        }
        if self.media_refused {
            self.terminate(
                now,
                "the SDP names an address outside the trunk's media networks".into(),
            );
            return;
        }
        if self
            .started
            .checked_add(self.max_duration)
            .is_some_and(|end| now >= end)
        {
            tracing::info!(call_id = %self.incoming.call_id, "the call reached its maximum duration; ending it");
            self.terminate(now, "maximum call duration reached".into());
            return;
        }
        let silent = self.silence_deadline().is_some_and(|at| now >= at);
        if silent {
            tracing::info!(call_id = %self.incoming.call_id, "no RTP from the caller; ending the call");
            self.feed(now, Event::HungUp);
            self.hang_up_if_needed();
            self.finish(now);
        }
    }

    /// When the next RTP packet is due, if one is.
    pub fn next_packet_due(&self) -> Option<Instant> {
        self.sender.as_ref().and_then(|s| s.poll_timeout())
    }

    /// Writes the next due RTP packet into `buf`; `None` when none is due.
    /// The caller sends it to [`Call::rtp_destination`] (if any: on hold the
    /// packet is produced to keep time but not sent).
    pub fn poll_packet(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<usize> {
        let info = self.sender.as_mut()?.poll_packet(now, buf)?;
        if info.last {
            if let Some(id) = self.playing.take() {
                self.feed(now, Event::PromptFinished(id));
            }
        }
        Some(info.len)
    }

    fn feed(&mut self, now: Instant, event: Event) {
        if self.finished {
            return;
        }
        self.stirred = true;
        let mut actions = std::mem::take(&mut self.actions);
        self.interp.handle(now, event, &mut actions);
        for action in actions.drain(..) {
            self.apply(now, action);
        }
        self.actions = actions;
    }

    fn apply(&mut self, now: Instant, action: Action) {
        match action {
            Action::Play { id, prompts, .. } => {
                let codec = self.codec();
                let audio: Vec<Arc<[u8]>> = prompts
                    .iter()
                    .filter_map(|p| self.prompts.get(p.0, codec).cloned())
                    .collect();
                self.playing = Some(id);
                match self.sender.as_mut() {
                    Some(s) if !audio.is_empty() => s.play(now, audio),
                    _ => {
                        // Nothing to play: the prompt is over at once.
                        self.playing = None;
                        self.feed(now, Event::PromptFinished(id));
                    }
                }
            }
            Action::StopPlayback => {
                self.playing = None;
                if let Some(s) = self.sender.as_mut() {
                    s.stop();
                }
            }
            Action::SetTimer { id, at } => self.timer = Some((id, at)),
            Action::CancelTimer(id) => {
                if self.timer.is_some_and(|(t, _)| t == id) {
                    self.timer = None;
                }
            }
            Action::Transfer(mut t) => {
                if let Some(leg) = &self.callback {
                    leg.extend(&mut t);
                }
                match t.handoff {
                    Handoff::Bridge => self.start_bridge(t),
                    Handoff::Refer | Handoff::ReferThenBridge => {
                        let (target, headers) = transfer_refer(&t);
                        if t.handoff == Handoff::ReferThenBridge {
                            self.bridge_fallback = Some(t);
                        }
                        self.out
                            .push_back(CallOutput::Sip(CallCommand::Refer { target, headers }));
                    }
                }
            }
            Action::RequestCallback(request) => {
                // The caller hears the confirmation only once the store has
                // answered `callback_stored`: the promise is on disk first.
                self.out.push_back(CallOutput::StoreCallback(request));
            }
            Action::Hangup => self.hang_up_if_needed(),
            Action::Step(step) => {
                let set = self.interp.flow_set();
                tracing::debug!(node = %set.qualified_name(step.node), what = %step.what, "step");
                let (input, key) = match step.what {
                    StepKind::Key(k) => (InputKind::Key, Some(k)),
                    StepKind::AgentKey => (InputKind::AgentKey, None),
                    StepKind::Invalid(k, _) => (InputKind::Invalid, Some(k)),
                    StepKind::BadEntry(..) => (InputKind::Invalid, None),
                    StepKind::NoInput(_) => (InputKind::NoInput, None),
                    _ => return,
                };
                if self.inputs.len() < MAX_INPUTS {
                    let at = set.qualified_name(step.node);
                    self.inputs.push(FlowInput { at, input, key });
                }
            }
            // A bridged call outlives its flow: it ends when a side hangs up.
            Action::Finished(_) if self.bridge == BridgeState::Up => {}
            Action::Finished(_) => {
                self.hang_up_if_needed();
                self.finish(now);
            }
        }
    }

    /// Ends the call from outside the flow (server shutdown, broken media):
    /// BYE, and a record saying why.
    pub fn terminate(&mut self, now: Instant, reason: String) {
        if self.finished {
            return;
        }
        self.forced_end = Some(reason);
        self.hang_up_if_needed();
        self.finish(now);
    }

    fn hang_up_if_needed(&mut self) {
        if !self.sip_ended {
            self.sip_ended = true;
            self.hung_up_by.get_or_insert(Party::Callflow);
            self.out.push_back(CallOutput::Sip(CallCommand::Hangup));
        }
    }

    fn wall(&self, at: Instant) -> DateTime<Utc> {
        let d = chrono::Duration::from_std(at.saturating_duration_since(self.started))
            .unwrap_or_default();
        self.started_wall + d
    }

    fn finish(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.timer = None;
        if let Some(s) = self.sender.as_mut() {
            s.stop();
        }
        let set = Arc::clone(self.interp.flow_set());
        let nodes = self
            .interp
            .visited()
            .iter()
            .map(|n| set.qualified_name(*n))
            .collect();
        let forced = self.dial_failure.take().or_else(|| {
            self.forced_end
                .take()
                .map(|reason| (CallOutcome::Failed, reason))
        });
        let (outcome, detail) = match (forced, self.interp.outcome()) {
            (Some(end), _) => end,
            (None, Some(o)) => outcome_fields(o),
            (None, None) => (
                CallOutcome::CallerHungUp,
                "before the flow started".to_string(),
            ),
        };
        let record = CallRecord {
            call_id: self.incoming.call_id.clone(),
            from: self.incoming.from.clone(),
            to: self.incoming.to.clone(),
            caller: self.incoming.caller.clone(),
            called: self.incoming.called.clone(),
            flow: self.flow_name.clone(),
            start: timestamp(self.started_wall),
            answer: self.answered.map(|a| timestamp(self.wall(a))),
            end: timestamp(self.wall(now)),
            nodes,
            digits: self.digits.clone(),
            outcome,
            detail,
            callback: None,
            callback_id: None,
            handoff: self.handoff.filter(|_| outcome == CallOutcome::Transferred),
            refer_failed: self.refer_failed.take(),
            agent_answer: self.agent_answered.map(|a| timestamp(self.wall(a))),
            inputs: std::mem::take(&mut self.inputs),
            failed_transfers: std::mem::take(&mut self.failed_transfers),
            hung_up_by: self.hung_up_by,
            node: None,
        };
        self.out.push_back(CallOutput::Finished(Box::new(record)));
    }
}

/// The flow's context as the ACD reads it: `X-Queue`, `X-Priority` and
/// one `X-Context-NAME` per context entry, in that order.
pub fn context_headers(t: &TransferRequest) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(t.context.len() + 2);
    if let Some(q) = &t.queue {
        headers.push(("X-Queue".to_string(), q.clone()));
    }
    if let Some(p) = t.priority {
        headers.push(("X-Priority".to_string(), p.to_string()));
    }
    for (k, v) in &t.context {
        headers.push((format!("X-Context-{k}"), v.clone()));
    }
    headers
}

/// The flow's context as User-to-User (RFC 7433), when the queue asks for
/// it: the queue, the priority and the context, as many as fit.
pub fn user_to_user(t: &TransferRequest) -> Option<(String, String)> {
    if !t.user_to_user {
        return None;
    }
    let mut pairs = Vec::with_capacity(t.context.len() + 2);
    if let Some(q) = &t.queue {
        pairs.push(("queue".to_string(), q.clone()));
    }
    if let Some(p) = t.priority {
        pairs.push(("priority".to_string(), p.to_string()));
    }
    pairs.extend(t.context.iter().cloned());
    let (value, left_out) = crate::sip::uui::encode(&pairs);
    if !left_out.is_empty() {
        tracing::warn!(?left_out, "context left out of User-to-User: it would pass ISDN's 128 octets (the X- headers carry all of it)");
    }
    Some(("User-to-User".to_string(), value))
}

/// A context value as a header value: control characters dropped (a
/// caller may have typed the variable it came from) and at most 256 bytes.
pub(crate) fn header_value(value: &str) -> String {
    let mut out: String = value.chars().filter(|c| !c.is_control()).collect();
    if out.len() > 256 {
        let mut end = 256;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// A transfer's REFER: the Refer-To value, and headers on the REFER
/// itself, each with the flow's context ([`context_headers`], and
/// User-to-User if the queue asks) where the queue's `refer_context`
/// says.
pub fn transfer_refer(t: &TransferRequest) -> (String, Vec<(String, String)>) {
    let mut context = context_headers(t);
    context.extend(user_to_user(t));
    let in_uri = if t.refer_context.in_uri() {
        context.clone()
    } else {
        Vec::new()
    };
    let on_request = if t.refer_context.in_request() {
        context
            .into_iter()
            .map(|(k, v)| (k, header_value(&v)))
            .collect()
    } else {
        Vec::new()
    };
    (refer_to(&t.uri, &in_uri), on_request)
}
