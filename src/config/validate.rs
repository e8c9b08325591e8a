//! Checks of what types alone cannot say (a range, a reference, a combination of
//! settings), one small function per rule, run in a fixed order; the first failure is
//! reported, and every message names the key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use super::{
    AuthConfig, Config, ConfigError, DockerConfig, GpuBackend, GpuConfig, ImageSpec, Launcher,
    MachineType, MetricsConfig, NotebooksConfig, OriginMode, Reclaim,
};

/// A failed check: the setting and what is wrong with it.
#[derive(Debug)]
struct Invalid {
    key: String,
    message: String,
}

type Check = Result<(), Invalid>;

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Checks values that types alone cannot; every message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.run_checks()
            .map_err(|Invalid { key, message }| ConfigError::Invalid {
                key,
                origin: self.source.clone(),
                message,
            })
    }

    fn run_checks(&self) -> Check {
        check_data_dir(&self.data_dir)?;
        check_intervals(self)?;
        check_busy_thresholds(&self.notebooks)?;
        check_running_limit(&self.notebooks)?;
        check_metrics(&self.metrics)?;
        check_origin(&self.notebooks, self.listen)?;
        check_container_limits(&self.notebooks)?;
        check_login_limits(&self.auth)?;
        check_catalog(&self.images, self.notebooks.allow_custom_images)?;
        check_machines(&self.machines)?;
        check_simulated_gpus(&self.gpu)?;
        check_environments(&self.environments)?;
        check_jobs(&self.jobs)?;
        check_sharing(self)?;
        check_storage(&self.storage)?;
        super::directory::check(self).map_err(|(key, message)| invalid(key, message))?;
        check_docker(&self.docker)
    }
}

/// Fair share and bookings: half-lives and waits that mean something, positive weights,
/// booking limits a member can book within.
fn check_sharing(c: &Config) -> Check {
    use std::time::Duration;
    if c.gpu.fair_share_half_life < Duration::from_secs(60) {
        return Err(invalid(
            "gpu.fair_share_half_life",
            "must be at least 1m, e.g. \"7d\"",
        ));
    }
    if c.gpu.fair_share_max_wait < Duration::from_secs(60) {
        return Err(invalid(
            "gpu.fair_share_max_wait",
            "must be at least 1m, e.g. \"4h\"",
        ));
    }
    let weights = c
        .gpu
        .shares
        .iter()
        .map(|(member, w)| (format!("gpu.shares.{member}"), *w))
        .chain(
            c.groups
                .iter()
                .filter_map(|g| g.shares.map(|w| (format!("groups[{}].shares", g.id), w))),
        );
    for (key, w) in weights {
        if !(w.is_finite() && (0.01..=1000.0).contains(&w)) {
            return Err(invalid(
                &key,
                "must be a number from 0.01 to 1000 (1 = an equal share)",
            ));
        }
    }
    let r = &c.reservations;
    if r.max_length < Duration::from_secs(60) {
        return Err(invalid(
            "reservations.max_length",
            "must be at least 1m, e.g. \"8h\"",
        ));
    }
    if r.max_ahead < r.max_length {
        return Err(invalid(
            "reservations.max_ahead",
            "must be at least reservations.max_length",
        ));
    }
    if !(r.max_gpu_hours_per_week.is_finite() && r.max_gpu_hours_per_week >= 0.0) {
        return Err(invalid(
            "reservations.max_gpu_hours_per_week",
            "must be 0 (no limit) or a positive number of GPU-hours",
        ));
    }
    Ok(())
}

fn check_storage(s: &super::StorageConfig) -> Check {
    if s.measure_interval < std::time::Duration::from_secs(1) {
        return Err(invalid("storage.measure_interval", "must be at least 1s"));
    }
    if s.measure_max_entries == 0 {
        return Err(invalid(
            "storage.measure_max_entries",
            "must be at least 1 (a measurement that looks at nothing measures nothing)",
        ));
    }
    if !(1..=4096).contains(&s.measure_max_depth) {
        return Err(invalid(
            "storage.measure_max_depth",
            "must be between 1 and 4096",
        ));
    }
    Ok(())
}

