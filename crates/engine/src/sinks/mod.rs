//! Sinks: where reports go.
//!
//! Every sink runs on its own OS thread behind a bounded in-memory queue. The collector and the
//! core only ever `try_send` to it, so a slow sink never stalls sampling, the API or the other
//! sinks, and the sink's file I/O (writes, syncs) never runs on the async runtime.
//!
//! - **Local sinks** (`stdout`, `file`) write each batch as JSON lines.
//! - **Network sinks** (`grpc`, `nats`) are write-ahead: their thread appends every record to
//!   the sink's disk [`spool`](crate::spool), numbering it there, and a sender task on the runtime
//!   reads the spool, sends batches upstream and advances the spool's acked cursor on
//!   acknowledgements. Records survive an upstream outage and `kill -9`; the spool's cap is the
//!   only place they can be dropped, and every drop is counted and reported as a `sink_dropped`
//!   event. Network sinks also forward the agent's events, in the same sequence.
//!
//! A full queue drops the batch, counts it and records a `sink_dropped` event: with a spool
//! behind it, the queue only fills when the disk stalls.

pub mod file;
pub mod grpc;
pub mod nats;
mod net;
mod network;
pub mod stdout;

/// The record sinks take; defined in [`crate::record`], which the upstream encoding shares.
pub use crate::record::Record;

use crate::events::EventLog;
use crate::series::lock;
use crate::spool::{FsyncPolicy, Spool, SpoolOptions};
use crate::upstream::NodeInfo;
use nodeagent_types::{Duration, Event, EventKind, Memory, ReportMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

/// Built-in sink names.
pub const STDOUT: &str = "stdout";
pub const FILE: &str = "file";

/// Batches a sink's queue holds by default.
pub const DEFAULT_QUEUE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    Stdout,
    File,
    Grpc,
    Nats,
}

impl SinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::Stdout => "stdout",
            SinkType::File => "file",
            SinkType::Grpc => "grpc",
            SinkType::Nats => "nats",
        }
    }
    /// Whether the sink sends over the network (and so has a spool).
    /// The report mode a push-on to a sink of this type gets unless it or the sink's config
    /// names one: `batch` for the upstream sinks, which keep every sample, and `latest` for the
    /// local ones, where "every 2s" means one line every 2 s.
    pub fn default_mode(self) -> ReportMode {
        if self.is_network() {
            ReportMode::Batch
        } else {
            ReportMode::Latest
        }
    }

    pub fn is_network(self) -> bool {
        matches!(self, SinkType::Grpc | SinkType::Nats)
    }
}

/// Compression of a `grpc` sink's report stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// TLS of a `grpc` sink (address `https://...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the upstream's certificate (default: the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for upstreams that require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Name to check the upstream's certificate against (default: the address's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// A named sink from the config file (`[[sink]]`). Options that do not apply to the sink's type
/// are refused by [`SinkConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// `file`: path of the JSON-lines file (default `<state-dir>/reports.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `grpc`: upstream address, `http://HOST:PORT` or `https://HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `nats`: server URL, `nats://HOST:PORT` (several separated by commas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Batches the in-memory queue holds before it drops (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
    /// Network sinks: most records in one batch (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Network sinks: longest a record waits for its batch to fill (default 0s: a batch goes out
    /// as soon as the sink's thread has appended records; see [`DEFAULT_BATCH_AGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_age: Option<Duration>,
    /// `grpc`: `gzip` or `none` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// `grpc`: interval of the lease-renewing heartbeat (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<Duration>,
    /// Network sinks: a batch not acknowledged within this time means the upstream is stuck;
    /// the sink reconnects and sends it again (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_timeout: Option<Duration>,
    /// `grpc`: TLS options (for an `https://` address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// `grpc`: labels this node registers with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `nats`: the JetStream stream (default `NODEAGENT`), created if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// `nats`: first subject token (default `nodeagent`): subjects are
    /// `<prefix>.<node>.metrics` and `<prefix>.<node>.events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_prefix: Option<String>,
    /// `nats`: the JetStream domain of the stream, for an agent behind a leaf node (its
    /// JetStream requests then go to `$JS.<domain>.API`, which the leaf forwards to the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream_domain: Option<String>,
    /// Network sinks: the spool's cap; past it the oldest records are dropped (default 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_max_bytes: Option<Memory>,
    /// Network sinks: size of one spool segment file (default 16Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_segment_bytes: Option<Memory>,
    /// Network sinks: `always`, `never`, or an interval such as `1s` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_fsync: Option<FsyncPolicy>,
    /// The report mode of push-on tasks to this sink (and of the heartbeat) that do not name
    /// one: `latest` (one sample per interval) or `batch` (every sample, sent each interval).
    /// Default: [`SinkType::default_mode`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ReportMode>,
}

pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// No waiting by default. Records still travel in batches: what the sink's thread appends in one
/// go (a collector pass brings every report due at one instant as one message) is sent as one
/// batch, and while the upstream is behind, records pile up in the spool and go out
/// `batch_size` at a time. Waiting 5 ms for more (the old default) only added 5 ms to every
/// record at a steady rate, since the next pass comes 10 ms or more later.
pub const DEFAULT_BATCH_AGE: std::time::Duration = std::time::Duration::ZERO;
pub const DEFAULT_UPSTREAM_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);
pub const DEFAULT_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
pub const DEFAULT_NATS_STREAM: &str = "NODEAGENT";
pub const DEFAULT_SUBJECT_PREFIX: &str = "nodeagent";

impl SinkConfig {
    /// A sink with nothing but a name and a type (the built-ins).
    pub fn builtin(name: &str, kind: SinkType) -> SinkConfig {
        SinkConfig {
            name: name.to_string(),
            kind,
            path: None,
            address: None,
            url: None,
            queue: None,
            batch_size: None,
            batch_age: None,
            compression: None,
            heartbeat_interval: None,
            ack_timeout: None,
            tls: None,
            labels: BTreeMap::new(),
            stream: None,
            subject_prefix: None,
            jetstream_domain: None,
            spool_max_bytes: None,
            spool_segment_bytes: None,
            spool_fsync: None,
            mode: None,
        }
    }

    /// A `grpc` sink to `address` with defaults otherwise.
    pub fn grpc(name: &str, address: &str) -> SinkConfig {
        SinkConfig {
            address: Some(address.to_string()),
            ..SinkConfig::builtin(name, SinkType::Grpc)
        }
    }

    /// A `nats` sink to `url` with defaults otherwise.
    pub fn nats(name: &str, url: &str) -> SinkConfig {
        SinkConfig {
            url: Some(url.to_string()),
            ..SinkConfig::builtin(name, SinkType::Nats)
        }
    }

