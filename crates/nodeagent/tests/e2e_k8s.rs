//! The `k8s` kind (issue 12) against a real Kubernetes 1.20 control plane built here
//! (`tests/common/k8s.rs`: etcd, kube-apiserver and kube-controller-manager from Debian's
//! source package), checked with Debian's kubectl 1.20 against the same server. Without the
//! built binaries every test fails saying what to run; none is skipped.
//!
//! Each test works in a namespace of its own (`nae2e-<random>`), deleted when it ends.

#![allow(clippy::unwrap_used)]

mod common;

use common::k8s::{control_plane, ControlPlane, Ns};
use common::{eventually, random_suffix, Daemon, Opts};
use serde_json::{json, Value};
use std::time::Duration;

/// An agent configured with the test cluster as `test`.
fn daemon(cp: &ControlPlane, extra: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cp.agent_config(dir.path(), extra);
    let d = Daemon::start_with(Opts {
        args: vec!["--config".into(), cfg.display().to_string()],
        ..Opts::default()
    });
    (d, dir)
}

fn spec(name: &str, ns: &str, manifest: Value) -> Value {
    json!({"name": name, "kind": "k8s", "k8s": {"namespace": ns, "manifest": manifest}})
}

fn configmap(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn get(d: &Daemon, key: &str) -> Value {
    let (s, v) = d.http("GET", &format!("/v1/objects/{key}"), None);
    assert_eq!(s, 200, "{v}");
    v
}

fn events(d: &Daemon, id: &str) -> Vec<Value> {
    let (_, v) = d.http("GET", "/v1/events", None);
    v["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["object_id"] == id)
        .collect()
}

fn has_event(d: &Daemon, id: &str, kind: &str) -> bool {
    events(d, id).iter().any(|e| e["kind"] == kind)
}

#[test]
fn a_configmap_is_applied_with_the_id_label_and_deleted() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nae2e");
    let (d, _dir) = daemon(cp, "");
    let manifest =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: fast\n";
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("cm", &ns.0, json!(manifest))),
    );
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    assert_eq!(obj["status"], "running", "{obj}");
    assert_eq!(obj["k8s"]["cluster"], "test");
    assert_eq!(obj["k8s"]["state"], "ready", "{obj}");
    let res = &obj["k8s"]["resources"][0];
    assert_eq!(res["kind"], "ConfigMap");
    assert_eq!(res["namespace"], ns.0.as_str());
    assert!(
        obj.get("pid").is_none() && obj.get("cgroup").is_none(),
        "{obj}"
    );

    let cm = cp
        .get_json(&["configmap", "settings", "-n", &ns.0])
        .expect("kubectl sees the ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["nodeagent.io/id"], id.as_str());
    assert_eq!(cm["data"]["mode"], "fast");
    assert_eq!(res["uid"], cm["metadata"]["uid"]);
    let managers: Vec<&str> = cm["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, vec!["nodeagent"], "{cm}");
    assert!(has_event(&d, &id, "created") && has_event(&d, &id, "started"));
    eventually(Duration::from_secs(10), "a ready event", || {
        has_event(&d, &id, "ready").then_some(())
    });

    let (s, v) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200, "{v}");
    assert!(cp
        .get_json(&["configmap", "settings", "-n", &ns.0])
        .is_none());
    let (s, _) = d.http("GET", &format!("/v1/objects/{id}"), None);
    assert_eq!(s, 404);
}

