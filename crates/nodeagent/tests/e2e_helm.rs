//! The `helm` kind (issue 13, first step) against the real Kubernetes 1.20 control plane of
//! `tests/common/k8s.rs`, with the pinned helm v4 of `scripts/helm-get.sh`
//! (`NODEAGENT_TEST_HELM`) and the test suite's own chart (`tests/charts/demo`: a ConfigMap
//! with the values, a Service, and a Deployment whose pods stay Pending, as the cluster has no
//! node: nothing here uses `--wait` with it, except to make an install time out on purpose).
//! `helm list` and `helm history` (the same binary) and kubectl check what the agent did.
//! Without the control plane or helm every test fails saying what to run; none is skipped.

#![allow(clippy::unwrap_used)]

mod common;

use common::k8s::{control_plane, ControlPlane, Ns};
use common::{eventually, Daemon, Opts};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The pinned helm binary; a missing one is a failure that says what to run.
fn helm_bin() -> PathBuf {
    let p = std::env::var("NODEAGENT_TEST_HELM").unwrap_or_else(|_| {
        panic!(
            "NODEAGENT_TEST_HELM is not set: run scripts/helm-get.sh (scripts/test.sh does) and \
             export NODEAGENT_TEST_HELM=<its output>"
        )
    });
    let p = PathBuf::from(p);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/helm-get.sh",
        p.display()
    );
    p
}

fn chart() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/charts/demo")
        .display()
        .to_string()
}

/// The same helm binary as the agent's, run by the test against the same cluster.
struct HelmCli {
    bin: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl HelmCli {
    fn new(cp: &ControlPlane) -> HelmCli {
        HelmCli {
            bin: helm_bin(),
            home: tempfile::tempdir().unwrap(),
            kubeconfig: cp.kubeconfig.clone(),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let h = self.home.path();
        Command::new(&self.bin)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_DATA_HOME", h.join("data"))
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend_from_slice(&["-o", "json"]);
        let o = self.run(&a);
        assert!(
            o.status.success(),
            "helm {a:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `helm list` in `ns`: the releases there, whatever their status (helm v4 lists all).
    fn list(&self, ns: &str) -> Vec<Value> {
        self.json(&["list", "-n", ns])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn history(&self, release: &str, ns: &str) -> Vec<Value> {
        self.json(&["history", release, "-n", ns])
            .as_array()
            .cloned()
            .unwrap()
    }
}

fn daemon_opts(cp: &ControlPlane, dir: &std::path::Path, state: Option<PathBuf>) -> Opts {
    let cfg = cp.agent_config(dir, "");
    Opts {
        args: vec!["--config".into(), cfg.display().to_string()],
        env: vec![("NODEAGENT_HELM".into(), helm_bin().display().to_string())],
        state_dir: state,
        ..Opts::default()
    }
}

fn daemon(cp: &ControlPlane) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(daemon_opts(cp, dir.path(), None));
    (d, dir)
}

fn spec(name: &str, ns: &str, values: Value) -> Value {
    json!({"name": name, "kind": "helm",
           "helm": {"chart": chart(), "namespace": ns, "values": values}})
}

fn get(d: &Daemon, key: &str) -> Value {
    let (s, v) = d.http("GET", &format!("/v1/objects/{key}"), None);
    assert_eq!(s, 200, "{v}");
    v
}

/// Nothing of release `r` is in `ns`: no release, no ConfigMap, Service or Deployment.
fn nothing_installed(cp: &ControlPlane, helm: &HelmCli, ns: &str, r: &str) {
    assert!(helm.list(ns).is_empty(), "{:?}", helm.list(ns));
    assert!(cp
        .get_json(&["configmap", &format!("{r}-settings"), "-n", ns])
        .is_none());
    assert!(cp
        .get_json(&["service", &format!("{r}-web"), "-n", ns])
        .is_none());
    assert!(cp
        .get_json(&["deployment", &format!("{r}-web"), "-n", ns])
        .is_none());
}

#[test]
fn install_upgrade_by_patch_and_uninstall() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nahelm");
    let helm = HelmCli::new(cp);
    let (d, _dir) = daemon(cp);

    let t = Instant::now();
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("web", &ns.0, json!({"greeting": "hello-1"}))),
    );
    eprintln!("install: {:?}", t.elapsed());
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    assert_eq!(obj["status"], "running", "{obj}");
    let h = &obj["helm"];
    assert_eq!(h["cluster"], "test");
    assert_eq!(h["release"], "web");
    assert_eq!(h["namespace"], ns.0.as_str());
    assert_eq!(h["revision"], 1, "{obj}");
    assert_eq!(h["status"], "deployed");
    assert_eq!(h["chart"], "demo-0.1.0");
    assert_eq!(h["app_version"], "1.0.0");
    assert_eq!(h["history"].as_array().unwrap().len(), 1);
    assert!(obj.get("pid").is_none() && obj.get("cgroup").is_none());

    // kubectl sees the ConfigMap with the values; helm list agrees.
    let cm = cp
        .get_json(&["configmap", "web-settings", "-n", &ns.0])
        .expect("kubectl sees the ConfigMap");
    assert_eq!(cm["data"]["greeting"], "hello-1");
    assert_eq!(cm["data"]["color"], "blue");
    assert!(cp.get_json(&["service", "web-web", "-n", &ns.0]).is_some());
    assert!(cp
        .get_json(&["deployment", "web-web", "-n", &ns.0])
        .is_some());
    let list = helm.list(&ns.0);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "web");
    assert_eq!(list[0]["revision"], "1");
    assert_eq!(list[0]["status"], "deployed");

