//! The `cgroup` manager: adopts running pids (moved into a cgroup the agent creates, and moved
//! back where they came from on delete) or an existing cgroup path (controlled where it is, and
//! never removed).

use crate::kinds::cgroup_error;
use nodeagent_drivers::cgroup::{CgroupManager, CgroupRef, Cgroups};
use nodeagent_drivers::procfs::ProcFs;
use nodeagent_types::{ApiError, ObjectSpec};
use std::path::PathBuf;
use std::sync::Arc;

pub struct CgroupKindManager {
    cgroups: Arc<Cgroups>,
    procfs: ProcFs,
    cgroup_root: PathBuf,
}

/// What adoption did, so that release can undo it.
#[derive(Debug, Clone)]
pub struct Adopted {
    pub cg: CgroupRef,
    /// For adopted pids: each pid's cgroups before adoption.
    pub origins: Vec<(u32, Origin)>,
}

/// A pid's cgroups before adoption, the `(controllers, path)` pairs of `/proc/<pid>/cgroup`,
/// kept as one `controllers:path` line each in a single string: one allocation where a vector
/// of pairs took two per hierarchy (about 1 KB an object on a v1 host, 10 MB at 10,000).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Origin(Box<str>);

impl Origin {
    pub fn new(pairs: &[(String, String)]) -> Origin {
        let mut s = String::new();
        for (c, p) in pairs {
            s.push_str(c);
            s.push(':');
            s.push_str(p);
            s.push('\n');
        }
        Origin(s.into_boxed_str())
    }

    /// The `(controllers, path)` pairs, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.lines().filter_map(|l| l.split_once(':'))
    }
}

impl CgroupKindManager {
    pub fn new(cgroups: Arc<Cgroups>, procfs: ProcFs, cgroup_root: PathBuf) -> Self {
        CgroupKindManager {
            cgroups,
            procfs,
            cgroup_root,
        }
    }

    #[tracing::instrument(name = "manager.cgroup.adopt", skip_all)]
    pub fn adopt(&self, id: &str, spec: &ObjectSpec) -> Result<Adopted, ApiError> {
        let Some(c) = spec.section::<nodeagent_types::CgroupSpec>() else {
            return Err(ApiError::invalid(
                "cgroup",
                "kind cgroup needs a `cgroup` section",
            ));
        };
        if let Some(path) = &c.path {
            let cg = CgroupRef::External(normalize(path));
            if !self.cgroups.exists(&cg) {
                return Err(ApiError::invalid(
                    "cgroup.path",
                    format!("no cgroup {path:?} under {}", self.cgroup_root.display()),
                ));
            }
            self.cgroups
                .apply(&cg, &spec.resources)
                .map_err(cgroup_error)?;
            return Ok(Adopted {
                cg,
                origins: Vec::new(),
            });
        }
        let pids = c.pids.clone().unwrap_or_default();
        let me = std::process::id();
        let mut origins = Vec::with_capacity(pids.len());
        for (i, &pid) in pids.iter().enumerate() {
            if pid == 1 || pid == me {
                return Err(ApiError::invalid(
                    format!("cgroup.pids[{i}]"),
                    format!("refusing to adopt pid {pid}: it is init or the agent itself"),
                ));
            }
            if !self.procfs.alive(pid) {
                return Err(ApiError::invalid(
                    format!("cgroup.pids[{i}]"),
                    format!("no running process with pid {pid}"),
                ));
            }
            let origin = self
                .procfs
                .cgroups_of(pid)
                .map_err(|e| ApiError::invalid(format!("cgroup.pids[{i}]"), e.to_string()))?;
            origins.push((pid, Origin::new(&origin)));
        }
        let cg = CgroupRef::Owned(id.to_string());
        self.cgroups.create(&cg).map_err(cgroup_error)?;
        let mut adopted = Adopted {
            cg: cg.clone(),
            origins: Vec::new(),
        };
        let res = self
            .cgroups
            .apply(&cg, &spec.resources)
            .map_err(cgroup_error);
        if let Err(e) = res {
            self.release(&adopted);
            return Err(e);
        }
        for (i, (pid, origin)) in origins.into_iter().enumerate() {
            if let Err(e) = self.cgroups.add_pid(&cg, pid) {
                self.release(&adopted);
                return Err(ApiError::invalid(
                    format!("cgroup.pids[{i}]"),
                    format!("cannot move pid {pid}: {e}"),
                ));
            }
            adopted.origins.push((pid, origin));
        }
        Ok(adopted)
    }

    /// Undoes adoption: moves pids back where they were and removes the agent's cgroup. An
    /// adopted path is left as it is.
    #[tracing::instrument(name = "manager.cgroup.release", skip_all)]
    pub fn release(&self, a: &Adopted) {
        if let CgroupRef::External(_) = a.cg {
            return;
        }
        for (pid, origin) in &a.origins {
            for (controllers, path) in origin.pairs() {
                let dir = if controllers.is_empty() {
                    self.cgroup_root.join(path.trim_start_matches('/'))
                } else {
                    // v1: one line per hierarchy; name=systemd and the like are not ours.
                    let Some(c) = controllers.split(',').find(|c| !c.starts_with("name=")) else {
                        continue;
                    };
                    self.cgroup_root.join(c).join(path.trim_start_matches('/'))
                };
                let f = dir.join("cgroup.procs");
                if f.exists() {
                    if let Err(e) = std::fs::write(&f, pid.to_string()) {
                        tracing::debug!(pid, path = %f.display(), error = %e, "restore pid");
                    }
                }
            }
        }
        if let Err(e) = self.cgroups.remove(&a.cg) {
            tracing::warn!(error = %e, "remove adopted cgroup");
        }
    }

    /// Pids still in the cgroup.
    pub fn procs(&self, cg: &CgroupRef) -> Vec<u32> {
        self.cgroups.procs(cg).unwrap_or_default()
    }
}

fn normalize(path: &str) -> String {
    format!("/{}", path.trim_matches('/'))
}

#[cfg(test)]
mod origin_tests {
    use super::Origin;

    #[test]
    fn origin_keeps_the_pairs_in_order() {
        let pairs = vec![
            ("name=systemd".to_string(), "/".to_string()),
            ("cpu,cpuacct".to_string(), "/a/b:c".to_string()),
            (String::new(), "/unified".to_string()),
        ];
        let o = Origin::new(&pairs);
        let back: Vec<(String, String)> = o
            .pairs()
            .map(|(c, p)| (c.to_string(), p.to_string()))
            .collect();
        assert_eq!(back, pairs);
    }
}
