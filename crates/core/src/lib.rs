//! The agent core: one event loop that owns the object registry and drives the engine.
//!
//! Front ends (HTTP, gRPC, later NATS) hold an [`AgentHandle`]. Mutations go to the loop as
//! commands over a channel and are answered through a oneshot; reads of samples and events go
//! straight to shared, lock-protected buffers so a busy loop never slows a dashboard.

pub mod config;
mod handle;

pub use config::{CoreConfig, SinkConfig, SinkType};
pub use handle::{AgentHandle, Created, HostInfo, PushAck};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("state dir {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cgroups: {0}")]
    Cgroup(String),
    #[error("sink {name}: {message}")]
    Sink { name: String, message: String },
}

/// The running core. `start` builds it (drivers, engine, sinks, the sampling thread);
/// `run` drives the event loop until `shutdown` resolves, then flushes the sinks.
pub struct Agent {
    _private: (),
}

impl Agent {
    pub fn start(cfg: CoreConfig) -> Result<(Agent, AgentHandle), CoreError> {
        let _ = cfg;
        Err(CoreError::Cgroup("core not implemented yet".into()))
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await
    }
}
