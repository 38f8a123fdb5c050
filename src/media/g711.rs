//! G.711 μ-law (PCMU) and A-law (PCMA) companding, ITU-T Recommendation
//! G.711 (11/88), the two codecs every SIP trunk accepts (RFC 3551 section
//! 4.5.14).
//!
//! The tables of the Recommendation are expressed here as bit arithmetic in
//! the form of the classic Sun reference implementation, so the encoders are
//! a few shifts and branches and need no lookup table.

/// A G.711 codec as negotiated in SDP; both use an 8,000 Hz clock and one
/// byte per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// μ-law, static RTP payload type 0 (RFC 3551 section 6), used in North
    /// America and Japan.
    Pcmu,
    /// A-law, static RTP payload type 8 (RFC 3551 section 6), used in the
    /// rest of the world.
    Pcma,
}

impl Codec {
    /// The static RTP payload type assigned by RFC 3551 section 6, for the
    /// RTP header and the SDP `m=` line.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec for a static payload type, or `None` for anything that is
    /// not G.711 (a dynamic type needs the SDP `a=rtpmap` to interpret).
    pub fn from_payload_type(payload_type: u8) -> Option<Codec> {
        match payload_type {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The code for a zero sample, used to pad the last packet of a prompt
    /// so that the receiver plays silence, not a click.
    pub fn silence(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }

    /// Encodes 16-bit linear samples, one byte per sample.
    pub fn encode(self, samples: &[i16]) -> Vec<u8> {
        match self {
            Codec::Pcmu => encode_ulaw(samples),
            Codec::Pcma => encode_alaw(samples),
        }
    }

    /// Re-encodes `codes` of this codec as `to`, in place: a bridge between
    /// a PCMU leg and a PCMA leg relays audio this way (one table-free
    /// conversion per byte, allocation-free).
    pub fn transcode(self, to: Codec, codes: &mut [u8]) {
        let convert: fn(u8) -> u8 = match (self, to) {
            (Codec::Pcmu, Codec::Pcma) => |c| linear_to_alaw(ulaw_to_linear(c)),
            (Codec::Pcma, Codec::Pcmu) => |c| linear_to_ulaw(alaw_to_linear(c)),
            _ => return,
        };
        for c in codes {
            *c = convert(*c);
        }
    }

    /// Decodes one byte per sample back to 16-bit linear samples.
    pub fn decode(self, codes: &[u8]) -> Vec<i16> {
        let one: fn(u8) -> i16 = match self {
            Codec::Pcmu => ulaw_to_linear,
            Codec::Pcma => alaw_to_linear,
        };
        codes.iter().map(|&c| one(c)).collect()
    }
}

/// Offset added before finding the μ-law segment, so that the segments
/// line up with powers of two (G.711 table 2a is defined on a biased scale).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude μ-law can represent once biased; louder samples clip.
const ULAW_CLIP: i32 = 32_635;

/// Encodes one 16-bit linear sample as μ-law (G.711 table 2a).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let value = i32::from(sample);
    let sign = if value < 0 { 0x80 } else { 0 };
    let magnitude = value.abs().min(ULAW_CLIP) + ULAW_BIAS;
    // Bit 7 is the lowest bit the biased magnitude can have set, so the
    // position of its top bit above 7 is the segment (exponent) 0..=7.
    let exponent = (31 - magnitude.leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    // G.711 transmits μ-law with all bits inverted.
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Decodes one μ-law byte to the midpoint of its 16-bit linear interval.
pub fn ulaw_to_linear(code: u8) -> i16 {
    let code = !code;
    let exponent = (code & 0x70) >> 4;
    let magnitude = ((i32::from(code & 0x0F) << 3) + ULAW_BIAS) << exponent;
    let value = if code & 0x80 != 0 {
        ULAW_BIAS - magnitude
    } else {
        magnitude - ULAW_BIAS
    };
    // The largest magnitude is 32,124, well inside i16.
    value as i16
}

/// Encodes one 16-bit linear sample as A-law (G.711 table 1a).
pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law works on 13-bit samples.
    let value = i32::from(sample) >> 3;
    // Even bits are inverted on the wire (the 0x55 in both masks); the sign
    // bit is 1 for positive values.
    let (mask, magnitude) = if value >= 0 {
        (0xD5_i32, value)
    } else {
        (0x55, -value - 1)
    };
    // Segment 0 covers 0..=0x1F, then each segment doubles.
    let bits = 32 - magnitude.leading_zeros() as i32;
    let segment = (bits - 5).max(0);
    if segment > 7 {
        return (0x7F ^ mask) as u8;
    }
    let shift = if segment < 2 { 1 } else { segment };
    let code = (segment << 4) | ((magnitude >> shift) & 0x0F);
    (code ^ mask) as u8
}

/// Decodes one A-law byte to the midpoint of its 16-bit linear interval.
pub fn alaw_to_linear(code: u8) -> i16 {
    let code = code ^ 0x55;
    let segment = (code & 0x70) >> 4;
    let mut magnitude = i32::from(code & 0x0F) << 4;
    match segment {
        0 => magnitude += 8,
        1 => magnitude += 0x108,
        _ => magnitude = (magnitude + 0x108) << (segment - 1),
    }
    // The largest magnitude is 32,256, well inside i16.
    (if code & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }) as i16
}

/// Encodes 16-bit linear samples as μ-law (PCMU), one byte per sample.
pub fn encode_ulaw(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| linear_to_ulaw(s)).collect()
}

