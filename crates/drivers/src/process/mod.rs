//! Spawning a command straight into a cgroup, signalling and reaping it.
//!
//! The child joins its cgroup before `exec` by writing `0` to pre-opened `cgroup.procs` files,
//! so the limits apply from the first instruction of the command.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program could not be executed (not found, not executable): the user's fault.
    #[error("cannot execute {program:?}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
    #[error("open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cwd {path:?}: {source}")]
    Cwd {
        path: String,
        source: std::io::Error,
    },
    #[error("spawn: {0}")]
    Other(std::io::Error),
}

pub struct SpawnSpec<'a> {
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a str>,
    pub stdout: File,
    pub stderr: File,
    /// `cgroup.procs` files the child joins before exec.
    pub cgroup_procs: Vec<PathBuf>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

#[allow(unused_variables)]
/// Spawns the command in a new session (so a terminal's signals don't reach it), with stdin
/// from /dev/null, in its cgroup. Returns the pid. The caller reaps it with [`reap`].
pub fn spawn(spec: SpawnSpec<'_>) -> Result<u32, SpawnError> {
    unimplemented!()
}

#[allow(unused_variables)]
/// Non-blocking wait for `pid`: `Some` once it has exited (and is reaped).
pub fn reap(pid: u32) -> Option<ExitStatus> {
    unimplemented!()
}

#[allow(unused_variables)]
/// Sends `sig` to `pid`. A process that is already gone is not an error.
pub fn signal(pid: u32, sig: i32) -> std::io::Result<()> {
    unimplemented!()
}
