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

mod cgroup;
mod container;
mod helm;
mod k8s;
mod process;
mod vm;

pub use cgroup::CgroupSpec;
pub use container::{ContainerNetwork, ContainerSpec, Mount};
pub use helm::{is_release_name, HelmSpec, MAX_RELEASE_NAME, MAX_VALUES_BYTES};
pub use k8s::{
    is_dns_label, is_dns_subdomain, Document, K8sSpec, K8sWait, Manifest,
    DEFAULT_TIMEOUT as K8S_DEFAULT_TIMEOUT, LABEL_ID as K8S_LABEL_ID, MAX_DOCUMENTS,
    MAX_MANIFEST_BYTES,
};
pub use process::{ProcessSpec, RestartPolicy};
pub use vm::{
    check_vm_path, Accel, Disk, DiskFormat, Forward, NetMode, Protocol, VmNetwork, VmSpec, WaitFor,
};

/// What every object spec has, plus the section of its kind (DESIGN.md §4):
/// `{"name": .., "kind": "process", "process": {..}, "resources": {..}, "collect": {..}}`.
///
/// Serde is written by hand (below) because the section's key is the kind's own name: a
/// derived struct would need one `Option` field per kind, so every kind would touch every
/// other kind's code and every place that builds a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectSpec {
    pub name: String,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    /// The kind's own settings, under the key named after the kind. `None` only for a spec
    /// that will fail validation (a kind that needs a section) or for the host.
    pub section: Option<KindSpec>,
    pub resources: Resources,
    pub collect: CollectSpec,
}

/// A kind's section of the spec: its type names the kind, and it validates itself. Each kind's
/// section lives in its own file beside this one.
pub trait KindSection: Sized {
    const KIND: Kind;
    /// Checks the values; errors name the field with the section's key first
    /// (`process.command[0]`).
    fn validate(&self) -> Result<(), ApiError>;
}

