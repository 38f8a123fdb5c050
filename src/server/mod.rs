//! `callflow serve`: the tokio edge. Each SIP listen address has one
//! reader task and several workers (one per core by default). The reader
//! hands each datagram to the worker that owns its Call-ID
//! ([`crate::sip::dispatch`]); each worker is a thread of its own (with a
//! tokio runtime of its own and a timerfd for its pacing) that owns one
//! sans-IO [`Endpoint`] (which holds the logic of its calls) and those
//! calls' RTP sockets, so calls are paced on all cores at once. The workers of a listener share its admission control.
//! This module only moves bytes, reads the clock, talks to the store
//! threads and handles signals.

pub mod admin;
pub mod backend;
mod callbacks;
mod cdr;
pub mod config;
mod dialler;
mod dns;
pub mod metrics;
mod ports;
pub mod postgres;
pub mod queue_status;
mod rtp_in;
mod rtp_out;
pub use crate::call::runtime;
pub mod stats;
mod tcp;
mod timer;
pub mod tls;

/// The dialling policy lives with the pure flow code, which applies it.
pub use crate::flow::dialling as policy;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::call::endpoint::{Endpoint, EndpointOutput, Environment};
use crate::callback::{Requested, State};
use crate::sip::admission::{Admission, SharedAdmission};
use crate::sip::transport::{Peer, Transport};
use crate::sip::ua::CallHandle;
pub use cdr::RecordSink;
use config::ServerConfig;
use ports::PortPool;
use runtime::Runtime;
use stats::MediaStats;

/// Batches of RTP read from the calls' sockets (one per turn of a
/// worker's reader) waiting for the worker: past this (a worker far
/// behind, or a flood) packets are dropped and counted.
const RTP_IN_QUEUE: usize = 1024;

/// SIP datagrams read per loop turn at most, when they are waiting.
const SIP_BATCH: usize = 64;

/// Batches of inbound RTP handled per loop turn at most.
const RTP_BATCH: usize = 16;

/// Messages for a worker waiting at most (dialled callbacks, the store's
/// answers).
const INBOX_QUEUE: usize = 4096;

/// SIP datagrams waiting for a worker at most: past this (a worker far
/// behind, or a flood), they are dropped and counted, as the kernel would
/// drop them from a full socket buffer.
const SIP_IN_QUEUE: usize = 4096;

/// The largest SIP datagram taken: over UDP a request this big would have
/// had to go over TCP (RFC 3261 18.1.1 draws that line at 1300 bytes), and
/// the cap keeps a worker's queue under 64 MB whatever a flood sends.
const SIP_MAX_DATAGRAM: usize = 16 * 1024;

/// The SIP socket's receive buffer asked for (the kernel caps it at
/// net.core.rmem_max).
const SIP_RCVBUF: usize = 4 << 20;

/// One SIP message (a datagram, or one framed from a stream) on its way
/// from a listener's reader to a worker.
struct Datagram {
    from: SocketAddr,
    transport: Transport,
    bytes: Vec<u8>,
    /// Not a message: the edge could not reach `from` over `transport`
    /// (a connection refused or not opened in time), so requests waiting
    /// there fail at once (`bytes` is empty).
    undelivered: bool,
}

/// The worker that owns a message: by its Call-ID, or, for one without,
/// by its source, so that a flood of garbage is spread too.
fn worker_for(bytes: &[u8], from: SocketAddr, workers: usize) -> usize {
    match crate::sip::dispatch::call_id_of(bytes) {
        Some(call_id) => crate::sip::dispatch::shard_of(call_id, workers),
        None => match from.ip() {
            IpAddr::V4(ip) => crate::sip::dispatch::shard_of(&ip.octets(), workers),
            IpAddr::V6(ip) => crate::sip::dispatch::shard_of(&ip.octets(), workers),
        },
    }
}

/// What the rest of the server tells a listener.
#[derive(Debug)]
pub enum ToListener {
    /// Place a call for this claimed callback request.
    Dial(Box<crate::callback::Callback>),
    /// The store's answer to a call's callback request.
    Stored(CallHandle, Result<Requested, String>),
    /// The store's answer to a state query for a call we placed.
    State(CallHandle, Option<State>),
    /// The admin asks for the worker's calls and counters.
    Snapshot(tokio::sync::oneshot::Sender<metrics::WorkerSnapshot>),
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

/// What every listener shares.
struct Shared {
    config: ServerConfig,
    /// Swapped whole on reload; calls keep the one they started with.
    runtime: watch::Sender<Arc<Runtime>>,
    ports: Mutex<PortPool>,
    records: RecordSink,
    /// Each worker's media counters, added up for the log.
    stats: Mutex<Vec<Arc<MediaStats>>>,
    callbacks: callbacks::CallbackSink,
    waits: Arc<queue_status::QueueWaits>,
    /// Recent callback bookings, by number and by source.
    bookings: Arc<Mutex<crate::callback::limits::BookingLimits>>,
    /// The bridged queues' addresses and names admitted (and located) so
    /// far: a reload that bridges somewhere new admits it before its flows
    /// are used, or the ACD's answers would be dropped.
    bridged: Mutex<Bridged>,
    /// What admitting a new bridged destination reaches, once listening.
    reach: std::sync::OnceLock<Reach>,
    /// Every worker's inbox, once all are started (the admin asks them).
    workers: std::sync::OnceLock<Vec<mpsc::Sender<ToListener>>>,
    /// Counters that change once per call, for the metrics.
    tally: Mutex<metrics::Tally>,
    /// One reload at a time (SIGHUP and `POST /reload` may meet).
    reloading: tokio::sync::Mutex<()>,
    /// Whether the callback store answers: load balancers' probes hear
    /// 503 while it does not (see [`watch_readiness`]).
    ready: watch::Sender<bool>,
}

/// Where bridged queues call.
#[derive(Debug, Default, Clone, PartialEq)]
struct Bridged {
    ips: Vec<IpAddr>,
    names: Vec<crate::sip::locate::SipTarget>,
}

impl Bridged {
    /// What `runtime`'s bridged queues call that is not admitted yet.
    fn new_in(&self, runtime: &Runtime) -> Bridged {
        Bridged {
            ips: runtime
                .bridge_destinations()
                .into_iter()
                .filter(|ip| !self.ips.contains(ip))
                .collect(),
            names: runtime
                .bridge_names()
                .into_iter()
                .filter(|t| !self.names.contains(t))
                .collect(),
        }
    }
}

/// The listeners' admission, the dialling directory and TLS: what a new
/// bridged destination must be added to.
struct Reach {
    admissions: Vec<SharedAdmission>,
    directory: Arc<crate::sip::locate::Directory>,
    tls: Option<tls::Tls>,
}

impl Shared {
    fn runtime(&self) -> Arc<Runtime> {
        Arc::clone(&self.runtime.borrow())
    }

