//! User-to-User call control information (RFC 7433) in the ISDN UUI
//! package (RFC 7434): a bridged call carries the flow's context to the
//! ACD in a `User-to-User` header, for contact centres whose ACD reads
//! UUI rather than `X-` headers.
//!
//! The data is what an ISDN User-user information element would hold: a
//! protocol discriminator (0x04, IA5 characters) and then `key=value`
//! pairs joined by `;`, with `;`, `=`, `%` and anything outside printable
//! ASCII percent-encoded. The header carries it hex-encoded.

use std::fmt::Write as _;

/// The most UUI octets ISDN interworking carries (RFC 7434 section 5:
/// 128 octets of user information after the protocol discriminator, as
/// in Q.931's User-user information element); longer data may be cut by
/// a gateway on the way, so it is never sent.
pub const MAX_OCTETS: usize = 129;

/// Q.931 protocol discriminator: IA5 characters.
const IA5: u8 = 0x04;

/// The `User-to-User` header value for `pairs`, and the names of the
/// pairs left out because the data would have grown past
/// [`MAX_OCTETS`] (the first pairs are kept, in order).
pub fn encode(pairs: &[(String, String)]) -> (String, Vec<String>) {
    let mut data = vec![IA5];
    let mut left_out = Vec::new();
    let mut pair = Vec::with_capacity(64);
    for (k, v) in pairs {
        pair.clear();
        if data.len() > 1 {
            pair.push(b';');
        }
        escape(k, &mut pair);
        pair.push(b'=');
        escape(v, &mut pair);
        if data.len() + pair.len() > MAX_OCTETS {
            left_out.push(k.clone());
            continue;
        }
        data.extend_from_slice(&pair);
    }
    let mut value = String::with_capacity(data.len() * 2 + 32);
    for b in &data {
        let _ = write!(value, "{b:02x}");
    }
    value.push_str(";encoding=hex;purpose=isdn-uui");
    (value, left_out)
}

fn escape(text: &str, out: &mut Vec<u8>) {
    for &b in text.as_bytes() {
        if b.is_ascii_graphic() && !matches!(b, b';' | b'=' | b'%') || b == b' ' {
            out.push(b);
        } else {
            let _ = write!(Hex(out), "%{b:02X}");
        }
    }
}

/// Writes formatted text into a byte vector.
struct Hex<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Hex<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(value: &str) -> Vec<u8> {
        let hex = value.split(';').next().unwrap_or_default();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn pairs_are_ia5_text_behind_the_discriminator_hex_encoded() {
        let (value, left_out) = encode(&[
            ("queue".into(), "support".into()),
            ("intent".into(), "a=b;c%".into()),
        ]);
        assert!(left_out.is_empty());
        assert!(value.ends_with(";encoding=hex;purpose=isdn-uui"), "{value}");
        let data = decode(&value);
        assert_eq!(data[0], 0x04);
        assert_eq!(&data[1..], b"queue=support;intent=a%3Db%3Bc%25");
    }

    #[test]
    fn what_would_not_fit_in_isdn_uui_is_left_out_and_named() {
        let long = "x".repeat(100);
        let (value, left_out) = encode(&[
            ("a".into(), long.clone()),
            ("b".into(), long),
            ("c".into(), "1".into()),
        ]);
        assert_eq!(left_out, vec!["b".to_string()]);
        let data = decode(&value);
        assert!(data.len() <= MAX_OCTETS);
        assert!(data.ends_with(b";c=1"));
    }

    #[test]
    fn control_characters_and_non_ascii_are_escaped() {
        let (value, _) = encode(&[("n".into(), "é\r\n".into())]);
        assert_eq!(&decode(&value)[1..], b"n=%C3%A9%0D%0A");
    }
}
