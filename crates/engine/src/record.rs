//! The report record: what the collector hands to every sink and what the upstream encoding
//! (`upstream::wire`) writes. It lives apart from both so that the dependency runs one way,
//! sinks → upstream, with each side only naming the record.

use nodeagent_types::{Kind, Sample};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One report record. `seq` is numbered by the sink as it writes, per (node, sink), from 1 with
/// no gaps, so a receiver can tell a lost record from a late one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub node: Arc<str>,
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub kind: Kind,
    pub sample: Sample,
}
