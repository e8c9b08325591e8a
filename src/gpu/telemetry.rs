//! GPU telemetry, sampled on a thread of its own (NVML calls block) at a fixed interval.
//! Readers get the latest snapshot and a short utilization history without touching NVML.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use super::{GpuInventory, GpuSample};

/// How many samples of utilization history are kept per GPU.
pub const HISTORY_LEN: usize = 150;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Unix seconds of the sample; 0 before the first.
    pub at: i64,
    pub gpus: Vec<GpuSample>,
    /// Utilization percent per GPU UUID, oldest first.
    pub history: HashMap<String, VecDeque<u32>>,
    /// Why the last sample failed, if it did.
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct Telemetry {
    snapshot: Arc<RwLock<Snapshot>>,
    inventory: Arc<dyn GpuInventory>,
    interval: Duration,
}

fn sample_into(inventory: &dyn GpuInventory, snapshot: &RwLock<Snapshot>) {
    let result = inventory.sample();
    let Ok(mut s) = snapshot.write() else { return };
    s.at = crate::clock::now();
    match result {
        Ok(gpus) => {
            for g in &gpus {
                let h = s.history.entry(g.uuid.clone()).or_default();
                h.push_back(g.utilization_percent.unwrap_or(0));
                while h.len() > HISTORY_LEN {
                    h.pop_front();
                }
            }
            s.gpus = gpus;
            s.error = None;
        }
        Err(e) => s.error = Some(e.to_string()),
    }
}

impl Telemetry {
    /// Takes one sample now (so the GPU list is known before serving), then keeps sampling
    /// on a background thread until the last `Telemetry` handle is dropped.
    pub fn start(inventory: Arc<dyn GpuInventory>, interval: Duration) -> Telemetry {
        let snapshot = Arc::new(RwLock::new(Snapshot::default()));
        sample_into(inventory.as_ref(), &snapshot);
        let weak: Weak<RwLock<Snapshot>> = Arc::downgrade(&snapshot);
        let inv = inventory.clone();
        let spawned = std::thread::Builder::new()
            .name("gpu-telemetry".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(snapshot) = weak.upgrade() else {
                    return;
                };
                sample_into(inv.as_ref(), &snapshot);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the GPU telemetry thread");
        }
        Telemetry {
            snapshot,
            inventory,
            interval,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Every GPU's UUID, in index order.
    pub fn uuids(&self) -> Vec<String> {
        self.snapshot
            .read()
            .map(|s| s.gpus.iter().map(|g| g.uuid.clone()).collect())
            .unwrap_or_default()
    }

    pub fn inventory(&self) -> &Arc<dyn GpuInventory> {
        &self.inventory
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}
