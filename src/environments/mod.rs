//! Environments: named, versioned images Notebox builds for members (issue 24). A member
//! (or an admin, for everyone) gives a source — repo2docker's files on top of a catalog
//! image, a Dockerfile (as the admin allows), or a Git repository holding either — and
//! each build of it is a version. Builds queue (`environments.concurrent_builds`), run on
//! the engine with a memory, CPU and time limit and no host mounts, stream their log,
//! can be cancelled, and are cached by the hash of their inputs. A running notebook can
//! be saved as a version too. Old versions go by `keep_versions` and `max_disk`, never
//! one a notebook uses.
//!
//! Knows nothing of HTTP: `web` turns `EnvironmentError` into statuses.

mod builder;
mod retention;
mod save;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::auth::User;
use crate::config::{Config, DockerfilePolicy};
use crate::containers::{Engine, EngineError};
use crate::db::environments::{self as q, BuildRow, EnvironmentRow, NewBuild, NewEnvironment};
use crate::db::{Db, DbError};
use crate::git::{GitCredential, GitError, GitRef, RepoUrl};
use crate::model::{BuildState, EnvironmentKind};
use crate::vault::Vault;

pub use retention::DiskReport;
use source::StoredSource;

#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    /// Bad input: the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// Not allowed for this member (a Dockerfile under `dockerfile = "admins"`, ...).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The name is taken, or a notebook uses the environment.
    #[error("{0}")]
    Conflict(String),
    /// The Git server or the engine failed (not the member's input).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<GitError> for EnvironmentError {
    fn from(e: GitError) -> EnvironmentError {
        if e.is_member_error() {
            EnvironmentError::Invalid(e.to_string())
        } else {
            EnvironmentError::Unavailable(e.to_string())
        }
    }
}

impl From<EngineError> for EnvironmentError {
    fn from(e: EngineError) -> EnvironmentError {
        EnvironmentError::Unavailable(format!("Docker: {e}"))
    }
}

/// What a member sends to make an environment (the API's body, the page's form).
#[derive(Debug, Clone, Deserialize)]
pub struct CreateEnvironment {
    pub name: String,
    #[serde(default)]
    pub shared: Option<bool>,
    pub source: SourceInput,
}

/// A source as a member sends it (a repository's credential only here).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceInput {
    Repo {
        url: String,
        #[serde(default)]
        r#ref: Option<String>,
        #[serde(default)]
        subdir: Option<String>,
        #[serde(default)]
        base: Option<String>,
        #[serde(default)]
        credential: Option<CredentialInput>,
    },
    Files {
        #[serde(default)]
        base: Option<String>,
        files: BTreeMap<String, String>,
    },
    Dockerfile {
        dockerfile: String,
        #[serde(default)]
        files: BTreeMap<String, String>,
        #[serde(default)]
        base: Option<String>,
    },
}

#[derive(Clone, Deserialize)]
pub struct CredentialInput {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for CredentialInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialInput")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A source that passed its checks: its kind, its stored form, the ref its first build
/// asks for, and its credential sealed.
struct CheckedSource {
    kind: EnvironmentKind,
    stored: StoredSource,
    requested_ref: Option<String>,
    credential_sealed: Option<Vec<u8>>,
}

impl CheckedSource {
    /// A source built as it is sent: no ref, no credential.
    fn built(kind: EnvironmentKind, stored: StoredSource) -> CheckedSource {
        CheckedSource {
            kind,
            stored,
            requested_ref: None,
            credential_sealed: None,
        }
    }
}
/// An environment as its viewers see it.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub shared: bool,
    pub source: serde_json::Value,
    pub versions: Vec<BuildView>,
    /// Whether the viewer may build, cancel and delete it.
    #[serde(skip)]
    pub mine: bool,
}

impl EnvironmentView {
    /// The newest version notebooks can start from.
    pub fn newest_ready(&self) -> Option<&BuildView> {
        self.versions
            .iter()
            .rev()
            .find(|b| b.state == BuildState::Ready)
    }

    /// The newest version, whatever its state.
    pub fn latest(&self) -> Option<&BuildView> {
        self.versions.last()
    }
}

