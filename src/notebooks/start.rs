//! The start path, top to bottom: prepare the notebook's folders, make sure the network
//! and the image are there (pulling it, with progress), create (or adopt) the container
//! and start it, then wait for Jupyter to answer and record the notebook running. Each
//! step says why it stopped; a failure is recorded once, in `start`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, OriginMode};
use crate::containers::{Engine, EngineError, OurContainer, PullProgress};
use crate::db::lifecycle::{self, UsageEnd, COMING_UP};
use crate::db::notebooks::{self as q, NotebookRow};
use crate::db::{Db, DbError};
use crate::gpu::telemetry::Telemetry;
use crate::jupyter::{self, JupyterProbe};
use crate::model::{DesiredState, NotebookState};
use crate::secrets::{pull_failure_message, PullPlan, Secrets, SecretsError};

use super::dirs::{Dirs, NotebookDirs};
use super::job_run::{job_spec, JobEnding};
use super::spec::{container_spec, Gpus};
use super::stop::Stopper;

/// How often a starting notebook's Jupyter is asked whether it is ready.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// How often the engine (still running?) and the database (still wanted?) are asked
/// meanwhile.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// The state a notebook is in while its container starts.
const STARTING: &[NotebookState] = &[NotebookState::Starting];

/// Why a start ended before Jupyter was ready.
enum StartAbort {
    /// Stopped or deleted meanwhile: the next pass cleans up, nothing to report.
    NoLongerWanted,
    /// It cannot start: the reason is what the member reads on the notebook's page.
    Failed {
        from: &'static [NotebookState],
        reason: String,
    },
    /// The database could not be read or written: tried again on the next pass.
    Db(DbError),
}

impl From<DbError> for StartAbort {
    fn from(e: DbError) -> StartAbort {
        StartAbort::Db(e)
    }
}

impl From<SecretsError> for StartAbort {
    /// A stored value that cannot be opened stops the start, naming it (never its value).
    fn from(e: SecretsError) -> StartAbort {
        match e {
            SecretsError::Db(e) => StartAbort::Db(e),
            other => failed(COMING_UP, other.to_string()),
        }
    }
}

fn failed(from: &'static [NotebookState], reason: impl Into<String>) -> StartAbort {
    StartAbort::Failed {
        from,
        reason: reason.into(),
    }
}

/// What one start found true, so the next start need not ask again: the network exists,
/// these images are present. Forgotten after a failed create or start.
#[derive(Default)]
pub(super) struct Checked {
    network: AtomicBool,
    images: Mutex<HashSet<String>>,
}

/// Brings notebooks up.
#[derive(Clone)]
pub struct Starter {
    pub(super) db: Db,
    pub(super) config: Arc<Config>,
    pub(super) engine: Engine,
    pub(super) telemetry: Telemetry,
    pub(super) probe: JupyterProbe,
    pub(super) dirs: Dirs,
    /// This installation's id (on its containers' names and labels).
    pub(super) instance: String,
    pub(super) checked: Arc<Checked>,
    /// Records failures and removes what a failed start left.
    pub(super) stopper: Stopper,
    /// The member's variables (into the container) and registry logins (for the pull).
    pub(super) secrets: Secrets,
    /// A job's start is recorded here (no Jupyter to wait for).
    pub(super) jobs: JobEnding,
}

impl Starter {
    /// Pull if needed, create (or adopt) the container, start it, wait for Jupyter.
    /// `fresh`: a notebook created a moment ago, which cannot have a container yet.
    pub async fn start(&self, nb: &NotebookRow, fresh: bool) {
        match self.start_steps(nb, fresh).await {
            Ok(()) => tracing::info!(notebook = %nb.id, "notebook running"),
            Err(StartAbort::NoLongerWanted) => {}
            Err(StartAbort::Failed { from, reason }) => {
                // Recorded (and logged) by `fail`; a record the database refused is tried
                // again when the next pass starts it again.
                self.stopper
                    .fail(&nb.id, from, &reason, UsageEnd::Now)
                    .await;
            }
            Err(StartAbort::Db(e)) => {
                tracing::warn!(notebook = %nb.id, error = %e, "start interrupted by the database; retrying on the next pass")
            }
        }
    }

