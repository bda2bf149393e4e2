//! Records of the upstream protocol as JSON lines, the reference receiver's output format.
//!
//! A sample record has the same shape as a line of the `file` sink,
//! `{"node", "seq", "id", "name", "kind", "sample"}`, so the same tools read both; an event
//! record is `{"node", "seq", "event": {...}}` with the event as `GET /v1/events` shows it.
//! Kinds are written as the strings received, so a receiver never rejects a record of a kind
//! newer than itself.

use super::proto;
use nodeagent_types::{CpuModes, DeviceCounters, HostStats, Sample, Timestamp};
use serde::Serialize;

/// The engine's sample from its protobuf form.
pub fn sample_from_proto(id: &str, s: proto::Sample) -> Sample {
    Sample {
        id: id.to_string(),
        ts: Timestamp(s.ts_unix_nanos),
        seq: s.seq,
        cpu_usage_ns: s.cpu_usage_ns,
        cpu_throttled_ns: s.cpu_throttled_ns,
        memory_bytes: s.memory_bytes,
        memory_limit_bytes: s.memory_limit_bytes,
        oom_kills: s.oom_kills,
        pids: s.pids,
        io_read_bytes: s.io_read_bytes,
        io_write_bytes: s.io_write_bytes,
        net_rx_bytes: s.net_rx_bytes,
        net_tx_bytes: s.net_tx_bytes,
        host: s.host.map(|h| Box::new(host_from_proto(h))),
    }
}

fn host_from_proto(h: proto::HostStats) -> HostStats {
    let c = h.cpu.unwrap_or_default();
    let devs = |v: Vec<proto::DeviceCounters>| {
        v.into_iter()
            .map(|d| DeviceCounters {
                device: d.device,
                read_bytes: d.read_bytes,
                write_bytes: d.write_bytes,
            })
            .collect()
    };
    HostStats {
        cpus: h.cpus,
        cpu: CpuModes {
            user: c.user,
            nice: c.nice,
            system: c.system,
            idle: c.idle,
            iowait: c.iowait,
            irq: c.irq,
            softirq: c.softirq,
            steal: c.steal,
        },
        load1: h.load1,
        load5: h.load5,
        load15: h.load15,
        memory_total_bytes: h.memory_total_bytes,
        memory_available_bytes: h.memory_available_bytes,
        memory_free_bytes: h.memory_free_bytes,
        swap_total_bytes: h.swap_total_bytes,
        swap_free_bytes: h.swap_free_bytes,
        disks: devs(h.disks),
        nets: devs(h.nets),
        uptime_seconds: h.uptime_seconds,
        procs_running: h.procs_running,
    }
}

#[derive(Serialize)]
struct SampleLine<'a> {
    node: &'a str,
    seq: u64,
    id: &'a str,
    name: &'a str,
    kind: &'a str,
    sample: &'a Sample,
}

#[derive(Serialize)]
struct EventJson<'a> {
    seq: u64,
    ts: Timestamp,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    message: &'a str,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    data: serde_json::Value,
}

#[derive(Serialize)]
struct EventLine<'a> {
    node: &'a str,
    seq: u64,
    event: EventJson<'a>,
}

#[derive(Serialize)]
struct BareLine<'a> {
    node: &'a str,
    seq: u64,
}

/// Appends `r` as one JSON line (with its `\n`) to `out`.
pub fn write_record_line(node: &str, r: proto::Record, out: &mut Vec<u8>) {
    let res = match r.body {
        Some(proto::record::Body::Sample(s)) => {
            let sample = sample_from_proto(&s.id, s.sample.unwrap_or_default());
            serde_json::to_writer(
                &mut *out,
                &SampleLine {
                    node,
                    seq: r.seq,
                    id: &s.id,
                    name: &s.name,
                    kind: &s.kind,
                    sample: &sample,
                },
            )
        }
        Some(proto::record::Body::Event(e)) => {
            // Data that is not valid JSON is kept as a string rather than lost.
            let data = if e.data_json.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&e.data_json)
                    .unwrap_or_else(|_| serde_json::Value::String(e.data_json.clone()))
            };
            serde_json::to_writer(
                &mut *out,
                &EventLine {
                    node,
                    seq: r.seq,
                    event: EventJson {
                        seq: e.seq,
                        ts: Timestamp(e.ts_unix_nanos),
                        kind: &e.kind,
                        object_id: e.object_id.as_deref(),
                        name: e.name.as_deref(),
                        message: &e.message,
                        data,
                    },
                },
            )
        }
        None => serde_json::to_writer(&mut *out, &BareLine { node, seq: r.seq }),
    };
    // Serializing these plain structs into a Vec cannot fail (no maps with non-string keys, no
    // I/O); should it ever, the record is still written with its node and seq.
    if res.is_err() {
        let _ = serde_json::to_writer(&mut *out, &BareLine { node, seq: r.seq });
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_node_and_seq() {
        let mut out = Vec::new();
        write_record_line(
            "n1",
            proto::Record {
                seq: 5,
                body: Some(proto::record::Body::Sample(proto::SampleRecord {
                    id: "abc".into(),
                    name: "web".into(),
                    kind: "process".into(),
                    sample: Some(proto::Sample {
                        ts_unix_nanos: 1,
                        seq: 2,
                        pids: Some(0),
                        ..Default::default()
                    }),
                })),
            },
            &mut out,
        );
        write_record_line(
            "n1",
            proto::Record {
                seq: 6,
                body: Some(proto::record::Body::Event(proto::Event {
                    seq: 1,
                    kind: "agent_started".into(),
                    message: "hi".into(),
                    data_json: "{\"a\":1}".into(),
                    ..Default::default()
                })),
            },
            &mut out,
        );
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines[0]["node"], "n1");
        assert_eq!(lines[0]["seq"], 5);
        assert_eq!(lines[0]["kind"], "process");
        assert_eq!(lines[0]["sample"]["pids"], 0);
        assert_eq!(lines[0]["sample"]["id"], "abc");
        assert_eq!(lines[1]["seq"], 6);
        assert_eq!(lines[1]["event"]["kind"], "agent_started");
        assert_eq!(lines[1]["event"]["data"]["a"], 1);
    }
}
