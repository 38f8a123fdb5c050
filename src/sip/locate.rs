//! Locating SIP servers (RFC 3263): which transport, address and port a
//! request to a trunk, registrar or queue named by host goes to, in what
//! order the candidates are tried, and which of them (RFC 2782 weights)
//! takes the next call.
//!
//! The user agent stays sans-IO: this module decides which DNS questions
//! to ask ([`SipTarget::plan`]) and what their answers mean
//! ([`naptr_services`], [`Located::ordered`]); the edge asks them
//! (`server::dns`) and hands the endpoint what it learnt. A target that
//! is an IP address needs no DNS at all.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::transport::{Peer, Transport};

/// At most this many addresses are tried for one request: a zone that
/// lists hundreds must not hold a call for hundreds of timeouts.
pub const MAX_CANDIDATES: usize = 8;

/// The host part of a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// A numeric address: used as it is.
    Ip(IpAddr),
    /// A domain name, lower case, without a trailing dot.
    Name(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// A SIP server as the configuration or a URI names it: a host, perhaps a
/// port, perhaps a transport (RFC 3263 4.1 and 4.2 turn that into
/// addresses).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SipTarget {
    /// Where.
    pub host: Host,
    /// The port, if named: then no SRV lookup is made (4.2).
    pub port: Option<u16>,
    /// The transport, if named: then no NAPTR lookup is made (4.1).
    pub transport: Option<Transport>,
}

impl std::fmt::Display for SipTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(t) = self.transport {
            write!(f, "{}", t.uri_param())?;
        }
        Ok(())
    }
}

/// What to ask DNS for a target (RFC 3263 4.1, 4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: the target is an address.
    Fixed(Peer),
    /// NAPTR records of the domain, then the SRV names they point at;
    /// without any, [`Plan::Srv`] over `fallback`.
    Naptr {
        /// The domain.
        domain: String,
        /// The SRV names to try when the domain has no NAPTR records,
        /// one per transport we speak.
        fallback: Vec<(Transport, String)>,
    },
    /// SRV records of these names, in order; if none has any, the host's
    /// A/AAAA records at the transport's default port.
    Srv(Vec<(Transport, String)>),
    /// A/AAAA records of the host, at this port over this transport.
    Address {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
        /// The transport.
        transport: Transport,
    },
}

/// The SRV name for `domain` over `transport` (`_sips._tcp.` for TLS,
/// RFC 3263 4.1).
pub fn srv_name(transport: Transport, domain: &str) -> String {
    match transport {
        Transport::Udp => format!("_sip._udp.{domain}"),
        Transport::Tcp => format!("_sip._tcp.{domain}"),
        Transport::Tls => format!("_sips._tcp.{domain}"),
    }
}

impl SipTarget {
    /// The target at an address, over `transport`.
    pub fn at(addr: SocketAddr, transport: Transport) -> Self {
        Self {
            host: Host::Ip(addr.ip()),
            port: Some(addr.port()),
            transport: Some(transport),
        }
    }

