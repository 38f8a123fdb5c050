//! SIP digest authentication for a UAC (RFC 3261 section 22, digest from
//! RFC 2617, SHA-2 from RFC 7616 and RFC 8760).
//!
//! callflow dials callbacks out through trunks that challenge an INVITE
//! with 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`). The UAC
//! side is three pure steps, no IO:
//!
//! 1. [`Challenge::parse`] every challenge header of the response, keeping
//!    those that parse (an unsupported algorithm is skipped, not fatal).
//! 2. [`choose`] the strongest one: RFC 8760 section 2.4 lets a server offer
//!    one challenge per algorithm.
//! 3. [`authorize`] it, and resend the request with a new CSeq and the
//!    value in `Authorization` (after a 401) or `Proxy-Authorization`
//!    (after a 407), RFC 3261 sections 22.2 and 22.3.
//!
//! The caller keeps the nonce count ([`NonceCounter`]) and the cnonce
//! ([`new_cnonce`]), so that tests are deterministic. A second challenge
//! for the same realm means the credentials were refused, unless it says
//! `stale=true` (RFC 7616 section 3.3): then retry once with the new nonce.
//!
//! [`verify`] and [`Authorization`] are the server side, so that our own
//! tests and test peers can check what we send.

mod challenge;
mod params;
mod response;

pub use challenge::Challenge;
pub use response::{authorize, verify, Authorization};

use std::fmt;
use std::str::FromStr;

/// Why a digest header could not be read or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The header uses another scheme (for example `Basic`), which SIP
    /// forbids (RFC 3261 section 22.1).
    #[error("auth scheme `{0}` is not Digest")]
    NotDigest(String),
    /// The header is not a well-formed auth-param list.
    #[error("malformed digest header at byte {at}: {reason}")]
    Malformed {
        /// Byte offset into the header value where reading stopped.
        at: usize,
        /// What was expected there.
        reason: &'static str,
    },
    /// A parameter the exchange cannot do without is absent.
    #[error("digest header has no `{0}` parameter")]
    MissingParam(&'static str),
    /// A parameter appears twice, so which one counts would be a guess.
    #[error("digest header has `{0}` more than once")]
    DuplicateParam(String),
    /// The algorithm is not one of RFC 8760 section 2.1's.
    #[error("unsupported digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// No quality of protection we implement was offered or used.
    #[error("unsupported digest qop `{0}`")]
    UnsupportedQop(String),
    /// `nc` is not 8 hex digits (RFC 7616 section 3.4 `nc-value`).
    #[error("digest nonce count `{0}` is not 8 hex digits")]
    InvalidNonceCount(String),
    /// The credentials carry a hashed username (RFC 7616 section 3.4.4),
    /// which cannot be checked without knowing the plain one: use
    /// [`Authorization::verify_as`].
    #[error("digest username is hashed (userhash=true); the plain username is needed")]
    UserhashNeedsUsername,
}

/// A digest hash algorithm (RFC 8760 section 2.1, RFC 7616 section 3.3).
///
/// The `-sess` variants hash the client nonce into A1 (RFC 7616 section
/// 3.4.2), so that a server can hand A1 to a third party per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`, the RFC 2617 default when a challenge names none.
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256`: SHA-512/256 from FIPS 180-4, which has its own
    /// initial values; it is not SHA-512 cut to 256 bits, although RFC 7616's
    /// section 3.9.2 example was computed that way (erratum 4897).
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
}

impl Algorithm {
    /// The token as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Whether this is a `-sess` variant.
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// Preference for [`choose`]: higher is stronger (RFC 8760 section 2.4
    /// says a UAC uses the strongest it supports). A `-sess` variant ranks
    /// with its hash, which is what the strength comes from.
    fn strength(self) -> u8 {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
            Algorithm::Sha256 | Algorithm::Sha256Sess => 2,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => 3,
        }
    }

    /// `H(data)` as lowercase hex (RFC 7616 section 3.4).
    pub(crate) fn hex_digest(self, data: &[u8]) -> String {
        use sha2::Digest as _;
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => to_hex(&md5::Md5::digest(data)),
            Algorithm::Sha256 | Algorithm::Sha256Sess => to_hex(&sha2::Sha256::digest(data)),
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => {
                to_hex(&sha2::Sha512_256::digest(data))
            }
        }
    }
}

impl FromStr for Algorithm {
    type Err = AuthError;

    /// Reads an algorithm token, in any case (trunks send `md5`).
    fn from_str(token: &str) -> Result<Self, AuthError> {
        [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(token))
        .ok_or_else(|| AuthError::UnsupportedAlgorithm(token.to_owned()))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quality of protection (RFC 7616 section 3.3 `qop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `auth`: the request line is protected.
    Auth,
    /// `auth-int`: the body is hashed in too. Few SIP servers offer it, and
    /// a proxy that rewrites SDP breaks it, so it is used only when it is
    /// the sole offer.
    AuthInt,
}

impl Qop {
    /// The token as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }

