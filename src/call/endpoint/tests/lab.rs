//! The lab: an Endpoint and its peers on a virtual clock, joined by a
//! network with latency and loss in both directions (quinn-proto's `Pair`,
//! str0m's `progress`). Time jumps from one due event to the next: an
//! endpoint timeout, a packet's arrival, a peer's retransmission.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};

use super::peer::Peer;
use crate::call::endpoint::{Endpoint, EndpointConfig, EndpointOutput, Environment, Routing};
use crate::call::record::CallRecord;
use crate::call::runtime::Runtime;
use crate::callback::limits::{BookingLimits, BookingRules};
use crate::callback::{AttemptOutcome, Requested};
use crate::sip::ua::UaConfig;

/// Where the endpoint listens.
pub(super) const ENDPOINT: &str = "127.0.0.1:5060";

/// Ports handed out one after another; no sockets.
struct Ports(u16);

impl Environment for Ports {
    fn open_rtp(&mut self) -> Result<u16, String> {
        self.0 += 2;
        Ok(self.0)
    }

    fn queue_vars(&self, _now: Instant) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A packet on its way.
enum Packet {
    /// SIP from peer `peer` to the endpoint.
    SipIn { peer: usize, bytes: Vec<u8> },
    /// SIP from the endpoint to peer `peer`.
    SipOut { peer: usize, bytes: Vec<u8> },
    /// RTP from a peer to one of the endpoint's ports.
    RtpIn {
        port: u16,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// RTP from the endpoint to a peer.
    RtpOut { peer: usize, bytes: Vec<u8> },
}

/// An RTP packet a peer received.
#[derive(Debug, Clone)]
pub(super) struct Received {
    pub(super) at: Instant,
    pub(super) bytes: Vec<u8>,
}

/// The endpoint, its peers and the network between them.
pub(super) struct Lab {
    pub(super) now: Instant,
    pub(super) endpoint: Endpoint,
    pub(super) peers: Vec<Peer>,
    /// RTP each peer received.
    pub(super) rtp: Vec<Vec<Received>>,
    pub(super) records: Vec<CallRecord>,
    /// Callback requests stored, and attempts settled.
    pub(super) stored: Vec<crate::flow::interpreter::CallbackRequest>,
    pub(super) settled: Vec<AttemptOutcome>,
    /// Each direction drops this share of packets.
    pub(super) loss: f64,
    /// One-way delay.
    pub(super) latency: Duration,
    net: fastrand::Rng,
    in_flight: Vec<(Instant, u64, Packet)>,
    sequence: u64,
    /// The endpoint's RTP ports in use.
    pub(super) open_ports: Vec<u16>,
    /// The RTP peer each port's socket was last told about.
    pub(super) rtp_peers: std::collections::HashMap<u16, Option<crate::media::latch::RtpPeer>>,
    /// The latest any RTP packet left against its due time.
    pub(super) max_late: Duration,
    /// SRTP contexts that seal what a peer's RTP address sends.
    pub(super) sealers: std::collections::HashMap<SocketAddr, rtc_srtp::context::Context>,
    /// Whether the lab relays by the endpoint's relay rules, as the edge
    /// does (on unless a test turns it off to try the endpoint's own relay).
    pub(super) fast_relay: bool,
    /// The relay rules in force, by port.
    pub(super) relays: std::collections::HashMap<u16, crate::call::endpoint::RelayRule>,
    /// Packets relayed by a rule, in all and not yet told to the endpoint.
    pub(super) fast_relayed: u64,
    unreported: std::collections::BTreeMap<u16, u64>,
}

/// An SRTP context for `key` (RFC 3711, AES_CM_128_HMAC_SHA1_80).
pub(super) fn srtp_context(key: &crate::sip::sdp::sdes::SdesKey) -> rtc_srtp::context::Context {
    let provider = rtc_srtp::crypto::default_provider().expect("ring");
    rtc_srtp::context::Context::new(
        key.master_key(),
        key.master_salt(),
        rtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
        None,
        None,
        provider.crypto(),
    )
    .expect("an SRTP context")
}

/// The flows of the SIPp tests and the shipped prompts.
pub(super) fn runtime() -> Arc<Runtime> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let runtime = Runtime::load(&root.join("tests/sipp/flows"), &root.join("prompts"));
    Arc::new(runtime.unwrap_or_else(|e| panic!("the test flows load: {e}")))
}

/// The configuration the lab's endpoint runs with.
pub(super) fn config() -> EndpointConfig {
    let advertised: SocketAddr = ENDPOINT.parse().unwrap();
    let mut routes = std::collections::BTreeMap::new();
    routes.insert("8002".to_string(), "cb".to_string());
    routes.insert("801".to_string(), "lab".to_string());
    routes.insert("802".to_string(), "bridge".to_string());
    EndpointConfig {
        ua: UaConfig::new(advertised),
        rtp_ip: advertised.ip(),
        answer_delay: Duration::ZERO,
        rtp_timeout: Duration::from_secs(60),
        hold_timeout: Duration::from_secs(600),
        max_call_duration: Duration::from_secs(4 * 3600),
        rtp_latch_first: false,
        routing: Routing {
            routes,
            default_flow: "e2e".into(),
            callback_flows: Default::default(),
            default_callback_flow: "callback".into(),
        },
        trunk: None,
        ring_timeout: Duration::from_secs(30),
        priority_boost: 10,
        dialling: Arc::default(),
        outbound_media: Default::default(),
        bookings: Arc::new(Mutex::new(BookingLimits::new(BookingRules::default()))),
    }
}

impl Lab {
    /// A lab whose network loses `loss` of the packets each way, with the
    /// endpoint's IDs and the network's losses drawn from `seed`.
    pub(super) fn new(config: EndpointConfig, loss: f64, seed: u64) -> Self {
        Self::with_runtime(config, runtime(), loss, seed)
    }

