//! [`StatReader`]: pre-opened counter files, re-read with `pread` into the caller's buffer.

use super::parse;
use super::util::io_err;
use super::{Result, StatReader};
use nodeagent_types::Sample;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Bumped after every memory limit this agent writes ([`note_limit_written`]), so that
/// [`StatReader::sample`] re-reads the limit at its next sample instead of waiting for
/// [`LIMIT_MAX_AGE`].
static LIMIT_EPOCH: AtomicU64 = AtomicU64::new(0);

/// How long [`StatReader::sample`] keeps a memory limit it read before reading it again. Below
/// a second, so that objects sampled every second still read it every time.
pub(crate) const LIMIT_MAX_AGE: Duration = Duration::from_millis(900);

/// Called after writing a memory limit file (`memory.limit_in_bytes`, `memory.max`).
pub(crate) fn note_limit_written() {
    LIMIT_EPOCH.fetch_add(1, Ordering::Release);
}

/// First size the caller's buffer is grown to; every counter file but a many-device blkio/io
/// file fits.
const MIN_BUF: usize = 4096;
/// A counter file larger than this is not a cgroup counter file; stop growing the buffer.
const MAX_BUF: usize = 1 << 20;
/// v1 reports "no memory limit" as the largest page-aligned `i64`; anything this large is that.
const V1_UNLIMITED: u64 = 1 << 62;

/// What a counter file holds and where its value goes in a [`Sample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// v1 `cpuacct.usage`: ns.
    V1CpuAcct,
    /// v1 `cpu.stat`: `throttled_time` ns.
    V1CpuStat,
    /// v1 `memory.usage_in_bytes`.
    V1MemUsage,
    /// v1 `memory.limit_in_bytes` (≥ 2^62 is unlimited).
    V1MemLimit,
    /// v1 `memory.oom_control`: `oom_kill N`.
    V1OomControl,
    /// v1 `blkio.throttle.io_service_bytes_recursive`, with `blkio.io_service_bytes_recursive`
    /// as a fallback (see [`StatFile::fallback`]).
    V1Blkio,
    /// `pids.current` (both versions).
    PidsCurrent,
    /// v2 `cpu.stat`: `usage_usec`, `throttled_usec`.
    V2CpuStat,
    /// v2 `memory.current`.
    V2MemCurrent,
    /// v2 `memory.max` (`max` is unlimited).
    V2MemMax,
    /// v2 `memory.events`: `oom_kill N`.
    V2MemEvents,
    /// v2 `io.stat`: `rbytes=`/`wbytes=` summed over devices.
    V2IoStat,
}

/// Counter files held open by readers, process-wide, and how many may be ([`set_open_budget`]).
static HELD: AtomicUsize = AtomicUsize::new(0);
static BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets how many counter files readers may keep open, process-wide. A reader built past the
/// budget opens each of its files per read instead (open, read, close: two more syscalls and a
/// path walk per file), so the number of objects is not bounded by `RLIMIT_NOFILE` where the
/// hard limit cannot be raised (20,000 on some hosts: 2,500 objects at 8 files each). Readers
/// already built keep what they have. Unlimited until called.
pub fn set_open_budget(files: usize) {
    BUDGET.store(files, Ordering::Relaxed);
}

