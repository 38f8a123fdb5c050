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
    /// Where the unframed bytes start: taking a frame moves this, not the
    /// bytes after it (a read full of pings would otherwise be copied
    /// once per ping).
    start: usize,
    /// How far past `start` the search for the end of the headers has
    /// looked.
    scanned: usize,
    /// The current message's whole length, once its headers are read (a
    /// body trickling in is not re-parsed).
    length: Option<usize>,
    max: usize,
}

impl StreamFramer {
    /// A framer refusing messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            length: None,
            max,
        }
    }

    /// Bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        // Reclaim the consumed front once it is most of the buffer: each
        // byte is moved a bounded number of times.
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, if the bytes so far hold one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if self.length.is_none() && self.scanned == 0 {
            // At a message boundary, line ends are keep-alives (or stray,
            // RFC 3261 7.5: ignored).
            let rest = &self.buf[self.start..];
            let ends = rest
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if ends > 0 {
                if rest.starts_with(b"\r\n\r\n") {
                    self.start += 4;
                    return Ok(Some(Frame::Ping));
                }
                if ends == rest.len() && b"\r\n\r\n".starts_with(rest) {
                    // Perhaps a ping whose end is still on the way.
                    return Ok(None);
                }
                self.start += ends;
            }
        }
        let length = match self.length {
            Some(length) => length,
            None => {
                let Some(head) = self.header_end() else {
                    if self.pending() > self.max {
                        return Err(FramingError::TooLarge(self.pending()));
                    }
                    return Ok(None);
                };
                let body = content_length(&self.buf[self.start..self.start + head])?;
                let total = head.saturating_add(body);
                if total > self.max {
                    return Err(FramingError::TooLarge(total));
                }
                self.length = Some(total);
                total
            }
        };
        if self.pending() < length {
            return Ok(None);
        }
        let message = self.buf[self.start..self.start + length].to_vec();
        self.start += length;
        (self.length, self.scanned) = (None, 0);
        Ok(Some(Frame::Message(message)))
    }

    /// Where the header block ends (past its empty line, counted from
    /// `start`), if it has; a search goes on from where the last stopped.
    fn header_end(&mut self) -> Option<usize> {
        let rest = &self.buf[self.start..];
        let from = self.scanned.saturating_sub(3);
        let found = rest[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| from + i + 4);
        self.scanned = if found.is_some() { 0 } else { rest.len() };
        found
    }
}

/// The Content-Length of a header block (its full or compact name, any
/// case; repeated only with the same value). Read as the message parser
/// reads it: a folded line continues the header before it, and the value
/// is digits only.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    for line in head.split(|b| *b == b'\n') {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        let text = String::from_utf8_lossy(value).into_owned();
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(FramingError::BadContentLength(text));
        }
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
    fn the_empty_line_split_across_reads_at_every_point_is_found() {
        let end = OPTIONS.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        for cut in end - 1..=end + 4 {
            let mut f = StreamFramer::new(65_535);
            f.push(&OPTIONS[..cut]);
            assert!(frames(&mut f).is_empty(), "cut at {cut}");
            f.push(&OPTIONS[cut..]);
            assert_eq!(
                frames(&mut f),
                vec![Frame::Message(OPTIONS.to_vec())],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_read_full_of_pings_is_answered_ping_by_ping() {
        let mut f = StreamFramer::new(65_535);
        f.push(&b"\r\n\r\n".repeat(4096));
        assert_eq!(frames(&mut f).len(), 4096);
        assert_eq!(f.pending(), 0);
        f.push(OPTIONS);
        assert_eq!(frames(&mut f), vec![Frame::Message(OPTIONS.to_vec())]);
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
