//! The scheduler: a task that starts scheduled runs when their time comes (in the lab's
//! time zone), honouring each schedule's overlap policy, and forgets ended jobs past
//! retention. Its decisions are in the database (`job_schedules.next_run_at`, `pending`),
//! so a restart neither loses nor doubles a run: a time missed while Notebox was down runs
//! once when it is back.

use std::time::Duration;

use crate::db::jobs::{self as jq, ScheduleRow};
use crate::db::users;

use super::cron::Schedule;
use super::Jobs;

/// How often schedules are looked at.
const TICK: Duration = Duration::from_secs(2);
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// What to do with a due schedule.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// Start a run now.
    Run,
    /// The previous run is still going: skip this one.
    Skip,
    /// The previous run is still going: run once it ends.
    Owe,
    /// Not yet.
    Wait,
}

fn turn(s: &ScheduleRow, now: i64, previous_going: bool) -> Turn {
    let due = s.next_run_at <= now;
    match (due, s.pending, previous_going) {
        (_, true, false) | (true, false, false) => Turn::Run,
        (true, _, true) if s.overlap == "queue" => Turn::Owe,
        (true, _, true) => Turn::Skip,
        _ => Turn::Wait,
    }
}

/// Runs until the process ends.
pub async fn run(jobs: Jobs) {
    let mut last_retention: Option<std::time::Instant> = None;
    loop {
        tick(&jobs).await;
        if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
            last_retention = Some(std::time::Instant::now());
            retention(&jobs).await;
            remove_leftover_files(&jobs).await;
        }
        tokio::time::sleep(TICK).await;
    }
}

/// One look at every due schedule.
pub async fn tick(jobs: &Jobs) {
    let now = crate::clock::now();
    let due = match jobs.db.call(move |c| jq::due_schedules(c, now)).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "scheduler cannot read schedules");
            return;
        }
    };
    for s in due {
        if let Err(e) = one(jobs, &s, now).await {
            tracing::warn!(schedule = %s.id, error = %e, "scheduler cannot record a run");
        }
    }
}

async fn one(jobs: &Jobs, s: &ScheduleRow, now: i64) -> Result<(), crate::db::DbError> {
    let sid = s.id.clone();
    let going = jobs
        .db
        .call(move |c| jq::schedule_has_unfinished(c, &sid))
        .await?;
    // An owed run that starts keeps the schedule's time; a due time moves on.
    let next = if s.next_run_at <= now {
        next_time(jobs, s, now)
    } else {
        s.next_run_at
    };
    let when = crate::clock::rfc3339(s.next_run_at.min(now));
    let (pending, skipped, note) = match turn(s, now, going) {
        Turn::Wait => return Ok(()),
        Turn::Skip => (
            false,
            true,
            format!("Skipped the run due at {when}: the previous run was still going."),
        ),
        Turn::Owe => (
            true,
            false,
            format!("The run due at {when} waits for the previous one to end."),
        ),
        Turn::Run => (false, false, start_run(jobs, s, next).await),
    };
    let sid = s.id.clone();
    jobs.db
        .call(move |c| jq::advance_schedule(c, &sid, next, pending, skipped, Some(&note)))
        .await
}

