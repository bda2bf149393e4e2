//! The `vm` kind: a QEMU guest spawned by the agent (no shell) straight into the object's
//! cgroup, driven over QMP, its serial console captured to a file in the state dir.
//!
//! - **Create.** Phase one checks, with no side effect, that the files exist and the
//!   accelerator can be had (a 400 naming `vm.kernel`, `vm.accel` ...). Phase two makes the
//!   cgroup (with a memory limit that leaves qemu room over the guest's RAM unless the spec
//!   gives one), spawns qemu into it, then, off the loop, waits for QMP to say `running` and,
//!   with `wait_for.console`, for the console to show the text. A failure kills qemu and
//!   removes the cgroup and the folder.
//! - **Exits.** qemu is the object's main pid, a child the core supervises: a guest that powers
//!   itself off ends qemu with code 0 (`exited`, with its event); a crash or a kill is the
//!   exit status qemu had. No QMP event stream is held in this step: the exit is what matters,
//!   and the core finds it by `waitpid`.
//! - **Delete.** `system_powerdown` (after `cont` if paused), up to `shutdown_grace`, then QMP
//!   `quit`, then SIGKILL.
//! - **Recover.** The handle keeps qemu's pid and start time and the accelerator: a qemu with
//!   that pid and start time whose QMP socket answers is re-adopted (`Main::Foreign`); nothing
//!   is started again.

pub mod qemu;
pub mod qmp;

use super::{
    Caps, KindDriver, KindEnv, KindMsg, Main, Observed, Prepared, Progress, Running, Step, StopCtx,
    StopMode, Stopped,
};
use crate::kinds::cgroup_error;
use nodeagent_drivers::cgroup::{CgroupManager, CgroupRef, Cgroups};
use nodeagent_drivers::process::{self, SpawnError, SpawnSpec};
use nodeagent_drivers::procfs::ProcFs;
use nodeagent_types::{
    ApiError, Kind, Memory, Object, ObjectSpec, Resources, Status, SyncState, VmSpec, VmStatus,
};
use qemu::Paths;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long qemu may take to open its QMP socket and answer.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the console may take to show `wait_for.console`.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The balloon's floor.
const MIN_BALLOON: u64 = 64 << 20;
/// How long a sync waits for the guest to reach the balloon's target.
const BALLOON_WAIT: Duration = Duration::from_secs(10);
/// The least room a memory limit must leave qemu over the guest's RAM.
const MIN_ROOM: u64 = 64 << 20;
/// Bound of each step of a QMP `stop`/`cont`, which runs on the core's loop.
const PAUSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Re-asks a stop in progress this often.
const STOP_POLL: Duration = Duration::from_millis(50);
/// A `system_powerdown` the guest has not acted on is sent again this often.
const POWERDOWN_REPEAT: Duration = Duration::from_secs(1);
/// After `quit`, qemu gets this long before SIGKILL.
const QUIT_GRACE: Duration = Duration::from_secs(3);

/// What the driver keeps per guest.
#[derive(Debug, Clone)]
struct Guest {
    pid: u32,
    start_time: u64,
    kvm: bool,
    qmp_status: String,
    memory_actual: Option<u64>,
    /// The most RAM the guest can have (`max_memory` or `memory`).
    guest_ram: u64,
    /// RAM at boot: the balloon's ceiling.
    boot_ram: u64,
    /// What the balloon was last set to (`None`: never, the guest has its boot RAM).
    balloon_target: Option<u64>,
    /// The target the sync in flight sends.
    sending: Option<u64>,
    /// The stop in progress: when `system_powerdown` was sent, and when `quit` was.
    powerdown_at: Option<Instant>,
    quit_at: Option<Instant>,
    /// When the power button was last pressed.
    last_press: Option<Instant>,
}

/// What an operation learnt, noted on its observation.
struct Learned {
    qmp_status: String,
    /// Guest-visible RAM, where a balloon reports it.
    memory_actual: Option<u64>,
}

