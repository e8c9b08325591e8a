//! What the proxy answers itself instead of Jupyter: an error as a page or as JSON, the
//! page of a notebook that is not running, and the way to the notebook's own origin (or
//! back to Notebox) for a browser at the wrong door.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

use crate::db::notebooks::ProxyTarget;
use crate::error::WebError;
use crate::http::PAGE_CSP;
use crate::model::NotebookState;

use super::origin::Site;
use super::request::{is_websocket, landing_path, wants_html};
use super::state::ProxyState;

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

/// An error, as a page for a browser's page load and as JSON for anything else.
pub fn error_response(req: &HttpRequest, e: WebError) -> HttpResponse {
    use actix_web::ResponseError;
    if wants_html(req) {
        crate::error::PageError(e).error_response()
    } else {
        crate::error::ApiError(e).error_response()
    }
}

/// A notebook that is not running: `409`, as a page with a start button or as JSON.
pub async fn not_running(
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
    let csrf = session_csrf(req, state, site).await;
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

/// The start button needs the session's CSRF token; token-only callers get none, and so
/// does a notebook's origin (Notebox's session is not sent there, or not read).
async fn session_csrf(req: &HttpRequest, state: &ProxyState, site: &Site) -> Option<String> {
    let session = match site {
        Site::Main => req.cookie(crate::http::session_cookie(req))?,
        Site::Notebook(_) => return None,
    };
    state
        .credentials()
        .session(session.value())
        .await
        .ok()
        .flatten()
        .map(|(_, csrf)| csrf)
}

/// A browser's request for a notebook on Notebox's own origin, with isolated origins:
/// pages go through `/notebooks/{id}/open` (which hands the browser to the notebook's
/// origin); anything else is told where the notebook is.
pub fn elsewhere(req: &HttpRequest, id: &str) -> HttpResponse {
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

/// A browser on a notebook's origin without that notebook's cookie (never entered, or
/// logged out since): back to Notebox, which checks who it is and hands it over again.
pub fn enter_again(req: &HttpRequest, state: &ProxyState, id: &str) -> HttpResponse {
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
