//! How a worker's RTP leaves.
//!
//! Each call sends from its own socket (its SDP names that port). When the
//! endpoint says the port's peer is fixed (latched, or the only address the
//! latch would take) the socket is connected to it at once, sending or not:
//! the kernel then routes once instead of per packet, and drops datagrams
//! from anyone else before they cost us a read. New media that is not
//! fixed yet (a peer behind NAT) sets it free again, so that the new peer's
//! RTP reaches the latch.
//!
//! Batching was measured, not assumed (`cargo bench --bench kernel_probe`):
//! sendmmsg batches on one socket only, so it cannot batch across calls,
//! and io_uring submitting 64 sends across the calls' sockets in one system
//! call saved no more than the run-to-run noise on loopback (the kernel's
//! per-datagram path, not the system call, is the cost). So a packet is one
//! `send` on its connected socket (`send_to` while it is not connected).
//!
//! With a core to spare (fewer workers than cores), the system calls are
//! made by a thread of its own: the worker paces its calls and hands each
//! turn's due packets over as one batch, so pacing and sending run on two
//! cores. That thread always names the address: the worker may connect or
//! free a socket while a batch waits. With a worker on every core, a second
//! busy thread per worker only makes them take turns on the cores (and
//! packets wait for the turn), so the worker sends each packet itself, at
//! once.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use crate::media::latch::RtpPeer;

/// Batches waiting for the sender at most; a sender this far behind is
/// overloaded, and newer packets are dropped (and counted) rather than
/// queued late.
const QUEUE: usize = 256;

/// A call's RTP socket, and the peer it is connected to.
pub(super) struct RtpSocket {
    socket: Arc<UdpSocket>,
    connected: Option<SocketAddr>,
}

impl RtpSocket {
    /// A socket bound for a call, not connected.
    pub(super) fn new(socket: Arc<UdpSocket>) -> Self {
        Self {
            socket,
            connected: None,
        }
    }

    /// The port's peer changed: connects the socket to it if it is fixed
    /// (never to an unspecified address, which is hold, or port 0), frees
    /// it otherwise.
    pub(super) fn set_peer(&mut self, peer: Option<RtpPeer>) {
        let target = peer
            .filter(|p| p.fixed && !p.addr.ip().is_unspecified() && p.addr.port() != 0)
            .map(|p| p.addr);
        if target == self.connected {
            return;
        }
        if let Some(to) = target {
            match self.socket.connect(to) {
                Ok(()) => {
                    self.connected = Some(to);
                    return;
                }
                Err(e) => tracing::debug!(%to, "cannot connect the RTP socket: {e}"),
            }
        }
        // Until it is free the kernel would drop the new peer's RTP. The
        // port pool binds a port by number, which a disconnect keeps (a
        // socket bound to port 0 would lose its port here).
        match rustix::net::connect_unspec(&*self.socket) {
            Ok(()) => self.connected = None,
            Err(e) => tracing::warn!("cannot free the RTP socket: {e}"),
        }
    }

    /// Reads what a send reads, so that it is in the cache by then.
    pub(super) fn warm(&self) {
        std::hint::black_box((self.socket.as_raw_fd(), self.connected));
    }

    /// Sends `packet` to `to` now; whether the kernel took it.
    fn send(&self, to: SocketAddr, packet: &[u8]) -> bool {
        let sent = if self.connected == Some(to) {
            self.socket.send(packet)
        } else {
            self.socket.send_to(packet, to)
        };
        sent.is_ok()
    }
}

/// One turn's packets: the bytes back to back, and where each goes.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    packets: Vec<(Arc<UdpSocket>, SocketAddr, usize, usize)>,
}

