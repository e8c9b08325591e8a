//! The activity sampler and the idle policy: every `notebooks.activity_interval` it reads
//! each running notebook's kernels and terminals (Jupyter's API), container CPU (its
//! cgroup, else Docker's stats) and GPUs (telemetry), feeds the tracker, then warns about
//! and reclaims idle notebooks by their machine type's policy. A reclaim is a stop: files
//! stay, GPUs are released in the same transaction and the queue advances at once.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use futures_util::StreamExt;

use crate::activity::{GpuReading, Policy, Reading, Status};
use crate::config::Reclaim;
use crate::db::gpus as gq;
use crate::db::notebooks::{self as q, RunningNotebook};
use crate::db::now;
use crate::model::{DesiredState, NotebookState};
use crate::webhook::{Event, EventKind, EventNotebook};

use super::notebooks::rfc3339;
use super::Runtime;

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

/// A reclaim on behalf of a queued notebook.
struct Beneficiary {
    id: String,
    owner: String,
    name: String,
}

fn gpu_list(indices: &[u32]) -> String {
    let names: Vec<String> = indices.iter().map(|i| i.to_string()).collect();
    match names.len() {
        1 => format!("GPU {}", names[0]),
        _ => format!("GPUs {}", names.join(", ")),
    }
}

impl Runtime {
    /// The idle policy in force for a notebook.
    pub fn idle_policy(&self, machine_id: &str, exempt: bool) -> Policy {
        let config = self.config();
        let machine = config.machine(machine_id);
        Policy {
            // A machine type removed from the config: never reclaimed (nobody chose a
            // timeout for it).
            idle_timeout: machine.and_then(|m| m.idle_timeout()),
            reclaim: machine.map_or(Reclaim::Always, |m| m.reclaim()),
            exempt,
            warning: config.notebooks.idle_warning,
        }
    }

    /// The activity of a running notebook, as the API and pages show it.
    pub fn activity_status(&self, id: &str, machine_id: &str, exempt: bool) -> Option<Status> {
        self.activity()
            .status(id, self.idle_policy(machine_id, exempt), now())
    }

