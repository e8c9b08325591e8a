//! What each running notebook is doing, from every signal Notebox has: its kernels and
//! terminals (Jupyter's API), its GPUs' utilization (exclusive, so the GPU's numbers are
//! the notebook's), its container's CPU, and what its member did through the proxy (ran
//! code, typed in a terminal, saved a file) — never the polling of an open browser tab.
//!
//! A notebook is busy while any signal is; otherwise it is idle since the last moment one
//! was. The idle policy (`Policy`) turns that into a reclaim time and a warning. Pure
//! bookkeeping in memory: the sampler (runtime) feeds it, the proxy reports actions, pages
//! and the API read it. Knows nothing of HTTP or Docker.
//!
//! A notebook's Jupyter is its member's program and may answer anything: the work per
//! sample is linear in its answer and the kernels kept are capped (`MAX_TRACKED_KERNELS`);
//! the one lock every request touches is held only to look up or swap a record, never
//! while a sample is compared or a status computed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::config::Reclaim;
use crate::jupyter::{Kernels, MAX_TRACKED_KERNELS};

use super::policy::{describe_duration, IdleStage, Policy, Status};
use super::signals::{GpuReading, KernelState, MemberAction};

/// One sample of a notebook's signals. `None` where a source did not answer.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub kernels: Option<Kernels>,
    pub terminals: Option<usize>,
    /// The container's cumulative CPU time.
    pub cpu_usage_ns: Option<u64>,
    pub gpus: Vec<GpuReading>,
}

/// Above these a GPU or the container counts as computing.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub gpu_percent: u32,
    /// Percent of one core.
    pub cpu_percent: u32,
}

/// A notebook's activity: what its member did (small, written by the proxy on every
/// action) and its last sample (replaced whole by the sampler, so a clone is a pointer
/// copy and nothing is compared while the tracker's lock is held).
#[derive(Debug, Clone)]
struct Record {
    /// When tracking began (the notebook started, or Notebox did): idle time never
    /// counts from before.
    tracked_since: i64,
    last_action: Option<(MemberAction, i64)>,
    /// The idle period (its start) a warning was already given for.
    warned_for: Option<i64>,
    sample: Arc<Sample>,
}

impl Record {
    fn new(now: i64) -> Record {
        Record {
            tracked_since: now,
            last_action: None,
            warned_for: None,
            sample: Arc::default(),
        }
    }
}

/// What the samples of a notebook found, as of the last one.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// The last instant a signal was busy.
    last_busy: Option<i64>,
    /// Whether the last sample found a signal busy.
    busy_now: bool,
    sampled_at: Option<i64>,
    kernels: KernelsSeen,
    /// A GPU it holds gave no utilization at the last sample.
    gpus_unknown: bool,
    terminals: usize,
    /// The previous CPU counter: (ns, Unix ms).
    cpu_counter: Option<(u64, i64)>,
    cpu_percent: Option<f64>,
    gpus: Vec<GpuReading>,
}

/// A notebook's kernels, as of the last sample.
#[derive(Debug, Clone, Default)]
struct KernelsSeen {
    /// At most `MAX_TRACKED_KERNELS`.
    list: Arc<[KernelState]>,
    /// How many kernels Jupyter listed, those past the cap included.
    total: usize,
    /// A kernel past the cap was busy.
    untracked_busy: bool,
    /// Jupyter did not answer at the last sample (the kernels shown are older).
    stale: bool,
}

impl KernelsSeen {
    fn any_busy(&self) -> bool {
        self.untracked_busy || self.list.iter().any(KernelState::is_busy)
    }
}

/// Every running notebook's activity record.
pub struct Tracker {
    records: Mutex<HashMap<String, Record>>,
    thresholds: Thresholds,
}

