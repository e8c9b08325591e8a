//! What a request for a notebook is (a page load, a WebSocket, a service worker's script)
//! and where inside the notebook it goes: the path after `/nb/{id}/` and its path key.

use std::collections::HashMap;

use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest};

use crate::auth::secrets;

/// The container's side of a notebook (`crate::jupyter`): Jupyter's port, its base
/// URL (`/nb/{id}/`, or `/nb/{id}/{key}/` with a path key) and what a path key looks like.
pub use crate::jupyter::{base_url, is_path_key, JUPYTER_PORT};

/// A browser asking for a page (a `GET` that accepts HTML).
pub fn wants_html(req: &HttpRequest) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

/// A browser loading a page (not a script's request, not a WebSocket).
pub fn is_navigation(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-fetch-mode")
        .is_some_and(|v| v.as_bytes() == b"navigate")
        || wants_html(req)
}

/// A request to switch to the WebSocket protocol.
pub fn is_websocket(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// A browser fetching a script to register as a service worker.
pub fn is_service_worker_script(req: &HttpRequest) -> bool {
    req.headers()
        .get("service-worker")
        .is_some_and(|v| v.as_bytes() == b"script")
        || req
            .headers()
            .get("sec-fetch-dest")
            .is_some_and(|v| v.as_bytes() == b"serviceworker")
}

/// Our own `token` parameter of the query string (for clients without cookies).
pub fn query_token(req: &HttpRequest) -> Option<String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("token").cloned())
        .filter(|t| !t.is_empty())
}

/// The query string without our own `token` parameter (Jupyter would take it as its own).
pub fn upstream_query(req: &HttpRequest) -> String {
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

/// The part of `/nb/{id}/{rest}` after the notebook's base URL, and whether the request
/// named the notebook's path key (`/nb/{id}/{key}/{rest}`). A stale key (an earlier run's)
/// is dropped but does not count.
pub fn inner_path<'a>(path: &'a str, key: Option<&str>) -> (&'a str, bool) {
    let rest = path
        .strip_prefix("/nb/")
        .and_then(|p| p.split_once('/'))
        .map_or("", |(_, rest)| rest);
    let (first, after) = rest.split_once('/').unwrap_or((rest, ""));
    match key {
        Some(key) if secrets::constant_time_eq(first, key) => (after, true),
        _ if is_path_key(first) => (after, false),
        _ => (rest, false),
    }
}

/// Where a request for `/nb/{id}/{tail}?{query}` wanted to land, relative to the
/// notebook (our own `token` parameter left out).
pub fn landing_path(req: &HttpRequest) -> String {
    let tail = req
        .path()
        .strip_prefix("/nb/")
        .and_then(|p| p.split_once('/'))
        .map_or("", |(_, rest)| rest);
    // A path key (this run's or an earlier run's) is Notebox's, not a place to land.
    let tail = match tail.split_once('/') {
        Some((first, rest)) if is_path_key(first) => rest,
        None if is_path_key(tail) => "",
        _ => tail,
    };
    let query = upstream_query(req);
    if query.is_empty() {
        tail.to_string()
    } else {
        format!("{tail}?{query}")
    }
}
