//! The Endpoint: one sans-IO state machine that owns the user agent
//! (transactions, dialogs) and every call (its media session, its flow,
//! the callback it serves).
//!
//! It never reads a clock, opens a socket or spawns a task. The IO edge
//! drives it with inputs, each carrying the current time:
//! [`Endpoint::handle_datagram`] (SIP), [`Endpoint::handle_rtp`],
//! [`Endpoint::handle_timeout`], [`Endpoint::dial`] (a claimed callback),
//! and the answers to what it asked of the store
//! ([`Endpoint::handle_callback_stored`], [`Endpoint::handle_callback_state`]).
//! After each input the edge drains it: [`Endpoint::drain_rtp`] (or
//! [`Endpoint::queued_rtp`] then [`Endpoint::clear_rtp`]) hands over the
//! RTP packets that are due, [`Endpoint::poll_output`] everything else
//! (SIP to transmit, RTP ports opened and closed, callback requests to
//! store, call records), and [`Endpoint::poll_timeout`] says when to call
//! [`Endpoint::handle_timeout`] next.
//!
//! Calls are paced from one wheel of deadlines (RTP packets, flow timers,
//! silence checks; see `wheel`), not a task and a timer per call. IDs (tags, branches,
//! Call-IDs, cnonces, SSRCs) come from the random source the endpoint is
//! handed, so a test with a seeded one sees exact bytes.

mod attempt;
mod bridge;
pub mod config;
mod inbound;
mod outbound;
mod relay;
mod srtp;
#[cfg(test)]
mod tests;
mod wheel;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::call::callback_leg::CallbackLeg;
use crate::call::record::CallRecord;
use crate::call::runtime::Runtime;
use crate::call::{Call, CallCommand, CallOutput, CallSetup};
use crate::callback::limits::BookingRefusal;
use crate::callback::{AttemptOutcome, CallbackId, Requested, State};
use crate::flow::graph::NodeRef;
use crate::flow::interpreter::{Booked, CallbackError, CallbackRequest};
use crate::media::latch::RtpPeer;
use crate::sip::admission::AdmissionCounters;
use crate::sip::sdp::LocalMedia;
use crate::sip::transport::Peer;
use crate::sip::ua::IncomingCall;
use crate::sip::ua::{CallHandle, UaCounters, UaEvent, UaOutput, UserAgent, NO_FINAL_NOTIFY};
use attempt::Progress;
pub use config::{EndpointConfig, OutboundTrunk, Routing};
use inbound::Ringing;
pub use relay::{RelayRule, RelayStream};

/// What the endpoint borrows from its surroundings, synchronously: RTP
/// ports (the edge binds the sockets) and the latest queue figures.
pub trait Environment: Send {
    /// A free RTP port, bound by the edge, for a call about to be answered
    /// or placed; it stays the call's until [`EndpointOutput::RtpClosed`].
    fn open_rtp(&mut self) -> Result<u16, String>;
    /// Variables for a new call's flow (estimated waits, `wait_QUEUE`).
    fn queue_vars(&self, now: Instant) -> Vec<(String, String)>;
    /// A fresh SRTP master key and salt for a leg (RFC 4568): from the
    /// crypto provider's generator (cryptographically secure, seeded by
    /// the operating system), never the endpoint's own RNG (which tests
    /// seed). Tests may give fixed keys.
    fn srtp_key(&mut self) -> Result<crate::sip::sdp::sdes::SdesKey, String> {
        let provider = rtc_srtp::crypto::default_provider().map_err(|e| format!("SRTP: {e}"))?;
        let mut key = [0u8; crate::sip::sdp::sdes::KEY_LEN];
        provider
            .random()
            .fill(&mut key)
            .map_err(|e| format!("SRTP key: {e}"))?;
        Ok(crate::sip::sdp::sdes::SdesKey(key))
    }
}

