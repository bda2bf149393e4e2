//! Per-object sample history: a bounded ring, shared between the collector (writer) and the API
//! (readers).
//!
//! # How the ring is stored
//!
//! A series keeps the last `cap` samples of its object (120 by default), for thousands of
//! objects, so the ring is delta-encoded rather than kept as fixed-size records:
//!
//! - the oldest and the newest sample are kept unpacked (`Packed`, 104 bytes each), so
//!   [`Series::latest`], [`Series::latest_seq`] and [`Series::latest_pids`] are O(1);
//! - every sample after the oldest is a *record* in one byte ring (`deltas`): its difference
//!   from the sample before it. A record is a 2-byte header whose bits say which parts follow,
//!   then those parts as LEB128 varints: the presence bitmask (only when it changed), the seq
//!   (only when it is not the previous +1), the timestamp as a delta of deltas (zero, and so
//!   absent, at a perfectly steady interval; a few bytes of scheduling jitter otherwise), and
//!   for each counter whose value changed, the difference from the previous value (wrapping,
//!   zigzag-encoded, so decreasing counters and `u64::MAX` round-trip exactly). An unchanged
//!   counter (a memory limit, pids, an idle io counter) costs nothing; an absent one is 0 in
//!   `Packed` and in the deltas, and its bit in `present` keeps it `None`.
//! - Dropping the oldest sample decodes the first record into the oldest sample and removes
//!   its bytes from the front of the ring, so exactly the last `cap` samples are kept, with no
//!   block granularity and no key samples to store.
//! - Reads ([`Series::since`], [`Series::recent`]) decode forward from the oldest sample
//!   (about 4 µs for 120 samples); a read of only the newest sample (the usual report of one new
//!   sample: seqs are consecutive unless a caller sets its own) decodes nothing.
//! - The byte ring grows by what a record needs plus 1/16 (never by doubling), so its capacity
//!   stays close to its contents and, once the ring is full, only grows when the records get
//!   longer than ever before: steady-state sampling allocates nothing. It gives memory back
//!   when its contents fall under half its capacity.
//!
//! A typical cgroup sample (10 counters, 1 s interval) takes about 15–20 bytes instead of 104
//! (see `typical_series_fits_in_3_kib`).

use nodeagent_types::{DeviceCounters, HostStats, Kind, ObjectId, Sample, Timestamp};
use std::collections::{vec_deque, BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

/// Counters a sample may carry, in one fixed order, for the packed ring.
const FIELDS: usize = 10;
/// Index of `pids` in [`fields`].
const PIDS: usize = 5;

fn fields(s: &Sample) -> [Option<u64>; FIELDS] {
    [
        s.cpu_usage_ns,
        s.cpu_throttled_ns,
        s.memory_bytes,
        s.memory_limit_bytes,
        s.oom_kills,
        s.pids,
        s.io_read_bytes,
        s.io_write_bytes,
        s.net_rx_bytes,
        s.net_tx_bytes,
    ]
}

/// One sample unpacked: 104 bytes, with no heap allocation. The id is the series'; absent
/// counters are a clear bit in `present` and a 0 in `v`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Packed {
    ts: u64,
    seq: u64,
    present: u16,
    v: [u64; FIELDS],
}

impl Packed {
    fn pack(s: &Sample) -> Packed {
        let mut p = Packed {
            ts: s.ts.as_nanos(),
            seq: s.seq,
            ..Packed::default()
        };
        for (i, f) in fields(s).into_iter().enumerate() {
            if let Some(v) = f {
                p.present |= 1 << i;
                p.v[i] = v;
            }
        }
        p
    }

    fn get(&self, i: usize) -> Option<u64> {
        (self.present & (1 << i) != 0).then_some(self.v[i])
    }

