//! Usage reports from the ledger: GPU-seconds held and busy, CPU core-seconds, notebooks
//! and peak memory, per member, per day or per GPU, over any range. Pure: the ledger's
//! intervals and hourly busy buckets come in, rows come out. Knows nothing of HTTP or SQL.

use std::collections::{BTreeMap, HashSet};

use crate::model::UsageInterval as Interval;

const DAY: i64 = 86_400;
const HOUR: i64 = 3600;

/// How a report's rows are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Member,
    Day,
    Gpu,
}

impl GroupBy {
    pub fn parse(text: &str) -> Result<GroupBy, String> {
        match text {
            "member" => Ok(GroupBy::Member),
            "day" => Ok(GroupBy::Day),
            "gpu" => Ok(GroupBy::Gpu),
            other => Err(format!(
                "group_by must be member, day or gpu, not '{other}'"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Member => "member",
            GroupBy::Day => "day",
            GroupBy::Gpu => "gpu",
        }
    }
}

/// One row of a report (or the totals).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The member, the day ("2026-12-01", UTC) or the GPU's UUID ("cpu" for CPU cores).
    pub key: String,
    pub gpu_seconds_held: f64,
    pub gpu_seconds_busy: f64,
    /// Cores reserved × time, for CPU notebooks.
    pub cpu_core_seconds: f64,
    /// CPU time CPU notebooks actually used.
    pub cpu_seconds_used: f64,
    pub notebooks: usize,
    pub peak_memory_mib: i64,
}

impl Row {
    /// Busy / held, when anything was held.
    pub fn efficiency(&self) -> Option<f64> {
        (self.gpu_seconds_held > 0.0).then(|| self.gpu_seconds_busy / self.gpu_seconds_held)
    }
}

/// The first instant of `now`'s month (UTC): budgets are per calendar month.
pub fn month_start(now: i64) -> i64 {
    time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| t.replace_day(1).ok())
        .map(|t| t.unix_timestamp().div_euclid(DAY) * DAY)
        .unwrap_or(now.div_euclid(DAY) * DAY)
}

/// Where a budget stands this month.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub hours: f64,
    pub used_hours: f64,
}

impl Budget {
    pub fn left_hours(&self) -> f64 {
        (self.hours - self.used_hours).max(0.0)
    }
    pub fn over(&self) -> bool {
        self.used_hours >= self.hours
    }
    /// Used / budget, for a bar (at most 1).
    pub fn fraction(&self) -> f64 {
        if self.hours <= 0.0 {
            1.0
        } else {
            (self.used_hours / self.hours).min(1.0)
        }
    }
}

/// A report's range, `[from, to)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

/// The longest range a report covers.
pub const MAX_RANGE_DAYS: i64 = 3 * 366;

fn parse_instant(text: &str, end_of_day: bool) -> Result<i64, String> {
    let text = text.trim();
    let date = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, &date) {
        let midnight = d.midnight().assume_utc().unix_timestamp();
        return Ok(if end_of_day { midnight + DAY } else { midnight });
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            format!("'{text}' is not a date like 2026-12-01 or a time like 2026-12-01T09:30:00Z")
        })
}

/// `from` and `to` as the API and the page take them: a date ("2026-12-01": `to` then
/// includes that whole day) or an RFC 3339 time; `from` defaults to this month's start
/// and `to` to now.
pub fn parse_range(from: Option<&str>, to: Option<&str>, now: i64) -> Result<Range, String> {
    let from = match from.filter(|f| !f.trim().is_empty()) {
        Some(f) => parse_instant(f, false).map_err(|e| format!("from: {e}"))?,
        None => month_start(now),
    };
    let to = match to.filter(|t| !t.trim().is_empty()) {
        Some(t) => parse_instant(t, true).map_err(|e| format!("to: {e}"))?,
        // (at least one second: the very first second of a month is a valid default)
        None => now.max(from + 1),
    };
    if to <= from {
        return Err("to must be after from".into());
    }
    if to - from > MAX_RANGE_DAYS * DAY {
        return Err(format!(
            "the range is longer than {MAX_RANGE_DAYS} days; ask for less at once"
        ));
    }
    Ok(Range { from, to })
}

