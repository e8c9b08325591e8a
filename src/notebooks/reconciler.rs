//! The reconciler: one task that compares what each notebook should be with what the
//! container engine has, and starts the operation that closes the gap (`start`, `stop`).
//! Woken by the API, engine events, a periodic tick, and once at start-up — so a crash at
//! any moment loses nothing. Owns the claims: one operation per notebook at a time.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::config::{Config, OverBudget};
use crate::containers::{Engine, OurContainer};
use crate::db::notebooks::{self as q, NotebookRow};
use crate::db::{lifecycle, Db};
use crate::gpu::telemetry::Telemetry;
use crate::idle::{ReclaimOrder, Reclaimer};
use crate::jupyter::JupyterProbe;
use crate::model::{DesiredState, NotebookState};
use crate::platform::metrics::Metrics;
use crate::platform::webhook::{EventKind, Happening, Webhook};

use super::dirs::Dirs;
use super::job_run::JobEnding;
use super::start::{Checked, Starter};
use super::stop::{Stopper, STOP_GRACE_SECS};
use super::Events;

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
    /// A job's container exited by itself.
    JobFinished,
    /// A job's container is gone although it should run.
    JobVanished,
    /// A job ran past its time limit.
    JobTimeLimit,
    /// A job was asked to end (cancel): its container comes down.
    JobTakeDown,
    /// A job's row came to rest (out of the queue, a failed start): its end is written.
    JobSettle,
}

/// What a job's row needs next. A job never idles out, is never restarted and never
/// reclaimed: it ends when its container exits, at its time limit, or when cancelled.
fn decide_job(row: &NotebookRow, containers: &[&OurContainer], now: i64) -> Action {
    use DesiredState as D;
    use NotebookState as S;
    let any_running = containers.iter().any(|c| c.running);
    match (row.desired_state, row.state) {
        (D::Running, S::Starting | S::Pulling) => Action::Start,
        (D::Running, S::Running) if containers.is_empty() => Action::JobVanished,
        (D::Running, S::Running) if !any_running => Action::JobFinished,
        (D::Running, S::Running) if row.auto_shutdown_at.is_some_and(|t| t <= now) => {
            Action::JobTimeLimit
        }
        (D::Running, S::Running) | (_, S::Queued) => Action::Nothing,
        (_, S::Stopped | S::Failed) => Action::JobSettle,
        _ => Action::JobTakeDown,
    }
}

fn decide(nb: &NotebookRow, containers: &[&OurContainer], now: i64) -> Action {
    if nb.is_job {
        return decide_job(nb, containers, now);
    }
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

/// What the reconciler is built from (see `lib::run`).
pub struct ReconcilerParts {
    pub db: Db,
    pub config: Arc<Config>,
    pub engine: Engine,
    pub telemetry: Telemetry,
    pub metrics: Metrics,
    pub webhook: Webhook,
    pub events: Events,
    /// Members' variables (into each container) and registry logins (for pulls).
    pub secrets: crate::secrets::Secrets,
    /// This installation's id (on its containers' names and labels).
    pub instance: String,
}

/// Drives every notebook toward what it should be. Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    db: Db,
    config: Arc<Config>,
    engine: Engine,
    telemetry: Telemetry,
    metrics: Metrics,
    webhook: Webhook,
    starter: Starter,
    stopper: Stopper,
    jobs: JobEnding,
    claims: Arc<Claims>,
}

/// Notebooks with an operation in flight (the others' passes leave them alone), and the
/// reconciler's bell and pass count.
#[derive(Default)]
struct Claims {
    inflight: Mutex<HashSet<String>>,
    wake: Notify,
    /// Passes completed since start (shown by /healthz and /metrics, so tests can wait
    /// for passes instead of sleeping).
    passes: AtomicU64,
    /// The earliest time limit of a running job (Unix seconds; 0: none): the next pass
    /// comes no later.
    next_deadline: std::sync::atomic::AtomicI64,
}

impl Reconciler {
    pub fn new(parts: ReconcilerParts) -> Reconciler {
        let dirs = Dirs::new(&parts.config);
        let stopper = Stopper {
            db: parts.db.clone(),
            config: parts.config.clone(),
            engine: parts.engine.clone(),
            metrics: parts.metrics.clone(),
            events: parts.events,
            dirs: dirs.clone(),
        };
        let jobs = JobEnding {
            db: parts.db.clone(),
            config: parts.config.clone(),
            engine: parts.engine.clone(),
            webhook: parts.webhook.clone(),
            dirs: dirs.clone(),
            stopper: stopper.clone(),
        };
        let starter = Starter {
            jobs: jobs.clone(),
            db: parts.db.clone(),
            config: parts.config.clone(),
            engine: parts.engine.clone(),
            telemetry: parts.telemetry.clone(),
            probe: JupyterProbe::default(),
            dirs,
            instance: parts.instance,
            checked: Arc::new(Checked::default()),
            stopper: stopper.clone(),
            secrets: parts.secrets,
        };
        Reconciler {
            db: parts.db,
            config: parts.config,
            engine: parts.engine,
            telemetry: parts.telemetry,
            metrics: parts.metrics,
            webhook: parts.webhook,
            starter,
            stopper,
            jobs,
            claims: Arc::default(),
        }
    }

