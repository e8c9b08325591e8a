//! The reconciler: one task that compares what each notebook should be with what Docker
//! has, and starts the operation that closes the gap. Woken by API changes, Docker events,
//! a periodic tick, and once at start-up — so a crash at any moment loses nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::db::notebooks::{self as q, NotebookRow};
use crate::db::{now, DbError};
use crate::model::{DesiredState, NotebookState};

use super::docker::{DockerEngine, DockerError, OurContainer, PullProgress};
use super::spec::{container_name, container_spec, Mounts};
use super::Runtime;

/// How many log lines a failure message carries.
const LOG_TAIL_LINES: usize = 15;
/// SIGTERM grace before Docker kills a notebook.
const STOP_GRACE_SECS: i32 = 10;
/// How often a starting notebook's Jupyter is asked whether it is ready.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// How often Docker (still running?) and the database (still wanted?) are asked meanwhile.
const LOOK_EVERY: Duration = Duration::from_millis(500);

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

/// Ends a helper task when its owner (the reconciler task) ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a notebook needs next.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Nothing,
    Start,
    Stop,
    Delete,
    /// The container is gone although the notebook should run.
    Vanished,
    /// The container exists but Jupyter exited.
    Crashed,
    AutoShutdown,
    /// A stopped notebook still has a container (a stop interrupted by a crash).
    RemoveLeftover,
}

fn decide(nb: &NotebookRow, containers: &[&OurContainer], now: i64) -> Action {
    use DesiredState as D;
    use NotebookState as S;
    let any_running = containers.iter().any(|c| c.running);
    match (nb.desired_state, nb.state) {
        (D::Deleted, _) => Action::Delete,
        (D::Running, S::Starting | S::Pulling) => Action::Start,
        (D::Running, S::Stopping) => Action::Stop,
        (D::Running, S::Running) if containers.is_empty() => Action::Vanished,
        (D::Running, S::Running) if !any_running => Action::Crashed,
        (D::Running, S::Running) if nb.auto_shutdown_at.is_some_and(|t| t <= now) => {
            Action::AutoShutdown
        }
        (D::Stopped, S::Running | S::Starting | S::Pulling | S::Stopping) => Action::Stop,
        (D::Stopped, S::Stopped | S::Failed | S::Queued) if !containers.is_empty() => {
            Action::RemoveLeftover
        }
        _ => Action::Nothing,
    }
}

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

/// The states a start goes through, and the one once the container runs.
const COMING_UP: &[NotebookState] = &[NotebookState::Starting, NotebookState::Pulling];
const STARTING: &[NotebookState] = &[NotebookState::Starting];

fn failed(from: &'static [NotebookState], reason: impl Into<String>) -> StartAbort {
    StartAbort::Failed {
        from,
        reason: reason.into(),
    }
}

