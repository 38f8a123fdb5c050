//! `callflow serve`: the tokio edge. One task owns the SIP socket and the
//! [`UserAgent`]; each call runs in a task of its own with its RTP socket.
//! The protocol and flow logic stay in the pure core; this module only
//! moves bytes, reads the clock and handles signals.

mod call_task;
mod callbacks;
mod cdr;
pub mod config;
mod dialler;
mod outbound;
mod ports;
pub mod queue_status;
pub mod runtime;
pub mod stats;

/// The dialling policy lives with the pure flow code, which applies it.
pub use crate::flow::dialling as policy;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::call::{Call, CallCommand, CallSetup};
use crate::sip::sdp::{self, LocalMedia};
use crate::sip::ua::{CallHandle, IncomingCall, UaConfig, UaEvent, UaOutput, UserAgent};
pub use call_task::ToCall;
pub use cdr::RecordSink;
use config::ServerConfig;
use ports::PortPool;
use runtime::Runtime;
use stats::MediaStats;

/// Events waiting for one call task at most: a call gets a handful of SIP
/// events in its life, so only a peer flooding in-dialog requests (or a
/// stuck task) reaches this, and then events are dropped and counted.
const CALL_QUEUE: usize = 256;

/// Messages from call tasks (and the dialler) waiting for a SIP task.
const TO_SIP_QUEUE: usize = 4096;

