//! `switch` conditions, resolved and evaluated.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::graph::Flow;
use super::speak::parse_seconds;

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
    /// A queue's estimated wait is longer than its `callback_offer_after`.
    /// The threshold is copied in at load, where the queue was checked to
    /// have one, so evaluating never meets a queue without it.
    LongWait {
        /// The queue's name, for display.
        queue: String,
        /// The variable holding the estimated wait in seconds, `wait_QUEUE`.
        var: String,
        /// The queue's `callback_offer_after`.
        after: Duration,
    },
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
    /// non-number fails every numeric comparison. An estimated wait that is
    /// missing or not a number of seconds is not a long wait, so the caller
    /// goes the usual way rather than being held up by a status outage.
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
            Condition::LongWait { var, after, .. } => (env.lookup)(var)
                .and_then(parse_seconds)
                .is_some_and(|wait| wait > after.as_secs_f64()),
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
            Condition::LongWait { queue, .. } => write!(f, "long_wait({queue})"),
            Condition::Not(c) => write!(f, "not {c}"),
            Condition::All(cs) => join(f, cs, " and "),
            Condition::Any(cs) => join(f, cs, " or "),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use chrono::TimeZone;

    use super::*;

    fn empty_flow() -> Flow {
        Flow {
            name: "t".into(),
            file: PathBuf::from("t.yaml"),
            description: None,
            start: 0,
            agent: None,
            vars: Vec::new(),
            nodes: Vec::new(),
            node_index: HashMap::new(),
            queues: Vec::new(),
            schedules: Vec::new(),
            lists: Vec::new(),
        }
    }

    /// `long_wait: general` with `callback_offer_after: 90s`, evaluated
    /// with `wait_general` set to `wait` (or unset).
    fn long_wait(wait: Option<&str>) -> bool {
        let flow = empty_flow();
        let vars: HashMap<&str, &str> = wait.map(|w| ("wait_general", w)).into_iter().collect();
        let lookup = |name: &str| vars.get(name).copied();
        let env = Env {
            flow: &flow,
            now: Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap(),
            lookup: &lookup,
        };
        Condition::LongWait {
            queue: "general".into(),
            var: "wait_general".into(),
            after: Duration::from_secs(90),
        }
        .eval(&env)
    }

    #[test]
    fn long_wait_holds_above_the_queues_threshold() {
        assert!(long_wait(Some("600")));
        assert!(long_wait(Some("90.5")));
        assert!(long_wait(Some(" 91 ")));
    }

    #[test]
    fn long_wait_at_the_threshold_is_not_long() {
        // "Longer than" callback_offer_after, as the queue setting says.
        assert!(!long_wait(Some("90")));
        assert!(!long_wait(Some("90.0")));
    }

    #[test]
    fn long_wait_below_the_threshold_does_not_hold() {
        assert!(!long_wait(Some("30")));
        assert!(!long_wait(Some("0")));
    }

    #[test]
    fn long_wait_without_a_known_wait_does_not_hold() {
        assert!(!long_wait(None));
        assert!(!long_wait(Some("")));
    }

    #[test]
    fn long_wait_with_a_wait_that_is_not_seconds_does_not_hold() {
        for garbage in ["soon", "10m", "inf", "NaN", "-600"] {
            assert!(!long_wait(Some(garbage)), "{garbage}");
        }
    }

    #[test]
    fn long_wait_is_shown_as_written() {
        let c = Condition::LongWait {
            queue: "general".into(),
            var: "wait_general".into(),
            after: Duration::from_secs(90),
        };
        assert_eq!(c.to_string(), "long_wait(general)");
    }
}
