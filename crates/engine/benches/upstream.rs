//! A quick harness for the reporting path (the full benchmark is a later issue):
//!
//! 1. spool append: encode + frame + checksum + `write()` per record, in batches;
//! 2. throughput: samples/s through the `grpc` sink to the reference receiver on loopback
//!    (the receiver writes every record as a JSON line, as it does in production);
//! 3. latency at a fixed rate: sample timestamp to arrival at an upstream that acks at once.
//!
//! `cargo bench -p nodeagent-engine --bench upstream` (release profile). Numbers go to stdout.

#![allow(clippy::unwrap_used)]

use nodeagent_engine::sinks::{self, Record, SinkConfig, SinkContext};
use nodeagent_engine::spool::{FsyncPolicy, Spool, SpoolOptions};
use nodeagent_engine::upstream::proto::upstream_server::{Upstream, UpstreamServer};
use nodeagent_engine::upstream::proto::{
    Ack, Batch, HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse,
};
use nodeagent_engine::upstream::receiver::{Receiver, ReceiverOptions};
use nodeagent_engine::upstream::{wire, NodeInfo};
use nodeagent_engine::EventLog;
use nodeagent_types::{Kind, Memory, Sample, Timestamp};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn record(i: u64) -> Record {
    Record {
        node: "bench".into(),
        seq: 0,
        id: "0123456789abcdef".into(),
        name: format!("obj-{}", i % 100),
        kind: Kind::Process,
        sample: Sample {
            id: "0123456789abcdef".into(),
            ts: Timestamp::now(),
            seq: i,
            cpu_usage_ns: Some(123_456_789 + i),
            cpu_throttled_ns: Some(0),
            memory_bytes: Some(64 << 20),
            memory_limit_bytes: Some(128 << 20),
            oom_kills: Some(0),
            pids: Some(3),
            io_read_bytes: Some(4096),
            io_write_bytes: Some(8192),
            ..Sample::default()
        },
    }
}

fn spool_append() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SpoolOptions {
        fsync: FsyncPolicy::Never,
        ..SpoolOptions::default()
    };
    let (spool, mut w, _) = Spool::open(dir.path(), opts).unwrap();
    let recs: Vec<Record> = (0..100).map(record).collect();
    let n = 2_000_000u64;
    let start = Instant::now();
    for _ in 0..n / 100 {
        for r in &recs {
            w.push(|b| wire::encode_sample_body(r, b));
        }
        w.commit().unwrap();
        // Keep the spool small: acknowledge as we go, as a live upstream would.
        spool.ack(spool.last_seq());
        w.maintain().unwrap();
    }
    let el = start.elapsed();
    let bytes = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum::<u64>();
    println!(
        "spool append: {n} records in batches of 100: {:.0} ns/record ({:.2} M records/s), {} bytes/record framed",
        el.as_nanos() as f64 / n as f64,
        n as f64 / el.as_secs_f64() / 1e6,
        {
            let mut b = Vec::new();
            wire::encode_sample_body(&recs[0], &mut b);
            b.len() + nodeagent_engine::spool::FRAME_HEADER
        }
    );
    let _ = bytes;
    // Reading back (what the sender does), from the page cache.
    let dir = tempfile::tempdir().unwrap();
    let (spool, mut w, _) = Spool::open(dir.path(), opts).unwrap();
    for _ in 0..5_000 {
        for r in &recs {
            w.push(|b| wire::encode_sample_body(r, b));
        }
        w.commit().unwrap();
    }
    let mut r = spool.reader();
    let start = Instant::now();
    let mut got = 0u64;
    let mut out = Vec::with_capacity(1 << 20);
    loop {
        out.clear();
        let res = r
            .read(1000, 512 << 10, |seq, body| {
                wire::batch_record(&mut out, seq, body)
            })
            .unwrap();
        if res.records == 0 {
            break;
        }
        got += res.records as u64;
    }
    let el = start.elapsed();
    println!(
        "spool read + batch framing: {got} records: {:.0} ns/record",
        el.as_nanos() as f64 / got as f64
    );
}

