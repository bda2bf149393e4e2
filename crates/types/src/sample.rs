//! A sample: one reading of an object's counters at one instant.

use crate::object::ObjectId;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Counters are cumulative (`_total` in Prometheus) except `memory_bytes`, `memory_limit_bytes`
/// and `pids`, which are gauges. A field is absent where the kind or the kernel does not have it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub id: ObjectId,
    pub ts: Timestamp,
    /// Per-object sequence number, from 1, without gaps while the agent runs.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_throttled_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_read_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_write_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes: Option<u64>,
    /// Host-only detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Box<HostStats>>,
}

/// CPU time by mode, in nanoseconds, summed over all CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuModes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

/// Cumulative byte counters of one disk or network device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounters {
    pub device: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostStats {
    pub cpus: u32,
    pub cpu: CpuModes,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_free_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    /// Per block device: bytes read and written.
    pub disks: Vec<DeviceCounters>,
    /// Per network interface: bytes received (`read_bytes`) and sent (`write_bytes`).
    pub nets: Vec<DeviceCounters>,
    pub uptime_seconds: f64,
    pub procs_running: u64,
}
