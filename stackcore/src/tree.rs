//! Walking a root tree: every entry with its metadata, in a deterministic order.
//!
//! The order is depth-first with the names of each directory sorted by their bytes
//! (GNU tar's `--sort=name`): parents come before their children, and the same tree always
//! gives the same sequence. Symlinks are never followed. The walk stays on the root's file
//! system: a mount point below the root is kept as an empty directory (rsync `-x`).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::entry::{Entry, Kind, Mtime, join};
use crate::error::IoContext;
use crate::{Error, Result};

/// What to walk and what to leave out.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Top-level directories whose contents are left out (the directories are kept):
    /// `dev`, `proc`, `sys` for a stash, as the original plugin does.
    pub skip_contents: Vec<Vec<u8>>,
}

impl WalkOptions {
    /// What `stash` leaves out: the contents of `dev/`, `proc/` and `sys/`.
    pub fn stash() -> Self {
        WalkOptions {
            skip_contents: vec![b"dev".to_vec(), b"proc".to_vec(), b"sys".to_vec()],
        }
    }
}

/// One walked entry.
#[derive(Debug)]
pub struct Walked {
    /// The entry; a second name of a hardlinked file is `Kind::Hardlink` to the first.
    pub entry: Entry,
    /// Its absolute path on disk (to read a file's contents).
    pub source: PathBuf,
    /// `(st_dev, st_ino)`.
    pub inode: (u64, u64),
    /// Link count (> 1 for members of a hardlink group).
    pub nlink: u64,
}

/// Counts of what the walk skipped, to report once.
#[derive(Debug, Default, Clone)]
pub struct WalkStats {
    /// Sockets (never stashed).
    pub sockets: u64,
    /// Mount points kept as empty directories.
    pub mount_points: u64,
}

/// Walks `root`, calling `visit` for each entry, the root itself first (path `""`).
pub fn walk(
    root: &Path,
    opts: &WalkOptions,
    visit: &mut dyn FnMut(Walked) -> Result<()>,
) -> Result<WalkStats> {
    let meta = fs::symlink_metadata(root).at(root)?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!("{}: not a directory", root.display())));
    }
    let mut w = Walker {
        root,
        opts,
        root_dev: meta.dev(),
        links: std::collections::HashMap::new(),
        stats: WalkStats::default(),
    };
    let entry = w.entry(root, Vec::new(), &meta)?;
    visit(entry)?;
    w.dir(root, &[], visit)?;
    Ok(w.stats)
}

struct Walker<'a> {
    root: &'a Path,
    opts: &'a WalkOptions,
    root_dev: u64,
    links: std::collections::HashMap<(u64, u64), Vec<u8>>,
    stats: WalkStats,
}

impl Walker<'_> {
    fn dir(
        &mut self,
        dir: &Path,
        rel: &[u8],
        visit: &mut dyn FnMut(Walked) -> Result<()>,
    ) -> Result<()> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        for item in fs::read_dir(dir).at(dir)? {
            let item = item.at(dir)?;
            names.push(item.file_name().as_bytes().to_vec());
        }
        names.sort_unstable();
        for name in names {
            let source = dir.join(OsStr::from_bytes(&name));
            let path = join(rel, &name);
            // The kernel cannot name it (lstat would fail with ENAMETOOLONG), and no tar
            // reader, ours included, accepts a longer path: say so plainly.
            // (+1: a directory's tar name ends in '/'.)
            if source.as_os_str().len() >= crate::tar::limits::PATH
                || path.len() + 1 > crate::tar::limits::PATH
            {
                return Err(Error::Other(format!(
                    "{}/{}...: a path of {} bytes ({} from /) exceeds the {}-byte limit \
                     (PATH_MAX) of the kernel and of tar readers; it cannot be stashed",
                    self.root.display(),
                    String::from_utf8_lossy(&path[..path.len().min(60)]),
                    path.len(),
                    source.as_os_str().len(),
                    crate::tar::limits::PATH
                )));
            }
            let meta = match fs::symlink_metadata(&source) {
                Ok(m) => m,
                // Vanished between readdir and lstat (a live tree): nothing to stash.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&source, e)),
            };
            if meta.file_type().is_socket() {
                self.stats.sockets += 1;
                continue;
            }
            let walked = self.entry(&source, path.clone(), &meta)?;
            let descend = walked.entry.kind == Kind::Dir
                && !(rel.is_empty() && self.opts.skip_contents.contains(&name))
                && {
                    let same = meta.dev() == self.root_dev;
                    if !same {
                        self.stats.mount_points += 1;
                    }
                    same
                };
            visit(walked)?;
            if descend {
                self.dir(&source, &path, visit)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, source: &Path, path: Vec<u8>, meta: &fs::Metadata) -> Result<Walked> {
        let ft = meta.file_type();
        let mut kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::File
        };
        let mut e = Entry::new(path, kind);
        e.mode = meta.mode() & 0o7777;
        e.uid = u64::from(meta.uid());
        e.gid = u64::from(meta.gid());
        e.mtime = Mtime {
            sec: meta.mtime(),
            nsec: meta.mtime_nsec() as u32,
        };
        match kind {
            Kind::File => e.size = meta.len(),
            Kind::Symlink => {
                e.link = fs::read_link(source)
                    .at(source)?
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
            }
            Kind::Char | Kind::Block => {
                let rdev = meta.rdev();
                e.dev_major = rustix::fs::major(rdev);
                e.dev_minor = rustix::fs::minor(rdev);
            }
            _ => {}
        }
        e.xattrs = read_xattrs(source)?;
        let inode = (meta.dev(), meta.ino());
        if kind != Kind::Dir && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&inode) {
                kind = Kind::Hardlink;
                e.kind = kind;
                e.link.clone_from(first);
                e.size = 0;
            } else {
                self.links.insert(inode, e.path.clone());
            }
        }
        Ok(Walked {
            entry: e,
            source: source.to_path_buf(),
            inode,
            nlink: meta.nlink(),
        })
    }
}

/// All extended attributes of `path` (not following a symlink), sorted by name.
pub fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need =
                    rustix::fs::llistxattr_query(path).map_err(|e| Error::io(path, e.into()))?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM) => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(path, e.into())),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 256];
        let n = loop {
            match rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut value[..]) {
                Ok(n) => break Some(n),
                Err(rustix::io::Errno::RANGE) => {
                    let need = rustix::fs::lgetxattr_query(path, OsStr::from_bytes(name))
                        .map_err(|e| Error::io(path, e.into()))?;
                    value.resize(need.max(value.len() * 2), 0);
                }
                // Removed between list and get.
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(Error::io(path, e.into())),
            }
        };
        if let Some(n) = n {
            value.truncate(n);
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}
