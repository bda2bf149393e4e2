//! HTTP/JSON (axum) and gRPC (tonic) front ends. They parse a request into a call on the core's
//! [`AgentHandle`] and turn the answer into a response; they do no work of their own.
//!
//! Both front ends share one listener: the server tells HTTP/1.1 from HTTP/2 per connection, and
//! gRPC requests (HTTP/2, path `/nodeagent.v1.Agent/...`) go to the tonic service while every
//! other request goes to the HTTP routes. Both read requests with the same parsers
//! ([`request`]), so a bad spec gets the same message and field name either way.

pub mod core;
mod events;
pub mod grpc;
pub mod http;
pub mod request;

/// Code generated from `proto/nodeagent/v1/agent.proto`: messages, the server trait and the
/// client (`proto::agent_client::AgentClient`), for other crates' tests and tools.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("nodeagent.v1");
}

pub use crate::core::Core;
pub use crate::request::MAX_BODY_BYTES;

use crate::events::Stop;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use nodeagent_core::AgentHandle;
use std::future::Future;
use std::sync::Arc;

/// What every handler gets: the core, and the signal that ends long-lived streams.
#[derive(Clone)]
pub(crate) struct Api {
    core: Arc<dyn Core>,
    stop: Stop,
}

/// The whole API (HTTP routes and the gRPC service) as one router over `handle`.
///
/// Event streams served by this router end only when the client hangs up or the core goes away;
/// [`serve_tcp`] and [`serve_unix`] also end them at shutdown.
pub fn router(handle: AgentHandle) -> axum::Router {
    router_for(Arc::new(handle))
}

/// [`router`] over any [`Core`]; tests use it with a stand-in core.
pub fn router_for(core: Arc<dyn Core>) -> axum::Router {
    build(core, Stop::never())
}

fn build(core: Arc<dyn Core>, stop: Stop) -> axum::Router {
    let api = Api { core, stop };
    let grpc = tonic::service::Routes::new(grpc::server(api.clone()))
        .into_axum_router()
        // tonic's catch-all answers UNIMPLEMENTED; ours does that for gRPC requests and a JSON
        // 404 for the rest, and axum allows only one.
        .reset_fallback();
    http::routes()
        // Applies to the HTTP routes' body extractors; the gRPC service has its own limit.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
        .merge(grpc)
}

/// Serves HTTP/1.1, HTTP/2 and gRPC (same port) on `listener` until `shutdown` resolves.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    handle: AgentHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tcp_with(listener, Arc::new(handle), shutdown).await
}

/// [`serve_tcp`] over any [`Core`].
pub async fn serve_tcp_with(
    listener: tokio::net::TcpListener,
    core: Arc<dyn Core>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = build(core, Stop::new(stop_rx));
    // Small request/response exchanges are the whole workload; Nagle's algorithm would hold a
    // response back for the client's delayed ACK (up to 40 ms) on a millisecond-level API.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(stopping(shutdown, stop_tx))
        .await
}

/// The same on a unix socket (the CLI's default transport).
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    handle: AgentHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_unix_with(listener, Arc::new(handle), shutdown).await
}

/// [`serve_unix`] over any [`Core`].
pub async fn serve_unix_with(
    listener: tokio::net::UnixListener,
    core: Arc<dyn Core>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = build(core, Stop::new(stop_rx));
    axum::serve(listener, app)
        .with_graceful_shutdown(stopping(shutdown, stop_tx))
        .await
}

/// Waits for `shutdown`, then ends the open event streams so that graceful shutdown, which
/// drains every connection, does not wait for watchers that never hang up.
async fn stopping(
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop: tokio::sync::watch::Sender<bool>,
) {
    shutdown.await;
    // No receiver left means no stream to end.
    let _ = stop.send(true);
}
