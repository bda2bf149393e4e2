//! The `nats` sink against a real `nats-server -js` (Debian's package, which the test command
//! installs), started and stopped by the test: delivery with publish acks, an outage, and what
//! a JetStream consumer reads back.

use async_nats::jetstream;
use nodeagent_engine::sinks::{self, Record, SinkConfig, SinkContext, SinkHandle};
use nodeagent_engine::upstream::proto::{self, record::Body};
use nodeagent_engine::upstream::NodeInfo;
use nodeagent_engine::EventLog;
use nodeagent_types::{EventKind, Kind, Sample, Timestamp};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE: &str = "node.b";

/// `nats-server` from Debian's package; a missing binary fails the test with what to install.
fn nats_server_bin() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nats-server is not installed: install Debian's `nats-server` package (scripts/test.sh does)");
}

struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    log: PathBuf,
}

impl NatsServer {
    fn start(port: u16, store: &Path) -> NatsServer {
        let log = store.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let child = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start nats-server");
        let s = NatsServer {
            child: Some(child),
            port,
            store: store.to_path_buf(),
            log,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nats-server did not listen on {port}; its log:\n{}",
                std::fs::read_to_string(&s.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        let again = NatsServer::start(self.port, &self.store.clone());
        *self = again;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn records(from: u64, n: u64) -> Vec<Record> {
    (from..from + n)
        .map(|i| Record {
            node: NODE.into(),
            seq: 0,
            id: "00000000000000aa".into(),
            name: "job".into(),
            kind: Kind::Process,
            sample: Sample {
                id: "00000000000000aa".into(),
                ts: Timestamp::now(),
                seq: i,
                pids: Some(2),
                ..Sample::default()
            },
        })
        .collect()
}

/// Every message of the stream: (subject, headers' msg id, batch).
async fn read_stream(url: &str, stream: &str) -> Vec<(String, String, proto::Batch)> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("stream");
    let info = s.info().await.expect("info").clone();
    let mut out = Vec::new();
    if info.state.messages == 0 {
        return out;
    }
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let m = s.get_raw_message(seq).await.expect("message");
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let batch = proto::Batch::decode(m.payload.as_ref()).expect("a Batch");
        out.push((m.subject.to_string(), id, batch));
    }
    out
}

async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every record up to the last seq, at least `at_least`, is acknowledged (records
/// just handed to `try_send` are sequenced on the sink's task, a moment later).
async fn wait_acked(sink: &SinkHandle, at_least: u64) -> u64 {
    eventually("every record acknowledged", Duration::from_secs(30), || {
        let st = sink.status();
        let last = st.last_seq.filter(|l| *l >= at_least)?;
        (last > 0 && st.acked_seq == Some(last) && st.queue_depth == 0).then_some(last)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_to_jetstream_across_a_server_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = NatsServer::start(free_port(), &dir.path().join("js"));
    let events = Arc::new(EventLog::new(1000));
    let cfg = SinkConfig::nats("bus", &server.url());
    let ctx = SinkContext {
        state_dir: dir.path().join("state"),
        file_max_bytes: 1 << 30,
        events: events.clone(),
        node: Arc::new(NodeInfo::named(NODE)),
    };
    let sink = sinks::start(&cfg, &ctx).expect("sink");
    for i in 0..10 {
        sink.try_send(records(i * 10, 10), None);
    }
    events.emit(EventKind::AgentStarted, None, "hi", serde_json::Value::Null);
    let first = wait_acked(&sink, 101).await;
    assert_eq!(first, 101);

    server.stop();
    for i in 0..10 {
        sink.try_send(records(1000 + i * 10, 10), None);
    }
    eventually("the outage noticed", Duration::from_secs(10), || {
        (sink.status().connected == Some(false)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    let last = wait_acked(&sink, 201).await;
    assert_eq!(last, 201);
    let st = sink.status();
    assert_eq!(st.dropped, 0);

    let msgs = read_stream(&server.url(), "NODEAGENT").await;
    let mut seqs = Vec::new();
    for (subject, id, batch) in &msgs {
        assert_eq!(batch.node, NODE);
        let first = batch.records.first().expect("records").seq;
        let last = batch.records.last().expect("records").seq;
        assert_eq!(id, &format!("{NODE}:{first}-{last}"));
        for r in &batch.records {
            match &r.body {
                Some(Body::Sample(_)) => assert_eq!(subject, "nodeagent.node_b.metrics"),
                Some(Body::Event(e)) => {
                    assert_eq!(subject, "nodeagent.node_b.events");
                    assert_eq!(e.kind, "agent_started");
                }
                None => panic!("a record without a body"),
            }
            seqs.push(r.seq);
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs,
        (1..=201).collect::<Vec<_>>(),
        "every seq, after dedup"
    );
    sink.shutdown(Duration::from_secs(1)).await;
}
