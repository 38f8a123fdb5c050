//! The digest response: computing it for a challenge (the UAC side) and
//! checking one (the server side), RFC 7616 section 3.4 and RFC 3261
//! section 22.4.

use std::fmt::Write as _;

use super::params::{parse_digest, quote};
use super::{Algorithm, AuthError, Challenge, Credentials, Qop};

/// Builds the `Authorization` (after a 401) or `Proxy-Authorization`
/// (after a 407) header value answering `challenge` for a request.
///
/// `method` and `uri` are the request's method and Request-URI (RFC 3261
/// section 22.4 item 3); `nc` counts requests made with this nonce, from 1
/// ([`super::NonceCounter`]); `cnonce` is the client nonce
/// ([`super::new_cnonce`]); `body` is hashed only for `qop=auth-int`.
///
/// The qop is [`Challenge::preferred_qop`]. Without one (RFC 2069 style),
/// `nc` and `cnonce` are left out, except that a `-sess` algorithm still
/// sends `cnonce` because A1 depends on it. `algorithm` is always written,
/// which every server accepts and which removes any doubt about the hash.
pub fn authorize(
    challenge: &Challenge,
    creds: &Credentials,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
    body: &[u8],
) -> String {
    let algorithm = challenge.algorithm;
    let qop = challenge.preferred_qop();
    let sends_cnonce = qop.is_some() || algorithm.is_session();
    let response = compute_response(&ResponseInput {
        algorithm,
        username: &creds.username,
        realm: &challenge.realm,
        password: &creds.password,
        nonce: &challenge.nonce,
        cnonce: sends_cnonce.then_some(cnonce),
        counted: qop.map(|qop| (qop, nc)),
        method,
        uri,
        body,
    });
    let username = if challenge.userhash {
        userhash(algorithm, &creds.username, &challenge.realm)
    } else {
        creds.username.clone()
    };

    // `write!` into a String cannot fail; the results are ignored for that
    // reason only.
    let mut out = String::with_capacity(256);
    let _ = write!(
        out,
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{}\", algorithm={}",
        quote(&username),
        quote(&challenge.realm),
        quote(&challenge.nonce),
        quote(uri),
        response,
        algorithm,
    );
    if let Some(qop) = qop {
        let _ = write!(out, ", qop={qop}, nc={nc:08x}");
    }
    if sends_cnonce {
        let _ = write!(out, ", cnonce={}", quote(cnonce));
    }
    if let Some(opaque) = &challenge.opaque {
        let _ = write!(out, ", opaque={}", quote(opaque));
    }
    if challenge.userhash {
        out.push_str(", userhash=true");
    }
    out
}

/// Checks an `Authorization` / `Proxy-Authorization` header value against
/// `password`, for the server side of tests.
///
/// `Ok(false)` means well-formed but wrong. Only the response is checked:
/// that the realm, nonce and uri are the ones the server issued and that
/// `nc` was not seen before are the server's own bookkeeping, for which
/// [`Authorization::parse`] exposes the fields. A hashed username needs
/// [`Authorization::verify_as`].
pub fn verify(
    header_value: &str,
    password: &str,
    method: &str,
    body: &[u8],
) -> Result<bool, AuthError> {
    let auth = Authorization::parse(header_value)?;
    if auth.userhash {
        return Err(AuthError::UserhashNeedsUsername);
    }
    let username = auth.username.clone();
    auth.verify_as(&username, password, method, body)
}

/// Credentials a client sent, read from an `Authorization` or
/// `Proxy-Authorization` header value (RFC 3261 section 22.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The username as sent: plain, or `H(username:realm)` when
    /// [`Authorization::userhash`] is set.
    pub username: String,
    /// The realm being answered.
    pub realm: String,
    /// The server nonce being answered.
    pub nonce: String,
    /// The digest-uri, which the server should compare with the
    /// Request-URI.
    pub uri: String,
    /// The response digest as sent, lowercased.
    pub response: String,
    /// The hash used; MD5 when the header names none.
    pub algorithm: Algorithm,
    /// The qop chosen, if any.
    pub qop: Option<Qop>,
    /// The nonce count; present whenever `qop` is.
    pub nc: Option<u32>,
    /// The client nonce; present whenever `qop` is, or the algorithm is a
    /// `-sess` one.
    pub cnonce: Option<String>,
    /// The opaque value echoed from the challenge.
    pub opaque: Option<String>,
    /// Whether `username` is hashed (RFC 7616 section 3.4.4).
    pub userhash: bool,
}

