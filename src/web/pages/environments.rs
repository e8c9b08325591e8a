//! Environments: the API (`/api/v1/environments`) and the pages (`/environments`). Each
//! handler: who is asking, one call to `Environments`, JSON or a page.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::environments::{
    save_notebook, BuildView, CreateEnvironment, CredentialInput, EnvironmentView, SourceInput,
};
use crate::error::{ApiError, PageError, WebError};
use crate::model::BuildState;
use crate::web::extract::{ApiUser, SessionUser};
use crate::web::pages::{html, see_other};
use crate::web::views::Chrome;
use crate::web::AppState;

/// How long one log stream follows a build at most (a build's time limit is checked by
/// the builder; this only bounds an open connection).
const MAX_FOLLOW: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

fn version_of(text: &str) -> Result<i64, WebError> {
    text.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        WebError::bad_request(format!(
            "'{}' is not a version number (1, 2, 3…).",
            text.chars().take(32).collect::<String>()
        ))
    })
}

// ---- API ----

#[derive(serde::Serialize)]
struct EnvironmentList {
    environments: Vec<EnvironmentView>,
}

pub async fn list_api(
    caller: ApiUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let environments = state.environments.list(&caller.user).await?;
    Ok(HttpResponse::Ok().json(EnvironmentList { environments }))
}

pub async fn create_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    // Read by hand: serde's own words for a bad body ("unknown variant") become a 400
    // that says what the API takes.
    let req: CreateEnvironment = serde_json::from_value(body.into_inner()).map_err(|e| {
        WebError::bad_request(format!(
            "The body is not an environment: {e}. Send {{\"name\", \"shared\"?, \"source\": {{\"kind\": \"repo\" | \"files\" | \"dockerfile\", …}}}}."
        ))
    })?;
    let env = state.environments.create(&caller.user, req).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/v1/environments/{}", env.id)))
        .json(env))
}

pub async fn get_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.environments.get(&caller.user, &id).await?))
}

pub async fn delete_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.environments.delete(&caller.user, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BuildBody {
    r#ref: Option<String>,
}

pub async fn build_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // No body is fine (build the source's own ref); a body must be {"ref"?: "…"}.
    let reference = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<BuildBody>(&body)
            .map_err(|e| {
                WebError::bad_request(format!(
                    "The body is not a build request: {e}. Send {{}} or {{\"ref\": \"<branch, tag or commit>\"}}."
                ))
            })?
            .r#ref
    };
    let build = state
        .environments
        .request_build(&caller.user, &id, reference.as_deref())
        .await?;
    let status = if build.cache_hit {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(HttpResponse::build(status).json(build))
}

pub async fn get_build_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let version = version_of(&version)?;
    Ok(HttpResponse::Ok().json(state.environments.build(&caller.user, &id, version).await?))
}

pub async fn cancel_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let version = version_of(&version)?;
    Ok(HttpResponse::Ok().json(
        state
            .environments
            .cancel(&caller.user, &id, version)
            .await?,
    ))
}

#[derive(Deserialize)]
pub struct LogQuery {
    /// Start this many bytes in (a page resuming its stream).
    offset: Option<u64>,
    /// false: what is there now, without following the build.
    follow: Option<bool>,
}

/// The build's log as text, followed while the build runs.
pub async fn log_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let version = version_of(&version)?;
    Ok(log_response(&state, &caller.user, &id, version, &query).await?)
}

async fn log_response(
    state: &AppState,
    user: &crate::auth::User,
    id: &str,
    version: i64,
    query: &LogQuery,
) -> Result<HttpResponse, WebError> {
    // Asked first: someone else's environment is "not found" before any file is read.
    state.environments.build(user, id, version).await?;
    let path = state.environments.log_path(id, version);
    let follow = query.follow.unwrap_or(true);
    let envs = state.environments.clone();
    let (user, id) = (user.clone(), id.to_string());
    let start = tokio::time::Instant::now();
    let stream = futures_util::stream::unfold(
        (query.offset.unwrap_or(0), false),
        move |(offset, ended)| {
            let (path, envs, user, id) = (path.clone(), envs.clone(), user.clone(), id.clone());
            async move {
                if ended {
                    return None;
                }
                loop {
                    let chunk = read_from(&path, offset).await;
                    if !chunk.is_empty() {
                        let next = offset + chunk.len() as u64;
                        return Some((
                            Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)),
                            (next, false),
                        ));
                    }
                    let open = envs
                        .build(&user, &id, version)
                        .await
                        .is_ok_and(|b| b.state.is_open());
                    if !follow || !open || start.elapsed() > MAX_FOLLOW {
                        // One last read: the builder writes its last line, then the state.
                        let rest = read_from(&path, offset).await;
                        if rest.is_empty() {
                            return None;
                        }
                        let next = offset + rest.len() as u64;
                        return Some((Ok(bytes::Bytes::from(rest)), (next, true)));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
            }
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

/// Up to 64 KiB of the file from `offset` (nothing if it is not there yet).
async fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return Vec::new();
    };
    if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        return Vec::new();
    }
    let mut buf = vec![0u8; 64 * 1024];
    match file.read(&mut buf).await {
        Ok(n) => {
            buf.truncate(n);
            buf
        }
        Err(_) => Vec::new(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveBody {
    environment: Option<String>,
}

/// Saves a running notebook as a version of the member's environment.
pub async fn save_notebook_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<SaveBody>,
) -> Result<HttpResponse, ApiError> {
    let name = body.into_inner().environment.unwrap_or_default();
    let (env, build) = save(&state, &caller.user, &id, &name).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"environment": env, "build": build})))
}

