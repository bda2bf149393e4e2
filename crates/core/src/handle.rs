//! The handle front ends use to reach the core.

use nodeagent_types::{
    ApiError, Duration, Event, Object, ObjectPatch, ObjectSpec, Sample,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Answer to a create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Created {
    pub id: String,
    /// Sequence number of the `created` event in the event log.
    pub event_id: u64,
    pub object: Object,
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

/// A cheap, cloneable handle to the running core.
#[derive(Clone)]
pub struct AgentHandle {
    _private: (),
}

#[allow(unused_variables, clippy::unused_async)]
impl AgentHandle {
    /// Creates an object. With `wait`, answers once it is running (or with the error that
    /// failed it); without, once it is accepted. Validation errors come back either way.
    pub async fn create(&self, spec: ObjectSpec, wait: bool) -> Result<Created, ApiError> {
        Err(ApiError::unavailable("core not implemented yet"))
    }
    /// Looks an object up by id or name (`host` is the host).
    pub async fn get(&self, key: &str) -> Result<Object, ApiError> {
        Err(ApiError::unavailable("core not implemented yet"))
    }
    pub async fn list(&self) -> Result<Vec<Object>, ApiError> {
        Err(ApiError::unavailable("core not implemented yet"))
    }
    /// In-place update. With `wait`, answers once the change is in the cgroup files.
    pub async fn update(&self, key: &str, patch: ObjectPatch, wait: bool) -> Result<Object, ApiError> {
        Err(ApiError::unavailable("core not implemented yet"))
    }
    /// Deletes. With `wait`, answers once the workload and its cgroup are gone.
    pub async fn delete(&self, key: &str, wait: bool) -> Result<Object, ApiError> {
        Err(ApiError::unavailable("core not implemented yet"))
    }
    pub async fn push_on(&self, key: &str, sink: &str, interval: Option<Duration>) -> Result<PushAck, ApiError> {
        Err(ApiError::unavailable("core not implemented yet"))
    }
    pub async fn push_off(&self, key: &str, sink: &str) -> Result<PushAck, ApiError> {
        Err(ApiError::unavailable("core not implemented yet"))
    }
    pub async fn push_once(&self, key: &str, sink: &str) -> Result<PushAck, ApiError> {
        Err(ApiError::unavailable("core not implemented yet"))
    }
    /// Recent samples, oldest first; at most `limit` of the newest when given.
    pub async fn metrics(&self, key: &str, limit: Option<usize>) -> Result<Vec<Sample>, ApiError> {
        Err(ApiError::unavailable("core not implemented yet"))
    }
    pub async fn host(&self) -> Result<HostInfo, ApiError> {
        Err(ApiError::unavailable("core not implemented yet"))
    }
    /// The event log from `since` (exclusive), oldest first.
    pub fn events(&self, since: Option<u64>) -> Vec<Event> {
        Vec::new()
    }
    /// Live events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        broadcast::channel(1).1
    }
    /// Prometheus text exposition of every latest sample.
    pub fn prometheus_text(&self) -> String {
        String::new()
    }
    /// True once start-up has finished and until shutdown begins.
    pub fn ready(&self) -> bool {
        false
    }
}
