//! GPU bookings: the calendar page (`/reservations`), its form, the member's iCalendar
//! feed, and the API (`/api/v1/reservations`). Each handler: who is asking, one call to
//! `Reservations`, a page or JSON.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::clock::Timestamp;
use crate::db::reservations::Reservation;
use crate::error::{ApiError, PageError, WebError};
use crate::model::wire;
use crate::sharing::reservations::{self as rs, BookRequest};
use crate::web::extract::{ApiUser, SessionUser};
use crate::web::pages::{html, see_other};
use crate::web::views::Chrome;
use crate::web::AppState;

/// The longest range one listing may ask for.
const MAX_RANGE: i64 = 92 * 86400;
/// Days the calendar shows.
const DAYS: i64 = 7;

fn time_zone(state: &AppState) -> jiff::tz::TimeZone {
    crate::config::time_zone(&state.config.jobs.time_zone).unwrap_or(jiff::tz::TimeZone::UTC)
}

#[derive(Deserialize)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/reservations?from=&to=` (RFC 3339; default: from now to two weeks ahead).
pub async fn list_api(
    _caller: ApiUser,
    state: web::Data<AppState>,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let now = crate::clock::now();
    let parse = |v: &Option<String>, name: &str, default: Timestamp| match v {
        None => Ok(default),
        Some(t) => crate::clock::parse_rfc3339(t).ok_or_else(|| {
            WebError::bad_request(format!(
                "'{name}' must be an RFC 3339 time such as 2026-12-10T14:00:00Z"
            ))
        }),
    };
    let from = parse(&query.from, "from", now)?;
    let to = parse(&query.to, "to", from + 14 * 86400)?;
    if to <= from || to - from > MAX_RANGE {
        return Err(
            WebError::bad_request("'to' must come after 'from', at most 92 days later").into(),
        );
    }
    let reservations = state.reservations.between(from, to).await?;
    Ok(HttpResponse::Ok().json(wire::ReservationList {
        reservations: reservations.iter().map(|r| rs::wire(r, now)).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookBody {
    gpus: i64,
    gpu_name: Option<String>,
    start: String,
    end: String,
    member: Option<String>,
    #[serde(default)]
    purpose: String,
}

/// `POST /api/v1/reservations`: the booking (201) with the GPUs held for it.
pub async fn book_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    body: web::Json<BookBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let time = |v: &str, name: &str| {
        crate::clock::parse_rfc3339(v).ok_or_else(|| {
            WebError::bad_request(format!(
                "\"{name}\" must be an RFC 3339 time such as 2026-12-10T14:00:00Z"
            ))
        })
    };
    let request = BookRequest {
        gpus: body.gpus,
        gpu_name: body.gpu_name,
        starts_at: time(&body.start, "start")?,
        ends_at: time(&body.end, "end")?,
        member: body.member,
        purpose: body.purpose,
    };
    let booked = state.reservations.book(&caller.user, request).await?;
    state.reconciler.wake();
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/v1/reservations/{}", booked.id)))
        .json(rs::wire(&booked, crate::clock::now())))
}

/// `GET /api/v1/reservations/{id}`.
pub async fn get_api(
    _caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = state.reservations.get(&path).await?;
    Ok(HttpResponse::Ok().json(rs::wire(&r, crate::clock::now())))
}

/// `DELETE /api/v1/reservations/{id}`.
pub async fn cancel_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.reservations.cancel(&caller.user, &path).await?;
    state.reconciler.wake();
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/v1/reservations/calendar.ics`: the caller's bookings as an iCalendar feed.
pub async fn ical(caller: ApiUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let feed = state
        .reservations
        .ical(&caller.user, &state.config.public_url)
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/calendar; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .body(feed))
}

/// One booking drawn on a GPU's row of the calendar.
pub struct Block {
    pub left: f64,
    pub width: f64,
    pub member: String,
    pub mine: bool,
    /// A maintenance booking (nobody's).
    pub maintenance: bool,
    pub label: String,
}

pub struct GpuRow {
    pub index: usize,
    pub name: String,
    pub blocks: Vec<Block>,
    /// "free now until Thu 10 Dec 14:00", "booked now by alice until 18:00", "free".
    pub now_text: String,
}

pub struct Listed {
    pub r: wire::Reservation,
    pub when: String,
    pub can_cancel: bool,
    pub gpus_text: String,
}

#[derive(Template)]
#[template(path = "reservations.html")]
struct CalendarPage {
    chrome: Chrome,
    days: Vec<String>,
    rows: Vec<GpuRow>,
    /// Where "now" is on the grid, in percent; None when not on it.
    now_left: Option<f64>,
    /// Where each day after the first begins, in percent.
    day_lines: Vec<String>,
    listed: Vec<Listed>,
    models: Vec<String>,
    form: BookForm,
    limits: String,
    zone: String,
    week: i64,
    error: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
pub struct BookForm {
    #[serde(default)]
    pub gpus: String,
    #[serde(default)]
    pub gpu_name: String,
    #[serde(default)]
    pub start: String,
    #[serde(default)]
    pub end: String,
    #[serde(default)]
    pub member: String,
    #[serde(default)]
    pub purpose: String,
}

#[derive(Deserialize)]
pub struct CalendarQuery {
    /// Weeks from this one (0 = the next 7 days from today).
    week: Option<i64>,
    done: Option<String>,
}

/// `GET /reservations`: GPUs × the next 7 days, who booked what, the booking form.
pub async fn calendar_page(
    session: SessionUser,
    state: web::Data<AppState>,
    query: web::Query<CalendarQuery>,
) -> Result<HttpResponse, PageError> {
    let week = query.week.unwrap_or(0).clamp(-8, 8);
    let notice = match query.done.as_deref() {
        Some("booked") => Some("Booked. The GPUs are listed below and in the calendar.".into()),
        Some("cancelled") => Some("The booking is cancelled.".into()),
        _ => None,
    };
    let tz = time_zone(&state);
    let start = crate::clock::now() + 3600;
    let form = BookForm {
        gpus: "1".into(),
        start: rs::form_time(start - start % 3600, &tz),
        end: rs::form_time(start - start % 3600 + 4 * 3600, &tz),
        ..BookForm::default()
    };
    render(&session, &state, week, form, None, notice, StatusCode::OK).await
}

/// `POST /reservations`: books from the form.
pub async fn book_form(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<BookForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let tz = time_zone(&state);
    let request = (|| {
        let gpus = form
            .gpus
            .trim()
            .parse::<i64>()
            .map_err(|_| "How many GPUs: write a whole number such as 2.".to_string())?;
        let start =
            rs::parse_time(&form.start, &tz).ok_or("Start: choose a date and time.".to_string())?;
        let end =
            rs::parse_time(&form.end, &tz).ok_or("End: choose a date and time.".to_string())?;
        Ok::<_, String>(BookRequest {
            gpus,
            gpu_name: Some(form.gpu_name.clone()).filter(|n| !n.is_empty()),
            starts_at: start,
            ends_at: end,
            member: Some(form.member.clone()).filter(|m| !m.trim().is_empty()),
            purpose: form.purpose.clone(),
        })
    })();
    let outcome = match request {
        Ok(request) => state
            .reservations
            .book(&session.user, request)
            .await
            .map_err(WebError::from),
        Err(m) => Err(WebError::bad_request(m)),
    };
    match outcome {
        Ok(_) => {
            state.reconciler.wake();
            Ok(see_other("/reservations?done=booked"))
        }
        Err(e) if e.status.is_client_error() => {
            render(&session, &state, 0, form, Some(e.message), None, e.status).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /reservations/{id}/cancel`.
pub async fn cancel_form(
    session: SessionUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    state.reservations.cancel(&session.user, &path).await?;
    state.reconciler.wake();
    Ok(see_other("/reservations?done=cancelled"))
}

async fn render(
    session: &SessionUser,
    state: &AppState,
    week: i64,
    form: BookForm,
    error: Option<String>,
    notice: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let tz = time_zone(state);
    let now = crate::clock::now();
    let day0 = jiff::Timestamp::from_second(now)
        .ok()
        .and_then(|t| t.to_zoned(tz.clone()).start_of_day().ok())
        .map_or(now - now % 86400, |z| z.timestamp().as_second())
        + week * DAYS * 86400;
    let span = (day0, day0 + DAYS * 86400);
    let bookings = state
        .reservations
        .between(span.0.min(now), span.1.max(now + 14 * 86400))
        .await?;
    let inventory = state.reservations.inventory();
    let rows = grid_rows(&inventory, &bookings, span, now, session.user.id, &tz);
    let days = (0..DAYS)
        .map(|d| {
            rs::local_time(day0 + d * 86400 + 43200, &tz)
                .chars()
                .take(10)
                .collect()
        })
        .collect();
    let listed = bookings
        .iter()
        .filter(|r| r.ends_at > now - 86400)
        .map(|r| Listed {
            r: rs::wire(r, now),
            when: when(r, &tz),
            can_cancel: r.ends_at > now
                && (session.user.is_admin || r.user_id == Some(session.user.id)),
            gpus_text: gpu_names(&inventory, &r.gpu_uuids),
        })
        .collect();
    let mut models: Vec<String> = inventory.iter().map(|(_, n)| n.clone()).collect();
    models.sort();
    models.dedup();
    let l = &state.config.reservations;
    let limits = format!(
        "A member may book up to {} at a time, at most {} ahead{}; admins book without these limits, for anyone or for maintenance.",
        crate::idle::describe_duration(l.max_length.as_secs() as i64),
        crate::idle::describe_duration(l.max_ahead.as_secs() as i64),
        if l.max_gpu_hours_per_week > 0.0 {
            format!(", and {} GPU-hours a week", l.max_gpu_hours_per_week)
        } else {
            String::new()
        }
    );
    let now_left = (span.0 <= now && now < span.1)
        .then(|| (now - span.0) as f64 * 100.0 / (span.1 - span.0) as f64);
    let page = CalendarPage {
        chrome: Chrome::new(session, "reservations"),
        days,
        rows,
        now_left,
        day_lines: (1..DAYS)
            .map(|d| format!("{:.3}", d as f64 * 100.0 / DAYS as f64))
            .collect(),
        listed,
        models,
        form,
        limits,
        zone: tz.iana_name().unwrap_or("UTC").to_string(),
        week,
        error,
        notice,
    };
    html(status, page)
}

/// "Thu 10 Dec 14:00 – 18:00" (the day once when it ends the same day).
fn when(r: &Reservation, tz: &jiff::tz::TimeZone) -> String {
    let (from, to) = (
        rs::local_time(r.starts_at, tz),
        rs::local_time(r.ends_at, tz),
    );
    match (from.rsplit_once(' '), to.rsplit_once(' ')) {
        (Some((day_a, _)), Some((day_b, hm))) if day_a == day_b => format!("{from} – {hm}"),
        _ => format!("{from} – {to}"),
    }
}

/// "GPU 0, GPU 1".
fn gpu_names(inventory: &[(String, String)], uuids: &[String]) -> String {
    let names: Vec<String> = uuids
        .iter()
        .map(|u| match inventory.iter().position(|(id, _)| id == u) {
            Some(i) => format!("GPU {i}"),
            None => u.clone(),
        })
        .collect();
    names.join(", ")
}

fn grid_rows(
    inventory: &[(String, String)],
    bookings: &[Reservation],
    (from, to): (Timestamp, Timestamp),
    now: Timestamp,
    me: i64,
    tz: &jiff::tz::TimeZone,
) -> Vec<GpuRow> {
    let width = (to - from) as f64;
    inventory
        .iter()
        .enumerate()
        .map(|(index, (uuid, name))| {
            let mine: Vec<&Reservation> = bookings
                .iter()
                .filter(|r| r.gpu_uuids.contains(uuid))
                .collect();
            let blocks = mine
                .iter()
                .filter(|r| r.ends_at > from && r.starts_at < to)
                .map(|r| {
                    let (s, e) = (r.starts_at.max(from), r.ends_at.min(to));
                    Block {
                        left: (s - from) as f64 * 100.0 / width,
                        width: ((e - s) as f64 * 100.0 / width).max(0.4),
                        member: r.member.clone(),
                        mine: r.user_id == Some(me),
                        maintenance: r.user_id.is_none(),
                        label: format!(
                            "{}: {} – {}{}",
                            r.member,
                            rs::local_time(r.starts_at, tz),
                            rs::local_time(r.ends_at, tz),
                            if r.purpose.is_empty() {
                                String::new()
                            } else {
                                format!(" · {}", r.purpose)
                            }
                        ),
                    }
                })
                .collect();
            let now_text = match mine.iter().find(|r| r.is_active(now)) {
                Some(r) => format!(
                    "booked now by {} until {}",
                    r.member,
                    rs::local_time(r.ends_at, tz)
                ),
                None => match mine
                    .iter()
                    .filter(|r| r.starts_at > now)
                    .map(|r| r.starts_at)
                    .min()
                {
                    Some(t) => format!("free now, booked from {}", rs::local_time(t, tz)),
                    None => "free of bookings for the next two weeks".into(),
                },
            };
            GpuRow {
                index,
                name: name.clone(),
                blocks,
                now_text,
            }
        })
        .collect()
}
