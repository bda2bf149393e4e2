//! Events: what happened to objects and to the agent, in order.

use crate::object::ObjectId;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    AgentStarted,
    AgentStopped,
    Created,
    Started,
    Updated,
    Paused,
    Resumed,
    Exited,
    Restarted,
    OomKilled,
    Failed,
    Deleted,
    Lost,
    /// A `k8s` object's resources are all ready.
    Ready,
    /// A `k8s` object's resources are not ready, or one failed; the message says why.
    Degraded,
    PushOn,
    PushOff,
    SinkDropped,
    /// A mutating API request: who, what, and the result.
    Audit,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AgentStarted => "agent_started",
            EventKind::AgentStopped => "agent_stopped",
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Updated => "updated",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Exited => "exited",
            EventKind::Restarted => "restarted",
            EventKind::OomKilled => "oom_killed",
            EventKind::Failed => "failed",
            EventKind::Deleted => "deleted",
            EventKind::Lost => "lost",
            EventKind::Ready => "ready",
            EventKind::Degraded => "degraded",
            EventKind::PushOn => "push_on",
            EventKind::PushOff => "push_off",
            EventKind::SinkDropped => "sink_dropped",
            EventKind::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Monotonic sequence number of the event log.
    pub seq: u64,
    pub ts: Timestamp,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<ObjectId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub message: String,
    /// Kind-specific detail (exit code, sink name, changed fields).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}
