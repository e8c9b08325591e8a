//! The handlers, one file per area of the product. Every state-changing request has had
//! its CSRF token checked before a handler runs (`web::middleware::csrf`).

pub mod account;
pub mod admin;
pub mod admin_directory;
pub mod api;
pub mod environments;
pub mod gpus;
pub mod health;
pub mod jobs;
pub mod jobs_api;
pub mod launch;
pub mod login;
pub mod notebooks;
pub mod oidc;
pub mod open_notebook;
pub mod reservations;
pub mod secrets;
pub mod share;
pub mod usage;

use actix_web::http::header;
use actix_web::HttpResponse;

/// A rendered page. Pages show personal data: never cached.
pub fn html(
    status: actix_web::http::StatusCode,
    page: impl askama::Template,
) -> Result<HttpResponse, PageError> {
    let body = page.render().map_err(WebError::internal)?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}

/// After a successful POST: go to `to` (303, so a reload does not repeat the action).
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, crate::web::location(to)))
        .finish()
}

use actix_web::{web, HttpRequest};

use crate::error::{ApiError, PageError, WebError};

fn is_api(req: &HttpRequest) -> bool {
    req.path().starts_with("/api/")
}

/// Bad input answered in the caller's language: JSON for the API, a page for browsers.
fn bad_input(req: &HttpRequest, message: String) -> actix_web::Error {
    let e = WebError::bad_request(message);
    if is_api(req) {
        ApiError(e).into()
    } else {
        PageError(e).into()
    }
}

pub fn form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(64 * 1024)
        .error_handler(|err, req| bad_input(req, format!("The form could not be read: {err}")))
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(256 * 1024)
        .error_handler(|err, req| bad_input(req, format!("The JSON body could not be read: {err}")))
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, req| {
        bad_input(req, format!("The query string could not be read: {err}"))
    })
}

pub fn path_config() -> web::PathConfig {
    // A path that does not parse (e.g. /notebooks/abc) names nothing that exists.
    web::PathConfig::default().error_handler(|_, req| {
        if is_api(req) {
            ApiError(WebError::not_found()).into()
        } else {
            PageError(WebError::not_found()).into()
        }
    })
}

pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, actix_web::Error> {
    Err(if is_api(&req) {
        ApiError(WebError::not_found()).into()
    } else {
        PageError(WebError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            "There is no page at this address.",
        ))
        .into()
    })
}
