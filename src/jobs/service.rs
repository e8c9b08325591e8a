//! What members can do with jobs: submit one (or a schedule of them), list and read them,
//! follow their log, read their outputs, cancel, run again. A job is placed through the
//! same GPU queue as notebooks (`db::placement`) and handed to the reconciler, which runs
//! and ends it (`notebooks::job_run`).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::auth::{secrets, User};
use crate::config::Config;
use crate::db::jobs::{self as jq, JobRow, NewJob, ScheduleRow};
use crate::db::notebooks::{NewNotebook, NotebookRow};
use crate::db::placement::{self, Placement, PlacementRequest};
use crate::db::{gpus as gq, lifecycle, Db};
use crate::gpu::telemetry::Telemetry;
use crate::model::wire::{Job, JobLog, JobSchedule};
use crate::model::{DesiredState, JobState, NotebookState};
use crate::notebooks::job_run::{self, output_folder};
use crate::notebooks::{Dirs, Notebooks, Reconciler};
use crate::share::tree::{MemberTree, TreeError};

use super::cron::Schedule;
use super::rules;
use super::view::{job_view, schedule_view};
use super::JobError;

/// The runner every job's container runs (`python3 /notebox-job/run.py`).
const RUNNER: &str = include_str!("runner.py");
/// The most of a log one answer carries.
const LOG_PIECE: u64 = 256 * 1024;
/// The largest output file the API hands out (bigger ones: from JupyterLab).
const MAX_OUTPUT_DOWNLOAD: u64 = 16 * 1024 * 1024;
/// Jobs listed at most.
const LIST_LIMIT: i64 = 200;

/// What the jobs service is built from (see `lib::run`).
pub struct JobsParts {
    pub db: Db,
    pub config: Arc<Config>,
    pub telemetry: Telemetry,
    pub notebooks: Notebooks,
    pub reconciler: Reconciler,
}

/// Members' jobs. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    pub(super) db: Db,
    pub(super) config: Arc<Config>,
    telemetry: Telemetry,
    notebooks: Notebooks,
    reconciler: Reconciler,
    pub(super) dirs: Dirs,
    /// Output notebooks rendered at once (each may take a share page's size in memory).
    renders: Arc<tokio::sync::Semaphore>,
}

/// A job (or a schedule of them) as asked for.
#[derive(Debug, Clone, Default)]
pub struct SubmitJob {
    pub notebook: String,
    pub path: Option<String>,
    pub command: Option<Vec<String>>,
    /// A catalog image (or, where allowed, any image); default: the notebook's own.
    pub image: Option<String>,
    /// An environment's image (resolved by the caller), or the image a run before used.
    pub environment_image: Option<String>,
    /// `environment_image` was just resolved for this member (an environment they may
    /// run); otherwise it is checked against the catalog of the moment.
    pub image_checked: bool,
    /// Default: the notebook's machine type.
    pub machine: Option<String>,
    pub parameters: Map<String, Value>,
    pub time_limit: Option<String>,
    pub schedule: Option<String>,
    pub overlap: Option<String>,
}

/// A scheduled run: its schedule, and the schedule's next time (written with the run).
pub(super) struct ScheduledRun {
    pub id: String,
    pub next_run_at: i64,
}

/// What a submission made.
pub enum Submitted {
    Job(Box<Job>),
    Schedule(Box<JobSchedule>),
}

/// A job checked and ready to be stored: what runs, where, with what.
#[derive(Clone)]
struct Plan {
    notebook: NotebookRow,
    path: Option<String>,
    command: Option<Vec<String>>,
    parameters: Map<String, Value>,
    image: String,
    machine_id: String,
    cpus: f64,
    memory_mib: i64,
    gpu_count: i64,
    time_limit_secs: i64,
}

