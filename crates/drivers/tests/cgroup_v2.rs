//! cgroup v2 backend against fake trees in a temp dir that reproduce the v2 files.
//!
//! mkdir in a temp dir creates no files, so each test pre-creates the leaf's files the way the
//! kernel would; `create` must cope with a leaf that already exists.

use nodeagent_drivers::cgroup::{
    CgroupError, CgroupManager, CgroupRef, CgroupVersion, Cgroups, Parent, V2,
};
use nodeagent_types::{CpuSet, Memory, Resources, Sample};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CPU_STAT: &str = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n\
nr_periods 10\nnr_throttled 2\nthrottled_usec 789\nnr_bursts 0\nburst_usec 0\n";
const MEMORY_EVENTS: &str = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
const IO_STAT: &str = "259:0 rbytes=1048576 wbytes=4096 rios=10 wios=1 dbytes=0 dios=0\n\
8:0 rbytes=512 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n";

/// A fake `/sys/fs/cgroup` (v2) and `/proc` whose `self/cgroup` is `0::/`.
struct Tree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    proc_root: PathBuf,
}

fn write(p: &Path, s: &str) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(p, s).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

impl Tree {
    fn new(root_controllers: &str, root_subtree: &str) -> Tree {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("cgroup");
        let proc_root = tmp.path().join("proc");
        write(&root.join("cgroup.controllers"), root_controllers);
        write(&root.join("cgroup.subtree_control"), root_subtree);
        write(&root.join("cgroup.procs"), "1\n");
        write(&proc_root.join("self/cgroup"), "0::/\n");
        Tree {
            _tmp: tmp,
            root,
            proc_root,
        }
    }

    fn standard() -> Tree {
        Tree::new("cpuset cpu io memory hugetlb pids rdma misc\n", "\n")
    }

    fn v2(&self) -> V2 {
        V2::new(&self.root, &self.proc_root, Parent::Own).expect("V2::new")
    }

    /// Writes the files the kernel would put in a new cgroup with every controller enabled.
    fn make_cgroup(&self, rel: &str) -> PathBuf {
        let d = self.root.join(rel);
        for (f, s) in [
            ("cgroup.controllers", "cpuset cpu io memory pids\n"),
            ("cgroup.subtree_control", "\n"),
            ("cgroup.procs", ""),
            ("cgroup.freeze", "0\n"),
            ("cpu.max", "max 100000\n"),
            ("cpu.weight", "100\n"),
            ("cpuset.cpus", "\n"),
            ("memory.max", "max\n"),
            ("pids.max", "max\n"),
            ("cpu.stat", CPU_STAT),
            ("memory.current", "8388608\n"),
            ("memory.events", MEMORY_EVENTS),
            ("pids.current", "3\n"),
            ("io.stat", IO_STAT),
        ] {
            write(&d.join(f), s);
        }
        d
    }
}

fn owned(leaf: &str) -> CgroupRef {
    CgroupRef::Owned(leaf.to_string())
}

