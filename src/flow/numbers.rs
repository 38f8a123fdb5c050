//! Phone numbers as callers and lists write them, normalised for matching.

use std::collections::HashSet;
use std::path::Path;

/// Reduces a phone number to its digits in international form, so that
/// `+371 2000 0000`, `(+371) 2000-0000`, `0037120000000` and `37120000000`
/// compare equal. A SIP URI (`sip:+3712...@host`) is reduced to its user part.
/// Returns an empty string when there are no digits at all (anonymous).
pub fn normalise(number: &str) -> String {
    let mut s = number.trim();
    for scheme in ["sip:", "sips:", "tel:"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest;
        }
    }
    if let Some(at) = s.find('@') {
        s = &s[..at];
    }
    if let Some(semi) = s.find(';') {
        s = &s[..semi];
    }
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    match digits.strip_prefix("00") {
        Some(rest) if !s.trim_start().starts_with('+') => rest.to_string(),
        _ => digits,
    }
}

/// A named set of phone numbers (e.g. VIP callers) loaded from CSV.
#[derive(Debug, Clone, Default)]
pub struct NumberList {
    numbers: HashSet<String>,
}

/// Why a list file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The file could not be read.
    #[error("cannot read list file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A row whose first column is not a phone number.
    #[error("{path}:{line}: `{text}` is not a phone number")]
    BadRow {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The offending first column.
        text: String,
    },
}

impl NumberList {
    /// Reads a CSV file: the first column of each row is a number; a first
    /// row without digits is taken as a header; `#` starts a comment line.
    pub fn load(path: &Path) -> Result<Self, ListError> {
        let text = std::fs::read_to_string(path).map_err(|source| ListError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses CSV text (see [`NumberList::load`]); `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Self, ListError> {
        let mut numbers = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            let normalised = normalise(first);
            let plausible = first
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c));
            if normalised.is_empty() || !plausible {
                if i == 0 || numbers.is_empty() && !first.chars().any(|c| c.is_ascii_digit()) {
                    continue; // header row
                }
                return Err(ListError::BadRow {
                    path: name.to_string(),
                    line: i + 1,
                    text: first.to_string(),
                });
            }
            numbers.insert(normalised);
        }
        Ok(Self { numbers })
    }

    /// Whether `number` (in any common notation) is in the list.
    pub fn contains(&self, number: &str) -> bool {
        let n = normalise(number);
        !n.is_empty() && self.numbers.contains(&n)
    }

    /// How many numbers the list holds.
    pub fn len(&self) -> usize {
        self.numbers.len()
    }

    /// True when the list holds no numbers.
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notations_of_one_number_normalise_alike() {
        for n in [
            "+371 2000 0000",
            "37120000000",
            "0037120000000",
            "(+371) 2000-0000",
            "sip:+37120000000@trunk;user=phone",
        ] {
            assert_eq!(normalise(n), "37120000000", "{n}");
        }
        assert_eq!(normalise("anonymous"), "");
    }

    #[test]
    fn csv_with_header_and_comments() {
        let list = NumberList::parse(
            "number,name\n# staff\n+371 2000 0000,Ann\n\"+44 20 7946 0000\",Bob\n",
            "vip.csv",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.contains("37120000000"));
        assert!(list.contains("sip:+442079460000@x"));
        assert!(!list.contains("anonymous"));
    }

    #[test]
    fn bad_row_names_file_and_line() {
        let err = NumberList::parse("+3712\nhello\n", "vip.csv").unwrap_err();
        assert_eq!(err.to_string(), "vip.csv:2: `hello` is not a phone number");
    }
}
