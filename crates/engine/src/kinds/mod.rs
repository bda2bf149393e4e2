//! Kinds as plug-ins (the seed's "horizontal extension").
//!
//! Each kind of object lives in its own folder here and implements one trait, [`KindDriver`]:
//! the seed's managerApi and collectorApi, shaped like Nomad's `DriverPlugin` (start, inspect,
//! stop, recover, events) and kube-rs's reconcilers (idempotent operations that say when to come
//! back). The core owns everything that is the same for every kind, written once:
//!
//! - at most one operation in flight per object, its result coming back to the loop as a message;
//! - the fast path of control (a cgroupfs write) and PATCHes folded into the next sync by
//!   generation, held while a sync that writes the cgroup itself is in flight;
//! - settle timers, requeue-after, restart backoff, supervision of main pids (children by
//!   `waitpid`, others by a `/proc` start-time check), and re-adoption after a restart;
//! - the object's status, events, collection and report tasks.
//!
//! A driver never touches the registry. It answers with what the outside system says
//! ([`Observed`]), and the core turns that into status, events and sampling. What a driver
//! keeps per object beyond the [`Object`] lives in the driver (by object id); what it needs
//! after an agent restart is its opaque [`KindDriver::handle`], which the core stores with the
//! object and hands back to [`KindDriver::recover`].
//!
//! A slow driver (Docker, QMP, a REST API) returns [`Step::Later`] with a future the core runs
//! off its loop; a fast one (a fork, a few cgroupfs writes) returns [`Step::Now`], and the core
//! takes the result in the same turn, with no round trip.

pub mod cgroup;
pub mod container;
pub mod helm;
pub mod k8s;
pub mod process;
pub mod vm;

use crate::policy::Policy;
use nodeagent_drivers::cgroup::{CgroupError, CgroupRef, Cgroups};
use nodeagent_drivers::procfs::ProcFs;
use nodeagent_types::{ApiError, EventKind, Kind, Object, ObjectSpec, RestartPolicy, Status};
use std::any::Any;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A driver operation that runs off the core's loop.
pub type Op<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a phase-one create hands to its phase two; private to the kind.
pub type Prepared = Box<dyn Any + Send>;

/// A message for a driver from its own operations or watch task, carried through the core's
/// loop without the core looking inside.
pub type KindMsg = Box<dyn Any + Send>;

/// How a driver answers: at once (the core takes the result in the same turn), or with an
/// operation the core runs off its loop and whose result comes back as a message.
pub enum Step<T> {
    Now(T),
    Later(Op<T>),
}

impl<T: Send + 'static> Step<T> {
    /// An operation to run off the loop.
    pub fn later(f: impl Future<Output = T> + Send + 'static) -> Step<T> {
        Step::Later(Box::pin(f))
    }
}

/// What a kind needs from the node, built once by the core and handed to each kind's
/// constructor.
#[derive(Clone)]
pub struct KindEnv {
    pub cgroups: Arc<Cgroups>,
    pub procfs: ProcFs,
    /// Root of the cgroup filesystem (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// `<state-dir>/objects`: one folder per object for what a kind keeps on disk (logs).
    pub objects_dir: PathBuf,
    /// Time a workload gets between the polite and the forced stop.
    pub stop_grace: Duration,
    /// The node's policy, for the rules a kind can check only once an outside system has
    /// answered (a `k8s` document's scope); what a spec alone shows is checked in
    /// [`KindDriver::admit`].
    pub policy: Arc<crate::policy::Policy>,
}

/// Builds a kind once the core knows the node (the binary lists the kinds as these).
pub type KindFactory = Box<dyn FnOnce(&KindEnv) -> Box<dyn KindDriver> + Send>;

/// A [`KindFactory`] from a kind's constructor: `kind(ProcessKind::new)`.
pub fn kind<K: KindDriver + 'static>(
    new: impl FnOnce(&KindEnv) -> K + Send + 'static,
) -> KindFactory {
    Box::new(move |env| Box::new(new(env)))
}

/// What the core must know about a kind to drive it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    /// The outside system keeps its own copy of the limits, brought in line by
    /// [`KindDriver::sync`] after the fast path has written the cgroup.
    pub sync: bool,
    /// That sync writes the limits into the cgroup itself, at a moment the core cannot see
    /// (Docker's update does): PATCHes that meet it in flight wait until it returns, so that no
    /// answer is followed by an older value.
    pub sync_writes_cgroup: bool,
    /// `DELETE ?remove=true` means something: the object may be adopted, and released by default.
    pub remove_adopted: bool,
    /// The core calls [`KindDriver::poll`] every second for each live object.
    pub poll: bool,
    /// The object's cgroup can vanish with the workload (so it is checked before a write).
    pub cgroup_may_vanish: bool,
}

