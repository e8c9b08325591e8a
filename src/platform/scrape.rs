//! What a `/metrics` scrape reads from the rest of Notebox: GPU telemetry joined with who
//! holds each GPU, notebooks by state, the queue, the usage ledger, the process.

use crate::db::{Db, DbError};
use crate::gpu::telemetry::Telemetry;
use crate::model::NotebookState;

use super::metrics::{GpuFigures, GpuLabels, Scrape};

/// Everything a scrape shows besides the counters `Metrics` keeps.
pub async fn scrape(
    db: &Db,
    telemetry: &Telemetry,
    reconciler_passes: u64,
) -> Result<Scrape, DbError> {
    let snapshot = telemetry.snapshot();
    let t = crate::clock::now();
    let (allocations, states, queue_len, oldest, members) = db
        .call(move |c| {
            let (queue_len, oldest) = crate::db::gpus::queue_summary(c)?;
            Ok((
                crate::db::gpus::all(c)?,
                crate::db::notebooks::count_by_state(c)?,
                queue_len,
                oldest,
                crate::db::usage::totals_by_member(c)?,
            ))
        })
        .await?;
    let mut notebooks_by_state: Vec<(String, i64)> = NotebookState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for (state, n) in states {
        if let Some(entry) = notebooks_by_state.iter_mut().find(|(s, _)| *s == state) {
            entry.1 = n;
        }
    }
    let gpus = snapshot
        .gpus
        .iter()
        .map(|g| {
            let holder = allocations.iter().find(|a| a.gpu_uuid == g.uuid);
            GpuFigures {
                labels: GpuLabels {
                    gpu: g.index.to_string(),
                    uuid: g.uuid.clone(),
                    name: g.name.clone(),
                    holder: holder.map(|a| a.owner.clone()).unwrap_or_default(),
                    notebook: holder.map(|a| a.notebook_id.clone()).unwrap_or_default(),
                },
                utilization_percent: g.utilization_percent.map(f64::from),
                memory_used_bytes: g.memory_used_mib as f64 * 1_048_576.0,
                memory_total_bytes: g.memory_total_mib as f64 * 1_048_576.0,
                temperature_c: g.temperature_c.map(f64::from),
            }
        })
        .collect();
    Ok(Scrape {
        gpus,
        notebooks_by_state,
        queue_length: queue_len,
        queue_oldest_wait_seconds: oldest.map_or(0.0, |q| (t - q).max(0) as f64),
        member_gpu_seconds: members,
        resident_memory_bytes: super::metrics::resident_memory_bytes(),
        reconciler_passes,
    })
}
