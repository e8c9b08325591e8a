//! A member's storage as the dashboard, the notebook page and the admin page show it.

use crate::storage::{size_text, QuotaLevel, StorageStatus};

/// Ready-made figures for the templates.
#[derive(Debug, Clone)]
pub struct StorageView {
    /// "12.3 GiB", "at least 12.3 GiB", or "not measured yet".
    pub used: String,
    /// "100 GiB", or "" without a quota.
    pub quota: String,
    /// Where the quota comes from ("group phd", "lab default").
    pub quota_from: String,
    /// The bar's fill, out of 100.
    pub percent: f64,
    /// "measured 3 min ago", or "" when never measured.
    pub measured: String,
    /// The banner past 90 %.
    pub warning: Option<String>,
    pub over: bool,
}

impl StorageView {
    pub fn new(status: &StorageStatus, now: i64) -> StorageView {
        let used = match status.used_bytes {
            None => "not measured yet".to_string(),
            Some(b) if status.capped.is_some() => format!("at least {}", size_text(b)),
            Some(b) => size_text(b),
        };
        StorageView {
            used,
            quota: status.quota_bytes.map(size_text).unwrap_or_default(),
            quota_from: status.quota_from.clone(),
            percent: status.percent().round(),
            measured: status
                .measured_at
                .map(|at| format!("measured {}", ago(now - at)))
                .unwrap_or_default(),
            warning: status.warning(),
            over: status.level() == QuotaLevel::Over,
        }
    }

    pub fn has_quota(&self) -> bool {
        !self.quota.is_empty()
    }
}

/// "just now", "3 min ago", "2 h ago", "4 days ago".
pub fn ago(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 60 => "just now".to_string(),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_says_how_much_of_what_and_when() {
        let status = StorageStatus {
            used_bytes: Some(95 << 20),
            quota_bytes: Some(100 << 20),
            quota_from: "lab default".into(),
            measured_at: Some(1000),
            ..StorageStatus::default()
        };
        let v = StorageView::new(&status, 1000 + 180);
        assert_eq!(
            (
                v.used.as_str(),
                v.quota.as_str(),
                v.percent,
                v.measured.as_str()
            ),
            ("95 MiB", "100 MiB", 95.0, "measured 3 min ago")
        );
        assert!(v.warning.is_some() && !v.over);
        let never = StorageView::new(&StorageStatus::default(), 0);
        assert_eq!(
            (never.used.as_str(), never.has_quota()),
            ("not measured yet", false)
        );
    }
}
