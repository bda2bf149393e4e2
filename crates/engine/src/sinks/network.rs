//! What the `grpc` and `nats` sinks share: the spool writer thread, the event forwarder, and the
//! start-up that wires them to a sender. The sender's side of the spool (batches, acks, retry
//! accounting, backoff) is in [`net`](super::net).
//!
//! ```text
//! collector ──try_send──▶ queue ──▶ [sink thread] ──append──▶ spool ──read──▶ [sender task] ──▶ upstream
//! event log ──broadcast──▶ [forwarder task] ──try_send──┘          ▲                      │
//!                                                                 └──── acked cursor ◀───┘
//! ```
//!
//! Why write-ahead rather than spilling to disk only when the upstream falls behind: a record
//! that is only in memory when the agent is killed is lost, and one that was sent but not yet
//! acknowledged would leave a gap. Writing every record to the spool first costs one `write()`
//! per batch into the page cache (no `fsync` on that path by default), and the sender reads
//! recent records back from the page cache with one `pread` per batch, so the fast path stays
//! cheap while the guarantees hold for every record.

use super::net::{Net, NetOptions};
use super::{record_drop, SinkConfig, SinkContext, SinkError, SinkHandle, SinkMsg, SinkStats};
use crate::events::EventLog;
use crate::spool::{Spool, SpoolWriter};
use crate::upstream::wire;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How often the sink thread wakes when idle, to write the acked cursor and delete acknowledged
/// segments.
const TICK: Duration = Duration::from_millis(100);
/// The sink thread commits at least this often while a burst keeps its queue busy.
const MAX_PENDING_BYTES: usize = 1 << 20;
/// Starts a network sink: opens its spool, starts its thread, its event forwarder and its
/// sender.
pub(super) fn start(
    cfg: &SinkConfig,
    ctx: &SinkContext,
    queue: usize,
) -> Result<Arc<SinkHandle>, SinkError> {
    let dir = super::spool_dir(&ctx.state_dir, &cfg.name);
    let (spool, writer, rec) =
        Spool::open(&dir, cfg.spool_options()).map_err(|source| SinkError::Io {
            name: cfg.name.clone(),
            path: dir.clone(),
            source,
        })?;
    tracing::info!(
        sink = %cfg.name,
        spool = %dir.display(),
        last_seq = rec.last_seq,
        acked = rec.acked,
        unacked = rec.last_seq - rec.acked.min(rec.last_seq),
        truncated_bytes = rec.truncated_bytes,
        "spool opened"
    );
    let stats = Arc::new(SinkStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let net = Net::new(
        cfg.name.clone(),
        spool.clone(),
        stats.clone(),
        ctx.events.clone(),
        ctx.node.clone(),
        NetOptions::from(cfg),
        stop_rx.clone(),
    );
    let config_err = |message: String| SinkError::Config {
        name: cfg.name.clone(),
        message,
    };
    // Everything that can fail on the configuration is checked here, so a bad TLS file fails
    // start-up instead of a background task.
    let (target, sender): (String, Sender) = match cfg.kind {
        super::SinkType::Grpc => {
            let s = super::grpc::GrpcSender::new(cfg, net).map_err(config_err)?;
            (s.address().to_string(), Sender::Grpc(Box::new(s)))
        }
        super::SinkType::Nats => {
            let s = super::nats::NatsSender::new(cfg, net).map_err(config_err)?;
            (s.url().to_string(), Sender::Nats(Box::new(s)))
        }
        other => {
            return Err(config_err(format!(
                "{} is not a network sink",
                other.as_str()
            )))
        }
    };
    let (tx, rx) = mpsc::sync_channel::<SinkMsg>(queue.max(1));
    {
        let stats = stats.clone();
        let events = ctx.events.clone();
        let name = cfg.name.clone();
        std::thread::Builder::new()
            .name(format!("sink-{}", cfg.name))
            .spawn(move || writer_loop(rx, writer, &stats, &events, &name))
            .map_err(|source| SinkError::Io {
                name: cfg.name.clone(),
                path: PathBuf::from("<thread>"),
                source,
            })?;
    }
    let handle = Arc::new(SinkHandle {
        name: cfg.name.clone(),
        kind: cfg.kind,
        mode: cfg.mode.unwrap_or(cfg.kind.default_mode()),
        target: Some(target),
        tx,
        queue_capacity: queue.max(1),
        stats,
        events: ctx.events.clone(),
        spool: Some(spool),
        stop: Some(stop_tx),
    });
    // Subscribed before anything else can emit, so the sink misses no event from here on.
    let feed = ctx.events.subscribe();
    tokio::spawn(forward_events(handle.clone(), feed, stop_rx));
    match sender {
        Sender::Grpc(s) => tokio::spawn(s.run()),
        Sender::Nats(s) => tokio::spawn(s.run()),
    };
    Ok(handle)
}

enum Sender {
    Grpc(Box<super::grpc::GrpcSender>),
    Nats(Box<super::nats::NatsSender>),
}

/// The sink's thread: numbers and appends what the queue brings, answers push-once acks once
/// their record is in the spool, and keeps the spool tidy.
fn writer_loop(
    rx: Receiver<SinkMsg>,
    mut w: SpoolWriter,
    stats: &SinkStats,
    events: &EventLog,
    name: &str,
) {
    let mut acks = Vec::new();
    let mut flushes = Vec::new();
    loop {
        let mut stop = None;
        let mut closed = false;
        match rx.recv_timeout(TICK) {
            Ok(msg) => {
                let mut next = Some(msg);
                while let Some(msg) = next.take() {
                    match msg {
                        SinkMsg::Batch { records, ack, .. } => {
                            stats
                                .queued
                                .fetch_sub(records.len() as u64, Ordering::Relaxed);
                            for r in &records {
                                w.push(|b| wire::encode_sample_body(r, b));
                            }
                            if let Some(a) = ack {
                                acks.push(a);
                            }
                        }
                        SinkMsg::Events(evs) => {
                            stats.queued.fetch_sub(evs.len() as u64, Ordering::Relaxed);
                            for e in &evs {
                                w.push(|b| wire::encode_event_body(e, b));
                            }
                        }
                        SinkMsg::Flush(done) => flushes.push(done),
                        SinkMsg::Stop(done) => {
                            stop = Some(done);
                            break;
                        }
                    }
                    if w.pending_bytes() < MAX_PENDING_BYTES {
                        next = rx.try_recv().ok();
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => closed = true,
        }
        let res = if stop.is_some() || closed {
            w.close()
        } else {
            w.commit()
        };
        let outcome = match res {
            Ok(c) => {
                record_drop(
                    stats,
                    events,
                    name,
                    c.dropped,
                    "spool full (spool_max_bytes): dropped the oldest records",
                    true,
                );
                Ok(())
            }
            Err(e) => {
                stats.set_error(e.to_string());
                record_drop(stats, events, name, e.lost, "spool write failed", true);
                Err(e.to_string())
            }
        };
        for (ack, sample_seq) in acks.drain(..) {
            let _ = ack.send(outcome.clone().map(|()| sample_seq));
        }
        if let Err(e) = w.maintain() {
            stats.set_error(e.to_string());
            tracing::warn!(sink = %name, error = %e, "spool housekeeping");
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if let Some(done) = stop {
            let _ = done.send(());
            return;
        }
        if closed {
            return;
        }
    }
}

/// Forwards the event log to the sink, in batches of whatever has accumulated.
async fn forward_events(
    sink: Arc<SinkHandle>,
    mut feed: broadcast::Receiver<nodeagent_types::Event>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            r = feed.recv() => r,
            () = Net::wait_stop(&mut stop) => return,
        };
        match first {
            Ok(ev) => {
                let mut batch = vec![ev];
                while batch.len() < 1024 {
                    match feed.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                sink.send_events(batch);
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                sink.record_drop(n, "the event feed overflowed", true);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