/// What the edge must do, besides sending RTP.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointOutput {
    /// Send a SIP message.
    Transmit {
        /// Where to, and over what.
        to: Peer,
        /// The bytes.
        bytes: Arc<[u8]>,
    },
    /// A call now owns the port from [`Environment::open_rtp`]: RTP that
    /// reaches it goes to [`Endpoint::handle_rtp`].
    RtpOpened {
        /// The call.
        call: CallHandle,
        /// Its port.
        port: u16,
    },
    /// The peer of the RTP on this port changed (media was negotiated,
    /// or a source latched): connect the socket to it if it is fixed, so
    /// that the kernel routes once and drops strangers' datagrams; free the
    /// socket if it is not (a new peer's RTP must reach the latch).
    RtpPeer {
        /// The port.
        port: u16,
        /// The peer, if any.
        peer: Option<RtpPeer>,
    },
    /// RTP reaching this port that `rule` covers may be relayed by the
    /// edge itself, without [`Endpoint::handle_rtp`] (a bridged call);
    /// `None` takes the rule back. What the rule does not cover still goes
    /// to `handle_rtp`, and [`Endpoint::handle_relayed`] tells the endpoint
    /// now and then how many packets were relayed.
    Relay {
        /// The port the packets reach.
        port: u16,
        /// The rule, if any.
        rule: Option<RelayRule>,
    },
    /// The call on this port is over: close the socket, free the port.
    RtpClosed {
        /// The port.
        port: u16,
    },
    /// Store this callback request durably, then answer with
    /// [`Endpoint::handle_callback_stored`].
    StoreCallback {
        /// The call that asked.
        call: CallHandle,
        /// What it asked for.
        request: CallbackRequest,
        /// The request's priority.
        priority: i32,
    },
    /// Look up whether an admin cancelled this request, and answer with
    /// [`Endpoint::handle_callback_state`].
    QueryCallback {
        /// The call placed for it.
        call: CallHandle,
        /// The request.
        id: CallbackId,
    },
    /// Note how far an attempt got (it may still end otherwise).
    CallbackProgress {
        /// The request.
        id: CallbackId,
        /// How far.
        outcome: AttemptOutcome,
    },
    /// An attempt's last word: the store decides what happens next.
    SettleCallback {
        /// The request and attempt.
        leg: CallbackLeg,
        /// How it ended.
        outcome: AttemptOutcome,
    },
    /// A call is over: write its record.
    Record(Box<CallRecord>),
}

/// One RTP packet to send, from [`Endpoint::queued_rtp`] (or
/// [`Endpoint::drain_rtp`]).
#[derive(Debug)]
pub struct RtpTransmit<'a> {
    /// The call's port (the socket to send from).
    pub port: u16,
    /// Where to.
    pub to: SocketAddr,
    /// The packet.
    pub bytes: &'a [u8],
    /// How late it is against its due time.
    pub late: Duration,
}

/// How often a call we placed asks whether its request was cancelled.
const CANCEL_CHECK: Duration = Duration::from_secs(2);

/// BYEs get this long to be answered after the drain deadline.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// A call with media: answered, or placed by us.
///
/// `repr(C)`: a due packet reads the fields before `call` and the front of
/// the call (see [`Call`]), and nothing else, so they sit together.
#[repr(C)]
struct Active {
    /// The deadline this call has in the wheel; older entries are stale.
    scheduled: Option<Instant>,
    /// When the call next needs more than its packets sent (its timers,
    /// the cancel check, a bridge failure), as of the last service.
    timers_due: Option<Instant>,
    port: u16,
    /// Where its packets go ([`Call::rtp_destination`]) as of the last
    /// service, which follows everything that may change it.
    sending_to: Option<RtpPeer>,
    call: Call,
    progress: Progress,
    /// The request this call booked (written in its record).
    booked: Option<CallbackId>,
    /// A state query is out (only one at a time).
    querying: bool,
    next_cancel_check: Option<Instant>,
    /// The RTP peer last told to the edge ([`EndpointOutput::RtpPeer`]).
    peer: Option<RtpPeer>,
    /// The agent's leg, while the call is bridged (or being bridged).
    bridge: Option<bridge::BridgeLeg>,
    /// A bridge that could not even be placed (no port, say), reported
    /// to the flow at this time: reporting it at once let a flow whose
    /// `on_fail` leads back to the same transfer recurse without end.
    bridge_failure: Option<(Instant, String)>,
    span: tracing::Span,
}

impl Active {
    /// Puts the call in the wheel at its next packet or timer, unless it
    /// is there for that time already.
    fn reschedule(&mut self, deadlines: &mut wheel::Wheel<CallHandle>, handle: CallHandle) {
        let next = [self.call.next_packet_due(), self.timers_due]
            .into_iter()
            .flatten()
            .min();
        if next != self.scheduled {
            self.scheduled = next;
            if let Some(at) = next {
                deadlines.insert(at, handle);
            }
        }
    }
}

/// One RTP packet waiting in the batch.
struct QueuedPacket {
    port: u16,
    to: RtpPeer,
    start: usize,
    len: usize,
    late: Duration,
}

