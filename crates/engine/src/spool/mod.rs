//! The spool: a network sink's write-ahead log on disk, so that nothing is lost while the upstream
//! is slow or down, nor when the agent is killed.
//!
//! Every record a network sink accepts is appended here first, and given its sequence number
//! then; the sender reads it back from here, sends it, and moves the *acked cursor* when the
//! upstream acknowledges it. A plain `write()` reaches the page cache, which outlives a process
//! killed with `kill -9`, so after a restart the new process finds every record the old one
//! accepted and sends those that were not acknowledged: delivery is at-least-once, and sequence
//! numbers (never reused) let the receiver drop duplicates.
//!
//! # Layout
//!
//! One directory per sink (`<state-dir>/spool/<sink>/`) holding
//! - segment files `<first seq, 20 digits>.seg`: an 8-byte magic `NASPOOL1`, then frames;
//! - `cursor`: the acked sequence number (u64 LE), its CRC32C (u32 LE) and the magic `NACR`.
//!
//! A frame is a 16-byte header, `len: u32 LE`, `crc: u32 LE`, `seq: u64 LE`, then `len` bytes of
//! payload. `crc` is the CRC32C of the length, the seq and the payload. Within a segment the seqs
//! are consecutive, and the next segment starts where the previous one ended.
//!
//! # Recovery
//!
//! On open, the last (active) segment is read through. It ends at the first frame that is
//! incomplete, fails its checksum or is out of sequence: a write torn by a crash. That tail is
//! truncated, with a warning that says how many bytes. Older segments are checked as they are
//! read: a corrupt frame there loses the rest of that segment, which is counted
//! ([`SpoolReader::take_lost`]) and skipped, never a panic. Numbering continues after the
//! highest sequence number found, or the acked cursor if that is higher, so a number the
//! upstream has seen is never given to another record.
//!
//! # Limits
//!
//! Segments are rolled at `segment_bytes`. Fully acknowledged segments are deleted. When the
//! spool's files together pass `max_bytes`, the oldest segments are deleted whether acknowledged
//! or not: [`Commit::dropped`] counts their unacknowledged records so the sink can report them.
//!
//! # fsync
//!
//! [`FsyncPolicy`]: `always` syncs after every append (safe against power loss, slow); the
//! default, an interval, syncs the active segment and the cursor at most that long after a
//! write, and every segment when it is sealed, on a thread of its own so that a slow sync never
//! holds records back; `never` leaves it to the kernel. None of them matters for `kill -9`,
//! which the page cache survives. Shutdown syncs everything (but with `never`).

#[cfg(test)]
mod tests;

use crate::series::lock;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const MAGIC: &[u8; 8] = b"NASPOOL1";
const HEADER_LEN: u64 = MAGIC.len() as u64;
/// `len`, `crc`, `seq`.
pub const FRAME_HEADER: usize = 16;
/// No single record is anywhere near this; a larger `len` field is corruption.
pub const MAX_RECORD_BYTES: usize = 16 << 20;
const CURSOR_FILE: &str = "cursor";
const CURSOR_MAGIC: &[u8; 4] = b"NACR";
const SEGMENT_EXT: &str = "seg";
/// How much a reader asks the kernel for at once beyond what the batch needs.
const READ_SLACK: usize = 64 << 10;

/// When the spool calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every append.
    Always,
    /// Never (the kernel writes back in its own time).
    Never,
    /// At most this long after a write, and when a segment is sealed.
    Interval(Duration),
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_secs(1))
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "{}", nodeagent_types::Duration(*d)),
        }
    }
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => match nodeagent_types::parse_duration(other) {
                Ok(d) if !d.is_zero() => Ok(FsyncPolicy::Interval(d)),
                Ok(_) => Err("a zero interval: use \"always\" instead".into()),
                Err(e) => Err(format!(
                    "{e}; expected \"always\", \"never\" or an interval such as \"1s\""
                )),
            },
        }
    }
}

impl Serialize for FsyncPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// A segment is sealed and a new one started past this size.
    pub segment_bytes: u64,
    /// The oldest segments are dropped past this total (at least two segments are kept).
    pub max_bytes: u64,
    pub fsync: FsyncPolicy,
}

pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
pub const MIN_SEGMENT_BYTES: u64 = 4 << 10;

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_bytes: DEFAULT_MAX_BYTES,
            fsync: FsyncPolicy::default(),
        }
    }
}

/// An I/O error that names the file it happened on (the kernel's message does not).
fn at(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[derive(Debug, Clone, Copy)]
struct Seg {
    first: u64,
    /// `first - 1` while empty.
    last: u64,
    /// Bytes of the file that hold complete frames (the header included).
    bytes: u64,
}

#[derive(Debug)]
struct State {
    /// Oldest first; never empty: the last one is the active segment.
    segs: VecDeque<Seg>,
    acked: u64,
    cursor_dirty: bool,
    /// Records with a seq up to this one were dropped (cap) and are not to be read.
    dropped_through: u64,
    total_bytes: u64,
}

impl State {
    fn last_seq(&self) -> u64 {
        self.segs.back().map_or(0, |s| s.last)
    }
    fn first_seq(&self) -> u64 {
        self.segs.front().map_or(1, |s| s.first)
    }
}

/// A point-in-time view of the spool, for `/v1/sinks` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Size of the segment files.
    pub bytes: u64,
    /// Records written and not yet acknowledged.
    pub records: u64,
    /// Highest sequence number given out.
    pub last_seq: u64,
    /// Highest acknowledged sequence number.
    pub acked: u64,
    pub segments: u64,
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Bytes cut off the end of the active segment (a write torn by a crash).
    pub truncated_bytes: u64,
    pub segments: usize,
    pub last_seq: u64,
    pub acked: u64,
}

/// The shared part of a spool: the index of segments and the acked cursor. The single
/// [`SpoolWriter`] appends; [`SpoolReader`]s read. Neither holds the lock while doing I/O.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    opts: SpoolOptions,
    state: Mutex<State>,
    data: Notify,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{SEGMENT_EXT}"))
}