/// What call tasks tell the SIP task.
#[derive(Debug)]
pub enum ToSip {
    /// A SIP command for the call.
    Command(CallHandle, CallCommand),
    /// The call task ended; its RTP port is free again.
    Done(CallHandle, u16),
    /// Place a call for this claimed callback request.
    Dial(Box<crate::callback::Callback>),
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The flows or prompts.
    #[error(transparent)]
    Load(#[from] runtime::LoadError),
    /// A socket or file.
    #[error("{0}")]
    Io(String),
}

#[allow(clippy::disallowed_methods)] // the IO edge reads the clock
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// What every listener shares.
struct Shared {
    config: ServerConfig,
    /// Swapped whole on reload; calls keep the one they started with.
    runtime: RwLock<Arc<Runtime>>,
    ports: Mutex<PortPool>,
    records: RecordSink,
    stats: Arc<MediaStats>,
    callbacks: callbacks::CallbackSink,
    waits: Arc<queue_status::QueueWaits>,
    /// The dialling policies every call applies.
    dialling: Arc<policy::Dialling>,
    /// Who may call, and how much.
    admission: crate::sip::admission::AdmissionConfig,
    /// Where calls we place may have RTP sent.
    outbound_media: crate::sip::admission::Networks,
    /// Recent callback bookings, by number and by source.
    bookings: Mutex<crate::callback::limits::BookingLimits>,
}

impl Shared {
    fn runtime(&self) -> Arc<Runtime> {
        match self.runtime.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Hands an attempt's last word to the store, with the queue's retry
    /// rules and opening hours as they are now.
    fn settle_callback(
        &self,
        leg: &crate::call::callback_leg::CallbackLeg,
        outcome: crate::callback::AttemptOutcome,
    ) {
        let flow = self.config.callback_flow_for(&leg.queue);
        let hours = self.runtime().queue_hours(&leg.queue, flow).cloned();
        self.callbacks.settle(
            leg.id,
            wall_now(),
            outcome,
            self.config.dialler.retry_policy(),
            hours,
        );
    }

    /// Books a callback for `number` asked for from `source`, within the
    /// booking limits.
    fn book(
        &self,
        number: &str,
        source: IpAddr,
    ) -> Result<(), crate::callback::limits::BookingRefusal> {
        self.bookings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .book(now(), number, source)
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, PortPool> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn reload(&self) {
        let (flows, prompts) = (self.config.flows.clone(), self.config.prompts.clone());
        match tokio::task::spawn_blocking(move || Runtime::load(&flows, &prompts)).await {
            Ok(Ok(runtime)) => match check_runtime(&self.config, &runtime) {
                Ok(()) => {
                    tracing::info!(flows = runtime.flows.flows.len(), "flows reloaded");
                    match self.runtime.write() {
                        Ok(mut r) => *r = Arc::new(runtime),
                        Err(poisoned) => *poisoned.into_inner() = Arc::new(runtime),
                    }
                }
                Err(why) => {
                    tracing::error!("reload refused, keeping the last good flows: {why}")
                }
            },
            Ok(Err(e)) => tracing::error!("reload refused, keeping the last good flows: {e}"),
            Err(e) => tracing::error!("reload failed: {e}"),
        }
    }
}

/// Whether the server takes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Running,
    /// No new calls; calls in progress end by then.
    Draining(Instant),
}

/// One SIP listener: its socket, its user agent and its calls.
struct Server {
    shared: Arc<Shared>,
    ua: UserAgent,
    socket: Arc<UdpSocket>,
    rtp_ip: IpAddr,
    /// The address in our Via and Contact.
    ua_advertised: std::net::SocketAddr,
    calls: HashMap<CallHandle, mpsc::Sender<ToCall>>,
    /// Events dropped because a call's queue was full (a call task far
    /// behind, or a peer sending in-dialog requests faster than it reads).
    call_events_dropped: u64,
    /// When the counters were last logged.
    last_report: Instant,
    /// Calls that ring until their answer time.
    ringing: Vec<(Instant, Prepared, tracing::Span)>,
    to_sip: mpsc::Sender<ToSip>,
}

/// Runs the server until SIGTERM/SIGINT and the drain are over.
pub async fn serve(config: ServerConfig) -> Result<(), ServeError> {
    let (first, last) = config.rtp_port_range()?;
    let runtime = Runtime::load(&config.flows, &config.prompts)?;
    check_runtime(&config, &runtime).map_err(ServeError::Io)?;
    if config.trunk.is_some() && runtime.entry(&config.dialler.callback_flow).is_none() {
        tracing::warn!(
            flow = %config.dialler.callback_flow,
            "the dialler's callback flow is not loaded: callbacks of queues without their own wait"
        );
    }
    let admission = config.admission()?;
    if config.trunks.is_empty() {
        tracing::info!(
            "no trunks configured: taking SIP only from loopback (127.0.0.0/8, ::1); add `trunks` to take calls from elsewhere"
        );
    } else {
        for t in &admission.trunks {
            tracing::info!(
                trunk = %t.name, sources = %t.sources, media = %t.media,
                max_calls = t.max_calls, calls_per_second = t.calls_per_second.per_second,
                digest = t.digest.is_some(), "trunk"
            );
        }
    }
    let outbound_media = config.outbound_media(&admission);
    let mut sockets = Vec::new();
    for addr in &config.listen {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|e| ServeError::Io(format!("cannot listen on {addr}: {e}")))?;
        sockets.push((*addr, socket));
    }
    if sockets.is_empty() {
        return Err(ServeError::Io("no listen address".into()));
    }
    let (records, _writer) = RecordSink::start(config.call_records.clone()).map_err(|e| {
        ServeError::Io(format!(
            "cannot open {}: {e}",
            config.call_records.display()
        ))
    })?;
    let callbacks = callbacks::CallbackSink::start(config.callbacks.clone(), wall_now())
        .map_err(|e| ServeError::Io(format!("callback store: {e}")))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| ServeError::Io(e.to_string()))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| ServeError::Io(e.to_string()))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| ServeError::Io(e.to_string()))?;
    tracing::info!(
        listen = ?config.listen, flows = runtime.flows.flows.len(),
        rtp = %config.rtp_ports, "callflow is taking calls"
    );
    let single = sockets.len() == 1;
    let shared = Arc::new(Shared {
        runtime: RwLock::new(Arc::new(runtime)),
        ports: Mutex::new(PortPool::new(first, last)),
        records,
        stats: Arc::new(MediaStats::default()),
        callbacks,
        waits: queue_status::start(&config.queue_status),
        dialling: Arc::new(config.dialling_policies()),
        admission,
        outbound_media,
        bookings: Mutex::new(crate::callback::limits::BookingLimits::new(
            config.booking_limits.rules(),
        )),
        config,
    });
    let (control_tx, control_rx) = watch::channel(Control::Running);
    let mut listeners = tokio::task::JoinSet::new();
    let mut dialler = None;
    for (addr, socket) in sockets {
        // With one listen address `advertise` may replace it (NAT); with
        // several, each advertises itself.
        let advertised = match shared.config.advertise {
            Some(a) if single => a,
            _ => addr,
        };
        let server = Server::new(Arc::clone(&shared), socket, advertised);
        // Callbacks go out through the first listener.
        if dialler.is_none() {
            dialler = Some(tokio::spawn(dialler::run(
                Arc::clone(&shared),
                server.0.to_sip.clone(),
                control_rx.clone(),
            )));
        }
        listeners.spawn(Server::run(server, control_rx.clone()));
    }
    let mut stats_tick = tokio::time::interval(Duration::from_secs(60));
    stats_tick.tick().await;
    loop {
        tokio::select! {
            _ = terminate.recv() => drain(&control_tx, &shared),
            _ = interrupt.recv() => drain(&control_tx, &shared),
            _ = hangup.recv() => shared.reload().await,
            _ = stats_tick.tick() => tracing::info!(media = %shared.stats.summary(), "status"),
            done = listeners.join_next() => {
                if let Some(Err(e)) = &done {
                    tracing::error!("a SIP listener failed: {e}");
                }
                if listeners.is_empty() {
                    break;
                }
            }
        }
    }
    // Attempts settled by the last calls are committed before we exit.
    shared.callbacks.flush().await;
    tracing::info!(media = %shared.stats.summary(), "callflow stopped");
    Ok(())
}

