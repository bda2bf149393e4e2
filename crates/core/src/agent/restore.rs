//! Durable state: write-through of the registry to the store, and the reconciliation of the
//! stored objects with what runs after a restart (`kill -9`, crash, or SIGTERM alike).

use super::container::ContainerWork;
use super::{Agent, Entry, Internal, Work};
use crate::store::{Batch, Record};
use nodeagent_drivers::cgroup::{CgroupManager, CgroupRef};
use nodeagent_engine::collector::{Command, Target};
use nodeagent_engine::managers::cgroup::Adopted;
use nodeagent_engine::Series;
use nodeagent_types::{EventKind, Kind, Object, RestartPolicy, Status, Timestamp, HOST_ID};
use serde_json::json;
use std::hash::{Hash, Hasher};
use std::time::Instant;

/// Event sequence numbers are reserved in the store this many at a time...
const SEQ_BLOCK: u64 = 10_000;
/// ...and a new block once fewer than this are left.
const SEQ_MARGIN: u64 = 1_000;

impl Agent {
    /// Reserves the next block of event sequence numbers in the store, so that events served
    /// before the loop writes them (SSE, `?since=`) never have their numbers reused after a
    /// `kill -9`: the next start continues after the reservation (a clean stop resets it).
    pub(super) fn reserve_seqs(&mut self) -> Result<(), crate::store::StoreError> {
        let upto = self.shared.events.next_seq() - 1 + SEQ_BLOCK;
        self.store.reserve_events(upto)?;
        self.events_reserved = upto;
        Ok(())
    }

    /// Writes what changed since the last call (the objects marked dirty, deletions, new
    /// events and request ids) as one batch on the store's writer thread. `immediate` (or any
    /// object created or deleted, or request id recorded) waits until it is synced to disk.
    pub(super) fn persist(&mut self, immediate: bool) {
        let mut batch = Batch::default();
        let mut new_object = false;
        for id in self.objects.take_dirty() {
            if id == HOST_ID {
                continue;
            }
            let Some(e) = self.objects.get(&id) else {
                if self.persisted.remove(&id).is_some() {
                    self.pid_starts.remove(&id);
                    self.foreign.remove(&id);
                    batch.delete.push(id);
                }
                continue;
            };
            let pid_start = match (e.obj.kind, e.obj.pid) {
                (Kind::Process, Some(pid)) => match self.pid_starts.get(&id) {
                    Some(&(p, st)) if p == pid => Some(st),
                    _ => {
                        let st = self.procfs.stat(pid).ok().map(|s| s.start_time);
                        if let Some(st) = st {
                            self.pid_starts.insert(id.clone(), (pid, st));
                        }
                        st
                    }
                },
                _ => None,
            };
            let bytes = Record::encode(&e.obj, pid_start);
            let hash = hash_bytes(&bytes);
            match self.persisted.insert(id.clone(), hash) {
                Some(old) if old == hash => continue,
                Some(_) => {}
                None => new_object = true,
            }
            batch.put.push((id, bytes));
        }
        if self.shared.events.next_seq() + SEQ_MARGIN > self.events_reserved {
            if let Err(e) = self.reserve_seqs() {
                tracing::error!(error = %e, "reserving event sequence numbers");
            }
        }
        batch.events = self.shared.events.since(Some(self.events_persisted));
        batch.requests = std::mem::take(&mut self.pending_requests);
        let new_object = new_object || !batch.requests.is_empty();
        if let Some(last) = batch.events.last() {
            self.events_persisted = last.seq;
        }
        let immediate = immediate || new_object || !batch.delete.is_empty();
        if !immediate {
            if !batch.is_empty() {
                self.writer.submit(batch);
            }
            return;
        }
        // The writer keeps a failed batch and retries it; the error is logged there.
        let _ = self.writer.write_sync(batch);
    }

    /// Takes one stored object back into the registry and reconciles it with what runs.
    pub(super) fn restore(&mut self, rec: Record) {
        let obj = rec.object;
        let id = obj.id.clone();
        self.names.insert(obj.name.clone(), id.clone());
        match obj.kind {
            Kind::Process => self.restore_process(obj, rec.pid_start),
            Kind::Cgroup => self.restore_cgroup(obj),
            Kind::Container => self.restore_container(obj),
            Kind::Host => {
                self.names.remove(&obj.name);
            }
        }
    }

    fn insert(&mut self, obj: Object, cg: Option<CgroupRef>, work: Work) {
        self.objects.insert(
            obj.id.clone(),
            Entry {
                obj,
                cg,
                work,
                deleting: None,
            },
        );
    }

