//! The sender's side of a network sink's spool, which the `grpc` and `nats` senders share:
//! reading batches, acks, retry accounting, reconnect backoff. It is apart from `network`, which
//! starts the senders, so that the dependencies run one way: `network` → `grpc`/`nats` → `net`.

use super::{record_drop, SinkConfig, SinkStats};
use crate::events::EventLog;
use crate::spool::{Spool, SpoolReader};
use crate::upstream::wire::{self, BodyKind};
use crate::upstream::NodeInfo;
use bytes::Bytes;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
    pub(super) fn from(cfg: &SinkConfig) -> NetOptions {
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
    /// A sender's view of a freshly opened spool; nothing read or sent yet.
    pub(super) fn new(
        name: String,
        spool: Arc<Spool>,
        stats: Arc<SinkStats>,
        events: Arc<EventLog>,
        node: Arc<NodeInfo>,
        opts: NetOptions,
        stop: watch::Receiver<bool>,
    ) -> Net {
        Net {
            name,
            spool,
            reader: None,
            stats,
            events,
            node,
            opts,
            stop,
            high_sent: 0,
            pending_since: None,
            hot_from: 0,
        }
    }

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
