//! `ProcFs` against the real `/proc` of the machine running the tests.

use nodeagent_drivers::procfs::ProcFs;
use nodeagent_types::HostStats;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn proc() -> ProcFs {
    ProcFs::new("/proc")
}

#[test]
fn host_stats_of_this_host() {
    let fs = proc();
    let mut buf = Vec::new();
    let mut out = HostStats::default();
    fs.host_stats(&mut buf, &mut out).expect("host_stats");
    assert!(out.cpus >= 1, "{out:?}");
    assert!(out.memory_total_bytes > 0, "{out:?}");
    assert!(
        out.memory_available_bytes <= out.memory_total_bytes,
        "{out:?}"
    );
    assert!(out.cpu.user + out.cpu.system + out.cpu.idle > 0, "{out:?}");
    assert!(out.uptime_seconds > 0.0, "{out:?}");
    assert!(out.nets.iter().any(|n| n.device == "lo"), "{:?}", out.nets);
    assert!(
        !out.disks.iter().any(|d| d.device.starts_with("loop")),
        "{:?}",
        out.disks
    );

    // A second call into the same value: counters only grow, devices are not duplicated.
    let first = out.clone();
    fs.host_stats(&mut buf, &mut out).expect("host_stats again");
    assert!(out.cpu.idle >= first.cpu.idle);
    assert!(out.uptime_seconds >= first.uptime_seconds);
    assert_eq!(out.nets.len(), first.nets.len());
    assert_eq!(out.disks.len(), first.disks.len());
}

#[test]
fn host_facts_of_this_host() {
    let facts = proc().host_facts().expect("host_facts");
    assert!(!facts.hostname.is_empty());
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    assert_eq!(facts.kernel, release.trim());
    assert!(facts.cpus >= 1);
    assert!(facts.memory_total_bytes > 0);
}

#[test]
fn stat_of_self() {
    let pid = std::process::id();
    let stat = proc().stat(pid).expect("stat");
    assert_eq!(stat.pid, pid);
    assert!(stat.start_time > 0, "{stat:?}");
    assert!(stat.num_threads >= 1, "{stat:?}");
    assert!(stat.rss_bytes > 0, "{stat:?}");
    assert_eq!(stat.ppid, std::os::unix::process::parent_id());
    assert!(proc().alive(pid));
}

#[test]
fn cgroups_of_self() {
    let cgroups = proc().cgroups_of(std::process::id()).expect("cgroups");
    assert!(!cgroups.is_empty());
    assert!(
        cgroups.iter().all(|(_, path)| path.starts_with('/')),
        "{cgroups:?}"
    );
}

#[test]
fn net_of_self() {
    let pid = std::process::id();
    let fs = proc();
    fs.net_dev(pid, &mut Vec::new()).expect("net_dev");
    let ino = std::fs::metadata("/proc/self/ns/net").expect("ns").ino();
    assert_eq!(fs.net_ns(pid), Some(ino));
    assert_eq!(fs.net_ns(u32::MAX), None);
}

#[test]
fn alive_follows_a_real_process() {
    let fs = proc();
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    assert!(fs.alive(pid));
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(!fs.alive(pid));
}

#[test]
fn a_zombie_is_not_alive() {
    let fs = proc();
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Not yet waited for: once it exits it stays a zombie.
    while fs.stat(pid).map(|s| s.state).ok() != Some('Z') {
        assert!(Instant::now() < deadline, "never became a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!fs.alive(pid));
    child.wait().expect("wait");
}
