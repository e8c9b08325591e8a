//! Disk: what environments' images take, by owner, and the policy that removes old
//! versions (`keep_versions` per environment, `max_disk` for all together) — never a
//! version a notebook uses, never an environment's newest ready one.

use std::collections::{HashMap, HashSet};

use super::Environments;
use crate::db::environments::{self as q, BuildRow, EnvironmentRow};
use crate::model::BuildState;

/// One environment on the admin's disk page.
#[derive(Debug, Clone)]
pub struct EnvironmentDisk {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub shared: bool,
    pub kind: String,
    /// Ready versions (their images are on disk).
    pub ready_versions: usize,
    pub in_use: usize,
    pub bytes: i64,
    pub building: bool,
    /// `bytes` for people ("1.2 GiB").
    pub size_text: String,
}

#[derive(Debug, Clone, Default)]
pub struct DiskReport {
    pub environments: Vec<EnvironmentDisk>,
    /// All ready versions' images together (a layer shared by two is counted twice).
    pub total_bytes: i64,
    /// By owner, largest first: (member, bytes, "1.2 GiB").
    pub by_owner: Vec<(String, i64, String)>,
    pub max_disk: u64,
    pub keep_versions: u32,
    /// `total_bytes` and `max_disk` for people.
    pub total_text: String,
    pub max_text: String,
}

pub(super) async fn disk_report(
    envs: &Environments,
) -> Result<DiskReport, super::EnvironmentError> {
    let (rows, builds, in_use) = envs
        .inner
        .db
        .call(|c| Ok((q::all(c)?, q::all_builds(c)?, q::versions_in_use(c)?)))
        .await?;
    let mut report = DiskReport {
        max_disk: envs.config().environments.max_disk,
        keep_versions: envs.config().environments.keep_versions,
        ..DiskReport::default()
    };
    let mut owners: HashMap<String, i64> = HashMap::new();
    for row in &rows {
        let b = builds.get(&row.id).map(Vec::as_slice).unwrap_or(&[]);
        let ready: Vec<&BuildRow> = b.iter().filter(|b| b.state == BuildState::Ready).collect();
        let bytes = distinct_bytes(&ready);
        *owners.entry(row.owner.clone()).or_default() += bytes;
        report.total_bytes += bytes;
        report.environments.push(EnvironmentDisk {
            id: row.id.clone(),
            name: row.name.clone(),
            owner: row.owner.clone(),
            shared: row.shared,
            kind: row.kind.to_string(),
            ready_versions: ready.len(),
            in_use: in_use.get(&row.id).map(|v| v.len()).unwrap_or(0),
            bytes,
            building: b.iter().any(|b| b.state.is_open()),
            size_text: super::human_size(bytes),
        });
    }
    report.environments.sort_by(|a, b| b.bytes.cmp(&a.bytes));
    let mut by_owner: Vec<(String, i64, String)> = owners
        .into_iter()
        .map(|(o, b)| (o, b, super::human_size(b)))
        .collect();
    by_owner.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    report.by_owner = by_owner;
    report.total_text = super::human_size(report.total_bytes);
    report.max_text = super::human_size(report.max_disk.min(i64::MAX as u64) as i64);
    Ok(report)
}

/// Sizes of distinct images (two versions with the same inputs share one).
fn distinct_bytes(ready: &[&BuildRow]) -> i64 {
    let mut seen = HashSet::new();
    ready
        .iter()
        .filter(|b| b.image.as_ref().is_some_and(|i| seen.insert(i.clone())))
        .map(|b| b.size_bytes.unwrap_or(0))
        .sum()
}

/// Which ready versions the policy removes: per environment, past the newest
/// `keep_versions`; then, while all together are over `max_disk`, the oldest of the rest.
/// Never one in use, never an environment's newest.
pub fn choose_removals(
    rows: &[EnvironmentRow],
    builds: &HashMap<String, Vec<BuildRow>>,
    in_use: &HashMap<String, Vec<i64>>,
    keep_versions: u32,
    max_disk: u64,
) -> Vec<(String, i64, &'static str)> {
    let mut out = Vec::new();
    let mut candidates: Vec<&BuildRow> = Vec::new();
    let mut total: i64 = 0;
    for row in rows {
        let Some(b) = builds.get(&row.id) else {
            continue;
        };
        let used = in_use.get(&row.id).cloned().unwrap_or_default();
        let mut ready: Vec<&BuildRow> = b.iter().filter(|b| b.state == BuildState::Ready).collect();
        ready.sort_by(|a, b| b.version.cmp(&a.version));
        for (i, build) in ready.iter().enumerate() {
            let protected = i == 0 || used.contains(&build.version);
            if i >= keep_versions as usize && !protected {
                out.push((row.id.clone(), build.version, "past keep_versions"));
                continue;
            }
            total += build.size_bytes.unwrap_or(0);
            if !protected {
                candidates.push(build);
            }
        }
    }
    candidates.sort_by_key(|b| b.finished_at.unwrap_or(b.created_at));
    for build in candidates {
        if total <= max_disk as i64 {
            break;
        }
        total -= build.size_bytes.unwrap_or(0);
        out.push((build.environment_id.clone(), build.version, "over max_disk"));
    }
    out
}

