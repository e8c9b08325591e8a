//! Notebooks on Docker: the domain rules (create, start, stop, delete, ...) and the
//! reconciler that drives Docker toward what the database says each notebook should be.
//! Knows nothing of HTTP.

pub mod activity;
pub mod docker;
pub mod gpus;
pub mod jupyter;
pub mod logs;
pub mod notebooks;
pub mod reconciler;
pub mod spec;
pub mod usage;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, RwLock};

use crate::config::Config;
use crate::db::{Db, DbError};
use crate::gpu::telemetry::Telemetry;

use docker::{DockerEngine, DockerError};

pub use gpus::{GpuMap, GpuMapError};
pub use notebooks::{AutoShutdown, CreateNotebook, Notebook, NotebookError, Notebooks};
pub use usage::{UsageError, UsageReports};

/// What happened to a notebook, for the services that follow along (share previews are
/// brought up to date when a notebook stops).
#[derive(Debug, Clone)]
pub enum RuntimeEvent {
    Stopped { notebook_id: String },
}

/// The notebook runtime: shared by the web handlers and the reconciler task.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    config: Arc<Config>,
    /// Identifies this installation's containers among everything else on the engine.
    instance: String,
    docker: RwLock<Option<DockerEngine>>,
    probe: jupyter::JupyterProbe,
    /// Rings the reconciler: something changed.
    wake: Notify,
    /// Notebooks with a Docker operation in flight; the reconciler leaves them alone.
    inflight: Mutex<HashSet<String>>,
    gpus: Telemetry,
    events: tokio::sync::broadcast::Sender<RuntimeEvent>,
    /// Reconciler passes completed since start (shown by /healthz, so tests can wait for
    /// passes instead of sleeping).
    passes: AtomicU64,
    /// The notebooks' network was found or made (checked again after a failed start).
    network_ready: AtomicBool,
    /// Images found on the engine (looked up again after a failed start).
    images_present: Mutex<HashSet<String>>,
    /// What each running notebook is doing (fed by the activity sampler and the proxy).
    activity: crate::activity::Tracker,
    /// Rings the activity sampler: a notebook queued for GPUs (an idle one may make way).
    activity_wake: Notify,
    webhook: crate::webhook::Webhook,
    metrics: crate::metrics::Metrics,
}

impl Runtime {
    /// `instance` is this installation's id (stored in the database).
    pub fn new(db: Db, config: Arc<Config>, instance: String, gpus: Telemetry) -> Runtime {
        Runtime {
            inner: Arc::new(Inner {
                db,
                instance,
                docker: RwLock::new(None),
                probe: jupyter::JupyterProbe::default(),
                wake: Notify::new(),
                inflight: Mutex::new(HashSet::new()),
                gpus,
                events: tokio::sync::broadcast::Sender::new(64),
                passes: AtomicU64::new(0),
                network_ready: AtomicBool::new(false),
                images_present: Mutex::new(HashSet::new()),
                activity: crate::activity::Tracker::new(crate::activity::Thresholds {
                    gpu_percent: config.notebooks.busy_gpu_percent,
                    cpu_percent: config.notebooks.busy_cpu_percent,
                }),
                activity_wake: Notify::new(),
                webhook: crate::webhook::Webhook::start(&config.webhook.url),
                metrics: crate::metrics::Metrics::default(),
                config,
            }),
        }
    }

