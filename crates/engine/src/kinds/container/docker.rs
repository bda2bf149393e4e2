//! The Docker side of the `container` kind: containers run through the Docker Engine, controlled through their
//! cgroup files and brought in line with Docker afterwards.
//!
//! Everything here that talks to Docker is an `async fn` the core spawns as a task and whose
//! result comes back to the core as a message: a Docker call takes 10 to 300 ms, and the core's
//! event loop must never wait for one. What is instant (mapping a spec onto Docker's config,
//! finding a container's cgroup, writing it) is plain functions.
//!
//! The connection is lazy: [`ContainerManager::client`] connects on first use and remembers the
//! client, so an engine that starts after the agent is picked up by the next request, and one
//! that is absent costs a failed `connect(2)` per request (answered 503).

use crate::kinds::cgroup_error;
use nodeagent_drivers::cgroup::{CgroupManager, CgroupRef, Cgroups};
use nodeagent_drivers::docker::{
    BindMount, ContainerInfo, CreateConfig, Docker, DockerError, ResourceUpdate,
};
use nodeagent_drivers::procfs::ProcFs;
use nodeagent_types::{ApiError, ContainerSpec, ErrorCode, ObjectSpec, Resources};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Label with the object id on every container the agent creates.
pub const LABEL_ID: &str = "nodeagent.id";
/// Label with the object name on every container the agent creates.
pub const LABEL_NAME: &str = "nodeagent.name";
/// How long a connection attempt may take before the engine counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The CFS period the agent uses (the kernel's default), in µs.
const CFS_PERIOD_US: i64 = 100_000;
/// v1 reports "no limit" as the largest page-aligned `i64`; anything this large is that.
const V1_UNLIMITED: u64 = 1 << 62;

/// How Docker holds a container's CPU limit. Docker refuses to mix the two (a container created
/// with `--cpu-quota` cannot be updated with `NanoCpus` and the other way round), so an update
/// uses whichever the container already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuStyle {
    /// `NanoCpus` (`--cpus`): what the agent creates.
    #[default]
    Nano,
    /// `CpuQuota` + `CpuPeriod` (`--cpu-quota`): found on some adopted containers.
    Quota,
}

impl CpuStyle {
    /// The style of an existing container's stored config.
    pub fn of(info: &ContainerInfo) -> CpuStyle {
        let r = &info.resources;
        if r.nano_cpus.unwrap_or(0) == 0 && r.cpu_quota.unwrap_or(0) > 0 {
            CpuStyle::Quota
        } else {
            CpuStyle::Nano
        }
    }
}

/// Maps the agent's resources onto Docker's fields. Only the fields `r` sets are given, so an
/// update leaves the others as Docker has them.
///
/// - `cpu`: the CFS quota the fast path writes, `round(cpu × 100000)` µs per 100 ms, expressed
///   as `NanoCpus = quota × 10000` so that Docker derives exactly the same quota.
/// - `cpu_weight`: `CpuShares = weight × 1024 / 100` (at least 2), the fast path's v1 mapping.
/// - `memory`: `Memory`, with `MemorySwap = -1`. Docker refuses a memory limit above the
///   stored memory+swap limit; unlimited swap removes that trap and matches what the fast path
///   does (it writes `memory.limit_in_bytes` only, and lifts `memsw` where it is lower).
pub fn resource_update(r: &Resources, style: CpuStyle) -> ResourceUpdate {
    let mut u = ResourceUpdate::default();
    if let Some(cpu) = r.cpu {
        let quota = (cpu * CFS_PERIOD_US as f64).round().max(1.0) as i64;
        match style {
            CpuStyle::Nano => u.nano_cpus = Some(quota.saturating_mul(10_000)),
            CpuStyle::Quota => {
                u.cpu_quota = Some(quota);
                u.cpu_period = Some(CFS_PERIOD_US);
            }
        }
    }
    if let Some(w) = r.cpu_weight {
        let shares = (w.saturating_mul(1024) / 100).max(2);
        u.cpu_shares = Some(i64::try_from(shares).unwrap_or(i64::MAX));
    }
    if let Some(cs) = &r.cpuset {
        u.cpuset_cpus = Some(cs.0.clone());
    }
    if let Some(m) = r.memory {
        u.memory = Some(i64::try_from(m.0).unwrap_or(i64::MAX));
        u.memory_swap = Some(-1);
    }
    if let Some(p) = r.pids {
        u.pids_limit = Some(i64::try_from(p).unwrap_or(i64::MAX));
    }
    u
}

