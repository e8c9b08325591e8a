//! Security headers, request logging, and the refusals that apply to every request
//! (CSRF, stray upgrades, duplicated cookies, requests from notebooks' origins).

mod csrf;
mod disk_full;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;

pub use crate::http::PAGE_CSP;
pub use csrf::{csrf_duty, require_csrf, CsrfDuty};
pub use disk_full::refuse_writes_when_full;

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

/// Refuses a request that carries one of Notebox's cookies twice. Cookies ignore ports, so
/// a notebook's page can write `notebox_session=…` (with another path or domain, next to
/// the real one) for the whole host: that request gets 400, and every copy of the cookie
/// it could have come with is deleted, so the next one starts clean (log in again).
pub async fn refuse_duplicate_cookies(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let duplicate = crate::proxy::origin::duplicate_cookie(
        req.headers()
            .get_all(header::COOKIE)
            .filter_map(|v| v.to_str().ok()),
    );
    let Some(name) = duplicate else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    tracing::warn!(cookie = %name, path = %redact_path(req.path()), "refused a request with a duplicated Notebox cookie");
    let mut response = actix_web::HttpResponse::BadRequest();
    response
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Honoured on secure contexts (https, localhost): every cookie of the site goes.
        .insert_header((HeaderName::from_static("clear-site-data"), "\"cookies\""));
    let host = req.connection_info().host().to_string();
    let (host, _) = crate::proxy::origin::split_host(&host);
    // The copies this request could carry: any path that is a prefix of this one, host-only
    // or with a Domain.
    let mut paths = vec!["/".to_string()];
    let mut prefix = String::new();
    // Only plain segments: a `;` or `,` in the path must not become a cookie attribute.
    let plain = |s: &&str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b))
    };
    for segment in req
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .take(16)
        .take_while(plain)
    {
        prefix.push('/');
        prefix.push_str(segment);
        paths.push(prefix.clone());
        paths.push(format!("{prefix}/"));
    }
    for path in &paths {
        for domain in [None, Some(host)] {
            let mut removal = format!("{name}=; Max-Age=0; Path={path}");
            if let Some(d) = domain {
                removal.push_str(&format!("; Domain={d}"));
            }
            if name.starts_with("__Host-") || name.starts_with("__Secure-") {
                removal.push_str("; Secure");
            }
            if let Ok(v) = HeaderValue::from_str(&removal) {
                response.append_header((header::SET_COOKIE, v));
            }
        }
    }
    let body = format!(
        "Your browser sent Notebox's cookie {name} twice: a page opened from this machine (for \
         example a notebook's) may have tried to plant one next to yours. This request was \
         refused and both were deleted; log in to Notebox again.\n"
    );
    Ok(req.into_response(response.body(body)))
}

/// Refuses requests to Notebox's own pages and API that a notebook's page may send
/// (cookies ignore ports, and a notebook's subdomain is the same site): any whose `Origin`
/// is a notebook's origin; with isolated origins also writes from an opaque origin
/// (`Origin: null`: a sandboxed frame, or a redirect across origins), writes from another
/// origin of the site or another site (`Sec-Fetch-Site`), and sub-resource loads from
/// another origin of the site. Notebox's own pages send none of these.
pub async fn refuse_notebook_origins(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let from_notebook = match req.app_data::<actix_web::web::Data<crate::proxy::ProxyState>>() {
        Some(proxy) => {
            let host = crate::http::request_host(req.request());
            // A notebook's own subdomain is routed to the notebook, not refused here.
            !is_notebook_host(&req) && from_another_origin(&req, proxy.origins(), &host)
        }
        None => false,
    };
    if from_notebook {
        tracing::warn!(path = %redact_path(req.path()), "refused a request from a notebook's origin");
        let response = actix_web::HttpResponse::Forbidden()
            .content_type("application/json")
            .body(
                r#"{"error": {"code": "notebook_origin", "message": "Requests from a notebook's page to Notebox are refused: notebooks run on origins of their own and cannot act as their member on Notebox."}}"#,
            );
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Addressed to a notebook's own subdomain (`origin = "subdomains"`): routed to the
/// notebook proxy, which has rules of its own.
fn is_notebook_host(req: &ServiceRequest) -> bool {
    req.app_data::<actix_web::web::Data<crate::proxy::ProxyState>>()
        .is_some_and(|proxy| {
            let host = crate::http::request_host(req.request());
            proxy.origins().notebook_of_host(&host).is_some()
        })
}

fn from_another_origin(
    req: &ServiceRequest,
    origins: &crate::proxy::origin::Origins,
    host: &str,
) -> bool {
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin.is_some_and(|o| origins.is_notebook_origin(o, host)) {
        return true;
    }
    if !origins.isolated() {
        return false;
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let write = !matches!(
        *req.method(),
        actix_web::http::Method::GET
            | actix_web::http::Method::HEAD
            | actix_web::http::Method::OPTIONS
    );
    let site = text("sec-fetch-site");
    let navigation = text("sec-fetch-mode") == "navigate";
    (write
        && (origin.is_some_and(|o| o.trim() == "null")
            || matches!(site, "same-site" | "cross-site")))
        || (!navigation && site == "same-site")
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
    let defaults: [(HeaderName, &'static str); 6] = [
        (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
        // A window that loads one of Notebox's pages is cut off from whoever opened it
        // (a notebook's page cannot keep a handle on it).
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
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
    struct InFlight(crate::platform::metrics::Metrics);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.request_ended();
        }
    }
    let _in_flight = req
        .app_data::<actix_web::web::Data<crate::web::AppState>>()
        .map(|s| {
            let m = s.metrics.clone();
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
