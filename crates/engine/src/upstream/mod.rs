//! The upstream protocol (`proto/nodeagent/v1/upstream.proto`): the generated messages, client
//! and server, the record encoding the spool and both network sinks share, and the reference
//! receiver.
//!
//! Records are encoded once, by the sink's spool writer, straight from the engine's
//! [`Record`](crate::record::Record) and [`Event`] into protobuf bytes ([`wire`]) with no
//! intermediate message structs. The spool stores those bytes; the senders frame them into a
//! `Batch` message by concatenation ([`wire::batch_record`]) without decoding them again.

pub mod json;
pub mod receiver;
pub mod wire;

/// Code generated from `proto/nodeagent/v1/upstream.proto`: messages, the `Upstream` server
/// trait and its client.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("nodeagent.upstream.v1");
}

/// gRPC path of `Upstream/Report`, for the sink's raw (pre-encoded) client call.
pub const REPORT_PATH: &str = "/nodeagent.upstream.v1.Upstream/Report";

/// What the agent tells an upstream about its host when it registers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInfo {
    /// The node's name (`--node-name`, by default the hostname): the first half of the dedup key.
    pub node: String,
    pub hostname: String,
    pub cpus: u32,
    pub memory_total_bytes: u64,
    pub kernel: String,
    /// `v1` or `v2`.
    pub cgroup_version: String,
    /// Drivers available on this node, e.g. `cgroup`, `procfs`, `process`.
    pub drivers: Vec<String>,
    pub agent_version: String,
}

impl NodeInfo {
    /// A node known only by its name (tests, tools).
    pub fn named(node: &str) -> NodeInfo {
        NodeInfo {
            node: node.to_string(),
            hostname: node.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            ..NodeInfo::default()
        }
    }
}

/// A NATS subject token for a node name: `.`, `*`, `>` and whitespace would split or wildcard
/// the subject, so they become `_`.
pub fn subject_token(node: &str) -> String {
    let t: String = node
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect();
    if t.is_empty() {
        "_".to_string()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tokens_have_no_separators() {
        assert_eq!(subject_token("web-1"), "web-1");
        assert_eq!(subject_token("host.example.com"), "host_example_com");
        assert_eq!(subject_token("a b*>"), "a_b__");
        assert_eq!(subject_token(""), "_");
    }
}
