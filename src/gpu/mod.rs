//! GPUs: what the workstation has (an inventory behind one trait), who holds which
//! (allocation rows in the database), and how hard they work (telemetry sampled on a
//! thread of its own). Knows nothing of HTTP.

pub mod allocation;
pub mod nvml;
pub mod telemetry;

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, GpuBackend};

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("NVML: {0}")]
    Nvml(String),
}

/// One process using a GPU, as the driver reports it.
#[derive(Debug, Clone, Serialize)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_mib: u64,
}

/// One GPU at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct GpuSample {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total_mib: u64,
    pub memory_used_mib: u64,
    pub utilization_percent: Option<u32>,
    pub temperature_c: Option<u32>,
    pub processes: Vec<GpuProcess>,
}

/// What the workstation's GPUs are, and a way to read them now.
pub trait GpuInventory: Send + Sync {
    /// "nvml", "simulated" or "none".
    fn backend(&self) -> &'static str;
    /// Every GPU, read now. Blocking (NVML): call from a blocking thread.
    fn sample(&self) -> Result<Vec<GpuSample>, GpuError>;
    /// Whether containers get GPUs through a Docker device request (real GPUs) or only
    /// through environment variables (simulated ones).
    fn uses_device_requests(&self) -> bool;
}

/// No GPUs at all.
pub struct NoGpus;

impl GpuInventory for NoGpus {
    fn backend(&self) -> &'static str {
        "none"
    }
    fn sample(&self) -> Result<Vec<GpuSample>, GpuError> {
        Ok(Vec::new())
    }
    fn uses_device_requests(&self) -> bool {
        false
    }
}

/// GPUs listed in the config, for tests and demos. Nothing runs on them, so they report
/// no load; containers get their UUIDs in NVIDIA_VISIBLE_DEVICES and no device request.
pub struct SimulatedGpus {
    gpus: Vec<crate::config::SimulatedGpu>,
}

impl GpuInventory for SimulatedGpus {
    fn backend(&self) -> &'static str {
        "simulated"
    }
    fn sample(&self) -> Result<Vec<GpuSample>, GpuError> {
        Ok(self
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| GpuSample {
                index: i as u32,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                memory_total_mib: g.memory_mib,
                memory_used_mib: 0,
                utilization_percent: Some(0),
                temperature_c: None,
                processes: Vec::new(),
            })
            .collect())
    }
    fn uses_device_requests(&self) -> bool {
        false
    }
}

/// The inventory the config asks for, and why it has no GPUs when NVML would not load.
/// With `auto`, NVML when it loads, else none.
pub fn open_inventory(config: &Config) -> (Arc<dyn GpuInventory>, Option<String>) {
    match config.gpu.backend {
        GpuBackend::None => (Arc::new(NoGpus), None),
        GpuBackend::Simulated => (
            Arc::new(SimulatedGpus {
                gpus: config.gpu.simulated.clone(),
            }),
            None,
        ),
        GpuBackend::Nvml | GpuBackend::Auto => match nvml::NvmlGpus::open() {
            Ok(n) => (Arc::new(n), None),
            Err(e) => (Arc::new(NoGpus), Some(format!("NVML did not load ({e})"))),
        },
    }
}

/// `open_inventory`, logging the reason when NVML is missing.
pub fn inventory_from_config(config: &Config) -> Arc<dyn GpuInventory> {
    let (inventory, reason) = open_inventory(config);
    if let Some(reason) = reason {
        if config.gpu.backend == GpuBackend::Nvml {
            tracing::error!(%reason, "gpu.backend = \"nvml\" but NVML cannot be used; no GPUs will be offered");
        } else {
            tracing::info!(%reason, "no NVIDIA GPUs found; running without GPUs");
        }
    }
    inventory
}