/// How the core follows the main process of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Main {
    /// A child of the agent: its exit is found by `waitpid`, with its status.
    Child(u32),
    /// Not a child (re-adopted after the agent's restart): its exit is a pid gone from `/proc`,
    /// or one with another start time (recycled).
    Foreign { pid: u32, start_time: u64 },
}

impl Main {
    pub fn pid(self) -> u32 {
        match self {
            Main::Child(p) | Main::Foreign { pid: p, .. } => p,
        }
    }
}

/// A running workload, as its driver found it.
#[derive(Debug, Clone)]
pub struct Running {
    /// The main process, where there is one.
    pub pid: Option<u32>,
    /// The cgroup to control and sample; `None` for a kind that runs nothing on the node (a
    /// `k8s` manifest): no collector, no cgroup writes.
    pub cgroup: Option<CgroupRef>,
    /// A pid whose network namespace may be the object's own (the core checks): its
    /// `/proc/<pid>/net/dev` gives the object's network counters.
    pub net_pid: Option<u32>,
    /// Whether the core supervises the main pid (an exit the outside system reports, as
    /// Docker does, needs none).
    pub main: Option<Main>,
    /// The outside system's view of paused, where it has one.
    pub paused: Option<bool>,
    /// Extra fields for the `started`/`restarted` event.
    pub detail: serde_json::Value,
}

/// A workload that does not run now.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// `exited`, or `pending` while the outside system restarts it.
    pub status: Status,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub message: String,
    /// Emit an `exited` event when the status changes to `exited`.
    pub exit_event: bool,
    /// The outside system may start it again: sampling stays (idle) with its report tasks.
    /// Otherwise sampling stops.
    pub idle: bool,
    /// The exit came from the workload itself, so the restart policy applies.
    pub restartable: bool,
    /// Extra fields for the `exited` event.
    pub detail: serde_json::Value,
}

/// The outside truth now.
pub enum Observed {
    Running(Running),
    Stopped(Stopped),
    /// The workload is gone from under the agent: the object is `lost`.
    Gone {
        message: String,
        detail: serde_json::Value,
    },
    /// It never got far enough to exist: the object is `failed`.
    Failed {
        message: String,
    },
    /// Nothing to change.
    Unchanged,
    /// An observation with a note for the driver (what an operation off the loop learnt, such
    /// as the outside system's id): the core hands the note to [`KindDriver::note`] on the loop,
    /// then applies the observation.
    Noted(Box<Observed>, KindMsg),
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Observed::Running(r) => f.debug_tuple("Running").field(r).finish(),
            Observed::Stopped(s) => f.debug_tuple("Stopped").field(s).finish(),
            Observed::Gone { message, .. } => f.debug_tuple("Gone").field(message).finish(),
            Observed::Failed { message } => f.debug_tuple("Failed").field(message).finish(),
            Observed::Unchanged => f.write_str("Unchanged"),
            Observed::Noted(o, _) => f.debug_tuple("Noted").field(o).finish(),
        }
    }
}

/// How a delete ends the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Stop it and remove what the agent made.
    Destroy,
    /// Leave it running and give it back (an adopted workload).
    Release,
}

/// What the core tells a stop in progress.
#[derive(Debug, Clone, Copy)]
pub struct StopCtx {
    pub mode: StopMode,
    /// The first call of this delete.
    pub first: bool,
    /// The grace period is over: force it.
    pub past_grace: bool,
    /// The supervised main pid is still there (not yet reaped or gone from `/proc`).
    pub main_alive: bool,
    pub paused: bool,
}

/// A stop's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Done,
    /// Not yet; ask again after this long.
    Requeue(Duration),
}

/// What the core does for a kind's watch task.
#[derive(Debug, Clone)]
pub enum Action {
    /// Ask the driver for the object's state again ([`KindDriver::inspect`]).
    Refresh(String),
    /// Record an event on the object.
    Emit {
        id: String,
        kind: EventKind,
        message: String,
        detail: serde_json::Value,
    },
    /// Try the object's sync again if the last one failed (the outside system is back).
    RetryFailedSync(String),
}

/// The latest sample's view the core hands to [`KindDriver::poll`] (no I/O).
#[derive(Debug, Clone, Copy)]
pub struct Latest {
    /// `pids` of the latest sample, and whether the samples are recent.
    pub pids: Option<u64>,
    pub fresh: bool,
}

