//! The `k8s` kind: a manifest applied to a Kubernetes cluster with server-side apply
//! (`apply.rs`), its resources followed by one watch task for the whole kind (`watch.rs`), and
//! their readiness read from their status (`health.rs`). Clusters come from the config file
//! (`cluster.rs`).
//!
//! An object is `running` while its resources exist; its `k8s` status section says whether
//! they are `applied`, `ready` or `degraded`, and lists each one. A resource deleted outside the
//! agent makes the object `lost`. Nothing here runs on the node, so there is no cgroup, no pid
//! and no sample; `resources` belong in the manifest's requests and limits and are refused.
//!
//! Every cluster call is an operation off the core's loop. What an operation learns comes back
//! as a note on its observation ([`Observed::Noted`]) or, for a sync, as a message through the
//! kind's watch channel, sent before the sync prunes (so that the watch's delete events of a
//! pruned resource never meet an object that still lists it).

pub mod apply;
pub mod cluster;
pub mod health;
pub mod watch;

pub use cluster::{ClusterConfig, Clusters};

use super::{
    Action, Caps, KindDriver, KindEnv, KindMsg, Observed, Prepared, Progress, Running, Step,
    StopCtx,
};
use crate::policy::Policy;
use apply::{Planned, Ref, Seen};
use nodeagent_drivers::cgroup::CgroupRef;
use nodeagent_types::{
    ApiError, EventKind, K8sResource, K8sSpec, K8sState, K8sStatus, K8sWait, Kind, KindSpec,
    Object, ObjectSpec, Status, SyncState, K8S_LABEL_ID,
};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use watch::{Follow, WatchKey, WatchMsg};

/// How often a create with `wait: ready` looks at its resources.
const READY_POLL: Duration = Duration::from_millis(250);
/// How often a delete looks whether its resources are gone.
const GONE_POLL: Duration = Duration::from_millis(200);

type Notify = Arc<dyn Fn(KindMsg) -> bool + Send + Sync>;

/// One applied resource, as the driver knows it now.
#[derive(Debug, Clone)]
struct Res {
    r: Ref,
    uid: String,
    state: K8sState,
    reason: Option<String>,
}

impl From<Seen> for Res {
    fn from(s: Seen) -> Res {
        Res {
            r: s.r,
            uid: s.uid,
            state: s.state,
            reason: s.reason,
        }
    }
}

/// What the driver keeps per object.
#[derive(Default)]
struct Work {
    cluster: String,
    /// Documents in the manifest, as phase one parsed it (for the `created` event).
    documents: usize,
    /// In manifest order.
    resources: Vec<Res>,
    deleting: bool,
    /// When the delete began: it waits for the resources to be gone for up to `k8s.timeout`.
    deleting_since: Option<Instant>,
    /// The overall state last told in an event.
    reported: Option<K8sState>,
    /// A listing of the watch did not show some of them: the next inspect looks.
    suspect: bool,
}

impl Work {
    fn overall(&self) -> (K8sState, Option<String>) {
        health::overall(self.resources.iter().map(|r| {
            (
                r.r.kind.as_str(),
                r.r.name.as_str(),
                r.state,
                r.reason.as_deref(),
            )
        }))
    }

    fn refs(&self) -> Vec<Ref> {
        self.resources.iter().map(|r| r.r.clone()).collect()
    }

    fn gone(&self) -> Option<&Res> {
        self.resources.iter().find(|r| r.state == K8sState::Gone)
    }

    fn find_mut(&mut self, key: &WatchKey, ns: Option<&str>, name: &str) -> Option<&mut Res> {
        self.resources.iter_mut().find(|r| {
            r.r.group == key.group
                && r.r.plural == key.plural
                && r.r.namespace.as_deref() == ns
                && r.r.name == name
        })
    }
}

/// What an operation learnt: the resources as they are now (replacing the list).
struct Learned {
    resources: Vec<Res>,
}

