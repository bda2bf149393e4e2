//! A stand-in for the core, for the API crate's tests only.
//!
//! The real core needs cgroups, drivers and a running event loop; the API layer's job is only to
//! parse, call and format, so its tests drive it against this fake, which answers from memory and
//! records which operations reached it (to prove that a bad request never does). It is NOT an
//! implementation of the agent and nothing outside these tests uses it.

#![allow(dead_code)]

use futures::future::BoxFuture;
use nodeagent_api::{AuditRecord, Core};
use nodeagent_core::{Created, HostInfo, PushAck};
use nodeagent_types::{
    ApiError, Duration, Event, EventKind, Object, ObjectPatch, ObjectSpec, Sample, Status,
    Timestamp,
};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

pub const ID: &str = "0123456789abcdef";
pub const NAME: &str = "web-1";

pub struct FakeCore {
    calls: Mutex<Vec<&'static str>>,
    audits: Mutex<Vec<AuditRecord>>,
    log: Mutex<Vec<Event>>,
    tx: broadcast::Sender<Event>,
    ready: AtomicBool,
}

impl FakeCore {
    pub fn new() -> Arc<FakeCore> {
        let (tx, _) = broadcast::channel(16);
        Arc::new(FakeCore {
            calls: Mutex::new(Vec::new()),
            audits: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            tx,
            ready: AtomicBool::new(true),
        })
    }

    /// The operations that reached the core, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().expect("lock").clone()
    }

    /// The audit records written, in order.
    pub fn audits(&self) -> Vec<AuditRecord> {
        self.audits.lock().expect("lock").clone()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Appends an event to the log and broadcasts it, as the core does.
    pub fn emit(&self, seq: u64, kind: EventKind) {
        let e = event(seq, kind);
        self.log.lock().expect("lock").push(e.clone());
        let _ = self.tx.send(e);
    }

    fn record(&self, op: &'static str) {
        self.calls.lock().expect("lock").push(op);
    }
}

pub fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        ts: Timestamp(1_700_000_000_000_000_000 + seq),
        kind,
        object_id: Some(ID.to_string()),
        name: Some(NAME.to_string()),
        message: format!("event {seq}"),
        data: json!({ "n": seq }),
    }
}

pub fn spec() -> ObjectSpec {
    ObjectSpec::from_json(
        br#"{"name":"web-1","kind":"process","process":{"command":["/bin/sleep","300"]},
            "resources":{"memory":"64Mi"}}"#,
    )
    .expect("valid spec")
}

/// Built through serde so that fields the types crate adds later (with defaults) do not break
/// these tests.
pub fn object(spec: &ObjectSpec, status: Status) -> Object {
    serde_json::from_value(json!({
        "id": ID, "name": spec.name, "kind": spec.kind, "status": status, "spec": spec,
        "pid": 4242, "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
    }))
    .expect("object")
}

fn known(key: &str) -> Result<(), ApiError> {
    if key == ID || key == NAME {
        Ok(())
    } else {
        Err(ApiError::not_found(key))
    }
}

impl Core for FakeCore {
    fn create(&self, spec: ObjectSpec, wait: bool) -> BoxFuture<'_, Result<Created, ApiError>> {
        self.record("create");
        Box::pin(async move {
            if spec.name == "taken" {
                return Err(
                    ApiError::new(nodeagent_types::ErrorCode::AlreadyExists, "name taken")
                        .with_field("name"),
                );
            }
            let status = if wait {
                Status::Running
            } else {
                Status::Pending
            };
            Ok(Created {
                id: ID.to_string(),
                event_id: 7,
                object: object(&spec, status),
            })
        })
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Object, ApiError>> {
        self.record("get");
        Box::pin(async move {
            known(key)?;
            Ok(object(&spec(), Status::Running))
        })
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<Object>, ApiError>> {
        self.record("list");
        Box::pin(async move { Ok(vec![object(&spec(), Status::Running)]) })
    }
    fn update<'a>(
        &'a self,
        key: &'a str,
        patch: ObjectPatch,
        _wait: bool,
    ) -> BoxFuture<'a, Result<Object, ApiError>> {
        self.record("update");
        Box::pin(async move {
            known(key)?;
            let mut s = spec();
            if let Some(r) = &patch.resources {
                s.resources.merge(r);
            }
            let mut o = object(&s, Status::Running);
            o.paused = patch.paused.unwrap_or(false);
            Ok(o)
        })
    }
    fn delete<'a>(&'a self, key: &'a str, _wait: bool) -> BoxFuture<'a, Result<Object, ApiError>> {
        self.record("delete");
        Box::pin(async move {
            known(key)?;
            Ok(object(&spec(), Status::Deleted))
        })
    }
    fn push_on<'a>(
        &'a self,
        key: &'a str,
        sink: &'a str,
        interval: Option<Duration>,
        mode: Option<nodeagent_types::ReportMode>,
    ) -> BoxFuture<'a, Result<PushAck, ApiError>> {
        self.record("push_on");
        Box::pin(async move {
            known(key)?;
            Ok(PushAck {
                id: ID.into(),
                sink: sink.into(),
                interval,
                status: "on".into(),
                sample_seq: None,
                mode,
            })
        })
    }
    fn push_off<'a>(
        &'a self,
        key: &'a str,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<PushAck, ApiError>> {
        self.record("push_off");
        Box::pin(async move {
            known(key)?;
            Ok(PushAck {
                id: ID.into(),
                sink: sink.into(),
                interval: None,
                status: "off".into(),
                sample_seq: None,
                mode: None,
            })
        })
    }
    fn push_once<'a>(
        &'a self,
        key: &'a str,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<PushAck, ApiError>> {
        self.record("push_once");
        Box::pin(async move {
            known(key)?;
            Ok(PushAck {
                id: ID.into(),
                sink: sink.into(),
                interval: None,
                status: "sent".into(),
                sample_seq: Some(3),
                mode: None,
            })
        })
    }
    fn metrics<'a>(
        &'a self,
        key: &'a str,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<Sample>, ApiError>> {
        self.record("metrics");
        Box::pin(async move {
            known(key)?;
            let all: Vec<Sample> = (1..=5)
                .map(|seq| Sample {
                    id: ID.into(),
                    ts: Timestamp(seq),
                    seq,
                    memory_bytes: Some(1000 * seq),
                    ..Sample::default()
                })
                .collect();
            let n = limit.unwrap_or(all.len()).min(all.len());
            Ok(all[all.len() - n..].to_vec())
        })
    }
    fn host(&self) -> BoxFuture<'_, Result<HostInfo, ApiError>> {
        self.record("host");
        Box::pin(async move { Err(ApiError::unavailable("no host in the fake")) })
    }
    fn events(&self, since: Option<u64>) -> Vec<Event> {
        self.log
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| since.is_none_or(|s| e.seq > s))
            .cloned()
            .collect()
    }
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
    fn prometheus_text(&self) -> String {
        "nodeagent_up 1\n".to_string()
    }
    fn sinks(&self) -> Vec<nodeagent_core::SinkStatus> {
        self.record("sinks");
        vec![serde_json::from_value(json!({
            "name": "file", "type": "file", "mode": "latest", "queue_depth": 0, "queue_capacity": 1024,
            "spool_bytes": 0, "spool_records": 0, "sent": 5, "acked": 5, "retried": 0,
            "dropped": 0, "errors": 0,
        }))
        .expect("sink status")]
    }
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    fn audit(&self, record: AuditRecord) {
        self.audits.lock().expect("lock").push(record);
    }
}
