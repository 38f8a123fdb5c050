//! The server's configuration: a YAML file, overridable from the command
//! line, with defaults that run the shipped flows on 127.0.0.1:5060.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::callback::limits::BookingRules;
use crate::flow::duration::FlowDuration;
use crate::sip::admission::{
    AdmissionConfig, InboundDigest, Networks, Rate, TrunkPolicy, UnknownSources,
};
use crate::sip::locate::{Host, SipTarget};

/// Where and how `callflow serve` runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The SIP UDP address(es) to listen on: one address or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// The address put in Via and Contact (for NAT) when there is one
    /// listen address; with several, each advertises itself.
    pub advertise: Option<SocketAddr>,
    /// The address RTP is received on (put in SDP); default: the SIP one.
    pub rtp_address: Option<IpAddr>,
    /// RTP ports, `first-last`, inclusive.
    pub rtp_ports: String,
    /// The directory of flow files.
    pub flows: PathBuf,
    /// The directory of prompt files.
    pub prompts: PathBuf,
    /// Dialled number (Request-URI user) to flow name.
    pub routes: BTreeMap<String, String>,
    /// The flow for numbers not in `routes`.
    pub default_flow: String,
    /// The call-record file (JSON lines, appended).
    pub call_records: PathBuf,
    /// This node's name, in every call record (and, with several nodes
    /// behind a load balancer, what tells their records apart); default:
    /// the host name.
    pub node: Option<String>,
    /// The callback database (SQLite, created if missing).
    pub callbacks: PathBuf,
    /// The admin HTTP listener (metrics, health, calls, reload); off
    /// unless configured.
    pub admin: Option<crate::server::admin::AdminConfig>,
    /// Where each queue's estimated wait comes from (flows read it as the
    /// variable `wait_QUEUE`, in seconds).
    pub queue_status: BTreeMap<String, crate::server::queue_status::WaitSource>,
    /// Which numbers callbacks may dial: the caller's own or one typed in.
    pub dialling: crate::server::policy::DiallingPolicy,
    /// Which digits a caller may put into a transfer URI's user part
    /// (`sip:${extension}@pbx`); default: `dialling`'s prefixes, from one
    /// digit up.
    pub transfer_dialling: Option<crate::server::policy::DiallingPolicy>,
    /// Ring (180) this long before answering; 0 answers at once.
    pub answer_delay: FlowDuration,
    /// How long calls in progress may go on after SIGTERM before BYE.
    pub drain: FlowDuration,
    /// End a call after this long without RTP from the caller.
    pub rtp_timeout: FlowDuration,
    /// Accept a call's RTP from the first address it comes from, rather
    /// than only from the address its SDP names, and send ours there: for
    /// peers behind NAT (RFC 4961 latching). The first source must be in
    /// the trunk's media networks and send a negotiated payload type; a
    /// host there that beats the caller to it takes the call's audio, so
    /// those networks should be narrow. Off: a stranger's datagrams never
    /// count.
    pub rtp_latch_first: bool,
    /// How long to wait for the final NOTIFY of a transfer.
    pub transfer_timeout: FlowDuration,
    /// Where calls may come from, by name: each trunk's source networks,
    /// media networks, credentials and limits. Without any, only loopback
    /// is served.
    pub trunks: BTreeMap<String, InboundTrunk>,
    /// What a request from outside every trunk gets: `drop` (nothing, the
    /// default) or `reject` (403, at a bounded rate).
    pub unknown_sources: UnknownSourcesConfig,
    /// How many callbacks one number, and one source address, may book
    /// within a window.
    pub booking_limits: BookingLimitsConfig,
    /// End any call this long after it started.
    pub max_call_duration: FlowDuration,
    /// Take SIP over TCP too, on each listen address and port (RFC 3261
    /// 18); replies and in-dialog requests keep to the connection a call
    /// came on.
    pub tcp: bool,
    /// Take SIP over TLS too, on its own port of each listen address, and
    /// place calls over it (RFC 3261 26.2): our certificate and key, and
    /// optionally the CA a client's certificate must chain to (mutual TLS)
    /// and the roots a server's is checked against.
    pub tls: Option<crate::server::tls::TlsConfig>,
    /// TCP and TLS connections: how long one may stay silent before it is
    /// closed, and how often we ping those we opened (RFC 5626 CRLF
    /// keep-alive; `0s`: never).
    pub streams: StreamsConfig,
    /// How trunk, registrar and queue host names are looked up (RFC 3263).
    pub dns: DnsConfig,
    /// Call workers per listen address, each pacing its own calls (a
    /// call's SIP and RTP stay on one); default: one per CPU core.
    pub workers: Option<usize>,
    /// End a held call (media not both ways) after this long without RTP;
    /// longer than `rtp_timeout`, since held phones often send nothing.
    pub hold_timeout: FlowDuration,
    /// The SIP trunk callbacks are dialled through; without one, callback
    /// requests are stored but not dialled.
    pub trunk: Option<TrunkConfig>,
    /// How callbacks are dialled and retried.
    pub dialler: DiallerConfig,
    /// Per-queue callback settings (queues not listed get the defaults).
    pub queues: BTreeMap<String, QueueConfig>,
}