impl Jobs {
    pub fn new(parts: JobsParts) -> Jobs {
        Jobs {
            dirs: Dirs::new(&parts.config),
            db: parts.db,
            config: parts.config,
            telemetry: parts.telemetry,
            notebooks: parts.notebooks,
            reconciler: parts.reconciler,
            renders: Arc::new(tokio::sync::Semaphore::new(2)),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Submits a job, or with `schedule` a definition that runs on it.
    pub async fn submit(&self, owner: &User, req: SubmitJob) -> Result<Submitted, JobError> {
        let plan = self.plan(owner, &req).await?;
        match req.schedule.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => {
                let overlap = rules::check_overlap(req.overlap.as_deref())?;
                let schedule = self.add_schedule(owner, plan, text, overlap).await?;
                Ok(Submitted::Schedule(Box::new(schedule)))
            }
            _ => Ok(Submitted::Job(Box::new(
                self.run_plan(owner, plan, None).await?,
            ))),
        }
    }

    /// Checks a request against the member's notebook, the catalog, their groups' policy
    /// and the lab's limits.
    async fn plan(&self, owner: &User, req: &SubmitJob) -> Result<Plan, JobError> {
        let notebook = self
            .notebooks
            .notebook_row(owner, req.notebook.trim())
            .await?;
        let (path, command) =
            match (&req.path, &req.command) {
                (Some(_), Some(_)) => {
                    return Err(JobError::Invalid(
                        "Send either \"path\" (a notebook) or \"command\", not both.".into(),
                    ))
                }
                (Some(p), None) => (Some(rules::check_path(p)?), None),
                (None, Some(c)) => (None, Some(rules::check_command(c)?)),
                (None, None) => return Err(JobError::Invalid(
                    "Say what to run: \"path\" (a .ipynb in the notebook's folder) or \"command\"."
                        .into(),
                )),
            };
        rules::check_parameters(&req.parameters)?;
        let time_limit = rules::time_limit(req.time_limit.as_deref(), &self.config.jobs)?;
        let image = match (&req.environment_image, &req.image) {
            (Some(image), _) if req.image_checked => image.clone(),
            (Some(image), _) => self.image_still_allowed(image, &notebook)?,
            (None, Some(id)) if !id.trim().is_empty() => {
                crate::notebooks::rules::resolve_image(&self.config, id)?.1
            }
            _ => {
                crate::notebooks::rules::check_image_allowed(&self.config, &notebook)?;
                notebook.image.clone()
            }
        };
        let machine_id = req
            .machine
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or(&notebook.machine_id);
        let machine = crate::notebooks::rules::resolve_machine(&self.config, machine_id)?;
        crate::groups::policy(&self.config, owner)
            .check_machine(&machine.id, &machine.name)
            .map_err(crate::notebooks::NotebookError::Forbidden)?;
        self.notebooks.check_storage_quota(owner).await?;
        Ok(Plan {
            path,
            command,
            parameters: req.parameters.clone(),
            image,
            machine_id: machine.id.clone(),
            cpus: machine.cpus,
            memory_mib: machine.memory_mib as i64,
            gpu_count: i64::from(machine.gpus),
            time_limit_secs: time_limit.as_secs() as i64,
            notebook,
        })
    }

    /// The image a run before used (a rerun, a schedule), if the catalog of the moment
    /// still allows it: a catalog image, any image where custom ones are allowed, or the
    /// notebook's own (checked as its start would be).
    fn image_still_allowed(&self, image: &str, notebook: &NotebookRow) -> Result<String, JobError> {
        let config = &self.config;
        let fine = config.images.iter().any(|i| i.image == image)
            || config.notebooks.allow_custom_images
            || (image == notebook.image
                && crate::notebooks::rules::check_image_allowed(config, notebook).is_ok());
        if fine {
            return Ok(image.to_string());
        }
        Err(JobError::Invalid(format!(
            "The image '{image}' is no longer allowed here; run the job with one of the catalog's images ({}).",
            config.image_ids()
        )))
    }

    /// Stores a planned job, snapshots what it runs and places it in the GPU queue.
    async fn run_plan(
        &self,
        owner: &User,
        plan: Plan,
        schedule: Option<ScheduledRun>,
    ) -> Result<Job, JobError> {
        let id = crate::model::new_id();
        self.write_job_files(&id, &plan).await?;
        let placed = self.store_and_place(owner, &id, &plan, schedule).await;
        let (row, placement) = match placed {
            Ok(p) => p,
            Err(e) => {
                self.remove_job_files(&id).await;
                return Err(e);
            }
        };
        tracing::info!(job = %id, owner = %owner.username, ?placement, "job submitted");
        let started =
            matches!(placement, Placement::Starting(_)) && self.reconciler.start_now(row, true);
        if !started {
            self.reconciler.wake();
        }
        self.get(owner, &id).await
    }

    /// Stores the job and places it in one transaction, where the member's limit is
    /// counted (no two submissions interleave) and a scheduled run moves its schedule on
    /// (a crash cannot run one time twice).
    async fn store_and_place(
        &self,
        owner: &User,
        id: &str,
        plan: &Plan,
        schedule: Option<ScheduledRun>,
    ) -> Result<(NotebookRow, Placement), JobError> {
        let request = PlacementRequest {
            notebook_id: id.to_string(),
            owner_id: owner.id,
            gpu_count: plan.gpu_count,
            user_limit: self.notebooks.gpu_limit(owner),
            // A job waits for its GPUs whatever `gpu.queue` says for notebooks.
            queue: true,
            gpus: self.telemetry.uuids(),
            block_over_budget_since: (self.config.usage.over_budget
                == crate::config::OverBudget::Block)
                .then(|| crate::usage::month_start(crate::clock::now())),
            // Jobs are limited by `jobs.max_unfinished_per_member`, not by notebooks'.
            running_limit: None,
            order: self.notebooks.queue_order(),
        };
        // Others see this name on the GPU map: never the command line (it may carry secrets).
        let name = format!("job {id} ({})", plan.notebook.name);
        let token = secrets::random_secret(16);
        let most = i64::from(self.config.jobs.max_unfinished_per_member);
        let schedule_id = schedule.as_ref().map(|s| s.id.clone());
        let (id, parts) = (
            id.to_string(),
            PlanParts::of(plan, &name, &token, schedule_id),
        );
        let placed = self
            .db
            .call(move |c| {
                let p = &parts;
                placement::create_and_place_with(c, &p.new_notebook(&id), &request, |c| {
                    let active = jq::unfinished_count_of(c, p.plan.notebook.owner_id)?;
                    if active >= most {
                        return Ok(Err(placement::Refusal::TooManyJobs {
                            limit: most,
                            active,
                        }));
                    }
                    jq::insert(c, &p.new_job(&id))?;
                    if let Some(s) = &schedule {
                        jq::advance_schedule(c, &s.id, s.next_run_at, false, false, None)?;
                    }
                    Ok(Ok(()))
                })
            })
            .await?;
        let (row, placement) = placed?;
        Ok((row.ok_or(JobError::NotFound)?, placement))
    }

    /// `{data_dir}/jobs/{id}/`: the runner, the job's definition and (a notebook job) the
    /// notebook as it is now — later edits do not change this job.
    async fn write_job_files(&self, id: &str, plan: &Plan) -> Result<(), JobError> {
        let notebook_dir = self.dirs.notebook_dir(&plan.notebook.id);
        let job_dir = self.dirs.job_dir(id);
        let jobs = self.config.jobs.clone();
        let owner = (self.config.storage.uid, self.config.storage.gid);
        let definition = serde_json::json!({
            "id": id,
            "mode": if plan.path.is_some() { "notebook" } else { "command" },
            "path": plan.path,
            "command": plan.command,
            "parameters": plan.parameters,
            "output_dir": format!("/notebooks/{}", output_folder(id)),
            "max_output_bytes": jobs.max_output_mib * 1024 * 1024,
            "max_log_bytes": jobs.max_log_mib * 1024 * 1024,
            "max_cell_output_bytes": jobs.max_cell_output_kib * 1024,
        });
        let path = plan.path.clone();
        tokio::task::spawn_blocking(move || {
            let snapshot = match &path {
                Some(p) => Some(snapshot(&notebook_dir, p, &jobs)?),
                None => None,
            };
            write_files(&job_dir, owner, &definition, snapshot.as_deref())
        })
        .await
        .map_err(|e| JobError::Files(e.to_string()))?
    }

    async fn remove_job_files(&self, id: &str) {
        let dir = self.dirs.job_dir(id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(job = %id, error = %e, "cannot remove a job's files");
            }
        }
    }