fn frame_crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&len.to_le_bytes());
    let c = crc32c::crc32c_append(c, &seq.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

/// One frame parsed from `buf` at `p`: `Ok(Some((seq, payload range, next p)))`, `Ok(None)` if
/// `buf` ends before the frame does, `Err(why)` if the frame is corrupt.
fn parse_frame(
    buf: &[u8],
    p: usize,
) -> Result<Option<(u64, std::ops::Range<usize>, usize)>, String> {
    let Some(h) = buf.get(p..p + FRAME_HEADER) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let seq = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    if len as usize > MAX_RECORD_BYTES {
        return Err(format!("frame length {len} is larger than any record"));
    }
    let start = p + FRAME_HEADER;
    let end = start + len as usize;
    let Some(payload) = buf.get(start..end) else {
        return Ok(None);
    };
    if frame_crc(len, seq, payload) != crc {
        return Err(format!("checksum mismatch in the frame of seq {seq}"));
    }
    Ok(Some((seq, start..end, end)))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering from whatever a crash left there.
    pub fn open(dir: &Path, opts: SpoolOptions) -> io::Result<(Arc<Spool>, SpoolWriter, Recovery)> {
        std::fs::create_dir_all(dir).map_err(|e| at(dir, "creating spool dir", e))?;
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| at(dir, "reading spool dir", e))? {
            let entry = entry.map_err(|e| at(dir, "reading spool dir", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(&format!(".{SEGMENT_EXT}")) {
                if let Ok(first) = stem.parse::<u64>() {
                    if first > 0 {
                        firsts.push(first);
                        continue;
                    }
                }
                tracing::warn!(file = %entry.path().display(), "spool: ignoring a file that is not a segment");
            }
        }
        firsts.sort_unstable();

        let cursor_path = dir.join(CURSOR_FILE);
        let cursor = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&cursor_path)
            .map_err(|e| at(&cursor_path, "opening", e))?;
        let mut acked = read_cursor(&cursor, &cursor_path);

        let mut segs: VecDeque<Seg> = VecDeque::new();
        let mut total = 0u64;
        for w in firsts.windows(2) {
            let path = segment_path(dir, w[0]);
            let bytes = std::fs::metadata(&path)
                .map_err(|e| at(&path, "reading", e))?
                .len();
            total += bytes;
            segs.push_back(Seg {
                first: w[0],
                last: w[1] - 1,
                bytes,
            });
        }
        let mut recovery = Recovery::default();
        // The active segment: read it through and cut off a torn tail.
        let (active_first, file, pos, last) = match firsts.last() {
            Some(&first) => {
                let path = segment_path(dir, first);
                let (file, pos, last, cut) = recover_active(&path, first)?;
                recovery.truncated_bytes = cut;
                (first, file, pos, last)
            }
            None => {
                let first = acked + 1;
                let path = segment_path(dir, first);
                let file = create_segment(&path)?;
                (first, file, HEADER_LEN, first - 1)
            }
        };
        let mut active = Seg {
            first: active_first,
            last,
            bytes: pos,
        };
        let mut file = file;
        let mut pos = pos;
        if acked > active.last {
            // The upstream acknowledged records this spool no longer has (lost with the page
            // cache in a power failure, or a cursor from a wiped spool). Numbering must go on
            // after them, or new records would reuse numbers the upstream has already seen.
            let next = acked + 1;
            let path = segment_path(dir, next);
            if active.last < active.first {
                let old = segment_path(dir, active.first);
                std::fs::remove_file(&old).map_err(|e| at(&old, "removing", e))?;
            } else {
                total += active.bytes;
                segs.push_back(active);
            }
            file = create_segment(&path)?;
            pos = HEADER_LEN;
            active = Seg {
                first: next,
                last: next - 1,
                bytes: HEADER_LEN,
            };
        }
        total += active.bytes;
        segs.push_back(active);
        // A cursor below the oldest segment means older records were dropped (or acked and
        // deleted): nothing to do. A cursor above the last seq was handled above.
        acked = acked.min(active.last);
        recovery.segments = segs.len();
        recovery.last_seq = active.last;
        recovery.acked = acked;

        let spool = Arc::new(Spool {
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(State {
                segs,
                acked,
                cursor_dirty: false,
                dropped_through: 0,
                total_bytes: total,
            }),
            data: Notify::new(),
        });
        let writer = SpoolWriter {
            spool: spool.clone(),
            path: segment_path(dir, active.first),
            file,
            pos,
            next_seq: active.last + 1,
            buf: Vec::with_capacity(256 << 10),
            buf_count: 0,
            unsynced: false,
            last_sync: Instant::now(),
            cursor,
            cursor_path,
            persisted_acked: acked,
            cursor_unsynced: false,
            syncer: match opts.fsync {
                FsyncPolicy::Interval(_) => {
                    Some(Syncer::start().map_err(|e| at(dir, "starting the sync thread for", e))?)
                }
                _ => None,
            },
        };
        let mut writer = writer;
        // Fully acknowledged segments left by the last run.
        writer.delete_acked()?;
        Ok((spool, writer, recovery))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> SpoolOptions {
        self.opts
    }

    /// Highest sequence number written.
    pub fn last_seq(&self) -> u64 {
        lock(&self.state).last_seq()
    }

    /// Highest acknowledged sequence number.
    pub fn acked(&self) -> u64 {
        lock(&self.state).acked
    }

    /// Records everything up to `seq` as acknowledged; returns how many records that newly
    /// acknowledges. The cursor file is written by the writer's [`SpoolWriter::maintain`].
    pub fn ack(&self, seq: u64) -> u64 {
        let mut st = lock(&self.state);
        let seq = seq.min(st.last_seq());
        if seq <= st.acked {
            return 0;
        }
        // Records dropped at the cap between the old cursor and `seq` were delivered after all
        // (they were in flight); count only what the spool still held as newly acknowledged.
        let from = st.acked.max(st.first_seq().saturating_sub(1));
        let n = seq.saturating_sub(from);
        st.acked = seq;
        st.cursor_dirty = true;
        n
    }

    pub fn stats(&self) -> SpoolStats {
        let st = lock(&self.state);
        let last = st.last_seq();
        let floor = st.acked.max(st.first_seq().saturating_sub(1));
        SpoolStats {
            bytes: st.total_bytes,
            records: last.saturating_sub(floor),
            last_seq: last,
            acked: st.acked,
            segments: st.segs.len() as u64,
        }
    }

    /// Resolves after the writer has appended records (a permit is kept if nobody waits, so a
    /// wake-up between a check and the wait is not lost).
    pub async fn wait_for_data(&self) {
        self.data.notified().await;
    }

    /// A reader positioned after the acked cursor.
    pub fn reader(self: &Arc<Self>) -> SpoolReader {
        SpoolReader {
            spool: self.clone(),
            next: self.acked() + 1,
            cur: None,
            buf: Vec::new(),
            lost: 0,
        }
    }
}

fn read_cursor(file: &File, path: &Path) -> u64 {
    let mut b = [0u8; 16];
    match file.read_exact_at(&mut b, 0) {
        Ok(()) => {
            let acked = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            let crc = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
            if &b[12..16] == CURSOR_MAGIC && crc == crc32c::crc32c(&b[..8]) {
                return acked;
            }
            tracing::warn!(file = %path.display(), "spool: the acked cursor is corrupt; resending everything the spool holds");
            0
        }
        // A new spool, or a cursor never written: nothing acknowledged yet.
        Err(_) => 0,
    }
}

fn create_segment(path: &Path) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| at(path, "creating", e))?;
    f.write_all(MAGIC).map_err(|e| at(path, "writing", e))?;
    Ok(f)
}

