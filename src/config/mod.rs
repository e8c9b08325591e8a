//! Typed configuration: TOML file, built-in defaults, `NOTEBOX_*` overrides.
//!
//! The config is a plain value handed to `run`; nothing reads it from a global. Every
//! setting is parsed once, where it enters: the file (`file.rs`), the environment
//! (`env.rs`); `validate.rs` then checks what types cannot say. Defaults live in
//! `defaults.rs`, the value types (an address, a URL, a port range, durations) in
//! `values.rs`.

mod defaults;
mod directory;
mod env;
mod file;
mod validate;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::model::Launcher;
pub use directory::{
    parse_ldap_url, read_secret, FolderOthers, GroupConfig, LdapConfig, OidcConfig, OIDC_ALGORITHMS,
};
use values::{auto_shutdown_choice, optional_duration};
pub use values::{
    auto_shutdown_name, byte_size_text, parse_auto_shutdown, parse_byte_size, parse_duration,
    parse_listen, parse_min_free, time_zone, GpuBackend, MinFree, OriginMode, OverBudget,
    PortRange, Reclaim, WebhookUrl, AUTO_SHUTDOWN_CHOICES, DEFAULT_LISTEN,
};

/// Where the config was found, searched in this order.
pub const SYSTEM_CONFIG: &str = "/etc/notebox/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting `{key}`{}: {message}", origin_suffix(.origin))]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
}

fn origin_suffix(origin: &str) -> String {
    if origin.is_empty() {
        String::new()
    } else {
        format!(" in {origin}")
    }
}

/// The whole configuration, every field typed. The TOML file has the same shape (see
/// `file.rs`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where Notebox's own pages and API listen.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub auth: AuthConfig,
    pub notebooks: NotebooksConfig,
    pub storage: StorageConfig,
    pub gpu: GpuConfig,
    pub docker: DockerConfig,
    pub share: ShareConfig,
    pub webhook: WebhookConfig,
    pub metrics: MetricsConfig,
    pub usage: UsageConfig,
    pub jobs: JobsConfig,
    pub reservations: ReservationsConfig,
    pub environments: EnvironmentsConfig,
    pub images: Vec<ImageSpec>,
    pub machines: Vec<MachineType>,
    /// Groups and the policy they carry (`[[groups]]`).
    pub groups: Vec<GroupConfig>,
    /// The address members use ("https://gpu.lab.example"); empty = each request's Host.
    /// OIDC redirect URIs are built on it.
    pub public_url: String,
    /// Where the config came from ("built-in defaults" or a path); not a TOML key.
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a login lasts, e.g. "14d".
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// Failed logins allowed for one account from one client address in 15 minutes
    /// before 429 (so nobody can lock a member out from elsewhere for free).
    pub max_failures_per_account: u32,
    /// Failed logins allowed per client address in 15 minutes before 429.
    pub max_failures_per_address: u32,
    /// Failed logins allowed for one account from all addresses together in 15 minutes:
    /// the ceiling against a distributed guesser.
    pub max_failures_per_account_total: u32,
    /// Password checks (argon2, 19 MiB each) running at once; more get 429 at once.
    /// 0 = twice the number of CPU cores.
    pub max_concurrent_logins: u32,
    /// Addresses of reverse proxies in front of Notebox: from these (and only these) the
    /// client address is taken from `X-Forwarded-For`.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// How often directory accounts are checked again (still there, still allowed, their
    /// groups); also checked at every login.
    #[serde(with = "humantime_serde")]
    pub directory_refresh: Duration,
    /// `[auth.ldap]`: absent = no LDAP login.
    pub ldap: Option<LdapConfig>,
    /// `[[auth.oidc]]`: one "Sign in with …" per provider.
    pub oidc: Vec<OidcConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotebooksConfig {
    /// 1h 6h 12h 1d 1w never (None).
    #[serde(with = "auto_shutdown_choice")]
    pub default_auto_shutdown: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
    pub allow_custom_images: bool,
    /// Time between reconciler passes when nothing else wakes it.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Processes per container.
    pub pids_limit: i64,
    /// /dev/shm size per container (PyTorch data loaders need more than Docker's 64 MiB).
    pub shm_size_mib: i64,
    /// How often running notebooks' activity (kernels, GPUs, CPU) is sampled.
    #[serde(with = "humantime_serde")]
    pub activity_interval: Duration,
    /// A GPU above this utilization (percent) counts as computing.
    pub busy_gpu_percent: u32,
    /// A container above this CPU use (percent of one core) counts as computing.
    pub busy_cpu_percent: u32,
    /// How long before an idle reclaim the notebook shows (and the webhook sends) a
    /// warning; at most half the machine type's idle timeout.
    #[serde(with = "humantime_serde")]
    pub idle_warning: Duration,
    /// Where notebooks are served: each on its own origin (a port of `origin_ports`, or a
    /// subdomain of `origin_domain`), or on Notebox's own origin (`same`, weaker).
    pub origin: OriginMode,
    /// With `origin = "ports"`: the ports Notebox binds, one per running notebook.
    pub origin_ports: PortRange,
    /// With `origin = "subdomains"`: notebooks are at `{id}.{origin_domain}` (wildcard DNS
    /// and TLS in front of Notebox).
    pub origin_domain: String,
    /// The most notebooks one member may have running, starting or queued at once. With
    /// `ports` each running notebook holds a port of the member's own, so the range must
    /// hold `members × max_running_per_user` ports (doctor and the admin pages check).
    pub max_running_per_user: u32,
}

