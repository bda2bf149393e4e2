//! The collector thread driving samples and report tasks, on a procfs fixture (the host target)
//! and a capturing sink.

use nodeagent_drivers::procfs::ProcFs;
use nodeagent_engine::collector::{Collector, Command, Target};
use nodeagent_engine::series::lock;
use nodeagent_engine::sinks::{self, Record, Sink, SinkType};
use nodeagent_engine::{EventLog, Series, SeriesMap};
use nodeagent_types::{Kind, ReportMode};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Capture(Arc<Mutex<Vec<Record>>>);

impl Sink for Capture {
    fn write(&mut self, records: &[Record]) -> std::io::Result<()> {
        lock(&self.0).extend_from_slice(records);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn fixture() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path();
    std::fs::write(
        p.join("stat"),
        "cpu  100 0 50 1000 10 0 5 0 0 0\ncpu0 100 0 50 1000 10 0 5 0 0 0\nprocs_running 2\n",
    )
    .expect("stat");
    std::fs::write(
        p.join("meminfo"),
        "MemTotal: 1000 kB\nMemFree: 400 kB\nMemAvailable: 600 kB\n",
    )
    .expect("meminfo");
    std::fs::write(p.join("loadavg"), "0.50 0.40 0.30 1/100 42\n").expect("loadavg");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_carry_every_sample_once_in_order() {
    let proc = fixture();
    let events = Arc::new(EventLog::new(100));
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = sinks::spawn(
        "cap",
        SinkType::File,
        Box::new(Capture(got.clone())),
        64,
        events,
    )
    .expect("sink thread");
    let c = Collector::start(ProcFs::new(proc.path()), "node-a".into()).expect("collector");
    let map = SeriesMap::default();
    let s = map.insert(Series::new("host".into(), "h".into(), Kind::Host, 1000));
    c.send(Command::Add {
        series: s.clone(),
        target: Target::Host,
        interval: Duration::from_millis(10),
    });
    c.send(Command::PushOnWith {
        id: "host".into(),
        sink: sink.clone(),
        interval: Duration::from_millis(50),
        mode: ReportMode::Batch,
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.send(Command::PushOff {
        id: "host".into(),
        sink: "cap".into(),
    });
    sink.flush().await;
    let recs = lock(&got).clone();
    assert!(recs.len() >= 10, "only {} records", recs.len());
    // Sink numbering: 1..n, no gaps.
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(&*r.node, "node-a");
    }
    // Sample numbering: consecutive, each sample sent once.
    assert!(recs
        .windows(2)
        .all(|w| w[1].sample.seq == w[0].sample.seq + 1));
    let first = &recs[0].sample;
    assert_eq!(first.memory_bytes, Some(400 * 1024));
    assert_eq!(first.host.as_ref().map(|h| h.cpus), Some(1));
    // About one sample per 10 ms.
    let n = lock(&s).len();
    assert!((20..=45).contains(&n), "{n} samples in 400 ms at 10 ms");

    // push-once on a fresh object samples it first, then answers after the write.
    let s2 = map.insert(Series::new("h2".into(), "h2".into(), Kind::Host, 10));
    c.send(Command::Add {
        series: s2,
        target: Target::Host,
        interval: Duration::from_secs(3600),
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.send(Command::PushOnce {
        id: "h2".into(),
        sink: sink.clone(),
        reply: tx,
        span: tracing::Span::none(),
    });
    assert_eq!(rx.await.expect("reply"), Ok(1));
    assert_eq!(lock(&got).last().map(|r| r.id.as_str()), Some("h2"));

    // An unknown object is refused, not ignored.
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.send(Command::PushOnce {
        id: "nope".into(),
        sink,
        reply: tx,
        span: tracing::Span::none(),
    });
    assert!(rx.await.expect("reply").is_err());
}

/// Issue 21: both report modes, on one object sampled every 10 ms and reported every 100 ms
/// for about a second. `batch` sends every sample (about 10 per report); `latest` sends one
/// record per interval, the newest sample each time. A plain `PushOn` takes the sink's mode:
/// `latest` for a file or stdout sink, `batch` for the network sinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_sends_every_sample_and_latest_one_per_interval() {
    assert_eq!(SinkType::File.default_mode(), ReportMode::Latest);
    assert_eq!(SinkType::Stdout.default_mode(), ReportMode::Latest);
    assert_eq!(SinkType::Grpc.default_mode(), ReportMode::Batch);
    assert_eq!(SinkType::Nats.default_mode(), ReportMode::Batch);
    let proc = fixture();
    let events = Arc::new(EventLog::new(100));
    let cap = |name: &str| {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = sinks::spawn(
            name,
            SinkType::File,
            Box::new(Capture(got.clone())),
            64,
            events.clone(),
        )
        .expect("sink thread");
        (sink, got)
    };
    let (batch, batch_got) = cap("batch");
    let (latest, latest_got) = cap("latest");
    let (plain, plain_got) = cap("plain");
    assert_eq!(plain.mode(), ReportMode::Latest);
    let c = Collector::start(ProcFs::new(proc.path()), "node-a".into()).expect("collector");
    let map = SeriesMap::default();
    let s = map.insert(Series::new("host".into(), "h".into(), Kind::Host, 1000));
    c.send(Command::Add {
        series: s.clone(),
        target: Target::Host,
        interval: Duration::from_millis(10),
    });
    let every = Duration::from_millis(100);
    for (sink, mode) in [(&batch, ReportMode::Batch), (&latest, ReportMode::Latest)] {
        c.send(Command::PushOnWith {
            id: "host".into(),
            sink: sink.clone(),
            interval: every,
            mode,
        });
    }
    c.send(Command::PushOn {
        id: "host".into(),
        sink: plain.clone(),
        interval: every,
    });
    tokio::time::sleep(Duration::from_millis(1050)).await;
    for name in ["batch", "latest", "plain"] {
        c.send(Command::PushOff {
            id: "host".into(),
            sink: name.into(),
        });
    }
    for sink in [&batch, &latest, &plain] {
        sink.flush().await;
    }
    let samples = lock(&s).len();
    let b = lock(&batch_got).len();
    let l = lock(&latest_got).clone();
    let p = lock(&plain_got).len();
    // 10 reports in 1.05 s; allow for a loaded machine.
    assert!((8..=11).contains(&l.len()), "latest: {} records", l.len());
    assert!(
        (8..=11).contains(&p),
        "plain push-on (file sink): {p} records"
    );
    assert!(b >= 60, "batch: {b} records for {samples} samples");
    // latest: each record is a newer sample than the one before, about 10 samples apart.
    assert!(l.windows(2).all(|w| w[1].sample.seq > w[0].sample.seq));
    let gaps: u64 = l
        .windows(2)
        .map(|w| w[1].sample.seq - w[0].sample.seq)
        .sum();
    let mean = gaps / (l.len() as u64 - 1);
    assert!((5..=15).contains(&mean), "mean gap {mean} samples");
}
