//! `notebox doctor`: preflight checks that explain what is wrong and how to fix it.

use crate::config::{Config, GpuBackend};
use crate::containers::docker::DockerBackend;
use crate::containers::{Backend, EngineError};
use crate::disk::FreeSpace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Worth knowing; notebooks still run.
    Warn,
    /// Notebooks (or GPU notebooks) cannot run until it is fixed.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub message: String,
    pub fix: Option<String>,
}

fn check(name: &'static str, level: Level, message: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name,
        level,
        message: message.into(),
        fix: fix.map(str::to_string),
    }
}

/// The first container toolkit releases without a known container escape:
/// CVE-2024-0132 (fixed in 1.16.2) and CVE-2025-23266 "NVIDIAScape" (fixed in 1.17.8).
pub const TOOLKIT_SAFE_FROM: (u32, u32, u32) = (1, 17, 8);

/// "1.17.3" (also inside longer text such as "NVIDIA Container Toolkit CLI version 1.17.3").
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.matches('.').count() >= 2)
        .find_map(|w| {
            let mut parts = w.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??, parts.next()??))
        })
}

/// Free space on the data dir's filesystem against `[storage] min_free` (and the floor
/// below which Notebox refuses writes).
fn check_free_space(config: &Config) -> Check {
    let dir = &config.data_dir;
    let reading = FreeSpace::of(dir).or_else(|e| dir.parent().map_or(Err(e), FreeSpace::of));
    let Ok(free) = reading else {
        return check("disk space", Level::Warn, "cannot read free space", None);
    };
    let min_free = config.storage.min_free;
    let said = format!(
        "{} ({} %) free on the filesystem of {}; Notebox warns below {min_free}",
        crate::config::byte_size_text(free.available),
        free.percent_free(),
        dir.display()
    );
    if free.available < crate::disk::HARD_FLOOR {
        return check(
            "disk space",
            Level::Fail,
            format!("{said}: the disk is full, new notebooks and writes are refused"),
            Some("free disk space (members' files in storage/, unused images: docker image prune)"),
        );
    }
    match crate::disk::low_space_warning(dir, free, min_free) {
        Some(warning) => check(
            "disk space",
            Level::Warn,
            warning,
            Some("free disk space before it fills: notebooks, images and Notebox's database share it"),
        ),
        None => check("disk space", Level::Ok, said, None),
    }
}

/// Whether the data dir's filesystem could enforce per-member hard limits (project quotas).
/// Notebox's quotas are soft; says whether the data dir's filesystem could also enforce
/// hard ones (project quotas), which an admin sets up by hand.
fn check_quota_support(config: &Config) -> Check {
    let dir = &config.data_dir;
    let soft = match config.storage.soft_quota {
        Some(q) => format!("soft quota {} per member", crate::config::byte_size_text(q)),
        None => "no soft quota ([storage] soft_quota)".to_string(),
    };
    match crate::disk::mount_of_path(dir) {
        Some(mount) => {
            let (enforced, said) = crate::disk::quota_support(dir, &mount);
            let said = format!("{soft}; {said}");
            let level = if enforced { Level::Ok } else { Level::Warn };
            let fix = (!enforced).then_some(
                "optional: set up project quotas by hand on an ext4 or XFS data dir (docs/INSTALL.md)",
            );
            check("project quotas", level, said, fix)
        }
        None => check(
            "project quotas",
            Level::Warn,
            format!("cannot tell which filesystem holds {}", dir.display()),
            None,
        ),
    }
}

fn check_data_dir(config: &Config) -> Vec<Check> {
    let dir = &config.data_dir;
    let mut out = Vec::new();
    let probe = dir.join(".notebox-doctor-probe");
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b"ok"));
    // Also after a failed write (a full disk creates the file, then refuses its bytes).
    let removed = std::fs::remove_file(&probe);
    match written.and(removed) {
        Ok(()) => out.push(check(
            "data dir",
            Level::Ok,
            format!("{} is writable", dir.display()),
            None,
        )),
        Err(e) if crate::disk::is_full_io(&e) => out.push(check(
            "data dir",
            Level::Fail,
            format!("{} cannot be written: its filesystem is full ({e})", dir.display()),
            Some("free disk space (see disk space below)"),
        )),
        Err(_) => out.push(check(
            "data dir",
            Level::Fail,
            format!("{} is not writable by this user", dir.display()),
            Some("give the directory to the user notebox runs as (the package uses notebox:notebox), or set data_dir"),
        )),
    }
    out.push(check_free_space(config));
    out.push(check_quota_support(config));
    out
}

