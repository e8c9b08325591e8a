//! The authenticated Jupyter proxy at `/nb/{id}/…`: HTTP (streamed both ways) and
//! WebSocket (relayed as bytes arrive, frames followed but never held whole). Only the notebook's owner gets through; notebox's
//! cookies and the caller's credentials never reach Jupyter, which gets the notebook's own
//! token instead.
//!
//! Everything the proxy needs is in its own `ProxyState` (credential lookup, routing,
//! caches); it knows nothing of Notebox's pages, which depend on it, not the reverse — so
//! it can be mounted on a listener (and origin) of its own.

pub mod origin;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::activity::MemberAction;
use crate::auth::{secrets, Accounts, User};
use crate::db::notebooks::{self as q, ProxyTarget};
use crate::db::Db;
use crate::error::WebError;
use crate::http::{authorization_token, here, PAGE_CSP};
use crate::model::NotebookState;
use crate::origin::Origins;
use crate::runtime::Runtime;

/// How long Jupyter may take to accept a WebSocket.
const WS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a routing decision is reused before asking the database again.
const TARGET_CACHE_TTL: Duration = Duration::from_secs(1);

/// Request headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Per-worker upstream client: keeps connections to Jupyter alive between requests.
pub struct UpstreamClient {
    client: awc::Client,
}

/// awc's TCP connector, plus TCP_NODELAY on every upstream connection: proxied bodies
/// arrive in pieces, and Nagle's algorithm would hold each small piece back.
#[derive(Clone, Default)]
struct NoDelayConnector(actix_tls::connect::ConnectorService);

impl actix_service::Service<actix_tls::connect::ConnectInfo<awc::http::Uri>> for NoDelayConnector {
    type Response = actix_tls::connect::Connection<awc::http::Uri, actix_web::rt::net::TcpStream>;
    type Error = actix_tls::connect::ConnectError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>>>>;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        actix_service::Service::<actix_tls::connect::ConnectInfo<awc::http::Uri>>::poll_ready(
            &self.0, cx,
        )
    }

    fn call(&self, req: actix_tls::connect::ConnectInfo<awc::http::Uri>) -> Self::Future {
        let connecting = self.0.call(req);
        Box::pin(async move {
            let connection = connecting.await?;
            if let Err(e) = connection.io_ref().set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY upstream");
            }
            Ok(connection)
        })
    }
}

impl Default for UpstreamClient {
    fn default() -> Self {
        let connector = awc::Connector::new()
            .connector(NoDelayConnector::default())
            .conn_lifetime(Duration::from_secs(3600))
            .limit(0) // no cap on concurrent upstream connections (WebSockets are long-lived)
            .conn_keep_alive(Duration::from_secs(60))
            .timeout(Duration::from_secs(5));
        UpstreamClient {
            client: awc::Client::builder()
                .connector(connector)
                .disable_timeout() // long downloads and uploads must not be cut off
                .disable_redirects()
                .max_http_version(awc::http::Version::HTTP_11)
                .finish(),
        }
    }
}

/// The credential a proxied request came with, kept by its WebSocket relay so the relay
/// can be closed when that credential stops being valid.
#[derive(Clone)]
enum Credential {
    Token(String),
    Session(String),
    /// A notebook's own cookie (`notebook id`, value): good for that notebook only.
    Grant(String, String),
}

/// Which origin a proxied request arrived on, and so which credentials count there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// Notebox's own origin. With isolated origins only an `Authorization` header counts
    /// (a browser cannot send one on a navigation, so no page of a notebook is ever
    /// rendered here with the member's cookies).
    Main,
    /// The notebook's own origin (its port or subdomain): its own cookie or a token;
    /// Notebox's session cookie never counts (and never reaches Jupyter).
    Notebook(String),
}

#[derive(Clone)]
struct CachedUser {
    user: User,
    /// The credentials generation it was looked up in: any change voids it.
    generation: u64,
    at: Instant,
}

/// Longest a cached credential is reused even with no change event (sessions expire).
const CREDENTIAL_CACHE_MAX_AGE: Duration = Duration::from_secs(60);

/// What the proxy needs, and nothing of the web pages: who a credential belongs to,
/// where a notebook runs, and the caches that keep the database off the hot path.
pub struct ProxyState {
    accounts: Accounts,
    db: Db,
    runtime: Runtime,
    cache: ProxyCache,
    origins: Origins,
    /// The port of Notebox's own listener (links back from a notebook's port).
    main_port: u16,
}

impl ProxyState {
    pub fn new(accounts: Accounts, db: Db, runtime: Runtime, main_port: u16) -> ProxyState {
        let n = &runtime.config().notebooks;
        let origins = Origins::new(n.origin, n.origin_ports, &n.origin_domain);
        ProxyState {
            accounts,
            db,
            runtime,
            cache: ProxyCache::default(),
            origins,
            main_port,
        }
    }

    /// Notebox's own origin as seen from a request on a notebook's origin: known with
    /// `ports` (same host, Notebox's port), not with `subdomains`.
    pub fn main_url(&self, req: &HttpRequest) -> Option<String> {
        match self.origins.mode {
            crate::config::OriginMode::Ports => {
                let info = req.connection_info();
                let (host, _) = crate::origin::split_host(info.host());
                Some(format!("{}://{host}:{}", info.scheme(), self.main_port))
            }
            crate::config::OriginMode::Same => Some(String::new()),
            crate::config::OriginMode::Subdomains => None,
        }
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Where the browser finds a notebook's Jupyter: `/nb/{id}/`, or `/nb/{id}/{key}/` while
    /// its container has a path key (`origin = "ports"`).
    pub async fn browser_base(&self, notebook_id: &str) -> Result<String, WebError> {
        let key = target(self, notebook_id).await?.and_then(|t| t.path_key);
        Ok(crate::runtime::spec::base_url(notebook_id, key.as_deref()))
    }

    pub fn origins(&self) -> &Origins {
        &self.origins
    }
}

/// Caches that keep the database off the proxy's hot path. Credentials are invalidated by
/// change (logout, password, disable, revoke), not by time.
#[derive(Default)]
struct ProxyCache {
    users: Mutex<HashMap<String, CachedUser>>,
    targets: Mutex<HashMap<String, (ProxyTarget, Instant)>>,
}

impl ProxyCache {
    fn get_user(&self, key: &str, generation: u64) -> Option<User> {
        let map = self.users.lock().ok()?;
        map.get(key)
            .filter(|c| c.generation == generation && c.at.elapsed() < CREDENTIAL_CACHE_MAX_AGE)
            .map(|c| c.user.clone())
    }

    fn put_user(&self, key: String, user: User, generation: u64) {
        if let Ok(mut map) = self.users.lock() {
            if map.len() > 10_000 {
                map.clear();
            }
            map.retain(|_, c| c.generation == generation);
            map.insert(
                key,
                CachedUser {
                    user,
                    generation,
                    at: Instant::now(),
                },
            );
        }
    }

