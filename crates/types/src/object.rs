//! An object as the agent reports it (what GET returns), and the PATCH body.

use crate::error::ApiError;
use crate::kind::{Kind, Status};
use crate::spec::{ObjectSpec, Resources};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The id of the host object, which always exists.
pub const HOST_ID: &str = "host";

/// An object id: 16 lowercase hex digits, chosen by the agent. Being fixed-width hex, it is always
/// safe to use as a cgroup or file name.
pub type ObjectId = String;

/// Generates a fresh random object id.
pub fn new_object_id() -> ObjectId {
    let mut b = [0u8; 8];
    // getrandom only fails where the OS has no entropy source at all; fall back to the clock
    // rather than refusing to create objects.
    if fill_random(&mut b).is_err() {
        b = Timestamp::now().as_nanos().to_le_bytes();
    }
    let mut s = String::with_capacity(16);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn fill_random(b: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(b)
}

/// Whether `s` has the shape of an id the agent generates.
pub fn is_object_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub id: ObjectId,
    pub name: String,
    pub kind: Kind,
    pub status: Status,
    pub spec: ObjectSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal that ended the process, where one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default)]
    pub paused: bool,
    /// How many times the agent restarted the workload (restart policy).
    #[serde(default)]
    pub restarts: u32,
    /// The object's cgroup path, relative to each hierarchy's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Files holding the process's output, where the agent captures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_path: Option<String>,
    /// Report tasks running for this object: sink name → interval.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub push: BTreeMap<String, crate::quantity::Duration>,
    /// The report mode of the tasks in `push` that asked for one (the others run in their
    /// sink's mode).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub push_mode: BTreeMap<String, crate::report::ReportMode>,
    /// Why the object is failed or lost, or what last went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Docker side of a `container` object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerStatus>,
    /// The QEMU side of a `vm` object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmStatus>,
    /// The cluster side of a `k8s` object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8sStatus>,
    /// The release of a `helm` object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmStatus>,
}

/// What the agent knows of a `helm` object's release (from `helm status` and `helm history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelmStatus {
    pub cluster: String,
    pub release: String,
    pub namespace: String,
    /// The release's current revision (0 before the first install ends).
    #[serde(default)]
    pub revision: u32,
    /// `name-version` of the chart of the current revision.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chart: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_version: String,
    /// helm's status of the release: `deployed`, `failed`, `pending-install`,
    /// `pending-upgrade`, `pending-rollback`, `superseded`, `uninstalling`...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// helm's description of the current revision ("Upgrade complete", or what failed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The revision history, oldest first (`helm history`).
    #[serde(default)]
    pub history: Vec<HelmRevision>,
    /// Whether the release has the spec's chart, version and values (a PATCH being
    /// upgraded: pending).
    #[serde(default)]
    pub sync: SyncState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_message: Option<String>,
}

/// One revision of a release, as `helm history` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelmRevision {
    pub revision: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub updated: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chart: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// What the agent knows of a `k8s` object's resources in its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sStatus {
    pub cluster: String,
    /// The whole manifest: `applied` until every resource is ready, `ready`, or `degraded`
    /// when one failed (the object's status stays `running`: its resources exist).
    pub state: K8sState,
    /// Why it is not ready, or what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each applied resource, in manifest order.
    #[serde(default)]
    pub resources: Vec<K8sResource>,
    /// Whether the cluster has the manifest of the spec (a PATCH being applied: pending).
    #[serde(default)]
    pub sync: SyncState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_message: Option<String>,
}

/// One resource the agent applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sResource {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    pub state: K8sState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Readiness of a resource, or of a whole manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum K8sState {
    /// In the cluster, not (yet) ready.
    #[default]
    Applied,
    Ready,
    /// Failed (a deployment past its progress deadline, a failed pod or job).
    Degraded,
    /// Deleted outside the agent.
    Gone,
}

impl K8sState {
    pub fn as_str(self) -> &'static str {
        match self {
            K8sState::Applied => "applied",
            K8sState::Ready => "ready",
            K8sState::Degraded => "degraded",
            K8sState::Gone => "gone",
        }
    }
}

/// What the agent knows of a QEMU guest it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// The accelerator qemu runs with (`kvm` or `tcg`): what `accel: auto` picked.
    pub accel_used: String,
    /// QMP's `query-status` at the last look (start, re-attachment): `running`, `paused`, ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qmp_status: String,
    /// The serial console's capture.
    pub console_path: String,
    /// QMP's unix socket.
    pub qmp_path: String,
    /// Guest-visible RAM in bytes, where the balloon reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_actual: Option<u64>,
    /// Whether the guest has what the `vm` section asks (a balloon change in flight: pending).
    #[serde(default)]
    pub sync: SyncState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_message: Option<String>,
}

/// What the agent knows of a container it runs or adopted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Docker's container id (64 hex digits).
    pub id: String,
    /// Whether the agent adopted the container rather than creating it.
    #[serde(default)]
    pub adopted: bool,
    /// Whether Docker's stored config agrees with the limits written to the cgroup.
    pub sync: SyncState,
    /// Why the last sync failed, where it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_message: Option<String>,
}

/// State of bringing a driver's own copy of the limits in line with the cgroup (fast path
/// first, driver second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// The driver holds the limits the cgroup has.
    #[default]
    InSync,
    /// The cgroup was written; the driver has not been told yet.
    Pending,
    /// The driver refused or could not be reached; `sync_message` says why.
    Failed,
}