    /// A job of `owner`; anyone else's is "not found".
    async fn row(&self, owner: &User, id: &str) -> Result<JobRow, JobError> {
        let id = id.to_string();
        match self.db.call(move |c| jq::by_id(c, &id)).await? {
            Some(job) if job.owner_id == owner.id => Ok(job),
            _ => Err(JobError::NotFound),
        }
    }

    pub async fn get(&self, owner: &User, id: &str) -> Result<Job, JobError> {
        let job = self.row(owner, id).await?;
        self.views(vec![job]).await?.pop().ok_or(JobError::NotFound)
    }

    /// The member's jobs, newest first.
    pub async fn list(&self, owner: &User) -> Result<Vec<Job>, JobError> {
        let owner_id = owner.id;
        let rows = self
            .db
            .call(move |c| jq::list_for_owner(c, owner_id, LIST_LIMIT))
            .await?;
        self.views(rows).await
    }

    /// Views of jobs: live GPUs and queue places, and progress from the runner's status
    /// file while running.
    pub(super) async fn views(&self, rows: Vec<JobRow>) -> Result<Vec<Job>, JobError> {
        let order = self.notebooks.queue_order();
        let owner = rows.first().map(|r| r.owner_id);
        let (mut gpus, positions) = self
            .db
            .call(move |c| {
                Ok((
                    gq::by_notebook(c)?,
                    placement::queue_positions(c, &order, owner)?,
                ))
            })
            .await?;
        let dirs = self.dirs.clone();
        let config = self.config.clone();
        let views = tokio::task::spawn_blocking(move || {
            rows.into_iter()
                .map(|job| {
                    let live_gpus = gpus.remove(&job.id);
                    let position = positions.get(&job.id).map(|p| p.0);
                    let status = (job.state() == JobState::Running)
                        .then(|| {
                            job_run::read_status(&dirs.notebook_dir(&job.notebook_id), &job.id)
                        })
                        .flatten();
                    job_view(&config, job, live_gpus, position, status)
                })
                .collect::<Vec<Job>>()
        })
        .await
        .map_err(|e| JobError::Files(e.to_string()))?;
        Ok(views)
    }

