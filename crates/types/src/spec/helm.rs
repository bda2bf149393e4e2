//! The `helm` kind's section: a Helm release the agent installs, upgrades and uninstalls with
//! the real helm binary.
//!
//! Every field ends up as one argument of a helm command (never through a shell), so each is
//! checked here, with no I/O: the chart is an absolute path (a chart directory or a packaged
//! `.tgz`) or an `oci://`/`http(s)://` reference, the release and namespace are DNS names, the
//! version is a semver constraint, and no value starts with `-` (it would be read as a flag).
//! Values are a map and reach helm through a file, never on the command line.

use super::{truncate, KindSection};
use crate::error::ApiError;
use crate::kind::Kind;
use crate::quantity::Duration;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Longest `values`, as JSON.
pub const MAX_VALUES_BYTES: usize = 1 << 20;
/// Most `value_files`.
pub const MAX_VALUE_FILES: usize = 16;
/// Helm's own limit on a release name.
pub const MAX_RELEASE_NAME: usize = 53;
/// Longest `--wait` (the default is 5 minutes, helm's).
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
const MAX_PATH: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelmSpec {
    /// A chart directory or a packaged `.tgz` (absolute paths), or an `oci://`/`http(s)://`
    /// reference where the node reaches it.
    pub chart: String,
    /// The chart's version (a semver constraint), for a chart from a repository or registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Values, as a map (or YAML text of one); written to a file for helm.
    #[serde(
        default,
        skip_serializing_if = "Map::is_empty",
        deserialize_with = "values_map"
    )]
    pub values: Map<String, Value>,
    /// Values files on the node (absolute paths), before `values` (which win).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_files: Vec<String>,
    /// The release name (default: the object's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The release's namespace (default `default`); made if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A `[[cluster]]` name; may be left out when one cluster is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Wait until the release's resources are ready (helm's `--wait`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
    /// helm's `--timeout` (default 5m, at most 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// `values` as a map, or as YAML (or JSON) text of one (how the gRPC API carries it).
fn values_map<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    use serde::de::Error as _;
    match Value::deserialize(d)? {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m),
        Value::String(s) if s.trim().is_empty() => Ok(Map::new()),
        Value::String(s) => {
            if s.len() > MAX_VALUES_BYTES {
                return Err(D::Error::custom(format!(
                    "the values are {} bytes; at most {MAX_VALUES_BYTES} are allowed",
                    s.len()
                )));
            }
            match serde_yaml::from_str::<Value>(&s) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(Value::Null) => Ok(Map::new()),
                Ok(_) => Err(D::Error::custom("the values must be a map")),
                Err(e) => Err(D::Error::custom(format!("the values do not parse: {e}"))),
            }
        }
        _ => Err(D::Error::custom(
            "give the values as a map (or YAML text of one)",
        )),
    }
}

/// Helm's rule for a release name: a DNS subdomain of at most 53 characters.
pub fn is_release_name(s: &str) -> bool {
    s.len() <= MAX_RELEASE_NAME && super::is_dns_subdomain(s)
}

fn bad_text(s: &str) -> bool {
    s.is_empty() || s.starts_with('-') || s.chars().any(|c| c.is_control())
}

/// A chart reference helm can take: an absolute path, or an OCI or HTTP(S) URL.
fn check_chart(c: &str) -> Result<(), String> {
    if bad_text(c) || c.len() > MAX_PATH {
        return Err(format!(
            "{:?} is not a chart: give an absolute path (a chart directory or a .tgz) or an oci:// or http(s):// reference",
            truncate(c)
        ));
    }
    if c.starts_with('/') {
        if c.split('/').any(|p| p == "..") {
            return Err("give the chart's path without `..`".into());
        }
        return Ok(());
    }
    let url = ["oci://", "https://", "http://"]
        .iter()
        .find_map(|p| c.strip_prefix(p));
    match url {
        Some(rest)
            if !rest.is_empty()
                && !rest.contains(char::is_whitespace)
                && !rest.starts_with('/') =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{:?} is not a chart: give an absolute path (a chart directory or a .tgz) or an oci:// or http(s):// reference",
            truncate(c)
        )),
    }
}