/// A day's key: "2026-12-01" (UTC).
pub fn day_key(ts: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp(ts.div_euclid(DAY) * DAY)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// The report over `[from, to)`. `hours(interval_id, first_hour, last_hour)` gives an
/// interval's busy seconds per hour; it is asked only for intervals that a range or day
/// boundary cuts.
pub fn report<E>(
    intervals: &[Interval],
    from: i64,
    to: i64,
    now: i64,
    group: GroupBy,
    mut hours: impl FnMut(i64, i64, i64) -> Result<Vec<(i64, f64)>, E>,
) -> Result<(Vec<Row>, Row), E> {
    struct Acc {
        row: Row,
        notebooks: HashSet<String>,
    }
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    let mut all_notebooks: HashSet<String> = HashSet::new();
    let mut totals = Row {
        key: "total".into(),
        ..Row::default()
    };
    for i in intervals {
        let end = i.ended_at.unwrap_or(now).max(i.started_at);
        let (a, b) = (i.started_at.max(from), end.min(to));
        if b <= a {
            continue;
        }
        let pieces = pieces(a, b, group);
        let whole = a == i.started_at && b == end && pieces.len() == 1;
        let by_hour = if whole {
            Vec::new()
        } else {
            hours(i.id, a.div_euclid(HOUR), (b - 1).div_euclid(HOUR))?
        };
        for (p, q) in pieces {
            let busy = if whole {
                i.busy_seconds
            } else {
                busy_within(&by_hour, i.started_at, end, p, q)
            };
            let key = match group {
                GroupBy::Member => i.member.clone(),
                GroupBy::Day => day_key(p),
                GroupBy::Gpu => i.gpu_uuid.clone().unwrap_or_else(|| "cpu".into()),
            };
            let acc = groups.entry(key.clone()).or_insert_with(|| Acc {
                row: Row {
                    key,
                    ..Row::default()
                },
                notebooks: HashSet::new(),
            });
            let held = (q - p) as f64;
            for row in [&mut acc.row, &mut totals] {
                if i.gpu_uuid.is_some() {
                    row.gpu_seconds_held += held;
                    row.gpu_seconds_busy += busy;
                } else {
                    row.cpu_core_seconds += i.cores * held;
                    row.cpu_seconds_used += busy;
                }
                row.peak_memory_mib = row.peak_memory_mib.max(i.peak_memory_mib);
            }
            acc.notebooks.insert(i.notebook_id.clone());
        }
        all_notebooks.insert(i.notebook_id.clone());
    }
    totals.notebooks = all_notebooks.len();
    let rows = groups
        .into_values()
        .map(|mut acc| {
            acc.row.notebooks = acc.notebooks.len();
            acc.row
        })
        .collect();
    Ok((rows, totals))
}

/// The pieces of `[a, b)` a report counts: one per day (UTC) when grouping by day, else
/// the whole.
fn pieces(a: i64, b: i64, group: GroupBy) -> Vec<(i64, i64)> {
    if group != GroupBy::Day {
        return vec![(a, b)];
    }
    let mut pieces = Vec::new();
    let mut p = a;
    while p < b {
        let q = ((p.div_euclid(DAY) + 1) * DAY).min(b);
        pieces.push((p, q));
        p = q;
    }
    pieces
}

/// Busy seconds of an interval `[start, end)` that fall inside `[p, q)`: whole hours as
/// recorded, cut hours in proportion to the part of the interval's time in them.
fn busy_within(by_hour: &[(i64, f64)], start: i64, end: i64, p: i64, q: i64) -> f64 {
    by_hour
        .iter()
        .map(|&(h, busy)| {
            let (h0, h1) = (h * HOUR, (h + 1) * HOUR);
            let covered = (end.min(h1) - start.max(h0)).max(0);
            let inside = (q.min(h1).min(end) - p.max(h0).max(start)).max(0);
            if covered == 0 {
                0.0
            } else {
                busy * inside as f64 / covered as f64
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(
        id: i64,
        member: &str,
        gpu: Option<&str>,
        start: i64,
        end: Option<i64>,
        busy: f64,
    ) -> Interval {
        Interval {
            id,
            user_id: 1,
            member: member.into(),
            notebook_id: format!("nb{id}"),
            gpu_uuid: gpu.map(String::from),
            cores: 2.0,
            started_at: start,
            ended_at: end,
            busy_seconds: busy,
            peak_memory_mib: 100 * id,
        }
    }

    fn no_hours(_: i64, _: i64, _: i64) -> Result<Vec<(i64, f64)>, ()> {
        Ok(Vec::new())
    }

    #[test]
    fn whole_intervals_sum_per_member_and_gpu() {
        let list = vec![
            interval(1, "ada", Some("g0"), 1000, Some(4600), 1800.0),
            interval(2, "bob", Some("g1"), 2000, Some(2600), 600.0),
            interval(3, "ada", None, 0, Some(3600), 900.0),
        ];
        let (rows, total) =
            report(&list, 0, 10_000, 10_000, GroupBy::Member, no_hours).expect("report");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key, "ada");
        assert_eq!(rows[0].gpu_seconds_held, 3600.0);
        assert_eq!(rows[0].gpu_seconds_busy, 1800.0);
        assert_eq!(rows[0].efficiency(), Some(0.5));
        assert_eq!(rows[0].cpu_core_seconds, 7200.0);
        assert_eq!(rows[0].cpu_seconds_used, 900.0);
        assert_eq!(rows[0].notebooks, 2);
        assert_eq!(total.gpu_seconds_held, 4200.0);
        assert_eq!(total.notebooks, 3);
        let (rows, _) = report(&list, 0, 10_000, 10_000, GroupBy::Gpu, no_hours).expect("report");
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["cpu", "g0", "g1"]);
    }

    #[test]
    fn cut_intervals_use_their_hours_and_open_ones_end_now() {
        // Held 00:30–02:30, busy 600 s in hour 0 (which it covers half of), 3600 in hour 1,
        // 0 in hour 2.
        let list = vec![interval(1, "ada", Some("g0"), 1800, Some(9000), 4200.0)];
        let hours = |_, _, _| -> Result<Vec<(i64, f64)>, ()> { Ok(vec![(0, 600.0), (1, 3600.0)]) };
        let (rows, _) = report(&list, 3600, 7200, 99_999, GroupBy::Member, hours).expect("report");
        assert_eq!(rows[0].gpu_seconds_held, 3600.0);
        assert_eq!(rows[0].gpu_seconds_busy, 3600.0);
        // A range ending 00:45 gets half of hour 0's busy time.
        let (rows, _) = report(&list, 0, 2700, 99_999, GroupBy::Member, hours).expect("report");
        assert_eq!(rows[0].gpu_seconds_held, 900.0);
        assert_eq!(rows[0].gpu_seconds_busy, 300.0);
        // Open: held until now.
        let open = vec![interval(2, "bob", Some("g1"), 100, None, 0.0)];
        let (rows, _) = report(&open, 0, 10_000, 700, GroupBy::Member, no_hours).expect("report");
        assert_eq!(rows[0].gpu_seconds_held, 600.0);
    }

    #[test]
    fn ranges_parse_dates_and_times_and_say_what_is_wrong() {
        let now = 1_796_094_851;
        assert_eq!(
            parse_range(None, None, now),
            Ok(Range {
                from: 1_796_083_200,
                to: now
            })
        );
        assert_eq!(
            parse_range(Some("2026-12-01"), Some("2026-12-01"), now),
            Ok(Range {
                from: 1_796_083_200,
                to: 1_796_083_200 + DAY
            })
        );
        assert_eq!(
            parse_range(
                Some("2026-12-01T00:00:10Z"),
                Some("2026-12-01T00:01:00Z"),
                now
            ),
            Ok(Range {
                from: 1_796_083_210,
                to: 1_796_083_260
            })
        );
        assert!(parse_range(Some("yesterday"), None, now)
            .unwrap_err()
            .starts_with("from: 'yesterday'"));
        assert!(parse_range(Some("2026-12-02"), Some("2026-12-01"), now).is_err());
        assert!(parse_range(Some("2020-01-01"), Some("2026-01-01"), now)
            .unwrap_err()
            .contains("longer"));
    }

    #[test]
    fn months_start_on_the_first_utc() {
        // 2026-12-01T03:14:11Z → 2026-12-01T00:00:00Z
        assert_eq!(month_start(1_796_094_851), 1_796_083_200);
        assert_eq!(month_start(1_796_083_200), 1_796_083_200);
        let b = Budget {
            hours: 10.0,
            used_hours: 12.0,
        };
        assert!(b.over() && b.left_hours() == 0.0 && b.fraction() == 1.0);
    }

    #[test]
    fn days_split_at_midnight_utc() {
        let list = vec![interval(
            1,
            "ada",
            Some("g0"),
            DAY - 600,
            Some(DAY + 1200),
            0.0,
        )];
        let (rows, total) = report(&list, 0, 3 * DAY, 3 * DAY, GroupBy::Day, |_, _, _| {
            Ok::<_, ()>(Vec::new())
        })
        .expect("report");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key, "1970-01-01");
        assert_eq!(rows[0].gpu_seconds_held, 600.0);
        assert_eq!(rows[1].key, "1970-01-02");
        assert_eq!(rows[1].gpu_seconds_held, 1200.0);
        assert_eq!(total.gpu_seconds_held, 1800.0);
        assert_eq!(
            GroupBy::parse("week").unwrap_err(),
            "group_by must be member, day or gpu, not 'week'"
        );
    }
}
