//! What members can do with notebooks: create, start, stop, restart, delete, extend, keep
//! running, read logs, and the views the pages and the API show. Each action is checked
//! against the rules (`rules`), recorded by one named database operation, and handed to
//! the reconciler, which does the engine's work.

use std::sync::Arc;

use crate::auth::{secrets, User};
use crate::config::{Config, OverBudget};
use crate::containers::{Engine, EngineError, LogTail};
use crate::db::lifecycle;
use crate::db::notebooks::{self as q, NewNotebook, NotebookRow};
use crate::db::placement::{self, Placement, PlacementRequest};
use crate::db::{gpus as gq, Db};
use crate::gpu::telemetry::Telemetry;
use crate::idle::{IdleMonitor, MemberAction, Tracker};
use crate::model::{DesiredState, NotebookState};

use super::error::NotebookError;
use super::logs::{self, LogReads};
use super::reconciler::Reconciler;
use super::rules::{self, check_image_allowed, AutoShutdown, CreateNotebook};
use super::view::notebook_view;
use super::Notebook;

/// What the notebook service is built from (see `lib::run`).
pub struct NotebooksParts {
    pub db: Db,
    pub config: Arc<Config>,
    pub engine: Engine,
    pub telemetry: Telemetry,
    pub reconciler: Reconciler,
    pub tracker: Arc<Tracker>,
    pub idle: IdleMonitor,
}

/// Members' notebooks. Cheap to clone.
#[derive(Clone)]
pub struct Notebooks {
    db: Db,
    config: Arc<Config>,
    engine: Engine,
    telemetry: Telemetry,
    reconciler: Reconciler,
    tracker: Arc<Tracker>,
    idle: IdleMonitor,
    log_reads: LogReads,
}

impl Notebooks {
    pub fn new(parts: NotebooksParts) -> Notebooks {
        Notebooks {
            db: parts.db,
            config: parts.config,
            engine: parts.engine,
            telemetry: parts.telemetry,
            reconciler: parts.reconciler,
            tracker: parts.tracker,
            idle: parts.idle,
            log_reads: LogReads::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The public view of a row, with its GPUs and place in the queue.
    pub fn view_with(
        &self,
        row: NotebookRow,
        gpus: Vec<String>,
        queue: Option<(usize, String)>,
    ) -> Notebook {
        notebook_view(&self.config, &self.tracker, row, gpus, queue)
    }

    /// "alice’s “experiment”" for any notebook (used to say where a fork came from).
    pub async fn describe_notebook(&self, id: &str) -> Result<Option<String>, NotebookError> {
        let id = id.to_string();
        let row = self.db.call(move |c| q::by_id(c, &id)).await?;
        Ok(row.map(|r| format!("{}’s “{}”", r.owner, r.name)))
    }

    /// A notebook of `owner`; anyone else's is "not found".
    pub async fn notebook_row(&self, owner: &User, id: &str) -> Result<NotebookRow, NotebookError> {
        let id = id.to_string();
        let row = self.db.call(move |c| q::by_id(c, &id)).await?;
        match row {
            Some(r)
                if r.owner_id == owner.id
                    && r.desired_state != DesiredState::Deleted
                    && !r.is_job =>
            {
                Ok(r)
            }
            _ => Err(NotebookError::NotFound),
        }
    }

    pub async fn get_notebook(&self, owner: &User, id: &str) -> Result<Notebook, NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        let (nid, me) = (row.id.clone(), owner.id);
        let order = self.queue_order();
        let (gpus, positions) = self
            .db
            .call(move |c| {
                Ok((
                    gq::of_notebook(c, &nid)?,
                    placement::queue_positions(c, &order, Some(me))?,
                ))
            })
            .await?;
        let position = positions.get(&row.id).cloned();
        Ok(self.view_with(row, gpus, position))
    }

    pub async fn list_notebooks(&self, owner: &User) -> Result<Vec<Notebook>, NotebookError> {
        let owner_id = owner.id;
        let order = self.queue_order();
        let (rows, mut gpus, positions) = self
            .db
            .call(move |c| {
                Ok((
                    q::list_for_owner(c, owner_id)?,
                    gq::by_notebook(c)?,
                    placement::queue_positions(c, &order, Some(owner_id))?,
                ))
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let held = gpus.remove(&r.id).unwrap_or_default();
                let position = positions.get(&r.id).cloned();
                self.view_with(r, held, position)
            })
            .collect())
    }

    /// The most GPUs `user` may hold or wait for at once.
    pub fn gpu_limit(&self, user: &User) -> i64 {
        crate::groups::policy(&self.config, user).max_gpus
    }

