//! The idle policy applied: warns about notebooks near their reclaim, reclaims those past
//! it (policy `always`), and makes way for the head of the GPU queue with idle
//! `when_needed` notebooks, oldest idle first — only when that is enough to start it. A
//! reclaim is a stop (by the `Reclaimer`): files stay, GPUs are released and the queue
//! advances at once.

use std::sync::Arc;

use crate::config::{Config, Reclaim as ReclaimPolicy};
use crate::db::gpus as gq;
use crate::db::notebooks::{self as q, RunningNotebook};
use crate::db::Db;
use crate::gpu::telemetry::Telemetry;
use crate::platform::webhook::{EventKind, Happening, Webhook};

use super::policy::{describe_duration, policy_for, Status};
use super::tracker::Tracker;
use super::{IdleParts, ReclaimOrder, Reclaimer};

/// An idle `when_needed` notebook that could make way for the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub notebook_id: String,
    /// Unix seconds.
    pub idle_since: i64,
    /// GPUs it holds.
    pub gpus: i64,
}

/// Which idle notebooks to stop so that the head of the queue, wanting `wanted` GPUs, can
/// start when `free` are free (or on their way): the longest idle first, only as many as
/// needed, and none when even all of them would not be enough (nobody is stopped for
/// nothing) or when none is needed.
pub fn make_way(mut candidates: Vec<Candidate>, wanted: i64, free: i64) -> Vec<Candidate> {
    let needed = wanted - free.max(0);
    if needed <= 0 {
        return Vec::new(); // the reconciler admits it on its own
    }
    candidates.sort_by_key(|c| c.idle_since);
    let mut freed = 0;
    let mut chosen = Vec::new();
    for c in candidates {
        if freed >= needed {
            break;
        }
        freed += c.gpus;
        chosen.push(c);
    }
    if freed < needed {
        return Vec::new();
    }
    chosen
}

/// "GPU 0", "GPUs 1, 3".
fn gpu_list(indices: &[u32]) -> String {
    let names: Vec<String> = indices.iter().map(|i| i.to_string()).collect();
    match names.len() {
        1 => format!("GPU {}", names[0]),
        _ => format!("GPUs {}", names.join(", ")),
    }
}

/// A reclaim on behalf of a queued notebook.
struct Beneficiary {
    id: String,
    owner: String,
    name: String,
}

/// Applies the idle policy to every running notebook.
pub struct Reclaim {
    db: Db,
    config: Arc<Config>,
    telemetry: Telemetry,
    tracker: Arc<Tracker>,
    webhook: Webhook,
    reclaimer: Arc<dyn Reclaimer>,
}

/// What one look at the running notebooks needs.
struct Running {
    notebooks: Vec<RunningNotebook>,
    held: std::collections::HashMap<String, Vec<String>>,
    queue: Vec<(String, i64)>,
    leaving: i64,
}

impl Reclaim {
    pub fn new(parts: &IdleParts) -> Reclaim {
        Reclaim {
            db: parts.db.clone(),
            config: parts.config.clone(),
            telemetry: parts.telemetry.clone(),
            tracker: parts.tracker.clone(),
            webhook: parts.webhook.clone(),
            reclaimer: parts.reclaimer.clone(),
        }
    }

    fn status(&self, nb: &RunningNotebook, now: i64) -> Option<Status> {
        let policy = policy_for(&self.config, &nb.machine_id, nb.idle_exempt);
        self.tracker.status(&nb.id, policy, now)
    }

