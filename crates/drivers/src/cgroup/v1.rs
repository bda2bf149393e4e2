//! cgroup v1 backend: one hierarchy per controller under `<root>/<controller>`.
//!
//! Controllers may be mounted separately (`cpu` and `cpuacct` as two hierarchies) or co-mounted
//! (`cpu,cpuacct` with `cpu` and `cpuacct` symlinks to it). Paths always go through
//! `<root>/<controller>` so both layouts work; controllers that resolve to the same directory
//! share one hierarchy, which is created, joined and removed once.

use super::stat::{Kind, OpenFile, StatFile};
use super::util::{self, io_err};
use super::*;
use std::collections::HashSet;

/// The controllers the agent uses, in the order hierarchies are created and joined. `freezer`
/// comes last so that a pid moved into a frozen cgroup is already placed everywhere else when
/// it stops.
const CONTROLLERS: [&str; 7] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer",
];
/// The CFS period the agent always uses, in µs (the kernel default).
const CFS_PERIOD_US: u64 = 100_000;
/// v1 reports "no memory limit" as the largest page-aligned `i64`; anything this large is that.
const UNLIMITED: u64 = 1 << 62;

#[derive(Debug)]
struct Ctrl {
    name: &'static str,
    /// `<root>/<name>`, possibly a symlink to a co-mounted hierarchy.
    mount: PathBuf,
    /// The agent's parent below the hierarchy root, normalised (`""` is the root).
    parent: String,
    /// False when an earlier controller resolves to the same hierarchy.
    primary: bool,
}

#[derive(Debug)]
pub struct V1 {
    ctrls: Vec<Ctrl>,
}

impl V1 {
    pub fn new(root: &Path, proc_root: &Path, parent: Parent) -> Result<V1> {
        let self_cgroup = match &parent {
            Parent::Own => Some(util::read_self_cgroup(proc_root)?),
            Parent::Absolute(_) => None,
        };
        let absolute = match &parent {
            Parent::Absolute(p) => Some(util::normalize_rel(p)?),
            Parent::Own => None,
        };
        let mut seen = HashSet::new();
        let mut ctrls = Vec::new();
        for name in CONTROLLERS {
            let mount = root.join(name);
            if !mount.is_dir() {
                continue;
            }
            let canonical = std::fs::canonicalize(&mount).unwrap_or_else(|_| mount.clone());
            let primary = seen.insert(canonical);
            let parent = match (&absolute, &self_cgroup) {
                (Some(p), _) => p.clone(),
                (None, Some(s)) => {
                    // A mounted controller is always listed in /proc/self/cgroup; should it
                    // not be, the process is in that hierarchy's root.
                    let own = util::own_path(s, name).unwrap_or_default();
                    util::join_rel(&util::normalize_rel(&own)?, "nodeagent")
                }
                (None, None) => String::new(),
            };
            ctrls.push(Ctrl {
                name,
                mount,
                parent,
                primary,
            });
        }
        if ctrls.is_empty() {
            return Err(CgroupError::NotFound(root.to_path_buf()));
        }
        Ok(V1 { ctrls })
    }

    /// The cgroup's path below `ctrl`'s hierarchy root.
    fn rel(ctrl: &Ctrl, cg: &CgroupRef) -> Result<String> {
        match cg {
            CgroupRef::Owned(leaf) => {
                util::validate_leaf(leaf)?;
                Ok(util::join_rel(&ctrl.parent, leaf))
            }
            CgroupRef::External(p) => util::normalize_rel(p),
        }
    }

    /// `(controller, directory)` for every controller, whether the directory exists or not.
    fn all_dirs(&self, cg: &CgroupRef) -> Result<Vec<(&Ctrl, PathBuf)>> {
        self.ctrls
            .iter()
            .map(|c| Ok((c, util::under(&c.mount, &Self::rel(c, cg)?))))
            .collect()
    }

    /// The directories the cgroup is addressed by: all of them for an owned cgroup (a missing
    /// one is an error when used), only the existing ones for an external one (it may live in
    /// some hierarchies only).
    fn used_dirs(&self, cg: &CgroupRef) -> Result<Vec<(&Ctrl, PathBuf)>> {
        let mut d = self.all_dirs(cg)?;
        if matches!(cg, CgroupRef::External(_)) {
            d.retain(|(_, p)| p.is_dir());
        }
        Ok(d)
    }