/// Messages of the kind's own operations, through the watch channel.
enum K8sMsg {
    /// A sync applied these (the whole manifest with `replace`, or part of it before failing).
    Tracked {
        id: String,
        seen: Vec<Seen>,
        replace: bool,
    },
    /// Look whether the overall state changed, and tell it in an event.
    Check(String),
}

pub struct K8sKind {
    clusters: Arc<Clusters>,
    policy: Arc<Policy>,
    objects: HashMap<String, Work>,
    notify: Option<Notify>,
    follow: Option<mpsc::UnboundedSender<Follow>>,
    watched: HashSet<WatchKey>,
    /// Per watch key in a listing: the resources listed so far.
    listing: HashMap<WatchKey, HashSet<(Option<String>, String)>>,
    /// Watch keys whose watcher failed (logged once until it recovers).
    failing: HashSet<WatchKey>,
}

fn running(cluster: &str, n: usize) -> Observed {
    Observed::Running(Running {
        pid: None,
        cgroup: None,
        net_pid: None,
        main: None,
        paused: None,
        detail: json!({"cluster": cluster, "resources": n}),
    })
}

fn noted(obs: Observed, resources: Vec<Res>) -> Observed {
    Observed::Noted(Box::new(obs), Box::new(Learned { resources }))
}

fn gone_message(r: &Ref) -> String {
    format!("{} was deleted outside the agent", r.describe())
}

impl K8sKind {
    pub fn new(env: &KindEnv, clusters: Vec<ClusterConfig>) -> K8sKind {
        K8sKind {
            clusters: Arc::new(Clusters::new(clusters)),
            policy: env.policy.clone(),
            objects: HashMap::new(),
            notify: None,
            follow: None,
            watched: HashSet::new(),
            listing: HashMap::new(),
            failing: HashSet::new(),
        }
    }

    fn section(spec: &ObjectSpec) -> Result<&K8sSpec, ApiError> {
        spec.section::<K8sSpec>()
            .ok_or_else(|| ApiError::invalid("k8s", "a k8s object needs its k8s section"))
    }

    /// Starts watching the kinds of `id`'s resources that no watcher follows yet.
    fn follow(&mut self, id: &str) {
        let Some(tx) = &self.follow else { return };
        let Some(w) = self.objects.get(id) else {
            return;
        };
        let Some(cluster) = self.clusters.get(&w.cluster) else {
            return;
        };
        for r in &w.resources {
            let key = WatchKey::of(&w.cluster, &r.r);
            if self.watched.insert(key.clone()) {
                let _ = tx.send(Follow {
                    key,
                    cluster: cluster.clone(),
                    kind: r.r.clone(),
                });
            }
        }
    }

    /// Asks the loop to look at `id`'s overall state (events are actions of `on_watch`).
    fn check_later(&self, id: &str) {
        if let Some(n) = &self.notify {
            n(Box::new(K8sMsg::Check(id.to_string())));
        }
    }

    /// The event for a change of `id`'s overall state, if it changed since the last one.
    fn transition(&mut self, id: &str) -> Option<Action> {
        let w = self.objects.get_mut(id)?;
        if w.deleting || w.gone().is_some() {
            return None;
        }
        let (state, reason) = w.overall();
        let before = w.reported.replace(state);
        if before == Some(state) {
            return None;
        }
        let n = w.resources.len();
        let (kind, message) = match state {
            K8sState::Ready => (EventKind::Ready, format!("all {n} resources are ready")),
            K8sState::Degraded => (
                EventKind::Degraded,
                format!("degraded: {}", reason.clone().unwrap_or_default()),
            ),
            _ if before.is_none() => return None,
            _ => (
                EventKind::Updated,
                format!("not ready: {}", reason.clone().unwrap_or_default()),
            ),
        };
        Some(Action::Emit {
            id: id.to_string(),
            kind,
            message,
            detail: json!({"state": state.as_str(), "reason": reason}),
        })
    }