    /// Reads one qop token, in any case; `None` for extensions such as
    /// `auth-conf` that we do not implement.
    pub(crate) fn from_token(token: &str) -> Option<Self> {
        [Qop::Auth, Qop::AuthInt]
            .into_iter()
            .find(|q| q.as_str().eq_ignore_ascii_case(token))
    }
}

impl fmt::Display for Qop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The account a trunk knows us by.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication username (often, but not always, the user part
    /// of the From URI).
    pub username: String,
    /// The shared secret.
    pub password: String,
}

impl fmt::Debug for Credentials {
    // Credentials end up in tracing spans and test failures; the password
    // must not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Picks the challenge to answer among those of one response: the strongest
/// algorithm (SHA-512-256, then SHA-256, then MD5, RFC 8760 section 2.4),
/// the server's first offer among equals. `None` only for an empty slice.
///
/// This is for challenges of one realm. After a 407 from a chain of
/// proxies, RFC 3261 section 22.3 wants one answer per realm: group the
/// challenges by [`Challenge::realm`] and choose within each group.
pub fn choose(challenges: &[Challenge]) -> Option<&Challenge> {
    challenges
        .iter()
        .rev()
        .max_by_key(|c| c.algorithm.strength())
}

/// Counts the requests made with each server nonce, for the `nc` argument
/// of [`authorize`] (RFC 7616 section 3.4: the count starts at 1 for each
/// new nonce, and the server may reject a count it has seen).
#[derive(Debug, Clone, Default)]
pub struct NonceCounter {
    nonce: String,
    count: u32,
}

impl NonceCounter {
    /// A counter that has seen no nonce yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The count for the next request with `nonce`: 1 for a new nonce,
    /// then 2, 3... It saturates rather than wraps, so an exhausted nonce
    /// gets a replay rejection and a fresh nonce instead of a reused count.
    pub fn next(&mut self, nonce: &str) -> u32 {
        if self.nonce != nonce {
            nonce.clone_into(&mut self.nonce);
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count
    }
}

/// A fresh client nonce: 128 random bits as 32 hex digits.
///
/// The generator is passed in so that tests can seed it. fastrand is not a
/// cryptographic generator; that is acceptable here because the cnonce
/// only has to be unpredictable enough to spoil a server's chosen-plaintext
/// games (RFC 7616 section 5.11), not secret.
pub fn new_cnonce(rng: &mut fastrand::Rng) -> String {
    format!("{:016x}{:016x}", rng.u64(..), rng.u64(..))
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(algorithm: Algorithm, nonce: &str) -> Challenge {
        Challenge {
            realm: "trunk".into(),
            nonce: nonce.into(),
            opaque: None,
            algorithm,
            qop: vec![Qop::Auth],
            stale: false,
            userhash: false,
        }
    }

    #[test]
    fn choose_prefers_sha512_256_then_sha256_then_md5() {
        let all = [
            challenge(Algorithm::Md5, "a"),
            challenge(Algorithm::Sha256, "b"),
            challenge(Algorithm::Sha512_256, "c"),
        ];
        assert_eq!(choose(&all).unwrap().nonce, "c");
        assert_eq!(choose(&all[..2]).unwrap().nonce, "b");
        assert_eq!(choose(&all[..1]).unwrap().nonce, "a");
        assert!(choose(&[]).is_none());
    }

    #[test]
    fn choose_keeps_server_order_among_equals() {
        let all = [
            challenge(Algorithm::Md5, "a"),
            challenge(Algorithm::Sha256Sess, "b"),
            challenge(Algorithm::Sha256, "c"),
        ];
        assert_eq!(choose(&all).unwrap().nonce, "b");
    }

    #[test]
    fn algorithm_tokens_round_trip_in_any_case() {
        for a in [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ] {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
            assert_eq!(a.as_str().to_lowercase().parse::<Algorithm>(), Ok(a));
        }
        assert_eq!(
            "SHA-1".parse::<Algorithm>(),
            Err(AuthError::UnsupportedAlgorithm("SHA-1".into()))
        );
    }

    #[test]
    fn hashes_match_known_vectors() {
        assert_eq!(
            Algorithm::Md5.hex_digest(b""),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            Algorithm::Sha256.hex_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // FIPS 180-4 example for SHA-512/256.
        assert_eq!(
            Algorithm::Sha512_256.hex_digest(b"abc"),
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
        );
    }

    #[test]
    fn nonce_counter_restarts_for_a_new_nonce() {
        let mut nc = NonceCounter::new();
        assert_eq!(nc.next("a"), 1);
        assert_eq!(nc.next("a"), 2);
        assert_eq!(nc.next("b"), 1);
        assert_eq!(nc.next("a"), 1);
    }

    #[test]
    fn cnonce_is_32_hex_digits_and_varies() {
        let mut rng = fastrand::Rng::with_seed(1);
        let a = new_cnonce(&mut rng);
        let b = new_cnonce(&mut rng);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let creds = Credentials {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}
