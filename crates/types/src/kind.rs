//! Object kinds and statuses. They are enums so that a typo is a compile error, not a silent
//! mismatch between modules.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of an object. `Host` is the node itself: always present, read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Process,
    Cgroup,
    Container,
    Vm,
    K8s,
    Helm,
    Host,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Process => "process",
            Kind::Cgroup => "cgroup",
            Kind::Container => "container",
            Kind::Vm => "vm",
            Kind::K8s => "k8s",
            Kind::Helm => "helm",
            Kind::Host => "host",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifecycle status of an object (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Paused,
    Exited,
    Failed,
    Lost,
    Deleted,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
            Status::Failed => "failed",
            Status::Lost => "lost",
            Status::Deleted => "deleted",
        }
    }

    /// Whether the workload is alive and can be controlled in place.
    pub const fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Pending)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
