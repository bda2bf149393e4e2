//! Sample encoding, the per-sample work between the collector and a sink:
//! - `encode_line`: a record as a JSON line (the `stdout` and `file` sinks);
//! - `encode_sample_body`: a record as the upstream protobuf body the spool stores;
//! - `batch_record`: a stored body framed into an upstream `Batch` (what the sender does);
//! - `spool push`: encode + spool framing + CRC into the writer's buffer (no `write()`, no commit).
//!
//! `cargo bench -p nodeagent-engine --bench encode`.

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nodeagent_engine::sinks::{encode_line, Record};
use nodeagent_engine::spool::{FsyncPolicy, Spool, SpoolOptions};
use nodeagent_engine::upstream::wire;
use nodeagent_types::{Kind, Sample, Timestamp};
use std::hint::black_box;

fn record() -> Record {
    Record {
        node: "bench-node".into(),
        seq: 42,
        id: "0123456789abcdef".into(),
        name: "web-1".into(),
        kind: Kind::Process,
        sample: Sample {
            id: "0123456789abcdef".into(),
            ts: Timestamp::now(),
            seq: 12345,
            cpu_usage_ns: Some(123_456_789_012),
            cpu_throttled_ns: Some(1_234_567),
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

fn encode(c: &mut Criterion) {
    let r = record();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(4096);
    g.bench_function("json_line", |b| {
        b.iter(|| {
            buf.clear();
            encode_line(black_box(&r), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("protobuf_body", |b| {
        b.iter(|| {
            buf.clear();
            wire::encode_sample_body(black_box(&r), &mut buf);
            black_box(buf.len())
        })
    });
    let mut body = Vec::new();
    wire::encode_sample_body(&r, &mut body);
    g.bench_function("batch_record", |b| {
        let mut seq = 0u64;
        b.iter(|| {
            buf.clear();
            seq += 1;
            wire::batch_record(&mut buf, seq, black_box(&body));
            black_box(buf.len())
        })
    });
    // Encode + frame + CRC into the spool writer's pending buffer, committed every 1000 records
    // (the commit's write() is counted, amortised; fsync is off).
    let dir = tempfile::tempdir().unwrap();
    let opts = SpoolOptions {
        fsync: FsyncPolicy::Never,
        ..SpoolOptions::default()
    };
    let (spool, mut w, _) = Spool::open(dir.path(), opts).unwrap();
    g.bench_function("spool_push", |b| {
        let mut n = 0u32;
        b.iter(|| {
            w.push(|b| wire::encode_sample_body(black_box(&r), b));
            n += 1;
            if n == 1000 {
                n = 0;
                w.commit().unwrap();
                spool.ack(spool.last_seq());
                w.maintain().unwrap();
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = encode
}
criterion_main!(benches);
