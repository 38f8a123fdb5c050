//! Reading one datagram into a [`Message`], in one pass: lines unfolded,
//! compact names made long, list headers split, and every check a UA needs
//! made here (RFC 3261 7 and 25, the faults RFC 4475 lists), so that no
//! second parser has to look at it again.

use std::borrow::Cow;

use super::header::Via;
use super::{Index, Message, Method, ParseError, StartLine};

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
fn long_name(name: &str) -> Cow<'static, str> {
    Cow::Borrowed(match name {
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
        other => return canonical_case(other),
    })
}

/// The usual spelling of common headers, so lookups and copies agree
/// whatever case the peer used (header names are case-insensitive).
fn canonical_case(name: &str) -> Cow<'static, str> {
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
    match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(name.to_string()),
    }
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

    // Unfold continuation lines (RFC 3261 7.3.1) while splitting lines;
    // only a folded line is copied.
    let mut lines: Vec<Cow<'_, str>> = Vec::with_capacity(24);
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with([' ', '\t']) {
            let has_header = lines.len() > 1;
            match lines.last_mut() {
                Some(last) if has_header => {
                    let last = last.to_mut();
                    last.push(' ');
                    last.push_str(line.trim());
                }
                _ => return Err(ParseError::Garbage("folded first line".into())),
            }
        } else {
            lines.push(Cow::Borrowed(line));
        }
    }
    let first = lines.first().map(|l| l.as_ref()).unwrap_or("");
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
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            bad.get_or_insert_with(|| format!("a header name that is not a token: `{name}`"));
            continue;
        }
        let name = long_name(name);
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
        index: Index::default(),
    };
    message.index = Index::of(&message);
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
    // The rest of the grammar a UA relies on. An unknown method is
    // answered 501 whatever else is wrong with it (RFC 4475 3.1.2.18).
    let unknown = matches!(
        &message.start,
        StartLine::Request {
            method: Method::Other(_),
            ..
        }
    );
    if !unknown {
        if let Some(reason) = check_grammar(&message) {
            return Err(bad_request(reason, message));
        }
    }
    Ok(message)
}

/// The parts of RFC 3261's grammar (25.1) that what we do with a message
/// depends on: every Via has a protocol and a sent-by (we answer to it),
/// From and To and every Contact hold a URI (we build the dialog from
/// them), Call-ID is one word, Max-Forwards a number.
fn check_grammar(m: &Message) -> Option<String> {
    for via in m.headers_named("Via") {
        if !Via::is_valid(via) {
            return Some(format!("a malformed Via `{via}`"));
        }
    }
    for name in ["From", "To"] {
        let value = m.header(name).unwrap_or("");
        if !has_uri(value) {
            return Some(format!("{name} holds no URI: `{value}`"));
        }
    }
    for contact in m.headers_named("Contact") {
        if contact.trim() != "*" && !has_uri(contact) {
            return Some(format!("a Contact without a URI: `{contact}`"));
        }
    }
    let call_id = m.call_id();
    if call_id.is_empty() || call_id.contains(char::is_whitespace) {
        return Some(format!("a malformed Call-ID `{call_id}`"));
    }
    if let Some(mf) = m.header("Max-Forwards") {
        if mf.is_empty() || !mf.bytes().all(|b| b.is_ascii_digit()) {
            return Some(format!("a malformed Max-Forwards `{mf}`"));
        }
    }
    None
}

/// Whether a name-addr or addr-spec holds an absolute URI: a scheme
/// (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`) and a colon, and
/// something after it.
fn has_uri(value: &str) -> bool {
    let uri = super::header::uri_of(value);
    match uri.split_once(':') {
        Some((scheme, rest)) => {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                && !rest.is_empty()
        }
        None => false,
    }
}

/// Headers that appear once (RFC 3261 7.3.1: only list headers may repeat).
const SINGLE: &[&str] = &["From", "To", "Call-ID", "CSeq", "Max-Forwards"];

/// Header faults RFC 4475 3.1.2 and 3.3.8 want
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
