//! The `helm` kind: a Helm release installed, upgraded and uninstalled by the real helm binary
//! (`cli.rs` runs it), in a cluster of the same `[[cluster]]` config as the `k8s` kind.
//!
//! Every helm command is an operation off the core's loop (a child process per command, no
//! task per object); the core runs at most one operation per object, so one release never sees
//! two helm commands at once. An object is `running` once its release is deployed; its `helm`
//! status section shows the release, its revision, chart, status and history. A release
//! uninstalled behind the agent's back makes the object `lost`.
//!
//! Nothing here runs on the node: no pid, no cgroup, no sample. `resources` and `paused` are
//! refused (they belong in the chart's values).

pub mod cli;

use super::k8s::Clusters;
use super::{
    Action, Caps, KindDriver, KindEnv, KindMsg, Observed, Prepared, Progress, Running, Step,
    StopCtx,
};
use cli::{Release, Target};
use nodeagent_drivers::cgroup::CgroupRef;
use nodeagent_types::{
    ApiError, HelmSpec, HelmStatus, Kind, KindSpec, Object, ObjectSpec, Status, SyncState,
};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

type Notify = Arc<dyn Fn(KindMsg) -> bool + Send + Sync>;

/// The shortest `--timeout` of an uninstall (the stop grace when it is longer).
const MIN_UNINSTALL: Duration = Duration::from_secs(30);

/// What the driver keeps per object.
struct Work {
    cluster: String,
    release: String,
    namespace: String,
    rel: Option<Release>,
}

/// What an operation learnt: the release as helm showed it.
struct Learned(Option<Release>);

/// Messages of the kind's own operations, through the watch channel.
enum HelmMsg {
    /// A sync ended: look at the release again.
    Look(String),
}

pub struct HelmKind {
    clusters: Arc<Clusters>,
    helm: Arc<PathBuf>,
    objects_dir: PathBuf,
    stop_grace: Duration,
    objects: HashMap<String, Work>,
    notify: Option<Notify>,
}

fn running(w: &Work) -> Observed {
    Observed::Running(Running {
        pid: None,
        cgroup: None,
        net_pid: None,
        main: None,
        paused: None,
        detail: json!({
            "cluster": w.cluster,
            "release": w.release,
            "namespace": w.namespace,
            "revision": w.rel.as_ref().map(|r| r.revision),
        }),
    })
}

fn noted(obs: Observed, rel: Option<Release>) -> Observed {
    Observed::Noted(Box::new(obs), Box::new(Learned(rel)))
}

fn refuse_resources() -> ApiError {
    ApiError::invalid(
        "resources",
        "a helm release runs nothing on this node: set CPU and memory in the chart's values \
         (PATCH helm.values)",
    )
}

impl HelmKind {
    /// `helm` is the binary (`NODEAGENT_HELM`, or `helm` on PATH); the clusters are the
    /// `[[cluster]]` entries of the config file, as the `k8s` kind has them.
    pub fn new(
        env: &KindEnv,
        clusters: Vec<super::k8s::ClusterConfig>,
        helm: impl Into<PathBuf>,
    ) -> HelmKind {
        HelmKind {
            clusters: Arc::new(Clusters::new(clusters)),
            helm: Arc::new(helm.into()),
            objects_dir: env.objects_dir.clone(),
            stop_grace: env.stop_grace,
            objects: HashMap::new(),
            notify: None,
        }
    }

    fn section(spec: &ObjectSpec) -> Result<&HelmSpec, ApiError> {
        spec.section::<HelmSpec>()
            .ok_or_else(|| ApiError::invalid("helm", "a helm object needs its helm section"))
    }

    fn target(&self, id: &str) -> Option<Target> {
        let w = self.objects.get(id)?;
        Some(Target {
            helm: self.helm.clone(),
            cluster: self.clusters.get(&w.cluster)?,
            dir: self.objects_dir.join(id),
            release: w.release.clone(),
            namespace: w.namespace.clone(),
        })
    }
}

/// Checks that the chart (when local) and the value files are there, off the loop.
async fn check_files(sec: &HelmSpec) -> Result<(), ApiError> {
    if sec.chart_is_local() && tokio::fs::metadata(&sec.chart).await.is_err() {
        return Err(ApiError::invalid(
            "helm.chart",
            format!(
                "{}: no such chart directory or .tgz on this node",
                sec.chart
            ),
        ));
    }
    for (i, f) in sec.value_files.iter().enumerate() {
        match tokio::fs::metadata(f).await {
            Ok(m) if m.is_file() => {}
            _ => {
                return Err(ApiError::invalid(
                    format!("helm.value_files[{i}]"),
                    format!("{f}: no such file on this node"),
                ))
            }
        }
    }
    Ok(())
}

