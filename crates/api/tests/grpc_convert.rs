//! The gRPC conversion (`grpc::convert`, serde generated on the prost messages) against the
//! hand-written, per-kind conversion it replaced, kept here as the reference: arbitrary proto
//! specs never panic and read exactly as before (the same spec, or an error naming the same
//! field), and specs and objects convert to the same messages as before.
//!
//! The reference is the code of `grpc/convert.rs` before issue 11, unchanged but for names.

#![allow(clippy::unwrap_used)]

use nodeagent_api::grpc::convert::{json_bytes, object_proto, spec_json, spec_proto};
use nodeagent_api::proto;
use nodeagent_api::request::parse_spec;
use nodeagent_types::{
    ApiError, ContainerStatus, Duration, Object, ObjectSpec, Resources, RestartPolicy, Status,
    SyncState, Timestamp,
};
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The reference: how specs, patches and objects were converted by hand, per kind.
mod reference {
    use super::*;

    fn set(m: &mut Map<String, Value>, k: &str, v: impl Into<Value>) {
        m.insert(k.to_string(), v.into());
    }

    fn string_map(m: &HashMap<String, String>) -> Value {
        Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }

    fn resources_json(r: &proto::Resources, prefix: &str) -> Result<Value, ApiError> {
        let mut m = Map::new();
        if let Some(cpu) = r.cpu {
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
        if let Some(mem) = &r.memory {
            set(&mut m, "memory", mem.clone());
        }
        if let Some(p) = r.pids {
            set(&mut m, "pids", p);
        }
        Ok(Value::Object(m))
    }

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

    fn restart_str(r: RestartPolicy) -> String {
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
            container: s.section::<nodeagent_types::ContainerSpec>().map(|c| {
                proto::ContainerSpec {
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
                }
            }),
            resources: Some(resources_proto(&s.resources)),
            collect: Some(proto::CollectSpec {
                interval: Some(s.collect.interval.to_string()),
            }),
            // The generators make no vm specs; `vm_spec_and_status_through_proto` covers it.
            vm: None,
            k8s: None,
            helm: None,
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
                sync: serde_json::to_value(c.sync)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                sync_message: c.sync_message.clone(),
            }),
            vm: o.vm.as_ref().map(|v| proto::VmStatus {
                accel_used: v.accel_used.clone(),
                qmp_status: v.qmp_status.clone(),
                console_path: v.console_path.clone(),
                qmp_path: v.qmp_path.clone(),
                memory_actual: v.memory_actual,
                sync: serde_json::to_value(v.sync)
                    .ok()
                    .and_then(|x| x.as_str().map(str::to_string))
                    .unwrap_or_default(),
                sync_message: v.sync_message.clone(),
            }),
            // The generators make no k8s objects; `k8s_spec_and_status_through_proto` covers it.
            k8s: None,
            helm: None,
        }
    }
}

/// The spec a gRPC create reads, as the service reads it.
fn read(p: &proto::ObjectSpec) -> Result<ObjectSpec, ApiError> {
    parse_spec(&json_bytes(&spec_json(p)?)?)
}

fn read_before(p: &proto::ObjectSpec) -> Result<ObjectSpec, ApiError> {
    parse_spec(&json_bytes(&reference::spec_json(p)?)?)
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop::option::weighted(0.6, s)
}

/// Mostly a valid value, now and then an invalid or arbitrary one: with a dozen fields to a
/// spec, about half the specs are valid, so both the errors and the conversions of valid specs
/// are exercised.
fn pick<T: std::fmt::Debug + Clone + 'static>(good: &[T], bad: &[T]) -> BoxedStrategy<T> {
    prop_oneof![
        24 => prop::sample::select(good.to_vec()),
        1 => prop::sample::select(bad.to_vec()),
    ]
    .boxed()
}

fn text(good: &[&'static str], bad: &[&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        24 => prop::sample::select(good.to_vec()).prop_map(str::to_string),
        1 => prop::sample::select(bad.to_vec()).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ]
    .boxed()
}

