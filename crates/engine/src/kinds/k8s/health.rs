//! Readiness of a resource from what the cluster says of it (no I/O).
//!
//! The rules are kubectl's `rollout status` and Helm's `--wait`, reduced to what a status
//! says: the controller has seen the latest spec (`observedGeneration` caught up), and then
//! - Deployment: `Available` true and every replica updated and available; degraded when
//!   `Progressing` is false (past its progress deadline) or `ReplicaFailure` is true;
//! - StatefulSet, ReplicaSet: ready replicas = replicas; DaemonSet: ready = desired;
//! - Pod: `Ready` true, or phase `Succeeded`; degraded when `Failed`;
//! - Job: `Complete` true; degraded when `Failed` is true;
//! - PersistentVolumeClaim: phase `Bound`; CustomResourceDefinition: `Established` true;
//! - anything else with a `Ready` (or `Available`) condition: that condition;
//! - anything else: ready once applied (a ConfigMap, a Service, a custom resource without
//!   conditions).

use nodeagent_types::K8sState;
use serde_json::Value;

/// The state of a resource and, when it is not ready, why.
pub fn health(kind: &str, obj: &Value) -> (K8sState, Option<String>) {
    let status = obj.get("status").unwrap_or(&Value::Null);
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    let workload = matches!(
        kind,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
    );
    if workload {
        match (generation, observed) {
            (Some(g), Some(o)) if o >= g => {}
            (Some(_), _) => {
                return (
                    K8sState::Applied,
                    Some("the controller has not observed the latest spec yet".into()),
                )
            }
            _ => {}
        }
    }
    let int = |p: &str| status.get(p).and_then(Value::as_i64).unwrap_or(0);
    let spec_replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    match kind {
        "Deployment" => {
            if let Some(c) = condition(status, "Progressing") {
                if c.status == "False" {
                    return (K8sState::Degraded, Some(c.describe()));
                }
            }
            if let Some(c) = condition(status, "ReplicaFailure") {
                if c.status == "True" {
                    return (K8sState::Degraded, Some(c.describe()));
                }
            }
            if int("updatedReplicas") < spec_replicas {
                return (
                    K8sState::Applied,
                    Some(format!(
                        "{} of {spec_replicas} replicas updated",
                        int("updatedReplicas")
                    )),
                );
            }
            match condition(status, "Available") {
                Some(c) if c.status == "True" => {}
                Some(c) => return (K8sState::Applied, Some(c.describe())),
                None => return (K8sState::Applied, Some("no Available condition yet".into())),
            }
            if int("availableReplicas") < spec_replicas {
                return (
                    K8sState::Applied,
                    Some(format!(
                        "{} of {spec_replicas} replicas available",
                        int("availableReplicas")
                    )),
                );
            }
            (K8sState::Ready, None)
        }
        "StatefulSet" | "ReplicaSet" => {
            if int("readyReplicas") < spec_replicas {
                return (
                    K8sState::Applied,
                    Some(format!(
                        "{} of {spec_replicas} replicas ready",
                        int("readyReplicas")
                    )),
                );
            }
            (K8sState::Ready, None)
        }
        "DaemonSet" => {
            let want = int("desiredNumberScheduled");
            if int("numberReady") < want || int("updatedNumberScheduled") < want {
                return (
                    K8sState::Applied,
                    Some(format!("{} of {want} pods ready", int("numberReady"))),
                );
            }
            (K8sState::Ready, None)
        }
        "Pod" => {
            let phase = status.get("phase").and_then(Value::as_str).unwrap_or("");
            match phase {
                "Succeeded" => (K8sState::Ready, None),
                "Failed" => (
                    K8sState::Degraded,
                    Some(format!(
                        "pod failed: {}",
                        status
                            .get("message")
                            .or_else(|| status.get("reason"))
                            .and_then(Value::as_str)
                            .unwrap_or("no reason given")
                    )),
                ),
                _ => match condition(status, "Ready") {
                    Some(c) if c.status == "True" => (K8sState::Ready, None),
                    Some(c) => (K8sState::Applied, Some(c.describe())),
                    None => match condition(status, "PodScheduled") {
                        Some(c) if c.status != "True" => (K8sState::Applied, Some(c.describe())),
                        _ => (
                            K8sState::Applied,
                            Some(format!(
                                "phase {}",
                                if phase.is_empty() { "unknown" } else { phase }
                            )),
                        ),
                    },
                },
            }
        }
        "Job" => {
            if let Some(c) = condition(status, "Failed").filter(|c| c.status == "True") {
                return (K8sState::Degraded, Some(c.describe()));
            }
            match condition(status, "Complete") {
                Some(c) if c.status == "True" => (K8sState::Ready, None),
                _ => (
                    K8sState::Applied,
                    Some(format!(
                        "{} succeeded, {} active",
                        int("succeeded"),
                        int("active")
                    )),
                ),
            }
        }
        "PersistentVolumeClaim" => match status.get("phase").and_then(Value::as_str) {
            Some("Bound") => (K8sState::Ready, None),
            Some("Lost") => (K8sState::Degraded, Some("claim lost its volume".into())),
            p => (
                K8sState::Applied,
                Some(format!("phase {}", p.unwrap_or("unknown"))),
            ),
        },
        "CustomResourceDefinition" => match condition(status, "Established") {
            Some(c) if c.status == "True" => (K8sState::Ready, None),
            Some(c) => (K8sState::Applied, Some(c.describe())),
            None => (K8sState::Applied, Some("not established yet".into())),
        },
        _ => match condition(status, "Ready").or_else(|| condition(status, "Available")) {
            Some(c) if c.status == "True" => (K8sState::Ready, None),
            Some(c) => (K8sState::Applied, Some(c.describe())),
            None => (K8sState::Ready, None),
        },
    }
}