/// A kind of object (DESIGN.md §2's manager and collector for it).
///
/// Methods with an object id are only called for objects of this kind. A driver keeps what it
/// needs per object keyed by id, and drops it in [`KindDriver::forget`].
pub trait KindDriver: Send {
    fn kind(&self) -> Kind;

    fn caps(&self) -> Caps {
        Caps::default()
    }

    /// Checks a create against the node's policy (403 naming the field and rule), before
    /// anything exists: the core calls it first, before the name check.
    fn admit(&self, _spec: &ObjectSpec, _policy: &Policy) -> Result<(), ApiError> {
        Ok(())
    }

    /// Phase one of a create: what can be refused before the caller is answered (an engine
    /// that is down, a name taken outside, a missing image). Nothing may exist afterwards that
    /// phase two does not own.
    fn prepare(&mut self, _id: &str, _spec: &ObjectSpec) -> Step<Result<Prepared, ApiError>> {
        Step::Now(Ok(Box::new(())))
    }

    /// Phase two: makes the workload and says how it runs. On failure nothing is left behind.
    fn start(
        &mut self,
        id: &str,
        spec: &ObjectSpec,
        prepared: Prepared,
    ) -> Step<Result<Observed, ApiError>>;

    /// The `created` event's message and data.
    fn created_event(&self, obj: &Object) -> (String, serde_json::Value) {
        (
            format!("created {} {}", obj.kind, obj.name),
            serde_json::json!({"pid": obj.pid}),
        )
    }

    /// Whether the object adopted a workload the agent did not make (with
    /// [`Caps::remove_adopted`], a delete then releases it unless asked to remove it).
    fn is_adopted(&self, _obj: &Object) -> bool {
        false
    }

    /// Fills in what the kind adds to the object once it runs (a process's log files).
    fn describe(&self, _obj: &mut Object) {}

    /// The restart policy of the object (the core applies it, with its backoff).
    fn restart_policy(&self, _spec: &ObjectSpec) -> RestartPolicy {
        RestartPolicy::Never
    }

    /// Starts the workload again after an exit (restart policy); its cgroup is kept.
    fn restart(&mut self, _id: &str, _obj: &Object) -> Step<Result<Observed, ApiError>> {
        Step::Now(Err(ApiError::precondition("this kind cannot be restarted")))
    }

