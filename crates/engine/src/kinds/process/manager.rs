//! The `process` manager: a command spawned into a cgroup of its own, with its limits written
//! before the command runs, and its output captured under the state dir.

use crate::kinds::cgroup_error;
use nodeagent_drivers::cgroup::{CgroupManager, CgroupRef, Cgroups};
use nodeagent_drivers::process::{self, SpawnError, SpawnSpec};
use nodeagent_types::{ApiError, ObjectSpec};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::Arc;

pub struct ProcessManager {
    cgroups: Arc<Cgroups>,
    /// `<state-dir>/objects`: one folder per object with `stdout.log` and `stderr.log`.
    objects_dir: PathBuf,
}

/// A started process.
#[derive(Debug, Clone)]
pub struct Spawned {
    pub pid: u32,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl ProcessManager {
    pub fn new(cgroups: Arc<Cgroups>, objects_dir: PathBuf) -> Self {
        ProcessManager {
            cgroups,
            objects_dir,
        }
    }

    /// Creates the object's cgroup, applies its resources and starts the command in it. On any
    /// failure, removes what it made: a failed create leaves nothing behind.
    #[tracing::instrument(name = "manager.process.create", skip_all)]
    pub fn create(&self, id: &str, spec: &ObjectSpec) -> Result<(CgroupRef, Spawned), ApiError> {
        let cg = CgroupRef::Owned(id.to_string());
        self.cgroups.create(&cg).map_err(cgroup_error)?;
        let res = self
            .cgroups
            .apply(&cg, &spec.resources)
            .map_err(cgroup_error)
            .and_then(|()| self.spawn(id, &cg, spec));
        match res {
            Ok(s) => Ok((cg, s)),
            Err(e) => {
                if let Err(re) = self.cgroups.remove(&cg) {
                    tracing::warn!(id, error = %re, "cleanup after failed create");
                }
                let _ = std::fs::remove_dir_all(self.objects_dir.join(id));
                Err(e)
            }
        }
    }

    /// Removes the object's log folder.
    pub fn remove_logs(&self, id: &str) {
        let dir = self.objects_dir.join(id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %dir.display(), error = %e, "removing the log folder");
            }
        }
    }

    /// Where the object's output goes.
    pub fn log_paths(&self, id: &str) -> (PathBuf, PathBuf) {
        let dir = self.objects_dir.join(id);
        (dir.join("stdout.log"), dir.join("stderr.log"))
    }

    /// Starts (or restarts) the command in its existing cgroup.
    pub fn spawn(&self, id: &str, cg: &CgroupRef, spec: &ObjectSpec) -> Result<Spawned, ApiError> {
        let Some(p) = spec.section::<nodeagent_types::ProcessSpec>() else {
            return Err(ApiError::invalid(
                "process",
                "kind process needs a `process` section",
            ));
        };
        let dir = self.objects_dir.join(id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::internal(format!("create {}: {e}", dir.display())))?;
        let stdout_path = dir.join("stdout.log");
        let stderr_path = dir.join("stderr.log");
        let open = |p: &PathBuf| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| ApiError::internal(format!("open {}: {e}", p.display())))
        };
        let stdout = open(&stdout_path)?;
        let stderr = open(&stderr_path)?;
        let pid = process::spawn(SpawnSpec {
            command: &p.command,
            env: &p.env,
            cwd: p.cwd.as_deref(),
            stdout,
            stderr,
            cgroup_procs: self.cgroups.procs_files(cg),
        })
        .map_err(|e| match e {
            SpawnError::Exec { .. } => ApiError::invalid("process.command[0]", e.to_string()),
            SpawnError::Cwd { .. } => ApiError::invalid("process.cwd", e.to_string()),
            other => ApiError::internal(other.to_string()),
        })?;
        Ok(Spawned {
            pid,
            stdout_path,
            stderr_path,
        })
    }

    /// Signals every process in the cgroup (the command and anything it forked).
    pub fn signal_all(&self, cg: &CgroupRef, main_pid: Option<u32>, sig: i32) {
        let mut pids = self.cgroups.procs(cg).unwrap_or_default();
        if let Some(p) = main_pid {
            if !pids.contains(&p) {
                pids.push(p);
            }
        }
        for pid in pids {
            if let Err(e) = process::signal(pid, sig) {
                tracing::debug!(pid, sig, error = %e, "signal failed");
            }
        }
    }

    /// Whether any process is left in the cgroup.
    pub fn is_empty(&self, cg: &CgroupRef) -> bool {
        self.cgroups.procs(cg).map(|p| p.is_empty()).unwrap_or(true)
    }

    /// Removes the cgroup (after the processes are gone).
    pub fn remove(&self, cg: &CgroupRef) -> Result<(), ApiError> {
        self.cgroups.remove(cg).map_err(cgroup_error)
    }
}
