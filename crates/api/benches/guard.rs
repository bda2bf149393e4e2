//! What the access layer costs per request, in process (no sockets), against the stand-in core
//! of the API tests:
//! - `get/local`: a read on the socket's router (no token to check, no audit);
//! - `get/token`: the same read on the TCP router with the bearer token checked;
//! - `get/no-auth`: the TCP router with the check off (loopback only), the baseline for the token;
//! - `get/401`: a read refused for a wrong token;
//! - `post/token`: a create on the TCP router: token, audit record, and the create itself.
//!
//! The difference between `get/token` and `get/no-auth` is the token check; between `post` and
//! a read, mostly the body parse and the audit record.

#[allow(clippy::unwrap_used)]
#[path = "../tests/common/mod.rs"]
mod common;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use common::FakeCore;
use criterion::{criterion_group, criterion_main, Criterion};
use nodeagent_api::{Peer, TcpOptions, Token};
use std::hint::black_box;
use tower::ServiceExt;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SPEC: &str =
    r#"{"name":"web-1","kind":"process","process":{"command":["/bin/sleep","300"]}}"#;

fn request(method: Method, path: &str, auth: Option<&str>, body: &'static str) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let mut r = b.body(Body::from(body)).expect("request");
    r.extensions_mut().insert(ConnectInfo(Peer::Tcp {
        addr: "127.0.0.1:40000".parse().expect("addr"),
    }));
    r
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let core = FakeCore::new();
    let local = nodeagent_api::router_for(core.clone());
    let token = nodeagent_api::tcp_router_for(
        core.clone(),
        &TcpOptions::with_token(Token::new(TOKEN).expect("token")),
    );
    let open = nodeagent_api::tcp_router_for(core.clone(), &TcpOptions::without_token());
    let bearer = format!("Bearer {TOKEN}");
    let bearer: &'static str = Box::leak(bearer.into_boxed_str());

    let mut g = c.benchmark_group("guard");
    let mut run = |name: &str, router: &axum::Router, make: &dyn Fn() -> Request<Body>| {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let resp = router.clone().oneshot(make()).await.expect("infallible");
                    black_box(resp.status())
                })
            })
        });
    };
    run("get/local", &local, &|| {
        request(Method::GET, "/v1/objects/web-1", None, "")
    });
    run("get/no-auth", &open, &|| {
        request(Method::GET, "/v1/objects/web-1", None, "")
    });
    run("get/token", &token, &|| {
        request(Method::GET, "/v1/objects/web-1", Some(bearer), "")
    });
    run("get/401", &token, &|| {
        request(Method::GET, "/v1/objects/web-1", Some("Bearer wrong"), "")
    });
    run("post/token", &token, &|| {
        request(Method::POST, "/v1/objects", Some(bearer), SPEC)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
