//! Schedule expressions for scheduled jobs: five-field cron (minute hour day month
//! weekday) and the @daily-style shortcuts, matched against local time in the lab's zone.
//!
//! Daylight saving:
//! - a local time the clocks spring over (02:30 on a 02:00→03:00 night) runs at the first
//!   instant after the gap (03:00), as cronie runs it; several skipped times collapse into
//!   that one run;
//! - a local time that happens twice when the clocks fall back runs once, at its first
//!   occurrence; the repeated hour runs nothing (so `*/5 * * * *` pauses for that hour,
//!   where cronie would keep running wildcard jobs).

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

/// The longest expression accepted, in characters.
const MAX_LEN: usize = 200;
/// How far ahead `next_after` looks before it gives up (e.g. "0 0 31 2 *").
const SEARCH_YEARS: i32 = 5;

/// What one of the five fields accepts; `names` (space-separated) stand for min, min+1, …
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static str,
    name_range: &'static str,
}

impl FieldSpec {
    const fn numbers(name: &'static str, min: u32, max: u32) -> FieldSpec {
        FieldSpec {
            name,
            min,
            max,
            names: "",
            name_range: "",
        }
    }

    fn out_of_range(&self, value: &str) -> CronError {
        let (field, value) = (self.name, value.to_string());
        CronError::OutOfRange {
            field,
            value,
            min: self.min,
            max: self.max,
        }
    }

    fn invalid(&self, part: &str) -> CronError {
        CronError::Invalid {
            field: self.name,
            text: part.to_string(),
        }
    }
}

const MINUTE: FieldSpec = FieldSpec::numbers("minute", 0, 59);
const HOUR: FieldSpec = FieldSpec::numbers("hour", 0, 23);
const DAY: FieldSpec = FieldSpec::numbers("day", 1, 31);
const MONTH: FieldSpec = FieldSpec {
    names: "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC",
    name_range: "JAN–DEC",
    ..FieldSpec::numbers("month", 1, 12)
};
const WEEKDAY: FieldSpec = FieldSpec {
    names: "SUN MON TUE WED THU FRI SAT",
    name_range: "SUN–SAT",
    ..FieldSpec::numbers("weekday", 0, 7)
};
const MONTHS_LONG: &str =
    "January February March April May June July August September October November December";
const WEEKDAYS_LONG: &str = "Sunday Monday Tuesday Wednesday Thursday Friday Saturday";