async fn check_docker(config: &Config) -> (Vec<Check>, Option<DockerBackend>) {
    let engine = DockerBackend::new(&config.docker.socket, "doctor");
    match engine.version().await {
        Ok((version, api)) => (
            vec![check(
                "docker",
                Level::Ok,
                format!(
                    "Docker {version} answers, API version {api}; this user can use its socket"
                ),
                None,
            )],
            Some(engine),
        ),
        Err(EngineError::Unreachable(text)) => {
            let denied = text.contains("ermission denied");
            let hint = if denied {
                "this user may not use the Docker socket: add it to the docker group (usermod -aG docker notebox) and restart the service"
            } else {
                "install and start Docker (apt install docker.io; systemctl enable --now docker), or set docker.socket"
            };
            let fail = check(
                "docker",
                Level::Fail,
                format!("cannot reach Docker: {text}"),
                Some(hint),
            );
            (vec![fail], None)
        }
        Err(e) => {
            let fail = check(
                "docker",
                Level::Fail,
                format!("Docker does not answer: {e}"),
                None,
            );
            (vec![fail], Some(engine))
        }
    }
}

/// What environments' images take on the engine's disk, against `max_disk`.
async fn check_environment_images(config: &Config, engine: &DockerBackend) -> Check {
    use crate::containers::Backend;
    match engine
        .images_labelled(crate::containers::LABEL_ENVIRONMENT)
        .await
    {
        Ok(images) => {
            let total: i64 = images.iter().map(|i| i.size_bytes).sum();
            let max = config.environments.max_disk;
            let text = format!(
                "environments' images: {} image{} using {} (max_disk {}, keep_versions {}); the admin's Environments page says whose",
                images.len(),
                if images.len() == 1 { "" } else { "s" },
                crate::environments::human_size(total),
                crate::environments::human_size(max.min(i64::MAX as u64) as i64),
                config.environments.keep_versions
            );
            if total as u64 > max {
                check(
                    "image disk use",
                    Level::Warn,
                    text,
                    Some("old versions go at the next build; lower keep_versions, or delete environments nobody uses"),
                )
            } else {
                check("image disk use", Level::Ok, text, None)
            }
        }
        Err(e) => check(
            "image disk use",
            Level::Warn,
            format!("cannot list the environments' images: {e}"),
            None,
        ),
    }
}

fn toolkit_version() -> Option<String> {
    for (program, arg) in [
        ("nvidia-ctk", "--version"),
        ("nvidia-container-cli", "--version"),
    ] {
        if let Ok(out) = std::process::Command::new(program).arg(arg).output() {
            if out.status.success() {
                return Some(String::from_utf8_lossy(&out.stdout).into_owned());
            }
        }
    }
    None
}

async fn check_gpus(config: &Config, docker: Option<&DockerBackend>) -> Vec<Check> {
    let (inventory_check, backend, count) = check_inventory(config).await;
    let mut out = vec![inventory_check];
    if backend != "nvml" || count == 0 {
        return out;
    }
    // Real GPUs: Docker must be able to hand them to containers, safely.
    if let Some(docker) = docker {
        out.push(check_nvidia_runtime(docker).await);
    }
    out.push(check_toolkit());
    out
}

