//! Bus In: the agent's API over NATS, for a control plane that reaches a whole fleet without
//! knowing its addresses or opening ports on its nodes.
//!
//! - **Requests** on `<prefix>.node.<node>.<op>` and `<prefix>.fleet.<op>` ([`wire`]) are turned
//!   into the HTTP request of the same operation and run through the same router as HTTP, in
//!   process ([`Dispatcher`]). So a bus request gets exactly HTTP's validation, policy, errors
//!   and audit, and the answer is the JSON body HTTP would send, with its status. The audit
//!   record's caller is `bus:<identity>` (the sender's [`wire::IDENTITY_HEADER`]), transport
//!   `bus`, with the subject.
//! - **Durable commands** ([`durable`]) wait in a JetStream stream until the node applies them;
//!   a node acknowledges one only after its result is stored, and a redelivered one whose result
//!   is stored is not applied again.
//! - **The registry** ([`registry`]): each node keeps its entry in a key-value bucket fresh.
//!
//! One task reads both subscriptions; each request runs in a task of its own, at most
//! `max_inflight` at once. Past that a request is answered `503 busy` at once, so a flooding
//! requester gets refusals instead of stalling the agent's own work (the core's loop never waits
//! for the bus). Losing the server stops none of the agent's local work: the client reconnects
//! with backoff and restores its subscriptions, and the registry and the durable consumer are
//! re-established on the next heartbeat.

pub mod client;
mod durable;
mod registry;
pub mod wire;

use crate::auth::Peer;
use crate::core::Core;
use axum::extract::ConnectInfo;
use axum::http;
use futures::StreamExt as _;
use nodeagent_types::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;
use wire::{Op, Reply, Request};

pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_INFLIGHT: usize = 64;
pub const DEFAULT_DURABLE_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `[bus]` of the config file. Secrets are read from files only, so that the configuration
/// itself (which `--print-config` shows) holds none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// NATS servers, e.g. `["nats://127.0.0.1:4222"]`; the client fails over between them.
    #[serde(default)]
    pub urls: Vec<String>,
    /// This node's name on the bus [default: the node name, with characters other than letters,
    /// digits, `-` and `_` as `_`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The node's labels, which fleet selectors match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_file: Option<PathBuf>,
    /// A NATS `.creds` file (user JWT and nkey seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// The CA that signed the servers' certificates (and requires TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// How often the registry entry is refreshed [default: 5s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<nodeagent_types::Duration>,
    /// Bus requests in progress at once; more are answered 503 [default: 64].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inflight: Option<usize>,
    /// Consume durable commands [default: true].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<bool>,
    /// The hub's JetStream domain, for an agent behind a leaf node (README, "Bridging
    /// networks"): its JetStream requests then go to `$JS.<domain>.API`, which the leaf node
    /// forwards to the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream_domain: Option<String>,
    /// Replicas of the buckets and the commands stream the agent creates (3 in a 3-server
    /// cluster) [default: 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
}

/// How to connect and authenticate: shared by the agent and the fleet client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BusAuth {
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub nkey_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Where replies to this client's own requests come back [default: `_INBOX`]. The agent
    /// uses `_INBOX_<node>`, so that an authorization can let each node read only its own
    /// replies.
    pub inbox_prefix: Option<String>,
    /// The JetStream domain of the buckets and the stream (`None`: the server's own).
    pub jetstream_domain: Option<String>,
}

/// A bad `[bus]` setting, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bus.{field}: {message}")]
pub struct BusConfigError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> BusConfigError {
    BusConfigError {
        field,
        message: message.into(),
    }
}

fn read_secret(path: &std::path::Path, field: &'static str) -> Result<String, BusConfigError> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| bad(field, format!("{}: {e}", path.display())))?;
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(bad(field, format!("{} is empty", path.display())));
    }
    Ok(s)
}

impl BusAuth {
    /// The JetStream context of this connection (in its domain, if any).
    pub fn jetstream(&self, client: async_nats::Client) -> async_nats::jetstream::Context {
        match &self.jetstream_domain {
            Some(d) => async_nats::jetstream::with_domain(client, d),
            None => async_nats::jetstream::new(client),
        }
    }

