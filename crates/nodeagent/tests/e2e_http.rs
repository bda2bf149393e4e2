//! Acceptance over HTTP against the real binary, the real kernel's cgroup v1 files and real
//! processes (DESIGN.md §4 and §5).

#![allow(clippy::unwrap_used)]

mod common;

use common::{cgroup_dir, eventually, read_trim, require_cgroup_v1, sleep_spec, Daemon};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

/// Create → cgroup files hold the limits → update in place → push-once → /metrics → delete.
#[test]
fn acceptance_process_lifecycle() {
    require_cgroup_v1();
    let d = Daemon::start();

    let (status, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("accept-1", 0.5, "64Mi")),
    );
    assert_eq!(status, 201, "create: {obj}");
    assert_eq!(obj["status"], "running", "{obj}");
    assert_eq!(obj["name"], "accept-1");
    assert_eq!(obj["kind"], "process");
    let id = obj["id"].as_str().unwrap().to_string();
    let pid = obj["pid"].as_u64().expect("a running process has a pid") as u32;
    assert!(obj["created_at"].is_string(), "{obj}");

    // The limits are in the kernel's files, in the agent's own subtree.
    let cpu = cgroup_dir(pid, "cpu");
    let mem = cgroup_dir(pid, "memory");
    let parent = d.cgroup_parent.trim_start_matches('/');
    assert!(
        cpu.to_string_lossy().contains(parent),
        "{} is not under {}",
        cpu.display(),
        d.cgroup_parent
    );
    assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read_trim(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read_trim(&mem.join("memory.limit_in_bytes")), "67108864");

    // GET by id and by name.
    let (status, got) = d.http("GET", &format!("/v1/objects/{id}"), None);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["pid"].as_u64(), Some(pid as u64));
    let (status, got) = d.http("GET", "/v1/objects/accept-1", None);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["id"], id.as_str());
    let (status, list) = d.http("GET", "/v1/objects", None);
    assert_eq!(status, 200);
    let names: Vec<&str> = list["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert!(names.contains(&"accept-1"), "{list}");

    // In-place update: the file has the new quota when the call returns.
    let (status, upd) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}?wait=true"),
        Some(&json!({"resources": {"cpu": 0.25}})),
    );
    assert_eq!(status, 200, "update: {upd}");
    assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "25000");
    assert_eq!(
        read_trim(&mem.join("memory.limit_in_bytes")),
        "67108864",
        "an update of cpu alone must leave memory as it was"
    );
    assert_eq!(upd["spec"]["resources"]["cpu"], json!(0.25), "{upd}");

    // Push-once to the built-in file sink appends a line naming the object.
    let reports = d.state_dir.join("reports.jsonl");
    let ack = eventually(Duration::from_secs(10), "a sample to push", || {
        let (status, ack) = d.http(
            "POST",
            &format!("/v1/objects/{id}/push-once"),
            Some(&json!({"sink": "file"})),
        );
        (status == 200).then_some(ack)
    });
    assert_eq!(ack["status"], "sent", "{ack}");
    eventually(
        Duration::from_secs(10),
        "the pushed line in reports.jsonl",
        || {
            let text = std::fs::read_to_string(&reports).unwrap_or_default();
            text.lines()
                .any(|l| l.contains(&id) && serde_json::from_str::<Value>(l).is_ok())
                .then_some(())
        },
    );

    // Samples are collected and exposed.
    eventually(Duration::from_secs(10), "two samples", || {
        let (_, m) = d.http("GET", &format!("/v1/objects/{id}/metrics"), None);
        (m["samples"].as_array().map_or(0, |a| a.len()) >= 2).then_some(())
    });
    let text = eventually(Duration::from_secs(10), "the object in /metrics", || {
        let (status, text) = d.get_text("/metrics");
        (status == 200 && text.contains(&id)).then_some(text)
    });
    assert!(
        text.contains(&format!("id=\"{id}\"")),
        "no id label:\n{text}"
    );

    // Delete: the process and its cgroups are gone when the call returns.
    let (status, del) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(status, 200, "delete: {del}");
    assert!(
        common::process_gone(pid),
        "pid {pid} is still alive after delete (state {:?})",
        common::proc_state(pid)
    );
    assert!(!cpu.exists(), "{} still exists after delete", cpu.display());
    assert!(!mem.exists(), "{} still exists after delete", mem.display());
}

