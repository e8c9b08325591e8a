//! The jobs API (`/api/v1/jobs`, `/api/v1/schedules`). Each handler: who is asking, one
//! domain call, JSON.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ApiError, WebError};
use crate::jobs::{SubmitJob, Submitted};
use crate::model::wire;
use crate::web::extract::ApiUser;
use crate::web::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    notebook: String,
    path: Option<String>,
    command: Option<Vec<String>>,
    image: Option<String>,
    environment: Option<String>,
    machine: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    time_limit: Option<String>,
    schedule: Option<String>,
    overlap: Option<String>,
}

/// `POST /api/v1/jobs`: a job (201), or with `schedule` the schedule (201).
pub async fn submit(
    caller: ApiUser,
    state: web::Data<AppState>,
    body: web::Json<SubmitBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let environment_image = match (&body.environment, &body.image) {
        (Some(_), Some(_)) => {
            return Err(WebError::bad_request(
                "Send either \"image\" or \"environment\", not both.",
            )
            .into())
        }
        (Some(id), None) => Some(state.environments.runnable(&caller.user, id).await?.image),
        (None, _) => None,
    };
    let request = SubmitJob {
        notebook: body.notebook,
        path: body.path,
        command: body.command,
        image: body.image,
        image_checked: environment_image.is_some(),
        environment_image,
        machine: body.machine,
        parameters: body.parameters,
        time_limit: body.time_limit,
        schedule: body.schedule,
        overlap: body.overlap,
    };
    Ok(match state.jobs.submit(&caller.user, request).await? {
        Submitted::Job(job) => HttpResponse::Created()
            .insert_header(("location", format!("/api/v1/jobs/{}", job.id)))
            .json(job),
        Submitted::Schedule(schedule) => HttpResponse::Created()
            .insert_header(("location", format!("/api/v1/schedules/{}", schedule.id)))
            .json(schedule),
    })
}

pub async fn list(caller: ApiUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let jobs = state.jobs.list(&caller.user).await?;
    Ok(HttpResponse::Ok().json(wire::JobList { jobs }))
}

pub async fn get(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.jobs.get(&caller.user, &path).await?))
}

pub async fn cancel(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.jobs.cancel(&caller.user, &path).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RerunBody {
    parameters: Option<Map<String, Value>>,
}

/// `POST /api/v1/jobs/{id}/rerun`: the same job again (other parameters where given).
pub async fn rerun(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Option<web::Json<RerunBody>>,
) -> Result<HttpResponse, ApiError> {
    let parameters = body.map(|b| b.into_inner()).unwrap_or_default().parameters;
    let job = state.jobs.rerun(&caller.user, &path, parameters).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/v1/jobs/{}", job.id)))
        .json(job))
}

#[derive(Deserialize)]
pub struct LogQuery {
    offset: Option<u64>,
}

pub async fn logs(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let offset = query.offset.unwrap_or(0);
    Ok(HttpResponse::Ok().json(state.jobs.logs(&caller.user, &path, offset).await?))
}

#[derive(serde::Serialize)]
struct OutputFile {
    path: String,
    size: u64,
}

#[derive(serde::Serialize)]
struct Outputs {
    files: Vec<OutputFile>,
}

pub async fn outputs(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let files = state
        .jobs
        .outputs(&caller.user, &path)
        .await?
        .into_iter()
        .map(|(path, size)| OutputFile { path, size })
        .collect();
    Ok(HttpResponse::Ok().json(Outputs { files }))
}

/// One output file, as it is (never rendered on Notebox's origin: a download).
pub async fn output_file(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, file) = path.into_inner();
    let (name, bytes) = state.jobs.output_file(&caller.user, &id, &file).await?;
    let base = name.rsplit('/').next().unwrap_or("output");
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            "content-disposition",
            // RFC 6266: a plain fallback name, and the real one percent-encoded.
            format!(
                "attachment; filename=\"{}\"; filename*=UTF-8''{}",
                base.replace(
                    |c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
                    "_"
                ),
                crate::web::encode_segment(base)
            ),
        ))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("content-security-policy", "sandbox"))
        .body(bytes))
}

pub async fn schedules(
    caller: ApiUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let schedules = state.jobs.schedules(&caller.user).await?;
    Ok(HttpResponse::Ok().json(wire::JobScheduleList { schedules }))
}

pub async fn delete_schedule(
    caller: ApiUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.jobs.delete_schedule(&caller.user, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}