    /// The client's connect options with these credentials (files are read now).
    pub async fn options(&self) -> Result<async_nats::ConnectOptions, BusConfigError> {
        let mut o = async_nats::ConnectOptions::new();
        let methods = [
            self.user.is_some(),
            self.token_file.is_some(),
            self.nkey_file.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(bad(
                "user",
                "give one way to authenticate: user (with password_file), token_file, nkey_file or creds_file",
            ));
        }
        if let Some(u) = &self.user {
            let Some(p) = &self.password_file else {
                return Err(bad("password_file", "user needs a password_file"));
            };
            o = o.user_and_password(u.clone(), read_secret(p, "password_file")?);
        } else if self.password_file.is_some() {
            return Err(bad("user", "password_file needs a user"));
        }
        if let Some(t) = &self.token_file {
            o = o.token(read_secret(t, "token_file")?);
        }
        if let Some(n) = &self.nkey_file {
            o = o.nkey(read_secret(n, "nkey_file")?);
        }
        if let Some(c) = &self.creds_file {
            o = o
                .credentials_file(c)
                .await
                .map_err(|e| bad("creds_file", format!("{}: {e}", c.display())))?;
        }
        if let Some(ca) = &self.tls_ca {
            if !ca.is_file() {
                return Err(bad("tls_ca", format!("{} is not a file", ca.display())));
            }
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => o = o.add_client_certificate(c.clone(), k.clone()),
            (None, None) => {}
            (Some(_), None) => return Err(bad("tls_key", "tls_cert needs a tls_key")),
            (None, Some(_)) => return Err(bad("tls_cert", "tls_key needs a tls_cert")),
        }
        if let Some(p) = &self.inbox_prefix {
            o = o.custom_inbox_prefix(p);
        }
        Ok(o.connection_timeout(CONNECT_TIMEOUT))
    }
}

/// `[bus]` checked and filled in: what [`serve`] runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct BusSettings {
    pub urls: Vec<String>,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub prefix: String,
    pub auth: BusAuth,
    pub heartbeat: Duration,
    pub max_inflight: usize,
    pub durable: bool,
    pub replicas: usize,
    /// What the registry lists as the node's addresses (its API listener).
    pub addresses: Vec<String>,
    pub version: String,
}

impl BusConfig {
    /// Checks the settings; `node_name` is the agent's, the default of `bus.node`.
    pub fn settings(
        &self,
        node_name: &str,
        addresses: Vec<String>,
        version: &str,
    ) -> Result<BusSettings, BusConfigError> {
        if self.urls.is_empty() {
            return Err(bad(
                "urls",
                "give at least one NATS server, e.g. urls = [\"nats://127.0.0.1:4222\"]",
            ));
        }
        // Parsed as the client will parse them, so that a bad one stops the start, naming it.
        for u in &self.urls {
            if u.trim().is_empty() || u.contains(char::is_whitespace) {
                return Err(bad("urls", format!("{u:?} is not a NATS URL")));
            }
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| bad("urls", format!("{u:?}: {e}")))?;
        }
        let node = match &self.node {
            Some(n) if wire::valid_node(n) => n.clone(),
            Some(n) => {
                return Err(bad(
                    "node",
                    format!(
                        "{n:?} may hold only ASCII letters, digits, '-' and '_' (up to 128): it is a subject token"
                    ),
                ))
            }
            None => wire::node_token(node_name),
        };
        let prefix = self
            .prefix
            .clone()
            .unwrap_or_else(|| wire::DEFAULT_PREFIX.to_string());
        if prefix.is_empty()
            || prefix
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
        {
            return Err(bad(
                "prefix",
                format!(
                    "{prefix:?} is not a subject prefix (tokens separated by '.', no wildcards)"
                ),
            ));
        }
        if prefix == "nodeagent" || prefix.starts_with("nodeagent.") {
            return Err(bad(
                "prefix",
                "must not be under `nodeagent.`: the nats sink's stream captures nodeagent.> and would answer the requests itself",
            ));
        }
        for k in self.labels.keys() {
            if k.is_empty() {
                return Err(bad("labels", "a label key is empty"));
            }
        }
        let heartbeat = self.heartbeat.map_or(DEFAULT_HEARTBEAT, |d| d.as_std());
        if heartbeat < Duration::from_millis(100) || heartbeat > Duration::from_secs(3600) {
            return Err(bad("heartbeat", "give 100ms to 1h"));
        }
        let max_inflight = self.max_inflight.unwrap_or(DEFAULT_MAX_INFLIGHT);
        if max_inflight == 0 || max_inflight > 10_000 {
            return Err(bad("max_inflight", "give 1 to 10000"));
        }
        if let Some(d) = &self.jetstream_domain {
            if d.is_empty()
                || !d
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(
                    "jetstream_domain",
                    format!("{d:?}: letters, digits, '-' and '_' only"),
                ));
            }
        }
        let replicas = self.replicas.unwrap_or(1);
        if !(1..=5).contains(&replicas) {
            return Err(bad("replicas", "give 1 to 5"));
        }
        let inbox_prefix = format!("_INBOX_{node}");
        Ok(BusSettings {
            urls: self.urls.clone(),
            node,
            labels: self.labels.clone(),
            prefix,
            auth: BusAuth {
                user: self.user.clone(),
                password_file: self.password_file.clone(),
                token_file: self.token_file.clone(),
                nkey_file: self.nkey_file.clone(),
                creds_file: self.creds_file.clone(),
                tls_ca: self.tls_ca.clone(),
                tls_cert: self.tls_cert.clone(),
                tls_key: self.tls_key.clone(),
                inbox_prefix: Some(inbox_prefix),
                jetstream_domain: self.jetstream_domain.clone(),
            },
            heartbeat,
            max_inflight,
            durable: self.durable.unwrap_or(true),
            replicas,
            addresses,
            version: version.to_string(),
        })
    }
}

