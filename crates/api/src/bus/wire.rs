//! What travels on the bus: subjects, the request envelope, replies, the node registry's records
//! and durable commands' results. The agent ([`super::serve`]) and the fleet client
//! ([`super::client`]) both use these types, so that they cannot disagree.
//!
//! Subjects (prefix `nodeagent-bus.v1` by default):
//! - `<prefix>.node.<node>.<op>`: one node's API (a core NATS request);
//! - `<prefix>.fleet.<op>`: every node whose labels and name match the request's `selector`
//!   answers; the others stay silent;
//! - `<prefix>.durable.<node>.<op>`: a command kept in the JetStream stream
//!   [`COMMANDS_STREAM`] until the node has applied it; its result goes to the key-value bucket
//!   [`RESULTS_BUCKET`] under `<node>.<id>`.
//!
//! The prefix is not under `nodeagent.`: the `nats` sink's stream captures `nodeagent.>` by
//! default, and a stream that captures a request's subject answers the request itself with a
//! publish acknowledgement.

use nodeagent_types::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const DEFAULT_PREFIX: &str = "nodeagent-bus.v1";
/// Key-value bucket of the node registry: key = node, value = [`NodeRecord`].
pub const REGISTRY_BUCKET: &str = "nodeagent_nodes";
/// Key-value bucket of durable commands' results: key = `<node>.<id>`, value = [`Reply`].
pub const RESULTS_BUCKET: &str = "nodeagent_results";
/// JetStream stream of durable commands (subjects `<prefix>.durable.>`).
pub const COMMANDS_STREAM: &str = "NODEAGENT_BUS_COMMANDS";
/// Header naming who sent a request, for the audit record. NATS does not tell a subscriber who
/// published, so this is what the sender claims; who may publish on which subject is the NATS
/// server's authorization (README, "Fleet control over NATS").
pub const IDENTITY_HEADER: &str = "Nodeagent-Identity";
/// Header of a durable command's id (also JetStream's `Nats-Msg-Id`, for de-duplication).
pub const COMMAND_ID_HEADER: &str = "Nodeagent-Command-Id";

/// One operation of the HTTP API, as the last token of a bus subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Create,
    List,
    Get,
    Update,
    Delete,
    PushOn,
    PushOff,
    PushOnce,
    Metrics,
    Host,
    Events,
    Sinks,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::Create,
        Op::List,
        Op::Get,
        Op::Update,
        Op::Delete,
        Op::PushOn,
        Op::PushOff,
        Op::PushOnce,
        Op::Metrics,
        Op::Host,
        Op::Events,
        Op::Sinks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::List => "list",
            Op::Get => "get",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::PushOn => "push-on",
            Op::PushOff => "push-off",
            Op::PushOnce => "push-once",
            Op::Metrics => "metrics",
            Op::Host => "host",
            Op::Events => "events",
            Op::Sinks => "sinks",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether the operation acts on one object (`key` is required), or on none.
    pub fn needs_key(self) -> bool {
        matches!(
            self,
            Op::Get
                | Op::Update
                | Op::Delete
                | Op::PushOn
                | Op::PushOff
                | Op::PushOnce
                | Op::Metrics
        )
    }

    /// Whether the operation takes a JSON body.
    pub fn has_body(self) -> bool {
        matches!(
            self,
            Op::Create | Op::Update | Op::PushOn | Op::PushOff | Op::PushOnce
        )
    }

    /// Whether it changes anything (only these may be sent durable).
    pub fn mutating(self) -> bool {
        matches!(
            self,
            Op::Create | Op::Update | Op::Delete | Op::PushOn | Op::PushOff | Op::PushOnce
        )
    }

    /// The HTTP method and path of the same operation (`key` percent-encoded).
    pub fn http(self, key: &str) -> (&'static str, String) {
        let k = percent_encode(key);
        match self {
            Op::Create => ("POST", "/v1/objects".into()),
            Op::List => ("GET", "/v1/objects".into()),
            Op::Get => ("GET", format!("/v1/objects/{k}")),
            Op::Update => ("PATCH", format!("/v1/objects/{k}")),
            Op::Delete => ("DELETE", format!("/v1/objects/{k}")),
            Op::PushOn => ("POST", format!("/v1/objects/{k}/push-on")),
            Op::PushOff => ("POST", format!("/v1/objects/{k}/push-off")),
            Op::PushOnce => ("POST", format!("/v1/objects/{k}/push-once")),
            Op::Metrics => ("GET", format!("/v1/objects/{k}/metrics")),
            Op::Host => ("GET", "/v1/host".into()),
            Op::Events => ("GET", "/v1/events".into()),
            Op::Sinks => ("GET", "/v1/sinks".into()),
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use crate::paths::segment as percent_encode;

/// A query parameter's value: the envelope takes JSON's strings, booleans and numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QueryValue {
    Bool(bool),
    Number(serde_json::Number),
    Text(String),
}

impl QueryValue {
    fn text(&self) -> String {
        match self {
            QueryValue::Bool(b) => b.to_string(),
            QueryValue::Number(n) => n.to_string(),
            QueryValue::Text(s) => s.clone(),
        }
    }
}

/// Which nodes a fleet request is for. Empty: every node. `labels` must all match, and when
/// `nodes` is given the node must be one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

impl Selector {
    pub fn matches(&self, node: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.nodes.is_empty() || self.nodes.iter().any(|n| n == node))
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// `k=v,k2=v2` (the CLI's `--selector`).
    pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, ApiError> {
        let mut m = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(ApiError::invalid(
                    "selector",
                    format!("{part:?} is not key=value"),
                ));
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(ApiError::invalid(
                    "selector",
                    format!("{part:?} has an empty key"),
                ));
            }
            m.insert(k.to_string(), v.to_string());
        }
        Ok(m)
    }
}

