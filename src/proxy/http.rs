//! The HTTP relay: a request passed to Jupyter and its answer passed back, both bodies
//! streamed as they come (long downloads and uploads are never held whole).

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest, HttpResponse};

use super::upstream::{is_hop_by_hop, scoped_set_cookie, UpstreamClient};

/// Relays a request to Jupyter at `url`; `jupyter_base` confines the cookies Jupyter sets.
/// `Err` when Jupyter cannot be reached.
pub async fn proxy_http(
    req: &HttpRequest,
    payload: web::Payload,
    upstream: &UpstreamClient,
    url: &str,
    headers: HeaderMap,
    jupyter_base: &str,
) -> Result<HttpResponse, String> {
    let mut up = upstream
        .client()
        .request(req.method().clone(), url)
        .no_decompress();
    for (name, value) in headers.iter() {
        up = up.append_header((name.clone(), value.clone()));
    }
    let has_body = req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let response = if has_body {
        up.send_stream(payload).await
    } else {
        up.send().await
    }
    .map_err(|e| e.to_string())?;
    let mut out = HttpResponse::build(response.status());
    for (name, value) in response.headers() {
        if name == header::SET_COOKIE {
            if let Some(v) = scoped_set_cookie(value, jupyter_base) {
                out.append_header((header::SET_COOKIE, v));
            }
        } else if name.as_str() == "service-worker-allowed" {
            // A service worker stays inside `/nb/{id}/`: it must not reach the entry path,
            // nor the next notebook served on this port.
            continue;
        } else if !is_hop_by_hop(name) {
            out.append_header((name.clone(), value.clone()));
        }
    }
    Ok(out.streaming(response))
}
