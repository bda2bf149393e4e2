//! Readers past the open-file budget open their counter files per read, and read the same
//! values. Its own test binary: the budget is process-wide. Needs root and cgroup v1.

use nodeagent_drivers::cgroup::{self, CgroupManager, CgroupRef, Parent, V1};
use nodeagent_types::Sample;
use std::path::Path;

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("fd dir").count()
}

#[test]
fn readers_past_the_budget_open_per_read() {
    assert!(
        Path::new("/sys/fs/cgroup/cpu").is_dir(),
        "cgroup v1 is required: /sys/fs/cgroup/cpu is missing"
    );
    let parent = format!("/nodeagent-test-budget-{}", std::process::id());
    let v1 = V1::new(
        Path::new("/sys/fs/cgroup"),
        Path::new("/proc"),
        Parent::Absolute(parent.clone()),
    )
    .expect("V1::new");
    let cg = CgroupRef::Owned("budget".into());
    v1.create(&cg).expect("create cgroup");

    // Within the budget: the files stay open.
    let before = fds();
    let mut open = v1.stat_reader(&cg).expect("reader");
    let held = cgroup::open_files_held();
    assert!(held >= 5, "files held: {held}");
    assert!(fds() >= before + held, "descriptors did not grow");

    // Past it: none stay open, and reads still work.
    cgroup::set_open_budget(0);
    let before = fds();
    let mut lazy = v1.stat_reader(&cg).expect("reader past the budget");
    assert_eq!(
        fds(),
        before,
        "a reader past the budget keeps no descriptor"
    );
    assert_eq!(cgroup::open_files_held(), held);
    let mut buf = Vec::new();
    let (mut a, mut b) = (Sample::default(), Sample::default());
    open.read(&mut buf, &mut a).expect("read open");
    lazy.read(&mut buf, &mut b).expect("read lazy");
    assert_eq!(
        fds(),
        before,
        "a read past the budget closes what it opened"
    );
    assert!(b.cpu_usage_ns.is_some() && b.memory_bytes.is_some() && b.pids.is_some());
    assert_eq!(a.pids, b.pids);
    assert_eq!(a.memory_limit_bytes, b.memory_limit_bytes);

    drop(open);
    drop(lazy);
    assert_eq!(
        cgroup::open_files_held(),
        0,
        "dropping a reader returns its budget"
    );
    v1.remove(&cg).expect("remove");
    for c in [
        "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer",
    ] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(c).join(&parent[1..]));
    }
}
