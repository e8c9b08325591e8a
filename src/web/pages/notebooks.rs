//! Notebook pages: the list (dashboard), the create form, one notebook, its buttons.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::config::{ImageSpec, MachineType, AUTO_SHUTDOWN_CHOICES};
use crate::error::{PageError, WebError};
use crate::model::NotebookState;
use crate::notebooks::{AutoShutdown, CreateNotebook, Notebook, NotebookError, Notebooks};
use crate::web::extract::SessionUser;
use crate::web::views::{relative_time, Chrome};
use crate::web::AppState;

use super::{html, see_other};

/// A notebook row as the pages show it.
pub struct NotebookView {
    pub nb: Notebook,
    pub created: String,
    pub uptime: String,
    pub countdown: String,
    pub seconds_left: i64,
}

impl NotebookView {
    fn new(nb: Notebook) -> NotebookView {
        let created = relative_time(nb.times.created);
        let uptime = nb
            .times
            .started
            .map(crate::web::views::duration_since)
            .unwrap_or_default();
        let seconds_left = Notebooks::seconds_left(&nb).unwrap_or(-1);
        let countdown = if nb.state == NotebookState::Running {
            match nb.times.auto_shutdown {
                Some(t) => relative_time(t),
                None => "never".into(),
            }
        } else {
            String::new()
        };
        NotebookView {
            nb,
            created,
            uptime,
            countdown,
            seconds_left,
        }
    }

    pub fn can_start(&self) -> bool {
        self.nb.state.can_start()
    }
    pub fn can_stop(&self) -> bool {
        self.nb.state.is_coming_up() || self.nb.state == NotebookState::Queued
    }
    pub fn can_open(&self) -> bool {
        self.nb.state == NotebookState::Running
    }
    pub fn can_restart(&self) -> bool {
        self.nb.state == NotebookState::Running
    }
    pub fn failed(&self) -> bool {
        self.nb.state == NotebookState::Failed
    }
    /// The detail line, unless it only repeats the state badge.
    pub fn detail(&self) -> &str {
        match self.nb.state_detail.as_str() {
            "Stopped" | "Jupyter is ready" => "",
            d => d,
        }
    }
    /// Stopped by Notebox (idle, or the auto-shutdown), not by its member: worth a look.
    pub fn stopped_for_a_reason(&self) -> bool {
        self.nb.state == NotebookState::Stopped
            && self.nb.state_detail.starts_with("Stopped ")
            && self.nb.state_detail.contains(" after ")
    }
    pub fn busy(&self) -> bool {
        self.nb.state.is_transient()
    }
}

/// How many notebooks the dashboard lists before it asks to "show all": a member with a
/// year of notebooks gets a page that loads at once (docs/PERFORMANCE.md, "Pages at scale").
pub const DASHBOARD_ROWS: usize = 100;

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    notebooks: Vec<NotebookView>,
    /// How many the member has in all (more than listed when `notebooks` was cut).
    total: usize,
    budget: Option<crate::model::wire::BudgetView>,
    /// The member's jobs running or on their way, then the newest ended ones.
    jobs: Vec<crate::model::wire::Job>,
    storage: crate::web::views::storage::StorageView,
}

impl DashboardPage {
    /// The budget bar's fill, out of 100.
    fn budget_percent(&self) -> f64 {
        self.budget.as_ref().map_or(0.0, |b| {
            if b.gpu_hours_budget <= 0.0 {
                100.0
            } else {
                (b.gpu_hours_used / b.gpu_hours_budget * 100.0)
                    .clamp(0.0, 100.0)
                    .round()
            }
        })
    }

    /// Some of the member's notebooks are not listed.
    fn cut(&self) -> bool {
        self.notebooks.len() < self.total
    }
}

#[derive(Deserialize)]
pub struct DashboardQuery {
    /// `?all=1`: every notebook, however many.
    #[serde(default)]
    all: Option<String>,
}

/// The rows a dashboard lists: everything up to [`DASHBOARD_ROWS`]; past that, every
/// notebook that is not at rest, then the newest of the others (in the list's order).
fn dashboard_rows(notebooks: Vec<Notebook>, all: bool) -> Vec<Notebook> {
    if all || notebooks.len() <= DASHBOARD_ROWS {
        return notebooks;
    }
    // At rest: stopped or failed, what a member may start.
    let (active, rest): (Vec<Notebook>, Vec<Notebook>) =
        notebooks.into_iter().partition(|nb| !nb.state.can_start());
    let room = DASHBOARD_ROWS.saturating_sub(active.len());
    active
        .into_iter()
        .chain(rest.into_iter().take(room))
        .collect()
}

