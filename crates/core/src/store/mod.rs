//! The durable state store: one redb file, `<state-dir>/state.redb`.
//!
//! It keeps what the agent must know again after a restart: every object (spec, status, pid and
//! the pid's start time, container id, push subscriptions, exit info), the create requests seen
//! (`request_id` → object id), and the event log with its sequence number. Samples are not kept
//! here: sinks and their spools own those.
//!
//! redb commits are copy-on-write with a checksummed commit slot, so a crash (or `kill -9`) in
//! the middle of a write leaves the previous commit intact. A file redb cannot open is an error
//! that names the file; the agent never resets the store by itself.

use nodeagent_types::{Event, Object};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub mod writer;
pub use writer::Writer;

const OBJECTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("objects");
const REQUESTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("requests");
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// The file name of the store in the state dir.
pub const FILE: &str = "state.redb";
const SCHEMA_VERSION: u64 = 1;
/// redb's page cache. Its default is up to 1 GiB, filled with every page read or written, so
/// with 10,000 objects (~10 MB of records) the cache alone held most of the file in the agent's
/// RSS. The store is read at start and written a few pages per turn; the page cache of the
/// kernel serves the rest.
const CACHE_BYTES: usize = 2 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state store {path} cannot be opened: {message}. The agent does not reset it: \
         move the file aside to start with an empty state (the workloads it recorded will no \
         longer be managed), or restore it from a backup"
    )]
    Open { path: PathBuf, message: String },
    /// The file is fine but another process holds redb's lock on it: almost always another
    /// agent on the same state dir. Moving the file aside would lose every workload that agent
    /// manages, so this error must never give that advice (issue 21).
    #[error(
        "the state store {path} is in use by another process (redb's lock is held): another \
         nodeagent is most likely running on this state dir. Stop it first, or give this one \
         another --state-dir. The store itself is not damaged: do not move it aside"
    )]
    Locked { path: PathBuf },
    #[error("the state store {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(
        "the state store {path} has schema version {found}; this agent knows version \
         {SCHEMA_VERSION}"
    )]
    Schema { path: PathBuf, found: u64 },
}

/// What the store keeps of one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub object: Object,
    /// What the object's kind needs after a restart (its opaque handle, see
    /// `KindDriver::handle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<serde_json::Value>,
    /// Written before kinds had handles: the start time of a process's pid. Read into the
    /// handle (`{"pid_start": ..}`), never written.
    #[serde(default, skip_serializing)]
    pub pid_start: Option<u64>,
}

/// The stored form of a [`Record`], built from borrowed parts so that the loop encodes an
/// object without cloning it.
#[derive(Serialize)]
struct RecordRef<'a> {
    object: &'a Object,
    #[serde(skip_serializing_if = "Option::is_none")]
    handle: Option<&'a serde_json::Value>,
}

impl Record {
    /// The bytes the store keeps for an object.
    pub fn encode(object: &Object, handle: Option<&serde_json::Value>) -> Vec<u8> {
        // Serializing plain data to a Vec cannot fail; an empty value would be refused by load.
        serde_json::to_vec(&RecordRef { object, handle }).unwrap_or_default()
    }

    /// The handle, with one written before handles existed taken from its old field.
    pub fn take_handle(&mut self) -> Option<serde_json::Value> {
        self.handle.take().or_else(|| {
            self.pid_start
                .map(|st| serde_json::json!({"pid_start": st}))
        })
    }
}

/// A create request seen before: the object it made, and the spec it carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub object_id: String,
    pub spec: serde_json::Value,
}

/// What [`Store::load`] finds.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<Record>,
    pub events: Vec<Event>,
    /// The last event sequence number ever used.
    pub last_seq: u64,
}

/// One batch of changes, written in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Object id → its [`Record::encode`]d bytes.
    pub put: Vec<(String, Vec<u8>)>,
    pub delete: Vec<String>,
    pub requests: Vec<(String, RequestRecord)>,
    pub events: Vec<Event>,
}

impl Batch {
    /// Adds a record.
    pub fn put_record(&mut self, r: &Record) {
        self.put.push((
            r.object.id.clone(),
            Record::encode(&r.object, r.handle.as_ref()),
        ));
    }

    /// Folds a later batch into this one, as if both were written in order: a later put or
    /// delete of the same id replaces the earlier one.
    pub fn absorb(&mut self, later: Batch) {
        for (id, v) in later.put {
            self.delete.retain(|d| *d != id);
            match self.put.iter_mut().find(|(k, _)| *k == id) {
                Some(slot) => slot.1 = v,
                None => self.put.push((id, v)),
            }
        }
        for id in later.delete {
            self.put.retain(|(k, _)| *k != id);
            if !self.delete.contains(&id) {
                self.delete.push(id);
            }
        }
        self.requests.extend(later.requests);
        self.events.extend(later.events);
    }

