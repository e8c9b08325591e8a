//! Notebooks on origins of their own: with `origin = "ports"` each running notebook gets a
//! listener on a port of `notebooks.origin_ports` for as long as it runs; with
//! `subdomains` Notebox's listener routes `{id}.{domain}` here by its `Host`. Either way a
//! notebook's origin serves only that notebook (`/nb/{id}/…`), the entry handshake
//! (`/__notebox/enter`) and Notebox's static files — nothing of Notebox's pages or API
//! (`notebook_site`). This file opens and closes the ports; `site_workers` serves them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest};
use tokio::sync::watch;

use crate::config::OriginMode;
use crate::db::notebooks as q;
use crate::db::origin_ports::{self, Claim};
use crate::db::Db;

use super::origin::{port_capacity_warning, Origins};
use super::site_workers::{SiteApp, SiteOf, SiteWorkers};
use super::state::ProxyState;

/// A notebook's listener.
struct Served {
    port: u16,
    bound_at: Instant,
    accept: tokio::task::JoinHandle<()>,
    /// Dropped to close every connection of the port.
    close: watch::Sender<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(
        "no notebook port is free for you: each port of {0} is in use or belongs to another \
         member; stop one of your notebooks, or ask the admin to widen notebooks.origin_ports"
    )]
    NoFreePort(crate::config::PortRange),
    #[error("the notebook is not running (any more)")]
    Gone,
    #[error("cannot serve the notebook on its own port: {0}")]
    Io(#[from] std::io::Error),
}

/// The notebook listeners, bound while their notebooks run.
pub struct Sites {
    /// The address Notebox's own listener is on (notebook ports use the same).
    bind_ip: IpAddr,
    db: Db,
    proxy: web::Data<ProxyState>,
    servers: Mutex<HashMap<String, Served>>,
    /// What every notebook port serves (composed by the web layer).
    app: SiteApp,
    /// The threads that serve every notebook port, started with the first port.
    workers: OnceLock<SiteWorkers>,
    /// Notebox's own runtime: listeners accept there, whichever worker bound them.
    rt: tokio::runtime::Handle,
    /// `notebooks.max_running_per_user`: how many ports each member may need at once.
    max_running_per_user: u32,
}

impl Sites {
    pub fn new(
        proxy: web::Data<ProxyState>,
        app: SiteApp,
        bind_ip: IpAddr,
        db: Db,
        max_running_per_user: u32,
    ) -> Sites {
        Sites {
            max_running_per_user,
            bind_ip,
            db,
            proxy,
            app,
            servers: Mutex::new(HashMap::new()),
            rt: tokio::runtime::Handle::current(),
            workers: OnceLock::new(),
        }
    }

    pub fn origins(&self) -> &Origins {
        self.proxy.origins()
    }

    /// The port a notebook is served on right now.
    pub fn port_of(&self, notebook_id: &str) -> Option<u16> {
        self.servers.lock().ok()?.get(notebook_id).map(|s| s.port)
    }

    /// The notebook's origin as a browser that reached Notebox at `scheme://host` sees it;
    /// `None` while a notebook port is not bound.
    pub fn notebook_origin(&self, notebook_id: &str, scheme: &str, host: &str) -> Option<String> {
        self.origins()
            .notebook_origin(notebook_id, scheme, host, self.port_of(notebook_id))
    }

    /// Fills in a notebook's `jupyter_url` for the caller of `req` (while it runs and, with
    /// `ports`, has its port).
    pub fn fill_jupyter_url(&self, req: &HttpRequest, nb: &mut crate::model::wire::Notebook) {
        if nb.state != crate::model::NotebookState::Running {
            return;
        }
        let info = req.connection_info();
        nb.jupyter_url = self
            .notebook_origin(&nb.id, info.scheme(), info.host())
            .map(|origin| format!("{origin}{}", nb.url));
    }