/// Outgoing notifications (idle warnings, reclaims, queued notebooks that started).
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {
    /// Where events are POSTed as JSON; None (empty in the file) = no webhook.
    pub url: Option<WebhookUrl>,
}

/// `/metrics` (Prometheus): off unless a token or an allow list is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Bearer token a scraper sends (`Authorization: Bearer …`); empty = none.
    pub token: String,
    /// Client addresses allowed without the token.
    pub allow: Vec<std::net::IpAddr>,
}

impl MetricsConfig {
    pub fn enabled(&self) -> bool {
        !self.token.is_empty() || !self.allow.is_empty()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    pub over_budget: OverBudget,
}

/// Jobs: notebooks and commands run headless through the GPU queue (issue 26).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// A job's time limit when its member gives none.
    #[serde(with = "humantime_serde")]
    pub default_time_limit: Duration,
    /// The longest time limit a member may ask for.
    #[serde(with = "humantime_serde")]
    pub max_time_limit: Duration,
    /// The largest notebook a job runs (read at submission).
    pub max_notebook_mib: u64,
    /// The most code cells a notebook job may have.
    pub max_cells: u32,
    /// The largest output notebook the runner writes (later outputs are dropped, noted).
    pub max_output_mib: u64,
    /// The most of one cell's outputs kept in the output notebook.
    pub max_cell_output_kib: u64,
    /// The largest log the runner writes.
    pub max_log_mib: u64,
    /// Jobs of one member not yet ended (queued, starting, running); more are refused.
    pub max_unfinished_per_member: u32,
    /// Schedules one member may have.
    pub max_schedules_per_member: u32,
    /// Schedules' time zone (IANA name); empty: the system's.
    pub time_zone: String,
    /// Ended jobs are forgotten this long after they ended (their outputs stay in the
    /// notebook's folder).
    #[serde(with = "humantime_serde")]
    pub keep_finished: Duration,
    /// Runs kept per schedule (the newest).
    pub keep_runs_per_schedule: u32,
}

/// Who may build an environment from a Dockerfile (`environments.dockerfile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DockerfilePolicy {
    /// Admins only: a Dockerfile's `RUN` runs with the engine's default privileges.
    Admins,
    Members,
    Off,
}

/// Environments: images Notebox builds for members (issue 24).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentsConfig {
    pub dockerfile: DockerfilePolicy,
    /// Builds running at once; more wait in line.
    pub concurrent_builds: u32,
    /// A build running longer is stopped ("time limit").
    #[serde(with = "humantime_serde")]
    pub build_timeout: Duration,
    /// Memory of a build's steps (at most 2047: the engine API's build field is 32 bits).
    pub build_memory_mib: u32,
    /// CPU cores a build's steps may use.
    pub build_cpus: f64,
    /// Ready versions kept per environment (besides any a notebook uses).
    pub keep_versions: u32,
    /// All environments' images together; past it the oldest unused versions go.
    #[serde(with = "values::byte_size")]
    pub max_disk: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub uid: u32,
    pub gid: u32,
    /// Below this much free space on the data dir's filesystem the admin pages and
    /// `notebox doctor` warn: "5%" or a size like "2GiB".
    #[serde(with = "values::min_free")]
    pub min_free: MinFree,
    /// Each member's soft quota for `/storage` and their notebooks' folders together
    /// ("100GiB"; empty = none). Past it, new notebooks and jobs are refused.
    #[serde(with = "values::optional_byte_size")]
    pub soft_quota: Option<u64>,
    /// How often every member's usage is measured (also soon after a notebook stops).
    #[serde(with = "humantime_serde")]
    pub measure_interval: Duration,
    /// The most entries one member's measurement looks at; past it the figure is "at least".
    pub measure_max_entries: u64,
    /// The deepest folder a measurement enters.
    pub measure_max_depth: u32,
    /// Entries per second a measurement looks at, at most (0: unthrottled).
    pub measure_files_per_second: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    pub backend: GpuBackend,
    pub queue: bool,
    pub max_gpus_per_user: u32,
    /// How often GPU telemetry is sampled, e.g. "2s".
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    pub simulated: Vec<SimulatedGpu>,
    /// The order of the GPU queue: first come first served, or fair share.
    pub queue_order: QueueOrderName,
    /// Fair share: how fast past GPU use is forgotten (use this long ago counts half).
    #[serde(with = "humantime_serde")]
    pub fair_share_half_life: Duration,
    /// Fair share's starvation rule: a waiting notebook or job goes ahead of every one that
    /// has waited less once it has waited this long.
    #[serde(with = "humantime_serde")]
    pub fair_share_max_wait: Duration,
    /// Fair share weights per member (a member with 2 may use twice as much as one with 1
    /// before coming second); groups may set `shares` too; default 1.
    pub shares: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueOrderName {
    #[default]
    Fifo,
    FairShare,
}

