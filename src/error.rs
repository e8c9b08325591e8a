//! Web errors: every domain error becomes a status, a stable code and a message that says
//! what to fix. Page handlers answer with an HTML page, API handlers with JSON.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

use crate::auth::AuthError;
use crate::db::placement::Refusal;
use crate::db::DbError;
use crate::disk::DiskFull;
use crate::notebooks::logs::LogReadRefusal;
use crate::notebooks::NotebookError;

#[derive(Debug, Clone)]
pub struct WebError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
    /// Set when a browser should be sent to the login page instead.
    pub login_next: Option<String>,
}

impl WebError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> WebError {
        WebError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            login_next: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found() -> WebError {
        WebError::new(StatusCode::NOT_FOUND, "not_found", "There is nothing here.")
    }
    pub fn forbidden(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn conflict(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn unauthorized() -> WebError {
        WebError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Log in, or send a personal access token as 'Authorization: Bearer <token>'.",
        )
    }
    pub fn login_required(next: &str) -> WebError {
        let mut e = WebError::unauthorized();
        e.login_next = Some(next.to_string());
        e
    }
    pub fn csrf() -> WebError {
        WebError::forbidden(
            "The form had expired or came from another site, so nothing was changed. \
             Reload the page and try again.",
        )
    }
    /// 507 Insufficient Storage: the data dir's filesystem is full; says what to free.
    pub fn disk_full(e: &DiskFull) -> WebError {
        tracing::warn!(error = %e, "a write was refused: the disk is full");
        WebError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", e.to_string())
    }
    /// Every layer's database error: a full disk is 507 with what to do, the rest 500.
    pub fn from_db(e: DbError) -> WebError {
        match e {
            DbError::DiskFull(full) => WebError::disk_full(&full),
            e => WebError::internal(e),
        }
    }
    pub fn internal(message: impl std::fmt::Display) -> WebError {
        tracing::error!(error = %message, "internal error");
        WebError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong inside Notebox; the details are in its log.",
        )
    }
}

impl From<AuthError> for WebError {
    fn from(e: AuthError) -> WebError {
        let message = e.to_string();
        match e {
            AuthError::InvalidCredentials => {
                WebError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", message)
            }
            AuthError::Disabled => {
                WebError::new(StatusCode::FORBIDDEN, "account_disabled", message)
            }
            AuthError::Throttled {
                retry_after_secs, ..
            } => WebError {
                retry_after: Some(retry_after_secs),
                ..WebError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", message)
            },
            AuthError::Busy => WebError {
                retry_after: Some(1),
                ..WebError::new(StatusCode::TOO_MANY_REQUESTS, "busy", message)
            },
            AuthError::InvalidUsername(_)
            | AuthError::WrongCurrentPassword
            | AuthError::WeakPassword(_)
            | AuthError::InvalidTokenName(_) => {
                WebError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
            }
            AuthError::UsernameTaken(_) | AuthError::LastAdmin => {
                WebError::new(StatusCode::CONFLICT, "conflict", message)
            }
            AuthError::NoSuchUser(_) | AuthError::NoSuchToken => {
                WebError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            AuthError::DirectoryUnreachable(_) => WebError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "directory_unreachable",
                message,
            ),
            AuthError::NotAllowed(_) => {
                WebError::new(StatusCode::FORBIDDEN, "not_allowed", message)
            }
            AuthError::NameTaken { .. } => {
                WebError::new(StatusCode::CONFLICT, "name_taken", message)
            }
            AuthError::Directory(_) => {
                WebError::new(StatusCode::BAD_REQUEST, "directory_refused", message)
            }
            AuthError::Internal(m) => WebError::internal(m),
            AuthError::Db(e) => WebError::from_db(e),
        }
    }
}

