//! The reconciler's side of jobs (DESIGN.md, "Jobs"): what a job's container looks like,
//! and how a job's row in `notebooks` comes to its end — the container exited (succeeded
//! or failed, from its exit code and the runner's status file), it was cancelled or hit
//! its time limit (taken down), or it vanished. Each end is one `lifecycle::end_job`
//! transaction (usage closed when the container stopped, GPUs released, row removed,
//! history written), so a `kill -9` of Notebox at any point finds the same end again.
//!
//! What the runner writes (`jobs/{id}/` in the notebook's folder) is member-controlled: it
//! is read through `share::tree::MemberTree` (no symlinks, capped sizes) and only ever
//! shown to its member; the outcome comes from the engine's exit code.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::Config;
use crate::containers::{ContainerSpec, Engine, Mount, LABEL_JOB};
use crate::db::jobs::{self as jq, JobEnd, JobRow};
use crate::db::lifecycle::{self, UsageEnd};
use crate::db::notebooks::NotebookRow;
use crate::db::Db;
use crate::model::{JobState, NotebookState};
use crate::platform::webhook::{JobHappening, Webhook};
use crate::share::tree::MemberTree;

use super::dirs::{Dirs, NotebookDirs};
use super::spec::{container_spec, Gpus, ROOT_DIR};
use super::stop::Stopper;

/// Where a job's own files are in its container.
pub const JOB_MOUNT: &str = "/notebox-job";
/// The most of the status file read.
const STATUS_LIMIT: u64 = 64 * 1024;
/// SIGTERM grace for a job's container (the runner ends its kernel within a second).
const JOB_STOP_GRACE_SECS: i32 = 2;

/// The runner's status file (`jobs/{id}/status.json`), as far as Notebox reads it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunnerStatus {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub cell: Option<i64>,
    #[serde(default)]
    pub cells: Option<i64>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub failed_cell: Option<i64>,
    #[serde(default)]
    pub error: Option<RunnerError>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunnerError {
    #[serde(default)]
    pub ename: String,
    #[serde(default)]
    pub evalue: String,
}

/// The folder, relative to the notebook's, where a job's outputs go.
pub fn output_folder(job_id: &str) -> String {
    format!("jobs/{job_id}")
}

/// Reads the runner's status file from the notebook's folder (blocking; None: none yet,
/// unreadable, or not what the runner writes).
pub fn read_status(notebook_dir: &Path, job_id: &str) -> Option<RunnerStatus> {
    let tree = MemberTree::open(notebook_dir).ok()?;
    let bytes = tree
        .open_file(&format!("{}/status.json", output_folder(job_id)))
        .ok()?
        .read_capped(STATUS_LIMIT)
        .ok()?;
    let mut status: RunnerStatus = serde_json::from_slice(&bytes).ok()?;
    // The member's numbers: kept only when they make sense (cell i of n, n within reason).
    let cells = status.cells.filter(|n| (0..=10_000_000).contains(n));
    status.cells = cells;
    status.cell = status
        .cell
        .filter(|i| cells.is_some_and(|n| (0..=n).contains(i)));
    status.failed_cell = status
        .failed_cell
        .filter(|i| cells.is_some_and(|n| (1..=n).contains(i)));
    status.source = status.source.map(|s| s.chars().take(200).collect());
    if let Some(e) = status.error.as_mut() {
        e.ename = e.ename.chars().take(200).collect();
        e.evalue = e.evalue.chars().take(2000).collect();
    }
    status.message = status.message.map(|s| s.chars().take(2000).collect());
    Some(status)
}

/// A piece of a job's log (`jobs/{id}/log.txt`) from `offset`, at most `max` bytes, cut at
/// a character boundary: (text, the offset after it). A log over `limit` (the runner never
/// writes one: the member's container made it) is not read: a note, and its end's offset.
/// Blocking. No log yet: ("", offset).
pub fn read_log(
    notebook_dir: &Path,
    job_id: &str,
    offset: u64,
    max: u64,
    limit: u64,
) -> (String, u64) {
    let read = || -> Option<(String, u64)> {
        let tree = MemberTree::open(notebook_dir).ok()?;
        let opened = tree
            .open_file(&format!("{}/log.txt", output_folder(job_id)))
            .ok()?;
        if opened.size > limit {
            let note = format!(
                "[notebox: the log is {} MiB, over the {} MiB a job's log may have; open {}/log.txt in JupyterLab]\n",
                opened.size >> 20,
                limit >> 20,
                output_folder(job_id)
            );
            return Some(if offset >= opened.size {
                (String::new(), offset)
            } else {
                (note, opened.size)
            });
        }
        let mut file = opened.file;
        let start = offset.min(opened.size);
        file.seek(SeekFrom::Start(start)).ok()?;
        let mut buf = Vec::new();
        file.take(max).read_to_end(&mut buf).ok()?;
        let cut = match std::str::from_utf8(&buf) {
            Ok(_) => buf.len(),
            // An incomplete character at the end waits for the next read.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => buf.len(),
        };
        buf.truncate(cut);
        Some((
            String::from_utf8_lossy(&buf).into_owned(),
            start + cut as u64,
        ))
    };
    read().unwrap_or((String::new(), offset))
}