/// One version.
#[derive(Debug, Clone, Serialize)]
pub struct BuildView {
    pub version: i64,
    pub state: BuildState,
    pub state_detail: String,
    pub step: String,
    pub image: Option<String>,
    pub commit: Option<String>,
    pub size_bytes: Option<i64>,
    pub cache_hit: bool,
    pub failed_step: Option<String>,
    pub from_notebook: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl BuildView {
    fn from_row(b: &BuildRow) -> BuildView {
        let time = |t: i64| crate::clock::rfc3339(t);
        BuildView {
            version: b.version,
            state: b.state,
            state_detail: b.state_detail.clone(),
            step: b.step.clone(),
            image: b.image.clone(),
            commit: b.commit.clone(),
            size_bytes: b.size_bytes,
            cache_hit: false,
            failed_step: b.failed_step.clone(),
            from_notebook: b.from_notebook.clone(),
            created_at: time(b.created_at),
            started_at: b.started_at.map(time),
            finished_at: b.finished_at.map(time),
        }
    }
}

/// What a notebook starting from an environment runs.
#[derive(Debug, Clone)]
pub struct Runnable {
    pub environment_id: String,
    pub version: i64,
    pub image: String,
    pub launcher: crate::model::Launcher,
    pub command: Vec<String>,
}

/// What the environments service is built from (see `lib::run`).
pub struct EnvironmentsParts {
    pub db: Db,
    pub config: Arc<Config>,
    pub engine: Engine,
    pub vault: Vault,
}

/// Members' environments. Cheap to clone.
#[derive(Clone)]
pub struct Environments {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    config: Arc<Config>,
    engine: Engine,
    vault: Vault,
    /// The builder looks for queued builds when woken.
    wake: Notify,
    /// Running builds' cancel switches, by (environment, version).
    running: Mutex<HashMap<(String, i64), watch::Sender<bool>>>,
}

/// Builds (and saves) one member may have queued or running at once: one member's burst
/// cannot hold the queue for everyone else for long.
pub const MAX_OPEN_BUILDS: i64 = 10;
/// Environments one member may have.
pub const MAX_ENVIRONMENTS: i64 = 50;

/// Whether an image is one Notebox built (a version may also run a catalog image as it
/// is, which is never removed with it).
pub fn is_ours(image: &str) -> bool {
    image.starts_with("notebox-env/")
}

/// The ids of environments: 12 lower-case letters and digits, like notebooks'.
fn new_id() -> String {
    crate::model::new_id()
}

impl Environments {
    pub fn new(parts: EnvironmentsParts) -> Environments {
        Environments {
            inner: Arc::new(Inner {
                db: parts.db,
                config: parts.config,
                engine: parts.engine,
                vault: parts.vault,
                wake: Notify::new(),
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Where build logs are kept.
    pub fn logs_dir(&self) -> PathBuf {
        self.inner.config.data_dir.join("environments").join("logs")
    }

    pub fn log_path(&self, environment_id: &str, version: i64) -> PathBuf {
        self.logs_dir()
            .join(format!("{environment_id}-{version}.log"))
    }

    /// The catalog image `base` names (default: the first), as (id, image reference).
    fn base_image(&self, base: Option<&str>) -> Result<crate::config::ImageSpec, EnvironmentError> {
        let config = self.config();
        match base.map(str::trim).filter(|b| !b.is_empty()) {
            None => config.images.first().cloned().ok_or_else(|| {
                EnvironmentError::Invalid("This Notebox has no catalog image to build on.".into())
            }),
            Some(id) => config.image(id).cloned().ok_or_else(|| {
                EnvironmentError::Invalid(format!(
                    "'{id}' is not a catalog image here; build on one of {}.",
                    config.image_ids()
                ))
            }),
        }
    }

    fn check_dockerfile_allowed(&self, user: &User) -> Result<(), EnvironmentError> {
        match self.config().environments.dockerfile {
            DockerfilePolicy::Members => Ok(()),
            DockerfilePolicy::Admins if user.is_admin => Ok(()),
            DockerfilePolicy::Admins => Err(EnvironmentError::Forbidden(
                "Only admins may build from a Dockerfile here (a Dockerfile's RUN steps run with the \
                 engine's privileges). Use requirements.txt, environment.yml, apt.txt and postBuild \
                 instead, or ask an admin."
                    .into(),
            )),
            DockerfilePolicy::Off => Err(EnvironmentError::Forbidden(
                "Building from a Dockerfile is turned off here. Use requirements.txt, environment.yml, \
                 apt.txt and postBuild instead."
                    .into(),
            )),
        }
    }

    /// Makes an environment and queues its first build.
    pub async fn create(
        &self,
        user: &User,
        req: CreateEnvironment,
    ) -> Result<EnvironmentView, EnvironmentError> {
        let name = source::check_name(&req.name)?;
        // An admin's environment is the lab's unless they say otherwise: it appears in
        // everyone's new-notebook form.
        let shared = req.shared.unwrap_or(user.is_admin);
        let uid = user.id;
        let count = self.inner.db.call(move |c| q::count_of(c, uid)).await?;
        if count >= MAX_ENVIRONMENTS {
            return Err(EnvironmentError::Conflict(format!(
                "You have {count} environments, the most one member may have; delete one you no longer use."
            )));
        }
        self.check_build_quota(user).await?;
        let CheckedSource {
            kind,
            stored,
            requested_ref,
            credential_sealed,
        } = self.checked_source(user, req.source)?;
        let base = self.base_image(Some(stored.base()))?;
        let source_json =
            serde_json::to_string(&stored).map_err(|e| EnvironmentError::Invalid(e.to_string()))?;
        let id = new_id();
        let owner_id = user.id;
        let (eid, ename) = (id.clone(), name.clone());
        let created_by = Some(user.id);
        let inserted = self
            .inner
            .db
            .call(move |c| {
                let inserted = q::insert(
                    c,
                    &NewEnvironment {
                        id: &eid,
                        owner_id,
                        name: &ename,
                        shared,
                        kind,
                        source: &source_json,
                        credential_sealed: credential_sealed.as_deref(),
                        launcher: base.launcher,
                        command: &base.command,
                    },
                )?;
                if inserted {
                    q::add_build(
                        c,
                        &NewBuild {
                            environment_id: &eid,
                            state: BuildState::Queued,
                            state_detail: "Waiting for its turn to build",
                            requested_ref: requested_ref.as_deref(),
                            from_notebook: None,
                            created_by,
                        },
                    )?;
                }
                Ok(inserted)
            })
            .await?;
        if !inserted {
            return Err(EnvironmentError::Conflict(format!(
                "You have an environment named '{name}' already; choose another name, or build a new version of it."
            )));
        }
        tracing::info!(environment = %id, owner = %user.username, kind = %kind, "environment created");
        self.inner.wake.notify_one();
        self.get(user, &id).await
    }

    /// The source as it will be stored, once its checks for its kind pass.
    fn checked_source(
        &self,
        user: &User,
        input: SourceInput,
    ) -> Result<CheckedSource, EnvironmentError> {
        match input {
            SourceInput::Repo {
                url,
                r#ref,
                subdir,
                base,
                credential,
            } => self.checked_repo(&url, r#ref, subdir, base, credential),
            SourceInput::Files { base, files } => self.checked_files(base, files),
            SourceInput::Dockerfile {
                dockerfile,
                files,
                base,
            } => self.checked_dockerfile(user, dockerfile, files, base),
        }
    }

    /// A repository: its URL, ref and folder well-formed; a credential given is sealed
    /// (an empty one is none).
    fn checked_repo(
        &self,
        url: &str,
        r#ref: Option<String>,
        subdir: Option<String>,
        base: Option<String>,
        credential: Option<CredentialInput>,
    ) -> Result<CheckedSource, EnvironmentError> {
        let url = RepoUrl::parse(url)?;
        let reference = match r#ref.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) => Some(GitRef::parse(r)?.as_str().to_string()),
            None => None,
        };
        let subdir = match subdir.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => Some(source::check_relative_path("subdir", s)?),
            None => None,
        }
        .filter(|s| !s.is_empty());
        let base = self.base_image(base.as_deref())?;
        let mut credential_sealed = None;
        if let Some(c) = credential.filter(|c| !c.username.is_empty() || !c.password.is_empty()) {
            let checked = GitCredential::new(&c.username, &c.password)?;
            let _ = checked;
            let both = serde_json::json!({"username": c.username, "password": c.password});
            credential_sealed = Some(self.inner.vault.seal_str(&both.to_string()));
        }
        Ok(CheckedSource {
            kind: EnvironmentKind::Repo,
            stored: StoredSource::Repo {
                url: url.as_str().to_string(),
                r#ref: reference.clone(),
                subdir,
                base: base.id,
            },
            requested_ref: reference,
            credential_sealed,
        })
    }

    /// Sent files: at least one, and an apt.txt that reads.
    fn checked_files(
        &self,
        base: Option<String>,
        files: BTreeMap<String, String>,
    ) -> Result<CheckedSource, EnvironmentError> {
        source::check_files(&files)?;
        if files.is_empty() {
            return Err(EnvironmentError::Invalid(
                "Give at least one file: requirements.txt, environment.yml, apt.txt, postBuild or start.".into(),
            ));
        }
        if let Some(apt) = files.get("apt.txt").or_else(|| files.get("binder/apt.txt")) {
            source::apt_packages(apt).map_err(EnvironmentError::Invalid)?;
        }
        let base = self.base_image(base.as_deref())?;
        Ok(CheckedSource::built(
            EnvironmentKind::Files,
            StoredSource::Files {
                base: base.id,
                files,
            },
        ))
    }

    /// A Dockerfile: only where the policy lets `user` build one, and only one with a
    /// FROM line and within the size limit.
    fn checked_dockerfile(
        &self,
        user: &User,
        dockerfile: String,
        files: BTreeMap<String, String>,
        base: Option<String>,
    ) -> Result<CheckedSource, EnvironmentError> {
        self.check_dockerfile_allowed(user)?;
        if dockerfile.trim().is_empty() {
            return Err(EnvironmentError::Invalid("The Dockerfile is empty.".into()));
        }
        if dockerfile.len() > source::MAX_FILES_BYTES {
            return Err(EnvironmentError::Invalid(format!(
                "The Dockerfile is {} bytes; at most {} are taken.",
                dockerfile.len(),
                source::MAX_FILES_BYTES
            )));
        }
        if !dockerfile.lines().any(|l| {
            l.trim_start()
                .get(..5)
                .is_some_and(|w| w.eq_ignore_ascii_case("from "))
        }) {
            return Err(EnvironmentError::Invalid(
                "The Dockerfile has no FROM line: start it with FROM <image>.".into(),
            ));
        }
        source::check_files(&files)?;
        let base = self.base_image(base.as_deref())?;
        Ok(CheckedSource::built(
            EnvironmentKind::Dockerfile,
            StoredSource::Dockerfile {
                dockerfile,
                files,
                base: base.id,
            },
        ))
    }

    /// The environment, if `user` may see it (theirs, or shared); else "not found".
    async fn visible_row(&self, user: &User, id: &str) -> Result<EnvironmentRow, EnvironmentError> {
        let eid = id.to_string();
        let row = self.inner.db.call(move |c| q::by_id(c, &eid)).await?;
        match row {
            Some(r) if r.owner_id == user.id || r.shared => Ok(r),
            _ => Err(EnvironmentError::NotFound(format!(
                "No environment '{}' here (or it is not shared with you).",
                id.chars().take(64).collect::<String>()
            ))),
        }
    }

    /// The environment, if `user` may change it (theirs; an admin any).
    async fn own_row(&self, user: &User, id: &str) -> Result<EnvironmentRow, EnvironmentError> {
        let row = self.visible_row(user, id).await?;
        if row.owner_id == user.id || user.is_admin {
            Ok(row)
        } else {
            Err(EnvironmentError::Forbidden(format!(
                "The environment '{}' is {}'s: only they (or an admin) can build, cancel or delete it.",
                row.name, row.owner
            )))
        }
    }

    fn view(&self, user: &User, row: &EnvironmentRow, builds: &[BuildRow]) -> EnvironmentView {
        let mut source = serde_json::from_str::<serde_json::Value>(&row.source)
            .unwrap_or(serde_json::Value::Null);
        if row.credential_sealed.is_some() {
            source["credential"] = serde_json::json!({"configured": true});
        }
        EnvironmentView {
            id: row.id.clone(),
            name: row.name.clone(),
            owner: row.owner.clone(),
            shared: row.shared,
            source,
            versions: builds.iter().map(BuildView::from_row).collect(),
            mine: row.owner_id == user.id || user.is_admin,
        }
    }

    pub async fn get(&self, user: &User, id: &str) -> Result<EnvironmentView, EnvironmentError> {
        let row = self.visible_row(user, id).await?;
        let eid = row.id.clone();
        let builds = self.inner.db.call(move |c| q::builds_of(c, &eid)).await?;
        Ok(self.view(user, &row, &builds))
    }

    /// A member's own environments and those shared with them.
    pub async fn list(&self, user: &User) -> Result<Vec<EnvironmentView>, EnvironmentError> {
        let uid = user.id;
        let (rows, mut builds) = self
            .inner
            .db
            .call(move |c| Ok((q::visible_to(c, uid)?, q::all_builds(c)?)))
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let b = builds.remove(&r.id).unwrap_or_default();
                self.view(user, r, &b)
            })
            .collect())
    }

