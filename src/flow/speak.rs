//! Numbers and waits said with recorded prompt pieces.
//!
//! Prompts are recordings, not speech synthesis at call time, so a number is
//! said by chaining short recordings (`num-40`, `num-5`). This module only
//! chooses the names; the compiler checks that each one has a file and the
//! interpreter turns them into prompt ids. Being pure, every rounding and
//! wording rule is tested here, without a flow or a clock.
//!
//! The wait sentence (a callback's `say_wait`) is one of:
//!
//! | estimated wait          | pieces                                    | heard                                   |
//! |-------------------------|-------------------------------------------|-----------------------------------------|
//! | under 60 s              | `wait-under-a-minute`                     | "The current wait is less than a minute." |
//! | 60 s ..= 60 min         | `wait-is-about`, number, `minute(s)`      | "The current wait is about six minutes." |
//! | over 60 min             | `wait-over-an-hour`                       | "The current wait is more than an hour." |
//!
//! Minutes are rounded up, so a caller is never promised less than the
//! estimate. Past an hour an exact figure is no longer useful to a caller
//! deciding whether to wait, and estimates that far out are the least
//! reliable; "more than an hour" is both honest and shorter.

/// "The current wait is about", before a number of minutes.
pub const WAIT_IS_ABOUT: &str = "wait-is-about";
/// "The current wait is less than a minute." (a whole sentence).
pub const WAIT_UNDER_A_MINUTE: &str = "wait-under-a-minute";
/// "The current wait is more than an hour." (a whole sentence).
pub const WAIT_OVER_AN_HOUR: &str = "wait-over-an-hour";
/// "minute", after "one".
pub const MINUTE: &str = "minute";
/// "minutes", after any other number.
pub const MINUTES: &str = "minutes";

/// The longest wait said in minutes; longer is "more than an hour".
pub const MAX_WAIT_MINUTES: u32 = 60;

/// `num-1` ..= `num-19`: English has its own word for each.
const ONES: [&str; 19] = [
    "num-1", "num-2", "num-3", "num-4", "num-5", "num-6", "num-7", "num-8", "num-9", "num-10",
    "num-11", "num-12", "num-13", "num-14", "num-15", "num-16", "num-17", "num-18", "num-19",
];

/// `num-20`, `num-30` ..= `num-90`, indexed by tens minus 2.
const TENS: [&str; 8] = [
    "num-20", "num-30", "num-40", "num-50", "num-60", "num-70", "num-80", "num-90",
];

/// The pieces that say `n` (1 ..= 99), e.g. 45 -> `num-40`, `num-5`; `None`
/// outside that range, where the recordings run out.
pub fn number(n: u32) -> Option<Vec<&'static str>> {
    match n {
        1..=19 => Some(vec![ONES[n as usize - 1]]),
        20..=99 => {
            let mut pieces = vec![TENS[(n / 10) as usize - 2]];
            if n % 10 != 0 {
                pieces.push(ONES[(n % 10) as usize - 1]);
            }
            Some(pieces)
        }
        _ => None,
    }
}

/// Reads a wait in seconds as the server writes it (`"340"`; a decimal such
/// as `"340.5"` is accepted too). `None` for anything that is not a finite,
/// non-negative number, so that a bad value is skipped rather than said.
pub fn parse_seconds(text: &str) -> Option<f64> {
    let seconds: f64 = text.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then_some(seconds)
}

/// The pieces of the wait sentence for `seconds` (see the module docs).
pub fn wait_sentence(seconds: f64) -> Vec<&'static str> {
    if seconds < 60.0 {
        return vec![WAIT_UNDER_A_MINUTE];
    }
    let minutes = (seconds / 60.0).ceil();
    if minutes > f64::from(MAX_WAIT_MINUTES) {
        return vec![WAIT_OVER_AN_HOUR];
    }
    // 1 ..= MAX_WAIT_MINUTES here, which `number` always covers.
    let minutes = minutes as u32;
    let mut pieces = vec![WAIT_IS_ABOUT];
    pieces.extend(number(minutes).unwrap_or_default());
    pieces.push(if minutes == 1 { MINUTE } else { MINUTES });
    pieces
}

