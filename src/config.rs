//! Typed configuration: TOML file, built-in defaults, `NOTEBOX_*` overrides.
//!
//! The config is a plain value handed to `run`; nothing reads it from a global.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: String,
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
    pub images: Vec<ImageSpec>,
    pub machines: Vec<MachineType>,
    /// Where the config came from ("built-in defaults" or a path); not a TOML key.
    #[serde(skip)]
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

/// Where notebooks are served (`notebooks.origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OriginMode {
    /// Each running notebook on a port of its own: an origin of its own with no DNS work.
    #[default]
    Ports,
    /// Each notebook on `{id}.{origin_domain}`.
    Subdomains,
    /// Every notebook on Notebox's own origin: code in a notebook can act as its member.
    Same,
}

impl OriginMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OriginMode::Ports => "ports",
            OriginMode::Subdomains => "subdomains",
            OriginMode::Same => "same",
        }
    }

    pub fn parse(value: &str) -> Result<OriginMode, String> {
        match value {
            "ports" => Ok(OriginMode::Ports),
            "subdomains" => Ok(OriginMode::Subdomains),
            "same" => Ok(OriginMode::Same),
            other => Err(format!(
                "'{other}' is not an origin mode; use ports, subdomains or same"
            )),
        }
    }
}

/// An inclusive range of TCP ports, written "8100-8199".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn parse(value: &str) -> Result<PortRange, String> {
        let bad =
            || format!("'{value}' is not a port range; write it as FIRST-LAST, e.g. \"8100-8199\"");
        let (a, b) = value.trim().split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(format!(
                "'{value}': the first port must be above 0 and not above the last"
            ));
        }
        Ok(PortRange { first, last })
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
        let text = String::deserialize(d)?;
        PortRange::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Outgoing notifications (idle warnings, reclaims, queued notebooks that started).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where events are POSTed as JSON; empty = no webhook.
    pub url: String,
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

/// What a monthly GPU-hour budget does when a member goes over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverBudget {
    /// Show a warning; nothing is refused.
    #[default]
    Warn,
    /// Also refuse to start GPU notebooks until the next month (or a bigger budget).
    Block,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    pub over_budget: OverBudget,
}

/// What happens to an idle notebook once its machine type's idle timeout has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reclaim {
    /// Stopped when idle past the timeout.
    Always,
    /// Stopped when idle past the timeout and another notebook waits for its GPUs.
    WhenNeeded,
}