pub async fn dashboard(
    session: SessionUser,
    state: web::Data<AppState>,
    query: web::Query<DashboardQuery>,
) -> Result<HttpResponse, PageError> {
    let notebooks = state.notebooks.list_notebooks(&session.user).await?;
    let budget = state.usage.budget(session.user.id).await?;
    let total = notebooks.len();
    let all = query.all.as_deref().is_some_and(|v| v != "0");
    let jobs = dashboard_jobs(state.jobs.list(&session.user).await?);
    let storage = crate::storage::status(&state.db, &state.config, &session.user).await?;
    html(
        StatusCode::OK,
        DashboardPage {
            storage: crate::web::views::storage::StorageView::new(&storage, crate::clock::now()),
            chrome: Chrome::new(&session, "notebooks"),
            notebooks: dashboard_rows(notebooks, all)
                .into_iter()
                .map(NotebookView::new)
                .collect(),
            total,
            budget,
            jobs,
        },
    )
}

/// Every job not yet ended, then the newest ended ones, five at least.
fn dashboard_jobs(jobs: Vec<crate::model::wire::Job>) -> Vec<crate::model::wire::Job> {
    let (open, ended): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.transient);
    let room = 5usize.saturating_sub(open.len());
    open.into_iter()
        .chain(ended.into_iter().take(room))
        .collect()
}

#[derive(Template)]
#[template(path = "notebook_new.html")]
struct NewNotebookPage {
    chrome: Chrome,
    images: Vec<ImageSpec>,
    machines: Vec<MachineType>,
    allow_custom: bool,
    choices: Vec<&'static str>,
    form: NewNotebookForm,
    error: Option<String>,
    /// Past the storage quota: why the form will be refused (said before it is filled).
    storage_refusal: Option<String>,
    gpus: crate::notebooks::gpu_map::GpuCounts,
    gpu_limit: i64,
    /// Environments with a ready version: (id, name, owner, version, size).
    environments: Vec<(String, String, String, i64, String)>,
    /// The next booking of someone else: "GPU 1, GPU 2 are booked by alice from Thu 10
    /// Dec 14:00", and when a notebook choosing "until the booking" stops.
    booking: Option<(String, String)>,
}

#[derive(Deserialize, Default, Clone)]
pub struct NewNotebookForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub custom_image: String,
    #[serde(default)]
    pub machine: String,
    #[serde(default)]
    pub auto_shutdown: String,
    /// Start from a repository (optional).
    #[serde(default)]
    pub repo_url: String,
    #[serde(default)]
    pub repo_ref: String,
    #[serde(default)]
    pub repo_open: String,
}