    /// Checks the sink's options. `index` is its place in the config file; an error names the
    /// field as `sink[INDEX].FIELD`.
    pub fn validate(&self, index: usize) -> Result<(), String> {
        let at = |field: &str| format!("sink[{index}].{field}");
        let bad =
            |field: &str, msg: String| Err(format!("{}: {msg} (sink {:?})", at(field), self.name));
        if self.name.is_empty() {
            return Err(format!("{}: empty", at("name")));
        }
        if self.name == "."
            || self.name == ".."
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return bad(
                "name",
                "use letters, digits, '-', '_' and '.' (it names the sink's spool directory)"
                    .into(),
            );
        }
        let t = self.kind.as_str();
        let only = |field: &str, set: bool, types: &str| -> Result<(), String> {
            if set {
                Err(format!(
                    "{}: does not apply to a sink of type {t} (only {types}) (sink {:?})",
                    at(field),
                    self.name
                ))
            } else {
                Ok(())
            }
        };
        let net = self.kind.is_network();
        let grpc = self.kind == SinkType::Grpc;
        let nats = self.kind == SinkType::Nats;
        only(
            "path",
            self.path.is_some() && self.kind != SinkType::File,
            "file",
        )?;
        only("address", self.address.is_some() && !grpc, "grpc")?;
        only("url", self.url.is_some() && !nats, "nats")?;
        only(
            "batch_size",
            self.batch_size.is_some() && !net,
            "grpc, nats",
        )?;
        only("batch_age", self.batch_age.is_some() && !net, "grpc, nats")?;
        only(
            "ack_timeout",
            self.ack_timeout.is_some() && !net,
            "grpc, nats",
        )?;
        only(
            "spool_max_bytes",
            self.spool_max_bytes.is_some() && !net,
            "grpc, nats",
        )?;
        only(
            "spool_segment_bytes",
            self.spool_segment_bytes.is_some() && !net,
            "grpc, nats",
        )?;
        only(
            "spool_fsync",
            self.spool_fsync.is_some() && !net,
            "grpc, nats",
        )?;
        only("compression", self.compression.is_some() && !grpc, "grpc")?;
        only(
            "heartbeat_interval",
            self.heartbeat_interval.is_some() && !grpc,
            "grpc",
        )?;
        only("tls", self.tls.is_some() && !grpc, "grpc")?;
        only("labels", !self.labels.is_empty() && !grpc, "grpc")?;
        only("stream", self.stream.is_some() && !nats, "nats")?;
        only(
            "subject_prefix",
            self.subject_prefix.is_some() && !nats,
            "nats",
        )?;
        if let Some(q) = self.queue {
            if q == 0 || q > 1_000_000 {
                return bad("queue", format!("{q} is out of range: give 1 to 1000000"));
            }
        }
        if let Some(b) = self.batch_size {
            if b == 0 || b > 100_000 {
                return bad(
                    "batch_size",
                    format!("{b} is out of range: give 1 to 100000"),
                );
            }
        }
        if let Some(a) = self.batch_age {
            if a.0 > std::time::Duration::from_secs(10) {
                return bad("batch_age", format!("{a} is too long: give at most 10s"));
            }
        }
        if let Some(h) = self.heartbeat_interval {
            if h.0 < std::time::Duration::from_millis(100) {
                return bad(
                    "heartbeat_interval",
                    format!("{h} is too short: give at least 100ms"),
                );
            }
        }
        if let Some(a) = self.ack_timeout {
            if a.0 < std::time::Duration::from_millis(100) {
                return bad(
                    "ack_timeout",
                    format!("{a} is too short: give at least 100ms"),
                );
            }
        }
        let seg = self.spool_segment_bytes.map(|m| m.0);
        if let Some(s) = seg {
            if s < crate::spool::MIN_SEGMENT_BYTES {
                return bad(
                    "spool_segment_bytes",
                    format!("{s} bytes is too small: give at least 4Ki"),
                );
            }
        }
        if let Some(m) = self.spool_max_bytes {
            let seg = seg.unwrap_or(crate::spool::DEFAULT_SEGMENT_BYTES);
            if m.0 < 2 * seg {
                return bad(
                    "spool_max_bytes",
                    format!(
                        "{} bytes is less than two segments ({} bytes each; see spool_segment_bytes)",
                        m.0, seg
                    ),
                );
            }
        }
        if grpc {
            let Some(addr) = &self.address else {
                return bad(
                    "address",
                    "type grpc needs an address such as \"http://127.0.0.1:7465\"".into(),
                );
            };
            let https = match addr.split_once("://") {
                Some(("http", rest)) if !rest.is_empty() => false,
                Some(("https", rest)) if !rest.is_empty() => true,
                _ => {
                    return bad(
                        "address",
                        format!("{addr:?}: give http://HOST:PORT or https://HOST:PORT"),
                    )
                }
            };
            if addr.parse::<tonic::transport::Uri>().is_err() {
                return bad("address", format!("{addr:?} is not a valid URI"));
            }
            if let Some(tls) = &self.tls {
                if !https {
                    return bad("tls", "TLS options need an https:// address".into());
                }
                if tls.cert.is_some() != tls.key.is_some() {
                    return bad(
                        "tls",
                        "a client certificate needs both `cert` and `key`".into(),
                    );
                }
            }
        }
        if nats {
            let Some(url) = &self.url else {
                return bad(
                    "url",
                    "type nats needs a url such as \"nats://127.0.0.1:4222\"".into(),
                );
            };
            for u in url.split(',') {
                let u = u.trim();
                let ok = ["nats://", "tls://"]
                    .iter()
                    .any(|p| u.strip_prefix(p).is_some_and(|r| !r.is_empty()));
                if !ok {
                    return bad("url", format!("{u:?}: give nats://HOST:PORT"));
                }
            }
            if let Some(s) = &self.stream {
                if s.is_empty()
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                {
                    return bad("stream", format!("{s:?}: use letters, digits, '-' and '_'"));
                }
            }
            if let Some(p) = &self.subject_prefix {
                if p.is_empty()
                    || p.split('.').any(|t| {
                        t.is_empty() || t.chars().any(|c| c.is_whitespace() || c == '*' || c == '>')
                    })
                {
                    return bad(
                        "subject_prefix",
                        format!("{p:?}: give subject tokens separated by '.', without wildcards"),
                    );
                }
            }
        }
        Ok(())
    }

    fn spool_options(&self) -> SpoolOptions {
        let d = SpoolOptions::default();
        SpoolOptions {
            segment_bytes: self.spool_segment_bytes.map_or(d.segment_bytes, |m| m.0),
            max_bytes: self.spool_max_bytes.map_or(d.max_bytes, |m| m.0),
            fsync: self.spool_fsync.unwrap_or(d.fsync),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {name}: {message}")]
    Config { name: String, message: String },
    #[error("sink {name}: {path}: {source}")]
    Io {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Answer to a batch that asked for one: the sample seq it carried, once written and flushed
/// (for a network sink: once it is in the spool).
pub type Ack = oneshot::Sender<Result<u64, String>>;

pub enum SinkMsg {
    Batch {
        records: Vec<Record>,
        ack: Option<(Ack, u64)>,
        /// For a batch with an ack (push-once): the span it was sent from, so the write joins
        /// the request's trace. `Span::none()` for periodic reports: no span per batch there.
        span: tracing::Span,
    },
    /// Events from the event log (network sinks).
    Events(Vec<Event>),
    Flush(oneshot::Sender<()>),
    /// Flush, sync and stop the sink's thread.
    Stop(oneshot::Sender<()>),
}

/// What a local sink implementation does: write a batch, flush.
pub trait Sink: Send + 'static {
    fn write(&mut self, records: &[Record]) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
    /// The last record `seq` this sink's output already holds, read once when its thread
    /// starts: numbering goes on from there, so a file's `seq` never restarts at 1 when the
    /// agent does (issue 21). 0 (the default) for outputs that keep nothing, such as stdout.
    fn resume_seq(&mut self) -> u64 {
        0
    }
}

/// Counters shared by a sink's thread, its sender and its readers (`/v1/sinks`, `/metrics`).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records in the in-memory queue.
    pub queued: AtomicU64,
    /// Records handed to the output: written (local sinks) or transmitted (network sinks,
    /// retransmissions included).
    pub sent: AtomicU64,
    /// Records the output has taken for good: written (local sinks) or acknowledged by the
    /// upstream, each counted once (network sinks).
    pub acked: AtomicU64,
    /// Records transmitted again after a failure or reconnect.
    pub retried: AtomicU64,
    /// Records lost: queue full, spool cap, a failed spool write, corruption. Each drop is also a
    /// `sink_dropped` event.
    pub dropped: AtomicU64,
    /// Failed writes, connections and RPCs.
    pub errors: AtomicU64,
    /// Network sinks: whether the sender is connected (and registered) right now.
    pub connected: AtomicBool,
    info: Mutex<SinkInfo>,
}

#[derive(Debug, Default, Clone)]
struct SinkInfo {
    last_error: Option<String>,
    node_id: Option<String>,
}

impl SinkStats {
    pub fn set_error(&self, e: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        lock(&self.info).last_error = Some(e.into());
    }
    pub fn set_node_id(&self, id: Option<String>) {
        lock(&self.info).node_id = id;
    }
}

/// A sink's state as `GET /v1/sinks` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// The report mode of push-ons that name none.
    pub mode: ReportMode,
    /// Where it writes or sends: a path, an address or a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Records in the in-memory queue.
    pub queue_depth: u64,
    /// Batches the queue holds.
    pub queue_capacity: u64,
    /// Size of the spool's files (network sinks).
    pub spool_bytes: u64,
    /// Records in the spool not yet acknowledged (network sinks).
    pub spool_records: u64,
    pub sent: u64,
    pub acked: u64,
    pub retried: u64,
    pub dropped: u64,
    pub errors: u64,
    /// Network sinks: connected (and, for grpc, registered) right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Network sinks: the highest sequence number given out and the highest acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_seq: Option<u64>,
    /// `grpc`: the node id the upstream gave at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The sending side of a running sink.
#[derive(Debug)]
pub struct SinkHandle {
    pub name: String,
    pub kind: SinkType,
    /// What a push-on that names no mode gets ([`SinkConfig::mode`], or the type's default).
    mode: ReportMode,
    target: Option<String>,
    tx: SyncSender<SinkMsg>,
    queue_capacity: usize,
    pub stats: Arc<SinkStats>,
    events: Arc<EventLog>,
    spool: Option<Arc<Spool>>,
    /// Stops the network sender task.
    stop: Option<watch::Sender<bool>>,
}

impl SinkHandle {
    /// The report mode of a push-on to this sink that names none.
    pub fn mode(&self) -> ReportMode {
        self.mode
    }

    /// Queues a batch without waiting. A full queue drops the batch, counts it and records an
    /// event; the ack (if any) is answered with the reason.
    pub fn try_send(&self, records: Vec<Record>, ack: Option<(Ack, u64)>) {
        let n = records.len() as u64;
        // Counted before sending, so the sink's thread never subtracts first.
        self.stats.queued.fetch_add(n, Ordering::Relaxed);
        let span = if ack.is_some() {
            tracing::Span::current()
        } else {
            tracing::Span::none()
        };
        if let Err(e) = self.tx.try_send(SinkMsg::Batch { records, ack, span }) {
            self.stats.queued.fetch_sub(n, Ordering::Relaxed);
            let (why, msg) = match e {
                TrySendError::Full(m) => ("queue full", m),
                TrySendError::Disconnected(m) => ("sink stopped", m),
            };
            self.record_drop(n, why, true);
            if let SinkMsg::Batch {
                ack: Some((ack, _)),
                ..
            } = msg
            {
                let _ = ack.send(Err(format!("sink {}: {why}", self.name)));
            }
        }
    }

    /// Queues events (network sinks). A drop is counted, and recorded as an event unless every
    /// event dropped was itself a `sink_dropped` event (which would feed back forever).
    pub(crate) fn send_events(&self, events: Vec<Event>) {
        let n = events.len() as u64;
        let feedback = events.iter().all(|e| e.kind == EventKind::SinkDropped);
        self.stats.queued.fetch_add(n, Ordering::Relaxed);
        if let Err(e) = self.tx.try_send(SinkMsg::Events(events)) {
            self.stats.queued.fetch_sub(n, Ordering::Relaxed);
            let why = match e {
                TrySendError::Full(_) => "queue full",
                TrySendError::Disconnected(_) => "sink stopped",
            };
            self.record_drop(n, why, !feedback);
        }
    }

    /// Counts `n` lost records; logs, and records a `sink_dropped` event when `event`.
    pub(crate) fn record_drop(&self, n: u64, why: &str, event: bool) {
        record_drop(&self.stats, &self.events, &self.name, n, why, event);
    }

    /// Waits until everything queued before this call is written (for a network sink: in the
    /// spool).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send_blocking(SinkMsg::Flush(tx)).await {
            let _ = rx.await;
        }
    }

    /// Stops the sink: flushes the queue; for a network sink, gives the sender up to `drain` to
    /// deliver what the spool holds (only while connected), then stops it and syncs the spool.
    /// What is not delivered stays in the spool for the next start.
    pub async fn shutdown(&self, drain: std::time::Duration) {
        self.flush().await;
        if let (Some(spool), Some(stop)) = (&self.spool, &self.stop) {
            let deadline = tokio::time::Instant::now() + drain;
            while self.stats.connected.load(Ordering::Relaxed)
                && spool.stats().records > 0
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let _ = stop.send(true);
        }
        let (tx, rx) = oneshot::channel();
        if self.send_blocking(SinkMsg::Stop(tx)).await {
            let _ = rx.await;
        }
    }

    /// Sends a control message, waiting for room in the queue off the runtime.
    async fn send_blocking(&self, msg: SinkMsg) -> bool {
        let tx = self.tx.clone();
        match tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(msg)) => {
                tokio::task::spawn_blocking(move || tx.send(msg).is_ok())
                    .await
                    .unwrap_or(false)
            }
        }
    }

    /// The sink's counters now.
    pub fn status(&self) -> SinkStatus {
        let s = &self.stats;
        let info = lock(&s.info).clone();
        let spool = self.spool.as_ref().map(|sp| sp.stats());
        SinkStatus {
            name: self.name.clone(),
            kind: self.kind,
            mode: self.mode,
            target: self.target.clone(),
            queue_depth: s.queued.load(Ordering::Relaxed),
            queue_capacity: self.queue_capacity as u64,
            spool_bytes: spool.map_or(0, |x| x.bytes),
            spool_records: spool.map_or(0, |x| x.records),
            sent: s.sent.load(Ordering::Relaxed),
            acked: s.acked.load(Ordering::Relaxed),
            retried: s.retried.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            connected: self
                .kind
                .is_network()
                .then(|| s.connected.load(Ordering::Relaxed)),
            last_seq: spool.map(|x| x.last_seq),
            acked_seq: spool.map(|x| x.acked),
            node_id: info.node_id,
            last_error: info.last_error,
        }
    }

    /// The spool of a network sink.
    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }
}

