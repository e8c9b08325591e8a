//! What members can do with notebooks, and the rules for it.

use std::time::Duration;

use crate::auth::{secrets, User};
use crate::config::{self, Launcher};
use crate::db::notebooks::{self as q, NewNotebook, NotebookRow};
use crate::db::{now, DbError};
use crate::model::{DesiredState, NotebookState};

use super::docker::{DockerError, LogTail};
use super::logs::{self, LogReadRefusal, LogReads};
use super::Runtime;

/// Members' notebooks: create, start, stop, restart, delete, extend, logs, and the views
/// the pages and the API show. Over the shared runtime; the reconciler does the Docker work.
#[derive(Clone)]
pub struct Notebooks {
    core: Runtime,
    log_reads: LogReads,
}

impl Notebooks {
    pub fn new(core: Runtime) -> Notebooks {
        Notebooks {
            core,
            log_reads: LogReads::default(),
        }
    }

    pub fn config(&self) -> &crate::config::Config {
        self.core.config()
    }
}
use crate::db::gpus as gq;
use crate::gpu::allocation::{self, Placement, PlacementRequest, Refusal};

#[derive(Debug, thiserror::Error)]
pub enum NotebookError {
    #[error("no such notebook")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// Not enough free GPUs, a quota, or a machine type bigger than the workstation.
    #[error(transparent)]
    Gpus(#[from] Refusal),
    #[error("Docker is not reachable, so notebooks cannot run right now: {0}")]
    Docker(#[from] DockerError),
    #[error("{0}")]
    Host(String),
    #[error(transparent)]
    Db(DbError),
    /// Too many log reads at once (the member's, or everyone's).
    #[error("{}", .0.message())]
    LogReadsBusy(LogReadRefusal),
}

/// How long a notebook runs before it is stopped for the next person.
#[derive(Debug, Clone, Copy)]
pub enum AutoShutdown {
    /// The config's `notebooks.default_auto_shutdown`.
    Default,
    Never,
    After(Duration),
}

impl AutoShutdown {
    /// A member's choice: "1h", "6h", "12h", "1d", "1w" or "never".
    pub fn from_choice(choice: &str) -> Result<AutoShutdown, String> {
        Ok(match config::parse_auto_shutdown(choice)? {
            None => AutoShutdown::Never,
            Some(d) => AutoShutdown::After(d),
        })
    }
}

pub struct CreateNotebook {
    pub name: String,
    /// A catalog id, or (when allowed) any image reference.
    pub image: String,
    pub machine: String,
    pub auto_shutdown: AutoShutdown,
}

pub use crate::model::wire::{Notebook, NotebookTimes};

pub fn rfc3339(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// "6h", "1d", "never": the auto-shutdown choice closest to a number of seconds.
pub fn describe_auto_shutdown(secs: Option<i64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s % 604_800 == 0 => format!("{}w", s / 604_800),
        Some(s) if s % 86_400 == 0 => format!("{}d", s / 86_400),
        Some(s) if s % 3600 == 0 => format!("{}h", s / 3600),
        Some(s) if s % 60 == 0 => format!("{}m", s / 60),
        Some(s) => format!("{s}s"),
    }
}

fn validate_name(name: &str) -> Result<String, NotebookError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(NotebookError::Invalid("Give the notebook a name.".into()));
    }
    if name.chars().count() > 100 {
        return Err(NotebookError::Invalid(
            "The name is too long: use at most 100 characters.".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(NotebookError::Invalid(
            "The name cannot contain control characters.".into(),
        ));
    }
    Ok(name.to_string())
}

/// A plausible Docker image reference: no spaces or shell characters.
fn valid_image_reference(image: &str) -> bool {
    !image.is_empty()
        && image.len() <= 255
        && !image.starts_with(['-', '.', '/', ':'])
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'))
}

pub fn new_notebook_id() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rand_core::UnwrapErr(rand::rngs::SysRng);
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Notebooks {
    /// The public view of a row, with its GPUs and place in the queue.
    pub fn view_with(
        &self,
        row: NotebookRow,
        gpus: Vec<String>,
        queue_position: Option<usize>,
    ) -> Notebook {
        let mut nb = self.view(row);
        nb.gpus = gpus;
        nb.queue_position = queue_position.map(|p| p as i64);
        nb
    }

    /// The public view of a row (without GPU details).
    pub fn view(&self, row: NotebookRow) -> Notebook {
        let config = self.core.config();
        let image_name = row
            .image_id
            .as_deref()
            .and_then(|id| config.image(id))
            .map(|i| i.name.clone())
            .unwrap_or_else(|| row.image.clone());
        let machine_name = config
            .machine(&row.machine_id)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| row.machine_id.clone());
        Notebook {
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
            queue_position: None,
            gpus: Vec::new(),
            created_at: rfc3339(row.created_at),
            started_at: row
                .started_at
                .filter(|_| row.state == NotebookState::Running)
                .map(rfc3339),
            auto_shutdown: describe_auto_shutdown(row.auto_shutdown_secs),
            auto_shutdown_at: row.auto_shutdown_at.map(rfc3339),
            forked_from: row.forked_from.clone(),
            url: super::spec::base_url(&row.id, None),
            jupyter_url: None,
            open_url: format!("/notebooks/{}/open", row.id),
            transient: row.state.is_transient(),
            has_container: row.state.holds_gpus(),
            activity: (row.state == NotebookState::Running)
                .then(|| {
                    self.core
                        .activity_status(&row.id, &row.machine_id, row.idle_exempt)
                        .map(|s| super::activity::activity_view(&s, now()))
                })
                .flatten(),
            notice: row.notice.clone(),
            idle_exempt: row.idle_exempt,
            times: NotebookTimes {
                created: row.created_at,
                started: row
                    .started_at
                    .filter(|_| row.state == NotebookState::Running),
                auto_shutdown: row.auto_shutdown_at,
            },
        }
    }

    /// "alice’s “experiment”" for any notebook (used to say where a fork came from).
    pub async fn describe_notebook(&self, id: &str) -> Result<Option<String>, NotebookError> {
        let id = id.to_string();
        let row = self.core.db().call(move |c| q::by_id(c, &id)).await?;
        Ok(row.map(|r| format!("{}’s “{}”", r.owner, r.name)))
    }

    /// A notebook of `owner`; anyone else's is "not found".
    pub async fn notebook_row(&self, owner: &User, id: &str) -> Result<NotebookRow, NotebookError> {
        let id = id.to_string();
        let row = self.core.db().call(move |c| q::by_id(c, &id)).await?;
        match row {
            Some(r) if r.owner_id == owner.id && r.desired_state != DesiredState::Deleted => Ok(r),
            _ => Err(NotebookError::NotFound),
        }
    }

    pub async fn get_notebook(&self, owner: &User, id: &str) -> Result<Notebook, NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        let nid = row.id.clone();
        let (gpus, positions) = self
            .core
            .db()
            .call(move |c| Ok((gq::of_notebook(c, &nid)?, allocation::queue_positions(c)?)))
            .await?;
        let position = positions.get(&row.id).copied();
        Ok(self.view_with(row, gpus, position))
    }

