//! The `process` kind's section: a command the agent runs in a cgroup of its own.

use super::{validate_command, validate_env, KindSection};
use crate::error::ApiError;
use crate::kind::Kind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
    Always,
}

impl ProcessSpec {
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        validate_command("process.command", &self.command, true)?;
        validate_env("process.env", &self.env)?;
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') || cwd.contains('\0') || cwd.len() > 4096 {
                return Err(ApiError::invalid(
                    "process.cwd",
                    format!("cwd {:?} must be an absolute path", super::truncate(cwd)),
                ));
            }
        }
        Ok(())
    }
}

impl KindSection for ProcessSpec {
    const KIND: Kind = Kind::Process;

    fn validate(&self) -> Result<(), ApiError> {
        self.check()
    }
}
