//! The jobs pages (`/jobs`, `/jobs/{id}`). Each handler: who is asking, one call to
//! `Jobs`, a page. The output notebook is rendered server-side with the share renderer
//! (sanitized HTML, no script), the log and progress are fetched from the API by the page.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::MachineType;
use crate::error::{PageError, WebError};
use crate::jobs::{JobError, SubmitJob, Submitted};
use crate::model::wire::{Job, JobSchedule, Notebook};
use crate::model::JobState;
use crate::web::extract::SessionUser;
use crate::web::pages::{html, see_other};
use crate::web::views::Chrome;
use crate::web::AppState;

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    chrome: Chrome,
    jobs: Vec<Job>,
    schedules: Vec<JobSchedule>,
    notebooks: Vec<Notebook>,
    machines: Vec<MachineType>,
    form: JobForm,
    error: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
pub struct JobForm {
    #[serde(default)]
    pub notebook: String,
    /// "notebook" or "command".
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub machine: String,
    /// One `name = value` a line.
    #[serde(default)]
    pub parameters: String,
    #[serde(default)]
    pub time_limit: String,
    #[serde(default)]
    pub schedule: String,
    #[serde(default)]
    pub overlap: String,
}

#[derive(Deserialize)]
pub struct JobsQuery {
    notebook: Option<String>,
    path: Option<String>,
    done: Option<String>,
}

impl JobsPage {
    fn default_limit(&self) -> String {
        humantime::format_duration(crate::config::Config::default().jobs.default_time_limit)
            .to_string()
    }

    fn zone(&self) -> String {
        match self.schedules.first() {
            Some(s) => s.time_zone.clone(),
            None => "the lab's time zone".into(),
        }
    }
}

impl JobPage {
    fn percent(&self) -> f64 {
        match &self.job.progress {
            Some(p) if p.cells > 0 => {
                let done = if self.job.state.is_finished() {
                    p.cell
                } else {
                    p.cell - 1
                };
                (done.max(0) as f64 * 100.0 / p.cells as f64).min(100.0)
            }
            _ => 0.0,
        }
    }
}

pub async fn jobs_page(
    session: SessionUser,
    state: web::Data<AppState>,
    query: web::Query<JobsQuery>,
) -> Result<HttpResponse, PageError> {
    let form = JobForm {
        notebook: query.notebook.clone().unwrap_or_default(),
        path: query.path.clone().unwrap_or_default(),
        ..JobForm::default()
    };
    let notice = match query.done.as_deref() {
        Some("scheduled") => Some("The schedule is saved; its runs are listed below.".into()),
        Some("unscheduled") => Some("The schedule is deleted; its runs stay listed.".into()),
        _ => None,
    };
    render_jobs(&session, &state, form, None, notice, StatusCode::OK).await
}

async fn render_jobs(
    session: &SessionUser,
    state: &AppState,
    form: JobForm,
    error: Option<String>,
    notice: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let jobs = state.jobs.list(&session.user).await?;
    let schedules = state.jobs.schedules(&session.user).await?;
    let notebooks = state.notebooks.list_notebooks(&session.user).await?;
    let policy = crate::groups::policy(&state.config, &session.user);
    let machines = state
        .config
        .machines
        .iter()
        .filter(|m| policy.check_machine(&m.id, &m.name).is_ok())
        .cloned()
        .collect();
    html(
        status,
        JobsPage {
            chrome: Chrome::new(session, "jobs"),
            jobs,
            schedules,
            notebooks,
            machines,
            form,
            error,
            notice,
        },
    )
}

/// `name = value` lines as parameters: a value that is JSON (0.1, 2, true, "x", [1]) is
/// taken as such, anything else as text.
pub fn parse_parameters(text: &str) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "Line {} of the parameters has no '=': write one name = value a line.",
                n + 1
            ));
        };
        let value = value.trim();
        let parsed =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        out.insert(name.trim().to_string(), parsed);
    }
    Ok(out)
}

/// Splits a command line into arguments: spaces separate, quotes group.
pub fn split_command(text: &str) -> Vec<String> {
    let (mut args, mut current, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                    any = false;
                }
            }
            (None, c) => current.push(c),
        }
    }
    if any || !current.is_empty() {
        args.push(current);
    }
    args
}