/// `streams` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Close a connection silent this long.
    pub idle_timeout: FlowDuration,
    /// Ping connections we opened this often; `0s` for never.
    pub keepalive: FlowDuration,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            idle_timeout: FlowDuration(Duration::from_secs(3600)),
            keepalive: FlowDuration(Duration::from_secs(90)),
        }
    }
}

/// `dns` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// The name servers to ask (`192.0.2.53`, `127.0.0.1:5353`); default:
    /// the system's (`/etc/resolv.conf`).
    #[serde(deserialize_with = "name_servers")]
    pub servers: Vec<SocketAddr>,
    /// How long one query may take before it is asked again or of the
    /// next server (twice at most): a lookup fails within a few of these,
    /// never hangs a call.
    pub timeout: FlowDuration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: FlowDuration(Duration::from_secs(2)),
        }
    }
}

fn name_servers<'de, D>(d: D) -> Result<Vec<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    one_or_many::<D, String>(d)?
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    serde::de::Error::custom(format!("`{s}` is not a name server address"))
                })
        })
        .collect()
}

/// `booking_limits` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BookingLimitsConfig {
    /// Bookings for one number within the window.
    pub per_number: usize,
    /// Bookings from one signalling source address within the window.
    pub per_source: usize,
    /// The window.
    pub window: FlowDuration,
}

impl Default for BookingLimitsConfig {
    fn default() -> Self {
        let rules = BookingRules::default();
        Self {
            per_number: rules.per_number,
            per_source: rules.per_source,
            window: FlowDuration(rules.window),
        }
    }
}

impl BookingLimitsConfig {
    /// The rules as the limiter takes them.
    pub fn rules(&self) -> BookingRules {
        BookingRules {
            per_number: self.per_number,
            per_source: self.per_source,
            window: self.window.0,
            ..BookingRules::default()
        }
    }
}

/// `unknown_sources` in the config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSourcesConfig {
    /// Say nothing.
    #[default]
    Drop,
    /// 403 Forbidden.
    Reject,
}

/// One trunk calls may come from (a carrier, an SBC, a PBX, a phone).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundTrunk {
    /// The addresses, networks or host names it sends SIP from
    /// (`192.0.2.10`, `192.0.2.0/24`, `sbc.carrier.example`). A name stands
    /// for every address DNS gives its servers (NAPTR, SRV, then A/AAAA,
    /// as RFC 3263 finds them), followed as the records change.
    #[serde(deserialize_with = "sources")]
    pub sources: Vec<Source>,
    /// The networks its calls may ask for RTP to be sent to; default: its
    /// sources.
    #[serde(default, deserialize_with = "one_or_many_opt")]
    pub media: Option<Vec<ipnet::IpNet>>,
    /// Credentials its INVITEs must carry (we challenge with 401).
    #[serde(default)]
    pub digest: Option<InboundDigestConfig>,
    /// At most this many of its calls at once.
    #[serde(default = "default_max_calls")]
    pub max_calls: usize,
    /// At most this many new calls a second.
    #[serde(default = "default_cps")]
    pub calls_per_second: f64,
    /// What one of its source addresses may send a second, requests and
    /// responses together, before it is blocked for a while; default: ten
    /// times `calls_per_second`.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
}

