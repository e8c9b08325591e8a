//! Notebox: a lab's own "Gradient Notebooks" on one multi-GPU workstation.
//!
//! `run` is the whole server; the binary and the integration tests both call it. The map
//! of the tree is docs/ARCHITECTURE.md.

// Kept by `cargo clippy --all-targets -- -D warnings` (clippy.toml sets the length).
#![warn(clippy::too_many_lines, clippy::struct_excessive_bools)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod containers;
pub mod db;
pub mod directory;
pub mod disk;
pub mod doctor;
pub mod environments;
pub mod error;
pub mod git;
pub mod gpu;
pub mod groups;
pub mod http;
pub mod idle;
pub mod jobs;
pub mod jupyter;
pub mod model;
pub mod notebooks;
pub mod platform;
pub mod proxy;
pub mod secrets;
pub mod share;
pub mod sharing;
pub mod storage;
pub mod usage;
pub mod vault;
pub mod web;

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{web as aw, App, HttpServer};

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("cannot serve HTTP: {0}")]
    Http(#[from] std::io::Error),
    #[error("start-up task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Vault(#[from] vault::VaultError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// Creates the data directory and opens (migrating) the database. Blocking.
pub fn open_database(config: &Config) -> Result<db::Db, StartError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = &config.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
    Ok(db::Db::open(&dir.join("notebox.db"))?)
}

/// Runs the server on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let mut config = config;
    config.data_dir = absolute(&config.data_dir);
    let config = Arc::new(config);
    // The directories answer before anything is written (a bad setting names its key).
    let directories = directory::connect(&config)
        .await
        .map_err(|(key, message)| config::ConfigError::Invalid {
            key,
            origin: config.source.clone(),
            message,
        })?;
    let (db, instance, vault) = open_state(&config).await?;
    let accounts = auth::Accounts::new(db.clone(), &config).with_ldap(directories.ldap.clone());
    accounts.sync_group_budgets().await?;
    let telemetry = start_telemetry(&config).await?;
    let components = Components::build(&db, &config, instance, telemetry, vault);
    // The reconciler's first pass settles every notebook against what the engine has.
    let mut tasks = vec![
        tokio::spawn(components.reconciler.clone().run()),
        tokio::spawn(components.idle.clone().run()),
        tokio::spawn(components.shares.clone().follow_stops()),
        components.environments.spawn(),
        tokio::spawn(jobs::scheduler::run(components.jobs.clone())),
        tokio::spawn(components.storage.clone().run()),
        components.measure_after_stops(),
    ];
    let local = listener.local_addr()?;
    let proxy = NotebookProxy::wire(&config, &accounts, &db, components.proxy_handles(), local);
    let sites = proxy.sites.clone();
    let site_follower = tokio::spawn(sites.clone().follow());
    let state =
        aw::Data::new(components.app_state(&db, &accounts, sites.clone(), directories.oidc));
    let server = serve(listener, state, proxy)?;
    let handle = server.handle();
    // The database is open and migrated and the listener is bound: ready.
    platform::systemd::notify_ready();
    tasks.extend(housekeeping(&db, &accounts));
    tasks.extend(components.follow_accounts(&accounts));

    tokio::pin!(shutdown);
    let result = tokio::select! {
        r = server => r.map_err(StartError::from),
        _ = &mut shutdown => {
            tracing::info!("shutting down");
            platform::systemd::notify_stopping();
            handle.stop(true).await;
            Ok(())
        }
    };
    site_follower.abort();
    sites.close_all().await;
    for task in tasks {
        task.abort();
    }
    result
}

