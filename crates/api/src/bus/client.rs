//! The control plane's side of the bus: what `nodeagent fleet` (and the tests and the fleet
//! benchmark) use to list nodes, ask one node or a selection of them, and send durable commands.

use super::durable::{ensure_results, ensure_stream};
use super::registry::ensure_registry;
use super::wire::{
    self, DurableResult, NodeRecord, Op, Reply, Request, Selector, COMMAND_ID_HEADER,
    IDENTITY_HEADER, REGISTRY_BUCKET, RESULTS_BUCKET,
};
use super::{BusAuth, BusConfigError};
use async_nats::jetstream;
use futures::StreamExt as _;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Why a fleet call failed as a whole (one node's refusal is a [`Reply`], not this).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Config(#[from] BusConfigError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("no answer from node {node} within {timeout:?} (is it connected to the bus?)")]
    Timeout { node: String, timeout: Duration },
}

fn nats(e: impl std::fmt::Display) -> FleetError {
    FleetError::Nats(e.to_string())
}

/// The answers of a fan-out: one reply per node that answered, and the nodes that were
/// expected to (the registry's live nodes matching the selector) and did not.
#[derive(Debug, Clone, Default)]
pub struct FanOut {
    pub replies: Vec<Reply>,
    pub missing: Vec<String>,
}

/// A durable command as sent: its id, per node, for following its result.
#[derive(Debug, Clone)]
pub struct Sent {
    pub node: String,
    pub id: String,
}

pub struct FleetClient {
    client: async_nats::Client,
    js: jetstream::Context,
    prefix: String,
    identity: Option<String>,
}

impl FleetClient {
    /// Connects (failing after the connect timeout, rather than retrying: a client command
    /// should say at once that the bus is unreachable).
    pub async fn connect(
        urls: &[String],
        auth: &BusAuth,
        prefix: Option<&str>,
        identity: Option<&str>,
    ) -> Result<FleetClient, FleetError> {
        let addrs: Vec<async_nats::ServerAddr> = urls
            .iter()
            .map(|u| {
                u.parse().map_err(|e| {
                    FleetError::Config(BusConfigError {
                        field: "urls",
                        message: format!("{u:?}: {e}"),
                    })
                })
            })
            .collect::<Result<_, _>>()?;
        let client = auth
            .options()
            .await?
            .name("nodeagent fleet")
            .connect(addrs.as_slice())
            .await
            .map_err(|e| FleetError::Nats(format!("connecting to {}: {e}", urls.join(","))))?;
        Ok(FleetClient {
            js: auth.jetstream(client.clone()),
            client,
            prefix: prefix.unwrap_or(wire::DEFAULT_PREFIX).to_string(),
            identity: identity.map(str::to_string),
        })
    }

    fn headers(&self) -> async_nats::HeaderMap {
        let mut h = async_nats::HeaderMap::new();
        if let Some(i) = &self.identity {
            h.insert(IDENTITY_HEADER, i.as_str());
        }
        h
    }