#[test]
fn a_deployment_without_nodes_stays_applied_with_the_reason_from_its_conditions() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nae2e");
    let (d, _dir) = daemon(cp, "");
    let dep = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:local",
                    "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}}}]}}}
    });
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("web", &ns.0, json!([dep]))),
    );
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    // The controller-manager gives it a ReplicaSet and a pod that no node takes: the watch
    // brings its conditions.
    let o = eventually(
        Duration::from_secs(30),
        "the Available condition's reason",
        || {
            let o = get(&d, &id);
            o["k8s"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("MinimumReplicasUnavailable"))
                .then_some(o)
        },
    );
    assert_eq!(o["status"], "running");
    assert_eq!(o["k8s"]["state"], "applied", "{o}");
    assert_eq!(o["k8s"]["resources"][0]["state"], "applied");
    assert!(!has_event(&d, &id, "ready"));
    let pods = cp.get_json(&["pods", "-n", &ns.0]).unwrap();
    assert_eq!(pods["items"][0]["status"]["phase"], "Pending", "{pods}");

    // PATCHing resources is refused naming the field: they belong in the manifest.
    let (s, e) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"resources": {"memory": "64Mi"}})),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "resources");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("k8s.manifest"));
    let (s, e) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"paused": true})),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "paused");

    let (s, v) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200, "{v}");
    assert!(cp.get_json(&["deployment", "web", "-n", &ns.0]).is_none());
}

#[test]
fn a_crd_and_a_custom_resource_of_it_in_one_manifest() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nae2e");
    let (d, _dir) = daemon(cp, "");
    let group = format!("g{}.nodeagent.test", random_suffix());
    let manifest = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{plural: widgets, singular: widget, kind: Widget}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              size: {{type: integer}}\n---\napiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n"
    );
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("crd", &ns.0, json!(manifest))),
    );
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    let kinds: Vec<&str> = obj["k8s"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["CustomResourceDefinition", "Widget"]);
    assert!(obj["k8s"]["resources"][0].get("namespace").is_none());
    let w = cp
        .get_json(&[&format!("widgets.{group}"), "w1", "-n", &ns.0])
        .expect("kubectl sees the custom resource");
    assert_eq!(w["spec"]["size"], 3);
    assert_eq!(w["metadata"]["labels"]["nodeagent.io/id"], id.as_str());
    eventually(
        Duration::from_secs(10),
        "ready (the CRD established)",
        || (get(&d, &id)["k8s"]["state"] == "ready").then_some(()),
    );
    let (s, v) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200, "{v}");
    assert!(cp.get_json(&["crd", &format!("widgets.{group}")]).is_none());
}

#[test]
fn a_patch_reapplies_the_manifest_and_prunes_what_it_dropped() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nae2e");
    let (d, _dir) = daemon(cp, "");
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec(
            "upd",
            &ns.0,
            json!([
                configmap("a", json!({"v": "1"})),
                configmap("b", json!({"v": "1"}))
            ]),
        )),
    );
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    assert!(cp.get_json(&["configmap", "b", "-n", &ns.0]).is_some());
    let (s, o) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}?wait=true"),
        Some(&json!({"k8s": {"manifest": [
            configmap("a", json!({"v": "2"})), configmap("c", json!({"v": "1"}))]}})),
    );
    assert_eq!(s, 200, "{o}");
    eventually(
        Duration::from_secs(10),
        "b pruned, a changed, c applied",
        || {
            let a = cp.get_json(&["configmap", "a", "-n", &ns.0])?;
            let c = cp.get_json(&["configmap", "c", "-n", &ns.0])?;
            (a["data"]["v"] == "2"
                && c["metadata"]["labels"]["nodeagent.io/id"] == id.as_str()
                && cp.get_json(&["configmap", "b", "-n", &ns.0]).is_none())
            .then_some(())
        },
    );
    let o = eventually(Duration::from_secs(10), "the object lists a and c", || {
        let o = get(&d, &id);
        let names: Vec<String> = o["k8s"]["resources"]
            .as_array()?
            .iter()
            .map(|r| r["name"].as_str().unwrap_or("").to_string())
            .collect();
        (names == ["a", "c"] && o["k8s"]["sync"] == "in_sync").then_some(o)
    });
    // Pruning is not a deletion behind the agent's back.
    assert_eq!(o["status"], "running", "{o}");
    assert!(has_event(&d, &id, "updated"));

    // A manifest the server refuses changes nothing (the dry run fails first).
    let (s, _) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}?wait=true"),
        Some(&json!({"k8s": {"manifest": [
            configmap("a", json!({"v": "3"})),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}, "data": {"k": 7}}]}})),
    );
    assert!(s == 200 || s == 400, "{s}");
    let o = eventually(Duration::from_secs(10), "the sync failure", || {
        let o = get(&d, &id);
        (o["k8s"]["sync"] == "failed").then_some(o)
    });
    assert!(
        o["k8s"]["sync_message"]
            .as_str()
            .unwrap()
            .contains("manifest[1]"),
        "{o}"
    );
    assert_eq!(
        cp.get_json(&["configmap", "a", "-n", &ns.0]).unwrap()["data"]["v"],
        "2"
    );
    assert!(cp.get_json(&["configmap", "d", "-n", &ns.0]).is_none());

    let (s, v) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200, "{v}");
    assert!(cp.get_json(&["configmap", "a", "-n", &ns.0]).is_none());
    assert!(cp.get_json(&["configmap", "c", "-n", &ns.0]).is_none());
}

