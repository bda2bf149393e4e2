//! `GET /v1/events` with `Accept: text/event-stream`: Server-Sent Events, one per agent event,
//! with `id` the event's sequence number (so a client can resume with `?since=`), `event` its
//! kind and `data` its JSON.

use crate::events::feed;
use crate::Api;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use nodeagent_types::Event;
use std::convert::Infallible;

/// The live stream; it ends when the server shuts down. Keep-alive comments stop idle proxies
/// from closing a quiet stream.
pub fn stream(api: &Api, since: Option<u64>) -> Response {
    let events =
        feed(api.core.clone(), since, api.stop.clone()).map(|e| Ok::<_, Infallible>(to_sse(&e)));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn to_sse(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_else(|err| {
        serde_json::json!({"seq": e.seq, "error": format!("event could not be encoded: {err}")})
            .to_string()
    });
    SseEvent::default()
        .id(e.seq.to_string())
        .event(e.kind.as_str())
        .data(data)
}
