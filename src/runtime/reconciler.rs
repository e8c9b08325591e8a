//! The reconciler: one task that compares what each notebook should be with what Docker
//! has, and starts the operation that closes the gap. Woken by API changes, Docker events,
//! a periodic tick, and once at start-up — so a crash at any moment loses nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::db::notebooks::{self as q, NotebookRow};
use crate::db::now;

use super::docker::{DockerEngine, DockerError, OurContainer, PullProgress};
use super::spec::{container_name, container_spec, Mounts};
use super::Runtime;

/// How many log lines a failure message carries.
const LOG_TAIL_LINES: usize = 15;
/// SIGTERM grace before Docker kills a notebook.
const STOP_GRACE_SECS: i32 = 10;

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
    let any_running = containers.iter().any(|c| c.running);
    match (nb.desired_state.as_str(), nb.state.as_str()) {
        ("deleted", _) => Action::Delete,
        ("running", "starting" | "pulling") => Action::Start,
        ("running", "stopping") => Action::Stop,
        ("running", "running") if containers.is_empty() => Action::Vanished,
        ("running", "running") if !any_running => Action::Crashed,
        ("running", "running") if nb.auto_shutdown_at.is_some_and(|t| t <= now) => {
            Action::AutoShutdown
        }
        ("stopped", "running" | "starting" | "pulling" | "stopping") => Action::Stop,
        ("stopped", "stopped" | "failed" | "queued") if !containers.is_empty() => {
            Action::RemoveLeftover
        }
        _ => Action::Nothing,
    }
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
        let interval = self.config().reconcile_interval();
        loop {
            self.reconcile_all().await;
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
        let admitted = self
            .db()
            .call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let started = crate::gpu::allocation::admit_queued(&tx, &gpus)?;
                tx.commit()?;
                Ok(started)
            })
            .await;
        match admitted {
            Ok(started) if !started.is_empty() => {
                tracing::info!(notebooks = ?started, "started from the GPU queue")
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
                self.fail_waiting_notebooks(&notebooks, &e).await;
                return;
            }
        };
        let containers = match docker.list_ours().await {
            Ok(c) => c,
            Err(e) => {
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

    /// Without Docker nothing can start: say so instead of leaving people waiting.
    async fn fail_waiting_notebooks(&self, notebooks: &[NotebookRow], e: &DockerError) {
        for nb in notebooks.iter().filter(|n| {
            n.desired_state == "running" && matches!(n.state.as_str(), "starting" | "pulling")
        }) {
            let detail = format!("Docker is not reachable: {e}");
            self.fail(&nb.id, &["starting", "pulling"], &detail).await;
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
            Action::Start => self.start_op(&nb, &docker).await,
            Action::Stop => self.stop_op(&nb, &containers, &docker).await,
            Action::Delete => self.delete_op(&nb, &containers, &docker).await,
            Action::Vanished => {
                let id = nb.id.clone();
                let _ = self
                    .db()
                    .call(move |c| {
                        q::set_container(c, &id, None)?;
                        q::transition(
                            c,
                            &id,
                            &["running"],
                            "stopped",
                            "The container was removed outside Notebox. Start the notebook again; its files are kept.",
                            Some("stopped"),
                        )
                    })
                    .await;
                tracing::warn!(notebook = %nb.id, "container vanished");
            }
            Action::Crashed => {
                let detail = self
                    .exit_explanation(&docker, &containers, "Jupyter stopped by itself")
                    .await;
                for c in &containers {
                    let _ = docker.stop_and_remove(c, 0).await;
                }
                self.fail(&nb.id, &["running"], &detail).await;
            }
            Action::AutoShutdown => {
                let after = super::notebooks::describe_auto_shutdown(nb.auto_shutdown_secs);
                let id = nb.id.clone();
                let detail = format!("Stopping automatically after {after}");
                let moved = self
                    .db()
                    .call(move |c| {
                        q::transition(c, &id, &["running"], "stopping", &detail, Some("stopped"))
                    })
                    .await
                    .unwrap_or(false);
                if moved {
                    tracing::info!(notebook = %nb.id, "auto-shutdown");
                    let mut nb = nb;
                    nb.state = "stopping".into();
                    self.stop_op_with(
                        &nb,
                        &containers,
                        &docker,
                        Some(format!("Stopped automatically after {after}")),
                    )
                    .await;
                }
            }
            Action::RemoveLeftover => {
                for c in &containers {
                    if let Err(e) = docker.stop_and_remove(c, STOP_GRACE_SECS).await {
                        tracing::warn!(notebook = %nb.id, error = %e, "cannot remove leftover container");
                    }
                }
            }
        }
    }

    /// Marks a notebook failed with a reason (only from one of `from`).
    async fn fail(&self, id: &str, from: &'static [&'static str], detail: &str) {
        let (id, detail) = (id.to_string(), detail.to_string());
        tracing::warn!(notebook = %id, reason = %detail, "notebook failed");
        let _ = self
            .db()
            .call(move |c| {
                q::set_container(c, &id, None)?;
                q::transition(c, &id, from, "failed", &detail, Some("stopped"))
            })
            .await;
    }

    async fn set_detail(&self, id: &str, state: &str, detail: String) {
        let (id, state) = (id.to_string(), state.to_string());
        let _ = self
            .db()
            .call(move |c| q::set_detail(c, &id, &state, &detail))
            .await;
    }

    async fn still_wanted(&self, id: &str) -> bool {
        let id = id.to_string();
        matches!(
            self.db().call(move |c| q::by_id(c, &id)).await,
            Ok(Some(r)) if r.desired_state == "running" && matches!(r.state.as_str(), "starting" | "pulling")
        )
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
        if let Ok(logs) = docker.logs_tail(id, 200).await {
            let tail = tail_lines(&logs, LOG_TAIL_LINES);
            if !tail.is_empty() {
                out.push_str(".\nLast lines of its log:\n");
                out.push_str(&tail);
            }
        }
        out
    }

    /// Pull if needed, create (or adopt) the container, start it, wait for Jupyter.
    async fn start_op(&self, nb: &NotebookRow, docker: &DockerEngine) {
        let config = self.config().clone();
        let id = nb.id.as_str();
        // Directories, network, image.
        // Directory creation and chown are blocking file system work.
        let dirs = {
            let rt = self.clone();
            let (owner, id) = (nb.owner.clone(), nb.id.clone());
            tokio::task::spawn_blocking(move || {
                let storage = rt.storage_dir(&owner);
                let notebooks = rt.notebook_dir(&id);
                let datasets = rt.datasets_dir();
                rt.prepare_dir(&storage, false)?;
                rt.prepare_dir(&notebooks, false)?;
                rt.prepare_dir(&datasets, true)?;
                Ok::<_, super::NotebookError>((storage, notebooks, datasets))
            })
            .await
            .unwrap_or_else(|e| Err(super::NotebookError::Host(e.to_string())))
        };
        let (storage, notebooks, datasets) = match dirs {
            Ok(d) => d,
            Err(e) => {
                return self
                    .fail(id, &["starting", "pulling"], &e.to_string())
                    .await
            }
        };
        if let Err(e) = docker.ensure_network(&config.docker.network).await {
            return self
                .fail(
                    id,
                    &["starting", "pulling"],
                    &format!(
                        "Cannot create the Docker network '{}': {e}",
                        config.docker.network
                    ),
                )
                .await;
        }
        match docker.image_exists(&nb.image).await {
            Ok(true) => {}
            Ok(false) => {
                if !self.pull(nb, docker).await {
                    return;
                }
            }
            Err(e) => {
                return self
                    .fail(
                        id,
                        &["starting", "pulling"],
                        &format!("Docker could not look up the image '{}': {e}", nb.image),
                    )
                    .await
            }
        }
        if !self.still_wanted(id).await {
            return;
        }

        // The GPUs this notebook was given when it moved to starting.
        let gpus = {
            let nid = id.to_string();
            self.db()
                .call(move |c| crate::db::gpus::of_notebook(c, &nid))
                .await
                .unwrap_or_default()
        };
        if gpus.len() as i64 != nb.gpu_count {
            let detail = format!(
                "This notebook needs {} GPU(s) but holds {}; start it again.",
                nb.gpu_count,
                gpus.len()
            );
            return self.fail(id, &["starting", "pulling"], &detail).await;
        }

        // Create, or adopt the container an interrupted start left behind.
        self.set_detail(id, "starting", "Creating the container".into())
            .await;
        let name = container_name(self.instance(), id);
        let mounts = Mounts {
            storage: &storage,
            notebooks: &notebooks,
            datasets: &datasets,
        };
        let existing = docker
            .list_ours()
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.notebook_id == nb.id);
        if let Some(old) = existing
            .as_ref()
            .filter(|c| c.state == "exited" || c.state == "dead")
        {
            let _ = docker.stop_and_remove(&old.id, 0).await;
        }
        let container_id = match existing.filter(|c| c.state == "running" || c.state == "created") {
            Some(c) => c.id,
            None => {
                let body = container_spec(
                    nb,
                    &config,
                    self.instance(),
                    &mounts,
                    &gpus,
                    self.gpus().inventory().uses_device_requests(),
                );
                match docker.create_container(&name, body).await {
                    Ok(cid) => cid,
                    Err(e) => {
                        let detail = match e {
                            DockerError::NotFound(m) => {
                                format!("The image '{}' is not available: {m}", nb.image)
                            }
                            other => format!("Docker could not create the container: {other}"),
                        };
                        return self.fail(id, &["starting", "pulling"], &detail).await;
                    }
                }
            }
        };
        {
            let (nid, cid) = (id.to_string(), container_id.clone());
            let _ = self
                .db()
                .call(move |c| q::set_container(c, &nid, Some(&cid)))
                .await;
        }
        if let Err(e) = docker.start_container(&container_id).await {
            let detail = format!("Docker could not start the container: {e}");
            let _ = docker.stop_and_remove(&container_id, 0).await;
            return self.fail(id, &["starting", "pulling"], &detail).await;
        }
        self.set_detail(id, "starting", "Starting Jupyter".into())
            .await;

        // Wait for Jupyter to answer with its token.
        let deadline = Instant::now() + config.ready_timeout();
        let network = config.docker.network.clone();
        loop {
            if !self.still_wanted(id).await {
                return; // stopped or deleted meanwhile; the next pass cleans up
            }
            match docker.inspect(&container_id, &network).await {
                Ok(status) if !status.running => {
                    let detail = self
                        .exit_explanation(
                            docker,
                            std::slice::from_ref(&container_id),
                            "Jupyter exited while starting",
                        )
                        .await;
                    let _ = docker.stop_and_remove(&container_id, 0).await;
                    return self.fail(id, &["starting"], &detail).await;
                }
                Ok(status) => {
                    if let Some(ip) = status.ip {
                        if self.inner.probe.is_ready(&ip, id, &nb.jupyter_token).await {
                            let nid = id.to_string();
                            let ok = self
                                .db()
                                .call(move |c| {
                                    q::set_container_ip(c, &nid, &ip)?;
                                    q::transition(
                                        c,
                                        &nid,
                                        &["starting"],
                                        "running",
                                        "Jupyter is ready",
                                        None,
                                    )
                                })
                                .await
                                .unwrap_or(false);
                            if ok {
                                tracing::info!(notebook = %id, "notebook running");
                            }
                            return;
                        }
                    }
                }
                Err(DockerError::NotFound(_)) => {
                    return self
                        .fail(
                            id,
                            &["starting"],
                            "The container disappeared while Jupyter was starting.",
                        )
                        .await;
                }
                Err(e) => tracing::warn!(notebook = %id, error = %e, "cannot inspect container"),
            }
            if Instant::now() > deadline {
                let headline = format!(
                    "Jupyter did not answer within {}",
                    humantime::format_duration(config.ready_timeout())
                );
                let detail = self
                    .exit_explanation(docker, std::slice::from_ref(&container_id), &headline)
                    .await;
                let _ = docker.stop_and_remove(&container_id, 0).await;
                return self.fail(id, &["starting"], &detail).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Pulls the notebook's image, showing layer progress in its state detail.
    async fn pull(&self, nb: &NotebookRow, docker: &DockerEngine) -> bool {
        let id = nb.id.clone();
        let moved = {
            let (id, detail) = (id.clone(), format!("Pulling image {}", nb.image));
            self.db()
                .call(move |c| q::transition(c, &id, &["starting"], "pulling", &detail, None))
                .await
                .unwrap_or(false)
        };
        if !moved {
            return false;
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
                    rt.set_detail(&id, "pulling", detail).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let result = docker
            .pull_image(&nb.image, |p| {
                let _ = tx.send(p.clone());
            })
            .await;
        drop(tx);
        let _ = reporter.await;
        match result {
            Ok(()) => {
                let id2 = id.clone();
                self.db()
                    .call(move |c| {
                        q::transition(c, &id2, &["pulling"], "starting", "Image pulled", None)
                    })
                    .await
                    .unwrap_or(false)
            }
            Err(e) => {
                let detail = format!("Could not pull the image '{}': {e}", nb.image);
                self.fail(&id, &["pulling"], &detail).await;
                false
            }
        }
    }

    async fn stop_op(&self, nb: &NotebookRow, containers: &[String], docker: &DockerEngine) {
        self.stop_op_with(nb, containers, docker, None).await
    }

    async fn stop_op_with(
        &self,
        nb: &NotebookRow,
        containers: &[String],
        docker: &DockerEngine,
        detail: Option<String>,
    ) {
        let id = nb.id.clone();
        if nb.state != "stopping" {
            let id = id.clone();
            let _ = self
                .db()
                .call(move |c| {
                    q::transition(
                        c,
                        &id,
                        &["running", "starting", "pulling"],
                        "stopping",
                        "Stopping",
                        None,
                    )
                })
                .await;
        }
        for c in containers {
            if let Err(e) = docker.stop_and_remove(c, STOP_GRACE_SECS).await {
                tracing::warn!(notebook = %id, error = %e, "cannot stop container");
                return; // try again on the next pass
            }
        }
        let detail = detail.unwrap_or_else(|| "Stopped".into());
        let notebook_id = id.clone();
        let stopped = self
            .db()
            .call(move |c| {
                q::set_container(c, &id, None)?;
                let restart = q::by_id(c, &id)?
                    .is_some_and(|r| r.restart_requested && r.desired_state == "running");
                if restart {
                    q::set_restart_requested(c, &id, false)?;
                    q::transition(c, &id, &["stopping"], "starting", "Restarting", None)
                } else {
                    q::transition(c, &id, &["stopping"], "stopped", &detail, Some("stopped"))
                }
            })
            .await;
        if let Err(e) = stopped {
            tracing::warn!(notebook = %notebook_id, error = %e, "cannot record the stop");
            return;
        }
        // The files are at rest now: the gallery's preview of this notebook is brought up
        // to date here, never on an anonymous request.
        if let Err(e) = self.refresh_share_previews(&notebook_id).await {
            tracing::warn!(notebook = %notebook_id, error = %e, "cannot refresh share previews");
        }
    }

    async fn delete_op(&self, nb: &NotebookRow, containers: &[String], docker: &DockerEngine) {
        for c in containers {
            if let Err(e) = docker.stop_and_remove(c, STOP_GRACE_SECS).await {
                tracing::warn!(notebook = %nb.id, error = %e, "cannot remove container of deleted notebook");
                return;
            }
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

    fn row(desired: &str, state: &str) -> NotebookRow {
        let mut r = crate::runtime::spec::tests_support::row();
        r.desired_state = desired.into();
        r.state = state.into();
        r
    }

    fn container(running: bool) -> OurContainer {
        OurContainer {
            id: "c".into(),
            notebook_id: "n".into(),
            running,
            state: if running {
                "running".into()
            } else {
                "exited".into()
            },
        }
    }

    #[test]
    fn decisions() {
        let up = container(true);
        let down = container(false);
        assert_eq!(decide(&row("running", "starting"), &[], 0), Action::Start);
        assert_eq!(decide(&row("running", "running"), &[], 0), Action::Vanished);
        assert_eq!(
            decide(&row("running", "running"), &[&down], 0),
            Action::Crashed
        );
        assert_eq!(
            decide(&row("running", "running"), &[&up], 0),
            Action::Nothing
        );
        assert_eq!(decide(&row("stopped", "running"), &[&up], 0), Action::Stop);
        assert_eq!(
            decide(&row("stopped", "stopped"), &[&down], 0),
            Action::RemoveLeftover
        );
        assert_eq!(decide(&row("stopped", "stopped"), &[], 0), Action::Nothing);
        assert_eq!(
            decide(&row("deleted", "running"), &[&up], 0),
            Action::Delete
        );
        let mut expiring = row("running", "running");
        expiring.auto_shutdown_at = Some(10);
        assert_eq!(decide(&expiring, &[&up], 11), Action::AutoShutdown);
        assert_eq!(decide(&expiring, &[&up], 9), Action::Nothing);
        assert_eq!(tail_lines("a\n\nb\nc\n", 2), "b\nc");
    }
}
