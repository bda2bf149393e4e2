//! Property tests of every request parser the front ends run on untrusted input: the spec, the
//! patch and push bodies, query strings, object keys, the bearer header and the gRPC spec
//! conversion. Whatever the input, a parser never panics, and an error says what is wrong; for
//! a JSON object (the shape every body has) it names the field at fault.

#![allow(clippy::unwrap_used)]

use axum::http::{HeaderMap, HeaderValue};
use nodeagent_api::http::Query;
use nodeagent_api::proto;
use nodeagent_api::request::{
    parse_patch, parse_push_on, parse_sink_body, parse_spec, validate_key,
};
use nodeagent_api::{auth, Token};
use nodeagent_types::ApiError;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Arbitrary JSON: scalars of every kind (with awkward strings and numbers), nested a few
/// levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("64Mi"),
            Just("../../x"),
            Just("%2e%2e"),
            Just("/etc/passwd"),
            Just("a\u{0}b"),
            Just("1e309"),
            Just("-1"),
            Just("0-3,6"),
            Just("100ms"),
            Just("process"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Object keys: mostly the spec's own field names (so the junk reaches deep validation), some
/// arbitrary.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "name", "kind", "labels", "process", "cgroup", "container", "resources", "collect",
            "command", "env", "cwd", "restart", "pids", "path", "image", "privileged", "network",
            "host_pid", "mounts", "source", "target", "cpu", "cpu_weight", "cpuset", "memory",
            "interval", "paused", "sink", "adopt", "pull",
        ])
        .prop_map(str::to_string),
        1 => "\\PC{0,12}",
    ]
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(key(), json_value(), 0..8).prop_map(|m| m.into_iter().collect())
}

/// An error must explain itself, and for a JSON object name the field (or parameter) at
/// fault.
fn check_error(e: &ApiError, object: bool) -> Result<(), TestCaseError> {
    prop_assert!(!e.message.is_empty(), "empty message: {e:?}");
    if object {
        prop_assert!(
            e.field.as_deref().is_some_and(|f| !f.is_empty()),
            "no field named for a JSON object: {e:?}"
        );
    }
    Ok(())
}

