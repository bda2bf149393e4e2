//! The node registry: each agent keeps its [`NodeRecord`] in the key-value bucket
//! [`REGISTRY_BUCKET`] fresh, once per heartbeat. A reader tells a node that stopped
//! heartbeating as `stale` (three missed) and then `gone` (ten missed); one that shut down
//! cleanly says `stopped`. Entries expire from the bucket after a day.
//!
//! A failed put (the server is away) is retried on the next heartbeat; the bucket is looked up
//! again after a failure, so a cluster that lost and re-created it is found again.

use super::wire::{self, NodeRecord, REGISTRY_BUCKET};
use super::BusSettings;
use crate::core::Core;
use async_nats::jetstream::{self, kv};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const REGISTRY_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The bucket, created when missing (with the same config by every node, so that two nodes
/// creating it at once both succeed).
pub(crate) async fn ensure_kv(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, String> {
    if let Ok(s) = js.get_key_value(bucket).await {
        return Ok(s);
    }
    // The bucket's stream, as async-nats's `create_key_value` would make it. That call first
    // asks for the account's info, whose answer from a 2.9 server (Debian's) lacks fields the
    // client requires; the stream itself is the same on every server version.
    let cfg = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(cfg)
        .await
        .map_err(|e| format!("key-value bucket {bucket}: {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| format!("key-value bucket {bucket}: {e}"))
}

pub(crate) async fn ensure_registry(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, String> {
    ensure_kv(js, REGISTRY_BUCKET, REGISTRY_MAX_AGE, replicas).await
}

pub(super) async fn run(
    client: async_nats::Client,
    s: BusSettings,
    core: Arc<dyn Core>,
    mut stop: watch::Receiver<bool>,
) {
    let js = s.auth.jetstream(client);
    let started_ms = wire::now_ms();
    let mut store: Option<kv::Store> = None;
    let mut failing = false;
    let mut tick = tokio::time::interval(s.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        // The count goes through the core's loop and a put waits for the server's answer (up
        // to the client's request timeout): the stop must wait behind neither.
        let beat = async {
            let objects = workloads(core.as_ref()).await;
            put(&js, &mut store, &s, started_ms, objects, "up").await
        };
        let r = tokio::select! {
            r = beat => r,
            _ = stop.changed() => break,
        };
        match r {
            Ok(()) => {
                if failing {
                    tracing::info!(node = %s.node, "bus: registered again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(node = %s.node, error = %e, "bus: registry entry not refreshed; retrying each heartbeat");
                }
                failing = true;
                store = None;
            }
        }
    }
    // A bounded last word: the agent is stopping and must not wait on an absent server.
    let last = async {
        let objects = workloads(core.as_ref()).await;
        put(&js, &mut store, &s, started_ms, objects, "stopped").await
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), last).await;
}

/// The node's objects, not counting the host.
async fn workloads(core: &dyn Core) -> usize {
    core.list().await.map_or(0, |o| {
        o.iter()
            .filter(|o| o.kind != nodeagent_types::Kind::Host)
            .count()
    })
}

async fn put(
    js: &jetstream::Context,
    store: &mut Option<kv::Store>,
    s: &BusSettings,
    started_ms: u64,
    objects: usize,
    state: &str,
) -> Result<(), String> {
    if store.is_none() {
        *store = Some(ensure_registry(js, s.replicas).await?);
    }
    let Some(kv) = store.as_ref() else {
        return Err("no bucket".into());
    };
    let rec = NodeRecord {
        node: s.node.clone(),
        labels: s.labels.clone(),
        version: s.version.clone(),
        addresses: s.addresses.clone(),
        heartbeat_ms: wire::now_ms(),
        heartbeat_interval_ms: s.heartbeat.as_millis() as u64,
        objects,
        started_ms,
        state: state.to_string(),
    };
    let bytes = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
    kv.put(&s.node, bytes.into())
        .await
        .map(|_| ())
        .map_err(|e| format!("put {}: {e}", s.node))
}
