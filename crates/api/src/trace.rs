//! Request tracing (issue 5): one root span per request, `http.request` or `grpc.request`.
//!
//! The span is plain `tracing`; whether it goes anywhere is the binary's choice (an OpenTelemetry
//! layer exporting over OTLP, or nothing). This module only uses the OpenTelemetry *API* for W3C
//! trace-context propagation:
//!
//! - an incoming `traceparent` header (or gRPC metadata) makes the request's span a child of the
//!   caller's span, so the agent's spans join the caller's trace;
//! - the response carries `traceparent` (this request's span) and `x-trace-id`.
//!
//! With tracing off the span is disabled (the binary enables no layer that wants it), the global
//! propagator is the no-op one, and neither header is added.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The response header that names the request's trace id (32 hex digits).
pub const TRACE_ID_HEADER: &str = "x-trace-id";

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The outermost layer: opens the request's span, runs the rest of the stack (authentication,
/// routing, the handler) inside it, and records the status. Only the method, the route and
/// the status are recorded; never a header (the bearer token is one) nor a body.
pub async fn layer(req: Request, next: Next) -> Response {
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let span = if grpc {
        tracing::info_span!(
            target: "nodeagent::api",
            "grpc.request",
            otel.name = %req.uri().path(),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %req.uri().path(),
            http.response.status_code = tracing::field::Empty,
        )
    } else {
        tracing::info_span!(
            target: "nodeagent::api",
            "http.request",
            otel.name = tracing::field::Empty,
            otel.kind = "server",
            http.request.method = %req.method(),
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        )
    };
    if span.is_disabled() {
        return next.run(req).await;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let mut res = next.run(req).instrument(span.clone()).await;
    span.record(
        "http.response.status_code",
        i64::from(res.status().as_u16()),
    );
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(res.headers_mut()));
        });
        if let Ok(v) = HeaderValue::from_str(&sc.trace_id().to_string()) {
            res.headers_mut().insert(TRACE_ID_HEADER, v);
        }
    }
    res
}

/// Inside routing: names the HTTP span after its route (`POST /v1/objects`), not the path, so
/// object ids do not make every span name unique.
pub async fn route(req: Request, next: Next) -> Response {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return next.run(req).await;
    }
    if let Some(path) = req.extensions().get::<MatchedPath>() {
        span.record("http.route", path.as_str());
        span.record(
            "otel.name",
            tracing::field::display(format_args!("{} {}", req.method(), path.as_str())),
        );
    }
    next.run(req).await
}
