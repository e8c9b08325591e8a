//! What a notebook's container looks like. A pure function of the notebook, the config
//! and its GPUs, so its rules can be unit-tested without an engine; the engine adds the
//! hardening every container gets (`containers::docker`).

use std::collections::BTreeMap;

use crate::config::{Config, Launcher};
use crate::containers::{ContainerSpec, Mount, LABEL_INSTANCE, LABEL_NOTEBOOK, LABEL_OWNER};
use crate::db::notebooks::NotebookRow;
use crate::jupyter::{base_url, JUPYTER_PORT};

use super::dirs::NotebookDirs;

/// The notebook's working directory inside the container.
pub const ROOT_DIR: &str = "/notebooks";

/// Tornado closes WebSockets carrying messages over 10 MiB; kernels can legitimately send
/// more (the proxy relays frames of any size without holding them; Jupyter holds a
/// message in the container's memory, within its machine type's limit).
const LARGE_MESSAGES: &str =
    r#"--ServerApp.tornado_settings={"websocket_max_message_size": 268435456}"#;

pub fn container_name(instance: &str, notebook_id: &str) -> String {
    format!(
        "notebox-{}-{notebook_id}",
        &instance[..instance.len().min(8)]
    )
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

/// The GPUs a container gets, and how.
pub struct Gpus<'a> {
    /// Their UUIDs.
    pub uuids: &'a [String],
    /// Through the engine's NVIDIA device request (real GPUs); otherwise only the
    /// visibility variables (the simulated inventory).
    pub device_request: bool,
}

/// The whole container definition.
pub fn container_spec(
    notebook: &NotebookRow,
    config: &Config,
    instance: &str,
    dirs: &NotebookDirs,
    gpus: Gpus,
) -> ContainerSpec {
    let visible = if gpus.uuids.is_empty() {
        "void".to_string()
    } else {
        gpus.uuids.join(",")
    };
    let env = vec![
        format!("JUPYTER_TOKEN={}", notebook.jupyter_token),
        // CUDA images default this to "all": always say exactly which GPUs.
        format!("NVIDIA_VISIBLE_DEVICES={visible}"),
        format!(
            "CUDA_VISIBLE_DEVICES={}",
            if gpus.uuids.is_empty() { "" } else { &visible }
        ),
        "NOTEBOX=1".to_string(),
        format!("NOTEBOX_NOTEBOOK_ID={}", notebook.id),
        // Jupyter's runtime files go somewhere writable whatever HOME the image has.
        "JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime".to_string(),
    ];
    let labels = BTreeMap::from([
        (LABEL_NOTEBOOK.to_string(), notebook.id.clone()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_OWNER.to_string(), notebook.owner.clone()),
    ]);
    let mount = |host: &std::path::Path, container: &str, read_only: bool| Mount {
        host: host.to_path_buf(),
        container: container.to_string(),
        read_only,
    };
    ContainerSpec {
        name: container_name(instance, &notebook.id),
        image: notebook.image.clone(),
        command: jupyter_command(
            notebook.launcher,
            &notebook.command,
            &base_url(&notebook.id, notebook.path_key.as_deref()),
        ),
        env,
        // Read from the vault at start (`start.rs`), not here.
        private_env: Default::default(),
        labels,
        user: format!("{}:{}", config.storage.uid, config.storage.gid),
        working_dir: ROOT_DIR.into(),
        mounts: [
            mount(&dirs.storage, "/storage", false),
            mount(&dirs.notebooks, ROOT_DIR, false),
            mount(&dirs.datasets, "/datasets", true),
        ]
        .into_iter()
        .chain(
            dirs.group_folders
                .iter()
                .map(|(host, group, ro)| mount(host, &format!("/shared/{group}"), *ro)),
        )
        .collect(),
        network: config.docker.network.clone(),
        memory_bytes: notebook.memory_mib * 1024 * 1024,
        nano_cpus: (notebook.cpus * 1e9) as i64,
        pids_limit: config.notebooks.pids_limit,
        shm_bytes: config.notebooks.shm_size_mib * 1024 * 1024,
        gpu_devices: if gpus.device_request {
            gpus.uuids.to_vec()
        } else {
            Vec::new()
        },
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
            environment: None,
            repo: None,
            is_job: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jupyter::{is_path_key, new_path_key};
    use std::path::PathBuf;

    fn notebook() -> NotebookRow {
        tests_support::row()
    }

    fn dirs(storage: &str, notebooks: &str, datasets: &str) -> NotebookDirs {
        NotebookDirs {
            storage: PathBuf::from(storage),
            notebooks: PathBuf::from(notebooks),
            datasets: PathBuf::from(datasets),
            group_folders: Vec::new(),
        }
    }

    const NO_GPUS: Gpus = Gpus {
        uuids: &[],
        device_request: true,
    };

    #[test]
    fn containers_are_limited_and_mount_only_their_folders() {
        let dirs = dirs("/d/storage/alice", "/d/notebooks/abc123", "/d/datasets");
        let spec = container_spec(
            &notebook(),
            &Config::default(),
            "inst0001xyz",
            &dirs,
            NO_GPUS,
        );
        assert!(spec.pids_limit > 0 && spec.memory_bytes == 4096 * 1024 * 1024);
        assert!(spec.gpu_devices.is_empty());
        assert!(spec
            .mounts
            .iter()
            .all(|m| !m.host.display().to_string().contains("docker.sock")));
        assert!(spec.mounts.contains(&Mount {
            host: PathBuf::from("/d/datasets"),
            container: "/datasets".into(),
            read_only: true
        }));
        assert!(spec
            .env
            .contains(&"NVIDIA_VISIBLE_DEVICES=void".to_string()));
        assert!(spec.env.contains(&"JUPYTER_TOKEN=tok".to_string()));
        assert_eq!(spec.user, "1000:100");
        assert!(spec
            .command
            .contains(&"--ServerApp.base_url=/nb/abc123/".to_string()));
        // With a path key (origin = "ports"), Jupyter's base URL carries it.
        let mut keyed = notebook();
        keyed.path_key = Some(new_path_key());
        let key = keyed.path_key.clone().unwrap_or_default();
        assert!(is_path_key(&key) && !is_path_key("lab") && !is_path_key("k-lab"));
        let spec = container_spec(&keyed, &Config::default(), "i", &dirs, NO_GPUS);
        assert!(spec
            .command
            .contains(&format!("--ServerApp.base_url=/nb/abc123/{key}/")));
    }

    #[test]
    fn gpus_are_named_exactly() {
        let dirs = dirs("/s", "/n", "/d");
        let uuids = vec!["GPU-a".to_string(), "GPU-b".to_string()];
        let gpus = Gpus {
            uuids: &uuids,
            device_request: true,
        };
        let spec = container_spec(&notebook(), &Config::default(), "i", &dirs, gpus);
        assert!(spec
            .env
            .contains(&"NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-b".to_string()));
        assert_eq!(spec.gpu_devices, uuids);
        // The simulated backend sends no device request, only the variables.
        let gpus = Gpus {
            uuids: &uuids,
            device_request: false,
        };
        let spec = container_spec(&notebook(), &Config::default(), "i", &dirs, gpus);
        assert!(spec.gpu_devices.is_empty());
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
