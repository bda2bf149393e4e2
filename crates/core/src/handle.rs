//! The handle front ends use to reach the core.

use crate::answer::{Created, DeleteOptions, HostInfo, PushAck};
use crate::cmd::Cmd;
use nodeagent_engine::{EventLog, SeriesMap};
use nodeagent_types::{ApiError, Duration, Event, Object, ObjectPatch, ObjectSpec, Sample};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};

/// State read without going through the loop.
pub(crate) struct Shared {
    pub series: SeriesMap,
    pub events: Arc<EventLog>,
    pub ready: AtomicBool,
    /// Checked on every create by the kind's rules, before anything else (see
    /// [`crate::policy`]).
    pub policy: Arc<crate::policy::Policy>,
    /// Every sink (built-in and configured), by name, for `/v1/sinks` and `/metrics`.
    pub sinks: Vec<Arc<nodeagent_engine::sinks::SinkHandle>>,
}

/// A cheap, cloneable handle to the running core.
#[derive(Clone)]
pub struct AgentHandle {
    pub(crate) tx: mpsc::Sender<Cmd>,
    pub(crate) shared: Arc<Shared>,
}

fn gone() -> ApiError {
    ApiError::unavailable("the agent is shutting down")
}

impl AgentHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ApiError>>) -> Cmd,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let mut cmd = make(tx);
        // The request's span crosses the channel with the command (only when tracing is on:
        // otherwise the current span is disabled and nothing is allocated).
        let span = tracing::Span::current();
        if !span.is_disabled() {
            cmd = Cmd::Traced {
                cmd: Box::new(cmd),
                span,
            };
        }
        self.tx.send(cmd).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Creates an object. With `wait`, answers once it is running (or with the error that
    /// failed it); without, once it is accepted. Validation errors come back either way.
    pub async fn create(&self, spec: ObjectSpec, wait: bool) -> Result<Created, ApiError> {
        self.create_with(spec, wait, None).await
    }

    /// [`AgentHandle::create`] with a client-chosen `request_id`: the same request again
    /// answers with the object the first one made (never a second object); another spec under
    /// the same id is a conflict (409).
    pub async fn create_with(
        &self,
        spec: ObjectSpec,
        wait: bool,
        request_id: Option<String>,
    ) -> Result<Created, ApiError> {
        spec.validate()?;
        let spec = Box::new(spec);
        self.call(|reply| Cmd::Create {
            spec,
            wait,
            request_id,
            reply,
        })
        .await
    }
    /// Looks an object up by id or name (`host` is the host).
    pub async fn get(&self, key: &str) -> Result<Object, ApiError> {
        let key = key.to_string();
        self.call(|reply| Cmd::Get { key, reply }).await
    }
    pub async fn list(&self) -> Result<Vec<Object>, ApiError> {
        self.call(|reply| Cmd::List { reply }).await
    }
    /// In-place update. The change is in the cgroup files when this returns: the fast path is
    /// a direct cgroupfs write, so there is nothing more to wait for (`?wait=true` of the HTTP
    /// API is accepted and means the same). An outside system's own copy of the limits (Docker's)
    /// follows off the request path; the object's sync state tells when.
    pub async fn update(&self, key: &str, patch: ObjectPatch) -> Result<Object, ApiError> {
        patch.validate()?;
        let key = key.to_string();
        let patch = Box::new(patch);
        self.call(|reply| Cmd::Update { key, patch, reply }).await
    }
    /// Deletes. With `wait`, answers once the workload and its cgroup are gone.
    pub async fn delete(&self, key: &str, wait: bool) -> Result<Object, ApiError> {
        self.delete_with(
            key,
            DeleteOptions {
                wait,
                remove: false,
            },
        )
        .await
    }
    /// Deletes, with every option (see [`DeleteOptions`]).
    pub async fn delete_with(&self, key: &str, opts: DeleteOptions) -> Result<Object, ApiError> {
        let key = key.to_string();
        let DeleteOptions { wait, remove } = opts;
        self.call(|reply| Cmd::Delete {
            key,
            wait,
            remove,
            reply,
        })
        .await
    }
    /// Starts a report task of the object to `sink`, every `interval`, in `mode` (the
    /// sink's own when `None`: `latest` for file and stdout, `batch` for grpc and nats).
    pub async fn push_on(
        &self,
        key: &str,
        sink: &str,
        interval: Option<Duration>,
        mode: Option<nodeagent_types::ReportMode>,
    ) -> Result<PushAck, ApiError> {
        let (key, sink) = (key.to_string(), sink.to_string());
        self.call(|reply| Cmd::PushOn {
            key,
            sink,
            interval,
            mode,
            reply,
        })
        .await
    }
    pub async fn push_off(&self, key: &str, sink: &str) -> Result<PushAck, ApiError> {
        let (key, sink) = (key.to_string(), sink.to_string());
        self.call(|reply| Cmd::PushOff { key, sink, reply }).await
    }
    /// Sends the latest sample to `sink`; answers once the sink has written it.
    pub async fn push_once(&self, key: &str, sink: &str) -> Result<PushAck, ApiError> {
        let (key, sink) = (key.to_string(), sink.to_string());
        let (id, rx) = self
            .call(|reply| Cmd::PushOnce {
                key,
                sink: sink.clone(),
                reply,
            })
            .await?;
        let seq = rx
            .await
            .map_err(|_| gone())?
            .map_err(ApiError::unavailable)?;
        Ok(PushAck {
            id,
            sink,
            interval: None,
            status: "sent".into(),
            sample_seq: Some(seq),
            mode: None,
        })
    }
    /// Recent samples, oldest first; at most `limit` of the newest when given.
    pub async fn metrics(&self, key: &str, limit: Option<usize>) -> Result<Vec<Sample>, ApiError> {
        let obj = self.get(key).await?;
        Ok(self
            .shared
            .series
            .get(&obj.id)
            .map(|s| nodeagent_engine::series::lock(&s).recent(limit))
            .unwrap_or_default())
    }
    pub async fn host(&self) -> Result<HostInfo, ApiError> {
        self.call(|reply| Cmd::Host { reply }).await
    }
    /// The event log from `since` (exclusive), oldest first.
    pub fn events(&self, since: Option<u64>) -> Vec<Event> {
        self.shared.events.since(since)
    }
    /// Live events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }
    /// Prometheus text exposition of every latest sample.
    pub fn prometheus_text(&self) -> String {
        let mut text = nodeagent_engine::prometheus::render(&self.shared.series);
        nodeagent_engine::prometheus::render_sinks(&self.sinks(), &mut text);
        text
    }
    /// Every sink's queue, spool and delivery counters (`GET /v1/sinks`), by name.
    pub fn sinks(&self) -> Vec<nodeagent_engine::sinks::SinkStatus> {
        self.shared.sinks.iter().map(|s| s.status()).collect()
    }
    /// Appends an audit record (an [`EventKind::Audit`] event) to the event log: who made a
    /// mutating API request, what it was, and its result. Returns the event's sequence number.
    pub fn audit(
        &self,
        object: Option<(&str, &str)>,
        message: impl Into<String>,
        data: serde_json::Value,
    ) -> u64 {
        self.shared
            .events
            .emit(nodeagent_types::EventKind::Audit, object, message, data)
    }
    /// True once start-up has finished and until shutdown begins.
    pub fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }
}