    /// Parses `host`, `host:port`, `192.0.2.1:5060` or `[2001:db8::1]:5060`,
    /// over `transport` when one is named. A host name must be a valid
    /// domain name (letters, digits, hyphens, dots).
    pub fn parse(s: &str, transport: Option<Transport>) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self {
                host: Host::Ip(addr.ip()),
                port: Some(addr.port()),
                transport,
            });
        }
        if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse() {
            return Ok(Self {
                host: Host::Ip(ip),
                port: None,
                transport,
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{s}`: `{p}` is not a port"))?;
                (h, Some(port))
            }
            None => (s, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(valid_label) {
            return Err(format!("`{s}` is neither an IP address nor a host name"));
        }
        Ok(Self {
            host: Host::Name(host),
            port,
            transport,
        })
    }

    /// The target a SIP URI names (`sip:q@acd.example.net;transport=tcp`):
    /// its host, its port and its transport (`sips:` is TLS).
    pub fn of_uri(uri: &str) -> Result<Self, String> {
        let transport = Transport::of_uri(uri)
            .ok_or_else(|| format!("`{uri}`: a transport callflow does not speak"))?;
        let named = uri.to_ascii_lowercase().contains(";transport=")
            || uri
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("sips:"));
        let rest = uri
            .split_once(':')
            .map(|(_, r)| r)
            .ok_or_else(|| format!("`{uri}` is not a SIP URI"))?;
        let rest = rest.split(['?', ';']).next().unwrap_or_default();
        let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        Self::parse(host_port, named.then_some(transport)).map_err(|e| format!("`{uri}`: {e}"))
    }

    /// The address itself, for a target that needs no DNS: an IP address
    /// (at its transport's default port if it names none).
    pub fn fixed(&self) -> Option<Peer> {
        let Host::Ip(ip) = self.host else {
            return None;
        };
        let transport = self.transport.unwrap_or_default();
        let port = self.port.unwrap_or(transport.default_port());
        Some(Peer {
            transport,
            addr: SocketAddr::new(ip, port),
        })
    }

    /// What DNS must be asked, with `enabled` the transports we speak (in
    /// the order to prefer them when the domain has no NAPTR records).
    pub fn plan(&self, enabled: &[Transport]) -> Plan {
        if let Some(peer) = self.fixed() {
            return Plan::Fixed(peer);
        }
        let Host::Name(name) = &self.host else {
            return Plan::Srv(Vec::new());
        };
        match (self.port, self.transport) {
            // A port: A/AAAA only (4.2), over the named transport, else UDP.
            (Some(port), t) => Plan::Address {
                host: name.clone(),
                port,
                transport: t.unwrap_or_default(),
            },
            (None, Some(t)) => Plan::Srv(vec![(t, srv_name(t, name))]),
            (None, None) => Plan::Naptr {
                domain: name.clone(),
                fallback: enabled.iter().map(|t| (*t, srv_name(*t, name))).collect(),
            },
        }
    }
}

/// One NAPTR record, as the edge read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    /// Its order.
    pub order: u16,
    /// Its preference.
    pub preference: u16,
    /// Its flags (`s` for SIP).
    pub flags: String,
    /// Its service (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`).
    pub services: String,
    /// The SRV name it points at.
    pub replacement: String,
}

/// The SRV names the NAPTR records of a domain lead to over transports we
/// speak, best first (RFC 3263 4.1: order, then preference; only `s`
/// records; RFC 3403: once a record of some order is usable, records of a
/// later order are not).
pub fn naptr_services(records: &[Naptr], enabled: &[Transport]) -> Vec<(Transport, String)> {
    let mut usable: Vec<(u16, u16, Transport, String)> = records
        .iter()
        .filter(|r| r.flags.eq_ignore_ascii_case("s"))
        .filter_map(|r| {
            let transport = match r.services.to_ascii_uppercase().as_str() {
                "SIP+D2U" => Transport::Udp,
                "SIP+D2T" => Transport::Tcp,
                "SIPS+D2T" => Transport::Tls,
                _ => return None,
            };
            let replacement = r.replacement.trim_end_matches('.').to_ascii_lowercase();
            (enabled.contains(&transport) && !replacement.is_empty()).then_some((
                r.order,
                r.preference,
                transport,
                replacement,
            ))
        })
        .collect();
    usable.sort_by_key(|(order, preference, ..)| (*order, *preference));
    let first_order = usable.first().map(|u| u.0);
    usable
        .into_iter()
        .filter(|u| Some(u.0) == first_order)
        .map(|(_, _, t, name)| (t, name))
        .collect()
}

/// One SRV target (or the host itself), with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Lower goes first: the place of its SRV name among those tried,
    /// then the SRV priority.
    pub rank: (u16, u16),
    /// Its SRV weight among candidates of the same rank.
    pub weight: u16,
    /// Its addresses, each over the candidate's transport.
    pub peers: Vec<Peer>,
}

/// What DNS said about a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The candidates, in no particular order: [`Located::ordered`]
    /// orders them for each request.
    pub candidates: Vec<Candidate>,
    /// How long the answers may be used (the least TTL among them).
    pub ttl: Duration,
}

