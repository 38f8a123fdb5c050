//! The user agent core: dialogs and the UAS/UAC logic of RFC 3261 on top of
//! the transactions, as one sans-IO state machine.
//!
//! The IO edge feeds it datagrams ([`UserAgent::handle_datagram`]) and
//! timeouts ([`UserAgent::handle_timeout`]), tells it what the calls decide
//! ([`UserAgent::accept`], [`UserAgent::refer`], [`UserAgent::hangup`]...),
//! and drains [`UaOutput`]s: datagrams to send and [`UaEvent`]s for the
//! calls. It never reads the clock and never touches a socket, so tests
//! drive whole calls (INVITE, retransmissions, REFER, NOTIFY, BYE) in
//! microseconds.

mod dialog;
mod incoming;
mod outgoing;
mod refer;
pub mod register;
mod reinvite;
pub mod session_timer;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialog::Dialog;
pub use dialog::DialogState;
pub use outgoing::{header_safe, OutgoingCall, SESSION_EXPIRES};
pub use refer::{refer_to, sipfrag_status};
pub use register::{RegisterConfig, RegistrationState};

use super::admission::{
    Admission, AdmissionConfig, AdmissionCounters, Networks, SharedAdmission, TrunkId, Verdict,
};
use super::message::{self, Message, Method, ParseError, ResponseBuilder};
use super::sdp::Negotiated;
use super::transaction::{
    InviteServerTransaction, NonInviteClientTransaction, NonInviteServerTransaction, Output,
    Timers, Transaction, TransactionKey, TwoXxRetransmitter,
};
use super::transport::{Peer, Transport};

/// Our handle for a call (one dialog created by an incoming INVITE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u64);

/// How the user agent presents itself and behaves.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// The address we advertise in Via and Contact (may differ from the
    /// bound one behind NAT).
    pub advertised: SocketAddr,
    /// The port SIP over TLS is taken on, when it is: Via and Contact of a
    /// message over TLS name it instead of `advertised`'s.
    pub tls_port: Option<u16>,
    /// The user of the Contact we register with a trunk (whichever of a
    /// listener's user agents keeps the registration): an INVITE to it
    /// is for the number in its To.
    pub registered_user: Option<String>,
    /// User-Agent / Server header value.
    pub product: String,
    /// RFC 3261 timer values.
    pub timers: Timers,
    /// How long to wait for the final NOTIFY after a REFER was accepted.
    pub transfer_timeout: Duration,
    /// Who may send us what (trunks, rates, limits).
    pub admission: AdmissionConfig,
    /// At most this many server transactions at once; past it, new
    /// requests get a stateless 503 (and are counted).
    pub max_transactions: usize,
    /// At most this many dialogs (calls answered, ringing or placed) at
    /// once; past it, new INVITEs get 503.
    pub max_dialogs: usize,
    /// The admission state, when several user agents share one (a
    /// listener's workers); `None` makes one of our own from `admission`.
    pub shared_admission: Option<SharedAdmission>,
    /// For one worker of several: (its index, how many). Call-IDs we make
    /// are chosen so that [`crate::sip::dispatch::shard_of`] sends what
    /// comes back for them to this worker.
    pub shard: Option<(usize, usize)>,
    /// Where named trunks, registrars and queues are (RFC 3263), as the
    /// edge keeps it from DNS; targets that are IP addresses need none.
    pub directory: Arc<crate::sip::locate::Directory>,
}

impl UaConfig {
    /// The address our Via names for a message over `transport` (TLS has
    /// its own port).
    pub fn sent_by(&self, transport: Transport) -> SocketAddr {
        match (transport, self.tls_port) {
            (Transport::Tls, Some(port)) => SocketAddr::new(self.advertised.ip(), port),
            _ => self.advertised,
        }
    }

    /// Our Contact for a dialog over `transport`: a `sips:` URI for a
    /// secure dialog (RFC 3261 12.1.1: its requests were `sips:`), else
    /// the transport as a parameter, so that requests come back on it.
    pub fn contact(&self, transport: Transport, secure: bool) -> String {
        let at = self.sent_by(transport);
        if secure && transport == Transport::Tls {
            format!("<sips:callflow@{at}>")
        } else {
            format!("<sip:callflow@{at}{}>", transport.uri_param())
        }
    }