    /// The object a watched resource belongs to (its id label), where that object is known, in
    /// the watch's cluster, and not being deleted (its own deletes are not news).
    fn owner(&self, key: &WatchKey, obj: &kube::api::DynamicObject) -> Option<String> {
        let id = obj.metadata.labels.as_ref()?.get(K8S_LABEL_ID)?;
        let w = self.objects.get(id)?;
        (!w.deleting && w.cluster == key.cluster).then(|| id.clone())
    }

    fn on_seen(&mut self, key: WatchKey, obj: &kube::api::DynamicObject) -> Vec<Action> {
        self.failing.remove(&key);
        let ns = obj.metadata.namespace.clone();
        let Some(name) = obj.metadata.name.clone() else {
            return Vec::new();
        };
        if let Some(l) = self.listing.get_mut(&key) {
            l.insert((ns.clone(), name.clone()));
        }
        let Some(id) = self.owner(&key, obj) else {
            return Vec::new();
        };
        let Some(w) = self.objects.get_mut(&id) else {
            return Vec::new();
        };
        let Some(res) = w.find_mut(&key, ns.as_deref(), &name) else {
            return Vec::new();
        };
        let seen = Seen::of(res.r.clone(), obj);
        if res.state == K8sState::Gone && res.uid == seen.uid {
            return Vec::new();
        }
        let changed = res.state != seen.state || res.reason != seen.reason || res.uid != seen.uid;
        *res = seen.into();
        if !changed {
            return Vec::new();
        }
        let mut actions: Vec<Action> = self.transition(&id).into_iter().collect();
        actions.push(Action::Refresh(id));
        actions
    }

    fn on_deleted(&mut self, key: WatchKey, obj: &kube::api::DynamicObject) -> Vec<Action> {
        let Some(id) = self.owner(&key, obj) else {
            return Vec::new();
        };
        let Some(w) = self.objects.get_mut(&id) else {
            return Vec::new();
        };
        let name = obj.metadata.name.clone().unwrap_or_default();
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        let Some(res) = w.find_mut(&key, obj.metadata.namespace.as_deref(), &name) else {
            return Vec::new();
        };
        if !res.uid.is_empty() && !uid.is_empty() && res.uid != uid {
            // An older incarnation of it.
            return Vec::new();
        }
        res.state = K8sState::Gone;
        res.reason = Some("deleted outside the agent".into());
        vec![Action::Refresh(id)]
    }

    fn on_listed(&mut self, key: WatchKey) -> Vec<Action> {
        self.failing.remove(&key);
        let Some(listed) = self.listing.remove(&key) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        for (id, w) in self.objects.iter_mut() {
            if w.deleting || w.cluster != key.cluster {
                continue;
            }
            let missing = w.resources.iter().any(|r| {
                r.r.group == key.group
                    && r.r.plural == key.plural
                    && r.state != K8sState::Gone
                    && !listed.contains(&(r.r.namespace.clone(), r.r.name.clone()))
            });
            if missing {
                // Maybe deleted while the watch was down, maybe applied after the listing
                // began: the next inspect asks the cluster.
                w.suspect = true;
                actions.push(Action::Refresh(id.clone()));
            }
        }
        actions
    }

    fn on_tracked(&mut self, id: String, seen: Vec<Seen>, replace: bool) -> Vec<Action> {
        let Some(w) = self.objects.get_mut(&id) else {
            return Vec::new();
        };
        if replace {
            w.resources = seen.into_iter().map(Res::from).collect();
        } else {
            for s in seen {
                match w.resources.iter_mut().find(|r| r.r.same(&s.r)) {
                    Some(r) => *r = s.into(),
                    None => w.resources.push(s.into()),
                }
            }
        }
        self.follow(&id);
        let mut actions: Vec<Action> = self.transition(&id).into_iter().collect();
        actions.push(Action::Refresh(id));
        actions
    }
}

