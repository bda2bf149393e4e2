//! The reference receiver: a server of the `Upstream` service for demos, tests and benchmarks
//! (`nodeagent sink --listen ADDR --out FILE`).
//!
//! - **Register** answers with a node id (a stable hash of the node name, so it is the same after
//!   a receiver restart) and a lease; **Heartbeat** renews the lease, or answers NOT_FOUND when
//!   the receiver does not know it (after a restart), which makes the agent register again.
//! - **Report** writes each record as a JSON line ([`super::json`]) to the output file, drops
//!   records it already has by (node, seq), and acknowledges a batch once its lines are written
//!   (with `--fsync`, once they are on disk).
//! - On start it reads the output file back, so a restarted receiver still recognises
//!   duplicates; a line torn by a crash at the end of the file is cut off first.
//!
//! It lives in the engine, next to the protocol and the sinks that speak it, so that the sinks'
//! tests and benchmarks run against the real receiver in-process; the binary only adds the
//! command line, logging and signals.

use super::proto::upstream_server::{Upstream, UpstreamServer};
use super::proto::{
    Ack, Batch, HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse,
};
use crate::series::lock;
use futures::Stream;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

/// A set of sequence numbers kept as sorted, disjoint, non-adjacent ranges: memory grows with
/// the number of gaps, not the number of records, and the common case (the next seq after the
/// last) is O(1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    ranges: Vec<(u64, u64)>,
}

impl SeqSet {
    /// Adds `s`; false if it was already there.
    pub fn insert(&mut self, s: u64) -> bool {
        match self.ranges.last_mut() {
            None => {
                self.ranges.push((s, s));
                return true;
            }
            Some(last) if s == last.1.saturating_add(1) => {
                last.1 = s;
                return true;
            }
            Some(last) if s > last.1 => {
                self.ranges.push((s, s));
                return true;
            }
            _ => {}
        }
        // The first range that ends at or after `s`.
        let i = self.ranges.partition_point(|r| r.1 < s);
        if self.ranges[i].0 <= s {
            return false;
        }
        let joins_prev = i > 0 && self.ranges[i - 1].1 + 1 == s;
        let joins_next = s + 1 == self.ranges[i].0;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = s,
            (false, true) => self.ranges[i].0 = s,
            (false, false) => self.ranges.insert(i, (s, s)),
        }
        true
    }

    pub fn contains(&self, s: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 < s);
        self.ranges.get(i).is_some_and(|r| r.0 <= s)
    }

    /// How many numbers the set holds.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| r.1 - r.0 + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// The JSON-lines output file (appended to; read back on start for deduplication).
    pub out: PathBuf,
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// `fdatasync` the output before acknowledging a batch.
    pub fsync: bool,
}

impl ReceiverOptions {
    pub fn new(out: impl Into<PathBuf>) -> Self {
        ReceiverOptions {
            out: out.into(),
            lease_ttl: Duration::from_secs(30),
            fsync: false,
        }
    }
}

/// Counters of a running receiver.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    /// Records written to the output file (duplicates excluded).
    pub records: AtomicU64,
    /// Records dropped as already written.
    pub duplicates: AtomicU64,
    pub batches: AtomicU64,
    pub registrations: AtomicU64,
    pub heartbeats: AtomicU64,
}

struct Store {
    file: File,
    path: PathBuf,
    seen: HashMap<String, SeqSet>,
    buf: Vec<u8>,
    fsync: bool,
}

impl Store {
    fn open(path: &Path, fsync: bool) -> io::Result<(Store, u64)> {
        let at = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(at)?;
        }
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(at(e)),
        };
        #[derive(serde::Deserialize)]
        struct Key {
            node: String,
            seq: u64,
        }
        let mut seen: HashMap<String, SeqSet> = HashMap::new();
        let mut good = 0usize;
        let mut loaded = 0u64;
        let mut p = 0usize;
        while p < data.len() {
            let Some(nl) = data[p..].iter().position(|b| *b == b'\n') else {
                break;
            };
            let line = &data[p..p + nl];
            match serde_json::from_slice::<Key>(line) {
                Ok(k) => {
                    seen.entry(k.node).or_default().insert(k.seq);
                    loaded += 1;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), offset = p, error = %e, "receiver: skipping a line that is not a record");
                }
            }
            p += nl + 1;
            good = p;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(at)?;
        if good < data.len() {
            tracing::warn!(file = %path.display(), bytes = data.len() - good, "receiver: cutting off a torn last line (its records were never acknowledged)");
            file.set_len(good as u64).map_err(at)?;
        }
        Ok((
            Store {
                file,
                path: path.to_path_buf(),
                seen,
                buf: Vec::with_capacity(1 << 20),
                fsync,
            },
            loaded,
        ))
    }

    /// Writes the batch's new records; returns (last seq of the batch, written, duplicates).
    fn write(&mut self, batch: Batch) -> io::Result<(u64, u64, u64)> {
        self.buf.clear();
        let seen = self.seen.entry(batch.node.clone()).or_default();
        // Few ranges (one per gap), so this copy is cheap; it is put back if the write fails.
        let before = seen.clone();
        let (mut last, mut written, mut dups) = (0, 0, 0);
        for r in batch.records {
            last = r.seq;
            if !seen.insert(r.seq) {
                dups += 1;
                continue;
            }
            written += 1;
            super::json::write_record_line(&batch.node, r, &mut self.buf);
        }
        if !self.buf.is_empty() {
            let res = self.file.write_all(&self.buf).and_then(|()| {
                if self.fsync {
                    self.file.sync_data()
                } else {
                    Ok(())
                }
            });
            if let Err(e) = res {
                // Not acknowledged, so the agent sends these again: forget them here too.
                // (A partial line is cut off by the next start.)
                self.seen.insert(batch.node, before);
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", self.path.display()),
                ));
            }
        }
        Ok((last, written, dups))
    }
}

