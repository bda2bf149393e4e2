//! The object spec (DESIGN.md §4, contract) and its validation.
//!
//! Parsing happens in two steps: serde reads the shape (unknown fields are rejected, and the
//! path of a bad field is kept by `serde_path_to_error`), then [`ObjectSpec::validate`] checks the
//! values. Both steps report the field at fault.

use crate::error::ApiError;
use crate::kind::Kind;
use crate::quantity::{CpuSet, Duration, Memory};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY: usize = 63;
pub const MAX_LABEL_VALUE: usize = 256;
pub const MAX_ARGS: usize = 1024;
pub const MAX_ARG_LEN: usize = 16 * 1024;
pub const MAX_ENV: usize = 1024;
/// Shortest collection interval: the agent's design point is 10 ms sampling.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
pub const MAX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// cgroup v1 and v2 refuse a CFS quota below 1 ms per 100 ms period, so 0.01 cores is the floor.
pub const MIN_CPU: f64 = 0.01;
pub const MAX_CPU: f64 = 4096.0;
pub const MAX_PIDS: u64 = 4_194_304;
/// Below about 1 MiB the kernel OOM-kills even a shell on its first page faults.
pub const MIN_MEMORY: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSpec {
    pub name: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub collect: CollectSpec,
}

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

fn is_false(b: &bool) -> bool {
    !*b
}

/// Resource limits. Every field is optional: absent means "no limit" on create and "unchanged"
/// in a PATCH.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Cores: 0.5 is a CFS quota of 50000 µs per 100000 µs period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// 1..=10000, default 100 (cgroup v2 `cpu.weight`; on v1, `cpu.shares` = weight × 1024 / 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<CpuSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectSpec {
    #[serde(default = "default_interval")]
    pub interval: Duration,
}

fn default_interval() -> Duration {
    Duration(DEFAULT_INTERVAL)
}

impl Default for CollectSpec {
    fn default() -> Self {
        CollectSpec {
            interval: default_interval(),
        }
    }
}

/// Reads a JSON document into `T`, naming the field at fault on error.
pub fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let v = serde_path_to_error::deserialize(de).map_err(path_error)?;
    Ok(v)
}

/// Converts a serde error with its path into an [`ApiError`] naming the field.
pub fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = render_path(e.path());
    let inner = e.inner().to_string();
    // serde_path_to_error's path already ends with an unknown field's own name, but a missing
    // field is reported at the path of the object that lacks it: name the field itself.
    let parent = path;
    let missing = inner
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    let field = match missing {
        Some(name) if parent.is_empty() => name.to_string(),
        Some(name) => format!("{parent}.{name}"),
        None => parent,
    };
    let message = strip_position(&inner);
    if field.is_empty() {
        ApiError::new(crate::ErrorCode::InvalidArgument, message)
    } else {
        ApiError::invalid(field, message)
    }
}

/// The path as `a.b[0].c`, empty at the root. A key that would make the path ambiguous (empty,
/// or holding `.`, brackets, quotes or whitespace) is written as a JSON string, so that even
/// `{"": 1}` or `{".": 1}` is named (`""`, `"."`).
fn render_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                let plain = !key.is_empty()
                    && !key.chars().any(|c| {
                        matches!(c, '.' | '[' | ']' | '"') || c.is_whitespace() || c.is_control()
                    });
                if plain {
                    out.push_str(key);
                } else {
                    out.push_str(&serde_json::to_string(key).unwrap_or_else(|_| "\"?\"".into()));
                }
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// serde_json appends " at line L column C"; the field path says more, so drop it.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

