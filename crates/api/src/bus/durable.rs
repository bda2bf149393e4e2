//! Durable commands: a sender publishes to `<prefix>.durable.<node>.<op>` through JetStream
//! (stream [`COMMANDS_STREAM`]), so a command sent while the node is down waits there. The node
//! reads its subjects with a durable pull consumer, one command at a time and in order, and for
//! each:
//! 1. looks up its result under `<node>.<id>` in [`RESULTS_BUCKET`]: a command whose result is
//!    stored was applied already (its ack was lost), and is only acknowledged again;
//! 2. applies it through the [`Dispatcher`] (a create gets `request_id = bus-<id>` unless it
//!    has one, so even a create applied but not yet recorded when the agent died is not made
//!    twice: the agent's store keeps request ids across restarts);
//! 3. stores the result, and only then acknowledges the message.
//!
//! So a command is applied exactly once in effect, whatever fails in between.

use super::registry::ensure_kv;
use super::wire::{
    self, DurableResult, Op, QueryValue, Request, COMMANDS_STREAM, COMMAND_ID_HEADER,
    RESULTS_BUCKET,
};
use super::{BusSettings, Dispatcher, DEFAULT_DURABLE_MAX_AGE};
use async_nats::jetstream::{self, consumer, kv, stream, AckKind};
use futures::StreamExt as _;
use nodeagent_types::ApiError;
use std::time::Duration;
use tokio::sync::watch;

/// A redelivery waits this long when a result could not be stored.
const RETRY: Duration = Duration::from_secs(1);

/// The commands stream's config: the same from every node and sender.
pub(crate) fn stream_config(prefix: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: COMMANDS_STREAM.to_string(),
        subjects: vec![format!("{prefix}.durable.>")],
        max_age: DEFAULT_DURABLE_MAX_AGE,
        duplicate_window: Duration::from_secs(120),
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    prefix: &str,
    replicas: usize,
) -> Result<stream::Stream, String> {
    if let Ok(s) = js.get_stream(COMMANDS_STREAM).await {
        return Ok(s);
    }
    js.get_or_create_stream(stream_config(prefix, replicas))
        .await
        .map_err(|e| format!("stream {COMMANDS_STREAM}: {e}"))
}

pub(crate) async fn ensure_results(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, String> {
    ensure_kv(js, RESULTS_BUCKET, DEFAULT_DURABLE_MAX_AGE, replicas).await
}

/// The consumer's durable name for a node.
pub(crate) fn consumer_name(node: &str) -> String {
    format!("nodeagent_{node}")
}

pub(super) async fn run(
    client: async_nats::Client,
    s: BusSettings,
    d: Dispatcher,
    mut stop: watch::Receiver<bool>,
) {
    let js = s.auth.jetstream(client);
    let mut delay = Duration::from_millis(200);
    loop {
        let began = tokio::time::Instant::now();
        let r = tokio::select! {
            r = consume(&js, &s, &d) => r,
            _ = stop.changed() => return,
        };
        // A consumer that ran a while failed afresh: retry soon, not after the last backoff.
        if began.elapsed() > Duration::from_secs(10) {
            delay = Duration::from_millis(200);
        }
        if let Err(e) = r {
            tracing::warn!(node = %s.node, error = %e, "bus: durable commands paused; retrying in {delay:?}");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Reads and applies commands until the consumer's stream fails.
async fn consume(js: &jetstream::Context, s: &BusSettings, d: &Dispatcher) -> Result<(), String> {
    let stream = ensure_stream(js, &s.prefix, s.replicas).await?;
    let results = ensure_results(js, s.replicas).await?;
    let name = consumer_name(&s.node);
    let c: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: format!("{}.durable.{}.>", s.prefix, s.node),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                // One at a time, in the order sent: a later command may depend on an earlier one
                // (create, then update).
                max_ack_pending: 1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {name}: {e}"))?;
    // Short pulls with heartbeats: after the consumer's leader moved (a server of the cluster
    // went away), a pull still parked on the old leader would hold delivery up to its expiry
    // (30 s by default); a missed heartbeat ends the stream, and `run` makes a new one.
    let mut msgs = c
        .stream()
        .max_messages_per_batch(1)
        .expires(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(1))
        .messages()
        .await
        .map_err(|e| format!("consumer {name}: {e}"))?;
    tracing::info!(node = %s.node, consumer = %name, "bus: consuming durable commands");
    while let Some(m) = msgs.next().await {
        let m = m.map_err(|e| format!("consumer {name}: {e}"))?;
        apply(&results, s, d, &m).await;
    }
    Err(format!("consumer {name}: the message stream ended"))
}

async fn apply(results: &kv::Store, s: &BusSettings, d: &Dispatcher, m: &jetstream::Message) {
    let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
    let id = m
        .headers
        .as_ref()
        .and_then(|h| h.get(COMMAND_ID_HEADER))
        .map(|v| v.as_str().to_string())
        .filter(|v| wire::valid_command_id(v))
        .unwrap_or_else(|| format!("seq-{seq}"));
    let key = wire::result_key(&s.node, &id);
    match results.get(&key).await {
        Ok(Some(_)) => {
            let _ = m.ack().await;
            return;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(error = %e, "bus: result lookup failed; retrying the command");
            let _ = m.ack_with(AckKind::Nak(Some(RETRY))).await;
            return;
        }
    }
    let op = wire::op_of(&m.subject);
    let identity = m
        .headers
        .as_ref()
        .and_then(|h| h.get(wire::IDENTITY_HEADER))
        .map(|v| {
            v.as_str()
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect::<String>()
        });
    let reply = match (op, Request::from_json(&m.payload)) {
        (None, _) => wire::Reply::error(
            &s.node,
            &ApiError::invalid("subject", format!("{} names no operation", m.subject)),
        ),
        (Some(op), _) if !op.mutating() => wire::Reply::error(
            &s.node,
            &ApiError::invalid(
                "subject",
                format!("{op} is not a command: only create, update, delete and push may be sent durable"),
            ),
        ),
        (Some(_), Err(e)) => wire::Reply::error(&s.node, &e),
        (Some(op), Ok(mut r)) => {
            if op == Op::Create {
                r.query
                    .entry("request_id".into())
                    .or_insert_with(|| QueryValue::Text(format!("bus-{id}")));
            }
            d.dispatch(op, &r, identity.as_deref(), &m.subject).await
        }
    };
    let result = DurableResult {
        id: id.clone(),
        node: s.node.clone(),
        op: op.map_or("?", Op::as_str).to_string(),
        status: reply.status,
        body: reply.body,
        applied_ms: wire::now_ms(),
    };
    let bytes = serde_json::to_vec(&result).unwrap_or_default();
    if let Err(e) = results.put(&key, bytes.into()).await {
        // Not acknowledged: it comes back, finds no result, and is applied again, which the
        // request id (create) or the operation itself (update, delete) makes harmless.
        tracing::warn!(error = %e, command = %id, "bus: durable result not stored; the command will be redelivered");
        let _ = m.ack_with(AckKind::Nak(Some(RETRY))).await;
        return;
    }
    if let Err(e) = m.double_ack().await {
        tracing::debug!(error = %e, command = %id, "bus: ack not confirmed; a redelivery will find the result");
    }
}