    /// Asks for a pass soon.
    pub fn wake(&self) {
        self.claims.wake.notify_one();
    }

    /// How many passes have completed since start.
    pub fn passes(&self) -> u64 {
        self.claims.passes.load(Ordering::Acquire)
    }

    /// Runs until the process ends: once now, then on every wake-up and tick.
    pub async fn run(self) {
        let _events = AbortOnDrop(tokio::spawn(self.clone().watch_engine_events()));
        let interval = self.config.notebooks.reconcile_interval;
        loop {
            let started = Instant::now();
            self.reconcile_all().await;
            self.metrics.reconcile_pass(started.elapsed().as_secs_f64());
            self.claims.passes.fetch_add(1, Ordering::Release);
            let deadline = self.claims.next_deadline.load(Ordering::Acquire);
            let wait = match deadline {
                0 => interval,
                t => interval.min(Duration::from_secs(
                    (t - crate::clock::now()).clamp(0, i64::MAX) as u64 + 1,
                )),
            };
            tokio::select! {
                _ = self.claims.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Engine events about our containers (a crash, a removal) wake the reconciler.
    async fn watch_engine_events(self) {
        loop {
            match self.engine.events().await {
                Ok(mut events) => {
                    while let Some(event) = events.next().await {
                        match event {
                            Ok(e) => {
                                tracing::debug!(action = %e.action, "docker event");
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
        self.admit_queued().await;
        let notebooks = match self.db.call(|c| q::list_all(c)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "reconciler cannot read notebooks");
                return;
            }
        };
        // Without the engine nothing can start: say so instead of leaving people waiting.
        if let Err(e) = self.engine.connect().await {
            self.metrics.docker_error("connect");
            self.stopper.fail_waiting(&notebooks, &e).await;
            return;
        }
        let containers = match self.engine.list_ours().await {
            Ok(c) => c,
            Err(e) => {
                self.metrics.docker_error("list");
                tracing::warn!(error = %e, "reconciler cannot list containers");
                return;
            }
        };
        self.remove_orphans(&notebooks, &containers);
        let mut by_notebook: HashMap<&str, Vec<&OurContainer>> = HashMap::new();
        for c in &containers {
            by_notebook
                .entry(c.notebook_id.as_str())
                .or_default()
                .push(c);
        }
        let t = crate::clock::now();
        // The next pass comes no later than a running job's time limit or a booking's
        // start or end (its GPUs change hands then).
        let booking = self
            .db
            .call(move |c| crate::db::reservations::next_boundary(c, t))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the next booking");
                None
            });
        let deadline = notebooks
            .iter()
            .filter(|n| n.is_job && n.state == NotebookState::Running)
            .filter_map(|n| n.auto_shutdown_at)
            .chain(booking)
            .min()
            .unwrap_or(0);
        self.claims.next_deadline.store(deadline, Ordering::Release);
        for nb in notebooks {
            let theirs = by_notebook.get(nb.id.as_str()).cloned().unwrap_or_default();
            let action = decide(&nb, &theirs, t);
            if action == Action::Nothing || !self.try_claim(&nb.id) {
                continue;
            }
            let ids: Vec<String> = theirs.iter().map(|c| c.id.clone()).collect();
            let this = self.clone();
            tokio::spawn(async move {
                let id = nb.id.clone();
                this.perform(action, nb, ids).await;
                this.release(&id);
            });
        }
    }

    /// Queued notebooks whose GPUs came free start first (and GPUs a crash left held by
    /// stopped notebooks are freed).
    async fn admit_queued(&self) {
        let gpus = self.telemetry.uuids();
        let block = (self.config.usage.over_budget == OverBudget::Block)
            .then(|| crate::usage::month_start(crate::clock::now()));
        let order = crate::sharing::fair_share::QueueOrder::from_config(&self.config);
        let admitted = self
            .db
            .call(move |c| crate::db::placement::admit_queued_now(c, &gpus, block, &order))
            .await;
        match admitted {
            Ok(started) if !started.is_empty() => {
                tracing::info!(notebooks = ?started, "started from the GPU queue");
                self.tell_queued_started(started).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot admit queued notebooks"),
        }
    }

    /// Containers of ours whose notebook no longer exists (deleted during a crash).
    fn remove_orphans(&self, notebooks: &[NotebookRow], containers: &[OurContainer]) {
        for c in containers {
            if notebooks.iter().any(|n| n.id == c.notebook_id) || !self.try_claim(&c.notebook_id) {
                continue;
            }
            let (this, c) = (self.clone(), c.clone());
            tokio::spawn(async move {
                tracing::info!(container = %c.id, notebook = %c.notebook_id, "removing orphaned container");
                if let Err(e) = this.engine.stop_and_remove(&c.id, STOP_GRACE_SECS).await {
                    tracing::warn!(error = %e, "cannot remove orphaned container");
                }
                this.release(&c.notebook_id);
            });
        }
    }

    /// The webhook hears of each queued notebook that got its GPUs.
    async fn tell_queued_started(&self, started: Vec<String>) {
        if !self.webhook.is_enabled() {
            return;
        }
        for id in started {
            let nid = id.clone();
            match self.db.call(move |c| q::by_id(c, &nid)).await {
                Ok(Some(row)) => self.webhook.tell(Happening {
                    kind: EventKind::QueuedStarted,
                    notebook_id: &row.id,
                    member: &row.owner,
                    notebook_name: &row.name,
                    reason: row
                        .notice
                        .clone()
                        .unwrap_or_else(|| "its GPUs came free".to_string()),
                    reclaim_at: None,
                }),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(notebook = %id, error = %e, "cannot describe a queued start")
                }
            }
        }
    }

    async fn perform(&self, action: Action, nb: NotebookRow, containers: Vec<String>) {
        tracing::debug!(notebook = %nb.id, ?action, "reconciling");
        match action {
            Action::Nothing => {}
            Action::Start => self.starter.start(&nb, false).await,
            Action::Stop => {
                // A stop asked with a reason ("Stopping: the account was disabled") keeps
                // it once stopped.
                let why = nb
                    .state_detail
                    .strip_prefix("Stopping: ")
                    .map(|why| format!("Stopped: {why}"));
                self.stopper.stop(&nb, &containers, why).await
            }
            Action::Delete => self.stopper.delete(&nb, &containers).await,
            Action::Vanished => self.stopper.record_vanished(&nb).await,
            Action::Crashed => self.stopper.record_crashed(&nb, &containers).await,
            Action::AutoShutdown => self.auto_shutdown(nb, &containers).await,
            Action::RemoveLeftover => {
                self.stopper
                    .remove_containers(&nb.id, &containers, STOP_GRACE_SECS)
                    .await;
            }
            Action::JobFinished => self.jobs.finished(&nb, &containers).await,
            Action::JobVanished => self.jobs.vanished(&nb).await,
            Action::JobTimeLimit => self.jobs.time_limit(&nb, &containers).await,
            Action::JobTakeDown => self.jobs.take_down(&nb, &containers).await,
            Action::JobSettle => self.jobs.settle(&nb).await,
        }
    }

    /// Stops a notebook whose auto-shutdown time has come.
    async fn auto_shutdown(&self, nb: NotebookRow, containers: &[String]) {
        let after = super::rules::describe_auto_shutdown(nb.auto_shutdown_secs);
        let (id, detail) = (
            nb.id.clone(),
            format!("Stopping automatically after {after}"),
        );
        let moved = self
            .db
            .call(move |c| lifecycle::begin_auto_shutdown(c, &id, &detail))
            .await;
        match moved {
            Ok(true) => {
                tracing::info!(notebook = %nb.id, "auto-shutdown");
                let nb = NotebookRow {
                    state: NotebookState::Stopping,
                    ..nb
                };
                let detail = format!("Stopped automatically after {after}");
                self.stopper.stop(&nb, containers, Some(detail)).await;
            }
            Ok(false) => {} // someone else moved it first
            Err(e) => {
                tracing::warn!(notebook = %nb.id, error = %e, "cannot start an auto-shutdown")
            }
        }
    }

    /// Starts a notebook the API has just moved to starting, without waiting for the next
    /// pass (which would first read every notebook and list every container). `fresh`: a
    /// notebook created a moment ago, which cannot have a container yet. When a pass got
    /// to it first, the pass carries on and this does nothing. Returns whether it started
    /// (false: a pass has it, or it is not to start).
    pub fn start_now(&self, nb: NotebookRow, fresh: bool) -> bool {
        if nb.desired_state != DesiredState::Running
            || !lifecycle::COMING_UP.contains(&nb.state)
            || !self.try_claim(&nb.id)
        {
            return false;
        }
        let this = self.clone();
        tokio::spawn(async move {
            // Without the engine, a pass at once says so on the notebook's page (not at the
            // next tick).
            if this.engine.connect().await.is_ok() {
                this.starter.start(&nb, fresh).await;
            }
            this.release(&nb.id);
        });
        true
    }

    fn try_claim(&self, notebook_id: &str) -> bool {
        self.claims
            .inflight
            .lock()
            .map(|mut set| set.insert(notebook_id.to_string()))
            .unwrap_or(false)
    }

    fn release(&self, notebook_id: &str) {
        if let Ok(mut set) = self.claims.inflight.lock() {
            set.remove(notebook_id);
        }
        self.wake();
    }
}

impl Reclaimer for Reconciler {
    /// Moves the idle notebook to stopping (and tells the queued one why its GPUs came
    /// free), then stops it in the background. False when the reconciler is at it or it
    /// moved meanwhile.
    fn reclaim(&self, order: ReclaimOrder) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            if !self.try_claim(&order.notebook_id) {
                return false; // the reconciler is at it; next time
            }
            let (id, stopping, beneficiary) = (
                order.notebook_id.clone(),
                order.stopping.clone(),
                order.beneficiary.clone(),
            );
            let moved = self
                .db
                .call(move |c| {
                    let beneficiary = beneficiary.as_ref().map(|(q, n)| (q.as_str(), n.as_str()));
                    lifecycle::begin_reclaim(c, &id, &stopping, beneficiary)
                })
                .await;
            match moved {
                Ok(true) => {}
                Ok(false) => {
                    self.release(&order.notebook_id);
                    return false; // stopped or restarted meanwhile
                }
                Err(e) => {
                    tracing::warn!(notebook = %order.notebook_id, error = %e, "cannot start a reclaim");
                    self.release(&order.notebook_id);
                    return false;
                }
            }
            let this = self.clone();
            tokio::spawn(async move { this.finish_reclaim(order).await });
            true
        })
    }
}

impl Reconciler {
    /// Takes a reclaimed notebook's container down; the next pass finishes whatever is
    /// left (and admits the queue).
    async fn finish_reclaim(&self, order: ReclaimOrder) {
        let id = order.notebook_id.clone();
        let containers: Vec<String> = order.container_id.iter().cloned().collect();
        let nid = id.clone();
        match self.db.call(move |c| q::by_id(c, &nid)).await {
            Ok(Some(row)) => {
                self.stopper
                    .stop(&row, &containers, Some(order.stopped))
                    .await
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(notebook = %id, error = %e, "reclaim cannot read the notebook")
            }
        }
        self.release(&id);
    }
}

/// Ends a helper task when its owner (the reconciler task) ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::ContainerState;

    fn row(desired: DesiredState, state: NotebookState) -> NotebookRow {
        let mut r = crate::notebooks::spec::tests_support::row();
        r.desired_state = desired;
        r.state = state;
        r
    }

    fn container(running: bool) -> OurContainer {
        OurContainer {
            id: "c".into(),
            notebook_id: "n".into(),
            running,
            state: if running {
                ContainerState::Running
            } else {
                ContainerState::Exited
            },
        }
    }

    #[test]
    fn decisions() {
        let up = container(true);
        let down = container(false);
        let decide_for = |desired, state, containers: &[&OurContainer]| {
            decide(&row(desired, state), containers, 0)
        };
        use DesiredState as D;
        use NotebookState as S;
        assert_eq!(decide_for(D::Running, S::Starting, &[]), Action::Start);
        assert_eq!(decide_for(D::Running, S::Running, &[]), Action::Vanished);
        assert_eq!(
            decide_for(D::Running, S::Running, &[&down]),
            Action::Crashed
        );
        assert_eq!(decide_for(D::Running, S::Running, &[&up]), Action::Nothing);
        assert_eq!(decide_for(D::Stopped, S::Running, &[&up]), Action::Stop);
        assert_eq!(
            decide_for(D::Stopped, S::Stopped, &[&down]),
            Action::RemoveLeftover
        );
        assert_eq!(decide_for(D::Stopped, S::Stopped, &[]), Action::Nothing);
        assert_eq!(decide_for(D::Deleted, S::Running, &[&up]), Action::Delete);
        let mut expiring = row(DesiredState::Running, NotebookState::Running);
        expiring.auto_shutdown_at = Some(10);
        assert_eq!(decide(&expiring, &[&up], 11), Action::AutoShutdown);
        assert_eq!(decide(&expiring, &[&up], 9), Action::Nothing);
    }
}