impl ObjectSpec {
    /// Parses and validates a JSON spec.
    pub fn from_json(body: &[u8]) -> Result<ObjectSpec, ApiError> {
        let spec: ObjectSpec = from_json(body)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every value; the error names the first field at fault.
    pub fn validate(&self) -> Result<(), ApiError> {
        if !valid_name(&self.name) {
            return Err(ApiError::invalid(
                "name",
                format!(
                    "invalid name {:?}: use 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
                    truncate(&self.name)
                ),
            ));
        }
        validate_labels(&self.labels)?;
        let sections = [
            ("process", self.process.is_some(), Kind::Process),
            ("cgroup", self.cgroup.is_some(), Kind::Cgroup),
            ("container", self.container.is_some(), Kind::Container),
        ];
        for (field, present, kind) in sections {
            if present && kind != self.kind {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "`{field}` is only allowed for kind {kind}, not {}",
                        self.kind
                    ),
                ));
            }
            if !present && kind == self.kind {
                return Err(ApiError::invalid(
                    field,
                    format!("kind {kind} needs a `{field}` section"),
                ));
            }
        }
        match self.kind {
            Kind::Host => {
                return Err(ApiError::invalid(
                    "kind",
                    "the host is the node itself: it is always present and cannot be created",
                ))
            }
            Kind::Process => {
                if let Some(p) = &self.process {
                    p.validate()?
                }
            }
            Kind::Cgroup => {
                if let Some(c) = &self.cgroup {
                    c.validate()?
                }
            }
            Kind::Container => {
                if let Some(c) = &self.container {
                    c.validate()?
                }
            }
        }
        self.resources.validate("resources")?;
        self.collect.validate()
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::invalid(
            "labels",
            format!("{} labels; at most {MAX_LABELS} are allowed", labels.len()),
        ));
    }
    for (k, v) in labels {
        let ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/'));
        if !ok {
            return Err(ApiError::invalid(
                format!("labels.{}", truncate(k)),
                format!("invalid label key: use 1 to {MAX_LABEL_KEY} of A-Z, a-z, 0-9, '.', '_', '-', '/'"),
            ));
        }
        if v.len() > MAX_LABEL_VALUE || v.contains('\0') {
            return Err(ApiError::invalid(
                format!("labels.{k}"),
                format!("label value longer than {MAX_LABEL_VALUE} bytes or holding a NUL"),
            ));
        }
    }
    Ok(())
}

