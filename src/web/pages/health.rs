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
            reconciler_passes: state.reconciler.passes(),
        }))
}

/// `/metrics` in the Prometheus text format, for a scraper holding `[metrics] token` or
/// calling from an address in `[metrics] allow`. Off (404) unless one of them is set.
pub async fn metrics(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    use actix_web::http::StatusCode;

    use crate::error::WebError;
    let config = &state.config.metrics;
    if !config.enabled() {
        return Err(WebError::new(
            StatusCode::NOT_FOUND,
            "metrics_off",
            "Metrics are off here: an admin can set [metrics] token or allow in the config.",
        )
        .into());
    }
    // An address the allow list can trust: a malformed forwarding chain counts as none.
    let allowed = crate::web::extract::client_ip(&req, &state.config.auth.trusted_proxies)
        .is_some_and(|ip| config.allow.contains(&ip));
    if !allowed {
        match crate::http::authorization_token(&req) {
            Some(t)
                if !config.token.is_empty()
                    && crate::auth::secrets::constant_time_eq(&t, &config.token) => {}
            Some(_) => return Err(WebError::forbidden("This token does not open /metrics.").into()),
            None if config.token.is_empty() => {
                return Err(WebError::forbidden(
                    "/metrics answers only the addresses in [metrics] allow.",
                )
                .into())
            }
            None => {
                return Ok(HttpResponse::Unauthorized()
                    .insert_header(("www-authenticate", "Bearer realm=\"notebox metrics\""))
                    .json(crate::model::wire::ErrorBody {
                        error: crate::model::wire::ErrorDetail {
                            code: "unauthorized",
                            message: "Send the [metrics] token as `Authorization: Bearer <token>`.",
                        },
                    }))
            }
        }
    }
    let scrape =
        crate::platform::scrape::scrape(&state.db, &state.telemetry, state.reconciler.passes())
            .await?;
    let text = state
        .metrics
        .encode(scrape)
        .map_err(|_| WebError::internal("the metrics could not be encoded"))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .body(text))
}
