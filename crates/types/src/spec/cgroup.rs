//! The `cgroup` kind's section: running pids or an existing cgroup, adopted.

use super::{truncate, KindSection};
use crate::error::ApiError;
use crate::kind::Kind;
use serde::{Deserialize, Serialize};

/// Adopt either running pids (moved into a cgroup the agent creates) or an existing cgroup
/// (controlled where it is, and left in place on delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl CgroupSpec {
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        match (&self.pids, &self.path) {
            (Some(_), Some(_)) | (None, None) => Err(ApiError::invalid(
                "cgroup",
                "give exactly one of `pids` (adopt running processes) or `path` (adopt an existing cgroup)",
            )),
            (Some(pids), None) => {
                if pids.is_empty() || pids.len() > 4096 {
                    return Err(ApiError::invalid(
                        "cgroup.pids",
                        "give between 1 and 4096 pids",
                    ));
                }
                if let Some(i) = pids.iter().position(|p| *p == 0) {
                    return Err(ApiError::invalid(
                        format!("cgroup.pids[{i}]"),
                        "pid 0 is not a process",
                    ));
                }
                Ok(())
            }
            (None, Some(path)) => {
                let bad = path.is_empty()
                    || path.len() > 4096
                    || path.contains('\0')
                    || path.split('/').any(|c| c == ".." || c == ".");
                if bad {
                    return Err(ApiError::invalid(
                        "cgroup.path",
                        format!(
                            "invalid cgroup path {:?}: give a path below the cgroup root, e.g. \"/system.slice/foo.service\", without '.' or '..'",
                            truncate(path)
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

impl KindSection for CgroupSpec {
    const KIND: Kind = Kind::Cgroup;

    fn validate(&self) -> Result<(), ApiError> {
        self.check()
    }
}