/// Bad input gets the right status and names the field at fault.
#[test]
fn bad_requests_name_the_field() {
    require_cgroup_v1();
    let d = Daemon::start();

    let mut spec = sleep_spec("bad-1", 0.5, "64Xi");
    let (status, e) = d.http("POST", "/v1/objects", Some(&spec));
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["field"], "resources.memory", "{e}");
    assert_eq!(e["error"]["code"], "invalid_argument", "{e}");

    spec = sleep_spec("bad-1", 0.5, "64Mi");
    spec["bogus_field"] = json!(1);
    let (status, e) = d.http("POST", "/v1/objects", Some(&spec));
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["field"], "bogus_field", "{e}");

    spec = sleep_spec("bad-1", 0.5, "64Mi");
    spec["kind"] = json!("vm2");
    let (status, e) = d.http("POST", "/v1/objects", Some(&spec));
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["field"], "kind", "{e}");

    // A name already taken.
    let (status, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("dup-1", 0.1, "16Mi")),
    );
    assert_eq!(status, 201, "{obj}");
    let (status, e) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("dup-1", 0.1, "16Mi")),
    );
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["error"]["code"], "already_exists", "{e}");

    // Unknown objects.
    for (method, path, body) in [
        ("GET", "/v1/objects/0123456789abcdef", None),
        ("GET", "/v1/objects/no-such-object", None),
        (
            "PATCH",
            "/v1/objects/no-such-object",
            Some(json!({"resources": {"cpu": 0.5}})),
        ),
        ("DELETE", "/v1/objects/no-such-object", None),
        ("GET", "/v1/objects/no-such-object/metrics", None),
    ] {
        let (status, e) = d.http(method, path, body.as_ref());
        assert_eq!(status, 404, "{method} {path}: {e}");
        assert_eq!(e["error"]["code"], "not_found", "{method} {path}: {e}");
    }

    // A bad PATCH names its field too.
    let id = obj["id"].as_str().unwrap();
    let (status, e) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"resources": {"memory": "lots"}})),
    );
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["field"], "resources.memory", "{e}");

    let (status, _) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(status, 200);
}

/// Health, readiness and the host object.
#[test]
fn health_and_host() {
    require_cgroup_v1();
    let d = Daemon::start();
    assert_eq!(d.get_text("/healthz").0, 200);
    assert_eq!(d.get_text("/readyz").0, 200);
    // The agent created its state dir, private to its owner.
    let mode = std::fs::metadata(&d.state_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "state dir mode {mode:o}");
    let (status, host) = d.http("GET", "/v1/host", None);
    assert_eq!(status, 200, "{host}");
    assert_eq!(host["cgroup_version"], "v1", "{host}");
    assert!(host["cpus"].as_u64().unwrap_or(0) >= 1, "{host}");
}