/// Every day of the week, once 7 has been folded onto 0 (Sunday).
const WHOLE_WEEK: u64 = 0x7f;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CronError {
    #[error("a schedule is empty: write five fields (minute hour day month weekday) or a shortcut such as @daily")]
    Empty,
    #[error("a schedule is at most 200 characters, this has {0}")]
    TooLong(usize),
    #[error("a schedule has five fields (minute hour day month weekday), this has {0}")]
    FieldCount(usize),
    #[error("unknown shortcut '{0}' (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)")]
    UnknownShortcut(String),
    #[error("the {field} field '{text}' has an empty part (remove the extra comma)")]
    EmptyPart { field: &'static str, text: String },
    #[error("the {field} field '{value}' is out of range {min}–{max}")]
    OutOfRange {
        field: &'static str,
        value: String,
        min: u32,
        max: u32,
    },
    #[error("the {field} field '{value}' is not a known name (use {names} or numbers)")]
    UnknownName {
        field: &'static str,
        value: String,
        names: &'static str,
    },
    #[error("the {field} field '{text}' is not understood (write *, a number, a range a-b, a step */n or a list a,b)")]
    Invalid { field: &'static str, text: String },
    #[error("the {field} field range '{text}' runs backwards (write the smaller value first)")]
    Reversed { field: &'static str, text: String },
    #[error("the {field} field step in '{text}' must be a number from 1 to {max}")]
    BadStep {
        field: &'static str,
        text: String,
        max: u32,
    },
    #[error("unknown time zone '{0}' (use an IANA name such as Europe/Berlin)")]
    UnknownTimeZone(String),
}

/// A parsed five-field cron expression (minute hour day-of-month month day-of-week), or
/// @hourly/@daily/@midnight/@weekly/@monthly/@yearly/@annually.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    /// Bit n set: value n matches.
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Vixie cron: a day field that does not start with `*` restricts; when both do, a
    /// day matches if either matches.
    days_restricted: bool,
    weekdays_restricted: bool,
}

impl Schedule {
    /// Parses an expression of at most 200 characters; surrounding blanks are ignored.
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let text = text.trim();
        let length = text.chars().count();
        if length > MAX_LEN {
            return Err(CronError::TooLong(length));
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let five = match fields.as_slice() {
            [] => return Err(CronError::Empty),
            [shortcut] if shortcut.starts_with('@') => expand_shortcut(shortcut)?,
            [minute, hour, day, month, weekday] => [*minute, *hour, *day, *month, *weekday],
            other => return Err(CronError::FieldCount(other.len())),
        };
        let weekdays = parse_field(five[4], &WEEKDAY)?;
        Ok(Schedule {
            text: fields.join(" "),
            minutes: parse_field(five[0], &MINUTE)?,
            hours: parse_field(five[1], &HOUR)?,
            days: parse_field(five[2], &DAY)?,
            months: parse_field(five[3], &MONTH)?,
            // 7 is Sunday too.
            weekdays: (weekdays | weekdays >> 7) & WHOLE_WEEK,
            days_restricted: !five[2].starts_with('*'),
            weekdays_restricted: !five[4].starts_with('*'),
        })
    }

    /// The first run strictly after `after` (Unix seconds), in the time zone `tz`; None
    /// when there is none within 5 years (e.g. "0 0 31 2 *").
    pub fn next_after(&self, after: i64, tz: &TimeZone) -> Option<i64> {
        let after = Timestamp::from_second(after).ok()?;
        let local = tz.to_datetime(after);
        let limit = local.date().checked_add(SEARCH_YEARS.years()).ok()?;
        let mut from = next_whole_minute(local)?;
        loop {
            let candidate = self.next_local_match(from, limit)?;
            let instant = local_to_instant(candidate, tz)?;
            // Only the second pass through a repeated hour lands at or before `after`.
            if instant > after {
                return Some(instant.as_second());
            }
            from = next_whole_minute(candidate)?;
        }
    }

    /// The text it was parsed from, normalised (trimmed, single spaces).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A short English description for pages, e.g. "every minute", "at 02:00 every day",
    /// "every 5 minutes"; the expression itself when there is no short one.
    pub fn describe(&self) -> String {
        let every_day = self.months == full_mask(&MONTH)
            && self.days_without_or_rule() == Some((full_mask(&DAY), WHOLE_WEEK));
        let minute = single_value(self.minutes);
        if every_day && self.hours == full_mask(&HOUR) {
            return match (minute, step_of(self.minutes, &MINUTE)) {
                (_, Some(1)) => "every minute".to_string(),
                (Some(0), _) => "every hour".to_string(),
                (Some(m), _) => format!("at minute {m} of every hour"),
                (None, Some(step)) => format!("every {step} minutes"),
                (None, None) => self.text.clone(),
            };
        }
        let Some(minute) = minute else {
            return self.text.clone();
        };
        match (single_value(self.hours), step_of(self.hours, &HOUR)) {
            (Some(hour), _) => self.describe_days(&format!("at {hour:02}:{minute:02}")),
            (None, Some(step)) if every_day && minute == 0 => format!("every {step} hours"),
            (None, Some(step)) if every_day => format!("every {step} hours at minute {minute}"),
            _ => self.text.clone(),
        }
    }

    /// "at HH:MM" followed by which days, for a schedule that runs once on its days.
    fn describe_days(&self, time: &str) -> String {
        let Some((days, weekdays)) = self.days_without_or_rule() else {
            return self.text.clone();
        };
        let all_days = days == full_mask(&DAY);
        let all_months = self.months == full_mask(&MONTH);
        let all_weekdays = weekdays == WHOLE_WEEK;
        if all_days && all_months && all_weekdays {
            return format!("{time} every day");
        }
        if all_days && all_months {
            return match weekdays {
                0b011_1110 => format!("{time} on weekdays"),
                0b100_0001 => format!("{time} on weekends"),
                mask => format!("{time} every {}", english_list(WEEKDAYS_LONG, mask)),
            };
        }
        match (single_value(days), single_value(self.months), all_weekdays) {
            (Some(day), None, true) if all_months => format!("{time} on day {day} of every month"),
            (Some(day), Some(month), true) => {
                let name = MONTHS_LONG
                    .split(' ')
                    .nth(month as usize - 1)
                    .unwrap_or("?");
                format!("{time} on {day} {name} every year")
            }
            _ => self.text.clone(),
        }
    }

    /// The day masks as if matched with AND; None when the OR rule makes them irreducible.
    fn days_without_or_rule(&self) -> Option<(u64, u64)> {
        let either_full = self.days == full_mask(&DAY) || self.weekdays == WHOLE_WEEK;
        let or_rule = self.days_restricted && self.weekdays_restricted;
        match (or_rule, either_full) {
            (false, _) => Some((self.days, self.weekdays)),
            (true, true) => Some((full_mask(&DAY), WHOLE_WEEK)),
            (true, false) => None,
        }
    }

    /// The first local minute at or after `from`, on or before `limit`, that matches. It
    /// skips whole months, days and hours, so a five-year search takes a few thousand steps.
    fn next_local_match(&self, from: DateTime, limit: Date) -> Option<DateTime> {
        let mut date = from.date();
        let (mut hour, mut minute) = (from.hour() as u32, from.minute() as u32);
        while date <= limit {
            if !has_bit(self.months, date.month() as u32) {
                date = date.last_of_month().tomorrow().ok()?;
                (hour, minute) = (0, 0);
                continue;
            }
            // A day that does not match, or has no matching hour left, moves to the next.
            let Some(next_hour) = next_bit(self.hours, hour).filter(|_| self.day_matches(date))
            else {
                date = date.tomorrow().ok()?;
                (hour, minute) = (0, 0);
                continue;
            };
            if next_hour != hour {
                (hour, minute) = (next_hour, 0);
            }
            match next_bit(self.minutes, minute) {
                // Both come from masks of 0–23 and 0–59, so they fit.
                Some(m) => return Some(date.at(hour as i8, m as i8, 0, 0)),
                None => (hour, minute) = (hour + 1, 0),
            }
        }
        None
    }

    fn day_matches(&self, date: Date) -> bool {
        let by_day = has_bit(self.days, date.day() as u32);
        let by_weekday = has_bit(self.weekdays, date.weekday().to_sunday_zero_offset() as u32);
        if self.days_restricted && self.weekdays_restricted {
            by_day || by_weekday
        } else {
            by_day && by_weekday
        }
    }
}

/// The lab's time zone: `name` (IANA, e.g. "Europe/Berlin") or, when empty, the system's,
/// falling back to UTC (`config::time_zone`, which checks `jobs.time_zone` at start).
pub fn time_zone(name: &str) -> Result<TimeZone, CronError> {
    crate::config::time_zone(name).map_err(|_| CronError::UnknownTimeZone(name.trim().to_string()))
}

fn expand_shortcut(shortcut: &str) -> Result<[&'static str; 5], CronError> {
    Ok(match shortcut.to_ascii_lowercase().as_str() {
        "@hourly" => ["0", "*", "*", "*", "*"],
        "@daily" | "@midnight" => ["0", "0", "*", "*", "*"],
        "@weekly" => ["0", "0", "*", "*", "0"],
        "@monthly" => ["0", "0", "1", "*", "*"],
        "@yearly" | "@annually" => ["0", "0", "1", "1", "*"],
        _ => return Err(CronError::UnknownShortcut(shortcut.to_string())),
    })
}

/// A comma-separated list of parts, as a bit mask of the values it matches.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, CronError> {
    let mut mask = 0;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(CronError::EmptyPart {
                field: spec.name,
                text: text.to_string(),
            });
        }
        mask |= parse_part(part, spec)?;
    }
    Ok(mask)
}