    fn unpack(&self, id: &str, host: Option<&HostStats>) -> Sample {
        Sample {
            id: id.to_string(),
            ts: Timestamp(self.ts),
            seq: self.seq,
            cpu_usage_ns: self.get(0),
            cpu_throttled_ns: self.get(1),
            memory_bytes: self.get(2),
            memory_limit_bytes: self.get(3),
            oom_kills: self.get(4),
            pids: self.get(PIDS),
            io_read_bytes: self.get(6),
            io_write_bytes: self.get(7),
            net_rx_bytes: self.get(8),
            net_tx_bytes: self.get(9),
            host: host.map(|h| Box::new(h.clone())),
        }
    }
}

/// A sample and the timestamp delta into it from the sample before: what a record is decoded
/// against (the timestamp is a delta of deltas).
#[derive(Debug, Clone, Copy, Default)]
struct State {
    p: Packed,
    ts_delta: u64,
}

/// Record header bits: the presence bitmask follows.
const H_PRESENT: u16 = 1 << 0;
/// The seq is not the previous +1: its zigzag difference from that follows.
const H_SEQ: u16 = 1 << 1;
/// The timestamp delta differs from the previous one: the zigzag difference follows.
const H_TS: u16 = 1 << 2;
/// Counter `i` changed when bit `H_FIELD + i` is set: its zigzag difference follows.
const H_FIELD: usize = 3;
/// The longest record: the header, then at most 13 varints of at most 10 bytes.
const MAX_RECORD: usize = 2 + 3 * 10 + FIELDS * 10;

fn zigzag(d: u64) -> u64 {
    let s = d as i64;
    ((s << 1) ^ (s >> 63)) as u64
}

fn unzigzag(z: u64) -> u64 {
    (z >> 1) ^ 0u64.wrapping_sub(z & 1)
}

/// Writes `v` as a LEB128 varint at `out[n..]`, returns the new end.
fn put(out: &mut [u8; MAX_RECORD], mut n: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

/// Encodes `next` as a record against `prev`; returns the record's header and length, and
/// `next`'s timestamp delta.
fn encode(prev: &State, next: &Packed, out: &mut [u8; MAX_RECORD]) -> (u16, usize, u64) {
    let mut h = 0u16;
    let mut n = 2;
    if next.present != prev.p.present {
        h |= H_PRESENT;
        n = put(out, n, u64::from(next.present));
    }
    let seq = next.seq.wrapping_sub(prev.p.seq).wrapping_sub(1);
    if seq != 0 {
        h |= H_SEQ;
        n = put(out, n, zigzag(seq));
    }
    let ts_delta = next.ts.wrapping_sub(prev.p.ts);
    let dd = ts_delta.wrapping_sub(prev.ts_delta);
    if dd != 0 {
        h |= H_TS;
        n = put(out, n, zigzag(dd));
    }
    for i in 0..FIELDS {
        let d = next.v[i].wrapping_sub(prev.p.v[i]);
        if d != 0 {
            h |= 1 << (H_FIELD + i);
            n = put(out, n, zigzag(d));
        }
    }
    out[..2].copy_from_slice(&h.to_le_bytes());
    (h, n, ts_delta)
}

/// Reads records from the byte ring.
struct Reader<'a> {
    it: vec_deque::Iter<'a, u8>,
    read: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        self.read += 1;
        // The ring only holds whole records written by `encode`.
        self.it.next().copied().unwrap_or(0)
    }

    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte();
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }

    /// Decodes the next record into `s`, the sample before it, making it that record's sample.
    /// Returns the record's header.
    fn apply(&mut self, s: &mut State) -> u16 {
        let h = u16::from_le_bytes([self.byte(), self.byte()]);
        if h & H_PRESENT != 0 {
            s.p.present = self.varint() as u16;
        }
        let seq = if h & H_SEQ != 0 {
            unzigzag(self.varint())
        } else {
            0
        };
        s.p.seq = s.p.seq.wrapping_add(1).wrapping_add(seq);
        if h & H_TS != 0 {
            s.ts_delta = s.ts_delta.wrapping_add(unzigzag(self.varint()));
        }
        s.p.ts = s.p.ts.wrapping_add(s.ts_delta);
        for (i, v) in s.p.v.iter_mut().enumerate() {
            if h & (1 << (H_FIELD + i)) != 0 {
                *v = v.wrapping_add(unzigzag(self.varint()));
            }
        }
        h
    }
}

