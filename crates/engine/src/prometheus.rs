//! Prometheus text exposition (format 0.0.4) of every object's and the host's latest sample.
//!
//! Names follow the Prometheus conventions: base units (seconds, bytes), `_total` for counters,
//! and labels `id`, `name`, `kind` on every object series.

use crate::series::{lock, SeriesMap};
use nodeagent_types::{Kind, Object, Sample};
use std::fmt::Write;

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// Value from a sample, already in base units.
    get: fn(&Sample) -> Option<f64>,
}

const NS_PER_S: f64 = 1e9;

const FAMILIES: &[Family] = &[
    Family {
        name: "nodeagent_cpu_usage_seconds_total",
        kind: "counter",
        help: "CPU time used.",
        get: |s| s.cpu_usage_ns.map(|v| v as f64 / NS_PER_S),
    },
    Family {
        name: "nodeagent_cpu_throttled_seconds_total",
        kind: "counter",
        help: "Time the CFS quota held the object back.",
        get: |s| s.cpu_throttled_ns.map(|v| v as f64 / NS_PER_S),
    },
    Family {
        name: "nodeagent_memory_usage_bytes",
        kind: "gauge",
        help: "Memory in use.",
        get: |s| s.memory_bytes.map(|v| v as f64),
    },
    Family {
        name: "nodeagent_memory_limit_bytes",
        kind: "gauge",
        help: "Memory limit (absent when unlimited).",
        get: |s| s.memory_limit_bytes.map(|v| v as f64),
    },
    Family {
        name: "nodeagent_oom_kills_total",
        kind: "counter",
        help: "Processes killed by the OOM killer.",
        get: |s| s.oom_kills.map(|v| v as f64),
    },
    Family {
        name: "nodeagent_pids",
        kind: "gauge",
        help: "Tasks in the object.",
        get: |s| s.pids.map(|v| v as f64),
    },
    Family {
        name: "nodeagent_io_read_bytes_total",
        kind: "counter",
        help: "Bytes read from block devices.",
        get: |s| s.io_read_bytes.map(|v| v as f64),
    },
    Family {
        name: "nodeagent_io_write_bytes_total",
        kind: "counter",
        help: "Bytes written to block devices.",
        get: |s| s.io_write_bytes.map(|v| v as f64),
    },
    Family {
        name: "nodeagent_network_receive_bytes_total",
        kind: "counter",
        help: "Bytes received (own network namespace, or the host's non-loopback interfaces).",
        get: |s| s.net_rx_bytes.map(|v| v as f64),
    },
    Family {
        name: "nodeagent_network_transmit_bytes_total",
        kind: "counter",
        help: "Bytes sent (own network namespace, or the host's non-loopback interfaces).",
        get: |s| s.net_tx_bytes.map(|v| v as f64),
    },
    Family {
        name: "nodeagent_sample_timestamp_seconds",
        kind: "gauge",
        help: "When the latest sample was taken (Unix time).",
        get: |s| Some(s.ts.as_secs_f64()),
    },
    Family {
        name: "nodeagent_sample_seq",
        kind: "gauge",
        help: "Sequence number of the latest sample.",
        get: |s| Some(s.seq as f64),
    },
];

/// Escapes a label value per the exposition format.
fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn labels(out: &mut String, id: &str, name: &str, kind: Kind, extra: Option<(&str, &str)>) {
    out.push_str("{id=\"");
    escape(id, out);
    out.push_str("\",name=\"");
    escape(name, out);
    out.push_str("\",kind=\"");
    out.push_str(kind.as_str());
    out.push('"');
    if let Some((k, v)) = extra {
        out.push(',');
        out.push_str(k);
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
    }
    out.push('}');
}

