//! Pure parsers for the procfs files [`ProcFs`](super::ProcFs) reads.
//!
//! Each takes the raw bytes of a file and never panics, whatever the input: procfs formats change
//! between kernels and fixtures can be anything. Errors are static strings so that the parsers
//! allocate nothing; [`ProcFs`](super::ProcFs) attaches the path. Lines a parser does not
//! understand in a multi-line file are skipped rather than failing the whole file, except where
//! noted.

use super::ProcStat;
use nodeagent_types::CpuModes;
use std::borrow::Cow;

/// A parse failure: what was wrong, as a static message.
pub type ParseResult<T> = std::result::Result<T, &'static str>;

/// Splits on ASCII whitespace, dropping empty pieces.
fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
}

fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
}

/// A decimal `u64`, digits only (no sign, no spaces); `None` on anything else or overflow.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

fn parse_f64(s: &[u8]) -> Option<f64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// The summary of `/proc/stat` the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatSummary {
    /// Time per mode from the aggregate `cpu ` line, in clock ticks (not nanoseconds).
    pub cpu_ticks: CpuModes,
    /// Number of `cpuN` lines: the online CPUs.
    pub cpus: u32,
    /// `procs_running`, 0 when absent.
    pub procs_running: u64,
}

/// Parses `/proc/stat`. Fails only if the aggregate `cpu ` line is missing or malformed; missing
/// trailing mode columns (older kernels) are 0.
pub fn stat(data: &[u8]) -> ParseResult<StatSummary> {
    let mut out = StatSummary::default();
    let mut seen_total = false;
    for line in lines(data) {
        let mut it = fields(line);
        let Some(key) = it.next() else { continue };
        if key == b"cpu" {
            let mut ticks = [0u64; 8];
            let mut n = 0;
            for (slot, f) in ticks.iter_mut().zip(it) {
                *slot = parse_u64(f).ok_or("non-numeric field in the `cpu` line")?;
                n += 1;
            }
            if n < 4 {
                return Err("the `cpu` line has fewer than 4 fields");
            }
            let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks;
            out.cpu_ticks = CpuModes {
                user,
                nice,
                system,
                idle,
                iowait,
                irq,
                softirq,
                steal,
            };
            seen_total = true;
        } else if let Some(rest) = key.strip_prefix(b"cpu") {
            if parse_u64(rest).is_some() {
                out.cpus = out.cpus.saturating_add(1);
            }
        } else if key == b"procs_running" {
            if let Some(n) = it.next().and_then(parse_u64) {
                out.procs_running = n;
            }
        }
    }
    if seen_total {
        Ok(out)
    } else {
        Err("no aggregate `cpu` line")
    }
}

/// The `/proc/meminfo` values the agent uses, in bytes; `None` where the key is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: Option<u64>,
    pub available: Option<u64>,
    pub free: Option<u64>,
    pub swap_total: Option<u64>,
    pub swap_free: Option<u64>,
}

/// Parses `/proc/meminfo` (`Key:   value kB`). Values with a `kB` unit are scaled by 1024, those
/// without a unit are taken as they are. Malformed lines are skipped.
pub fn meminfo(data: &[u8]) -> MemInfo {
    let mut out = MemInfo::default();
    for line in lines(data) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (key, rest) = (&line[..colon], &line[colon + 1..]);
        let slot = match key {
            b"MemTotal" => &mut out.total,
            b"MemAvailable" => &mut out.available,
            b"MemFree" => &mut out.free,
            b"SwapTotal" => &mut out.swap_total,
            b"SwapFree" => &mut out.swap_free,
            _ => continue,
        };
        let mut it = fields(rest);
        let Some(value) = it.next().and_then(parse_u64) else {
            continue;
        };
        *slot = match it.next() {
            None => Some(value),
            Some(b"kB") => Some(value.saturating_mul(1024)),
            Some(_) => continue,
        };
    }
    out
}

/// Parses `/proc/loadavg` into the 1, 5 and 15 minute load averages.
pub fn loadavg(data: &[u8]) -> ParseResult<(f64, f64, f64)> {
    let mut it = fields(data).map(parse_f64);
    match (it.next(), it.next(), it.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c))) => Ok((a, b, c)),
        _ => Err("expected three load averages"),
    }
}

/// Parses `/proc/uptime`: the first field, seconds since boot.
pub fn uptime(data: &[u8]) -> ParseResult<f64> {
    fields(data)
        .next()
        .and_then(parse_f64)
        .ok_or("expected the uptime in seconds")
}

/// One line of a device table (`net/dev`, `diskstats`), in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device<'a> {
    /// The device name; invalid UTF-8 is replaced (and only then allocates).
    pub name: Cow<'a, str>,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// Iterates the interfaces of a `net/dev` file: `read_bytes` is the received bytes, `write_bytes`
