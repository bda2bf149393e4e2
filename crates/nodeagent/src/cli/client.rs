//! A deliberately small HTTP/1.1 client for the agent's API, over its unix socket or TCP.
//!
//! One connection per request: the CLI makes one or two requests per run, so pooling would add
//! code and no speed. Errors from the server come back as [`ApiError`], which prints as
//! `field: message (code)`.

use crate::cli::GlobalOpts;
use crate::config::{DEFAULT_STATE_DIR, SOCKET_FILE, TOKEN_FILE};
use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use nodeagent_types::{ApiError, ErrorCode};
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Long enough for `?wait=true` on a delete, which waits out the stop grace period (5 s by
/// default) of a process that ignores SIGTERM; short enough that a wedged daemon does not hang
/// a script forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
    /// `host:port` over TLS.
    Tls(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "unix socket {}", p.display()),
            Target::Tcp(a) => write!(f, "http://{a}"),
            Target::Tls(a) => write!(f, "https://{a}"),
        }
    }
}

/// Where the token came from, for the hint on a 401.
const TOKEN_HELP: &str = "the CLI sends the token of <state-dir>/token (or --token-file, or \
     NODEAGENT_TOKEN) over TCP; run it as a user who can read that file, or use the unix socket";

pub struct Client {
    target: Target,
    /// Sent as `Authorization: Bearer` over TCP (DESIGN.md §4, access): `NODEAGENT_TOKEN`, or
    /// the token file when it exists and is readable.
    token: Option<String>,
    /// For https:// targets.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether the user chose the state dir, to tailor the hint on a connection failure.
    state_dir_given: bool,
}

impl Client {
    pub fn new(global: &GlobalOpts) -> anyhow::Result<Client> {
        let state_dir = global
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let target = match &global.addr {
            Some(addr) => parse_addr(addr)?,
            None => Target::Unix(
                global
                    .socket
                    .clone()
                    .unwrap_or_else(|| state_dir.join(SOCKET_FILE)),
            ),
        };
        // Only TCP needs the token: the socket is guarded by its file mode. The token file is
        // unreadable to anyone but its owner; not being able to read it is the same as there
        // being none, and the server will answer 401 (with a hint) if one was needed.
        let token = match target {
            Target::Unix(_) => None,
            _ => std::env::var("NODEAGENT_TOKEN")
                .ok()
                .or_else(|| {
                    let file = global
                        .token_file
                        .clone()
                        .unwrap_or_else(|| state_dir.join(TOKEN_FILE));
                    std::fs::read_to_string(file).ok()
                })
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        };
        let tls = match &target {
            Target::Tls(_) => {
                let identity = match (&global.tls_client_cert, &global.tls_client_key) {
                    (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                    _ => None,
                };
                Some(
                    nodeagent_api::tls::client_config(
                        global.tls_ca.as_deref(),
                        identity,
                        &[b"http/1.1"],
                    )
                    .context("setting up TLS (--tls-ca, --tls-client-cert, --tls-client-key)")?,
                )
            }
            _ => None,
        };
        Ok(Client {
            target,
            token,
            tls,
            state_dir_given: global.state_dir.is_some(),
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, None).await
    }

    /// Sends one request and returns the JSON body of a 2xx answer, or the server's error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let req = self.request(method.clone(), path, body)?;
        let exchange = async {
            match &self.target {
                Target::Unix(p) => {
                    let s = connect(tokio::net::UnixStream::connect(p)).await;
                    send(s.map_err(|e| self.unreachable(e))?, req).await
                }
                Target::Tcp(a) => {
                    let s = connect(tokio::net::TcpStream::connect(a.as_str())).await;
                    send(s.map_err(|e| self.unreachable(e))?, req).await
                }
                Target::Tls(a) => {
                    let config = self
                        .tls
                        .clone()
                        .ok_or_else(|| anyhow!("TLS is not set up"))?;
                    let host = host_of(a);
                    let s = connect(async {
                        let tcp = tokio::net::TcpStream::connect(a.as_str()).await?;
                        nodeagent_api::tls::connect(config, host, tcp).await
                    })
                    .await;
                    send(s.map_err(|e| self.unreachable(e))?, req).await
                }
            }
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                anyhow!(
                    "{method} {path} to {}: no answer within {}s",
                    self.target,
                    REQUEST_TIMEOUT.as_secs()
                )
            })?
            .with_context(|| format!("{method} {path} to {}", self.target))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{method} {path}: the answer is not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
        }
        let err = server_error(status.as_u16(), &bytes);
        if err.code == ErrorCode::Unauthorized {
            let why = if self.token.is_some() {
                "the token sent was not accepted"
            } else {
                "no token was found to send"
            };
            return Err(anyhow!("{err}: {why}; {TOKEN_HELP}"));
        }
        Err(err.into())
    }

    /// Opens a long-lived GET (a Server-Sent Events stream) and returns the body as it
    /// arrives; only connecting and the answer's head are under the timeouts. A non-2xx answer
    /// is read whole and returned as the server's error.
    pub async fn open_stream(&self, path: &str) -> anyhow::Result<hyper::body::Incoming> {
        let mut req = self.request(Method::GET, path, None)?;
        req.headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let res = match &self.target {
            Target::Unix(p) => {
                let s = connect(tokio::net::UnixStream::connect(p)).await;
                send_head(s.map_err(|e| self.unreachable(e))?, req).await
            }
            Target::Tcp(a) => {
                let s = connect(tokio::net::TcpStream::connect(a.as_str())).await;
                send_head(s.map_err(|e| self.unreachable(e))?, req).await
            }
            Target::Tls(a) => {
                let config = self
                    .tls
                    .clone()
                    .ok_or_else(|| anyhow!("TLS is not set up"))?;
                let host = host_of(a);
                let s = connect(async {
                    let tcp = tokio::net::TcpStream::connect(a.as_str()).await?;
                    nodeagent_api::tls::connect(config, host, tcp).await
                })
                .await;
                send_head(s.map_err(|e| self.unreachable(e))?, req).await
            }
        }
        .with_context(|| format!("GET {path} to {}", self.target))?;
        if res.status().is_success() {
            return Ok(res.into_body());
        }
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await?.to_bytes();
        Err(server_error(status, &bytes).into())
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let host = match &self.target {
            Target::Unix(_) => "localhost",
            Target::Tcp(a) | Target::Tls(a) => a.as_str(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host)
            .header(ACCEPT, "application/json");
        if let Some(token) = &self.token {
            let v = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token file holds characters not allowed in a header")?;
            req = req.header(AUTHORIZATION, v);
        }
        let body = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(serde_json::to_vec(v)?))
            }
            None => Full::new(Bytes::new()),
        };
        Ok(req.body(body)?)
    }

    /// The message for a daemon that cannot be reached: which address, why, and what to do.
    fn unreachable(&self, err: std::io::Error) -> anyhow::Error {
        if let (Target::Unix(_), std::io::ErrorKind::PermissionDenied) = (&self.target, err.kind())
        {
            // The daemon may well be running: the socket (or the state dir) shuts this user out.
            return anyhow!(
                "cannot reach nodeagent at {}: {err}; the socket is only open to its owner \
                 (root) and, with the daemon's socket_group setting, to that group's members: \
                 run the command as root (sudo), join the socket group, or use --addr \
                 http://HOST:PORT with the API token",
                self.target
            );
        }
        let hint = match &self.target {
            Target::Unix(_) if self.state_dir_given => {
                "is the daemon running? Start it with `nodeagent run` and the same --state-dir"
            }
            Target::Unix(_) => {
                "is the daemon running? Start it with `nodeagent run`, or give --state-dir \
                 (or --addr http://HOST:PORT for TCP)"
            }
            Target::Tcp(_) => "is the daemon running and listening there? Start it with `nodeagent run --listen ADDR`",
            Target::Tls(_) => "is the daemon running there with TLS, and does its certificate match the address and --tls-ca? A daemon that requires client certificates also needs --tls-client-cert and --tls-client-key",
        };
        anyhow!("cannot reach nodeagent at {}: {err}; {hint}", self.target)
    }
}