/// The GPUs the inventory finds: the check, the backend's name and how many.
async fn check_inventory(config: &Config) -> (Check, &'static str, usize) {
    let (inventory, reason) = crate::gpu::open_inventory(config);
    let gpus = tokio::task::spawn_blocking({
        let inventory = inventory.clone();
        move || inventory.sample()
    })
    .await;
    let g = match gpus {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => {
            let fail = check(
                "gpus",
                Level::Fail,
                format!("the GPU inventory failed: {e}"),
                None,
            );
            return (fail, inventory.backend(), 0);
        }
        Err(e) => {
            let fail = check(
                "gpus",
                Level::Fail,
                format!("the GPU check crashed: {e}"),
                None,
            );
            return (fail, inventory.backend(), 0);
        }
    };
    let names: Vec<String> = g
        .iter()
        .map(|g| format!("{} ({} MiB)", g.name, g.memory_total_mib))
        .collect();
    let nvml_expected = config.gpu.backend == GpuBackend::Nvml;
    let level = if (g.is_empty() || reason.is_some()) && nvml_expected {
        Level::Fail
    } else {
        Level::Ok
    };
    let message = match (inventory.backend(), g.len()) {
        ("none", _) => format!(
            "no GPUs: {}; CPU notebooks work",
            reason
                .clone()
                .unwrap_or_else(|| "gpu.backend = \"none\"".into())
        ),
        (backend, 0) => format!("{backend}: no GPUs found"),
        (backend, n) => format!("{backend}: {n} GPU(s): {}", names.join(", ")),
    };
    let fix = (inventory.backend() == "none" && config.gpu.backend != GpuBackend::None)
        .then_some("if this machine has NVIDIA GPUs, install the NVIDIA driver (it provides libnvidia-ml.so.1)");
    (
        check("gpus", level, message, fix),
        inventory.backend(),
        g.len(),
    )
}

/// Whether Docker knows the nvidia runtime.
async fn check_nvidia_runtime(docker: &DockerBackend) -> Check {
    match docker.runtimes().await {
        Ok(runtimes) if runtimes.iter().any(|r| r == "nvidia") => check(
            "nvidia runtime",
            Level::Ok,
            "the nvidia runtime is registered with Docker",
            None,
        ),
        Ok(runtimes) => check(
            "nvidia runtime",
            Level::Warn,
            format!("Docker's runtimes are {}; nvidia is not among them", runtimes.join(", ")),
            Some("install nvidia-container-toolkit, then: nvidia-ctk runtime configure --runtime=docker && systemctl restart docker"),
        ),
        Err(e) => check("nvidia runtime", Level::Warn, format!("cannot ask Docker: {e}"), None),
    }
}

/// The NVIDIA container toolkit is there, and new enough to be safe.
fn check_toolkit() -> Check {
    let Some(text) = toolkit_version() else {
        return check(
            "container toolkit",
            Level::Fail,
            "the NVIDIA container toolkit is not installed, so containers cannot get GPUs",
            Some("apt install nvidia-container-toolkit (see docs/INSTALL.md)"),
        );
    };
    match parse_version(&text) {
        Some(v) if v < TOOLKIT_SAFE_FROM => check(
            "container toolkit",
            Level::Fail,
            format!(
                "NVIDIA container toolkit {}.{}.{} has a known container escape (CVE-2025-23266, and CVE-2024-0132 before 1.16.2)",
                v.0, v.1, v.2
            ),
            Some("upgrade nvidia-container-toolkit to 1.17.8 or newer"),
        ),
        Some(v) => check(
            "container toolkit",
            Level::Ok,
            format!("NVIDIA container toolkit {}.{}.{}", v.0, v.1, v.2),
            None,
        ),
        None => check("container toolkit", Level::Warn, format!("cannot read its version from {text:?}"), None),
    }
}

/// Where notebooks are served; `same` is the weaker mode. With `ports`, how many of the
/// range can be bound right now.
fn check_origins(config: &Config) -> Check {
    let n = &config.notebooks;
    let (weak, note) =
        crate::proxy::origin::isolation_note(n.origin, n.origin_ports, &n.origin_domain);
    if weak {
        return check(
            "notebook origins",
            Level::Warn,
            note,
            Some("set [notebooks] origin = \"ports\" (and open origin_ports in the firewall)"),
        );
    }
    if n.origin == crate::config::OriginMode::Ports {
        let ip = config.listen.ip();
        let free = n
            .origin_ports
            .ports()
            .filter(|p| std::net::TcpListener::bind((ip, *p)).is_ok())
            .count();
        let usage = crate::db::origin_ports::usage_of_file(
            &config.data_dir.join("notebox.db"),
            n.origin_ports.first,
            n.origin_ports.last,
        );
        let capacity = match usage {
            Ok(Some(usage)) => crate::proxy::origin::port_capacity_warning(
                n.origin_ports,
                usage,
                n.max_running_per_user,
            ),
            Ok(None) => None,
            Err(e) => Some(format!("cannot read which member owns which port: {e}")),
        };
        let level = if free == 0 {
            Level::Fail
        } else if capacity.is_some() {
            Level::Warn
        } else {
            Level::Ok
        };
        let fix = if free == 0 {
            Some("choose a free range for [notebooks] origin_ports")
        } else if capacity.is_some() {
            Some("widen [notebooks] origin_ports (and the firewall rule), or lower max_running_per_user")
        } else {
            None
        };
        return check(
            "notebook origins",
            level,
            format!(
                "{note} {free} of {} ports free now (one per running notebook).{}",
                n.origin_ports.len(),
                capacity.map(|c| format!(" {c}")).unwrap_or_default()
            ),
            fix,
        );
    }
    check("notebook origins", Level::Ok, note, None)
}

