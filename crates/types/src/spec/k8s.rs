//! The `k8s` kind's section: a manifest the agent applies to a Kubernetes cluster and follows.
//!
//! The manifest is YAML text (one or more `---` documents) or a list of objects. Validation
//! here needs no I/O: it parses the documents and checks what every Kubernetes object must have
//! (`apiVersion`, `kind`, `metadata.name`), so a bad manifest is refused with a 400 naming the
//! document and the field before anything is applied. What only the cluster knows (whether it
//! serves the kind, the schema of the object) is checked by the apply, which rolls back.

use super::{truncate, KindSection};
use crate::error::ApiError;
use crate::kind::Kind;
use crate::quantity::Duration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Largest manifest, as YAML text or as the JSON of its documents.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// Most documents in one manifest.
pub const MAX_DOCUMENTS: usize = 256;
/// The label the agent puts on every resource it applies: the object's id. A manifest may not
/// set it.
pub const LABEL_ID: &str = "nodeagent.io/id";
/// Longest wait for `wait: ready` (the default is 5 minutes).
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sSpec {
    /// The cluster, by its `[[cluster]] name`; may be left out when one cluster is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Namespace of the namespaced documents that name none (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub manifest: Manifest,
    /// What the create waits for: the apply (`applied`, the default) or readiness (`ready`).
    #[serde(default, skip_serializing_if = "K8sWait::is_default")]
    pub wait: K8sWait,
    /// How long `wait: ready` waits before the create fails and rolls back (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// What a create waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum K8sWait {
    #[default]
    Applied,
    Ready,
}

impl K8sWait {
    pub fn is_default(&self) -> bool {
        *self == K8sWait::Applied
    }
}

/// The manifest as it was given: YAML text, or a list of objects (kept as given, so that GET
/// shows what was sent).
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    Text(String),
    Documents(Vec<Value>),
}

impl Serialize for Manifest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Manifest::Text(t) => s.serialize_str(t),
            Manifest::Documents(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Manifest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Manifest::Text(s)),
            Value::Array(a) => Ok(Manifest::Documents(a)),
            Value::Object(o) => Ok(Manifest::Documents(vec![Value::Object(o)])),
            _ => Err(serde::de::Error::custom(
                "give the manifest as YAML text or as a list of objects",
            )),
        }
    }
}

/// One document of a manifest, checked: what the agent needs to find and apply it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Its index in the manifest (`k8s.manifest[index]` in errors).
    pub index: usize,
    /// `apiVersion`, split: the group (`""` for the core group) and the version.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub name: String,
    /// `metadata.namespace`, where the document gives one.
    pub namespace: Option<String>,
    /// The whole document.
    pub object: Map<String, Value>,
}

impl Document {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The field name of this document in errors.
    pub fn field(&self, rest: &str) -> String {
        doc_field(self.index, rest)
    }
}

fn doc_field(i: usize, rest: &str) -> String {
    if rest.is_empty() {
        format!("k8s.manifest[{i}]")
    } else {
        format!("k8s.manifest[{i}].{rest}")
    }
}

impl Manifest {
    /// The documents, parsed and checked; errors name the document (`k8s.manifest[2]`) and,
    /// where one is at fault, the field (`k8s.manifest[2].metadata.name`).
    pub fn documents(&self) -> Result<Vec<Document>, ApiError> {
        let raw: Vec<Value> = match self {
            Manifest::Text(t) => {
                if t.len() > MAX_MANIFEST_BYTES {
                    return Err(too_large(t.len()));
                }
                parse_yaml(t)?
            }
            Manifest::Documents(d) => {
                let size = serde_json::to_vec(d).map(|v| v.len()).unwrap_or(usize::MAX);
                if size > MAX_MANIFEST_BYTES {
                    return Err(too_large(size));
                }
                d.clone()
            }
        };
        if raw.is_empty() {
            return Err(ApiError::invalid(
                "k8s.manifest",
                "the manifest has no documents",
            ));
        }
        if raw.len() > MAX_DOCUMENTS {
            return Err(ApiError::invalid(
                "k8s.manifest",
                format!(
                    "{} documents; at most {MAX_DOCUMENTS} are allowed",
                    raw.len()
                ),
            ));
        }
        let mut docs: Vec<Document> = Vec::with_capacity(raw.len());
        for (i, v) in raw.into_iter().enumerate() {
            let d = check_document(i, v)?;
            if let Some(prev) = docs.iter().find(|p| {
                p.group == d.group
                    && p.kind == d.kind
                    && p.name == d.name
                    && p.namespace == d.namespace
            }) {
                return Err(ApiError::invalid(
                    d.field(""),
                    format!(
                        "{} {} is already document {} of the manifest",
                        d.kind, d.name, prev.index
                    ),
                ));
            }
            docs.push(d);
        }
        Ok(docs)
    }
}

