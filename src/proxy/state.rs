//! What the proxy holds, and nothing of the web pages: who a credential belongs to, where a
//! notebook runs (with the cache that keeps the database off the hot path), where notebooks
//! are served, and the proxy's few calls into the notebook runtime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;

use crate::config::OriginMode;
use crate::db::notebooks::{self as q, ProxyTarget};
use crate::db::Db;
use crate::error::WebError;
use crate::idle::MemberAction;
use crate::model::NotebookState;
use crate::notebooks::NotebookEvent;
use crate::platform::metrics::Metrics;

use super::caller::Credentials;
use super::origin::{split_host, Origins};
use super::request::base_url;

/// How long a routing decision is reused before asking the database again.
const TARGET_CACHE_TTL: Duration = Duration::from_secs(1);

/// What the proxy needs of the rest of Notebox (built in `lib::run`).
pub struct ProxyHandles {
    pub config: std::sync::Arc<crate::config::Config>,
    /// Asked where a notebook runs when the database does not know.
    pub engine: crate::containers::Engine,
    /// Told what members do in their notebooks.
    pub tracker: std::sync::Arc<crate::idle::Tracker>,
    pub metrics: Metrics,
    /// Woken when a notebook's Jupyter stops answering.
    pub reconciler: crate::notebooks::Reconciler,
    /// Where the listeners hear that a notebook stopped.
    pub events: crate::notebooks::Events,
}

/// Everything a proxied request needs. Built once in `lib::run`; Notebox's pages depend on
/// it, not the reverse, so it is mounted on notebooks' own listeners (and origins) too.
pub struct ProxyState {
    credentials: Credentials,
    db: Db,
    handles: ProxyHandles,
    targets: TargetCache,
    origins: Origins,
    /// The port of Notebox's own listener (links back from a notebook's port).
    main_port: u16,
}

impl ProxyState {
    pub fn new(
        credentials: Credentials,
        db: Db,
        handles: ProxyHandles,
        origins: Origins,
        main_port: u16,
    ) -> ProxyState {
        ProxyState {
            credentials,
            db,
            handles,
            targets: TargetCache::default(),
            origins,
            main_port,
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// Notebox's own origin as seen from a request on a notebook's origin: known with
    /// `ports` (same host, Notebox's port), not with `subdomains`.
    pub fn main_url(&self, req: &HttpRequest) -> Option<String> {
        match self.origins.mode {
            OriginMode::Ports => {
                let info = req.connection_info();
                let (host, _) = split_host(info.host());
                Some(format!("{}://{host}:{}", info.scheme(), self.main_port))
            }
            OriginMode::Same => Some(String::new()),
            OriginMode::Subdomains => None,
        }
    }

    /// Where the browser finds a notebook's Jupyter: `/nb/{id}/`, or `/nb/{id}/{key}/` while
    /// its container has a path key (`origin = "ports"`).
    pub async fn browser_base(&self, notebook_id: &str) -> Result<String, WebError> {
        let key = self.target(notebook_id).await?.and_then(|t| t.path_key);
        Ok(base_url(notebook_id, key.as_deref()))
    }

    /// Where a notebook runs and who owns it, from the cache while it is fresh.
    pub async fn target(&self, notebook_id: &str) -> Result<Option<ProxyTarget>, WebError> {
        if let Some(t) = self.targets.get(notebook_id) {
            return Ok(Some(t));
        }
        let id = notebook_id.to_string();
        let mut found = self.db.call(move |c| q::proxy_target(c, &id)).await?;
        // A notebook adopted from before notebox knew container addresses: ask Docker once.
        if let Some(t) = found.as_mut() {
            if t.state == NotebookState::Running && t.container_ip.is_none() {
                t.container_ip = self.container_ip(notebook_id).await;
            }
        }
        if let Some(t) = &found {
            self.targets.put(notebook_id, t.clone());
        }
        Ok(found)
    }

    /// Forgets a notebook's routing (Jupyter did not answer: its state may have changed).
    pub fn forget_target(&self, notebook_id: &str) {
        self.targets.forget(notebook_id);
    }
}

/// What the proxy asks of the rest of Notebox: every use of its handles is in this block.
impl ProxyState {
    /// A running notebook's container address, asked of the engine (and remembered).
    async fn container_ip(&self, notebook_id: &str) -> Option<String> {
        let h = &self.handles;
        crate::jupyter::locate(&*h.engine, &self.db, &h.config.docker.network, notebook_id).await
    }

    /// Jupyter did not answer: the reconciler looks at the notebooks now.
    pub fn wake_reconciler(&self) {
        self.handles.reconciler.wake();
    }

    /// The member did something in the notebook: its idle clock starts again.
    pub fn member_acted(&self, notebook_id: &str, action: MemberAction) {
        self.handles
            .tracker
            .member_acted(notebook_id, action, crate::clock::now());
    }

    /// The counters of /metrics (proxied requests, open WebSockets).
    pub fn metrics(&self) -> &Metrics {
        &self.handles.metrics
    }

    /// The notebooks that stop from now on, for the notebook listeners.
    pub fn notebook_stops(&self) -> NotebookStops {
        NotebookStops(self.handles.events.subscribe())
    }
}

/// The word that a notebook stopped.
pub struct NotebookStops(tokio::sync::broadcast::Receiver<NotebookEvent>);

impl NotebookStops {
    /// The next notebook that stopped; `None` when some were missed (the listeners catch up
    /// from the database) or none can come any more.
    pub async fn next(&mut self) -> Option<String> {
        match self.0.recv().await {
            Ok(NotebookEvent::Stopped { notebook_id }) => Some(notebook_id),
            Err(_) => None,
        }
    }
}

/// Routing decisions by notebook, each reused for `TARGET_CACHE_TTL`.
#[derive(Default)]
struct TargetCache {
    targets: Mutex<HashMap<String, (ProxyTarget, Instant)>>,
}

impl TargetCache {
    fn get(&self, notebook_id: &str) -> Option<ProxyTarget> {
        let map = self.targets.lock().ok()?;
        let (t, at) = map.get(notebook_id)?;
        (at.elapsed() < TARGET_CACHE_TTL).then(|| t.clone())
    }

    fn put(&self, notebook_id: &str, target: ProxyTarget) {
        if let Ok(mut map) = self.targets.lock() {
            map.insert(notebook_id.to_string(), (target, Instant::now()));
        }
    }

    fn forget(&self, notebook_id: &str) {
        if let Ok(mut map) = self.targets.lock() {
            map.remove(notebook_id);
        }
    }
}