    /// Refuses a machine type `user`'s groups do not allow, saying which they may use.
    fn check_machine_allowed(&self, user: &User, machine_id: &str) -> Result<(), NotebookError> {
        let name = self
            .config
            .machine(machine_id)
            .map_or(machine_id, |m| m.name.as_str());
        crate::groups::policy(&self.config, user)
            .check_machine(machine_id, name)
            .map_err(NotebookError::Forbidden)
    }

    /// Refuses a new notebook, job or start while `owner` is past their storage quota (by
    /// the last measurement: nothing is walked here), saying what to delete.
    pub async fn check_storage_quota(&self, owner: &User) -> Result<(), NotebookError> {
        let status = crate::storage::status(&self.db, &self.config, owner).await?;
        match status.refusal() {
            Some(why) => Err(NotebookError::OverStorageQuota(why)),
            None => Ok(()),
        }
    }

    /// What placing a notebook of `owner` asks for, by the config of the moment.
    fn placement_request(
        &self,
        owner: &User,
        notebook_id: &str,
        gpu_count: i64,
    ) -> PlacementRequest {
        PlacementRequest {
            notebook_id: notebook_id.to_string(),
            owner_id: owner.id,
            gpu_count,
            user_limit: self.gpu_limit(owner),
            queue: self.config.gpu.queue,
            gpus: self.telemetry.uuids(),
            // With `usage.over_budget = "block"`, budgets count from this month's start.
            block_over_budget_since: (self.config.usage.over_budget == OverBudget::Block)
                .then(|| crate::usage::month_start(crate::clock::now())),
            running_limit: Some(i64::from(self.config.notebooks.max_running_per_user)),
            order: self.queue_order(),
        }
    }

    /// The GPU queue's order, by the config of the moment.
    pub fn queue_order(&self) -> crate::sharing::fair_share::QueueOrder {
        crate::sharing::fair_share::QueueOrder::from_config(&self.config)
    }

    /// Seconds until auto-shutdown for a member's choice; "until the booking" ends
    /// shortly before the next booking of someone else starts.
    async fn auto_shutdown_secs(
        &self,
        owner: &User,
        choice: AutoShutdown,
    ) -> Result<Option<i64>, NotebookError> {
        if !matches!(choice, AutoShutdown::UntilBooking) {
            return Ok(rules::auto_shutdown_secs(&self.config, choice));
        }
        let (me, now) = (owner.id, crate::clock::now());
        let next = self
            .db
            .call(move |c| crate::db::reservations::next_start_of_others(c, me, now))
            .await?;
        match next.map(|t| t - now - crate::db::placement::START_MARGIN - 60) {
            Some(secs) if secs >= 300 => Ok(Some(secs)),
            Some(_) => Err(NotebookError::Invalid(
                "The next GPU booking starts in less than 5 minutes: choose another auto-shutdown."
                    .into(),
            )),
            None => Err(NotebookError::Invalid(
                "No GPU booking of someone else is ahead: choose another auto-shutdown.".into(),
            )),
        }
    }

    /// Creates a notebook and starts it.
    pub async fn create_notebook(
        &self,
        owner: &User,
        req: CreateNotebook,
    ) -> Result<Notebook, NotebookError> {
        let name = rules::validate_name(&req.name)?;
        let (image_id, image, launcher, command) = match &req.environment {
            Some(env) => (None, env.image.clone(), env.launcher, env.command.clone()),
            None => rules::resolve_image(&self.config, &req.image)?,
        };
        let environment = req
            .environment
            .as_ref()
            .map(|e| (e.environment_id.clone(), e.version));
        let machine = rules::resolve_machine(&self.config, &req.machine)?;
        self.check_machine_allowed(owner, &machine.id)?;
        self.check_storage_quota(owner).await?;
        let repo = req.repo.as_ref().map(rules::check_repo).transpose()?;
        let auto_shutdown_secs = self.auto_shutdown_secs(owner, req.auto_shutdown).await?;
        let (id, token) = (rules::new_notebook_id(), secrets::random_secret(32));
        let (cpus, memory_mib, gpu_count, machine_id) = (
            machine.cpus,
            machine.memory_mib as i64,
            i64::from(machine.gpus),
            machine.id.clone(),
        );
        let request = self.placement_request(owner, &id, gpu_count);
        let placed = self
            .db
            .call(move |c| {
                let notebook = NewNotebook {
                    id: &id,
                    owner_id: request.owner_id,
                    name: &name,
                    image_id: image_id.as_deref(),
                    image: &image,
                    launcher,
                    command: &command,
                    machine_id: &machine_id,
                    cpus,
                    memory_mib,
                    gpu_count,
                    jupyter_token: &token,
                    auto_shutdown_secs,
                    forked_from: None,
                    desired_state: DesiredState::Running,
                    state: NotebookState::Stopped,
                    state_detail: "Waiting to start",
                    environment: environment.as_ref().map(|(i, v)| (i.as_str(), *v)),
                    repo: repo
                        .as_ref()
                        .map(|r| (r.url.as_str(), r.reference.as_deref(), r.open.as_deref())),
                };
                placement::create_and_place(c, &notebook, &request)
            })
            .await?;
        let (row, placement) = placed?;
        let row = row.ok_or(NotebookError::NotFound)?;
        tracing::info!(notebook = %row.id, owner = %owner.username, image = %row.image, ?placement, "notebook created");
        Ok(self.hand_over(row, placement))
    }