fn throughput(rt: &tokio::runtime::Runtime, recv_rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let receiver = Receiver::open(ReceiverOptions::new(&out)).unwrap();
    let listener = recv_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let r2 = receiver.clone();
    recv_rt.spawn(async move {
        r2.serve(listener, None, std::future::pending())
            .await
            .unwrap();
    });
    let events = Arc::new(EventLog::new(100));
    let cfg = SinkConfig {
        queue: Some(65_536),
        spool_max_bytes: Some(Memory(4 << 30)),
        ..SinkConfig::grpc("up", &format!("http://{addr}"))
    };
    let sink = rt.block_on(async {
        sinks::start(
            &cfg,
            &SinkContext {
                state_dir: dir.path().join("state"),
                file_max_bytes: 1 << 30,
                events: events.clone(),
                node: Arc::new(NodeInfo::named("bench")),
            },
        )
        .unwrap()
    });
    // Warm up: connect and register.
    sink.try_send(vec![record(0)], None);
    while sink.status().acked == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = 5.0;
    let batch = 100u64;
    let start = Instant::now();
    let mut sent = 0u64;
    // Offer as fast as the sink takes it (100 records per message, like a report task's burst),
    // without overflowing its queue.
    while start.elapsed().as_secs_f64() < secs {
        if sink.status().queue_depth > 50_000 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        sink.try_send((0..batch).map(|i| record(sent + i)).collect(), None);
        sent += batch;
    }
    let offered = start.elapsed();
    // Then wait for the receiver to have it all.
    while sink.status().queue_depth > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let want = sink.status().last_seq.unwrap();
    while sink.status().acked_seq.unwrap() < want {
        std::thread::sleep(Duration::from_millis(5));
    }
    let el = start.elapsed();
    let st = sink.status();
    let recv = receiver
        .stats()
        .records
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "grpc to the reference receiver (loopback, JSON lines to a file): {} samples in {:.2}s = {:.0} samples/s delivered (offered for {:.2}s; receiver wrote {recv}; dropped {})",
        want,
        el.as_secs_f64(),
        want as f64 / el.as_secs_f64(),
        offered.as_secs_f64(),
        st.dropped
    );
    rt.block_on(sink.shutdown(Duration::from_millis(100)));
}

/// An upstream that acks at once and records sample-to-arrival latency.
#[derive(Clone, Default)]
struct Timing {
    lat: Arc<Mutex<Vec<u64>>>,
}

#[tonic::async_trait]
impl Upstream for Timing {
    async fn register(
        &self,
        _: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<RegisterResponse>, tonic::Status> {
        Ok(tonic::Response::new(RegisterResponse {
            node_id: "n".into(),
            lease_id: "l".into(),
            lease_ttl_ms: 60_000,
        }))
    }
    async fn heartbeat(
        &self,
        _: tonic::Request<HeartbeatRequest>,
    ) -> Result<tonic::Response<HeartbeatResponse>, tonic::Status> {
        Ok(tonic::Response::new(HeartbeatResponse {
            lease_ttl_ms: 60_000,
        }))
    }
    type ReportStream =
        Pin<Box<dyn futures::Stream<Item = Result<Ack, tonic::Status>> + Send + 'static>>;
    async fn report(
        &self,
        req: tonic::Request<tonic::Streaming<Batch>>,
    ) -> Result<tonic::Response<Self::ReportStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        let lat = self.lat.clone();
        let s = async_stream(move |tx| async move {
            while let Ok(Some(b)) = inbound.message().await {
                let now = Timestamp::now().as_nanos();
                {
                    let mut l = lat.lock().unwrap();
                    for r in &b.records {
                        if let Some(nodeagent_engine::upstream::proto::record::Body::Sample(s)) =
                            &r.body
                        {
                            let ts = s.sample.as_ref().map_or(0, |x| x.ts_unix_nanos);
                            l.push(now.saturating_sub(ts));
                        }
                    }
                }
                let last = b.records.last().map_or(0, |r| r.seq);
                if tx.send(Ok(Ack { seq: last })).await.is_err() {
                    break;
                }
            }
        });
        Ok(tonic::Response::new(s))
    }
}

fn async_stream<F, Fut>(
    f: F,
) -> Pin<Box<dyn futures::Stream<Item = Result<Ack, tonic::Status>> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Ack, tonic::Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn latency(rt: &tokio::runtime::Runtime, recv_rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let timing = Timing::default();
    let listener = recv_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let t2 = timing.clone();
    recv_rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(UpstreamServer::new(t2))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let events = Arc::new(EventLog::new(100));
    let cfg = SinkConfig {
        spool_fsync: std::env::var("BENCH_FSYNC")
            .ok()
            .map(|v| v.parse().unwrap()),
        ..SinkConfig::grpc("up", &format!("http://{addr}"))
    };
    let sink = rt.block_on(async {
        sinks::start(
            &cfg,
            &SinkContext {
                state_dir: dir.path().join("state"),
                file_max_bytes: 1 << 30,
                events: events.clone(),
                node: Arc::new(NodeInfo::named("bench")),
            },
        )
        .unwrap()
    });
    // 10,000 samples/s: 100 objects reporting every 10 ms, in one message per tick (the
    // collector gathers the reports due at one instant per sink).
    let start = Instant::now();
    let mut next = start;
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(5) {
        let batch: Vec<_> = (i..i + 100).map(record).collect();
        i += 100;
        sink.try_send(batch, None);
        next += Duration::from_millis(10);
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut l = timing.lat.lock().unwrap().clone();
    l.sort_unstable();
    let p = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)] as f64 / 1e6;
    println!(
        "latency at 10,000 samples/s (100 x 100/s; sample ts to arrival, default batch_age): n={} p50={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
        l.len(),
        p(0.5),
        p(0.99),
        p(0.999),
        p(1.0)
    );
    rt.block_on(sink.shutdown(Duration::from_millis(100)));
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing useful: run
    // only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let recv_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "spool" {
        spool_append();
    }
    if only.is_empty() || only == "throughput" {
        throughput(&rt, &recv_rt);
    }
    if only.is_empty() || only == "latency" {
        latency(&rt, &recv_rt);
    }
}
