//! Live sample streams as Server-Sent Events (issue 19):
//!
//! - `GET /v1/objects/{key}/metrics/stream`: one `sample` event per sample of one object, at
//!   the object's own collect interval (`id` is the sample's seq, `data` its JSON). `?since=SEQ`
//!   first replays what the ring still holds after SEQ; without it the stream starts with the
//!   newest sample. `?every=DURATION` decimates: at most one event (the newest sample) per
//!   DURATION, for a chart that cannot use 100 points a second. When the object is deleted a
//!   `gone` event ends the stream.
//! - `GET /v1/metrics/stream`: every `?every=` (default 1s, 10ms to 1h) one `samples` event,
//!   `{"samples": [...], "gone": [ids]}`, with the newest sample of each object (the host
//!   included) that has a new one since the last event, and the ids no longer sampled.
//!
//! Each stream polls the core's sample rings from its own task (see [`crate::samples`]); the
//! collector does no extra work, so nobody listening costs nothing, and a listener costs one
//! timer and, per tick, a lock and a copy of what is new. A stream ends when the client hangs up
//! (its future is dropped with the connection) or the server shuts down.

use super::query::Query;
use crate::error::HttpError;
use crate::samples::Rings;
use crate::{request, Api};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use nodeagent_types::{ApiError, Sample};
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Fastest poll and decimation interval: the agent's fastest sampling.
const MIN_EVERY: Duration = Duration::from_millis(10);
const MAX_EVERY: Duration = Duration::from_secs(3600);
/// Default of `/v1/metrics/stream`'s `every`.
const DEFAULT_EVERY: Duration = Duration::from_secs(1);
/// Most samples one poll of an object stream sends (a `since` far back, or a slow client).
const MAX_BATCH: usize = 2048;

fn rings(api: &Api) -> Result<Arc<dyn Rings>, ApiError> {
    api.rings
        .clone()
        .ok_or_else(|| ApiError::unavailable("this server does not stream samples"))
}

fn every_of(q: &Query) -> Result<Option<Duration>, ApiError> {
    let Some(raw) = q.str("every") else {
        return Ok(None);
    };
    let d = nodeagent_types::parse_duration(raw).map_err(|e| ApiError::invalid("every", e))?;
    if !(MIN_EVERY..=MAX_EVERY).contains(&d) {
        return Err(ApiError::invalid(
            "every",
            format!("every {raw} is out of range: give 10ms to 1h"),
        ));
    }
    Ok(Some(d))
}

fn sample_event(s: &Sample) -> SseEvent {
    let data = serde_json::to_string(s).unwrap_or_else(|e| {
        json!({"id": s.id, "seq": s.seq, "error": format!("sample could not be encoded: {e}")})
            .to_string()
    });
    SseEvent::default()
        .id(s.seq.to_string())
        .event("sample")
        .data(data)
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    // A stream that fell behind catches up by reading more at once, not by ticking faster.
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// `GET /v1/objects/{key}/metrics/stream`.
pub async fn object(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, HttpError> {
    let Path(key) = path.map_err(|r| ApiError::invalid("key", r.body_text()))?;
    request::validate_key(&key)?;
    let q = Query::parse(raw.as_deref(), &["since", "every"])?;
    let since = q.u64("since")?;
    let every = every_of(&q)?;
    let rings = rings(&api)?;
    // One call through the core, to resolve the key and learn the interval; the polls that
    // follow read the rings only.
    let obj = api.core.get(&key).await?;
    let interval = obj.spec.collect.interval.as_std().max(MIN_EVERY);
    let period = every.map_or(interval, |e| e.max(interval));
    struct St {
        rings: Arc<dyn Rings>,
        id: String,
        last: u64,
        /// Before the first poll: replay from `since`, or only the newest.
        first: bool,
        decimate: bool,
        tick: tokio::time::Interval,
        stop: crate::events::Stop,
        done: bool,
    }
    let st = St {
        rings,
        id: obj.id,
        last: since.unwrap_or(0),
        first: since.is_none(),
        decimate: every.is_some(),
        tick: ticker(period),
        stop: api.stop.clone(),
        done: false,
    };
    let events = futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let mut stop = st.stop.clone();
            tokio::select! {
                _ = st.tick.tick() => {}
                () = stop.stopped() => return None,
            }
            let max = if st.first || st.decimate {
                1
            } else {
                MAX_BATCH
            };
            st.first = false;
            match st.rings.samples_since(&st.id, st.last, max) {
                None => {
                    st.done = true;
                    let gone = SseEvent::default()
                        .event("gone")
                        .data(json!({"id": st.id}).to_string());
                    return Some((vec![gone], st));
                }
                Some(samples) if samples.is_empty() => continue,
                Some(samples) => {
                    if let Some(s) = samples.last() {
                        st.last = s.seq;
                    }
                    return Some((samples.iter().map(sample_event).collect::<Vec<_>>(), st));
                }
            }
        }
    })
    .flat_map(|batch| futures::stream::iter(batch.into_iter().map(Ok::<_, Infallible>)));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /v1/metrics/stream`.
pub async fn all(State(api): State<Api>, RawQuery(raw): RawQuery) -> Result<Response, HttpError> {
    let q = Query::parse(raw.as_deref(), &["every"])?;
    let every = every_of(&q)?.unwrap_or(DEFAULT_EVERY);
    let rings = rings(&api)?;
    struct St {
        rings: Arc<dyn Rings>,
        seen: HashMap<String, u64>,
        tick: tokio::time::Interval,
        stop: crate::events::Stop,
    }
    let st = St {
        rings,
        seen: HashMap::new(),
        tick: ticker(every),
        stop: api.stop.clone(),
    };
    let events = futures::stream::unfold(st, |mut st| async move {
        loop {
            let mut stop = st.stop.clone();
            tokio::select! {
                _ = st.tick.tick() => {}
                () = stop.stopped() => return None,
            }
            let (samples, gone) = st.rings.latest_changed(&mut st.seen);
            if samples.is_empty() && gone.is_empty() {
                continue;
            }
            let data = json!({"samples": samples, "gone": gone}).to_string();
            let ev = SseEvent::default().event("samples").data(data);
            return Some((Ok::<_, Infallible>(ev), st));
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
