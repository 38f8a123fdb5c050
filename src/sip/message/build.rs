//! Responses we build from a request (RFC 3261 8.2.6) and where they go
//! (18.2.2).

use std::fmt::Write as _;

use super::header::{stamp_top_via, Via};
use super::Message;

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
