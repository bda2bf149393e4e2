//! The HTTP front end against a stand-in core (see `common`): routes, status codes, the error
//! shape of DESIGN.md §4, query and body parsing, and the SSE stream.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{FakeCore, ID};
use http_body_util::BodyExt;
use nodeagent_api::http::ROUTES;
use nodeagent_types::EventKind;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// Checks the contract's error shape and returns `(code, field)`.
    fn error(&self) -> (String, Option<String>) {
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let v = self.json();
        let e = v["error"].as_object().expect("an `error` object");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        (
            e["code"].as_str().expect("code").to_string(),
            e.get("field").and_then(Value::as_str).map(str::to_string),
        )
    }
}

async fn send(core: &Arc<FakeCore>, req: Request<Body>) -> Reply {
    let app = nodeagent_api::router_for(core.clone());
    let resp = app.oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn req(method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request")
}

const SPEC: &str =
    r#"{"name":"web-1","kind":"process","process":{"command":["/bin/sleep","300"]}}"#;

#[tokio::test]
async fn healthz_is_ok() {
    let core = FakeCore::new();
    let r = send(&core, get("/healthz")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"ok");
}

#[tokio::test]
async fn readyz_follows_the_core() {
    let core = FakeCore::new();
    assert_eq!(send(&core, get("/readyz")).await.status, StatusCode::OK);
    core.set_ready(false);
    let r = send(&core, get("/readyz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error().0, "unavailable");
}

#[tokio::test]
async fn openapi_is_served_and_documents_every_route() {
    let core = FakeCore::new();
    let r = send(&core, get("/openapi.json")).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    let paths = doc["paths"].as_object().expect("paths");
    for route in ROUTES {
        assert!(paths.contains_key(*route), "openapi.json lacks {route}");
    }
    // And every documented operation is routed: neither the 404 fallback nor a 405.
    for (path, item) in paths {
        for method in ["get", "post", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let uri = path.replace("{key}", ID);
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = send(&core, req(m, &uri, "{}")).await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if r.status == StatusCode::NOT_FOUND {
                let v = r.json();
                let msg = v["error"]["message"].as_str().unwrap_or("");
                assert!(
                    !msg.starts_with("no route"),
                    "{method} {path} is not routed"
                );
            }
        }
    }
}

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let core = FakeCore::new();
    let r = send(&core, get("/v2/nothing")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), ("not_found".to_string(), None));
}

#[tokio::test]
async fn wrong_method_is_a_json_405() {
    let core = FakeCore::new();
    let r = send(&core, req(Method::PUT, "/v1/objects", SPEC)).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error().0, "method_not_allowed");
    let allow = r
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        allow.contains("POST") && allow.contains("GET"),
        "Allow: {allow}"
    );
    assert!(core.calls().is_empty());
}

#[tokio::test]
async fn create_answers_202_accepted() {
    let core = FakeCore::new();
    let r = send(&core, req(Method::POST, "/v1/objects", SPEC)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        r.json(),
        json!({"id": ID, "event_id": 7, "status": "accepted"})
    );
    assert_eq!(
        r.headers.get(header::LOCATION).map(|v| v.as_bytes()),
        Some(format!("/v1/objects/{ID}").as_bytes())
    );
    assert_eq!(core.calls(), ["create"]);
}