impl Reclaim {
    pub fn as_str(self) -> &'static str {
        match self {
            Reclaim::Always => "always",
            Reclaim::WhenNeeded => "when_needed",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuBackend {
    Auto,
    Nvml,
    Simulated,
    None,
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

impl Default for ShareConfig {
    fn default() -> Self {
        ShareConfig {
            max_render_mib: 20,
            max_text_kib: 1024,
        }
    }
}

pub use crate::model::Launcher;

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
    #[serde(default = "default_launcher")]
    pub launcher: Launcher,
    #[serde(default)]
    pub command: Vec<String>,
}

fn default_launcher() -> Launcher {
    Launcher::DockerStacks
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

/// serde for an optional duration that may also be "never": absent → None (the default
/// applies), "never" → Some(None), "30m" → Some(Some(30 min)).
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Duration>>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "never" {
            return Ok(Some(None));
        }
        super::parse_duration(&s)
            .map(|d| Some(Some(d)))
            .map_err(|e| serde::de::Error::custom(format!("{e}, or \"never\"")))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./notebox-data"),
            auth: AuthConfig::default(),
            notebooks: NotebooksConfig::default(),
            storage: StorageConfig {
                uid: 1000,
                gid: 100,
            },
            gpu: GpuConfig::default(),
            docker: DockerConfig::default(),
            share: ShareConfig::default(),
            webhook: WebhookConfig::default(),
            metrics: MetricsConfig::default(),
            usage: UsageConfig::default(),
            images: default_images(),
            machines: default_machines(),
            source: "built-in defaults".into(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_lifetime: Duration::from_secs(14 * 86_400),
            max_failures_per_account: 5,
            max_failures_per_address: 30,
            max_failures_per_account_total: 50,
            max_concurrent_logins: 0,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for NotebooksConfig {
    fn default() -> Self {
        NotebooksConfig {
            default_auto_shutdown: Some(Duration::from_secs(6 * 3600)),
            ready_timeout: Duration::from_secs(120),
            allow_custom_images: false,
            reconcile_interval: Duration::from_secs(10),
            pids_limit: 2048,
            shm_size_mib: 2048,
            activity_interval: Duration::from_secs(5),
            busy_gpu_percent: 10,
            busy_cpu_percent: 10,
            idle_warning: Duration::from_secs(5 * 60),
            origin: OriginMode::Ports,
            origin_ports: PortRange {
                first: 8100,
                last: 8199,
            },
            origin_domain: String::new(),
            max_running_per_user: 4,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            uid: 1000,
            gid: 100,
        }
    }
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            backend: GpuBackend::Auto,
            queue: true,
            max_gpus_per_user: 8,
            sample_interval: Duration::from_secs(2),
            simulated: Vec::new(),
        }
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            socket: String::new(),
            network: "notebox".into(),
        }
    }
}

fn default_images() -> Vec<ImageSpec> {
    let stack = |id: &str, name: &str, image: &str, description: &str, gpu: bool| ImageSpec {
        id: id.into(),
        name: name.into(),
        image: image.into(),
        description: description.into(),
        gpu,
        launcher: Launcher::DockerStacks,
        command: Vec::new(),
    };
    vec![
        stack(
            "scipy",
            "SciPy",
            "quay.io/jupyter/scipy-notebook:latest",
            "NumPy, pandas, matplotlib, scikit-learn",
            false,
        ),
        stack(
            "pytorch-cuda",
            "PyTorch (CUDA 12)",
            "quay.io/jupyter/pytorch-notebook:cuda12-latest",
            "PyTorch with CUDA 12 on top of the SciPy stack",
            true,
        ),
        stack(
            "tensorflow-cuda",
            "TensorFlow (CUDA)",
            "quay.io/jupyter/tensorflow-notebook:cuda-latest",
            "TensorFlow with CUDA on top of the SciPy stack",
            true,
        ),
    ]
}

fn default_machines() -> Vec<MachineType> {
    vec![
        MachineType {
            id: "cpu".into(),
            name: "CPU · 2 cores · 4 GB".into(),
            cpus: 2.0,
            memory_mib: 4096,
            gpus: 0,
            idle_timeout: None,
            reclaim: None,
        },
        MachineType {
            id: "gpu-1".into(),
            name: "1 GPU · 8 cores · 32 GB".into(),
            cpus: 8.0,
            memory_mib: 32768,
            gpus: 1,
            idle_timeout: None,
            reclaim: None,
        },
        MachineType {
            id: "gpu-2".into(),
            name: "2 GPUs · 16 cores · 64 GB".into(),
            cpus: 16.0,
            memory_mib: 65536,
            gpus: 2,
            idle_timeout: None,
            reclaim: None,
        },
    ]
}

/// Auto-shutdown choices offered to users, in the order shown.
pub const AUTO_SHUTDOWN_CHOICES: &[&str] = &["1h", "6h", "12h", "1d", "1w", "never"];

/// Parses an auto-shutdown choice: `Ok(None)` for "never".
pub fn parse_auto_shutdown(value: &str) -> Result<Option<Duration>, String> {
    let v = value.trim();
    if v == "never" {
        return Ok(None);
    }
    if !AUTO_SHUTDOWN_CHOICES.contains(&v) {
        return Err(format!(
            "'{value}' is not an auto-shutdown choice; use one of {}",
            AUTO_SHUTDOWN_CHOICES.join(", ")
        ));
    }
    parse_duration(v).map(Some)
}

/// The choice's name for an auto-shutdown length ("6h", "never"), as the forms show it.
pub fn auto_shutdown_name(value: Option<Duration>) -> String {
    match value {
        None => "never".into(),
        Some(d) => AUTO_SHUTDOWN_CHOICES
            .iter()
            .find(|c| parse_auto_shutdown(c).ok().flatten() == Some(d))
            .map(|c| c.to_string())
            .unwrap_or_else(|| humantime::format_duration(d).to_string()),
    }
}

/// serde for `notebooks.default_auto_shutdown`: one of the choices, "never" as None.
mod auto_shutdown_choice {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_auto_shutdown(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses "90s", "5m", "6h", "1d", "1w" (and anything humantime accepts).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("'{value}' is not a duration ({e}); write it like 90s, 5m, 6h or 1d"))
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
                let mut c = Config::from_toml(&text, &path)?;
                c.source = path.display().to_string();
                c
            }
            None => Config::default(),
        };
        config.apply_env(std::env::vars())?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(&e, text),
        })
    }

    /// `NOTEBOX_LISTEN`, `NOTEBOX_DATA_DIR`, ... override single settings.
    pub fn apply_env(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("NOTEBOX_") else {
                continue;
            };
            let invalid = |message: String| ConfigError::Invalid {
                key: name.clone(),
                origin: "the environment".into(),
                message,
            };
            let parse_bool = |v: &str| match v {
                "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" => Ok(false),
                _ => Err(invalid(format!("'{v}' is not true or false"))),
            };
            match key {
                // Not settings: where the config is and how much to log.
                "CONFIG" | "LOG" => {}
                "LISTEN" => self.listen = value,
                "DATA_DIR" => self.data_dir = PathBuf::from(value),
                "ALLOW_CUSTOM_IMAGES" => self.notebooks.allow_custom_images = parse_bool(&value)?,
                "READY_TIMEOUT" => {
                    self.notebooks.ready_timeout = parse_duration(&value).map_err(invalid)?
                }
                "DEFAULT_AUTO_SHUTDOWN" => {
                    self.notebooks.default_auto_shutdown =
                        parse_auto_shutdown(&value).map_err(invalid)?
                }
                "GPU_BACKEND" => {
                    self.gpu.backend = match value.as_str() {
                        "auto" => GpuBackend::Auto,
                        "nvml" => GpuBackend::Nvml,
                        "simulated" => GpuBackend::Simulated,
                        "none" => GpuBackend::None,
                        other => {
                            return Err(invalid(format!(
                                "'{other}' is not a GPU backend; use auto, nvml, simulated or none"
                            )))
                        }
                    }
                }
                "GPU_QUEUE" => self.gpu.queue = parse_bool(&value)?,
                "DOCKER_SOCKET" => self.docker.socket = value,
                "DOCKER_NETWORK" => self.docker.network = value,
                "ORIGIN" => self.notebooks.origin = OriginMode::parse(&value).map_err(invalid)?,
                "ORIGIN_PORTS" => {
                    self.notebooks.origin_ports = PortRange::parse(&value).map_err(invalid)?
                }
                "ORIGIN_DOMAIN" => self.notebooks.origin_domain = value,
                "MAX_RUNNING_PER_USER" => {
                    self.notebooks.max_running_per_user = value.trim().parse().map_err(|_| {
                        invalid(format!("'{value}' is not a whole number of notebooks"))
                    })?
                }
                _ => {
                    return Err(invalid(
                        "unknown setting; known ones are NOTEBOX_LISTEN, NOTEBOX_DATA_DIR, \
                         NOTEBOX_ALLOW_CUSTOM_IMAGES, NOTEBOX_READY_TIMEOUT, \
                         NOTEBOX_DEFAULT_AUTO_SHUTDOWN, NOTEBOX_GPU_BACKEND, NOTEBOX_GPU_QUEUE, \
                         NOTEBOX_DOCKER_SOCKET, NOTEBOX_DOCKER_NETWORK, NOTEBOX_ORIGIN, \
                         NOTEBOX_ORIGIN_PORTS, NOTEBOX_ORIGIN_DOMAIN"
                            .into(),
                    ))
                }
            }
        }
        Ok(())
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            origin: self.source.clone(),
            message: message.into(),
        }
    }

    /// Checks values that types alone cannot; every message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(self.invalid("data_dir", "must not be empty"));
        }
        for (key, d) in [
            ("notebooks.ready_timeout", self.notebooks.ready_timeout),
            (
                "notebooks.reconcile_interval",
                self.notebooks.reconcile_interval,
            ),
            ("auth.session_lifetime", self.auth.session_lifetime),
            ("gpu.sample_interval", self.gpu.sample_interval),
            (
                "notebooks.activity_interval",
                self.notebooks.activity_interval,
            ),
        ] {
            if d.is_zero() {
                return Err(self.invalid(key, "must be longer than zero"));
            }
        }
        for (key, percent) in [
            (
                "notebooks.busy_gpu_percent",
                self.notebooks.busy_gpu_percent,
            ),
            (
                "notebooks.busy_cpu_percent",
                self.notebooks.busy_cpu_percent,
            ),
        ] {
            if percent == 0 || percent > 100 {
                return Err(self.invalid(key, "must be a percentage from 1 to 100"));
            }
        }
        if self.notebooks.max_running_per_user == 0 {
            return Err(self.invalid(
                "notebooks.max_running_per_user",
                "must be at least 1 (it is how many notebooks a member may run at once)",
            ));
        }
        let url = self.webhook.url.trim();
        if !url.is_empty() {
            if let Err(e) = crate::platform::webhook::WebhookUrl::parse(url) {
                return Err(self.invalid("webhook.url", e));
            }
        }
        if !self.metrics.token.is_empty() && self.metrics.token.len() < 16 {
            return Err(self.invalid(
                "metrics.token",
                "must be at least 16 characters (it guards who can read the metrics)",
            ));
        }
        match self.notebooks.origin {
            OriginMode::Ports => {
                if let Ok(listen) = self.listen_addr() {
                    if self.notebooks.origin_ports.contains(listen.port()) {
                        return Err(self.invalid(
                            "notebooks.origin_ports",
                            format!(
                                "{} includes Notebox's own port {} (listen); choose a range without it",
                                self.notebooks.origin_ports,
                                listen.port()
                            ),
                        ));
                    }
                }
            }
            OriginMode::Subdomains => {
                let domain = self.notebooks.origin_domain.trim();
                let valid = !domain.is_empty()
                    && domain.len() <= 200
                    && domain.split('.').count() >= 2
                    && domain.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    });
                if !valid {
                    return Err(self.invalid(
                        "notebooks.origin_domain",
                        format!(
                            "'{domain}' is not a domain; with origin = \"subdomains\" name the \
                             wildcard domain notebooks live under, e.g. \"nb.lab.example\" \
                             (a notebook is then at https://{{id}}.nb.lab.example/)"
                        ),
                    ));
                }
            }
            OriginMode::Same => {}
        }
        if self.notebooks.pids_limit < 64 {
            return Err(self.invalid("notebooks.pids_limit", "must be at least 64"));
        }
        if self.notebooks.shm_size_mib < 64 {
            return Err(self.invalid("notebooks.shm_size_mib", "must be at least 64"));
        }
        if self.auth.max_failures_per_account == 0
            || self.auth.max_failures_per_address == 0
            || self.auth.max_failures_per_account_total == 0
        {
            return Err(self.invalid(
                "auth.max_failures_per_account",
                "login failure limits must be at least 1",
            ));
        }
        if self.images.is_empty() && !self.notebooks.allow_custom_images {
            return Err(self.invalid(
                "images",
                "the catalog is empty and custom images are not allowed, so no notebook could start",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, image) in self.images.iter().enumerate() {
            let key = |field: &str| format!("images[{i}].{field}");
            if !valid_id(&image.id) {
                return Err(self.invalid(
                    &key("id"),
                    format!(
                        "'{}' must be 1-40 characters of a-z, 0-9, '-', '_'",
                        image.id
                    ),
                ));
            }
            if !seen.insert(format!("image:{}", image.id)) {
                return Err(self.invalid(&key("id"), format!("'{}' is used twice", image.id)));
            }
            if image.image.trim().is_empty() {
                return Err(self.invalid(&key("image"), "must name a Docker image"));
            }
            if image.launcher == Launcher::Command && image.command.is_empty() {
                return Err(self.invalid(&key("command"), "launcher = \"command\" needs a command"));
            }
            if image.launcher != Launcher::Command && !image.command.is_empty() {
                return Err(self.invalid(
                    &key("command"),
                    "a command is only used with launcher = \"command\"",
                ));
            }
        }
        for (i, machine) in self.machines.iter().enumerate() {
            let key = |field: &str| format!("machines[{i}].{field}");
            if !valid_id(&machine.id) {
                return Err(self.invalid(
                    &key("id"),
                    format!(
                        "'{}' must be 1-40 characters of a-z, 0-9, '-', '_'",
                        machine.id
                    ),
                ));
            }
            if !seen.insert(format!("machine:{}", machine.id)) {
                return Err(self.invalid(&key("id"), format!("'{}' is used twice", machine.id)));
            }
            if !(machine.cpus > 0.0 && machine.cpus <= 1024.0) {
                return Err(self.invalid(&key("cpus"), "must be a number of cores above 0"));
            }
            if machine.memory_mib < 256 {
                return Err(self.invalid(&key("memory_mib"), "must be at least 256"));
            }
            if machine
                .idle_timeout()
                .is_some_and(|t| t.as_secs() < 1 || t.as_secs() > 366 * 86_400)
            {
                return Err(self.invalid(
                    &key("idle_timeout"),
                    "must be from one second to a year, or \"never\"",
                ));
            }
            if machine.reclaim() == Reclaim::WhenNeeded && machine.gpus == 0 {
                return Err(self.invalid(
                    &key("reclaim"),
                    "\"when_needed\" only applies to machine types with GPUs (nobody queues \
                     for a CPU notebook); use \"always\" or an idle_timeout of \"never\"",
                ));
            }
        }
        if self.machines.is_empty() {
            return Err(self.invalid("machines", "at least one machine type is needed"));
        }
        let mut uuids = std::collections::HashSet::new();
        for (i, gpu) in self.gpu.simulated.iter().enumerate() {
            if gpu.uuid.trim().is_empty() {
                return Err(self.invalid(&format!("gpu.simulated[{i}].uuid"), "must not be empty"));
            }
            if !uuids.insert(gpu.uuid.as_str()) {
                return Err(self.invalid(
                    &format!("gpu.simulated[{i}].uuid"),
                    format!("'{}' is listed twice", gpu.uuid),
                ));
            }
        }
        if self.gpu.backend == GpuBackend::Simulated && self.gpu.simulated.is_empty() {
            return Err(self.invalid(
                "gpu.simulated",
                "backend = \"simulated\" needs at least one [[gpu.simulated]] GPU",
            ));
        }
        if self.docker.network.trim().is_empty() {
            return Err(self.invalid("docker.network", "must name a Docker network"));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            self.invalid(
                "listen",
                format!(
                    "'{}' is not an address:port like 127.0.0.1:8080",
                    self.listen
                ),
            )
        })
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

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 40
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// toml's message names the key (`unknown field `lisen``); add the line for humans.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            // The offending line names the key (and its section header the table).
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            if source.is_empty() || source.len() > 120 {
                format!("line {line}: {message}")
            } else {
                format!("line {line} `{source}`: {message}")
            }
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./notebox-data"));
    }

    #[test]
    fn notebook_origins_are_checked() {
        let c = Config::default();
        assert_eq!(c.notebooks.origin, OriginMode::Ports);
        assert_eq!(c.notebooks.origin_ports.to_string(), "8100-8199");
        let parse = |toml: &str| {
            Config::from_toml(toml, Path::new("c.toml"))
                .and_then(|c| c.validate().map(|_| c))
                .map_err(|e| e.to_string())
        };
        let c = parse("[notebooks]\norigin = \"subdomains\"\norigin_domain = \"nb.lab.example\"\n")
            .expect("subdomains");
        assert_eq!(c.notebooks.origin, OriginMode::Subdomains);
        let err = parse("[notebooks]\norigin = \"subdomains\"\n").unwrap_err();
        assert!(err.contains("notebooks.origin_domain"), "{err}");
        let err = parse("[notebooks]\norigin_ports = \"8199-8100\"\n").unwrap_err();
        assert!(
            err.contains("origin_ports") && err.contains("8199-8100"),
            "{err}"
        );
        let err = parse("[notebooks]\norigin_ports = \"8000-8100\"\n").unwrap_err();
        assert!(err.contains("Notebox's own port 8080"), "{err}");
        let err = parse("[notebooks]\norigin = \"separate\"\n").unwrap_err();
        assert!(err.contains("separate"), "{err}");
        let mut c = Config::default();
        c.apply_env(
            vec![
                ("NOTEBOX_ORIGIN".to_string(), "same".to_string()),
                ("NOTEBOX_ORIGIN_PORTS".to_string(), "9000-9009".to_string()),
            ]
            .into_iter(),
        )
        .expect("env");
        assert_eq!(c.notebooks.origin, OriginMode::Same);
        assert_eq!(c.notebooks.origin_ports.len(), 10);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::from_toml(
            "listen = \"0.0.0.0:1\"\nlisen = 3\n",
            Path::new("/x/c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("/x/c.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let err = Config::from_toml("[gpu]\nqueu = true\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("queu"), "{err}");
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
listen = "127.0.0.1:8080"
data_dir = "./notebox-data"
[notebooks]
default_auto_shutdown = "6h"
ready_timeout = "120s"
allow_custom_images = false
activity_interval = "5s"
[webhook]
url = ""
[storage]
uid = 1000
gid = 100
[gpu]
backend = "auto"
queue = true
max_gpus_per_user = 8
[[gpu.simulated]]
uuid = "GPU-00000000-0000-0000-0000-000000000000"
name = "Simulated RTX A6000"
memory_mib = 49152
utilization_file = ""
[[images]]
id = "scipy"
name = "SciPy"
image = "quay.io/jupyter/scipy-notebook:latest"
description = "NumPy, pandas, matplotlib, scikit-learn"
gpu = false
launcher = "docker-stacks"
[[machines]]
id = "cpu"
name = "CPU · 2 cores · 4 GB"
cpus = 2.0
memory_mib = 4096
gpus = 0
idle_timeout = "4h"
reclaim = "always"
"#;
        let c = Config::from_toml(text, Path::new("c.toml")).expect("parses");
        c.validate().expect("validates");
        assert_eq!(c.images.len(), 1);
        assert_eq!(c.machines.len(), 1);
        assert_eq!(c.gpu.simulated.len(), 1);
        assert_eq!(
            c.machines[0].idle_timeout(),
            Some(Duration::from_secs(4 * 3600))
        );
        assert_eq!(c.machines[0].reclaim(), Reclaim::Always);
    }

    #[test]
    fn idle_policy_defaults_and_never() {
        let c = Config::default();
        let timeout = |id: &str| c.machine(id).and_then(MachineType::idle_timeout);
        assert_eq!(timeout("cpu"), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(timeout("gpu-1"), Some(Duration::from_secs(30 * 60)));
        let c = Config::from_toml(
            "[[machines]]\nid = \"m\"\nname = \"M\"\ncpus = 1.0\nmemory_mib = 512\ngpus = 1\nidle_timeout = \"never\"\nreclaim = \"when_needed\"\n",
            Path::new("c.toml"),
        )
        .expect("parses");
        c.validate().expect("validates");
        assert_eq!(c.machines[0].idle_timeout(), None);
        assert_eq!(c.machines[0].reclaim(), Reclaim::WhenNeeded);
        let e = Config::from_toml(
            "[[machines]]\nid = \"m\"\nname = \"M\"\ncpus = 1.0\nmemory_mib = 512\nidle_timeout = \"soonish\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("idle_timeout") && e.contains("never"), "{e}");
        let c = Config::from_toml(
            "[[machines]]\nid = \"m\"\nname = \"M\"\ncpus = 1.0\nmemory_mib = 512\nreclaim = \"when_needed\"\n",
            Path::new("c.toml"),
        )
        .expect("parses");
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("machines[0].reclaim"), "{e}");
        let c = Config::from_toml("[webhook]\nurl = \"ftp://x\"\n", Path::new("c.toml"))
            .expect("parses");
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("webhook.url"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let c = Config {
            listen: "nonsense".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("`listen`"));
        let e = Config::from_toml(
            "[notebooks]\ndefault_auto_shutdown = \"3h\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("default_auto_shutdown") && e.contains("c.toml"),
            "{e}"
        );
        assert!(
            e.contains("3h") && e.contains("1h, 6h, 12h, 1d, 1w, never"),
            "{e}"
        );
        let e = Config::from_toml(
            "[notebooks]\nready_timeout = \"soon\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ready_timeout") && e.contains("line 2"), "{e}");
        let ok = Config::from_toml(
            "[notebooks]\nready_timeout = \"90s\"\ndefault_auto_shutdown = \"never\"\n",
            Path::new("c.toml"),
        )
        .expect("durations parse once");
        assert_eq!(ok.notebooks.ready_timeout, Duration::from_secs(90));
        assert_eq!(ok.notebooks.default_auto_shutdown, None);
        assert_eq!(auto_shutdown_name(Some(Duration::from_secs(86_400))), "1d");
        let e = Config::from_toml("[gpu]\nbackend = \"cuda\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cuda"), "{e}");
    }

    #[test]
    fn env_overrides() {
        let mut c = Config::default();
        c.apply_env(
            vec![
                ("NOTEBOX_LISTEN".to_string(), "0.0.0.0:9000".to_string()),
                ("NOTEBOX_DATA_DIR".to_string(), "/tmp/x".to_string()),
                ("PATH".to_string(), "/bin".to_string()),
            ]
            .into_iter(),
        )
        .expect("applies");
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        let err = c
            .apply_env(vec![("NOTEBOX_LISTN".to_string(), "x".to_string())].into_iter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("NOTEBOX_LISTN"), "{err}");
    }
}
