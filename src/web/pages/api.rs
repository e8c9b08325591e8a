//! JSON API v1 handlers. Each one: who is asking, one domain call, JSON.

use crate::error::{ApiError, WebError};
use crate::model::wire;
use crate::web::extract::ApiUser;
use actix_web::HttpResponse;

pub async fn me(
    caller: ApiUser,
    state: actix_web::web::Data<crate::web::AppState>,
) -> Result<HttpResponse, ApiError> {
    let policy = crate::groups::policy(&state.config, &caller.user);
    let storage = crate::storage::status(&state.db, &state.config, &caller.user).await?;
    let u = caller.user;
    Ok(HttpResponse::Ok().json(wire::Me {
        id: u.id,
        username: u.username,
        is_admin: u.is_admin,
        created_at: u.created_at,
        display_name: u.display_name,
        source: u.source,
        groups: policy.groups.clone(),
        policy,
        storage: wire::MeStorage::of(&storage),
    }))
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(WebError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        "No such API endpoint; see the API section of the README.",
    )
    .into())
}

// ---- notebooks ----

use actix_web::web;
use serde::Deserialize;

use crate::notebooks::{AutoShutdown, CreateNotebook};
use crate::web::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNotebookBody {
    name: Option<String>,
    image: Option<String>,
    /// An environment's id (instead of `image`): its newest ready version.
    environment: Option<String>,
    /// A repository whose files go into /notebooks at the first start.
    repo: Option<RepoBody>,
    machine: Option<String>,
    /// Minutes until auto-shutdown; 0 means never; absent means the default.
    auto_shutdown_minutes: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoBody {
    url: String,
    r#ref: Option<String>,
    open: Option<String>,
}

fn auto_shutdown_from_minutes(minutes: Option<i64>) -> Result<AutoShutdown, WebError> {
    match minutes {
        None => Ok(AutoShutdown::Default),
        Some(0) => Ok(AutoShutdown::Never),
        Some(m) if (1..=7 * 24 * 60).contains(&m) => Ok(AutoShutdown::After(
            std::time::Duration::from_secs(m as u64 * 60),
        )),
        Some(m) => Err(WebError::bad_request(format!(
            "auto_shutdown_minutes must be between 1 and 10080 (one week), or 0 for never; got {m}"
        ))),
    }
}

pub async fn list_notebooks(
    req: actix_web::HttpRequest,
    caller: ApiUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut notebooks = state.notebooks.list_notebooks(&caller.user).await?;
    for nb in &mut notebooks {
        state.sites.fill_jupyter_url(&req, nb);
    }
    Ok(HttpResponse::Ok().json(wire::NotebookList { notebooks }))
}

pub async fn create_notebook(
    caller: ApiUser,
    state: web::Data<AppState>,
    body: web::Json<CreateNotebookBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let environment = match (&body.environment, &body.image) {
        (Some(_), Some(_)) => {
            return Err(WebError::bad_request(
                "Send either \"image\" or \"environment\", not both.",
            )
            .into())
        }
        (Some(id), None) => Some(state.environments.runnable(&caller.user, id).await?),
        (None, _) => None,
    };
    let request = CreateNotebook {
        name: body.name.unwrap_or_default(),
        image: body.image.unwrap_or_default(),
        machine: body.machine.unwrap_or_default(),
        auto_shutdown: auto_shutdown_from_minutes(body.auto_shutdown_minutes)?,
        environment,
        repo: body.repo.map(|r| crate::notebooks::RepoRequest {
            url: r.url,
            reference: r.r#ref,
            open: r.open,
        }),
    };
    let notebook = state
        .notebooks
        .create_notebook(&caller.user, request)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/v1/notebooks/{}", notebook.id)))
        .json(notebook))
}

pub async fn get_notebook(
    req: actix_web::HttpRequest,
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut nb = state.notebooks.get_notebook(&caller.user, &id).await?;
    state.sites.fill_jupyter_url(&req, &mut nb);
    Ok(HttpResponse::Ok().json(nb))
}

pub async fn delete_notebook(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.notebooks.delete_notebook(&caller.user, &id).await?;
    Ok(HttpResponse::Accepted().json(wire::Deleted {
        id: id.into_inner(),
        deleted: true,
    }))
}

pub async fn start_notebook(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Accepted().json(state.notebooks.start_notebook(&caller.user, &id).await?))
}

pub async fn stop_notebook(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Accepted().json(state.notebooks.stop_notebook(&caller.user, &id).await?))
}

pub async fn restart_notebook(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Accepted().json(state.notebooks.restart_notebook(&caller.user, &id).await?))
}

#[derive(Deserialize)]
pub struct ExtendBody {
    auto_shutdown: Option<String>,
}

/// Restarts the auto-shutdown countdown; `{"auto_shutdown": "12h"}` also changes its length.
pub async fn extend_notebook(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: Option<web::Json<ExtendBody>>,
) -> Result<HttpResponse, ApiError> {
    let choice = match body.and_then(|b| b.into_inner().auto_shutdown) {
        None => None,
        Some(s) => Some(AutoShutdown::from_choice(&s).map_err(WebError::bad_request)?),
    };
    Ok(HttpResponse::Ok().json(
        state
            .notebooks
            .extend_notebook(&caller.user, &id, choice)
            .await?,
    ))
}

/// Resets the idle clock ("Keep running").
pub async fn keep_alive(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.notebooks.keep_alive(&caller.user, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemptBody {
    exempt: bool,
}

/// Admins: exempt any notebook from idle reclaim (or end the exemption).
pub async fn set_idle_exempt(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<ExemptBody>,
) -> Result<HttpResponse, ApiError> {
    if !caller.user.is_admin {
        return Err(
            WebError::forbidden("Only admins can exempt notebooks from idle reclaim.").into(),
        );
    }
    state.notebooks.set_idle_exempt(&id, body.exempt).await?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"id": id.into_inner(), "idle_exempt": body.exempt})))
}

#[derive(Deserialize)]
pub struct LogsQuery {
    tail: Option<usize>,
}

pub async fn notebook_logs(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let logs = state
        .notebooks
        .notebook_logs(&caller.user, &id, q.tail.unwrap_or(500))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(wire::Logs {
            running: logs.is_some(),
            truncated: logs.as_ref().is_some_and(|l| l.truncated),
            logs: logs.map(|l| l.text).unwrap_or_default(),
        }))
}

pub async fn images(_caller: ApiUser, state: web::Data<AppState>) -> HttpResponse {
    let images = state
        .config
        .images
        .iter()
        .map(|i| wire::Image {
            id: i.id.clone(),
            name: i.name.clone(),
            image: i.image.clone(),
            description: i.description.clone(),
            gpu: i.gpu,
            launcher: i.launcher,
        })
        .collect();
    HttpResponse::Ok().json(wire::ImageList {
        images,
        allow_custom_images: state.config.notebooks.allow_custom_images,
    })
}

/// The machine types the caller may use (their groups' policy).
pub async fn machines(caller: ApiUser, state: web::Data<AppState>) -> HttpResponse {
    let policy = crate::groups::policy(&state.config, &caller.user);
    let machines = state
        .config
        .machines
        .iter()
        .filter(|m| policy.check_machine(&m.id, &m.name).is_ok())
        .map(|m| wire::Machine {
            id: m.id.clone(),
            name: m.name.clone(),
            cpus: m.cpus,
            memory_mib: m.memory_mib,
            gpus: m.gpus,
        })
        .collect();
    HttpResponse::Ok().json(wire::MachineList { machines })
}
