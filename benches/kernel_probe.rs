//! The physical limit to compare the media engine against: what the kernel
//! itself charges to send one RTP-sized datagram (172 bytes: a 12-byte
//! header and 20 ms of G.711) on loopback, measured as the CPU time (user +
//! system) of this process per packet, three ways:
//!
//! - `sendto`: one unconnected socket, round-robin over N destinations;
//! - `connected`: one connected socket per destination, `send` (what each
//!   call's own socket would do once its peer is latched);
//! - `sendmmsg`: one unconnected socket, batches of 64 to N destinations.
//!
//! `cargo bench --bench kernel_probe [-- DESTINATIONS PACKETS]` (defaults
//! 2000 and 400000). Run it in the same session as the load figures: these
//! machines are shared and noisy, so only figures taken together compare.

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
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
    println!("{name:>10}: {per:6.2} us CPU per packet ({packets} packets, {failed} not sent)");
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
    let connected: Vec<UdpSocket> = addrs
        .iter()
        .filter_map(|a| {
            let s = UdpSocket::bind("127.0.0.1:0").ok()?;
            s.connect(a).ok()?;
            Some(s)
        })
        .collect();
    // Two rounds: the first pays for cold caches and growing buffers.
    for round in 1..=2 {
        println!("round {round}");
        probe(&socket, &connected, &addrs, &payload, packets);
    }
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

    let start = cpu();
    let mut failed = 0;
    for i in 0..packets {
        if connected[i % connected.len()].send(payload).is_err() {
            failed += 1;
        }
    }
    report("connected", packets, cpu() - start, failed);

    const BATCH: usize = 64;
    let storage: Vec<SockaddrStorage> = addrs.iter().map(|a| SockaddrStorage::from(*a)).collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let start = cpu();
    let mut failed = 0;
    let mut sent = 0;
    while sent < packets {
        let n = BATCH.min(packets - sent);
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
            Ok(results) => {
                let ok = results.count();
                failed += n - ok.min(n);
            }
            Err(_) => failed += n,
        }
        sent += n;
    }
    report("sendmmsg", packets, cpu() - start, failed);
}
