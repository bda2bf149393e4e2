//! Restarts (issue 5): the durable store, re-adoption after `kill -9`, graceful shutdown, the
//! event log across restarts, `request_id`, and a corrupt store. Real binary, real cgroups, real
//! Docker Engine (the container part needs dockerd and `busybox:local`, as e2e_container).

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    cgroup_dir, docker, eventually, read_trim, require_cgroup_v1, require_docker, sleep_spec,
    Daemon, Opts,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// A second daemon on the same state dir and cgroup parent as `d` (which must be stopped).
fn restart(d: &Daemon, args: &[&str]) -> Daemon {
    Daemon::start_with(Opts {
        state_dir: Some(d.state_dir.clone()),
        cgroup_parent: Some(d.cgroup_parent.clone()),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Opts::default()
    })
}

fn objects(d: &Daemon) -> BTreeMap<String, Value> {
    let (s, b) = d.http("GET", "/v1/objects", None);
    assert_eq!(s, 200, "{b}");
    b["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] != "host")
        .map(|o| (o["name"].as_str().unwrap().to_string(), o.clone()))
        .collect()
}

fn events(d: &Daemon, since: u64) -> Vec<Value> {
    let (s, b) = d.http("GET", &format!("/v1/events?since={since}"), None);
    assert_eq!(s, 200, "{b}");
    b["events"].as_array().unwrap().clone()
}

fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// (object id, sample seq) of every line of the file sink.
fn report_lines(path: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] != "host")
        .map(|v| {
            (
                v["id"].as_str().unwrap_or_default().to_string(),
                v["sample"]["seq"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Removes the test's containers (by label) when dropped.
struct Containers(String);
impl Drop for Containers {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=e2e-run={}", self.0),
        ]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

/// The acceptance check of issue 5: 20 processes and 5 containers reporting to the file sink
/// survive a `kill -9` of the agent with the same ids, pids and container ids, and nothing
/// twice; sampling resumes within 2 s; a process killed while the agent is down is `exited`
/// with an event; SIGTERM then stops the agent within 2 s with every sample in the file.
#[test]
fn kill9_restart_readopts_everything() {
    require_docker();
    let run = common::random_suffix();
    let _cleanup = Containers(run.clone());
    let mut d = Daemon::start_with(Opts {
        args: vec!["--stop-grace".into(), "1s".into()],
        ..Opts::default()
    });
    for i in 0..21 {
        let (s, b) = d.http(
            "POST",
            "/v1/objects?wait=true",
            Some(&sleep_spec(&format!("p{i}"), 0.2, "32Mi")),
        );
        assert_eq!(s, 201, "{b}");
    }
    for i in 0..5 {
        let spec = json!({
            "name": format!("c{i}"),
            "kind": "container",
            "labels": {"e2e-run": run},
            "container": {"image": "busybox:local", "command": ["sleep", "300"]},
            "collect": {"interval": "100ms"},
        });
        let (s, b) = d.http("POST", "/v1/objects?wait=true", Some(&spec));
        assert_eq!(s, 201, "{b}");
    }
    for name in objects(&d).keys() {
        let (s, b) = d.http(
            "POST",
            &format!("/v1/objects/{name}/push-on"),
            Some(&json!({"sink": "file", "interval": "100ms"})),
        );
        assert_eq!(s, 200, "{b}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = objects(&d);
    assert_eq!(before.len(), 26);
    let seq_before = events(&d, 0).last().unwrap()["seq"].as_u64().unwrap();

    d.kill9();
    // While the agent is down: the workloads run on; one process is killed.
    for (name, o) in &before {
        if o["kind"] == "process" {
            let pid = o["pid"].as_u64().unwrap();
            assert!(pid_alive(pid), "{name} (pid {pid}) died with the agent");
        }
    }
    let victim = before["p20"]["pid"].as_u64().unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    eventually(Duration::from_secs(5), "the victim to die", || {
        (!pid_alive(victim)).then_some(())
    });

    let reports = d.state_dir.join("reports.jsonl");
    let lines_at_restart = report_lines(&reports).len();
    let t0 = Instant::now();
    let mut d2 = restart(&d, &["--stop-grace", "1s"]);
    let ready = t0.elapsed();
    eprintln!("restart with 26 objects: ready after {ready:?}");

    // Same ids, pids and container ids; all running but the victim.
    let after = eventually(Duration::from_secs(5), "containers running again", || {
        let a = objects(&d2);
        a.values()
            .filter(|o| o["kind"] == "container")
            .all(|o| o["status"] == "running")
            .then_some(a)
    });
    assert_eq!(after.len(), 26);
    for (name, o) in &before {
        let a = &after[name];
        assert_eq!(a["id"], o["id"], "{name}");
        if name == "p20" {
            continue;
        }
        assert_eq!(a["status"], "running", "{name}: {a}");
        assert_eq!(a["pid"], o["pid"], "{name}");
        if o["kind"] == "container" {
            assert_eq!(a["container"]["id"], o["container"]["id"], "{name}");
        }
        assert_eq!(a["push"], o["push"], "{name}: push subscriptions resume");
    }
    let v = &after["p20"];
    assert!(
        v["status"] == "exited" || v["status"] == "lost",
        "the victim is {v}"
    );
    let evs = events(&d2, seq_before);
    assert!(
        evs.iter()
            .any(|e| e["name"] == "p20" && (e["kind"] == "exited" || e["kind"] == "lost")),
        "no exited/lost event for the victim: {evs:?}"
    );
    // Sequence numbers continue after the restart.
    assert!(evs.iter().all(|e| e["seq"].as_u64().unwrap() > seq_before));
    assert!(evs.iter().any(|e| e["kind"] == "agent_started"), "{evs:?}");

    // Nothing twice: one process per process cgroup, one container per object.
    for (name, o) in &after {
        if o["kind"] == "process" && name != "p20" {
            let pid = o["pid"].as_u64().unwrap() as u32;
            let procs = read_trim(&cgroup_dir(pid, "pids").join("cgroup.procs"));
            assert_eq!(procs.lines().count(), 1, "{name}: {procs}");
        }
    }
    let ps = docker(&["ps", "-q", "--filter", &format!("label=e2e-run={run}")]);
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout)
            .split_whitespace()
            .count(),
        5
    );

    // Samples resume within 2 s for every live object.
    let live: BTreeSet<String> = after
        .iter()
        .filter(|(n, _)| *n != "p20")
        .map(|(_, o)| o["id"].as_str().unwrap().to_string())
        .collect();
    eventually(Duration::from_secs(2), "samples after the restart", || {
        let seen: BTreeSet<String> = report_lines(&reports)[lines_at_restart..]
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        live.is_subset(&seen).then_some(())
    });
    eprintln!(
        "samples resumed for all objects after {:?}",
        t0.elapsed() - ready
    );

    // SIGTERM: out within 2 s, workloads still running, every sample of this run in the file.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    d2.signal(libc::SIGTERM);
    let st = d2.wait_exit(Duration::from_secs(5));
    let took = t.elapsed();
    assert!(st.is_some(), "no exit after SIGTERM; log:\n{}", d2.log());
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    eprintln!("shutdown took {took:?}");
    for (name, o) in &after {
        if o["kind"] == "process" && name != "p20" {
            assert!(
                pid_alive(o["pid"].as_u64().unwrap()),
                "{name} died at shutdown"
            );
        }
    }
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for (id, seq) in &report_lines(&reports)[lines_at_restart..] {
        if let Some(prev) = last.get(id) {
            assert_eq!(*seq, prev + 1, "a gap in the samples of {id} after {prev}");
        }
        last.insert(id.clone(), *seq);
    }
    assert_eq!(last.len(), live.len());
    drop(d2);
}

/// The same `request_id` twice makes one object; another spec under it is a conflict.
#[test]
fn request_id_is_idempotent_across_restarts() {
    require_cgroup_v1();
    let mut d = Daemon::start();
    let spec = sleep_spec("idem", 0.1, "16Mi");
    let (s1, b1) = d.http("POST", "/v1/objects?request_id=req-1", Some(&spec));
    assert_eq!(s1, 202, "{b1}");
    let (s2, b2) = d.http("POST", "/v1/objects?request_id=req-1", Some(&spec));
    assert!(s2 == 200 || s2 == 202, "{s2} {b2}");
    assert_eq!(b1["id"], b2["id"]);
    let other = sleep_spec("idem-2", 0.1, "16Mi");
    let (s3, b3) = d.http("POST", "/v1/objects?request_id=req-1", Some(&other));
    assert_eq!(s3, 409, "{b3}");
    assert_eq!(b3["error"]["field"], "request_id", "{b3}");
    // After a kill -9 the request is still known.
    d.kill9();
    let d2 = restart(&d, &[]);
    let (s4, b4) = d2.http("POST", "/v1/objects?request_id=req-1", Some(&spec));
    assert!(s4 == 200 || s4 == 202, "{s4} {b4}");
    assert_eq!(b4["id"], b1["id"]);
    assert_eq!(objects(&d2).len(), 1);
}

/// Garbage in the store stops start-up with a message naming the file; it is not reset.
#[test]
fn corrupt_store_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let store = state.join("state.redb");
    let garbage = vec![0xa5u8; 16384];
    std::fs::write(&store, &garbage).unwrap();
    let mut d = Daemon::spawn(Opts {
        state_dir: Some(state.clone()),
        ..Opts::default()
    });
    let st = d
        .wait_exit(Duration::from_secs(20))
        .expect("it should exit");
    assert!(!st.success());
    let log = d.log();
    assert!(log.contains(&store.display().to_string()), "{log}");
    assert!(log.contains("does not reset"), "{log}");
    assert_eq!(
        std::fs::read(&store).unwrap(),
        garbage,
        "the store was changed"
    );
}

/// Event sequence numbers never go back across restarts, and the log is kept on disk.
#[test]
fn event_seq_is_monotonic_across_restarts() {
    require_cgroup_v1();
    let mut d = Daemon::start();
    let (s, b) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("ev", 0.1, "16Mi")),
    );
    assert_eq!(s, 201, "{b}");
    let first = events(&d, 0);
    let max1 = first.last().unwrap()["seq"].as_u64().unwrap();
    d.stop();
    let mut d2 = restart(&d, &[]);
    let all = events(&d2, 0);
    // The old events are still served, and new ones follow them.
    assert!(all
        .iter()
        .any(|e| e["kind"] == "created" && e["name"] == "ev"));
    assert!(all.iter().any(|e| e["kind"] == "agent_stopped"), "{all:?}");
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(*seqs.last().unwrap() > max1);
    d2.kill9();
    let d3 = restart(&d, &[]);
    let again = events(&d3, 0);
    let last3 = again.last().unwrap()["seq"].as_u64().unwrap();
    assert!(last3 > *seqs.last().unwrap(), "{again:?}");
}

/// `nodeagent events -f` prints new events as they happen.
#[test]
fn events_follow() {
    require_cgroup_v1();
    let d = Daemon::start();
    let mut child = common::command()
        .arg("--state-dir")
        .arg(&d.state_dir)
        .args(["events", "-f"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (s, b) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("followed", 0.1, "16Mi")),
    );
    assert_eq!(s, 201, "{b}");
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("followed"), "{text}");
}

