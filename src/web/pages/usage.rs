//! Usage: the JSON report, the page (table, a bar chart per member, a daily stacked chart,
//! all server-rendered SVG), its CSV, and budgets.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::clock::now;
use crate::error::{ApiError, PageError, WebError};
use crate::model::wire::{UsageReport, UsageRow};
use crate::usage::{self, GroupBy, Range};
use crate::web::extract::{ApiUser, SessionUser};
use crate::web::views::Chrome;
use crate::web::AppState;

#[derive(Deserialize)]
pub struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

fn range_of(q: &UsageQuery) -> Result<Range, WebError> {
    usage::parse_range(q.from.as_deref(), q.to.as_deref(), now()).map_err(WebError::bad_request)
}

pub async fn usage_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    q: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let range = range_of(&q)?;
    let group =
        GroupBy::parse(q.group_by.as_deref().unwrap_or("member")).map_err(WebError::bad_request)?;
    let report = state.usage.report(&caller.user, range, group).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    /// GPU-hours per month; null removes the budget.
    gpu_hours: Option<f64>,
}

/// Admins: a member's monthly GPU-hour budget.
pub async fn set_budget_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: web::Json<BudgetBody>,
) -> Result<HttpResponse, ApiError> {
    if !caller.user.is_admin {
        return Err(WebError::forbidden("Only admins can set budgets.").into());
    }
    let id = id.into_inner();
    state.usage.set_budget(id, body.gpu_hours).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"id": id, "gpu_hours_budget": body.gpu_hours})))
}

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

