//! Inbound RTP is read by a thread of its own per worker: one epoll over
//! all of the worker's RTP sockets, registered for reading only, one
//! datagram read from each ready socket per turn, and everything one turn
//! read handed to the worker as one batch. Reading them with a tokio task
//! per socket cost a task wake-up per packet, and tokio watches its
//! sockets for write space too, so every RTP packet we sent woke its IO
//! driver as well.
//!
//! The epoll is level-triggered: a socket with a datagram left is simply
//! reported again next turn. Edge-triggered (as mio is), each socket had to
//! be read until the kernel said it was empty, and at 50 packets a second
//! per call that was one failed `recvfrom` for every packet read. One
//! datagram per socket per turn also keeps one flooded port from holding
//! up the others.
//!
//! After a batch with packets for its worker the reader rests a moment
//! ([`REST`]) before it waits again, so that what arrives meanwhile is read in one
//! turn rather than each datagram waking it on its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::UdpSocket;
use std::os::fd::OwnedFd;

use rustix::event::{epoll, eventfd, EventfdFlags};
use tokio::sync::Notify;

use crate::call::endpoint::RelayRule;

/// The epoll's own event, for commands (ports are below it).
const WAKE: u64 = u64::MAX;

/// Packets in one batch at most.
const PER_BATCH: usize = 2048;

/// While sockets are still ready at once after a turn (a burst, or one
/// port flooded: level-triggered, a flooded socket is ready every turn and
/// yields one packet a turn), the reader gathers this many packets into a
/// batch, or this many turns, before the worker gets it: one batch per
/// flood packet would fill the worker's queue, which is bounded in
/// batches, with batches of one.
const GATHER_PACKETS: usize = 64;
const GATHER_TURNS: u32 = 32;

/// How long a batch may wait for a worker that will wake by itself: a
/// worker due later than this is woken for it.
const LAZY: Duration = Duration::from_micros(500);

/// How long the reader rests after a batch with packets for its worker
/// (handed over, or dropped because the worker was behind), before it
/// waits again. Otherwise each datagram that arrived while it slept woke it
/// on its own: with callers sending RTP that was a wake-up and a wait for
/// almost every packet, and the context switches cost more than the reads
/// (measured with `--send-rtp` in the load bench: 17% of the server's CPU).
/// Resting lets what arrives meanwhile be read in one turn. A packet that
/// arrives during a rest waits about this much more (a sleep lasts at
/// least this, plus the timer's slack), on top of the up to [`LAZY`] its
/// batch may then wait for the worker.
///
/// A turn that only relayed does not rest: relays go out as they are read,
/// and resting there delayed them (median 38 -> 250 us) without saving CPU.
/// A reader whose other calls hand the worker packets rests all the same,
/// and a relay arriving meanwhile waits for the rest to end. Measured with
/// half the calls bridged and half IVR (`--mixed` in the load bench, 1,000
/// calls, 510 of them bridged), relay delay p99 was 0.61-0.63 ms in two
/// runs, against 0.42 ms in one run of the build before the rest (p50
/// 36-38 us either way). A variant that skipped the rest after any turn
/// that relayed was no better (0.62 ms) and used more CPU (60% against
/// 55%). At 2,000 such calls server and generator together use 160-180%
/// of the 2 cores, and relay delay p99 is 3-72 ms with or without the
/// rest.
///
/// A flooded port is read one datagram a turn, and now at most
/// [`GATHER_TURNS`] turns a rest: past that the kernel drops in the
/// socket's buffer, which costs us nothing.
const REST: Duration = Duration::from_micros(300);

/// How long relayed packets may go untold to the worker at most: the
/// caller's silence check counts them, and its limits are seconds.
pub(super) const REPORT: Duration = Duration::from_millis(200);

/// What one poll turn read: the packets back to back, and for each the
/// port it reached, its source, and where its bytes are.
#[derive(Default)]
pub(super) struct RtpBatch {
    bytes: Vec<u8>,
    packets: Vec<(u16, SocketAddr, usize, usize)>,
    /// Packets relayed by a rule since the last report, by the port they
    /// reached.
    relayed: Vec<(u16, u64)>,
}

