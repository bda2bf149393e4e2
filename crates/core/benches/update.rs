//! The update fast path in process, without HTTP: a `cpu` PATCH through the same handle the API
//! uses, to the event loop, into the cgroup file, and back.
//! - `update/process_cpu`: the whole round trip on a `process` object (a sleeping child in its
//!   own cgroup), then a read of `cpu.cfs_quota_us` to check the value is there;
//! - `update/cgroup_write`: only the kernel part, the write of the quota file, for comparison.
//!
//! Needs root and cgroup v1 (as the rest of the test suite); panics with what is missing
//! otherwise. `cargo bench -p nodeagent-core --bench update`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use nodeagent_core::{Agent, CoreConfig};
use nodeagent_types::{ObjectPatch, ObjectSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn quota_file(parent: &str, id: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup/cpu")
        .join(parent.trim_start_matches('/'))
        .join(id)
        .join("cpu.cfs_quota_us")
}

fn patch(cpu: f64) -> ObjectPatch {
    serde_json::from_value(serde_json::json!({"resources": {"cpu": cpu}})).unwrap()
}

fn bench(c: &mut Criterion) {
    assert!(
        Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists(),
        "this bench needs root and cgroup v1 mounted at /sys/fs/cgroup"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let parent = format!("/nodeagent-bench-update-{}", std::process::id());
    let mut cfg = CoreConfig::new(state.path().to_path_buf());
    cfg.cgroup_parent = Some(parent.clone());
    cfg.stop_grace = Duration::from_millis(200);
    cfg.heartbeat_sinks = vec![];
    let (handle, shutdown) = rt.block_on(async {
        let kinds = vec![nodeagent_engine::kinds::kind(
            nodeagent_engine::kinds::process::ProcessKind::new,
        )];
        let (agent, handle) = Agent::start(cfg, kinds).expect("agent starts");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(agent.run(async move {
            let _ = rx.await;
        }));
        (handle, tx)
    });
    let spec = ObjectSpec::from_json(
        br#"{"name":"bench-update","kind":"process","process":{"command":["/bin/sleep","3600"]},
            "resources":{"cpu":0.5}}"#,
    )
    .unwrap();
    let id = rt.block_on(handle.create(spec, true)).unwrap().id;
    let file = quota_file(&parent, &id);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "50000");

    let mut g = c.benchmark_group("update");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let mut i = 0u64;
    g.bench_function("process_cpu", |b| {
        b.iter(|| {
            i += 1;
            let quota = 10_000 * (1 + i % 20);
            rt.block_on(handle.update(&id, patch(quota as f64 / 100_000.0)))
                .unwrap();
            let got = std::fs::read_to_string(&file).unwrap();
            assert_eq!(got.trim(), quota.to_string());
        })
    });
    let mut j = 0u64;
    g.bench_function("cgroup_write", |b| {
        b.iter(|| {
            j += 1;
            std::fs::write(&file, (10_000 * (1 + j % 20)).to_string()).unwrap();
        })
    });
    g.finish();

    rt.block_on(handle.delete(&id, true)).unwrap();
    let _ = shutdown.send(());
    rt.shutdown_timeout(Duration::from_secs(2));
    for ctrl in [
        "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio",
    ] {
        let p = Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join(parent.trim_start_matches('/'));
        let _ = std::fs::remove_dir(&p);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
