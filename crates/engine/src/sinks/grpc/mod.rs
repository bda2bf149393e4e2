//! `grpc`: reports to an upstream that serves the `Upstream` service
//! (`proto/nodeagent/v1/upstream.proto`).
//!
//! The sender connects (with backoff while the upstream is down; start-up never waits for it),
//! registers the host, and keeps one `Report` stream open: batches from the spool go out in
//! sequence order, up to [`WINDOW`](super::net::WINDOW) of them unacknowledged, and each ack
//! moves the spool's acked cursor. A heartbeat renews the lease on an interval. When the
//! upstream no longer knows the node (NOT_FOUND, after it restarted) the sender registers again;
//! when the stream breaks or an ack is overdue it reconnects and resends everything after the
//! cursor. Batches are framed from the spool's bytes and written to the stream as they are
//! ([`RawCodec`]): no record is decoded or re-encoded on the way.

use super::net::{sleep_until, Backoff, Net};
use super::{Compression, SinkConfig, DEFAULT_UPSTREAM_HEARTBEAT};
use crate::upstream::proto::upstream_client::UpstreamClient;
use crate::upstream::proto::{Ack, HeartbeatRequest, RegisterRequest};
use crate::upstream::REPORT_PATH;
use bytes::{BufMut, Bytes};
use prost::Message;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Writes pre-encoded `Batch` messages as they are; reads `Ack`s with prost.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct AckDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = Ack;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Ack>, Status> {
        Ack::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding an ack: {e}")))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Ack;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

/// What Register gave.
#[derive(Debug, Clone)]
struct Registration {
    node_id: String,
    lease_id: String,
}

/// Why a session ended.
enum End {
    Stop,
    /// The upstream does not know this node (any more): register again.
    LeaseLost,
    Failed(String),
}

pub(crate) struct GrpcSender {
    net: Net,
    address: String,
    endpoint: Endpoint,
    gzip: bool,
    heartbeat: Duration,
    labels: BTreeMap<String, String>,
}

fn read_pem(path: &std::path::Path, field: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))
}

impl GrpcSender {
    pub(crate) fn new(cfg: &SinkConfig, net: Net) -> Result<GrpcSender, String> {
        let address = cfg
            .address
            .clone()
            .ok_or_else(|| "address: missing".to_string())?;
        let mut endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| format!("address {address:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if address.starts_with("https://") {
            let t = cfg.tls.clone().unwrap_or_default();
            let mut tls = ClientTlsConfig::new();
            tls = match &t.ca {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(read_pem(ca, "tls.ca")?)),
                None => tls.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
                tls = tls.identity(Identity::from_pem(
                    read_pem(cert, "tls.cert")?,
                    read_pem(key, "tls.key")?,
                ));
            }
            if let Some(name) = &t.server_name {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("tls: {e}"))?;
        }
        Ok(GrpcSender {
            net,
            address,
            endpoint,
            gzip: cfg.compression.unwrap_or_default() == Compression::Gzip,
            heartbeat: cfg
                .heartbeat_interval
                .map_or(DEFAULT_UPSTREAM_HEARTBEAT, |d| d.0),
            labels: cfg.labels.clone(),
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    fn client(&self, channel: Channel) -> UpstreamClient<Channel> {
        let c = UpstreamClient::new(channel);
        if self.gzip {
            c.send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip)
        } else {
            c
        }
    }

    /// Connects, registers and reports until the sink stops; never returns early on errors.
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut reg: Option<Registration> = None;
        let mut down_logged = false;
        loop {
            if self.net.stopped() {
                return;
            }
            let channel = match self.endpoint.connect().await {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!("connecting to {}: {}", self.address, error_chain(&e));
                    if !down_logged {
                        self.net.failed(&msg);
                        down_logged = true;
                    } else {
                        self.net.stats.set_error(msg);
                    }
                    if self.net.pause(backoff.next_delay()).await {
                        return;
                    }
                    continue;
                }
            };
            if reg.is_none() {
                match self.register(channel.clone()).await {
                    Ok(r) => {
                        tracing::info!(
                            sink = %self.net.name,
                            upstream = %self.address,
                            node = %self.net.node.node,
                            node_id = %r.node_id,
                            "registered with the upstream"
                        );
                        self.net.stats.set_node_id(Some(r.node_id.clone()));
                        reg = Some(r);
                    }
                    Err(e) => {
                        self.net
                            .failed(&format!("registering with {}: {e}", self.address));
                        if self.net.pause(backoff.next_delay()).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let Some(r) = reg.clone() else { continue };
            let started = Instant::now();
            match self.session(channel, &r).await {
                End::Stop => {
                    self.net.set_connected(false);
                    return;
                }
                End::LeaseLost => {
                    tracing::info!(sink = %self.net.name, "the upstream does not know this node; registering again");
                    self.net.set_connected(false);
                    reg = None;
                }
                End::Failed(e) => self.net.failed(&e),
            }
            down_logged = false;
            if started.elapsed() > Duration::from_secs(10) {
                backoff.reset();
            }
            if self.net.pause(backoff.next_delay()).await {
                return;
            }
        }
    }

    async fn register(&self, channel: Channel) -> Result<Registration, String> {
        let n = &self.net.node;
        let req = RegisterRequest {
            node: n.node.clone(),
            hostname: n.hostname.clone(),
            cpus: n.cpus,
            memory_total_bytes: n.memory_total_bytes,
            kernel: n.kernel.clone(),
            cgroup_version: n.cgroup_version.clone(),
            drivers: n.drivers.clone(),
            labels: self.labels.clone().into_iter().collect(),
            agent_version: n.agent_version.clone(),
            last_seq: self.net.spool.last_seq(),
        };
        let mut c = self.client(channel);
        match tokio::time::timeout(RPC_TIMEOUT, c.register(req)).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                Ok(Registration {
                    node_id: r.node_id,
                    lease_id: r.lease_id,
                })
            }
            Ok(Err(s)) => Err(status_text(&s)),
            Err(_) => Err(format!("no answer within {RPC_TIMEOUT:?}")),
        }
    }

