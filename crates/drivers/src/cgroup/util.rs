//! Helpers shared by the v1 and v2 backends: name validation, cgroupfs reads and writes with
//! errors that name the path (or the spec field), and bounded polling.

use super::{CgroupError, Result};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `remove` keeps retrying an `rmdir` that fails with EBUSY: a killed process lingers in
/// `cgroup.procs` until the kernel has reaped it, which takes a few milliseconds.
pub(crate) const RMDIR_RETRY: Duration = Duration::from_millis(1000);
/// How long `freeze` waits for the kernel to report that every task is frozen.
pub(crate) const FREEZE_WAIT: Duration = Duration::from_millis(1000);
const POLL_STEP: Duration = Duration::from_millis(5);

/// Checks a leaf name (an object id) so that it can never address anything but a direct child of
/// the parent: no separators, no dot-dot, nothing the kernel or `/proc/<pid>/cgroup` would mangle.
pub(crate) fn validate_leaf(leaf: &str) -> Result<()> {
    let bad = leaf.is_empty()
        || leaf.len() > 255
        || leaf == "."
        || leaf.contains("..")
        || leaf.contains('/')
        || leaf.chars().any(|c| c.is_control());
    if bad {
        return Err(CgroupError::Other(format!(
            "invalid cgroup leaf name {leaf:?}: it must be non-empty, at most 255 bytes, and \
             contain no '/', no '..' and no control characters"
        )));
    }
    Ok(())
}

/// Normalises a path below a hierarchy root (`/a//b/` → `a/b`, `/` → ``), refusing `.` and `..`
/// components so that a path can never climb out of the hierarchy.
pub(crate) fn normalize_rel(path: &str) -> Result<String> {
    let mut out = String::with_capacity(path.len());
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if comp == "." || comp == ".." || comp.chars().any(|c| c.is_control()) {
            return Err(CgroupError::Other(format!(
                "invalid cgroup path {path:?}: it must be below the hierarchy root, without '.' \
                 or '..' components"
            )));
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(comp);
    }
    Ok(out)
}

/// Joins two normalised relative paths.
pub(crate) fn join_rel(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// `dir/rel` where `rel` may be empty (the hierarchy root itself).
pub(crate) fn under(dir: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(rel)
    }
}

/// Reads `<proc_root>/self/cgroup`.
pub(crate) fn read_self_cgroup(proc_root: &Path) -> Result<String> {
    let p = proc_root.join("self/cgroup");
    std::fs::read_to_string(&p).map_err(|e| io_err("read", &p, e))
}

/// The path of the hierarchy whose controller list (second field of a `/proc/<pid>/cgroup`
/// line) contains `controller`; `""` matches the v2 line (`0::/path`).
pub(crate) fn own_path(self_cgroup: &str, controller: &str) -> Option<String> {
    for line in self_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        if hit {
            // A cgroup removed under a running process shows as "/x (deleted)"; the path is
            // what matters.
            return Some(path.trim_end_matches(" (deleted)").to_string());
        }
    }
    None
}

pub(crate) fn io_err(op: &'static str, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `value` to a cgroup file in one `write(2)`, as cgroupfs expects a value per write.
/// The file must exist: cgroupfs files are created by the kernel, so a missing one means the
/// controller is absent (v2: not enabled) rather than something to create.
pub(crate) fn write_raw(path: &Path, value: &[u8]) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        // Truncation is a no-op on cgroupfs; it keeps the fake trees used in tests readable.
        .truncate(true)
        .open(path)?;
    let n = f.write(value)?;
    if n != value.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write ({n} of {} bytes)", value.len()),
        ));
    }
    Ok(())
}

/// Writes a file that is not a resource field (cgroup.procs, freezer state, ...).
pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    write_raw(path, value.as_bytes()).map_err(|e| io_err("write", path, e))
}

/// Whether an errno means "the kernel refused this value" rather than an I/O failure.
pub(crate) fn is_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EBUSY | libc::ERANGE | libc::ENOSPC | libc::EOVERFLOW)
    )
}

/// Explains a refusal in words the user of the spec field can act on.
pub(crate) fn refusal_reason(field: &str, e: &io::Error) -> &'static str {
    match (e.raw_os_error(), field) {
        (Some(libc::EINVAL), "resources.cpu") => {
            "the quota must be at least 1000 µs per 100000 µs period (0.01 cores) and within \
             what the parent cgroup allows"
        }
        (Some(libc::EINVAL | libc::ERANGE), "resources.cpuset") => {
            "the CPUs must exist and be within the parent cgroup's cpuset"
        }
        (Some(libc::EINVAL | libc::ERANGE), "resources.cpu_weight") => "out of range",
        (Some(libc::EINVAL), _) => {
            "invalid value for this kernel (out of range, or above what the parent cgroup allows)"
        }
        (Some(libc::EBUSY), _) => "the cgroup is busy (the kernel could not apply it now)",
        (Some(libc::ERANGE | libc::EOVERFLOW), _) => "value out of range",
        (Some(libc::ENOSPC), _) => "no CPUs or memory nodes would be left to run on",
        _ => "refused by the kernel",
    }
}

