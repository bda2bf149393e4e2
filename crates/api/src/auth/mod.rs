//! Who may use the API, and the record of what they did.
//!
//! - **Unix socket:** guarded by its file mode (0600, or 0660 to a configured group); the kernel
//!   tells who is calling (`SO_PEERCRED`), and that uid is the audit log's "who".
//! - **TCP:** every request but `/healthz` and `/readyz` (and `/metrics` when metrics are public)
//!   needs `Authorization: Bearer <token>`, compared in constant time. gRPC shares the port and
//!   the check (`authorization` metadata is the same header). A missing or wrong token gets 401
//!   with nothing about the object asked for. With TLS and a client CA, the handshake already
//!   refused clients without a certificate signed by it, and the certificate's subject becomes
//!   the caller's name.
//! - **Audit:** every mutating request (HTTP POST/PUT/PATCH/DELETE, and the gRPC methods that
//!   create, update, delete or start/stop reports) appends an `audit` event to the event log
//!   with who, what and the result ([`audit`]).
//!
//! The token itself never reaches a log, a trace or a `Debug` string.

pub mod audit;
pub mod session;

use crate::core::Core;
use crate::error::HttpError;
use crate::paths;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nodeagent_types::ApiError;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

pub use crate::core::AuditRecord;

/// The bearer token of the TCP listener.
///
/// Cloning is cheap. `Debug` prints `Token(<redacted>)`, so the token cannot leak through a
/// `{:?}` in a log line or an error.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is shorter than {min} characters")]
    TooShort { min: usize },
    #[error("the token is longer than {max} characters")]
    TooLong { max: usize },
    #[error("the token holds a character that is not printable ASCII (no spaces either)")]
    BadCharacter,
}

impl Token {
    /// Shortest token accepted: 16 characters of a random token are already 64+ bits.
    pub const MIN_LEN: usize = 16;
    pub const MAX_LEN: usize = 4096;

    /// A token from its text (a token file's contents, without surrounding whitespace). It
    /// must be printable ASCII without spaces, so that it fits an HTTP header unchanged.
    pub fn new(text: &str) -> Result<Token, TokenError> {
        let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
        if t.len() < Self::MIN_LEN {
            return Err(TokenError::TooShort { min: Self::MIN_LEN });
        }
        if t.len() > Self::MAX_LEN {
            return Err(TokenError::TooLong { max: Self::MAX_LEN });
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadCharacter);
        }
        Ok(Token(t.into()))
    }

    /// A fresh token: 32 bytes from the kernel's random source (`getrandom(2)`), as 64 hex
    /// digits.
    pub fn generate() -> std::io::Result<Token> {
        Ok(Token(random_hex::<32>()?.into()))
    }

    /// The token's text, for writing the token file. Nothing else should need it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token. The comparison takes the same time wherever the
    /// first difference is (`subtle`); only a difference in length returns early, and the
    /// length of a generated token is public anyway.
    pub fn verify(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented))
    }
}

/// `N` bytes from the kernel's random source (`getrandom(2)`), as `2N` hex digits: tokens, and
/// the bus's command ids.
pub fn random_hex<const N: usize>() -> std::io::Result<String> {
    let mut b = [0u8; N];
    let mut filled = 0;
    while filled < b.len() {
        let rest = &mut b[filled..];
        // SAFETY: the pointer and length describe `rest`, which is valid for writes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    let mut s = String::with_capacity(2 * N);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    Ok(s)
}

/// The token of an `Authorization: Bearer <token>` header. `None` for no header, several
/// headers, another scheme, or an empty token. The scheme is case-insensitive (RFC 7235).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let v = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let b = v.as_bytes();
    let (scheme, rest) = b.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let t = rest.trim_ascii();
    (!t.is_empty()).then_some(t)
}

/// Who is at the other end of a connection, as the listener saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A unix socket client, by `SO_PEERCRED` (`None` where the kernel would not say).
    Unix {
        uid: Option<u32>,
        gid: Option<u32>,
        pid: Option<i32>,
    },
    /// Plain TCP.
    Tcp { addr: SocketAddr },
    /// TLS; `subject` is the verified client certificate's subject, where one was presented.
    Tls {
        addr: SocketAddr,
        subject: Option<String>,
    },
    /// A bus request (`crate::bus`): who the sender says it is, and the subject it came on.
    /// The NATS server's authorization decides who may publish there.
    Bus {
        identity: Option<String>,
        subject: String,
    },
}