impl Located {
    /// The addresses to try, in order, for one request: by rank, and
    /// within a rank by a weighted draw (RFC 2782), so that calls spread
    /// over equal servers as their weights say. At most
    /// [`MAX_CANDIDATES`], each once.
    pub fn ordered(&self, rng: &mut fastrand::Rng) -> Vec<Peer> {
        let mut pool: Vec<&Candidate> = self.candidates.iter().collect();
        // Shuffled first, so that equal candidates (all weight 0, say)
        // are not always tried in the order DNS happened to list them.
        rng.shuffle(&mut pool);
        pool.sort_by_key(|c| (c.rank, c.weight != 0));
        let mut out: Vec<Peer> = Vec::new();
        while !pool.is_empty() && out.len() < MAX_CANDIDATES {
            let rank = pool[0].rank;
            let same = pool.iter().take_while(|c| c.rank == rank).count();
            let total: u32 = pool[..same].iter().map(|c| u32::from(c.weight)).sum();
            // RFC 2782: a uniform draw in 0..=total, the first whose
            // running sum reaches it (weight-0 ones sit at the front, so
            // they win only a draw of zero).
            let draw = rng.u32(0..=total);
            let mut running = 0;
            let pick = pool[..same]
                .iter()
                .position(|c| {
                    running += u32::from(c.weight);
                    running >= draw
                })
                .unwrap_or(0);
            let chosen = pool.remove(pick);
            for peer in &chosen.peers {
                if out.len() < MAX_CANDIDATES && !out.contains(peer) {
                    out.push(*peer);
                }
            }
        }
        out
    }

    /// Every address the target may be at, for admission: answers and
    /// requests from them are the target's.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.candidates
            .iter()
            .flat_map(|c| c.peers.iter().map(|p| p.addr.ip()))
    }
}

/// What is known of a target: where it is, or why that is not known.
pub type Resolution = Result<Arc<Located>, String>;

/// Where named targets are, as the edge last learnt from DNS: shared by
/// the user agents of a server, read when a request is about to go out
/// (never per packet), and replaced whole when an answer changes.
#[derive(Debug, Default)]
pub struct Directory {
    entries: std::sync::RwLock<Arc<HashMap<SipTarget, Resolution>>>,
}