impl From<NotebookError> for WebError {
    fn from(e: NotebookError) -> WebError {
        let message = e.to_string();
        match e {
            NotebookError::NotFound => {
                WebError::new(StatusCode::NOT_FOUND, "not_found", "No such notebook.")
            }
            NotebookError::Invalid(_) => {
                WebError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
            }
            NotebookError::Conflict(_) => WebError::new(StatusCode::CONFLICT, "conflict", message),
            NotebookError::Forbidden(_) => {
                WebError::new(StatusCode::FORBIDDEN, "not_allowed", message)
            }
            NotebookError::Gpus(Refusal::TooManyJobs { .. }) => {
                WebError::new(StatusCode::CONFLICT, "too_many_jobs", message)
            }
            NotebookError::Gpus(Refusal::TooManyRunning { .. }) => {
                WebError::new(StatusCode::CONFLICT, "too_many_running", message)
            }
            NotebookError::Gpus(Refusal::TooMany { .. }) => {
                WebError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
            }
            NotebookError::Gpus(Refusal::OverLimit { .. }) => {
                WebError::new(StatusCode::FORBIDDEN, "gpu_quota_exceeded", message)
            }
            NotebookError::Gpus(Refusal::OverBudget { .. }) => {
                WebError::new(StatusCode::FORBIDDEN, "gpu_budget_exceeded", message)
            }
            NotebookError::Gpus(Refusal::Busy { .. }) => {
                WebError::new(StatusCode::CONFLICT, "gpus_busy", message)
            }
            NotebookError::Docker(_) => WebError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "docker_unavailable",
                message,
            ),
            // 403 like the GPU quota and budget: the member may not, until they delete
            // files or an admin raises the quota (not a conflict a retry resolves).
            NotebookError::OverStorageQuota(_) => {
                WebError::new(StatusCode::FORBIDDEN, "over_storage_quota", message)
            }
            NotebookError::Db(e) => WebError::from_db(e),
            NotebookError::LogReadsBusy(refusal) => {
                let status = match refusal {
                    LogReadRefusal::Member => StatusCode::TOO_MANY_REQUESTS,
                    LogReadRefusal::Everyone => StatusCode::SERVICE_UNAVAILABLE,
                };
                WebError {
                    retry_after: Some(1),
                    ..WebError::new(status, "busy", message)
                }
            }
        }
    }
}

impl From<crate::share::ShareError> for WebError {
    fn from(e: crate::share::ShareError) -> WebError {
        use crate::share::ShareError;
        match e {
            ShareError::NotFound => WebError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such share: it may have been revoked.",
            ),
            ShareError::NoSuchFile => WebError::not_found(),
            ShareError::NoSuchNotebook => {
                WebError::new(StatusCode::NOT_FOUND, "not_found", "No such notebook.")
            }
            ShareError::Invalid(m) => WebError::bad_request(m),
            ShareError::OverStorageQuota(m) => {
                WebError::new(StatusCode::FORBIDDEN, "over_storage_quota", m)
            }
            ShareError::Db(e) => WebError::from_db(e),
            ShareError::Io(m) => WebError::internal(m),
            ShareError::DiskFull(e) => WebError::disk_full(&e),
        }
    }
}

impl From<crate::secrets::SecretsError> for WebError {
    fn from(e: crate::secrets::SecretsError) -> WebError {
        use crate::secrets::SecretsError;
        match e {
            SecretsError::Invalid(m) => WebError::new(StatusCode::BAD_REQUEST, "invalid_input", m),
            SecretsError::Forbidden(m) => WebError::forbidden(m),
            SecretsError::NotFound(m) => WebError::new(StatusCode::NOT_FOUND, "not_found", m),
            SecretsError::Limit(m) => WebError::new(StatusCode::CONFLICT, "limit_reached", m),
            SecretsError::Unreadable(m) => WebError::internal(m),
            SecretsError::Db(e) => WebError::from_db(e),
        }
    }
}

impl From<crate::environments::EnvironmentError> for WebError {
    fn from(e: crate::environments::EnvironmentError) -> WebError {
        use crate::environments::EnvironmentError as E;
        match e {
            E::Invalid(m) => WebError::new(StatusCode::BAD_REQUEST, "invalid_input", m),
            E::Forbidden(m) => WebError::forbidden(m),
            E::NotFound(m) => WebError::new(StatusCode::NOT_FOUND, "not_found", m),
            E::Conflict(m) => WebError::conflict(m),
            E::Unavailable(m) => WebError::new(StatusCode::BAD_GATEWAY, "unavailable", m),
            E::Db(e) => WebError::from_db(e),
        }
    }
}

