//! The core's typed configuration. The binary builds it from defaults, the TOML file, the
//! environment and flags.

pub use crate::policy::PolicyConfig;
pub use nodeagent_engine::sinks::{SinkConfig, SinkStatus, SinkType};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Where process logs, `reports.jsonl` and the socket live.
    pub state_dir: PathBuf,
    /// Root of the cgroup filesystem (`/sys/fs/cgroup`); injectable for tests.
    pub cgroup_root: PathBuf,
    /// Root of procfs (`/proc`); injectable for tests.
    pub proc_root: PathBuf,
    /// Absolute cgroup parent for the agent's cgroups; `None` means a `nodeagent` subtree
    /// beneath the agent's own cgroup.
    pub cgroup_parent: Option<String>,
    /// This node's name in reports (defaults to the hostname when empty).
    pub node_name: String,
    /// Samples kept per object for `GET /v1/objects/{id}/metrics`.
    pub ring_size: usize,
    /// How often the host is sampled.
    pub host_interval: Duration,
    /// The host's heartbeat report (the seed's always-on host report task): interval and sinks.
    pub heartbeat_interval: Duration,
    pub heartbeat_sinks: Vec<String>,
    /// Sinks beyond the built-in `stdout` and `file`.
    pub sinks: Vec<SinkConfig>,
    /// Time a process gets between SIGTERM and SIGKILL on delete.
    pub stop_grace: Duration,
    /// Stop the processes when the agent shuts down (default: they keep running, and are
    /// re-adopted at the next start).
    pub stop_workloads: bool,
    /// Events kept in memory for `GET /v1/events`.
    pub event_log_size: usize,
    /// Size at which `reports.jsonl` is rotated to `reports.jsonl.1`.
    pub file_sink_max_bytes: u64,
    /// What callers may create (commands, cgroups, container host access); see
    /// [`crate::policy`].
    pub policy: PolicyConfig,
}

impl CoreConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        CoreConfig {
            state_dir,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
            cgroup_parent: None,
            node_name: String::new(),
            ring_size: 120,
            host_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_sinks: vec!["file".to_string()],
            sinks: Vec::new(),
            stop_grace: Duration::from_secs(5),
            stop_workloads: false,
            event_log_size: 10_000,
            file_sink_max_bytes: 256 << 20,
            policy: PolicyConfig::default(),
        }
    }
}