/// One of a trunk's `sources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An address or a network.
    Network(ipnet::IpNet),
    /// A host name, located by DNS.
    Name(SipTarget),
}

impl std::str::FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Source::Network(net));
        }
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return Ok(Source::Network(ipnet::IpNet::from(ip)));
        }
        // No top-level domain is all digits: `192.0.2.300` or `10.1` is a
        // mistyped address, not a name to look up.
        let last = s.trim_end_matches('.').rsplit('.').next().unwrap_or(s);
        if s.contains('/') || last.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "source `{s}` is not a valid address or network (e.g. 192.0.2.10, 192.0.2.0/24)"
            ));
        }
        let target = SipTarget::parse(s, None)
            .map_err(|e| format!("source {e}: write an address, a network or a host name"))?;
        match (&target.host, target.port) {
            (Host::Name(_), None) => Ok(Source::Name(target)),
            _ => Err(format!(
                "source `{s}`: write an address, a network or a host name (no port: calls may come from any)"
            )),
        }
    }
}

/// `sources: sbc.example` and `sources: [a, b]` both work, and a bad
/// entry is named in the error (an untagged enum of sources would say
/// only that nothing matched).
fn sources<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Source>, D::Error> {
    one_or_many::<D, String>(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

impl InboundTrunk {
    /// Its sources given as addresses and networks.
    pub fn networks(&self) -> Vec<ipnet::IpNet> {
        self.sources
            .iter()
            .filter_map(|s| match s {
                Source::Network(net) => Some(*net),
                Source::Name(_) => None,
            })
            .collect()
    }

    /// Its sources given as names.
    pub fn names(&self) -> Vec<SipTarget> {
        self.sources
            .iter()
            .filter_map(|s| match s {
                Source::Name(target) => Some(target.clone()),
                Source::Network(_) => None,
            })
            .collect()
    }
}

fn default_max_calls() -> usize {
    500
}

fn default_cps() -> f64 {
    20.0
}

/// A trunk's inbound credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundDigestConfig {
    /// The realm in our challenge; default: `callflow`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The username it must present.
    pub username: String,
    /// Its password.
    pub password: String,
}

fn default_realm() -> String {
    "callflow".into()
}

/// The trunk (or outbound proxy) that outbound calls go through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Where INVITEs are sent: the outbound proxy or registrar, as
    /// `ip:port`, `ip`, a host name (located by DNS as RFC 3263 says:
    /// NAPTR, then SRV, then A/AAAA, tried in order) or `host:port`
    /// (A/AAAA only). Or a list of them, tried in order when the ones
    /// before cannot take a request (a primary SBC and its backup); the
    /// first names the trunk in Request-URIs.
    pub address: TrunkAddresses,
    /// The host part of the Request-URI (`sip:NUMBER@domain`); default: the
    /// address.
    pub domain: Option<String>,
    /// The number presented to the callee (our From user part).
    pub from: String,
    /// Digest username, for trunks that challenge (401/407).
    pub username: Option<String>,
    /// Digest password.
    pub password: Option<String>,
    /// `udp`, `tcp` (needs `tcp: true`, which takes the trunk's answers
    /// and requests over the connection too) or `tls` (needs `tls`).
    /// Default: UDP for an address; for a host name without a port,
    /// whatever its NAPTR records prefer among the transports turned on.
    #[serde(default)]
    pub transport: Option<crate::sip::transport::Transport>,
    /// Over TLS, the name the trunk's certificate must carry; default:
    /// its host name, or for an IP address that address.
    pub tls_name: Option<String>,
    /// Register with the trunk (its address is the registrar), so that it
    /// sends calls to us; digest credentials are `username`/`password`.
    pub register: Option<RegisterSettings>,
    /// Calls we place through the trunk (callbacks) use SRTP only (RFC
    /// 3711, keys by SDES, RFC 4568): an `RTP/SAVP` offer, and a callee
    /// that answers in the clear is hung up on. Needs `transport: tls`,
    /// since the keys travel in the SDP. Calls from the trunk take SRTP
    /// whenever they come over TLS and offer it.
    #[serde(default)]
    pub srtp: bool,
}

