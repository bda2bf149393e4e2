//! The `container` kind: containers run through the Docker Engine (`docker.rs`), controlled
//! through their cgroup files and brought in line with Docker afterwards by a sync, and followed
//! through Docker's event stream by one watch task for the whole kind (`watch.rs`).
//!
//! Every Docker call is an operation the core runs off its loop ([`Step::Later`]); what the
//! driver learns from it (the container's id, how Docker holds its CPU limit, whether Docker
//! thinks it is paused) comes back as a note on the observation ([`Observed::Noted`]).

mod docker;
mod watch;

pub use docker::{
    cgroup_path, create_config, docker_error, resource_update, short_id, ContainerManager,
    CpuStyle, Prepared as DockerPrepared, CONNECT_TIMEOUT, LABEL_ID, LABEL_NAME,
};
pub use watch::{watch, WatchMsg};

use super::{
    Action, Caps, KindDriver, KindEnv, KindMsg, Observed, Prepared, Progress, Running, Step,
    StopCtx, StopMode, Stopped,
};
use crate::policy::Policy;
use nodeagent_drivers::cgroup::CgroupRef;
use nodeagent_drivers::docker::ContainerInfo;
use nodeagent_drivers::procfs::ProcFs;
use nodeagent_types::{
    ApiError, ContainerSpec, ContainerStatus, ErrorCode, EventKind, Kind, Object, ObjectSpec,
    Resources, Status, SyncState,
};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// What the driver keeps per container object.
#[derive(Default)]
struct Work {
    /// Docker's id, once created or adopted.
    docker_id: Option<String>,
    adopted: bool,
    style: CpuStyle,
    /// Whether the container has ever run under the agent (a later start is a restart).
    started_once: bool,
    /// What Docker believes of paused.
    docker_paused: bool,
    /// The paused state the sync in flight sends Docker, if it sends one.
    sending_pause: Option<bool>,
    /// Docker's `oom` events in this run of the container (one per process killed): the first
    /// is an `oom_killed` event, the rest are counted into the run's `exited` event, so one
    /// crash is one event, not one per killed process.
    ooms: u64,
    /// The init pid of the run those events belong to.
    run_pid: Option<u32>,
}

/// What an operation learnt of a container, noted on its observation.
struct Learned {
    info: ContainerInfo,
    adopted: Option<bool>,
}

pub struct ContainerKind {
    mgr: ContainerManager,
    procfs: ProcFs,
    grace: Duration,
    objects: HashMap<String, Work>,
    /// Docker container id → object id, for the containers the agent runs or adopted.
    by_docker: HashMap<String, String>,
    /// Whether the event watcher is connected (`None` before its first report).
    docker_up: Option<bool>,
}

impl ContainerKind {
    /// The kind, for the engine at `socket` (a path or `unix://` URI). Does not connect.
    pub fn new(env: &KindEnv, socket: &str) -> ContainerKind {
        ContainerKind {
            mgr: ContainerManager::new(socket, env.cgroups.clone(), env.procfs.clone()),
            procfs: env.procfs.clone(),
            grace: env.stop_grace,
            objects: HashMap::new(),
            by_docker: HashMap::new(),
            docker_up: None,
        }
    }

    /// The state Docker reports, as an observation with what the driver learns noted on it.
    fn observe(
        mgr: &ContainerManager,
        procfs: &ProcFs,
        info: ContainerInfo,
        started_once: bool,
        adopted: Option<bool>,
        ooms: u64,
    ) -> Observed {
        let obs = if info.running && !info.restarting {
            match info.pid {
                Some(pid) => match mgr.cgroup_of(pid) {
                    Ok(cg) => Observed::Running(Running {
                        pid: Some(pid),
                        cgroup: Some(cg),
                        net_pid: Some(pid),
                        main: None,
                        paused: Some(info.paused),
                        detail: json!({"pid": pid, "container": info.id}),
                    }),
                    Err(e) => {
                        // The init process exited between the inspect and now (its `die` event
                        // is on the way), or its cgroup cannot be used: the next event tells.
                        if procfs.alive(pid) {
                            tracing::warn!(
                                container = %short_id(&info.id),
                                error = %e.message,
                                "attaching to the container's cgroup"
                            );
                        }
                        Observed::Unchanged
                    }
                },
                None => Observed::Unchanged,
            }
        } else {
            let mut s = stopped(&info, started_once);
            if ooms > 0 {
                s.detail["oom_kills"] = json!(ooms);
            }
            Observed::Stopped(s)
        };
        Observed::Noted(Box::new(obs), Box::new(Learned { info, adopted }))
    }

