//! What the `k8s` kind does in a cluster: plan a manifest (discovery, ownership), apply it with
//! server-side apply, delete, and find its resources again. Each function is one operation
//! the core runs off its loop; none keeps state of its own.

use super::cluster::{api_error, Cluster, Resolved};
use super::health::health;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use nodeagent_types::{ApiError, Document, ErrorCode, K8sState, K8S_LABEL_ID};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "nodeagent";
/// How long an apply waits for a kind that a CRD earlier in the same manifest defines.
const CRD_WAIT: Duration = Duration::from_secs(30);

/// A resource the agent applied: what finds it again (kept in the object's handle, so that a
/// restarted agent needs no discovery to look at it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ref {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl Ref {
    fn new(r: &Resolved, namespace: Option<String>, name: &str) -> Ref {
        Ref {
            group: r.resource.group.clone(),
            version: r.resource.version.clone(),
            kind: r.resource.kind.clone(),
            plural: r.resource.plural.clone(),
            namespace: if r.namespaced { namespace } else { None },
            name: name.to_string(),
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    pub fn api(&self, client: Client) -> Api<DynamicObject> {
        let ar = self.api_resource();
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &ar),
            None => Api::all_with(client, &ar),
        }
    }

    /// `Deployment default/web`, `Namespace team`.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// The same resource (group, kind, namespace and name; not the version, which a
    /// manifest may change).
    pub fn same(&self, o: &Ref) -> bool {
        self.group == o.group
            && self.kind == o.kind
            && self.namespace == o.namespace
            && self.name == o.name
    }
}

/// What the cluster says of an applied resource.
#[derive(Debug, Clone)]
pub struct Seen {
    pub r: Ref,
    pub uid: String,
    pub state: K8sState,
    pub reason: Option<String>,
}

impl Seen {
    pub fn of(r: Ref, obj: &DynamicObject) -> Seen {
        let v = serde_json::to_value(obj).unwrap_or(Value::Null);
        let (state, reason) = health(&r.kind, &v);
        Seen {
            uid: obj.metadata.uid.clone().unwrap_or_default(),
            r,
            state,
            reason,
        }
    }
}

/// A document with where it goes: `target` is `None` for a kind that a CRD earlier in the
/// manifest defines (resolved once that CRD is applied).
pub struct Planned {
    pub doc: Document,
    pub target: Option<Resolved>,
    pub namespace: Option<String>,
}

impl Planned {
    fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(&self.doc.group, &self.doc.version, &self.doc.kind)
    }
}

/// Phase one of an apply: every document's kind is served (or defined by a CRD of the same
/// manifest), cluster-scoped kinds name no namespace and pass the policy's namespace rule, and
/// nothing in the way belongs to someone else (a resource without this object's id label).
pub async fn plan(
    cluster: &Cluster,
    client: &Client,
    policy: &crate::policy::Policy,
    id: &str,
    docs: Vec<Document>,
    default_ns: &str,
) -> Result<Vec<Planned>, ApiError> {
    let mut out: Vec<Planned> = Vec::with_capacity(docs.len());
    for doc in docs {
        let gvk = GroupVersionKind::gvk(&doc.group, &doc.version, &doc.kind);
        let mut target = cluster.resolve(client, &gvk, false).await?;
        if target.is_none() {
            // The cache may predate a CRD created since: ask again before refusing.
            target = cluster.resolve(client, &gvk, true).await?;
        }
        let Some(target) = target else {
            if let Some(crd) = out.iter().find(|p| defines(&p.doc, &doc)) {
                let scope = crd.doc.object.get("spec").and_then(|s| s.get("scope"));
                if scope.and_then(Value::as_str) == Some("Cluster") {
                    policy.check_k8s_cluster_scoped(&doc)?;
                }
                out.push(Planned {
                    namespace: doc
                        .namespace
                        .clone()
                        .or_else(|| Some(default_ns.to_string())),
                    doc,
                    target: None,
                });
                continue;
            }
            return Err(ApiError::invalid(
                doc.field("kind"),
                format!(
                    "cluster {} serves no kind {} in {}",
                    cluster.name(),
                    doc.kind,
                    doc.api_version()
                ),
            ));
        };
        let namespace = if target.namespaced {
            Some(
                doc.namespace
                    .clone()
                    .unwrap_or_else(|| default_ns.to_string()),
            )
        } else {
            policy.check_k8s_cluster_scoped(&doc)?;
            if doc.namespace.is_some() {
                return Err(ApiError::invalid(
                    doc.field("metadata.namespace"),
                    format!("{} is cluster-scoped: leave the namespace out", doc.kind),
                ));
            }
            None
        };
        let r = Ref::new(&target, namespace.clone(), &doc.name);
        check_owner(cluster, client, id, &r, &doc).await?;
        out.push(Planned {
            doc,
            target: Some(target),
            namespace,
        });
    }
    Ok(out)
}