/// Counter files held open by readers now.
pub fn open_files_held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// A counter file, held open while the budget allows, and its path (to open it per read
/// otherwise, and for error messages).
#[derive(Debug)]
pub(crate) struct OpenFile {
    file: Option<File>,
    path: PathBuf,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl OpenFile {
    /// Opens `path`; `Ok(None)` if it does not exist (the kernel lacks that counter). The file
    /// stays open if the budget allows, and is closed again otherwise.
    pub(crate) fn open_opt(path: PathBuf) -> Result<Option<OpenFile>> {
        match File::open(&path) {
            Ok(file) => {
                let kept = HELD.fetch_add(1, Ordering::Relaxed) < BUDGET.load(Ordering::Relaxed);
                if !kept {
                    HELD.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(Some(OpenFile {
                    file: kept.then_some(file),
                    path,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("open", &path, e)),
        }
    }

    /// Reads the whole file from offset 0 into `buf` and returns the bytes read.
    ///
    /// A read shorter than the buffer is the whole file: seq_file (cgroupfs) fills the buffer
    /// until the content ends, as regular files do. When the buffer fills up, it is doubled and
    /// the read redone; that allocation happens once per reader buffer, not per sample.
    fn read<'a>(&self, buf: &'a mut Vec<u8>) -> Result<&'a [u8]> {
        if buf.len() < MIN_BUF {
            buf.resize(MIN_BUF, 0);
        }
        let opened;
        let file = match &self.file {
            Some(f) => f,
            None => {
                opened = File::open(&self.path).map_err(|e| io_err("open", &self.path, e))?;
                &opened
            }
        };
        loop {
            let n = file
                .read_at(buf.as_mut_slice(), 0)
                .map_err(|e| io_err("read", &self.path, e))?;
            if n < buf.len() || buf.len() >= MAX_BUF {
                return Ok(&buf[..n]);
            }
            let grown = buf.len() * 2;
            buf.resize(grown, 0);
        }
    }
}

/// One counter file of a [`StatReader`].
#[derive(Debug)]
pub(crate) struct StatFile {
    kind: Kind,
    file: OpenFile,
    /// For [`Kind::V1Blkio`]: the legacy (CFQ/BFQ) file, read when the throttle file has no
    /// per-device lines. Which one the kernel fills depends on the I/O scheduler and can change
    /// once I/O starts, so the choice is made per sample rather than when the reader is built.
    fallback: Option<OpenFile>,
}

impl StatFile {
    pub(crate) fn new(kind: Kind, file: OpenFile) -> StatFile {
        StatFile {
            kind,
            file,
            fallback: None,
        }
    }

    pub(crate) fn with_fallback(mut self, fallback: Option<OpenFile>) -> StatFile {
        self.fallback = fallback;
        self
    }
}

/// The OOM kill count as [`StatReader::sample`] last read it, with the host's count
/// ([`crate::procfs::OomWatch::settled`]) that vouched for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CachedOom {
    host: u64,
    value: Option<u64>,
}

/// The memory limit as [`StatReader::sample`] last read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CachedLimit {
    value: Option<u64>,
    epoch: u64,
    at: Instant,
}

impl StatReader {
    /// Builds a reader from the counter files that exist, taking [`StatReader::first_pid`]'s
    /// pids from `dir/cgroup.procs`. Fails if `dir` (the cgroup) does not exist, so a reader is
    /// never built for a cgroup that is not there.
    pub(crate) fn build(dir: &Path, files: Vec<StatFile>) -> Result<StatReader> {
        if dir.as_os_str().is_empty() || !dir.is_dir() {
            return Err(io_err(
                "open",
                dir,
                io::Error::new(io::ErrorKind::NotFound, "no such cgroup"),
            ));
        }
        let procs = OpenFile::open_opt(dir.join("cgroup.procs"))?;
        Ok(StatReader {
            files,
            procs,
            limit: None,
            oom: None,
        })
    }

    /// [`StatReader::read_impl`], reading the memory limit file only when the cached value is
    /// older than [`LIMIT_MAX_AGE`] or this agent has written a memory limit since.
    pub(super) fn sample_impl(
        &mut self,
        buf: &mut Vec<u8>,
        out: &mut Sample,
        hints: super::SampleHints,
    ) -> Result<()> {
        let epoch = LIMIT_EPOCH.load(Ordering::Acquire);
        let now = Instant::now();
        let limit = self
            .limit
            .filter(|c| c.epoch == epoch && now.saturating_duration_since(c.at) < LIMIT_MAX_AGE);
        let oom = match (self.oom, hints.host_oom_kills_settled) {
            (Some(c), Some(h)) if c.host == h => Some(c),
            _ => None,
        };
        self.read_files(buf, out, limit.map(|c| c.value), oom.map(|c| c.value))?;
        if limit.is_none() {
            self.limit = Some(CachedLimit {
                value: out.memory_limit_bytes,
                epoch,
                at: now,
            });
        }
        if oom.is_none() {
            self.oom = hints.host_oom_kills_settled.map(|host| CachedOom {
                host,
                value: out.oom_kills,
            });
        }
        Ok(())
    }