pub struct VmKind {
    qemu: String,
    cgroups: Arc<Cgroups>,
    procfs: ProcFs,
    objects_dir: PathBuf,
    grace: Duration,
    /// Whether KVM can run guests here (checked once).
    kvm_ok: bool,
    qboot: bool,
    guests: HashMap<String, Guest>,
}

impl VmKind {
    /// The kind, running `qemu` (a program name looked up in PATH, or a path).
    pub fn new(env: &KindEnv, qemu: &str) -> VmKind {
        let kvm_ok = qemu::kvm_works(Path::new("/proc/cpuinfo"), Path::new("/dev/kvm"));
        tracing::info!(
            qemu,
            kvm = kvm_ok,
            "vm kind: accel auto picks {}",
            if kvm_ok { "kvm" } else { "tcg" }
        );
        VmKind {
            qemu: qemu.to_string(),
            cgroups: env.cgroups.clone(),
            procfs: env.procfs.clone(),
            objects_dir: env.objects_dir.clone(),
            grace: env.stop_grace,
            kvm_ok,
            qboot: Path::new(qemu::QBOOT).exists(),
            guests: HashMap::new(),
        }
    }

    fn paths(&self, id: &str) -> Paths {
        Paths::new(self.objects_dir.join(id))
    }

    fn section(spec: &ObjectSpec) -> Result<&VmSpec, ApiError> {
        spec.section::<VmSpec>()
            .ok_or_else(|| ApiError::invalid("vm", "kind vm needs a `vm` section"))
    }

    /// What phase one checks: files exist, the accelerator can be had, a memory limit leaves
    /// qemu room.
    fn check(&self, spec: &ObjectSpec) -> Result<bool, ApiError> {
        let vm = Self::section(spec)?;
        let file = |field: &str, p: &str| -> Result<(), ApiError> {
            match std::fs::metadata(p) {
                Ok(m) if m.is_file() => Ok(()),
                Ok(_) => Err(ApiError::invalid(
                    field,
                    format!("{p} is not a regular file"),
                )),
                Err(e) => Err(ApiError::invalid(field, format!("{p}: {e}"))),
            }
        };
        file("vm.kernel", &vm.kernel)?;
        if let Some(i) = &vm.initrd {
            file("vm.initrd", i)?;
        }
        for (i, d) in vm.disks.iter().enumerate() {
            file(&format!("vm.disks[{i}].path"), &d.path)?;
        }
        let kvm = qemu::pick_accel(vm.accel, self.kvm_ok)
            .map_err(|m| ApiError::invalid("vm.accel", m))?;
        check_room(&spec.resources, guest_ram(vm))?;
        Ok(kvm)
    }

    /// The resources written to the cgroup: the spec's, with a default memory limit of the
    /// guest's RAM plus qemu's overhead.
    fn resources(spec: &ObjectSpec, vm: &VmSpec) -> Resources {
        let mut r = spec.resources.clone();
        if r.memory.is_none() {
            let guest = vm.max_memory.unwrap_or(vm.memory).0;
            r.memory = Some(Memory(guest + qemu::default_overhead(guest)));
        }
        r
    }

    /// Makes the cgroup and the folder and spawns qemu; removes both on failure.
    fn spawn(&self, id: &str, name: &str, spec: &ObjectSpec, kvm: bool) -> Result<u32, ApiError> {
        let vm = Self::section(spec)?;
        let cg = CgroupRef::Owned(id.to_string());
        let paths = self.paths(id);
        self.cgroups.create(&cg).map_err(cgroup_error)?;
        let res = self.spawn_in(&cg, &paths, name, vm, &Self::resources(spec, vm), kvm);
        if res.is_err() {
            self.cleanup(&cg, &paths);
        }
        res
    }

