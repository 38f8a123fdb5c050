//! Sending prompt audio as RTP (RFC 3550), paced in 20 ms packets, sans-IO.
//!
//! [`RtpSender`] owns no socket and reads no clock. The IO edge drives it:
//!
//! ```text
//! sender.play(now, vec![welcome, menu]);
//! loop {
//!     while let Some(info) = sender.poll_packet(now, &mut buf) {
//!         socket.send(&buf);                 // buf.len() == info.len
//!         if info.last { /* the prompt has finished */ }
//!     }
//!     match sender.poll_timeout() { Some(at) => sleep_until(at), None => wait for play() }
//! }
//! ```
//!
//! Pacing: packet `n` of a talkspurt is due at exactly `start + n * 20 ms`,
//! computed from the start each time so it never drifts however the caller's
//! timer jitters. Its RTP timestamp is the sampling instant of that schedule
//! on one 8 kHz clock anchored at the first packet ever sent, so timestamps
//! also advance through the silence between talkspurts (RFC 3550 section
//! 5.1: "the timestamp ... reflects the sampling instant").
//!
//! Late callers: a packet at most [`MAX_LATENESS`] overdue is still sent, in
//! order and with its scheduled timestamp (a small burst the receiver's
//! jitter buffer absorbs). Beyond that the sender skips ahead to the packet
//! whose 20 ms slot contains `now`: the overdue audio is dropped rather than
//! sent as a burst that would overflow the jitter buffer and leave the
//! prompt playing permanently behind real time. Skipped packets take no
//! sequence numbers (they were never sent, so they are not loss, RFC 3550
//! section 5.1), the timestamp jumps by the skipped time and the marker bit
//! is set so the receiver resynchronises its playout, as after silence
//! (RFC 3551 section 4.1). The last packet of a talkspurt is never skipped,
//! so the caller always learns that the prompt finished.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The duration of audio in one packet; 20 ms is the default packetisation
/// of G.711 (RFC 3551 section 4.5, `ptime`).
pub const PACKET_DURATION: Duration = Duration::from_millis(20);
/// RTP timestamp units (and G.711 bytes) per packet: 20 ms at 8,000 Hz.
pub const SAMPLES_PER_PACKET: usize = 160;
/// The fixed RTP header without CSRCs or extension (RFC 3550 section 5.1).
pub const HEADER_LEN: usize = 12;
/// Length of every packet this sender writes.
pub const PACKET_LEN: usize = HEADER_LEN + SAMPLES_PER_PACKET;
/// How overdue a packet may be and still be sent in order; later than this
/// the sender skips ahead (see the module documentation).
pub const MAX_LATENESS: Duration = Duration::from_millis(200);
/// Nanoseconds per RTP timestamp unit at 8,000 Hz.
const NANOS_PER_SAMPLE: u128 = 125_000;

/// What [`RtpSender::poll_packet`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// Bytes written to the buffer: always [`PACKET_LEN`].
    pub len: usize,
    /// The packet's sequence number.
    pub sequence: u16,
    /// The packet's RTP timestamp.
    pub timestamp: u32,
    /// Whether the marker bit is set: the first packet of a talkspurt, or
    /// the first after a skip ahead.
    pub marker: bool,
    /// Whether this was the last packet of the talkspurt: the caller can
    /// report that the prompt finished playing.
    pub last: bool,
    /// Packets of this talkspurt dropped just before this one because the
    /// caller was more than [`MAX_LATENESS`] late; 0 normally.
    pub skipped: u32,
}

/// The audio being played and the read position in it.
#[derive(Debug)]
struct Talkspurt {
    /// The buffer being read, moved out of the list: a packet then reads
    /// this struct and the audio, not the list's own allocation too (a
    /// cache miss per packet per call, with thousands of calls).
    current: Option<Arc<[u8]>>,
    /// The buffers after it.
    rest: std::vec::IntoIter<Arc<[u8]>>,
    offset: usize,
    start: Instant,
    next: u32,
    count: u32,
}

