//! The per-object sample ring: `commit` of a typical cgroup sample into a full ring, `latest()`,
//! and `recent(None)` of a full ring (120 samples, the default `ring_size`).
//!
//! `cargo bench -p nodeagent-engine --bench series`.

use criterion::{criterion_group, criterion_main, Criterion};
use nodeagent_engine::Series;
use nodeagent_types::{Kind, Timestamp};
use std::hint::black_box;
use std::time::Duration;

const CAP: usize = 120;

/// A typical cgroup sample stream: 1 s interval with some jitter, ~0.5 cores of CPU, a few
/// pages of memory churn, a constant limit and pids, some io and net traffic.
struct Gen {
    n: u64,
    rng: u64,
    ts: u64,
    cpu: u64,
    mem: u64,
    io_r: u64,
    io_w: u64,
    rx: u64,
    tx: u64,
}

impl Gen {
    fn new() -> Gen {
        Gen {
            n: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            ts: 1_764_000_000_000_000_000,
            cpu: 123_456_789_012,
            mem: 64 << 20,
            io_r: 1 << 20,
            io_w: 2 << 20,
            rx: 10 << 20,
            tx: 5 << 20,
        }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn fill(&mut self, s: &mut Series) {
        self.n += 1;
        let r = self.next();
        self.ts += 1_000_000_000 + r % 200_000;
        self.cpu += 500_000_000 + (r >> 20) % 20_000_000;
        self.mem = self.mem - 8 * 4096 + ((r >> 40) % 16) * 4096;
        if self.n.is_multiple_of(4) {
            self.io_r += 4096 * ((r >> 8) % 8);
            self.io_w += 4096 * ((r >> 12) % 16);
        }
        self.rx += (r >> 16) % 4000;
        self.tx += (r >> 24) % 2000;
        let x = s.begin();
        x.ts = Timestamp(self.ts);
        x.cpu_usage_ns = Some(self.cpu);
        x.cpu_throttled_ns = Some(1_234_567);
        x.memory_bytes = Some(self.mem);
        x.memory_limit_bytes = Some(128 << 20);
        x.oom_kills = Some(0);
        x.pids = Some(3);
        x.io_read_bytes = Some(self.io_r);
        x.io_write_bytes = Some(self.io_w);
        x.net_rx_bytes = Some(self.rx);
        x.net_tx_bytes = Some(self.tx);
    }
}

fn full() -> (Series, Gen) {
    let mut s = Series::new(
        "0123456789abcdef".into(),
        "web-1".into(),
        Kind::Process,
        CAP,
    );
    let mut g = Gen::new();
    for _ in 0..CAP * 3 {
        g.fill(&mut s);
        s.commit();
    }
    (s, g)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("series");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));

    let (mut s, mut g) = full();
    group.bench_function("commit", |b| {
        b.iter(|| {
            g.fill(&mut s);
            s.commit();
        })
    });

    let (s, _) = full();
    group.bench_function("latest", |b| b.iter(|| black_box(black_box(&s).latest())));
    group.bench_function("recent_all", |b| {
        b.iter(|| black_box(black_box(&s).recent(None)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
