//! Who may talk to callflow, and how much: trunk ACLs, per-source rate
//! limits, per-trunk call limits and inbound digest (RFC 3261 22).
//!
//! Every datagram's source address is a claim the network makes; it is the
//! only one we can check before reading the datagram. So the first question
//! about each datagram is whether its source belongs to a configured trunk
//! (a source outside every trunk gets nothing, or a rate-limited 403), the
//! second whether that source is sending too fast (like Kamailio's pike: a
//! source over its rate is blocked for a while, whatever the method), and
//! only a new INVITE then meets the trunk's own limits (concurrent calls,
//! calls per second: 503 with Retry-After, before any RTP port is taken)
//! and, where configured, a digest challenge.
//!
//! Pure like the rest of the user agent: time comes in as `now`, and every
//! table here has a bound with a counter for what the bound turned away.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::auth::{Algorithm, Authorization};
use super::locate::SipTarget;
use super::message::Message;

/// A set of IP networks (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Networks(Arc<[IpNet]>);

impl Networks {
    /// The set of `nets`.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets.into())
    }

    /// 127.0.0.0/8 and ::1: what a server with no trunks configured trusts.
    pub fn loopback() -> Self {
        let v4: IpNet = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(127, 0, 0, 0), 8)
            .map(IpNet::V4)
            .unwrap_or_default();
        let v6 = IpNet::V6(ipnet::Ipv6Net::from(std::net::Ipv6Addr::LOCALHOST));
        Self::new(vec![v4, v6])
    }

    /// Whether `ip` is in one of the networks. An IPv4 address written as
    /// IPv6 (`::ffff:192.0.2.7`, as dual-stack sockets report it) counts as
    /// the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The networks.
    pub fn iter(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.0.iter().copied()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// Credentials a trunk (a phone, an SBC) must prove before its INVITEs are
/// taken: we challenge with 401 (RFC 3261 22.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundDigest {
    /// The protection space named in the challenge.
    pub realm: String,
    /// The username the trunk must present.
    pub username: String,
    /// Its password.
    pub password: String,
}

/// A rate: `per_second` on average, up to `burst` at once (a token bucket).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// The sustained rate.
    pub per_second: f64,
    /// How many may come at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    /// `per_second` with a burst of one second's worth (at least one).
    pub fn per_second(per_second: f64) -> Self {
        Self {
            per_second,
            burst: per_second.max(1.0),
        }
    }
}

/// One trunk as admission control sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkPolicy {
    /// Its name, for logs and call records.
    pub name: String,
    /// The addresses it sends SIP from.
    pub sources: Networks,
    /// The addresses its calls may ask us to send RTP to.
    pub media: Networks,
    /// Challenge its new INVITEs, when set.
    pub digest: Option<InboundDigest>,
    /// At most this many of its calls at once.
    pub max_calls: usize,
    /// At most this many new calls a second (with a burst of one second).
    pub calls_per_second: Rate,
    /// What one source address of the trunk may send, all methods and
    /// responses together, before it is blocked.
    pub source_rate: Rate,
    /// Named servers (a registrar, the trunk's SBCs by host name) whose
    /// addresses, as DNS gives them, are sources of the trunk too.
    pub located: Vec<SipTarget>,
    /// Whether those addresses are media addresses of the trunk too (its
    /// media was not configured apart from its sources).
    pub located_media: bool,
}

/// What to do with a datagram from outside every trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownSources {
    /// Nothing at all: a scanner learns nothing (the default).
    #[default]
    Drop,
    /// A 403 Forbidden to requests, at a bounded rate so that a spoofed
    /// source cannot turn us into a reflector.
    Reject,
}

/// Admission control's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    /// The trunks, searched in order (the first whose sources match wins).
    pub trunks: Vec<TrunkPolicy>,
    /// What sources outside every trunk get.
    pub unknown: UnknownSources,
    /// Addresses that may answer calls we place and send in-dialog requests
    /// but never start a call (the outbound trunk, when it is not also an
    /// inbound one).
    pub also_from: Vec<IpAddr>,
    /// Named servers whose addresses, as DNS gives them, are let in as
    /// `also_from` is (a trunk or a queue called by name).
    pub also_located: Vec<SipTarget>,
    /// At most this many source addresses are tracked for rate limiting;
    /// past it, new sources are dropped (and counted) until idle ones are
    /// forgotten.
    pub max_sources: usize,
    /// How long a source that went over its rate is blocked.
    pub block_for: Duration,
    /// At most this many 403s a second in all, to unknown sources.
    pub reject_rate: Rate,
    /// How long a nonce of ours is good for.
    pub nonce_lifetime: Duration,
}