    /// Every node in the registry, by name. A missing bucket (no node ever registered) is an
    /// empty fleet.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, FleetError> {
        let Ok(kv) = self.js.get_key_value(REGISTRY_BUCKET).await else {
            return Ok(Vec::new());
        };
        // The keys from the stream's subject counts: one request, where the bucket's `keys()`
        // needs a consumer (which a clustered server may be slow to place).
        let stream = self
            .js
            .get_stream(format!("KV_{REGISTRY_BUCKET}"))
            .await
            .map_err(nats)?;
        let prefix = format!("$KV.{REGISTRY_BUCKET}.");
        let mut subjects = stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(nats)?;
        let mut names = BTreeSet::new();
        while let Some(s) = subjects.next().await {
            let (subject, _) = s.map_err(nats)?;
            if let Some(k) = subject.strip_prefix(&prefix) {
                names.insert(k.to_string());
            }
        }
        let mut out = Vec::new();
        for k in names {
            if let Some(v) = kv.get(&k).await.map_err(nats)? {
                if let Ok(r) = serde_json::from_slice::<NodeRecord>(&v) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// One node's answer to one request.
    pub async fn request(
        &self,
        node: &str,
        op: Op,
        req: &Request,
        timeout: Duration,
    ) -> Result<Reply, FleetError> {
        let payload = serde_json::to_vec(req).map_err(nats)?;
        let subject = wire::node_subject(&self.prefix, node, op);
        let fut = self
            .client
            .request_with_headers(subject, self.headers(), payload.into());
        let msg = match tokio::time::timeout(timeout, fut).await {
            Err(_) => {
                return Err(FleetError::Timeout {
                    node: node.to_string(),
                    timeout,
                })
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(FleetError::Nats(format!(
                    "node {node} is not on the bus (no responders on {})",
                    wire::node_subject(&self.prefix, node, op)
                )))
            }
            Ok(r) => r.map_err(nats)?,
        };
        serde_json::from_slice(&msg.payload).map_err(|e| nats(format!("a bad answer: {e}")))
    }

    /// Asks every node matching `selector`, and collects the answers until each live node of
    /// the registry that matches has answered, or `timeout`. Nodes that answer without being in
    /// the registry are kept too.
    pub async fn fan_out(
        &self,
        op: Op,
        req: Request,
        selector: Selector,
        timeout: Duration,
    ) -> Result<FanOut, FleetError> {
        let expected = self.expected(&selector).await?;
        self.fan_out_expecting(op, req, selector, expected, timeout)
            .await
    }

    /// The nodes a fan-out to `selector` waits for: the registry's live nodes that match, and
    /// every node named.
    pub async fn expected(&self, selector: &Selector) -> Result<BTreeSet<String>, FleetError> {
        let now = wire::now_ms();
        let mut expected: BTreeSet<String> = self
            .nodes()
            .await?
            .into_iter()
            .filter(|r| r.liveness(now) == wire::Liveness::Up)
            .filter(|r| selector.matches(&r.node, &r.labels))
            .map(|r| r.node)
            .collect();
        expected.extend(selector.nodes.iter().cloned());
        Ok(expected)
    }

    /// [`fan_out`](Self::fan_out) with the nodes to wait for already known (a controller that
    /// keeps the registry, rather than reading it for every request).
    pub async fn fan_out_expecting(
        &self,
        op: Op,
        mut req: Request,
        selector: Selector,
        expected: BTreeSet<String>,
        timeout: Duration,
    ) -> Result<FanOut, FleetError> {
        req.selector = Some(selector);
        let inbox = self.client.new_inbox();
        let mut sub = self.client.subscribe(inbox.clone()).await.map_err(nats)?;
        let payload = serde_json::to_vec(&req).map_err(nats)?;
        self.client
            .publish_with_reply_and_headers(
                wire::fleet_subject(&self.prefix, op),
                inbox,
                self.headers(),
                payload.into(),
            )
            .await
            .map_err(nats)?;
        self.client.flush().await.map_err(nats)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut replies: BTreeMap<String, Reply> = BTreeMap::new();
        while !expected.iter().all(|n| replies.contains_key(n)) || expected.is_empty() {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(m)) => {
                    if let Ok(r) = serde_json::from_slice::<Reply>(&m.payload) {
                        replies.insert(r.node.clone(), r);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let missing = expected
            .into_iter()
            .filter(|n| !replies.contains_key(n))
            .collect();
        Ok(FanOut {
            replies: replies.into_values().collect(),
            missing,
        })
    }

    /// The nodes a durable command for `selector` goes to: the registry's matching nodes in
    /// any state (the point is to reach those that are down), and every node named.
    pub async fn durable_targets(&self, selector: &Selector) -> Result<Vec<String>, FleetError> {
        let mut t: BTreeSet<String> = self
            .nodes()
            .await?
            .into_iter()
            .filter(|r| selector.matches(&r.node, &r.labels))
            .map(|r| r.node)
            .collect();
        t.extend(selector.nodes.iter().cloned());
        Ok(t.into_iter().collect())
    }

    /// Stores a command for each node in JetStream; each is applied when its node reads it.
    pub async fn send_durable(
        &self,
        nodes: &[String],
        op: Op,
        req: &Request,
    ) -> Result<Vec<Sent>, FleetError> {
        if !op.mutating() {
            return Err(FleetError::Nats(format!(
                "{op} cannot be sent durable: only create, update, delete and push change anything"
            )));
        }
        ensure_stream(&self.js, &self.prefix, 1)
            .await
            .map_err(nats)?;
        ensure_results(&self.js, 1).await.map_err(nats)?;
        let payload: bytes::Bytes = serde_json::to_vec(req).map_err(nats)?.into();
        let mut sent = Vec::new();
        for node in nodes {
            if !wire::valid_node(node) {
                return Err(FleetError::Nats(format!(
                    "{node:?} is not a node name (letters, digits, '-' and '_')"
                )));
            }
            let id = crate::auth::random_hex::<8>().map_err(nats)?;
            let mut h = self.headers();
            h.insert(COMMAND_ID_HEADER, id.as_str());
            h.insert("Nats-Msg-Id", id.as_str());
            let ack = self
                .js
                .publish_with_headers(
                    wire::durable_subject(&self.prefix, node, op),
                    h,
                    payload.clone(),
                )
                .await
                .map_err(nats)?;
            ack.await.map_err(nats)?;
            sent.push(Sent {
                node: node.clone(),
                id,
            });
        }
        Ok(sent)
    }

    /// A durable command's result, once its node has applied it.
    pub async fn result(&self, node: &str, id: &str) -> Result<Option<DurableResult>, FleetError> {
        let Ok(kv) = self.js.get_key_value(RESULTS_BUCKET).await else {
            return Ok(None);
        };
        let v = kv.get(wire::result_key(node, id)).await.map_err(nats)?;
        Ok(v.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Waits up to `timeout` for the results of `sent`; `None` for those not applied yet.
    pub async fn wait_results(
        &self,
        sent: &[Sent],
        timeout: Duration,
    ) -> Result<Vec<(Sent, Option<DurableResult>)>, FleetError> {
        let deadline = Instant::now() + timeout;
        let mut out: Vec<(Sent, Option<DurableResult>)> =
            sent.iter().map(|s| (s.clone(), None)).collect();
        loop {
            for (s, r) in out.iter_mut().filter(|(_, r)| r.is_none()) {
                *r = self.result(&s.node, &s.id).await?;
            }
            if out.iter().all(|(_, r)| r.is_some()) || Instant::now() >= deadline {
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes the registry and results buckets and the commands stream exist, with `replicas`
    /// each: for a control plane whose nodes may not create them.
    pub async fn init(&self, replicas: usize) -> Result<(), FleetError> {
        ensure_registry(&self.js, replicas).await.map_err(nats)?;
        ensure_results(&self.js, replicas).await.map_err(nats)?;
        ensure_stream(&self.js, &self.prefix, replicas)
            .await
            .map_err(nats)?;
        Ok(())
    }
}
