//! Opening-hours schedules: weekly hours in a time zone, with holidays and
//! special days, compiled once so that `open:` conditions are cheap lookups.
//!
//! The schedule never reads the clock; callers pass the instant, which keeps
//! call flows replayable in tests and transcripts.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::flow::model::ScheduleDef;

/// Minutes in a day; span ends above this spill into the next day.
const DAY: u16 = 24 * 60;

/// One problem in a schedule definition.
///
/// `path` is relative to the schedule ('.'-joined: `timezone`,
/// `open.mon-fri`, `closed_dates.0`, `special_dates.2026-12-24`) so the
/// loader can prefix it and look up the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ScheduleError {
    /// Where the problem is, relative to the schedule.
    pub path: String,
    /// A plain sentence saying what is wrong and what would be right.
    pub message: String,
}

impl ScheduleError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Opening minutes of one day, `start..end`. `end` may exceed [`DAY`]: the
/// part past midnight belongs to the day it starts on, so that a holiday or
/// special date on that day also decides its spill-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u16,
    end: u16,
}

/// A compiled schedule, ready to answer "is it open now?".
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: Tz,
    /// Hours by weekday, Monday first; an empty list means closed.
    weekly: [Vec<Span>; 7],
    /// Sorted, without duplicates, for binary search.
    closed: Vec<NaiveDate>,
    /// Sorted by date, for binary search.
    special: Vec<(NaiveDate, Vec<Span>)>,
}

impl Schedule {
    /// Compiles a definition; returns ALL problems found, not just the first,
    /// so an admin can fix a schedule in one round.
    pub fn compile(def: &ScheduleDef) -> Result<Schedule, Vec<ScheduleError>> {
        let mut errors = Vec::new();

        let tz = parse_timezone(&def.timezone)
            .map_err(|m| errors.push(ScheduleError::new("timezone", m)))
            .ok();

        let mut weekly: [Vec<Span>; 7] = Default::default();
        // Which key gave each weekday its hours, to name both on a duplicate.
        let mut owner: [Option<&str>; 7] = [None; 7];
        for (key, hours) in &def.open {
            let path = format!("open.{key}");
            let days = parse_day_spec(key).map_err(|m| errors.push(ScheduleError::new(&path, m)));
            let spans = parse_hours(hours)
                .map_err(|ms| errors.extend(ms.into_iter().map(|m| ScheduleError::new(&path, m))));
            let Ok(days) = days else { continue };
            for day in days {
                let i = day.num_days_from_monday() as usize;
                if let Some(first) = owner[i] {
                    errors.push(ScheduleError::new(
                        &path,
                        format!(
                            "`{}` has hours under both `{first}` and `{key}`; give each day its hours only once",
                            short_name(day)
                        ),
                    ));
                    continue;
                }
                owner[i] = Some(key);
                if let Ok(spans) = &spans {
                    weekly[i] = spans.clone();
                }
            }
        }

        let mut closed = Vec::new();
        for (index, text) in def.closed_dates.iter().enumerate() {
            match parse_date(text) {
                Ok(date) => closed.push(date),
                Err(m) => errors.push(ScheduleError::new(format!("closed_dates.{index}"), m)),
            }
        }
        closed.sort_unstable();
        closed.dedup();

        let mut special: Vec<(NaiveDate, Vec<Span>)> = Vec::new();
        for (key, hours) in &def.special_dates {
            let path = format!("special_dates.{key}");
            let date = parse_date(key).map_err(|m| errors.push(ScheduleError::new(&path, m)));
            let spans = parse_hours(hours)
                .map_err(|ms| errors.extend(ms.into_iter().map(|m| ScheduleError::new(&path, m))));
            let Ok(date) = date else { continue };
            if closed.binary_search(&date).is_ok() {
                errors.push(ScheduleError::new(
                    &path,
                    format!("`{date}` is also in closed_dates; a date is either closed or has special hours, not both"),
                ));
            } else if special.iter().any(|(d, _)| *d == date) {
                // Distinct keys can still name one date, e.g. with stray spaces.
                errors.push(ScheduleError::new(
                    &path,
                    format!("`{date}` has special hours twice; give it hours only once"),
                ));
            } else if let Ok(spans) = spans {
                special.push((date, spans));
            }
        }
        special.sort_unstable_by_key(|(d, _)| *d);

        match tz {
            Some(tz) if errors.is_empty() => Ok(Schedule {
                tz,
                weekly,
                closed,
                special,
            }),
            _ => Err(errors),
        }
    }

