//! The container boundary: everything Notebox asks of a container engine, as one trait
//! (`Backend`) with Docker as its implementation (`docker`). A second backend (a cluster
//! engine) is a new file here; nothing outside this folder names an engine's own types.
//!
//! Every call is scoped to this installation's containers (a label with its instance id).

pub mod docker;
mod images;
mod tail;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

pub use tail::LogTail;

/// The engine as the rest of Notebox holds it: cheap to clone, shared by every component.
pub type Engine = Arc<dyn Backend>;

/// Labels on every container Notebox makes.
pub const LABEL_NOTEBOOK: &str = "io.notebox.notebook";
pub const LABEL_INSTANCE: &str = "io.notebox.instance";
pub const LABEL_OWNER: &str = "io.notebox.owner";
/// On a job's container: the job's id (its `LABEL_NOTEBOOK` is the same id).
pub const LABEL_JOB: &str = "io.notebox.job";
/// On every layer of an environment build (and the containers its steps run in), with
/// the build's own key: what a cancelled build left behind is found by it.
pub const LABEL_BUILD: &str = "io.notebox.build";
/// On an environment's images: the environment's id.
pub const LABEL_ENVIRONMENT: &str = "io.notebox.environment";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach Docker: {0}")]
    Unreachable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Docker: {0}")]
    Other(String),
    /// A registry refused a pull, or could not be reached; `message` is the engine's own
    /// words (never holding the credential).
    #[error("{message}")]
    Pull { cause: PullFailure, message: String },
    /// An image build's step failed; `message` is the engine's ("The command '/bin/sh -c
    /// ./postBuild' returned a non-zero code: 3"), `code` the step's exit code.
    #[error("{message}")]
    Build { message: String, code: Option<i64> },
}

/// Why a pull failed, as far as the engine's answer tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailure {
    /// The registry asks for a login and none was sent.
    NeedsLogin,
    /// The registry refused the credential that was sent.
    CredentialRefused,
    /// The registry denied access to the repository: it does not exist, or the caller
    /// (with or without a credential) may not pull it. Registries like Docker Hub do not
    /// say which.
    AccessDenied,
    /// The repository or the tag does not exist.
    NotFound,
    /// The registry did not answer (refused connection, unknown host, TLS, time-out).
    Unreachable,
    /// Anything else the engine said.
    Other,
}

/// A registry login for one pull. The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry, as image references name it ("127.0.0.1:5000", "docker.io").
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"(hidden)")
            .finish()
    }
}

/// Where a container is in its life, as the engine lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Unknown,
}

/// One of our containers, as `docker ps -a` sees it.
#[derive(Debug, Clone)]
pub struct OurContainer {
    pub id: String,
    pub notebook_id: String,
    pub running: bool,
    pub state: ContainerState,
}

impl OurContainer {
    /// Exited or dead: it cannot be started again, only removed.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, ContainerState::Exited | ContainerState::Dead)
    }

    /// Created or running: an interrupted start can carry on with it.
    pub fn is_reusable(&self) -> bool {
        matches!(
            self.state,
            ContainerState::Created | ContainerState::Running
        )
    }
}

/// What inspecting a container tells that matters to us.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: String,
    pub ip: Option<String>,
    /// The container's first process, as the host sees it (to find its cgroup).
    pub pid: Option<u32>,
    /// When it stopped (Unix seconds), if it has.
    pub finished_at: Option<i64>,
}

/// Progress of one image pull, summed over its layers.
#[derive(Debug, Default, Clone)]
pub struct PullProgress {
    pub layers: usize,
    pub layers_done: usize,
    pub bytes_done: i64,
    pub bytes_total: i64,
}

/// A host directory in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

/// A notebook's container, as Notebox wants it: what runs, with which limits, mounts and
/// GPUs. Every backend adds the same hardening (no capabilities, no new privileges, no
/// privileged mode, an init process, no restart, no published ports, bounded logs).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<String>,
    /// The member's own variables and secrets (set under Settings), before `env`.
    pub private_env: PrivateEnv,
    pub labels: BTreeMap<String, String>,
    /// "uid:gid".
    pub user: String,
    pub working_dir: String,
    pub mounts: Vec<Mount>,
    pub network: String,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
    pub shm_bytes: i64,
    /// GPUs handed to the container by the engine's device plugin (NVIDIA), by UUID;
    /// empty when the container only gets the visibility variables.
    pub gpu_devices: Vec<String>,
}

/// Variables a member set for their notebooks, some of them secret: in the container's
/// environment like `ContainerSpec::env`, but never in `Debug` output (names only).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PrivateEnv(pub Vec<(String, String)>);

impl std::fmt::Debug for PrivateEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}=(hidden)")))
            .finish()
    }
}

/// Why a container changed outside Notebox (an exit, an OOM kill, a removal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    pub action: String,
}

/// An image build: a tar of the build context (with its Dockerfile), the tag to give
/// the result, labels, and the limits every step's container runs under.
#[derive(Debug, Clone)]
pub struct ImageBuild {
    pub context: Vec<u8>,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    pub tag: String,
    pub labels: BTreeMap<String, String>,
    /// The network the steps run on.
    pub network: String,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
}

