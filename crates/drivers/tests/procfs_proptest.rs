//! Every procfs parser, and `ProcFs` over arbitrary files, returns rather than panics.

use nodeagent_drivers::procfs::{parse, ProcFs};
use nodeagent_types::HostStats;
use proptest::prelude::*;

/// Text close to procfs formats (digits, names, separators), more likely to reach deep paths
/// than uniformly random strings.
fn procfs_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-z():| \\-/=\n]{0,400}",
        "([0-9]{1,21}|[a-z]{1,6}[0-9]?|[():| ]|\n){0,80}",
    ]
}

fn run_all(data: &[u8]) {
    let _ = parse::stat(data);
    let _ = parse::meminfo(data);
    let _ = parse::loadavg(data);
    let _ = parse::uptime(data);
    let _ = parse::net_dev(data).count();
    for d in parse::diskstats(data) {
        let _ = parse::skip_disk(&d.name);
        let _ = parse::is_partition_of(&d.name, "sda");
        let _ = parse::is_partition_of("nvme0n1p1", &d.name);
    }
    let _ = parse::proc_stat(data, 4096);
    let _ = parse::proc_stat(data, u64::MAX);
    let _ = parse::cgroups(data);
}

proptest! {
    #[test]
    fn parsers_never_panic_on_text(s in procfs_like()) {
        run_all(s.as_bytes());
    }

    #[test]
    fn parsers_never_panic_on_bytes(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        run_all(&b);
    }

    #[test]
    fn proc_stat_never_panics_after_a_valid_prefix(comm in ".{0,20}", tail in procfs_like()) {
        let line = format!("42 ({comm}) {tail}");
        let _ = parse::proc_stat(line.as_bytes(), 4096);
    }

    #[test]
    fn partition_rule_never_panics(a in ".{0,12}", b in ".{0,12}") {
        let _ = parse::is_partition_of(&a, &b);
        let _ = parse::skip_disk(&a);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The same arbitrary content in every file of a fixture root.
    #[test]
    fn procfs_never_panics_on_arbitrary_files(s in procfs_like()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for rel in [
            "stat", "meminfo", "loadavg", "diskstats", "net/dev", "uptime",
            "sys/kernel/hostname", "sys/kernel/osrelease", "7/stat", "7/cgroup", "7/net/dev",
        ] {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &s).expect("write");
        }
        let fs = ProcFs::new(root);
        let _ = fs.host_facts();
        let _ = fs.host_stats(&mut Vec::new(), &mut HostStats::default());
        let _ = fs.net_dev(7, &mut Vec::new());
        let _ = fs.stat(7);
        let _ = fs.cgroups_of(7);
        let _ = fs.alive(7);
    }
}

#[test]
fn parser_units() {
    assert_eq!(parse::parse_u64(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse::parse_u64(b"18446744073709551616"), None);
    assert_eq!(parse::parse_u64(b"-1"), None);
    assert_eq!(parse::parse_u64(b""), None);
    assert!(parse::is_partition_of("sda1", "sda"));
    assert!(parse::is_partition_of("nvme0n1p1", "nvme0n1"));
    assert!(parse::is_partition_of("mmcblk0p2", "mmcblk0"));
    assert!(!parse::is_partition_of("sdaa", "sda"));
    assert!(!parse::is_partition_of("sda", "sda"));
    assert!(!parse::is_partition_of("nvme0n10", "nvme0n1"));
    assert!(!parse::is_partition_of("dm-10", "dm-1"));
    assert!(parse::skip_disk("loop3") && parse::skip_disk("ram0"));
    assert!(!parse::skip_disk("dm-0") && !parse::skip_disk("zram0"));
    assert_eq!(parse::loadavg(b"1.5 2 3.25 1/2 3"), Ok((1.5, 2.0, 3.25)));
    assert!(parse::loadavg(b"1.5 2").is_err());
    let m = parse::meminfo(b"MemTotal: 10 kB\nMemFree: x kB\nSwapTotal: 7\n");
    assert_eq!(m.total, Some(10240));
    assert_eq!(m.free, None);
    assert_eq!(m.swap_total, Some(7));
}