/// With `--stop-workloads` the processes stop with the agent, and are `exited` at the next
/// start (not looked for, not lost).
#[test]
fn stop_workloads_on_shutdown() {
    require_cgroup_v1();
    let mut d = Daemon::start_with(Opts {
        args: vec!["--stop-workloads".into()],
        ..Opts::default()
    });
    let (s, b) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("stopped", 0.1, "16Mi")),
    );
    assert_eq!(s, 201, "{b}");
    let pid = b["pid"].as_u64().unwrap();
    let t = Instant::now();
    d.stop();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    eventually(Duration::from_secs(2), "the process to be gone", || {
        (!pid_alive(pid)).then_some(())
    });
    let d2 = restart(&d, &[]);
    assert_eq!(objects(&d2)["stopped"]["status"], "exited");
}

/// A container removed while the agent is down is `lost` after the restart, with an event; one
/// that exited meanwhile is `exited` with Docker's exit code.
#[test]
fn containers_gone_while_down() {
    require_docker();
    let run = common::random_suffix();
    let _cleanup = Containers(run.clone());
    let mut d = Daemon::start_with(Opts {
        args: vec!["--stop-grace".into(), "1s".into()],
        ..Opts::default()
    });
    for (name, cmd) in [("gone", "sleep 300"), ("quits", "sleep 300")] {
        let spec = json!({
            "name": name,
            "kind": "container",
            "labels": {"e2e-run": run},
            "container": {"image": "busybox:local", "command": ["sh", "-c", cmd]},
        });
        let (s, b) = d.http("POST", "/v1/objects?wait=true", Some(&spec));
        assert_eq!(s, 201, "{b}");
    }
    let before = objects(&d);
    d.kill9();
    let gone = before["gone"]["container"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let quits = before["quits"]["container"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(docker(&["rm", "-f", &gone]).status.success());
    assert!(docker(&["kill", "-s", "KILL", &quits]).status.success());
    let d2 = restart(&d, &["--stop-grace", "1s"]);
    let after = eventually(Duration::from_secs(10), "both settled", || {
        let a = objects(&d2);
        (a["gone"]["status"] == "lost" && a["quits"]["status"] == "exited").then_some(a)
    });
    assert_eq!(after["quits"]["exit_code"], 137, "{}", after["quits"]);
    let evs = events(&d2, 0);
    assert!(
        evs.iter()
            .any(|e| e["name"] == "gone" && e["kind"] == "lost"),
        "{evs:?}"
    );
    assert!(
        evs.iter()
            .any(|e| e["name"] == "quits" && e["kind"] == "exited"),
        "{evs:?}"
    );
}
