//! gRPC and HTTP on one TCP port, against a stand-in core (see `common`): the generated tonic
//! client reaches the service on the port that also answers HTTP/1.1, gets the same validation
//! as the JSON API, and long-lived streams end at shutdown.

mod common;

use common::{FakeCore, ID};
use nodeagent_api::proto::agent_client::AgentClient;
use nodeagent_api::proto::{self, CreateRequest, ObjectSpec};
use nodeagent_types::EventKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(core: Arc<FakeCore>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        // Loopback without a token: these tests are about the gRPC plumbing; the token and TLS
        // have tests of their own (tests/auth.rs).
        let task = tokio::spawn(nodeagent_api::serve_tcp_with(
            listener,
            core,
            nodeagent_api::TcpOptions::without_token(),
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

    async fn client(&self) -> AgentClient<tonic::transport::Channel> {
        AgentClient::connect(format!("http://{}", self.addr))
            .await
            .expect("gRPC connect")
    }

    /// Signals shutdown and waits for the server to return.
    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server stops within 5 s")
            .expect("join")
            .expect("serve");
    }
}

fn spec(memory: &str) -> ObjectSpec {
    ObjectSpec {
        name: "web-1".into(),
        kind: "process".into(),
        process: Some(proto::ProcessSpec {
            command: vec!["/bin/sleep".into(), "300".into()],
            ..Default::default()
        }),
        resources: Some(proto::Resources {
            memory: Some(memory.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A plain HTTP/1.1 request over a fresh connection; returns the raw response.
async fn http1(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn grpc_and_http_share_the_port() {
    let core = FakeCore::new();
    let server = Server::start(core.clone()).await;

    let r = http1(
        server.addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with("ok"), "{r}");

    let mut client = server.client().await;
    let created = client
        .create(CreateRequest {
            spec: Some(spec("64Mi")),
            wait: true,
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.id, ID);
    assert_eq!(created.status, "created");
    let object = created.object.expect("object");
    assert_eq!(object.status, "running");
    let resources = object.spec.and_then(|s| s.resources).expect("resources");
    assert_eq!(resources.memory.as_deref(), Some("67108864"));

    server.shutdown().await;
}

#[tokio::test]
async fn grpc_invalid_spec_is_invalid_argument_naming_the_field() {
    let core = FakeCore::new();
    let server = Server::start(core.clone()).await;
    let mut client = server.client().await;

    let status = client
        .create(CreateRequest {
            spec: Some(spec("64Xi")),
            wait: false,
        })
        .await
        .expect_err("invalid memory");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("resources.memory: "),
        "{}",
        status.message()
    );
    assert_eq!(
        status
            .metadata()
            .get("x-field")
            .and_then(|v| v.to_str().ok()),
        Some("resources.memory")
    );

    let status = client
        .create(CreateRequest {
            spec: None,
            wait: false,
        })
        .await
        .expect_err("no spec");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        core.calls().is_empty(),
        "an invalid request reached the core"
    );

    server.shutdown().await;
}

#[tokio::test]
async fn grpc_core_errors_map_to_codes() {
    let core = FakeCore::new();
    let server = Server::start(core.clone()).await;
    let mut client = server.client().await;

    let status = client
        .get(proto::GetRequest { key: "nope".into() })
        .await
        .expect_err("unknown object");
    assert_eq!(status.code(), Code::NotFound);

    let status = client
        .host(proto::HostRequest {})
        .await
        .expect_err("fake has no host");
    assert_eq!(status.code(), Code::Unavailable);

    let status = client
        .get(proto::GetRequest { key: String::new() })
        .await
        .expect_err("empty key");
    assert_eq!(status.code(), Code::InvalidArgument);

    let ack = client
        .push_on(proto::PushOnRequest {
            key: ID.into(),
            sink: "stdout".into(),
            interval: Some("1s".into()),
            mode: None,
        })
        .await
        .expect("push-on")
        .into_inner();
    assert_eq!(
        (ack.status.as_str(), ack.interval.as_deref()),
        ("on", Some("1s"))
    );
    // A mode is checked like the HTTP body's: an unknown one names `mode`.
    let status = client
        .push_on(proto::PushOnRequest {
            key: ID.into(),
            sink: "stdout".into(),
            interval: None,
            mode: Some("often".into()),
        })
        .await
        .expect_err("bad mode");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("mode"), "{}", status.message());

    let samples = client
        .metrics(proto::MetricsRequest {
            key: ID.into(),
            limit: Some(1),
        })
        .await
        .expect("metrics")
        .into_inner()
        .samples;
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].seq, 5);

    server.shutdown().await;
}

async fn next(s: &mut tonic::Streaming<proto::Event>) -> Option<proto::Event> {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("an event in time")
        .expect("stream ok")
}

#[tokio::test]
async fn grpc_watch_streams_backlog_then_live_and_ends_at_shutdown() {
    let core = FakeCore::new();
    core.emit(1, EventKind::Created);
    core.emit(2, EventKind::Started);
    let server = Server::start(core.clone()).await;
    let mut client = server.client().await;

    let mut stream = client
        .watch(proto::WatchRequest { since: Some(1) })
        .await
        .expect("watch")
        .into_inner();
    let e = next(&mut stream).await.expect("backlog event");
    assert_eq!((e.seq, e.kind.as_str()), (2, "started"));
    assert_eq!(e.data_json, r#"{"n":2}"#);
    core.emit(3, EventKind::Paused);
    let e = next(&mut stream).await.expect("live event");
    assert_eq!((e.seq, e.kind.as_str()), (3, "paused"));

    // Shutdown must not wait for this watcher to hang up.
    server.shutdown().await;
    assert!(next(&mut stream).await.is_none(), "stream ends at shutdown");
}

#[tokio::test]
async fn open_sse_stream_does_not_block_shutdown() {
    let core = FakeCore::new();
    let server = Server::start(core.clone()).await;
    let mut s = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("headers in time")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_grpc_method_is_unimplemented() {
    let core = FakeCore::new();
    let server = Server::start(core.clone()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = axum::http::uri::PathAndQuery::from_static("/nodeagent.v1.Nothing/Call");
    let status = grpc
        .unary::<proto::ListRequest, proto::ListResponse, _>(
            tonic::Request::new(proto::ListRequest {}),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such service");
    assert_eq!(status.code(), Code::Unimplemented);
    server.shutdown().await;
}

/// The CLI's default transport: HTTP/1.1 and gRPC on one unix socket.
#[tokio::test]
async fn unix_socket_serves_http_and_grpc() {
    use hyper_util::rt::TokioIo;
    use tokio::net::UnixStream;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nodeagent.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let (tx, rx) = oneshot::channel::<()>();
    let core = FakeCore::new();
    let task = tokio::spawn(nodeagent_api::serve_unix_with(
        listener,
        core.clone(),
        nodeagent_api::UnixOptions::default(),
        async move {
            let _ = rx.await;
        },
    ));

    let mut s = UnixStream::connect(&path).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // The URI is a placeholder: the connector below decides where the connection goes.
    let sock = path.clone();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let sock = sock.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(sock).await?)) }
        }))
        .await
        .expect("gRPC over the socket");
    let mut client = AgentClient::new(channel);
    let status = client
        .create(CreateRequest {
            spec: Some(spec("1Xi")),
            wait: false,
        })
        .await
        .expect_err("invalid memory");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("resources.memory: "));
    let list = client
        .list(proto::ListRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.objects.len(), 1);

    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("server stops within 5 s")
        .expect("join")
        .expect("serve");
}
