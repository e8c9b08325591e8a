//! What every setting is when nothing sets it: the config works out of the box.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    AuthConfig, Config, DockerConfig, DockerfilePolicy, EnvironmentsConfig, GpuBackend, GpuConfig,
    ImageSpec, JobsConfig, Launcher, MachineType, MetricsConfig, NotebooksConfig, OriginMode,
    PortRange, ShareConfig, StorageConfig, UsageConfig, WebhookConfig, DEFAULT_LISTEN,
};

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            data_dir: PathBuf::from("./notebox-data"),
            auth: AuthConfig::default(),
            notebooks: NotebooksConfig::default(),
            storage: StorageConfig::default(),
            gpu: GpuConfig::default(),
            docker: DockerConfig::default(),
            share: ShareConfig::default(),
            webhook: WebhookConfig::default(),
            metrics: MetricsConfig::default(),
            usage: UsageConfig::default(),
            jobs: JobsConfig::default(),
            reservations: super::ReservationsConfig::default(),
            environments: EnvironmentsConfig::default(),
            images: default_images(),
            machines: default_machines(),
            groups: Vec::new(),
            public_url: String::new(),
            source: "built-in defaults".into(),
        }
    }
}

impl Default for EnvironmentsConfig {
    fn default() -> Self {
        EnvironmentsConfig {
            dockerfile: DockerfilePolicy::Admins,
            concurrent_builds: 1,
            build_timeout: Duration::from_secs(30 * 60),
            build_memory_mib: 2047,
            build_cpus: 2.0,
            keep_versions: 3,
            max_disk: 200 * 1024 * 1024 * 1024,
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
            directory_refresh: Duration::from_secs(15 * 60),
            ldap: None,
            oidc: Vec::new(),
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
            min_free: super::MinFree::Percent(5.0),
            soft_quota: None,
            measure_interval: Duration::from_secs(600),
            measure_max_entries: 2_000_000,
            measure_max_depth: 64,
            measure_files_per_second: 50_000,
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
            queue_order: super::QueueOrderName::Fifo,
            fair_share_half_life: Duration::from_secs(7 * 86400),
            fair_share_max_wait: Duration::from_secs(4 * 3600),
            shares: Default::default(),
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

impl Default for ShareConfig {
    fn default() -> Self {
        ShareConfig {
            max_render_mib: 20,
            max_text_kib: 1024,
        }
    }
}

pub(super) fn default_launcher() -> Launcher {
    Launcher::DockerStacks
}

/// The Jupyter Docker Stacks images; a config that lists `[[images]]` replaces them.
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

/// One CPU type and two GPU types; a config that lists `[[machines]]` replaces them.
fn default_machines() -> Vec<MachineType> {
    let machine = |id: &str, name: &str, cpus: f64, memory_mib: u64, gpus: u32| MachineType {
        id: id.into(),
        name: name.into(),
        cpus,
        memory_mib,
        gpus,
        idle_timeout: None,
        reclaim: None,
    };
    vec![
        machine("cpu", "CPU · 2 cores · 4 GB", 2.0, 4096, 0),
        machine("gpu-1", "1 GPU · 8 cores · 32 GB", 8.0, 32768, 1),
        machine("gpu-2", "2 GPUs · 16 cores · 64 GB", 16.0, 65536, 2),
    ]
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            default_time_limit: Duration::from_secs(24 * 3600),
            max_time_limit: Duration::from_secs(7 * 24 * 3600),
            max_notebook_mib: 64,
            max_cells: 20_000,
            max_output_mib: 64,
            max_cell_output_kib: 1024,
            max_log_mib: 64,
            max_unfinished_per_member: 20,
            max_schedules_per_member: 20,
            time_zone: String::new(),
            keep_finished: Duration::from_secs(90 * 24 * 3600),
            keep_runs_per_schedule: 50,
        }
    }
}

impl Default for super::ReservationsConfig {
    fn default() -> Self {
        super::ReservationsConfig {
            max_length: Duration::from_secs(8 * 3600),
            max_ahead: Duration::from_secs(14 * 86400),
            max_gpu_hours_per_week: 64.0,
        }
    }
}
