//! Launch links: `/launch?repo=…&ref=…&image=…|environment=…&machine=…&open=…` shows,
//! after login, what would start (repository, commit, image, machine, GPUs) and starts it
//! only on the member's click (a POST with the form's CSRF token): a link alone never
//! spends anyone's GPUs. `/launch/wait/{id}` follows the start and opens the file;
//! `/badge.svg` is the button to put in a README.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::config::{ImageSpec, MachineType};
use crate::environments::{EnvironmentView, Runnable};
use crate::error::{PageError, WebError};
use crate::git::{GitRef, RepoUrl};
use crate::model::{BuildState, NotebookState};
use crate::notebooks::{AutoShutdown, CreateNotebook, RepoRequest};
use crate::web::extract::SessionUser;
use crate::web::pages::{html, see_other};
use crate::web::views::Chrome;
use crate::web::{urlencode, AppState};

/// Launch clicks whose repository's environment is still building, by a one-time key
/// only the member who clicked gets: the environment's page goes on with it (and no
/// crafted link can, since the key is made by the member's own confirmed POST).
#[derive(Clone, Default)]
pub struct PendingLaunches(Arc<Mutex<HashMap<String, Pending>>>);

#[derive(Clone)]
pub struct Pending {
    pub user_id: i64,
    pub params: LaunchParams,
    pub made: std::time::Instant,
}

/// Launches waiting for their builds, per member and in all.
const MAX_PENDING_PER_MEMBER: usize = 10;
const MAX_PENDING: usize = 10_000;

/// How long a pending launch waits for its build.
const PENDING_FOR: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

impl PendingLaunches {
    fn put(&self, user_id: i64, params: LaunchParams) -> Result<String, WebError> {
        let key = crate::auth::secrets::random_secret(18);
        let mut map = self
            .0
            .lock()
            .map_err(|_| WebError::internal("the pending launches' lock is poisoned"))?;
        map.retain(|_, p| p.made.elapsed() < PENDING_FOR);
        let mine = map.values().filter(|p| p.user_id == user_id).count();
        if mine >= MAX_PENDING_PER_MEMBER || map.len() >= MAX_PENDING {
            return Err(WebError::conflict(format!(
                "{mine} of your launches are waiting for their builds; start them (or wait) before launching more."
            )));
        }
        map.insert(
            key.clone(),
            Pending {
                user_id,
                params,
                made: std::time::Instant::now(),
            },
        );
        Ok(key)
    }

    /// The member's pending launch of that key, if it is theirs and still waiting.
    pub fn peek(&self, user_id: i64, key: &str) -> Option<LaunchParams> {
        let map = self.0.lock().ok()?;
        map.get(key)
            .filter(|p| p.user_id == user_id && p.made.elapsed() < PENDING_FOR)
            .map(|p| p.params.clone())
    }

    fn take(&self, user_id: i64, key: &str) -> Option<LaunchParams> {
        let mut map = self.0.lock().ok()?;
        match map.get(key) {
            Some(p) if p.user_id == user_id && p.made.elapsed() < PENDING_FOR => {
                map.remove(key).map(|p| p.params)
            }
            _ => None,
        }
    }
}

/// What a launch link (and its confirmation form) carries.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct LaunchParams {
    pub repo: String,
    pub r#ref: String,
    pub image: String,
    pub environment: String,
    pub machine: String,
    pub open: String,
    /// The commit the member confirmed (the form only).
    pub commit: String,
    /// A pending launch going on after its build (the environment page's form only).
    pub pending: String,
    /// The version a pending launch waits for (kept with it, never from a form).
    pub version: String,
    pub csrf: String,
}

