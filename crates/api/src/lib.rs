//! HTTP/JSON (axum) and gRPC (tonic) front ends. They parse a request into a call on the core's
//! [`AgentHandle`] and turn the answer into a response; they do no work of their own.
//!
//! Both front ends share one listener: the server tells HTTP/1.1 from HTTP/2 per connection, and
//! gRPC requests (HTTP/2, path `/nodeagent.v1.Agent/...`) go to the tonic service while every
//! other request goes to the HTTP routes. Both read requests with the same parsers
//! ([`request`]), so a bad spec gets the same message and field name either way.

pub mod auth;
pub mod bus;
pub mod core;
mod error;
mod events;
pub mod grpc;
pub mod http;
mod listen;
pub mod paths;
pub mod request;
pub mod samples;
pub mod tls;
pub mod trace;

/// Code generated from `proto/nodeagent/v1/agent.proto`: messages, the server trait and the
/// client (`proto::agent_client::AgentClient`), for other crates' tests and tools.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("nodeagent.v1");
    // The defaults that objects report for some optional fields (`build.rs`,
    // `REPORTED_DEFAULTS`), which the generated serde attributes name.
    include!(concat!(env!("OUT_DIR"), "/reported_defaults.rs"));
}

pub use crate::auth::{Peer, Token};
pub use crate::core::{AuditRecord, Core};
pub use crate::request::MAX_BODY_BYTES;

use crate::auth::{Access, Guard};
use crate::events::Stop;
use axum::extract::DefaultBodyLimit;
use nodeagent_core::AgentHandle;
use std::future::Future;
use std::sync::Arc;

/// What every handler gets: the core, the signal that ends long-lived streams, and the body
/// size cap (for its error message).
#[derive(Clone)]
pub(crate) struct Api {
    core: Arc<dyn Core>,
    /// The sample rings the live sample streams poll; `None` for a stand-in core.
    rings: Option<Arc<dyn samples::Rings>>,
    stop: Stop,
    max_body: usize,
}

/// How the TCP listener lets requests in. There is no `Default`: the caller decides about
/// authentication explicitly.
#[derive(Clone, Debug)]
pub struct TcpOptions {
    /// The bearer token every request but `/healthz` and `/readyz` (and `/metrics` when
    /// `metrics_public`) must carry. `None` turns the check off; [`serve_tcp`] then refuses a
    /// non-loopback address unless TLS requires client certificates.
    pub token: Option<Token>,
    /// Serve `/metrics` without the token (for a Prometheus that scrapes without one).
    pub metrics_public: bool,
    /// TLS, optionally requiring client certificates.
    pub tls: Option<tls::ServerTls>,
    /// Largest request body (and gRPC message) accepted; larger ones get 413.
    pub max_body: usize,
}

impl TcpOptions {
    /// Token authentication, no TLS, the default body cap.
    pub fn with_token(token: Token) -> TcpOptions {
        TcpOptions {
            token: Some(token),
            metrics_public: false,
            tls: None,
            max_body: MAX_BODY_BYTES,
        }
    }

    /// No token. Only a loopback address or TLS with client certificates will be served.
    pub fn without_token() -> TcpOptions {
        TcpOptions {
            token: None,
            metrics_public: false,
            tls: None,
            max_body: MAX_BODY_BYTES,
        }
    }

    fn access(&self) -> Access {
        Access::Tcp {
            token: self.token.clone(),
            metrics_public: self.metrics_public,
        }
    }
}

/// How the unix socket serves. Access is the socket file's mode; the caller is named by uid.
#[derive(Clone, Debug)]
pub struct UnixOptions {
    pub max_body: usize,
}

impl Default for UnixOptions {
    fn default() -> UnixOptions {
        UnixOptions {
            max_body: MAX_BODY_BYTES,
        }
    }
}

/// The whole API (HTTP routes and the gRPC service) as one router over `handle`, without
/// authentication: for a transport that is access-controlled already, and for tests. Mutating
/// requests are still audited (the caller shows as `local`, or by uid when served with
/// `ConnectInfo<Peer>`).
///
/// Event streams served by this router end only when the client hangs up or the core goes away;
/// [`serve_tcp`] and [`serve_unix`] also end them at shutdown.
pub fn router(handle: AgentHandle) -> axum::Router {
    let handle = Arc::new(handle);
    build(
        handle.clone(),
        Some(handle),
        Stop::never(),
        Access::Local,
        MAX_BODY_BYTES,
    )
}

/// [`router`] over any [`Core`]; tests use it with a stand-in core.
pub fn router_for(core: Arc<dyn Core>) -> axum::Router {
    build(core, None, Stop::never(), Access::Local, MAX_BODY_BYTES)
}

