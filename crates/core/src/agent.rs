//! The event loop and the object registry it owns.

mod container;
mod objects;
mod restore;

use crate::handle::{AgentHandle, Created, HostInfo, PushAck, Shared};
use crate::store::{Record, Store};
use crate::{CoreConfig, CoreError};
use nodeagent_drivers::cgroup::{CgroupManager, CgroupRef, CgroupVersion, Cgroups, Parent};
use nodeagent_drivers::process::{self as proc_driver, ExitStatus};
use nodeagent_drivers::procfs::{HostFacts, ProcFs};
use nodeagent_engine::collector::{Collector, Command, Target};
use nodeagent_engine::managers::cgroup::{Adopted, CgroupKindManager};
use nodeagent_engine::managers::container::ContainerManager;
use nodeagent_engine::managers::process::ProcessManager;
use nodeagent_engine::sinks::{self, SinkConfig, SinkHandle, SinkType};
use nodeagent_engine::upstream::NodeInfo;
use nodeagent_engine::{EventLog, Series, SeriesMap};
use nodeagent_types::spec::{MAX_INTERVAL, MIN_INTERVAL};
use nodeagent_types::{
    new_object_id, ApiError, CollectSpec, Duration, ErrorCode, EventKind, Kind, Object,
    ObjectPatch, ObjectSpec, Resources, RestartPolicy, Status, Timestamp, HOST_ID,
};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// How long network sinks get at shutdown to deliver what their spool holds.
const SINK_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// What front ends ask of the core (Firecracker's "action" enum).
pub(crate) enum Cmd {
    Create {
        spec: Box<ObjectSpec>,
        wait: bool,
        /// Client-chosen idempotency key.
        request_id: Option<String>,
        reply: Reply<Created>,
    },
    Get {
        key: String,
        reply: Reply<Object>,
    },
    List {
        reply: Reply<Vec<Object>>,
    },
    Update {
        key: String,
        patch: Box<ObjectPatch>,
        reply: Reply<Object>,
    },
    Delete {
        key: String,
        wait: bool,
        /// For an adopted container: stop and remove it rather than release it.
        remove: bool,
        reply: Reply<Object>,
    },
    PushOn {
        key: String,
        sink: String,
        interval: Option<Duration>,
        reply: Reply<PushAck>,
    },
    PushOff {
        key: String,
        sink: String,
        reply: Reply<PushAck>,
    },
    PushOnce {
        key: String,
        sink: String,
        reply: Reply<(String, oneshot::Receiver<Result<u64, String>>)>,
    },
    Host {
        reply: Reply<HostInfo>,
    },
    /// A command sent from inside a span (the API request's, when tracing is on): the loop
    /// handles it inside that span, so the core's spans join the request's trace.
    Traced {
        cmd: Box<Cmd>,
        span: tracing::Span,
    },
}

impl Cmd {
    /// Whether the command may change what the store keeps (objects, requests, events).
    fn writes(&self) -> bool {
        match self {
            Cmd::Get { .. } | Cmd::List { .. } | Cmd::Host { .. } => false,
            Cmd::Traced { cmd, .. } => cmd.writes(),
            _ => true,
        }
    }
}

/// Timers the loop sets for itself.
enum Internal {
    Restart(String),
    /// A Docker operation's result, or news from the Docker event watcher.
    Container(Box<container::Done>),
}

enum Work {
    Host,
    Process {
        pid: Option<u32>,
        started: Instant,
        /// Consecutive quick failures, for the restart backoff.
        failures: u32,
    },
    Adopted(Adopted),
    Container(container::ContainerWork),
}

struct Deleting {
    waiters: Vec<Reply<Object>>,
    deadline: Instant,
    killed: bool,
}

struct Entry {
    obj: Object,
    cg: Option<CgroupRef>,
    work: Work,
    deleting: Option<Deleting>,
}

/// The running core. [`Agent::start`] builds it (drivers, engine, sinks, the collector thread);
/// [`Agent::run`] drives the event loop until shutdown, then flushes the sinks.
pub struct Agent {
    cfg: CoreConfig,
    rx: mpsc::Receiver<Cmd>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    shared: Arc<Shared>,
    cgroups: Arc<Cgroups>,
    procfs: ProcFs,
    facts: HostFacts,
    node: Arc<str>,
    processes: ProcessManager,
    adopter: CgroupKindManager,
    containers: ContainerManager,
    /// Docker container id → object id, for the containers the agent runs or adopted.
    by_docker: HashMap<String, String>,
    /// Whether the Docker event watcher is connected (`None` before its first report).
    docker_up: Option<bool>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    collector: Collector,
    sinks: BTreeMap<String, Arc<SinkHandle>>,
    objects: objects::Objects,
    names: HashMap<String, String>,
    started_at: Timestamp,
    /// The durable store, and what it holds of each object (to write only what changed).
    store: Arc<Store>,
    /// Commits the store's batches off the loop.
    writer: crate::store::Writer,
    /// A hash of the bytes last written for each object.
    persisted: HashMap<String, u64>,
    /// The last event sequence number written to the store.
    events_persisted: u64,
    /// Start times of the process pids (`/proc/<pid>/stat` field 22), by object id.
    pid_starts: HashMap<String, (u32, u64)>,
    /// Processes re-adopted after a restart: no longer the agent's children, so their exit is
    /// found by polling `/proc` (pid and start time), not by `waitpid`.
    foreign: HashMap<String, (u32, u64)>,
    /// Event sequence numbers reserved in the store (see [`crate::store::Store::reserve_events`]).
    events_reserved: u64,
    /// Create requests with a `request_id`, to write with their object.
    pending_requests: Vec<(String, crate::store::RequestRecord)>,
    /// Objects were deleted since the last [`Agent::trim_heap`].
    deleted_since_trim: bool,
}

