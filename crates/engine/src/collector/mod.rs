//! The collector: one OS thread that samples every object, and runs every report task, from a
//! single heap of deadlines. There is no task or thread per object, so the thread count stays
//! fixed from 1 object to 10,000; each object costs a heap entry and its open cgroup files.
//!
//! Deadlines sit on a grid: the next deadline of a task with interval `i` is the next multiple
//! of `i` since the collector started. Samples therefore do not drift, a deadline missed by more
//! than one interval is skipped rather than bunched, and every object with the same interval (or
//! a multiple of it) is due at the same instant, so one wake-up serves them all. Measured with
//! 100 objects at 100 ms, per-object phases cost a context switch per sample, which was most of
//! the collector's CPU.

use crate::series::{lock, SharedSeries};
use crate::sinks::{Record, SinkHandle};
use nodeagent_drivers::cgroup::{SampleHints, StatReader};
use nodeagent_drivers::procfs::{HostReader, OomWatch, ProcFs};
use nodeagent_types::{HostStats, ReportMode, Sample, Timestamp};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What to sample for an object.
pub enum Target {
    Host,
    Cgroup {
        reader: StatReader,
        /// A pid whose network namespace is the object's own, when it has one; its
        /// `/proc/<pid>/net/dev` gives the object's network counters.
        net_pid: Option<u32>,
    },
    /// Nothing to sample for now (a container that has stopped and may start again): the
    /// object keeps its series and report tasks, and takes no samples.
    Idle,
}

pub enum Command {
    Add {
        series: SharedSeries,
        target: Target,
        interval: Duration,
    },
    Remove {
        id: String,
    },
    /// Samples something else for the same object from now on (a restarted container has a new
    /// cgroup and init pid), keeping its series, interval and report tasks.
    Retarget {
        id: String,
        target: Target,
    },
    /// Starts (or replaces) the object's report task to `sink`, in the sink's own mode
    /// ([`SinkHandle::mode`]: `latest` for file and stdout unless configured otherwise, `batch`
    /// for grpc and nats).
    PushOn {
        id: String,
        sink: Arc<SinkHandle>,
        interval: Duration,
    },
    /// [`Command::PushOn`] with the report mode given (a push-on request that names one).
    PushOnWith {
        id: String,
        sink: Arc<SinkHandle>,
        interval: Duration,
        mode: ReportMode,
    },
    PushOff {
        id: String,
        sink: String,
    },
    /// Sends the latest sample (taking one first if there is none yet); the reply comes from the
    /// sink once it is written.
    PushOnce {
        id: String,
        sink: Arc<SinkHandle>,
        reply: crate::sinks::Ack,
        /// The request's span (disabled unless tracing is on), continued on this thread.
        span: tracing::Span,
    },
    /// Stops the thread after a last round of reports; replies when done.
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the collector thread.
#[derive(Clone)]
pub struct Collector {
    tx: Sender<Command>,
}

impl Collector {
    /// Starts the collector thread.
    pub fn start(procfs: ProcFs, node: Arc<str>) -> std::io::Result<Collector> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || Scheduler::new(procfs, node).run(rx))?;
        Ok(Collector { tx })
    }

    pub fn send(&self, cmd: Command) {
        // The thread only stops on Shutdown; a send after that is a no-op by design.
        let _ = self.tx.send(cmd);
    }
}

struct Report {
    sink: Arc<SinkHandle>,
    interval: Duration,
    mode: ReportMode,
    /// Seq of the last sample sent; the next report sends every sample after it (`batch`) or
    /// the newest one if it is after it (`latest`).
    last_seq: u64,
    gen: u64,
}

