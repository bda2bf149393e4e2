//! End-to-end: request tracing over OTLP/gRPC (issue 5).
//!
//! Each test runs its own OTLP trace receiver (a tonic server implementing
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export`) on a free loopback port and
//! starts the real daemon pointed at it, then checks what arrives: the span tree of a create,
//! with the trace id the response named.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the receiver got: every span, with its resource's `service.name`, and the number of
/// Export calls.
#[derive(Default)]
struct Received {
    spans: Vec<(String, Span)>,
    exports: usize,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut r = self.0.lock().unwrap();
        r.exports += 1;
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    r.spans.push((service.clone(), s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the receiver on its own runtime thread; returns its port and what it received.
fn start_receiver() -> (u16, Receiver) {
    let recv = Receiver::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let svc = recv.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(svc))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await
                .unwrap();
        });
    });
    (port, recv)
}

/// One HTTP/1.1 exchange with the daemon's token and the extra headers; returns the status,
/// the response's headers (names lower-cased) and the body.
fn request(
    d: &Daemon,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {}\r\n",
        d.token()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn str_attr<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

fn int_attr(s: &Span, key: &str) -> Option<i64> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::IntValue(i)) => Some(*i),
            _ => None,
        })
}

/// Waits until the receiver holds a span of `trace` named `name`; returns that trace's spans.
/// Waits until the span `name` of `trace` has arrived and, with `root`, the trace's root too.
/// Spans are exported as they end, children before parents, and the batch exporter may split a
/// trace across batches: the root, ending last, is the one to wait for.
fn wait_for_span(recv: &Receiver, trace: &str, name: &str, root: bool) -> Vec<(String, Span)> {
    eventually(
        Duration::from_secs(15),
        &format!("span {name} of trace {trace} at the OTLP receiver"),
        || {
            let r = recv.0.lock().unwrap();
            let spans: Vec<(String, Span)> = r
                .spans
                .iter()
                .filter(|(_, s)| hex(&s.trace_id) == trace)
                .cloned()
                .collect();
            let named = spans.iter().any(|(_, s)| s.name == name);
            let rooted = !root || spans.iter().any(|(_, s)| s.parent_span_id.is_empty());
            (named && rooted).then_some(spans)
        },
    )
}

/// The one span named `name`, which must be a child of `parent` (by span id).
fn child<'a>(spans: &'a [(String, Span)], name: &str, parent: &Span) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one span named {name}; spans: {:?}",
        names(spans)
    );
    let s = found[0];
    assert_eq!(
        hex(&s.parent_span_id),
        hex(&parent.span_id),
        "{name} must be a child of {}; spans: {:?}",
        parent.name,
        names(spans)
    );
    s
}

fn names(spans: &[(String, Span)]) -> Vec<String> {
    spans
        .iter()
        .map(|(_, s)| {
            format!(
                "{} (id {} parent {})",
                s.name,
                hex(&s.span_id),
                hex(&s.parent_span_id)
            )
        })
        .collect()
}

fn traced_daemon(recv_port: u16) -> Daemon {
    Daemon::start_with(Opts {
        args: vec![
            "--otlp-endpoint".into(),
            format!("http://127.0.0.1:{recv_port}"),
            "--otlp-service-name".into(),
            "nodeagent-e2e".into(),
        ],
        // Export within 100 ms instead of the default 5 s.
        env: vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into())],
        ..Opts::default()
    })
}

#[test]
fn create_is_one_trace_api_core_manager_driver() {
    require_cgroup_v1();
    let (recv_port, recv) = start_receiver();
    let d = traced_daemon(recv_port);
    let name = format!("tr-{}", random_suffix());
    let spec = sleep_spec(&name, 0.5, "64Mi").to_string();
    let (status, headers, body) = request(&d, "POST", "/v1/objects?wait=true", Some(&spec), &[]);
    assert_eq!(status, 201, "{body}");
    let trace = header(&headers, "x-trace-id")
        .unwrap_or_else(|| panic!("no x-trace-id header in {headers:?}"))
        .to_string();
    assert_eq!(trace.len(), 32, "{trace}");
    assert_ne!(trace, "0".repeat(32));
    let tp = header(&headers, "traceparent").expect("a traceparent header");
    assert!(tp.starts_with(&format!("00-{trace}-")), "{tp}");

    let spans = wait_for_span(&recv, &trace, "driver.process.spawn", true);
    // The root: the API's span, no parent, named after the route, with method and status.
    let roots: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root span: {:?}", names(&spans));
    let root = roots[0];
    assert_eq!(root.name, "POST /v1/objects", "{:?}", names(&spans));
    assert_eq!(str_attr(root, "http.route"), Some("/v1/objects"));
    assert_eq!(str_attr(root, "http.request.method"), Some("POST"));
    assert_eq!(int_attr(root, "http.response.status_code"), Some(201));
    // The traceparent names the root span.
    assert!(
        tp.contains(&hex(&root.span_id)),
        "{tp} vs {}",
        hex(&root.span_id)
    );
    // Nothing of the request's credentials in any span.
    let token = d.token();
    for (service, s) in &spans {
        assert_eq!(service, "nodeagent-e2e");
        for kv in &s.attributes {
            assert!(
                !format!("{:?}", kv.value).contains(&token),
                "the token leaked into span {} attribute {}",
                s.name,
                kv.key
            );
        }
    }

    let core = child(&spans, "core.create", root);
    let manager = child(&spans, "manager.process.create", core);
    for driver in [
        "driver.cgroup.create",
        "driver.cgroup.apply",
        "driver.process.spawn",
    ] {
        child(&spans, driver, manager);
    }

    // The same caller continuing its own trace: the agent's root span is the caller's child.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (status, headers, body) = request(
        &d,
        "GET",
        &format!("/v1/objects/{name}"),
        None,
        &[(
            "traceparent",
            &format!("00-{caller_trace}-{caller_span}-01"),
        )],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-trace-id"), Some(caller_trace));
    let spans = wait_for_span(&recv, caller_trace, "GET /v1/objects/{key}", false);
    let get = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "GET /v1/objects/{key}")
        .unwrap();
    assert_eq!(hex(&get.parent_span_id), caller_span);

    // push-once: the reporter's write joins the request's trace, through the collector thread
    // and the sink's thread.
    let (status, headers, body) = request(
        &d,
        "POST",
        &format!("/v1/objects/{name}/push-once"),
        Some(r#"{"sink":"file"}"#),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let trace = header(&headers, "x-trace-id").unwrap().to_string();
    let spans = wait_for_span(&recv, &trace, "reporter.write", true);
    let root = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.parent_span_id.is_empty())
        .unwrap_or_else(|| panic!("no root: {:?}", names(&spans)));
    assert_eq!(root.name, "POST /v1/objects/{key}/push-once");
    let core = child(&spans, "core.push_once", root);
    let collector = child(&spans, "collector.push_once", core);
    let write = child(&spans, "reporter.write", collector);
    assert_eq!(str_attr(write, "sink"), Some("file"));

    let (status, _, body) = request(
        &d,
        "DELETE",
        &format!("/v1/objects/{name}?wait=true"),
        None,
        &[],
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn tracing_off_means_no_header_and_no_export() {
    require_cgroup_v1();
    let (recv_port, recv) = start_receiver();
    // The standard OpenTelemetry variables alone do not turn tracing on.
    let d = Daemon::start_with(Opts {
        env: vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://127.0.0.1:{recv_port}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        ..Opts::default()
    });
    let name = format!("tr-{}", random_suffix());
    let spec = sleep_spec(&name, 0.5, "64Mi").to_string();
    let (status, headers, body) = request(
        &d,
        "POST",
        "/v1/objects?wait=true",
        Some(&spec),
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(header(&headers, "x-trace-id"), None, "{headers:?}");
    assert_eq!(header(&headers, "traceparent"), None, "{headers:?}");
    let (status, _, body) = request(
        &d,
        "DELETE",
        &format!("/v1/objects/{name}?wait=true"),
        None,
        &[],
    );
    assert_eq!(status, 200, "{body}");
    // Twenty schedule delays: an exporter, had there been one, would have sent by now.
    std::thread::sleep(Duration::from_secs(2));
    let r = recv.0.lock().unwrap();
    assert_eq!(r.exports, 0, "tracing is off, yet spans were exported");
}

#[test]
fn grpc_create_is_one_trace_too() {
    use nodeagent_api::proto::{CreateRequest, DeleteRequest, ObjectSpec, ProcessSpec};
    require_cgroup_v1();
    let (recv_port, recv) = start_receiver();
    let d = traced_daemon(recv_port);
    let name = format!("trg-{}", random_suffix());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let trace = rt.block_on(async {
        let mut c = common::grpc_client(d.port).await;
        let res = c
            .create(CreateRequest {
                spec: Some(ObjectSpec {
                    name: name.clone(),
                    kind: "process".into(),
                    process: Some(ProcessSpec {
                        command: vec!["/bin/sleep".into(), "300".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                wait: true,
            })
            .await
            .unwrap();
        let trace = res
            .metadata()
            .get("x-trace-id")
            .expect("x-trace-id in the gRPC response's metadata")
            .to_str()
            .unwrap()
            .to_string();
        c.delete(DeleteRequest {
            key: name.clone(),
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap();
        trace
    });
    let spans = wait_for_span(&recv, &trace, "manager.process.create", true);
    let root = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.parent_span_id.is_empty())
        .unwrap_or_else(|| panic!("no root: {:?}", names(&spans)));
    assert_eq!(root.name, "/nodeagent.v1.Agent/Create");
    assert_eq!(str_attr(root, "rpc.system"), Some("grpc"));
    let core = child(&spans, "core.create", root);
    child(&spans, "manager.process.create", core);
}