/// Removes what a failed first install left (the release did not exist before it, so whatever
/// is there now is this create's). A failure here is logged: the install's error is the answer.
async fn undo_install(t: &Target, grace: Duration) {
    match t.look().await {
        Ok(None) => {}
        Ok(Some(_)) | Err(_) => {
            if let Err(f) = t.uninstall(grace).await {
                tracing::warn!(
                    release = %t.release,
                    namespace = %t.namespace,
                    error = %f.message(),
                    "uninstalling what a failed helm install left"
                );
            }
        }
    }
}

impl KindDriver for HelmKind {
    fn kind(&self) -> Kind {
        Kind::Helm
    }

    fn caps(&self) -> Caps {
        Caps {
            sync: true,
            ..Caps::default()
        }
    }

    fn admit(&self, spec: &ObjectSpec, policy: &crate::policy::Policy) -> Result<(), ApiError> {
        match spec.section::<HelmSpec>() {
            Some(h) => policy.check_helm(h),
            None => Ok(()),
        }
    }

    /// Phase one: the cluster is configured, the chart and value files exist, and no release
    /// of that name is in the namespace (the agent installs, it does not take over).
    fn prepare(&mut self, id: &str, spec: &ObjectSpec) -> Step<Result<Prepared, ApiError>> {
        if !spec.resources.is_empty() {
            return Step::Now(Err(refuse_resources()));
        }
        let sec = match Self::section(spec) {
            Ok(s) => s.clone(),
            Err(e) => return Step::Now(Err(e)),
        };
        let cluster = match self.clusters.pick_for("helm", sec.cluster.as_deref()) {
            Ok(c) => c,
            Err(e) => return Step::Now(Err(e)),
        };
        let release = match sec.release_name(&spec.name) {
            Ok(r) => r,
            Err(e) => return Step::Now(Err(e)),
        };
        let namespace = sec.namespace().to_string();
        if let Some((other, _)) = self.objects.iter().find(|(_, w)| {
            w.cluster == cluster.name() && w.release == release && w.namespace == namespace
        }) {
            return Step::Now(Err(ApiError::precondition(format!(
                "release {release} in namespace {namespace} belongs to object {other}"
            ))
            .with_field("helm.release")));
        }
        self.objects.insert(
            id.to_string(),
            Work {
                cluster: cluster.name().to_string(),
                release,
                namespace,
                rel: None,
            },
        );
        let Some(t) = self.target(id) else {
            return Step::Now(Err(ApiError::internal("helm prepare without a cluster")));
        };
        Step::later(async move {
            check_files(&sec).await?;
            t.setup().await?;
            if let Some(r) = t.look().await? {
                return Err(ApiError::precondition(format!(
                    "release {} already exists in namespace {} (revision {}, {}): the agent \
                     installs releases, it does not take one over",
                    t.release, t.namespace, r.revision, r.status
                ))
                .with_field("helm.release"));
            }
            Ok(Box::new(()) as Prepared)
        })
    }

    /// Phase two: `helm upgrade --install`. A failure uninstalls what it left.
    fn start(
        &mut self,
        id: &str,
        spec: &ObjectSpec,
        _prepared: Prepared,
    ) -> Step<Result<Observed, ApiError>> {
        let sec = match Self::section(spec) {
            Ok(s) => s.clone(),
            Err(e) => return Step::Now(Err(e)),
        };
        let Some(t) = self.target(id) else {
            return Step::Now(Err(ApiError::internal("helm start without phase one")));
        };
        let grace = self.stop_grace.max(MIN_UNINSTALL);
        let (cluster, release, namespace) = {
            let w = &self.objects[id];
            (w.cluster.clone(), w.release.clone(), w.namespace.clone())
        };
        Step::later(async move {
            if let Err(f) = t.upgrade(&sec, true).await {
                let e = cli::classify(f, &sec);
                undo_install(&t, grace).await;
                return Err(e);
            }
            let rel = t.look().await?;
            let w = Work {
                cluster,
                release,
                namespace,
                rel: rel.clone(),
            };
            match rel {
                Some(_) => Ok(noted(running(&w), rel)),
                None => Err(ApiError::unavailable(format!(
                    "helm installed release {} but it is gone",
                    t.release
                ))),
            }
        })
    }

    fn note(&mut self, id: &str, note: KindMsg) {
        let Ok(l) = note.downcast::<Learned>() else {
            return;
        };
        if let Some(w) = self.objects.get_mut(id) {
            if l.0.is_some() {
                w.rel = l.0;
            }
        }
    }

