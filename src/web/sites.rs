//! Notebooks on origins of their own: with `origin = "ports"` each running notebook gets a
//! listener on a port of `notebooks.origin_ports` for as long as it runs; with
//! `subdomains` Notebox's listener routes `{id}.{domain}` here by its `Host`. Either way a
//! notebook's origin serves only that notebook (`/nb/{id}/…`), the entry handshake
//! (`/__notebox/enter`) and Notebox's static files — nothing of Notebox's pages or API.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::ServerHandle;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;

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

/// The notebook a listener serves (one per notebook port).
struct SiteOf {
    id: String,
    /// The port was another notebook's before: what that notebook's pages left in the
    /// browser for this origin (storage, caches) is cleared when the member enters.
    inherited: bool,
}

/// A notebook's listener.
struct Served {
    port: u16,
    handle: ServerHandle,
    bound_at: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(
        "every notebook port ({0}) is taken; stop a notebook, or ask the admin to widen \
         notebooks.origin_ports"
    )]
    NoFreePort(crate::config::PortRange),
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
    workers: usize,
    /// Notebox's own runtime: listeners are driven there, whichever worker bound them.
    rt: tokio::runtime::Handle,
}

impl Sites {
    pub fn new(origins: Origins, bind_ip: IpAddr, db: Db, proxy: web::Data<ProxyState>) -> Sites {
        Sites {
            origins,
            bind_ip,
            db,
            proxy,
            servers: Mutex::new(HashMap::new()),
            rt: tokio::runtime::Handle::current(),
            // One member per notebook: two workers keep a big download from stalling the
            // rest of its JupyterLab.
            workers: std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
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

    /// Serves a running notebook on its own port (from `ports`), binding one if needed:
    /// the port it had last time when it is free, else the lowest free one no other
    /// notebook had, else the lowest free one.
    pub async fn ensure(&self, notebook_id: &str) -> Result<u16, SiteError> {
        if let Some(port) = self.port_of(notebook_id) {
            return Ok(port);
        }
        let claimed = self
            .db
            .call(|c| q::claimed_origin_ports(c))
            .await
            .unwrap_or_default();
        let preferred = claimed
            .iter()
            .find(|(id, _)| id == notebook_id)
            .map(|(_, port)| *port);
        let others: Vec<u16> = claimed
            .iter()
            .filter(|(id, _)| id != notebook_id)
            .map(|(_, port)| *port)
            .collect();
        let port = {
            let mut servers = self
                .servers
                .lock()
                .map_err(|_| std::io::Error::other("notebook listeners lock poisoned"))?;
            if let Some(s) = servers.get(notebook_id) {
                return Ok(s.port);
            }
            let taken: Vec<u16> = servers.values().map(|s| s.port).collect();
            let range = self.origins.ports.ports();
            let candidates = preferred
                .filter(|p| self.origins.ports.contains(*p))
                .into_iter()
                .chain(range.clone().filter(|p| !others.contains(p)))
                .chain(range.filter(|p| others.contains(p)))
                .filter(|p| !taken.contains(p));
            let mut bound = None;
            for port in candidates {
                // Something else on the machine may hold it: try the next.
                if let Ok(listener) = std::net::TcpListener::bind((self.bind_ip, port)) {
                    bound = Some((port, listener));
                    break;
                }
            }
            let Some((port, listener)) = bound else {
                return Err(SiteError::NoFreePort(self.origins.ports));
            };
            let inherited = Some(port) != preferred && others.contains(&port);
            let handle = self.start_server(notebook_id, listener, inherited)?;
            servers.insert(
                notebook_id.to_string(),
                Served {
                    port,
                    handle,
                    bound_at: Instant::now(),
                },
            );
            port
        };
        tracing::info!(notebook = %notebook_id, port, "serving the notebook on its own port");
        if preferred != Some(port) {
            let id = notebook_id.to_string();
            if let Err(e) = self
                .db
                .call(move |c| q::set_origin_port(c, &id, port))
                .await
            {
                tracing::warn!(notebook = %notebook_id, error = %e, "cannot remember the notebook's port");
            }
        }
        Ok(port)
    }

    fn start_server(
        &self,
        notebook_id: &str,
        listener: std::net::TcpListener,
        inherited: bool,
    ) -> Result<ServerHandle, std::io::Error> {
        let proxy = self.proxy.clone();
        let site = web::Data::new(SiteOf {
            id: notebook_id.to_string(),
            inherited,
        });
        let _in_notebox_runtime = self.rt.enter();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(proxy.clone())
                .app_data(site.clone())
                .app_data(web::Data::new(UpstreamClient::default()))
                .app_data(super::pages::query_config())
                .wrap(from_fn(super::middleware::refuse_stray_upgrades))
                .wrap(from_fn(super::middleware::refuse_duplicate_cookies))
                .wrap(from_fn(super::middleware::security_headers))
                .wrap(from_fn(super::middleware::log_requests))
                .default_service(web::to(notebook_site))
        })
        .workers(self.workers)
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(1)
        .run();
        let handle = server.handle();
        self.rt.spawn(server);
        Ok(handle)
    }

    /// Closes a notebook's port, and every connection on it (its WebSockets end).
    async fn close(&self, notebook_id: &str) {
        let served = self
            .servers
            .lock()
            .ok()
            .and_then(|mut s| s.remove(notebook_id));
        if let Some(served) = served {
            tracing::info!(notebook = %notebook_id, port = served.port, "notebook port closed");
            served.handle.stop(false).await;
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
            if let Err(e) = self.ensure(&id).await {
                tracing::warn!(notebook = %id, error = %e, "cannot serve the notebook on its own port");
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
    let site = req.app_data::<web::Data<SiteOf>>().cloned();
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
    // code (one of its own member's) is refused.
    let cross_site = req
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    let code = web::Query::<EnterQuery>::from_query(req.query_string())
        .ok()
        .map(|q| q.into_inner().code)
        .filter(|_| !cross_site)
        .unwrap_or_default();
    let entered = match proxy.accounts().enter(&code, id).await {
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
    let https = is_https(req);
    // `__Host-` cookies must have Path=/; without TLS the path confines it to the notebook.
    let path = if https {
        "/".to_string()
    } else {
        format!("/nb/{id}/")
    };
    let cookie = Cookie::build(notebook_cookie_name(id, https), value)
        .path(path)
        .http_only(true)
        .secure(https)
        .same_site(SameSite::Lax)
        .finish();
    let mut response = HttpResponse::SeeOther();
    response
        .insert_header((
            header::LOCATION,
            location(&format!("/nb/{}/{}", encode_segment(id), entry.path)),
        ))
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
    // Sent here by another origin of the site (a notebook's page) or another site: to
    // JupyterLab's start, not to a path of their choosing (a GET with side effects).
    let from_elsewhere = req
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| matches!(v.as_bytes(), b"same-site" | b"cross-site"));
    let path = query
        .into_inner()
        .path
        .filter(|_| !from_elsewhere)
        .unwrap_or_else(|| "lab".to_string());
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
