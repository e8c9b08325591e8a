//! What a notebook's own origin answers (its port, or its subdomain on Notebox's
//! listener): the entry handshake that gives a browser the notebook's own cookie, the
//! notebook itself (`/nb/{id}/…`, through the proxy), a redirect to its lab, and nothing of
//! Notebox's pages or API. Notebox's static files are added by the web layer.

use std::sync::Arc;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::config::OriginMode;
use crate::error::{PageError, WebError};
use crate::http::{encode_segment, is_https, location};

use super::origin::{notebook_cookie_name, Site};
use super::serve::serve;
use super::site_workers::SiteOf;
use super::state::ProxyState;
use super::upstream::UpstreamClient;

/// Where a code from Notebox is exchanged for the notebook's cookie, on the notebook's
/// origin (outside `/nb/{id}/`, so it can never shadow a path of Jupyter's).
pub const ENTER_PATH: &str = "/__notebox/enter";

/// Whether a request on Notebox's listener is for a notebook's subdomain.
pub fn is_notebook_host(ctx: &actix_web::guard::GuardContext<'_>) -> bool {
    let Some(proxy) = ctx.app_data::<web::Data<ProxyState>>() else {
        return false;
    };
    if proxy.origins().mode != OriginMode::Subdomains {
        return false;
    }
    // The same source as `crate::http::request_host`: the Host the client sent.
    let host = ctx
        .head()
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| ctx.head().uri.host().map(str::to_string))
        .unwrap_or_default();
    proxy.origins().notebook_of_host(&host).is_some()
}

/// Everything a notebook's origin answers, but for Notebox's static files.
pub async fn notebook_site(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<ProxyState>,
    upstream: web::Data<UpstreamClient>,
) -> HttpResponse {
    let site = req.conn_data::<Arc<SiteOf>>().cloned();
    let id = match &site {
        Some(site) => site.id.clone(),
        None => match proxy
            .origins()
            .notebook_of_host(&crate::http::request_host(&req))
        {
            Some(id) => id,
            None => return not_here(),
        },
    };
    let path = req.path();
    if path == ENTER_PATH {
        let inherited = site.is_some_and(|s| s.inherited);
        return enter(&req, &proxy, &id, inherited).await;
    }
    let base = format!("/nb/{id}/");
    if path.starts_with(&base) {
        return serve(
            req,
            payload,
            proxy,
            upstream,
            id.clone(),
            Site::Notebook(id),
        )
        .await;
    }
    if path == "/" || path == base.trim_end_matches('/') {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/nb/{}/lab", encode_segment(&id))))
            .finish();
    }
    not_here()
}

/// Anything else: this origin is the notebook's only.
fn not_here() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("This address serves one notebook only, under /nb/{id}/; Notebox's own pages are on its main address.\n")
}

#[derive(Deserialize)]
struct EnterQuery {
    #[serde(default)]
    code: String,
}

/// `GET /__notebox/enter?code=…` on the notebook's origin: the code for this notebook,
/// once, within 30 s, from a session that still lives → this notebook's own cookie, and on
/// to where the member was going.
async fn enter(req: &HttpRequest, proxy: &ProxyState, id: &str, inherited: bool) -> HttpResponse {
    use actix_web::ResponseError;
    // Codes come from Notebox (the same site); another site sending the member here with a
    // code (one of its own member's) is refused. So is any context but a top-level
    // navigation: a frame, a fetch or a script of a page already on this origin (another
    // notebook's that had the port) must never get the cookie set for it.
    let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes());
    let cross_site = header("sec-fetch-site") == Some(b"cross-site");
    let top_level = header("sec-fetch-dest").is_none_or(|d| d == b"document")
        && header("sec-fetch-mode").is_none_or(|m| m == b"navigate");
    if !top_level {
        return HttpResponse::Forbidden()
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body("A notebook is entered only by opening it in a tab or window, not in a frame or by a script.\n");
    }
    let code = web::Query::<EnterQuery>::from_query(req.query_string())
        .ok()
        .map(|q| q.into_inner().code)
        .filter(|_| !cross_site)
        .unwrap_or_default();
    let entered = match proxy.credentials().accounts().enter(&code, id).await {
        Ok(e) => e,
        Err(e) => return PageError(WebError::from(e)).error_response(),
    };
    let Some((value, entry)) = entered else {
        return link_used_or_expired(req, proxy, id);
    };
    let base = match proxy.browser_base(id).await {
        Ok(base) => base,
        Err(e) => return PageError(e).error_response(),
    };
    let mut response = HttpResponse::SeeOther();
    response
        .insert_header((header::LOCATION, location(&format!("{base}{}", entry.path))))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .cookie(notebook_cookie(req, id, value, &base));
    if inherited {
        // Honoured on secure contexts (https, localhost).
        response.insert_header((
            header::HeaderName::from_static("clear-site-data"),
            "\"cache\", \"storage\"",
        ));
    }
    response.finish()
}

/// The notebook's own cookie, good under its base URL `base`.
fn notebook_cookie(req: &HttpRequest, id: &str, value: String, base: &str) -> Cookie<'static> {
    let https = is_https(req);
    // `__Host-` cookies must have Path=/; without TLS the path confines it to the notebook
    // (and its path key). Either way the proxy takes it only under the path key.
    let path = if https {
        "/".to_string()
    } else {
        base.to_string()
    };
    Cookie::build(notebook_cookie_name(id, https), value)
        .path(path)
        .http_only(true)
        .secure(https)
        .same_site(SameSite::Lax)
        .finish()
}

/// An entry code that is unknown, used or expired: back to Notebox for a new one.
fn link_used_or_expired(req: &HttpRequest, proxy: &ProxyState, id: &str) -> HttpResponse {
    let back = proxy
        .main_url(req)
        .map(|m| format!("{m}/notebooks/{}", encode_segment(id)));
    let body = match back {
        Some(url) => format!(
            "This link to open the notebook was used already or has expired: links from \
             Notebox work once, for 30 seconds. Open the notebook again from Notebox: {url}\n"
        ),
        None => "This link to open the notebook was used already or has expired: links \
                 from Notebox work once, for 30 seconds. Open the notebook again from \
                 Notebox.\n"
            .to_string(),
    };
    HttpResponse::Forbidden()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}