    /// Defaults for a UA advertising `advertised`.
    pub fn new(advertised: SocketAddr) -> Self {
        Self {
            advertised,
            tls_port: None,
            registered_user: None,
            product: concat!("callflow/", env!("CARGO_PKG_VERSION")).to_string(),
            timers: Timers::default(),
            transfer_timeout: Duration::from_secs(30),
            admission: AdmissionConfig::loopback_only(),
            max_transactions: 200_000,
            max_dialogs: 50_000,
            shared_admission: None,
            shard: None,
            directory: Arc::default(),
        }
    }
}

/// What an incoming call brings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The caller's number or user (From URI user part), ANI.
    pub caller: String,
    /// The dialled number (Request-URI user part), DNIS.
    pub called: String,
    /// The From header as sent, for records.
    pub from: String,
    /// The To header as sent, for records.
    pub to: String,
    /// The SDP offer, if the INVITE had one (else: delayed offer).
    pub offer: Option<Vec<u8>>,
    /// Where the INVITE came from.
    pub source: SocketAddr,
    /// The trunk it came through.
    pub trunk: String,
    /// Where that trunk lets us send RTP.
    pub media_networks: Networks,
    /// The INVITE came over TLS: SRTP keys may be exchanged in its SDP
    /// (RFC 4568 8.3).
    pub secure: bool,
}

/// Why a call ended on the SIP side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// The caller cancelled before we answered.
    Cancelled,
    /// We sent BYE (after `hangup`).
    LocalBye,
    /// The session timer ran out (RFC 4028 10): no refresh came, or ours
    /// was refused as a dialog that no longer exists; we sent BYE.
    SessionExpired,
    /// We rejected the INVITE.
    Rejected(u16),
    /// The ACK for our 2xx never came (RFC 3261 13.3.1.4); we sent BYE.
    AckTimeout,
}

/// Something a call must know.
#[derive(Debug, Clone, PartialEq)]
pub enum UaEvent {
    /// A new INVITE: answer with [`UserAgent::accept`] or
    /// [`UserAgent::reject`].
    Incoming(Box<IncomingCall>),
    /// The ACK arrived: media may flow. With a delayed offer, the SDP
    /// answer is in it.
    Confirmed {
        /// What the answer in the ACK agreed, when we made the offer (an
        /// error: the answer is unusable, and the call must end).
        answer: Option<Result<Negotiated, String>>,
    },
    /// A re-INVITE changed the media (hold, unhold, new address); it was
    /// answered already.
    MediaChanged(Negotiated),
    /// A key pressed, from SIP INFO (RFC 4733 keys come over RTP).
    Digit(char),
    /// The REFER was accepted (202): the transfer is under way.
    TransferAccepted,
    /// The transfer ended: `Ok` on a 2xx sipfrag, else why it failed.
    TransferResult(Result<(), String>),
    /// The dialog is over.
    Ended(EndReason),
    /// A call we placed is ringing (a 1xx other than 100).
    Ringing,
    /// A call we placed was answered; the SDP answer is in the 2xx.
    Answered {
        /// What the callee's SDP answer agreed (an error: it is unusable,
        /// and the call must end).
        answer: Result<Negotiated, String>,
    },
    /// A call we placed failed: busy (486), no answer (487 after our
    /// CANCEL), refused, or no response at all (408).
    DialFailed {
        /// What kind of failure it was.
        cause: DialFailure,
        /// The final status (408 when nothing came back).
        status: u16,
        /// Its reason phrase, or what happened.
        reason: String,
    },
}

/// Why a call we placed did not get through, as the layers above act on
/// it (a busy callee is retried differently from one who did not answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialFailure {
    /// 486 Busy Here, 600 Busy Everywhere or 603 Decline.
    Busy,
    /// It rang until our ring timeout, and we cancelled it.
    NoAnswer,
    /// We cancelled it for another reason (the call was ended meanwhile).
    Cancelled,
    /// Nothing came back at all (Timer B, 408).
    NoResponse,
    /// Any other final status, or a challenge we could not answer.
    Refused,
}

