//! The HTTP/JSON front end (DESIGN.md §4): routes, handlers, error responses and the SSE event
//! stream. Handlers parse the request, call the core once, and format its answer.

mod handlers;
mod query;
mod sse;
mod stream;
pub(crate) mod ui;

pub use crate::error::HttpError;
pub use crate::paths;
pub use query::Query;

use crate::Api;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use nodeagent_types::{ApiError, ErrorCode};

/// Every path the router serves, in the order it registers them. The router is built from this
/// list (see [`route_table`]) and a test checks that `openapi.json` documents each one.
pub const ROUTES: &[&str] = &[
    paths::OBJECTS,
    paths::OBJECT,
    paths::PUSH_ON,
    paths::PUSH_OFF,
    paths::PUSH_ONCE,
    paths::OBJECT_METRICS,
    paths::HOST,
    paths::SINKS,
    paths::EVENTS,
    paths::PROMETHEUS,
    paths::HEALTHZ,
    paths::READYZ,
    paths::OPENAPI,
    paths::OBJECT_METRICS_STREAM,
    paths::METRICS_STREAM,
    paths::CONSOLE_CODES,
];

/// The hand-written OpenAPI 3.0 description of the routes above, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Each route's path with its handlers, in the order of [`ROUTES`] (a test checks it).
fn route_table() -> [(&'static str, MethodRouter<Api>); 16] {
    use handlers as h;
    [
        (paths::OBJECTS, post(h::create).get(h::list)),
        (
            paths::OBJECT,
            get(h::get).patch(h::update).delete(h::delete),
        ),
        (paths::PUSH_ON, post(h::push_on)),
        (paths::PUSH_OFF, post(h::push_off)),
        (paths::PUSH_ONCE, post(h::push_once)),
        (paths::OBJECT_METRICS, get(h::metrics)),
        (paths::HOST, get(h::host)),
        (paths::SINKS, get(h::sinks)),
        (paths::EVENTS, get(h::events)),
        (paths::PROMETHEUS, get(h::prometheus)),
        (paths::HEALTHZ, get(h::healthz)),
        (paths::READYZ, get(h::readyz)),
        (paths::OPENAPI, get(h::openapi)),
        (paths::OBJECT_METRICS_STREAM, get(stream::object)),
        (paths::METRICS_STREAM, get(stream::all)),
        (paths::CONSOLE_CODES, post(ui::new_code)),
    ]
}

/// The HTTP routes, with contract-shaped 404 and 405 answers. The state is added by the caller.
pub(crate) fn routes() -> axum::Router<Api> {
    let mut r = axum::Router::new();
    for (path, handler) in route_table() {
        r = r.route(path, handler);
    }
    r = r.merge(ui::routes());
    // Must come after the routes: it applies to the method routers registered so far.
    r.method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
}

/// Whether a request is gRPC, which shares the port: an unknown gRPC method must get a gRPC
/// status, not an HTTP JSON 404 that the client would report as a transport error.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

async fn not_found(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if is_grpc(&headers) {
        return tonic::Status::unimplemented(format!("no gRPC method {}", uri.path()))
            .into_http::<axum::body::Body>();
    }
    HttpError::from(ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no route for {method} {}; see /openapi.json",
            crate::request::truncate(uri.path())
        ),
    ))
    .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    HttpError::method_not_allowed(method.as_str(), &crate::request::truncate(uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table_matches_routes() {
        let table: Vec<&str> = route_table().iter().map(|(p, _)| *p).collect();
        assert_eq!(table, ROUTES);
    }

    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().expect("paths");
        for (route, _) in route_table() {
            assert!(paths.contains_key(route), "openapi.json lacks {route}");
        }
        for documented in paths.keys() {
            assert!(
                ROUTES.contains(&documented.as_str()),
                "openapi.json documents {documented}, which the router does not serve"
            );
        }
    }
}