/// Runs bus requests through the API's router, in process.
#[derive(Clone)]
pub struct Dispatcher {
    router: axum::Router,
    node: String,
    max_body: usize,
}

impl Dispatcher {
    pub fn new(core: Arc<dyn Core>, node: &str, max_body: usize) -> Dispatcher {
        Dispatcher {
            router: crate::bus_router(core, max_body),
            node: node.to_string(),
            max_body,
        }
    }

    /// Answers one request envelope for `op`. `identity` is the sender's claim (for the audit
    /// record); `subject` is where it came from.
    pub async fn dispatch(
        &self,
        op: Op,
        req: &Request,
        identity: Option<&str>,
        subject: &str,
    ) -> Reply {
        match self.try_dispatch(op, req, identity, subject).await {
            Ok(r) => r,
            Err(e) => Reply::error(&self.node, &e),
        }
    }

    async fn try_dispatch(
        &self,
        op: Op,
        req: &Request,
        identity: Option<&str>,
        subject: &str,
    ) -> Result<Reply, ApiError> {
        req.check(op)?;
        let (method, path) = op.http(req.key.as_deref().unwrap_or(""));
        let q = req.query_string();
        let uri = if q.is_empty() {
            path
        } else {
            format!("{path}?{q}")
        };
        let body = match &req.body {
            Some(b) if op.has_body() => serde_json::to_vec(b)
                .map_err(|e| ApiError::invalid("body", format!("not JSON: {e}")))?,
            _ => Vec::new(),
        };
        if body.len() > self.max_body {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the body is larger than the limit of {} bytes (max_body)",
                    self.max_body
                ),
            ));
        }
        let mut hreq = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body))
            .map_err(|e| ApiError::invalid("query", format!("not a valid request: {e}")))?;
        hreq.extensions_mut().insert(ConnectInfo(Peer::Bus {
            identity: identity.map(str::to_string),
            subject: subject.to_string(),
        }));
        let resp = match self.router.clone().oneshot(hreq).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status().as_u16();
        // Answers are the HTTP API's JSON documents; the cap only bounds a runaway one.
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .map_err(|e| ApiError::internal(format!("reading the answer: {e}")))?;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        Ok(Reply {
            node: self.node.clone(),
            status,
            body,
        })
    }
}