struct Lease {
    node: String,
    lease_id: String,
    expires: Instant,
}

struct Inner {
    store: Mutex<Store>,
    leases: Mutex<HashMap<String, Lease>>,
    opts: ReceiverOptions,
    stats: ReceiverStats,
    stop: watch::Receiver<bool>,
    stop_tx: watch::Sender<bool>,
    random: std::collections::hash_map::RandomState,
}

/// The reference receiver. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

/// FNV-1a: a stable node id from the node's name (std's hashers are seeded per process).
fn node_id(node: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Receiver {
    /// Opens the output file and loads the (node, seq) pairs it already holds.
    pub fn open(opts: ReceiverOptions) -> io::Result<Receiver> {
        let (store, loaded) = Store::open(&opts.out, opts.fsync)?;
        if loaded > 0 {
            tracing::info!(records = loaded, file = %opts.out.display(), "receiver: loaded records for deduplication");
        }
        let (stop_tx, stop) = watch::channel(false);
        Ok(Receiver {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                leases: Mutex::new(HashMap::new()),
                opts,
                stats: ReceiverStats::default(),
                stop,
                stop_tx,
                random: std::collections::hash_map::RandomState::new(),
            }),
        })
    }

    pub fn stats(&self) -> &ReceiverStats {
        &self.inner.stats
    }

    /// The (node, seq) pairs stored so far, per node.
    pub fn seen(&self) -> HashMap<String, SeqSet> {
        lock(&self.inner.store).seen.clone()
    }

    /// The gRPC service, accepting and sending gzip.
    pub fn service(&self) -> UpstreamServer<Receiver> {
        UpstreamServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(16 << 20)
    }

    /// Serves on `listener` until `shutdown` resolves; open report streams are ended then, so
    /// shutdown does not wait for agents to hang up.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<tonic::transport::ServerTlsConfig>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let mut builder = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)));
        if let Some(t) = tls {
            builder = builder.tls_config(t)?;
        }
        let stop = self.inner.stop_tx.clone();
        let svc = self.service();
        builder
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await
    }

    fn lease_id(&self) -> String {
        // A per-process random key over the time and a counter: unique, and not guessable from
        // outside the process.
        let mut h = self.inner.random.build_hasher();
        h.write_u64(nodeagent_types::Timestamp::now().as_nanos());
        h.write_u64(self.inner.stats.registrations.load(Ordering::Relaxed));
        format!("{:016x}", h.finish())
    }

    /// Whether `id` is a registered node with a live lease, and its name.
    fn known(&self, id: &str) -> Option<String> {
        let leases = lock(&self.inner.leases);
        leases
            .get(id)
            .filter(|l| l.expires > Instant::now())
            .map(|l| l.node.clone())
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it before the task awaits anything else.
    let _ = rx.wait_for(|s| *s).await;
}

type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