/// What the IO edge must do.
#[derive(Debug, Clone, PartialEq)]
pub enum UaOutput {
    /// Send a message.
    Transmit {
        /// Where to, and over what.
        to: Peer,
        /// The bytes.
        bytes: Arc<[u8]>,
    },
    /// An event for one call.
    Event(CallHandle, UaEvent),
}

/// A server transaction with the address its responses go to.
enum ServerTx {
    Invite {
        tx: InviteServerTransaction,
        to: Peer,
        call: Option<CallHandle>,
    },
    NonInvite {
        tx: NonInviteServerTransaction,
        to: Peer,
    },
}

/// A client transaction we started in a dialog, and what it was for.
struct ClientTx {
    tx: NonInviteClientTransaction,
    to: Peer,
    call: CallHandle,
    method: Method,
}

impl ServerTx {
    /// The transaction, whichever kind, and where its responses go.
    fn transaction(&mut self) -> (&mut dyn Transaction, Peer) {
        match self {
            ServerTx::Invite { tx, to, .. } => (tx, *to),
            ServerTx::NonInvite { tx, to } => (tx, *to),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ServerTx::Invite { tx, .. } => tx.poll_timeout(),
            ServerTx::NonInvite { tx, .. } => tx.poll_timeout(),
        }
    }
}

/// Where a response to a request from `source` goes: back over its
/// connection on a stream (RFC 3261 18.2.2), else by the Via's rules.
fn reply_to(via: &message::Via, source: Peer) -> Peer {
    if source.transport.is_reliable() {
        return source;
    }
    Peer::udp(message::response_destination(via, source.addr))
}

/// Whose deadline a heap entry is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerOwner {
    Server(TransactionKey),
    Client(String),
    TwoXx(CallHandle),
    Refer(CallHandle),
    Invite(String),
    Ring(CallHandle),
    Session(CallHandle),
    /// The registration's refresh or retry.
    Register,
    /// Our refreshing re-INVITE's transaction.
    ReInvite(String),
}

/// The user agent.
pub struct UserAgent {
    config: UaConfig,
    accepting: bool,
    /// Whether the edge finds this node ready (its store reachable): a
    /// node that is not still takes calls, but tells load balancers'
    /// probes to look elsewhere.
    ready: bool,
    next_call: u64,
    next_id: u64,
    /// Server transactions by (branch, sent-by, method) key text.
    server: HashMap<TransactionKey, ServerTx>,
    /// Our client transactions by branch.
    client: HashMap<String, ClientTx>,
    // Dialogs and our INVITEs, which last as long as their calls, are held
    // boxed: a table has up to about 2.3 slots per entry, and a slot that
    // holds its state inline is the whole state (a dialog is 900 bytes, an
    // INVITE 1 KB), resident all the same.
    dialogs: HashMap<CallHandle, Box<Dialog>>,
    /// (Call-ID, local tag) to call, for in-dialog requests.
    by_tags: HashMap<(String, String), CallHandle>,
    /// 2xx retransmissions waiting for an ACK.
    two_xx: HashMap<CallHandle, (TwoXxRetransmitter, Peer)>,
    /// Our INVITEs in flight, by branch.
    invites: HashMap<String, Box<outgoing::Invite>>,
    /// Our registration with a trunk's registrar, if we keep one.
    registration: Option<register::Registration>,
    /// Our refreshing re-INVITEs in flight, by branch.
    reinvites: HashMap<String, reinvite::ReInvite>,
    /// Deadlines of all of the above, earliest first.
    timers: BinaryHeap<Reverse<(Instant, TimerOwner)>>,
    out: VecDeque<UaOutput>,
    admission: SharedAdmission,
    counters: UaCounters,
    /// Where tags, branches, Call-IDs, cnonces and the nonce secret come
    /// from: handed in, so that a test with a seeded one gets exact bytes.
    rng: fastrand::Rng,
}

/// What the user agent's own bounds turned away, since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UaCounters {
    /// Requests answered 503 because the transaction table was full.
    pub transactions_full: u64,
    /// INVITEs answered 503 because the dialog table was full.
    pub dialogs_full: u64,
    /// Stale timer entries dropped to keep the heap bounded.
    pub timers_compacted: u64,
    /// New INVITEs answered 503 because the server was draining.
    pub draining_refused: u64,
}

