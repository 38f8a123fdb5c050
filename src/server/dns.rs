//! DNS for the edge (RFC 3263 with hickory-resolver): the named trunk,
//! registrar and queues are looked up at the start and again as their
//! records expire, and what was learnt goes where the workers read it
//! (the shared [`Directory`]), to admission (answers from those addresses
//! are the server's) and to TLS (the name a server's certificate must
//! carry). Lookups never run on a call's path: a call dials with what is
//! known, and a name DNS cannot place fails the call with why.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use super::config::DnsConfig;
use crate::sip::admission::SharedAdmission;
use crate::sip::locate::{
    naptr_services, Candidate, Directory, Located, Naptr, Plan, Resolution, SipTarget,
};
use crate::sip::transport::{Peer, Transport};

/// SRV records taken per name at most, and addresses per host: a zone
/// cannot make us hold thousands of candidates.
const MAX_RECORDS: usize = 16;
const MAX_ADDRESSES: usize = 4;
/// Answers are used for their TTL, but looked up again no sooner than
/// this (a zero TTL must not make us ask in a loop) ...
const MIN_REFRESH: Duration = Duration::from_secs(5);
/// ... and no later than this.
const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// After a failed lookup, the next try comes this soon.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// A failed lookup keeps the last good answer this long past its TTL
/// (serve-stale, RFC 8767): a DNS outage does not take the trunk down
/// with it.
const STALE_FOR: Duration = Duration::from_secs(3600);

/// Looks SIP servers up as RFC 3263 says.
pub(super) struct Locator {
    resolver: TokioResolver,
    /// The transports we speak, best first.
    enabled: Vec<Transport>,
}

