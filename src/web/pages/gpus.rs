//! The GPU map: every GPU, who holds it, how hard it works.

use actix_web::{web, HttpResponse};
use askama::Template;

use crate::error::{ApiError, PageError};
use crate::model::wire::{self, Gpu as GpuView};
use crate::web::extract::{ApiUser, SessionUser};
use crate::web::views::{relative_time, Chrome};
use crate::web::AppState;

pub async fn gpus_api(
    _caller: ApiUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let gpus = state.gpu_map.gpu_overview().await?;
    let snapshot_at = state.gpu_map.telemetry().snapshot().at;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(wire::GpuList {
            gpus,
            backend: state.gpu_map.telemetry().inventory().backend(),
            sampled_at: crate::clock::rfc3339(snapshot_at),
            sample_interval_seconds: state.gpu_map.telemetry().interval().as_secs_f64(),
        }))
}

pub struct GpuCard {
    pub g: GpuView,
    pub memory_percent: u64,
    pub since: String,
    pub sparkline: String,
    pub outside: usize,
}

/// Points of a 120×32 polyline for utilization history.
pub fn sparkline(history: &[u32]) -> String {
    let n = history.len().max(2) - 1;
    history
        .iter()
        .enumerate()
        .map(|(i, u)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * 120.0 / n as f64,
                32.0 - (*u).min(100) as f64 * 0.32
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Template)]
#[template(path = "gpus.html")]
struct GpusPage {
    chrome: Chrome,
    cards: Vec<GpuCard>,
    backend: &'static str,
    free: usize,
    queue: Vec<crate::notebooks::gpu_map::QueueEntryView>,
    rule: String,
    fair_share: bool,
    /// "alice: GPU 0, GPU 1 · Thu 10 Dec 14:00 – 18:00"
    bookings: Vec<String>,
}

pub async fn gpus_page(
    session: SessionUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let gpus = state.gpu_map.gpu_overview().await?;
    let free = gpus.iter().filter(|g| g.holder.is_none()).count();
    let cards: Vec<GpuCard> = gpus
        .into_iter()
        .map(|g| GpuCard {
            memory_percent: (g.memory_used_mib * 100)
                .checked_div(g.memory_total_mib)
                .unwrap_or(0),
            since: g
                .holder
                .as_ref()
                .map(|h| relative_time(h.since_ts))
                .unwrap_or_default(),
            sparkline: sparkline(&g.history),
            outside: g.processes.iter().filter(|p| p.notebook.is_none()).count(),
            g,
        })
        .collect();
    let (queue, rule) = state.gpu_map.queue().await?;
    let tz =
        crate::config::time_zone(&state.config.jobs.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let index: std::collections::HashMap<&str, u32> = cards
        .iter()
        .map(|c: &GpuCard| (c.g.uuid.as_str(), c.g.index))
        .collect();
    let bookings = state
        .gpu_map
        .bookings_ahead()
        .await?
        .iter()
        .map(|r| {
            let gpus: Vec<String> = r
                .gpu_uuids
                .iter()
                .map(|u| {
                    index
                        .get(u.as_str())
                        .map_or(u.clone(), |i| format!("GPU {i}"))
                })
                .collect();
            format!(
                "{}: {} · {} – {}",
                r.member,
                gpus.join(", "),
                crate::sharing::reservations::local_time(r.starts_at, &tz),
                crate::sharing::reservations::local_time(r.ends_at, &tz)
            )
        })
        .collect();
    let page = GpusPage {
        chrome: Chrome::new(&session, "gpus"),
        cards,
        backend: state.gpu_map.telemetry().inventory().backend(),
        free,
        fair_share: queue.iter().any(|q| q.usage_hours.is_some()),
        queue,
        rule,
        bookings,
    };
    super::html(actix_web::http::StatusCode::OK, page)
}
