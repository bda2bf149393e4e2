//! The `process` kind: a command spawned into a cgroup of its own, its limits written before the
//! command runs, its output captured under the state dir. Everything is fast (a mkdir, a few
//! writes, one fork/exec), so every step answers [`Step::Now`].

mod manager;

pub use manager::{ProcessManager, Spawned};

use super::{
    Caps, KindDriver, KindEnv, Main, Observed, Prepared, Progress, Running, Step, StopCtx,
    StopMode, Stopped,
};
use crate::policy::Policy;
use nodeagent_drivers::cgroup::{CgroupManager, CgroupRef, Cgroups};
use nodeagent_drivers::procfs::ProcFs;
use nodeagent_types::{ApiError, Kind, Object, ObjectSpec, ProcessSpec, RestartPolicy, Status};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Re-asks a stop in progress this often (the processes had SIGTERM; the core reaps them).
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(20);

pub struct ProcessKind {
    mgr: ProcessManager,
    cgroups: Arc<Cgroups>,
    procfs: ProcFs,
    /// Start times of the main pids, by object id, for [`KindDriver::handle`].
    starts: HashMap<String, (u32, u64)>,
}

impl ProcessKind {
    pub fn new(env: &KindEnv) -> ProcessKind {
        ProcessKind {
            mgr: ProcessManager::new(env.cgroups.clone(), env.objects_dir.clone()),
            cgroups: env.cgroups.clone(),
            procfs: env.procfs.clone(),
            starts: HashMap::new(),
        }
    }

    fn running(cg: CgroupRef, sp: &Spawned) -> Observed {
        Observed::Running(Running {
            pid: Some(sp.pid),
            cgroup: Some(cg),
            net_pid: None,
            main: Some(Main::Child(sp.pid)),
            paused: None,
            detail: json!({"pid": sp.pid}),
        })
    }
}

impl KindDriver for ProcessKind {
    fn kind(&self) -> Kind {
        Kind::Process
    }

    fn caps(&self) -> Caps {
        Caps::default()
    }

    fn admit(&self, spec: &ObjectSpec, policy: &Policy) -> Result<(), ApiError> {
        match spec.section::<ProcessSpec>() {
            Some(p) => policy.check_process(&p.command, &p.env),
            None => Ok(()),
        }
    }

    fn start(
        &mut self,
        id: &str,
        spec: &ObjectSpec,
        _prepared: Prepared,
    ) -> Step<Result<Observed, ApiError>> {
        Step::Now(
            self.mgr
                .create(id, spec)
                .map(|(cg, sp)| Self::running(cg, &sp)),
        )
    }

    fn created_event(&self, obj: &Object) -> (String, serde_json::Value) {
        (
            format!("created process {}", obj.name),
            json!({"pid": obj.pid}),
        )
    }

    fn describe(&self, obj: &mut Object) {
        let (out, err) = self.mgr.log_paths(&obj.id);
        obj.stdout_path = Some(out.display().to_string());
        obj.stderr_path = Some(err.display().to_string());
    }

    fn restart_policy(&self, spec: &ObjectSpec) -> RestartPolicy {
        spec.section::<ProcessSpec>()
            .map_or(RestartPolicy::Never, |p| p.restart)
    }

    fn restart(&mut self, id: &str, obj: &Object) -> Step<Result<Observed, ApiError>> {
        let cg = CgroupRef::Owned(id.to_string());
        Step::Now(
            self.mgr
                .spawn(id, &cg, &obj.spec)
                .map(|sp| Self::running(cg, &sp)),
        )
    }