fn check_jobs(j: &super::JobsConfig) -> Check {
    use std::time::Duration;
    if j.max_time_limit < Duration::from_secs(10) {
        return Err(invalid("jobs.max_time_limit", "must be at least 10s"));
    }
    if j.default_time_limit < Duration::from_secs(10) || j.default_time_limit > j.max_time_limit {
        return Err(invalid(
            "jobs.default_time_limit",
            "must be at least 10s and at most jobs.max_time_limit",
        ));
    }
    let sizes = [
        ("jobs.max_notebook_mib", j.max_notebook_mib, 1, 1024),
        ("jobs.max_output_mib", j.max_output_mib, 1, 4096),
        (
            "jobs.max_cell_output_kib",
            j.max_cell_output_kib,
            1,
            1024 * 1024,
        ),
        ("jobs.max_log_mib", j.max_log_mib, 1, 4096),
        ("jobs.max_cells", u64::from(j.max_cells), 1, 1_000_000),
        (
            "jobs.max_unfinished_per_member",
            u64::from(j.max_unfinished_per_member),
            1,
            10_000,
        ),
        (
            "jobs.max_schedules_per_member",
            u64::from(j.max_schedules_per_member),
            0,
            10_000,
        ),
        (
            "jobs.keep_runs_per_schedule",
            u64::from(j.keep_runs_per_schedule),
            1,
            100_000,
        ),
    ];
    for (key, value, min, max) in sizes {
        if !(min..=max).contains(&value) {
            return Err(invalid(key, format!("must be between {min} and {max}")));
        }
    }
    super::values::time_zone(&j.time_zone)
        .map(|_| ())
        .map_err(|e| invalid("jobs.time_zone", e))
}

fn check_environments(e: &super::EnvironmentsConfig) -> Check {
    if !(1..=16).contains(&e.concurrent_builds) {
        return Err(invalid(
            "environments.concurrent_builds",
            "must be between 1 and 16",
        ));
    }
    if !(64..=2047).contains(&e.build_memory_mib) {
        return Err(invalid(
            "environments.build_memory_mib",
            "must be between 64 and 2047 (the engine's build API takes the limit as a 32-bit number of bytes)",
        ));
    }
    if !(e.build_cpus > 0.0 && e.build_cpus <= 256.0) {
        return Err(invalid(
            "environments.build_cpus",
            "must be more than 0 and at most 256",
        ));
    }
    if e.build_timeout < std::time::Duration::from_secs(1) {
        return Err(invalid("environments.build_timeout", "must be at least 1s"));
    }
    if e.keep_versions == 0 {
        return Err(invalid(
            "environments.keep_versions",
            "must be at least 1 (the newest version is always kept)",
        ));
    }
    Ok(())
}

fn check_data_dir(data_dir: &Path) -> Check {
    if data_dir.as_os_str().is_empty() {
        return Err(invalid("data_dir", "must not be empty"));
    }
    Ok(())
}

/// Timers that would spin (or never fire) at zero.
fn check_intervals(c: &Config) -> Check {
    for (key, d) in [
        ("notebooks.ready_timeout", c.notebooks.ready_timeout),
        (
            "notebooks.reconcile_interval",
            c.notebooks.reconcile_interval,
        ),
        ("auth.session_lifetime", c.auth.session_lifetime),
        ("gpu.sample_interval", c.gpu.sample_interval),
        ("notebooks.activity_interval", c.notebooks.activity_interval),
    ] {
        if d.is_zero() {
            return Err(invalid(key, "must be longer than zero"));
        }
    }
    Ok(())
}

