//! Share pages (anonymous, read-only), the gallery, and the share/fork buttons.

use crate::model::wire;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::error::{ApiError, PageError};
use crate::share::{FileEntry, FilePreview, SharedNotebook};
use crate::web::extract::{session_from_request, ApiUser, SessionUser};
use crate::web::views::relative_time;
use crate::web::AppState;

use super::{html, see_other};

/// Share pages show other people's content: nothing on them may run script.
pub const SHARE_CSP: &str =
    "default-src 'none'; img-src 'self' data:; style-src 'self'; frame-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn share_html(status: StatusCode, page: impl Template) -> Result<HttpResponse, PageError> {
    let mut res = html(status, page)?;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SHARE_CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(res)
}

/// Who is looking: a logged-in member can fork (with the session's CSRF token).
async fn viewer(req: &HttpRequest) -> Option<(String, String)> {
    session_from_request(req)
        .await
        .ok()
        .flatten()
        .map(|s| (s.user.username, s.csrf))
}

struct Header {
    token: String,
    title: String,
    owner: String,
    image: String,
    modified: String,
    viewer: Option<(String, String)>,
}

fn header_for(
    state: &AppState,
    shared: &SharedNotebook,
    files: &[FileEntry],
    viewer: Option<(String, String)>,
) -> Header {
    let image = shared
        .share
        .image_id
        .as_deref()
        .and_then(|id| state.config.image(id))
        .map(|i| i.name.clone())
        .unwrap_or_else(|| shared.share.image.clone());
    let modified = files
        .iter()
        .map(|f| f.modified)
        .max()
        .map(relative_time)
        .unwrap_or_else(|| "never".into());
    Header {
        token: shared.share.token.clone(),
        title: shared.share.notebook_name.clone(),
        owner: shared.share.owner.clone(),
        image,
        modified,
        viewer,
    }
}

struct FileRow {
    path: String,
    size: String,
    modified: String,
}

fn human_size(bytes: u64) -> String {
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1_048_575 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

#[derive(Template)]
#[template(path = "share.html")]
struct SharePage {
    h: Header,
    files: Vec<FileRow>,
    /// Why the file list stopped early, when it did.
    truncated: Option<String>,
    main_path: Option<String>,
    main_html: Option<String>,
    main_error: Option<String>,
}

/// `/s/{token}` → `/s/{token}/`.
pub async fn share_redirect(token: web::Path<String>) -> HttpResponse {
    see_other(&format!(
        "/s/{}/",
        crate::web::encode_segment(&token.into_inner())
    ))
}

pub async fn share_overview(
    req: HttpRequest,
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let (shared, overview) = state.shares.share_overview(&token).await?;
    let files = &overview.listing.files;
    let h = header_for(&state, &shared, files, viewer(&req).await);
    let (main_path, main_html, main_error) = match overview.main {
        Some((path, Ok(html))) => (Some(path), Some(html), None),
        Some((path, Err(e))) => (
            Some(path),
            None,
            Some(format!("This notebook cannot be shown: {e}.")),
        ),
        None => (None, None, None),
    };
    let rows = files
        .iter()
        .map(|f| FileRow {
            path: f.path.clone(),
            size: human_size(f.size),
            modified: relative_time(f.modified),
        })
        .collect();
    share_html(
        StatusCode::OK,
        SharePage {
            h,
            files: rows,
            truncated: overview.listing.truncated,
            main_path,
            main_html,
            main_error,
        },
    )
}

#[derive(Template)]
#[template(path = "share_file.html")]
struct ShareFilePage {
    h: Header,
    path: String,
    html: Option<String>,
    image: Option<(String, String)>,
    text: Option<String>,
    unavailable: Option<String>,
}

pub async fn share_view(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (token, rel) = path.into_inner();
    let (shared, listing, shown) = state.shares.shared_file_preview(&token, &rel).await?;
    let h = header_for(&state, &shared, &listing.files, viewer(&req).await);
    let mut page = ShareFilePage {
        h,
        path: rel,
        html: None,
        image: None,
        text: None,
        unavailable: None,
    };
    match shown {
        FilePreview::Html(h) => page.html = Some(h),
        FilePreview::Image { mime, base64 } => page.image = Some((mime.to_string(), base64)),
        FilePreview::Text(t) => page.text = Some(t),
        FilePreview::Unavailable(m) => page.unavailable = Some(m),
    }
    share_html(StatusCode::OK, page)
}

/// The file as it is, always as a download (never rendered on our origin).
pub async fn share_raw(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (token, rel) = path.into_inner();
    let (_, file) = state.shares.shared_file(&token, &rel).await?;
    let handle = tokio::fs::File::from_std(file.file);
    let name = rel
        .rsplit('/')
        .next()
        .unwrap_or("download")
        .replace(['"', '\\', '\r', '\n'], "_");
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    let stream = tokio_util_stream(handle);
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ))
        .insert_header(("cache-control", "private, no-cache"))
        .streaming(stream))
}

