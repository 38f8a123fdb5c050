//! Sends a batch of datagrams, each on its own socket, with one system
//! call per ring-full through io_uring, behind a safe API.
//!
//! callflow sends every call's RTP from the call's own socket, so
//! `sendmmsg` (one socket per call) cannot batch across calls; io_uring
//! can. Submitting a send needs `unsafe` (the kernel reads the buffer
//! after the push), and callflow forbids unsafe code, so the one place
//! that needs it lives here, small enough to check by eye:
//!
//! - every packet is copied into a buffer the ring owns, so no borrow the
//!   caller holds has to outlive the call;
//! - [`SendRing::send_all`] returns only once every send it submitted has
//!   completed, and the sockets are borrowed until then;
//! - if the ring itself fails while sends may be in flight, the buffer is
//!   leaked rather than freed, and the ring is dropped (the kernel holds
//!   its own reference to each socket's file until its send completes).
//!
//! Sends carry `MSG_DONTWAIT`: a socket whose buffer is full fails that
//! send (counted) instead of parking it in the kernel, so the wait for
//! completions is never a wait for a socket.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// `MSG_DONTWAIT` (Linux's socket.h, the same on every architecture); the
/// io-uring crate takes raw flags.
const MSG_DONTWAIT: i32 = 0x40;

/// What one [`SendRing::send_all`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Packets the kernel took.
    pub sent: usize,
    /// Packets it refused (a full socket buffer, a peer's closed port
    /// reported on a connected socket, a bad socket).
    pub failed: usize,
}

/// The ring failed: an error of io_uring itself, not of a socket.
#[derive(Debug)]
pub struct RingFailed {
    /// What was done before it failed; the sends in flight then, and
    /// those not submitted, count as failed.
    pub counts: Sent,
    /// What the kernel said.
    pub error: io::Error,
}

impl std::fmt::Display for RingFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the send ring failed: {}", self.error)
    }
}

impl std::error::Error for RingFailed {}

/// An io_uring of one thread's, for sends only.
pub struct SendRing {
    /// `None` once the ring failed (see [`SendRing::send_all`]).
    ring: Option<io_uring::IoUring>,
    /// Sends submitted at most before their completions are reaped.
    entries: usize,
    /// The packets of the submission in flight, back to back.
    bytes: Vec<u8>,
    /// Each one's socket (borrowed by the caller for the whole call), and
    /// where it lies in `bytes`.
    batch: Vec<(RawFd, usize, u32)>,
}

impl SendRing {
    /// A ring of `entries` sends, to be used from the thread that made
    /// it (another thread's calls fail with `EEXIST`, which
    /// [`SendRing::send_all`] reports as the ring failing). Asks the
    /// kernel not to interrupt the thread for completions (they are
    /// reaped in the same system call); where the kernel does not know
    /// those flags, a plain ring. Fails where io_uring is refused (an old
    /// kernel, `kernel.io_uring_disabled`, a seccomp filter that answers
    /// with an error) or cannot send on a socket (`IORING_OP_SEND` came in
    /// Linux 5.6, after io_uring itself).
    pub fn new(entries: u32) -> io::Result<Self> {
        let ring = io_uring::IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_submit_all()
            .build(entries)
            .or_else(|_| io_uring::IoUring::new(entries))?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(io_uring::opcode::Send::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel's io_uring cannot send on a socket",
            ));
        }
        let entries = ring.params().sq_entries() as usize;
        Ok(Self {
            ring: Some(ring),
            entries,
            bytes: Vec::new(),
            batch: Vec::new(),
        })
    }

    /// Sends each packet on its socket (connected: no address is given),
    /// a ring-full per system call, and waits for them to complete;
    /// counts what the kernel took and refused. An error is the ring's
    /// own, not a socket's: the ring refuses every later call.
    pub fn send_all<'a>(
        &mut self,
        packets: impl IntoIterator<Item = (BorrowedFd<'a>, &'a [u8])>,
    ) -> Result<Sent, RingFailed> {
        let mut counts = Sent::default();
        let mut packets = packets.into_iter().peekable();
        while packets.peek().is_some() {
            let Some(ring) = &mut self.ring else {
                counts.failed += packets.count();
                return Err(RingFailed {
                    counts,
                    error: io::Error::other("it failed earlier"),
                });
            };
            // Copied first, all of the batch, so that the buffer does not
            // move once the kernel may read it.
            self.bytes.clear();
            self.batch.clear();
            for (fd, packet) in packets.by_ref().take(self.entries) {
                // No datagram is that long; the kernel would refuse it.
                let Ok(len) = u32::try_from(packet.len()) else {
                    counts.failed += 1;
                    continue;
                };
                self.batch.push((fd.as_raw_fd(), self.bytes.len(), len));
                self.bytes.extend_from_slice(packet);
            }
            let mut waiting = 0;
            {
                let mut sq = ring.submission();
                for &(fd, start, len) in &self.batch {
                    let packet = &self.bytes[start..start + len as usize];
                    let send =
                        io_uring::opcode::Send::new(io_uring::types::Fd(fd), packet.as_ptr(), len)
                            .flags(MSG_DONTWAIT)
                            .build();
                    // SAFETY: the kernel reads `packet` (in `self.bytes`)
                    // until the send completes. `self.bytes` is neither
                    // written nor freed before every submitted send has
                    // completed below; if that cannot be known, it is
                    // leaked. The fd was borrowed for `'a`, which outlasts
                    // this call.
                    match unsafe { sq.push(&send) } {
                        Ok(()) => waiting += 1,
                        // The batch holds no more than the ring, which is
                        // empty here: cannot happen, and counted if it did.
                        Err(_) => counts.failed += 1,
                    }
                }
            }
            while waiting > 0 {
                match ring.submit_and_wait(waiting) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        std::mem::forget(std::mem::take(&mut self.bytes));
                        self.ring = None;
                        counts.failed += waiting + packets.count();
                        return Err(RingFailed { counts, error: e });
                    }
                }
                for cqe in ring.completion() {
                    waiting = waiting.saturating_sub(1);
                    if cqe.result() < 0 {
                        counts.failed += 1;
                    } else {
                        counts.sent += 1;
                    }
                }
            }
        }
        Ok(counts)
    }
}