fn tokens(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn v2_detect_and_paths() {
    let t = Tree::standard();
    let cg = Cgroups::detect(&t.root, &t.proc_root, Parent::Own).expect("detect");
    assert_eq!(cg.version(), CgroupVersion::V2);
    let leaf = owned("0123456789abcdef");
    assert_eq!(cg.path(&leaf), "/nodeagent/0123456789abcdef");
    let dir = t.root.join("nodeagent/0123456789abcdef");
    assert_eq!(cg.dirs(&leaf), vec![("unified".to_string(), dir.clone())]);
    assert_eq!(cg.procs_files(&leaf), vec![dir.join("cgroup.procs")]);

    // The own cgroup comes from the `0::` line.
    write(
        &t.proc_root.join("self/cgroup"),
        "0::/system.slice/nodeagent.service\n",
    );
    let cg = V2::new(&t.root, &t.proc_root, Parent::Own).expect("V2::new");
    assert_eq!(
        cg.path(&leaf),
        "/system.slice/nodeagent.service/nodeagent/0123456789abcdef"
    );
    // A v1-only /proc/self/cgroup has no v2 line.
    write(&t.proc_root.join("self/cgroup"), "4:memory:/\n");
    assert!(V2::new(&t.root, &t.proc_root, Parent::Own).is_err());

    let cg = V2::new(&t.root, &t.proc_root, Parent::Absolute("/a//b/".into())).expect("new");
    assert_eq!(cg.path(&leaf), "/a/b/0123456789abcdef");
    assert_eq!(
        cg.path(&CgroupRef::External("/system.slice/x.service".into())),
        "/system.slice/x.service"
    );
    assert!(V2::new(&t.root, &t.proc_root, Parent::Absolute("/a/../b".into())).is_err());
}

#[test]
fn v2_create_enables_controllers_top_down() {
    let t = Tree::standard();
    // The parent offers what the root delegates; its files exist as the kernel would make them.
    write(
        &t.root.join("nodeagent/cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    );
    write(&t.root.join("nodeagent/cgroup.subtree_control"), "\n");
    t.make_cgroup("nodeagent/obj");
    let cg = t.v2();
    cg.create(&owned("obj")).expect("create");
    cg.create(&owned("obj")).expect("create is idempotent");
    assert!(cg.exists(&owned("obj")));
    let want = tokens("+cpu +memory +pids +cpuset +io");
    // The root only gets what it offers among the agent's controllers (no hugetlb).
    assert_eq!(tokens(&read(&t.root.join("cgroup.subtree_control"))), want);
    assert_eq!(
        tokens(&read(&t.root.join("nodeagent/cgroup.subtree_control"))),
        want
    );
}

#[test]
fn v2_create_enables_only_offered_and_missing_controllers() {
    let t = Tree::new("cpu memory\n", "cpu\n");
    let cg = t.v2();
    // A fresh directory: no files at all, which create must tolerate.
    cg.create(&owned("obj")).expect("create");
    assert!(t.root.join("nodeagent/obj").is_dir());
    assert_eq!(
        read(&t.root.join("cgroup.subtree_control")).trim(),
        "+memory"
    );
    // The new parent offers nothing (a temp dir has no cgroup.controllers): nothing written.
    assert!(!t.root.join("nodeagent/cgroup.subtree_control").exists());

    // Nothing to do when everything offered is enabled.
    let t = Tree::new("cpu memory\n", "cpu memory\n");
    t.v2().create(&owned("obj")).expect("create");
    assert_eq!(read(&t.root.join("cgroup.subtree_control")), "cpu memory\n");
}

#[test]
fn v2_apply_and_read_limits() {
    let t = Tree::standard();
    let dir = t.make_cgroup("nodeagent/obj");
    let cg = t.v2();
    let obj = owned("obj");
    cg.create(&obj).expect("create");

    let l = cg.read_limits(&obj).expect("read_limits");
    assert_eq!(l.cpu_quota_us, None);
    assert_eq!(l.cpu_period_us, 100_000);
    assert_eq!(l.cpu_weight, 100);
    assert_eq!(l.memory_bytes, None);
    assert_eq!(l.pids, None);
    assert!(!l.frozen);

    let res = Resources {
        cpu: Some(0.5),
        cpu_weight: Some(50),
        cpuset: Some(CpuSet("0-1".into())),
        memory: Some(Memory(64 << 20)),
        pids: Some(100),
    };
    cg.apply(&obj, &res).expect("apply");
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("cpu.weight")), "50");
    assert_eq!(read(&dir.join("cpuset.cpus")), "0-1");
    assert_eq!(read(&dir.join("memory.max")), "67108864");
    assert_eq!(read(&dir.join("pids.max")), "100");

    let l = cg.read_limits(&obj).expect("read_limits");
    assert_eq!(l.cpu_quota_us, Some(50_000));
    assert_eq!(l.cpu_period_us, 100_000);
    assert_eq!(l.cpu_weight, 50);
    assert_eq!(l.cpuset, "0-1");
    assert_eq!(l.memory_bytes, Some(64 << 20));
    assert_eq!(l.pids, Some(100));

    // Only set fields are written.
    cg.apply(
        &obj,
        &Resources {
            cpu: Some(2.0),
            ..Default::default()
        },
    )
    .expect("apply");
    assert_eq!(read(&dir.join("cpu.max")), "200000 100000");
    assert_eq!(read(&dir.join("memory.max")), "67108864");

    match cg.apply(
        &obj,
        &Resources {
            cpu: Some(f64::NAN),
            ..Default::default()
        },
    ) {
        Err(CgroupError::Rejected { field, .. }) => assert_eq!(field, "resources.cpu"),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[test]
fn v2_apply_without_the_controller_is_rejected_with_the_field() {
    let t = Tree::standard();
    let dir = t.make_cgroup("nodeagent/obj");
    std::fs::remove_file(dir.join("memory.max")).expect("rm");
    let cg = t.v2();
    match cg.apply(
        &owned("obj"),
        &Resources {
            memory: Some(Memory(1 << 30)),
            ..Default::default()
        },
    ) {
        Err(CgroupError::Rejected { field, message }) => {
            assert_eq!(field, "resources.memory");
            assert!(message.contains("not enabled"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // A cgroup that does not exist is an I/O error naming the path, not a rejection.
    match cg.apply(&owned("missing"), &Resources::default()) {
        Err(CgroupError::Io { path, .. }) => assert!(path.ends_with("nodeagent/missing")),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn v2_stat_reader_reads_the_counters() {
    let t = Tree::standard();
    let dir = t.make_cgroup("nodeagent/obj");
    write(&dir.join("cgroup.procs"), "42\n43\n");
    let cg = t.v2();
    let mut r = cg.stat_reader(&owned("obj")).expect("stat_reader");
    let mut buf = Vec::new();
    let mut s = Sample::default();
    r.read(&mut buf, &mut s).expect("read");
    assert_eq!(s.cpu_usage_ns, Some(123_456_000));
    assert_eq!(s.cpu_throttled_ns, Some(789_000));
    assert_eq!(s.memory_bytes, Some(8 << 20));
    assert_eq!(s.memory_limit_bytes, None);
    assert_eq!(s.oom_kills, Some(1));
    assert_eq!(s.pids, Some(3));
    assert_eq!(s.io_read_bytes, Some(1_048_576 + 512));
    assert_eq!(s.io_write_bytes, Some(4096));
    assert_eq!(r.first_pid(&mut buf), Some(42));

    // The reader re-reads the same open files: new content shows up.
    std::fs::write(dir.join("memory.max"), "1073741824\n").expect("write");
    std::fs::write(dir.join("memory.current"), "1024\n").expect("write");
    std::fs::write(dir.join("cgroup.procs"), "").expect("write");
    r.read(&mut buf, &mut s).expect("read");
    assert_eq!(s.memory_limit_bytes, Some(1 << 30));
    assert_eq!(s.memory_bytes, Some(1024));
    assert_eq!(r.first_pid(&mut buf), None);

    // A file larger than the buffer is read whole.
    let mut big = String::new();
    for i in 0..400 {
        big.push_str(&format!(
            "8:{i} rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n"
        ));
    }
    assert!(big.len() > 4096);
    std::fs::write(dir.join("io.stat"), &big).expect("write");
    r.read(&mut buf, &mut s).expect("read");
    assert_eq!(s.io_read_bytes, Some(400));
    assert_eq!(s.io_write_bytes, Some(800));
}

#[test]
fn v2_stat_reader_leaves_missing_counters_none() {
    let t = Tree::standard();
    let dir = t.make_cgroup("nodeagent/obj");
    for f in ["io.stat", "memory.events", "pids.current"] {
        std::fs::remove_file(dir.join(f)).expect("rm");
    }
    // No cpu controller: cpu.stat has only the core keys.
    std::fs::write(
        dir.join("cpu.stat"),
        "usage_usec 5\nuser_usec 5\nsystem_usec 0\n",
    )
    .expect("write");
    let cg = t.v2();
    let mut r = cg.stat_reader(&owned("obj")).expect("stat_reader");
    let mut buf = Vec::new();
    // Stale values in a reused sample are cleared.
    let mut s = Sample {
        pids: Some(9),
        io_read_bytes: Some(9),
        ..Default::default()
    };
    r.read(&mut buf, &mut s).expect("read");
    assert_eq!(s.cpu_usage_ns, Some(5000));
    assert_eq!(s.cpu_throttled_ns, None);
    assert_eq!(s.oom_kills, None);
    assert_eq!(s.pids, None);
    assert_eq!(s.io_read_bytes, None);
    assert_eq!(s.io_write_bytes, None);
    assert_eq!(s.memory_bytes, Some(8 << 20));

    assert!(cg.stat_reader(&owned("missing")).is_err());
}

#[test]
fn v2_freeze_writes_and_waits_for_events() {
    let t = Tree::standard();
    let dir = t.make_cgroup("nodeagent/obj");
    let cg = t.v2();
    let obj = owned("obj");
    // No cgroup.events (a fixture): accepted once written.
    cg.freeze(&obj, true).expect("freeze");
    assert_eq!(read(&dir.join("cgroup.freeze")), "1");
    assert!(cg.read_limits(&obj).expect("limits").frozen);
    cg.freeze(&obj, false).expect("thaw");
    assert_eq!(read(&dir.join("cgroup.freeze")), "0");
    assert!(!cg.read_limits(&obj).expect("limits").frozen);

    write(&dir.join("cgroup.events"), "populated 1\nfrozen 1\n");
    cg.freeze(&obj, true).expect("freeze");

    // The kernel never reports frozen: freeze gives up after a bounded wait.
    write(&dir.join("cgroup.events"), "populated 1\nfrozen 0\n");
    let start = Instant::now();
    assert!(matches!(cg.freeze(&obj, true), Err(CgroupError::Other(_))));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn v2_add_pid_procs_and_remove() {
    let t = Tree::standard();
    let dir = t.make_cgroup("nodeagent/obj");
    let cg = t.v2();
    let obj = owned("obj");
    cg.add_pid(&obj, 1234).expect("add_pid");
    assert_eq!(read(&dir.join("cgroup.procs")), "1234");
    assert_eq!(cg.procs(&obj).expect("procs"), vec![1234]);

    match cg.remove(&CgroupRef::External("/nodeagent/obj".into())) {
        Err(CgroupError::Other(m)) => assert!(m.contains("external"), "{m}"),
        other => panic!("expected Other, got {other:?}"),
    }
    cg.remove(&obj).expect("remove");
    assert!(!dir.exists());
    assert!(!cg.exists(&obj));
    cg.remove(&obj).expect("removing a missing cgroup is fine");
    assert!(t.root.join("nodeagent").is_dir(), "the parent stays");
}

#[test]
fn v2_external_cgroups() {
    let t = Tree::standard();
    let dir = t.make_cgroup("system.slice/x.service");
    let cg = t.v2();
    let ext = CgroupRef::External("/system.slice/x.service".into());
    cg.create(&ext).expect("existing external");
    assert!(cg.exists(&ext));
    cg.apply(
        &ext,
        &Resources {
            pids: Some(7),
            ..Default::default()
        },
    )
    .expect("apply");
    assert_eq!(read(&dir.join("pids.max")), "7");
    assert!(cg
        .create(&CgroupRef::External("/system.slice/none".into()))
        .is_err());
    assert!(cg
        .create(&CgroupRef::External("/system.slice/../../x".into()))
        .is_err());
}

#[test]
fn v2_bad_leaf_names_are_rejected() {
    let t = Tree::standard();
    let cg = t.v2();
    for bad in ["", ".", "..", "a/b", "../escape", "../../etc"] {
        let c = owned(bad);
        assert!(
            matches!(cg.create(&c), Err(CgroupError::Other(_))),
            "{bad:?}"
        );
        assert!(cg.remove(&c).is_err(), "{bad:?}");
        assert!(cg.apply(&c, &Resources::default()).is_err(), "{bad:?}");
        assert!(cg.add_pid(&c, 1).is_err(), "{bad:?}");
        assert!(!cg.exists(&c), "{bad:?}");
        assert!(cg.dirs(&c).is_empty(), "{bad:?}");
        assert!(cg.procs_files(&c).is_empty(), "{bad:?}");
    }
    assert!(!t.root.join("nodeagent").exists(), "nothing was created");
    assert_eq!(
        read(&t.root.join("cgroup.procs")),
        "1\n",
        "nothing was written"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the stat files hold, reading them neither panics nor fails.
    #[test]
    fn v2_stat_files_never_panic_the_reader(
        contents in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 7),
        text in "([a-z_]{1,14}[ =][0-9]{0,22}[ \n]){0,30}",
    ) {
        let t = Tree::standard();
        let dir = t.make_cgroup("nodeagent/obj");
        let files = [
            "cpu.stat", "memory.current", "memory.max", "memory.events", "pids.current",
            "io.stat", "cgroup.procs",
        ];
        let cg = t.v2();
        let mut r = cg.stat_reader(&owned("obj")).expect("stat_reader");
        let mut buf = Vec::new();
        let mut s = Sample::default();
        for (f, c) in files.iter().zip(&contents) {
            std::fs::write(dir.join(f), c).expect("write");
        }
        prop_assert!(r.read(&mut buf, &mut s).is_ok());
        let _ = r.first_pid(&mut buf);
        for f in files {
            std::fs::write(dir.join(f), &text).expect("write");
        }
        prop_assert!(r.read(&mut buf, &mut s).is_ok());
        let _ = r.first_pid(&mut buf);
        let _ = cg.read_limits(&owned("obj"));
    }
}
