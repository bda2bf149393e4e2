//! Protobuf encoding of records without intermediate message structs.
//!
//! The spool writer encodes each record once, straight from the engine's [`Record`] or [`Event`]
//! into a reused buffer: no `String` clones, no boxed host stats, no per-record allocation. What
//! it stores is a record's *body*: the `sample` (field 2) or `event` (field 3) of the
//! `Record` message. The sequence number lives in the spool frame and is put back in front of
//! the body when a batch is framed ([`batch_record`]); protobuf decoders read the fields of a
//! message in any order, so `seq` + body is a valid `Record`.
//!
//! A `Batch` is built by concatenation: [`batch_header`] (node id and name), then one
//! [`batch_record`] per record. The result decodes as [`proto::Batch`](super::proto::Batch),
//! which is what the reference receiver and NATS consumers do.

use crate::record::Record;
use bytes::BufMut;
use nodeagent_types::{Event, HostStats, Sample};
use prost::encoding::{encode_varint, encoded_len_varint};

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

/// The first byte of a body: `Record.sample` (field 2) or `Record.event` (field 3).
pub const SAMPLE_BODY_TAG: u8 = (2 << 3) | LEN as u8;
pub const EVENT_BODY_TAG: u8 = (3 << 3) | LEN as u8;

/// What a stored body holds, read from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Sample,
    Event,
    Unknown,
}

pub fn body_kind(body: &[u8]) -> BodyKind {
    match body.first() {
        Some(&SAMPLE_BODY_TAG) => BodyKind::Sample,
        Some(&EVENT_BODY_TAG) => BodyKind::Event,
        _ => BodyKind::Unknown,
    }
}

#[inline]
fn key(buf: &mut Vec<u8>, tag: u32, wire: u64) {
    encode_varint((u64::from(tag) << 3) | wire, buf);
}

#[inline]
fn uint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        key(buf, tag, VARINT);
        encode_varint(v, buf);
    }
}

/// A proto3 `optional` field: present, even when zero, whenever the sample has it.
#[inline]
fn opt_uint(buf: &mut Vec<u8>, tag: u32, v: Option<u64>) {
    if let Some(v) = v {
        key(buf, tag, VARINT);
        encode_varint(v, buf);
    }
}

#[inline]
fn double(buf: &mut Vec<u8>, tag: u32, v: f64) {
    if v != 0.0 {
        key(buf, tag, FIXED64);
        buf.put_f64_le(v);
    }
}

#[inline]
fn string(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        opt_string(buf, tag, s);
    }
}

#[inline]
fn opt_string(buf: &mut Vec<u8>, tag: u32, s: &str) {
    key(buf, tag, LEN);
    encode_varint(s.len() as u64, buf);
    buf.extend_from_slice(s.as_bytes());
}

/// A length-delimited nested message written in place: five bytes are reserved for the length,
/// the message is written after them, and then the length is filled in and the message moved
/// back over the unused bytes (one short `memmove`, instead of a second pass to size it).
#[inline]
fn nested(buf: &mut Vec<u8>, tag: u32, f: impl FnOnce(&mut Vec<u8>)) {
    key(buf, tag, LEN);
    let at = buf.len();
    buf.extend_from_slice(&[0; 5]);
    f(buf);
    let len = buf.len() - at - 5;
    let mut tmp = [0u8; 10];
    let mut w = &mut tmp[..];
    encode_varint(len as u64, &mut w);
    let n = encoded_len_varint(len as u64);
    buf[at..at + n].copy_from_slice(&tmp[..n]);
    if n < 5 {
        buf.copy_within(at + 5.., at + n);
        buf.truncate(buf.len() - (5 - n));
    }
}

/// Appends the body of a sample record (`Record.sample`) to `buf`.
pub fn encode_sample_body(r: &Record, buf: &mut Vec<u8>) {
    nested(buf, 2, |b| {
        string(b, 1, &r.id);
        string(b, 2, &r.name);
        string(b, 3, r.kind.as_str());
        nested(b, 4, |b| encode_sample(&r.sample, b));
    });
}

fn encode_sample(s: &Sample, b: &mut Vec<u8>) {
    uint(b, 1, s.ts.as_nanos());
    uint(b, 2, s.seq);
    opt_uint(b, 3, s.cpu_usage_ns);
    opt_uint(b, 4, s.cpu_throttled_ns);
    opt_uint(b, 5, s.memory_bytes);
    opt_uint(b, 6, s.memory_limit_bytes);
    opt_uint(b, 7, s.oom_kills);
    opt_uint(b, 8, s.pids);
    opt_uint(b, 9, s.io_read_bytes);
    opt_uint(b, 10, s.io_write_bytes);
    opt_uint(b, 11, s.net_rx_bytes);
    opt_uint(b, 12, s.net_tx_bytes);
    if let Some(h) = &s.host {
        nested(b, 13, |b| encode_host(h, b));
    }
}

