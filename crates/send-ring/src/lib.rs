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
//! A socket may also be registered in the ring's table of fixed files
//! ([`SendRing::set_slot`]) and sent on by its slot ([`Socket::Slot`]):
//! the kernel then takes no reference to the socket's file per send. The
//! table holds a reference of its own, so a socket stays open (and its
//! port bound) until its slot is cleared, or the ring is dropped; a slot
//! that cannot be cleared takes the ring down with it for that reason.
//! A send on a slot never touches memory of ours: a stale slot sends on
//! whatever socket is in it now, or fails.
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

/// The socket a packet leaves from.
#[derive(Debug, Clone, Copy)]
pub enum Socket<'a> {
    /// A socket the caller lends for the call.
    Fd(BorrowedFd<'a>),
    /// The socket in this slot of the ring's table ([`SendRing::set_slot`]).
    Slot(u32),
}

/// An io_uring of one thread's, for sends only.
pub struct SendRing {
    /// `None` once the ring failed (see [`SendRing::send_all`]).
    ring: Option<io_uring::IoUring>,
    /// Sends submitted at most before their completions are reaped.
    entries: usize,
    /// The packets of the submission in flight, back to back.
    bytes: Vec<u8>,
    /// Each one's socket (borrowed by the caller for the whole call, or a
    /// slot of the table), and where it lies in `bytes`.
    batch: Vec<(Target, usize, u32)>,
    /// Slots in the table of fixed files (0: none registered).
    slots: u32,
}

/// A send's socket, once its borrow is checked.
#[derive(Clone, Copy)]
enum Target {
    Fd(RawFd),
    Slot(u32),
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
            slots: 0,
        })
    }

    /// Makes a table of `slots` fixed files, all empty (Linux 5.19 and
    /// later; the kernel also refuses more than the open-files limit).
    /// Without one, [`SendRing::set_slot`] fails and sends name their
    /// sockets' fds.
    pub fn register_slots(&mut self, slots: u32) -> io::Result<()> {
        let ring = self.ring.as_ref().ok_or_else(failed_earlier)?;
        ring.submitter().register_files_sparse(slots)?;
        self.slots = slots;
        Ok(())
    }

    /// How many slots the table has (0 if none was made).
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Puts `socket` in `slot` of the table (in place of what was there),
    /// or clears the slot (`None`), which lets the socket close once the
    /// caller drops it (at once from Linux 6.4; earlier kernels let go of
    /// it after a grace period, up to a second). If a slot cannot be cleared the ring is dropped,
    /// which releases every slot, and every later call fails.
    pub fn set_slot(&mut self, slot: u32, socket: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let ring = self.ring.as_ref().ok_or_else(failed_earlier)?;
        if slot >= self.slots {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slot {slot} is outside the table of {}", self.slots),
            ));
        }
        // -1 clears a slot (io_uring_register(2)).
        let fd = socket.map_or(-1, |s| s.as_raw_fd());
        match ring.submitter().register_files_update(slot, &[fd]) {
            Ok(1) => Ok(()),
            result => {
                let error = result
                    .err()
                    .unwrap_or_else(|| io::Error::other("the kernel did not update the slot"));
                if socket.is_none() {
                    // Nothing is in flight between calls to `send_all`.
                    self.ring = None;
                }
                Err(error)
            }
        }
    }

    /// Sends each packet on its socket (connected: no address is given),
    /// a ring-full per system call, and waits for them to complete;
    /// counts what the kernel took and refused. An error is the ring's
    /// own, not a socket's: the ring refuses every later call.
    pub fn send_all<'a>(
        &mut self,
        packets: impl IntoIterator<Item = (Socket<'a>, &'a [u8])>,
    ) -> Result<Sent, RingFailed> {
        let mut counts = Sent::default();
        let mut packets = packets.into_iter().peekable();
        while packets.peek().is_some() {
            let Some(ring) = &mut self.ring else {
                counts.failed += packets.count();
                return Err(RingFailed {
                    counts,
                    error: failed_earlier(),
                });
            };
            // Copied first, all of the batch, so that the buffer does not
            // move once the kernel may read it.
            self.bytes.clear();
            self.batch.clear();
            for (socket, packet) in packets.by_ref().take(self.entries) {
                // No datagram is that long; the kernel would refuse it.
                let Ok(len) = u32::try_from(packet.len()) else {
                    counts.failed += 1;
                    continue;
                };
                let target = match socket {
                    Socket::Fd(fd) => Target::Fd(fd.as_raw_fd()),
                    Socket::Slot(slot) => Target::Slot(slot),
                };
                self.batch.push((target, self.bytes.len(), len));
                self.bytes.extend_from_slice(packet);
            }
            let mut waiting = 0;
            {
                let mut sq = ring.submission();
                for &(target, start, len) in &self.batch {
                    let packet = &self.bytes[start..start + len as usize];
                    let send = match target {
                        Target::Fd(fd) => io_uring::opcode::Send::new(
                            io_uring::types::Fd(fd),
                            packet.as_ptr(),
                            len,
                        ),
                        Target::Slot(slot) => io_uring::opcode::Send::new(
                            io_uring::types::Fixed(slot),
                            packet.as_ptr(),
                            len,
                        ),
                    }
                    .flags(MSG_DONTWAIT)
                    .build();
                    // SAFETY: the kernel reads `packet` (in `self.bytes`)
                    // until the send completes. `self.bytes` is neither
                    // written nor freed before every submitted send has
                    // completed below; if that cannot be known, it is
                    // leaked. The fd was borrowed for `'a`, which outlasts
                    // this call; a slot's socket is held by the table.
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

fn failed_earlier() -> io::Error {
    io::Error::other("the ring failed earlier")
}
