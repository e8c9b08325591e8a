//! Usage reports and budgets over the ledger (`db::usage`), for the API, the usage page,
//! the dashboard and `/metrics`.

use std::collections::HashMap;

use std::sync::Arc;

use crate::auth::User;
use crate::clock::{now, rfc3339};
use crate::config::{Config, OverBudget};
use crate::db::{Db, DbError};
use crate::model::wire::{BudgetView, UsageReport, UsageRow};

use super::ledger::{self as usage, Budget, GroupBy, Range, Row};

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("no such member")]
    NoSuchMember,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

#[derive(Clone)]
pub struct UsageReports {
    db: Db,
    config: Arc<Config>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn view(row: Row, group: Option<GroupBy>) -> UsageRow {
    let efficiency = row.efficiency().map(|e| (e * 1000.0).round() / 1000.0);
    let key = Some(row.key);
    UsageRow {
        member: key.clone().filter(|_| group == Some(GroupBy::Member)),
        day: key.clone().filter(|_| group == Some(GroupBy::Day)),
        gpu: key.filter(|_| group == Some(GroupBy::Gpu)),
        gpu_seconds_held: round1(row.gpu_seconds_held),
        gpu_seconds_busy: round1(row.gpu_seconds_busy),
        efficiency,
        cpu_core_seconds: round1(row.cpu_core_seconds),
        cpu_seconds_used: round1(row.cpu_seconds_used),
        notebooks: row.notebooks,
        peak_memory_mib: row.peak_memory_mib,
    }
}

impl UsageReports {
    pub fn new(db: Db, config: Arc<Config>) -> UsageReports {
        UsageReports { db, config }
    }

    /// The report over `range`: everyone's for admins, only their own for members.
    pub async fn report(
        &self,
        caller: &User,
        range: Range,
        group: GroupBy,
    ) -> Result<UsageReport, UsageError> {
        let only = (!caller.is_admin).then_some(caller.id);
        let t = now();
        let (rows, totals) = self
            .db
            .call(move |c| {
                let intervals = crate::db::usage::overlapping(c, range.from, range.to, only)?;
                usage::report(&intervals, range.from, range.to, t, group, |id, a, b| {
                    crate::db::usage::hours_of(c, id, a, b)
                })
            })
            .await?;
        Ok(UsageReport {
            from: rfc3339(range.from),
            to: rfc3339(range.to),
            group_by: group.as_str(),
            rows: rows.into_iter().map(|r| view(r, Some(group))).collect(),
            totals: view(totals, None),
        })
    }

    /// GPU-seconds held per member and day over `range` (the page's stacked chart):
    /// (member, [(day, held seconds)]).
    pub async fn daily_by_member(
        &self,
        caller: &User,
        range: Range,
    ) -> Result<Vec<(String, Vec<(String, f64)>)>, UsageError> {
        let only = (!caller.is_admin).then_some(caller.id);
        let t = now();
        Ok(self
            .db
            .call(move |c| {
                let intervals = crate::db::usage::overlapping(c, range.from, range.to, only)?;
                let mut by_member: std::collections::BTreeMap<String, Vec<_>> =
                    std::collections::BTreeMap::new();
                for i in intervals.into_iter().filter(|i| i.gpu_uuid.is_some()) {
                    by_member.entry(i.member.clone()).or_default().push(i);
                }
                let mut out = Vec::new();
                for (member, list) in by_member {
                    // Held time needs no hourly buckets.
                    let (rows, _) =
                        usage::report(&list, range.from, range.to, t, GroupBy::Day, |_, _, _| {
                            Ok::<_, DbError>(Vec::new())
                        })?;
                    out.push((
                        member,
                        rows.into_iter()
                            .map(|r| (r.key, r.gpu_seconds_held))
                            .collect(),
                    ));
                }
                Ok(out)
            })
            .await?)
    }

    /// A member's budget this month, if they have one.
    pub async fn budget(&self, user_id: i64) -> Result<Option<BudgetView>, UsageError> {
        let since = usage::month_start(now());
        let found = self
            .db
            .call(move |c| {
                let Some(hours) = crate::db::users::gpu_hours_budget(c, user_id)? else {
                    return Ok(None);
                };
                let used = crate::db::usage::gpu_seconds_since(c, user_id, since)? / 3600.0;
                Ok(Some(Budget {
                    hours,
                    used_hours: used,
                }))
            })
            .await?;
        let blocks = self.config.usage.over_budget == OverBudget::Block;
        Ok(found.map(|b| BudgetView {
            gpu_hours_budget: b.hours,
            gpu_hours_used: round3(b.used_hours),
            gpu_hours_left: round3(b.left_hours()),
            over: b.over(),
            blocks,
        }))
    }

    /// Sets (or with None removes) a member's monthly GPU-hour budget.
    pub async fn set_budget(&self, user_id: i64, hours: Option<f64>) -> Result<(), UsageError> {
        if let Some(h) = hours {
            if !(h.is_finite() && (0.0..=1_000_000.0).contains(&h)) {
                return Err(UsageError::Invalid(
                    "A budget is a number of GPU-hours from 0 to 1000000, or empty for none."
                        .into(),
                ));
            }
        }
        let found = self
            .db
            .call(move |c| crate::db::users::set_gpu_hours_budget(c, user_id, hours))
            .await?;
        if found {
            Ok(())
        } else {
            Err(UsageError::NoSuchMember)
        }
    }

    /// Every member's budget (admin page).
    pub async fn budgets(&self) -> Result<HashMap<i64, f64>, UsageError> {
        Ok(self
            .db
            .call(|c| crate::db::users::gpu_hours_budgets(c))
            .await?)
    }
}