    /// One report stream, from the acked cursor on, until it fails or the sink stops.
    async fn session(&mut self, channel: Channel, reg: &Registration) -> End {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        if self.gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        grpc = grpc.max_decoding_message_size(1 << 20);
        // An upstream that accepts connections and then says nothing must not hold the sender
        // forever: every step before the stream is open has a deadline.
        match tokio::time::timeout(RPC_TIMEOUT, grpc.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return End::Failed(format!("{}: {e}", self.address)),
            Err(_) => {
                return End::Failed(format!(
                    "{}: not ready within {RPC_TIMEOUT:?}",
                    self.address
                ))
            }
        }
        let window = self.net.opts.window;
        // Never fuller than the window: nothing below waits on it.
        let (tx, rx) = mpsc::channel::<Bytes>(window);
        let req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let path = PathAndQuery::from_static(REPORT_PATH);
        let opened = tokio::time::timeout(RPC_TIMEOUT, grpc.streaming(req, path, RawCodec)).await;
        let mut acks = match opened {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) if s.code() == Code::NotFound => return End::LeaseLost,
            Ok(Err(s)) => {
                return End::Failed(format!("opening the report stream: {}", status_text(&s)))
            }
            Err(_) => {
                return End::Failed(format!(
                    "opening the report stream: no answer within {RPC_TIMEOUT:?}"
                ))
            }
        };
        self.net.set_connected(true);
        let (lost_tx, mut lost_rx) = mpsc::channel::<()>(1);
        let hb = tokio::spawn(heartbeat(
            self.client(channel),
            reg.clone(),
            self.heartbeat,
            lost_tx,
            self.net.name.clone(),
        ));
        let _hb = AbortOnDrop(hb);
        self.net.rewind();
        let ack_timeout = self.net.opts.ack_timeout;
        let mut inflight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(window);
        let mut stop = self.net.stop.clone();
        loop {
            let mut wake = None;
            while inflight.len() < window {
                let (due, at) = self.net.due();
                if !due {
                    wake = at;
                    break;
                }
                let batches = match self.net.next_batches(&reg.node_id, false).await {
                    Ok(b) => b,
                    Err(e) => return End::Failed(format!("reading the spool: {e}")),
                };
                if batches.is_empty() {
                    break;
                }
                for b in batches {
                    self.net.note_sent(b.first, b.last, b.records);
                    if tx.send(b.payload).await.is_err() {
                        return End::Failed("the report stream closed".into());
                    }
                    inflight.push_back((b.last, Instant::now()));
                }
            }
            let ack_deadline = inflight.front().map(|(_, t)| *t + ack_timeout);
            let room = inflight.len() < window;
            tokio::select! {
                biased;
                () = Net::wait_stop(&mut stop) => return End::Stop,
                m = acks.message() => match m {
                    Ok(Some(ack)) => {
                        // An upstream cannot acknowledge what it was not sent.
                        let seq = ack.seq.min(inflight.back().map_or(0, |(last, _)| *last));
                        while inflight.front().is_some_and(|(last, _)| *last <= seq) {
                            inflight.pop_front();
                        }
                        self.net.note_acked(seq);
                    }
                    Ok(None) => return End::Failed("the upstream ended the report stream".into()),
                    Err(s) if s.code() == Code::NotFound => return End::LeaseLost,
                    Err(s) => return End::Failed(format!("report stream: {}", status_text(&s))),
                },
                Some(()) = lost_rx.recv() => return End::LeaseLost,
                () = self.net.spool.wait_for_data(), if room => {}
                () = sleep_until(wake), if room && wake.is_some() => {}
                () = sleep_until(ack_deadline), if ack_deadline.is_some() => {
                    return End::Failed(format!("no ack within {}", nodeagent_types::Duration(ack_timeout)));
                }
            }
        }
    }
}

/// Renews the lease every `interval`; reports a lease the upstream does not know.
async fn heartbeat(
    mut client: UpstreamClient<Channel>,
    reg: Registration,
    interval: Duration,
    lost: mpsc::Sender<()>,
    sink: String,
) {
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        t.tick().await;
        let req = HeartbeatRequest {
            node_id: reg.node_id.clone(),
            lease_id: reg.lease_id.clone(),
        };
        match tokio::time::timeout(RPC_TIMEOUT, client.heartbeat(req)).await {
            Ok(Ok(_)) => {}
            Ok(Err(s)) if s.code() == Code::NotFound => {
                let _ = lost.send(()).await;
                return;
            }
            Ok(Err(s)) => {
                tracing::debug!(sink = %sink, status = %status_text(&s), "heartbeat failed")
            }
            Err(_) => tracing::debug!(sink = %sink, "heartbeat timed out"),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn status_text(s: &Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {}", s.code(), s.message())
    }
}

/// An error with its sources, `a: b: c` (tonic's transport errors say little at the top).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
