use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::web::AppState;

/// `200 {"status":"ok"}` once the database answers; also how many reconciler passes have
/// completed (tests wait for passes rather than sleep).
pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let version = state
        .db
        .call(|c| crate::db::migrations::current_version(c))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(crate::model::wire::Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
            schema_version: version,
            reconciler_passes: state.runtime.reconciler_passes(),
        }))
}
