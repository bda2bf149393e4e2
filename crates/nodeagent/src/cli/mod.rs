//! The command line: the daemon (`run`) and the client commands that talk to it.
//!
//! Client commands reach the daemon over its unix socket by default (`<state-dir>/nodeagent.sock`,
//! mode 0600, so only its owner can drive the agent), or over TCP with `--addr`.

pub mod client;
mod fleet;
mod follow;
mod monitor;
mod objects;
pub mod output;
mod sse;
mod top;
mod ui;

use crate::config::{RunArgs, RUN_LONG_ABOUT};
use clap::{Args, Parser, Subcommand, ValueEnum};
use client::Client;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "nodeagent",
    version,
    about = "nodeagent: create, control and monitor workloads (processes, cgroups and Docker \
containers) on this node",
    long_about = "nodeagent: a node agent that creates, updates and deletes workloads (processes, \
existing cgroups, and Docker containers through the Docker Engine), controls their CPU, memory and pids through cgroupfs in under a millisecond, samples \
their metrics from cgroupfs and procfs at intervals down to 10 ms, and reports them to sinks.\n\n\
`nodeagent run` starts the daemon; the other commands talk to a running daemon over its unix \
socket (or over TCP with --addr)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes. `--state-dir` and `--socket` mean the same thing to the daemon
/// (where to put them) and to the client (where to find them), so they are shared.
#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Directory of the agent's data (reports.jsonl, process logs, the socket)
    /// [default: ./nodeagent-data]
    #[arg(
        long,
        global = true,
        env = "NODEAGENT_STATE_DIR",
        value_name = "DIR",
        help_heading = "Global options"
    )]
    pub state_dir: Option<PathBuf>,

    /// Unix socket of the API (mode 0600) [default: <state-dir>/nodeagent.sock]
    #[arg(
        long,
        global = true,
        env = "NODEAGENT_SOCKET",
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub socket: Option<PathBuf>,

    /// File of the TCP API's bearer token: the daemon creates it (mode 0600) on first start,
    /// client commands send it over TCP (NODEAGENT_TOKEN, the token itself, takes precedence)
    /// [default: <state-dir>/token]
    #[arg(
        long,
        global = true,
        env = "NODEAGENT_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Global options"
    )]
    pub token_file: Option<PathBuf>,

    /// Client commands: reach the daemon over TCP at this address (http://HOST:PORT, or
    /// https://HOST:PORT for TLS) instead of the unix socket
    #[arg(
        long,
        global = true,
        env = "NODEAGENT_ADDR",
        value_name = "URL",
        help_heading = "Client options"
    )]
    pub addr: Option<String>,

    /// Client commands: the CA that signed the daemon's certificate, for https:// addresses
    /// [default: the system's CAs]
    #[arg(
        long,
        global = true,
        env = "NODEAGENT_TLS_CA",
        value_name = "FILE",
        help_heading = "Client options"
    )]
    pub tls_ca: Option<PathBuf>,

    /// Client commands: present this client certificate (PEM) to a daemon that requires one
    #[arg(
        long,
        global = true,
        env = "NODEAGENT_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires = "tls_client_key",
        help_heading = "Client options"
    )]
    pub tls_client_cert: Option<PathBuf>,

    /// Client commands: the private key of --tls-client-cert (PEM)
    #[arg(
        long,
        global = true,
        env = "NODEAGENT_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_client_cert",
        help_heading = "Client options"
    )]
    pub tls_client_key: Option<PathBuf>,

    /// Client commands: output format
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        env = "NODEAGENT_OUTPUT",
        value_enum,
        default_value_t = OutputFormat::Table,
        help_heading = "Client options"
    )]
    pub output: OutputFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Human-readable tables.
    Table,
    /// The server's JSON, pretty-printed.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent daemon
    #[command(long_about = RUN_LONG_ABOUT)]
    Run(Box<RunArgs>),
    /// Create objects from a YAML or JSON spec (several YAML documents create several objects)
    Create(objects::CreateArgs),
    /// List objects, or show one (by id or name)
    Get(objects::GetArgs),
    /// Change an object's resources in place, or pause/resume it
    Update(objects::UpdateArgs),
    /// Delete an object: stop its workload and remove its cgroup (or its container)
    Delete(objects::DeleteArgs),
    /// Start (on) or stop (off) reporting an object's samples to a sink, or send the latest once
    Push(monitor::PushArgs),
    /// Show an object's recent samples
    Metrics(monitor::MetricsArgs),
    /// Show the agent's event log
    Events(monitor::EventsArgs),
    /// Show the host: its facts and latest sample
    Host,
    /// Show the sinks: queue depth, spool size, and sent, acked, retried and dropped counts
    Sinks,
    /// A live terminal view of the host and the objects, sorted by CPU, with keys to sort,
    /// filter, pause/resume and set CPU or memory (q quits)
    Top(top::TopArgs),
    /// Print a URL that logs a browser in to the web console (/ui/) once, within 60 s
    Ui(ui::UiArgs),
    /// Drive a fleet over NATS: list the nodes on the bus, and get, create, update, delete or
    /// push on every node that matches --selector/--nodes, one row per node (agents need
    /// `[bus]` in their config)
    Fleet(Box<fleet::FleetArgs>),
    /// Run the reference upstream receiver: accepts registrations, heartbeats and reports over
    /// gRPC and writes the records to a JSON-lines file, without duplicates
    Sink(Box<crate::receiver::SinkArgs>),
}

