//! SIP transports (RFC 3261 section 18): which one a message came over or
//! goes over, and, for the stream transports, how messages are cut out of
//! the byte stream ([`framing`]).
//!
//! The user agent stays sans-IO: it names a [`Peer`] (transport and
//! address) and the edge finds the connection. A TCP connection is known
//! by its remote address, so a response to a request that came over TCP
//! goes back over the same connection (RFC 3261 18.2.2), and requests to
//! an address we already have a connection with reuse it (RFC 5923). TLS
//! is a stream transport too, on its own port.

pub mod framing;

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Datagrams; the transaction layer retransmits.
    #[default]
    Udp,
    /// A byte stream; reliable, so nothing is retransmitted.
    Tcp,
    /// TCP under TLS (RFC 3261 26.2): reliable, and the peer proved who
    /// it is.
    Tls,
}

impl Transport {
    /// The token in a Via (`SIP/2.0/TCP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// What our Via carries after `rport` on this transport: over TLS,
    /// `alias` (RFC 5923), so that the peer sends its requests to us over
    /// the connection, in order with its responses, rather than opening
    /// one of its own to our sent-by. Not over TCP, where nothing proves
    /// who holds the connection (RFC 5923 applies to TLS only).
    pub fn via_params(self) -> &'static str {
        match self {
            Transport::Udp | Transport::Tcp => "",
            Transport::Tls => ";alias",
        }
    }

    /// The port a URI without one means (RFC 3263 4.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
        }
    }

    /// Whether the transport is reliable (RFC 3261 17: no retransmission
    /// timers, and the lingering states last zero seconds).
    pub fn is_reliable(self) -> bool {
        self != Transport::Udp
    }

    /// The `transport=` URI parameter a Contact on this transport carries
    /// (none for UDP, the default).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        }
    }

    /// The transport a SIP URI asks for: TLS for a `sips:` URI, else its
    /// `transport=` parameter, UDP without one (RFC 3263 4.1, for a
    /// numeric host).
    pub fn of_uri(uri: &str) -> Option<Self> {
        let uri = uri.trim();
        if uri
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("sips:"))
        {
            // Every hop of a sips: URI is TLS; a `transport=tcp` on one
            // (RFC 5630 says so) still means TLS over that TCP.
            return Some(Transport::Tls);
        }
        let params = uri.split('?').next().unwrap_or(uri);
        match params.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("transport")
                .then_some(v.trim())
        }) {
            Some(v) => Self::from_param(v),
            None => Some(Transport::Udp),
        }
    }

    /// The transport a `transport=` URI parameter names, if we speak it.
    pub fn from_param(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_says_its_transport_or_is_udp() {
        assert_eq!(Transport::of_uri("sip:q@10.0.0.5"), Some(Transport::Udp));
        assert_eq!(
            Transport::of_uri("sip:q@10.0.0.5:5080;transport=TCP?X-A=1"),
            Some(Transport::Tcp)
        );
        assert_eq!(Transport::of_uri("sip:q@10.0.0.5;transport=sctp"), None);
        assert_eq!(Transport::of_uri("sip:é@10.0.0.5"), Some(Transport::Udp));
        assert_eq!(
            Transport::of_uri("sip:q@10.0.0.5;transport=tls"),
            Some(Transport::Tls)
        );
        assert_eq!(
            Transport::of_uri("SIPS:q@10.0.0.5;transport=tcp"),
            Some(Transport::Tls),
            "a sips: URI is TLS on every hop"
        );
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// The other end of a message: the transport and the address (for TCP,
/// the connection's remote address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// Over what.
    pub transport: Transport,
    /// Where.
    pub addr: SocketAddr,
}

impl Peer {
    /// A peer reached over UDP.
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Udp,
            addr,
        }
    }

    /// A peer reached over TCP.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Tcp,
            addr,
        }
    }

    /// A peer reached over TLS.
    pub fn tls(addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Tls,
            addr,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.transport)
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        Peer::udp(addr)
    }
}