impl RtpBatch {
    /// The packets: port, source and bytes.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u16, SocketAddr, &[u8])> {
        self.packets
            .iter()
            .map(|&(port, from, start, len)| (port, from, &self.bytes[start..start + len]))
    }

    /// Packets relayed by a rule since the last report: port, how many.
    pub(super) fn relayed(&self) -> &[(u16, u64)] {
        &self.relayed
    }

    fn len(&self) -> usize {
        self.packets.len()
    }
}

/// How the reader wakes its worker only when the worker would otherwise
/// sleep past [`LAZY`].
struct Doorbell {
    notify: Notify,
    /// When the worker next wakes by itself, in microseconds since `base`:
    /// 0 while it is awake, `u64::MAX` when it has no deadline.
    wakes_at: AtomicU64,
    base: Instant,
}

impl Doorbell {
    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_micros())
            .unwrap_or(u64::MAX - 1)
            .max(1)
    }

    /// Called by the reader after it queued a batch.
    fn ring(&self) {
        // Pairs with the fence in `RtpInbox::sleep_until`: either the
        // worker sees the batch before it sleeps, or this sees the time
        // it sleeps until.
        fence(Ordering::SeqCst);
        let at = self.wakes_at.load(Ordering::Relaxed);
        if at != 0 && at > self.micros(super::now() + LAZY) {
            self.notify.notify_one();
        }
    }
}

/// The worker's end of what its reader read.
pub(super) struct RtpInbox {
    rx: std_mpsc::Receiver<RtpBatch>,
    doorbell: Arc<Doorbell>,
}

