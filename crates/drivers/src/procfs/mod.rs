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
        self.fill_host(buf, out, |file, path, buf| {
            if file.required() {
                read_into(path, buf).map(|()| true)
            } else {
                read_optional(path, buf)
            }
        })
    }

    /// An [`OomWatch`] on `<root>/vmstat`.
    pub fn oom_watch(&self) -> OomWatch {
        OomWatch {
            path: self.root.join("vmstat"),
            file: None,
            last: None,
        }
    }

    /// A [`HostReader`]: [`ProcFs::host_stats`] with the files kept open between samples.
    pub fn host_reader(&self) -> HostReader {
        HostReader {
            fs: self.clone(),
            files: Default::default(),
        }
    }

    /// [`ProcFs::host_stats`], with `read` filling `buf` with a file's content (`Ok(false)`:
    /// the file is missing, `buf` empty).
    fn fill_host(
        &self,
        buf: &mut Vec<u8>,
        out: &mut HostStats,
        mut read: impl FnMut(HostFile, &Path, &mut Vec<u8>) -> Result<bool>,
    ) -> Result<()> {
        let p = &self.paths;

        read(HostFile::Stat, &p.stat, buf)?;
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
        if read(HostFile::LoadAvg, &p.loadavg, buf)? {
            (out.load1, out.load5, out.load15) =
                parse::loadavg(buf).map_err(|m| parse_error(&p.loadavg, m))?;
        }

        let mem = if read(HostFile::MemInfo, &p.meminfo, buf)? {
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
        if read(HostFile::DiskStats, &p.diskstats, buf)? {
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
        if read(HostFile::NetDev, &p.net_dev, buf)? {
            for d in parse::net_dev(buf) {
                put_device(&mut out.nets, n, &d);
                n += 1;
            }
        }
        out.nets.truncate(n);

        out.uptime_seconds = 0.0;
        if read(HostFile::Uptime, &p.uptime, buf)? {
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

/// The files of a host sample, in the order [`ProcFs::host_stats`] reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostFile {
    Stat,
    LoadAvg,
    MemInfo,
    DiskStats,
    NetDev,
    Uptime,
}

impl HostFile {
    /// Only `stat` must exist.
    fn required(self) -> bool {
        self == HostFile::Stat
    }

    /// Whether the kernel produces the file as one record (`single_open`), so that a read that
    /// returns less than asked for has reached the end. `diskstats` and `net/dev` are a record
    /// per device, and a read returns at most the seq_file buffer's worth (a page at first)
    /// however much is asked for: those are read until a read returns nothing.
    fn one_record(self) -> bool {
        !matches!(self, HostFile::DiskStats | HostFile::NetDev)
    }
}

/// [`ProcFs::host_stats`] for the sampling loop: the same values, from files opened once and
/// re-read with `pread` from offset 0 (procfs regenerates their content on each read from the
/// start). A sample costs one `pread` per file (two for `diskstats` and `net/dev`, the second
/// finding the end) instead of `open`, `statx`, `lseek`, two `read`s and `close`. A file that
/// was missing is looked for again at every sample, and one that fails to read is reopened at
/// the next.
#[derive(Debug)]
pub struct HostReader {
    fs: ProcFs,
    /// Indexed by `HostFile as usize`.
    files: [Option<std::fs::File>; 6],
}

impl HostReader {
    /// Fills `out` exactly as [`ProcFs::host_stats`] does, reusing `buf`.
    pub fn read(&mut self, buf: &mut Vec<u8>, out: &mut HostStats) -> Result<()> {
        let files = &mut self.files;
        self.fs.fill_host(buf, out, |file, path, buf| {
            read_kept(&mut files[file as usize], file, path, buf)
        })
    }
}

/// Reads a [`HostReader`] file (opening it first if it is not open) into `buf`: `Ok(false)` if
/// an optional file is missing.
fn read_kept(
    slot: &mut Option<std::fs::File>,
    file: HostFile,
    path: &Path,
    buf: &mut Vec<u8>,
) -> Result<bool> {
    buf.clear();
    let f = match slot {
        Some(f) => f,
        None => match std::fs::File::open(path) {
            Ok(f) => slot.insert(f),
            Err(e) if !file.required() && e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(ProcError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        },
    };
    match pread_whole(f, buf, file.one_record()) {
        Ok(()) => Ok(true),
        Err(source) => {
            *slot = None;
            buf.clear();
            Err(ProcError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

/// How long the host's OOM kill count must have stayed the same before [`OomWatch::settled`]
/// vouches for it. The kernel counts a kill in `/proc/vmstat` and in the victim's memory cgroup
/// one statement apart (`__oom_kill_process`); this covers the gap many times over.
pub const OOM_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Watches the host's OOM kill count (`oom_kill` in `/proc/vmstat`), which the kernel raises
/// for every OOM kill, global or in a memory cgroup, right before it raises the victim's
/// cgroup's count (`memory.oom_control` in v1, `memory.events` in v2). While the host count
/// stays the same, no cgroup's count can change: the sampler reads those files only when it
/// has moved ([`crate::cgroup::StatReader::sample`]).
#[derive(Debug)]
pub struct OomWatch {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// The count last read, and when it was first seen.
    last: Option<(u64, std::time::Instant)>,
}

impl OomWatch {
    /// Reads the host's OOM kill count (about 20 µs: `/proc/vmstat` is a page of counters). It
    /// is returned when it has not changed for [`OOM_SETTLE`]; `None` when it has moved since,
    /// or cannot be read.
    pub fn settled(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        let now = std::time::Instant::now();
        let count = self.read(buf);
        match (count, self.last) {
            (Some(c), Some((l, since))) if c == l => {
                (now.saturating_duration_since(since) >= OOM_SETTLE).then_some(c)
            }
            (Some(c), _) => {
                self.last = Some((c, now));
                None
            }
            (None, _) => {
                self.last = None;
                None
            }
        }
    }

    fn read(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        buf.clear();
        let f = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(std::fs::File::open(&self.path).ok()?),
        };
        if pread_whole(f, buf, false).is_err() {
            self.file = None;
            return None;
        }
        lines(buf)
            .find_map(|l| l.strip_prefix(b"oom_kill "))
            .and_then(|v| parse::parse_u64(v.trim_ascii()))
    }
}

fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
}

/// The largest file [`pread_whole`] reads; procfs host files are a few KiB.
const MAX_KEPT_FILE: usize = 64 << 20;

/// Reads `f` from offset 0 to its end into `buf` (empty on entry), without zeroing the spare
/// capacity first. With `one_record`, a read shorter than asked for is the end.
fn pread_whole(f: &std::fs::File, buf: &mut Vec<u8>, one_record: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        if buf.capacity() - buf.len() < 1024 {
            if buf.len() >= MAX_KEPT_FILE {
                return Err(std::io::Error::other("file too large"));
            }
            buf.reserve(buf.capacity().max(4096));
        }
        let offset = libc::off_t::try_from(buf.len()).map_err(std::io::Error::other)?;
        let spare = buf.spare_capacity_mut();
        let asked = spare.len();
        // SAFETY: the pointer and length describe `spare`, writable memory owned by `buf`; the
        // kernel writes at most `asked` bytes there.
        let n = unsafe { libc::pread(f.as_raw_fd(), spare.as_mut_ptr().cast(), asked, offset) };
        let Ok(n) = usize::try_from(n) else {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        };
        // SAFETY: the kernel initialised the first `n` (≤ `asked`) bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        if n == 0 || (one_record && n < asked) {
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, content: &str) {
        let p = dir.join(file);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    /// `HostReader::read` gives what `host_stats` gives, sample after sample, as the files
    /// change, appear and go (a fixture root, with device tables larger than a page).
    #[test]
    fn host_reader_matches_host_stats() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        write(
            root,
            "stat",
            "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nprocs_running 3\n",
        );
        let fs = ProcFs::new(root);
        let mut reader = fs.host_reader();
        let (mut buf, mut b1, mut b2) = (Vec::new(), HostStats::default(), HostStats::default());
        let check = |reader: &mut HostReader, b1: &mut HostStats, b2: &mut HostStats| {
            let mut buf2 = Vec::new();
            let a = fs.host_stats(&mut buf2, b1).map_err(|e| e.to_string());
            let b = reader.read(&mut buf2, b2).map_err(|e| e.to_string());
            assert_eq!(a, b);
            assert_eq!(b1, b2);
        };
        check(&mut reader, &mut b1, &mut b2);
        reader.read(&mut buf, &mut b2).expect("only stat");
        assert!(b2.disks.is_empty() && b2.nets.is_empty());

        let mut disks = String::new();
        let mut nets = String::from("Inter-|   Receive\n face |bytes\n");
        for i in 0..200 {
            disks += &format!(
                "   8       {i} sd{i} 1 0 {i} 0 1 0 {} 0 0 0 0 0 0 0 0 0 0\n",
                2 * i
            );
            nets += &format!("veth{i}: {i} 1 0 0 0 0 0 0 {} 1 0 0 0 0 0 0\n", 3 * i);
        }
        write(root, "diskstats", &disks);
        write(root, "net/dev", &nets);
        write(root, "meminfo", "MemTotal: 100 kB\nMemAvailable: 50 kB\n");
        write(root, "loadavg", "0.50 0.40 0.30 1/100 42\n");
        write(root, "uptime", "12.5 3.0\n");
        check(&mut reader, &mut b1, &mut b2);
        assert_eq!(b2.disks.len(), 200);
        assert_eq!(b2.nets.len(), 200);
        assert_eq!(b2.memory_total_bytes, 102_400);

        write(root, "meminfo", "MemTotal: 200 kB\nMemAvailable: 50 kB\n");
        write(
            root,
            "net/dev",
            "Inter-|\n face |\nlo: 5 0 0 0 0 0 0 0 6 0 0 0 0 0 0 0\n",
        );
        check(&mut reader, &mut b1, &mut b2);
        assert_eq!(b2.memory_total_bytes, 204_800);
        assert_eq!(b2.nets.len(), 1);

        std::fs::remove_file(root.join("uptime")).expect("rm");
        write(root, "loadavg", "garbage\n");
        check(&mut reader, &mut b1, &mut b2);
        std::fs::remove_file(root.join("stat")).expect("rm");
        let mut fresh = fs.host_reader();
        check(&mut fresh, &mut b1, &mut b2);
    }

    #[test]
    fn oom_watch_vouches_for_a_count_that_settled() {
        let t = tempfile::tempdir().expect("tempdir");
        let fs = ProcFs::new(t.path());
        let mut w = fs.oom_watch();
        let mut buf = Vec::new();
        assert_eq!(w.settled(&mut buf), None, "no vmstat");
        write(t.path(), "vmstat", "nr_free_pages 1\noom_kill 3\nnr_x 2\n");
        assert_eq!(w.settled(&mut buf), None, "first seen now");
        std::thread::sleep(OOM_SETTLE);
        assert_eq!(w.settled(&mut buf), Some(3));
        write(t.path(), "vmstat", "nr_free_pages 1\noom_kill 4\n");
        assert_eq!(w.settled(&mut buf), None, "moved");
        assert_eq!(w.settled(&mut buf), None, "not settled yet");
        let mut real = ProcFs::new("/proc").oom_watch();
        real.settled(&mut buf);
        assert!(real.last.is_some(), "/proc/vmstat has oom_kill");
    }

    /// On the real /proc: the same devices and CPUs as `host_stats`.
    #[test]
    fn host_reader_on_proc() {
        let fs = ProcFs::new("/proc");
        let mut reader = fs.host_reader();
        let (mut buf, mut a, mut b) = (Vec::new(), HostStats::default(), HostStats::default());
        for _ in 0..3 {
            fs.host_stats(&mut buf, &mut a).expect("host_stats");
            reader.read(&mut buf, &mut b).expect("host_reader");
            assert_eq!(a.cpus, b.cpus);
            assert_eq!(a.memory_total_bytes, b.memory_total_bytes);
            let names =
                |v: &[DeviceCounters]| v.iter().map(|d| d.device.clone()).collect::<Vec<_>>();
            assert_eq!(names(&a.disks), names(&b.disks));
            assert_eq!(names(&a.nets), names(&b.nets));
            assert!(b.cpu.user >= a.cpu.user && b.uptime_seconds >= a.uptime_seconds);
        }
    }
}