/// The next booking of someone else, in words for the create form.
async fn next_booking(state: &AppState, me: i64) -> Result<Option<(String, String)>, PageError> {
    let now = crate::clock::now();
    let Some(r) = state
        .gpu_map
        .bookings_ahead()
        .await?
        .into_iter()
        .find(|r| r.starts_at > now && r.user_id != Some(me))
    else {
        return Ok(None);
    };
    let tz =
        crate::config::time_zone(&state.config.jobs.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let when = |t| crate::sharing::reservations::local_time(t, &tz);
    let n = r.gpu_uuids.len();
    Ok(Some((
        format!(
            "{n} GPU{} {} booked by {} from {}: a notebook still running then does not get {}.",
            if n == 1 { "" } else { "s" },
            if n == 1 { "is" } else { "are" },
            r.member,
            when(r.starts_at),
            if n == 1 { "it" } else { "them" }
        ),
        when(r.starts_at - crate::db::placement::START_MARGIN - 60),
    )))
}

async fn new_page(
    session: &SessionUser,
    state: &AppState,
    form: NewNotebookForm,
    error: Option<String>,
) -> Result<NewNotebookPage, PageError> {
    let c = &state.config;
    let policy = crate::groups::policy(c, &session.user);
    let gpus = state.gpu_map.gpu_counts().await?;
    let booking = next_booking(state, session.user.id).await?;
    let storage = crate::storage::status(&state.db, c, &session.user).await?;
    // Shown once: a refused submission's error already says it.
    let storage_refusal = storage.refusal().filter(|r| error.as_ref() != Some(r));
    let environments = state
        .environments
        .list(&session.user)
        .await
        .map_err(WebError::from)?
        .into_iter()
        .filter_map(|e| {
            let b = e.newest_ready()?;
            Some((
                e.id.clone(),
                e.name.clone(),
                e.owner.clone(),
                b.version,
                b.size_bytes
                    .map(crate::environments::human_size)
                    .unwrap_or_default(),
            ))
        })
        .collect();
    Ok(NewNotebookPage {
        environments,
        chrome: Chrome::new(session, "notebooks"),
        images: c.images.clone(),
        machines: c
            .machines
            .iter()
            .filter(|m| policy.check_machine(&m.id, &m.name).is_ok())
            .cloned()
            .collect(),
        allow_custom: c.notebooks.allow_custom_images,
        choices: AUTO_SHUTDOWN_CHOICES.to_vec(),
        booking,
        form,
        error,
        storage_refusal,
        gpus,
        gpu_limit: state.notebooks.gpu_limit(&session.user),
    })
}

#[derive(Deserialize)]
pub struct NewNotebookQuery {
    /// Preselects an environment (its page's "New notebook" link).
    environment: Option<String>,
}

pub async fn new_notebook_form(
    session: SessionUser,
    state: web::Data<AppState>,
    query: web::Query<NewNotebookQuery>,
) -> Result<HttpResponse, PageError> {
    let c = &state.config;
    let image = match &query.environment {
        Some(id) => format!("env:{id}"),
        None => c.images.first().map(|i| i.id.clone()).unwrap_or_default(),
    };
    let policy = crate::groups::policy(c, &session.user);
    let form = NewNotebookForm {
        image,
        machine: c
            .machines
            .iter()
            .find(|m| policy.check_machine(&m.id, &m.name).is_ok())
            .map(|m| m.id.clone())
            .unwrap_or_default(),
        auto_shutdown: crate::config::auto_shutdown_name(c.notebooks.default_auto_shutdown),
        ..Default::default()
    };
    html(
        StatusCode::OK,
        new_page(&session, &state, form, None).await?,
    )
}

fn parse_choice(choice: &str) -> Result<AutoShutdown, WebError> {
    if choice.is_empty() {
        return Ok(AutoShutdown::Default);
    }
    AutoShutdown::from_choice(choice).map_err(WebError::bad_request)
}

pub async fn create_notebook(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<NewNotebookForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let image = if form.image == "custom" {
        form.custom_image.clone()
    } else {
        form.image.clone()
    };
    let auto_shutdown = match parse_choice(&form.auto_shutdown) {
        Ok(a) => a,
        Err(e) => {
            return html(
                StatusCode::BAD_REQUEST,
                new_page(&session, &state, form, Some(e.message)).await?,
            )
        }
    };
    let environment = match image.strip_prefix("env:") {
        Some(id) => match state.environments.runnable(&session.user, id).await {
            Ok(r) => Some(r),
            Err(e) => {
                let e = WebError::from(e);
                return html(
                    e.status,
                    new_page(&session, &state, form, Some(e.message)).await?,
                );
            }
        },
        None => None,
    };
    let request = CreateNotebook {
        name: form.name.clone(),
        image,
        machine: form.machine.clone(),
        auto_shutdown,
        environment,
        repo: (!form.repo_url.trim().is_empty()).then(|| crate::notebooks::RepoRequest {
            url: form.repo_url.clone(),
            reference: Some(form.repo_ref.clone()),
            open: Some(form.repo_open.clone()),
        }),
    };
    match state
        .notebooks
        .create_notebook(&session.user, request)
        .await
    {
        Ok(nb) => Ok(match nb.repo.as_ref().and_then(|r| r.open.as_deref()) {
            Some(open) => see_other(&format!(
                "/launch/wait/{}?open={}",
                nb.id,
                crate::web::urlencode(open)
            )),
            None => see_other(&format!("/notebooks/{}", nb.id)),
        }),
        Err(e @ (NotebookError::Invalid(_) | NotebookError::Gpus(_))) => html(
            StatusCode::BAD_REQUEST,
            new_page(&session, &state, form, Some(e.to_string())).await?,
        ),
        Err(e @ NotebookError::OverStorageQuota(_)) => html(
            StatusCode::FORBIDDEN,
            new_page(&session, &state, form, Some(e.to_string())).await?,
        ),
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "notebook.html")]
struct NotebookPage {
    chrome: Chrome,
    v: NotebookView,
    choices: Vec<&'static str>,
    notice: Option<String>,
    shares: Vec<crate::share::Share>,
    forked_from: Option<String>,
    /// Where notebooks are served (the page says how to reach this one).
    isolation: crate::config::OriginMode,
    /// Past 90 % of the member's storage quota (a running notebook keeps running).
    storage_warning: Option<String>,
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    done: Option<String>,
}

pub async fn notebook_page(
    req: actix_web::HttpRequest,
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, PageError> {
    let mut nb = state.notebooks.get_notebook(&session.user, &id).await?;
    state.sites.fill_jupyter_url(&req, &mut nb);
    let shares = state.shares.list_shares(&session.user, &id).await?;
    let forked_from = match nb.forked_from.clone() {
        Some(source) => Some(
            state
                .notebooks
                .describe_notebook(&source)
                .await?
                .unwrap_or_else(|| format!("a notebook that was deleted ({source})")),
        ),
        None => None,
    };
    let notice = match q.done.as_deref() {
        Some("extended") => Some("The auto-shutdown countdown starts again from now.".to_string()),
        Some("shared") => Some("A new share link was made; copy it below.".to_string()),
        Some("unshared") => {
            Some("The share link was revoked: it no longer opens anything.".to_string())
        }
        Some("kept") => Some("Kept running: the idle clock starts again from now.".to_string()),
        _ => None,
    };
    let storage_warning = crate::storage::status(&state.db, &state.config, &session.user)
        .await?
        .warning();
    html(
        StatusCode::OK,
        NotebookPage {
            storage_warning,
            chrome: Chrome::new(&session, "notebooks"),
            v: NotebookView::new(nb),
            choices: AUTO_SHUTDOWN_CHOICES.to_vec(),
            notice,
            shares,
            forked_from,
            isolation: state.sites.origins().mode,
        },
    )
}

/// Start, stop, restart: a button each, all back to the notebook's page.
pub async fn notebook_action(
    session: SessionUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (id, action) = path.into_inner();
    let rt = &state.notebooks;
    match action.as_str() {
        "start" => rt.start_notebook(&session.user, &id).await?,
        "stop" => rt.stop_notebook(&session.user, &id).await?,
        "restart" => rt.restart_notebook(&session.user, &id).await?,
        _ => return Err(WebError::not_found().into()),
    };
    Ok(see_other(&format!("/notebooks/{id}")))
}

#[derive(Deserialize)]
pub struct ExtendForm {
    #[serde(default)]
    auto_shutdown: String,
}

pub async fn extend_notebook(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<ExtendForm>,
) -> Result<HttpResponse, PageError> {
    let choice = if form.auto_shutdown.is_empty() {
        None
    } else {
        Some(parse_choice(&form.auto_shutdown)?)
    };
    state
        .notebooks
        .extend_notebook(&session.user, &id, choice)
        .await?;
    Ok(see_other(&format!("/notebooks/{id}?done=extended")))
}

#[derive(Deserialize)]
pub struct KeepAliveForm {
    /// "dashboard" to go back to the list.
    #[serde(default)]
    back: String,
}

/// "Keep running": resets the idle clock.
pub async fn keep_alive(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<KeepAliveForm>,
) -> Result<HttpResponse, PageError> {
    state.notebooks.keep_alive(&session.user, &id).await?;
    Ok(if form.back == "dashboard" {
        see_other("/")
    } else {
        see_other(&format!("/notebooks/{id}?done=kept"))
    })
}

#[derive(Template)]
#[template(path = "notebook_delete.html")]
struct DeletePage {
    chrome: Chrome,
    v: NotebookView,
}

pub async fn delete_confirm(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let nb = state.notebooks.get_notebook(&session.user, &id).await?;
    html(
        StatusCode::OK,
        DeletePage {
            chrome: Chrome::new(&session, "notebooks"),
            v: NotebookView::new(nb),
        },
    )
}

pub async fn delete_notebook(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    state.notebooks.delete_notebook(&session.user, &id).await?;
    Ok(see_other("/"))
}