    /// Forgets a notebook's routing (its state changed).
    fn forget_target(&self, notebook_id: &str) {
        if let Ok(mut map) = self.targets.lock() {
            map.remove(notebook_id);
        }
    }
}

/// Who is calling, found from a token (header or `?token=`) or the session cookie.
enum Caller {
    User(User, Credential),
    /// Credentials were sent but are not valid.
    BadCredentials,
    /// Credentials that must not be used together (a browser session with a token for
    /// someone else, or with a token in the URL that a link could carry).
    Refused(&'static str),
    Anonymous,
}

fn query_token(req: &HttpRequest) -> Option<String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("token").cloned())
        .filter(|t| !t.is_empty())
}

/// The user behind a credential, from the cache when nothing changed since it was looked up.
async fn credential_user(
    state: &ProxyState,
    credential: &Credential,
) -> Result<Option<User>, WebError> {
    let generation = state.accounts.events().generation();
    let key = match credential {
        Credential::Token(t) => format!("t:{}", secrets::hash_secret(t)),
        Credential::Session(s) => format!("s:{}", secrets::hash_secret(s)),
        Credential::Grant(nb, g) => format!("g:{nb}:{}", secrets::hash_secret(g)),
    };
    if let Some(user) = state.cache.get_user(&key, generation) {
        return Ok(Some(user));
    }
    let found = match credential {
        Credential::Token(t) => state.accounts.token_user(t).await?,
        Credential::Session(s) => state.accounts.session_user(s).await?.map(|(u, _)| u),
        Credential::Grant(nb, g) => state.accounts.grant_user(g, nb).await?,
    };
    if let Some(user) = &found {
        state.cache.put_user(key, user.clone(), generation);
    }
    Ok(found)
}

/// `jupyter_token` is the notebook's own Jupyter token: JupyterLab puts it in its page
/// config and sends it back as `Authorization: token …` on every API call. It is no
/// Notebox credential, so it is skipped and the session cookie decides.
///
/// A token in the URL is for clients without cookies (scripts, VS Code): sent together with
/// a session cookie it is refused, so a link cannot make a member's browser act with
/// somebody else's token. A header token for another user than the session's is refused too.
async fn identify(
    req: &HttpRequest,
    state: &ProxyState,
    jupyter_token: Option<&str>,
    site: &Site,
    cookie_counts: bool,
) -> Result<Caller, WebError> {
    let not_jupyters = |t: &String| !jupyter_token.is_some_and(|j| secrets::constant_time_eq(t, j));
    let header_token = if req.headers().contains_key(header::AUTHORIZATION) {
        match authorization_token(req) {
            Some(t) => Some(t).filter(not_jupyters),
            None => return Ok(Caller::BadCredentials),
        }
    } else {
        None
    };
    let isolated_main = *site == Site::Main && state.origins.isolated();
    let url_token = query_token(req)
        .filter(not_jupyters)
        .filter(|_| !isolated_main);
    // The cookie that counts on this origin: Notebox's session on its own origin (only
    // with origin = "same"), the notebook's own cookie on the notebook's origin.
    let cookie_name = match site {
        Site::Main if isolated_main => None,
        Site::Main => Some(crate::http::session_cookie(req).to_string()),
        Site::Notebook(id) => Some(crate::origin::notebook_cookie_name(
            id,
            crate::http::is_https(req),
        )),
    };
    let cookie = cookie_name
        .as_deref()
        .filter(|_| cookie_counts)
        .and_then(|name| req.cookie(name));
    // A page opened with a token in its URL shows the token to every script of the page
    // (`location.href`), and the notebook's scripts are not to be trusted with it.
    if url_token.is_some() && matches!(site, Site::Notebook(_)) && is_navigation(req) {
        return Ok(Caller::Refused(
            "A token in the URL is not accepted for a page in the browser (the notebook's \
             scripts could read it from the address bar); open the notebook from Notebox, or \
             send the token in an Authorization header.",
        ));
    }
    if url_token.is_some() && cookie.is_some() {
        return Ok(Caller::Refused(
            "A token in the URL is not accepted from a browser that is logged in to Notebox; \
             open the notebook from Notebox instead.",
        ));
    }
    let session = cookie
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(|v| match site {
            Site::Notebook(id) => Credential::Grant(id.clone(), v),
            Site::Main => Credential::Session(v),
        });
    let session_user = match &session {
        Some(s) => credential_user(state, s).await?,
        None => None,
    };
    if let Some(token) = header_token.or(url_token) {
        let credential = Credential::Token(token);
        return Ok(match credential_user(state, &credential).await? {
            Some(user) if session_user.as_ref().is_some_and(|s| s.id != user.id) => {
                Caller::Refused(
                    "The access token belongs to another user than this browser's session.",
                )
            }
            Some(user) => Caller::User(user, credential),
            None => Caller::BadCredentials,
        });
    }
    Ok(match (session_user, session) {
        (Some(user), Some(s)) => Caller::User(user, s),
        _ => Caller::Anonymous,
    })
}

async fn target(state: &ProxyState, notebook_id: &str) -> Result<Option<ProxyTarget>, WebError> {
    if let Ok(map) = state.cache.targets.lock() {
        if let Some((t, at)) = map.get(notebook_id) {
            if at.elapsed() < TARGET_CACHE_TTL {
                return Ok(Some(t.clone()));
            }
        }
    }
    let id = notebook_id.to_string();
    let mut found = state.db.call(move |c| q::proxy_target(c, &id)).await?;
    // A notebook adopted from before notebox knew container addresses: ask Docker once.
    if let Some(t) = found.as_mut() {
        if t.state == NotebookState::Running && t.container_ip.is_none() {
            t.container_ip = state.runtime.container_ip(notebook_id).await;
        }
    }
    if let (Some(t), Ok(mut map)) = (&found, state.cache.targets.lock()) {
        map.insert(notebook_id.to_string(), (t.clone(), Instant::now()));
    }
    Ok(found)
}

/// What a proxied HTTP request says about its member: saving or changing a file, opening
/// a document, starting a kernel or terminal. The polling an open JupyterLab tab does by
/// itself (kernel, session, terminal and directory listings, status, workspace saves) is
/// not an action. `path` is the part after `/nb/{id}/`.
fn member_action_http(method: &Method, path: &str, query: &str) -> Option<MemberAction> {
    let api = path.strip_prefix("api/")?;
    let (collection, rest) = api.split_once('/').unwrap_or((api, ""));
    match (method.as_str(), collection) {
        ("PUT" | "POST" | "PATCH" | "DELETE", "contents") => Some(MemberAction::FileChange),
        // Opening a notebook or file (a listing of a directory has no `type=`).
        ("GET", "contents")
            if query
                .split('&')
                .any(|p| p == "type=notebook" || p == "type=file")
                && !query.split('&').any(|p| p == "content=0") =>
        {
            Some(MemberAction::Open)
        }
        ("POST" | "PATCH", "sessions" | "terminals") => Some(MemberAction::Open),
        ("POST", "kernels") if rest.ends_with("/interrupt") || rest.ends_with("/restart") => {
            Some(MemberAction::Execute)
        }
        ("POST", "kernels") => Some(MemberAction::Open),
        _ => None,
    }
}