impl Talkspurt {
    fn due(&self, packet: u32) -> Instant {
        self.start + PACKET_DURATION * packet
    }

    /// Moves the read position `bytes` forward across buffers, appending
    /// what it passes over to `out` if given.
    fn advance(&mut self, mut bytes: usize, mut out: Option<&mut Vec<u8>>) {
        while bytes > 0 {
            let Some(current) = &self.current else {
                return;
            };
            let take = bytes.min(current.len() - self.offset);
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&current[self.offset..self.offset + take]);
            }
            self.offset += take;
            bytes -= take;
            if self.offset == current.len() {
                self.current = self.rest.next();
                self.offset = 0;
            }
        }
    }
}

/// One RTP stream (one SSRC) of G.711 prompt audio towards a caller.
///
/// Sequence numbers run on across talkspurts (RFC 3550 section 5.1) and the
/// timestamp clock runs on through silence, so the far end sees a single
/// continuous stream for the whole call.
#[derive(Debug)]
pub struct RtpSender {
    ssrc: u32,
    payload_type: u8,
    silence: u8,
    sequence: u16,
    initial_timestamp: u32,
    /// The instant whose sampling time is `initial_timestamp`; set by the
    /// first `play`.
    anchor: Option<Instant>,
    /// The end of the last packet sent: a new talkspurt may not start
    /// earlier, or its timestamps would overlap audio already sent.
    earliest_start: Option<Instant>,
    talkspurt: Option<Talkspurt>,
    packets_sent: u32,
    octets_sent: u32,
}

impl RtpSender {
    /// A sender for one stream. RFC 3550 section 5.1 asks for random initial
    /// values of the sequence number and timestamp (and a random SSRC,
    /// section 8); the caller supplies them so this stays deterministic.
    ///
    /// The last packet of a prompt is padded with the code for silence:
    /// A-law's 0xD5 for payload type 8 (PCMA), otherwise μ-law's 0xFF.
    pub fn new(ssrc: u32, payload_type: u8, initial_seq: u16, initial_timestamp: u32) -> Self {
        let silence = match super::Codec::from_payload_type(payload_type) {
            Some(codec) => codec.silence(),
            None => super::Codec::Pcmu.silence(),
        };
        RtpSender {
            ssrc,
            payload_type: payload_type & 0x7F,
            silence,
            sequence: initial_seq,
            initial_timestamp,
            anchor: None,
            earliest_start: None,
            talkspurt: None,
            packets_sent: 0,
            octets_sent: 0,
        }
    }

    /// Starts a talkspurt: the encoded buffers played back to back (a packet
    /// may span two of them), replacing whatever was playing.
    ///
    /// It starts at `now`, or when the last packet sent ends if that is
    /// later (at most 20 ms away), so that no two packets cover the same
    /// sampling instants. Empty audio still sends one packet of silence, so
    /// that every `play` ends with a packet marked [`PacketInfo::last`].
    pub fn play(&mut self, now: Instant, audio: Vec<Arc<[u8]>>) {
        let start = self
            .earliest_start
            .map_or(now, |earliest| now.max(earliest));
        self.anchor.get_or_insert(start);
        let bytes: usize = audio.iter().map(|b| b.len()).sum();
        let count = u32::try_from(bytes.div_ceil(SAMPLES_PER_PACKET).max(1)).unwrap_or(u32::MAX);
        let mut rest = audio.into_iter();
        self.talkspurt = Some(Talkspurt {
            current: rest.next(),
            rest,
            offset: 0,
            start,
            next: 0,
            count,
        });
    }

    /// Stops the talkspurt at once (barge-in: the caller pressed a key).
    /// No packet of it is sent any more and none is reported as last.
    pub fn stop(&mut self) {
        self.talkspurt = None;
    }

