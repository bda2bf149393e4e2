//! The daemon's configuration: built-in defaults < TOML file < environment < flags.
//!
//! Clap already resolves "flag over environment" for each option (every option is an `Option`
//! with `env = ...`, so "not given" stays distinguishable from "given the default"). This module
//! reads the file, overlays whatever clap found on top of it, fills the rest from the defaults,
//! and checks the result once, so the start-up sequence only ever sees a complete, valid
//! [`Config`].

use anyhow::{bail, Context as _};
use nodeagent_core::PolicyConfig;
use nodeagent_core::{CoreConfig, SinkConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7464";
pub const DEFAULT_STATE_DIR: &str = "./nodeagent-data";
pub const SOCKET_FILE: &str = "nodeagent.sock";
/// The TCP bearer token's file in the state dir (DESIGN.md §4, access).
pub const TOKEN_FILE: &str = "token";
/// Largest request body by default: specs are a few hundred bytes.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
pub const DEFAULT_OTLP_SERVICE_NAME: &str = "nodeagent";
const MIN_MAX_BODY: u64 = 4 << 10;
const MAX_MAX_BODY: u64 = 64 << 20;
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
pub const DEFAULT_PROC_ROOT: &str = "/proc";
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_RING_SIZE: usize = 120;
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_HEARTBEAT_SINKS: &[&str] = &["file"];
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The sinks every agent has without configuration (DESIGN.md §4).
pub const BUILTIN_SINKS: &[&str] = &["stdout", "file", "prometheus"];
/// Sampling faster than the scheduler's design point would only burn CPU.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// The long help of `nodeagent run`: what it does and how the configuration layers combine.
pub const RUN_LONG_ABOUT: &str = "\
Run the nodeagent daemon.

It serves the HTTP/JSON API and gRPC on --listen (one port for both) and on the unix socket
--socket, creates, updates and deletes workloads (processes, cgroups, and Docker containers
through the engine at --docker-socket), samples their metrics from cgroupfs and procfs, and
reports them to sinks. SIGTERM or SIGINT stops it gracefully; a second signal stops it at once;
workloads keep running either way.

Configuration is layered; each layer overrides the one before it:
  1. built-in defaults                  (shown as [default: ...] below)
  2. the TOML file given by --config     (or NODEAGENT_CONFIG)
  3. environment variables              (shown as [env: ...] below; RUST_LOG also sets the
                                         log level, below NODEAGENT_LOG_LEVEL)
  4. command-line flags

Keys of the TOML file are the long flag names in snake_case. An unknown key is an error.
Example:

  listen = \"127.0.0.1:7464\"
  state_dir = \"/var/lib/nodeagent\"
  cgroup_parent = \"/nodeagent\"
  log_level = \"info\"

  [heartbeat]                  # the host's always-on report task
  interval = \"10s\"             # same as heartbeat_interval
  sinks = [\"file\"]

  [[sink]]                     # a named sink besides the built-in stdout, file and prometheus
  name = \"upstream\"
  type = \"grpc\"                # stdout | file | grpc | nats
  address = \"http://127.0.0.1:7465\"   # https:// with [sink.tls] ca, cert, key, server_name
  batch_size = 1000            # grpc, nats: records per batch at most
  batch_age = \"0s\"             # grpc, nats: longest a record waits for its batch (0: none)
  compression = \"gzip\"         # grpc: gzip | none
  heartbeat_interval = \"10s\"   # grpc: lease renewal
  ack_timeout = \"30s\"          # grpc, nats: reconnect when a batch is not acknowledged by then
  spool_max_bytes = \"1Gi\"      # grpc, nats: disk spool cap; past it the oldest records drop
  spool_segment_bytes = \"16Mi\" # grpc, nats: spool segment size
  spool_fsync = \"1s\"           # grpc, nats: always | never | an interval
  mode = \"batch\"               # report mode: batch (grpc, nats default) | latest (file, stdout)
  queue = 1024                 # batches in memory before the spool (every type)
  labels = { rack = \"r1\" }     # grpc: sent at registration

  [[sink]]
  name = \"bus\"
  type = \"nats\"                # JetStream: nodeagent.<node>.metrics / .events
  url = \"nats://127.0.0.1:4222\"
  stream = \"NODEAGENT\"         # created if missing, subjects <subject_prefix>.>
  subject_prefix = \"nodeagent\"
  # file:  path = \"/var/log/nodeagent.jsonl\"

Network sinks (grpc, nats) keep a write-ahead spool in <state-dir>/spool/<name>/: nothing is
lost while the upstream is down or when the agent is killed; delivery is at-least-once, and each
record carries a per-node sequence number for deduplication.

Access (secure by default): the unix socket is mode 0600 (0660 with socket_group). On TCP every
request but /healthz and /readyz needs `Authorization: Bearer <token>`; the token is generated on
first start into <state-dir>/token (mode 0600) and the CLI reads it from there. Listening on a
non-loopback address with auth = \"none\" and no tls_client_ca refuses to start.

  auth = \"token\"               # token | none (none: loopback or mTLS only)
  metrics_public = false       # true: /metrics without the token
  tls_cert = \"/etc/nodeagent/server.pem\"
  tls_key = \"/etc/nodeagent/server.key\"          # mode 0600
  tls_client_ca = \"/etc/nodeagent/clients-ca.pem\" # require client certificates (mTLS)

  [policy]                     # what callers may create; a refusal is 403 naming the rule
  process_commands = [\"/usr/bin/\", \"/opt/app/run\"]  # absent: any command
  cgroup_parents = [\"/workloads\"]                    # absent: any cgroup
  allow_privileged = false     # containers; default false
  allow_host_namespaces = false
  mount_sources = [\"/srv/data/\"]                     # default: no host-path mounts
  vm_paths = [\"/var/lib/nodeagent/images/\"]          # vm kernels/disks; absent: any path
  k8s_namespaces = [\"team-a\"]                        # k8s objects; absent: any namespace
  k8s_kinds = [\"ConfigMap\", \"apps/Deployment\", \"apps/*\"] # absent: any kind
  helm_charts = [\"/srv/charts/\", \"oci://registry.example/\"] # helm charts, value files

  [[cluster]]                  # a Kubernetes cluster that k8s objects apply to
  name = \"prod\"
  kubeconfig = \"/etc/nodeagent/prod.kubeconfig\"
  context = \"prod-admin\"       # default: the kubeconfig's current context
  # in_cluster = true          # instead: the pod's service account (the agent runs in a pod)";

/// Options of `nodeagent run`. `--state-dir` and `--socket` are global options (the client
/// commands use them to find the socket) and live in [`crate::cli::GlobalOpts`].
#[derive(clap::Args, Debug, Default, Clone)]
pub struct RunArgs {
    /// TOML config file (see above for its keys) [default: none]
    #[arg(long, env = "NODEAGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address of the HTTP/JSON and gRPC listener [default: 127.0.0.1:7464]
    #[arg(long, env = "NODEAGENT_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Root of the cgroup filesystem [default: /sys/fs/cgroup]
    #[arg(long, env = "NODEAGENT_CGROUP_ROOT", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    /// Root of procfs [default: /proc]
    #[arg(long, env = "NODEAGENT_PROC_ROOT", value_name = "DIR")]
    pub proc_root: Option<PathBuf>,

    /// Absolute cgroup path under which the agent creates its workloads' cgroups, e.g.
    /// /nodeagent [default: a `nodeagent` subtree beneath the agent's own cgroup]
    #[arg(long, env = "NODEAGENT_CGROUP_PARENT", value_name = "PATH")]
    pub cgroup_parent: Option<String>,

    /// This node's name in reports [default: the hostname]
    #[arg(long, env = "NODEAGENT_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Log filter: a level (error, warn, info, debug, trace) or RUST_LOG-style directives such
    /// as `info,nodeagent_core=debug`; logs go to stderr [default: info, or RUST_LOG if set]
    #[arg(long, env = "NODEAGENT_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Samples kept in memory per object for `GET /v1/objects/{id}/metrics` [default: 120]
    #[arg(long, env = "NODEAGENT_RING_SIZE", value_name = "N")]
    pub ring_size: Option<usize>,

    /// Interval of the host's heartbeat report, e.g. 10s or 500ms [default: 10s]
    #[arg(long, env = "NODEAGENT_HEARTBEAT_INTERVAL", value_name = "DURATION",
          value_parser = parse_duration_arg)]
    pub heartbeat_interval: Option<Duration>,

    /// Time a process gets between SIGTERM and SIGKILL when it is deleted [default: 5s]
    #[arg(long, env = "NODEAGENT_STOP_GRACE", value_name = "DURATION",
          value_parser = parse_duration_arg)]
    pub stop_grace: Option<Duration>,

    /// Stop the agent's processes (SIGTERM, then SIGKILL after at most 1 s) when the agent
    /// shuts down; by default workloads keep running and are re-adopted at the next start
    /// [default: false]
    #[arg(long, env = "NODEAGENT_STOP_WORKLOADS", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true")]
    pub stop_workloads: Option<bool>,

    /// The Docker Engine's socket, for objects of kind container (a path or unix:// URI). The
    /// agent starts without an engine; the container kind then answers 503 until one answers
    /// here [default: /var/run/docker.sock]
    #[arg(long, env = "NODEAGENT_DOCKER_SOCKET", value_name = "PATH")]
    pub docker_socket: Option<String>,

    /// Authentication on TCP: `token` (every request but /healthz and /readyz needs the bearer
    /// token of --token-file) or `none` (only on a loopback address, or with --tls-client-ca)
    /// [default: token]
    #[arg(
        long,
        env = "NODEAGENT_AUTH",
        value_name = "MODE",
        hide_possible_values = true,
        help_heading = "Security"
    )]
    pub auth: Option<AuthMode>,

    /// Serve /metrics on TCP without the token (for a Prometheus that has none)
    /// [default: false]
    #[arg(long, env = "NODEAGENT_METRICS_PUBLIC", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", help_heading = "Security")]
    pub metrics_public: Option<bool>,

    /// Largest request body or gRPC message; larger ones get 413, e.g. 1Mi [default: 1Mi]
    #[arg(long, env = "NODEAGENT_MAX_BODY", value_name = "SIZE",
          value_parser = parse_size_arg, help_heading = "Security")]
    pub max_body: Option<u64>,

    /// Group allowed to use the unix socket: the socket becomes mode 0660 and owned by it
    /// [default: none, mode 0600]
    #[arg(
        long,
        env = "NODEAGENT_SOCKET_GROUP",
        value_name = "GROUP",
        help_heading = "Security"
    )]
    pub socket_group: Option<String>,

    /// Serve TCP over TLS with this certificate chain (PEM) [default: none, plain TCP]
    #[arg(
        long,
        env = "NODEAGENT_TLS_CERT",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM, mode 0600) [default: none]
    #[arg(
        long,
        env = "NODEAGENT_TLS_KEY",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub tls_key: Option<PathBuf>,

    /// Require TLS client certificates signed by this CA (PEM): mTLS [default: none]
    #[arg(
        long,
        env = "NODEAGENT_TLS_CLIENT_CA",
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Export a trace of every API request over OTLP/gRPC to this collector, e.g.
    /// http://127.0.0.1:4317 (Jaeger accepts OTLP directly); responses then carry `traceparent`
    /// and `x-trace-id` [default: none, tracing off]
    #[arg(
        long,
        env = "NODEAGENT_OTLP_ENDPOINT",
        value_name = "URL",
        help_heading = "Tracing"
    )]
    pub otlp_endpoint: Option<String>,

    /// The `service.name` of the exported traces [default: nodeagent]
    #[arg(
        long,
        env = "NODEAGENT_OTLP_SERVICE_NAME",
        value_name = "NAME",
        help_heading = "Tracing"
    )]
    pub otlp_service_name: Option<String>,

    /// Print the resolved configuration as TOML and exit without starting (for checking what
    /// the file, the environment and the flags add up to)
    #[arg(long)]
    pub print_config: bool,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    nodeagent_types::parse_duration(s)
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    nodeagent_types::parse_memory(s)
}

