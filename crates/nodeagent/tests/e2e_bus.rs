//! Bus In (issue 16), end to end: real agents with `[bus]`, a real `nats-server -js` on a
//! loopback port, and the real `nodeagent fleet` CLI.
//!
//! - the node's subjects answer every operation with the HTTP API's JSON and status, bad input
//!   gets HTTP's error naming the field, and mutations are audited as `bus:<identity>`;
//! - a fleet request reaches only the nodes its selector matches, and a node that does not
//!   answer is listed, not dropped;
//! - a durable command sent while its node is down is applied once it is up, exactly once, even
//!   across a `kill -9` of the agent;
//! - losing the server stops none of the agent's local work, and the agent registers and
//!   answers again once the server is back.

#![allow(clippy::unwrap_used)]

mod common;

use common::nats::NatsServer;
use common::*;
use nodeagent_api::bus::client::FleetClient;
use nodeagent_api::bus::wire::{Op, Request};
use nodeagent_api::bus::BusAuth;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const IDENTITY: &str = "e2e-tester";

/// An agent on the bus at `url`, named `node`, with `labels` (TOML inline-table body).
fn agent(url: &str, node: &str, labels: &str, dir: &Path) -> Daemon {
    let state = dir.join(node);
    agent_in(url, node, labels, &state)
}

fn agent_in(url: &str, node: &str, labels: &str, state: &Path) -> Daemon {
    agent_with(url, node, labels, state, "", &[])
}

/// The agent of `node` on `state`: a restart on the same state dir gets the same cgroup parent
/// (named after the state dir, which is unique), so it finds its workloads again.
fn agent_with(
    url: &str,
    node: &str,
    labels: &str,
    state: &Path,
    bus_extra: &str,
    args: &[&str],
) -> Daemon {
    let parent = format!(
        "/nodeagent-e2e-bus-{}",
        state
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().replace('.', ""))
            .unwrap_or_default()
            + "-"
            + node
    );
    std::fs::create_dir_all(state).unwrap();
    let conf = state.with_extension("toml");
    std::fs::write(
        &conf,
        format!(
            "node_name = \"{node}\"\n[bus]\nurls = [\"{url}\"]\nheartbeat = \"200ms\"\nlabels = {{ {labels} }}\n{bus_extra}\n"
        ),
    )
    .unwrap();
    Daemon::start_with(Opts {
        args: ["--config", &conf.display().to_string()]
            .into_iter()
            .chain(args.iter().copied())
            .map(String::from)
            .collect(),
        state_dir: Some(state.to_path_buf()),
        cgroup_parent: Some(parent),
        ..Opts::default()
    })
}

