//! `push`, `metrics`, `events`, `host`: the monitoring commands.

use super::client::{segment, Client};
use super::output::{self, Table};
use super::OutputFormat;
use serde_json::{json, Value};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAction {
    /// Start a report task to the sink
    On,
    /// Stop it
    Off,
    /// Send the latest sample once
    Once,
}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    pub action: PushAction,
    /// Id or name of the object (`host` for the host)
    pub id: String,
    /// Sink name: stdout, file, or one named in the daemon's config file
    #[arg(long, value_name = "NAME")]
    pub sink: String,
    /// Report interval for `on`, e.g. 1s or 100ms [default: 1s]
    ///
    /// What is sent each interval depends on --mode.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// What `on` sends each interval [default: the sink's mode: latest for file and stdout,
    /// batch for grpc and nats]
    ///
    /// latest: the newest sample, once per interval (one record per interval, whatever the
    /// object's collect interval). batch: every sample taken since the last report, sent
    /// together each interval (nothing sampled is left out; right for upstream sinks). A sink's
    /// default mode is set by `mode` in its [[sink]] section of the daemon's config file; this
    /// flag chooses the mode of this one task.
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<ModeArg>,
}

/// `--mode` of `push on`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    /// The newest sample, once per interval
    Latest,
    /// Every sample, sent together each interval
    Batch,
}

#[derive(clap::Args, Debug)]
pub struct MetricsArgs {
    /// Id or name of the object (`host` for the host)
    pub id: String,
    /// Show only the newest N samples
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Show IO and NET as cumulative byte totals instead of rates per second
    #[arg(long)]
    pub totals: bool,
    /// Keep printing samples as they are taken (one line each, from the live stream
    /// /v1/objects/ID/metrics/stream) until interrupted or the object is deleted
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// With --follow: at most one sample per DURATION (e.g. 1s), for fast objects
    #[arg(long, value_name = "DURATION", requires = "follow")]
    pub every: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Show only events after this sequence number
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Keep printing new events as they happen (one line each) until interrupted
    #[arg(short = 'f', long)]
    pub follow: bool,
}

pub async fn push(client: &Client, out: OutputFormat, args: PushArgs) -> anyhow::Result<()> {
    let (route, body) = push_body(&args)?;
    let path = format!("/v1/objects/{}/{route}", segment(&args.id));
    let ack = client.post(&path, &body).await?;
    match out {
        OutputFormat::Json => print!("{}", output::json(&ack)),
        OutputFormat::Table => println!("{}", push_summary(args.action, &args, &ack)),
    }
    Ok(())
}

/// The route (`push-on`, `push-off`, `push-once`) and body of a `push` (also sent by
/// `fleet push`).
pub(crate) fn push_body(args: &PushArgs) -> anyhow::Result<(&'static str, Value)> {
    let (route, mut body) = match args.action {
        PushAction::On => ("push-on", json!({"sink": args.sink})),
        PushAction::Off => ("push-off", json!({"sink": args.sink})),
        PushAction::Once => ("push-once", json!({"sink": args.sink})),
    };
    if let Some(interval) = &args.interval {
        if args.action != PushAction::On {
            anyhow::bail!("--interval only applies to `push on`");
        }
        body["interval"] = json!(interval);
    }
    if let Some(mode) = args.mode {
        if args.action != PushAction::On {
            anyhow::bail!("--mode only applies to `push on`");
        }
        body["mode"] = json!(match mode {
            ModeArg::Latest => "latest",
            ModeArg::Batch => "batch",
        });
    }
    Ok((route, body))
}

pub(crate) fn push_summary(action: PushAction, args: &PushArgs, ack: &Value) -> String {
    let id = ack.get("id").and_then(Value::as_str).unwrap_or(&args.id);
    let sink = ack
        .get("sink")
        .and_then(Value::as_str)
        .unwrap_or(&args.sink);
    match action {
        PushAction::On => {
            let every = ack
                .get("interval")
                .and_then(Value::as_str)
                .map(|i| format!(" every {i}"))
                .unwrap_or_default();
            let mode = ack
                .get("mode")
                .and_then(Value::as_str)
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            format!("push on: {id} -> sink {sink}{every}{mode}")
        }
        PushAction::Off => format!("push off: {id} -> sink {sink}"),
        PushAction::Once => {
            let seq = output::cell(ack.get("sample_seq"));
            format!("sent sample seq={seq} of {id} to sink {sink}")
        }
    }
}

