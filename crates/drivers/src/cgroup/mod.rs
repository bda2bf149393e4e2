//! cgroupfs, v1 and v2 behind one interface ([`Cgroups`]), with an injectable root.
//!
//! Objects the agent owns live in a leaf named after the object id beneath the agent's parent
//! ([`CgroupRef::Owned`]); cgroups it adopts are addressed by their path below the hierarchy root
//! ([`CgroupRef::External`]) and are never removed.

mod error;
mod parse;
mod stat;
mod util;
mod v1;
mod v2;

pub use error::CgroupError;
pub use stat::{open_files_held, set_open_budget};
pub use v1::V1;
pub use v2::V2;

use nodeagent_types::{Resources, Sample};
use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, CgroupError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where the agent's own cgroups go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// `<own cgroup>/nodeagent` in each hierarchy, read from `<proc>/self/cgroup` (a delegated subtree).
    Own,
    /// An absolute path below the hierarchy root, e.g. `/nodeagent-test-123`.
    Absolute(String),
}

/// A cgroup the agent addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CgroupRef {
    /// A leaf the agent created beneath its parent; the string is the leaf name (an object id).
    Owned(String),
    /// An existing cgroup, by its path below the hierarchy root (`/system.slice/x.service`).
    External(String),
}

/// Limits as read back from the cgroup files (for verification and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// CFS quota in µs; `None` is unlimited.
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
    /// v2 `cpu.weight`, or v1 `cpu.shares` converted (shares × 100 / 1024).
    pub cpu_weight: u64,
    pub cpuset: String,
    /// `None` is unlimited.
    pub memory_bytes: Option<u64>,
    /// `None` is unlimited.
    pub pids: Option<u64>,
    pub frozen: bool,
}

/// What the agent's cgroup management needs from a backend.
pub trait CgroupManager {
    fn version(&self) -> CgroupVersion;
    /// Creates the cgroup (and any missing parents) in every hierarchy the agent uses.
    fn create(&self, cg: &CgroupRef) -> Result<()>;
    /// Removes an owned cgroup; a missing one is not an error. Refuses `External`.
    fn remove(&self, cg: &CgroupRef) -> Result<()>;
    fn exists(&self, cg: &CgroupRef) -> bool;
    /// Writes every field `res` sets. An error names the field (`resources.memory`).
    fn apply(&self, cg: &CgroupRef, res: &Resources) -> Result<()>;
    fn read_limits(&self, cg: &CgroupRef) -> Result<Limits>;
    fn freeze(&self, cg: &CgroupRef, frozen: bool) -> Result<()>;
    /// Moves `pid` into the cgroup in every hierarchy.
    fn add_pid(&self, cg: &CgroupRef, pid: u32) -> Result<()>;
    /// Pids in the cgroup (from `cgroup.procs`).
    fn procs(&self, cg: &CgroupRef) -> Result<Vec<u32>>;
    /// The `cgroup.procs` files a child writes `0` into to join the cgroup before it execs.
    fn procs_files(&self, cg: &CgroupRef) -> Vec<PathBuf>;
    /// Directories of the cgroup, keyed by controller (`cpu`, `memory`, ... or `unified`).
    fn dirs(&self, cg: &CgroupRef) -> Vec<(String, PathBuf)>;
    /// The cgroup's path below the hierarchy root (in v1, that of the `cpu` hierarchy).
    fn path(&self, cg: &CgroupRef) -> String;
    /// Builds a reader that samples the cgroup's counters cheaply, again and again.
    fn stat_reader(&self, cg: &CgroupRef) -> Result<StatReader>;
}

/// The backend in use: one enum so callers need no generics and no boxing.
#[derive(Debug)]
pub enum Cgroups {
    V1(V1),
    V2(V2),
}

impl Cgroups {
    /// Detects the version under `root` (`/sys/fs/cgroup`): v2 where `root/cgroup.controllers`
    /// exists, v1 where `root/cpu` or `root/memory` does.
    pub fn detect(root: &Path, proc_root: &Path, parent: Parent) -> Result<Cgroups> {
        if root.join("cgroup.controllers").exists() {
            Ok(Cgroups::V2(V2::new(root, proc_root, parent)?))
        } else if root.join("cpu").exists() || root.join("memory").exists() {
            Ok(Cgroups::V1(V1::new(root, proc_root, parent)?))
        } else {
            Err(CgroupError::NotFound(root.to_path_buf()))
        }
    }

    fn inner(&self) -> &dyn CgroupManager {
        match self {
            Cgroups::V1(v) => v,
            Cgroups::V2(v) => v,
        }
    }
}

