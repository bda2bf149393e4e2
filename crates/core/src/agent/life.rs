//! The generic lifecycle of an object, the same for every kind (issue 11).
//!
//! The loop never waits for a driver. A driver answers [`Step::Now`] (the result is taken in
//! the same turn) or [`Step::Later`] (the operation runs in a task, and its result comes back
//! as [`Internal::Done`]). At most one operation runs per object (`busy`); what arrives
//! meanwhile is recorded and acted on when it ends ([`Agent::next`]):
//!
//! - PATCHes write the cgroup at once (the fast path) and bump `want`; a sync sends the outside
//!   system the whole desired config of generation `want`, so any number of PATCHes during one
//!   sync cost one more sync, with the latest values;
//! - for a kind whose sync writes the cgroup itself (Docker's update does), a PATCH that meets a
//!   sync in flight is held until it returns (see [`Life::held`]);
//! - news from a kind's watch task sets `refresh`, answered by one inspect that tells the
//!   object's true state (ordering between an event and a create's result cannot matter);
//! - a delete waits for the operation in flight, then stops the workload, asking again while
//!   the driver says to requeue.

use super::{Agent, Entry, Internal};
use crate::answer::Created;
use crate::cmd::Reply;
use nodeagent_drivers::cgroup::CgroupManager;
use nodeagent_drivers::process::{self as proc_driver, ExitStatus};
use nodeagent_engine::collector::{Command, Target};
use nodeagent_engine::kinds::{
    cgroup_error, Caps, Latest, Main, Observed, Prepared, Progress, Running, Step, StopCtx,
    StopMode, Stopped,
};
use nodeagent_engine::Series;
use nodeagent_types::{
    new_object_id, ApiError, ErrorCode, EventKind, Kind, Object, ObjectPatch, ObjectSpec,
    RestartPolicy, Status, SyncState, Timestamp, HOST_ID,
};
use serde_json::json;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A sync waits until PATCHes have paused for this long, so a burst costs the outside system one
/// update (a `docker update` forks runc and takes 10-30 ms of engine CPU) instead of one per
/// PATCH...
const SYNC_SETTLE: Duration = Duration::from_millis(5);
/// ...but never longer than this after the first PATCH it carries, so that the outside system
/// follows a steady stream of PATCHes too (`docker inspect` agrees within a second). A PATCH
/// that arrives while a sync that writes the cgroup is in flight waits for it (see
/// [`Life::held`]), so the longer this is, the fewer PATCHes of a steady stream wait: at 500 ms,
/// about one in 700 of a stream of PATCHes sent back to back.
const SYNC_MAX_DELAY: Duration = Duration::from_millis(500);
/// A run of this long counts as healthy and resets the restart backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// What the loop keeps per object, whatever its kind.
pub(super) struct Life {
    /// The main process the core supervises, where there is one.
    pub main: Option<Main>,
    /// Whether the collector has an entry for the object (report tasks need one).
    pub collecting: bool,
    /// Whether the workload has ever run under the agent (a later start is a restart).
    pub started_once: bool,
    /// A driver operation is in flight.
    pub busy: bool,
    /// The operation in flight is a sync.
    pub syncing: bool,
    /// PATCHes that arrived while a sync that writes the cgroup itself was in flight, applied
    /// when it returns: a PATCH written meanwhile could be overwritten by the sync's older
    /// value after its answer said the new one was in place. Holding it keeps "the value is in
    /// the cgroup when the call returns" true, at the cost of a wait of at most one sync for
    /// the few PATCHes that meet one.
    pub held: Vec<(ObjectPatch, Reply<Object>)>,
    /// Generation of the desired config (bumped by every PATCH) and the last one synced.
    pub want: u64,
    pub synced: u64,
    /// Why the last sync failed, where it did (a reconnect of the outside system retries it).
    pub sync_error: Option<String>,
    /// The last PATCH, and the first one not synced yet (see [`SYNC_SETTLE`]).
    pub last_patch: Option<Instant>,
    pub pending_since: Option<Instant>,
    /// A settle wake-up is set.
    pub timer: bool,
    /// The watch task asked for a fresh inspect.
    pub refresh: bool,
    /// The `created` event, for the answer to the create.
    pub event_id: u64,
    /// The caller of a create that phase one has not answered yet, and whether it waits.
    pub create_reply: Option<(Reply<Created>, bool)>,
    /// Creates waiting for the workload to run (`?wait=true`).
    pub waiters: Vec<Reply<Created>>,
    pub deleting: Option<Deleting>,
    /// When the workload last (re)started, and the quick failures since, for the backoff.
    pub ran_since: Instant,
    pub failures: u32,
    /// The cgroup's OOM kill count already reported (so an exit reports only new kills).
    pub oom_seen: Option<u64>,
    /// Failed recovers or inspects in a row, for the backoff of their retry.
    pub recheck_failures: u32,
}

pub(super) struct Deleting {
    pub waiters: Vec<Reply<Object>>,
    pub deadline: Instant,
    pub mode: StopMode,
    /// The stop has not been asked yet.
    pub first: bool,
}

impl Life {
    pub fn new() -> Life {
        Life {
            main: None,
            collecting: false,
            started_once: false,
            busy: false,
            syncing: false,
            held: Vec::new(),
            want: 0,
            synced: 0,
            sync_error: None,
            last_patch: None,
            pending_since: None,
            timer: false,
            refresh: false,
            event_id: 0,
            create_reply: None,
            waiters: Vec::new(),
            deleting: None,
            ran_since: Instant::now(),
            failures: 0,
            oom_seen: None,
            recheck_failures: 0,
        }
    }

    /// The host's: always collected, never driven.
    pub fn host() -> Life {
        Life {
            collecting: true,
            started_once: true,
            ..Life::new()
        }
    }
}

/// Results of driver operations that ran off the loop.
pub(super) enum Done {
    Prepared(Result<Prepared, ApiError>),
    Started(Result<Observed, ApiError>),
    Restarted(Result<Observed, ApiError>),
    Inspected(Result<Observed, ApiError>),
    Recovered(Result<Observed, ApiError>),
    Synced {
        gen: u64,
        result: Result<(), ApiError>,
    },
    Stopped(Result<Progress, ApiError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Wake {
    /// The settle delay of a sync is over.
    Settle,
    /// A stop in progress asked to be called again.
    Requeue,
    /// The restart backoff is over.
    Restart,
    /// Ask the kind again what runs, after its `recover` failed (the outside system was slow
    /// or away): an object is never left with a status nobody checked.
    Recover,
    /// Inspect again, after an inspect failed: the event that asked for it is not repeated.
    Refresh,
}

/// Wake-ups the loop set for itself: one heap for every object, not a task per timer.
#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, String, Wake)>>,
    seq: u64,
}

impl Timers {
    pub fn push(&mut self, at: Instant, id: &str, w: Wake) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, id.to_string(), w)));
    }

    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, ..))| *t)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(String, Wake)> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, _, id, w))| (id, w))
    }
}