/// Whether `crd` is a CustomResourceDefinition that defines the kind of `doc`.
fn defines(crd: &Document, doc: &Document) -> bool {
    crd.group == "apiextensions.k8s.io"
        && crd.kind == "CustomResourceDefinition"
        && crd
            .object
            .get("spec")
            .and_then(|s| s.get("group"))
            .and_then(Value::as_str)
            == Some(doc.group.as_str())
        && crd
            .object
            .get("spec")
            .and_then(|s| s.pointer("/names/kind"))
            .and_then(Value::as_str)
            == Some(doc.kind.as_str())
}

/// The resource, or `None` when it is not there. Any 404 means not there: a kind whose CRD
/// was deleted answers a plain-text `404 page not found` (not a `Status`), and its resources
/// are gone with it.
async fn fetch(r: &Ref, client: &Client) -> Result<Option<DynamicObject>, kube::Error> {
    match r.api(client.clone()).get(&r.name).await {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Refuses a resource that exists and is not this object's: the agent never takes over what
/// it did not make.
async fn check_owner(
    cluster: &Cluster,
    client: &Client,
    id: &str,
    r: &Ref,
    doc: &Document,
) -> Result<(), ApiError> {
    let existing = fetch(r, client)
        .await
        .map_err(|e| api_error(cluster.name(), e).with_field(doc.field("")))?;
    let Some(obj) = existing else {
        return Ok(());
    };
    let owner = obj
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(K8S_LABEL_ID));
    match owner {
        Some(o) if o == id => Ok(()),
        Some(o) => Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!(
                "{} already exists in cluster {} and belongs to object {o}",
                r.describe(),
                cluster.name()
            ),
        )
        .with_field(doc.field(""))),
        None => Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!(
                "{} already exists in cluster {} and was not made by the agent (no {K8S_LABEL_ID} label)",
                r.describe(),
                cluster.name()
            ),
        )
        .with_field(doc.field(""))),
    }
}

/// An apply that stopped at a document: the error, and what it applied before.
pub struct Partial {
    pub error: ApiError,
    pub applied: Vec<Ref>,
}

/// Applies every document in order (server-side apply, field manager `nodeagent`, the id label
/// added), or with `dry_run` has the server check them without storing anything.
pub async fn apply_all(
    cluster: &Cluster,
    client: &Client,
    id: &str,
    plan: &[Planned],
    dry_run: bool,
) -> Result<Vec<Seen>, Partial> {
    let mut seen: Vec<Seen> = Vec::with_capacity(plan.len());
    for p in plan {
        let target = match &p.target {
            Some(t) => t.clone(),
            None if dry_run => continue,
            None => match wait_for_kind(cluster, client, &p.gvk()).await {
                Ok(t) => t,
                Err(error) => {
                    return Err(Partial {
                        error: error.with_field(p.doc.field("kind")),
                        applied: seen.into_iter().map(|s| s.r).collect(),
                    })
                }
            },
        };
        let r = Ref::new(&target, p.namespace.clone(), &p.doc.name);
        match apply_one(cluster, client, id, p, &r, dry_run).await {
            Ok(obj) => seen.push(Seen::of(r, &obj)),
            Err(error) => {
                return Err(Partial {
                    error,
                    applied: seen.into_iter().map(|s| s.r).collect(),
                })
            }
        }
    }
    Ok(seen)
}