fn encode_host(h: &HostStats, b: &mut Vec<u8>) {
    uint(b, 1, u64::from(h.cpus));
    nested(b, 2, |b| {
        let c = &h.cpu;
        for (tag, v) in [
            (1, c.user),
            (2, c.nice),
            (3, c.system),
            (4, c.idle),
            (5, c.iowait),
            (6, c.irq),
            (7, c.softirq),
            (8, c.steal),
        ] {
            uint(b, tag, v);
        }
    });
    double(b, 3, h.load1);
    double(b, 4, h.load5);
    double(b, 5, h.load15);
    uint(b, 6, h.memory_total_bytes);
    uint(b, 7, h.memory_available_bytes);
    uint(b, 8, h.memory_free_bytes);
    uint(b, 9, h.swap_total_bytes);
    uint(b, 10, h.swap_free_bytes);
    for (tag, devs) in [(11, &h.disks), (12, &h.nets)] {
        for d in devs {
            nested(b, tag, |b| {
                string(b, 1, &d.device);
                uint(b, 2, d.read_bytes);
                uint(b, 3, d.write_bytes);
            });
        }
    }
    double(b, 13, h.uptime_seconds);
    uint(b, 14, h.procs_running);
}

/// Appends the body of an event record (`Record.event`) to `buf`.
pub fn encode_event_body(e: &Event, buf: &mut Vec<u8>) {
    nested(buf, 3, |b| {
        uint(b, 1, e.seq);
        uint(b, 2, e.ts.as_nanos());
        string(b, 3, e.kind.as_str());
        if let Some(id) = &e.object_id {
            opt_string(b, 4, id);
        }
        if let Some(n) = &e.name {
            opt_string(b, 5, n);
        }
        string(b, 6, &e.message);
        if !e.data.is_null() {
            // Events are rare (lifecycle changes), so one small allocation here is fine.
            string(b, 7, &e.data.to_string());
        }
    });
}

/// Appends the `node_id` and `node` fields of a `Batch`.
pub fn batch_header(buf: &mut Vec<u8>, node_id: &str, node: &str) {
    string(buf, 1, node_id);
    string(buf, 2, node);
}

/// Appends one `Batch.records` entry: `seq` followed by a stored body.
pub fn batch_record(buf: &mut Vec<u8>, seq: u64, body: &[u8]) {
    let seq_len = if seq == 0 {
        0
    } else {
        1 + encoded_len_varint(seq)
    };
    key(buf, 3, LEN);
    encode_varint((seq_len + body.len()) as u64, buf);
    uint(buf, 1, seq);
    buf.extend_from_slice(body);
}

/// The bytes [`batch_record`] adds for a body of `body_len` bytes.
pub fn batch_record_len(seq: u64, body_len: usize) -> usize {
    let inner = if seq == 0 {
        0
    } else {
        1 + encoded_len_varint(seq)
    } + body_len;
    1 + encoded_len_varint(inner as u64) + inner
}

#[cfg(test)]
mod tests {
    use super::super::proto;
    use super::*;
    use nodeagent_types::{CpuModes, DeviceCounters, EventKind, Kind, Timestamp};
    use proptest::prelude::*;
    use prost::Message;

    fn rec(seq: u64, host: bool) -> Record {
        Record {
            node: "n1".into(),
            seq: 0,
            id: "0123456789abcdef".into(),
            name: "web-1".into(),
            kind: if host { Kind::Host } else { Kind::Process },
            sample: Sample {
                id: "0123456789abcdef".into(),
                ts: Timestamp(1_700_000_000_123_456_789),
                seq,
                cpu_usage_ns: Some(12_345_678),
                cpu_throttled_ns: Some(0),
                memory_bytes: Some(4096),
                memory_limit_bytes: None,
                oom_kills: Some(0),
                pids: Some(3),
                io_read_bytes: None,
                io_write_bytes: Some(1 << 40),
                net_rx_bytes: None,
                net_tx_bytes: None,
                host: host.then(|| {
                    Box::new(HostStats {
                        cpus: 2,
                        cpu: CpuModes {
                            user: 1,
                            idle: 99,
                            ..CpuModes::default()
                        },
                        load1: 0.5,
                        load5: 0.25,
                        load15: 0.0,
                        memory_total_bytes: 1 << 30,
                        memory_available_bytes: 1 << 29,
                        memory_free_bytes: 1 << 28,
                        swap_total_bytes: 0,
                        swap_free_bytes: 0,
                        disks: vec![DeviceCounters {
                            device: "vda".into(),
                            read_bytes: 10,
                            write_bytes: 20,
                        }],
                        nets: vec![
                            DeviceCounters {
                                device: "eth0".into(),
                                read_bytes: 1,
                                write_bytes: 2,
                            },
                            DeviceCounters {
                                device: "lo".into(),
                                read_bytes: 0,
                                write_bytes: 0,
                            },
                        ],
                        uptime_seconds: 12.5,
                        procs_running: 4,
                    })
                }),
            },
        }
    }