    /// Called before the fast path writes `resources` to the object's cgroup.
    fn before_write(
        &self,
        _cg: &CgroupRef,
        _r: &nodeagent_types::Resources,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Called first on every PATCH: a kind refuses what it cannot take (`resources` for a
    /// kind that runs nothing on the node), naming the field.
    fn check_patch(
        &self,
        _obj: &Object,
        _patch: &nodeagent_types::ObjectPatch,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// The kind's section as a PATCH changes it (`{"vm": {"memory": "96Mi"}}`; `changes` is the
    /// object under the key), or a 400 naming the field that cannot change in place. The core
    /// stores the section; [`KindDriver::sync`] brings the workload in line (so a kind that
    /// takes changes has [`Caps::sync`]).
    fn patch_section(
        &self,
        obj: &Object,
        _changes: &serde_json::Value,
    ) -> Result<nodeagent_types::KindSpec, ApiError> {
        let key = obj.kind.as_str();
        Err(ApiError::invalid(
            key,
            format!("kind {key} has no fields that change in place"),
        ))
    }

    /// Pauses or resumes the workload by its own means instead of the core's cgroup freezer
    /// (a VM: QMP `stop`/`cont`, which keeps qemu itself answering). `None`: the core freezes
    /// the cgroup. It runs on the core's loop, so it must be fast and bounded by a short timeout.
    fn pause(&self, _id: &str, _obj: &Object, _paused: bool) -> Option<Result<(), ApiError>> {
        None
    }

    /// Brings the outside system in line with the object's spec (its limits and paused state),
    /// after the fast path wrote them to the cgroup. `None`: nothing to do. Only called with
    /// [`Caps::sync`].
    fn sync(
        &mut self,
        _id: &str,
        _obj: &Object,
        _cg: Option<&CgroupRef>,
    ) -> Option<Op<Result<(), ApiError>>> {
        None
    }

    /// A note an operation left with its observation (see [`Observed::Noted`]).
    fn note(&mut self, _id: &str, _note: KindMsg) {}

    /// The sync started by [`KindDriver::sync`] ended.
    fn synced(&mut self, _id: &str, _ok: bool) {}

    /// Sets what the object says about its sync (the driver's status section).
    fn sync_state(
        &self,
        _obj: &mut Object,
        _state: nodeagent_types::SyncState,
        _msg: Option<String>,
    ) {
    }

    /// The outside truth now (after an event of the watch task).
    fn inspect(&mut self, _id: &str, _obj: &Object) -> Step<Result<Observed, ApiError>> {
        Step::Now(Ok(Observed::Unchanged))
    }

    /// Ends the workload, as a stop in progress the core calls again while it says
    /// [`Progress::Requeue`].
    fn stop(
        &mut self,
        id: &str,
        obj: &Object,
        cg: Option<&CgroupRef>,
        ctx: StopCtx,
    ) -> Step<Result<Progress, ApiError>>;

    /// The object is gone from the registry (deleted, or its create failed): release what the
    /// driver still holds for it (a cgroup it made, an adoption to undo, its own maps).
    fn forget(&mut self, _id: &str, _obj: &Object, _cg: Option<&CgroupRef>) {}

    /// After the agent's restart: the stored object, and its handle. Says what runs now.
    fn recover(
        &mut self,
        obj: &Object,
        handle: Option<&serde_json::Value>,
    ) -> Step<Result<Observed, ApiError>>;

    /// What the driver needs after a restart, stored with the object (opaque to the core).
    fn handle(&mut self, _obj: &Object) -> Option<serde_json::Value> {
        None
    }

    /// Starts the kind's one watch task (not one per object), whose messages `notify` brings
    /// to [`KindDriver::on_watch`] through the loop; `since_nanos` is the agent's start.
    fn watch(
        &mut self,
        _since_nanos: i64,
        _notify: Box<dyn Fn(KindMsg) -> bool + Send + Sync>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }

    /// A message of the watch task: what the core should do about it.
    fn on_watch(&mut self, _msg: KindMsg) -> Vec<Action> {
        Vec::new()
    }

    /// The once-a-second check of a live object ([`Caps::poll`]); reads no more than it must.
    fn poll(
        &mut self,
        _id: &str,
        _obj: &Object,
        _cg: Option<&CgroupRef>,
        _latest: Latest,
    ) -> Observed {
        Observed::Unchanged
    }

    /// Stops the workloads at the agent's shutdown (`stop_workloads`): whether this kind has
    /// any to stop this way (processes do; containers are left to their engine).
    fn stops_at_shutdown(&self) -> bool {
        false
    }
}

/// The kinds the agent runs, by [`Kind`] (the binary lists them; nothing registers itself).
pub struct Kinds {
    drivers: Vec<Box<dyn KindDriver>>,
}

impl Kinds {
    pub fn new(env: &KindEnv, factories: Vec<KindFactory>) -> Kinds {
        Kinds {
            drivers: factories.into_iter().map(|f| f(env)).collect(),
        }
    }

    pub fn get(&self, k: Kind) -> Option<&dyn KindDriver> {
        self.drivers.iter().find(|d| d.kind() == k).map(|d| &**d)
    }

    pub fn get_mut(&mut self, k: Kind) -> Option<&mut (dyn KindDriver + 'static)> {
        self.drivers
            .iter_mut()
            .find(|d| d.kind() == k)
            .map(|d| &mut **d)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Box<dyn KindDriver>> {
        self.drivers.iter_mut()
    }

    /// The kinds' names, for messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.drivers.iter().map(|d| d.kind().as_str()).collect()
    }
}

/// Maps a cgroup driver error: a value the kernel refused is the caller's fault (400, naming the
/// field); anything else is the node's (500), with the path in the message.
pub fn cgroup_error(e: CgroupError) -> ApiError {
    match e {
        CgroupError::Rejected { field, message } => ApiError::invalid(field, message),
        CgroupError::NotFound(p) => {
            ApiError::unavailable(format!("no cgroup filesystem under {}", p.display()))
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// A kind's section after a PATCH of it (for [`KindDriver::patch_section`]): the fields given
/// in `changes` replace the section's, `null` removes one (its default applies), and the result
/// is read and validated as a create's section would be. `key` is the section's key (`k8s`),
/// which errors name.
pub fn merged_section<S>(key: &str, cur: &S, changes: &serde_json::Value) -> Result<S, ApiError>
where
    S: serde::Serialize + serde::de::DeserializeOwned + nodeagent_types::KindSection,
{
    let Some(changes) = changes.as_object() else {
        return Err(ApiError::invalid(
            key,
            "give the fields to change as an object",
        ));
    };
    let mut v = serde_json::to_value(cur).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(m) = v.as_object_mut() {
        for (k, val) in changes {
            if val.is_null() {
                m.remove(k);
            } else {
                m.insert(k.clone(), val.clone());
            }
        }
    }
    let new: S = serde_json::from_value(v)
        .map_err(|e| ApiError::invalid(key, format!("the {key} section after this PATCH: {e}")))?;
    new.validate()?;
    Ok(new)
}