pub(crate) fn record_drop(
    stats: &SinkStats,
    events: &EventLog,
    name: &str,
    n: u64,
    why: &str,
    event: bool,
) {
    if n == 0 {
        return;
    }
    stats.dropped.fetch_add(n, Ordering::Relaxed);
    tracing::warn!(sink = %name, records = n, reason = why, "sink dropped records");
    if event {
        events.emit(
            EventKind::SinkDropped,
            None,
            format!("sink {name}: {why}: dropped {n} records"),
            serde_json::json!({"sink": name, "dropped": n, "reason": why}),
        );
    }
}

/// Starts a local sink on a thread of its own.
pub fn spawn(
    name: &str,
    kind: SinkType,
    sink: Box<dyn Sink>,
    queue: usize,
    events: Arc<EventLog>,
) -> std::io::Result<Arc<SinkHandle>> {
    let (tx, rx) = mpsc::sync_channel::<SinkMsg>(queue.max(1));
    let stats = Arc::new(SinkStats::default());
    let st = stats.clone();
    let sink_name = name.to_string();
    std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || local_loop(rx, sink, &st, &sink_name))?;
    Ok(Arc::new(SinkHandle {
        name: name.to_string(),
        kind,
        mode: kind.default_mode(),
        target: None,
        tx,
        queue_capacity: queue.max(1),
        stats,
        events,
        spool: None,
        stop: None,
    }))
}