/// Reads the active segment through; returns the file (positioned at the end of its valid
/// frames), that position, the last seq in it, and the bytes cut off.
fn recover_active(path: &Path, first: u64) -> io::Result<(File, u64, u64, u64)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| at(path, "opening", e))?;
    let data = std::fs::read(path).map_err(|e| at(path, "reading", e))?;
    if data.len() < HEADER_LEN as usize || &data[..HEADER_LEN as usize] != MAGIC {
        if !data.is_empty() && data.len() >= HEADER_LEN as usize {
            tracing::error!(file = %path.display(), bytes = data.len(), "spool: the active segment has no valid header; starting it afresh");
        }
        file.set_len(0).map_err(|e| at(path, "truncating", e))?;
        file.write_all_at(MAGIC, 0)
            .map_err(|e| at(path, "writing", e))?;
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(HEADER_LEN))
            .map_err(|e| at(path, "seeking", e))?;
        return Ok((file, HEADER_LEN, first - 1, data.len() as u64));
    }
    let mut p = HEADER_LEN as usize;
    let mut expect = first;
    let mut why = None;
    loop {
        match parse_frame(&data, p) {
            Ok(Some((seq, _, next))) if seq == expect => {
                expect += 1;
                p = next;
            }
            Ok(Some((seq, _, _))) => {
                why = Some(format!("seq {seq} where {expect} was expected"));
                break;
            }
            Ok(None) => {
                if p < data.len() {
                    why = Some("an incomplete frame".to_string());
                }
                break;
            }
            Err(e) => {
                why = Some(e);
                break;
            }
        }
    }
    let cut = (data.len() - p) as u64;
    if cut > 0 {
        tracing::warn!(
            file = %path.display(),
            offset = p,
            bytes = cut,
            reason = why.as_deref().unwrap_or(""),
            "spool: truncated a torn tail (a write cut short by a crash); those records were never acknowledged to their producer"
        );
        file.set_len(p as u64)
            .map_err(|e| at(path, "truncating", e))?;
    }
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(p as u64))
        .map_err(|e| at(path, "seeking", e))?;
    Ok((file, p as u64, expect - 1, cut))
}

/// The result of a [`SpoolWriter::commit`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commit {
    /// Records written.
    pub records: u64,
    /// Unacknowledged records dropped because the spool passed its cap.
    pub dropped: u64,
}

/// A failed [`SpoolWriter::commit`]: the records it held are lost (their sequence numbers are
/// not reused), and the caller is to count them.
#[derive(Debug, thiserror::Error)]
#[error("spool write failed, {lost} records lost: {source}")]
pub struct CommitError {
    pub lost: u64,
    #[source]
    pub source: io::Error,
}