    /// Whether the schedule is open at the given instant.
    ///
    /// A closed date is closed for the whole local date, even against a
    /// past-midnight range begun the day before; otherwise the date's own
    /// hours (special or weekly) and the previous day's spill both count.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz);
        let date = local.date_naive();
        // Local wall-clock minute: on DST days the skipped hour never occurs
        // and the repeated hour is open (or closed) both times, as admins expect.
        let minute = (local.hour() * 60 + local.minute()) as u16;
        if self.is_closed_date(date) {
            return false;
        }
        if self
            .hours_on(date)
            .iter()
            .any(|s| s.start <= minute && minute < s.end)
        {
            return true;
        }
        date.pred_opt().is_some_and(|prev| {
            self.hours_on(prev)
                .iter()
                .any(|s| s.end > DAY && minute < s.end - DAY)
        })
    }

    /// The first instant in `start..=end` when the schedule is open:
    /// `start` itself if open, else the first open whole minute after it.
    ///
    /// Computed from the schedule, not by trying minutes: a closed spell
    /// can only end where a span starts or at a local midnight (a closed
    /// date ending), so those instants, a few per day, are the only ones
    /// to look at, and a year ahead costs a few hundred checks.
    pub fn next_open_between(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if start > end {
            return None;
        }
        if self.is_open(start) {
            return Some(start);
        }
        let minute = chrono::TimeDelta::minutes(1);
        let first = chrono::DurationRound::duration_trunc(start, minute).ok()? + minute;
        let mut date = start.with_timezone(&self.tz).date_naive();
        let last = end.with_timezone(&self.tz).date_naive();
        while date <= last {
            let openings = std::iter::once(0)
                .chain(self.hours_on(date).iter().map(|s| s.start))
                .filter(|m| *m < DAY);
            let found = openings
                .filter_map(|m| self.first_instant_from(date, m))
                .filter(|at| *at >= first && *at <= end && self.is_open(*at))
                .min();
            if found.is_some() {
                return found;
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// The first instant whose local time is `date` at `minute` or later:
    /// a time skipped by a DST change opens at the first one that exists.
    fn first_instant_from(&self, date: NaiveDate, minute: u16) -> Option<DateTime<Utc>> {
        use chrono::{LocalResult, TimeZone};
        let naive = date.and_hms_opt(u32::from(minute / 60), u32::from(minute % 60), 0)?;
        // No zone skips more than a few hours.
        (0..=240).find_map(|k| {
            match self
                .tz
                .from_local_datetime(&(naive + chrono::TimeDelta::minutes(k)))
            {
                LocalResult::Single(t) => Some(t.to_utc()),
                LocalResult::Ambiguous(earlier, _) => Some(earlier.to_utc()),
                LocalResult::None => None,
            }
        })
    }

    /// The time zone (for transcripts).
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    fn is_closed_date(&self, date: NaiveDate) -> bool {
        self.closed.binary_search(&date).is_ok()
    }

    /// The spans that start on `date`; none on a closed date, so its
    /// would-be spill into the next day disappears with it.
    fn hours_on(&self, date: NaiveDate) -> &[Span] {
        if self.is_closed_date(date) {
            return &[];
        }
        match self.special.binary_search_by_key(&date, |(d, _)| *d) {
            Ok(i) => &self.special[i].1,
            Err(_) => &self.weekly[date.weekday().num_days_from_monday() as usize],
        }
    }
}

fn parse_timezone(text: &str) -> Result<Tz, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err(
            "the time zone is empty; write an IANA time zone name (e.g. Europe/Riga)".into(),
        );
    }
    name.parse::<Tz>()
        .map_err(|_| format!("`{name}` is not an IANA time zone name (e.g. Europe/Riga)"))
}

