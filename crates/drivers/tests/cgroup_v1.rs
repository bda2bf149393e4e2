//! cgroup v1 backend against this machine's real cgroupfs (`/sys/fs/cgroup`, v1 hybrid).
//!
//! Every test works below its own `/nodeagent-test-<unique>` parent in each hierarchy and
//! removes it (killing what it started) in a Drop guard, so nothing else on the machine is
//! touched. These tests need root and cgroup v1: without `/sys/fs/cgroup/cpu` they fail, on
//! purpose, rather than pass vacuously.

use nodeagent_drivers::cgroup::{
    CgroupError, CgroupManager, CgroupRef, CgroupVersion, Cgroups, Parent, V1,
};
use nodeagent_types::{CpuSet, Memory, Resources, Sample};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
const CONTROLLERS: [&str; 7] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer",
];

fn require_v1() {
    assert!(
        Path::new(ROOT).join("cpu").is_dir(),
        "cgroup v1 is required for these tests: {ROOT}/cpu is missing (mount the v1 cpu \
         controller there, e.g. a hybrid cgroup layout)"
    );
}

/// A unique parent below every hierarchy, removed on drop together with everything in it.
struct Fixture {
    cg: V1,
    parent: String,
    children: Vec<Child>,
}

impl Fixture {
    fn new() -> Fixture {
        require_v1();
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let parent = format!(
            "/nodeagent-test-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let cg = V1::new(
            Path::new(ROOT),
            Path::new("/proc"),
            Parent::Absolute(parent.clone()),
        )
        .expect("V1::new");
        Fixture {
            cg,
            parent,
            children: Vec::new(),
        }
    }

    fn hier_dir(&self, ctrl: &str, leaf: &str) -> PathBuf {
        Path::new(ROOT)
            .join(ctrl)
            .join(self.parent.trim_start_matches('/'))
            .join(leaf)
    }

    fn read(&self, ctrl: &str, leaf: &str, file: &str) -> String {
        let p = self.hier_dir(ctrl, leaf).join(file);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .trim()
            .to_string()
    }

    /// Starts `cmd` with piped stdin/stdout and keeps it for cleanup.
    fn spawn(&mut self, prog: &str, args: &[&str]) -> u32 {
        let child = Command::new(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn child(&mut self, pid: u32) -> &mut Child {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("child")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Frozen tasks do not die until thawed.
        let freezer = Path::new(ROOT)
            .join("freezer")
            .join(self.parent.trim_start_matches('/'));
        thaw_all(&freezer);
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ctrl in CONTROLLERS {
            let dir = Path::new(ROOT)
                .join(ctrl)
                .join(self.parent.trim_start_matches('/'));
            remove_tree(&dir);
        }
    }
}

fn thaw_all(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                thaw_all(&e.path());
            }
        }
    }
}

/// Removes a cgroup tree bottom-up, retrying while exiting tasks linger.
fn remove_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn owned(leaf: &str) -> CgroupRef {
    CgroupRef::Owned(leaf.to_string())
}

