//! Idle reclaim: what each running notebook is doing (`tracker`, fed by the `sampler` and
//! by the proxy's member actions), the policy that turns it into a stage and a reclaim
//! time (`policy`), and the reclaims themselves (`reclaim`): warn, stop idle notebooks,
//! and make way for the GPU queue. The `IdleMonitor` runs the sampler and the policy.

pub mod policy;
pub mod reclaim;
pub mod sampler;
pub mod signals;
pub mod tracker;
pub mod view;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::config::Config;
use crate::containers::Engine;
use crate::db::Db;
use crate::gpu::telemetry::Telemetry;
use crate::platform::webhook::Webhook;

pub use policy::{describe_duration, policy_for, IdleStage, Policy, Status};
pub use signals::{GpuReading, KernelState, MemberAction};
pub use tracker::{Reading, Thresholds, Tracker};

/// An idle notebook to stop, as the policy decided it.
#[derive(Debug, Clone)]
pub struct ReclaimOrder {
    pub notebook_id: String,
    pub container_id: Option<String>,
    /// What its page says while it stops.
    pub stopping: String,
    /// What its page says once stopped (why it was stopped).
    pub stopped: String,
    /// The queued notebook it makes way for, and what that one's page tells its member.
    pub beneficiary: Option<(String, String)>,
}

/// Who stops what the idle policy reclaims (the reconciler, which owns every notebook's
/// operations): true when the notebook is on its way down.
pub trait Reclaimer: Send + Sync {
    fn reclaim(&self, order: ReclaimOrder) -> BoxFuture<'_, bool>;
}

/// What the idle monitor is built from (see `lib::run`).
pub struct IdleParts {
    pub db: Db,
    pub config: Arc<Config>,
    pub engine: Engine,
    pub telemetry: Telemetry,
    pub tracker: Arc<Tracker>,
    pub webhook: Webhook,
    pub reclaimer: Arc<dyn Reclaimer>,
}

/// Samples running notebooks and applies the idle policy, every
/// `notebooks.activity_interval` and whenever a notebook joins the GPU queue.
#[derive(Clone)]
pub struct IdleMonitor {
    parts: Arc<IdleParts>,
    wake: Arc<Notify>,
}

impl IdleMonitor {
    pub fn new(parts: IdleParts) -> IdleMonitor {
        IdleMonitor {
            parts: Arc::new(parts),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Asks the policy to look again now (a notebook joined the GPU queue: an idle one
    /// may make way).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until the process ends: sample, apply the policy, wait.
    pub async fn run(self) {
        let parts = &self.parts;
        let interval = parts.config.notebooks.activity_interval;
        let mut sampler = sampler::Sampler::new(parts);
        let reclaim = reclaim::Reclaim::new(parts);
        for pass in 0u64.. {
            // A fixed rate: a slow pass (Jupyter slow to answer) does not push the next.
            let next = tokio::time::Instant::now() + interval;
            sampler.sample(pass).await;
            reclaim.apply().await;
            // A notebook that joins the GPU queue gets an answer at once, not next tick.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    _ = self.wake.notified() => reclaim.apply().await,
                }
            }
        }
    }
}
