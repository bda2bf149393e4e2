//! procfs reader with an injectable root: host counters, and per-process facts.

use nodeagent_types::HostStats;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, ProcError>;

/// Static facts about the host, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub hostname: String,
    pub kernel: String,
    pub cpus: u32,
    pub memory_total_bytes: u64,
}

/// The exit or state of a process as procfs shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// State letter (R, S, D, Z, T, ...).
    pub state: char,
    pub ppid: u32,
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    /// Start time in clock ticks after boot (field 22): with the pid, identifies a process.
    pub start_time: u64,
    pub num_threads: u64,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

#[allow(unused_variables)]
impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcFs { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Hostname, kernel release, CPU count, memory.
    pub fn host_facts(&self) -> Result<HostFacts> {
        unimplemented!()
    }
    /// Fills `out` from stat, loadavg, meminfo, diskstats, net/dev, uptime. Reuses `buf`.
    pub fn host_stats(&self, buf: &mut Vec<u8>, out: &mut HostStats) -> Result<()> {
        unimplemented!()
    }
    /// Sum of rx/tx bytes over the non-loopback interfaces of `pid`'s network namespace.
    pub fn net_dev(&self, pid: u32, buf: &mut Vec<u8>) -> Result<(u64, u64)> {
        unimplemented!()
    }
    /// Inode of `pid`'s network namespace (`/proc/<pid>/ns/net`), to tell whether it has its own.
    pub fn net_ns(&self, pid: u32) -> Option<u64> {
        unimplemented!()
    }
    pub fn stat(&self, pid: u32) -> Result<ProcStat> {
        unimplemented!()
    }
    /// `pid`'s cgroups from `/proc/<pid>/cgroup`: (controllers, path) per line; v2 has `""`.
    pub fn cgroups_of(&self, pid: u32) -> Result<Vec<(String, String)>> {
        unimplemented!()
    }
    /// Whether `pid` exists and is not a zombie.
    pub fn alive(&self, pid: u32) -> bool {
        unimplemented!()
    }
}