impl Tracker {
    pub fn new(thresholds: Thresholds) -> Tracker {
        Tracker {
            records: Mutex::new(HashMap::new()),
            thresholds,
        }
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Record>) -> T) -> Option<T> {
        // A poisoned lock only means a panic elsewhere mid-update: the data is still a map.
        let mut map = match self.records.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(f(&mut map))
    }

    /// The member did something: the idle clock starts again.
    pub fn member_acted(&self, notebook_id: &str, action: MemberAction, now: i64) {
        self.with(|map| {
            let record = match map.get_mut(notebook_id) {
                Some(r) => r,
                None => map
                    .entry(notebook_id.to_string())
                    .or_insert_with(|| Record::new(now)),
            };
            record.last_action = Some((action, now));
        });
    }

    /// Forgets notebooks that no longer run (their next start tracks afresh).
    pub fn retain(&self, running: &HashSet<&str>) {
        self.with(|map| map.retain(|id, _| running.contains(id.as_str())));
    }

    pub fn forget(&self, notebook_id: &str) {
        self.with(|map| map.remove(notebook_id));
    }

    /// Records one sample. The new sample is built from the last one outside the lock and
    /// swapped in under it; one sampler feeds the tracker, so two samples of a notebook
    /// are never observed at once.
    pub fn observe(&self, notebook_id: &str, reading: Reading) {
        let now = reading.at_ms.div_euclid(1000);
        let previous = self
            .with(|map| map.get(notebook_id).map(|r| r.sample.clone()))
            .flatten()
            .unwrap_or_default();
        let next = Arc::new(next_sample(&previous, reading, self.thresholds));
        self.with(|map| {
            map.entry(notebook_id.to_string())
                .or_insert_with(|| Record::new(now))
                .sample = next;
        });
    }

    /// The container's CPU use at the last sample (percent of one core).
    pub fn cpu_percent(&self, notebook_id: &str) -> Option<f64> {
        self.with(|map| map.get(notebook_id).and_then(|r| r.sample.cpu_percent))
            .flatten()
    }

    /// Marks that the warning for the idle period starting at `idle_since` was given;
    /// false when it already was.
    pub fn mark_warned(&self, notebook_id: &str, idle_since: i64) -> bool {
        self.with(|map| match map.get_mut(notebook_id) {
            Some(r) if r.warned_for != Some(idle_since) => {
                r.warned_for = Some(idle_since);
                true
            }
            _ => false,
        })
        .unwrap_or(false)
    }

    /// The notebook's status under `policy`, if it is tracked.
    pub fn status(&self, notebook_id: &str, policy: Policy, now: i64) -> Option<Status> {
        // A copy of the record (its sample is shared), read outside the lock.
        let record = self.with(|map| map.get(notebook_id).cloned()).flatten()?;
        Some(status_of(&record, policy, now, self.thresholds))
    }
}

/// The sample after `previous` given `reading`: linear in the kernels read (at most
/// `MAX_TRACKED_KERNELS` of them are compared).
fn next_sample(previous: &Sample, reading: Reading, t: Thresholds) -> Sample {
    let now = reading.at_ms.div_euclid(1000);
    let mut last_busy = previous.last_busy;
    let kernels = match reading.kernels {
        Some(read) => next_kernels(&previous.kernels, read, now, &mut last_busy),
        // Jupyter did not answer: what it said last still stands (a kernel seen busy is
        // not taken for idle because its server was slow to answer).
        None => KernelsSeen {
            stale: true,
            ..previous.kernels.clone()
        },
    };
    let terminals = reading.terminals.unwrap_or(previous.terminals);
    let (cpu_percent, cpu_counter) = match reading.cpu_usage_ns {
        Some(ns) => (
            cpu_percent_since(previous.cpu_counter, ns, reading.at_ms),
            Some((ns, reading.at_ms)),
        ),
        // No reading: no figure (an old one must not keep it busy, nor count as used).
        None => (None, None),
    };
    let busy = kernels.any_busy()
        || cpu_percent.is_some_and(|p| p >= f64::from(t.cpu_percent))
        || reading
            .gpus
            .iter()
            .any(|g| g.utilization_percent.unwrap_or(0) >= t.gpu_percent);
    if busy {
        last_busy = Some(now);
    }
    Sample {
        last_busy,
        busy_now: busy,
        sampled_at: Some(now),
        kernels,
        gpus_unknown: reading.gpus.iter().any(|g| g.utilization_percent.is_none()),
        terminals,
        cpu_counter,
        cpu_percent,
        gpus: reading.gpus,
    }
}