    /// Whether a talkspurt is playing.
    pub fn is_playing(&self) -> bool {
        self.talkspurt.is_some()
    }

    /// When the next packet is due, possibly already past; `None` when idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.talkspurt.as_ref().map(|t| t.due(t.next))
    }

    /// Writes the next packet due at `now` into `buf` (cleared first) and
    /// describes it; `None` if none is due. Call it until it returns `None`.
    ///
    /// Allocation-free once `buf` has a capacity of [`PACKET_LEN`].
    pub fn poll_packet(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<PacketInfo> {
        let talkspurt = self.talkspurt.as_mut()?;
        if now < talkspurt.due(talkspurt.next) {
            return None;
        }
        let mut skipped = 0;
        if now.duration_since(talkspurt.due(talkspurt.next)) > MAX_LATENESS {
            let slot = now.duration_since(talkspurt.start).as_nanos() / PACKET_DURATION.as_nanos();
            let target = u32::try_from(slot)
                .unwrap_or(u32::MAX)
                .min(talkspurt.count - 1);
            skipped = target - talkspurt.next;
            talkspurt.advance(skipped as usize * SAMPLES_PER_PACKET, None);
            talkspurt.next = target;
        }
        let due = talkspurt.due(talkspurt.next);
        let marker = talkspurt.next == 0 || skipped > 0;
        let timestamp = sampling_timestamp(self.anchor, self.initial_timestamp, due);
        let sequence = self.sequence;

        buf.clear();
        buf.extend_from_slice(&[
            // Version 2, no padding, no extension, no CSRC.
            0x80,
            (u8::from(marker) << 7) | self.payload_type,
        ]);
        buf.extend_from_slice(&sequence.to_be_bytes());
        buf.extend_from_slice(&timestamp.to_be_bytes());
        buf.extend_from_slice(&self.ssrc.to_be_bytes());
        talkspurt.advance(SAMPLES_PER_PACKET, Some(buf));
        buf.resize(PACKET_LEN, self.silence);

        talkspurt.next += 1;
        let last = talkspurt.next >= talkspurt.count;
        if last {
            self.talkspurt = None;
        }
        self.sequence = sequence.wrapping_add(1);
        self.earliest_start = Some(due + PACKET_DURATION);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(SAMPLES_PER_PACKET as u32);
        Some(PacketInfo {
            len: PACKET_LEN,
            sequence,
            timestamp,
            marker,
            last,
            skipped,
        })
    }

    /// The RTP timestamp of the sampling instant `at` on this stream's
    /// clock, for the RTP/NTP pair of an RTCP sender report (RFC 3550
    /// section 6.4.1). Before the first `play` fixes the clock, the initial
    /// timestamp.
    pub fn timestamp_at(&self, at: Instant) -> u32 {
        sampling_timestamp(self.anchor, self.initial_timestamp, at)
    }

    /// The sender's SSRC (RFC 3550 section 8).
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Packets sent so far, modulo 2^32: the sender's packet count of an
    /// RTCP sender report (RFC 3550 section 6.4.1).
    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }

    /// Payload octets sent so far, modulo 2^32: the sender's octet count of
    /// an RTCP sender report (RFC 3550 section 6.4.1).
    pub fn octets_sent(&self) -> u32 {
        self.octets_sent
    }
}

/// The RTP timestamp of instant `at` on an 8 kHz clock that read `initial`
/// at `anchor`.
fn sampling_timestamp(anchor: Option<Instant>, initial: u32, at: Instant) -> u32 {
    let Some(anchor) = anchor else {
        return initial;
    };
    let samples = at.saturating_duration_since(anchor).as_nanos() / NANOS_PER_SAMPLE;
    // The RTP timestamp is the sample count modulo 2^32.
    initial.wrapping_add(samples as u32)
}

#[cfg(test)]
#[path = "rtp_tests.rs"]
mod tests;