    fn decode_one(seq: u64, body: &[u8]) -> proto::Record {
        let mut b = Vec::new();
        batch_header(&mut b, "id-1", "n1");
        let header = b.len();
        batch_record(&mut b, seq, body);
        assert_eq!(b.len() - header, batch_record_len(seq, body.len()));
        let batch = proto::Batch::decode(&b[..]).expect("decodes as a Batch");
        assert_eq!(batch.node_id, "id-1");
        assert_eq!(batch.node, "n1");
        assert_eq!(batch.records.len(), 1);
        batch.records.into_iter().next().expect("one record")
    }

    #[test]
    fn sample_body_decodes_with_prost() {
        for host in [false, true] {
            let r = rec(7, host);
            let mut body = Vec::new();
            encode_sample_body(&r, &mut body);
            assert_eq!(body_kind(&body), BodyKind::Sample);
            let got = decode_one(42, &body);
            assert_eq!(got.seq, 42);
            let Some(proto::record::Body::Sample(s)) = got.body else {
                panic!("not a sample: {got:?}")
            };
            assert_eq!(s.id, r.id);
            assert_eq!(s.name, "web-1");
            assert_eq!(s.kind, if host { "host" } else { "process" });
            let back = super::super::json::sample_from_proto(&s.id, s.sample.expect("sample"));
            assert_eq!(back, r.sample);
        }
    }

    #[test]
    fn event_body_decodes_with_prost() {
        let e = Event {
            seq: 9,
            ts: Timestamp(5),
            kind: EventKind::SinkDropped,
            object_id: Some(String::new()),
            name: None,
            message: "dropped".into(),
            data: serde_json::json!({"sink": "up", "dropped": 3}),
        };
        let mut body = Vec::new();
        encode_event_body(&e, &mut body);
        assert_eq!(body_kind(&body), BodyKind::Event);
        let got = decode_one(1, &body);
        let Some(proto::record::Body::Event(ev)) = got.body else {
            panic!("not an event")
        };
        assert_eq!(ev.seq, 9);
        assert_eq!(ev.kind, "sink_dropped");
        assert_eq!(ev.object_id.as_deref(), Some(""));
        assert_eq!(ev.name, None);
        let data: serde_json::Value = serde_json::from_str(&ev.data_json).expect("json");
        assert_eq!(data["dropped"], 3);
    }

    proptest! {
        #[test]
        fn any_sample_round_trips(
            seq in any::<u64>(),
            ts in any::<u64>(),
            vals in proptest::collection::vec(proptest::option::of(any::<u64>()), 10),
            id in "[a-f0-9]{0,16}",
            name in "\\PC{0,200}",
            rseq in any::<u64>(),
        ) {
            let mut r = rec(seq, false);
            r.id = id.clone();
            r.name = name.clone();
            r.sample.id = id.clone();
            r.sample.ts = Timestamp(ts);
            r.sample.cpu_usage_ns = vals[0];
            r.sample.cpu_throttled_ns = vals[1];
            r.sample.memory_bytes = vals[2];
            r.sample.memory_limit_bytes = vals[3];
            r.sample.oom_kills = vals[4];
            r.sample.pids = vals[5];
            r.sample.io_read_bytes = vals[6];
            r.sample.io_write_bytes = vals[7];
            r.sample.net_rx_bytes = vals[8];
            r.sample.net_tx_bytes = vals[9];
            let mut body = Vec::new();
            encode_sample_body(&r, &mut body);
            let got = decode_one(rseq, &body);
            prop_assert_eq!(got.seq, rseq);
            let Some(proto::record::Body::Sample(s)) = got.body else {
                panic!("not a sample")
            };
            prop_assert_eq!(&s.name, &name);
            let back = super::super::json::sample_from_proto(&s.id, s.sample.expect("sample"));
            prop_assert_eq!(back, r.sample);
        }
    }
}