fn valid_spec() -> Map<String, Value> {
    match json!({
        "name": "web-1", "kind": "process", "labels": {"team": "a"},
        "process": {"command": ["/bin/sleep", "300"], "env": {"K": "V"}, "cwd": "/tmp"},
        "resources": {"cpu": 0.5, "memory": "64Mi", "pids": 100, "cpuset": "0"},
        "collect": {"interval": "100ms"},
    }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Raw bytes: never a panic, always a message.
    #[test]
    fn bodies_of_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        for r in [
            parse_spec(&body).map(|_| ()),
            parse_patch(&body).map(|_| ()),
            parse_push_on(&body).map(|_| ()),
            parse_sink_body(&body).map(|_| ()),
        ] {
            if let Err(e) = r {
                check_error(&e, false)?;
            }
        }
    }

    /// JSON objects of junk: an error names the field.
    #[test]
    fn bodies_of_json_junk(obj in json_object()) {
        let body = serde_json::to_vec(&Value::Object(obj)).unwrap();
        for r in [
            parse_spec(&body).map(|_| ()),
            parse_patch(&body).map(|_| ()),
            parse_push_on(&body).map(|_| ()),
            parse_sink_body(&body).map(|_| ()),
        ] {
            if let Err(e) = r {
                check_error(&e, true)?;
            }
        }
    }

    /// One field of a valid spec replaced by junk: either still valid, or refused naming that
    /// field (or something inside it).
    #[test]
    fn one_bad_field_is_named(
        path in prop::sample::select(vec![
            "name", "kind", "labels", "process", "resources", "collect",
            "process.command", "process.env", "process.cwd", "process.restart",
            "resources.cpu", "resources.memory", "resources.pids", "resources.cpuset",
            "resources.cpu_weight", "collect.interval",
        ]),
        junk in json_value(),
    ) {
        let mut spec = valid_spec();
        let (outer, inner) = path.split_once('.').map_or((path, None), |(a, b)| (a, Some(b)));
        match inner {
            None => { spec.insert(outer.to_string(), junk); }
            Some(i) => {
                if let Some(Value::Object(m)) = spec.get_mut(outer) {
                    m.insert(i.to_string(), junk);
                }
            }
        }
        let body = serde_json::to_vec(&Value::Object(spec)).unwrap();
        if let Err(e) = parse_spec(&body) {
            check_error(&e, true)?;
            let field = e.field.clone().unwrap_or_default();
            // `kind` junk may make a correct section the one at fault ("`process` is only
            // allowed for kind cgroup").
            let related = field.starts_with(path)
                || (path == "kind" && ["process", "cgroup", "container"].contains(&field.as_str()));
            prop_assert!(related, "{path} was broken but {field:?} was named: {e:?}");
        }
    }

    /// Query strings: never a panic; an unknown or bad parameter is named.
    #[test]
    fn query_strings(raw in "\\PC{0,40}", allowed in prop::sample::subsequence(vec!["wait", "since", "limit"], 0..3)) {
        match Query::parse(Some(&raw), &allowed) {
            Ok(q) => {
                for name in &allowed {
                    let _ = q.bool(name);
                    let _ = q.u64(name);
                }
            }
            Err(e) => prop_assert!(!e.message.is_empty()),
        }
    }

    /// Object keys are only ever looked up, but their shape is checked: never a panic.
    #[test]
    fn keys(key in "\\PC{0,300}|[\\x00-\\x1f./%]{0,20}") {
        if let Err(e) = validate_key(&key) {
            prop_assert_eq!(e.field.as_deref(), Some("key"));
        }
    }

    /// The bearer header: never a panic, and only the exact token passes.
    #[test]
    fn bearer_headers(value in prop::collection::vec(any::<u8>(), 0..80)) {
        let token = Token::new("0123456789abcdef0123456789abcdef").unwrap();
        let Ok(v) = HeaderValue::from_bytes(&value) else { return Ok(()) };
        let mut h = HeaderMap::new();
        h.insert("authorization", v);
        if let Some(presented) = auth::bearer(&h) {
            let ok = token.verify(presented);
            prop_assert_eq!(ok, presented == token.secret().as_bytes());
        }
    }

    /// gRPC specs go through the same parser after conversion: never a panic, fields named.
    #[test]
    fn grpc_specs(
        name in "\\PC{0,70}",
        kind in prop::sample::select(vec!["process", "cgroup", "container", "host", "", "vm"]),
        command in prop::collection::vec("\\PC{0,10}", 0..4),
        labels in prop::collection::hash_map("\\PC{0,8}", "\\PC{0,8}", 0..4),
        cpu in prop::option::of(any::<f64>()),
        memory in prop::option::of("\\PC{0,10}"),
        path in prop::option::of("\\PC{0,20}"),
        pids in prop::collection::vec(any::<u32>(), 0..3),
        network in prop::option::of("\\PC{0,6}"),
    ) {
        let spec = proto::ObjectSpec {
            name,
            kind: kind.to_string(),
            labels,
            process: (kind == "process").then(|| proto::ProcessSpec { command: command.clone(), ..Default::default() }),
            cgroup: (kind == "cgroup").then(|| proto::CgroupSpec { pids: pids.clone(), path: path.clone() }),
            container: (kind == "container").then(|| proto::ContainerSpec {
                image: "busybox:local".into(), command, network, ..Default::default()
            }),
            resources: Some(proto::Resources { cpu, memory, ..Default::default() }),
            collect: None,
            vm: None,
            k8s: None,
            helm: None,
        };
        let converted = nodeagent_api::grpc::convert::spec_json(&spec)
            .and_then(|v| nodeagent_api::grpc::convert::json_bytes(&v));
        match converted {
            Err(e) => check_error(&e, true)?,
            Ok(body) => {
                if let Err(e) = parse_spec(&body) {
                    check_error(&e, true)?;
                }
            }
        }
    }
}

/// The traversal-shaped inputs of the issue, one by one: refused as names, and harmless as keys
/// (looked up, never joined to a path).
#[test]
fn traversal_names_are_refused() {
    for name in [
        "../../x",
        "..",
        ".",
        "/etc/passwd",
        "a/b",
        "%2e%2e",
        "x\u{0}",
        "UPPER",
        "",
    ] {
        let body = json!({"name": name, "kind": "process", "process": {"command": ["/bin/true"]}});
        let e = parse_spec(body.to_string().as_bytes()).expect_err(name);
        assert_eq!(e.field.as_deref(), Some("name"), "{name:?}: {e:?}");
    }
    for path in ["/a/../b", "../x", "/a/./b", "a\u{0}"] {
        let body = json!({"name": "c", "kind": "cgroup", "cgroup": {"path": path}});
        let e = parse_spec(body.to_string().as_bytes()).expect_err(path);
        assert_eq!(e.field.as_deref(), Some("cgroup.path"), "{path:?}: {e:?}");
    }
    for (i, m) in [
        ("source", "relative"),
        ("target", "/a:b"),
        ("source", "/a\u{0}"),
    ] {
        let mount = if i == "source" {
            json!({"source": m, "target": "/x"})
        } else {
            json!({"source": "/srv", "target": m})
        };
        let body = json!({"name": "c", "kind": "container",
            "container": {"image": "busybox:local", "mounts": [mount]}});
        let e = parse_spec(body.to_string().as_bytes()).expect_err(m);
        assert_eq!(
            e.field.as_deref(),
            Some(format!("container.mounts[0].{i}").as_str())
        );
    }
    assert!(validate_key("a\u{0}b").is_err());
    assert!(validate_key(&"x".repeat(257)).is_err());
}