/// One of `*`, `n`, `a-b`, each optionally followed by `/step` (`n/step` runs to the max).
fn parse_part(part: &str, spec: &FieldSpec) -> Result<u64, CronError> {
    let (base, step) = match part.split_once('/') {
        Some((base, step)) => (base, Some(parse_step(step, part, spec)?)),
        None => (part, None),
    };
    let (low, high) = match base.split_once('-') {
        _ if base == "*" => (spec.min, spec.max),
        Some((low, high)) => (
            parse_value(low, part, spec)?,
            parse_value(high, part, spec)?,
        ),
        None => {
            let value = parse_value(base, part, spec)?;
            (value, if step.is_some() { spec.max } else { value })
        }
    };
    if low > high {
        let text = part.to_string();
        return Err(CronError::Reversed {
            field: spec.name,
            text,
        });
    }
    Ok(range_mask(low, high, step.unwrap_or(1)))
}

fn parse_step(step: &str, part: &str, spec: &FieldSpec) -> Result<u32, CronError> {
    let max = spec.max - spec.min + 1;
    match step.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) && step.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(CronError::BadStep {
            field: spec.name,
            text: part.to_string(),
            max,
        }),
    }
}

/// A number in the field's range, or (month, weekday) a three-letter name.
fn parse_value(value: &str, part: &str, spec: &FieldSpec) -> Result<u32, CronError> {
    if value.is_empty() {
        return Err(spec.invalid(part));
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return match value.parse::<u32>() {
            Ok(n) if (spec.min..=spec.max).contains(&n) => Ok(n),
            _ => Err(spec.out_of_range(value)),
        };
    }
    if spec.names.is_empty() || !value.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(spec.invalid(part));
    }
    let mut names = spec.names.split(' ');
    match names.position(|name| name.eq_ignore_ascii_case(value)) {
        Some(index) => Ok(spec.min + index as u32),
        None => {
            let (field, value, names) = (spec.name, value.to_string(), spec.name_range);
            Err(CronError::UnknownName {
                field,
                value,
                names,
            })
        }
    }
}

