//! Header values: parameters, the URI in a name-addr, host and port, and
//! the typed Via (RFC 3261 20, RFC 3581).

use std::fmt::Write as _;

/// The `tag` parameter of a From/To value.
pub fn tag_param(value: &str) -> Option<&str> {
    param(header_params(value), "tag")
}

/// The header parameters of a name-addr/addr-spec value (after `>`, or
/// after the URI when there are no angle brackets: RFC 3261 20.10).
pub fn header_params(value: &str) -> &str {
    match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value.find(';').map_or("", |i| &value[i..]),
    }
}

/// A parameter's value from `;a=1;b;c=2` (case-insensitive name).
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The URI inside a name-addr (`"Bob" <sip:bob@x>;tag=1` -> `sip:bob@x`).
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// Host and port of a SIP URI (`sip:user@[::1]:5062;transport=udp`).
pub fn uri_host_port(uri: &str) -> Option<(&str, Option<u16>)> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?']).next().unwrap_or("");
    split_host_port(hostport)
}

fn split_host_port(hostport: &str) -> Option<(&str, Option<u16>)> {
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host, port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None if !hostport.is_empty() => Some((hostport, None)),
        None => None,
    }
}

/// A Via value, parsed (RFC 3261 20.42, RFC 3581).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`...
    pub transport: String,
    /// sent-by host.
    pub host: String,
    /// sent-by port.
    pub port: Option<u16>,
    /// The branch parameter.
    pub branch: Option<String>,
    /// `rport` present (RFC 3581): answer to the source port.
    pub rport: bool,
}

impl Via {
    /// Parses `SIP/2.0/UDP host:port;branch=...;rport`.
    /// `SLASH = SWS "/" SWS` (RFC 3261 25.1), so `SIP / 2.0 / UDP` is a
    /// protocol too (RFC 4475 3.1.1.1). The version is not judged here: a
    /// request of another version is still answered (505) along its Via.
    pub fn parse(value: &str) -> Option<Self> {
        let parts = ViaParts::of(value)?;
        Some(Self {
            transport: parts.transport.to_ascii_uppercase(),
            host: parts.host.to_string(),
            port: parts.port,
            branch: param(parts.params, "branch").map(str::to_string),
            rport: param(parts.params, "rport").is_some(),
        })
    }

    /// Whether `value` is a Via we could answer along, without copying
    /// anything out of it (the parser checks every Via this way).
    pub(super) fn is_valid(value: &str) -> bool {
        ViaParts::of(value).is_some()
    }

    /// The sent-by as `host:port` text, for transaction keys.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// The pieces of a Via value, borrowed from it.
struct ViaParts<'a> {
    transport: &'a str,
    host: &'a str,
    port: Option<u16>,
    params: &'a str,
}

impl<'a> ViaParts<'a> {
    fn of(value: &'a str) -> Option<Self> {
        let mut parts = value.trim().splitn(3, '/');
        let (name, version) = (parts.next()?.trim(), parts.next()?.trim());
        if name.is_empty() || version.is_empty() {
            return None;
        }
        let rest = parts.next()?.trim_start();
        let (transport, rest) = rest.split_once(char::is_whitespace)?;
        if transport.is_empty()
            || !transport
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        {
            return None;
        }
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(sent_by.trim())?;
        Some(Self {
            transport,
            host,
            port,
            params,
        })
    }
}

/// Adds `received` and fills `rport` in the top Via (RFC 3261 18.2.1, RFC
/// 3581 4), so our responses name the address the request came from.
pub fn stamp_top_via(via: &str, source: std::net::SocketAddr) -> String {
    let mut out = String::with_capacity(via.len() + 40);
    let mut parts = via.split(';');
    out.push_str(parts.next().unwrap_or(""));
    for p in parts {
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("rport") {
            let _ = write!(out, ";rport={}", source.port());
        } else if !name.eq_ignore_ascii_case("received") {
            out.push(';');
            out.push_str(p);
        }
    }
    let _ = write!(out, ";received={}", source.ip());
    out
}
