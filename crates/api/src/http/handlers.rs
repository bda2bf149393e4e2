//! One handler per route: parse (query, path, body), call the core once, format the answer.
//! Parsing happens before the core is called, so a bad request never reaches it.

use super::query::Query;
use super::sse;
use crate::auth::audit::AuditNote;
use crate::error::HttpError;
use crate::request;
use crate::Api;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nodeagent_types::{ApiError, ErrorCode};
use serde_json::json;

type HttpResult = Result<Response, HttpError>;

/// The body as read by axum under the router's `DefaultBodyLimit`; a rejection (too large, or the
/// client hung up) becomes a contract-shaped error instead of axum's plain-text one.
type Body = Result<Bytes, BytesRejection>;

fn body_bytes(api: &Api, body: Body) -> Result<Bytes, HttpError> {
    body.map_err(|r| HttpError::from_body_rejection(&r, api.max_body))
}

/// Request bodies are JSON. A missing Content-Type is accepted (hand-written clients often omit
/// it), and so is `application/x-www-form-urlencoded`, which is what `curl -d` sends unless told
/// otherwise: the body must still parse as JSON. Anything else is refused rather than guessed at.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = v
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json"
        || mime == "application/x-www-form-urlencoded"
        || (mime.starts_with("application/") && mime.ends_with("+json"))
    {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::InvalidArgument,
        format!(
            "Content-Type {:?} is not supported: send application/json (with curl: -H 'Content-Type: application/json')",
            request::truncate(&mime)
        ),
    ))
}

/// The `{key}` path segment: an object id or name. It is only ever looked up in the core's
/// maps, never joined to a path.
fn key_of(note: &AuditNote, path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) = path.map_err(|r| ApiError::invalid("key", r.body_text()))?;
    note.key(&key);
    request::validate_key(&key)?;
    Ok(key)
}

fn wait_of(raw: Option<&str>) -> Result<bool, ApiError> {
    Ok(Query::parse(raw, &["wait"])?.bool("wait")?.unwrap_or(false))
}

fn no_query(raw: Option<&str>) -> Result<(), ApiError> {
    Query::parse(raw, &[]).map(|_| ())
}

/// The common front of the routes that act on one object with a JSON body (push-on, push-off,
/// push-once): the key, no query, a JSON content type, and the body under the size cap.
fn object_body(
    api: &Api,
    note: &AuditNote,
    path: Result<Path<String>, PathRejection>,
    raw: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, Bytes), HttpError> {
    let key = key_of(note, path)?;
    no_query(raw)?;
    require_json(headers)?;
    Ok((key, body_bytes(api, body)?))
}

/// Where a created object can be fetched.
fn location(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("/v1/objects/{id}")).ok()
}