    fn spawn_in(
        &self,
        cg: &CgroupRef,
        paths: &Paths,
        name: &str,
        vm: &VmSpec,
        res: &Resources,
        kvm: bool,
    ) -> Result<u32, ApiError> {
        self.cgroups.apply(cg, res).map_err(cgroup_error)?;
        std::fs::create_dir_all(&paths.dir)
            .map_err(|e| ApiError::internal(format!("create {}: {e}", paths.dir.display())))?;
        for f in [paths.qmp(), paths.console_sock(), paths.pidfile()] {
            let _ = std::fs::remove_file(f);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths.qemu_log())
            .map_err(|e| ApiError::internal(format!("open {}: {e}", paths.qemu_log().display())))?;
        let err = log
            .try_clone()
            .map_err(|e| ApiError::internal(format!("qemu log: {e}")))?;
        let argv = qemu::argv(&self.qemu, name, vm, kvm, paths, self.qboot);
        tracing::debug!(?argv, "starting qemu");
        process::spawn(SpawnSpec {
            command: &argv,
            env: &BTreeMap::new(),
            cwd: None,
            stdout: log,
            stderr: err,
            cgroup_procs: self.cgroups.procs_files(cg),
        })
        .map_err(|e| match e {
            SpawnError::Exec { .. } => ApiError::unavailable(format!(
                "{e}: install qemu (Debian: apt-get install qemu-system-x86) or set NODEAGENT_QEMU"
            )),
            other => ApiError::internal(other.to_string()),
        })
    }

    fn cleanup(&self, cg: &CgroupRef, paths: &Paths) {
        if self.cgroups.exists(cg) {
            if let Err(e) = self.cgroups.remove(cg) {
                tracing::warn!(error = %e, "remove the vm's cgroup");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&paths.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %paths.dir.display(), error = %e, "remove the vm's folder");
            }
        }
    }

    fn running(
        id: &str,
        pid: u32,
        main: Main,
        paused: Option<bool>,
        (status, memory_actual): (String, Option<u64>),
    ) -> Observed {
        let obs = Observed::Running(Running {
            pid: Some(pid),
            cgroup: Some(CgroupRef::Owned(id.to_string())),
            net_pid: None,
            main: Some(main),
            paused,
            detail: json!({"pid": pid, "qmp_status": status}),
        });
        Observed::Noted(
            Box::new(obs),
            Box::new(Learned {
                qmp_status: status,
                memory_actual,
            }),
        )
    }
}

/// The most RAM the guest can have.
fn guest_ram(vm: &VmSpec) -> u64 {
    vm.max_memory.unwrap_or(vm.memory).0
}