/// The router [`serve_tcp`] serves (authentication included), for tests that drive it without a
/// socket. The caller's [`Peer`] is read from a `ConnectInfo<Peer>` request extension.
pub fn tcp_router_for(core: Arc<dyn Core>, opts: &TcpOptions) -> axum::Router {
    build(core, None, Stop::never(), opts.access(), opts.max_body)
}

/// The router bus requests run through ([`bus::Dispatcher`]): the whole API, with the caller
/// named by the `ConnectInfo<Peer::Bus>` each request carries.
pub(crate) fn bus_router(core: Arc<dyn Core>, max_body: usize) -> axum::Router {
    build(core, None, Stop::never(), Access::Local, max_body)
}

fn build(
    core: Arc<dyn Core>,
    rings: Option<Arc<dyn samples::Rings>>,
    stop: Stop,
    access: Access,
    max_body: usize,
) -> axum::Router {
    let api = Api {
        core: core.clone(),
        rings,
        stop,
        max_body,
    };
    let grpc = tonic::service::Routes::new(grpc::server(api.clone()))
        .into_axum_router()
        // tonic's catch-all answers UNIMPLEMENTED; ours does that for gRPC requests and a JSON
        // 404 for the rest, and axum allows only one.
        .reset_fallback();
    http::routes()
        .route_layer(axum::middleware::from_fn(trace::route))
        // Applies to the HTTP routes' body extractors; the gRPC service has its own limit.
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(api)
        .merge(grpc)
        // Outermost, after every route and the fallback: authentication comes before routing
        // (an unauthenticated client learns nothing, not even which paths exist) and before
        // any body is read.
        .layer(axum::middleware::from_fn_with_state(
            Guard::new(access, core),
            auth::guard,
        ))
        // Outside even the guard: a refused request is traced too, and every answer carries
        // the trace id (when tracing is on).
        .layer(axum::middleware::from_fn(trace::layer))
}

/// Serves HTTP/1.1, HTTP/2 and gRPC (same port) on `listener` until `shutdown` resolves, with
/// the authentication and TLS of `opts`.
///
/// Fails at once, before serving, if the listener is on a non-loopback address with neither a
/// token nor required client certificates (see [`auth::check_exposure`]).
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    handle: AgentHandle,
    opts: TcpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = Arc::new(handle);
    serve_tcp_inner(listener, handle.clone(), Some(handle), opts, shutdown).await
}

/// [`serve_tcp`] over any [`Core`].
pub async fn serve_tcp_with(
    listener: tokio::net::TcpListener,
    core: Arc<dyn Core>,
    opts: TcpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tcp_inner(listener, core, None, opts, shutdown).await
}

async fn serve_tcp_inner(
    listener: tokio::net::TcpListener,
    core: Arc<dyn Core>,
    rings: Option<Arc<dyn samples::Rings>>,
    opts: TcpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let client_certs = opts.tls.as_ref().is_some_and(tls::ServerTls::client_auth);
    auth::check_exposure(listener.local_addr()?, opts.token.is_some(), client_certs)
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::PermissionDenied, m))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = build(
        core,
        rings,
        Stop::new(stop_rx),
        opts.access(),
        opts.max_body,
    )
    .into_make_service_with_connect_info::<Peer>();
    match &opts.tls {
        Some(t) => {
            axum::serve(tls::TlsListener::new(listener, t)?, app)
                .with_graceful_shutdown(stopping(shutdown, stop_tx))
                .await
        }
        None => {
            axum::serve(listen::PlainTcp(listener), app)
                .with_graceful_shutdown(stopping(shutdown, stop_tx))
                .await
        }
    }
}

/// The same on a unix socket (the CLI's default transport). Access is the socket file's mode,
/// which the caller sets; each request's caller is known by uid for the audit log.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    handle: AgentHandle,
    opts: UnixOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = Arc::new(handle);
    serve_unix_inner(listener, handle.clone(), Some(handle), opts, shutdown).await
}

/// [`serve_unix`] over any [`Core`].
pub async fn serve_unix_with(
    listener: tokio::net::UnixListener,
    core: Arc<dyn Core>,
    opts: UnixOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_unix_inner(listener, core, None, opts, shutdown).await
}

async fn serve_unix_inner(
    listener: tokio::net::UnixListener,
    core: Arc<dyn Core>,
    rings: Option<Arc<dyn samples::Rings>>,
    opts: UnixOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = build(
        core,
        rings,
        Stop::new(stop_rx),
        Access::Local,
        opts.max_body,
    )
    .into_make_service_with_connect_info::<Peer>();
    axum::serve(listen::UnixPeers(listener), app)
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
