//! Per-object sample history: a bounded ring, shared between the collector (writer) and the API
//! (readers).

use nodeagent_types::{Kind, ObjectId, Sample};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

/// Recent samples of one object. When full, the oldest sample's allocation is reused for the
/// newest, so steady-state sampling does not allocate.
#[derive(Debug)]
pub struct Series {
    pub id: ObjectId,
    pub name: String,
    pub kind: Kind,
    cap: usize,
    ring: VecDeque<Sample>,
    next_seq: u64,
}

impl Series {
    pub fn new(id: ObjectId, name: String, kind: Kind, cap: usize) -> Series {
        let cap = cap.max(1);
        Series {
            id,
            name,
            kind,
            cap,
            ring: VecDeque::with_capacity(cap),
            next_seq: 1,
        }
    }

    /// Hands out the slot for the next sample (the oldest one, recycled, once the ring is full),
    /// with `id` and `seq` set and every counter cleared. The caller fills it in place.
    pub fn next_slot(&mut self) -> &mut Sample {
        let mut s = if self.ring.len() >= self.cap {
            self.ring.pop_front().unwrap_or_default()
        } else {
            Sample::default()
        };
        if s.id != self.id {
            s.id.clone_from(&self.id);
        }
        let host = s.host.take();
        s = Sample {
            id: std::mem::take(&mut s.id),
            seq: self.next_seq,
            host,
            ..Sample::default()
        };
        self.next_seq += 1;
        self.ring.push_back(s);
        let last = self.ring.len() - 1;
        &mut self.ring[last]
    }

    /// Drops the slot handed out last (its read failed), giving its sequence number back.
    pub fn discard_last(&mut self) {
        if self.ring.pop_back().is_some() {
            self.next_seq -= 1;
        }
    }

    pub fn latest(&self) -> Option<&Sample> {
        self.ring.back()
    }

    /// Samples with `seq > after`, oldest first.
    pub fn since(&self, after: u64) -> impl Iterator<Item = &Sample> {
        self.ring.iter().filter(move |s| s.seq > after)
    }

    /// The newest `limit` samples (all when `None`), oldest first.
    pub fn recent(&self, limit: Option<usize>) -> Vec<Sample> {
        let n = limit.unwrap_or(self.ring.len()).min(self.ring.len());
        self.ring
            .iter()
            .skip(self.ring.len() - n)
            .cloned()
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
            s.next_slot().pids = Some(i);
        }
        let r = s.recent(None);
        assert_eq!(r.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(r[2].pids, Some(4));
        assert!(r.iter().all(|x| x.id == "a"));
        assert_eq!(s.recent(Some(1)).len(), 1);
        assert_eq!(s.since(4).count(), 1);
        s.discard_last();
        assert_eq!(s.next_slot().seq, 5);
    }
}
