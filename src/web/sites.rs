//! Notebooks on origins of their own: with `origin = "ports"` each running notebook gets a
//! listener on a port of `notebooks.origin_ports` for as long as it runs; with
//! `subdomains` Notebox's listener routes `{id}.{domain}` here by its `Host`. Either way a
//! notebook's origin serves only that notebook (`/nb/{id}/…`), the entry handshake
//! (`/__notebox/enter`) and Notebox's static files — nothing of Notebox's pages or API.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_http::{HttpService, Protocol};
use actix_service::{map_config, Service, ServiceFactory};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{AppConfig, Extensions};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpResponse};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};

use crate::config::OriginMode;
use crate::db::notebooks as q;
use crate::db::Db;
use crate::error::{PageError, WebError};
use crate::http::{encode_segment, is_https, location, urlencode};
use crate::origin::{notebook_cookie_name, Origins};
use crate::proxy::{ProxyState, Site, UpstreamClient};

/// Where a code from Notebox is exchanged for the notebook's cookie, on the notebook's
/// origin (outside `/nb/{id}/`, so it can never shadow a path of Jupyter's).
pub const ENTER_PATH: &str = "/__notebox/enter";

/// The notebook a listener serves (one per notebook port); every connection accepted on
/// the port carries it (the request's connection data).
struct SiteOf {
    id: String,
    /// The port was another notebook's before: what that notebook's pages left in the
    /// browser for this origin (storage, caches) is cleared when the member enters.
    inherited: bool,
    /// Ends (its sender is dropped) when the port closes: every connection accepted on it
    /// ends with it, WebSockets included.
    closed: watch::Receiver<()>,
}

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
    #[error("the notebook no longer exists")]
    Gone,
    #[error("cannot serve the notebook on its own port: {0}")]
    Io(#[from] std::io::Error),
}

/// The notebook listeners, bound while their notebooks run.
pub struct Sites {
    origins: Origins,
    /// The address Notebox's own listener is on (notebook ports use the same).
    bind_ip: IpAddr,
    db: Db,
    proxy: web::Data<ProxyState>,
    servers: Mutex<HashMap<String, Served>>,
    /// The threads that serve every notebook port, started with the first port.
    workers: OnceLock<SiteWorkers>,
    /// Notebox's own runtime: listeners accept there, whichever worker bound them.
    rt: tokio::runtime::Handle,
    /// `notebooks.max_running_per_user`: how many ports each member may need at once.
    max_running_per_user: u32,
}

impl Sites {
    pub fn new(
        origins: Origins,
        bind_ip: IpAddr,
        db: Db,
        proxy: web::Data<ProxyState>,
        max_running_per_user: u32,
    ) -> Sites {
        Sites {
            max_running_per_user,
            origins,
            bind_ip,
            db,
            proxy,
            servers: Mutex::new(HashMap::new()),
            rt: tokio::runtime::Handle::current(),
            workers: OnceLock::new(),
        }
    }

    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// The port a notebook is served on right now.
    pub fn port_of(&self, notebook_id: &str) -> Option<u16> {
        self.servers.lock().ok()?.get(notebook_id).map(|s| s.port)
    }

