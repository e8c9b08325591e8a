//! The order of the GPU queue. First come, first served (`fifo`), or fair share: who used
//! fewer GPU-hours recently (each hour's use counts half after one half-life, a quarter
//! after two, …, divided by the member's weight) goes first, ties by waiting time — and
//! the starvation rule: once a notebook or job has waited `fair_share_max_wait`, it goes
//! ahead of every one that has waited less, in the order they came. Pure: the database
//! supplies the waiting list and each member's recent use.

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::config::{Config, QueueOrderName};

/// How the queue is ordered, as configured.
#[derive(Debug, Clone, Default)]
pub enum QueueOrder {
    #[default]
    Fifo,
    FairShare(FairShare),
}

#[derive(Debug, Clone)]
pub struct FairShare {
    /// Seconds after which an hour of use counts half.
    pub half_life: i64,
    /// Seconds of waiting after which an item goes ahead of all that waited less.
    pub max_wait: i64,
    pub weights: Weights,
}

/// Fair share weights: a member's own (`[gpu.shares]`), else the largest of their groups',
/// else 1.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    members: BTreeMap<String, f64>,
    /// (group id, its local members, weight)
    groups: Vec<(String, Vec<String>, f64)>,
}

impl Weights {
    pub fn of(&self, username: &str, directory_groups: &[String]) -> f64 {
        if let Some(w) = self.members.get(username) {
            return *w;
        }
        self.groups
            .iter()
            .filter(|(id, members, _)| {
                directory_groups.contains(id) || members.iter().any(|m| m == username)
            })
            .map(|(_, _, w)| *w)
            .reduce(f64::max)
            .unwrap_or(1.0)
    }
}

impl QueueOrder {
    pub fn from_config(config: &Config) -> QueueOrder {
        match config.gpu.queue_order {
            QueueOrderName::Fifo => QueueOrder::Fifo,
            QueueOrderName::FairShare => QueueOrder::FairShare(FairShare {
                half_life: config.gpu.fair_share_half_life.as_secs().max(1) as i64,
                max_wait: config.gpu.fair_share_max_wait.as_secs() as i64,
                weights: Weights {
                    members: config.gpu.shares.clone(),
                    groups: config
                        .groups
                        .iter()
                        .filter_map(|g| g.shares.map(|w| (g.id.clone(), g.members.clone(), w)))
                        .collect(),
                },
            }),
        }
    }

    pub fn is_fair_share(&self) -> bool {
        matches!(self, QueueOrder::FairShare(_))
    }
}

/// A notebook or job waiting for GPUs.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub id: String,
    pub owner_id: i64,
    pub owner: String,
    pub gpu_count: i64,
    pub queued_at: Timestamp,
    /// The owner's recent GPU-hours (decayed), when the order is fair share.
    pub usage_hours: f64,
    /// The owner's weight (1 = an equal share).
    pub weight: f64,
    /// The most it runs once started (auto-shutdown, a job's time limit); None: no limit.
    pub limit_secs: Option<i64>,
}

impl Waiting {
    /// Recent use over weight: who has less goes first.
    pub fn score(&self) -> f64 {
        self.usage_hours / self.weight.max(0.01)
    }

    fn overdue(&self, order: &FairShare, now: Timestamp) -> bool {
        now - self.queued_at >= order.max_wait
    }
}

/// Sorts `waiting` (given first come first) into the order they are served.
pub fn sort(waiting: &mut [Waiting], order: &QueueOrder, now: Timestamp) {
    let QueueOrder::FairShare(fs) = order else {
        return; // already first come, first served
    };
    waiting.sort_by(|a, b| {
        let (ao, bo) = (a.overdue(fs, now), b.overdue(fs, now));
        bo.cmp(&ao)
            .then_with(|| {
                if ao && bo {
                    std::cmp::Ordering::Equal
                } else {
                    a.score().total_cmp(&b.score())
                }
            })
            .then_with(|| a.queued_at.cmp(&b.queued_at))
    });
}

/// GPU-seconds of use over [start, end), each second weighted by 2^(−age/half_life) at
/// `now`: the decayed use one ledger interval adds.
pub fn decayed_seconds(start: Timestamp, end: Timestamp, now: Timestamp, half_life: i64) -> f64 {
    if end <= start {
        return 0.0;
    }
    let h = half_life.max(1) as f64;
    let k = std::f64::consts::LN_2 / h;
    let (age_start, age_end) = ((now - start).max(0) as f64, (now - end).max(0) as f64);
    // ∫ 2^(−age/h) d(age) from age_end to age_start
    ((-k * age_end).exp() - (-k * age_start).exp()) / k
}