/// The kernels after `previous` given Jupyter's answer. A kernel that finished between
/// two samples counts as busy until its last message (moving `last_busy`).
fn next_kernels(
    previous: &KernelsSeen,
    read: Kernels,
    now: i64,
    last_busy: &mut Option<i64>,
) -> KernelsSeen {
    let before: HashMap<&str, &KernelState> =
        previous.list.iter().map(|k| (k.id.as_str(), k)).collect();
    let untracked_busy = read.untracked_busy
        || read
            .tracked
            .iter()
            .skip(MAX_TRACKED_KERNELS)
            .any(|k| k.execution_state.is_busy());
    let mut list = Vec::with_capacity(read.tracked.len().min(MAX_TRACKED_KERNELS));
    for k in read.tracked.into_iter().take(MAX_TRACKED_KERNELS) {
        let last_message = k.last_activity.map(|t| t.min(now));
        let since = match before.get(k.id.as_str()) {
            Some(p) if p.state == k.execution_state => p.since,
            // It finished between two samples: busy until its last message.
            Some(p) if p.is_busy() => {
                // (min/max, not clamp: a clock stepped back must not panic)
                let end = last_message.unwrap_or(now).max(p.since.min(now)).min(now);
                *last_busy = Some(last_busy.map_or(end, |b| b.max(end)));
                end
            }
            _ if k.execution_state.is_busy() => now,
            _ => last_message.unwrap_or(now),
        };
        list.push(KernelState {
            id: k.id,
            name: k.name,
            state: k.execution_state,
            since,
        });
    }
    let total = read.total.max(list.len());
    KernelsSeen {
        list: Arc::from(list),
        total,
        untracked_busy,
        stale: false,
    }
}

/// CPU use (percent of one core) between the previous counter and this one.
fn cpu_percent_since(previous: Option<(u64, i64)>, ns: u64, at_ms: i64) -> Option<f64> {
    match previous {
        Some((prev_ns, prev_ms)) if at_ms > prev_ms && ns >= prev_ns => {
            Some((ns - prev_ns) as f64 / ((at_ms - prev_ms) as f64 * 1e6) * 100.0)
        }
        _ => None,
    }
}

/// What keeps a busy notebook alive, in words ("kernel busy for 42 s", "GPU 0 at 90 %").
fn busy_signals(sample: &Sample, now: i64, t: Thresholds) -> Vec<String> {
    let mut out = Vec::new();
    if !sample.busy_now {
        return out;
    }
    for k in sample.kernels.list.iter().filter(|k| k.is_busy()) {
        out.push(format!(
            "kernel busy for {}",
            describe_duration(now - k.since)
        ));
    }
    if sample.kernels.untracked_busy {
        out.push(format!(
            "{} more kernels, at least one busy",
            sample
                .kernels
                .total
                .saturating_sub(sample.kernels.list.len())
        ));
    }
    // Thresholds were applied when sampling; repeat the figures that made it busy.
    for g in sample
        .gpus
        .iter()
        .filter(|g| g.utilization_percent.unwrap_or(0) >= t.gpu_percent)
    {
        out.push(format!(
            "GPU {} at {} %",
            g.index,
            g.utilization_percent.unwrap_or(0)
        ));
    }
    if let Some(cpu) = sample
        .cpu_percent
        .filter(|c| *c >= f64::from(t.cpu_percent))
    {
        out.push(format!("CPU {cpu:.0} %"));
    }
    out
}

/// What the policy cannot see (nothing is reclaimed on missing information: before the
/// first sample, or while Jupyter does not answer, a kernel might be running).
fn unknowns(sample: &Sample) -> Vec<String> {
    let mut out = Vec::new();
    if sample.sampled_at.is_none() {
        out.push("not measured yet".to_string());
    }
    if sample.kernels.stale {
        out.push("Jupyter is not answering, so its kernels are unknown".to_string());
    }
    if sample.gpus_unknown {
        out.push("its GPU's utilization cannot be read".to_string());
    }
    out
}