struct Obj {
    id: String,
    series: SharedSeries,
    target: Target,
    interval: Duration,
    gen: u64,
    reports: Vec<Report>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Due {
    Sample { slot: usize, gen: u64 },
    Report { slot: usize, gen: u64 },
}

impl Due {
    /// Order among entries due at the same instant: by object, and an object's sample before its
    /// reports, so a report sends the sample just taken (run first, it would send the previous
    /// one, a whole interval old), and right after it rather than after every other object's
    /// sample.
    fn key(&self) -> (usize, u8, u64) {
        match *self {
            Due::Sample { slot, gen } => (slot, 0, gen),
            Due::Report { slot, gen } => (slot, 1, gen),
        }
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The longest a report record waits in the [`Outbox`] for the rest of its pass.
const OUTBOX_WAIT: Duration = Duration::from_millis(1);

struct Scheduler {
    procfs: ProcFs,
    node: Arc<str>,
    slots: Vec<Option<Obj>>,
    free: Vec<usize>,
    by_id: HashMap<String, usize>,
    heap: BinaryHeap<Reverse<(Instant, Due)>>,
    next_gen: u64,
    /// Origin of the deadline grid.
    epoch: Instant,
    buf: Vec<u8>,
    host_buf: HostStats,
    /// The host files, kept open between host samples.
    host: HostReader,
    oom: OomWatch,
    /// Set while [`Scheduler::run_due`] takes the samples due at one instant.
    pass: Option<Pass>,
}

/// A pass over the samples due at one instant.
#[derive(Default)]
struct Pass {
    cgroup_samples: u32,
    hints: SampleHints,
}

/// From this cgroup sample of a pass on, the pass's samples skip the OOM kill file while the
/// host's OOM kill count stays put ([`OomWatch`], [`StatReader::sample`]). Reading that count
/// costs about 20 µs, ten cgroup file reads: fewer samples in a pass would not pay for it.
const OOM_HINT_FROM: u32 = 16;

impl Scheduler {
    fn new(procfs: ProcFs, node: Arc<str>) -> Self {
        let host = procfs.host_reader();
        let oom = procfs.oom_watch();
        Scheduler {
            procfs,
            node,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            heap: BinaryHeap::new(),
            next_gen: 1,
            epoch: Instant::now(),
            buf: Vec::with_capacity(16 * 1024),
            host_buf: HostStats::default(),
            host,
            oom,
            pass: None,
        }
    }

    fn gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    fn run(mut self, rx: Receiver<Command>) {
        loop {
            let timeout = match self.heap.peek() {
                Some(Reverse((at, _))) => at.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            match rx.recv_timeout(timeout) {
                Ok(cmd) => {
                    if self.handle(cmd) {
                        return;
                    }
                    while let Ok(cmd) = rx.try_recv() {
                        if self.handle(cmd) {
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.run_due();
        }
    }

    /// Returns true on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Add {
                series,
                target,
                interval,
            } => {
                let id = lock(&series).id.clone();
                if let Some(slot) = self.by_id.remove(&id) {
                    self.slots[slot] = None;
                    self.free.push(slot);
                }
                let gen = self.gen();
                let obj = Obj {
                    id: id.clone(),
                    series,
                    target,
                    interval,
                    gen,
                    reports: Vec::new(),
                };
                let slot = match self.free.pop() {
                    Some(s) => {
                        self.slots[s] = Some(obj);
                        s
                    }
                    None => {
                        self.slots.push(Some(obj));
                        self.slots.len() - 1
                    }
                };
                self.by_id.insert(id, slot);
                // First sample at once, so an object has data as soon as it runs.
                self.heap
                    .push(Reverse((Instant::now(), Due::Sample { slot, gen })));
            }
            Command::Remove { id } => {
                if let Some(slot) = self.by_id.remove(&id) {
                    // Send what was sampled since the last report before letting go.
                    if let Some(obj) = self.slots[slot].as_mut() {
                        let node = self.node.clone();
                        for r in &mut obj.reports {
                            send_report(&node, &obj.series, r);
                        }
                    }
                    self.slots[slot] = None;
                    self.free.push(slot);
                }
            }
            Command::Retarget { id, target } => {
                if let Some(obj) = self.by_id.get(&id).and_then(|&s| self.slots[s].as_mut()) {
                    obj.target = target;
                }
            }
            Command::PushOn { id, sink, interval } => {
                let mode = sink.mode();
                self.push_on(id, sink, interval, mode);
            }
            Command::PushOnWith {
                id,
                sink,
                interval,
                mode,
            } => self.push_on(id, sink, interval, mode),
            Command::PushOff { id, sink } => {
                if let Some(obj) = self.by_id.get(&id).and_then(|&s| self.slots[s].as_mut()) {
                    obj.reports.retain(|r| r.sink.name != sink);
                }
            }
            Command::PushOnce {
                id,
                sink,
                reply,
                span,
            } => {
                let _request = span.enter();
                let _push = tracing::info_span!("collector.push_once").entered();
                let Some(&slot) = self.by_id.get(&id) else {
                    let _ = reply.send(Err(format!("object {id} is not being collected")));
                    return false;
                };
                let needs_sample = self.slots[slot]
                    .as_ref()
                    .is_some_and(|o| lock(&o.series).is_empty());
                if needs_sample {
                    self.sample(slot);
                }
                let Some(obj) = self.slots[slot].as_ref() else {
                    return false;
                };
                let s = lock(&obj.series);
                match s.latest() {
                    Some(latest) => {
                        let seq = latest.seq;
                        let rec = record(&self.node, &s, latest);
                        drop(s);
                        sink.try_send(vec![rec], Some((reply, seq)));
                    }
                    None => {
                        let _ = reply.send(Err(format!("no sample of object {id} yet")));
                    }
                }
            }
            Command::Shutdown(done) => {
                let node = self.node.clone();
                for obj in self.slots.iter_mut().flatten() {
                    for r in &mut obj.reports {
                        send_report(&node, &obj.series, r);
                    }
                }
                let _ = done.send(());
                return true;
            }
        }
        false
    }

    fn push_on(&mut self, id: String, sink: Arc<SinkHandle>, interval: Duration, mode: ReportMode) {
        let gen = self.gen();
        let Some(&slot) = self.by_id.get(&id) else {
            return;
        };
        let Some(obj) = self.slots[slot].as_mut() else {
            return;
        };
        let last_seq = lock(&obj.series).latest_seq();
        obj.reports.retain(|r| r.sink.name != sink.name);
        obj.reports.push(Report {
            sink,
            interval,
            mode,
            last_seq,
            gen,
        });
        self.heap.push(Reverse((
            Instant::now() + interval,
            Due::Report { slot, gen },
        )));
    }

    fn run_due(&mut self) {
        let now = Instant::now();
        // The reports due in this pass go to each sink in one batch, or one per OUTBOX_WAIT of a
        // long pass.
        let mut outbox = Outbox::default();
        self.pass = Some(Pass::default());
        while let Some(Reverse((at, due))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            match due {
                Due::Sample { slot, gen } => {
                    let Some(interval) = self
                        .slots
                        .get(slot)
                        .and_then(Option::as_ref)
                        .filter(|o| o.gen == gen)
                        .map(|o| o.interval)
                    else {
                        continue;
                    };
                    self.sample(slot);
                    let next = next_deadline(self.epoch, interval, at.max(now));
                    self.heap.push(Reverse((next, due)));
                }
                Due::Report { slot, gen } => {
                    let node = self.node.clone();
                    let Some(obj) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    let Some(idx) = obj.reports.iter().position(|r| r.gen == gen) else {
                        continue;
                    };
                    let mut r = obj.reports.swap_remove(idx);
                    collect_report(&node, &obj.series, &mut r, &mut outbox);
                    let interval = r.interval;
                    obj.reports.push(r);
                    let next = next_deadline(self.epoch, interval, at.max(now));
                    self.heap.push(Reverse((next, due)));
                    if outbox.waited() >= OUTBOX_WAIT {
                        outbox.send();
                    }
                }
            }
        }
        self.pass = None;
        outbox.send();
    }

    /// Takes one sample of the object in `slot` into its series.
    fn sample(&mut self, slot: usize) {
        let Some(obj) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let mut series = lock(&obj.series);
        let out = series.begin();
        out.ts = Timestamp::now();
        let ok = match &mut obj.target {
            Target::Host => match self.host.read(&mut self.buf, &mut self.host_buf) {
                Ok(()) => {
                    fill_host(out, &self.host_buf);
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, "host sample failed");
                    false
                }
            },
            Target::Cgroup { reader, net_pid } => {
                // Only within a pass: a hint read at its start may not vouch for a sample
                // taken outside it (a push-once).
                let hints = match &mut self.pass {
                    Some(p) => {
                        p.cgroup_samples += 1;
                        if p.cgroup_samples == OOM_HINT_FROM {
                            p.hints.host_oom_kills_settled = self.oom.settled(&mut self.buf);
                        }
                        p.hints
                    }
                    None => SampleHints::default(),
                };
                match reader.sample(&mut self.buf, out, hints) {
                    Ok(()) => {
                        if let Some(pid) = *net_pid {
                            if let Ok((rx, tx)) = self.procfs.net_dev(pid, &mut self.buf) {
                                out.net_rx_bytes = Some(rx);
                                out.net_tx_bytes = Some(tx);
                            }
                        }
                        true
                    }
                    Err(e) => {
                        tracing::debug!(id = %obj.id, error = %e, "sample failed");
                        false
                    }
                }
            }
            Target::Idle => false,
        };
        if ok {
            series.commit();
        }
    }
}

/// The first grid point of `interval` strictly after `after`.
fn next_deadline(epoch: Instant, interval: Duration, after: Instant) -> Instant {
    let iv = interval.as_nanos().max(1);
    let since = after.saturating_duration_since(epoch).as_nanos();
    let k = since / iv + 1;
    epoch + Duration::from_nanos(u64::try_from(k * iv).unwrap_or(u64::MAX))
}

fn record(node: &Arc<str>, s: &crate::series::Series, sample: Sample) -> Record {
    Record {
        node: node.clone(),
        seq: 0,
        id: s.id.clone(),
        name: s.name.clone(),
        kind: s.kind,
        sample,
    }
}

/// Report records gathered in one pass over the due entries, one batch per sink. The reports of
/// 100 objects due at the same instant reach a sink as one message (or one per
/// [`OUTBOX_WAIT`] of a pass that takes longer): its thread wakes, appends and commits once,
/// and a network sink sends them upstream as one batch, instead of once per object (and a
/// sink's queue, counted in messages, holds whole passes).
#[derive(Default)]
struct Outbox {
    batches: Vec<(Arc<SinkHandle>, Vec<Record>)>,
    /// When the oldest record waiting here was added.
    since: Option<Instant>,
}

impl Outbox {
    fn batch(&mut self, sink: &Arc<SinkHandle>) -> &mut Vec<Record> {
        self.since.get_or_insert_with(Instant::now);
        let i = match self.batches.iter().position(|(s, _)| Arc::ptr_eq(s, sink)) {
            Some(i) => i,
            None => {
                self.batches.push((sink.clone(), Vec::new()));
                self.batches.len() - 1
            }
        };
        &mut self.batches[i].1
    }

    /// How long the oldest record has waited.
    fn waited(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn send(&mut self) {
        self.since = None;
        for (sink, records) in self.batches.drain(..) {
            if !records.is_empty() {
                sink.try_send(records, None);
            }
        }
    }
}

/// Adds what the report sends now to its sink's batch in `out`: every sample taken since its
/// last one (`batch`), or the newest sample if it is new (`latest`).
fn collect_report(node: &Arc<str>, series: &SharedSeries, r: &mut Report, out: &mut Outbox) {
    let s = lock(series);
    let batch = out.batch(&r.sink);
    let before = batch.len();
    match r.mode {
        ReportMode::Batch => batch.extend(s.since(r.last_seq).map(|x| record(node, &s, x))),
        ReportMode::Latest => batch.extend(
            s.latest()
                .filter(|x| x.seq > r.last_seq)
                .map(|x| record(node, &s, x)),
        ),
    }
    if let Some(last) = batch[before..].last() {
        r.last_seq = last.sample.seq;
    }
}

/// Sends what the report has not sent yet (at remove and shutdown), as [`collect_report`] does.
fn send_report(node: &Arc<str>, series: &SharedSeries, r: &mut Report) {
    let s = lock(series);
    let records: Vec<Record> = match r.mode {
        ReportMode::Batch => s.since(r.last_seq).map(|x| record(node, &s, x)).collect(),
        ReportMode::Latest => s
            .latest()
            .filter(|x| x.seq > r.last_seq)
            .map(|x| record(node, &s, x))
            .into_iter()
            .collect(),
    };
    if let Some(last) = records.last() {
        r.last_seq = last.sample.seq;
        drop(s);
        r.sink.try_send(records, None);
    }
}

/// Maps host counters onto the common sample fields, and keeps the detail under `host`.
fn fill_host(out: &mut Sample, h: &HostStats) {
    let c = &h.cpu;
    out.cpu_usage_ns = Some(c.user + c.nice + c.system + c.irq + c.softirq + c.steal);
    out.memory_bytes = Some(
        h.memory_total_bytes
            .saturating_sub(h.memory_available_bytes),
    );
    out.memory_limit_bytes = Some(h.memory_total_bytes);
    out.io_read_bytes = Some(h.disks.iter().map(|d| d.read_bytes).sum());
    out.io_write_bytes = Some(h.disks.iter().map(|d| d.write_bytes).sum());
    let nets = h.nets.iter().filter(|n| n.device != "lo");
    out.net_rx_bytes = Some(nets.clone().map(|n| n.read_bytes).sum());
    out.net_tx_bytes = Some(nets.map(|n| n.write_bytes).sum());
    match &mut out.host {
        Some(b) => b.as_mut().clone_from(h),
        None => out.host = Some(Box::new(h.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_sit_on_the_grid() {
        let e = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(next_deadline(e, ms(100), e), e + ms(100));
        assert_eq!(next_deadline(e, ms(100), e + ms(30)), e + ms(100));
        assert_eq!(next_deadline(e, ms(100), e + ms(100)), e + ms(200));
        // A late wake-up skips the missed slots instead of bunching them.
        assert_eq!(next_deadline(e, ms(100), e + ms(350)), e + ms(400));
        // Intervals that divide each other share deadlines.
        assert_eq!(
            next_deadline(e, ms(1000), e + ms(30)),
            next_deadline(e, ms(100), e + ms(930))
        );
    }

    #[test]
    fn a_sample_runs_right_before_the_reports_due_at_its_instant() {
        // Run after it, a report would send the previous sample, a whole interval old.
        let t = Instant::now();
        let mut h = BinaryHeap::from(vec![
            Reverse((t, Due::Report { slot: 1, gen: 3 })),
            Reverse((t, Due::Sample { slot: 1, gen: 9 })),
            Reverse((t, Due::Report { slot: 0, gen: 2 })),
            Reverse((t, Due::Sample { slot: 0, gen: 8 })),
            Reverse((
                t - Duration::from_millis(1),
                Due::Report { slot: 5, gen: 4 },
            )),
        ]);
        let order: Vec<(usize, u8, u64)> = std::iter::from_fn(|| h.pop())
            .map(|Reverse((_, d))| d.key())
            .collect();
        assert_eq!(
            order,
            vec![(5, 1, 4), (0, 0, 8), (0, 1, 2), (1, 0, 9), (1, 1, 3)]
        );
    }

    struct Sizes(Arc<std::sync::Mutex<Vec<usize>>>);

    impl crate::sinks::Sink for Sizes {
        fn write(&mut self, records: &[Record]) -> std::io::Result<()> {
            lock(&self.0).push(records.len());
            Ok(())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_due_together_reach_the_sink_as_one_batch() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let events = Arc::new(crate::EventLog::new(10));
        let sink = crate::sinks::spawn(
            "sizes",
            crate::sinks::SinkType::File,
            Box::new(Sizes(sizes.clone())),
            64,
            events,
        )
        .expect("sink");
        let c = Collector::start(ProcFs::new("/nonexistent"), "n".into()).expect("collector");
        let series: Vec<SharedSeries> = (0..5)
            .map(|i| {
                Arc::new(std::sync::Mutex::new(crate::series::Series::new(
                    format!("o{i}"),
                    format!("o{i}"),
                    nodeagent_types::Kind::Cgroup,
                    100,
                )))
            })
            .collect();
        for s in &series {
            // Idle: the test writes the samples itself.
            c.send(Command::Add {
                series: s.clone(),
                target: Target::Idle,
                interval: Duration::from_millis(20),
            });
            c.send(Command::PushOn {
                id: lock(s).id.clone(),
                sink: sink.clone(),
                interval: Duration::from_millis(20),
            });
        }
        // After the first (off-grid) reports, every report task is due on the same grid point.
        let mut seen = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(45)).await;
            {
                let mut held: Vec<_> = series.iter().map(|s| lock(s)).collect();
                for s in &mut held {
                    s.begin().ts = Timestamp::now();
                    s.commit();
                }
            }
            tokio::time::sleep(Duration::from_millis(45)).await;
            sink.flush().await;
            if lock(&sizes).contains(&5) {
                seen = true;
                break;
            }
        }
        assert!(seen, "writes: {:?}", lock(&sizes));
        let (tx, rx) = oneshot::channel();
        c.send(Command::Shutdown(tx));
        let _ = rx.await;
    }
}