/// Lists the kinds that have a section: `Variant => "key": Type`. Adding a kind adds one line
/// here (and its file); everything below is generated from the list.
macro_rules! kind_sections {
    ($($variant:ident => $key:literal : $ty:ty),* $(,)?) => {
        /// The section of one kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum KindSpec {
            $($variant($ty),)*
        }

        impl KindSpec {
            /// The kind this section belongs to.
            pub fn kind(&self) -> Kind {
                match self {
                    $(KindSpec::$variant(_) => <$ty as KindSection>::KIND,)*
                }
            }

            /// The key it is written under (the kind's name).
            pub fn key(&self) -> &'static str {
                match self {
                    $(KindSpec::$variant(_) => $key,)*
                }
            }

            fn validate(&self) -> Result<(), ApiError> {
                match self {
                    $(KindSpec::$variant(s) => s.validate(),)*
                }
            }

            fn serialize_into<M: serde::ser::SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
                match self {
                    $(KindSpec::$variant(s) => map.serialize_entry($key, s),)*
                }
            }

            /// Reads the value of map key `key` as that kind's section.
            fn read<'de, A: serde::de::MapAccess<'de>>(
                key: SectionKey,
                map: &mut A,
            ) -> Result<KindSpec, A::Error> {
                match key.0 {
                    $(k if k == <$ty as KindSection>::KIND => Ok(KindSpec::$variant(map.next_value::<$ty>()?)),)*
                    _ => Err(serde::de::Error::custom("internal: no such section")),
                }
            }
        }

        /// The section keys, for "unknown field" messages.
        const SECTION_KEYS: &[&str] = &[$($key,)*];

        fn section_key(s: &str) -> Option<Kind> {
            match s {
                $($key => Some(<$ty as KindSection>::KIND),)*
                _ => None,
            }
        }

        $(
            impl<'a> From<$ty> for KindSpec {
                fn from(s: $ty) -> KindSpec {
                    KindSpec::$variant(s)
                }
            }

            impl SectionOf for $ty {
                fn of(s: &KindSpec) -> Option<&Self> {
                    match s {
                        KindSpec::$variant(x) => Some(x),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
                fn of_mut(s: &mut KindSpec) -> Option<&mut Self> {
                    match s {
                        KindSpec::$variant(x) => Some(x),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )*
    };
}

kind_sections! {
    Process => "process": ProcessSpec,
    Cgroup => "cgroup": CgroupSpec,
    Container => "container": ContainerSpec,
    Vm => "vm": VmSpec,
    K8s => "k8s": K8sSpec,
    Helm => "helm": HelmSpec,
}

/// Finds a kind's section in a [`KindSpec`]; generated for every section type.
pub trait SectionOf: KindSection {
    fn of(s: &KindSpec) -> Option<&Self>;
    fn of_mut(s: &mut KindSpec) -> Option<&mut Self>;
}

impl ObjectSpec {
    /// A spec of `kind` with nothing but a name and the section.
    pub fn new(name: impl Into<String>, section: impl Into<KindSpec>) -> ObjectSpec {
        let section = section.into();
        ObjectSpec {
            name: name.into(),
            kind: section.kind(),
            labels: BTreeMap::new(),
            section: Some(section),
            resources: Resources::default(),
            collect: CollectSpec::default(),
        }
    }

    /// The section of type `T`, if the spec carries that kind's.
    pub fn section<T: SectionOf>(&self) -> Option<&T> {
        self.section.as_ref().and_then(T::of)
    }

    pub fn section_mut<T: SectionOf>(&mut self) -> Option<&mut T> {
        self.section.as_mut().and_then(T::of_mut)
    }
}

/// A map key that names a kind's section.
#[derive(Clone, Copy)]
struct SectionKey(Kind);

const COMMON_KEYS: &[&str] = &["name", "kind", "labels", "resources", "collect"];

enum Field {
    Name,
    Kind,
    Labels,
    Resources,
    Collect,
    Section(SectionKey),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field of an object spec")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Field, E> {
                Ok(match s {
                    "name" => Field::Name,
                    "kind" => Field::Kind,
                    "labels" => Field::Labels,
                    "resources" => Field::Resources,
                    "collect" => Field::Collect,
                    other => match section_key(other) {
                        Some(k) => Field::Section(SectionKey(k)),
                        None => return Err(E::unknown_field(other, all_keys())),
                    },
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Every key a spec may have, common ones first, as serde's "expected one of" wants them.
fn all_keys() -> &'static [&'static str] {
    static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut v = COMMON_KEYS[..3].to_vec();
        v.extend_from_slice(SECTION_KEYS);
        v.extend_from_slice(&COMMON_KEYS[3..]);
        v
    })
}

/// Refuses a second kind section, at the second section's own path.
struct SecondSection {
    key: &'static str,
    first: &'static str,
}

impl<'de> serde::de::DeserializeSeed<'de> for SecondSection {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, _d: D) -> Result<(), D::Error> {
        Err(serde::de::Error::custom(format!(
            "`{}` is only allowed for kind {}: a spec carries the section of its own kind only, and `{}` is given",
            self.key, self.key, self.first
        )))
    }
}

impl<'de> Deserialize<'de> for ObjectSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ObjectSpec, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ObjectSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object spec")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ObjectSpec, A::Error> {
                use serde::de::Error;
                let mut name = None;
                let mut kind = None;
                let mut labels = None;
                let mut section: Option<KindSpec> = None;
                let mut resources = None;
                let mut collect = None;
                fn once<T, E: Error>(
                    slot: &mut Option<T>,
                    v: T,
                    key: &'static str,
                ) -> Result<(), E> {
                    if slot.is_some() {
                        return Err(E::duplicate_field(key));
                    }
                    *slot = Some(v);
                    Ok(())
                }
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Name => once(&mut name, map.next_value::<String>()?, "name")?,
                        Field::Kind => once(&mut kind, map.next_value::<Kind>()?, "kind")?,
                        Field::Labels => once(&mut labels, map.next_value()?, "labels")?,
                        Field::Resources => once(&mut resources, map.next_value()?, "resources")?,
                        Field::Collect => once(&mut collect, map.next_value()?, "collect")?,
                        Field::Section(k) => match &section {
                            Some(first) => {
                                map.next_value_seed(SecondSection {
                                    key: k.0.as_str(),
                                    first: first.key(),
                                })?;
                            }
                            None => section = Some(KindSpec::read(k, &mut map)?),
                        },
                    }
                }
                Ok(ObjectSpec {
                    name: name.ok_or_else(|| A::Error::missing_field("name"))?,
                    kind: kind.ok_or_else(|| A::Error::missing_field("kind"))?,
                    labels: labels.unwrap_or_default(),
                    section,
                    resources: resources.unwrap_or_default(),
                    collect: collect.unwrap_or_default(),
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for ObjectSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("kind", &self.kind)?;
        if !self.labels.is_empty() {
            m.serialize_entry("labels", &self.labels)?;
        }
        if let Some(sec) = &self.section {
            sec.serialize_into(&mut m)?;
        }
        m.serialize_entry("resources", &self.resources)?;
        m.serialize_entry("collect", &self.collect)?;
        m.end()
    }
}

/// The kind whose section is written under `key` (`"vm"` → [`Kind::Vm`]), if any.
pub fn section_kind(key: &str) -> Option<Kind> {
    section_key(key)
}

/// The section keys, for messages.
pub fn section_keys() -> &'static [&'static str] {
    SECTION_KEYS
}