impl RtpInbox {
    /// The worker is about to sleep until `at` (`None`: until woken).
    /// Afterwards the worker must look for batches once more before it
    /// sleeps: one queued before this may not have rung.
    pub(super) fn sleep_until(&self, at: Option<Instant>) {
        let at = at.map_or(u64::MAX, |at| self.doorbell.micros(at));
        self.doorbell.wakes_at.store(at, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The worker is awake: batches wait for it to look.
    pub(super) fn awake(&self) {
        self.doorbell.wakes_at.store(0, Ordering::Relaxed);
    }

    /// The next batch waiting, if any.
    pub(super) fn try_recv(&self) -> Option<RtpBatch> {
        self.rx.try_recv().ok()
    }

    /// Until the reader rings.
    pub(super) async fn rung(&self) {
        self.doorbell.notify.notified().await;
    }
}

enum Command {
    Add(u16, Arc<UdpSocket>),
    Relay(u16, Option<RelayRule>),
    Remove(u16),
    Stop,
}

/// One of the worker's ports, as the reader holds it.
struct Port {
    socket: Arc<UdpSocket>,
    relay: Option<Relay>,
}

/// A port's relay rule, the socket it sends from, and how many packets it
/// relayed since the last report.
struct Relay {
    rule: RelayRule,
    out: Arc<UdpSocket>,
    unreported: u64,
}

/// The worker's end of its reader thread.
pub(super) struct RtpReader {
    commands: std_mpsc::Sender<Command>,
    /// An eventfd in the reader's epoll, written to wake it for commands.
    waker: Arc<OwnedFd>,
    /// Packets dropped because the worker was this far behind.
    pub(super) dropped: Arc<AtomicU64>,
    /// Relayed packets the kernel refused.
    pub(super) relay_failed: Arc<AtomicU64>,
}

impl RtpReader {
    /// Starts the thread; what it reads waits in the inbox, a batch at a
    /// time (`queue` batches at most: past that newer packets are dropped,
    /// and counted, rather than handled late).
    pub(super) fn start(queue: usize) -> std::io::Result<(Self, RtpInbox)> {
        let (out, rx) = std_mpsc::sync_channel(queue);
        let doorbell = Arc::new(Doorbell {
            notify: Notify::new(),
            wakes_at: AtomicU64::new(0),
            base: super::now(),
        });
        let inbox = RtpInbox {
            rx,
            doorbell: Arc::clone(&doorbell),
        };
        let poll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let waker = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
        epoll::add(
            &poll,
            &*waker,
            epoll::EventData::new_u64(WAKE),
            epoll::EventFlags::IN,
        )?;
        let (commands, rx) = std_mpsc::channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let relay_failed = Arc::new(AtomicU64::new(0));
        let counters = Counters {
            dropped: Arc::clone(&dropped),
            relay_failed: Arc::clone(&relay_failed),
        };
        std::thread::Builder::new().name("rtp-in".into()).spawn({
            let waker = Arc::clone(&waker);
            move || Reader::new(poll, waker, out, doorbell, counters).run(rx)
        })?;
        let reader = Self {
            commands,
            waker,
            dropped,
            relay_failed,
        };
        Ok((reader, inbox))
    }

    /// Starts reading `socket`, the call's socket on `port` (non-blocking;
    /// shared, not duplicated, so that a call costs one file descriptor).
    pub(super) fn add(&self, port: u16, socket: Arc<UdpSocket>) {
        self.command(Command::Add(port, socket));
    }

    /// Relays what `rule` covers of the RTP reaching `port` from here on
    /// (`None`: hands all of it to the worker again).
    pub(super) fn relay(&self, port: u16, rule: Option<RelayRule>) {
        self.command(Command::Relay(port, rule));
    }

    /// Stops reading `port`'s socket and lets go of it.
    pub(super) fn remove(&self, port: u16) {
        self.command(Command::Remove(port));
    }

    fn command(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            // A full counter (never, at one per command) still wakes it.
            match rustix::io::write(&*self.waker, &1u64.to_ne_bytes()) {
                Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
                Err(e) => tracing::warn!("cannot wake the RTP reader: {e}"),
            }
        }
    }
}

impl Drop for RtpReader {
    fn drop(&mut self) {
        self.command(Command::Stop);
    }
}

struct Counters {
    dropped: Arc<AtomicU64>,
    relay_failed: Arc<AtomicU64>,
}

/// The reader thread's state.
struct Reader {
    poll: OwnedFd,
    waker: Arc<OwnedFd>,
    out: std_mpsc::SyncSender<RtpBatch>,
    doorbell: Arc<Doorbell>,
    counters: Counters,
    ports: HashMap<u16, Port>,
    /// Which port's rule sends from each port, so that closing a port
    /// takes back the rule that would send from it.
    senders: HashMap<u16, u16>,
    batch: RtpBatch,
    reports: Reports,
}

/// Ports that relayed packets since the last report, and when the next
/// report is due.
#[derive(Default)]
struct Reports {
    unreported: Vec<u16>,
    report_at: Option<Instant>,
}

impl Reports {
    /// Counts `packets` relayed by `port`'s rule, to be told in a report.
    fn count(&mut self, port: u16, relay: &mut Relay, packets: u64) {
        if relay.unreported == 0 {
            self.unreported.push(port);
            self.report_at.get_or_insert_with(|| super::now() + REPORT);
        }
        relay.unreported += packets;
    }
}

impl Reader {
    fn new(
        poll: OwnedFd,
        waker: Arc<OwnedFd>,
        out: std_mpsc::SyncSender<RtpBatch>,
        doorbell: Arc<Doorbell>,
        counters: Counters,
    ) -> Self {
        Self {
            poll,
            waker,
            out,
            doorbell,
            counters,
            ports: HashMap::new(),
            senders: HashMap::new(),
            batch: RtpBatch::default(),
            reports: Reports::default(),
        }
    }

    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
        let mut buf = [0u8; 2048];
        let mut ready: Vec<u16> = Vec::new();
        let mut gathered: u32 = 0;
        loop {
            let timeout = if self.batch.len() > 0 {
                // Only a look: what is ready now joins the batch.
                Some(rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                })
            } else {
                self.reports.report_at.and_then(|at| {
                    rustix::time::Timespec::try_from(at.saturating_duration_since(super::now()))
                        .ok()
                })
            };
            events.clear();
            match epoll::wait(
                &self.poll,
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!("RTP reader stopped: {e}");
                    return;
                }
            }
            for event in &events {
                let data = event.data;
                let data = data.u64();
                if data == WAKE {
                    let mut count = [0u8; 8];
                    let _ = rustix::io::read(&*self.waker, &mut count);
                    for command in commands.try_iter() {
                        if !self.command(command) {
                            return;
                        }
                    }
                } else if let Ok(port) = u16::try_from(data) {
                    ready.push(port);
                }
            }
            let any_ready = !ready.is_empty();
            // Ports not read for a full batch are reported again next turn.
            for port in ready.drain(..) {
                if self.batch.len() >= PER_BATCH {
                    break;
                }
                self.read(port, &mut buf);
            }
            if self.reports.report_at.is_some_and(|at| at <= super::now()) {
                self.report();
            }
            if self.batch.len() == 0 && self.batch.relayed.is_empty() {
                continue;
            }
            gathered += 1;
            if any_ready
                && self.batch.len() > 0
                && self.batch.len() < GATHER_PACKETS
                && gathered < GATHER_TURNS
            {
                continue;
            }
            gathered = 0;
            let n = self.batch.len() as u64;
            match self.out.try_send(std::mem::take(&mut self.batch)) {
                Ok(()) => self.doorbell.ring(),
                Err(std_mpsc::TrySendError::Full(batch)) => {
                    self.counters.dropped.fetch_add(n, Ordering::Relaxed);
                    // The counts are told next time instead.
                    for &(port, packets) in &batch.relayed {
                        self.count_relayed(port, packets);
                    }
                }
                Err(std_mpsc::TrySendError::Disconnected(_)) => return,
            }
            if n > 0 {
                std::thread::sleep(REST);
            }
        }
    }

    /// Carries out a command; false for [`Command::Stop`].
    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Add(port, socket) => match epoll::add(
                &self.poll,
                &*socket,
                epoll::EventData::new_u64(u64::from(port)),
                epoll::EventFlags::IN,
            ) {
                Ok(()) => {
                    self.ports.insert(
                        port,
                        Port {
                            socket,
                            relay: None,
                        },
                    );
                }
                Err(e) => tracing::warn!(port, "cannot watch the RTP socket: {e}"),
            },
            Command::Relay(port, rule) => self.set_relay(port, rule),
            Command::Remove(port) => {
                if let Some(from) = self.senders.get(&port).copied() {
                    self.set_relay(from, None);
                }
                // Deregistered while the socket is still open: this
                // thread's handle keeps it so until here. What its rule
                // relayed and did not tell is dropped with it: the port
                // may be a new call's by the time the count arrived.
                if let Some(p) = self.ports.remove(&port) {
                    if let Some(relay) = p.relay {
                        self.senders.remove(&relay.rule.out_port);
                    }
                    let _ = epoll::delete(&self.poll, &*p.socket);
                }
            }
            Command::Stop => return false,
        }
        true
    }

    /// Sets or takes back `port`'s relay rule; what it relayed and has not
    /// told yet is still told.
    fn set_relay(&mut self, port: u16, rule: Option<RelayRule>) {
        let out = rule.and_then(|r| self.ports.get(&r.out_port).map(|p| Arc::clone(&p.socket)));
        let Some(p) = self.ports.get_mut(&port) else {
            return;
        };
        let unreported = match p.relay.take() {
            Some(old) => {
                self.senders.remove(&old.rule.out_port);
                old.unreported
            }
            None => 0,
        };
        if let (Some(rule), Some(out)) = (rule, out) {
            self.senders.insert(rule.out_port, port);
            p.relay = Some(Relay {
                rule,
                out,
                unreported,
            });
        } else if unreported > 0 {
            // No rule left to keep the count: told with the next report.
            self.batch.relayed.push((port, unreported));
        }
    }

    /// Reads one datagram from `port`'s socket, relaying it if its rule
    /// covers it.
    fn read(&mut self, port: u16, buf: &mut [u8]) {
        let Some(p) = self.ports.get_mut(&port) else {
            return;
        };
        // An error (an ICMP error a connected socket reports is cleared by
        // this read) or nothing there: the epoll says if more waits.
        let Ok((n, from)) = p.socket.recv_from(buf) else {
            return;
        };
        if let Some(relay) = &mut p.relay {
            if relay.rule.forward(from, &mut buf[..n]) {
                if relay.out.send_to(&buf[..n], relay.rule.to).is_err() {
                    self.counters.relay_failed.fetch_add(1, Ordering::Relaxed);
                }
                self.reports.count(port, relay, 1);
                return;
            }
        }
        let start = self.batch.bytes.len();
        self.batch.bytes.extend_from_slice(&buf[..n]);
        self.batch.packets.push((port, from, start, n));
    }

    /// Counts `packets` relayed from `port`, to be told in a report.
    fn count_relayed(&mut self, port: u16, packets: u64) {
        if let Some(relay) = self.ports.get_mut(&port).and_then(|p| p.relay.as_mut()) {
            self.reports.count(port, relay, packets);
        }
    }

    /// Puts what was relayed since the last report in the batch.
    fn report(&mut self) {
        self.reports.report_at = None;
        for port in self.reports.unreported.drain(..) {
            if let Some(relay) = self.ports.get_mut(&port).and_then(|p| p.relay.as_mut()) {
                let n = std::mem::take(&mut relay.unreported);
                if n > 0 {
                    self.batch.relayed.push((port, n));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::endpoint::RelayStream;

    /// A non-blocking call socket, bound by port number as the pool does.
    fn call_socket(pool: &mut crate::server::ports::PortPool) -> (Arc<UdpSocket>, u16) {
        let (s, port) = pool.bind("127.0.0.1".parse().unwrap()).unwrap();
        s.set_nonblocking(true).unwrap();
        (Arc::new(s), port)
    }

    fn peer() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn rtp(pt: u8, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 1, 0, 0, 0, 160];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x11; 160]);
        p
    }

    /// The next batch, within two seconds.
    fn next(rx: &mut RtpInbox) -> RtpBatch {
        for _ in 0..200 {
            if let Some(b) = rx.try_recv() {
                return b;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no batch from the reader");
    }

    #[test]
    fn a_rule_relays_from_the_reader_and_only_its_count_reaches_the_worker() {
        let mut pool = crate::server::ports::PortPool::new(42000, 42999);
        let ((callers, cport), (agents, aport)) = (call_socket(&mut pool), call_socket(&mut pool));
        let (caller, agent) = (peer(), peer());
        let (reader, mut rx) = RtpReader::start(16).unwrap();
        reader.add(cport, Arc::clone(&callers));
        reader.add(aport, Arc::clone(&agents));
        let rule = RelayRule {
            source: caller.local_addr().unwrap(),
            audio: RelayStream {
                payload_type: 0,
                ssrc: 7,
                to_payload_type: 0,
            },
            events: Some(RelayStream {
                payload_type: 101,
                ssrc: 7,
                to_payload_type: 96,
            }),
            transcode: None,
            out_port: aport,
            to: agent.local_addr().unwrap(),
        };
        reader.relay(cport, Some(rule));
        let ours = callers.local_addr().unwrap();
        // The rule reaches the thread with the wake-up; give it a moment.
        std::thread::sleep(Duration::from_millis(50));
        caller.send_to(&rtp(101, 7), ours).unwrap();
        let mut buf = [0u8; 256];
        let (n, from) = agent.recv_from(&mut buf).unwrap();
        assert_eq!(
            from,
            agents.local_addr().unwrap(),
            "sent from the agent leg's port"
        );
        assert_eq!(&buf[..n], &rtp(96, 7)[..], "renumbered on the way");

        // Not the rule's: handed to the worker as it came.
        caller.send_to(&rtp(0, 8), ours).unwrap();
        let mut seen = Vec::new();
        let mut relayed = 0;
        while seen.is_empty() || relayed == 0 {
            let batch = next(&mut rx);
            seen.extend(batch.iter().map(|(p, f, b)| (p, f, b.to_vec())));
            relayed += batch.relayed().iter().map(|&(_, n)| n).sum::<u64>();
            assert!(batch.relayed().iter().all(|&(p, _)| p == cport));
        }
        assert_eq!(seen, vec![(cport, caller.local_addr().unwrap(), rtp(0, 8))]);
        assert_eq!(relayed, 1, "the relayed packet is told as a count");

        // Closing the port it sends from takes the rule back.
        reader.remove(aport);
        std::thread::sleep(Duration::from_millis(50));
        caller.send_to(&rtp(0, 7), ours).unwrap();
        let batch = next(&mut rx);
        assert_eq!(batch.iter().count(), 1, "the worker's again");
        assert_eq!(reader.relay_failed.load(Ordering::Relaxed), 0);
        assert_eq!(reader.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_worker_is_woken_only_when_it_would_sleep_past_the_batch() {
        let mut pool = crate::server::ports::PortPool::new(43000, 43999);
        let (socket, port) = call_socket(&mut pool);
        let sender = peer();
        let (reader, inbox) = RtpReader::start(16).unwrap();
        reader.add(port, Arc::clone(&socket));
        std::thread::sleep(Duration::from_millis(50));
        let ours = socket.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let rung = |within: u64| {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(within), inbox.rung())
                    .await
                    .is_ok()
            })
        };

        // Asleep with nothing due: rung at once.
        inbox.sleep_until(None);
        sender.send_to(&rtp(0, 1), ours).unwrap();
        assert!(rung(2000), "a worker with no deadline is woken");
        inbox.awake();
        assert!(inbox.try_recv().is_some());

        // Due within the lazy wait anyway (a worker pacing calls): the
        // batch waits for it, no wake-up.
        inbox.sleep_until(Some(crate::server::now()));
        sender.send_to(&rtp(0, 2), ours).unwrap();
        assert!(!rung(200), "no wake-up for a worker about to wake");
        inbox.awake();
        assert!(inbox.try_recv().is_some(), "the batch waited for it");

        // Awake: it looks before it sleeps again, so nothing rings.
        sender.send_to(&rtp(0, 3), ours).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!rung(100));
        assert!(inbox.try_recv().is_some());
    }

    #[test]
    fn a_flooded_port_does_not_hold_up_the_others_and_nothing_is_left_unread() {
        let mut pool = crate::server::ports::PortPool::new(44000, 44999);
        let ((flooded, fport), (quiet, qport)) = (call_socket(&mut pool), call_socket(&mut pool));
        let sender = peer();
        // Queued before the reader watches the ports: the flood first,
        // then one packet on the other port.
        for i in 0..100 {
            sender
                .send_to(&rtp(0, i), flooded.local_addr().unwrap())
                .unwrap();
        }
        sender
            .send_to(&rtp(0, 9999), quiet.local_addr().unwrap())
            .unwrap();
        let (reader, mut inbox) = RtpReader::start(1024).unwrap();
        reader.add(fport, Arc::clone(&flooded));
        reader.add(qport, Arc::clone(&quiet));
        let (mut order, mut batches) = (Vec::new(), 0);
        while order.len() < 101 {
            let batch = next(&mut inbox);
            order.extend(batch.iter().map(|(port, _, _)| port));
            batches += 1;
        }
        assert!(
            batches <= 101 / GATHER_TURNS as usize + 2,
            "a packet a turn is gathered, not a batch each: {batches} batches"
        );
        let quiet_at = order.iter().position(|p| *p == qport);
        assert!(
            quiet_at.is_some_and(|i| i < 10),
            "the quiet port's packet came {quiet_at:?}th of {}",
            order.len()
        );
        assert_eq!(order.iter().filter(|p| **p == fport).count(), 100);
    }
}