    async fn start_steps(&self, nb: &NotebookRow, fresh: bool) -> Result<(), StartAbort> {
        // Each step's time, at debug level (`NOTEBOX_LOG=notebox::notebooks=debug`): where
        // a start's time goes (docs/PERFORMANCE.md, "Start path").
        let mut trace = StepTrace::new(&nb.id);
        let dirs = self.prepare_directories(nb).await?;
        trace.step("directories");
        self.fetch_repository(nb, &dirs).await?;
        trace.step("repository");
        self.ensure_network().await?;
        trace.step("network");
        self.ensure_image(nb).await?;
        trace.step("image");
        self.check_still_wanted(&nb.id).await?;
        let gpus = self.held_gpus(nb).await?;
        trace.step("database");
        let (container, base) = self
            .create_or_adopt_container(nb, &dirs, &gpus, fresh)
            .await
            .inspect_err(|_| self.forget_checks())?;
        trace.step("create+start");
        if nb.is_job {
            // No Jupyter to wait for: the job runs from the moment its container does.
            return match self.jobs.record_started(nb, &gpus).await {
                true => Ok(()),
                false => Err(StartAbort::NoLongerWanted), // the next pass tries again
            };
        }
        self.await_ready(nb, &container, &base).await?;
        trace.step("jupyter ready");
        Ok(())
    }

    /// The member's storage, the notebook's folder and the datasets folder, owned by the
    /// container user (blocking file system work, on the blocking pool).
    async fn prepare_directories(&self, nb: &NotebookRow) -> Result<NotebookDirs, StartAbort> {
        let (dirs, owner) = (self.dirs.clone(), nb.owner.clone());
        let id = self.folder_of(nb).await?;
        // Group folders by the owner's groups of the moment (a change applies at the next
        // container).
        let owner_id = nb.owner_id;
        let folders = match self
            .db
            .call(move |c| crate::db::users::by_id(c, owner_id))
            .await?
        {
            Some(user) => crate::groups::folder_mounts(&self.config, &user),
            None => Vec::new(),
        };
        tokio::task::spawn_blocking(move || dirs.prepare(&owner, &id, &folders))
            .await
            .map_err(|e| {
                failed(
                    COMING_UP,
                    format!("Cannot prepare the notebook's folders: {e}"),
                )
            })?
            .map_err(|e| failed(COMING_UP, e))
    }

    /// Whose folder a container mounts at /notebooks: the notebook's own, or for a job the
    /// notebook it runs in (which must still be there).
    async fn folder_of(&self, nb: &NotebookRow) -> Result<String, StartAbort> {
        if !nb.is_job {
            return Ok(nb.id.clone());
        }
        let id = nb.id.clone();
        let Some(job) = self
            .db
            .call(move |c| crate::db::jobs::by_id(c, &id))
            .await?
        else {
            return Err(failed(COMING_UP, "The job's record is missing."));
        };
        if !self.dirs.notebook_dir(&job.notebook_id).is_dir() {
            return Err(failed(
                COMING_UP,
                "The notebook this job runs in was deleted.",
            ));
        }
        Ok(job.notebook_id)
    }

    /// Checked once per process (and again after a failed create or start).
    async fn ensure_network(&self) -> Result<(), StartAbort> {
        if self.checked.network.load(Ordering::Acquire) {
            return Ok(());
        }
        let network = &self.config.docker.network;
        self.engine.ensure_network(network).await.map_err(|e| {
            failed(
                COMING_UP,
                format!("Cannot create the Docker network '{network}': {e}"),
            )
        })?;
        self.checked.network.store(true, Ordering::Release);
        Ok(())
    }

    /// The image is there, or pulled now (with the registry login the member or the lab
    /// keeps for it). An image from a registry only some members can pull from is pulled
    /// at every start (see `Secrets::pull_plan`), whatever the engine has.
    async fn ensure_image(&self, nb: &NotebookRow) -> Result<(), StartAbort> {
        if nb.environment.is_some() {
            return self.ensure_environment_image(nb).await;
        }
        let plan = self
            .secrets
            .pull_plan(nb.owner_id, &nb.image, nb.image_id.is_some())
            .await?;
        if plan.recheck {
            return self.pull(nb, &plan).await;
        }
        let known = self
            .checked
            .images
            .lock()
            .is_ok_and(|images| images.contains(&nb.image));
        if known {
            return Ok(());
        }
        let found = match self.engine.image_exists(&nb.image).await {
            Ok(true) => Ok(()),
            Ok(false) => self.pull(nb, &plan).await,
            Err(e) => Err(failed(
                COMING_UP,
                format!("Docker could not look up the image '{}': {e}", nb.image),
            )),
        };
        if found.is_ok() {
            if let Ok(mut images) = self.checked.images.lock() {
                images.insert(nb.image.clone());
            }
        }
        found
    }