/// Which kind of relayed WebSocket a path is, for classifying what the member sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketKind {
    /// `api/kernels/{id}/channels`: Jupyter messages.
    KernelChannels,
    /// `terminals/websocket/{name}`: terminado messages.
    Terminal,
    Other,
}

fn socket_kind(path: &str) -> SocketKind {
    if path.starts_with("api/kernels/") && path.ends_with("/channels") {
        SocketKind::KernelChannels
    } else if path.starts_with("terminals/websocket/") {
        SocketKind::Terminal
    } else {
        SocketKind::Other
    }
}

/// What a message from the member's browser says: code sent to a kernel (an execute
/// request, or an answer to `input()`), keys typed in a terminal. Kernel-info and
/// completion requests, heartbeats and terminal resizes are not actions. Works on both
/// kernel wire protocols (JSON text and the v1 binary framing, whose header is JSON too)
/// without parsing the message.
fn member_action_ws(kind: SocketKind, frame: &[u8]) -> Option<MemberAction> {
    match kind {
        SocketKind::KernelChannels => {
            let finder = |needle: &str| memchr::memmem::find(frame, needle.as_bytes()).is_some();
            (finder("\"execute_request\"") || finder("\"input_reply\""))
                .then_some(MemberAction::Execute)
        }
        SocketKind::Terminal => {
            let trimmed = frame.trim_ascii_start();
            (trimmed.starts_with(b"[\"stdin\"") || trimmed.starts_with(b"[ \"stdin\""))
                .then_some(MemberAction::TerminalInput)
        }
        SocketKind::Other => None,
    }
}

fn record_action(state: &ProxyState, notebook_id: &str, action: MemberAction) {
    state
        .runtime
        .activity()
        .member_acted(notebook_id, action, crate::db::now());
}

fn wants_html(req: &HttpRequest) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

/// A browser loading a page (not a script's request, not a WebSocket).
fn is_navigation(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-fetch-mode")
        .is_some_and(|v| v.as_bytes() == b"navigate")
        || wants_html(req)
}

fn is_websocket(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Jupyter skips its origin checks for token-authenticated calls, and we always send a
/// token: so the proxy refuses cross-site WebSockets and writes itself. On a notebook's
/// own origin nothing from another origin gets through, reads included: not another
/// notebook's page (`fetch` with credentials, `<script src>`), not Notebox's.
fn origin_allowed(req: &HttpRequest, site: &Site) -> bool {
    if matches!(site, Site::Notebook(_)) {
        let fetch_site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes());
        // A link followed to the notebook, in a tab or window: fine. Framing it (iframe,
        // embed) is not: another origin's page could then click for the member.
        let top_level_navigation = header("sec-fetch-mode") == Some(b"navigate")
            && header("sec-fetch-dest").is_none_or(|d| d == b"document");
        // Another origin's page loading something of this notebook's.
        if matches!(fetch_site, "same-site" | "cross-site") && !top_level_navigation {
            return false;
        }
        if req.headers().contains_key(header::ORIGIN) {
            return same_origin(req);
        }
        return true;
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe && !is_websocket(req) {
        return true;
    }
    same_origin(req)
}

/// Whether the request's `Origin` is the origin it was sent to (no `Origin`: not a
/// browser, or a same-origin navigation).
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        // Not a browser (browsers send Origin on WebSockets and cross-site writes).
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let host = req.connection_info().host().to_string();
    let scheme_ok = origin
        .split_once("://")
        .is_some_and(|(s, _)| s.eq_ignore_ascii_case(req.connection_info().scheme()));
    if !scheme_ok {
        return false;
    }
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    origin_host.eq_ignore_ascii_case(&host)
}

#[derive(Template)]
#[template(path = "notebook_not_running.html")]
struct NotRunningPage<'a> {
    id: &'a str,
    name: &'a str,
    state: NotebookState,
    csrf: Option<String>,
    /// Where Notebox's own pages are, seen from this origin ("" on Notebox's own;
    /// `None` when not known, on a subdomain).
    main: Option<String>,
}

fn error_response(req: &HttpRequest, e: WebError) -> HttpResponse {
    use actix_web::ResponseError;
    if wants_html(req) {
        crate::error::PageError(e).error_response()
    } else {
        crate::error::ApiError(e).error_response()
    }
}

async fn not_running(
    req: &HttpRequest,
    state: &ProxyState,
    id: &str,
    t: &ProxyTarget,
    site: &Site,
) -> HttpResponse {
    if !wants_html(req) {
        return error_response(
            req,
            WebError::new(
                StatusCode::CONFLICT,
                "notebook_not_running",
                format!(
                    "The notebook is {}; start it with POST /api/v1/notebooks/{id}/start and try again when it is running.",
                    t.state
                ),
            ),
        );
    }
    // The start button needs the session's CSRF token; token-only callers get none, and
    // so does a notebook's origin (Notebox's session is not sent there, or not read).
    let session = match site {
        Site::Main => req.cookie(crate::http::session_cookie(req)),
        Site::Notebook(_) => None,
    };
    let csrf = match session {
        Some(c) => state
            .accounts
            .session_user(c.value())
            .await
            .ok()
            .flatten()
            .map(|(_, csrf)| csrf),
        None => None,
    };
    let main = match site {
        Site::Main => Some(String::new()),
        Site::Notebook(_) => state.main_url(req),
    };
    let page = NotRunningPage {
        id,
        name: &t.name,
        state: t.state,
        csrf,
        main,
    };
    match page.render() {
        Ok(body) => HttpResponse::build(StatusCode::CONFLICT)
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
            .body(body),
        Err(e) => error_response(req, WebError::internal(e)),
    }
}

/// The query string without our own `token` parameter (Jupyter would take it as its own).
fn upstream_query(req: &HttpRequest) -> String {
    let q = req.query_string();
    if !q
        .split('&')
        .any(|p| p == "token" || p.starts_with("token="))
    {
        return q.to_string();
    }
    q.split('&')
        .filter(|p| !(p.is_empty() || *p == "token" || p.starts_with("token=")))
        .collect::<Vec<_>>()
        .join("&")
}

/// The name of jupyter_server's login cookie for requests to `host`: `username-{host}` with
/// every character but ASCII letters and digits made a `-` (its IdentityProvider).
fn jupyter_login_cookie(host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("username-{host}")
}

