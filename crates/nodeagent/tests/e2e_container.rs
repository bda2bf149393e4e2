//! Containers through the real Docker Engine (issue 3), against the real binary: the engine
//! `scripts/test.sh` starts (`dockerd`, API 1.41 from Debian's docker.io) and the local image
//! `busybox:local` it builds. Without them every test here fails with a message saying what to
//! install or run; none is skipped.
//!
//! Every container a test makes carries the label `test=nodeagent-e2e` and a name starting
//! `nae2e-`, and is removed when the test ends, pass or fail.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    cores, docker, eventually, random_suffix, read_trim, require_cgroup_v1, require_docker,
    samples, Daemon, Opts,
};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TEST_IMAGE as IMAGE;

/// A daemon for these tests: the default Docker socket, and a 1 s stop grace so that deleting
/// a `sleep` (which ignores SIGTERM as pid 1) takes 1 s, not 5.
fn daemon() -> Daemon {
    Daemon::start_with(Opts {
        args: vec!["--stop-grace".into(), "1s".into()],
        ..Opts::default()
    })
}

/// `docker inspect --format F X`, trimmed; None when there is no such container.
fn inspect(what: &str, format: &str) -> Option<String> {
    let o = docker(&["inspect", "--type", "container", "--format", format, what]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Whether `docker ps -a` lists a container named `name`.
fn exists(name: &str) -> bool {
    let o = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=^/{name}$"),
        "--format",
        "{{.Names}}",
    ]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .any(|l| l.trim() == name)
}

/// A unique container name; its container is removed when the guard drops.
struct Name(String);

impl Name {
    fn new(what: &str) -> Name {
        Name(format!("nae2e-{what}-{}", random_suffix()))
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

fn spec(name: &str, command: &[&str], resources: Value) -> Value {
    json!({
        "name": name,
        "kind": "container",
        "labels": {"test": "nodeagent-e2e"},
        "container": {"image": IMAGE, "command": command},
        "resources": resources,
        "collect": {"interval": "100ms"},
    })
}

const SLEEP: &[&str] = &["sleep", "300"];
const BUSY: &[&str] = &["sh", "-c", "while :; do :; done"];

/// Creates with `?wait=true` and returns the running object.
fn create(d: &Daemon, body: &Value) -> Value {
    let (status, obj) = d.http("POST", "/v1/objects?wait=true", Some(body));
    assert_eq!(status, 201, "create: {obj}\n{}", d.log());
    assert_eq!(obj["status"], "running", "{obj}");
    obj
}

/// The directory of a v1 controller's cgroup of the process `pid`.
fn cg(pid: u64, controller: &str) -> PathBuf {
    common::cgroup_dir(pid as u32, controller)
}

fn get(d: &Daemon, key: &str) -> Value {
    let (status, obj) = d.http("GET", &format!("/v1/objects/{key}"), None);
    assert_eq!(status, 200, "{obj}");
    obj
}

/// Waits until the object's Docker sync is done, and returns the object.
fn in_sync(d: &Daemon, key: &str) -> Value {
    eventually(Duration::from_secs(10), "container.sync = in_sync", || {
        let o = get(d, key);
        match o["container"]["sync"].as_str() {
            Some("in_sync") => Some(o),
            Some("failed") => panic!("sync failed: {o}"),
            _ => None,
        }
    })
}

fn events_of(d: &Daemon, id: &str) -> Vec<Value> {
    let (status, ev) = d.http("GET", "/v1/events", None);
    assert_eq!(status, 200);
    ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["object_id"] == id)
        .cloned()
        .collect()
}

fn wait_event(d: &Daemon, id: &str, kind: &str) -> Value {
    eventually(Duration::from_secs(15), &format!("a {kind} event"), || {
        events_of(d, id).into_iter().find(|e| e["kind"] == kind)
    })
}

/// The acceptance check of issue 3, step by step.
#[test]
fn acceptance_create_update_sample_delete() {
    require_docker();
    let d = daemon();
    let name = Name::new("accept");

    // (1) A busy loop limited to 0.5 CPU: quota 50000 in its cgroup.
    let obj = create(
        &d,
        &spec(&name, BUSY, json!({"cpu": 0.5, "memory": "64Mi"})),
    );
    let id = obj["id"].as_str().unwrap().to_string();
    let cid = obj["container"]["id"].as_str().unwrap().to_string();
    assert_eq!(cid.len(), 64, "{obj}");
    assert_eq!(obj["container"]["adopted"], false);
    assert_eq!(obj["container"]["sync"], "in_sync");
    let pid = obj["pid"].as_u64().unwrap();
    let cpu = cg(pid, "cpu");
    assert!(cpu.to_string_lossy().contains(&cid), "{}", cpu.display());
    assert_eq!(obj["cgroup"], format!("/docker/{cid}"));
    assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(
        read_trim(&cg(pid, "memory").join("memory.limit_in_bytes")),
        "67108864"
    );
    // Labelled with the object's id and name.
    assert_eq!(
        inspect(&name, "{{index .Config.Labels \"nodeagent.id\"}}").unwrap(),
        id
    );
    assert_eq!(
        inspect(&name, "{{index .Config.Labels \"nodeagent.name\"}}").unwrap(),
        name.0
    );

    // (4) Sampled from the cgroup files at 0.4-0.6 cores.
    std::thread::sleep(Duration::from_millis(2500));
    let s = samples(&d, &id);
    let c = cores(&s, Duration::from_secs(2));
    assert!(
        (0.4..=0.6).contains(&c),
        "busy loop at 0.5 CPU sampled at {c:.3} cores"
    );
    let last = s.last().unwrap();
    assert!(last.memory_bytes.unwrap() > 0, "{last:?}");
    assert_eq!(last.memory_limit_bytes, Some(64 << 20));
    assert!(
        last.cpu_throttled_ns.unwrap() > 0,
        "a busy loop at 0.5 CPU is throttled"
    );
    assert!(last.pids.unwrap() >= 1, "{last:?}");
    // The container has its own network namespace: counters from /proc/<pid>/net/dev.
    assert!(
        last.net_rx_bytes.is_some() && last.net_tx_bytes.is_some(),
        "{last:?}"
    );

    // (2) PATCH cpu 1.5: the cgroup has it when the call returns.
    let (status, up) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"resources": {"cpu": 1.5}})),
    );
    let patched = Instant::now();
    assert_eq!(status, 200, "{up}");
    assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "150000");
    assert_eq!(up["spec"]["resources"]["cpu"], 1.5);

    // (3) docker inspect agrees within 1 s.
    loop {
        let nano = inspect(&name, "{{.HostConfig.NanoCpus}}").unwrap();
        if nano == "1500000000" {
            break;
        }
        assert!(
            patched.elapsed() < Duration::from_secs(1),
            "NanoCpus is {nano} {:?} after the PATCH",
            patched.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = in_sync(&d, &id);
    assert!(o["container"].get("sync_message").is_none(), "{o}");

    // (5) Delete: gone from `docker ps -a`, and so are its collection and report tasks.
    let (status, del) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(status, 200, "{del}");
    assert_eq!(del["status"], "deleted");
    assert!(!exists(&name), "{} is still in docker ps -a", name.0);
    let (status, _) = d.http("GET", &format!("/v1/objects/{id}"), None);
    assert_eq!(status, 404);
    let (_, m) = d.http("GET", &format!("/v1/objects/{id}/metrics"), None);
    assert_eq!(m["error"]["code"], "not_found", "{m}");
    assert!(!d.get_text("/metrics").1.contains(&id));
    assert!(!cpu.exists(), "the cgroup {} is still there", cpu.display());
}

/// A missing image (without `pull`, or with a pull that fails) is a clear error, and leaves
/// nothing behind: no container, no object, the name free.
#[test]
fn missing_image_is_refused_and_leaves_nothing() {
    require_docker();
    let d = daemon();
    let name = Name::new("noimg");
    let missing = format!("nodeagent-missing-{}:none", random_suffix());
    let mut body = spec(&name, SLEEP, json!({}));
    body["container"]["image"] = json!(missing);

    for path in ["/v1/objects", "/v1/objects?wait=true"] {
        let (status, err) = d.http("POST", path, Some(&body));
        assert_eq!(status, 400, "{path}: {err}");
        assert_eq!(err["error"]["field"], "container.image", "{err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&missing) && msg.contains("pull"), "{msg}");
    }
    // With a pull that cannot succeed (no registry is reachable here) and a caller who waits.
    body["container"]["pull"] = json!(true);
    let (status, err) = d.http("POST", "/v1/objects?wait=true", Some(&body));
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "container.image", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pulling it failed"),
        "{err}"
    );
    let (status, _) = d.http("GET", &format!("/v1/objects/{}", name.0), None);
    assert_eq!(status, 404);
    assert!(!exists(&name));
    let o = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=nodeagent.name={}", name.0),
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).trim().is_empty());

    // The name is free: the same name with an image that exists runs.
    let obj = create(&d, &spec(&name, SLEEP, json!({})));
    let (status, _) = d.http(
        "DELETE",
        &format!("/v1/objects/{}?wait=true", obj["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 200);

    // Without waiting, a pull failure after the 202 leaves a failed object saying why, and
    // no container.
    let (status, acc) = d.http("POST", "/v1/objects", Some(&body));
    assert_eq!(status, 202, "{acc}");
    let id = acc["id"].as_str().unwrap().to_string();
    let failed = eventually(Duration::from_secs(20), "status failed", || {
        let o = get(&d, &id);
        (o["status"] == "failed").then_some(o)
    });
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("pulling it failed"),
        "{failed}"
    );
    wait_event(&d, &id, "failed");
    assert!(!exists(&name));
    let (status, _) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(status, 200);
}

/// Bad container specs are refused with the field named, before anything is created.
#[test]
fn bad_container_specs_name_the_field() {
    require_docker();
    let d = daemon();
    let name = Name::new("bad");
    let cases = [
        (
            json!({"name": name.0, "kind": "container", "container": {}}),
            "container.image",
        ),
        (
            json!({"name": name.0, "kind": "container", "container": {"adopt": "x", "image": IMAGE}}),
            "container.image",
        ),
        (
            json!({"name": name.0, "kind": "container", "container": {"adopt": format!("nae2e-none-{}", random_suffix())}}),
            "container.adopt",
        ),
        (
            json!({"name": "x", "kind": "container", "container": {"image": IMAGE}}),
            "name",
        ),
        (
            json!({"name": name.0, "kind": "container", "container": {"image": IMAGE, "command": ["/no/such/program"]}}),
            "container.command",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = d.http("POST", "/v1/objects?wait=true", Some(&body));
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    assert!(!exists(&name), "a refused create left a container");
    // A name Docker already has is taken.
    let other = Name::new("taken");
    assert!(docker(&[
        "create",
        "--name",
        &other,
        "--label",
        "test=nodeagent-e2e",
        IMAGE
    ])
    .status
    .success());
    let (status, err) = d.http("POST", "/v1/objects", Some(&spec(&other, SLEEP, json!({}))));
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["field"], "name");
}

/// Every control field takes the fast path (in the cgroup when the call returns), and Docker's
/// stored config follows.
#[test]
fn every_limit_fast_path_then_docker() {
    require_docker();
    let d = daemon();
    let name = Name::new("limits");
    let obj = create(&d, &spec(&name, SLEEP, json!({"memory": "64Mi"})));
    let id = obj["id"].as_str().unwrap().to_string();
    let pid = obj["pid"].as_u64().unwrap();

    let (status, up) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(
            &json!({"resources": {"memory": "96Mi", "pids": 77, "cpuset": "0", "cpu_weight": 50}}),
        ),
    );
    assert_eq!(status, 200, "{up}");
    assert_eq!(
        read_trim(&cg(pid, "memory").join("memory.limit_in_bytes")),
        "100663296"
    );
    assert_eq!(read_trim(&cg(pid, "pids").join("pids.max")), "77");
    assert_eq!(read_trim(&cg(pid, "cpuset").join("cpuset.cpus")), "0");
    assert_eq!(read_trim(&cg(pid, "cpu").join("cpu.shares")), "512");
    in_sync(&d, &id);
    assert_eq!(
        inspect(&name, "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.CpusetCpus}} {{.HostConfig.CpuShares}}").unwrap(),
        "100663296 77 0 512"
    );

    // Paused: frozen when the call returns; Docker agrees afterwards; still frozen then.
    let freezer = cg(pid, "freezer").join("freezer.state");
    let (status, up) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"paused": true})),
    );
    assert_eq!(status, 200, "{up}");
    assert_eq!(up["status"], "paused");
    assert_eq!(read_trim(&freezer), "FROZEN");
    in_sync(&d, &id);
    assert_eq!(inspect(&name, "{{.State.Paused}}").unwrap(), "true");
    assert_eq!(read_trim(&freezer), "FROZEN");
    assert_eq!(get(&d, &id)["status"], "paused");

    let (status, up) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"paused": false})),
    );
    assert_eq!(status, 200, "{up}");
    assert_eq!(read_trim(&freezer), "THAWED");
    in_sync(&d, &id);
    assert_eq!(inspect(&name, "{{.State.Paused}}").unwrap(), "false");
    assert_eq!(read_trim(&freezer), "THAWED");
    assert_eq!(get(&d, &id)["status"], "running");

    // A burst of PATCHes while syncs are in flight: the cgroup has each value at once (a PATCH
    // that meets a sync waits for it, or Docker's update could write its older value after the
    // answer), and Docker ends with the last. The pauses let syncs start mid-burst.
    for i in 1..=20u64 {
        if i % 3 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(8));
        }
        let cpu = 0.1 * i as f64;
        let (status, _) = d.http(
            "PATCH",
            &format!("/v1/objects/{id}"),
            Some(&json!({"resources": {"cpu": cpu}})),
        );
        assert_eq!(status, 200);
        assert_eq!(
            read_trim(&cg(pid, "cpu").join("cpu.cfs_quota_us")),
            format!("{}", 10_000 * i)
        );
    }
    in_sync(&d, &id);
    assert_eq!(
        inspect(&name, "{{.HostConfig.NanoCpus}}").unwrap(),
        "2000000000"
    );

    // Bad values are refused with the field named, and change nothing.
    let (status, err) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"resources": {"cpuset": "63"}})),
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "resources.cpuset");
    let (status, _) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(status, 200);
    assert!(!exists(&name));
}

