//! What can go wrong with a member's job action.

use crate::db::DbError;
use crate::notebooks::NotebookError;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no such job")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// The file asked for is over a limit (an output, a notebook).
    #[error("{0}")]
    TooLarge(String),
    /// What a notebook action would refuse too: its notebook, machine type, GPUs, budget.
    #[error(transparent)]
    Notebook(#[from] NotebookError),
    #[error("cannot prepare the job's files: {0}")]
    Files(String),
    #[error(transparent)]
    Db(#[from] DbError),
    /// The data dir's filesystem is full: the job's files could not be written.
    #[error(transparent)]
    DiskFull(crate::disk::DiskFull),
}

impl From<crate::db::placement::Refusal> for JobError {
    fn from(r: crate::db::placement::Refusal) -> JobError {
        JobError::Notebook(NotebookError::Gpus(r))
    }
}
