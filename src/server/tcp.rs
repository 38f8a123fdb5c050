//! SIP over TCP (RFC 3261 section 18) and over TLS (26.2) at the edge: a
//! TCP listener beside each UDP listen address, a TLS one on the TLS port,
//! each with a task per connection that cuts messages out of
//! the stream ([`StreamFramer`]) and hands each to the worker owning its
//! Call-ID, and a queue per connection that the workers write to.
//!
//! Connections are known by their remote address: a response goes back
//! over the connection its request came on, and a request to an address
//! we have a connection with reuses it (RFC 5923); with none, one is
//! opened. The network is hostile, so everything is bounded: connections
//! in all and per source address, the message size, the time a new
//! connection has to say something, the time one may stay silent, and the
//! messages waiting to be written.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::tls::Tls;
use super::Datagram;
use crate::sip::transport::framing::{Frame, StreamFramer, PONG};
use crate::sip::transport::Transport;

/// Connections at most, in all.
const MAX_CONNECTIONS: usize = 4096;
/// Of those, this many only for connections we open: peers that fill the
/// table cannot cut us off from the trunk.
const RESERVED_FOR_OURS: usize = 256;
/// Connections at most from (or to) one IP address.
const MAX_PER_ADDRESS: usize = 64;
/// The largest message taken from a stream.
const MAX_MESSAGE: usize = 64 * 1024;
/// A new connection that sends no whole message this soon is closed.
const FIRST_MESSAGE_WITHIN: Duration = Duration::from_secs(30);
/// A ping, RFC 5626 3.5.1.
const PING: &[u8] = b"\r\n\r\n";

/// How long connections may stay silent, and how often we ping those we
/// opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamTiming {
    /// A connection silent this long is closed (a long call's connection
    /// carries nothing between its INVITE and its BYE; keep-alives keep
    /// it open past this).
    pub idle: Duration,
    /// On a connection we opened, a ping this often (RFC 5626 4.4.1),
    /// which keeps NAT bindings and firewalls open and finds a dead peer:
    /// no pong within 10 s closes the connection. `None`: no pings.
    pub keepalive: Option<Duration>,
    /// How long a pong may take before the connection counts as dead
    /// (RFC 5626 4.4.1: 10 s).
    pub pong_within: Duration,
    /// How long a peer that connected to us has for the TLS handshake.
    pub handshake: Duration,
}

impl Default for StreamTiming {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(3600),
            keepalive: Some(Duration::from_secs(90)),
            pong_within: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
        }
    }
}
/// Messages waiting to be written to one connection at most: past this
/// the peer is not reading, and more are dropped (and logged).
const WRITE_QUEUE: usize = 256;
/// How long opening a connection may take (with its TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection the peer half-closed still takes our answers,
/// and how long its last queued messages get to be written.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A connection's number (a replaced one's end must not remove its
/// successor) and the queue of what to write to it.
type Writer = (u64, mpsc::Sender<Arc<[u8]>>);

/// The connections of one listen address.
#[derive(Default)]
struct Table {
    /// Where messages to an address go: the newest connection with it.
    by_addr: HashMap<SocketAddr, Writer>,
    /// Every open connection, by number, with the source key it counts
    /// against: a replaced connection still counts until it closes.
    open: HashMap<u64, IpAddr>,
    per_source: HashMap<IpAddr, usize>,
    /// The connections we opened (and, over TLS, verified): one a peer
    /// opens to us never takes over their address.
    ours: HashSet<u64>,
    /// Connections the peer has closed its side of: they still carry our
    /// responses to what came on them, but no new request (the peer will
    /// never answer it there).
    closing: HashSet<u64>,
    /// Closing connections a new one to their address has replaced: our
    /// responses to what came on them still go there (RFC 3261 18.2.2).
    replaced: HashMap<SocketAddr, Writer>,
    next_id: u64,
}

/// What a connection counts against: its IP address, or for IPv6 its /64
/// (one host commonly holds a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
    }
}

impl Table {
    /// Makes room for a connection with `addr`, within the bounds; the
    /// connection's number, the queue to it and where it is read from.
    /// One we open (`ours`) is where messages to `addr` go at once; one a
    /// peer opened only once [`Table::publish`]ed.
    fn register(
        &mut self,
        addr: SocketAddr,
        ours: bool,
    ) -> Option<(Writer, mpsc::Receiver<Arc<[u8]>>)> {
        let key = source_key(addr.ip());
        let from_source = self.per_source.get(&key).copied().unwrap_or(0);
        let room = if ours {
            MAX_CONNECTIONS
        } else {
            MAX_CONNECTIONS - RESERVED_FOR_OURS
        };
        if self.open.len() >= room || from_source >= MAX_PER_ADDRESS {
            return None;
        }
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        self.open.insert(id, key);
        *self.per_source.entry(key).or_default() += 1;
        if ours {
            self.ours.insert(id);
            self.by_addr.insert(addr, (id, tx.clone()));
        }
        Some(((id, tx), rx))
    }

