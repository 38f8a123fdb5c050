//! Inbound RTP is read by a thread of its own per worker: one readiness
//! poll (mio, epoll on Linux) over all of the worker's RTP sockets,
//! registered for reading only, each ready socket read until it is empty,
//! and everything one poll turn read handed to the worker as one batch.
//! Reading them with a tokio task per socket cost a task wake-up per
//! packet, and tokio watches its sockets for write space too, so every
//! RTP packet we sent woke its IO driver as well.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc;

/// The poll's own token, for commands.
const WAKE: Token = Token(usize::MAX);

/// Packets read from one socket per turn at most: a socket still readable
/// after that is read again next turn, so one flooded port cannot keep
/// the reader from the others (or its batch from the worker).
const PER_SOCKET: usize = 64;

/// Packets in one batch at most.
const PER_BATCH: usize = 2048;

/// What one poll turn read: the packets back to back, and for each the
/// port it reached, its source, and where its bytes are.
#[derive(Default)]
pub(super) struct RtpBatch {
    bytes: Vec<u8>,
    packets: Vec<(u16, SocketAddr, usize, usize)>,
}

impl RtpBatch {
    /// The packets: port, source and bytes.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u16, SocketAddr, &[u8])> {
        self.packets
            .iter()
            .map(|&(port, from, start, len)| (port, from, &self.bytes[start..start + len]))
    }

    fn len(&self) -> usize {
        self.packets.len()
    }
}

enum Command {
    Add(u16, Arc<UdpSocket>),
    Remove(u16),
    Stop,
}

/// The worker's end of its reader thread.
pub(super) struct RtpReader {
    commands: std_mpsc::Sender<Command>,
    waker: Arc<Waker>,
    /// Packets dropped because the worker was this far behind.
    pub(super) dropped: Arc<AtomicU64>,
}

impl RtpReader {
    /// Starts the thread; what it reads goes to `out`, a batch at a time.
    pub(super) fn start(out: mpsc::Sender<RtpBatch>) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (commands, rx) = std_mpsc::channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("rtp-in".into())
            .spawn(move || run(poll, rx, out, &counter))?;
        Ok(Self {
            commands,
            waker,
            dropped,
        })
    }

    /// Starts reading `socket`, the call's socket on `port` (non-blocking;
    /// shared, not duplicated, so that a call costs one file descriptor).
    pub(super) fn add(&self, port: u16, socket: Arc<UdpSocket>) {
        self.command(Command::Add(port, socket));
    }

    /// Stops reading `port`'s socket and lets go of it.
    pub(super) fn remove(&self, port: u16) {
        self.command(Command::Remove(port));
    }

    fn command(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            if let Err(e) = self.waker.wake() {
                tracing::warn!("cannot wake the RTP reader: {e}");
            }
        }
    }
}

impl Drop for RtpReader {
    fn drop(&mut self) {
        self.command(Command::Stop);
    }
}

fn run(
    mut poll: Poll,
    commands: std_mpsc::Receiver<Command>,
    out: mpsc::Sender<RtpBatch>,
    dropped: &AtomicU64,
) {
    let mut events = Events::with_capacity(1024);
    let mut sockets: HashMap<u16, Arc<UdpSocket>> = HashMap::new();
    let mut buf = [0u8; 2048];
    let mut batch = RtpBatch::default();
    // Sockets left readable last turn (edge-triggered: the poll will not
    // report them again), and this turn's.
    let mut unfinished: Vec<u16> = Vec::new();
    let mut ready: Vec<u16> = Vec::new();
    loop {
        let timeout = (!unfinished.is_empty()).then_some(std::time::Duration::ZERO);
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("RTP reader stopped: {e}");
            return;
        }
        for event in events.iter() {
            if event.token() == WAKE {
                for command in commands.try_iter() {
                    match command {
                        Command::Add(port, socket) => {
                            match poll.registry().register(
                                &mut SourceFd(&socket.as_raw_fd()),
                                Token(usize::from(port)),
                                Interest::READABLE,
                            ) {
                                Ok(()) => {
                                    sockets.insert(port, socket);
                                }
                                Err(e) => tracing::warn!(port, "cannot watch the RTP socket: {e}"),
                            }
                        }
                        Command::Remove(port) => {
                            // Deregistered while the socket is still open:
                            // this thread's handle keeps it so until here.
                            if let Some(socket) = sockets.remove(&port) {
                                let _ = poll
                                    .registry()
                                    .deregister(&mut SourceFd(&socket.as_raw_fd()));
                            }
                        }
                        Command::Stop => return,
                    }
                }
                continue;
            }
            if let Ok(port) = u16::try_from(event.token().0) {
                ready.push(port);
            }
        }
        ready.append(&mut unfinished);
        ready.sort_unstable();
        ready.dedup();
        for port in ready.drain(..) {
            let Some(socket) = sockets.get(&port) else {
                continue;
            };
            let (mut read, mut errors) = (0, 0);
            let drained = loop {
                if read == PER_SOCKET || batch.len() >= PER_BATCH {
                    break false;
                }
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let start = batch.bytes.len();
                        batch.bytes.extend_from_slice(&buf[..n]);
                        batch.packets.push((port, from, start, n));
                        read += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // An ICMP error (reported on a connected socket) is
                    // cleared by this read; datagrams may still wait
                    // behind it, and readiness is edge-triggered. A second
                    // error in a row is not that: leave the socket be.
                    Err(_) if errors == 0 => errors += 1,
                    Err(_) => break true,
                }
            };
            if !drained {
                unfinished.push(port);
            }
        }
        if batch.len() == 0 {
            continue;
        }
        let n = batch.len() as u64;
        match out.try_send(std::mem::take(&mut batch)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped.fetch_add(n, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
