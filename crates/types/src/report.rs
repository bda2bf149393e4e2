//! How a report task sends an object's samples to a sink.

use serde::{Deserialize, Serialize};

/// What a report task with interval `i` sends every `i` (issue 21: "interval" meant a batching
/// period only, which surprised users of the local sinks).
///
/// - `batch`: every sample taken since the last report, sent together every `i`. Nothing
///   sampled is left out, so it is right for upstream sinks (grpc, nats) that store a series.
/// - `latest`: the newest sample only, once every `i` (none if nothing new was sampled): a rate
///   of one record per interval, whatever the object's collect interval. It is what the word
///   "interval" suggests, and the default of the `file` and `stdout` sinks and of the
///   heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportMode {
    Batch,
    Latest,
}

impl ReportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportMode::Batch => "batch",
            ReportMode::Latest => "latest",
        }
    }
}

impl std::fmt::Display for ReportMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReportMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "batch" => Ok(ReportMode::Batch),
            "latest" => Ok(ReportMode::Latest),
            other => Err(format!(
                "unknown report mode {other:?}: give \"batch\" or \"latest\""
            )),
        }
    }
}
