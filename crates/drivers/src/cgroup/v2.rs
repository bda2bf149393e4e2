//! cgroup v2 backend: one unified hierarchy under the root.
//!
//! A controller's files only appear in a cgroup when its parent lists the controller in
//! `cgroup.subtree_control`, so `create` enables the controllers the agent uses on the way down.

use super::stat::{Kind, OpenFile, StatFile};
use super::util::{self, io_err};
use super::*;
use std::io;

/// The controllers the agent uses, in the order they are enabled.
const CONTROLLERS: [&str; 5] = ["cpu", "memory", "pids", "cpuset", "io"];
/// The CFS period the agent always uses, in µs (the kernel default).
const CFS_PERIOD_US: u64 = 100_000;

#[derive(Debug)]
pub struct V2 {
    root: PathBuf,
    /// The agent's parent below the root, normalised (`""` is the root).
    parent: String,
}

impl V2 {
    pub fn new(root: &Path, proc_root: &Path, parent: Parent) -> Result<V2> {
        let parent = match parent {
            Parent::Absolute(p) => util::normalize_rel(&p)?,
            Parent::Own => {
                let s = util::read_self_cgroup(proc_root)?;
                let own = util::own_path(&s, "").ok_or_else(|| {
                    CgroupError::Other(format!(
                        "{} has no cgroup v2 line (`0::/path`)",
                        proc_root.join("self/cgroup").display()
                    ))
                })?;
                util::join_rel(&util::normalize_rel(&own)?, "nodeagent")
            }
        };
        Ok(V2 {
            root: root.to_path_buf(),
            parent,
        })
    }

    fn rel(&self, cg: &CgroupRef) -> Result<String> {
        match cg {
            CgroupRef::Owned(leaf) => {
                util::validate_leaf(leaf)?;
                Ok(util::join_rel(&self.parent, leaf))
            }
            CgroupRef::External(p) => util::normalize_rel(p),
        }
    }

    fn dir(&self, cg: &CgroupRef) -> Result<PathBuf> {
        Ok(util::under(&self.root, &self.rel(cg)?))
    }

    /// The cgroup's directory, or an `Io` NotFound error naming it.
    fn existing_dir(&self, cg: &CgroupRef) -> Result<PathBuf> {
        let dir = self.dir(cg)?;
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(io_err(
                "open",
                &dir,
                io::Error::new(io::ErrorKind::NotFound, "no such cgroup"),
            ))
        }
    }

    /// Enables the agent's controllers in `cgroup.subtree_control` of each directory in `dirs`
    /// (top-down), where the directory offers them (`cgroup.controllers`) and they are not yet
    /// enabled.
    ///
    /// Best effort: the kernel refuses for good reasons the agent cannot fix here (a cgroup
    /// with processes in it cannot delegate domain controllers, an ancestor may not offer the
    /// controller). A controller that ends up missing only matters if a resource needs it, and
    /// then `apply` reports it against that field.
    fn enable_controllers(dirs: &[PathBuf]) {
        for dir in dirs {
            let offered = util::read_opt(&dir.join("cgroup.controllers"))
                .ok()
                .flatten()
                .unwrap_or_default();
            let enabled = util::read_opt(&dir.join("cgroup.subtree_control"))
                .ok()
                .flatten()
                .unwrap_or_default();
            let missing: Vec<&str> = CONTROLLERS
                .iter()
                .copied()
                .filter(|c| offered.split_whitespace().any(|o| o == *c))
                .filter(|c| !enabled.split_whitespace().any(|o| o == *c))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let ctl = dir.join("cgroup.subtree_control");
            let all = missing
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            // One write enables all or nothing; if it fails, enable what can be one by one.
            if util::write_raw(&ctl, all.as_bytes()).is_err() {
                for c in &missing {
                    let _ = util::write_raw(&ctl, format!("+{c}").as_bytes());
                }
            }
        }
    }

    /// Writes a resource field's file. A missing file in an existing cgroup means the
    /// controller is not enabled for it, which makes the field impossible: `Rejected`.
    fn write_field(
        dir: &Path,
        file: &str,
        controller: &str,
        field: &'static str,
        value: &str,
    ) -> Result<()> {
        let path = dir.join(file);
        match util::write_raw(&path, value.as_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_dir() => {
                Err(CgroupError::Rejected {
                    field,
                    message: format!(
                        "the `{controller}` controller is not enabled for {} (it must be listed \
                         in cgroup.subtree_control of every ancestor)",
                        dir.display()
                    ),
                })
            }
            Err(e) => Err(util::field_err(field, &path, value, e)),
        }
    }
}