/// Opens (creating and migrating) the database, makes the first admin on a fresh one,
/// reads this installation's id, and opens the vault (its key made on first start).
async fn open_state(config: &Arc<Config>) -> Result<(db::Db, String, vault::Vault), StartError> {
    let config = config.clone();
    let (db, initial_admin, instance, vault) =
        tokio::task::spawn_blocking(move || -> Result<_, StartError> {
            let db = open_database(&config)?;
            let initial = auth::ensure_initial_admin(&db, &config.data_dir)?;
            let instance = db.with_conn(|c| {
                db::meta::get_or_insert(c, "instance_id", || {
                    auth::secrets::random_secret(12)
                        .to_lowercase()
                        .replace(['-', '_'], "x")
                })
            })?;
            let vault = vault::Vault::open(&config.data_dir)?;
            Ok((db, initial, instance, vault))
        })
        .await
        .map_err(|e| StartError::Task(e.to_string()))??;
    if let Some(path) = initial_admin {
        tracing::warn!(
            "created the first account, 'admin'; its password is in {} (readable only by this user)",
            path.display()
        );
    }
    Ok((db, instance, vault))
}

/// Finds the GPUs (NVML is opened on a blocking thread) and starts sampling them.
async fn start_telemetry(config: &Arc<Config>) -> Result<gpu::telemetry::Telemetry, StartError> {
    let config = config.clone();
    let telemetry = tokio::task::spawn_blocking(move || {
        let inventory = gpu::inventory_from_config(&config);
        gpu::telemetry::Telemetry::start(inventory, config.gpu.sample_interval)
    })
    .await
    .map_err(|e| StartError::Task(e.to_string()))?;
    tracing::info!(
        backend = telemetry.inventory().backend(),
        gpus = telemetry.uuids().len(),
        "GPU inventory"
    );
    Ok(telemetry)
}

/// The HTTP server: the route table behind the middleware, on `listener`.
fn serve(
    listener: TcpListener,
    state: aw::Data<web::AppState>,
    proxy: NotebookProxy,
) -> Result<actix_web::dev::Server, StartError> {
    let NotebookProxy {
        credentials,
        proxy_state,
        ..
    } = proxy;
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(proxy_state.clone())
            .app_data(credentials.clone())
            .app_data(aw::Data::new(proxy::UpstreamClient::default()))
            .app_data(web::pages::form_config())
            .app_data(web::pages::json_config())
            .app_data(web::pages::query_config())
            .app_data(web::pages::path_config())
            .wrap(from_fn(web::middleware::refuse_writes_when_full))
            .wrap(from_fn(web::middleware::require_csrf))
            .wrap(from_fn(web::middleware::refuse_stray_upgrades))
            .wrap(from_fn(web::middleware::refuse_notebook_origins))
            .wrap(from_fn(web::middleware::refuse_duplicate_cookies))
            .wrap(from_fn(web::middleware::security_headers))
            .wrap(from_fn(web::middleware::log_requests))
            .configure(web::routes)
            .default_service(aw::to(web::pages::not_found))
    })
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(5)
    .run())
}

/// The tasks that keep house while the server runs: the systemd watchdog, credential
/// changes made by the CLI (another process; they reach open WebSockets within 1 s), and
/// pruning expired sessions.
fn housekeeping(db: &db::Db, accounts: &auth::Accounts) -> Vec<tokio::task::JoinHandle<()>> {
    let prune = accounts.clone();
    vec![
        tokio::spawn(platform::systemd::watchdog(db.clone())),
        tokio::spawn(
            accounts
                .clone()
                .watch_other_processes(std::time::Duration::from_secs(1)),
        ),
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                if let Err(e) = prune.prune().await {
                    tracing::warn!(error = %e, "pruning sessions failed");
                }
            }
        }),
    ]
}

/// Notebox's components, each built once from small clonable handles (the database, the
/// config, the container engine, GPU telemetry, metrics, the webhook, notebook events)
/// and handed to whoever needs it. Nothing reaches one through another.
struct Components {
    config: Arc<Config>,
    engine: containers::Engine,
    events: notebooks::Events,
    metrics: platform::metrics::Metrics,
    telemetry: gpu::telemetry::Telemetry,
    tracker: Arc<idle::Tracker>,
    reconciler: notebooks::Reconciler,
    idle: idle::IdleMonitor,
    notebooks: notebooks::Notebooks,
    shares: share::Shares,
    gpu_map: notebooks::GpuMap,
    usage: usage::UsageReports,
    vault: vault::Vault,
    secrets: secrets::Secrets,
    environments: environments::Environments,
    jobs: jobs::Jobs,
    storage: storage::Measurer,
}