    /// Deletes an environment and its images; refused while a notebook uses a version.
    pub async fn delete(&self, user: &User, id: &str) -> Result<(), EnvironmentError> {
        let row = self.own_row(user, id).await?;
        let eid = row.id.clone();
        let (in_use, builds) = self
            .inner
            .db
            .call(move |c| Ok((q::versions_in_use(c)?.remove(&eid), q::builds_of(c, &eid)?)))
            .await?;
        if let Some(versions) = in_use {
            return Err(EnvironmentError::Conflict(format!(
                "Notebooks run version(s) {} of '{}': delete those notebooks first.",
                versions
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                row.name
            )));
        }
        let builds = self.end_open_builds(&row, builds).await?;
        for image in builds
            .iter()
            .filter_map(|b| b.image.as_deref())
            .filter(|i| is_ours(i))
        {
            if let Err(e) = self.inner.engine.remove_image(image).await {
                tracing::warn!(environment = %row.id, %image, error = %e, "could not remove an environment's image");
            }
        }
        let eid = row.id.clone();
        self.inner.db.call(move |c| q::delete(c, &eid)).await?;
        for b in &builds {
            let _ = std::fs::remove_file(self.log_path(&row.id, b.version));
        }
        tracing::info!(environment = %row.id, by = %user.username, "environment deleted");
        Ok(())
    }

