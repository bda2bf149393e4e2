use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no cgroup filesystem under {0}")]
    NotFound(PathBuf),
    /// A write the kernel refused because of the value (e.g. a memory limit below usage); names
    /// the spec field (`resources.memory`).
    #[error("{field}: {message}")]
    Rejected {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}