/// Docker's config for a new container of object `id`: the spec's image, command, env and
/// host-access fields as given, its resources as [`resource_update`] maps them, and the
/// labels `nodeagent.id` and `nodeagent.name` (over the spec's own labels, which are copied so
/// that `docker ps --filter label=...` finds the object's containers too).
pub fn create_config(id: &str, spec: &ObjectSpec) -> Result<CreateConfig, ApiError> {
    let c = container_spec(spec)?;
    let mut labels = spec.labels.clone();
    labels.insert(LABEL_ID.to_string(), id.to_string());
    labels.insert(LABEL_NAME.to_string(), spec.name.clone());
    Ok(CreateConfig {
        image: c.image.clone(),
        cmd: c.command.clone(),
        env: c.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        labels,
        resources: resource_update(&spec.resources, CpuStyle::Nano),
        privileged: c.privileged,
        network_mode: Some(c.network.as_str().to_string()),
        pid_mode: c.host_pid.then(|| "host".to_string()),
        mounts: c
            .mounts
            .iter()
            .map(|m| BindMount {
                source: m.source.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
            })
            .collect(),
    })
}

fn container_spec(spec: &ObjectSpec) -> Result<&ContainerSpec, ApiError> {
    spec.section::<ContainerSpec>()
        .ok_or_else(|| ApiError::invalid("container", "kind container needs a `container` section"))
}

/// Maps a Docker error that has no more specific meaning in its context: an absent engine is
/// 503, a refused value 400 (naming `field`), a state conflict 409, the rest 500.
pub fn docker_error(e: DockerError, field: &str) -> ApiError {
    match e {
        DockerError::Unreachable { .. } => unreachable_error(&e),
        DockerError::Invalid { message } => ApiError::invalid(field, message),
        DockerError::Conflict { message } => ApiError::precondition(message),
        DockerError::NotFound { message } => ApiError::new(ErrorCode::NotFound, message),
        other => ApiError::internal(format!("docker: {other}")),
    }
}

fn unreachable_error(e: &DockerError) -> ApiError {
    ApiError::unavailable(format!(
        "{e}; the container kind needs a running Docker engine (see --docker-socket)"
    ))
}

/// Docker's rule for container names (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`): object names are a subset,
/// except that Docker wants at least two characters.
fn check_docker_name(name: &str) -> Result<(), ApiError> {
    if name.len() < 2 {
        return Err(ApiError::invalid(
            "name",
            "a container's name needs at least 2 characters (Docker's rule)",
        ));
    }
    Ok(())
}

/// Phase one of a create, answered before the 202: what can be refused at once.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub docker: Docker,
    /// The image is missing locally and the spec asks to pull it.
    pub pull: bool,
}

/// The side of the agent that talks to Docker. Cheap to clone.
#[derive(Clone)]
pub struct ContainerManager {
    inner: Arc<Inner>,
}

struct Inner {
    /// `unix:///path`.
    socket: String,
    client: tokio::sync::Mutex<Option<Docker>>,
    cgroups: Arc<Cgroups>,
    procfs: ProcFs,
}

impl ContainerManager {
    /// A manager for the engine at `socket` (a path or `unix://` URI). Does not connect.
    pub fn new(socket: &str, cgroups: Arc<Cgroups>, procfs: ProcFs) -> Self {
        ContainerManager {
            inner: Arc::new(Inner {
                socket: nodeagent_drivers::docker::socket_uri(socket),
                client: tokio::sync::Mutex::new(None),
                cgroups,
                procfs,
            }),
        }
    }

    /// `unix:///path` of the engine.
    pub fn socket(&self) -> &str {
        &self.inner.socket
    }

    /// The connected client, connecting first if there is none yet. Fails with 503 naming the
    /// socket when no engine answers.
    pub async fn client(&self) -> Result<Docker, ApiError> {
        let mut guard = self.inner.client.lock().await;
        if let Some(d) = guard.as_ref() {
            return Ok(d.clone());
        }
        match Docker::connect(&self.inner.socket, CONNECT_TIMEOUT).await {
            Ok(d) => {
                *guard = Some(d.clone());
                Ok(d)
            }
            Err(e) => Err(unreachable_error(&e)),
        }
    }