fn parse_err(path: &Path, content: &str) -> CgroupError {
    CgroupError::Other(format!(
        "unexpected content in {}: {:?}",
        path.display(),
        content.trim()
    ))
}

/// Reads a `max`-or-number file: `Ok(None)` if missing, `Some(None)` for `max`.
fn read_max(path: &Path) -> Result<Option<Option<u64>>> {
    match util::read_opt(path)? {
        None => Ok(None),
        Some(s) => parse::parse_max(s.as_bytes())
            .map(Some)
            .ok_or_else(|| parse_err(path, &s)),
    }
}

impl CgroupManager for V2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(&self, cg: &CgroupRef) -> Result<()> {
        let leaf = match cg {
            CgroupRef::Owned(leaf) => leaf,
            CgroupRef::External(p) => {
                return if self.exists(cg) {
                    Ok(())
                } else {
                    Err(CgroupError::Other(format!(
                        "external cgroup {p:?} does not exist"
                    )))
                };
            }
        };
        util::validate_leaf(leaf)?;
        let parent_comps: Vec<&str> = self.parent.split('/').filter(|c| !c.is_empty()).collect();
        // chain[k] is the directory of the first k components of `<parent>/<leaf>`.
        let mut chain = vec![self.root.clone()];
        let mut first_created = None;
        for comp in parent_comps
            .iter()
            .copied()
            .chain(std::iter::once(leaf.as_str()))
        {
            let next = chain
                .last()
                .map_or_else(|| self.root.join(comp), |d| d.join(comp));
            if util::mkdir(&next)? {
                first_created.get_or_insert(chain.len() - 1);
            }
            chain.push(next);
        }
        // Enable from the directory the parent hangs from (or, if higher, the one the first
        // directory we created hangs from) down to the leaf's parent: the parent's own parent
        // must delegate the controllers for the parent to offer them, and nothing above it is
        // the agent's to change.
        let n = parent_comps.len();
        let start = first_created.map_or(n.saturating_sub(1), |f| f.min(n.saturating_sub(1)));
        let dirs = chain.get(start..=n).unwrap_or_default();
        Self::enable_controllers(dirs);
        Ok(())
    }

    fn remove(&self, cg: &CgroupRef) -> Result<()> {
        if let CgroupRef::External(p) = cg {
            return Err(CgroupError::Other(format!(
                "refusing to remove external cgroup {p:?}: the agent only removes cgroups it created"
            )));
        }
        util::rmdir(&self.dir(cg)?)
    }

    fn exists(&self, cg: &CgroupRef) -> bool {
        self.dir(cg).is_ok_and(|d| d.is_dir())
    }

    fn apply(&self, cg: &CgroupRef, res: &Resources) -> Result<()> {
        let dir = self.existing_dir(cg)?;
        if let Some(cs) = &res.cpuset {
            Self::write_field(&dir, "cpuset.cpus", "cpuset", "resources.cpuset", &cs.0)?;
        }
        if let Some(cpu) = res.cpu {
            let quota = (cpu * CFS_PERIOD_US as f64).round();
            if !quota.is_finite() || quota < 1.0 {
                return Err(CgroupError::Rejected {
                    field: "resources.cpu",
                    message: format!("{cpu} cores is not a positive CPU limit"),
                });
            }
            let v = format!("{} {CFS_PERIOD_US}", quota as u64);
            Self::write_field(&dir, "cpu.max", "cpu", "resources.cpu", &v)?;
        }
        if let Some(w) = res.cpu_weight {
            let v = w.to_string();
            Self::write_field(&dir, "cpu.weight", "cpu", "resources.cpu_weight", &v)?;
        }
        // Unlike v1, v2 accepts a memory.max below usage and reclaims (or OOM-kills) to meet
        // it, so there is no "below usage" refusal to report here.
        if let Some(m) = &res.memory {
            let v = m.0.to_string();
            let written = Self::write_field(&dir, "memory.max", "memory", "resources.memory", &v);
            super::stat::note_limit_written();
            written?;
        }
        if let Some(p) = res.pids {
            let v = p.to_string();
            Self::write_field(&dir, "pids.max", "pids", "resources.pids", &v)?;
        }
        Ok(())
    }

    fn read_limits(&self, cg: &CgroupRef) -> Result<Limits> {
        let dir = self.existing_dir(cg)?;
        let mut l = Limits::default();
        let p = dir.join("cpu.max");
        if let Some(s) = util::read_opt(&p)? {
            let (q, period) = parse::cpu_max(s.as_bytes()).ok_or_else(|| parse_err(&p, &s))?;
            l.cpu_quota_us = q;
            l.cpu_period_us = period;
        }
        let p = dir.join("cpu.weight");
        if let Some(s) = util::read_opt(&p)? {
            l.cpu_weight = parse::parse_u64(s.as_bytes()).ok_or_else(|| parse_err(&p, &s))?;
        }
        l.cpuset = util::read_opt(&dir.join("cpuset.cpus"))?
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        l.memory_bytes = read_max(&dir.join("memory.max"))?.flatten();
        l.pids = read_max(&dir.join("pids.max"))?.flatten();
        l.frozen = util::read_opt(&dir.join("cgroup.freeze"))?.is_some_and(|s| s.trim() == "1");
        Ok(l)
    }

    fn freeze(&self, cg: &CgroupRef, frozen: bool) -> Result<()> {
        let dir = self.existing_dir(cg)?;
        util::write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        if !frozen {
            return Ok(());
        }
        // Freezing completes asynchronously; `cgroup.events` says `frozen 1` once every task
        // has stopped. A tree without that file (a test fixture) has nothing to wait for.
        let events = dir.join("cgroup.events");
        let done = util::poll_until(util::FREEZE_WAIT, || match util::read_opt(&events)? {
            None => Ok(true),
            Some(s) => Ok(parse::keyed(s.as_bytes(), b"frozen") == Some(1)),
        })?;
        if done {
            Ok(())
        } else {
            Err(CgroupError::Other(format!(
                "{} did not freeze within {:?}",
                dir.display(),
                util::FREEZE_WAIT
            )))
        }
    }

    fn add_pid(&self, cg: &CgroupRef, pid: u32) -> Result<()> {
        util::move_pid(&self.dir(cg)?.join("cgroup.procs"), pid)
    }

    fn procs(&self, cg: &CgroupRef) -> Result<Vec<u32>> {
        util::read_procs(&self.dir(cg)?.join("cgroup.procs"))
    }

    fn procs_files(&self, cg: &CgroupRef) -> Vec<PathBuf> {
        self.dir(cg)
            .map(|d| vec![d.join("cgroup.procs")])
            .unwrap_or_default()
    }

    fn dirs(&self, cg: &CgroupRef) -> Vec<(String, PathBuf)> {
        self.dir(cg)
            .map(|d| vec![("unified".to_string(), d)])
            .unwrap_or_default()
    }

    fn path(&self, cg: &CgroupRef) -> String {
        self.rel(cg).map(|r| format!("/{r}")).unwrap_or_default()
    }

    fn stat_reader(&self, cg: &CgroupRef) -> Result<StatReader> {
        let dir = self.existing_dir(cg)?;
        let mut files = Vec::new();
        for (file, kind) in [
            ("cpu.stat", Kind::V2CpuStat),
            ("memory.current", Kind::V2MemCurrent),
            ("memory.max", Kind::V2MemMax),
            ("memory.events", Kind::V2MemEvents),
            ("pids.current", Kind::PidsCurrent),
            ("io.stat", Kind::V2IoStat),
        ] {
            if let Some(f) = OpenFile::open_opt(dir.join(file))? {
                files.push(StatFile::new(kind, f));
            }
        }
        StatReader::build(&dir, files)
    }
}