/// How TCP requests authenticate.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// `Authorization: Bearer <token>` on every request but /healthz and /readyz.
    #[default]
    Token,
    /// No token: allowed only on a loopback address or with client certificates.
    None,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Token => "token",
            AuthMode::None => "none",
        }
    }
}

/// The TOML file, exactly as written. Every key is optional; unknown keys are rejected so a
/// typo (`listne = ...`) fails loudly instead of silently using a default. It is also what
/// `--print-config` writes, so the printout is a valid config file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_root: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proc_root: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ring_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_interval: Option<nodeagent_types::Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_grace: Option<nodeagent_types::Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_workloads: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat: Option<HeartbeatFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sink: Vec<SinkConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<AuthMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_public: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_body: Option<nodeagent_types::Memory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_client_ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<PolicyConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    otlp_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    otlp_service_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bus: Option<nodeagent_api::bus::BusConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cluster: Vec<nodeagent_engine::kinds::k8s::ClusterConfig>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<nodeagent_types::Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sinks: Option<Vec<String>>,
}

/// The complete, checked configuration of one daemon run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: String,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
    pub cgroup_parent: Option<String>,
    pub node_name: String,
    pub log_level: String,
    pub ring_size: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_sinks: Vec<String>,
    pub stop_grace: Duration,
    /// Stop the processes at shutdown (default: they keep running).
    pub stop_workloads: bool,
    pub docker_socket: String,
    pub sinks: Vec<SinkConfig>,
    /// The TCP bearer token's file (created on first start when missing).
    pub token_file: PathBuf,
    pub auth: AuthMode,
    pub metrics_public: bool,
    pub max_body: u64,
    pub socket_group: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub policy: PolicyConfig,
    /// Where traces go (OTLP/gRPC); `None`: tracing off.
    pub otlp_endpoint: Option<String>,
    pub otlp_service_name: String,
    /// Bus In: the API over NATS (`[bus]`); `None`: off.
    pub bus: Option<nodeagent_api::bus::BusConfig>,
    /// The Kubernetes clusters of the k8s kind (`[[cluster]]`).
    pub clusters: Vec<nodeagent_engine::kinds::k8s::ClusterConfig>,
}