/// The reason of a [`UaEvent::TransferResult`] when the REFER was accepted
/// but no final NOTIFY came in time: the transfer's end is unknown, not a
/// failure the ACD reported.
pub const NO_FINAL_NOTIFY: &str = "no final NOTIFY in time";

/// Methods we answer, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY, UPDATE";

impl UserAgent {
    /// A user agent that accepts calls, with IDs from a random seed.
    pub fn new(config: UaConfig) -> Self {
        Self::with_rng(config, fastrand::Rng::new())
    }

    /// A user agent whose IDs (and nonce secret) come from `rng`.
    pub fn with_rng(config: UaConfig, mut rng: fastrand::Rng) -> Self {
        let mut secret = [0u8; 16];
        secret.iter_mut().for_each(|b| *b = rng.u8(..));
        Self {
            rng,
            admission: config.shared_admission.clone().unwrap_or_else(|| {
                SharedAdmission::new(Admission::new(config.admission.clone(), secret))
            }),
            counters: UaCounters::default(),
            config,
            accepting: true,
            ready: true,
            next_call: 0,
            next_id: 0,
            server: HashMap::new(),
            client: HashMap::new(),
            dialogs: HashMap::new(),
            by_tags: HashMap::new(),
            two_xx: HashMap::new(),
            invites: HashMap::new(),
            registration: None,
            reinvites: HashMap::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
        }
    }

    /// While draining for shutdown, new INVITEs get 503 with Retry-After.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    /// Whether out-of-dialog OPTIONS (a load balancer's probe) get 200
    /// (`true`) or 503; calls are still taken either way.
    pub fn set_ready(&mut self, ready: bool) {
        self.ready = ready;
    }

    /// The SIP Call-ID of a call's dialog.
    pub fn call_id(&self, call: CallHandle) -> Option<&str> {
        self.dialogs.get(&call).map(|d| d.call_id.as_str())
    }

    /// Calls with a dialog (answered or not yet).
    pub fn active_calls(&self) -> usize {
        self.dialogs.len()
    }

    /// What admission control turned away.
    pub fn admission_counters(&self) -> AdmissionCounters {
        self.admission.lock().counters()
    }

    /// What the user agent's table bounds turned away.
    pub fn counters(&self) -> UaCounters {
        self.counters
    }

    /// Calls of the trunk named `name` in progress.
    pub fn trunk_calls(&self, name: &str) -> usize {
        self.config
            .admission
            .trunks
            .iter()
            .position(|t| t.name == name)
            .map_or(0, |i| self.admission.lock().calls(TrunkId(i)))
    }

    /// The next output to act on.
    pub fn poll_output(&mut self) -> Option<UaOutput> {
        self.out.pop_front()
    }

    /// A Call-ID for a call we place: one that comes back to this worker.
    fn new_call_id(&mut self) -> String {
        loop {
            let id = format!("{}@callflow", self.unique());
            match self.config.shard {
                Some((index, count))
                    if crate::sip::dispatch::shard_of(id.as_bytes(), count) != index => {}
                _ => return id,
            }
        }
    }

    fn unique(&mut self) -> String {
        self.next_id += 1;
        format!("{:x}{:08x}", self.next_id, self.rng.u32(..))
    }

    fn transmit(&mut self, to: Peer, bytes: Arc<[u8]>) {
        self.out.push_back(UaOutput::Transmit { to, bytes });
    }

    fn event(&mut self, call: CallHandle, event: UaEvent) {
        self.out.push_back(UaOutput::Event(call, event));
    }

