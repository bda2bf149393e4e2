//! `/metrics` checked by Prometheus's own `promtool` (Debian's `prometheus` package, which the
//! test command installs), and the host heartbeat reaching the `file` sink.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn promtool() -> &'static str {
    let p = "/usr/bin/promtool";
    assert!(
        std::path::Path::new(p).exists(),
        "promtool is missing: install Debian's `prometheus` package (scripts/test.sh does)"
    );
    p
}

/// `promtool check metrics` on `text`; panics with its findings.
fn check_with_promtool(text: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 21: a crash loop can be alerted on. A process that exits 3 and is restarted on
/// failure shows its restarts in `nodeagent_object_restarts_total`; one that exits 3 for good
/// is `nodeagent_object_status{status="exited"} 1` with `nodeagent_object_exit_code` 3; a
/// running one is `status="running"`; promtool accepts the exposition.
#[test]
fn object_status_and_restarts_are_series() {
    require_cgroup_v1();
    let d = Daemon::start();
    let crash = serde_json::json!({
        "name": "prom-crash",
        "kind": "process",
        "process": {"command": ["/bin/sh", "-c", "sleep 0.05; exit 3"], "restart": "on-failure"},
    });
    let (s, b) = d.http("POST", "/v1/objects", Some(&crash));
    assert_eq!(s, 202, "{b}");
    let crash_id = b["id"].as_str().expect("id").to_string();
    let exits = serde_json::json!({
        "name": "prom-exit",
        "kind": "process",
        "process": {"command": ["/bin/sh", "-c", "exit 3"]},
    });
    let (s, b) = d.http("POST", "/v1/objects", Some(&exits));
    assert_eq!(s, 202, "{b}");
    let exit_id = b["id"].as_str().expect("id").to_string();
    let (s, b) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("prom-ok", 0.5, "64Mi")),
    );
    assert_eq!(s, 201, "{b}");
    let ok_id = b["id"].as_str().expect("id").to_string();
    let labels = |id: &str, name: &str| format!("{{id=\"{id}\",name=\"{name}\",kind=\"process\"");
    eventually(Duration::from_secs(15), "two restarts in /metrics", || {
        let (s, t) = d.get_text("/metrics");
        let prefix = format!(
            "nodeagent_object_restarts_total{}}} ",
            labels(&crash_id, "prom-crash")
        );
        let restarts = t
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        (s == 200 && restarts >= 2).then_some(())
    });
    let text = eventually(Duration::from_secs(10), "prom-exit exited", || {
        let (_, t) = d.get_text("/metrics");
        t.contains(&format!(
            "nodeagent_object_status{},status=\"exited\"}} 1",
            labels(&exit_id, "prom-exit")
        ))
        .then_some(t)
    });
    assert!(
        text.contains(&format!(
            "nodeagent_object_exit_code{}}} 3",
            labels(&exit_id, "prom-exit")
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "nodeagent_object_status{},status=\"running\"}} 1",
            labels(&ok_id, "prom-ok")
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "nodeagent_object_restarts_total{}}} 0",
            labels(&ok_id, "prom-ok")
        )),
        "{text}"
    );
    assert!(
        text.contains("# TYPE nodeagent_object_restarts_total counter"),
        "{text}"
    );
    check_with_promtool(&text);
    for id in [&crash_id, &ok_id, &exit_id] {
        let (s, _) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
        assert_eq!(s, 200);
    }
}

#[test]
fn metrics_pass_promtool_and_follow_conventions() {
    require_cgroup_v1();
    let tool = promtool();
    let d = Daemon::start();
    let (status, body) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&sleep_spec("prom-a", 0.5, "64Mi")),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let text = eventually(Duration::from_secs(10), "object in /metrics", || {
        let (s, t) = d.get_text("/metrics");
        (s == 200
            && t.contains(&format!(
                "nodeagent_pids{{id=\"{id}\",name=\"prom-a\",kind=\"process\"}} 1"
            )))
        .then_some(t)
    });
    for name in [
        "nodeagent_cpu_usage_seconds_total{",
        "nodeagent_memory_usage_bytes{",
        "nodeagent_memory_limit_bytes{",
        "nodeagent_host_cpu_seconds_total{",
        "nodeagent_host_load1{",
        "nodeagent_host_memory_available_bytes{",
    ] {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "nodeagent_memory_limit_bytes{{id=\"{id}\",name=\"prom-a\",kind=\"process\"}} 67108864"
        )),
        "{text}"
    );
    let mut child = Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, _) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200);
}

#[test]
fn host_heartbeat_reaches_the_file_sink() {
    require_cgroup_v1();
    let d = Daemon::start_with(Opts {
        args: vec!["--heartbeat-interval".into(), "200ms".into()],
        ..Opts::default()
    });
    let path = d.state_dir.join("reports.jsonl");
    let lines = eventually(Duration::from_secs(10), "heartbeat lines", || {
        let t = std::fs::read_to_string(&path).unwrap_or_default();
        (t.lines()
            .filter(|l| l.contains("\"kind\":\"host\""))
            .count()
            >= 2)
            .then_some(t)
    });
    let recs: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    // Records of one sink are numbered from 1 without gaps.
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"].as_u64(), Some(i as u64 + 1), "{r}");
        assert!(r["node"].as_str().is_some_and(|n| !n.is_empty()));
    }
    assert!(
        recs[0]["sample"]["host"]["memory_total_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
}