    /// Makes a connection a peer opened (over TLS: once its handshake is
    /// done) where messages to its address go: a peer that reconnected
    /// takes over from its old connection, but never from one we opened,
    /// which is the one we verified.
    fn publish(&mut self, addr: SocketAddr, writer: &Writer) {
        if self
            .by_addr
            .get(&addr)
            .is_some_and(|(id, _)| self.ours.contains(id))
        {
            return;
        }
        self.by_addr.insert(addr, writer.clone());
    }

    /// The connection a message to `addr` goes on: not one the peer has
    /// closed, for a request.
    fn usable(&self, addr: SocketAddr, request: bool) -> Option<&Writer> {
        if !request {
            if let Some(w) = self.replaced.get(&addr) {
                return Some(w);
            }
        }
        self.by_addr
            .get(&addr)
            .filter(|(id, _)| !(request && self.closing.contains(id)))
    }

    /// Sets a closing connection with `addr` aside for responses, before a
    /// new one takes its place.
    fn set_aside(&mut self, addr: SocketAddr) {
        if let Some(w) = self.by_addr.get(&addr) {
            if self.closing.contains(&w.0) {
                let w = w.clone();
                self.by_addr.remove(&addr);
                self.replaced.insert(addr, w);
            }
        }
    }

    /// Forgets connection `id` with `addr`.
    fn unregister(&mut self, addr: SocketAddr, id: u64) {
        if self.by_addr.get(&addr).is_some_and(|(i, _)| *i == id) {
            self.by_addr.remove(&addr);
        }
        if self.replaced.get(&addr).is_some_and(|(i, _)| *i == id) {
            self.replaced.remove(&addr);
        }
        self.ours.remove(&id);
        self.closing.remove(&id);
        if let Some(key) = self.open.remove(&id) {
            if let Some(n) = self.per_source.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&key);
                }
            }
        }
    }
}

/// Where a message for the closed connection with `to` goes instead: a
/// response to the port of its Via's sent-by (RFC 3261 18.2.2: the
/// connection's address is an ephemeral port nobody listens on), a
/// request in a dialog to its first Route or its Request-URI (the
/// dialog's target).
/// Only ever on the same host as `to`: a Contact is a claim, and must not
/// point our connections at a third party.
fn fallback(to: SocketAddr, bytes: &[u8], default_port: u16) -> Option<SocketAddr> {
    let m = crate::sip::message::parse(bytes).ok()?;
    // A new dialog's request goes where it was sent: only a dialog's
    // messages had a connection that may have closed.
    if m.is_request() && m.to_tag().is_none() {
        return None;
    }
    let port = if m.is_request() {
        let uri = match m.headers_named("Route").next() {
            Some(route) => crate::sip::message::uri_of(route).to_string(),
            None => match &m.start {
                crate::sip::message::StartLine::Request { uri, .. } => uri.clone(),
                crate::sip::message::StartLine::Response { .. } => return None,
            },
        };
        let (host, port) = crate::sip::message::uri_host_port(&uri)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.parse::<IpAddr>().ok()? != to.ip() {
            return None;
        }
        port.unwrap_or(default_port)
    } else {
        m.top_via()?.port.unwrap_or(default_port)
    };
    let addr = SocketAddr::new(to.ip(), port);
    (addr != to).then_some(addr)
}