/// Where an idle notebook stands, from when it became idle.
fn stage_of(busy: bool, known: bool, idle_since: i64, policy: &Policy, now: i64) -> IdleStage {
    let reclaimable_at = policy.timeout_secs().map(|t| idle_since + t);
    let reclaim_at = reclaimable_at.filter(|_| policy.reclaim == Reclaim::Always);
    if busy {
        IdleStage::Busy
    } else if !known {
        IdleStage::Idle
    } else if reclaim_at.is_some_and(|at| now >= at) {
        IdleStage::Due
    } else if reclaimable_at.is_some_and(|at| now >= at) {
        IdleStage::Reclaimable
    } else if reclaim_at.is_some_and(|at| now >= at - policy.warning_secs()) {
        IdleStage::Warning
    } else {
        IdleStage::Idle
    }
}

fn status_of(r: &Record, policy: Policy, now: i64, t: Thresholds) -> Status {
    let sample = &r.sample;
    let busy = sample.busy_now;
    let mut keeping_alive = busy_signals(sample, now, t);
    let idle_since = [
        Some(r.tracked_since),
        sample.last_busy,
        r.last_action.map(|(_, at)| at),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(now);
    let idle_since = if busy { now } else { idle_since.min(now) };
    if let Some((action, at)) = r.last_action.filter(|(_, at)| now - at < 60) {
        keeping_alive.push(format!(
            "you {} {} ago",
            action.describe(),
            describe_duration(now - at)
        ));
    }
    let unknown = unknowns(sample);
    let stage = stage_of(busy, unknown.is_empty(), idle_since, &policy, now);
    keeping_alive.extend(unknown);
    Status {
        stage,
        idle_since,
        idle_seconds: now - idle_since,
        reclaim_at: policy
            .timeout_secs()
            .map(|t| idle_since + t)
            .filter(|_| policy.reclaim == Reclaim::Always),
        policy,
        kernels: sample.kernels.list.clone(),
        kernels_total: sample.kernels.total,
        kernels_stale: sample.kernels.stale,
        terminals: sample.terminals,
        cpu_percent: sample.cpu_percent,
        gpus: sample.gpus.clone(),
        last_action: r.last_action,
        sampled_at: sample.sampled_at,
        keeping_alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jupyter::{ExecutionState, KernelReading};
    use std::time::Duration;

    const T: Thresholds = Thresholds {
        gpu_percent: 10,
        cpu_percent: 10,
    };

    fn policy(timeout: u64, reclaim: Reclaim) -> Policy {
        Policy {
            idle_timeout: Some(Duration::from_secs(timeout)),
            reclaim,
            exempt: false,
            warning: Duration::from_secs(60),
        }
    }

    fn kernel(state: &str, last: i64) -> KernelReading {
        KernelReading {
            id: "k1".into(),
            name: "python3".into(),
            execution_state: ExecutionState::parse(state),
            last_activity: Some(last),
        }
    }

    fn reading(at: i64) -> Reading {
        Reading {
            at_ms: at * 1000,
            kernels: Some(Kernels::default()),
            terminals: Some(0),
            cpu_usage_ns: None,
            gpus: Vec::new(),
        }
    }

    #[test]
    fn a_busy_kernel_is_never_idle_and_its_end_starts_the_clock() {
        let tracker = Tracker::new(T);
        let p = policy(300, Reclaim::Always);
        tracker.observe(
            "n",
            Reading {
                kernels: Some(Kernels::from_list(vec![kernel("busy", 1000)])),
                ..reading(1000)
            },
        );
        for t in [2000, 5000, 100_000] {
            tracker.observe(
                "n",
                Reading {
                    kernels: Some(Kernels::from_list(vec![kernel("busy", t)])),
                    ..reading(t)
                },
            );
            let s = tracker.status("n", p, t + 2).expect("tracked");
            assert!(s.is_busy() && !s.is_due() && !s.is_warning(), "{s:?}");
            assert_eq!(
                s.keeping_alive[0],
                format!("kernel busy for {}", describe_duration(t + 2 - 1000))
            );
        }
        // Finished at 100 010 (its last message), seen idle at 100 020.
        tracker.observe(
            "n",
            Reading {
                kernels: Some(Kernels::from_list(vec![kernel("idle", 100_010)])),
                ..reading(100_020)
            },
        );
        let s = tracker.status("n", p, 100_020).expect("tracked");
        assert!(!s.is_busy());
        assert_eq!(s.idle_since, 100_010);
        assert_eq!(s.reclaim_at, Some(100_310));
        assert!(!tracker.status("n", p, 100_249).expect("t").is_warning());
        assert!(tracker.status("n", p, 100_250).expect("t").is_warning());
        assert!(tracker.status("n", p, 100_310).expect("t").is_due());
        assert_eq!(
            tracker.status("n", p, 100_310).expect("t").idle_signals(),
            "1 kernel idle"
        );
    }

    #[test]
    fn gpu_and_cpu_utilization_count_and_member_actions_reset_the_clock() {
        let tracker = Tracker::new(T);
        let p = policy(100, Reclaim::Always);
        let gpu = |u| {
            vec![GpuReading {
                index: 0,
                utilization_percent: Some(u),
                memory_used_mib: 100,
            }]
        };
        tracker.observe(
            "n",
            Reading {
                gpus: gpu(90),
                ..reading(1000)
            },
        );
        assert!(tracker.status("n", p, 1000).expect("t").is_busy());
        tracker.observe(
            "n",
            Reading {
                gpus: gpu(0),
                ..reading(1005)
            },
        );
        let s = tracker.status("n", p, 1105).expect("t");
        assert!(s.is_due(), "{s:?}");
        assert_eq!(s.idle_signals(), "no kernel running, GPU 0 at 0 %");
        tracker.member_acted("n", MemberAction::Execute, 1104);
        let s = tracker.status("n", p, 1105).expect("t");
        assert!(!s.is_due() && s.reclaim_at == Some(1204), "{s:?}");
        // CPU: 2 s of CPU time in 4 s of wall time = 50 % of a core.
        tracker.observe(
            "n",
            Reading {
                cpu_usage_ns: Some(1_000_000_000),
                ..reading(2000)
            },
        );
        tracker.observe(
            "n",
            Reading {
                cpu_usage_ns: Some(3_000_000_000),
                ..reading(2004)
            },
        );
        let s = tracker.status("n", p, 2004).expect("t");
        assert!(s.is_busy());
        assert_eq!(s.cpu_percent.map(|c| c.round()), Some(50.0));
        tracker.observe(
            "n",
            Reading {
                cpu_usage_ns: Some(3_010_000_000),
                ..reading(2014)
            },
        );
        let s = tracker.status("n", p, 2014).expect("t");
        assert!(!s.is_busy() && s.idle_since == 2004, "{s:?}");
    }

    #[test]
    fn policies_never_when_needed_and_exempt() {
        let tracker = Tracker::new(T);
        tracker.observe("n", reading(1000));
        let never = Policy {
            idle_timeout: None,
            ..policy(10, Reclaim::Always)
        };
        let s = tracker.status("n", never, 99_999).expect("t");
        assert!(!s.is_due() && !s.is_warning() && s.reclaim_at.is_none());
        let needed = policy(10, Reclaim::WhenNeeded);
        let s = tracker.status("n", needed, 1011).expect("t");
        assert!(!s.is_due() && s.is_reclaimable() && s.reclaim_at.is_none());
        let exempt = Policy {
            exempt: true,
            ..policy(10, Reclaim::Always)
        };
        let s = tracker.status("n", exempt, 99_999).expect("t");
        assert!(!s.is_due() && !s.is_reclaimable());
        assert!(s.summary(99_999).contains("exempt"));
        // Unanswered Jupyter: the busy kernel it reported last still counts.
        tracker.observe(
            "m",
            Reading {
                kernels: Some(Kernels::from_list(vec![kernel("busy", 1000)])),
                ..reading(1000)
            },
        );
        tracker.observe(
            "m",
            Reading {
                kernels: None,
                ..reading(2000)
            },
        );
        assert!(tracker
            .status("m", policy(10, Reclaim::Always), 2000)
            .expect("t")
            .is_busy());
        // Never answered, or not sampled yet: idle, but never reclaimed on that.
        tracker.observe(
            "j",
            Reading {
                kernels: None,
                ..reading(1000)
            },
        );
        let s = tracker
            .status("j", policy(10, Reclaim::Always), 5000)
            .expect("t");
        assert!(!s.is_busy() && !s.is_due() && !s.is_warning(), "{s:?}");
        tracker.member_acted("a", MemberAction::Open, 1000);
        assert!(!tracker
            .status("a", policy(10, Reclaim::Always), 5000)
            .expect("t")
            .is_due());
        // A warning is given once per idle period.
        assert!(tracker.mark_warned("n", 1000));
        assert!(!tracker.mark_warned("n", 1000));
        assert!(tracker.mark_warned("n", 1500));
        tracker.retain(&HashSet::from(["m"]));
        assert!(tracker.status("n", needed, 0).is_none());
    }

    /// `n` kernels with ids of one length (comparing two costs the most), the last one
    /// busy or idle.
    fn many_kernels(n: usize, last: &str) -> Vec<KernelReading> {
        (0..n)
            .map(|i| KernelReading {
                id: format!("{i:06}"),
                name: String::new(),
                execution_state: ExecutionState::parse(if i + 1 == n { last } else { "idle" }),
                last_activity: None,
            })
            .collect()
    }

    #[test]
    fn kernels_past_the_cap_are_counted_and_keep_their_notebook_busy() {
        let tracker = Tracker::new(T);
        let p = policy(10, Reclaim::Always);
        for at in [1000, 1001] {
            tracker.observe(
                "n",
                Reading {
                    kernels: Some(Kernels::from_list(many_kernels(65_000, "busy"))),
                    ..reading(at)
                },
            );
        }
        let s = tracker.status("n", p, 1001).expect("tracked");
        assert_eq!(s.kernels.len(), MAX_TRACKED_KERNELS);
        assert_eq!(s.kernels_total, 65_000);
        assert!(s.is_busy() && !s.is_due(), "{:?}", s.keeping_alive);
        assert_eq!(s.keeping_alive, ["64000 more kernels, at least one busy"]);
        assert_eq!(s.idle_signals(), "65000 kernels idle");
        // The busy one finishes: idle since the last sample that saw it busy.
        tracker.observe(
            "n",
            Reading {
                kernels: Some(Kernels::from_list(many_kernels(65_000, "idle"))),
                ..reading(1005)
            },
        );
        let s = tracker.status("n", p, 1005).expect("tracked");
        assert!(
            !s.is_busy() && s.idle_since == 1001,
            "{:?}",
            s.keeping_alive
        );
        // Tracked kernels keep their clocks across samples.
        assert!(
            s.kernels.iter().all(|k| k.since == 1000),
            "{:?}",
            s.kernels[0]
        );
    }

    #[test]
    fn a_sample_costs_linear_time_whatever_jupyter_lists() {
        // A whole list handed in (as a caller could) is cut at the cap as well.
        let list = many_kernels(65_000, "busy");
        let tracker = Tracker::new(T);
        let start = std::time::Instant::now();
        for at in 1000..1005 {
            tracker.observe(
                "n",
                Reading {
                    kernels: Some(Kernels {
                        tracked: list.clone(),
                        total: list.len(),
                        untracked_busy: false,
                    }),
                    ..reading(at)
                },
            );
        }
        // Quadratic, these five samples took minutes in a debug build.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        let s = tracker
            .status("n", policy(10, Reclaim::Always), 1005)
            .expect("tracked");
        assert_eq!(s.kernels.len(), MAX_TRACKED_KERNELS);
        assert!(s.is_busy(), "the busy kernel past the cap counts");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(describe_duration(42), "42 s");
        assert_eq!(describe_duration(1500), "25 min");
        assert_eq!(describe_duration(7200), "2 h");
        assert_eq!(describe_duration(7500), "2 h 5 min");
        assert_eq!(describe_duration(3 * 86_400), "3 days");
    }
}