async fn save(
    state: &AppState,
    user: &crate::auth::User,
    notebook_id: &str,
    name: &str,
) -> Result<(EnvironmentView, BuildView), WebError> {
    let row = state.notebooks.notebook_row(user, notebook_id).await?;
    let container = match (&row.state, &row.container_id) {
        (crate::model::NotebookState::Running, Some(c)) => c.clone(),
        _ => {
            return Err(WebError::conflict(format!(
                "The notebook is {}; only a running notebook can be saved as an environment.",
                row.state
            )))
        }
    };
    Ok(save_notebook(&state.environments, user, &row, &container, name).await?)
}

// ---- pages ----

#[derive(Template)]
#[template(path = "environments.html")]
struct ListPage {
    chrome: Chrome,
    mine: Vec<EnvironmentView>,
    shared: Vec<EnvironmentView>,
    images: Vec<(String, String)>,
    form: EnvironmentForm,
    error: Option<String>,
    dockerfile_allowed: bool,
}

/// The new-environment form, as sent (and shown again on an error).
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct EnvironmentForm {
    pub name: String,
    pub kind: String,
    pub shared: Option<String>,
    pub base: String,
    pub url: String,
    pub r#ref: String,
    pub subdir: String,
    pub username: String,
    pub password: String,
    pub requirements: String,
    pub apt: String,
    pub post_build: String,
    pub start: String,
    pub dockerfile: String,
    pub csrf: String,
}

async fn list_page(
    session: &SessionUser,
    state: &AppState,
    form: EnvironmentForm,
    error: Option<String>,
) -> Result<ListPage, WebError> {
    let all = state.environments.list(&session.user).await?;
    let (mine, shared): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|e| e.owner == session.user.username);
    let config = &state.config;
    Ok(ListPage {
        chrome: Chrome::new(session, "environments"),
        mine,
        shared,
        images: config
            .images
            .iter()
            .map(|i| (i.id.clone(), i.name.clone()))
            .collect(),
        form: EnvironmentForm {
            kind: if form.kind.is_empty() {
                "repo".into()
            } else {
                form.kind
            },
            password: String::new(),
            ..form
        },
        error,
        dockerfile_allowed: match config.environments.dockerfile {
            crate::config::DockerfilePolicy::Members => true,
            crate::config::DockerfilePolicy::Admins => session.user.is_admin,
            crate::config::DockerfilePolicy::Off => false,
        },
    })
}

pub async fn environments_page(
    session: SessionUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let page = list_page(&session, &state, EnvironmentForm::default(), None).await?;
    html(StatusCode::OK, page)
}

fn form_request(form: &EnvironmentForm) -> Result<CreateEnvironment, WebError> {
    let base = (!form.base.is_empty()).then(|| form.base.clone());
    let source = match form.kind.as_str() {
        "repo" => SourceInput::Repo {
            url: form.url.clone(),
            r#ref: Some(form.r#ref.clone()),
            subdir: Some(form.subdir.clone()),
            base,
            credential: (!form.username.is_empty() || !form.password.is_empty()).then(|| {
                CredentialInput {
                    username: form.username.clone(),
                    password: form.password.clone(),
                }
            }),
        },
        "files" => {
            let mut files = BTreeMap::new();
            for (name, text) in [
                ("requirements.txt", &form.requirements),
                ("apt.txt", &form.apt),
                ("postBuild", &form.post_build),
                ("start", &form.start),
            ] {
                if !text.trim().is_empty() {
                    files.insert(name.to_string(), text.replace("\r\n", "\n"));
                }
            }
            SourceInput::Files { base, files }
        }
        "dockerfile" => SourceInput::Dockerfile {
            dockerfile: form.dockerfile.replace("\r\n", "\n"),
            files: BTreeMap::new(),
            base,
        },
        other => {
            return Err(WebError::bad_request(format!(
                "'{other}' is not a source: choose a Git repository, files or a Dockerfile."
            )))
        }
    };
    Ok(CreateEnvironment {
        name: form.name.clone(),
        shared: Some(form.shared.is_some()),
        source,
    })
}

