//! Allocation-free parsers for the cgroup files the sampling loop reads.
//!
//! They take the raw bytes the kernel returned and never panic: a malformed or truncated file
//! yields `None` (or the sum of what could be read), because a sample with a missing counter is
//! better than a crashed sampler.

/// Parses a decimal `u64`, ignoring surrounding ASCII whitespace. Overflow and stray bytes give
/// `None`.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Parses a single value that may be `max` (v2 "unlimited"): `Some(None)` for `max`.
pub(crate) fn parse_max(s: &[u8]) -> Option<Option<u64>> {
    let t = s.trim_ascii();
    if t == b"max" {
        Some(None)
    } else {
        parse_u64(t).map(Some)
    }
}

/// Finds `key` in a flat-keyed file (`key value` lines, as in `cpu.stat`, `memory.events`,
/// `memory.oom_control`) and parses its value.
pub(crate) fn keyed(buf: &[u8], key: &[u8]) -> Option<u64> {
    for line in buf.split(|&c| c == b'\n') {
        if let Some(rest) = line.strip_prefix(key) {
            if let Some(v) = rest.strip_prefix(b" ") {
                return parse_u64(v);
            }
        }
    }
    None
}

/// Sums the `Read` and `Write` lines of a v1 `blkio.*io_service_bytes*` file
/// (`8:0 Read 1234`). Returns `None` when the file has no such line (no device has done I/O, or
/// the file is not the one the kernel fills), so the caller can try the other file.
pub(crate) fn blkio_read_write(buf: &[u8]) -> Option<(u64, u64)> {
    let mut found = false;
    let (mut r, mut w) = (0u64, 0u64);
    for line in buf.split(|&c| c == b'\n') {
        let mut f = line.split(|&c| c == b' ').filter(|x| !x.is_empty());
        let (Some(_dev), Some(op), Some(val)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Some(v) = parse_u64(val) else { continue };
        match op {
            b"Read" => {
                r = r.saturating_add(v);
                found = true;
            }
            b"Write" => {
                w = w.saturating_add(v);
                found = true;
            }
            _ => {}
        }
    }
    found.then_some((r, w))
}

/// Sums `rbytes=` and `wbytes=` over the devices of a v2 `io.stat`
/// (`8:0 rbytes=1 wbytes=2 rios=3 ...`). An empty file is zero I/O.
pub(crate) fn io_stat_read_write(buf: &[u8]) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for line in buf.split(|&c| c == b'\n') {
        for field in line.split(|&c| c == b' ') {
            if let Some(v) = field.strip_prefix(b"rbytes=") {
                r = r.saturating_add(parse_u64(v).unwrap_or(0));
            } else if let Some(v) = field.strip_prefix(b"wbytes=") {
                w = w.saturating_add(parse_u64(v).unwrap_or(0));
            }
        }
    }
    (r, w)
}

/// The first pid in a `cgroup.procs` buffer.
pub(crate) fn first_pid(buf: &[u8]) -> Option<u32> {
    let line = buf
        .split(|&c| c == b'\n')
        .find(|l| !l.trim_ascii().is_empty())?;
    parse_u64(line).and_then(|v| u32::try_from(v).ok())
}

/// Every pid in a `cgroup.procs` buffer (lines that do not parse are skipped).
pub(crate) fn pids(buf: &[u8]) -> Vec<u32> {
    buf.split(|&c| c == b'\n')
        .filter_map(|l| parse_u64(l).and_then(|v| u32::try_from(v).ok()))
        .collect()
}

/// Parses v2 `cpu.max` (`max 100000` or `50000 100000`) into (quota, period).
pub(crate) fn cpu_max(buf: &[u8]) -> Option<(Option<u64>, u64)> {
    let mut f = buf
        .split(|c| c.is_ascii_whitespace())
        .filter(|x| !x.is_empty());
    let quota = parse_max(f.next()?)?;
    let period = f.next().map_or(Some(100_000), parse_u64)?;
    Some((quota, period))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b" 42\n"), Some(42));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_max(b"max\n"), Some(None));
        assert_eq!(parse_max(b"7\n"), Some(Some(7)));
    }

    #[test]
    fn keyed_files() {
        let b = b"usage_usec 10\nuser_usec 5\nthrottled_usec 3\nnr_throttled_x 9\n";
        assert_eq!(keyed(b, b"usage_usec"), Some(10));
        assert_eq!(keyed(b, b"throttled_usec"), Some(3));
        assert_eq!(keyed(b, b"nr_throttled"), None);
        let oom = b"oom_kill_disable 0\nunder_oom 0\noom_kill 4\n";
        assert_eq!(keyed(oom, b"oom_kill"), Some(4));
    }

    #[test]
    fn blkio() {
        let b = b"8:0 Read 100\n8:0 Write 50\n8:0 Sync 1\n8:16 Read 1\n8:16 Write 2\nTotal 153\n";
        assert_eq!(blkio_read_write(b), Some((101, 52)));
        assert_eq!(blkio_read_write(b"Total 0\n"), None);
        assert_eq!(blkio_read_write(b""), None);
    }

    #[test]
    fn io_stat() {
        let b = b"8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n\
                  8:16 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(io_stat_read_write(b), (11, 22));
        assert_eq!(io_stat_read_write(b""), (0, 0));
    }

    #[test]
    fn procs_and_cpu_max() {
        assert_eq!(first_pid(b"\n12\n13\n"), Some(12));
        assert_eq!(first_pid(b""), None);
        assert_eq!(pids(b"1\n2\nx\n3\n"), vec![1, 2, 3]);
        assert_eq!(cpu_max(b"max 100000\n"), Some((None, 100_000)));
        assert_eq!(cpu_max(b"50000 100000\n"), Some((Some(50_000), 100_000)));
        assert_eq!(cpu_max(b"garbage"), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_u64(&buf);
            let _ = parse_max(&buf);
            let _ = keyed(&buf, b"usage_usec");
            let _ = keyed(&buf, b"");
            let _ = blkio_read_write(&buf);
            let _ = io_stat_read_write(&buf);
            let _ = first_pid(&buf);
            let _ = pids(&buf);
            let _ = cpu_max(&buf);
        }

        #[test]
        fn parsers_never_panic_on_plausible_text(
            s in "([0-9a-z_:=]{0,12}[ \n]){0,40}"
        ) {
            let b = s.as_bytes();
            let _ = keyed(b, b"oom_kill");
            let _ = blkio_read_write(b);
            let _ = io_stat_read_write(b);
            let _ = cpu_max(b);
        }

        #[test]
        fn numbers_round_trip(v in any::<u64>()) {
            prop_assert_eq!(parse_u64(format!("{v}\n").as_bytes()), Some(v));
        }
    }
}
