//! The physical limit to compare the media engine against: what the kernel
//! itself charges to send one RTP-sized datagram (172 bytes: a 12-byte
//! header and 20 ms of G.711) on loopback, measured as the CPU time (user +
//! system) of this process per packet, three ways:
//!
//! - `sendto`: one unconnected socket, round-robin over N destinations;
//! - `connected`: one connected socket per destination, `send` (what each
//!   call's own socket would do once its peer is latched);
//! - `sendmmsg`: one unconnected socket, batches of 64 to N destinations;
//! - `per-call sendto`: N sockets, each unconnected, sending to its own
//!   destination (what a call's own RTP socket does before it connects);
//! - `io_uring`: N sockets (one per call), batches of 64 sends submitted
//!   with one system call, unconnected (`io_uring sendto`), connected, and
//!   connected with the sockets registered as the ring's fixed files
//!   (`io_uring fixed`: no `fget`/`fput` per send);
//! - `send ring`: the same connected sends through `send_ring`, as a
//!   worker makes them (its own copy of each packet, `MSG_DONTWAIT`), by
//!   fd and (`send ring slots`) by slot in the ring's table of fixed
//!   files, as a worker sends now where the kernel allows it;
//! - then `connected` and `send ring` again with every socket also in an
//!   epoll set for reading, as a worker's reader has its calls' sockets,
//!   and with every socket polled for reading by io_uring instead (a
//!   multishot poll each), as a reader on io_uring would have them.
//!
//! A call's RTP must leave from the port its SDP names, so sendmmsg, which
//! batches on one socket, cannot batch across calls; io_uring can.
//!
//! `cargo bench --bench kernel_probe [-- DESTINATIONS PACKETS]` (defaults
//! 2000 and 400000). Run it in the same session as the load figures: these
//! machines are shared and noisy, so only figures taken together compare.
//! To compare with a load of N calls, give it N destinations: each way
//! but `sendto` and `sendmmsg` then has a socket per call, as the server
//! does, and how many sockets' kernel state a round cycles through is much
//! of what a send costs (on the 2-core AMD EPYC machine, `send ring` in
//! an epoll set took 2.3-2.6 us per packet with 2,000 destinations and
//! 2.8-3.2 us with 4,000, runs of the same afternoon).

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

/// CPU time (user + system) of this process so far.
fn cpu() -> Duration {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
            };
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