    pub async fn build(
        &self,
        user: &User,
        id: &str,
        version: i64,
    ) -> Result<BuildView, EnvironmentError> {
        let row = self.visible_row(user, id).await?;
        let build = self.version_of(&row, version).await?;
        Ok(BuildView::from_row(&build))
    }

    /// One version of an environment the caller may see; "not found" names it.
    async fn version_of(
        &self,
        row: &EnvironmentRow,
        version: i64,
    ) -> Result<BuildRow, EnvironmentError> {
        let eid = row.id.clone();
        self.inner
            .db
            .call(move |c| q::build(c, &eid, version))
            .await?
            .ok_or_else(|| {
                EnvironmentError::NotFound(format!("'{}' has no version {version}.", row.name))
            })
    }

    /// Builds a new version (at `reference`, for a repository). Same inputs as a ready
    /// version: that version, with `cache_hit`, and nothing is built.
    pub async fn request_build(
        &self,
        user: &User,
        id: &str,
        reference: Option<&str>,
    ) -> Result<BuildView, EnvironmentError> {
        let row = self.own_row(user, id).await?;
        if row.kind == EnvironmentKind::Saved {
            return Err(EnvironmentError::Invalid(format!(
                "'{}' holds saved notebooks: save a running notebook to add a version.",
                row.name
            )));
        }
        if row.kind == EnvironmentKind::Dockerfile {
            self.check_dockerfile_allowed(user)?;
        }
        let stored: StoredSource = serde_json::from_str(&row.source).map_err(|e| {
            EnvironmentError::Invalid(format!("the stored source does not read: {e}"))
        })?;
        let reference = match reference.map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) if row.kind == EnvironmentKind::Repo => {
                Some(GitRef::parse(r)?.as_str().to_string())
            }
            Some(_) => {
                return Err(EnvironmentError::Invalid(
                    "Only an environment from a Git repository takes a ref.".into(),
                ))
            }
            None => match &stored {
                StoredSource::Repo { r#ref, .. } => r#ref.clone(),
                _ => None,
            },
        };
        if let Some(hit) = self.cached(&row, &stored, reference.as_deref()).await? {
            let mut view = BuildView::from_row(&hit);
            view.cache_hit = true;
            return Ok(view);
        }
        self.check_build_quota(user).await?;
        let (eid, created_by) = (row.id.clone(), Some(user.id));
        let build = self
            .inner
            .db
            .call(move |c| {
                q::add_build(
                    c,
                    &NewBuild {
                        environment_id: &eid,
                        state: BuildState::Queued,
                        state_detail: "Waiting for its turn to build",
                        requested_ref: reference.as_deref(),
                        from_notebook: None,
                        created_by,
                    },
                )
            })
            .await?;
        self.inner.wake.notify_one();
        Ok(BuildView::from_row(&build))
    }

