//! What the `grpc` and `nats` sinks share: the spool writer thread, the event forwarder, and the
//! sender's side of the spool (batches, acks, retry accounting, backoff).
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

use super::{record_drop, SinkConfig, SinkContext, SinkError, SinkHandle, SinkMsg, SinkStats};
use crate::events::EventLog;
use crate::spool::{Spool, SpoolReader, SpoolWriter};
use crate::upstream::wire::{self, BodyKind};
use crate::upstream::NodeInfo;
use bytes::Bytes;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// How often the sink thread wakes when idle, to write the acked cursor and delete acknowledged
/// segments.
const TICK: Duration = Duration::from_millis(100);
/// The sink thread commits at least this often while a burst keeps its queue busy.
const MAX_PENDING_BYTES: usize = 1 << 20;
/// Batches sent and not yet acknowledged, at most.
pub(crate) const WINDOW: usize = 32;
/// Largest batch payload. gRPC's default message limit is 4 MiB; JetStream's default
/// `max_payload` is 1 MiB.
pub(crate) const BATCH_MAX_BYTES: usize = 512 << 10;

/// The resolved options of a network sink.
#[derive(Debug, Clone)]
pub(crate) struct NetOptions {
    pub batch_size: usize,
    pub batch_max_bytes: usize,
    pub batch_age: Duration,
    pub ack_timeout: Duration,
    pub window: usize,
}

impl NetOptions {
    fn from(cfg: &SinkConfig) -> NetOptions {
        NetOptions {
            batch_size: cfg.batch_size.unwrap_or(super::DEFAULT_BATCH_SIZE),
            batch_max_bytes: BATCH_MAX_BYTES,
            batch_age: cfg.batch_age.map_or(super::DEFAULT_BATCH_AGE, |d| d.0),
            ack_timeout: cfg.ack_timeout.map_or(super::DEFAULT_ACK_TIMEOUT, |d| d.0),
            window: WINDOW,
        }
    }
}

/// One message to send: a `Batch` payload and the records it carries.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// `Sample` or `Event` when the batch was split by kind (NATS); `Unknown` otherwise.
    pub kind: BodyKind,
    pub first: u64,
    pub last: u64,
    pub records: u64,
    pub payload: Bytes,
}

/// A sender's view of its sink: the spool, a reader of it, and the counters.
pub(crate) struct Net {
    pub name: String,
    pub spool: Arc<Spool>,
    reader: Option<SpoolReader>,
    pub stats: Arc<SinkStats>,
    pub events: Arc<EventLog>,
    pub node: Arc<NodeInfo>,
    pub opts: NetOptions,
    pub stop: watch::Receiver<bool>,
    /// Highest seq transmitted by this process: anything at or below it sent again is a retry.
    high_sent: u64,
    /// When records first waited for a batch to fill.
    pending_since: Option<Instant>,
    /// Records from this seq on were appended by this process after the sender had read
    /// everything before them (0: not caught up yet): they are in the page cache, so reading
    /// them does not wait for the disk.
    hot_from: u64,
}

impl Net {
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when the sink is stopped.
    pub async fn wait_stop(stop: &mut watch::Receiver<bool>) {
        // `wait_for`'s guard is not `Send`; it is dropped before anything else is awaited.
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Sleeps `d`, or less if the sink is stopped meanwhile; true if stopped.
    pub async fn pause(&mut self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            () = Net::wait_stop(&mut stop) => true,
            () = tokio::time::sleep(d) => self.stopped(),
        }
    }

    fn reader(&mut self) -> &mut SpoolReader {
        let spool = &self.spool;
        self.reader.get_or_insert_with(|| spool.reader())
    }

    /// Starts a new session: the next read is the record after the acked cursor, so everything
    /// unacknowledged is sent again.
    pub fn rewind(&mut self) {
        let acked = self.spool.acked();
        self.reader().seek(acked + 1);
        self.pending_since = None;
    }

    /// Whether a batch is due now: a full batch is waiting, or records have waited `batch_age`.
    /// Returns the deadline to wake up at when records wait for more.
    pub fn due(&mut self) -> (bool, Option<Instant>) {
        let avail = self.reader().available();
        if avail == 0 {
            self.pending_since = None;
            return (false, None);
        }
        let since = *self.pending_since.get_or_insert_with(Instant::now);
        if avail as usize >= self.opts.batch_size || since.elapsed() >= self.opts.batch_age {
            (true, None)
        } else {
            (false, Some(since + self.opts.batch_age))
        }
    }

