//! [`StatReader`]: pre-opened counter files, re-read with `pread` into the caller's buffer.

use super::parse;
use super::util::io_err;
use super::{Result, StatReader};
use nodeagent_types::Sample;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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

/// An open file and its path (kept for error messages only).
#[derive(Debug)]
pub(crate) struct OpenFile {
    file: File,
    path: PathBuf,
}

impl OpenFile {
    /// Opens `path`; `Ok(None)` if it does not exist (the kernel lacks that counter).
    pub(crate) fn open_opt(path: PathBuf) -> Result<Option<OpenFile>> {
        match File::open(&path) {
            Ok(file) => Ok(Some(OpenFile { file, path })),
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
        loop {
            let n = self
                .file
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
        Ok(StatReader { files, procs })
    }

    pub(super) fn read_impl(&mut self, buf: &mut Vec<u8>, out: &mut Sample) -> Result<()> {
        out.cpu_usage_ns = None;
        out.cpu_throttled_ns = None;
        out.memory_bytes = None;
        out.memory_limit_bytes = None;
        out.oom_kills = None;
        out.pids = None;
        out.io_read_bytes = None;
        out.io_write_bytes = None;
        for f in &self.files {
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
