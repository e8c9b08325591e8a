//! `GET /notebooks/{id}/open`: a member's own running notebook, handed to its own origin
//! (`proxy::sites`) with a single-use code.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::config::OriginMode;
use crate::error::{PageError, WebError};
use crate::http::{encode_segment, location, urlencode};
use crate::proxy::ENTER_PATH;
use crate::web::extract::SessionUser;
use crate::web::AppState;

#[derive(askama::Template)]
#[template(path = "notebook_open.html")]
struct OpenConfirmPage<'a> {
    id: &'a str,
    name: &'a str,
}

#[derive(Deserialize)]
pub struct OpenQuery {
    #[serde(default)]
    path: Option<String>,
}

/// `GET /notebooks/{id}/open?path=lab` on Notebox's origin: the member's own running
/// notebook, handed to its origin with a single-use code (or, with `origin = "same"`,
/// straight to `/nb/{id}/…`).
pub async fn open_notebook(
    req: HttpRequest,
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<OpenQuery>,
) -> Result<HttpResponse, PageError> {
    let id = id.into_inner();
    let nb = state.notebooks.get_notebook(&session.user, &id).await?;
    // Sent here by another origin of the site (a notebook's page, maybe one of an earlier
    // notebook on the same port) or another site, or loaded in a frame or by a script:
    // the member confirms on Notebox's own page first. That page's opener policy cuts a
    // popup off from whoever opened it, so no page can hold a handle on the window the
    // notebook then opens in (and read its URL, path key included).
    let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes());
    let from_elsewhere = matches!(header("sec-fetch-site"), Some(b"same-site" | b"cross-site"))
        || header("sec-fetch-dest").is_some_and(|d| d != b"document");
    if from_elsewhere && nb.state == crate::model::NotebookState::Running {
        return super::html(
            StatusCode::OK,
            OpenConfirmPage {
                id: &nb.id,
                name: &nb.name,
            },
        );
    }
    let path = query.into_inner().path.unwrap_or_else(|| "lab".to_string());
    if !crate::auth::entry::valid_path(&path) {
        return Err(WebError::bad_request(
            "`path` must be a path inside the notebook, like lab or lab/tree/analysis.ipynb",
        )
        .into());
    }
    let page = format!("/notebooks/{}", encode_segment(&id));
    if nb.state != crate::model::NotebookState::Running {
        return Ok(super::see_other(&page));
    }
    let sites = &state.sites;
    let origin = match sites.origins().mode {
        OriginMode::Same => {
            return Ok(super::see_other(&format!(
                "/nb/{}/{path}",
                encode_segment(&id)
            )))
        }
        OriginMode::Ports => {
            sites.ensure(&id).await.map_err(|e| {
                WebError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_notebook_port",
                    e.to_string(),
                )
            })?;
            let info = req.connection_info();
            sites.notebook_origin(&id, info.scheme(), info.host())
        }
        OriginMode::Subdomains => sites.notebook_origin(&id, "https", ""),
    };
    let Some(origin) = origin else {
        return Ok(super::see_other(&page));
    };
    let code = state
        .accounts
        .issue_entry(session.user.id, &session.cookie, &id, &path);
    Ok(HttpResponse::SeeOther()
        .insert_header((
            header::LOCATION,
            location(&format!("{origin}{ENTER_PATH}?code={}", urlencode(&code))),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
