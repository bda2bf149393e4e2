//! The `cgroup` kind: adopts running pids (moved into a cgroup the agent creates, and moved back
//! where they came from on delete) or an existing cgroup path (controlled where it is, never
//! removed). The workload is not the agent's: its end is found by the once-a-second
//! [`KindDriver::poll`], from the latest sample where it can tell.

mod manager;

pub use manager::{Adopted, CgroupKindManager, Origin};

use super::{
    Caps, KindDriver, KindEnv, Latest, Observed, Prepared, Progress, Running, Step, StopCtx,
    Stopped,
};
use crate::policy::Policy;
use nodeagent_drivers::cgroup::{CgroupManager, CgroupRef, Cgroups};
use nodeagent_types::{ApiError, CgroupSpec, Kind, Object, ObjectSpec, Status};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

pub struct CgroupKind {
    mgr: CgroupKindManager,
    cgroups: Arc<Cgroups>,
    /// What each adoption did, so that the delete can undo it.
    adopted: HashMap<String, Adopted>,
}

impl CgroupKind {
    pub fn new(env: &KindEnv) -> CgroupKind {
        CgroupKind {
            mgr: CgroupKindManager::new(
                env.cgroups.clone(),
                env.procfs.clone(),
                env.cgroup_root.clone(),
            ),
            cgroups: env.cgroups.clone(),
            adopted: HashMap::new(),
        }
    }

    /// The cgroup of a stored object: its own path, or the agent's leaf for adopted pids.
    fn cgroup_of(obj: &Object) -> CgroupRef {
        let external = obj
            .spec
            .section::<CgroupSpec>()
            .is_some_and(|c| c.path.is_some());
        match (&obj.cgroup, external) {
            (Some(p), true) => CgroupRef::External(p.clone()),
            _ => CgroupRef::Owned(obj.id.clone()),
        }
    }
}

impl KindDriver for CgroupKind {
    fn kind(&self) -> Kind {
        Kind::Cgroup
    }

    fn caps(&self) -> Caps {
        Caps {
            poll: true,
            ..Caps::default()
        }
    }

    fn admit(&self, spec: &ObjectSpec, policy: &Policy) -> Result<(), ApiError> {
        let Some(c) = spec.section::<CgroupSpec>() else {
            return Ok(());
        };
        if let Some(path) = &c.path {
            policy.check_cgroup_path(path)?;
        }
        if let Some(pids) = &c.pids {
            policy.check_pids(pids)?;
        }
        Ok(())
    }

    fn start(
        &mut self,
        id: &str,
        spec: &ObjectSpec,
        _prepared: Prepared,
    ) -> Step<Result<Observed, ApiError>> {
        let a = match self.mgr.adopt(id, spec) {
            Ok(a) => a,
            Err(e) => return Step::Now(Err(e)),
        };
        let running = Running {
            pid: None,
            cgroup: Some(a.cg.clone()),
            net_pid: a.origins.first().map(|o| o.0),
            main: None,
            paused: None,
            detail: json!({}),
        };
        self.adopted.insert(id.to_string(), a);
        Step::Now(Ok(Observed::Running(running)))
    }

    fn created_event(&self, obj: &Object) -> (String, serde_json::Value) {
        (
            format!("created cgroup {}", obj.name),
            json!({"pid": obj.pid}),
        )
    }

    /// Adopted pids that have all exited, or an adopted path that vanished. Reads the latest
    /// sample (no I/O), and touches cgroupfs only when the sample cannot tell: no pids counter,
    /// or samples that stopped.
    fn poll(
        &mut self,
        _id: &str,
        _obj: &Object,
        cg: Option<&CgroupRef>,
        latest: Latest,
    ) -> Observed {
        let Some(cg) = cg else {
            return Observed::Unchanged;
        };
        let gone = match (cg, latest.pids) {
            (CgroupRef::External(_), _) => !latest.fresh && !self.cgroups.exists(cg),
            (CgroupRef::Owned(_), Some(pids)) if latest.fresh => pids == 0,
            (CgroupRef::Owned(_), _) => self.mgr.procs(cg).is_empty(),
        };
        if !gone {
            return Observed::Unchanged;
        }
        match cg {
            CgroupRef::External(p) => Observed::Gone {
                message: format!("cgroup {p} no longer exists"),
                detail: json!({}),
            },
            CgroupRef::Owned(_) => Observed::Stopped(Stopped {
                status: Status::Exited,
                exit_code: None,
                exit_signal: None,
                message: "every adopted process has exited".into(),
                exit_event: true,
                idle: false,
                restartable: false,
                detail: json!({}),
            }),
        }
    }

    /// Nothing to stop: the workload is not the agent's. [`KindDriver::forget`] gives it back.
    fn stop(
        &mut self,
        _id: &str,
        _obj: &Object,
        _cg: Option<&CgroupRef>,
        _ctx: StopCtx,
    ) -> Step<Result<Progress, ApiError>> {
        Step::Now(Ok(Progress::Done))
    }

    fn forget(&mut self, id: &str, obj: &Object, _cg: Option<&CgroupRef>) {
        let a = self.adopted.remove(id).unwrap_or_else(|| Adopted {
            cg: Self::cgroup_of(obj),
            origins: Vec::new(),
        });
        self.mgr.release(&a);
    }

    fn recover(
        &mut self,
        obj: &Object,
        handle: Option<&serde_json::Value>,
    ) -> Step<Result<Observed, ApiError>> {
        let cg = Self::cgroup_of(obj);
        // The pids' cgroups before adoption, so that a delete after the restart still moves
        // them back (stores written before the handle existed have none: they stay).
        let origins: Vec<(u32, Origin)> = handle
            .and_then(|h| h.get("origins"))
            .and_then(|o| serde_json::from_value(o.clone()).ok())
            .unwrap_or_default();
        self.adopted.insert(
            obj.id.clone(),
            Adopted {
                cg: cg.clone(),
                origins,
            },
        );
        if !obj.status.is_live() {
            return Step::Now(Ok(Observed::Unchanged));
        }
        if !self.cgroups.exists(&cg) {
            return Step::Now(Ok(Observed::Gone {
                message: format!(
                    "cgroup {} vanished while the agent was down",
                    obj.cgroup.as_deref().unwrap_or("?")
                ),
                detail: json!({}),
            }));
        }
        Step::Now(Ok(Observed::Running(Running {
            pid: None,
            cgroup: Some(cg),
            net_pid: None,
            main: None,
            paused: Some(obj.paused),
            detail: json!({}),
        })))
    }

    fn handle(&mut self, obj: &Object) -> Option<serde_json::Value> {
        let a = self.adopted.get(&obj.id)?;
        if a.origins.is_empty() {
            return None;
        }
        Some(json!({"origins": a.origins}))
    }
}