/// `POST /v1/objects`: 202 with the id once accepted, or with `?wait=true` 201 with the object
/// once it runs.
pub async fn create(
    State(api): State<Api>,
    note: AuditNote,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let q = Query::parse(raw.as_deref(), &["wait", "request_id"])?;
    let wait = q.bool("wait")?.unwrap_or(false);
    let request_id = q.str("request_id").map(str::to_string);
    if let Some(r) = &request_id {
        if r.is_empty() || r.len() > 128 || r.chars().any(|c| c.is_control()) {
            return Err(ApiError::invalid(
                "request_id",
                "request_id must be 1 to 128 printable characters",
            )
            .into());
        }
    }
    require_json(&headers)?;
    let spec = request::parse_spec(&body_bytes(&api, body)?)?;
    note.key(&spec.name);
    let created = api.core.create_with(spec, wait, request_id).await?;
    note.object(&created.object);
    let mut resp = if wait {
        (StatusCode::CREATED, Json(&created.object)).into_response()
    } else {
        let accepted =
            json!({"id": created.id, "event_id": created.event_id, "status": "accepted"});
        (StatusCode::ACCEPTED, Json(accepted)).into_response()
    };
    if let Some(loc) = location(&created.id) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// `GET /v1/objects`.
pub async fn list(State(api): State<Api>, RawQuery(raw): RawQuery) -> HttpResult {
    no_query(raw.as_deref())?;
    let objects = api.core.list().await?;
    Ok(Json(json!({ "objects": objects })).into_response())
}

/// `GET /v1/objects/{key}`.
pub async fn get(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> HttpResult {
    let key = key_of(&AuditNote::default(), path)?;
    no_query(raw.as_deref())?;
    Ok(Json(api.core.get(&key).await?).into_response())
}

/// `PATCH /v1/objects/{key}`: 200 with the updated object. The core applies a change in place
/// (a cgroupfs write), so answering after it is as fast as answering before.
pub async fn update(
    State(api): State<Api>,
    note: AuditNote,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let key = key_of(&note, path)?;
    let wait = wait_of(raw.as_deref())?;
    require_json(&headers)?;
    let patch = request::parse_patch(&body_bytes(&api, body)?)?;
    let o = api.core.update(&key, patch, wait).await?;
    note.object(&o);
    Ok(Json(o).into_response())
}

/// `DELETE /v1/objects/{key}`: 200 with the object as deleted.
pub async fn delete(
    State(api): State<Api>,
    note: AuditNote,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> HttpResult {
    let key = key_of(&note, path)?;
    let q = Query::parse(raw.as_deref(), &["wait", "remove"])?;
    let opts = nodeagent_core::DeleteOptions {
        wait: q.bool("wait")?.unwrap_or(false),
        // An adopted container is released (left running) unless this asks to remove it.
        remove: q.bool("remove")?.unwrap_or(false),
    };
    let o = api.core.delete_with(&key, opts).await?;
    note.object(&o);
    Ok(Json(o).into_response())
}

/// `POST /v1/objects/{key}/push-on`.
pub async fn push_on(
    State(api): State<Api>,
    note: AuditNote,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let (key, bytes) = object_body(&api, &note, path, raw.as_deref(), &headers, body)?;
    let b = request::parse_push_on(&bytes)?;
    let ack = api.core.push_on(&key, &b.sink, b.interval, b.mode).await?;
    note.id(&ack.id);
    Ok(Json(ack).into_response())
}

/// `POST /v1/objects/{key}/push-off`.
pub async fn push_off(
    State(api): State<Api>,
    note: AuditNote,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let (key, bytes) = object_body(&api, &note, path, raw.as_deref(), &headers, body)?;
    let b = request::parse_sink_body(&bytes)?;
    let ack = api.core.push_off(&key, &b.sink).await?;
    note.id(&ack.id);
    Ok(Json(ack).into_response())
}

/// `POST /v1/objects/{key}/push-once`.
pub async fn push_once(
    State(api): State<Api>,
    note: AuditNote,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> HttpResult {
    let (key, bytes) = object_body(&api, &note, path, raw.as_deref(), &headers, body)?;
    let b = request::parse_sink_body(&bytes)?;
    let ack = api.core.push_once(&key, &b.sink).await?;
    note.id(&ack.id);
    Ok(Json(ack).into_response())
}

/// `GET /v1/objects/{key}/metrics[?limit=N]`: recent samples, oldest first.
pub async fn metrics(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> HttpResult {
    let key = key_of(&AuditNote::default(), path)?;
    let limit = Query::parse(raw.as_deref(), &["limit"])?
        .u64("limit")?
        .map(request::parse_limit)
        .transpose()?;
    let samples = api.core.metrics(&key, limit).await?;
    Ok(Json(json!({ "samples": samples })).into_response())
}

/// `GET /v1/host`.
pub async fn host(State(api): State<Api>, RawQuery(raw): RawQuery) -> HttpResult {
    no_query(raw.as_deref())?;
    Ok(Json(api.core.host().await?).into_response())
}

/// `GET /v1/sinks`: every sink's queue depth, spool size and delivery counters.
pub async fn sinks(State(api): State<Api>, RawQuery(raw): RawQuery) -> HttpResult {
    no_query(raw.as_deref())?;
    Ok(Json(json!({ "sinks": api.core.sinks() })).into_response())
}

/// Whether the client asked for a live stream rather than a JSON document.
fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// `GET /v1/events[?since=SEQ]`: the log as JSON, or with `Accept: text/event-stream` the log
/// followed by live events.
pub async fn events(
    State(api): State<Api>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> HttpResult {
    let since = Query::parse(raw.as_deref(), &["since"])?.u64("since")?;
    if wants_event_stream(&headers) {
        return Ok(sse::stream(&api, since));
    }
    Ok(Json(json!({ "events": api.core.events(since) })).into_response())
}

/// `GET /metrics`: Prometheus text exposition format 0.0.4.
///
/// The core's text (samples, sinks) plus the objects' status, restart and exit-code families,
/// from the object list (one round trip to the core's loop). Should the list fail (the core is
/// stopping), the rest is served without them.
pub async fn prometheus(State(api): State<Api>) -> Response {
    let mut text = api.core.prometheus_text();
    if let Ok(objects) = api.core.list().await {
        nodeagent_engine::prometheus::render_objects(&objects, &mut text);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// `GET /healthz`: the process is up and serving; nothing else is checked.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 once start-up has finished and until shutdown begins, else 503.
pub async fn readyz(State(api): State<Api>) -> Response {
    if api.core.ready() {
        "ok".into_response()
    } else {
        HttpError::from(ApiError::unavailable(
            "the agent is starting up or shutting down",
        ))
        .into_response()
    }
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        super::OPENAPI_JSON,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn content_type_must_be_json_or_absent() {
        assert!(require_json(&headers(&[])).is_ok());
        assert!(require_json(&headers(&[(header::CONTENT_TYPE, "application/json")])).is_ok());
        assert!(require_json(&headers(&[(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8"
        )]))
        .is_ok());
        assert!(require_json(&headers(&[(
            header::CONTENT_TYPE,
            "application/merge-patch+json"
        )]))
        .is_ok());
        // curl -d's default type: accepted, the body must still be JSON.
        assert!(require_json(&headers(&[(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )]))
        .is_ok());
        let e = require_json(&headers(&[(header::CONTENT_TYPE, "text/plain")])).expect_err("text");
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn event_stream_is_negotiated() {
        assert!(wants_event_stream(&headers(&[(
            header::ACCEPT,
            "text/event-stream"
        )])));
        assert!(wants_event_stream(&headers(&[(
            header::ACCEPT,
            "application/json, Text/Event-Stream;q=0.9"
        )])));
        assert!(!wants_event_stream(&headers(&[(
            header::ACCEPT,
            "application/json"
        )])));
        assert!(!wants_event_stream(&headers(&[])));
    }
}
