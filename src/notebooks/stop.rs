//! The stop path: take a notebook's containers down and record how it ended (stopped,
//! restarting, failed, deleted). Every record is one named operation of `db::lifecycle`.

use std::sync::Arc;

use crate::config::Config;
use crate::containers::{Engine, EngineError};
use crate::db::lifecycle::{self, StopOutcome, UsageEnd};
use crate::db::notebooks::{self as q, NotebookRow};
use crate::db::Db;
use crate::model::NotebookState;
use crate::platform::metrics::Metrics;

use super::dirs::Dirs;
use super::{Events, NotebookEvent};

/// How many log lines a failure message carries.
const LOG_TAIL_LINES: usize = 15;
/// SIGTERM grace before the engine kills a notebook.
pub(super) const STOP_GRACE_SECS: i32 = 10;

/// Takes containers down and records the outcome.
#[derive(Clone)]
pub struct Stopper {
    pub(super) db: Db,
    pub(super) config: Arc<Config>,
    pub(super) engine: Engine,
    pub(super) metrics: Metrics,
    pub(super) events: Events,
    pub(super) dirs: Dirs,
}

impl Stopper {
    /// Stops a notebook: marks it stopping, removes its containers, and records the stop
    /// (or the restart) in one transaction. `detail`: what its page says once stopped.
    pub async fn stop(&self, nb: &NotebookRow, containers: &[String], detail: Option<String>) {
        let id = nb.id.clone();
        if nb.state != NotebookState::Stopping {
            let nid = id.clone();
            let marked = self
                .db
                .call(move |c| lifecycle::record_stopping(c, &nid))
                .await;
            if let Err(e) = marked {
                tracing::warn!(notebook = %id, error = %e, "cannot mark the notebook stopping");
                return; // try again on the next pass
            }
        }
        if !self
            .remove_containers(&id, containers, STOP_GRACE_SECS)
            .await
        {
            return; // try again on the next pass
        }
        let detail = detail.unwrap_or_else(|| "Stopped".into());
        let nid = id.clone();
        let stopped = self
            .db
            .call(move |c| lifecycle::record_stopped(c, &nid, &detail))
            .await;
        match stopped {
            Ok(StopOutcome::Stopped | StopOutcome::Restarting) => {}
            Err(e) => {
                tracing::warn!(notebook = %id, error = %e, "cannot record the stop");
                return;
            }
        }
        // The files are at rest now: whoever follows (the share previews) catches up.
        self.events
            .publish(NotebookEvent::Stopped { notebook_id: id });
    }