impl AdmissionConfig {
    /// One trunk, "local", for loopback with generous limits: what a
    /// server with no `trunks` configured runs with.
    pub fn loopback_only() -> Self {
        Self {
            trunks: vec![TrunkPolicy {
                name: "local".into(),
                sources: Networks::loopback(),
                media: Networks::loopback(),
                digest: None,
                max_calls: usize::MAX,
                calls_per_second: Rate::per_second(f64::INFINITY),
                source_rate: Rate::per_second(f64::INFINITY),
                located: Vec::new(),
                located_media: false,
            }],
            ..Self::default()
        }
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            trunks: Vec::new(),
            unknown: UnknownSources::Drop,
            also_from: Vec::new(),
            also_located: Vec::new(),
            max_sources: 65_536,
            block_for: Duration::from_secs(10),
            reject_rate: Rate::per_second(50.0),
            nonce_lifetime: Duration::from_secs(300),
        }
    }
}

/// Which trunk, by its place in [`AdmissionConfig::trunks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrunkId(pub usize);

/// What becomes of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From this trunk, within its rate.
    Trunk(TrunkId),
    /// From an address that may take part in calls but not start them.
    Known,
    /// Dropped without a word.
    Drop,
    /// Answered 403 (when it is a request), nothing else.
    Forbid,
}

/// Why a new call was turned away with 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallRefusal {
    /// The trunk has `max_calls` calls already.
    Busy,
    /// The trunk is over its calls per second.
    TooFast,
}

impl CallRefusal {
    /// The Retry-After, in seconds: short for a rate, longer for capacity
    /// (calls last minutes).
    pub fn retry_after(self) -> &'static str {
        match self {
            CallRefusal::Busy => "5",
            CallRefusal::TooFast => "1",
        }
    }

    /// The 503's reason phrase.
    pub fn phrase(self) -> &'static str {
        match self {
            CallRefusal::Busy => "Service Unavailable (trunk at its call limit)",
            CallRefusal::TooFast => "Service Unavailable (trunk over its call rate)",
        }
    }
}

/// What admission control turned away, since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionCounters {
    /// Datagrams from outside every trunk, dropped.
    pub unknown_dropped: u64,
    /// Requests from outside every trunk answered 403.
    pub unknown_forbidden: u64,
    /// Datagrams from a source over its rate (or blocked for it).
    pub rate_limited: u64,
    /// Sources blocked for going over their rate.
    pub sources_blocked: u64,
    /// Datagrams from a new source dropped because the source table was
    /// full.
    pub source_table_full: u64,
    /// INVITEs refused because their trunk had its calls already.
    pub over_calls: u64,
    /// INVITEs refused because their trunk was over its call rate.
    pub over_rate: u64,
    /// INVITEs challenged for credentials.
    pub challenged: u64,
    /// INVITEs whose credentials were wrong (or from another realm).
    pub bad_credentials: u64,
}