    /// Starts sampling a restored object and its report tasks again.
    fn resume_collection(&mut self, obj: &Object, target: Target) {
        let series = self.shared.series.insert(Series::new(
            obj.id.clone(),
            obj.name.clone(),
            obj.kind,
            self.cfg.ring_size,
        ));
        self.collector.send(Command::Add {
            series,
            target,
            interval: obj.spec.collect.interval.as_std(),
        });
        self.resume_push(obj);
    }

    pub(super) fn resume_push(&self, obj: &Object) {
        for (sink, interval) in &obj.push {
            match self.sinks.get(sink) {
                Some(h) => self.collector.send(Command::PushOn {
                    id: obj.id.clone(),
                    sink: h.clone(),
                    interval: interval.0,
                }),
                None => {
                    tracing::warn!(id = %obj.id, sink, "report task to a sink no longer configured")
                }
            }
        }
    }

    /// Marks a restored object whose workload is gone, with an event.
    fn gone(
        &mut self,
        mut obj: Object,
        status: Status,
        msg: String,
        cg: Option<CgroupRef>,
        work: Work,
    ) {
        obj.status = status;
        obj.paused = false;
        obj.message = Some(msg.clone());
        obj.updated_at = Timestamp::now();
        let kind = if status == Status::Lost {
            EventKind::Lost
        } else {
            EventKind::Exited
        };
        self.emit(
            kind,
            &obj,
            msg,
            json!({"exit_code": obj.exit_code, "while_agent_down": true}),
        );
        self.insert(obj, cg, work);
    }

    fn restore_process(&mut self, obj: Object, pid_start: Option<u64>) {
        let id = obj.id.clone();
        let cg = CgroupRef::Owned(id.clone());
        let idle = Work::Process {
            pid: None,
            started: Instant::now(),
            failures: 0,
        };
        if !obj.status.is_live() {
            self.insert(obj, Some(cg), idle);
            return;
        }
        // The same process only if the pid exists with the start time recorded: a recycled pid
        // has another start time and is never adopted.
        let same = match (obj.pid, pid_start) {
            (Some(pid), Some(st)) => self
                .procfs
                .stat(pid)
                .is_ok_and(|s| s.start_time == st && s.state != 'Z' && s.state != 'X'),
            _ => false,
        };
        if !same {
            let policy = obj
                .spec
                .section::<nodeagent_types::ProcessSpec>()
                .map_or(RestartPolicy::Never, |p| p.restart);
            let msg = match obj.pid {
                Some(p) => {
                    format!("process {p} exited while the agent was down (exit code unknown)")
                }
                None => "no process to adopt after the restart".to_string(),
            };
            let mut obj = obj;
            obj.pid = None;
            obj.exit_code = None;
            obj.exit_signal = None;
            self.gone(obj, Status::Exited, msg, Some(cg.clone()), idle);
            if policy == RestartPolicy::Never {
                return;
            }
            // Restarted in its cgroup, like any exit under its restart policy.
            if let Ok(reader) = self.cgroups.stat_reader(&cg) {
                let Some(e) = self.objects.get_mut(&id) else {
                    return;
                };
                e.obj.status = Status::Pending;
                let obj = e.obj.clone();
                self.resume_collection(
                    &obj,
                    Target::Cgroup {
                        reader,
                        net_pid: None,
                    },
                );
                let _ = self.internal_tx.send(Internal::Restart(id));
            }
            return;
        }
        let (Some(pid), Some(st)) = (obj.pid, pid_start) else {
            return;
        };
        match self.cgroups.stat_reader(&cg) {
            Ok(reader) => {
                self.foreign.insert(id.clone(), (pid, st));
                self.pid_starts.insert(id.clone(), (pid, st));
                self.resume_collection(
                    &obj,
                    Target::Cgroup {
                        reader,
                        net_pid: None,
                    },
                );
                tracing::info!(id = %id, pid, "re-adopted process");
                self.insert(
                    obj,
                    Some(cg),
                    Work::Process {
                        pid: Some(pid),
                        started: Instant::now(),
                        failures: 0,
                    },
                );
            }
            Err(e) => {
                // It runs, but its cgroup is gone: it is no longer under the agent's control.
                self.foreign.insert(id.clone(), (pid, st));
                self.gone(
                    obj,
                    Status::Lost,
                    format!("the process's cgroup cannot be read after the restart: {e}"),
                    Some(cg),
                    Work::Process {
                        pid: Some(pid),
                        started: Instant::now(),
                        failures: 0,
                    },
                );
            }
        }
    }