/// The headers Jupyter gets: the client's, minus hop-by-hop headers and the client's
/// credentials; plus the notebook's token and X-Forwarded-*.
///
/// Of the cookies only Jupyter's own pass: `_xsrf` and its login cookie for this host. A
/// browser sends every cookie of the host whatever port set it (Grafana's, Portainer's,
/// code-server's sessions, another Jupyter's login), and code in the notebook could read
/// them here. A fixed list, not names learned from Jupyter's `Set-Cookie`: a notebook could
/// set a cookie named like another app's and then be sent both.
fn upstream_headers(req: &HttpRequest, jupyter_token: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in req.headers() {
        if is_hop_by_hop(name)
            || name == header::AUTHORIZATION
            || name == header::COOKIE
            || name.as_str().starts_with("x-forwarded-")
            || name.as_str().starts_with("sec-websocket-")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    let login_cookie = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(jupyter_login_cookie);
    let cookies: Vec<&str> = req
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| {
            let name = c.split_once('=').map_or(*c, |(n, _)| n).trim();
            name == "_xsrf" || login_cookie.as_deref() == Some(name)
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
        if !cookies.is_empty() {
            out.insert(header::COOKIE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("token {jupyter_token}")) {
        out.insert(header::AUTHORIZATION, v);
    }
    let info = req.connection_info();
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let forwarded_for = match req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => format!("{prior}, {peer}"),
        None => peer,
    };
    for (name, value) in [
        ("x-forwarded-for", forwarded_for.as_str()),
        ("x-forwarded-proto", info.scheme()),
        ("x-forwarded-host", info.host()),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), v);
        }
    }
    out
}

/// An upstream `Set-Cookie`, confined to the notebook's own base URL (`/nb/{id}/`, with its
/// path key when it has one; `Domain` dropped, `Path` replaced); cookies named like
/// Notebox's own are dropped so a notebook cannot plant them.
fn scoped_set_cookie(value: &HeaderValue, base: &str) -> Option<HeaderValue> {
    let value = value.to_str().ok()?;
    let mut parts = value.split(';');
    let pair = parts.next()?.trim();
    let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
    if name.is_empty() || crate::origin::is_notebox_cookie(name) {
        return None;
    }
    let mut out = pair.to_string();
    for attribute in parts {
        let attribute = attribute.trim();
        let key = attribute
            .split_once('=')
            .map_or(attribute, |(k, _)| k)
            .trim()
            .to_ascii_lowercase();
        if attribute.is_empty() || key == "path" || key == "domain" {
            continue;
        }
        out.push_str("; ");
        out.push_str(attribute);
    }
    out.push_str(&format!("; Path={base}"));
    HeaderValue::from_str(&out).ok()
}

/// The part of `/nb/{id}/{rest}` after the notebook's base URL, and whether the request
/// named the notebook's path key (`/nb/{id}/{key}/{rest}`). A stale key (an earlier run's)
/// is dropped but does not count.
fn inner_path<'a>(path: &'a str, key: Option<&str>) -> (&'a str, bool) {
    let rest = path
        .strip_prefix("/nb/")
        .and_then(|p| p.split_once('/'))
        .map_or("", |(_, rest)| rest);
    let (first, after) = rest.split_once('/').unwrap_or((rest, ""));
    match key {
        Some(key) if secrets::constant_time_eq(first, key) => (after, true),
        _ if crate::runtime::spec::is_path_key(first) => (after, false),
        _ => (rest, false),
    }
}

/// A browser fetching a script to register as a service worker.
fn is_service_worker_script(req: &HttpRequest) -> bool {
    req.headers()
        .get("service-worker")
        .is_some_and(|v| v.as_bytes() == b"script")
        || req
            .headers()
            .get("sec-fetch-dest")
            .is_some_and(|v| v.as_bytes() == b"serviceworker")
}

/// `/nb/{id}` → `/nb/{id}/`.
pub async fn add_slash(path: web::Path<String>) -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((
            header::LOCATION,
            format!("/nb/{}/", crate::http::encode_segment(&path.into_inner())),
        ))
        .finish()
}

/// Every request under `/nb/{id}/` on Notebox's own origin. With isolated origins only
/// calls with an `Authorization` header (scripts, VS Code) are served here; a browser is
/// sent through the entry handshake to the notebook's own origin.
pub async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ProxyState>,
    upstream: web::Data<UpstreamClient>,
) -> HttpResponse {
    let id = req.match_info().get("id").unwrap_or_default().to_string();
    if state.origins.isolated() && !req.headers().contains_key(header::AUTHORIZATION) {
        return elsewhere(&req, &id);
    }
    serve(req, payload, state, upstream, id, Site::Main).await
}

/// A browser's request for a notebook on Notebox's own origin, with isolated origins:
/// pages go through `/notebooks/{id}/open` (which hands the browser to the notebook's
/// origin); anything else is told where the notebook is.
fn elsewhere(req: &HttpRequest, id: &str) -> HttpResponse {
    if wants_html(req) && !is_websocket(req) {
        let path = landing_path(req);
        return HttpResponse::SeeOther()
            .insert_header((
                header::LOCATION,
                format!(
                    "/notebooks/{}/open?path={}",
                    crate::http::encode_segment(id),
                    crate::http::urlencode(&path)
                ),
            ))
            .finish();
    }
    error_response(
        req,
        WebError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "notebook_on_own_origin",
            "Notebooks are served on their own origin here: use the notebook's `jupyter_url` \
             (GET /api/v1/notebooks/{id}) with your access token, or send the token in an \
             Authorization header.",
        ),
    )
}

/// Where a request for `/nb/{id}/{tail}?{query}` wanted to land, relative to the
/// notebook (our own `token` parameter left out).
fn landing_path(req: &HttpRequest) -> String {
    let tail = req
        .path()
        .strip_prefix("/nb/")
        .and_then(|p| p.split_once('/'))
        .map_or("", |(_, rest)| rest);
    // A path key (this run's or an earlier run's) is Notebox's, not a place to land.
    let tail = match tail.split_once('/') {
        Some((first, rest)) if crate::runtime::spec::is_path_key(first) => rest,
        None if crate::runtime::spec::is_path_key(tail) => "",
        _ => tail,
    };
    let query = upstream_query(req);
    if query.is_empty() {
        tail.to_string()
    } else {
        format!("{tail}?{query}")
    }
}

/// A browser on a notebook's origin without that notebook's cookie (never entered, or
/// logged out since): back to Notebox, which checks who it is and hands it over again.
fn enter_again(req: &HttpRequest, state: &ProxyState, id: &str) -> HttpResponse {
    let path = landing_path(req);
    match state.main_url(req) {
        Some(main) => HttpResponse::SeeOther()
            .insert_header((
                header::LOCATION,
                crate::http::location(&format!(
                    "{main}/notebooks/{}/open?path={}",
                    crate::http::encode_segment(id),
                    crate::http::urlencode(&path)
                )),
            ))
            .finish(),
        None => error_response(
            req,
            WebError::new(
                StatusCode::UNAUTHORIZED,
                "open_from_notebox",
                "Open this notebook from its page on Notebox: that lets this browser in.",
            ),
        ),
    }
}