fn report(name: &str, packets: usize, spent: Duration, failed: usize) {
    let per = spent.as_secs_f64() * 1e6 / packets as f64;
    println!("{name:>18}: {per:6.2} us CPU per packet ({packets} packets, {failed} not sent)");
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let destinations = args.first().copied().unwrap_or(2000);
    let packets = args.get(1).copied().unwrap_or(400_000);
    // Receivers that exist (no ICMP port unreachable), never read: once
    // their buffers fill the kernel drops at the last step, as it would
    // for a slow peer; the sending cost is what is measured.
    let sinks: Vec<UdpSocket> = (0..destinations)
        .filter_map(|_| UdpSocket::bind("127.0.0.1:0").ok())
        .collect();
    let addrs: Vec<SocketAddr> = sinks.iter().filter_map(|s| s.local_addr().ok()).collect();
    let payload = [0x80u8; 172];
    println!(
        "kernel probe: {} destinations, {} packets of {} bytes, {} cores",
        addrs.len(),
        packets,
        payload.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let per_call: Vec<UdpSocket> = addrs
        .iter()
        .filter_map(|_| UdpSocket::bind("127.0.0.1:0").ok())
        .collect();
    let connected: Vec<UdpSocket> = addrs
        .iter()
        .filter_map(|a| {
            let s = UdpSocket::bind("127.0.0.1:0").ok()?;
            s.connect(a).ok()?;
            Some(s)
        })
        .collect();
    // Each of N destinations takes three sockets: past the open-files
    // limit the probe would measure fewer than it says.
    if connected.len() < addrs.len() || per_call.len() < addrs.len() || addrs.len() < destinations {
        println!(
            "could open sockets for only {} of {destinations} destinations: raise the open-files limit (ulimit -n)",
            connected.len().min(per_call.len()).min(addrs.len())
        );
        return;
    }
    // Two rounds: the first pays for cold caches and growing buffers.
    for round in 1..=2 {
        println!("round {round}");
        probe(&socket, &connected, &addrs, &payload, packets);
        per_call_probe(&per_call, &connected, &addrs, &payload, packets);
    }
    read_too(&connected, &payload, packets);
}

/// A call's socket is read as well as sent on: a worker's RTP reader has
/// it in an epoll set. Then each send, as the kernel frees the datagram's
/// buffer space, wakes the socket's wait queue, which calls the epoll's
/// entry there (for write space nobody asked for, but under the queue's
/// lock with interrupts off): a cost the sockets above, in no epoll set,
/// do not pay, and the fair limit for a socket that must also be read.
/// io_uring's poll entry checks the event mask before any lock of its
/// own, where epoll's takes the epoll's lock first: the second half of
/// each round measures whether a reader on io_uring would spare that.
fn read_too(connected: &[UdpSocket], payload: &[u8], packets: usize) {
    use rustix::event::epoll;
    for round in 1..=2 {
        // A fresh set each round: closing it takes its entries off the
        // sockets, so the io_uring round after it pays only its own.
        let Ok(poll) = epoll::create(epoll::CreateFlags::CLOEXEC) else {
            println!("no epoll here");
            return;
        };
        for (i, s) in connected.iter().enumerate() {
            let _ = epoll::add(
                &poll,
                s,
                epoll::EventData::new_u64(i as u64),
                epoll::EventFlags::IN,
            );
        }
        println!("round {round}, each socket also in an epoll set for reading");
        connected_probe("connected", connected, payload, packets);
        ring_probe(connected, payload, packets, false);
        ring_probe(connected, payload, packets, true);
        drop(poll);
        let Some(_polls) = uring_polls(connected) else {
            println!("no io_uring poll here");
            return;
        };
        println!("round {round}, each socket also polled for reading by io_uring");
        connected_probe("connected", connected, payload, packets);
        ring_probe(connected, payload, packets, false);
    }
}

/// A ring with a multishot read poll armed on every socket, as a reader
/// on io_uring would have; dropping it takes the polls off (the kernel
/// does so as the ring is torn down). `None` if any poll was refused (a
/// kernel without multishot polls), lest the round measure no polls.
fn uring_polls(sockets: &[UdpSocket]) -> Option<io_uring::IoUring> {
    let mut ring = io_uring::IoUring::new(4096).ok()?;
    for chunk in sockets.chunks(2048) {
        {
            let mut sq = ring.submission();
            for (i, s) in chunk.iter().enumerate() {
                let op = io_uring::opcode::PollAdd::new(
                    io_uring::types::Fd(s.as_raw_fd()),
                    rustix::event::epoll::EventFlags::IN.bits(),
                )
                .multi(true)
                .build()
                .user_data(i as u64);
                // Safety: a poll names no memory of ours.
                unsafe { sq.push(&op) }.ok()?;
            }
        }
        ring.submit().ok()?;
        // A poll that was armed reports nothing until an event; one that
        // was refused has already completed with an error.
        if ring.completion().any(|cqe| cqe.result() < 0) {
            return None;
        }
    }
    Some(ring)
}

/// One `send` a packet, round robin over connected sockets.
fn connected_probe(name: &str, connected: &[UdpSocket], payload: &[u8], packets: usize) {
    let start = cpu();
    let mut failed = 0;
    for i in 0..packets {
        if connected[i % connected.len()].send(payload).is_err() {
            failed += 1;
        }
    }
    report(name, packets, cpu() - start, failed);
}

/// The per-call sockets' ways: one system call a packet, or a batch of
/// sends across many sockets in one io_uring submission.
fn per_call_probe(
    per_call: &[UdpSocket],
    connected: &[UdpSocket],
    addrs: &[SocketAddr],
    payload: &[u8],
    packets: usize,
) {
    let n = per_call.len().min(addrs.len());
    let start = cpu();
    let mut failed = 0;
    for i in 0..packets {
        if per_call[i % n].send_to(payload, addrs[i % n]).is_err() {
            failed += 1;
        }
    }
    report("per-call sendto", packets, cpu() - start, failed);

    let targets: Vec<socket2::SockAddr> = addrs.iter().map(|a| (*a).into()).collect();
    let unconnected: Vec<(i32, Option<&socket2::SockAddr>)> = per_call
        .iter()
        .zip(&targets)
        .map(|(s, a)| (s.as_raw_fd(), Some(a)))
        .collect();
    uring_probe("io_uring sendto", &unconnected, payload, packets, false);
    let fds: Vec<(i32, Option<&socket2::SockAddr>)> =
        connected.iter().map(|s| (s.as_raw_fd(), None)).collect();
    uring_probe("io_uring connected", &fds, payload, packets, false);
    uring_probe("io_uring fixed", &fds, payload, packets, true);
    ring_probe(connected, payload, packets, false);
    ring_probe(connected, payload, packets, true);
}

/// What a worker does: the connected sends of a turn (64 here) through
/// `send_ring`, which copies each packet into its own buffer and sends
/// with `MSG_DONTWAIT` on a ring that does not interrupt the thread; with
/// `slots`, each socket named by its slot in the ring's table.
fn ring_probe(connected: &[UdpSocket], payload: &[u8], packets: usize, slots: bool) {
    const BATCH: usize = 64;
    let name = if slots {
        "send ring slots"
    } else {
        "send ring"
    };
    let mut ring = match send_ring::SendRing::new(256) {
        Ok(ring) => ring,
        Err(e) => {
            println!("{name:>18}: no io_uring here ({e})");
            return;
        }
    };
    if slots {
        let tabled = u32::try_from(connected.len())
            .map_err(std::io::Error::other)
            .and_then(|n| ring.register_slots(n))
            .and_then(|()| {
                connected
                    .iter()
                    .zip(0u32..)
                    .try_for_each(|(s, slot)| ring.set_slot(slot, Some(s.as_fd())))
            });
        if let Err(e) = tabled {
            println!("{name:>18}: no table of fixed files here ({e})");
            return;
        }
    }
    let start = cpu();
    let failed = in_batches(packets, BATCH, |sent, n| {
        let batch = (sent..sent + n).map(|i| {
            let i = i % connected.len();
            let socket = match u32::try_from(i) {
                Ok(slot) if slots => send_ring::Socket::Slot(slot),
                _ => send_ring::Socket::Fd(connected[i].as_fd()),
            };
            (socket, payload)
        });
        match ring.send_all(batch) {
            Ok(counts) => counts.failed,
            Err(e) => e.counts.failed,
        }
    });
    report(name, packets, cpu() - start, failed);
}

/// Runs `send(first, n)` over `packets` in batches of `batch` (the last
/// may be short), adding up the failures each reports.
fn in_batches(packets: usize, batch: usize, mut send: impl FnMut(usize, usize) -> usize) -> usize {
    let mut failed = 0;
    let mut sent = 0;
    while sent < packets {
        let n = batch.min(packets - sent);
        failed += send(sent, n);
        sent += n;
    }
    failed
}

/// Sends `packets` through one ring, 64 submissions a system call, round
/// robin over `sockets` (each with its destination, if unconnected).
fn uring_probe(
    name: &str,
    sockets: &[(i32, Option<&socket2::SockAddr>)],
    payload: &[u8],
    packets: usize,
    fixed: bool,
) {
    const BATCH: usize = 64;
    let Ok(mut ring) = io_uring::IoUring::new(BATCH as u32 * 2) else {
        println!("{name:>18}: no io_uring here");
        return;
    };
    if fixed {
        let fds: Vec<i32> = sockets.iter().map(|&(fd, _)| fd).collect();
        if let Err(e) = ring.submitter().register_files(&fds) {
            println!("{name:>18}: cannot register files ({e})");
            return;
        }
    }
    let start = cpu();
    let failed = in_batches(packets, BATCH, |sent, n| {
        let mut failed = 0;
        {
            let mut sq = ring.submission();
            for k in 0..n {
                let slot = (sent + k) % sockets.len();
                let (fd, to) = sockets[slot];
                let mut op = if fixed {
                    io_uring::opcode::Send::new(
                        io_uring::types::Fixed(slot as u32),
                        payload.as_ptr(),
                        payload.len() as u32,
                    )
                } else {
                    io_uring::opcode::Send::new(
                        io_uring::types::Fd(fd),
                        payload.as_ptr(),
                        payload.len() as u32,
                    )
                };
                if let Some(to) = to {
                    op = op.dest_addr(to.as_ptr().cast()).dest_addr_len(to.len());
                }
                // Safety: the payload and addresses outlive the ring.
                if unsafe { sq.push(&op.build()) }.is_err() {
                    failed += 1;
                }
            }
        }
        if ring.submit_and_wait(n).is_err() {
            failed += n;
        }
        for cqe in ring.completion() {
            if cqe.result() < 0 {
                failed += 1;
            }
        }
        failed
    });
    report(name, packets, cpu() - start, failed);
}

fn probe(
    socket: &UdpSocket,
    connected: &[UdpSocket],
    addrs: &[SocketAddr],
    payload: &[u8],
    packets: usize,
) {
    let start = cpu();
    let mut failed = 0;
    for i in 0..packets {
        if socket.send_to(payload, addrs[i % addrs.len()]).is_err() {
            failed += 1;
        }
    }
    report("sendto", packets, cpu() - start, failed);

    connected_probe("connected", connected, payload, packets);

    const BATCH: usize = 64;
    let storage: Vec<SockaddrStorage> = addrs.iter().map(|a| SockaddrStorage::from(*a)).collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let start = cpu();
    let failed = in_batches(packets, BATCH, |sent, n| {
        let slices: Vec<[IoSlice<'_>; 1]> = (0..n).map(|_| [IoSlice::new(payload)]).collect();
        let targets: Vec<Option<SockaddrStorage>> = (0..n)
            .map(|k| Some(storage[(sent + k) % storage.len()]))
            .collect();
        match sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &slices,
            &targets,
            [],
            MsgFlags::empty(),
        ) {
            Ok(results) => n - results.count().min(n),
            Err(_) => n,
        }
    });
    report("sendmmsg", packets, cpu() - start, failed);
}
