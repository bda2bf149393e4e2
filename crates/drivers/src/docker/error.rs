use std::time::Duration;

/// What went wrong talking to the Docker Engine. The variants are the distinctions a caller acts
/// on: an engine that is not there (503), a thing that does not exist (a missing image or
/// container), a name already in use, a value the engine refused, and everything else.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No engine answers on the socket: it is missing, refuses connections, or is not Docker.
    #[error("docker engine not reachable at {socket}: {message}")]
    Unreachable { socket: String, message: String },
    /// The engine answered 404: no such container or image.
    #[error("{message}")]
    NotFound { message: String },
    /// The engine answered 409: a name in use, or a state that forbids the operation (e.g.
    /// pausing a container that is not running).
    #[error("{message}")]
    Conflict { message: String },
    /// The engine answered 400: a value it refuses (a bad mount, a cpuset it cannot honour).
    #[error("{message}")]
    Invalid { message: String },
    /// Any other answer of the engine (500 and the like).
    #[error("docker engine error {status}: {message}")]
    Api { status: u16, message: String },
    /// The engine did not answer within the time the operation allows.
    #[error("docker engine did not answer {op} within {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// A pull or event stream that broke off, or an answer that could not be read.
    #[error("{0}")]
    Stream(String),
}

impl DockerError {
    /// Whether the error means the engine itself is gone (rather than refusing this request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DockerError::Unreachable { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }

    /// Maps bollard's error. Connection-level failures (socket missing, connection refused, an
    /// I/O error before any answer) become [`DockerError::Unreachable`] so that callers can
    /// answer 503 with the socket named.
    pub(crate) fn from_bollard(socket: &str, e: bollard::errors::Error) -> DockerError {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => match status_code {
                404 => DockerError::NotFound { message },
                409 => DockerError::Conflict { message },
                400 => DockerError::Invalid { message },
                s => DockerError::Api { status: s, message },
            },
            B::SocketNotFoundError(path) => DockerError::Unreachable {
                socket: socket.to_string(),
                message: format!("no socket at {path}"),
            },
            B::RequestTimeoutError => DockerError::Timeout {
                op: "the request",
                after: Duration::from_secs(super::CLIENT_TIMEOUT_SECS),
            },
            B::DockerStreamError { error } => DockerError::Stream(error),
            e @ (B::HyperResponseError { .. }
            | B::HyperLegacyError { .. }
            | B::IOError { .. }
            | B::HttpClientError { .. }) => DockerError::Unreachable {
                socket: socket.to_string(),
                message: root_cause(&e),
            },
            other => DockerError::Stream(root_cause(&other)),
        }
    }
}

/// The innermost message of an error chain: hyper's "client error (Connect)" says little, the
/// io::Error below it ("Connection refused (os error 111)") says what happened.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    let mut msg = cur.to_string();
    while let Some(next) = cur.source() {
        let m = next.to_string();
        if !m.is_empty() {
            msg = m;
        }
        cur = next;
    }
    msg
}
