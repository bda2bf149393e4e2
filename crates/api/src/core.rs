//! The narrow view of the core that the front ends need.
//!
//! The front ends are written against this trait rather than against [`AgentHandle`] directly so
//! that their parsing, formatting and error paths can be tested without a running core (whose
//! handle has no public constructor): tests give the router a stand-in that implements [`Core`].
//! In the daemon the only implementation is [`AgentHandle`]'s, which forwards every call.

use futures::future::BoxFuture;
use nodeagent_core::{AgentHandle, Created, HostInfo, PushAck, SinkStatus};
use nodeagent_types::{ApiError, Duration, Event, Object, ObjectPatch, ObjectSpec, Sample};
use serde_json::Value;
use tokio::sync::broadcast;

/// What the audit middleware (`auth::audit`) hands to [`Core::audit`]. It is defined here,
/// beside the trait that takes it, so that this module depends on no front end.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// The object acted on, where the request got as far as finding or creating it.
    pub object: Option<(String, String)>,
    /// One line: who, what, result.
    pub message: String,
    /// `who`, `auth`, `transport`, `method`, `path`, `status`, and where known `grpc_status`,
    /// `key` (the id or name as the client gave it), `id`, `name`, `remote`, `uid`, `pid`.
    pub data: Value,
}

/// What the API layer asks of the core. Every method mirrors the [`AgentHandle`] method of the
/// same name; see there for what each does. The futures are boxed so that the router can hold an
/// `Arc<dyn Core>` and stay one concrete type.
pub trait Core: Send + Sync + 'static {
    fn create(&self, spec: ObjectSpec, wait: bool) -> BoxFuture<'_, Result<Created, ApiError>>;
    /// A create with a client-chosen `request_id` (idempotent). The default is for stand-in
    /// cores, which ignore it.
    fn create_with(
        &self,
        spec: ObjectSpec,
        wait: bool,
        request_id: Option<String>,
    ) -> BoxFuture<'_, Result<Created, ApiError>> {
        let _ = request_id;
        self.create(spec, wait)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Object, ApiError>>;
    fn list(&self) -> BoxFuture<'_, Result<Vec<Object>, ApiError>>;
    fn update<'a>(
        &'a self,
        key: &'a str,
        patch: ObjectPatch,
        wait: bool,
    ) -> BoxFuture<'a, Result<Object, ApiError>>;
    fn delete<'a>(&'a self, key: &'a str, wait: bool) -> BoxFuture<'a, Result<Object, ApiError>>;
    /// A delete with every option (`?remove=true` for an adopted container). The default is for
    /// stand-in cores, which know no options beyond `wait`.
    fn delete_with<'a>(
        &'a self,
        key: &'a str,
        opts: nodeagent_core::DeleteOptions,
    ) -> BoxFuture<'a, Result<Object, ApiError>> {
        if opts.remove {
            return Box::pin(async {
                Err(ApiError::invalid(
                    "remove",
                    "this core does not remove adopted containers",
                ))
            });
        }
        self.delete(key, opts.wait)
    }
    fn push_on<'a>(
        &'a self,
        key: &'a str,
        sink: &'a str,
        interval: Option<Duration>,
        mode: Option<nodeagent_types::ReportMode>,
    ) -> BoxFuture<'a, Result<PushAck, ApiError>>;
    fn push_off<'a>(
        &'a self,
        key: &'a str,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<PushAck, ApiError>>;
    fn push_once<'a>(
        &'a self,
        key: &'a str,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<PushAck, ApiError>>;
    fn metrics<'a>(
        &'a self,
        key: &'a str,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<Sample>, ApiError>>;
    fn host(&self) -> BoxFuture<'_, Result<HostInfo, ApiError>>;
    fn events(&self, since: Option<u64>) -> Vec<Event>;
    fn subscribe(&self) -> broadcast::Receiver<Event>;
    fn prometheus_text(&self) -> String;
    /// Every sink's queue, spool and delivery counters (`GET /v1/sinks`).
    fn sinks(&self) -> Vec<SinkStatus>;
    fn ready(&self) -> bool;
    /// Records who made a mutating request, what it was and its result (an `audit` event).
    fn audit(&self, record: AuditRecord);
}

impl Core for AgentHandle {
    fn create(&self, spec: ObjectSpec, wait: bool) -> BoxFuture<'_, Result<Created, ApiError>> {
        Box::pin(AgentHandle::create(self, spec, wait))
    }
    fn create_with(
        &self,
        spec: ObjectSpec,
        wait: bool,
        request_id: Option<String>,
    ) -> BoxFuture<'_, Result<Created, ApiError>> {
        Box::pin(AgentHandle::create_with(self, spec, wait, request_id))
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Object, ApiError>> {
        Box::pin(AgentHandle::get(self, key))
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<Object>, ApiError>> {
        Box::pin(AgentHandle::list(self))
    }
    fn update<'a>(
        &'a self,
        key: &'a str,
        patch: ObjectPatch,
        // The change is in the cgroup when the core answers, so `wait` changes nothing here
        // (see `AgentHandle::update`).
        _wait: bool,
    ) -> BoxFuture<'a, Result<Object, ApiError>> {
        Box::pin(AgentHandle::update(self, key, patch))
    }
    fn delete<'a>(&'a self, key: &'a str, wait: bool) -> BoxFuture<'a, Result<Object, ApiError>> {
        Box::pin(AgentHandle::delete(self, key, wait))
    }
    fn delete_with<'a>(
        &'a self,
        key: &'a str,
        opts: nodeagent_core::DeleteOptions,
    ) -> BoxFuture<'a, Result<Object, ApiError>> {
        Box::pin(AgentHandle::delete_with(self, key, opts))
    }
    fn push_on<'a>(
        &'a self,
        key: &'a str,
        sink: &'a str,
        interval: Option<Duration>,
        mode: Option<nodeagent_types::ReportMode>,
    ) -> BoxFuture<'a, Result<PushAck, ApiError>> {
        Box::pin(AgentHandle::push_on(self, key, sink, interval, mode))
    }
    fn push_off<'a>(
        &'a self,
        key: &'a str,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<PushAck, ApiError>> {
        Box::pin(AgentHandle::push_off(self, key, sink))
    }
    fn push_once<'a>(
        &'a self,
        key: &'a str,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<PushAck, ApiError>> {
        Box::pin(AgentHandle::push_once(self, key, sink))
    }
    fn metrics<'a>(
        &'a self,
        key: &'a str,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<Sample>, ApiError>> {
        Box::pin(AgentHandle::metrics(self, key, limit))
    }
    fn host(&self) -> BoxFuture<'_, Result<HostInfo, ApiError>> {
        Box::pin(AgentHandle::host(self))
    }
    fn events(&self, since: Option<u64>) -> Vec<Event> {
        AgentHandle::events(self, since)
    }
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        AgentHandle::subscribe(self)
    }
    fn prometheus_text(&self) -> String {
        AgentHandle::prometheus_text(self)
    }
    fn sinks(&self) -> Vec<SinkStatus> {
        AgentHandle::sinks(self)
    }
    fn ready(&self) -> bool {
        AgentHandle::ready(self)
    }
    fn audit(&self, record: AuditRecord) {
        let object = record
            .object
            .as_ref()
            .map(|(id, name)| (id.as_str(), name.as_str()));
        AgentHandle::audit(self, object, record.message, record.data);
    }
}