impl Object {
    /// A new object from its spec, with nothing known yet about its workload.
    pub fn new(id: ObjectId, spec: ObjectSpec, status: Status) -> Object {
        let now = Timestamp::now();
        Object {
            id,
            name: spec.name.clone(),
            kind: spec.kind,
            status,
            spec,
            pid: None,
            exit_code: None,
            exit_signal: None,
            created_at: now,
            updated_at: now,
            paused: false,
            restarts: 0,
            cgroup: None,
            stdout_path: None,
            stderr_path: None,
            push: BTreeMap::new(),
            push_mode: BTreeMap::new(),
            message: None,
            container: None,
            vm: None,
            k8s: None,
            helm: None,
        }
    }
}

/// Body of `PATCH /v1/objects/{id}`: `resources`, `paused`, and changes to the kind's own
/// section under the kind's key (`{"vm": {"memory": "96Mi"}}`). What a kind can change in
/// place is the kind's to say ([`KindDriver::patch_section`] in the engine); the core only
/// checks that the key is the object's kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ObjectPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// The section key and its changes, as given (the kind reads them).
    #[serde(skip)]
    pub section: Option<(String, serde_json::Value)>,
}

/// A key of a PATCH body: an unknown one is refused as serde's own unknown field is, while the
/// key is read (so the error names it).
enum PatchKey {
    Resources,
    Paused,
    Section(String),
}

impl<'de> Deserialize<'de> for PatchKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PatchKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PatchKey, E> {
                match v {
                    "resources" => Ok(PatchKey::Resources),
                    "paused" => Ok(PatchKey::Paused),
                    k if crate::spec::section_kind(k).is_some() => {
                        Ok(PatchKey::Section(k.to_string()))
                    }
                    other => {
                        const FIELDS: &[&str] = &["resources", "paused", "<the kind's section>"];
                        Err(E::unknown_field(other, FIELDS))
                    }
                }
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Refuses a value with a message, from inside it (so a path-tracking reader names its key).
struct Reject(String);

impl<'de> serde::de::DeserializeSeed<'de> for Reject {
    type Value = ObjectPatch;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<ObjectPatch, D::Error> {
        // Every value is refused by the visitor, through the reader (which then names the key).
        d.deserialize_any(self)
    }
}

impl serde::de::Visitor<'_> for Reject {
    type Value = ObjectPatch;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ObjectPatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ObjectPatch;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object with `resources`, `paused` or the kind's section")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<ObjectPatch, A::Error> {
                let mut p = ObjectPatch::default();
                while let Some(k) = m.next_key::<PatchKey>()? {
                    match k {
                        PatchKey::Resources if p.resources.is_none() => {
                            p.resources = Some(m.next_value()?)
                        }
                        PatchKey::Paused if p.paused.is_none() => p.paused = Some(m.next_value()?),
                        PatchKey::Resources => {
                            return m.next_value_seed(Reject("no second `resources`".into()))
                        }
                        PatchKey::Paused => {
                            return m.next_value_seed(Reject("no second `paused`".into()))
                        }
                        PatchKey::Section(key) => {
                            if p.section.is_some() {
                                // Refused inside the value, so the error names the key.
                                return m.next_value_seed(Reject(format!(
                                    "no `{key}` beside another section (a patch changes one kind's section)"
                                )));
                            }
                            // A map: anything else is refused at the key's own path.
                            let v: serde_json::Map<String, serde_json::Value> = m.next_value()?;
                            p.section = Some((key, serde_json::Value::Object(v)));
                        }
                    }
                }
                Ok(p)
            }
        }
        d.deserialize_map(V)
    }
}

impl ObjectPatch {
    pub fn from_json(body: &[u8]) -> Result<ObjectPatch, ApiError> {
        let p: ObjectPatch = crate::spec::from_json(body)?;
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        if self.resources.is_none() && self.paused.is_none() && self.section.is_none() {
            return Err(ApiError::invalid(
                "resources",
                "nothing to update: give `resources`, `paused` and/or the kind's section",
            ));
        }
        if let Some(r) = &self.resources {
            r.validate("resources")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex() {
        let a = new_object_id();
        let b = new_object_id();
        assert!(is_object_id(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn patch_names_field() {
        let e = ObjectPatch::from_json(br#"{"resources":{"cpu":0}}"#).expect_err("bad");
        assert_eq!(e.field.as_deref(), Some("resources.cpu"));
        let e = ObjectPatch::from_json(br#"{"paused":"yes"}"#).expect_err("bad");
        assert_eq!(e.field.as_deref(), Some("paused"));
        let e = ObjectPatch::from_json(br#"{}"#).expect_err("empty");
        assert_eq!(e.field.as_deref(), Some("resources"));
        assert!(ObjectPatch::from_json(br#"{"paused":true}"#).is_ok());
        let e = ObjectPatch::from_json(br#"{"bogus":1}"#).expect_err("unknown");
        assert!(e.message.contains("unknown field `bogus`"), "{e:?}");
        let p = ObjectPatch::from_json(br#"{"vm":{"memory":"96Mi"}}"#).expect("section");
        assert_eq!(p.section.as_ref().map(|s| s.0.as_str()), Some("vm"));
        let e = ObjectPatch::from_json(br#"{"vm":3}"#).expect_err("not an object");
        assert_eq!(e.field.as_deref(), Some("vm"), "{e:?}");
    }
}
