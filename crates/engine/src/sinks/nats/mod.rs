//! `nats`: publishes batches to NATS JetStream, with publish acknowledgements.
//!
//! Subjects are `<prefix>.<node>.metrics` for samples and `<prefix>.<node>.events` for events
//! (prefix `nodeagent` by default; `.`, `*`, `>` and spaces in the node name become `_`). Each
//! message is one `nodeagent.upstream.v1.Batch` (protobuf, the gRPC upstream's message), holding
//! consecutive records of one kind, with headers
//! - `Nats-Msg-Id: <node>:<first seq>-<last seq>`, so JetStream drops a batch published twice
//!   within its duplicate window. The last seq is part of the id because a retried batch may be
//!   cut differently: with the first seq alone, a longer retry would be taken for a duplicate
//!   of a shorter first attempt and the records it added would be lost.
//! - `Nodeagent-Node`, `Nodeagent-First-Seq`, `Nodeagent-Last-Seq`, and `Content-Type`.
//!
//! The stream (`NODEAGENT` by default, subjects `<prefix>.>`) is created if it does not exist.
//! Up to [`WINDOW`](super::net::WINDOW) publishes wait for their acks at once; acks advance
//! the spool's cursor in order. A failed or overdue ack makes the sender start again from the
//! cursor. The client reconnects by itself when the server goes away.

use super::net::{sleep_until, Backoff, Net};
use super::{SinkConfig, DEFAULT_NATS_STREAM, DEFAULT_SUBJECT_PREFIX};
use crate::upstream::subject_token;
use crate::upstream::wire::BodyKind;
use async_nats::jetstream;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

type AckFuture = Pin<Box<dyn Future<Output = (u64, Result<(), String>)> + Send>>;

pub(crate) struct NatsSender {
    net: Net,
    url: String,
    stream: String,
    prefix: String,
    domain: Option<String>,
}