    fn work(&mut self, id: &str) -> &mut Work {
        self.objects.entry(id.to_string()).or_default()
    }
}

/// A container that does not run, in the object's terms.
fn stopped(info: &ContainerInfo, started_once: bool) -> Stopped {
    let code = info.exit_code.and_then(|c| i32::try_from(c).ok());
    let mut s = Stopped {
        status: Status::Exited,
        exit_code: None,
        exit_signal: None,
        message: String::new(),
        exit_event: info.status != "created",
        idle: true,
        restartable: false,
        detail: json!({"oom_killed": info.oom_killed, "container": info.id}),
    };
    if info.restarting {
        s.status = Status::Pending;
        s.message = "Docker is restarting the container".into();
        s.exit_event = false;
    } else if !started_once && info.exit_code.unwrap_or(0) == 0 && info.status == "created" {
        // A container that never ran did not exit.
        s.message = "the container has not been started (Docker status created)".into();
    } else {
        s.exit_code = code;
        let mut m = match code {
            Some(c) => format!("exited with code {c}"),
            None => "exited".to_string(),
        };
        if info.oom_killed {
            m.push_str(" (killed by the OOM killer)");
        }
        if let Some(er) = &info.error {
            m.push_str(&format!(": {er}"));
        }
        s.message = m;
    }
    s
}

impl KindDriver for ContainerKind {
    fn kind(&self) -> Kind {
        Kind::Container
    }

    fn caps(&self) -> Caps {
        Caps {
            sync: true,
            sync_writes_cgroup: true,
            remove_adopted: true,
            poll: false,
            cgroup_may_vanish: true,
        }
    }

    fn admit(&self, spec: &ObjectSpec, policy: &Policy) -> Result<(), ApiError> {
        match spec.section::<ContainerSpec>() {
            Some(c) => policy.check_container(c),
            None => Ok(()),
        }
    }

    /// Phase one: the engine answers, the name is free in Docker, the image is there (or may
    /// be pulled); for an adoption, the container is found.
    fn prepare(&mut self, id: &str, spec: &ObjectSpec) -> Step<Result<Prepared, ApiError>> {
        let m = self.mgr.clone();
        let adopt = spec
            .section::<ContainerSpec>()
            .and_then(|c| c.adopt.clone());
        self.work(id).adopted = adopt.is_some();
        let spec = spec.clone();
        Step::later(async move {
            match adopt {
                Some(key) => m.find(&key).await.map(|info| Box::new(info) as Prepared),
                None => m.prepare(&spec).await.map(|p| Box::new(p) as Prepared),
            }
        })
    }

    /// Phase two: pull, create, start, inspect (removed again on failure); for an adoption,
    /// the container found, unless another object has it already.
    fn start(
        &mut self,
        id: &str,
        spec: &ObjectSpec,
        prepared: Prepared,
    ) -> Step<Result<Observed, ApiError>> {
        let prepared = match prepared.downcast::<ContainerInfo>() {
            Ok(info) => {
                if let Some(other) = self.by_docker.get(&info.id) {
                    return Step::Now(Err(ApiError::new(
                        ErrorCode::AlreadyExists,
                        format!(
                            "container {} is already object {other} on this node",
                            short_id(&info.id)
                        ),
                    )
                    .with_field("container.adopt")));
                }
                let obs = Self::observe(&self.mgr, &self.procfs, *info, false, Some(true), 0);
                return Step::Now(Ok(obs));
            }
            Err(p) => p,
        };
        let Ok(prepared) = prepared.downcast::<DockerPrepared>() else {
            return Step::Now(Err(ApiError::internal("container start without phase one")));
        };
        let (m, procfs) = (self.mgr.clone(), self.procfs.clone());
        let (id, spec) = (id.to_string(), spec.clone());
        Step::later(async move {
            let info = m.run(*prepared, &id, &spec).await?;
            Ok(Self::observe(&m, &procfs, info, false, Some(false), 0))
        })
    }

    fn note(&mut self, id: &str, note: KindMsg) {
        let Ok(l) = note.downcast::<Learned>() else {
            return;
        };
        let Learned { info, adopted } = *l;
        if let Some(old) = self.objects.get(id).and_then(|w| w.docker_id.clone()) {
            if old != info.id {
                self.by_docker.remove(&old);
            }
        }
        self.by_docker.insert(info.id.clone(), id.to_string());
        let w = self.work(id);
        if let Some(a) = adopted {
            w.adopted = a;
        }
        if w.docker_id.is_none() || adopted.is_some() {
            w.style = CpuStyle::of(&info);
        }
        w.docker_id = Some(info.id.clone());
        w.docker_paused = info.paused && info.running;
        if info.running && info.pid.is_some() && info.pid != w.run_pid {
            w.run_pid = info.pid;
            w.ooms = 0;
        }
        if info.running && !info.restarting {
            w.started_once = true;
        }
    }

