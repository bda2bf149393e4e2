//! A thin client of the Docker Engine API (through bollard), over a unix socket whose path is
//! injectable.
//!
//! It knows nothing of the agent: it takes plain values ([`CreateConfig`], [`ResourceUpdate`])
//! and returns plain values ([`ContainerInfo`], [`ContainerEvent`]) and typed errors
//! ([`DockerError`]), so bollard's generated models never leak into the engine or the core.
//!
//! The API version is negotiated on connect: bollard speaks a newer version than Debian's
//! `docker.io` 20.10 (API 1.41), and [`Docker::connect`] steps down to what the engine offers.
//! Every call has a deadline of its own, so a hung engine costs the caller a timeout error
//! rather than a stuck task.

mod error;

pub use error::DockerError;

use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, EventMessage, HostConfig, Mount as BollardMount,
    MountType,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::stream::{BoxStream, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub type Result<T> = std::result::Result<T, DockerError>;

/// Where the engine listens on a stock Debian install.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// bollard's own deadline for receiving the answer's headers; every call below also has a
/// deadline of its own, usually much shorter.
pub(crate) const CLIENT_TIMEOUT_SECS: u64 = 600;
/// Deadline of an ordinary call (inspect, create, start, update, pause, remove).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of a pull: images can be large.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// The events the agent follows. Everything else (exec, attach, health) is noise to it.
pub const WATCHED_EVENTS: &[&str] = &[
    "start", "die", "oom", "destroy", "pause", "unpause", "rename",
];

/// A connected client. Cheap to clone: clones share the connection settings (bollard opens a
/// fresh connection to the socket per request).
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    /// `unix:///path`, as error messages name it.
    socket: Arc<str>,
    api_version: Arc<str>,
    server_version: Arc<str>,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker")
            .field("socket", &self.socket)
            .field("api_version", &self.api_version)
            .field("server_version", &self.server_version)
            .finish()
    }
}

/// `unix:///path` for a socket given as a path or as a `unix://` URI.
pub fn socket_uri(socket: &str) -> String {
    match socket.strip_prefix("unix://") {
        Some(p) => format!("unix://{p}"),
        None => format!("unix://{socket}"),
    }
}

/// What to create. Empty `cmd` keeps the image's own command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateConfig {
    pub image: String,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` strings.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub resources: ResourceUpdate,
    pub privileged: bool,
    /// `bridge`, `none` or `host`; `None` is the engine's default (bridge).
    pub network_mode: Option<String>,
    /// `host` to share the host's pid namespace.
    pub pid_mode: Option<String>,
    pub mounts: Vec<BindMount>,
}

/// A host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// The resource fields of Docker's HostConfig that the agent drives, in Docker's own units.
/// `None` leaves a field as it is (in an update) or at Docker's default (on create).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceUpdate {
    /// CPU limit in billionths of a CPU (`--cpus`).
    pub nano_cpus: Option<i64>,
    /// CFS quota and period in µs (`--cpu-quota`, `--cpu-period`); exclusive with `nano_cpus`.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    /// v1 `cpu.shares`.
    pub cpu_shares: Option<i64>,
    pub cpuset_cpus: Option<String>,
    /// Bytes.
    pub memory: Option<i64>,
    /// Memory plus swap in bytes; -1 is unlimited swap.
    pub memory_swap: Option<i64>,
    pub pids_limit: Option<i64>,
}

impl ResourceUpdate {
    pub fn is_empty(&self) -> bool {
        *self == ResourceUpdate::default()
    }

    fn to_update_body(&self) -> ContainerUpdateBody {
        ContainerUpdateBody {
            nano_cpus: self.nano_cpus,
            cpu_quota: self.cpu_quota,
            cpu_period: self.cpu_period,
            cpu_shares: self.cpu_shares,
            cpuset_cpus: self.cpuset_cpus.clone(),
            memory: self.memory,
            memory_swap: self.memory_swap,
            pids_limit: self.pids_limit,
            ..Default::default()
        }
    }

    fn from_host_config(h: &HostConfig) -> ResourceUpdate {
        ResourceUpdate {
            nano_cpus: h.nano_cpus,
            cpu_quota: h.cpu_quota,
            cpu_period: h.cpu_period,
            cpu_shares: h.cpu_shares,
            cpuset_cpus: h.cpuset_cpus.clone(),
            memory: h.memory,
            memory_swap: h.memory_swap,
            pids_limit: h.pids_limit,
        }
    }
}

/// What `inspect` tells about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The full id (64 hex digits).
    pub id: String,
    /// The name without Docker's leading `/`.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    /// The init process, while running.
    pub pid: Option<u32>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// The engine's last error for this container (e.g. why it failed to start).
    pub error: Option<String>,
    pub restart_count: i64,
    /// The limits in Docker's stored config.
    pub resources: ResourceUpdate,
}

/// One entry of the event stream, for a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEvent {
    pub id: String,
    /// `start`, `die`, `oom`, `destroy`, ...
    pub action: String,
    /// The container's labels and name, and per action extras such as `exitCode`.
    pub attributes: BTreeMap<String, String>,
    pub time_nano: i64,
}

/// One entry of `list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub state: String,
    pub labels: BTreeMap<String, String>,
}