fn proc_state(pid: u32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = s
        .lines()
        .find(|l| l.starts_with("State:"))
        .expect("State line");
    line["State:".len()..]
        .trim()
        .chars()
        .next()
        .expect("state char")
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

#[test]
fn v1_requires_cgroup_v1() {
    require_v1();
    let cg = Cgroups::detect(Path::new(ROOT), Path::new("/proc"), Parent::Own).expect("detect");
    assert_eq!(cg.version(), CgroupVersion::V1);
}

#[test]
fn v1_create_apply_read_limits() {
    let f = Fixture::new();
    let cg = owned("obj1");
    assert!(!f.cg.exists(&cg));
    f.cg.create(&cg).expect("create");
    f.cg.create(&cg).expect("create is idempotent");
    assert!(f.cg.exists(&cg));
    for ctrl in CONTROLLERS {
        assert!(f.hier_dir(ctrl, "obj1").is_dir(), "{ctrl} dir");
    }
    // New v1 cpusets start empty; create must have filled them (parent included).
    assert!(!f.read("cpuset", "", "cpuset.cpus").is_empty());
    assert!(!f.read("cpuset", "obj1", "cpuset.cpus").is_empty());
    assert!(!f.read("cpuset", "obj1", "cpuset.mems").is_empty());

    let res = Resources {
        cpu: Some(0.5),
        cpu_weight: Some(50),
        cpuset: Some(CpuSet("0".into())),
        memory: Some(Memory(64 << 20)),
        pids: Some(100),
    };
    f.cg.apply(&cg, &res).expect("apply");
    assert_eq!(f.read("cpu", "obj1", "cpu.cfs_quota_us"), "50000");
    assert_eq!(f.read("cpu", "obj1", "cpu.cfs_period_us"), "100000");
    assert_eq!(f.read("cpu", "obj1", "cpu.shares"), "512");
    assert_eq!(f.read("cpuset", "obj1", "cpuset.cpus"), "0");
    assert_eq!(
        f.read("memory", "obj1", "memory.limit_in_bytes"),
        "67108864"
    );
    assert_eq!(f.read("pids", "obj1", "pids.max"), "100");

    let l = f.cg.read_limits(&cg).expect("read_limits");
    assert_eq!(l.cpu_quota_us, Some(50_000));
    assert_eq!(l.cpu_period_us, 100_000);
    assert_eq!(l.cpu_weight, 50);
    assert_eq!(l.cpuset, "0");
    assert_eq!(l.memory_bytes, Some(64 << 20));
    assert_eq!(l.pids, Some(100));
    assert!(!l.frozen);

    // Only the fields that are set are written.
    f.cg.apply(
        &cg,
        &Resources {
            cpu: Some(1.25),
            ..Default::default()
        },
    )
    .expect("apply cpu");
    let l = f.cg.read_limits(&cg).expect("read_limits");
    assert_eq!(l.cpu_quota_us, Some(125_000));
    assert_eq!(l.memory_bytes, Some(64 << 20));

    // A fresh cgroup reads as unlimited.
    let fresh = owned("fresh");
    f.cg.create(&fresh).expect("create");
    let l = f.cg.read_limits(&fresh).expect("read_limits");
    assert_eq!(l.cpu_quota_us, None);
    assert_eq!(l.memory_bytes, None);
    assert_eq!(l.pids, None);
    assert_eq!(l.cpu_weight, 100);

    assert_eq!(f.cg.path(&cg), format!("{}/obj1", f.parent));
    let dirs = f.cg.dirs(&cg);
    assert_eq!(dirs.len(), CONTROLLERS.len());
    for (ctrl, dir) in &dirs {
        assert_eq!(dir, &f.hier_dir(ctrl, "obj1"));
    }
    // cpu and cpuacct are separate hierarchies here, so one procs file per controller.
    let procs = f.cg.procs_files(&cg);
    assert_eq!(procs.len(), CONTROLLERS.len());
    assert!(procs
        .iter()
        .all(|p| p.ends_with("cgroup.procs") && p.exists()));
}

#[test]
fn v1_kernel_refusals_are_rejected_with_the_field() {
    let f = Fixture::new();
    let cg = owned("refuse");
    f.cg.create(&cg).expect("create");
    let cases: [(Resources, &str); 3] = [
        (
            Resources {
                cpuset: Some(CpuSet("4000".into())),
                ..Default::default()
            },
            "resources.cpuset",
        ),
        (
            // 100 µs per 100 ms is below the kernel's 1 ms floor: EINVAL.
            Resources {
                cpu: Some(0.001),
                ..Default::default()
            },
            "resources.cpu",
        ),
        (
            Resources {
                cpu: Some(-1.0),
                ..Default::default()
            },
            "resources.cpu",
        ),
    ];
    for (res, want) in cases {
        match f.cg.apply(&cg, &res) {
            Err(CgroupError::Rejected { field, message }) => {
                assert_eq!(field, want, "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("{res:?}: expected Rejected({want}), got {other:?}"),
        }
    }
}

#[test]
fn v1_freeze_and_thaw_a_real_process() {
    let mut f = Fixture::new();
    let cg = owned("frz");
    f.cg.create(&cg).expect("create");
    let pid = f.spawn("sleep", &["100"]);
    f.cg.add_pid(&cg, pid).expect("add_pid");
    assert_eq!(f.cg.procs(&cg).expect("procs"), vec![pid]);
    for ctrl in CONTROLLERS {
        let procs = f.read(ctrl, "frz", "cgroup.procs");
        assert_eq!(procs, pid.to_string(), "{ctrl}");
    }

    f.cg.freeze(&cg, true).expect("freeze");
    assert_eq!(f.read("freezer", "frz", "freezer.state"), "FROZEN");
    assert!(f.cg.read_limits(&cg).expect("read_limits").frozen);
    // A v1-frozen task shows as D (or T on some kernels).
    let st = proc_state(pid);
    assert!(matches!(st, 'D' | 'T' | 't'), "state {st}");

    f.cg.freeze(&cg, false).expect("thaw");
    assert_eq!(f.read("freezer", "frz", "freezer.state"), "THAWED");
    assert!(!f.cg.read_limits(&cg).expect("read_limits").frozen);
    assert!(
        wait_for(Duration::from_secs(1), || proc_state(pid) == 'S'),
        "state after thaw {}",
        proc_state(pid)
    );
}

#[test]
fn v1_stat_reader_follows_a_busy_child() {
    let mut f = Fixture::new();
    let cg = owned("busy");
    f.cg.create(&cg).expect("create");
    let pid = f.spawn("sh", &["-c", "while :; do :; done"]);
    f.cg.add_pid(&cg, pid).expect("add_pid");

    let mut reader = f.cg.stat_reader(&cg).expect("stat_reader");
    let mut buf = Vec::new();
    let mut s1 = Sample::default();
    reader.read(&mut buf, &mut s1).expect("read");
    std::thread::sleep(Duration::from_millis(200));
    let mut s2 = Sample::default();
    reader.read(&mut buf, &mut s2).expect("read");

    let (c1, c2) = (
        s1.cpu_usage_ns.expect("cpu_usage_ns"),
        s2.cpu_usage_ns.expect("cpu_usage_ns"),
    );
    assert!(c2 > c1, "cpu usage must grow: {c1} -> {c2}");
    // 200 ms of a spinning process is well above 5 ms of CPU, even on a busy machine.
    assert!(c2 - c1 > 5_000_000, "{c1} -> {c2}");
    assert_eq!(s2.pids, Some(1));
    assert!(s2.memory_bytes.is_some());
    assert_eq!(s2.memory_limit_bytes, None, "unlimited");
    assert_eq!(s2.oom_kills, Some(0));
    assert!(s2.cpu_throttled_ns.is_some());
    assert!(s2.io_read_bytes.is_some() && s2.io_write_bytes.is_some());
    assert_eq!(reader.first_pid(&mut buf), Some(pid));

    // The same open files see new values: a limit applied now shows in the next read, and
    // a tight quota starts throttling.
    f.cg.apply(
        &cg,
        &Resources {
            memory: Some(Memory(256 << 20)),
            cpu: Some(0.1),
            ..Default::default()
        },
    )
    .expect("apply");
    let mut s3 = Sample::default();
    reader.read(&mut buf, &mut s3).expect("read");
    assert_eq!(s3.memory_limit_bytes, Some(256 << 20));
    let throttled = wait_for(Duration::from_secs(3), || {
        reader.read(&mut buf, &mut s3).expect("read");
        s3.cpu_throttled_ns.unwrap_or(0) > s2.cpu_throttled_ns.unwrap_or(0)
    });
    assert!(
        throttled,
        "throttling must show: {:?} -> {:?}",
        s2.cpu_throttled_ns, s3.cpu_throttled_ns
    );

    // Once the cgroup is gone, the reader says so instead of returning stale numbers.
    let child = f.child(pid);
    child.kill().expect("kill");
    child.wait().expect("wait");
    f.cg.remove(&cg).expect("remove");
    assert!(reader.read(&mut buf, &mut s3).is_err());
}

#[test]
fn v1_remove_cleans_up_and_refuses_external() {
    let mut f = Fixture::new();
    let cg = owned("rm");
    f.cg.create(&cg).expect("create");
    let pid = f.spawn("sleep", &["100"]);
    f.cg.add_pid(&cg, pid).expect("add_pid");
    // Killed but possibly not yet reaped when remove runs: remove retries on EBUSY.
    let child = f.child(pid);
    child.kill().expect("kill");
    child.wait().expect("wait");
    f.cg.remove(&cg).expect("remove");
    assert!(!f.cg.exists(&cg));
    for ctrl in CONTROLLERS {
        assert!(!f.hier_dir(ctrl, "rm").exists(), "{ctrl}");
    }
    f.cg.remove(&cg).expect("removing a missing cgroup is fine");

    let ext = CgroupRef::External(format!("{}/kept", f.parent));
    f.cg.create(&owned("kept")).expect("create");
    match f.cg.remove(&ext) {
        Err(CgroupError::Other(m)) => assert!(m.contains("external"), "{m}"),
        other => panic!("expected Other, got {other:?}"),
    }
    assert!(f.cg.exists(&ext));
}

#[test]
fn v1_external_cgroup_is_addressed_where_it_exists() {
    let f = Fixture::new();
    // Make a cgroup by hand in two hierarchies only.
    for ctrl in ["cpu", "memory"] {
        std::fs::create_dir_all(f.hier_dir(ctrl, "ext")).expect("mkdir");
    }
    let ext = CgroupRef::External(format!("{}/ext", f.parent));
    assert!(f.cg.exists(&ext));
    f.cg.create(&ext)
        .expect("create of an existing external cgroup is a no-op");
    let dirs = f.cg.dirs(&ext);
    let names: Vec<&str> = dirs.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, ["cpu", "memory"]);
    assert_eq!(f.cg.procs_files(&ext).len(), 2);
    assert_eq!(f.cg.path(&ext), format!("{}/ext", f.parent));
    f.cg.apply(
        &ext,
        &Resources {
            memory: Some(Memory(32 << 20)),
            ..Default::default()
        },
    )
    .expect("apply");
    assert_eq!(f.read("memory", "ext", "memory.limit_in_bytes"), "33554432");
    // No pids hierarchy for it: the field cannot be honoured.
    match f.cg.apply(
        &ext,
        &Resources {
            pids: Some(5),
            ..Default::default()
        },
    ) {
        Err(CgroupError::Rejected { field, .. }) => assert_eq!(field, "resources.pids"),
        other => panic!("expected Rejected, got {other:?}"),
    }

    let missing = CgroupRef::External(format!("{}/nope", f.parent));
    assert!(!f.cg.exists(&missing));
    assert!(f.cg.create(&missing).is_err());
    assert!(f.cg.create(&CgroupRef::External("/a/../b".into())).is_err());
}

#[test]
fn v1_lowering_memory_below_usage_is_rejected() {
    let mut f = Fixture::new();
    let cg = owned("mem");
    f.cg.create(&cg).expect("create");
    // Waits for a line, then allocates and touches 32 MiB (charged to the cgroup it has been
    // moved into by then), says "ready" and holds it.
    let pid = f.spawn(
        "perl",
        &[
            "-e",
            "$| = 1; <STDIN>; my $x = 'a' x (32 << 20); print \"ready\\n\"; <STDIN>;",
        ],
    );
    f.cg.add_pid(&cg, pid).expect("add_pid");
    let child = f.child(pid);
    child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line.trim(), "ready");

    let err =
        f.cg.apply(
            &cg,
            &Resources {
                memory: Some(Memory(4 << 20)),
                ..Default::default()
            },
        )
        .expect_err("a limit below usage must be refused");
    match err {
        CgroupError::Rejected { field, message } => {
            assert_eq!(field, "resources.memory");
            assert!(message.contains("below current usage"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // The old (unlimited) limit stands.
    assert_eq!(f.cg.read_limits(&cg).expect("limits").memory_bytes, None);
}

#[test]
fn v1_bad_leaf_names_are_rejected() {
    let f = Fixture::new();
    for bad in ["", ".", "..", "a/b", "../escape", "../../etc", "x\ny"] {
        let cg = owned(bad);
        assert!(
            matches!(f.cg.create(&cg), Err(CgroupError::Other(_))),
            "{bad:?}"
        );
        assert!(f.cg.apply(&cg, &Resources::default()).is_err(), "{bad:?}");
        assert!(f.cg.remove(&cg).is_err(), "{bad:?}");
        assert!(!f.cg.exists(&cg), "{bad:?}");
        assert!(f.cg.dirs(&cg).is_empty(), "{bad:?}");
        assert!(f.cg.procs_files(&cg).is_empty(), "{bad:?}");
        assert!(f.cg.stat_reader(&cg).is_err(), "{bad:?}");
    }
    // Nothing was created anywhere.
    for ctrl in CONTROLLERS {
        assert!(!f.hier_dir(ctrl, "").exists(), "{ctrl}");
    }
}

#[test]
fn v1_procs_files_let_a_child_join_by_writing_zero() {
    let mut f = Fixture::new();
    let cg = owned("join");
    f.cg.create(&cg).expect("create");
    let files: Vec<String> =
        f.cg.procs_files(&cg)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
    // What a spawned child does before exec: write 0 (itself) into every procs file.
    let mut args = vec![
        "-c",
        "for f in \"$@\"; do echo 0 > \"$f\" || exit 1; done; exec sleep 100",
        "sh",
    ];
    args.extend(files.iter().map(String::as_str));
    let pid = f.spawn("sh", &args);
    // The shell writes the files one by one: wait until the last hierarchy has it.
    let all_joined = || {
        CONTROLLERS.iter().all(|ctrl| {
            std::fs::read_to_string(f.hier_dir(ctrl, "join").join("cgroup.procs"))
                .map(|s| s.trim() == pid.to_string())
                .unwrap_or(false)
        })
    };
    assert!(
        wait_for(Duration::from_secs(2), all_joined),
        "child did not join every hierarchy"
    );
    assert_eq!(f.cg.procs(&cg).expect("procs"), vec![pid]);
}

#[test]
fn v1_parent_own_follows_proc_self_cgroup() {
    require_v1();
    let cg = V1::new(Path::new(ROOT), Path::new("/proc"), Parent::Own).expect("V1::new");
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("read");
    let own_path = |ctrl: &str| -> String {
        own.lines()
            .find_map(|l| {
                let mut it = l.splitn(3, ':');
                let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
                ctrls
                    .split(',')
                    .any(|c| c == ctrl)
                    .then(|| path.to_string())
            })
            .unwrap_or_else(|| panic!("{ctrl} not in /proc/self/cgroup"))
    };
    let dirs = cg.dirs(&owned("0123456789abcdef"));
    assert_eq!(dirs.len(), CONTROLLERS.len());
    for (ctrl, dir) in &dirs {
        let mut want = Path::new(ROOT).join(ctrl);
        let p = own_path(ctrl);
        let p = p.trim_start_matches('/');
        if !p.is_empty() {
            want.push(p);
        }
        want.push("nodeagent/0123456789abcdef");
        assert_eq!(dir, &want, "{ctrl}");
    }
    let cpu = own_path("cpu");
    let want = format!("{}/nodeagent/0123456789abcdef", cpu.trim_end_matches('/'));
    assert_eq!(cg.path(&owned("0123456789abcdef")), want);
}

/// `cpu,cpuacct` co-mounted with `cpu` and `cpuacct` symlinks (the usual systemd layout), on a
/// fake tree: one hierarchy, created and joined once, addressed under both names.
#[test]
fn v1_comounted_cpu_cpuacct_share_one_hierarchy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("cgroup");
    let proc_root = tmp.path().join("proc");
    std::fs::create_dir_all(root.join("cpu,cpuacct")).expect("mkdir");
    std::fs::create_dir_all(root.join("memory")).expect("mkdir");
    std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).expect("symlink");
    std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).expect("symlink");
    std::fs::create_dir_all(proc_root.join("self")).expect("mkdir");
    std::fs::write(
        proc_root.join("self/cgroup"),
        "3:memory:/m\n2:cpu,cpuacct:/c\n1:name=systemd:/s\n0::/\n",
    )
    .expect("write");

    let cg = V1::new(&root, &proc_root, Parent::Own).expect("V1::new");
    let obj = owned("obj");
    let dirs = cg.dirs(&obj);
    assert_eq!(
        dirs,
        vec![
            ("cpu".to_string(), root.join("cpu/c/nodeagent/obj")),
            ("cpuacct".to_string(), root.join("cpuacct/c/nodeagent/obj")),
            ("memory".to_string(), root.join("memory/m/nodeagent/obj")),
        ]
    );
    assert_eq!(cg.path(&obj), "/c/nodeagent/obj");
    cg.create(&obj).expect("create");
    assert!(root.join("cpu,cpuacct/c/nodeagent/obj").is_dir());
    assert_eq!(
        cg.procs_files(&obj),
        vec![
            root.join("cpu/c/nodeagent/obj/cgroup.procs"),
            root.join("memory/m/nodeagent/obj/cgroup.procs"),
        ]
    );

    // The v1 counter files, as the kernel would show them.
    let cpu = root.join("cpu,cpuacct/c/nodeagent/obj");
    let mem = root.join("memory/m/nodeagent/obj");
    for (d, f, s) in [
        (&cpu, "cgroup.procs", "77\n"),
        (&cpu, "cpuacct.usage", "123456789\n"),
        (
            &cpu,
            "cpu.stat",
            "nr_periods 5\nnr_throttled 1\nthrottled_time 4242\nnr_bursts 0\nburst_time 0\n",
        ),
        (&cpu, "cpu.cfs_quota_us", "-1\n"),
        (&cpu, "cpu.cfs_period_us", "100000\n"),
        (&cpu, "cpu.shares", "1024\n"),
        (&mem, "memory.usage_in_bytes", "1048576\n"),
        (&mem, "memory.limit_in_bytes", "9223372036854771712\n"),
        (
            &mem,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        ),
    ] {
        std::fs::write(d.join(f), s).expect("write");
    }
    let mut r = cg.stat_reader(&obj).expect("stat_reader");
    let mut buf = Vec::new();
    let mut s = Sample::default();
    r.read(&mut buf, &mut s).expect("read");
    assert_eq!(s.cpu_usage_ns, Some(123_456_789));
    assert_eq!(s.cpu_throttled_ns, Some(4242));
    assert_eq!(s.memory_bytes, Some(1 << 20));
    assert_eq!(s.memory_limit_bytes, None);
    assert_eq!(s.oom_kills, Some(2));
    assert_eq!(s.pids, None, "no pids hierarchy");
    assert_eq!(s.io_read_bytes, None, "no blkio hierarchy");
    assert_eq!(r.first_pid(&mut buf), Some(77));
    let l = cg.read_limits(&obj).expect("read_limits");
    assert_eq!(
        (l.cpu_quota_us, l.cpu_period_us, l.cpu_weight),
        (None, 100_000, 100)
    );

    cg.remove(&obj).expect("remove");
    assert!(!cpu.exists() && !mem.exists());
}