    fn created_event(&self, obj: &Object) -> (String, serde_json::Value) {
        let w = self.objects.get(&obj.id);
        match w.and_then(|w| w.docker_id.as_ref().filter(|_| w.adopted)) {
            Some(did) => (
                format!(
                    "adopted container {} ({})",
                    obj.spec
                        .section::<ContainerSpec>()
                        .and_then(|c| c.adopt.clone())
                        .unwrap_or_default(),
                    short_id(did)
                ),
                json!({"container": did, "adopted": true}),
            ),
            None => (
                format!("created container {}", obj.name),
                json!({"image": obj.spec.section::<ContainerSpec>().map(|c| c.image.clone())}),
            ),
        }
    }

    fn is_adopted(&self, obj: &Object) -> bool {
        self.objects.get(&obj.id).is_some_and(|w| w.adopted)
            || obj.container.as_ref().is_some_and(|c| c.adopted)
    }

    /// Before a memory limit is written to a v1 cgroup, `memory.memsw.limit_in_bytes` of an
    /// adopted `docker run -m` is lifted (the kernel refuses a limit above it).
    fn before_write(&self, cg: &CgroupRef, r: &Resources) -> Result<(), ApiError> {
        if r.memory.is_some() {
            self.mgr.lift_memsw(cg)?;
        }
        Ok(())
    }

    fn sync(
        &mut self,
        id: &str,
        obj: &Object,
        cg: Option<&CgroupRef>,
    ) -> Option<super::Op<Result<(), ApiError>>> {
        let w = self.objects.get_mut(id)?;
        let did = w.docker_id.clone()?;
        let update = resource_update(&obj.spec.resources, w.style);
        let live = matches!(obj.status, Status::Running | Status::Paused);
        let pause = match (cg, live) {
            (Some(cg), true) if obj.paused != w.docker_paused => Some((obj.paused, cg.clone())),
            _ => None,
        };
        w.sending_pause = pause.as_ref().map(|p| p.0);
        let m = self.mgr.clone();
        Some(Box::pin(async move { m.sync(&did, update, pause).await }))
    }

    fn synced(&mut self, id: &str, ok: bool) {
        if let Some(w) = self.objects.get_mut(id) {
            let sent = w.sending_pause.take();
            if let (true, Some(p)) = (ok, sent) {
                w.docker_paused = p;
            }
        }
    }

    fn sync_state(&self, obj: &mut Object, state: SyncState, msg: Option<String>) {
        let w = self.objects.get(&obj.id);
        let st = obj.container.get_or_insert_with(|| ContainerStatus {
            id: w.and_then(|w| w.docker_id.clone()).unwrap_or_default(),
            adopted: w.is_some_and(|w| w.adopted),
            sync: SyncState::InSync,
            sync_message: None,
        });
        if let Some(did) = w.and_then(|w| w.docker_id.clone()) {
            st.id = did;
        }
        st.sync = state;
        st.sync_message = msg;
    }

    fn inspect(&mut self, id: &str, _obj: &Object) -> Step<Result<Observed, ApiError>> {
        let Some(w) = self.objects.get(id) else {
            return Step::Now(Ok(Observed::Unchanged));
        };
        let Some(did) = w.docker_id.clone() else {
            return Step::Now(Ok(Observed::Unchanged));
        };
        let (started_once, ooms) = (w.started_once, w.ooms);
        let (m, procfs) = (self.mgr.clone(), self.procfs.clone());
        Step::later(async move {
            let info = m.inspect(&did).await?;
            Ok(match info {
                Some(i) => Self::observe(&m, &procfs, i, started_once, None, ooms),
                None => Observed::Gone {
                    message: format!("container {} was removed outside the agent", short_id(&did)),
                    detail: json!({"container": did}),
                },
            })
        })
    }

    /// An adopted container is released (left running) unless the delete asks to remove it;
    /// any other is stopped (with the grace period) and removed. One that is lost or never
    /// got created needs nothing from Docker.
    fn stop(
        &mut self,
        id: &str,
        obj: &Object,
        cg: Option<&CgroupRef>,
        ctx: StopCtx,
    ) -> Step<Result<Progress, ApiError>> {
        let did = self.objects.get(id).and_then(|w| w.docker_id.clone());
        match did {
            Some(did) if ctx.mode == StopMode::Destroy && obj.status != Status::Lost => {
                let (m, grace, cg) = (self.mgr.clone(), self.grace, cg.cloned());
                Step::later(async move {
                    m.stop_and_remove(&did, grace, cg).await?;
                    Ok(Progress::Done)
                })
            }
            _ => Step::Now(Ok(Progress::Done)),
        }
    }

