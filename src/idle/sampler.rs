//! The activity sampler: every `notebooks.activity_interval` it reads each running
//! notebook's kernels and terminals (Jupyter's API), container CPU (its cgroup, else the
//! engine's stats) and GPUs (telemetry), feeds the tracker, and adds the sample to the
//! usage ledger.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::config::Config;
use crate::containers::Engine;
use crate::db::gpus as gq;
use crate::db::notebooks::{self as q, RunningNotebook};
use crate::db::Db;
use crate::gpu::telemetry::Telemetry;
use crate::jupyter::JupyterProbe;
use crate::usage::accounting::Accounting;

use super::signals::GpuReading;
use super::tracker::{Reading, Tracker};
use super::IdleParts;

/// Notebooks sampled at once.
const SAMPLE_CONCURRENCY: usize = 8;
/// Terminals are counted every this many samples (the count is shown, it keeps nothing
/// alive): each request costs the notebook's Jupyter about 1.5 ms of CPU.
const TERMINALS_EVERY: u64 = 6;

/// Where a container's CPU time is read.
#[derive(Debug, Clone)]
enum CpuSource {
    /// cgroup v2 `cpu.stat` (usage_usec).
    CpuStat(PathBuf),
    /// cgroup v1 `cpuacct.usage` (nanoseconds).
    CpuAcct(PathBuf),
    /// Docker's stats API (when the cgroup is not visible from here).
    Docker,
}

/// The cgroup CPU counter of a host process, v1 or v2.
fn cpu_source_of_pid(pid: u32) -> Option<CpuSource> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if path == "/" {
            continue;
        }
        if controllers.split(',').any(|c| c == "cpuacct") {
            for mount in ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"] {
                let file = PathBuf::from(format!("/sys/fs/cgroup/{mount}{path}/cpuacct.usage"));
                if file.exists() {
                    return Some(CpuSource::CpuAcct(file));
                }
            }
        }
        if controllers.is_empty() {
            let file = PathBuf::from(format!("/sys/fs/cgroup{path}/cpu.stat"));
            if file.exists() {
                return Some(CpuSource::CpuStat(file));
            }
        }
    }
    None
}

fn read_cpu(source: &CpuSource) -> Option<u64> {
    match source {
        CpuSource::CpuAcct(file) => std::fs::read_to_string(file).ok()?.trim().parse().ok(),
        CpuSource::CpuStat(file) => std::fs::read_to_string(file)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|usec| usec * 1000),
        CpuSource::Docker => None,
    }
}

/// Reads every running notebook's signals into the tracker.
pub struct Sampler {
    db: Db,
    config: Arc<Config>,
    engine: Engine,
    telemetry: Telemetry,
    tracker: Arc<Tracker>,
    probe: JupyterProbe,
    accounting: Accounting,
    /// Where each container's CPU time is read (found once per container).
    cpu_sources: HashMap<String, CpuSource>,
}

impl Sampler {
    pub fn new(parts: &IdleParts) -> Sampler {
        Sampler {
            db: parts.db.clone(),
            config: parts.config.clone(),
            engine: parts.engine.clone(),
            telemetry: parts.telemetry.clone(),
            tracker: parts.tracker.clone(),
            probe: JupyterProbe::default(),
            accounting: Accounting {
                busy_gpu_percent: parts.config.notebooks.busy_gpu_percent,
                sample_interval: parts.config.notebooks.activity_interval.as_secs_f64(),
            },
            cpu_sources: HashMap::new(),
        }
    }