/// The appending side of a spool. There is one per spool; it lives on the sink's own thread,
/// so that its writes and syncs never block the async runtime.
#[derive(Debug)]
pub struct SpoolWriter {
    spool: Arc<Spool>,
    path: PathBuf,
    file: File,
    /// End of the committed frames in the active segment.
    pos: u64,
    next_seq: u64,
    /// Frames pushed and not yet committed.
    buf: Vec<u8>,
    buf_count: u64,
    unsynced: bool,
    last_sync: Instant,
    cursor: File,
    cursor_path: PathBuf,
    persisted_acked: u64,
    cursor_unsynced: bool,
    /// With the interval policy, syncs run on a thread of their own: an `fdatasync` can take
    /// tens of milliseconds, and the records behind it would wait that long to be sent.
    syncer: Option<Syncer>,
}

/// A thread that runs `fdatasync` on what it is sent.
#[derive(Debug)]
struct Syncer {
    tx: std::sync::mpsc::Sender<(File, PathBuf)>,
}

impl Syncer {
    fn start() -> io::Result<Syncer> {
        let (tx, rx) = std::sync::mpsc::channel::<(File, PathBuf)>();
        std::thread::Builder::new()
            .name("spool-sync".into())
            .spawn(move || {
                while let Ok((f, path)) = rx.recv() {
                    if let Err(e) = f.sync_data() {
                        tracing::error!(file = %path.display(), error = %e, "spool: fsync failed");
                    }
                }
            })?;
        Ok(Syncer { tx })
    }

    fn sync(&self, f: &File, path: &Path) {
        match f.try_clone() {
            Ok(c) => {
                let _ = self.tx.send((c, path.to_path_buf()));
            }
            Err(e) => tracing::error!(file = %path.display(), error = %e, "spool: fsync skipped"),
        }
    }
}