/// Why `waiting[at]` stands where it stands, in words for its owner: "Queue order: fair
/// share. Ahead of you: bob (3.1 GPU-hours recently). You used 41.0 …".
pub fn explain(waiting: &[Waiting], at: usize, order: &QueueOrder, now: Timestamp) -> String {
    let Some(me) = waiting.get(at) else {
        return String::new();
    };
    let QueueOrder::FairShare(fs) = order else {
        return match at {
            0 => "Next in the queue (first come, first served).".into(),
            n => format!("{n} ahead of it in the queue (first come, first served)."),
        };
    };
    let mut ahead: Vec<String> = Vec::new();
    for w in &waiting[..at] {
        let why = if w.overdue(fs, now) {
            format!(
                "waiting {}",
                crate::idle::describe_duration(now - w.queued_at)
            )
        } else {
            format!("{:.1} GPU-hours recently", w.usage_hours)
        };
        let entry = format!("{} ({why})", w.owner);
        if !ahead.contains(&entry) {
            ahead.push(entry);
        }
    }
    let rule = format!(
        "Fair share: who used fewer GPU-hours recently goes first (use {} ago counts half); \
         after waiting {} a notebook or job goes ahead of all that waited less.",
        crate::idle::describe_duration(fs.half_life),
        crate::idle::describe_duration(fs.max_wait)
    );
    let mine = if me.weight == 1.0 {
        format!("{:.1}", me.usage_hours)
    } else {
        format!("{:.1} (weight {})", me.usage_hours, me.weight)
    };
    if ahead.is_empty() {
        return format!("Next in the queue: you used {mine} GPU-hours recently. {rule}");
    }
    format!(
        "Ahead of you: {}. You used {mine} GPU-hours recently. {rule}",
        ahead.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(id: &str, owner: &str, queued_at: i64, usage_hours: f64) -> Waiting {
        Waiting {
            id: id.into(),
            owner_id: 0,
            owner: owner.into(),
            gpu_count: 1,
            queued_at,
            usage_hours,
            weight: 1.0,
            limit_secs: None,
        }
    }

    fn fair(max_wait: i64) -> QueueOrder {
        QueueOrder::FairShare(FairShare {
            half_life: 7 * 86400,
            max_wait,
            weights: Weights::default(),
        })
    }

    fn ids(w: &[Waiting]) -> Vec<&str> {
        w.iter().map(|w| w.id.as_str()).collect()
    }

    #[test]
    fn fifo_keeps_arrival_and_fair_share_puts_the_light_user_first() {
        let mut q = vec![
            waiting("a", "alice", 100, 40.0),
            waiting("b", "bob", 110, 1.0),
        ];
        sort(&mut q, &QueueOrder::Fifo, 200);
        assert_eq!(ids(&q), ["a", "b"]);
        sort(&mut q, &fair(3600), 200);
        assert_eq!(ids(&q), ["b", "a"]);
        let why = explain(&q, 1, &fair(3600), 200);
        assert!(
            why.starts_with("Ahead of you: bob (1.0 GPU-hours recently). You used 40.0"),
            "{why}"
        );
        // Equal use: first come first.
        let mut q = vec![waiting("x", "x", 5, 2.0), waiting("y", "y", 1, 2.0)];
        sort(&mut q, &fair(3600), 10);
        assert_eq!(ids(&q), ["y", "x"]);
    }

    #[test]
    fn weights_divide_use_and_groups_give_the_largest() {
        let w = Weights {
            members: [("carol".to_string(), 4.0)].into(),
            groups: vec![
                ("phd".into(), vec!["dave".into()], 2.0),
                ("staff".into(), vec![], 3.0),
            ],
        };
        assert_eq!(w.of("carol", &[]), 4.0);
        assert_eq!(w.of("dave", &["staff".into()]), 3.0);
        assert_eq!(w.of("dave", &[]), 2.0);
        assert_eq!(w.of("erin", &[]), 1.0);
        let mut heavy = waiting("c", "carol", 0, 40.0);
        heavy.weight = 4.0;
        let mut q = vec![heavy, waiting("e", "erin", 1, 20.0)];
        sort(&mut q, &fair(3600), 10);
        assert_eq!(ids(&q), ["c", "e"], "40 h over weight 4 is less than 20 h");
    }

    /// The starvation rule: alice (heavy) waits behind a stream of light users, each of
    /// whom comes after her, is placed as soon as a GPU frees, and would go ahead of her by
    /// use alone; once she has waited max_wait she is next, whoever comes.
    #[test]
    fn a_heavy_user_behind_a_stream_of_light_ones_is_placed_within_max_wait() {
        let order = fair(3600);
        let mut queue = vec![waiting("alice", "alice", 0, 400.0)];
        let mut placed_at = None;
        // One GPU frees every 10 minutes; a light user arrives every 5.
        for minute in (0..24 * 60).step_by(5) {
            let now = minute * 60;
            queue.push(waiting(&format!("light{minute}"), "light", now, 0.5));
            if minute % 10 == 0 && minute > 0 {
                sort(&mut queue, &order, now);
                let first = queue.remove(0);
                if first.id == "alice" {
                    placed_at = Some(now);
                    break;
                }
            }
        }
        let at = placed_at.expect("alice was never placed: starvation");
        assert!(
            at <= 3600 + 600,
            "placed after {at} s, max_wait 3600 s and a GPU every 600 s"
        );
        assert!(
            at >= 3600,
            "placed after {at} s: before max_wait the light users go first"
        );
    }

    #[test]
    fn decay_halves_each_half_life() {
        let h = 3600;
        let recent = decayed_seconds(0, 3600, 3600, h * 1000);
        assert!((recent - 3600.0).abs() < 5.0, "{recent}");
        let old = decayed_seconds(0, 60, 60 + h, h);
        assert!(
            (old - 30.0).abs() < 0.5,
            "an hour-old minute counts half: {old}"
        );
        assert_eq!(decayed_seconds(10, 10, 20, h), 0.0);
    }
}