/// The body of every bus request. `key`, `body` and `query` are the HTTP request's path key,
/// JSON body and query parameters; `selector` is for fleet subjects only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, QueryValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
}

impl Request {
    /// Reads an envelope; an empty payload is a request without key, body or query (`list`).
    pub fn from_json(b: &[u8]) -> Result<Request, ApiError> {
        if b.iter().all(u8::is_ascii_whitespace) {
            return Ok(Request::default());
        }
        nodeagent_types::spec::from_json(b)
    }

    /// The query string of the HTTP request, form-encoded.
    pub fn query_string(&self) -> String {
        let mut q = String::new();
        for (k, v) in &self.query {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(&percent_encode(k));
            q.push('=');
            q.push_str(&percent_encode(&v.text()));
        }
        q
    }

    /// Checks that the envelope fits `op`: a key exactly when it needs one, a body only where
    /// it takes one. (What is in them is checked by the same parsers as HTTP's.)
    pub fn check(&self, op: Op) -> Result<(), ApiError> {
        match (&self.key, op.needs_key()) {
            (None, true) => {
                return Err(ApiError::invalid(
                    "key",
                    format!("{op} needs a key: the object's id or name"),
                ))
            }
            (Some(_), false) => {
                return Err(ApiError::invalid("key", format!("{op} takes no key")));
            }
            _ => {}
        }
        if self.body.is_some() && !op.has_body() {
            return Err(ApiError::invalid("body", format!("{op} takes no body")));
        }
        Ok(())
    }
}

/// A node's answer: the HTTP status and the same JSON body HTTP would send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub node: String,
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// An answer made on the bus side (a bad envelope, busy): the contract's error shape.
    pub fn error(node: &str, e: &ApiError) -> Reply {
        let mut err = serde_json::Map::new();
        err.insert("code".into(), Value::String(e.code.as_str().to_string()));
        err.insert("message".into(), Value::String(e.message.clone()));
        if let Some(f) = &e.field {
            err.insert("field".into(), Value::String(f.clone()));
        }
        if let Some(r) = &e.rule {
            err.insert("rule".into(), Value::String(r.clone()));
        }
        Reply {
            node: node.to_string(),
            status: e.code.http_status(),
            body: serde_json::json!({ "error": err }),
        }
    }

    pub fn busy(node: &str, inflight: usize) -> Reply {
        Reply::error(
            node,
            &ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "busy: {inflight} bus requests are in progress on this node (bus.max_inflight); retry later"
                ),
            ),
        )
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What a node stored after applying a durable command (key [`result_key`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurableResult {
    pub id: String,
    pub node: String,
    pub op: String,
    pub status: u16,
    pub body: Value,
    /// Unix milliseconds.
    pub applied_ms: u64,
}

/// A node's entry in the registry, refreshed every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub version: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Unix milliseconds of the last heartbeat.
    pub heartbeat_ms: u64,
    /// The node's heartbeat interval, so that a reader can tell when it is late.
    pub heartbeat_interval_ms: u64,
    /// Objects on the node, not counting the host.
    pub objects: usize,
    pub started_ms: u64,
    /// `up`, or `stopped` once the agent has shut down cleanly.
    pub state: String,
}

/// How a registry entry looks at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Up,
    /// Missed three heartbeats.
    Stale,
    /// Missed ten heartbeats, or shut down.
    Gone,
    Stopped,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Up => "up",
            Liveness::Stale => "stale",
            Liveness::Gone => "gone",
            Liveness::Stopped => "stopped",
        }
    }
}

impl NodeRecord {
    pub fn liveness(&self, now_ms: u64) -> Liveness {
        if self.state == "stopped" {
            return Liveness::Stopped;
        }
        let age = now_ms.saturating_sub(self.heartbeat_ms);
        let hb = self.heartbeat_interval_ms.max(1);
        if age > hb.saturating_mul(10) {
            Liveness::Gone
        } else if age > hb.saturating_mul(3) {
            Liveness::Stale
        } else {
            Liveness::Up
        }
    }
}

