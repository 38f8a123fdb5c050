//! Durations as admins write them: `5s`, `1m30s`, `500ms`, `2h`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written with units (`5s`, `1m30s`, `250ms`). Bare numbers are
/// refused: `5` could mean seconds or milliseconds, and a wrong guess is a
/// call that hangs up too early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowDuration(pub Duration);

/// Why a duration could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// Nothing was written.
    #[error("a duration is empty; write it with a unit, e.g. 5s or 1m30s")]
    Empty,
    /// A number without a unit, or an unknown unit.
    #[error("`{0}` is not a duration; write a number with a unit (ms, s, m, h), e.g. 5s or 1m30s")]
    Invalid(String),
    /// Too large to be meaningful in a call.
    #[error("`{0}` is too long; durations must be under 24h")]
    TooLong(String),
}

impl FlowDuration {
    /// Reads `1m30s`-style text.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let s = text.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let invalid = || DurationError::Invalid(text.to_string());
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total_ms: u64 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(invalid());
            }
            let number: u64 = s[start..i].parse().map_err(|_| invalid())?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let factor = match &s[unit_start..i] {
                "ms" => 1,
                "s" => 1_000,
                "m" | "min" => 60_000,
                "h" => 3_600_000,
                _ => return Err(invalid()),
            };
            total_ms = number
                .checked_mul(factor)
                .and_then(|v| total_ms.checked_add(v))
                .ok_or_else(|| DurationError::TooLong(text.to_string()))?;
        }
        if total_ms >= 86_400_000 {
            return Err(DurationError::TooLong(text.to_string()));
        }
        Ok(Self(Duration::from_millis(total_ms)))
    }
}

impl fmt::Display for FlowDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 {
            write!(f, "{ms}ms")
        } else if ms % 60_000 != 0 || ms == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{}m", ms / 60_000)
        }
    }
}

impl<'de> Deserialize<'de> for FlowDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FlowDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, e.g. 5s or 1m30s")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FlowDuration, E> {
                FlowDuration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FlowDuration, E> {
                Err(E::custom(DurationError::Invalid(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FlowDuration, E> {
                Err(E::custom(DurationError::Invalid(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<FlowDuration, E> {
                Err(E::custom(DurationError::Invalid(v.to_string())))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl Serialize for FlowDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for FlowDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|min|h))+$",
            "description": "A duration with units, e.g. 5s, 1m30s, 500ms"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_compound_durations() {
        assert_eq!(
            FlowDuration::parse("1m30s").unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            FlowDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            FlowDuration::parse("2h").unwrap().0,
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn refuses_bare_numbers_and_unknown_units() {
        assert!(matches!(
            FlowDuration::parse("5"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            FlowDuration::parse("5 sec"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            FlowDuration::parse("s"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            FlowDuration::parse("25h"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(FlowDuration::parse("90s").unwrap().to_string(), "90s");
        assert_eq!(FlowDuration::parse("2m").unwrap().to_string(), "2m");
        assert_eq!(FlowDuration::parse("1500ms").unwrap().to_string(), "1500ms");
    }
}