impl Directory {
    /// What is known of `target`, if it was ever looked up.
    pub fn get(&self, target: &SipTarget) -> Option<Resolution> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.get(target).cloned()
    }

    /// Replaces what is known of `entries`' targets, and of no other:
    /// several lookers-up (the start's, a reload's) share one directory.
    pub fn publish(&self, entries: impl IntoIterator<Item = (SipTarget, Resolution)>) {
        let mut current = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::clone(&current);
        next.extend(entries);
        *current = Arc::new(next);
    }

    /// Where to send a request for any of `targets`, tried in their
    /// order: each target's servers as [`Directory::locate`] orders them,
    /// then the next target's. Targets DNS cannot place are skipped; an
    /// error only when none can be reached, saying why for each.
    pub fn locate_all<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a SipTarget>,
        rng: &mut fastrand::Rng,
    ) -> Result<Vec<Peer>, String> {
        let mut peers: Vec<Peer> = Vec::new();
        let mut errors = Vec::new();
        for target in targets {
            match self.locate(target, rng) {
                Ok(found) => {
                    for peer in found {
                        if !peers.contains(&peer) {
                            peers.push(peer);
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if peers.is_empty() {
            Err(errors.join("; "))
        } else {
            Ok(peers)
        }
    }

    /// The addresses to try for `target`, in order, for one request: an
    /// IP address as it is, a name as DNS last said (see
    /// [`Located::ordered`]). The error says why there are none, for the
    /// log and the call record.
    pub fn locate(&self, target: &SipTarget, rng: &mut fastrand::Rng) -> Result<Vec<Peer>, String> {
        if let Some(peer) = target.fixed() {
            return Ok(vec![peer]);
        }
        match self.get(target) {
            None => Err(format!("DNS: {target} is not resolved yet")),
            Some(Err(e)) => Err(e),
            Some(Ok(located)) => {
                let peers = located.ordered(rng);
                if peers.is_empty() {
                    Err(format!("DNS: {target} has no addresses"))
                } else {
                    Ok(peers)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Peer {
        Peer::udp(s.parse().unwrap())
    }

    #[test]
    fn targets_parse_as_address_or_name() {
        let t = SipTarget::parse("192.0.2.1:5080", None).unwrap();
        assert_eq!(t.fixed(), Some(peer("192.0.2.1:5080")));
        let t = SipTarget::parse("[2001:db8::1]:5060", Some(Transport::Tcp)).unwrap();
        assert_eq!(
            t.fixed(),
            Some(Peer::tcp("[2001:db8::1]:5060".parse().unwrap()))
        );
        let t = SipTarget::parse("192.0.2.1", Some(Transport::Tls)).unwrap();
        assert_eq!(
            t.fixed(),
            Some(Peer::tls("192.0.2.1:5061".parse().unwrap()))
        );
        let t = SipTarget::parse("Trunk.Example.NET.", None).unwrap();
        assert_eq!(t.host, Host::Name("trunk.example.net".into()));
        assert_eq!(t.port, None);
        assert_eq!(t.fixed(), None);
        let t = SipTarget::parse("trunk.example.net:5080", None).unwrap();
        assert_eq!(t.port, Some(5080));
        for bad in [
            "",
            "trunk..example",
            "-a.example",
            "a b",
            "host:0",
            "host:x",
            "h:70000",
        ] {
            assert!(SipTarget::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn uris_name_their_target() {
        let t = SipTarget::of_uri("sip:queue@acd.example.net;transport=tcp?X-A=1").unwrap();
        assert_eq!(t.host, Host::Name("acd.example.net".into()));
        assert_eq!((t.port, t.transport), (None, Some(Transport::Tcp)));
        let t = SipTarget::of_uri("sips:acd.example.net").unwrap();
        assert_eq!(t.transport, Some(Transport::Tls));
        let t = SipTarget::of_uri("sip:q@10.0.0.5:5070").unwrap();
        assert_eq!(t.fixed(), Some(peer("10.0.0.5:5070")));
        assert!(SipTarget::of_uri("sip:q@acd;transport=sctp").is_err());
    }

    #[test]
    fn the_plan_follows_rfc_3263() {
        let enabled = [Transport::Tls, Transport::Tcp, Transport::Udp];
        let name = |s: &str, t| SipTarget::parse(s, t).unwrap();
        assert_eq!(
            name("t.example", None).plan(&enabled),
            Plan::Naptr {
                domain: "t.example".into(),
                fallback: vec![
                    (Transport::Tls, "_sips._tcp.t.example".into()),
                    (Transport::Tcp, "_sip._tcp.t.example".into()),
                    (Transport::Udp, "_sip._udp.t.example".into()),
                ],
            }
        );
        assert_eq!(
            name("t.example", Some(Transport::Tcp)).plan(&enabled),
            Plan::Srv(vec![(Transport::Tcp, "_sip._tcp.t.example".into())])
        );
        assert_eq!(
            name("t.example:5080", None).plan(&enabled),
            Plan::Address {
                host: "t.example".into(),
                port: 5080,
                transport: Transport::Udp
            }
        );
        assert_eq!(
            name("192.0.2.1", None).plan(&enabled),
            Plan::Fixed(peer("192.0.2.1:5060"))
        );
    }

    fn naptr(order: u16, preference: u16, flags: &str, services: &str, to: &str) -> Naptr {
        Naptr {
            order,
            preference,
            flags: flags.into(),
            services: services.into(),
            replacement: to.into(),
        }
    }

    #[test]
    fn naptr_records_pick_transports_we_speak_in_order() {
        let records = [
            naptr(20, 10, "s", "SIP+D2U", "_sip._udp.b.example."),
            naptr(10, 20, "s", "SIP+D2T", "_sip._tcp.a.example."),
            naptr(10, 10, "s", "SIPS+D2T", "_sips._tcp.a.example."),
            naptr(10, 5, "u", "SIP+D2U", "!x!"),
            naptr(10, 1, "s", "SIP+D2S", "_sip._sctp.a.example."),
        ];
        let all = [Transport::Udp, Transport::Tcp, Transport::Tls];
        assert_eq!(
            naptr_services(&records, &all),
            vec![
                (Transport::Tls, "_sips._tcp.a.example".into()),
                (Transport::Tcp, "_sip._tcp.a.example".into()),
            ],
            "order 10 only, by preference; other flags and services skipped"
        );
        assert_eq!(
            naptr_services(&records, &[Transport::Udp]),
            vec![(Transport::Udp, "_sip._udp.b.example".into())],
            "an order with nothing we speak gives way to the next"
        );
    }

    fn candidate(rank: u16, weight: u16, addr: &str) -> Candidate {
        Candidate {
            rank: (0, rank),
            weight,
            peers: vec![peer(addr)],
        }
    }

    #[test]
    fn candidates_go_by_priority_then_weight() {
        let located = Located {
            candidates: vec![
                candidate(20, 0, "192.0.2.9:5060"),
                candidate(10, 90, "192.0.2.1:5060"),
                candidate(10, 10, "192.0.2.2:5060"),
            ],
            ttl: Duration::from_secs(60),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let mut first = [0usize; 2];
        for _ in 0..1000 {
            let order = located.ordered(&mut rng);
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], peer("192.0.2.9:5060"), "priority 20 comes last");
            first[usize::from(order[0] == peer("192.0.2.2:5060"))] += 1;
        }
        // 90:10 weights: about nine in ten calls try .1 first.
        assert!((850..=950).contains(&first[0]), "{first:?}");
    }

    #[test]
    fn zero_weights_still_all_get_tried_and_the_list_is_bounded() {
        let located = Located {
            candidates: (0..20)
                .map(|i| candidate(10, 0, &format!("192.0.2.{i}:5060")))
                .collect(),
            ttl: Duration::from_secs(60),
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let order = located.ordered(&mut rng);
        assert_eq!(order.len(), MAX_CANDIDATES);
        let mut unique = order.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), MAX_CANDIDATES);
        let firsts: std::collections::HashSet<Peer> =
            (0..100).map(|_| located.ordered(&mut rng)[0]).collect();
        assert!(
            firsts.len() > 5,
            "equal servers share the first tries: {firsts:?}"
        );
    }

    #[test]
    fn several_targets_are_tried_in_order_and_unplaced_ones_skipped() {
        let directory = Directory::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let first = SipTarget::parse("192.0.2.1:5080", None).unwrap();
        let unplaced = SipTarget::parse("sbc.example.test", None).unwrap();
        let last = SipTarget::parse("192.0.2.2", None).unwrap();
        let peers = directory
            .locate_all([&first, &unplaced, &last, &first], &mut rng)
            .unwrap();
        assert_eq!(peers, vec![peer("192.0.2.1:5080"), peer("192.0.2.2:5060")]);
        let why = directory.locate_all([&unplaced], &mut rng).unwrap_err();
        assert!(why.contains("sbc.example.test"), "{why}");
    }

    #[test]
    fn publishers_of_different_names_keep_each_others_entries() {
        let directory = Directory::default();
        let (a, b) = (
            SipTarget::parse("a.example.test", None).unwrap(),
            SipTarget::parse("b.example.test", None).unwrap(),
        );
        directory.publish([(a.clone(), Err("a failed".to_string()))]);
        directory.publish([(b.clone(), Err("b failed".to_string()))]);
        assert_eq!(directory.get(&a), Some(Err("a failed".to_string())));
        directory.publish([(a.clone(), Err("a again".to_string()))]);
        assert_eq!(directory.get(&a), Some(Err("a again".to_string())));
        assert_eq!(directory.get(&b), Some(Err("b failed".to_string())));
    }
}