/// The sender's identity header, if any (bounded, printable).
fn identity_of(m: &async_nats::Message) -> Option<String> {
    let v = m.headers.as_ref()?.get(wire::IDENTITY_HEADER)?.as_str();
    let v: String = v.chars().filter(|c| !c.is_control()).take(128).collect();
    (!v.is_empty()).then_some(v)
}

/// Connects to the bus and serves until `shutdown` resolves; the registry entry is then marked
/// `stopped`. Connection problems are retried for as long as the agent runs; only bad settings
/// (unreadable credentials) end it with an error.
pub async fn serve(
    s: BusSettings,
    core: Arc<dyn Core>,
    max_body: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BusConfigError> {
    let node = s.node.clone();
    let opts = s
        .auth
        .options()
        .await?
        .name(format!("nodeagent {node}"))
        .retry_on_initial_connect()
        .max_reconnects(None::<usize>)
        .reconnect_delay_callback(|attempts| {
            let ms = 100u64.saturating_mul(1 << attempts.min(5) as u64);
            Duration::from_millis(ms.min(3000))
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("bus: connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("bus: disconnected from NATS; reconnecting")
                }
                other => tracing::debug!(event = %other, "bus"),
            }
        });
    let urls: Vec<async_nats::ServerAddr> = s
        .urls
        .iter()
        .map(|u| u.parse().map_err(|e| bad("urls", format!("{u:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    // `connect` waits for the first connection even with `retry_on_initial_connect`: a server
    // that is down must not hold up the agent's shutdown.
    let mut shutdown = std::pin::pin!(shutdown);
    let client = tokio::select! {
        c = opts.connect(urls.as_slice()) => c.map_err(|e| bad("urls", format!("{e}")))?,
        () = &mut shutdown => return Ok(()),
    };
    let dispatcher = Dispatcher::new(core.clone(), &node, max_body);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reg = tokio::spawn(registry::run(
        client.clone(),
        s.clone(),
        core,
        stop_rx.clone(),
    ));
    let dur = s.durable.then(|| {
        tokio::spawn(durable::run(
            client.clone(),
            s.clone(),
            dispatcher.clone(),
            stop_rx.clone(),
        ))
    });
    let requests = serve_requests(client.clone(), &s, dispatcher);
    tokio::select! {
        r = requests => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "bus: subscriptions ended");
            }
        }
        () = &mut shutdown => {}
    }
    // The agent's shutdown has under 2 s in all: nothing here may wait on an absent server.
    // The tasks get 800 ms in all (the registry's last word, a command being applied), and are
    // cut off after that.
    let _ = stop_tx.send(true);
    let (reg_abort, dur_abort) = (reg.abort_handle(), dur.as_ref().map(|d| d.abort_handle()));
    let drain = async {
        if let Some(d) = dur {
            let _ = d.await;
        }
        let _ = reg.await;
        let _ = client.flush().await;
    };
    if tokio::time::timeout(Duration::from_millis(800), drain)
        .await
        .is_err()
    {
        reg_abort.abort();
        if let Some(d) = dur_abort {
            d.abort();
        }
    }
    Ok(())
}

/// Reads the node's and the fleet's subjects until the client is dropped.
async fn serve_requests(
    client: async_nats::Client,
    s: &BusSettings,
    dispatcher: Dispatcher,
) -> Result<(), async_nats::SubscribeError> {
    let mine = client
        .subscribe(format!("{}.node.{}.*", s.prefix, s.node))
        .await?;
    let fleet = client.subscribe(format!("{}.fleet.*", s.prefix)).await?;
    tracing::info!(node = %s.node, prefix = %s.prefix, "bus: serving requests");
    let mut all = futures::stream::select(mine.map(|m| (false, m)), fleet.map(|m| (true, m)));
    let limit = Arc::new(Semaphore::new(s.max_inflight));
    let labels = Arc::new(s.labels.clone());
    while let Some((is_fleet, m)) = all.next().await {
        let Some(reply_to) = m.reply.clone() else {
            continue;
        };
        let op = wire::op_of(&m.subject);
        let req = Request::from_json(&m.payload);
        if is_fleet {
            // Only matching nodes answer; a request that does not parse is answered by each
            // node, so that the sender learns why.
            if let Ok(r) = &req {
                let sel = r.selector.clone().unwrap_or_default();
                if !sel.matches(&s.node, &labels) {
                    continue;
                }
            }
        } else if req.as_ref().is_ok_and(|r| r.selector.is_some()) {
            let e = ApiError::invalid("selector", "a selector is for fleet subjects only");
            publish_reply(&client, reply_to, &Reply::error(&s.node, &e)).await;
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            publish_reply(&client, reply_to, &Reply::busy(&s.node, s.max_inflight)).await;
            continue;
        };
        let (client, d, node) = (client.clone(), dispatcher.clone(), s.node.clone());
        let identity = identity_of(&m);
        tokio::spawn(async move {
            let _permit = permit;
            let reply = match (op, req) {
                (None, _) => Reply::error(
                    &node,
                    &ApiError::invalid(
                        "subject",
                        format!(
                            "{} names no operation; use one of: {}",
                            m.subject,
                            Op::ALL.map(Op::as_str).join(", ")
                        ),
                    ),
                ),
                (Some(_), Err(e)) => Reply::error(&node, &e),
                (Some(op), Ok(r)) => d.dispatch(op, &r, identity.as_deref(), &m.subject).await,
            };
            publish_reply(&client, reply_to, &reply).await;
        });
    }
    Ok(())
}

/// Publishes an answer. One larger than the server's payload limit is replaced by an error
/// that says so, rather than being lost.
async fn publish_reply(client: &async_nats::Client, to: async_nats::Subject, r: &Reply) {
    let mut bytes = serde_json::to_vec(r).unwrap_or_default();
    let max = client.server_info().max_payload;
    if max > 0 && bytes.len() > max {
        let e = ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the answer ({} bytes) is larger than the NATS server's max_payload ({max} bytes); ask for less (a key, a limit) or use HTTP",
                bytes.len()
            ),
        );
        bytes = serde_json::to_vec(&Reply::error(&r.node, &e)).unwrap_or_default();
    }
    if let Err(e) = client.publish(to, bytes.into()).await {
        tracing::debug!(error = %e, "bus: reply not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_field() {
        let c = BusConfig::default();
        assert_eq!(
            c.settings("n", vec![], "0").expect_err("urls").field,
            "urls"
        );
        let mut c = BusConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            ..Default::default()
        };
        let s = c.settings("web-1.example", vec![], "0").expect("ok");
        assert_eq!(s.node, "web-1_example");
        assert_eq!(s.prefix, wire::DEFAULT_PREFIX);
        c.node = Some("a.b".into());
        assert_eq!(
            c.settings("n", vec![], "0").expect_err("node").field,
            "node"
        );
        c.node = None;
        c.prefix = Some("nodeagent.v1".into());
        assert_eq!(
            c.settings("n", vec![], "0").expect_err("prefix").field,
            "prefix"
        );
        c.prefix = Some("a.>".into());
        assert_eq!(
            c.settings("n", vec![], "0").expect_err("prefix").field,
            "prefix"
        );
        c.prefix = None;
        c.max_inflight = Some(0);
        assert_eq!(
            c.settings("n", vec![], "0").expect_err("inflight").field,
            "max_inflight"
        );
    }

    #[tokio::test]
    async fn auth_is_one_method_with_its_files() {
        let a = BusAuth {
            user: Some("u".into()),
            ..Default::default()
        };
        assert_eq!(
            a.options()
                .await
                .map(|_| ())
                .expect_err("no password")
                .field,
            "password_file"
        );
        let a = BusAuth {
            user: Some("u".into()),
            token_file: Some("/nonexistent".into()),
            ..Default::default()
        };
        assert_eq!(
            a.options().await.map(|_| ()).expect_err("two").field,
            "user"
        );
        let a = BusAuth {
            token_file: Some("/nonexistent/token".into()),
            ..Default::default()
        };
        let e = a.options().await.map(|_| ()).expect_err("missing file");
        assert_eq!(e.field, "token_file");
        assert!(e.message.contains("/nonexistent/token"), "{e}");
    }
}