/// Applies the policy now.
pub(super) async fn sweep(envs: &Environments) {
    let read = envs
        .inner
        .db
        .call(|c| Ok((q::all(c)?, q::all_builds(c)?, q::versions_in_use(c)?)))
        .await;
    let Ok((rows, builds, in_use)) = read else {
        return;
    };
    let cfg = &envs.config().environments;
    let removals = choose_removals(&rows, &builds, &in_use, cfg.keep_versions, cfg.max_disk);
    for (eid, version, why) in removals {
        let Some(build) = builds
            .get(&eid)
            .and_then(|b| b.iter().find(|b| b.version == version))
        else {
            continue;
        };
        // An image two versions share stays while the other is kept.
        let shared_image = builds.get(&eid).is_some_and(|b| {
            b.iter().any(|o| {
                o.version != version && o.state == BuildState::Ready && o.image == build.image
            })
        });
        if let (Some(image), false) = (
            build.image.as_deref().filter(|i| super::is_ours(i)),
            shared_image,
        ) {
            if let Err(e) = envs.inner.engine.remove_image(image).await {
                tracing::warn!(environment = %eid, version, error = %e, "could not remove an old version's image");
                continue;
            }
        }
        let detail = format!("Removed ({why})");
        let e2 = eid.clone();
        let _ = envs
            .inner
            .db
            .call(move |c| q::mark_removed(c, &e2, version, &detail))
            .await;
        tracing::info!(environment = %eid, version, why, "old environment version removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EnvironmentKind, Launcher};

    fn env(id: &str) -> EnvironmentRow {
        EnvironmentRow {
            id: id.into(),
            owner_id: 1,
            owner: "alice".into(),
            name: id.into(),
            shared: false,
            kind: EnvironmentKind::Files,
            source: "{}".into(),
            credential_sealed: None,
            launcher: Launcher::JupyterLab,
            command: vec![],
            created_at: 0,
        }
    }

    fn ready(env: &str, version: i64, size: i64) -> BuildRow {
        BuildRow {
            environment_id: env.into(),
            version,
            state: BuildState::Ready,
            state_detail: String::new(),
            step: String::new(),
            failed_step: None,
            requested_ref: None,
            commit: None,
            input_hash: None,
            image: Some(format!("img:{env}{version}")),
            size_bytes: Some(size),
            from_notebook: None,
            created_by: None,
            created_at: version,
            started_at: None,
            finished_at: Some(version),
        }
    }

    #[test]
    fn keeps_the_newest_and_the_used() {
        let rows = vec![env("a")];
        let builds = HashMap::from([(
            "a".to_string(),
            (1..=5).map(|v| ready("a", v, 10)).collect::<Vec<_>>(),
        )]);
        let in_use = HashMap::from([("a".to_string(), vec![1])]);
        let out = choose_removals(&rows, &builds, &in_use, 2, u64::MAX);
        let versions: Vec<i64> = out.iter().map(|o| o.1).collect();
        assert_eq!(versions, vec![3, 2], "v5, v4 kept (newest two), v1 in use");
    }

    #[test]
    fn max_disk_takes_the_oldest_unused() {
        let rows = vec![env("a"), env("b")];
        let builds = HashMap::from([
            (
                "a".to_string(),
                vec![ready("a", 1, 100), ready("a", 2, 100)],
            ),
            ("b".to_string(), vec![ready("b", 3, 100)]),
        ]);
        let out = choose_removals(&rows, &builds, &HashMap::new(), 5, 250);
        assert_eq!(out, vec![("a".to_string(), 1, "over max_disk")]);
        let none = choose_removals(&rows, &builds, &HashMap::new(), 5, 50);
        assert_eq!(none.len(), 1, "the newest of each stays even over max_disk");
    }
}
