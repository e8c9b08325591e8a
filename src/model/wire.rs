//! The objects of the HTTP contract (DESIGN.md), in one place: the API, the CLI's `--json`
//! and the tests all see these shapes. Field names are stable; more may be added.

use serde::Serialize;

use super::{DesiredState, Launcher, NotebookState, Scope, Visibility};

/// The environment version a notebook runs.
#[derive(Debug, Clone, Serialize)]
pub struct NotebookEnvironment {
    pub id: String,
    pub name: Option<String>,
    pub version: i64,
}

/// The repository a notebook's files came from.
#[derive(Debug, Clone, Serialize)]
pub struct NotebookRepo {
    pub url: String,
    pub r#ref: Option<String>,
    /// The commit in /notebooks (null until its first start fetched it).
    pub commit: Option<String>,
    pub open: Option<String>,
}

/// A notebook as its owner and the API see it.
#[derive(Debug, Clone, Serialize)]
pub struct Notebook {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub image: String,
    pub image_id: Option<String>,
    pub image_name: String,
    pub machine: String,
    pub machine_name: String,
    pub state: NotebookState,
    pub desired_state: DesiredState,
    pub state_detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i64>,
    /// Why it stands where it stands in the queue ("Ahead of you: bob (3.1 GPU-hours
    /// recently). You used 41.0 …").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_reason: Option<String>,
    pub gpus: Vec<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub auto_shutdown: String,
    pub auto_shutdown_at: Option<String>,
    pub forked_from: Option<String>,
    pub url: String,
    /// The whole URL Jupyter clients use with a personal access token (VS Code, scripts):
    /// on the notebook's own origin, as the caller reached Notebox. While running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jupyter_url: Option<String>,
    /// Where a browser opens it: Notebox hands it over to the notebook's own origin.
    pub open_url: String,
    /// On its way somewhere (queued, pulling, starting, stopping): pages keep polling.
    pub transient: bool,
    /// It has, or is getting, a container (and so logs).
    pub has_container: bool,
    /// What it is doing and when it will be reclaimed (while running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
    /// A note for its member (e.g. why it got its GPUs), until they start or stop it.
    pub notice: Option<String>,
    /// An admin exempted it from idle reclaim.
    pub idle_exempt: bool,
    /// The environment version it runs (null: a catalog or custom image).
    pub environment: Option<NotebookEnvironment>,
    /// The repository its files came from (null: none).
    pub repo: Option<NotebookRepo>,
    /// The same instants as Unix seconds, for pages that say "3 minutes ago".
    #[serde(skip)]
    pub times: NotebookTimes,
}

/// Unix seconds behind a notebook's RFC 3339 fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotebookTimes {
    pub created: i64,
    /// While running.
    pub started: Option<i64>,
    pub auto_shutdown: Option<i64>,
}

