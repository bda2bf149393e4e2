//! The core's side of the `container` kind: the loop's state per container, and the handlers
//! that start Docker operations and take their results.
//!
//! The loop never waits for Docker. Every Docker call runs in a task spawned here, and its
//! result comes back as an [`Internal::Container`] message that the loop handles like any
//! command. At most one operation runs per object (`busy`); what arrives meanwhile is recorded
//! and acted on when the operation ends ([`Agent::container_next`]):
//!
//! - PATCHes write the cgroup at once (the fast path) and bump `want`; a sync sends Docker the
//!   whole desired config of generation `want`, so any number of PATCHes during one sync cost
//!   one more sync, with the latest values;
//! - Docker events set `refresh`, answered by one inspect that tells the object's true state
//!   (ordering between an event and a create's result therefore cannot matter);
//! - a delete waits for the operation in flight, then stops and removes the container.

use super::{Agent, Created, Deleting, Entry, Internal, Reply, Work};
use nodeagent_drivers::cgroup::{CgroupManager, CgroupRef};
use nodeagent_drivers::docker::ContainerInfo;
use nodeagent_engine::collector::{Command, Target};
use nodeagent_engine::managers::container::{
    self as mgr, resource_update, short_id, CpuStyle, Prepared, WatchMsg,
};
use nodeagent_engine::Series;
use nodeagent_types::{
    new_object_id, ApiError, ContainerStatus, ErrorCode, EventKind, Kind, Object, ObjectPatch,
    ObjectSpec, Status, SyncState, Timestamp, HOST_ID,
};
use serde_json::json;
use std::future::Future;
use std::time::{Duration, Instant};

/// A sync waits until PATCHes have paused for this long, so a burst costs Docker one update
/// (each forks runc and takes 10-30 ms of engine CPU) instead of one per PATCH...
const SYNC_SETTLE: Duration = Duration::from_millis(5);
/// ...but never longer than this after the first PATCH it carries, so that Docker follows a
/// steady stream of PATCHes too (and `docker inspect` agrees within a second). A PATCH that
/// arrives while a sync is in flight waits for it (see [`ContainerWork::held`]), so the longer
/// this is, the fewer PATCHes of a steady stream wait: at 500 ms, about one in 700 of a stream
/// of PATCHes sent back to back.
const SYNC_MAX_DELAY: Duration = Duration::from_millis(500);

/// What the loop keeps per container object.
#[derive(Default)]
pub(super) struct ContainerWork {
    /// Docker's id, once created or adopted.
    docker_id: Option<String>,
    adopted: bool,
    style: CpuStyle,
    /// The init process of the running container.
    pid: Option<u32>,
    /// Whether the collector has an entry for the object.
    collecting: bool,
    /// Whether the container has ever run under the agent (a later start is a restart).
    started_once: bool,
    /// A Docker operation is in flight.
    busy: bool,
    /// The operation in flight is a sync (`docker update` / pause / unpause).
    syncing: bool,
    /// PATCHes that arrived while a sync was in flight, applied when it returns. Docker's update
    /// writes the limits it carries into the cgroup itself, at a moment the agent cannot see;
    /// a PATCH written to the cgroup during the sync could be overwritten by the older value
    /// after its answer said the new one was in place. Holding it until the sync returns keeps
    /// "the value is in the cgroup when the call returns" true, at the cost of a wait of at
    /// most one `docker update` for the few PATCHes that meet a sync.
    held: Vec<(ObjectPatch, Reply<Object>)>,
    /// Generation of the desired config (bumped by every PATCH) and the last one Docker was sent.
    want: u64,
    synced: u64,
    /// What Docker believes of paused.
    docker_paused: bool,
    /// The last PATCH, and the first one Docker has not been sent yet (see [`SYNC_SETTLE`]).
    last_patch: Option<Instant>,
    pending_since: Option<Instant>,
    /// A wake-up for the settle delay is on its way.
    timer: bool,
    /// An event asked for a fresh inspect.
    refresh: bool,
    /// The `created` event, for the answer to the create.
    event_id: u64,
    /// Creates waiting for the container to run (`?wait=true`).
    waiters: Vec<Reply<Created>>,
    /// The answer to a create that phase one has not answered yet.
    pending_reply: Option<(Reply<Created>, bool)>,
    /// A delete is waiting for the operation in flight; `true`: stop and remove the container,
    /// `false`: release it (an adopted one).
    delete: Option<bool>,
    /// Restored from the store after a restart: the first inspect also learns the CPU style.
    restored: bool,
}

impl ContainerWork {
    /// The work of a container object restored from the store, before its first inspect.
    pub(super) fn restored(docker_id: String, adopted: bool, _pid: Option<u32>) -> Self {
        ContainerWork {
            docker_id: Some(docker_id),
            adopted,
            busy: true,
            restored: true,
            ..Default::default()
        }
    }

