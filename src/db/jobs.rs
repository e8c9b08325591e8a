//! The `jobs` and `job_schedules` tables. A job on its way or running also has a row in
//! `notebooks` (kind 'job', same id) that the queue and the reconciler work on; its end is
//! written here in the transaction that removes that row (`lifecycle::end_job`).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::DbError;
use crate::model::{JobState, NotebookState};

/// A job as stored, with the state of its row in `notebooks` while it has one.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub owner_id: i64,
    pub owner: String,
    pub notebook_id: String,
    pub notebook_name: String,
    pub path: Option<String>,
    pub command: Option<Vec<String>>,
    /// A JSON object.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub image: String,
    pub machine_id: String,
    pub gpu_count: i64,
    pub time_limit_secs: Option<i64>,
    pub schedule_id: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub outcome: Option<JobState>,
    pub requested_end: Option<JobState>,
    pub requested_note: Option<String>,
    pub state_detail: String,
    pub exit_code: Option<i64>,
    pub cells: Option<i64>,
    pub cell: Option<i64>,
    pub failed_cell: Option<i64>,
    pub error_name: Option<String>,
    pub error_value: Option<String>,
    pub gpu_seconds: f64,
    /// The GPUs it held (kept once it ended).
    pub gpus: Vec<String>,
    /// Its row in `notebooks` (None once it ended): state and detail.
    pub live: Option<(NotebookState, String)>,
}

impl JobRow {
    /// Where it is now.
    pub fn state(&self) -> JobState {
        match (self.outcome, &self.live) {
            (Some(outcome), _) => outcome,
            (None, Some((state, _))) => JobState::of_row(*state),
            // Neither an outcome nor a row: cannot happen (both change in one transaction).
            (None, None) => JobState::Failed,
        }
    }
}

const SELECT: &str = "SELECT j.id, j.owner_id, u.username, j.notebook_id, j.notebook_name,
    j.path, j.command, j.parameters, j.image, j.machine_id, j.gpu_count, j.time_limit_secs,
    j.schedule_id, j.created_at, j.started_at, j.finished_at, j.outcome, j.requested_end,
    j.requested_note, j.state_detail, j.exit_code, j.cells, j.cell, j.failed_cell,
    j.error_name, j.error_value, j.gpu_seconds, j.gpus, n.state, n.state_detail
    FROM jobs j JOIN users u ON u.id = j.owner_id LEFT JOIN notebooks n ON n.id = j.id";

fn from_row(r: &Row) -> rusqlite::Result<JobRow> {
    let command: Option<String> = r.get(6)?;
    let parameters: String = r.get(7)?;
    let gpus: String = r.get(27)?;
    let live_state: Option<NotebookState> = r.get(28)?;
    Ok(JobRow {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        owner: r.get(2)?,
        notebook_id: r.get(3)?,
        notebook_name: r.get(4)?,
        path: r.get(5)?,
        command: command.and_then(|c| serde_json::from_str(&c).ok()),
        parameters: serde_json::from_str(&parameters).unwrap_or_default(),
        image: r.get(8)?,
        machine_id: r.get(9)?,
        gpu_count: r.get(10)?,
        time_limit_secs: r.get(11)?,
        schedule_id: r.get(12)?,
        created_at: r.get(13)?,
        started_at: r.get(14)?,
        finished_at: r.get(15)?,
        outcome: r.get(16)?,
        requested_end: r.get(17)?,
        requested_note: r.get(18)?,
        state_detail: r.get(19)?,
        exit_code: r.get(20)?,
        cells: r.get(21)?,
        cell: r.get(22)?,
        failed_cell: r.get(23)?,
        error_name: r.get(24)?,
        error_value: r.get(25)?,
        gpu_seconds: r.get(26)?,
        gpus: serde_json::from_str(&gpus).unwrap_or_default(),
        live: match live_state {
            Some(s) => Some((s, r.get::<_, Option<String>>(29)?.unwrap_or_default())),
            None => None,
        },
    })
}

