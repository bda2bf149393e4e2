//! Conversions between the protobuf messages and the domain types.
//!
//! Specs, patches and objects are not converted field by field: every message has serde
//! generated from the proto (`crates/api/build.rs`), with the JSON API's field names. Incoming
//! specs and patches are written as the JSON document an HTTP client would have sent and read
//! by the same parser, so validation, defaults and the field names in errors cannot drift apart
//! between the two front ends. Outgoing objects are written as the JSON API's document and read
//! as the message. A new kind therefore needs its message in the proto and nothing here.
//!
//! Samples, events and the host's information are converted by hand: they are the same for
//! every kind, and their messages differ from the JSON form on purpose (`ts_unix_nanos`, the
//! event's `data_json`).

pub mod serde_helpers;

use crate::proto;
use nodeagent_core::{HostInfo, PushAck};
use nodeagent_types::{ApiError, ErrorCode, Event, Object, ObjectSpec, Sample};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Maps an [`ApiError`] to a gRPC status: the code by meaning, the message as "field: message",
/// and the field and the error's own code in the metadata (`x-field`, `x-error-code`) for clients
/// that act on them.
pub fn status_of(e: ApiError) -> Status {
    let code = match e.code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::PayloadTooLarge => Code::ResourceExhausted,
        ErrorCode::Unauthorized => Code::Unauthenticated,
        ErrorCode::Forbidden => Code::PermissionDenied,
        ErrorCode::Internal => Code::Internal,
    };
    let message = match &e.field {
        Some(f) => format!("{f}: {}", e.message),
        None => e.message.clone(),
    };
    let mut status = Status::new(code, message);
    let md = status.metadata_mut();
    md.insert("x-error-code", MetadataValue::from_static(e.code.as_str()));
    // A field name holding bytes not allowed in a header (user-chosen label keys can) is left
    // out of the metadata; it is still in the message.
    if let Some(v) = e
        .field
        .as_deref()
        .and_then(|f| MetadataValue::try_from(f).ok())
    {
        md.insert("x-field", v);
    }
    if let Some(v) = e
        .rule
        .as_deref()
        .and_then(|r| MetadataValue::try_from(r).ok())
    {
        md.insert("x-rule", v);
    }
    status
}

/// The JSON document an HTTP client would have sent for this protobuf message, written by the
/// serde that `build.rs` generates on every message: optional fields left out when not given,
/// empty repeated and map fields left out, and a float JSON numbers cannot carry written as
/// proto3's JSON mapping does (`"NaN"`), so that the parser refuses it at its field
/// (`resources.cpu`).
pub fn to_json<T: Serialize>(message: &T) -> Result<Value, ApiError> {
    serde_json::to_value(message)
        .map_err(|e| ApiError::internal(format!("encoding a request: {e}")))
}

/// The JSON document equivalent to a protobuf spec. `name` and `kind` are always present so
/// that an empty one is reported as an invalid value of that field.
pub fn spec_json(p: &proto::ObjectSpec) -> Result<Value, ApiError> {
    to_json(p)
}

/// The JSON document equivalent to a protobuf patch.
pub fn patch_json(p: &proto::ObjectPatch) -> Result<Value, ApiError> {
    to_json(p)
}

/// Encodes a JSON document for the shared parsers, which read bytes (as the HTTP body is).
pub fn json_bytes(v: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(format!("encoding a request: {e}")))
}

/// The protobuf message equivalent to a domain value: its JSON form (the HTTP API's) read by
/// the message's generated serde. Fields match by name, so a kind's section needs no code here.
/// Failing is a bug (the proto and the JSON model disagree about a field), reported as an
/// internal error naming the field.
pub fn to_proto<T: Serialize, P: DeserializeOwned>(value: &T) -> Result<P, ApiError> {
    // Through JSON bytes rather than a `Value`: building the map of a `Value` cost about as
    // much again as the rest.
    let json = serde_json::to_vec(value)
        .map_err(|e| ApiError::internal(format!("encoding a response: {e}")))?;
    serde_json::from_slice(&json).map_err(|_| {
        // Only on failure (a bug), read again to name the field.
        let de = &mut serde_json::Deserializer::from_slice(&json);
        let why = match serde_path_to_error::deserialize::<_, P>(de) {
            Err(e) => format!("{}: {}", e.path(), e.inner()),
            Ok(_) => "inconsistent decoding".to_string(),
        };
        ApiError::internal(format!("encoding a response as protobuf: {why}"))
    })
}