impl AdmissionCounters {
    /// Adds another listener's counts.
    pub fn add(&mut self, o: &AdmissionCounters) {
        self.unknown_dropped += o.unknown_dropped;
        self.unknown_forbidden += o.unknown_forbidden;
        self.rate_limited += o.rate_limited;
        self.sources_blocked += o.sources_blocked;
        self.source_table_full += o.source_table_full;
        self.over_calls += o.over_calls;
        self.over_rate += o.over_rate;
        self.challenged += o.challenged;
        self.bad_credentials += o.bad_credentials;
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes one token if there is one.
    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        if rate.per_second.is_infinite() {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full by `now`, so forgetting it loses
    /// nothing.
    fn idle(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

/// One source address being rate-limited.
#[derive(Debug, Clone, Copy)]
struct Source {
    trunk: TrunkId,
    bucket: Bucket,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
struct TrunkState {
    calls: usize,
    /// Filled at the trunk's first call (no clock before then).
    bucket: Option<Bucket>,
}

/// How a request's credentials came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestVerdict {
    /// No digest is configured for the trunk, or the credentials are right.
    Pass,
    /// Answer 401 with this `WWW-Authenticate` value (and count why).
    Challenge(String),
}

/// One admission state for several user agents (the endpoints of a
/// listener's workers): a trunk's call limit, its call rate and each
/// source's rate are the server's, not a worker's share of them, and a
/// nonce one worker issued must verify on another.
#[derive(Clone)]
pub struct SharedAdmission(Arc<std::sync::Mutex<Admission>>);

impl SharedAdmission {
    /// Shares `admission`.
    pub fn new(admission: Admission) -> Self {
        Self(Arc::new(std::sync::Mutex::new(admission)))
    }

    /// The state, for one decision. A worker that panicked while holding
    /// it left counters at worst one datagram off: keep going.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Admission> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for SharedAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedAdmission")
    }
}

/// Admission control for one user agent.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    trunks: Vec<TrunkState>,
    sources: HashMap<IpAddr, Source>,
    rejects: Option<Bucket>,
    /// The zero of our nonces' clock: the first datagram's arrival.
    epoch: Option<Instant>,
    secret: [u8; 16],
    counters: AdmissionCounters,
    /// The addresses of `located` targets, as the edge last resolved them.
    located: HashMap<SipTarget, Vec<IpAddr>>,
}

impl Admission {
    /// Admission control with `config`; `secret` keys our nonces (random,
    /// from whoever creates us, so tests can fix it).
    pub fn new(config: AdmissionConfig, secret: [u8; 16]) -> Self {
        let trunks = config
            .trunks
            .iter()
            .map(|_| TrunkState {
                calls: 0,
                bucket: None,
            })
            .collect();
        Self {
            config,
            trunks,
            sources: HashMap::new(),
            rejects: None,
            epoch: None,
            secret,
            counters: AdmissionCounters::default(),
            located: HashMap::new(),
        }
    }

    /// `target` is now at `ips` (from DNS): sources there belong to the
    /// trunks and the answers that name it, and no longer where it was.
    pub fn set_located(&mut self, target: &SipTarget, ips: Vec<IpAddr>) {
        let mut ips: Vec<IpAddr> = ips.into_iter().map(|ip| ip.to_canonical()).collect();
        ips.sort();
        ips.dedup();
        if self.located.get(target) == Some(&ips) {
            return;
        }
        // Sources remember their trunk: those no longer here start afresh
        // (and those still here keep their rate and any block).
        if let Some(old) = self.located.get(target) {
            for ip in old.iter().filter(|ip| !ips.contains(ip)) {
                self.sources.remove(ip);
            }
        }
        self.located.insert(target.clone(), ips);
    }

    /// Lets `ip` answer calls we place (a bridged queue a reload added),
    /// as [`AdmissionConfig::also_from`] does.
    pub fn admit_also(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if !self.config.also_from.contains(&ip) {
            self.config.also_from.push(ip);
        }
    }

    /// Lets the servers of `target` answer calls we place, wherever DNS
    /// puts them ([`Admission::set_located`]), as
    /// [`AdmissionConfig::also_located`] does.
    pub fn locate_also(&mut self, target: SipTarget) {
        if !self.config.also_located.contains(&target) {
            self.config.also_located.push(target);
        }
    }

    fn located_at(&self, target: &SipTarget, ip: IpAddr) -> bool {
        self.located
            .get(target)
            .is_some_and(|ips| ips.contains(&ip))
    }

    fn is_source_of(&self, t: &TrunkPolicy, ip: IpAddr) -> bool {
        t.sources.contains(ip) || t.located.iter().any(|l| self.located_at(l, ip))
    }

    /// Whether `ip` may answer calls we place without starting any: the
    /// outbound trunk, a bridged queue.
    fn is_also_from(&self, ip: IpAddr) -> bool {
        self.config.also_from.contains(&ip)
            || self
                .config
                .also_located
                .iter()
                .any(|l| self.located_at(l, ip))
    }

    /// Whether `ip` may open a connection to us: a trunk's source, an
    /// address whose answers we take, or anyone when strangers get a 403
    /// (which needs a connection to go back over). Judged before a TLS
    /// handshake, so that a stranger cannot make us do one.
    pub fn may_connect(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.config.unknown == UnknownSources::Reject
            || self.trunk_of(ip).is_some()
            || self.is_also_from(ip)
    }

    /// Where a call of trunk `id` may have RTP sent: its media networks,
    /// and the addresses of its located servers when they count as media.
    pub fn media_of(&self, id: TrunkId) -> Option<Networks> {
        let t = self.config.trunks.get(id.0)?;
        if !t.located_media || t.located.is_empty() {
            return Some(t.media.clone());
        }
        let mut nets: Vec<IpNet> = t.media.0.to_vec();
        for ips in t.located.iter().filter_map(|l| self.located.get(l)) {
            nets.extend(ips.iter().map(|ip| IpNet::from(*ip)));
        }
        Some(Networks::new(nets))
    }

    /// Where a call with the trunk `ip` is a source of may have RTP sent,
    /// if `ip` belongs to a trunk.
    pub fn media_of_source(&self, ip: IpAddr) -> Option<Networks> {
        self.media_of(self.trunk_of(ip.to_canonical())?)
    }

    /// The settings.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// What was turned away so far.
    pub fn counters(&self) -> AdmissionCounters {
        self.counters
    }

    /// A trunk's settings.
    pub fn trunk(&self, id: TrunkId) -> Option<&TrunkPolicy> {
        self.config.trunks.get(id.0)
    }

    /// Calls of `id` in progress.
    pub fn calls(&self, id: TrunkId) -> usize {
        self.trunks.get(id.0).map_or(0, |t| t.calls)
    }

    /// Source addresses being tracked.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    fn trunk_of(&self, ip: IpAddr) -> Option<TrunkId> {
        self.config
            .trunks
            .iter()
            .position(|t| self.is_source_of(t, ip))
            .map(TrunkId)
    }

    /// Judges one datagram by its source, before it is even parsed.
    pub fn on_datagram(&mut self, now: Instant, source: IpAddr) -> Verdict {
        let source = source.to_canonical();
        self.epoch.get_or_insert(now);
        if let Some(s) = self.sources.get_mut(&source) {
            let trunk = s.trunk;
            return self.meter(now, source, trunk);
        }
        let Some(trunk) = self.trunk_of(source) else {
            if self.is_also_from(source) {
                return Verdict::Known;
            }
            return self.unknown(now);
        };
        let rate = self.config.trunks[trunk.0].source_rate;
        if rate.per_second.is_infinite() {
            return Verdict::Trunk(trunk);
        }
        if self.sources.len() >= self.config.max_sources {
            self.forget_idle(now);
            if self.sources.len() >= self.config.max_sources {
                self.counters.source_table_full += 1;
                return Verdict::Drop;
            }
        }
        self.sources.insert(
            source,
            Source {
                trunk,
                bucket: Bucket::full(rate, now),
                blocked_until: None,
            },
        );
        self.meter(now, source, trunk)
    }

    fn meter(&mut self, now: Instant, source: IpAddr, trunk: TrunkId) -> Verdict {
        let rate = self.config.trunks[trunk.0].source_rate;
        let block_for = self.config.block_for;
        let Some(s) = self.sources.get_mut(&source) else {
            return Verdict::Drop;
        };
        match s.blocked_until {
            Some(until) if now < until => {
                self.counters.rate_limited += 1;
                return Verdict::Drop;
            }
            Some(_) => {
                // The block is served: start again with a full bucket, so
                // a source that floods again is blocked again at once.
                s.blocked_until = None;
                s.bucket = Bucket::full(rate, now);
            }
            None => {}
        }
        if s.bucket.take(rate, now) {
            Verdict::Trunk(trunk)
        } else {
            s.blocked_until = Some(now + block_for);
            self.counters.rate_limited += 1;
            self.counters.sources_blocked += 1;
            tracing::warn!(%source, trunk = %self.config.trunks[trunk.0].name,
                "source over its request rate; blocked for {block_for:?}");
            Verdict::Drop
        }
    }

    fn unknown(&mut self, now: Instant) -> Verdict {
        if self.config.unknown == UnknownSources::Reject {
            let rate = self.config.reject_rate;
            let bucket = self.rejects.get_or_insert_with(|| Bucket::full(rate, now));
            if bucket.take(rate, now) {
                self.counters.unknown_forbidden += 1;
                return Verdict::Forbid;
            }
        }
        self.counters.unknown_dropped += 1;
        Verdict::Drop
    }

    /// Forgets sources that are neither blocked nor short of tokens: they
    /// would start afresh with a full bucket anyway.
    fn forget_idle(&mut self, now: Instant) {
        let trunks = &self.config.trunks;
        self.sources.retain(|_, s| {
            s.blocked_until.is_some_and(|u| now < u)
                || !s.bucket.idle(trunks[s.trunk.0].source_rate, now)
        });
    }

    /// A new call from `trunk`: taken (and counted until
    /// [`Admission::call_ended`]) or refused.
    pub fn admit_call(&mut self, now: Instant, trunk: TrunkId) -> Result<(), CallRefusal> {
        let Some(policy) = self.config.trunks.get(trunk.0) else {
            return Err(CallRefusal::Busy);
        };
        let Some(state) = self.trunks.get_mut(trunk.0) else {
            return Err(CallRefusal::Busy);
        };
        if state.calls >= policy.max_calls {
            self.counters.over_calls += 1;
            return Err(CallRefusal::Busy);
        }
        let rate = policy.calls_per_second;
        let bucket = state.bucket.get_or_insert_with(|| Bucket::full(rate, now));
        if !bucket.take(rate, now) {
            self.counters.over_rate += 1;
            return Err(CallRefusal::TooFast);
        }
        state.calls += 1;
        Ok(())
    }

    /// A call admitted by [`Admission::admit_call`] is over.
    pub fn call_ended(&mut self, trunk: TrunkId) {
        if let Some(state) = self.trunks.get_mut(trunk.0) {
            state.calls = state.calls.saturating_sub(1);
        }
    }

    /// Checks a new INVITE's credentials against its trunk's digest.
    pub fn check_digest(
        &mut self,
        now: Instant,
        trunk: TrunkId,
        source: IpAddr,
        request: &Message,
    ) -> DigestVerdict {
        let Some(digest) = self
            .config
            .trunks
            .get(trunk.0)
            .and_then(|t| t.digest.clone())
        else {
            return DigestVerdict::Pass;
        };
        let sent = request
            .headers_named("Authorization")
            .filter_map(|v| Authorization::parse(v).ok())
            .find(|a| a.realm == digest.realm);
        let Some(auth) = sent else {
            self.counters.challenged += 1;
            return DigestVerdict::Challenge(self.challenge(now, source, &digest.realm, false));
        };
        // The digest-uri is not compared with the Request-URI: SIPp and
        // some phones put our address there instead (RFC 3261 22.4 asks for
        // the Request-URI), and what it would protect, a replay against
        // another URI, is covered by the nonce, which is bound to the
        // sender's address and expires.
        let right = auth
            .verify_as(&digest.username, &digest.password, "INVITE", &request.body)
            .unwrap_or(false);
        match self.nonce_state(now, source, &auth.nonce) {
            NonceState::Fresh if right => DigestVerdict::Pass,
            // Right credentials on an old nonce of ours: ask again with
            // stale=true, so the client retries without asking its user.
            NonceState::Expired if right => {
                self.counters.challenged += 1;
                DigestVerdict::Challenge(self.challenge(now, source, &digest.realm, true))
            }
            _ => {
                self.counters.bad_credentials += 1;
                tracing::info!(%source, username = %auth.username, "wrong credentials for an INVITE");
                DigestVerdict::Challenge(self.challenge(now, source, &digest.realm, false))
            }
        }
    }

    fn challenge(&self, now: Instant, source: IpAddr, realm: &str, stale: bool) -> String {
        let nonce = self.nonce(self.clock(now), source);
        let mut value = format!(
            "Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\", algorithm={}",
            Algorithm::Md5.as_str()
        );
        if stale {
            value.push_str(", stale=true");
        }
        value
    }

    fn clock(&self, now: Instant) -> u64 {
        self.epoch
            .map_or(0, |e| now.saturating_duration_since(e).as_secs())
    }

    /// A nonce that we can check later without keeping it: the time it was
    /// made and a MAC over that time and the client's address.
    fn nonce(&self, at: u64, source: IpAddr) -> String {
        let mut nonce = format!("{at:x}.");
        for b in &self.mac(at, source)[..12] {
            let _ = write!(nonce, "{b:02x}");
        }
        nonce
    }

    fn mac(&self, at: u64, source: IpAddr) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(at.to_be_bytes());
        h.update(source.to_canonical().to_string().as_bytes());
        h.update(self.secret);
        h.finalize().into()
    }