impl Locator {
    /// A locator asking `config`'s name servers (else the system's), for
    /// a server speaking `enabled`.
    pub(super) fn new(config: &DnsConfig, enabled: Vec<Transport>) -> Result<Self, String> {
        let mut builder = if config.servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| format!("DNS: cannot read the system's resolver settings: {e}"))?
        } else {
            let servers = config
                .servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    // A truncated answer is asked again over TCP.
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.timeout = config.timeout.0;
        options.attempts = 2;
        let resolver = builder
            .build()
            .map_err(|e| format!("DNS: cannot start the resolver: {e}"))?;
        Ok(Self { resolver, enabled })
    }

    /// Where `target` is, as DNS says now.
    pub(super) async fn locate(&self, target: &SipTarget) -> Result<Located, String> {
        let located = match target.plan(&self.enabled) {
            Plan::Fixed(peer) => Located {
                candidates: vec![Candidate {
                    rank: (0, 0),
                    weight: 0,
                    peers: vec![peer],
                }],
                ttl: MAX_REFRESH,
            },
            Plan::Address {
                host,
                port,
                transport,
            } => self.host(&host, port, transport).await?,
            Plan::Srv(names) => match self.srv(&names).await? {
                Some(located) => located,
                // No SRV records: the host itself, at the transport's port.
                None => {
                    let transport = target.transport.unwrap_or_default();
                    let host = target.host.to_string();
                    self.host(&host, transport.default_port(), transport)
                        .await?
                }
            },
            Plan::Naptr { domain, fallback } => self.naptr(&domain, &fallback).await?,
        };
        if located.candidates.iter().all(|c| c.peers.is_empty()) {
            return Err(format!("DNS: {target} has no usable addresses"));
        }
        Ok(located)
    }

    /// NAPTR first; without usable records, SRV for each transport we
    /// speak; without those, the domain's own addresses over UDP (4.1).
    async fn naptr(
        &self,
        domain: &str,
        fallback: &[(Transport, String)],
    ) -> Result<Located, String> {
        let records = match self.resolver.lookup(fqdn(domain), RecordType::NAPTR).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::NAPTR(n) => Some(Naptr {
                        order: n.order,
                        preference: n.preference,
                        flags: String::from_utf8_lossy(&n.flags).into_owned(),
                        services: String::from_utf8_lossy(&n.services).into_owned(),
                        replacement: n.replacement.to_ascii(),
                    }),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_no_records_found() => Vec::new(),
            // Some resolvers and middleboxes fail NAPTR queries outright:
            // go on as if there were none (SRV, then A/AAAA).
            Err(e) => {
                tracing::warn!(%domain, "DNS: NAPTR {domain}: {e}; trying SRV");
                Vec::new()
            }
        };
        let services = naptr_services(&records, &self.enabled);
        let names = if services.is_empty() {
            fallback
        } else {
            &services[..]
        };
        match self.srv(names).await? {
            Some(located) => Ok(located),
            None if services.is_empty() => {
                self.host(domain, Transport::Udp.default_port(), Transport::Udp)
                    .await
            }
            None => Err(format!(
                "DNS: the NAPTR records of {domain} lead to no SRV records"
            )),
        }
    }

    /// The SRV records of `names` (ranked by their place in it), with the
    /// addresses of their targets; `None` if no name has any.
    async fn srv(&self, names: &[(Transport, String)]) -> Result<Option<Located>, String> {
        let mut candidates = Vec::new();
        let mut ttl = MAX_REFRESH;
        let mut found = false;
        let mut failed = None;
        for (place, (transport, name)) in names.iter().enumerate() {
            let lookup = match self.resolver.lookup(fqdn(name), RecordType::SRV).await {
                Ok(lookup) => lookup,
                Err(e) if e.is_no_records_found() => continue,
                // One name failing (a `_sips._tcp` query a middlebox
                // drops) leaves the others; it fails the lot only if
                // nothing else answers.
                Err(e) => {
                    tracing::warn!(srv = %name, "DNS: SRV {name}: {e}");
                    failed = Some(format!("DNS: SRV {name}: {e}"));
                    continue;
                }
            };
            for record in lookup.answers().iter().take(MAX_RECORDS) {
                let RData::SRV(srv) = &record.data else {
                    continue;
                };
                found = true;
                ttl = ttl.min(Duration::from_secs(u64::from(record.ttl)));
                let target = srv.target.to_ascii();
                // "." says the service is not offered there (RFC 2782).
                if srv.target.is_root() {
                    continue;
                }
                match self.addresses(&target).await {
                    Ok((ips, addr_ttl)) => {
                        ttl = ttl.min(addr_ttl);
                        candidates.push(Candidate {
                            rank: (u16::try_from(place).unwrap_or(u16::MAX), srv.priority),
                            weight: srv.weight,
                            peers: ips
                                .into_iter()
                                .map(|ip| Peer {
                                    transport: *transport,
                                    addr: SocketAddr::new(ip, srv.port),
                                })
                                .collect(),
                        });
                    }
                    // One target that does not resolve leaves the others.
                    Err(e) => tracing::warn!(srv = %name, "{e}"),
                }
            }
        }
        match (found, failed) {
            (false, Some(e)) => Err(e),
            (found, _) => Ok(found.then_some(Located { candidates, ttl })),
        }
    }

    /// `host`'s addresses at `port` over `transport`.
    async fn host(&self, host: &str, port: u16, transport: Transport) -> Result<Located, String> {
        let (ips, ttl) = self.addresses(host).await?;
        Ok(Located {
            candidates: vec![Candidate {
                rank: (0, 0),
                weight: 0,
                peers: ips
                    .into_iter()
                    .map(|ip| Peer {
                        transport,
                        addr: SocketAddr::new(ip, port),
                    })
                    .collect(),
            }],
            ttl,
        })
    }

    /// A host's A/AAAA records, and their TTL.
    async fn addresses(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), String> {
        let lookup = self
            .resolver
            .lookup_ip(fqdn(host))
            .await
            .map_err(|e| format!("DNS: {host}: {e}"))?;
        let ttl = lookup
            .as_lookup()
            .answers()
            .iter()
            .map(|r| Duration::from_secs(u64::from(r.ttl)))
            .min()
            .unwrap_or(MIN_REFRESH);
        let ips: Vec<IpAddr> = lookup.iter().take(MAX_ADDRESSES).collect();
        if ips.is_empty() {
            return Err(format!("DNS: {host} has no addresses"));
        }
        Ok((ips, ttl))
    }
}

/// `name` as a fully qualified name, so that no search domain is tried.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// Where what DNS says goes.
pub(super) struct Sinks {
    /// What the workers dial with.
    pub directory: Arc<Directory>,
    /// Each listener's admission.
    pub admissions: Vec<SharedAdmission>,
    /// TLS, with the name each target's servers must prove.
    pub tls: Option<(super::tls::Tls, HashMap<SipTarget, String>)>,
}

/// How long an address DNS no longer gives is still let in: calls in
/// progress with a server that left the records keep their BYE and
/// re-INVITEs.
const RETIRED_FOR: Duration = Duration::from_secs(4 * 3600);

/// One target's state in the refresher.
struct Entry {
    resolution: Resolution,
    /// When the last good answer stops being usable.
    good_until: Option<tokio::time::Instant>,
    /// When to look it up again.
    next: tokio::time::Instant,
    /// Addresses it had, let in until then.
    retired: Vec<(IpAddr, tokio::time::Instant)>,
}

impl Entry {
    /// The addresses let in for the target now: its current ones and
    /// those retired not long ago, sorted.
    fn admitted(&self, now: tokio::time::Instant) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = match &self.resolution {
            Ok(located) => located.addresses().collect(),
            Err(_) => Vec::new(),
        };
        ips.extend(
            self.retired
                .iter()
                .filter(|(_, u)| now < *u)
                .map(|(ip, _)| *ip),
        );
        ips.sort();
        ips.dedup();
        ips
    }
}