pub fn spec_proto(s: &ObjectSpec) -> Result<proto::ObjectSpec, ApiError> {
    to_proto(s)
}

pub fn object_proto(o: &Object) -> Result<proto::Object, ApiError> {
    to_proto(o)
}

fn devices_proto(d: &[nodeagent_types::DeviceCounters]) -> Vec<proto::DeviceCounters> {
    d.iter()
        .map(|d| proto::DeviceCounters {
            device: d.device.clone(),
            read_bytes: d.read_bytes,
            write_bytes: d.write_bytes,
        })
        .collect()
}

pub fn sample_proto(s: &Sample) -> proto::Sample {
    proto::Sample {
        id: s.id.clone(),
        ts: s.ts.to_rfc3339(),
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
        ts_unix_nanos: s.ts.as_nanos(),
        host: s.host.as_deref().map(|h| proto::HostStats {
            cpus: h.cpus,
            cpu: Some(proto::CpuModes {
                user: h.cpu.user,
                nice: h.cpu.nice,
                system: h.cpu.system,
                idle: h.cpu.idle,
                iowait: h.cpu.iowait,
                irq: h.cpu.irq,
                softirq: h.cpu.softirq,
                steal: h.cpu.steal,
            }),
            load1: h.load1,
            load5: h.load5,
            load15: h.load15,
            memory_total_bytes: h.memory_total_bytes,
            memory_available_bytes: h.memory_available_bytes,
            memory_free_bytes: h.memory_free_bytes,
            swap_total_bytes: h.swap_total_bytes,
            swap_free_bytes: h.swap_free_bytes,
            disks: devices_proto(&h.disks),
            nets: devices_proto(&h.nets),
            uptime_seconds: h.uptime_seconds,
            procs_running: h.procs_running,
        }),
    }
}

pub fn event_proto(e: &Event) -> proto::Event {
    proto::Event {
        seq: e.seq,
        ts: e.ts.to_rfc3339(),
        kind: e.kind.as_str().to_string(),
        object_id: e.object_id.clone(),
        name: e.name.clone(),
        message: e.message.clone(),
        data_json: if e.data.is_null() {
            String::new()
        } else {
            e.data.to_string()
        },
    }
}

pub fn push_ack_proto(a: &PushAck) -> proto::PushAck {
    proto::PushAck {
        id: a.id.clone(),
        sink: a.sink.clone(),
        interval: a.interval.map(|i| i.to_string()),
        status: a.status.clone(),
        sample_seq: a.sample_seq,
    }
}

