//! Jobs (DESIGN.md, "Jobs"): a notebook or a command run headless, in its own container,
//! through the same GPU queue as notebooks. What members can do with them (`service`,
//! over the checks in `rules`), schedules (`cron`, `scheduler`), and the `notebox job`
//! client (`client`, the one part that speaks HTTP: to a server's API). The runtime side —
//! their containers and how they end — is the reconciler's (`notebooks::job_run`).

pub mod client;
pub mod cron;
mod error;
pub mod rules;
pub mod scheduler;
pub mod service;
pub mod view;

pub use error::JobError;
pub use service::{Jobs, JobsParts, SubmitJob, Submitted};
