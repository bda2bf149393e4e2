//! Conversions between the protobuf messages and the domain types.
//!
//! Incoming specs and patches are not converted field by field: they are rewritten as the JSON
//! document an HTTP client would have sent and read by the same parser, so validation, defaults
//! and the field names in errors cannot drift apart between the two front ends. Outgoing values
//! are converted directly, since the domain types are already valid.

use crate::proto;
use nodeagent_core::{HostInfo, PushAck};
use nodeagent_types::{
    ApiError, ErrorCode, Event, Object, ObjectSpec, Resources, RestartPolicy, Sample,
};
use serde_json::{Map, Value};
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

fn set(m: &mut Map<String, Value>, k: &str, v: impl Into<Value>) {
    m.insert(k.to_string(), v.into());
}

fn string_map(m: &std::collections::HashMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The JSON form of `resources`. `prefix` names the struct in errors (`resources`).
fn resources_json(r: &proto::Resources, prefix: &str) -> Result<Value, ApiError> {
    let mut m = Map::new();
    if let Some(cpu) = r.cpu {
        // JSON has no NaN or infinity (serde_json would turn them into null, i.e. "no limit"),
        // so refuse them here with the message the spec parser gives for out-of-range values.
        if !cpu.is_finite() {
            return Err(ApiError::invalid(
                format!("{prefix}.cpu"),
                format!("cpu {cpu} is out of range: give cores, e.g. 0.5"),
            ));
        }
        set(&mut m, "cpu", cpu);
    }
    if let Some(w) = r.cpu_weight {
        set(&mut m, "cpu_weight", w);
    }
    if let Some(c) = &r.cpuset {
        set(&mut m, "cpuset", c.clone());
    }
    // A string either way: the JSON parser takes "67108864" as bytes and "64Mi" as a quantity.
    if let Some(mem) = &r.memory {
        set(&mut m, "memory", mem.clone());
    }
    if let Some(p) = r.pids {
        set(&mut m, "pids", p);
    }
    Ok(Value::Object(m))
}

/// The JSON document equivalent to a protobuf spec. `name` and `kind` are always present so
/// that an empty one is reported as an invalid value of that field.
pub fn spec_json(p: &proto::ObjectSpec) -> Result<Value, ApiError> {
    let mut m = Map::new();
    set(&mut m, "name", p.name.clone());
    set(&mut m, "kind", p.kind.clone());
    if !p.labels.is_empty() {
        set(&mut m, "labels", string_map(&p.labels));
    }
    if let Some(pr) = &p.process {
        let mut o = Map::new();
        set(&mut o, "command", pr.command.clone());
        if !pr.env.is_empty() {
            set(&mut o, "env", string_map(&pr.env));
        }
        if let Some(cwd) = &pr.cwd {
            set(&mut o, "cwd", cwd.clone());
        }
        if let Some(r) = &pr.restart {
            set(&mut o, "restart", r.clone());
        }
        set(&mut m, "process", o);
    }
    if let Some(cg) = &p.cgroup {
        let mut o = Map::new();
        // proto3 cannot tell an empty list from none; both mean "not given".
        if !cg.pids.is_empty() {
            set(&mut o, "pids", cg.pids.clone());
        }
        if let Some(path) = &cg.path {
            set(&mut o, "path", path.clone());
        }
        set(&mut m, "cgroup", o);
    }
    if let Some(c) = &p.container {
        let mut o = Map::new();
        // An adoption gives no image; an empty one is then "not given".
        if !c.image.is_empty() || c.adopt.is_none() {
            set(&mut o, "image", c.image.clone());
        }
        if !c.command.is_empty() {
            set(&mut o, "command", c.command.clone());
        }
        if !c.env.is_empty() {
            set(&mut o, "env", string_map(&c.env));
        }
        if c.pull {
            set(&mut o, "pull", true);
        }
        if let Some(a) = &c.adopt {
            set(&mut o, "adopt", a.clone());
        }
        if c.privileged {
            set(&mut o, "privileged", true);
        }
        if let Some(n) = &c.network {
            set(&mut o, "network", n.clone());
        }
        if c.host_pid {
            set(&mut o, "host_pid", true);
        }
        if !c.mounts.is_empty() {
            let mounts: Vec<Value> = c
                .mounts
                .iter()
                .map(|x| {
                    serde_json::json!({
                        "source": x.source, "target": x.target, "read_only": x.read_only,
                    })
                })
                .collect();
            set(&mut o, "mounts", mounts);
        }
        set(&mut m, "container", o);
    }
    if let Some(r) = &p.resources {
        m.insert("resources".into(), resources_json(r, "resources")?);
    }
    if let Some(c) = &p.collect {
        let mut o = Map::new();
        if let Some(i) = &c.interval {
            set(&mut o, "interval", i.clone());
        }
        set(&mut m, "collect", o);
    }
    Ok(Value::Object(m))
}

/// The JSON document equivalent to a protobuf patch.
pub fn patch_json(p: &proto::ObjectPatch) -> Result<Value, ApiError> {
    let mut m = Map::new();
    if let Some(r) = &p.resources {
        m.insert("resources".into(), resources_json(r, "resources")?);
    }
    if let Some(paused) = p.paused {
        set(&mut m, "paused", paused);
    }
    Ok(Value::Object(m))
}

/// Encodes a JSON document for the shared parsers, which read bytes (as the HTTP body is).
pub fn json_bytes(v: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(format!("encoding a request: {e}")))
}

