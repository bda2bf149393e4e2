//! Authentication, TLS and the audit log of the front ends, against the stand-in core (see
//! `common`) on real sockets: the bearer token on TCP (HTTP and gRPC on one port), the open
//! routes, 401 without detail, the body cap, the unix socket's peer uid, TLS with and without
//! client certificates, and the exposure check.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{FakeCore, ID};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use nodeagent_api::proto::agent_client::AgentClient;
use nodeagent_api::{tls, TcpOptions, Token, UnixOptions};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

const SPEC: &str =
    r#"{"name":"web-1","kind":"process","process":{"command":["/bin/sleep","300"]}}"#;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(core: Arc<FakeCore>, opts: TcpOptions) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(nodeagent_api::serve_tcp_with(
            listener,
            core,
            opts,
            async move {
                let _ = rx.await;
            },
        ));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server stops")
            .expect("join")
            .expect("serve");
    }
}

struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request on a fresh connection over `io`.
async fn exchange<S>(io: S, req: Request<Full<Bytes>>) -> Reply
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn request(method: Method, path: &str, auth: Option<&str>, body: &str) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn http(
    addr: SocketAddr,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> Reply {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(tcp, request(method, path, auth, body)).await
}

fn token() -> Token {
    Token::new("test-token-0123456789abcdef").unwrap()
}

const BEARER: &str = "Bearer test-token-0123456789abcdef";

fn assert_unauthorized(r: &Reply) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers.get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    assert_eq!(
        r.json(),
        json!({"error": {"code": "unauthorized", "message": "missing or invalid bearer token"}})
    );
}