/// Exits (with the code), OOM kills and removal behind the agent's back reach the object and
/// `/v1/events`.
#[test]
fn lifecycle_events_from_docker() {
    require_docker();
    let d = daemon();

    // Exit with a code.
    let quitter = Name::new("exit");
    let obj = create(
        &d,
        &spec(&quitter, &["sh", "-c", "sleep 1; exit 7"], json!({})),
    );
    let id = obj["id"].as_str().unwrap().to_string();
    let exited = eventually(Duration::from_secs(15), "status exited", || {
        let o = get(&d, &id);
        (o["status"] == "exited").then_some(o)
    });
    assert_eq!(exited["exit_code"], 7, "{exited}");
    let ev = wait_event(&d, &id, "exited");
    assert_eq!(ev["data"]["exit_code"], 7, "{ev}");

    // An OOM kill inside a container that keeps running.
    let oom = Name::new("oom");
    let obj = create(
        &d,
        &spec(
            &oom,
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 300",
            ],
            json!({"memory": "8Mi"}),
        ),
    );
    let oid = obj["id"].as_str().unwrap().to_string();
    let ev = wait_event(&d, &oid, "oom_killed");
    assert!(
        ev["message"].as_str().unwrap().contains("out of memory"),
        "{ev}"
    );
    let s = eventually(Duration::from_secs(5), "a sample with oom_kills", || {
        samples(&d, &oid)
            .into_iter()
            .rev()
            .find(|s| s.oom_kills.unwrap_or(0) >= 1)
    });
    assert!(s.oom_kills.unwrap() >= 1);
    assert_eq!(get(&d, &oid)["status"], "running");

    // Removed behind the agent's back.
    assert!(docker(&["rm", "-f", &oom]).status.success());
    let lost = eventually(Duration::from_secs(15), "status lost", || {
        let o = get(&d, &oid);
        (o["status"] == "lost").then_some(o)
    });
    assert!(
        lost["message"]
            .as_str()
            .unwrap()
            .contains("removed outside the agent"),
        "{lost}"
    );
    wait_event(&d, &oid, "lost");
    // A lost object cannot be updated; it can be deleted.
    let (status, _) = d.http(
        "PATCH",
        &format!("/v1/objects/{oid}"),
        Some(&json!({"resources": {"cpu": 1}})),
    );
    assert_eq!(status, 409);
    for key in [&id, &oid] {
        let (status, _) = d.http("DELETE", &format!("/v1/objects/{key}?wait=true"), None);
        assert_eq!(status, 200);
    }
    assert!(!exists(&quitter));
}