    /// Phase one of a create: the engine is there, the name is free in Docker, and the image is
    /// present (or may be pulled). Cheap (two inspects), so the caller gets these errors before
    /// anything exists.
    #[tracing::instrument(name = "manager.container.prepare", skip_all)]
    pub async fn prepare(&self, spec: &ObjectSpec) -> Result<Prepared, ApiError> {
        let c = container_spec(spec)?;
        check_docker_name(&spec.name)?;
        let docker = self.client().await?;
        match docker.inspect(&spec.name).await {
            Ok(other) => {
                return Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    format!(
                        "a Docker container named {:?} already exists (id {}); adopt it with \
                         container.adopt, or choose another name",
                        spec.name,
                        short_id(&other.id)
                    ),
                )
                .with_field("name"))
            }
            Err(DockerError::NotFound { .. }) => {}
            Err(e) => return Err(docker_error(e, "name")),
        }
        let present = docker
            .image_exists(&c.image)
            .await
            .map_err(|e| docker_error(e, "container.image"))?;
        if !present && !c.pull {
            return Err(ApiError::invalid(
                "container.image",
                format!(
                    "image {:?} is not present on this node; build or load it first, or set \
                     \"pull\": true to pull it",
                    c.image
                ),
            ));
        }
        Ok(Prepared {
            docker,
            pull: !present,
        })
    }

    /// Phase two of a create: pull if needed, create, start, inspect. A container that was
    /// created is removed again on any later failure, so a failed create leaves nothing in
    /// Docker.
    #[tracing::instrument(name = "manager.container.run", skip_all)]
    pub async fn run(
        &self,
        prepared: Prepared,
        id: &str,
        spec: &ObjectSpec,
    ) -> Result<ContainerInfo, ApiError> {
        let docker = prepared.docker;
        let cfg = create_config(id, spec)?;
        if prepared.pull {
            docker.pull(&cfg.image).await.map_err(|e| match e {
                DockerError::Unreachable { .. } => unreachable_error(&e),
                other => ApiError::invalid(
                    "container.image",
                    format!(
                        "image {:?} is not present on this node and pulling it failed: {other}",
                        cfg.image
                    ),
                ),
            })?;
        }
        let cid = docker.create(&spec.name, &cfg).await.map_err(|e| match e {
            DockerError::Conflict { message } => {
                ApiError::new(ErrorCode::AlreadyExists, message).with_field("name")
            }
            DockerError::NotFound { message } => ApiError::invalid("container.image", message),
            DockerError::Invalid { message } => ApiError::invalid(
                if message.contains("mount") {
                    "container.mounts"
                } else {
                    "container"
                },
                message,
            ),
            other => docker_error(other, "container"),
        })?;
        let started = async {
            docker
                .start(&cid)
                .await
                .map_err(|e| docker_error(e, "container.command"))?;
            docker
                .inspect(&cid)
                .await
                .map_err(|e| docker_error(e, "container"))
        };
        match started.await {
            Ok(info) => Ok(info),
            Err(e) => {
                if let Err(re) = docker.remove(&cid, true).await {
                    tracing::warn!(
                        id,
                        container = %short_id(&cid),
                        error = %re,
                        "removing a container whose start failed"
                    );
                }
                Err(e)
            }
        }
    }

    /// Looks up a container to adopt, by id or name.
    pub async fn find(&self, key: &str) -> Result<ContainerInfo, ApiError> {
        let docker = self.client().await?;
        docker.inspect(key).await.map_err(|e| match e {
            DockerError::NotFound { .. } => ApiError::invalid(
                "container.adopt",
                format!("no Docker container with id or name {key:?}"),
            ),
            other => docker_error(other, "container.adopt"),
        })
    }

    /// The container as Docker has it now; `None` when it no longer exists.
    pub async fn inspect(&self, docker_id: &str) -> Result<Option<ContainerInfo>, ApiError> {
        let docker = self.client().await?;
        match docker.inspect(docker_id).await {
            Ok(i) => Ok(Some(i)),
            Err(DockerError::NotFound { .. }) => Ok(None),
            Err(e) => Err(docker_error(e, "container")),
        }
    }

    /// Brings Docker in line with what the fast path wrote: the stored limits (`update`) and the
    /// paused state (`pause`: `Some(desired)` when it differs from what Docker believes).
    ///
    /// Docker's pause goes through runc, which refuses a cgroup that is already frozen ("container
    /// not running"), and its unpause refuses one that is already thawed. The fast path has done
    /// exactly that, so the cgroup is first put back the way runc expects it and Docker then
    /// makes the change itself: for a pause, the container runs again for the length of Docker's
    /// pause call (about 15 ms here) before runc freezes it; for an unpause, it stays frozen that
    /// long. Should Docker refuse, the desired state is written back to the cgroup.
    #[tracing::instrument(name = "manager.container.sync", skip_all)]
    pub async fn sync(
        &self,
        docker_id: &str,
        update: ResourceUpdate,
        pause: Option<(bool, CgroupRef)>,
    ) -> Result<(), ApiError> {
        let docker = self.client().await?;
        if !update.is_empty() {
            docker
                .update(docker_id, &update)
                .await
                .map_err(|e| docker_error(e, "resources"))?;
        }
        if let Some((want, cg)) = pause {
            self.freeze(&cg, !want).await?;
            let r = if want {
                docker.pause(docker_id).await
            } else {
                docker.unpause(docker_id).await
            };
            if let Err(e) = r {
                // Keep the promise the PATCH made, whatever Docker thinks.
                if let Err(fe) = self.freeze(&cg, want).await {
                    tracing::warn!(
                        container = %short_id(docker_id),
                        error = %fe.message,
                        "restoring the freezer state"
                    );
                }
                return Err(docker_error(e, "paused"));
            }
        }
        Ok(())
    }

    /// Writes the freezer off the async threads (freezing waits for the kernel to confirm).
    async fn freeze(&self, cg: &CgroupRef, frozen: bool) -> Result<(), ApiError> {
        let cgroups = self.inner.cgroups.clone();
        let cg = cg.clone();
        tokio::task::spawn_blocking(move || cgroups.freeze(&cg, frozen))
            .await
            .map_err(|e| ApiError::internal(format!("freezer task: {e}")))?
            .map_err(cgroup_error)
            .map_err(|e| e.with_field("paused"))
    }

    /// Stops (SIGTERM, SIGKILL after `grace`) and removes a container. One that is already gone
    /// is not an error. A container frozen by the fast path or paused in Docker is thawed first:
    /// a frozen process cannot act on SIGTERM, and the grace would be wasted.
    #[tracing::instrument(name = "manager.container.stop_and_remove", skip_all)]
    pub async fn stop_and_remove(
        &self,
        docker_id: &str,
        grace: Duration,
        cg: Option<CgroupRef>,
    ) -> Result<(), ApiError> {
        let docker = self.client().await?;
        let info = match docker.inspect(docker_id).await {
            Ok(i) => i,
            Err(DockerError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(docker_error(e, "container")),
        };
        if info.paused {
            if let Err(e) = docker.unpause(docker_id).await {
                tracing::debug!(
                    container = %short_id(docker_id),
                    error = %e,
                    "unpause before stop"
                );
            }
        }
        if let Some(cg) = cg.filter(|cg| self.inner.cgroups.exists(cg)) {
            if let Err(e) = self.freeze(&cg, false).await {
                tracing::debug!(
                    container = %short_id(docker_id),
                    error = %e.message,
                    "thaw before stop"
                );
            }
        }
        if info.running || info.paused || info.restarting {
            match docker.stop(docker_id, grace).await {
                Ok(()) | Err(DockerError::NotFound { .. }) => {}
                Err(e) => return Err(docker_error(e, "container")),
            }
        }
        match docker.remove(docker_id, true).await {
            Ok(()) | Err(DockerError::NotFound { .. }) => Ok(()),
            Err(e) => Err(docker_error(e, "container")),
        }
    }

    /// The cgroup of a running container: the path of its init process in the `cpu` hierarchy
    /// (v1) or the unified one (v2), read from `/proc/<pid>/cgroup`. Docker's cgroupfs driver
    /// uses `/docker/<id>` and its systemd driver `/system.slice/docker-<id>.scope`; reading the
    /// real path works for both, and for any `--cgroup-parent`.
    pub fn cgroup_of(&self, pid: u32) -> Result<CgroupRef, ApiError> {
        let lines = self.inner.procfs.cgroups_of(pid).map_err(|e| {
            ApiError::internal(format!("finding the cgroup of container pid {pid}: {e}"))
        })?;
        cgroup_path(&lines)
            .map(CgroupRef::External)
            .ok_or_else(|| ApiError::internal(format!("pid {pid} has no cgroup path we can use")))
    }

    /// Before a memory limit is written to a v1 cgroup: where `memory.memsw.limit_in_bytes` is
    /// set (an adopted `docker run -m`), it caps the memory limit, and the kernel refuses a
    /// limit above it. Lifting it to unlimited is what the Docker sync sets anyway
    /// (`MemorySwap = -1`).
    pub fn lift_memsw(&self, cg: &CgroupRef) -> Result<(), ApiError> {
        for (ctrl, dir) in self.inner.cgroups.dirs(cg) {
            if ctrl != "memory" {
                continue;
            }
            let f = dir.join("memory.memsw.limit_in_bytes");
            let Ok(cur) = std::fs::read_to_string(&f) else {
                continue;
            };
            if cur.trim().parse::<u64>().is_ok_and(|v| v < V1_UNLIMITED) {
                std::fs::write(&f, "-1").map_err(|e| {
                    ApiError::internal(format!("write -1 to {}: {e}", f.display()))
                        .with_field("resources.memory")
                })?;
            }
        }
        Ok(())
    }

    /// The file the freezer state is in, for tests and messages.
    pub fn freezer_file(&self, cg: &CgroupRef) -> Option<PathBuf> {
        self.inner
            .cgroups
            .dirs(cg)
            .into_iter()
            .find(|(c, _)| c == "freezer" || c == "unified")
            .map(|(c, d)| {
                d.join(if c == "freezer" {
                    "freezer.state"
                } else {
                    "cgroup.freeze"
                })
            })
    }
}

