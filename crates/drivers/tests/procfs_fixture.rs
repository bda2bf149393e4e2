//! `ProcFs` against a fixture root: realistic file contents, exact values.

use nodeagent_drivers::procfs::{HostFacts, ProcError, ProcFs, ProcStat};
use nodeagent_types::{CpuModes, DeviceCounters, HostStats};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const STAT: &str = "\
cpu  21053 10 5361 82751 973 1 44 538 0 0
cpu0 10062 5 2466 42476 75 0 8 259 0 0
cpu1 10991 5 2895 40275 898 1 36 279 0 0
intr 1234567 9 0 0 0 0
ctxt 2345678
btime 1700000000
processes 7101
procs_running 3
procs_blocked 0
softirq 345678 0 1 2 3 4 5 6 7 8 9
";

const MEMINFO: &str = "\
MemTotal:       24684092 kB
MemFree:        23142848 kB
MemAvailable:   24343280 kB
Buffers:            4208 kB
Cached:          1382048 kB
SwapCached:            0 kB
SwapTotal:       2097148 kB
SwapFree:        2000000 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

const DISKSTATS: &str = "\
   7       0 loop0 53 0 2142 12 0 0 0 0 0 28 12 0 0 0 0 0 0
   1       0 ram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 8472 3712 2355002 22604 2439 19240 3282632 16738 0 11656 39907 3831 34 46816 561 50 3
 254       1 vda1 8000 3000 2300000 22000 2400 19000 3200000 16000 0 11000 39000 3800 34 46000 561 50 3
 254       2 vda2 400 12 50000 500 30 200 80000 700 0 600 900 0 0 0 0 0 0
 259       0 nvme0n1 100 0 2000 30 50 0 4000 20 0 40 50 0 0 0 0 0 0
 259       1 nvme0n1p1 90 0 1800 25 45 0 3600 18 0 35 45 0 0 0 0 0 0
 253       0 dm-0 10 0 80 1 5 0 40 2 0 3 3 0 0 0 0 0 0
 253       1 zram0 7 0 56 0 9 0 72 0 0 0 0
   8       0 sda 1 0 8 0 2 0 16 0 0 0 0
garbage line
";

const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3345      32    0    0    0     0          0         0     3345      32    0    0    0     0       0          0
  eth0: 70510035    2296    0    0    0     0          0         0   229342    1722    0    0    0     0       0          0
wlan0:123 4 0 0 0 0 0 0 456 7 0 0 0 0 0 0
";

/// `comm` is `my (weird) ) proc`: spaces and both parentheses, as a process may name itself.
const PID_STAT: &str = "4242 (my (weird) ) proc) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 \
20 0 7 0 98765 10000000 1234 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

const PID_CGROUP: &str = "\
12:pids:/system.slice/x.service
4:memory:/a:b/with:colons
1:name=systemd:/system.slice/x.service
0::/
";

const PID_NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:    2000      20    0    0    0     0          0         0     3000      30    0    0    0     0       0          0
 veth1:     500       5    0    0    0     0          0         0      700       7    0    0    0     0       0          0
";

fn write(root: &Path, rel: &str, contents: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
    fs::write(path, contents).expect("write fixture");
}

fn full_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "stat", STAT);
    write(root, "meminfo", MEMINFO);
    write(root, "loadavg", "0.54 0.61 0.30 2/83 7101\n");
    write(root, "diskstats", DISKSTATS);
    write(root, "net/dev", NET_DEV);
    write(root, "uptime", "555.08 827.51\n");
    write(root, "sys/kernel/hostname", "node-7\n");
    write(root, "sys/kernel/osrelease", "6.18.0-test\n");
    write(root, "4242/stat", PID_STAT);
    write(root, "4242/cgroup", PID_CGROUP);
    write(root, "4242/net/dev", PID_NET_DEV);
    write(root, "4242/ns/net", "");
    write(
        root,
        "4243/stat",
        &PID_STAT.replace("4242 (", "4243 (").replace(") S ", ") Z "),
    );
    write(
        root,
        "4244/stat",
        &PID_STAT.replace("4242 (", "4244 (").replace(") S ", ") X "),
    );
    write(root, "4245/stat", "4245 (truncated) S 1 2 3\n");
    dir
}

fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

fn dev(name: &str, read: u64, write: u64) -> DeviceCounters {
    DeviceCounters {
        device: name.to_owned(),
        read_bytes: read,
        write_bytes: write,
    }
}

fn expected_full() -> HostStats {
    let t = tick_ns();
    HostStats {
        cpus: 2,
        cpu: CpuModes {
            user: 21053 * t,
            nice: 10 * t,
            system: 5361 * t,
            idle: 82751 * t,
            iowait: 973 * t,
            irq: t,
            softirq: 44 * t,
            steal: 538 * t,
        },
        load1: 0.54,
        load5: 0.61,
        load15: 0.30,
        memory_total_bytes: 24684092 * 1024,
        memory_available_bytes: 24343280 * 1024,
        memory_free_bytes: 23142848 * 1024,
        swap_total_bytes: 2097148 * 1024,
        swap_free_bytes: 2000000 * 1024,
        disks: vec![
            dev("vda", 2355002 * 512, 3282632 * 512),
            dev("nvme0n1", 2000 * 512, 4000 * 512),
            dev("dm-0", 80 * 512, 40 * 512),
            dev("zram0", 56 * 512, 72 * 512),
            dev("sda", 8 * 512, 16 * 512),
        ],
        nets: vec![
            dev("lo", 3345, 3345),
            dev("eth0", 70510035, 229342),
            dev("wlan0", 123, 456),
        ],
        uptime_seconds: 555.08,
        procs_running: 3,
    }
}

#[test]
fn host_stats_exact_values() {
    let dir = full_fixture();
    let fs = ProcFs::new(dir.path());
    let mut buf = Vec::new();
    let mut out = HostStats::default();
    fs.host_stats(&mut buf, &mut out).expect("host_stats");
    assert_eq!(out, expected_full());
}

#[test]
fn host_stats_reuses_and_resets_output() {
    let full = full_fixture();
    let minimal = tempfile::tempdir().expect("tempdir");
    write(minimal.path(), "stat", "cpu  1 2 3 4\ncpu0 1 2 3 4\n");

    let mut buf = Vec::new();
    let mut out = HostStats::default();
    let full_fs = ProcFs::new(full.path());
    full_fs.host_stats(&mut buf, &mut out).expect("full");
    // Again into the filled value: same result, no stale or duplicated entries.
    full_fs.host_stats(&mut buf, &mut out).expect("full again");
    assert_eq!(out, expected_full());

    // Optional files missing: their fields go back to the defaults.
    ProcFs::new(minimal.path())
        .host_stats(&mut buf, &mut out)
        .expect("minimal");
    let t = tick_ns();
    let expected = HostStats {
        cpus: 1,
        cpu: CpuModes {
            user: t,
            nice: 2 * t,
            system: 3 * t,
            idle: 4 * t,
            ..CpuModes::default()
        },
        ..HostStats::default()
    };
    assert_eq!(out, expected);
}

#[test]
fn host_stats_missing_stat_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "meminfo", MEMINFO);
    let err = ProcFs::new(dir.path())
        .host_stats(&mut Vec::new(), &mut HostStats::default())
        .expect_err("no stat");
    match &err {
        ProcError::Io { path, source } => {
            assert_eq!(path, &dir.path().join("stat"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("stat"), "{err}");
}

#[test]
fn host_stats_malformed_files_are_parse_errors_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "stat", "intr 1 2 3\n");
    let err = ProcFs::new(dir.path())
        .host_stats(&mut Vec::new(), &mut HostStats::default())
        .expect_err("no cpu line");
    assert!(
        matches!(&err, ProcError::Parse { path, .. } if path == &dir.path().join("stat")),
        "{err:?}"
    );

    write(dir.path(), "stat", STAT);
    write(dir.path(), "loadavg", "high\n");
    let err = ProcFs::new(dir.path())
        .host_stats(&mut Vec::new(), &mut HostStats::default())
        .expect_err("bad loadavg");
    assert!(
        matches!(&err, ProcError::Parse { path, .. } if path == &dir.path().join("loadavg")),
        "{err:?}"
    );
}

