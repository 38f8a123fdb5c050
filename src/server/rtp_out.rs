//! How a worker's RTP leaves.
//!
//! Each call sends from its own socket (its SDP names that port), and once
//! the peer's address is fixed (latched, or the only one the latch would
//! take) the socket is connected to it: the kernel
//! then routes once instead of per packet, and drops datagrams from anyone
//! else before they cost us a read. New media (a re-INVITE elsewhere) sets
//! it free again, so the new peer can be latched.
//!
//! Batching was measured, not assumed (`cargo bench --bench kernel_probe`):
//! sendmmsg batches on one socket only, so it cannot batch across calls,
//! and io_uring submitting 64 sends across the calls' sockets in one system
//! call saved no more than the run-to-run noise on loopback (the kernel's
//! per-datagram path, not the system call, is the cost). So a packet is one
//! `send` on its connected socket.
//!
//! With a core to spare (fewer workers than cores), the system calls are
//! made by a thread of its own: the worker paces its calls and hands each
//! turn's due packets over as one batch, so pacing and sending run on two
//! cores. With a worker on every core, a second busy thread per worker only
//! makes them take turns on the cores (and packets wait for the turn), so
//! the worker sends each packet itself, at once.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

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

    /// Points the socket at `to`, connecting it if `to` is fixed and
    /// freeing it if not; whether a packet may go by plain `send`.
    fn aim(&mut self, to: SocketAddr, fixed: bool) -> bool {
        if fixed {
            if self.connected != Some(to) {
                match self.socket.connect(to) {
                    Ok(()) => self.connected = Some(to),
                    Err(e) => {
                        tracing::debug!(%to, "cannot connect the RTP socket: {e}");
                        return false;
                    }
                }
            }
            return true;
        }
        if self.connected.is_some() {
            // Until it is free the kernel would drop the new peer's RTP.
            match rustix::net::connect_unspec(&*self.socket) {
                Ok(()) => self.connected = None,
                Err(e) => tracing::debug!("cannot free the RTP socket: {e}"),
            }
        }
        false
    }

    /// Sends `packet` to `to` now; whether the kernel took it.
    fn send(&mut self, to: SocketAddr, fixed: bool, packet: &[u8]) -> bool {
        let sent = if self.aim(to, fixed) {
            self.socket.send(packet)
        } else {
            self.socket.send_to(packet, to)
        };
        sent.is_ok()
    }
}

/// One turn's packets: the bytes back to back, and where each goes (no
/// address: on the socket's connected peer).
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    packets: Vec<(Arc<UdpSocket>, Option<SocketAddr>, usize, usize)>,
}

impl Batch {
    fn send_all(&self, failed: &AtomicU64) {
        for (socket, to, start, len) in &self.packets {
            let packet = &self.bytes[*start..start + len];
            let sent = match to {
                Some(to) => socket.send_to(packet, to),
                None => socket.send(packet),
            };
            if sent.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A worker's way out for RTP.
pub(super) struct RtpOut {
    /// The sender thread, if the worker has one, and the batch for it.
    thread: Option<(SyncSender<Batch>, Batch)>,
    /// Packets dropped: the queue was full, or the kernel refused them.
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

    /// Sends `packet` from `socket` to `to` (connected to it if `fixed`),
    /// or adds it to the sender thread's next batch.
    pub(super) fn send(
        &mut self,
        socket: &mut RtpSocket,
        to: SocketAddr,
        fixed: bool,
        packet: &[u8],
    ) {
        let Some((_, batch)) = &mut self.thread else {
            if !socket.send(to, fixed, packet) {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        // The connection is made here, on the worker, which owns it; a
        // packet in flight when it changes goes to the new peer, which
        // was negotiated too.
        let to = (!socket.aim(to, fixed)).then_some(to);
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

    #[test]
    fn a_fixed_peer_connects_the_socket_and_new_media_frees_it() {
        let ours = Arc::new(bound());
        let (old_peer, new_peer, stranger) = (bound(), bound(), bound());
        let mut socket = RtpSocket::new(Arc::clone(&ours));
        let mut out = RtpOut::inline();
        let old = old_peer.local_addr().unwrap();
        out.send(&mut socket, old, true, b"one");
        assert_eq!(socket.connected, Some(old));
        let mut buf = [0u8; 16];
        assert_eq!(old_peer.recv(&mut buf).unwrap(), 3);

        // Connected: the kernel drops a stranger's datagrams.
        stranger
            .send_to(b"noise", ours.local_addr().unwrap())
            .unwrap();
        old_peer
            .send_to(b"rtp", ours.local_addr().unwrap())
            .unwrap();
        let (n, from) = ours.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (3, old), "only the latched peer gets through");

        // New media, a peer behind NAT not latched yet: sent by address,
        // and free again so that the new peer's RTP reaches the latch.
        let new = new_peer.local_addr().unwrap();
        out.send(&mut socket, new, false, b"two");
        assert_eq!(socket.connected, None);
        assert_eq!(new_peer.recv(&mut buf).unwrap(), 3);
        new_peer
            .send_to(b"rtp!", ours.local_addr().unwrap())
            .unwrap();
        let (n, from) = ours.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (4, new));
        assert_eq!(out.failed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_sender_thread_sends_each_batch_on_connected_and_free_sockets() {
        let (a, b) = (Arc::new(bound()), Arc::new(bound()));
        let peer = bound();
        let to = peer.local_addr().unwrap();
        let mut out = RtpOut::thread().unwrap();
        let (mut sa, mut sb) = (RtpSocket::new(a), RtpSocket::new(b));
        out.send(&mut sa, to, true, b"latched");
        out.send(&mut sb, to, false, b"by address");
        out.flush();
        let mut got = Vec::new();
        let mut buf = [0u8; 32];
        for _ in 0..2 {
            let n = peer.recv(&mut buf).unwrap();
            got.push(buf[..n].to_vec());
        }
        got.sort();
        assert_eq!(got, vec![b"by address".to_vec(), b"latched".to_vec()]);
        assert_eq!(sa.connected, Some(to));
        assert_eq!(sb.connected, None);
    }
}