    /// SIGTERM to every process of the cgroup (thawed first: a frozen process cannot act on
    /// it), SIGKILL past the grace; done once the cgroup is empty and the main pid reaped.
    fn stop(
        &mut self,
        _id: &str,
        obj: &Object,
        cg: Option<&CgroupRef>,
        ctx: StopCtx,
    ) -> Step<Result<Progress, ApiError>> {
        let Some(cg) = cg else {
            return Step::Now(Ok(Progress::Done));
        };
        let main = obj.pid.filter(|_| ctx.main_alive);
        if ctx.mode == StopMode::Destroy && ctx.first {
            if ctx.paused {
                let _ = self.cgroups.freeze(cg, false);
            }
            self.mgr.signal_all(cg, main, libc::SIGTERM);
        }
        let empty = self.mgr.is_empty(cg);
        if empty && !ctx.main_alive {
            return Step::Now(Ok(Progress::Done));
        }
        if ctx.past_grace {
            self.mgr.signal_all(cg, main, libc::SIGKILL);
        }
        Step::Now(Ok(Progress::Requeue(STOP_POLL)))
    }

    /// Removes the object's cgroup (its own leaf, whether or not the object still held it:
    /// one restored as exited has it too) and its log folder: a deleted object's output goes
    /// with it (read it before the delete), so the state dir holds live objects only.
    fn forget(&mut self, id: &str, _obj: &Object, cg: Option<&CgroupRef>) {
        self.starts.remove(id);
        self.mgr.remove_logs(id);
        let cg = cg
            .cloned()
            .unwrap_or_else(|| CgroupRef::Owned(id.to_string()));
        if self.cgroups.exists(&cg) {
            if let Err(e) = self.mgr.remove(&cg) {
                tracing::warn!(id, error = %e, "remove cgroup");
            }
        }
    }

    /// The same process only if the pid exists with the start time recorded: a recycled pid
    /// has another start time and is never adopted. It is then no longer the agent's child.
    fn recover(
        &mut self,
        obj: &Object,
        handle: Option<&serde_json::Value>,
    ) -> Step<Result<Observed, ApiError>> {
        let cg = CgroupRef::Owned(obj.id.clone());
        if !obj.status.is_live() {
            return Step::Now(Ok(Observed::Unchanged));
        }
        let start_time = handle
            .and_then(|h| h.get("pid_start"))
            .and_then(|v| v.as_u64());
        let alive = |pid: u32, st: u64| {
            self.procfs
                .stat(pid)
                .is_ok_and(|s| s.start_time == st && s.state != 'Z' && s.state != 'X')
        };
        match (obj.pid, start_time) {
            (Some(pid), Some(st)) if alive(pid, st) => {
                self.starts.insert(obj.id.clone(), (pid, st));
                if !self.cgroups.exists(&cg) {
                    // It runs, but its cgroup is gone: it is no longer under the agent's control.
                    return Step::Now(Ok(Observed::Gone {
                        message: "the process's cgroup cannot be read after the restart".into(),
                        detail: json!({"pid": pid}),
                    }));
                }
                tracing::info!(id = %obj.id, pid, "re-adopted process");
                Step::Now(Ok(Observed::Running(Running {
                    pid: Some(pid),
                    cgroup: Some(cg),
                    net_pid: None,
                    main: Some(Main::Foreign {
                        pid,
                        start_time: st,
                    }),
                    paused: Some(obj.paused),
                    detail: json!({"pid": pid}),
                })))
            }
            (pid, _) => Step::Now(Ok(Observed::Stopped(Stopped {
                status: Status::Exited,
                exit_code: None,
                exit_signal: None,
                message: match pid {
                    Some(p) => {
                        format!("process {p} exited while the agent was down (exit code unknown)")
                    }
                    None => "no process to adopt after the restart".to_string(),
                },
                exit_event: true,
                idle: false,
                restartable: true,
                detail: json!({}),
            }))),
        }
    }

    /// The main pid's start time, read once per pid (the store asks on every change).
    fn handle(&mut self, obj: &Object) -> Option<serde_json::Value> {
        let pid = obj.pid?;
        let st = match self.starts.get(&obj.id) {
            Some(&(p, st)) if p == pid => st,
            _ => {
                let st = self.procfs.stat(pid).ok()?.start_time;
                self.starts.insert(obj.id.clone(), (pid, st));
                st
            }
        };
        Some(json!({"pid_start": st}))
    }

    fn stops_at_shutdown(&self) -> bool {
        true
    }
}