/// The wait sentence for a variable's value, or `None` when the value is
/// not a usable number (the offer then goes without it).
pub fn wait_sentence_for(value: &str) -> Option<Vec<&'static str>> {
    parse_seconds(value).map(wait_sentence)
}

/// Every piece [`wait_sentence`] can name, each once: what a flow that says
/// the wait must have files for. Derived from the sentence itself, so the
/// load check cannot drift from what calls play.
pub fn wait_pieces() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = Vec::new();
    let samples = (0..=MAX_WAIT_MINUTES + 1).map(|m| f64::from(m) * 60.0);
    for piece in samples.flat_map(wait_sentence) {
        if !all.contains(&piece) {
            all.push(piece);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(value: &str) -> Option<String> {
        wait_sentence_for(value).map(|p| p.join(" "))
    }

    #[test]
    fn numbers_use_teens_and_tens() {
        assert_eq!(number(1), Some(vec!["num-1"]));
        assert_eq!(number(19), Some(vec!["num-19"]));
        assert_eq!(number(20), Some(vec!["num-20"]));
        assert_eq!(number(21), Some(vec!["num-20", "num-1"]));
        assert_eq!(number(45), Some(vec!["num-40", "num-5"]));
        assert_eq!(number(99), Some(vec!["num-90", "num-9"]));
        assert_eq!(number(0), None);
        assert_eq!(number(100), None);
    }

    #[test]
    fn under_a_minute_is_said_as_such() {
        assert_eq!(said("0").as_deref(), Some("wait-under-a-minute"));
        assert_eq!(said("59").as_deref(), Some("wait-under-a-minute"));
        assert_eq!(said("59.9").as_deref(), Some("wait-under-a-minute"));
    }

    #[test]
    fn one_minute_is_singular() {
        assert_eq!(said("60").as_deref(), Some("wait-is-about num-1 minute"));
    }

    #[test]
    fn minutes_are_rounded_up() {
        assert_eq!(said("61").as_deref(), Some("wait-is-about num-2 minutes"));
        assert_eq!(said("119").as_deref(), Some("wait-is-about num-2 minutes"));
        assert_eq!(said("340").as_deref(), Some("wait-is-about num-6 minutes"));
        assert_eq!(said("360").as_deref(), Some("wait-is-about num-6 minutes"));
    }

    #[test]
    fn tens_and_compound_minutes() {
        assert_eq!(
            said("1200").as_deref(),
            Some("wait-is-about num-20 minutes")
        );
        assert_eq!(
            said("1260").as_deref(),
            Some("wait-is-about num-20 num-1 minutes")
        );
        assert_eq!(
            said("2700").as_deref(),
            Some("wait-is-about num-40 num-5 minutes")
        );
        assert_eq!(
            said("3600").as_deref(),
            Some("wait-is-about num-60 minutes")
        );
    }

    #[test]
    fn past_an_hour_is_more_than_an_hour() {
        assert_eq!(said("3601").as_deref(), Some("wait-over-an-hour"));
        assert_eq!(said("5940").as_deref(), Some("wait-over-an-hour"));
        assert_eq!(said("1e300").as_deref(), Some("wait-over-an-hour"));
        assert_eq!(
            said("18446744073709551616").as_deref(),
            Some("wait-over-an-hour")
        );
    }

    #[test]
    fn values_that_are_not_a_wait_are_skipped() {
        for bad in ["", " ", "abc", "6 min", "-1", "NaN", "inf", "-inf", "0x10"] {
            assert_eq!(said(bad), None, "{bad:?}");
        }
        assert_eq!(
            said(" 340 ").as_deref(),
            Some("wait-is-about num-6 minutes")
        );
        assert_eq!(
            said("340.5").as_deref(),
            Some("wait-is-about num-6 minutes")
        );
    }

    #[test]
    fn every_piece_a_sentence_can_name_is_listed_once() {
        let all = wait_pieces();
        for s in 0..4000 {
            for piece in wait_sentence(f64::from(s)) {
                assert!(all.contains(&piece), "{piece} is missing");
            }
        }
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
        assert!(all.contains(&"num-60"));
        assert!(!all.contains(&"num-70"), "never said: over an hour");
    }
}