/// What start-up and every reload demand of the flows: the default flow,
/// every routed flow and every queue's callback flow are loaded, and each
/// callback flow transfers to its own queue. A reload that fails these
/// keeps the last good flows, so that no routed number starts getting 404.
fn check_runtime(config: &ServerConfig, runtime: &Runtime) -> Result<(), String> {
    if runtime.entry(&config.default_flow).is_none() {
        return Err(format!(
            "the default flow `{}` is not among the flows in {}; set default_flow",
            config.default_flow,
            config.flows.display()
        ));
    }
    for (number, flow) in &config.routes {
        if runtime.entry(flow).is_none() {
            return Err(format!(
                "route {number} names flow `{flow}`, which is not loaded"
            ));
        }
    }
    for (queue, q) in &config.queues {
        if let Some(flow) = &q.callback_flow {
            if runtime.entry(flow).is_none() {
                return Err(format!(
                    "queue {queue} names callback flow `{flow}`, which is not loaded"
                ));
            }
        }
        let flow = config.callback_flow_for(queue);
        if runtime.entry(flow).is_some() && !runtime.transfers_to(flow, queue) {
            return Err(format!(
                "queue {queue}'s callback flow `{flow}` has no transfer to queue {queue}; callbacks would reach the wrong agents"
            ));
        }
    }
    Ok(())
}

fn drain(control: &watch::Sender<Control>, shared: &Shared) {
    if *control.borrow() == Control::Running {
        tracing::info!(drain = %shared.config.drain, "stopping: no new calls, draining");
        let _ = control.send(Control::Draining(now() + shared.config.drain.0));
    }
}

impl Server {
    fn new(
        shared: Arc<Shared>,
        socket: UdpSocket,
        advertised: std::net::SocketAddr,
    ) -> (Self, mpsc::Receiver<ToSip>) {
        let mut ua_config = UaConfig::new(advertised);
        ua_config.transfer_timeout = shared.config.transfer_timeout.0;
        ua_config.admission = shared.admission.clone();
        let rtp_ip = shared.config.rtp_address.unwrap_or(advertised.ip());
        // Call tasks wait when the SIP task is this far behind; it never
        // waits on them (their own queues are try_send), so this cannot
        // deadlock, and a burst of hang-ups cannot grow memory unseen.
        let (to_sip, from_calls) = mpsc::channel(TO_SIP_QUEUE);
        let server = Server {
            ua: UserAgent::new(ua_config),
            shared,
            socket: Arc::new(socket),
            rtp_ip,
            ua_advertised: advertised,
            calls: HashMap::new(),
            call_events_dropped: 0,
            last_report: now(),
            ringing: Vec::new(),
            to_sip,
        };
        (server, from_calls)
    }