pub async fn metrics(client: &Client, out: OutputFormat, args: MetricsArgs) -> anyhow::Result<()> {
    if args.follow {
        return super::follow::metrics(client, out, &args).await;
    }
    let mut path = format!("/v1/objects/{}/metrics", segment(&args.id));
    // One sample more than shown, so that the first row shown has a CPU rate too.
    if let Some(n) = args.limit {
        path.push_str(&format!("?limit={}", n.saturating_add(1)));
    }
    let answer = client.get(&path).await?;
    match out {
        OutputFormat::Json => {
            let mut answer = answer;
            if let (Some(n), Some(samples)) = (
                args.limit,
                answer.get_mut("samples").and_then(Value::as_array_mut),
            ) {
                let skip = samples.len().saturating_sub(n);
                samples.drain(..skip);
            }
            print!("{}", output::json(&answer));
        }
        OutputFormat::Table => print!("{}", samples_table(&answer, args.limit, args.totals)),
    }
    Ok(())
}

/// SEQ TIME CPU MEMORY PIDS IO/s NET/s. CPU is in cores, IO and NET in bytes per second
/// (read/write, rx/tx): each the growth of its counter over the time between two consecutive
/// samples, so the first sample has none. With `totals`, IO and NET are the cumulative counters.
fn samples_table(answer: &Value, limit: Option<usize>, totals: bool) -> String {
    let empty = Vec::new();
    let samples = answer
        .get("samples")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let (io, net) = if totals {
        ("IO", "NET")
    } else {
        ("IO/s", "NET/s")
    };
    let mut t = Table::new(&["SEQ", "TIME", "CPU", "MEMORY", "PIDS", io, net]);
    let skip = limit.map_or(0, |n| samples.len().saturating_sub(n));
    let mut prev: Option<&Value> = None;
    for (i, s) in samples.iter().enumerate() {
        if i >= skip {
            let (io, net) = if totals {
                (
                    pair(s, "io_read_bytes", "io_write_bytes"),
                    pair(s, "net_rx_bytes", "net_tx_bytes"),
                )
            } else {
                (
                    rate_pair(prev, s, "io_read_bytes", "io_write_bytes"),
                    rate_pair(prev, s, "net_rx_bytes", "net_tx_bytes"),
                )
            };
            t.row(vec![
                output::cell(s.get("seq")),
                output::time_of_day(s.get("ts").unwrap_or(&Value::Null)),
                prev.and_then(|p| cpu_cores(p, s))
                    .map(|c| format!("{c:.3}"))
                    .unwrap_or_else(|| "-".to_string()),
                bytes_cell(s, "memory_bytes"),
                output::cell(s.get("pids")),
                io,
                net,
            ]);
        }
        prev = Some(s);
    }
    t.render()
}

/// Cores used between two samples: the growth of `cpu_usage_ns` over the time between them.
pub(super) fn cpu_cores(prev: &Value, cur: &Value) -> Option<f64> {
    per_second(prev, cur, "cpu_usage_ns").map(|ns| ns / 1e9)
}

/// The growth of counter `key` per second between two samples; `None` without both values, or
/// when the counter went back (a restarted workload).
fn per_second(prev: &Value, cur: &Value, key: &str) -> Option<f64> {
    let u0 = prev.get(key)?.as_u64()?;
    let u1 = cur.get(key)?.as_u64()?;
    let t0 = output::timestamp(prev.get("ts")?)?.as_nanos();
    let t1 = output::timestamp(cur.get("ts")?)?.as_nanos();
    if t1 <= t0 || u1 < u0 {
        return None;
    }
    Some((u1 - u0) as f64 * 1e9 / (t1 - t0) as f64)
}

pub(super) fn bytes_cell(s: &Value, key: &str) -> String {
    s.get(key)
        .and_then(Value::as_u64)
        .map(output::bytes)
        .unwrap_or_else(|| "-".to_string())
}

/// `read/write` (or `rx/tx`) cumulative bytes, or `-` where the kind has neither.
pub(super) fn pair(s: &Value, a: &str, b: &str) -> String {
    if s.get(a).is_none() && s.get(b).is_none() {
        return "-".to_string();
    }
    format!("{}/{}", bytes_cell(s, a), bytes_cell(s, b))
}