impl SpoolWriter {
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// The sequence number the next pushed record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes pushed and not yet committed.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Frames one record: `encode` appends its payload. Returns the record's sequence number.
    /// Nothing reaches the file before [`commit`](Self::commit).
    pub fn push(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let seq = self.next_seq;
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0u8; FRAME_HEADER]);
        encode(&mut self.buf);
        let len = self.buf.len() - at - FRAME_HEADER;
        if len > MAX_RECORD_BYTES {
            // Nothing the engine encodes comes near this; refuse rather than write a frame
            // that recovery would take for corruption.
            tracing::error!(len, "spool: a record larger than 16 MiB was not written");
            self.buf.truncate(at);
            return 0;
        }
        let len32 = len as u32;
        let crc = frame_crc(len32, seq, &self.buf[at + FRAME_HEADER..]);
        self.buf[at..at + 4].copy_from_slice(&len32.to_le_bytes());
        self.buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        self.buf[at + 8..at + 16].copy_from_slice(&seq.to_le_bytes());
        self.next_seq += 1;
        self.buf_count += 1;
        seq
    }

    /// Writes the pushed records with one `write()`, rolls the segment if it is full, applies
    /// the size cap and the fsync policy, and wakes the reader.
    pub fn commit(&mut self) -> Result<Commit, CommitError> {
        if self.buf.is_empty() {
            return Ok(Commit::default());
        }
        let n = self.buf_count;
        let buf = std::mem::take(&mut self.buf);
        self.buf_count = 0;
        let res = self.write_frames(&buf);
        // Keep the allocation for the next batch.
        self.buf = buf;
        self.buf.clear();
        let dropped = match res {
            Ok(d) => d,
            Err((written, source)) => {
                return Err(CommitError {
                    lost: n - written,
                    source,
                })
            }
        };
        self.spool.data.notify_one();
        match self.spool.opts.fsync {
            FsyncPolicy::Always => {
                // The records are written (the page cache has them) and the reader may send
                // them; a failed sync only weakens the power-loss guarantee, so it is
                // reported, not fatal.
                if let Err(e) = self.sync_data() {
                    tracing::error!(error = %e, "spool: fsync failed");
                }
            }
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d => self.sync_soon(),
            _ => {}
        }
        Ok(Commit {
            records: n,
            dropped,
        })
    }

    /// Writes whole frames, one `write()` per segment they land in, rolling the segment when the
    /// next frame would take it past `segment_bytes` (a frame larger than a segment gets one of
    /// its own). Returns the records dropped at the cap, or how many records were written before
    /// an error.
    fn write_frames(&mut self, buf: &[u8]) -> Result<u64, (u64, io::Error)> {
        let seg_max = self.spool.opts.segment_bytes;
        let mut dropped = 0;
        let mut written = 0u64;
        let mut start = 0usize;
        while start < buf.len() {
            let room = seg_max.saturating_sub(self.pos) as usize;
            let (mut end, mut frames, mut last_seq) = (start, 0u64, 0u64);
            while end < buf.len() {
                let h = &buf[end..end + FRAME_HEADER];
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let next = end + FRAME_HEADER + len;
                if next - start > room && (frames > 0 || self.pos > HEADER_LEN) {
                    break;
                }
                last_seq =
                    u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
                frames += 1;
                end = next;
            }
            if frames == 0 {
                let h = &buf[start + 8..start + FRAME_HEADER];
                let first = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
                self.roll(first).map_err(|e| (written, e))?;
                continue;
            }
            if let Err(e) = self.file.write_all(&buf[start..end]) {
                // Leave no partial frame behind: the next append starts at a frame boundary.
                let _ = self.file.set_len(self.pos);
                use std::io::Seek;
                let _ = self.file.seek(io::SeekFrom::Start(self.pos));
                return Err((written, at(&self.path, "writing", e)));
            }
            let bytes = (end - start) as u64;
            self.pos += bytes;
            self.unsynced = true;
            written += frames;
            start = end;
            let doomed = {
                let mut st = lock(&self.spool.state);
                if let Some(active) = st.segs.back_mut() {
                    active.last = last_seq;
                    active.bytes = self.pos;
                }
                st.total_bytes += bytes;
                let (d, doomed) = enforce_cap(&mut st, self.spool.opts.max_bytes, &self.spool.dir);
                dropped += d;
                doomed
            };
            for p in doomed {
                if let Err(e) = std::fs::remove_file(&p) {
                    tracing::warn!(file = %p.display(), error = %e, "spool: removing a dropped segment");
                }
            }
        }
        Ok(dropped)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| at(&self.path, "syncing", e))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Hands the data and cursor to the sync thread (interval policy).
    fn sync_soon(&mut self) {
        if let Some(syncer) = &self.syncer {
            if self.unsynced {
                syncer.sync(&self.file, &self.path);
                self.unsynced = false;
            }
            if self.cursor_unsynced {
                syncer.sync(&self.cursor, &self.cursor_path);
                self.cursor_unsynced = false;
            }
        }
        self.last_sync = Instant::now();
    }

    /// Seals the active segment and starts a new one whose first record will be `first`.
    fn roll(&mut self, first: u64) -> io::Result<()> {
        match self.spool.opts.fsync {
            FsyncPolicy::Always => self.sync_data()?,
            FsyncPolicy::Interval(_) => self.sync_soon(),
            FsyncPolicy::Never => {}
        }
        let path = segment_path(&self.spool.dir, first);
        let file = create_segment(&path)?;
        if self.spool.opts.fsync != FsyncPolicy::Never {
            // The new name must survive a power failure too.
            if let Ok(d) = File::open(&self.spool.dir) {
                match &self.syncer {
                    Some(syncer) => syncer.sync(&d, &self.spool.dir),
                    None => {
                        let _ = d.sync_all();
                    }
                }
            }
        }
        self.file = file;
        self.path = path;
        self.pos = HEADER_LEN;
        self.unsynced = true;
        let mut st = lock(&self.spool.state);
        st.total_bytes += HEADER_LEN;
        st.segs.push_back(Seg {
            first,
            last: first - 1,
            bytes: HEADER_LEN,
        });
        Ok(())
    }

    /// Housekeeping, called by the sink's thread when idle and after commits: writes the acked
    /// cursor, deletes fully acknowledged segments, and syncs per the fsync policy.
    pub fn maintain(&mut self) -> io::Result<()> {
        self.persist_cursor()?;
        self.delete_acked()?;
        if let FsyncPolicy::Interval(d) = self.spool.opts.fsync {
            if (self.unsynced || self.cursor_unsynced) && self.last_sync.elapsed() >= d {
                self.sync_soon();
            }
        }
        Ok(())
    }

    fn persist_cursor(&mut self) -> io::Result<()> {
        let acked = {
            let mut st = lock(&self.spool.state);
            if !st.cursor_dirty {
                return Ok(());
            }
            st.cursor_dirty = false;
            st.acked
        };
        if acked == self.persisted_acked {
            return Ok(());
        }
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&acked.to_le_bytes());
        let crc = crc32c::crc32c(&b[..8]);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        b[12..16].copy_from_slice(CURSOR_MAGIC);
        // One 16-byte write at offset 0 (a single page): it is never torn.
        self.cursor
            .write_all_at(&b, 0)
            .map_err(|e| at(&self.cursor_path, "writing", e))?;
        self.persisted_acked = acked;
        self.cursor_unsynced = true;
        if self.spool.opts.fsync == FsyncPolicy::Always {
            self.sync_cursor()?;
        }
        Ok(())
    }

    fn sync_cursor(&mut self) -> io::Result<()> {
        if self.cursor_unsynced {
            self.cursor
                .sync_data()
                .map_err(|e| at(&self.cursor_path, "syncing", e))?;
            self.cursor_unsynced = false;
        }
        Ok(())
    }

    fn delete_acked(&mut self) -> io::Result<()> {
        let doomed: Vec<PathBuf> = {
            let mut st = lock(&self.spool.state);
            let mut v = Vec::new();
            while st.segs.len() > 1 && st.segs.front().is_some_and(|s| s.last <= st.acked) {
                if let Some(s) = st.segs.pop_front() {
                    st.total_bytes = st.total_bytes.saturating_sub(s.bytes);
                    v.push(segment_path(&self.spool.dir, s.first));
                }
            }
            v
        };
        for p in doomed {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(at(&p, "removing", e)),
            }
        }
        Ok(())
    }

    /// Commits, writes the cursor and syncs both (on shutdown), whatever the policy but `never`.
    pub fn close(&mut self) -> Result<Commit, CommitError> {
        let c = self.commit()?;
        let res = self.persist_cursor().and_then(|()| {
            if self.spool.opts.fsync != FsyncPolicy::Never {
                self.sync_data()?;
                self.sync_cursor()?;
            }
            Ok(())
        });
        res.map_err(|source| CommitError { lost: 0, source })?;
        Ok(c)
    }
}