    /// The listener's loop, until drained.
    async fn run(
        self_and_rx: (Self, mpsc::Receiver<ToSip>),
        mut control: watch::Receiver<Control>,
    ) {
        let (mut server, mut from_calls) = self_and_rx;
        let mut buf = vec![0u8; 65536];
        let mut shutdown_sent = false;
        loop {
            let drain_until = match *control.borrow() {
                Control::Running => None,
                Control::Draining(until) => Some(until),
            };
            if let Some(until) = drain_until {
                server.ua.set_accepting(false);
                // Calls still ringing are not answered now only to be cut
                // off: another node (or a later try) can take them.
                if !server.ringing.is_empty() {
                    server.refuse_ringing(now());
                    // Out before the loop may end for want of calls.
                    server.flush().await;
                }
                if server.calls.is_empty() && server.ua.active_calls() == 0 {
                    break;
                }
                if now() >= until && !shutdown_sent {
                    tracing::info!(
                        calls = server.calls.len(),
                        "drain time is over; ending the remaining calls"
                    );
                    for tx in server.calls.values() {
                        let _ = tx.try_send(ToCall::Shutdown);
                    }
                    shutdown_sent = true;
                }
                // BYEs get a few seconds to be answered, then we go regardless.
                if now() >= until + Duration::from_secs(5) {
                    break;
                }
            }
            let ring_due = server.ringing.iter().map(|(at, _, _)| *at).min();
            // Past the drain deadline the next thing to wait for is the end
            // of the BYEs' grace, not the deadline itself (already gone).
            let drain_wake = drain_until.map(|until| {
                if now() >= until {
                    until + Duration::from_secs(5)
                } else {
                    until
                }
            });
            let timeout = [server.ua.poll_timeout(), drain_wake, ring_due]
                .into_iter()
                .flatten()
                .min();
            let socket = Arc::clone(&server.socket);
            tokio::select! {
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => server.ua.handle_datagram(now(), from, &buf[..n]),
                    Err(e) => tracing::debug!("SIP socket: {e}"),
                },
                Some(msg) = from_calls.recv() => server.on_call_message(msg),
                _ = sleep_until(timeout) => {
                    let t = now();
                    server.ua.handle_timeout(t);
                    server.answer_due(t);
                }
                changed = control.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            server.flush().await;
            server.report(false);
        }
        server.report(true);
    }

    /// Logs what admission control and the table bounds turned away, once
    /// a minute (and at the end, `last`) when anything was.
    fn report(&mut self, last: bool) {
        let t = now();
        if !last && t < self.last_report + Duration::from_secs(60) {
            return;
        }
        self.last_report = t;
        let a = self.ua.admission_counters();
        let u = self.ua.counters();
        if a != Default::default() || u != Default::default() || self.call_events_dropped > 0 {
            tracing::info!(
                unknown_dropped = a.unknown_dropped,
                unknown_forbidden = a.unknown_forbidden,
                rate_limited = a.rate_limited,
                sources_blocked = a.sources_blocked,
                source_table_full = a.source_table_full,
                over_calls = a.over_calls,
                over_rate = a.over_rate,
                challenged = a.challenged,
                bad_credentials = a.bad_credentials,
                transactions_full = u.transactions_full,
                dialogs_full = u.dialogs_full,
                call_events_dropped = self.call_events_dropped,
                "turned away so far"
            );
        }
    }
}

/// Sleeps until `deadline`, or forever without one (a select! arm).
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

impl Server {
    fn on_call_message(&mut self, msg: ToSip) {
        let t = now();
        match msg {
            ToSip::Command(call, CallCommand::Refer(target)) => self.ua.refer(t, call, &target),
            ToSip::Command(call, CallCommand::Hangup) => self.ua.hangup(t, call),
            ToSip::Done(call, port) => {
                self.calls.remove(&call);
                self.shared.ports().release(port);
            }
            ToSip::Dial(callback) => self.dial(t, *callback),
        }
    }

    /// Sends what the UA produced and routes its events.
    async fn flush(&mut self) {
        while let Some(output) = self.ua.poll_output() {
            match output {
                UaOutput::Transmit { to, bytes } => {
                    if let Err(e) = self.socket.send_to(&bytes, to).await {
                        tracing::debug!(%to, "SIP send failed: {e}");
                    }
                }
                UaOutput::Event(call, UaEvent::Incoming(incoming)) => {
                    self.on_incoming(call, *incoming)
                }
                UaOutput::Event(call, UaEvent::Ended(reason))
                    if !self.calls.contains_key(&call) =>
                {
                    tracing::debug!(?reason, "a call ended before it was answered");
                    self.drop_ringing(call);
                }
                // A call we placed whose task is gone (it ended while the
                // INVITE was out) was answered all the same: end it rather
                // than leave the callee in silence.
                UaOutput::Event(call, UaEvent::Answered { .. })
                    if !self.calls.contains_key(&call) =>
                {
                    tracing::info!(call = call.0, "answered after its call ended; hanging up");
                    self.ua.hangup(now(), call);
                }
                UaOutput::Event(call, event) => {
                    if let Some(tx) = self.calls.get(&call) {
                        if let Err(mpsc::error::TrySendError::Full(_)) =
                            tx.try_send(ToCall::Sip(event))
                        {
                            self.call_events_dropped += 1;
                            tracing::warn!(
                                call = call.0,
                                "a call's event queue is full; event dropped"
                            );
                        }
                    }
                }
            }
        }
    }

