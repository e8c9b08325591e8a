//! Security headers and request logging.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;

pub use crate::http::PAGE_CSP;

/// Answers a request that asks to switch protocols outside `/nb/` with 400 at once, without
/// reading its body: actix-web reads an upgrade request's body to the end of the stream,
/// so such a request to a form route (say, `POST /logout` with `Upgrade: websocket` and a
/// body) was answered only when the client closed its side — a cheap way for a LAN client
/// to hold connections open. Only the notebook proxy switches protocols.
pub async fn refuse_stray_upgrades(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if req.headers().contains_key(header::UPGRADE) && !req.path().starts_with("/nb/") {
        let response = actix_web::HttpResponse::BadRequest()
            .insert_header((header::CONNECTION, "close"))
            .content_type("text/plain; charset=utf-8")
            .body("Only notebook WebSockets (/nb/…) switch protocols here.\n");
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Adds security headers to everything notebox itself answers. The Jupyter proxy (/nb/)
/// passes Jupyter's own headers through untouched; a response that set its own policy
/// (share pages) keeps it.
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let proxied = req.path().starts_with("/nb/");
    let mut res = next.call(req).await?;
    if proxied {
        return Ok(res);
    }
    let headers = res.headers_mut();
    let defaults: [(HeaderName, &'static str); 5] = [
        (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    Ok(res)
}

/// The path with share tokens cut out: a link-only share's token is its capability, and
/// whoever can read the journal must not be able to open it.
pub fn redact_path(path: &str) -> String {
    for prefix in ["/s/", "/api/v1/shares/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let tail = rest.find('/').map_or("", |i| &rest[i..]);
            return format!("{prefix}…{tail}");
        }
    }
    path.to_string()
}

/// One line per request. Logs the path only: query strings can carry tokens, and headers
/// (cookies, Authorization) are never logged.
pub async fn log_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = redact_path(req.path());
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    // Counted down when this future ends, also when the client goes away mid-request.
    struct InFlight(crate::metrics::Metrics);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.request_ended();
        }
    }
    let _in_flight = req
        .app_data::<actix_web::web::Data<crate::web::AppState>>()
        .map(|s| {
            let m = s.runtime.metrics().clone();
            m.request_started();
            InFlight(m)
        });
    let res = next.call(req).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match &res {
        Ok(r) => {
            let status = r.status().as_u16();
            // Proxied Jupyter traffic is chatty; it is logged at debug level.
            if path == "/healthz" || path.starts_with("/static/") || path.starts_with("/nb/") {
                tracing::debug!(%method, %path, status, ms, %peer, "request");
            } else {
                tracing::info!(%method, %path, status, ms = format!("{ms:.1}"), %peer, "request");
            }
        }
        Err(e) => tracing::warn!(%method, %path, error = %e, %peer, "request failed"),
    }
    res
}

#[cfg(test)]
mod tests {
    use super::redact_path;

    #[test]
    fn share_tokens_never_reach_the_log() {
        assert_eq!(redact_path("/s/SeCrEt/view/a.ipynb"), "/s/…/view/a.ipynb");
        assert_eq!(redact_path("/s/SeCrEt"), "/s/…");
        assert_eq!(
            redact_path("/api/v1/shares/SeCrEt/fork"),
            "/api/v1/shares/…/fork"
        );
        assert_eq!(redact_path("/gallery"), "/gallery");
    }
}