/// A running notebook's activity: what keeps it alive, and when it will be reclaimed.
// The wire's flags (busy, warning, reclaimable, stale) are the idle stage spelled out for
// scripts and pages; the domain keeps one `IdleStage`.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub busy: bool,
    /// RFC 3339; now while busy.
    pub idle_since: String,
    pub idle_seconds: i64,
    /// When it will be stopped for being idle (policy `always`), unless someone acts.
    pub reclaim_at: Option<String>,
    pub reclaim_in_seconds: Option<i64>,
    /// The reclaim is near: pages show "Keep running".
    pub warning: bool,
    /// Idle past its timeout (with `when_needed`, it gives way to a queued notebook).
    pub reclaimable: bool,
    /// "idle 25 min: stops in 5 min", "busy: kernel busy for 42 s".
    pub summary: String,
    /// What keeps it alive now ("kernel busy for 42 s", "GPU 0 at 90 %").
    pub keeping_alive: Vec<String>,
    /// The first 1 000 kernels Jupyter listed (`kernels_total` counts them all).
    pub kernels: Vec<KernelActivity>,
    /// How many kernels Jupyter listed, those past the first 1 000 included.
    pub kernels_total: usize,
    /// The kernel list is from an earlier sample (Jupyter did not answer the last one).
    pub kernels_stale: bool,
    pub terminals: usize,
    /// Its GPUs' utilization (the busiest), latest sample.
    pub gpu_utilization_percent: Option<u32>,
    pub gpu_memory_used_mib: Option<u64>,
    /// Percent of one core over the last sampling interval.
    pub cpu_percent: Option<f64>,
    pub last_member_action: Option<MemberActionView>,
    pub policy: IdlePolicy,
    pub sampled_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelActivity {
    pub id: String,
    pub name: String,
    /// "busy", "idle", "starting", ...
    pub state: String,
    /// RFC 3339: in this state since.
    pub since: String,
    pub seconds: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberActionView {
    /// "execute", "terminal_input", "file_change", "open", "keep_alive".
    pub kind: &'static str,
    pub description: &'static str,
    pub at: String,
    pub seconds_ago: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdlePolicy {
    /// None: never reclaimed.
    pub idle_timeout_seconds: Option<u64>,
    /// "always" or "when_needed".
    pub reclaim: &'static str,
    pub exempt: bool,
}

#[derive(Debug, Serialize)]
pub struct NotebookList {
    pub notebooks: Vec<Notebook>,
}

#[derive(Debug, Serialize)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

#[derive(Debug, Serialize)]
pub struct Logs {
    pub running: bool,
    pub logs: String,
    /// Older lines were left out: an answer holds at most 1 MiB of log.
    pub truncated: bool,
}

/// A share as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Share {
    pub token: String,
    pub visibility: Visibility,
    pub url: String,
    pub created_at: String,
}

#[derive(Debug, Serialize)]
pub struct ShareList {
    pub shares: Vec<Share>,
}

#[derive(Debug, Serialize)]
pub struct Revoked {
    pub token: String,
    pub revoked: bool,
}

/// The caller (`GET /api/v1/me`).
#[derive(Debug, Serialize)]
pub struct Me {
    pub id: i64,
    pub username: String,
    pub is_admin: bool,
    pub created_at: i64,
    pub display_name: String,
    /// "local", "ldap" or "oidc:{id}".
    pub source: String,
    pub groups: Vec<String>,
    pub policy: crate::groups::Policy,
    pub storage: MeStorage,
}

/// The caller's storage as last measured (`/storage` and their notebooks' folders).
#[derive(Debug, Serialize)]
pub struct MeStorage {
    /// Apparent bytes (`du -sb`); null when never measured; at least this when `capped`.
    pub used_bytes: Option<u64>,
    /// Their soft quota; null when none.
    pub soft_quota_bytes: Option<u64>,
    /// RFC 3339; null when never measured.
    pub measured_at: Option<String>,
    /// The last walk stopped at a cap: `used_bytes` is a lower bound.
    pub capped: bool,
}

impl MeStorage {
    pub fn of(s: &crate::storage::StorageStatus) -> MeStorage {
        MeStorage {
            used_bytes: s.used_bytes,
            soft_quota_bytes: s.quota_bytes,
            measured_at: s.measured_at.map(crate::clock::rfc3339),
            capped: s.capped.is_some(),
        }
    }
}

/// A catalog image.
#[derive(Debug, Serialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub image: String,
    pub description: String,
    pub gpu: bool,
    pub launcher: Launcher,
}

#[derive(Debug, Serialize)]
pub struct ImageList {
    pub images: Vec<Image>,
    pub allow_custom_images: bool,
}

/// A machine type.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub id: String,
    pub name: String,
    pub cpus: f64,
    pub memory_mib: u64,
    pub gpus: u32,
}

#[derive(Debug, Serialize)]
pub struct MachineList {
    pub machines: Vec<Machine>,
}

/// Who holds a GPU.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub notebook: String,
    pub notebook_name: String,
    pub user: String,
    pub since: String,
    #[serde(skip)]
    pub since_ts: i64,
    /// Whether the holder is computing (null before its first activity sample).
    pub busy: Option<bool>,
    /// How long the holder has been idle, in seconds (0 while busy).
    pub idle_seconds: Option<i64>,
}

/// A process on a GPU.
#[derive(Debug, Clone, Serialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_mib: u64,
    /// The notebook the process runs in; null for processes outside Notebox.
    pub notebook: Option<String>,
}

/// A GPU on the map (`GET /api/v1/gpus`).
#[derive(Debug, Clone, Serialize)]
pub struct Gpu {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total_mib: u64,
    pub memory_used_mib: u64,
    pub utilization_percent: Option<u32>,
    pub temperature_c: Option<u32>,
    pub holder: Option<Holder>,
    pub processes: Vec<GpuProcess>,
    /// Utilization samples, oldest first.
    pub history: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct GpuList {
    pub gpus: Vec<Gpu>,
    pub backend: &'static str,
    pub sampled_at: String,
    pub sample_interval_seconds: f64,
}

/// `notebox gpus --json`.
#[derive(Debug, Serialize)]
pub struct Inventory {
    pub backend: &'static str,
    /// Why the backend is what it is (e.g. NVML could not be loaded), when there is a reason.
    pub reason: Option<String>,
    pub gpus: Vec<super::gpu::GpuSample>,
}

/// `GET /healthz`.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub schema_version: i64,
    /// Reconciler passes completed since start (tests wait for passes, not for time).
    pub reconciler_passes: u64,
}

/// Every API error: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

/// `GET /api/v1/usage`: one row per member, day or GPU over `[from, to)`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    pub group_by: &'static str,
    pub rows: Vec<UsageRow>,
    pub totals: UsageRow,
}