    /// Cancels a job: out of the queue, or its container taken down within seconds.
    pub async fn cancel(&self, owner: &User, id: &str) -> Result<Job, JobError> {
        let job = self.row(owner, id).await?;
        if job.state().is_finished() {
            return Err(JobError::Conflict(format!(
                "The job has ended ({}); there is nothing to cancel.",
                job.state().label().to_lowercase()
            )));
        }
        let (jid, note) = (job.id.clone(), format!("cancelled by {}", owner.username));
        self.db
            .call(move |c| lifecycle::request_job_end(c, &jid, JobState::Cancelled, &note))
            .await?;
        tracing::info!(job = %job.id, "job cancelled");
        self.reconciler.wake();
        self.get(owner, &job.id).await
    }

    /// Runs a job again, with other parameters where given (the rest as before; the
    /// notebook as it is now).
    pub async fn rerun(
        &self,
        owner: &User,
        id: &str,
        parameters: Option<Map<String, Value>>,
    ) -> Result<Job, JobError> {
        let job = self.row(owner, id).await?;
        let request = SubmitJob {
            notebook: job.notebook_id.clone(),
            path: job.path.clone(),
            command: job.command.clone(),
            image: None,
            environment_image: Some(job.image.clone()),
            image_checked: false,
            machine: Some(job.machine_id.clone()),
            parameters: parameters.unwrap_or(job.parameters),
            time_limit: job.time_limit_secs.map(|s| format!("{s}s")),
            schedule: None,
            overlap: None,
        };
        let plan = self.plan(owner, &request).await?;
        self.run_plan(owner, plan, None).await
    }

    /// A piece of the job's log from `offset`.
    pub async fn logs(&self, owner: &User, id: &str, offset: u64) -> Result<JobLog, JobError> {
        let job = self.row(owner, id).await?;
        let ended = job.state().is_finished();
        let dir = self.dirs.notebook_dir(&job.notebook_id);
        let jid = job.id.clone();
        // The runner stops at max_log_mib and adds a line: anything far bigger is not its.
        let limit = (self.config.jobs.max_log_mib + 1) * 1024 * 1024;
        let (text, next) = tokio::task::spawn_blocking(move || {
            job_run::read_log(&dir, &jid, offset, LOG_PIECE, limit)
        })
        .await
        .map_err(|e| JobError::Files(e.to_string()))?;
        Ok(JobLog {
            finished: ended && text.is_empty(),
            text,
            offset: next,
        })
    }

    /// The files in the job's output folder (`jobs/{id}/`).
    pub async fn outputs(&self, owner: &User, id: &str) -> Result<Vec<(String, u64)>, JobError> {
        let job = self.row(owner, id).await?;
        let dir = self.dirs.notebook_dir(&job.notebook_id);
        let folder = output_folder(&job.id);
        tokio::task::spawn_blocking(move || {
            let files = MemberTree::open(&dir)
                .and_then(|t| t.subtree(&folder))
                .map(|t| t.walk().files)
                .unwrap_or_default();
            files.into_iter().map(|f| (f.path, f.size)).collect()
        })
        .await
        .map_err(|e| JobError::Files(e.to_string()))
    }