#[test]
fn host_facts_from_fixture() {
    let dir = full_fixture();
    let facts = ProcFs::new(dir.path()).host_facts().expect("host_facts");
    assert_eq!(
        facts,
        HostFacts {
            hostname: "node-7".into(),
            kernel: "6.18.0-test".into(),
            cpus: 2,
            memory_total_bytes: 24684092 * 1024,
        }
    );
}

#[test]
fn host_facts_does_not_fall_back_to_the_real_hostname_for_a_fixture() {
    let dir = full_fixture();
    fs::remove_file(dir.path().join("sys/kernel/hostname")).expect("rm");
    let err = ProcFs::new(dir.path())
        .host_facts()
        .expect_err("no hostname");
    assert!(
        matches!(&err, ProcError::Io { path, .. } if path.ends_with("sys/kernel/hostname")),
        "{err:?}"
    );
}

#[test]
fn stat_parses_from_the_last_parenthesis() {
    let dir = full_fixture();
    let stat = ProcFs::new(dir.path()).stat(4242).expect("stat");
    assert_eq!(
        stat,
        ProcStat {
            pid: 4242,
            state: 'S',
            ppid: 1,
            cpu_ticks: 200,
            start_time: 98765,
            num_threads: 7,
            rss_bytes: 1234 * page_size(),
        }
    );
}

#[test]
fn stat_errors_name_the_path() {
    let dir = full_fixture();
    let fs = ProcFs::new(dir.path());
    let err = fs.stat(9999).expect_err("missing");
    assert!(
        matches!(&err, ProcError::Io { path, .. } if path == &dir.path().join("9999/stat")),
        "{err:?}"
    );
    let err = fs.stat(4245).expect_err("truncated");
    assert!(
        matches!(&err, ProcError::Parse { path, .. } if path == &dir.path().join("4245/stat")),
        "{err:?}"
    );
}

#[test]
fn alive_by_state() {
    let dir = full_fixture();
    let fs = ProcFs::new(dir.path());
    assert!(fs.alive(4242), "sleeping");
    assert!(!fs.alive(4243), "zombie");
    assert!(!fs.alive(4244), "dead");
    assert!(!fs.alive(4245), "unparsable");
    assert!(!fs.alive(9999), "missing");
}

#[test]
fn cgroups_of_splits_on_the_first_two_colons() {
    let dir = full_fixture();
    let cgroups = ProcFs::new(dir.path()).cgroups_of(4242).expect("cgroups");
    let expected: Vec<(String, String)> = [
        ("pids", "/system.slice/x.service"),
        ("memory", "/a:b/with:colons"),
        ("name=systemd", "/system.slice/x.service"),
        ("", "/"),
    ]
    .into_iter()
    .map(|(c, p)| (c.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(cgroups, expected);
}

#[test]
fn cgroups_of_malformed_is_a_parse_error() {
    let dir = full_fixture();
    write(dir.path(), "4242/cgroup", "12:pids\n");
    let err = ProcFs::new(dir.path()).cgroups_of(4242).expect_err("bad");
    assert!(matches!(err, ProcError::Parse { .. }), "{err:?}");
}

#[test]
fn net_dev_sums_non_loopback() {
    let dir = full_fixture();
    let fs = ProcFs::new(dir.path());
    let mut buf = Vec::new();
    assert_eq!(fs.net_dev(4242, &mut buf).expect("net_dev"), (2500, 3700));
    assert!(fs.net_dev(9999, &mut buf).is_err());
}

#[test]
fn net_ns_is_the_inode() {
    let dir = full_fixture();
    let fs = ProcFs::new(dir.path());
    let ino = fs::metadata(dir.path().join("4242/ns/net"))
        .expect("meta")
        .ino();
    assert_eq!(fs.net_ns(4242), Some(ino));
    assert_eq!(fs.net_ns(9999), None);
}

#[test]
fn root_is_kept() {
    let fs = ProcFs::new("/some/root");
    assert_eq!(fs.root(), Path::new("/some/root"));
}