fn fleet(url: &str, args: &[&str]) -> Output {
    command()
        .args(["fleet", "--nats", url, "--identity", IDENTITY])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn fleet_json(url: &str, args: &[&str]) -> (bool, Value) {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let o = fleet(url, &a);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "fleet {args:?}: not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.success(), v)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(rt: &tokio::runtime::Runtime, url: &str) -> FleetClient {
    client_as(rt, url, BusAuth::default())
}

fn client_as(rt: &tokio::runtime::Runtime, url: &str, auth: BusAuth) -> FleetClient {
    rt.block_on(FleetClient::connect(
        &[url.to_string()],
        &auth,
        None,
        Some(IDENTITY),
    ))
    .unwrap()
}

/// Waits until each node is `up` in the registry.
fn wait_up(url: &str, nodes: &[&str]) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let o = fleet(url, &["nodes", "-o", "json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        let up = nodes.iter().all(|n| {
            v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["node"] == *n && r["state"] == "up")
        });
        if up {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nodes {nodes:?} not all up within 20 s; the registry: {v}; stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_spec(dir: &Path, spec: &Value) -> String {
    let f = dir.join(format!("{}.json", spec["name"].as_str().unwrap()));
    std::fs::write(&f, spec.to_string()).unwrap();
    f.display().to_string()
}

#[test]
fn node_subjects_and_fleet_fan_out() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(free_port(), &tmp.path().join("js"));
    let url = nats.url();
    let a = agent(&url, "node-a", "zone = \"a\"", tmp.path());
    let b = agent(&url, "node-b", "zone = \"b\"", tmp.path());
    let reg = wait_up(&url, &["node-a", "node-b"]);
    let rec_a = reg["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == "node-a")
        .unwrap()
        .clone();
    assert_eq!(rec_a["labels"]["zone"], "a", "{rec_a}");
    assert_eq!(
        rec_a["addresses"][0],
        format!("http://127.0.0.1:{}", a.port),
        "{rec_a}"
    );

    // A fleet create reaches only the nodes its selector matches.
    let spec = write_spec(tmp.path(), &sleep_spec("web", 0.2, "32Mi"));
    let (ok, v) = fleet_json(
        &url,
        &["create", "-f", &spec, "--wait", "--selector", "zone=a"],
    );
    assert!(ok, "{v}");
    let replies = v["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 1, "{v}");
    assert_eq!(replies[0]["node"], "node-a");
    assert_eq!(replies[0]["status"], 201, "{v}");
    assert_eq!(replies[0]["body"]["status"], "running", "{v}");
    assert_eq!(a.http("GET", "/v1/objects/web", None).0, 200);
    assert_eq!(b.http("GET", "/v1/objects/web", None).0, 404);

    // The node's own subject answers as HTTP does: same status, same document.
    let rt = rt();
    let c = client(&rt, &url);
    let key = |k: &str| Request {
        key: Some(k.into()),
        ..Default::default()
    };
    let r = rt
        .block_on(c.request("node-a", Op::Get, &key("web"), Duration::from_secs(5)))
        .unwrap();
    let (hs, hb) = a.http("GET", "/v1/objects/web", None);
    assert_eq!(r.status, hs);
    assert_eq!(r.body["id"], hb["id"]);
    assert_eq!(r.body["spec"], hb["spec"]);
    assert_eq!(r.body["pid"], hb["pid"]);

    // Bad input: HTTP's error, naming the field.
    let bad = json!({"resources": {"cpu": "lots"}});
    let mut req = key("web");
    req.body = Some(bad.clone());
    let r = rt
        .block_on(c.request("node-a", Op::Update, &req, Duration::from_secs(5)))
        .unwrap();
    let (hs, hb) = a.http("PATCH", "/v1/objects/web", Some(&bad));
    assert_eq!((r.status, hs), (400, 400), "{}", r.body);
    assert_eq!(r.body["error"]["field"], hb["error"]["field"], "{}", r.body);
    assert_eq!(r.body["error"]["field"], "resources.cpu");
    // An envelope the bus cannot read names its field too.
    let r = rt
        .block_on(c.request(
            "node-a",
            Op::Get,
            &Request::default(),
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "key", "{}", r.body);

    // An update to every node: node-a applies it (the cgroup holds it), node-b has no such
    // object; both are rows, and the command fails as a whole.
    let o = fleet(&url, &["update", "web", "--cpu", "0.5"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("node-a") && out.contains("updated"), "{out}");
    assert!(out.contains("node-b") && out.contains("404"), "{out}");
    let (_, obj) = a.http("GET", "/v1/objects/web", None);
    let pid = obj["pid"].as_u64().unwrap() as u32;
    assert_eq!(
        read_trim(&cgroup_dir(pid, "cpu").join("cpu.cfs_quota_us")),
        "50000"
    );

    // Audited as the bus identity.
    let (_, evs) = a.http("GET", "/v1/events", None);
    let audit = evs["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["kind"] == "audit" && e["data"]["method"] == "PATCH")
        .cloned()
        .unwrap_or_else(|| panic!("no audit record of the PATCH: {evs}"));
    assert_eq!(audit["data"]["who"], format!("bus:{IDENTITY}"), "{audit}");
    assert_eq!(audit["data"]["transport"], "bus", "{audit}");
    assert_eq!(audit["data"]["subject"], "nodeagent-bus.v1.fleet.update");

    // A node that does not answer is listed as such.
    let o = fleet(
        &url,
        &[
            "get",
            "web",
            "--nodes",
            "node-a,ghost",
            "--timeout",
            "500ms",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("ghost") && out.contains("no answer"), "{out}");
    assert!(out.contains("node-a"), "{out}");

    // The list of every node's objects.
    let o = fleet(&url, &["get"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("node-a") && l.contains("web")),
        "{out}"
    );
}

#[test]
fn durable_commands_wait_for_the_node_and_apply_once() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(free_port(), &tmp.path().join("js"));
    let url = nats.url();
    let spec = write_spec(tmp.path(), &sleep_spec("batch", 0.1, "16Mi"));
    // node-c has never run: the command waits in JetStream.
    let (ok, v) = fleet_json(
        &url,
        &[
            "create",
            "-f",
            &spec,
            "--nodes",
            "node-c",
            "--durable",
            "--timeout",
            "300ms",
        ],
    );
    assert!(ok, "{v}");
    let cmd = &v["commands"][0];
    assert_eq!(cmd["node"], "node-c", "{v}");
    assert!(cmd["result"].is_null(), "applied by nobody yet: {v}");
    let id = format!("node-c:{}", cmd["id"].as_str().unwrap());

    let state = tmp.path().join("node-c");
    let mut c = agent_in(&url, "node-c", "zone = \"c\"", &state);
    let applied = eventually(Duration::from_secs(15), "the command applied", || {
        let (_, v) = fleet_json(&url, &["result", &id]);
        let r = &v["commands"][0]["result"];
        (!r.is_null()).then(|| r.clone())
    });
    assert_eq!(applied["status"], 202, "{applied}");
    let (s, obj) = c.http("GET", "/v1/objects/batch", None);
    assert_eq!(s, 200, "{obj}");

    // A second command, sent while the agent is killed, is applied after its restart; the
    // first is not applied again.
    c.kill9();
    let o = fleet(
        &url,
        &[
            "update",
            "batch",
            "--cpu",
            "0.3",
            "--nodes",
            "node-c",
            "--durable",
            "--timeout",
            "100ms",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c2 = agent_in(&url, "node-c", "zone = \"c\"", &state);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, o) = c2.http("GET", "/v1/objects/batch", None);
        if o["spec"]["resources"]["cpu"] == 0.3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the durable update was not applied after the restart: {o}\nagent log:\n{}",
            c2.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, evs) = c2.http("GET", "/v1/events", None);
    let created = evs["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "created" && e["name"] == "batch")
        .count();
    assert_eq!(created, 1, "created once: {evs}");
    let (_, list) = c2.http("GET", "/v1/objects", None);
    let n = list["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["name"] == "batch")
        .count();
    assert_eq!(n, 1);
    drop(c);
}

#[test]
fn the_agent_outlives_the_server_and_comes_back_on_the_bus() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(free_port(), &tmp.path().join("js"));
    let url = nats.url();
    let a = agent(&url, "node-o", "", tmp.path());
    wait_up(&url, &["node-o"]);
    nats.stop();
    // The local API and sampling go on.
    let (s, b) = a.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("offline", 0.1, "16Mi")),
    );
    assert_eq!(s, 201, "{b}");
    eventually(
        Duration::from_secs(5),
        "samples while the bus is down",
        || {
            let (_, m) = a.http("GET", "/v1/objects/offline/metrics", None);
            (m["samples"].as_array().is_some_and(|s| !s.is_empty())).then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    nats.restart();
    // It registers again (with the new object counted) and answers requests.
    eventually(Duration::from_secs(20), "registered again", || {
        let (_, v) = fleet_json(&url, &["nodes"]);
        v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["node"] == "node-o" && r["state"] == "up" && r["objects"] == 1)
            .then_some(())
    });
    let rt = rt();
    let c = client(&rt, &url);
    let r = eventually(Duration::from_secs(10), "an answer", || {
        rt.block_on(c.request(
            "node-o",
            Op::Get,
            &Request {
                key: Some("offline".into()),
                ..Default::default()
            },
            Duration::from_secs(2),
        ))
        .ok()
    });
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "running");
}

/// Past `max_inflight`, a request is answered 503 at once rather than queued behind the ones in
/// progress, and the agent's own API is not held up.
#[test]
fn a_flood_is_answered_busy_at_once() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(free_port(), &tmp.path().join("js"));
    let url = nats.url();
    let state = tmp.path().join("node-f");
    let a = agent_with(
        &url,
        "node-f",
        "",
        &state,
        "max_inflight = 1",
        &["--stop-grace", "3s"],
    );
    wait_up(&url, &["node-f"]);
    // A process that ignores SIGTERM: its delete with ?wait=true takes the whole grace.
    let spec = json!({
        "name": "stubborn",
        "kind": "process",
        "process": {"command": ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"]},
    });
    let (s, b) = a.http("POST", "/v1/objects?wait=true", Some(&spec));
    assert_eq!(s, 201, "{b}");
    std::thread::sleep(Duration::from_millis(300));
    let rt = rt();
    let c = client(&rt, &url);
    let mut del = Request {
        key: Some("stubborn".into()),
        ..Default::default()
    };
    del.query.insert(
        "wait".into(),
        nodeagent_api::bus::wire::QueryValue::Bool(true),
    );
    let (slow, quick) = rt.block_on(async {
        let slow = c.request("node-f", Op::Delete, &del, Duration::from_secs(10));
        let quick = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = std::time::Instant::now();
            let r = c
                .request(
                    "node-f",
                    Op::List,
                    &Request::default(),
                    Duration::from_secs(10),
                )
                .await;
            (r, t.elapsed())
        };
        tokio::join!(slow, quick)
    });
    let (quick, took) = quick;
    let quick = quick.unwrap();
    assert_eq!(quick.status, 503, "{}", quick.body);
    assert!(
        quick.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_inflight"),
        "{}",
        quick.body
    );
    assert!(
        took < Duration::from_secs(1),
        "answered busy at once, not queued: {took:?}"
    );
    let slow = slow.unwrap();
    assert_eq!(slow.status, 200, "{}", slow.body);
    // Once the slow one is done, the next is served.
    let r = rt
        .block_on(c.request(
            "node-f",
            Op::List,
            &Request::default(),
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(r.status, 200);
}

/// The README's authorization: each node may read only its own subjects and write only its
/// replies, its registry entry and its results; only the control plane may send commands. A
/// node's credentials cannot command another node, directly or durably.
#[test]
fn a_nodes_credentials_cannot_command_another_node() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    let conf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/nats-authorization.conf"),
    )
    .unwrap();
    let nats = NatsServer::with_config(free_port(), &tmp.path().join("js"), Some(&conf));
    let url = nats.url();
    let secret = |name: &str, text: &str| {
        let f = tmp.path().join(name);
        std::fs::write(&f, text).unwrap();
        f
    };
    let control_pw = secret("control.pw", "control-secret");
    let a_pw = secret("a.pw", "node-a-secret");
    let b_pw = secret("b.pw", "node-b-secret");
    // The control plane makes the buckets and the stream (nodes may not).
    let o = fleet(
        &url,
        &[
            "--nats-user",
            "control",
            "--nats-password-file",
            control_pw.to_str().unwrap(),
            "init",
        ],
    );
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        nats.log()
    );
    let creds = |pw: &Path| {
        format!(
            "user = \"PLACEHOLDER\"\npassword_file = \"{}\"",
            pw.display()
        )
    };
    let a = agent_with(
        &url,
        "node-a",
        "",
        &tmp.path().join("node-a"),
        &creds(&a_pw).replace("PLACEHOLDER", "node-a"),
        &[],
    );
    let b = agent_with(
        &url,
        "node-b",
        "",
        &tmp.path().join("node-b"),
        &creds(&b_pw).replace("PLACEHOLDER", "node-b"),
        &[],
    );
    let control = |args: &[&str]| {
        let mut v = vec![
            "--nats-user",
            "control",
            "--nats-password-file",
            control_pw.to_str().unwrap(),
        ];
        v.extend_from_slice(args);
        fleet_json(&url, &v)
    };
    eventually(Duration::from_secs(15), "both nodes registered", || {
        let (_, v) = control(&["nodes"]);
        let n = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["state"] == "up")
            .count();
        (n == 2).then_some(())
    });
    // The control plane commands both, directly and durably.
    let (ok, v) = control(&["get"]);
    assert!(ok, "{v}");
    assert_eq!(v["replies"].as_array().unwrap().len(), 2, "{v}");
    let spec = write_spec(tmp.path(), &sleep_spec("ctl", 0.1, "16Mi"));
    let (ok, v) = control(&[
        "create",
        "-f",
        &spec,
        "--nodes",
        "node-b",
        "--durable",
        "--timeout",
        "10s",
    ]);
    assert!(ok, "{v}");
    assert_eq!(v["commands"][0]["result"]["status"], 202, "{v}");
    assert_eq!(b.http("GET", "/v1/objects/ctl", None).0, 200);

    // node-a's credentials: no request to node-b gets through, and no durable command.
    let rt = rt();
    let as_a = client_as(
        &rt,
        &url,
        BusAuth {
            user: Some("node-a".into()),
            password_file: Some(a_pw.clone()),
            inbox_prefix: Some("_INBOX_node-a".into()),
            ..Default::default()
        },
    );
    let r = rt.block_on(as_a.request(
        "node-b",
        Op::Delete,
        &Request {
            key: Some("ctl".into()),
            ..Default::default()
        },
        Duration::from_secs(1),
    ));
    assert!(r.is_err(), "node-a's credentials reached node-b: {r:?}");
    let r = rt.block_on(as_a.send_durable(
        &["node-b".to_string()],
        Op::Delete,
        &Request {
            key: Some("ctl".into()),
            ..Default::default()
        },
    ));
    assert!(
        r.is_err(),
        "node-a's credentials queued a command for node-b: {r:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (s, o) = b.http("GET", "/v1/objects/ctl", None);
    assert_eq!(s, 200, "node-b's object is untouched: {o}");
    assert_eq!(o["status"], "running", "{o}");
    let log = nats.log();
    for subject in [
        "nodeagent-bus.v1.node.node-b.delete",
        "nodeagent-bus.v1.durable.node-b.delete",
    ] {
        assert!(
            log.lines().any(|l| l.contains("Publish Violation")
                && l.contains("User \"node-a\"")
                && l.contains(subject)),
            "the server refused node-a's publish on {subject}: {log}"
        );
    }
    // The nodes themselves worked within their permissions: no violation of theirs.
    assert!(
        !log.lines()
            .any(|l| l.contains("Violation") && l.contains("nodeagent node-")),
        "an agent needed more than the example grants: {log}"
    );
    drop(a);
}

/// Bridging: an edge network that cannot reach the hub except through a NATS leaf node. The
/// hub is a 3-server JetStream cluster in one network namespace; the edge namespace holds the
/// leaf node and an agent, and reaches the hub only over a veth link to the hub's leaf-node
/// port. The control plane in the hub commands the edge node, directly and durably, and goes
/// on doing so after one hub server is killed.
#[test]
fn a_leaf_node_bridges_an_edge_network_to_the_hub_cluster() {
    use common::netns::NetNs;
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    let sfx = &random_suffix()[..8];
    let hub = NetNs::create(&format!("na-hub-{sfx}"));
    let edge = NetNs::create(&format!("na-edge-{sfx}"));
    hub.link("10.77.0.1/30", &edge, "10.77.0.2/30");

    let g = hub.enter();
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|p| format!("\"nats-route://127.0.0.1:{}\"", p.1))
        .collect();
    let mut servers: Vec<NatsServer> = ports
        .iter()
        .enumerate()
        .map(|(i, (c, r, l))| {
            let conf = format!(
                "server_name: hub-{i}\njetstream {{ domain: hub }}\ncluster {{ name: hub, listen: \"127.0.0.1:{r}\", routes: [{}] }}\nleafnodes {{ listen: \"10.77.0.1:{l}\" }}\n",
                routes.join(", ")
            );
            NatsServer::with_config(*c, &tmp.path().join(format!("hub{i}")), Some(&conf))
        })
        .collect();
    let hub_urls: Vec<String> = ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{}", p.0))
        .collect();
    let hub_list = hub_urls.join(",");
    // Once the cluster has elected its JetStream leader, the control plane makes the buckets and
    // the stream with three replicas, so that they survive the loss of a server.
    eventually(Duration::from_secs(30), "the JetStream cluster", || {
        fleet(&hub_list, &["init", "--replicas", "3"])
            .status
            .success()
            .then_some(())
    });
    let h = agent_with(
        &hub_urls.join("\", \""),
        "node-h",
        "site = \"hub\"",
        &tmp.path().join("node-h"),
        "replicas = 3",
        &[],
    );
    drop(g);

    let g = edge.enter();
    let leaf_port = free_port();
    let remotes: Vec<String> = ports
        .iter()
        .map(|p| format!("\"nats-leaf://10.77.0.1:{}\"", p.2))
        .collect();
    // No JetStream of its own: its clients' JetStream requests go to the hub's.
    let _leaf = NatsServer::custom(
        leaf_port,
        &tmp.path().join("leaf"),
        Some(&format!(
            "leafnodes {{ remotes: [ {{ urls: [{}] }} ] }}\n",
            remotes.join(", ")
        )),
        false,
    );
    assert!(
        std::net::TcpStream::connect(("10.77.0.1", ports[0].0)).is_err(),
        "the edge must not reach the hub's client port"
    );
    let e = agent_with(
        &format!("nats://127.0.0.1:{leaf_port}"),
        "node-e",
        "site = \"edge\"",
        &tmp.path().join("node-e"),
        "replicas = 3\njetstream_domain = \"hub\"",
        &[],
    );
    drop(g);

    let g = hub.enter();
    wait_up(&hub_list, &["node-h", "node-e"]);
    let (ok, v) = fleet_json(&hub_list, &["get"]);
    assert!(ok, "{v}");
    let nodes: Vec<&str> = v["replies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["node"].as_str())
        .collect();
    assert_eq!(nodes, ["node-e", "node-h"], "{v}");
    let spec = write_spec(tmp.path(), &sleep_spec("edge-job", 0.1, "16Mi"));
    let (ok, v) = fleet_json(
        &hub_list,
        &[
            "create",
            "-f",
            &spec,
            "--selector",
            "site=edge",
            "--durable",
            "--timeout",
            "10s",
        ],
    );
    assert!(ok, "{v}");
    assert_eq!(v["commands"][0]["node"], "node-e", "{v}");
    assert_eq!(v["commands"][0]["result"]["status"], 202, "{v}");

    // One hub server goes away; the fleet is still reachable, and durable commands still land.
    servers[1].stop();
    // Agents connected to the lost server fail over to another (with backoff).
    eventually(Duration::from_secs(20), "both nodes answering", || {
        let (ok, v) = fleet_json(&hub_list, &["get"]);
        (ok && v["replies"].as_array().is_some_and(|r| r.len() == 2)).then_some(())
    });
    let (ok, v) = fleet_json(
        &hub_list,
        &[
            "update",
            "edge-job",
            "--cpu",
            "0.2",
            "--nodes",
            "node-e",
            "--durable",
            "--timeout",
            "15s",
        ],
    );
    assert!(ok, "{v}");
    assert_eq!(v["commands"][0]["result"]["status"], 200, "{v}");
    drop(g);

    let _g = edge.enter();
    let (s, o) = e.http("GET", "/v1/objects/edge-job", None);
    assert_eq!(s, 200, "{o}");
    assert_eq!(o["spec"]["resources"]["cpu"], 0.2, "{o}");
    drop(h);
}

/// A bus whose server is away holds up neither the start nor the stop of the agent.
#[test]
fn an_absent_server_holds_up_neither_start_nor_stop() {
    require_cgroup_v1();
    let tmp = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let url = format!("nats://127.0.0.1:{}", free_port());
    let mut a = agent(&url, "node-x", "", tmp.path());
    let (s, b) = a.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("x", 0.1, "16Mi")),
    );
    assert_eq!(s, 201, "{b}");
    std::thread::sleep(Duration::from_millis(700));
    let t = std::time::Instant::now();
    let st = a.stop();
    assert!(st.success(), "exit {st:?}; log:\n{}", a.log());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stopping took {:?}",
        t.elapsed()
    );
}