/// The endpoint. See the module documentation for the loop that drives it.
pub struct Endpoint {
    config: EndpointConfig,
    runtime: Arc<Runtime>,
    env: Box<dyn Environment>,
    rng: fastrand::Rng,
    ua: UserAgent,
    /// Boxed: the table's probes then compare keys in a few dense cache
    /// lines, not one miss per call's 2 KB state.
    calls: HashMap<CallHandle, Box<Active>>,
    /// Each RTP port's call: a bridged call has two (the caller's and the
    /// agent leg's).
    by_port: HashMap<u16, CallHandle>,
    /// Agent legs we placed, to the call they bridge.
    legs: HashMap<CallHandle, CallHandle>,
    ringing: Vec<Ringing>,
    /// Every call's next deadline (stale entries skipped).
    deadlines: wheel::Wheel<CallHandle>,
    /// The deadlines found due by a timeout, and the calls they make
    /// ready (kept for their capacity).
    due: Vec<(Instant, CallHandle)>,
    ready: Vec<CallHandle>,
    /// The wall clock at one instant, for the records' timestamps.
    wall_anchor: (Instant, DateTime<Utc>),
    /// Draining: no new calls; calls in progress are ended at this time.
    drain_until: Option<Instant>,
    drain_ended: bool,
    out: VecDeque<EndpointOutput>,
    rtp_bytes: Vec<u8>,
    rtp_queue: Vec<QueuedPacket>,
    /// The SRTP contexts of legs that agreed on SRTP, by their RTP port.
    srtp: HashMap<u16, srtp::Srtp>,
    scratch: Vec<u8>,
    counters: CallCounters,
}

/// Calls set up so far (the call setup rate's counter), and calls refused
/// for want of room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounters {
    /// Calls that came in and were answered.
    pub answered: u64,
    /// Calls we placed (callback attempts), answered or not.
    pub placed: u64,
    /// Calls that came in and were refused 503 because no RTP port was
    /// free.
    pub no_capacity: u64,
}

impl Endpoint {
    /// An endpoint taking calls on `config.ua.advertised`; `now` and `wall`
    /// are the same moment on the monotonic and the wall clock.
    pub fn new(
        config: EndpointConfig,
        runtime: Arc<Runtime>,
        env: Box<dyn Environment>,
        mut rng: fastrand::Rng,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Self {
        let ua = UserAgent::with_rng(config.ua.clone(), rng.fork());
        Self {
            config,
            runtime,
            env,
            rng,
            ua,
            calls: HashMap::new(),
            by_port: HashMap::new(),
            legs: HashMap::new(),
            ringing: Vec::new(),
            deadlines: wheel::Wheel::new(now),
            due: Vec::with_capacity(256),
            ready: Vec::with_capacity(256),
            wall_anchor: (now, wall),
            drain_until: None,
            drain_ended: false,
            out: VecDeque::new(),
            rtp_bytes: Vec::with_capacity(64 * 1024),
            rtp_queue: Vec::with_capacity(256),
            srtp: HashMap::new(),
            scratch: Vec::with_capacity(256),
            counters: CallCounters::default(),
        }
    }

    /// Registers with a trunk's registrar and keeps the binding fresh; a
    /// drain removes it.
    pub fn register(&mut self, now: Instant, config: crate::sip::ua::RegisterConfig) {
        self.ua.register(now, config);
        self.pump(now);
    }

    /// Where the registration stands, if we keep one.
    pub fn registration_state(&self) -> Option<&crate::sip::ua::RegistrationState> {
        self.ua.registration_state()
    }

    /// New flows and prompts (a reload); calls in progress keep theirs.
    pub fn set_runtime(&mut self, runtime: Arc<Runtime>) {
        self.runtime = runtime;
    }

    /// Re-reads the wall clock (it may have been stepped since the start).
    pub fn set_wall_clock(&mut self, now: Instant, wall: DateTime<Utc>) {
        self.wall_anchor = (now, wall);
    }

    fn wall(&self, now: Instant) -> DateTime<Utc> {
        let (at, wall) = self.wall_anchor;
        let since =
            chrono::Duration::from_std(now.saturating_duration_since(at)).unwrap_or_default();
        wall + since
    }

    /// Calls in progress: ringing, answered or placed.
    pub fn calls(&self) -> usize {
        self.calls.len() + self.ringing.len()
    }

    /// Whether the edge finds this node ready to take calls (see
    /// [`UserAgent::set_ready`]): only load balancers' probes hear of it.
    pub fn set_ready(&mut self, ready: bool) {
        self.ua.set_ready(ready);
    }

    /// Calls set up and refused so far.
    pub fn call_counters(&self) -> CallCounters {
        self.counters
    }

    /// The calls in progress (ringing, answered or placed), for the admin.
    pub fn call_summaries(&self) -> Vec<crate::call::CallSummary> {
        self.calls
            .values()
            .map(|a| a.call.summary())
            .chain(self.ringing.iter().map(|r| r.summary()))
            .collect()
    }

    /// Whether nothing is left to do before a drained server may stop.
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && self.ringing.is_empty()
            && self.ua.active_calls() == 0
            // A stopping server waits for its unregistration's answer.
            && !self.ua.registration_busy()
    }