fn local_loop(rx: Receiver<SinkMsg>, mut sink: Box<dyn Sink>, st: &SinkStats, name: &str) {
    let mut seq = sink.resume_seq();
    let mut handle = |msg: SinkMsg, sink: &mut Box<dyn Sink>| -> bool {
        match msg {
            SinkMsg::Batch {
                mut records,
                ack,
                span,
            } => {
                let n = records.len() as u64;
                let _write = (!span.is_disabled()).then(|| {
                    tracing::info_span!(parent: &span, "reporter.write", sink = %name, records = n)
                        .entered()
                });
                st.queued.fetch_sub(n, Ordering::Relaxed);
                for r in &mut records {
                    seq += 1;
                    r.seq = seq;
                }
                let res = sink.write(&records).and_then(|()| {
                    if ack.is_some() {
                        sink.flush()
                    } else {
                        Ok(())
                    }
                });
                match &res {
                    Ok(()) => {
                        st.sent.fetch_add(n, Ordering::Relaxed);
                        st.acked.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        st.set_error(e.to_string());
                        tracing::warn!(sink = %name, error = %e, "sink write failed");
                    }
                }
                if let Some((ack, sample_seq)) = ack {
                    let _ = ack.send(res.map(|()| sample_seq).map_err(|e| e.to_string()));
                }
                false
            }
            SinkMsg::Events(evs) => {
                st.queued.fetch_sub(evs.len() as u64, Ordering::Relaxed);
                false
            }
            SinkMsg::Flush(done) => {
                let _ = sink.flush();
                let _ = done.send(());
                false
            }
            SinkMsg::Stop(done) => {
                let _ = sink.flush();
                let _ = done.send(());
                true
            }
        }
    };
    while let Ok(msg) = rx.recv() {
        if handle(msg, &mut sink) {
            return;
        }
        // Everything already queued, then one flush: a burst is written in one go.
        while let Ok(msg) = rx.try_recv() {
            if handle(msg, &mut sink) {
                return;
            }
        }
        let _ = sink.flush();
    }
    let _ = sink.flush();
}

