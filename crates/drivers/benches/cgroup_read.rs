//! The sampling and update fast paths of the cgroup drivers:
//! - `StatReader::read` on a real cgroup v1 cgroup (with a process in it) and on a v2 fixture;
//! - `StatReader::sample` (the collector's read: the memory limit file only every 900 ms) on
//!   the same real v1 cgroup;
//! - `apply` of a CPU change (what a PATCH of `resources.cpu` costs);
//! - one host sample from the real `/proc`: `ProcFs::host_stats` (opens every file) and
//!   `HostReader::read` (the collector's: files kept open), to set beside node_exporter's CPU
//!   per scrape.
//!
//! The v1 benches create `/nodeagent-bench-<pid>/bench` in every hierarchy and remove it after;
//! they are skipped (with a note) where `/sys/fs/cgroup/cpu` is missing.

use criterion::{criterion_group, criterion_main, Criterion};
use nodeagent_drivers::cgroup::{CgroupManager, CgroupRef, Parent, SampleHints, V1, V2};
use nodeagent_drivers::procfs::ProcFs;
use nodeagent_types::{HostStats, Resources, Sample};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";

/// A v1 cgroup with a sleeping process in it, torn down on drop.
struct V1Bench {
    cg: V1,
    leaf: CgroupRef,
    parent_dirs: Vec<PathBuf>,
    child: Option<Child>,
}

impl V1Bench {
    fn new() -> Option<V1Bench> {
        if !Path::new(ROOT).join("cpu").is_dir() {
            eprintln!("cgroup v1 not mounted at {ROOT}: skipping the v1 benches");
            return None;
        }
        let parent = format!("/nodeagent-bench-{}", std::process::id());
        let cg = V1::new(
            Path::new(ROOT),
            Path::new("/proc"),
            Parent::Absolute(parent),
        )
        .ok()?;
        let leaf = CgroupRef::Owned("bench".into());
        let parent_dirs = cg
            .dirs(&leaf)
            .into_iter()
            .filter_map(|(_, d)| d.parent().map(Path::to_path_buf))
            .collect();
        let mut b = V1Bench {
            cg,
            leaf,
            parent_dirs,
            child: None,
        };
        if let Err(e) = b.cg.create(&b.leaf) {
            eprintln!("creating the v1 bench cgroup: {e}: skipping the v1 benches");
            return None;
        }
        let child = Command::new("sleep").arg("600").spawn().ok()?;
        let pid = child.id();
        b.child = Some(child);
        b.cg.add_pid(&b.leaf, pid).ok()?;
        Some(b)
    }
}

impl Drop for V1Bench {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cg.remove(&self.leaf);
        for d in &self.parent_dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A fake v2 tree with a populated leaf (`<tmp>/cgroup/nodeagent/bench`).
///
/// It lives on tmpfs (`/dev/shm`) where there is one, like cgroupfs an in-memory filesystem:
/// on a disk filesystem every truncating write would measure block freeing, not the driver.
fn v2_fixture() -> (tempfile::TempDir, V2, CgroupRef) {
    let tmp = tempfile::Builder::new()
        .prefix("nodeagent-bench")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir");
    let root = tmp.path().join("cgroup");
    let leaf_dir = root.join("nodeagent/bench");
    std::fs::create_dir_all(&leaf_dir).expect("mkdir");
    std::fs::create_dir_all(tmp.path().join("proc/self")).expect("mkdir");
    std::fs::write(tmp.path().join("proc/self/cgroup"), "0::/\n").expect("write");
    std::fs::write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .expect("w");
    for (f, s) in [
        ("cgroup.procs", "4242\n"),
        ("cpu.max", "max 100000\n"),
        (
            "cpu.stat",
            "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 10\n\
             nr_throttled 2\nthrottled_usec 789\nnr_bursts 0\nburst_usec 0\n",
        ),
        ("memory.current", "8388608\n"),
        ("memory.max", "max\n"),
        (
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        ),
        ("pids.current", "3\n"),
        (
            "io.stat",
            "259:0 rbytes=1048576 wbytes=4096 rios=10 wios=1 dbytes=0 dios=0\n",
        ),
    ] {
        std::fs::write(leaf_dir.join(f), s).expect("write");
    }
    let cg = V2::new(&root, &tmp.path().join("proc"), Parent::Own).expect("V2::new");
    (tmp, cg, CgroupRef::Owned("bench".into()))
}

fn read_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("stat_reader_read");
    if let Some(b) = V1Bench::new() {
        let mut r = b.cg.stat_reader(&b.leaf).expect("stat_reader");
        let mut buf = Vec::new();
        let mut s = Sample::default();
        g.bench_function("v1_real", |bn| {
            bn.iter(|| {
                r.read(&mut buf, &mut s).expect("read");
                black_box(&s);
            })
        });
        g.bench_function("v1_real_sample", |bn| {
            bn.iter(|| {
                r.sample(&mut buf, &mut s, SampleHints::default())
                    .expect("sample");
                black_box(&s);
            })
        });
        // In a pass of the collector while no OOM kill happens on the host.
        let settled = SampleHints {
            host_oom_kills_settled: Some(0),
        };
        g.bench_function("v1_real_sample_oom_settled", |bn| {
            bn.iter(|| {
                r.sample(&mut buf, &mut s, settled).expect("sample");
                black_box(&s);
            })
        });
    }
    let (_tmp, cg, leaf) = v2_fixture();
    let mut r = cg.stat_reader(&leaf).expect("stat_reader");
    let mut buf = Vec::new();
    let mut s = Sample::default();
    g.bench_function("v2_fixture", |bn| {
        bn.iter(|| {
            r.read(&mut buf, &mut s).expect("read");
            black_box(&s);
        })
    });
    g.finish();
}

fn apply_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply_cpu");
    // Alternate two values so every write is a real change.
    let res = [
        Resources {
            cpu: Some(0.5),
            ..Default::default()
        },
        Resources {
            cpu: Some(0.75),
            ..Default::default()
        },
    ];
    if let Some(b) = V1Bench::new() {
        let mut i = 0usize;
        g.bench_function("v1_real", |bn| {
            bn.iter(|| {
                i += 1;
                b.cg.apply(&b.leaf, &res[i % 2]).expect("apply");
            })
        });
    }
    let (_tmp, cg, leaf) = v2_fixture();
    let mut i = 0usize;
    g.bench_function("v2_fixture", |bn| {
        bn.iter(|| {
            i += 1;
            cg.apply(&leaf, &res[i % 2]).expect("apply");
        })
    });
    g.finish();
}

fn host_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("host_sample");
    let fs = ProcFs::new("/proc");
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut out = HostStats::default();
    g.bench_function("host_stats", |bn| {
        bn.iter(|| {
            fs.host_stats(&mut buf, &mut out).expect("host_stats");
            black_box(&out);
        })
    });
    let mut reader = fs.host_reader();
    g.bench_function("host_reader", |bn| {
        bn.iter(|| {
            reader.read(&mut buf, &mut out).expect("host_reader");
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = read_benches, apply_benches, host_benches
}
criterion_main!(benches);
