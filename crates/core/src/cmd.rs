//! What front ends ask of the core, as messages to its loop (Firecracker's "action" enum).

use crate::answer::{Created, HostInfo, PushAck};
use nodeagent_types::{ApiError, Duration, Object, ObjectPatch, ObjectSpec};
use tokio::sync::oneshot;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

pub(crate) enum Cmd {
    Create {
        spec: Box<ObjectSpec>,
        wait: bool,
        /// Client-chosen idempotency key.
        request_id: Option<String>,
        reply: Reply<Created>,
    },
    Get {
        key: String,
        reply: Reply<Object>,
    },
    List {
        reply: Reply<Vec<Object>>,
    },
    Update {
        key: String,
        patch: Box<ObjectPatch>,
        reply: Reply<Object>,
    },
    Delete {
        key: String,
        wait: bool,
        /// For an adopted container: stop and remove it rather than release it.
        remove: bool,
        reply: Reply<Object>,
    },
    PushOn {
        key: String,
        sink: String,
        interval: Option<Duration>,
        /// The report mode asked for; the sink's own when `None`.
        mode: Option<nodeagent_types::ReportMode>,
        reply: Reply<PushAck>,
    },
    PushOff {
        key: String,
        sink: String,
        reply: Reply<PushAck>,
    },
    PushOnce {
        key: String,
        sink: String,
        reply: Reply<(String, oneshot::Receiver<Result<u64, String>>)>,
    },
    Host {
        reply: Reply<HostInfo>,
    },
    /// A command sent from inside a span (the API request's, when tracing is on): the loop
    /// handles it inside that span, so the core's spans join the request's trace.
    Traced {
        cmd: Box<Cmd>,
        span: tracing::Span,
    },
}

impl Cmd {
    /// Whether the command may change what the store keeps (objects, requests, events).
    pub(crate) fn writes(&self) -> bool {
        match self {
            Cmd::Get { .. } | Cmd::List { .. } | Cmd::Host { .. } => false,
            Cmd::Traced { cmd, .. } => cmd.writes(),
            _ => true,
        }
    }
}