/// `trunk.register` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSettings {
    /// The user of our address-of-record and Contact; default: `username`,
    /// else `from`.
    pub user: Option<String>,
    /// The binding's lifetime asked for (refreshed before it ends).
    #[serde(default = "default_register_expires")]
    pub expires: FlowDuration,
}

fn default_register_expires() -> FlowDuration {
    FlowDuration(Duration::from_secs(3600))
}

impl TrunkConfig {
    /// The trunk as the endpoint dials through it.
    pub fn outbound(&self) -> crate::call::endpoint::OutboundTrunk {
        crate::call::endpoint::OutboundTrunk {
            address: self.target(),
            backups: self.targets().into_iter().skip(1).collect(),
            domain: self.domain.clone(),
            from: self.from.clone(),
            credentials: self.credentials(),
            srtp: self.srtp,
        }
    }

    /// The registration to keep, if the trunk wants one.
    pub fn registration(&self) -> Option<crate::sip::ua::RegisterConfig> {
        let settings = self.register.as_ref()?;
        Some(crate::sip::ua::RegisterConfig {
            registrar: self.target(),
            backups: self.targets().into_iter().skip(1).collect(),
            domain: self
                .domain
                .clone()
                .unwrap_or_else(|| self.address().host.to_string()),
            user: self.registered_user().unwrap_or_default(),
            credentials: self.credentials(),
            expires: settings.expires.0,
        })
    }

    /// Its first address, as configured.
    pub fn address(&self) -> &SipTarget {
        &self.address.first
    }

    /// Where the trunk is, over the transport configured.
    pub fn target(&self) -> SipTarget {
        SipTarget {
            transport: self.transport,
            ..self.address().clone()
        }
    }

    /// All of its addresses, in order, over the transport configured.
    pub fn targets(&self) -> Vec<SipTarget> {
        std::iter::once(&self.address.first)
            .chain(&self.address.rest)
            .map(|a| SipTarget {
                transport: self.transport,
                ..a.clone()
            })
            .collect()
    }

    /// The user we register as, if we register.
    pub fn registered_user(&self) -> Option<String> {
        let settings = self.register.as_ref()?;
        Some(
            settings
                .user
                .clone()
                .or_else(|| self.username.clone())
                .unwrap_or_else(|| self.from.clone()),
        )
    }

    /// Digest credentials, when both halves are configured.
    pub fn credentials(&self) -> Option<crate::sip::auth::Credentials> {
        match (&self.username, &self.password) {
            (Some(username), Some(password)) => Some(crate::sip::auth::Credentials {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        }
    }
}

/// How the dialler works through the callback requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiallerConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The waits after the 1st, 2nd, ... missed attempt (the last repeats).
    pub backoff: Vec<FlowDuration>,
    /// How long an outbound call rings before it is cancelled.
    pub ring_timeout: FlowDuration,
    /// How often due requests are looked for when nothing else wakes the
    /// dialler (new requests and finished attempts wake it at once).
    pub poll: FlowDuration,
    /// The callback flow for queues that do not name their own.
    pub callback_flow: String,
    /// Callbacks in progress per queue, for queues that do not set theirs.
    pub max_in_progress: usize,
    /// Added to the priority of a callback's transfer to the queue, so that
    /// a caller who was promised a call is served before new callers.
    pub priority_boost: i32,
    /// How long a claim on a request holds unless renewed (every third of
    /// it): with several nodes on one store, a node that dies mid-dial
    /// has its requests dialled by another this long after its last
    /// renewal.
    pub lease: FlowDuration,
}

impl Default for DiallerConfig {
    fn default() -> Self {
        let policy = crate::callback::scheduler::RetryPolicy::default();
        Self {
            max_attempts: policy.max_attempts,
            backoff: policy.backoff.into_iter().map(FlowDuration).collect(),
            ring_timeout: FlowDuration(policy.ring_timeout),
            poll: FlowDuration(Duration::from_secs(1)),
            callback_flow: "callback".into(),
            max_in_progress: 2,
            priority_boost: 1,
            lease: FlowDuration(crate::callback::store::DEFAULT_LEASE),
        }
    }
}

impl DiallerConfig {
    /// The retry rules as the scheduler takes them.
    pub fn retry_policy(&self) -> crate::callback::scheduler::RetryPolicy {
        crate::callback::scheduler::RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            backoff: self.backoff.iter().map(|d| d.0).collect(),
            ring_timeout: self.ring_timeout.0,
        }
    }
}

