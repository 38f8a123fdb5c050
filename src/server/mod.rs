//! `callflow serve`: the tokio edge. One task owns the SIP socket and the
//! [`UserAgent`]; each call runs in a task of its own with its RTP socket.
//! The protocol and flow logic stay in the pure core; this module only
//! moves bytes, reads the clock and handles signals.

mod call_task;
mod cdr;
pub mod config;
mod ports;
pub mod runtime;
pub mod stats;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::call::{Call, CallCommand, CallSetup};
use crate::sip::sdp::{self, LocalMedia};
use crate::sip::ua::{CallHandle, IncomingCall, UaConfig, UaEvent, UaOutput, UserAgent};
pub use call_task::ToCall;
pub use cdr::RecordSink;
use config::ServerConfig;
use ports::PortPool;
use runtime::Runtime;
use stats::MediaStats;

/// What call tasks tell the SIP task.
#[derive(Debug)]
pub enum ToSip {
    /// A SIP command for the call.
    Command(CallHandle, CallCommand),
    /// The call task ended; its RTP port is free again.
    Done(CallHandle, u16),
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
fn now() -> Instant {
    Instant::now()
}

struct Server {
    config: ServerConfig,
    runtime: Arc<Runtime>,
    ua: UserAgent,
    socket: Arc<UdpSocket>,
    rtp_ip: IpAddr,
    ports: PortPool,
    calls: HashMap<CallHandle, mpsc::UnboundedSender<ToCall>>,
    /// Calls that ring until their answer time.
    ringing: Vec<(Instant, Prepared, tracing::Span)>,
    /// Calls whose task ended while the dialog lingers (e.g. BYE in flight).
    to_sip: mpsc::UnboundedSender<ToSip>,
    records: RecordSink,
    stats: Arc<MediaStats>,
}

/// Runs the server until SIGTERM/SIGINT and the drain are over.
pub async fn serve(config: ServerConfig) -> Result<(), ServeError> {
    let (first, last) = config.rtp_port_range()?;
    let runtime = Runtime::load(&config.flows, &config.prompts)?;
    if runtime.entry(&config.default_flow).is_none() {
        return Err(ServeError::Io(format!(
            "the default flow `{}` is not among the flows in {}; set default_flow",
            config.default_flow,
            config.flows.display()
        )));
    }
    for (number, flow) in &config.routes {
        if runtime.entry(flow).is_none() {
            return Err(ServeError::Io(format!(
                "route {number} names flow `{flow}`, which is not loaded"
            )));
        }
    }
    let socket = UdpSocket::bind(config.listen)
        .await
        .map_err(|e| ServeError::Io(format!("cannot listen on {}: {e}", config.listen)))?;
    let (records, _writer) = RecordSink::start(config.call_records.clone()).map_err(|e| {
        ServeError::Io(format!(
            "cannot open {}: {e}",
            config.call_records.display()
        ))
    })?;
    let mut ua_config = UaConfig::new(config.advertised());
    ua_config.transfer_timeout = config.transfer_timeout.0;
    let rtp_ip = config.rtp_address.unwrap_or(config.advertised().ip());
    let (to_sip, mut from_calls) = mpsc::unbounded_channel();
    let mut server = Server {
        ua: UserAgent::new(ua_config),
        runtime: Arc::new(runtime),
        socket: Arc::new(socket),
        rtp_ip,
        ports: PortPool::new(first, last),
        calls: HashMap::new(),
        ringing: Vec::new(),
        to_sip,
        records,
        stats: Arc::new(MediaStats::default()),
        config,
    };
    tracing::info!(
        listen = %server.config.listen, flows = server.runtime.flows.flows.len(),
        rtp = %server.config.rtp_ports, "callflow is taking calls"
    );

    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| ServeError::Io(e.to_string()))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| ServeError::Io(e.to_string()))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| ServeError::Io(e.to_string()))?;
    let mut buf = vec![0u8; 65536];
    let mut drain_until: Option<Instant> = None;
    let mut shutdown_sent = false;
    let mut stats_tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        if let Some(until) = drain_until {
            if server.calls.is_empty() && server.ua.active_calls() == 0 {
                break;
            }
            if now() >= until && !shutdown_sent {
                tracing::info!(
                    calls = server.calls.len(),
                    "drain time is over; ending the remaining calls"
                );
                for tx in server.calls.values() {
                    let _ = tx.send(ToCall::Shutdown);
                }
                shutdown_sent = true;
            }
            // BYEs get a few seconds to be answered, then we go regardless.
            if now() >= until + Duration::from_secs(5) {
                break;
            }
        }
        let timeout = [server.ua.poll_timeout(), drain_until]
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
            _ = terminate.recv() => drain_until = Some(server.start_drain()),
            _ = interrupt.recv() => drain_until = Some(server.start_drain()),
            _ = hangup.recv() => server.reload().await,
            _ = stats_tick.tick() => {
                if !server.calls.is_empty() {
                    tracing::info!(calls = server.calls.len(), media = %server.stats.summary(), "status");
                }
            }
        }
        server.flush().await;
    }
    tracing::info!(media = %server.stats.summary(), "callflow stopped");
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

