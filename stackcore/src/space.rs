//! Free-space checks: refuse a tree that cannot fit before writing any of it.
//!
//! A run that fills the disk fails anyway, and removes its staging directory; checking first
//! turns a failure after minutes of writing (and a full file system meanwhile, for everyone
//! else on it) into one clear line before anything is written.

use std::path::Path;

use crate::entry::{Entry, Kind};
use crate::{Error, Result};

/// What a tree needs on disk: file data rounded up to whole blocks, and one inode per entry
/// that is not a second name of a hardlinked file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    /// Bytes.
    pub bytes: u64,
    /// Inodes.
    pub inodes: u64,
    /// Regular files.
    pub files: u64,
}

impl Need {
    /// The need of `entries` on a file system with blocks of `block` bytes.
    pub fn of<'a>(entries: impl Iterator<Item = &'a Entry>, block: u64) -> Need {
        let block = block.max(1);
        let mut need = Need::default();
        for e in entries {
            match e.kind {
                Kind::Hardlink => continue,
                Kind::File => {
                    need.files += 1;
                    need.bytes = need.bytes.saturating_add(e.size.div_ceil(block) * block);
                }
                _ => {}
            }
            need.inodes += 1;
        }
        need
    }
}

/// Fails, saying how much is needed and how much is free, when `entries` cannot fit on the
/// file system holding `dir`. Root may use the blocks reserved for it; others may not.
pub fn check_room<'a>(dir: &Path, entries: impl Iterator<Item = &'a Entry>) -> Result<()> {
    let st = rustix::fs::statvfs(dir).map_err(|e| Error::io(dir, e.into()))?;
    let unit = st.f_frsize.max(1);
    let need = Need::of(entries, st.f_bsize.max(unit));
    let root = rustix::process::geteuid().is_root();
    let free_blocks = if root { st.f_bfree } else { st.f_bavail };
    let free = free_blocks.saturating_mul(unit);
    if need.bytes > free {
        return Err(Error::Other(format!(
            "{}: not enough free space: the tree needs {} bytes ({} files) and its file \
             system has {} bytes free; nothing was written (free some space, or write \
             elsewhere)",
            dir.display(),
            need.bytes,
            need.files,
            free
        )));
    }
    // Some file systems (btrfs) report no inode counts at all: nothing to check there.
    let free_inodes = if root { st.f_ffree } else { st.f_favail };
    if st.f_files > 0 && need.inodes > free_inodes {
        return Err(Error::Other(format!(
            "{}: not enough free inodes: the tree has {} entries and its file system has {} \
             inodes free; nothing was written",
            dir.display(),
            need.inodes,
            free_inodes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_rounds_to_blocks_and_counts_links_once() {
        let mut f = Entry::new(b"a".to_vec(), Kind::File);
        f.size = 4097;
        let mut empty = Entry::new(b"e".to_vec(), Kind::File);
        empty.size = 0;
        let mut link = Entry::new(b"b".to_vec(), Kind::Hardlink);
        link.link = b"a".to_vec();
        let dir = Entry::new(b"d".to_vec(), Kind::Dir);
        let need = Need::of([&f, &empty, &link, &dir].into_iter(), 4096);
        assert_eq!(
            need,
            Need {
                bytes: 8192,
                inodes: 3,
                files: 2
            }
        );
    }

    #[test]
    fn an_impossible_tree_is_refused_before_writing() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut f = Entry::new(b"huge".to_vec(), Kind::File);
        f.size = u64::MAX / 2;
        let err = check_room(tmp.path(), std::iter::once(&f))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not enough free space"), "{err}");
        check_room(tmp.path(), std::iter::empty())?;
        Ok(())
    }
}
