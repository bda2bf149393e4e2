//! Parsing shared by the HTTP and gRPC front ends, so that both accept exactly the same requests
//! and reject bad ones with the same messages and field names.

use nodeagent_types::spec::{MAX_INTERVAL, MIN_INTERVAL};
use nodeagent_types::{ApiError, Duration, ErrorCode, ObjectPatch, ObjectSpec, ReportMode};
use serde::Deserialize;

/// The largest request body either front end reads. Specs are a few hundred bytes; the cap only
/// keeps a careless or hostile client from making the agent buffer megabytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Longest object key (id or name) or sink name accepted; far above any valid one, it bounds what
/// the core is asked to look up and what error messages echo back.
const MAX_KEY_LEN: usize = 256;

/// Body of `push-on`: which sink, how often (1s when absent), and what to send each time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushOnBody {
    pub sink: String,
    #[serde(default)]
    pub interval: Option<Duration>,
    /// `batch` (every sample, sent each interval) or `latest` (the newest sample once per
    /// interval); absent: the sink's mode (`latest` for file and stdout, `batch` for grpc and
    /// nats, unless its config sets `mode`).
    #[serde(default)]
    pub mode: Option<ReportMode>,
}

/// Body of `push-off` and `push-once`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkBody {
    pub sink: String,
}

/// An empty body is the most common mistake with curl (`-X POST` without `-d`); serde_json's
/// "EOF while parsing a value" does not say what to do about it.
fn require_body(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "the request body is empty; send a JSON object",
        ));
    }
    Ok(())
}

/// Parses and validates an object spec (the body of a create).
pub fn parse_spec(body: &[u8]) -> Result<ObjectSpec, ApiError> {
    require_body(body)?;
    ObjectSpec::from_json(body)
}

/// Parses and validates the body of an in-place update.
pub fn parse_patch(body: &[u8]) -> Result<ObjectPatch, ApiError> {
    require_body(body)?;
    ObjectPatch::from_json(body)
}

/// Reads a JSON body into `T` with the types crate's field-naming reader.
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    nodeagent_types::spec::from_json(body)
}

/// Parses and validates a `push-on` body.
pub fn parse_push_on(body: &[u8]) -> Result<PushOnBody, ApiError> {
    require_body(body)?;
    let b: PushOnBody = from_json(body)?;
    validate_sink(&b.sink)?;
    if let Some(i) = b.interval {
        let d = i.as_std();
        if d < MIN_INTERVAL || d > MAX_INTERVAL {
            return Err(ApiError::invalid(
                "interval",
                format!("interval {i} is out of range: give 10ms to 1h"),
            ));
        }
    }
    Ok(b)
}

/// Parses and validates a `push-off` or `push-once` body.
pub fn parse_sink_body(body: &[u8]) -> Result<SinkBody, ApiError> {
    require_body(body)?;
    let b: SinkBody = from_json(body)?;
    validate_sink(&b.sink)?;
    Ok(b)
}

/// Sink names come from the config file or are built in; which exist is the core's business, so
/// only the shape is checked here.
fn validate_sink(sink: &str) -> Result<(), ApiError> {
    if sink.is_empty() || sink.len() > MAX_KEY_LEN || sink.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "sink",
            "give the name of a sink: stdout, file, prometheus or one named in the config file",
        ));
    }
    Ok(())
}

/// Checks an object key (id or name) taken from a path or a gRPC message.
pub fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ApiError::invalid("key", "give an object id or name"));
    }
    Ok(())
}

/// Parses a boolean query parameter. Only the four spellings people actually type are accepted,
/// so that `?wait=yes` is an error rather than a silent `false`.
pub fn parse_bool(field: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ApiError::invalid(
            field,
            format!("{other:?} is not a boolean: use true, false, 1 or 0"),
        )),
    }
}

/// Parses a non-negative integer query parameter.
pub fn parse_u64(field: &str, value: &str) -> Result<u64, ApiError> {
    value.parse::<u64>().map_err(|_| {
        ApiError::invalid(
            field,
            format!("{:?} is not a non-negative integer", truncate(value)),
        )
    })
}

/// Parses `limit`: a positive number of samples.
pub fn parse_limit(value: u64) -> Result<usize, ApiError> {
    if value == 0 {
        return Err(ApiError::invalid("limit", "limit must be at least 1"));
    }
    // On 32-bit targets a huge limit means "all of them".
    Ok(usize::try_from(value).unwrap_or(usize::MAX))
}

/// Keeps echoed user input in error messages short.
pub(crate) fn truncate(s: &str) -> String {
    truncate_to(s, 64)
}