    pub async fn list_notebooks(&self, owner: &User) -> Result<Vec<Notebook>, NotebookError> {
        let owner_id = owner.id;
        let (rows, mut gpus, positions) = self
            .core
            .db()
            .call(move |c| {
                Ok((
                    q::list_for_owner(c, owner_id)?,
                    gq::by_notebook(c)?,
                    allocation::queue_positions(c)?,
                ))
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let held = gpus.remove(&r.id).unwrap_or_default();
                let position = positions.get(&r.id).copied();
                self.view_with(r, held, position)
            })
            .collect())
    }

    /// With `usage.over_budget = "block"`: this month's start, from which budgets count.
    fn block_over_budget_since(&self) -> Option<i64> {
        (self.core.config().usage.over_budget == crate::config::OverBudget::Block)
            .then(|| crate::usage::month_start(now()))
    }

    /// The most GPUs `user` may hold or wait for at once.
    pub fn gpu_limit(&self, user: &User) -> i64 {
        user.max_gpus
            .unwrap_or(i64::from(self.core.config().gpu.max_gpus_per_user))
    }

    /// The most notebooks a member may have running, starting or queued at once.
    fn running_limit(&self) -> i64 {
        i64::from(self.core.config().notebooks.max_running_per_user)
    }

    fn auto_shutdown_secs(&self, choice: AutoShutdown) -> Option<i64> {
        match choice {
            AutoShutdown::Never => None,
            AutoShutdown::After(d) => Some(d.as_secs() as i64),
            AutoShutdown::Default => self
                .core
                .config()
                .notebooks
                .default_auto_shutdown
                .map(|d| d.as_secs() as i64),
        }
    }
}

