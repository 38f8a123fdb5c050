//! A server's digest challenge (RFC 3261 section 22.1, RFC 7616 section 3.3).

use super::params::parse_digest;
use super::{Algorithm, AuthError, Qop};

/// One digest challenge, read from a `WWW-Authenticate` (401) or
/// `Proxy-Authenticate` (407) header value.
///
/// Fields are public so that callers can group challenges by realm and
/// tests can build one directly. Parameters that do not change the answer
/// (`domain`, `charset`, extensions) are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space; also picks which credentials to use.
    pub realm: String,
    /// The server nonce, echoed back and hashed into the response.
    pub nonce: String,
    /// Opaque server state, echoed back unchanged when present.
    pub opaque: Option<String>,
    /// The hash to use; MD5 when the challenge names none (RFC 2617
    /// section 3.2.1).
    pub algorithm: Algorithm,
    /// The qualities of protection offered that we implement, in the
    /// server's order. Empty for an RFC 2069-style challenge with no `qop`.
    pub qop: Vec<Qop>,
    /// The previous request's nonce had expired but its credentials were
    /// right: retry with the new nonce without treating it as a refusal.
    pub stale: bool,
    /// The server wants the username hashed (RFC 7616 section 3.4.4).
    pub userhash: bool,
}

impl Challenge {
    /// Parses a challenge header value such as
    /// `Digest realm="trunk", nonce="abc", qop="auth", algorithm=SHA-256`.
    ///
    /// The scheme is matched in any case; unknown parameters are ignored.
    /// Fails on a non-digest scheme, malformed syntax, a missing `realm` or
    /// `nonce`, an unsupported algorithm (named in the error), or a `qop`
    /// list that offers nothing we implement, since answering that without
    /// a qop would be refused anyway.
    pub fn parse(value: &str) -> Result<Challenge, AuthError> {
        let params = parse_digest(
            value,
            &[
                "realm",
                "nonce",
                "opaque",
                "algorithm",
                "qop",
                "stale",
                "userhash",
            ],
        )?;
        let realm = params
            .get("realm")
            .ok_or(AuthError::MissingParam("realm"))?;
        let nonce = params
            .get("nonce")
            .ok_or(AuthError::MissingParam("nonce"))?;
        let algorithm = match params.get("algorithm") {
            Some(token) => token.parse()?,
            None => Algorithm::Md5,
        };
        let qop = match params.get("qop") {
            Some(list) => parse_qop_options(list)?,
            None => Vec::new(),
        };
        Ok(Challenge {
            realm: realm.to_owned(),
            nonce: nonce.to_owned(),
            opaque: params.get("opaque").map(str::to_owned),
            algorithm,
            qop,
            stale: is_true(params.get("stale")),
            userhash: is_true(params.get("userhash")),
        })
    }

    /// The qop an answer uses: `auth` when offered, `auth-int` only when it
    /// is the sole offer (it breaks when a proxy rewrites the body), none
    /// for an RFC 2069-style challenge.
    pub fn preferred_qop(&self) -> Option<Qop> {
        if self.qop.contains(&Qop::Auth) {
            Some(Qop::Auth)
        } else {
            self.qop.first().copied()
        }
    }
}

/// Reads `"auth,auth-int"`, skipping tokens we do not implement.
fn parse_qop_options(list: &str) -> Result<Vec<Qop>, AuthError> {
    let mut offered = Vec::new();
    for qop in list.split(',').filter_map(|t| Qop::from_token(t.trim())) {
        if !offered.contains(&qop) {
            offered.push(qop);
        }
    }
    if offered.is_empty() {
        return Err(AuthError::UnsupportedQop(list.to_owned()));
    }
    Ok(offered)
}