/// Runs every check. `config` was already parsed (that is the first check).
pub async fn run_checks(config: &Config) -> Vec<Check> {
    let mut checks = vec![check(
        "config",
        Level::Ok,
        format!("read from {}", config.source),
        None,
    )];
    checks.extend(check_data_dir(config));
    checks.push(check_origins(config));
    let (docker_checks, engine) = check_docker(config).await;
    checks.extend(docker_checks);
    if let Some(engine) = engine.as_ref() {
        checks.push(check_environment_images(config, engine).await);
    }
    checks.extend(check_gpus(config, engine.as_ref()).await);
    checks.extend(check_directories(config).await);
    checks
}

/// The directory answers and the service account binds; each OIDC provider's discovery
/// document (and keys) reads.
async fn check_directories(config: &Config) -> Vec<Check> {
    use crate::directory::{ldap::LdapDirectory, oidc::OidcProviders};
    let mut checks = Vec::new();
    if let Some(ldap) = &config.auth.ldap {
        let result = match LdapDirectory::new(ldap) {
            Ok(d) => d.check().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        checks.push(match result {
            Ok(()) if ldap.bind_dn.is_empty() => check("ldap", Level::Ok, format!("{} answers (anonymous search)", ldap.url), None),
            Ok(()) => check("ldap", Level::Ok, format!("{} answers; the service account binds", ldap.url), None),
            Err(e) => check(
                "ldap",
                Level::Fail,
                e,
                Some("check [auth.ldap] url, ca_file, bind_dn and bind_password_file; until it answers only local accounts log in"),
            ),
        });
    }
    if config.auth.oidc.is_empty() {
        return checks;
    }
    match OidcProviders::new(&config.auth.oidc) {
        Err(e) => checks.push(check("oidc", Level::Fail, e, Some("check [[auth.oidc]]"))),
        Ok(providers) => {
            for p in &config.auth.oidc {
                checks.push(match providers.check(&p.id).await {
                    Ok(()) => check(
                        "oidc",
                        Level::Ok,
                        format!("{} ({}) answers", p.name, p.issuer),
                        None,
                    ),
                    Err(e) => check(
                        "oidc",
                        Level::Fail,
                        format!("{}: {e}", p.name),
                        Some("check the issuer URL and that this machine reaches it"),
                    ),
                });
            }
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolkit_versions_are_read_and_compared() {
        assert_eq!(
            parse_version("NVIDIA Container Toolkit CLI version 1.17.3\ncommit: abc"),
            Some((1, 17, 3))
        );
        assert_eq!(parse_version("cli-version: 1.16.2"), Some((1, 16, 2)));
        assert_eq!(parse_version("no version"), None);
        assert!(parse_version("1.17.3").expect("v") < TOOLKIT_SAFE_FROM);
        assert!(parse_version("1.17.8").expect("v") >= TOOLKIT_SAFE_FROM);
        assert!(parse_version("1.18.0").expect("v") >= TOOLKIT_SAFE_FROM);
    }

    #[test]
    fn the_same_origin_mode_is_called_weaker() {
        let mut config = Config::default();
        config.notebooks.origin = crate::config::OriginMode::Same;
        let c = check_origins(&config);
        assert_eq!(c.level, Level::Warn);
        assert!(c.message.contains("isolation is off"), "{}", c.message);
        assert!(c.fix.is_some_and(|f| f.contains("\"ports\"")));

        // A range where one port is held: counted, still fine.
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        config.notebooks.origin = crate::config::OriginMode::Ports;
        config.notebooks.origin_ports = crate::config::PortRange {
            first: port,
            last: port,
        };
        let c = check_origins(&config);
        assert_eq!(c.level, Level::Fail, "{}", c.message);
        assert!(c.message.contains("0 of 1 ports free"), "{}", c.message);
    }
}
