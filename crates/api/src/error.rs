//! Error responses: every one is `{"error": {"code", "message", "field"?}}` (DESIGN.md §4) with
//! the status its code maps to, including the router's own 404, 405 and 413.
//!
//! The HTTP front end (`http`) and the auth middleware (its 401) both answer in this shape; it
//! is apart from both so that auth does not depend on the front end it guards.

use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nodeagent_types::{ApiError, ErrorCode};
use serde::Serialize;

/// An error on its way out as an HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpError {
    status: StatusCode,
    body: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// The policy rule that refused a request (403 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ErrorBody,
}

impl HttpError {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A wrong method on a known path. [`ErrorCode`] has no such code because no core operation
    /// can fail this way; only the router can.
    pub fn method_not_allowed(method: &str, path: &str) -> HttpError {
        HttpError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            body: ErrorBody {
                code: "method_not_allowed",
                message: format!("{method} is not allowed on {path}; see /openapi.json"),
                field: None,
                rule: None,
            },
        }
    }

    /// Maps a failure to read the body: too large is 413 (`limit` is the cap in force, for the
    /// message), anything else (a client that hung up mid-body) is bad input.
    pub fn from_body_rejection(r: &BytesRejection, limit: usize) -> HttpError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the request body is larger than the limit of {limit} bytes (max_body)"),
            )
            .into()
        } else {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("could not read the request body: {}", r.body_text()),
            )
            .into()
        }
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        HttpError {
            status: StatusCode::from_u16(e.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: ErrorBody {
                code: e.code.as_str(),
                message: e.message,
                field: e.field,
                rule: e.rule,
            },
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = match serde_json::to_vec(&Envelope { error: &self.body }) {
            Ok(b) => b,
            // Unreachable for a struct of strings; still answer with the status rather than panic.
            Err(_) => {
                br#"{"error":{"code":"internal","message":"error response could not be encoded"}}"#
                    .to_vec()
            }
        };
        (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(r: Response) -> serde_json::Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        serde_json::from_slice(&b).expect("json")
    }

    #[tokio::test]
    async fn every_code_maps_to_its_status_and_shape() {
        let cases = [
            (ErrorCode::InvalidArgument, 400, "invalid_argument"),
            (ErrorCode::NotFound, 404, "not_found"),
            (ErrorCode::AlreadyExists, 409, "already_exists"),
            (ErrorCode::FailedPrecondition, 409, "failed_precondition"),
            (ErrorCode::Unavailable, 503, "unavailable"),
            (ErrorCode::PayloadTooLarge, 413, "payload_too_large"),
            (ErrorCode::Unauthorized, 401, "unauthorized"),
            (ErrorCode::Forbidden, 403, "forbidden"),
            (ErrorCode::Internal, 500, "internal"),
        ];
        for (code, status, name) in cases {
            let r = HttpError::from(ApiError::new(code, "boom")).into_response();
            assert_eq!(r.status().as_u16(), status, "{name}");
            assert_eq!(
                r.headers()
                    .get(header::CONTENT_TYPE)
                    .map(HeaderValue::as_bytes),
                Some(&b"application/json"[..])
            );
            let v = body_json(r).await;
            assert_eq!(
                v,
                serde_json::json!({"error": {"code": name, "message": "boom"}})
            );
        }
    }

    #[tokio::test]
    async fn forbidden_names_field_and_rule() {
        let r = HttpError::from(ApiError::forbidden(
            "process.command[0]",
            "policy.process_commands",
            "no",
        ))
        .into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let v = body_json(r).await;
        assert_eq!(v["error"]["code"], "forbidden");
        assert_eq!(v["error"]["field"], "process.command[0]");
        assert_eq!(v["error"]["rule"], "policy.process_commands");
        assert_eq!(
            v["error"]["message"],
            "refused by policy.process_commands: no"
        );
    }

    #[tokio::test]
    async fn field_is_included_when_known() {
        let r = HttpError::from(ApiError::invalid("resources.memory", "bad")).into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let v = body_json(r).await;
        assert_eq!(v["error"]["field"], "resources.memory");
        assert_eq!(v["error"]["code"], "invalid_argument");
    }
}
