//! Cutting SIP messages out of a byte stream (RFC 3261 18.3): the header
//! block ends at the first empty line, and Content-Length, which a stream
//! must carry, says how much body follows. A read may hold part of a
//! message or several; a peer that sends no Content-Length, a bad one, or
//! more than the limit, has broken the framing, and the connection must
//! close since nothing after that point can be trusted.
//!
//! Between messages, CRLFs are keep-alives (RFC 5626 3.5.1): a double CRLF
//! is a ping, answered with a single CRLF (the pong); a lone CRLF is
//! ignored.

use std::fmt;

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One whole message, headers and body.
    Message(Vec<u8>),
    /// A keep-alive ping: answer with [`PONG`].
    Ping,
}

/// The answer to a ping.
pub const PONG: &[u8] = b"\r\n";

/// Why the stream can no longer be framed.
#[derive(Debug, PartialEq, Eq)]
pub enum FramingError {
    /// The message would be longer than the limit (bytes so far or
    /// announced).
    TooLarge(usize),
    /// A message without Content-Length.
    NoContentLength,
    /// A Content-Length that is not a number, or two that differ.
    BadContentLength(String),
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::TooLarge(n) => {
                write!(f, "a message of {n} bytes or more is over the limit")
            }
            FramingError::NoContentLength => {
                f.write_str("a message without Content-Length on a stream")
            }
            FramingError::BadContentLength(v) => write!(f, "bad Content-Length `{v}`"),
        }
    }
}

impl std::error::Error for FramingError {}

/// The bytes of one stream not yet framed.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// How far the search for the end of the headers has looked.
    scanned: usize,
    max: usize,
}

impl StreamFramer {
    /// A framer refusing messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    /// Bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, if the bytes so far hold one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // The buffer always starts at a message boundary, where line ends
        // are keep-alives (or stray, RFC 3261 7.5: ignored).
        let ends = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        if ends > 0 {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.drain(..4);
                return Ok(Some(Frame::Ping));
            }
            if ends == self.buf.len() && b"\r\n\r\n".starts_with(&self.buf) {
                // Perhaps a ping whose end is still on the way.
                return Ok(None);
            }
            self.buf.drain(..ends);
            self.scanned = 0;
        }
        let Some(head) = self.header_end() else {
            if self.buf.len() > self.max {
                return Err(FramingError::TooLarge(self.buf.len()));
            }
            return Ok(None);
        };
        let body = content_length(&self.buf[..head])?;
        let total = head.saturating_add(body);
        if total > self.max {
            return Err(FramingError::TooLarge(total));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        Ok(Some(Frame::Message(std::mem::replace(&mut self.buf, rest))))
    }

    /// Where the header block ends (past its empty line), if it has; a
    /// search goes on from where the last one stopped.
    fn header_end(&mut self) -> Option<usize> {
        let from = self.scanned.saturating_sub(3);
        let found = self.buf[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| from + i + 4);
        self.scanned = if found.is_some() { 0 } else { self.buf.len() };
        found
    }
}

/// The Content-Length of a header block (its full or compact name, any
/// case; repeated only with the same value).
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        let text = String::from_utf8_lossy(value).into_owned();
        let n: usize = text
            .parse()
            .map_err(|_| FramingError::BadContentLength(text.clone()))?;
        match found {
            Some(m) if m != n => return Err(FramingError::BadContentLength(text)),
            _ => found = Some(n),
        }
    }
    found.ok_or(FramingError::NoContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 4\r\n\r\nbody";

    fn frames(f: &mut StreamFramer) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(frame) = f.next_frame().unwrap() {
            out.push(frame);
        }
        out
    }

    #[test]
    fn a_message_read_in_pieces_comes_out_whole_once_complete() {
        let mut f = StreamFramer::new(65_535);
        for chunk in OPTIONS.chunks(7) {
            assert!(frames(&mut f).is_empty(), "not yet");
            f.push(chunk);
        }
        assert_eq!(frames(&mut f), vec![Frame::Message(OPTIONS.to_vec())]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn two_messages_and_part_of_a_third_in_one_read() {
        let mut f = StreamFramer::new(65_535);
        let mut bytes = OPTIONS.to_vec();
        bytes.extend_from_slice(OPTIONS);
        bytes.extend_from_slice(&OPTIONS[..30]);
        f.push(&bytes);
        assert_eq!(
            frames(&mut f),
            vec![
                Frame::Message(OPTIONS.to_vec()),
                Frame::Message(OPTIONS.to_vec())
            ]
        );
        assert_eq!(f.pending(), 30);
        f.push(&OPTIONS[30..]);
        assert_eq!(frames(&mut f), vec![Frame::Message(OPTIONS.to_vec())]);
    }

    #[test]
    fn compact_and_any_case_content_length_frames_the_body() {
        let mut f = StreamFramer::new(65_535);
        let m = b"BYE sip:a@b SIP/2.0\r\nl:  2\r\n\r\nhiINFO";
        f.push(m);
        assert_eq!(
            frames(&mut f),
            vec![Frame::Message(
                b"BYE sip:a@b SIP/2.0\r\nl:  2\r\n\r\nhi".to_vec()
            )]
        );
        assert_eq!(f.pending(), 4);
    }

    #[test]
    fn keep_alive_pings_are_reported_and_lone_line_ends_skipped() {
        let mut f = StreamFramer::new(65_535);
        f.push(b"\r\n\r");
        assert!(frames(&mut f).is_empty(), "half a ping");
        f.push(b"\n");
        assert_eq!(frames(&mut f), vec![Frame::Ping]);
        // A pong (one CRLF) before a message is skipped.
        f.push(b"\r\n");
        f.push(OPTIONS);
        assert_eq!(frames(&mut f), vec![Frame::Message(OPTIONS.to_vec())]);
        f.push(b"\r\n\r\n\r\n\r\n");
        assert_eq!(frames(&mut f), vec![Frame::Ping, Frame::Ping]);
    }

    #[test]
    fn oversized_messages_break_the_stream_early() {
        let mut f = StreamFramer::new(100);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge(5048)));
        let mut f = StreamFramer::new(100);
        f.push(&[b'X'; 101]);
        assert_eq!(
            f.next_frame(),
            Err(FramingError::TooLarge(101)),
            "headers that never end"
        );
    }

    #[test]
    fn a_message_without_or_with_a_bad_content_length_breaks_the_stream() {
        let mut f = StreamFramer::new(65_535);
        f.push(b"BYE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::NoContentLength));
        let mut f = StreamFramer::new(65_535);
        f.push(b"BYE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n");
        assert!(matches!(
            f.next_frame(),
            Err(FramingError::BadContentLength(_))
        ));
        let mut f = StreamFramer::new(65_535);
        f.push(b"BYE sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab");
        assert!(matches!(
            f.next_frame(),
            Err(FramingError::BadContentLength(_))
        ));
    }
}