    /// Reads the next batch from the spool, framed as `Batch` messages with `node_id`; split
    /// into runs of samples and runs of events when `split`.
    ///
    /// Records this process appended after the sender caught up (the live tail: one commit of
    /// the sink's thread, in the page cache) are read right here, one `pread` of a few KiB.
    /// Anything else (a backlog, or a spool left by a previous run, possibly on a cold disk) is
    /// read off the runtime. The hand-off to a blocking thread and back cost two thread wake-ups
    /// per batch, which on a loaded machine were milliseconds of the sample-to-upstream latency.
    pub async fn next_batches(
        &mut self,
        node_id: &str,
        split: bool,
    ) -> std::io::Result<Vec<Outgoing>> {
        let mut reader = match self.reader.take() {
            Some(r) => r,
            None => self.spool.reader(),
        };
        let (max_records, max_bytes) = (self.opts.batch_size, self.opts.batch_max_bytes);
        let hot = self.hot_from > 0
            && reader.next_seq() >= self.hot_from
            && reader.available() <= max_records as u64;
        let (mut reader, res) = if hot {
            let res = read_batches(
                &mut reader,
                max_records,
                max_bytes,
                node_id,
                &self.node.node,
                split,
            );
            (reader, res)
        } else {
            let node_id = node_id.to_string();
            let node = self.node.node.clone();
            let res = tokio::task::spawn_blocking(move || {
                let res = read_batches(&mut reader, max_records, max_bytes, &node_id, &node, split);
                (reader, res)
            })
            .await;
            match res {
                Ok(x) => x,
                Err(e) => return Err(std::io::Error::other(format!("spool read task: {e}"))),
            }
        };
        let lost = reader.take_lost();
        if res.is_ok() && reader.available() == 0 {
            self.hot_from = reader.next_seq();
        }
        self.reader = Some(reader);
        if lost > 0 {
            record_drop(
                &self.stats,
                &self.events,
                &self.name,
                lost,
                "corrupt records in the spool",
                true,
            );
        }
        if self.reader().available() == 0 {
            self.pending_since = None;
        }
        res
    }

    /// Counts a transmission of records `first..=last`.
    pub fn note_sent(&mut self, first: u64, last: u64, records: u64) {
        self.stats.sent.fetch_add(records, Ordering::Relaxed);
        if first <= self.high_sent {
            let again = self.high_sent.min(last) - first + 1;
            self.stats
                .retried
                .fetch_add(again.min(records), Ordering::Relaxed);
        }
        self.high_sent = self.high_sent.max(last);
    }

    /// Moves the acked cursor to `seq`.
    pub fn note_acked(&self, seq: u64) {
        let n = self.spool.ack(seq);
        self.stats.acked.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_connected(&self, up: bool) {
        self.stats.connected.store(up, Ordering::Relaxed);
    }

    /// Records a failure (counted, kept as the sink's last error, logged).
    pub fn failed(&self, e: &str) {
        self.stats.set_error(e);
        self.set_connected(false);
        tracing::warn!(sink = %self.name, error = %e, "upstream");
    }
}

/// Reads up to `max_records` records (about `max_bytes`) from `reader`, framed as `Batch`
/// messages; split into runs of samples and runs of events when `split`.
fn read_batches(
    reader: &mut SpoolReader,
    max_records: usize,
    max_bytes: usize,
    node_id: &str,
    node: &str,
    split: bool,
) -> std::io::Result<Vec<Outgoing>> {
    let mut outs: Vec<Outgoing> = Vec::new();
    let mut cur: Option<(Outgoing, Vec<u8>)> = None;
    let res = reader.read(max_records, max_bytes, |seq, body| {
        let kind = if split {
            wire::body_kind(body)
        } else {
            BodyKind::Unknown
        };
        if cur.as_ref().is_some_and(|(o, _)| o.kind != kind) {
            if let Some((mut o, buf)) = cur.take() {
                o.payload = Bytes::from(buf);
                outs.push(o);
            }
        }
        let (o, buf) = cur.get_or_insert_with(|| {
            let mut buf = Vec::with_capacity(max_bytes.min(64 << 10) + 256);
            wire::batch_header(&mut buf, node_id, node);
            (
                Outgoing {
                    kind,
                    first: seq,
                    last: seq,
                    records: 0,
                    payload: Bytes::new(),
                },
                buf,
            )
        });
        wire::batch_record(buf, seq, body);
        o.last = seq;
        o.records += 1;
    });
    if let Some((mut o, buf)) = cur.take() {
        o.payload = Bytes::from(buf);
        outs.push(o);
    }
    res.map(|_| outs)
}

/// Exponential backoff with jitter, for reconnects.
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
    seed: std::collections::hash_map::RandomState,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
            seed: std::collections::hash_map::RandomState::new(),
        }
    }
    /// The next delay: doubling up to the max, each with ±20% jitter so a fleet does not
    /// reconnect in step.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let mut h = self.seed.build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos() ^ d.as_nanos());
        let jitter = (h.finish() % 400) as f64 / 1000.0 + 0.8;
        d.mul_f64(jitter)
    }
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Sleeps until `at`, or forever when there is no deadline.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

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
    let net = Net {
        name: cfg.name.clone(),
        spool: spool.clone(),
        reader: None,
        stats: stats.clone(),
        events: ctx.events.clone(),
        node: ctx.node.clone(),
        opts: NetOptions::from(cfg),
        stop: stop_rx.clone(),
        high_sent: 0,
        pending_since: None,
        hot_from: 0,
    };
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