fn check_busy_thresholds(n: &NotebooksConfig) -> Check {
    for (key, percent) in [
        ("notebooks.busy_gpu_percent", n.busy_gpu_percent),
        ("notebooks.busy_cpu_percent", n.busy_cpu_percent),
    ] {
        if percent == 0 || percent > 100 {
            return Err(invalid(key, "must be a percentage from 1 to 100"));
        }
    }
    Ok(())
}

fn check_running_limit(n: &NotebooksConfig) -> Check {
    if n.max_running_per_user == 0 {
        return Err(invalid(
            "notebooks.max_running_per_user",
            "must be at least 1 (it is how many notebooks a member may run at once)",
        ));
    }
    Ok(())
}

fn check_metrics(m: &MetricsConfig) -> Check {
    if !m.token.is_empty() && m.token.len() < 16 {
        return Err(invalid(
            "metrics.token",
            "must be at least 16 characters (it guards who can read the metrics)",
        ));
    }
    Ok(())
}

/// With `ports`, the range must leave Notebox's own port alone; with `subdomains`, a
/// wildcard domain must be named.
fn check_origin(n: &NotebooksConfig, listen: SocketAddr) -> Check {
    match n.origin {
        OriginMode::Ports if n.origin_ports.contains(listen.port()) => Err(invalid(
            "notebooks.origin_ports",
            format!(
                "{} includes Notebox's own port {} (listen); choose a range without it",
                n.origin_ports,
                listen.port()
            ),
        )),
        OriginMode::Subdomains if !is_wildcard_domain(n.origin_domain.trim()) => Err(invalid(
            "notebooks.origin_domain",
            format!(
                "'{}' is not a domain; with origin = \"subdomains\" name the \
                 wildcard domain notebooks live under, e.g. \"nb.lab.example\" \
                 (a notebook is then at https://{{id}}.nb.lab.example/)",
                n.origin_domain.trim()
            ),
        )),
        OriginMode::Ports | OriginMode::Subdomains | OriginMode::Same => Ok(()),
    }
}

/// At least two dot-separated labels of letters, digits and '-'.
fn is_wildcard_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 200
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn check_container_limits(n: &NotebooksConfig) -> Check {
    if n.pids_limit < 64 {
        return Err(invalid("notebooks.pids_limit", "must be at least 64"));
    }
    if n.shm_size_mib < 64 {
        return Err(invalid("notebooks.shm_size_mib", "must be at least 64"));
    }
    Ok(())
}

fn check_login_limits(a: &AuthConfig) -> Check {
    if a.max_failures_per_account == 0
        || a.max_failures_per_address == 0
        || a.max_failures_per_account_total == 0
    {
        return Err(invalid(
            "auth.max_failures_per_account",
            "login failure limits must be at least 1",
        ));
    }
    Ok(())
}

/// Something must be startable; each image has a unique id and a command only with the
/// `command` launcher.
fn check_catalog(images: &[ImageSpec], allow_custom_images: bool) -> Check {
    if images.is_empty() && !allow_custom_images {
        return Err(invalid(
            "images",
            "the catalog is empty and custom images are not allowed, so no notebook could start",
        ));
    }
    let mut seen = HashSet::new();
    for (i, image) in images.iter().enumerate() {
        let key = |field: &str| format!("images[{i}].{field}");
        check_id(&image.id, &mut seen).map_err(|m| invalid(key("id"), m))?;
        check_image(image).map_err(|(field, m)| invalid(key(field), m))?;
    }
    Ok(())
}

/// An id of the catalog or the machine list: well-formed and not used twice in it.
fn check_id<'a>(id: &'a str, seen: &mut HashSet<&'a str>) -> Result<(), String> {
    if !valid_id(id) {
        return Err(format!(
            "'{id}' must be 1-40 characters of a-z, 0-9, '-', '_'"
        ));
    }
    if !seen.insert(id) {
        return Err(format!("'{id}' is used twice"));
    }
    Ok(())
}

pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 40
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// One image's own fields; Err names the field.
fn check_image(image: &ImageSpec) -> Result<(), (&'static str, &'static str)> {
    if image.image.trim().is_empty() {
        return Err(("image", "must name a Docker image"));
    }
    let command = image.launcher == Launcher::Command;
    if command && image.command.is_empty() {
        return Err(("command", "launcher = \"command\" needs a command"));
    }
    if !command && !image.command.is_empty() {
        return Err((
            "command",
            "a command is only used with launcher = \"command\"",
        ));
    }
    Ok(())
}

fn check_machines(machines: &[MachineType]) -> Check {
    let mut seen = HashSet::new();
    for (i, machine) in machines.iter().enumerate() {
        let key = |field: &str| format!("machines[{i}].{field}");
        check_id(&machine.id, &mut seen).map_err(|m| invalid(key("id"), m))?;
        check_machine(machine).map_err(|(field, m)| invalid(key(field), m))?;
    }
    if machines.is_empty() {
        return Err(invalid("machines", "at least one machine type is needed"));
    }
    Ok(())
}

/// One machine type's own fields; Err names the field.
fn check_machine(machine: &MachineType) -> Result<(), (&'static str, &'static str)> {
    if !(machine.cpus > 0.0 && machine.cpus <= 1024.0) {
        return Err(("cpus", "must be a number of cores above 0"));
    }
    if machine.memory_mib < 256 {
        return Err(("memory_mib", "must be at least 256"));
    }
    if machine
        .idle_timeout()
        .is_some_and(|t| t.as_secs() < 1 || t.as_secs() > 366 * 86_400)
    {
        return Err((
            "idle_timeout",
            "must be from one second to a year, or \"never\"",
        ));
    }
    if machine.reclaim() == Reclaim::WhenNeeded && machine.gpus == 0 {
        return Err((
            "reclaim",
            "\"when_needed\" only applies to machine types with GPUs (nobody queues \
             for a CPU notebook); use \"always\" or an idle_timeout of \"never\"",
        ));
    }
    Ok(())
}

fn check_simulated_gpus(gpu: &GpuConfig) -> Check {
    let mut uuids = HashSet::new();
    for (i, g) in gpu.simulated.iter().enumerate() {
        let key = format!("gpu.simulated[{i}].uuid");
        if g.uuid.trim().is_empty() {
            return Err(invalid(key, "must not be empty"));
        }
        if !uuids.insert(g.uuid.as_str()) {
            return Err(invalid(key, format!("'{}' is listed twice", g.uuid)));
        }
    }
    if gpu.backend == GpuBackend::Simulated && gpu.simulated.is_empty() {
        return Err(invalid(
            "gpu.simulated",
            "backend = \"simulated\" needs at least one [[gpu.simulated]] GPU",
        ));
    }
    Ok(())
}

