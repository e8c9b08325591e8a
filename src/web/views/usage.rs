//! The usage page's view model: the table, presets, and the geometry of its two SVG
//! charts (a bar per member, a column per day stacked by member), computed from a report
//! without I/O so that the numbers can be tested.

use std::collections::HashMap;

use crate::model::wire::{UsageReport, UsageRow};
use crate::usage::{self, Range};

/// Width of the longest member bar.
const BAR_WIDTH: f64 = 440.0;
/// The daily chart's drawing area.
const CHART_WIDTH: f64 = 720.0;
const CHART_HEIGHT: f64 = 160.0;
/// Vertical room per member bar.
const BAR_ROW: u32 = 30;
/// Classes of the chart palette: c0..c7.
const PALETTE: usize = 8;
/// Horizontal room per legend entry.
const LEGEND_STEP: u32 = 110;

/// One table row as shown (and as the CSV has it).
pub struct TableRow {
    pub member: String,
    pub held: String,
    pub busy: String,
    pub efficiency: String,
    pub notebooks: usize,
    pub peak_memory: String,
    pub cpu_core_hours: String,
}

/// Seconds as hours with two decimals.
pub fn hours(seconds: f64) -> String {
    format!("{:.2}", seconds / 3600.0)
}

impl TableRow {
    fn new(name: &str, r: &UsageRow) -> TableRow {
        TableRow {
            member: name.to_string(),
            held: hours(r.gpu_seconds_held),
            busy: hours(r.gpu_seconds_busy),
            efficiency: r
                .efficiency
                .map(|e| format!("{:.0} %", e * 100.0))
                .unwrap_or_else(|| "–".into()),
            notebooks: r.notebooks,
            peak_memory: if r.peak_memory_mib > 0 {
                format!("{} MiB", r.peak_memory_mib)
            } else {
                "–".into()
            },
            cpu_core_hours: hours(r.cpu_core_seconds),
        }
    }
}

/// The report's rows, and its totals as a last row.
pub fn table(report: &UsageReport) -> (Vec<TableRow>, TableRow) {
    let rows = report
        .rows
        .iter()
        .map(|r| TableRow::new(r.member.as_deref().unwrap_or(""), r))
        .collect();
    (rows, TableRow::new("Total", &report.totals))
}

/// A horizontal bar per member: held (light) with busy (dark) over it.
pub struct MemberBar {
    pub member: String,
    pub y: u32,
    pub held_width: f64,
    pub busy_width: f64,
    pub label: String,
}

/// One day's column, stacked by member.
pub struct DayColumn {
    pub x: f64,
    pub width: f64,
    pub day: String,
    pub segments: Vec<Segment>,
}

pub struct Segment {
    pub y: f64,
    pub height: f64,
    /// Palette class: c0..c7.
    pub class: String,
    pub title: String,
}

pub struct Legend {
    pub member: String,
    pub class: String,
    pub x: u32,
}

/// A preset period the page links to.
pub struct Preset {
    pub label: &'static str,
    pub href: String,
    pub current: bool,
}

/// Everything the two charts draw.
pub struct UsageCharts {
    pub bars: Vec<MemberBar>,
    /// The member chart's height.
    pub bars_height: u32,
    pub days: Vec<DayColumn>,
    pub legend: Vec<Legend>,
    /// The daily chart's scale: the busiest day's GPU-hours.
    pub max_day_hours: String,
}

/// GPU-seconds held per day, by member (in the order given, which sets their colours).
pub type DailyByMember = [(String, Vec<(String, f64)>)];

/// The charts for `rows` (one per member) and `daily` over `range`.
pub fn usage_charts(rows: &[UsageRow], daily: &DailyByMember, range: Range) -> UsageCharts {
    let bars = member_bars(rows);
    let (days, max_day) = day_columns(daily, range);
    UsageCharts {
        bars_height: (bars.len() as u32 * BAR_ROW).max(BAR_ROW) + 8,
        bars,
        days,
        legend: legend(daily),
        max_day_hours: hours(max_day),
    }
}

/// `v` rounded to `places` decimals (1 or 2): SVG numbers stay short.
fn round_to(v: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (v * scale).round() / scale
}

fn palette_class(member: usize) -> String {
    format!("c{}", member % PALETTE)
}

