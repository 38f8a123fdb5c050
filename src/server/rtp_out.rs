//! RTP leaves through a thread of its own: the listener paces every call
//! and hands each turn's due packets over as one batch, and this thread
//! makes the system calls, which are most of the cost of a packet (see
//! `cargo bench --bench kernel_probe`). So pacing and sending run on two
//! cores instead of one.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
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

/// The listener's end of the sender thread.
pub(super) struct RtpOut {
    tx: SyncSender<Batch>,
    /// Packets dropped: the queue was full, or the kernel refused them.
    pub(super) failed: Arc<AtomicU64>,
}

impl RtpOut {
    /// Starts the sender thread.
    pub(super) fn start() -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&failed);
        std::thread::Builder::new()
            .name("rtp-out".into())
            .spawn(move || run(rx, &counter))?;
        Ok(Self { tx, failed })
    }

    /// Hands a batch over; never waits.
    pub(super) fn send(&self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let n = batch.packets.len() as u64;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(batch)
        {
            self.failed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

fn run(rx: Receiver<Batch>, failed: &AtomicU64) {
    while let Ok(batch) = rx.recv() {
        for (socket, to, start, len) in &batch.packets {
            if socket
                .send_to(&batch.bytes[*start..start + len], to)
                .is_err()
            {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