impl From<crate::jobs::JobError> for WebError {
    fn from(e: crate::jobs::JobError) -> WebError {
        use crate::jobs::JobError as E;
        match e {
            E::NotFound => WebError::new(StatusCode::NOT_FOUND, "not_found", "No such job."),
            E::Invalid(m) => WebError::new(StatusCode::BAD_REQUEST, "invalid_input", m),
            E::Conflict(m) => WebError::conflict(m),
            E::TooLarge(m) => WebError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            E::Notebook(e) => e.into(),
            E::Files(m) => WebError::internal(m),
            E::DiskFull(e) => WebError::disk_full(&e),
            E::Db(e) => WebError::from_db(e),
        }
    }
}

impl From<crate::sharing::reservations::ReservationError> for WebError {
    fn from(e: crate::sharing::reservations::ReservationError) -> WebError {
        use crate::db::reservations::BookingRefusal;
        use crate::sharing::reservations::ReservationError as E;
        let message = e.to_string();
        match e {
            E::Invalid(m) => WebError::new(StatusCode::BAD_REQUEST, "invalid_input", m),
            E::Forbidden(m) => WebError::forbidden(m),
            E::NotFound => WebError::new(StatusCode::NOT_FOUND, "not_found", message),
            E::Refused(BookingRefusal::NotEnough { .. }) => {
                WebError::new(StatusCode::CONFLICT, "gpus_booked", message)
            }
            E::Refused(BookingRefusal::OverWeek { .. }) => {
                WebError::new(StatusCode::CONFLICT, "over_booking_limit", message)
            }
            E::Db(e) => WebError::from_db(e),
        }
    }
}

impl From<crate::notebooks::GpuMapError> for WebError {
    fn from(e: crate::notebooks::GpuMapError) -> WebError {
        match e {
            crate::notebooks::GpuMapError::Db(e) => WebError::from_db(e),
        }
    }
}

impl From<crate::usage::UsageError> for WebError {
    fn from(e: crate::usage::UsageError) -> WebError {
        use crate::usage::UsageError;
        match e {
            UsageError::NoSuchMember => {
                WebError::new(StatusCode::NOT_FOUND, "not_found", "No such member.")
            }
            UsageError::Invalid(m) => WebError::bad_request(m),
            UsageError::Db(e) => WebError::from_db(e),
        }
    }
}

impl From<DbError> for WebError {
    fn from(e: DbError) -> WebError {
        WebError::from_db(e)
    }
}

impl From<DiskFull> for WebError {
    fn from(e: DiskFull) -> WebError {
        WebError::disk_full(&e)
    }
}

/// An error answered as JSON: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError(pub WebError);

/// An error answered as an HTML page (or a redirect to the login page).
#[derive(Debug)]
pub struct PageError(pub WebError);

impl<E: Into<WebError>> From<E> for ApiError {
    fn from(e: E) -> ApiError {
        ApiError(e.into())
    }
}

impl<E: Into<WebError>> From<E> for PageError {
    fn from(e: E) -> PageError {
        PageError(e.into())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

fn with_retry_after(
    mut builder: actix_web::HttpResponseBuilder,
    e: &WebError,
) -> actix_web::HttpResponseBuilder {
    if let Some(secs) = e.retry_after {
        builder.insert_header((header::RETRY_AFTER, secs.to_string()));
    }
    builder
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }
    fn error_response(&self) -> HttpResponse {
        let body = crate::model::wire::ErrorBody {
            error: crate::model::wire::ErrorDetail {
                code: self.0.code,
                message: &self.0.message,
            },
        };
        let mut b = with_retry_after(HttpResponse::build(self.0.status), &self.0);
        if self.0.status == StatusCode::UNAUTHORIZED {
            b.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        b.json(body)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }
    fn error_response(&self) -> HttpResponse {
        if let Some(next) = &self.0.login_next {
            let target = format!("/login?next={}", crate::http::urlencode(next));
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, target))
                .finish();
        }
        let title = self.0.status.canonical_reason().unwrap_or("Error");
        let page = ErrorPage {
            status: self.0.status.as_u16(),
            title,
            message: &self.0.message,
        };
        let body = page.render().unwrap_or_else(|_| {
            format!("{} {}: {}", self.0.status.as_u16(), title, self.0.message)
        });
        with_retry_after(HttpResponse::build(self.0.status), &self.0)
            .content_type("text/html; charset=utf-8")
            .body(body)
    }
}