    /// With `ports`: why the range may be too small for the members (see
    /// `origin::port_capacity_warning`), for the admin pages.
    pub async fn port_capacity_warning(&self) -> Option<String> {
        let origins = self.origins();
        if origins.mode != OriginMode::Ports {
            return None;
        }
        let (first, last) = (origins.ports.first, origins.ports.last);
        match self
            .db
            .call(move |c| origin_ports::usage(c, first, last))
            .await
        {
            Ok(usage) => port_capacity_warning(origins.ports, usage, self.max_running_per_user),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read which member owns which port");
                None
            }
        }
    }

    /// Serves a running notebook on its own port (from `ports`), binding one if needed. Ports
    /// belong to members: the notebook gets the port it had last when that is free, else
    /// another free port of its member's (least recently used first), else a port nobody
    /// owns yet, which becomes its member's — never a port that served another member.
    pub async fn ensure(&self, notebook_id: &str) -> Result<u16, SiteError> {
        if let Some(port) = self.port_of(notebook_id) {
            return Ok(port);
        }
        let (owner_id, candidates) = self.candidates(notebook_id).await?;
        for port in candidates {
            if let Some(port) = self.try_port(notebook_id, owner_id, port).await? {
                return Ok(port);
            }
        }
        Err(SiteError::NoFreePort(self.origins().ports))
    }

    /// The notebook's member, and the ports it may have, best first. A notebook that is
    /// not running (any more) gets none: a list of running notebooks taken before a stop,
    /// or a page opened as it stopped, must not open its port again.
    async fn candidates(&self, notebook_id: &str) -> Result<(i64, Vec<u16>), SiteError> {
        let (first, last) = (self.origins().ports.first, self.origins().ports.last);
        let id = notebook_id.to_string();
        let found = self
            .db
            .call(move |c| {
                let Some(row) = q::by_id(c, &id)? else {
                    return Ok(None);
                };
                let running = row.state == crate::model::NotebookState::Running
                    && row.desired_state == crate::model::DesiredState::Running;
                if !running {
                    return Ok(None);
                }
                let ports = origin_ports::candidates(c, &id, row.owner_id, first, last)?;
                Ok(Some((row.owner_id, ports)))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        found.ok_or(SiteError::Gone)
    }

    /// Serves the notebook on `port` if it can be had: bound, then claimed for the member.
    /// `None` when the port is not to be had (try the next).
    async fn try_port(
        &self,
        notebook_id: &str,
        owner_id: i64,
        port: u16,
    ) -> Result<Option<u16>, SiteError> {
        let listener = {
            let servers = self.listeners()?;
            match slot(&servers, notebook_id, port) {
                Slot::Served(port) => return Ok(Some(port)),
                Slot::Busy => return Ok(None),
                Slot::Free => {}
            }
            // Something else on the machine may hold it: try the next.
            match std::net::TcpListener::bind((self.bind_ip, port)) {
                Ok(listener) => listener,
                Err(_) => return Ok(None),
            }
        };
        let id = notebook_id.to_string();
        let claim = self
            .db
            .call(move |c| origin_ports::claim(c, port, owner_id, &id))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let inherited = match claim {
            Claim::Taken { previous } => previous.is_some(),
            // Another member's since the candidates were read: never theirs.
            Claim::Theirs => return Ok(None),
        };
        // Looked at again: a concurrent call may have served the notebook (this
        // listener is then dropped) or taken the port meanwhile.
        let mut servers = self.listeners()?;
        match slot(&servers, notebook_id, port) {
            Slot::Served(port) => return Ok(Some(port)),
            Slot::Busy => return Ok(None),
            Slot::Free => {}
        }
        let served = self.serve(notebook_id, port, listener, inherited)?;
        servers.insert(notebook_id.to_string(), served);
        drop(servers);
        tracing::info!(notebook = %notebook_id, port, inherited, "serving the notebook on its own port");
        Ok(Some(port))
    }

    fn listeners(&self) -> Result<MutexGuard<'_, HashMap<String, Served>>, SiteError> {
        self.servers
            .lock()
            .map_err(|_| SiteError::Io(std::io::Error::other("notebook listeners lock poisoned")))
    }

    /// Accepts connections on a notebook's port (a task on Notebox's runtime) and deals
    /// them to the site workers.
    fn serve(
        &self,
        notebook_id: &str,
        port: u16,
        listener: std::net::TcpListener,
        inherited: bool,
    ) -> Result<Served, std::io::Error> {
        let workers = match self.workers.get() {
            Some(w) => w,
            None => {
                let started = SiteWorkers::start(&self.app)?;
                self.workers.get_or_init(|| started)
            }
        };
        let (close, closed) = watch::channel(());
        let site = Arc::new(SiteOf {
            id: notebook_id.to_string(),
            inherited,
            closed,
        });
        listener.set_nonblocking(true)?;
        let listener = {
            let _in_notebox_runtime = self.rt.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let accept = self.rt.spawn(workers.clone().accept(listener, port, site));
        Ok(Served {
            port,
            bound_at: Instant::now(),
            accept,
            close,
        })
    }

    /// Closes a notebook's port, and every connection on it (its WebSockets end).
    async fn close(&self, notebook_id: &str) {
        let served = self
            .servers
            .lock()
            .ok()
            .and_then(|mut s| s.remove(notebook_id));
        if let Some(served) = served {
            served.accept.abort();
            // The listener is dropped with the task: the port is closed once this returns.
            let _ = served.accept.await;
            drop(served.close);
            tracing::info!(notebook = %notebook_id, port = served.port, "notebook port closed");
        }
    }

    /// Brings the listeners in line with the notebooks that run.
    pub async fn sync(&self) {
        if self.origins().mode != OriginMode::Ports {
            return;
        }
        let listed_at = Instant::now();
        let running = match self.db.call(|c| q::running(c)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list running notebooks for their ports");
                return;
            }
        };
        let ids: Vec<String> = running.into_iter().map(|n| n.id).collect();
        let gone: Vec<String> = self
            .servers
            .lock()
            .map(|s| {
                s.iter()
                    // Bound after the list was taken: for a notebook that started since.
                    .filter(|(k, served)| !ids.contains(k) && served.bound_at < listed_at)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in gone {
            self.close(&id).await;
        }
        for id in ids {
            match self.ensure(&id).await {
                Ok(_) => {}
                // Tried again every second until a port of its member's comes free; the
                // member is told when they open it, the admin by the port warning.
                Err(e @ SiteError::NoFreePort(_)) => {
                    tracing::debug!(notebook = %id, error = %e, "no port for the notebook yet")
                }
                // Stopped since the list was taken: its port stays closed.
                Err(SiteError::Gone) => {}
                Err(e) => {
                    tracing::warn!(notebook = %id, error = %e, "cannot serve the notebook on its own port")
                }
            }
        }
    }

    /// Follows the notebooks: a port is opened within a second of a notebook running and
    /// closed within a second of it stopping (a stop also closes it at once).
    pub async fn follow(self: Arc<Self>) {
        if self.origins().mode != OriginMode::Ports {
            return;
        }
        let mut stops = self.proxy.notebook_stops();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                stopped = stops.next() => {
                    if let Some(notebook_id) = stopped {
                        self.close(&notebook_id).await;
                    }
                }
            }
            self.sync().await;
        }
    }

    /// Closes every notebook port (shutdown).
    pub async fn close_all(&self) {
        let ids: Vec<String> = self
            .servers
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            self.close(&id).await;
        }
    }
}

/// A port, seen from a notebook that wants one.
enum Slot {
    /// The notebook is served already, on this port.
    Served(u16),
    /// Another notebook is served on the port.
    Busy,
    Free,
}

fn slot(servers: &HashMap<String, Served>, notebook_id: &str, port: u16) -> Slot {
    if let Some(s) = servers.get(notebook_id) {
        Slot::Served(s.port)
    } else if servers.values().any(|s| s.port == port) {
        Slot::Busy
    } else {
        Slot::Free
    }
}