#[tokio::test]
async fn create_with_wait_answers_201_with_the_object() {
    let core = FakeCore::new();
    let r = send(&core, req(Method::POST, "/v1/objects?wait=true", SPEC)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let v = r.json();
    assert_eq!(v["id"], ID);
    assert_eq!(v["status"], "running");
    assert_eq!(v["spec"]["name"], "web-1");
    // `wait=1` means the same.
    let r = send(&core, req(Method::POST, "/v1/objects?wait=1", SPEC)).await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn create_without_content_type_is_accepted() {
    let core = FakeCore::new();
    let r = Request::builder()
        .method(Method::POST)
        .uri("/v1/objects")
        .body(Body::from(SPEC))
        .expect("request");
    assert_eq!(send(&core, r).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn bad_memory_is_a_400_naming_resources_memory() {
    let core = FakeCore::new();
    let body = r#"{"name":"web-1","kind":"process","process":{"command":["/bin/true"]},
                   "resources":{"memory":"64Xi"}}"#;
    let r = send(&core, req(Method::POST, "/v1/objects", body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.error(),
        (
            "invalid_argument".to_string(),
            Some("resources.memory".to_string())
        )
    );
    assert!(core.calls().is_empty(), "a bad spec reached the core");
}

#[tokio::test]
async fn unknown_field_is_a_400_naming_it() {
    let core = FakeCore::new();
    let body =
        r#"{"name":"web-1","kind":"process","process":{"command":["/bin/true"]},"colour":"red"}"#;
    let r = send(&core, req(Method::POST, "/v1/objects", body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error().1.as_deref(), Some("colour"));
    let body = r#"{"resources":{"cpu":1,"mem":"1Gi"}}"#;
    let r = send(
        &core,
        req(Method::PATCH, &format!("/v1/objects/{ID}"), body),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error().1.as_deref(), Some("resources.mem"));
    assert!(core.calls().is_empty());
}

#[tokio::test]
async fn malformed_json_and_empty_bodies_are_400() {
    let core = FakeCore::new();
    for body in ["{", "", "[1]", "null"] {
        let r = send(&core, req(Method::POST, "/v1/objects", body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(r.error().0, "invalid_argument");
    }
    assert!(core.calls().is_empty());
}

#[tokio::test]
async fn body_over_one_mib_is_a_json_413() {
    let core = FakeCore::new();
    let mut big = br#"{"name":"web-1","kind":"process","labels":{"a":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', (1 << 20) + 1));
    big.extend(br#""}}"#);
    let r = send(&core, req(Method::POST, "/v1/objects", big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error().0, "payload_too_large");
    assert!(core.calls().is_empty());
}

#[tokio::test]
async fn non_json_content_type_is_a_400() {
    let core = FakeCore::new();
    let r = Request::builder()
        .method(Method::POST)
        .uri("/v1/objects")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(SPEC))
        .expect("request");
    let r = send(&core, r).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error().0, "invalid_argument");
    assert!(core.calls().is_empty());
}

#[tokio::test]
async fn query_parameters_are_checked_and_named() {
    let core = FakeCore::new();
    let cases = [
        (req(Method::POST, "/v1/objects?wait=yes", SPEC), "wait"),
        (req(Method::POST, "/v1/objects?wiat=true", SPEC), "wiat"),
        (
            req(Method::DELETE, &format!("/v1/objects/{ID}?wait=2"), ""),
            "wait",
        ),
        (get("/v1/events?since=abc"), "since"),
        (get("/v1/events?since=-1"), "since"),
        (get(&format!("/v1/objects/{ID}/metrics?limit=x")), "limit"),
        (get(&format!("/v1/objects/{ID}/metrics?limit=0")), "limit"),
        (get("/v1/objects?verbose=1"), "verbose"),
    ];
    for (request, field) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let r = send(&core, request).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(
            r.error(),
            ("invalid_argument".into(), Some(field.into())),
            "{what}"
        );
    }
    assert!(core.calls().is_empty());
}

#[tokio::test]
async fn get_list_patch_delete() {
    let core = FakeCore::new();
    let r = send(&core, get("/v1/objects")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["objects"][0]["id"], ID);

    let r = send(&core, get("/v1/objects/web-1")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["name"], "web-1");

    let r = send(&core, get("/v1/objects/nope")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error().0, "not_found");

    let r = send(
        &core,
        req(
            Method::PATCH,
            &format!("/v1/objects/{ID}?wait=true"),
            r#"{"resources":{"memory":"128Mi"},"paused":true}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["spec"]["resources"]["memory"], 128 << 20);
    assert_eq!(v["paused"], true);

    let r = send(
        &core,
        req(Method::DELETE, &format!("/v1/objects/{ID}?wait=true"), ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "deleted");

    assert_eq!(core.calls(), ["list", "get", "get", "update", "delete"]);
}

#[tokio::test]
async fn name_taken_is_a_409() {
    let core = FakeCore::new();
    let body = r#"{"name":"taken","kind":"process","process":{"command":["/bin/true"]}}"#;
    let r = send(&core, req(Method::POST, "/v1/objects", body)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), ("already_exists".into(), Some("name".into())));
}

#[tokio::test]
async fn unavailable_core_is_a_503() {
    let core = FakeCore::new();
    let r = send(&core, get("/v1/host")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error().0, "unavailable");
}

#[tokio::test]
async fn push_routes() {
    let core = FakeCore::new();
    let base = format!("/v1/objects/{ID}");
    let r = send(
        &core,
        req(
            Method::POST,
            &format!("{base}/push-on"),
            r#"{"sink":"stdout","interval":"250ms"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"id": ID, "sink": "stdout", "interval": "250ms", "status": "on"})
    );

    let r = send(
        &core,
        req(
            Method::POST,
            &format!("{base}/push-once"),
            r#"{"sink":"file"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["sample_seq"], 3);

    let r = send(
        &core,
        req(
            Method::POST,
            &format!("{base}/push-off"),
            r#"{"sink":"stdout"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "off");

    let r = send(
        &core,
        req(
            Method::POST,
            &format!("{base}/push-on"),
            r#"{"sink":"stdout","interval":"soon"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error().1.as_deref(), Some("interval"));

    let r = send(
        &core,
        req(Method::POST, &format!("{base}/push-off"), r#"{}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error().1.as_deref(), Some("sink"));

    // The report mode (issue 21): a push-on's mode goes to the core as given (any sink may be
    // asked for either), and an unknown one is refused naming `mode`.
    let r = send(
        &core,
        req(
            Method::POST,
            &format!("{base}/push-on"),
            r#"{"sink":"file","mode":"batch"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["mode"], "batch");
    let r = send(
        &core,
        req(
            Method::POST,
            &format!("{base}/push-on"),
            r#"{"sink":"file","mode":"often"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error().1.as_deref(), Some("mode"));
    let r = send(
        &core,
        req(
            Method::POST,
            &format!("{base}/push-on"),
            r#"{"sink":"file","mode":"latest"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["mode"], "latest");

    // Each valid push-on reaches the core once; a bad body never does.
    assert_eq!(
        core.calls(),
        ["push_on", "push_once", "push_off", "push_on", "push_on"]
    );
}

#[tokio::test]
async fn metrics_honours_limit() {
    let core = FakeCore::new();
    let r = send(&core, get(&format!("/v1/objects/{ID}/metrics?limit=2"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let seqs: Vec<u64> = v["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(|s| s["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [4, 5]);
}

#[tokio::test]
async fn sinks_lists_every_sink_with_its_counters() {
    let core = FakeCore::new();
    let r = send(&core, get("/v1/sinks")).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let sinks = v["sinks"].as_array().expect("sinks");
    assert_eq!(sinks.len(), 1);
    assert_eq!(sinks[0]["name"], "file");
    assert_eq!(sinks[0]["type"], "file");
    for k in [
        "queue_depth",
        "spool_bytes",
        "sent",
        "acked",
        "retried",
        "dropped",
    ] {
        assert!(sinks[0][k].is_u64(), "{k} in {v}");
    }
    let r = send(&core, get("/v1/sinks?x=1")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn prometheus_text_has_its_content_type() {
    let core = FakeCore::new();
    let r = send(&core, get("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    let ct = r
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = String::from_utf8_lossy(&r.body);
    // The core's text, then each listed object's status and restarts (issue 21).
    assert!(text.starts_with("nodeagent_up 1\n"), "{text}");
    assert!(
        text.contains("# TYPE nodeagent_object_status gauge\n"),
        "{text}"
    );
    assert!(
        text.contains("nodeagent_object_restarts_total{id=\"0123456789abcdef\",name=\"web-1\",kind=\"process\"} 0\n"),
        "{text}"
    );
}

#[tokio::test]
async fn events_as_json_since() {
    let core = FakeCore::new();
    for seq in 1..=3 {
        core.emit(seq, EventKind::Created);
    }
    let r = send(&core, get("/v1/events?since=1")).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let seqs: Vec<u64> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [2, 3]);
}

/// Reads SSE frames until `n` events (blank-line-terminated blocks with an `id:`) have arrived.
async fn read_sse_events(body: &mut Body, n: usize) -> Vec<String> {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an SSE frame in time")
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).expect("utf-8"));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if block.lines().any(|l| l.starts_with("id:")) {
                events.push(block);
            }
        }
    }
    events
}

#[tokio::test]
async fn events_as_sse_backlog_then_live() {
    let core = FakeCore::new();
    for seq in 1..=3 {
        core.emit(seq, EventKind::Created);
    }
    let app = nodeagent_api::router_for(core.clone());
    let request = Request::builder()
        .uri("/v1/events?since=1")
        .header(header::ACCEPT, "text/event-stream")
        .body(Body::empty())
        .expect("request");
    let resp = app.oneshot(request).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let mut body = resp.into_body();
    let backlog = read_sse_events(&mut body, 2).await;
    assert!(
        backlog[0].contains("id: 2\n") || backlog[0].contains("id:2\n"),
        "{}",
        backlog[0]
    );
    assert!(backlog[0].contains("event: created") || backlog[0].contains("event:created"));
    assert!(backlog[1].contains("id: 3") || backlog[1].contains("id:3"));
    core.emit(4, EventKind::Paused);
    let live = read_sse_events(&mut body, 1).await;
    assert!(live[0].contains("paused"), "{}", live[0]);
    let data = live[0]
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .expect("data line");
    let v: Value = serde_json::from_str(data.trim()).expect("data is JSON");
    assert_eq!(v["seq"], 4);
    assert_eq!(v["kind"], "paused");
}

/// A watcher that falls behind the core's broadcast buffer (16 in the fake) gets the missed
/// events from the log: none lost, none repeated.
#[tokio::test]
async fn sse_watcher_that_lags_loses_nothing() {
    let core = FakeCore::new();
    let app = nodeagent_api::router_for(core.clone());
    let request = Request::builder()
        .uri("/v1/events")
        .header(header::ACCEPT, "text/event-stream")
        .body(Body::empty())
        .expect("request");
    let resp = app.oneshot(request).await.expect("infallible");
    for seq in 1..=40 {
        core.emit(seq, EventKind::Updated);
    }
    let mut body = resp.into_body();
    let events = read_sse_events(&mut body, 40).await;
    let ids: Vec<u64> = events
        .iter()
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    assert_eq!(ids, (1..=40).collect::<Vec<u64>>());
}
