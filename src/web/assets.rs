//! Static files, embedded in the binary and served with ETags.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

/// `/static/{path}?h={hash}`: a URL that changes when the file does, so it can be cached
/// for a year. Used by the templates.
pub fn static_url(path: &str) -> String {
    match Assets::get(path) {
        Some(file) => format!(
            "/static/{path}?h={}",
            &hex::encode(file.metadata.sha256_hash())[..12]
        ),
        None => format!("/static/{path}"),
    }
}

pub async fn serve_static(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let Some(file) = Assets::get(path.as_str()) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("no such file");
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let versioned = req.query_string().starts_with("h=");
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300"
    };
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if not_modified {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, cache))
            .finish();
    }
    let mime = mime_guess::from_path(path.as_str()).first_or_octet_stream();
    HttpResponse::Ok()
        .content_type(mime.essence_str())
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache))
        .body(file.data.into_owned())
}