/// `read/write` (or `rx/tx`) bytes per second since the previous sample, e.g. `1.5Mi/0B`; `-`
/// where the kind has neither counter or there is no previous sample.
fn rate_pair(prev: Option<&Value>, s: &Value, a: &str, b: &str) -> String {
    let Some(prev) = prev else {
        return "-".to_string();
    };
    if s.get(a).is_none() && s.get(b).is_none() {
        return "-".to_string();
    }
    let one = |k: &str| {
        per_second(prev, s, k)
            .map(|r| output::bytes(r.round() as u64))
            .unwrap_or_else(|| "-".to_string())
    };
    format!("{}/{}", one(a), one(b))
}

pub async fn events(client: &Client, out: OutputFormat, args: EventsArgs) -> anyhow::Result<()> {
    let path = match args.since {
        Some(n) => format!("/v1/events?since={n}"),
        None => "/v1/events".to_string(),
    };
    let answer = client.get(&path).await?;
    if args.follow {
        return follow_events(client, out, answer).await;
    }
    match out {
        OutputFormat::Json => print!("{}", output::json(&answer)),
        OutputFormat::Table => print!("{}", events_table(&answer)),
    }
    Ok(())
}

/// `events -f`: prints what there is, then polls `?since=` the last sequence number seen (the
/// log's sequence numbers are monotonic, also across the agent's restarts) and prints each new
/// event on one line as it comes. A restarting agent is waited for.
async fn follow_events(client: &Client, out: OutputFormat, first: Value) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut last = 0u64;
    let mut answer = first;
    loop {
        let events = answer
            .get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut stdout = std::io::stdout().lock();
        for e in events {
            let seq = e.get("seq").and_then(Value::as_u64).unwrap_or(0);
            if seq <= last {
                continue;
            }
            last = seq;
            let line = match out {
                OutputFormat::Json => e.to_string(),
                OutputFormat::Table => format!(
                    "{}  {}  {}  {}  {}",
                    output::cell(e.get("seq")),
                    output::time_of_day(e.get("ts").unwrap_or(&Value::Null)),
                    output::cell(e.get("kind")),
                    output::cell(e.get("name").or_else(|| e.get("object_id"))),
                    output::cell(e.get("message")),
                ),
            };
            writeln!(stdout, "{line}")?;
        }
        stdout.flush()?;
        drop(stdout);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        answer = loop {
            match client.get(&format!("/v1/events?since={last}")).await {
                Ok(a) => break a,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            }
        };
    }
}

fn events_table(answer: &Value) -> String {
    let empty = Vec::new();
    let events = answer
        .get("events")
        .and_then(Value::as_array)
        .or_else(|| answer.as_array())
        .unwrap_or(&empty);
    let mut t = Table::new(&["SEQ", "TIME", "KIND", "OBJECT", "MESSAGE"]);
    for e in events {
        let object = e.get("name").or_else(|| e.get("object_id"));
        t.row(vec![
            output::cell(e.get("seq")),
            output::time_of_day(e.get("ts").unwrap_or(&Value::Null)),
            output::cell(e.get("kind")),
            output::cell(object),
            output::cell(e.get("message")),
        ]);
    }
    t.render()
}

pub async fn host(client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    let answer = client.get("/v1/host").await?;
    match out {
        OutputFormat::Json => print!("{}", output::json(&answer)),
        OutputFormat::Table => {
            // The two newest samples, for rates; without them the table shows what it can.
            let samples = client
                .get(&format!(
                    "/v1/objects/{}/metrics?limit=2",
                    nodeagent_types::HOST_ID
                ))
                .await
                .ok();
            print!("{}", host_table(&answer, samples.as_ref()))
        }
    }
    Ok(())
}