/// The instant a matching local time runs at (see the module comment for DST).
fn local_to_instant(local: DateTime, tz: &TimeZone) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
        // The offset in force before the clocks fell back gives the earlier instant.
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok(),
        // Read with the later offset, a time in the gap is an instant just before the
        // transition; the transition itself is the first instant after the gap.
        AmbiguousOffset::Gap { after, .. } => {
            let before_transition = after.to_timestamp(local).ok()?;
            tz.following(before_transition)
                .next()
                .map(|transition| transition.timestamp())
        }
    }
}

/// The start of the minute after the one `local` falls in.
fn next_whole_minute(local: DateTime) -> Option<DateTime> {
    let minute_start = local.date().at(local.hour(), local.minute(), 0, 0);
    minute_start.checked_add(1.minute()).ok()
}

fn has_bit(mask: u64, value: u32) -> bool {
    value < 64 && mask & (1 << value) != 0
}

/// The smallest value ≥ `from` in `mask`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    let rest = if from < 64 {
        mask & (u64::MAX << from)
    } else {
        0
    };
    (rest != 0).then(|| rest.trailing_zeros())
}

/// low, low + step, … up to high, as a bit mask.
fn range_mask(low: u32, high: u32, step: u32) -> u64 {
    (low..=high)
        .step_by(step as usize)
        .fold(0, |mask, value| mask | 1 << value)
}

fn full_mask(spec: &FieldSpec) -> u64 {
    range_mask(spec.min, spec.max, 1)
}

fn single_value(mask: u64) -> Option<u32> {
    (mask.count_ones() == 1).then(|| mask.trailing_zeros())
}

/// n when `mask` is every n-th value of the field from its minimum, and n divides the
/// field evenly (`*/7` minutes leaves a 4-minute gap at the hour: not "every 7 minutes").
fn step_of(mask: u64, spec: &FieldSpec) -> Option<u32> {
    let first = next_bit(mask, 0)?;
    let step = next_bit(mask, first + 1)? - first;
    let even = (spec.max - spec.min + 1).is_multiple_of(step);
    (even && first == spec.min && mask == range_mask(spec.min, spec.max, step)).then_some(step)
}