/// Every request for a notebook, counted for /metrics (status class and the time to the
/// response's head).
pub async fn serve(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ProxyState>,
    upstream: web::Data<UpstreamClient>,
    id: String,
    site: Site,
) -> HttpResponse {
    let started = Instant::now();
    let metrics = state.runtime.metrics().clone();
    let response = proxy_request(req, payload, state, upstream, id, site).await;
    metrics.proxy_request(response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

async fn proxy_request(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ProxyState>,
    upstream: web::Data<UpstreamClient>,
    id: String,
    site: Site,
) -> HttpResponse {
    let found = target(&state, &id).await;
    let jupyter_token = match &found {
        Ok(Some(t)) => Some(t.jupyter_token.as_str()),
        _ => None,
    };
    let path_key = match &found {
        Ok(Some(t)) => t.path_key.clone(),
        _ => None,
    };
    let path = req.path().to_string();
    let (inner_path, keyed) = inner_path(&path, path_key.as_deref());
    // With a path key, the notebook's cookie counts only under it: a page of another
    // notebook that had this port cannot name these URLs (it never learns the key).
    let cookie_counts = keyed || path_key.is_none() || site == Site::Main;
    let (user, credential) = match identify(&req, &state, jupyter_token, &site, cookie_counts).await
    {
        Ok(Caller::User(u, c)) => (u, c),
        Ok(Caller::Refused(why)) => return error_response(&req, WebError::forbidden(why)),
        Ok(Caller::BadCredentials) => {
            return error_response(
                &req,
                WebError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "The access token is not valid.",
                ),
            )
        }
        Ok(Caller::Anonymous) if wants_html(&req) => {
            return match &site {
                Site::Main => error_response(&req, WebError::login_required(&here(&req))),
                Site::Notebook(_) => enter_again(&req, &state, &id),
            };
        }
        Ok(Caller::Anonymous) => return error_response(&req, WebError::unauthorized()),
        Err(e) => return error_response(&req, e),
    };
    let target = match found {
        Ok(Some(t)) if t.owner_id == user.id => t,
        Ok(_) => return error_response(&req, WebError::not_found()),
        Err(e) => return error_response(&req, e),
    };
    if !origin_allowed(&req, &site) {
        return error_response(
            &req,
            WebError::forbidden(
                "Cross-origin requests to notebooks are refused (the request comes from \
                 another origin than the notebook's own).",
            ),
        );
    }
    if is_service_worker_script(&req) {
        // A service worker outlives its notebook in the browser and sees every page of
        // the origin (and so the next notebook's URLs on this port); JupyterLab uses none.
        return error_response(
            &req,
            WebError::forbidden("Service workers are not allowed for notebooks."),
        );
    }
    let ip = match (&target.container_ip, target.state) {
        (Some(ip), NotebookState::Running) => ip.clone(),
        _ => return not_running(&req, &state, &id, &target, &site).await,
    };
    let query = upstream_query(&req);
    if let Some(action) = member_action_http(req.method(), inner_path, &query) {
        record_action(&state, &id, action);
    }
    // Jupyter's own path: its base URL (with the key its container has), then the rest.
    let jupyter_base = crate::runtime::spec::base_url(&id, path_key.as_deref());
    let path = format!("{jupyter_base}{inner_path}");
    let base = format!("{ip}:{}", crate::runtime::spec::JUPYTER_PORT);
    let headers = upstream_headers(&req, &target.jupyter_token);
    let result = if is_websocket(&req) {
        let url = if query.is_empty() {
            format!("ws://{base}{path}")
        } else {
            format!("ws://{base}{path}?{query}")
        };
        let relay = Relay {
            state: state.clone(),
            notebook_id: id.clone(),
            user_id: user.id,
            credential,
            kind: socket_kind(inner_path),
        };
        proxy_websocket(&req, payload, &upstream, &url, headers, relay).await
    } else {
        let url = if query.is_empty() {
            format!("http://{base}{path}")
        } else {
            format!("http://{base}{path}?{query}")
        };
        proxy_http(&req, payload, &upstream, &url, headers, &jupyter_base).await
    };
    match result {
        Ok(res) => res,
        Err(message) => {
            tracing::warn!(notebook = %id, error = %message, "proxy cannot reach Jupyter");
            state.cache.forget_target(&id);
            state.runtime.wake();
            error_response(
                &req,
                WebError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "jupyter_unreachable",
                    "The notebook's Jupyter server is not answering right now. If it keeps happening, restart the notebook.",
                ),
            )
        }
    }
}

async fn proxy_http(
    req: &HttpRequest,
    payload: web::Payload,
    upstream: &UpstreamClient,
    url: &str,
    headers: HeaderMap,
    jupyter_base: &str,
) -> Result<HttpResponse, String> {
    let mut up = upstream
        .client
        .request(req.method().clone(), url)
        .no_decompress();
    for (name, value) in headers.iter() {
        up = up.append_header((name.clone(), value.clone()));
    }
    let has_body = req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let response = if has_body {
        up.send_stream(payload).await
    } else {
        up.send().await
    }
    .map_err(|e| e.to_string())?;
    let mut out = HttpResponse::build(response.status());
    for (name, value) in response.headers() {
        if name == header::SET_COOKIE {
            if let Some(v) = scoped_set_cookie(value, jupyter_base) {
                out.append_header((header::SET_COOKIE, v));
            }
        } else if name.as_str() == "service-worker-allowed" {
            // A service worker stays inside `/nb/{id}/`: it must not reach the entry path,
            // nor the next notebook served on this port.
            continue;
        } else if !is_hop_by_hop(name) {
            out.append_header((name.clone(), value.clone()));
        }
    }
    Ok(out.streaming(response))
}

/// Connects to Jupyter first, then accepts the browser with the subprotocol Jupyter chose,
/// then relays the WebSocket both ways until either side closes.
async fn proxy_websocket(
    req: &HttpRequest,
    payload: web::Payload,
    upstream: &UpstreamClient,
    url: &str,
    headers: HeaderMap,
    relay_to: Relay,
) -> Result<HttpResponse, String> {
    // A client's broken handshake is its own error, told before Jupyter is asked.
    if let Err(e) = actix_http::ws::verify_handshake(req.head()) {
        return Ok(error_response(
            req,
            WebError::new(
                StatusCode::BAD_REQUEST,
                "bad_websocket_handshake",
                format!("This is not a valid WebSocket handshake: {e}"),
            ),
        ));
    }
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let mut ws = upstream.client.ws(url);
    for (name, value) in headers.iter() {
        if name == header::HOST {
            continue;
        }
        ws = ws.header(name.clone(), value.clone());
    }
    if !offered.is_empty() {
        ws = ws.protocols(offered.iter().map(String::as_str));
    }
    let connected = tokio::time::timeout(WS_HANDSHAKE_TIMEOUT, ws.connect()).await;
    let (up_response, upstream_framed) = match connected {
        Ok(Ok(pair)) => pair,
        // Jupyter answered, but refused (an unknown kernel: 404): pass its answer on.
        Ok(Err(awc::error::WsClientError::InvalidResponseStatus(status))) => {
            return Ok(HttpResponse::build(status)
                .content_type("application/json")
                .body(format!(
                    r#"{{"error": {{"code": "upstream_refused", "message": "Jupyter refused the WebSocket ({status})."}}}}"#
                )));
        }
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("Jupyter did not complete the WebSocket handshake in time".into()),
    };
    let mut response = actix_http::ws::handshake(req.head()).map_err(|e| e.to_string())?;
    let chosen = up_response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .filter(|p| offered.iter().any(|o| o == p));
    if let Some(protocol) = chosen {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    // What goes to the browser: a few pieces queued at most, so a browser that reads
    // slowly makes the relay stop reading Jupyter.
    let (to_client, queued) = tokio::sync::mpsc::channel::<Bytes>(WS_RELAY_QUEUE);
    let body = futures_util::stream::unfold(queued, |mut queued| async move {
        let piece = queued.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(piece), queued))
    });
    let response = response
        .message_body(actix_web::body::BodyStream::new(body).boxed())
        .map_err(|e| e.to_string())?;
    // The raw connection to Jupyter, with whatever it sent right after its answer.
    let upstream_parts = upstream_framed.into_parts();
    // Subscribed before the relay starts: a revocation from here on is seen.
    let changes = relay_to.state.accounts.events().subscribe();
    actix_web::rt::spawn(async move {
        let from_client = payload.into_inner();
        let (io, early) = (upstream_parts.io, upstream_parts.read_buf.freeze());
        relay(from_client, to_client, io, early, relay_to, changes).await;
    });
    Ok(response.into())
}

