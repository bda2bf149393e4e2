//! `nodeagent run`: the daemon's start-up sequence, signal handling and shutdown.
//!
//! Order of start-up, and why:
//! 1. configuration, then logging (the log level is part of the configuration);
//! 2. signal handlers, first of all, so a SIGTERM during start-up is a clean stop rather than
//!    the default instant death half-way through creating cgroups;
//! 3. the state dir (0700, and refused if others can write to it: it holds the socket and the
//!    API token), then the token (generated on first start) and the TLS files;
//!    The pid lock (`<state-dir>/nodeagent.pid`, see [`crate::pidlock`]) is taken right after;
//! 4. the TCP listener and the unix socket, *before* the core: a port in use, a second agent
//!    on the same state dir, or a listener exposed without authentication is then reported
//!    before any cgroup or thread is created;
//! 5. the core (`Agent::start`: drivers, managers, collectors, reporters);
//! 6. the event loop and both servers, under one shutdown signal; then the "ready" line.
//!
//! Shutdown: the first SIGTERM/SIGINT flips a `watch` flag that the core and both servers wait
//! on; they drain and return. A second signal exits at once.

use crate::cli::GlobalOpts;
use crate::config::{AuthMode, Config, Env, Globals, RunArgs};
use crate::security;
use anyhow::{bail, Context as _};
use nodeagent_core::Agent;
use nodeagent_engine::kinds;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The agent runs on a fixed, small number of threads however many objects it has (DESIGN.md
/// §3); sampling has its own thread inside the core.
const WORKER_THREADS: usize = 2;
/// How long the core and servers get to drain after the first signal before the agent gives
/// up on them and exits anyway (issue 5: out within 2 s of SIGTERM). The core persists its
/// state before it drains the sinks, and network sinks get 1 s of that to deliver; what they
/// hold stays in their spool.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1700);

/// The open-file limit the agent asks for: 10,000 objects at about 8 open files each, and room
/// for connections, with margin.
const NOFILE_WANT: u64 = 1 << 18;

pub fn main(global: &GlobalOpts, args: RunArgs) -> anyhow::Result<()> {
    let cfg = Config::load(
        &args,
        Globals {
            state_dir: global.state_dir.clone(),
            socket: global.socket.clone(),
            token_file: global.token_file.clone(),
        },
        &Env::from_process(),
    )?;
    if args.print_config {
        print!("{}", cfg.to_toml()?);
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("nodeagent-rt")
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    // Inside the runtime: the OTLP exporter's channel (when tracing is on) is created on it.
    let telemetry = {
        let _rt = rt.enter();
        crate::telemetry::init(&crate::telemetry::Settings {
            log_level: &cfg.log_level,
            otlp_endpoint: cfg.otlp_endpoint.as_deref(),
            service_name: &cfg.otlp_service_name,
        })?
    };
    let result = rt.block_on(run(cfg));
    // The last spans (the shutdown's own requests among them) leave before the runtime stops.
    telemetry.shutdown();
    // Blocking tasks still running (a stuck cgroupfs write) must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %cfg.node_name,
        "starting"
    );
    let mut signals = Signals::install()?;
    match nodeagent_drivers::process::raise_nofile_limit(NOFILE_WANT) {
        Ok(l) => {
            // Counter files kept open get what the limit leaves after a reserve for sockets,
            // the store, spools and spawns; objects past that open their files per sample.
            let soft = usize::try_from(l.now.0).unwrap_or(usize::MAX);
            let budget = soft.saturating_sub((soft / 10).max(2048));
            nodeagent_drivers::cgroup::set_open_budget(budget);
            if l.now.0 < NOFILE_WANT {
                warn!(
                    before = ?l.before,
                    now = ?l.now,
                    "the open-file limit could not be raised to {NOFILE_WANT}: counter files stay open for about {} objects (8 each), and objects past that open their files at each sample, which costs more CPU (raise LimitNOFILE)",
                    budget / 8
                );
            } else {
                debug!(before = ?l.before, now = ?l.now, budget, "open-file limit raised");
            }
        }
        Err(e) => warn!(error = %e, "reading the open-file limit"),
    }
    create_state_dir(&cfg.state_dir)?;
    security::check_state_dir(&cfg.state_dir)?;
    // Before the listeners and the store: a second agent on this state dir is told which agent
    // runs there, rather than failing on the port, the socket or the store's own lock.
    let _pid_lock = crate::pidlock::acquire(&cfg.state_dir, &cfg.socket, &cfg.listen)?;
    let token = match cfg.auth {
        AuthMode::Token => {
            let (token, created) = security::load_or_create_token(&cfg.token_file)?;
            if created {
                info!(path = %cfg.token_file.display(), "generated the API token (mode 0600); TCP clients send it as `Authorization: Bearer <token>`");
            }
            Some(token)
        }
        AuthMode::None => None,
    };
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(
            nodeagent_api::tls::ServerTls::load(&nodeagent_api::tls::ServerFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: cfg.tls_client_ca.clone(),
            })
            .context("loading TLS (tls_cert, tls_key, tls_client_ca)")?,
        ),
        _ => None,
    };

    let tcp = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", cfg.listen))?;
    let http_addr = tcp
        .local_addr()
        .context("reading the TCP listener's address")?;
    security::check_tcp_exposure(&cfg, http_addr)?;
    let (unix, _socket_file) = bind_socket(&cfg).await?;
    let tcp_opts = nodeagent_api::TcpOptions {
        token,
        metrics_public: cfg.metrics_public,
        tls,
        max_body: usize::try_from(cfg.max_body).unwrap_or(usize::MAX),
    };
    let unix_opts = nodeagent_api::UnixOptions {
        max_body: tcp_opts.max_body,
    };
    let tcp_opts_max_body = tcp_opts.max_body;
    let access = access_summary(&cfg);

    // The kinds this agent runs: adding a kind adds its line here.
    let docker_socket = cfg.docker_socket.clone();
    let clusters = cfg.clusters.clone();
    // The binaries the vm and helm kinds run: from the environment, or found on PATH.
    let binary = |var: &str, default: &str| {
        std::env::var(var)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let qemu = binary("NODEAGENT_QEMU", "qemu-system-x86_64");
    let helm = binary("NODEAGENT_HELM", "helm");
    let helm_clusters = cfg.clusters.clone();
    let kinds = vec![
        kinds::kind(kinds::process::ProcessKind::new),
        kinds::kind(kinds::cgroup::CgroupKind::new),
        kinds::kind(move |env| kinds::container::ContainerKind::new(env, &docker_socket)),
        kinds::kind(move |env| kinds::vm::VmKind::new(env, &qemu)),
        kinds::kind(move |env| kinds::k8s::K8sKind::new(env, clusters)),
        kinds::kind(move |env| kinds::helm::HelmKind::new(env, helm_clusters, helm)),
    ];
    let (agent, handle) =
        Agent::start(cfg.core_config(), kinds).context("starting the agent core")?;
    // Network sinks register the host with their upstream in the background (start-up never
    // waits for an upstream, which may be down); say which, or that there is none.
    let upstreams: Vec<String> = cfg
        .sinks
        .iter()
        .filter(|s| s.kind.is_network())
        .map(|s| {
            format!(
                "{}={}",
                s.name,
                s.address.as_deref().or(s.url.as_deref()).unwrap_or("")
            )
        })
        .collect();
    if upstreams.is_empty() {
        info!("no upstream configured (no sink of type grpc or nats): reports stay on this node");
    } else {
        info!(upstreams = %upstreams.join(","), "reporting upstream; registering in the background");
    }

    let (tx, rx) = watch::channel(false);
    let agent_fut = agent.run(shutdown_signal(rx.clone()));
    let tcp_fut = async {
        let r =
            nodeagent_api::serve_tcp(tcp, handle.clone(), tcp_opts, shutdown_signal(rx.clone()))
                .await;
        // A server that stops by itself (an accept error) stops the whole agent.
        tx.send_replace(true);
        r.with_context(|| format!("HTTP/gRPC server on {http_addr}"))
    };
    let unix_fut = async {
        let r =
            nodeagent_api::serve_unix(unix, handle.clone(), unix_opts, shutdown_signal(rx.clone()))
                .await;
        tx.send_replace(true);
        r.with_context(|| format!("server on unix socket {}", cfg.socket.display()))
    };
    // Bus In: the same API over NATS, when `[bus]` is configured. It never stops the agent: a
    // server that is away is retried for as long as the agent runs.
    let bus = match &cfg.bus {
        Some(b) => Some(
            b.settings(
                &cfg.node_name,
                vec![format!("http://{http_addr}")],
                env!("CARGO_PKG_VERSION"),
            )
            .context("[bus]")?,
        ),
        None => None,
    };
    let bus_fut = async {
        let Some(settings) = bus else { return Ok(()) };
        info!(node = %settings.node, urls = %settings.urls.join(","), "bus: connecting");
        let core: std::sync::Arc<dyn nodeagent_api::Core> = std::sync::Arc::new(handle.clone());
        nodeagent_api::bus::serve(
            settings,
            core,
            tcp_opts_max_body,
            shutdown_signal(rx.clone()),
        )
        .await
        .context("[bus]")
    };
    let work = async { tokio::join!(agent_fut, tcp_fut, unix_fut, bus_fut) };
    tokio::pin!(work);

    info!(
        "nodeagent ready http={http_addr} grpc={http_addr} socket={} state_dir={} {access}",
        cfg.socket.display(),
        cfg.state_dir.display()
    );

    let ((), tcp_res, unix_res, bus_res) = tokio::select! {
        done = &mut work => done,
        sig = signals.next() => {
            info!(signal = sig, "shutting down");
            tx.send_replace(true);
            tokio::select! {
                done = &mut work => done,
                sig = signals.next() => {
                    warn!(signal = sig, "second signal: exiting immediately");
                    std::process::exit(128 + signal_number(sig));
                }
                () = tokio::time::sleep(DRAIN_TIMEOUT) => {
                    bail!("shutdown did not finish within {:?}; exiting", DRAIN_TIMEOUT);
                }
            }
        }
    };
    tcp_res?;
    unix_res?;
    bus_res?;
    info!("stopped");
    Ok(())
}