    /// One file of the job's output folder (at most 16 MiB).
    pub async fn output_file(
        &self,
        owner: &User,
        id: &str,
        path: &str,
    ) -> Result<(String, Vec<u8>), JobError> {
        let job = self.row(owner, id).await?;
        let (dir, folder, path) = (
            self.dirs.notebook_dir(&job.notebook_id),
            output_folder(&job.id),
            path.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let tree = MemberTree::open(&dir).and_then(|t| t.subtree(&folder))?;
            let bytes = tree.open_file(&path)?.read_capped(MAX_OUTPUT_DOWNLOAD)?;
            Ok::<_, TreeError>((path, bytes))
        })
        .await
        .map_err(|e| JobError::Files(e.to_string()))?
        .map_err(|e| match e {
            TreeError::TooLarge { size, limit } => JobError::TooLarge(format!(
                "The file is {} MiB; the API hands out files up to {} MiB. Open it from the notebook's JupyterLab (jobs/{}/).",
                size / (1024 * 1024),
                limit / (1024 * 1024),
                job.id
            )),
            _ => JobError::NotFound,
        })
    }

    /// The job's output notebook (`output.ipynb`) rendered with the share renderer
    /// (sanitized HTML, no script), within the share pages' size limit and two renders at
    /// once: (the HTML, or why it is not shown). (None, None): there is none (yet).
    pub async fn rendered_output(&self, job: &Job) -> (Option<String>, Option<String>) {
        if job.path.is_none() {
            return (None, None);
        }
        let Ok(_turn) = self.renders.acquire().await else {
            return (None, None);
        };
        let (dir, folder) = (
            self.dirs.notebook_dir(&job.notebook),
            output_folder(&job.id),
        );
        let limit_mib = self
            .config
            .share
            .max_render_mib
            .min(self.config.jobs.max_output_mib);
        let rendered = tokio::task::spawn_blocking(move || {
            let bytes = MemberTree::open(&dir)
                .and_then(|t| t.subtree(&folder))
                .and_then(|t| t.open_file("output.ipynb"))
                .and_then(|f| f.read_capped(limit_mib * 1024 * 1024));
            match bytes {
                Ok(bytes) => match crate::share::ipynb::render_ipynb(&bytes, limit_mib) {
                    Ok(r) => (Some(r.html), None),
                    Err(e) => (None, Some(format!("The output notebook cannot be shown: {e}."))),
                },
                Err(TreeError::TooLarge { size, .. }) => (None, Some(format!(
                    "The output notebook is {} MiB, over the {limit_mib} MiB this page shows; open it from JupyterLab (jobs/).",
                    size / (1024 * 1024)
                ))),
                Err(_) => (None, None),
            }
        })
        .await;
        rendered.unwrap_or((None, None))
    }

    /// The member's schedules with their newest runs.
    pub async fn schedules(&self, owner: &User) -> Result<Vec<JobSchedule>, JobError> {
        let owner_id = owner.id;
        let rows = self
            .db
            .call(move |c| jq::schedules_of_owner(c, owner_id))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for s in rows {
            out.push(self.schedule_with_runs(s).await?);
        }
        Ok(out)
    }

    async fn schedule_with_runs(&self, s: ScheduleRow) -> Result<JobSchedule, JobError> {
        let sid = s.id.clone();
        let runs = self
            .db
            .call(move |c| jq::list_for_schedule(c, &sid, 10))
            .await?;
        let runs = self.views(runs).await?;
        Ok(schedule_view(&self.config, s, runs))
    }

    /// Stops a schedule (its runs stay in the history).
    pub async fn delete_schedule(&self, owner: &User, id: &str) -> Result<(), JobError> {
        let sid = id.to_string();
        let found = self.db.call(move |c| jq::schedule_by_id(c, &sid)).await?;
        match found {
            Some(s) if s.owner_id == owner.id => {
                let sid = s.id.clone();
                self.db.call(move |c| jq::delete_schedule(c, &sid)).await?;
                Ok(())
            }
            _ => Err(JobError::NotFound),
        }
    }

    async fn add_schedule(
        &self,
        owner: &User,
        plan: Plan,
        text: &str,
        overlap: String,
    ) -> Result<JobSchedule, JobError> {
        let cron = Schedule::parse(text).map_err(|e| JobError::Invalid(e.to_string()))?;
        let tz = super::cron::time_zone(&self.config.jobs.time_zone)
            .map_err(|e| JobError::Invalid(e.to_string()))?;
        let now = crate::clock::now();
        let next = cron.next_after(now, &tz).ok_or_else(|| {
            JobError::Invalid(format!(
                "The schedule '{}' never comes within five years.",
                cron.as_str()
            ))
        })?;
        // A quick refusal before the notebook is read (the count that holds is below).
        let owner_id = owner.id;
        let have = self
            .db
            .call(move |c| jq::schedule_count_of(c, owner_id))
            .await?;
        if have >= i64::from(self.config.jobs.max_schedules_per_member) {
            return Err(self.too_many_schedules());
        }
        if let Some(path) = &plan.path {
            // Checked now, so a typo is said at once rather than at the first run.
            let (dir, path, jobs) = (
                self.dirs.notebook_dir(&plan.notebook.id),
                path.clone(),
                self.config.jobs.clone(),
            );
            tokio::task::spawn_blocking(move || snapshot(&dir, &path, &jobs).map(|_| ()))
                .await
                .map_err(|e| JobError::Files(e.to_string()))??;
        }
        let row = ScheduleRow {
            id: crate::model::new_id(),
            owner_id: owner.id,
            notebook_id: plan.notebook.id.clone(),
            path: plan.path,
            command: plan.command,
            parameters: plan.parameters,
            image: Some(plan.image),
            environment_id: None,
            machine_id: plan.machine_id,
            time_limit_secs: Some(plan.time_limit_secs),
            cron: cron.as_str().to_string(),
            overlap,
            next_run_at: next,
            pending: false,
            skipped: 0,
            last_note: None,
            created_at: now,
        };
        let (stored, most) = (row.clone(), self.config.jobs.max_schedules_per_member);
        let owner_id = owner.id;
        // Counted and stored in one immediate transaction: parallel requests cannot pass
        // the limit together.
        let added = self
            .db
            .call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                if jq::schedule_count_of(&tx, owner_id)? >= i64::from(most) {
                    return Ok(false);
                }
                jq::insert_schedule(&tx, &stored)?;
                tx.commit()?;
                Ok(true)
            })
            .await?;
        if !added {
            return Err(self.too_many_schedules());
        }
        tracing::info!(schedule = %row.id, owner = %owner.username, cron = %row.cron, "job schedule added");
        self.schedule_with_runs(row).await
    }

    fn too_many_schedules(&self) -> JobError {
        JobError::Conflict(format!(
            "You have {} schedules, the most a member may have here (jobs.max_schedules_per_member); delete one first.",
            self.config.jobs.max_schedules_per_member
        ))
    }

    /// One run of a schedule, as its member (the scheduler's submission).
    pub(super) async fn run_scheduled(
        &self,
        owner: &User,
        s: &ScheduleRow,
        next_run_at: i64,
    ) -> Result<Job, JobError> {
        let request = SubmitJob {
            notebook: s.notebook_id.clone(),
            path: s.path.clone(),
            command: s.command.clone(),
            image: None,
            environment_image: s.image.clone(),
            image_checked: false,
            machine: Some(s.machine_id.clone()),
            parameters: s.parameters.clone(),
            time_limit: s.time_limit_secs.map(|t| format!("{t}s")),
            schedule: None,
            overlap: None,
        };
        let plan = self.plan(owner, &request).await?;
        let run = ScheduledRun {
            id: s.id.clone(),
            next_run_at,
        };
        self.run_plan(owner, plan, Some(run)).await
    }

    /// The job's own files, for retention.
    pub(super) fn job_dir(&self, id: &str) -> PathBuf {
        self.dirs.job_dir(id)
    }
}