impl Docker {
    /// Connects to the engine at `socket` (a path or a `unix://` URI) and negotiates the API
    /// version. Fails with [`DockerError::Unreachable`] when nothing answers within `timeout`.
    pub async fn connect(socket: &str, timeout: Duration) -> Result<Docker> {
        let uri = socket_uri(socket);
        let unreachable = |message: String| DockerError::Unreachable {
            socket: uri.clone(),
            message,
        };
        let client = bollard::Docker::connect_with_unix(
            &uri,
            CLIENT_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| DockerError::from_bollard(&uri, e))?;
        let client = match tokio::time::timeout(timeout, client.negotiate_version()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(DockerError::from_bollard(&uri, e)),
            Err(_) => return Err(unreachable(format!("no answer within {timeout:?}"))),
        };
        let v = match tokio::time::timeout(timeout, client.version()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(DockerError::from_bollard(&uri, e)),
            Err(_) => return Err(unreachable(format!("no answer within {timeout:?}"))),
        };
        Ok(Docker {
            api_version: client.client_version().to_string().into(),
            server_version: v.version.unwrap_or_default().into(),
            client,
            socket: uri.into(),
        })
    }

    /// `unix:///path` of the engine.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The negotiated API version, e.g. `1.41`.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The engine's version, e.g. `20.10.24+dfsg1`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Runs one call under `deadline`, mapping bollard's error.
    async fn call<T>(
        &self,
        op: &'static str,
        deadline: Duration,
        fut: impl Future<Output = std::result::Result<T, bollard::errors::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(deadline, fut).await {
            Ok(r) => r.map_err(|e| DockerError::from_bollard(&self.socket, e)),
            Err(_) => Err(DockerError::Timeout {
                op,
                after: deadline,
            }),
        }
    }

    /// Answers once the engine responds to `/_ping`.
    pub async fn ping(&self) -> Result<()> {
        self.call("ping", CALL_TIMEOUT, self.client.ping())
            .await
            .map(|_| ())
    }

    /// Whether the image is present locally.
    pub async fn image_exists(&self, image: &str) -> Result<bool> {
        match self
            .call(
                "image inspect",
                CALL_TIMEOUT,
                self.client.inspect_image(image),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(DockerError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Pulls `image` (`name[:tag]` or `name@digest`; the tag defaults to `latest`).
    #[tracing::instrument(name = "driver.docker.pull", skip_all)]
    pub async fn pull(&self, image: &str) -> Result<()> {
        let (name, tag) = split_reference(image);
        let opts = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag)
            .build();
        let mut stream = self.client.create_image(Some(opts), None, None);
        let pulling = async {
            while let Some(item) = stream.next().await {
                item?;
            }
            Ok(())
        };
        self.call("pull", PULL_TIMEOUT, pulling).await
    }

    /// Creates a container named `name`; returns its id. The container is not started.
    #[tracing::instrument(name = "driver.docker.create", skip_all)]
    pub async fn create(&self, name: &str, cfg: &CreateConfig) -> Result<String> {
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let body = create_body(cfg);
        let r = self
            .call(
                "container create",
                CALL_TIMEOUT,
                self.client.create_container(Some(opts), body),
            )
            .await?;
        Ok(r.id)
    }

    #[tracing::instrument(name = "driver.docker.start", skip_all)]
    pub async fn start(&self, id: &str) -> Result<()> {
        self.call(
            "container start",
            CALL_TIMEOUT,
            self.client.start_container(id, None),
        )
        .await
    }

    /// Inspects a container by id or name. A missing one is [`DockerError::NotFound`].
    pub async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        let r = self
            .call(
                "container inspect",
                CALL_TIMEOUT,
                self.client.inspect_container(id, None),
            )
            .await?;
        let state = r.state.unwrap_or_default();
        let labels = r
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(ContainerInfo {
            id: r.id.unwrap_or_default(),
            name: r
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: r.config.and_then(|c| c.image).unwrap_or_default(),
            labels,
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            running: state.running.unwrap_or(false),
            paused: state.paused.unwrap_or(false),
            restarting: state.restarting.unwrap_or(false),
            pid: state
                .pid
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p > 0),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.filter(|e| !e.is_empty()),
            restart_count: r.restart_count.unwrap_or(0),
            resources: r
                .host_config
                .as_ref()
                .map(ResourceUpdate::from_host_config)
                .unwrap_or_default(),
        })
    }

