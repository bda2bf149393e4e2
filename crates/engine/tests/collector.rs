//! The collector thread driving samples and report tasks, on a procfs fixture (the host target)
//! and a capturing sink.

use nodeagent_drivers::procfs::ProcFs;
use nodeagent_engine::collector::{Collector, Command, Target};
use nodeagent_engine::series::lock;
use nodeagent_engine::sinks::{self, Record, Sink, SinkType};
use nodeagent_engine::{EventLog, Series, SeriesMap};
use nodeagent_types::Kind;
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
    c.send(Command::PushOn {
        id: "host".into(),
        sink: sink.clone(),
        interval: Duration::from_millis(50),
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