fn jsonl(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Issue 21, items 3 and 4. The file sink and the heartbeat send the latest sample once per
/// interval (a rate); a sink configured with `mode = "batch"` sends every sample, batched by the
/// interval; a push-on may ask a sink for the other mode, and one asking for no known mode is a
/// 400 naming `mode`. Then the `seq` of reports.jsonl goes on across a restart instead of starting at 1.
#[test]
fn report_modes_and_file_seq_across_restarts() {
    require_cgroup_v1();
    let dir = tempfile::tempdir().unwrap();
    let every = dir.path().join("every.jsonl");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[sink]]\nname = \"every\"\ntype = \"file\"\npath = \"{}\"\nmode = \"batch\"\n",
            every.display()
        ),
    )
    .unwrap();
    let args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--heartbeat-interval".into(),
        "2s".into(),
    ];
    let mut d = Daemon::start_with(common::Opts {
        args: args.clone(),
        ..Default::default()
    });
    let reports = d.state_dir.join("reports.jsonl");
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("modes-1", 0.1, "32Mi")),
    );
    assert_eq!(s, 201, "{obj}");
    let push = |body: Value| d.http("POST", "/v1/objects/modes-1/push-on", Some(&body));
    let (s, b) = push(json!({"sink": "file", "interval": "500ms"}));
    assert_eq!((s, b["mode"].as_str()), (200, Some("latest")), "{b}");
    let (s, b) = push(json!({"sink": "every", "interval": "500ms", "mode": "batch"}));
    assert_eq!((s, b["mode"].as_str()), (200, Some("batch")), "{b}");
    let (s, b) = push(json!({"sink": "file", "mode": "often"}));
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("mode")),
        "{b}"
    );

    // The heartbeat's first write (2 s after start, with two or three host samples taken at
    // 1 s) carries one record.
    let host_lines = eventually(Duration::from_secs(10), "a heartbeat line", || {
        let n = jsonl(&reports)
            .iter()
            .filter(|v| v["kind"] == "host")
            .count();
        (n > 0).then_some(n)
    });
    assert_eq!(host_lines, 1, "the heartbeat wrote every host sample");

    let lines = |path: &std::path::Path| -> Vec<Value> {
        jsonl(path)
            .into_iter()
            .filter(|v| v["name"] == "modes-1")
            .collect()
    };
    let (l0, b0) = (lines(&reports).len(), lines(&every).len());
    std::thread::sleep(Duration::from_millis(2000));
    let latest = lines(&reports);
    let batch = lines(&every);
    // 2 s at 500 ms: 4 reports; at 100 ms sampling, about 20 samples.
    let (l, b) = (latest.len() - l0, batch.len() - b0);
    assert!((3..=5).contains(&l), "file sink (latest): {l} lines in 2 s");
    assert!(b >= 14, "batch sink: {b} lines in 2 s");
    let seqs: Vec<u64> = latest
        .iter()
        .map(|v| v["sample"]["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] >= w[0] + 3),
        "latest sends one sample per 500 ms, 5 samples apart: {seqs:?}"
    );

    // A push-on may ask a sink for the other mode: the file sink then gets every sample,
    // and the object remembers the mode (also across the restart below).
    let (s, b) = push(json!({"sink": "file", "interval": "500ms", "mode": "batch"}));
    assert_eq!((s, b["mode"].as_str()), (200, Some("batch")), "{b}");
    let l1 = lines(&reports).len();
    std::thread::sleep(Duration::from_millis(1500));
    let l = lines(&reports).len() - l1;
    assert!(l >= 10, "file sink asked for batch: {l} lines in 1.5 s");
    let (_, o) = d.http("GET", "/v1/objects/modes-1", None);
    assert_eq!(o["push_mode"]["file"], "batch", "{o}");

    // Restart on the same state dir: the file's seq goes on.
    assert!(d.stop().success());
    let before = jsonl(&reports).len();
    let d2 = Daemon::start_with(common::Opts {
        args,
        state_dir: Some(d.state_dir.clone()),
        cgroup_parent: Some(d.cgroup_parent.clone()),
        ..Default::default()
    });
    eventually(Duration::from_secs(10), "reports after the restart", || {
        (jsonl(&reports).len() >= before + 2).then_some(())
    });
    let all: Vec<u64> = jsonl(&reports)
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert!(
        all.windows(2).all(|w| w[1] == w[0] + 1),
        "seq restarted or jumped: {all:?}"
    );
    assert_eq!(all[0], 1);
    drop(d2);
}