/// One queue's callback settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// The flow a callback for this queue runs once the callee answers.
    pub callback_flow: Option<String>,
    /// At most this many of its callbacks dialling or in their callback
    /// flow at once, so that callbacks do not flood the agents.
    pub max_in_progress: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            advertise: None,
            rtp_address: None,
            rtp_ports: "20000-29999".into(),
            flows: PathBuf::from("flows"),
            prompts: PathBuf::from("prompts"),
            routes: BTreeMap::new(),
            default_flow: "support".into(),
            call_records: PathBuf::from("calls.jsonl"),
            node: None,
            callbacks: PathBuf::from("callbacks.db"),
            admin: None,
            dialling: crate::server::policy::DiallingPolicy::default(),
            transfer_dialling: None,
            queue_status: BTreeMap::new(),
            answer_delay: FlowDuration(Duration::ZERO),
            drain: FlowDuration(Duration::from_secs(30)),
            rtp_timeout: FlowDuration(Duration::from_secs(60)),
            rtp_latch_first: false,
            transfer_timeout: FlowDuration(Duration::from_secs(30)),
            trunks: BTreeMap::new(),
            unknown_sources: UnknownSourcesConfig::Drop,
            booking_limits: BookingLimitsConfig::default(),
            max_call_duration: FlowDuration(Duration::from_secs(4 * 3600)),
            tcp: false,
            tls: None,
            streams: StreamsConfig::default(),
            dns: DnsConfig::default(),
            workers: None,
            hold_timeout: FlowDuration(Duration::from_secs(3600)),
            trunk: None,
            dialler: DiallerConfig::default(),
            queues: BTreeMap::new(),
        }
    }
}

/// `listen: 127.0.0.1:5060` and `listen: [a, b]` both work.
/// A trunk's `address`: one, or several tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkAddresses {
    /// The first: it names the trunk in Request-URIs.
    pub first: SipTarget,
    /// The others, in order.
    pub rest: Vec<SipTarget>,
}

impl<'de> Deserialize<'de> for TrunkAddresses {
    /// `address: sbc1.example` and `address: [sbc1.example, 192.0.2.11]`
    /// both work; at least one.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut targets = one_or_many::<D, String>(d)?
            .iter()
            .map(|s| SipTarget::parse(s, None).map_err(serde::de::Error::custom))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let first = targets
            .next()
            .ok_or_else(|| serde::de::Error::custom("name at least one address"))?;
        Ok(Self {
            first,
            rest: targets.collect(),
        })
    }
}

fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(v) => v,
    })
}

/// `media: 192.0.2.0/24` and `media: [a, b]` both work.
fn one_or_many_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<ipnet::IpNet>>, D::Error> {
    one_or_many(d).map(Some)
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Value(String),
}

