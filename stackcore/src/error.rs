//! Typed errors that callers can branch on and that map to exit codes.

use std::path::PathBuf;

/// Everything that can go wrong in `stackcore`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a named path. The cause is part of the message and deliberately not
    /// a `source`: `error: {e:#}` would print it twice otherwise.
    #[error("{}: {cause}", .path.display())]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// Input that cannot be used as given (bad flags, bad names, not a description): exit 2.
    #[error("{0}")]
    Usage(String),
    /// A registry refused or failed a request: `REF: what went wrong`.
    #[error("{reference}: {message}")]
    Registry {
        /// The `docker://` ref the operation was on.
        reference: String,
        /// The HTTP status, when the registry answered (401 for bad credentials).
        status: Option<u16>,
        /// What went wrong, for people.
        message: String,
    },
    /// Any other failure, with a message saying what and where.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a path to an `io::Result`, turning it into our [`Result`].
pub trait IoContext<T> {
    /// Attach `path` to the error.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