#[test]
fn a_resource_deleted_behind_the_agents_back_makes_the_object_lost() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nae2e");
    let (d, _dir) = daemon(cp, "");
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec(
            "gone",
            &ns.0,
            json!([configmap("x", json!({})), configmap("y", json!({}))]),
        )),
    );
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    let o = cp.kubectl(&["delete", "configmap", "x", "-n", &ns.0]);
    assert!(o.status.success());
    let o = eventually(Duration::from_secs(10), "lost", || {
        let o = get(&d, &id);
        (o["status"] == "lost").then_some(o)
    });
    assert!(
        o["message"].as_str().unwrap().contains("ConfigMap")
            && o["message"].as_str().unwrap().contains("/x"),
        "{o}"
    );
    assert!(has_event(&d, &id, "lost"));
    // The delete removes what is left and succeeds for what is already gone.
    let (s, v) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200, "{v}");
    assert!(cp.get_json(&["configmap", "y", "-n", &ns.0]).is_none());
}

#[test]
fn after_kill_9_the_agent_reattaches_without_applying_again() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nae2e");
    let dir = tempfile::tempdir().unwrap();
    let cfg = cp.agent_config(dir.path(), "");
    let state = dir.path().join("state");
    let opts = || Opts {
        args: vec!["--config".into(), cfg.display().to_string()],
        state_dir: Some(state.clone()),
        ..Opts::default()
    };
    let mut d = Daemon::start_with(opts());
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec(
            "rec",
            &ns.0,
            json!([configmap("r", json!({"k": "v"}))]),
        )),
    );
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    let before = cp.get_json(&["configmap", "r", "-n", &ns.0]).unwrap();
    d.kill9();
    let d = Daemon::start_with(opts());
    let o = eventually(Duration::from_secs(15), "re-attached", || {
        let o = get(&d, &id);
        (o["status"] == "running" && o["k8s"]["resources"][0]["uid"] == before["metadata"]["uid"])
            .then_some(o)
    });
    assert_eq!(o["k8s"]["state"], "ready", "{o}");
    let after = cp.get_json(&["configmap", "r", "-n", &ns.0]).unwrap();
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "the restart applied the manifest again"
    );
    // It follows the resource again: a deletion behind its back is seen.
    assert!(cp
        .kubectl(&["delete", "configmap", "r", "-n", &ns.0])
        .status
        .success());
    eventually(Duration::from_secs(10), "lost after the restart", || {
        (get(&d, &id)["status"] == "lost").then_some(())
    });
    let (s, v) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200, "{v}");
}