/// A job's container: a notebook's hardening, limits, GPUs and mounts (the member's
/// storage, the notebook's folder, datasets, group folders), its own files read-only, and
/// the runner instead of Jupyter.
pub fn job_spec(
    row: &NotebookRow,
    config: &Config,
    instance: &str,
    dirs: &NotebookDirs,
    job_dir: &Path,
    gpus: Gpus,
) -> ContainerSpec {
    let mut spec = container_spec(row, config, instance, dirs, gpus);
    spec.command = vec!["python3".into(), format!("{JOB_MOUNT}/run.py")];
    spec.env.retain(|e| !e.starts_with("JUPYTER_TOKEN="));
    spec.env.push(format!("NOTEBOX_JOB_ID={}", row.id));
    spec.env.push("PYTHONUNBUFFERED=1".into());
    spec.labels.insert(LABEL_JOB.to_string(), row.id.clone());
    spec.mounts.push(Mount {
        host: job_dir.to_path_buf(),
        container: JOB_MOUNT.to_string(),
        read_only: true,
    });
    spec.working_dir = ROOT_DIR.into();
    spec
}

/// Brings jobs to their end. Cheap to clone.
#[derive(Clone)]
pub struct JobEnding {
    pub(super) db: Db,
    pub(super) config: Arc<Config>,
    pub(super) engine: Engine,
    pub(super) webhook: Webhook,
    pub(super) dirs: Dirs,
    pub(super) stopper: Stopper,
}

impl JobEnding {
    /// The job's status file, read off the executor.
    async fn status_of(&self, job: &JobRow) -> Option<RunnerStatus> {
        let (dir, id) = (self.dirs.notebook_dir(&job.notebook_id), job.id.clone());
        tokio::task::spawn_blocking(move || read_status(&dir, &id))
            .await
            .ok()
            .flatten()
    }

