//! What the core answers to front ends (shared by the handle and the loop's commands).

use nodeagent_types::{Duration, Object, Sample};
use serde::{Deserialize, Serialize};

/// Answer to a create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    pub id: String,
    /// Sequence number of the `created` event in the event log.
    pub event_id: u64,
    pub object: Object,
}

/// How to delete (`DELETE /v1/objects/{id}?wait=...&remove=...`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Answer once the workload is gone, not once the delete has begun.
    pub wait: bool,
    /// For an adopted container: stop and remove it. Without it the agent releases the
    /// container, which keeps running. Refused (400) for other kinds; containers the agent
    /// created are always removed.
    pub remove: bool,
}

/// Answer to push-on/off/once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushAck {
    pub id: String,
    pub sink: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// `on`, `off` or `sent`.
    pub status: String,
    /// For push-once: the sequence number of the sample sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_seq: Option<u64>,
    /// For push-on: the report mode the task runs in (given, or its sink's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<nodeagent_types::ReportMode>,
}

/// `GET /v1/host`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    pub node: String,
    pub hostname: String,
    pub kernel: String,
    pub cpus: u32,
    pub memory_total_bytes: u64,
    /// `v1` or `v2`.
    pub cgroup_version: String,
    pub agent_version: String,
    pub started_at: nodeagent_types::Timestamp,
    pub object: Object,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
}