/// Whether a notebook's image may still run under the catalog rules of the moment: a
/// catalog image that is still in the catalog, or a custom image while custom images are
/// allowed. Checked on start, restart and fork, not only on create.
pub fn check_image_allowed(
    config: &config::Config,
    row: &NotebookRow,
) -> Result<(), NotebookError> {
    if row
        .image_id
        .as_deref()
        .is_some_and(|id| config.image(id).is_some())
    {
        return Ok(());
    }
    let catalog_ids = config.image_ids();
    if let Some(id) = row.image_id.as_deref() {
        if !config.notebooks.allow_custom_images {
            return Err(NotebookError::Invalid(format!(
                "This notebook's image '{id}' was removed from the catalog, and custom images are \
                 not allowed here; create a new notebook with one of {catalog_ids}."
            )));
        }
    } else if !config.notebooks.allow_custom_images {
        return Err(NotebookError::Invalid(format!(
            "This notebook uses the custom image '{}', and custom images are no longer allowed \
             here; create a new notebook with one of {catalog_ids}.",
            row.image
        )));
    }
    if !valid_image_reference(&row.image) {
        return Err(NotebookError::Invalid(format!(
            "'{}' is not a Docker image reference (like registry/name:tag).",
            row.image
        )));
    }
    Ok(())
}

/// Marks a notebook to be stopped: out of the queue, or on its way down. The reconciler
/// does the rest.
fn request_stop(c: &rusqlite::Connection, id: &str, detail: &str) -> Result<(), DbError> {
    q::set_restart_requested(c, id, false)?;
    q::set_notice(c, id, None)?;
    q::transition(
        c,
        id,
        &[NotebookState::Queued],
        NotebookState::Stopped,
        "Removed from the queue",
        Some(DesiredState::Stopped),
    )?;
    q::transition(
        c,
        id,
        &[
            NotebookState::Running,
            NotebookState::Starting,
            NotebookState::Pulling,
        ],
        NotebookState::Stopping,
        detail,
        Some(DesiredState::Stopped),
    )?;
    q::set_desired(c, id, DesiredState::Stopped)?;
    Ok(())
}