    async fn job(&self, id: &str) -> Option<JobRow> {
        let id = id.to_string();
        match self.db.call(move |c| jq::by_id(c, &id)).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a job");
                None
            }
        }
    }

    /// Its container started: the time limit counts from now; the webhook hears of it.
    pub async fn record_started(&self, nb: &NotebookRow, gpus: &[String]) -> bool {
        let (id, gpus) = (nb.id.clone(), gpus.to_vec());
        let recorded = self
            .db
            .call(move |c| lifecycle::record_job_started(c, &id, crate::clock::now(), &gpus))
            .await;
        match recorded {
            Ok(tell) => {
                if tell {
                    if let Some(job) = self.job(&nb.id).await {
                        self.tell(&job, crate::platform::webhook::EventKind::JobStarted);
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(job = %nb.id, error = %e, "cannot record a job's start");
                false
            }
        }
    }

    /// The container exited by itself: succeeded or failed, by its exit code; its usage
    /// ends when it stopped. The container is removed once the end is written.
    pub async fn finished(&self, nb: &NotebookRow, containers: &[String]) {
        let Some(job) = self.job(&nb.id).await else {
            return;
        };
        let network = &self.config.docker.network;
        let status = match containers.first() {
            Some(c) => match self.engine.inspect(c, network).await {
                Ok(status) => Some(status),
                // Removed between the listing and now: it vanished.
                Err(crate::containers::EngineError::NotFound(_)) => return self.vanished(nb).await,
                Err(_) => None,
            },
            None => None,
        };
        let runner = self.status_of(&job).await;
        let exit_code = status.as_ref().and_then(|s| s.exit_code);
        let oom = status.as_ref().is_some_and(|s| s.oom_killed);
        let mut end = describe_exit(exit_code, oom, runner.as_ref());
        if end.outcome == Some(JobState::Failed) && runner.is_none() {
            // The runner never wrote a word: the container's own log says why.
            end.detail = self.stopper.exit_explanation(containers, &end.detail).await;
        }
        let ended = match status.and_then(|s| s.finished_at) {
            Some(t) => UsageEnd::At(t.min(crate::clock::now())),
            None => UsageEnd::LastSeen,
        };
        if self.end(&job, ended, end).await {
            self.stopper.remove_containers(&nb.id, containers, 0).await;
        }
    }

    /// Its container is gone although it should run.
    pub async fn vanished(&self, nb: &NotebookRow) {
        let Some(job) = self.job(&nb.id).await else {
            return;
        };
        tracing::warn!(job = %nb.id, "job container vanished");
        let runner = self.status_of(&job).await;
        let end = JobEnd {
            outcome: Some(JobState::Failed),
            detail: format!(
                "The job's container was removed outside Notebox; what it wrote so far is in {}/.",
                output_folder(&job.id)
            ),
            cell: runner.as_ref().and_then(|r| r.cell),
            cells: runner.as_ref().and_then(|r| r.cells),
            ..JobEnd::default()
        };
        self.end(&job, UsageEnd::LastSeen, end).await;
    }

    /// Over its time limit: asked to end as timed out, then taken down.
    pub async fn time_limit(&self, nb: &NotebookRow, containers: &[String]) {
        let limit = nb.auto_shutdown_secs.unwrap_or(0);
        let note = format!(
            "stopped after its time limit of {}",
            humantime::format_duration(std::time::Duration::from_secs(limit.max(0) as u64))
        );
        let id = nb.id.clone();
        let asked = self
            .db
            .call(move |c| lifecycle::request_job_end(c, &id, JobState::TimedOut, &note))
            .await;
        if let Err(e) = asked {
            tracing::warn!(job = %nb.id, error = %e, "cannot stop a job at its time limit");
            return;
        }
        self.take_down(nb, containers).await;
    }

    /// Asked to end (cancelled, timed out, its notebook or member gone): the container is
    /// taken down, then the end written (the outcome asked for).
    pub async fn take_down(&self, nb: &NotebookRow, containers: &[String]) {
        let Some(job) = self.job(&nb.id).await else {
            return;
        };
        if nb.state != NotebookState::Stopping {
            let id = nb.id.clone();
            if let Err(e) = self
                .db
                .call(move |c| lifecycle::record_stopping(c, &id))
                .await
            {
                tracing::warn!(job = %nb.id, error = %e, "cannot mark a job stopping");
                return;
            }
        }
        if !self
            .stopper
            .remove_containers(&nb.id, containers, JOB_STOP_GRACE_SECS)
            .await
        {
            return; // the next pass tries again
        }
        let runner = self.status_of(&job).await;
        let end = JobEnd {
            outcome: Some(JobState::Cancelled),
            detail: "Cancelled".into(),
            cell: runner.as_ref().and_then(|r| r.cell),
            cells: runner.as_ref().and_then(|r| r.cells),
            ..JobEnd::default()
        };
        self.end(&job, UsageEnd::Now, end).await;
    }

    /// Its row came to rest without an end written: taken out of the queue (the end asked
    /// for), or its start failed (the reason on its row).
    pub async fn settle(&self, nb: &NotebookRow) {
        let Some(job) = self.job(&nb.id).await else {
            return;
        };
        let end = JobEnd {
            outcome: Some(if nb.state == NotebookState::Failed {
                JobState::Failed
            } else {
                JobState::Cancelled
            }),
            detail: nb.state_detail.clone(),
            ..JobEnd::default()
        };
        self.end(&job, UsageEnd::Now, end).await;
    }

    /// Writes the end in one transaction; the webhook hears of it. False when the
    /// database refused (the next pass tries again).
    async fn end(&self, job: &JobRow, ended: UsageEnd, end: JobEnd) -> bool {
        let id = job.id.clone();
        match self
            .db
            .call(move |c| lifecycle::end_job(c, &id, ended, &end))
            .await
        {
            Ok(written) => {
                // Its own files served only while it ran (the outputs stay in the folder).
                let dir = self.dirs.job_dir(&job.id);
                if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(job = %job.id, error = %e, "cannot remove a job's files");
                    }
                }
                if written {
                    if let Some(job) = self.job(&job.id).await {
                        tracing::info!(job = %job.id, state = %job.state(), "job ended");
                        self.tell(&job, crate::platform::webhook::EventKind::JobFinished);
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "cannot record a job's end");
                false
            }
        }
    }

    fn tell(&self, job: &JobRow, kind: crate::platform::webhook::EventKind) {
        if !self.webhook.is_enabled() {
            return;
        }
        let duration = match (job.started_at, job.finished_at) {
            (Some(s), Some(f)) => Some((f - s).max(0)),
            _ => None,
        };
        self.webhook.tell_job(JobHappening {
            kind,
            job_id: &job.id,
            member: &job.owner,
            notebook_id: &job.notebook_id,
            notebook_name: &job.notebook_name,
            what: &job_title(job),
            state: job.state(),
            detail: &job.state_detail,
            duration_seconds: duration,
            gpu_hours: job.gpu_seconds / 3600.0,
        });
    }
}