    /// The `cpu` hierarchy, or the first one: the one [`CgroupManager::path`] reports.
    fn main_ctrl(&self) -> Option<&Ctrl> {
        self.ctrls
            .iter()
            .find(|c| c.name == "cpu")
            .or_else(|| self.ctrls.first())
    }

    fn dir_of<'a>(dirs: &'a [(&Ctrl, PathBuf)], name: &str) -> Option<&'a Path> {
        dirs.iter()
            .find(|(c, _)| c.name == name)
            .map(|(_, p)| p.as_path())
    }

    /// The directory of controller `name`, or `Rejected { field }` when the controller is not
    /// there to honour the field.
    fn field_dir<'a>(
        dirs: &'a [(&Ctrl, PathBuf)],
        name: &str,
        field: &'static str,
    ) -> Result<&'a Path> {
        Self::dir_of(dirs, name).ok_or_else(|| CgroupError::Rejected {
            field,
            message: format!("the cgroup v1 `{name}` controller is not available for this cgroup"),
        })
    }

    /// Creates `rel` and its missing ancestors in one hierarchy. In the cpuset hierarchy every
    /// directory on the way gets its parent's `cpuset.cpus`/`cpuset.mems`: v1 creates them
    /// empty, and no task can join a cpuset with no CPUs or memory nodes (ENOSPC).
    fn create_chain(ctrl: &Ctrl, rel: &str) -> Result<()> {
        let mut cur = ctrl.mount.clone();
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            let parent = cur.clone();
            cur.push(comp);
            util::mkdir(&cur)?;
            if ctrl.name == "cpuset" {
                init_cpuset(&parent, &cur)?;
            }
        }
        Ok(())
    }

    fn write_memory(dir: &Path, bytes: u64) -> Result<()> {
        const FIELD: &str = "resources.memory";
        let path = dir.join("memory.limit_in_bytes");
        let value = bytes.to_string();
        let written = util::write_raw(&path, value.as_bytes());
        super::stat::note_limit_written();
        match written {
            Ok(()) => Ok(()),
            // v1 refuses to lower the limit below what it cannot reclaim (no OOM kill on resize).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let usage = util::read_opt(&dir.join("memory.usage_in_bytes"))
                    .ok()
                    .flatten()
                    .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string());
                Err(CgroupError::Rejected {
                    field: FIELD,
                    message: format!(
                        "cannot set the memory limit to {bytes} bytes: it is below current usage \
                         ({usage} bytes) and the kernel could not reclaim enough"
                    ),
                })
            }
            Err(e) => Err(util::field_err(FIELD, &path, &value, e)),
        }
    }
}

/// Copies `cpuset.cpus` and `cpuset.mems` from `parent` into `dir` where `dir`'s are empty.
fn init_cpuset(parent: &Path, dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let Some(cur) = util::read_opt(&dir.join(file))? else {
            continue;
        };
        if !cur.trim().is_empty() {
            continue;
        }
        if let Some(p) = util::read_opt(&parent.join(file))? {
            let p = p.trim();
            if !p.is_empty() {
                util::write_file(&dir.join(file), p)?;
            }
        }
    }
    Ok(())
}

fn parse_err(path: &Path, content: &str) -> CgroupError {
    CgroupError::Other(format!(
        "unexpected content in {}: {:?}",
        path.display(),
        content.trim()
    ))
}

/// Reads an optional numeric file: `Ok(None)` if missing.
fn read_num(path: &Path) -> Result<Option<i64>> {
    match util::read_opt(path)? {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| parse_err(path, &s)),
    }
}

