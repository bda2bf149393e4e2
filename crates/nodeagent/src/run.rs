//! `nodeagent run`: the daemon's start-up sequence, signal handling and shutdown.
//!
//! Order of start-up, and why:
//! 1. configuration, then logging (the log level is part of the configuration);
//! 2. signal handlers, first of all, so a SIGTERM during start-up is a clean stop rather than
//!    the default instant death half-way through creating cgroups;
//! 3. the state dir (0700: it will hold the socket and, later, the API token);
//! 4. the TCP listener and the unix socket, *before* the core: a port in use or a second agent
//!    on the same state dir is then reported before any cgroup or thread is created;
//! 5. the core (`Agent::start`: drivers, managers, collectors, reporters);
//! 6. the event loop and both servers, under one shutdown signal; then the "ready" line.
//!
//! Shutdown: the first SIGTERM/SIGINT flips a `watch` flag that the core and both servers wait
//! on; they drain and return. A second signal exits at once.

use crate::cli::GlobalOpts;
use crate::config::{Config, Env, RunArgs};
use anyhow::{anyhow, bail, Context as _};
use nodeagent_core::Agent;
use std::io::IsTerminal as _;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tracing::{info, warn};

/// The agent runs on a fixed, small number of threads however many objects it has (DESIGN.md
/// §3); sampling has its own thread inside the core.
const WORKER_THREADS: usize = 2;
/// How long the core and servers get to drain after the first signal before the agent gives
/// up on them and exits anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn main(global: &GlobalOpts, args: RunArgs) -> anyhow::Result<()> {
    let cfg = Config::load(
        &args,
        global.state_dir.clone(),
        global.socket.clone(),
        &Env::from_process(),
    )?;
    if args.print_config {
        print!("{}", cfg.to_toml()?);
        return Ok(());
    }
    init_tracing(&cfg.log_level)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("nodeagent-rt")
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let result = rt.block_on(run(cfg));
    // Blocking tasks still running (a stuck cgroupfs write) must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

fn init_tracing(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log level {filter:?} (--log-level / RUST_LOG)"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in a file or journal they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| anyhow!("setting up logging: {e}"))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %cfg.node_name,
        "starting"
    );
    let mut signals = Signals::install()?;
    create_state_dir(&cfg.state_dir)?;

    let tcp = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", cfg.listen))?;
    let http_addr = tcp
        .local_addr()
        .context("reading the TCP listener's address")?;
    let (unix, _socket_file) = bind_socket(&cfg.socket).await?;

    let (agent, handle) = Agent::start(cfg.core_config()).context("starting the agent core")?;
    info!("no upstream configured: host registration and the upstream RPC driver are not enabled");

    let (tx, rx) = watch::channel(false);
    let agent_fut = agent.run(shutdown_signal(rx.clone()));
    let tcp_fut = async {
        let r = nodeagent_api::serve_tcp(tcp, handle.clone(), shutdown_signal(rx.clone())).await;
        // A server that stops by itself (an accept error) stops the whole agent.
        tx.send_replace(true);
        r.with_context(|| format!("HTTP/gRPC server on {http_addr}"))
    };
    let unix_fut = async {
        let r = nodeagent_api::serve_unix(unix, handle.clone(), shutdown_signal(rx.clone())).await;
        tx.send_replace(true);
        r.with_context(|| format!("server on unix socket {}", cfg.socket.display()))
    };
    let work = async { tokio::join!(agent_fut, tcp_fut, unix_fut) };
    tokio::pin!(work);

    info!(
        "nodeagent ready http={http_addr} grpc={http_addr} socket={} state_dir={}",
        cfg.socket.display(),
        cfg.state_dir.display()
    );

    let ((), tcp_res, unix_res) = tokio::select! {
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
                    bail!("shutdown did not finish within {}s; exiting", DRAIN_TIMEOUT.as_secs());
                }
            }
        }
    };
    tcp_res?;
    unix_res?;
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

/// Binds the API's unix socket, replacing a stale socket file left by a daemon that died, but
/// never one a live daemon still answers on, nor a file that is not a socket.
async fn bind_socket(path: &Path) -> anyhow::Result<(tokio::net::UnixListener, SocketFile)> {
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
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind unix socket {} (--socket)", path.display()))?;
    let guard = SocketFile(path.to_path_buf());
    // Only the owner (root) may drive the agent over the socket.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
    Ok((listener, guard))
}