/// How much the relay reads from Jupyter at once: frames pass in pieces of at most this
/// size whatever their length, so a WebSocket never holds a frame whole.
const WS_RELAY_CHUNK: usize = 16 * 1024;
/// Pieces queued for the browser, at most.
const WS_RELAY_QUEUE: usize = 4;

/// One relayed WebSocket: whose credential keeps it open.
struct Relay {
    state: web::Data<ProxyState>,
    notebook_id: String,
    user_id: i64,
    credential: Credential,
    kind: SocketKind,
}

impl Relay {
    /// Whether the credential the WebSocket was opened with still belongs to its user.
    async fn still_allowed(&self) -> bool {
        match credential_user(&self.state, &self.credential).await {
            Ok(Some(user)) => user.id == self.user_id,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = ?e.message, "cannot re-check a WebSocket's credential; closing it");
                false
            }
        }
    }

    /// Returns once the credential stops being valid (logout, password change, disable,
    /// revoke).
    async fn revoked(&self, changes: &mut tokio::sync::watch::Receiver<u64>) {
        loop {
            if changes.changed().await.is_err() || !self.still_allowed().await {
                return;
            }
        }
    }
}

/// Why a relayed WebSocket ended.
enum RelayEnd {
    ClientGone,
    UpstreamGone,
    /// Either side sent something that is not a WebSocket frame the relay can pass on.
    Violation(&'static str),
    Revoked,
}

/// Relays the bytes of a WebSocket both ways as they arrive, frame boundaries followed but
/// frames never assembled: memory per socket is a few pieces, whatever the frame sizes.
async fn relay(
    from_client: actix_web::dev::Payload,
    to_client: tokio::sync::mpsc::Sender<Bytes>,
    upstream: awc::BoxedSocket,
    early: Bytes,
    relay_to: Relay,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    let (state, id) = (&relay_to.state, relay_to.notebook_id.as_str());
    let metrics = state.runtime.metrics().clone();
    metrics.websocket_opened();
    let (from_up, mut to_up) = tokio::io::split(upstream);
    let mut client_frames = FrameScanner::new(FramesFrom::Browser, relay_to.kind);
    let mut upstream_frames = FrameScanner::new(FramesFrom::Jupyter, SocketKind::Other);
    // Whether the browser has been sent whole frames only (a close frame may follow).
    let mut client_at_boundary = true;
    let end = tokio::select! {
        end = relay_to_upstream(from_client, &mut to_up, &mut client_frames, |action| {
            record_action(state, id, action)
        }) => end,
        end = relay_to_client(
            from_up, early, &to_client, &mut upstream_frames, &mut client_at_boundary,
        ) => end,
        () = relay_to.revoked(&mut changes) => RelayEnd::Revoked,
        () = to_client.closed() => RelayEnd::ClientGone,
    };
    let close = match end {
        RelayEnd::Revoked => {
            tracing::info!(notebook = %id, "credential revoked; closing its WebSocket");
            Some(close_frame(1008, "credential revoked"))
        }
        RelayEnd::Violation(why) => {
            tracing::info!(notebook = %id, why, "WebSocket protocol error; closing it");
            Some(close_frame(1002, why))
        }
        RelayEnd::UpstreamGone => Some(Bytes::from_static(&[0x88, 0])),
        RelayEnd::ClientGone => None,
    };
    // A close frame only between frames, and only if Jupyter's was not passed on already;
    // otherwise the connection just ends. Jupyter sees its connection closed either way.
    if let Some(frame) = close.filter(|_| client_at_boundary && !upstream_frames.saw_close) {
        if to_client.send(frame).await.is_err() {
            tracing::debug!(notebook = %id, "the browser left before the WebSocket's close");
        }
    }
    metrics.websocket_closed();
}

/// Browser → Jupyter: every piece as it came (the browser's masking kept), once its frames
/// check out; member actions noted on the way.
async fn relay_to_upstream(
    mut from_client: actix_web::dev::Payload,
    to_up: &mut (impl tokio::io::AsyncWrite + Unpin),
    frames: &mut FrameScanner,
    mut acted: impl FnMut(MemberAction),
) -> RelayEnd {
    use tokio::io::AsyncWriteExt;
    while let Some(Ok(piece)) = from_client.next().await {
        match frames.scan(&piece) {
            Ok(Some(action)) => acted(action),
            Ok(None) => {}
            Err(why) => return RelayEnd::Violation(why),
        }
        if to_up.write_all(&piece).await.is_err() {
            return RelayEnd::UpstreamGone;
        }
    }
    RelayEnd::ClientGone
}

/// Jupyter → browser: read in pieces of `WS_RELAY_CHUNK`, passed on as they are.
/// `at_boundary` says whether what the browser was sent so far ends with a whole frame.
async fn relay_to_client(
    mut from_up: impl tokio::io::AsyncRead + Unpin,
    early: Bytes,
    to_client: &tokio::sync::mpsc::Sender<Bytes>,
    frames: &mut FrameScanner,
    at_boundary: &mut bool,
) -> RelayEnd {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0; WS_RELAY_CHUNK];
    let mut piece = early;
    loop {
        if piece.is_empty() {
            match from_up.read(&mut buf).await {
                Ok(0) | Err(_) => return RelayEnd::UpstreamGone,
                Ok(n) => piece = Bytes::copy_from_slice(&buf[..n]),
            }
        }
        if let Err(why) = frames.scan(&piece) {
            return RelayEnd::Violation(why);
        }
        *at_boundary = false;
        if to_client.send(std::mem::take(&mut piece)).await.is_err() {
            return RelayEnd::ClientGone;
        }
        *at_boundary = frames.at_boundary();
    }
}