#[tonic::async_trait]
impl Upstream for Receiver {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let r = req.into_inner();
        if r.node.is_empty() {
            return Err(Status::invalid_argument("node: empty"));
        }
        let id = node_id(&r.node);
        let lease_id = self.lease_id();
        let ttl = self.inner.opts.lease_ttl;
        lock(&self.inner.leases).insert(
            id.clone(),
            Lease {
                node: r.node.clone(),
                lease_id: lease_id.clone(),
                expires: Instant::now() + ttl,
            },
        );
        self.inner
            .stats
            .registrations
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            node = %r.node,
            node_id = %id,
            hostname = %r.hostname,
            cpus = r.cpus,
            memory = r.memory_total_bytes,
            kernel = %r.kernel,
            cgroup = %r.cgroup_version,
            drivers = ?r.drivers,
            labels = ?r.labels,
            last_seq = r.last_seq,
            "receiver: node registered"
        );
        Ok(Response::new(RegisterResponse {
            node_id: id,
            lease_id,
            lease_ttl_ms: ttl.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let ttl = self.inner.opts.lease_ttl;
        let mut leases = lock(&self.inner.leases);
        match leases.get_mut(&r.node_id) {
            Some(l) if l.lease_id == r.lease_id && l.expires > Instant::now() => {
                l.expires = Instant::now() + ttl;
                self.inner.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                Ok(Response::new(HeartbeatResponse {
                    lease_ttl_ms: ttl.as_millis() as u64,
                }))
            }
            _ => Err(Status::not_found(
                "unknown or expired lease; register again",
            )),
        }
    }

    type ReportStream = AckStream;

    async fn report(
        &self,
        req: Request<Streaming<Batch>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<Ack, Status>>(64);
        let me = self.clone();
        let mut stop = self.inner.stop.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    m = inbound.message() => m,
                    () = stopped(&mut stop) => {
                        let _ = tx.send(Err(Status::unavailable("the receiver is shutting down"))).await;
                        return;
                    }
                };
                let batch = match next {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(s) => {
                        tracing::debug!(status = %s, "receiver: report stream ended");
                        return;
                    }
                };
                match me.known(&batch.node_id) {
                    Some(node) if node == batch.node => {}
                    _ => {
                        let _ = tx
                            .send(Err(Status::not_found(format!(
                                "unknown node id {:?} for node {:?}; register first",
                                batch.node_id, batch.node
                            ))))
                            .await;
                        return;
                    }
                }
                // Without --fsync a write only reaches the page cache (microseconds for a batch):
                // it is done here, and the lines are in the file as soon as the batch has
                // arrived. Handing it to a blocking thread cost two thread wake-ups per batch,
                // milliseconds on a loaded machine. `fdatasync` can take tens of milliseconds,
                // so with --fsync it runs off the runtime.
                let res = if me.inner.opts.fsync {
                    let store = me.clone();
                    tokio::task::spawn_blocking(move || lock(&store.inner.store).write(batch)).await
                } else {
                    Ok(lock(&me.inner.store).write(batch))
                };
                match res {
                    Ok(Ok((last, written, dups))) => {
                        let st = &me.inner.stats;
                        st.batches.fetch_add(1, Ordering::Relaxed);
                        st.records.fetch_add(written, Ordering::Relaxed);
                        st.duplicates.fetch_add(dups, Ordering::Relaxed);
                        if tx.send(Ok(Ack { seq: last })).await.is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "receiver: writing records");
                        let _ = tx
                            .send(Err(Status::unavailable(format!("storing records: {e}"))))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seq_set_merges_ranges() {
        let mut s = SeqSet::default();
        for x in [1, 2, 3, 7, 5, 6, 4, 10] {
            assert!(s.insert(x), "{x}");
        }
        assert_eq!(s.ranges(), &[(1, 7), (10, 10)]);
        assert!(!s.insert(5));
        assert!(!s.insert(10));
        assert!(s.contains(7) && !s.contains(8) && !s.contains(0));
        assert_eq!(s.len(), 8);
    }

    proptest! {
        #[test]
        fn seq_set_is_a_set(xs in proptest::collection::vec(0u64..200, 0..400)) {
            let mut s = SeqSet::default();
            let mut b = std::collections::BTreeSet::new();
            for x in xs {
                prop_assert_eq!(s.insert(x), b.insert(x));
            }
            prop_assert_eq!(s.len(), b.len() as u64);
            for w in s.ranges().windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0, "disjoint and not adjacent");
            }
            for x in 0..200 {
                prop_assert_eq!(s.contains(x), b.contains(&x));
            }
        }
    }

    #[test]
    fn a_restarted_store_still_dedups_and_cuts_a_torn_line() {
        let d = tempfile::tempdir().expect("tempdir");
        let out = d.path().join("out.jsonl");
        let batch = |seqs: &[u64]| Batch {
            node_id: String::new(),
            node: "n1".into(),
            records: seqs
                .iter()
                .map(|&seq| super::super::proto::Record { seq, body: None })
                .collect(),
        };
        {
            let (mut s, loaded) = Store::open(&out, false).expect("open");
            assert_eq!(loaded, 0);
            assert_eq!(s.write(batch(&[1, 2, 3])).expect("write"), (3, 3, 0));
            assert_eq!(s.write(batch(&[3, 4])).expect("write"), (4, 1, 1));
        }
        // A line torn by a crash.
        let mut f = OpenOptions::new().append(true).open(&out).expect("open");
        f.write_all(b"{\"node\":\"n1\",\"se").expect("write");
        drop(f);
        let (mut s, loaded) = Store::open(&out, false).expect("reopen");
        assert_eq!(loaded, 4);
        assert_eq!(s.write(batch(&[2, 4, 5])).expect("write"), (5, 1, 2));
        let text = std::fs::read_to_string(&out).expect("read");
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                    .as_u64()
                    .expect("seq")
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn node_ids_are_stable() {
        assert_eq!(node_id("a"), node_id("a"));
        assert_ne!(node_id("a"), node_id("b"));
        assert_eq!(node_id("a").len(), 16);
    }
}