#[tokio::test]
async fn tcp_needs_the_token_except_on_open_routes() {
    let core = FakeCore::new();
    let s = Server::start(core.clone(), TcpOptions::with_token(token())).await;
    let a = s.addr;

    assert_unauthorized(&http(a, Method::GET, "/v1/objects", None, "").await);
    assert_unauthorized(&http(a, Method::GET, "/v1/objects", Some("Bearer wrong"), "").await);
    assert_unauthorized(
        &http(
            a,
            Method::GET,
            "/v1/objects",
            Some("Basic dGVzdDp0ZXN0"),
            "",
        )
        .await,
    );
    // The token without the scheme is not a bearer token.
    assert_unauthorized(
        &http(
            a,
            Method::GET,
            "/v1/objects",
            Some("test-token-0123456789abcdef"),
            "",
        )
        .await,
    );
    // Nothing about the object asked for, and not even whether a route exists.
    let r = http(a, Method::GET, "/v1/objects/secret-name", None, "").await;
    assert_unauthorized(&r);
    assert!(!String::from_utf8_lossy(&r.body).contains("secret-name"));
    assert_unauthorized(&http(a, Method::GET, "/no/such/route", None, "").await);
    assert_unauthorized(&http(a, Method::GET, "/openapi.json", None, "").await);
    assert_unauthorized(&http(a, Method::GET, "/metrics", None, "").await);
    assert!(core.calls().is_empty(), "{:?}", core.calls());

    assert_eq!(
        http(a, Method::GET, "/healthz", None, "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        http(a, Method::GET, "/readyz", None, "").await.status,
        StatusCode::OK
    );
    let r = http(a, Method::GET, "/v1/objects", Some(BEARER), "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["objects"][0]["id"], ID);
    let r = http(
        a,
        Method::GET,
        "/v1/objects",
        Some("bearer   test-token-0123456789abcdef"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "the scheme is case-insensitive");
    assert_eq!(
        http(a, Method::GET, "/metrics", Some(BEARER), "")
            .await
            .status,
        StatusCode::OK
    );
    s.stop().await;

    // metrics_public opens /metrics, and only that.
    let mut opts = TcpOptions::with_token(token());
    opts.metrics_public = true;
    let s = Server::start(core.clone(), opts).await;
    let r = http(s.addr, Method::GET, "/metrics", None, "").await;
    assert_eq!(r.status, StatusCode::OK);
    // The core's text first, then the object families (issue 21).
    assert!(r.body.starts_with(b"nodeagent_up 1\n"), "{:?}", r.body);
    assert_unauthorized(&http(s.addr, Method::GET, "/v1/host", None, "").await);
    s.stop().await;
}

#[tokio::test]
async fn grpc_shares_the_token_check() {
    let core = FakeCore::new();
    let s = Server::start(core.clone(), TcpOptions::with_token(token())).await;
    let mut c = AgentClient::connect(format!("http://{}", s.addr))
        .await
        .unwrap();
    let e = c
        .list(nodeagent_api::proto::ListRequest {})
        .await
        .expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert_eq!(e.message(), "missing or invalid bearer token");

    let mut req = tonic::Request::new(nodeagent_api::proto::ListRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    let e = c.list(req).await.expect_err("wrong token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    let mut req = tonic::Request::new(nodeagent_api::proto::ListRequest {});
    req.metadata_mut()
        .insert("authorization", BEARER.parse().unwrap());
    let list = c.list(req).await.unwrap().into_inner();
    assert_eq!(list.objects.len(), 1);
    s.stop().await;
}

fn audit_of(core: &FakeCore, n: usize) -> Value {
    let a = core.audits();
    assert!(a.len() > n, "only {} audit records: {a:?}", a.len());
    a[n].data.clone()
}

#[tokio::test]
async fn mutating_requests_are_audited_with_who_and_result() {
    let core = FakeCore::new();
    let s = Server::start(core.clone(), TcpOptions::with_token(token())).await;
    let a = s.addr;

    // Reads are not audited.
    http(a, Method::GET, "/v1/objects", Some(BEARER), "").await;
    assert!(core.audits().is_empty());

    let r = http(a, Method::POST, "/v1/objects", Some(BEARER), SPEC).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let d = audit_of(&core, 0);
    assert_eq!(d["who"], "token");
    assert_eq!(d["auth"], "token");
    assert_eq!(d["transport"], "tcp");
    assert_eq!(d["method"], "POST");
    assert_eq!(d["path"], "/v1/objects");
    assert_eq!(d["status"], 202);
    assert_eq!(d["result"], "ok");
    assert_eq!(d["key"], "web-1");
    assert_eq!(d["id"], ID);
    assert!(d["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    let rec = &core.audits()[0];
    assert_eq!(rec.object, Some((ID.to_string(), "web-1".to_string())));
    assert!(
        rec.message.contains("token POST /v1/objects"),
        "{}",
        rec.message
    );
    // The token is never part of the record.
    assert!(!serde_json::to_string(&rec.data)
        .unwrap()
        .contains("test-token"));

    let r = http(a, Method::DELETE, "/v1/objects/nope", Some(BEARER), "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let d = audit_of(&core, 1);
    assert_eq!(d["status"], 404);
    assert_eq!(d["result"], "error");
    assert_eq!(d["key"], "nope");

    // A refused request is recorded too, as unauthenticated, without reaching the core.
    let calls = core.calls().len();
    let r = http(a, Method::POST, "/v1/objects", None, SPEC).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(core.calls().len(), calls);
    let d = audit_of(&core, 2);
    assert_eq!(d["who"], "unauthenticated");
    assert_eq!(d["auth"], "failed");
    assert_eq!(d["status"], 401);

    // gRPC: the status arrives in the trailers, after the message.
    let mut c = AgentClient::connect(format!("http://{a}")).await.unwrap();
    let spec = nodeagent_api::grpc::convert::spec_proto(&common::spec()).expect("to proto");
    let mut req = tonic::Request::new(nodeagent_api::proto::CreateRequest {
        spec: Some(spec.clone()),
        wait: false,
    });
    req.metadata_mut()
        .insert("authorization", BEARER.parse().unwrap());
    c.create(req).await.unwrap();
    let d = audit_of(&core, 3);
    assert_eq!(d["method"], "gRPC");
    assert_eq!(d["path"], "/nodeagent.v1.Agent/Create");
    assert_eq!(d["grpc_status"], 0);
    assert_eq!(d["result"], "ok");
    assert_eq!(d["id"], ID);

    let mut bad = spec;
    bad.name = "../../x".into();
    let mut req = tonic::Request::new(nodeagent_api::proto::CreateRequest {
        spec: Some(bad),
        wait: false,
    });
    req.metadata_mut()
        .insert("authorization", BEARER.parse().unwrap());
    let e = c.create(req).await.expect_err("bad name");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let d = audit_of(&core, 4);
    assert_eq!(d["grpc_status"], 3);
    assert_eq!(d["result"], "error");
    assert_eq!(d["key"], "../../x");

    // Reading RPCs are not audited.
    let mut req = tonic::Request::new(nodeagent_api::proto::ListRequest {});
    req.metadata_mut()
        .insert("authorization", BEARER.parse().unwrap());
    c.list(req).await.unwrap();
    assert_eq!(core.audits().len(), 5);
    s.stop().await;
}

#[tokio::test]
async fn unauthenticated_audit_records_are_rate_limited() {
    let core = FakeCore::new();
    let s = Server::start(core.clone(), TcpOptions::with_token(token())).await;
    for _ in 0..30 {
        let r = http(s.addr, Method::DELETE, "/v1/objects/x", None, "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let n = core.audits().len();
    assert!((1..=10).contains(&n), "{n} records for 30 refused requests");
    s.stop().await;
}

#[tokio::test]
async fn the_body_cap_is_413_after_authentication() {
    let core = FakeCore::new();
    let mut opts = TcpOptions::with_token(token());
    opts.max_body = 4096;
    let s = Server::start(core.clone(), opts).await;
    let big = format!(
        r#"{{"name":"web-1","kind":"process","labels":{{"x":"{}"}},"process":{{"command":["/bin/true"]}}}}"#,
        "a".repeat(8000)
    );
    let r = http(s.addr, Method::POST, "/v1/objects", Some(BEARER), &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4096"),
        "{}",
        r.json()
    );
    // Without the token the body is never read: 401, not 413.
    assert_unauthorized(&http(s.addr, Method::POST, "/v1/objects", None, &big).await);
    assert!(!core.calls().contains(&"create"));
    s.stop().await;
}

#[tokio::test]
async fn exposed_listeners_need_authentication() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let e = nodeagent_api::serve_tcp_with(
        listener,
        FakeCore::new(),
        TcpOptions::without_token(),
        std::future::pending(),
    )
    .await
    .expect_err("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("without authentication"), "{e}");
}

#[tokio::test]
async fn the_socket_names_the_caller_by_uid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodeagent.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let core = FakeCore::new();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(nodeagent_api::serve_unix_with(
        listener,
        core.clone(),
        UnixOptions::default(),
        async move {
            let _ = rx.await;
        },
    ));
    // No token needed: the socket's file mode is the access control.
    let io = tokio::net::UnixStream::connect(&path).await.unwrap();
    let r = exchange(io, request(Method::POST, "/v1/objects", None, SPEC)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let d = audit_of(&core, 0);
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert_eq!(d["who"], format!("uid:{uid}"));
    assert_eq!(d["uid"], uid);
    assert_eq!(d["pid"], std::process::id());
    assert_eq!(d["transport"], "unix");
    assert_eq!(d["auth"], "socket");
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate for
/// CN=alice, O=acme, as PEM files in `dir` (keys mode 0600).
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A client certificate from a CA the server does not trust.
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("nodeagent test CA");
    let (rogue_ca, rogue_ca_key) = ca("rogue CA");
    let leaf = |sans: Vec<String>, cn: &str, eku, issuer: &rcgen::Certificate, ikey| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, "acme");
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, issuer, ikey).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "node-1",
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca_cert,
        &ca_key,
    );
    let (client_cert, client_key) = leaf(
        vec![],
        "alice",
        ExtendedKeyUsagePurpose::ClientAuth,
        &ca_cert,
        &ca_key,
    );
    let (rogue_cert, rogue_key) = leaf(
        vec![],
        "mallory",
        ExtendedKeyUsagePurpose::ClientAuth,
        &rogue_ca,
        &rogue_ca_key,
    );
    let p = Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        rogue_cert: dir.join("rogue.pem"),
        rogue_key: dir.join("rogue.key"),
    };
    std::fs::write(&p.ca, ca_cert.pem()).unwrap();
    std::fs::write(&p.server_cert, server_cert).unwrap();
    write_private(&p.server_key, &server_key);
    std::fs::write(&p.client_cert, client_cert).unwrap();
    write_private(&p.client_key, &client_key);
    std::fs::write(&p.rogue_cert, rogue_cert).unwrap();
    write_private(&p.rogue_key, &rogue_key);
    p
}

async fn https(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> std::io::Result<Reply> {
    let config = tls::client_config(Some(ca), identity, &[b"http/1.1"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let io = tls::connect(config, "127.0.0.1", tcp).await?;
    let req = request(method, path, auth, body);
    // With TLS 1.3 a refused client certificate shows after the handshake, on the first read.
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes()
        .to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

#[tokio::test]
async fn mutual_tls_requires_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let server_tls = tls::ServerTls::load(&tls::ServerFiles {
        cert: p.server_cert.clone(),
        key: p.server_key.clone(),
        client_ca: Some(p.ca.clone()),
    })
    .unwrap();
    assert!(server_tls.client_auth());
    // Client certificates alone are enough authentication, even on an exposed address.
    let mut opts = TcpOptions::without_token();
    opts.tls = Some(server_tls);
    let core = FakeCore::new();
    let s = Server::start(core.clone(), opts).await;
    let id = Some((p.client_cert.as_path(), p.client_key.as_path()));

    let r = https(s.addr, &p.ca, id, Method::GET, "/v1/objects", None, "")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let r = https(s.addr, &p.ca, id, Method::POST, "/v1/objects", None, SPEC)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let d = audit_of(&core, 0);
    assert_eq!(d["who"], "cert:CN=alice, O=acme");
    assert_eq!(d["auth"], "cert");
    assert_eq!(d["transport"], "tls");

    // No certificate, or one from another CA: no request gets through.
    let calls = core.calls().len();
    assert!(
        https(s.addr, &p.ca, None, Method::GET, "/v1/objects", None, "")
            .await
            .is_err(),
        "a client without a certificate was served"
    );
    let rogue = Some((p.rogue_cert.as_path(), p.rogue_key.as_path()));
    assert!(
        https(s.addr, &p.ca, rogue, Method::GET, "/v1/objects", None, "")
            .await
            .is_err(),
        "a certificate from an unknown CA was accepted"
    );
    // Plain HTTP on the TLS port gets nowhere either.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        raw.write_all(b"GET /v1/objects HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut out)).await;
        assert!(!out.starts_with(b"HTTP/1.1 200"), "{out:?}");
    }
    assert_eq!(core.calls().len(), calls);
    s.stop().await;
}

#[tokio::test]
async fn tls_serves_http2_and_the_token_still_applies() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let mut opts = TcpOptions::with_token(token());
    opts.tls = Some(
        tls::ServerTls::load(&tls::ServerFiles {
            cert: p.server_cert.clone(),
            key: p.server_key.clone(),
            client_ca: None,
        })
        .unwrap(),
    );
    let s = Server::start(FakeCore::new(), opts).await;
    let r = https(s.addr, &p.ca, None, Method::GET, "/v1/objects", None, "")
        .await
        .unwrap();
    assert_unauthorized(&r);
    let r = https(
        s.addr,
        &p.ca,
        None,
        Method::GET,
        "/v1/objects",
        Some(BEARER),
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::OK);

    // HTTP/2 by ALPN on the same listener (what gRPC over TLS uses).
    let config = tls::client_config(Some(&p.ca), None, &[b"h2"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let io = tls::connect(config, "localhost", tcp).await.unwrap();
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::builder()
                .uri(format!("https://localhost:{}/v1/objects", s.addr.port()))
                .header("authorization", BEARER)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    s.stop().await;
}

#[test]
fn tls_keys_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    std::fs::set_permissions(&p.server_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = tls::ServerTls::load(&tls::ServerFiles {
        cert: p.server_cert,
        key: p.server_key,
        client_ca: None,
    })
    .expect_err("world-readable key");
    assert!(e.to_string().contains("chmod 600"), "{e}");
}

#[test]
fn openapi_documents_the_access_rules() {
    let doc: Value = serde_json::from_str(nodeagent_api::http::OPENAPI_JSON).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["bearerAuth"], json!([]));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op.get("responses") else {
                continue;
            };
            if path == "/healthz" || path == "/readyz" {
                assert_eq!(op["security"], json!([]), "{path} is open");
            } else {
                assert!(
                    responses.get("401").is_some(),
                    "{method} {path} does not document 401"
                );
            }
        }
    }
    assert!(doc["paths"]["/v1/objects"]["post"]["responses"]["403"].is_object());
    assert!(doc["paths"]["/v1/objects"]["post"]["responses"]["413"].is_object());
    let codes =
        &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"];
    for c in ["unauthorized", "forbidden", "payload_too_large"] {
        assert!(codes.as_array().unwrap().contains(&json!(c)), "{c}");
    }
}