impl Notebooks {
    /// Creates a notebook and starts it.
    pub async fn create_notebook(
        &self,
        owner: &User,
        req: CreateNotebook,
    ) -> Result<Notebook, NotebookError> {
        let config = self.core.config();
        let name = validate_name(&req.name)?;
        let image_ref = req.image.trim();
        let catalog_ids = config.image_ids();
        let (image_id, image, launcher, command) = match config.image(image_ref) {
            Some(spec) => (Some(spec.id.clone()), spec.image.clone(), spec.launcher, spec.command.clone()),
            None if image_ref.is_empty() => {
                return Err(NotebookError::Invalid(format!("Choose an image: one of {catalog_ids}.")))
            }
            None if !config.notebooks.allow_custom_images => {
                return Err(NotebookError::Invalid(format!(
                    "'{image_ref}' is not in this Notebox's image catalog, and custom images are not \
                     allowed here; choose one of {catalog_ids}."
                )))
            }
            None if !valid_image_reference(image_ref) => {
                return Err(NotebookError::Invalid(format!(
                    "'{image_ref}' is not a Docker image reference (like registry/name:tag)."
                )))
            }
            None => (None, image_ref.to_string(), Launcher::DockerStacks, Vec::new()),
        };
        let machine = config.machine(req.machine.trim()).ok_or_else(|| {
            let ids = config
                .machines
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            NotebookError::Invalid(format!(
                "'{}' is not a machine type here; choose one of {ids}.",
                req.machine.trim()
            ))
        })?;
        let auto_shutdown_secs = self.auto_shutdown_secs(req.auto_shutdown);
        let id = new_notebook_id();
        let token = secrets::random_secret(32);
        let (cpus, memory_mib, gpus, machine_id) = (
            machine.cpus,
            machine.memory_mib as i64,
            i64::from(machine.gpus),
            machine.id.clone(),
        );
        let owner_id = owner.id;
        let all_gpus = self.core.gpus().uuids();
        let block_over_budget_since = self.block_over_budget_since();
        let placement = (self.gpu_limit(owner), self.core.config().gpu.queue);
        let running_limit = self.running_limit();
        let (row, placed) = self
            .core
            .db()
            .call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                q::insert(
                    &tx,
                    &NewNotebook {
                        id: &id,
                        owner_id,
                        name: &name,
                        image_id: image_id.as_deref(),
                        image: &image,
                        launcher,
                        command: &command,
                        machine_id: &machine_id,
                        cpus,
                        memory_mib,
                        gpu_count: gpus,
                        jupyter_token: &token,
                        auto_shutdown_secs,
                        forked_from: None,
                        desired_state: DesiredState::Running,
                        state: NotebookState::Stopped,
                        state_detail: "Waiting to start",
                    },
                )?;
                let request = PlacementRequest {
                    notebook_id: &id,
                    owner_id,
                    gpu_count: gpus,
                    user_limit: placement.0,
                    queue: placement.1,
                    gpus: &all_gpus,
                    block_over_budget_since,
                    running_limit: Some(running_limit),
                };
                let placed = allocation::place(&tx, &request)?;
                if placed.is_err() {
                    return Ok((None, placed)); // dropped: rolled back, nothing created
                }
                let row = q::by_id(&tx, &id)?;
                tx.commit()?;
                Ok((row, placed))
            })
            .await?;
        let placement = placed?;
        let row = row.ok_or(NotebookError::NotFound)?;
        if matches!(placement, Placement::Queued { .. }) {
            self.core.wake_activity(); // an idle notebook may make way
        }
        tracing::info!(notebook = %row.id, owner = %owner.username, image = %row.image, ?placement, "notebook created");
        // Started here and now; a pass (a listing of every notebook and container) would
        // only compete with it for the CPU while Jupyter starts.
        let started =
            matches!(placement, Placement::Starting(_)) && self.core.start_now(row.clone(), true);
        if !started {
            self.core.wake();
        }
        let (gpus, position) = match placement {
            Placement::Starting(g) => (g, None),
            Placement::Queued { position } => (Vec::new(), Some(position)),
        };
        Ok(self.view_with(row, gpus, position))
    }

    pub async fn start_notebook(&self, owner: &User, id: &str) -> Result<Notebook, NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        check_image_allowed(self.core.config(), &row)?;
        if !row.state.can_start() {
            return Err(NotebookError::Conflict(format!(
                "The notebook is {}; only a stopped or failed notebook can be started.",
                row.state
            )));
        }
        if let Placement::Queued { .. } = self.place_stopped(owner, &row).await? {
            self.core.wake_activity(); // an idle notebook may make way
        }
        self.core.wake();
        self.get_notebook(owner, &row.id).await
    }

    /// Moves a stopped or failed notebook to starting (taking its GPUs) or to the queue.
    async fn place_stopped(
        &self,
        owner: &User,
        row: &NotebookRow,
    ) -> Result<Placement, NotebookError> {
        let all_gpus = self.core.gpus().uuids();
        let block_over_budget_since = self.block_over_budget_since();
        let (limit, queue) = (self.gpu_limit(owner), self.core.config().gpu.queue);
        let running_limit = self.running_limit();
        let (id, owner_id, gpu_count) = (row.id.clone(), owner.id, row.gpu_count);
        let placed = self
            .core
            .db()
            .call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let still_stopped = q::by_id(&tx, &id)?.is_some_and(|r| r.state.can_start());
                if !still_stopped {
                    return Ok(None);
                }
                q::set_restart_requested(&tx, &id, false)?;
                q::set_notice(&tx, &id, None)?;
                let request = PlacementRequest {
                    notebook_id: &id,
                    owner_id,
                    gpu_count,
                    user_limit: limit,
                    queue,
                    gpus: &all_gpus,
                    block_over_budget_since,
                    running_limit: Some(running_limit),
                };
                let placed = allocation::place(&tx, &request)?;
                if placed.is_ok() {
                    tx.commit()?;
                }
                Ok(Some(placed))
            })
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
        self.core
            .db()
            .call(move |c| {
                let tx = c.transaction()?;
                request_stop(&tx, &id, "Stopping")?;
                tx.commit()?;
                Ok(())
            })
            .await?;
        self.core.wake();
        self.get_notebook(owner, &row.id).await
    }

    /// Stops every notebook of a member (their account was disabled), in one transaction.
    pub async fn stop_all_notebooks_of(&self, owner_id: i64) -> Result<usize, NotebookError> {
        let stopped = self
            .core
            .db()
            .call(move |c| {
                let tx = c.transaction()?;
                let ids = q::ids_of_owner(&tx, owner_id)?;
                for id in &ids {
                    request_stop(&tx, id, "Stopping: the account was disabled")?;
                }
                tx.commit()?;
                Ok(ids.len())
            })
            .await?;
        self.core.wake();
        Ok(stopped)
    }

    /// Stops and starts again (a fresh container; files stay).
    pub async fn restart_notebook(
        &self,
        owner: &User,
        id: &str,
    ) -> Result<Notebook, NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        check_image_allowed(self.core.config(), &row)?;
        let id = row.id.clone();
        let moved = self
            .core
            .db()
            .call(move |c| {
                if q::transition(
                    c,
                    &id,
                    &[
                        NotebookState::Running,
                        NotebookState::Starting,
                        NotebookState::Pulling,
                    ],
                    NotebookState::Stopping,
                    "Restarting",
                    Some(DesiredState::Running),
                )? {
                    q::set_restart_requested(c, &id, true)?;
                    return Ok(true);
                }
                Ok(false)
            })
            .await?;
        if !moved && row.state.can_start() {
            self.place_stopped(owner, &row).await?;
        } else if !moved {
            return Err(NotebookError::Conflict(format!(
                "The notebook is {}; wait until it has settled, then restart it.",
                row.state
            )));
        }
        self.core.wake();
        self.get_notebook(owner, &row.id).await
    }

    /// Deletes the notebook: its container and its /notebooks files. /storage stays.
    pub async fn delete_notebook(&self, owner: &User, id: &str) -> Result<(), NotebookError> {
        let row = self.notebook_row(owner, id).await?;
        let id = row.id.clone();
        self.core
            .db()
            .call(move |c| {
                q::set_desired(c, &id, DesiredState::Deleted)?;
                q::set_detail(c, &id, row.state, "Deleting")?;
                Ok(())
            })
            .await?;
        tracing::info!(notebook = %row.id, owner = %owner.username, "notebook deleted");
        self.core.wake();
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
            Some(c) => self.auto_shutdown_secs(c),
            None => row.auto_shutdown_secs,
        };
        let id = row.id.clone();
        self.core
            .db()
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
        self.core
            .activity()
            .member_acted(&row.id, crate::activity::MemberAction::KeepAlive, now());
        tracing::info!(notebook = %row.id, owner = %owner.username, "kept running");
        self.get_notebook(owner, &row.id).await
    }

    /// Exempts any member's notebook from idle reclaim (admins), or ends the exemption.
    pub async fn set_idle_exempt(&self, id: &str, exempt: bool) -> Result<(), NotebookError> {
        let nid = id.to_string();
        let found = self
            .core
            .db()
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
            .core
            .db()
            .call(|c| Ok((q::list_active(c)?, gq::by_notebook(c)?)))
            .await?;
        Ok(rows
            .into_iter()
            .filter(|r| {
                r.state == NotebookState::Running && r.desired_state != DesiredState::Deleted
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
        // Never had a container (or it was removed): nothing to ask Docker for.
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
        let docker = self.core.docker().await?;
        let container = docker
            .list_ours()
            .await?
            .into_iter()
            .find(|c| c.notebook_id == row.id);
        match container {
            Some(c) => match docker.logs_tail(&c.id, tail, logs::MAX_BYTES).await {
                Ok(logs) => Ok(Some(logs)),
                // Removed (or being removed) between the listing and the read: a stop
                // racing the page's log poll. No container, no logs.
                Err(DockerError::NotFound(_) | DockerError::Conflict(_)) => Ok(None),
                Err(e) => Err(e.into()),
            },
            None => Ok(None),
        }
    }

    /// Seconds until auto-shutdown, for countdowns.
    pub fn seconds_left(nb: &Notebook) -> Option<i64> {
        nb.times.auto_shutdown.map(|t| (t - now()).max(0))
    }
}
