//! Usage: the JSON report, the page (table, a bar chart per member, a daily stacked chart,
//! all server-rendered SVG; the geometry is `web::views::usage`), its CSV, and budgets.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::clock::now;
use crate::error::{ApiError, PageError, WebError};
use crate::usage::{self, GroupBy, Range};
use crate::web::extract::{ApiUser, SessionUser};
use crate::web::views::usage::{
    form_dates, presets, table, usage_charts, DayColumn, Legend, MemberBar, Preset, TableRow,
};
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

pub async fn usage_page(
    session: SessionUser,
    state: web::Data<AppState>,
    q: web::Query<UsageQuery>,
) -> Result<HttpResponse, PageError> {
    let t = now();
    // A range that does not parse shows the default one, with the message.
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
    let charts = usage_charts(&report.rows, &daily, range);
    let (from_date, to_date) = form_dates(range);
    let page = UsagePage {
        chrome: Chrome::new(&session, "usage"),
        presets: presets(t, &from_date, &to_date),
        csv: format!("/usage.csv?from={from_date}&to={to_date}"),
        from_date,
        to_date,
        rows,
        total,
        bars: charts.bars,
        bars_height: charts.bars_height,
        days: charts.days,
        legend: charts.legend,
        max_day_hours: charts.max_day_hours,
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
