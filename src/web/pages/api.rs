//! JSON API v1 handlers. Each one: who is asking, one domain call, JSON.

use actix_web::HttpResponse;
use serde_json::json;

use crate::error::{ApiError, WebError};
use crate::web::extract::ApiUser;

pub async fn me(caller: ApiUser) -> Result<HttpResponse, ApiError> {
    let u = &caller.user;
    Ok(HttpResponse::Ok().json(json!({
        "id": u.id,
        "username": u.username,
        "is_admin": u.is_admin,
        "created_at": u.created_at,
    })))
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(WebError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        "No such API endpoint; see the API section of the README.",
    )
    .into())
}
