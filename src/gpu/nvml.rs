//! Real GPUs through NVML. `libnvidia-ml.so.1` is opened at run time, so the same binary
//! runs on machines without an NVIDIA driver.

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;

use super::{GpuError, GpuInventory, GpuProcess, GpuSample};

pub struct NvmlGpus {
    nvml: Nvml,
}

const MIB: u64 = 1024 * 1024;

impl NvmlGpus {
    pub fn open() -> Result<NvmlGpus, GpuError> {
        let nvml = Nvml::init()
            .or_else(|_| {
                Nvml::builder()
                    .lib_path(std::ffi::OsStr::new("libnvidia-ml.so.1"))
                    .init()
            })
            .map_err(|e| GpuError::Nvml(e.to_string()))?;
        Ok(NvmlGpus { nvml })
    }

    /// The driver's version, for `notebox doctor`.
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }
}

impl GpuInventory for NvmlGpus {
    fn backend(&self) -> &'static str {
        "nvml"
    }

    fn sample(&self) -> Result<Vec<GpuSample>, GpuError> {
        let err = |e: nvml_wrapper::error::NvmlError| GpuError::Nvml(e.to_string());
        let count = self.nvml.device_count().map_err(err)?;
        let mut out = Vec::with_capacity(count as usize);
        for index in 0..count {
            let device = self.nvml.device_by_index(index).map_err(err)?;
            let memory = device.memory_info().ok();
            let mut processes: Vec<GpuProcess> = Vec::new();
            for list in [
                device.running_compute_processes(),
                device.running_graphics_processes(),
            ] {
                for p in list.unwrap_or_default() {
                    if processes.iter().any(|q| q.pid == p.pid) {
                        continue;
                    }
                    let used = match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => b / MIB,
                        UsedGpuMemory::Unavailable => 0,
                    };
                    processes.push(GpuProcess {
                        pid: p.pid,
                        used_memory_mib: used,
                    });
                }
            }
            out.push(GpuSample {
                index,
                uuid: device.uuid().map_err(err)?,
                name: device.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                memory_total_mib: memory.as_ref().map(|m| m.total / MIB).unwrap_or(0),
                memory_used_mib: memory.as_ref().map(|m| m.used / MIB).unwrap_or(0),
                utilization_percent: device.utilization_rates().ok().map(|u| u.gpu),
                temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
                processes,
            });
        }
        Ok(out)
    }

    fn uses_device_requests(&self) -> bool {
        true
    }
}