    pub(super) fn read_impl(&mut self, buf: &mut Vec<u8>, out: &mut Sample) -> Result<()> {
        self.read_files(buf, out, None, None)
    }

    /// Reads every counter file into `out`, except the memory limit file when `limit` is
    /// `Some`, and the OOM kill file when `oom` is `Some` (the values to use instead).
    fn read_files(
        &mut self,
        buf: &mut Vec<u8>,
        out: &mut Sample,
        limit: Option<Option<u64>>,
        oom: Option<Option<u64>>,
    ) -> Result<()> {
        out.cpu_usage_ns = None;
        out.cpu_throttled_ns = None;
        out.memory_bytes = None;
        out.memory_limit_bytes = None;
        out.oom_kills = None;
        out.pids = None;
        out.io_read_bytes = None;
        out.io_write_bytes = None;
        if let Some(l) = limit {
            out.memory_limit_bytes = l;
        }
        if let Some(o) = oom {
            out.oom_kills = o;
        }
        for f in &self.files {
            let cached = match f.kind {
                Kind::V1MemLimit | Kind::V2MemMax => limit.is_some(),
                Kind::V1OomControl | Kind::V2MemEvents => oom.is_some(),
                _ => false,
            };
            if cached {
                continue;
            }
            let b = f.file.read(buf)?;
            match f.kind {
                Kind::V1CpuAcct => out.cpu_usage_ns = parse::parse_u64(b),
                Kind::V1CpuStat => out.cpu_throttled_ns = parse::keyed(b, b"throttled_time"),
                Kind::V1MemUsage => out.memory_bytes = parse::parse_u64(b),
                Kind::V1MemLimit => {
                    out.memory_limit_bytes = parse::parse_u64(b).filter(|&v| v < V1_UNLIMITED)
                }
                Kind::V1OomControl => out.oom_kills = parse::keyed(b, b"oom_kill"),
                Kind::V1Blkio => {
                    let mut rw = parse::blkio_read_write(b);
                    if rw.is_none() {
                        if let Some(fb) = &f.fallback {
                            rw = parse::blkio_read_write(fb.read(buf)?);
                        }
                    }
                    // The file exists, so the kernel accounts I/O: no device lines is zero.
                    let (r, w) = rw.unwrap_or((0, 0));
                    out.io_read_bytes = Some(r);
                    out.io_write_bytes = Some(w);
                }
                Kind::PidsCurrent => out.pids = parse::parse_u64(b),
                Kind::V2CpuStat => {
                    out.cpu_usage_ns =
                        parse::keyed(b, b"usage_usec").map(|v| v.saturating_mul(1000));
                    out.cpu_throttled_ns =
                        parse::keyed(b, b"throttled_usec").map(|v| v.saturating_mul(1000));
                }
                Kind::V2MemCurrent => out.memory_bytes = parse::parse_u64(b),
                Kind::V2MemMax => out.memory_limit_bytes = parse::parse_max(b).flatten(),
                Kind::V2MemEvents => out.oom_kills = parse::keyed(b, b"oom_kill"),
                Kind::V2IoStat => {
                    let (r, w) = parse::io_stat_read_write(b);
                    out.io_read_bytes = Some(r);
                    out.io_write_bytes = Some(w);
                }
            }
        }
        Ok(())
    }

