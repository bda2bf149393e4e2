//! The error every front end returns: a stable code, a message, and the field at fault.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Bad input: 400.
    InvalidArgument,
    /// Unknown object: 404.
    NotFound,
    /// Name already taken: 409.
    AlreadyExists,
    /// The object is in a state that does not allow the operation (e.g. update of an exited
    /// process, or of the read-only host): 409.
    FailedPrecondition,
    /// A driver that is not available (no Docker engine, no cgroup controller): 503.
    Unavailable,
    /// Body too large: 413.
    PayloadTooLarge,
    /// No valid credentials (a TCP request without the bearer token): 401.
    Unauthorized,
    /// Valid request that the node's policy refuses (a command outside
    /// `policy.process_commands`, a privileged container): 403. The error names the rule.
    Forbidden,
    /// Something on the node failed that the request could not have prevented: 500.
    Internal,
}

impl ErrorCode {
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::FailedPrecondition => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::Internal => 500,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Internal => "internal",
        }
    }
}

/// `{"code", "message", "field", "rule"}`; the HTTP layer wraps it as `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For [`ErrorCode::Forbidden`]: the policy setting that refused the request, e.g.
    /// `policy.process_commands`. The message names it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {} ({})", field, self.message, self.code.as_str()),
            None => write!(f, "{} ({})", self.message, self.code.as_str()),
        }
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            rule: None,
        }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            code: ErrorCode::InvalidArgument,
            message: message.into(),
            field: Some(field.into()),
            rule: None,
        }
    }
    /// A request the node's policy refuses: 403, naming the field at fault and the rule. The
    /// message is prefixed with the rule so that a client that shows only the message still
    /// learns which setting to change.
    pub fn forbidden(
        field: impl Into<String>,
        rule: impl Into<String>,
        message: impl AsRef<str>,
    ) -> Self {
        let rule = rule.into();
        ApiError {
            code: ErrorCode::Forbidden,
            message: format!("refused by {rule}: {}", message.as_ref()),
            field: Some(field.into()),
            rule: Some(rule),
        }
    }
    /// Missing or wrong credentials: 401. Deliberately says nothing about the object asked for.
    pub fn unauthorized() -> Self {
        ApiError::new(ErrorCode::Unauthorized, "missing or invalid bearer token")
    }
    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no object {what:?} on this node"),
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Unavailable, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::FailedPrecondition, message)
    }
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}
