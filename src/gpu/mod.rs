//! GPUs: what the workstation has (an inventory behind one trait) and how hard they work
//! (telemetry sampled on a thread of its own). Who holds which is the database's
//! (`db::placement`); the map of both is `notebooks::gpu_map`. Knows nothing of HTTP.

pub mod nvml;
pub mod telemetry;

use std::sync::Arc;

use crate::config::{Config, GpuBackend};

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("NVML: {0}")]
    Nvml(String),
}

pub use crate::model::gpu::{GpuProcess, GpuSample};

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

/// GPUs listed in the config, for tests and demos. Nothing runs on them: each reports
/// the load written in its `utilization_file` (JSON `{"utilization_percent",
/// "memory_used_mib"}`), or none; containers get their UUIDs in NVIDIA_VISIBLE_DEVICES
/// and no device request.
pub struct SimulatedGpus {
    gpus: Vec<crate::config::SimulatedGpu>,
}

/// What a simulated GPU's utilization file says.
#[derive(Debug, Default, serde::Deserialize)]
struct SimulatedLoad {
    #[serde(default)]
    utilization_percent: u32,
    #[serde(default)]
    memory_used_mib: u64,
}

/// The load in `path`: none while the file does not exist; an unreadable or malformed
/// file is reported (the GPU then shows no utilization rather than a made-up one).
fn read_simulated_load(path: &std::path::Path) -> Result<SimulatedLoad, String> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SimulatedLoad::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut text = String::new();
    file.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not JSON like {{\"utilization_percent\": 90, \"memory_used_mib\": 1024}}: {e}",
            path.display()
        )
    })
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
            .map(|(i, g)| {
                let load = match g.utilization_file.as_deref().filter(|p| !p.as_os_str().is_empty()) {
                    None => Some(SimulatedLoad::default()),
                    Some(path) => match read_simulated_load(path) {
                        Ok(load) => Some(load),
                        Err(e) => {
                            tracing::warn!(gpu = %g.uuid, error = %e, "simulated GPU load unreadable");
                            None
                        }
                    },
                };
                GpuSample {
                    index: i as u32,
                    uuid: g.uuid.clone(),
                    name: g.name.clone(),
                    memory_total_mib: g.memory_mib,
                    memory_used_mib: load
                        .as_ref()
                        .map_or(0, |l| l.memory_used_mib.min(g.memory_mib)),
                    utilization_percent: load.as_ref().map(|l| l.utilization_percent.min(100)),
                    temperature_c: None,
                    processes: Vec::new(),
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_gpus_read_their_load_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gpu0.json");
        let gpus = SimulatedGpus {
            gpus: vec![crate::config::SimulatedGpu {
                uuid: "GPU-x".into(),
                name: "Sim".into(),
                memory_mib: 1000,
                utilization_file: Some(file.clone()),
            }],
        };
        let read = |gpus: &SimulatedGpus| {
            let s = gpus.sample().expect("sample");
            (s[0].utilization_percent, s[0].memory_used_mib)
        };
        assert_eq!(read(&gpus), (Some(0), 0), "no file yet: idle");
        std::fs::write(
            &file,
            r#"{"utilization_percent": 90, "memory_used_mib": 512}"#,
        )
        .expect("write");
        assert_eq!(read(&gpus), (Some(90), 512));
        std::fs::write(
            &file,
            r#"{"utilization_percent": 250, "memory_used_mib": 5000}"#,
        )
        .expect("write");
        assert_eq!(read(&gpus), (Some(100), 1000), "clamped to the GPU");
        std::fs::write(&file, "ninety").expect("write");
        assert_eq!(read(&gpus), (None, 0), "malformed: no made-up figure");
    }
}
