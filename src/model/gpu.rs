//! A GPU as the driver reports it, at one moment (the inventory's samples, the API's
//! `notebox gpus --json`).

use serde::Serialize;

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