fn too_large(n: usize) -> ApiError {
    ApiError::invalid(
        "k8s.manifest",
        format!("the manifest is {n} bytes; at most {MAX_MANIFEST_BYTES} are allowed"),
    )
}

/// The documents of YAML text; empty documents (a leading `---`, comments only) are skipped,
/// as kubectl does, and a document that is a list gives its items.
fn parse_yaml(t: &str) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(t).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| {
            ApiError::invalid(
                doc_field(out.len(), ""),
                format!("YAML document {} does not parse: {e}", i + 1),
            )
        })?;
        match v {
            Value::Null => {}
            // A document that is a list holds documents: the JSON form of a manifest (a list
            // of objects) given as text, as the gRPC API carries it.
            Value::Array(items) => out.extend(items),
            v => out.push(v),
        }
        if out.len() > MAX_DOCUMENTS {
            break;
        }
    }
    Ok(out)
}

fn check_document(i: usize, v: Value) -> Result<Document, ApiError> {
    let Value::Object(object) = v else {
        return Err(ApiError::invalid(
            doc_field(i, ""),
            "a document must be an object (a mapping)",
        ));
    };
    let text = |key: &str| -> Result<String, ApiError> {
        match object.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(ApiError::invalid(
                doc_field(i, key),
                "must be a non-empty string",
            )),
            None => Err(ApiError::invalid(doc_field(i, key), "is required")),
        }
    };
    let api_version = text("apiVersion")?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let group_ok = group.is_empty() || is_dns_subdomain(&group);
    let version_ok = !version.is_empty()
        && version.len() <= 63
        && version
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !group_ok || !version_ok {
        return Err(ApiError::invalid(
            doc_field(i, "apiVersion"),
            format!(
                "{:?} is not an API version (`v1` or `group/version`)",
                truncate(&api_version)
            ),
        ));
    }
    let kind = text("kind")?;
    if kind.len() > 63 || !kind.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::invalid(
            doc_field(i, "kind"),
            format!("{:?} is not a kind name", truncate(&kind)),
        ));
    }
    if kind.ends_with("List") {
        return Err(ApiError::invalid(
            doc_field(i, "kind"),
            "give the items of a list as documents of their own",
        ));
    }
    let Some(Value::Object(meta)) = object.get("metadata") else {
        return Err(ApiError::invalid(
            doc_field(i, "metadata"),
            "is required, with a name",
        ));
    };
    let name = match meta.get("name") {
        Some(Value::String(s)) if is_object_name(s) => s.clone(),
        Some(Value::String(s)) => {
            return Err(ApiError::invalid(
                doc_field(i, "metadata.name"),
                format!(
                    "{:?} is not a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253)",
                    truncate(s)
                ),
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(doc_field(i, "metadata.name"), "must be a string"))
        }
        None if meta.contains_key("generateName") => {
            return Err(ApiError::invalid(
                doc_field(i, "metadata.generateName"),
                "server-side apply needs a fixed name: give metadata.name",
            ))
        }
        None => return Err(ApiError::invalid(doc_field(i, "metadata.name"), "is required")),
    };
    let namespace = match meta.get("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_dns_label(s) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                doc_field(i, "metadata.namespace"),
                "must be a namespace name (lowercase letters, digits and '-', at most 63)",
            ))
        }
    };
    match meta.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(l)) => {
            if l.contains_key(LABEL_ID) {
                return Err(ApiError::invalid(
                    doc_field(i, &format!("metadata.labels.{LABEL_ID}")),
                    "is the agent's own label (the object's id); leave it out",
                ));
            }
            if let Some((k, _)) = l.iter().find(|(_, v)| !v.is_string()) {
                return Err(ApiError::invalid(
                    doc_field(i, &format!("metadata.labels.{k}")),
                    "a label value must be a string",
                ));
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                doc_field(i, "metadata.labels"),
                "must be a map of strings",
            ))
        }
    }
    Ok(Document {
        index: i,
        group,
        version,
        kind,
        name,
        namespace,
        object,
    })
}

