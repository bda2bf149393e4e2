//! Generates the gRPC server and client from `proto/nodeagent/v1/agent.proto` at the repo root.
//!
//! The machines that build this have no system `protoc`, so the vendored one is used; it is
//! handed to prost-build through `PROTOC`, the only way prost-build takes it.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY (edition 2024 wording): build scripts are single-threaded here; nothing else reads
    // the environment concurrently. In edition 2021 the call is safe.
    std::env::set_var("PROTOC", protoc);

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("nodeagent/v1/agent.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[file], &[root])?;
    Ok(())
}
