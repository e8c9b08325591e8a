//! What a notebook's container looks like. A pure function of the notebook, the config and
//! its GPUs, so the hardening rules can be unit-tested without Docker.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, HostConfigLogConfig, RestartPolicy,
    RestartPolicyNameEnum,
};

use crate::config::{Config, Launcher};
use crate::db::notebooks::NotebookRow;

use super::docker::{LABEL_INSTANCE, LABEL_NOTEBOOK, LABEL_OWNER};

/// Jupyter's port inside every container.
pub const JUPYTER_PORT: u16 = 8888;
/// The notebook's working directory inside the container.
pub const ROOT_DIR: &str = "/notebooks";

/// Tornado closes WebSockets carrying messages over 10 MiB; kernels can legitimately send
/// more (the proxy relays frames of any size without holding them; Jupyter holds a
/// message in the container's memory, within its machine type's limit).
const LARGE_MESSAGES: &str =
    r#"--ServerApp.tornado_settings={"websocket_max_message_size": 268435456}"#;

/// Where Jupyter serves a notebook: `/nb/{id}/`, or `/nb/{id}/{path_key}/` when its
/// container got a secret segment (`origin = "ports"`).
pub fn base_url(notebook_id: &str, path_key: Option<&str>) -> String {
    match path_key {
        Some(key) => format!("/nb/{notebook_id}/{key}/"),
        None => format!("/nb/{notebook_id}/"),
    }
}

/// A fresh secret segment for a notebook's base URL: 128 random bits, in a shape no
/// JupyterLab route has (so a stale one in a bookmarked URL is recognised and dropped).
pub fn new_path_key() -> String {
    format!("k-{}", crate::auth::secrets::random_hex(16))
}

