//! SRTP keys in SDP (SDES, RFC 4568): the `a=crypto` attribute of an
//! `RTP/SAVP` stream. We take one suite, `AES_CM_128_HMAC_SHA1_80` (the
//! one every SDES implementation has, RFC 4568 6.2.1), with one inline key
//! and no MKI, and refuse anything else rather than half-understand it.
//!
//! SDES sends keys in the clear inside SDP, so it is only as safe as the
//! signalling: SRTP is offered and accepted only on calls whose SIP came
//! over TLS (RFC 4568 8.3).

use base64::Engine as _;

/// The one suite we take.
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

/// Octets of master key (16) and master salt (14) in one SDES key.
pub const KEY_LEN: usize = 30;

/// An SRTP master key and salt.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SdesKey(pub [u8; KEY_LEN]);

impl std::fmt::Debug for SdesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs and panic messages.
        f.write_str("SdesKey(..)")
    }
}

impl SdesKey {
    /// The master key half.
    pub fn master_key(&self) -> &[u8] {
        &self.0[..16]
    }

    /// The master salt half.
    pub fn master_salt(&self) -> &[u8] {
        &self.0[16..]
    }
}

/// An SRTP stream's keys, as negotiated: ours encrypts what we send, the
/// peer's decrypts what it sends (each side picks its own, RFC 4568 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The `a=crypto` tag both sides used.
    pub tag: u32,
    /// What we send with.
    pub send: SdesKey,
    /// What the peer sends with.
    pub receive: SdesKey,
}

/// One `a=crypto` value (after `a=crypto:`) if it is the suite we take in
/// a form we take: `1 AES_CM_128_HMAC_SHA1_80 inline:<40 base64 chars>`,
/// optionally with a lifetime (`|2^31`). An MKI, several keys or any
/// session parameter (`UNENCRYPTED_SRTP`, `KDR=`...) make it `None`.
pub fn parse(value: &str) -> Option<(u32, SdesKey)> {
    let mut fields = value.split_ascii_whitespace();
    let tag = fields.next()?;
    if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tag: u32 = tag.parse().ok()?;
    if !fields.next()?.eq_ignore_ascii_case(SUITE) {
        return None;
    }
    let params = fields.next()?;
    if fields.next().is_some() || params.contains(';') {
        return None;
    }
    let inline = params.strip_prefix("inline:")?;
    let mut parts = inline.split('|');
    let key = parts.next()?;
    for extra in parts {
        // An MKI we would have to send in every packet: refused. A
        // lifetime (`2^31`, `1048576`) is fine, as long as it outlasts a
        // call (a key is never used past 2^20 packets here: six hours).
        let lifetime = match extra.strip_prefix("2^") {
            Some(power) => power.parse::<u32>().ok().map(|p| p.min(63)),
            None => extra
                .parse::<u64>()
                .ok()
                .map(|n| 63 - n.leading_zeros().min(63)),
        };
        if lifetime.is_none_or(|bits| bits < 20) {
            return None;
        }
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    let key: [u8; KEY_LEN] = bytes.try_into().ok()?;
    Some((tag, SdesKey(key)))
}

/// An `a=crypto` value as received: it holds a key, so it never shows in
/// logs or panic messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto(pub String);

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypto(..)")
    }
}

/// The first `a=crypto` value of `values` that [`parse`] takes.
pub fn first_usable(values: &[Crypto]) -> Option<(u32, SdesKey)> {
    values.iter().find_map(|v| parse(&v.0))
}

/// Our `a=crypto` value for `tag` with `key`.
pub fn attribute(tag: u32, key: &SdesKey) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(key.0);
    format!("{tag} {SUITE} inline:{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4568 section 9.1's example key.
    const EXAMPLE: &str =
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";

    #[test]
    fn the_suite_we_take_in_the_form_we_take() {
        assert_eq!(parse(EXAMPLE), None, "an MKI is refused");
        let (tag, key) =
            parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20")
                .expect("a lifetime is fine");
        assert_eq!(tag, 1);
        assert_eq!(&key.0[..4], b"=-n@");
        let text = attribute(7, &key);
        assert_eq!(
            text,
            "7 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
        );
        assert_eq!(parse(&text), Some((7, key)), "what we write we read");
        assert_eq!(format!("{key:?}"), "SdesKey(..)", "keys stay out of logs");
    }

    #[test]
    fn other_suites_and_odd_forms_are_refused() {
        for bad in [
            "1 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR;inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!",
            "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1234567890 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^10",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|soon",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