/// Picks the cgroup path out of `/proc/<pid>/cgroup` lines (`(controllers, path)`): the `cpu`
/// hierarchy's on v1, the unified one's on v2.
pub fn cgroup_path(lines: &[(String, String)]) -> Option<String> {
    let has = |ctrls: &str, c: &str| ctrls.split(',').any(|x| x == c);
    let pick = lines
        .iter()
        .find(|(c, _)| has(c, "cpu"))
        .or_else(|| lines.iter().find(|(c, _)| c.is_empty()))
        .or_else(|| lines.iter().find(|(c, _)| !c.starts_with("name=")))?;
    let p = pick.1.trim_end_matches(" (deleted)");
    (p.starts_with('/') && p != "/").then(|| p.to_string())
}

/// The 12-digit form Docker shows.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeagent_types::{ContainerNetwork, CpuSet, Kind, Memory, Mount};

    fn spec() -> ObjectSpec {
        ObjectSpec {
            name: "web-1".into(),
            kind: Kind::Container,
            labels: [("team".to_string(), "a".to_string())].into(),
            section: Some(nodeagent_types::KindSpec::Container(ContainerSpec {
                image: "busybox:local".into(),
                command: vec!["sleep".into(), "300".into()],
                env: [("K".to_string(), "V".to_string())].into(),
                pull: false,
                adopt: None,
                privileged: false,
                network: ContainerNetwork::None,
                host_pid: true,
                mounts: vec![Mount {
                    source: "/srv".into(),
                    target: "/data".into(),
                    read_only: true,
                }],
            })),
            resources: Resources {
                cpu: Some(0.5),
                cpu_weight: Some(50),
                cpuset: Some(CpuSet("0".into())),
                memory: Some(Memory(64 << 20)),
                pids: Some(100),
            },
            collect: Default::default(),
        }
    }

    #[test]
    fn resources_map_to_dockers_fields() {
        let u = resource_update(&spec().resources, CpuStyle::Nano);
        assert_eq!(u.nano_cpus, Some(500_000_000));
        assert_eq!(u.cpu_quota, None);
        assert_eq!(u.cpu_shares, Some(512));
        assert_eq!(u.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(u.memory, Some(64 << 20));
        assert_eq!(u.memory_swap, Some(-1));
        assert_eq!(u.pids_limit, Some(100));

        let q = resource_update(&spec().resources, CpuStyle::Quota);
        assert_eq!(q.nano_cpus, None);
        assert_eq!(q.cpu_quota, Some(50_000));
        assert_eq!(q.cpu_period, Some(100_000));

        // Only what is given: an update of cpu alone leaves every other field to Docker.
        let only = resource_update(
            &Resources {
                cpu: Some(1.5),
                ..Default::default()
            },
            CpuStyle::Nano,
        );
        assert_eq!(
            only,
            ResourceUpdate {
                nano_cpus: Some(1_500_000_000),
                ..Default::default()
            }
        );
        assert!(resource_update(&Resources::default(), CpuStyle::Nano).is_empty());
    }

    #[test]
    fn cpu_rounds_like_the_fast_path() {
        // 0.123456 cores: the fast path writes round(12345.6) = 12346 µs; Docker derives its
        // quota as NanoCpus × 100000 / 1e9, which must give the same.
        let u = resource_update(
            &Resources {
                cpu: Some(0.123456),
                ..Default::default()
            },
            CpuStyle::Nano,
        );
        let nano = u.nano_cpus.expect("set");
        assert_eq!(nano * 100_000 / 1_000_000_000, 12_346);
        // Weight 1 is 10 shares, as the fast path writes (the floor of 2 is Docker's minimum).
        let w = resource_update(
            &Resources {
                cpu_weight: Some(1),
                ..Default::default()
            },
            CpuStyle::Nano,
        );
        assert_eq!(w.cpu_shares, Some(10));
    }

    #[test]
    fn create_config_labels_and_maps_the_spec() {
        let c = create_config("0123456789abcdef", &spec()).expect("valid");
        assert_eq!(c.image, "busybox:local");
        assert_eq!(c.cmd, vec!["sleep".to_string(), "300".to_string()]);
        assert_eq!(c.env, vec!["K=V".to_string()]);
        assert_eq!(
            c.labels.get(LABEL_ID).map(String::as_str),
            Some("0123456789abcdef")
        );
        assert_eq!(c.labels.get(LABEL_NAME).map(String::as_str), Some("web-1"));
        assert_eq!(c.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(c.network_mode.as_deref(), Some("none"));
        assert_eq!(c.pid_mode.as_deref(), Some("host"));
        assert!(!c.privileged);
        assert_eq!(
            c.mounts,
            vec![BindMount {
                source: "/srv".into(),
                target: "/data".into(),
                read_only: true
            }]
        );
        assert_eq!(c.resources.nano_cpus, Some(500_000_000));
    }

    #[test]
    fn the_agents_labels_win_over_the_specs() {
        let mut s = spec();
        s.labels.insert(LABEL_ID.into(), "forged".into());
        let c = create_config("0123456789abcdef", &s).expect("valid");
        assert_eq!(
            c.labels.get(LABEL_ID).map(String::as_str),
            Some("0123456789abcdef")
        );
    }

    #[test]
    fn cgroup_path_prefers_cpu_then_unified() {
        let v1 = vec![
            ("name=systemd".to_string(), "/docker/abc".to_string()),
            ("memory".to_string(), "/docker/abc".to_string()),
            ("cpu".to_string(), "/docker/abc".to_string()),
            (String::new(), "/docker/abc".to_string()),
        ];
        assert_eq!(cgroup_path(&v1).as_deref(), Some("/docker/abc"));
        let comounted = vec![("cpu,cpuacct".to_string(), "/x".to_string())];
        assert_eq!(cgroup_path(&comounted).as_deref(), Some("/x"));
        let v2 = vec![(String::new(), "/system.slice/docker-abc.scope".to_string())];
        assert_eq!(
            cgroup_path(&v2).as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        // The root is never a container's cgroup.
        assert_eq!(cgroup_path(&[(String::new(), "/".to_string())]), None);
    }

    #[test]
    fn errors_map_to_status_codes() {
        let e = docker_error(
            DockerError::Unreachable {
                socket: "unix:///x".into(),
                message: "no socket at /x".into(),
            },
            "container",
        );
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(
            e.message
                .starts_with("docker engine not reachable at unix:///x: no socket at /x"),
            "{}",
            e.message
        );
        let e = docker_error(
            DockerError::Invalid {
                message: "bad".into(),
            },
            "container.mounts",
        );
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(e.field.as_deref(), Some("container.mounts"));
        assert_eq!(
            check_docker_name("a").expect_err("short").field.as_deref(),
            Some("name")
        );
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
    }
}
