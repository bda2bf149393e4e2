//! Sinks: where reports go. Each sink runs as one task behind a bounded queue; the collector and
//! the core only ever `try_send` to it, so a slow sink never stalls sampling or the API. When a
//! queue is full the batch is dropped, counted, and recorded as a `sink_dropped` event (the
//! reporting issue replaces the drop with a disk spool).

pub mod file;
pub mod stdout;

use crate::events::EventLog;
use nodeagent_types::{EventKind, Kind, Sample};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Built-in sink names.
pub const STDOUT: &str = "stdout";
pub const FILE: &str = "file";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    Stdout,
    File,
    Grpc,
    Nats,
}

/// A named sink from the config file (`[[sink]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// `file`: path of the JSON-lines file (default `<state-dir>/reports.jsonl`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `grpc`: upstream address.
    #[serde(default)]
    pub address: Option<String>,
    /// `nats`: server URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Batches the queue holds before it drops (default 1024).
    #[serde(default)]
    pub queue: Option<usize>,
}

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

/// One report record. `seq` is numbered by the sink as it writes, per (node, sink), from 1 with
/// no gaps, so a receiver can tell a lost record from a late one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub node: Arc<str>,
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub kind: Kind,
    pub sample: Sample,
}

/// Answer to a batch that asked for one: the sample seq it carried, once written and flushed.
pub type Ack = oneshot::Sender<Result<u64, String>>;

pub enum SinkMsg {
    Batch {
        records: Vec<Record>,
        ack: Option<(Ack, u64)>,
    },
    Flush(oneshot::Sender<()>),
}

/// What a sink implementation does: write a batch, flush.
pub trait Sink: Send + 'static {
    fn write(&mut self, records: &[Record]) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}

#[derive(Debug, Default)]
pub struct SinkStats {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
}

/// The sending side of a running sink.
#[derive(Debug)]
pub struct SinkHandle {
    pub name: String,
    pub kind: SinkType,
    tx: mpsc::Sender<SinkMsg>,
    pub stats: Arc<SinkStats>,
    events: Arc<EventLog>,
}

impl SinkHandle {
    /// Queues a batch without waiting. A full queue drops the batch, counts it and records an
    /// event; the ack (if any) is answered with the reason.
    pub fn try_send(&self, records: Vec<Record>, ack: Option<(Ack, u64)>) {
        let n = records.len() as u64;
        match self.tx.try_send(SinkMsg::Batch { records, ack }) {
            Ok(()) => {}
            Err(e) => {
                let (why, msg) = match e {
                    mpsc::error::TrySendError::Full(m) => ("queue full", m),
                    mpsc::error::TrySendError::Closed(m) => ("sink stopped", m),
                };
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                self.events.emit(
                    EventKind::SinkDropped,
                    None,
                    format!("sink {}: {why}: dropped {n} records", self.name),
                    serde_json::json!({"sink": self.name, "dropped": n}),
                );
                if let SinkMsg::Batch {
                    ack: Some((ack, _)),
                    ..
                } = msg
                {
                    let _ = ack.send(Err(format!("sink {}: {why}", self.name)));
                }
            }
        }
    }

    /// Waits until everything queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(SinkMsg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts a sink task on the current tokio runtime.
pub fn spawn(
    name: &str,
    kind: SinkType,
    mut sink: Box<dyn Sink>,
    queue: usize,
    events: Arc<EventLog>,
) -> Arc<SinkHandle> {
    let (tx, mut rx) = mpsc::channel::<SinkMsg>(queue.max(1));
    let stats = Arc::new(SinkStats::default());
    let st = stats.clone();
    let sink_name = name.to_string();
    tokio::spawn(async move {
        let mut seq = 0u64;
        while let Some(msg) = rx.recv().await {
            match msg {
                SinkMsg::Batch { mut records, ack } => {
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
                            st.sent.fetch_add(records.len() as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            st.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(sink = %sink_name, error = %e, "sink write failed");
                        }
                    }
                    if let Some((ack, sample_seq)) = ack {
                        let _ = ack.send(res.map(|()| sample_seq).map_err(|e| e.to_string()));
                    }
                    // Flush when the queue is drained, so a burst is written in one go.
                    if rx.is_empty() {
                        let _ = sink.flush();
                    }
                }
                SinkMsg::Flush(done) => {
                    let _ = sink.flush();
                    let _ = done.send(());
                }
            }
        }
        let _ = sink.flush();
    });
    Arc::new(SinkHandle {
        name: name.to_string(),
        kind,
        tx,
        stats,
        events,
    })
}

/// Builds a sink from its config. `state_dir` locates the default file.
pub fn build(
    cfg: &SinkConfig,
    state_dir: &std::path::Path,
    file_max_bytes: u64,
) -> Result<Box<dyn Sink>, SinkError> {
    match cfg.kind {
        SinkType::Stdout => Ok(Box::new(stdout::StdoutSink::new())),
        SinkType::File => {
            let path = cfg
                .path
                .clone()
                .unwrap_or_else(|| state_dir.join("reports.jsonl"));
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
                "sink type {:?} is not available in this build yet (built-in: stdout, file)",
                cfg.kind
            ),
        }),
    }
}

/// Writes one record as a JSON line into `out`.
pub fn encode_line(r: &Record, out: &mut Vec<u8>) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, r).map_err(std::io::Error::other)?;
    out.push(b'\n');
    Ok(())
}