/// Whether a path segment has the shape of a path key.
pub fn is_path_key(segment: &str) -> bool {
    segment.len() == 34
        && segment.starts_with("k-")
        && segment[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn container_name(instance: &str, notebook_id: &str) -> String {
    format!(
        "notebox-{}-{notebook_id}",
        &instance[..instance.len().min(8)]
    )
}

/// Host directories mounted into a notebook.
pub struct Mounts<'a> {
    pub storage: &'a Path,
    pub notebooks: &'a Path,
    pub datasets: &'a Path,
}

/// The command that starts Jupyter, by launcher.
pub fn jupyter_command(launcher: Launcher, command: &[String], base: &str) -> Vec<String> {
    let common = |program: &str| -> Vec<String> {
        vec![
            program.to_string(),
            "--ip=0.0.0.0".into(),
            format!("--port={JUPYTER_PORT}"),
            "--no-browser".into(),
            format!("--ServerApp.base_url={base}"),
            format!("--ServerApp.root_dir={ROOT_DIR}"),
            LARGE_MESSAGES.to_string(),
        ]
    };
    match launcher {
        // Jupyter Docker Stacks: their start script sets up the environment, then runs
        // JupyterLab with these arguments.
        Launcher::DockerStacks => vec![
            "start-notebook.sh".into(),
            format!("--ServerApp.base_url={base}"),
            format!("--ServerApp.root_dir={ROOT_DIR}"),
            LARGE_MESSAGES.to_string(),
        ],
        // These two launchers are named after the program they run.
        Launcher::JupyterLab | Launcher::JupyterServer => common(launcher.as_str()),
        Launcher::Command => command
            .iter()
            .map(|part| {
                part.replace("{port}", &JUPYTER_PORT.to_string())
                    .replace("{base_url}", base)
                    .replace("{root_dir}", ROOT_DIR)
            })
            .collect(),
    }
}

/// The whole container definition.
pub fn container_spec(
    notebook: &NotebookRow,
    config: &Config,
    instance: &str,
    mounts: &Mounts,
    gpus: &[String],
    gpu_device_request: bool,
) -> ContainerCreateBody {
    let visible = if gpus.is_empty() {
        "void".to_string()
    } else {
        gpus.join(",")
    };
    let env = vec![
        format!("JUPYTER_TOKEN={}", notebook.jupyter_token),
        // CUDA images default this to "all": always say exactly which GPUs.
        format!("NVIDIA_VISIBLE_DEVICES={visible}"),
        format!(
            "CUDA_VISIBLE_DEVICES={}",
            if gpus.is_empty() { "" } else { &visible }
        ),
        "NOTEBOX=1".to_string(),
        format!("NOTEBOX_NOTEBOOK_ID={}", notebook.id),
        // Jupyter's runtime files go somewhere writable whatever HOME the image has.
        "JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime".to_string(),
    ];
    let labels = HashMap::from([
        (LABEL_NOTEBOOK.to_string(), notebook.id.clone()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_OWNER.to_string(), notebook.owner.clone()),
    ]);
    let binds = vec![
        format!("{}:/storage:rw", mounts.storage.display()),
        format!("{}:{ROOT_DIR}:rw", mounts.notebooks.display()),
        format!("{}:/datasets:ro", mounts.datasets.display()),
    ];
    let device_requests = (gpu_device_request && !gpus.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(gpus.to_vec()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    let memory = notebook.memory_mib * 1024 * 1024;
    let host_config = HostConfig {
        binds: Some(binds),
        network_mode: Some(config.docker.network.clone()),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        pids_limit: Some(config.notebooks.pids_limit),
        memory: Some(memory),
        // No swap beyond the memory limit.
        memory_swap: Some(memory),
        nano_cpus: Some((notebook.cpus * 1e9) as i64),
        shm_size: Some(config.notebooks.shm_size_mib * 1024 * 1024),
        init: Some(true),
        privileged: Some(false),
        publish_all_ports: Some(false),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), "10m".to_string()),
                ("max-file".to_string(), "2".to_string()),
            ])),
        }),
        device_requests,
        ..Default::default()
    };
    let launcher = notebook.launcher;
    ContainerCreateBody {
        image: Some(notebook.image.clone()),
        cmd: Some(jupyter_command(
            launcher,
            &notebook.command,
            &base_url(&notebook.id, notebook.path_key.as_deref()),
        )),
        env: Some(env),
        user: Some(format!("{}:{}", config.storage.uid, config.storage.gid)),
        working_dir: Some(ROOT_DIR.into()),
        labels: Some(labels),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use crate::db::notebooks::NotebookRow;

    pub fn row() -> NotebookRow {
        NotebookRow {
            id: "abc123".into(),
            owner_id: 1,
            owner: "alice".into(),
            name: "n".into(),
            image_id: Some("scipy".into()),
            image: "img:1".into(),
            launcher: crate::model::Launcher::JupyterLab,
            command: vec![],
            machine_id: "cpu".into(),
            cpus: 2.0,
            memory_mib: 4096,
            gpu_count: 0,
            desired_state: crate::model::DesiredState::Running,
            state: crate::model::NotebookState::Starting,
            state_detail: String::new(),
            restart_requested: false,
            jupyter_token: "tok".into(),
            container_id: None,
            auto_shutdown_secs: None,
            auto_shutdown_at: None,
            created_at: 0,
            started_at: None,
            stopped_at: None,
            updated_at: 0,
            queued_at: None,
            forked_from: None,
            idle_exempt: false,
            notice: None,
            path_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notebook() -> NotebookRow {
        tests_support::row()
    }

    #[test]
    fn containers_are_hardened() {
        let mounts = Mounts {
            storage: Path::new("/d/storage/alice"),
            notebooks: Path::new("/d/notebooks/abc123"),
            datasets: Path::new("/d/datasets"),
        };
        let spec = container_spec(
            &notebook(),
            &Config::default(),
            "inst0001xyz",
            &mounts,
            &[],
            true,
        );
        let hc = spec.host_config.expect("host config");
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert!(hc.security_opt.expect("secopt")[0].starts_with("no-new-privileges"));
        assert_eq!(hc.privileged, Some(false));
        assert!(hc.pids_limit.is_some() && hc.memory == Some(4096 * 1024 * 1024));
        assert!(hc.port_bindings.is_none());
        assert!(hc.device_requests.is_none());
        let binds = hc.binds.expect("binds");
        assert!(binds.iter().all(|b| !b.contains("docker.sock")));
        assert!(binds.contains(&"/d/datasets:/datasets:ro".to_string()));
        let env = spec.env.expect("env");
        assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=void".to_string()));
        assert!(env.contains(&"JUPYTER_TOKEN=tok".to_string()));
        assert_eq!(spec.user.as_deref(), Some("1000:100"));
        let cmd = spec.cmd.expect("cmd");
        assert!(cmd.contains(&"--ServerApp.base_url=/nb/abc123/".to_string()));
        // With a path key (origin = "ports"), Jupyter's base URL carries it.
        let mut keyed = notebook();
        keyed.path_key = Some(new_path_key());
        let key = keyed.path_key.clone().unwrap_or_default();
        assert!(is_path_key(&key) && !is_path_key("lab") && !is_path_key("k-lab"));
        let spec = container_spec(&keyed, &Config::default(), "i", &mounts, &[], true);
        let cmd = spec.cmd.expect("cmd");
        assert!(cmd.contains(&format!("--ServerApp.base_url=/nb/abc123/{key}/")));
    }

    #[test]
    fn gpus_are_named_exactly() {
        let mounts = Mounts {
            storage: Path::new("/s"),
            notebooks: Path::new("/n"),
            datasets: Path::new("/d"),
        };
        let gpus = vec!["GPU-a".to_string(), "GPU-b".to_string()];
        let spec = container_spec(&notebook(), &Config::default(), "i", &mounts, &gpus, true);
        assert!(spec
            .env
            .as_ref()
            .expect("env")
            .contains(&"NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-b".to_string()));
        let dr = spec
            .host_config
            .expect("hc")
            .device_requests
            .expect("device request");
        assert_eq!(dr[0].device_ids.as_deref(), Some(&gpus[..]));
        assert_eq!(dr[0].driver.as_deref(), Some("nvidia"));
        // The simulated backend sends no device request, only the variables.
        let spec = container_spec(&notebook(), &Config::default(), "i", &mounts, &gpus, false);
        assert!(spec.host_config.expect("hc").device_requests.is_none());
    }

    #[test]
    fn command_launcher_fills_placeholders() {
        let cmd = jupyter_command(
            Launcher::Command,
            &[
                "my-jupyter".into(),
                "--port={port}".into(),
                "--ServerApp.base_url={base_url}".into(),
                "--ServerApp.root_dir={root_dir}".into(),
            ],
            &base_url("x1", None),
        );
        assert_eq!(
            cmd,
            vec![
                "my-jupyter",
                "--port=8888",
                "--ServerApp.base_url=/nb/x1/",
                "--ServerApp.root_dir=/notebooks"
            ]
        );
    }
}