    /// Runs until the process ends: sample, apply the idle policy, wait.
    pub async fn run_activity_sampler(self) {
        let interval = self.config().notebooks.activity_interval;
        let mut cpu_sources: HashMap<String, CpuSource> = HashMap::new();
        for pass in 0u64.. {
            // A fixed rate: a slow pass (Jupyter slow to answer) does not push the next.
            let next = tokio::time::Instant::now() + interval;
            self.sample_activity(&mut cpu_sources, pass % TERMINALS_EVERY == 0)
                .await;
            self.apply_idle_policy().await;
            // A notebook that joins the GPU queue gets an answer at once, not next tick.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    _ = self.inner.activity_wake.notified() => self.apply_idle_policy().await,
                }
            }
        }
    }

    async fn sample_activity(
        &self,
        cpu_sources: &mut HashMap<String, CpuSource>,
        count_terminals: bool,
    ) {
        let running = match self
            .db()
            .call(|c| Ok((q::running(c)?, gq::by_notebook(c)?)))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "activity sampler cannot read notebooks");
                return;
            }
        };
        let (notebooks, held) = running;
        let ids: HashSet<&str> = notebooks.iter().map(|n| n.id.as_str()).collect();
        self.activity().retain(&ids);
        cpu_sources.retain(|container, _| {
            notebooks
                .iter()
                .any(|n| n.container_id.as_deref() == Some(container.as_str()))
        });
        let docker = self.docker().await.ok();
        // Sources for containers seen for the first time (one inspect each, then cached).
        for nb in &notebooks {
            let Some(container) = nb.container_id.as_deref() else {
                continue;
            };
            if cpu_sources.contains_key(container) {
                continue;
            }
            let Some(docker) = docker.as_ref() else {
                continue;
            };
            let pid = docker
                .inspect(container, &self.config().docker.network)
                .await
                .ok()
                .and_then(|s| s.pid);
            let source = pid.and_then(cpu_source_of_pid).unwrap_or(CpuSource::Docker);
            tracing::debug!(notebook = %nb.id, ?source, "container CPU source");
            cpu_sources.insert(container.to_string(), source);
        }
        let snapshot = self.gpus().snapshot();
        // Every GPU the notebook holds; one the telemetry does not list reads as unknown.
        let gpu_readings = |nb: &RunningNotebook| -> Vec<GpuReading> {
            held.get(&nb.id)
                .map(|mine| {
                    mine.iter()
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
                })
                .unwrap_or_default()
        };
        let jobs: Vec<_> = notebooks
            .iter()
            .map(|nb| {
                let source = nb
                    .container_id
                    .as_deref()
                    .and_then(|c| cpu_sources.get(c))
                    .cloned();
                (nb.clone(), source, gpu_readings(nb))
            })
            .collect();
        let readings: Vec<(String, Reading)> = futures_util::stream::iter(jobs)
            .map(|(nb, source, gpus)| {
                let docker = docker.clone();
                async move {
                    let reading = self
                        .read_notebook(&nb, source, docker, gpus, count_terminals)
                        .await;
                    (nb.id, reading)
                }
            })
            .buffer_unordered(SAMPLE_CONCURRENCY)
            .collect()
            .await;
        for (id, reading) in readings {
            self.activity().observe(&id, reading);
        }
        self.account_usage(&snapshot).await;
    }

    /// Adds this sample to every open usage interval: a GPU's busy seconds (above
    /// `busy_gpu_percent`, by the trapezoid between this sample and the last, so a gap —
    /// Notebox restarted — counts as busy only when busy at both ends) and peak memory; a
    /// CPU notebook's CPU-seconds used. Split by hour for reports.
    async fn account_usage(&self, snapshot: &crate::gpu::telemetry::Snapshot) {
        let open = match self
            .db()
            .call(|c| crate::db::usage::open_intervals(c))
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "usage accounting cannot read the ledger");
                return;
            }
        };
        if open.is_empty() {
            return;
        }
        let at_ms = now_ms();
        let threshold = self.config().notebooks.busy_gpu_percent;
        let interval = self.config().notebooks.activity_interval.as_secs_f64();
        // Longer than this between two samples is a gap (Notebox was down): it counts as
        // busy only when busy at both ends, and not at all without an earlier sample.
        let gap = 3.0 * interval + 2.0;
        let samples: Vec<crate::db::usage::Sample> = open
            .into_iter()
            .map(|i| {
                let since_ms = i.sampled_at_ms.unwrap_or(i.started_at * 1000).min(at_ms);
                let elapsed = (at_ms - since_ms) as f64 / 1000.0;
                let (busy, busy_seconds, memory) = match &i.gpu_uuid {
                    Some(uuid) => {
                        let gpu = snapshot.gpus.iter().find(|g| &g.uuid == uuid);
                        let busy =
                            gpu.is_some_and(|g| g.utilization_percent.unwrap_or(0) >= threshold);
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
                        let cpu = self.activity().cpu_percent(&i.notebook_id).unwrap_or(0.0);
                        // CPU time is only known for the last sampling interval.
                        (cpu > 0.0, cpu / 100.0 * elapsed.min(2.0 * interval), 0)
                    }
                };
                crate::db::usage::Sample {
                    interval_id: i.id,
                    at_ms,
                    busy,
                    busy_by_hour: split_by_hour(since_ms, at_ms, busy_seconds),
                    memory_mib: memory,
                }
            })
            .collect();
        let recorded = self
            .db()
            .call(move |c| {
                let tx = c.transaction()?;
                crate::db::usage::record(&tx, &samples)?;
                tx.commit()?;
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "cannot record usage");
        }
    }

    async fn read_notebook(
        &self,
        nb: &RunningNotebook,
        cpu: Option<CpuSource>,
        docker: Option<super::docker::DockerEngine>,
        gpus: Vec<GpuReading>,
        count_terminals: bool,
    ) -> Reading {
        let probe = &self.inner.probe;
        // A notebook adopted from before Notebox knew container addresses: ask Docker.
        let ip = match nb.container_ip.clone() {
            Some(ip) => Some(ip),
            None => self.container_ip(&nb.id).await,
        };
        let base = super::spec::base_url(&nb.id, nb.path_key.as_deref());
        let (kernels, terminals) = match ip.as_deref() {
            Some(ip) => {
                let terminals = async {
                    if count_terminals {
                        probe.terminal_count(ip, &base, &nb.jupyter_token).await
                    } else {
                        Err("not this time".to_string())
                    }
                };
                let (k, t) = tokio::join!(probe.kernels(ip, &base, &nb.jupyter_token), terminals);
                (
                    k.map_err(
                        |e| tracing::debug!(notebook = %nb.id, error = %e, "cannot read kernels"),
                    )
                    .ok(),
                    t.ok(),
                )
            }
            None => (None, None),
        };
        let cpu_usage_ns = match (cpu, nb.container_id.as_deref(), docker) {
            (Some(CpuSource::Docker), Some(container), Some(docker)) => {
                // A slow Docker must not hold up the whole pass.
                tokio::time::timeout(
                    std::time::Duration::from_secs(3),
                    docker.cpu_usage_ns(container),
                )
                .await
                .ok()
                .and_then(|r| r.ok())
                .flatten()
            }
            (Some(source), _, _) => read_cpu(&source),
            _ => None,
        };
        Reading {
            at_ms: now_ms(),
            kernels,
            terminals,
            cpu_usage_ns,
            gpus,
        }
    }

    /// Warns about notebooks near their reclaim, reclaims those past it (policy
    /// `always`), and makes way for the head of the GPU queue with idle `when_needed`
    /// notebooks, oldest idle first — only when that is enough to start it.
    async fn apply_idle_policy(&self) {
        let loaded = self
            .db()
            .call(|c| {
                Ok((
                    q::running(c)?,
                    gq::by_notebook(c)?,
                    gq::queue(c)?,
                    gq::leaving(c)?,
                ))
            })
            .await;
        let (notebooks, held, queue, leaving) = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "idle policy cannot read notebooks");
                return;
            }
        };
        let t = now();
        let mut candidates: Vec<(RunningNotebook, Status)> = Vec::new();
        for nb in notebooks {
            let policy = self.idle_policy(&nb.machine_id, nb.idle_exempt);
            let Some(status) = self.activity().status(&nb.id, policy, t) else {
                continue;
            };
            if status.warning
                && !status.due
                && self.activity().mark_warned(&nb.id, status.idle_since)
            {
                self.notify(
                    EventKind::IdleWarning,
                    &nb.id,
                    &nb.owner,
                    &nb.name,
                    format!(
                        "idle {}: {}; it stops in {} unless someone keeps it running",
                        crate::activity::describe_duration(status.idle_seconds),
                        status.idle_signals(),
                        crate::activity::describe_duration(status.reclaim_at.unwrap_or(t) - t)
                    ),
                    status.reclaim_at,
                );
            }
            if status.due {
                self.reclaim(&nb, &status, None).await;
                continue;
            }
            let holds = held.get(&nb.id).is_some_and(|g| !g.is_empty());
            if status.reclaimable && status.policy.reclaim == Reclaim::WhenNeeded && holds {
                candidates.push((nb, status));
            }
        }
        let Some((head, wanted)) = queue.first().cloned() else {
            return;
        };
        if candidates.is_empty() {
            return;
        }
        // GPUs of notebooks already on their way down (reclaimed a moment ago, or stopped by
        // their member) count as free: nobody is stopped for a GPU that is coming free.
        let total = self.gpus().uuids().len() as i64;
        let taken: i64 = held.values().map(|g| g.len() as i64).sum();
        let needed = wanted - (total - taken + leaving).max(0);
        if needed <= 0 {
            return; // the reconciler admits it on its own
        }
        candidates.sort_by_key(|(_, s)| s.idle_since);
        let mut freed = 0;
        let mut chosen = Vec::new();
        for (nb, status) in candidates {
            if freed >= needed {
                break;
            }
            freed += held.get(&nb.id).map_or(0, |g| g.len() as i64);
            chosen.push((nb, status));
        }
        if freed < needed {
            return; // nobody is stopped for nothing
        }
        let head_row = {
            let id = head.clone();
            self.db().call(move |c| q::by_id(c, &id)).await
        };
        let Ok(Some(head_row)) = head_row else { return };
        let beneficiary = Beneficiary {
            id: head_row.id,
            owner: head_row.owner,
            name: head_row.name,
        };
        for (nb, status) in chosen {
            self.reclaim(&nb, &status, Some(&beneficiary)).await;
        }
    }

    /// Stops an idle notebook, saying why on its page (and the beneficiary's).
    async fn reclaim(
        &self,
        nb: &RunningNotebook,
        status: &Status,
        for_queued: Option<&Beneficiary>,
    ) {
        // The member may have acted since the status was computed: look again.
        let policy = self.idle_policy(&nb.machine_id, nb.idle_exempt);
        let still_idle = self
            .activity()
            .status(&nb.id, policy, now())
            .is_some_and(|s| match for_queued {
                None => s.due,
                Some(_) => s.reclaimable,
            });
        if !still_idle || !self.try_claim(&nb.id) {
            return; // busy again, or the reconciler is at it; next time
        }
        let idle = crate::activity::describe_duration(status.idle_seconds);
        let signals = status.idle_signals();
        let gpus: Vec<u32> = status.gpus.iter().map(|g| g.index).collect();
        let reason =
            match for_queued {
                None => format!("Stopped after {idle} idle: {signals}"),
                Some(b) => {
                    format!(
                "Stopped after {idle} idle to free {} for {}’s queued notebook “{}”: {signals}",
                if gpus.is_empty() { "its GPUs".to_string() } else { gpu_list(&gpus) },
                b.owner,
                b.name
            )
                }
            };
        let notice = for_queued.map(|_| {
            format!(
                "{} came free for this notebook when {}’s “{}” was stopped after {idle} idle.",
                if gpus.is_empty() {
                    "GPUs".to_string()
                } else {
                    gpu_list(&gpus)
                },
                nb.owner,
                nb.name
            )
        });
        let (id, stopping, beneficiary) = (
            nb.id.clone(),
            format!("Stopping after {idle} idle: {signals}"),
            for_queued.map(|b| b.id.clone()),
        );
        let moved = self
            .db()
            .call(move |c| {
                let tx = c.transaction()?;
                let moved = q::transition(
                    &tx,
                    &id,
                    &[NotebookState::Running],
                    NotebookState::Stopping,
                    &stopping,
                    Some(DesiredState::Stopped),
                )?;
                if moved {
                    if let (Some(b), Some(n)) = (beneficiary.as_deref(), notice.as_deref()) {
                        q::set_notice(&tx, b, Some(n))?;
                    }
                }
                tx.commit()?;
                Ok(moved)
            })
            .await;
        match moved {
            Ok(true) => {}
            Ok(false) => {
                self.release(&nb.id);
                return; // stopped or restarted meanwhile
            }
            Err(e) => {
                tracing::warn!(notebook = %nb.id, error = %e, "cannot start a reclaim");
                self.release(&nb.id);
                return;
            }
        }
        tracing::info!(notebook = %nb.id, owner = %nb.owner, %reason, "reclaiming an idle notebook");
        self.activity().forget(&nb.id);
        self.notify(
            EventKind::Reclaimed,
            &nb.id,
            &nb.owner,
            &nb.name,
            reason.clone(),
            None,
        );
        let rt = self.clone();
        let id = nb.id.clone();
        let containers: Vec<String> = nb.container_id.iter().cloned().collect();
        tokio::spawn(async move {
            match (
                rt.docker().await,
                rt.db()
                    .call({
                        let id = id.clone();
                        move |c| q::by_id(c, &id)
                    })
                    .await,
            ) {
                (Ok(docker), Ok(Some(row))) => {
                    rt.stop_op(&row, &containers, &docker, Some(reason)).await;
                }
                (Err(e), _) => {
                    tracing::warn!(notebook = %id, error = %e, "reclaim waits for Docker")
                }
                (_, Err(e)) => {
                    tracing::warn!(notebook = %id, error = %e, "reclaim cannot read the notebook")
                }
                (_, Ok(None)) => {}
            }
            // The reconciler finishes whatever is left (and admits the queue).
            rt.release(&id);
        });
    }

    /// Sends an event to the webhook, if there is one.
    pub(super) fn notify(
        &self,
        kind: EventKind,
        id: &str,
        member: &str,
        name: &str,
        reason: String,
        reclaim_at: Option<i64>,
    ) {
        if !self.webhook().is_enabled() {
            return;
        }
        let what = match kind {
            EventKind::IdleWarning => "will be stopped soon",
            EventKind::Reclaimed => "was stopped",
            EventKind::QueuedStarted => "got its GPUs and is starting",
        };
        self.webhook().send(Event {
            event: kind,
            at: rfc3339(now()),
            notebook: EventNotebook {
                id: id.to_string(),
                name: name.to_string(),
                url: format!("/notebooks/{id}"),
            },
            member: member.to_string(),
            // Chat servers read `text` as markup: a notebook named "<!channel>" or
            // "[Notebox login](http://evil.example)" must not ping or phish a channel.
            text: crate::webhook::chat_text(&format!(
                "Notebox: {member}’s notebook “{name}” {what}: {reason}"
            )),
            reason,
            reclaim_at: reclaim_at.map(rfc3339),
        });
    }
}