/// RFC 7616 section 3.3: only `true`, in any case, is true; anything else,
/// or absence, is false.
fn is_true(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7616_challenge_is_read() {
        let c = Challenge::parse(
            "Digest\r\n realm=\"http-auth@example.org\",\r\n qop=\"auth, auth-int\",\r\n \
             algorithm=SHA-256,\r\n nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge {
                realm: "http-auth@example.org".into(),
                nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into(),
                opaque: Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS".into()),
                algorithm: Algorithm::Sha256,
                qop: vec![Qop::Auth, Qop::AuthInt],
                stale: false,
                userhash: false,
            }
        );
    }

    #[test]
    fn lowercase_scheme_and_unquoted_algorithm() {
        let c = Challenge::parse("digest realm=\"r\", nonce=\"n\", algorithm=md5-sess").unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5Sess);
    }

    #[test]
    fn quoted_algorithm_is_accepted() {
        let c =
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=\"SHA-512-256\"").unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha512_256);
    }

    #[test]
    fn commas_inside_quotes_and_extra_spaces() {
        let c = Challenge::parse(
            "  Digest   realm = \"a, b\" ,  nonce=\"x,y\"  , opaque=\"\\\"o\\\"\",  domain=\"sip:a,sip:b\"  ",
        )
        .unwrap();
        assert_eq!(c.realm, "a, b");
        assert_eq!(c.nonce, "x,y");
        assert_eq!(c.opaque.as_deref(), Some("\"o\""));
    }

    #[test]
    fn defaults_without_algorithm_or_qop() {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert!(c.qop.is_empty());
        assert_eq!(c.preferred_qop(), None);
        assert!(!c.stale && !c.userhash && c.opaque.is_none());
    }

    #[test]
    fn stale_and_userhash_flags() {
        let c = Challenge::parse("Digest realm=r, nonce=n, stale=TRUE, userhash=\"true\"").unwrap();
        assert!(c.stale && c.userhash);
        let c = Challenge::parse("Digest realm=r, nonce=n, stale=yes, userhash=false").unwrap();
        assert!(!c.stale && !c.userhash);
    }

    #[test]
    fn qop_preference_auth_over_auth_int() {
        let c = Challenge::parse("Digest realm=r, nonce=n, qop=\"auth-int,auth\"").unwrap();
        assert_eq!(c.preferred_qop(), Some(Qop::Auth));
        let c = Challenge::parse("Digest realm=r, nonce=n, qop=\"auth-int\"").unwrap();
        assert_eq!(c.preferred_qop(), Some(Qop::AuthInt));
        let c = Challenge::parse("Digest realm=r, nonce=n, qop=\"auth-conf, auth\"").unwrap();
        assert_eq!(c.qop, vec![Qop::Auth]);
    }

    #[test]
    fn qop_with_nothing_we_implement_is_an_error() {
        assert_eq!(
            Challenge::parse("Digest realm=r, nonce=n, qop=\"auth-conf\""),
            Err(AuthError::UnsupportedQop("auth-conf".into()))
        );
    }

    #[test]
    fn missing_realm_or_nonce_is_an_error() {
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", opaque=\"nonce=x\""),
            Err(AuthError::MissingParam("nonce"))
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(AuthError::MissingParam("realm"))
        );
        assert_eq!(
            Challenge::parse("Digest"),
            Err(AuthError::MissingParam("realm"))
        );
    }

    #[test]
    fn unsupported_algorithm_is_named() {
        let err = Challenge::parse("Digest realm=r, nonce=n, algorithm=SHA-1").unwrap_err();
        assert_eq!(err, AuthError::UnsupportedAlgorithm("SHA-1".into()));
        assert!(err.to_string().contains("SHA-1"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [
            "",
            "   ",
            "Basic realm=\"r\"",
            "Digest realm=\"unterminated",
            "Digest realm=\"r\" nonce=\"n\"",
            "Digest ==,,==",
            "Digest realm=\"r\", nonce=\"n\", realm=\"s\"",
            "\u{0}\u{7f}é\"\\",
            "Digest \"",
        ] {
            assert!(Challenge::parse(input).is_err(), "{input:?}");
        }
    }
}