/// Encodes 16-bit linear samples as A-law (PCMA), one byte per sample.
pub fn encode_alaw(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| linear_to_alaw(s)).collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn transcoding_keeps_silence_silent_and_the_sound_close() {
        let mut codes = vec![Codec::Pcmu.silence(); 4];
        Codec::Pcmu.transcode(Codec::Pcma, &mut codes);
        assert!(
            codes.iter().all(|c| *c == Codec::Pcma.silence()),
            "{codes:?}"
        );
        let loud: Vec<i16> = vec![-20000, -300, 0, 300, 20000];
        let mut codes = encode_ulaw(&loud);
        Codec::Pcmu.transcode(Codec::Pcma, &mut codes);
        for (want, got) in loud.iter().zip(Codec::Pcma.decode(&codes)) {
            let err = (i32::from(*want) - i32::from(got)).abs();
            assert!(
                err <= i32::from(want.unsigned_abs() / 16) + 16,
                "{want} -> {got}"
            );
        }
        let mut same = vec![1u8, 2, 3];
        Codec::Pcma.transcode(Codec::Pcma, &mut same);
        assert_eq!(same, vec![1, 2, 3]);
    }

    use super::*;

    fn all_samples() -> impl Iterator<Item = i16> {
        i16::MIN..=i16::MAX
    }

    #[test]
    fn zero_encodes_to_the_silence_code() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(Codec::Pcmu.silence(), linear_to_ulaw(0));
        assert_eq!(Codec::Pcma.silence(), linear_to_alaw(0));
        assert_eq!(ulaw_to_linear(0xFF), 0);
        // A-law has no zero code: its smallest level is ±8.
        assert_eq!(alaw_to_linear(0xD5), 8);
    }

    #[test]
    fn extremes_map_to_the_outermost_codes() {
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
        assert_eq!(alaw_to_linear(0xAA), 32_256);
        assert_eq!(alaw_to_linear(0x2A), -32_256);
    }

    #[test]
    fn known_code_points_from_the_g711_tables() {
        // Segment 1 starts at μ-law's 14-bit decision value 31 (124 at 16
        // bits, table 2a) and at A-law's 13-bit value 32 (256, table 1a).
        // 1000 falls in A-law segment 2, whose interval 992..=1023 decodes
        // to its midpoint.
        assert_eq!(linear_to_ulaw(124), 0xEF);
        assert_eq!(linear_to_ulaw(-124), 0x6F);
        assert_eq!(linear_to_alaw(256), 0xC5);
        assert_eq!(linear_to_alaw(1000), 0xFA);
        assert_eq!(alaw_to_linear(0xFA), 1008);
    }

    #[test]
    fn sign_is_symmetric() {
        for x in 1..=i16::MAX {
            assert_eq!(linear_to_ulaw(-x), linear_to_ulaw(x) ^ 0x80, "ulaw {x}");
            // A-law folds the negative side on one's complement (-x - 1).
            assert_eq!(linear_to_alaw(!x), linear_to_alaw(x) ^ 0x80, "alaw {x}");
        }
        for code in 0..=u8::MAX {
            assert_eq!(ulaw_to_linear(code ^ 0x80), -ulaw_to_linear(code));
            assert_eq!(alaw_to_linear(code ^ 0x80), -alaw_to_linear(code));
        }
    }

    #[test]
    fn ulaw_round_trip_stays_within_half_a_step() {
        for x in all_samples() {
            let back = ulaw_to_linear(linear_to_ulaw(x));
            let magnitude = i32::from(x).abs().min(ULAW_CLIP);
            let clipped = i32::from(x).abs() - magnitude;
            // A step is 1/16 of its segment's base; half a step is 1/32.
            let bound = (magnitude + ULAW_BIAS) / 32 + clipped + 1;
            let error = (i32::from(back) - i32::from(x)).abs();
            assert!(error <= bound, "{x} -> {back}, error {error} > {bound}");
        }
    }

    #[test]
    fn alaw_round_trip_stays_within_half_a_step() {
        for x in all_samples() {
            let back = alaw_to_linear(linear_to_alaw(x));
            // Segments 0 and 1 step by 16, so half a step plus the 7 lost
            // in the cut to 13 bits; above that, 1/32 of the value.
            let bound = (i32::from(x).abs() / 32).max(16) + 1;
            let error = (i32::from(back) - i32::from(x)).abs();
            assert!(error <= bound, "{x} -> {back}, error {error} > {bound}");
        }
    }

    #[test]
    fn decoding_then_encoding_returns_every_code() {
        for code in 0..=u8::MAX {
            assert_eq!(linear_to_alaw(alaw_to_linear(code)), code);
            // μ-law has two zeros (0xFF and 0x7F); both decode to 0.
            let again = linear_to_ulaw(ulaw_to_linear(code));
            assert!(
                again == code || (code == 0x7F && again == 0xFF),
                "{code:#x}"
            );
        }
    }

    #[test]
    fn codec_helpers_agree_with_the_free_functions() {
        let samples = [0, 1, -1, 1000, -1000, i16::MAX, i16::MIN];
        assert_eq!(Codec::Pcmu.encode(&samples), encode_ulaw(&samples));
        assert_eq!(Codec::Pcma.encode(&samples), encode_alaw(&samples));
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        for codec in [Codec::Pcmu, Codec::Pcma] {
            assert_eq!(Codec::from_payload_type(codec.payload_type()), Some(codec));
            assert!(codec.decode(&codec.encode(&[0]))[0].abs() <= 8);
        }
        assert_eq!(Codec::from_payload_type(101), None);
    }
}
