//! Typed errors that callers can branch on and that map to exit codes.

use std::path::PathBuf;

use crate::digest::Digest;

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
    /// An I/O error on a stream without a path (a layer, a pipe), its kind kept.
    #[error("{0}")]
    Stream(std::io::Error),
    /// Content whose SHA-256 is not the one it was named or recorded by.
    #[error("{what}: digest mismatch: expected {expected}, found {found}")]
    DigestMismatch {
        /// What was read (`blob sha256:...`, `layer sha256:... (diff_id)`).
        what: String,
        /// The digest it should have had.
        expected: Digest,
        /// The digest it had.
        found: Digest,
    },
    /// Content of another size than it was named or recorded with.
    #[error("{what}: expected {expected} bytes, found {}", found.map_or_else(|| "more".to_owned(), |n| n.to_string()))]
    SizeMismatch {
        /// What was read.
        what: String,
        /// The size it should have had.
        expected: u64,
        /// The size it had; `None` when reading stopped at the first byte too many.
        found: Option<u64>,
    },
    /// Something asked for by name that is not there (a blob in a store).
    #[error("{what} {name} {}", place.as_ref().map_or_else(|| "not found".to_owned(), |p| format!("missing from {}", p.display())))]
    NotFound {
        /// What kind of thing (`blob`).
        what: &'static str,
        /// Its name or digest.
        name: String,
        /// Where it was looked for.
        place: Option<PathBuf>,
    },
    /// Reading one layer failed: its blob digest and why.
    #[error("layer {digest}: {cause}")]
    Layer {
        /// The layer's blob digest.
        digest: Digest,
        /// What went wrong.
        cause: Box<Error>,
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

impl Error {
    /// An error from reading layer `digest`.
    pub fn layer(digest: &Digest, cause: impl Into<Error>) -> Self {
        Error::Layer {
            digest: digest.clone(),
            cause: Box::new(cause.into()),
        }
    }

    /// The I/O error kind, if this is (or wraps) an I/O error.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::Io { cause, .. } | Error::Stream(cause) => Some(cause.kind()),
            Error::Layer { cause, .. } => cause.io_kind(),
            _ => None,
        }
    }

    /// The digests of the blobs this error says are wrong or failed to read, outermost
    /// first: a [`Layer`](Error::Layer)'s, and a mismatch's expected digest, also where one
    /// travelled inside an I/O error through a reader.
    pub fn blob_digests(&self) -> Vec<&Digest> {
        let mut out = Vec::new();
        let mut at = Some(self);
        while let Some(e) = at {
            at = match e {
                Error::Layer { digest, cause } => {
                    out.push(digest);
                    Some(&**cause)
                }
                Error::DigestMismatch { expected, .. } => {
                    out.push(expected);
                    None
                }
                Error::Io { cause, .. } | Error::Stream(cause) => cause
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<Error>()),
                _ => None,
            };
        }
        out
    }

    /// This error as an `io::Error` (kind `InvalidData` unless it is one), to travel
    /// through a `Read`; `From<io::Error>` takes it back out whole.
    pub fn into_io(self) -> std::io::Error {
        match self {
            Error::Stream(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// An `io::Error` carrying one of ours (see [`Error::into_io`]) gives it back; any other
/// becomes [`Error::Stream`], kind kept.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if e.get_ref()
            .is_some_and(<dyn std::error::Error + Send + Sync>::is::<Error>)
        {
            let inner = e.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        Error::Stream(e)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_kind_and_ours_come_back_whole() {
        let e = Error::from(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "pipe closed",
        ));
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::BrokenPipe));
        assert_eq!(e.to_string(), "pipe closed");

        let d = Digest::of(b"x");
        let mismatch = Error::DigestMismatch {
            what: "blob".into(),
            expected: d.clone(),
            found: Digest::of(b"y"),
        };
        let text = mismatch.to_string();
        // Through a reader and back: the same variant, the same text.
        let back = Error::from(mismatch.into_io());
        assert!(matches!(&back, Error::DigestMismatch { expected, .. } if *expected == d));
        assert_eq!(back.to_string(), text);

        let layer = Error::layer(&Digest::of(b"layer"), back.into_io());
        assert_eq!(
            layer.to_string(),
            format!("layer {}: {text}", Digest::of(b"layer"))
        );
        assert_eq!(layer.blob_digests(), [&Digest::of(b"layer"), &d]);
        let on_path = Error::io("/t/f", layer.into_io());
        assert_eq!(on_path.blob_digests(), [&Digest::of(b"layer"), &d]);
        assert_eq!(
            Error::SizeMismatch {
                what: "blob".into(),
                expected: 3,
                found: None
            }
            .to_string(),
            "blob: expected 3 bytes, found more"
        );
    }
}
