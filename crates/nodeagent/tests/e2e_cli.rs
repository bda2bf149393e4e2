//! The CLI against a real daemon over its unix socket, and over TCP with --addr.

#![allow(clippy::unwrap_used)]

mod common;

use common::{cgroup_dir, eventually, read_trim, require_cgroup_v1, Daemon};
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

const SPEC: &str = "\
# A process, as an operator would write it.
name: cli-1
kind: process
labels:
  team: a
process:
  command: [/bin/sleep, \"300\"]
resources:
  cpu: 0.25
  memory: 64Mi
collect:
  interval: 100ms
";

#[test]
fn cli_lifecycle_over_the_socket() {
    require_cgroup_v1();
    let d = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, SPEC).unwrap();

    // create -f spec.yaml --wait
    let out = ok(d.cli(&["create", "-f", spec.to_str().unwrap(), "--wait"]));
    assert!(out.contains("created process cli-1"), "{out}");
    assert!(out.contains("status=running"), "{out}");
    let id = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("id="))
        .unwrap_or_else(|| panic!("no id in {out:?}"))
        .to_string();

    // get: the list table
    let out = ok(d.cli(&["get"]));
    let header = out.lines().next().unwrap_or("");
    for col in [
        "ID", "NAME", "KIND", "STATUS", "PID", "CPU", "MEMORY", "AGE",
    ] {
        assert!(header.contains(col), "no {col} in header {header:?}");
    }
    let row = out
        .lines()
        .find(|l| l.contains("cli-1"))
        .unwrap_or_else(|| panic!("no cli-1 row:\n{out}"));
    for cell in [id.as_str(), "process", "running", "0.25", "64Mi"] {
        assert!(row.contains(cell), "no {cell:?} in {row:?}");
    }

    // get -o json: the server's JSON
    let out = ok(d.cli(&["get", "-o", "json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == id.as_str()),
        "{v}"
    );

    // get NAME: key/value
    let out = ok(d.cli(&["get", "cli-1"]));
    assert!(
        out.lines().any(|l| l.starts_with("id") && l.contains(&id)),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("status") && l.contains("running")),
        "{out}"
    );
    let out = ok(d.cli(&["-o", "json", "get", "cli-1"]));
    let obj: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(obj["id"], id.as_str());
    let pid = obj["pid"].as_u64().unwrap() as u32;
    let cpu = cgroup_dir(pid, "cpu");
    assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "25000");

    // update --cpu 0.5 --wait: in the file on return
    let out = ok(d.cli(&["update", &id, "--cpu", "0.5", "--wait"]));
    assert!(out.contains("updated"), "{out}");
    assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "50000");

    // A bad value: the server's error, with the field, on stderr; exit 1.
    let o = d.cli(&["update", &id, "--memory", "64Xi"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: resources.memory: "), "{err}");
    assert!(err.trim_end().ends_with("(invalid_argument)"), "{err}");

    // metrics: samples with a CPU rate once there are two.
    let out = eventually(Duration::from_secs(10), "two samples in `metrics`", || {
        let out = ok(d.cli(&["metrics", &id]));
        (out.lines().count() >= 3).then_some(out)
    });
    let header = out.lines().next().unwrap_or("");
    for col in ["SEQ", "TIME", "CPU", "MEMORY", "PIDS", "IO", "NET"] {
        assert!(header.contains(col), "no {col} in header {header:?}");
    }
    let out = ok(d.cli(&["metrics", &id, "--limit", "1"]));
    assert_eq!(out.lines().count(), 2, "{out}");
    let out = ok(d.cli(&["metrics", &id, "-o", "json", "--limit", "2"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["samples"].as_array().map(|a| a.len()), Some(2), "{v}");

    // push once to the file sink
    let out = ok(d.cli(&["push", "once", &id, "--sink", "file"]));
    assert!(out.contains("sent sample"), "{out}");
    let out = ok(d.cli(&["push", "on", &id, "--sink", "stdout", "--interval", "1s"]));
    assert!(out.contains("push on"), "{out}");
    let out = ok(d.cli(&["push", "off", &id, "--sink", "stdout"]));
    assert!(out.contains("push off"), "{out}");

    // events
    let out = ok(d.cli(&["events"]));
    let header = out.lines().next().unwrap_or("");
    for col in ["SEQ", "TIME", "KIND", "OBJECT", "MESSAGE"] {
        assert!(header.contains(col), "no {col} in header {header:?}");
    }
    assert!(
        out.lines()
            .any(|l| l.contains("created") && l.contains("cli-1")),
        "{out}"
    );
    let out = ok(d.cli(&["events", "-o", "json", "--since", "0"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["events"].as_array().is_some_and(|a| !a.is_empty()), "{v}");

    // host
    let out = ok(d.cli(&["host"]));
    assert!(
        out.lines()
            .any(|l| l.starts_with("cgroup_version") && l.contains("v1")),
        "{out}"
    );

    // The same daemon over TCP.
    let addr = format!("http://127.0.0.1:{}", d.port);
    let out = ok(d.cli(&["--addr", &addr, "get", &id]));
    assert!(out.contains("cli-1"), "{out}");

    // delete --wait
    let out = ok(d.cli(&["delete", &id, "--wait"]));
    assert!(out.contains("deleted"), "{out}");
    assert!(common::process_gone(pid), "pid {pid} survived delete");
    assert!(!cpu.exists(), "{} survived delete", cpu.display());

    // Unknown object: exit 1, error naming the code.
    let o = d.cli(&["get", "no-such-object"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("(not_found)"), "{}", stderr(&o));
}

/// A spec on standard input, and a bad one: the server's field name reaches the user.
#[test]
fn cli_create_from_stdin_and_bad_spec() {
    require_cgroup_v1();
    let d = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"name":"x","kind":"process","process":{"command":["/bin/true"]},"resources":{"memory":"64Xi"}}"#,
    )
    .unwrap();
    let o = d.cli(&["create", "-f", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("error: resources.memory:"), "{err}");

    let mut child = common::command()
        .arg("--state-dir")
        .arg(&d.state_dir)
        .args(["create", "-f", "-", "--wait", "-o", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(SPEC.replace("cli-1", "stdin-1").as_bytes())
            .unwrap();
    }
    let out = ok(child.wait_with_output().unwrap());
    let obj: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(obj["name"], "stdin-1");
    assert_eq!(obj["status"], "running");
    let id = obj["id"].as_str().unwrap().to_string();
    ok(d.cli(&["delete", &id, "--wait"]));
}

/// Without a daemon, the CLI says which socket it tried and how to start one.
#[test]
fn cli_without_daemon_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::command()
        .arg("--state-dir")
        .arg(dir.path())
        .arg("get")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let sock = dir.path().join("nodeagent.sock");
    assert!(err.contains(&sock.display().to_string()), "{err}");
    assert!(err.contains("nodeagent run"), "{err}");

    let port = common::free_port();
    let o = common::command()
        .args(["--addr", &format!("http://127.0.0.1:{port}"), "host"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("nodeagent run"), "{err}");
}

/// Issue 21, error advice: a user shut out of the socket is told so, not asked whether the
/// daemon runs (it does); `update NAME` with no flags names the CLI's flags, not the API's
/// fields.
#[test]
fn cli_error_advice_fits_the_error() {
    use std::os::unix::process::CommandExt as _;
    require_cgroup_v1();
    let d = Daemon::start();
    let o = common::command()
        .arg("--socket")
        .arg(d.socket())
        .arg("get")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("Permission denied"), "{err}");
    assert!(!err.contains("is the daemon running"), "{err}");
    assert!(err.contains("as root"), "{err}");

    let o = d.cli(&["update", "some-object"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = stderr(&o);
    for flag in ["--cpu", "--memory", "--pids", "--pause", "--resume"] {
        assert!(err.contains(flag), "no {flag} in {err}");
    }
    assert!(!err.contains("resources"), "{err}");
}

/// Issue 21: a three-document `create -f` whose second document has a typo creates nothing,
/// and the error names the document by index and name; with `--continue-on-error` the other
/// two are created and the command still fails, naming the bad one.
#[test]
fn multi_document_create_is_all_or_nothing() {
    require_cgroup_v1();
    let d = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("three.yaml");
    let doc = |name: &str, extra: &str| {
        format!("name: {name}\nkind: process\nprocess:\n  command: [/bin/sleep, \"300\"]\n{extra}")
    };
    std::fs::write(
        &file,
        [
            doc("multi-1", ""),
            doc("multi-2", "resources:\n  memroy: 64Mi\n"),
            doc("multi-3", ""),
        ]
        .join("---\n"),
    )
    .unwrap();
    let names = || -> Vec<String> {
        let (_, v) = d.http("GET", "/v1/objects", None);
        v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["name"].as_str().map(str::to_string))
            .filter(|n| n.starts_with("multi-"))
            .collect()
    };
    let o = d.cli(&["create", "-f", file.to_str().unwrap(), "--wait"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("document 2 of 3 (multi-2)"), "{err}");
    assert!(err.contains("memroy"), "{err}");
    assert!(err.contains("none was"), "{err}");
    assert!(names().is_empty(), "created: {:?}", names());

    let o = d.cli(&[
        "create",
        "-f",
        file.to_str().unwrap(),
        "--wait",
        "--continue-on-error",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("document 2 of 3 (multi-2)"), "{o:?}");
    let mut got = names();
    got.sort();
    assert_eq!(got, vec!["multi-1", "multi-3"]);
}

/// Issue 21, item 9: `get` shows usage beside the limits (cores, bytes and percent), the exit
/// code and restarts; `host` CPU percent by mode and memory used of total; `metrics` IO and NET
/// as rates, totals with `--totals`.
#[test]
fn cli_shows_usage_not_only_limits() {
    require_cgroup_v1();
    let d = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("busy.yaml");
    std::fs::write(
        &spec,
        "name: busy-1\nkind: process\nprocess:\n  command: [/bin/sh, -c, \"while :; do :; done\"]\n\
         resources: {cpu: 0.5, memory: 64Mi}\ncollect: {interval: 100ms}\n",
    )
    .unwrap();
    ok(d.cli(&["create", "-f", spec.to_str().unwrap(), "--wait"]));
    let row = eventually(Duration::from_secs(10), "CPU usage in `get`", || {
        let out = ok(d.cli(&["get"]));
        let row = out.lines().find(|l| l.contains("busy-1"))?.to_string();
        let cpu = row
            .split_whitespace()
            .find(|c| c.ends_with("/0.50"))?
            .strip_suffix("/0.50")?
            .parse::<f64>()
            .ok()?;
        (cpu > 0.3).then_some(row)
    });
    let header = ok(d.cli(&["get"])).lines().next().unwrap_or("").to_string();
    assert!(
        header.contains("EXIT") && header.contains("RESTARTS"),
        "{header}"
    );
    assert!(row.contains("/64Mi ") && row.contains('%'), "{row}");

    let host = ok(d.cli(&["host"]));
    assert!(host.contains("user ") && host.contains("idle "), "{host}");
    assert!(host.contains("memory used"), "{host}");
    assert!(
        !host.contains("sample.host.cpu.user"),
        "raw counters in:\n{host}"
    );

    let out = ok(d.cli(&["metrics", "busy-1", "--limit", "2"]));
    let header = out.lines().next().unwrap_or("");
    assert!(header.contains("IO/s") && header.contains("NET/s"), "{out}");
    let out = ok(d.cli(&["metrics", "busy-1", "--limit", "2", "--totals"]));
    let header = out.lines().next().unwrap_or("");
    assert!(!header.contains("IO/s") && header.contains("IO"), "{out}");
    ok(d.cli(&["delete", "busy-1", "--wait"]));
}
