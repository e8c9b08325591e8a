//! Notebooks: what members can do with them (`service`, over the rules in `rules`), the
//! reconciler that drives the container engine toward what the database says each
//! notebook should be (`reconciler`, with the start path in `start` and the stop path in
//! `stop`), and what a notebook's container looks like (`spec`). Knows nothing of HTTP.

pub mod dirs;
pub mod error;
pub mod gpu_map;
pub mod job_run;
pub mod logs;
pub mod reconciler;
pub mod rules;
pub mod service;
pub mod spec;
mod start;
mod stop;
pub mod view;

pub use dirs::Dirs;
pub use error::NotebookError;
pub use gpu_map::{GpuMap, GpuMapError};
pub use reconciler::Reconciler;
pub use rules::{AutoShutdown, CreateNotebook, RepoRequest};
pub use service::Notebooks;

pub use crate::model::wire::{Notebook, NotebookTimes};

/// What happened to a notebook, for whoever follows along (share previews are brought up
/// to date when a notebook stops; a notebook's origin listener closes).
#[derive(Debug, Clone)]
pub enum NotebookEvent {
    Stopped { notebook_id: String },
}

/// Where notebook events are published; clone it to publish or subscribe.
#[derive(Clone)]
pub struct Events(tokio::sync::broadcast::Sender<NotebookEvent>);

impl Default for Events {
    fn default() -> Events {
        Events(tokio::sync::broadcast::Sender::new(64))
    }
}

impl Events {
    /// Events from now on (a receiver that falls behind misses the oldest).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<NotebookEvent> {
        self.0.subscribe()
    }

    pub fn publish(&self, event: NotebookEvent) {
        // No receiver is fine: nobody follows along (e.g. in a CLI process).
        if self.0.send(event).is_err() {
            tracing::trace!("no listener for notebook events");
        }
    }
}