impl NatsSender {
    pub(crate) fn new(cfg: &SinkConfig, net: Net) -> Result<NatsSender, String> {
        let url = cfg.url.clone().ok_or_else(|| "url: missing".to_string())?;
        Ok(NatsSender {
            net,
            url,
            stream: cfg
                .stream
                .clone()
                .unwrap_or_else(|| DEFAULT_NATS_STREAM.to_string()),
            prefix: cfg
                .subject_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_SUBJECT_PREFIX.to_string()),
            domain: cfg.jetstream_domain.clone(),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Connects (retrying in the background while the server is down) and publishes until the
    /// sink stops.
    pub(crate) async fn run(mut self) {
        let stats = self.net.stats.clone();
        let name = self.net.name.clone();
        let opts = async_nats::ConnectOptions::new()
            .name(format!("nodeagent {}", self.net.node.node))
            .connection_timeout(CONNECT_TIMEOUT)
            .retry_on_initial_connect()
            .max_reconnects(None::<usize>)
            .reconnect_delay_callback(|attempts| {
                let ms = 100u64.saturating_mul(1 << attempts.min(5) as u64);
                Duration::from_millis(ms.min(2000))
            })
            .event_callback(move |event| {
                let stats = stats.clone();
                let name = name.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(sink = %name, "connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            stats.connected.store(false, Ordering::Relaxed);
                            tracing::warn!(sink = %name, "disconnected from NATS; reconnecting");
                        }
                        other => tracing::debug!(sink = %name, event = %other, "NATS"),
                    }
                }
            });
        let mut stop = self.net.stop.clone();
        let client = tokio::select! {
            c = opts.connect(self.url.as_str()) => c,
            () = Net::wait_stop(&mut stop) => return,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                // Only a malformed URL or options get here (connecting is retried inside).
                self.net.failed(&format!("NATS {}: {e}", self.url));
                return;
            }
        };
        let mut js = match &self.domain {
            Some(d) => jetstream::with_domain(client.clone(), d),
            None => jetstream::new(client.clone()),
        };
        js.set_timeout(self.net.opts.ack_timeout);
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut stream_ready = false;
        loop {
            if self.net.stopped() {
                return;
            }
            if client.connection_state() != async_nats::connection::State::Connected {
                self.net.set_connected(false);
                if self.net.pause(Duration::from_millis(50)).await {
                    return;
                }
                continue;
            }
            if !stream_ready {
                let cfg = jetstream::stream::Config {
                    name: self.stream.clone(),
                    subjects: vec![format!("{}.>", self.prefix)],
                    ..Default::default()
                };
                match js.get_or_create_stream(cfg).await {
                    Ok(_) => {
                        tracing::info!(sink = %self.net.name, stream = %self.stream, url = %self.url, "JetStream stream ready");
                        stream_ready = true;
                    }
                    Err(e) => {
                        self.net.failed(&format!(
                            "JetStream stream {} on {}: {e}",
                            self.stream, self.url
                        ));
                        if self.net.pause(backoff.next_delay()).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let started = Instant::now();
            match self.session(&js).await {
                None => return,
                Some(e) => self.net.failed(&e),
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff.reset();
            }
            if self.net.pause(backoff.next_delay()).await {
                return;
            }
        }
    }

    /// Publishes from the acked cursor on until a publish fails (returns why) or the sink stops
    /// (returns None).
    async fn session(&mut self, js: &jetstream::Context) -> Option<String> {
        self.net.rewind();
        self.net.set_connected(true);
        let node = self.net.node.node.clone();
        let token = subject_token(&node);
        let metrics = format!("{}.{token}.metrics", self.prefix);
        let events = format!("{}.{token}.events", self.prefix);
        let window = self.net.opts.window;
        let ack_timeout = self.net.opts.ack_timeout;
        let mut inflight: FuturesOrdered<AckFuture> = FuturesOrdered::new();
        let mut oldest: std::collections::VecDeque<Instant> = Default::default();
        let mut stop = self.net.stop.clone();
        loop {
            let mut wake = None;
            while inflight.len() < window {
                let (due, at) = self.net.due();
                if !due {
                    wake = at;
                    break;
                }
                let batches = match self.net.next_batches("", true).await {
                    Ok(b) => b,
                    Err(e) => return Some(format!("reading the spool: {e}")),
                };
                if batches.is_empty() {
                    break;
                }
                for b in batches {
                    let subject = match b.kind {
                        BodyKind::Event => events.clone(),
                        _ => metrics.clone(),
                    };
                    let mut h = async_nats::HeaderMap::new();
                    h.insert(
                        "Nats-Msg-Id",
                        format!("{node}:{}-{}", b.first, b.last).as_str(),
                    );
                    h.insert("Nodeagent-Node", node.as_str());
                    h.insert("Nodeagent-First-Seq", b.first.to_string().as_str());
                    h.insert("Nodeagent-Last-Seq", b.last.to_string().as_str());
                    h.insert(
                        "Content-Type",
                        "application/x-protobuf; proto=nodeagent.upstream.v1.Batch",
                    );
                    self.net.note_sent(b.first, b.last, b.records);
                    let ack = match js.publish_with_headers(subject, h, b.payload).await {
                        Ok(a) => a,
                        Err(e) => return Some(format!("publishing to {}: {e}", self.url)),
                    };
                    let last = b.last;
                    inflight.push_back(Box::pin(async move {
                        (last, ack.await.map(|_| ()).map_err(|e| e.to_string()))
                    }));
                    oldest.push_back(Instant::now());
                }
            }
            let ack_deadline = oldest
                .front()
                .map(|t| *t + ack_timeout + Duration::from_secs(1));
            let room = inflight.len() < window;
            tokio::select! {
                biased;
                () = Net::wait_stop(&mut stop) => return None,
                Some((last, res)) = inflight.next() => {
                    oldest.pop_front();
                    match res {
                        Ok(()) => self.net.note_acked(last),
                        Err(e) => return Some(format!("JetStream publish ack: {e}")),
                    }
                }
                () = self.net.spool.wait_for_data(), if room => {}
                () = sleep_until(wake), if room && wake.is_some() => {}
                () = sleep_until(ack_deadline), if ack_deadline.is_some() => {
                    return Some("no JetStream ack in time".into());
                }
            }
        }
    }
}