pub(crate) fn is_false(b: &bool) -> bool {
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
    // A position serde could not name (the JSON itself is broken there) names no field:
    // `resources.?` is `resources`, and `?` alone is nothing.
    let mut parent = path;
    loop {
        if parent == "?" {
            parent.clear();
        } else if let Some(p) = parent.strip_suffix(".?") {
            parent = p.to_string();
            continue;
        }
        break;
    }
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
                        matches!(c, '.' | '[' | ']' | '"' | '?')
                            || c.is_whitespace()
                            || c.is_control()
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
        if self.kind == Kind::Host {
            if let Some(sec) = &self.section {
                let key = sec.key();
                return Err(ApiError::invalid(
                    key,
                    format!("`{key}` is only allowed for kind {key}, not host"),
                ));
            }
            return Err(ApiError::invalid(
                "kind",
                "the host is the node itself: it is always present and cannot be created",
            ));
        }
        match &self.section {
            Some(sec) if sec.kind() != self.kind => {
                let key = sec.key();
                return Err(ApiError::invalid(
                    key,
                    format!("`{key}` is only allowed for kind {key}, not {}", self.kind),
                ));
            }
            Some(sec) => sec.validate()?,
            None if section_key(self.kind.as_str()).is_some() => {
                let key = self.kind.as_str();
                return Err(ApiError::invalid(
                    key,
                    format!("kind {key} needs a `{key}` section"),
                ));
            }
            None => {}
        }
        self.resources.validate("resources")?;
        self.collect.validate()
    }
}

pub(crate) fn truncate(s: &str) -> String {
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

pub(crate) fn validate_env(prefix: &str, env: &BTreeMap<String, String>) -> Result<(), ApiError> {
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

pub(crate) fn validate_command(
    field: &str,
    cmd: &[String],
    required: bool,
) -> Result<(), ApiError> {
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
            s.section::<ProcessSpec>().map(|p| p.restart),
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
    fn one_section_only_named_at_the_second() {
        let e = ObjectSpec::from_json(
            br#"{"name":"x","kind":"process","process":{"command":["/bin/true"]},"cgroup":{"pids":[1]}}"#,
        )
        .expect_err("two sections");
        assert_eq!(e.field.as_deref(), Some("cgroup"), "{e:?}");
        let e = ObjectSpec::from_json(br#"{"name":"x","name":"y","kind":"process"}"#)
            .expect_err("duplicate");
        assert!(e.message.contains("duplicate field `name`"), "{e:?}");
        let e = ObjectSpec::from_json(br#"{"name":"x","kind":"process","ray":{}}"#)
            .expect_err("unknown section");
        assert_eq!(e.field.as_deref(), Some("ray"));
        assert!(e.message.contains("`process`"), "lists the keys: {e:?}");
    }

    /// The wire format is the contract's: written back, a spec reads the same, with the
    /// section under its kind's key.
    #[test]
    fn specs_round_trip_with_the_section_under_its_key() {
        for body in [
            r#"{"name":"a","kind":"process","labels":{"t":"1"},"process":{"command":["/bin/true"],"restart":"always"},"resources":{"cpu":0.5},"collect":{"interval":"100ms"}}"#,
            r#"{"name":"b","kind":"cgroup","cgroup":{"path":"/x"}}"#,
            r#"{"name":"c","kind":"container","container":{"adopt":"abc"}}"#,
        ] {
            let s = ObjectSpec::from_json(body.as_bytes()).expect(body);
            let v = serde_json::to_value(&s).expect("serialize");
            let key = s.kind.as_str();
            assert!(v.get(key).is_some_and(|x| x.is_object()), "{v}");
            let back = ObjectSpec::from_json(v.to_string().as_bytes()).expect("read back");
            assert_eq!(back, s);
        }
        let s = ObjectSpec::new(
            "d",
            ProcessSpec {
                command: vec!["/bin/true".into()],
                env: Default::default(),
                cwd: None,
                restart: RestartPolicy::Never,
            },
        );
        assert_eq!(s.kind, Kind::Process);
        assert!(s.section::<CgroupSpec>().is_none());
        assert!(s.section::<ProcessSpec>().is_some());
    }

    /// Broken JSON names no field (never `?`), or the last one serde could name.
    #[test]
    fn broken_json_names_no_unknown_field() {
        for body in [r#"{"name":"x","#, "{", "[1,2", r#"{"name""#, "nul"] {
            let e = ObjectSpec::from_json(body.as_bytes()).expect_err(body);
            assert_ne!(e.field.as_deref(), Some("?"), "{body}: {e:?}");
            assert!(
                !e.field.as_deref().unwrap_or("").contains('?'),
                "{body}: {e:?}"
            );
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