    /// [`Lab::new`] running the flows of `runtime`.
    pub(super) fn with_runtime(
        config: EndpointConfig,
        runtime: Arc<Runtime>,
        loss: f64,
        seed: u64,
    ) -> Self {
        #[allow(clippy::disallowed_methods)] // a virtual clock needs a base
        let now = Instant::now();
        let wall = Utc
            .with_ymd_and_hms(2026, 12, 3, 9, 0, 0)
            .single()
            .unwrap_or_default();
        let endpoint = Endpoint::new(
            config,
            runtime,
            Box::new(Ports(30000)),
            fastrand::Rng::with_seed(seed),
            now,
            wall,
        );
        Self {
            now,
            endpoint,
            peers: Vec::new(),
            rtp: Vec::new(),
            records: Vec::new(),
            stored: Vec::new(),
            settled: Vec::new(),
            loss,
            latency: Duration::from_millis(20),
            net: fastrand::Rng::with_seed(seed ^ 0x5eed),
            in_flight: Vec::new(),
            sequence: 0,
            open_ports: Vec::new(),
            rtp_peers: std::collections::HashMap::new(),
            max_late: Duration::ZERO,
            sealers: std::collections::HashMap::new(),
            fast_relay: true,
            relays: std::collections::HashMap::new(),
            fast_relayed: 0,
            unreported: std::collections::BTreeMap::new(),
        }
    }

    /// Adds a peer at 127.0.0.2 (SIP port `sip`, RTP `sip + 10000`).
    pub(super) fn add_peer(&mut self, sip: u16, call_id: &str) -> usize {
        let addr = SocketAddr::from(([127, 0, 0, 2], sip));
        let rtp = SocketAddr::from(([127, 0, 0, 2], sip + 10000));
        self.peers.push(Peer::new(addr, rtp, call_id));
        self.rtp.push(Vec::new());
        self.peers.len() - 1
    }

    fn send(&mut self, packet: Packet) {
        if self.net.f64() < self.loss {
            return;
        }
        self.sequence += 1;
        self.in_flight
            .push((self.now + self.latency, self.sequence, packet));
    }