    /// What admission control turned away.
    pub fn admission_counters(&self) -> AdmissionCounters {
        self.ua.admission_counters()
    }

    /// What the user agent's table bounds turned away.
    pub fn ua_counters(&self) -> UaCounters {
        self.ua.counters()
    }

    /// The next output for the edge.
    pub fn poll_output(&mut self) -> Option<EndpointOutput> {
        self.out.pop_front()
    }

    /// Hands every RTP packet due so far to `send`, in the order they
    /// became due. The packets stay valid only during the call.
    pub fn drain_rtp(&mut self, mut send: impl FnMut(RtpTransmit<'_>)) {
        self.queued_rtp().for_each(&mut send);
        self.clear_rtp();
    }

    /// The RTP packets due so far, in the order they became due, left in
    /// place: an edge that sends a turn's packets in one batch reads them
    /// all before the batch goes, then calls [`Endpoint::clear_rtp`].
    pub fn queued_rtp(&self) -> impl Iterator<Item = RtpTransmit<'_>> + Clone + '_ {
        self.rtp_queue.iter().map(|p| RtpTransmit {
            port: p.port,
            to: p.to.addr,
            bytes: &self.rtp_bytes[p.start..p.start + p.len],
            late: p.late,
        })
    }

    /// Forgets the RTP packets [`Endpoint::queued_rtp`] handed over (sent).
    pub fn clear_rtp(&mut self) {
        self.rtp_queue.clear();
        self.rtp_bytes.clear();
    }

    /// When [`Endpoint::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let drain = self.drain_until.map(|until| {
            if self.drain_ended {
                until + DRAIN_GRACE
            } else {
                until
            }
        });
        [
            self.ua.poll_timeout(),
            self.ringing.iter().map(|r| r.at).min(),
            self.deadlines.next_deadline(),
            drain,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the drain is over: its deadline and the BYEs' grace passed.
    pub fn drain_finished(&self, now: Instant) -> bool {
        self.drain_until
            .is_some_and(|until| now >= until + DRAIN_GRACE)
    }

    /// One SIP message from `source`: a datagram, or one framed from a
    /// stream (a bare address is a UDP peer).
    pub fn handle_datagram(&mut self, now: Instant, source: impl Into<Peer>, datagram: &[u8]) {
        self.ua.handle_datagram(now, source, datagram);
        self.pump(now);
    }

    /// The edge could not reach `peer` (a connection refused, or not
    /// opened in time): requests waiting for it fail now, and move on to
    /// their next address where they have one.
    pub fn handle_unreachable(&mut self, now: Instant, peer: Peer) {
        self.ua.on_transport_error(now, peer);
        self.pump(now);
    }

    /// One RTP packet that reached `port` from `from`.
    pub fn handle_rtp(&mut self, now: Instant, port: u16, from: SocketAddr, packet: &[u8]) {
        let Some(&handle) = self.by_port.get(&port) else {
            return;
        };
        // On an SRTP leg only what authenticates gets further; a forged
        // or replayed packet is as if it never came (it latches nothing).
        let opened;
        let packet = match self.srtp.get_mut(&port) {
            Some(s) => match s.unprotect(packet) {
                Some(plain) => {
                    opened = plain;
                    &opened[..]
                }
                None => return,
            },
            None => packet,
        };
        let Some(a) = self.calls.get_mut(&handle) else {
            return;
        };
        if port != a.port {
            self.relay_from_agent(handle, from, packet);
            // Its first packet may have latched the agent's side.
            self.announce_relays(handle);
            return;
        }
        if a.call.on_rtp(now, from, packet) && a.call.is_bridged() {
            self.relay_from_caller(handle, packet);
        }
        self.service(now, handle);
        self.pump(now);
    }

    /// The edge relayed `packets` RTP packets that reached `port` by its
    /// [`RelayRule`] since it last said (the edge says so every few hundred
    /// milliseconds at most, so `now` is close enough to the last one's
    /// time): for the caller's port, signs of life for its silence check.
    pub fn handle_relayed(&mut self, now: Instant, port: u16, packets: u64) {
        let Some(a) = self.by_port.get(&port).and_then(|h| self.calls.get_mut(h)) else {
            return;
        };
        if port == a.port && packets > 0 {
            a.call.relayed_rtp(now);
        }
    }

    /// Whatever is due: SIP timers, answers after ringing, RTP packets,
    /// flow timers, silence checks, the drain deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ua.poll_timeout().is_some_and(|t| t <= now) {
            self.ua.handle_timeout(now);
        }
        if self.ringing.iter().any(|r| r.at <= now) {
            let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ringing)
                .into_iter()
                .partition(|r| r.at <= now);
            self.ringing = waiting;
            for r in due {
                self.answer(now, r);
            }
        }
        if let Some(until) = self.drain_until {
            if now >= until && !self.drain_ended {
                self.drain_ended = true;
                tracing::info!(
                    calls = self.calls.len(),
                    "drain time is over; ending the remaining calls"
                );
                let handles: Vec<CallHandle> = self.calls.keys().copied().collect();
                for h in handles {
                    if let Some(a) = self.calls.get_mut(&h) {
                        a.progress.stopping = true;
                        a.call.terminate(now, "server shutting down".into());
                    }
                    self.service(now, h);
                }
            }
        }
        // Each call that is due is run once per timeout: one that is due
        // again at once waits for the next, so a call cannot starve others.
        let mut due = std::mem::take(&mut self.due);
        self.deadlines.expire(now, &mut due);
        let mut ready = std::mem::take(&mut self.ready);
        for (at, handle) in due.drain(..) {
            if let Some(a) = self.calls.get_mut(&handle) {
                if a.scheduled == Some(at) {
                    a.scheduled = None;
                    ready.push(handle);
                }
            }
        }
        for handle in ready.drain(..) {
            self.tick(now, handle);
        }
        (self.due, self.ready) = (due, ready);
        self.pump(now);
    }

    /// Stops taking calls: calls still ringing are refused with 503 (a
    /// proxy tries elsewhere), new INVITEs get 503, and calls in progress
    /// are ended at `until`.
    pub fn drain(&mut self, now: Instant, until: Instant) {
        if self.drain_until.is_some() {
            return;
        }
        self.drain_until = Some(until);
        self.ua.set_accepting(false);
        self.ua.unregister(now);
        for r in std::mem::take(&mut self.ringing) {
            self.ua.reject(
                now,
                r.handle,
                503,
                "Service Unavailable (shutting down)",
                &[("Retry-After", "30")],
            );
        }
        self.pump(now);
    }

    /// The store's answer to [`EndpointOutput::StoreCallback`].
    pub fn handle_callback_stored(
        &mut self,
        now: Instant,
        call: CallHandle,
        result: Result<Requested, String>,
    ) {
        let Some(a) = self.calls.get_mut(&call) else {
            return;
        };
        let booked = match result {
            Ok(Requested::Created(id)) => {
                a.booked = Some(id);
                tracing::info!(parent: &a.span, id, "callback stored");
                Ok(Booked::New)
            }
            Ok(Requested::Merged(id)) => {
                a.booked = Some(id);
                tracing::info!(parent: &a.span, id, "callback merged with the one already booked");
                Ok(Booked::Merged)
            }
            Err(e) => Err(CallbackError::Failed(e)),
        };
        a.call.callback_stored(now, booked);
        self.service(now, call);
        self.pump(now);
    }

    /// The store's answer to [`EndpointOutput::QueryCallback`]: a request
    /// an admin cancelled ends the call placed for it.
    pub fn handle_callback_state(&mut self, now: Instant, call: CallHandle, state: Option<State>) {
        let Some(a) = self.calls.get_mut(&call) else {
            return;
        };
        a.querying = false;
        if state == Some(State::Cancelled) {
            tracing::info!(parent: &a.span, "callback cancelled by an admin; ending its call");
            a.call
                .terminate(now, "callback cancelled by an admin".into());
        }
        self.service(now, call);
        self.pump(now);
    }

    /// Routes what the user agent produced until it has nothing left.
    fn pump(&mut self, now: Instant) {
        while let Some(output) = self.ua.poll_output() {
            match output {
                UaOutput::Transmit { to, bytes } => {
                    self.out.push_back(EndpointOutput::Transmit { to, bytes })
                }
                UaOutput::Event(call, UaEvent::Incoming(incoming)) => {
                    self.on_incoming(now, call, *incoming)
                }
                UaOutput::Event(call, event) if self.calls.contains_key(&call) => {
                    self.on_call_event(now, call, event)
                }
                UaOutput::Event(leg, event) if self.legs.contains_key(&leg) => {
                    if let Some(&caller) = self.legs.get(&leg) {
                        self.on_leg_event(now, caller, event);
                    }
                }
                UaOutput::Event(call, UaEvent::Ended(reason)) => {
                    tracing::debug!(?reason, "a call ended before it was answered");
                    self.ringing.retain(|r| r.handle != call);
                }
                // A call we placed that ended while its INVITE was out was
                // answered all the same: end it rather than leave the
                // callee in silence.
                UaOutput::Event(call, UaEvent::Answered { .. }) => {
                    tracing::info!(call = call.0, "answered after its call ended; hanging up");
                    self.ua.hangup(now, call);
                }
                UaOutput::Event(_, _) => {}
            }
        }
    }

    /// A SIP event for a call with media.
    fn on_call_event(&mut self, now: Instant, handle: CallHandle, event: UaEvent) {
        let Some(a) = self.calls.get_mut(&handle) else {
            return;
        };
        let _entered = a.span.clone().entered();
        let leg = a.call.callback().map(|l| l.id);
        match event {
            // Our offer's answer: in the ACK after a delayed offer, or in
            // the 2xx of a call we placed.
            UaEvent::Confirmed {
                answer: Some(agreed),
            } => {
                // The answer to our offer in a 2xx (a re-INVITE without
                // SDP) may bring the peer's new SRTP key.
                let (port, keys) = (a.port, agreed.as_ref().ok().map(|n| n.srtp));
                start_media(now, &mut a.call, agreed, "ACK");
                if let Some(keys) = keys {
                    self.set_srtp(port, keys);
                }
            }
            UaEvent::Answered { answer } => {
                if let Some(id) = leg {
                    self.out.push_back(EndpointOutput::CallbackProgress {
                        id,
                        outcome: AttemptOutcome::Answered,
                    });
                }
                tracing::info!("callback answered");
                let (port, keys) = (a.port, answer.as_ref().ok().map(|n| n.srtp));
                start_media(now, &mut a.call, answer, "2xx");
                if let Some(keys) = keys {
                    self.set_srtp(port, keys);
                }
            }
            UaEvent::DialFailed {
                cause,
                status,
                reason,
            } => {
                tracing::info!(status, %reason, ?cause, "callback not answered");
                a.call.dial_failed(now, cause, status, &reason);
            }
            UaEvent::TransferAccepted => {
                if let Some(id) = leg {
                    self.out.push_back(EndpointOutput::CallbackProgress {
                        id,
                        outcome: AttemptOutcome::Connected,
                    });
                }
                a.progress.handed_over = true;
                a.progress.refused = false;
                a.call.on_sip(now, UaEvent::TransferAccepted);
            }
            UaEvent::TransferResult(Err(reason)) => {
                // The ACD saying no is a failure; its silence after the
                // 202 is not (the callee is on the way to an agent).
                a.progress.refused |= reason != NO_FINAL_NOTIFY;
                a.call.on_sip(now, UaEvent::TransferResult(Err(reason)));
            }
            UaEvent::MediaChanged(n) => {
                let port = a.port;
                a.call.on_sip(now, UaEvent::MediaChanged(n));
                self.set_srtp(port, n.srtp);
            }
            e => a.call.on_sip(now, e),
        }
        drop(_entered);
        self.service(now, handle);
    }

    /// The leg on `port` now has `keys` (SRTP) or none (plain RTP).
    fn set_srtp(&mut self, port: u16, keys: Option<crate::sip::sdp::sdes::SrtpKeys>) {
        let result = match (keys, self.srtp.get_mut(&port)) {
            (Some(keys), Some(s)) => s.rekey(keys),
            (Some(keys), None) => {
                let (s, result) = srtp::Srtp::new(keys, self.rng.u32(..));
                self.srtp.insert(port, s);
                result
            }
            (None, _) => {
                self.close_srtp(port);
                Ok(())
            }
        };
        if let Err(e) = result {
            // The leg stays in the table with no keys: nothing goes out in
            // the clear and nothing comes in until a re-offer's keys work.
            tracing::error!(port, "{e}");
        }
    }

    fn close_srtp(&mut self, port: u16) {
        if let Some(s) = self.srtp.remove(&port) {
            if s.refused > 0 {
                tracing::info!(
                    port,
                    refused = s.refused,
                    "SRTP packets that failed authentication"
                );
            }
        }
    }

    /// Sends a call's due packets and runs its timers.
    fn tick(&mut self, now: Instant, handle: CallHandle) {
        let Some(a) = self.calls.get_mut(&handle) else {
            return;
        };
        while let Some(due) = a.call.next_packet_due().filter(|d| *d <= now) {
            if a.call.poll_packet(now, &mut self.scratch).is_none() {
                break;
            }
            // On hold a packet is made to keep time, but not sent.
            debug_assert_eq!(a.sending_to, a.call.rtp_destination());
            if let Some(to) = a.sending_to {
                let start = self.rtp_bytes.len();
                self.rtp_bytes.extend_from_slice(&self.scratch);
                if let Some(s) = self.srtp.get_mut(&a.port) {
                    if !s.protect(&mut self.rtp_bytes, start, false) {
                        continue;
                    }
                }
                self.rtp_queue.push(QueuedPacket {
                    port: a.port,
                    to,
                    start,
                    len: self.rtp_bytes.len() - start,
                    late: now.saturating_duration_since(due),
                });
            }
        }
        // Most turns of most calls only send a packet: unless the call's
        // timers are due or the packets moved its flow on (a prompt
        // ended), the rest of it waits for its own deadline. This keeps a
        // packet from touching the whole call (cache misses were most of
        // our own cost per packet).
        if a.timers_due.is_none_or(|at| now < at) && !a.call.take_stirred() {
            a.reschedule(&mut self.deadlines, handle);
            return;
        }
        a.call.handle_timeout(now);
        if let Some((_, reason)) = a.bridge_failure.take_if(|(at, _)| *at <= now) {
            a.call.bridge_failed(now, reason);
        }
        if let (Some(leg), Some(at)) = (a.call.callback(), a.next_cancel_check) {
            if at <= now && !a.querying && !a.call.is_finished() {
                a.querying = true;
                a.next_cancel_check = Some(now + CANCEL_CHECK);
                self.out.push_back(EndpointOutput::QueryCallback {
                    call: handle,
                    id: leg.id,
                });
            } else if at <= now {
                a.next_cancel_check = Some(now + CANCEL_CHECK);
            }
        }
        self.service(now, handle);
    }

    /// Acts on what a call asked for, ends it when it is over, and
    /// schedules its next deadline.
    fn service(&mut self, now: Instant, handle: CallHandle) {
        let Some(a) = self.calls.get_mut(&handle) else {
            return;
        };
        // Entered only when the call has something to act on: this runs for
        // every RTP packet, and most packets bring nothing.
        let mut _entered = None;
        let mut bridge = None;
        while let Some(output) = a.call.poll_output() {
            if _entered.is_none() {
                _entered = Some(a.span.clone().entered());
            }
            match output {
                CallOutput::Sip(CallCommand::Refer { target, headers }) => {
                    self.ua.refer(now, handle, &target, &headers)
                }
                CallOutput::Sip(CallCommand::Hangup) => self.ua.hangup(now, handle),
                CallOutput::Bridge(t) => bridge = Some(t),
                CallOutput::StoreCallback(request) => {
                    match book(&self.config, now, &request, a.call.source()) {
                        Ok(()) => {
                            let priority = request.priority.unwrap_or(0);
                            self.out.push_back(EndpointOutput::StoreCallback {
                                call: handle,
                                request,
                                priority,
                            });
                        }
                        Err(error) => a.call.callback_stored(now, Err(error)),
                    }
                }
                CallOutput::Finished(mut record) => {
                    record.callback_id = a.booked;
                    if let Some(leg) = a.call.callback() {
                        let outcome = a.progress.outcome(&record);
                        record.callback = Some(leg.record(outcome.result_text()));
                        if a.progress.stopping && outcome != AttemptOutcome::Completed {
                            // Cut short by a shutdown, not missed by the
                            // callee: left `dialling`, the next start dials
                            // it again without counting this attempt.
                            tracing::info!(id = leg.id, "callback interrupted by the shutdown; dialled again at the next start");
                        } else {
                            self.out.push_back(EndpointOutput::SettleCallback {
                                leg: leg.clone(),
                                outcome,
                            });
                        }
                    }
                    tracing::info!(
                        from = %record.caller, to = %record.called, flow = %record.flow,
                        path = %record.nodes.join(">"), outcome = %record.outcome, detail = %record.detail,
                        "call ended"
                    );
                    self.out.push_back(EndpointOutput::Record(record));
                }
            }
        }
        if a.call.is_finished() {
            let port = a.port;
            let leg = a.bridge.as_ref().map(|l| l.handle);
            drop(_entered);
            self.end_leg(now, handle, leg);
            self.calls.remove(&handle);
            self.by_port.remove(&port);
            self.close_srtp(port);
            self.out.push_back(EndpointOutput::RtpClosed { port });
            return;
        }
        a.sending_to = a.call.rtp_destination();
        let peer = a.call.rtp_peer();
        if peer != a.peer {
            a.peer = peer;
            let port = a.port;
            self.out.push_back(EndpointOutput::RtpPeer { port, peer });
        }
        let bridged = match a.bridge.as_mut() {
            Some(leg) => {
                if let Some(out) = leg.announce_peer() {
                    self.out.push_back(out);
                }
                true
            }
            None => false,
        };
        // Everything that may have moved the call's timers ends here.
        a.call.take_stirred();
        a.timers_due = [
            a.call.timers_due(),
            a.next_cancel_check,
            a.bridge_failure.as_ref().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min();
        a.reschedule(&mut self.deadlines, handle);
        drop(_entered);
        self.compact_deadlines();
        if bridged {
            self.announce_relays(handle);
        }
        if let Some(t) = bridge {
            // Placing the call may fail at once (no port), which runs the
            // flow's `on_fail`: the call is serviced again.
            self.start_bridge(now, handle, t);
            self.service(now, handle);
        }
    }

    /// Drops stale deadlines when they outnumber live ones, so that a call
    /// rescheduled often cannot grow the wheel without bound.
    fn compact_deadlines(&mut self) {
        if self.deadlines.len() <= 2 * self.calls.len() + 1024 {
            return;
        }
        let calls = &self.calls;
        self.deadlines
            .retain(|at, h| calls.get(&h).is_some_and(|a| a.scheduled == Some(at)));
    }

    /// Registers a call with media on `port` and runs it once.
    fn activate(
        &mut self,
        now: Instant,
        handle: CallHandle,
        call: Call,
        port: u16,
        span: tracing::Span,
    ) {
        let next_cancel_check = call.callback().map(|_| now + CANCEL_CHECK);
        if call.callback().is_some() {
            self.counters.placed += 1;
        } else {
            self.counters.answered += 1;
        }
        self.calls.insert(
            handle,
            Box::new(Active {
                call,
                port,
                progress: Progress::default(),
                booked: None,
                querying: false,
                next_cancel_check,
                scheduled: None,
                timers_due: None,
                sending_to: None,
                peer: None,
                bridge: None,
                bridge_failure: None,
                span,
            }),
        );
        self.by_port.insert(port, handle);
        self.out
            .push_back(EndpointOutput::RtpOpened { call: handle, port });
        self.service(now, handle);
    }

    /// An RTP port from the edge, and how our SDP describes it.
    fn open_media(&mut self) -> Result<LocalMedia, String> {
        let port = self.env.open_rtp()?;
        Ok(LocalMedia {
            addr: self.config.rtp_ip,
            port,
            session_id: self.rng.u64(1..u64::MAX / 2),
            session_version: 1,
        })
    }

    /// A call on the current flows, starting now at `entry`.
    fn new_call(
        &mut self,
        now: Instant,
        incoming: IncomingCall,
        entry: NodeRef,
        vars: Vec<(String, String)>,
        callback: Option<CallbackLeg>,
    ) -> Call {
        // A random SSRC, sequence and timestamp base (RFC 3550 5.1).
        let rtp_seed = (self.rng.u32(..), self.rng.u16(..), self.rng.u32(..));
        Call::new(CallSetup {
            incoming,
            flows: Arc::clone(&self.runtime.flows),
            prompts: Arc::clone(&self.runtime.prompts),
            entry,
            started: now,
            started_wall: self.wall(now),
            rtp_seed,
            rtp_timeout: self.config.rtp_timeout,
            vars,
            callback,
            dialling: Arc::clone(&self.config.dialling),
            rtp_latch_first: self.config.rtp_latch_first,
            hold_timeout: self.config.hold_timeout,
            max_duration: self.config.max_call_duration,
        })
    }
}