    fn nonce_state(&self, now: Instant, source: IpAddr, nonce: &str) -> NonceState {
        let Some((at, _)) = nonce.split_once('.') else {
            return NonceState::Foreign;
        };
        let Ok(at) = u64::from_str_radix(at, 16) else {
            return NonceState::Foreign;
        };
        if self.nonce(at, source) != nonce {
            return NonceState::Foreign;
        }
        let age = self.clock(now).saturating_sub(at);
        if age > self.config.nonce_lifetime.as_secs() {
            NonceState::Expired
        } else {
            NonceState::Fresh
        }
    }
}

enum NonceState {
    Fresh,
    Expired,
    Foreign,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(sources: &str, rate: Rate) -> TrunkPolicy {
        TrunkPolicy {
            name: "t".into(),
            sources: Networks::new(vec![sources.parse().unwrap()]),
            media: Networks::default(),
            digest: None,
            max_calls: 10,
            calls_per_second: Rate::per_second(10.0),
            source_rate: rate,
            located: Vec::new(),
            located_media: false,
        }
    }

    #[test]
    fn an_ipv4_address_written_as_ipv6_is_the_same_source() {
        let nets = Networks::new(vec!["192.0.2.0/24".parse().unwrap()]);
        assert!(nets.contains("::ffff:192.0.2.7".parse().unwrap()));
        assert!(!nets.contains("::ffff:198.51.100.7".parse().unwrap()));
        assert!(Networks::loopback().contains("::1".parse().unwrap()));
        assert!(Networks::loopback().contains("127.0.0.9".parse().unwrap()));
    }

