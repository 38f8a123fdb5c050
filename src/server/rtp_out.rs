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
//! Batching was measured, not assumed (`cargo bench --bench kernel_probe`,
//! then the load benchmark): sendmmsg batches on one socket only, so it
//! cannot batch across calls. io_uring can, and once the send is taken
//! the same as `send` it saves the system call's own cost: on the 2-core
//! AMD EPYC machine, 2.43-2.61 µs of CPU per packet through the ring
//! against 2.74-2.98 µs for one `send` each (11-12% less, three probe
//! runs). So a worker that sends its own packets queues each turn's sends
//! on connected sockets and submits them together (256 to a system call),
//! with `MSG_DONTWAIT` so that a full socket fails its send rather than
//! parking it. The ring also holds each call's socket in its table of
//! fixed files from the moment the call opens it, and a send names the
//! slot: the kernel then takes no reference to the socket's file per send,
//! and the worker reads nothing but the port table's entry to find it.
//! At 4,000 calls the server used 4% less CPU with it (ten alternated
//! pairs of the load benchmark, lower in eight). The kernel's first touch
//! of each socket's file is still a cache miss, now in `sock_from_file`
//! rather than `fget`: what it spares is the reference count's two
//! atomic writes, and our own read of the socket's `Arc`. The table has a
//! slot for every port of the pool, and the kernel refuses one larger
//! than the open-files limit: below the range's size, sends name fds. Sends by
//! address (a peer not fixed yet) stay one `send_to` each: they are few,
//! and the ring would need an address kept alive per packet. Where
//! io_uring cannot be had (an old kernel, a seccomp filter that refuses
//! it with an error) every packet is one system call, and so
//! from the turn the ring fails, if it ever does.
//!
//! With a core to spare (fewer workers than cores), the system calls are
//! made by a thread of its own: the worker paces its calls and hands each
//! turn's due packets over as one batch, so pacing and sending run on two
//! cores. That thread always names the address: the worker may connect or
//! free a socket while a batch waits. With a worker on every core, a second
//! busy thread per worker only makes them take turns on the cores (and
//! packets wait for the turn), so the worker sends its packets itself, at
//! the end of the turn that made them due.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::ports::PortTable;
use crate::call::endpoint::RtpTransmit;
use crate::media::latch::RtpPeer;

/// Batches waiting for the sender at most; a sender this far behind is
/// overloaded, and newer packets are dropped (and counted) rather than
/// queued late.
const QUEUE: usize = 256;

/// A call's RTP socket, and the peer it is connected to.
pub(super) struct RtpSocket {
    socket: Arc<UdpSocket>,
    connected: Option<SocketAddr>,
    /// Its slot in the send ring's table of fixed files, if it is in it.
    slot: Option<u32>,
}

impl RtpSocket {
    /// A socket bound for a call, not connected.
    pub(super) fn new(socket: Arc<UdpSocket>) -> Self {
        Self {
            socket,
            connected: None,
            slot: None,
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

/// Sends submitted in one system call at most (then their completions
/// are reaped before the next ring-full).
const RING: u32 = 256;

/// How a worker that sends its own RTP makes the system calls.
enum Inline {
    /// Not tried yet: the ring is made on the worker's own thread, the
    /// only one to submit to it.
    Untried,
    /// A turn's sends on connected sockets in one submission, each socket
    /// named by its slot in the ring's table of fixed files where it has
    /// one: the kernel then takes no reference to its file per send, and
    /// we read no more than the port table's entry to find it (4% less
    /// CPU at 4,000 calls; see the module's documentation).
    Ring(Box<send_ring::SendRing>),
    /// One system call per packet.
    Direct,
}

/// A worker's way out for RTP.
pub(super) struct RtpOut {
    /// The sender thread, if the worker has one, and the batch for it.
    thread: Option<(SyncSender<Batch>, Batch)>,
    /// How the worker sends when it has no sender thread.
    inline: Inline,
    /// Packets not sent: the queue was full, or the kernel refused them
    /// (a connected socket also reports so a peer's closed port, once),
    /// or the ring failed with them in it.
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
            inline: Inline::Direct,
            failed,
        })
    }