impl Components {
    /// Must run on the tokio runtime (the webhook starts its delivery task).
    fn build(
        db: &db::Db,
        config: &Arc<Config>,
        instance: String,
        telemetry: gpu::telemetry::Telemetry,
        vault: vault::Vault,
    ) -> Components {
        let engine: containers::Engine = Arc::new(containers::docker::DockerBackend::new(
            &config.docker.socket,
            &instance,
        ));
        let events = notebooks::Events::default();
        let metrics = platform::metrics::Metrics::default();
        let webhook = platform::webhook::Webhook::start(&config.webhook.url);
        let storage = storage::Measurer::new(db.clone(), config.clone(), webhook.clone());
        let tracker = idle_tracker(config);
        let secrets = secrets::Secrets::new(db.clone(), vault.clone());
        let reconciler = notebooks::Reconciler::new(notebooks::reconciler::ReconcilerParts {
            db: db.clone(),
            config: config.clone(),
            engine: engine.clone(),
            telemetry: telemetry.clone(),
            metrics: metrics.clone(),
            webhook: webhook.clone(),
            events: events.clone(),
            secrets: secrets.clone(),
            instance,
        });
        let idle = idle::IdleMonitor::new(idle::IdleParts {
            db: db.clone(),
            config: config.clone(),
            engine: engine.clone(),
            telemetry: telemetry.clone(),
            tracker: tracker.clone(),
            webhook,
            reclaimer: Arc::new(reconciler.clone()),
        });
        let notebooks = notebooks::Notebooks::new(notebooks::service::NotebooksParts {
            db: db.clone(),
            config: config.clone(),
            engine: engine.clone(),
            telemetry: telemetry.clone(),
            reconciler: reconciler.clone(),
            tracker: tracker.clone(),
            idle: idle.clone(),
        });
        Components {
            environments: environments::Environments::new(environments::EnvironmentsParts {
                db: db.clone(),
                config: config.clone(),
                engine: engine.clone(),
                vault: vault.clone(),
            }),
            jobs: jobs::Jobs::new(jobs::JobsParts {
                db: db.clone(),
                config: config.clone(),
                telemetry: telemetry.clone(),
                notebooks: notebooks.clone(),
                reconciler: reconciler.clone(),
            }),
            shares: share::Shares::new(
                db.clone(),
                config.clone(),
                events.clone(),
                notebooks.clone(),
            ),
            gpu_map: notebooks::GpuMap::new(
                db.clone(),
                config.clone(),
                telemetry.clone(),
                tracker.clone(),
            ),
            usage: usage::UsageReports::new(db.clone(), config.clone()),
            storage,
            config: config.clone(),
            engine,
            events,
            metrics,
            telemetry,
            tracker,
            reconciler,
            idle,
            notebooks,
            vault,
            secrets,
        }
    }

    /// What the pages and the API reach.
    fn app_state(
        &self,
        db: &db::Db,
        accounts: &auth::Accounts,
        sites: Arc<proxy::Sites>,
        oidc: directory::oidc::OidcProviders,
    ) -> web::AppState {
        web::AppState {
            config: self.config.clone(),
            db: db.clone(),
            accounts: accounts.clone(),
            notebooks: self.notebooks.clone(),
            shares: self.shares.clone(),
            gpu_map: self.gpu_map.clone(),
            usage: self.usage.clone(),
            reconciler: self.reconciler.clone(),
            telemetry: self.telemetry.clone(),
            metrics: self.metrics.clone(),
            vault: self.vault.clone(),
            secrets: self.secrets.clone(),
            environments: self.environments.clone(),
            jobs: self.jobs.clone(),
            pending_launches: Default::default(),
            disk: disk::DiskWatch::new(&self.config.data_dir, self.config.storage.min_free),
            sites,
            oidc,
            reservations: crate::sharing::reservations::Reservations::new(
                db.clone(),
                self.config.clone(),
                self.telemetry.clone(),
            ),
        }
    }