/// The first `n` characters of `s`.
pub(crate) fn truncate_to(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<impl std::fmt::Debug, ApiError>) -> Option<String> {
        r.expect_err("should fail").field
    }

    #[test]
    fn push_on_bodies() {
        let b = parse_push_on(br#"{"sink":"stdout","interval":"1s"}"#).expect("valid");
        assert_eq!(b.sink, "stdout");
        assert_eq!(b.interval, Some(Duration::from_millis(1000)));
        assert_eq!(b.mode, None);
        let b = parse_push_on(br#"{"sink":"stdout","mode":"batch"}"#).expect("valid");
        assert_eq!(b.mode, Some(ReportMode::Batch));
        let b = parse_push_on(br#"{"sink":"stdout","mode":"latest"}"#).expect("valid");
        assert_eq!(b.mode, Some(ReportMode::Latest));
        assert_eq!(
            field(parse_push_on(br#"{"sink":"stdout","mode":"every"}"#)).as_deref(),
            Some("mode")
        );
        assert_eq!(
            parse_push_on(br#"{"sink":"stdout"}"#)
                .expect("valid")
                .interval,
            None
        );
        assert_eq!(
            field(parse_push_on(br#"{"sink":"stdout","interval":"fast"}"#)).as_deref(),
            Some("interval")
        );
        assert_eq!(
            field(parse_push_on(br#"{"sink":"stdout","interval":"1ms"}"#)).as_deref(),
            Some("interval")
        );
        assert_eq!(
            field(parse_push_on(br#"{"sink":"stdout","bogus":1}"#)).as_deref(),
            Some("bogus")
        );
        assert_eq!(
            field(parse_push_on(br#"{"sink":""}"#)).as_deref(),
            Some("sink")
        );
        assert_eq!(
            field(parse_push_on(br#"{"sink":5}"#)).as_deref(),
            Some("sink")
        );
        let e = parse_push_on(b"  ").expect_err("empty");
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn sink_bodies() {
        assert_eq!(
            parse_sink_body(br#"{"sink":"file"}"#).expect("valid").sink,
            "file"
        );
        assert_eq!(
            field(parse_sink_body(br#"{"sink":"file","interval":"1s"}"#)).as_deref(),
            Some("interval")
        );
        assert_eq!(field(parse_sink_body(br#"{}"#)).as_deref(), Some("sink"));
    }

    #[test]
    fn booleans_and_integers() {
        assert_eq!(parse_bool("wait", "true"), Ok(true));
        assert_eq!(parse_bool("wait", "1"), Ok(true));
        assert_eq!(parse_bool("wait", "false"), Ok(false));
        assert_eq!(parse_bool("wait", "0"), Ok(false));
        assert_eq!(field(parse_bool("wait", "yes")).as_deref(), Some("wait"));
        assert_eq!(field(parse_bool("wait", "")).as_deref(), Some("wait"));
        assert_eq!(parse_u64("since", "42"), Ok(42));
        assert_eq!(field(parse_u64("since", "-1")).as_deref(), Some("since"));
        assert_eq!(field(parse_u64("limit", "ten")).as_deref(), Some("limit"));
        assert_eq!(parse_limit(3), Ok(3));
        assert_eq!(field(parse_limit(0)).as_deref(), Some("limit"));
    }

    #[test]
    fn specs_and_patches_name_the_field() {
        let p = r#""process":{"command":["/bin/true"]}"#;
        let bad_memory =
            format!(r#"{{"name":"x","kind":"process",{p},"resources":{{"memory":"64Xi"}}}}"#);
        assert_eq!(
            field(parse_spec(bad_memory.as_bytes())).as_deref(),
            Some("resources.memory")
        );
        assert_eq!(
            field(parse_spec(br#"{"kind":"process"}"#)).as_deref(),
            Some("name")
        );
        assert_eq!(
            field(parse_spec(br#"{"name":"x","kind":"process","process":{}}"#)).as_deref(),
            Some("process.command")
        );
        assert_eq!(
            field(parse_spec(br#"{"name":"x","kind":"process","x":1}"#)).as_deref(),
            Some("x")
        );
        assert!(parse_spec(format!(r#"{{"name":"x","kind":"process",{p}}}"#).as_bytes()).is_ok());
        assert_eq!(
            field(parse_patch(br#"{"resources":{"cpu":0}}"#)).as_deref(),
            Some("resources.cpu")
        );
        assert_eq!(
            parse_patch(br#"{"paused":true}"#).expect("valid").paused,
            Some(true)
        );
        assert!(parse_spec(b"")
            .expect_err("empty")
            .message
            .contains("empty"));
    }

    #[test]
    fn keys() {
        assert!(validate_key("web-1").is_ok());
        assert!(validate_key("0123456789abcdef").is_ok());
        assert_eq!(field(validate_key("")).as_deref(), Some("key"));
        assert_eq!(field(validate_key("a\nb")).as_deref(), Some("key"));
    }
}