/// Waits until every resource of `refs` is ready: `Err` with the reason when one is degraded,
/// or when `timeout` passes first.
async fn wait_ready(
    cluster: &cluster::Cluster,
    client: &kube::Client,
    refs: &[Ref],
    timeout: Duration,
) -> Result<Vec<Seen>, ApiError> {
    let until = Instant::now() + timeout;
    loop {
        let now = apply::look(cluster, client, refs).await?;
        let mut seen = Vec::with_capacity(now.len());
        for (r, s) in now {
            match s {
                Some(s) => seen.push(s),
                None => {
                    return Err(ApiError::precondition(format!(
                        "{} was deleted while the agent waited for it to be ready",
                        r.describe()
                    )))
                }
            }
        }
        let (state, reason) = health::overall(seen.iter().map(|s| {
            (
                s.r.kind.as_str(),
                s.r.name.as_str(),
                s.state,
                s.reason.as_deref(),
            )
        }));
        match state {
            K8sState::Ready => return Ok(seen),
            K8sState::Degraded => {
                return Err(ApiError::precondition(format!(
                    "the manifest is degraded: {}",
                    reason.unwrap_or_default()
                )))
            }
            _ => {}
        }
        if Instant::now() >= until {
            return Err(ApiError::precondition(format!(
                "not ready within {}: {}",
                humantime_secs(timeout),
                reason.unwrap_or_default()
            ))
            .with_field("k8s.timeout"));
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

impl KindDriver for K8sKind {
    fn kind(&self) -> Kind {
        Kind::K8s
    }

    fn caps(&self) -> Caps {
        Caps {
            sync: true,
            ..Caps::default()
        }
    }

    fn admit(&self, spec: &ObjectSpec, policy: &Policy) -> Result<(), ApiError> {
        match spec.section::<K8sSpec>() {
            Some(k) => policy.check_k8s(k),
            None => Ok(()),
        }
    }

    /// Phase one: the cluster is configured and answers, it serves every document's kind (or
    /// a CRD of the manifest defines it), and nothing in the way belongs to someone else.
    fn prepare(&mut self, id: &str, spec: &ObjectSpec) -> Step<Result<Prepared, ApiError>> {
        if !spec.resources.is_empty() {
            return Step::Now(Err(refuse_resources()));
        }
        let sec = match Self::section(spec) {
            Ok(s) => s,
            Err(e) => return Step::Now(Err(e)),
        };
        let cluster = match self.clusters.pick(sec.cluster.as_deref()) {
            Ok(c) => c,
            Err(e) => return Step::Now(Err(e)),
        };
        let docs = match sec.manifest.documents() {
            Ok(d) => d,
            Err(e) => return Step::Now(Err(e)),
        };
        let ns = sec.default_namespace().to_string();
        self.objects.insert(
            id.to_string(),
            Work {
                cluster: cluster.name().to_string(),
                documents: docs.len(),
                ..Work::default()
            },
        );
        let id = id.to_string();
        let policy = self.policy.clone();
        Step::later(async move {
            let client = cluster.client().await?;
            let plan = apply::plan(&cluster, &client, &policy, &id, docs, &ns).await?;
            Ok(Box::new(plan) as Prepared)
        })
    }

    /// Phase two: applies every document in order, and with `wait: ready` waits for them to
    /// be ready. On any failure what this create applied is deleted again.
    fn start(
        &mut self,
        id: &str,
        spec: &ObjectSpec,
        prepared: Prepared,
    ) -> Step<Result<Observed, ApiError>> {
        let Ok(plan) = prepared.downcast::<Vec<Planned>>() else {
            return Step::Now(Err(ApiError::internal("k8s start without phase one")));
        };
        let sec = match Self::section(spec) {
            Ok(s) => s.clone(),
            Err(e) => return Step::Now(Err(e)),
        };
        let Some(cluster) = self
            .objects
            .get(id)
            .and_then(|w| self.clusters.get(&w.cluster))
        else {
            return Step::Now(Err(ApiError::internal("k8s start without a cluster")));
        };
        let id = id.to_string();
        Step::later(async move {
            let client = cluster.client().await?;
            let seen = match apply::apply_all(&cluster, &client, &id, &plan, false).await {
                Ok(s) => s,
                Err(p) => {
                    rollback(&cluster, &client, &p.applied).await;
                    return Err(p.error);
                }
            };
            let seen = if sec.wait == K8sWait::Ready {
                let refs: Vec<Ref> = seen.iter().map(|s| s.r.clone()).collect();
                match wait_ready(&cluster, &client, &refs, sec.timeout()).await {
                    Ok(s) => s,
                    Err(e) => {
                        rollback(&cluster, &client, &refs).await;
                        return Err(e);
                    }
                }
            } else {
                seen
            };
            let n = seen.len();
            Ok(noted(
                running(cluster.name(), n),
                seen.into_iter().map(Res::from).collect(),
            ))
        })
    }

    fn note(&mut self, id: &str, note: KindMsg) {
        let Ok(l) = note.downcast::<Learned>() else {
            return;
        };
        let Some(w) = self.objects.get_mut(id) else {
            return;
        };
        w.resources = l.resources;
        w.suspect = false;
        self.follow(id);
        self.check_later(id);
    }

    /// Told once phase one has planned the manifest, before anything is applied.
    fn created_event(&self, obj: &Object) -> (String, serde_json::Value) {
        let (cluster, n) = self
            .objects
            .get(&obj.id)
            .map(|w| (w.cluster.clone(), w.documents))
            .unwrap_or_default();
        (
            format!("applying {n} documents to cluster {cluster}"),
            json!({"cluster": cluster, "documents": n}),
        )
    }

    /// The `k8s` status section, from what the driver knows now.
    fn describe(&self, obj: &mut Object) {
        let Some(w) = self.objects.get(&obj.id) else {
            return;
        };
        let (state, reason) = w.overall();
        let (sync, sync_message) = obj
            .k8s
            .as_ref()
            .map(|k| (k.sync, k.sync_message.clone()))
            .unwrap_or_default();
        obj.k8s = Some(K8sStatus {
            cluster: w.cluster.clone(),
            state,
            reason,
            resources: w
                .resources
                .iter()
                .map(|r| K8sResource {
                    api_version: r.r.api_version(),
                    kind: r.r.kind.clone(),
                    namespace: r.r.namespace.clone(),
                    name: r.r.name.clone(),
                    uid: r.uid.clone(),
                    state: r.state,
                    reason: r.reason.clone(),
                })
                .collect(),
            sync,
            sync_message,
        });
    }

    fn check_patch(
        &self,
        _obj: &Object,
        patch: &nodeagent_types::ObjectPatch,
    ) -> Result<(), ApiError> {
        if patch.resources.is_some() {
            return Err(refuse_resources());
        }
        Ok(())
    }

    /// A k8s object cannot be paused: there is nothing of it on the node to freeze.
    fn pause(&self, _id: &str, _obj: &Object, _paused: bool) -> Option<Result<(), ApiError>> {
        Some(Err(ApiError::invalid(
            "paused",
            "a k8s object cannot be paused (scale its workloads in the manifest)",
        )))
    }

    /// `{"k8s": {"manifest": ...}}`: the fields given replace the section's; the cluster
    /// cannot change (delete and create instead).
    fn patch_section(
        &self,
        obj: &Object,
        changes: &serde_json::Value,
    ) -> Result<KindSpec, ApiError> {
        let cur = Self::section(&obj.spec)?;
        let new = super::merged_section("k8s", cur, changes)?;
        if new.cluster != cur.cluster {
            return Err(ApiError::invalid(
                "k8s.cluster",
                "the cluster cannot change in place: delete the object and create it again",
            ));
        }
        Ok(KindSpec::K8s(new))
    }

    /// Brings the cluster in line with the spec's manifest: a dry run of every document
    /// first (so that a manifest the server refuses changes nothing), then the apply, then the
    /// prune of what the manifest no longer has.
    fn sync(
        &mut self,
        id: &str,
        obj: &Object,
        _cg: Option<&CgroupRef>,
    ) -> Option<super::Op<Result<(), ApiError>>> {
        let w = self.objects.get(id)?;
        let cluster = self.clusters.get(&w.cluster)?;
        let sec = obj.spec.section::<K8sSpec>()?.clone();
        let old = w.refs();
        let notify = self.notify.clone();
        let policy = self.policy.clone();
        let id = id.to_string();
        let run = async move {
            let docs = sec.manifest.documents()?;
            let client = cluster.client().await?;
            let plan = apply::plan(
                &cluster,
                &client,
                &policy,
                &id,
                docs,
                sec.default_namespace(),
            )
            .await?;
            apply::apply_all(&cluster, &client, &id, &plan, true)
                .await
                .map_err(|p| p.error)?;
            let tell = |seen: Vec<Seen>, replace: bool| {
                if let Some(n) = &notify {
                    n(Box::new(K8sMsg::Tracked {
                        id: id.clone(),
                        seen,
                        replace,
                    }));
                }
            };
            let seen = match apply::apply_all(&cluster, &client, &id, &plan, false).await {
                Ok(s) => s,
                Err(p) => {
                    // What it applied before the failure is tracked (so a delete removes it).
                    let partial = apply::look(&cluster, &client, &p.applied)
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|(_, s)| s)
                        .collect();
                    tell(partial, false);
                    return Err(p.error);
                }
            };
            let pruned: Vec<Ref> = old
                .into_iter()
                .filter(|o| !seen.iter().any(|s| s.r.same(o)))
                .collect();
            tell(seen, true);
            apply::delete_all(&cluster, &client, &pruned).await
        };
        // The sync's message is all the object shows of a failure: it names the document.
        Some(Box::pin(async move {
            run.await.map_err(|mut e| {
                if let Some(f) = &e.field {
                    e.message = format!("{f}: {}", e.message);
                }
                e
            })
        }))
    }

    fn sync_state(&self, obj: &mut Object, state: SyncState, msg: Option<String>) {
        if obj.k8s.is_none() {
            self.describe(obj);
        }
        if let Some(k) = obj.k8s.as_mut() {
            k.sync = state;
            k.sync_message = msg;
        }
    }

    fn inspect(&mut self, id: &str, _obj: &Object) -> Step<Result<Observed, ApiError>> {
        let Some(w) = self.objects.get_mut(id) else {
            return Step::Now(Ok(Observed::Unchanged));
        };
        if let Some(g) = w.gone() {
            return Step::Now(Ok(Observed::Gone {
                message: gone_message(&g.r),
                detail: json!({"resource": g.r.describe()}),
            }));
        }
        if !std::mem::take(&mut w.suspect) {
            return Step::Now(Ok(running(&w.cluster, w.resources.len())));
        }
        let Some(cluster) = self.clusters.get(&w.cluster) else {
            return Step::Now(Ok(Observed::Unchanged));
        };
        let refs = w.refs();
        Step::later(async move {
            let client = cluster.client().await?;
            Ok(observe_all(
                cluster.name(),
                apply::look(&cluster, &client, &refs).await?,
            ))
        })
    }

    /// Deletes the resources in reverse order (background propagation), then waits until they
    /// are gone, for at most the stop grace. Resources someone else deleted are fine.
    fn stop(
        &mut self,
        id: &str,
        obj: &Object,
        _cg: Option<&CgroupRef>,
        ctx: StopCtx,
    ) -> Step<Result<Progress, ApiError>> {
        let Some(w) = self.objects.get_mut(id) else {
            return Step::Now(Ok(Progress::Done));
        };
        w.deleting = true;
        let since = *w.deleting_since.get_or_insert_with(Instant::now);
        // A finalizer (a namespace's content, a PVC in use) may hold a resource for longer than
        // the node's stop grace: the delete waits for it as long as a create waits for
        // readiness, so that `?wait=true` answers once the resources are gone.
        let limit = Self::section(&obj.spec)
            .map(K8sSpec::timeout)
            .unwrap_or(nodeagent_types::spec::K8S_DEFAULT_TIMEOUT);
        let refs = w.refs();
        if refs.is_empty() {
            return Step::Now(Ok(Progress::Done));
        }
        let Some(cluster) = self.clusters.get(&w.cluster) else {
            return Step::Now(Err(ApiError::unavailable(format!(
                "cluster {} of object {} is no longer configured: its resources cannot be deleted",
                w.cluster, obj.name
            ))));
        };
        let name = obj.name.clone();
        Step::later(async move {
            let client = cluster.client().await?;
            if ctx.first {
                apply::delete_all(&cluster, &client, &refs).await?;
            }
            let left = apply::remaining(&cluster, &client, &refs).await?;
            if left.is_empty() {
                return Ok(Progress::Done);
            }
            if ctx.past_grace && since.elapsed() >= limit {
                tracing::warn!(
                    object = %name,
                    left = %left.iter().map(Ref::describe).collect::<Vec<_>>().join(", "),
                    "deleted, but not gone within k8s.timeout (finalizers?)"
                );
                return Ok(Progress::Done);
            }
            Ok(Progress::Requeue(GONE_POLL))
        })
    }

    fn forget(&mut self, id: &str, _obj: &Object, _cg: Option<&CgroupRef>) {
        self.objects.remove(id);
    }

    /// After a restart: the resources of the handle, and any others with the object's id label
    /// (an apply the agent did not see end). A create that had not ended is rolled back.
    fn recover(
        &mut self,
        obj: &Object,
        handle: Option<&serde_json::Value>,
    ) -> Step<Result<Observed, ApiError>> {
        let refs: Vec<Ref> = handle
            .and_then(|h| h.get("resources"))
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        let cluster_name = obj
            .k8s
            .as_ref()
            .map(|k| k.cluster.clone())
            .or_else(|| {
                Self::section(&obj.spec)
                    .ok()
                    .and_then(|s| self.clusters.pick(s.cluster.as_deref()).ok())
                    .map(|c| c.name().to_string())
            })
            .unwrap_or_default();
        let reported = obj.k8s.as_ref().map(|k| k.state);
        self.objects.insert(
            obj.id.clone(),
            Work {
                cluster: cluster_name.clone(),
                resources: refs
                    .iter()
                    .map(|r| Res {
                        r: r.clone(),
                        uid: String::new(),
                        state: K8sState::Applied,
                        reason: None,
                    })
                    .collect(),
                reported,
                ..Work::default()
            },
        );
        let Some(cluster) = self.clusters.get(&cluster_name) else {
            if obj.status.is_live() {
                return Step::Now(Ok(Observed::Failed {
                    message: format!("cluster {cluster_name:?} is not configured on this node"),
                }));
            }
            return Step::Now(Ok(Observed::Unchanged));
        };
        let docs = Self::section(&obj.spec).ok().and_then(|s| {
            s.manifest
                .documents()
                .ok()
                .map(|d| (d, s.default_namespace().to_string()))
        });
        let (id, status) = (obj.id.clone(), obj.status);
        Step::later(async move {
            let client = cluster.client().await?;
            let mut kinds = refs.clone();
            if let Some((docs, ns)) = &docs {
                kinds.extend(apply::kinds_of(&cluster, &client, docs, ns).await);
            }
            let found = apply::labelled(&cluster, &client, &id, &kinds).await?;
            if status == Status::Pending {
                let all: Vec<Ref> = found.iter().map(|s| s.r.clone()).collect();
                apply::delete_all(&cluster, &client, &all).await?;
                return Ok(noted(
                    Observed::Failed {
                        message: "the agent restarted while applying the manifest; what it had \
                                  applied was deleted again"
                            .into(),
                    },
                    Vec::new(),
                ));
            }
            // In the handle's order, then what only the labels found.
            let mut now: Vec<(Ref, Option<Seen>)> = refs
                .iter()
                .map(|r| (r.clone(), found.iter().find(|s| s.r.same(r)).cloned()))
                .collect();
            for s in found {
                if !refs.iter().any(|r| r.same(&s.r)) {
                    now.push((s.r.clone(), Some(s)));
                }
            }
            if !status.is_live() {
                let res = now
                    .into_iter()
                    .filter_map(|(_, s)| s)
                    .map(Res::from)
                    .collect();
                return Ok(noted(Observed::Unchanged, res));
            }
            Ok(observe_all(cluster.name(), now))
        })
    }

    fn handle(&mut self, obj: &Object) -> Option<serde_json::Value> {
        let w = self.objects.get(&obj.id)?;
        Some(json!({"resources": w.refs()}))
    }

    fn watch(
        &mut self,
        _since_nanos: i64,
        notify: Box<dyn Fn(KindMsg) -> bool + Send + Sync>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let notify: Notify = Arc::from(notify);
        let (tx, rx) = mpsc::unbounded_channel();
        self.follow = Some(tx);
        self.notify = Some(notify.clone());
        let ids: Vec<String> = self.objects.keys().cloned().collect();
        for id in ids {
            self.follow(&id);
        }
        Some(watch::spawn(rx, move |m| notify(Box::new(m))))
    }

    fn on_watch(&mut self, msg: KindMsg) -> Vec<Action> {
        let msg = match msg.downcast::<K8sMsg>() {
            Ok(m) => {
                return match *m {
                    K8sMsg::Tracked { id, seen, replace } => self.on_tracked(id, seen, replace),
                    K8sMsg::Check(id) => self.transition(&id).into_iter().collect(),
                }
            }
            Err(m) => m,
        };
        let Ok(m) = msg.downcast::<WatchMsg>() else {
            return Vec::new();
        };
        match *m {
            WatchMsg::Seen { key, obj } => self.on_seen(key, &obj),
            WatchMsg::Deleted { key, obj } => self.on_deleted(key, &obj),
            WatchMsg::Listing { key } => {
                self.listing.insert(key, HashSet::new());
                Vec::new()
            }
            WatchMsg::Listed { key } => self.on_listed(key),
            WatchMsg::Failed { key, message } => {
                if self.failing.insert(key.clone()) {
                    tracing::warn!(
                        cluster = %key.cluster,
                        resource = %format!("{}/{}", key.group, key.plural),
                        error = %message,
                        "watching the k8s kind's resources (retrying)"
                    );
                }
                Vec::new()
            }
        }
    }
}

/// What a look at every resource says: gone if one is, running otherwise.
fn observe_all(cluster: &str, now: Vec<(Ref, Option<Seen>)>) -> Observed {
    let gone = now
        .iter()
        .find(|(_, s)| s.is_none())
        .map(|(r, _)| r.clone());
    let n = now.len();
    let res: Vec<Res> = now
        .into_iter()
        .map(|(r, s)| match s {
            Some(s) => s.into(),
            None => Res {
                r,
                uid: String::new(),
                state: K8sState::Gone,
                reason: Some("deleted outside the agent".into()),
            },
        })
        .collect();
    let obs = match gone {
        Some(r) => Observed::Gone {
            message: gone_message(&r),
            detail: json!({"resource": r.describe()}),
        },
        None => running(cluster, n),
    };
    noted(obs, res)
}

/// Deletes what a failed create applied; a failure here is logged (the create's own error is
/// what the caller needs).
async fn rollback(cluster: &cluster::Cluster, client: &kube::Client, refs: &[Ref]) {
    if let Err(e) = apply::delete_all(cluster, client, refs).await {
        tracing::warn!(cluster = %cluster.name(), error = %e.message, "rolling back a failed k8s create");
    }
}

fn refuse_resources() -> ApiError {
    ApiError::invalid(
        "resources",
        "a k8s object runs nothing on this node: set CPU and memory as requests and limits in \
         the manifest (PATCH k8s.manifest)",
    )
}