/// A limit set through the agent survives `docker restart`, and sampling follows the new
/// init process.
#[test]
fn limits_survive_a_docker_restart() {
    require_docker();
    let d = daemon();
    let name = Name::new("restart");
    let obj = create(&d, &spec(&name, SLEEP, json!({"cpu": 0.5})));
    let id = obj["id"].as_str().unwrap().to_string();
    let pid = obj["pid"].as_u64().unwrap();
    let (status, _) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"resources": {"cpu": 1.5, "pids": 64}})),
    );
    assert_eq!(status, 200);
    in_sync(&d, &id);
    assert!(docker(&["restart", "-t", "1", &name]).status.success());
    let o = eventually(Duration::from_secs(20), "running with a new pid", || {
        let o = get(&d, &id);
        (o["status"] == "running" && o["pid"].as_u64().is_some_and(|p| p != pid)).then_some(o)
    });
    assert!(o["restarts"].as_u64().unwrap() >= 1, "{o}");
    let new_pid = o["pid"].as_u64().unwrap();
    assert_eq!(
        read_trim(&cg(new_pid, "cpu").join("cpu.cfs_quota_us")),
        "150000"
    );
    assert_eq!(read_trim(&cg(new_pid, "pids").join("pids.max")), "64");
    wait_event(&d, &id, "restarted");
    // Samples keep coming from the new cgroup.
    let before = samples(&d, &id).last().map(|s| s.seq).unwrap_or(0);
    eventually(Duration::from_secs(5), "new samples", || {
        samples(&d, &id)
            .last()
            .filter(|s| s.seq > before + 3)
            .map(|_| ())
    });
    let (status, _) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(status, 200);
    assert!(!exists(&name));
}