impl CgroupManager for V1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn create(&self, cg: &CgroupRef) -> Result<()> {
        match cg {
            CgroupRef::Owned(_) => {
                for c in self.ctrls.iter().filter(|c| c.primary) {
                    Self::create_chain(c, &Self::rel(c, cg)?)?;
                }
                Ok(())
            }
            // An adopted cgroup is someone else's: it must exist, and is never created.
            CgroupRef::External(p) => {
                if self.exists(cg) {
                    Ok(())
                } else {
                    Err(CgroupError::Other(format!(
                        "external cgroup {p:?} does not exist in any cgroup v1 hierarchy"
                    )))
                }
            }
        }
    }

    fn remove(&self, cg: &CgroupRef) -> Result<()> {
        if let CgroupRef::External(p) = cg {
            return Err(CgroupError::Other(format!(
                "refusing to remove external cgroup {p:?}: the agent only removes cgroups it created"
            )));
        }
        // Try every hierarchy even if one fails, so a retry has less to do; report the first
        // failure.
        let mut first_err = None;
        for (c, dir) in self.all_dirs(cg)? {
            if !c.primary {
                continue;
            }
            if let Err(e) = util::rmdir(&dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn exists(&self, cg: &CgroupRef) -> bool {
        self.all_dirs(cg)
            .map(|d| d.iter().any(|(_, p)| p.is_dir()))
            .unwrap_or(false)
    }

    fn apply(&self, cg: &CgroupRef, res: &Resources) -> Result<()> {
        let dirs = self.used_dirs(cg)?;
        // cpuset first: it constrains where the rest runs and never depends on other values.
        if let Some(cs) = &res.cpuset {
            let dir = Self::field_dir(&dirs, "cpuset", "resources.cpuset")?;
            util::write_field("resources.cpuset", &dir.join("cpuset.cpus"), &cs.0)?;
        }
        if let Some(cpu) = res.cpu {
            const FIELD: &str = "resources.cpu";
            let dir = Self::field_dir(&dirs, "cpu", FIELD)?;
            let quota = (cpu * CFS_PERIOD_US as f64).round();
            if !quota.is_finite() || quota < 1.0 {
                return Err(CgroupError::Rejected {
                    field: FIELD,
                    message: format!("{cpu} cores is not a positive CPU limit"),
                });
            }
            // Period before quota: the kernel checks the quota against the period in force.
            util::write_field(
                FIELD,
                &dir.join("cpu.cfs_period_us"),
                &CFS_PERIOD_US.to_string(),
            )?;
            util::write_field(
                FIELD,
                &dir.join("cpu.cfs_quota_us"),
                &(quota as u64).to_string(),
            )?;
        }
        if let Some(w) = res.cpu_weight {
            const FIELD: &str = "resources.cpu_weight";
            let dir = Self::field_dir(&dirs, "cpu", FIELD)?;
            let shares = (w.saturating_mul(1024) / 100).max(2);
            util::write_field(FIELD, &dir.join("cpu.shares"), &shares.to_string())?;
        }
        if let Some(m) = &res.memory {
            let dir = Self::field_dir(&dirs, "memory", "resources.memory")?;
            Self::write_memory(dir, m.0)?;
        }
        if let Some(p) = res.pids {
            const FIELD: &str = "resources.pids";
            let dir = Self::field_dir(&dirs, "pids", FIELD)?;
            util::write_field(FIELD, &dir.join("pids.max"), &p.to_string())?;
        }
        Ok(())
    }

    fn read_limits(&self, cg: &CgroupRef) -> Result<Limits> {
        let dirs = self.used_dirs(cg)?;
        if !dirs.iter().any(|(_, p)| p.is_dir()) {
            let p = dirs.first().map(|(_, p)| p.clone()).unwrap_or_default();
            return Err(io_err(
                "read",
                &p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such cgroup"),
            ));
        }
        let mut l = Limits::default();
        if let Some(d) = Self::dir_of(&dirs, "cpu") {
            l.cpu_quota_us =
                read_num(&d.join("cpu.cfs_quota_us"))?.and_then(|q| u64::try_from(q).ok());
            l.cpu_period_us = read_num(&d.join("cpu.cfs_period_us"))?
                .and_then(|p| u64::try_from(p).ok())
                .unwrap_or(0);
            l.cpu_weight = read_num(&d.join("cpu.shares"))?
                .and_then(|s| u64::try_from(s).ok())
                .map_or(0, |s| s * 100 / 1024);
        }
        if let Some(d) = Self::dir_of(&dirs, "cpuset") {
            l.cpuset = util::read_opt(&d.join("cpuset.cpus"))?
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
        }
        if let Some(d) = Self::dir_of(&dirs, "memory") {
            let p = d.join("memory.limit_in_bytes");
            if let Some(s) = util::read_opt(&p)? {
                let v: u64 = s.trim().parse().map_err(|_| parse_err(&p, &s))?;
                l.memory_bytes = (v < UNLIMITED).then_some(v);
            }
        }
        if let Some(d) = Self::dir_of(&dirs, "pids") {
            let p = d.join("pids.max");
            if let Some(s) = util::read_opt(&p)? {
                l.pids = match s.trim() {
                    "max" => None,
                    t => Some(t.parse().map_err(|_| parse_err(&p, &s))?),
                };
            }
        }
        if let Some(d) = Self::dir_of(&dirs, "freezer") {
            l.frozen =
                util::read_opt(&d.join("freezer.state"))?.is_some_and(|s| s.trim() == "FROZEN");
        }
        Ok(l)
    }

    fn freeze(&self, cg: &CgroupRef, frozen: bool) -> Result<()> {
        let dirs = self.used_dirs(cg)?;
        let dir = Self::dir_of(&dirs, "freezer").ok_or_else(|| {
            CgroupError::Other("the cgroup v1 freezer controller is not available".into())
        })?;
        let state = dir.join("freezer.state");
        util::write_file(&state, if frozen { "FROZEN" } else { "THAWED" })?;
        if !frozen {
            // Thawing is synchronous in v1.
            return Ok(());
        }
        // Freezing is asynchronous: the state reads FREEZING until every task has stopped, and
        // callers rely on "frozen" meaning stopped.
        let mut last = String::new();
        let done = util::poll_until(util::FREEZE_WAIT, || {
            last = util::read_string(&state)?.trim().to_string();
            Ok(last == "FROZEN")
        })?;
        if done {
            Ok(())
        } else {
            Err(CgroupError::Other(format!(
                "{} did not freeze within {:?} (state {last})",
                dir.display(),
                util::FREEZE_WAIT
            )))
        }
    }

    fn add_pid(&self, cg: &CgroupRef, pid: u32) -> Result<()> {
        for (c, dir) in self.used_dirs(cg)? {
            if c.primary {
                util::move_pid(&dir.join("cgroup.procs"), pid)?;
            }
        }
        Ok(())
    }

    fn procs(&self, cg: &CgroupRef) -> Result<Vec<u32>> {
        let dirs = self.used_dirs(cg)?;
        let main = self.main_ctrl().map_or("", |c| c.name);
        let dir = Self::dir_of(&dirs, main)
            .or_else(|| dirs.first().map(|(_, p)| p.as_path()))
            .ok_or_else(|| CgroupError::Other(format!("cgroup {cg:?} does not exist")))?;
        util::read_procs(&dir.join("cgroup.procs"))
    }

    fn procs_files(&self, cg: &CgroupRef) -> Vec<PathBuf> {
        self.used_dirs(cg)
            .map(|d| {
                d.into_iter()
                    .filter(|(c, p)| c.primary && p.is_dir())
                    .map(|(_, p)| p.join("cgroup.procs"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn dirs(&self, cg: &CgroupRef) -> Vec<(String, PathBuf)> {
        self.used_dirs(cg)
            .map(|d| {
                d.into_iter()
                    .map(|(c, p)| (c.name.to_string(), p))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn path(&self, cg: &CgroupRef) -> String {
        self.main_ctrl()
            .and_then(|c| Self::rel(c, cg).ok())
            .map(|r| format!("/{r}"))
            .unwrap_or_default()
    }

    fn stat_reader(&self, cg: &CgroupRef) -> Result<StatReader> {
        let dirs = self.used_dirs(cg)?;
        let mut files = Vec::new();
        let mut add = |name: &str, file: &str, kind: Kind| -> Result<()> {
            if let Some(d) = Self::dir_of(&dirs, name) {
                if let Some(f) = OpenFile::open_opt(d.join(file))? {
                    files.push(StatFile::new(kind, f));
                }
            }
            Ok(())
        };
        add("cpuacct", "cpuacct.usage", Kind::V1CpuAcct)?;
        add("cpu", "cpu.stat", Kind::V1CpuStat)?;
        add("memory", "memory.usage_in_bytes", Kind::V1MemUsage)?;
        add("memory", "memory.limit_in_bytes", Kind::V1MemLimit)?;
        add("memory", "memory.oom_control", Kind::V1OomControl)?;
        add("pids", "pids.current", Kind::PidsCurrent)?;
        if let Some(d) = Self::dir_of(&dirs, "blkio") {
            let throttle = OpenFile::open_opt(d.join("blkio.throttle.io_service_bytes_recursive"))?;
            let legacy = OpenFile::open_opt(d.join("blkio.io_service_bytes_recursive"))?;
            match (throttle, legacy) {
                (Some(t), l) => files.push(StatFile::new(Kind::V1Blkio, t).with_fallback(l)),
                (None, Some(l)) => files.push(StatFile::new(Kind::V1Blkio, l)),
                (None, None) => {}
            }
        }
        let main = self.main_ctrl().map_or("", |c| c.name);
        let probe = Self::dir_of(&dirs, main)
            .or_else(|| dirs.first().map(|(_, p)| p.as_path()))
            .map(Path::to_path_buf)
            .unwrap_or_default();
        StatReader::build(&probe, files)
    }
}