/// Builds a local sink from its config. `state_dir` locates the default file.
pub fn build(
    cfg: &SinkConfig,
    state_dir: &Path,
    file_max_bytes: u64,
) -> Result<Box<dyn Sink>, SinkError> {
    match cfg.kind {
        SinkType::Stdout => Ok(Box::new(stdout::StdoutSink::new())),
        SinkType::File => {
            let path = file_path(cfg, state_dir);
            file::FileSink::open(&path, file_max_bytes)
                .map(|s| Box::new(s) as Box<dyn Sink>)
                .map_err(|source| SinkError::Io {
                    name: cfg.name.clone(),
                    path,
                    source,
                })
        }
        SinkType::Grpc | SinkType::Nats => Err(SinkError::Config {
            name: cfg.name.clone(),
            message: format!(
                "sink type {} is a network sink; start it with sinks::start",
                cfg.kind.as_str()
            ),
        }),
    }
}

fn file_path(cfg: &SinkConfig, state_dir: &Path) -> PathBuf {
    cfg.path
        .clone()
        .unwrap_or_else(|| state_dir.join("reports.jsonl"))
}

/// What starting a sink needs besides its own config.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// Network sinks keep their spool in `<state_dir>/spool/<name>/`; the `file` sink's default
    /// file is `<state_dir>/reports.jsonl`.
    pub state_dir: PathBuf,
    pub file_max_bytes: u64,
    pub events: Arc<EventLog>,
    /// The node, as network sinks report and register it.
    pub node: Arc<NodeInfo>,
}

