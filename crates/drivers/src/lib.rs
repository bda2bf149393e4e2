//! Thin clients of the outside systems the agent drives. Each knows nothing of the agent: it
//! takes injectable roots and plain values, and returns typed errors that name the path at fault.

pub mod cgroup;
pub mod docker;
pub mod process;
pub mod procfs;