fn hours(seconds: f64) -> String {
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

/// Preset periods: (label, from, to) as dates.
pub struct Preset {
    pub label: &'static str,
    pub href: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    chrome: Chrome,
    from_date: String,
    to_date: String,
    rows: Vec<TableRow>,
    total: TableRow,
    bars: Vec<MemberBar>,
    bars_height: u32,
    days: Vec<DayColumn>,
    legend: Vec<Legend>,
    max_day_hours: String,
    presets: Vec<Preset>,
    csv: String,
    everyone: bool,
    error: Option<String>,
}

const BAR_WIDTH: f64 = 440.0;
const CHART_WIDTH: f64 = 720.0;
const CHART_HEIGHT: f64 = 160.0;

fn date(ts: i64) -> String {
    usage::day_key(ts)
}

fn presets(now: i64, from: &str, to: &str) -> Vec<Preset> {
    let today = date(now);
    let week = date(now - 6 * 86_400);
    let month = date(usage::month_start(now));
    let days30 = date(now - 29 * 86_400);
    let year = date(now - 364 * 86_400);
    [
        ("Today", today.clone()),
        ("Last 7 days", week),
        ("This month", month),
        ("Last 30 days", days30),
        ("Last 12 months", year),
    ]
    .into_iter()
    .map(|(label, start)| Preset {
        label,
        href: format!("/usage?from={start}&to={today}"),
        current: start == from && today == to,
    })
    .collect()
}

fn table(report: &UsageReport) -> (Vec<TableRow>, TableRow) {
    let rows = report
        .rows
        .iter()
        .map(|r| TableRow::new(r.member.as_deref().unwrap_or(""), r))
        .collect();
    (rows, TableRow::new("Total", &report.totals))
}

/// The page's `from`/`to` inputs: the dates the range covers (to inclusive).
fn form_dates(range: Range) -> (String, String) {
    (date(range.from), date(range.to - 1))
}

pub async fn usage_page(
    session: SessionUser,
    state: web::Data<AppState>,
    q: web::Query<UsageQuery>,
) -> Result<HttpResponse, PageError> {
    let t = now();
    let (range, error) = match range_of(&q) {
        Ok(r) => (r, None),
        Err(e) => (
            usage::parse_range(None, None, t).map_err(WebError::bad_request)?,
            Some(e.message),
        ),
    };
    let report = state
        .usage
        .report(&session.user, range, GroupBy::Member)
        .await?;
    let daily = state.usage.daily_by_member(&session.user, range).await?;
    let (rows, total) = table(&report);
    // Bars: scaled to the largest held time.
    let max_held = report
        .rows
        .iter()
        .map(|r| r.gpu_seconds_held)
        .fold(0.0, f64::max);
    let bars: Vec<MemberBar> = report
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let scale = if max_held > 0.0 {
                BAR_WIDTH / max_held
            } else {
                0.0
            };
            MemberBar {
                member: r.member.clone().unwrap_or_default(),
                y: i as u32 * 30 + 4,
                held_width: (r.gpu_seconds_held * scale * 10.0).round() / 10.0,
                busy_width: (r.gpu_seconds_busy.min(r.gpu_seconds_held) * scale * 10.0).round()
                    / 10.0,
                label: format!(
                    "{} h held · {} h busy",
                    hours(r.gpu_seconds_held),
                    hours(r.gpu_seconds_busy)
                ),
            }
        })
        .collect();
    // Days: every day of the range, stacked by member.
    let first_day = range.from.div_euclid(86_400);
    let last_day = (range.to - 1).div_euclid(86_400);
    let n_days = (last_day - first_day + 1).max(1) as usize;
    let index: std::collections::HashMap<String, usize> = (0..n_days)
        .map(|i| (date((first_day + i as i64) * 86_400), i))
        .collect();
    let mut per_day: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n_days];
    for (m, (_, days)) in daily.iter().enumerate() {
        for (day, held) in days {
            if let Some(&i) = index.get(day) {
                per_day[i].push((m, *held));
            }
        }
    }
    let max_day = per_day
        .iter()
        .map(|d| d.iter().map(|(_, h)| h).sum::<f64>())
        .fold(0.0, f64::max);
    let width = CHART_WIDTH / n_days as f64;
    let days = per_day
        .into_iter()
        .enumerate()
        .map(|(i, stack)| {
            let mut y = CHART_HEIGHT;
            let day = date((first_day + i as i64) * 86_400);
            let segments = stack
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
                        y: (y * 10.0).round() / 10.0,
                        height: (height * 10.0).round() / 10.0,
                        class: format!("c{}", m % 8),
                        title: format!("{day} · {}: {} GPU-h", daily[m].0, hours(held)),
                    }
                })
                .collect();
            DayColumn {
                x: (i as f64 * width * 100.0).round() / 100.0,
                width: ((width * 0.8).max(0.5) * 100.0).round() / 100.0,
                day,
                segments,
            }
        })
        .collect();
    let legend = daily
        .iter()
        .enumerate()
        .map(|(m, (member, _))| Legend {
            member: member.clone(),
            class: format!("c{}", m % 8),
            x: m as u32 * 110,
        })
        .collect();
    let (from_date, to_date) = form_dates(range);
    let page = UsagePage {
        chrome: Chrome::new(&session, "usage"),
        presets: presets(t, &from_date, &to_date),
        csv: format!("/usage.csv?from={from_date}&to={to_date}"),
        from_date,
        to_date,
        rows,
        total,
        bars_height: (bars.len() as u32 * 30).max(30) + 8,
        bars,
        days,
        legend,
        max_day_hours: hours(max_day),
        everyone: session.user.is_admin,
        error,
    };
    super::html(StatusCode::OK, page)
}

/// Exactly the page's table, as CSV.
pub async fn usage_csv(
    session: SessionUser,
    state: web::Data<AppState>,
    q: web::Query<UsageQuery>,
) -> Result<HttpResponse, PageError> {
    let range = range_of(&q)?;
    let report = state
        .usage
        .report(&session.user, range, GroupBy::Member)
        .await?;
    let (rows, total) = table(&report);
    let mut csv = String::from(
        "member,gpu_hours_held,gpu_hours_busy,efficiency,notebooks,peak_memory,cpu_core_hours\n",
    );
    for r in rows.iter().chain(std::iter::once(&total)) {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            csv_field(&r.member),
            r.held,
            r.busy,
            csv_field(&r.efficiency),
            r.notebooks,
            csv_field(&r.peak_memory),
            r.cpu_core_hours
        ));
    }
    let (from, to) = form_dates(range);
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"notebox-usage-{from}-to-{to}.csv\""),
        ))
        .body(csv))
}

/// A CSV field, quoted when it needs to be; a leading =, +, - or @ is defused so a
/// spreadsheet does not run it as a formula.
fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) && v != "–" {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("ada"), "ada");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("–"), "–");
    }
}