    pub(super) fn peer_by_addr(&self, addr: SocketAddr) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.addr == addr || p.rtp == addr)
    }

    /// Puts what the peers want to send on the network.
    fn collect_peers(&mut self) {
        for i in 0..self.peers.len() {
            for bytes in std::mem::take(&mut self.peers[i].outbox) {
                self.send(Packet::SipIn { peer: i, bytes });
            }
        }
    }

    /// Puts what the endpoint wants to send on the network, and plays the
    /// store for it.
    fn collect_endpoint(&mut self) {
        while let Some(output) = self.endpoint.poll_output() {
            match output {
                EndpointOutput::Transmit { to, bytes } => match self.peer_by_addr(to.addr) {
                    Some(peer) => self.send(Packet::SipOut {
                        peer,
                        bytes: bytes.to_vec(),
                    }),
                    None => panic!("SIP sent to {to}, where no peer is"),
                },
                EndpointOutput::RtpOpened { port, .. } => self.open_ports.push(port),
                EndpointOutput::RtpClosed { port } => {
                    assert!(
                        !self.relays.contains_key(&port)
                            && self.relays.values().all(|r| r.out_port != port),
                        "port {port} closed while a relay rule uses it"
                    );
                    self.open_ports.retain(|p| *p != port);
                    self.rtp_peers.remove(&port);
                }
                EndpointOutput::RtpPeer { port, peer } => {
                    assert!(self.open_ports.contains(&port), "a peer for a closed port");
                    self.rtp_peers.insert(port, peer);
                }
                EndpointOutput::Relay { port, rule } => match rule {
                    Some(rule) => {
                        assert!(
                            self.open_ports.contains(&port)
                                && self.open_ports.contains(&rule.out_port),
                            "a relay rule for a closed port: {port} {rule:?}"
                        );
                        self.relays.insert(port, rule);
                    }
                    None => {
                        self.relays.remove(&port);
                    }
                },
                EndpointOutput::StoreCallback { call, request, .. } => {
                    let id = self.stored.len() as i64 + 1;
                    self.stored.push(request);
                    self.endpoint.handle_callback_stored(
                        self.now,
                        call,
                        Ok(Requested::Created(id)),
                    );
                }
                EndpointOutput::QueryCallback { call, .. } => {
                    self.endpoint.handle_callback_state(self.now, call, None)
                }
                EndpointOutput::CallbackProgress { .. } => {}
                EndpointOutput::SettleCallback { outcome, .. } => self.settled.push(outcome),
                EndpointOutput::Record(r) => self.records.push(*r),
            }
        }
        let mut rtp = Vec::new();
        self.endpoint
            .drain_rtp(|p| rtp.push((p.to, p.bytes.to_vec())));
        for (to, bytes) in rtp {
            match self.peer_by_addr(to) {
                Some(peer) => self.send(Packet::RtpOut { peer, bytes }),
                None => panic!("RTP sent to {to}, where no peer is"),
            }
        }
    }

    /// The next moment anything is due.
    fn next_event(&self) -> Option<Instant> {
        let network = self.in_flight.iter().map(|(at, _, _)| *at).min();
        let peers = self.peers.iter().filter_map(Peer::poll_timeout).min();
        [self.endpoint.poll_timeout(), network, peers]
            .into_iter()
            .flatten()
            .min()
    }

    /// Moves time to the next event and runs it; false when nothing is due
    /// before `limit`.
    fn step(&mut self, limit: Instant) -> bool {
        self.collect_peers();
        self.collect_endpoint();
        let Some(at) = self.next_event().filter(|at| *at <= limit) else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        // Arrivals, in the order they were sent.
        let mut due: Vec<(Instant, u64, Packet)> = Vec::new();
        let mut waiting = Vec::new();
        for p in self.in_flight.drain(..) {
            if p.0 <= now {
                due.push(p);
            } else {
                waiting.push(p);
            }
        }
        self.in_flight = waiting;
        due.sort_by_key(|(at, seq, _)| (*at, *seq));
        for (_, _, packet) in due {
            match packet {
                Packet::SipIn { peer, bytes } => {
                    let p = &self.peers[peer];
                    let from = if p.tls {
                        crate::sip::transport::Peer::tls(p.addr)
                    } else {
                        crate::sip::transport::Peer::udp(p.addr)
                    };
                    self.endpoint.handle_datagram(now, from, &bytes);
                }
                Packet::SipOut { peer, bytes } => self.peers[peer].handle(now, &bytes),
                Packet::RtpIn {
                    port,
                    from,
                    mut bytes,
                } => match self.relays.get(&port).filter(|_| self.fast_relay) {
                    Some(rule) if rule.forward(from, &mut bytes) => {
                        let Some(peer) = self.peer_by_addr(rule.to) else {
                            panic!("RTP relayed to {}, where no peer is", rule.to);
                        };
                        self.send(Packet::RtpOut { peer, bytes });
                        self.fast_relayed += 1;
                        *self.unreported.entry(port).or_default() += 1;
                    }
                    _ => self.endpoint.handle_rtp(now, port, from, &bytes),
                },
                Packet::RtpOut { peer, bytes } => self.rtp[peer].push(Received { at: now, bytes }),
            }
            self.collect_endpoint();
        }
        for (port, packets) in std::mem::take(&mut self.unreported) {
            self.endpoint.handle_relayed(now, port, packets);
        }
        for p in &mut self.peers {
            if p.poll_timeout().is_some_and(|t| t <= now) {
                p.handle_timeout(now);
            }
        }
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        true
    }

    /// Runs for `d` of virtual time.
    pub(super) fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
        self.now = self.now.max(limit);
        self.collect_peers();
        self.collect_endpoint();
    }

    /// Runs until `done` holds, for at most `limit` of virtual time.
    pub(super) fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Lab) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            if !self.step(end) {
                break;
            }
        }
    }

    /// Sends `count` PCMU packets of `fill` bytes from peer `peer`'s RTP
    /// address to the endpoint's port, 20 ms apart, SSRC `ssrc`.
    pub(super) fn speak(&mut self, peer: usize, count: u16, ssrc: u32, fill: u8) {
        let Some(to) = self.peers[peer].endpoint_rtp() else {
            panic!("no SDP from the endpoint to send audio to");
        };
        let from = self.peers[peer].rtp;
        for i in 0..count {
            let mut p = vec![0x80, self.peers[peer].audio_pt];
            p.extend_from_slice(&i.to_be_bytes());
            p.extend_from_slice(&(160 * u32::from(i)).to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&[fill; 160]);
            self.rtp_in(from, to, u64::from(i), p);
        }
    }

    /// Puts RTP from `from` to the endpoint's `to` on the network, `slot`
    /// times 20 ms from now (lost like any packet).
    fn rtp_in(&mut self, from: SocketAddr, to: SocketAddr, slot: u64, bytes: Vec<u8>) {
        // A peer with an SRTP key sends SRTP.
        let bytes = match self.sealers.get_mut(&from) {
            Some(context) => context
                .encrypt_rtp(&bytes)
                .map(|b| b.to_vec())
                .unwrap_or(bytes),
            None => bytes,
        };
        self.sequence += 1;
        if self.net.f64() < self.loss {
            return;
        }
        let at = self.now + self.latency + Duration::from_millis(20 * slot);
        let port = to.port();
        self.in_flight
            .push((at, self.sequence, Packet::RtpIn { port, from, bytes }));
    }

    /// Sends an RFC 4733 key press from peer `peer`'s RTP address to the
    /// endpoint's port: a start packet, two updates and three end packets
    /// (RFC 4733 2.5.1.4), 20 ms apart, all with one timestamp.
    pub(super) fn press(&mut self, peer: usize, key: u8, timestamp: u32) {
        let Some(to) = self.peers[peer].endpoint_rtp() else {
            panic!("no SDP from the endpoint to send keys to");
        };
        let from = self.peers[peer].rtp;
        for (i, (end, duration)) in [
            (false, 160u16),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
            (true, 640),
        ]
        .into_iter()
        .enumerate()
        {
            let mut p = vec![0x80, self.peers[peer].dtmf_pt, 0, i as u8];
            if i == 0 {
                p[1] |= 0x80; // marker: the start of an event
            }
            p.extend_from_slice(&timestamp.to_be_bytes());
            p.extend_from_slice(&0x5151_5151u32.to_be_bytes());
            p.push(key);
            p.push(if end { 0x80 | 10 } else { 10 });
            p.extend_from_slice(&duration.to_be_bytes());
            self.rtp_in(from, to, i as u64, p);
        }
    }
}