    pub(super) fn first_pid_impl(&mut self, buf: &mut Vec<u8>) -> Option<u32> {
        let procs = self.procs.as_ref()?;
        parse::first_pid(procs.read(buf).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CgroupManager, CgroupRef, Parent, SampleHints, V2};
    use super::*;

    /// A v2 tree with one leaf, `nodeagent/obj`, holding the counter files.
    fn fixture() -> (tempfile::TempDir, V2, PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("cgroup");
        let leaf = root.join("nodeagent/obj");
        std::fs::create_dir_all(&leaf).expect("mkdir");
        std::fs::create_dir_all(t.path().join("proc/self")).expect("mkdir");
        std::fs::write(t.path().join("proc/self/cgroup"), "0::/\n").expect("write");
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").expect("write");
        for (f, s) in [
            ("cgroup.procs", "42\n"),
            ("cpu.stat", "usage_usec 5\nthrottled_usec 1\n"),
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            ("memory.events", "oom_kill 0\n"),
            ("pids.current", "1\n"),
        ] {
            std::fs::write(leaf.join(f), s).expect("write");
        }
        let cg = V2::new(&root, &t.path().join("proc"), Parent::Own).expect("V2::new");
        (t, cg, leaf)
    }

    #[test]
    fn sample_keeps_the_limit_until_it_is_old_or_written_here() {
        let (_t, cg, leaf) = fixture();
        let obj = CgroupRef::Owned("obj".into());
        let mut r = cg.stat_reader(&obj).expect("stat_reader");
        let (mut buf, mut s) = (Vec::new(), Sample::default());
        r.sample(&mut buf, &mut s, SampleHints::default())
            .expect("sample");
        assert_eq!(s.memory_limit_bytes, None);

        // Written behind the agent's back: the counters are fresh, the limit is the cached one
        // (unless the 900 ms went by, on a very slow machine), and `read` reads it at once.
        std::fs::write(leaf.join("memory.max"), "1048576\n").expect("write");
        std::fs::write(leaf.join("memory.current"), "8192\n").expect("write");
        let t0 = Instant::now();
        let mut s2 = Sample::default();
        r.sample(&mut buf, &mut s2, SampleHints::default())
            .expect("sample");
        assert_eq!(s2.memory_bytes, Some(8192));
        if t0.duration_since(r.limit.expect("cached").at) < LIMIT_MAX_AGE {
            assert_eq!(s2.memory_limit_bytes, None, "cached");
        }
        let mut s3 = Sample::default();
        r.read(&mut buf, &mut s3).expect("read");
        assert_eq!(s3.memory_limit_bytes, Some(1 << 20));

        // A limit this agent writes shows in the next sample.
        cg.apply(
            &obj,
            &nodeagent_types::Resources {
                memory: Some(nodeagent_types::Memory(2 << 20)),
                ..Default::default()
            },
        )
        .expect("apply");
        let mut s4 = Sample::default();
        r.sample(&mut buf, &mut s4, SampleHints::default())
            .expect("sample");
        assert_eq!(s4.memory_limit_bytes, Some(2 << 20));

        // And so does any limit once the cached one is old.
        std::fs::write(leaf.join("memory.max"), "max\n").expect("write");
        r.limit = r.limit.map(|c| CachedLimit {
            at: c.at - LIMIT_MAX_AGE,
            ..c
        });
        let mut s5 = Sample::default();
        r.sample(&mut buf, &mut s5, SampleHints::default())
            .expect("sample");
        assert_eq!(s5.memory_limit_bytes, None);
        assert_eq!(s5.oom_kills, Some(0));
        assert_eq!(s5.pids, Some(1));
    }

    #[test]
    fn sample_reads_the_oom_count_when_the_host_count_moved() {
        let (_t, cg, leaf) = fixture();
        let mut r = cg
            .stat_reader(&CgroupRef::Owned("obj".into()))
            .expect("stat_reader");
        let (mut buf, mut s) = (Vec::new(), Sample::default());
        let host = |n| SampleHints {
            host_oom_kills_settled: Some(n),
        };
        r.sample(&mut buf, &mut s, host(7)).expect("sample");
        assert_eq!(s.oom_kills, Some(0));
        // (A test can change the file without the host count moving; the kernel cannot.)
        std::fs::write(leaf.join("memory.events"), "oom_kill 3\n").expect("write");
        r.sample(&mut buf, &mut s, host(7)).expect("sample");
        assert_eq!(
            s.oom_kills,
            Some(0),
            "the host count vouches for the cached value"
        );
        r.sample(&mut buf, &mut s, host(8)).expect("sample");
        assert_eq!(s.oom_kills, Some(3), "the host count moved");
        std::fs::write(leaf.join("memory.events"), "oom_kill 4\n").expect("write");
        r.sample(&mut buf, &mut s, SampleHints::default())
            .expect("sample");
        assert_eq!(s.oom_kills, Some(4), "no hint: read");
        std::fs::write(leaf.join("memory.events"), "oom_kill 5\n").expect("write");
        r.sample(&mut buf, &mut s, host(8)).expect("sample");
        assert_eq!(
            s.oom_kills,
            Some(5),
            "nothing cached after a sample without a hint"
        );
    }
}