/// A close frame from Notebox to the browser (a server's: unmasked).
fn close_frame(code: u16, reason: &str) -> Bytes {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = vec![0x88, 2 + reason.len() as u8];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    Bytes::from(frame)
}

/// Which side wrote the frames a `FrameScanner` follows: browsers mask theirs, servers must
/// not (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FramesFrom {
    Browser,
    Jupyter,
}

/// Follows where the frames of a relayed WebSocket begin and end (RFC 6455 §5.2) without
/// keeping their payload: the bytes go on as they came, a long frame in many pieces. It
/// checks what passing them on relies on (masking, no extension, whole control frames) and
/// shows the messages of the browser to an `ActionWatch`.
struct FrameScanner {
    from: FramesFrom,
    /// The current frame's header while it is incomplete (2 to 14 bytes).
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The current frame's masking key, if masked, and how far into its payload we are.
    mask: Option<[u8; 4]>,
    position: usize,
    /// The current frame carries message data (not ping, pong or close); `fin`: it ends
    /// its message.
    data: bool,
    fin: bool,
    /// A close frame went by: the side that sent it is done.
    saw_close: bool,
    watch: Option<ActionWatch>,
}

impl FrameScanner {
    fn new(from: FramesFrom, kind: SocketKind) -> FrameScanner {
        FrameScanner {
            from,
            header: Vec::with_capacity(14),
            remaining: 0,
            mask: None,
            position: 0,
            data: false,
            fin: false,
            saw_close: false,
            watch: (from == FramesFrom::Browser && kind != SocketKind::Other).then(|| {
                ActionWatch {
                    kind,
                    seen: Vec::new(),
                    found: false,
                }
            }),
        }
    }

    /// Between two frames.
    fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.header.is_empty()
    }

    /// Follows the next piece of the stream; returns a member action that a message
    /// completed in it showed, or why the stream cannot be passed on.
    fn scan(&mut self, mut piece: &[u8]) -> Result<Option<MemberAction>, &'static str> {
        let mut action = None;
        while !piece.is_empty() {
            if self.remaining == 0 {
                let wanted = header_len(&self.header) - self.header.len();
                let (taken, rest) = piece.split_at(wanted.min(piece.len()));
                self.header.extend_from_slice(taken);
                piece = rest;
                if self.header.len() < header_len(&self.header) {
                    continue;
                }
                self.start_frame()?;
                if self.remaining == 0 {
                    action = action.or(self.end_frame());
                }
                continue;
            }
            let take = usize::try_from(self.remaining).map_or(piece.len(), |r| r.min(piece.len()));
            let (payload, rest) = piece.split_at(take);
            if let Some(watch) = self.watch.as_mut().filter(|w| self.data && w.wants_more()) {
                let plain: Vec<u8> = match self.mask {
                    Some(key) => payload
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ key[(self.position + i) % 4])
                        .collect(),
                    None => payload.to_vec(),
                };
                action = action.or(watch.feed(&plain));
            }
            self.position += take;
            self.remaining -= take as u64;
            piece = rest;
            if self.remaining == 0 {
                action = action.or(self.end_frame());
            }
        }
        Ok(action)
    }

    /// The header is complete: what frame is this?
    fn start_frame(&mut self) -> Result<(), &'static str> {
        let h = std::mem::take(&mut self.header);
        self.header = Vec::with_capacity(14);
        let (fin, reserved, opcode) = (h[0] & 0x80 != 0, h[0] & 0x70, h[0] & 0x0f);
        let masked = h[1] & 0x80 != 0;
        if reserved != 0 {
            return Err("reserved bits set, but no extension was agreed");
        }
        match (self.from, masked) {
            (FramesFrom::Browser, false) => return Err("frames from a client must be masked"),
            (FramesFrom::Jupyter, true) => return Err("frames from the server must not be masked"),
            _ => {}
        }
        let (length, key_at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            n => (u64::from(n), 2),
        };
        if length >> 63 != 0 {
            return Err("frame length out of range");
        }
        match opcode {
            0..=2 => {}
            8..=10 if fin && length <= 125 => self.saw_close |= opcode == 8,
            8..=10 => return Err("control frames must be whole and at most 125 bytes"),
            _ => return Err("unknown opcode"),
        }
        self.mask = masked.then(|| [h[key_at], h[key_at + 1], h[key_at + 2], h[key_at + 3]]);
        self.remaining = length;
        self.position = 0;
        self.data = opcode <= 2;
        self.fin = fin;
        // Text or binary starts a message; a continuation goes on with the current one.
        if let Some(watch) = self.watch.as_mut().filter(|_| opcode == 1 || opcode == 2) {
            watch.start();
        }
        Ok(())
    }

    /// The current frame is through: if it ended a message, what did the message say?
    fn end_frame(&mut self) -> Option<MemberAction> {
        if !(self.data && self.fin) {
            return None;
        }
        self.watch.as_mut().and_then(ActionWatch::finish)
    }
}

/// The length of a frame header (RFC 6455 §5.2), from what of it there is: 2 bytes until
/// those tell the rest.
fn header_len(header: &[u8]) -> usize {
    let [_, second, ..] = header else { return 2 };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let key = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + key
}

/// Whether a message from the browser is a member's action (`member_action_ws`), told
/// without holding the message: a kernel message is searched piece by piece (with the end
/// of the piece before, so a name split between two pieces is found), a terminal message is
/// judged by its start.
struct ActionWatch {
    kind: SocketKind,
    seen: Vec<u8>,
    found: bool,
}

/// Longer than any name `member_action_ws` looks for.
const ACTION_CARRY: usize = 32;
/// As much of a terminal message as `member_action_ws` needs.
const ACTION_HEAD: usize = 64;

impl ActionWatch {
    fn start(&mut self) {
        self.seen.clear();
        self.found = false;
    }

    fn wants_more(&self) -> bool {
        match self.kind {
            SocketKind::KernelChannels => !self.found,
            SocketKind::Terminal => self.seen.len() < ACTION_HEAD,
            SocketKind::Other => false,
        }
    }

    fn feed(&mut self, plain: &[u8]) -> Option<MemberAction> {
        match self.kind {
            SocketKind::KernelChannels => {
                self.seen.extend_from_slice(plain);
                let action = member_action_ws(self.kind, &self.seen);
                self.found = action.is_some();
                let old = self.seen.len().saturating_sub(ACTION_CARRY);
                self.seen.drain(..old);
                action
            }
            SocketKind::Terminal => {
                let room = ACTION_HEAD.saturating_sub(self.seen.len());
                self.seen.extend_from_slice(&plain[..room.min(plain.len())]);
                None
            }
            SocketKind::Other => None,
        }
    }