/// Refuses a memory limit that leaves qemu no room over the guest's RAM (it would be
/// OOM-killed, nomad#27392).
fn check_room(r: &Resources, guest: u64) -> Result<(), ApiError> {
    match r.memory {
        Some(m) if m.0 < guest + MIN_ROOM => Err(ApiError::invalid(
            "resources.memory",
            format!(
                "{} bytes would OOM-kill qemu: leave at least 64Mi over the guest's {guest} bytes \
                 (unset, the agent leaves {} bytes)",
                m.0,
                qemu::default_overhead(guest)
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether `pid` is a live process (not a zombie) with that start time.
fn alive(procfs: &ProcFs, pid: u32, start_time: u64) -> bool {
    procfs
        .stat(pid)
        .is_ok_and(|s| s.start_time == start_time && s.state != 'Z' && s.state != 'X')
}

/// The last lines qemu wrote to its log, for an error message.
fn qemu_log_tail(paths: &Paths) -> String {
    let s = std::fs::read_to_string(paths.qemu_log()).unwrap_or_default();
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "qemu wrote nothing".into()
    } else {
        tail
    }
}

/// Off the loop: qemu answers QMP and says `running`, and the console shows `wait_text`.
async fn wait_running(
    procfs: ProcFs,
    paths: Paths,
    pid: u32,
    start_time: u64,
    wait_text: Option<String>,
) -> Result<(String, Option<u64>), ApiError> {
    let gone = || {
        ApiError::invalid(
            "vm",
            format!("qemu exited while starting: {}", qemu_log_tail(&paths)),
        )
    };
    let t0 = Instant::now();
    let mut q = loop {
        if !alive(&procfs, pid, start_time) {
            return Err(gone());
        }
        if paths.qmp().exists() {
            match qmp::Qmp::connect(&paths.qmp(), QMP_TIMEOUT).await {
                Ok(q) => break q,
                Err(e) if t0.elapsed() > QMP_TIMEOUT => {
                    return Err(ApiError::internal(format!("qemu started, but {e}")))
                }
                Err(_) => {}
            }
        } else if t0.elapsed() > QMP_TIMEOUT {
            return Err(ApiError::internal(format!(
                "qemu did not open {} within {QMP_TIMEOUT:?}",
                paths.qmp().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = q
        .status()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if status != "running" {
        return Err(ApiError::internal(format!(
            "qemu started, but QMP says the guest is {status}"
        )));
    }
    let actual = balloon_actual(&mut q).await;
    drop(q);
    if let Some(text) = wait_text {
        let t0 = Instant::now();
        loop {
            let seen = std::fs::read(paths.console_log())
                .map(|b| String::from_utf8_lossy(&b).contains(&text))
                .unwrap_or(false);
            if seen {
                break;
            }
            if !alive(&procfs, pid, start_time) {
                return Err(gone());
            }
            if t0.elapsed() > CONSOLE_TIMEOUT {
                return Err(ApiError::invalid(
                    "vm.wait_for.console",
                    format!("the console did not show {text:?} within {CONSOLE_TIMEOUT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((status, actual))
}

/// The guest-visible RAM by `query-balloon`; `None` without a balloon device.
async fn balloon_actual(q: &mut qmp::Qmp) -> Option<u64> {
    q.execute("query-balloon", None)
        .await
        .ok()
        .and_then(|v| v.get("actual").and_then(serde_json::Value::as_u64))
}

/// Kills a qemu that failed to start and reaps it (it is our child).
fn kill_and_reap(pid: u32) {
    let _ = process::signal(pid, libc::SIGKILL);
    for _ in 0..200 {
        if process::reap(pid).is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One QMP command on a fresh connection.
async fn qmp_once(path: PathBuf, cmd: &'static str) -> Result<(), qmp::QmpError> {
    let mut q = qmp::Qmp::connect(&path, Duration::from_secs(2)).await?;
    q.execute(cmd, None).await.map(|_| ())
}

impl KindDriver for VmKind {
    fn kind(&self) -> Kind {
        Kind::Vm
    }

    /// `sync`: a change of `vm.memory` reaches the guest through the balloon, off the loop.
    fn caps(&self) -> Caps {
        Caps {
            sync: true,
            ..Caps::default()
        }
    }

    /// In place: `vm.memory`, by the balloon, between 64Mi and the boot RAM. Everything else
    /// is refused, naming the field.
    fn patch_section(
        &self,
        obj: &Object,
        changes: &serde_json::Value,
    ) -> Result<nodeagent_types::KindSpec, ApiError> {
        let mut vm = Self::section(&obj.spec)?.clone();
        let Some(m) = changes.as_object() else {
            return Err(ApiError::invalid("vm", "give the fields to change"));
        };
        for (k, v) in m {
            if k != "memory" {
                return Err(ApiError::invalid(
                    format!("vm.{k}"),
                    "cannot be changed in place (in place: `memory`, by the balloon)",
                ));
            }
            let mem: Memory = serde_json::from_value(v.clone())
                .map_err(|e| ApiError::invalid("vm.memory", e.to_string()))?;
            if !vm.balloon {
                return Err(ApiError::invalid(
                    "vm.memory",
                    "this vm has no balloon (create it with `balloon: true`)",
                ));
            }
            let boot = self.guests.get(&obj.id).map_or(vm.memory.0, |g| g.boot_ram);
            if mem.0 < MIN_BALLOON || mem.0 > boot {
                return Err(ApiError::invalid(
                    "vm.memory",
                    format!(
                        "the balloon gives the guest 64Mi to its boot RAM ({boot} bytes); \
                         growing past it (virtio-mem) is not supported yet"
                    ),
                ));
            }
            vm.memory = mem;
        }
        Ok(vm.into())
    }

    /// Sets the balloon to `vm.memory` when it changed, and waits (up to 10 s) for the guest to
    /// give the memory back or take it, as `query-balloon` reports.
    fn sync(
        &mut self,
        id: &str,
        obj: &Object,
        _cg: Option<&CgroupRef>,
    ) -> Option<super::Op<Result<(), ApiError>>> {
        let target = Self::section(&obj.spec).ok()?.memory.0;
        let qmp_path = self.paths(id).qmp();
        let g = self.guests.get_mut(id)?;
        let now = g.balloon_target.unwrap_or(g.boot_ram);
        let live = matches!(obj.status, Status::Running | Status::Paused);
        if target == now || !live {
            g.sending = None;
            return Some(Box::pin(async { Ok(()) }));
        }
        g.sending = Some(target);
        Some(Box::pin(async move {
            let connect = || async {
                qmp::Qmp::connect(&qmp_path, QMP_TIMEOUT)
                    .await
                    .map_err(|e| ApiError::unavailable(e.to_string()))
            };
            connect()
                .await?
                .execute("balloon", Some(json!({ "value": target })))
                .await
                .map_err(|e| ApiError::invalid("vm.memory", e.to_string()))?;
            // A fresh connection per look: qemu serves one QMP client at a time, and a pause
            // (QMP `stop` from the loop) must not wait behind this one.
            let t0 = Instant::now();
            loop {
                if balloon_actual(&mut connect().await?).await == Some(target) {
                    return Ok(());
                }
                if t0.elapsed() > BALLOON_WAIT {
                    return Err(ApiError::unavailable(format!(
                        "the guest did not reach {target} bytes within {BALLOON_WAIT:?} \
                         (the balloon keeps trying)"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }))
    }

    fn synced(&mut self, id: &str, ok: bool) {
        if let Some(g) = self.guests.get_mut(id) {
            if let Some(t) = g.sending.take() {
                // Sent either way: the guest moves toward it.
                g.balloon_target = Some(t);
                if ok {
                    g.memory_actual = Some(t);
                }
            }
        }
    }

    fn sync_state(&self, obj: &mut Object, state: SyncState, msg: Option<String>) {
        if obj.vm.is_none() {
            self.describe(obj);
        }
        if let Some(v) = obj.vm.as_mut() {
            v.sync = state;
            v.sync_message = msg;
            if let Some(g) = self.guests.get(&obj.id) {
                v.memory_actual = g.memory_actual;
            }
        }
    }

    /// `policy.vm_paths`: the files a guest may boot and attach (403 naming the field).
    fn admit(&self, spec: &ObjectSpec, policy: &crate::policy::Policy) -> Result<(), ApiError> {
        match spec.section::<VmSpec>() {
            Some(v) => policy.check_vm(v),
            None => Ok(()),
        }
    }

    /// Phase one: files, accelerator, memory room; no side effect.
    fn prepare(&mut self, _id: &str, spec: &ObjectSpec) -> Step<Result<Prepared, ApiError>> {
        Step::Now(self.check(spec).map(|kvm| Box::new(kvm) as Prepared))
    }

    fn start(
        &mut self,
        id: &str,
        spec: &ObjectSpec,
        prepared: Prepared,
    ) -> Step<Result<Observed, ApiError>> {
        let kvm = prepared.downcast::<bool>().map(|b| *b).unwrap_or(false);
        let pid = match self.spawn(id, &spec.name, spec, kvm) {
            Ok(p) => p,
            Err(e) => return Step::Now(Err(e)),
        };
        let start_time = self.procfs.stat(pid).map(|s| s.start_time).unwrap_or(0);
        self.guests.insert(
            id.to_string(),
            Guest {
                pid,
                start_time,
                kvm,
                qmp_status: "starting".into(),
                memory_actual: None,
                guest_ram: Self::section(spec).map_or(0, guest_ram),
                boot_ram: Self::section(spec).map_or(0, |v| v.memory.0),
                balloon_target: None,
                sending: None,
                powerdown_at: None,
                quit_at: None,
                last_press: None,
            },
        );
        let wait_text = Self::section(spec)
            .ok()
            .and_then(|v| v.wait_for.as_ref().map(|w| w.console.clone()));
        let (procfs, paths, cgroups, id) = (
            self.procfs.clone(),
            self.paths(id),
            self.cgroups.clone(),
            id.to_string(),
        );
        Step::later(async move {
            match wait_running(procfs, paths.clone(), pid, start_time, wait_text).await {
                Ok(status) => Ok(Self::running(&id, pid, Main::Child(pid), None, status)),
                Err(e) => {
                    kill_and_reap(pid);
                    let cg = CgroupRef::Owned(id.clone());
                    for _ in 0..100 {
                        if cgroups.procs(&cg).map(|p| p.is_empty()).unwrap_or(true) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let _ = cgroups.remove(&cg);
                    let _ = std::fs::remove_dir_all(&paths.dir);
                    Err(e)
                }
            }
        })
    }

    fn note(&mut self, id: &str, note: KindMsg) {
        if let (Ok(l), Some(g)) = (note.downcast::<Learned>(), self.guests.get_mut(id)) {
            g.qmp_status = l.qmp_status;
            if l.memory_actual.is_some() {
                g.memory_actual = l.memory_actual;
            }
        }
    }

    fn created_event(&self, obj: &Object) -> (String, serde_json::Value) {
        let g = self.guests.get(&obj.id);
        (
            format!("created vm {}", obj.name),
            json!({"pid": g.map(|g| g.pid), "accel": g.map(|g| if g.kvm { "kvm" } else { "tcg" })}),
        )
    }

    fn describe(&self, obj: &mut Object) {
        let paths = self.paths(&obj.id);
        let g = self.guests.get(&obj.id);
        obj.stdout_path = Some(paths.console_log().display().to_string());
        obj.stderr_path = Some(paths.qemu_log().display().to_string());
        obj.vm = Some(VmStatus {
            accel_used: match g {
                Some(g) if g.kvm => "kvm".into(),
                Some(_) => "tcg".into(),
                None => obj
                    .vm
                    .as_ref()
                    .map(|v| v.accel_used.clone())
                    .unwrap_or_default(),
            },
            qmp_status: g.map(|g| g.qmp_status.clone()).unwrap_or_default(),
            console_path: paths.console_log().display().to_string(),
            qmp_path: paths.qmp().display().to_string(),
            memory_actual: g.and_then(|g| g.memory_actual),
            sync: obj.vm.as_ref().map(|v| v.sync).unwrap_or_default(),
            sync_message: obj.vm.as_ref().and_then(|v| v.sync_message.clone()),
        });
    }

    /// A PATCH of `resources.memory` may not OOM-kill qemu either.
    fn before_write(&self, cg: &CgroupRef, r: &Resources) -> Result<(), ApiError> {
        let CgroupRef::Owned(id) = cg else {
            return Ok(());
        };
        match self.guests.get(id) {
            Some(g) => check_room(r, g.guest_ram),
            None => Ok(()),
        }
    }

    /// QMP `stop`/`cont` rather than the freezer: qemu keeps serving QMP and its console while
    /// the vCPUs are stopped (a frozen qemu answers nothing, so a delete or a re-attachment of
    /// a paused VM would hang), and the guest's clock stops with its vCPUs.
    fn pause(&self, id: &str, _obj: &Object, paused: bool) -> Option<Result<(), ApiError>> {
        let cmd = if paused { "stop" } else { "cont" };
        Some(
            qmp::execute_blocking(&self.paths(id).qmp(), cmd, PAUSE_TIMEOUT)
                .map(|_| ())
                .map_err(|e| ApiError::unavailable(e.to_string())),
        )
    }

    /// `system_powerdown` first (after thawing and `cont` if paused), up to `shutdown_grace`;
    /// then `quit`; then SIGKILL. Done once qemu is gone.
    fn stop(
        &mut self,
        id: &str,
        obj: &Object,
        cg: Option<&CgroupRef>,
        ctx: StopCtx,
    ) -> Step<Result<Progress, ApiError>> {
        if !ctx.main_alive {
            // Anything left in the object's own cgroup is ours (a qemu started before a restart
            // whose handle was never stored): it goes too.
            let left = cg
                .and_then(|c| self.cgroups.procs(c).ok())
                .unwrap_or_default();
            if left.is_empty() || ctx.mode == StopMode::Release {
                return Step::Now(Ok(Progress::Done));
            }
            for p in left {
                let _ = process::signal(p, libc::SIGKILL);
            }
            return Step::Now(Ok(Progress::Requeue(STOP_POLL)));
        }
        let Some(pid) = obj.pid else {
            return Step::Now(Ok(Progress::Done));
        };
        let grace = Self::section(&obj.spec)
            .ok()
            .and_then(|v| v.shutdown_grace)
            .map_or(self.grace, |d| d.as_std());
        let qmp_path = self.paths(id).qmp();
        let Some(g) = self.guests.get_mut(id) else {
            let _ = process::signal(pid, libc::SIGKILL);
            return Step::Now(Ok(Progress::Requeue(STOP_POLL)));
        };
        if ctx.mode == StopMode::Release {
            return Step::Now(Ok(Progress::Done));
        }
        let now = Instant::now();
        match (g.powerdown_at, g.quit_at) {
            (None, _) => {
                g.powerdown_at = Some(now);
                g.last_press = Some(now);
                if let Some(cg) = cg.filter(|_| ctx.paused) {
                    // Paused by QMP, not frozen; a freezer set by hand would block the stop.
                    let _ = self.cgroups.freeze(cg, false);
                }
                let paused = ctx.paused;
                Step::later(async move {
                    if paused {
                        let _ = qmp_once(qmp_path.clone(), "cont").await;
                    }
                    if let Err(e) = qmp_once(qmp_path, "system_powerdown").await {
                        tracing::warn!(error = %e, "system_powerdown; qemu gets quit after the grace");
                    }
                    Ok(Progress::Requeue(STOP_POLL))
                })
            }
            (Some(t), None) if now.duration_since(t) >= grace || ctx.past_grace => {
                g.quit_at = Some(now);
                Step::later(async move {
                    if let Err(e) = qmp_once(qmp_path, "quit").await {
                        tracing::warn!(error = %e, "quit; qemu gets SIGKILL");
                        let _ = process::signal(pid, libc::SIGKILL);
                    }
                    Ok(Progress::Requeue(STOP_POLL))
                })
            }
            // A guest still booting has no ACPI handler yet and drops the power button:
            // press it again every second of the grace.
            (Some(_), None)
                if g.last_press
                    .is_none_or(|p| now.duration_since(p) >= POWERDOWN_REPEAT) =>
            {
                g.last_press = Some(now);
                Step::later(async move {
                    let _ = qmp_once(qmp_path, "system_powerdown").await;
                    Ok(Progress::Requeue(STOP_POLL))
                })
            }
            (Some(_), Some(q)) if now.duration_since(q) >= QUIT_GRACE => {
                let _ = process::signal(pid, libc::SIGKILL);
                Step::Now(Ok(Progress::Requeue(STOP_POLL)))
            }
            _ => Step::Now(Ok(Progress::Requeue(STOP_POLL))),
        }
    }

    /// Removes the cgroup and the guest's folder (console capture, sockets, pidfile).
    fn forget(&mut self, id: &str, _obj: &Object, cg: Option<&CgroupRef>) {
        self.guests.remove(id);
        let cg = cg
            .cloned()
            .unwrap_or_else(|| CgroupRef::Owned(id.to_string()));
        self.cleanup(&cg, &self.paths(id));
    }

    /// The same qemu only if the pid has the start time recorded, and its QMP socket answers.
    fn recover(
        &mut self,
        obj: &Object,
        handle: Option<&serde_json::Value>,
    ) -> Step<Result<Observed, ApiError>> {
        if !obj.status.is_live() {
            return Step::Now(Ok(Observed::Unchanged));
        }
        let get = |k: &str| handle.and_then(|h| h.get(k)).and_then(|v| v.as_u64());
        let paths = self.paths(&obj.id);
        // The pidfile names the qemu of this folder (the stored pid is a check of it).
        let pidfile = std::fs::read_to_string(paths.pidfile())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let pid = obj.pid.or(pidfile);
        let (Some(pid), Some(st)) = (pid, get("pid_start")) else {
            // The agent died between spawning qemu and storing its handle: a qemu in the
            // object's own cgroup is ours and half-started; it goes.
            let cg = CgroupRef::Owned(obj.id.clone());
            for p in self.cgroups.procs(&cg).unwrap_or_default() {
                let _ = process::signal(p, libc::SIGKILL);
            }
            return Step::Now(Ok(Observed::Failed {
                message: "the agent restarted while qemu was starting".into(),
            }));
        };
        let kvm = handle
            .and_then(|h| h.get("kvm"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if pidfile.is_some_and(|p| p != pid) || !alive(&self.procfs, pid, st) {
            return Step::Now(Ok(Observed::Stopped(Stopped {
                status: Status::Exited,
                exit_code: None,
                exit_signal: None,
                message: format!("qemu {pid} exited while the agent was down (exit code unknown)"),
                exit_event: true,
                idle: false,
                restartable: false,
                detail: json!({"pid": pid}),
            })));
        }
        self.guests.insert(
            obj.id.clone(),
            Guest {
                pid,
                start_time: st,
                kvm,
                qmp_status: String::new(),
                memory_actual: None,
                guest_ram: Self::section(&obj.spec).map_or(0, guest_ram),
                boot_ram: handle
                    .and_then(|h| h.get("boot_ram"))
                    .and_then(|v| v.as_u64())
                    .unwrap_or_else(|| Self::section(&obj.spec).map_or(0, |v| v.memory.0)),
                balloon_target: handle
                    .and_then(|h| h.get("balloon_target"))
                    .and_then(|v| v.as_u64()),
                sending: None,
                powerdown_at: None,
                quit_at: None,
                last_press: None,
            },
        );
        let id = obj.id.clone();
        Step::later(async move {
            let (status, actual) = match qmp::Qmp::connect(&paths.qmp(), QMP_TIMEOUT).await {
                Ok(mut q) => (
                    q.status().await.unwrap_or_else(|_| "unknown".into()),
                    balloon_actual(&mut q).await,
                ),
                Err(e) => {
                    return Ok(Observed::Gone {
                        message: format!("qemu {pid} runs, but {e}"),
                        detail: json!({"pid": pid}),
                    })
                }
            };
            tracing::info!(id, pid, status, "re-attached to qemu");
            // QMP's view of paused wins (a `stop` is what pauses a VM).
            let paused = status == "paused";
            Ok(Self::running(
                &id,
                pid,
                Main::Foreign {
                    pid,
                    start_time: st,
                },
                Some(paused),
                (status, actual),
            ))
        })
    }

    fn handle(&mut self, obj: &Object) -> Option<serde_json::Value> {
        let g = self.guests.get(&obj.id)?;
        Some(json!({
            "pid": g.pid,
            "pid_start": g.start_time,
            "kvm": g.kvm,
            "boot_ram": g.boot_ram,
            "balloon_target": g.balloon_target,
        }))
    }

    fn stops_at_shutdown(&self) -> bool {
        false
    }
}
