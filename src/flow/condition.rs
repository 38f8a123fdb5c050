//! `switch` conditions, resolved and evaluated.

use std::fmt;

use chrono::{DateTime, Utc};

use super::graph::Flow;

/// A test on a variable's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// Equal text.
    Equals(String),
    /// Different text.
    NotEquals(String),
    /// Starts with the text.
    StartsWith(String),
    /// A number greater than.
    Gt(f64),
    /// A number greater than or equal to.
    Ge(f64),
    /// A number less than.
    Lt(f64),
    /// A number less than or equal to.
    Le(f64),
    /// A phone number in a list of the flow (by index).
    InList(u32, String),
}

/// A resolved condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A schedule of the flow (by index, name kept for display) is open.
    Open(u32, String),
    /// A variable passes a test.
    Var(String, Test),
    /// Negation.
    Not(Box<Condition>),
    /// Conjunction.
    All(Vec<Condition>),
    /// Disjunction.
    Any(Vec<Condition>),
}

/// What a condition may look at.
pub struct Env<'a> {
    /// The flow whose schedules and lists are meant.
    pub flow: &'a Flow,
    /// The wall-clock time of the call now.
    pub now: DateTime<Utc>,
    /// Variable lookup (built-ins included).
    pub lookup: &'a dyn Fn(&str) -> Option<&'a str>,
}

impl Condition {
    /// Evaluates the condition; a missing variable is empty text, and a
    /// non-number fails every numeric comparison.
    pub fn eval(&self, env: &Env<'_>) -> bool {
        match self {
            Condition::Open(i, _) => env.flow.schedules[*i as usize].1.is_open(env.now),
            Condition::Var(name, test) => {
                let value = (env.lookup)(name).unwrap_or("");
                let number = || value.trim().parse::<f64>().ok();
                match test {
                    Test::Equals(s) => value == s,
                    Test::NotEquals(s) => value != s,
                    Test::StartsWith(s) => value.starts_with(s.as_str()),
                    Test::Gt(n) => number().is_some_and(|v| v > *n),
                    Test::Ge(n) => number().is_some_and(|v| v >= *n),
                    Test::Lt(n) => number().is_some_and(|v| v < *n),
                    Test::Le(n) => number().is_some_and(|v| v <= *n),
                    Test::InList(i, _) => env.flow.lists[*i as usize].1.contains(value),
                }
            }
            Condition::Not(c) => !c.eval(env),
            Condition::All(cs) => cs.iter().all(|c| c.eval(env)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(env)),
        }
    }
}

fn join(f: &mut fmt::Formatter<'_>, cs: &[Condition], sep: &str) -> fmt::Result {
    f.write_str("(")?;
    for (i, c) in cs.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{c}")?;
    }
    f.write_str(")")
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Open(_, name) => write!(f, "open({name})"),
            Condition::Var(v, t) => match t {
                Test::Equals(s) => write!(f, "{v} = \"{s}\""),
                Test::NotEquals(s) => write!(f, "{v} != \"{s}\""),
                Test::StartsWith(s) => write!(f, "{v} starts with \"{s}\""),
                Test::Gt(n) => write!(f, "{v} > {n}"),
                Test::Ge(n) => write!(f, "{v} >= {n}"),
                Test::Lt(n) => write!(f, "{v} < {n}"),
                Test::Le(n) => write!(f, "{v} <= {n}"),
                Test::InList(_, name) => write!(f, "{v} in {name}"),
            },
            Condition::Not(c) => write!(f, "not {c}"),
            Condition::All(cs) => join(f, cs, " and "),
            Condition::Any(cs) => join(f, cs, " or "),
        }
    }
}