    pub fn is_empty(&self) -> bool {
        self.put.is_empty()
            && self.delete.is_empty()
            && self.requests.is_empty()
            && self.events.is_empty()
    }
}

pub struct Store {
    db: Database,
    path: PathBuf,
    /// Events kept on disk; the oldest are trimmed past it.
    event_cap: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. Corruption or an unreadable file is an error
    /// naming the file, never a reset.
    pub fn open(dir: &Path, event_cap: usize) -> Result<Store, StoreError> {
        let path = dir.join(FILE);
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.clone(),
            message: e.to_string(),
        };
        let locked_or = |e: redb::DatabaseError| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
            e => open_err(&e),
        };
        let db = if path.exists() {
            // Refuse to "repair" anything silently: redb's repair rebuilds allocator state only,
            // but a file that is not a redb file at all must stop start-up.
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .set_repair_callback(|_| {})
                .open(&path)
                .map_err(locked_or)?
        } else {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .map_err(locked_or)?
        };
        let s = Store {
            db,
            path: path.clone(),
            event_cap: event_cap.max(1),
        };
        // Create the tables and check the schema version.
        let tx = s.db.begin_write().map_err(|e| open_err(&e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| open_err(&e))?;
            let found = meta
                .get("schema")
                .map_err(|e| open_err(&e))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema", SCHEMA_VERSION)
                        .map_err(|e| open_err(&e))?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => return Err(StoreError::Schema { path, found }),
            }
            tx.open_table(OBJECTS).map_err(|e| open_err(&e))?;
            tx.open_table(REQUESTS).map_err(|e| open_err(&e))?;
            tx.open_table(EVENTS).map_err(|e| open_err(&e))?;
        }
        tx.commit().map_err(|e| open_err(&e))?;
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Everything the store holds. A record that does not decode is an error naming its key.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let mut out = Loaded::default();
        let objects = tx.open_table(OBJECTS).map_err(|e| self.io(e))?;
        for row in objects.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            let rec: Record = serde_json::from_slice(v.value()).map_err(|e| StoreError::Open {
                path: self.path.clone(),
                message: format!("object {:?} does not decode: {e}", k.value()),
            })?;
            out.records.push(rec);
        }
        let events = tx.open_table(EVENTS).map_err(|e| self.io(e))?;
        for row in events.iter().map_err(|e| self.io(e))? {
            let (_, v) = row.map_err(|e| self.io(e))?;
            if let Ok(ev) = serde_json::from_slice::<Event>(v.value()) {
                out.events.push(ev);
            }
        }
        let meta = tx.open_table(META).map_err(|e| self.io(e))?;
        let get = |k: &str| -> Result<u64, StoreError> {
            Ok(meta
                .get(k)
                .map_err(|e| self.io(e))?
                .map_or(0, |v| v.value()))
        };
        out.last_seq = get("event_seq")?.max(get("event_reserved")?);
        if let Some(last) = out.events.last() {
            out.last_seq = out.last_seq.max(last.seq);
        }
        Ok(out)
    }

    /// Records that event sequence numbers up to `upto` may be in use (synced): the next start
    /// numbers after it. A clean stop writes the last number actually used.
    pub fn reserve_events(&self, upto: u64) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.io(e))?;
        tx.set_durability(Durability::Immediate);
        {
            let mut meta = tx.open_table(META).map_err(|e| self.io(e))?;
            meta.insert("event_reserved", upto)
                .map_err(|e| self.io(e))?;
        }
        tx.commit().map_err(|e| self.io(e))
    }

    /// The request recorded under `request_id`, if any.
    pub fn request(&self, request_id: &str) -> Result<Option<RequestRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let t = tx.open_table(REQUESTS).map_err(|e| self.io(e))?;
        let v = t.get(request_id).map_err(|e| self.io(e))?;
        Ok(v.and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// Writes a batch in one transaction. `immediate`: fsync before returning (creates and
    /// deletes); otherwise the commit is durable once a later immediate commit is made, and a
    /// crash loses at most the unsynced commits, never the file.
    pub fn write(&self, batch: &Batch, immediate: bool) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().map_err(|e| self.io(e))?;
        tx.set_durability(if immediate {
            Durability::Immediate
        } else {
            Durability::Eventual
        });
        {
            let mut objects = tx.open_table(OBJECTS).map_err(|e| self.io(e))?;
            for (id, v) in &batch.put {
                objects
                    .insert(id.as_str(), v.as_slice())
                    .map_err(|e| self.io(e))?;
            }
            for id in &batch.delete {
                objects.remove(id.as_str()).map_err(|e| self.io(e))?;
            }
            let mut requests = tx.open_table(REQUESTS).map_err(|e| self.io(e))?;
            for (rid, r) in &batch.requests {
                let v = serde_json::to_vec(r).map_err(|e| self.io(e))?;
                requests
                    .insert(rid.as_str(), v.as_slice())
                    .map_err(|e| self.io(e))?;
            }
            if !batch.events.is_empty() {
                let mut events = tx.open_table(EVENTS).map_err(|e| self.io(e))?;
                let mut last = 0;
                for ev in &batch.events {
                    let v = serde_json::to_vec(ev).map_err(|e| self.io(e))?;
                    events
                        .insert(ev.seq, v.as_slice())
                        .map_err(|e| self.io(e))?;
                    last = last.max(ev.seq);
                }
                let len = events.len().map_err(|e| self.io(e))? as usize;
                if len > self.event_cap {
                    let excess = len - self.event_cap;
                    let old: Vec<u64> = events
                        .iter()
                        .map_err(|e| self.io(e))?
                        .take(excess)
                        .filter_map(|r| r.ok().map(|(k, _)| k.value()))
                        .collect();
                    for k in old {
                        events.remove(k).map_err(|e| self.io(e))?;
                    }
                }
                let mut meta = tx.open_table(META).map_err(|e| self.io(e))?;
                let prev = meta
                    .get("event_seq")
                    .map_err(|e| self.io(e))?
                    .map_or(0, |v| v.value());
                meta.insert("event_seq", prev.max(last))
                    .map_err(|e| self.io(e))?;
            }
        }
        tx.commit().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nodeagent_types::{EventKind, Kind, ObjectSpec, Status, Timestamp};

    fn obj(id: &str) -> Object {
        let spec: ObjectSpec = serde_json::from_value(serde_json::json!({
            "name": id, "kind": "process", "process": {"command": ["/bin/true"]}
        }))
        .unwrap();
        assert_eq!(spec.kind, Kind::Process);
        Object::new(id.into(), spec, Status::Running)
    }

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            ts: Timestamp::now(),
            kind: EventKind::Created,
            object_id: None,
            name: None,
            message: String::new(),
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), 3).unwrap();
            let mut batch = Batch {
                requests: vec![(
                    "r1".into(),
                    RequestRecord {
                        object_id: "a".into(),
                        spec: serde_json::json!({}),
                    },
                )],
                events: (1..=5).map(ev).collect(),
                ..Default::default()
            };
            batch.put_record(&Record {
                object: obj("a"),
                handle: Some(serde_json::json!({"pid_start": 42})),
                pid_start: None,
            });
            batch.put_record(&Record {
                object: obj("b"),
                handle: None,
                pid_start: None,
            });
            s.write(&batch, true).unwrap();
            s.write(
                &Batch {
                    delete: vec!["b".into()],
                    ..Default::default()
                },
                false,
            )
            .unwrap();
        }
        let s = Store::open(dir.path(), 3).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.records.len(), 1);
        assert_eq!(l.records[0].object.id, "a");
        assert_eq!(
            l.records[0].handle,
            Some(serde_json::json!({"pid_start": 42}))
        );
        // A record written before handles existed keeps its pid's start time.
        let mut old: Record = serde_json::from_str(&format!(
            r#"{{"object":{},"pid_start":7}}"#,
            serde_json::to_string(&obj("c")).unwrap()
        ))
        .unwrap();
        assert_eq!(old.take_handle(), Some(serde_json::json!({"pid_start": 7})));
        // Bounded: only the newest 3 events stay, but the sequence number is remembered.
        assert_eq!(
            l.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(l.last_seq, 5);
        assert_eq!(s.request("r1").unwrap().unwrap().object_id, "a");
        assert!(s.request("r2").unwrap().is_none());
        // A reservation (taken while running) wins over the last event written...
        s.reserve_events(10_005).unwrap();
        assert_eq!(s.load().unwrap().last_seq, 10_005);
        // ...until a clean stop resets it.
        s.reserve_events(5).unwrap();
        assert_eq!(s.load().unwrap().last_seq, 5);
    }

    #[test]
    fn garbage_is_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
        let err = Store::open(dir.path(), 10).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("does not reset"), "{err}");
        // The file is left as it was.
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5au8; 8192]);
    }

    #[test]
    fn a_store_in_use_is_not_called_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), 10).unwrap();
        let err = Store::open(dir.path(), 10).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("another nodeagent"), "{msg}");
        assert!(msg.contains("Stop it first"), "{msg}");
        assert!(!msg.contains("move the file aside"), "{msg}");
    }

    /// Commit latency, printed for the notes (`cargo test -p nodeagent-core commit_latency --
    /// --nocapture`); the bound only catches a pathological regression.
    #[test]
    fn commit_latency() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 1000).unwrap();
        for immediate in [true, false] {
            let n = 50;
            let t = std::time::Instant::now();
            for i in 0..n {
                let mut o = obj("a");
                o.restarts = i;
                let mut b = Batch::default();
                b.put_record(&Record {
                    object: o,
                    handle: None,
                    pid_start: None,
                });
                s.write(&b, immediate).unwrap();
            }
            let per = t.elapsed() / n;
            eprintln!("store commit (immediate={immediate}): {per:?} each");
            assert!(per < std::time::Duration::from_secs(1));
        }
    }
}
