//! Route paths, in axum's syntax (which is also OpenAPI's: `{key}` is a path parameter). They
//! are apart from the HTTP front end (`http`), which routes them, because the auth middleware
//! names some of them too (the open ones) and must not depend on the front end it guards.

pub const OBJECTS: &str = "/v1/objects";
pub const OBJECT: &str = "/v1/objects/{key}";
pub const PUSH_ON: &str = "/v1/objects/{key}/push-on";
pub const PUSH_OFF: &str = "/v1/objects/{key}/push-off";
pub const PUSH_ONCE: &str = "/v1/objects/{key}/push-once";
pub const OBJECT_METRICS: &str = "/v1/objects/{key}/metrics";
pub const HOST: &str = "/v1/host";
pub const SINKS: &str = "/v1/sinks";
pub const EVENTS: &str = "/v1/events";
pub const PROMETHEUS: &str = "/metrics";
pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const OPENAPI: &str = "/openapi.json";
pub const OBJECT_METRICS_STREAM: &str = "/v1/objects/{key}/metrics/stream";
pub const METRICS_STREAM: &str = "/v1/metrics/stream";
pub const CONSOLE_CODES: &str = "/v1/console/codes";

/// Percent-encodes one path segment (an object key): every byte but RFC 3986's unreserved ones
/// as `%XX`, so that a key always stays one segment. The CLI and the bus build paths with it.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