    /// Events about notebooks (a receiver that falls behind misses the oldest).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RuntimeEvent> {
        self.inner.events.subscribe()
    }

    fn publish(&self, event: RuntimeEvent) {
        // No receiver is fine: nobody follows along (e.g. in a CLI process).
        if self.inner.events.send(event).is_err() {
            tracing::trace!("no listener for runtime events");
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The GPUs and their telemetry.
    pub fn gpus(&self) -> &Telemetry {
        &self.inner.gpus
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// How many reconciler passes have completed since start.
    pub fn reconciler_passes(&self) -> u64 {
        self.inner.passes.load(Ordering::Acquire)
    }

    /// Asks the reconciler to look again soon.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// What each running notebook is doing.
    pub fn activity(&self) -> &crate::activity::Tracker {
        &self.inner.activity
    }

    /// Asks the idle policy to look again now (a notebook joined the GPU queue).
    pub fn wake_activity(&self) {
        self.inner.activity_wake.notify_one();
    }

    pub fn webhook(&self) -> &crate::webhook::Webhook {
        &self.inner.webhook
    }

    /// Counters and histograms for /metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Everything /metrics shows, in the Prometheus text format.
    pub async fn metrics_text(&self) -> Result<String, MetricsError> {
        use crate::metrics::{GpuLabels, Scrape};
        let snapshot = self.gpus().snapshot();
        let t = crate::db::now();
        let (allocations, states, queue_len, oldest, members) = self
            .db()
            .call(move |c| {
                let (queue_len, oldest) = crate::db::gpus::queue_summary(c)?;
                Ok((
                    crate::db::gpus::all(c)?,
                    crate::db::notebooks::count_by_state(c)?,
                    queue_len,
                    oldest,
                    crate::db::usage::totals_by_member(c)?,
                ))
            })
            .await?;
        let mut notebooks_by_state: Vec<(String, i64)> = crate::model::NotebookState::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
        for (state, n) in states {
            if let Some(entry) = notebooks_by_state.iter_mut().find(|(s, _)| *s == state) {
                entry.1 = n;
            }
        }
        let gpus = snapshot
            .gpus
            .iter()
            .map(|g| {
                let holder = allocations.iter().find(|a| a.gpu_uuid == g.uuid);
                crate::metrics::GpuFigures {
                    labels: GpuLabels {
                        gpu: g.index.to_string(),
                        uuid: g.uuid.clone(),
                        name: g.name.clone(),
                        holder: holder.map(|a| a.owner.clone()).unwrap_or_default(),
                        notebook: holder.map(|a| a.notebook_id.clone()).unwrap_or_default(),
                    },
                    utilization_percent: g.utilization_percent.map(f64::from),
                    memory_used_bytes: g.memory_used_mib as f64 * 1_048_576.0,
                    memory_total_bytes: g.memory_total_mib as f64 * 1_048_576.0,
                    temperature_c: g.temperature_c.map(f64::from),
                }
            })
            .collect();
        let scrape = Scrape {
            gpus,
            notebooks_by_state,
            queue_length: queue_len,
            queue_oldest_wait_seconds: oldest.map_or(0.0, |q| (t - q).max(0) as f64),
            member_gpu_seconds: members,
            resident_memory_bytes: crate::metrics::resident_memory_bytes(),
            reconciler_passes: self.reconciler_passes(),
        };
        self.metrics()
            .encode(scrape)
            .map_err(|_| MetricsError::Encode)
    }

    /// The Docker engine, connecting (and negotiating the API version) on first use.
    pub async fn docker(&self) -> Result<DockerEngine, DockerError> {
        if let Some(d) = self.inner.docker.read().await.as_ref() {
            return Ok(d.clone());
        }
        let mut slot = self.inner.docker.write().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let engine =
            DockerEngine::connect(&self.inner.config.docker.socket, &self.inner.instance).await?;
        match engine.version().await {
            Ok((version, api)) => tracing::info!(%version, %api, "connected to Docker"),
            Err(e) => tracing::warn!(error = %e, "Docker answered but not its version"),
        }
        *slot = Some(engine.clone());
        Ok(engine)
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    pub fn storage_dir(&self, username: &str) -> PathBuf {
        self.data_dir().join("storage").join(username)
    }

    pub fn notebook_dir(&self, notebook_id: &str) -> PathBuf {
        self.data_dir().join("notebooks").join(notebook_id)
    }

    pub fn datasets_dir(&self) -> PathBuf {
        self.data_dir().join("datasets")
    }

    /// Creates a host directory for the container user (uid:gid from the config).
    pub fn prepare_dir(&self, dir: &Path, read_only_for_user: bool) -> Result<(), NotebookError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)
            .map_err(|e| NotebookError::Host(format!("cannot create {}: {e}", dir.display())))?;
        let storage = &self.inner.config.storage;
        if !read_only_for_user {
            std::os::unix::fs::chown(dir, Some(storage.uid), Some(storage.gid)).map_err(|e| {
                NotebookError::Host(format!(
                    "cannot give {} to uid {}:{} ({e}); notebox needs to run as root or with CAP_CHOWN",
                    dir.display(),
                    storage.uid,
                    storage.gid
                ))
            })?;
        }
        let mode = if read_only_for_user { 0o755 } else { 0o750 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            NotebookError::Host(format!("cannot set the mode of {}: {e}", dir.display()))
        })
    }

    fn try_claim(&self, notebook_id: &str) -> bool {
        self.inner
            .inflight
            .lock()
            .map(|mut set| set.insert(notebook_id.to_string()))
            .unwrap_or(false)
    }

    /// A running notebook's address on the private network, asked of Docker (and
    /// remembered) when the database does not have it.
    pub async fn container_ip(&self, notebook_id: &str) -> Option<String> {
        let docker = self.docker().await.ok()?;
        let container = docker
            .list_ours()
            .await
            .ok()?
            .into_iter()
            .find(|c| c.notebook_id == notebook_id && c.running)?;
        let ip = docker
            .inspect(&container.id, &self.config().docker.network)
            .await
            .ok()?
            .ip?;
        let (id, addr) = (notebook_id.to_string(), ip.clone());
        if let Err(e) = self
            .db()
            .call(move |c| crate::db::notebooks::set_container_ip(c, &id, &addr))
            .await
        {
            // The address works now; it is asked of Docker again next time.
            tracing::warn!(notebook = %notebook_id, error = %e, "cannot remember the container's address");
        }
        Some(ip)
    }

    fn release(&self, notebook_id: &str) {
        if let Ok(mut set) = self.inner.inflight.lock() {
            set.remove(notebook_id);
        }
        self.wake();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the metrics could not be encoded")]
    Encode,
}

impl From<DbError> for NotebookError {
    fn from(e: DbError) -> NotebookError {
        NotebookError::Db(e)
    }
}