/// The spool directory of a network sink.
pub fn spool_dir(state_dir: &Path, sink: &str) -> PathBuf {
    state_dir.join("spool").join(sink)
}

/// Starts any sink. Network sinks need a tokio runtime (their sender is a task); their start-up
/// never waits for the upstream, which may be down.
pub fn start(cfg: &SinkConfig, ctx: &SinkContext) -> Result<Arc<SinkHandle>, SinkError> {
    let queue = cfg.queue.unwrap_or(DEFAULT_QUEUE);
    if !cfg.kind.is_network() {
        let sink = build(cfg, &ctx.state_dir, ctx.file_max_bytes)?;
        let mut h =
            spawn(&cfg.name, cfg.kind, sink, queue, ctx.events.clone()).map_err(|source| {
                SinkError::Io {
                    name: cfg.name.clone(),
                    path: PathBuf::from("<thread>"),
                    source,
                }
            })?;
        if let Some(h) = Arc::get_mut(&mut h) {
            if cfg.kind == SinkType::File {
                h.target = Some(file_path(cfg, &ctx.state_dir).display().to_string());
            }
            h.mode = cfg.mode.unwrap_or(cfg.kind.default_mode());
        }
        return Ok(h);
    }
    cfg.validate(0).map_err(|message| SinkError::Config {
        name: cfg.name.clone(),
        message,
    })?;
    network::start(cfg, ctx, queue)
}

