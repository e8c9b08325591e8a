//! The background measurer: every `[storage] measure_interval` it measures every member's
//! `/storage` and notebook folders (one member at a time, on a blocking thread, throttled),
//! and soon after a member's notebook stops it measures that member again. Each result is
//! stored (`storage_usage`); a member who passes 90 % of their quota is told once per
//! crossing through the webhook.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::config::Config;
use crate::db::storage::{self as sq, StorageUsageRow};
use crate::db::users::{self, User};
use crate::db::{Db, DbError};
use crate::platform::webhook::{StorageHappening, Webhook};

use super::walk::{self, WalkLimits, WalkRoot};
use super::{QuotaLevel, StorageStatus};

/// Measures members' storage in the background. Cheap to clone.
#[derive(Clone)]
pub struct Measurer {
    db: Db,
    config: Arc<Config>,
    webhook: Webhook,
    /// Notebooks that stopped since the last look: their owners are measured next.
    stopped: Arc<Mutex<HashSet<String>>>,
    wake: Arc<Notify>,
}

impl Measurer {
    pub fn new(db: Db, config: Arc<Config>, webhook: Webhook) -> Measurer {
        Measurer {
            db,
            config,
            webhook,
            stopped: Arc::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// A notebook stopped: what it wrote is at rest, so its owner is measured soon.
    pub fn notebook_stopped(&self, notebook_id: String) {
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.insert(notebook_id);
        }
        self.wake.notify_one();
    }

    /// Every member at once, then every `measure_interval`; the owners of stopped
    /// notebooks in between.
    pub async fn run(self) {
        let mut every = tokio::time::interval(self.config.storage.measure_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    self.take_stopped();
                    self.measure_everyone().await;
                }
                () = self.wake.notified() => self.measure_owners_of_stopped().await,
            }
        }
    }

    fn take_stopped(&self) -> Vec<String> {
        self.stopped
            .lock()
            .map(|mut s| s.drain().collect())
            .unwrap_or_default()
    }

    async fn measure_owners_of_stopped(&self) {
        let ids = self.take_stopped();
        let owners = self
            .db
            .call(move |c| {
                let mut owners = Vec::new();
                for id in &ids {
                    if let Some(owner) = sq::owner_of_notebook(c, id)? {
                        if !owners.contains(&owner) {
                            owners.push(owner);
                        }
                    }
                }
                owners
                    .into_iter()
                    .filter_map(|id| users::by_id(c, id).transpose())
                    .collect::<Result<Vec<User>, DbError>>()
            })
            .await;
        match owners {
            Ok(owners) => {
                for owner in owners {
                    self.measure_and_log(&owner).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot find whose notebooks stopped"),
        }
    }

    async fn measure_everyone(&self) {
        let members = match self.db.call(|c| users::list(c)).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list members to measure their storage");
                return;
            }
        };
        let started = Instant::now();
        for member in &members {
            self.measure_and_log(member).await;
        }
        tracing::debug!(members = members.len(), took = ?started.elapsed(), "storage measured");
    }

    async fn measure_and_log(&self, member: &User) {
        if let Err(e) = self.measure(member).await {
            tracing::warn!(member = %member.username, error = %e, "cannot measure storage");
        }
    }

    /// Measures one member now (on a blocking thread), stores the result and tells the
    /// webhook when they just passed 90 % of their quota.
    pub async fn measure(&self, member: &User) -> Result<StorageStatus, DbError> {
        let user_id = member.id;
        let folders = self
            .db
            .call(move |c| sq::notebook_folders_of(c, user_id))
            .await?;
        let roots = roots_of(&self.config.data_dir, &member.username, &folders);
        let limits = limits_of(&self.config);
        let started = Instant::now();
        let measured = tokio::task::spawn_blocking(move || walk::measure(&roots, limits))
            .await
            .map_err(|e| DbError::Worker(e.to_string()))?;
        let walk_ms = started.elapsed().as_millis() as i64;
        let largest = serde_json::to_string(&measured.largest).unwrap_or_else(|_| "[]".into());
        let row = StorageUsageRow {
            user_id,
            used_bytes: measured.bytes.min(i64::MAX as u64) as i64,
            files: measured.entries.min(i64::MAX as u64) as i64,
            capped: measured.capped,
            largest,
            measured_at: crate::clock::now(),
            walk_ms,
            warned_at: None,
        };
        let status = StorageStatus::of(&self.config, member, Some(&row));
        let level = status.level();
        let to_record = row;
        let warn_now = self
            .db
            .call(move |c| {
                let before = sq::of_user(c, user_id)?.and_then(|r| r.warned_at);
                let (warned_at, warn_now) = match (level, before) {
                    (QuotaLevel::Fine, _) => (None, false),
                    (_, Some(at)) => (Some(at), false),
                    (_, None) => (Some(to_record.measured_at), true),
                };
                sq::record(
                    c,
                    &StorageUsageRow {
                        warned_at,
                        ..to_record
                    },
                )?;
                Ok(warn_now)
            })
            .await?;
        if warn_now {
            self.tell(member, &status);
        }
        Ok(status)
    }

    fn tell(&self, member: &User, status: &StorageStatus) {
        let (Some(used), Some(quota), Some(reason)) =
            (status.used_bytes, status.quota_bytes, status.warning())
        else {
            return;
        };
        tracing::info!(member = %member.username, used, quota, "storage quota warning");
        self.webhook.tell_storage(StorageHappening {
            member: &member.username,
            used_bytes: used,
            soft_quota_bytes: quota,
            largest: status
                .largest
                .iter()
                .map(|l| (l.path.clone(), l.bytes))
                .collect(),
            reason,
        });
    }
}

/// The walk's limits from `[storage]`.
pub fn limits_of(config: &Config) -> WalkLimits {
    let s = &config.storage;
    WalkLimits {
        max_entries: s.measure_max_entries,
        max_depth: s.measure_max_depth as usize,
        files_per_second: Some(s.measure_files_per_second).filter(|r| *r > 0),
    }
}

/// A member's folders: `{data_dir}/storage/{username}` (their `/storage`) and
/// `{data_dir}/notebooks/{id}` for each notebook (the layout of `notebooks::Dirs`; its
/// jobs write inside it).
pub fn roots_of(data_dir: &Path, username: &str, notebooks: &[(String, String)]) -> Vec<WalkRoot> {
    let mut roots = vec![WalkRoot {
        path: data_dir.join("storage").join(username),
        label: "/storage".to_string(),
    }];
    roots.extend(notebooks.iter().map(|(id, name)| WalkRoot {
        path: PathBuf::from(data_dir).join("notebooks").join(id),
        label: format!("notebook “{name}”"),
    }));
    roots
}
