//! The proxy's entry points, and one request for a notebook step by step: where the
//! notebook runs, who is calling, whether it is theirs and allowed from where it came, then
//! the HTTP or WebSocket relay to Jupyter.

use std::time::Instant;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::User;
use crate::error::WebError;
use crate::http::here;
use crate::model::NotebookState;

use super::actions::{member_action_http, socket_kind};
use super::caller::{Arrival, Caller, Credential};
use super::http::proxy_http;
use super::origin::{origin_allowed, Site};
use super::replies::{elsewhere, enter_again, error_response, not_running};
use super::request::{
    base_url, inner_path, is_service_worker_script, is_websocket, upstream_query, wants_html,
    JUPYTER_PORT,
};
use super::state::ProxyState;
use super::upstream::{upstream_headers, UpstreamClient};
use super::websocket::{proxy_websocket, Relay};

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
    if state.origins().isolated() && !req.headers().contains_key(header::AUTHORIZATION) {
        return elsewhere(&req, &id);
    }
    serve(req, payload, state, upstream, id, Site::Main).await
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
    let metrics = state.metrics().clone();
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
    let found = state.target(&id).await;
    let path_key = match &found {
        Ok(Some(t)) => t.path_key.clone(),
        _ => None,
    };
    let path = req.path().to_string();
    let (inner_path, keyed) = inner_path(&path, path_key.as_deref());
    let arrival = Arrival {
        site: &site,
        isolated: state.origins().isolated(),
        jupyter_token: match &found {
            Ok(Some(t)) => Some(t.jupyter_token.as_str()),
            _ => None,
        },
        // With a path key, the notebook's cookie counts only under it: a page of another
        // notebook that had this port cannot name these URLs (it never learns the key).
        cookie_counts: keyed || path_key.is_none() || site == Site::Main,
    };
    let (user, credential) = match admit(&req, &state, &arrival, &id).await {
        Ok(caller) => caller,
        Err(reply) => return reply,
    };
    let target = match found {
        Ok(Some(t)) if t.owner_id == user.id => t,
        Ok(_) => return error_response(&req, WebError::not_found()),
        Err(e) => return error_response(&req, e),
    };
    if let Some(refusal) = refused_from_here(&req, &site) {
        return refusal;
    }
    let ip = match (&target.container_ip, target.state) {
        (Some(ip), NotebookState::Running) => ip.clone(),
        _ => return not_running(&req, &state, &id, &target, &site).await,
    };
    let query = upstream_query(&req);
    if let Some(action) = member_action_http(req.method(), inner_path, &query) {
        state.member_acted(&id, action);
    }
    let to = Destination::new(&id, &ip, path_key.as_deref(), inner_path, &query);
    let headers = upstream_headers(&req, &target.jupyter_token);
    let result = if is_websocket(&req) {
        let relay = Relay {
            state: state.clone(),
            notebook_id: id.clone(),
            user_id: user.id,
            credential,
            kind: socket_kind(inner_path),
        };
        proxy_websocket(&req, payload, &upstream, &to.url("ws"), headers, relay).await
    } else {
        proxy_http(
            &req,
            payload,
            &upstream,
            &to.url("http"),
            headers,
            &to.jupyter_base,
        )
        .await
    };
    result.unwrap_or_else(|message| jupyter_unreachable(&req, &state, &id, &message))
}

/// The caller and the credential they came with, or the answer for one who does not get
/// through.
async fn admit(
    req: &HttpRequest,
    state: &ProxyState,
    arrival: &Arrival<'_>,
    id: &str,
) -> Result<(User, Credential), HttpResponse> {
    let caller = match state.credentials().identify(req, arrival).await {
        Ok(caller) => caller,
        Err(e) => return Err(error_response(req, e)),
    };
    Err(match caller {
        Caller::User(user, credential) => return Ok((*user, credential)),
        Caller::Refused(why) => error_response(req, WebError::forbidden(why)),
        Caller::BadCredentials => error_response(
            req,
            WebError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "The access token is not valid.",
            ),
        ),
        Caller::Anonymous if wants_html(req) => match arrival.site {
            Site::Main => error_response(req, WebError::login_required(&here(req))),
            Site::Notebook(_) => enter_again(req, state, id),
        },
        Caller::Anonymous => error_response(req, WebError::unauthorized()),
    })
}

/// A request that no notebook gets, whoever sends it: from another origin, or a service
/// worker's script.
fn refused_from_here(req: &HttpRequest, site: &Site) -> Option<HttpResponse> {
    if !origin_allowed(req, site) {
        return Some(error_response(
            req,
            WebError::forbidden(
                "Cross-origin requests to notebooks are refused (the request comes from \
                 another origin than the notebook's own).",
            ),
        ));
    }
    if is_service_worker_script(req) {
        // A service worker outlives its notebook in the browser and sees every page of
        // the origin (and so the next notebook's URLs on this port); JupyterLab uses none.
        return Some(error_response(
            req,
            WebError::forbidden("Service workers are not allowed for notebooks."),
        ));
    }
    None
}

/// Where a request goes in the notebook's container.
struct Destination {
    /// `{ip}:{port}` of Jupyter.
    host: String,
    /// Jupyter's own base URL, with the path key its container has.
    jupyter_base: String,
    /// Jupyter's path, then the query string (without our `token`).
    path: String,
    query: String,
}

impl Destination {
    fn new(id: &str, ip: &str, path_key: Option<&str>, inner_path: &str, query: &str) -> Self {
        let jupyter_base = base_url(id, path_key);
        Destination {
            host: format!("{ip}:{JUPYTER_PORT}"),
            path: format!("{jupyter_base}{inner_path}"),
            jupyter_base,
            query: query.to_string(),
        }
    }

    fn url(&self, scheme: &str) -> String {
        let Destination {
            host, path, query, ..
        } = self;
        if query.is_empty() {
            format!("{scheme}://{host}{path}")
        } else {
            format!("{scheme}://{host}{path}?{query}")
        }
    }
}

/// Jupyter could not be reached: the routing is looked up afresh next time, and the
/// reconciler looks at the notebook now.
fn jupyter_unreachable(
    req: &HttpRequest,
    state: &ProxyState,
    id: &str,
    message: &str,
) -> HttpResponse {
    tracing::warn!(notebook = %id, error = %message, "proxy cannot reach Jupyter");
    state.forget_target(id);
    state.wake_reconciler();
    error_response(
        req,
        WebError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "jupyter_unreachable",
            "The notebook's Jupyter server is not answering right now. If it keeps happening, restart the notebook.",
        ),
    )
}
