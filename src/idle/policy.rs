//! The idle policy: a notebook's activity turned into a stage (busy, idle, warned,
//! reclaimable, due), a reclaim time, and the words the pages and the webhook use.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Reclaim};

use super::signals::{GpuReading, KernelState, MemberAction};

/// The idle policy in force for a notebook: its machine type's, unless an admin exempted
/// it. A machine type removed from the config is never reclaimed (nobody chose a timeout
/// for it).
pub fn policy_for(config: &Config, machine_id: &str, exempt: bool) -> Policy {
    let machine = config.machine(machine_id);
    Policy {
        idle_timeout: machine.and_then(|m| m.idle_timeout()),
        reclaim: machine.map_or(Reclaim::Always, |m| m.reclaim()),
        exempt,
        warning: config.notebooks.idle_warning,
    }
}

/// The idle policy for one notebook: its machine type's, unless an admin exempted it.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// None: never reclaimed.
    pub idle_timeout: Option<Duration>,
    pub reclaim: Reclaim,
    pub exempt: bool,
    /// How long ahead of a reclaim to warn (at most half the timeout).
    pub warning: Duration,
}

impl Policy {
    pub(super) fn timeout_secs(&self) -> Option<i64> {
        if self.exempt {
            return None;
        }
        self.idle_timeout.map(|t| t.as_secs().max(1) as i64)
    }

    pub(super) fn warning_secs(&self) -> i64 {
        let timeout = self.timeout_secs().unwrap_or(0);
        (self.warning.as_secs() as i64).min(timeout / 2)
    }
}

/// Where a notebook stands on the way from busy to reclaimed. Nothing past `Idle` is
/// reached on missing information (before the first sample, while Jupyter does not
/// answer, while a GPU's utilization cannot be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdleStage {
    /// A signal is busy.
    Busy,
    Idle,
    /// The reclaim (policy `always`) is near: pages and the webhook warn.
    Warning,
    /// Idle past the timeout: with `when_needed`, it may be stopped for a queued notebook.
    Reclaimable,
    /// The reclaim (policy `always`) is due now.
    Due,
}

/// What a notebook is doing now and what will happen to it.
#[derive(Debug, Clone)]
pub struct Status {
    pub stage: IdleStage,
    /// Unix seconds; now while busy.
    pub idle_since: i64,
    pub idle_seconds: i64,
    /// When it will be stopped (policy `always`), unless someone acts first.
    pub reclaim_at: Option<i64>,
    pub policy: Policy,
    /// The first `MAX_TRACKED_KERNELS` kernels (shared with the tracker: a status of a
    /// notebook with a thousand kernels copies none).
    pub kernels: Arc<[KernelState]>,
    /// How many kernels Jupyter listed, those past the cap included.
    pub kernels_total: usize,
    pub kernels_stale: bool,
    pub terminals: usize,
    pub cpu_percent: Option<f64>,
    pub gpus: Vec<GpuReading>,
    pub last_action: Option<(MemberAction, i64)>,
    pub sampled_at: Option<i64>,
    /// What keeps it alive right now, in words ("kernel busy for 42 s", "GPU 0 at 90 %").
    pub keeping_alive: Vec<String>,
}

/// "42 s", "12 min", "3 h 5 min", "2 days".
pub fn describe_duration(secs: impl std::borrow::Borrow<i64>) -> String {
    let secs = (*secs.borrow()).max(0);
    match secs {
        0..=119 => format!("{secs} s"),
        120..=3599 => format!("{} min", secs / 60),
        3600..=86_399 if secs % 3600 < 60 => format!("{} h", secs / 3600),
        3600..=86_399 => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
        86_400..=172_799 => "1 day".into(),
        _ => format!("{} days", secs / 86_400),
    }
}

impl Status {
    pub fn is_busy(&self) -> bool {
        self.stage == IdleStage::Busy
    }

    /// The reclaim is near or due: pages and the webhook warn.
    pub fn is_warning(&self) -> bool {
        matches!(self.stage, IdleStage::Warning | IdleStage::Due)
    }

    /// Idle past its timeout (whatever the reclaim policy).
    pub fn is_reclaimable(&self) -> bool {
        matches!(self.stage, IdleStage::Reclaimable | IdleStage::Due)
    }

    pub fn is_due(&self) -> bool {
        self.stage == IdleStage::Due
    }

    /// Why it is idle, for the reclaim message: "no kernel running, GPU 0 at 0 %, CPU 0 %".
    pub fn idle_signals(&self) -> String {
        let mut parts = Vec::new();
        let idle_kernels = self.kernels_total;
        parts.push(match idle_kernels {
            0 => "no kernel running".to_string(),
            1 => "1 kernel idle".to_string(),
            n => format!("{n} kernels idle"),
        });
        for g in &self.gpus {
            match g.utilization_percent {
                Some(u) => parts.push(format!("GPU {} at {u} %", g.index)),
                None => parts.push("GPU utilization unknown".to_string()),
            }
        }
        if let Some(cpu) = self.cpu_percent {
            parts.push(format!("CPU {:.0} %", cpu));
        }
        parts.join(", ")
    }

    /// One line for lists: "busy: kernel busy for 42 s", "idle 25 min: stops in 5 min".
    pub fn summary(&self, now: i64) -> String {
        if self.is_busy() {
            return if self.keeping_alive.is_empty() {
                "busy".into()
            } else {
                format!("busy: {}", self.keeping_alive.join(", "))
            };
        }
        let idle = format!("idle {}", describe_duration(self.idle_seconds));
        if self.policy.exempt {
            return format!("{idle} · exempt from idle reclaim");
        }
        match (self.policy.timeout_secs(), self.policy.reclaim) {
            (None, _) => idle,
            (Some(_), Reclaim::Always) => match self.reclaim_at {
                Some(at) if at <= now => format!("{idle}: stopping now"),
                Some(at) => format!("{idle}: stops in {}", describe_duration(at - now)),
                None => idle,
            },
            (Some(_), Reclaim::WhenNeeded) if self.is_reclaimable() => {
                format!("{idle}: stops if another notebook queues for its GPUs")
            }
            (Some(t), Reclaim::WhenNeeded) => format!(
                "{idle}: after {} idle it gives its GPUs to a queued notebook",
                describe_duration(t)
            ),
        }
    }
}
