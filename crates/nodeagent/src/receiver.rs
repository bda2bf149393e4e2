//! `nodeagent sink`: the reference upstream receiver, for demos and tests.
//!
//! It serves the `Upstream` gRPC service (`proto/nodeagent/v1/upstream.proto`): it accepts
//! registrations and heartbeats, writes every reported record as one JSON line to `--out`, drops
//! records it already has by (node, seq) (also across its own restarts: it reads `--out` back on
//! start), and acknowledges a batch once its lines are written. The service itself is
//! `nodeagent_engine::upstream::receiver`; this file adds the command line, logging and signals.

use anyhow::{anyhow, Context as _};
use nodeagent_engine::upstream::receiver::{Receiver, ReceiverOptions};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::info;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7465";

#[derive(clap::Args, Debug)]
pub struct SinkArgs {
    /// Address to serve the Upstream gRPC service on
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// JSON-lines file the records are appended to (read back on start, to recognise duplicates)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// How long a registration lasts without a heartbeat
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: Duration,

    /// fdatasync the output before acknowledging each batch
    #[arg(long)]
    pub fsync: bool,

    /// Serve TLS with this certificate (PEM); needs --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Log filter (error, warn, info, debug, trace, or RUST_LOG-style directives)
    #[arg(
        long,
        env = "NODEAGENT_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    nodeagent_types::parse_duration(s)
}

pub fn main(args: SinkArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid log level {:?} (--log-level)", args.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| anyhow!("setting up logging: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nodeagent-sink")
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let res = rt.block_on(serve(args));
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}

fn read(path: &PathBuf, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: reading {}", path.display()))
}

async fn serve(args: SinkArgs) -> anyhow::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let mut t = ServerTlsConfig::new().identity(Identity::from_pem(
                read(cert, "--tls-cert")?,
                read(key, "--tls-key")?,
            ));
            if let Some(ca) = &args.tls_client_ca {
                t = t.client_ca_root(Certificate::from_pem(read(ca, "--tls-client-ca")?));
            }
            Some(t)
        }
        _ => None,
    };
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let receiver = Receiver::open(ReceiverOptions {
        out: args.out.clone(),
        lease_ttl: args.lease_ttl,
        fsync: args.fsync,
    })
    .with_context(|| format!("opening --out {}", args.out.display()))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    info!(
        "nodeagent sink ready listen={addr} out={} tls={}",
        args.out.display(),
        tls.is_some()
    );
    let stats = receiver.clone();
    receiver
        .serve(listener, tls, async move {
            tokio::select! {
                _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
                _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
            }
        })
        .await
        .with_context(|| format!("serving on {addr}"))?;
    let s = stats.stats();
    info!(
        records = s.records.load(Ordering::Relaxed),
        duplicates = s.duplicates.load(Ordering::Relaxed),
        batches = s.batches.load(Ordering::Relaxed),
        registrations = s.registrations.load(Ordering::Relaxed),
        "stopped"
    );
    Ok(())
}