/// GPU bookings: what a member may book (admins book without these limits).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReservationsConfig {
    /// The longest booking.
    #[serde(with = "humantime_serde")]
    pub max_length: Duration,
    /// How far ahead a booking may start.
    #[serde(with = "humantime_serde")]
    pub max_ahead: Duration,
    /// GPU-hours a member may book per week (Monday to Sunday, UTC); 0 = no limit.
    pub max_gpu_hours_per_week: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedGpu {
    pub uuid: String,
    pub name: String,
    pub memory_mib: u64,
    /// A file whose JSON `{"utilization_percent", "memory_used_mib"}` is read at each
    /// sample (tests and demos write it); none = an idle GPU.
    #[serde(default)]
    pub utilization_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Docker API socket; empty means Docker's own default (DOCKER_HOST or /var/run/docker.sock).
    pub socket: String,
    /// Private bridge network the notebooks join.
    pub network: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShareConfig {
    /// Notebooks larger than this are offered for download instead of rendered.
    pub max_render_mib: u64,
    /// Text files larger than this are offered for download instead of shown.
    pub max_text_kib: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub id: String,
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub gpu: bool,
    #[serde(default = "defaults::default_launcher")]
    pub launcher: Launcher,
    #[serde(default)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineType {
    pub id: String,
    pub name: String,
    pub cpus: f64,
    pub memory_mib: u64,
    #[serde(default)]
    pub gpus: u32,
    /// Idle this long → reclaimed; None ("never") keeps it. Unset: 30 min for GPU types,
    /// 4 h for CPU types.
    #[serde(default, with = "optional_duration")]
    pub idle_timeout: Option<Option<Duration>>,
    #[serde(default)]
    pub reclaim: Option<Reclaim>,
}

impl MachineType {
    /// The idle timeout in force: the configured one, else 30 min with GPUs, 4 h without.
    pub fn idle_timeout(&self) -> Option<Duration> {
        match self.idle_timeout {
            Some(t) => t,
            None if self.gpus > 0 => Some(Duration::from_secs(30 * 60)),
            None => Some(Duration::from_secs(4 * 3600)),
        }
    }

    pub fn reclaim(&self) -> Reclaim {
        self.reclaim.unwrap_or(Reclaim::Always)
    }
}

impl Config {
    /// Finds and loads the config: explicit path, else `$NOTEBOX_CONFIG`, else the system
    /// file if it exists, else defaults. Environment overrides apply last.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let env_path = std::env::var_os("NOTEBOX_CONFIG").filter(|v| !v.is_empty());
        let path = match (explicit, env_path) {
            (Some(p), _) => Some(p.to_path_buf()),
            (None, Some(p)) => Some(PathBuf::from(p)),
            (None, None) if Path::new(SYSTEM_CONFIG).exists() => Some(PathBuf::from(SYSTEM_CONFIG)),
            (None, None) => None,
        };
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Config::from_toml(&text, &path)?
            }
            None => Config::default(),
        };
        config.apply_env(std::env::vars())?;
        config.validate()?;
        Ok(config)
    }

    /// The catalog's image ids, for messages ("choose one of scipy, pytorch").
    pub fn image_ids(&self) -> String {
        self.images
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn image(&self, id: &str) -> Option<&ImageSpec> {
        self.images.iter().find(|i| i.id == id)
    }

    pub fn machine(&self, id: &str) -> Option<&MachineType> {
        self.machines.iter().find(|m| m.id == id)
    }
}
