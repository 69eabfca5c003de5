//! Where blobs came from or went: `HOST/REPO` lines per blob, in the store's cache.
//!
//! A push to another repository of the same registry asks it to mount the blob from one of
//! these instead of uploading it again. The cache is only a hint (a mount the registry refuses
//! falls back to an upload), so it is safe to delete, and failing to write it is a warning.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::oci::Store;

fn path(store: &Store, digest: &Digest) -> PathBuf {
    store
        .cache_dir()
        .join("registry-origins")
        .join(digest.hex())
}

/// The repositories (`HOST/REPO`) a blob is known to be in.
pub(crate) fn get(store: &Store, digest: &Digest) -> Vec<String> {
    // A missing or unreadable hint means "no known origin": the blob is uploaded instead.
    fs::read_to_string(path(store, digest))
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Notes that `digest` is in `repository`. Returns an error message on failure, for a warning.
pub(crate) fn add(store: &Store, digest: &Digest, repository: &str) -> Result<(), String> {
    if get(store, digest).iter().any(|r| r == repository) {
        return Ok(());
    }
    let p = path(store, digest);
    let write = || -> std::io::Result<()> {
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&p)?;
        writeln!(f, "{repository}")
    };
    write().map_err(|e| format!("{}: {e}", p.display()))
}
