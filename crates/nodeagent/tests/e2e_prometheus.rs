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
