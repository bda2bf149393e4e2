//! Managers: one per object kind. Each creates, updates and deletes its kind's workloads through
//! the drivers, and maps driver errors onto API errors that name the field at fault.

pub mod cgroup;
pub mod container;
pub mod process;

use nodeagent_drivers::cgroup::CgroupError;
use nodeagent_types::ApiError;

/// Maps a cgroup driver error: a value the kernel refused is the caller's fault (400, naming the
/// field); anything else is the node's (500), with the path in the message.
pub fn cgroup_error(e: CgroupError) -> ApiError {
    match e {
        CgroupError::Rejected { field, message } => ApiError::invalid(field, message),
        CgroupError::NotFound(p) => {
            ApiError::unavailable(format!("no cgroup filesystem under {}", p.display()))
        }
        other => ApiError::internal(other.to_string()),
    }
}