    /// Whether the collector has an entry for the object (report tasks need one).
    pub(super) fn is_collected(&self) -> bool {
        self.collecting
    }
}

/// Results of Docker operations and news from the event watcher.
pub(super) enum Done {
    Prepared {
        id: String,
        result: Result<Prepared, ApiError>,
    },
    Started {
        id: String,
        result: Result<ContainerInfo, ApiError>,
    },
    Found {
        id: String,
        result: Result<ContainerInfo, ApiError>,
    },
    Inspected {
        id: String,
        result: Result<Option<ContainerInfo>, ApiError>,
    },
    Synced {
        id: String,
        gen: u64,
        paused: Option<bool>,
        result: Result<(), ApiError>,
    },
    Deleted {
        id: String,
        result: Result<(), ApiError>,
    },
    /// The settle delay of a sync is over.
    Wake {
        id: String,
    },
    Watch(WatchMsg),
}

impl Agent {
    /// Runs a Docker operation off the loop; its result comes back as a message.
    fn spawn_op(&self, fut: impl Future<Output = Done> + Send + 'static) {
        let tx = self.internal_tx.clone();
        // In the span of the command that started it (the request's trace, when tracing is on).
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let done = fut.await;
                // The loop has stopped only at shutdown; the result no longer matters then.
                let _ = tx.send(Internal::Container(Box::new(done)));
            },
            span,
        ));
    }

    /// Inspects a container again (after the agent's restart); the answer goes through
    /// [`Agent::observe`] like any other.
    pub(super) fn reinspect(&self, id: &str, docker_id: String) {
        let m = self.containers.clone();
        let id = id.to_string();
        self.spawn_op(async move {
            let result = m.inspect(&docker_id).await;
            Done::Inspected { id, result }
        });
    }

    /// Starts the event watcher (one task for the whole agent).
    pub(super) fn start_container_watch(&mut self) {
        let tx = self.internal_tx.clone();
        let since = i64::try_from(self.started_at.as_nanos()).unwrap_or(i64::MAX);
        self.watcher = Some(mgr::watch(self.containers.clone(), since, move |m| {
            tx.send(Internal::Container(Box::new(Done::Watch(m))))
                .is_ok()
        }));
    }

    fn cwork(
        &mut self,
        id: &str,
    ) -> Option<(&mut Object, &mut Option<CgroupRef>, &mut ContainerWork)> {
        let e = self.objects.get_mut(id)?;
        match &mut e.work {
            Work::Container(c) => Some((&mut e.obj, &mut e.cg, c)),
            _ => None,
        }
    }

    /// `POST /v1/objects` of kind container. The name is reserved at once (the object is
    /// `pending`); phase one (engine, name, image) answers the caller, phase two (pull, create,
    /// start) runs after it unless the caller waits for it.
    #[tracing::instrument(name = "core.create", skip_all)]
    pub(super) fn create_container(&mut self, spec: ObjectSpec, wait: bool, reply: Reply<Created>) {
        if spec.name == HOST_ID || self.names.contains_key(&spec.name) {
            let _ = reply.send(Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("name {:?} is already taken on this node", spec.name),
            )
            .with_field("name")));
            return;
        }
        if let Err(e) = self.check_cpuset(&spec.resources) {
            let _ = reply.send(Err(e));
            return;
        }
        let id = new_object_id();
        let adopt = spec
            .section::<nodeagent_types::ContainerSpec>()
            .and_then(|c| c.adopt.clone());
        let obj = Object::new(id.clone(), spec.clone(), Status::Pending);
        let work = ContainerWork {
            adopted: adopt.is_some(),
            busy: true,
            pending_reply: Some((reply, wait)),
            ..Default::default()
        };
        self.names.insert(obj.name.clone(), id.clone());
        self.objects.insert(
            id.clone(),
            Entry {
                obj,
                cg: None,
                work: Work::Container(work),
                deleting: None,
            },
        );
        let m = self.containers.clone();
        match adopt {
            Some(key) => self.spawn_op(async move {
                let result = m.find(&key).await;
                Done::Found { id, result }
            }),
            None => self.spawn_op(async move {
                let result = m.prepare(&spec).await;
                Done::Prepared { id, result }
            }),
        }
    }

    /// Drops an object whose create failed before anything existed in Docker, freeing its name.
    fn forget(&mut self, id: &str) -> Option<Entry> {
        let e = self.objects.remove(id)?;
        self.names.remove(&e.obj.name);
        if let Work::Container(c) = &e.work {
            if let Some(d) = &c.docker_id {
                self.by_docker.remove(d);
            }
        }
        self.shared.series.remove(id);
        Some(e)
    }

    pub(super) fn container_done(&mut self, d: Done) {
        match d {
            Done::Prepared { id, result } => self.on_prepared(&id, result),
            Done::Started { id, result } => self.on_started(&id, result),
            Done::Found { id, result } => self.on_found(&id, result),
            Done::Inspected { id, result } => {
                if let Some((_, _, c)) = self.cwork(&id) {
                    c.busy = false;
                    if c.restored {
                        if let Ok(Some(info)) = &result {
                            c.style = CpuStyle::of(info);
                            c.docker_paused = info.paused;
                        }
                        if result.is_ok() {
                            c.restored = false;
                        }
                    }
                }
                match result {
                    Ok(info) => self.observe(&id, info),
                    Err(e) => tracing::debug!(id = %id, error = %e.message, "container inspect"),
                }
                self.container_next(&id);
            }
            Done::Synced {
                id,
                gen,
                paused,
                result,
            } => self.on_synced(&id, gen, paused, result),
            Done::Deleted { id, result } => self.on_deleted(&id, result),
            Done::Wake { id } => {
                if let Some((_, _, c)) = self.cwork(&id) {
                    c.timer = false;
                }
                self.container_next(&id);
            }
            Done::Watch(m) => self.on_watch(m),
        }
    }

    /// Drops an object whose create failed: a delete that waits for it is answered as done,
    /// and the name is free again.
    fn drop_failed(&mut self, id: &str) {
        if self.objects.get(id).is_some_and(|e| e.deleting.is_some()) {
            self.finish_delete(id);
        } else {
            self.forget(id);
        }
    }

    fn on_prepared(&mut self, id: &str, result: Result<Prepared, ApiError>) {
        let Some((_, _, c)) = self.cwork(id) else {
            return;
        };
        let reply = c.pending_reply.take();
        let prepared = match result {
            Ok(p) => p,
            Err(err) => {
                // Nothing exists in Docker yet: the caller gets the error and the name is free.
                if let Some((r, _)) = reply {
                    let _ = r.send(Err(err));
                }
                self.drop_failed(id);
                return;
            }
        };
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        if e.deleting.is_some() {
            // Deleted before anything was created.
            if let Work::Container(c) = &mut e.work {
                c.busy = false;
            }
            if let Some((r, _)) = reply {
                let _ = r.send(Err(ApiError::precondition(
                    "the object was deleted before its container was created",
                )));
            }
            self.finish_delete(id);
            return;
        }
        let obj = e.obj.clone();
        let event_id = self.emit(
            EventKind::Created,
            &obj,
            format!("created container {}", obj.name),
            json!({"image": obj.spec.section::<nodeagent_types::ContainerSpec>().map(|c| c.image.clone())}),
        );
        let Some((_, _, c)) = self.cwork(id) else {
            return;
        };
        c.event_id = event_id;
        // Docker creates the container with the spec as it is now, PATCHes during phase one
        // included: nothing is left to sync.
        c.synced = c.want;
        c.pending_since = None;
        match reply {
            Some((r, true)) => c.waiters.push(r),
            Some((r, false)) => {
                let _ = r.send(Ok(Created {
                    id: id.to_string(),
                    event_id,
                    object: obj.clone(),
                }));
            }
            None => {}
        }
        let m = self.containers.clone();
        let id2 = id.to_string();
        let spec = obj.spec;
        self.spawn_op(async move {
            let result = m.run(prepared, &id2, &spec).await;
            Done::Started { id: id2, result }
        });
    }

    fn on_started(&mut self, id: &str, result: Result<ContainerInfo, ApiError>) {
        let Some((obj, _, c)) = self.cwork(id) else {
            return;
        };
        c.busy = false;
        match result {
            Ok(info) => {
                c.docker_id = Some(info.id.clone());
                c.docker_paused = info.paused;
                obj.container = Some(ContainerStatus {
                    id: info.id.clone(),
                    adopted: false,
                    sync: if c.want > c.synced {
                        SyncState::Pending
                    } else {
                        SyncState::InSync
                    },
                    sync_message: None,
                });
                self.by_docker.insert(info.id.clone(), id.to_string());
                self.observe(id, Some(info));
                self.answer_waiters(id, None);
            }
            Err(err) => {
                let waiting = !c.waiters.is_empty();
                if waiting {
                    // The caller waits for the outcome: it gets the error and, as for a
                    // process, nothing is left behind.
                    self.answer_waiters(id, Some(err));
                    self.drop_failed(id);
                    return;
                }
                obj.status = Status::Failed;
                obj.message = Some(err.message.clone());
                obj.updated_at = Timestamp::now();
                let snapshot = obj.clone();
                self.emit(
                    EventKind::Failed,
                    &snapshot,
                    format!("container failed to start: {}", err.message),
                    json!({"field": err.field}),
                );
            }
        }
        self.container_next(id);
    }

    fn on_found(&mut self, id: &str, result: Result<ContainerInfo, ApiError>) {
        let known = match &result {
            Ok(info) => self.by_docker.get(&info.id).cloned(),
            Err(_) => None,
        };
        let Some((obj, _, c)) = self.cwork(id) else {
            return;
        };
        c.busy = false;
        let reply = c.pending_reply.take();
        let result = match (result, known) {
            (Ok(info), Some(other)) => Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "container {} is already object {other} on this node",
                    short_id(&info.id)
                ),
            )
            .with_field("container.adopt")),
            (r, _) => r,
        };
        let info = match result {
            Ok(i) => i,
            Err(err) => {
                if let Some((r, _)) = reply {
                    let _ = r.send(Err(err));
                }
                self.drop_failed(id);
                return;
            }
        };
        c.docker_id = Some(info.id.clone());
        c.style = CpuStyle::of(&info);
        c.docker_paused = info.paused;
        // Limits given with the adoption are applied like a PATCH: to the cgroup at once, to
        // Docker by a sync.
        if resource_update(&obj.spec.resources, c.style) != Default::default() {
            c.want += 1;
        }
        obj.container = Some(ContainerStatus {
            id: info.id.clone(),
            adopted: true,
            sync: if c.want > c.synced {
                SyncState::Pending
            } else {
                SyncState::InSync
            },
            sync_message: None,
        });
        obj.paused = info.paused;
        let snapshot = obj.clone();
        self.by_docker.insert(info.id.clone(), id.to_string());
        let event_id = self.emit(
            EventKind::Created,
            &snapshot,
            format!("adopted container {} ({})", info.name, short_id(&info.id)),
            json!({"container": info.id, "adopted": true}),
        );
        if let Some((_, _, c)) = self.cwork(id) {
            c.event_id = event_id;
            if let Some((r, _)) = reply {
                c.waiters.push(r);
            }
        }
        let deleting = self.objects.get(id).is_some_and(|e| e.deleting.is_some());
        if !deleting {
            self.observe(id, Some(info));
        }
        self.answer_waiters(id, None);
        self.container_next(id);
    }

    /// Answers the creates waiting for this object: with the object, or with `err`.
    fn answer_waiters(&mut self, id: &str, err: Option<ApiError>) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let Work::Container(c) = &mut e.work else {
            return;
        };
        for w in c.waiters.drain(..) {
            let _ = w.send(match &err {
                Some(er) => Err(er.clone()),
                None => Ok(Created {
                    id: id.to_string(),
                    event_id: c.event_id,
                    object: e.obj.clone(),
                }),
            });
        }
    }

    /// Takes the state Docker reports (`None`: the container no longer exists) into the object:
    /// status, pid, cgroup, sampling; and emits an event for each change.
    fn observe(&mut self, id: &str, info: Option<ContainerInfo>) {
        let Some(e) = self.objects.get(id) else {
            return;
        };
        if e.deleting.is_some() {
            return;
        }
        let Some(info) = info else {
            self.container_lost(id);
            return;
        };
        if info.running && !info.restarting {
            self.container_running(id, &info);
        } else {
            self.container_stopped(id, &info);
        }
    }

    fn container_lost(&mut self, id: &str) {
        let Some((obj, cg, c)) = self.cwork(id) else {
            return;
        };
        if matches!(obj.status, Status::Lost | Status::Failed) {
            return;
        }
        let cid = c.docker_id.clone().unwrap_or_default();
        *cg = None;
        c.pid = None;
        let was_collecting = std::mem::take(&mut c.collecting);
        obj.status = Status::Lost;
        obj.pid = None;
        obj.paused = false;
        let msg = format!("container {} was removed outside the agent", short_id(&cid));
        obj.message = Some(msg.clone());
        obj.updated_at = Timestamp::now();
        let snapshot = obj.clone();
        if was_collecting {
            self.collector.send(Command::Remove { id: id.to_string() });
        }
        self.emit(EventKind::Lost, &snapshot, msg, json!({"container": cid}));
    }

    fn container_stopped(&mut self, id: &str, info: &ContainerInfo) {
        let Some((_, cg, c)) = self.cwork(id) else {
            return;
        };
        *cg = None;
        c.pid = None;
        c.docker_paused = false;
        if c.collecting {
            self.collector.send(Command::Retarget {
                id: id.to_string(),
                target: Target::Idle,
            });
        }
        let Some((obj, _, c)) = self.cwork(id) else {
            return;
        };
        obj.pid = None;
        obj.paused = false;
        let (status, msg) = if info.restarting {
            (
                Status::Pending,
                "Docker is restarting the container".to_string(),
            )
        } else if !c.started_once && info.exit_code.unwrap_or(0) == 0 && info.status == "created" {
            (
                Status::Exited,
                "the container has not been started (Docker status created)".to_string(),
            )
        } else {
            let code = info.exit_code.and_then(|c| i32::try_from(c).ok());
            obj.exit_code = code;
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
            (Status::Exited, m)
        };
        let changed = obj.status != status;
        obj.status = status;
        obj.message = Some(msg.clone());
        obj.updated_at = Timestamp::now();
        let snapshot = obj.clone();
        // A container that never ran (Docker status `created`) did not exit.
        if changed && status == Status::Exited && info.status != "created" {
            self.emit(
                EventKind::Exited,
                &snapshot,
                msg,
                json!({
                    "exit_code": snapshot.exit_code,
                    "oom_killed": info.oom_killed,
                    "container": info.id,
                }),
            );
        }
    }

    fn container_running(&mut self, id: &str, info: &ContainerInfo) {
        let Some(pid) = info.pid else { return };
        let same = self
            .cwork(id)
            .is_some_and(|(_, cg, c)| c.pid == Some(pid) && cg.is_some() && c.collecting);
        if !same {
            if let Err(err) = self.attach(id, pid) {
                if !self.procfs.alive(pid) {
                    // The init process exited between the inspect and now: look again (its
                    // `die` event is on the way too).
                    if let Some((_, _, c)) = self.cwork(id) {
                        c.refresh = true;
                    }
                    return;
                }
                // It runs, but its cgroup cannot be used: say so on the object rather than
                // retrying in a loop; the next event tries again.
                tracing::warn!(id, error = %err.message, "attaching to the container's cgroup");
                if let Some((obj, _, _)) = self.cwork(id) {
                    obj.message = Some(format!("not sampled: {}", err.message));
                }
                return;
            }
        }
        let Some((obj, _, c)) = self.cwork(id) else {
            return;
        };
        // Docker's view of paused wins unless a sync of ours is still to tell it otherwise.
        if c.want == c.synced {
            obj.paused = info.paused;
        }
        let status = if obj.paused {
            Status::Paused
        } else {
            Status::Running
        };
        let before = obj.status;
        let restart = !same && c.started_once;
        c.started_once = true;
        obj.status = status;
        if before != status || !same {
            obj.updated_at = Timestamp::now();
        }
        if !same {
            obj.exit_code = None;
            obj.exit_signal = None;
            obj.message = None;
            if restart {
                obj.restarts += 1;
            }
        }
        let snapshot = obj.clone();
        if !same {
            if restart {
                self.emit(
                    EventKind::Restarted,
                    &snapshot,
                    format!("container restarted (pid {pid})"),
                    json!({"pid": pid, "container": info.id}),
                );
            } else {
                self.emit(
                    EventKind::Started,
                    &snapshot,
                    "running",
                    json!({"pid": pid, "container": info.id}),
                );
            }
        } else if before != status {
            let k = if status == Status::Paused {
                EventKind::Paused
            } else {
                EventKind::Resumed
            };
            self.emit(k, &snapshot, format!("{} in Docker", k.as_str()), json!({}));
        }
    }

    /// Finds the cgroup of the container's init process `pid`, applies limits Docker does not
    /// have yet, and (re)points the collector at it.
    fn attach(&mut self, id: &str, pid: u32) -> Result<(), ApiError> {
        let cg = self.containers.cgroup_of(pid)?;
        let reader = self
            .cgroups
            .stat_reader(&cg)
            .map_err(nodeagent_engine::managers::cgroup_error)?;
        let net_pid = Some(pid).filter(|p| self.own_netns(*p));
        let path = self.cgroups.path(&cg);
        let (ring, cgroups) = (self.cfg.ring_size, self.cgroups.clone());
        let Some(e) = self.objects.get_mut(id) else {
            return Ok(());
        };
        let Work::Container(c) = &mut e.work else {
            return Ok(());
        };
        // A container restarted by Docker gets the limits Docker stores; those the agent has
        // not yet got into Docker are written again.
        if c.want > c.synced {
            if e.obj.spec.resources.memory.is_some() {
                self.containers.lift_memsw(&cg)?;
            }
            if let Err(er) = cgroups.apply(&cg, &e.obj.spec.resources) {
                tracing::warn!(id, error = %er, "re-applying limits to the container's cgroup");
            }
            if e.obj.paused {
                let _ = cgroups.freeze(&cg, true);
            }
        }
        e.cg = Some(cg);
        e.obj.cgroup = Some(path);
        e.obj.pid = Some(pid);
        c.pid = Some(pid);
        let target = Target::Cgroup { reader, net_pid };
        let interval = e.obj.spec.collect.interval.as_std();
        if c.collecting {
            self.collector.send(Command::Retarget {
                id: id.to_string(),
                target,
            });
        } else {
            c.collecting = true;
            let series = match self.shared.series.get(id) {
                Some(s) => s,
                None => self.shared.series.insert(Series::new(
                    id.to_string(),
                    e.obj.name.clone(),
                    Kind::Container,
                    ring,
                )),
            };
            self.collector.send(Command::Add {
                series,
                target,
                interval,
            });
            // Report tasks follow the object to its new collector entry (after a restart of the
            // container or of the agent).
            let obj = e.obj.clone();
            self.resume_push(&obj);
        }
        Ok(())
    }

    /// Starts what is due for the object, if no operation is in flight: a delete first, then
    /// an inspect asked for by events, then a sync of the latest desired config.
    pub(super) fn container_next(&mut self, id: &str) {
        let grace = self.cfg.stop_grace;
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let Work::Container(c) = &mut e.work else {
            return;
        };
        if c.busy {
            return;
        }
        if let Some(remove) = c.delete {
            let docker_id = c.docker_id.clone();
            match docker_id {
                Some(did) if remove && e.obj.status != Status::Lost => {
                    c.busy = true;
                    let cg = e.cg.clone();
                    let m = self.containers.clone();
                    let id2 = id.to_string();
                    self.spawn_op(async move {
                        let result = m.stop_and_remove(&did, grace, cg).await;
                        Done::Deleted { id: id2, result }
                    });
                }
                // Released (adopted, kept running), lost, or never created: nothing to do in
                // Docker.
                _ => self.finish_delete(id),
            }
            return;
        }
        let Some(did) = c.docker_id.clone() else {
            return;
        };
        if matches!(e.obj.status, Status::Lost | Status::Failed) {
            return;
        }
        if c.refresh {
            c.refresh = false;
            c.busy = true;
            let m = self.containers.clone();
            let id2 = id.to_string();
            self.spawn_op(async move {
                let result = m.inspect(&did).await;
                Done::Inspected { id: id2, result }
            });
            return;
        }
        if c.want > c.synced {
            let now = Instant::now();
            let settled = c.last_patch.is_none_or(|t| now >= t + SYNC_SETTLE);
            let due = c.pending_since.map(|t| t + SYNC_MAX_DELAY);
            if !settled && due.is_none_or(|d| now < d) {
                if !c.timer {
                    c.timer = true;
                    let settle_at = c.last_patch.map_or(now, |t| t + SYNC_SETTLE);
                    let wake = due.map_or(settle_at, |d| d.min(settle_at));
                    let tx = self.internal_tx.clone();
                    let id2 = id.to_string();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(wake.into()).await;
                        let _ = tx.send(Internal::Container(Box::new(Done::Wake { id: id2 })));
                    });
                }
                return;
            }
            c.pending_since = None;
            let gen = c.want;
            let update = resource_update(&e.obj.spec.resources, c.style);
            let live = matches!(e.obj.status, Status::Running | Status::Paused);
            let pause = match (&e.cg, live) {
                (Some(cg), true) if e.obj.paused != c.docker_paused => {
                    Some((e.obj.paused, cg.clone()))
                }
                _ => None,
            };
            let paused = pause.as_ref().map(|p| p.0);
            c.busy = true;
            c.syncing = true;
            let m = self.containers.clone();
            let id2 = id.to_string();
            self.spawn_op(async move {
                let result = m.sync(&did, update, pause).await;
                Done::Synced {
                    id: id2,
                    gen,
                    paused,
                    result,
                }
            });
        }
    }

    fn on_synced(
        &mut self,
        id: &str,
        gen: u64,
        paused: Option<bool>,
        result: Result<(), ApiError>,
    ) {
        let cgroups = self.cgroups.clone();
        let Some((obj, cg, c)) = self.cwork(id) else {
            return;
        };
        c.busy = false;
        c.syncing = false;
        let held = std::mem::take(&mut c.held);
        // A failed sync also counts as tried: the next PATCH (or a reconnect) tries again,
        // rather than the loop hammering an engine that refuses.
        c.synced = c.synced.max(gen);
        let status = obj.container.get_or_insert_with(|| ContainerStatus {
            id: c.docker_id.clone().unwrap_or_default(),
            adopted: c.adopted,
            sync: SyncState::InSync,
            sync_message: None,
        });
        match &result {
            Ok(()) => {
                if let Some(p) = paused {
                    c.docker_paused = p;
                }
                if c.synced == c.want {
                    status.sync = SyncState::InSync;
                    status.sync_message = None;
                }
            }
            Err(e) => {
                status.sync = SyncState::Failed;
                status.sync_message = Some(e.message.clone());
            }
        }
        // Docker's update wrote the limits of generation `gen` into the cgroup as it went, over
        // any PATCH that came meanwhile: the latest values go back in at once (a few writes;
        // the next sync tells Docker).
        if c.want > gen {
            if let Some(cg) = cg.as_ref().filter(|cg| cgroups.exists(cg)) {
                if let Err(e) = cgroups.apply(cg, &obj.spec.resources) {
                    tracing::warn!(id, error = %e, "re-applying limits after a docker sync");
                }
            }
        }
        // Docker's pause or unpause moved the freezer; if a PATCH meanwhile asked for the
        // other state, the cgroup gets it back at once (the next sync tells Docker).
        if let (Some(p), Some(cg)) = (paused, cg.as_ref()) {
            if p != obj.paused {
                if let Err(e) = cgroups.freeze(cg, obj.paused) {
                    tracing::warn!(id, error = %e, "re-asserting the freezer state");
                }
            }
        }
        if let Err(e) = result {
            let snapshot = obj.clone();
            tracing::warn!(id, error = %e.message, "docker sync failed");
            self.emit(
                EventKind::Updated,
                &snapshot,
                format!("docker sync failed: {}", e.message),
                json!({"sync": "failed"}),
            );
        }
        // The PATCHes held during the sync, in order; the first one schedules the next sync.
        for (patch, reply) in held {
            let _ = reply.send(self.update(id, patch));
        }
        self.container_next(id);
    }

    /// Holds a PATCH of limits or pause for a container whose Docker sync is in flight (see
    /// [`ContainerWork::held`]); gives it back when it can be applied now.
    pub(super) fn hold_container_update(
        &mut self,
        key: &str,
        patch: ObjectPatch,
        reply: Reply<Object>,
    ) -> Option<(ObjectPatch, Reply<Object>)> {
        if patch.resources.is_none() && patch.paused.is_none() {
            return Some((patch, reply));
        }
        let Ok(id) = self.id_of(key) else {
            return Some((patch, reply));
        };
        let Some(Entry {
            work: Work::Container(c),
            deleting: None,
            ..
        }) = self.objects.get_mut(&id)
        else {
            return Some((patch, reply));
        };
        if !c.syncing {
            return Some((patch, reply));
        }
        c.held.push((patch, reply));
        None
    }

    /// `PATCH` of a container: the cgroup first (the value is there when this returns), Docker
    /// after (off the loop, coalesced). A container that is not running has no cgroup; then
    /// only Docker is told, and the limits apply when it starts.
    pub(super) fn update_container(
        &mut self,
        id: &str,
        patch: ObjectPatch,
    ) -> Result<Object, ApiError> {
        let cgroups = self.cgroups.clone();
        let containers = self.containers.clone();
        let Some(e) = self.objects.get_mut(id) else {
            return Err(ApiError::not_found(id));
        };
        let Work::Container(c) = &mut e.work else {
            return Err(ApiError::internal("not a container"));
        };
        if matches!(e.obj.status, Status::Lost | Status::Failed) {
            return Err(ApiError::precondition(format!(
                "container object {} is {}; there is nothing to update",
                e.obj.name, e.obj.status
            )));
        }
        // The cgroup may have gone with a container that just exited (its event is on the way).
        let cg = e.cg.clone().filter(|cg| cgroups.exists(cg));
        let mut changed = None;
        if let Some(r) = &patch.resources {
            if let Some(cg) = &cg {
                if r.memory.is_some() {
                    containers.lift_memsw(cg)?;
                }
                cgroups
                    .apply(cg, r)
                    .map_err(nodeagent_engine::managers::cgroup_error)?;
            }
            e.obj.spec.resources.merge(r);
            c.want += 1;
            changed = Some(serde_json::to_value(r).unwrap_or_default());
        }
        let mut pause_event = None;
        if let Some(p) = patch.paused {
            if p != e.obj.paused {
                if !matches!(e.obj.status, Status::Running | Status::Paused) {
                    return Err(ApiError::precondition(format!(
                        "object {} is {}; only a running object can be paused or resumed",
                        e.obj.name, e.obj.status
                    ))
                    .with_field("paused"));
                }
                let Some(cg) = &cg else {
                    return Err(ApiError::precondition(format!(
                        "container {} has no cgroup right now (it is stopping)",
                        e.obj.name
                    ))
                    .with_field("paused"));
                };
                cgroups
                    .freeze(cg, p)
                    .map_err(nodeagent_engine::managers::cgroup_error)
                    .map_err(|er| er.with_field("paused"))?;
                e.obj.paused = p;
                e.obj.status = if p { Status::Paused } else { Status::Running };
                c.want += 1;
                pause_event = Some(if p {
                    EventKind::Paused
                } else {
                    EventKind::Resumed
                });
            }
        }
        if c.want > c.synced {
            let now = Instant::now();
            c.last_patch = Some(now);
            c.pending_since.get_or_insert(now);
            if let Some(s) = e.obj.container.as_mut() {
                s.sync = SyncState::Pending;
                s.sync_message = None;
            }
        }
        e.obj.updated_at = Timestamp::now();
        let obj = e.obj.clone();
        if let Some(r) = changed {
            self.emit(
                EventKind::Updated,
                &obj,
                if cg.is_some() {
                    "resources updated in place"
                } else {
                    "resources updated in Docker's config (the container is not running)"
                },
                json!({"resources": r}),
            );
        }
        if let Some(k) = pause_event {
            self.emit(k, &obj, k.as_str(), serde_json::Value::Null);
        }
        self.container_next(id);
        Ok(obj)
    }

    /// `DELETE` of a container, after the generic part has set `deleting` and stopped
    /// collection: an adopted container is released (left running) unless `remove`; any other
    /// is stopped (with the grace period) and removed.
    pub(super) fn delete_container(&mut self, id: &str, remove: bool) {
        let Some((_, _, c)) = self.cwork(id) else {
            return;
        };
        c.collecting = false;
        c.refresh = false;
        c.delete = Some(!c.adopted || remove);
        // Creates still waiting for the container learn that it is gone.
        let waiters = std::mem::take(&mut c.waiters);
        for w in waiters {
            let _ = w.send(Err(ApiError::precondition(
                "the object was deleted before its container ran",
            )));
        }
        self.container_next(id);
    }

    fn on_deleted(&mut self, id: &str, result: Result<(), ApiError>) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let Work::Container(c) = &mut e.work else {
            return;
        };
        c.busy = false;
        match result {
            Ok(()) => self.finish_delete(id),
            Err(err) => {
                // The container is still there: the object stays, says why, and can be deleted
                // again. Collection resumes with the next inspect.
                c.delete = None;
                c.refresh = true;
                e.obj.message = Some(format!("delete failed: {}", err.message));
                let d: Option<Deleting> = e.deleting.take();
                let snapshot = e.obj.clone();
                for w in d.map(|d| d.waiters).unwrap_or_default() {
                    let _ = w.send(Err(err.clone()));
                }
                self.emit(
                    EventKind::Failed,
                    &snapshot,
                    format!("delete failed: {}", err.message),
                    serde_json::Value::Null,
                );
                self.container_next(id);
            }
        }
    }

    fn on_watch(&mut self, m: WatchMsg) {
        match m {
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
                let ids: Vec<String> = self
                    .objects
                    .iter()
                    .filter(|(_, e)| matches!(e.work, Work::Container(_)))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    if let Some((obj, _, c)) = self.cwork(&id) {
                        if c.docker_id.is_some() {
                            c.refresh = true;
                        }
                        if obj
                            .container
                            .as_ref()
                            .is_some_and(|s| s.sync == SyncState::Failed)
                        {
                            c.want += 1;
                        }
                    }
                    self.container_next(&id);
                }
            }
            WatchMsg::Disconnected { message } => {
                if self.docker_up != Some(false) {
                    tracing::warn!(
                        "{message}; the container kind answers 503 until the engine is back \
                         (other kinds are not affected)"
                    );
                }
                self.docker_up = Some(false);
            }
            WatchMsg::Event(ev) => {
                let id = self.by_docker.get(&ev.id).cloned().or_else(|| {
                    // A container still being created has no Docker id in the registry yet;
                    // its label names the object.
                    ev.attributes
                        .get(mgr::LABEL_ID)
                        .filter(|oid| {
                            self.objects.get(oid).is_some_and(
                                |e| matches!(&e.work, Work::Container(c) if c.docker_id.is_none()),
                            )
                        })
                        .cloned()
                });
                let Some(id) = id else { return };
                let Some(e) = self.objects.get(&id) else {
                    return;
                };
                if e.deleting.is_some() {
                    return;
                }
                if ev.action == "oom" {
                    let obj = e.obj.clone();
                    self.emit(
                        EventKind::OomKilled,
                        &obj,
                        "out of memory: the kernel killed a process of the container",
                        json!({"container": ev.id}),
                    );
                }
                if let Some((_, _, c)) = self.cwork(&id) {
                    c.refresh = true;
                }
                self.container_next(&id);
            }
        }
    }

    /// Whether `deleting` work of this entry is driven by Docker operations (not by the 20 ms
    /// delete tick).
    pub(super) fn is_container(e: &Entry) -> bool {
        matches!(e.work, Work::Container(_))
    }
}
