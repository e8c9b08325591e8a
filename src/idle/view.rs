//! A notebook's activity as the API and the pages show it.

use crate::clock::rfc3339;

use super::policy::Status;

/// The API's and pages' view of a status.
pub fn activity_view(status: &Status, now: i64) -> crate::model::wire::Activity {
    use crate::model::wire::{Activity, IdlePolicy, KernelActivity, MemberActionView};
    Activity {
        busy: status.is_busy(),
        idle_since: rfc3339(status.idle_since),
        idle_seconds: status.idle_seconds,
        reclaim_at: status.reclaim_at.map(rfc3339),
        reclaim_in_seconds: status.reclaim_at.map(|at| (at - now).max(0)),
        warning: status.is_warning(),
        reclaimable: status.is_reclaimable(),
        summary: status.summary(now),
        keeping_alive: status.keeping_alive.clone(),
        kernels: status
            .kernels
            .iter()
            .map(|k| KernelActivity {
                id: k.id.clone(),
                name: k.name.clone(),
                state: k.state.as_str().to_string(),
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
