//! Generates the upstream protocol's client and server from `proto/nodeagent/v1/upstream.proto`
//! at the repo root (the same way crates/api generates the agent API). The engine cannot depend
//! on crates/api (api → core → engine), and both the `grpc` sink (client) and the reference
//! receiver (server) live on this side, so the code is generated here.
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
    let file = root.join("nodeagent/v1/upstream.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[file], &[root])?;
    Ok(())
}