/// RFC 1123 subdomain: what most object names must be.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// RFC 1123 label: a namespace name.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// An object name: a subdomain, or (RBAC's roles and bindings, for example) a path segment
/// with `:`. The server checks the exact rule of its kind.
fn is_object_name(s: &str) -> bool {
    is_dns_subdomain(s)
        || (!s.is_empty()
            && s.len() <= 253
            && s != "."
            && s != ".."
            && s.bytes().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b':' | b'_' | b'@')
            }))
}

impl K8sSpec {
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0)
    }

    /// The namespace of the namespaced documents that name none.
    pub fn default_namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

impl KindSection for K8sSpec {
    const KIND: Kind = Kind::K8s;

    fn validate(&self) -> Result<(), ApiError> {
        if let Some(c) = &self.cluster {
            if c.is_empty() || c.len() > 63 || !is_dns_subdomain(c) {
                return Err(ApiError::invalid(
                    "k8s.cluster",
                    format!("{:?} is not a cluster name", truncate(c)),
                ));
            }
        }
        if let Some(ns) = &self.namespace {
            if !is_dns_label(ns) {
                return Err(ApiError::invalid(
                    "k8s.namespace",
                    format!(
                        "{:?} is not a namespace name (lowercase letters, digits and '-', at most 63)",
                        truncate(ns)
                    ),
                ));
            }
        }
        if let Some(t) = self.timeout {
            if t.0.is_zero() || t.0 > MAX_TIMEOUT {
                return Err(ApiError::invalid("k8s.timeout", "give 1s to 1h"));
            }
        }
        self.manifest.documents().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ObjectSpec;
    use proptest::prelude::*;

    fn spec(k8s: &str) -> Result<ObjectSpec, ApiError> {
        ObjectSpec::from_json(format!(r#"{{"name":"m","kind":"k8s","k8s":{k8s}}}"#).as_bytes())
    }

    fn field(k8s: &str) -> Option<String> {
        spec(k8s).expect_err("refused").field
    }

    #[test]
    fn yaml_text_with_several_documents_parses() {
        let s = spec(
            r#"{"manifest":"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n---\n# only a comment\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: team}\n"}"#,
        )
        .expect("ok");
        let k = s.section::<K8sSpec>().expect("k8s");
        let d = k.manifest.documents().expect("documents");
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].group.as_str(), d[0].version.as_str()), ("", "v1"));
        assert_eq!(d[1].group, "apps");
        assert_eq!(d[1].namespace.as_deref(), Some("team"));
        assert_eq!(d[1].index, 1);
        assert_eq!(k.wait, K8sWait::Applied);
    }

    #[test]
    fn a_list_of_objects_parses() {
        let s = spec(
            r#"{"manifest":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}],"wait":"ready","timeout":"30s"}"#,
        )
        .expect("ok");
        let k = s.section::<K8sSpec>().expect("k8s");
        assert_eq!(k.wait, K8sWait::Ready);
        assert_eq!(k.timeout(), std::time::Duration::from_secs(30));
    }