/// Drops the oldest segments while the spool is over `max`; returns the unacknowledged records
/// dropped and the files to delete.
fn enforce_cap(st: &mut State, max: u64, dir: &Path) -> (u64, Vec<PathBuf>) {
    let mut dropped = 0;
    let mut doomed = Vec::new();
    while st.total_bytes > max && st.segs.len() > 1 {
        let Some(s) = st.segs.pop_front() else { break };
        st.total_bytes = st.total_bytes.saturating_sub(s.bytes);
        let floor = st.acked.max(s.first - 1);
        dropped += s.last.saturating_sub(floor);
        st.dropped_through = st.dropped_through.max(s.last);
        doomed.push(segment_path(dir, s.first));
    }
    (dropped, doomed)
}

/// An open segment file and the offset of the next frame to read.
#[derive(Debug)]
struct Cursor {
    first: u64,
    file: File,
    off: u64,
}

/// What one [`SpoolReader::read`] returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Read {
    pub records: usize,
    pub bytes: usize,
    /// Sequence numbers of the first and last record handed out (0 when none).
    pub first: u64,
    pub last: u64,
}

/// The reading side of a spool. It reads what the writer committed, in sequence order, from the
/// page cache (or the disk, after a restart), with one `pread` per batch.
#[derive(Debug)]
pub struct SpoolReader {
    spool: Arc<Spool>,
    next: u64,
    cur: Option<Cursor>,
    buf: Vec<u8>,
    lost: u64,
}

impl SpoolReader {
    /// The sequence number the next read starts at.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Moves to `seq` (after a reconnect: the record after the acked cursor).
    pub fn seek(&mut self, seq: u64) {
        if seq != self.next {
            self.next = seq.max(1);
            self.cur = None;
        }
    }

    /// Records written and not yet read.
    pub fn available(&self) -> u64 {
        let st = lock(&self.spool.state);
        let from = self.next.max(st.dropped_through + 1).max(st.first_seq());
        (st.last_seq() + 1).saturating_sub(from)
    }

