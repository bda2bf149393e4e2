//! The `grpc` sink against the real reference receiver, in-process: delivery in order, an
//! upstream that is down at start and one that restarts, a restart of the sink on its spool,
//! and the spool's cap.

use nodeagent_engine::sinks::{self, Record, SinkConfig, SinkContext, SinkHandle};
use nodeagent_engine::upstream::receiver::{Receiver, ReceiverOptions};
use nodeagent_engine::upstream::NodeInfo;
use nodeagent_engine::EventLog;
use nodeagent_types::{EventKind, Kind, Memory, Sample, Timestamp};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const NODE: &str = "node-a";

fn records(from: u64, n: u64) -> Vec<Record> {
    (from..from + n)
        .map(|i| Record {
            node: NODE.into(),
            seq: 0,
            id: "0123456789abcdef".into(),
            name: "web-1".into(),
            kind: Kind::Process,
            sample: Sample {
                id: "0123456789abcdef".into(),
                ts: Timestamp::now(),
                seq: i,
                cpu_usage_ns: Some(i * 1000),
                memory_bytes: Some(4096),
                pids: Some(1),
                ..Sample::default()
            },
        })
        .collect()
}

struct Upstream {
    receiver: Receiver,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts the reference receiver on `addr` (port 0: any).
    async fn start(addr: SocketAddr, out: &Path) -> (Upstream, SocketAddr) {
        let receiver = Receiver::open(ReceiverOptions::new(out)).expect("receiver");
        // The port of a receiver that just stopped may take a moment to be free again.
        let listener = {
            let start = Instant::now();
            loop {
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(e) if start.elapsed() < Duration::from_secs(5) => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("bind {addr}: {e}"),
                }
            }
        };
        let local = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let r = receiver.clone();
        let task = tokio::spawn(async move {
            r.serve(listener, None, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        (
            Upstream {
                receiver,
                stop: Some(tx),
                task,
            },
            local,
        )
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("receiver stops")
            .expect("receiver task");
    }

    /// The seqs the receiver holds for NODE.
    fn seqs(&self) -> Vec<(u64, u64)> {
        self.receiver
            .seen()
            .get(NODE)
            .map(|s| s.ranges().to_vec())
            .unwrap_or_default()
    }
}

fn ctx(state: &Path, events: &Arc<EventLog>) -> SinkContext {
    SinkContext {
        state_dir: state.to_path_buf(),
        file_max_bytes: 1 << 30,
        events: events.clone(),
        node: Arc::new(NodeInfo::named(NODE)),
    }
}

async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything the sink numbered, 1..=last, is at the receiver.
/// Waits until the receiver has every record up to the sink's last seq, which must be at least
/// `at_least`: records just handed to `try_send` get their seqs on the sink's task, and until
/// then the status would say that everything (before them) is delivered.
async fn wait_all_delivered(up: &Upstream, sink: &SinkHandle, at_least: u64) -> u64 {
    eventually(
        "every record at the receiver",
        Duration::from_secs(30),
        || {
            let st = sink.status();
            let last = st.last_seq.filter(|l| *l >= at_least)?;
            (st.acked_seq == Some(last) && st.queue_depth == 0 && up.seqs() == vec![(1, last)])
                .then_some(last)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_everything_across_an_outage_and_a_sink_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let state = dir.path().join("state");
    let events = Arc::new(EventLog::new(1000));
    let (up, addr) = Upstream::start("127.0.0.1:0".parse().expect("addr"), &out).await;
    let cfg = SinkConfig::grpc("up", &format!("http://{addr}"));
    let sink = sinks::start(&cfg, &ctx(&state, &events)).expect("sink");
    for i in 0..20 {
        sink.try_send(records(i * 10, 10), None);
    }
    let last = wait_all_delivered(&up, &sink, 200).await;
    assert!(last >= 200, "{last}");
    assert_eq!(
        up.receiver
            .stats()
            .registrations
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let st = sink.status();
    assert_eq!(st.dropped, 0);
    assert_eq!(st.connected, Some(true));
    assert!(st.node_id.is_some());

    // The upstream goes away; records pile up in the spool.
    up.stop().await;
    for i in 0..30 {
        sink.try_send(records(1000 + i * 10, 10), None);
    }
    eventually(
        "records spooled during the outage",
        Duration::from_secs(10),
        || {
            let st = sink.status();
            (st.spool_records >= 300 && st.connected == Some(false)).then_some(())
        },
    )
    .await;
    // The sink stops (as the agent does at shutdown) and a new one starts on the same spool.
    sink.shutdown(Duration::from_millis(100)).await;
    let sink = sinks::start(&cfg, &ctx(&state, &events)).expect("sink again");
    for i in 0..5 {
        sink.try_send(records(5000 + i * 10, 10), None);
    }
    // The upstream comes back on the same address, with the same output file.
    let (up, _) = Upstream::start(addr, &out).await;
    let last2 = wait_all_delivered(&up, &sink, last + 350).await;
    assert!(last2 >= last + 350, "{last} {last2}");
    let st = sink.status();
    assert_eq!(st.dropped, 0);
    assert_eq!(st.spool_records, 0);
    // The file holds every seq once (the receiver deduplicated any resend).
    let text = std::fs::read_to_string(&out).expect("out");
    let mut seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    let n = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "no duplicates in the file");
    assert_eq!(seqs, (1..=last2).collect::<Vec<_>>());
    // Events from the event log travel in the same sequence.
    events.emit(
        EventKind::AgentStarted,
        None,
        "hello",
        serde_json::Value::Null,
    );
    eventually("the event in the spool", Duration::from_secs(10), || {
        (sink.status().last_seq == Some(last2 + 1)).then_some(())
    })
    .await;
    let last3 = wait_all_delivered(&up, &sink, last2 + 1).await;
    assert_eq!(last3, last2 + 1);
    let text = std::fs::read_to_string(&out).expect("out");
    let ev: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("line")).expect("json");
    assert_eq!(ev["event"]["kind"], "agent_started");
    assert_eq!(ev["seq"], last3);
    sink.shutdown(Duration::from_secs(1)).await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_the_upstream_down_and_registers_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let events = Arc::new(EventLog::new(1000));
    // A free port with nothing on it yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let cfg = SinkConfig::grpc("up", &format!("http://{addr}"));
    let started = Instant::now();
    let sink = sinks::start(&cfg, &ctx(&dir.path().join("state"), &events)).expect("sink");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "start-up does not wait for the upstream"
    );
    sink.try_send(records(0, 50), None);
    eventually(
        "the connection failure to be visible",
        Duration::from_secs(10),
        || {
            let st = sink.status();
            (st.connected == Some(false)
                && st.errors > 0
                && st.last_error.is_some()
                && st.spool_records == 50)
                .then_some(())
        },
    )
    .await;
    let (up, _) = Upstream::start(addr, &out).await;
    wait_all_delivered(&up, &sink, 50).await;
    assert_eq!(
        up.receiver
            .stats()
            .registrations
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    sink.shutdown(Duration::from_secs(1)).await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_the_oldest_counts_them_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = Arc::new(EventLog::new(10_000));
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let cfg = SinkConfig {
        spool_segment_bytes: Some(Memory(16 << 10)),
        spool_max_bytes: Some(Memory(64 << 10)),
        ..SinkConfig::grpc("up", &format!("http://{addr}"))
    };
    let sink = sinks::start(&cfg, &ctx(&dir.path().join("state"), &events)).expect("sink");
    for i in 0..200 {
        sink.try_send(records(i * 10, 10), None);
    }
    // Wait for quiet: every record (and the `sink_dropped` events the sink forwards to itself)
    // is in the spool or counted as dropped, and nothing changes any more.
    let mut prev = None;
    let st = eventually("drops", Duration::from_secs(10), || {
        let st = sink.status();
        let quiet =
            st.dropped > 0 && st.last_seq.unwrap_or(0) >= 2000 && prev.as_ref() == Some(&st);
        prev = Some(st.clone());
        quiet.then_some(st)
    })
    .await;
    assert!(st.spool_bytes <= 64 << 10, "{st:?}");
    assert_eq!(
        st.dropped + st.spool_records,
        st.last_seq.expect("last_seq"),
        "{st:?}"
    );
    let dropped_events: u64 = events
        .since(None)
        .iter()
        .filter(|e| e.kind == EventKind::SinkDropped)
        .map(|e| e.data["dropped"].as_u64().expect("dropped"))
        .sum();
    assert_eq!(dropped_events, st.dropped);
    sink.shutdown(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_registers_again_when_the_upstream_forgets_the_node() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let events = Arc::new(EventLog::new(1000));
    let (up, addr) = Upstream::start("127.0.0.1:0".parse().expect("addr"), &out).await;
    let cfg = SinkConfig {
        heartbeat_interval: Some(nodeagent_types::Duration::from_millis(100)),
        compression: Some(sinks::Compression::Gzip),
        ..SinkConfig::grpc("up", &format!("http://{addr}"))
    };
    let sink = sinks::start(&cfg, &ctx(&dir.path().join("state"), &events)).expect("sink");
    sink.try_send(records(0, 10), None);
    wait_all_delivered(&up, &sink, 10).await;
    eventually("heartbeats", Duration::from_secs(10), || {
        (up.receiver.stats().heartbeats.load(Relaxed) >= 3).then_some(())
    })
    .await;
    let id = sink.status().node_id.expect("node id");
    // A new receiver knows no lease: the heartbeat or the report stream says so, and the sink
    // registers again, without restarting, and goes on where it was.
    up.stop().await;
    let (up, _) = Upstream::start(addr, &out).await;
    sink.try_send(records(100, 10), None);
    let last = wait_all_delivered(&up, &sink, 20).await;
    assert_eq!(last, 20);
    assert_eq!(up.receiver.stats().registrations.load(Relaxed), 1);
    assert_eq!(sink.status().node_id, Some(id), "the node id is stable");
    assert_eq!(sink.status().dropped, 0);
    sink.shutdown(Duration::from_secs(1)).await;
    up.stop().await;
}