    // The per-object kubeconfig is private, and holds nothing the API shows.
    let kc = d.state_dir.join("objects").join(&id).join("kubeconfig");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", kc.display());
    assert!(!obj.to_string().contains(&cp.token));
    assert!(!d.log().contains(&cp.token));

    // A PATCH of the values upgrades: revision 2, the ConfigMap changes.
    let t = Instant::now();
    let (s, v) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"helm": {"values": {"greeting": "hello-2", "color": "red"}}})),
    );
    assert_eq!(s, 200, "{v}");
    let o = eventually(Duration::from_secs(60), "revision 2", || {
        let o = get(&d, &id);
        (o["helm"]["revision"] == 2 && o["helm"]["sync"] == "in_sync").then_some(o)
    });
    eprintln!("upgrade: {:?}", t.elapsed());
    assert_eq!(o["helm"]["status"], "deployed", "{o}");
    assert_eq!(o["spec"]["helm"]["values"]["greeting"], "hello-2");
    let cm = cp
        .get_json(&["configmap", "web-settings", "-n", &ns.0])
        .unwrap();
    assert_eq!(cm["data"]["greeting"], "hello-2");
    assert_eq!(cm["data"]["color"], "red");
    let hist = helm.history("web", &ns.0);
    assert_eq!(hist.len(), 2, "{hist:?}");
    assert_eq!(hist[0]["status"], "superseded");
    assert_eq!(hist[1]["status"], "deployed");
    let ours = o["helm"]["history"].as_array().unwrap();
    assert_eq!(ours.len(), 2);
    for (a, b) in ours.iter().zip(&hist) {
        assert_eq!(a["revision"], b["revision"]);
        assert_eq!(a["status"], b["status"]);
    }

    // A PATCH whose values do not render fails the sync, naming helm.values; the release
    // stays at revision 2.
    let (s, v) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"helm": {"values": {"fail": true}}})),
    );
    assert_eq!(s, 200, "{v}");
    let o = eventually(Duration::from_secs(60), "the sync fails", || {
        let o = get(&d, &id);
        (o["helm"]["sync"] == "failed").then_some(o)
    });
    let msg = o["helm"]["sync_message"].as_str().unwrap();
    assert!(msg.starts_with("helm.values:"), "{msg}");
    assert!(msg.contains("refuses to render"), "{msg}");
    assert_eq!(helm.history("web", &ns.0).len(), 2);
    // The cluster, release and namespace cannot change in place.
    let (s, e) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"helm": {"namespace": "elsewhere"}})),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "helm.namespace");
    let (s, e) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"resources": {"memory": "64Mi"}})),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "resources");

    // Delete uninstalls: kubectl finds nothing, helm lists nothing.
    let t = Instant::now();
    let (s, v) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    eprintln!("uninstall: {:?}", t.elapsed());
    assert_eq!(s, 200, "{v}");
    nothing_installed(cp, &helm, &ns.0, "web");
    let (s, _) = d.http("GET", &format!("/v1/objects/{id}"), None);
    assert_eq!(s, 404);
    assert!(!d.state_dir.join("objects").join(&id).exists());
}

