//! The authenticated Jupyter proxy at `/nb/{id}/…`: HTTP (streamed both ways) and
//! WebSocket (relayed frame by frame). Only the notebook's owner gets through; notebox's
//! cookies and the caller's credentials never reach Jupyter, which gets the notebook's own
//! token instead.
//!
//! Everything the proxy needs is in its own `ProxyState` (credential lookup, routing,
//! caches); it knows nothing of Notebox's pages, which depend on it, not the reverse — so
//! it can be mounted on a listener (and origin) of its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use futures_util::{SinkExt, StreamExt};

use crate::activity::MemberAction;
use crate::auth::{secrets, Accounts, User};
use crate::db::notebooks::{self as q, ProxyTarget};
use crate::db::Db;
use crate::error::WebError;
use crate::http::{authorization_token, here, PAGE_CSP};
use crate::model::NotebookState;
use crate::origin::Origins;
use crate::runtime::Runtime;

/// Kernel messages can be large (plots, data frames); Jupyter's own limit is 10 MiB by
/// default but can be raised. We pass up to this much in one frame.
pub const MAX_WS_FRAME: usize = 256 * 1024 * 1024;
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
    let cookie = cookie_name.as_deref().and_then(|name| req.cookie(name));
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

/// An upstream `Set-Cookie`, confined to the notebook's own path (`Domain` dropped, `Path`
/// replaced); cookies named like Notebox's own are dropped so a notebook cannot plant them.
fn scoped_set_cookie(value: &HeaderValue, notebook_id: &str) -> Option<HeaderValue> {
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
    out.push_str(&format!("; Path=/nb/{notebook_id}/"));
    HeaderValue::from_str(&out).ok()
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
    let (user, credential) = match identify(&req, &state, jupyter_token, &site).await {
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
    let ip = match (&target.container_ip, target.state) {
        (Some(ip), NotebookState::Running) => ip.clone(),
        _ => return not_running(&req, &state, &id, &target, &site).await,
    };
    let query = upstream_query(&req);
    let path = req.path();
    let inner_path = path
        .strip_prefix("/nb/")
        .and_then(|p| p.split_once('/'))
        .map_or("", |(_, rest)| rest);
    if let Some(action) = member_action_http(req.method(), inner_path, &query) {
        record_action(&state, &id, action);
    }
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
        proxy_http(&req, payload, &upstream, &url, headers, &id).await
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
    notebook_id: &str,
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
            if let Some(v) = scoped_set_cookie(value, notebook_id) {
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
/// then relays every frame both ways until either side closes.
async fn proxy_websocket(
    req: &HttpRequest,
    payload: web::Payload,
    upstream: &UpstreamClient,
    url: &str,
    headers: HeaderMap,
    relay_to: Relay,
) -> Result<HttpResponse, String> {
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let mut ws = upstream.client.ws(url).max_frame_size(MAX_WS_FRAME);
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
    let (up_response, upstream_frames) = match connected {
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
    let chosen = up_response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let protocols: Vec<&str> = chosen.iter().map(String::as_str).collect();
    let (response, session, client_messages) =
        actix_ws::handle_with_protocols(req, payload, &protocols).map_err(|e| e.to_string())?;
    let client_messages = client_messages.max_frame_size(MAX_WS_FRAME);
    // Subscribed before the relay starts: a revocation from here on is seen.
    let changes = relay_to.state.accounts.events().subscribe();
    actix_web::rt::spawn(async move {
        relay(session, client_messages, upstream_frames, relay_to, changes).await;
    });
    Ok(response)
}

type UpstreamFramed = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

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
}

async fn relay(
    mut client: actix_ws::Session,
    mut from_client: actix_ws::MessageStream,
    upstream: UpstreamFramed,
    relay_to: Relay,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    use actix_ws::Message as C;
    use awc::ws::{Frame as F, Message as U};
    let (state, id) = (&relay_to.state, relay_to.notebook_id.as_str());
    let metrics = state.runtime.metrics().clone();
    metrics.websocket_opened();
    let (mut to_up, mut from_up) = upstream.split();
    loop {
        tokio::select! {
            changed = changes.changed() => {
                // Logout, password change, disable or revoke: close at once if it was ours.
                if changed.is_err() || !relay_to.still_allowed().await {
                    tracing::info!(notebook = %id, "credential revoked; closing its WebSocket");
                    let _ = client
                        .close(Some(actix_ws::CloseReason {
                            code: actix_ws::CloseCode::Policy,
                            description: Some("credential revoked".into()),
                        }))
                        .await;
                    let _ = to_up.send(U::Close(None)).await;
                    break;
                }
            }
            msg = from_client.next() => {
                let Some(Ok(msg)) = msg else {
                    let _ = to_up.send(U::Close(None)).await;
                    break;
                };
                let action = match &msg {
                    C::Text(t) => member_action_ws(relay_to.kind, t.as_bytes()),
                    C::Binary(b) => member_action_ws(relay_to.kind, b),
                    _ => None,
                };
                if let Some(action) = action {
                    record_action(state, id, action);
                }
                let out = match msg {
                    C::Text(t) => U::Text(t),
                    C::Binary(b) => U::Binary(b),
                    C::Continuation(item) => U::Continuation(item),
                    C::Ping(p) => U::Ping(p),
                    C::Pong(p) => U::Pong(p),
                    C::Close(reason) => {
                        let _ = to_up.send(U::Close(reason)).await;
                        break;
                    }
                    C::Nop => continue,
                };
                if to_up.send(out).await.is_err() {
                    let _ = client.close(None).await;
                    break;
                }
            }
            frame = from_up.next() => {
                let Some(Ok(frame)) = frame else {
                    let _ = client.close(None).await;
                    break;
                };
                let sent = match frame {
                    F::Text(bytes) => match bytestring::ByteString::try_from(bytes) {
                        Ok(text) => client.text(text).await,
                        Err(_) => break,
                    },
                    F::Binary(b) => client.binary(b).await,
                    F::Continuation(item) => client.continuation(item).await,
                    F::Ping(p) => client.ping(&p).await,
                    F::Pong(p) => client.pong(&p).await,
                    F::Close(reason) => {
                        let _ = client.close(reason).await;
                        break;
                    }
                };
                if sent.is_err() {
                    let _ = to_up.send(U::Close(None)).await;
                    break;
                }
            }
        }
    }
    metrics.websocket_closed();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scoped(v: &str) -> Option<String> {
        scoped_set_cookie(&HeaderValue::from_str(v).expect("header"), "abc123")
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