/// Writes one record as a JSON line into `out`.
pub fn encode_line(r: &Record, out: &mut Vec<u8>) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, r).map_err(std::io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(SinkConfig, &str)> = vec![
            (SinkConfig::builtin("up", SinkType::Grpc), "sink[3].address"),
            (SinkConfig::grpc("up", "127.0.0.1:1"), "sink[3].address"),
            (
                SinkConfig {
                    url: Some("nats://x:1".into()),
                    ..SinkConfig::grpc("up", "http://x:1")
                },
                "sink[3].url",
            ),
            (
                SinkConfig {
                    batch_size: Some(0),
                    ..SinkConfig::grpc("up", "http://x:1")
                },
                "sink[3].batch_size",
            ),
            (
                SinkConfig {
                    tls: Some(TlsConfig::default()),
                    ..SinkConfig::grpc("up", "http://x:1")
                },
                "sink[3].tls",
            ),
            (
                SinkConfig {
                    spool_max_bytes: Some(Memory(1 << 20)),
                    ..SinkConfig::grpc("up", "http://x:1")
                },
                "sink[3].spool_max_bytes",
            ),
            (SinkConfig::nats("n", "http://x"), "sink[3].url"),
            (
                SinkConfig {
                    subject_prefix: Some("a.*".into()),
                    ..SinkConfig::nats("n", "nats://x:1")
                },
                "sink[3].subject_prefix",
            ),
            (
                SinkConfig {
                    compression: Some(Compression::Gzip),
                    ..SinkConfig::nats("n", "nats://x:1")
                },
                "sink[3].compression",
            ),
            (
                SinkConfig {
                    batch_size: Some(10),
                    ..SinkConfig::builtin("f", SinkType::File)
                },
                "sink[3].batch_size",
            ),
            (SinkConfig::grpc("../x", "http://x:1"), "sink[3].name"),
        ];
        for (cfg, want) in cases {
            let err = cfg.validate(3).expect_err(want);
            assert!(err.starts_with(want), "{want}: {err}");
        }
        SinkConfig::grpc("up", "https://x.example:443")
            .validate(0)
            .expect("valid");
        SinkConfig {
            spool_max_bytes: Some(Memory(1 << 20)),
            spool_segment_bytes: Some(Memory(64 << 10)),
            spool_fsync: Some(FsyncPolicy::Always),
            ..SinkConfig::nats("n", "nats://a:1, nats://b:2")
        }
        .validate(0)
        .expect("valid");
    }
}