/// What the database insert needs, owned (it runs on the database's thread).
struct PlanParts {
    plan: Plan,
    name: String,
    token: String,
    schedule_id: Option<String>,
}

impl PlanParts {
    fn of(plan: &Plan, name: &str, token: &str, schedule_id: Option<String>) -> PlanParts {
        PlanParts {
            plan: plan.clone(),
            name: name.chars().take(120).collect(),
            token: token.to_string(),
            schedule_id,
        }
    }

    /// Its row in `notebooks` (the queue's and the reconciler's); the time limit rides on
    /// the auto-shutdown columns, counted from its container's start.
    fn new_notebook<'a>(&'a self, id: &'a str) -> NewNotebook<'a> {
        NewNotebook {
            id,
            owner_id: self.plan.notebook.owner_id,
            name: &self.name,
            image_id: None,
            image: &self.plan.image,
            launcher: crate::model::Launcher::Command,
            command: &[],
            machine_id: &self.plan.machine_id,
            cpus: self.plan.cpus,
            memory_mib: self.plan.memory_mib,
            gpu_count: self.plan.gpu_count,
            jupyter_token: &self.token,
            auto_shutdown_secs: Some(self.plan.time_limit_secs),
            forked_from: None,
            desired_state: DesiredState::Running,
            state: NotebookState::Stopped,
            state_detail: "Waiting to start",
            environment: None,
            repo: None,
        }
    }