    /// Changes the stored limits of a container (and the cgroup of a running one).
    #[tracing::instrument(name = "driver.docker.update", skip_all)]
    pub async fn update(&self, id: &str, res: &ResourceUpdate) -> Result<()> {
        self.call(
            "container update",
            CALL_TIMEOUT,
            self.client.update_container(id, res.to_update_body()),
        )
        .await
    }

    #[tracing::instrument(name = "driver.docker.pause", skip_all)]
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.call(
            "container pause",
            CALL_TIMEOUT,
            self.client.pause_container(id),
        )
        .await
    }

    #[tracing::instrument(name = "driver.docker.unpause", skip_all)]
    pub async fn unpause(&self, id: &str) -> Result<()> {
        self.call(
            "container unpause",
            CALL_TIMEOUT,
            self.client.unpause_container(id),
        )
        .await
    }

    /// Stops a container: SIGTERM (or the image's stop signal), SIGKILL after `grace`. A
    /// container that is not running is not an error (the engine answers 304).
    #[tracing::instrument(name = "driver.docker.stop", skip_all)]
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        // The API takes whole seconds; round up so the workload gets at least `grace`.
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let t = i32::try_from(secs).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::default().t(t).build();
        self.call(
            "container stop",
            grace + CALL_TIMEOUT,
            self.client.stop_container(id, Some(opts)),
        )
        .await
    }

    /// Removes a container; `force` kills it first if it runs.
    #[tracing::instrument(name = "driver.docker.remove", skip_all)]
    pub async fn remove(&self, id: &str, force: bool) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(force)
            .build();
        self.call(
            "container remove",
            CALL_TIMEOUT,
            self.client.remove_container(id, Some(opts)),
        )
        .await
    }

    /// Every container (running or not) that has the label `label` (`key` or `key=value`).
    pub async fn list(&self, label: &str) -> Result<Vec<ContainerSummary>> {
        let mut filters = HashMap::new();
        filters.insert("label", vec![label]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .call(
                "container list",
                CALL_TIMEOUT,
                self.client.list_containers(Some(opts)),
            )
            .await?;
        Ok(list
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                names: c
                    .names
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .collect(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }

    /// The engine's event stream of containers, limited to [`WATCHED_EVENTS`]. It ends (or
    /// yields an error) when the connection to the engine breaks.
    ///
    /// The request goes out when the stream is first polled, so "from now on" would miss what
    /// happens before that. `since_nanos` (Unix time in ns) makes the engine replay the events
    /// from that instant out of its buffer: a watcher that reconnects passes the time of the
    /// last event it saw and loses nothing in between (the engine keeps its last 256 events).
    pub fn events(&self, since_nanos: Option<i64>) -> BoxStream<'static, Result<ContainerEvent>> {
        let mut filters = HashMap::new();
        filters.insert("type", vec!["container"]);
        filters.insert("event", WATCHED_EVENTS.to_vec());
        let mut opts = EventsOptionsBuilder::default().filters(&filters);
        if let Some(ns) = since_nanos {
            let since = format!(
                "{}.{:09}",
                ns.div_euclid(1_000_000_000),
                ns.rem_euclid(1_000_000_000)
            );
            opts = opts.since(&since);
        }
        let opts = opts.build();
        let socket = self.socket.clone();
        self.client
            .events(Some(opts))
            .map(move |r| match r {
                Ok(m) => Ok(container_event(m)),
                Err(e) => Err(DockerError::from_bollard(&socket, e)),
            })
            .boxed()
    }
}

fn container_event(m: EventMessage) -> ContainerEvent {
    let actor = m.actor.unwrap_or_default();
    ContainerEvent {
        id: actor.id.unwrap_or_default(),
        action: m.action.unwrap_or_default(),
        attributes: actor.attributes.unwrap_or_default().into_iter().collect(),
        time_nano: m.time_nano.unwrap_or(0),
    }
}

fn create_body(cfg: &CreateConfig) -> ContainerCreateBody {
    let r = &cfg.resources;
    let host = HostConfig {
        nano_cpus: r.nano_cpus,
        cpu_quota: r.cpu_quota,
        cpu_period: r.cpu_period,
        cpu_shares: r.cpu_shares,
        cpuset_cpus: r.cpuset_cpus.clone(),
        memory: r.memory,
        memory_swap: r.memory_swap,
        pids_limit: r.pids_limit,
        privileged: Some(cfg.privileged),
        network_mode: cfg.network_mode.clone(),
        pid_mode: cfg.pid_mode.clone(),
        mounts: (!cfg.mounts.is_empty()).then(|| {
            cfg.mounts
                .iter()
                .map(|m| BollardMount {
                    source: Some(m.source.clone()),
                    target: Some(m.target.clone()),
                    typ: Some(MountType::BIND),
                    read_only: Some(m.read_only),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(cfg.image.clone()),
        cmd: (!cfg.cmd.is_empty()).then(|| cfg.cmd.clone()),
        env: (!cfg.env.is_empty()).then(|| cfg.env.clone()),
        labels: Some(cfg.labels.clone().into_iter().collect()),
        host_config: Some(host),
        ..Default::default()
    }
}

/// Splits an image reference into the name and the tag (or digest) the pull API takes
/// separately. Without either, the tag is `latest`: an empty tag would pull every tag.
pub fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    // A colon after the last slash is a tag; one before it belongs to a registry host:port.
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(i) => (&image[..last + i], &image[last + i + 1..]),
        None => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:local"), ("busybox", "local"));
        assert_eq!(
            split_reference("registry:5000/team/app"),
            ("registry:5000/team/app", "latest")
        );
        assert_eq!(
            split_reference("registry:5000/team/app:v2"),
            ("registry:5000/team/app", "v2")
        );
        assert_eq!(split_reference("app@sha256:abcd"), ("app", "sha256:abcd"));
    }

    #[test]
    fn socket_uris() {
        assert_eq!(socket_uri("/run/docker.sock"), "unix:///run/docker.sock");
        assert_eq!(
            socket_uri("unix:///run/docker.sock"),
            "unix:///run/docker.sock"
        );
    }

    #[test]
    fn create_body_carries_every_field() {
        let cfg = CreateConfig {
            image: "busybox:local".into(),
            cmd: vec!["sleep".into(), "1".into()],
            env: vec!["A=1".into()],
            labels: [("nodeagent.id".to_string(), "x".to_string())].into(),
            resources: ResourceUpdate {
                nano_cpus: Some(500_000_000),
                memory: Some(1 << 26),
                memory_swap: Some(-1),
                ..Default::default()
            },
            privileged: true,
            network_mode: Some("none".into()),
            pid_mode: Some("host".into()),
            mounts: vec![BindMount {
                source: "/tmp".into(),
                target: "/data".into(),
                read_only: true,
            }],
        };
        let b = create_body(&cfg);
        let v = serde_json::to_value(&b).expect("serializes");
        assert_eq!(v["Image"], "busybox:local");
        assert_eq!(v["Cmd"], serde_json::json!(["sleep", "1"]));
        assert_eq!(v["Labels"]["nodeagent.id"], "x");
        let h = &v["HostConfig"];
        assert_eq!(h["NanoCpus"], 500_000_000);
        assert_eq!(h["Memory"], 1 << 26);
        assert_eq!(h["MemorySwap"], -1);
        assert_eq!(h["Privileged"], true);
        assert_eq!(h["NetworkMode"], "none");
        assert_eq!(h["PidMode"], "host");
        assert_eq!(h["Mounts"][0]["Type"], "bind");
        assert_eq!(h["Mounts"][0]["ReadOnly"], true);
        // Fields not given stay out of the body, so Docker keeps its defaults.
        assert!(h.get("CpuShares").is_none(), "{h}");
        assert!(v.get("Env").is_some());
    }
}