/// The API's and pages' view of a status.
pub fn activity_view(status: &Status, now: i64) -> crate::model::wire::Activity {
    use crate::model::wire::{Activity, IdlePolicy, KernelActivity, MemberActionView};
    Activity {
        busy: status.busy,
        idle_since: rfc3339(status.idle_since),
        idle_seconds: status.idle_seconds,
        reclaim_at: status.reclaim_at.map(rfc3339),
        reclaim_in_seconds: status.reclaim_at.map(|at| (at - now).max(0)),
        warning: status.warning,
        reclaimable: status.reclaimable,
        summary: status.summary(now),
        keeping_alive: status.keeping_alive.clone(),
        kernels: status
            .kernels
            .iter()
            .map(|k| KernelActivity {
                id: k.id.clone(),
                name: k.name.clone(),
                state: k.state.clone(),
                since: rfc3339(k.since),
                seconds: (now - k.since).max(0),
            })
            .collect(),
        kernels_total: status.kernels_total,
        kernels_stale: status.kernels_stale,
        terminals: status.terminals,
        gpu_utilization_percent: status
            .gpus
            .iter()
            .filter_map(|g| g.utilization_percent)
            .max(),
        gpu_memory_used_mib: (!status.gpus.is_empty())
            .then(|| status.gpus.iter().map(|g| g.memory_used_mib).sum()),
        cpu_percent: status.cpu_percent.map(|c| (c * 10.0).round() / 10.0),
        last_member_action: status.last_action.map(|(a, at)| MemberActionView {
            kind: a.as_str(),
            description: a.describe(),
            at: rfc3339(at),
            seconds_ago: (now - at).max(0),
        }),
        policy: IdlePolicy {
            idle_timeout_seconds: status.policy.idle_timeout.map(|t| t.as_secs()),
            reclaim: status.policy.reclaim.as_str(),
            exempt: status.policy.exempt,
        },
        sampled_at: status.sampled_at.map(rfc3339),
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_lists_and_chat_text_read_well() {
        assert_eq!(gpu_list(&[0]), "GPU 0");
        assert_eq!(gpu_list(&[1, 3]), "GPUs 1, 3");
    }

    #[test]
    fn busy_time_is_spread_over_the_hours_it_covers() {
        assert_eq!(split_by_hour(0, 1000, 1.0), vec![(0, 1.0)]);
        let h = 3_600_000;
        let parts = split_by_hour(h - 1000, h + 3000, 4.0);
        assert_eq!(parts, vec![(0, 1.0), (1, 3.0)]);
        assert!(split_by_hour(0, 1000, 0.0).is_empty());
    }

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