/// How requests on one router are let in.
#[derive(Clone, Debug)]
pub(crate) enum Access {
    /// A transport that is access-controlled already: the unix socket (file mode), or a router
    /// served by someone else's loop.
    Local,
    /// TCP: the token (when set) on every route but the open ones.
    Tcp {
        token: Option<Token>,
        metrics_public: bool,
    },
}

/// How a request was let in, for the audit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// The unix socket, or a local router.
    Socket,
    /// `/healthz`, `/readyz`, public `/metrics`: no credentials needed, nothing to audit.
    Open,
    Token,
    Cert,
    TokenAndCert,
    /// A web console session cookie (see [`session`]).
    Session,
    /// The bus: authorized by the NATS server's permissions.
    Bus,
    /// TCP without a token or client certificate (loopback only; see [`check_exposure`]).
    None,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Socket => "socket",
            Method::Open => "open",
            Method::Token => "token",
            Method::Cert => "cert",
            Method::TokenAndCert => "token+cert",
            Method::Session => "session",
            Method::Bus => "bus",
            Method::None => "none",
        }
    }
}

/// The middleware's state: how this router lets requests in, and where audit records go.
#[derive(Clone)]
pub(crate) struct Guard {
    access: Arc<Access>,
    core: Arc<dyn Core>,
    limiter: Arc<audit::Limiter>,
}

impl Guard {
    pub(crate) fn new(access: Access, core: Arc<dyn Core>) -> Guard {
        Guard {
            access: Arc::new(access),
            core,
            limiter: Arc::new(audit::Limiter::default()),
        }
    }
}

/// Whether the request is gRPC (which shares the port and must get gRPC statuses).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn open_path(path: &str, metrics_public: bool) -> bool {
    path == paths::HEALTHZ || path == paths::READYZ || (metrics_public && path == paths::PROMETHEUS)
}

/// Authenticates one request. `Err(())` is a 401.
fn authenticate(access: &Access, peer: Option<&Peer>, req: &Request) -> Result<Method, ()> {
    let (token, metrics_public) = match access {
        Access::Local if matches!(peer, Some(Peer::Bus { .. })) => return Ok(Method::Bus),
        Access::Local => return Ok(Method::Socket),
        Access::Tcp {
            token,
            metrics_public,
        } => (token, *metrics_public),
    };
    if open_path(req.uri().path(), metrics_public)
        || crate::http::ui::open_path(req.method(), req.uri().path())
    {
        return Ok(Method::Open);
    }
    let cert = matches!(
        peer,
        Some(Peer::Tls {
            subject: Some(_),
            ..
        })
    );
    match token {
        Some(t) => {
            if bearer(req.headers()).is_some_and(|p| t.verify(p)) {
                Ok(if cert {
                    Method::TokenAndCert
                } else {
                    Method::Token
                })
            } else if session_ok(req) {
                Ok(Method::Session)
            } else {
                Err(())
            }
        }
        None if cert => Ok(Method::Cert),
        None => Ok(Method::None),
    }
}

/// A live console session cookie, and for a request that is not a read, the console's header
/// (see [`session`] on cross-site requests).
fn session_ok(req: &Request) -> bool {
    use axum::http::Method as M;
    let safe = matches!(*req.method(), M::GET | M::HEAD);
    (safe || req.headers().contains_key(session::CSRF_HEADER))
        && session::cookie(req.headers()).is_some_and(session::touch)
}

const UNAUTHORIZED: &str = "missing or invalid bearer token";

/// The 401: the contract's error shape and `WWW-Authenticate: Bearer` for HTTP, status
/// UNAUTHENTICATED for gRPC.
fn unauthorized(grpc: bool) -> Response {
    let mut r = if grpc {
        tonic::Status::unauthenticated(UNAUTHORIZED).into_http::<axum::body::Body>()
    } else {
        HttpError::from(ApiError::unauthorized()).into_response()
    };
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The middleware on every router: authenticate, then (for mutating requests) audit.
pub(crate) async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let grpc = is_grpc(req.headers());
    let mutating = audit::is_mutating(req.method(), req.uri().path(), grpc);
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(p)| p);
    let method = match authenticate(&g.access, peer, &req) {
        Ok(m) => m,
        Err(()) => {
            tracing::debug!(path = %crate::request::truncate(req.uri().path()), peer = ?peer, "401: missing or invalid bearer token");
            if mutating {
                if let Some(suppressed) = g.limiter.allow() {
                    let pending = audit::Pending::new(
                        g.core.clone(),
                        peer,
                        None,
                        &req,
                        grpc,
                        audit::AuditNote::default(),
                    );
                    pending.finish_unauthorized(suppressed);
                }
            }
            return unauthorized(grpc);
        }
    };
    if !mutating || method == Method::Open {
        return next.run(req).await;
    }
    let note = audit::AuditNote::new();
    let pending = audit::Pending::new(g.core.clone(), peer, Some(method), &req, grpc, note.clone());
    req.extensions_mut().insert(note);
    let resp = next.run(req).await;
    pending.attach(resp)
}

