//! SIP messages as they arrive from real trunks, and the responses and
//! requests we send.
//!
//! A datagram is read once ([`parse`]): folded lines joined, compact names
//! (`v:`, `i:`...) made long, list headers split into one value each, the
//! body cut to Content-Length, the grammar a UA relies on checked, and the
//! headers every layer reads (Call-ID, CSeq, From, To, the top Via) indexed,
//! so nothing parses it again. Outgoing messages are written as text
//! directly: exact, CRLF-clean and cheap.
//!
//! rsip is not on this path: used as a second, validating parse it doubled
//! the cost of every datagram, and it refused valid messages (a `;` in the
//! Request-URI's user part, RFC 4475 3.1.1.9). It keeps the job it does
//! well, checking the URIs admins write in flows, once, at load.

mod build;
mod header;
mod parse;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt::Write as _;

pub use build::{response_destination, ResponseBuilder};
pub use header::{header_params, param, stamp_top_via, tag_param, uri_host_port, uri_of, Via};
pub use parse::{parse, split_list};

/// A SIP method; other methods are kept by name (answered 501).
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
    /// REGISTER (RFC 3261 10)
    Register,
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
            "REGISTER" => Method::Register,
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
            Method::Register => "REGISTER",
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
    /// header's grammar allows it). Private, so the index stays true.
    headers: Vec<(Cow<'static, str>, String)>,
    /// The body, cut to Content-Length.
    pub body: Vec<u8>,
    index: Index,
}

/// Where the headers every layer reads are, found once at parse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    call_id: Option<usize>,
    cseq: Option<usize>,
    from: Option<usize>,
    to: Option<usize>,
    top_via: Option<Via>,
}

impl Index {
    fn of(m: &Message) -> Self {
        let find = |name: &str| m.headers.iter().position(|(n, _)| n == name);
        Self {
            call_id: find("Call-ID"),
            cseq: find("CSeq"),
            from: find("From"),
            to: find("To"),
            top_via: find("Via").and_then(|i| Via::parse(&m.headers[i].1)),
        }
    }
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
        self.indexed(self.index.call_id).unwrap_or("")
    }

    fn indexed(&self, at: Option<usize>) -> Option<&str> {
        at.and_then(|i| self.headers.get(i))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in order, with its long name.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.headers.iter().map(|(n, v)| (n.as_ref(), v.as_str()))
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Result<(u32, &str), String> {
        let value = self.indexed(self.index.cseq).unwrap_or("");
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
        self.indexed(self.index.from).and_then(tag_param)
    }

    /// The tag of To.
    pub fn to_tag(&self) -> Option<&str> {
        self.indexed(self.index.to).and_then(tag_param)
    }

    /// The top Via, parsed.
    pub fn top_via(&self) -> Option<&Via> {
        self.index.top_via.as_ref()
    }

    /// Writes the message back as bytes (normalised form).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(256 + self.headers.len() * 40);
        match &self.start {
            StartLine::Request { method, uri } => {
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