/// The host's facts, then its latest sample in human units: CPU percent by mode (over the
/// last two samples, or since boot when there is one), load, memory and swap used of total.
/// The host object itself is left out (its spec says nothing `nodeagent get host` would not),
/// and so are the raw counters (`-o json` has them).
fn host_table(answer: &Value, samples: Option<&Value>) -> String {
    let mut pairs = Vec::new();
    if let Value::Object(m) = answer {
        for (k, v) in m {
            if k == "object" || k == "sample" {
                continue;
            }
            let pretty = match (k.as_str(), v.as_u64()) {
                ("memory_total_bytes", Some(n)) => Value::String(output::bytes(n)),
                _ => v.clone(),
            };
            output::flatten(&pretty, k, &mut pairs);
        }
    }
    let recent: Vec<&Value> = samples
        .and_then(|s| s.get("samples"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let latest = recent
        .last()
        .copied()
        .or_else(|| answer.get("sample"))
        .filter(|s| !s.is_null());
    if let Some(s) = latest {
        let prev = (recent.len() >= 2).then(|| recent[recent.len() - 2]);
        host_sample_pairs(s, prev, &mut pairs);
    }
    output::key_values(&pairs)
}

const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

fn host_sample_pairs(s: &Value, prev: Option<&Value>, pairs: &mut Vec<(String, String)>) {
    let h = s.get("host").unwrap_or(&Value::Null);
    let mode = |v: &Value, m: &str| v.pointer(&format!("/host/cpu/{m}")).and_then(Value::as_u64);
    // Per mode, the growth since the previous sample; since boot without one.
    let deltas: Option<Vec<u64>> = match prev {
        Some(p) => CPU_MODES
            .iter()
            .map(|m| Some(mode(s, m)?.saturating_sub(mode(p, m)?)))
            .collect(),
        None => CPU_MODES.iter().map(|m| mode(s, m)).collect(),
    };
    if let Some(d) = deltas {
        let total: u64 = d.iter().sum();
        if total > 0 {
            let cells: Vec<String> = CPU_MODES
                .iter()
                .zip(&d)
                .map(|(m, v)| format!("{m} {:.1}%", *v as f64 * 100.0 / total as f64))
                .collect();
            let key = if prev.is_some() {
                "cpu"
            } else {
                "cpu (since boot)"
            };
            pairs.push((key.to_string(), cells.join("  ")));
        }
    }
    let loads: Vec<String> = ["load1", "load5", "load15"]
        .iter()
        .filter_map(|k| h.get(*k).and_then(Value::as_f64))
        .map(|v| format!("{v:.2}"))
        .collect();
    if loads.len() == 3 {
        pairs.push(("load".to_string(), loads.join(" ")));
    }
    let used_of = |used: Option<u64>, total: Option<u64>| match (used, total) {
        (Some(u), Some(t)) if t > 0 => Some(format!(
            "{} / {} ({:.0}%)",
            output::bytes(u),
            output::bytes(t),
            u as f64 * 100.0 / t as f64
        )),
        _ => None,
    };
    let get = |k: &str| h.get(k).and_then(Value::as_u64);
    let mem_total = get("memory_total_bytes");
    let mem_used = mem_total
        .zip(get("memory_available_bytes"))
        .map(|(t, a)| t.saturating_sub(a));
    if let Some(m) = used_of(mem_used, mem_total) {
        pairs.push(("memory used".to_string(), m));
    }
    let swap_total = get("swap_total_bytes");
    let swap_used = swap_total
        .zip(get("swap_free_bytes"))
        .map(|(t, f)| t.saturating_sub(f));
    if let Some(m) = used_of(swap_used, swap_total) {
        pairs.push(("swap used".to_string(), m));
    }
    if let Some(p) = prev {
        pairs.push((
            "io /s".to_string(),
            rate_pair(Some(p), s, "io_read_bytes", "io_write_bytes"),
        ));
        pairs.push((
            "net /s".to_string(),
            rate_pair(Some(p), s, "net_rx_bytes", "net_tx_bytes"),
        ));
    }
    pairs.push((
        "sample".to_string(),
        format!(
            "seq {} at {}",
            output::cell(s.get("seq")),
            output::time_of_day(s.get("ts").unwrap_or(&Value::Null))
        ),
    ));
}

pub async fn sinks(client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    let answer = client.get("/v1/sinks").await?;
    match out {
        OutputFormat::Json => print!("{}", output::json(&answer)),
        OutputFormat::Table => print!("{}", sinks_table(&answer)),
    }
    Ok(())
}

/// One row per sink: its queue, its spool, and its delivery counters.
fn sinks_table(answer: &Value) -> String {
    let mut t = Table::new(&[
        "NAME", "TYPE", "MODE", "QUEUE", "SPOOL", "UNACKED", "SENT", "ACKED", "RETRIED", "DROPPED",
        "UP", "TARGET",
    ]);
    let n = |s: &Value, k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
    for s in answer
        .get("sinks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let net = s.get("connected").and_then(Value::as_bool);
        t.row(vec![
            output::cell(s.get("name")),
            output::cell(s.get("type")),
            output::cell(s.get("mode")),
            n(s, "queue_depth").to_string(),
            if net.is_some() {
                output::bytes(n(s, "spool_bytes"))
            } else {
                "-".into()
            },
            if net.is_some() {
                n(s, "spool_records").to_string()
            } else {
                "-".into()
            },
            n(s, "sent").to_string(),
            n(s, "acked").to_string(),
            n(s, "retried").to_string(),
            n(s, "dropped").to_string(),
            match net {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "-".into(),
            },
            output::cell(s.get("target")),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_list() {
        let answer = json!({"sinks": [
            {"name": "file", "type": "file", "mode": "latest", "queue_depth": 0, "spool_bytes": 0, "sent": 3,
             "acked": 3, "retried": 0, "dropped": 0, "target": "/x/reports.jsonl"},
            {"name": "up", "type": "grpc", "queue_depth": 1, "spool_bytes": 2048,
             "spool_records": 7, "sent": 10, "acked": 3, "retried": 2, "dropped": 0,
             "connected": false, "target": "http://127.0.0.1:7465"},
        ]});
        let t = sinks_table(&answer);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("NAME"), "{t}");
        assert!(lines[2].contains("2Ki") && lines[2].contains(" no "), "{t}");
        assert!(
            lines[0].contains("MODE") && lines[1].contains(" latest "),
            "{t}"
        );
    }

    #[test]
    fn cpu_from_deltas() {
        let answer = json!({"samples": [
            {"id": "a", "seq": 1, "ts": "2024-05-01T00:00:00Z", "cpu_usage_ns": 0, "memory_bytes": 1048576,
             "io_read_bytes": 1048576, "io_write_bytes": 0},
            {"id": "a", "seq": 2, "ts": "2024-05-01T00:00:02Z", "cpu_usage_ns": 1000000000, "pids": 1,
             "io_read_bytes": 1052672, "io_write_bytes": 0},
        ]});
        let t = samples_table(&answer, None, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("SEQ"), "{t}");
        assert!(lines[1].contains("1Mi") && lines[1].contains(" - "), "{t}");
        // IO as a rate: 4 KiB read in 2 s.
        assert!(
            lines[0].contains("IO/s") && lines[0].contains("NET/s"),
            "{t}"
        );
        assert!(
            lines[2].contains("0.500") && lines[2].contains("2Ki/0B"),
            "{t}"
        );
        // --totals: the counters themselves.
        let t = samples_table(&answer, None, true);
        assert!(t.lines().nth(2).unwrap_or("").contains("1.0Mi/0B"), "{t}");
        assert!(!t.contains("IO/s"), "{t}");
        let t = samples_table(&answer, Some(1), false);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains("0.500"), "{t}");
    }

    /// Issue 21: `host` shows CPU percent by mode and memory used of total, not the raw counters.
    #[test]
    fn host_in_human_units() {
        let sample = |seq: u64, ts: &str, user: u64, idle: u64| {
            json!({"id": "host", "seq": seq, "ts": ts, "host": {
                "cpus": 2, "load1": 0.5, "load5": 0.4, "load15": 0.3,
                "memory_total_bytes": 4294967296u64, "memory_available_bytes": 1073741824u64,
                "memory_free_bytes": 0, "swap_total_bytes": 0, "swap_free_bytes": 0,
                "cpu": {"user": user, "nice": 0, "system": 0, "idle": idle, "iowait": 0,
                        "irq": 0, "softirq": 0, "steal": 0}}})
        };
        let answer = json!({"node": "n", "cpus": 2, "memory_total_bytes": 4294967296u64,
                            "object": {"id": "host"},
                            "sample": sample(2, "2024-05-01T00:00:01Z", 1250, 1750)});
        let samples = json!({"samples": [sample(1, "2024-05-01T00:00:00Z", 1000, 1000),
                                         sample(2, "2024-05-01T00:00:01Z", 1250, 1750)]});
        let t = host_table(&answer, Some(&samples));
        assert!(t.contains("user 25.0%"), "{t}");
        assert!(t.contains("idle 75.0%"), "{t}");
        assert!(t.contains("3Gi / 4Gi (75%)"), "{t}");
        assert!(!t.contains("sample.host.cpu"), "{t}");
        // One sample only: percent since boot.
        let t = host_table(&answer, None);
        assert!(
            t.contains("cpu (since boot)") && t.contains("user 41.7%"),
            "{t}"
        );
    }

    #[test]
    fn events_list() {
        let answer = json!({"events": [
            {"seq": 4, "ts": "2024-05-01T00:00:00.5Z", "kind": "created", "object_id": "ab",
             "name": "web", "message": "created process"},
        ]});
        let t = events_table(&answer);
        assert!(t.contains("00:00:00.500   created   web"), "{t}");
    }
}