#[test]
fn a_bad_manifest_is_refused_naming_the_document_and_leaves_nothing_applied() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nae2e");
    let (d, _dir) = daemon(cp, "");
    // The second document is refused by the server: the first is rolled back.
    let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "other"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:local"}]}}}});
    let (s, e) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec(
            "bad",
            &ns.0,
            json!([configmap("first", json!({})), bad]),
        )),
    );
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["field"]
            .as_str()
            .unwrap()
            .starts_with("k8s.manifest[1]"),
        "{e}"
    );
    assert!(cp.get_json(&["configmap", "first", "-n", &ns.0]).is_none());
    let (_, l) = d.http("GET", "/v1/objects", None);
    assert!(l["objects"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["name"] != "bad"));

    // A kind the cluster does not serve: 400 naming the document's kind, before any apply.
    let (s, e) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec(
            "bad2",
            &ns.0,
            json!([configmap("first", json!({})),
                {"apiVersion": "nodeagent.test/v9", "kind": "Nothing", "metadata": {"name": "n"}}]),
        )),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "k8s.manifest[1].kind");
    assert!(cp.get_json(&["configmap", "first", "-n", &ns.0]).is_none());

    // Checked without the cluster: a document without a name.
    let (s, e) = d.http(
        "POST",
        "/v1/objects",
        Some(&spec(
            "bad3",
            &ns.0,
            json!("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"),
        )),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "k8s.manifest[0].metadata.name");

    // Something that exists and is not the agent's is not taken over.
    assert!(cp
        .kubectl(&["create", "configmap", "theirs", "-n", &ns.0])
        .status
        .success());
    let (s, e) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec(
            "theirs",
            &ns.0,
            json!([configmap("theirs", json!({"k": "v"}))]),
        )),
    );
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["field"], "k8s.manifest[0]");
    let theirs = cp.get_json(&["configmap", "theirs", "-n", &ns.0]).unwrap();
    assert!(theirs["metadata"].get("labels").is_none(), "{theirs}");
}

#[test]
fn the_policy_limits_namespaces_and_kinds() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nae2e");
    let (d, _dir) = daemon(
        cp,
        &format!(
            "[policy]\nk8s_namespaces = [\"{}\"]\nk8s_kinds = [\"ConfigMap\"]\n",
            ns.0
        ),
    );
    let (s, e) = d.http(
        "POST",
        "/v1/objects",
        Some(&spec(
            "p1",
            "kube-system",
            json!([configmap("x", json!({}))]),
        )),
    );
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["rule"], "policy.k8s_namespaces");
    assert_eq!(e["error"]["field"], "k8s.namespace");
    let mut m = configmap("x", json!({}));
    m["metadata"]["namespace"] = json!("default");
    let (s, e) = d.http("POST", "/v1/objects", Some(&spec("p2", &ns.0, json!([m]))));
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["field"], "k8s.manifest[0].metadata.namespace");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    let (s, e) = d.http(
        "POST",
        "/v1/objects",
        Some(&spec("p3", &ns.0, json!([secret]))),
    );
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["rule"], "policy.k8s_kinds");
    assert_eq!(e["error"]["field"], "k8s.manifest[0].kind");
    assert!(cp.get_json(&["secret", "s", "-n", &ns.0]).is_none());
    // A cluster-scoped kind lies outside every allowed namespace: refused once the cluster has
    // said it is cluster-scoped, although the kinds rule allows its group by a wildcard (only
    // naming the kind exactly lets it through).
    let (d2, _dir2) = daemon(
        cp,
        &format!(
            "[policy]\nk8s_namespaces = [\"{}\"]\nk8s_kinds = [\"ConfigMap\", \"rbac.authorization.k8s.io/*\"]\n",
            ns.0
        ),
    );
    let role_name = format!("nae2e-{}", random_suffix());
    let cr = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role_name}, "rules": []});
    let (s, e) = d2.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec(
            "p5",
            &ns.0,
            json!([configmap("before", json!({})), cr]),
        )),
    );
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["rule"], "policy.k8s_namespaces");
    assert_eq!(e["error"]["field"], "k8s.manifest[1].kind");
    assert!(cp.get_json(&["clusterrole", &role_name]).is_none());
    assert!(cp.get_json(&["configmap", "before", "-n", &ns.0]).is_none());

    let (s, o) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("p4", &ns.0, json!([configmap("ok", json!({}))]))),
    );
    assert_eq!(s, 201, "{o}");
    let id = o["id"].as_str().unwrap().to_string();
    // A PATCH may not reach what a create may not.
    let mut m = configmap("ok", json!({}));
    m["metadata"]["namespace"] = json!("default");
    let (s, e) = d.http(
        "PATCH",
        &format!("/v1/objects/{id}"),
        Some(&json!({"k8s": {"manifest": [m]}})),
    );
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["rule"], "policy.k8s_namespaces");
    assert!(cp.get_json(&["configmap", "ok", "-n", "default"]).is_none());
    let (s, _) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200);
}