fn parse_date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| format!("`{text}` is not a date; write YYYY-MM-DD"))
}

const DAYS: [(Weekday, &str, &str); 7] = [
    (Weekday::Mon, "mon", "monday"),
    (Weekday::Tue, "tue", "tuesday"),
    (Weekday::Wed, "wed", "wednesday"),
    (Weekday::Thu, "thu", "thursday"),
    (Weekday::Fri, "fri", "friday"),
    (Weekday::Sat, "sat", "saturday"),
    (Weekday::Sun, "sun", "sunday"),
];

fn short_name(day: Weekday) -> &'static str {
    DAYS[day.num_days_from_monday() as usize].1
}

fn not_a_day(text: &str) -> String {
    format!("`{text}` is not a day; use mon, tue, wed, thu, fri, sat, sun or a range like mon-fri")
}

fn parse_day(text: &str) -> Result<Weekday, String> {
    let lower = text.trim().to_ascii_lowercase();
    DAYS.iter()
        .find(|(_, short, long)| lower == *short || lower == *long)
        .map(|(day, _, _)| *day)
        .ok_or_else(|| not_a_day(text.trim()))
}

/// Reads `mon`, `mon-fri`, `fri-mon` (wrapping) or comma lists of these.
fn parse_day_spec(key: &str) -> Result<Vec<Weekday>, String> {
    let mut days = Vec::new();
    for element in key.split(',') {
        let element = element.trim();
        if element.is_empty() {
            return Err(format!(
                "a day is missing in `{key}`; use mon, tue, wed, thu, fri, sat, sun or a range like mon-fri"
            ));
        }
        let element_days = match element.split_once('-') {
            None => vec![parse_day(element)?],
            Some((from, to)) => {
                if from.trim().is_empty() || to.trim().is_empty() {
                    return Err(format!(
                        "`{element}` is not a range of days; write two days like mon-fri"
                    ));
                }
                let (from, to) = (parse_day(from)?, parse_day(to)?);
                let mut range = vec![from];
                let mut day = from;
                while day != to {
                    day = day.succ();
                    range.push(day);
                }
                range
            }
        };
        for day in element_days {
            if days.contains(&day) {
                return Err(format!(
                    "`{}` appears twice in `{key}`; name each day once",
                    short_name(day)
                ));
            }
            days.push(day);
        }
    }
    Ok(days)
}

/// Reads `closed` or `HH:MM-HH:MM[, ...]`; returns every bad range at once.
fn parse_hours(text: &str) -> Result<Vec<Span>, Vec<String>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("closed") {
        return Ok(Vec::new());
    }
    if text.is_empty() {
        return Err(vec![
            "the hours are empty; write ranges like 09:00-17:00 or `closed`".into(),
        ]);
    }
    let mut spans = Vec::new();
    let mut errors = Vec::new();
    for range in text.split(',').map(str::trim) {
        match parse_range(range) {
            Ok(span) => spans.push(span),
            Err(mut ms) => errors.append(&mut ms),
        }
    }
    if errors.is_empty() {
        spans.sort_unstable_by_key(|s| s.start);
        Ok(spans)
    } else {
        Err(errors)
    }
}

fn parse_range(range: &str) -> Result<Span, Vec<String>> {
    let Some((from, to)) = range.split_once('-') else {
        let right = "write HH:MM-HH:MM, e.g. 09:00-17:00, or `closed`";
        return Err(vec![format!("`{range}` is not a time range; {right}")]);
    };
    match (parse_time(from.trim()), parse_time(to.trim())) {
        (Ok(DAY), _) => Err(vec![format!(
            "`{range}` starts at 24:00; a range starts from 00:00 to 23:59"
        )]),
        (Ok(start), Ok(end)) if start == end => Err(vec![format!(
            "`{range}` is empty because it ends when it starts; for all day write 00:00-24:00"
        )]),
        // An end before the start runs past midnight into the next day.
        (Ok(start), Ok(end)) if end < start => Ok(Span {
            start,
            end: end + DAY,
        }),
        (Ok(start), Ok(end)) => Ok(Span { start, end }),
        (start, end) => Err(start.err().into_iter().chain(end.err()).collect()),
    }
}

