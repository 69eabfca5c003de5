//! The tar codec: PAX headers out, PAX/ustar/GNU headers in.
//!
//! We do not use a tar crate's reader or extraction: this module turns
//! [`Entry`](crate::entry::Entry) values into header bytes and header bytes back into
//! entries, strictly, refusing the parser differentials that hostile layers use (PAX `size`
//! disagreeing with the header, unknown types, sparse entries, trailing garbage). The
//! `tar` crate's [`tar::Header`] is the typed view of each 512-byte block, both ways;
//! numbers are parsed by our own strict parser, PAX records by our own length-based one
//! (`tar::PaxExtensions` splits records at newlines, which binary xattr values contain),
//! and the checksum is written as GNU tar writes it, so layer bytes stay as they were.

mod read;
mod write;

pub use read::{Header, TarReader, normalize_path};
pub use write::{Builder, END_OF_ARCHIVE, check_limits, padding, write_header};

/// Limits on what a header may carry; beyond them the input is refused with a clear error.
pub mod limits {
    /// Longest path (Linux `PATH_MAX`).
    pub const PATH: usize = 4096;
    /// Longest path component (`NAME_MAX`).
    pub const NAME: usize = 255;
    /// Largest PAX extended header (all records of one entry).
    pub const PAX_HEADER: u64 = 1 << 20;
    /// Largest xattr value the kernel accepts (`XATTR_SIZE_MAX`).
    pub const XATTR_VALUE: usize = 64 << 10;
}

/// A whiteout marker's name prefix (OCI image-spec layer.md).
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The opaque-directory marker's name.
pub const OPAQUE: &[u8] = b".wh..wh..opq";