/// What a new job stores (its row in `notebooks` is inserted beside it).
pub struct NewJob<'a> {
    pub id: &'a str,
    pub owner_id: i64,
    pub notebook_id: &'a str,
    pub notebook_name: &'a str,
    pub path: Option<&'a str>,
    pub command: Option<&'a [String]>,
    pub parameters: &'a serde_json::Map<String, serde_json::Value>,
    pub image: &'a str,
    pub machine_id: &'a str,
    pub gpu_count: i64,
    pub time_limit_secs: Option<i64>,
    pub schedule_id: Option<&'a str>,
}

/// Stores a job and marks its row in `notebooks` (inserted first, same transaction) as a
/// job's.
pub fn insert(conn: &Connection, j: &NewJob) -> Result<(), DbError> {
    let command = j
        .command
        .map(|c| serde_json::to_string(c).unwrap_or_else(|_| "[]".into()));
    let parameters = serde_json::to_string(j.parameters).unwrap_or_else(|_| "{}".into());
    conn.execute(
        "INSERT INTO jobs (id, owner_id, notebook_id, notebook_name, path, command, parameters,
            image, machine_id, gpu_count, time_limit_secs, schedule_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            j.id,
            j.owner_id,
            j.notebook_id,
            j.notebook_name,
            j.path,
            command,
            parameters,
            j.image,
            j.machine_id,
            j.gpu_count,
            j.time_limit_secs,
            j.schedule_id,
            crate::clock::now()
        ],
    )?;
    conn.execute(
        "UPDATE notebooks SET kind = 'job' WHERE id = ?1",
        params![j.id],
    )?;
    Ok(())
}

pub fn by_id(conn: &Connection, id: &str) -> Result<Option<JobRow>, DbError> {
    Ok(conn
        .prepare_cached(&format!("{SELECT} WHERE j.id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

/// A member's jobs, newest first, at most `limit`.
pub fn list_for_owner(
    conn: &Connection,
    owner_id: i64,
    limit: i64,
) -> Result<Vec<JobRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE j.owner_id = ?1 ORDER BY j.created_at DESC, j.rowid DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![owner_id, limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A schedule's runs, newest first, at most `limit`.
pub fn list_for_schedule(
    conn: &Connection,
    schedule_id: &str,
    limit: i64,
) -> Result<Vec<JobRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE j.schedule_id = ?1 ORDER BY j.created_at DESC, j.rowid DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![schedule_id, limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many of a member's jobs have not ended.
pub fn unfinished_count_of(conn: &Connection, owner_id: i64) -> Result<i64, DbError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM jobs WHERE outcome IS NULL AND owner_id = ?1",
        [owner_id],
        |r| r.get(0),
    )?)
}

/// The jobs of a notebook that have not ended.
pub fn unfinished_of_notebook(
    conn: &Connection,
    notebook_id: &str,
) -> Result<Vec<String>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT id FROM jobs WHERE outcome IS NULL AND notebook_id = ?1")?;
    let rows = stmt.query_map([notebook_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The jobs of a member that have not ended.
pub fn unfinished_of_owner(conn: &Connection, owner_id: i64) -> Result<Vec<String>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT id FROM jobs WHERE outcome IS NULL AND owner_id = ?1")?;
    let rows = stmt.query_map([owner_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Asks a job to end (`cancelled` or `timed_out`, with a note for its page), unless it
/// ended or was asked already. Whether this asked.
pub fn request_end(
    conn: &Connection,
    id: &str,
    end: JobState,
    note: &str,
) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE jobs SET requested_end = ?2, requested_note = ?3
         WHERE id = ?1 AND outcome IS NULL AND requested_end IS NULL",
        params![id, end, note],
    )? == 1)
}

/// Its container started: the time limit counts from `at`; `gpus` are kept for history.
pub fn record_started(
    conn: &Connection,
    id: &str,
    at: i64,
    gpus: &[String],
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE jobs SET started_at = COALESCE(started_at, ?2), gpus = ?3 WHERE id = ?1",
        params![
            id,
            at,
            serde_json::to_string(gpus).unwrap_or_else(|_| "[]".into())
        ],
    )?;
    Ok(())
}

/// Progress seen in its status file (cell i of n).
pub fn record_progress(conn: &Connection, id: &str, cell: i64, cells: i64) -> Result<(), DbError> {
    conn.execute(
        "UPDATE jobs SET cell = ?2, cells = ?3 WHERE id = ?1 AND outcome IS NULL",
        params![id, cell, cells],
    )?;
    Ok(())
}

/// The webhook heard of its start (once per job, across restarts). Whether this marked it.
pub fn mark_told_started(conn: &Connection, id: &str) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE jobs SET told_started = 1 WHERE id = ?1 AND told_started = 0",
        [id],
    )? == 1)
}