/// The schedule's next time after now (far away when it has none: it never runs again).
fn next_time(jobs: &Jobs, s: &ScheduleRow, now: i64) -> i64 {
    let tz = super::cron::time_zone(&jobs.config.jobs.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    Schedule::parse(&s.cron)
        .ok()
        .and_then(|c| c.next_after(now, &tz))
        .unwrap_or(i64::MAX / 2)
}

/// Starts a run as the schedule's member; what happened, for the schedule's page.
/// The run and the schedule's move to `next` are written in one transaction.
async fn start_run(jobs: &Jobs, s: &ScheduleRow, next: i64) -> String {
    let owner_id = s.owner_id;
    let owner = match jobs.db.call(move |c| users::by_id(c, owner_id)).await {
        Ok(Some(u)) if !u.disabled => u,
        Ok(_) => return "Not run: the member's account is disabled.".into(),
        Err(e) => return format!("Not run: {e}"),
    };
    match jobs.run_scheduled(&owner, s, next).await {
        Ok(job) => {
            tracing::info!(schedule = %s.id, job = %job.id, "scheduled run submitted");
            format!("Started job {} at {}.", job.id, job.created_at)
        }
        Err(e) => {
            tracing::info!(schedule = %s.id, error = %e, "scheduled run refused");
            format!("A run could not start: {e}")
        }
    }
}

/// Removes `{data_dir}/jobs/{id}/` folders whose job ended or does not exist (a crash
/// between a job's end and its folder's removal; a submission refused after its files
/// were written). A folder younger than ten minutes may be a submission under way: kept.
pub async fn remove_leftover_files(jobs: &Jobs) {
    let root = jobs.job_dir("");
    let Ok(mut entries) = tokio::fs::read_dir(&root).await else {
        return;
    };
    let mut looked = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        looked += 1;
        if looked > 10_000 {
            break;
        }
        let young = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < Duration::from_secs(600));
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if young {
            continue;
        }
        let jid = id.clone();
        let ended = match jobs.db.call(move |c| jq::by_id(c, &jid)).await {
            Ok(Some(job)) => job.outcome.is_some(),
            Ok(None) => true,
            Err(_) => false,
        };
        if ended {
            if let Err(e) = tokio::fs::remove_dir_all(entry.path()).await {
                tracing::warn!(job = %id, error = %e, "cannot remove a job's leftover files");
            }
        }
    }
}

/// Forgets ended jobs past `jobs.keep_finished`, and runs beyond
/// `jobs.keep_runs_per_schedule`; their own files go too (outputs in the notebook's
/// folder are the member's and stay).
pub async fn retention(jobs: &Jobs) {
    let keep = jobs.config.jobs.keep_finished.as_secs() as i64;
    let before = crate::clock::now() - keep;
    let per_schedule = i64::from(jobs.config.jobs.keep_runs_per_schedule);
    let expired = match jobs
        .db
        .call(move |c| jq::expired(c, before, per_schedule))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "job retention cannot read jobs");
            return;
        }
    };
    for id in expired {
        let dir = jobs.job_dir(&id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(job = %id, error = %e, "cannot remove an old job's files");
                continue;
            }
        }
        let jid = id.clone();
        if let Err(e) = jobs.db.call(move |c| jq::delete(c, &jid)).await {
            tracing::warn!(job = %id, error = %e, "cannot forget an old job");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(next: i64, pending: bool, overlap: &str) -> ScheduleRow {
        ScheduleRow {
            id: "s".into(),
            owner_id: 1,
            notebook_id: "n".into(),
            path: Some("a.ipynb".into()),
            command: None,
            parameters: Default::default(),
            image: None,
            environment_id: None,
            machine_id: "cpu".into(),
            time_limit_secs: None,
            cron: "* * * * *".into(),
            overlap: overlap.into(),
            next_run_at: next,
            pending,
            skipped: 0,
            last_note: None,
            created_at: 0,
        }
    }

    #[test]
    fn overlap_policies() {
        assert_eq!(turn(&schedule(100, false, "skip"), 50, false), Turn::Wait);
        assert_eq!(turn(&schedule(100, false, "skip"), 100, false), Turn::Run);
        assert_eq!(turn(&schedule(100, false, "skip"), 100, true), Turn::Skip);
        assert_eq!(turn(&schedule(100, false, "queue"), 100, true), Turn::Owe);
        // An owed run starts once the previous one ended, before its next time.
        assert_eq!(turn(&schedule(200, true, "queue"), 100, false), Turn::Run);
        assert_eq!(turn(&schedule(200, true, "queue"), 100, true), Turn::Wait);
    }
}