#[test]
fn without_a_cluster_the_kind_answers_503_and_the_others_work() {
    let d = Daemon::start();
    let (s, e) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec(
            "nocluster",
            "default",
            json!([configmap("x", json!({}))]),
        )),
    );
    assert_eq!(s, 503, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[[cluster]]"),
        "{e}"
    );
    let (s, o) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(
            &json!({"name": "p", "kind": "process", "process": {"command": ["/bin/sleep", "30"]}}),
        ),
    );
    assert_eq!(s, 201, "{o}");
    let (s, _) = d.http(
        "DELETE",
        &format!("/v1/objects/{}?wait=true", o["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(s, 200);
}

#[test]
fn cluster_credentials_never_appear_in_logs_events_or_the_api() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nae2e");
    let (d, _dir) = daemon(cp, "");
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("cred", &ns.0, json!([configmap("c", json!({}))]))),
    );
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    // A failing apply too (its error passes through the agent).
    let (s, e) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec(
            "cred2",
            &ns.0,
            json!([{"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "d"}, "data": {"k": 7}}]),
        )),
    );
    assert_eq!(s, 400, "{e}");
    // The server's schema refusal names the document's field.
    assert_eq!(e["error"]["field"], "k8s.manifest[0].data.k", "{e}");
    let (_, all) = d.http("GET", "/v1/objects", None);
    let (_, ev) = d.http("GET", "/v1/events", None);
    let (_, m) = d.get_text("/metrics");
    for (what, text) in [
        ("the objects", all.to_string()),
        ("the events", ev.to_string()),
        ("/metrics", m),
        ("the log", d.log()),
    ] {
        assert!(!text.contains(&cp.token), "the cluster token is in {what}");
    }
    let (s, _) = d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None);
    assert_eq!(s, 200);
}

/// `DELETE ?wait=true` answers once the resources are gone, even when a finalizer holds one
/// past the node's stop grace (here 1 s): the kind waits up to `k8s.timeout`.
#[test]
fn a_delete_with_wait_answers_once_a_finalizer_lets_go() {
    let cp = control_plane();
    let ns = Ns::new(cp, "nae2e");
    let (d, _dir) = daemon(cp, "stop_grace = \"1s\"\n");
    let mut held = configmap("held", json!({"k": "v"}));
    held["metadata"]["finalizers"] = json!(["nodeagent.test/hold"]);
    let (s, obj) = d.http(
        "POST",
        "/v1/objects?wait=true",
        Some(&spec("held", &ns.0, json!([held]))),
    );
    assert_eq!(s, 201, "{obj}");
    let id = obj["id"].as_str().unwrap().to_string();
    std::thread::scope(|scope| {
        let deleting =
            scope.spawn(|| d.http("DELETE", &format!("/v1/objects/{id}?wait=true"), None));
        // Past the stop grace, the finalizer still holds it: no answer yet.
        let cm = eventually(Duration::from_secs(10), "the deletion begun", || {
            let cm = cp.get_json(&["configmap", "held", "-n", &ns.0])?;
            cm["metadata"]["deletionTimestamp"]
                .is_string()
                .then_some(cm)
        });
        assert_eq!(cm["metadata"]["finalizers"][0], "nodeagent.test/hold");
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            !deleting.is_finished(),
            "the delete answered while the resource was held"
        );
        let o = cp.kubectl(&[
            "patch",
            "configmap",
            "held",
            "-n",
            &ns.0,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (s, v) = deleting.join().unwrap();
        assert_eq!(s, 200, "{v}");
    });
    assert!(cp.get_json(&["configmap", "held", "-n", &ns.0]).is_none());
    let (s, _) = d.http("GET", &format!("/v1/objects/{id}"), None);
    assert_eq!(s, 404);
}