/// One entry of `status.conditions`.
struct Condition<'a> {
    kind: &'a str,
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

impl Condition<'_> {
    fn describe(&self) -> String {
        let mut s = format!("{}={}", self.kind, self.status);
        if !self.reason.is_empty() {
            s.push_str(": ");
            s.push_str(self.reason);
        }
        if !self.message.is_empty() {
            s.push_str(": ");
            s.push_str(self.message);
        }
        s
    }
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<Condition<'a>> {
    let list = status.get("conditions")?.as_array()?;
    let c = list
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?;
    let f = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
    Some(Condition {
        kind: f("type"),
        status: f("status"),
        reason: f("reason"),
        message: f("message"),
    })
}

/// The state of a whole manifest from its resources': degraded if one is, applied while one
/// is not ready (with the first such reason), ready when all are.
pub fn overall<'a>(
    states: impl Iterator<Item = (&'a str, &'a str, K8sState, Option<&'a str>)>,
) -> (K8sState, Option<String>) {
    let mut first_applied = None;
    for (kind, name, st, reason) in states {
        match st {
            K8sState::Degraded | K8sState::Gone => {
                return (
                    K8sState::Degraded,
                    Some(format!("{kind} {name}: {}", reason.unwrap_or(st.as_str()))),
                )
            }
            K8sState::Applied if first_applied.is_none() => {
                first_applied = Some(format!("{kind} {name}: {}", reason.unwrap_or("not ready")));
            }
            _ => {}
        }
    }
    match first_applied {
        Some(r) => (K8sState::Applied, Some(r)),
        None => (K8sState::Ready, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_without_available_pods_is_applied_with_its_condition() {
        let d = json!({
            "metadata": {"generation": 1},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                "unavailableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                     "message": "Deployment does not have minimum availability."},
                    {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}
        });
        let (st, why) = health("Deployment", &d);
        assert_eq!(st, K8sState::Applied);
        assert_eq!(
            why.as_deref(),
            Some("Available=False: MinimumReplicasUnavailable: Deployment does not have minimum availability.")
        );
    }

    #[test]
    fn a_deployment_is_ready_or_degraded_by_its_conditions() {
        let mut d = json!({
            "metadata": {"generation": 2},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2,
                "conditions": [{"type": "Available", "status": "True"},
                               {"type": "Progressing", "status": "True"}]}
        });
        assert_eq!(health("Deployment", &d).0, K8sState::Ready);
        d["status"]["observedGeneration"] = json!(1);
        assert_eq!(health("Deployment", &d).0, K8sState::Applied);
        d["status"]["observedGeneration"] = json!(2);
        d["status"]["conditions"][1] = json!({"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded"});
        let (st, why) = health("Deployment", &d);
        assert_eq!(st, K8sState::Degraded);
        assert!(why.unwrap_or_default().contains("ProgressDeadlineExceeded"));
    }

    #[test]
    fn pods_jobs_and_plain_objects() {
        let pending = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}});
        assert_eq!(health("Pod", &pending).0, K8sState::Applied);
        let ready = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}]}});
        assert_eq!(health("Pod", &ready).0, K8sState::Ready);
        assert_eq!(
            health("Pod", &json!({"status": {"phase": "Failed"}})).0,
            K8sState::Degraded
        );
        let failed = json!({"status": {"conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded"}]}});
        assert_eq!(health("Job", &failed).0, K8sState::Degraded);
        assert_eq!(health("ConfigMap", &json!({"data": {}})).0, K8sState::Ready);
        let crd = json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert_eq!(health("CustomResourceDefinition", &crd).0, K8sState::Ready);
        assert_eq!(
            health("CustomResourceDefinition", &json!({})).0,
            K8sState::Applied
        );
    }

    #[test]
    fn overall_takes_the_worst() {
        let all = [
            ("ConfigMap", "a", K8sState::Ready, None),
            (
                "Deployment",
                "w",
                K8sState::Applied,
                Some("Available=False"),
            ),
        ];
        let (st, why) = overall(all.iter().map(|(k, n, s, r)| (*k, *n, *s, *r)));
        assert_eq!(st, K8sState::Applied);
        assert_eq!(why.as_deref(), Some("Deployment w: Available=False"));
        let (st, _) = overall(std::iter::once(("ConfigMap", "a", K8sState::Gone, None)));
        assert_eq!(st, K8sState::Degraded);
        assert_eq!(overall(std::iter::empty()).0, K8sState::Ready);
    }
}
