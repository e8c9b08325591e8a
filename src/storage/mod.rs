//! Members' storage: what their `/storage` and notebook folders take (measured in the
//! background by a bounded, throttled walk, `walk`, driven by `measurer`), and the soft
//! quota it is held against. Past 90 % a member is warned (dashboard, webhook); past
//! 100 % new notebooks and jobs are refused (running ones are never stopped for it).
//! Knows nothing of HTTP; nothing here walks a member's files on a request.

pub mod measurer;
pub mod walk;

use crate::config::Config;

/// "104.2 GiB", "100 GiB", "12 B" (config's sizes, written back the way people write them).
pub use crate::config::byte_size_text as size_text;
use crate::db::storage::StorageUsageRow;
use crate::db::users::User;

pub use measurer::Measurer;
pub use walk::{Largest, Measured, WalkLimits, WalkRoot};

/// The share of the quota past which a member is warned.
pub const WARN_FRACTION: f64 = 0.9;

/// A member's storage as last measured, against their quota.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageStatus {
    /// None: never measured yet.
    pub used_bytes: Option<u64>,
    /// None: no quota.
    pub quota_bytes: Option<u64>,
    /// Where the quota comes from: "group phd", "lab default".
    pub quota_from: String,
    pub measured_at: Option<i64>,
    /// Why the last walk stopped short (its figure is "at least").
    pub capped: Option<String>,
    pub largest: Vec<Largest>,
}

/// Where a member stands against their quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLevel {
    /// No quota, not measured, or under 90 %.
    Fine,
    /// Past 90 %: warned.
    Warning,
    /// Past 100 %: new notebooks and jobs are refused.
    Over,
}

impl StorageStatus {
    /// The member's status from their last measurement (if any) and the config's quota.
    pub fn of(config: &Config, user: &User, row: Option<&StorageUsageRow>) -> StorageStatus {
        let policy = crate::groups::policy(config, user);
        StorageStatus {
            used_bytes: row.map(|r| r.used_bytes.max(0) as u64),
            quota_bytes: policy.storage_quota,
            quota_from: policy
                .from
                .get("storage_quota")
                .cloned()
                .unwrap_or_default(),
            measured_at: row.map(|r| r.measured_at),
            capped: row.and_then(|r| r.capped.clone()),
            largest: row
                .and_then(|r| serde_json::from_str(&r.largest).ok())
                .unwrap_or_default(),
        }
    }

    pub fn level(&self) -> QuotaLevel {
        level(self.used_bytes, self.quota_bytes)
    }

    /// Used, out of 100 (capped at 100), for a bar; 0 without a quota.
    pub fn percent(&self) -> f64 {
        match (self.used_bytes, self.quota_bytes) {
            (Some(used), Some(quota)) if quota > 0 => {
                (used as f64 / quota as f64 * 100.0).clamp(0.0, 100.0)
            }
            (Some(_), Some(_)) => 100.0,
            _ => 0.0,
        }
    }

    /// "the largest: /storage/data (61.2 GiB), …", or where to look when nothing is known.
    pub fn what_to_delete(&self) -> String {
        if self.largest.is_empty() {
            return "/storage and your notebooks' folders".to_string();
        }
        let parts: Vec<String> = self
            .largest
            .iter()
            .take(3)
            .map(|l| format!("{} ({})", l.path, size_text(l.bytes)))
            .collect();
        format!("the largest: {}", parts.join(", "))
    }

    /// "You use 104.2 GiB of your 100 GiB storage quota: …": why a new notebook or job is
    /// refused; None when it is not.
    pub fn refusal(&self) -> Option<String> {
        if self.level() != QuotaLevel::Over {
            return None;
        }
        let (used, quota) = (self.used_bytes?, self.quota_bytes?);
        Some(format!(
            "You use {}{} of your {} storage quota: delete files in /storage or in your notebooks' folders ({}), or ask an admin to raise it.",
            if self.capped.is_some() { "at least " } else { "" },
            size_text(used),
            size_text(quota),
            self.what_to_delete()
        ))
    }

    /// The dashboard's warning, past 90 %.
    pub fn warning(&self) -> Option<String> {
        let (used, quota) = (self.used_bytes?, self.quota_bytes?);
        match self.level() {
            QuotaLevel::Fine => None,
            QuotaLevel::Warning => Some(format!(
                "You use {} of your {} storage quota ({:.0} %). Past it, new notebooks and jobs will not start: delete what you no longer need — {}.",
                size_text(used),
                size_text(quota),
                used as f64 / quota.max(1) as f64 * 100.0,
                self.what_to_delete()
            )),
            QuotaLevel::Over => self.refusal().map(|r| {
                format!("{r} Your running notebooks keep running, but new notebooks and jobs will not start.")
            }),
        }
    }
}

/// `user`'s storage as last measured, against their quota (a read of one row; never a walk).
pub async fn status(
    db: &crate::db::Db,
    config: &Config,
    user: &User,
) -> Result<StorageStatus, crate::db::DbError> {
    let id = user.id;
    let row = db.call(move |c| crate::db::storage::of_user(c, id)).await?;
    Ok(StorageStatus::of(config, user, row.as_ref()))
}

/// Every member's last measurement, by user id (for the admin's list).
pub async fn measurements(
    db: &crate::db::Db,
) -> Result<std::collections::HashMap<i64, StorageUsageRow>, crate::db::DbError> {
    db.call(|c| crate::db::storage::all(c)).await
}

/// Where `used` stands against `quota`.
pub fn level(used: Option<u64>, quota: Option<u64>) -> QuotaLevel {
    match (used, quota) {
        (Some(used), Some(quota)) if used > quota => QuotaLevel::Over,
        (Some(used), Some(quota)) if used as f64 >= quota as f64 * WARN_FRACTION => {
            QuotaLevel::Warning
        }
        _ => QuotaLevel::Fine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_warn_at_ninety_percent_and_refuse_past_the_quota() {
        assert_eq!(level(Some(89), Some(100)), QuotaLevel::Fine);
        assert_eq!(level(Some(90), Some(100)), QuotaLevel::Warning);
        assert_eq!(level(Some(100), Some(100)), QuotaLevel::Warning);
        assert_eq!(level(Some(101), Some(100)), QuotaLevel::Over);
        assert_eq!(level(None, Some(100)), QuotaLevel::Fine, "never measured");
        assert_eq!(level(Some(u64::MAX), None), QuotaLevel::Fine, "no quota");
    }

    #[test]
    fn a_refusal_says_how_much_and_what_to_delete() {
        let status = StorageStatus {
            used_bytes: Some((1042 << 30) / 10),
            quota_bytes: Some(100 << 30),
            largest: vec![Largest {
                path: "/storage/data".into(),
                bytes: 61 << 30,
            }],
            ..StorageStatus::default()
        };
        assert_eq!(
            status.refusal().as_deref(),
            Some("You use 104.2 GiB of your 100 GiB storage quota: delete files in /storage or in your notebooks' folders (the largest: /storage/data (61 GiB)), or ask an admin to raise it.")
        );
        let under = StorageStatus {
            used_bytes: Some(95 << 30),
            ..status.clone()
        };
        assert_eq!(under.refusal(), None);
        assert!(under
            .warning()
            .is_some_and(|w| w.contains("95 GiB of your 100 GiB")));
    }
}