fn request_of(form: &JobForm) -> Result<SubmitJob, String> {
    let (path, command) = if form.kind == "command" {
        (None, Some(split_command(&form.command)))
    } else {
        (Some(form.path.clone()), None)
    };
    let blank = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    Ok(SubmitJob {
        notebook: form.notebook.clone(),
        path,
        command,
        machine: blank(&form.machine),
        parameters: parse_parameters(&form.parameters)?,
        time_limit: blank(&form.time_limit),
        schedule: blank(&form.schedule),
        overlap: blank(&form.overlap),
        ..SubmitJob::default()
    })
}

/// The "Run a job" form: to the job's page, or back with what to fix.
pub async fn submit_job(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<JobForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let request = match request_of(&form) {
        Ok(r) => r,
        Err(m) => {
            return render_jobs(
                &session,
                &state,
                form,
                Some(m),
                None,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    };
    match state.jobs.submit(&session.user, request).await {
        Ok(Submitted::Job(job)) => Ok(see_other(&format!("/jobs/{}", job.id))),
        Ok(Submitted::Schedule(_)) => Ok(see_other("/jobs?done=scheduled")),
        Err(e @ (JobError::Db(_) | JobError::Files(_))) => Err(e.into()),
        Err(e) => {
            let e = WebError::from(e);
            render_jobs(&session, &state, form, Some(e.message), None, e.status).await
        }
    }
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    job: Job,
    title: String,
    /// The output notebook, rendered (sanitized HTML).
    output_html: Option<String>,
    /// Why the output notebook is not shown (over the limit, unreadable).
    output_note: Option<String>,
    /// The parameters as `name = value` lines (for "Run again").
    parameters_text: String,
}

pub async fn job_page(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let job = state.jobs.get(&session.user, &id).await?;
    let (output_html, output_note) = state.jobs.rendered_output(&job).await;
    let parameters_text = job
        .parameters
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join("\n");
    html(
        StatusCode::OK,
        JobPage {
            chrome: Chrome::new(&session, "jobs"),
            title: crate::jobs::service::title(job.path.as_deref(), job.command.as_deref()),
            job,
            output_html,
            output_note,
            parameters_text,
        },
    )
}

pub async fn cancel_job(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    state.jobs.cancel(&session.user, &id).await?;
    Ok(see_other(&format!("/jobs/{id}")))
}

#[derive(Deserialize)]
pub struct RerunForm {
    #[serde(default)]
    parameters: String,
}

pub async fn rerun_job(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<RerunForm>,
) -> Result<HttpResponse, PageError> {
    let parameters = parse_parameters(&form.parameters).map_err(WebError::bad_request)?;
    let job = state
        .jobs
        .rerun(&session.user, &id, Some(parameters))
        .await?;
    Ok(see_other(&format!("/jobs/{}", job.id)))
}

pub async fn delete_schedule(
    session: SessionUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    state.jobs.delete_schedule(&session.user, &id).await?;
    Ok(see_other("/jobs?done=unscheduled"))
}

/// The CSS class of a job state's badge (the notebook states' colours).
pub fn state_class(state: &JobState) -> &'static str {
    match state {
        JobState::Succeeded | JobState::Running => "running",
        JobState::Failed | JobState::TimedOut => "failed",
        JobState::Cancelled => "stopped",
        JobState::Queued | JobState::Starting => "queued",
    }
}

/// "1 h 05 min", "42 s".
pub fn duration_text(seconds: &Option<i64>) -> String {
    match seconds {
        None => "—".into(),
        Some(s) if *s < 60 => format!("{s} s"),
        Some(s) if *s < 3600 => format!("{} min {:02} s", s / 60, s % 60),
        Some(s) => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_commands_from_forms() {
        let p = parse_parameters("lr = 0.1\nname = resnet\n# note\nflags = [1, 2]\n").unwrap();
        assert_eq!(p["lr"], serde_json::json!(0.1));
        assert_eq!(p["name"], serde_json::json!("resnet"));
        assert_eq!(p["flags"], serde_json::json!([1, 2]));
        assert!(parse_parameters("no equals").is_err());
        assert_eq!(
            split_command(r#"python train.py --name "a b" ''"#),
            vec!["python", "train.py", "--name", "a b", ""]
        );
    }
}
