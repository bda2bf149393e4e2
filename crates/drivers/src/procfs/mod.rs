//! procfs reader with an injectable root: host counters, and per-process facts.
//!
//! The root is `/proc` in production and a directory of fixture files in tests. The host files
//! are read into a caller-owned buffer and parsed from bytes ([`parse`]), and [`HostStats`]'s
//! vectors are refilled in place, so a steady-state [`ProcFs::host_stats`] allocates next to
//! nothing.

pub mod parse;

use nodeagent_types::{CpuModes, DeviceCounters, HostStats};
use std::io::{ErrorKind, Read};
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

/// The host-wide files, joined to the root once so that sampling does not rebuild the paths.
#[derive(Debug, Clone)]
struct HostPaths {
    stat: PathBuf,
    meminfo: PathBuf,
    loadavg: PathBuf,
    diskstats: PathBuf,
    net_dev: PathBuf,
    uptime: PathBuf,
    hostname: PathBuf,
    osrelease: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
    paths: HostPaths,
    /// Nanoseconds per clock tick (USER_HZ), for the `cpu` line of `stat`.
    tick_ns: u64,
    /// Bytes per page, for `rss` in `<pid>/stat`.
    page_size: u64,
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let paths = HostPaths {
            stat: root.join("stat"),
            meminfo: root.join("meminfo"),
            loadavg: root.join("loadavg"),
            diskstats: root.join("diskstats"),
            net_dev: root.join("net/dev"),
            uptime: root.join("uptime"),
            hostname: root.join("sys/kernel/hostname"),
            osrelease: root.join("sys/kernel/osrelease"),
        };
        ProcFs {
            root,
            paths,
            tick_ns: 1_000_000_000 / clock_ticks_per_second(),
            page_size: page_size(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Hostname, kernel release, CPU count, memory.
    ///
    /// The hostname comes from `<root>/sys/kernel/hostname`; only when the root is `/proc` does
    /// a failure to read it fall back to `gethostname(2)` (a fixture root must not leak the real
    /// host's name). `osrelease`, `stat` and `meminfo` (with `MemTotal`) are required.
    pub fn host_facts(&self) -> Result<HostFacts> {
        let mut buf = Vec::new();
        let hostname = match read_into(&self.paths.hostname, &mut buf) {
            Ok(()) => trimmed(&buf),
            Err(e) if self.root == Path::new("/proc") => gethostname().ok_or(e)?,
            Err(e) => return Err(e),
        };
        read_into(&self.paths.osrelease, &mut buf)?;
        let kernel = trimmed(&buf);
        read_into(&self.paths.stat, &mut buf)?;
        let stat = parse::stat(&buf).map_err(|m| parse_error(&self.paths.stat, m))?;
        read_into(&self.paths.meminfo, &mut buf)?;
        let memory_total_bytes = parse::meminfo(&buf)
            .total
            .ok_or_else(|| parse_error(&self.paths.meminfo, "no MemTotal"))?;
        Ok(HostFacts {
            hostname,
            kernel,
            cpus: stat.cpus,
            memory_total_bytes,
        })
    }

    /// Fills `out` from stat, loadavg, meminfo, diskstats, net/dev, uptime. Reuses `buf`.
    ///
    /// Every field of `out` is overwritten: `stat` is required (an error names it), the other
    /// files are optional and a missing one (`ENOENT`) leaves its fields at their default (empty
    /// vectors, zeros). Other read errors and malformed `stat`, `loadavg` or `uptime` contents
    /// are errors naming the file; malformed lines in `meminfo`, `diskstats` and `net/dev` are
    /// skipped. On error `out` may be partly filled.
    ///
    /// Disks: `loop*` and `ram*` devices are left out ([`parse::skip_disk`]), and so is a
    /// partition whose whole disk is listed before it ([`parse::is_partition_of`]; the kernel
    /// lists each disk right before its partitions), so that I/O is not counted twice. `dm-*`
    /// devices are kept. Nets: every interface, including `lo`.
    pub fn host_stats(&self, buf: &mut Vec<u8>, out: &mut HostStats) -> Result<()> {
        let p = &self.paths;

        read_into(&p.stat, buf)?;
        let stat = parse::stat(buf).map_err(|m| parse_error(&p.stat, m))?;
        let t = stat.cpu_ticks;
        let ns = |ticks: u64| ticks.saturating_mul(self.tick_ns);
        out.cpu = CpuModes {
            user: ns(t.user),
            nice: ns(t.nice),
            system: ns(t.system),
            idle: ns(t.idle),
            iowait: ns(t.iowait),
            irq: ns(t.irq),
            softirq: ns(t.softirq),
            steal: ns(t.steal),
        };
        out.cpus = stat.cpus;
        out.procs_running = stat.procs_running;

        (out.load1, out.load5, out.load15) = (0.0, 0.0, 0.0);
        if read_optional(&p.loadavg, buf)? {
            (out.load1, out.load5, out.load15) =
                parse::loadavg(buf).map_err(|m| parse_error(&p.loadavg, m))?;
        }

        let mem = if read_optional(&p.meminfo, buf)? {
            parse::meminfo(buf)
        } else {
            parse::MemInfo::default()
        };
        out.memory_total_bytes = mem.total.unwrap_or(0);
        out.memory_available_bytes = mem.available.unwrap_or(0);
        out.memory_free_bytes = mem.free.unwrap_or(0);
        out.swap_total_bytes = mem.swap_total.unwrap_or(0);
        out.swap_free_bytes = mem.swap_free.unwrap_or(0);

        let mut n = 0;
        if read_optional(&p.diskstats, buf)? {
            for d in parse::diskstats(buf) {
                let whole_disk_listed = || {
                    out.disks[..n]
                        .iter()
                        .any(|k| parse::is_partition_of(&d.name, &k.device))
                };
                if parse::skip_disk(&d.name) || whole_disk_listed() {
                    continue;
                }
                put_device(&mut out.disks, n, &d);
                n += 1;
            }
        }
        out.disks.truncate(n);

        let mut n = 0;
        if read_optional(&p.net_dev, buf)? {
            for d in parse::net_dev(buf) {
                put_device(&mut out.nets, n, &d);
                n += 1;
            }
        }
        out.nets.truncate(n);

        out.uptime_seconds = 0.0;
        if read_optional(&p.uptime, buf)? {
            out.uptime_seconds = parse::uptime(buf).map_err(|m| parse_error(&p.uptime, m))?;
        }
        Ok(())
    }

    /// Sum of rx/tx bytes over the non-loopback interfaces of `pid`'s network namespace.
    pub fn net_dev(&self, pid: u32, buf: &mut Vec<u8>) -> Result<(u64, u64)> {
        let path = self.pid_path(pid, "net/dev");
        read_into(&path, buf)?;
        Ok(parse::net_dev(buf)
            .filter(|d| d.name != "lo")
            .fold((0u64, 0u64), |(rx, tx), d| {
                (
                    rx.saturating_add(d.read_bytes),
                    tx.saturating_add(d.write_bytes),
                )
            }))
    }

    /// Inode of `pid`'s network namespace (`/proc/<pid>/ns/net`), to tell whether it has its own.
    pub fn net_ns(&self, pid: u32) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.pid_path(pid, "ns/net"))
            .ok()
            .map(|m| m.ino())
    }