/// Writes one resource field's file, turning a kernel refusal into
/// `Rejected { field }` and anything else into `Io` naming the path.
pub(crate) fn write_field(field: &'static str, path: &Path, value: &str) -> Result<()> {
    write_raw(path, value.as_bytes()).map_err(|e| field_err(field, path, value, e))
}

pub(crate) fn field_err(
    field: &'static str,
    path: &Path,
    value: &str,
    e: io::Error,
) -> CgroupError {
    if is_refusal(&e) {
        CgroupError::Rejected {
            field,
            message: format!(
                "the kernel refused {:?} for {}: {} ({e})",
                value.trim(),
                file_name(path),
                refusal_reason(field, &e)
            ),
        }
    } else {
        io_err("write", path, e)
    }
}

pub(crate) fn file_name(path: &Path) -> std::borrow::Cow<'_, str> {
    path.file_name()
        .map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy())
}

/// Reads a small cgroup file to a string.
pub(crate) fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| io_err("read", path, e))
}

/// Reads a small cgroup file, `None` when it does not exist (a controller that is absent).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path, e)),
    }
}

/// Creates a directory, treating "already exists" as success (create is idempotent and two
/// callers may race).
pub(crate) fn mkdir(path: &Path) -> Result<bool> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(io_err("mkdir", path, e)),
    }
}

/// Removes a cgroup directory. A missing one is fine; EBUSY (tasks still exiting, or a
/// just-killed process not yet reaped) is retried for [`RMDIR_RETRY`].
///
/// On a fake tree (tests) the directory holds regular files that `rmdir` cannot remove; those
/// are removed first, which cgroupfs never needs because its files vanish with the directory.
pub(crate) fn rmdir(path: &Path) -> Result<()> {
    let deadline = Instant::now() + RMDIR_RETRY;
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && only_files(path) => {
                remove_plain_files(path);
                std::fs::remove_dir(path).map_err(|e| io_err("rmdir", path, e))?;
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(POLL_STEP);
            }
            Err(e) => return Err(io_err("rmdir", path, e)),
        }
    }
}

/// Whether `dir` holds regular files only (a fake cgroup tree's leaf). cgroupfs directories
/// report ENOTEMPTY only for child cgroups, which are directories, so a real cgroup never
/// matches when it matters.
fn only_files(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .all(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false)),
        Err(_) => false,
    }
}

fn remove_plain_files(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Polls `done` every few milliseconds until it is true or `limit` has passed; returns whether
/// it became true.
pub(crate) fn poll_until(limit: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL_STEP);
    }
}

/// Parses `cgroup.procs` into pids.
pub(crate) fn read_procs(path: &Path) -> Result<Vec<u32>> {
    let s = std::fs::read(path).map_err(|e| io_err("read", path, e))?;
    Ok(super::parse::pids(&s))
}

/// Writes a pid into a `cgroup.procs`, explaining ENOSPC (v1 cpuset with no CPUs or memory
/// nodes), which the bare errno would not.
pub(crate) fn move_pid(procs: &Path, pid: u32) -> Result<()> {
    match write_raw(procs, pid.to_string().as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Err(CgroupError::Other(format!(
            "moving pid {pid} into {}: the cgroup has an empty cpuset.cpus or cpuset.mems \
             (ENOSPC)",
            procs.display()
        ))),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(CgroupError::Other(format!(
            "moving pid {pid} into {}: no such process",
            procs.display()
        ))),
        Err(e) => Err(io_err("write", procs, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_names() {
        assert!(validate_leaf("0123456789abcdef").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a..b", "x\n", "/"] {
            assert!(validate_leaf(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relative_paths() -> Result<()> {
        assert_eq!(normalize_rel("/a//b/")?, "a/b");
        assert_eq!(normalize_rel("/")?, "");
        assert!(normalize_rel("/a/../b").is_err());
        assert!(normalize_rel("./a").is_err());
        assert_eq!(join_rel("", "x"), "x");
        assert_eq!(join_rel("a", "x"), "a/x");
        Ok(())
    }

    #[test]
    fn own_paths() {
        let s = "9:name=systemd:/\n4:memory:/process_api/e5\n2:cpu,cpuacct:/x\n0::/u\n";
        assert_eq!(own_path(s, "memory").as_deref(), Some("/process_api/e5"));
        assert_eq!(own_path(s, "cpuacct").as_deref(), Some("/x"));
        assert_eq!(own_path(s, "").as_deref(), Some("/u"));
        assert_eq!(own_path(s, "pids"), None);
    }
}