impl Agent {
    /// Builds the core: cgroup and procfs drivers, managers, sinks, the collector thread, and
    /// the host object with its heartbeat. Must be called inside a tokio runtime (sinks are
    /// tasks).
    pub fn start(cfg: CoreConfig) -> Result<(Agent, AgentHandle), CoreError> {
        let sd = &cfg.state_dir;
        std::fs::create_dir_all(sd.join("objects")).map_err(|source| CoreError::StateDir {
            path: sd.clone(),
            source,
        })?;
        let procfs = ProcFs::new(&cfg.proc_root);
        let facts = procfs.host_facts()?;
        let node: Arc<str> = if cfg.node_name.is_empty() {
            facts.hostname.as_str().into()
        } else {
            cfg.node_name.as_str().into()
        };
        let parent = match &cfg.cgroup_parent {
            Some(p) => Parent::Absolute(p.clone()),
            None => Parent::Own,
        };
        let cgroups = Arc::new(Cgroups::detect(&cfg.cgroup_root, &cfg.proc_root, parent)?);
        let store = Arc::new(Store::open(sd, cfg.event_log_size)?);
        let t0 = Instant::now();
        let loaded = store.load()?;
        let events = Arc::new(EventLog::new(cfg.event_log_size));
        let events_persisted = loaded.last_seq;
        events.restore(loaded.events, loaded.last_seq);
        let mut sink_map = BTreeMap::new();
        // Network sinks register this host with their upstream (the seed's "register the host
        // through the RPC driver at start-up"), in the background: start-up never waits for it.
        let sink_ctx = sinks::SinkContext {
            state_dir: sd.clone(),
            file_max_bytes: cfg.file_sink_max_bytes,
            events: events.clone(),
            node: Arc::new(NodeInfo {
                node: node.to_string(),
                hostname: facts.hostname.clone(),
                cpus: facts.cpus,
                memory_total_bytes: facts.memory_total_bytes,
                kernel: facts.kernel.clone(),
                cgroup_version: match cgroups.version() {
                    CgroupVersion::V1 => "v1".into(),
                    CgroupVersion::V2 => "v2".into(),
                },
                drivers: ["cgroup", "procfs", "process"]
                    .iter()
                    .map(|d| d.to_string())
                    .collect(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
            }),
        };
        let builtin = [
            SinkConfig::builtin(sinks::STDOUT, SinkType::Stdout),
            SinkConfig::builtin(sinks::FILE, SinkType::File),
        ];
        for sc in builtin.iter().chain(cfg.sinks.iter()) {
            if sink_map.contains_key(&sc.name) {
                return Err(CoreError::Config(format!(
                    "sink {:?} is defined twice (stdout and file are built in)",
                    sc.name
                )));
            }
            let h = sinks::start(sc, &sink_ctx)?;
            sink_map.insert(sc.name.clone(), h);
        }
        for s in &cfg.heartbeat_sinks {
            if !sink_map.contains_key(s) {
                return Err(CoreError::Config(format!(
                    "heartbeat sink {s:?} is not defined; known sinks: {}",
                    sink_map.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let collector =
            Collector::start(procfs.clone(), node.clone()).map_err(CoreError::Collector)?;
        let shared = Arc::new(Shared {
            series: SeriesMap::default(),
            events,
            ready: Default::default(),
            policy: crate::policy::Policy::new(&cfg.policy, &cfg.proc_root)?,
            sinks: sink_map.values().cloned().collect(),
        });
        let (tx, rx) = mpsc::channel(1024);
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let processes = ProcessManager::new(cgroups.clone(), sd.join("objects"));
        let adopter =
            CgroupKindManager::new(cgroups.clone(), procfs.clone(), cfg.cgroup_root.clone());
        let containers = ContainerManager::new(&cfg.docker_socket, cgroups.clone(), procfs.clone());
        let mut agent = Agent {
            rx,
            internal_tx,
            internal_rx,
            shared: shared.clone(),
            cgroups,
            procfs,
            facts,
            node,
            processes,
            adopter,
            containers,
            by_docker: HashMap::new(),
            docker_up: None,
            watcher: None,
            collector,
            sinks: sink_map,
            objects: objects::Objects::default(),
            names: HashMap::new(),
            started_at: Timestamp::now(),
            writer: crate::store::Writer::start(store.clone())
                .map_err(|e| CoreError::Thread("store writer", e))?,
            store,
            persisted: HashMap::new(),
            events_persisted,
            pid_starts: HashMap::new(),
            foreign: HashMap::new(),
            events_reserved: 0,
            pending_requests: Vec::new(),
            deleted_since_trim: false,
            cfg,
        };
        agent.add_host();
        let n = loaded.records.len();
        for rec in loaded.records {
            agent.persisted.insert(
                rec.object.id.clone(),
                restore::hash_bytes(&Record::encode(&rec.object, rec.pid_start)),
            );
            agent.restore(rec);
        }
        agent.persist(true);
        agent.reserve_seqs()?;
        tracing::info!(
            objects = n,
            elapsed_ms = t0.elapsed().as_secs_f64() * 1e3,
            store = %agent.store.path().display(),
            "state restored"
        );
        let handle = AgentHandle { tx, shared };
        Ok((agent, handle))
    }

    /// The host object: always present, read-only, sampled every `host_interval`, and reported
    /// to the heartbeat sinks (the seed's heartbeat).
    fn add_host(&mut self) {
        let spec = ObjectSpec {
            name: self.node.to_string(),
            kind: Kind::Host,
            labels: BTreeMap::new(),
            section: None,
            resources: Resources::default(),
            collect: CollectSpec {
                interval: Duration(self.cfg.host_interval),
            },
        };
        let mut push = BTreeMap::new();
        for s in &self.cfg.heartbeat_sinks {
            push.insert(s.clone(), Duration(self.cfg.heartbeat_interval));
        }
        let mut obj = Object::new(HOST_ID.into(), spec, Status::Running);
        obj.push = push.clone();
        let series = self.shared.series.insert(Series::new(
            HOST_ID.into(),
            obj.name.clone(),
            Kind::Host,
            self.cfg.ring_size,
        ));
        self.collector.send(Command::Add {
            series,
            target: Target::Host,
            interval: self.cfg.host_interval,
        });
        for (sink, interval) in push {
            if let Some(h) = self.sinks.get(&sink) {
                self.collector.send(Command::PushOn {
                    id: HOST_ID.into(),
                    sink: h.clone(),
                    interval: interval.0,
                });
            }
        }
        self.names.insert(obj.name.clone(), HOST_ID.into());
        self.objects.insert(
            HOST_ID.into(),
            Entry {
                obj,
                cg: None,
                work: Work::Host,
                deleting: None,
            },
        );
    }

    /// Runs the event loop until `shutdown` resolves; then stops collection with a last round of
    /// reports and flushes every sink. Workloads keep running.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGCHLD stream; exits are found by polling");
                None
            }
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fast = tokio::time::interval(std::time::Duration::from_millis(20));
        fast.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        self.start_container_watch();
        self.shared.events.emit(
            EventKind::AgentStarted,
            None,
            format!(
                "nodeagent {} started on {}",
                env!("CARGO_PKG_VERSION"),
                self.node
            ),
            json!({"cgroup_version": self.cgroup_version()}),
        );
        self.persist(true);
        self.shared.ready.store(true, Ordering::Release);
        loop {
            // Container deletes advance with their Docker operation, not with the tick.
            let deleting = self
                .objects
                .values()
                .any(|e| e.deleting.is_some() && !Self::is_container(e));
            tokio::select! {
                () = &mut shutdown => break,
                Some(cmd) = self.rx.recv() => {
                    let writes = cmd.writes();
                    self.handle(cmd);
                    if !writes {
                        // Reads change nothing to persist; skipping the store's diff keeps
                        // GETs O(1) with thousands of objects.
                        continue;
                    }
                }
                Some(i) = self.internal_rx.recv() => self.internal(i),
                Some(()) = async { match sigchld.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => self.reap(),
                _ = tick.tick() => { self.reap(); self.check_foreign(); self.check_adopted(); self.trim_heap(); }
                _ = fast.tick(), if deleting => { self.reap(); self.check_foreign(); self.progress_deletes(); }
            }
            self.persist(false);
        }
        self.shared.ready.store(false, Ordering::Release);
        if self.cfg.stop_workloads {
            self.stop_processes().await;
        }
        self.persist(true);
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        let (tx, rx) = oneshot::channel();
        self.collector.send(Command::Shutdown(tx));
        let _ = rx.await;
        // Emitted before the sinks stop, so that network sinks carry it upstream.
        self.shared.events.emit(
            EventKind::AgentStopped,
            None,
            "nodeagent stopped; workloads keep running",
            serde_json::Value::Null,
        );
        // Everything queued reaches the sinks' files and spools; network sinks get a moment to
        // deliver what they hold, and keep the rest in their spool for the next start.
        self.persist(true);
        // A clean stop: the next start continues right after the last event.
        if let Err(e) = self.store.reserve_events(self.events_persisted) {
            tracing::warn!(error = %e, "writing the event sequence number");
        }
        for s in self.sinks.values() {
            s.shutdown(SINK_DRAIN).await;
        }
    }

    fn cgroup_version(&self) -> &'static str {
        match self.cgroups.version() {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Create {
                spec,
                wait,
                request_id,
                reply,
            } => {
                let Some(rid) = request_id else {
                    return self.dispatch_create(*spec, wait, reply);
                };
                match self.known_request(&rid, &spec) {
                    Ok(Some(created)) => {
                        let _ = reply.send(Ok(created));
                    }
                    Ok(None) => {
                        let name = spec.name.clone();
                        let spec_json = serde_json::to_value(&*spec).unwrap_or_default();
                        let before = self.names.get(&name).cloned();
                        self.dispatch_create(*spec, wait, reply);
                        // Recorded only when this create made an object (not when the name
                        // belonged to another one and the create was refused).
                        let made = self
                            .names
                            .get(&name)
                            .filter(|id| before.as_ref() != Some(*id));
                        if let Some(id) = made {
                            self.pending_requests.push((
                                rid,
                                crate::store::RequestRecord {
                                    object_id: id.clone(),
                                    spec: spec_json,
                                },
                            ));
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Cmd::Get { key, reply } => {
                let _ = reply.send(self.lookup(&key).map(|e| e.obj.clone()));
            }
            Cmd::List { reply } => {
                let mut v: Vec<Object> = self.objects.values().map(|e| e.obj.clone()).collect();
                v.sort_by(|a, b| {
                    (a.kind != Kind::Host, a.created_at, &a.id).cmp(&(
                        b.kind != Kind::Host,
                        b.created_at,
                        &b.id,
                    ))
                });
                let _ = reply.send(Ok(v));
            }
            Cmd::Update { key, patch, reply } => {
                if let Some((patch, reply)) = self.hold_container_update(&key, *patch, reply) {
                    let _ = reply.send(self.update(&key, patch));
                }
            }
            Cmd::Delete {
                key,
                wait,
                remove,
                reply,
            } => self.delete(&key, wait, remove, reply),
            Cmd::PushOn {
                key,
                sink,
                interval,
                reply,
            } => {
                let _ = reply.send(self.push_on(&key, &sink, interval));
            }
            Cmd::PushOff { key, sink, reply } => {
                let _ = reply.send(self.push_off(&key, &sink));
            }
            Cmd::PushOnce { key, sink, reply } => {
                let _ = reply.send(self.push_once(&key, &sink));
            }
            Cmd::Host { reply } => {
                let _ = reply.send(self.host_info());
            }
            Cmd::Traced { cmd, span } => span.in_scope(|| self.handle(*cmd)),
        }
    }

    fn dispatch_create(&mut self, spec: ObjectSpec, wait: bool, reply: Reply<Created>) {
        if spec.kind == Kind::Container {
            self.create_container(spec, wait, reply);
        } else {
            let _ = reply.send(self.create(spec, wait));
        }
    }

    /// The object an earlier create with `request_id` made, if it still exists; a conflict if
    /// that create carried another spec.
    fn known_request(
        &self,
        request_id: &str,
        spec: &ObjectSpec,
    ) -> Result<Option<Created>, ApiError> {
        let rec = self
            .store
            .request(request_id)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let Some(rec) = rec else { return Ok(None) };
        let Some(e) = self.objects.get(&rec.object_id) else {
            // The object it made is gone (deleted, or its create failed): a new create.
            return Ok(None);
        };
        if serde_json::to_value(spec).unwrap_or_default() != rec.spec {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "request_id {request_id:?} was used for another spec (object {})",
                    e.obj.name
                ),
            )
            .with_field("request_id"));
        }
        Ok(Some(Created {
            id: e.obj.id.clone(),
            event_id: 0,
            object: e.obj.clone(),
        }))
    }

    fn id_of(&self, key: &str) -> Result<String, ApiError> {
        if self.objects.contains_key(key) {
            return Ok(key.to_string());
        }
        self.names
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(key))
    }

    fn lookup(&self, key: &str) -> Result<&Entry, ApiError> {
        let id = self.id_of(key)?;
        self.objects
            .get(&id)
            .ok_or_else(|| ApiError::not_found(key))
    }

    fn emit(
        &self,
        kind: EventKind,
        obj: &Object,
        message: impl Into<String>,
        data: serde_json::Value,
    ) -> u64 {
        self.shared
            .events
            .emit(kind, Some((&obj.id, &obj.name)), message, data)
    }

    #[tracing::instrument(name = "core.create", skip_all)]
    fn create(&mut self, spec: ObjectSpec, _wait: bool) -> Result<Created, ApiError> {
        if spec.name == HOST_ID || self.names.contains_key(&spec.name) {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("name {:?} is already taken on this node", spec.name),
            )
            .with_field("name"));
        }
        self.check_cpuset(&spec.resources)?;
        let id = new_object_id();
        let mut obj = Object::new(id.clone(), spec, Status::Pending);
        let (cg, work, net_pid) = match obj.kind {
            Kind::Process => {
                let (cg, sp) = self.processes.create(&id, &obj.spec)?;
                obj.pid = Some(sp.pid);
                obj.stdout_path = Some(sp.stdout_path.display().to_string());
                obj.stderr_path = Some(sp.stderr_path.display().to_string());
                (
                    cg,
                    Work::Process {
                        pid: Some(sp.pid),
                        started: Instant::now(),
                        failures: 0,
                    },
                    None,
                )
            }
            Kind::Cgroup => {
                let a = self.adopter.adopt(&id, &obj.spec)?;
                let first = a.origins.first().map(|o| o.0);
                let net_pid = first.filter(|p| self.own_netns(*p));
                (a.cg.clone(), Work::Adopted(a), net_pid)
            }
            Kind::Container => {
                return Err(ApiError::internal(
                    "container creates go through create_container",
                ))
            }
            Kind::Host => {
                return Err(ApiError::invalid("kind", "the host cannot be created"));
            }
        };
        obj.cgroup = Some(self.cgroups.path(&cg));
        let reader = match self.cgroups.stat_reader(&cg) {
            Ok(r) => r,
            Err(e) => {
                self.undo_create(&obj, &cg, &work);
                return Err(ApiError::internal(format!(
                    "cannot sample the new cgroup: {e}"
                )));
            }
        };
        obj.status = Status::Running;
        let series = self.shared.series.insert(Series::new(
            id.clone(),
            obj.name.clone(),
            obj.kind,
            self.cfg.ring_size,
        ));
        self.collector.send(Command::Add {
            series,
            target: Target::Cgroup { reader, net_pid },
            interval: obj.spec.collect.interval.as_std(),
        });
        let event_id = self.emit(
            EventKind::Created,
            &obj,
            format!("created {} {}", obj.kind, obj.name),
            json!({"pid": obj.pid}),
        );
        self.emit(EventKind::Started, &obj, "running", json!({"pid": obj.pid}));
        self.names.insert(obj.name.clone(), id.clone());
        self.objects.insert(
            id.clone(),
            Entry {
                obj: obj.clone(),
                cg: Some(cg),
                work,
                deleting: None,
            },
        );
        Ok(Created {
            id,
            event_id,
            object: obj,
        })
    }

    fn undo_create(&self, obj: &Object, cg: &CgroupRef, work: &Work) {
        match work {
            Work::Process { pid, .. } => {
                self.processes.signal_all(cg, *pid, libc::SIGKILL);
                if let Some(p) = pid {
                    // Give the kernel a moment to take it out of the cgroup, then reap.
                    for _ in 0..50 {
                        if proc_driver::reap(*p).is_some() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
                let _ = self.processes.remove(cg);
            }
            Work::Adopted(a) => self.adopter.release(a),
            Work::Host | Work::Container(_) => {}
        }
        tracing::warn!(id = %obj.id, "create rolled back");
    }

    /// Whether `pid` has a network namespace of its own (not the agent's).
    fn own_netns(&self, pid: u32) -> bool {
        match (
            self.procfs.net_ns(pid),
            self.procfs.net_ns(std::process::id()),
        ) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        }
    }

    /// The kernel would take a cpuset naming absent CPUs only to fail later; refuse it here.
    fn check_cpuset(&self, r: &Resources) -> Result<(), ApiError> {
        if let Some(cs) = &r.cpuset {
            if let Some(bad) = cs.cpus().into_iter().find(|c| *c >= self.facts.cpus) {
                return Err(ApiError::invalid(
                    "resources.cpuset",
                    format!(
                        "CPU {bad} does not exist; this node has CPUs 0-{}",
                        self.facts.cpus.saturating_sub(1)
                    ),
                ));
            }
        }
        Ok(())
    }

    #[tracing::instrument(name = "core.update", skip_all)]
    fn update(&mut self, key: &str, patch: ObjectPatch) -> Result<Object, ApiError> {
        let id = self.id_of(key)?;
        if let Some(r) = &patch.resources {
            self.check_cpuset(r)?;
        }
        let cgroups = self.cgroups.clone();
        let e = self
            .objects
            .get_mut(&id)
            .ok_or_else(|| ApiError::not_found(key))?;
        if e.obj.kind == Kind::Host {
            return Err(ApiError::precondition("the host object is read-only"));
        }
        if e.deleting.is_some() || e.obj.status == Status::Deleted {
            return Err(ApiError::precondition(format!(
                "object {} is being deleted",
                e.obj.name
            )));
        }
        if Self::is_container(e) {
            return self.update_container(&id, patch);
        }
        let Some(cg) = e.cg.clone() else {
            return Err(ApiError::precondition("object has no cgroup to update"));
        };
        let mut changed = Vec::new();
        if let Some(r) = &patch.resources {
            // The fast path: straight to cgroupfs. The spec records only what was applied.
            cgroups
                .apply(&cg, r)
                .map_err(nodeagent_engine::managers::cgroup_error)?;
            e.obj.spec.resources.merge(r);
            changed.push(serde_json::to_value(r).unwrap_or_default());
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
                cgroups
                    .freeze(&cg, p)
                    .map_err(nodeagent_engine::managers::cgroup_error)
                    .map_err(|er| er.with_field("paused"))?;
                e.obj.paused = p;
                e.obj.status = if p { Status::Paused } else { Status::Running };
                pause_event = Some(if p {
                    EventKind::Paused
                } else {
                    EventKind::Resumed
                });
            }
        }
        e.obj.updated_at = Timestamp::now();
        let obj = e.obj.clone();
        if !changed.is_empty() {
            self.emit(
                EventKind::Updated,
                &obj,
                "resources updated in place",
                json!({"resources": changed[0]}),
            );
        }
        if let Some(k) = pause_event {
            self.emit(k, &obj, k.as_str(), serde_json::Value::Null);
        }
        Ok(obj)
    }

    #[tracing::instrument(name = "core.delete", skip_all)]
    fn delete(&mut self, key: &str, wait: bool, remove: bool, reply: Reply<Object>) {
        let id = match self.id_of(key) {
            Ok(id) => id,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let grace = self.cfg.stop_grace;
        let Some(e) = self.objects.get_mut(&id) else {
            let _ = reply.send(Err(ApiError::not_found(key)));
            return;
        };
        if e.obj.kind == Kind::Host {
            let _ = reply.send(Err(ApiError::precondition(
                "the host object cannot be deleted",
            )));
            return;
        }
        if remove && !Self::is_container(e) {
            let _ = reply.send(Err(ApiError::invalid(
                "remove",
                format!(
                    "`remove` applies to adopted containers only; {} is a {}",
                    e.obj.name, e.obj.kind
                ),
            )));
            return;
        }
        if let Some(d) = &mut e.deleting {
            if wait {
                d.waiters.push(reply);
            } else {
                let _ = reply.send(Ok(e.obj.clone()));
            }
            return;
        }
        e.obj.message = Some("deleting".into());
        let mut d = Deleting {
            waiters: Vec::new(),
            deadline: Instant::now() + grace,
            killed: false,
        };
        let snapshot = e.obj.clone();
        if wait {
            d.waiters.push(reply);
        } else {
            let _ = reply.send(Ok(snapshot));
        }
        if let (Work::Process { pid, .. }, Some(cg)) = (&e.work, &e.cg) {
            // Thaw first: a frozen process cannot act on SIGTERM.
            if e.obj.paused {
                let _ = self.cgroups.freeze(cg, false);
            }
            self.processes.signal_all(cg, *pid, libc::SIGTERM);
        }
        let container = Self::is_container(e);
        e.deleting = Some(d);
        self.collector.send(Command::Remove { id: id.clone() });
        if container {
            self.delete_container(&id, remove);
            return;
        }
        self.progress_deletes();
    }

    /// Finishes deletions whose workload is gone, and escalates to SIGKILL past the grace.
    fn progress_deletes(&mut self) {
        let now = Instant::now();
        let mut done = Vec::new();
        for (id, e) in self.objects.iter_mut_unmarked() {
            let Some(d) = &mut e.deleting else { continue };
            let finished = match (&mut e.work, &e.cg) {
                (Work::Process { pid, .. }, Some(cg)) => {
                    let empty = self.processes.is_empty(cg);
                    // Reap here: the entry goes away with the delete, and an unreaped child
                    // would stay a zombie. A pid that is not our child and no longer in /proc
                    // is gone too.
                    if let Some(p) = *pid {
                        if proc_driver::reap(p).is_some()
                            || !self.procfs.root().join(p.to_string()).exists()
                        {
                            *pid = None;
                        }
                    }
                    let reaped = pid.is_none();
                    if !(empty && reaped) && now >= d.deadline && !d.killed {
                        self.processes.signal_all(cg, *pid, libc::SIGKILL);
                        d.killed = true;
                    }
                    empty && reaped
                }
                // Finished when its Docker operation answers (container::on_deleted).
                (Work::Container(_), _) => false,
                _ => true,
            };
            if finished {
                done.push(id.clone());
            }
        }
        for id in done {
            self.finish_delete(&id);
        }
    }

    /// Hands freed heap back to the kernel after deletes. glibc keeps freed memory for reuse,
    /// so an agent that went from thousands of objects to few kept the RSS of the peak
    /// (measured: 1,000 objects deleted and 1,000 created again left ~9 MiB more than 1,000
    /// created once). Once a second at most, and only after deletes; the call costs well under
    /// a millisecond for a heap of tens of MiB.
    fn trim_heap(&mut self) {
        if !std::mem::take(&mut self.deleted_since_trim) {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim has no preconditions; it only returns free pages.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Removes a deleted object from the registry, releases what it held, and answers the
    /// deletes waiting for it.
    fn finish_delete(&mut self, id: &str) {
        self.deleted_since_trim = true;
        {
            let Some(mut e) = self.objects.remove(id) else {
                return;
            };
            match (&e.work, &e.cg) {
                (Work::Adopted(a), _) => self.adopter.release(a),
                (Work::Process { .. }, Some(cg)) => {
                    if let Err(er) = self.processes.remove(cg) {
                        tracing::warn!(id = %id, error = %er, "remove cgroup");
                    }
                }
                (Work::Container(_), _) => {
                    if let Some(c) = &e.obj.container {
                        self.by_docker.remove(&c.id);
                    }
                }
                _ => {}
            }
            self.names.remove(&e.obj.name);
            self.shared.series.remove(id);
            e.obj.status = Status::Deleted;
            e.obj.message = None;
            e.obj.updated_at = Timestamp::now();
            self.emit(
                EventKind::Deleted,
                &e.obj,
                format!("deleted {}", e.obj.name),
                serde_json::Value::Null,
            );
            if let Some(d) = e.deleting.take() {
                for w in d.waiters {
                    let _ = w.send(Ok(e.obj.clone()));
                }
            }
        }
    }

    /// Reaps exited processes and applies their restart policy.
    fn reap(&mut self) {
        let mut exits = Vec::new();
        for (id, e) in self.objects.iter() {
            if let Work::Process { pid: Some(pid), .. } = e.work {
                if let Some(st) = proc_driver::reap(pid) {
                    exits.push((id.clone(), st));
                }
            }
        }
        for (id, st) in exits {
            self.on_exit(&id, Some(st));
        }
    }

    fn on_exit(&mut self, id: &str, st: Option<ExitStatus>) {
        self.foreign.remove(id);
        let tx = self.internal_tx.clone();
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let Work::Process {
            pid,
            started,
            failures,
        } = &mut e.work
        else {
            return;
        };
        *pid = None;
        let (code, signal) = match st {
            Some(ExitStatus::Code(c)) => (Some(c), None),
            Some(ExitStatus::Signal(s)) => (None, Some(s)),
            None => (None, None),
        };
        e.obj.exit_code = code;
        e.obj.exit_signal = signal;
        e.obj.updated_at = Timestamp::now();
        if e.deleting.is_some() {
            return;
        }
        let failed = code != Some(0);
        let policy = e
            .obj
            .spec
            .section::<nodeagent_types::ProcessSpec>()
            .map_or(RestartPolicy::Never, |p| p.restart);
        let restart = match policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Always => true,
        };
        let msg = match (code, signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (_, Some(s)) => format!("killed by signal {s}"),
            // A process re-adopted after a restart is not the agent's child: its exit code
            // cannot be learnt.
            _ => "exited while not a child of the agent (exit code unknown)".to_string(),
        };
        e.obj.paused = false;
        if restart {
            // A run of 10 s or more counts as healthy and resets the backoff.
            if started.elapsed() >= std::time::Duration::from_secs(10) {
                *failures = 0;
            }
            let delay = std::time::Duration::from_millis(100)
                .saturating_mul(1u32 << (*failures).min(9))
                .min(std::time::Duration::from_secs(30));
            *failures += 1;
            e.obj.status = Status::Pending;
            e.obj.message = Some(format!("{msg}; restarting in {}", Duration(delay)));
            let id2 = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(Internal::Restart(id2));
            });
        } else {
            e.obj.status = Status::Exited;
            e.obj.message = Some(msg.clone());
            self.collector.send(Command::Remove { id: id.to_string() });
        }
        let obj = e.obj.clone();
        self.emit(
            EventKind::Exited,
            &obj,
            msg,
            json!({"exit_code": code, "signal": signal}),
        );
    }

    fn internal(&mut self, i: Internal) {
        match i {
            Internal::Container(d) => self.container_done(*d),
            Internal::Restart(id) => {
                let Some(e) = self.objects.get_mut(&id) else {
                    return;
                };
                if e.deleting.is_some() || e.obj.status != Status::Pending {
                    return;
                }
                let Some(cg) = e.cg.clone() else { return };
                match self.processes.spawn(&id, &cg, &e.obj.spec) {
                    Ok(sp) => {
                        if let Work::Process { pid, started, .. } = &mut e.work {
                            *pid = Some(sp.pid);
                            *started = Instant::now();
                        }
                        e.obj.pid = Some(sp.pid);
                        e.obj.status = Status::Running;
                        e.obj.restarts += 1;
                        e.obj.exit_code = None;
                        e.obj.exit_signal = None;
                        e.obj.message = None;
                        e.obj.updated_at = Timestamp::now();
                        let obj = e.obj.clone();
                        self.emit(
                            EventKind::Restarted,
                            &obj,
                            format!("restart #{}", obj.restarts),
                            json!({"pid": sp.pid}),
                        );
                    }
                    Err(er) => {
                        e.obj.status = Status::Failed;
                        e.obj.message = Some(format!("restart failed: {}", er.message));
                        let obj = e.obj.clone();
                        self.collector.send(Command::Remove { id: id.clone() });
                        self.emit(
                            EventKind::Failed,
                            &obj,
                            format!("restart failed: {}", er.message),
                            serde_json::Value::Null,
                        );
                    }
                }
            }
        }
    }

    /// Adopted pids that have all exited, or an adopted path that vanished. This runs every
    /// second for every adopted object, so it reads the collector's latest sample (no I/O) and
    /// touches cgroupfs only when the sample cannot tell: no pids counter, or samples that stopped.
    fn check_adopted(&mut self) {
        let mut changed = Vec::new();
        let now = Timestamp::now().as_nanos();
        for (id, e) in self.objects.iter_mut_unmarked() {
            if e.deleting.is_some() || !e.obj.status.is_live() {
                continue;
            }
            let Work::Adopted(a) = &e.work else { continue };
            let latest = self
                .shared
                .series
                .get(id)
                .and_then(|s| nodeagent_engine::series::lock(&s).latest_pids());
            let stale_after = 2 * e
                .obj
                .spec
                .collect
                .interval
                .as_std()
                .max(std::time::Duration::from_secs(1));
            let stale = latest.is_none_or(|(_, ts)| {
                now.saturating_sub(ts.as_nanos()) > stale_after.as_nanos() as u64
            });
            let gone = match (&a.cg, latest) {
                (CgroupRef::External(_), _) => stale && !self.cgroups.exists(&a.cg),
                (CgroupRef::Owned(_), Some((Some(pids), _))) if !stale => pids == 0,
                (CgroupRef::Owned(_), _) => self.adopter.procs(&a.cg).is_empty(),
            };
            if !gone {
                continue;
            }
            let (status, msg) = match &a.cg {
                CgroupRef::External(p) => (Status::Lost, format!("cgroup {p} no longer exists")),
                CgroupRef::Owned(_) => (
                    Status::Exited,
                    "every adopted process has exited".to_string(),
                ),
            };
            e.obj.status = status;
            e.obj.message = Some(msg.clone());
            e.obj.updated_at = Timestamp::now();
            changed.push((id.clone(), e.obj.clone(), status, msg));
        }
        for (id, obj, status, msg) in changed {
            self.objects.mark(&id);
            self.collector.send(Command::Remove { id });
            let k = if status == Status::Lost {
                EventKind::Lost
            } else {
                EventKind::Exited
            };
            self.emit(k, &obj, msg, serde_json::Value::Null);
        }
    }

    fn sink(&self, name: &str) -> Result<Arc<SinkHandle>, ApiError> {
        self.sinks.get(name).cloned().ok_or_else(|| {
            ApiError::invalid(
                "sink",
                format!(
                    "unknown sink {name:?}; known sinks: {}",
                    self.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    fn collecting(&self, key: &str) -> Result<(String, Object), ApiError> {
        let e = self.lookup(key)?;
        if e.deleting.is_some() || !e.obj.status.is_live() {
            return Err(ApiError::precondition(format!(
                "object {} is {}; reports need a live object",
                e.obj.name,
                if e.deleting.is_some() {
                    "being deleted".to_string()
                } else {
                    e.obj.status.to_string()
                }
            )));
        }
        if let Work::Container(c) = &e.work {
            if !c.is_collected() {
                return Err(ApiError::precondition(format!(
                    "container {} is not running yet; reports start once it runs",
                    e.obj.name
                )));
            }
        }
        Ok((e.obj.id.clone(), e.obj.clone()))
    }

    fn push_on(
        &mut self,
        key: &str,
        sink: &str,
        interval: Option<Duration>,
    ) -> Result<PushAck, ApiError> {
        let (id, _) = self.collecting(key)?;
        let h = self.sink(sink)?;
        let interval = interval.unwrap_or(Duration(std::time::Duration::from_secs(1)));
        if interval.0 < MIN_INTERVAL || interval.0 > MAX_INTERVAL {
            return Err(ApiError::invalid(
                "interval",
                format!("interval {interval} is out of range: give 10ms to 1h"),
            ));
        }
        self.collector.send(Command::PushOn {
            id: id.clone(),
            sink: h,
            interval: interval.0,
        });
        let Some(e) = self.objects.get_mut(&id) else {
            return Err(ApiError::not_found(key));
        };
        e.obj.push.insert(sink.to_string(), interval);
        let obj = e.obj.clone();
        self.emit(
            EventKind::PushOn,
            &obj,
            format!("reporting to {sink} every {interval}"),
            json!({"sink": sink, "interval": interval}),
        );
        Ok(PushAck {
            id,
            sink: sink.into(),
            interval: Some(interval),
            status: "on".into(),
            sample_seq: None,
        })
    }

    fn push_off(&mut self, key: &str, sink: &str) -> Result<PushAck, ApiError> {
        let id = self.id_of(key)?;
        self.sink(sink)?;
        let Some(e) = self.objects.get_mut(&id) else {
            return Err(ApiError::not_found(key));
        };
        if e.obj.push.remove(sink).is_none() {
            return Err(ApiError::precondition(format!(
                "no report task to {sink} for {}",
                e.obj.name
            ))
            .with_field("sink"));
        }
        let obj = e.obj.clone();
        self.collector.send(Command::PushOff {
            id: id.clone(),
            sink: sink.to_string(),
        });
        self.emit(
            EventKind::PushOff,
            &obj,
            format!("stopped reporting to {sink}"),
            json!({"sink": sink}),
        );
        Ok(PushAck {
            id,
            sink: sink.into(),
            interval: None,
            status: "off".into(),
            sample_seq: None,
        })
    }

    #[tracing::instrument(name = "core.push_once", skip_all)]
    fn push_once(
        &mut self,
        key: &str,
        sink: &str,
    ) -> Result<(String, oneshot::Receiver<Result<u64, String>>), ApiError> {
        let (id, _) = self.collecting(key)?;
        let h = self.sink(sink)?;
        let (tx, rx) = oneshot::channel();
        self.collector.send(Command::PushOnce {
            id: id.clone(),
            sink: h,
            reply: tx,
            span: tracing::Span::current(),
        });
        Ok((id, rx))
    }

    fn host_info(&self) -> Result<HostInfo, ApiError> {
        let e = self.lookup(HOST_ID)?;
        let sample = self
            .shared
            .series
            .get(HOST_ID)
            .and_then(|s| nodeagent_engine::series::lock(&s).latest());
        Ok(HostInfo {
            node: self.node.to_string(),
            hostname: self.facts.hostname.clone(),
            kernel: self.facts.kernel.clone(),
            cpus: self.facts.cpus,
            memory_total_bytes: self.facts.memory_total_bytes,
            cgroup_version: self.cgroup_version().into(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            object: e.obj.clone(),
            sample,
        })
    }
}
