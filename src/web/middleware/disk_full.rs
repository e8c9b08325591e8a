//! Refuses Notebox's own writes while the data dir's filesystem is (nearly) full, before
//! SQLite or a folder copy finds out halfway: 507 with what to free. Reads, the notebook
//! proxy (Jupyter answers for its own files) and the actions that end or remove something
//! (log out, stop, delete, revoke, cancel) go through.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::ResponseError;

use crate::error::{ApiError, PageError, WebError};

/// Path endings of writes that free space or end something (an admin disabling the member
/// who fills the disk included): never refused up front.
const RELIEVING: [&str; 7] = [
    "/stop",
    "/delete",
    "/revoke",
    "/cancel",
    "/remove",
    "/keepalive",
    "/disabled",
];

/// Whether a request is a write of Notebox's own that a full disk refuses.
pub fn refused_when_full(method: &Method, path: &str) -> bool {
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    !(reads.contains(method)
        || *method == Method::DELETE
        || path.starts_with("/nb/")
        || path == "/logout"
        || RELIEVING.iter().any(|end| path.ends_with(end)))
}

pub async fn refuse_writes_when_full(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if refused_when_full(req.method(), req.path()) && !super::is_notebook_host(&req) {
        let full = req
            .app_data::<actix_web::web::Data<crate::web::AppState>>()
            .and_then(|state| state.disk.refusal());
        if let Some(full) = full {
            let error = WebError::disk_full(&full);
            let response = if req.path().starts_with("/api/") {
                ApiError(error).error_response()
            } else {
                PageError(error).error_response()
            };
            return Ok(req.into_response(response));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_reads_and_relief_are_not() {
        assert!(refused_when_full(&Method::POST, "/api/v1/notebooks"));
        assert!(refused_when_full(&Method::POST, "/login"));
        assert!(refused_when_full(&Method::PUT, "/api/v1/secrets/X"));
        assert!(!refused_when_full(&Method::GET, "/api/v1/notebooks"));
        assert!(!refused_when_full(&Method::POST, "/nb/abc/api/kernels"));
        assert!(!refused_when_full(
            &Method::POST,
            "/api/v1/notebooks/abc/stop"
        ));
        assert!(!refused_when_full(&Method::POST, "/notebooks/abc/delete"));
        assert!(!refused_when_full(&Method::DELETE, "/api/v1/notebooks/abc"));
        assert!(!refused_when_full(&Method::POST, "/logout"));
        assert!(!refused_when_full(&Method::POST, "/admin/users/3/disabled"));
    }

    /// Every layer's full-disk error becomes the same 507, through `error.rs`.
    #[test]
    fn every_layers_full_disk_is_507_with_the_message() {
        use crate::db::DbError;
        let full = || crate::disk::DiskFull {
            data_dir: "/var/lib/notebox".into(),
            available: Some(0),
        };
        let errors: Vec<WebError> = vec![
            DbError::DiskFull(full()).into(),
            crate::auth::AuthError::Db(DbError::DiskFull(full())).into(),
            crate::notebooks::NotebookError::Db(DbError::DiskFull(full())).into(),
            crate::share::ShareError::DiskFull(full()).into(),
            crate::share::ShareError::Db(DbError::DiskFull(full())).into(),
            crate::jobs::JobError::DiskFull(full()).into(),
            crate::secrets::SecretsError::Db(DbError::DiskFull(full())).into(),
            crate::usage::UsageError::Db(DbError::DiskFull(full())).into(),
        ];
        for e in errors {
            assert_eq!((e.status.as_u16(), e.code), (507, "disk_full"));
            assert!(
                e.message.starts_with(
                    "The disk holding Notebox's data is full (0 bytes free on /var/lib/notebox)"
                ),
                "{}",
                e.message
            );
        }
        let other: WebError = DbError::Worker("gone".into()).into();
        assert_eq!(other.status.as_u16(), 500);
    }
}