/// Host directories mounted into a notebook.
struct NotebookDirs {
    storage: std::path::PathBuf,
    notebooks: std::path::PathBuf,
    datasets: std::path::PathBuf,
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn human_bytes(b: i64) -> String {
    let mb = b as f64 / 1e6;
    if mb >= 1000.0 {
        format!("{:.1} GB", mb / 1000.0)
    } else {
        format!("{mb:.0} MB")
    }
}

impl Runtime {
    /// Runs until the process ends: once now, then on every wake-up and tick.
    pub async fn run_reconciler(self) {
        let _events = AbortOnDrop(tokio::spawn(self.clone().watch_docker_events()));
        let interval = self.config().notebooks.reconcile_interval;
        loop {
            let started = Instant::now();
            self.reconcile_all().await;
            self.metrics()
                .reconcile_pass(started.elapsed().as_secs_f64());
            self.inner
                .passes
                .fetch_add(1, std::sync::atomic::Ordering::Release);
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Docker events about our containers (a crash, a removal) wake the reconciler.
    async fn watch_docker_events(self) {
        loop {
            match self.docker().await {
                Ok(docker) => {
                    let mut events = docker.events();
                    while let Some(event) = events.next().await {
                        match event {
                            Ok(e) => {
                                tracing::debug!(action = ?e.action, "docker event");
                                self.wake();
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "docker event stream ended");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot watch Docker events"),
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    /// One pass over every notebook.
    pub async fn reconcile_all(&self) {
        // Queued notebooks whose GPUs came free start first (and GPUs a crash left held
        // by stopped notebooks are freed).
        let gpus = self.gpus().uuids();
        let block = (self.config().usage.over_budget == crate::config::OverBudget::Block)
            .then(|| crate::usage::month_start(now()));
        let admitted = self
            .db()
            .call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let started =
                    crate::gpu::allocation::admit_queued_within_budgets(&tx, &gpus, block)?;
                tx.commit()?;
                Ok(started)
            })
            .await;
        match admitted {
            Ok(started) if !started.is_empty() => {
                tracing::info!(notebooks = ?started, "started from the GPU queue");
                self.tell_queued_started(started).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot admit queued notebooks"),
        }
        let notebooks = match self.db().call(|c| q::list_all(c)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "reconciler cannot read notebooks");
                return;
            }
        };
        let docker = match self.docker().await {
            Ok(d) => d,
            Err(e) => {
                self.metrics().docker_error("connect");
                self.fail_waiting_notebooks(&notebooks, &e).await;
                return;
            }
        };
        let containers = match docker.list_ours().await {
            Ok(c) => c,
            Err(e) => {
                self.metrics().docker_error("list");
                tracing::warn!(error = %e, "reconciler cannot list containers");
                return;
            }
        };
        let mut by_notebook: HashMap<&str, Vec<&OurContainer>> = HashMap::new();
        for c in &containers {
            by_notebook
                .entry(c.notebook_id.as_str())
                .or_default()
                .push(c);
        }
        // Containers of ours whose notebook no longer exists (deleted during a crash).
        for c in &containers {
            if !notebooks.iter().any(|n| n.id == c.notebook_id) && self.try_claim(&c.notebook_id) {
                let (rt, docker, c) = (self.clone(), docker.clone(), c.clone());
                tokio::spawn(async move {
                    tracing::info!(container = %c.id, notebook = %c.notebook_id, "removing orphaned container");
                    if let Err(e) = docker.stop_and_remove(&c.id, STOP_GRACE_SECS).await {
                        tracing::warn!(error = %e, "cannot remove orphaned container");
                    }
                    rt.release(&c.notebook_id);
                });
            }
        }
        let t = now();
        for nb in notebooks {
            let theirs = by_notebook.get(nb.id.as_str()).cloned().unwrap_or_default();
            let action = decide(&nb, &theirs, t);
            if action == Action::Nothing || !self.try_claim(&nb.id) {
                continue;
            }
            let ids: Vec<String> = theirs.iter().map(|c| c.id.clone()).collect();
            let (rt, docker) = (self.clone(), docker.clone());
            tokio::spawn(async move {
                let id = nb.id.clone();
                rt.perform(action, nb, ids, docker).await;
                rt.release(&id);
            });
        }
    }

    /// The webhook hears of each queued notebook that got its GPUs.
    async fn tell_queued_started(&self, started: Vec<String>) {
        if !self.webhook().is_enabled() {
            return;
        }
        for id in started {
            let nid = id.clone();
            match self.db().call(move |c| q::by_id(c, &nid)).await {
                Ok(Some(row)) => {
                    let reason = row
                        .notice
                        .clone()
                        .unwrap_or_else(|| "its GPUs came free".to_string());
                    self.notify(
                        crate::webhook::EventKind::QueuedStarted,
                        &row.id,
                        &row.owner,
                        &row.name,
                        reason,
                        None,
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(notebook = %id, error = %e, "cannot describe a queued start")
                }
            }
        }
    }

    /// Without Docker nothing can start: say so instead of leaving people waiting.
    async fn fail_waiting_notebooks(&self, notebooks: &[NotebookRow], e: &DockerError) {
        for nb in notebooks
            .iter()
            .filter(|n| n.desired_state == DesiredState::Running && COMING_UP.contains(&n.state))
        {
            let detail = format!("Docker is not reachable: {e}");
            self.fail(&nb.id, COMING_UP, &detail).await;
        }
    }

    async fn perform(
        &self,
        action: Action,
        nb: NotebookRow,
        containers: Vec<String>,
        docker: DockerEngine,
    ) {
        tracing::debug!(notebook = %nb.id, ?action, "reconciling");
        match action {
            Action::Nothing => {}
            Action::Start => self.start_op(&nb, &docker, false).await,
            Action::Stop => self.stop_op(&nb, &containers, &docker, None).await,
            Action::Delete => self.delete_op(&nb, &containers, &docker).await,
            Action::Vanished => {
                tracing::warn!(notebook = %nb.id, "container vanished");
                let id = nb.id.clone();
                let recorded = self
                    .db()
                    .call(move |c| {
                        let tx = c.transaction()?;
                        if !q::by_id(&tx, &id)?.is_some_and(|r| r.state == NotebookState::Running) {
                            return Ok(()); // moved meanwhile (a restart): nothing to record
                        }
                        // Its usage ends when it was last seen running, not now.
                        if let Some(seen) = crate::db::usage::last_seen(&tx, &id)? {
                            crate::db::usage::close(&tx, &id, seen)?;
                        }
                        q::set_container(&tx, &id, None)?;
                        q::transition(
                            &tx,
                            &id,
                            &[NotebookState::Running],
                            NotebookState::Stopped,
                            "The container was removed outside Notebox. Start the notebook again; its files are kept.",
                            Some(DesiredState::Stopped),
                        )?;
                        tx.commit()?;
                        Ok(())
                    })
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!(notebook = %nb.id, error = %e, "cannot record a vanished container");
                }
            }
            Action::Crashed => {
                // Its usage ends when the container stopped (Notebox may have been down).
                let stopped_at = self.container_stopped_at(&containers, &docker).await;
                let detail = self
                    .exit_explanation(&docker, &containers, "Jupyter stopped by itself")
                    .await;
                self.remove_containers(&nb.id, &containers, &docker, 0)
                    .await;
                self.fail_at(&nb.id, &[NotebookState::Running], &detail, Some(stopped_at))
                    .await;
            }
            Action::AutoShutdown => self.auto_shutdown(nb, &containers, &docker).await,
            Action::RemoveLeftover => {
                self.remove_containers(&nb.id, &containers, &docker, STOP_GRACE_SECS)
                    .await;
            }
        }
    }

    /// When a notebook's containers stopped, as Docker reports it (None: it cannot say).
    async fn container_stopped_at(
        &self,
        containers: &[String],
        docker: &DockerEngine,
    ) -> Option<i64> {
        let network = self.config().docker.network.clone();
        let mut stopped_at = None;
        for c in containers {
            if let Ok(status) = docker.inspect(c, &network).await {
                stopped_at = stopped_at.max(status.finished_at);
            }
        }
        stopped_at.map(|t| t.min(now()))
    }

    /// Stops a notebook whose auto-shutdown time has come.
    async fn auto_shutdown(&self, nb: NotebookRow, containers: &[String], docker: &DockerEngine) {
        let after = super::notebooks::describe_auto_shutdown(nb.auto_shutdown_secs);
        let id = nb.id.clone();
        let detail = format!("Stopping automatically after {after}");
        let moved = self
            .db()
            .call(move |c| {
                q::transition(
                    c,
                    &id,
                    &[NotebookState::Running],
                    NotebookState::Stopping,
                    &detail,
                    Some(DesiredState::Stopped),
                )
            })
            .await;
        match moved {
            Ok(true) => {
                tracing::info!(notebook = %nb.id, "auto-shutdown");
                let mut nb = nb;
                nb.state = NotebookState::Stopping;
                let detail = format!("Stopped automatically after {after}");
                self.stop_op(&nb, containers, docker, Some(detail)).await;
            }
            Ok(false) => {} // someone else moved it first
            Err(e) => {
                tracing::warn!(notebook = %nb.id, error = %e, "cannot start an auto-shutdown")
            }
        }
    }

    /// Removes containers, logging (once, here) any that Docker would not remove; they are
    /// found again on the next pass.
    async fn remove_containers(
        &self,
        notebook_id: &str,
        containers: &[String],
        docker: &DockerEngine,
        grace_secs: i32,
    ) -> bool {
        let mut all = true;
        for c in containers {
            if let Err(e) = docker.stop_and_remove(c, grace_secs).await {
                self.metrics().docker_error("remove");
                tracing::warn!(notebook = %notebook_id, container = %c, error = %e, "cannot remove container");
                all = false;
            }
        }
        all
    }

    /// Marks a notebook failed with a reason (only from one of `from`).
    async fn fail(&self, id: &str, from: &'static [NotebookState], detail: &str) {
        self.fail_at(id, from, detail, None).await
    }

    /// `fail`, for a notebook whose container stopped earlier than now: `Some(when)`
    /// (None inside: Docker cannot say, so when it was last seen running) closes its usage
    /// then, in the same transaction, and only if it is still in one of `from`.
    async fn fail_at(
        &self,
        id: &str,
        from: &'static [NotebookState],
        detail: &str,
        stopped_at: Option<Option<i64>>,
    ) {
        let (nid, reason) = (id.to_string(), detail.to_string());
        tracing::warn!(notebook = %id, reason = %detail, "notebook failed");
        let recorded = self
            .db()
            .call(move |c| {
                let tx = c.transaction()?;
                if let Some(known) = stopped_at {
                    if !q::by_id(&tx, &nid)?.is_some_and(|r| from.contains(&r.state)) {
                        return Ok(()); // moved meanwhile (a restart): nothing to record
                    }
                    let at = match known {
                        Some(t) => Some(t),
                        None => crate::db::usage::last_seen(&tx, &nid)?,
                    };
                    if let Some(at) = at {
                        crate::db::usage::close(&tx, &nid, at)?;
                    }
                }
                q::set_container(&tx, &nid, None)?;
                q::transition(
                    &tx,
                    &nid,
                    from,
                    NotebookState::Failed,
                    &reason,
                    Some(DesiredState::Stopped),
                )?;
                tx.commit()?;
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(notebook = %id, error = %e, "cannot record a failure");
        }
    }

    /// Shows progress on the notebook's page. A lost update is only a stale line of text.
    async fn set_detail(&self, id: &str, state: NotebookState, detail: String) {
        let nid = id.to_string();
        if let Err(e) = self
            .db()
            .call(move |c| q::set_detail(c, &nid, state, &detail))
            .await
        {
            tracing::debug!(notebook = %id, error = %e, "cannot update the state detail");
        }
    }

    /// Ends a start when the notebook was stopped or deleted meanwhile.
    async fn check_still_wanted(&self, id: &str) -> Result<(), StartAbort> {
        let id = id.to_string();
        match self.db().call(move |c| q::by_id(c, &id)).await? {
            Some(r) if r.desired_state == DesiredState::Running && COMING_UP.contains(&r.state) => {
                Ok(())
            }
            _ => Err(StartAbort::NoLongerWanted),
        }
    }

    /// Why a container stopped: exit code, OOM, and the end of its log.
    async fn exit_explanation(
        &self,
        docker: &DockerEngine,
        containers: &[String],
        headline: &str,
    ) -> String {
        let Some(id) = containers.first() else {
            return headline.to_string();
        };
        let network = &self.config().docker.network;
        let mut out = headline.to_string();
        if let Ok(status) = docker.inspect(id, network).await {
            if status.oom_killed {
                out.push_str(" — it ran out of memory (choose a bigger machine type)");
            } else if let Some(code) = status.exit_code {
                out.push_str(&format!(" (exit code {code})"));
            }
            if !status.error.is_empty() {
                out.push_str(&format!(": {}", status.error));
            }
        }
        if let Ok(logs) = docker.logs_tail(id, 200, 64 * 1024).await {
            let tail = tail_lines(&logs.text, LOG_TAIL_LINES);
            if !tail.is_empty() {
                out.push_str(".\nLast lines of its log:\n");
                out.push_str(&tail);
            }
        }
        out
    }

    /// Starts a notebook the API has just moved to starting, without waiting for the
    /// reconciler's next pass (which would first read every notebook and list every
    /// container). `fresh`: a notebook created a moment ago, which cannot have a container
    /// yet. When a pass got to it first, the pass carries on and this does nothing.
    /// Returns whether it started (false: a pass has it, or it is not to start).
    pub(super) fn start_now(&self, nb: NotebookRow, fresh: bool) -> bool {
        if nb.desired_state != DesiredState::Running
            || !COMING_UP.contains(&nb.state)
            || !self.try_claim(&nb.id)
        {
            return false;
        }
        let rt = self.clone();
        tokio::spawn(async move {
            match rt.docker().await {
                Ok(docker) => {
                    rt.start_op(&nb, &docker, fresh).await;
                    rt.release(&nb.id);
                }
                Err(_) => {
                    // A pass at once, which says so on the notebook's page (not at the
                    // next tick).
                    rt.release(&nb.id);
                    rt.wake();
                }
            }
        });
        true
    }

    /// Pull if needed, create (or adopt) the container, start it, wait for Jupyter. Each
    /// step says why it stopped; the failure is recorded once, here.
    async fn start_op(&self, nb: &NotebookRow, docker: &DockerEngine, fresh: bool) {
        match self.start_steps(nb, docker, fresh).await {
            Ok(()) => tracing::info!(notebook = %nb.id, "notebook running"),
            Err(StartAbort::NoLongerWanted) => {}
            Err(StartAbort::Failed { from, reason }) => self.fail(&nb.id, from, &reason).await,
            Err(StartAbort::Db(e)) => {
                tracing::warn!(notebook = %nb.id, error = %e, "start interrupted by the database; retrying on the next pass")
            }
        }
    }

    async fn start_steps(
        &self,
        nb: &NotebookRow,
        docker: &DockerEngine,
        fresh: bool,
    ) -> Result<(), StartAbort> {
        // Each step's time, at debug level (`NOTEBOX_LOG=notebox::runtime=debug`): where a
        // start's time goes (docs/PERFORMANCE.md, "Start path").
        let mut trace = StepTrace::new(&nb.id);
        let dirs = self.prepare_directories(nb).await?;
        trace.step("directories");
        self.ensure_network(docker).await?;
        trace.step("network");
        self.ensure_image(nb, docker).await?;
        trace.step("image");
        self.check_still_wanted(&nb.id).await?;
        let gpus = self.held_gpus(nb).await?;
        trace.step("database");
        let (container, base) = self
            .create_or_adopt_container(nb, docker, &dirs, &gpus, fresh)
            .await
            .inspect_err(|_| self.forget_checks())?;
        trace.step("create+start");
        self.await_ready(nb, docker, &container, &base).await?;
        trace.step("jupyter ready");
        Ok(())
    }

    /// A failed create or start may mean the network or the image went away: both are
    /// looked up again by the next start.
    fn forget_checks(&self) {
        self.inner.network_ready.store(false, Ordering::Release);
        if let Ok(mut images) = self.inner.images_present.lock() {
            images.clear();
        }
    }

    /// The member's storage, the notebook's folder and the datasets folder, owned by the
    /// container user (blocking file system work, on the blocking pool).
    async fn prepare_directories(&self, nb: &NotebookRow) -> Result<NotebookDirs, StartAbort> {
        let rt = self.clone();
        let (owner, id) = (nb.owner.clone(), nb.id.clone());
        tokio::task::spawn_blocking(move || {
            let dirs = NotebookDirs {
                storage: rt.storage_dir(&owner),
                notebooks: rt.notebook_dir(&id),
                datasets: rt.datasets_dir(),
            };
            rt.prepare_dir(&dirs.storage, false)?;
            rt.prepare_dir(&dirs.notebooks, false)?;
            rt.prepare_dir(&dirs.datasets, true)?;
            Ok::<_, super::NotebookError>(dirs)
        })
        .await
        .map_err(|e| {
            failed(
                COMING_UP,
                format!("Cannot prepare the notebook's folders: {e}"),
            )
        })?
        .map_err(|e| failed(COMING_UP, e.to_string()))
    }

    /// Checked once per process (and again after a failed create or start).
    async fn ensure_network(&self, docker: &DockerEngine) -> Result<(), StartAbort> {
        if self.inner.network_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let network = &self.config().docker.network;
        docker.ensure_network(network).await.map_err(|e| {
            failed(
                COMING_UP,
                format!("Cannot create the Docker network '{network}': {e}"),
            )
        })?;
        self.inner.network_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn ensure_image(
        &self,
        nb: &NotebookRow,
        docker: &DockerEngine,
    ) -> Result<(), StartAbort> {
        let known = |rt: &Self| {
            rt.inner
                .images_present
                .lock()
                .is_ok_and(|images| images.contains(&nb.image))
        };
        if known(self) {
            return Ok(());
        }
        let found = match docker.image_exists(&nb.image).await {
            Ok(true) => Ok(()),
            Ok(false) => self.pull(nb, docker).await,
            Err(e) => Err(failed(
                COMING_UP,
                format!("Docker could not look up the image '{}': {e}", nb.image),
            )),
        };
        if found.is_ok() {
            if let Ok(mut images) = self.inner.images_present.lock() {
                images.insert(nb.image.clone());
            }
        }
        found
    }

    /// The GPUs this notebook was given when it moved to starting.
    async fn held_gpus(&self, nb: &NotebookRow) -> Result<Vec<String>, StartAbort> {
        let nid = nb.id.clone();
        let gpus = self
            .db()
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
    /// left behind. Returns its id and Jupyter's base URL in it: a new container gets a new
    /// path key with `origin = "ports"` (recorded before the container exists).
    async fn create_or_adopt_container(
        &self,
        nb: &NotebookRow,
        docker: &DockerEngine,
        dirs: &NotebookDirs,
        gpus: &[String],
        fresh: bool,
    ) -> Result<(String, String), StartAbort> {
        let id = nb.id.as_str();
        self.set_detail(id, NotebookState::Starting, "Creating the container".into())
            .await;
        let existing = if fresh {
            None
        } else {
            docker
                .list_ours()
                .await
                .map_err(|e| failed(COMING_UP, format!("Docker could not list containers: {e}")))?
                .into_iter()
                .find(|c| c.notebook_id == nb.id)
        };
        if let Some(old) = existing.as_ref().filter(|c| c.is_finished()) {
            self.remove_containers(id, std::slice::from_ref(&old.id), docker, 0)
                .await;
        }
        let mut path_key = nb.path_key.clone();
        let container_id = match existing.filter(|c| c.is_reusable()) {
            Some(c) => c.id,
            None => {
                path_key = (self.config().notebooks.origin == crate::config::OriginMode::Ports)
                    .then(super::spec::new_path_key);
                let (nid, key) = (id.to_string(), path_key.clone());
                self.db()
                    .call(move |c| q::set_path_key(c, &nid, key.as_deref()))
                    .await?;
                let keyed = NotebookRow {
                    path_key: path_key.clone(),
                    ..nb.clone()
                };
                let mounts = Mounts {
                    storage: &dirs.storage,
                    notebooks: &dirs.notebooks,
                    datasets: &dirs.datasets,
                };
                let body = container_spec(
                    &keyed,
                    self.config(),
                    self.instance(),
                    &mounts,
                    gpus,
                    self.gpus().inventory().uses_device_requests(),
                );
                let name = container_name(self.instance(), id);
                docker.create_container(&name, body).await.map_err(|e| {
                    failed(
                        COMING_UP,
                        match e {
                            DockerError::NotFound(m) => {
                                format!("The image '{}' is not available: {m}", nb.image)
                            }
                            other => format!("Docker could not create the container: {other}"),
                        },
                    )
                })?
            }
        };
        let (nid, cid) = (id.to_string(), container_id.clone());
        self.db()
            .call(move |c| q::set_container(c, &nid, Some(&cid)))
            .await?;
        if let Err(e) = docker.start_container(&container_id).await {
            self.remove_containers(id, std::slice::from_ref(&container_id), docker, 0)
                .await;
            return Err(failed(
                COMING_UP,
                format!("Docker could not start the container: {e}"),
            ));
        }
        Ok((container_id, super::spec::base_url(id, path_key.as_deref())))
    }

    /// Waits for Jupyter to answer with its token, then marks the notebook running.
    async fn await_ready(
        &self,
        nb: &NotebookRow,
        docker: &DockerEngine,
        container_id: &str,
        base: &str,
    ) -> Result<(), StartAbort> {
        let id = nb.id.as_str();
        self.set_detail(id, NotebookState::Starting, "Starting Jupyter".into())
            .await;
        let ready_timeout = self.config().notebooks.ready_timeout;
        let deadline = Instant::now() + ready_timeout;
        let network = self.config().docker.network.clone();
        let this_container = vec![container_id.to_string()];
        let mut ip: Option<String> = None;
        let mut looked_at: Option<Instant> = None;
        loop {
            // Jupyter is asked every 20 ms (a refused connection costs microseconds); Docker
            // and the database every 500 ms (still running? still wanted?).
            if looked_at.is_none_or(|t| t.elapsed() >= LOOK_EVERY) {
                looked_at = Some(Instant::now());
                self.check_still_wanted(id).await?;
                ip = self
                    .look_at_starting(nb, docker, container_id, &network, &this_container)
                    .await?
                    .or(ip);
            }
            if let Some(ip) = ip.clone() {
                if self
                    .inner
                    .probe
                    .is_ready(&ip, base, &nb.jupyter_token)
                    .await
                {
                    let nid = id.to_string();
                    let moved = self
                        .db()
                        .call(move |c| {
                            let tx = c.transaction()?;
                            q::set_container_ip(&tx, &nid, &ip)?;
                            let moved = q::transition(
                                &tx,
                                &nid,
                                STARTING,
                                NotebookState::Running,
                                "Jupyter is ready",
                                None,
                            )?;
                            tx.commit()?;
                            Ok(moved)
                        })
                        .await?;
                    return if moved {
                        Ok(())
                    } else {
                        Err(StartAbort::NoLongerWanted)
                    };
                }
            }
            if Instant::now() > deadline {
                let headline = format!(
                    "Jupyter did not answer within {}",
                    humantime::format_duration(ready_timeout)
                );
                let detail = self
                    .exit_explanation(docker, &this_container, &headline)
                    .await;
                self.remove_containers(id, &this_container, docker, 0).await;
                return Err(failed(STARTING, detail));
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// A starting container, as Docker sees it: its address once it has one; an error
    /// (with the end of its log) when it exited or disappeared.
    async fn look_at_starting(
        &self,
        nb: &NotebookRow,
        docker: &DockerEngine,
        container_id: &str,
        network: &str,
        this_container: &[String],
    ) -> Result<Option<String>, StartAbort> {
        let id = nb.id.as_str();
        match docker.inspect(container_id, network).await {
            Ok(status) if !status.running => {
                let detail = self
                    .exit_explanation(docker, this_container, "Jupyter exited while starting")
                    .await;
                self.remove_containers(id, this_container, docker, 0).await;
                Err(failed(STARTING, detail))
            }
            Ok(status) => Ok(status.ip),
            Err(DockerError::NotFound(_)) => Err(failed(
                STARTING,
                "The container disappeared while Jupyter was starting.",
            )),
            Err(e) => {
                tracing::warn!(notebook = %id, error = %e, "cannot inspect container");
                Ok(None)
            }
        }
    }

    /// Pulls the notebook's image, showing layer progress in its state detail.
    async fn pull(&self, nb: &NotebookRow, docker: &DockerEngine) -> Result<(), StartAbort> {
        let id = nb.id.clone();
        let moved = {
            let (id, detail) = (id.clone(), format!("Pulling image {}", nb.image));
            self.db()
                .call(move |c| {
                    q::transition(c, &id, STARTING, NotebookState::Pulling, &detail, None)
                })
                .await?
        };
        if !moved {
            return Err(StartAbort::NoLongerWanted);
        }
        let (tx, mut rx) = tokio::sync::watch::channel(PullProgress::default());
        let reporter = {
            let rt = self.clone();
            let (id, image) = (id.clone(), nb.image.clone());
            tokio::spawn(async move {
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
                    rt.set_detail(&id, NotebookState::Pulling, detail).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let result = docker
            .pull_image(&nb.image, |p| {
                tx.send_replace(p.clone());
            })
            .await;
        drop(tx);
        if let Err(e) = reporter.await {
            tracing::debug!(notebook = %id, error = %e, "pull progress reporter ended");
        }
        match result {
            Ok(()) => {
                let id2 = id.clone();
                let moved = self
                    .db()
                    .call(move |c| {
                        q::transition(
                            c,
                            &id2,
                            &[NotebookState::Pulling],
                            NotebookState::Starting,
                            "Image pulled",
                            None,
                        )
                    })
                    .await?;
                if moved {
                    Ok(())
                } else {
                    Err(StartAbort::NoLongerWanted)
                }
            }
            Err(e) => Err(failed(
                &[NotebookState::Pulling],
                format!("Could not pull the image '{}': {e}", nb.image),
            )),
        }
    }

    /// Stops a notebook: marks it stopping, removes its containers, and records the stop
    /// (or the restart) in one transaction.
    pub(super) async fn stop_op(
        &self,
        nb: &NotebookRow,
        containers: &[String],
        docker: &DockerEngine,
        detail: Option<String>,
    ) {
        let id = nb.id.clone();
        if nb.state != NotebookState::Stopping {
            let nid = id.clone();
            let marked = self
                .db()
                .call(move |c| {
                    q::transition(
                        c,
                        &nid,
                        &[
                            NotebookState::Running,
                            NotebookState::Starting,
                            NotebookState::Pulling,
                        ],
                        NotebookState::Stopping,
                        "Stopping",
                        None,
                    )
                })
                .await;
            if let Err(e) = marked {
                tracing::warn!(notebook = %id, error = %e, "cannot mark the notebook stopping");
                return; // try again on the next pass
            }
        }
        if !self
            .remove_containers(&id, containers, docker, STOP_GRACE_SECS)
            .await
        {
            return; // try again on the next pass
        }
        let detail = detail.unwrap_or_else(|| "Stopped".into());
        let notebook_id = id.clone();
        let stopped = self
            .db()
            .call(move |c| {
                let tx = c.transaction()?;
                q::set_container(&tx, &id, None)?;
                let restart = q::by_id(&tx, &id)?.is_some_and(|r| {
                    r.restart_requested && r.desired_state == DesiredState::Running
                });
                if restart {
                    q::set_restart_requested(&tx, &id, false)?;
                    q::transition(
                        &tx,
                        &id,
                        &[NotebookState::Stopping],
                        NotebookState::Starting,
                        "Restarting",
                        None,
                    )?;
                } else {
                    q::transition(
                        &tx,
                        &id,
                        &[NotebookState::Stopping],
                        NotebookState::Stopped,
                        &detail,
                        Some(DesiredState::Stopped),
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await;
        if let Err(e) = stopped {
            tracing::warn!(notebook = %notebook_id, error = %e, "cannot record the stop");
            return;
        }
        // The files are at rest now: whoever follows (the share previews) catches up.
        self.publish(super::RuntimeEvent::Stopped { notebook_id });
    }

    async fn delete_op(&self, nb: &NotebookRow, containers: &[String], docker: &DockerEngine) {
        if !self
            .remove_containers(&nb.id, containers, docker, STOP_GRACE_SECS)
            .await
        {
            return;
        }
        let dir = self.notebook_dir(&nb.id);
        if dir.exists() {
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                tracing::warn!(notebook = %nb.id, error = %e, "cannot remove notebook directory");
                return;
            }
        }
        let id = nb.id.clone();
        if let Err(e) = self.db().call(move |c| q::delete(c, &id)).await {
            tracing::warn!(notebook = %nb.id, error = %e, "cannot delete notebook row");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(desired: DesiredState, state: NotebookState) -> NotebookRow {
        let mut r = crate::runtime::spec::tests_support::row();
        r.desired_state = desired;
        r.state = state;
        r
    }

    fn container(running: bool) -> OurContainer {
        OurContainer {
            id: "c".into(),
            notebook_id: "n".into(),
            running,
            state: Some(if running {
                bollard::models::ContainerSummaryStateEnum::RUNNING
            } else {
                bollard::models::ContainerSummaryStateEnum::EXITED
            }),
        }
    }

    #[test]
    fn decisions() {
        let up = container(true);
        let down = container(false);
        assert_eq!(
            decide(&row(DesiredState::Running, NotebookState::Starting), &[], 0),
            Action::Start
        );
        assert_eq!(
            decide(&row(DesiredState::Running, NotebookState::Running), &[], 0),
            Action::Vanished
        );
        assert_eq!(
            decide(
                &row(DesiredState::Running, NotebookState::Running),
                &[&down],
                0
            ),
            Action::Crashed
        );
        assert_eq!(
            decide(
                &row(DesiredState::Running, NotebookState::Running),
                &[&up],
                0
            ),
            Action::Nothing
        );
        assert_eq!(
            decide(
                &row(DesiredState::Stopped, NotebookState::Running),
                &[&up],
                0
            ),
            Action::Stop
        );
        assert_eq!(
            decide(
                &row(DesiredState::Stopped, NotebookState::Stopped),
                &[&down],
                0
            ),
            Action::RemoveLeftover
        );
        assert_eq!(
            decide(&row(DesiredState::Stopped, NotebookState::Stopped), &[], 0),
            Action::Nothing
        );
        assert_eq!(
            decide(
                &row(DesiredState::Deleted, NotebookState::Running),
                &[&up],
                0
            ),
            Action::Delete
        );
        let mut expiring = row(DesiredState::Running, NotebookState::Running);
        expiring.auto_shutdown_at = Some(10);
        assert_eq!(decide(&expiring, &[&up], 11), Action::AutoShutdown);
        assert_eq!(decide(&expiring, &[&up], 9), Action::Nothing);
        assert_eq!(tail_lines("a\n\nb\nc\n", 2), "b\nc");
    }
}
