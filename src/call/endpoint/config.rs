//! What an [`Endpoint`](super::Endpoint) is configured with: the pure part
//! of the server configuration, with nothing about sockets or files.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::callback::limits::BookingLimits;
use crate::flow::dialling::Dialling;
use crate::sip::admission::Networks;
use crate::sip::auth::Credentials;
use crate::sip::ua::UaConfig;

/// Which flow a call runs.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Dialled number to flow name.
    pub routes: BTreeMap<String, String>,
    /// The flow of a number without a route.
    pub default_flow: String,
    /// Queue to the flow its callbacks run, where it has its own.
    pub callback_flows: BTreeMap<String, String>,
    /// The flow of callbacks of queues without one of their own.
    pub default_callback_flow: String,
}

impl Routing {
    /// The flow a call to `called` runs.
    pub fn flow_for(&self, called: &str) -> &str {
        self.routes
            .get(called)
            .map_or(self.default_flow.as_str(), String::as_str)
    }

    /// The flow a callback of `queue` runs.
    pub fn callback_flow_for(&self, queue: &str) -> &str {
        self.callback_flows
            .get(queue)
            .map_or(self.default_callback_flow.as_str(), String::as_str)
    }
}

/// The trunk callbacks are dialled through.
#[derive(Debug, Clone)]
pub struct OutboundTrunk {
    /// Where INVITEs go: an address, or a name DNS locates (RFC 3263),
    /// perhaps with a port and a transport.
    pub address: crate::sip::locate::SipTarget,
    /// Where INVITEs go when `address` cannot take them: the trunk's other
    /// addresses, in order.
    pub backups: Vec<crate::sip::locate::SipTarget>,
    /// The Request-URI's host, if not the address's.
    pub domain: Option<String>,
    /// Our number, in From.
    pub from: String,
    /// What to answer the trunk's challenges with.
    pub credentials: Option<Credentials>,
    /// Calls placed through it use SRTP only (it is reached over TLS).
    pub srtp: bool,
}

impl OutboundTrunk {
    /// The Request-URI for `number`.
    pub fn target(&self, number: &str) -> String {
        match &self.domain {
            Some(d) => format!("sip:{number}@{d}"),
            None => match self.address.port {
                Some(port) => format!("sip:{number}@{}:{port}", self.address.host),
                None => format!("sip:{number}@{}", self.address.host),
            },
        }
    }
}

/// Everything an endpoint needs besides its flows.
#[derive(Clone)]
pub struct EndpointConfig {
    /// The user agent's configuration (advertised address, timers,
    /// admission control, table bounds).
    pub ua: UaConfig,
    /// The address our SDP gives for RTP.
    pub rtp_ip: IpAddr,
    /// How long a call rings (180) before it is answered.
    pub answer_delay: Duration,
    /// End a call after this long without RTP from the caller.
    pub rtp_timeout: Duration,
    /// ... or this long while media is not both ways (on hold).
    pub hold_timeout: Duration,
    /// End any call this long after it started.
    pub max_call_duration: Duration,
    /// Latch inbound RTP to the first source seen (a peer behind NAT).
    pub rtp_latch_first: bool,
    /// Which flow each call runs.
    pub routing: Routing,
    /// The trunk callbacks go out through, if any.
    pub trunk: Option<OutboundTrunk>,
    /// How long a callback rings before we give up.
    pub ring_timeout: Duration,
    /// Added to a callback transfer's priority.
    pub priority_boost: i32,
    /// The dialling policies (toll fraud).
    pub dialling: Arc<Dialling>,
    /// Where calls we place may have RTP sent.
    pub outbound_media: Networks,
    /// Recent callback bookings, shared by every endpoint of a server.
    pub bookings: Arc<Mutex<BookingLimits>>,
}
