//! A job and a schedule as the API and the pages show them.

use crate::clock::rfc3339;
use crate::config::Config;
use crate::db::jobs::{JobRow, ScheduleRow};
use crate::model::wire::{Job, JobErrorInfo, JobProgress, JobSchedule, JobTimes};
use crate::model::JobState;
use crate::notebooks::job_run::{output_folder, RunnerStatus};

/// The view of a stored job: `live_gpus` and `position` while it holds or waits for GPUs,
/// `status` (the runner's) while it runs.
pub fn job_view(
    config: &Config,
    job: JobRow,
    live_gpus: Option<Vec<String>>,
    position: Option<usize>,
    status: Option<RunnerStatus>,
) -> Job {
    let state = job.state();
    let progress = match &status {
        Some(RunnerStatus {
            cell: Some(cell),
            cells: Some(cells),
            source,
            ..
        }) => Some(JobProgress {
            cell: *cell,
            cells: *cells,
            source: source.clone(),
        }),
        _ => match (job.cell, job.cells) {
            (Some(cell), Some(cells)) => Some(JobProgress {
                cell,
                cells,
                source: None,
            }),
            _ => None,
        },
    };
    let state_detail = match (&job.live, state) {
        (_, s) if s.is_finished() => job.state_detail.clone(),
        (Some((_, detail)), JobState::Running) => match &progress {
            Some(p) if !detail.starts_with("Stopping") => {
                format!("Running cell {} of {}", p.cell, p.cells)
            }
            _ if detail == "Jupyter is ready" => "Running".into(),
            _ => detail.clone(),
        },
        (Some((_, detail)), _) => detail.clone(),
        (None, _) => job.state_detail.clone(),
    };
    let duration = match (job.started_at, job.finished_at) {
        (Some(s), Some(f)) => Some((f - s).max(0)),
        (Some(s), None) if state == JobState::Running => Some((crate::clock::now() - s).max(0)),
        _ => None,
    };
    let machine_name = config
        .machine(&job.machine_id)
        .map_or_else(|| job.machine_id.clone(), |m| m.name.clone());
    Job {
        notebook: job.notebook_id,
        notebook_name: job.notebook_name,
        path: job.path,
        command: job.command,
        image: job.image,
        machine: job.machine_id,
        machine_name,
        state,
        state_detail,
        queue_position: position.map(|p| p as i64),
        gpus: live_gpus.unwrap_or(job.gpus),
        progress,
        exit_code: job.exit_code,
        failed_cell: job.failed_cell,
        error: job.error_name.map(|ename| JobErrorInfo {
            ename,
            evalue: job.error_value.unwrap_or_default(),
        }),
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        finished_at: job.finished_at.map(rfc3339),
        duration_seconds: duration,
        gpu_hours: (job.gpu_seconds / 36.0).round() / 100.0,
        output: format!("{}/", output_folder(&job.id)),
        parameters: job.parameters,
        time_limit_seconds: job.time_limit_secs,
        schedule: job.schedule_id,
        url: format!("/jobs/{}", job.id),
        transient: !state.is_finished(),
        times: JobTimes {
            created: job.created_at,
            started: job.started_at,
            finished: job.finished_at,
        },
        id: job.id,
    }
}

pub fn schedule_view(config: &Config, s: ScheduleRow, runs: Vec<Job>) -> JobSchedule {
    let (text, time_zone) = match super::cron::Schedule::parse(&s.cron) {
        Ok(c) => (c.describe(), zone_name(config)),
        Err(_) => (s.cron.clone(), zone_name(config)),
    };
    JobSchedule {
        id: s.id,
        notebook: s.notebook_id,
        path: s.path,
        command: s.command,
        machine: s.machine_id,
        parameters: s.parameters,
        schedule: s.cron,
        schedule_text: text,
        overlap: s.overlap,
        time_zone,
        next_run_at: rfc3339(s.next_run_at),
        skipped: s.skipped,
        last_note: s.last_note,
        created_at: rfc3339(s.created_at),
        runs,
    }
}

/// The schedules' time zone, by name.
fn zone_name(config: &Config) -> String {
    match config.jobs.time_zone.trim() {
        "" => super::cron::time_zone("")
            .ok()
            .and_then(|tz| tz.iana_name().map(str::to_string))
            .unwrap_or_else(|| "the system's".into()),
        name => name.to_string(),
    }
}