/// The kept samples from some index on, oldest first, decoded one record at a time.
struct Packs<'a> {
    r: Reader<'a>,
    s: State,
    /// `s` is not yielded yet: the next call yields it rather than decoding a record.
    fresh: bool,
    left: usize,
}

impl Iterator for Packs<'_> {
    type Item = Packed;

    fn next(&mut self) -> Option<Packed> {
        if self.left == 0 {
            return None;
        }
        if self.fresh {
            self.fresh = false;
        } else {
            self.r.apply(&mut self.s);
        }
        self.left -= 1;
        Some(self.s.p)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Packs<'_> {}

/// Recent samples of one object, in a bounded, delta-encoded ring (see the module
/// documentation). The collector fills a scratch [`Sample`] ([`Series::begin`]) and packs it in
/// ([`Series::commit`]), so steady-state sampling allocates nothing.
#[derive(Debug)]
pub struct Series {
    pub id: ObjectId,
    pub name: String,
    pub kind: Kind,
    cap: usize,
    /// Samples kept, at most `cap`.
    len: usize,
    /// The oldest sample kept (when `len > 0`).
    first: State,
    /// The newest sample kept (when `len > 0`); `first` too when `len == 1`.
    last: State,
    /// One record per sample after `first`, `len - 1` in all.
    deltas: VecDeque<u8>,
    /// Records in `deltas` whose seq is not the previous +1. While there are none, sample `i`
    /// has seq `first.seq + i`, and [`Series::since`] skips straight to its first sample.
    seq_jumps: usize,
    /// Host detail, one per kept sample; only the host series has it.
    host: VecDeque<HostStats>,
    scratch: Sample,
    next_seq: u64,
}

impl Series {
    pub fn new(id: ObjectId, name: String, kind: Kind, cap: usize) -> Series {
        let cap = cap.max(1);
        Series {
            scratch: Sample {
                id: id.clone(),
                ..Sample::default()
            },
            id,
            name,
            kind,
            cap,
            len: 0,
            first: State::default(),
            last: State::default(),
            deltas: VecDeque::new(),
            seq_jumps: 0,
            host: VecDeque::new(),
            next_seq: 1,
        }
    }

    /// The sample to fill next: counters cleared, `id` and `seq` set. Nothing is kept until
    /// [`Series::commit`]; a read that fails simply does not commit, and its seq is reused.
    pub fn begin(&mut self) -> &mut Sample {
        let host = self.scratch.host.take();
        let id = std::mem::take(&mut self.scratch.id);
        self.scratch = Sample {
            id,
            seq: self.next_seq,
            host,
            ..Sample::default()
        };
        &mut self.scratch
    }

    /// Keeps the sample filled since [`Series::begin`], dropping the oldest when full.
    pub fn commit(&mut self) {
        if self.len >= self.cap {
            self.drop_oldest();
            if let Some(old) = self.host.pop_front() {
                // Recycle the oldest host detail's vectors for the newest.
                if let Some(h) = &self.scratch.host {
                    let mut old = old;
                    old.clone_from(h);
                    self.host.push_back(old);
                }
            }
        }
        let p = Packed::pack(&self.scratch);
        if self.len == 0 {
            self.first = State { p, ts_delta: 0 };
            self.last = self.first;
        } else {
            let mut rec = [0u8; MAX_RECORD];
            let (h, n, ts_delta) = encode(&self.last, &p, &mut rec);
            if h & H_SEQ != 0 {
                self.seq_jumps += 1;
            }
            self.push(&rec[..n]);
            self.last = State { p, ts_delta };
        }
        self.len += 1;
        if let Some(h) = &self.scratch.host {
            if self.host.len() < self.len {
                self.host.push_back((**h).clone());
            }
        }
        self.next_seq += 1;
    }

    /// Appends a record, growing the byte ring by a little more than it needs, never doubling.
    fn push(&mut self, rec: &[u8]) {
        let len = self.deltas.len();
        if len + rec.len() > self.deltas.capacity() {
            self.deltas.reserve_exact(rec.len() + len / 16 + 16);
        }
        self.deltas.extend(rec);
    }

    /// Drops the oldest sample: the first record becomes the oldest sample.
    fn drop_oldest(&mut self) {
        if self.len <= 1 {
            self.len = 0;
            self.deltas.clear();
            self.seq_jumps = 0;
            return;
        }
        let mut r = Reader {
            it: self.deltas.iter(),
            read: 0,
        };
        if r.apply(&mut self.first) & H_SEQ != 0 {
            self.seq_jumps = self.seq_jumps.saturating_sub(1);
        }
        let used = r.read.min(self.deltas.len());
        self.deltas.drain(..used);
        self.len -= 1;
        // Give memory back if the records got much shorter (a busy object gone quiet).
        let len = self.deltas.len();
        if self.deltas.capacity() > 2 * len + 256 {
            self.deltas.shrink_to(len + len / 16 + 16);
        }
    }

    /// The kept samples from index `start` on (clamped to `len`), oldest first.
    fn packs(&self, start: usize) -> Packs<'_> {
        let start = start.min(self.len);
        let mut it = Packs {
            r: Reader {
                it: self.deltas.iter(),
                read: 0,
            },
            s: self.first,
            fresh: true,
            left: self.len - start,
        };
        if start > 0 && start + 1 == self.len {
            // Only the newest: no need to decode.
            it.s = self.last;
        } else {
            for _ in 0..start {
                it.r.apply(&mut it.s);
            }
        }
        it
    }

    fn unpack(&self, i: usize, p: &Packed) -> Sample {
        let host = if self.host.len() == self.len {
            self.host.get(i)
        } else {
            None
        };
        p.unpack(&self.id, host)
    }

    pub fn latest(&self) -> Option<Sample> {
        (self.len > 0).then(|| self.unpack(self.len - 1, &self.last.p))
    }

    /// Seq of the newest sample, 0 if none.
    pub fn latest_seq(&self) -> u64 {
        if self.len > 0 {
            self.last.p.seq
        } else {
            0
        }
    }

    /// `pids` and time of the newest sample, without unpacking it.
    pub fn latest_pids(&self) -> Option<(Option<u64>, Timestamp)> {
        (self.len > 0).then(|| (self.last.p.get(PIDS), Timestamp(self.last.p.ts)))
    }

    /// Samples with `seq > after`, oldest first.
    pub fn since(&self, after: u64) -> impl Iterator<Item = Sample> + '_ {
        // Seqs are consecutive (unless a caller set its own): then the first sample wanted is
        // known without decoding. Otherwise decode from the oldest and skip.
        let first = self.first.p.seq;
        let start = if self.seq_jumps == 0 && self.len > 0 && self.last.p.seq >= first {
            if after < first {
                0
            } else if after >= self.last.p.seq {
                self.len
            } else {
                usize::try_from(after - first + 1).unwrap_or(self.len)
            }
        } else {
            0
        };
        self.packs(start)
            .zip(start..)
            .skip_while(move |(p, _)| p.seq <= after)
            .map(move |(p, i)| self.unpack(i, &p))
    }

    /// The newest `limit` samples (all when `None`), oldest first.
    pub fn recent(&self, limit: Option<usize>) -> Vec<Sample> {
        let n = limit.unwrap_or(self.len).min(self.len);
        let start = self.len - n;
        self.packs(start)
            .zip(start..)
            .map(|(p, i)| self.unpack(i, &p))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes this series owns, from capacities: the sample ring, the host detail (host
    /// series only) and the strings. The `Series` itself (`size_of::<Series>()`, in its `Arc`)
    /// and allocator overhead are not counted.
    pub fn heap_bytes(&self) -> usize {
        fn host_bytes(h: &HostStats) -> usize {
            let devs = |d: &Vec<DeviceCounters>| {
                d.capacity() * std::mem::size_of::<DeviceCounters>()
                    + d.iter().map(|c| c.device.capacity()).sum::<usize>()
            };
            devs(&h.disks) + devs(&h.nets)
        }
        self.deltas.capacity()
            + self.host.capacity() * std::mem::size_of::<HostStats>()
            + self.host.iter().map(host_bytes).sum::<usize>()
            + self
                .scratch
                .host
                .as_deref()
                .map_or(0, |h| std::mem::size_of::<HostStats>() + host_bytes(h))
            + self.id.capacity()
            + self.name.capacity()
            + self.scratch.id.capacity()
    }
}
pub type SharedSeries = Arc<Mutex<Series>>;

/// Every object's series by id. The map lock is held only to add, remove or look up; sampling
/// holds its own `Arc` to each series.
#[derive(Debug, Default)]
pub struct SeriesMap {
    inner: RwLock<BTreeMap<ObjectId, SharedSeries>>,
}

impl SeriesMap {
    pub fn insert(&self, series: Series) -> SharedSeries {
        let id = series.id.clone();
        let s = Arc::new(Mutex::new(series));
        write(&self.inner).insert(id, s.clone());
        s
    }

    pub fn get(&self, id: &str) -> Option<SharedSeries> {
        read(&self.inner).get(id).cloned()
    }

    pub fn remove(&self, id: &str) -> Option<SharedSeries> {
        write(&self.inner).remove(id)
    }

    /// Every series, for the Prometheus exposition.
    pub fn all(&self) -> Vec<SharedSeries> {
        read(&self.inner).values().cloned().collect()
    }
}

/// Locks ignore poisoning: a panic elsewhere must not take the API down with it, and the data
/// (samples) stays consistent per field.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ring_is_bounded_and_ordered() {
        let mut s = Series::new("a".into(), "a".into(), Kind::Process, 3);
        for i in 0..5u64 {
            s.begin().pids = Some(i);
            s.commit();
        }
        let r = s.recent(None);
        assert_eq!(r.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(r[2].pids, Some(4));
        assert_eq!(r[2].memory_bytes, None);
        assert!(r.iter().all(|x| x.id == "a"));
        assert_eq!(s.recent(Some(1)).len(), 1);
        assert_eq!(s.since(4).count(), 1);
        assert_eq!(s.since(0).count(), 3);
        // A read that failed is not committed and its seq is reused.
        s.begin().pids = Some(99);
        assert_eq!(s.begin().seq, 6);
        assert_eq!(s.latest_seq(), 5);
    }

    #[test]
    fn packing_keeps_every_field() {
        let mut s = Series::new("h".into(), "h".into(), Kind::Host, 2);
        let x = s.begin();
        x.cpu_usage_ns = Some(1);
        x.cpu_throttled_ns = Some(2);
        x.memory_bytes = Some(3);
        x.memory_limit_bytes = Some(4);
        x.oom_kills = Some(0);
        x.pids = Some(6);
        x.io_read_bytes = Some(7);
        x.io_write_bytes = Some(8);
        x.net_rx_bytes = Some(9);
        x.net_tx_bytes = Some(u64::MAX);
        x.ts = Timestamp(42);
        x.host = Some(Box::new(HostStats {
            cpus: 2,
            ..HostStats::default()
        }));
        let want = x.clone();
        s.commit();
        assert_eq!(s.latest(), Some(want));
        for i in 0..3 {
            let x = s.begin();
            x.host = Some(Box::new(HostStats {
                cpus: 10 + i,
                ..HostStats::default()
            }));
            s.commit();
        }
        let r = s.recent(None);
        assert_eq!(
            r.iter()
                .map(|x| x.host.as_ref().map(|h| h.cpus))
                .collect::<Vec<_>>(),
            vec![Some(11), Some(12)]
        );
    }

    #[test]
    fn empty_series() {
        let s = Series::new("a".into(), "a".into(), Kind::Process, 5);
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
        assert_eq!(s.latest(), None);
        assert_eq!(s.latest_seq(), 0);
        assert_eq!(s.latest_pids(), None);
        assert!(s.recent(None).is_empty());
        assert_eq!(s.since(0).count(), 0);
    }

    #[test]
    fn since_with_seqs_set_by_the_caller() {
        let mut s = Series::new("a".into(), "a".into(), Kind::Process, 4);
        for seq in [10u64, 11, 20, 21, 22] {
            s.begin().seq = seq;
            s.commit();
        }
        let seqs = |s: &Series, after| s.since(after).map(|x| x.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&s, 0), vec![11, 20, 21, 22]);
        assert_eq!(seqs(&s, 11), vec![20, 21, 22]);
        assert_eq!(seqs(&s, 15), vec![20, 21, 22]);
        assert_eq!(seqs(&s, 21), vec![22]);
        assert_eq!(seqs(&s, 22), Vec::<u64>::new());
        // The jump leaves the ring: back to consecutive seqs.
        for seq in [23u64, 24, 25] {
            s.begin().seq = seq;
            s.commit();
        }
        assert_eq!(s.seq_jumps, 0);
        assert_eq!(seqs(&s, 0), vec![22, 23, 24, 25]);
        assert_eq!(seqs(&s, 23), vec![24, 25]);
        assert_eq!(seqs(&s, 24), vec![25]);
    }

    /// A deterministic stream of typical cgroup samples: 1 s interval with up to 200 µs of
    /// jitter, ~0.5 cores, a few pages of memory churn, constant limit, pids and throttling,
    /// io every 4th sample, some network traffic.
    fn typical(s: &mut Series, n: u64, rng: &mut u64, acc: &mut [u64; 7]) {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let r = *rng;
        let [ts, cpu, mem, io_r, io_w, rx, tx] = acc;
        *ts += 1_000_000_000 + r % 200_000;
        *cpu += 500_000_000 + (r >> 20) % 20_000_000;
        *mem = *mem - 8 * 4096 + ((r >> 40) % 16) * 4096;
        if n.is_multiple_of(4) {
            *io_r += 4096 * ((r >> 8) % 8);
            *io_w += 4096 * ((r >> 12) % 16);
        }
        *rx += (r >> 16) % 4000;
        *tx += (r >> 24) % 2000;
        let x = s.begin();
        x.ts = Timestamp(*ts);
        x.cpu_usage_ns = Some(*cpu);
        x.cpu_throttled_ns = Some(1_234_567);
        x.memory_bytes = Some(*mem);
        x.memory_limit_bytes = Some(128 << 20);
        x.oom_kills = Some(0);
        x.pids = Some(3);
        x.io_read_bytes = Some(*io_r);
        x.io_write_bytes = Some(*io_w);
        x.net_rx_bytes = Some(*rx);
        x.net_tx_bytes = Some(*tx);
    }

    #[test]
    fn typical_series_fits_in_3_kib() {
        let mut s = Series::new(
            "0123456789abcdef".into(),
            "web-1".into(),
            Kind::Process,
            120,
        );
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut acc = [
            1_764_000_000_000_000_000,
            123_456_789_012,
            64 << 20,
            1 << 20,
            2 << 20,
            10 << 20,
            5 << 20,
        ];
        let mut max = 0;
        for n in 0..1000 {
            typical(&mut s, n, &mut rng, &mut acc);
            s.commit();
            max = max.max(s.heap_bytes());
        }
        assert_eq!(s.len(), 120);
        eprintln!(
            "heap bytes: {} now, {max} at most; ring {} bytes in {} capacity",
            s.heap_bytes(),
            s.deltas.len(),
            s.deltas.capacity()
        );
        assert!(max <= 3 * 1024, "{max} heap bytes");
        // Exact round trip of the last sample.
        let want = s.latest();
        assert_eq!(s.recent(None).last().cloned(), want);
    }

    fn value() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            Just(0u64),
            Just(u64::MAX),
            0..1000u64,
            (u64::MAX - 1000)..=u64::MAX,
        ]
    }

    /// One sample to commit: present bitmask, values, whether each value is a small step from
    /// the previous (up or down) rather than `values`, a timestamp step, and a seq to set.
    type Step = (u16, [u64; FIELDS], [i16; FIELDS], u16, u64, Option<u64>);

    fn step() -> impl Strategy<Value = Step> {
        (
            prop_oneof![Just(0x3ffu16), 0..0x400u16],
            prop::array::uniform10(value()),
            prop::array::uniform10(any::<i16>()),
            any::<u16>(),
            prop_oneof![
                Just(1_000_000_000u64),
                999_000_000..1_001_000_000u64,
                value()
            ],
            prop::option::weighted(0.05, value()),
        )
    }

    fn set(x: &mut Sample, i: usize, v: Option<u64>) {
        let f = match i {
            0 => &mut x.cpu_usage_ns,
            1 => &mut x.cpu_throttled_ns,
            2 => &mut x.memory_bytes,
            3 => &mut x.memory_limit_bytes,
            4 => &mut x.oom_kills,
            5 => &mut x.pids,
            6 => &mut x.io_read_bytes,
            7 => &mut x.io_write_bytes,
            8 => &mut x.net_rx_bytes,
            _ => &mut x.net_tx_bytes,
        };
        *f = v;
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn round_trips_exactly(
            cap in prop_oneof![Just(1usize), Just(2), Just(3), Just(7), Just(120)],
            steps in prop::collection::vec(step(), 0..300),
        ) {
            let mut s = Series::new("obj".into(), "n".into(), Kind::Process, cap);
            let mut all: Vec<Sample> = Vec::new();
            let mut prev = [0u64; FIELDS];
            let mut ts = 0u64;
            for (k, (present, values, deltas, use_delta, ts_step, seq)) in steps.iter().enumerate() {
                let x = s.begin();
                ts = ts.wrapping_add(*ts_step);
                x.ts = Timestamp(ts);
                if let Some(seq) = seq {
                    x.seq = *seq;
                }
                for i in 0..FIELDS {
                    let v = if use_delta & (1 << i) != 0 {
                        prev[i].wrapping_add_signed(i64::from(deltas[i]))
                    } else {
                        values[i]
                    };
                    prev[i] = v;
                    set(x, i, (present & (1 << i) != 0).then_some(v));
                }
                all.push(x.clone());
                s.commit();

                let kept = &all[all.len().saturating_sub(cap)..];
                prop_assert_eq!(s.len(), kept.len());
                prop_assert_eq!(s.latest(), kept.last().cloned());
                prop_assert_eq!(s.latest_seq(), kept.last().map_or(0, |x| x.seq));
                prop_assert_eq!(
                    s.latest_pids(),
                    kept.last().map(|x| (x.pids, x.ts))
                );
                if k.is_multiple_of(5) || k + 1 == steps.len() {
                    prop_assert_eq!(&s.recent(None), kept);
                    let want: Vec<Sample> = kept.iter().skip_while(|x| x.seq == 0).cloned().collect();
                    prop_assert_eq!(s.since(0).collect::<Vec<_>>(), want);
                    for limit in [0, 1, 2, cap / 2, cap, cap + 1] {
                        let n = limit.min(kept.len());
                        prop_assert_eq!(&s.recent(Some(limit))[..], &kept[kept.len() - n..]);
                    }
                    for x in kept.iter().take(3).chain(kept.iter().rev().take(3)) {
                        for after in [x.seq.wrapping_sub(1), x.seq, x.seq.wrapping_add(1)] {
                            let want: Vec<Sample> = kept.iter().skip_while(|y| y.seq <= after).cloned().collect();
                            prop_assert_eq!(s.since(after).collect::<Vec<_>>(), want);
                        }
                    }
                }
            }
        }
    }
}