/// Bars scaled to the largest held time.
fn member_bars(rows: &[UsageRow]) -> Vec<MemberBar> {
    let max_held = rows.iter().map(|r| r.gpu_seconds_held).fold(0.0, f64::max);
    let scale = if max_held > 0.0 {
        BAR_WIDTH / max_held
    } else {
        0.0
    };
    rows.iter()
        .enumerate()
        .map(|(i, r)| MemberBar {
            member: r.member.clone().unwrap_or_default(),
            y: i as u32 * BAR_ROW + 4,
            held_width: round_to(r.gpu_seconds_held * scale, 1),
            busy_width: round_to(r.gpu_seconds_busy.min(r.gpu_seconds_held) * scale, 1),
            label: format!(
                "{} h held · {} h busy",
                hours(r.gpu_seconds_held),
                hours(r.gpu_seconds_busy)
            ),
        })
        .collect()
}

/// Every day of the range, each stacked by member, scaled to the busiest day; with that
/// day's GPU-seconds.
fn day_columns(daily: &DailyByMember, range: Range) -> (Vec<DayColumn>, f64) {
    let first_day = range.from.div_euclid(86_400);
    let last_day = (range.to - 1).div_euclid(86_400);
    let n_days = (last_day - first_day + 1).max(1) as usize;
    let names: Vec<String> = (0..n_days)
        .map(|i| usage::day_key((first_day + i as i64) * 86_400))
        .collect();
    let per_day = stack_by_day(daily, &names);
    let max_day = per_day
        .iter()
        .map(|d| d.iter().map(|(_, h)| h).sum::<f64>())
        .fold(0.0, f64::max);
    let width = CHART_WIDTH / n_days as f64;
    let columns = per_day
        .into_iter()
        .zip(names)
        .enumerate()
        .map(|(i, (stack, day))| DayColumn {
            x: round_to(i as f64 * width, 2),
            width: round_to((width * 0.8).max(0.5), 2),
            segments: stack_segments(&day, stack, daily, max_day),
            day,
        })
        .collect();
    (columns, max_day)
}

/// For each of `days` (in order): (member index, GPU-seconds held) of those who held any.
fn stack_by_day(daily: &DailyByMember, days: &[String]) -> Vec<Vec<(usize, f64)>> {
    let index: HashMap<&str, usize> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let mut per_day: Vec<Vec<(usize, f64)>> = vec![Vec::new(); days.len()];
    for (m, (_, days)) in daily.iter().enumerate() {
        for (day, held) in days {
            if let Some(&i) = index.get(day.as_str()) {
                per_day[i].push((m, *held));
            }
        }
    }
    per_day
}

/// One day's segments, bottom up, scaled so that `max_day` fills the chart.
fn stack_segments(
    day: &str,
    stack: Vec<(usize, f64)>,
    daily: &DailyByMember,
    max_day: f64,
) -> Vec<Segment> {
    let mut y = CHART_HEIGHT;
    stack
        .into_iter()
        .filter(|(_, h)| *h > 0.0)
        .map(|(m, held)| {
            let height = if max_day > 0.0 {
                held / max_day * CHART_HEIGHT
            } else {
                0.0
            };
            y -= height;
            Segment {
                y: round_to(y, 1),
                height: round_to(height, 1),
                class: palette_class(m),
                title: format!("{day} · {}: {} GPU-h", daily[m].0, hours(held)),
            }
        })
        .collect()
}

fn legend(daily: &DailyByMember) -> Vec<Legend> {
    daily
        .iter()
        .enumerate()
        .map(|(m, (member, _))| Legend {
            member: member.clone(),
            class: palette_class(m),
            x: m as u32 * LEGEND_STEP,
        })
        .collect()
}

/// The preset periods, the one shown (`from`..`to`, dates) marked current.
pub fn presets(now: i64, from: &str, to: &str) -> Vec<Preset> {
    let date = usage::day_key;
    let today = date(now);
    [
        ("Today", today.clone()),
        ("Last 7 days", date(now - 6 * 86_400)),
        ("This month", date(usage::month_start(now))),
        ("Last 30 days", date(now - 29 * 86_400)),
        ("Last 12 months", date(now - 364 * 86_400)),
    ]
    .into_iter()
    .map(|(label, start)| Preset {
        label,
        href: format!("/usage?from={start}&to={today}"),
        current: start == from && today == to,
    })
    .collect()
}