    fn new_job<'a>(&'a self, id: &'a str) -> NewJob<'a> {
        NewJob {
            id,
            owner_id: self.plan.notebook.owner_id,
            notebook_id: &self.plan.notebook.id,
            notebook_name: &self.plan.notebook.name,
            path: self.plan.path.as_deref(),
            command: self.plan.command.as_deref(),
            parameters: &self.plan.parameters,
            image: &self.plan.image,
            machine_id: &self.plan.machine_id,
            gpu_count: self.plan.gpu_count,
            time_limit_secs: Some(self.plan.time_limit_secs),
            schedule_id: self.schedule_id.as_deref(),
        }
    }
}

/// "train.ipynb", or the command.
pub fn title(path: Option<&str>, command: Option<&[String]>) -> String {
    match (path, command) {
        (Some(p), _) => p.to_string(),
        (None, Some(c)) => c.join(" "),
        (None, None) => String::new(),
    }
}

/// The notebook at `path` in a member's folder, read safely (no symlinks, capped) and
/// checked to be one the runner can execute. Blocking.
fn snapshot(
    notebook_dir: &std::path::Path,
    path: &str,
    jobs: &crate::config::JobsConfig,
) -> Result<Vec<u8>, JobError> {
    let limit = jobs.max_notebook_mib * 1024 * 1024;
    let read = MemberTree::open(notebook_dir)
        .and_then(|t| t.open_file(path))
        .and_then(|f| f.read_capped(limit));
    let bytes = match read {
        Ok(b) => b,
        Err(TreeError::TooLarge { size, .. }) => {
            return Err(JobError::Invalid(format!(
                "'{path}' is {:.1} MiB; a job runs notebooks up to {} MiB (jobs.max_notebook_mib). Clear its outputs and try again.",
                size as f64 / (1024.0 * 1024.0),
                jobs.max_notebook_mib
            )))
        }
        Err(_) => {
            return Err(JobError::Invalid(format!(
                "There is no notebook '{path}' in the notebook's folder (/notebooks)."
            )))
        }
    };
    rules::inspect_notebook(&bytes, path, jobs.max_cells)?;
    Ok(bytes)
}

/// Writes the job's own folder (Notebox's, read-only in its container). Blocking.
/// Readable by the container user only (uid:gid of `[storage]`), never writable by it.
fn write_files(
    dir: &std::path::Path,
    owner: (u32, u32),
    definition: &Value,
    notebook: Option<&[u8]>,
) -> Result<(), JobError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |what: &str, e: std::io::Error| {
        if crate::disk::is_full_io(&e) {
            // The job's folder is data_dir/jobs/{id}: the message names the data dir.
            let data_dir = dir.ancestors().nth(2).unwrap_or(dir);
            return JobError::DiskFull(crate::disk::DiskFull::noticed_on(data_dir));
        }
        JobError::Files(format!("{what}: {e}"))
    };
    let give = |path: &std::path::Path, mode: u32| -> Result<(), JobError> {
        std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1))
            .map_err(|e| fail("cannot give the job's files to the container user", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail("cannot set the mode of the job's files", e))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("cannot create the job's folder", e))?;
    let write = |name: &str, bytes: &[u8]| -> Result<(), JobError> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| fail(name, e))?;
        give(&path, 0o440)
    };
    write("run.py", RUNNER.as_bytes())?;
    write(
        "job.json",
        &serde_json::to_vec_pretty(definition).map_err(|e| JobError::Files(e.to_string()))?,
    )?;
    if let Some(bytes) = notebook {
        write("input.ipynb", bytes)?;
    }
    // Read-only for its owner too: set last (root writes into it above).
    give(dir, 0o550)
}