fn validate_env(prefix: &str, env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if env.len() > MAX_ENV {
        return Err(ApiError::invalid(
            prefix,
            format!("{} variables; at most {MAX_ENV} are allowed", env.len()),
        ));
    }
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || k.len() > 1024 {
            return Err(ApiError::invalid(
                format!("{prefix}.{}", truncate(k)),
                "invalid variable name: it must be non-empty, at most 1024 bytes, without '=' or NUL",
            ));
        }
        if v.contains('\0') || v.len() > MAX_ARG_LEN {
            return Err(ApiError::invalid(
                format!("{prefix}.{}", truncate(k)),
                format!("value holds a NUL or is longer than {MAX_ARG_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

fn validate_command(field: &str, cmd: &[String], required: bool) -> Result<(), ApiError> {
    if required && cmd.is_empty() {
        return Err(ApiError::invalid(
            field,
            "command is empty; give the program and its arguments, e.g. [\"/bin/sleep\", \"300\"]",
        ));
    }
    if cmd.len() > MAX_ARGS {
        return Err(ApiError::invalid(
            field,
            format!("{} arguments; at most {MAX_ARGS} are allowed", cmd.len()),
        ));
    }
    for (i, a) in cmd.iter().enumerate() {
        if a.contains('\0') || a.len() > MAX_ARG_LEN || (i == 0 && a.is_empty()) {
            return Err(ApiError::invalid(
                format!("{field}[{i}]"),
                format!("argument is empty, holds a NUL, or is longer than {MAX_ARG_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

impl ProcessSpec {
    fn validate(&self) -> Result<(), ApiError> {
        validate_command("process.command", &self.command, true)?;
        validate_env("process.env", &self.env)?;
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') || cwd.contains('\0') || cwd.len() > 4096 {
                return Err(ApiError::invalid(
                    "process.cwd",
                    format!("cwd {:?} must be an absolute path", truncate(cwd)),
                ));
            }
        }
        Ok(())
    }
}

impl CgroupSpec {
    fn validate(&self) -> Result<(), ApiError> {
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

impl ContainerSpec {
    fn validate(&self) -> Result<(), ApiError> {
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

impl Resources {
    /// Validates every present field; `prefix` is how the caller names this struct
    /// (`resources`).
    pub fn validate(&self, prefix: &str) -> Result<(), ApiError> {
        if let Some(cpu) = self.cpu {
            if !cpu.is_finite() || !(MIN_CPU..=MAX_CPU).contains(&cpu) {
                return Err(ApiError::invalid(
                    format!("{prefix}.cpu"),
                    format!("cpu {cpu} is out of range: give cores between {MIN_CPU} and {MAX_CPU}, e.g. 0.5"),
                ));
            }
        }
        if let Some(w) = self.cpu_weight {
            if !(1..=10_000).contains(&w) {
                return Err(ApiError::invalid(
                    format!("{prefix}.cpu_weight"),
                    format!("cpu_weight {w} is out of range 1..=10000"),
                ));
            }
        }
        if let Some(m) = self.memory {
            if m.0 < MIN_MEMORY {
                return Err(ApiError::invalid(
                    format!("{prefix}.memory"),
                    format!("memory {} bytes is below the minimum of 1Mi", m.0),
                ));
            }
        }
        if let Some(p) = self.pids {
            if !(1..=MAX_PIDS).contains(&p) {
                return Err(ApiError::invalid(
                    format!("{prefix}.pids"),
                    format!("pids {p} is out of range 1..={MAX_PIDS}"),
                ));
            }
        }
        Ok(())
    }

    /// Overlays the fields `patch` sets onto `self`.
    pub fn merge(&mut self, patch: &Resources) {
        if patch.cpu.is_some() {
            self.cpu = patch.cpu;
        }
        if patch.cpu_weight.is_some() {
            self.cpu_weight = patch.cpu_weight;
        }
        if patch.cpuset.is_some() {
            self.cpuset = patch.cpuset.clone();
        }
        if patch.memory.is_some() {
            self.memory = patch.memory;
        }
        if patch.pids.is_some() {
            self.pids = patch.pids;
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

impl CollectSpec {
    fn validate(&self) -> Result<(), ApiError> {
        let i = self.interval.as_std();
        if i < MIN_INTERVAL || i > MAX_INTERVAL {
            return Err(ApiError::invalid(
                "collect.interval",
                format!(
                    "interval {} is out of range: give 10ms to 1h",
                    self.interval
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field_of(body: &str) -> Option<String> {
        ObjectSpec::from_json(body.as_bytes())
            .err()
            .and_then(|e| e.field)
    }

    #[test]
    fn good_spec() {
        let s = ObjectSpec::from_json(
            br#"{"name":"web-1","kind":"process","labels":{"team":"a"},
                "process":{"command":["/bin/sleep","300"],"env":{"K":"V"},"cwd":"/tmp","restart":"on-failure"},
                "resources":{"cpu":0.5,"cpu_weight":100,"cpuset":"0","memory":"64Mi","pids":100},
                "collect":{"interval":"100ms"}}"#,
        )
        .expect("valid");
        assert_eq!(s.resources.memory, Some(Memory(64 << 20)));
        assert_eq!(s.collect.interval, Duration::from_millis(100));
        assert_eq!(
            s.process.as_ref().map(|p| p.restart),
            Some(RestartPolicy::OnFailure)
        );
    }

    #[test]
    fn bad_specs_name_the_field() {
        let p = r#""process":{"command":["/bin/true"]}"#;
        let cases = [
            (
                format!(r#"{{"name":"x","kind":"process",{p},"resources":{{"memory":"64Xi"}}}}"#),
                "resources.memory",
            ),
            (
                format!(r#"{{"name":"x","kind":"process",{p},"resources":{{"memory":-5}}}}"#),
                "resources.memory",
            ),
            (
                format!(r#"{{"name":"x","kind":"process",{p},"resources":{{"cpu":-1}}}}"#),
                "resources.cpu",
            ),
            (
                format!(r#"{{"name":"x","kind":"process",{p},"resources":{{"cpu":1e9}}}}"#),
                "resources.cpu",
            ),
            (
                format!(r#"{{"name":"x","kind":"process",{p},"resources":{{"bogus":1}}}}"#),
                "resources.bogus",
            ),
            (
                format!(r#"{{"name":"x","kind":"process",{p},"bogus":1}}"#),
                "bogus",
            ),
            (
                format!(r#"{{"name":"x","kind":"process",{p},"collect":{{"interval":"fast"}}}}"#),
                "collect.interval",
            ),
            (
                format!(r#"{{"name":"x","kind":"process",{p},"collect":{{"interval":"1ms"}}}}"#),
                "collect.interval",
            ),
            (format!(r#"{{"name":"x","kind":"vm2",{p}}}"#), "kind"),
            (
                format!(r#"{{"name":"../../x","kind":"process",{p}}}"#),
                "name",
            ),
            (
                format!(r#"{{"name":"UPPER","kind":"process",{p}}}"#),
                "name",
            ),
            (
                r#"{"name":"x","kind":"process","process":{"command":[]}}"#.to_string(),
                "process.command",
            ),
            (r#"{"name":"x","kind":"process"}"#.to_string(), "process"),
            (
                r#"{"name":"x","kind":"cgroup","cgroup":{}}"#.to_string(),
                "cgroup",
            ),
            (
                r#"{"name":"x","kind":"cgroup","cgroup":{"path":"/a/../b"}}"#.to_string(),
                "cgroup.path",
            ),
            (format!(r#"{{"name":"x","kind":"host",{p}}}"#), "process"),
            (r#"{"name":"x","kind":"host"}"#.to_string(), "kind"),
            (
                format!(r#"{{"name":"x","kind":"process",{p},"resources":{{"cpuset":"3-1"}}}}"#),
                "resources.cpuset",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(&body).as_deref(), Some(field), "{body}");
        }
    }

    #[test]
    fn empty_unknown_fields_are_named() {
        assert_eq!(field_of(r#"{"":1}"#).as_deref(), Some("\"\""));
        assert_eq!(field_of(r#"{".":1}"#).as_deref(), Some("\".\""));
        assert_eq!(
            field_of(r#"{"name":"x","kind":"process","process":{"command":[5]}}"#).as_deref(),
            Some("process.command[0]")
        );
        assert_eq!(
            field_of(r#"{"name":"x","kind":"process","process":{"command":["/bin/true"],"":1}}"#)
                .as_deref(),
            Some("process.\"\"")
        );
    }

    /// Every size cap is a 400 that names the field.
    #[test]
    fn caps_name_the_field() {
        let process = |extra: serde_json::Value| {
            let mut p = serde_json::json!({"command": ["/bin/true"]});
            if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
                p.extend(e.clone());
            }
            serde_json::json!({"name": "x", "kind": "process", "process": p})
        };
        let many = |n: usize| -> serde_json::Map<String, serde_json::Value> {
            (0..n)
                .map(|i| (format!("k{i}"), serde_json::json!("v")))
                .collect()
        };
        let long = "a".repeat(MAX_ARG_LEN + 1);
        let cases = [
            (
                serde_json::json!({"name": "a".repeat(64), "kind": "process", "process": {"command": ["/bin/true"]}}),
                "name",
            ),
            (
                {
                    let mut s = process(serde_json::json!({}));
                    s["labels"] = serde_json::Value::Object(many(MAX_LABELS + 1));
                    s
                },
                "labels",
            ),
            (
                {
                    let mut s = process(serde_json::json!({}));
                    s["labels"] = serde_json::json!({"k": "v".repeat(MAX_LABEL_VALUE + 1)});
                    s
                },
                "labels.k",
            ),
            (
                {
                    let mut s = process(serde_json::json!({}));
                    s["labels"] = serde_json::json!({"k".repeat(MAX_LABEL_KEY + 1): "v"});
                    s
                },
                "labels.kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
            ),
            (
                process(serde_json::json!({"env": many(MAX_ENV + 1)})),
                "process.env",
            ),
            (
                process(serde_json::json!({"env": {"K": long.clone()}})),
                "process.env.K",
            ),
            (
                process(serde_json::json!({"command": vec!["x"; MAX_ARGS + 1]})),
                "process.command",
            ),
            (
                process(serde_json::json!({"command": ["/bin/echo", long.clone()]})),
                "process.command[1]",
            ),
            (
                process(serde_json::json!({"cwd": format!("/{}", "d".repeat(4096))})),
                "process.cwd",
            ),
            (
                serde_json::json!({"name": "c", "kind": "cgroup", "cgroup": {"pids": vec![1; 4097]}}),
                "cgroup.pids",
            ),
            (
                serde_json::json!({"name": "c", "kind": "cgroup", "cgroup": {"path": format!("/{}", "p".repeat(4096))}}),
                "cgroup.path",
            ),
            (
                serde_json::json!({"name": "c", "kind": "container", "container": {"image": "i".repeat(513)}}),
                "container.image",
            ),
            (
                serde_json::json!({"name": "c", "kind": "container", "container": {"image": "busybox:local",
                    "mounts": vec![serde_json::json!({"source": "/a", "target": "/b"}); 65]}}),
                "container.mounts",
            ),
        ];
        for (body, field) in cases {
            let e = ObjectSpec::from_json(body.to_string().as_bytes()).expect_err(field);
            assert_eq!(e.code, crate::ErrorCode::InvalidArgument, "{field}");
            assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
        }
    }

    #[test]
    fn missing_name_is_named() {
        let e = ObjectSpec::from_json(br#"{"kind":"process","process":{"command":["/bin/true"]}}"#)
            .expect_err("no name");
        assert!(e.message.contains("name"), "{e}");
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = ObjectSpec::from_json(br#"{"name":"x","kind":"process","process":{}}"#)
            .expect_err("no command");
        assert_eq!(e.field.as_deref(), Some("process.command"));
    }

    proptest! {
        /// Arbitrary bytes never panic the spec parser.
        #[test]
        fn spec_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ObjectSpec::from_json(&body);
        }

        /// Structured-but-wrong JSON never panics and always names a field or explains itself.
        #[test]
        fn spec_values_never_panic(
            name in "\\PC{0,70}",
            cpu in proptest::num::f64::ANY,
            mem in "\\PC{0,12}",
            interval in "\\PC{0,8}",
            pids in any::<i64>(),
        ) {
            let body = serde_json::json!({
                "name": name, "kind": "process",
                "process": {"command": ["/bin/true"]},
                "resources": {"cpu": cpu, "memory": mem, "pids": pids},
                "collect": {"interval": interval},
            });
            match ObjectSpec::from_json(body.to_string().as_bytes()) {
                Ok(s) => prop_assert!(s.validate().is_ok()),
                Err(e) => prop_assert!(!e.message.is_empty()),
            }
        }
    }
}