impl CgroupManager for Cgroups {
    fn version(&self) -> CgroupVersion {
        self.inner().version()
    }
    #[tracing::instrument(name = "driver.cgroup.create", skip_all)]
    fn create(&self, cg: &CgroupRef) -> Result<()> {
        self.inner().create(cg)
    }
    #[tracing::instrument(name = "driver.cgroup.remove", skip_all)]
    fn remove(&self, cg: &CgroupRef) -> Result<()> {
        self.inner().remove(cg)
    }
    fn exists(&self, cg: &CgroupRef) -> bool {
        self.inner().exists(cg)
    }
    #[tracing::instrument(name = "driver.cgroup.apply", skip_all)]
    fn apply(&self, cg: &CgroupRef, res: &Resources) -> Result<()> {
        self.inner().apply(cg, res)
    }
    fn read_limits(&self, cg: &CgroupRef) -> Result<Limits> {
        self.inner().read_limits(cg)
    }
    #[tracing::instrument(name = "driver.cgroup.freeze", skip_all)]
    fn freeze(&self, cg: &CgroupRef, frozen: bool) -> Result<()> {
        self.inner().freeze(cg, frozen)
    }
    #[tracing::instrument(name = "driver.cgroup.add_pid", skip_all)]
    fn add_pid(&self, cg: &CgroupRef, pid: u32) -> Result<()> {
        self.inner().add_pid(cg, pid)
    }
    fn procs(&self, cg: &CgroupRef) -> Result<Vec<u32>> {
        self.inner().procs(cg)
    }
    fn procs_files(&self, cg: &CgroupRef) -> Vec<PathBuf> {
        self.inner().procs_files(cg)
    }
    fn dirs(&self, cg: &CgroupRef) -> Vec<(String, PathBuf)> {
        self.inner().dirs(cg)
    }
    fn path(&self, cg: &CgroupRef) -> String {
        self.inner().path(cg)
    }
    fn stat_reader(&self, cg: &CgroupRef) -> Result<StatReader> {
        self.inner().stat_reader(cg)
    }
}

/// Samples one cgroup's counters. Built once per object; `read` reuses the caller's buffer so
/// the sampling loop does not allocate.
///
/// The counter files are opened once, when the reader is built, and re-read with `pread` at
/// offset 0 on every sample: cgroupfs regenerates a file's content on each read from offset 0,
/// so this costs one syscall per counter instead of open + read + close.
#[derive(Debug)]
pub struct StatReader {
    files: Vec<stat::StatFile>,
    procs: Option<stat::OpenFile>,
    /// The memory limit as [`StatReader::sample`] last read it.
    limit: Option<stat::CachedLimit>,
    /// The OOM kill count as [`StatReader::sample`] last read it.
    oom: Option<stat::CachedOom>,
}

/// What the sampling loop knows that lets [`StatReader::sample`] skip a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleHints {
    /// The host's OOM kill count from [`OomWatch::settled`](crate::procfs::OomWatch::settled),
    /// read before this sample: no OOM kill has happened on the host since it was read, nor in
    /// the second before.
    pub host_oom_kills_settled: Option<u64>,
}

impl StatReader {
    /// Fills the cgroup fields of `out` (cpu_usage_ns, cpu_throttled_ns, memory_bytes,
    /// memory_limit_bytes, oom_kills, pids, io_read_bytes, io_write_bytes). Counters the
    /// kernel lacks stay `None`. Fails only if the cgroup is gone.
    pub fn read(&mut self, buf: &mut Vec<u8>, out: &mut Sample) -> Result<()> {
        self.read_impl(buf, out)
    }
    /// [`StatReader::read`] for the sampling loop: the same fields, with two files read only
    /// when their value may have changed (each is one of the 6 to 8 files of a sample, and a
    /// cgroup file read costs 1 to 3 µs of system time):
    ///
    /// - The memory limit (`memory_limit_bytes`) is read from its file when this reader's last
    ///   reading of it is [`LIMIT_MAX_AGE`](stat::LIMIT_MAX_AGE) (900 ms) old, or this agent
    ///   has written any memory limit since ([`CgroupManager::apply`]); in between, the last
    ///   value read is used. A limit changed by this agent shows in the next sample, one
    ///   changed by someone else within a second. At intervals of a second or more the file is
    ///   read at every sample.
    /// - The OOM kill count (`oom_kills`) is read from its file unless
    ///   `hints.host_oom_kills_settled` is the host count this reader saw at its last reading
    ///   of the file: the kernel counts every OOM kill on the host before the victim's cgroup's,
    ///   so an unchanged host count means an unchanged cgroup count. The value is then exact as
    ///   of when the hint was read (the sampler reads it once per pass over the objects due).
    ///
    /// Every other counter is read on every call.
    pub fn sample(
        &mut self,
        buf: &mut Vec<u8>,
        out: &mut Sample,
        hints: SampleHints,
    ) -> Result<()> {
        self.sample_impl(buf, out, hints)
    }
    /// One pid in the cgroup, if any (used to read its network namespace's counters).
    pub fn first_pid(&mut self, buf: &mut Vec<u8>) -> Option<u32> {
        self.first_pid_impl(buf)
    }
}
