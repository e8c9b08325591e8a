//! What can go wrong with a member's notebook action.

use crate::containers::EngineError;
use crate::db::placement::Refusal;
use crate::db::DbError;

use super::logs::LogReadRefusal;

#[derive(Debug, thiserror::Error)]
pub enum NotebookError {
    #[error("no such notebook")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// Their groups' policy does not allow it (a machine type).
    #[error("{0}")]
    Forbidden(String),
    /// Not enough free GPUs, a quota, or a machine type bigger than the workstation.
    #[error(transparent)]
    Gpus(#[from] Refusal),
    #[error("Docker is not reachable, so notebooks cannot run right now: {0}")]
    Docker(#[from] EngineError),
    #[error(transparent)]
    Db(#[from] DbError),
    /// The member's storage is past their soft quota: no new notebook, job or start.
    #[error("{0}")]
    OverStorageQuota(String),
    /// Too many log reads at once (the member's, or everyone's).
    #[error("{}", .0.message())]
    LogReadsBusy(LogReadRefusal),
}