/// The page's `from`/`to` inputs: the dates the range covers (to inclusive).
pub fn form_dates(range: Range) -> (String, String) {
    (usage::day_key(range.from), usage::day_key(range.to - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    /// 2026-03-01 00:00 UTC.
    const MARCH_1: i64 = 1_772_323_200;

    fn row(member: &str, held_h: f64, busy_h: f64) -> UsageRow {
        UsageRow {
            member: Some(member.into()),
            day: None,
            gpu: None,
            gpu_seconds_held: held_h * 3600.0,
            gpu_seconds_busy: busy_h * 3600.0,
            efficiency: None,
            cpu_core_seconds: 0.0,
            cpu_seconds_used: 0.0,
            notebooks: 1,
            peak_memory_mib: 0,
        }
    }

    fn three_days() -> Range {
        Range {
            from: MARCH_1,
            to: MARCH_1 + 3 * DAY,
        }
    }

    #[test]
    fn bars_scale_to_the_longest_and_busy_never_exceeds_held() {
        let rows = [row("ada", 10.0, 5.0), row("bob", 2.5, 4.0)];
        let charts = usage_charts(&rows, &[], three_days());
        let ada = &charts.bars[0];
        assert_eq!((ada.y, ada.held_width, ada.busy_width), (4, 440.0, 220.0));
        let bob = &charts.bars[1];
        assert_eq!((bob.y, bob.held_width, bob.busy_width), (34, 110.0, 110.0));
        assert_eq!(bob.label, "2.50 h held · 4.00 h busy");
        assert_eq!(charts.bars_height, 68);
        // Nothing held: zero-width bars, never a division by zero.
        let idle = usage_charts(&[row("cy", 0.0, 0.0)], &[], three_days());
        assert_eq!(idle.bars[0].held_width, 0.0);
        assert_eq!(usage_charts(&[], &[], three_days()).bars_height, 38);
    }

    #[test]
    fn days_stack_by_member_scaled_to_the_busiest_day() {
        let daily = vec![
            (
                "ada".to_string(),
                vec![
                    ("2026-03-01".to_string(), 7200.0),
                    ("2026-03-02".to_string(), 3600.0),
                ],
            ),
            (
                "bob".to_string(),
                vec![
                    ("2026-03-02".to_string(), 3600.0),
                    ("2026-02-27".to_string(), 1.0),
                ],
            ),
        ];
        let charts = usage_charts(&[], &daily, three_days());
        assert_eq!(charts.max_day_hours, "2.00");
        assert_eq!(charts.days.len(), 3);
        let [first, second, third] = &charts.days[..] else {
            panic!("three days")
        };
        assert_eq!(
            (first.x, first.width, first.day.as_str()),
            (0.0, 192.0, "2026-03-01")
        );
        assert_eq!(second.x, 240.0);
        // One member fills the first day; two halves stack on the second, ada at the bottom.
        assert_eq!(
            (first.segments[0].y, first.segments[0].height),
            (0.0, 160.0)
        );
        let heights: Vec<(f64, f64, &str)> = second
            .segments
            .iter()
            .map(|s| (s.y, s.height, s.class.as_str()))
            .collect();
        assert_eq!(heights, vec![(80.0, 80.0, "c0"), (0.0, 80.0, "c1")]);
        assert_eq!(second.segments[1].title, "2026-03-02 · bob: 1.00 GPU-h");
        assert!(third.segments.is_empty(), "a day outside the data is empty");
        let legend: Vec<(&str, &str, u32)> = charts
            .legend
            .iter()
            .map(|l| (l.member.as_str(), l.class.as_str(), l.x))
            .collect();
        assert_eq!(legend, vec![("ada", "c0", 0), ("bob", "c1", 110)]);
    }

    #[test]
    fn a_long_range_keeps_columns_visible_and_an_empty_one_has_no_scale() {
        let year = Range {
            from: MARCH_1,
            to: MARCH_1 + 2000 * DAY,
        };
        let charts = usage_charts(&[], &[], year);
        assert_eq!(charts.days.len(), 2000);
        assert_eq!(charts.days[1].width, 0.5, "never thinner than half a unit");
        assert_eq!(charts.days[1].x, 0.36);
        assert_eq!(charts.max_day_hours, "0.00");
    }

    #[test]
    fn presets_and_dates() {
        let now = MARCH_1 + 14 * DAY + 3600;
        let p = presets(now, "2026-03-01", "2026-03-15");
        let labels: Vec<&str> = p.iter().map(|p| p.label).collect();
        assert_eq!(
            labels,
            [
                "Today",
                "Last 7 days",
                "This month",
                "Last 30 days",
                "Last 12 months"
            ]
        );
        assert_eq!(p[1].href, "/usage?from=2026-03-09&to=2026-03-15");
        assert!(p[2].current && !p[0].current);
        assert_eq!(
            form_dates(three_days()),
            ("2026-03-01".to_string(), "2026-03-03".to_string())
        );
        let (rows, total) = table(&UsageReport {
            from: "2026-03-01".into(),
            to: "2026-03-03".into(),
            group_by: "member",
            rows: vec![row("ada", 1.0, 0.5)],
            totals: row("", 1.0, 0.5),
        });
        assert_eq!(
            (rows[0].held.as_str(), rows[0].peak_memory.as_str()),
            ("1.00", "–")
        );
        assert_eq!(total.member, "Total");
    }
}