fn restart_str(r: RestartPolicy) -> String {
    // Through serde, so the spelling is the JSON API's by construction.
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn resources_proto(r: &Resources) -> proto::Resources {
    proto::Resources {
        cpu: r.cpu,
        cpu_weight: r.cpu_weight,
        cpuset: r.cpuset.as_ref().map(|c| c.0.clone()),
        memory: r.memory.map(|m| m.0.to_string()),
        pids: r.pids,
    }
}

pub fn spec_proto(s: &ObjectSpec) -> proto::ObjectSpec {
    proto::ObjectSpec {
        name: s.name.clone(),
        kind: s.kind.as_str().to_string(),
        labels: s.labels.clone().into_iter().collect(),
        process: s
            .section::<nodeagent_types::ProcessSpec>()
            .map(|p| proto::ProcessSpec {
                command: p.command.clone(),
                env: p.env.clone().into_iter().collect(),
                cwd: p.cwd.clone(),
                restart: Some(restart_str(p.restart)),
            }),
        cgroup: s
            .section::<nodeagent_types::CgroupSpec>()
            .map(|c| proto::CgroupSpec {
                pids: c.pids.clone().unwrap_or_default(),
                path: c.path.clone(),
            }),
        container: s
            .section::<nodeagent_types::ContainerSpec>()
            .map(|c| proto::ContainerSpec {
                image: c.image.clone(),
                command: c.command.clone(),
                env: c.env.clone().into_iter().collect(),
                pull: c.pull,
                adopt: c.adopt.clone(),
                privileged: c.privileged,
                network: Some(c.network.as_str().to_string()),
                host_pid: c.host_pid,
                mounts: c
                    .mounts
                    .iter()
                    .map(|m| proto::Mount {
                        source: m.source.clone(),
                        target: m.target.clone(),
                        read_only: m.read_only,
                    })
                    .collect(),
            }),
        resources: Some(resources_proto(&s.resources)),
        collect: Some(proto::CollectSpec {
            interval: Some(s.collect.interval.to_string()),
        }),
    }
}

pub fn object_proto(o: &Object) -> proto::Object {
    proto::Object {
        id: o.id.clone(),
        name: o.name.clone(),
        kind: o.kind.as_str().to_string(),
        status: o.status.as_str().to_string(),
        spec: Some(spec_proto(&o.spec)),
        pid: o.pid,
        exit_code: o.exit_code,
        exit_signal: o.exit_signal,
        created_at: o.created_at.to_rfc3339(),
        updated_at: o.updated_at.to_rfc3339(),
        paused: o.paused,
        restarts: o.restarts,
        cgroup: o.cgroup.clone(),
        stdout_path: o.stdout_path.clone(),
        stderr_path: o.stderr_path.clone(),
        push: o
            .push
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        message: o.message.clone(),
        container: o.container.as_ref().map(|c| proto::ContainerStatus {
            id: c.id.clone(),
            adopted: c.adopted,
            // Through serde, so the spelling is the JSON API's by construction.
            sync: serde_json::to_value(c.sync)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            sync_message: c.sync_message.clone(),
        }),
    }
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

pub fn host_proto(h: &HostInfo) -> proto::HostInfo {
    proto::HostInfo {
        node: h.node.clone(),
        hostname: h.hostname.clone(),
        kernel: h.kernel.clone(),
        cpus: h.cpus,
        memory_total_bytes: h.memory_total_bytes,
        cgroup_version: h.cgroup_version.clone(),
        agent_version: h.agent_version.clone(),
        started_at: h.started_at.to_rfc3339(),
        object: Some(object_proto(&h.object)),
        sample: h.sample.as_ref().map(sample_proto),
    }
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
            parse(&spec_proto(&from_json)).expect("round trip"),
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
