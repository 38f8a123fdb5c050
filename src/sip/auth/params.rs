//! The `Digest` auth-param list shared by challenges and credentials
//! (RFC 3261 section 25.1 `digest-cln`/`dig-resp`, RFC 7235 section 2.1),
//! and the quoting needed to write values back.
//!
//! Reading is lenient where real trunks are sloppy (any case for names and
//! scheme, spaces around `=`, empty list elements, quoted or bare values) and
//! strict where guessing would be unsafe (unterminated quotes, missing `=`,
//! a parameter given twice).

use super::AuthError;

/// The auth-params of one `Digest` header value that the caller asked for,
/// unquoted. Names are matched case-insensitively (RFC 3261 section 7.3.1).
#[derive(Debug, Default)]
pub(crate) struct Params {
    found: Vec<(&'static str, String)>,
}

impl Params {
    /// The unquoted value of `name` (one of the names passed to
    /// [`parse_digest`]), if the header carried it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.found
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Parses `Digest name=value, name="value", ...`, keeping only the `wanted`
/// (lowercase) names.
///
/// Unknown parameters are skipped so that extensions (`charset`, `domain`,
/// vendor params) never break authentication (RFC 7616 section 3.3). Only
/// wanted names are remembered, which also keeps the duplicate check cheap
/// on a hostile header with thousands of parameters.
pub(crate) fn parse_digest(value: &str, wanted: &[&'static str]) -> Result<Params, AuthError> {
    let mut cursor = Cursor {
        text: value,
        pos: 0,
    };
    cursor.skip_whitespace();
    let scheme_at = cursor.pos;
    let scheme = cursor.take_while(is_token_char);
    if scheme.is_empty() {
        return Err(malformed(scheme_at, "expected the auth scheme `Digest`"));
    }
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthError::NotDigest(scheme.to_owned()));
    }
    // `Digestrealm=...` is not `Digest realm=...`: the scheme ends at
    // whitespace (RFC 7235 section 2.1).
    if !matches!(cursor.peek(), None | Some(' ' | '\t' | '\r' | '\n')) {
        return Err(malformed(cursor.pos, "expected a space after `Digest`"));
    }