/// A node name as one subject token and key-value key: every character but ASCII letters,
/// digits, `-` and `_` becomes `_` (a dot would split the token).
pub fn node_token(node: &str) -> String {
    let t: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

/// Whether `s` may be a node's bus name as it is (`bus.node`).
pub fn valid_node(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && node_token(s) == s
}

/// Whether `s` may be a durable command's id (a key-value key token).
pub fn valid_command_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn node_subject(prefix: &str, node: &str, op: Op) -> String {
    format!("{prefix}.node.{node}.{op}")
}

pub fn fleet_subject(prefix: &str, op: Op) -> String {
    format!("{prefix}.fleet.{op}")
}

pub fn durable_subject(prefix: &str, node: &str, op: Op) -> String {
    format!("{prefix}.durable.{node}.{op}")
}

/// The operation named by a subject's last token.
pub fn op_of(subject: &str) -> Option<Op> {
    Op::parse(subject.rsplit('.').next()?)
}

/// Where a durable command's result is kept.
pub fn result_key(node: &str, id: &str) -> String {
    format!("{node}.{id}")
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ops_round_trip_and_map_to_http() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.as_str()), Some(op));
            assert_eq!(op_of(&node_subject(DEFAULT_PREFIX, "n1", op)), Some(op));
        }
        assert_eq!(Op::Get.http("a/b"), ("GET", "/v1/objects/a%2Fb".into()));
        assert_eq!(
            Op::PushOn.http("web"),
            ("POST", "/v1/objects/web/push-on".into())
        );
        assert_eq!(Op::parse("watch"), None);
    }

    #[test]
    fn envelopes_are_checked_against_the_op() {
        let r = Request::from_json(b"").expect("empty");
        assert!(r.check(Op::List).is_ok());
        let e = r.check(Op::Get).expect_err("key");
        assert_eq!(e.field.as_deref(), Some("key"));
        let r = Request::from_json(br#"{"key":"a","body":{}}"#).expect("json");
        assert_eq!(
            r.check(Op::Get).expect_err("body").field.as_deref(),
            Some("body")
        );
        assert!(r.check(Op::Update).is_ok());
        let e = Request::from_json(br#"{"key":"a","bogus":1}"#).expect_err("unknown");
        assert!(e.message.contains("bogus"), "{e}");
        let r = Request::from_json(br#"{"query":{"wait":true,"limit":5,"request_id":"a b"}}"#)
            .expect("query");
        assert_eq!(r.query_string(), "limit=5&request_id=a%20b&wait=true");
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())]
            .into_iter()
            .collect();
        assert!(Selector::default().matches("n1", &labels));
        let s = Selector {
            labels: Selector::parse_labels("zone=a").expect("parse"),
            nodes: vec![],
        };
        assert!(s.matches("n1", &labels));
        assert!(!s.matches("n1", &BTreeMap::new()));
        let s = Selector {
            labels: BTreeMap::new(),
            nodes: vec!["n2".into()],
        };
        assert!(!s.matches("n1", &labels));
        assert!(Selector::parse_labels("zone").is_err());
        assert!(Selector::parse_labels("=a").is_err());
    }

    #[test]
    fn liveness_follows_the_heartbeat() {
        let mut r = NodeRecord {
            node: "n".into(),
            labels: BTreeMap::new(),
            version: "0".into(),
            addresses: vec![],
            heartbeat_ms: 10_000,
            heartbeat_interval_ms: 1000,
            objects: 0,
            started_ms: 0,
            state: "up".into(),
        };
        assert_eq!(r.liveness(10_500), Liveness::Up);
        assert_eq!(r.liveness(14_000), Liveness::Stale);
        assert_eq!(r.liveness(30_000), Liveness::Gone);
        r.state = "stopped".into();
        assert_eq!(r.liveness(10_500), Liveness::Stopped);
    }

    #[test]
    fn node_tokens() {
        assert_eq!(node_token("web-1.example.com"), "web-1_example_com");
        assert!(valid_node("web-1"));
        assert!(!valid_node("web.1"));
        assert!(!valid_node(""));
        assert!(valid_command_id("a1-b_2"));
        assert!(!valid_command_id("a.b"));
    }

    proptest! {
        /// Any payload gives an envelope or an error, never a panic; a key always stays one
        /// path segment.
        #[test]
        fn any_payload_parses_or_errs(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(r) = Request::from_json(&b) {
                for op in Op::ALL {
                    let _ = r.check(op);
                    let (_, path) = op.http(r.key.as_deref().unwrap_or(""));
                    prop_assert!(path.starts_with("/v1/"));
                }
                let q = r.query_string();
                prop_assert!(!q.contains(' ') && !q.contains('#'));
            }
        }

        #[test]
        fn encoded_keys_stay_one_segment(k in ".{0,40}") {
            let e = percent_encode(&k);
            prop_assert!(!e.contains('/') && !e.contains('?') && !e.contains('#'));
        }
    }
}
