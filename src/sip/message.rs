//! SIP messages as they arrive from real trunks, and the responses and
//! requests we send.
//!
//! rsip tokenizes and validates the start line and URIs, but leaves gaps
//! that real peers hit (RFC 3261 section 7.3): folded header lines, compact
//! header names (`v:`, `i:`...), several values in one header line, and a
//! body longer than Content-Length. So a datagram is first normalised here,
//! then checked by rsip, and the fields a UA needs are read into [`Message`]
//! once. Outgoing messages are written as text directly: exact, CRLF-clean
//! and cheap.

use std::fmt::Write as _;

/// A SIP method; methods rsip does not know are kept by name (answered 501).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// INFO (RFC 6086), used for DTMF
    Info,
    /// REFER (RFC 3515)
    Refer,
    /// NOTIFY (RFC 6665)
    Notify,
    /// UPDATE (RFC 3311)
    Update,
    /// PRACK (RFC 3262)
    Prack,
    /// Any other method, by name.
    Other(String),
}

impl Method {
    /// Reads a method token.
    pub fn parse(token: &str) -> Self {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            other => Method::Other(other.to_string()),
        }
    }

    /// The token as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Other(s) => s,
        }
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`
    Request {
        /// The method.
        method: Method,
        /// The Request-URI as written.
        uri: String,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
}

/// A parsed message: start line, headers in order (long names), body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Headers in arrival order, names in their long form, one value each
    /// (a line with several comma-separated values is split where the
    /// header's grammar allows it).
    pub headers: Vec<(String, String)>,
    /// The body, cut to Content-Length.
    pub body: Vec<u8>,
}

/// Why a datagram is not a usable SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Only whitespace: a keep-alive (RFC 5626 CRLF ping); not an error to report.
    #[error("keep-alive")]
    KeepAlive,
    /// Not SIP at all, or no way to answer it; dropped (RFC 3261 18.3).
    #[error("not a SIP message: {0}")]
    Garbage(String),
    /// A request we can answer, but malformed: answer 400 with the reason.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong, for the reason phrase / Warning.
        reason: String,
        /// As much as could be read, to build the 400 from.
        partial: Box<Message>,
    },
    /// A request we can read but must refuse with a status of its own:
    /// 505 for another SIP version (RFC 3261 8.2.1... 21.5.7), 416 for a
    /// Request-URI scheme we do not serve (8.2.2.1).
    #[error("{status} {reason}")]
    Refuse {
        /// 505 or 416.
        status: u16,
        /// The reason phrase.
        reason: &'static str,
        /// The request, to build the answer from.
        partial: Box<Message>,
    },
}

/// Why a request line could not be used.
enum StartLineError {
    /// Not SIP at all: dropped.
    Garbage(String),
    /// A request line we recognise but cannot accept: the method, and
    /// whether only the version is wrong (505) or its form (400).
    Request {
        method: Method,
        uri: String,
        version_only: bool,
        reason: String,
    },
}

/// Compact forms (RFC 3261 7.3.3 and the extension RFCs).
fn long_name(name: &str) -> &str {
    match name {
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "e" | "E" => "Content-Encoding",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "f" | "F" => "From",
        "s" | "S" => "Subject",
        "k" | "K" => "Supported",
        "t" | "T" => "To",
        "v" | "V" => "Via",
        "r" | "R" => "Refer-To",
        "b" | "B" => "Referred-By",
        "o" | "O" => "Event",
        "u" | "U" => "Allow-Events",
        "x" | "X" => "Session-Expires",
        other => canonical_case(other),
    }
}

/// The usual spelling of common headers, so lookups and copies agree
/// whatever case the peer used (header names are case-insensitive).
fn canonical_case(name: &str) -> &str {
    const KNOWN: &[&str] = &[
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Type",
        "Content-Length",
        "Max-Forwards",
        "Record-Route",
        "Route",
        "Event",
        "Subscription-State",
        "Refer-To",
        "Referred-By",
        "Require",
        "Supported",
        "Allow",
        "User-Agent",
        "Server",
        "Expires",
        "Retry-After",
        "Warning",
        "Reason",
        "Session-Expires",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or(name)
}

/// Headers whose values may be listed with commas on one line (RFC 3261
/// 7.3.1); splitting them lets every Via be copied into responses.
fn is_list_header(name: &str) -> bool {
    matches!(name, "Via" | "Record-Route" | "Route")
}

/// Splits at commas outside quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => depth += 1,
            b'>' if !quoted => depth -= 1,
            b',' if !quoted && depth == 0 => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// Parses one datagram.
pub fn parse(datagram: &[u8]) -> Result<Message, ParseError> {
    let trimmed = {
        let start = datagram
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .ok_or(ParseError::KeepAlive)?;
        &datagram[start..]
    };
    // Headers end at the first empty line (CRLF CRLF, or LF LF from lax peers).
    let (head, body) = match find(trimmed, b"\r\n\r\n") {
        Some(i) => (&trimmed[..i], &trimmed[i + 4..]),
        None => match find(trimmed, b"\n\n") {
            Some(i) => (&trimmed[..i], &trimmed[i + 2..]),
            None => (trimmed, &[][..]),
        },
    };
    let head = std::str::from_utf8(head)
        .map_err(|_| ParseError::Garbage("headers are not UTF-8".into()))?;

    // Unfold continuation lines (RFC 3261 7.3.1) while splitting lines.
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with([' ', '\t']) {
            let has_header = lines.len() > 1;
            match lines.last_mut() {
                Some(last) if has_header => {
                    last.push(' ');
                    last.push_str(line.trim());
                }
                _ => return Err(ParseError::Garbage("folded first line".into())),
            }
        } else {
            lines.push(line.to_string());
        }
    }
    let first = lines.first().map(String::as_str).unwrap_or("");
    // A broken request line is still answered (400, or 505 for another
    // version) when the rest of the message says where to: RFC 4475 3.1.2.
    let (start, line_error) = match parse_start_line(first) {
        Ok(start) => (start, None),
        Err(StartLineError::Garbage(reason)) => return Err(ParseError::Garbage(reason)),
        Err(StartLineError::Request {
            method,
            uri,
            version_only,
            reason,
        }) => (
            StartLine::Request { method, uri },
            Some((version_only, reason)),
        ),
    };

    let mut headers = Vec::with_capacity(lines.len());
    let mut bad: Option<String> = None;
    for line in &lines[1..] {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            bad.get_or_insert_with(|| format!("header line without a colon: {line}"));
            continue;
        };
        let name = long_name(name.trim()).to_string();
        let value = value.trim();
        if is_list_header(&name) {
            for v in split_list(value) {
                headers.push((name.clone(), v.to_string()));
            }
        } else {
            headers.push((name, value.to_string()));
        }
    }

    let mut message = Message {
        start,
        headers,
        body: body.to_vec(),
    };
    let bad_request = |reason: String, message: Message| {
        if message.is_request() {
            ParseError::BadRequest {
                reason,
                partial: Box::new(message),
            }
        } else {
            ParseError::Garbage(reason)
        }
    };
    if let Some(reason) = bad {
        return Err(bad_request(reason, message));
    }
    let has_via = message.header("Via").is_some();
    match line_error {
        Some(_) if !has_via => return Err(ParseError::Garbage("bad request line".into())),
        Some((true, _)) => {
            return Err(ParseError::Refuse {
                status: 505,
                reason: "Version Not Supported",
                partial: Box::new(message),
            })
        }
        Some((false, reason)) => return Err(bad_request(reason, message)),
        None => {}
    }
    if let Some(reason) = lint_headers(&message) {
        return Err(bad_request(reason, message));
    }
    let conflict = {
        let mut lengths = message.headers_named("Content-Length");
        match (lengths.next(), lengths.next()) {
            (Some(a), Some(b)) if a.trim() != b.trim() => {
                Some(format!("two Content-Length values, {a} and {b}"))
            }
            _ => None,
        }
    };
    if let Some(reason) = conflict {
        return Err(bad_request(reason, message));
    }
    if let Some(cl) = message.header("Content-Length") {
        match cl.parse::<usize>() {
            Ok(n) if n <= message.body.len() => message.body.truncate(n),
            Ok(n) => {
                let reason = format!(
                    "Content-Length {n} is larger than the body ({})",
                    message.body.len()
                );
                return Err(bad_request(reason, message));
            }
            Err(_) => return Err(bad_request(format!("bad Content-Length `{cl}`"), message)),
        }
    }
    for required in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if message.header(required).is_none() {
            if required == "Via" {
                // Without a Via there is nowhere to send an answer.
                return Err(ParseError::Garbage("no Via header".into()));
            }
            return Err(bad_request(format!("missing {required} header"), message));
        }
    }
    match message.cseq() {
        Err(reason) => return Err(bad_request(reason, message)),
        Ok((_, method)) => {
            // An unknown method is answered 501 whatever its CSeq says
            // (RFC 4475 3.1.2.18 prefers that to 400).
            if let StartLine::Request { method: m, .. } = &message.start {
                if m.as_str() != method && !matches!(m, Method::Other(_)) {
                    let reason =
                        format!("CSeq method {method} is not the request's {}", m.as_str());
                    return Err(bad_request(reason, message));
                }
            }
        }
    }
    if let StartLine::Request { uri, .. } = &message.start {
        let scheme = uri.split(':').next().unwrap_or("");
        if !["sip", "sips", "tel"]
            .iter()
            .any(|s| s.eq_ignore_ascii_case(scheme))
        {
            return Err(ParseError::Refuse {
                status: 416,
                reason: "Unsupported URI Scheme",
                partial: Box::new(message),
            });
        }
    }
    // Let rsip check what it knows: the start line and the header syntax.
    // The Request-URI is ours to judge: rsip refuses a user part holding
    // `;` (valid, RFC 4475 3.1.1.9), and the scheme was checked above.
    let checked = message.write_bytes(Some("sip:check@invalid"));
    if let Err(e) = rsip::SipMessage::try_from(checked.as_slice()) {
        if !matches!(
            &message.start,
            StartLine::Request {
                method: Method::Other(_),
                ..
            }
        ) {
            let text = e.to_string();
            let reason = text
                .lines()
                .next()
                .unwrap_or("malformed message")
                .to_string();
            return Err(bad_request(reason, message));
        }
    }
    Ok(message)
}

/// Headers that appear once (RFC 3261 7.3.1: only list headers may repeat).
const SINGLE: &[&str] = &["From", "To", "Call-ID", "CSeq", "Max-Forwards"];

/// Header faults rsip lets through but RFC 4475 3.1.2 and 3.3.8 want
/// answered with 400: repeated single headers, empty Via parameters, an
/// unterminated quoted string in From or To.
fn lint_headers(m: &Message) -> Option<String> {
    for name in SINGLE {
        if m.headers_named(name).nth(1).is_some() {
            return Some(format!("more than one {name}"));
        }
    }
    for via in m.headers_named("Via") {
        if via.split(';').skip(1).any(|p| p.trim().is_empty()) {
            return Some("an empty Via parameter".into());
        }
    }
    for name in ["From", "To"] {
        if let Some(v) = m.header(name) {
            let mut quoted = false;
            let mut escaped = false;
            for c in v.chars() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    _ => {}
                }
            }
            if quoted {
                return Some(format!("an unterminated quoted string in {name}"));
            }
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The characters of an RFC 3261 `token` (25.1), which a method is.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn parse_start_line(line: &str) -> Result<StartLine, StartLineError> {
    let garbage = || StartLineError::Garbage(format!("bad start line `{line}`"));
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status: u16 = code.parse().map_err(|_| garbage())?;
        if !(100..700).contains(&status) {
            return Err(garbage());
        }
        return Ok(StartLine::Response {
            status,
            reason: reason.to_string(),
        });
    }
    let method = line.split(' ').next().unwrap_or("");
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(garbage());
    }
    let rest = &line[method.len()..];
    let words: Vec<&str> = rest.split_whitespace().collect();
    let version = words.last().copied().unwrap_or("");
    if !version
        .get(..4)
        .is_some_and(|v| v.eq_ignore_ascii_case("SIP/"))
    {
        return Err(garbage());
    }
    let uri = words.first().copied().unwrap_or("").to_string();
    let refuse = |version_only: bool, reason: &str| StartLineError::Request {
        method: Method::parse(method),
        uri: uri.clone(),
        version_only,
        reason: reason.to_string(),
    };
    // Exactly `METHOD SP Request-URI SP SIP-Version` (RFC 3261 7.1): extra
    // spaces, or spaces inside the URI, are malformed (RFC 4475 3.1.2.8-10).
    if words.len() != 2 || rest != format!(" {uri} {version}") {
        return Err(refuse(false, "malformed request line"));
    }
    if version != "SIP/2.0" {
        return Err(refuse(true, "SIP version not supported"));
    }
    Ok(StartLine::Request {
        method: Method::parse(method),
        uri,
    })
}

impl Message {
    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request, or of the CSeq of a response.
    pub fn method(&self) -> Method {
        match &self.start {
            StartLine::Request { method, .. } => method.clone(),
            StartLine::Response { .. } => Method::parse(self.cseq().map(|c| c.1).unwrap_or("")),
        }
    }

    /// The status of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The first value of a header (long name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Call-ID.
    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or("")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Result<(u32, &str), String> {
        let value = self.header("CSeq").unwrap_or("");
        let (n, m) = value
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("bad CSeq `{value}`"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("bad CSeq number `{value}`"))?;
        Ok((n, m.trim()))
    }

    /// The tag of From.
    pub fn from_tag(&self) -> Option<&str> {
        self.header("From").and_then(tag_param)
    }

    /// The tag of To.
    pub fn to_tag(&self) -> Option<&str> {
        self.header("To").and_then(tag_param)
    }

    /// The top Via, parsed.
    pub fn top_via(&self) -> Option<Via> {
        self.header("Via").and_then(Via::parse)
    }

    /// Writes the message back as bytes (normalised form).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.write_bytes(None)
    }

    /// [`Message::to_bytes`], with `request_uri` in place of a request's
    /// own (so the parser can have rsip check the rest without a copy).
    fn write_bytes(&self, request_uri: Option<&str>) -> Vec<u8> {
        let mut s = String::with_capacity(256 + self.headers.len() * 40);
        match &self.start {
            StartLine::Request { method, uri } => {
                let uri = request_uri.unwrap_or(uri);
                let _ = write!(s, "{} {} SIP/2.0\r\n", method.as_str(), uri);
            }
            StartLine::Response { status, reason } => {
                let _ = write!(s, "SIP/2.0 {status} {reason}\r\n");
            }
        }
        for (n, v) in &self.headers {
            if n != "Content-Length" {
                let _ = write!(s, "{n}: {v}\r\n");
            }
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

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
    pub fn parse(value: &str) -> Option<Self> {
        let (proto, rest) = value.trim().split_once(char::is_whitespace)?;
        let transport = proto.rsplit('/').next()?.to_ascii_uppercase();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(sent_by.trim())?;
        Some(Self {
            transport,
            host: host.to_string(),
            port,
            branch: param(params, "branch").map(str::to_string),
            rport: param(params, "rport").is_some(),
        })
    }

    /// The sent-by as `host:port` text, for transaction keys.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
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

/// A response to `request`, built per RFC 3261 8.2.6: every Via copied in
/// order (the top one stamped with where it came from), From, Call-ID and
/// CSeq copied, To copied with our tag added when it has none.
pub struct ResponseBuilder {
    text: String,
    body: Vec<u8>,
}

impl ResponseBuilder {
    /// Starts a response with status line and the copied headers.
    pub fn new(
        request: &Message,
        source: std::net::SocketAddr,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
    ) -> Self {
        let mut text = String::with_capacity(512);
        let _ = write!(text, "SIP/2.0 {status} {reason}\r\n");
        for (i, via) in request.headers_named("Via").enumerate() {
            if i == 0 {
                let _ = write!(text, "Via: {}\r\n", stamp_top_via(via, source));
            } else {
                let _ = write!(text, "Via: {via}\r\n");
            }
        }
        if let Some(from) = request.header("From") {
            let _ = write!(text, "From: {from}\r\n");
        }
        if let Some(to) = request.header("To") {
            match to_tag {
                Some(tag) if request.to_tag().is_none() && status != 100 => {
                    let _ = write!(text, "To: {to};tag={tag}\r\n");
                }
                _ => {
                    let _ = write!(text, "To: {to}\r\n");
                }
            }
        }
        let _ = write!(text, "Call-ID: {}\r\n", request.call_id());
        if let Some(cseq) = request.header("CSeq") {
            let _ = write!(text, "CSeq: {cseq}\r\n");
        }
        Self {
            text,
            body: Vec::new(),
        }
    }

    /// Copies the request's Record-Route values, in order: a response that
    /// creates a dialog (a 2xx, or a 101-199 with our To tag, to an INVITE)
    /// must carry them, or the caller's ACK and BYE bypass every proxy that
    /// asked to stay on the path (RFC 3261 12.1.1).
    pub fn record_route(mut self, request: &Message) -> Self {
        for rr in request.headers_named("Record-Route") {
            let _ = write!(self.text, "Record-Route: {rr}\r\n");
        }
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let _ = write!(self.text, "{name}: {value}\r\n");
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        let _ = write!(self.text, "Content-Type: {content_type}\r\n");
        self.body = body.to_vec();
        self
    }

    /// The response's bytes.
    pub fn build(self) -> Vec<u8> {
        let mut text = self.text;
        let _ = write!(text, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = text.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Where a response goes (RFC 3261 18.2.2 for UDP, RFC 3581 4): the
/// source address when `rport` was asked for or the sent-by is a name we
/// cannot resolve here, else the sent-by port at the source IP.
pub fn response_destination(via: &Via, source: std::net::SocketAddr) -> std::net::SocketAddr {
    if via.rport {
        return source;
    }
    std::net::SocketAddr::new(source.ip(), via.port.unwrap_or(5060))
}

#[cfg(test)]
mod tests;