    /// The notebook's origin as a browser that reached Notebox at `scheme://host` sees it;
    /// `None` while a notebook port is not bound.
    pub fn notebook_origin(&self, notebook_id: &str, scheme: &str, host: &str) -> Option<String> {
        self.origins
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
        if self.origins.mode != OriginMode::Ports {
            return None;
        }
        let (first, last) = (self.origins.ports.first, self.origins.ports.last);
        match self
            .db
            .call(move |c| crate::db::origin_ports::usage(c, first, last))
            .await
        {
            Ok(usage) => crate::origin::port_capacity_warning(
                self.origins.ports,
                usage,
                self.max_running_per_user,
            ),
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
        let (first, last) = (self.origins.ports.first, self.origins.ports.last);
        let id = notebook_id.to_string();
        let found = self
            .db
            .call(move |c| {
                let Some(row) = q::by_id(c, &id)? else {
                    return Ok(None);
                };
                let ports = crate::db::origin_ports::candidates(c, &id, row.owner_id, first, last)?;
                Ok(Some((row.owner_id, ports)))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let Some((owner_id, candidates)) = found else {
            return Err(SiteError::Gone);
        };
        for port in candidates {
            let listener = {
                let servers = self.listeners()?;
                match slot(&servers, notebook_id, port) {
                    Slot::Served(port) => return Ok(port),
                    Slot::Busy => continue,
                    Slot::Free => {}
                }
                // Something else on the machine may hold it: try the next.
                match std::net::TcpListener::bind((self.bind_ip, port)) {
                    Ok(listener) => listener,
                    Err(_) => continue,
                }
            };
            let id = notebook_id.to_string();
            let claim = self
                .db
                .call(move |c| crate::db::origin_ports::claim(c, port, owner_id, &id))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let inherited = match claim {
                crate::db::origin_ports::Claim::Taken { previous } => previous.is_some(),
                // Another member's since the candidates were read: never theirs.
                crate::db::origin_ports::Claim::Theirs => continue,
            };
            // Looked at again: a concurrent call may have served the notebook (this
            // listener is then dropped) or taken the port meanwhile.
            let mut servers = self.listeners()?;
            match slot(&servers, notebook_id, port) {
                Slot::Served(port) => return Ok(port),
                Slot::Busy => continue,
                Slot::Free => {}
            }
            let served = self.serve(notebook_id, port, listener, inherited)?;
            servers.insert(notebook_id.to_string(), served);
            drop(servers);
            tracing::info!(notebook = %notebook_id, port, inherited, "serving the notebook on its own port");
            return Ok(port);
        }
        Err(SiteError::NoFreePort(self.origins.ports))
    }

    fn listeners(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Served>>, SiteError> {
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
                let started = SiteWorkers::start(self.proxy.clone())?;
                self.workers.get_or_init(|| started)
            }
        };
        let queues = workers.clone();
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
        let accept = self.rt.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        // Small answers and WebSocket frames go out at once (as actix does).
                        let _ = stream.set_nodelay(true);
                        match stream.into_std() {
                            Ok(stream) => queues.deal(Accepted {
                                stream,
                                peer,
                                site: site.clone(),
                            }),
                            Err(e) => tracing::debug!(error = %e, "cannot hand over a connection"),
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors, say: wait rather than spin.
                        tracing::warn!(port, error = %e, "cannot accept on a notebook port");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
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
        if self.origins.mode != OriginMode::Ports {
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
                Err(e) => {
                    tracing::warn!(notebook = %id, error = %e, "cannot serve the notebook on its own port")
                }
            }
        }
    }

    /// Follows the notebooks: a port is opened within a second of a notebook running and
    /// closed within a second of it stopping (a stop also closes it at once).
    pub async fn follow(self: Arc<Self>, runtime: crate::runtime::Runtime) {
        if self.origins.mode != OriginMode::Ports {
            return;
        }
        let mut events = runtime.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                event = events.recv() => {
                    if let Ok(crate::runtime::RuntimeEvent::Stopped { notebook_id }) = event {
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

/// Whether a request on Notebox's listener is for a notebook's subdomain.
pub fn is_notebook_host(ctx: &actix_web::guard::GuardContext<'_>) -> bool {
    let Some(proxy) = ctx.app_data::<web::Data<ProxyState>>() else {
        return false;
    };
    if proxy.origins().mode != OriginMode::Subdomains {
        return false;
    }
    // The same source as `crate::http::request_host`: the Host the client sent.
    let host = ctx
        .head()
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| ctx.head().uri.host().map(str::to_string))
        .unwrap_or_default();
    proxy.origins().notebook_of_host(&host).is_some()
}

/// Everything a notebook's origin answers.
pub async fn notebook_site(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<ProxyState>,
    upstream: web::Data<UpstreamClient>,
) -> HttpResponse {
    let site = req.conn_data::<Arc<SiteOf>>().cloned();
    let id = match &site {
        Some(site) => site.id.clone(),
        None => match proxy
            .origins()
            .notebook_of_host(&crate::http::request_host(&req))
        {
            Some(id) => id,
            None => return not_here(),
        },
    };
    let path = req.path();
    if path == ENTER_PATH {
        let inherited = site.is_some_and(|s| s.inherited);
        return enter(&req, &proxy, &id, inherited).await;
    }
    let base = format!("/nb/{id}/");
    if path.starts_with(&base) {
        return crate::proxy::serve(
            req,
            payload,
            proxy,
            upstream,
            id.clone(),
            Site::Notebook(id),
        )
        .await;
    }
    if path == "/" || path == base.trim_end_matches('/') {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/nb/{}/lab", encode_segment(&id))))
            .finish();
    }
    if let Some(file) = path.strip_prefix("/static/") {
        return super::assets::serve_static(req.clone(), web::Path::from(file.to_string())).await;
    }
    not_here()
}

fn not_here() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("This address serves one notebook only, under /nb/{id}/; Notebox's own pages are on its main address.\n")
}

#[derive(Deserialize)]
struct EnterQuery {
    #[serde(default)]
    code: String,
}

/// `GET /__notebox/enter?code=…` on the notebook's origin: the code for this notebook,
/// once, within 30 s, from a session that still lives → this notebook's own cookie, and on
/// to where the member was going.
async fn enter(req: &HttpRequest, proxy: &ProxyState, id: &str, inherited: bool) -> HttpResponse {
    // Codes come from Notebox (the same site); another site sending the member here with a
    // code (one of its own member's) is refused. So is any context but a top-level
    // navigation: a frame, a fetch or a script of a page already on this origin (another
    // notebook's that had the port) must never get the cookie set for it.
    let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes());
    let cross_site = header("sec-fetch-site") == Some(b"cross-site");
    let top_level = header("sec-fetch-dest").is_none_or(|d| d == b"document")
        && header("sec-fetch-mode").is_none_or(|m| m == b"navigate");
    if !top_level {
        return HttpResponse::Forbidden()
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body("A notebook is entered only by opening it in a tab or window, not in a frame or by a script.\n");
    }
    let code = web::Query::<EnterQuery>::from_query(req.query_string())
        .ok()
        .map(|q| q.into_inner().code)
        .filter(|_| !cross_site)
        .unwrap_or_default();
    let entered = match proxy.credentials().accounts().enter(&code, id).await {
        Ok(e) => e,
        Err(e) => {
            use actix_web::ResponseError;
            return PageError(WebError::from(e)).error_response();
        }
    };
    let Some((value, entry)) = entered else {
        let back = proxy
            .main_url(req)
            .map(|m| format!("{m}/notebooks/{}", encode_segment(id)));
        let body = match back {
            Some(url) => format!(
                "This link to open the notebook was used already or has expired: links from \
                 Notebox work once, for 30 seconds. Open the notebook again from Notebox: {url}\n"
            ),
            None => "This link to open the notebook was used already or has expired: links \
                     from Notebox work once, for 30 seconds. Open the notebook again from \
                     Notebox.\n"
                .to_string(),
        };
        return HttpResponse::Forbidden()
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .body(body);
    };
    let base = match proxy.browser_base(id).await {
        Ok(base) => base,
        Err(e) => {
            use actix_web::ResponseError;
            return PageError(e).error_response();
        }
    };
    let https = is_https(req);
    // `__Host-` cookies must have Path=/; without TLS the path confines it to the notebook
    // (and its path key). Either way the proxy takes it only under the path key.
    let path = if https { "/".to_string() } else { base.clone() };
    let cookie = Cookie::build(notebook_cookie_name(id, https), value)
        .path(path)
        .http_only(true)
        .secure(https)
        .same_site(SameSite::Lax)
        .finish();
    let mut response = HttpResponse::SeeOther();
    response
        .insert_header((header::LOCATION, location(&format!("{base}{}", entry.path))))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .cookie(cookie);
    if inherited {
        // Honoured on secure contexts (https, localhost).
        response.insert_header((
            header::HeaderName::from_static("clear-site-data"),
            "\"cache\", \"storage\"",
        ));
    }
    response.finish()
}

#[derive(askama::Template)]
#[template(path = "notebook_open.html")]
struct OpenConfirmPage<'a> {
    id: &'a str,
    name: &'a str,
}

#[derive(Deserialize)]
pub struct OpenQuery {
    #[serde(default)]
    path: Option<String>,
}

/// `GET /notebooks/{id}/open?path=lab` on Notebox's origin: the member's own running
/// notebook, handed to its origin with a single-use code (or, with `origin = "same"`,
/// straight to `/nb/{id}/…`).
pub async fn open_notebook(
    req: HttpRequest,
    session: super::extract::SessionUser,
    state: web::Data<super::AppState>,
    id: web::Path<String>,
    query: web::Query<OpenQuery>,
) -> Result<HttpResponse, PageError> {
    let id = id.into_inner();
    let nb = state.notebooks.get_notebook(&session.user, &id).await?;
    // Sent here by another origin of the site (a notebook's page, maybe one of an earlier
    // notebook on the same port) or another site, or loaded in a frame or by a script:
    // the member confirms on Notebox's own page first. That page's opener policy cuts a
    // popup off from whoever opened it, so no page can hold a handle on the window the
    // notebook then opens in (and read its URL, path key included).
    let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes());
    let from_elsewhere = matches!(header("sec-fetch-site"), Some(b"same-site" | b"cross-site"))
        || header("sec-fetch-dest").is_some_and(|d| d != b"document");
    if from_elsewhere && nb.state == crate::model::NotebookState::Running {
        return super::pages::html(
            StatusCode::OK,
            OpenConfirmPage {
                id: &nb.id,
                name: &nb.name,
            },
        );
    }
    let path = query.into_inner().path.unwrap_or_else(|| "lab".to_string());
    if !crate::auth::entry::valid_path(&path) {
        return Err(WebError::bad_request(
            "`path` must be a path inside the notebook, like lab or lab/tree/analysis.ipynb",
        )
        .into());
    }
    let page = format!("/notebooks/{}", encode_segment(&id));
    if nb.state != crate::model::NotebookState::Running {
        return Ok(super::pages::see_other(&page));
    }
    let sites = &state.sites;
    let origin = match sites.origins().mode {
        OriginMode::Same => {
            return Ok(super::pages::see_other(&format!(
                "/nb/{}/{path}",
                encode_segment(&id)
            )))
        }
        OriginMode::Ports => {
            sites.ensure(&id).await.map_err(|e| {
                WebError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_notebook_port",
                    e.to_string(),
                )
            })?;
            let info = req.connection_info();
            sites.notebook_origin(&id, info.scheme(), info.host())
        }
        OriginMode::Subdomains => sites.notebook_origin(&id, "https", ""),
    };
    let Some(origin) = origin else {
        return Ok(super::pages::see_other(&page));
    };
    let code = state
        .accounts
        .issue_entry(session.user.id, &session.cookie, &id, &path);
    Ok(HttpResponse::SeeOther()
        .insert_header((
            header::LOCATION,
            location(&format!("{origin}{ENTER_PATH}?code={}", urlencode(&code))),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// A connection accepted on a notebook's port, on its way to a site worker.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    site: Arc<SiteOf>,
}

/// The threads that serve every notebook's port: one per core, at most two (a big download
/// does not stall the rest), each running the notebook site's actix service for every
/// notebook. A running notebook thus costs a listening socket and a task, not a server
/// with threads of its own (docs/PERFORMANCE.md, "Memory").
#[derive(Clone)]
struct SiteWorkers {
    queues: Arc<Vec<mpsc::UnboundedSender<Accepted>>>,
    next: Arc<AtomicUsize>,
}

impl SiteWorkers {
    fn start(proxy: web::Data<ProxyState>) -> Result<SiteWorkers, std::io::Error> {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
        let mut queues = Vec::with_capacity(count);
        for n in 0..count {
            let (tx, rx) = mpsc::unbounded_channel();
            let proxy = proxy.clone();
            std::thread::Builder::new()
                .name(format!("notebook-sites-{n}"))
                .spawn(move || site_worker(proxy, rx))?;
            queues.push(tx);
        }
        Ok(SiteWorkers {
            queues: Arc::new(queues),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Hands a connection to the next worker in turn.
    fn deal(&self, accepted: Accepted) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        if self.queues[n].send(accepted).is_err() {
            tracing::error!("a notebook site worker has stopped; the connection is dropped");
        }
    }
}

/// One site worker: an actix runtime serving the connections dealt to it until Notebox
/// ends (or the port a connection came from closes).
fn site_worker(proxy: web::Data<ProxyState>, mut queue: mpsc::UnboundedReceiver<Accepted>) {
    let rt = match actix_web::rt::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a notebook site worker");
            return;
        }
    };
    rt.block_on(async move {
        let app = App::new()
            .app_data(proxy)
            .app_data(web::Data::new(UpstreamClient::default()))
            .app_data(super::pages::query_config())
            .wrap(from_fn(super::middleware::refuse_stray_upgrades))
            .wrap(from_fn(super::middleware::refuse_duplicate_cookies))
            .wrap(from_fn(super::middleware::security_headers))
            .wrap(from_fn(super::middleware::log_requests))
            .default_service(web::to(notebook_site));
        // As Notebox's own listener: idle keep-alive 5 s, the request head within 5 s.
        let factory = HttpService::build()
            .keep_alive(Duration::from_secs(5))
            .client_request_timeout(Duration::from_secs(5))
            .client_disconnect_timeout(Duration::from_secs(1))
            .on_connect_ext(|io: &SiteStream, data: &mut Extensions| {
                data.insert(io.site.clone());
            })
            .finish(map_config(app, |_| AppConfig::default()));
        let service = match factory.new_service(()).await {
            Ok(s) => std::rc::Rc::new(s),
            Err(e) => {
                tracing::error!(error = ?e, "cannot build the notebook site service");
                return;
            }
        };
        while let Some(accepted) = queue.recv().await {
            let stream = match tokio::net::TcpStream::from_std(accepted.stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot take over a connection");
                    continue;
                }
            };
            let mut closed = accepted.site.closed.clone();
            let io = SiteStream {
                io: stream,
                site: accepted.site,
            };
            let connection = service.call((io, Protocol::Http1, Some(accepted.peer)));
            actix_web::rt::spawn(async move {
                tokio::select! {
                    _ = connection => {}
                    // The port closed: the connection (and a WebSocket relayed on it) ends.
                    _ = closed.changed() => {}
                }
            });
        }
    });
}

/// A connection on a notebook's port, with the notebook it is for.
struct SiteStream {
    io: tokio::net::TcpStream,
    site: Arc<SiteOf>,
}

impl AsyncRead for SiteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SiteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