    /// One pass: every running notebook read (a few at once), then the ledger. Terminals
    /// are counted every `TERMINALS_EVERY` passes.
    pub async fn sample(&mut self, pass: u64) {
        let loaded = self
            .db
            .call(|c| Ok((q::running(c)?, gq::by_notebook(c)?)))
            .await;
        let (notebooks, held) = match loaded {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "activity sampler cannot read notebooks");
                return;
            }
        };
        let ids: HashSet<&str> = notebooks.iter().map(|n| n.id.as_str()).collect();
        self.tracker.retain(&ids);
        self.find_cpu_sources(&notebooks).await;
        let snapshot = self.telemetry.snapshot();
        let jobs: Vec<_> = notebooks
            .iter()
            .map(|nb| {
                let source = nb
                    .container_id
                    .as_deref()
                    .and_then(|c| self.cpu_sources.get(c))
                    .cloned();
                let gpus = gpu_readings(held.get(&nb.id).map(Vec::as_slice), &snapshot);
                (nb.clone(), source, gpus)
            })
            .collect();
        let count_terminals = pass.is_multiple_of(TERMINALS_EVERY);
        let this = &*self;
        let readings: Vec<(String, Reading)> = futures_util::stream::iter(jobs)
            .map(|(nb, source, gpus)| async move {
                let reading = this.read_notebook(&nb, source, gpus, count_terminals).await;
                (nb.id, reading)
            })
            .buffer_unordered(SAMPLE_CONCURRENCY)
            .collect()
            .await;
        for (id, reading) in readings {
            self.tracker.observe(&id, reading);
        }
        let tracker = self.tracker.clone();
        self.accounting
            .record(&self.db, &snapshot, |id| tracker.cpu_percent(id))
            .await;
    }

    /// Where the CPU time of containers seen for the first time is read (one inspect
    /// each, then remembered); containers gone are forgotten.
    async fn find_cpu_sources(&mut self, notebooks: &[RunningNotebook]) {
        self.cpu_sources.retain(|container, _| {
            notebooks
                .iter()
                .any(|n| n.container_id.as_deref() == Some(container.as_str()))
        });
        for nb in notebooks {
            let Some(container) = nb.container_id.as_deref() else {
                continue;
            };
            if self.cpu_sources.contains_key(container) {
                continue;
            }
            let pid = match self
                .engine
                .inspect(container, &self.config.docker.network)
                .await
            {
                Ok(status) => status.pid,
                // The engine is not answering: asked again next pass.
                Err(crate::containers::EngineError::Unreachable(_)) => continue,
                Err(_) => None,
            };
            let source = pid.and_then(cpu_source_of_pid).unwrap_or(CpuSource::Docker);
            tracing::debug!(notebook = %nb.id, ?source, "container CPU source");
            self.cpu_sources.insert(container.to_string(), source);
        }
    }

    async fn read_notebook(
        &self,
        nb: &RunningNotebook,
        cpu: Option<CpuSource>,
        gpus: Vec<GpuReading>,
        count_terminals: bool,
    ) -> Reading {
        // A notebook adopted from before Notebox knew container addresses: ask the engine.
        let ip = match nb.container_ip.clone() {
            Some(ip) => Some(ip),
            None => {
                crate::jupyter::locate(&*self.engine, &self.db, &self.config.docker.network, &nb.id)
                    .await
            }
        };
        let (kernels, terminals) = match ip.as_deref() {
            Some(ip) => self.read_jupyter(nb, ip, count_terminals).await,
            None => (None, None),
        };
        let cpu_usage_ns = match (cpu, nb.container_id.as_deref()) {
            (Some(CpuSource::Docker), Some(container)) => {
                // A slow engine must not hold up the whole pass.
                tokio::time::timeout(
                    std::time::Duration::from_secs(3),
                    self.engine.cpu_usage_ns(container),
                )
                .await
                .ok()
                .and_then(|r| r.ok())
                .flatten()
            }
            (Some(source), _) => read_cpu(&source),
            _ => None,
        };
        Reading {
            at_ms: crate::clock::now_ms(),
            kernels,
            terminals,
            cpu_usage_ns,
            gpus,
        }
    }

    /// The notebook's kernels, and its terminals when they are counted this pass.
    async fn read_jupyter(
        &self,
        nb: &RunningNotebook,
        ip: &str,
        count_terminals: bool,
    ) -> (Option<crate::jupyter::Kernels>, Option<usize>) {
        let base = crate::jupyter::base_url(&nb.id, nb.path_key.as_deref());
        let probe = &self.probe;
        let terminals = async {
            if count_terminals {
                probe.terminal_count(ip, &base, &nb.jupyter_token).await
            } else {
                Err("not this time".to_string())
            }
        };
        let (k, t) = tokio::join!(probe.kernels(ip, &base, &nb.jupyter_token), terminals);
        let kernels = k
            .map_err(|e| tracing::debug!(notebook = %nb.id, error = %e, "cannot read kernels"))
            .ok();
        (kernels, t.ok())
    }
}

/// Every GPU a notebook holds, at this snapshot; one the telemetry does not list reads as
/// unknown.
fn gpu_readings(
    held: Option<&[String]>,
    snapshot: &crate::gpu::telemetry::Snapshot,
) -> Vec<GpuReading> {
    held.unwrap_or_default()
        .iter()
        .map(
            |uuid| match snapshot.gpus.iter().find(|g| &g.uuid == uuid) {
                Some(g) => GpuReading {
                    index: g.index,
                    utilization_percent: g.utilization_percent,
                    memory_used_mib: g.memory_used_mib,
                },
                None => GpuReading {
                    index: u32::MAX,
                    utilization_percent: None,
                    memory_used_mib: 0,
                },
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_counters_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v2 = dir.path().join("cpu.stat");
        std::fs::write(&v2, "usage_usec 1500\nuser_usec 1000\n").expect("write");
        assert_eq!(read_cpu(&CpuSource::CpuStat(v2)), Some(1_500_000));
        let v1 = dir.path().join("cpuacct.usage");
        std::fs::write(&v1, "123456789\n").expect("write");
        assert_eq!(read_cpu(&CpuSource::CpuAcct(v1)), Some(123_456_789));
    }
}