#[test]
fn a_bad_chart_or_bad_values_are_refused_naming_the_field_with_nothing_installed() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nahelm");
    let helm = HelmCli::new(cp);
    let (d, _dir) = daemon(cp);
    let post = |body: &Value| d.http("POST", "/v1/objects?wait=true", Some(body));

    // Refused by the spec's checks: a flag as the chart, a relative path.
    for c in ["--post-renderer=/bin/sh", "charts/demo"] {
        let (s, e) = post(&json!({"name": "bad", "kind": "helm", "helm": {"chart": c}}));
        assert_eq!(s, 400, "{e}");
        assert_eq!(e["error"]["field"], "helm.chart");
    }
    // No such chart on the node.
    let (s, e) = post(&json!({"name": "bad", "kind": "helm",
        "helm": {"chart": "/nonexistent/chart", "namespace": ns.0}}));
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "helm.chart");
    // A chart that is not one (a directory without Chart.yaml): helm's own message.
    let empty = tempfile::tempdir().unwrap();
    let (s, e) = post(&json!({"name": "bad", "kind": "helm",
        "helm": {"chart": empty.path().display().to_string(), "namespace": ns.0}}));
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "helm.chart");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Chart.yaml"),
        "{e}"
    );
    // Values that make the chart fail to render.
    let (s, e) = post(&spec("bad", &ns.0, json!({"fail": true})));
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "helm.values");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refuses to render"),
        "{e}"
    );
    // Values the API server's schema refuses.
    let (s, e) = post(&spec(
        "bad",
        &ns.0,
        json!({"deployment": {"replicas": "many"}}),
    ));
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "helm.values");
    nothing_installed(cp, &helm, &ns.0, "bad");

    // An install that helm records and then fails (--wait on a Deployment no node runs):
    // what it left is uninstalled, and the answer names helm.timeout.
    let mut body = spec("bad", &ns.0, json!({}));
    body["helm"]["wait"] = json!(true);
    body["helm"]["timeout"] = json!("3s");
    let (s, e) = post(&body);
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["field"], "helm.timeout");
    nothing_installed(cp, &helm, &ns.0, "bad");

    // A release that exists already is not taken over.
    let o = helm.run(&["install", "theirs", &chart(), "-n", &ns.0]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut body = spec("mine", &ns.0, json!({"greeting": "mine"}));
    body["helm"]["release"] = json!("theirs");
    let (s, e) = post(&body);
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["field"], "helm.release");
    let cm = cp
        .get_json(&["configmap", "theirs-settings", "-n", &ns.0])
        .unwrap();
    assert_eq!(cm["data"]["greeting"], "hello", "their release was changed");
    assert_eq!(helm.history("theirs", &ns.0).len(), 1);
    // An object name that is not a release name, without helm.release.
    let (s, e) = post(&spec("my_app", &ns.0, json!({})));
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "helm.release");
    let (_, list) = d.http("GET", "/v1/objects", None);
    assert!(
        !list.to_string().contains("\"helm\""),
        "a refused create left an object: {list}"
    );
}

#[test]
fn after_kill_9_the_agent_finds_the_release_without_installing_again() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nahelm");
    let helm = HelmCli::new(cp);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let opts = || daemon_opts(cp, dir.path(), Some(state.clone()));
    let mut d = Daemon::start_with(opts());
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("rec", &ns.0, json!({"greeting": "before"}))),
    );
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    let before = cp
        .get_json(&["configmap", "rec-settings", "-n", &ns.0])
        .unwrap();
    d.kill9();

    let t = Instant::now();
    let mut d = Daemon::start_with(opts());
    let o = eventually(Duration::from_secs(30), "recovered", || {
        let o = get(&d, &id);
        (o["status"] == "running" && o["helm"]["revision"] == 1).then_some(o)
    });
    eprintln!("recovery: {:?}", t.elapsed());
    assert_eq!(o["helm"]["status"], "deployed", "{o}");
    assert_eq!(helm.history("rec", &ns.0).len(), 1, "installed again");
    let after = cp
        .get_json(&["configmap", "rec-settings", "-n", &ns.0])
        .unwrap();
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "the restart applied the chart again"
    );
    // It still upgrades after the restart.
    let (s, v) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"helm": {"values": {"greeting": "after"}}})),
    );
    assert_eq!(s, 200, "{v}");
    eventually(Duration::from_secs(60), "revision 2", || {
        (get(&d, &id)["helm"]["revision"] == 2).then_some(())
    });

    // Uninstalled by hand while the agent is down: lost after the restart, and a delete
    // still succeeds.
    d.kill9();
    let o = helm.run(&["uninstall", "rec", "-n", &ns.0, "--wait"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = Daemon::start_with(opts());
    eventually(Duration::from_secs(30), "lost", || {
        (get(&d, &id)["status"] == "lost").then_some(())
    });
    let (s, v) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200, "{v}");
    nothing_installed(cp, &helm, &ns.0, "rec");
}