fn check_docker(d: &DockerConfig) -> Check {
    if d.network.trim().is_empty() {
        return Err(invalid("docker.network", "must name a Docker network"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::MachineType;

    fn parse(toml: &str) -> Result<Config, String> {
        Config::from_toml(toml, Path::new("c.toml"))
            .and_then(|c| c.validate().map(|_| c))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./notebox-data"));
    }

    #[test]
    fn notebook_origins_are_checked() {
        let c = Config::default();
        assert_eq!(c.notebooks.origin, OriginMode::Ports);
        assert_eq!(c.notebooks.origin_ports.to_string(), "8100-8199");
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
        // The webhook URL is parsed as the file is read (it was a check here).
        let e = parse("[webhook]\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(e.contains("webhook.url"), "{e}");
    }

    #[test]
    fn each_rule_names_its_key() {
        let machine = "[[machines]]\nid = \"m\"\nname = \"M\"\ncpus = 1.0\nmemory_mib = 512\n";
        for (toml, key, says) in [
            ("data_dir = \"\"\n", "data_dir", "must not be empty"),
            ("[gpu]\nsample_interval = \"0s\"\n", "gpu.sample_interval", "longer than zero"),
            ("[notebooks]\nbusy_cpu_percent = 101\n", "notebooks.busy_cpu_percent", "1 to 100"),
            ("[notebooks]\nmax_running_per_user = 0\n", "notebooks.max_running_per_user", "at least 1"),
            ("[metrics]\ntoken = \"short\"\n", "metrics.token", "16 characters"),
            ("[notebooks]\npids_limit = 10\n", "notebooks.pids_limit", "at least 64"),
            ("[notebooks]\nshm_size_mib = 10\n", "notebooks.shm_size_mib", "at least 64"),
            ("[auth]\nmax_failures_per_address = 0\n", "auth.max_failures_per_account", "at least 1"),
            ("images = []\n", "images", "catalog is empty"),
            ("[[images]]\nid = \"A\"\nname = \"A\"\nimage = \"a\"\n", "images[0].id", "1-40 characters"),
            ("[[images]]\nid = \"a\"\nname = \"A\"\nimage = \" \"\n", "images[0].image", "Docker image"),
            ("[[images]]\nid = \"a\"\nname = \"A\"\nimage = \"a\"\nlauncher = \"command\"\n", "images[0].command", "needs a command"),
            ("[[images]]\nid = \"a\"\nname = \"A\"\nimage = \"a\"\ncommand = [\"x\"]\n", "images[0].command", "only used with"),
            ("[[images]]\nid = \"a\"\nname = \"A\"\nimage = \"a\"\n[[images]]\nid = \"a\"\nname = \"B\"\nimage = \"b\"\n", "images[1].id", "used twice"),
            ("machines = []\n", "machines", "at least one machine type"),
            (&format!("{machine}{machine}"), "machines[1].id", "used twice"),
            (&machine.replace("cpus = 1.0", "cpus = 0.0"), "machines[0].cpus", "above 0"),
            (&machine.replace("512", "128"), "machines[0].memory_mib", "at least 256"),
            (&format!("{machine}idle_timeout = \"0s\"\n"), "machines[0].idle_timeout", "one second to a year"),
            ("[gpu]\nbackend = \"simulated\"\n", "gpu.simulated", "at least one"),
            ("[[gpu.simulated]]\nuuid = \"\"\nname = \"G\"\nmemory_mib = 1\n", "gpu.simulated[0].uuid", "must not be empty"),
            ("[[gpu.simulated]]\nuuid = \"u\"\nname = \"G\"\nmemory_mib = 1\n[[gpu.simulated]]\nuuid = \"u\"\nname = \"G\"\nmemory_mib = 1\n", "gpu.simulated[1].uuid", "listed twice"),
            ("[docker]\nnetwork = \" \"\n", "docker.network", "Docker network"),
            ("[jobs]\ntime_zone = \"Mars/Base\"\n", "jobs.time_zone", "IANA name"),
            ("[jobs]\ndefault_time_limit = \"30d\"\n", "jobs.default_time_limit", "at most jobs.max_time_limit"),
            ("[jobs]\nmax_cells = 0\n", "jobs.max_cells", "between 1 and"),
        ] {
            let e = parse(toml).unwrap_err();
            assert!(
                e.starts_with(&format!("invalid setting `{key}` in c.toml: ")) && e.contains(says),
                "{toml}: {e}"
            );
        }
    }

    #[test]
    fn an_image_and_a_machine_may_share_an_id() {
        let c = parse(
            "[[images]]\nid = \"cpu\"\nname = \"A\"\nimage = \"a\"\n\
             [[machines]]\nid = \"cpu\"\nname = \"M\"\ncpus = 1.0\nmemory_mib = 512\n",
        )
        .expect("separate namespaces, as before");
        assert_eq!(c.image("cpu").map(|i| i.image.as_str()), Some("a"));
    }
}