    /// `pid`'s `stat` ([`parse::proc_stat`]); an error if it does not exist.
    pub fn stat(&self, pid: u32) -> Result<ProcStat> {
        let path = self.pid_path(pid, "stat");
        let data = std::fs::read(&path).map_err(|source| ProcError::Io {
            path: path.clone(),
            source,
        })?;
        parse::proc_stat(&data, self.page_size).map_err(|m| parse_error(&path, m))
    }

    /// `pid`'s cgroups from `/proc/<pid>/cgroup`: (controllers, path) per line; v2 has `""`.
    pub fn cgroups_of(&self, pid: u32) -> Result<Vec<(String, String)>> {
        let path = self.pid_path(pid, "cgroup");
        let data = std::fs::read(&path).map_err(|source| ProcError::Io {
            path: path.clone(),
            source,
        })?;
        parse::cgroups(&data).map_err(|m| parse_error(&path, m))
    }

    /// Whether `pid` exists and is not a zombie (`Z`) or dead (`X`).
    pub fn alive(&self, pid: u32) -> bool {
        self.stat(pid)
            .is_ok_and(|s| s.state != 'Z' && s.state != 'X')
    }

    fn pid_path(&self, pid: u32, file: &str) -> PathBuf {
        let mut path = self.root.join(pid.to_string());
        path.push(file);
        path
    }
}

/// USER_HZ, the unit of the tick counts in procfs; 100 if `sysconf` does not say.
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    match u64::try_from(hz) {
        Ok(hz) if (1..=1_000_000_000).contains(&hz) => hz,
        _ => 100,
    }
}

/// The page size; 4096 if `sysconf` does not say.
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    match u64::try_from(size) {
        Ok(size) if size > 0 => size,
        _ => 4096,
    }
}

fn gethostname() -> Option<String> {
    let mut name = [0u8; 256];
    // SAFETY: the pointer and length describe `name`, a writable buffer we own.
    let rc = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    if rc != 0 {
        return None;
    }
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..len]).into_owned())
}

fn trimmed(data: &[u8]) -> String {
    String::from_utf8_lossy(data.trim_ascii()).into_owned()
}

fn parse_error(path: &Path, message: &str) -> ProcError {
    ProcError::Parse {
        path: path.to_path_buf(),
        message: message.to_owned(),
    }
}

/// Reads the whole of `path` into `buf` (cleared first, capacity kept).
fn read_into(path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map(drop)
        .map_err(|source| ProcError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Like [`read_into`], but a missing file is `Ok(false)` (with `buf` empty). Checks the error
/// kind before building a [`ProcError`], so that a missing file costs no allocation.
fn read_optional(path: &Path, buf: &mut Vec<u8>) -> Result<bool> {
    buf.clear();
    let read = std::fs::File::open(path).and_then(|mut f| f.read_to_end(buf));
    match read {
        Ok(_) => Ok(true),
        Err(source) if source.kind() == ErrorKind::NotFound => {
            buf.clear();
            Ok(false)
        }
        Err(source) => Err(ProcError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `d` into slot `i` of `devices`, reusing the slot's name allocation when there is one.
fn put_device(devices: &mut Vec<DeviceCounters>, i: usize, d: &parse::Device<'_>) {
    match devices.get_mut(i) {
        Some(slot) => {
            slot.device.clear();
            slot.device.push_str(&d.name);
            slot.read_bytes = d.read_bytes;
            slot.write_bytes = d.write_bytes;
        }
        None => devices.push(DeviceCounters {
            device: d.name.clone().into_owned(),
            read_bytes: d.read_bytes,
            write_bytes: d.write_bytes,
        }),
    }
}
