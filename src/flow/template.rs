//! `${name}` templates in variable values, contexts and transfer URIs.

use std::fmt;

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as written.
    Literal(String),
    /// The value of a variable (empty when unset).
    Var(String),
}

/// A parsed template: literal text and `${var}` references.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${` without a closing `}`.
    #[error("`${{` is not closed with `}}` in `{0}`")]
    Unclosed(String),
    /// `${}` or a name with characters other than letters, digits, `_`.
    #[error("`{0}` is not a variable name; use letters, digits and _")]
    BadName(String),
}

/// Whether `name` may name a variable.
pub fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses `text`; `$` not followed by `{` is literal.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            if i > 0 {
                parts.push(Part::Literal(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(text.to_string()))?;
            let name = after[..end].trim();
            if !is_var_name(name) {
                return Err(TemplateError::BadName(name.to_string()));
            }
            parts.push(Part::Var(name.to_string()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The variables it reads.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// True when it has no variables (so it can be used as is).
    pub fn is_literal(&self) -> bool {
        self.vars().next().is_none()
    }

    /// Fills in the variables with `lookup`, appending to `out`.
    pub fn render_into<'a>(&self, out: &mut String, lookup: impl Fn(&str) -> Option<&'a str>) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(v) => out.push_str(lookup(v).unwrap_or("")),
            }
        }
    }

    /// Fills in the variables with `lookup`.
    pub fn render<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
        let mut out = String::new();
        self.render_into(&mut out, lookup);
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(s) => f.write_str(s)?,
                Part::Var(v) => write!(f, "${{{v}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_variables_and_keeps_lone_dollars() {
        let t = Template::parse("acct ${account}, $5 ${ missing }").unwrap();
        let out = t.render(|v| (v == "account").then_some("123"));
        assert_eq!(out, "acct 123, $5 ");
        assert_eq!(t.vars().collect::<Vec<_>>(), ["account", "missing"]);
    }

    #[test]
    fn refuses_unclosed_and_bad_names() {
        assert!(matches!(
            Template::parse("${a"),
            Err(TemplateError::Unclosed(_))
        ));
        assert!(matches!(
            Template::parse("${a-b}"),
            Err(TemplateError::BadName(_))
        ));
        assert!(matches!(
            Template::parse("${}"),
            Err(TemplateError::BadName(_))
        ));
    }
}