    /// Account changes reach notebooks: the directory's stops (an account it disabled, a
    /// group left) and the CLI's (`user disable`, another process: seen through the
    /// credentials epoch) are in the database; every change wakes the reconciler at once.
    /// With LDAP, accounts are checked every `[auth] directory_refresh`.
    fn follow_accounts(&self, accounts: &auth::Accounts) -> Vec<tokio::task::JoinHandle<()>> {
        let mut changes = accounts.events().subscribe();
        let reconciler = self.reconciler.clone();
        let mut tasks = vec![tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                reconciler.wake();
            }
        })];
        if accounts.ldap().is_some() {
            let every = self.config.auth.directory_refresh;
            tasks.push(tokio::spawn(
                accounts.clone().refresh_directory_every(every),
            ));
        }
        tasks
    }

    /// A stopped notebook's owner is measured soon: what it wrote is at rest.
    fn measure_after_stops(&self) -> tokio::task::JoinHandle<()> {
        let mut events = self.events.subscribe();
        let measurer = self.storage.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(notebooks::NotebookEvent::Stopped { notebook_id }) => {
                        measurer.notebook_stopped(notebook_id);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    /// What the proxy needs of the rest of Notebox.
    fn proxy_handles(&self) -> proxy::ProxyHandles {
        proxy::ProxyHandles {
            config: self.config.clone(),
            engine: self.engine.clone(),
            tracker: self.tracker.clone(),
            metrics: self.metrics.clone(),
            reconciler: self.reconciler.clone(),
            events: self.events.clone(),
        }
    }
}

/// What counts as busy for the idle monitor, from `[notebooks]`.
fn idle_tracker(config: &Config) -> Arc<idle::Tracker> {
    Arc::new(idle::Tracker::new(idle::Thresholds {
        gpu_percent: config.notebooks.busy_gpu_percent,
        cpu_percent: config.notebooks.busy_cpu_percent,
    }))
}

/// The notebook proxy, its listeners, and the credential resolver the pages share with it.
struct NotebookProxy {
    credentials: aw::Data<proxy::Credentials>,
    proxy_state: aw::Data<proxy::ProxyState>,
    sites: Arc<proxy::Sites>,
}

impl NotebookProxy {
    fn wire(
        config: &Config,
        accounts: &auth::Accounts,
        db: &db::Db,
        handles: proxy::ProxyHandles,
        local: std::net::SocketAddr,
    ) -> NotebookProxy {
        // Where notebooks are served: built once, here.
        let origins = proxy::Origins::new(
            config.notebooks.origin,
            config.notebooks.origin_ports,
            &config.notebooks.origin_domain,
        );
        let credentials = aw::Data::new(proxy::Credentials::new(accounts.clone()));
        let proxy_state = aw::Data::new(proxy::ProxyState::new(
            credentials.get_ref().clone(),
            db.clone(),
            handles,
            origins,
            local.port(),
        ));
        let sites = Arc::new(proxy::Sites::new(
            proxy_state.clone(),
            web::notebook_site::notebook_port_app(proxy_state.clone()),
            local.ip(),
            db.clone(),
            config.notebooks.max_running_per_user,
        ));
        NotebookProxy {
            credentials,
            proxy_state,
            sites,
        }
    }
}

/// Docker bind mounts need absolute paths; the default data dir is relative.
fn absolute(path: &std::path::Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path).components().collect())
        .unwrap_or_else(|_| path.to_path_buf())
}
