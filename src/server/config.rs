//! The server's configuration: a YAML file, overridable from the command
//! line, with defaults that run the shipped flows on 127.0.0.1:5060.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::flow::duration::FlowDuration;

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
    /// The callback database (SQLite, created if missing).
    pub callbacks: PathBuf,
    /// Where each queue's estimated wait comes from (flows read it as the
    /// variable `wait_QUEUE`, in seconds).
    pub queue_status: BTreeMap<String, crate::server::queue_status::WaitSource>,
    /// Which numbers callers may type in for a callback.
    pub dialling: crate::server::policy::DiallingPolicy,
    /// Ring (180) this long before answering; 0 answers at once.
    pub answer_delay: FlowDuration,
    /// How long calls in progress may go on after SIGTERM before BYE.
    pub drain: FlowDuration,
    /// End a call after this long without RTP from the caller.
    pub rtp_timeout: FlowDuration,
    /// How long to wait for the final NOTIFY of a transfer.
    pub transfer_timeout: FlowDuration,
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
            callbacks: PathBuf::from("callbacks.db"),
            dialling: crate::server::policy::DiallingPolicy::default(),
            queue_status: BTreeMap::new(),
            answer_delay: FlowDuration(Duration::ZERO),
            drain: FlowDuration(Duration::from_secs(30)),
            rtp_timeout: FlowDuration(Duration::from_secs(60)),
            transfer_timeout: FlowDuration(Duration::from_secs(30)),
        }
    }
}

/// `listen: 127.0.0.1:5060` and `listen: [a, b]` both work.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(SocketAddr),
        Many(Vec<SocketAddr>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(v) => v,
    })
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
        if a == 0 || b < a {
            return Err(bad());
        }
        Ok((a, b))
    }

    /// The flow for a dialled number.
    pub fn flow_for(&self, called: &str) -> &str {
        self.routes
            .get(called)
            .map_or(self.default_flow.as_str(), String::as_str)
    }
}