impl Batch {
    fn send_all(&self, failed: &AtomicU64) {
        for (socket, to, start, len) in &self.packets {
            if socket
                .send_to(&self.bytes[*start..start + len], to)
                .is_err()
            {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A worker's way out for RTP.
pub(super) struct RtpOut {
    /// The sender thread, if the worker has one, and the batch for it.
    thread: Option<(SyncSender<Batch>, Batch)>,
    /// Packets not sent: the queue was full, or the kernel refused them
    /// (a connected socket also reports so a peer's closed port, once).
    pub(super) failed: Arc<AtomicU64>,
}

impl RtpOut {
    /// Sends through a thread of its own.
    pub(super) fn thread() -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Batch>(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&failed);
        std::thread::Builder::new()
            .name("rtp-out".into())
            .spawn(move || {
                while let Ok(batch) = rx.recv() {
                    batch.send_all(&counter);
                }
            })?;
        Ok(Self {
            thread: Some((tx, Batch::default())),
            failed,
        })
    }

    /// Sends from the worker itself (non-blocking sockets: never waits).
    pub(super) fn inline() -> Self {
        Self {
            thread: None,
            failed: Arc::default(),
        }
    }

    /// Sends `packet` from `socket` to `to`, or adds it to the sender
    /// thread's next batch.
    pub(super) fn send(&mut self, socket: &RtpSocket, to: SocketAddr, packet: &[u8]) {
        let Some((_, batch)) = &mut self.thread else {
            if !socket.send(to, packet) {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        let start = batch.bytes.len();
        batch.bytes.extend_from_slice(packet);
        batch
            .packets
            .push((Arc::clone(&socket.socket), to, start, packet.len()));
    }

    /// Hands the turn's batch to the sender thread; never waits.
    pub(super) fn flush(&mut self) {
        let Some((tx, batch)) = &mut self.thread else {
            return;
        };
        if batch.packets.is_empty() {
            return;
        }
        let batch = std::mem::take(batch);
        let n = batch.packets.len() as u64;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(batch) {
            self.failed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bound() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    /// Bound by port number, as the port pool does.
    fn call_socket() -> UdpSocket {
        let mut pool = crate::server::ports::PortPool::new(41000, 41999);
        let (s, _) = pool.bind("127.0.0.1".parse().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn peer(addr: SocketAddr, fixed: bool) -> Option<RtpPeer> {
        Some(RtpPeer { addr, fixed })
    }

    #[test]
    fn a_fixed_peer_connects_the_socket_and_new_media_frees_it() {
        let ours = Arc::new(call_socket());
        let (old_peer, new_peer, stranger) = (bound(), bound(), bound());
        let mut socket = RtpSocket::new(Arc::clone(&ours));
        let old = old_peer.local_addr().unwrap();
        socket.set_peer(peer(old, true));
        assert_eq!(socket.connected, Some(old), "before any packet is sent");

        // Connected: the kernel drops a stranger's datagrams.
        stranger
            .send_to(b"noise", ours.local_addr().unwrap())
            .unwrap();
        old_peer
            .send_to(b"rtp", ours.local_addr().unwrap())
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = ours.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (3, old), "only the fixed peer gets through");
        let mut out = RtpOut::inline();
        out.send(&socket, old, b"one");
        assert_eq!(old_peer.recv(&mut buf).unwrap(), 3);

        // New media, a peer behind NAT not latched yet: free again, so
        // that the new peer's RTP reaches the latch; sent by address.
        let new = new_peer.local_addr().unwrap();
        socket.set_peer(peer(new, false));
        assert_eq!(socket.connected, None);
        new_peer
            .send_to(b"rtp!", ours.local_addr().unwrap())
            .unwrap();
        let (n, from) = ours.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (4, new));
        out.send(&socket, new, b"two");
        assert_eq!(new_peer.recv(&mut buf).unwrap(), 3);
        assert_eq!(out.failed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn hold_to_an_unspecified_address_never_connects() {
        let mut socket = RtpSocket::new(Arc::new(bound()));
        socket.set_peer(peer("0.0.0.0:6000".parse().unwrap(), true));
        assert_eq!(socket.connected, None);
        socket.set_peer(peer("127.0.0.1:0".parse().unwrap(), true));
        assert_eq!(socket.connected, None);
    }

    #[test]
    fn the_sender_thread_names_the_address_of_every_packet() {
        let (a, b) = (Arc::new(bound()), Arc::new(bound()));
        let receiver = bound();
        let to = receiver.local_addr().unwrap();
        let mut out = RtpOut::thread().unwrap();
        let (mut sa, sb) = (RtpSocket::new(a), RtpSocket::new(b));
        sa.set_peer(peer(to, true));
        out.send(&sa, to, b"connected");
        // Freed while the batch waits: its packet still has an address.
        sa.set_peer(None);
        out.send(&sb, to, b"by address");
        out.flush();
        let mut got = Vec::new();
        let mut buf = [0u8; 32];
        for _ in 0..2 {
            let n = receiver.recv(&mut buf).unwrap();
            got.push(buf[..n].to_vec());
        }
        got.sort();
        assert_eq!(got, vec![b"by address".to_vec(), b"connected".to_vec()]);
        assert_eq!(out.failed.load(Ordering::Relaxed), 0);
    }
}