/// A connection we opened.
enum Connected {
    Tcp(TcpStream),
    // Boxed: a TLS stream is some 1 KB beside a TcpStream's few words.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// SIP over TCP, or over TLS, for one listen address.
pub(super) struct TcpTransport {
    table: Mutex<Table>,
    /// The listener's workers, each fed the messages of its Call-IDs.
    workers: OnceLock<Vec<mpsc::Sender<Datagram>>>,
    /// With TLS, what connections are wrapped in.
    tls: Option<Tls>,
    /// Who may connect to us (without it, anyone: tests).
    admission: OnceLock<crate::sip::admission::SharedAdmission>,
    /// TCP, or TLS.
    transport: Transport,
    timing: StreamTiming,
    /// The runtime connections run on: the one the transport was made on,
    /// not a call worker's, which sends from a runtime of its own.
    runtime: Option<tokio::runtime::Handle>,
}

impl TcpTransport {
    /// A TCP transport with no connections, whose workers come later
    /// ([`TcpTransport::set_workers`]).
    pub(super) fn new(timing: StreamTiming) -> Arc<Self> {
        Arc::new(Self {
            timing,
            table: Mutex::default(),
            workers: OnceLock::new(),
            admission: OnceLock::new(),
            tls: None,
            transport: Transport::Tcp,
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// A TLS transport: every connection, accepted or opened, is wrapped
    /// in `tls` before a byte of SIP crosses it.
    pub(super) fn tls(tls: Tls, timing: StreamTiming) -> Arc<Self> {
        Arc::new(Self {
            timing,
            table: Mutex::default(),
            workers: OnceLock::new(),
            admission: OnceLock::new(),
            tls: Some(tls),
            transport: Transport::Tls,
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Who may connect: a source admission would never take a request
    /// from is closed on at once, before any TLS handshake.
    pub(super) fn set_admission(&self, admission: crate::sip::admission::SharedAdmission) {
        let _ = self.admission.set(admission);
    }

    /// The workers that take what the connections read.
    pub(super) fn set_workers(&self, workers: Vec<mpsc::Sender<Datagram>>) {
        let _ = self.workers.set(workers);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.table().open.len()
    }

    /// Takes connections on `listener` until the server stops.
    pub(super) async fn accept(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!("SIP over {}: cannot accept: {e}", self.transport);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self
                .admission
                .get()
                .is_some_and(|a| !a.lock().may_connect(peer.ip()))
            {
                tracing::debug!(%peer, "SIP over {}: not from a trunk; closed", self.transport);
                continue;
            }
            let registered = self.table().register(peer, false);
            let Some((writer, rx)) = registered else {
                tracing::debug!(%peer, "SIP over {}: too many connections; closed", self.transport);
                continue;
            };
            let transport = Arc::clone(&self);
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let Some(tls) = &transport.tls else {
                    transport.table().publish(peer, &writer);
                    return transport.run(stream, peer, writer, rx, false).await;
                };
                // The handshake runs in the connection's own task, so a
                // slow one holds up nobody else; the connection already
                // counts against the bounds while it lasts.
                let within = transport.timing.handshake;
                let accepted = tokio::time::timeout(within, tls.acceptor.accept(stream));
                match accepted.await {
                    Ok(Ok(stream)) => {
                        transport.table().publish(peer, &writer);
                        transport.run(stream, peer, writer, rx, false).await
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, "SIP over TLS: handshake failed: {e}");
                        transport.table().unregister(peer, writer.0);
                    }
                    Err(_) => {
                        tracing::info!(%peer, "SIP over TLS: no handshake within {within:?}");
                        transport.table().unregister(peer, writer.0);
                    }
                }
            });
        }
    }

    /// Sends `bytes` to `to` over the connection with it, opening one if
    /// there is none (or its writer is gone): to `to` itself, or, if the
    /// message says where its peer listens on that host, there (see
    /// [`fallback`]). Never waits.
    pub(super) fn send(self: &Arc<Self>, to: SocketAddr, bytes: Arc<[u8]>) {
        let request = !bytes.starts_with(b"SIP/2.0 ");
        let connected = self.table().usable(to, request).is_some();
        let to = if connected {
            to
        } else {
            fallback(to, &bytes, self.transport.default_port()).unwrap_or(to)
        };
        // One lock for the lookup and the registration: two workers
        // sending to a new address at once open one connection, not two.
        // A new connection in place of a closing one takes its address;
        // the closing one ends on its own.
        let opened = {
            let mut t = self.table();
            let existing = t.usable(to, request).cloned();
            match existing {
                Some((id, tx)) => match tx.try_send(bytes) {
                    Ok(()) => return,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(%to, "SIP over {}: the peer is not reading; message dropped", self.transport);
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(bytes)) => {
                        t.unregister(to, id);
                        // A response whose connection is gone: the one now
                        // open with the peer, else a new one.
                        match t.usable(to, request).cloned() {
                            Some((_, tx)) if tx.try_send(Arc::clone(&bytes)).is_ok() => return,
                            _ => {
                                t.set_aside(to);
                                t.register(to, true).map(|r| (r, bytes))
                            }
                        }
                    }
                },
                None => {
                    t.set_aside(to);
                    t.register(to, true).map(|r| (r, bytes))
                }
            }
        };
        let Some((((id, tx), rx), bytes)) = opened else {
            tracing::warn!(%to, "SIP over {}: too many connections; message not sent", self.transport);
            return;
        };
        // Written once the connection is up.
        let _ = tx.try_send(bytes);
        let transport = Arc::clone(self);
        let connection = async move {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, transport.connect(to)).await;
            match connected {
                Ok(Ok(Connected::Tcp(stream))) => {
                    transport.run(stream, to, (id, tx), rx, true).await
                }
                Ok(Ok(Connected::Tls(stream))) => {
                    transport.run(*stream, to, (id, tx), rx, true).await
                }
                Ok(Err(e)) => {
                    tracing::warn!(%to, "SIP over {}: cannot connect: {e}", transport.transport);
                    transport.table().unregister(to, id);
                    transport.undelivered(to).await;
                }
                Err(_) => {
                    tracing::warn!(%to, "SIP over {}: no connection within {CONNECT_TIMEOUT:?}", transport.transport);
                    transport.table().unregister(to, id);
                    transport.undelivered(to).await;
                }
            }
        };
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(connection)),
            None => drop(tokio::spawn(connection)),
        }
    }

    /// Tells every worker that `to` could not be reached: which of them
    /// had requests queued for it is not known here, and this is rare.
    async fn undelivered(&self, to: SocketAddr) {
        for worker in self.workers.get().into_iter().flatten() {
            let message = Datagram {
                from: to,
                transport: self.transport,
                bytes: Vec::new(),
                undelivered: true,
            };
            let _ = worker.send(message).await;
        }
    }

    /// Opens a connection to `to`, and with TLS makes sure it is who we
    /// expect ([`Tls::name_of`]).
    async fn connect(&self, to: SocketAddr) -> std::io::Result<Connected> {
        let stream = TcpStream::connect(to).await?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => Ok(Connected::Tcp(stream)),
            Some(tls) => {
                let stream = tls.connector.connect(tls.name_of(to), stream).await?;
                Ok(Connected::Tls(Box::new(stream)))
            }
        }
    }

    /// Serves one connection until it closes, breaks its framing or falls
    /// silent; `opened` if we opened it (then it owes us nothing first).
    async fn run<S>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        (id, pongs): Writer,
        mut rx: mpsc::Receiver<Arc<[u8]>>,
        opened: bool,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let transport = self.transport;
        let mut write = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if let Err(e) = writer.write_all(&bytes).await {
                    tracing::debug!(%peer, "SIP over {transport}: write failed: {e}");
                    break;
                }
                // TLS holds what it encrypted until flushed.
                if let Err(e) = writer.flush().await {
                    tracing::debug!(%peer, "SIP over {transport}: write failed: {e}");
                    break;
                }
            }
            let _ = writer.shutdown().await;
        });
        let mut framer = StreamFramer::new(MAX_MESSAGE);
        // Small: most SIP messages fit, a bigger one takes a few reads,
        // and an idle connection holds it for hours.
        let mut buf = vec![0u8; 4 * 1024];
        // A new connection's first message is due by one deadline, not per
        // read: a byte every few seconds must not hold it open.
        let start = tokio::time::Instant::now();
        let first_by = (!opened).then(|| start + FIRST_MESSAGE_WITHIN);
        let mut heard = opened;
        let idle = self.timing.idle;
        let mut idle_by = start + idle;
        // We ping only connections we opened: the peer pings its own.
        let keepalive = self.timing.keepalive.filter(|k| opened && !k.is_zero());
        let mut ping_at = keepalive.map(|k| start + k);
        let mut pong_by: Option<tokio::time::Instant> = None;
        // Only a peer that has answered a ping is held to answering them
        // (RFC 5626 peers do; many trunks ignore the CRLFs, and their
        // connections are healthy all the same).
        let mut answers_pings = false;
        let (reason, half_closed) = loop {
            let first = first_by.filter(|_| !heard);
            let wake = [first, Some(idle_by), ping_at, pong_by]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(idle_by);
            let n = tokio::select! {
                // Data first: a read that is ready is never lost to a
                // deadline that is due at the same moment.
                biased;
                r = reader.read(&mut buf) => r,
                () = tokio::time::sleep_until(wake) => {
                    let now = tokio::time::Instant::now();
                    if first.is_some_and(|by| now >= by) {
                        break ("no message within the first 30 s".to_string(), false);
                    }
                    if now >= idle_by {
                        break (format!("silent for {idle:?}"), false);
                    }
                    if pong_by.is_some_and(|by| now >= by) {
                        if answers_pings {
                            break (format!("no pong within {:?}", self.timing.pong_within), false);
                        }
                        pong_by = None;
                    }
                    if let (Some(at), Some(every)) = (ping_at, keepalive) {
                        if now >= at {
                            if pongs.try_send(Arc::from(PING)).is_ok() {
                                pong_by.get_or_insert(now + self.timing.pong_within);
                            }
                            ping_at = Some(now + every);
                        }
                    }
                    continue;
                }
            };
            // Anything read, a pong included, shows the peer alive.
            idle_by = tokio::time::Instant::now() + idle;
            let n = match n {
                Err(e) => break (format!("read failed: {e}"), false),
                Ok(0) => break ("closed by the peer".to_string(), true),
                Ok(n) => n,
            };
            if pong_by.take().is_some()
                && buf[..n].iter().all(|b| matches!(b, b'\r' | b'\n'))
                && !answers_pings
            {
                answers_pings = true;
                tracing::info!(%peer, "SIP over {transport}: the peer answers keep-alives (RFC 5626); it is held to them");
            }
            framer.push(&buf[..n]);
            let broken = loop {
                match framer.next_frame() {
                    Ok(Some(Frame::Message(bytes))) => {
                        heard = true;
                        self.dispatch(peer, bytes).await;
                    }
                    Ok(Some(Frame::Ping)) => {
                        let _ = pongs.try_send(Arc::from(PONG));
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            if let Some(e) = broken {
                break (format!("framing broken: {e}"), false);
            }
        };
        if opened {
            // Few and long-lived (a trunk, a registrar, an ACD): worth a line
            // when one goes, unlike the many a trunk opens to us.
            tracing::info!(%peer, %reason, "SIP over {transport}: our connection closed");
        } else {
            tracing::debug!(%peer, %reason, "SIP over {transport}: connection closed");
        }
        if half_closed {
            // The peer may still read: what the workers answer to its last
            // messages (a BYE's 200) goes out before the connection ends.
            // A request meanwhile goes on a new connection: one sent here
            // would be lost without a trace (over a stream nothing
            // retransmits it), as a REGISTER to a registrar that had just
            // closed an idle connection was.
            self.table().closing.insert(id);
            tokio::time::sleep(HALF_CLOSE_GRACE).await;
        }
        self.table().unregister(peer, id);
        drop(pongs);
        // The queue's last sender is gone: the writer ends once it has
        // written what is queued, or is stopped if the peer stops reading.
        if tokio::time::timeout(HALF_CLOSE_GRACE, &mut write)
            .await
            .is_err()
        {
            write.abort();
        }
    }

    /// Hands a message to the worker owning its Call-ID. A worker that is
    /// behind makes this wait (the connection is not read meanwhile, and
    /// TCP slows the peer down): nothing retransmits a message lost over a
    /// stream.
    async fn dispatch(&self, from: SocketAddr, bytes: Vec<u8>) {
        let Some(workers) = self.workers.get() else {
            return;
        };
        let index = super::worker_for(&bytes, from, workers.len());
        let message = Datagram {
            from,
            transport: self.transport,
            bytes,
            undelivered: false,
        };
        if let Err(e) = workers[index].send(message).await {
            tracing::debug!(%from, "SIP over {}: the workers are gone: {e}", self.transport);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK1\r\nCall-ID: tcp-test\r\nContent-Length: 0\r\n\r\n";

    async fn started() -> (Arc<TcpTransport>, SocketAddr, mpsc::Receiver<Datagram>) {
        started_with(StreamTiming::default()).await
    }

    async fn started_with(
        timing: StreamTiming,
    ) -> (Arc<TcpTransport>, SocketAddr, mpsc::Receiver<Datagram>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let transport = TcpTransport::new(timing);
        let (tx, rx) = mpsc::channel(16);
        transport.set_workers(vec![tx]);
        tokio::spawn(Arc::clone(&transport).accept(listener));
        (transport, addr, rx)
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("in time")
    }

    /// Waits until the transport has forgotten every connection.
    async fn all_closed(transport: &TcpTransport) {
        within(async {
            while transport.open() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    #[tokio::test]
    async fn messages_reach_the_worker_pings_are_answered_and_replies_follow_the_connection() {
        let (transport, addr, mut rx) = started().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        within(client.read_exact(&mut pong)).await.unwrap();
        assert_eq!(&pong, b"\r\n", "a ping gets its pong");
        client.write_all(&OPTIONS[..40]).await.unwrap();
        client.write_all(&OPTIONS[40..]).await.unwrap();
        let d = within(rx.recv()).await.unwrap();
        assert_eq!((d.bytes.as_slice(), d.transport), (OPTIONS, Transport::Tcp));
        assert_eq!(d.from, client.local_addr().unwrap());
        let reply: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        transport.send(d.from, Arc::from(reply));
        let mut got = vec![0u8; reply.len()];
        within(client.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, reply, "over the request's connection");
        assert_eq!(transport.open(), 1);
        drop(client);
        all_closed(&transport).await;
    }

    #[tokio::test]
    async fn a_stream_without_content_length_is_closed() {
        let (transport, addr, _rx) = started().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(within(client.read(&mut buf)).await.unwrap(), 0, "closed");
        all_closed(&transport).await;
    }

    #[tokio::test]
    async fn connections_from_one_address_are_bounded() {
        let (transport, addr, _rx) = started().await;
        let mut clients = Vec::new();
        for _ in 0..MAX_PER_ADDRESS {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        within(async {
            while transport.open() < MAX_PER_ADDRESS {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let mut one_more = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(
            within(one_more.read(&mut buf)).await.unwrap_or(0),
            0,
            "closed at once"
        );
        assert_eq!(transport.open(), MAX_PER_ADDRESS);
    }

    #[test]
    fn a_closed_connections_messages_go_where_the_peer_listens_on_that_host() {
        let to: SocketAddr = "192.0.2.7:40123".parse().unwrap();
        let response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 192.0.2.7:5070;branch=z9hG4bK1;received=192.0.2.7\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: f\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            fallback(to, response, 5060),
            Some("192.0.2.7:5070".parse().unwrap())
        );
        let bye = |uri: &str| {
            format!("BYE {uri} SIP/2.0\r\nVia: SIP/2.0/TCP 198.51.100.1:5060;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: f\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
        };
        assert_eq!(
            fallback(
                to,
                bye("sip:phone@192.0.2.7:5062;transport=tcp").as_bytes(),
                5060
            ),
            Some("192.0.2.7:5062".parse().unwrap()),
            "the dialog's target"
        );
        assert_eq!(
            fallback(to, bye("sip:phone@203.0.113.9:5062").as_bytes(), 5060),
            None,
            "never another host"
        );
        assert_eq!(fallback(to, b"garbage", 5060), None);
        let invite = bye("sip:q@192.0.2.7:5080")
            .replace("BYE", "INVITE")
            .replace(";tag=2", "");
        assert_eq!(
            fallback(to, invite.as_bytes(), 5060),
            None,
            "not in a dialog"
        );
    }

    #[tokio::test]
    async fn a_response_after_its_connection_closed_reaches_the_via_port() {
        let (transport, _addr, _rx) = started().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let gone: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let response = format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK1;received=127.0.0.1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: f\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n");
        transport.send(gone, Arc::from(response.as_bytes()));
        let (mut conn, _) = within(listener.accept()).await.unwrap();
        let mut got = vec![0u8; response.len()];
        within(conn.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, response.as_bytes());
    }

    /// A TLS transport serving a certificate for 127.0.0.1 from `pki`,
    /// listening on loopback, its worker's queue, and where it listens.
    async fn started_tls(
        pki: &crate::server::tls::test_pki::Pki,
        file: &str,
        mutual: bool,
    ) -> (Arc<TcpTransport>, SocketAddr, mpsc::Receiver<Datagram>) {
        started_tls_as(pki, file, &["127.0.0.1"], mutual).await
    }

    /// [`started_tls`] with a certificate for `names`.
    async fn started_tls_as(
        pki: &crate::server::tls::test_pki::Pki,
        file: &str,
        names: &[&str],
        mutual: bool,
    ) -> (Arc<TcpTransport>, SocketAddr, mpsc::Receiver<Datagram>) {
        started_tls_timed(pki, file, names, mutual, StreamTiming::default()).await
    }

    /// [`started_tls_as`] with `timing`.
    async fn started_tls_timed(
        pki: &crate::server::tls::test_pki::Pki,
        file: &str,
        names: &[&str],
        mutual: bool,
        timing: StreamTiming,
    ) -> (Arc<TcpTransport>, SocketAddr, mpsc::Receiver<Datagram>) {
        let tls = Tls::load(&pki.config(file, names, mutual)).expect("tls");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let transport = TcpTransport::tls(tls, timing);
        let (tx, rx) = mpsc::channel(16);
        transport.set_workers(vec![tx]);
        tokio::spawn(Arc::clone(&transport).accept(listener));
        (transport, addr, rx)
    }

    /// A rustls client trusting `pki`'s CA, with a certificate of its own
    /// if `with_cert`.
    fn client(
        pki: &crate::server::tls::test_pki::Pki,
        with_cert: bool,
    ) -> tokio_rustls::TlsConnector {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.ca()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_cert {
            let (c, k) = pki.leaf("client", &["client.example"]);
            let chain = rustls::pki_types::CertificateDer::pem_file_iter(c)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(k).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    fn loopback() -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into())
    }

    #[tokio::test]
    async fn over_tls_messages_reach_the_worker_and_replies_follow_the_connection() {
        let pki = crate::server::tls::test_pki::Pki::new();
        let (transport, addr, mut rx) = started_tls(&pki, "server", false).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let mut client = within(client(&pki, false).connect(loopback(), tcp))
            .await
            .expect("the server's certificate is good for 127.0.0.1");
        client.write_all(&OPTIONS[..30]).await.unwrap();
        client.write_all(&OPTIONS[30..]).await.unwrap();
        client.flush().await.unwrap();
        let d = within(rx.recv()).await.unwrap();
        assert_eq!((d.bytes.as_slice(), d.transport), (OPTIONS, Transport::Tls));
        assert_eq!(d.from, local);
        let reply: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        transport.send(d.from, Arc::from(reply));
        let mut got = vec![0u8; reply.len()];
        within(client.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, reply, "over the request's connection, encrypted");
        drop(client);
        all_closed(&transport).await;
    }

    #[tokio::test]
    async fn mutual_tls_takes_only_clients_with_a_certificate_from_the_ca() {
        let pki = crate::server::tls::test_pki::Pki::new();
        let (transport, addr, mut rx) = started_tls(&pki, "server", true).await;
        // Without a certificate: refused, and nothing reaches a worker.
        let tcp = TcpStream::connect(addr).await.unwrap();
        if let Ok(mut c) = within(client(&pki, false).connect(loopback(), tcp)).await {
            // TLS 1.3 finishes the client's side before the server has
            // judged it: the refusal comes on the first read.
            let _ = c.write_all(OPTIONS).await;
            let _ = c.flush().await;
            let mut buf = [0u8; 16];
            assert!(
                !matches!(within(c.read(&mut buf)).await, Ok(n) if n > 0),
                "refused"
            );
        }
        all_closed(&transport).await;
        assert!(
            rx.try_recv().is_err(),
            "nothing from a client without a certificate"
        );
        // With one from the CA: served.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut c = within(client(&pki, true).connect(loopback(), tcp))
            .await
            .expect("handshake");
        c.write_all(OPTIONS).await.unwrap();
        c.flush().await.unwrap();
        let d = within(rx.recv()).await.unwrap();
        assert_eq!(d.transport, Transport::Tls);
    }

    #[tokio::test]
    async fn a_connection_we_open_over_tls_checks_the_servers_certificate() {
        let pki = crate::server::tls::test_pki::Pki::new();
        let (_server, server_addr, mut server_rx) = started_tls(&pki, "server", true).await;
        // Ours verifies the server (127.0.0.1, signed by the CA) and shows
        // our certificate, which the server demands.
        // (with a client certificate of its own, apart from its server one)
        let mut config = pki.config("ours", &["127.0.0.1"], false);
        let (chain, key) = pki.leaf("ours-as-client", &["client.test"]);
        (config.client_certificate, config.client_key) = (Some(chain), Some(key));
        let ours = TcpTransport::tls(Tls::load(&config).expect("tls"), StreamTiming::default());
        ours.send(server_addr, Arc::from(OPTIONS));
        let d = within(server_rx.recv()).await.unwrap();
        assert_eq!((d.bytes.as_slice(), d.transport), (OPTIONS, Transport::Tls));
        // A server whose certificate names another host is not told a
        // thing.
        let (_impostor, impostor_addr, mut impostor_rx) =
            started_tls_as(&pki, "impostor", &["sip.example.org"], false).await;
        let ours = TcpTransport::tls(
            Tls::load(&pki.config("ours1", &["127.0.0.1"], false)).expect("tls"),
            StreamTiming::default(),
        );
        ours.send(impostor_addr, Arc::from(OPTIONS));
        all_closed(&ours).await;
        assert!(
            impostor_rx.try_recv().is_err(),
            "nothing sent to the impostor"
        );
        // Unless that is the name we expect of it.
        let named = Tls::load(&pki.config("ours2", &["127.0.0.1"], false)).expect("tls");
        named.expect_name(impostor_addr, "sip.example.org").unwrap();
        let ours = TcpTransport::tls(named, StreamTiming::default());
        ours.send(impostor_addr, Arc::from(OPTIONS));
        let d = within(impostor_rx.recv()).await.unwrap();
        assert_eq!(d.bytes.as_slice(), OPTIONS);
    }

    #[test]
    fn a_connection_a_peer_opens_never_takes_over_one_we_opened() {
        let mut t = Table::default();
        let addr: SocketAddr = "192.0.2.10:5061".parse().unwrap();
        let (ours, _rx1) = t.register(addr, true).unwrap();
        assert_eq!(t.by_addr.get(&addr).map(|w| w.0), Some(ours.0));
        // Someone connects from that address: until published it gets
        // nothing, and publishing does not displace ours.
        let (theirs, _rx2) = t.register(addr, false).unwrap();
        assert_eq!(t.by_addr.get(&addr).map(|w| w.0), Some(ours.0));
        t.publish(addr, &theirs);
        assert_eq!(t.by_addr.get(&addr).map(|w| w.0), Some(ours.0));
        // Once ours is gone, a peer's published connection is used.
        t.unregister(addr, ours.0);
        t.publish(addr, &theirs);
        assert_eq!(t.by_addr.get(&addr).map(|w| w.0), Some(theirs.0));
        // A peer that reconnects takes over from its own old connection.
        let (again, _rx3) = t.register(addr, false).unwrap();
        t.publish(addr, &again);
        assert_eq!(t.by_addr.get(&addr).map(|w| w.0), Some(again.0));
    }

    #[tokio::test]
    async fn a_source_no_trunk_has_is_closed_on_before_anything() {
        let (transport, addr, mut rx) = started().await;
        let mut admission = crate::sip::admission::AdmissionConfig::default();
        admission.trunks = crate::sip::admission::AdmissionConfig::loopback_only().trunks;
        admission.trunks[0].sources =
            crate::sip::admission::Networks::new(vec!["192.0.2.0/24".parse().unwrap()]);
        transport.set_admission(crate::sip::admission::SharedAdmission::new(
            crate::sip::admission::Admission::new(admission, [0; 16]),
        ));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let _ = client.write_all(OPTIONS).await;
        let mut buf = [0u8; 4];
        assert_eq!(
            within(client.read(&mut buf)).await.unwrap_or(0),
            0,
            "closed at once"
        );
        assert_eq!(transport.open(), 0, "never counted");
        assert!(rx.try_recv().is_err(), "nothing read");
    }

    #[test]
    fn peers_cannot_take_the_slots_kept_for_connections_we_open() {
        let mut t = Table::default();
        for n in 0..(MAX_CONNECTIONS - RESERVED_FOR_OURS) {
            let ip = IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
            assert!(t.register(SocketAddr::new(ip, 5060), false).is_some());
        }
        let late: SocketAddr = "198.51.100.1:5060".parse().unwrap();
        assert!(t.register(late, false).is_none(), "peers are full");
        assert!(t.register(late, true).is_some(), "ours still fit");
    }

    #[tokio::test]
    async fn a_request_after_the_server_closed_our_connection_goes_on_a_new_one() {
        let (transport, _, _rx) = started().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        transport.send(server, Arc::from(OPTIONS));
        let (mut first, _) = within(listener.accept()).await.unwrap();
        let mut got = vec![0u8; OPTIONS.len()];
        within(first.read_exact(&mut got)).await.unwrap();
        // The server closes an idle connection, as registrars do.
        first.shutdown().await.unwrap();
        within(async {
            while !transport.table().closing.iter().any(|_| true) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        // Still in its grace period, the old connection takes no request.
        transport.send(server, Arc::from(OPTIONS));
        let (mut second, _) = within(listener.accept()).await.unwrap();
        within(second.read_exact(&mut got)).await.unwrap();
        assert_eq!(got, OPTIONS);
        // A response (to what the server sent on the old one before it
        // closed) still goes there, and only there.
        let reply: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        transport.send(server, Arc::from(reply));
        let mut rest = Vec::new();
        within(first.read_to_end(&mut rest)).await.unwrap();
        assert_eq!(
            rest, reply,
            "the response, and no request, on the closed one"
        );
        let mut more = [0u8; 1];
        let nothing =
            tokio::time::timeout(Duration::from_millis(300), second.read(&mut more)).await;
        assert!(nothing.is_err(), "nothing else on the new one");
    }

    #[tokio::test]
    async fn we_ping_connections_we_opened_and_pongs_keep_them_open() {
        let timing = StreamTiming {
            idle: Duration::from_secs(60),
            keepalive: Some(Duration::from_millis(200)),
            pong_within: Duration::from_millis(300),
            ..StreamTiming::default()
        };
        let (transport, _, _rx) = started_with(timing).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        transport.send(listener.local_addr().unwrap(), Arc::from(OPTIONS));
        let (mut peer, _) = within(listener.accept()).await.unwrap();
        let mut got = vec![0u8; OPTIONS.len()];
        within(peer.read_exact(&mut got)).await.unwrap();
        for _ in 0..3 {
            let mut ping = [0u8; 4];
            within(peer.read_exact(&mut ping)).await.unwrap();
            assert_eq!(&ping, PING);
            peer.write_all(PONG).await.unwrap();
        }
        assert_eq!(transport.open(), 1, "answered pings keep it open");
        // A peer that stops answering is given up on.
        let mut ping = [0u8; 4];
        within(peer.read_exact(&mut ping)).await.unwrap();
        all_closed(&transport).await;
    }

    #[tokio::test]
    async fn a_peer_that_ignores_pings_keeps_its_connection() {
        let timing = StreamTiming {
            idle: Duration::from_secs(60),
            keepalive: Some(Duration::from_millis(100)),
            pong_within: Duration::from_millis(100),
            ..StreamTiming::default()
        };
        let (transport, _, _rx) = started_with(timing).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        transport.send(listener.local_addr().unwrap(), Arc::from(OPTIONS));
        let (mut peer, _) = within(listener.accept()).await.unwrap();
        let mut got = vec![0u8; OPTIONS.len() + 3 * PING.len()];
        within(peer.read_exact(&mut got)).await.unwrap();
        assert!(got.ends_with(PING), "pinged, unanswered");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(transport.open(), 1, "never answering is no sign of death");
    }

    #[tokio::test]
    async fn a_connection_silent_past_the_idle_timeout_is_closed() {
        let timing = StreamTiming {
            idle: Duration::from_millis(300),
            keepalive: None,
            ..StreamTiming::default()
        };
        let (transport, addr, mut rx) = started_with(timing).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(OPTIONS).await.unwrap();
        within(rx.recv()).await.unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(within(client.read(&mut buf)).await.unwrap(), 0, "closed");
        all_closed(&transport).await;
    }

    #[tokio::test]
    async fn a_tls_peer_that_never_finishes_its_handshake_is_closed_on() {
        let pki = crate::server::tls::test_pki::Pki::new();
        let timing = StreamTiming {
            handshake: Duration::from_millis(300),
            ..StreamTiming::default()
        };
        let (transport, addr, _rx) =
            started_tls_timed(&pki, "server", &["127.0.0.1"], false, timing).await;
        // Connects, and sends nothing (no ClientHello).
        let mut silent = TcpStream::connect(addr).await.unwrap();
        within(async {
            while transport.open() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let mut buf = [0u8; 4];
        assert_eq!(
            within(silent.read(&mut buf)).await.unwrap_or(0),
            0,
            "closed"
        );
        all_closed(&transport).await;
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
    }
}
