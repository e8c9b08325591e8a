//! A notebook as the API and the pages show it (`model::wire::Notebook`).

use crate::clock::{now, rfc3339};
use crate::config::Config;
use crate::db::notebooks::NotebookRow;
use crate::idle::{policy_for, view::activity_view, Tracker};
use crate::model::NotebookState;

use super::rules::describe_auto_shutdown;
use super::Notebook;

/// The public view of a row, with its GPUs and place in the queue, and (while it runs)
/// its activity.
pub fn notebook_view(
    config: &Config,
    tracker: &Tracker,
    row: NotebookRow,
    gpus: Vec<String>,
    queue: Option<(usize, String)>,
) -> Notebook {
    let (queue_position, queue_reason) = queue.unzip();
    let image_name = match &row.environment {
        Some(e) => format!(
            "{} (environment, version {})",
            e.name.as_deref().unwrap_or("deleted"),
            e.version
        ),
        None => row
            .image_id
            .as_deref()
            .and_then(|id| config.image(id))
            .map(|i| i.name.clone())
            .unwrap_or_else(|| row.image.clone()),
    };
    let machine_name = config
        .machine(&row.machine_id)
        .map(|m| m.name.clone())
        .unwrap_or_else(|| row.machine_id.clone());
    let running = row.state == NotebookState::Running;
    let activity = running
        .then(|| {
            let policy = policy_for(config, &row.machine_id, row.idle_exempt);
            let t = now();
            tracker
                .status(&row.id, policy, t)
                .map(|s| activity_view(&s, t))
        })
        .flatten();
    let started = row.started_at.filter(|_| running);
    Notebook {
        environment: row
            .environment
            .as_ref()
            .map(|e| crate::model::wire::NotebookEnvironment {
                id: e.id.clone(),
                name: e.name.clone(),
                version: e.version,
            }),
        repo: row.repo.as_ref().map(|r| crate::model::wire::NotebookRepo {
            url: r.url.clone(),
            r#ref: r.reference.clone(),
            commit: r.commit.clone(),
            open: r.open_path.clone(),
        }),
        id: row.id.clone(),
        name: row.name.clone(),
        owner: row.owner.clone(),
        image: row.image.clone(),
        image_id: row.image_id.clone(),
        image_name,
        machine: row.machine_id.clone(),
        machine_name,
        state: row.state,
        desired_state: row.desired_state,
        state_detail: row.state_detail.clone(),
        queue_position: queue_position.map(|p| p as i64),
        queue_reason: queue_reason.filter(|r| !r.is_empty()),
        gpus,
        created_at: rfc3339(row.created_at),
        started_at: started.map(rfc3339),
        auto_shutdown: describe_auto_shutdown(row.auto_shutdown_secs),
        auto_shutdown_at: row.auto_shutdown_at.map(rfc3339),
        forked_from: row.forked_from.clone(),
        url: crate::jupyter::base_url(&row.id, None),
        jupyter_url: None,
        open_url: format!("/notebooks/{}/open", row.id),
        transient: row.state.is_transient(),
        has_container: row.state.holds_gpus(),
        activity,
        notice: row.notice.clone(),
        idle_exempt: row.idle_exempt,
        times: super::NotebookTimes {
            created: row.created_at,
            started,
            auto_shutdown: row.auto_shutdown_at,
        },
    }
}