    /// Sends from the worker itself (non-blocking sockets: never waits),
    /// through io_uring where the kernel allows it.
    pub(super) fn inline() -> Self {
        Self {
            thread: None,
            inline: Inline::Untried,
            failed: Arc::default(),
        }
    }

    /// Sends from the worker itself, one system call per packet.
    #[cfg(test)]
    fn direct() -> Self {
        Self {
            inline: Inline::Direct,
            ..Self::inline()
        }
    }

    /// Sends a turn's packets, each from its port's socket in `sockets`
    /// (a port with none is skipped), or hands them to the sender thread;
    /// never waits for a socket. `sent` hears of each packet that had a
    /// socket, with how late it was.
    pub(super) fn send_turn<'a, I>(
        &mut self,
        sockets: &'a PortTable<RtpSocket>,
        packets: I,
        sent: impl FnMut(Duration),
    ) where
        I: Iterator<Item = RtpTransmit<'a>> + Clone,
    {
        if self.thread.is_some() {
            return self.hand_to_thread(sockets, packets, sent);
        }
        self.ring(sockets.capacity());
        if let Inline::Ring(ring) = &mut self.inline {
            if let Err(e) = send_by_ring(ring, &self.failed, sockets, packets, sent) {
                tracing::warn!("{e}: one system call per RTP packet from now");
                self.inline = Inline::Direct;
            }
        } else {
            send_each(&self.failed, sockets, packets, sent);
        }
    }

    /// The worker's send ring, made on first use (on the worker's thread,
    /// the only one to use it) with a slot for each of `slots` ports;
    /// `None` with a sender thread, or where io_uring cannot be had.
    fn ring(&mut self, slots: usize) -> Option<&mut send_ring::SendRing> {
        if self.thread.is_some() {
            return None;
        }
        if let Inline::Untried = self.inline {
            self.inline = match send_ring::SendRing::new(RING) {
                Ok(mut ring) => {
                    let slots = u32::try_from(slots).unwrap_or(u32::MAX);
                    if let Err(e) = ring.register_slots(slots) {
                        tracing::info!("no fixed files for RTP sockets ({e}): sends name each fd");
                    }
                    Inline::Ring(Box::new(ring))
                }
                Err(e) => {
                    tracing::info!("no io_uring ({e}): one system call per RTP packet");
                    Inline::Direct
                }
            };
        }
        match &mut self.inline {
            Inline::Ring(ring) => Some(ring),
            _ => None,
        }
    }

    /// A socket joined `sockets` at `port`: puts it in the ring's table,
    /// where there is one.
    pub(super) fn opened(&mut self, sockets: &mut PortTable<RtpSocket>, port: u16) {
        let Some(ring) = self.ring(sockets.capacity()) else {
            return;
        };
        if ring.slots() == 0 {
            return;
        }
        let slot = sockets.slot(port).and_then(|s| u32::try_from(s).ok());
        let (Some(slot), Some(socket)) = (slot, sockets.get_mut(port)) else {
            return;
        };
        match ring.set_slot(slot, Some(socket.socket.as_fd())) {
            Ok(()) => socket.slot = Some(slot),
            Err(e) => tracing::debug!(port, "RTP socket not in the ring's table: {e}"),
        }
    }

    /// A socket left the table: takes it out of the ring's too, or it would
    /// stay open (and its port bound) after it is dropped. If that fails the
    /// ring is gone, which releases them all.
    pub(super) fn closed(&mut self, socket: &RtpSocket) {
        let (Some(slot), Inline::Ring(ring)) = (socket.slot, &mut self.inline) else {
            return;
        };
        if let Err(e) = ring.set_slot(slot, None) {
            tracing::warn!(
                "cannot clear an RTP socket's slot ({e}): one system call per RTP packet from now"
            );
            self.inline = Inline::Direct;
        }
    }

    /// The turn's packets as one batch for the sender thread, which names
    /// each one's address (the worker may connect or free a socket while
    /// the batch waits).
    fn hand_to_thread<'a>(
        &mut self,
        sockets: &'a PortTable<RtpSocket>,
        packets: impl Iterator<Item = RtpTransmit<'a>>,
        mut sent: impl FnMut(Duration),
    ) {
        let Some((tx, batch)) = &mut self.thread else {
            return;
        };
        for p in packets {
            let Some(socket) = sockets.get(p.port) else {
                continue;
            };
            sent(p.late);
            let start = batch.bytes.len();
            batch.bytes.extend_from_slice(p.bytes);
            batch
                .packets
                .push((Arc::clone(&socket.socket), p.to, start, p.bytes.len()));
        }
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

/// One system call per packet.
fn send_each<'a>(
    failed: &AtomicU64,
    sockets: &'a PortTable<RtpSocket>,
    packets: impl Iterator<Item = RtpTransmit<'a>> + Clone,
    mut sent: impl FnMut(Duration),
) {
    // Every socket is found before the first send: with thousands of
    // calls each is a cache miss or two, and these overlap, where one
    // after each system call would wait on its own.
    for p in packets.clone() {
        if let Some(socket) = sockets.get(p.port) {
            socket.warm();
        }
    }
    for p in packets {
        if let Some(socket) = sockets.get(p.port) {
            sent(p.late);
            if !socket.send(p.to, p.bytes) {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Connected sockets' packets through the ring (which reads every socket
/// before its one system call); a packet by address is sent at once: few
/// are, and the ring would need each address kept. Failed sends are
/// counted; the error is the ring's own, after which it must not be used.
fn send_by_ring<'a>(
    ring: &mut send_ring::SendRing,
    failed: &AtomicU64,
    sockets: &'a PortTable<RtpSocket>,
    packets: impl Iterator<Item = RtpTransmit<'a>>,
    mut sent: impl FnMut(Duration),
) -> Result<(), send_ring::RingFailed> {
    let connected = packets.filter_map(|p| {
        let socket = sockets.get(p.port)?;
        sent(p.late);
        if socket.connected == Some(p.to) {
            let target = match socket.slot {
                Some(slot) => send_ring::Socket::Slot(slot),
                None => send_ring::Socket::Fd(socket.socket.as_fd()),
            };
            return Some((target, p.bytes));
        }
        if !socket.send(p.to, p.bytes) {
            failed.fetch_add(1, Ordering::Relaxed);
        }
        None
    });
    let counts = match ring.send_all(connected) {
        Ok(counts) => counts,
        Err(e) => {
            failed.fetch_add(e.counts.failed as u64, Ordering::Relaxed);
            return Err(e);
        }
    };
    if counts.failed > 0 {
        failed.fetch_add(counts.failed as u64, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ports::PortPool;

    fn bound() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn peer(addr: SocketAddr, fixed: bool) -> Option<RtpPeer> {
        Some(RtpPeer { addr, fixed })
    }

    /// Calls' sockets bound by port number, as the worker has them.
    struct Calls {
        pool: PortPool,
        table: PortTable<RtpSocket>,
        ports: Vec<u16>,
    }

    impl Calls {
        fn new(first: u16) -> Self {
            let pool = PortPool::new(first, first + 999);
            let table = pool.table();
            Self {
                pool,
                table,
                ports: Vec::new(),
            }
        }

        /// A new call's socket, and its port, as the worker opens it.
        fn open(&mut self, out: &mut RtpOut) -> (Arc<UdpSocket>, u16) {
            let (s, port) = self.open_unslotted();
            out.opened(&mut self.table, port);
            (s, port)
        }

        /// A new call's socket, not put in the ring's table.
        fn open_unslotted(&mut self) -> (Arc<UdpSocket>, u16) {
            let (s, port) = self.pool.bind("127.0.0.1".parse().unwrap()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let s = Arc::new(s);
            assert!(self
                .table
                .insert(port, RtpSocket::new(Arc::clone(&s)))
                .is_ok());
            self.ports.push(port);
            (s, port)
        }

        fn set_peer(&mut self, port: u16, peer: Option<RtpPeer>) {
            self.table.get_mut(port).unwrap().set_peer(peer);
        }

        /// Sends one turn of `(port, to, bytes)`; how many had a socket.
        fn turn(&self, out: &mut RtpOut, packets: &[(u16, SocketAddr, &[u8])]) -> usize {
            let mut sent = 0;
            let packets = packets.iter().map(|&(port, to, bytes)| RtpTransmit {
                port,
                to,
                bytes,
                late: Duration::ZERO,
            });
            out.send_turn(&self.table, packets, |_| sent += 1);
            sent
        }
    }

    fn ways() -> Vec<(&'static str, RtpOut)> {
        vec![
            ("ring", RtpOut::inline()),
            ("direct", RtpOut::direct()),
            ("thread", RtpOut::thread().unwrap()),
        ]
    }

    #[test]
    fn a_fixed_peer_connects_the_socket_and_new_media_frees_it() {
        for (base, (way, mut out)) in [41000, 42000, 43000].into_iter().zip(ways()) {
            let mut calls = Calls::new(base);
            let (ours, port) = calls.open(&mut out);
            let (old_peer, new_peer, stranger) = (bound(), bound(), bound());
            let old = old_peer.local_addr().unwrap();
            calls.set_peer(port, peer(old, true));
            assert_eq!(calls.table.get(port).unwrap().connected, Some(old));

            // Connected: the kernel drops a stranger's datagrams.
            stranger
                .send_to(b"noise", ours.local_addr().unwrap())
                .unwrap();
            old_peer
                .send_to(b"rtp", ours.local_addr().unwrap())
                .unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = ours.recv_from(&mut buf).unwrap();
            assert_eq!(
                (n, from),
                (3, old),
                "{way}: only the fixed peer gets through"
            );
            assert_eq!(calls.turn(&mut out, &[(port, old, b"one")]), 1);
            assert_eq!(old_peer.recv(&mut buf).unwrap(), 3, "{way}");

            // New media, a peer behind NAT not latched yet: free again, so
            // that the new peer's RTP reaches the latch; sent by address.
            let new = new_peer.local_addr().unwrap();
            calls.set_peer(port, peer(new, false));
            assert_eq!(calls.table.get(port).unwrap().connected, None);
            new_peer
                .send_to(b"rtp!", ours.local_addr().unwrap())
                .unwrap();
            let (n, from) = ours.recv_from(&mut buf).unwrap();
            assert_eq!((n, from), (4, new), "{way}");
            calls.turn(&mut out, &[(port, new, b"two")]);
            assert_eq!(new_peer.recv(&mut buf).unwrap(), 3, "{way}");
            assert_eq!(out.failed.load(Ordering::Relaxed), 0, "{way}");
        }
    }

    #[test]
    fn hold_to_an_unspecified_address_never_connects() {
        let mut socket = RtpSocket::new(Arc::new(bound()));
        socket.set_peer(peer("0.0.0.0:6000".parse().unwrap(), true));
        assert_eq!(socket.connected, None);
        socket.set_peer(peer("127.0.0.1:0".parse().unwrap(), true));
        assert_eq!(socket.connected, None);
    }

    /// A turn of many calls' packets, connected and by address, arrives
    /// whole and in order per call, whichever way it leaves; a port with
    /// no socket (its call just ended) is skipped.
    #[test]
    fn a_turn_reaches_every_peer_in_order_whichever_way_it_leaves() {
        for (base, (way, mut out)) in [44000, 45000, 46000].into_iter().zip(ways()) {
            let mut calls = Calls::new(base);
            let peers: Vec<UdpSocket> = (0..4).map(|_| bound()).collect();
            for (i, p) in peers.iter().enumerate() {
                let (_, port) = calls.open(&mut out);
                // The last is not fixed yet: sent by address.
                calls.set_peer(port, peer(p.local_addr().unwrap(), i < 3));
            }
            let mut packets = Vec::new();
            let rounds: Vec<[u8; 172]> = (0..50u8).map(|r| [r; 172]).collect();
            for round in &rounds {
                for (port, p) in calls.ports.iter().zip(&peers) {
                    packets.push((*port, p.local_addr().unwrap(), &round[..]));
                }
            }
            // An odd port: never a call's, so never in the table.
            packets.push((base + 1, peers[0].local_addr().unwrap(), b"gone"));
            assert_eq!(calls.turn(&mut out, &packets), 200, "{way}");
            let mut buf = [0u8; 200];
            for p in &peers {
                for round in 0..50u8 {
                    let n = p.recv(&mut buf).unwrap();
                    assert_eq!((n, buf[0]), (172, round), "{way}: whole, in order");
                }
            }
            assert_eq!(out.failed.load(Ordering::Relaxed), 0, "{way}");
        }
        let ring = send_ring::SendRing::new(RING);
        let mut out = RtpOut::inline();
        Calls::new(47000).turn(&mut out, &[]);
        assert_eq!(
            matches!(out.inline, Inline::Ring(_)),
            ring.is_ok(),
            "the ring is used wherever the kernel allows one"
        );
    }

    /// A peer that closed its port: the kernel reports it on a send after
    /// the ICMP error (soon after, on loopback), and that send counts as
    /// failed, once per refusal.
    #[test]
    fn a_send_the_kernel_refuses_counts_as_failed() {
        for (base, (way, mut out)) in [48000, 49000].into_iter().zip(ways()) {
            let mut calls = Calls::new(base);
            let gone = bound();
            let to = gone.local_addr().unwrap();
            let (_, port) = calls.open(&mut out);
            calls.set_peer(port, peer(to, true));
            drop(gone);
            // At most 5 s, a send a millisecond.
            let mut sends = 0;
            while out.failed.load(Ordering::Relaxed) == 0 && sends < 5000 {
                calls.turn(&mut out, &[(port, to, b"anyone?")]);
                sends += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(out.failed.load(Ordering::Relaxed), 1, "{way}");
            assert!(
                sends >= 2,
                "{way}: the first send goes; the error comes back"
            );
        }
    }

    /// More connected packets in a turn than the ring holds: they go a
    /// ring-full at a time, every one of them.
    #[test]
    fn a_turn_larger_than_the_ring_goes_a_ring_full_at_a_time() {
        let mut out = RtpOut::inline();
        let mut calls = Calls::new(50000);
        let peers: Vec<UdpSocket> = (0..12).map(|_| bound()).collect();
        for p in &peers {
            let (_, port) = calls.open(&mut out);
            calls.set_peer(port, peer(p.local_addr().unwrap(), true));
        }
        let rounds: Vec<[u8; 172]> = (0..50u8).map(|r| [r; 172]).collect();
        let mut packets = Vec::new();
        for round in &rounds {
            for (port, p) in calls.ports.iter().zip(&peers) {
                packets.push((*port, p.local_addr().unwrap(), &round[..]));
            }
        }
        assert!(packets.len() > RING as usize * 2);
        assert_eq!(calls.turn(&mut out, &packets), packets.len());
        let mut buf = [0u8; 200];
        for p in &peers {
            for round in 0..50u8 {
                let n = p.recv(&mut buf).unwrap();
                assert_eq!((n, buf[0]), (172, round), "whole, in order");
            }
        }
        assert_eq!(out.failed.load(Ordering::Relaxed), 0);
    }

    /// A ring used from a thread other than its own fails (the kernel
    /// holds it to one issuer): what it could not send counts as failed,
    /// and from then on every packet is its own system call.
    #[test]
    fn a_ring_that_fails_hands_over_to_one_system_call_a_packet() {
        let mut out = RtpOut::inline();
        let mut calls = Calls::new(51000);
        let receiver = bound();
        let to = receiver.local_addr().unwrap();
        let (_, port) = calls.open(&mut out);
        calls.set_peer(port, peer(to, true));
        calls.turn(&mut out, &[(port, to, b"first")]);
        let mut buf = [0u8; 32];
        assert_eq!(receiver.recv(&mut buf).unwrap(), 5);
        let (out, calls) = std::thread::spawn(move || {
            calls.turn(&mut out, &[(port, to, b"moved")]);
            calls.turn(&mut out, &[(port, to, b"after")]);
            (out, calls)
        })
        .join()
        .unwrap();
        let mut got = Vec::new();
        receiver
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        while let Ok(n) = receiver.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        let failed = out.failed.load(Ordering::Relaxed);
        // Where the kernel has no single-issuer rings, the moved ring
        // still works and nothing fails.
        assert_eq!(got.len() as u64 + failed, 2);
        assert_eq!(got.last().map(Vec::as_slice), Some(&b"after"[..]));
        if failed == 1 {
            assert!(matches!(out.inline, Inline::Direct));
        }
        drop(calls);
    }

    /// A socket in the ring's table is sent on by its slot, beside one
    /// that is not; taking it out of the table when its call ends lets it
    /// close, and its port is free again (the table's own reference
    /// would keep it bound).
    #[test]
    fn a_socket_in_the_rings_table_is_sent_on_and_freed_at_close() {
        let mut out = RtpOut::inline();
        let mut calls = Calls::new(53000);
        let receiver = bound();
        let to = receiver.local_addr().unwrap();
        let (socket, slotted) = calls.open(&mut out);
        let (_, plain) = calls.open_unslotted();
        calls.set_peer(slotted, peer(to, true));
        calls.set_peer(plain, peer(to, true));
        let tabled = match &out.inline {
            Inline::Ring(ring) => ring.slots() > 0,
            _ => false,
        };
        // Wherever the kernel gives a ring a table, the worker has one.
        let capacity = u32::try_from(calls.table.capacity()).unwrap();
        let possible = send_ring::SendRing::new(RING)
            .and_then(|mut ring| ring.register_slots(capacity))
            .is_ok();
        assert_eq!(tabled, possible);
        assert_eq!(calls.table.get(slotted).unwrap().slot.is_some(), tabled);
        assert_eq!(calls.table.get(plain).unwrap().slot, None);
        let sent = calls.turn(
            &mut out,
            &[(slotted, to, b"by slot"), (plain, to, b"by fd")],
        );
        assert_eq!(sent, 2);
        let mut got = Vec::new();
        let mut buf = [0u8; 32];
        for _ in 0..2 {
            let (n, from) = receiver.recv_from(&mut buf).unwrap();
            got.push((buf[..n].to_vec(), from.port()));
        }
        got.sort();
        assert_eq!(
            got,
            vec![(b"by fd".to_vec(), plain), (b"by slot".to_vec(), slotted)]
        );
        assert_eq!(out.failed.load(Ordering::Relaxed), 0);

        let entry = calls.table.remove(slotted).unwrap();
        out.closed(&entry);
        drop((entry, socket));
        // Before Linux 6.4 the kernel lets go of a cleared slot's socket
        // after a grace period (up to a second) rather than at once.
        let freed = (0..40).any(|_| {
            UdpSocket::bind(("127.0.0.1", slotted)).is_ok() || {
                std::thread::sleep(Duration::from_millis(50));
                false
            }
        });
        assert!(freed, "the port is free once its call's socket is dropped");
        assert!(
            matches!(out.inline, Inline::Ring(_)) || !tabled,
            "clearing a slot keeps the ring"
        );
    }

    /// The sender thread names each packet's address: a socket set free
    /// while its batch waits still sends it.
    #[test]
    fn the_sender_thread_names_the_address_of_every_packet() {
        let mut out = RtpOut::thread().unwrap();
        let mut calls = Calls::new(52000);
        let receiver = bound();
        let to = receiver.local_addr().unwrap();
        let (_, connected) = calls.open(&mut out);
        let (_, by_address) = calls.open(&mut out);
        calls.set_peer(connected, peer(to, true));
        calls.turn(
            &mut out,
            &[
                (connected, to, b"connected"),
                (by_address, to, b"by address"),
            ],
        );
        calls.set_peer(connected, None);
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