    #[test]
    fn bad_documents_are_named() {
        let cm = |meta: &str| {
            format!(
                r#"{{"manifest":[{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"ok"}}}},{{"apiVersion":"v1","kind":"ConfigMap","metadata":{meta}}}]}}"#
            )
        };
        assert_eq!(
            field(&cm(r#"{"name":"bad/name"}"#)).as_deref(),
            Some("k8s.manifest[1].metadata.name")
        );
        assert_eq!(
            field(&cm(r#"{}"#)).as_deref(),
            Some("k8s.manifest[1].metadata.name")
        );
        assert_eq!(
            field(&cm(r#"{"name":"ok"}"#)).as_deref(),
            Some("k8s.manifest[1]")
        );
        assert_eq!(
            field(&cm(r#"{"name":"x","namespace":"a.b"}"#)).as_deref(),
            Some("k8s.manifest[1].metadata.namespace")
        );
        assert_eq!(
            field(&cm(r#"{"name":"x","labels":{"nodeagent.io/id":"x"}}"#)).as_deref(),
            Some("k8s.manifest[1].metadata.labels.nodeagent.io/id")
        );
        assert_eq!(
            field(r#"{"manifest":[{"kind":"ConfigMap","metadata":{"name":"a"}}]}"#).as_deref(),
            Some("k8s.manifest[0].apiVersion")
        );
        assert_eq!(
            field(r#"{"manifest":[{"apiVersion":"a/b/c","kind":"X","metadata":{"name":"a"}}]}"#)
                .as_deref(),
            Some("k8s.manifest[0].apiVersion")
        );
        assert_eq!(
            field(r#"{"manifest":[{"apiVersion":"v1","kind":"List","metadata":{"name":"a"}}]}"#)
                .as_deref(),
            Some("k8s.manifest[0].kind")
        );
        assert_eq!(
            field(r#"{"manifest":"a: [unclosed"}"#).as_deref(),
            Some("k8s.manifest[0]")
        );
        assert_eq!(
            field(
                r#"{"manifest":"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n- 1\n"}"#
            )
            .as_deref(),
            Some("k8s.manifest[1]")
        );
        assert_eq!(field(r#"{"manifest":""}"#).as_deref(), Some("k8s.manifest"));
        assert_eq!(field(r#"{"manifest":7}"#).as_deref(), Some("k8s.manifest"));
        assert_eq!(
            field(r#"{"manifest":[],"namespace":"No"}"#).as_deref(),
            Some("k8s.namespace")
        );
        assert_eq!(
            field(r#"{"manifest":[],"cluster":"a b"}"#).as_deref(),
            Some("k8s.cluster")
        );
        assert_eq!(
            field(r#"{"manifest":[],"bogus":1}"#).as_deref(),
            Some("k8s.bogus")
        );
    }

    #[test]
    fn the_size_is_capped() {
        let big = "#".repeat(MAX_MANIFEST_BYTES + 1);
        let e = Manifest::Text(big).documents().expect_err("too large");
        assert_eq!(e.field.as_deref(), Some("k8s.manifest"));
        assert!(e.message.contains("at most"), "{}", e.message);
        let many: String = (0..=MAX_DOCUMENTS)
            .map(|i| format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\n"))
            .collect();
        let e = Manifest::Text(many).documents().expect_err("too many");
        assert!(e.message.contains("documents"), "{}", e.message);
    }

    proptest! {
        /// Whatever text comes in, the parser answers (documents or an error naming the
        /// manifest), and never panics.
        #[test]
        fn any_text_gets_an_answer(s in "\\PC{0,400}") {
            match Manifest::Text(s).documents() {
                Ok(d) => prop_assert!(!d.is_empty()),
                Err(e) => prop_assert!(e.field.unwrap_or_default().starts_with("k8s.manifest")),
            }
        }

        /// YAML-ish text built from manifest pieces: same.
        #[test]
        fn yaml_like_text_gets_an_answer(parts in proptest::collection::vec(
            prop_oneof![
                Just("---\n"), Just("apiVersion: v1\n"), Just("kind: ConfigMap\n"),
                Just("metadata:\n"), Just("  name: a\n"), Just("  namespace: x\n"),
                Just("  labels: {a: 1}\n"), Just("data: {k: v}\n"), Just("- x\n"), Just(": :\n"),
                Just("apiVersion: apps/v1\n"), Just("  name: [1]\n"),
            ], 0..16)) {
            let s: String = parts.concat();
            match Manifest::Text(s).documents() {
                Ok(d) => prop_assert!(!d.is_empty()),
                Err(e) => prop_assert!(e.field.unwrap_or_default().starts_with("k8s.manifest")),
            }
        }
    }
}
