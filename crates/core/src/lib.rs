//! The agent core: one event loop that owns the object registry and drives the engine.
//!
//! Front ends (HTTP, gRPC, later NATS) hold an [`AgentHandle`]. Every command goes to the loop
//! over a channel and is answered through a oneshot, so the registry has one owner and no locks;
//! samples and events are read from shared buffers without going through the loop.

mod agent;
mod answer;
mod cmd;
pub mod config;
mod handle;
mod rings;
pub mod store;

/// The node's policy lives with the kinds whose rules it holds; re-exported for the binary.
pub mod policy {
    pub use nodeagent_engine::policy::*;
}

pub use agent::Agent;
pub use answer::{Created, DeleteOptions, HostInfo, PushAck};
pub use config::{CoreConfig, SinkConfig, SinkStatus, SinkType};
pub use handle::AgentHandle;
pub use policy::{Policy, PolicyConfig, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("state dir {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cgroups: {0}")]
    Cgroup(#[from] nodeagent_drivers::cgroup::CgroupError),
    #[error("procfs: {0}")]
    Proc(#[from] nodeagent_drivers::procfs::ProcError),
    #[error(transparent)]
    Sink(#[from] nodeagent_engine::sinks::SinkError),
    #[error("config: {0}")]
    Config(String),
    #[error("config: {0}")]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("collector thread: {0}")]
    Collector(std::io::Error),
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
}
