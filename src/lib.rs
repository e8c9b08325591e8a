//! Notebox: a lab's own "Gradient Notebooks" on one multi-GPU workstation.
//!
//! `run` is the whole server; the binary and the integration tests both call it.

pub mod activity;
pub mod auth;
pub mod config;
pub mod db;
pub mod doctor;
pub mod error;
pub mod gpu;
pub mod http;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod runtime;
pub mod service;
pub mod share;
pub mod usage;
pub mod web;
pub mod webhook;

/// Where notebooks are served and which cookies are Notebox's: part of the proxy, named
/// `crate::origin` by the pages, `doctor` and the HTTP helpers that read it too.
pub use proxy::origin;

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
    let (db, initial_admin, instance) = {
        let config = config.clone();
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
            Ok((db, initial, instance))
        })
        .await
        .map_err(|e| StartError::Task(e.to_string()))??
    };
    if let Some(path) = initial_admin {
        tracing::warn!(
            "created the first account, 'admin'; its password is in {} (readable only by this user)",
            path.display()
        );
    }
    let accounts = auth::Accounts::new(db.clone(), &config);
    let telemetry = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let inventory = gpu::inventory_from_config(&config);
            gpu::telemetry::Telemetry::start(inventory, config.gpu.sample_interval)
        })
        .await
        .map_err(|e| StartError::Task(e.to_string()))?
    };
    tracing::info!(
        backend = telemetry.inventory().backend(),
        gpus = telemetry.uuids().len(),
        "GPU inventory"
    );
    let runtime = runtime::Runtime::new(db.clone(), config.clone(), instance, telemetry);
    let reconciler = tokio::spawn(runtime.clone().run_reconciler());
    let sampler = tokio::spawn(runtime.clone().run_activity_sampler());
    let notebooks = runtime::Notebooks::new(runtime.clone());
    let shares = share::Shares::new(runtime.clone(), notebooks.clone());
    let previews = tokio::spawn(shares.clone().follow_stops());
    let local = listener.local_addr()?;
    let NotebookProxy {
        credentials,
        proxy_state,
        sites,
    } = NotebookProxy::wire(&config, &accounts, &db, &runtime, local);
    let site_follower = tokio::spawn(sites.clone().follow());
    let state = aw::Data::new(web::AppState {
        config: config.clone(),
        db: db.clone(),
        accounts: accounts.clone(),
        runtime: runtime.clone(),
        notebooks: notebooks.clone(),
        shares: shares.clone(),
        gpu_map: runtime::GpuMap::new(runtime.clone()),
        usage: runtime::UsageReports::new(runtime.clone()),
        sites: sites.clone(),
    });

    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(proxy_state.clone())
            .app_data(credentials.clone())
            .app_data(aw::Data::new(proxy::UpstreamClient::default()))
            .app_data(web::pages::form_config())
            .app_data(web::pages::json_config())
            .app_data(web::pages::query_config())
            .app_data(web::pages::path_config())
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
    .run();
    let handle = server.handle();
    // The database is open and migrated and the listener is bound: ready.
    service::notify_ready();
    let watchdog = tokio::spawn(service::watchdog(db.clone()));

    // A password changed by the CLI (another process) reaches open WebSockets within 1 s.
    let credential_watch = tokio::spawn(
        accounts
            .clone()
            .watch_other_processes(std::time::Duration::from_secs(1)),
    );
    let housekeeping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(e) = accounts.prune().await {
                tracing::warn!(error = %e, "pruning sessions failed");
            }
        }
    });

    tokio::pin!(shutdown);
    let result = tokio::select! {
        r = server => r.map_err(StartError::from),
        _ = &mut shutdown => {
            tracing::info!("shutting down");
            service::notify_stopping();
            handle.stop(true).await;
            Ok(())
        }
    };
    site_follower.abort();
    sites.close_all().await;
    housekeeping.abort();
    credential_watch.abort();
    previews.abort();
    reconciler.abort();
    sampler.abort();
    watchdog.abort();
    result
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
        runtime: &runtime::Runtime,
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
            runtime.clone(),
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