    fn finish(&mut self) -> Option<MemberAction> {
        let action = match self.kind {
            SocketKind::Terminal => member_action_ws(self.kind, &self.seen),
            _ => None,
        };
        self.start();
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scoped(v: &str) -> Option<String> {
        scoped_set_cookie(&HeaderValue::from_str(v).expect("header"), "/nb/abc123/")
            .map(|h| h.to_str().expect("ascii").to_string())
    }

    #[test]
    fn member_actions_are_told_from_a_tab_polling() {
        let http = |m: Method, p: &str, q: &str| member_action_http(&m, p, q);
        assert_eq!(
            http(Method::PUT, "api/contents/a.ipynb", ""),
            Some(MemberAction::FileChange)
        );
        assert_eq!(
            http(
                Method::GET,
                "api/contents/a.ipynb",
                "type=notebook&content=1"
            ),
            Some(MemberAction::Open)
        );
        assert_eq!(
            http(Method::POST, "api/kernels/k/interrupt", ""),
            Some(MemberAction::Execute)
        );
        assert_eq!(
            http(Method::POST, "api/sessions", ""),
            Some(MemberAction::Open)
        );
        // What an open, untouched JupyterLab asks every few seconds.
        for (m, p, q) in [
            (Method::GET, "api/kernels", ""),
            (Method::GET, "api/sessions", ""),
            (Method::GET, "api/terminals", ""),
            (Method::GET, "api/contents/", "content=1&hash=0"),
            (
                Method::GET,
                "api/contents/a.ipynb",
                "type=notebook&content=0",
            ),
            (Method::GET, "api/me", ""),
            (Method::GET, "api/status", ""),
            (Method::PUT, "lab/api/workspaces/default", ""),
            (Method::GET, "lab", ""),
        ] {
            assert_eq!(http(m.clone(), p, q), None, "{m} {p}?{q}");
        }
        let k = SocketKind::KernelChannels;
        assert_eq!(socket_kind("api/kernels/abc/channels"), k);
        assert_eq!(socket_kind("terminals/websocket/1"), SocketKind::Terminal);
        assert_eq!(
            member_action_ws(
                k,
                br#"{"header":{"msg_type":"execute_request"},"content":{"code":"1"}}"#
            ),
            Some(MemberAction::Execute)
        );
        assert_eq!(
            member_action_ws(k, br#"{"header": {"msg_type": "kernel_info_request"}}"#),
            None
        );
        assert_eq!(
            member_action_ws(SocketKind::Terminal, br#"["stdin","ls\r"]"#),
            Some(MemberAction::TerminalInput)
        );
        assert_eq!(
            member_action_ws(SocketKind::Terminal, br#"["set_size",24,80]"#),
            None
        );
        assert_eq!(
            member_action_ws(SocketKind::Other, b"execute_request"),
            None
        );
    }

    /// A browser's frame: masked with `key`.
    fn masked_frame(opcode: u8, fin: bool, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        frame
    }

    #[test]
    fn frames_are_followed_in_any_pieces_and_actions_found_across_them() {
        let execute = br#"{"header":{"msg_type":"execute_request"},"content":{"code":"1"}}"#;
        let mut padded = vec![b' '; 70_000];
        padded.extend_from_slice(execute);
        let mut stream = masked_frame(9, true, b"ping", [1, 2, 3, 4]);
        // A long message in two fragments, a pong between them.
        stream.extend(masked_frame(1, false, &padded[..69_990], [9, 8, 7, 6]));
        stream.extend(masked_frame(10, true, b"", [0, 0, 0, 0]));
        stream.extend(masked_frame(0, true, &padded[69_990..], [5, 5, 5, 5]));
        for piece_size in [1, 3, 14, 1000, 16 * 1024, stream.len()] {
            let mut frames = FrameScanner::new(FramesFrom::Browser, SocketKind::KernelChannels);
            let mut actions = Vec::new();
            for piece in stream.chunks(piece_size) {
                actions.extend(frames.scan(piece).expect("valid frames"));
            }
            assert_eq!(
                actions,
                vec![MemberAction::Execute],
                "pieces of {piece_size}"
            );
            assert!(frames.at_boundary());
        }
        let mut terminal = FrameScanner::new(FramesFrom::Browser, SocketKind::Terminal);
        let typed = masked_frame(1, true, br#"["stdin","ls\r"]"#, [7, 7, 7, 7]);
        assert_eq!(terminal.scan(&typed), Ok(Some(MemberAction::TerminalInput)));
        let resized = masked_frame(1, true, br#"["set_size",24,80]"#, [7, 7, 7, 7]);
        assert_eq!(terminal.scan(&resized), Ok(None));
    }

    #[test]
    fn frames_the_relay_cannot_pass_on_are_refused() {
        let refused = |from: FramesFrom, bytes: &[u8]| {
            FrameScanner::new(from, SocketKind::Other)
                .scan(bytes)
                .is_err()
        };
        // Unmasked from a browser, masked from Jupyter.
        assert!(refused(FramesFrom::Browser, &[0x82, 0x01, 0xff]));
        assert!(refused(
            FramesFrom::Jupyter,
            &masked_frame(2, true, b"x", [1, 1, 1, 1])
        ));
        // An extension's bits, an unknown opcode, a fragmented or long control frame.
        assert!(refused(FramesFrom::Jupyter, &[0xc2, 0x00]));
        assert!(refused(FramesFrom::Jupyter, &[0x83, 0x00]));
        assert!(refused(FramesFrom::Jupyter, &[0x09, 0x00]));
        assert!(refused(FramesFrom::Jupyter, &[0x89, 126, 0x00, 0x7e]));
        // A 200 MiB frame is only a header to follow.
        let mut big = FrameScanner::new(FramesFrom::Jupyter, SocketKind::Other);
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&(200u64 << 20).to_be_bytes());
        assert_eq!(big.scan(&header), Ok(None));
        assert!(!big.at_boundary());
        assert_eq!(big.scan(&vec![0; 1 << 20]), Ok(None));
        assert_eq!(big.remaining, 199 << 20);
    }

    #[test]
    fn only_jupyters_login_cookie_for_this_host_is_its_own() {
        assert_eq!(
            jupyter_login_cookie("127.0.0.1:8080"),
            "username-127-0-0-1-8080"
        );
        assert_eq!(
            jupyter_login_cookie("nb-x.lab.example"),
            "username-nb-x-lab-example"
        );
    }

    #[test]
    fn upstream_cookies_stay_under_the_notebook_path() {
        assert_eq!(
            scoped("_xsrf=2|x|y; expires=Wed, 01 Jan 2031 00:00:00 GMT; Path=/").as_deref(),
            Some("_xsrf=2|x|y; expires=Wed, 01 Jan 2031 00:00:00 GMT; Path=/nb/abc123/")
        );
        assert_eq!(
            scoped("a=b; Domain=example.org; path=/other; HttpOnly").as_deref(),
            Some("a=b; HttpOnly; Path=/nb/abc123/")
        );
        // A notebook cannot plant Notebox's own cookies, nor host-wide ones.
        assert_eq!(scoped("notebox_session=stolen; Path=/"), None);
        assert_eq!(scoped("NOTEBOX_login_csrf=x"), None);
        assert_eq!(scoped("__Host-x=1; Path=/; Secure"), None);
        assert_eq!(scoped("=novalue"), None);
    }
}