pub async fn create_environment(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<EnvironmentForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let result = match form_request(&form) {
        Ok(req) => state
            .environments
            .create(&session.user, req)
            .await
            .map_err(WebError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(env) => Ok(see_other(&format!("/environments/{}", env.id))),
        Err(e) if e.status.is_client_error() => {
            let status = e.status;
            html(
                status,
                list_page(&session, &state, form, Some(e.message)).await?,
            )
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "environment.html")]
struct DetailPage {
    chrome: Chrome,
    env: EnvironmentView,
    /// The version whose log the page shows.
    shown: Option<BuildView>,
    notice: Option<String>,
    source_text: String,
    /// A launch to continue when the shown build is ready.
    launch: Option<crate::web::pages::launch::LaunchParams>,
}

#[derive(Deserialize)]
pub struct DetailQuery {
    version: Option<String>,
    done: Option<String>,
    /// Sent here by a launch click: its pending key (start when this build is ready).
    launch: Option<String>,
}

pub async fn environment_page(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<DetailQuery>,
) -> Result<HttpResponse, PageError> {
    let env = state.environments.get(&session.user, &id).await?;
    let shown = match query.version.as_deref() {
        Some(v) => {
            let v = version_of(v)?;
            Some(
                env.versions
                    .iter()
                    .find(|b| b.version == v)
                    .cloned()
                    .ok_or_else(WebError::not_found)?,
            )
        }
        None => env.latest().cloned(),
    };
    let notice = match query.done.as_deref() {
        Some("cached") => {
            Some("Nothing changed since the newest version: no rebuild (a cache hit).".to_string())
        }
        Some("queued") => Some("A new version is queued.".to_string()),
        Some("cancelled") => Some("The build was cancelled.".to_string()),
        _ => None,
    };
    let source_text = serde_json::to_string_pretty(&env.source).unwrap_or_default();
    let launch = query.launch.as_deref().and_then(|key| {
        let mut p = state.pending_launches.peek(session.user.id, key)?;
        p.pending = key.to_string();
        Some(p)
    });
    html(
        StatusCode::OK,
        DetailPage {
            chrome: Chrome::new(&session, "environments"),
            env,
            shown,
            notice,
            source_text,
            launch,
        },
    )
}

#[derive(Deserialize)]
pub struct BuildForm {
    #[serde(default)]
    r#ref: String,
}

pub async fn build_page(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<BuildForm>,
) -> Result<HttpResponse, PageError> {
    let reference = Some(form.r#ref.as_str()).filter(|r| !r.trim().is_empty());
    let build = state
        .environments
        .request_build(&session.user, &id, reference)
        .await?;
    let done = if build.cache_hit { "cached" } else { "queued" };
    Ok(see_other(&format!(
        "/environments/{}?version={}&done={done}",
        id, build.version
    )))
}

pub async fn cancel_page(
    session: SessionUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (id, version) = path.into_inner();
    let version = version_of(&version)?;
    state
        .environments
        .cancel(&session.user, &id, version)
        .await?;
    Ok(see_other(&format!(
        "/environments/{id}?version={version}&done=cancelled"
    )))
}

pub async fn delete_page(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    state.environments.delete(&session.user, &id).await?;
    Ok(see_other("/environments"))
}

/// The page's log stream (the session's, not a token's).
pub async fn log_page(
    session: SessionUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, PageError> {
    let (id, version) = path.into_inner();
    let version = version_of(&version)?;
    Ok(log_response(&state, &session.user, &id, version, &query).await?)
}

/// The state of one version, for the page's poll.
pub async fn build_state_page(
    session: SessionUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (id, version) = path.into_inner();
    let version = version_of(&version)?;
    let b = state
        .environments
        .build(&session.user, &id, version)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(b))
}

#[derive(Deserialize)]
pub struct SaveForm {
    #[serde(default)]
    environment: String,
}

pub async fn save_notebook_page(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<SaveForm>,
) -> Result<HttpResponse, PageError> {
    let (env, build) = save(&state, &session.user, &id, &form.environment).await?;
    Ok(see_other(&format!(
        "/environments/{}?version={}",
        env.id, build.version
    )))
}

/// Template helpers.
pub fn size_text(bytes: &Option<i64>) -> String {
    match bytes {
        Some(b) => crate::environments::human_size(*b),
        None => "—".into(),
    }
}

pub fn state_class(state: &BuildState) -> &'static str {
    match state {
        BuildState::Ready => "ok",
        BuildState::Failed => "error",
        BuildState::Building | BuildState::Queued => "busy",
        BuildState::Cancelled | BuildState::Removed => "muted",
    }
}
