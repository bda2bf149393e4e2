//! Per-object sample history: a bounded ring, shared between the collector (writer) and the API
//! (readers).

use nodeagent_types::{HostStats, Kind, ObjectId, Sample, Timestamp};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

/// Counters a sample may carry, in one fixed order, for the packed ring.
const FIELDS: usize = 10;

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

/// One sample as the ring keeps it: 104 bytes, with no heap allocation. The id is the series';
/// absent counters are a bit in `present`. A `Sample` as the API shows it is about twice the
/// size plus its id string, and at 10,000 objects with full rings the difference is hundreds of
/// megabytes.
#[derive(Debug, Clone, Copy, Default)]
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
            pids: self.get(5),
            io_read_bytes: self.get(6),
            io_write_bytes: self.get(7),
            net_rx_bytes: self.get(8),
            net_tx_bytes: self.get(9),
            host: host.map(|h| Box::new(h.clone())),
        }
    }
}

/// Recent samples of one object, in a bounded ring of packed samples. The collector fills a
/// scratch [`Sample`] ([`Series::begin`]) and packs it in ([`Series::commit`]), so steady-state
/// sampling allocates nothing.
#[derive(Debug)]
pub struct Series {
    pub id: ObjectId,
    pub name: String,
    pub kind: Kind,
    cap: usize,
    ring: VecDeque<Packed>,
    /// Host detail, one per packed sample; only the host series has it.
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
            ring: VecDeque::new(),
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
        if self.ring.len() >= self.cap {
            self.ring.pop_front();
            if let Some(old) = self.host.pop_front() {
                // Recycle the oldest host detail's vectors for the newest.
                if let Some(h) = &self.scratch.host {
                    let mut old = old;
                    old.clone_from(h);
                    self.host.push_back(old);
                }
            }
        }
        self.ring.push_back(Packed::pack(&self.scratch));
        if let Some(h) = &self.scratch.host {
            if self.host.len() < self.ring.len() {
                self.host.push_back((**h).clone());
            }
        }
        self.next_seq += 1;
    }

    fn unpack(&self, i: usize) -> Sample {
        let host = if self.host.len() == self.ring.len() {
            self.host.get(i)
        } else {
            None
        };
        self.ring[i].unpack(&self.id, host)
    }

    pub fn latest(&self) -> Option<Sample> {
        (!self.ring.is_empty()).then(|| self.unpack(self.ring.len() - 1))
    }

    /// Seq of the newest sample, 0 if none.
    pub fn latest_seq(&self) -> u64 {
        self.ring.back().map_or(0, |p| p.seq)
    }

    /// `pids` and time of the newest sample, without unpacking it.
    pub fn latest_pids(&self) -> Option<(Option<u64>, Timestamp)> {
        self.ring.back().map(|p| (p.get(5), Timestamp(p.ts)))
    }

    /// Samples with `seq > after`, oldest first.
    pub fn since(&self, after: u64) -> impl Iterator<Item = Sample> + '_ {
        let start = self.ring.partition_point(|p| p.seq <= after);
        (start..self.ring.len()).map(move |i| self.unpack(i))
    }

    /// The newest `limit` samples (all when `None`), oldest first.
    pub fn recent(&self, limit: Option<usize>) -> Vec<Sample> {
        let n = limit.unwrap_or(self.ring.len()).min(self.ring.len());
        (self.ring.len() - n..self.ring.len())
            .map(|i| self.unpack(i))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
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
}