    fn created_event(&self, obj: &Object) -> (String, serde_json::Value) {
        let Some(w) = self.objects.get(&obj.id) else {
            return (format!("created helm {}", obj.name), json!({}));
        };
        let chart = Self::section(&obj.spec)
            .map(|s| s.chart.clone())
            .unwrap_or_default();
        (
            format!(
                "installing {chart} as release {} in namespace {} of cluster {}",
                w.release, w.namespace, w.cluster
            ),
            json!({"cluster": w.cluster, "release": w.release, "namespace": w.namespace, "chart": chart}),
        )
    }

    /// The `helm` status section, from what the driver knows now.
    fn describe(&self, obj: &mut Object) {
        let Some(w) = self.objects.get(&obj.id) else {
            return;
        };
        let (sync, sync_message) = obj
            .helm
            .as_ref()
            .map(|h| (h.sync, h.sync_message.clone()))
            .unwrap_or_default();
        let r = w.rel.clone().unwrap_or_default();
        obj.helm = Some(HelmStatus {
            cluster: w.cluster.clone(),
            release: w.release.clone(),
            namespace: w.namespace.clone(),
            revision: r.revision,
            chart: r.chart,
            app_version: r.app_version,
            status: r.status,
            description: r.description,
            history: r.history,
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

    fn pause(&self, _id: &str, _obj: &Object, _paused: bool) -> Option<Result<(), ApiError>> {
        Some(Err(ApiError::invalid(
            "paused",
            "a helm release cannot be paused (scale its workloads in the values)",
        )))
    }

    /// `{"helm": {"values": {...}, "version": ...}}`: the fields given replace the section's
    /// (`null` removes one); the cluster, release and namespace cannot change in place.
    fn patch_section(
        &self,
        obj: &Object,
        changes: &serde_json::Value,
    ) -> Result<KindSpec, ApiError> {
        let cur = Self::section(&obj.spec)?;
        let new = super::merged_section("helm", cur, changes)?;
        let fixed = |f: &str| {
            ApiError::invalid(
                format!("helm.{f}"),
                format!("the {f} cannot change in place: delete the object and create it again"),
            )
        };
        if new.cluster != cur.cluster {
            return Err(fixed("cluster"));
        }
        if new.namespace() != cur.namespace() {
            return Err(fixed("namespace"));
        }
        if new.release_name(&obj.name).ok() != cur.release_name(&obj.name).ok() {
            return Err(fixed("release"));
        }
        Ok(KindSpec::Helm(new))
    }

    /// `helm upgrade` with the spec's chart, version and values; the release's new state is
    /// looked up afterwards (failed or not).
    fn sync(
        &mut self,
        id: &str,
        obj: &Object,
        _cg: Option<&CgroupRef>,
    ) -> Option<super::Op<Result<(), ApiError>>> {
        let t = self.target(id)?;
        let sec = obj.spec.section::<HelmSpec>()?.clone();
        let notify = self.notify.clone();
        let id = id.to_string();
        Some(Box::pin(async move {
            let done = async {
                check_files(&sec).await?;
                t.setup().await?;
                t.upgrade(&sec, false)
                    .await
                    .map_err(|f| cli::classify(f, &sec))
            }
            .await;
            if let Some(n) = &notify {
                n(Box::new(HelmMsg::Look(id)));
            }
            // The sync's message is all the object shows of a failure: it names the field.
            done.map_err(|mut e| {
                if let Some(f) = &e.field {
                    e.message = format!("{f}: {}", e.message);
                }
                e
            })
        }))
    }

    fn sync_state(&self, obj: &mut Object, state: SyncState, msg: Option<String>) {
        if obj.helm.is_none() {
            self.describe(obj);
        }
        if let Some(h) = obj.helm.as_mut() {
            h.sync = state;
            h.sync_message = msg;
        }
    }

    /// The release as helm shows it now; gone when it was uninstalled outside the agent.
    fn inspect(&mut self, id: &str, _obj: &Object) -> Step<Result<Observed, ApiError>> {
        let Some(t) = self.target(id) else {
            return Step::Now(Ok(Observed::Unchanged));
        };
        let w = &self.objects[id];
        let (cluster, release, namespace) =
            (w.cluster.clone(), w.release.clone(), w.namespace.clone());
        Step::later(async move {
            Ok(match t.look().await? {
                Some(rel) => {
                    let w = Work {
                        cluster,
                        release,
                        namespace,
                        rel: Some(rel.clone()),
                    };
                    noted(running(&w), Some(rel))
                }
                None => Observed::Gone {
                    message: format!(
                        "release {release} in namespace {namespace} was uninstalled outside the agent"
                    ),
                    detail: json!({"release": release, "namespace": namespace}),
                },
            })
        })
    }

    /// `helm uninstall --wait`; a release already uninstalled is fine.
    fn stop(
        &mut self,
        id: &str,
        obj: &Object,
        _cg: Option<&CgroupRef>,
        ctx: StopCtx,
    ) -> Step<Result<Progress, ApiError>> {
        if !ctx.first {
            return Step::Now(Ok(Progress::Done));
        }
        let Some(w) = self.objects.get(id) else {
            return Step::Now(Ok(Progress::Done));
        };
        let Some(t) = self.target(id) else {
            return Step::Now(Err(ApiError::unavailable(format!(
                "cluster {} of object {} is no longer configured: its release cannot be uninstalled",
                w.cluster, obj.name
            ))));
        };
        let grace = self.stop_grace.max(MIN_UNINSTALL);
        Step::later(async move {
            t.setup().await?;
            match t.uninstall(grace).await {
                Ok(_) => Ok(Progress::Done),
                Err(cli::Failure::Run(e)) => Err(e),
                Err(cli::Failure::Helm(m)) => Err(ApiError::unavailable(format!(
                    "helm uninstall {}: {m}",
                    t.release
                ))),
            }
        })
    }

    fn forget(&mut self, id: &str, _obj: &Object, _cg: Option<&CgroupRef>) {
        self.objects.remove(id);
        let dir = self.objects_dir.join(id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a helm object's folder");
            }
        }
    }

    /// After a restart: `helm status` says what exists; nothing is installed again. A create
    /// that had not ended is undone.
    fn recover(
        &mut self,
        obj: &Object,
        handle: Option<&serde_json::Value>,
    ) -> Step<Result<Observed, ApiError>> {
        let from_handle = |k: &str| {
            handle
                .and_then(|h| h.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let sec = Self::section(&obj.spec).ok();
        let cluster = from_handle("cluster")
            .or_else(|| obj.helm.as_ref().map(|h| h.cluster.clone()))
            .or_else(|| {
                sec.and_then(|s| {
                    self.clusters
                        .pick_for("helm", s.cluster.as_deref())
                        .ok()
                        .map(|c| c.name().to_string())
                })
            })
            .unwrap_or_default();
        let release = from_handle("release")
            .or_else(|| sec.and_then(|s| s.release_name(&obj.name).ok()))
            .unwrap_or_default();
        let namespace = from_handle("namespace")
            .or_else(|| sec.map(|s| s.namespace().to_string()))
            .unwrap_or_default();
        self.objects.insert(
            obj.id.clone(),
            Work {
                cluster: cluster.clone(),
                release,
                namespace,
                rel: None,
            },
        );
        let Some(t) = self.target(&obj.id) else {
            if obj.status.is_live() {
                return Step::Now(Ok(Observed::Failed {
                    message: format!("cluster {cluster:?} is not configured on this node"),
                }));
            }
            return Step::Now(Ok(Observed::Unchanged));
        };
        let status = obj.status;
        let grace = self.stop_grace.max(MIN_UNINSTALL);
        let w = Work {
            cluster,
            release: t.release.clone(),
            namespace: t.namespace.clone(),
            rel: None,
        };
        Step::later(async move {
            t.setup().await?;
            let rel = t.look().await?;
            if status == Status::Pending {
                if rel.is_some() {
                    undo_install(&t, grace).await;
                }
                return Ok(Observed::Failed {
                    message: "the agent restarted while installing the release; what it had \
                              installed was uninstalled again"
                        .into(),
                });
            }
            if !status.is_live() {
                return Ok(noted(Observed::Unchanged, rel));
            }
            match rel {
                Some(r) => {
                    let w = Work {
                        rel: Some(r.clone()),
                        ..w
                    };
                    Ok(noted(running(&w), Some(r)))
                }
                None => Ok(Observed::Gone {
                    message: format!(
                        "release {} in namespace {} was uninstalled while the agent was down",
                        w.release, w.namespace
                    ),
                    detail: json!({"release": w.release, "namespace": w.namespace}),
                }),
            }
        })
    }

    fn handle(&mut self, obj: &Object) -> Option<serde_json::Value> {
        let w = self.objects.get(&obj.id)?;
        Some(json!({"cluster": w.cluster, "release": w.release, "namespace": w.namespace}))
    }

    /// No task: the channel only carries the kind's own syncs' news.
    fn watch(
        &mut self,
        _since_nanos: i64,
        notify: Box<dyn Fn(KindMsg) -> bool + Send + Sync>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.notify = Some(Arc::from(notify));
        None
    }

    fn on_watch(&mut self, msg: KindMsg) -> Vec<Action> {
        match msg.downcast::<HelmMsg>() {
            Ok(m) => match *m {
                HelmMsg::Look(id) if self.objects.contains_key(&id) => vec![Action::Refresh(id)],
                HelmMsg::Look(_) => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }
}
