//! The audit record of every mutating request: who, what, and the result.
//!
//! The middleware ([`super::guard`]) builds a [`Pending`] record before the request runs and
//! finishes it with the response's status: at once for HTTP, and for gRPC when the status
//! arrives (in the trailers, after the response message). Handlers add the object they acted on
//! through [`AuditNote`]. A client that hangs up before the end is recorded as `cancelled`.
//!
//! Records go to the event log (kind `audit`, so `GET /v1/events` and the SSE/gRPC watch show
//! them) and to the log at info level under the target `nodeagent::audit`.

use super::{Method, Peer};
use crate::core::{AuditRecord, Core};
use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use nodeagent_types::Object;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The gRPC methods that change something; the others only read.
const GRPC_MUTATING: &[&str] = &[
    "/nodeagent.v1.Agent/Create",
    "/nodeagent.v1.Agent/Update",
    "/nodeagent.v1.Agent/Delete",
    "/nodeagent.v1.Agent/PushOn",
    "/nodeagent.v1.Agent/PushOff",
    "/nodeagent.v1.Agent/PushOnce",
];

/// Whether a request is one the audit log records.
pub(crate) fn is_mutating(method: &axum::http::Method, path: &str, grpc: bool) -> bool {
    use axum::http::Method as M;
    if grpc {
        return GRPC_MUTATING.contains(&path);
    }
    matches!(*method, M::POST | M::PUT | M::PATCH | M::DELETE)
}

#[derive(Debug, Default)]
struct Noted {
    key: Option<String>,
    id: Option<String>,
    name: Option<String>,
}

/// Where a handler notes the object a mutating request concerns. Outside an audited request it
/// is a no-op, so handlers need not care.
#[derive(Clone, Debug, Default)]
pub(crate) struct AuditNote(Option<Arc<Mutex<Noted>>>);

impl AuditNote {
    pub(crate) fn new() -> AuditNote {
        AuditNote(Some(Arc::default()))
    }

    pub(crate) fn from_extensions(ext: &axum::http::Extensions) -> AuditNote {
        ext.get::<AuditNote>().cloned().unwrap_or_default()
    }

    fn with(&self, f: impl FnOnce(&mut Noted)) {
        if let Some(n) = &self.0 {
            // A poisoned lock only means another handler panicked mid-note; keep going.
            let mut g = n.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut g);
        }
    }

    /// The object as the client named it (an id or a name, or the name of a spec to create).
    pub(crate) fn key(&self, key: &str) {
        self.with(|n| n.key = Some(crate::request::truncate(key)));
    }

    /// The object the request acted on.
    pub(crate) fn object(&self, o: &Object) {
        self.with(|n| {
            n.id = Some(o.id.clone());
            n.name = Some(o.name.clone());
        });
    }

    /// The id of the object acted on, where only that is known.
    pub(crate) fn id(&self, id: &str) {
        self.with(|n| n.id = Some(id.to_string()));
    }

    fn take(&self) -> Noted {
        let mut out = Noted::default();
        self.with(|n| out = std::mem::take(n));
        out
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditNote {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<AuditNote, Infallible> {
        Ok(AuditNote::from_extensions(&parts.extensions))
    }
}

/// At most this many records a second for requests refused with 401, so that someone without
/// credentials cannot push the real records out of the bounded event log. The rest are counted
/// and the count is added to the next record.
const UNAUTHORIZED_PER_SECOND: u32 = 10;

#[derive(Debug)]
pub(crate) struct Limiter(Mutex<LimiterState>);

#[derive(Debug)]
struct LimiterState {
    window: Instant,
    used: u32,
    suppressed: u64,
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter(Mutex::new(LimiterState {
            window: Instant::now(),
            used: 0,
            suppressed: 0,
        }))
    }
}

impl Limiter {
    /// `Some(records suppressed since the last one)` if a record may be written now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(s.window) >= Duration::from_secs(1) {
            s.window = now;
            s.used = 0;
        }
        if s.used >= UNAUTHORIZED_PER_SECOND {
            s.suppressed += 1;
            return None;
        }
        s.used += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

/// A record waiting for its request's result.
pub(crate) struct Pending {
    core: Arc<dyn Core>,
    who: String,
    data: Map<String, Value>,
    note: AuditNote,
}

impl Pending {
    /// `method` is `None` for a request that failed authentication.
    pub(crate) fn new(
        core: Arc<dyn Core>,
        peer: Option<&Peer>,
        method: Option<Method>,
        req: &Request,
        grpc: bool,
        note: AuditNote,
    ) -> Pending {
        let mut data = Map::new();
        let (who, transport) = match (peer, method) {
            (Some(Peer::Unix { uid, gid, pid }), _) => {
                data.insert("uid".into(), json!(uid));
                data.insert("gid".into(), json!(gid));
                data.insert("pid".into(), json!(pid));
                let who = match uid {
                    Some(u) => format!("uid:{u}"),
                    None => "uid:unknown".to_string(),
                };
                (who, "unix")
            }
            (Some(Peer::Tls { addr, subject }), m) => {
                data.insert("remote".into(), json!(addr.to_string()));
                let who = match (subject, m) {
                    (Some(s), _) => format!("cert:{s}"),
                    (None, Some(Method::Token)) => "token".to_string(),
                    (None, Some(Method::Session)) => "console-session".to_string(),
                    (None, None) => "unauthenticated".to_string(),
                    (None, _) => "anonymous".to_string(),
                };
                (who, "tls")
            }
            (Some(Peer::Tcp { addr }), m) => {
                data.insert("remote".into(), json!(addr.to_string()));
                let who = match m {
                    Some(Method::Token) => "token",
                    Some(Method::Session) => "console-session",
                    None => "unauthenticated",
                    _ => "anonymous",
                };
                (who.to_string(), "tcp")
            }
            (Some(Peer::Bus { identity, subject }), _) => {
                data.insert("subject".into(), json!(subject));
                let who = format!("bus:{}", identity.as_deref().unwrap_or("unnamed"));
                (who, "bus")
            }
            (None, _) => ("local".to_string(), "local"),
        };
        data.insert("who".into(), json!(who));
        data.insert(
            "auth".into(),
            json!(method.map_or("failed", Method::as_str)),
        );
        data.insert("transport".into(), json!(transport));
        data.insert(
            "method".into(),
            json!(if grpc { "gRPC" } else { req.method().as_str() }),
        );
        data.insert(
            "path".into(),
            json!(crate::request::truncate_to(req.uri().path(), 256)),
        );
        Pending {
            core,
            who,
            data,
            note,
        }
    }