impl HelmSpec {
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0)
    }

    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// Whether the chart is on the node's disk (not a repository or registry reference).
    pub fn chart_is_local(&self) -> bool {
        self.chart.starts_with('/')
    }

    /// The release name: `release`, or the object's name when it is a valid release name
    /// (otherwise a 400 naming `helm.release`).
    pub fn release_name(&self, object_name: &str) -> Result<String, ApiError> {
        match &self.release {
            Some(r) => Ok(r.clone()),
            None if is_release_name(object_name) => Ok(object_name.to_string()),
            None => Err(ApiError::invalid(
                "helm.release",
                format!(
                    "the object's name {:?} is not a helm release name (lowercase letters, digits, '-' and '.', at most {MAX_RELEASE_NAME}): give helm.release",
                    truncate(object_name)
                ),
            )),
        }
    }

    /// The values as the JSON text of the file helm reads (JSON is YAML).
    pub fn values_json(&self) -> String {
        Value::Object(self.values.clone()).to_string()
    }
}

impl KindSection for HelmSpec {
    const KIND: Kind = Kind::Helm;

    fn validate(&self) -> Result<(), ApiError> {
        check_chart(&self.chart).map_err(|m| ApiError::invalid("helm.chart", m))?;
        if let Some(v) = &self.version {
            let ok = !bad_text(v)
                && v.len() <= 128
                && v.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(
                            c,
                            '.' | '-' | '+' | '^' | '~' | '<' | '>' | '=' | '*' | ',' | ' ' | '|'
                        )
                });
            if !ok {
                return Err(ApiError::invalid(
                    "helm.version",
                    format!("{:?} is not a chart version or constraint", truncate(v)),
                ));
            }
        }
        if let Some(r) = &self.release {
            if !is_release_name(r) {
                return Err(ApiError::invalid(
                    "helm.release",
                    format!(
                        "{:?} is not a helm release name (lowercase letters, digits, '-' and '.', at most {MAX_RELEASE_NAME})",
                        truncate(r)
                    ),
                ));
            }
        }
        if let Some(ns) = &self.namespace {
            if !super::is_dns_label(ns) {
                return Err(ApiError::invalid(
                    "helm.namespace",
                    format!(
                        "{:?} is not a namespace name (lowercase letters, digits and '-', at most 63)",
                        truncate(ns)
                    ),
                ));
            }
        }
        if let Some(c) = &self.cluster {
            if c.len() > 63 || !super::is_dns_subdomain(c) {
                return Err(ApiError::invalid(
                    "helm.cluster",
                    format!("{:?} is not a cluster name", truncate(c)),
                ));
            }
        }
        if self.value_files.len() > MAX_VALUE_FILES {
            return Err(ApiError::invalid(
                "helm.value_files",
                format!("at most {MAX_VALUE_FILES} files"),
            ));
        }
        for (i, f) in self.value_files.iter().enumerate() {
            if bad_text(f)
                || !f.starts_with('/')
                || f.len() > MAX_PATH
                || f.split('/').any(|p| p == "..")
            {
                return Err(ApiError::invalid(
                    format!("helm.value_files[{i}]"),
                    "give an absolute path on the node, without `..`",
                ));
            }
        }
        let size = self.values_json().len();
        if size > MAX_VALUES_BYTES {
            return Err(ApiError::invalid(
                "helm.values",
                format!("the values are {size} bytes; at most {MAX_VALUES_BYTES} are allowed"),
            ));
        }
        if let Some(t) = self.timeout {
            if t.0 < std::time::Duration::from_secs(1) || t.0 > MAX_TIMEOUT {
                return Err(ApiError::invalid("helm.timeout", "give 1s to 1h"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ObjectSpec;

    fn spec(helm: &str) -> Result<ObjectSpec, ApiError> {
        ObjectSpec::from_json(format!(r#"{{"name":"web","kind":"helm","helm":{helm}}}"#).as_bytes())
    }

    fn field(helm: &str) -> Option<String> {
        spec(helm).expect_err("refused").field
    }

    #[test]
    fn a_full_section_parses() {
        let s = spec(
            r#"{"chart":"/charts/demo","version":"^1.2","values":{"a":{"b":1}},"value_files":["/etc/v.yaml"],"release":"r-1","namespace":"team","cluster":"prod","wait":true,"timeout":"90s"}"#,
        )
        .expect("ok");
        let h = s.section::<HelmSpec>().expect("helm");
        assert_eq!(h.values["a"]["b"], 1);
        assert_eq!(h.timeout(), std::time::Duration::from_secs(90));
        assert_eq!(h.release_name("web").expect("test"), "r-1");
        assert!(h.chart_is_local());
        for c in [
            "oci://registry.example/charts/demo",
            "https://example.com/demo-1.0.0.tgz",
        ] {
            let s = spec(&format!(r#"{{"chart":"{c}"}}"#)).expect("a reference");
            assert!(!s.section::<HelmSpec>().expect("test").chart_is_local());
        }
    }

    #[test]
    fn values_may_be_yaml_text() {
        let s = spec(r#"{"chart":"/c","values":"a: 1\nb: [x]\n"}"#).expect("ok");
        let h = s.section::<HelmSpec>().expect("test");
        assert_eq!(h.values["a"], 1);
        assert_eq!(h.values_json(), r#"{"a":1,"b":["x"]}"#);
        assert_eq!(
            field(r#"{"chart":"/c","values":"- 1"}"#).as_deref(),
            Some("helm.values")
        );
        assert_eq!(
            field(r#"{"chart":"/c","values":"a: [1"}"#).as_deref(),
            Some("helm.values")
        );
        assert_eq!(
            field(r#"{"chart":"/c","values":7}"#).as_deref(),
            Some("helm.values")
        );
    }

    #[test]
    fn what_would_be_read_as_a_flag_or_is_not_a_name_is_refused() {
        for (helm, f) in [
            (r#"{"chart":"--post-renderer=/bin/sh"}"#, "helm.chart"),
            (r#"{"chart":"demo"}"#, "helm.chart"),
            (r#"{"chart":"/a/../etc"}"#, "helm.chart"),
            (r#"{"chart":"oci://"}"#, "helm.chart"),
            (r#"{"chart":"/c\n"}"#, "helm.chart"),
            (r#"{"chart":"/c","version":"--devel"}"#, "helm.version"),
            (r#"{"chart":"/c","version":"1.0;rm"}"#, "helm.version"),
            (r#"{"chart":"/c","release":"Web"}"#, "helm.release"),
            (r#"{"chart":"/c","release":"-x"}"#, "helm.release"),
            (r#"{"chart":"/c","namespace":"a.b"}"#, "helm.namespace"),
            (r#"{"chart":"/c","cluster":"a b"}"#, "helm.cluster"),
            (
                r#"{"chart":"/c","value_files":["/ok","rel.yaml"]}"#,
                "helm.value_files[1]",
            ),
            (r#"{"chart":"/c","timeout":"0s"}"#, "helm.timeout"),
            (r#"{"chart":"/c","bogus":1}"#, "helm.bogus"),
        ] {
            assert_eq!(field(helm).as_deref(), Some(f), "{helm}");
        }
        let long = "a".repeat(54);
        assert_eq!(
            field(&format!(r#"{{"chart":"/c","release":"{long}"}}"#)).as_deref(),
            Some("helm.release")
        );
    }

    #[test]
    fn the_release_defaults_to_the_object_name_when_helm_takes_it() {
        let s = spec(r#"{"chart":"/c"}"#).expect("test");
        let h = s.section::<HelmSpec>().expect("test");
        assert_eq!(h.release_name("web").expect("test"), "web");
        assert_eq!(h.namespace(), "default");
        let e = h.release_name("my_app").expect_err("underscore");
        assert_eq!(e.field.as_deref(), Some("helm.release"));
    }
}
