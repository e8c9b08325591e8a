//! What each activity sample adds to the ledger: a GPU's busy seconds (above
//! `busy_gpu_percent`, by the trapezoid between this sample and the last, so a gap —
//! Notebox restarted — counts as busy only when busy at both ends) and peak memory; a CPU
//! notebook's CPU-seconds used. Split by hour for reports.

use crate::db::usage::{OpenInterval, Sample};
use crate::db::Db;
use crate::gpu::telemetry::Snapshot;

/// How a sample is turned into ledger figures.
#[derive(Debug, Clone, Copy)]
pub struct Accounting {
    /// At or above this utilization a GPU is busy.
    pub busy_gpu_percent: u32,
    /// Seconds between two samples, normally.
    pub sample_interval: f64,
}

impl Accounting {
    /// The figures this sample adds to each open interval (pure). `cpu_percent` is a
    /// notebook's CPU use at this sample (percent of one core).
    pub fn samples(
        &self,
        open: Vec<OpenInterval>,
        snapshot: &Snapshot,
        at_ms: i64,
        cpu_percent: impl Fn(&str) -> Option<f64>,
    ) -> Vec<Sample> {
        let interval = self.sample_interval;
        // Longer than this between two samples is a gap (Notebox was down): it counts as
        // busy only when busy at both ends, and not at all without an earlier sample.
        let gap = 3.0 * interval + 2.0;
        open.into_iter()
            .map(|i| {
                let since_ms = i.sampled_at_ms.unwrap_or(i.started_at * 1000).min(at_ms);
                let elapsed = (at_ms - since_ms) as f64 / 1000.0;
                let (busy, busy_seconds, memory) = match &i.gpu_uuid {
                    Some(uuid) => {
                        let gpu = snapshot.gpus.iter().find(|g| &g.uuid == uuid);
                        let busy = gpu.is_some_and(|g| {
                            g.utilization_percent.unwrap_or(0) >= self.busy_gpu_percent
                        });
                        let busy_seconds = if elapsed <= gap {
                            let ends =
                                f64::from(u8::from(busy)) + f64::from(u8::from(i.sampled_busy));
                            elapsed * ends / 2.0
                        } else if busy && i.sampled_busy && i.sampled_at_ms.is_some() {
                            elapsed
                        } else {
                            0.0
                        };
                        (busy, busy_seconds, gpu.map_or(0, |g| g.memory_used_mib))
                    }
                    None => {
                        let cpu = cpu_percent(&i.notebook_id).unwrap_or(0.0);
                        // CPU time is only known for the last sampling interval.
                        (cpu > 0.0, cpu / 100.0 * elapsed.min(2.0 * interval), 0)
                    }
                };
                Sample {
                    interval_id: i.id,
                    at_ms,
                    busy,
                    busy_by_hour: split_by_hour(since_ms, at_ms, busy_seconds),
                    memory_mib: memory,
                }
            })
            .collect()
    }

    /// Adds this sample to every open usage interval, in one transaction.
    pub async fn record(
        &self,
        db: &Db,
        snapshot: &Snapshot,
        cpu_percent: impl Fn(&str) -> Option<f64>,
    ) {
        let open = match db.call(|c| crate::db::usage::open_intervals(c)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "usage accounting cannot read the ledger");
                return;
            }
        };
        if open.is_empty() {
            return;
        }
        let samples = self.samples(open, snapshot, crate::clock::now_ms(), cpu_percent);
        if let Err(e) = db
            .call(move |c| crate::db::usage::record(c, &samples))
            .await
        {
            // A sample is a side effect: on a full disk it is skipped (logged once a
            // minute), and the pages reading the ledger keep working.
            crate::disk::log_skipped_write("usage samples", &e, e.is_disk_full());
        }
    }
}

/// Spreads `seconds` over the hours between two instants (Unix ms), in proportion.
fn split_by_hour(from_ms: i64, to_ms: i64, seconds: f64) -> Vec<(i64, f64)> {
    const HOUR_MS: i64 = 3_600_000;
    if seconds <= 0.0 {
        return Vec::new();
    }
    if to_ms <= from_ms {
        return vec![(to_ms.div_euclid(HOUR_MS), seconds)];
    }
    let span = (to_ms - from_ms) as f64;
    let mut out = Vec::new();
    let mut start = from_ms;
    while start < to_ms {
        let hour = start.div_euclid(HOUR_MS);
        let end = ((hour + 1) * HOUR_MS).min(to_ms);
        out.push((hour, seconds * (end - start) as f64 / span));
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_is_spread_over_the_hours_it_covers() {
        assert_eq!(split_by_hour(0, 1000, 1.0), vec![(0, 1.0)]);
        let h = 3_600_000;
        let parts = split_by_hour(h - 1000, h + 3000, 4.0);
        assert_eq!(parts, vec![(0, 1.0), (1, 3.0)]);
        assert!(split_by_hour(0, 1000, 0.0).is_empty());
    }
}