/// Adopt a container the agent did not create; delete releases it (it keeps running) unless
/// the delete asks to remove it.
#[test]
fn adopt_release_and_remove() {
    require_docker();
    let d = daemon();
    let name = Name::new("adopt");
    let run = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "test=nodeagent-e2e",
        "--cpu-quota",
        "20000",
        IMAGE,
        "sleep",
        "300",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let cid = String::from_utf8_lossy(&run.stdout).trim().to_string();
    let obj_name = format!("{}-obj", name.0);
    let body = json!({
        "name": obj_name,
        "kind": "container",
        "container": {"adopt": name.0},
        "resources": {"cpu": 0.3},
        "collect": {"interval": "100ms"},
    });
    let obj = create(&d, &body);
    let id = obj["id"].as_str().unwrap().to_string();
    assert_eq!(obj["container"]["id"], cid);
    assert_eq!(obj["container"]["adopted"], true);
    let pid = obj["pid"].as_u64().unwrap();
    assert_eq!(read_trim(&cg(pid, "cpu").join("cpu.cfs_quota_us")), "30000");
    // Created with --cpu-quota, so Docker's CpuQuota is what the sync updates (Docker refuses
    // NanoCpus on such a container).
    in_sync(&d, &id);
    assert_eq!(
        inspect(&name, "{{.HostConfig.CpuQuota}} {{.HostConfig.NanoCpus}}").unwrap(),
        "30000 0"
    );
    eventually(Duration::from_secs(5), "samples", || {
        (samples(&d, &id).len() >= 2).then_some(())
    });
    // Adopting it twice is refused.
    let mut again = body.clone();
    again["name"] = json!(format!("{}-2", obj_name));
    let (status, err) = d.http("POST", "/v1/objects?wait=true", Some(&again));
    assert_eq!(status, 409, "{err}");
    // `get` shows the container column.
    let out = d.cli(&["get"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().next().unwrap().contains("CONTAINER"),
        "{table}"
    );
    assert!(table.contains(&cid[..12]), "{table}");

    // Release: the object goes, the container keeps running.
    let (status, del) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(status, 200, "{del}");
    assert_eq!(inspect(&name, "{{.State.Running}}").unwrap(), "true");
    // `remove` is for containers only.
    let (status, p) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&common::sleep_spec(&format!("{}-p", name.0), 0.5, "64Mi")),
    );
    assert_eq!(status, 201, "{p}");
    let (status, err) = d.http(
        "DELETE",
        &format!("/v1/objects/{}?remove=true", p["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "remove");
    let (status, _) = d.http(
        "DELETE",
        &format!("/v1/objects/{}?wait=true", p["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 200);

    // Adopt again, by id, and delete with the CLI's --remove: stopped and removed.
    let mut by_id = body.clone();
    by_id["container"]["adopt"] = json!(cid);
    let obj = create(&d, &by_id);
    let out = d.cli(&["delete", obj["id"].as_str().unwrap(), "--wait", "--remove"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!exists(&name), "{} survived delete --remove", name.0);
}

/// Without an engine the container kind answers 503 saying so, and the other kinds work.
#[test]
fn without_docker_containers_are_503_and_processes_work() {
    require_cgroup_v1();
    let d = Daemon::start_with(Opts {
        args: vec![
            "--docker-socket".into(),
            "/nonexistent/nodeagent-test/docker.sock".into(),
        ],
        ..Opts::default()
    });
    let name = Name::new("nodocker");
    for path in ["/v1/objects", "/v1/objects?wait=true"] {
        let (status, err) = d.http("POST", path, Some(&spec(&name, SLEEP, json!({}))));
        assert_eq!(status, 503, "{err}");
        assert_eq!(err["error"]["code"], "unavailable");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(
                "docker engine not reachable at unix:///nonexistent/nodeagent-test/docker.sock"
            ),
            "{msg}"
        );
    }
    let (status, _) = d.http("GET", &format!("/v1/objects/{}", name.0), None);
    assert_eq!(status, 404, "a refused create left an object");
    let (status, p) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&common::sleep_spec(&format!("{}-p", name.0), 0.5, "64Mi")),
    );
    assert_eq!(status, 201, "{p}");
    let (status, _) = d.http(
        "DELETE",
        &format!("/v1/objects/{}?wait=true", p["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 200);
    assert!(
        d.log().contains("docker engine not reachable"),
        "the log should say why: {}",
        d.log()
    );
}

/// The same over gRPC: the container section in, the container status out, and `remove`.
#[test]
fn grpc_container_create_adopt_remove() {
    use nodeagent_api::proto;
    require_docker();
    let d = daemon();
    let name = Name::new("grpc");
    let adoptee = Name::new("grpc-adoptee");
    let run = docker(&[
        "run",
        "-d",
        "--name",
        &adoptee,
        "--label",
        "test=nodeagent-e2e",
        IMAGE,
        "sleep",
        "300",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = common::grpc_client(d.port).await;
        let spec = proto::ObjectSpec {
            name: name.0.clone(),
            kind: "container".into(),
            container: Some(proto::ContainerSpec {
                image: IMAGE.into(),
                command: vec!["sleep".into(), "300".into()],
                ..Default::default()
            }),
            resources: Some(proto::Resources {
                cpu: Some(0.5),
                ..Default::default()
            }),
            ..Default::default()
        };
        let obj = c
            .create(proto::CreateRequest {
                spec: Some(spec),
                wait: true,
            })
            .await
            .unwrap()
            .into_inner()
            .object
            .unwrap();
        assert_eq!(obj.status, "running");
        let st = obj.container.expect("container status");
        assert_eq!(st.id.len(), 64);
        assert_eq!(st.sync, "in_sync");
        assert_eq!(
            obj.spec.unwrap().container.unwrap().network.as_deref(),
            Some("bridge")
        );
        let quota = cg(obj.pid.unwrap() as u64, "cpu").join("cpu.cfs_quota_us");
        assert_eq!(read_trim(&quota), "50000");

        let adopted = c
            .create(proto::CreateRequest {
                spec: Some(proto::ObjectSpec {
                    name: format!("{}-obj", adoptee.0),
                    kind: "container".into(),
                    container: Some(proto::ContainerSpec {
                        adopt: Some(adoptee.0.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                wait: true,
            })
            .await
            .unwrap()
            .into_inner()
            .object
            .unwrap();
        assert!(adopted.container.unwrap().adopted);
        for (key, remove) in [(obj.id.clone(), false), (adopted.id.clone(), true)] {
            c.delete(proto::DeleteRequest {
                key,
                wait: true,
                remove,
            })
            .await
            .unwrap();
        }
    });
    assert!(!exists(&name));
    assert!(
        !exists(&adoptee),
        "remove=true over gRPC left the adopted container"
    );
}