/// How a job ended, as the reconciler found it.
#[derive(Debug, Clone, Default)]
pub struct JobEnd {
    pub outcome: Option<JobState>,
    pub detail: String,
    pub finished_at: i64,
    pub exit_code: Option<i64>,
    pub cell: Option<i64>,
    pub cells: Option<i64>,
    pub failed_cell: Option<i64>,
    pub error_name: Option<String>,
    pub error_value: Option<String>,
}

/// Writes a job's end (once: a job that ended keeps its first end). Call inside the
/// transaction that removes its row in `notebooks`. The outcome asked for (a cancel, the
/// time limit) wins over what the container said.
pub fn write_end(conn: &Connection, id: &str, end: &JobEnd) -> Result<bool, DbError> {
    let gpu_seconds: f64 = conn.query_row(
        "SELECT COALESCE(SUM(MAX(0, COALESCE(ended_at, ?2) - started_at)), 0) FROM usage_intervals
         WHERE notebook_id = ?1 AND gpu_uuid IS NOT NULL",
        params![id, end.finished_at],
        |r| r.get(0),
    )?;
    Ok(conn.execute(
        "UPDATE jobs SET outcome = COALESCE(requested_end, ?2),
            state_detail = CASE WHEN requested_end IS NOT NULL AND requested_note IS NOT NULL
                                THEN requested_note ELSE ?3 END,
            finished_at = ?4, exit_code = ?5, cell = COALESCE(?6, cell),
            cells = COALESCE(?7, cells), failed_cell = ?8, error_name = ?9, error_value = ?10,
            gpu_seconds = ?11
         WHERE id = ?1 AND outcome IS NULL",
        params![
            id,
            end.outcome.unwrap_or(JobState::Failed),
            end.detail,
            end.finished_at,
            end.exit_code,
            end.cell,
            end.cells,
            end.failed_cell,
            end.error_name,
            end.error_value,
            gpu_seconds
        ],
    )? == 1)
}

/// Ended jobs past retention: finished before `before`, or beyond the newest `keep` runs
/// of their schedule. Their ids (their files are removed, then `delete`).
pub fn expired(conn: &Connection, before: i64, keep: i64) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM jobs WHERE outcome IS NOT NULL AND finished_at < ?1
         UNION
         SELECT id FROM (SELECT id, outcome, ROW_NUMBER() OVER (
                    PARTITION BY schedule_id ORDER BY created_at DESC, rowid DESC) AS n
                FROM jobs WHERE schedule_id IS NOT NULL)
         WHERE n > ?2 AND outcome IS NOT NULL
         LIMIT 500",
    )?;
    let rows = stmt.query_map(params![before, keep], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn delete(conn: &Connection, id: &str) -> Result<(), DbError> {
    conn.execute(
        "DELETE FROM jobs WHERE id = ?1 AND outcome IS NOT NULL",
        [id],
    )?;
    Ok(())
}

/// A job definition on a schedule.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub id: String,
    pub owner_id: i64,
    pub notebook_id: String,
    pub path: Option<String>,
    pub command: Option<Vec<String>>,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub image: Option<String>,
    pub environment_id: Option<String>,
    pub machine_id: String,
    pub time_limit_secs: Option<i64>,
    pub cron: String,
    /// "skip" or "queue".
    pub overlap: String,
    pub next_run_at: i64,
    pub pending: bool,
    pub skipped: i64,
    pub last_note: Option<String>,
    pub created_at: i64,
}

const SCHEDULE_SELECT: &str = "SELECT id, owner_id, notebook_id, path, command, parameters,
    image, environment_id, machine_id, time_limit_secs, cron, overlap, next_run_at, pending,
    skipped, last_note, created_at FROM job_schedules";