    /// Feeds one message from `source`: a datagram, or one framed from a
    /// stream (a bare address is a UDP peer).
    pub fn handle_datagram(&mut self, now: Instant, source: impl Into<Peer>, datagram: &[u8]) {
        let source = source.into();
        let verdict = self.admission.lock().on_datagram(now, source.addr.ip());
        let trunk = match verdict {
            Verdict::Trunk(t) => Some(t),
            Verdict::Known => None,
            Verdict::Drop => return,
            Verdict::Forbid => {
                if let Ok(m) = message::parse(datagram) {
                    if m.is_request() && m.method() != Method::Ack {
                        self.respond_stateless(&m, source, 403, "Forbidden", &[]);
                    }
                }
                return;
            }
        };
        match message::parse(datagram) {
            Ok(m) if m.is_request() => self.on_request(now, source, m, trunk),
            Ok(m) => self.on_response(now, m),
            Err(ParseError::BadRequest { reason, partial }) => {
                tracing::debug!(%source, %reason, "malformed request");
                // An ACK is never answered (RFC 3261 17.2.1): drop it.
                if partial.method() != Method::Ack {
                    self.respond_stateless(
                        &partial,
                        source,
                        400,
                        &bad_request_phrase(&reason),
                        &[],
                    );
                }
            }
            Err(ParseError::Refuse {
                status,
                reason,
                partial,
            }) => {
                tracing::debug!(%source, status, "refused a request");
                if partial.method() != Method::Ack {
                    self.respond_stateless(&partial, source, status, reason, &[]);
                }
            }
            Err(ParseError::KeepAlive) => {}
            Err(ParseError::Garbage(reason)) => {
                tracing::debug!(%source, %reason, "dropped a datagram that is not SIP");
            }
        }
    }

    /// Sends a response without a transaction (400 to a broken request,
    /// 481 to a stray ACK never: ACKs are not answered).
    fn respond_stateless(
        &mut self,
        request: &Message,
        source: Peer,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let Some(via) = request.top_via() else {
            return;
        };
        let tag = self.unique();
        let mut b = ResponseBuilder::new(request, source.addr, status, reason, Some(&tag))
            .header("Server", &self.config.product);
        for (n, v) in extra {
            b = b.header(n, v);
        }
        let to = reply_to(via, source);
        self.transmit(to, b.build().into());
    }

    /// The earliest time [`UserAgent::handle_timeout`] must be called (it
    /// may be early: a timer that moved or ended leaves a stale entry, which
    /// then costs one spurious wake-up).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Files `owner`'s next deadline. Every change to a transaction ends in
    /// a drain that calls this, so the heap always holds the true deadline
    /// (possibly beside stale ones) and timeouts never scan all calls.
    fn schedule(&mut self, at: Option<Instant>, owner: TimerOwner) {
        if let Some(at) = at {
            self.timers.push(Reverse((at, owner)));
        }
        if self.timers.len() > 4 * self.live_timer_owners() + 4096 {
            self.compact_timers();
        }
    }

    fn live_timer_owners(&self) -> usize {
        self.server.len()
            + self.client.len()
            + self.two_xx.len()
            + self.invites.len()
            + self.reinvites.len()
            + self.dialogs.len()
    }

