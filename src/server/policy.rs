//! The dialling policy for callback numbers a caller types in: callers must
//! not be able to make callflow dial anywhere at the company's expense
//! (toll fraud), so length and prefixes are checked before anything is
//! stored.

use serde::Deserialize;

/// Which typed-in numbers callbacks may dial.
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
