//! SIP over TCP (RFC 3261 section 18) at the edge: a listener beside each
//! UDP listen address, a task per connection that cuts messages out of
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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::Datagram;
use crate::sip::transport::framing::{Frame, StreamFramer, PONG};
use crate::sip::transport::Transport;

/// Connections at most, in all.
const MAX_CONNECTIONS: usize = 4096;
/// Connections at most from (or to) one IP address.
const MAX_PER_ADDRESS: usize = 64;
/// The largest message taken from a stream.
const MAX_MESSAGE: usize = 64 * 1024;
/// A new connection that sends no whole message this soon is closed.
const FIRST_MESSAGE_WITHIN: Duration = Duration::from_secs(30);
/// A connection silent this long is closed (a long call's connection
/// carries nothing between its INVITE and its BYE; keep-alives, RFC 5626,
/// keep a peer's connection open past this).
const IDLE: Duration = Duration::from_secs(3600);
/// Messages waiting to be written to one connection at most: past this
/// the peer is not reading, and more are dropped (and logged).
const WRITE_QUEUE: usize = 256;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection's number (a replaced one's end must not remove its
/// successor) and the queue of what to write to it.
type Writer = (u64, mpsc::Sender<Arc<[u8]>>);

/// The connections of one listen address.
#[derive(Default)]
struct Table {
    by_addr: HashMap<SocketAddr, Writer>,
    per_ip: HashMap<IpAddr, usize>,
    next_id: u64,
}

/// SIP over TCP for one listen address.
pub(super) struct TcpTransport {
    table: Mutex<Table>,
    /// The listener's workers, each fed the messages of its Call-IDs.
    workers: OnceLock<Vec<mpsc::Sender<Datagram>>>,
}

impl TcpTransport {
    /// A transport with no connections, whose workers come later
    /// ([`TcpTransport::set_workers`]).
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::default(),
            workers: OnceLock::new(),
        })
    }

    /// The workers that take what the connections read.
    pub(super) fn set_workers(&self, workers: Vec<mpsc::Sender<Datagram>>) {
        let _ = self.workers.set(workers);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes connections on `listener` until the server stops.
    pub(super) async fn accept(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!("SIP over TCP: cannot accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some((id, rx)) = self.register(peer) else {
                tracing::debug!(%peer, "SIP over TCP: too many connections; closed");
                continue;
            };
            tokio::spawn(Arc::clone(&self).run(stream, peer, id, rx, false));
        }
    }

    /// Sends `bytes` to `to` over the connection with it, opening one if
    /// there is none. Never waits.
    pub(super) fn send(self: &Arc<Self>, to: SocketAddr, bytes: Arc<[u8]>) {
        let existing = self.table().by_addr.get(&to).map(|(_, tx)| tx.clone());
        if let Some(tx) = existing {
            if let Err(e) = tx.try_send(bytes) {
                tracing::warn!(%to, "SIP over TCP: message not sent: {e}");
            }
            return;
        }
        let Some((id, rx)) = self.register(to) else {
            tracing::warn!(%to, "SIP over TCP: too many connections; message not sent");
            return;
        };
        let tx = self.table().by_addr.get(&to).map(|(_, tx)| tx.clone());
        if let Some(tx) = tx {
            // Written once the connection is up.
            let _ = tx.try_send(bytes);
        }
        let transport = Arc::clone(self);
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
                Ok(Ok(stream)) => transport.run(stream, to, id, rx, true).await,
                Ok(Err(e)) => {
                    tracing::warn!(%to, "SIP over TCP: cannot connect: {e}");
                    transport.unregister(to, id);
                }
                Err(_) => {
                    tracing::warn!(%to, "SIP over TCP: no connection within {CONNECT_TIMEOUT:?}");
                    transport.unregister(to, id);
                }
            }
        });
    }

    /// Makes room for a connection with `addr`, within the bounds.
    fn register(&self, addr: SocketAddr) -> Option<(u64, mpsc::Receiver<Arc<[u8]>>)> {
        let mut t = self.table();
        let from_ip = t.per_ip.get(&addr.ip()).copied().unwrap_or(0);
        if t.by_addr.len() >= MAX_CONNECTIONS || from_ip >= MAX_PER_ADDRESS {
            return None;
        }
        t.next_id += 1;
        let id = t.next_id;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        // A second connection from the same address (a peer that
        // reconnected) takes over its responses.
        if let Some((old, _)) = t.by_addr.insert(addr, (id, tx)) {
            tracing::debug!(%addr, old, "SIP over TCP: connection replaced");
        } else {
            *t.per_ip.entry(addr.ip()).or_default() += 1;
        }
        Some((id, rx))
    }

    /// Forgets connection `id` with `addr`, unless another replaced it.
    fn unregister(&self, addr: SocketAddr, id: u64) {
        let mut t = self.table();
        if t.by_addr.get(&addr).is_some_and(|(i, _)| *i == id) {
            t.by_addr.remove(&addr);
            if let Some(n) = t.per_ip.get_mut(&addr.ip()) {
                *n -= 1;
                if *n == 0 {
                    t.per_ip.remove(&addr.ip());
                }
            }
        }
    }

    /// Serves one connection until it closes, breaks its framing or falls
    /// silent; `opened` if we opened it (then it owes us nothing first).
    async fn run(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        id: u64,
        mut rx: mpsc::Receiver<Arc<[u8]>>,
        opened: bool,
    ) {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let pongs = self
            .table()
            .by_addr
            .get(&peer)
            .filter(|(i, _)| *i == id)
            .map(|(_, tx)| tx.clone());
        let write = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if let Err(e) = writer.write_all(&bytes).await {
                    tracing::debug!(%peer, "SIP over TCP: write failed: {e}");
                    break;
                }
            }
            let _ = writer.shutdown().await;
        });
        let mut framer = StreamFramer::new(MAX_MESSAGE);
        let mut buf = vec![0u8; 16 * 1024];
        let mut heard = opened;
        let reason = loop {
            let limit = if heard { IDLE } else { FIRST_MESSAGE_WITHIN };
            let n = match tokio::time::timeout(limit, reader.read(&mut buf)).await {
                Err(_) => break format!("silent for {limit:?}"),
                Ok(Err(e)) => break format!("read failed: {e}"),
                Ok(Ok(0)) => break "closed by the peer".to_string(),
                Ok(Ok(n)) => n,
            };
            framer.push(&buf[..n]);
            let broken = loop {
                match framer.next_frame() {
                    Ok(Some(Frame::Message(bytes))) => {
                        heard = true;
                        self.dispatch(peer, bytes);
                    }
                    Ok(Some(Frame::Ping)) => {
                        if let Some(tx) = &pongs {
                            let _ = tx.try_send(Arc::from(PONG));
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            if let Some(e) = broken {
                break format!("framing broken: {e}");
            }
        };
        tracing::debug!(%peer, %reason, "SIP over TCP: connection closed");
        self.unregister(peer, id);
        drop(pongs);
        write.abort();
    }

    /// Hands a message to the worker owning its Call-ID.
    fn dispatch(&self, from: SocketAddr, bytes: Vec<u8>) {
        let Some(workers) = self.workers.get() else {
            return;
        };
        let index = super::worker_for(&bytes, from, workers.len());
        let message = Datagram {
            from,
            transport: Transport::Tcp,
            bytes,
        };
        if let Err(e) = workers[index].try_send(message) {
            tracing::warn!(%from, "SIP over TCP: a call worker is behind: message dropped: {e}");
        }
    }
}