impl Server {
    fn start_drain(&mut self) -> Instant {
        tracing::info!(calls = self.calls.len(), drain = %self.config.drain, "stopping: no new calls, draining");
        self.ua.set_accepting(false);
        now() + self.config.drain.0
    }

    async fn reload(&mut self) {
        let (flows, prompts) = (self.config.flows.clone(), self.config.prompts.clone());
        match tokio::task::spawn_blocking(move || Runtime::load(&flows, &prompts)).await {
            Ok(Ok(runtime)) if runtime.entry(&self.config.default_flow).is_some() => {
                tracing::info!(flows = runtime.flows.flows.len(), "flows reloaded");
                self.runtime = Arc::new(runtime);
            }
            Ok(Ok(_)) => {
                tracing::error!(flow = %self.config.default_flow, "reload refused: the default flow is gone; keeping the last good flows")
            }
            Ok(Err(e)) => tracing::error!("reload refused, keeping the last good flows: {e}"),
            Err(e) => tracing::error!("reload failed: {e}"),
        }
    }

    fn on_call_message(&mut self, msg: ToSip) {
        let t = now();
        match msg {
            ToSip::Command(call, CallCommand::Refer(target)) => self.ua.refer(t, call, &target),
            ToSip::Command(call, CallCommand::Hangup) => self.ua.hangup(t, call),
            ToSip::Done(call, port) => {
                self.calls.remove(&call);
                self.ports.release(port);
            }
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
                    self.on_incoming(call, incoming)
                }
                UaOutput::Event(call, UaEvent::Ended(reason))
                    if !self.calls.contains_key(&call) =>
                {
                    tracing::debug!(?reason, "a call ended before it was answered");
                    self.drop_ringing(call);
                }
                UaOutput::Event(call, event) => {
                    if let Some(tx) = self.calls.get(&call) {
                        let _ = tx.send(ToCall::Sip(event));
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
        if self.config.answer_delay.0.is_zero() {
            self.start_call(t, prepared, span);
        } else {
            self.ua.ring(t, handle);
            self.ringing
                .push((t + self.config.answer_delay.0, prepared, span));
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
        let flow = self.config.flow_for(&incoming.called).to_string();
        let Some(entry) = self.runtime.entry(&flow) else {
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
        let Some((std_socket, port)) = self.ports.bind(self.rtp_ip) else {
            tracing::warn!("no free RTP port");
            self.ua.reject(
                t,
                handle,
                503,
                "Service Unavailable",
                &[("Retry-After", "5")],
            );
            return None;
        };
        let local = LocalMedia {
            addr: self.rtp_ip,
            port,
            session_id: fastrand::u64(1..u64::MAX / 2),
            session_version: 1,
        };
        let (body, negotiated) = match &offer {
            Some(o) => match sdp::answer(o, &local) {
                Ok((text, n)) => (text, Some(n)),
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
                    self.ports.release(port);
                    return None;
                }
            },
            None => (sdp::offer(&local), None),
        };
        let socket = match std_socket
            .set_nonblocking(true)
            .and_then(|_| UdpSocket::from_std(std_socket))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("RTP socket: {e}");
                self.ua.reject(t, handle, 503, "Service Unavailable", &[]);
                self.ports.release(port);
                return None;
            }
        };
        let mut call = Call::new(CallSetup {
            incoming,
            flows: Arc::clone(&self.runtime.flows),
            prompts: Arc::clone(&self.runtime.prompts),
            entry,
            started: t,
            started_wall: wall_now(),
            rtp_seed: (fastrand::u32(..), fastrand::u16(..), fastrand::u32(..)),
            rtp_timeout: self.config.rtp_timeout.0,
        });
        if let Some(n) = negotiated {
            call.set_media(n);
        }
        Some(Prepared {
            handle,
            call,
            socket,
            port,
            local,
            body,
            offer_in_2xx: offer.is_none(),
        })
    }

    /// Answers a prepared call and starts its task.
    fn start_call(&mut self, t: Instant, p: Prepared, span: tracing::Span) {
        let Prepared {
            handle,
            mut call,
            socket,
            port,
            local,
            body,
            offer_in_2xx,
        } = p;
        if !self
            .ua
            .accept(t, handle, local, body.as_bytes(), offer_in_2xx)
        {
            self.ports.release(port);
            return;
        }
        call.on_answered(t);
        let (tx, rx) = mpsc::unbounded_channel();
        self.calls.insert(handle, tx);
        let task = call_task::run(
            handle,
            call,
            socket,
            port,
            rx,
            self.to_sip.clone(),
            self.records.clone(),
            Arc::clone(&self.stats),
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

    /// A ringing call was cancelled: forget it and free its port.
    fn drop_ringing(&mut self, call: CallHandle) {
        if let Some(i) = self.ringing.iter().position(|(_, p, _)| p.handle == call) {
            let (_, p, _) = self.ringing.remove(i);
            self.ports.release(p.port);
        }
    }
}

/// A call routed and negotiated, not yet answered.
struct Prepared {
    handle: CallHandle,
    call: Call,
    socket: UdpSocket,
    port: u16,
    local: LocalMedia,
    body: String,
    offer_in_2xx: bool,
}

/// The wall clock, read at the IO edge only.
#[allow(clippy::disallowed_methods)]
fn wall_now() -> chrono::DateTime<Utc> {
    Utc::now()
}