fn value(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = writeln!(out, " {}", v as i64);
    } else {
        let _ = writeln!(out, " {v}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every series' latest sample.
pub fn render(series: &SeriesMap) -> String {
    // Snapshot first, so each series lock is taken once and briefly.
    let mut latest: Vec<(String, String, Kind, Sample)> = Vec::new();
    for s in series.all() {
        let g = lock(&s);
        if let Some(l) = g.latest() {
            latest.push((g.id.clone(), g.name.clone(), g.kind, l));
        }
    }
    let mut out = String::with_capacity(256 + latest.len() * 1200);
    for f in FAMILIES {
        let mut wrote_header = false;
        for (id, name, kind, s) in &latest {
            if let Some(v) = (f.get)(s) {
                if !wrote_header {
                    header(&mut out, f.name, f.kind, f.help);
                    wrote_header = true;
                }
                out.push_str(f.name);
                labels(&mut out, id, name, *kind, None);
                value(&mut out, v);
            }
        }
    }
    if let Some((id, name, kind, s)) = latest.iter().find(|l| l.2 == Kind::Host) {
        if let Some(h) = &s.host {
            host_families(&mut out, id, name, *kind, h);
        }
    }
    out
}

/// Appends the objects' own families, from the object list rather than from samples, so that an
/// object with no sample (failed, exited, between restarts) has them too (issue 21: a crash
/// loop must be alertable):
/// - `nodeagent_object_status{id,name,kind,status}`: 1, one series per object, for its current
///   status (`rate(nodeagent_object_restarts_total[5m]) > 0`,
///   `nodeagent_object_status{status="failed"} == 1`). Only the current status is written, not
///   a 0 for each other one: 1 series per object instead of 7 at 10,000 objects.
/// - `nodeagent_object_restarts_total{id,name,kind}`: restarts by the agent's restart policy.
/// - `nodeagent_object_exit_code{id,name,kind}`: the last exit code, once there is one.
pub fn render_objects(objects: &[Object], out: &mut String) {
    if objects.is_empty() {
        return;
    }
    header(
        out,
        "nodeagent_object_status",
        "gauge",
        "1 for the object's current status (label status).",
    );
    for o in objects {
        out.push_str("nodeagent_object_status");
        labels(
            out,
            &o.id,
            &o.name,
            o.kind,
            Some(("status", o.status.as_str())),
        );
        value(out, 1.0);
    }
    header(
        out,
        "nodeagent_object_restarts_total",
        "counter",
        "Times the agent restarted the object's workload.",
    );
    for o in objects {
        out.push_str("nodeagent_object_restarts_total");
        labels(out, &o.id, &o.name, o.kind, None);
        value(out, f64::from(o.restarts));
    }
    if objects.iter().any(|o| o.exit_code.is_some()) {
        header(
            out,
            "nodeagent_object_exit_code",
            "gauge",
            "The exit code of the object's workload, once it has exited.",
        );
        for o in objects {
            if let Some(c) = o.exit_code {
                out.push_str("nodeagent_object_exit_code");
                labels(out, &o.id, &o.name, o.kind, None);
                value(out, f64::from(c));
            }
        }
    }
}

/// Appends the reporting path's families: per sink, labelled `sink` and `type`.
pub fn render_sinks(sinks: &[crate::sinks::SinkStatus], out: &mut String) {
    type Get = fn(&crate::sinks::SinkStatus) -> u64;
    let families: [(&str, &str, &str, Get); 9] = [
        (
            "nodeagent_sink_queue_depth",
            "gauge",
            "Records in the sink's in-memory queue.",
            |s| s.queue_depth,
        ),
        (
            "nodeagent_sink_spool_bytes",
            "gauge",
            "Size of the sink's disk spool.",
            |s| s.spool_bytes,
        ),
        (
            "nodeagent_sink_spool_records",
            "gauge",
            "Records in the sink's spool not yet acknowledged by the upstream.",
            |s| s.spool_records,
        ),
        (
            "nodeagent_sink_sent_total",
            "counter",
            "Records written or transmitted (retransmissions included).",
            |s| s.sent,
        ),
        (
            "nodeagent_sink_acked_total",
            "counter",
            "Records written, or acknowledged by the upstream (each once).",
            |s| s.acked,
        ),
        (
            "nodeagent_sink_retried_total",
            "counter",
            "Records transmitted again after a failure or reconnect.",
            |s| s.retried,
        ),
        (
            "nodeagent_sink_dropped_total",
            "counter",
            "Records lost (queue full, spool cap, spool write failure, corruption).",
            |s| s.dropped,
        ),
        (
            "nodeagent_sink_errors_total",
            "counter",
            "Failed writes, connections and RPCs.",
            |s| s.errors,
        ),
        (
            "nodeagent_sink_connected",
            "gauge",
            "1 while a network sink is connected to its upstream (absent for local sinks).",
            |s| u64::from(s.connected.unwrap_or(false)),
        ),
    ];
    for (name, kind, help, get) in families {
        let connected = name == "nodeagent_sink_connected";
        let mut wrote_header = false;
        for s in sinks {
            if connected && s.connected.is_none() {
                continue;
            }
            if !wrote_header {
                header(out, name, kind, help);
                wrote_header = true;
            }
            out.push_str(name);
            out.push_str("{sink=\"");
            escape(&s.name, out);
            out.push_str("\",type=\"");
            out.push_str(s.kind.as_str());
            out.push_str("\"}");
            value(out, get(s) as f64);
        }
    }
}

fn host_families(
    out: &mut String,
    id: &str,
    name: &str,
    kind: Kind,
    h: &nodeagent_types::HostStats,
) {
    let c = &h.cpu;
    let n = "nodeagent_host_cpu_seconds_total";
    header(
        out,
        n,
        "counter",
        "Host CPU time by mode, summed over CPUs.",
    );
    for (mode, v) in [
        ("user", c.user),
        ("nice", c.nice),
        ("system", c.system),
        ("idle", c.idle),
        ("iowait", c.iowait),
        ("irq", c.irq),
        ("softirq", c.softirq),
        ("steal", c.steal),
    ] {
        out.push_str(n);
        labels(out, id, name, kind, Some(("mode", mode)));
        value(out, v as f64 / NS_PER_S);
    }
    let gauges: [(&str, &str, f64); 9] = [
        ("nodeagent_host_cpus", "Online CPUs.", h.cpus as f64),
        ("nodeagent_host_load1", "1-minute load average.", h.load1),
        ("nodeagent_host_load5", "5-minute load average.", h.load5),
        ("nodeagent_host_load15", "15-minute load average.", h.load15),
        (
            "nodeagent_host_memory_total_bytes",
            "Total memory.",
            h.memory_total_bytes as f64,
        ),
        (
            "nodeagent_host_memory_available_bytes",
            "Memory available for new work.",
            h.memory_available_bytes as f64,
        ),
        (
            "nodeagent_host_memory_free_bytes",
            "Free memory.",
            h.memory_free_bytes as f64,
        ),
        (
            "nodeagent_host_swap_total_bytes",
            "Total swap.",
            h.swap_total_bytes as f64,
        ),
        (
            "nodeagent_host_swap_free_bytes",
            "Free swap.",
            h.swap_free_bytes as f64,
        ),
    ];
    for (n, help, v) in gauges {
        header(out, n, "gauge", help);
        out.push_str(n);
        labels(out, id, name, kind, None);
        value(out, v);
    }
    let n = "nodeagent_host_uptime_seconds";
    header(out, n, "gauge", "Seconds since boot.");
    out.push_str(n);
    labels(out, id, name, kind, None);
    value(out, h.uptime_seconds);
    for (n, help, devs, read) in [
        (
            "nodeagent_host_disk_read_bytes_total",
            "Bytes read per block device.",
            &h.disks,
            true,
        ),
        (
            "nodeagent_host_disk_written_bytes_total",
            "Bytes written per block device.",
            &h.disks,
            false,
        ),
        (
            "nodeagent_host_network_receive_bytes_total",
            "Bytes received per interface.",
            &h.nets,
            true,
        ),
        (
            "nodeagent_host_network_transmit_bytes_total",
            "Bytes sent per interface.",
            &h.nets,
            false,
        ),
    ] {
        if devs.is_empty() {
            continue;
        }
        header(out, n, "counter", help);
        for d in devs.iter() {
            out.push_str(n);
            labels(out, id, name, kind, Some(("device", &d.device)));
            value(out, if read { d.read_bytes } else { d.write_bytes } as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Series;

    #[test]
    fn renders_sink_families() {
        let st = |name: &str, kind, connected| crate::sinks::SinkStatus {
            name: name.into(),
            kind,
            mode: nodeagent_types::ReportMode::Batch,
            target: None,
            queue_depth: 3,
            queue_capacity: 1024,
            spool_bytes: 4096,
            spool_records: 7,
            sent: 10,
            acked: 9,
            retried: 1,
            dropped: 0,
            errors: 2,
            connected,
            last_seq: None,
            acked_seq: None,
            node_id: None,
            last_error: None,
        };
        let mut out = String::new();
        render_sinks(
            &[
                st("file", crate::sinks::SinkType::File, None),
                st("up", crate::sinks::SinkType::Grpc, Some(true)),
            ],
            &mut out,
        );
        assert!(
            out.contains("# TYPE nodeagent_sink_dropped_total counter"),
            "{out}"
        );
        assert!(
            out.contains("nodeagent_sink_spool_bytes{sink=\"up\",type=\"grpc\"} 4096"),
            "{out}"
        );
        assert!(
            out.contains("nodeagent_sink_connected{sink=\"up\",type=\"grpc\"} 1"),
            "{out}"
        );
        assert!(
            !out.contains("nodeagent_sink_connected{sink=\"file\""),
            "{out}"
        );
        assert_eq!(out.matches("# HELP nodeagent_sink_sent_total").count(), 1);
    }

    #[test]
    fn renders_families_with_labels() {
        let map = SeriesMap::default();
        let s = map.insert(Series::new("abc".into(), "we\"b".into(), Kind::Process, 4));
        {
            let mut g = lock(&s);
            let x = g.begin();
            x.cpu_usage_ns = Some(1_500_000_000);
            x.memory_bytes = Some(4096);
            g.commit();
        }
        let text = render(&map);
        assert!(
            text.contains("# TYPE nodeagent_cpu_usage_seconds_total counter"),
            "{text}"
        );
        assert!(text.contains("nodeagent_cpu_usage_seconds_total{id=\"abc\",name=\"we\\\"b\",kind=\"process\"} 1.5"), "{text}");
        assert!(
            text.contains(
                "nodeagent_memory_usage_bytes{id=\"abc\",name=\"we\\\"b\",kind=\"process\"} 4096"
            ),
            "{text}"
        );
        assert!(
            !text.contains("nodeagent_pids{"),
            "absent counters are not exposed: {text}"
        );
        // Each family's HELP/TYPE appears once.
        assert_eq!(
            text.matches("# TYPE nodeagent_memory_usage_bytes").count(),
            1
        );
    }
}