    let mut params = Params::default();
    loop {
        cursor.skip_whitespace();
        match cursor.peek() {
            None => break,
            // RFC 7230 section 7: recipients accept empty list elements.
            Some(',') => {
                cursor.bump();
                continue;
            }
            Some(_) => {}
        }
        let name_at = cursor.pos;
        let name = cursor.take_while(is_token_char);
        if name.is_empty() {
            return Err(malformed(name_at, "expected a parameter name"));
        }
        cursor.skip_whitespace();
        if cursor.peek() != Some('=') {
            return Err(malformed(cursor.pos, "expected `=` after a parameter name"));
        }
        cursor.bump();
        cursor.skip_whitespace();
        let value_at = cursor.pos;
        let value = if cursor.peek() == Some('"') {
            cursor.quoted_string()?
        } else {
            // Bare values are looser than RFC 3261's `token`: trunks send
            // unquoted base64 nonces with `/` and `=` in them.
            let bare = cursor.take_while(|c| !is_whitespace(c) && c != ',' && c != '"');
            if bare.is_empty() {
                return Err(malformed(value_at, "expected a parameter value"));
            }
            bare.to_owned()
        };
        cursor.skip_whitespace();
        if !matches!(cursor.peek(), None | Some(',')) {
            return Err(malformed(cursor.pos, "expected `,` between parameters"));
        }
        let Some(&known) = wanted.iter().find(|w| w.eq_ignore_ascii_case(name)) else {
            continue;
        };
        // RFC 7235 section 2.2: each parameter occurs at most once; taking
        // either copy of a doubled realm or nonce would be a guess.
        if params.get(known).is_some() {
            return Err(AuthError::DuplicateParam(known.to_owned()));
        }
        params.found.push((known, value));
    }
    Ok(params)
}

/// Writes `value` as a quoted-string (RFC 3261 section 25.1).
///
/// `"` and `\` are escaped. CR and LF cannot appear even escaped, and other
/// controls are refused by many parsers, so they are dropped: a value with
/// them then fails authentication instead of injecting a header line.
pub(crate) fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn malformed(at: usize, reason: &'static str) -> AuthError {
    AuthError::Malformed { at, reason }
}

fn is_whitespace(c: char) -> bool {
    // CR and LF appear when a caller hands over a folded header unfolded.
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// RFC 3261 section 25.1 `token`.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

/// A read position in a header value. Every advance is by a whole char, so
/// slicing at `pos` stays on a char boundary; `get` keeps it panic-free even
/// if that ever stopped being true.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_whitespace(&mut self) {
        self.take_while(is_whitespace);
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c| !keep(c)).unwrap_or(rest.len());
        self.pos += len;
        rest.get(..len).unwrap_or("")
    }

    /// Reads a quoted-string starting at its opening quote and returns it
    /// unescaped (RFC 3261 section 25.1 `quoted-pair`).
    fn quoted_string(&mut self) -> Result<String, AuthError> {
        let open_at = self.pos;
        self.bump();
        let mut value = String::new();
        loop {
            match self.bump() {
                None => return Err(malformed(open_at, "unterminated quoted string")),
                Some('"') => return Ok(value),
                Some('\\') => match self.bump() {
                    Some(escaped) => value.push(escaped),
                    None => return Err(malformed(open_at, "unterminated quoted string")),
                },
                Some(c) => value.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[&str] = &["realm", "nonce", "qop", "algorithm", "opaque"];

    #[test]
    fn quoted_values_keep_commas_and_escaped_quotes() {
        let p = parse_digest(r#"Digest realm="a, \"b\", c\\d", nonce="n""#, ALL).unwrap();
        assert_eq!(p.get("realm"), Some(r#"a, "b", c\d"#));
        assert_eq!(p.get("nonce"), Some("n"));
    }

    #[test]
    fn spaces_around_equals_and_empty_elements_are_accepted() {
        let p = parse_digest("Digest  ,realm = \"r\" ,, nonce= n ,", ALL).unwrap();
        assert_eq!(p.get("realm"), Some("r"));
        assert_eq!(p.get("nonce"), Some("n"));
    }

    #[test]
    fn bare_values_may_hold_base64() {
        let p = parse_digest("Digest nonce=ab/c+d==", ALL).unwrap();
        assert_eq!(p.get("nonce"), Some("ab/c+d=="));
    }

    #[test]
    fn names_are_case_insensitive_and_unknown_ones_skipped() {
        let p = parse_digest("DIGEST Realm=\"r\", charset=UTF-8, x-vendor=\"1,2\"", ALL).unwrap();
        assert_eq!(p.get("realm"), Some("r"));
        assert_eq!(p.get("charset"), None);
    }

    #[test]
    fn duplicate_known_parameter_is_an_error() {
        let err = parse_digest("Digest realm=\"a\", realm=\"b\"", ALL).unwrap_err();
        assert_eq!(err, AuthError::DuplicateParam("realm".into()));
    }

    #[test]
    fn structural_errors_carry_their_position() {
        let cases = [
            ("", 0),
            ("Digest realm", 12),
            ("Digest realm=", 13),
            ("Digest realm=\"abc", 13),
            ("Digest realm=\"abc\\", 13),
            ("Digest realm=\"a\" nonce=\"b\"", 17),
            ("Digest =x", 7),
            ("Digest\"r\"", 6),
        ];
        for (input, at) in cases {
            match parse_digest(input, ALL) {
                Err(AuthError::Malformed { at: got, .. }) => assert_eq!(got, at, "{input:?}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_schemes_are_named_in_the_error() {
        let err = parse_digest("Basic realm=\"r\"", ALL).unwrap_err();
        assert_eq!(err, AuthError::NotDigest("Basic".into()));
    }

    #[test]
    fn quote_escapes_and_drops_line_breaks() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("a\r\nVia: x"), "\"aVia: x\"");
        assert_eq!(quote("Jäsøn"), "\"Jäsøn\"");
    }

    #[test]
    fn quote_round_trips_through_the_parser() {
        let nasty = "x\"y\\z, w=\"v\"";
        let header = format!("Digest realm={}", quote(nasty));
        assert_eq!(
            parse_digest(&header, ALL).unwrap().get("realm"),
            Some(nasty)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<char> = "Digest realm=\"\\, \t\r\näø=".chars().collect();
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let input: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let _ = parse_digest(&input, ALL);
        }
    }
}