    fn on_incoming(&mut self, handle: CallHandle, incoming: IncomingCall) {
        let t = now();
        let span = tracing::info_span!("call", call_id = %incoming.call_id);
        let Some(prepared) = span.in_scope(|| self.prepare(t, handle, incoming)) else {
            return;
        };
        if self.shared.config.answer_delay.0.is_zero() {
            self.start_call(t, prepared, span);
        } else {
            self.ua.ring(t, handle);
            self.ringing
                .push((t + self.shared.config.answer_delay.0, prepared, span));
        }
    }

    /// Routes the call, negotiates media and binds its RTP socket; `None`
    /// when the call was refused (and answered so).
    fn prepare(
        &mut self,
        t: Instant,
        handle: CallHandle,
        incoming: IncomingCall,
    ) -> Option<Prepared> {
        let flow = self.shared.config.flow_for(&incoming.called).to_string();
        let runtime = self.shared.runtime();
        let Some(entry) = runtime.entry(&flow) else {
            self.ua.reject(t, handle, 404, "Not Found", &[]);
            return None;
        };
        let offer = match &incoming.offer {
            Some(body) => match sdp::parse(&String::from_utf8_lossy(body)) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::info!("bad SDP offer: {e}");
                    self.ua
                        .reject(t, handle, 400, "Bad Request (malformed SDP)", &[]);
                    return None;
                }
            },
            None => None,
        };
        // Negotiated now, against a placeholder port, so that an offer we
        // cannot take is refused before the call rings; the RTP port is
        // only taken when the call is answered.
        let placeholder = LocalMedia {
            addr: self.rtp_ip,
            port: 0,
            session_id: 0,
            session_version: 1,
        };
        let negotiated = match &offer {
            Some(o) => match sdp::answer(o, &placeholder) {
                Ok((_, n)) => Some(n),
                Err(e) => {
                    tracing::info!("offer refused: {e}");
                    let warning = format!("{} callflow \"{e}\"", e.warning_code());
                    self.ua.reject(
                        t,
                        handle,
                        488,
                        "Not Acceptable Here",
                        &[("Warning", &warning)],
                    );
                    return None;
                }
            },
            None => None,
        };
        if let Some(n) = &negotiated {
            let ip = n.remote.ip();
            if !ip.is_unspecified() && !incoming.media_networks.contains(ip) {
                tracing::warn!(remote = %n.remote, trunk = %incoming.trunk,
                    "offer refused: its media address is outside the trunk's media networks");
                self.ua.reject(
                    t,
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
        let mut call = Call::new(CallSetup {
            incoming,
            flows: Arc::clone(&runtime.flows),
            prompts: Arc::clone(&runtime.prompts),
            entry,
            started: t,
            started_wall: wall_now(),
            rtp_seed: rtp_seed(),
            rtp_timeout: self.shared.config.rtp_timeout.0,
            vars: self.shared.waits.as_vars(t),
            callback: None,
            dialling: Arc::clone(&self.shared.dialling),
            rtp_latch_first: self.shared.config.rtp_latch_first,
            hold_timeout: self.shared.config.hold_timeout.0,
            max_duration: self.shared.config.max_call_duration.0,
        });
        if let Some(n) = negotiated {
            call.set_media(n);
        }
        Some(Prepared {
            handle,
            call,
            offer,
        })
    }

    /// A free RTP port, bound and handed to tokio, and how SDP describes
    /// it; the port goes back to the pool when the call task ends.
    fn open_rtp(&self) -> Result<(UdpSocket, LocalMedia), String> {
        let bound = self.shared.ports().bind(self.rtp_ip);
        let (std_socket, port) = bound.ok_or("no free RTP port")?;
        let socket = tokio_socket(std_socket).map_err(|e| {
            self.shared.ports().release(port);
            format!("RTP socket: {e}")
        })?;
        let local = LocalMedia {
            addr: self.rtp_ip,
            port,
            session_id: fastrand::u64(1..u64::MAX / 2),
            session_version: 1,
        };
        Ok((socket, local))
    }

    /// Takes an RTP port for a prepared call, answers it and starts its
    /// task; 503 when no port is free.
    fn start_call(&mut self, t: Instant, p: Prepared, span: tracing::Span) {
        let Prepared {
            handle,
            mut call,
            offer,
        } = p;
        let _entered = span.enter();
        let (socket, local) = match self.open_rtp() {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!("{e}");
                self.ua.reject(
                    t,
                    handle,
                    503,
                    "Service Unavailable",
                    &[("Retry-After", "5")],
                );
                return;
            }
        };
        let port = local.port;
        let body = match &offer {
            Some(o) => match sdp::answer(o, &local) {
                Ok((text, _)) => text,
                Err(e) => {
                    // It was answerable a moment ago with another port.
                    tracing::warn!("offer refused at answer: {e}");
                    self.ua.reject(t, handle, 488, "Not Acceptable Here", &[]);
                    self.shared.ports().release(port);
                    return;
                }
            },
            None => sdp::offer(&local),
        };
        let offer_in_2xx = offer.is_none();
        drop(_entered);
        if !self
            .ua
            .accept(t, handle, local, body.as_bytes(), offer_in_2xx)
        {
            self.shared.ports().release(port);
            return;
        }
        call.on_answered(t);
        self.spawn_call(handle, call, socket, port, span);
    }

    /// Starts the task of a call the user agent knows as `handle`.
    fn spawn_call(
        &mut self,
        handle: CallHandle,
        call: Call,
        socket: UdpSocket,
        port: u16,
        span: tracing::Span,
    ) {
        let (tx, rx) = mpsc::channel(CALL_QUEUE);
        self.calls.insert(handle, tx);
        let task = call_task::run(
            handle,
            call,
            socket,
            port,
            rx,
            self.to_sip.clone(),
            Arc::clone(&self.shared),
        );
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }

    /// Answers the calls whose ringing time is over.
    fn answer_due(&mut self, t: Instant) {
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ringing)
            .into_iter()
            .partition(|(at, _, _)| *at <= t);
        self.ringing = waiting;
        for (_, prepared, span) in due {
            self.start_call(t, prepared, span);
        }
    }

    /// Refuses every call still ringing (for a drain): 503 with
    /// Retry-After, which tells a proxy to try elsewhere.
    fn refuse_ringing(&mut self, t: Instant) {
        for (_, p, _) in std::mem::take(&mut self.ringing) {
            self.ua.reject(
                t,
                p.handle,
                503,
                "Service Unavailable (shutting down)",
                &[("Retry-After", "30")],
            );
        }
    }

    /// A ringing call was cancelled: forget it (it holds no port yet).
    fn drop_ringing(&mut self, call: CallHandle) {
        self.ringing.retain(|(_, p, _)| p.handle != call);
    }
}