    /// Records found corrupt and skipped since the last call.
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// Hands up to `max_records` records (and about `max_bytes` of payload, at least one
    /// record) to `f` as `(seq, payload)`, in order.
    pub fn read(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        mut f: impl FnMut(u64, &[u8]),
    ) -> io::Result<Read> {
        let mut out = Read::default();
        while out.records < max_records && out.bytes < max_bytes {
            // Where is `next`? Decided under the lock; read without it.
            let (seg, sealed) = {
                let st = lock(&self.spool.state);
                if self.next <= st.dropped_through {
                    self.next = st.dropped_through + 1;
                    self.cur = None;
                }
                if self.next < st.first_seq() {
                    // Deleted as acknowledged (a reader behind the cursor): nothing to resend.
                    self.next = st.first_seq();
                    self.cur = None;
                }
                if self.next > st.last_seq() {
                    break;
                }
                let i = st.segs.partition_point(|s| s.first <= self.next) - 1;
                (st.segs[i], i + 1 < st.segs.len())
            };
            if self.cur.as_ref().is_none_or(|c| c.first != seg.first) {
                let path = segment_path(&self.spool.dir, seg.first);
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // Dropped at the cap between the lock and the open: start over.
                        continue;
                    }
                    Err(e) => return Err(at(&path, "opening", e)),
                };
                self.cur = Some(Cursor {
                    first: seg.first,
                    file,
                    off: HEADER_LEN,
                });
            }
            let Some(cur) = self.cur.as_mut() else { break };
            if cur.off >= seg.bytes {
                // The segment ends before the records it should hold.
                self.corrupt(&seg, sealed, "the segment ends early".into());
                continue;
            }
            let room = max_bytes.saturating_sub(out.bytes);
            let want = ((seg.bytes - cur.off) as usize)
                .min(room.saturating_add(FRAME_HEADER + READ_SLACK));
            self.buf.resize(want, 0);
            read_at(&cur.file, &mut self.buf, cur.off)
                .map_err(|e| at(&segment_path(&self.spool.dir, seg.first), "reading", e))?;
            let mut p = 0;
            let mut bad = None;
            loop {
                if out.records >= max_records || (out.bytes >= max_bytes && out.records > 0) {
                    break;
                }
                match parse_frame(&self.buf, p) {
                    Ok(Some((seq, range, next))) => {
                        if seq < self.next {
                            p = next;
                            continue;
                        }
                        if seq > self.next {
                            bad = Some(format!("seq {seq} where {} was expected", self.next));
                            break;
                        }
                        if out.records > 0 && out.bytes + range.len() > max_bytes {
                            break;
                        }
                        f(seq, &self.buf[range.clone()]);
                        if out.records == 0 {
                            out.first = seq;
                        }
                        out.last = seq;
                        out.records += 1;
                        out.bytes += range.len();
                        self.next = seq + 1;
                        p = next;
                    }
                    Ok(None) => {
                        if p == 0 {
                            // A frame larger than this read: read exactly that frame.
                            let len = self
                                .buf
                                .get(..4)
                                .map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
                            match len {
                                Some(len)
                                    if cur.off + (FRAME_HEADER + len) as u64 <= seg.bytes
                                        && self.buf.len() < FRAME_HEADER + len =>
                                {
                                    self.buf.resize(FRAME_HEADER + len, 0);
                                    read_at(&cur.file, &mut self.buf, cur.off).map_err(|e| {
                                        at(&segment_path(&self.spool.dir, seg.first), "reading", e)
                                    })?;
                                    continue;
                                }
                                _ => bad = Some("an incomplete frame".to_string()),
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            cur.off += p as u64;
            if let Some(why) = bad {
                self.corrupt(&seg, sealed, why);
                continue;
            }
            if p == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Skips the rest of a segment that cannot be read, counting the records lost.
    fn corrupt(&mut self, seg: &Seg, sealed: bool, why: String) {
        let lost = seg.last.saturating_sub(self.next) + 1;
        let off = self.cur.as_ref().map_or(0, |c| c.off);
        tracing::error!(
            file = %segment_path(&self.spool.dir, seg.first).display(),
            offset = off,
            reason = %why,
            lost,
            sealed,
            "spool: corrupt record; skipping the rest of the segment"
        );
        self.lost += lost;
        self.next = seg.last + 1;
        self.cur = None;
    }
}

fn read_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "short segment",
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