async fn connect<S>(
    fut: impl std::future::Future<Output = std::io::Result<S>>,
) -> std::io::Result<S> {
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            ))
        })
}

async fn send<S>(stream: S, req: Request<Full<Bytes>>) -> anyhow::Result<(hyper::StatusCode, Bytes)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection future does the actual I/O; it ends when the response is read.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = sender.send_request(req).await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// [`send`] without reading the body: for streams.
async fn send_head<S>(
    stream: S,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(
        tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| anyhow!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))??,
    )
}

/// Reads `{"error": {"code", "message", "field"}}`; anything else becomes an internal error
/// quoting the status and body, so nothing the server said is lost.
fn server_error(status: u16, body: &[u8]) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Wrapper {
        error: ApiError,
    }
    match serde_json::from_slice::<Wrapper>(body) {
        Ok(w) => w.error,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let code = match status {
                400 => ErrorCode::InvalidArgument,
                401 => ErrorCode::Unauthorized,
                403 => ErrorCode::Forbidden,
                404 => ErrorCode::NotFound,
                409 => ErrorCode::AlreadyExists,
                413 => ErrorCode::PayloadTooLarge,
                503 => ErrorCode::Unavailable,
                _ => ErrorCode::Internal,
            };
            ApiError::new(code, format!("HTTP {status}: {}", text.trim()))
        }
    }
}

/// Accepts `http://HOST:PORT`, `HOST:PORT` and `unix:PATH`.
fn parse_addr(addr: &str) -> anyhow::Result<Target> {
    let a = addr.trim();
    if let Some(path) = a
        .strip_prefix("unix://")
        .or_else(|| a.strip_prefix("unix:"))
    {
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    let (tls, rest) = match a.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, a.strip_prefix("http://").unwrap_or(a)),
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains('/') || !hostport.contains(':') {
        bail!("--addr {addr:?}: expected http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:7464");
    }
    Ok(if tls {
        Target::Tls(hostport.to_string())
    } else {
        Target::Tcp(hostport.to_string())
    })
}

/// The host part of `host:port` (`[::1]:7464` gives `::1`), which the server's certificate
/// must name.
fn host_of(hostport: &str) -> &str {
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

pub use nodeagent_api::paths::segment;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("http://127.0.0.1:7464").ok(),
            Some(Target::Tcp("127.0.0.1:7464".into()))
        );
        assert_eq!(
            parse_addr("127.0.0.1:1/").ok(),
            Some(Target::Tcp("127.0.0.1:1".into()))
        );
        assert_eq!(
            parse_addr("unix:/tmp/s.sock").ok(),
            Some(Target::Unix("/tmp/s.sock".into()))
        );
        assert_eq!(
            parse_addr("https://localhost:7464/").ok(),
            Some(Target::Tls("localhost:7464".into()))
        );
        assert!(parse_addr("http://x").is_err());
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:1"), "::1");
        assert_eq!(host_of("node-1.example:7464"), "node-1.example");
    }

    #[test]
    fn errors_keep_the_field() {
        let e = server_error(
            400,
            br#"{"error":{"code":"invalid_argument","message":"bad unit","field":"resources.memory"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "resources.memory: bad unit (invalid_argument)"
        );
        let e = server_error(502, b"bad gateway");
        assert_eq!(e.to_string(), "HTTP 502: bad gateway (internal)");
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("web-1.a_b"), "web-1.a_b");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