    fn forget(&mut self, id: &str, _obj: &Object, _cg: Option<&CgroupRef>) {
        if let Some(w) = self.objects.remove(id) {
            if let Some(did) = w.docker_id {
                if self.by_docker.get(&did).is_some_and(|o| o == id) {
                    self.by_docker.remove(&did);
                }
            }
        }
    }

    /// A container is found again by its Docker id: an inspect re-attaches its cgroup and
    /// resumes sampling, or marks it lost when Docker no longer has it.
    fn recover(
        &mut self,
        obj: &Object,
        _handle: Option<&serde_json::Value>,
    ) -> Step<Result<Observed, ApiError>> {
        let docker_id = obj.container.as_ref().map(|c| c.id.clone());
        let adopted = obj.container.as_ref().is_some_and(|c| c.adopted);
        let Some(did) = docker_id
            .filter(|d| !d.is_empty())
            .filter(|_| obj.status.is_live() || obj.status == Status::Exited)
        else {
            if obj.status.is_live() {
                return Step::Now(Ok(Observed::Failed {
                    message: "the agent restarted before the container was created".into(),
                }));
            }
            return Step::Now(Ok(Observed::Unchanged));
        };
        self.by_docker.insert(did.clone(), obj.id.clone());
        let w = self.work(&obj.id);
        w.docker_id = Some(did.clone());
        w.adopted = adopted;
        // A container that ran before the restart: its next start is a restart.
        w.started_once = obj.status != Status::Pending || obj.restarts > 0;
        let started_once = w.started_once;
        let (m, procfs) = (self.mgr.clone(), self.procfs.clone());
        Step::later(async move {
            let info = m.inspect(&did).await?;
            Ok(match info {
                // The first inspect after a restart also learns how Docker holds the CPU limit.
                Some(i) => Self::observe(&m, &procfs, i, started_once, Some(adopted), 0),
                None => Observed::Gone {
                    message: format!("container {} was removed outside the agent", short_id(&did)),
                    detail: json!({"container": did}),
                },
            })
        })
    }

    fn watch(
        &mut self,
        since_nanos: i64,
        notify: Box<dyn Fn(KindMsg) -> bool + Send + Sync>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Some(watch(self.mgr.clone(), since_nanos, move |m| {
            notify(Box::new(m))
        }))
    }

    fn on_watch(&mut self, msg: KindMsg) -> Vec<Action> {
        let Ok(m) = msg.downcast::<WatchMsg>() else {
            return Vec::new();
        };
        match *m {
            WatchMsg::Connected {
                socket,
                server_version,
                api_version,
            } => {
                tracing::info!(
                    "docker engine connected at {socket}: version {server_version}, API {api_version}"
                );
                self.docker_up = Some(true);
                // Events may have been missed while the stream was down: look at every
                // container again, and retry syncs that failed.
                let mut actions = Vec::new();
                for (id, w) in &self.objects {
                    if w.docker_id.is_some() {
                        actions.push(Action::Refresh(id.clone()));
                    }
                    actions.push(Action::RetryFailedSync(id.clone()));
                }
                actions
            }
            WatchMsg::Disconnected { message } => {
                if self.docker_up != Some(false) {
                    tracing::warn!(
                        "{message}; the container kind answers 503 until the engine is back \
                         (other kinds are not affected)"
                    );
                }
                self.docker_up = Some(false);
                Vec::new()
            }
            WatchMsg::Event(ev) => {
                let id = self.by_docker.get(&ev.id).cloned().or_else(|| {
                    // A container still being created has no Docker id here yet; its label
                    // names the object.
                    ev.attributes
                        .get(LABEL_ID)
                        .filter(|oid| {
                            self.objects
                                .get(*oid)
                                .is_some_and(|w| w.docker_id.is_none())
                        })
                        .cloned()
                });
                let Some(id) = id else { return Vec::new() };
                let mut actions = Vec::new();
                if ev.action == "oom" {
                    let w = self.work(&id);
                    w.ooms += 1;
                    if w.ooms == 1 {
                        actions.push(Action::Emit {
                            id: id.clone(),
                            kind: EventKind::OomKilled,
                            message: "out of memory: the kernel killed a process of the container \
                                      (further kills in this run are counted in its exit)"
                                .into(),
                            detail: json!({"container": ev.id, "count": 1}),
                        });
                    }
                }
                actions.push(Action::Refresh(id));
                actions
            }
        }
    }
}