/// The clap command, with the help of each subcommand showing only the global options that
/// apply to it: `sink` (the reference receiver) uses none of them, and `run` none of the
/// client's (`--addr`, `--tls-ca`, `-o`, ...). They are `global = true` so that they may come
/// before or after the subcommand; that also lists them in every subcommand's help (issue 21).
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    const CLIENT: [&str; 5] = [
        "addr",
        "tls_ca",
        "tls_client_cert",
        "tls_client_key",
        "output",
    ];
    const DAEMON: [&str; 3] = ["state_dir", "socket", "token_file"];
    let cmd = Cli::command();
    // clap does not propagate a global option into a subcommand that defines one of the same
    // id, so each subcommand gets a hidden, non-global copy of the ones that do not apply.
    let hidden = |ids: &[&str]| -> Vec<clap::Arg> {
        cmd.get_arguments()
            .filter(|a| ids.contains(&a.get_id().as_str()))
            .map(|a| a.clone().global(false).hide(true))
            .collect()
    };
    let all: Vec<&str> = DAEMON.iter().chain(CLIENT.iter()).copied().collect();
    let for_sink = hidden(&all);
    let for_run = hidden(&CLIENT);
    // `fleet` talks to NATS, not to a local daemon: only `-o` applies.
    let for_fleet = hidden(&all[..all.len() - 1]);
    cmd.mut_subcommand("sink", |s| s.args(for_sink))
        .mut_subcommand("run", |s| s.args(for_run))
        .mut_subcommand("fleet", |s| s.args(for_fleet))
}

/// Runs one client command on a small single-threaded runtime: the client makes a handful of
/// requests and exits, so worker threads would only cost start-up time.
pub fn main(global: &GlobalOpts, command: Command) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::new(global)?;
    let out = global.output;
    rt.block_on(async move {
        match command {
            Command::Run(_) => anyhow::bail!("`run` is not a client command"),
            Command::Create(a) => objects::create(&client, out, a).await,
            Command::Get(a) => objects::get(&client, out, a).await,
            Command::Update(a) => objects::update(&client, out, a).await,
            Command::Delete(a) => objects::delete(&client, out, a).await,
            Command::Push(a) => monitor::push(&client, out, a).await,
            Command::Metrics(a) => monitor::metrics(&client, out, a).await,
            Command::Events(a) => monitor::events(&client, out, a).await,
            Command::Host => monitor::host(&client, out).await,
            Command::Sinks => monitor::sinks(&client, out).await,
            Command::Top(a) => top::run(global, a).await,
            Command::Ui(a) => ui::run(&client, global, a).await,
            Command::Fleet(a) => fleet::run(out, *a).await,
            Command::Sink(_) => anyhow::bail!("`sink` is not a client command"),
        }
    })
}