    /// Drops heap entries whose owner is gone, so that a burst of stale
    /// entries cannot grow the heap without bound.
    fn compact_timers(&mut self) {
        let before = self.timers.len();
        let (server, client, two_xx, invites, dialogs, reinvites) = (
            &self.server,
            &self.client,
            &self.two_xx,
            &self.invites,
            &self.dialogs,
            &self.reinvites,
        );
        self.timers.retain(|Reverse((_, owner))| match owner {
            TimerOwner::Server(k) => server.contains_key(k),
            TimerOwner::Client(k) => client.contains_key(k),
            TimerOwner::TwoXx(c) => two_xx.contains_key(c),
            TimerOwner::Invite(k) => invites.contains_key(k),
            TimerOwner::Refer(c) | TimerOwner::Ring(c) | TimerOwner::Session(c) => {
                dialogs.contains_key(c)
            }
            TimerOwner::Register => true,
            TimerOwner::ReInvite(k) => reinvites.contains_key(k),
        });
        self.counters.timers_compacted += (before - self.timers.len()) as u64;
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, owner))) = self.timers.pop() else {
                break;
            };
            let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
            match owner {
                TimerOwner::Server(key) => {
                    let fire = match self.server.get_mut(&key) {
                        Some(s) if due(s.poll_timeout()) => {
                            s.transaction().0.handle_timeout(now);
                            true
                        }
                        _ => false,
                    };
                    if fire {
                        self.drain_server(&key);
                    }
                }
                TimerOwner::Client(branch) => {
                    let fire = match self.client.get_mut(&branch) {
                        Some(c) if due(c.tx.poll_timeout()) => {
                            c.tx.handle_timeout(now);
                            true
                        }
                        _ => false,
                    };
                    if fire {
                        self.drain_client(now, &branch);
                    }
                }
                TimerOwner::TwoXx(call) => {
                    let fire = match self.two_xx.get_mut(&call) {
                        Some((r, _)) if due(r.poll_timeout()) => {
                            r.handle_timeout(now);
                            true
                        }
                        _ => false,
                    };
                    if fire {
                        self.drain_two_xx(now, call);
                    }
                }
                TimerOwner::Invite(branch) => {
                    let fire = match self.invites.get_mut(&branch) {
                        Some(i) if due(i.tx.poll_timeout()) => {
                            i.tx.handle_timeout(now);
                            true
                        }
                        _ => false,
                    };
                    if fire {
                        self.drain_invite(now, &branch);
                    }
                    self.silent_failover(now, &branch);
                }
                TimerOwner::Ring(call) => self.ring_timeout(now, call),
                TimerOwner::Register => self.registration_due(now),
                TimerOwner::ReInvite(branch) => {
                    let fire = match self.reinvites.get_mut(&branch) {
                        Some(r) if due(r.tx.poll_timeout()) => {
                            r.tx.handle_timeout(now);
                            true
                        }
                        _ => false,
                    };
                    if fire {
                        self.drain_reinvite(now, &branch);
                    }
                }
                TimerOwner::Session(call) => self.session_due(now, call),
                TimerOwner::Refer(call) => {
                    let late = self
                        .dialogs
                        .get_mut(&call)
                        .filter(|d| due(d.refer_deadline));
                    if let Some(d) = late {
                        d.refer_deadline = None;
                        self.event(call, UaEvent::TransferResult(Err(NO_FINAL_NOTIFY.into())));
                    }
                }
            }
        }
    }

    fn drain_server(&mut self, key: &TransactionKey) {
        let mut terminated = false;
        let mut sends = Vec::new();
        if let Some(s) = self.server.get_mut(key) {
            let (tx, to) = s.transaction();
            while let Some(o) = tx.poll_output() {
                match o {
                    Output::Transmit(bytes) => sends.push((to, bytes)),
                    Output::Terminated => terminated = true,
                    _ => {}
                }
            }
        }
        for (to, bytes) in sends {
            self.transmit(to, bytes);
        }
        if terminated {
            self.server.remove(key);
        } else {
            let next = match self.server.get(key) {
                Some(s) => s.poll_timeout(),
                None => None,
            };
            self.schedule(next, TimerOwner::Server(key.clone()));
        }
    }

    /// The edge could not deliver to `to`: our requests still waiting for
    /// a first answer there fail at once, as a 503 would (RFC 3261
    /// 8.1.3.1), rather than when their timers run out; an INVITE with an
    /// alternate address moves on to it.
    pub fn on_transport_error(&mut self, now: Instant, to: Peer) {
        use super::transaction::{InviteClientState, NonInviteClientState};
        let invites: Vec<String> = self
            .invites
            .iter()
            .filter(|(_, i)| {
                i.request.destination == to && i.tx.state() == InviteClientState::Calling
            })
            .map(|(b, _)| b.clone())
            .collect();
        for branch in invites {
            if let Some(i) = self.invites.get_mut(&branch) {
                i.tx.on_transport_error();
            }
            self.drain_invite(now, &branch);
        }
        let requests: Vec<String> = self
            .client
            .iter()
            .filter(|(_, c)| c.to == to && c.tx.state() == NonInviteClientState::Trying)
            .map(|(b, _)| b.clone())
            .collect();
        for branch in requests {
            if let Some(c) = self.client.get_mut(&branch) {
                c.tx.on_transport_error();
            }
            self.drain_client(now, &branch);
        }
    }

    fn drain_client(&mut self, now: Instant, branch: &str) {
        let Some(c) = self.client.get_mut(branch) else {
            return;
        };
        let (to, call, method) = (c.to, c.call, c.method.clone());
        let outputs: Vec<Output> = std::iter::from_fn(|| c.tx.poll_output()).collect();
        for o in outputs {
            match o {
                Output::Transmit(bytes) => self.transmit(to, bytes),
                Output::TimedOut | Output::TransportError if method == Method::Register => {
                    self.register_unanswered(now, branch);
                }
                Output::TimedOut | Output::TransportError => {
                    self.on_client_failure(now, call, &method, "no response (timeout)")
                }
                Output::Terminated => {
                    self.client.remove(branch);
                }
                _ => {}
            }
        }
        let next = self.client.get(branch).and_then(|c| c.tx.poll_timeout());
        self.schedule(next, TimerOwner::Client(branch.to_string()));
    }

    fn drain_two_xx(&mut self, now: Instant, call: CallHandle) {
        let Some((r, to)) = self.two_xx.get_mut(&call) else {
            return;
        };
        let to = *to;
        let outputs: Vec<Output> = std::iter::from_fn(|| r.poll_output()).collect();
        for o in outputs {
            match o {
                Output::Transmit(bytes) => self.transmit(to, bytes),
                Output::AckTimedOut => {
                    self.two_xx.remove(&call);
                    tracing::info!(call = call.0, "no ACK for our 200 OK; ending the call");
                    self.send_bye(now, call);
                    self.event(call, UaEvent::Ended(EndReason::AckTimeout));
                    return;
                }
                Output::Terminated => {
                    self.two_xx.remove(&call);
                    return;
                }
                _ => {}
            }
        }
        let next = self.two_xx.get(&call).and_then(|(r, _)| r.poll_timeout());
        self.schedule(next, TimerOwner::TwoXx(call));
    }

    fn on_client_failure(&mut self, now: Instant, call: CallHandle, method: &Method, why: &str) {
        if *method == Method::Refer {
            if let Some(d) = self.dialogs.get_mut(&call) {
                d.refer_deadline = None;
            }
            self.event(call, UaEvent::TransferResult(Err(format!("REFER: {why}"))));
        } else if *method == Method::Bye {
            self.forget(call);
        } else if *method == Method::Update {
            self.session_lost(now, call, why);
        }
    }

    /// Removes a finished dialog.
    fn forget(&mut self, call: CallHandle) {
        if let Some(d) = self.dialogs.remove(&call) {
            self.by_tags
                .remove(&(d.call_id.clone(), d.local_tag.clone()));
            if let Some(trunk) = d.trunk {
                self.admission.lock().call_ended(trunk);
            }
        }
        self.two_xx.remove(&call);
        // A re-INVITE that got a provisional answer and never a final one
        // has no timer left: it goes with its dialog.
        self.reinvites.retain(|_, r| r.call != call);
    }

    fn on_response(&mut self, now: Instant, m: Message) {
        let Some(branch) = m.top_via().and_then(|v| v.branch.clone()) else {
            return;
        };
        let Some(status) = m.status() else {
            return;
        };
        match m.cseq().map(|c| c.1) {
            Ok("INVITE") if self.invites.contains_key(&branch) => {
                self.on_invite_response(now, &branch, &m);
                return;
            }
            Ok("INVITE") if self.reinvites.contains_key(&branch) => {
                self.on_reinvite_response(now, &branch, &m);
                return;
            }
            Ok("CANCEL") => {
                let key = format!("{branch}-cancel");
                if let Some(c) = self.client.get_mut(&key) {
                    c.tx.on_response(now, status);
                    self.drain_client(now, &key);
                }
                return;
            }
            _ => {}
        }
        let Some(c) = self.client.get_mut(&branch) else {
            // A response to nothing we sent (or a late retransmission): drop.
            return;
        };
        let fresh = c.tx.on_response(now, status);
        let (call, method) = (c.call, c.method.clone());
        self.drain_client(now, &branch);
        if !fresh || status < 200 {
            return;
        }
        match method {
            Method::Refer => self.on_refer_response(now, call, status, &m),
            Method::Bye => self.forget(call),
            Method::Update => self.on_refresh_response(now, call, status, &m),
            Method::Register => self.on_register_response(now, status, &m),
            _ => {}
        }
    }
}

/// A reason phrase for a 400 that says what was wrong (kept to one line).
fn bad_request_phrase(reason: &str) -> String {
    let clean: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(100)
        .collect();
    format!("Bad Request ({clean})")
}
