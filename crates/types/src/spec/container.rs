//! The `container` kind's section: a Docker container to run, or one to adopt.

use super::{is_false, validate_command, validate_env, KindSection};
use crate::error::ApiError;
use crate::kind::Kind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Image to run, e.g. `busybox:local`. Required unless `adopt` is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Pull the image when it is not present locally. Off by default: a node agent should not
    /// reach a registry unless asked to.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pull: bool,
    /// Id or name of an existing container to adopt (monitor and control) instead of creating
    /// one. Exclusive with `image`, `command`, `env`, `pull` and the host-access fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<String>,
    /// Run privileged. Refused unless the policy allows it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// Network mode. `host` is refused unless the policy allows host namespaces.
    #[serde(default, skip_serializing_if = "ContainerNetwork::is_default")]
    pub network: ContainerNetwork,
    /// Share the host's pid namespace. Refused unless the policy allows host namespaces.
    #[serde(default, skip_serializing_if = "is_false")]
    pub host_pid: bool,
    /// Host paths bound into the container. Refused unless the policy allows the source path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerNetwork {
    #[default]
    Bridge,
    None,
    Host,
}

impl ContainerNetwork {
    pub fn is_default(&self) -> bool {
        *self == ContainerNetwork::Bridge
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ContainerNetwork::Bridge => "bridge",
            ContainerNetwork::None => "none",
            ContainerNetwork::Host => "host",
        }
    }
}

/// A host path bound into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Absolute path on the host.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

impl ContainerSpec {
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        if let Some(a) = &self.adopt {
            if a.is_empty()
                || a.len() > 128
                || !a
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
            {
                return Err(ApiError::invalid(
                    "container.adopt",
                    "give the id or name of an existing container (1 to 128 of A-Z, a-z, 0-9, '.', '_', '-')",
                ));
            }
            let extra = [
                ("container.image", !self.image.is_empty()),
                ("container.command", !self.command.is_empty()),
                ("container.env", !self.env.is_empty()),
                ("container.pull", self.pull),
                ("container.privileged", self.privileged),
                ("container.network", !self.network.is_default()),
                ("container.host_pid", self.host_pid),
                ("container.mounts", !self.mounts.is_empty()),
            ];
            if let Some((field, _)) = extra.iter().find(|(_, set)| *set) {
                return Err(ApiError::invalid(
                    *field,
                    "an adopted container keeps its own configuration; give only `adopt`",
                ));
            }
            return Ok(());
        }
        if self.image.is_empty()
            || self.image.len() > 512
            || self.image.contains(char::is_whitespace)
        {
            return Err(ApiError::invalid(
                "container.image",
                "give an image reference such as \"busybox:local\" (or `adopt` to adopt an existing container)",
            ));
        }
        validate_command("container.command", &self.command, false)?;
        validate_env("container.env", &self.env)?;
        if self.mounts.len() > 64 {
            return Err(ApiError::invalid(
                "container.mounts",
                "at most 64 mounts are allowed",
            ));
        }
        for (i, m) in self.mounts.iter().enumerate() {
            for (f, v) in [("source", &m.source), ("target", &m.target)] {
                if !v.starts_with('/') || v.len() > 4096 || v.contains('\0') || v.contains(':') {
                    return Err(ApiError::invalid(
                        format!("container.mounts[{i}].{f}"),
                        "give an absolute path without ':' or NUL",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl KindSection for ContainerSpec {
    const KIND: Kind = Kind::Container;

    fn validate(&self) -> Result<(), ApiError> {
        self.check()
    }
}