/// the transmitted ones. The header lines (no `:`) and malformed lines are skipped. The name is
/// everything before the first `:` (Linux forbids `:` in interface names).
pub fn net_dev(data: &[u8]) -> impl Iterator<Item = Device<'_>> {
    lines(data).filter_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = line[..colon].trim_ascii();
        if name.is_empty() {
            return None;
        }
        let mut it = fields(&line[colon + 1..]);
        let rx = parse_u64(it.next()?)?;
        // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit bytes.
        let tx = parse_u64(it.nth(7)?)?;
        Some(Device {
            name: String::from_utf8_lossy(name),
            read_bytes: rx,
            write_bytes: tx,
        })
    })
}

/// Iterates the devices of `/proc/diskstats`: sectors read (field 6) and written (field 10),
/// times 512 (the kernel always counts 512-byte sectors here). Malformed lines are skipped; no
/// device is filtered out (see [`skip_disk`]).
pub fn diskstats(data: &[u8]) -> impl Iterator<Item = Device<'_>> {
    lines(data).filter_map(|line| {
        let mut it = fields(line);
        // major minor name reads reads_merged sectors_read ms_reading writes writes_merged
        // sectors_written ...
        let name = it.nth(2)?;
        let read = parse_u64(it.nth(2)?)?;
        let written = parse_u64(it.nth(3)?)?;
        Some(Device {
            name: String::from_utf8_lossy(name),
            read_bytes: read.saturating_mul(512),
            write_bytes: written.saturating_mul(512),
        })
    })
}

/// Whether the host sample leaves out a block device: loop devices (`loop*`) and RAM disks
/// (`ram*`) carry no real I/O. Device-mapper (`dm-*`), `md*` and `zram*` devices are kept, even
/// though `dm-*` and `md*` count I/O their member disks count again.
pub fn skip_disk(name: &str) -> bool {
    name.starts_with("loop") || name.starts_with("ram")
}

/// Whether `name` is a partition of the whole disk `disk`: `sda1` of `sda`, `vdb12` of `vdb`,
/// and, where the disk name ends in a digit, `nvme0n1p1` of `nvme0n1` and `mmcblk0p2` of
/// `mmcblk0`.
pub fn is_partition_of(name: &str, disk: &str) -> bool {
    let Some(suffix) = name.strip_prefix(disk) else {
        return false;
    };
    let ends_in_digit = disk.as_bytes().last().is_some_and(u8::is_ascii_digit);
    let digits = if ends_in_digit {
        match suffix.strip_prefix('p') {
            Some(d) => d,
            None => return false,
        }
    } else {
        suffix
    };
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and `)`, so the fields after it are found from the *last* `)`. `rss_bytes` is field 24
/// (pages) times `page_size`.
pub fn proc_stat(data: &[u8], page_size: u64) -> ParseResult<ProcStat> {
    let open = data
        .iter()
        .position(|&b| b == b'(')
        .ok_or("no `(` before the command name")?;
    let close = data
        .iter()
        .rposition(|&b| b == b')')
        .ok_or("no `)` after the command name")?;
    if close < open {
        return Err("`)` before `(`");
    }
    let pid = fields(&data[..open])
        .next()
        .and_then(parse_u64)
        .and_then(|p| u32::try_from(p).ok())
        .ok_or("bad pid")?;
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    let mut rest = fields(&data[close + 1..]);
    let mut field = |skip: usize| rest.nth(skip).ok_or("too few fields");
    let state = match field(0)? {
        [c] if c.is_ascii_alphabetic() => char::from(*c),
        _ => return Err("bad state"),
    };
    let num = |f: &[u8]| parse_u64(f).ok_or("non-numeric field");
    let ppid = u32::try_from(num(field(0)?)?).map_err(|_| "ppid out of range")?; // 4
    let utime = num(field(9)?)?; // 14
    let stime = num(field(0)?)?; // 15
    let num_threads = num(field(4)?)?; // 20
    let start_time = num(field(1)?)?; // 22
    let rss_pages = num(field(1)?)?; // 24
    Ok(ProcStat {
        pid,
        state,
        ppid,
        cpu_ticks: utime.saturating_add(stime),
        start_time,
        num_threads,
        rss_bytes: rss_pages.saturating_mul(page_size),
    })
}

/// Parses `/proc/<pid>/cgroup` (`id:controllers:path` per line) into (controllers, path); the v2
/// line has empty controllers. Blank lines are skipped; a line without two `:` is an error.
pub fn cgroups(data: &[u8]) -> ParseResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for line in lines(data) {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let line = std::str::from_utf8(line).map_err(|_| "invalid UTF-8")?;
        let mut parts = line.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(_id), Some(controllers), Some(path)) => {
                out.push((controllers.to_owned(), path.to_owned()));
            }
            _ => return Err("expected `id:controllers:path`"),
        }
    }
    Ok(out)
}