/// A kind defined by a CRD just applied: discovery knows it once the CRD is established.
async fn wait_for_kind(
    cluster: &Cluster,
    client: &Client,
    gvk: &GroupVersionKind,
) -> Result<Resolved, ApiError> {
    let until = Instant::now() + CRD_WAIT;
    loop {
        if let Some(t) = cluster.resolve(client, gvk, true).await? {
            return Ok(t);
        }
        if Instant::now() >= until {
            return Err(ApiError::invalid(
                "kind",
                format!(
                    "cluster {} did not serve kind {} in {}/{} within {}s of applying its CRD",
                    cluster.name(),
                    gvk.kind,
                    gvk.group,
                    gvk.version,
                    CRD_WAIT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn apply_one(
    cluster: &Cluster,
    client: &Client,
    id: &str,
    p: &Planned,
    r: &Ref,
    dry_run: bool,
) -> Result<DynamicObject, ApiError> {
    let mut body = Value::Object(p.doc.object.clone());
    let meta = &mut body["metadata"];
    if !meta["labels"].is_object() {
        meta["labels"] = Value::Object(Default::default());
    }
    meta["labels"][K8S_LABEL_ID] = Value::String(id.to_string());
    match &r.namespace {
        Some(ns) => meta["namespace"] = Value::String(ns.clone()),
        None => {
            if let Some(m) = meta.as_object_mut() {
                m.remove("namespace");
            }
        }
    }
    let mut pp = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        pp = pp.dry_run();
    }
    r.api(client.clone())
        .patch(&r.name, &pp, &Patch::Apply(&body))
        .await
        .map_err(|e| doc_error(cluster.name(), &p.doc, r, e))
}

/// The server's refusal of a document, naming the document and, where the server names one
/// field, that field (`k8s.manifest[1].spec.replicas`).
fn doc_error(cluster: &str, doc: &Document, r: &Ref, e: kube::Error) -> ApiError {
    let field = match &e {
        kube::Error::Api(s) => s
            .details
            .as_ref()
            .and_then(|d| match d.causes.as_slice() {
                [one] if !one.field.is_empty() => Some(doc.field(&one.field)),
                _ => None,
            })
            .unwrap_or_else(|| doc.field("")),
        _ => doc.field(""),
    };
    let field = schema_field(&e).map_or(field, |f| doc.field(f));
    let mut err = api_error(cluster, e);
    if schema_field_message(&err.message).is_some() {
        // 1.20 answers 500 to an apply whose document does not fit the kind's schema
        // ("failed to create typed patch object: .data.k: expected string"); later servers
        // answer 422. It is the document's fault either way.
        err.code = ErrorCode::InvalidArgument;
    }
    err.message = format!("{}: {}", r.describe(), err.message);
    err.with_field(field)
}

/// The field of a schema refusal, from its message (`.data.k` → `data.k`).
fn schema_field(e: &kube::Error) -> Option<&str> {
    match e {
        kube::Error::Api(s) => schema_field_message(&s.message),
        _ => None,
    }
}

fn schema_field_message(m: &str) -> Option<&str> {
    let rest = m.split_once("failed to create typed patch object: ")?.1;
    let path = rest.split_once(": ")?.0.strip_prefix('.')?;
    (!path.is_empty() && !path.contains(' ')).then_some(path)
}

/// Deletes `refs` in reverse order with background propagation; one already gone is fine.
pub async fn delete_all(cluster: &Cluster, client: &Client, refs: &[Ref]) -> Result<(), ApiError> {
    let dp = DeleteParams::background();
    for r in refs.iter().rev() {
        match r.api(client.clone()).delete(&r.name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                let mut err = api_error(cluster.name(), e);
                err.message = format!("deleting {}: {}", r.describe(), err.message);
                return Err(err);
            }
        }
    }
    Ok(())
}

/// The resources of `refs` that still exist.
pub async fn remaining(
    cluster: &Cluster,
    client: &Client,
    refs: &[Ref],
) -> Result<Vec<Ref>, ApiError> {
    let mut left = Vec::new();
    for r in refs {
        match fetch(r, client).await {
            Ok(Some(_)) => left.push(r.clone()),
            Ok(None) => {}
            Err(e) => return Err(api_error(cluster.name(), e)),
        }
    }
    Ok(left)
}

/// Looks at every resource of `refs` now: `None` for one that is gone.
pub async fn look(
    cluster: &Cluster,
    client: &Client,
    refs: &[Ref],
) -> Result<Vec<(Ref, Option<Seen>)>, ApiError> {
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        match fetch(r, client).await {
            Ok(Some(o)) => out.push((r.clone(), Some(Seen::of(r.clone(), &o)))),
            Ok(None) => out.push((r.clone(), None)),
            Err(e) => return Err(api_error(cluster.name(), e)),
        }
    }
    Ok(out)
}

/// The resources labelled with object `id` among the kinds of `kinds` (each kind once): what
/// a restarted agent finds of an object whose apply it did not see end.
pub async fn labelled(
    cluster: &Cluster,
    client: &Client,
    id: &str,
    kinds: &[Ref],
) -> Result<Vec<Seen>, ApiError> {
    let lp = ListParams::default().labels(&format!("{K8S_LABEL_ID}={id}"));
    let mut out = Vec::new();
    let mut done: Vec<(String, String)> = Vec::new();
    for k in kinds {
        if done.iter().any(|(g, p)| *g == k.group && *p == k.plural) {
            continue;
        }
        done.push((k.group.clone(), k.plural.clone()));
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &k.api_resource());
        let list = match api.list(&lp).await {
            Ok(l) => l,
            // The kind is gone (its CRD was deleted): so are its resources.
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(api_error(cluster.name(), e)),
        };
        for o in list.items {
            let Some(name) = o.metadata.name.clone() else {
                continue;
            };
            let r = Ref {
                namespace: o.metadata.namespace.clone(),
                name,
                ..k.clone()
            };
            out.push(Seen::of(r, &o));
        }
    }
    Ok(out)
}

/// Resolves the documents of a manifest to refs where the cluster serves their kind (a kind
/// it does not serve has no resources to find).
pub async fn kinds_of(
    cluster: &Cluster,
    client: &Client,
    docs: &[Document],
    default_ns: &str,
) -> Vec<Ref> {
    let mut out = Vec::new();
    for d in docs {
        let gvk = GroupVersionKind::gvk(&d.group, &d.version, &d.kind);
        if let Ok(Some(t)) = cluster.resolve(client, &gvk, false).await {
            let ns = d
                .namespace
                .clone()
                .unwrap_or_else(|| default_ns.to_string());
            out.push(Ref::new(&t, Some(ns), &d.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::schema_field_message;

    #[test]
    fn the_field_of_a_schema_refusal_is_read_from_its_message() {
        assert_eq!(
            schema_field_message(
                "failed to create typed patch object: .data.k: expected string, got &value.valueUnstructured{Value:7}"
            ),
            Some("data.k")
        );
        assert_eq!(
            schema_field_message(
                "failed to create typed patch object: .spec.template.spec.containers[name=\"c\"].image: expected string"
            ),
            Some("spec.template.spec.containers[name=\"c\"].image")
        );
        assert_eq!(schema_field_message("something else: .a: b"), None);
        assert_eq!(
            schema_field_message("failed to create typed patch object: no path"),
            None
        );
    }
}