    /// Warns, reclaims what is due, and makes way for the queue.
    pub async fn apply(&self) {
        let loaded = self
            .db
            .call(|c| {
                Ok(Running {
                    notebooks: q::running(c)?,
                    held: gq::by_notebook(c)?,
                    queue: gq::queue(c)?,
                    leaving: gq::leaving(c)?,
                })
            })
            .await;
        let running = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "idle policy cannot read notebooks");
                return;
            }
        };
        let t = crate::clock::now();
        let mut candidates = Vec::new();
        for nb in &running.notebooks {
            let Some(status) = self.status(nb, t) else {
                continue;
            };
            if status.is_warning() && !status.is_due() {
                self.warn(nb, &status, t);
            }
            if status.is_due() {
                self.reclaim(nb, &status, None).await;
                continue;
            }
            let gpus = running.held.get(&nb.id).map_or(0, |g| g.len() as i64);
            if status.is_reclaimable()
                && status.policy.reclaim == ReclaimPolicy::WhenNeeded
                && gpus > 0
            {
                candidates.push(Candidate {
                    notebook_id: nb.id.clone(),
                    idle_since: status.idle_since,
                    gpus,
                });
            }
        }
        self.make_way_for_the_queue(&running, candidates, t).await;
    }

    /// Tells the webhook, once per idle period, that a notebook will be stopped soon.
    fn warn(&self, nb: &RunningNotebook, status: &Status, t: i64) {
        if !self.tracker.mark_warned(&nb.id, status.idle_since) {
            return;
        }
        self.webhook.tell(Happening {
            kind: EventKind::IdleWarning,
            notebook_id: &nb.id,
            member: &nb.owner,
            notebook_name: &nb.name,
            reason: format!(
                "idle {}: {}; it stops in {} unless someone keeps it running",
                describe_duration(status.idle_seconds),
                status.idle_signals(),
                describe_duration(status.reclaim_at.unwrap_or(t) - t)
            ),
            reclaim_at: status.reclaim_at,
        });
    }

    /// Stops idle `when_needed` notebooks for the head of the queue, when that is enough.
    async fn make_way_for_the_queue(&self, running: &Running, candidates: Vec<Candidate>, t: i64) {
        let Some((head, wanted)) = running.queue.first().cloned() else {
            return;
        };
        if candidates.is_empty() {
            return;
        }
        // GPUs of notebooks already on their way down (reclaimed a moment ago, or stopped
        // by their member) count as free: nobody is stopped for a GPU that is coming free.
        let total = self.telemetry.uuids().len() as i64;
        let taken: i64 = running.held.values().map(|g| g.len() as i64).sum();
        let chosen = make_way(candidates, wanted, total - taken + running.leaving);
        if chosen.is_empty() {
            return;
        }
        let Ok(Some(head_row)) = self.db.call(move |c| q::by_id(c, &head)).await else {
            return;
        };
        let beneficiary = Beneficiary {
            id: head_row.id,
            owner: head_row.owner,
            name: head_row.name,
        };
        for c in chosen {
            let nb = running.notebooks.iter().find(|n| n.id == c.notebook_id);
            if let Some((nb, status)) = nb.and_then(|nb| Some((nb, self.status(nb, t)?))) {
                self.reclaim(nb, &status, Some(&beneficiary)).await;
            }
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
        let still_idle = self
            .status(nb, crate::clock::now())
            .is_some_and(|s| match for_queued {
                None => s.is_due(),
                Some(_) => s.is_reclaimable(),
            });
        if !still_idle {
            return; // busy again; next time
        }
        let order = reclaim_order(nb, status, for_queued);
        let reason = order.stopped.clone();
        if !self.reclaimer.reclaim(order).await {
            return;
        }
        tracing::info!(notebook = %nb.id, owner = %nb.owner, %reason, "reclaiming an idle notebook");
        self.tracker.forget(&nb.id);
        self.webhook.tell(Happening {
            kind: EventKind::Reclaimed,
            notebook_id: &nb.id,
            member: &nb.owner,
            notebook_name: &nb.name,
            reason,
            reclaim_at: None,
        });
    }
}

/// The words of a reclaim: the notebook's page while it stops and once stopped, and the
/// queued notebook's notice.
fn reclaim_order(
    nb: &RunningNotebook,
    status: &Status,
    for_queued: Option<&Beneficiary>,
) -> ReclaimOrder {
    let idle = describe_duration(status.idle_seconds);
    let signals = status.idle_signals();
    let gpus: Vec<u32> = status.gpus.iter().map(|g| g.index).collect();
    let freed = |none: &str| {
        if gpus.is_empty() {
            none.to_string()
        } else {
            gpu_list(&gpus)
        }
    };
    let stopped = match for_queued {
        None => format!("Stopped after {idle} idle: {signals}"),
        Some(b) => format!(
            "Stopped after {idle} idle to free {} for {}’s queued notebook “{}”: {signals}",
            freed("its GPUs"),
            b.owner,
            b.name
        ),
    };
    let beneficiary = for_queued.map(|b| {
        let notice = format!(
            "{} came free for this notebook when {}’s “{}” was stopped after {idle} idle.",
            freed("GPUs"),
            nb.owner,
            nb.name
        );
        (b.id.clone(), notice)
    });
    ReclaimOrder {
        notebook_id: nb.id.clone(),
        container_id: nb.container_id.clone(),
        stopping: format!("Stopping after {idle} idle: {signals}"),
        stopped,
        beneficiary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, idle_since: i64, gpus: i64) -> Candidate {
        Candidate {
            notebook_id: id.into(),
            idle_since,
            gpus,
        }
    }

    fn ids(chosen: &[Candidate]) -> Vec<&str> {
        chosen.iter().map(|c| c.notebook_id.as_str()).collect()
    }

    #[test]
    fn gpu_lists_read_well() {
        assert_eq!(gpu_list(&[0]), "GPU 0");
        assert_eq!(gpu_list(&[1, 3]), "GPUs 1, 3");
    }

    #[test]
    fn the_longest_idle_make_way_and_only_as_many_as_needed() {
        let idle = vec![
            candidate("recent", 300, 1),
            candidate("oldest", 100, 1),
            candidate("older", 200, 2),
        ];
        // Two wanted, none free: the oldest (1 GPU) and the next (2 GPUs) are enough.
        assert_eq!(ids(&make_way(idle.clone(), 2, 0)), ["oldest", "older"]);
        // One free already: the oldest alone is enough.
        assert_eq!(ids(&make_way(idle.clone(), 2, 1)), ["oldest"]);
        // Enough free (or coming free): nobody is stopped.
        assert!(make_way(idle.clone(), 2, 2).is_empty());
        // Not enough even with all of them: nobody is stopped for nothing.
        assert!(make_way(idle, 8, 0).is_empty());
        assert!(make_way(Vec::new(), 1, 0).is_empty());
    }
}
