//! The dialling policy: callers must not be able to make callflow dial
//! anywhere at the company's expense (toll fraud). Every number callflow
//! dials passes it, whatever it came from: the caller's own number (a From
//! header is only a claim), a number typed in, or a caller-filled transfer
//! target. Length and prefixes are checked before anything is stored or
//! sent.

use serde::Deserialize;

/// Which numbers may be dialled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiallingPolicy {
    /// Fewest digits.
    pub min_digits: usize,
    /// Most digits.
    pub max_digits: usize,
    /// If not empty, a number must start with one of these.
    pub allowed_prefixes: Vec<String>,
    /// A number must not start with any of these (international access
    /// codes and premium-rate ranges by default).
    pub forbidden_prefixes: Vec<String>,
}

impl Default for DiallingPolicy {
    fn default() -> Self {
        Self {
            min_digits: 6,
            max_digits: 15,
            allowed_prefixes: Vec::new(),
            forbidden_prefixes: ["00", "900", "0900", "1900", "976"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// The policies a call applies: one for callback numbers, one for the
/// digits a caller puts into a transfer target (extensions are often
/// shorter than phone numbers, so the two may differ).
#[derive(Debug, Clone)]
pub struct Dialling {
    /// For callback numbers: the caller's own or one they typed.
    pub callback: DiallingPolicy,
    /// For caller-filled user parts of transfer URIs.
    pub transfer: DiallingPolicy,
}

impl Default for Dialling {
    fn default() -> Self {
        Dialling::from_callback(DiallingPolicy::default())
    }
}

impl Dialling {
    /// The transfer policy derived from the callback one: the same
    /// prefixes, but any length from one digit (extensions are short).
    pub fn from_callback(callback: DiallingPolicy) -> Self {
        let transfer = DiallingPolicy {
            min_digits: 1,
            ..callback.clone()
        };
        Self { callback, transfer }
    }
}

impl DiallingPolicy {
    /// Whether `number` (digits as typed) may be dialled, and why not.
    pub fn check(&self, number: &str) -> Result<(), String> {
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{number}` is not a number"));
        }
        if number.len() < self.min_digits || number.len() > self.max_digits {
            return Err(format!(
                "{} digits; the policy allows {} to {}",
                number.len(),
                self.min_digits,
                self.max_digits
            ));
        }
        if let Some(p) = self
            .forbidden_prefixes
            .iter()
            .find(|p| number.starts_with(p.as_str()))
        {
            return Err(format!("numbers starting with {p} may not be dialled"));
        }
        if !self.allowed_prefixes.is_empty()
            && !self
                .allowed_prefixes
                .iter()
                .any(|p| number.starts_with(p.as_str()))
        {
            return Err("the number is outside the allowed prefixes".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn international_and_premium_numbers_are_refused_by_default() {
        let p = DiallingPolicy::default();
        assert!(p.check("67000000").is_ok());
        assert!(p.check("0044207946000").unwrap_err().contains("00"));
        assert!(p.check("9001234567").unwrap_err().contains("900"));
        assert!(p.check("12345").is_err(), "too short");
        assert!(p.check("1234567890123456").is_err(), "too long");
        assert!(p.check("12#45678").is_err());
    }

    #[test]
    fn allowed_prefixes_restrict_to_a_region() {
        let p = DiallingPolicy {
            allowed_prefixes: vec!["2".into(), "6".into()],
            ..DiallingPolicy::default()
        };
        assert!(p.check("26000000").is_ok());
        assert!(p.check("36000000").is_err());
    }
}