#[test]
fn a_release_uninstalled_by_hand_deletes_cleanly() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nahelm");
    let helm = HelmCli::new(cp);
    let (d, _dir) = daemon(cp);
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("gone", &ns.0, json!({}))),
    );
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    let o = helm.run(&["uninstall", "gone", "-n", &ns.0, "--wait"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (s, v) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200, "{v}");
    let (s, _) = d.http("GET", &format!("/v1/objects/{id}"), None);
    assert_eq!(s, 404);
}

#[test]
fn a_missing_helm_binary_is_a_503_that_says_so() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nahelm");
    let dir = tempfile::tempdir().unwrap();
    let mut opts = daemon_opts(cp, dir.path(), None);
    opts.env = vec![("NODEAGENT_HELM".into(), "/nonexistent/helm".into())];
    let d = Daemon::start_with(opts);
    let (s, e) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("nohelm", &ns.0, json!({}))),
    );
    assert_eq!(s, 503, "{e}");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("NODEAGENT_HELM") && m.contains("/nonexistent/helm"),
        "{m}"
    );
}

#[test]
fn the_policy_limits_charts_value_files_and_namespaces() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nahelm");
    let helm = HelmCli::new(cp);
    let dir = tempfile::tempdir().unwrap();
    let charts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/charts/");
    let cfg = cp.agent_config(
        dir.path(),
        &format!(
            "[policy]\nhelm_charts = [\"{}\"]\nk8s_namespaces = [\"{}\"]\n",
            charts.display(),
            ns.0
        ),
    );
    let d = Daemon::start_with(Opts {
        args: vec!["--config".into(), cfg.display().to_string()],
        env: vec![("NODEAGENT_HELM".into(), helm_bin().display().to_string())],
        ..Opts::default()
    });
    // A value file outside the allowed folders: its contents would reach the cluster.
    let mut s1 = spec("pol", &ns.0, json!({}));
    s1["helm"]["value_files"] = json!(["/etc/hostname"]);
    let (s, e) = d.http("POST", "/v1/objects?wait=true", Some(&s1));
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["rule"], "policy.helm_charts");
    assert_eq!(e["error"]["field"], "helm.value_files[0]");
    // A remote chart no entry allows.
    let mut s2 = spec("pol", &ns.0, json!({}));
    s2["helm"]["chart"] = json!("oci://registry.example/web");
    let (s, e) = d.http("POST", "/v1/objects?wait=true", Some(&s2));
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["field"], "helm.chart");
    // A namespace outside k8s_namespaces.
    let (s, e) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("pol", "default", json!({}))),
    );
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["rule"], "policy.k8s_namespaces");
    assert_eq!(e["error"]["field"], "helm.namespace");
    nothing_installed(cp, &helm, &ns.0, "pol");
    assert!(helm.list("default").iter().all(|r| r["name"] != "pol"));
    // What the policy allows installs.
    let (s, o) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("pol", &ns.0, json!({}))),
    );
    assert_eq!(s, 201, "{o}");
    let id = o["id"].as_str().unwrap().to_string();
    // A PATCH may not reach what a create may not.
    let (s, e) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"helm": {"value_files": ["/etc/hostname"]}})),
    );
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["field"], "helm.value_files[0]");
    let (s, v) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200, "{v}");
    nothing_installed(cp, &helm, &ns.0, "pol");
}