    /// A notebook just placed goes to the reconciler: started here and now (a pass, a
    /// listing of every notebook and container, would only compete with it for the CPU
    /// while Jupyter starts), or queued (an idle notebook may make way).
    fn hand_over(&self, row: NotebookRow, placement: Placement) -> Notebook {
        if matches!(placement, Placement::Queued { .. }) {
            self.idle.wake();
        }
        let started = matches!(placement, Placement::Starting(_))
            && self.reconciler.start_now(row.clone(), true);
        if !started {
            self.reconciler.wake();
        }
        let (gpus, position) = match placement {
            Placement::Starting(g) => (g, None),
            Placement::Queued { position } => (Vec::new(), Some((position, String::new()))),
        };
        self.view_with(row, gpus, position)
    }

    pub async fn start_notebook(&self, owner: &User, id: &str) -> Result<Notebook, NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        check_image_allowed(&self.config, &row)?;
        self.check_machine_allowed(owner, &row.machine_id)?;
        if !row.state.can_start() {
            return Err(NotebookError::Conflict(format!(
                "The notebook is {}; only a stopped or failed notebook can be started.",
                row.state
            )));
        }
        self.check_storage_quota(owner).await?;
        if let Placement::Queued { .. } = self.place_stopped(owner, &row).await? {
            self.idle.wake(); // an idle notebook may make way
        }
        self.reconciler.wake();
        self.get_notebook(owner, &row.id).await
    }

    /// Moves a stopped or failed notebook to starting (taking its GPUs) or to the queue.
    async fn place_stopped(
        &self,
        owner: &User,
        row: &NotebookRow,
    ) -> Result<Placement, NotebookError> {
        let request = self.placement_request(owner, &row.id, row.gpu_count);
        let placed = self
            .db
            .call(move |c| placement::place_stopped(c, &request))
            .await?;
        match placed {
            None => Err(NotebookError::Conflict(
                "The notebook changed state meanwhile; reload and try again.".into(),
            )),
            Some(p) => Ok(p?),
        }
    }

    pub async fn stop_notebook(&self, owner: &User, id: &str) -> Result<Notebook, NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        let id = row.id.clone();
        self.db
            .call(move |c| lifecycle::request_stop(c, &id, "Stopping"))
            .await?;
        self.reconciler.wake();
        self.get_notebook(owner, &row.id).await
    }

    /// Stops every notebook of a member (their account was disabled), in one transaction;
    /// `why` is their state detail.
    pub async fn stop_all_notebooks_of(
        &self,
        owner_id: i64,
        why: &str,
    ) -> Result<usize, NotebookError> {
        let why = why.to_string();
        let stopped = self
            .db
            .call(move |c| lifecycle::request_stop_all_of(c, owner_id, &why))
            .await?;
        self.reconciler.wake();
        Ok(stopped)
    }

    /// Stops and starts again (a fresh container; files stay).
    pub async fn restart_notebook(
        &self,
        owner: &User,
        id: &str,
    ) -> Result<Notebook, NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        check_image_allowed(&self.config, &row)?;
        self.check_machine_allowed(owner, &row.machine_id)?;
        let id = row.id.clone();
        let moved = self
            .db
            .call(move |c| lifecycle::request_restart(c, &id))
            .await?;
        if !moved && row.state.can_start() {
            self.place_stopped(owner, &row).await?;
        } else if !moved {
            return Err(NotebookError::Conflict(format!(
                "The notebook is {}; wait until it has settled, then restart it.",
                row.state
            )));
        }
        self.reconciler.wake();
        self.get_notebook(owner, &row.id).await
    }

    /// Deletes the notebook: its container and its /notebooks files. /storage stays.
    pub async fn delete_notebook(&self, owner: &User, id: &str) -> Result<(), NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        let (id, state) = (row.id.clone(), row.state);
        self.db
            .call(move |c| lifecycle::request_delete(c, &id, state))
            .await?;
        tracing::info!(notebook = %row.id, owner = %owner.username, "notebook deleted");
        self.reconciler.wake();
        Ok(())
    }

    /// Restarts the auto-shutdown countdown, optionally with a new length.
    pub async fn extend_notebook(
        &self,
        owner: &User,
        id: &str,
        choice: Option<AutoShutdown>,
    ) -> Result<Notebook, NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        let secs = match choice {
            Some(c) => self.auto_shutdown_secs(owner, c).await?,
            None => row.auto_shutdown_secs,
        };
        let id = row.id.clone();
        self.db
            .call(move |c| q::set_auto_shutdown(c, &id, secs))
            .await?;
        self.get_notebook(owner, &row.id).await
    }

    /// Resets the idle clock of a running notebook ("Keep running").
    pub async fn keep_alive(&self, owner: &User, id: &str) -> Result<Notebook, NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        if row.state != NotebookState::Running {
            return Err(NotebookError::Conflict(format!(
                "The notebook is {}; only a running notebook has an idle clock to reset.",
                row.state
            )));
        }
        self.tracker
            .member_acted(&row.id, MemberAction::KeepAlive, crate::clock::now());
        tracing::info!(notebook = %row.id, owner = %owner.username, "kept running");
        self.get_notebook(owner, &row.id).await
    }

    /// Exempts any member's notebook from idle reclaim (admins), or ends the exemption.
    pub async fn set_idle_exempt(&self, id: &str, exempt: bool) -> Result<(), NotebookError> {
        let nid = id.to_string();
        let found = self
            .db
            .call(move |c| q::set_idle_exempt(c, &nid, exempt))
            .await?;
        if !found {
            return Err(NotebookError::NotFound);
        }
        tracing::info!(notebook = %id, exempt, "idle reclaim exemption changed");
        Ok(())
    }

    /// Every member's running notebooks with their activity (the admin page).
    pub async fn running_notebooks(&self) -> Result<Vec<Notebook>, NotebookError> {
        let (rows, mut gpus) = self
            .db
            .call(|c| Ok((q::list_active(c)?, gq::by_notebook(c)?)))
            .await?;
        Ok(rows
            .into_iter()
            .filter(|r| {
                r.state == NotebookState::Running
                    && r.desired_state != DesiredState::Deleted
                    && !r.is_job
            })
            .map(|r| {
                let held = gpus.remove(&r.id).unwrap_or_default();
                self.view_with(r, held, None)
            })
            .collect())
    }

    /// The last `tail` lines of the notebook's container output, at most
    /// `logs::MAX_BYTES` of them; a few reads at once (see `logs`).
    pub async fn notebook_logs(
        &self,
        owner: &User,
        id: &str,
        tail: usize,
    ) -> Result<Option<LogTail>, NotebookError> {
        if tail > logs::MAX_LINES {
            return Err(NotebookError::Invalid(format!(
                "A log read can ask for at most {} lines (tail={tail}).",
                logs::MAX_LINES
            )));
        }
        let row = self.notebook_row(owner, id).await?;
        // Never had a container (or it was removed): nothing to ask the engine for.
        if row.container_id.is_none()
            && matches!(row.state, NotebookState::Stopped | NotebookState::Queued)
        {
            return Ok(None);
        }
        let _slot = self
            .log_reads
            .acquire(owner.id)
            .await
            .map_err(NotebookError::LogReadsBusy)?;
        let container = self
            .engine
            .list_ours()
            .await?
            .into_iter()
            .find(|c| c.notebook_id == row.id);
        match container {
            Some(c) => match self.engine.logs_tail(&c.id, tail, logs::MAX_BYTES).await {
                Ok(logs) => Ok(Some(logs)),
                // Removed (or being removed) between the listing and the read: a stop
                // racing the page's log poll. No container, no logs.
                Err(EngineError::NotFound(_) | EngineError::Conflict(_)) => Ok(None),
                Err(e) => Err(e.into()),
            },
            None => Ok(None),
        }
    }

    /// Seconds until auto-shutdown, for countdowns.
    pub fn seconds_left(nb: &Notebook) -> Option<i64> {
        nb.times
            .auto_shutdown
            .map(|t| (t - crate::clock::now()).max(0))
    }
}
