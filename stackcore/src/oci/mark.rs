//! Which layouts are stores of ours, whatever path names them.
//!
//! A store's layer-index cache (`.stackbuild/cache`) is trusted: a cache entry says which
//! `diff_id` a layer was checked to decompress to, and a planner reads a layer's changes
//! from it instead of the layer. That trust is only sound for caches our own tools wrote.
//! A layout from elsewhere (an unpacked tarball, a directory another user prepared) can
//! carry a well-formed cache that lies, so it is read as a foreign layout: no cache read or
//! written, every `diff_id` hashed.
//!
//! The store a tool is given (`--store`, or the default store) is ours by the user's word.
//! Any other layout is ours when it carries this mark, `.stackbuild/store-id`:
//!
//! ```text
//! stackbuild store 1
//! DEV INO BTIME_SECONDS.BTIME_NANOSECONDS
//! ```
//!
//! the device, inode and birth time of the layout's own directory, written by the first
//! writer that opens it ([`crate::oci::Store::open_for_write`], which drops whatever cache
//! the directory held before it was marked: a cache from before the mark is not known to be
//! ours). The mark holds only where it was written: no tar, copy or unpacking can give
//! another directory the same inode and birth time (the kernel sets the birth time when
//! the directory is made, and nothing can set it afterwards), so copying a mark, or the
//! whole `.stackbuild/` of a real store, into a layout gains it nothing. Where the file
//! system keeps no birth time, no layout is ours by its mark. The store must also pass the
//! writers' ownership checks (owned by the caller, writable by nobody else), so that
//! nobody else could have put a cache entry into it.

use std::io;
use std::path::Path;

use super::Store;
use super::store::{check_writable_by_us_only, read_small, write_atomic};
use crate::Result;
use crate::error::IoContext;

const FIRST_LINE: &str = "stackbuild store 1";

/// The mark's file name in `.stackbuild/`.
pub const MARK_FILE: &str = "store-id";

/// What the mark must say for the directory `root`, if its file system records a birth time.
fn expected(root: &Path) -> Option<String> {
    use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
    let st = statx(
        CWD,
        root,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::INO | StatxFlags::BTIME,
    )
    .ok()?;
    if !StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::BTIME) {
        return None;
    }
    let dev = rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor);
    Some(format!(
        "{FIRST_LINE}\n{dev} {} {}.{:09}\n",
        st.stx_ino, st.stx_btime.tv_sec, st.stx_btime.tv_nsec
    ))
}

fn mark_path(store: &Store) -> std::path::PathBuf {
    store.root().join(".stackbuild").join(MARK_FILE)
}

/// Whether `store` is a store of ours: it carries a mark that fits its directory, and only
/// the caller can write to it.
pub fn is_ours(store: &Store) -> bool {
    let Some(want) = expected(store.root()) else {
        return false;
    };
    let Ok(have) = read_small(&mark_path(store)) else {
        return false;
    };
    if have != want.as_bytes() {
        return false;
    }
    let Ok(meta) = std::fs::symlink_metadata(store.root()) else {
        return false;
    };
    meta.is_dir() && check_writable_by_us_only(store.root(), &meta).is_ok()
}

/// Marks `store` as ours (a writer has it open): when it is not marked yet, or its mark
/// was written for another directory, its cache is dropped first.
pub(crate) fn mark(store: &Store) -> Result<()> {
    let Some(want) = expected(store.root()) else {
        return Ok(());
    };
    let path = mark_path(store);
    if read_small(&path).is_ok_and(|have| have == want.as_bytes()) {
        return Ok(());
    }
    let cache = store.cache_dir();
    match std::fs::remove_dir_all(&cache) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::Error::io(&cache, e)),
    }
    std::fs::create_dir_all(store.tmp_dir()).at(store.tmp_dir())?;
    write_atomic(&path, want.as_bytes(), &store.tmp_dir())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_written_store_is_ours_and_a_copy_of_its_mark_is_not() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| crate::Error::io("tempdir", e))?;
        let a = tmp.path().join("a");
        let store = Store::open_for_write(&a)?;
        if expected(store.root()).is_none() {
            return Ok(()); // this file system keeps no birth time: nothing is ours by mark
        }
        assert!(is_ours(&store));
        // The same files in another directory (what cp -a or an unpacked tar gives).
        let b = tmp.path().join("b");
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&a)
            .arg(&b)
            .status()
            .map_err(|e| crate::Error::io("cp", e))?;
        assert!(status.success());
        let copy = Store::open(&b)?;
        assert!(copy.root().join(".stackbuild").join(MARK_FILE).is_file());
        assert!(!is_ours(&copy));
        // A cache in a layout being marked is dropped: no one knows who wrote it.
        std::fs::create_dir_all(copy.cache_dir().join("index"))?;
        std::fs::write(copy.cache_dir().join("index").join("x"), b"forged")?;
        let copy = Store::open_for_write(&b)?;
        assert!(is_ours(&copy));
        assert!(!copy.cache_dir().exists());
        // Ours only while nobody else can write to it.
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o775))?;
        assert!(!is_ours(&store));
        Ok(())
    }
}