/// A usage row; exactly one of `member`, `day`, `gpu` is set (none for the totals).
#[derive(Debug, Clone, Serialize)]
pub struct UsageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    pub gpu_seconds_held: f64,
    pub gpu_seconds_busy: f64,
    /// Busy / held (null when nothing was held).
    pub efficiency: Option<f64>,
    /// CPU notebooks: cores reserved × time.
    pub cpu_core_seconds: f64,
    /// CPU notebooks: CPU time used.
    pub cpu_seconds_used: f64,
    pub notebooks: usize,
    pub peak_memory_mib: i64,
}

/// A member's monthly GPU-hour budget and how much of it is used.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetView {
    pub gpu_hours_budget: f64,
    pub gpu_hours_used: f64,
    pub gpu_hours_left: f64,
    pub over: bool,
    /// Over budget starts no GPU notebook (`usage.over_budget = "block"`).
    pub blocks: bool,
}

/// A member's (or the lab's) variable: a secret's value is never sent, after saving.
#[derive(Debug, Clone, Serialize)]
pub struct Variable {
    pub name: String,
    pub secret: bool,
    pub scope: Scope,
    /// Only for variables that are not secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub updated_at: String,
}

/// `GET /api/v1/secrets`.
#[derive(Debug, Clone, Serialize)]
pub struct VariableList {
    pub secrets: Vec<Variable>,
}

/// A registry credential: never its password, only that one is configured.
#[derive(Debug, Clone, Serialize)]
pub struct Registry {
    pub host: String,
    pub username: String,
    pub configured: bool,
    pub scope: Scope,
    pub updated_at: String,
}

/// Where a notebook job is: cell `cell` of `cells` (code cells, from 1), and the start of
/// that cell's source.
#[derive(Debug, Clone, Serialize)]
pub struct JobProgress {
    pub cell: i64,
    pub cells: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The error a notebook job's failed cell raised.
#[derive(Debug, Clone, Serialize)]
pub struct JobErrorInfo {
    pub ename: String,
    pub evalue: String,
}

/// A job as its member and the API see it (DESIGN.md, "Jobs").
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    pub notebook: String,
    pub notebook_name: String,
    pub path: Option<String>,
    pub command: Option<Vec<String>>,
    pub image: String,
    pub machine: String,
    pub machine_name: String,
    pub state: crate::model::JobState,
    pub state_detail: String,
    pub queue_position: Option<i64>,
    pub gpus: Vec<String>,
    pub progress: Option<JobProgress>,
    pub exit_code: Option<i64>,
    pub failed_cell: Option<i64>,
    pub error: Option<JobErrorInfo>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_seconds: Option<i64>,
    pub gpu_hours: f64,
    /// The folder of its outputs, relative to its notebook's folder.
    pub output: String,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub time_limit_seconds: Option<i64>,
    pub schedule: Option<String>,
    pub url: String,
    /// Still on its way or running: pages keep polling.
    pub transient: bool,
    /// Unix seconds behind the RFC 3339 fields, for pages.
    #[serde(skip)]
    pub times: JobTimes,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct JobTimes {
    pub created: i64,
    pub started: Option<i64>,
    pub finished: Option<i64>,
}

/// `GET /api/v1/jobs`.
#[derive(Debug, Serialize)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// A job definition that runs on a schedule.
#[derive(Debug, Clone, Serialize)]
pub struct JobSchedule {
    pub id: String,
    pub notebook: String,
    pub path: Option<String>,
    pub command: Option<Vec<String>>,
    pub machine: String,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub schedule: String,
    /// In words ("every minute").
    pub schedule_text: String,
    pub overlap: String,
    pub time_zone: String,
    pub next_run_at: String,
    pub skipped: i64,
    pub last_note: Option<String>,
    pub created_at: String,
    /// Its newest runs, newest first.
    pub runs: Vec<Job>,
}

/// `GET /api/v1/schedules`.
#[derive(Debug, Serialize)]
pub struct JobScheduleList {
    pub schedules: Vec<JobSchedule>,
}

/// A piece of a job's log (`GET /api/v1/jobs/{id}/logs?offset=`).
#[derive(Debug, Serialize)]
pub struct JobLog {
    pub text: String,
    /// Where the next piece starts.
    pub offset: u64,
    /// The job ended and the log has no more.
    pub finished: bool,
}

/// A GPU booking (`/api/v1/reservations`).
#[derive(Debug, Serialize)]
pub struct Reservation {
    pub id: String,
    /// The member it is for, or "maintenance".
    pub member: String,
    pub purpose: String,
    /// How many GPUs.
    pub gpus: usize,
    /// The model asked for; none = any.
    pub gpu_name: Option<String>,
    /// The GPUs held for it.
    pub gpu_uuids: Vec<String>,
    pub start: String,
    pub end: String,
    /// Its window is now.
    pub active: bool,
    pub created_by: String,
}

/// `GET /api/v1/reservations`.
#[derive(Debug, Serialize)]
pub struct ReservationList {
    pub reservations: Vec<Reservation>,
}
