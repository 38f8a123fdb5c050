//! How a worker's RTP leaves. With a core to spare (fewer workers than
//! cores), through a thread of its own: the worker paces its calls and
//! hands each turn's due packets over as one batch, and the thread makes
//! the system calls, which are most of the cost of a packet (see `cargo
//! bench --bench kernel_probe`), so pacing and sending run on two cores.
//! With a worker on every core, a second busy thread per worker only
//! makes them take turns on the cores (and packets wait for the turn), so
//! the worker sends its batch itself, at once.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

/// Batches waiting for the sender at most; a sender this far behind is
/// overloaded, and newer packets are dropped (and counted) rather than
/// queued late.
const QUEUE: usize = 256;

/// One turn's packets: the bytes back to back, and where each goes.
#[derive(Default)]
pub(super) struct Batch {
    bytes: Vec<u8>,
    packets: Vec<(Arc<UdpSocket>, SocketAddr, usize, usize)>,
}

impl Batch {
    /// Adds a packet to send from `socket` to `to`.
    pub(super) fn push(&mut self, socket: &Arc<UdpSocket>, to: SocketAddr, packet: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(packet);
        self.packets
            .push((Arc::clone(socket), to, start, packet.len()));
    }

    fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

/// A worker's way out for RTP.
pub(super) struct RtpOut {
    /// The sender thread, if the worker has one.
    tx: Option<SyncSender<Batch>>,
    /// Packets dropped: the queue was full, or the kernel refused them.
    pub(super) failed: Arc<AtomicU64>,
}

impl RtpOut {
    /// Sends through a thread of its own.
    pub(super) fn thread() -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&failed);
        std::thread::Builder::new()
            .name("rtp-out".into())
            .spawn(move || {
                while let Ok(batch) = rx.recv() {
                    send_all(&batch, &counter);
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            failed,
        })
    }

    /// Sends from the worker itself (non-blocking sockets: never waits).
    pub(super) fn inline() -> Self {
        Self {
            tx: None,
            failed: Arc::default(),
        }
    }

    /// Sends a batch, or hands it to the thread; never waits.
    pub(super) fn send(&self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let Some(tx) = &self.tx else {
            send_all(&batch, &self.failed);
            return;
        };
        let n = batch.packets.len() as u64;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(batch) {
            self.failed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

fn send_all(batch: &Batch, failed: &AtomicU64) {
    for (socket, to, start, len) in &batch.packets {
        if socket
            .send_to(&batch.bytes[*start..start + len], to)
            .is_err()
        {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