/// Refuses a TCP listener that anyone on the network could use: a non-loopback address with
/// neither a token nor required client certificates.
pub fn check_exposure(addr: SocketAddr, token: bool, client_certs: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || token || client_certs {
        return Ok(());
    }
    Err(format!(
        "refusing to serve the API on {addr} without authentication: anyone who can reach that address could run commands as root on this node. Keep the token (auth = \"token\", the default), or require client certificates (tls_cert, tls_key and tls_client_ca), or listen on a loopback address such as 127.0.0.1"
    ))
}

/// Checks that a secret file (the token, a TLS key) is private to its owner: not readable or
/// writable by group or others, and owned by the agent's user (a file someone else owns could
/// be read or replaced by them). The message says how to fix it.
pub fn check_private_file(path: &Path, what: &str) -> Result<(), String> {
    let md = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    check_private_metadata(&md, path, what)
}

/// [`check_private_file`] on metadata already read (from an open file, so that the file
/// checked is the file read).
pub fn check_private_metadata(
    md: &std::fs::Metadata,
    path: &Path,
    what: &str,
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let mode = md.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{what} {} is accessible to group or others (mode {mode:04o}); anyone who can read it can control this node. Run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me {
        return Err(format!(
            "{what} {} is owned by uid {}, not by the agent's user (uid {me}); its owner could read or replace it. Run `chown {me} {}`",
            path.display(),
            md.uid(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(&headers(&["Bearer abc"])), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers(&["bearer  abc "])), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers(&["BEARER abc"])), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers(&["Basic abc"])), None);
        assert_eq!(bearer(&headers(&["Bearerabc"])), None);
        assert_eq!(bearer(&headers(&["Bearer "])), None);
        assert_eq!(bearer(&headers(&["Bear"])), None);
        assert_eq!(bearer(&headers(&[])), None);
        assert_eq!(bearer(&headers(&["Bearer a", "Bearer a"])), None);
    }

    #[test]
    fn tokens() {
        let t = Token::generate().expect("random");
        assert_eq!(t.secret().len(), 64);
        assert!(t.secret().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(t.secret(), Token::generate().expect("random").secret());
        assert!(t.verify(t.secret().as_bytes()));
        assert!(!t.verify(&t.secret().as_bytes()[..63]));
        assert!(!t.verify(b""));
        let mut wrong = t.secret().as_bytes().to_vec();
        wrong[63] ^= 1;
        assert!(!t.verify(&wrong));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(!format!("{t:?}").contains(t.secret()));
        assert_eq!(
            Token::new(" 0123456789abcdef\n").expect("valid").secret(),
            "0123456789abcdef"
        );
        assert_eq!(
            Token::new("short").expect_err("short"),
            TokenError::TooShort { min: 16 }
        );
        assert_eq!(
            Token::new("0123456789 abcdef").expect_err("space"),
            TokenError::BadCharacter
        );
        assert_eq!(
            Token::new("0123456789abcdef\u{e9}").expect_err("non-ascii"),
            TokenError::BadCharacter
        );
    }

    #[test]
    fn exposure() {
        let lo: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let lo6: SocketAddr = "[::1]:1".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:1".parse().expect("addr");
        assert!(check_exposure(lo, false, false).is_ok());
        assert!(check_exposure(lo6, false, false).is_ok());
        assert!(check_exposure(any, true, false).is_ok());
        assert!(check_exposure(any, false, true).is_ok());
        let e = check_exposure(any, false, false).expect_err("exposed");
        assert!(e.contains("auth") && e.contains("tls_client_ca"), "{e}");
    }

    #[test]
    fn private_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("token");
        std::fs::write(&f, "x").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(check_private_file(&f, "token file").is_ok());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = check_private_file(&f, "token file").expect_err("group-readable");
        assert!(e.contains("chmod 600") && e.contains("0640"), "{e}");
    }
}