    /// The workers' media counters, added up.
    fn media_summary(&self) -> String {
        MediaStats::summary(&self.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The workers' media counts, added up, for the metrics.
    fn media_counts(&self) -> stats::MediaCounts {
        MediaStats::counts(&self.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, metrics::Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call is over: count it and write its record.
    fn call_ended(&self, record: Box<crate::call::record::CallRecord>) {
        let runtime = self.runtime();
        self.tally()
            .call_ended(&record, |target| runtime.has_queue(target));
        self.records.write(record);
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
        self.tally().attempt_settled(&outcome);
        self.callbacks.settle(
            leg.id,
            wall_now(),
            outcome,
            self.config.dialler.retry_policy(),
            hours,
        );
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, PortPool> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the flows again with the checks of start-up: the number of
    /// flows now taking calls, or why the last good ones are kept.
    async fn reload(&self) -> Result<usize, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let (flows, prompts) = (self.config.flows.clone(), self.config.prompts.clone());
        let loaded = tokio::task::spawn_blocking(move || Runtime::load(&flows, &prompts))
            .await
            .map_err(|e| format!("reload failed: {e}"))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .and_then(|runtime| check_runtime(&self.config, &runtime).map(|()| runtime));
        match loaded {
            Ok(runtime) => {
                self.admit_bridged(&runtime).await;
                let flows = runtime.flows.flows.len();
                tracing::info!(flows, "flows reloaded");
                self.runtime.send_replace(Arc::new(runtime));
                Ok(flows)
            }
            Err(why) => {
                tracing::error!("reload refused, keeping the last good flows: {why}");
                Err(why)
            }
        }
    }
}

impl Shared {
    /// Admits the answers of ACDs that `runtime` bridges to and no flow
    /// did before: their addresses at once, their names once DNS has
    /// placed them (as at the start, at most 5 s before the flows are
    /// used; a name not placed by then is followed all the same).
    async fn admit_bridged(&self, runtime: &Runtime) {
        let Some(reach) = self.reach.get() else {
            return;
        };
        let mut new = self
            .bridged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .new_in(runtime);
        // The trunk's names are followed already (with its `tls_name`): a
        // queue at the trunk adds nothing to look up.
        let trunk_names = self
            .config
            .trunk
            .as_ref()
            .map(|t| t.targets())
            .unwrap_or_default();
        new.names.retain(|t| !trunk_names.contains(t));
        if new == Bridged::default() {
            return;
        }
        tracing::info!(
            addresses = ?new.ips,
            names = ?new.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "the reloaded flows bridge somewhere new: admitting its answers"
        );
        for admission in &reach.admissions {
            let mut a = admission.lock();
            for ip in &new.ips {
                a.admit_also(*ip);
            }
        }
        self.bridged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ips
            .extend(new.ips.iter().copied());
        if new.names.is_empty() {
            return;
        }
        let locator = match dns::Locator::new(&self.config.dns, dns_transports(&self.config)) {
            Ok(locator) => locator,
            Err(e) => {
                // Not recorded as known: the next reload tries again.
                tracing::error!("DNS: cannot look up the new bridged queues: {e}");
                return;
            }
        };
        for admission in &reach.admissions {
            let mut a = admission.lock();
            for name in &new.names {
                a.locate_also(name.clone());
            }
        }
        self.bridged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .names
            .extend(new.names.iter().cloned());
        let tls_names = new
            .names
            .iter()
            .map(|t| (t.clone(), t.host.to_string()))
            .collect();
        let sinks = dns::Sinks {
            directory: Arc::clone(&reach.directory),
            admissions: reach.admissions.clone(),
            tls: reach.tls.clone().map(|t| (t, tls_names)),
        };
        dns::keep_located(locator, new.names, sinks).await;
    }
}

/// The transports DNS lookups may choose among: secure first where TLS
/// is on, for domains without NAPTR records.
fn dns_transports(config: &ServerConfig) -> Vec<Transport> {
    let mut enabled = Vec::new();
    if config.tls.is_some() {
        enabled.push(Transport::Tls);
    }
    if config.tcp {
        enabled.push(Transport::Tcp);
    }
    enabled.push(Transport::Udp);
    enabled
}

/// Whether the server takes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Running,
    /// No new calls; calls in progress end by then.
    Draining(Instant),
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
    let mut admission = config.admission()?;
    // The ACDs bridged queues call answer from their own addresses: let
    // them, as the outbound trunk is let (never to start a call).
    let bridged = runtime.bridge_destinations();
    for ip in &bridged {
        if !admission.trunks.iter().any(|t| t.sources.contains(*ip))
            && !admission.also_from.contains(ip)
        {
            admission.also_from.push(*ip);
        }
    }
    let bridged_names = runtime.bridge_names();
    admission.also_located.extend(bridged_names.iter().cloned());
    if config.trunks.is_empty() {
        tracing::info!(
            "no trunks configured: taking SIP only from loopback (127.0.0.0/8, ::1); add `trunks` to take calls from elsewhere"
        );
    } else {
        for t in &admission.trunks {
            tracing::info!(
                trunk = %t.name, sources = %t.sources, media = %t.media,
                located = ?t.located.iter().map(ToString::to_string).collect::<Vec<_>>(),
                max_calls = t.max_calls, calls_per_second = t.calls_per_second.per_second,
                digest = t.digest.is_some(), "trunk"
            );
        }
    }
    let outbound_media = config.outbound_media(&admission);
    let tls_setup = match &config.tls {
        Some(t) => {
            let tls = tls::Tls::load(t).map_err(|e| ServeError::Io(e.to_string()))?;
            if let Some(trunk) = &config.trunk {
                // A trunk by name is checked against its name as DNS
                // places it (see `dns`); one by address here.
                for target in trunk.targets() {
                    if let (Some(name), Some(peer)) = (&trunk.tls_name, target.fixed()) {
                        tls.expect_name(peer.addr, name)
                            .map_err(|e| ServeError::Io(format!("trunk: {e}")))?;
                    }
                }
            }
            Some(tls)
        }
        None => None,
    };
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
    // Bound before the first call is taken: a probe that finds SIP up finds
    // the admin port up too (connections wait until it serves).
    let admin_listener = match &config.admin {
        Some(admin) => {
            let token = admin.load_token().map_err(ServeError::Io)?;
            let listener = tokio::net::TcpListener::bind(admin.listen)
                .await
                .map_err(|e| {
                    ServeError::Io(format!("cannot listen on {} (admin): {e}", admin.listen))
                })?;
            tracing::info!(listen = %admin.listen, "admin HTTP");
            Some((listener, token))
        }
        None => None,
    };
    let node = config
        .node_name()
        .map_err(|e| ServeError::Io(e.to_string()))?;
    tracing::info!(%node, "this node");
    let (records, _writer) =
        RecordSink::start(config.call_records.clone(), &node).map_err(|e| {
            ServeError::Io(format!(
                "cannot open {}: {e}",
                config.call_records.display()
            ))
        })?;
    // Each run claims under a name of its own: a restarted node takes back
    // its earlier run's claims at once, and other nodes' only when their
    // leases run out.
    let claimant = crate::callback::store::Claimant {
        node: node.clone(),
        run: format!("{:016x}", fastrand::u64(..)),
        lease: config.dialler.lease.0,
    };
    let callbacks =
        callbacks::CallbackSink::start(&config.callbacks.to_string_lossy(), claimant, wall_now())
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
    let dialling = Arc::new(config.dialling_policies());
    let shared = Arc::new(Shared {
        runtime: watch::Sender::new(Arc::new(runtime)),
        ports: Mutex::new(PortPool::new(first, last)),
        records,
        stats: Mutex::default(),
        callbacks,
        waits: queue_status::start(&config.queue_status),
        bookings: Arc::new(Mutex::new(crate::callback::limits::BookingLimits::new(
            config.booking_limits.rules(),
        ))),
        bridged: Mutex::new(Bridged {
            ips: bridged,
            names: bridged_names,
        }),
        reach: std::sync::OnceLock::new(),
        workers: std::sync::OnceLock::new(),
        tally: Mutex::default(),
        reloading: tokio::sync::Mutex::new(()),
        ready: watch::Sender::new(true),
        config,
    });
    let (control_tx, control_rx) = watch::channel(Control::Running);
    let mut workers = tokio::task::JoinSet::new();
    let mut readers = Vec::new();
    let mut dialler = None;
    let mut all_inboxes = Vec::new();
    let mut to_start = Vec::new();
    let worker_count = shared.config.workers();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tracing::info!(workers = worker_count, "call workers per listen address");
    let admission_states: Vec<SharedAdmission> = sockets
        .iter()
        .map(|_| {
            let mut rng = fastrand::Rng::new();
            let mut secret = [0u8; 16];
            secret.iter_mut().for_each(|b| *b = rng.u8(..));
            SharedAdmission::new(Admission::new(admission.clone(), secret))
        })
        .collect();
    // Named servers are placed before the first call needs them.
    let directory = Arc::new(crate::sip::locate::Directory::default());
    let bridged_names = shared
        .bridged
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .names
        .clone();
    let _ = shared.reach.set(Reach {
        admissions: admission_states.clone(),
        directory: Arc::clone(&directory),
        tls: tls_setup.clone(),
    });
    start_dns(
        &shared.config,
        &bridged_names,
        dns::Sinks {
            directory: Arc::clone(&directory),
            admissions: admission_states.clone(),
            tls: None,
        },
        tls_setup.as_ref(),
    )
    .await?;
    for (listener_index, ((addr, socket), admission_state)) in
        sockets.into_iter().zip(admission_states).enumerate()
    {
        // With one listen address `advertise` may replace it (NAT); with
        // several, each advertises itself.
        let advertised = match shared.config.advertise {
            Some(a) if single => a,
            _ => addr,
        };
        let socket = Arc::new(socket);
        let busy_workers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // SIP over TCP on the same address and port (RFC 3261 18: a UA
        // takes both), if the configuration turns it on.
        let tcp = if shared.config.tcp {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Io(format!("cannot listen on TCP {addr}: {e}")))?;
            let transport = tcp::TcpTransport::new(shared.config.stream_timing());
            tokio::spawn(Arc::clone(&transport).accept(listener));
            tracing::info!(%addr, "SIP over TCP too");
            Some(transport)
        } else {
            None
        };
        // Each listen address has a TLS port of its own (check_runtime
        // makes sure no two share one): what comes back over it must reach
        // this listener's workers, who know its transactions.
        let tls_port = shared
            .config
            .tls
            .as_ref()
            .map_or(5061, |t| t.port_for(listener_index));
        let tls = match &tls_setup {
            Some(tls) => {
                let at = SocketAddr::new(addr.ip(), tls_port);
                let listener = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| ServeError::Io(format!("cannot listen on TLS {at}: {e}")))?;
                let transport = tcp::TcpTransport::tls(tls.clone(), shared.config.stream_timing());
                tokio::spawn(Arc::clone(&transport).accept(listener));
                tracing::info!(%at, "SIP over TLS");
                Some(transport)
            }
            None => None,
        };
        let mut queues = Vec::with_capacity(worker_count);
        let mut inboxes = Vec::with_capacity(worker_count);
        for index in 0..worker_count {
            let mut endpoint_config = shared.config.endpoint_config(
                advertised,
                tls.as_ref().map(|_| tls_port),
                admission.clone(),
                outbound_media.clone(),
                Arc::clone(&dialling),
                Arc::clone(&shared.bookings),
            );
            endpoint_config.ua.shared_admission = Some(admission_state.clone());
            endpoint_config.ua.directory = Arc::clone(&directory);
            endpoint_config.ua.registered_user = shared
                .config
                .trunk
                .as_ref()
                .and_then(|t| t.registered_user());
            endpoint_config.ua.shard = Some((index, worker_count));
            let rtp_out = if worker_count < cores {
                rtp_out::RtpOut::thread()
                    .map_err(|e| ServeError::Io(format!("cannot start the RTP sender: {e}")))?
            } else {
                rtp_out::RtpOut::inline()
            };
            let (rtp_reader, rtp_rx) = rtp_in::RtpReader::start(RTP_IN_QUEUE)
                .map_err(|e| ServeError::Io(format!("cannot start the RTP reader: {e}")))?;
            let (sip_tx, sip_rx) = mpsc::channel(SIP_IN_QUEUE);
            let io = WorkerIo {
                socket: Arc::clone(&socket),
                tcp: tcp.clone(),
                tls: tls.clone(),
                sip_rx,
                rtp_out,
                rtp_reader,
                rtp_rx,
            };
            let (mut worker, inbox) = Worker::new(
                Arc::clone(&shared),
                endpoint_config,
                io,
                index,
                Arc::clone(&busy_workers),
            );
            // The first listener's first worker keeps the registration
            // (its Call-ID is chosen to come back to it).
            if index == 0 && dialler.is_none() {
                if let Some(registration) =
                    shared.config.trunk.as_ref().and_then(|t| t.registration())
                {
                    worker.endpoint.register(now(), registration);
                }
            }
            queues.push(sip_tx);
            inboxes.push(worker.inbox.clone());
            to_start.push((worker, inbox));
        }
        all_inboxes.extend(inboxes.iter().cloned());
        // Callbacks go out through the first listener's workers.
        if dialler.is_none() {
            dialler = Some(tokio::spawn(dialler::run(
                Arc::clone(&shared),
                inboxes,
                control_rx.clone(),
            )));
        }
        // Room for a burst while the reader waits for a core (the workers'
        // pacing keeps both busy under load): the default ~200 KB held too
        // few INVITEs, and a lost INVITE is a caller waiting for a resend.
        if let Err(e) = socket2::SockRef::from(socket.as_ref()).set_recv_buffer_size(SIP_RCVBUF) {
            tracing::warn!("cannot enlarge the SIP receive buffer: {e}");
        }
        for stream in [&tcp, &tls].into_iter().flatten() {
            stream.set_admission(admission_state.clone());
            stream.set_workers(queues.clone());
        }
        // Only now: a worker's first message (the REGISTER) may be answered
        // over a stream before the streams know where answers go, and a
        // message dropped there is never retransmitted.
        for (worker, inbox) in to_start.drain(..) {
            let done = start_worker(worker, inbox, control_rx.clone())?;
            workers.spawn(async move {
                if done.await.is_err() {
                    tracing::error!("a call worker stopped without finishing its calls");
                }
            });
        }
        readers.push(tokio::spawn(read_sip(socket, queues)));
    }
    let _ = shared.workers.set(all_inboxes);
    tokio::spawn(watch_readiness(Arc::clone(&shared)));
    if let Some((listener, token)) = admin_listener {
        tokio::spawn(admin::run(
            listener,
            Arc::clone(&shared),
            token,
            control_rx.clone(),
        ));
    }
    let mut stats_tick = tokio::time::interval(Duration::from_secs(60));
    stats_tick.tick().await;
    loop {
        tokio::select! {
            _ = terminate.recv() => drain(&control_tx, &shared),
            _ = interrupt.recv() => drain(&control_tx, &shared),
            _ = hangup.recv() => {
                let _ = shared.reload().await;
            }
            _ = stats_tick.tick() => tracing::info!(media = %shared.media_summary(), "status"),
            done = workers.join_next() => {
                if let Some(Err(e)) = &done {
                    tracing::error!("a call worker failed: {e}");
                }
                if workers.is_empty() {
                    break;
                }
            }
        }
    }
    for reader in readers {
        reader.abort();
    }
    // Attempts settled by the last calls are committed before we exit.
    shared.callbacks.flush().await;
    tracing::info!(media = %shared.media_summary(), "callflow stopped");
    Ok(())
}

/// Runs `worker` on a thread of its own with a runtime of its own, so that
/// its pacing never waits behind the edge's other tasks (or another
/// worker's turn on a shared runtime) and its timer wakes this thread
/// alone. What it shares with the edge (the SIP socket, the channels) works
/// across runtimes. The receiver hears when it has finished.
fn start_worker(
    worker: Worker,
    inbox: mpsc::Receiver<ToListener>,
    control: watch::Receiver<Control>,
) -> Result<tokio::sync::oneshot::Receiver<()>, ServeError> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    let name = format!("call-worker-{}", worker.index);
    // The runtime is built (and dropped) on the worker's thread: a runtime
    // may not be dropped inside the edge's async code.
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let _ = started_tx.send(Ok(()));
                    runtime.block_on(worker.run(inbox, control));
                    let _ = done_tx.send(());
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| ServeError::Io(format!("cannot start a call worker: {e}")))?;
    // Start-up only: the answer comes as soon as the runtime is built.
    match started_rx.recv() {
        Ok(Ok(())) => Ok(done_rx),
        Ok(Err(e)) => Err(ServeError::Io(format!(
            "cannot start a call worker's runtime: {e}"
        ))),
        Err(_) => Err(ServeError::Io("a call worker failed to start".into())),
    }
}