/// The options shared with the client commands, which find the daemon with them.
#[derive(Debug, Default, Clone)]
pub struct Globals {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// What the environment contributes besides clap's `env` options: `RUST_LOG`, which ranks
/// below `NODEAGENT_LOG_LEVEL` because the latter is this program's own name for the setting.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub rust_log: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            rust_log: std::env::var("RUST_LOG")
                .ok()
                .filter(|s| !s.trim().is_empty()),
        }
    }
}

impl Config {
    /// Builds the configuration from the file named by `args.config` (if any), clap's
    /// flag-or-environment values, and the defaults.
    pub fn load(args: &RunArgs, global: Globals, env: &Env) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::layer(file, args, global, env)
    }

    fn layer(
        file: FileConfig,
        args: &RunArgs,
        global: Globals,
        env: &Env,
    ) -> anyhow::Result<Config> {
        let Globals {
            state_dir,
            socket,
            token_file,
        } = global;
        let state_dir = state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let socket = socket
            .or(file.socket)
            .unwrap_or_else(|| state_dir.join(SOCKET_FILE));
        let token_file = token_file
            .or(file.token_file)
            .unwrap_or_else(|| state_dir.join(TOKEN_FILE));
        let (hb_interval, hb_sinks) = match file.heartbeat {
            Some(hb) => {
                if hb.interval.is_some() && file.heartbeat_interval.is_some() {
                    bail!("config file sets both `heartbeat_interval` and `[heartbeat] interval`; keep one");
                }
                (hb.interval, hb.sinks)
            }
            None => (None, None),
        };
        let cfg = Config {
            listen: args
                .listen
                .clone()
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
            socket,
            cgroup_root: args
                .cgroup_root
                .clone()
                .or(file.cgroup_root)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CGROUP_ROOT)),
            proc_root: args
                .proc_root
                .clone()
                .or(file.proc_root)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PROC_ROOT)),
            cgroup_parent: args.cgroup_parent.clone().or(file.cgroup_parent),
            node_name: match args.node_name.clone().or(file.node_name) {
                Some(n) => n,
                None => hostname(),
            },
            log_level: args
                .log_level
                .clone()
                .or_else(|| env.rust_log.clone())
                .or(file.log_level)
                .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string()),
            ring_size: args
                .ring_size
                .or(file.ring_size)
                .unwrap_or(DEFAULT_RING_SIZE),
            heartbeat_interval: args
                .heartbeat_interval
                .or(file.heartbeat_interval.map(|d| d.0))
                .or(hb_interval.map(|d| d.0))
                .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL),
            heartbeat_sinks: hb_sinks.unwrap_or_else(|| {
                DEFAULT_HEARTBEAT_SINKS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            stop_grace: args
                .stop_grace
                .or(file.stop_grace.map(|d| d.0))
                .unwrap_or(DEFAULT_STOP_GRACE),
            stop_workloads: args.stop_workloads.or(file.stop_workloads).unwrap_or(false),
            docker_socket: args
                .docker_socket
                .clone()
                .or(file.docker_socket)
                .unwrap_or_else(|| DEFAULT_DOCKER_SOCKET.to_string()),
            sinks: file.sink,
            token_file,
            auth: args.auth.or(file.auth).unwrap_or_default(),
            metrics_public: args.metrics_public.or(file.metrics_public).unwrap_or(false),
            max_body: args
                .max_body
                .or(file.max_body.map(|m| m.0))
                .unwrap_or(DEFAULT_MAX_BODY),
            socket_group: args.socket_group.clone().or(file.socket_group),
            tls_cert: args.tls_cert.clone().or(file.tls_cert),
            tls_key: args.tls_key.clone().or(file.tls_key),
            tls_client_ca: args.tls_client_ca.clone().or(file.tls_client_ca),
            policy: file.policy.unwrap_or_default(),
            otlp_endpoint: args
                .otlp_endpoint
                .clone()
                .or(file.otlp_endpoint)
                .filter(|e| !e.trim().is_empty()),
            otlp_service_name: args
                .otlp_service_name
                .clone()
                .or(file.otlp_service_name)
                .unwrap_or_else(|| DEFAULT_OTLP_SERVICE_NAME.to_string()),
            bus: file.bus,
            clusters: file.cluster,
            state_dir,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Rejects values that would only fail later, deep in start-up, with a worse message.
    fn check(&self) -> anyhow::Result<()> {
        if let Some(b) = &self.bus {
            b.settings(&self.node_name, vec![], "")?;
        }
        if let Some(e) = &self.otlp_endpoint {
            if !e.starts_with("http://") {
                bail!("otlp_endpoint {e:?}: give the collector's OTLP/gRPC URL, e.g. http://127.0.0.1:4317 (plain http://; TLS to the collector is not supported)");
            }
        }
        if self.listen.trim().is_empty() {
            bail!("listen: empty address; give HOST:PORT such as {DEFAULT_LISTEN}");
        }
        if let Some(parent) = &self.cgroup_parent {
            if !parent.starts_with('/') || parent.split('/').any(|c| c == ".." || c == ".") {
                bail!("cgroup_parent {parent:?}: give an absolute cgroup path such as /nodeagent, without '.' or '..'");
            }
        }
        if self.docker_socket.trim().is_empty()
            || self.docker_socket.trim_start_matches("unix://").is_empty()
        {
            bail!("docker_socket: empty; give the engine's socket, e.g. {DEFAULT_DOCKER_SOCKET}");
        }
        if self.node_name.trim().is_empty() {
            bail!("node_name: empty; give a name or leave it unset to use the hostname");
        }
        if self.ring_size == 0 {
            bail!("ring_size: must be at least 1");
        }
        if self.heartbeat_interval < MIN_HEARTBEAT {
            bail!("heartbeat_interval: must be at least 10ms");
        }
        let mut names: BTreeSet<&str> = BUILTIN_SINKS.iter().copied().collect();
        for (i, sink) in self.sinks.iter().enumerate() {
            if sink.name.is_empty() {
                bail!("sink[{i}].name: empty");
            }
            if !names.insert(sink.name.as_str()) {
                bail!(
                    "sink[{i}].name: {:?} is already taken (built-in sinks: stdout, file, prometheus)",
                    sink.name
                );
            }
            // Every type's options, with errors that name the field (`sink[2].address: ...`).
            if let Err(e) = sink.validate(i) {
                bail!("{e}");
            }
        }
        let mut clusters = BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            if let Err(e) = c.check(&format!("cluster[{i}]")) {
                bail!("{e}");
            }
            if !clusters.insert(c.name.as_str()) {
                bail!("cluster[{i}].name: {:?} is already taken", c.name);
            }
        }
        for name in &self.heartbeat_sinks {
            if !names.contains(name.as_str()) {
                bail!("heartbeat.sinks: unknown sink {name:?}; known: {names:?}");
            }
        }
        self.check_security()?;
        Ok(())
    }

    /// The access settings: TLS files come in pairs, the body cap is sane, the policy's
    /// entries are usable.
    fn check_security(&self) -> anyhow::Result<()> {
        if !(MIN_MAX_BODY..=MAX_MAX_BODY).contains(&self.max_body) {
            bail!(
                "max_body: {} bytes is out of range; give 4Ki to 64Mi (the default is 1Mi)",
                self.max_body
            );
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                bail!("tls_cert is set but tls_key is not; give both (or neither for plain TCP)")
            }
            (None, Some(_)) => {
                bail!("tls_key is set but tls_cert is not; give both (or neither for plain TCP)")
            }
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            bail!("tls_client_ca needs tls_cert and tls_key: client certificates are part of TLS");
        }
        if self
            .socket_group
            .as_ref()
            .is_some_and(|g| g.trim().is_empty())
        {
            bail!("socket_group: empty; give a group name, or leave it unset for mode 0600");
        }
        nodeagent_core::Policy::new(&self.policy, &self.proc_root)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// The core's view of this configuration.
    pub fn core_config(&self) -> CoreConfig {
        let mut core = CoreConfig::new(self.state_dir.clone());
        core.cgroup_root = self.cgroup_root.clone();
        core.proc_root = self.proc_root.clone();
        core.cgroup_parent = self.cgroup_parent.clone();
        core.node_name = self.node_name.clone();
        core.ring_size = self.ring_size;
        core.heartbeat_interval = self.heartbeat_interval;
        core.heartbeat_sinks = self.heartbeat_sinks.clone();
        core.sinks = self.sinks.clone();
        core.stop_grace = self.stop_grace;
        core.stop_workloads = self.stop_workloads;
        core.policy = self.policy.clone();
        core
    }

    /// The configuration as a complete TOML config file.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let file = FileConfig {
            listen: Some(self.listen.clone()),
            state_dir: Some(self.state_dir.clone()),
            socket: Some(self.socket.clone()),
            cgroup_root: Some(self.cgroup_root.clone()),
            proc_root: Some(self.proc_root.clone()),
            cgroup_parent: self.cgroup_parent.clone(),
            node_name: Some(self.node_name.clone()),
            log_level: Some(self.log_level.clone()),
            ring_size: Some(self.ring_size),
            heartbeat_interval: None,
            stop_grace: Some(nodeagent_types::Duration(self.stop_grace)),
            stop_workloads: Some(self.stop_workloads),
            docker_socket: Some(self.docker_socket.clone()),
            heartbeat: Some(HeartbeatFile {
                interval: Some(nodeagent_types::Duration(self.heartbeat_interval)),
                sinks: Some(self.heartbeat_sinks.clone()),
            }),
            sink: self.sinks.clone(),
            // The token file's path only: the token itself is never part of the configuration.
            token_file: Some(self.token_file.clone()),
            auth: Some(self.auth),
            metrics_public: Some(self.metrics_public),
            max_body: Some(nodeagent_types::Memory(self.max_body)),
            socket_group: self.socket_group.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            policy: Some(self.policy.clone()),
            otlp_endpoint: self.otlp_endpoint.clone(),
            otlp_service_name: Some(self.otlp_service_name.clone()),
            bus: self.bus.clone(),
            cluster: self.clusters.clone(),
        };
        toml::to_string(&file).context("printing the configuration")
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("config file {}", path.display()))
}

fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    // toml's message already names an unknown key and its line ("unknown field `listne`").
    Ok(toml::from_str(text)?)
}

/// The kernel's host name; "localhost" if even that cannot be read, so that a misconfigured
/// host still starts and says who it is in some way.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call; gethostname
    // writes at most `len` bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if !s.is_empty() => s.to_string(),
        _ => "localhost".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeagent_core::SinkType;

    fn layer(file: &str, args: RunArgs) -> anyhow::Result<Config> {
        Config::layer(
            parse_file(file)?,
            &args,
            Globals::default(),
            &Env::default(),
        )
    }

    #[test]
    fn defaults() {
        let c = layer("", RunArgs::default()).expect("defaults");
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.socket, PathBuf::from("./nodeagent-data/nodeagent.sock"));
        assert_eq!(c.log_level, "info");
        assert_eq!(c.ring_size, 120);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.heartbeat_sinks, vec!["file".to_string()]);
        assert_eq!(c.stop_grace, Duration::from_secs(5));
        assert_eq!(c.docker_socket, "/var/run/docker.sock");
        assert!(c.cgroup_parent.is_none());
        assert!(!c.node_name.is_empty());
    }

    #[test]
    fn flags_override_file() {
        let file = r#"
            listen = "127.0.0.1:1"
            state_dir = "/tmp/x"
            ring_size = 5
            stop_grace = "1s"
            log_level = "debug"
        "#;
        let args = RunArgs {
            listen: Some("127.0.0.1:2".into()),
            ring_size: Some(7),
            ..RunArgs::default()
        };
        let c = layer(file, args).expect("valid");
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.ring_size, 7);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.socket, PathBuf::from("/tmp/x/nodeagent.sock"));
        assert_eq!(c.stop_grace, Duration::from_secs(1));
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn tracing_is_off_unless_an_endpoint_is_given() {
        let c = layer("", RunArgs::default()).expect("valid");
        assert_eq!(c.otlp_endpoint, None);
        assert_eq!(c.otlp_service_name, "nodeagent");
        let file = r#"
            otlp_endpoint = "http://127.0.0.1:4317"
            otlp_service_name = "edge"
        "#;
        let c = layer(file, RunArgs::default()).expect("valid");
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(c.otlp_service_name, "edge");
        let args = RunArgs {
            otlp_endpoint: Some("http://collector:4317".into()),
            ..RunArgs::default()
        };
        let c = layer(file, args).expect("valid");
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        let err = layer(r#"otlp_endpoint = "collector:4317""#, RunArgs::default())
            .expect_err("no scheme");
        assert!(format!("{err:#}").contains("otlp_endpoint"), "{err:#}");
    }

    #[test]
    fn rust_log_ranks_between_file_and_own_env() {
        let env = Env {
            rust_log: Some("warn".into()),
        };
        let f = || parse_file(r#"log_level = "debug""#).expect("valid");
        let c = Config::layer(f(), &RunArgs::default(), Globals::default(), &env).expect("valid");
        assert_eq!(c.log_level, "warn");
        let args = RunArgs {
            log_level: Some("trace".into()),
            ..RunArgs::default()
        };
        let c = Config::layer(f(), &args, Globals::default(), &env).expect("valid");
        assert_eq!(c.log_level, "trace");
    }

    #[test]
    fn sinks_and_heartbeat() {
        let file = r#"
            [heartbeat]
            interval = "2s"
            sinks = ["up", "stdout"]

            [[sink]]
            name = "up"
            type = "grpc"
            address = "http://127.0.0.1:7465"
        "#;
        let c = layer(file, RunArgs::default()).expect("valid");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(
            c.heartbeat_sinks,
            vec!["up".to_string(), "stdout".to_string()]
        );
        assert_eq!(c.sinks.len(), 1);
        assert_eq!(c.sinks[0].kind, SinkType::Grpc);
        let core = c.core_config();
        assert_eq!(core.sinks, c.sinks);
        assert_eq!(core.heartbeat_interval, Duration::from_secs(2));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("listne = \"x\"", "listne"),
            ("[heartbeat]\nintervl = \"1s\"", "intervl"),
            (
                "[[sink]]\nname = \"a\"\ntype = \"file\"\nbogus = 1",
                "bogus",
            ),
            ("[[sink]]\nname = \"a\"\ntype = \"kafka\"", "kafka"),
            ("stop_grace = \"5 parsecs\"", "stop_grace"),
            ("[[sink]]\nname = \"a\"\ntype = \"grpc\"", "sink[0].address"),
            (
                "[[sink]]\nname = \"a\"\ntype = \"nats\"\nurl = \"nats://x:1\"\n[[sink]]\nname = \"b\"\ntype = \"grpc\"\naddress = \"http://x:1\"\nbatch_size = 0",
                "sink[1].batch_size",
            ),
            (
                "[[sink]]\nname = \"a\"\ntype = \"file\"\naddress = \"http://x:1\"",
                "sink[0].address",
            ),
            (
                "[[sink]]\nname = \"a\"\ntype = \"grpc\"\naddress = \"http://x:1\"\nspool_fsync = \"often\"",
                "spool_fsync",
            ),
            (
                "[[sink]]\nname = \"a\"\ntype = \"grpc\"\naddress = \"http://x:1\"\n[sink.tls]\nca = \"/x\"",
                "sink[0].tls",
            ),
            (
                "[[sink]]\nname = \"file\"\ntype = \"file\"",
                "already taken",
            ),
            ("[heartbeat]\nsinks = [\"nope\"]", "nope"),
            ("cgroup_parent = \"relative\"", "cgroup_parent"),
            ("ring_size = 0", "ring_size"),
            (
                "heartbeat_interval = \"1s\"\n[heartbeat]\ninterval = \"2s\"",
                "both",
            ),
        ];
        for (file, needle) in cases {
            let err = match layer(file, RunArgs::default()) {
                Ok(c) => panic!("{file:?} was accepted: {c:?}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(needle), "{file:?}: {err}");
        }
    }

    #[test]
    fn prints_as_toml_that_reads_back() {
        let c = layer(
            "[[sink]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://x\"\n\
             [[sink]]\nname = \"g\"\ntype = \"grpc\"\naddress = \"https://up:443\"\n\
             batch_age = \"2ms\"\ncompression = \"gzip\"\nspool_max_bytes = \"64Mi\"\n\
             spool_fsync = \"always\"\nlabels = { rack = \"r1\" }\n[sink.tls]\nca = \"/ca.pem\"",
            RunArgs::default(),
        )
        .expect("valid");
        assert_eq!(
            c.sinks[1].tls.as_ref().and_then(|t| t.ca.clone()),
            Some(PathBuf::from("/ca.pem"))
        );
        let text = c.to_toml().expect("toml");
        let back = layer(&text, RunArgs::default()).expect("reads back");
        assert_eq!(back, c);
    }

    #[test]
    fn security_settings_layer_and_check() {
        let c = layer("", RunArgs::default()).expect("defaults");
        assert_eq!(c.auth, AuthMode::Token);
        assert_eq!(c.token_file, PathBuf::from("./nodeagent-data/token"));
        assert!(!c.metrics_public);
        assert_eq!(c.max_body, 1 << 20);
        assert_eq!(c.socket_group, None);
        assert_eq!(c.policy, PolicyConfig::default());

        let file = r#"
            state_dir = "/tmp/sd"
            auth = "none"
            metrics_public = true
            max_body = "64Ki"
            socket_group = "adm"
            tls_cert = "/c.pem"
            tls_key = "/k.pem"
            tls_client_ca = "/ca.pem"
            [policy]
            process_commands = ["/usr/bin/"]
            cgroup_parents = ["/workloads"]
            allow_privileged = true
            mount_sources = ["/srv/"]
        "#;
        let c = layer(file, RunArgs::default()).expect("valid");
        assert_eq!(c.auth, AuthMode::None);
        assert_eq!(c.token_file, PathBuf::from("/tmp/sd/token"));
        assert!(c.metrics_public);
        assert_eq!(c.max_body, 64 << 10);
        assert_eq!(c.socket_group.as_deref(), Some("adm"));
        assert_eq!(c.tls_client_ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            c.policy.process_commands,
            Some(vec!["/usr/bin/".to_string()])
        );
        assert!(c.policy.allow_privileged);
        assert!(!c.policy.allow_host_namespaces);
        assert_eq!(c.core_config().policy, c.policy);
        // Flags win, and the printout reads back to the same configuration.
        let args = RunArgs {
            auth: Some(AuthMode::Token),
            metrics_public: Some(false),
            max_body: Some(4096),
            ..RunArgs::default()
        };
        let c = layer(file, args).expect("valid");
        assert_eq!(c.auth, AuthMode::Token);
        assert!(!c.metrics_public);
        assert_eq!(c.max_body, 4096);
        let text = c.to_toml().expect("toml");
        assert!(text.contains("token_file = \"/tmp/sd/token\""), "{text}");
        assert_eq!(layer(&text, RunArgs::default()).expect("reads back"), c);

        for (file, needle) in [
            ("tls_cert = \"/c.pem\"", "tls_key"),
            ("tls_key = \"/k.pem\"", "tls_cert"),
            ("tls_client_ca = \"/ca.pem\"", "tls_client_ca needs"),
            ("max_body = 10", "max_body"),
            ("max_body = \"1Gi\"", "max_body"),
            ("auth = \"password\"", "password"),
            ("socket_group = \" \"", "socket_group"),
            (
                "[policy]\nprocess_commands = [\"bin/\"]",
                "policy.process_commands[0]",
            ),
            (
                "[policy]\ncgroup_parents = [\"x\"]",
                "policy.cgroup_parents[0]",
            ),
            ("[policy]\nallow_everything = true", "allow_everything"),
        ] {
            let err = match layer(file, RunArgs::default()) {
                Ok(c) => panic!("{file:?} was accepted: {c:?}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(needle), "{file:?}: {err}");
        }
    }
}