    /// Removes a deleted notebook's containers, its folder, then its row.
    pub async fn delete(&self, nb: &NotebookRow, containers: &[String]) {
        if !self
            .remove_containers(&nb.id, containers, STOP_GRACE_SECS)
            .await
        {
            return;
        }
        let dir = self.dirs.notebook_dir(&nb.id);
        if dir.exists() {
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                tracing::warn!(notebook = %nb.id, error = %e, "cannot remove notebook directory");
                return;
            }
        }
        let id = nb.id.clone();
        if let Err(e) = self.db.call(move |c| q::delete(c, &id)).await {
            tracing::warn!(notebook = %nb.id, error = %e, "cannot delete notebook row");
        }
    }

    /// Records a notebook whose container is gone although it should run.
    pub async fn record_vanished(&self, nb: &NotebookRow) {
        tracing::warn!(notebook = %nb.id, "container vanished");
        let id = nb.id.clone();
        if let Err(e) = self
            .db
            .call(move |c| lifecycle::record_vanished(c, &id))
            .await
        {
            tracing::warn!(notebook = %nb.id, error = %e, "cannot record a vanished container");
        }
    }

    /// Records a notebook whose Jupyter exited by itself: its usage ends when the
    /// container stopped (Notebox may have been down), its page says why.
    pub async fn record_crashed(&self, nb: &NotebookRow, containers: &[String]) {
        let ended = match self.container_stopped_at(containers).await {
            Some(t) => UsageEnd::At(t),
            None => UsageEnd::LastSeen,
        };
        let detail = self
            .exit_explanation(containers, "Jupyter stopped by itself")
            .await;
        // Recorded before the container is removed: when the record fails, the next pass
        // finds the exited container and decides the same, not "vanished".
        if self
            .fail(&nb.id, &[NotebookState::Running], &detail, ended)
            .await
        {
            self.remove_containers(&nb.id, containers, 0).await;
        }
    }

    /// When a notebook's containers stopped, as the engine reports it (None: it cannot
    /// say).
    async fn container_stopped_at(&self, containers: &[String]) -> Option<i64> {
        let network = &self.config.docker.network;
        let mut stopped_at = None;
        for c in containers {
            if let Ok(status) = self.engine.inspect(c, network).await {
                stopped_at = stopped_at.max(status.finished_at);
            }
        }
        stopped_at.map(|t| t.min(crate::clock::now()))
    }

    /// Removes containers, logging (once, here) any that the engine would not remove;
    /// they are found again on the next pass.
    pub async fn remove_containers(
        &self,
        notebook_id: &str,
        containers: &[String],
        grace_secs: i32,
    ) -> bool {
        let mut all = true;
        for c in containers {
            if let Err(e) = self.engine.stop_and_remove(c, grace_secs).await {
                self.metrics.docker_error("remove");
                tracing::warn!(notebook = %notebook_id, container = %c, error = %e, "cannot remove container");
                all = false;
            }
        }
        all
    }

    /// Marks a notebook failed with a reason (only from one of `from`). False when the
    /// database could not record it (a later pass tries again).
    pub async fn fail(
        &self,
        id: &str,
        from: &[NotebookState],
        detail: &str,
        ended: UsageEnd,
    ) -> bool {
        tracing::warn!(notebook = %id, reason = %detail, "notebook failed");
        let (nid, reason, from) = (id.to_string(), detail.to_string(), from.to_vec());
        let recorded = self
            .db
            .call(move |c| lifecycle::record_failed(c, &nid, &from, &reason, ended))
            .await;
        if let Err(e) = &recorded {
            tracing::error!(notebook = %id, error = %e, "cannot record a failure");
        }
        recorded.is_ok()
    }

    /// Fails every notebook on its way up (the engine cannot be reached).
    pub async fn fail_waiting(&self, notebooks: &[NotebookRow], e: &EngineError) {
        for nb in notebooks.iter().filter(|n| {
            n.desired_state == crate::model::DesiredState::Running
                && lifecycle::COMING_UP.contains(&n.state)
        }) {
            let detail = format!("Docker is not reachable: {e}");
            // The result is logged by `fail`; a failed record is made again next pass.
            self.fail(&nb.id, lifecycle::COMING_UP, &detail, UsageEnd::Now)
                .await;
        }
    }

    /// Why a container stopped: exit code, OOM, and the end of its log.
    pub async fn exit_explanation(&self, containers: &[String], headline: &str) -> String {
        let Some(id) = containers.first() else {
            return headline.to_string();
        };
        let mut out = headline.to_string();
        if let Ok(status) = self.engine.inspect(id, &self.config.docker.network).await {
            if status.oom_killed {
                out.push_str(" — it ran out of memory (choose a bigger machine type)");
            } else if let Some(code) = status.exit_code {
                out.push_str(&format!(" (exit code {code})"));
            }
            if !status.error.is_empty() {
                out.push_str(&format!(": {}", status.error));
            }
        }
        if let Ok(logs) = self.engine.logs_tail(id, 200, 64 * 1024).await {
            let tail = tail_lines(&logs.text, LOG_TAIL_LINES);
            if !tail.is_empty() {
                out.push_str(".\nLast lines of its log:\n");
                out.push_str(&tail);
            }
        }
        out
    }
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn failure_messages_keep_the_last_lines_of_the_log() {
        assert_eq!(super::tail_lines("a\n\nb\nc\n", 2), "b\nc");
    }
}