/// What an exit says, from its code or signal.
fn exit_message(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        // A process re-adopted after a restart is not the agent's child: its exit code
        // cannot be learnt.
        _ => "exited while not a child of the agent (exit code unknown)".to_string(),
    }
}

fn merge(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

impl Agent {
    fn caps(&self, k: Kind) -> Caps {
        self.kinds.get(k).map(|d| d.caps()).unwrap_or_default()
    }

    /// Runs a driver's answer: at once, or off the loop with its result as a message.
    pub(super) fn step<T: Send + 'static>(
        &mut self,
        id: &str,
        step: Step<T>,
        wrap: impl FnOnce(T) -> Done + Send + 'static,
    ) {
        match step {
            Step::Now(t) => self.done(id, wrap(t)),
            Step::Later(fut) => {
                if let Some(e) = self.objects.get_mut(id) {
                    e.life.busy = true;
                }
                let tx = self.internal_tx.clone();
                let id = id.to_string();
                // In the span of the command that started it (the request's trace, when
                // tracing is on).
                let span = tracing::Span::current();
                tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        let done = wrap(fut.await);
                        // The loop has stopped only at shutdown; the result no longer matters.
                        let _ = tx.send(Internal::Done { id, done });
                    },
                    span,
                ));
            }
        }
    }

    pub(super) fn internal(&mut self, i: Internal) {
        match i {
            Internal::Done { id, done } => {
                if let Some(e) = self.objects.get_mut(&id) {
                    e.life.busy = false;
                }
                self.done(&id, done);
            }
            Internal::Watch { kind, msg } => self.on_watch(kind, msg),
        }
    }

    fn done(&mut self, id: &str, d: Done) {
        match d {
            Done::Prepared(r) => self.on_prepared(id, r),
            Done::Started(r) => self.on_started(id, r, None),
            Done::Restarted(r) => self.on_restarted(id, r),
            Done::Inspected(r) => {
                match r {
                    Ok(obs) => {
                        self.recheck_ok(id);
                        self.observe(id, obs, false)
                    }
                    Err(e) => {
                        tracing::debug!(id, error = %e.message, "inspect; retrying");
                        self.recheck_later(id, Wake::Refresh);
                    }
                }
                self.next(id);
            }
            Done::Recovered(r) => {
                match r {
                    Ok(obs) => {
                        self.recheck_ok(id);
                        self.observe(id, obs, true)
                    }
                    Err(e) => {
                        tracing::warn!(id, error = %e.message, "recovering after the restart; retrying");
                        self.recheck_later(id, Wake::Recover);
                    }
                }
                self.next(id);
            }
            Done::Synced { gen, result } => self.on_synced(id, gen, result),
            Done::Stopped(r) => self.on_stopped(id, r),
        }
    }

    /// `POST /v1/objects`. The name is reserved at once (the object is `pending`); phase one
    /// answers the caller unless it waits, phase two makes the workload. A kind whose steps are
    /// all immediate is answered with the running object (or the error) in the same turn.
    #[tracing::instrument(name = "core.create", skip_all)]
    pub(super) fn create(&mut self, spec: ObjectSpec, wait: bool, reply: Reply<Created>) {
        let Some(driver) = self.kinds.get(spec.kind) else {
            let msg = if spec.kind == Kind::Host {
                "the host cannot be created".to_string()
            } else {
                format!(
                    "kind {} is not available on this node (it runs: {})",
                    spec.kind,
                    self.kinds.names().join(", ")
                )
            };
            let _ = reply.send(Err(ApiError::invalid("kind", msg)));
            return;
        };
        // Before anything else, so a refused request has no side effect and never depends on
        // whether an outside system is available.
        if let Err(e) = driver.admit(&spec, &self.shared.policy) {
            let _ = reply.send(Err(e));
            return;
        }
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
        let obj = Object::new(id.clone(), spec, Status::Pending);
        let mut life = Life::new();
        life.create_reply = Some((reply, wait));
        self.names.insert(obj.name.clone(), id.clone());
        let kind = obj.kind;
        self.objects.insert(
            id.clone(),
            Entry {
                obj,
                cg: None,
                life,
            },
        );
        let Some(e) = self.objects.get(&id) else {
            return;
        };
        let spec = e.obj.spec.clone();
        let Some(driver) = self.kinds.get_mut(kind) else {
            return;
        };
        let step = driver.prepare(&id, &spec);
        self.step(&id, step, Done::Prepared);
    }

    fn on_prepared(&mut self, id: &str, result: Result<Prepared, ApiError>) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let reply = e.life.create_reply.take();
        let prepared = match result {
            Ok(p) => p,
            Err(err) => {
                // Nothing exists yet: the caller gets the error and the name is free.
                if let Some((r, _)) = reply {
                    let _ = r.send(Err(err));
                }
                self.drop_failed(id);
                return;
            }
        };
        if e.life.deleting.is_some() {
            if let Some((r, _)) = reply {
                let _ = r.send(Err(ApiError::precondition(
                    "the object was deleted before its workload was created",
                )));
            }
            self.finish_delete(id);
            return;
        }
        // Phase two makes the workload with the spec as it is now, PATCHes during phase one
        // included: nothing is left to sync.
        e.life.synced = e.life.want;
        e.life.pending_since = None;
        let (kind, spec) = (e.obj.kind, e.obj.spec.clone());
        let Some(driver) = self.kinds.get_mut(kind) else {
            return;
        };
        match driver.start(id, &spec, prepared) {
            Step::Now(r) => self.on_started(id, r, reply),
            step @ Step::Later(_) => {
                let Some(event_id) = self.emit_created(id) else {
                    return;
                };
                if let Some(e) = self.objects.get_mut(id) {
                    let obj = e.obj.clone();
                    match reply {
                        Some((r, true)) => e.life.waiters.push(r),
                        Some((r, false)) => {
                            let _ = r.send(Ok(Created {
                                id: id.to_string(),
                                event_id,
                                object: obj,
                            }));
                        }
                        None => {}
                    }
                }
                self.step(id, step, Done::Started);
            }
        }
    }

    /// Emits the object's `created` event, as its kind words it, and remembers its number for
    /// the answer to the create.
    fn emit_created(&mut self, id: &str) -> Option<u64> {
        let obj = self.objects.get(id)?.obj.clone();
        let (msg, data) = self
            .kinds
            .get(obj.kind)
            .map(|d| d.created_event(&obj))
            .unwrap_or_default();
        let event_id = self.emit(EventKind::Created, &obj, msg, data);
        if let Some(e) = self.objects.get_mut(id) {
            e.life.event_id = event_id;
        }
        Some(event_id)
    }

    /// Hands a note to the driver, and gives back the observation it came with.
    fn take_note(&mut self, id: &str, kind: Kind, obs: Observed) -> Observed {
        match obs {
            Observed::Noted(inner, note) => {
                if let Some(d) = self.kinds.get_mut(kind) {
                    d.note(id, note);
                }
                self.take_note(id, kind, *inner)
            }
            other => other,
        }
    }

    /// Phase two ended. `reply` is the caller's when it came in the same turn as the create.
    fn on_started(
        &mut self,
        id: &str,
        result: Result<Observed, ApiError>,
        reply: Option<(Reply<Created>, bool)>,
    ) {
        let Some(kind) = self.objects.get(id).map(|e| e.obj.kind) else {
            return;
        };
        let caps = self.caps(kind);
        match result {
            Ok(obs) => {
                let obs = self.take_note(id, kind, obs);
                if reply.is_some() {
                    // The `created` event comes first, with what phase two found (the pid).
                    let Some(e) = self.objects.get_mut(id) else {
                        return;
                    };
                    if let Observed::Running(r) = &obs {
                        e.obj.pid = r.pid;
                    }
                    self.emit_created(id);
                }
                let adopted = self.objects.get(id).is_some_and(|e| {
                    self.kinds.get(kind).is_some_and(|d| d.is_adopted(&e.obj))
                        && !e.obj.spec.resources.is_empty()
                });
                if let Some(e) = self.objects.get_mut(id) {
                    // Limits given with an adoption are applied like a PATCH: to the cgroup at
                    // once (when it attaches), to the outside system by a sync.
                    if adopted && caps.sync {
                        e.life.want += 1;
                    }
                }
                self.observe(id, obs, false);
                if caps.sync {
                    self.describe_sync(id);
                }
                let Some(e) = self.objects.get_mut(id) else {
                    return;
                };
                if let Some(d) = self.kinds.get(kind) {
                    d.describe(&mut e.obj);
                }
                let created = Created {
                    id: id.to_string(),
                    event_id: e.life.event_id,
                    object: e.obj.clone(),
                };
                if let Some((r, _)) = reply {
                    let _ = r.send(Ok(created.clone()));
                }
                for w in e.life.waiters.drain(..) {
                    let _ = w.send(Ok(created.clone()));
                }
                self.next(id);
            }
            Err(err) => {
                let Some(e) = self.objects.get_mut(id) else {
                    return;
                };
                if let Some((r, _)) = reply {
                    let _ = r.send(Err(err));
                    self.drop_failed(id);
                    return;
                }
                if !e.life.waiters.is_empty() {
                    // The caller waits for the outcome: it gets the error and nothing is left
                    // behind.
                    for w in e.life.waiters.drain(..) {
                        let _ = w.send(Err(err.clone()));
                    }
                    self.drop_failed(id);
                    return;
                }
                e.obj.status = Status::Failed;
                e.obj.message = Some(err.message.clone());
                e.obj.updated_at = Timestamp::now();
                let snapshot = e.obj.clone();
                self.emit(
                    EventKind::Failed,
                    &snapshot,
                    format!("{} failed to start: {}", kind, err.message),
                    json!({"field": err.field}),
                );
                self.next(id);
            }
        }
    }

    /// Tells the driver what the object's sync state is (its status section shows it).
    fn describe_sync(&mut self, id: &str) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let (state, msg) = match &e.life.sync_error {
            Some(m) => (SyncState::Failed, Some(m.clone())),
            None if e.life.want > e.life.synced => (SyncState::Pending, None),
            None => (SyncState::InSync, None),
        };
        if let Some(d) = self.kinds.get(e.obj.kind) {
            d.sync_state(&mut e.obj, state, msg);
        }
    }

    /// Drops an object whose create failed, freeing its name.
    fn drop_failed(&mut self, id: &str) {
        if self
            .objects
            .get(id)
            .is_some_and(|e| e.life.deleting.is_some())
        {
            self.finish_delete(id);
            return;
        }
        let Some(e) = self.objects.remove(id) else {
            return;
        };
        self.names.remove(&e.obj.name);
        self.shared.series.remove(id);
        if e.life.collecting {
            self.collector.send(Command::Remove { id: id.to_string() });
        }
        if let Some(d) = self.kinds.get_mut(e.obj.kind) {
            d.forget(id, &e.obj, e.cg.as_ref());
        }
        tracing::warn!(id, "create rolled back");
    }

    /// Takes what a driver found into the object: status, pid, cgroup, sampling; and emits an
    /// event for each change. `recovering`: found after the agent's restart.
    pub(super) fn observe(&mut self, id: &str, obs: Observed, recovering: bool) {
        let Some(kind) = self.objects.get(id).map(|e| e.obj.kind) else {
            return;
        };
        let obs = self.take_note(id, kind, obs);
        if self
            .objects
            .get(id)
            .is_some_and(|e| e.life.deleting.is_some())
        {
            return;
        }
        match obs {
            Observed::Unchanged | Observed::Noted(..) => {}
            Observed::Running(r) => self.running(id, r, recovering),
            Observed::Stopped(s) => self.stopped(id, s, recovering),
            Observed::Gone { message, detail } => self.gone(id, message, detail, recovering),
            Observed::Failed { message } => {
                let Some(e) = self.objects.get_mut(id) else {
                    return;
                };
                e.obj.status = Status::Failed;
                e.obj.pid = None;
                e.obj.message = Some(message.clone());
                e.obj.updated_at = Timestamp::now();
                let obj = e.obj.clone();
                self.emit(
                    EventKind::Failed,
                    &obj,
                    message,
                    json!({"while_agent_down": recovering}),
                );
            }
        }
        if self.caps(kind).sync {
            self.describe_sync(id);
        }
        // What the kind adds to the object follows what it observed (a k8s object's
        // resources and their readiness).
        if let (Some(e), Some(d)) = (self.objects.get_mut(id), self.kinds.get(kind)) {
            d.describe(&mut e.obj);
        }
    }

    fn gone(&mut self, id: &str, message: String, detail: serde_json::Value, recovering: bool) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        if matches!(e.obj.status, Status::Lost | Status::Failed) {
            return;
        }
        e.cg = None;
        e.life.main = None;
        let was_collecting = std::mem::take(&mut e.life.collecting);
        e.obj.status = Status::Lost;
        e.obj.pid = None;
        e.obj.paused = false;
        e.obj.message = Some(message.clone());
        e.obj.updated_at = Timestamp::now();
        let snapshot = e.obj.clone();
        if was_collecting {
            self.collector.send(Command::Remove { id: id.to_string() });
        }
        let data = if recovering {
            merge(detail, json!({"while_agent_down": true}))
        } else {
            detail
        };
        self.emit(EventKind::Lost, &snapshot, message, data);
    }

    fn stopped(&mut self, id: &str, s: Stopped, recovering: bool) {
        let Some(kind) = self.objects.get(id).map(|e| e.obj.kind) else {
            return;
        };
        let policy = self
            .objects
            .get(id)
            .and_then(|e| self.kinds.get(kind).map(|d| d.restart_policy(&e.obj.spec)))
            .unwrap_or(RestartPolicy::Never);
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        if s.idle {
            e.cg = None;
        }
        e.life.main = None;
        e.obj.pid = None;
        e.obj.paused = false;
        e.obj.exit_code = s.exit_code;
        e.obj.exit_signal = s.exit_signal;
        let restart = s.restartable
            && match policy {
                RestartPolicy::Never => false,
                RestartPolicy::OnFailure => s.exit_code != Some(0),
                RestartPolicy::Always => true,
            };
        let before = e.obj.status;
        if restart {
            if e.life.ran_since.elapsed() >= HEALTHY_RUN {
                e.life.failures = 0;
            }
            let delay = Duration::from_millis(100)
                .saturating_mul(1u32 << e.life.failures.min(9))
                .min(Duration::from_secs(30));
            e.life.failures += 1;
            e.obj.status = Status::Pending;
            e.obj.message = Some(format!(
                "{}; restarting in {}",
                s.message,
                nodeagent_types::Duration(delay)
            ));
            self.timers.push(Instant::now() + delay, id, Wake::Restart);
        } else {
            e.obj.status = s.status;
            e.obj.message = Some(s.message.clone());
            if e.life.collecting {
                if s.idle {
                    self.collector.send(Command::Retarget {
                        id: id.to_string(),
                        target: Target::Idle,
                    });
                } else {
                    e.life.collecting = false;
                    self.collector.send(Command::Remove { id: id.to_string() });
                }
            }
        }
        e.obj.updated_at = Timestamp::now();
        let snapshot = e.obj.clone();
        let exited = restart || (before != s.status && s.status == Status::Exited);
        if exited && s.exit_event {
            let mut data = merge(
                json!({"exit_code": snapshot.exit_code, "signal": snapshot.exit_signal}),
                s.detail,
            );
            if recovering {
                data = merge(data, json!({"while_agent_down": true}));
            }
            self.emit(EventKind::Exited, &snapshot, s.message, data);
        }
    }

    fn running(&mut self, id: &str, r: Running, recovering: bool) {
        let Some(e) = self.objects.get(id) else {
            return;
        };
        let kind = e.obj.kind;
        let caps = self.caps(kind);
        // The same run as before: same pid and cgroup, already sampled (or, for a kind with
        // no cgroup, already seen running).
        let same = e.obj.pid == r.pid
            && e.cg == r.cgroup
            && match r.cgroup {
                Some(_) => e.life.collecting,
                None => {
                    e.life.started_once && matches!(e.obj.status, Status::Running | Status::Paused)
                }
            };
        if !same {
            if let Err(err) = self.attach(id, &r) {
                tracing::warn!(id, error = %err.message, "attaching to the workload's cgroup");
                if let Some(e) = self.objects.get_mut(id) {
                    e.obj.message = Some(format!("not sampled: {}", err.message));
                }
                return;
            }
        }
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        e.life.main = r.main;
        // The outside system's view of paused wins unless a sync of ours is still to tell it
        // otherwise.
        if let Some(p) = r.paused {
            if !caps.sync || e.life.want == e.life.synced {
                e.obj.paused = p;
            }
        }
        let status = if e.obj.paused {
            Status::Paused
        } else {
            Status::Running
        };
        let before = e.obj.status;
        let restart = !same && e.life.started_once && !recovering;
        e.life.started_once = true;
        e.obj.status = status;
        if before != status || !same {
            e.obj.updated_at = Timestamp::now();
        }
        if !same && !recovering {
            e.obj.exit_code = None;
            e.obj.exit_signal = None;
            e.obj.message = None;
            e.life.ran_since = Instant::now();
            if restart {
                e.obj.restarts += 1;
            }
        }
        let snapshot = e.obj.clone();
        if !same && !recovering {
            if restart {
                self.emit(
                    EventKind::Restarted,
                    &snapshot,
                    format!(
                        "restart #{} (pid {})",
                        snapshot.restarts,
                        r.pid.map_or("-".to_string(), |p| p.to_string())
                    ),
                    r.detail,
                );
            } else {
                self.emit(EventKind::Started, &snapshot, "running", r.detail);
            }
        } else if before != status && same {
            let k = if status == Status::Paused {
                EventKind::Paused
            } else {
                EventKind::Resumed
            };
            self.emit(
                k,
                &snapshot,
                format!("{} outside the agent", k.as_str()),
                json!({}),
            );
        }
    }

    /// Points the collector at the workload's cgroup (first time, or a new one after a
    /// restart), and writes limits the outside system does not have yet.
    fn attach(&mut self, id: &str, r: &Running) -> Result<(), ApiError> {
        let Some(cg) = &r.cgroup else {
            // Nothing on the node to sample or limit.
            if let Some(e) = self.objects.get_mut(id) {
                e.obj.pid = r.pid;
            }
            return Ok(());
        };
        let reader = self.cgroups.stat_reader(cg).map_err(cgroup_error)?;
        let net_pid = r.net_pid.filter(|p| self.own_netns(*p));
        let path = self.cgroups.path(cg);
        let ring = self.cfg.ring_size;
        let cgroups = self.cgroups.clone();
        let Some(e) = self.objects.get_mut(id) else {
            return Ok(());
        };
        if e.life.want > e.life.synced {
            // Restarted by the outside system with the limits it stores; those it has not been
            // told yet are written again.
            if let Some(d) = self.kinds.get(e.obj.kind) {
                d.before_write(cg, &e.obj.spec.resources)?;
            }
            if let Err(er) = cgroups.apply(cg, &e.obj.spec.resources) {
                tracing::warn!(id, error = %er, "re-applying limits to the workload's cgroup");
            }
            if e.obj.paused {
                let _ = cgroups.freeze(cg, true);
            }
        }
        e.cg = Some(cg.clone());
        e.obj.cgroup = Some(path);
        e.obj.pid = r.pid;
        let target = Target::Cgroup { reader, net_pid };
        if e.life.collecting {
            self.collector.send(Command::Retarget {
                id: id.to_string(),
                target,
            });
            return Ok(());
        }
        e.life.collecting = true;
        let interval = e.obj.spec.collect.interval.as_std();
        let series = match self.shared.series.get(id) {
            Some(s) => s,
            None => self.shared.series.insert(Series::new(
                id.to_string(),
                e.obj.name.clone(),
                e.obj.kind,
                ring,
            )),
        };
        self.collector.send(Command::Add {
            series,
            target,
            interval,
        });
        // Report tasks follow the object to its new collector entry (after a restart of the
        // workload or of the agent).
        let obj = e.obj.clone();
        self.resume_push(&obj);
        Ok(())
    }

    pub(super) fn resume_push(&self, obj: &Object) {
        for (sink, interval) in &obj.push {
            match self.sinks.get(sink) {
                Some(h) => self.collector.send(match obj.push_mode.get(sink) {
                    Some(&mode) => Command::PushOnWith {
                        id: obj.id.clone(),
                        sink: h.clone(),
                        interval: interval.0,
                        mode,
                    },
                    None => Command::PushOn {
                        id: obj.id.clone(),
                        sink: h.clone(),
                        interval: interval.0,
                    },
                }),
                None => {
                    tracing::warn!(id = %obj.id, sink, "report task to a sink no longer configured")
                }
            }
        }
    }

    /// `PATCH`: held while a sync that writes the cgroup is in flight, applied otherwise.
    pub(super) fn update(&mut self, key: &str, patch: ObjectPatch, reply: Reply<Object>) {
        if let Ok(id) = self.id_of(key) {
            if let Some(e) = self.objects.get(&id) {
                let caps = self.caps(e.obj.kind);
                if caps.sync_writes_cgroup
                    && e.life.syncing
                    && e.life.deleting.is_none()
                    && (patch.resources.is_some() || patch.paused.is_some())
                {
                    if let Some(e) = self.objects.get_mut(&id) {
                        e.life.held.push((patch, reply));
                    }
                    return;
                }
            }
        }
        let _ = reply.send(self.apply_patch(key, patch));
    }

    /// The fast path: the cgroup first (the value is there when this returns), the outside
    /// system after (off the loop, coalesced). An object without a cgroup right now (a
    /// container that is not running) gets only the outside system's config, applied when it
    /// starts.
    #[tracing::instrument(name = "core.update", skip_all)]
    fn apply_patch(&mut self, key: &str, patch: ObjectPatch) -> Result<Object, ApiError> {
        let id = self.id_of(key)?;
        if let Some(r) = &patch.resources {
            self.check_cpuset(r)?;
        }
        let cgroups = self.cgroups.clone();
        let e = self
            .objects
            .get(&id)
            .ok_or_else(|| ApiError::not_found(key))?;
        if e.obj.kind == Kind::Host {
            return Err(ApiError::precondition("the host object is read-only"));
        }
        let kind = e.obj.kind;
        let caps = self.caps(kind);
        if e.life.deleting.is_some() || e.obj.status == Status::Deleted {
            return Err(ApiError::precondition(format!(
                "object {} is being deleted",
                e.obj.name
            )));
        }
        let nothing = matches!(e.obj.status, Status::Lost | Status::Failed)
            || (e.obj.status == Status::Exited && !caps.sync);
        if nothing {
            return Err(ApiError::precondition(format!(
                "{} object {} is {}; nothing runs to update",
                kind, e.obj.name, e.obj.status
            ))
            .with_field("status"));
        }
        let cg = match &e.cg {
            Some(cg) if caps.cgroup_may_vanish && !cgroups.exists(cg) => None,
            other => other.clone(),
        };
        let Some(driver) = self.kinds.get(kind) else {
            return Err(ApiError::unavailable(format!(
                "kind {kind} is not available"
            )));
        };
        driver.check_patch(&e.obj, &patch)?;
        // The kind's own section: the driver says what it becomes (or what cannot change).
        let new_section = match &patch.section {
            Some((key, _)) if key != kind.as_str() => {
                return Err(ApiError::invalid(
                    key.clone(),
                    format!("`{key}` is only allowed for kind {key}, not {kind}"),
                ));
            }
            Some((_, changes)) => {
                let sec = driver.patch_section(&e.obj, changes)?;
                // The section as it would be is admitted as a create's is: a PATCH may not
                // reach what the policy refuses a create (a k8s manifest's namespaces).
                let mut would_be = e.obj.spec.clone();
                would_be.section = Some(sec.clone());
                driver.admit(&would_be, &self.shared.policy)?;
                Some((sec, changes.clone()))
            }
            None => None,
        };
        let mut changed = None;
        if let Some(r) = &patch.resources {
            match &cg {
                Some(cg) => {
                    // The fast path: straight to cgroupfs. The spec records only what was
                    // applied.
                    driver.before_write(cg, r)?;
                    cgroups.apply(cg, r).map_err(cgroup_error)?;
                }
                None if !caps.sync => {
                    return Err(ApiError::precondition("object has no cgroup to update"));
                }
                None => {}
            }
            changed = Some(serde_json::to_value(r).unwrap_or_default());
        }
        let e = self
            .objects
            .get_mut(&id)
            .ok_or_else(|| ApiError::not_found(key))?;
        if let Some(r) = &patch.resources {
            e.obj.spec.resources.merge(r);
            if caps.sync {
                e.life.want += 1;
            }
        }
        let section_changed = match new_section {
            Some((sec, changes)) => {
                e.obj.spec.section = Some(sec);
                if caps.sync {
                    e.life.want += 1;
                }
                Some(changes)
            }
            None => None,
        };
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
                match driver.pause(&id, &e.obj, p) {
                    Some(r) => r.map_err(|er| er.with_field("paused"))?,
                    None => {
                        let Some(cg) = &cg else {
                            return Err(ApiError::precondition(format!(
                                "{} {} has no cgroup right now (it is stopping)",
                                kind, e.obj.name
                            ))
                            .with_field("paused"));
                        };
                        cgroups
                            .freeze(cg, p)
                            .map_err(cgroup_error)
                            .map_err(|er| er.with_field("paused"))?
                    }
                }
                e.obj.paused = p;
                e.obj.status = if p { Status::Paused } else { Status::Running };
                if caps.sync {
                    e.life.want += 1;
                }
                pause_event = Some(if p {
                    EventKind::Paused
                } else {
                    EventKind::Resumed
                });
            }
        }
        if e.life.want > e.life.synced {
            let now = Instant::now();
            e.life.last_patch = Some(now);
            e.life.pending_since.get_or_insert(now);
            e.life.sync_error = None;
        }
        e.obj.updated_at = Timestamp::now();
        if caps.sync {
            self.describe_sync(&id);
        }
        let Some(e) = self.objects.get(&id) else {
            return Err(ApiError::not_found(key));
        };
        let obj = e.obj.clone();
        if let Some(r) = changed {
            self.emit(
                EventKind::Updated,
                &obj,
                if cg.is_some() {
                    "resources updated in place".to_string()
                } else {
                    format!("resources recorded; the {kind} gets them when it runs again")
                },
                json!({"resources": r}),
            );
        }
        if let Some(changes) = section_changed {
            self.emit(
                EventKind::Updated,
                &obj,
                format!("{kind} updated; the {kind} follows"),
                json!({ kind.as_str(): changes }),
            );
        }
        if let Some(k) = pause_event {
            self.emit(k, &obj, k.as_str(), serde_json::Value::Null);
        }
        if caps.sync {
            self.next(&id);
        }
        Ok(obj)
    }

    /// Starts what is due for the object, if no operation is in flight: a stop first, then an
    /// inspect asked for by the watch task, then a sync of the latest desired config.
    pub(super) fn next(&mut self, id: &str) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        if e.life.busy || e.obj.kind == Kind::Host {
            return;
        }
        let kind = e.obj.kind;
        if let Some(d) = &mut e.life.deleting {
            let ctx = StopCtx {
                mode: d.mode,
                first: d.first,
                past_grace: Instant::now() >= d.deadline,
                main_alive: e.life.main.is_some(),
                paused: e.obj.paused,
            };
            d.first = false;
            let Some(driver) = self.kinds.get_mut(kind) else {
                return;
            };
            let step = driver.stop(id, &e.obj, e.cg.as_ref(), ctx);
            self.step(id, step, Done::Stopped);
            return;
        }
        if matches!(e.obj.status, Status::Lost | Status::Failed) {
            return;
        }
        if e.life.refresh {
            e.life.refresh = false;
            let Some(driver) = self.kinds.get_mut(kind) else {
                return;
            };
            let step = driver.inspect(id, &e.obj);
            self.step(id, step, Done::Inspected);
            return;
        }
        if e.life.want <= e.life.synced {
            return;
        }
        let now = Instant::now();
        let settled = e.life.last_patch.is_none_or(|t| now >= t + SYNC_SETTLE);
        let due = e.life.pending_since.map(|t| t + SYNC_MAX_DELAY);
        if !settled && due.is_none_or(|d| now < d) {
            if !e.life.timer {
                e.life.timer = true;
                let settle_at = e.life.last_patch.map_or(now, |t| t + SYNC_SETTLE);
                let wake = due.map_or(settle_at, |d| d.min(settle_at));
                self.timers.push(wake, id, Wake::Settle);
            }
            return;
        }
        let gen = e.life.want;
        let Some(driver) = self.kinds.get_mut(kind) else {
            return;
        };
        let Some(op) = driver.sync(id, &e.obj, e.cg.as_ref()) else {
            // Nothing the outside system can take yet (no id); tried again at the next change.
            return;
        };
        e.life.pending_since = None;
        e.life.syncing = true;
        self.step(id, Step::Later(op), move |result| Done::Synced {
            gen,
            result,
        });
    }

    fn on_synced(&mut self, id: &str, gen: u64, result: Result<(), ApiError>) {
        let cgroups = self.cgroups.clone();
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let kind = e.obj.kind;
        e.life.syncing = false;
        let held = std::mem::take(&mut e.life.held);
        // A failed sync also counts as tried: the next PATCH (or a reconnect) tries again,
        // rather than the loop hammering a system that refuses.
        e.life.synced = e.life.synced.max(gen);
        e.life.sync_error = result.as_ref().err().map(|e| e.message.clone());
        let caps = self.caps(kind);
        if let Some(d) = self.kinds.get_mut(kind) {
            d.synced(id, result.is_ok());
        }
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        if let Some(d) = self.kinds.get(kind) {
            match &result {
                Ok(()) if e.life.synced == e.life.want => {
                    d.sync_state(&mut e.obj, SyncState::InSync, None)
                }
                Ok(()) => {}
                Err(er) => d.sync_state(&mut e.obj, SyncState::Failed, Some(er.message.clone())),
            }
        }
        // The sync wrote the limits of generation `gen` into the cgroup as it went, over any
        // change that came meanwhile: the latest values go back in at once (a few writes; the
        // next sync tells the outside system).
        if caps.sync_writes_cgroup && e.life.want > gen {
            if let Some(cg) = e.cg.as_ref().filter(|cg| cgroups.exists(cg)) {
                if let Err(er) = cgroups.apply(cg, &e.obj.spec.resources) {
                    tracing::warn!(id, error = %er, "re-applying limits after a sync");
                }
                if let Err(er) = cgroups.freeze(cg, e.obj.paused) {
                    tracing::warn!(id, error = %er, "re-asserting the freezer state");
                }
            }
        }
        if let Err(er) = result {
            let snapshot = e.obj.clone();
            tracing::warn!(id, error = %er.message, "{kind} sync failed");
            self.emit(
                EventKind::Updated,
                &snapshot,
                format!("{kind} sync failed: {}", er.message),
                json!({"sync": "failed"}),
            );
        }
        // The PATCHes held during the sync, in order; the first one schedules the next sync.
        for (patch, reply) in held {
            let _ = reply.send(self.apply_patch(id, patch));
        }
        self.next(id);
    }

    /// The restart backoff of an object is over: start it again in its cgroup.
    fn restart(&mut self, id: &str) {
        let Some(e) = self.objects.get(id) else {
            return;
        };
        if e.life.deleting.is_some() || e.obj.status != Status::Pending || e.life.busy {
            return;
        }
        let (kind, obj) = (e.obj.kind, e.obj.clone());
        let Some(driver) = self.kinds.get_mut(kind) else {
            return;
        };
        let step = driver.restart(id, &obj);
        self.step(id, step, Done::Restarted);
    }

    fn on_restarted(&mut self, id: &str, result: Result<Observed, ApiError>) {
        match result {
            Ok(obs) => self.observe(id, obs, false),
            Err(er) => {
                let Some(e) = self.objects.get_mut(id) else {
                    return;
                };
                e.obj.status = Status::Failed;
                e.obj.message = Some(format!("restart failed: {}", er.message));
                let obj = e.obj.clone();
                if std::mem::take(&mut e.life.collecting) {
                    self.collector.send(Command::Remove { id: id.to_string() });
                }
                self.emit(
                    EventKind::Failed,
                    &obj,
                    format!("restart failed: {}", er.message),
                    serde_json::Value::Null,
                );
            }
        }
        self.next(id);
    }

    #[tracing::instrument(name = "core.delete", skip_all)]
    pub(super) fn delete(&mut self, key: &str, wait: bool, remove: bool, reply: Reply<Object>) {
        let id = match self.id_of(key) {
            Ok(id) => id,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let grace = self.cfg.stop_grace;
        let Some(e) = self.objects.get(&id) else {
            let _ = reply.send(Err(ApiError::not_found(key)));
            return;
        };
        if e.obj.kind == Kind::Host {
            let _ = reply.send(Err(ApiError::precondition(
                "the host object cannot be deleted",
            )));
            return;
        }
        let caps = self.caps(e.obj.kind);
        if remove && !caps.remove_adopted {
            let _ = reply.send(Err(ApiError::invalid(
                "remove",
                format!(
                    "`remove` applies only to kinds that adopt outside workloads (containers); {} is a {}",
                    e.obj.name, e.obj.kind
                ),
            )));
            return;
        }
        let adopted = self
            .kinds
            .get(e.obj.kind)
            .is_some_and(|d| d.is_adopted(&e.obj));
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        if let Some(d) = &mut e.life.deleting {
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
            mode: if adopted && !remove {
                StopMode::Release
            } else {
                StopMode::Destroy
            },
            first: true,
        };
        if wait {
            d.waiters.push(reply);
        } else {
            let _ = reply.send(Ok(e.obj.clone()));
        }
        e.life.deleting = Some(d);
        e.life.refresh = false;
        if std::mem::take(&mut e.life.collecting) {
            self.collector.send(Command::Remove { id: id.clone() });
        }
        // Creates still waiting for the workload learn that it is gone.
        for w in e.life.waiters.drain(..) {
            let _ = w.send(Err(ApiError::precondition(
                "the object was deleted before its workload ran",
            )));
        }
        self.next(&id);
    }

    fn on_stopped(&mut self, id: &str, result: Result<Progress, ApiError>) {
        match result {
            Ok(Progress::Done) => self.finish_delete(id),
            Ok(Progress::Requeue(after)) => {
                self.timers.push(Instant::now() + after, id, Wake::Requeue)
            }
            Err(err) => {
                let Some(e) = self.objects.get_mut(id) else {
                    return;
                };
                // The workload is still there: the object stays, says why, and can be deleted
                // again. What it is now is asked again.
                e.life.refresh = true;
                e.obj.message = Some(format!("delete failed: {}", err.message));
                let d = e.life.deleting.take();
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
                self.next(id);
            }
        }
    }

    /// Removes a deleted object from the registry, releases what it held, and answers the
    /// deletes waiting for it.
    pub(super) fn finish_delete(&mut self, id: &str) {
        self.deleted_since_trim = true;
        let Some(mut e) = self.objects.remove(id) else {
            return;
        };
        if let Some(d) = self.kinds.get_mut(e.obj.kind) {
            d.forget(id, &e.obj, e.cg.as_ref());
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
        for (_, r) in e.life.held.drain(..) {
            let _ = r.send(Err(ApiError::precondition(format!(
                "object {} was deleted",
                e.obj.name
            ))));
        }
        if let Some(d) = e.life.deleting.take() {
            for w in d.waiters {
                let _ = w.send(Ok(e.obj.clone()));
            }
        }
    }

    /// The wake-ups that are due.
    pub(super) fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((id, w)) = self.timers.pop_due(now) {
            match w {
                Wake::Settle => {
                    if let Some(e) = self.objects.get_mut(&id) {
                        e.life.timer = false;
                    }
                    self.next(&id);
                }
                Wake::Requeue => {
                    self.reap_one(&id);
                    self.next(&id);
                }
                Wake::Restart => self.restart(&id),
                Wake::Refresh => {
                    if let Some(e) = self.objects.get_mut(&id) {
                        e.life.refresh = true;
                    }
                    self.next(&id);
                }
                Wake::Recover => self.recover_again(&id),
            }
        }
    }

    /// A recover or inspect answered: the next failure starts the backoff afresh.
    fn recheck_ok(&mut self, id: &str) {
        if let Some(e) = self.objects.get_mut(id) {
            e.life.recheck_failures = 0;
        }
    }

    /// Retries a failed recover or inspect after 250 ms, doubling to at most 10 s.
    fn recheck_later(&mut self, id: &str, w: Wake) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let delay = Duration::from_millis(250)
            .saturating_mul(1u32 << e.life.recheck_failures.min(6))
            .min(Duration::from_secs(10));
        e.life.recheck_failures += 1;
        self.timers.push(Instant::now() + delay, id, w);
    }

    /// [`Wake::Recover`]: the kind's `recover` again, with the handle it holds now. An object
    /// deleted meanwhile, or busy with another operation (which then tells its state), is
    /// left alone.
    fn recover_again(&mut self, id: &str) {
        let Some(e) = self.objects.get(id) else {
            return;
        };
        if e.life.busy || e.life.deleting.is_some() {
            return;
        }
        let obj = e.obj.clone();
        let Some(driver) = self.kinds.get_mut(obj.kind) else {
            return;
        };
        let handle = driver.handle(&obj);
        let step = driver.recover(&obj, handle.as_ref());
        self.step(id, step, Done::Recovered);
    }

    /// Whether a supervised main pid has ended: reaped (a child), or gone from `/proc` or
    /// recycled (not a child). `Some(status)` for a reaped child.
    fn main_ended(&self, m: Main) -> Option<Option<ExitStatus>> {
        match m {
            Main::Child(pid) => match proc_driver::reap(pid) {
                Some(st) => Some(Some(st)),
                // Not our child any more, or no longer in /proc: gone too.
                None if !self.procfs.root().join(pid.to_string()).exists() => Some(None),
                None => None,
            },
            Main::Foreign { pid, start_time } => {
                let alive = self
                    .procfs
                    .stat(pid)
                    .is_ok_and(|s| s.start_time == start_time && s.state != 'Z' && s.state != 'X');
                (!alive).then_some(None)
            }
        }
    }

    fn reap_one(&mut self, id: &str) {
        let Some(m) = self.objects.get(id).and_then(|e| e.life.main) else {
            return;
        };
        if let Some(st) = self.main_ended(m) {
            self.on_exit(id, st);
        }
    }

    /// Reaps exited children (on SIGCHLD and every second). It never calls `waitpid(-1)`, so it
    /// cannot steal another component's child.
    pub(super) fn reap(&mut self) {
        let mut exits = Vec::new();
        for (id, e) in self.objects.iter() {
            if let Some(Main::Child(pid)) = e.life.main {
                if let Some(st) = proc_driver::reap(pid) {
                    exits.push((id.clone(), Some(st)));
                }
            }
        }
        for (id, st) in exits {
            self.on_exit(&id, st);
        }
    }

    /// Main pids that are not children (re-adopted after a restart): an exit is a pid gone from
    /// `/proc`, or one whose start time changed (recycled).
    pub(super) fn check_foreign(&mut self) {
        let mut gone = Vec::new();
        for (id, e) in self.objects.iter() {
            if let Some(m @ Main::Foreign { .. }) = e.life.main {
                if self.main_ended(m).is_some() {
                    gone.push(id.clone());
                }
            }
        }
        for id in gone {
            self.on_exit(&id, None);
        }
    }

    /// The OOM kill count of the object's cgroup now (a fresh read of its file).
    fn oom_kills(&self, id: &str) -> Option<u64> {
        let cg = self.objects.get(id)?.cg.clone()?;
        let mut reader = self.cgroups.stat_reader(&cg).ok()?;
        let (mut buf, mut s) = (Vec::new(), nodeagent_types::Sample::default());
        reader.read(&mut buf, &mut s).ok()?;
        s.oom_kills
    }

    /// The supervised main process of an object ended, with `st` where it was our child.
    fn on_exit(&mut self, id: &str, st: Option<ExitStatus>) {
        // A SIGKILL with the cgroup's OOM kill count up is the kernel's OOM killer, not a
        // signal someone sent: say so, once per exit, with how many it killed.
        let oom = match st {
            Some(ExitStatus::Signal(libc::SIGKILL)) => self.oom_kills(id),
            _ => None,
        };
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let new_ooms = match oom {
            Some(n) => {
                let before = e.life.oom_seen.unwrap_or(0);
                e.life.oom_seen = Some(n);
                n.saturating_sub(before)
            }
            None => 0,
        };
        e.life.main = None;
        let (code, signal) = match st {
            Some(ExitStatus::Code(c)) => (Some(c), None),
            Some(ExitStatus::Signal(s)) => (None, Some(s)),
            None => (None, None),
        };
        e.obj.exit_code = code;
        e.obj.exit_signal = signal;
        e.obj.updated_at = Timestamp::now();
        if e.life.deleting.is_some() {
            return;
        }
        let mut message = exit_message(code, signal);
        if new_ooms > 0 {
            message = match e.obj.spec.resources.memory {
                Some(m) => format!(
                    "{message}: killed by the OOM killer (memory limit {} bytes)",
                    m.0
                ),
                None => format!("{message}: killed by the OOM killer"),
            };
            let obj = e.obj.clone();
            self.emit(
                EventKind::OomKilled,
                &obj,
                "out of memory: the kernel's OOM killer killed a process of the object",
                json!({"count": new_ooms, "memory_limit_bytes": obj.spec.resources.memory.map(|m| m.0)}),
            );
        }
        let s = Stopped {
            status: Status::Exited,
            exit_code: code,
            exit_signal: signal,
            message,
            exit_event: true,
            idle: false,
            restartable: true,
            detail: json!({"oom_killed": new_ooms > 0}),
        };
        self.stopped(id, s, false);
    }

    /// The once-a-second check of the objects of kinds that poll ([`Caps::poll`]).
    pub(super) fn poll_kinds(&mut self) {
        let now = Timestamp::now().as_nanos();
        let mut found = Vec::new();
        let mut kinds_polling: Vec<Kind> = Vec::new();
        for d in self.kinds.iter_mut() {
            if d.caps().poll {
                kinds_polling.push(d.kind());
            }
        }
        if kinds_polling.is_empty() {
            return;
        }
        for (id, e) in self.objects.iter() {
            if !kinds_polling.contains(&e.obj.kind)
                || e.life.deleting.is_some()
                || e.life.busy
                || !e.obj.status.is_live()
            {
                continue;
            }
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
                .max(Duration::from_secs(1));
            let fresh = latest.is_some_and(|(_, ts)| {
                now.saturating_sub(ts.as_nanos()) <= stale_after.as_nanos() as u64
            });
            found.push((
                id.clone(),
                e.obj.kind,
                Latest {
                    pids: latest.and_then(|(p, _)| p),
                    fresh,
                },
            ));
        }
        for (id, kind, latest) in found {
            let Some(e) = self.objects.get(&id) else {
                continue;
            };
            let Some(d) = self.kinds.get_mut(kind) else {
                continue;
            };
            let obs = d.poll(&id, &e.obj, e.cg.as_ref(), latest);
            if !matches!(obs, Observed::Unchanged) {
                self.observe(&id, obs, false);
            }
        }
    }

    /// A kind's watch task has news: the driver says what to do about it.
    fn on_watch(&mut self, kind: Kind, msg: nodeagent_engine::kinds::KindMsg) {
        let Some(d) = self.kinds.get_mut(kind) else {
            return;
        };
        for a in d.on_watch(msg) {
            use nodeagent_engine::kinds::Action;
            match a {
                Action::Refresh(id) => {
                    let Some(e) = self.objects.get_mut(&id) else {
                        continue;
                    };
                    if e.life.deleting.is_some() {
                        continue;
                    }
                    e.life.refresh = true;
                    self.next(&id);
                }
                Action::Emit {
                    id,
                    kind,
                    message,
                    detail,
                } => {
                    let Some(e) = self.objects.get(&id) else {
                        continue;
                    };
                    if e.life.deleting.is_some() {
                        continue;
                    }
                    let obj = e.obj.clone();
                    self.emit(kind, &obj, message, detail);
                }
                Action::RetryFailedSync(id) => {
                    let Some(e) = self.objects.get_mut(&id) else {
                        continue;
                    };
                    if e.life.sync_error.is_some() && e.life.deleting.is_none() {
                        e.life.want += 1;
                    }
                    self.next(&id);
                }
            }
        }
    }

    /// Starts every kind's watch task (one per kind, not per object).
    pub(super) fn start_watches(&mut self) {
        let since = i64::try_from(self.started_at.as_nanos()).unwrap_or(i64::MAX);
        for d in self.kinds.iter_mut() {
            let kind = d.kind();
            let tx = self.internal_tx.clone();
            let notify = Box::new(move |msg| tx.send(Internal::Watch { kind, msg }).is_ok());
            if let Some(h) = d.watch(since, notify) {
                self.watchers.push(h);
            }
        }
    }

    /// `stop_workloads`: each kind that stops its workloads at shutdown is asked to (SIGTERM),
    /// then forced (SIGKILL) what is left after at most 1 s (the shutdown has 2 s in all). They
    /// are then `exited` in the store, so the next start does not look for them.
    pub(super) async fn stop_workloads(&mut self) {
        let mut targets: Vec<String> = Vec::new();
        for (id, e) in self.objects.iter() {
            let stops = self
                .kinds
                .get(e.obj.kind)
                .is_some_and(|d| d.stops_at_shutdown());
            if stops && e.obj.status.is_live() && e.life.deleting.is_none() {
                targets.push(id.clone());
            }
        }
        if targets.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.cfg.stop_grace.min(Duration::from_secs(1));
        let mut left = targets.clone();
        let mut first = true;
        loop {
            let past_grace = Instant::now() >= deadline;
            let mut still = Vec::new();
            for id in left {
                self.reap_one(&id);
                let Some(e) = self.objects.get(&id) else {
                    continue;
                };
                let ctx = StopCtx {
                    mode: StopMode::Destroy,
                    first,
                    past_grace,
                    main_alive: e.life.main.is_some(),
                    paused: e.obj.paused,
                };
                let Some(d) = self.kinds.get_mut(e.obj.kind) else {
                    continue;
                };
                match d.stop(&id, &e.obj, e.cg.as_ref(), ctx) {
                    Step::Now(Ok(Progress::Done)) | Step::Now(Err(_)) | Step::Later(_) => {}
                    Step::Now(Ok(Progress::Requeue(_))) => still.push(id),
                }
            }
            first = false;
            if still.is_empty() || past_grace {
                break;
            }
            left = still;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in targets {
            let Some(e) = self.objects.get_mut(&id) else {
                continue;
            };
            e.life.main = None;
            e.obj.status = Status::Exited;
            e.obj.paused = false;
            e.obj.message = Some("stopped at the agent's shutdown (stop_workloads)".into());
            e.obj.updated_at = Timestamp::now();
            let obj = e.obj.clone();
            self.emit(
                EventKind::Exited,
                &obj,
                "stopped at shutdown",
                json!({"stop_workloads": true}),
            );
        }
    }
}
