//! The GPU map: telemetry joined with who holds each GPU and which notebook each GPU
//! process belongs to.

use std::collections::HashMap;

use serde::Serialize;

use std::sync::Arc;

use crate::clock::rfc3339;
use crate::config::Config;
use crate::db::gpus as gq;
use crate::db::notebooks as q;
use crate::db::Db;
use crate::gpu::telemetry::Telemetry;
use crate::idle::{policy_for, Tracker};

pub use crate::model::wire::{Gpu as GpuView, GpuProcess as ProcessView, Holder};

/// A summary for the create form: how many GPUs exist and how many are free now.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GpuCounts {
    pub total: usize,
    pub free: usize,
    pub queued: usize,
}

/// The container a host process runs in, from its cgroup (`.../docker-<id>.scope` or
/// `/docker/<id>`).
fn container_of_pid(pid: u32) -> Option<String> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroup.lines().find_map(|line| {
        let path = line.rsplit(':').next()?;
        path.split('/').find_map(|part| {
            let part = part.strip_prefix("docker-").unwrap_or(part);
            let part = part.strip_suffix(".scope").unwrap_or(part);
            (part.len() == 64 && part.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| part.to_string())
        })
    })
}

/// The GPU map: telemetry joined with the allocations.
#[derive(Clone)]
pub struct GpuMap {
    db: Db,
    config: Arc<Config>,
    telemetry: Telemetry,
    tracker: Arc<Tracker>,
}

#[derive(Debug, thiserror::Error)]
pub enum GpuMapError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

impl GpuMap {
    pub fn new(db: Db, config: Arc<Config>, telemetry: Telemetry, tracker: Arc<Tracker>) -> GpuMap {
        GpuMap {
            db,
            config,
            telemetry,
            tracker,
        }
    }

    /// The telemetry behind the map (backend, sampling interval, latest snapshot).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub async fn gpu_overview(&self) -> Result<Vec<GpuView>, GpuMapError> {
        let snapshot = self.telemetry.snapshot();
        let (allocations, notebooks) = self
            .db
            .call(|c| Ok((gq::all(c)?, q::list_active(c)?)))
            .await?;
        let by_container: HashMap<String, String> = notebooks
            .iter()
            .filter_map(|n| n.container_id.clone().map(|c| (c, n.id.clone())))
            .collect();
        let holders: HashMap<String, Holder> = allocations
            .into_iter()
            .map(|a| {
                let status = notebooks
                    .iter()
                    .find(|n| n.id == a.notebook_id)
                    .and_then(|n| {
                        let policy = policy_for(&self.config, &n.machine_id, n.idle_exempt);
                        self.tracker.status(&n.id, policy, crate::clock::now())
                    });
                (
                    a.gpu_uuid.clone(),
                    Holder {
                        notebook: a.notebook_id,
                        notebook_name: a.notebook_name,
                        user: a.owner,
                        since: rfc3339(a.since),
                        since_ts: a.since,
                        busy: status.as_ref().map(|s| s.is_busy()),
                        idle_seconds: status.as_ref().map(|s| s.idle_seconds),
                    },
                )
            })
            .collect();
        // /proc reads are cheap but blocking; a handful per GPU.
        let pids: Vec<u32> = snapshot
            .gpus
            .iter()
            .flat_map(|g| g.processes.iter().map(|p| p.pid))
            .collect();
        let containers: HashMap<u32, Option<String>> = tokio::task::spawn_blocking(move || {
            pids.into_iter()
                .map(|pid| (pid, container_of_pid(pid)))
                .collect()
        })
        .await
        .unwrap_or_default();
        Ok(snapshot
            .gpus
            .iter()
            .map(|g| GpuView {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                memory_total_mib: g.memory_total_mib,
                memory_used_mib: g.memory_used_mib,
                utilization_percent: g.utilization_percent,
                temperature_c: g.temperature_c,
                holder: holders.get(&g.uuid).cloned(),
                processes: g
                    .processes
                    .iter()
                    .map(|p| ProcessView {
                        pid: p.pid,
                        used_memory_mib: p.used_memory_mib,
                        notebook: containers
                            .get(&p.pid)
                            .cloned()
                            .flatten()
                            .and_then(|c| by_container.get(&c).cloned()),
                    })
                    .collect(),
                history: snapshot
                    .history
                    .get(&g.uuid)
                    .map(|h| h.iter().copied().collect())
                    .unwrap_or_default(),
            })
            .collect())
    }

    pub async fn gpu_counts(&self) -> Result<GpuCounts, GpuMapError> {
        let total = self.telemetry.uuids().len();
        let (held, queued) = self
            .db
            .call(|c| Ok((gq::all(c)?.len(), gq::queue(c)?.len())))
            .await?;
        Ok(GpuCounts {
            total,
            free: total.saturating_sub(held),
            queued,
        })
    }

    /// The GPU queue as it is served, each entry with why it stands there, and the rule
    /// in words.
    pub async fn queue(&self) -> Result<(Vec<QueueEntryView>, String), GpuMapError> {
        use crate::sharing::fair_share::{explain, QueueOrder};
        let order = QueueOrder::from_config(&self.config);
        let now = crate::clock::now();
        let order_in = order.clone();
        let waiting = self
            .db
            .call(move |c| crate::db::placement::queue_in_order(c, &order_in))
            .await?;
        let rule = match &order {
            QueueOrder::Fifo => "First come, first served.".to_string(),
            QueueOrder::FairShare(fs) => format!(
                "Fair share: who used fewer GPU-hours recently goes first (use {} ago counts half, divided by the member's weight); after waiting {} a notebook or job goes ahead of all that waited less.",
                crate::idle::describe_duration(fs.half_life),
                crate::idle::describe_duration(fs.max_wait)
            ),
        };
        let entries = waiting
            .iter()
            .enumerate()
            .map(|(i, w)| QueueEntryView {
                position: i + 1,
                owner: w.owner.clone(),
                gpus: w.gpu_count,
                waiting: crate::idle::describe_duration(now - w.queued_at),
                usage_hours: order.is_fair_share().then_some(w.usage_hours),
                weight: w.weight,
                why: explain(&waiting, i, &order, now),
            })
            .collect();
        Ok((entries, rule))
    }

    /// Bookings that still matter (active or ahead), by start: for the GPU page and the
    /// create form ("GPU 1 is booked by alice from 14:00").
    pub async fn bookings_ahead(
        &self,
    ) -> Result<Vec<crate::db::reservations::Reservation>, GpuMapError> {
        let now = crate::clock::now();
        Ok(self
            .db
            .call(move |c| crate::db::reservations::between(c, now, now + 14 * 86400))
            .await?)
    }
}

/// One waiting notebook or job on the GPUs page.
#[derive(Debug, Clone, Serialize)]
pub struct QueueEntryView {
    pub position: usize,
    pub owner: String,
    pub gpus: i64,
    pub waiting: String,
    /// Recent (decayed) GPU-hours, with fair share.
    pub usage_hours: Option<f64>,
    pub weight: f64,
    pub why: String,
}