    #[test]
    fn the_source_table_is_bounded_and_idle_sources_make_room() {
        let config = AdmissionConfig {
            trunks: vec![trunk("10.0.0.0/8", Rate::per_second(10.0))],
            max_sources: 100,
            ..AdmissionConfig::default()
        };
        let mut a = Admission::new(config, [7; 16]);
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let t0 = Instant::now();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..100 {
            assert_eq!(a.on_datagram(t0, ip(i)), Verdict::Trunk(TrunkId(0)));
        }
        assert_eq!(a.on_datagram(t0, ip(100)), Verdict::Drop, "full");
        assert_eq!(a.counters().source_table_full, 1);
        assert_eq!(a.tracked_sources(), 100);
        // A second later every bucket is full again: they are forgotten.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(a.on_datagram(t1, ip(100)), Verdict::Trunk(TrunkId(0)));
        assert_eq!(a.tracked_sources(), 1);
    }

    #[test]
    fn unlimited_trunks_track_no_sources() {
        let mut a = Admission::new(AdmissionConfig::loopback_only(), [0; 16]);
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(
                a.on_datagram(t0, "127.0.0.1".parse().unwrap()),
                Verdict::Trunk(TrunkId(0))
            );
        }
        assert_eq!(a.tracked_sources(), 0);
        assert_eq!(
            a.on_datagram(t0, "192.0.2.1".parse().unwrap()),
            Verdict::Drop
        );
    }

    #[test]
    fn servers_dns_places_are_let_in_for_as_long_as_it_says() {
        use crate::sip::locate::{Host, SipTarget};
        let name = |n: &str| SipTarget {
            host: Host::Name(n.into()),
            port: None,
            transport: None,
        };
        let (registrar, queue) = (name("sip.carrier.example"), name("acd.example"));
        let mut config = AdmissionConfig::default();
        config.trunks.push(TrunkPolicy {
            located: vec![registrar.clone()],
            located_media: true,
            ..trunk("192.0.2.0/24", Rate::per_second(100.0))
        });
        config.also_located.push(queue.clone());
        let mut a = Admission::new(config, [0; 16]);
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let t0 = Instant::now();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(a.on_datagram(t0, ip("198.51.100.7")), Verdict::Drop);
        assert!(!a.may_connect(ip("203.0.113.9")));
        a.set_located(&registrar, vec![ip("198.51.100.8"), ip("198.51.100.7")]);
        a.set_located(&queue, vec![ip("203.0.113.9")]);
        assert_eq!(
            a.on_datagram(t0, ip("198.51.100.7")),
            Verdict::Trunk(TrunkId(0))
        );
        assert_eq!(a.on_datagram(t0, ip("203.0.113.9")), Verdict::Known);
        assert!(a.may_connect(ip("203.0.113.9")) && a.may_connect(ip("198.51.100.8")));
        let media = a.media_of(TrunkId(0)).unwrap();
        assert!(media.contains(ip("198.51.100.8")), "{media}");
        // DNS moves the registrar: the old address is a stranger again.
        a.set_located(&registrar, vec![ip("198.51.100.9")]);
        assert_eq!(a.on_datagram(t0, ip("198.51.100.7")), Verdict::Drop);
        assert_eq!(
            a.on_datagram(t0, ip("198.51.100.9")),
            Verdict::Trunk(TrunkId(0))
        );
    }

    #[test]
    fn a_trunk_with_sources_by_name_takes_every_servers_addresses_and_media_only_if_unset() {
        use crate::sip::locate::{Host, SipTarget};
        let name = |n: &str| SipTarget {
            host: Host::Name(n.into()),
            port: None,
            transport: None,
        };
        let (a_name, b_name) = (name("sbc1.carrier.example"), name("sbc2.carrier.example"));
        let mut config = AdmissionConfig::default();
        config.trunks.push(TrunkPolicy {
            located: vec![a_name.clone(), b_name.clone()],
            located_media: false,
            ..trunk("192.0.2.0/24", Rate::per_second(100.0))
        });
        let mut a = Admission::new(config, [0; 16]);
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let t0 = Instant::now();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        a.set_located(&a_name, vec![ip("198.51.100.1")]);
        a.set_located(&b_name, vec![ip("2001:db8::5")]);
        for source in ["198.51.100.1", "2001:db8::5", "192.0.2.7"] {
            assert_eq!(
                a.on_datagram(t0, ip(source)),
                Verdict::Trunk(TrunkId(0)),
                "{source}"
            );
        }
        // Media configured apart: the servers' addresses are not media.
        let media = a.media_of(TrunkId(0)).unwrap();
        assert!(!media.contains(ip("198.51.100.1")), "{media}");
        let mut a = Admission::new(
            AdmissionConfig {
                trunks: vec![TrunkPolicy {
                    located: vec![a_name.clone()],
                    located_media: true,
                    ..trunk("192.0.2.0/24", Rate::per_second(100.0))
                }],
                ..AdmissionConfig::default()
            },
            [0; 16],
        );
        a.set_located(&a_name, vec![ip("198.51.100.1")]);
        let media = a.media_of(TrunkId(0)).unwrap();
        assert!(media.contains(ip("198.51.100.1")), "{media}");
    }

    #[test]
    fn destinations_added_later_answer_like_those_known_at_the_start() {
        use crate::sip::locate::{Host, SipTarget};
        let mut a = Admission::new(AdmissionConfig::default(), [0; 16]);
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let t0 = Instant::now();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let queue = SipTarget {
            host: Host::Name("acd.example".into()),
            port: None,
            transport: None,
        };
        assert_eq!(a.on_datagram(t0, ip("203.0.113.3")), Verdict::Drop);
        assert_eq!(a.on_datagram(t0, ip("203.0.113.9")), Verdict::Drop);
        a.admit_also(ip("::ffff:203.0.113.3"));
        a.locate_also(queue.clone());
        a.set_located(&queue, vec![ip("203.0.113.9")]);
        assert_eq!(a.on_datagram(t0, ip("203.0.113.3")), Verdict::Known);
        assert_eq!(a.on_datagram(t0, ip("203.0.113.9")), Verdict::Known);
        a.admit_also(ip("203.0.113.3"));
        assert_eq!(a.config().also_from.len(), 1, "once");
    }
}