/// How long the start waits for the first lookups: past it, the server
/// takes calls anyway (a name still unknown fails its calls with why) and
/// the lookups go on in the background.
const FIRST_LOOKUPS_WITHIN: Duration = Duration::from_secs(5);

/// Looks `targets` up now, waiting for the answers a few seconds at most
/// (before calls are taken), then keeps them fresh in the background for
/// as long as the server runs.
pub(super) async fn keep_located(locator: Locator, targets: Vec<SipTarget>, sinks: Sinks) {
    let (first, done) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut entries: HashMap<SipTarget, Entry> = HashMap::new();
        refresh(&locator, &targets, &mut entries, &sinks).await;
        let _ = first.send(());
        loop {
            let next = entries.values().map(|e| e.next).min();
            let Some(next) = next else {
                return;
            };
            tokio::time::sleep_until(next).await;
            let now = tokio::time::Instant::now();
            let due: Vec<SipTarget> = entries
                .iter()
                .filter(|(_, e)| e.next <= now)
                .map(|(t, _)| t.clone())
                .collect();
            refresh(&locator, &due, &mut entries, &sinks).await;
        }
    });
    if tokio::time::timeout(FIRST_LOOKUPS_WITHIN, done)
        .await
        .is_err()
    {
        tracing::warn!(
            "DNS: the first lookups are taking longer than {FIRST_LOOKUPS_WITHIN:?}; taking calls meanwhile"
        );
    }
}

async fn refresh(
    locator: &Locator,
    targets: &[SipTarget],
    entries: &mut HashMap<SipTarget, Entry>,
    sinks: &Sinks,
) {
    for target in targets {
        let now = tokio::time::Instant::now();
        let answer = locator.locate(target).await;
        let previous = entries.remove(target);
        // What it had and no longer has is retired, not forgotten.
        let mut retired: Vec<(IpAddr, tokio::time::Instant)> = Vec::new();
        if let Some(p) = &previous {
            retired.extend(p.retired.iter().filter(|(_, u)| now < *u));
            if let Ok(old) = &p.resolution {
                retired.extend(old.addresses().map(|ip| (ip, now + RETIRED_FOR)));
            }
        }
        let entry = match answer {
            Ok(located) => {
                // Round-robin DNS reorders its answers: only a new set of
                // places is news.
                let places = |l: &Located| {
                    let mut peers: Vec<Peer> =
                        l.candidates.iter().flat_map(|c| c.peers.clone()).collect();
                    peers.sort();
                    peers
                };
                let changed = previous
                    .as_ref()
                    .and_then(|p| p.resolution.as_ref().ok())
                    .is_none_or(|p| places(p) != places(&located));
                if changed {
                    let at: Vec<String> = located
                        .candidates
                        .iter()
                        .flat_map(|c| c.peers.iter().map(|p| p.to_string()))
                        .collect();
                    tracing::info!(%target, at = ?at, ttl_s = located.ttl.as_secs(), "located");
                }
                let ttl = located.ttl;
                let current: Vec<IpAddr> = located.addresses().collect();
                retired.retain(|(ip, _)| !current.contains(ip));
                Entry {
                    resolution: Ok(Arc::new(located)),
                    good_until: Some(now + ttl + STALE_FOR),
                    next: now + ttl.clamp(MIN_REFRESH, MAX_REFRESH),
                    retired,
                }
            }
            Err(e) => {
                let next = now + RETRY_AFTER_FAILURE;
                match previous {
                    // Keep using the last good answer for a while.
                    Some(p) if p.good_until.is_some_and(|u| now < u) && p.resolution.is_ok() => {
                        tracing::warn!(%target, "{e}; still using its last known addresses");
                        let current: Vec<IpAddr> = match &p.resolution {
                            Ok(l) => l.addresses().collect(),
                            Err(_) => Vec::new(),
                        };
                        retired.retain(|(ip, _)| !current.contains(ip));
                        Entry { next, retired, ..p }
                    }
                    _ => {
                        tracing::error!(%target, "{e}");
                        Entry {
                            resolution: Err(e),
                            good_until: None,
                            next,
                            retired,
                        }
                    }
                }
            }
        };
        let ips = entry.admitted(now);
        for admission in &sinks.admissions {
            admission.lock().set_located(target, ips.clone());
        }
        if let Ok(located) = &entry.resolution {
            if let Some((tls, names)) = &sinks.tls {
                if let Some(name) = names.get(target) {
                    for c in &located.candidates {
                        for p in c.peers.iter().filter(|p| p.transport == Transport::Tls) {
                            if let Err(e) = tls.expect_name(p.addr, name) {
                                tracing::error!(%target, "{e}");
                            }
                        }
                    }
                }
            }
        }
        // Published per target: one slow name holds up no other.
        sinks
            .directory
            .publish([(target.clone(), entry.resolution.clone())]);
        entries.insert(target.clone(), entry);
    }
}