impl ServerConfig {
    /// Reads a YAML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|e| {
            let loc = e.location();
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line: loc.as_ref().map_or(0, |l| l.line()),
                column: loc.as_ref().map_or(0, |l| l.column()),
                message: e.to_string(),
            }
        })
    }

    /// The RTP port range, checked.
    pub fn rtp_port_range(&self) -> Result<(u16, u16), ConfigError> {
        let bad = || {
            ConfigError::Value(format!(
                "rtp_ports `{}` is not a range like 20000-29999",
                self.rtp_ports
            ))
        };
        let (a, b) = self.rtp_ports.split_once('-').ok_or_else(bad)?;
        let (a, b): (u16, u16) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a < 1024 || b < a {
            return Err(ConfigError::Value(format!(
                "rtp_ports `{}`: the first port must be 1024 or more and not above the last",
                self.rtp_ports
            )));
        }
        // One even port per call: a range without one would take no call.
        if a == b && a % 2 == 1 {
            return Err(ConfigError::Value(format!(
                "rtp_ports `{}` holds no even port (RTP uses even ports, RFC 3550 11)",
                self.rtp_ports
            )));
        }
        Ok((a, b))
    }

    /// The policies calls apply to the numbers they would have dialled.
    pub fn dialling_policies(&self) -> crate::server::policy::Dialling {
        let mut policies = crate::server::policy::Dialling::from_callback(self.dialling.clone());
        if let Some(transfer) = &self.transfer_dialling {
            policies.transfer = transfer.clone();
        }
        policies
    }

    /// How TCP and TLS connections are timed.
    pub(crate) fn stream_timing(&self) -> crate::server::tcp::StreamTiming {
        crate::server::tcp::StreamTiming {
            // A zero idle timeout would close every connection at once.
            idle: self.streams.idle_timeout.0.max(Duration::from_secs(1)),
            keepalive: Some(self.streams.keepalive.0).filter(|k| !k.is_zero()),
            ..Default::default()
        }
    }

    /// Admission control as the user agent takes it: the trunks, or
    /// loopback only when there are none.
    pub fn admission(&self) -> Result<AdmissionConfig, ConfigError> {
        let mut config = if self.trunks.is_empty() {
            AdmissionConfig::loopback_only()
        } else {
            AdmissionConfig::default()
        };
        for (name, t) in &self.trunks {
            if t.sources.is_empty() {
                return Err(ConfigError::Value(format!(
                    "trunk {name} has no sources: it could never send a call"
                )));
            }
            let positive = |what: &str, v: f64| {
                if v > 0.0 && v.is_finite() {
                    Ok(v)
                } else {
                    Err(ConfigError::Value(format!(
                        "trunk {name}: {what} must be a positive number, not {v}"
                    )))
                }
            };
            let cps = positive("calls_per_second", t.calls_per_second)?;
            let rps = positive(
                "requests_per_second",
                t.requests_per_second.unwrap_or(10.0 * cps),
            )?;
            let media = t.media.clone().unwrap_or_else(|| t.networks());
            config.trunks.push(TrunkPolicy {
                name: name.clone(),
                sources: Networks::new(t.networks()),
                media: Networks::new(media),
                digest: t.digest.as_ref().map(|d| InboundDigest {
                    realm: d.realm.clone(),
                    username: d.username.clone(),
                    password: d.password.clone(),
                }),
                max_calls: t.max_calls,
                calls_per_second: Rate::per_second(cps),
                source_rate: Rate::per_second(rps),
                located: t.names(),
                located_media: t.media.is_none(),
            });
        }
        config.unknown = match self.unknown_sources {
            UnknownSourcesConfig::Drop => UnknownSources::Drop,
            UnknownSourcesConfig::Reject => UnknownSources::Reject,
        };
        if let Some(out) = &self.trunk {
            // A trunk we register with sends us calls: an inbound trunk
            // too (with the default limits, its media from itself unless
            // `trunks` says more). One we only call out through may
            // answer and send in-dialog requests, never start a call.
            let registrar = |sources: Networks, located: Vec<SipTarget>| TrunkPolicy {
                name: "registrar".into(),
                media: sources.clone(),
                sources,
                digest: None,
                max_calls: default_max_calls(),
                calls_per_second: Rate::per_second(default_cps()),
                source_rate: Rate::per_second(10.0 * default_cps()),
                located,
                located_media: true,
            };
            // Each of its addresses, as one trunk.
            let mut ips = Vec::new();
            let mut names = Vec::new();
            for target in out.targets() {
                match target.host {
                    // Its calls are matched to the inbound trunk that has it.
                    Host::Ip(ip) if config.trunks.iter().any(|t| t.sources.contains(ip)) => {}
                    Host::Ip(ip) => ips.push(ip),
                    // A name: its addresses are let in as DNS gives them (an
                    // inbound trunk in `trunks` that has them still wins).
                    Host::Name(_) => names.push(target),
                }
            }
            if out.register.is_some() {
                if !ips.is_empty() || !names.is_empty() {
                    let hosts = ips.into_iter().map(ipnet::IpNet::from).collect();
                    config.trunks.push(registrar(Networks::new(hosts), names));
                }
            } else {
                config.also_from.extend(ips);
                config.also_located.extend(names);
            }
        }
        Ok(config)
    }

    /// Where calls we place may have RTP sent: the media networks of the
    /// trunk the outbound trunk's address belongs to, else that address.
    pub fn outbound_media(&self, admission: &AdmissionConfig) -> Networks {
        let Some(out) = &self.trunk else {
            return Networks::default();
        };
        // A trunk by name, or by several addresses: worked out per call,
        // from where its answer may come.
        let (Host::Ip(ip), true) = (out.address().host.clone(), out.address.rest.is_empty()) else {
            return Networks::default();
        };
        admission
            .trunks
            .iter()
            .find(|t| t.sources.contains(ip))
            .map(|t| t.media.clone())
            .unwrap_or_else(|| Networks::new(vec![ipnet::IpNet::from(ip)]))
    }

    /// Call workers per listen address: as configured (at least one), else
    /// one per CPU core.
    pub fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 256)
    }

    /// This node's name: as configured, else the host name, else
    /// `callflow`.
    pub fn node_name(&self) -> Result<String, ConfigError> {
        let name = match &self.node {
            Some(name) => name.trim().to_string(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "callflow".to_string()),
        };
        let fits = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if fits {
            Ok(name)
        } else {
            Err(ConfigError::Value(format!(
                "node `{name}`: a node name is 1 to 64 letters, digits, `-`, `_` or `.`"
            )))
        }
    }

    /// The callback flow for `queue`.
    pub fn callback_flow_for(&self, queue: &str) -> &str {
        self.queues
            .get(queue)
            .and_then(|q| q.callback_flow.as_deref())
            .unwrap_or(&self.dialler.callback_flow)
    }

    /// How many callbacks of `queue` may be in progress at once.
    pub fn max_in_progress(&self, queue: &str) -> usize {
        self.queues
            .get(queue)
            .and_then(|q| q.max_in_progress)
            .unwrap_or(self.dialler.max_in_progress)
    }

    /// Which flow each call runs, for the endpoint.
    pub fn routing(&self) -> crate::call::endpoint::Routing {
        crate::call::endpoint::Routing {
            routes: self.routes.clone(),
            default_flow: self.default_flow.clone(),
            callback_flows: self
                .queues
                .iter()
                .filter_map(|(q, c)| Some((q.clone(), c.callback_flow.clone()?)))
                .collect(),
            default_callback_flow: self.dialler.callback_flow.clone(),
        }
    }

    /// The configuration of a listener's endpoint advertising `advertised`
    /// (and `tls_port` for SIP over TLS).
    pub fn endpoint_config(
        &self,
        advertised: SocketAddr,
        tls_port: Option<u16>,
        admission: AdmissionConfig,
        outbound_media: Networks,
        dialling: std::sync::Arc<crate::flow::dialling::Dialling>,
        bookings: std::sync::Arc<std::sync::Mutex<crate::callback::limits::BookingLimits>>,
    ) -> crate::call::endpoint::EndpointConfig {
        let mut ua = crate::sip::ua::UaConfig::new(advertised);
        ua.transfer_timeout = self.transfer_timeout.0;
        ua.admission = admission;
        ua.tls_port = tls_port;
        crate::call::endpoint::EndpointConfig {
            ua,
            rtp_ip: self.rtp_address.unwrap_or(advertised.ip()),
            answer_delay: self.answer_delay.0,
            rtp_timeout: self.rtp_timeout.0,
            hold_timeout: self.hold_timeout.0,
            max_call_duration: self.max_call_duration.0,
            rtp_latch_first: self.rtp_latch_first,
            routing: self.routing(),
            trunk: self.trunk.as_ref().map(TrunkConfig::outbound),
            ring_timeout: self.dialler.retry_policy().ring_timeout,
            priority_boost: self.dialler.priority_boost,
            dialling,
            outbound_media,
            bookings,
        }
    }
}