    /// A notebook from an environment runs its version's image, which Notebox built: it
    /// is never pulled. The version must still be ready, and the environment the member's
    /// or shared.
    async fn ensure_environment_image(&self, nb: &NotebookRow) -> Result<(), StartAbort> {
        use crate::db::environments as envq;
        let Some(env) = nb.environment.clone() else {
            return Ok(());
        };
        let owner = nb.owner_id;
        let (eid, version) = (env.id.clone(), env.version);
        let usable = self
            .db
            .call(move |c| {
                let row = envq::by_id(c, &eid)?;
                let build = envq::build(c, &eid, version)?;
                Ok(row.is_some_and(|r| r.owner_id == owner || r.shared)
                    && build.is_some_and(|b| b.state == crate::model::BuildState::Ready))
            })
            .await?;
        // A version that runs a catalog image as it is follows the catalog's rules.
        let catalog_image = !crate::environments::is_ours(&nb.image);
        if usable && catalog_image && !self.config.images.iter().any(|i| i.image == nb.image) {
            return Err(failed(
                COMING_UP,
                format!(
                    "The image '{}' was removed from the catalog: create a new notebook with one of {}.",
                    nb.image,
                    self.config.image_ids()
                ),
            ));
        }
        if !usable {
            return Err(failed(
                COMING_UP,
                format!(
                    "Version {} of the environment '{}' is gone (deleted, removed by the disk policy, \
                     or no longer shared with you): create a new notebook from its newest version.",
                    env.version,
                    env.name.as_deref().unwrap_or("(deleted)")
                ),
            ));
        }
        match self.engine.image_exists(&nb.image).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(failed(
                COMING_UP,
                format!(
                    "The image of version {} of the environment '{}' is no longer in Docker: build the environment again.",
                    env.version,
                    env.name.as_deref().unwrap_or("(deleted)")
                ),
            )),
            Err(e) => Err(failed(
                COMING_UP,
                format!("Docker could not look up the image '{}': {e}", nb.image),
            )),
        }
    }

    /// A notebook started from a repository gets its files at its first start: the commit
    /// fetched on the host (nothing from it runs), copied into its empty folder.
    async fn fetch_repository(
        &self,
        nb: &NotebookRow,
        dirs: &NotebookDirs,
    ) -> Result<(), StartAbort> {
        let Some(repo) = nb.repo.as_ref().filter(|r| r.commit.is_none()) else {
            return Ok(());
        };
        let bad = |e: crate::git::GitError| {
            failed(COMING_UP, format!("Cannot fetch the repository: {e}"))
        };
        let url = crate::git::RepoUrl::parse(&repo.url).map_err(bad)?;
        let reference = repo
            .reference
            .as_deref()
            .map(crate::git::GitRef::parse)
            .transpose()
            .map_err(bad)?;
        let work = self.config.data_dir.join("environments").join("work");
        std::fs::create_dir_all(&work)
            .map_err(|e| failed(COMING_UP, format!("Cannot make {}: {e}", work.display())))?;
        set_detail(
            &self.db,
            &nb.id,
            NotebookState::Starting,
            &format!("Fetching {}", repo.url),
        )
        .await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let reporter = start_fetch_reporter(self.db.clone(), nb.id.clone(), rx);
        let mut progress = |p: &crate::git::FetchProgress| {
            let _ = tx.send(format!(
                "Fetching the repository: {}{}",
                p.phase,
                if p.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.detail)
                }
            ));
        };
        let fetched = crate::git::fetch(
            &url,
            reference.as_ref(),
            None,
            &crate::git::RepoLimits::default(),
            &work,
            &mut progress,
        )
        .await;
        drop(tx);
        let _ = reporter.await;
        let checkout = fetched.map_err(bad)?;
        self.copy_checkout(&checkout, dirs).await?;
        let (id, commit) = (nb.id.clone(), checkout.commit.clone());
        self.db
            .call(move |c| crate::db::notebooks::set_repo_commit(c, &id, &commit))
            .await?;
        tracing::info!(notebook = %nb.id, commit = %checkout.commit, files = checkout.files, "repository fetched into the notebook");
        Ok(())
    }

    /// The checkout's files into the notebook's folder, owned by the notebooks' user.
    async fn copy_checkout(
        &self,
        checkout: &crate::git::Checkout,
        dirs: &NotebookDirs,
    ) -> Result<(), StartAbort> {
        let (from, to) = (checkout.dir.clone(), dirs.notebooks.clone());
        let (uid, gid) = (self.config.storage.uid, self.config.storage.gid);
        tokio::task::spawn_blocking(move || super::dirs::copy_tree(&from, &to, uid, gid))
            .await
            .map_err(|e| {
                failed(
                    COMING_UP,
                    format!("Cannot copy the repository's files: {e}"),
                )
            })?
            .map_err(|e| {
                failed(
                    COMING_UP,
                    format!("Cannot copy the repository's files: {e}"),
                )
            })?;
        Ok(())
    }

    /// A failed create or start may mean the network or the image went away: both are
    /// looked up again by the next start.
    fn forget_checks(&self) {
        self.checked.network.store(false, Ordering::Release);
        if let Ok(mut images) = self.checked.images.lock() {
            images.clear();
        }
    }

    /// Pulls the notebook's image, showing layer progress in its state detail.
    async fn pull(&self, nb: &NotebookRow, plan: &PullPlan) -> Result<(), StartAbort> {
        let (id, detail) = (nb.id.clone(), format!("Pulling image {}", nb.image));
        if !self
            .db
            .call(move |c| lifecycle::record_pulling(c, &id, &detail))
            .await?
        {
            return Err(StartAbort::NoLongerWanted);
        }
        let (tx, rx) = tokio::sync::watch::channel(PullProgress::default());
        let reporter = tokio::spawn(report_pull_progress(
            self.db.clone(),
            nb.id.clone(),
            nb.image.clone(),
            rx,
        ));
        let mut progress = |p: &PullProgress| {
            tx.send_replace(p.clone());
        };
        let result = self
            .engine
            .pull_image(&nb.image, plan.auth.as_ref(), &mut progress)
            .await;
        drop(tx);
        if let Err(e) = reporter.await {
            tracing::debug!(notebook = %nb.id, error = %e, "pull progress reporter ended");
        }
        if let Err(e) = result {
            let reason = match e {
                EngineError::Pull { cause, message } => {
                    pull_failure_message(&nb.image, plan, cause, &message)
                }
                other => format!("Could not pull the image '{}': {other}", nb.image),
            };
            return Err(failed(&[NotebookState::Pulling], reason));
        }
        let id = nb.id.clone();
        match self
            .db
            .call(move |c| lifecycle::record_pulled(c, &id))
            .await?
        {
            true => Ok(()),
            false => Err(StartAbort::NoLongerWanted),
        }
    }

    /// Ends a start when the notebook was stopped or deleted meanwhile.
    async fn check_still_wanted(&self, id: &str) -> Result<(), StartAbort> {
        let id = id.to_string();
        match self.db.call(move |c| q::by_id(c, &id)).await? {
            Some(r) if r.desired_state == DesiredState::Running && COMING_UP.contains(&r.state) => {
                Ok(())
            }
            _ => Err(StartAbort::NoLongerWanted),
        }
    }

    /// The GPUs this notebook was given when it moved to starting.
    async fn held_gpus(&self, nb: &NotebookRow) -> Result<Vec<String>, StartAbort> {
        let nid = nb.id.clone();
        let gpus = self
            .db
            .call(move |c| crate::db::gpus::of_notebook(c, &nid))
            .await?;
        if gpus.len() as i64 != nb.gpu_count {
            return Err(failed(
                COMING_UP,
                format!(
                    "This notebook needs {} GPU(s) but holds {}; start it again.",
                    nb.gpu_count,
                    gpus.len()
                ),
            ));
        }
        Ok(gpus)
    }

    /// Creates and starts the container, or carries on with the one an interrupted start
    /// left behind. Returns its id and Jupyter's base URL in it: a new container gets a
    /// new path key with `origin = "ports"` (recorded before the container exists).
    async fn create_or_adopt_container(
        &self,
        nb: &NotebookRow,
        dirs: &NotebookDirs,
        gpus: &[String],
        fresh: bool,
    ) -> Result<(String, String), StartAbort> {
        let id = nb.id.as_str();
        set_detail(
            &self.db,
            id,
            NotebookState::Starting,
            "Creating the container",
        )
        .await;
        let existing = if fresh {
            None
        } else {
            self.left_behind(nb).await?
        };
        // A job whose container ran to its end while Notebox was down: adopted as it is
        // (the next pass writes its end from its exit code), never run twice.
        if let Some(old) = existing.as_ref().filter(|c| nb.is_job && c.is_finished()) {
            return Ok((old.id.clone(), String::new()));
        }
        if let Some(old) = existing.as_ref().filter(|c| c.is_finished()) {
            self.stopper
                .remove_containers(id, std::slice::from_ref(&old.id), 0)
                .await;
        }
        let (container_id, path_key) = match existing.filter(|c| c.is_reusable()) {
            Some(c) => (c.id, nb.path_key.clone()),
            None => self.create_container(nb, dirs, gpus).await?,
        };
        let (nid, cid) = (id.to_string(), container_id.clone());
        self.db
            .call(move |c| q::set_container(c, &nid, Some(&cid)))
            .await?;
        if let Err(e) = self.engine.start(&container_id).await {
            self.stopper
                .remove_containers(id, std::slice::from_ref(&container_id), 0)
                .await;
            return Err(failed(
                COMING_UP,
                format!("Docker could not start the container: {e}"),
            ));
        }
        Ok((container_id, jupyter::base_url(id, path_key.as_deref())))
    }

    /// The container an interrupted start of this notebook left, if any.
    async fn left_behind(&self, nb: &NotebookRow) -> Result<Option<OurContainer>, StartAbort> {
        Ok(self
            .engine
            .list_ours()
            .await
            .map_err(|e| failed(COMING_UP, format!("Docker could not list containers: {e}")))?
            .into_iter()
            .find(|c| c.notebook_id == nb.id))
    }

    /// Creates the notebook's container (with a new path key, in ports mode). Returns its
    /// id and the key.
    async fn create_container(
        &self,
        nb: &NotebookRow,
        dirs: &NotebookDirs,
        gpus: &[String],
    ) -> Result<(String, Option<String>), StartAbort> {
        let path_key =
            (self.config.notebooks.origin == OriginMode::Ports).then(jupyter::new_path_key);
        let (nid, key) = (nb.id.clone(), path_key.clone());
        self.db
            .call(move |c| q::set_path_key(c, &nid, key.as_deref()))
            .await?;
        let keyed = NotebookRow {
            path_key: path_key.clone(),
            ..nb.clone()
        };
        // Read now, at each new container: a change applies at the next start.
        let variables = self.secrets.start_env(nb.owner_id).await?;
        let gpus = Gpus {
            uuids: gpus,
            device_request: self.telemetry.inventory().uses_device_requests(),
        };
        let mut spec = if nb.is_job {
            let job_dir = self.dirs.job_dir(&nb.id);
            job_spec(&keyed, &self.config, &self.instance, dirs, &job_dir, gpus)
        } else {
            container_spec(&keyed, &self.config, &self.instance, dirs, gpus)
        };
        spec.private_env = variables.env;
        let id = self.engine.create(spec).await.map_err(|e| {
            failed(
                COMING_UP,
                match e {
                    EngineError::NotFound(m) => {
                        format!("The image '{}' is not available: {m}", nb.image)
                    }
                    other => format!("Docker could not create the container: {other}"),
                },
            )
        })?;
        self.secrets
            .record_given(&nb.id, variables.generation)
            .await?;
        Ok((id, path_key))
    }

    /// Waits for Jupyter to answer with its token, then records the notebook running.
    async fn await_ready(
        &self,
        nb: &NotebookRow,
        container_id: &str,
        base: &str,
    ) -> Result<(), StartAbort> {
        let id = nb.id.as_str();
        set_detail(&self.db, id, NotebookState::Starting, "Starting Jupyter").await;
        let ready_timeout = self.config.notebooks.ready_timeout;
        let deadline = Instant::now() + ready_timeout;
        let this_container = [container_id.to_string()];
        let mut ip: Option<String> = None;
        let mut looked_at: Option<Instant> = None;
        loop {
            // Jupyter is asked every 20 ms (a refused connection costs microseconds); the
            // engine and the database every 500 ms (still running? still wanted?).
            if looked_at.is_none_or(|t| t.elapsed() >= LOOK_EVERY) {
                looked_at = Some(Instant::now());
                self.check_still_wanted(id).await?;
                ip = self.look_at_starting(nb, &this_container).await?.or(ip);
            }
            if let Some(ip) = ip.clone() {
                if self.probe.is_ready(&ip, base, &nb.jupyter_token).await {
                    let nid = id.to_string();
                    let running = self
                        .db
                        .call(move |c| lifecycle::record_started(c, &nid, &ip))
                        .await?;
                    return match running {
                        true => Ok(()),
                        false => Err(StartAbort::NoLongerWanted),
                    };
                }
            }
            if Instant::now() > deadline {
                let headline = format!(
                    "Jupyter did not answer within {}",
                    humantime::format_duration(ready_timeout)
                );
                let detail = self
                    .stopper
                    .exit_explanation(&this_container, &headline)
                    .await;
                self.stopper.remove_containers(id, &this_container, 0).await;
                return Err(failed(STARTING, detail));
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// A starting container, as the engine sees it: its address once it has one; an
    /// error (with the end of its log) when it exited or disappeared.
    async fn look_at_starting(
        &self,
        nb: &NotebookRow,
        this_container: &[String],
    ) -> Result<Option<String>, StartAbort> {
        let network = &self.config.docker.network;
        match self.engine.inspect(&this_container[0], network).await {
            Ok(status) if !status.running => {
                let detail = self
                    .stopper
                    .exit_explanation(this_container, "Jupyter exited while starting")
                    .await;
                self.stopper
                    .remove_containers(&nb.id, this_container, 0)
                    .await;
                Err(failed(STARTING, detail))
            }
            Ok(status) => Ok(status.ip),
            Err(EngineError::NotFound(_)) => Err(failed(
                STARTING,
                "The container disappeared while Jupyter was starting.",
            )),
            Err(e) => {
                tracing::warn!(notebook = %nb.id, error = %e, "cannot inspect container");
                Ok(None)
            }
        }
    }
}

/// Shows progress on the notebook's page. A lost update is only a stale line of text.
async fn set_detail(db: &Db, id: &str, state: NotebookState, detail: &str) {
    let (nid, text) = (id.to_string(), detail.to_string());
    if let Err(e) = db.call(move |c| q::set_detail(c, &nid, state, &text)).await {
        tracing::debug!(notebook = %id, error = %e, "cannot update the state detail");
    }
}

/// Shows a repository fetch's progress on the notebook's page, at most twice a second;
/// it ends when the sender is dropped.
fn start_fetch_reporter(
    db: Db,
    id: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = std::time::Instant::now() - std::time::Duration::from_secs(1);
        while let Some(line) = rx.recv().await {
            if last.elapsed() >= std::time::Duration::from_millis(500) {
                last = std::time::Instant::now();
                set_detail(&db, &id, NotebookState::Starting, &line).await;
            }
        }
    })
}
/// Shows a pull's progress on the notebook's page, at most twice a second.
async fn report_pull_progress(
    db: Db,
    id: String,
    image: String,
    mut rx: tokio::sync::watch::Receiver<PullProgress>,
) {
    while rx.changed().await.is_ok() {
        let p = rx.borrow_and_update().clone();
        let detail = if p.bytes_total > 0 {
            format!(
                "Pulling image {image}: {} of {} layers, {} of {}",
                p.layers_done,
                p.layers,
                human_bytes(p.bytes_done),
                human_bytes(p.bytes_total)
            )
        } else {
            format!(
                "Pulling image {image}: {} of {} layers",
                p.layers_done, p.layers
            )
        };
        set_detail(&db, &id, NotebookState::Pulling, &detail).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn human_bytes(b: i64) -> String {
    let mb = b as f64 / 1e6;
    if mb >= 1000.0 {
        format!("{:.1} GB", mb / 1000.0)
    } else {
        format!("{mb:.0} MB")
    }
}

/// Times the steps of a start, logged at debug level when it ends (or is dropped).
struct StepTrace<'a> {
    notebook: &'a str,
    began: Instant,
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl<'a> StepTrace<'a> {
    fn new(notebook: &'a str) -> StepTrace<'a> {
        let now = Instant::now();
        StepTrace {
            notebook,
            began: now,
            last: now,
            steps: Vec::new(),
        }
    }

    fn step(&mut self, name: &'static str) {
        let now = Instant::now();
        self.steps.push((name, now - self.last));
        self.last = now;
    }
}

impl Drop for StepTrace<'_> {
    fn drop(&mut self) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(name, d)| format!("{name} {:.1} ms", d.as_secs_f64() * 1e3))
            .collect();
        tracing::debug!(
            notebook = %self.notebook,
            total_ms = self.began.elapsed().as_secs_f64() * 1e3,
            steps = %steps.join(", "),
            "start steps"
        );
    }
}
