//! Reads a `nats` sink's JetStream stream back and prints, per node, how many records it holds,
//! the first and last seq, and the gaps: what `bench/fleet.py` checks after killing a server.
//!
//!     cargo run --release --example jetstream_seqs -- nats://127.0.0.1:4222 [STREAM] [DOMAIN]
//!
//! Prints one JSON object: `{"<node>": {"records", "distinct", "first", "last", "gaps"}}`, where
//! `gaps` is the number of seqs between first and last that are missing.

use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};
use tokio_stream::StreamExt as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let stream = args.next().unwrap_or_else(|| "NODEAGENT".into());
    let domain = args.next();
    let client = async_nats::connect(url.as_str()).await?;
    let js = match &domain {
        Some(d) => async_nats::jetstream::with_domain(client, d),
        None => async_nats::jetstream::new(client),
    };
    let s = js.get_stream(&stream).await?;
    // An ephemeral ordered read of the whole stream, in big batches.
    let consumer: async_nats::jetstream::consumer::PullConsumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let total = s.cached_info().state.messages;
    let mut seen: BTreeMap<String, (u64, BTreeSet<u64>)> = BTreeMap::new();
    let mut read = 0u64;
    let mut msgs = consumer.messages().await?;
    while read < total {
        let Some(m) = msgs.next().await else { break };
        let m = m?;
        read += 1;
        let batch = nodeagent_engine::upstream::proto::Batch::decode(m.payload.as_ref())?;
        let e = seen.entry(batch.node.clone()).or_default();
        for r in &batch.records {
            e.0 += 1;
            e.1.insert(r.seq);
        }
    }
    let mut out = serde_json::Map::new();
    for (node, (records, seqs)) in seen {
        let first = seqs.first().copied().unwrap_or(0);
        let last = seqs.last().copied().unwrap_or(0);
        let gaps = (last + 1 - first).saturating_sub(seqs.len() as u64);
        out.insert(
            node,
            serde_json::json!({"records": records, "distinct": seqs.len(), "first": first, "last": last, "gaps": gaps}),
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