/// Resolves once the flag is set (or its sender is gone, which also means "stop").
async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn signal_number(name: &str) -> i32 {
    match name {
        "SIGINT" => libc::SIGINT,
        _ => libc::SIGTERM,
    }
}

fn create_state_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state dir {} (--state-dir)", dir.display()))?;
    if !dir.is_dir() {
        bail!("state dir {} exists and is not a directory", dir.display());
    }
    Ok(())
}

/// Removes the socket file when the daemon stops, so the next start finds no stale file and
/// clients get "no such file" (daemon not running) rather than "connection refused".
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `auth=token tls=mtls socket_mode=0600`: how each listener lets callers in, for the ready line.
fn access_summary(cfg: &Config) -> String {
    let tls = match (&cfg.tls_cert, &cfg.tls_client_ca) {
        (None, _) => "off",
        (Some(_), None) => "on",
        (Some(_), Some(_)) => "mtls",
    };
    let socket = match &cfg.socket_group {
        None => "0600".to_string(),
        Some(g) => format!("0660:{g}"),
    };
    let metrics = if cfg.metrics_public {
        " metrics=public"
    } else {
        ""
    };
    format!(
        "auth={} tls={tls} socket_mode={socket}{metrics}",
        cfg.auth.as_str()
    )
}

/// Binds the API's unix socket, replacing a stale socket file left by a daemon that died, but
/// never one a live daemon still answers on, nor a file that is not a socket. The socket is
/// created private (umask 0177) and then given its final mode (0600, or 0660 to
/// `socket_group`).
async fn bind_socket(cfg: &Config) -> anyhow::Result<(tokio::net::UnixListener, SocketFile)> {
    let path: &Path = &cfg.socket;
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                bail!(
                    "another nodeagent is already serving on {}; stop it, or give this one another --state-dir or --socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it (--socket)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating the socket's directory {}", parent.display()))?;
    }
    let listener = security::with_private_umask(|| tokio::net::UnixListener::bind(path))
        .with_context(|| format!("cannot bind unix socket {} (--socket)", path.display()))?;
    let guard = SocketFile(path.to_path_buf());
    // Only the owner (root), or the members of socket_group, may drive the agent over it.
    security::secure_socket(path, &cfg.state_dir, cfg.socket_group.as_deref())?;
    Ok((listener, guard))
}