impl Authorization {
    /// Parses a credentials header value. Fails when a field the response
    /// depends on is absent, on an unknown algorithm or qop, and on an `nc`
    /// that is not 8 hex digits.
    pub fn parse(value: &str) -> Result<Authorization, AuthError> {
        let params = parse_digest(
            value,
            &[
                "username",
                "realm",
                "nonce",
                "uri",
                "response",
                "algorithm",
                "qop",
                "nc",
                "cnonce",
                "opaque",
                "userhash",
            ],
        )?;
        let required = |name: &'static str| {
            params
                .get(name)
                .map(str::to_owned)
                .ok_or(AuthError::MissingParam(name))
        };
        let algorithm = match params.get("algorithm") {
            Some(token) => token.parse()?,
            None => Algorithm::Md5,
        };
        let qop = match params.get("qop") {
            Some(token) => Some(
                Qop::from_token(token.trim())
                    .ok_or_else(|| AuthError::UnsupportedQop(token.to_owned()))?,
            ),
            None => None,
        };
        let nc = params.get("nc").map(parse_nonce_count).transpose()?;
        let cnonce = params.get("cnonce").map(str::to_owned);
        if qop.is_some() {
            // RFC 7616 section 3.4: both MUST be sent along with qop.
            if nc.is_none() {
                return Err(AuthError::MissingParam("nc"));
            }
            if cnonce.is_none() {
                return Err(AuthError::MissingParam("cnonce"));
            }
        }
        if algorithm.is_session() && cnonce.is_none() {
            return Err(AuthError::MissingParam("cnonce"));
        }
        Ok(Authorization {
            username: required("username")?,
            realm: required("realm")?,
            nonce: required("nonce")?,
            uri: required("uri")?,
            response: required("response")?.to_ascii_lowercase(),
            algorithm,
            qop,
            nc,
            cnonce,
            opaque: params.get("opaque").map(str::to_owned),
            userhash: params
                .get("userhash")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        })
    }

    /// Checks these credentials for a known user: the sent username must be
    /// `username` (or its hash, with userhash), and the response must be
    /// the one `password` gives for `method` and `body`.
    ///
    /// The digests are compared in constant time, so a test peer built on
    /// this does not teach bad habits.
    pub fn verify_as(
        &self,
        username: &str,
        password: &str,
        method: &str,
        body: &[u8],
    ) -> Result<bool, AuthError> {
        let sent_username_matches = if self.userhash {
            self.username
                .eq_ignore_ascii_case(&userhash(self.algorithm, username, &self.realm))
        } else {
            self.username == username
        };
        let counted = match (self.qop, self.nc) {
            (Some(qop), Some(nc)) => Some((qop, nc)),
            (Some(_), None) => return Err(AuthError::MissingParam("nc")),
            (None, _) => None,
        };
        if self.algorithm.is_session() && self.cnonce.is_none() {
            return Err(AuthError::MissingParam("cnonce"));
        }
        let expected = compute_response(&ResponseInput {
            algorithm: self.algorithm,
            username,
            realm: &self.realm,
            password,
            nonce: &self.nonce,
            cnonce: self.cnonce.as_deref(),
            counted,
            method,
            uri: &self.uri,
            body,
        });
        let response_matches = constant_time_eq(expected.as_bytes(), self.response.as_bytes());
        Ok(sent_username_matches & response_matches)
    }
}

/// Everything the response digest depends on (RFC 7616 section 3.4.1).
struct ResponseInput<'a> {
    algorithm: Algorithm,
    username: &'a str,
    realm: &'a str,
    password: &'a str,
    nonce: &'a str,
    /// Needed for `-sess` A1 and whenever a qop is used.
    cnonce: Option<&'a str>,
    /// The qop and nonce count, or `None` for the RFC 2069 form.
    counted: Option<(Qop, u32)>,
    method: &'a str,
    uri: &'a str,
    body: &'a [u8],
}

/// The `response` digest of RFC 7616 sections 3.4.1 to 3.4.3 (RFC 2617
/// section 3.2.2.1 when there is no qop).
fn compute_response(input: &ResponseInput<'_>) -> String {
    let h = |data: &str| input.algorithm.hex_digest(data.as_bytes());
    let cnonce = input.cnonce.unwrap_or("");

    let mut ha1 = h(&format!(
        "{}:{}:{}",
        input.username, input.realm, input.password
    ));
    if input.algorithm.is_session() {
        ha1 = h(&format!("{ha1}:{}:{cnonce}", input.nonce));
    }

    let ha2 = match input.counted {
        Some((Qop::AuthInt, _)) => {
            let body_hash = input.algorithm.hex_digest(input.body);
            h(&format!("{}:{}:{body_hash}", input.method, input.uri))
        }
        _ => h(&format!("{}:{}", input.method, input.uri)),
    };

    match input.counted {
        Some((qop, nc)) => h(&format!(
            "{ha1}:{}:{nc:08x}:{cnonce}:{qop}:{ha2}",
            input.nonce
        )),
        None => h(&format!("{ha1}:{}:{ha2}", input.nonce)),
    }
}

/// `H(username ":" realm)`, RFC 7616 section 3.4.4.
fn userhash(algorithm: Algorithm, username: &str, realm: &str) -> String {
    algorithm.hex_digest(format!("{username}:{realm}").as_bytes())
}

/// `nc-value = 8LHEX` (RFC 7616 section 3.4). Uppercase is tolerated on
/// reading; the digest is always recomputed over the lowercase form.
fn parse_nonce_count(text: &str) -> Result<u32, AuthError> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::InvalidNonceCount(text.to_owned()));
    }
    u32::from_str_radix(text, 16).map_err(|_| AuthError::InvalidNonceCount(text.to_owned()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