/// Takes what the answer to our offer agreed (from `carrier`, for the log)
/// and starts the flow, or ends the call when the answer is unusable.
fn start_media(
    now: Instant,
    call: &mut Call,
    negotiated: Result<crate::sip::sdp::Negotiated, String>,
    carrier: &str,
) {
    match negotiated {
        Ok(negotiated) => {
            call.set_media(negotiated);
            call.on_sip(now, UaEvent::Confirmed { answer: None });
        }
        Err(e) => {
            tracing::info!("unusable SDP answer in the {carrier}: {e}");
            call.terminate(now, format!("unusable SDP answer: {e}"));
        }
    }
}

/// Checks a callback request against the dialling policy (toll fraud:
/// every number, typed or the caller's own) and the booking limits.
fn book(
    config: &EndpointConfig,
    now: Instant,
    request: &CallbackRequest,
    source: SocketAddr,
) -> Result<(), CallbackError> {
    tracing::info!(number = %request.number, queue = %request.queue, "callback requested");
    if let Err(why) = config.dialling.callback.check(&request.number) {
        tracing::info!(number = %request.number, "callback number refused: {why}");
        return Err(CallbackError::Refused(why));
    }
    let booked = config
        .bookings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .book(now, &request.number, source.ip());
    booked.map_err(|refusal| {
        tracing::warn!(number = %request.number, %source, ?refusal,
            "callback refused: over the booking limit");
        match refusal {
            BookingRefusal::Number => {
                CallbackError::Refused("this number has had its callbacks for now".into())
            }
            BookingRefusal::Source => {
                CallbackError::Failed("too many callbacks booked from this source".into())
            }
        }
    })
}