/// "train.ipynb", or the command.
pub fn job_title(job: &JobRow) -> String {
    match (&job.path, &job.command) {
        (Some(path), _) => path.clone(),
        (None, Some(command)) => command.join(" "),
        (None, None) => job.id.clone(),
    }
}

/// What an exit says: succeeded on 0; otherwise failed, in the runner's words when it
/// wrote them (which cell, which error).
fn describe_exit(exit_code: Option<i64>, oom: bool, runner: Option<&RunnerStatus>) -> JobEnd {
    let cell = runner.and_then(|r| r.cell);
    let cells = runner.and_then(|r| r.cells);
    let mut end = JobEnd {
        exit_code,
        cell,
        cells,
        failed_cell: runner.and_then(|r| r.failed_cell),
        error_name: runner.and_then(|r| r.error.as_ref().map(|e| e.ename.clone())),
        error_value: runner.and_then(|r| r.error.as_ref().map(|e| e.evalue.clone())),
        ..JobEnd::default()
    };
    if exit_code == Some(0) && !oom {
        end.outcome = Some(JobState::Succeeded);
        end.detail = match cells {
            Some(n) => format!("Finished: all {n} cells ran"),
            None => "Finished (exit code 0)".into(),
        };
        return end;
    }
    end.outcome = Some(JobState::Failed);
    end.detail = if oom {
        "It ran out of memory (choose a machine type with more memory)".into()
    } else if let (Some(i), Some(e)) = (end.failed_cell, runner.and_then(|r| r.error.as_ref())) {
        let of = cells.map(|n| format!(" of {n}")).unwrap_or_default();
        format!("Cell {i}{of} raised {}: {}", e.ename, e.evalue)
    } else if let Some(message) = runner.and_then(|r| r.message.clone()) {
        format!("{message} (exit code {})", exit_code.unwrap_or(-1))
    } else {
        match exit_code {
            Some(code) => format!("It exited with code {code}"),
            None => "It stopped; the engine did not say how".into(),
        }
    };
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_told_apart() {
        let ok = describe_exit(Some(0), false, None);
        assert_eq!(ok.outcome, Some(JobState::Succeeded));
        let runner = RunnerStatus {
            cell: Some(3),
            cells: Some(5),
            failed_cell: Some(3),
            error: Some(RunnerError {
                ename: "ZeroDivisionError".into(),
                evalue: "division by zero".into(),
            }),
            ..RunnerStatus::default()
        };
        let failed = describe_exit(Some(1), false, Some(&runner));
        assert_eq!(failed.outcome, Some(JobState::Failed));
        assert_eq!(
            failed.detail,
            "Cell 3 of 5 raised ZeroDivisionError: division by zero"
        );
        assert!(describe_exit(Some(137), true, None)
            .detail
            .contains("out of memory"));
        assert_eq!(
            describe_exit(Some(2), false, None).detail,
            "It exited with code 2"
        );
    }

    #[test]
    fn logs_are_read_in_pieces_at_character_boundaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("jobs/j1")).expect("mkdir");
        std::fs::write(dir.path().join("jobs/j1/log.txt"), "ab€cd").expect("write");
        // "€" is 3 bytes: a read of 3 stops before it.
        let (text, next) = read_log(dir.path(), "j1", 0, 3, 1000);
        assert_eq!((text.as_str(), next), ("ab", 2));
        let (text, next) = read_log(dir.path(), "j1", next, 100, 1000);
        assert_eq!((text.as_str(), next), ("€cd", 7));
        // Over the limit: a note, and the follower is at the end at once.
        let (text, next) = read_log(dir.path(), "j1", 0, 100, 4);
        assert!(text.contains("over the"), "{text}");
        assert_eq!(next, 7);
        assert_eq!(read_log(dir.path(), "j1", 7, 100, 4), (String::new(), 7));
        // A symlinked log is not followed.
        std::fs::create_dir_all(dir.path().join("jobs/j2")).expect("mkdir");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("jobs/j2/log.txt"))
            .expect("symlink");
        assert_eq!(read_log(dir.path(), "j2", 0, 100, 1000), (String::new(), 0));
    }
}