/// What a build says as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A step begins: "Step 3/7 : RUN ./postBuild".
    Step(String),
    /// Output (of a step, or of the engine), one line without its newline.
    Output(String),
}

/// What Notebox needs to know of an image.
#[derive(Debug, Clone, Default)]
pub struct ImageDetails {
    pub id: String,
    pub size_bytes: i64,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
}

/// An image with one of our labels, as a listing shows it.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    pub id: String,
    pub tags: Vec<String>,
    pub size_bytes: i64,
    pub labels: BTreeMap<String, String>,
}

/// A stream of engine events (see `Backend::events`).
pub type EventStream = BoxStream<'static, Result<EngineEvent, EngineError>>;

/// Everything Notebox asks of a container engine. Futures are boxed so that the engine
/// can be chosen at run time (`Engine`).
pub trait Backend: Send + Sync {
    /// Connects to the engine, if not connected yet (every other call does too); an error
    /// means the engine cannot be reached at all.
    fn connect(&self) -> BoxFuture<'_, Result<(), EngineError>>;
    /// Engine version and API version, for logs and `notebox doctor`.
    fn version(&self) -> BoxFuture<'_, Result<(String, String), EngineError>>;
    /// Names of the container runtimes the engine knows (runc, nvidia, ...).
    fn runtimes(&self) -> BoxFuture<'_, Result<Vec<String>, EngineError>>;
    /// Creates the notebooks' private network if it is missing.
    fn ensure_network<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    fn image_exists<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<bool, EngineError>>;
    /// Pulls an image (with a login for its registry, if given), calling `progress` as
    /// layers move. A refusal or an unreachable registry is `EngineError::Pull`.
    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        auth: Option<&'a RegistryAuth>,
        progress: &'a mut (dyn FnMut(&PullProgress) + Send),
    ) -> BoxFuture<'a, Result<(), EngineError>>;
    /// All containers of this instance, running or not.
    fn list_ours(&self) -> BoxFuture<'_, Result<Vec<OurContainer>, EngineError>>;
    /// Creates a container; if one of that name exists already (a start interrupted by a
    /// crash), returns that one's id instead of making a second.
    fn create(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<String, EngineError>>;
    /// Starts a container (already running is fine).
    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    /// The container's state and its address on `network`.
    fn inspect<'a>(
        &'a self,
        id: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, Result<ContainerStatus, EngineError>>;
    /// The container's cumulative CPU time in nanoseconds, from one stats reading.
    fn cpu_usage_ns<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<u64>, EngineError>>;
    /// Stops (SIGTERM, then SIGKILL after `grace_secs`) and removes a container; one that
    /// is already gone is not an error.
    fn stop_and_remove<'a>(
        &'a self,
        id: &'a str,
        grace_secs: i32,
    ) -> BoxFuture<'a, Result<(), EngineError>>;
    /// The last `tail` lines of a container's output, at most `max_bytes` of them.
    fn logs_tail<'a>(
        &'a self,
        id: &'a str,
        tail: usize,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<LogTail, EngineError>>;
    /// Builds an image, calling `events` with each step and line of output; the image's
    /// id when it is built. Dropping the future cancels the build (the engine stops when
    /// the connection closes); `remove_build_leftovers` then clears what it left.
    fn build_image<'a>(
        &'a self,
        build: ImageBuild,
        events: &'a mut (dyn FnMut(BuildEvent) + Send),
    ) -> BoxFuture<'a, Result<String, EngineError>>;
    /// Removes the containers still running a build's steps and the untagged images it
    /// left (found by `LABEL_BUILD` = `key`); how many things it removed.
    fn remove_build_leftovers<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<usize, EngineError>>;
    /// Saves a container's files as an image `tag`, with `config`'s environment, command,
    /// user and labels (not the container's own: its environment holds secrets).
    fn commit<'a>(
        &'a self,
        container: &'a str,
        tag: &'a str,
        config: &'a ImageDetails,
    ) -> BoxFuture<'a, Result<String, EngineError>>;
    /// An image's id, size and configuration; None if there is no such image.
    fn image_details<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<ImageDetails>, EngineError>>;
    /// Removes an image (gone already is fine; one a container uses is `Conflict`).
    fn remove_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    /// The images carrying `label` (any value).
    fn images_labelled<'a>(
        &'a self,
        label: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ImageEntry>, EngineError>>;
    /// Events about our containers that Notebox did not cause itself (exits, removals).
    /// The stream ends when the engine connection does; ask again.
    fn events(&self) -> BoxFuture<'_, Result<EventStream, EngineError>>;
}

/// A running notebook's address on the private network, as the engine reports it.
pub async fn address_of(engine: &dyn Backend, notebook_id: &str, network: &str) -> Option<String> {
    let container = engine
        .list_ours()
        .await
        .ok()?
        .into_iter()
        .find(|c| c.notebook_id == notebook_id && c.running)?;
    engine.inspect(&container.id, network).await.ok()?.ip
}