/// A call routed and its offer checked, not yet answered: it holds no RTP
/// port, so calls that ring (or are never answered) cost none.
struct Prepared {
    handle: CallHandle,
    call: Call,
    /// The caller's offer, answered once the port is known.
    offer: Option<sdp::SessionDescription>,
}

/// A random SSRC, sequence and timestamp base (RFC 3550 5.1).
fn rtp_seed() -> (u32, u16, u32) {
    (fastrand::u32(..), fastrand::u16(..), fastrand::u32(..))
}

/// A bound RTP socket, handed to tokio.
fn tokio_socket(socket: std::net::UdpSocket) -> std::io::Result<UdpSocket> {
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// The wall clock, read at the IO edge only.
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_now() -> chrono::DateTime<Utc> {
    Utc::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> (ServerConfig, Runtime) {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let config = ServerConfig {
            flows: root.join("tests/sipp/flows"),
            prompts: root.join("prompts"),
            default_flow: "e2e".into(),
            ..ServerConfig::default()
        };
        let runtime = Runtime::load(&config.flows, &config.prompts).unwrap();
        (config, runtime)
    }

    #[test]
    fn flows_that_serve_every_route_pass() {
        let (mut config, runtime) = shipped();
        config.routes.insert("8002".into(), "cb".into());
        assert_eq!(check_runtime(&config, &runtime), Ok(()));
    }

    #[test]
    fn a_reload_that_drops_a_routed_flow_is_refused() {
        let (mut config, runtime) = shipped();
        config.routes.insert("8001".into(), "closed".into());
        let why = check_runtime(&config, &runtime).unwrap_err();
        assert!(why.contains("route 8001"), "{why}");
        config.routes.clear();
        config.default_flow = "gone".into();
        assert!(check_runtime(&config, &runtime).is_err());
    }
}
