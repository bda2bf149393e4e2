//! Durable state: write-through of the registry to the store (each object with its kind's
//! opaque handle), and the reconciliation of the stored objects with what runs after a restart
//! (`kill -9`, crash, or SIGTERM alike), which each kind's `recover` tells.

use super::life::{Done, Life};
use super::{Agent, Entry};
use crate::store::{Batch, Record};
use nodeagent_types::{Kind, Object, Status, HOST_ID};
use std::hash::{Hash, Hasher};

/// Event sequence numbers are reserved in the store this many at a time...
const SEQ_BLOCK: u64 = 10_000;
/// ...and a new block once fewer than this are left.
const SEQ_MARGIN: u64 = 1_000;

impl Agent {
    /// Reserves the next block of event sequence numbers in the store, so that events served
    /// before the loop writes them (SSE, `?since=`) never have their numbers reused after a
    /// `kill -9`: the next start continues after the reservation (a clean stop resets it).
    pub(super) fn reserve_seqs(&mut self) -> Result<(), crate::store::StoreError> {
        let upto = self.shared.events.next_seq() - 1 + SEQ_BLOCK;
        self.store.reserve_events(upto)?;
        self.events_reserved = upto;
        Ok(())
    }

    /// Writes what changed since the last call (the objects marked dirty, deletions, new
    /// events and request ids) as one batch on the store's writer thread. `immediate` (or any
    /// object created or deleted, or request id recorded) waits until it is synced to disk.
    pub(super) fn persist(&mut self, immediate: bool) {
        let mut batch = Batch::default();
        let mut new_object = false;
        for id in self.objects.take_dirty() {
            if id == HOST_ID {
                continue;
            }
            let Some(e) = self.objects.get(&id) else {
                if self.persisted.remove(&id).is_some() {
                    batch.delete.push(id);
                }
                continue;
            };
            let handle = self
                .kinds
                .get_mut(e.obj.kind)
                .and_then(|d| d.handle(&e.obj));
            let bytes = Record::encode(&e.obj, handle.as_ref());
            let hash = hash_bytes(&bytes);
            match self.persisted.insert(id.clone(), hash) {
                Some(old) if old == hash => continue,
                Some(_) => {}
                None => new_object = true,
            }
            batch.put.push((id, bytes));
        }
        if self.shared.events.next_seq() + SEQ_MARGIN > self.events_reserved {
            if let Err(e) = self.reserve_seqs() {
                tracing::error!(error = %e, "reserving event sequence numbers");
            }
        }
        batch.events = self.shared.events.since(Some(self.events_persisted));
        batch.requests = std::mem::take(&mut self.pending_requests);
        let new_object = new_object || !batch.requests.is_empty();
        if let Some(last) = batch.events.last() {
            self.events_persisted = last.seq;
        }
        let immediate = immediate || new_object || !batch.delete.is_empty();
        if !immediate {
            if !batch.is_empty() {
                self.writer.submit(batch);
            }
            return;
        }
        // The writer keeps a failed batch and retries it; the error is logged there.
        let _ = self.writer.write_sync(batch);
    }

    /// Takes one stored object back into the registry and asks its kind what runs now.
    pub(super) fn restore(&mut self, obj: Object, handle: Option<serde_json::Value>) {
        if obj.kind == Kind::Host {
            return;
        }
        let id = obj.id.clone();
        let kind = obj.kind;
        self.names.insert(obj.name.clone(), id.clone());
        let mut life = Life::new();
        life.started_once = obj.status != Status::Pending || obj.restarts > 0;
        self.objects.insert(
            id.clone(),
            Entry {
                obj,
                cg: None,
                life,
            },
        );
        let Some(e) = self.objects.get(&id) else {
            return;
        };
        let obj = e.obj.clone();
        let Some(driver) = self.kinds.get_mut(kind) else {
            // A kind this build does not run: the object is kept as it was, for the operator to
            // delete, and says why.
            if let Some(e) = self.objects.get_mut(&id) {
                if e.obj.status.is_live() {
                    e.obj.status = Status::Lost;
                    e.obj.message = Some(format!("kind {kind} is not available on this node"));
                }
            }
            return;
        };
        let step = driver.recover(&obj, handle.as_ref());
        self.step(&id, step, Done::Recovered);
    }
}

/// What [`Agent::persist`] remembers of an object's stored bytes, to skip rewriting it.
pub(super) fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}