/// A file as a stream of chunks, read as the client takes them.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

pub async fn fork_share_form(
    session: SessionUser,
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let nb = state.shares.fork_shared(&session.user, &token).await?;
    Ok(see_other(&format!("/notebooks/{}", nb.id)))
}

pub async fn fork_own_form(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let nb = state.shares.fork_own(&session.user, &id).await?;
    Ok(see_other(&format!("/notebooks/{}", nb.id)))
}

#[derive(Deserialize)]
pub struct ShareForm {
    #[serde(default)]
    visibility: String,
}

pub async fn create_share_form(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<ShareForm>,
) -> Result<HttpResponse, PageError> {
    let visibility = crate::share::parse_visibility(&form.visibility)?;
    state
        .shares
        .create_share(&session.user, &id, visibility)
        .await?;
    Ok(see_other(&format!("/notebooks/{id}?done=shared#sharing")))
}

pub async fn revoke_share_form(
    session: SessionUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (id, token) = path.into_inner();
    state.shares.revoke_share(&session.user, &token).await?;
    Ok(see_other(&format!("/notebooks/{id}?done=unshared#sharing")))
}

struct GalleryCard {
    token: String,
    title: String,
    owner: String,
    image: String,
    preview: String,
    shared: String,
}

#[derive(Template)]
#[template(path = "gallery.html")]
struct GalleryPage {
    cards: Vec<GalleryCard>,
    viewer: Option<(String, String)>,
}

pub async fn gallery(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    // Previews were computed when each share was made or its notebook stopped: an
    // anonymous visit reads only the database.
    let cards = state
        .shares
        .public_shares(200)
        .await?
        .into_iter()
        .map(|s| {
            let image = s
                .image_id
                .as_deref()
                .and_then(|id| state.config.image(id))
                .map(|i| i.name.clone())
                .unwrap_or_else(|| s.image.clone());
            GalleryCard {
                token: s.token,
                title: s.notebook_name,
                owner: s.owner,
                image,
                preview: s.preview,
                shared: relative_time(s.created_at),
            }
        })
        .collect();
    share_html(
        StatusCode::OK,
        GalleryPage {
            cards,
            viewer: viewer(&req).await,
        },
    )
}

// ---- JSON API ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareBody {
    visibility: Option<String>,
}

pub async fn create_share_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: Option<web::Json<ShareBody>>,
) -> Result<HttpResponse, ApiError> {
    let visibility = body
        .and_then(|b| b.into_inner().visibility)
        .unwrap_or_else(|| "link".into());
    let visibility = crate::share::parse_visibility(&visibility)?;
    let share = state
        .shares
        .create_share(&caller.user, &id, visibility)
        .await?;
    Ok(HttpResponse::Created().json(share))
}

pub async fn list_shares_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let shares = state.shares.list_shares(&caller.user, &id).await?;
    Ok(HttpResponse::Ok().json(wire::ShareList { shares }))
}

pub async fn delete_share_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.shares.revoke_share(&caller.user, &token).await?;
    Ok(HttpResponse::Ok().json(wire::Revoked {
        token: token.into_inner(),
        revoked: true,
    }))
}

pub async fn fork_own_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(state.shares.fork_own(&caller.user, &id).await?))
}

pub async fn fork_share_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(state.shares.fork_shared(&caller.user, &token).await?))
}