fn schedule_from_row(r: &Row) -> rusqlite::Result<ScheduleRow> {
    let command: Option<String> = r.get(4)?;
    let parameters: String = r.get(5)?;
    Ok(ScheduleRow {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        notebook_id: r.get(2)?,
        path: r.get(3)?,
        command: command.and_then(|c| serde_json::from_str(&c).ok()),
        parameters: serde_json::from_str(&parameters).unwrap_or_default(),
        image: r.get(6)?,
        environment_id: r.get(7)?,
        machine_id: r.get(8)?,
        time_limit_secs: r.get(9)?,
        cron: r.get(10)?,
        overlap: r.get(11)?,
        next_run_at: r.get(12)?,
        pending: r.get(13)?,
        skipped: r.get(14)?,
        last_note: r.get(15)?,
        created_at: r.get(16)?,
    })
}

pub fn insert_schedule(conn: &Connection, s: &ScheduleRow) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO job_schedules (id, owner_id, notebook_id, path, command, parameters, image,
            environment_id, machine_id, time_limit_secs, cron, overlap, next_run_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            s.id,
            s.owner_id,
            s.notebook_id,
            s.path,
            s.command
                .as_ref()
                .map(|c| serde_json::to_string(c).unwrap_or_else(|_| "[]".into())),
            serde_json::to_string(&s.parameters).unwrap_or_else(|_| "{}".into()),
            s.image,
            s.environment_id,
            s.machine_id,
            s.time_limit_secs,
            s.cron,
            s.overlap,
            s.next_run_at,
            s.created_at
        ],
    )?;
    Ok(())
}

pub fn schedule_by_id(conn: &Connection, id: &str) -> Result<Option<ScheduleRow>, DbError> {
    Ok(conn
        .prepare_cached(&format!("{SCHEDULE_SELECT} WHERE id = ?1"))?
        .query_row([id], schedule_from_row)
        .optional()?)
}

pub fn schedules_of_owner(conn: &Connection, owner_id: i64) -> Result<Vec<ScheduleRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SCHEDULE_SELECT} WHERE owner_id = ?1 ORDER BY created_at DESC, id"
    ))?;
    let rows = stmt.query_map([owner_id], schedule_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many schedules a member has.
pub fn schedule_count_of(conn: &Connection, owner_id: i64) -> Result<i64, DbError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM job_schedules WHERE owner_id = ?1",
        [owner_id],
        |r| r.get(0),
    )?)
}

/// Schedules whose time has come, or that owe a run (overlap 'queue').
pub fn due_schedules(conn: &Connection, now: i64) -> Result<Vec<ScheduleRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SCHEDULE_SELECT} WHERE next_run_at <= ?1 OR pending = 1 ORDER BY next_run_at, id"
    ))?;
    let rows = stmt.query_map([now], schedule_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The next time, whether a run is owed, and what happened last (for the page).
pub fn advance_schedule(
    conn: &Connection,
    id: &str,
    next_run_at: i64,
    pending: bool,
    skipped_one: bool,
    note: Option<&str>,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE job_schedules SET next_run_at = ?2, pending = ?3,
            skipped = skipped + ?4, last_note = COALESCE(?5, last_note)
         WHERE id = ?1",
        params![id, next_run_at, pending, i64::from(skipped_one), note],
    )?;
    Ok(())
}

/// Whether a run of this schedule has not ended.
pub fn schedule_has_unfinished(conn: &Connection, schedule_id: &str) -> Result<bool, DbError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE schedule_id = ?1 AND outcome IS NULL)",
        [schedule_id],
        |r| r.get(0),
    )?)
}

pub fn delete_schedule(conn: &Connection, id: &str) -> Result<bool, DbError> {
    Ok(conn.execute("DELETE FROM job_schedules WHERE id = ?1", [id])? == 1)
}

/// Schedules that run in a notebook's folder (removed with the notebook).
pub fn delete_schedules_of_notebook(conn: &Connection, notebook_id: &str) -> Result<(), DbError> {
    conn.execute(
        "DELETE FROM job_schedules WHERE notebook_id = ?1",
        [notebook_id],
    )?;
    Ok(())
}