    /// A ready version built from the same inputs, found without building (a repository's
    /// commit is asked of its server, not fetched).
    async fn cached(
        &self,
        row: &EnvironmentRow,
        stored: &StoredSource,
        reference: Option<&str>,
    ) -> Result<Option<BuildRow>, EnvironmentError> {
        let Some(hash) = self.quick_hash(row, stored, reference).await? else {
            return Ok(None);
        };
        let eid = row.id.clone();
        let hit = self
            .inner
            .db
            .call(move |c| q::ready_with_hash(c, &eid, &hash))
            .await?;
        // Only if its image is still there.
        match hit {
            Some(b) => match b.image.as_deref() {
                Some(image) if self.inner.engine.image_exists(image).await.unwrap_or(false) => {
                    Ok(Some(b))
                }
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// The inputs' hash, when it can be known without building.
    async fn quick_hash(
        &self,
        row: &EnvironmentRow,
        stored: &StoredSource,
        reference: Option<&str>,
    ) -> Result<Option<String>, EnvironmentError> {
        let base = match self.config().image(stored.base()) {
            Some(b) => b.image.clone(),
            None => return Ok(None),
        };
        let Some(base_id) = self.inner.engine.image_details(&base).await?.map(|d| d.id) else {
            return Ok(None);
        };
        let commit = match stored {
            StoredSource::Repo { url, .. } => {
                let url = RepoUrl::parse(url)?;
                let reference = reference.map(GitRef::parse).transpose()?;
                let credential = self.credential_of(row)?;
                let work = self.work_dir()?;
                let resolved =
                    crate::git::resolve(&url, reference.as_ref(), credential.as_ref(), &work)
                        .await?;
                Some(resolved.commit)
            }
            _ => None,
        };
        Ok(Some(builder::inputs_hash(
            self.config(),
            &row.id,
            stored,
            &base_id,
            commit.as_deref(),
        )))
    }

    fn credential_of(
        &self,
        row: &EnvironmentRow,
    ) -> Result<Option<GitCredential>, EnvironmentError> {
        let Some(sealed) = row.credential_sealed.as_deref() else {
            return Ok(None);
        };
        let text = self.inner.vault.unseal_str(sealed).map_err(|_| {
            EnvironmentError::Invalid(
                "The repository's credential cannot be read (the vault's key changed): make the environment again with it.".into(),
            )
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            EnvironmentError::Invalid("The stored credential does not read.".into())
        })?;
        let user = v["username"].as_str().unwrap_or_default();
        let pass = v["password"].as_str().unwrap_or_default();
        Ok(Some(GitCredential::new(user, pass)?))
    }

    /// A scratch folder for repository fetches (in the data dir: same disk as the logs).
    fn work_dir(&self) -> Result<PathBuf, EnvironmentError> {
        let dir = self.config().data_dir.join("environments").join("work");
        std::fs::create_dir_all(&dir).map_err(|e| {
            EnvironmentError::Unavailable(format!("cannot make {}: {e}", dir.display()))
        })?;
        Ok(dir)
    }

    /// Cancels a queued or running build; it is cancelled within a moment (the engine's
    /// step is stopped, what it left removed).
    pub async fn cancel(
        &self,
        user: &User,
        id: &str,
        version: i64,
    ) -> Result<BuildView, EnvironmentError> {
        let row = self.own_row(user, id).await?;
        let build = self.version_of(&row, version).await?;
        if !build.state.is_open() {
            return Err(EnvironmentError::Conflict(format!(
                "Version {version} is {} already; only a queued or running build can be cancelled.",
                build.state
            )));
        }
        if build.from_notebook.is_some() {
            return Err(EnvironmentError::Conflict(
                "A save of a running notebook cannot be cancelled; it ends within a minute or two."
                    .into(),
            ));
        }
        self.stop_build(&row.id, version).await?;
        // Wait (a little) for the builder to have stopped it and cleared up.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let view = self.build(user, id, version).await?;
            if !view.state.is_open() || tokio::time::Instant::now() > deadline {
                tracing::info!(environment = %row.id, version, by = %user.username, "build cancelled");
                return Ok(view);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Cancels an environment's queued and running builds and waits for them to end (so
    /// that no build finishes into a deleted environment); a save under way is waited for
    /// by its member. The versions as they are then.
    async fn end_open_builds(
        &self,
        row: &EnvironmentRow,
        builds: Vec<BuildRow>,
    ) -> Result<Vec<BuildRow>, EnvironmentError> {
        let open: Vec<&BuildRow> = builds.iter().filter(|b| b.state.is_open()).collect();
        if open.is_empty() {
            return Ok(builds);
        }
        if let Some(save) = open.iter().find(|b| b.from_notebook.is_some()) {
            return Err(EnvironmentError::Conflict(format!(
                "Version {} of '{}' is a notebook being saved; delete it once the save has ended.",
                save.version, row.name
            )));
        }
        for b in &open {
            self.stop_build(&row.id, b.version).await?;
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let eid = row.id.clone();
            let now = self.inner.db.call(move |c| q::builds_of(c, &eid)).await?;
            if !now.iter().any(|b| b.state.is_open()) {
                return Ok(now);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EnvironmentError::Conflict(format!(
                    "A build of '{}' is still stopping; try again in a moment.",
                    row.name
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Ends a queued build here, or flips a running one's cancel switch (a build the
    /// builder is just taking gets its switch a moment later: asked again meanwhile).
    async fn stop_build(&self, id: &str, version: i64) -> Result<(), EnvironmentError> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            if self.cancel_running(id, version) {
                return Ok(());
            }
            let eid = id.to_string();
            let ended = self
                .inner
                .db
                .call(move |c| q::cancel_queued(c, &eid, version))
                .await?;
            if ended || tokio::time::Instant::now() > deadline {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Refuses a new build (or save) while the member has `MAX_OPEN_BUILDS` waiting or
    /// running.
    pub(crate) async fn check_build_quota(&self, user: &User) -> Result<(), EnvironmentError> {
        let uid = user.id;
        let open = self
            .inner
            .db
            .call(move |c| q::open_builds_of(c, uid))
            .await?;
        if open >= MAX_OPEN_BUILDS {
            return Err(EnvironmentError::Conflict(format!(
                "You have {open} builds waiting or running; at most {MAX_OPEN_BUILDS} at once. \
                 Wait for one to end (or cancel one), then build again."
            )));
        }
        Ok(())
    }

    /// Flips a running build's cancel switch; false if it is not running here.
    fn cancel_running(&self, id: &str, version: i64) -> bool {
        let running = self
            .inner
            .running
            .lock()
            .map(|r| r.get(&(id.to_string(), version)).cloned());
        match running {
            Ok(Some(switch)) => {
                let _ = switch.send(true);
                true
            }
            _ => false,
        }
    }

    /// What a notebook of `user` from environment `id` runs: its newest ready version.
    pub async fn runnable(&self, user: &User, id: &str) -> Result<Runnable, EnvironmentError> {
        let row = self.visible_row(user, id).await?;
        let eid = row.id.clone();
        let newest = self
            .inner
            .db
            .call(move |c| q::newest_ready(c, &eid))
            .await?;
        let Some(build) = newest else {
            return Err(EnvironmentError::Conflict(format!(
                "'{}' has no ready version yet: wait for its build to finish (or fix it and build again).",
                row.name
            )));
        };
        Ok(Runnable {
            environment_id: row.id.clone(),
            version: build.version,
            image: build.image.clone().unwrap_or_default(),
            launcher: row.launcher,
            command: row.command.clone(),
        })
    }

    /// What a notebook of `user` runs from one given ready version of environment `id`.
    pub async fn runnable_at(
        &self,
        user: &User,
        id: &str,
        version: i64,
    ) -> Result<Runnable, EnvironmentError> {
        let row = self.visible_row(user, id).await?;
        let build = self.version_of(&row, version).await?;
        if build.state != BuildState::Ready {
            return Err(EnvironmentError::Conflict(format!(
                "Version {version} of '{}' is {}, not ready: {}",
                row.name, build.state, build.state_detail
            )));
        }
        Ok(Runnable {
            environment_id: row.id.clone(),
            version: build.version,
            image: build.image.clone().unwrap_or_default(),
            launcher: row.launcher,
            command: row.command.clone(),
        })
    }

    /// Whether `owner_id`'s notebook may still start from this version (it exists, its
    /// image is there, and the environment is theirs or shared).
    pub async fn check_version(
        &self,
        owner_id: i64,
        id: &str,
        version: i64,
    ) -> Result<(), EnvironmentError> {
        let eid = id.to_string();
        let (row, build) = self
            .inner
            .db
            .call(move |c| Ok((q::by_id(c, &eid)?, q::build(c, &eid, version)?)))
            .await?;
        let Some(row) = row.filter(|r| r.owner_id == owner_id || r.shared) else {
            return Err(EnvironmentError::NotFound(
                "This notebook's environment was deleted (or is no longer shared): create a new notebook.".into(),
            ));
        };
        match build {
            Some(b) if b.state == BuildState::Ready => Ok(()),
            _ => Err(EnvironmentError::NotFound(format!(
                "Version {version} of '{}' is gone: create a new notebook from its newest version.",
                row.name
            ))),
        }
    }

    /// The member's environment for a repository (made on first use, named after it),
    /// built at `commit`: the version (ready at once when the commit was built before).
    pub async fn for_repository(
        &self,
        user: &User,
        url: &str,
        commit: &str,
    ) -> Result<(String, BuildView), EnvironmentError> {
        let parsed = RepoUrl::parse(url)?;
        let stem = parsed
            .as_str()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("repository")
            .trim_end_matches(".git");
        let clean: String = stem
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(40)
            .collect();
        let short = &source::input_hash(&[parsed.as_str().as_bytes()])[..6];
        let name = format!(
            "repo-{}-{short}",
            if clean.is_empty() {
                "repository"
            } else {
                &clean
            }
        );
        let (owner_id, n2) = (user.id, name.clone());
        let existing = self
            .inner
            .db
            .call(move |c| q::by_owner_and_name(c, owner_id, &n2))
            .await?;
        match existing {
            Some(env) => {
                let build = self.request_build(user, &env.id, Some(commit)).await?;
                Ok((env.id, build))
            }
            None => {
                let env = self
                    .create(
                        user,
                        CreateEnvironment {
                            name,
                            shared: Some(false),
                            source: SourceInput::Repo {
                                url: parsed.as_str().to_string(),
                                r#ref: Some(commit.to_string()),
                                subdir: None,
                                base: None,
                                credential: None,
                            },
                        },
                    )
                    .await?;
                let build = env.latest().cloned().ok_or_else(|| {
                    EnvironmentError::NotFound("the new environment has no build".into())
                })?;
                Ok((env.id, build))
            }
        }
    }

    /// Lets the builder look for queued builds now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Starts the builder (and the retention sweep); call once.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { builder::run(this).await })
    }

    /// Every environment with its owner and size (the admin's disk page).
    pub async fn disk_report(&self) -> Result<DiskReport, EnvironmentError> {
        retention::disk_report(self).await
    }
}

pub use builder::human_size;
pub use save::save_notebook;