/// Reads `HH:MM` (or `H:MM`) from 00:00 to 24:00 as minutes since midnight.
fn parse_time(text: &str) -> Result<u16, String> {
    let bad = || format!("`{text}` is not a time; write HH:MM from 00:00 to 24:00");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let digits = |s: &str, max_len| {
        !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    match (h, m) {
        (24, 0) => Ok(DAY),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDateTime, TimeZone};

    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn def(tz: &str, open: Pairs, closed: &[&str], special: Pairs) -> ScheduleDef {
        let map = |p: Pairs| p.iter().map(|&(k, v)| (k.into(), v.into())).collect();
        ScheduleDef {
            timezone: tz.into(),
            open: map(open),
            closed_dates: closed.iter().map(|&d| d.into()).collect(),
            special_dates: map(special),
        }
    }

    fn sched(tz: &str, open: Pairs, closed: &[&str], special: Pairs) -> Schedule {
        Schedule::compile(&def(tz, open, closed, special)).unwrap()
    }

    fn riga(open: Pairs) -> Schedule {
        sched("Europe/Riga", open, &[], &[])
    }

    /// Open at "YYYY-MM-DD HH:MM" UTC?
    fn at_utc(s: &Schedule, text: &str) -> bool {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap();
        s.is_open(naive.and_utc())
    }

    /// Open at "YYYY-MM-DD HH:MM" local time in the schedule's zone (unambiguous)?
    fn at(s: &Schedule, text: &str) -> bool {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap();
        let local = s.timezone().from_local_datetime(&naive).single().unwrap();
        s.is_open(local.to_utc())
    }

    fn errors(tz: &str, open: Pairs, closed: &[&str], special: Pairs) -> Vec<String> {
        let errors = Schedule::compile(&def(tz, open, closed, special)).unwrap_err();
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn open_inside_weekday_hours_and_closed_outside() {
        let s = riga(&[("mon-fri", "09:00-17:00"), ("sat,sun", "closed")]);
        assert_eq!(s.timezone(), chrono_tz::Europe::Riga);
        // 2026-06-10 is a Wednesday, the 13th a Saturday.
        assert!(at(&s, "2026-06-10 09:00"));
        assert!(at(&s, "2026-06-10 16:59"));
        assert!(!at(&s, "2026-06-10 08:59"));
        assert!(!at(&s, "2026-06-10 17:00"));
        assert!(!at(&s, "2026-06-13 12:00"));
    }

    #[test]
    fn same_instant_is_open_in_one_zone_and_closed_in_another() {
        let hours = [("mon-fri", "09:00-17:00")];
        // 10:00 UTC is 13:00 in Riga and 06:00 in New York.
        assert!(at_utc(&riga(&hours), "2026-06-10 10:00"));
        let new_york = sched("America/New_York", &hours, &[], &[]);
        assert!(!at_utc(&new_york, "2026-06-10 10:00"));
    }

    #[test]
    fn riga_spring_forward_day_uses_the_new_offset() {
        // 2026-03-29, last Sunday of March: 03:00 EET becomes 04:00 EEST at 01:00 UTC.
        let s = riga(&[("sun", "04:00-05:00")]);
        assert!(!at_utc(&s, "2026-03-29 00:59"));
        assert!(at_utc(&s, "2026-03-29 01:00"));
        assert!(at_utc(&s, "2026-03-29 01:59"));
        assert!(!at_utc(&s, "2026-03-29 02:00"));
    }

    #[test]
    fn riga_fall_back_day_is_open_in_both_repeated_hours() {
        // 2026-10-25, last Sunday of October: 04:00 EEST becomes 03:00 EET at
        // 01:00 UTC, so local 03:30 happens at 00:30 and at 01:30 UTC.
        let s = riga(&[("sun", "03:00-04:00")]);
        assert!(!at_utc(&s, "2026-10-24 23:59"));
        assert!(at_utc(&s, "2026-10-25 00:30"));
        assert!(at_utc(&s, "2026-10-25 01:30"));
        assert!(!at_utc(&s, "2026-10-25 02:00"));
    }

    #[test]
    fn holiday_in_closed_dates_is_closed_during_normal_hours() {
        let holidays = ["2026-06-24", "2026-06-23"];
        let s = sched("Europe/Riga", &[("mon-fri", "09:00-17:00")], &holidays, &[]);
        assert!(at(&s, "2026-06-22 12:00"));
        assert!(!at(&s, "2026-06-23 12:00"));
        assert!(!at(&s, "2026-06-24 12:00"));
        assert!(at(&s, "2026-06-25 12:00"));
    }

    #[test]
    fn special_date_with_shorter_hours_replaces_weekly_hours() {
        let special = [("2026-12-24", "09:00-12:00")];
        let s = sched("Europe/Riga", &[("mon-fri", "09:00-17:00")], &[], &special);
        assert!(at(&s, "2026-12-23 16:00"));
        assert!(at(&s, "2026-12-24 11:59"));
        assert!(!at(&s, "2026-12-24 12:00"));
    }

    #[test]
    fn past_midnight_range_is_open_at_one_and_closed_at_three_next_day() {
        // 2026-06-12 is a Friday; nothing spills into it from Thursday.
        let s = riga(&[("fri", "22:00-02:00")]);
        assert!(!at(&s, "2026-06-12 01:00"));
        assert!(!at(&s, "2026-06-12 21:59"));
        assert!(at(&s, "2026-06-12 23:00"));
        assert!(at(&s, "2026-06-13 01:00"));
        assert!(!at(&s, "2026-06-13 02:00"));
        assert!(!at(&s, "2026-06-13 03:00"));
    }

    #[test]
    fn closed_date_cuts_off_spill_and_special_date_brings_its_own() {
        let closed = ["2026-06-13", "2026-06-19"];
        let special = [("2026-06-26", "20:00-01:00")];
        let s = sched("Europe/Riga", &[("fri", "22:00-02:00")], &closed, &special);
        // Closed Saturday 13th: Friday ends at midnight. Closed Friday 19th: no spill.
        assert!(at(&s, "2026-06-12 23:00"));
        assert!(!at(&s, "2026-06-13 01:00"));
        assert!(!at(&s, "2026-06-20 01:00"));
        assert!(at(&s, "2026-06-26 20:00"));
        assert!(at(&s, "2026-06-27 00:30"));
        assert!(!at(&s, "2026-06-27 01:30"));
    }

    #[test]
    fn wrap_around_day_range_fri_mon_covers_the_weekend() {
        let s = riga(&[("Fri-MONDAY", "10:00-12:00"), ("wed", "00:00-24:00")]);
        // Friday 12th to Monday 15th are open; Tuesday and Thursday are not.
        for day in ["12", "13", "14", "15"] {
            assert!(at(&s, &format!("2026-06-{day} 11:00")), "{day}");
        }
        assert!(!at(&s, "2026-06-16 11:00"));
        assert!(at(&s, "2026-06-17 00:00"));
        assert!(at(&s, "2026-06-17 23:59"));
        assert!(!at(&s, "2026-06-18 00:00"));
    }

    #[test]
    fn every_kind_of_error_is_reported_together_with_paths() {
        let open = [
            ("mon-fri", "09:00-17:00"),
            ("moon", "09:00"),
            ("sat", "09:00-25:00"),
            ("wed", "closed"),
        ];
        let closed = ["2026-01-01", "2026-13-01"];
        let special = [("2026-02-30", "09:00-12:00"), ("2026-12-24", "9-12")];
        let got = errors("Europe/Rigaa", &open, &closed, &special);
        let not_time = "is not a time; write HH:MM from 00:00 to 24:00";
        let not_day = "is not a day; use mon, tue, wed, thu, fri, sat, sun or a range like mon-fri";
        let want = [
            "timezone: `Europe/Rigaa` is not an IANA time zone name (e.g. Europe/Riga)".into(),
            format!("open.moon: `moon` {not_day}"),
            "open.moon: `09:00` is not a time range; write HH:MM-HH:MM, e.g. 09:00-17:00, or `closed`".into(),
            format!("open.sat: `25:00` {not_time}"),
            "open.wed: `wed` has hours under both `mon-fri` and `wed`; give each day its hours only once".into(),
            "closed_dates.1: `2026-13-01` is not a date; write YYYY-MM-DD".into(),
            "special_dates.2026-02-30: `2026-02-30` is not a date; write YYYY-MM-DD".into(),
            format!("special_dates.2026-12-24: `9` {not_time}"),
            format!("special_dates.2026-12-24: `12` {not_time}"),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn malformed_ranges_and_day_keys_are_explained() {
        let open = [
            ("mon", "09:00-09:00"),
            ("tue", "24:00-02:00"),
            ("thu", " "),
            ("fri", "9:60-10:00"),
            ("sat-", "closed"),
            ("sun,sun", "closed"),
        ];
        let special = [("2026-12-24", "09:00-12:00")];
        let got = errors("Europe/Riga", &open, &["2026-12-24"], &special);
        let expected = [
            "open.mon: `09:00-09:00` is empty because it ends when it starts",
            "open.tue: `24:00-02:00` starts at 24:00",
            "open.thu: the hours are empty",
            "open.fri: `9:60` is not a time",
            "open.sat-: `sat-` is not a range of days",
            "open.sun,sun: `sun` appears twice in `sun,sun`",
            "special_dates.2026-12-24: `2026-12-24` is also in closed_dates",
        ];
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for (message, start) in got.iter().zip(expected) {
            assert!(message.starts_with(start), "{message}");
        }
    }

    /// The old minute-by-minute search, as the oracle for the computed one.
    fn next_open_by_minutes(
        s: &Schedule,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if start > end {
            return None;
        }
        if s.is_open(start) {
            return Some(start);
        }
        let minute = chrono::TimeDelta::minutes(1);
        let mut at = chrono::DurationRound::duration_trunc(start, minute).ok()? + minute;
        while at <= end {
            if s.is_open(at) {
                return Some(at);
            }
            at += minute;
        }
        None
    }

    #[test]
    fn the_next_opening_is_the_one_a_minute_scan_finds() {
        let schedules = [
            riga(&[("mon-fri", "09:00-17:00"), ("sat,sun", "closed")]),
            sched(
                "Europe/Riga",
                &[
                    ("mon-fri", "02:30-03:30, 22:00-02:00"),
                    ("sat", "03:15-03:45"),
                ],
                &["2026-12-25", "2027-03-29"],
                &[("2026-12-24", "10:00-12:00"), ("2027-03-28", "03:00-04:00")],
            ),
            sched(
                "America/New_York",
                &[("mon-sun", "01:30-02:30")],
                &["2026-11-02"],
                &[],
            ),
            sched("Asia/Kolkata", &[("wed", "00:00-00:01")], &[], &[]),
            sched("UTC", &[("mon", "closed")], &[], &[]),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let base = NaiveDateTime::parse_from_str("2026-10-20 00:00", "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc();
        for s in &schedules {
            for _ in 0..150 {
                let start = base + chrono::TimeDelta::seconds(rng.i64(0..200 * 86400));
                let end = start + chrono::TimeDelta::minutes(rng.i64(0..20 * 1440));
                assert_eq!(
                    s.next_open_between(start, end),
                    next_open_by_minutes(s, start, end),
                    "{start} .. {end} in {}",
                    s.timezone()
                );
            }
        }
    }
}