fn string_map(
    keys: &[&'static str],
    bad_keys: &[&'static str],
) -> BoxedStrategy<HashMap<String, String>> {
    prop::collection::hash_map(text(keys, bad_keys), text(&["v", ""], &["a\u{0}b"]), 0..3).boxed()
}

fn command() -> BoxedStrategy<Vec<String>> {
    prop_oneof![
        12 => (Just("/bin/sleep".to_string()), prop::collection::vec(text(&["300", "", "-c"], &["a\u{0}b"]), 0..2))
            .prop_map(|(p, args)| std::iter::once(p).chain(args).collect()),
        1 => prop::collection::vec(text(&["/bin/true"], &[""]), 0..3),
    ]
    .boxed()
}

fn process() -> impl Strategy<Value = proto::ProcessSpec> {
    (
        command(),
        string_map(&["K", "PATH"], &["", "A=B"]),
        opt(text(&["/tmp", "/"], &["relative", ""])),
        opt(text(&["never", "on-failure", "always"], &["bogus"])),
    )
        .prop_map(|(command, env, cwd, restart)| proto::ProcessSpec {
            command,
            env,
            cwd,
            restart,
        })
}

fn cgroup() -> impl Strategy<Value = proto::CgroupSpec> {
    prop_oneof![
        6 => prop::collection::vec(pick(&[1u32, 42, 99_999], &[0]), 1..3)
            .prop_map(|pids| proto::CgroupSpec { pids, path: None }),
        6 => text(&["/system.slice/x.service", "/x"], &["/a/../b", ""])
            .prop_map(|path| proto::CgroupSpec { pids: vec![], path: Some(path) }),
        1 => (prop::collection::vec(any::<u32>(), 0..2), opt(text(&["/x"], &[""])))
            .prop_map(|(pids, path)| proto::CgroupSpec { pids, path }),
    ]
}

fn mount() -> impl Strategy<Value = proto::Mount> {
    (
        text(&["/srv", "/var/lib/x"], &["", "relative", "/a:b"]),
        text(&["/data"], &[""]),
        any::<bool>(),
    )
        .prop_map(|(source, target, read_only)| proto::Mount {
            source,
            target,
            read_only,
        })
}

fn container() -> impl Strategy<Value = proto::ContainerSpec> {
    let run = (
        text(&["busybox:local", "alpine"], &["", "bad image"]),
        prop::collection::vec(text(&["sleep", "300"], &["a\u{0}b"]), 0..3),
        string_map(&["K"], &[""]),
        any::<bool>(),
        (pick(&[false], &[true]), pick(&[false], &[true])),
        opt(text(&["bridge", "none", "host"], &["x"])),
        prop::collection::vec(mount(), 0..2),
    )
        .prop_map(
            |(image, command, env, pull, (privileged, host_pid), network, mounts)| {
                proto::ContainerSpec {
                    image,
                    command,
                    env,
                    pull,
                    adopt: None,
                    privileged,
                    network,
                    host_pid,
                    mounts,
                }
            },
        );
    let adopt = (
        text(&["abc", "web.1"], &["", "bad/name"]),
        pick(&[false], &[true]),
    )
        .prop_map(|(adopt, pull)| proto::ContainerSpec {
            adopt: Some(adopt),
            pull,
            ..Default::default()
        });
    prop_oneof![3 => run, 1 => adopt]
}

fn resources() -> impl Strategy<Value = proto::Resources> {
    (
        opt(prop_oneof![
            24 => prop::sample::select(vec![0.5, 1.0, 2.0]),
            1 => prop::sample::select(vec![0.001, 1e9, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY]),
            1 => any::<f64>(),
        ]),
        opt(pick(&[1u64, 100, 10_000], &[0, 20_000, u64::MAX])),
        opt(text(&["0", "0-1"], &["3-1", ""])),
        opt(text(&["64Mi", "67108864", "1Gi"], &["64Xi", "1", "-5"])),
        opt(pick(&[1u64, 100], &[0, u64::MAX])),
    )
        .prop_map(|(cpu, cpu_weight, cpuset, memory, pids)| proto::Resources {
            cpu,
            cpu_weight,
            cpuset,
            memory,
            pids,
        })
}

/// Proto specs of every shape: mostly of one kind with its own section, sometimes with the wrong
/// one, none or several, with values valid and not.
fn proto_spec() -> impl Strategy<Value = proto::ObjectSpec> {
    (
        text(&["web-1", "a.b_c"], &["", "UPPER", "../x"]),
        text(&["process", "cgroup", "container"], &["host", "vm", ""]),
        string_map(&["team", "app/x"], &["", "a b"]),
        (process(), cgroup(), container()),
        pick(&[0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3], &[4, 5]),
        opt(resources()),
        opt(opt(text(&["100ms", "1s"], &["1ms", "fast"]))),
    )
        .prop_map(
            |(name, kind, labels, (process, cgroup, container), sections, resources, collect)| {
                // The kind's own section (0), none (1), all three (2), or another's (3..).
                let own = |k: &str| match sections {
                    0 => kind == k,
                    1 => false,
                    2 => true,
                    _ => kind != k && k == "container",
                };
                proto::ObjectSpec {
                    process: own("process").then_some(process),
                    cgroup: own("cgroup").then_some(cgroup),
                    container: own("container").then_some(container),
                    name,
                    kind,
                    labels,
                    resources,
                    collect: collect.map(|interval| proto::CollectSpec { interval }),
                    vm: None,
                    k8s: None,
                    helm: None,
                }
            },
        )
}

fn status() -> impl Strategy<Value = Status> {
    prop::sample::select(vec![
        Status::Pending,
        Status::Running,
        Status::Paused,
        Status::Exited,
        Status::Failed,
        Status::Lost,
        Status::Deleted,
    ])
}

fn container_status() -> impl Strategy<Value = ContainerStatus> {
    (
        "[0-9a-f]{64}",
        any::<bool>(),
        prop::sample::select(vec![
            SyncState::InSync,
            SyncState::Pending,
            SyncState::Failed,
        ]),
        opt("\\PC{0,10}"),
    )
        .prop_map(|(id, adopted, sync, sync_message)| ContainerStatus {
            id,
            adopted,
            sync,
            sync_message,
        })
}

/// The state an object reports besides its spec: every field, set or not.
#[allow(clippy::type_complexity)]
fn object_state() -> impl Strategy<
    Value = (
        Status,
        (Option<u32>, Option<i32>, Option<i32>),
        (u64, u64),
        (bool, u32),
        (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ),
        Vec<(String, u64)>,
        Option<ContainerStatus>,
    ),
> {
    (
        status(),
        (opt(any::<u32>()), opt(any::<i32>()), opt(any::<i32>())),
        (any::<u64>(), any::<u64>()),
        (any::<bool>(), any::<u32>()),
        (
            opt("/[a-z/]{0,12}"),
            opt("/[a-z/.]{0,12}"),
            opt("/[a-z/.]{0,12}"),
            opt("\\PC{0,12}"),
        ),
        prop::collection::vec(("[a-z]{1,6}", 10u64..100_000), 0..3),
        opt(container_status()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Whatever the proto spec, the conversion does not panic, and the spec reads as it did
    /// through the hand-written conversion: the same spec, or an error naming the same field.
    #[test]
    fn proto_specs_read_as_before(p in proto_spec()) {
        let now = read(&p);
        let before = read_before(&p);
        match (&now, &before) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => {
                prop_assert!(!a.message.is_empty());
                // Two differences in which bad field is named first, by design:
                // - the hand-written code refused a float JSON cannot carry before parsing; now
                //   the parser refuses it in its turn, so another bad field may come first;
                // - an empty `process.command` was sent as `[]`, which the parser reads and
                //   validation refuses after the fields before it; now an empty repeated field
                //   is not given (as proto3 means it), which the parser refuses at once.
                let non_finite = p
                    .resources
                    .as_ref()
                    .and_then(|r| r.cpu)
                    .is_some_and(|c| !c.is_finite());
                let no_command = p.process.as_ref().is_some_and(|x| x.command.is_empty());
                if a.field != b.field {
                    let explained = (non_finite && b.field.as_deref() == Some("resources.cpu"))
                        || (no_command && a.field.as_deref() == Some("process.command"));
                    prop_assert!(explained, "now {:?}, before {:?}", a, b);
                    prop_assert!(a.field.is_some(), "{:?}", a);
                }
            }
            _ => prop_assert!(false, "now {:?}, before {:?}, for {:?}", now, before, p),
        }
    }

    /// Every spec that reads converts back to the message the hand-written code built, and that
    /// message reads as the same spec again.
    #[test]
    fn specs_convert_to_proto_as_before(p in proto_spec()) {
        if let Ok(spec) = read(&p) {
            let back = spec_proto(&spec).unwrap();
            prop_assert_eq!(&back, &reference::spec_proto(&spec));
            prop_assert_eq!(read(&back).unwrap(), spec);
        }
    }

    /// Objects, with every field set or not, convert to the message the hand-written code
    /// built.
    #[test]
    fn objects_convert_to_proto_as_before(p in proto_spec(), state in object_state()) {
        let Ok(spec) = read(&p) else { return Ok(()) };
        let (status, (pid, exit_code, exit_signal), (created, updated), (paused, restarts),
            (cgroup, stdout_path, stderr_path, message), push, container) = state;
        let mut o = Object::new("0123456789abcdef".into(), spec, status);
        o.pid = pid;
        o.exit_code = exit_code;
        o.exit_signal = exit_signal;
        o.created_at = Timestamp(created);
        o.updated_at = Timestamp(updated);
        o.paused = paused;
        o.restarts = restarts;
        o.cgroup = cgroup;
        o.stdout_path = stdout_path;
        o.stderr_path = stderr_path;
        o.message = message;
        o.push = push.into_iter().map(|(k, ms)| (k, Duration::from_millis(ms))).collect();
        o.container = container;
        prop_assert_eq!(object_proto(&o).unwrap(), reference::object_proto(&o));
    }
}

/// A vm spec and a vm object go through the proto like the JSON API's.
#[test]
fn vm_spec_and_status_through_proto() {
    let p = proto::ObjectSpec {
        name: "g".into(),
        kind: "vm".into(),
        vm: Some(proto::VmSpec {
            kernel: "/boot/vmlinuz".into(),
            memory: Some("128Mi".into()),
            balloon: Some(true),
            disks: vec![proto::VmDisk {
                path: "/d.img".into(),
                readonly: Some(true),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = read(&p).expect("valid");
    let json = ObjectSpec::from_json(
        br#"{"name":"g","kind":"vm","vm":{"kernel":"/boot/vmlinuz","memory":"128Mi","balloon":true,"disks":[{"path":"/d.img","readonly":true}]}}"#,
    )
    .expect("valid");
    assert_eq!(s, json);
    let mut bad = p.clone();
    if let Some(v) = bad.vm.as_mut() {
        v.kernel = "/a,b".into();
    }
    assert_eq!(
        read(&bad).expect_err("comma").field.as_deref(),
        Some("vm.kernel")
    );
    let mut o = Object::new(
        "0123456789abcdef".into(),
        s,
        nodeagent_types::Status::Running,
    );
    o.vm = Some(nodeagent_types::VmStatus {
        accel_used: "tcg".into(),
        qmp_status: "running".into(),
        console_path: "/x/console.log".into(),
        qmp_path: "/x/qmp.sock".into(),
        memory_actual: Some(128 << 20),
        sync: nodeagent_types::SyncState::InSync,
        sync_message: None,
    });
    let got: proto::Object = nodeagent_api::grpc::convert::to_proto(&o).expect("encodes");
    assert_eq!(
        got.vm.as_ref().map(|v| v.memory_actual),
        Some(Some(128 << 20))
    );
    assert_eq!(
        got.spec
            .as_ref()
            .and_then(|s| s.vm.as_ref())
            .map(|v| v.memory.clone()),
        Some(Some((128u64 << 20).to_string()))
    );
}

/// A k8s manifest is YAML text in the proto; one the JSON API took as a list of objects comes
/// back as its JSON text, which reads as the same documents.
#[test]
fn k8s_spec_and_status_through_proto() {
    let p = proto::ObjectSpec {
        name: "m".into(),
        kind: "k8s".into(),
        k8s: Some(proto::K8sSpec {
            namespace: Some("team".into()),
            manifest: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n".into(),
            wait: Some("ready".into()),
            timeout: Some("30s".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = read(&p).expect("valid");
    let sec = s
        .section::<nodeagent_types::K8sSpec>()
        .expect("k8s section");
    assert_eq!(sec.wait, nodeagent_types::K8sWait::Ready);
    assert_eq!(sec.manifest.documents().expect("documents")[0].name, "a");
    let mut bad = p.clone();
    if let Some(k) = bad.k8s.as_mut() {
        k.manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n".into();
    }
    assert_eq!(
        read(&bad).expect_err("no name").field.as_deref(),
        Some("k8s.manifest[0].metadata.name")
    );

    let listed = ObjectSpec::from_json(
        br#"{"name":"m","kind":"k8s","k8s":{"manifest":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}]}}"#,
    )
    .expect("valid");
    let mut o = Object::new(
        "0123456789abcdef".into(),
        listed,
        nodeagent_types::Status::Running,
    );
    o.k8s = Some(nodeagent_types::K8sStatus {
        cluster: "prod".into(),
        state: nodeagent_types::K8sState::Applied,
        reason: Some("waiting".into()),
        resources: vec![nodeagent_types::K8sResource {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("default".into()),
            name: "b".into(),
            uid: "u-1".into(),
            state: nodeagent_types::K8sState::Ready,
            reason: None,
        }],
        sync: nodeagent_types::SyncState::InSync,
        sync_message: None,
    });
    let got: proto::Object = nodeagent_api::grpc::convert::to_proto(&o).expect("encodes");
    let st = got.k8s.as_ref().expect("k8s status");
    assert_eq!(
        (st.cluster.as_str(), st.state.as_str()),
        ("prod", "applied")
    );
    assert_eq!(st.resources[0].state, "ready");
    assert_eq!(st.resources[0].uid.as_deref(), Some("u-1"));
    // The list came back as text, and that text is the same manifest.
    let spec = got.spec.expect("spec");
    let again = read(&spec).expect("valid again");
    let docs = again
        .section::<nodeagent_types::K8sSpec>()
        .expect("k8s")
        .manifest
        .documents()
        .expect("documents");
    assert_eq!(
        (docs[0].kind.as_str(), docs[0].name.as_str()),
        ("ConfigMap", "b")
    );
}

/// The proto3 quirks, one by one, with the field each error names.
#[test]
fn proto3_quirks_and_field_paths() {
    let base = |kind: &str| proto::ObjectSpec {
        name: "x".into(),
        kind: kind.into(),
        ..Default::default()
    };
    let field = |p: &proto::ObjectSpec| read(p).expect_err("invalid").field;

    // An adoption gives no image: the empty string is "not given".
    let mut p = base("container");
    p.container = Some(proto::ContainerSpec {
        adopt: Some("abc".into()),
        ..Default::default()
    });
    assert!(read(&p).is_ok(), "{:?}", read(&p));
    // Without it, an image is required.
    p.container = Some(proto::ContainerSpec::default());
    assert_eq!(field(&p).as_deref(), Some("container.image"));
    // An empty repeated field is not given: no pids and no path is "give one of them".
    let mut p = base("cgroup");
    p.cgroup = Some(proto::CgroupSpec::default());
    assert_eq!(field(&p).as_deref(), Some("cgroup"));
    p.cgroup = Some(proto::CgroupSpec {
        pids: vec![5, 0],
        path: None,
    });
    assert_eq!(field(&p).as_deref(), Some("cgroup.pids[1]"));
    // Optional strings: given empty is given.
    let mut p = base("process");
    p.process = Some(proto::ProcessSpec {
        command: vec!["/bin/true".into()],
        cwd: Some(String::new()),
        ..Default::default()
    });
    assert_eq!(field(&p).as_deref(), Some("process.cwd"));
    p.process = Some(proto::ProcessSpec {
        command: vec![String::new()],
        ..Default::default()
    });
    assert_eq!(field(&p).as_deref(), Some("process.command[0]"));
    p.process = Some(proto::ProcessSpec::default());
    assert_eq!(field(&p).as_deref(), Some("process.command"));
    // Mounts name their own fields.
    let mut p = base("container");
    p.container = Some(proto::ContainerSpec {
        image: "busybox:local".into(),
        mounts: vec![proto::Mount {
            source: "/srv".into(),
            target: String::new(),
            read_only: false,
        }],
        ..Default::default()
    });
    assert_eq!(field(&p).as_deref(), Some("container.mounts[0].target"));
    // Floats JSON cannot carry are refused at their field, not read as "no limit".
    for cpu in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut p = base("process");
        p.process = Some(proto::ProcessSpec {
            command: vec!["/bin/true".into()],
            ..Default::default()
        });
        p.resources = Some(proto::Resources {
            cpu: Some(cpu),
            ..Default::default()
        });
        assert_eq!(field(&p).as_deref(), Some("resources.cpu"), "{cpu}");
    }
}

/// Objects report the container network even when it is the default, which the JSON model
/// leaves out; and the memory limit as the byte count.
#[test]
fn objects_report_defaults_and_byte_counts() {
    let spec = parse_spec(
        br#"{"name":"c","kind":"container","container":{"image":"busybox:local"},
            "resources":{"memory":"64Mi"}}"#,
    )
    .unwrap();
    let v = serde_json::to_value(&spec).unwrap();
    assert!(v["container"].get("network").is_none(), "{v}");
    let p = spec_proto(&spec).unwrap();
    assert_eq!(
        p.container.unwrap().network.as_deref(),
        Some(nodeagent_types::ContainerNetwork::default().as_str())
    );
    assert_eq!(p.resources.unwrap().memory.as_deref(), Some("67108864"));
}

#[test]
fn helm_spec_and_status_through_proto() {
    let p = proto::ObjectSpec {
        name: "web".into(),
        kind: "helm".into(),
        helm: Some(proto::HelmSpec {
            chart: "/charts/demo".into(),
            values: Some("greeting: hi\nnested: {a: 1}\n".into()),
            value_files: vec!["/etc/v.yaml".into()],
            namespace: Some("team".into()),
            wait: Some(true),
            timeout: Some("90s".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = read(&p).expect("valid");
    let sec = s.section::<nodeagent_types::HelmSpec>().expect("helm");
    assert_eq!(sec.values["nested"]["a"], 1);
    assert!(sec.wait);
    let values = sec.values.clone();
    let mut bad = p.clone();
    if let Some(h) = bad.helm.as_mut() {
        h.chart = "--post-renderer=/bin/sh".into();
    }
    assert_eq!(
        read(&bad).expect_err("a flag").field.as_deref(),
        Some("helm.chart")
    );

    let mut o = Object::new(
        "0123456789abcdef".into(),
        s,
        nodeagent_types::Status::Running,
    );
    o.helm = Some(nodeagent_types::HelmStatus {
        cluster: "prod".into(),
        release: "web".into(),
        namespace: "team".into(),
        revision: 2,
        chart: "demo-0.1.0".into(),
        app_version: "1.0.0".into(),
        status: "deployed".into(),
        description: "Upgrade complete".into(),
        history: vec![nodeagent_types::HelmRevision {
            revision: 1,
            updated: "2026-01-01T00:00:00Z".into(),
            status: "superseded".into(),
            chart: "demo-0.1.0".into(),
            app_version: "1.0.0".into(),
            description: "Install complete".into(),
        }],
        sync: nodeagent_types::SyncState::InSync,
        sync_message: None,
    });
    let got: proto::Object = nodeagent_api::grpc::convert::to_proto(&o).expect("encodes");
    let st = got.helm.as_ref().expect("helm status");
    assert_eq!((st.revision, st.status.as_deref()), (2, Some("deployed")));
    assert_eq!(st.history[0].status, "superseded");
    // The values map came back as text, and that text is the same values.
    let again = read(&got.spec.expect("spec")).expect("valid again");
    assert_eq!(
        again
            .section::<nodeagent_types::HelmSpec>()
            .expect("helm")
            .values,
        values
    );
}