/// How often the store is asked whether it answers (and how long it has).
const READINESS_CHECK: Duration = Duration::from_secs(1);

/// How long the store must have gone unanswered before the node is not
/// ready.
const NOT_READY_AFTER: Duration = Duration::from_secs(5);

/// Keeps `shared.ready` true while the callback store answers, so that
/// load balancers' OPTIONS probes hear 503 from a node whose store is
/// stuck (calls that reach it are still taken).
async fn watch_readiness(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(READINESS_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut answered = now();
    loop {
        tick.tick().await;
        let answer = tokio::time::timeout(READINESS_CHECK, shared.callbacks.ping()).await;
        if matches!(answer, Ok(Ok(_))) {
            answered = now();
        }
        // One slow answer is not an outage: probes would flap, and with a
        // shared store every node would flap at once.
        let ready = now().duration_since(answered) < NOT_READY_AFTER;
        let changed = shared
            .ready
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
        if changed && ready {
            tracing::info!("the callback store answers again: ready");
        } else if changed {
            let why = match answer {
                Ok(Err(e)) => e,
                _ => "no answer in time".to_string(),
            };
            tracing::error!(
                "the callback store does not answer ({why}): not ready, probes get 503"
            );
        }
    }
}

/// Starts looking up the named servers of the configuration (the trunk,
/// which is also the registrar, and the bridged queues), if there are any: at once, so that the
/// first calls have their addresses, and again as the records expire.
async fn start_dns(
    config: &ServerConfig,
    bridged: &[crate::sip::locate::SipTarget],
    mut sinks: dns::Sinks,
    tls: Option<&tls::Tls>,
) -> Result<(), ServeError> {
    let mut targets = Vec::new();
    let mut tls_names = HashMap::new();
    if let Some(trunk) = &config.trunk {
        for target in trunk.targets() {
            if target.fixed().is_none() && !targets.contains(&target) {
                // RFC 5922 4.1: the server must prove the name we were
                // given, not the one DNS led us to.
                let name = trunk
                    .tls_name
                    .clone()
                    .unwrap_or_else(|| target.host.to_string());
                tls_names.insert(target.clone(), name);
                targets.push(target);
            }
        }
    }
    // Trunks' sources by name: their addresses are admitted as DNS gives
    // them (we never connect to them for this, so no TLS name).
    for t in config.trunks.values() {
        for target in t.names() {
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
    }
    for target in bridged {
        // The trunk's own `tls_name` stays, if a queue is the trunk.
        tls_names
            .entry(target.clone())
            .or_insert_with(|| target.host.to_string());
        if !targets.contains(target) {
            targets.push(target.clone());
        }
    }
    if targets.is_empty() {
        return Ok(());
    }
    let locator = dns::Locator::new(&config.dns, dns_transports(config)).map_err(ServeError::Io)?;
    sinks.tls = tls.map(|t| (t.clone(), tls_names));
    dns::keep_located(locator, targets, sinks).await;
    Ok(())
}

/// What start-up and every reload demand of the flows: the default flow,
/// every routed flow and every queue's callback flow are loaded, and each
/// callback flow transfers to its own queue. A reload that fails these
/// keeps the last good flows, so that no routed number starts getting 404.
fn check_runtime(config: &ServerConfig, runtime: &Runtime) -> Result<(), String> {
    let (lease, poll) = (config.dialler.lease.0, config.dialler.poll.0);
    if lease < Duration::from_secs(3) || lease < 3 * poll {
        // Shorter, and a node's own next claim could take back the calls
        // it is still placing, or a renewal come too late.
        return Err(format!(
            "dialler.lease ({lease:?}) must be at least 3 s and three times dialler.poll ({poll:?})"
        ));
    }
    if config
        .trunk
        .as_ref()
        .is_some_and(|t| t.transport == Some(Transport::Tcp) && !config.tcp)
    {
        return Err(
            "the trunk's transport is tcp, but SIP over TCP is off: set `tcp: true`".to_string(),
        );
    }
    if config
        .trunk
        .as_ref()
        .is_some_and(|t| t.transport == Some(Transport::Tls) && config.tls.is_none())
    {
        return Err(
            "the trunk's transport is tls, but SIP over TLS is off: configure `tls`".to_string(),
        );
    }
    if config
        .trunk
        .as_ref()
        .is_some_and(|t| t.srtp && t.transport != Some(Transport::Tls))
    {
        // SDES keys are in the SDP: over anything but TLS they would be
        // readable by anyone on the path.
        return Err("trunk.srtp needs `transport: tls` on the trunk".to_string());
    }
    if let Some(tls) = &config.tls {
        if tls.port.contains(&0) {
            // Via and Contact would advertise port 0.
            return Err("tls.port must name a port, not 0".to_string());
        }
        if tls.port.len() > 1 && tls.port.len() != config.listen.len() {
            return Err(format!(
                "tls.port lists {} ports for {} listen addresses: give one port, or one per listen address",
                tls.port.len(),
                config.listen.len()
            ));
        }
        let mut taken = HashSet::new();
        for (index, addr) in config.listen.iter().enumerate() {
            let at = SocketAddr::new(addr.ip(), tls.port_for(index));
            if !taken.insert(at) {
                return Err(format!(
                    "two listen addresses would share the TLS port {at}: give `tls.port` one port per listen address, e.g. [{}]",
                    (0..config.listen.len())
                        .map(|i| (u32::from(tls.port_for(0)) + 10 * i as u32).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    for transport in runtime.bridge_transports() {
        if transport == Transport::Tcp && !config.tcp {
            return Err(
                "a bridged queue is called over TCP, but SIP over TCP is off: set `tcp: true`"
                    .to_string(),
            );
        }
        if transport == Transport::Tls && config.tls.is_none() {
            return Err(
                "a bridged queue is called over TLS, but SIP over TLS is off: configure `tls`"
                    .to_string(),
            );
        }
    }
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

/// Reads a listen address's SIP socket and hands each datagram to the
/// worker that owns it ([`worker_for`]).
async fn read_sip(socket: Arc<UdpSocket>, workers: Vec<mpsc::Sender<Datagram>>) {
    let mut buf = vec![0u8; 65536];
    let mut dropped: u64 = 0;
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("SIP socket: {e}");
                continue;
            }
        };
        if n > SIP_MAX_DATAGRAM {
            tracing::debug!(%from, n, "dropped an oversized SIP datagram");
            continue;
        }
        let bytes = &buf[..n];
        let index = worker_for(bytes, from, workers.len());
        let datagram = Datagram {
            from,
            transport: Transport::Udp,
            bytes: bytes.to_vec(),
            undelivered: false,
        };
        match workers[index].try_send(datagram) {
            Ok(()) => {}
            // A worker that is gone (it failed) takes nothing more; the
            // others' calls go on, and the server stops when all are gone.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                if workers.iter().all(mpsc::Sender::is_closed) {
                    return;
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped += 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped,
                        worker = index,
                        "a call worker is behind: SIP datagrams dropped"
                    );
                }
            }
        }
    }
}

/// A worker's ways in and out: the listen address's socket (it sends SIP
/// from it), the datagrams the reader hands it, and its RTP threads.
struct WorkerIo {
    socket: Arc<UdpSocket>,
    tcp: Option<Arc<tcp::TcpTransport>>,
    tls: Option<Arc<tcp::TcpTransport>>,
    sip_rx: mpsc::Receiver<Datagram>,
    rtp_out: rtp_out::RtpOut,
    rtp_reader: rtp_in::RtpReader,
    rtp_rx: rtp_in::RtpInbox,
}

/// One call worker: its endpoint, its calls' RTP sockets and the thread
/// that sends their RTP.
struct Worker {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    /// The listen address's socket, which the worker sends SIP from.
    socket: Arc<UdpSocket>,
    /// SIP over TCP on the listen address, if it takes TCP.
    tcp: Option<Arc<tcp::TcpTransport>>,
    /// SIP over TLS on the listen address's TLS port, if it takes TLS.
    tls: Option<Arc<tcp::TcpTransport>>,
    /// SIP messages the readers handed to this worker.
    sip_rx: mpsc::Receiver<Datagram>,
    /// Which worker of its listener this is, for the logs.
    index: usize,
    /// How many of the listener's workers have calls in progress.
    busy_workers: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether this worker counts itself in `busy_workers`.
    counted_busy: bool,
    /// Sockets bound by [`EdgeEnvironment::open_rtp`], not yet in `rtp`.
    opened: Arc<Mutex<HashMap<u16, std::net::UdpSocket>>>,
    /// The calls' RTP sockets by port (sent on directly, non-blocking).
    rtp: ports::PortTable<rtp_out::RtpSocket>,
    /// The thread that reads them, and what it read.
    rtp_reader: rtp_in::RtpReader,
    rtp_rx: rtp_in::RtpInbox,
    /// Where the dialler and the store's answers reach this listener.
    inbox: mpsc::Sender<ToListener>,
    runtime: watch::Receiver<Arc<Runtime>>,
    /// The thread that sends RTP, and its count of packets not sent.
    rtp_out: rtp_out::RtpOut,
    /// This worker's media counters.
    stats: Arc<MediaStats>,
    /// When the counters were last logged.
    last_report: Instant,
    /// The SIP messages this worker took and sent.
    sip: metrics::SipCounts,
    /// Whether the node is ready, as the edge last found it.
    ready: watch::Receiver<bool>,
}

/// What the endpoint borrows from the edge.
struct EdgeEnvironment {
    shared: Arc<Shared>,
    rtp_ip: IpAddr,
    opened: Arc<Mutex<HashMap<u16, std::net::UdpSocket>>>,
}

impl Environment for EdgeEnvironment {
    fn open_rtp(&mut self) -> Result<u16, String> {
        let (socket, port) = self
            .shared
            .ports()
            .bind(self.rtp_ip)
            .ok_or("no free RTP port")?;
        if let Err(e) = socket.set_nonblocking(true) {
            self.shared.ports().release(port);
            return Err(format!("RTP socket: {e}"));
        }
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port, socket);
        Ok(port)
    }

    fn queue_vars(&self, now: Instant) -> Vec<(String, String)> {
        self.shared.waits.as_vars(now)
    }
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        config: crate::call::endpoint::EndpointConfig,
        io: WorkerIo,
        index: usize,
        busy_workers: Arc<std::sync::atomic::AtomicUsize>,
    ) -> (Self, mpsc::Receiver<ToListener>) {
        let WorkerIo {
            socket,
            tcp,
            tls,
            sip_rx,
            rtp_out,
            rtp_reader,
            rtp_rx,
        } = io;
        let opened: Arc<Mutex<HashMap<u16, std::net::UdpSocket>>> = Arc::default();
        let env = EdgeEnvironment {
            shared: Arc::clone(&shared),
            rtp_ip: config.rtp_ip,
            opened: Arc::clone(&opened),
        };
        let endpoint = Endpoint::new(
            config,
            shared.runtime(),
            Box::new(env),
            fastrand::Rng::new(),
            now(),
            wall_now(),
        );
        let (inbox, inbox_rx) = mpsc::channel(INBOX_QUEUE);
        let rtp = shared.ports().table();
        let stats = Arc::new(MediaStats::default());
        shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&stats));
        let worker = Worker {
            runtime: shared.runtime.subscribe(),
            ready: shared.ready.subscribe(),
            shared,
            endpoint,
            socket,
            tcp,
            tls,
            sip_rx,
            index,
            busy_workers,
            counted_busy: false,
            opened,
            rtp,
            rtp_reader,
            rtp_rx,
            inbox,
            rtp_out,
            stats,
            last_report: now(),
            sip: metrics::SipCounts::default(),
        };
        (worker, inbox_rx)
    }

    /// The worker's loop, until drained.
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<ToListener>,
        mut control: watch::Receiver<Control>,
    ) {
        // Made here, on the worker's own runtime, so its wake-ups reach
        // this thread directly.
        let mut timer = timer::Timer::new();
        loop {
            if let Control::Draining(until) = *control.borrow() {
                self.endpoint.drain(now(), until);
            }
            self.flush().await;
            let draining = matches!(*control.borrow(), Control::Draining(_));
            // A worker stops with its listener: an idle one keeps refusing
            // new calls (503) until the other workers' calls are over too.
            let busy = !self.endpoint.is_idle();
            if busy != self.counted_busy {
                if busy {
                    self.busy_workers
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                } else {
                    self.busy_workers
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
                self.counted_busy = busy;
            }
            if self.endpoint.drain_finished(now())
                || (draining && self.busy_workers.load(std::sync::atomic::Ordering::SeqCst) == 0)
            {
                break;
            }
            let mut timeout = self.endpoint.poll_timeout();
            if draining {
                // Look again soon: the others' last call may end any time.
                let soon = now() + Duration::from_millis(100);
                timeout = Some(timeout.map_or(soon, |t| t.min(soon)));
            }
            // RTP queued before the reader could see this will not ring:
            // taken now, and the loop turns again without sleeping.
            self.rtp_rx.sleep_until(timeout);
            if self.take_waiting_rtp() {
                timeout = Some(now());
            }
            tokio::select! {
                Some(d) = self.sip_rx.recv() => {
                    self.take(d);
                    // Whatever else is waiting, in one go: a loop turn
                    // also paces every call's RTP, and taking one datagram
                    // per turn let a busy worker fall behind (INVITEs lost
                    // at 400 calls/s with 2,000 calls streaming).
                    for _ in 1..SIP_BATCH {
                        match self.sip_rx.try_recv() {
                            Ok(d) => self.take(d),
                            Err(_) => break,
                        }
                    }
                },
                () = self.rtp_rx.rung() => {}
                Some(message) = inbox.recv() => match message {
                    ToListener::Dial(callback) => self.endpoint.dial(now(), *callback),
                    ToListener::Stored(call, result) => {
                        self.endpoint.handle_callback_stored(now(), call, result)
                    }
                    ToListener::State(call, state) => {
                        self.endpoint.handle_callback_state(now(), call, state)
                    }
                    ToListener::Snapshot(reply) => {
                        let _ = reply.send(self.snapshot());
                    }
                },
                Ok(()) = self.ready.changed() => {
                    let ready = *self.ready.borrow_and_update();
                    self.endpoint.set_ready(ready);
                }
                _ = timer.until(timeout) => {}
                Ok(()) = self.runtime.changed() => {
                    let runtime = Arc::clone(&self.runtime.borrow_and_update());
                    self.endpoint.set_runtime(runtime);
                }
                changed = control.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            self.rtp_rx.awake();
            self.take_waiting_rtp();
            self.endpoint.handle_timeout(now());
            self.report(false);
        }
        self.flush().await;
        self.report(true);
    }

    /// Hands the endpoint the RTP its reader queued ([`RTP_BATCH`] batches
    /// at most, so that SIP gets its turn); whether there was any.
    fn take_waiting_rtp(&mut self) -> bool {
        let mut received = 0;
        let mut any = false;
        for _ in 0..RTP_BATCH {
            let Some(batch) = self.rtp_rx.try_recv() else {
                break;
            };
            received += self.take_rtp(now(), &batch);
            any = true;
        }
        if received > 0 {
            self.stats.received(received);
        }
        any
    }

    /// Hands the endpoint one batch from the RTP reader: the packets, and
    /// how many its relay rules relayed (counted as received and sent);
    /// how many packets the batch held.
    fn take_rtp(&mut self, t: Instant, batch: &rtp_in::RtpBatch) -> u64 {
        let mut received = 0;
        for (port, from, bytes) in batch.iter() {
            self.endpoint.handle_rtp(t, port, from, bytes);
            received += 1;
        }
        for &(port, packets) in batch.relayed() {
            self.endpoint.handle_relayed(t, port, packets);
            self.stats.relayed(packets);
            received += packets;
        }
        received
    }

    /// Hands the endpoint what a reader passed on.
    fn take(&mut self, d: Datagram) {
        let from = Peer {
            transport: d.transport,
            addr: d.from,
        };
        if d.undelivered {
            self.endpoint.handle_unreachable(now(), from);
        } else {
            self.sip.count(&d.bytes, metrics::Direction::Received);
            self.endpoint.handle_datagram(now(), from, &d.bytes);
        }
    }

    /// What the admin sees of this worker.
    fn snapshot(&self) -> metrics::WorkerSnapshot {
        metrics::WorkerSnapshot {
            calls: self.endpoint.call_summaries(),
            sip: self.sip.clone(),
            // The admission state is the listener's: its first worker tells.
            admission: (self.index == 0).then(|| self.endpoint.admission_counters()),
            ua: self.endpoint.ua_counters(),
            started: self.endpoint.call_counters(),
            rtp_in_dropped: self
                .rtp_reader
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            rtp_send_failed: self.send_failed(),
        }
    }

    /// RTP packets the kernel refused, or that found the sender's queue
    /// full, relayed ones included.
    fn send_failed(&self) -> u64 {
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.rtp_out.failed.load(relaxed) + self.rtp_reader.relay_failed.load(relaxed)
    }

    /// Does what the endpoint asked for and sends its RTP.
    async fn flush(&mut self) {
        while let Some(output) = self.endpoint.poll_output() {
            match output {
                EndpointOutput::Transmit { to, bytes } => {
                    self.sip.count(&bytes, metrics::Direction::Sent);
                    match to.transport {
                        Transport::Udp => {
                            if let Err(e) = self.socket.send_to(&bytes, to.addr).await {
                                tracing::debug!(%to, "SIP send failed: {e}");
                            }
                        }
                        Transport::Tcp => match &self.tcp {
                            Some(tcp) => tcp.send(to.addr, bytes),
                            None => tracing::warn!(%to, "SIP over TCP is not enabled (tcp: true)"),
                        },
                        Transport::Tls => match &self.tls {
                            Some(tls) => tls.send(to.addr, bytes),
                            None => tracing::warn!(%to, "SIP over TLS is not enabled (tls)"),
                        },
                    }
                }
                EndpointOutput::RtpOpened { port, .. } => self.rtp_opened(port),
                EndpointOutput::RtpClosed { port } => self.rtp_closed(port),
                EndpointOutput::Relay { port, rule } => self.rtp_reader.relay(port, rule),
                EndpointOutput::RtpPeer { port, peer } => {
                    if let Some(socket) = self.rtp.get_mut(port) {
                        socket.set_peer(peer);
                    }
                }
                EndpointOutput::StoreCallback {
                    call,
                    request,
                    priority,
                } => {
                    let answer = self.shared.callbacks.request(request, priority, wall_now());
                    let inbox = self.inbox.clone();
                    tokio::spawn(async move {
                        let result = answer
                            .await
                            .unwrap_or_else(|_| Err("the callback store stopped".into()));
                        let _ = inbox.send(ToListener::Stored(call, result)).await;
                    });
                }
                EndpointOutput::QueryCallback { call, id } => {
                    let answer = self.shared.callbacks.state(id);
                    let inbox = self.inbox.clone();
                    tokio::spawn(async move {
                        let state = answer.await.unwrap_or(None);
                        let _ = inbox.send(ToListener::State(call, state)).await;
                    });
                }
                EndpointOutput::CallbackProgress { id, outcome } => {
                    self.shared.callbacks.progress(id, wall_now(), outcome)
                }
                EndpointOutput::SettleCallback { leg, outcome } => {
                    self.shared.settle_callback(&leg, outcome)
                }
                EndpointOutput::Record(record) => self.shared.call_ended(record),
            }
        }
        let stats = &self.stats;
        self.rtp_out
            .send_turn(&self.rtp, self.endpoint.queued_rtp(), |late| {
                stats.record(late)
            });
        self.endpoint.clear_rtp();
    }

    /// A call took the port bound for it: start reading it.
    fn rtp_opened(&mut self, port: u16) {
        let opened = self
            .opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
        let Some(send) = opened else {
            return;
        };
        let socket = Arc::new(send);
        match self
            .rtp
            .insert(port, rtp_out::RtpSocket::new(Arc::clone(&socket)))
        {
            Ok(()) => {
                self.rtp_out.opened(&mut self.rtp, port);
                self.rtp_reader.add(port, socket);
            }
            // Never from the pool; the call's media goes nowhere.
            Err(_) => tracing::warn!(port, "an RTP port outside the pool's range"),
        }
    }

    /// A call is over: close its socket and free the port.
    fn rtp_closed(&mut self, port: u16) {
        if let Some(socket) = self.rtp.remove(port) {
            self.rtp_out.closed(&socket);
        }
        self.rtp_reader.remove(port);
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
        self.shared.ports().release(port);
    }

    /// Logs what admission control and the table bounds turned away, once
    /// a minute (and at the end, `last`) when anything was.
    fn report(&mut self, last: bool) {
        let t = now();
        if !last && t < self.last_report + Duration::from_secs(60) {
            return;
        }
        self.last_report = t;
        self.endpoint.set_wall_clock(t, wall_now());
        let a = self.endpoint.admission_counters();
        let u = self.endpoint.ua_counters();
        let rtp_in_dropped = self
            .rtp_reader
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        let rtp_send_failed = self.send_failed();
        // The admission state is the listener's: its first worker tells.
        let a = if self.index == 0 {
            a
        } else {
            Default::default()
        };
        if a != Default::default()
            || u != Default::default()
            || rtp_send_failed > 0
            || rtp_in_dropped > 0
        {
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
                rtp_send_failed,
                rtp_in_dropped,
                worker = self.index,
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

#[allow(clippy::disallowed_methods)] // the IO edge reads the clock
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// The wall clock, read at the IO edge only.
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_now() -> chrono::DateTime<Utc> {
    Utc::now()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_failed_worker_does_not_stop_the_others_taking_sip() {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let to = socket.local_addr().unwrap();
        let (live_tx, mut live_rx) = mpsc::channel(64);
        let (gone_tx, gone_rx) = mpsc::channel(64);
        drop(gone_rx);
        let reader = tokio::spawn(read_sip(Arc::clone(&socket), vec![live_tx, gone_tx]));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        // Messages for both workers, the dead one's first.
        let id = |n: usize| format!("OPTIONS sip:a SIP/2.0\r\nCall-ID: c{n}\r\n\r\n");
        let of = |w: usize| {
            (0..)
                .find(|&n| worker_for(id(n).as_bytes(), from, 2) == w)
                .unwrap()
        };
        sender.send_to(id(of(1)).as_bytes(), to).unwrap();
        sender.send_to(id(of(0)).as_bytes(), to).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), live_rx.recv())
            .await
            .expect("the live worker still gets its messages")
            .unwrap();
        assert_eq!(got.bytes, id(of(0)).as_bytes());
        assert!(!reader.is_finished());
        drop(live_rx);
        sender.send_to(id(of(0)).as_bytes(), to).unwrap();
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("with every worker gone the reader stops")
            .unwrap();
    }

    use super::*;

    fn shipped() -> (ServerConfig, Runtime) {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let config = ServerConfig {
            flows: root.join("tests/sipp/flows"),
            prompts: root.join("prompts"),
            default_flow: "e2e".into(),
            // bridge_tcp calls its queue over TCP.
            tcp: true,
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

    #[test]
    fn a_trunk_over_tcp_needs_sip_over_tcp_on() {
        let (mut config, runtime) = shipped();
        config.trunk = Some(
            serde_yaml::from_str(
                "{ address: 192.0.2.10:5060, from: \"37167000000\", transport: tcp }",
            )
            .unwrap(),
        );
        config.tcp = false;
        let why = check_runtime(&config, &runtime).unwrap_err();
        assert!(why.contains("tcp: true"), "{why}");
        config.tcp = true;
        assert_eq!(check_runtime(&config, &runtime), Ok(()));
    }

    #[test]
    fn a_queue_bridged_over_tcp_needs_sip_over_tcp_on() {
        let (mut config, runtime) = shipped();
        config.tcp = false;
        let why = check_runtime(&config, &runtime).unwrap_err();
        assert!(
            why.contains("bridged queue") && why.contains("tcp: true"),
            "{why}"
        );
    }

    #[test]
    fn a_trunk_over_tls_needs_tls_configured() {
        let (mut config, runtime) = shipped();
        config.trunk = Some(
            serde_yaml::from_str(
                "{ address: 192.0.2.10:5061, from: \"37167000000\", transport: tls, tls_name: sip.example.net }",
            )
            .unwrap(),
        );
        let why = check_runtime(&config, &runtime).unwrap_err();
        assert!(why.contains("configure `tls`"), "{why}");
        config.tls = Some(serde_yaml::from_str("{ certificate: cert.pem, key: key.pem }").unwrap());
        assert_eq!(config.tls.as_ref().map(|t| t.port_for(0)), Some(5061));
        assert_eq!(check_runtime(&config, &runtime), Ok(()));
    }

    #[test]
    fn trunk_sources_take_addresses_networks_and_host_names() {
        let config: ServerConfig = serde_yaml::from_str(
            "trunks:\n  carrier: { sources: [192.0.2.10, 198.51.100.0/24, sbc.carrier.example] }\n  \
             pbx: { sources: pbx.example, media: 203.0.113.0/24 }\n",
        )
        .unwrap();
        let admission = config.admission().unwrap();
        let carrier = &admission.trunks[0];
        assert!(carrier.sources.contains(IpAddr::from([192, 0, 2, 10])));
        assert!(carrier.sources.contains(IpAddr::from([198, 51, 100, 7])));
        assert_eq!(
            carrier
                .located
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>(),
            vec!["sbc.carrier.example"]
        );
        assert!(carrier.located_media, "media defaults to the sources");
        let pbx = &admission.trunks[1];
        assert_eq!(pbx.located.len(), 1);
        assert!(!pbx.located_media, "media configured apart");
        for bad in [
            "sbc.carrier.example:5060",
            "not a host",
            "10.0.0.1:5060",
            "192.0.2.300",
            "10.1",
            "192.0.2.0/33",
        ] {
            let yaml = format!("trunks: {{ carrier: {{ sources: \"{bad}\" }} }}\n");
            let why = serde_yaml::from_str::<ServerConfig>(&yaml)
                .unwrap_err()
                .to_string();
            assert!(why.contains("source"), "{bad}: {why}");
        }
    }

    #[test]
    fn listen_addresses_on_one_ip_need_a_tls_port_each() {
        let (mut config, runtime) = shipped();
        config.listen = vec![
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.1:5070".parse().unwrap(),
            "127.0.0.2:5060".parse().unwrap(),
        ];
        config.tls = Some(serde_yaml::from_str("{ certificate: c.pem, key: k.pem }").unwrap());
        let why = check_runtime(&config, &runtime).unwrap_err();
        assert!(
            why.contains("share the TLS port 127.0.0.1:5061") && why.contains("[5061, 5071, 5081]"),
            "{why}"
        );
        config.tls = Some(
            serde_yaml::from_str("{ port: [5061, 5071], certificate: c.pem, key: k.pem }").unwrap(),
        );
        let why = check_runtime(&config, &runtime).unwrap_err();
        assert!(why.contains("2 ports for 3 listen addresses"), "{why}");
        let tls: tls::TlsConfig =
            serde_yaml::from_str("{ port: [5061, 5071, 5061], certificate: c.pem, key: k.pem }")
                .unwrap();
        assert_eq!((tls.port_for(1), tls.port_for(2)), (5071, 5061));
        config.tls = Some(tls);
        assert_eq!(
            check_runtime(&config, &runtime),
            Ok(()),
            "127.0.0.2 has its own IP"
        );
        config.listen.truncate(1);
        config.tls =
            Some(serde_yaml::from_str("{ port: 5062, certificate: c.pem, key: k.pem }").unwrap());
        assert_eq!(check_runtime(&config, &runtime), Ok(()));
    }

    #[test]
    fn a_trunk_may_list_several_addresses_each_admitted() {
        let config: ServerConfig = serde_yaml::from_str(
            "trunk: { address: [192.0.2.10, \"sbc2.carrier.example:5070\"], from: \"37167000000\", transport: tcp }\n",
        )
        .unwrap();
        let trunk = config.trunk.as_ref().unwrap();
        let targets: Vec<String> = trunk.targets().iter().map(ToString::to_string).collect();
        assert_eq!(
            targets,
            vec![
                "192.0.2.10;transport=tcp",
                "sbc2.carrier.example:5070;transport=tcp"
            ]
        );
        let outbound = trunk.outbound();
        assert_eq!(outbound.target("123"), "sip:123@192.0.2.10");
        assert_eq!(outbound.backups.len(), 1);
        let admission = config.admission().unwrap();
        assert_eq!(admission.also_from, vec![IpAddr::from([192, 0, 2, 10])]);
        assert_eq!(admission.also_located.len(), 1);
        // Registering: one registrar trunk with both.
        let config: ServerConfig = serde_yaml::from_str(
            "trunk: { address: [192.0.2.10, sbc2.carrier.example], from: \"37167000000\", register: {} }\n",
        )
        .unwrap();
        let admission = config.admission().unwrap();
        let registrar = admission.trunks.last().unwrap();
        assert!(registrar.sources.contains(IpAddr::from([192, 0, 2, 10])));
        assert_eq!(registrar.located.len(), 1);
        assert_eq!(
            config.trunk.unwrap().registration().unwrap().backups.len(),
            1
        );
        let empty = serde_yaml::from_str::<ServerConfig>("trunk: { address: [], from: \"1\" }\n");
        assert!(empty
            .unwrap_err()
            .to_string()
            .contains("at least one address"));
    }

    #[test]
    fn the_node_name_is_configured_or_the_host_name_and_is_checked() {
        let (mut config, _) = shipped();
        config.node = Some("node-a".into());
        assert_eq!(config.node_name().unwrap(), "node-a");
        config.node = None;
        let host = config.node_name().unwrap();
        assert!(!host.is_empty() && host.len() <= 64, "{host}");
        for bad in ["", "a b", "x\"y", &"n".repeat(65)] {
            config.node = Some(bad.to_string());
            assert!(config.node_name().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_trunk_with_srtp_needs_tls() {
        let (mut config, runtime) = shipped();
        config.tls = Some(serde_yaml::from_str("{ certificate: cert.pem, key: key.pem }").unwrap());
        config.trunk = Some(
            serde_yaml::from_str("{ address: 192.0.2.10:5060, from: \"37167000000\", srtp: true }")
                .unwrap(),
        );
        let why = check_runtime(&config, &runtime).unwrap_err();
        assert!(why.contains("trunk.srtp needs `transport: tls`"), "{why}");
        config.trunk = Some(
            serde_yaml::from_str(
                "{ address: 192.0.2.10:5061, from: \"37167000000\", transport: tls, tls_name: sip.example.net, srtp: true }",
            )
            .unwrap(),
        );
        assert_eq!(check_runtime(&config, &runtime), Ok(()));
    }

    #[test]
    fn a_reload_admits_only_the_bridged_destinations_not_admitted_yet() {
        let (_, runtime) = shipped();
        let all = Bridged {
            ips: runtime.bridge_destinations(),
            names: runtime.bridge_names(),
        };
        assert_eq!(all.ips, vec![IpAddr::from([127, 0, 0, 2])]);
        assert_eq!(all.new_in(&runtime), Bridged::default());
        let new = Bridged::default().new_in(&runtime);
        assert_eq!(new, all, "all of it is new to a server that had none");
    }
}
