//! Generates the gRPC server and client from `proto/nodeagent/v1/agent.proto` at the repo root,
//! with serde on every message so that `grpc::convert` can go proto → JSON → the HTTP API's
//! parser, and model → JSON → proto, without code per message or per kind.
//!
//! The serde attributes are derived here from the proto's own descriptor, one rule per proto
//! field shape, so that a new message or field (a new kind's section) gets them with no line
//! in this file:
//! - every message: `Serialize`, `Deserialize`, and `#[serde(default)]` (the JSON model leaves
//!   out what it has no value for; a missing field is proto3's default);
//! - `optional` scalars and message fields (`Option` in Rust): left out when `None`, so that "not
//!   given" stays "not given" for the JSON parser (its defaults apply);
//! - repeated and map fields: left out when empty, since proto3 cannot tell an empty list from
//!   none, and the JSON model may tell them apart (`cgroup.pids: []` is an error, absent is not);
//! - `double`/`float`: NaN and infinities written as the strings proto3's JSON mapping uses,
//!   which the parser refuses at the field, since serde_json would write `null` ("not given",
//!   for a limit "no limit");
//! - `string`: reads a JSON number as its decimal digits too, since the model writes some
//!   quantities as numbers where the proto has a string (`resources.memory` is a byte count).
//!
//! Non-optional scalars are always written, defaults included, so that an empty `name` or
//! `kind` reaches the parser as an invalid value of that field.
//!
//! The machines that build this have no system `protoc`, so the vendored one is used; it is
//! handed to prost-build through `PROTOC`, the only way prost-build takes it.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Optional fields that objects report with the JSON model's default filled in where the model
/// leaves them out, as gRPC clients have always been shown them: (proto field, default). Only
/// for what the model omits when it is the default; a new kind needs no line here.
const REPORTED_DEFAULTS: &[(&str, &str)] = &[(".nodeagent.v1.ContainerSpec.network", "bridge")];

/// Where `grpc::convert`'s serde helpers live, as the generated attributes name them.
const HELPERS: &str = "crate::grpc::convert::serde_helpers";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY (edition 2024 wording): build scripts are single-threaded here; nothing else reads
    // the environment concurrently. In edition 2021 the call is safe.
    std::env::set_var("PROTOC", protoc);

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("nodeagent/v1/agent.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = tonic_prost_build::Config::new().load_fds(&[&file], &[&root])?;

    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .message_attribute(".", "#[derive(::serde::Serialize, ::serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]");
    let mut defaults = String::new();
    for f in &fds.file {
        let package = format!(".{}", f.package());
        for m in &f.message_type {
            builder = message(builder, &package, m, &mut defaults)?;
        }
    }
    for (field, _) in REPORTED_DEFAULTS {
        if !defaults.contains(&default_fn(field)) {
            return Err(format!(
                "REPORTED_DEFAULTS names {field}, which is not an optional string field"
            )
            .into());
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("reported_defaults.rs"), defaults)?;
    builder.compile_fds(fds)?;
    Ok(())
}

/// Adds the serde attributes of the fields of `m` (and of its nested messages).
fn message(
    mut b: tonic_prost_build::Builder,
    parent: &str,
    m: &DescriptorProto,
    defaults: &mut String,
) -> Result<tonic_prost_build::Builder, String> {
    let path = format!("{parent}.{}", m.name());
    // Map entries are not messages of their own in the generated code.
    if m.options.as_ref().is_some_and(|o| o.map_entry()) {
        return Ok(b);
    }
    for n in &m.nested_type {
        b = message(b, &path, n, defaults)?;
    }
    for f in &m.field {
        let field = format!("{path}.{}", f.name());
        if f.oneof_index.is_some() && !f.proto3_optional() {
            // A oneof is a Rust enum, which these attributes do not fit, and has no JSON form
            // in the model yet: give it one before using it.
            return Err(format!("{field}: oneof fields have no JSON mapping here"));
        }
        let mut attrs = Vec::new();
        if f.label() == Label::Repeated {
            attrs.push(format!("skip_serializing_if = \"{HELPERS}::is_empty\""));
        } else if f.proto3_optional() || f.r#type() == Type::Message {
            attrs.push("skip_serializing_if = \"::core::option::Option::is_none\"".to_string());
        }
        if f.label() != Label::Repeated {
            match f.r#type() {
                Type::Double | Type::Float => {
                    attrs.push(format!("serialize_with = \"{HELPERS}::finite\""));
                }
                Type::String => {
                    attrs.push(format!("deserialize_with = \"{HELPERS}::text\""));
                }
                _ => {}
            }
            if let Some((_, value)) = REPORTED_DEFAULTS.iter().find(|(p, _)| *p == field) {
                if is_optional_string(f) {
                    let name = default_fn(&field);
                    // Generated into `proto` beside the messages, which include it.
                    let _ = writeln!(
                        defaults,
                        "#[doc(hidden)]\npub(crate) fn {name}() -> ::core::option::Option<::std::string::String> {{ ::core::option::Option::Some({value:?}.to_string()) }}"
                    );
                    attrs.push(format!("default = \"crate::proto::{name}\""));
                }
            }
        }
        if !attrs.is_empty() {
            b = b.field_attribute(&field, format!("#[serde({})]", attrs.join(", ")));
        }
    }
    Ok(b)
}

fn is_optional_string(f: &FieldDescriptorProto) -> bool {
    f.proto3_optional() && f.r#type() == Type::String
}

/// The name of the generated function giving `field`'s reported default.
fn default_fn(field: &str) -> String {
    format!("reported_default{}", field.replace('.', "_").to_lowercase())
}