impl LaunchParams {
    /// The link's query string (without the form's own fields).
    pub fn query(&self) -> String {
        let mut q = vec![format!("repo={}", urlencode(&self.repo))];
        for (k, v) in [
            ("ref", &self.r#ref),
            ("image", &self.image),
            ("environment", &self.environment),
            ("machine", &self.machine),
            ("open", &self.open),
        ] {
            if !v.is_empty() {
                q.push(format!("{k}={}", urlencode(v)));
            }
        }
        q.join("&")
    }
}

/// A launch link, checked: everything the confirmation page names.
struct Plan {
    repo: String,
    reference: Option<String>,
    image: Option<ImageSpec>,
    environment: Option<(EnvironmentView, i64)>,
    machine: MachineType,
    open: Option<String>,
}

#[derive(Template)]
#[template(path = "launch.html")]
struct LaunchPage {
    chrome: Chrome,
    error: Option<String>,
    p: LaunchParams,
    repo: String,
    commit: String,
    commit_what: String,
    image_text: String,
    machine: Option<MachineType>,
    gpus_free: usize,
    gpus_total: usize,
    open: String,
    link: String,
}

fn bad(message: impl Into<String>) -> WebError {
    WebError::bad_request(message)
}

async fn check(
    state: &AppState,
    session: &SessionUser,
    p: &LaunchParams,
) -> Result<Plan, WebError> {
    if p.repo.trim().is_empty() {
        return Err(bad(
            "A launch link needs repo=<the repository's https:// URL>; add ref=, image= or environment=, machine= and open= as needed.",
        ));
    }
    let url = RepoUrl::parse(&p.repo).map_err(|e| bad(format!("repo: {e}")))?;
    let reference = match p.r#ref.trim() {
        "" => None,
        r => Some(
            GitRef::parse(r)
                .map_err(|e| bad(format!("ref: {e}")))?
                .as_str()
                .to_string(),
        ),
    };
    let config = &state.config;
    if !p.image.is_empty() && !p.environment.is_empty() {
        return Err(bad("A launch link names image= or environment=, not both."));
    }
    let image = match p.image.trim() {
        "" => None,
        id => Some(config.image(id).cloned().ok_or_else(|| {
            bad(format!(
                "image: '{id}' is not in this Notebox's catalog; use one of {}.",
                config.image_ids()
            ))
        })?),
    };
    let environment = match p.environment.trim() {
        "" => None,
        id => {
            let env = state.environments.get(&session.user, id).await?;
            let version = env.newest_ready().map(|b| b.version).ok_or_else(|| {
                bad(format!(
                    "environment: '{}' has no ready version yet.",
                    env.name
                ))
            })?;
            Some((env, version))
        }
    };
    // No machine named: the first the member's groups allow (a named one they may not use
    // is refused when the notebook is made, with the reason).
    let policy = crate::groups::policy(config, &session.user);
    let machine = match p.machine.trim() {
        "" => config
            .machines
            .iter()
            .find(|m| policy.check_machine(&m.id, &m.name).is_ok())
            .cloned(),
        id => config.machine(id).cloned(),
    }
    .ok_or_else(|| {
        bad(format!(
            "machine: '{}' is not a machine type here; use one of {}.",
            p.machine,
            config
                .machines
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let checked = crate::notebooks::rules::check_repo(&RepoRequest {
        url: url.as_str().to_string(),
        reference: reference.clone(),
        open: Some(p.open.clone()),
    })
    .map_err(|e| bad(e.to_string()))?;
    Ok(Plan {
        repo: url.as_str().to_string(),
        reference,
        image,
        environment,
        machine,
        open: checked.open,
    })
}

/// `GET /launch`: the confirmation page (login first; nothing starts here).
pub async fn launch_page(
    session: SessionUser,
    state: web::Data<AppState>,
    query: web::Query<LaunchParams>,
) -> Result<HttpResponse, PageError> {
    let p = query.into_inner();
    let mut page = LaunchPage {
        chrome: Chrome::new(&session, "notebooks"),
        error: None,
        link: format!("/launch?{}", p.query()),
        p: p.clone(),
        repo: String::new(),
        commit: String::new(),
        commit_what: String::new(),
        image_text: String::new(),
        machine: None,
        gpus_free: 0,
        gpus_total: 0,
        open: String::new(),
    };
    let plan = match check(&state, &session, &p).await {
        Ok(plan) => plan,
        Err(e) => {
            page.error = Some(e.message);
            return html(StatusCode::BAD_REQUEST, page);
        }
    };
    let reference = plan
        .reference
        .as_deref()
        .map(GitRef::parse)
        .transpose()
        .ok()
        .flatten();
    let work = state.config.data_dir.join("environments").join("work");
    let _ = std::fs::create_dir_all(&work);
    let url = RepoUrl::parse(&plan.repo).map_err(|e| bad(e.to_string()))?;
    let resolved = match crate::git::resolve(&url, reference.as_ref(), None, &work).await {
        Ok(r) => r,
        Err(e) => {
            page.error = Some(format!("The repository cannot be reached as linked: {e}"));
            let status = if e.is_member_error() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::BAD_GATEWAY
            };
            return html(status, page);
        }
    };
    let counts = state.gpu_map.gpu_counts().await?;
    page.repo = plan.repo.clone();
    page.commit = resolved.commit.clone();
    page.commit_what = resolved.what.clone();
    page.image_text = match (&plan.image, &plan.environment) {
        (Some(i), _) => format!("{} ({})", i.name, i.image),
        (None, Some((e, v))) => format!("{}’s environment “{}”, version {v}", e.owner, e.name),
        (None, None) => format!(
            "the repository's own environment (its Dockerfile, or requirements.txt, apt.txt, postBuild…), built on {}",
            state
                .config
                .images
                .first()
                .map(|i| i.name.as_str())
                .unwrap_or("the first catalog image")
        ),
    };
    page.machine = Some(plan.machine.clone());
    page.gpus_free = counts.free;
    page.gpus_total = counts.total;
    page.open = plan.open.unwrap_or_default();
    html(StatusCode::OK, page)
}

/// `POST /launch`: the member's click. Starts the notebook (or, for a repository that
/// brings its own environment, builds that first and starts when it is ready).
pub async fn launch(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<LaunchParams>,
) -> Result<HttpResponse, PageError> {
    let p = clicked_params(&state, &session, form.into_inner())?;
    let plan = check(&state, &session, &p).await?;
    // What starts is what the page showed: the confirmed commit.
    let commit = match p.commit.trim() {
        "" => plan.reference.clone(),
        c => Some(
            GitRef::parse(c)
                .ok()
                .and_then(|r| r.as_commit().map(str::to_string))
                .ok_or_else(|| bad("commit: not a commit id; open the launch link again."))?,
        ),
    };
    let runnable = match choose_runnable(&state, &session, &p, &plan, &commit).await? {
        Runs::Now(runnable) => runnable,
        Runs::AfterBuild(to_build) => return Ok(to_build),
    };
    Ok(create_launched(&state, &session, plan, commit, runnable).await?)
}

/// The click's parameters: the form's, or those of the pending launch it goes on with
/// (the environment's page going on with a click made earlier: only that click's own
/// parameters count, never the form's).
fn clicked_params(
    state: &AppState,
    session: &SessionUser,
    p: LaunchParams,
) -> Result<LaunchParams, WebError> {
    if p.pending.is_empty() {
        // Only a pending launch (kept here, never a form) names a version.
        return Ok(LaunchParams {
            version: String::new(),
            ..p
        });
    }
    let mut taken = state
        .pending_launches
        .take(session.user.id, &p.pending)
        .ok_or_else(|| {
            bad("This launch was started already (or has expired): open the launch link again.")
        })?;
    taken.pending = p.pending;
    Ok(taken)
}

/// What a confirmed launch runs: the catalog image or an environment now, or, while
/// the repository's environment builds, the way to its page.
enum Runs {
    Now(Option<Runnable>),
    AfterBuild(HttpResponse),
}

/// The environment the notebook runs in, if any: the link's, or the repository's own.
async fn choose_runnable(
    state: &AppState,
    session: &SessionUser,
    p: &LaunchParams,
    plan: &Plan,
    commit: &Option<String>,
) -> Result<Runs, WebError> {
    match (&plan.image, &plan.environment) {
        (Some(_), _) => Ok(Runs::Now(None)),
        // A launch going on after its repository's build runs that build's version,
        // not whatever is newest by then.
        (None, Some((env, _))) => Ok(Runs::Now(Some(match p.version.parse::<i64>() {
            Ok(v) if !p.pending.is_empty() => {
                state
                    .environments
                    .runnable_at(&session.user, &env.id, v)
                    .await?
            }
            _ => state.environments.runnable(&session.user, &env.id).await?,
        }))),
        (None, None) => repository_environment(state, session, p, plan, commit).await,
    }
}

/// The repository's own environment at the commit: runnable when built; else built
/// first, and the environment's page follows the build and starts the notebook when it
/// is ready (this click stands for both), going on by a one-time key.
async fn repository_environment(
    state: &AppState,
    session: &SessionUser,
    p: &LaunchParams,
    plan: &Plan,
    commit: &Option<String>,
) -> Result<Runs, WebError> {
    let commit = commit
        .clone()
        .ok_or_else(|| bad("Open the launch link again: it has no commit."))?;
    let (env_id, build) = state
        .environments
        .for_repository(&session.user, &plan.repo, &commit)
        .await?;
    if build.state != BuildState::Ready {
        let then = LaunchParams {
            environment: env_id.clone(),
            r#ref: commit.clone(),
            commit: commit.clone(),
            version: build.version.to_string(),
            image: String::new(),
            pending: String::new(),
            csrf: String::new(),
            ..p.clone()
        };
        let key = state.pending_launches.put(session.user.id, then)?;
        return Ok(Runs::AfterBuild(see_other(&format!(
            "/environments/{env_id}?version={}&launch={}",
            build.version,
            urlencode(&key)
        ))));
    }
    Ok(Runs::Now(Some(
        state
            .environments
            .runnable_at(&session.user, &env_id, build.version)
            .await?,
    )))
}

/// Creates the notebook the plan names, named after the repository, and sends the
/// member to wait for it.
async fn create_launched(
    state: &AppState,
    session: &SessionUser,
    plan: Plan,
    commit: Option<String>,
    runnable: Option<Runnable>,
) -> Result<HttpResponse, WebError> {
    let name: String = plan
        .repo
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("repository")
        .trim_end_matches(".git")
        .chars()
        .take(100)
        .collect();
    let request = CreateNotebook {
        name: if name.is_empty() {
            "repository".into()
        } else {
            name
        },
        image: plan
            .image
            .as_ref()
            .map(|i| i.id.clone())
            .unwrap_or_default(),
        machine: plan.machine.id.clone(),
        auto_shutdown: AutoShutdown::Default,
        environment: runnable,
        repo: Some(RepoRequest {
            url: plan.repo.clone(),
            reference: commit,
            open: plan.open.clone(),
        }),
    };
    let nb = state
        .notebooks
        .create_notebook(&session.user, request)
        .await?;
    tracing::info!(notebook = %nb.id, repo = %plan.repo, by = %session.user.username, "notebook launched from a link");
    Ok(see_other(&format!(
        "/launch/wait/{}?open={}",
        nb.id,
        urlencode(plan.open.as_deref().unwrap_or(""))
    )))
}

#[derive(Template)]
#[template(path = "launch_wait.html")]
struct WaitPage {
    chrome: Chrome,
    id: String,
    name: String,
    state: NotebookState,
    detail: String,
    ended: bool,
}

#[derive(Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    open: String,
}

/// `GET /launch/wait/{id}`: reloads itself until the notebook runs, then opens the file.
pub async fn wait_page(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, PageError> {
    let nb = state.notebooks.get_notebook(&session.user, &id).await?;
    if nb.state == NotebookState::Running {
        let open = query.open.trim_start_matches('/');
        let path = if open.is_empty() || !crate::auth::entry::valid_path(open) {
            "lab".to_string()
        } else {
            format!("lab/tree/{open}")
        };
        return Ok(see_other(&format!(
            "/notebooks/{}/open?path={}",
            nb.id,
            urlencode(&path)
        )));
    }
    let ended = matches!(nb.state, NotebookState::Failed | NotebookState::Stopped);
    html(
        StatusCode::OK,
        WaitPage {
            chrome: Chrome::new(&session, "notebooks"),
            id: nb.id.clone(),
            name: nb.name.clone(),
            state: nb.state,
            detail: nb.state_detail.clone(),
            ended,
        },
    )
}

/// `GET /badge.svg`: "launch | Notebox", for a README next to a launch link.
pub async fn badge() -> HttpResponse {
    const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="124" height="20" role="img" aria-label="launch: Notebox"><title>launch: Notebox</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="124" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="51" height="20" fill="#555"/><rect x="51" width="73" height="20" fill="#2b6cb0"/><rect width="124" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11"><text x="25.5" y="14">launch</text><text x="86.5" y="14">▣ Notebox</text></g></svg>"##;
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("cache-control", "public, max-age=86400"))
        .body(SVG)
}