pub fn host_proto(h: &HostInfo) -> Result<proto::HostInfo, ApiError> {
    Ok(proto::HostInfo {
        node: h.node.clone(),
        hostname: h.hostname.clone(),
        kernel: h.kernel.clone(),
        cpus: h.cpus,
        memory_total_bytes: h.memory_total_bytes,
        cgroup_version: h.cgroup_version.clone(),
        agent_version: h.agent_version.clone(),
        started_at: h.started_at.to_rfc3339(),
        object: Some(object_proto(&h.object)?),
        sample: h.sample.as_ref().map(sample_proto),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_spec;

    fn process_spec() -> proto::ObjectSpec {
        proto::ObjectSpec {
            name: "web-1".into(),
            kind: "process".into(),
            labels: [("team".to_string(), "a".to_string())]
                .into_iter()
                .collect(),
            process: Some(proto::ProcessSpec {
                command: vec!["/bin/sleep".into(), "300".into()],
                env: [("K".to_string(), "V".to_string())].into_iter().collect(),
                cwd: Some("/tmp".into()),
                restart: Some("on-failure".into()),
            }),
            resources: Some(proto::Resources {
                cpu: Some(0.5),
                cpu_weight: Some(100),
                cpuset: Some("0".into()),
                memory: Some("64Mi".into()),
                pids: Some(100),
            }),
            collect: Some(proto::CollectSpec {
                interval: Some("100ms".into()),
            }),
            ..Default::default()
        }
    }

    fn parse(p: &proto::ObjectSpec) -> Result<ObjectSpec, ApiError> {
        parse_spec(&json_bytes(&spec_json(p)?)?)
    }

    #[test]
    fn proto_spec_reads_like_the_json_one() {
        let from_proto = parse(&process_spec()).expect("valid");
        let from_json = parse_spec(
            br#"{"name":"web-1","kind":"process","labels":{"team":"a"},
                "process":{"command":["/bin/sleep","300"],"env":{"K":"V"},"cwd":"/tmp","restart":"on-failure"},
                "resources":{"cpu":0.5,"cpu_weight":100,"cpuset":"0","memory":"64Mi","pids":100},
                "collect":{"interval":"100ms"}}"#,
        )
        .expect("valid");
        assert_eq!(from_proto, from_json);
        // And back: the proto form of the parsed spec parses to the same spec.
        assert_eq!(
            parse(&spec_proto(&from_json).expect("to proto")).expect("round trip"),
            from_json
        );
    }

    #[test]
    fn proto_spec_errors_name_the_field() {
        let mut p = process_spec();
        if let Some(r) = p.resources.as_mut() {
            r.memory = Some("64Xi".into());
        }
        assert_eq!(
            parse(&p).expect_err("bad").field.as_deref(),
            Some("resources.memory")
        );

        let mut p = process_spec();
        if let Some(r) = p.resources.as_mut() {
            r.cpu = Some(f64::NAN);
        }
        assert_eq!(
            parse(&p).expect_err("bad").field.as_deref(),
            Some("resources.cpu")
        );

        let mut p = process_spec();
        p.kind = String::new();
        assert_eq!(parse(&p).expect_err("bad").field.as_deref(), Some("kind"));

        let mut p = process_spec();
        p.name = String::new();
        assert_eq!(parse(&p).expect_err("bad").field.as_deref(), Some("name"));

        let p = proto::ObjectSpec {
            name: "x".into(),
            kind: "cgroup".into(),
            cgroup: Some(proto::CgroupSpec::default()),
            ..Default::default()
        };
        assert_eq!(parse(&p).expect_err("bad").field.as_deref(), Some("cgroup"));
    }

    #[test]
    fn statuses_carry_code_message_and_field() {
        let s = status_of(ApiError::invalid("resources.memory", "bad quantity"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "resources.memory: bad quantity");
        assert_eq!(
            s.metadata().get("x-field").and_then(|v| v.to_str().ok()),
            Some("resources.memory")
        );
        let cases = [
            (ErrorCode::NotFound, Code::NotFound),
            (ErrorCode::AlreadyExists, Code::AlreadyExists),
            (ErrorCode::FailedPrecondition, Code::FailedPrecondition),
            (ErrorCode::Unavailable, Code::Unavailable),
            (ErrorCode::PayloadTooLarge, Code::ResourceExhausted),
            (ErrorCode::Internal, Code::Internal),
        ];
        for (code, want) in cases {
            let s = status_of(ApiError::new(code, "m"));
            assert_eq!(s.code(), want);
            assert_eq!(s.message(), "m");
            assert!(s.metadata().get("x-field").is_none());
            assert_eq!(
                s.metadata()
                    .get("x-error-code")
                    .and_then(|v| v.to_str().ok()),
                Some(code.as_str())
            );
        }
    }
}