    /// Finishes the record of a request refused with 401.
    pub(crate) fn finish_unauthorized(mut self, suppressed: u64) {
        if suppressed > 0 {
            self.data.insert("suppressed".into(), json!(suppressed));
        }
        self.finish(401, None, "unauthorized");
    }

    /// Finishes the record from `resp`: now for HTTP and for a gRPC error answered in the
    /// headers; for a gRPC response with a body, when its trailers arrive.
    pub(crate) fn attach(self, resp: Response) -> Response {
        let status = resp.status().as_u16();
        let grpc_status = |h: &axum::http::HeaderMap| {
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
        };
        let is_grpc = resp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !is_grpc {
            let result = if resp.status().is_success() {
                "ok"
            } else {
                "error"
            };
            self.finish(status, None, result);
            return resp;
        }
        if let Some(code) = grpc_status(resp.headers()) {
            self.finish(status, Some(code), grpc_result(code));
            return resp;
        }
        resp.map(|body| {
            Body::new(AuditBody {
                inner: body,
                pending: Some((self, status)),
            })
        })
    }

    fn finish(mut self, status: u16, grpc_status: Option<i32>, result: &str) {
        let noted = self.note.take();
        self.data.insert("status".into(), json!(status));
        if let Some(c) = grpc_status {
            self.data.insert("grpc_status".into(), json!(c));
        }
        self.data.insert("result".into(), json!(result));
        if let Some(k) = &noted.key {
            self.data.insert("key".into(), json!(k));
        }
        if let Some(id) = &noted.id {
            self.data.insert("id".into(), json!(id));
        }
        if let Some(n) = &noted.name {
            self.data.insert("name".into(), json!(n));
        }
        let method = self
            .data
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("");
        let path = self.data.get("path").and_then(Value::as_str).unwrap_or("");
        let object = noted
            .name
            .as_deref()
            .or(noted.key.as_deref())
            .map(|o| format!(" ({o})"))
            .unwrap_or_default();
        let code = match grpc_status {
            Some(c) => format!("grpc-status {c}"),
            None => status.to_string(),
        };
        let message = format!("{} {method} {path}{object}: {code} {result}", self.who);
        tracing::info!(target: "nodeagent::audit", "{message}");
        let object = match (noted.id, noted.name) {
            (Some(id), Some(name)) => Some((id, name)),
            _ => None,
        };
        self.core.audit(AuditRecord {
            object,
            message,
            data: Value::Object(self.data),
        });
    }
}

fn grpc_result(code: i32) -> &'static str {
    match code {
        0 => "ok",
        1 => "cancelled",
        _ => "error",
    }
}

/// A gRPC response body that finishes its audit record when the status (in the trailers)
/// goes by, or when the body ends or is dropped without one.
struct AuditBody {
    inner: Body,
    pending: Option<(Pending, u16)>,
}

impl HttpBody for AuditBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            let code = match frame {
                Some(Ok(f)) => f.trailers_ref().map(|t| {
                    t.get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(2)
                }),
                Some(Err(_)) => Some(2),
                None => Some(2),
            };
            if let Some(code) = code {
                if let Some((p, status)) = self.pending.take() {
                    p.finish(status, Some(code), grpc_result(code));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditBody {
    fn drop(&mut self) {
        if let Some((p, status)) = self.pending.take() {
            p.finish(status, Some(1), "cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutating_requests() {
        use axum::http::Method as M;
        assert!(is_mutating(&M::POST, "/v1/objects", false));
        assert!(is_mutating(&M::PATCH, "/v1/objects/x", false));
        assert!(is_mutating(&M::DELETE, "/v1/objects/x", false));
        assert!(!is_mutating(&M::GET, "/v1/objects", false));
        assert!(is_mutating(&M::POST, "/nodeagent.v1.Agent/Create", true));
        assert!(!is_mutating(&M::POST, "/nodeagent.v1.Agent/Get", true));
        assert!(!is_mutating(&M::POST, "/nodeagent.v1.Agent/Watch", true));
    }

    #[test]
    fn limiter_counts_what_it_drops() {
        let l = Limiter::default();
        for _ in 0..UNAUTHORIZED_PER_SECOND {
            assert_eq!(l.allow(), Some(0));
        }
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        {
            let mut s = l.0.lock().expect("lock");
            s.window = s
                .window
                .checked_sub(Duration::from_secs(2))
                .expect("uptime over 2 s");
        }
        assert_eq!(l.allow(), Some(2));
        assert_eq!(l.allow(), Some(0));
    }
}