    fn restore_cgroup(&mut self, obj: Object) {
        let external = obj
            .spec
            .section::<nodeagent_types::CgroupSpec>()
            .is_some_and(|c| c.path.is_some());
        let cg = match (&obj.cgroup, external) {
            (Some(p), true) => CgroupRef::External(p.clone()),
            _ => CgroupRef::Owned(obj.id.clone()),
        };
        let adopted = Adopted {
            cg: cg.clone(),
            origins: Vec::new(),
        };
        if !obj.status.is_live() {
            self.insert(obj, Some(cg), Work::Adopted(adopted));
            return;
        }
        match self.cgroups.stat_reader(&cg) {
            Ok(reader) if self.cgroups.exists(&cg) => {
                self.resume_collection(
                    &obj,
                    Target::Cgroup {
                        reader,
                        net_pid: None,
                    },
                );
                self.insert(obj, Some(cg), Work::Adopted(adopted));
            }
            _ => {
                let msg = format!(
                    "cgroup {} vanished while the agent was down",
                    obj.cgroup.as_deref().unwrap_or("?")
                );
                self.gone(obj, Status::Lost, msg, Some(cg), Work::Adopted(adopted));
            }
        }
    }

    /// A container is found again by its Docker id (the agent labels its containers with
    /// `nodeagent.id`): an inspect through the usual machinery re-attaches its cgroup and
    /// resumes sampling, or marks it lost when Docker no longer has it.
    fn restore_container(&mut self, mut obj: Object) {
        let docker_id = obj.container.as_ref().map(|c| c.id.clone());
        let adopted = obj.container.as_ref().is_some_and(|c| c.adopted);
        let Some(docker_id) =
            docker_id.filter(|_| obj.status.is_live() || obj.status == Status::Exited)
        else {
            if obj.status.is_live() {
                // Never got as far as Docker: the create was cut short by the restart.
                obj.pid = None;
                self.gone(
                    obj,
                    Status::Failed,
                    "the agent restarted before the container was created".into(),
                    None,
                    Work::Container(ContainerWork::default()),
                );
            } else {
                self.insert(obj, None, Work::Container(ContainerWork::default()));
            }
            return;
        };
        let id = obj.id.clone();
        self.by_docker.insert(docker_id.clone(), id.clone());
        let work = ContainerWork::restored(docker_id.clone(), adopted, obj.pid);
        self.insert(obj, None, Work::Container(work));
        self.reinspect(&id, docker_id);
    }

    /// Re-adopted processes (not children): an exit is a pid gone from `/proc`, or one whose
    /// start time changed (recycled).
    pub(super) fn check_foreign(&mut self) {
        if self.foreign.is_empty() {
            return;
        }
        let gone: Vec<String> = self
            .foreign
            .iter()
            .filter(|(_, &(pid, st))| {
                !self
                    .procfs
                    .stat(pid)
                    .is_ok_and(|s| s.start_time == st && s.state != 'Z' && s.state != 'X')
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.foreign.remove(&id);
            let deleting = self.objects.get(&id).is_some_and(|e| e.deleting.is_some());
            if deleting {
                if let Some(Entry {
                    work: Work::Process { pid, .. },
                    ..
                }) = self.objects.get_mut(&id)
                {
                    *pid = None;
                }
                continue;
            }
            self.on_exit(&id, None);
        }
    }

    /// `stop_workloads`: SIGTERM to every process object, SIGKILL to what is left after at most
    /// 1 s (the shutdown has 2 s in all). They are then `exited` in the store, so the next
    /// start does not look for them. Containers are left to Docker.
    pub(super) async fn stop_processes(&mut self) {
        let targets: Vec<(String, CgroupRef, Option<u32>)> = self
            .objects
            .iter()
            .filter_map(|(id, e)| match (&e.work, &e.cg) {
                (Work::Process { pid, .. }, Some(cg)) if e.obj.status.is_live() => {
                    Some((id.clone(), cg.clone(), *pid))
                }
                _ => None,
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        for (_, cg, pid) in &targets {
            self.processes.signal_all(cg, *pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + self.cfg.stop_grace.min(std::time::Duration::from_secs(1));
        while Instant::now() < deadline
            && targets
                .iter()
                .any(|(_, cg, _)| !self.processes.is_empty(cg))
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for (id, cg, pid) in targets {
            if !self.processes.is_empty(&cg) {
                self.processes.signal_all(&cg, pid, libc::SIGKILL);
            }
            if let Some(p) = pid {
                let _ = nodeagent_drivers::process::reap(p);
            }
            self.foreign.remove(&id);
            if let Some(e) = self.objects.get_mut(&id) {
                if let Work::Process { pid, .. } = &mut e.work {
                    *pid = None;
                }
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
}

/// What [`Agent::persist`] remembers of an object's stored bytes, to skip rewriting it.
pub(super) fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}