/// The names (space-separated, the first for bit 0) whose bits are set, in English:
/// "Monday", "Monday and Friday", "Monday, Wednesday and Friday".
fn english_list(names: &str, mask: u64) -> String {
    let chosen: Vec<&str> = names
        .split(' ')
        .enumerate()
        .filter(|(i, _)| has_bit(mask, *i as u32))
        .map(|(_, n)| n)
        .collect();
    match chosen.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => chosen.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    /// The next run after `after` (RFC 3339), written as local time with its offset.
    fn next(expr: &str, after: &str, tz: &TimeZone) -> Option<String> {
        let after = after.parse::<Timestamp>().unwrap().as_second();
        let run = Schedule::parse(expr).unwrap().next_after(after, tz)?;
        let zoned = Timestamp::from_second(run).unwrap().to_zoned(tz.clone());
        Some(zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
    }

    fn utc_next(expr: &str, after: &str) -> Option<String> {
        next(expr, after, &TimeZone::UTC)
    }

    fn error(expr: &str) -> String {
        Schedule::parse(expr).unwrap_err().to_string()
    }

    #[test]
    fn field_errors_name_the_field_and_the_fix() {
        let cases = [
            ("0 25 * * *", "the hour field '25' is out of range 0–23"),
            ("60 * * * *", "the minute field '60' is out of range 0–59"),
            ("* * 0 * *", "the day field '0' is out of range 1–31"),
            ("* * 99999999999 * *", "the day field '99999999999' is out of range 1–31"),
            ("* * * 13 *", "the month field '13' is out of range 1–12"),
            ("* * * * 8", "the weekday field '8' is out of range 0–7"),
            ("*/0 * * * *", "the minute field step in '*/0' must be a number from 1 to 60"),
            ("0 1-5/ * * *", "the hour field step in '1-5/' must be a number from 1 to 24"),
            ("1,,2 * * * *", "the minute field '1,,2' has an empty part (remove the extra comma)"),
            ("5, * * * *", "the minute field '5,' has an empty part (remove the extra comma)"),
            ("0 17-9 * * *", "the hour field range '17-9' runs backwards (write the smaller value first)"),
            ("0 0 * * FRI-MON", "the weekday field range 'FRI-MON' runs backwards (write the smaller value first)"),
            ("0 0 * FOO *", "the month field 'FOO' is not a known name (use JAN–DEC or numbers)"),
            ("0 0 * * Sunday", "the weekday field 'Sunday' is not a known name (use SUN–SAT or numbers)"),
            ("x * * * *", "the minute field 'x' is not understood (write *, a number, a range a-b, a step */n or a list a,b)"),
        ];
        for (expr, message) in cases {
            assert_eq!(error(expr), message, "{expr}");
        }
        let garbage = [
            "1-2-3 * * * *",
            "-5 * * * *",
            "1- * * * *",
            "? * * * *",
            "MON * * * *",
            "+5 * * * *",
            "*-5 * * * *",
        ];
        for expr in garbage {
            let invalid = Schedule::parse(expr);
            assert!(
                matches!(
                    invalid,
                    Err(CronError::Invalid {
                        field: "minute",
                        ..
                    })
                ),
                "{expr}"
            );
        }
    }

    #[test]
    fn shape_errors() {
        assert_eq!(Schedule::parse("   "), Err(CronError::Empty));
        let six = "a schedule has five fields (minute hour day month weekday), this has 6";
        assert_eq!(error("* * * * * *"), six);
        assert_eq!(Schedule::parse("@daily 5"), Err(CronError::FieldCount(2)));
        assert_eq!(
            error("@reboot"),
            "unknown shortcut '@reboot' (use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)"
        );
        let longest = format!("{}00 * * * *", "0,".repeat(95));
        assert_eq!(longest.len(), 200);
        assert!(Schedule::parse(&format!("  {longest}\n")).is_ok());
        assert_eq!(
            Schedule::parse(&format!("0{longest}")),
            Err(CronError::TooLong(201))
        );
    }

    #[test]
    fn as_str_is_trimmed_with_single_spaces() {
        let schedule = Schedule::parse("  0   9\t* *  MON-fri \n").unwrap();
        assert_eq!(schedule.as_str(), "0 9 * * MON-fri");
        assert_eq!(Schedule::parse(" @Daily ").unwrap().as_str(), "@Daily");
    }

    #[test]
    fn every_minute_runs_at_the_next_whole_minute() {
        assert_eq!(
            utc_next("* * * * *", "2026-05-01T10:00:00Z").as_deref(),
            Some("2026-05-01T10:01:00+00:00")
        );
        assert_eq!(
            utc_next("* * * * *", "2026-05-01T10:00:59Z").as_deref(),
            Some("2026-05-01T10:01:00+00:00")
        );
        assert_eq!(
            utc_next("* * * * *", "2026-12-31T23:59:30Z").as_deref(),
            Some("2027-01-01T00:00:00+00:00")
        );
    }

    #[test]
    fn steps() {
        assert_eq!(
            utc_next("*/5 * * * *", "2026-05-01T10:02:00Z").as_deref(),
            Some("2026-05-01T10:05:00+00:00")
        );
        assert_eq!(
            utc_next("*/5 * * * *", "2026-05-01T10:05:00Z").as_deref(),
            Some("2026-05-01T10:10:00+00:00")
        );
        assert_eq!(
            utc_next("*/5 * * * *", "2026-05-01T10:57:00Z").as_deref(),
            Some("2026-05-01T11:00:00+00:00")
        );
        assert_eq!(
            utc_next("10-30/10 * * * *", "2026-05-01T10:30:00Z").as_deref(),
            Some("2026-05-01T11:10:00+00:00")
        );
        assert_eq!(
            utc_next("50/4 * * * *", "2026-05-01T10:58:00Z").as_deref(),
            Some("2026-05-01T11:50:00+00:00")
        );
        assert_eq!(
            utc_next("0 */6 * * *", "2026-05-01T18:00:00Z").as_deref(),
            Some("2026-05-02T00:00:00+00:00")
        );
    }

    #[test]
    fn ranges_lists_and_names() {
        // 2026-05-01 is a Friday.
        let expr = "15,45 9-17 * jan,May,DEC mon-FRI";
        assert_eq!(
            utc_next(expr, "2026-05-01T17:45:00Z").as_deref(),
            Some("2026-05-04T09:15:00+00:00")
        );
        assert_eq!(
            utc_next(expr, "2026-05-29T17:45:00Z").as_deref(),
            Some("2026-12-01T09:15:00+00:00")
        );
        // 7 and 0 are both Sunday.
        assert_eq!(Schedule::parse("0 0 * * 7").unwrap().weekdays, 1);
        assert_eq!(Schedule::parse("0 0 * * 5-7").unwrap().weekdays, 0b110_0001);
        assert_eq!(
            utc_next("0 0 * * 7", "2026-05-01T00:00:00Z").as_deref(),
            Some("2026-05-03T00:00:00+00:00")
        );
        assert_eq!(
            utc_next("0 12 * * SUN", "2026-05-03T11:00:00Z").as_deref(),
            Some("2026-05-03T12:00:00+00:00")
        );
    }

    #[test]
    fn day_and_weekday_both_restricted_match_either() {
        // The 13th, or any Friday: Friday 2026-05-01 comes first, then 8, 13, 15.
        assert_eq!(
            utc_next("0 0 13 * 5", "2026-04-30T12:00:00Z").as_deref(),
            Some("2026-05-01T00:00:00+00:00")
        );
        assert_eq!(
            utc_next("0 0 13 * 5", "2026-05-08T12:00:00Z").as_deref(),
            Some("2026-05-13T00:00:00+00:00")
        );
        assert_eq!(
            utc_next("0 0 13 * 5", "2026-05-13T12:00:00Z").as_deref(),
            Some("2026-05-15T00:00:00+00:00")
        );
        // A day field starting with '*' does not restrict (Vixie): both must match.
        assert_eq!(
            utc_next("0 0 */2 * 5", "2026-05-01T12:00:00Z").as_deref(),
            Some("2026-05-15T00:00:00+00:00")
        );
        // Only one restricted: that one decides.
        assert_eq!(
            utc_next("0 0 13 * *", "2026-05-01T12:00:00Z").as_deref(),
            Some("2026-05-13T00:00:00+00:00")
        );
        assert_eq!(
            utc_next("0 0 * * 5", "2026-05-02T12:00:00Z").as_deref(),
            Some("2026-05-08T00:00:00+00:00")
        );
    }

    #[test]
    fn leap_day_and_impossible_dates() {
        assert_eq!(
            utc_next("0 0 29 2 *", "2026-01-01T00:00:00Z").as_deref(),
            Some("2028-02-29T00:00:00+00:00")
        );
        assert_eq!(
            utc_next("0 0 29 2 *", "2028-02-29T00:00:00Z").as_deref(),
            Some("2032-02-29T00:00:00+00:00")
        );
        assert_eq!(utc_next("0 0 30 2 *", "2026-01-01T00:00:00Z"), None);
        assert_eq!(
            utc_next("0 0 31 2,4,6,9,11 *", "2026-01-01T00:00:00Z"),
            None
        );
        assert_eq!(next("0 0 31 2 *", "2026-01-01T00:00:00Z", &berlin()), None);
        // The 31st skips the months that lack one.
        assert_eq!(
            utc_next("0 0 31 * *", "2026-01-31T00:00:00Z").as_deref(),
            Some("2026-03-31T00:00:00+00:00")
        );
    }

    #[test]
    fn spring_forward_runs_at_the_end_of_the_gap() {
        let tz = berlin();
        // 2026-03-29: 02:00 CET becomes 03:00 CEST.
        assert_eq!(
            next("30 2 * * *", "2026-03-28T23:00:00+01:00", &tz).as_deref(),
            Some("2026-03-29T03:00:00+02:00")
        );
        assert_eq!(
            next("30 2 * * *", "2026-03-29T03:00:00+02:00", &tz).as_deref(),
            Some("2026-03-30T02:30:00+02:00")
        );
        // Every time in the gap collapses into one run at 03:00, then the schedule goes on.
        assert_eq!(
            next("*/15 * * * *", "2026-03-29T01:50:00+01:00", &tz).as_deref(),
            Some("2026-03-29T03:00:00+02:00")
        );
        assert_eq!(
            next("*/15 * * * *", "2026-03-29T03:00:00+02:00", &tz).as_deref(),
            Some("2026-03-29T03:15:00+02:00")
        );
        assert_eq!(
            next("0 3 * * *", "2026-03-29T01:59:00+01:00", &tz).as_deref(),
            Some("2026-03-29T03:00:00+02:00")
        );
    }

    #[test]
    fn fall_back_runs_once_at_the_first_occurrence() {
        let tz = berlin();
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00–02:59 happens twice.
        assert_eq!(
            next("30 2 * * *", "2026-10-25T00:00:00+02:00", &tz).as_deref(),
            Some("2026-10-25T02:30:00+02:00")
        );
        assert_eq!(
            next("30 2 * * *", "2026-10-25T02:30:00+02:00", &tz).as_deref(),
            Some("2026-10-26T02:30:00+01:00")
        );
        // During the second pass the repeated times are skipped.
        assert_eq!(
            next("*/30 * * * *", "2026-10-25T02:10:00+01:00", &tz).as_deref(),
            Some("2026-10-25T03:00:00+01:00")
        );
        assert_eq!(
            next("*/30 * * * *", "2026-10-25T02:30:00+02:00", &tz).as_deref(),
            Some("2026-10-25T03:00:00+01:00")
        );
        assert_eq!(
            next("0 1 * * *", "2026-10-24T12:00:00Z", &tz).as_deref(),
            Some("2026-10-25T01:00:00+02:00")
        );
    }

    #[test]
    fn utc_and_offsets() {
        let tz = time_zone("UTC").unwrap();
        assert_eq!(
            next("0 2 * * *", "2026-03-29T01:00:00Z", &tz).as_deref(),
            Some("2026-03-29T02:00:00+00:00")
        );
        // The same schedule in Berlin runs at 02:00 local, an hour earlier in UTC in winter.
        let run = Schedule::parse("0 2 * * *")
            .unwrap()
            .next_after(ts("2026-01-10T00:00:00Z"), &berlin());
        assert_eq!(run, Some(ts("2026-01-10T01:00:00Z")));
        assert_eq!(
            Schedule::parse("* * * * *")
                .unwrap()
                .next_after(i64::MAX, &TimeZone::UTC),
            None
        );
    }

    fn ts(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn shortcuts_expand_to_their_fields() {
        let same = |shortcut: &str, fields: &str| {
            let (a, b) = (
                Schedule::parse(shortcut).unwrap(),
                Schedule::parse(fields).unwrap(),
            );
            assert_eq!(
                (a.minutes, a.hours, a.days, a.months, a.weekdays),
                (b.minutes, b.hours, b.days, b.months, b.weekdays),
                "{shortcut}"
            );
            assert_eq!(
                (a.days_restricted, a.weekdays_restricted),
                (b.days_restricted, b.weekdays_restricted)
            );
        };
        same("@hourly", "0 * * * *");
        same("@daily", "0 0 * * *");
        same("@MIDNIGHT", "0 0 * * *");
        same("@weekly", "0 0 * * 0");
        same("@monthly", "0 0 1 * *");
        same("@yearly", "0 0 1 1 *");
        same("@annually", "0 0 1 1 *");
        assert_eq!(
            utc_next("@monthly", "2026-05-01T00:00:00Z").as_deref(),
            Some("2026-06-01T00:00:00+00:00")
        );
        assert_eq!(
            utc_next("@weekly", "2026-05-01T00:00:00Z").as_deref(),
            Some("2026-05-03T00:00:00+00:00")
        );
    }

    #[test]
    fn descriptions() {
        let describe = |expr: &str| Schedule::parse(expr).unwrap().describe();
        assert_eq!(describe("* * * * *"), "every minute");
        assert_eq!(describe("*/5 * * * *"), "every 5 minutes");
        assert_eq!(describe("0,30 * * * *"), "every 30 minutes");
        assert_eq!(describe("*/7 * * * *"), "*/7 * * * *");
        assert_eq!(describe("@hourly"), "every hour");
        assert_eq!(describe("15 * * * *"), "at minute 15 of every hour");
        assert_eq!(describe("0 2 * * *"), "at 02:00 every day");
        assert_eq!(describe("@daily"), "at 00:00 every day");
        assert_eq!(describe("0 */2 * * *"), "every 2 hours");
        assert_eq!(describe("30 */6 * * *"), "every 6 hours at minute 30");
        assert_eq!(describe("0 9 * * 1-5"), "at 09:00 on weekdays");
        assert_eq!(describe("0 10 * * SAT,SUN"), "at 10:00 on weekends");
        assert_eq!(
            describe("45 7 * * MON,wed,5"),
            "at 07:45 every Monday, Wednesday and Friday"
        );
        assert_eq!(describe("@weekly"), "at 00:00 every Sunday");
        assert_eq!(describe("@monthly"), "at 00:00 on day 1 of every month");
        assert_eq!(describe("@yearly"), "at 00:00 on 1 January every year");
        assert_eq!(describe("0 0 1 * 0-6"), "at 00:00 every day");
        // No short wording: the expression itself.
        assert_eq!(describe("0 0 13 * 5"), "0 0 13 * 5");
        assert_eq!(describe("5,7 9 * * *"), "5,7 9 * * *");
        assert_eq!(describe("0 9-17 * * *"), "0 9-17 * * *");
    }

    #[test]
    fn time_zones() {
        assert_eq!(
            time_zone("Europe/Berlin").unwrap().iana_name(),
            Some("Europe/Berlin")
        );
        assert!(time_zone("").is_ok());
        assert_eq!(
            time_zone("Mars/Base").unwrap_err().to_string(),
            "unknown time zone 'Mars/Base' (use an IANA name such as Europe/Berlin)"
        );
        assert!(time_zone("../../etc/passwd").is_err());
        assert!(time_zone("Europe/Berlin\0").is_err());
    }

    #[test]
    fn worst_case_searches_stay_fast() {
        let started = std::time::Instant::now();
        for expr in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "59 23 31 2 1-5"] {
            let schedule = Schedule::parse(expr).unwrap();
            let run = schedule.next_after(ts("2026-01-01T00:00:00Z"), &berlin());
            assert!(expr.ends_with("1-5") || run.is_none(), "{expr}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
