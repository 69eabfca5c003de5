//! Safe extraction: writing entries into a target directory so that nothing is ever
//! written outside it, whatever the entries say.
//!
//! Every path is resolved from the target's root file descriptor with `openat2` and
//! `RESOLVE_IN_ROOT`: symlinks met on the way (absolute ones, `..`, links a later layer
//! swapped in) are followed as if the target were `/`, so they stay inside. The last
//! component is never followed: existing non-directories are unlinked and recreated with
//! `O_CREAT|O_EXCL|O_NOFOLLOW`; metadata goes through the new file's descriptor or through
//! `*at` calls with `AT_SYMLINK_NOFOLLOW`. Hardlinks link a target resolved the same way,
//! and never change the target's metadata. Directory metadata is applied last, deepest
//! first, so a read-only directory still receives its children.
//!
//! A tree is written into a fresh, private staging directory ([`Staging`]) that is renamed
//! into place only when complete; a failed run removes it.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::entry::{Entry, Kind, join, parent};
use crate::error::IoContext;
use crate::{Error, Result};

/// What to restore and what to leave out.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// xattr names matching any of these globs (`*` wildcard) are not restored.
    pub xattrs_exclude: Vec<String>,
}

/// What was written and what could not be restored (reported once, not per file).
#[derive(Debug, Clone, Default)]
pub struct ExtractStats {
    /// Regular files written.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Hardlinks.
    pub hardlinks: u64,
    /// Device nodes and FIFOs.
    pub specials: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Entries whose owner could not be set (not root).
    pub owner_skipped: u64,
    /// Device nodes not created (not root).
    pub devices_skipped: u64,
    /// xattrs not restored (not permitted here, or excluded).
    pub xattrs_skipped: u64,
    /// setuid/setgid bits dropped because the owner could not be restored.
    pub setid_masked: u64,
}

impl ExtractStats {
    /// One line per kind of thing that could not be restored, for stderr.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.owner_skipped > 0 {
            w.push(format!(
                "{} entries keep your ownership: only root can restore owners",
                self.owner_skipped
            ));
        }
        if self.devices_skipped > 0 {
            w.push(format!(
                "{} device nodes not created: only root can create them",
                self.devices_skipped
            ));
        }
        if self.xattrs_skipped > 0 {
            w.push(format!(
                "{} extended attributes not restored (not permitted here, or excluded)",
                self.xattrs_skipped
            ));
        }
        if self.setid_masked > 0 {
            w.push(format!(
                "{} setuid/setgid bits dropped with their owner",
                self.setid_masked
            ));
        }
        w
    }
}

/// A private directory next to the final target, renamed into place by [`Staging::commit`]
/// and removed on drop otherwise.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    dest: PathBuf,
    done: bool,
}

/// Checks that `dest` can become a tree we write: it does not exist (its parent does) or is
/// an empty directory. Returns it absolute. Bad usage is [`Error::Usage`].
pub fn check_dest(dest: &Path) -> Result<PathBuf> {
    let dest = std::path::absolute(dest).at(dest)?;
    match fs::symlink_metadata(&dest) {
        Ok(m) if m.is_dir() => {
            if fs::read_dir(&dest).at(&dest)?.next().is_some() {
                return Err(Error::Usage(format!(
                    "{}: exists and is not empty; give a new or empty directory",
                    dest.display()
                )));
            }
        }
        Ok(_) => {
            return Err(Error::Usage(format!(
                "{}: exists and is not a directory",
                dest.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&dest, e)),
    }
    let parent = dest
        .parent()
        .ok_or_else(|| Error::Usage("cannot write to /".into()))?;
    if !parent.is_dir() {
        return Err(Error::Usage(format!(
            "{}: parent directory does not exist",
            dest.display()
        )));
    }
    Ok(dest)
}

impl Staging {
    /// Checks that `dest` is absent or an empty directory, and creates the staging directory
    /// beside it. Nothing is written to `dest` itself until commit.
    pub fn new(dest: &Path) -> Result<Staging> {
        let dest = check_dest(dest)?;
        let parent = dest
            .parent()
            .ok_or_else(|| Error::Usage("cannot write to /".into()))?;
        let name = dest
            .file_name()
            .map_or_else(|| "target".into(), |n| n.to_string_lossy().into_owned());
        let prefix = format!(".{name}.stackbuild-");
        remove_dead_staging(parent, &prefix);
        let path = parent.join(format!("{prefix}{}", std::process::id()));
        if path.exists() {
            // A leftover of an earlier run of ours with the same pid: ours to remove.
            remove_path(&path)?;
        }
        fs::create_dir(&path).at(&path)?;
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .at(&path)?;
        Ok(Staging {
            path,
            dest,
            done: false,
        })
    }

    /// The staging directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the staging directory to the target.
    pub fn commit(mut self) -> Result<PathBuf> {
        crate::failpoint::hit("staging-before-commit");
        if self.dest.is_dir() {
            // An empty directory: rename(2) replaces it atomically.
            fs::rename(&self.path, &self.dest).at(&self.dest)?;
        } else {
            fs::rename(&self.path, &self.dest).at(&self.dest)?;
        }
        self.done = true;
        Ok(self.dest.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: a leftover staging directory is named after us and removed by the
            // next run with our pid; it is never mistaken for the target.
            let _ = remove_path(&self.path);
        }
    }
}

/// Removes the staging directories `PARENT/PREFIXPID` of runs that were killed (their pid is
/// gone: the rule the store's temp files follow), so a rerun into the same target cleans up
/// after a killed one. Best effort: one that cannot be removed stays, and is never the target.
fn remove_dead_staging(parent: &Path, prefix: &str) {
    let Ok(items) = fs::read_dir(parent) else {
        return;
    };
    for item in items.flatten() {
        let name = item.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i32
            && !crate::oci::maint::alive(pid)
            && item.file_type().is_ok_and(|t| t.is_dir())
        {
            match remove_path(&item.path()) {
                Ok(()) => tracing::info!(
                    "removed {}, left by a killed run (pid {pid})",
                    item.path().display()
                ),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
}

/// Removes a directory tree without following symlinks, making read-only directories
/// writable on the way (as a non-root user could not remove their children otherwise).
pub fn remove_path(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Other(format!("{}: cannot remove", path.display())))?;
    let pfd = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(parent, e.into()))?;
    remove_at(&pfd, name.as_bytes()).map_err(|e| Error::io(path, e))
}

fn remove_at(parent: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let name = OsStr::from_bytes(name);
    let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(Into::into);
    }
    let dir = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if st.st_mode & 0o700 != 0o700 {
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700))?;
    }
    let mut names = Vec::new();
    for item in rustix::fs::Dir::read_from(&dir)? {
        let item = item?;
        let n = item.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_at(&dir, &n)?;
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(Into::into)
}

/// Writes entries into a directory, contained.
#[derive(Debug)]
pub struct Target {
    root: Arc<OwnedFd>,
    root_path: PathBuf,
    privileged: bool,
    /// Our effective uid and gid, asked once.
    me: (u32, u32),
    /// Whether what we create here gets our uid and gid (no setgid directory, no `grpid`
    /// mount giving it another group): then an entry owned by us needs no chown.
    born_mine: bool,
    /// The process umask, when known: a file created with a mode it does not touch needs
    /// no chmod.
    umask: Option<u32>,
    opts: ExtractOptions,
    /// What was written and skipped.
    pub stats: ExtractStats,
    dir_meta: BTreeMap<Vec<u8>, (Entry, bool)>,
    /// Directories open along the last parent resolved, shared with the caller (no dup per
    /// entry): each entry's path extends the one before it. Entries come in tree order, so
    /// the next parent is mostly one of these or a child of the last. Cleared by anything
    /// that may remove a directory.
    open_dirs: Vec<(Vec<u8>, Arc<OwnedFd>)>,
    buf: Vec<u8>,
}

fn errno_at(path: &[u8], e: Errno) -> Error {
    Error::Other(format!(
        "{}: {}",
        String::from_utf8_lossy(path),
        io::Error::from(e)
    ))
}

fn show(p: &[u8]) -> String {
    if p.is_empty() {
        "/".into()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

impl Target {
    /// Opens `dir` as the root: an empty directory this process made (a [`Staging`]
    /// path), so that every node in it is one we create.
    pub fn open(dir: &Path, opts: ExtractOptions) -> Result<Target> {
        let root = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(dir, e.into()))?;
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let st = rustix::fs::fstat(&root).map_err(|e| Error::io(dir, e.into()))?;
        // Directories get their final modes (setgid ones included) only in `finish`, so
        // while entries are written every directory inherits the root's group and no setgid.
        let born_mine = st.st_uid == me.0 && st.st_gid == me.1 && st.st_mode & 0o2000 == 0;
        // A default ACL on the root, inherited by every directory made below it, replaces
        // the umask in giving new files their modes.
        let default_acl = !matches!(
            rustix::fs::getxattr(dir, "system.posix_acl_default", &mut [0u8; 0][..]),
            Err(Errno::NODATA | Errno::NOTSUP)
        );
        Ok(Target {
            root: Arc::new(root),
            root_path: dir.to_path_buf(),
            privileged: rustix::process::geteuid().is_root(),
            me,
            born_mine,
            umask: umask().filter(|_| !default_acl),
            opts,
            stats: ExtractStats::default(),
            dir_meta: BTreeMap::new(),
            open_dirs: Vec::new(),
            buf: vec![0u8; 256 << 10],
        })
    }

    /// The root directory's path.
    pub fn path(&self) -> &Path {
        &self.root_path
    }

    fn resolve_flags() -> ResolveFlags {
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
    }

    fn open_in_root(&self, path: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let p: &OsStr = if path.is_empty() {
            OsStr::new(".")
        } else {
            OsStr::from_bytes(path)
        };
        loop {
            match rustix::fs::openat2(
                &self.root,
                p,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                Self::resolve_flags(),
            ) {
                Err(Errno::AGAIN | Errno::INTR) => {}
                r => return r,
            }
        }
    }

    /// The directory `dir` resolved in-root, created (with its parents) when missing. A
    /// non-directory in the way is replaced by a directory, as tar does.
    ///
    /// The usual case, a directory of plain directories, costs one `openat` per directory
    /// newly entered: from the deepest open ancestor, a component at a time, never following
    /// a symlink. Anything else (a symlink on the way, something missing) takes the general
    /// path: `openat2` with `RESOLVE_IN_ROOT` from the root.
    fn dir_fd(&mut self, dir: &[u8]) -> Result<Arc<OwnedFd>> {
        if dir.is_empty() {
            return Ok(Arc::clone(&self.root));
        }
        let keep = self
            .open_dirs
            .iter()
            .take_while(|(p, _)| p == dir || crate::entry::is_below(dir, p))
            .count();
        self.open_dirs.truncate(keep);
        let (mut done, mut fd) = match self.open_dirs.last() {
            Some((p, fd)) if p == dir => return Ok(Arc::clone(fd)),
            Some((p, fd)) => (p.len() + 1, Arc::clone(fd)),
            None => (0, Arc::clone(&self.root)),
        };
        while done < dir.len() {
            let end = dir[done..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(dir.len(), |i| done + i);
            let comp = &dir[done..end];
            if comp.is_empty() || comp == b"." || comp == b".." {
                return self.dir_fd_in_root(dir);
            }
            match rustix::fs::openat(
                &*fd,
                OsStr::from_bytes(comp),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(next) => fd = Arc::new(next),
                Err(_) => return self.dir_fd_in_root(dir),
            }
            self.open_dirs.push((dir[..end].to_vec(), Arc::clone(&fd)));
            done = end + 1;
        }
        Ok(fd)
    }

    /// [`Target::dir_fd`]'s general path; the result is kept as the only open directory
    /// (what lies below it is opened from it, never following a symlink).
    fn dir_fd_in_root(&mut self, dir: &[u8]) -> Result<Arc<OwnedFd>> {
        self.invalidate();
        let fd = Arc::new(
            match self.open_in_root(dir, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) => self.create_dirs(dir)?,
                Err(e) => return Err(errno_at(dir, e)),
            },
        );
        self.open_dirs.push((dir.to_vec(), Arc::clone(&fd)));
        Ok(fd)
    }

    fn create_dirs(&mut self, dir: &[u8]) -> Result<OwnedFd> {
        let mut cur = self
            .open_in_root(b"", OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| errno_at(b"", e))?;
        let mut prefix: Vec<u8> = Vec::new();
        for comp in dir.split(|&b| b == b'/') {
            prefix = join(&prefix, comp);
            match self.open_in_root(&prefix, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(Errno::NOENT | Errno::NOTDIR) => {}
                Err(e) => return Err(errno_at(&prefix, e)),
            }
            // `comp` inside `cur` is missing, or is something that does not resolve to a
            // directory (a file, a dangling symlink): replace it with a directory.
            let name = OsStr::from_bytes(comp);
            match rustix::fs::statat(&cur, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => remove_at(&cur, comp)
                    .map_err(|e| Error::Other(format!("{}: {e}", show(&prefix))))?,
                Err(Errno::NOENT) => {}
                Err(e) => return Err(errno_at(&prefix, e)),
            }
            rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755))
                .map_err(|e| errno_at(&prefix, e))?;
            self.stats.dirs += 1;
            cur = rustix::fs::openat(
                &cur,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| errno_at(&prefix, e))?;
            // mkdirat's mode went through the umask: 0755 exactly, as the planner gives the
            // parents it makes (an entry for this directory, if one comes, sets its own).
            rustix::fs::fchmod(&cur, Mode::from_raw_mode(0o755))
                .map_err(|e| errno_at(&prefix, e))?;
        }
        Ok(cur)
    }

    /// Forgets the open directories (after anything that may have removed one).
    fn invalidate(&mut self) {
        self.open_dirs.clear();
    }

    /// What is at `path` (not following a last-component symlink): `None` when nothing.
    fn kind_at(parent_fd: &OwnedFd, name: &[u8]) -> Result<Option<FileType>> {
        match rustix::fs::statat(
            parent_fd,
            OsStr::from_bytes(name),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(errno_at(name, e)),
        }
    }

    /// Makes a new node with `make`, which fails with `EEXIST` when the name is taken: then
    /// clears the name (as [`Target::clear`]) and makes it again. Trying first saves an
    /// `lstat` per entry in the usual case, an empty target.
    fn create<T>(
        &mut self,
        parent_fd: &OwnedFd,
        path: &[u8],
        name: &[u8],
        mut make: impl FnMut() -> rustix::io::Result<T>,
    ) -> Result<T> {
        match make() {
            Err(Errno::EXIST) => {
                self.clear(parent_fd, path, name, false)?;
                make().map_err(|err| errno_at(path, err))
            }
            other => other.map_err(|err| errno_at(path, err)),
        }
    }

    /// Clears `name` in `parent_fd` for a new entry; keeps an existing directory when
    /// `keep_dir` (a directory over a directory only changes attributes).
    fn clear(
        &mut self,
        parent_fd: &OwnedFd,
        path: &[u8],
        name: &[u8],
        keep_dir: bool,
    ) -> Result<bool> {
        match Self::kind_at(parent_fd, name)? {
            None => Ok(false),
            Some(FileType::Directory) if keep_dir => Ok(true),
            Some(ft) => {
                if ft == FileType::Directory {
                    self.drop_dir_meta_below(path);
                }
                remove_at(parent_fd, name)
                    .map_err(|e| Error::Other(format!("{}: {e}", show(path))))?;
                self.invalidate();
                Ok(false)
            }
        }
    }

    fn drop_dir_meta_below(&mut self, path: &[u8]) {
        self.dir_meta.remove(path);
        let below: Vec<Vec<u8>> = self
            .dir_meta
            .range(path.to_vec()..)
            .take_while(|(p, _)| p.starts_with(path))
            .filter(|(p, _)| crate::entry::is_below(p, path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            self.dir_meta.remove(&p);
        }
    }

    /// Writes one entry. `data` supplies a regular file's contents (exactly `e.size` bytes).
    /// Directories are created now; their metadata is applied by [`Target::finish`].
    pub fn put(&mut self, e: &Entry, data: &mut dyn Read) -> Result<()> {
        if e.path.is_empty() {
            if e.kind == Kind::Dir {
                self.dir_meta.insert(Vec::new(), (e.clone(), false));
                return Ok(());
            }
            return Err(Error::Other(format!(
                "a {:?} entry for the root directory",
                e.kind
            )));
        }
        let dir = parent(&e.path);
        let name = e.name();
        let pfd = self.dir_fd(dir)?;
        match e.kind {
            Kind::Dir => {
                let mkdir = || {
                    rustix::fs::mkdirat(&pfd, OsStr::from_bytes(name), Mode::from_raw_mode(0o755))
                };
                match mkdir() {
                    Ok(()) => self.stats.dirs += 1,
                    // A directory over a directory keeps it (and what is in it).
                    Err(Errno::EXIST) => {
                        if !self.clear(&pfd, &e.path, name, true)? {
                            mkdir().map_err(|err| errno_at(&e.path, err))?;
                            self.stats.dirs += 1;
                        }
                    }
                    Err(err) => return Err(errno_at(&e.path, err)),
                }
                self.dir_meta.insert(e.path.clone(), (e.clone(), false));
            }
            Kind::File => {
                let (chown, mode) = self.owner_mode(e);
                // Made with its final mode when the umask leaves it whole and no chown
                // would clear setuid/setgid bits afterwards; else 0600 and a chmod.
                let born_right = mode & 0o7000 == 0 && self.umask.is_some_and(|u| mode & u == 0);
                let create_mode = if born_right { mode } else { 0o600 };
                let fd = self.create(&pfd, &e.path, name, || {
                    rustix::fs::openat(
                        &*pfd,
                        OsStr::from_bytes(name),
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(create_mode),
                    )
                })?;
                let file = fs::File::from(fd);
                self.copy_sparse(&file, data, e)?;
                self.meta_fd(file.as_fd(), e, (chown, (!born_right).then_some(mode)))?;
                self.stats.files += 1;
                crate::progress::advance(e.size, 1);
            }
            Kind::Symlink => {
                self.create(&pfd, &e.path, name, || {
                    rustix::fs::symlinkat(
                        OsStr::from_bytes(&e.link),
                        &*pfd,
                        OsStr::from_bytes(name),
                    )
                })?;
                self.meta_at(&pfd, e)?;
                self.stats.symlinks += 1;
            }
            Kind::Hardlink => {
                let tdir = parent(&e.link);
                let tname = e.name_of_link();
                let Ok(tfd) = self.open_in_root(tdir, OFlags::PATH | OFlags::DIRECTORY) else {
                    return Err(Error::Other(format!(
                        "{}: hardlink target {} does not exist",
                        show(&e.path),
                        show(&e.link)
                    )));
                };
                match Self::kind_at(&tfd, tname)? {
                    None => {
                        return Err(Error::Other(format!(
                            "{}: hardlink target {} does not exist",
                            show(&e.path),
                            show(&e.link)
                        )));
                    }
                    Some(FileType::Directory) => {
                        return Err(Error::Other(format!(
                            "{}: hardlink target {} is a directory",
                            show(&e.path),
                            show(&e.link)
                        )));
                    }
                    Some(_) => {}
                }
                // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
                self.create(&pfd, &e.path, name, || {
                    rustix::fs::linkat(
                        &tfd,
                        OsStr::from_bytes(tname),
                        &*pfd,
                        OsStr::from_bytes(name),
                        AtFlags::empty(),
                    )
                })?;
                self.stats.hardlinks += 1;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                if e.kind != Kind::Fifo && !self.privileged {
                    self.stats.devices_skipped += 1;
                    return Ok(());
                }
                let ft = match e.kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(e.dev_major, e.dev_minor);
                self.create(&pfd, &e.path, name, || {
                    rustix::fs::mknodat(
                        &*pfd,
                        OsStr::from_bytes(name),
                        ft,
                        Mode::from_raw_mode(0o600),
                        dev,
                    )
                })?;
                self.meta_at(&pfd, e)?;
                self.stats.specials += 1;
            }
        }
        Ok(())
    }

    /// Removes `path` and what lies below it, without following symlinks in its last
    /// component (a whiteout). Missing paths are fine.
    pub fn remove(&mut self, path: &[u8]) -> Result<()> {
        if path.is_empty() {
            return Err(Error::Other("a whiteout for the root directory".into()));
        }
        let pfd = match self.open_in_root(parent(path), OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(e) => return Err(errno_at(path, e)),
        };
        self.drop_dir_meta_below(path);
        remove_at(&pfd, crate::entry::Entry::name_of(path))
            .map_err(|e| Error::Other(format!("{}: {e}", show(path))))?;
        self.invalidate();
        Ok(())
    }

    /// Removes everything below `dir` except the paths in `keep` (and their ancestors'
    /// other kept children): an opaque marker (with `keep` empty when it is applied before
    /// its layer's entries, as `apply::sequential` does).
    pub fn prune(&mut self, dir: &[u8], keep: &HashSet<Vec<u8>>) -> Result<()> {
        // Like `remove`, never through a symlink in the last component: a link has no
        // children to hide, and emptying the directory it points to is not what the
        // marker says (nor what the planner models).
        let fd = match self.open_in_root(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
        {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(()),
            Err(e) => return Err(errno_at(dir, e)),
        };
        let mut names = Vec::new();
        for item in rustix::fs::Dir::read_from(&fd).map_err(|e| errno_at(dir, e))? {
            let item = item.map_err(|e| errno_at(dir, e))?;
            let n = item.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push((n.to_vec(), item.file_type()));
            }
        }
        for (n, ft) in names {
            let p = join(dir, &n);
            if !keep.contains(&p) {
                self.drop_dir_meta_below(&p);
                remove_at(&fd, &n).map_err(|e| Error::Other(format!("{}: {e}", show(&p))))?;
                self.invalidate();
            } else if ft == FileType::Directory {
                self.prune(&p, keep)?;
            }
        }
        Ok(())
    }

    /// Makes sure the directory `e.path` exists (replacing a non-directory) and records its
    /// metadata for [`Target::finish`]. An `implicit` directory (one no entry declared) only
    /// gets mode 0755, as tar gives the parents it has to make.
    pub fn ensure_dir(&mut self, e: &Entry, implicit: bool) -> Result<()> {
        if !e.path.is_empty() {
            self.put(e, &mut io::empty())?;
        }
        self.dir_meta.insert(e.path.clone(), (e.clone(), implicit));
        Ok(())
    }

    /// Applies the recorded directory metadata, deepest first, and returns the statistics.
    pub fn finish(mut self) -> Result<ExtractStats> {
        let mut dirs = std::mem::take(&mut self.dir_meta);
        // A root no entry declared is a directory we had to make: 0755, as for parents,
        // rather than the staging directory's private 0700 (which only a one-layer image,
        // written without a plan, would otherwise keep).
        dirs.entry(Vec::new()).or_insert_with(|| {
            let mut root = Entry::new(Vec::new(), Kind::Dir);
            root.mode = 0o755;
            (root, true)
        });
        for (path, (e, implicit)) in dirs.iter().rev() {
            // A path that is no longer a directory here (a later symlink swapped in) is left
            // alone: O_NOFOLLOW refuses it.
            let fd = match self
                .open_in_root(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
            {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(err) => return Err(errno_at(path, err)),
            };
            if *implicit {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                    .map_err(|err| errno_at(path, err))?;
            } else {
                let (chown, mode) = self.owner_mode(e);
                self.meta_fd(fd.as_fd(), e, (chown, Some(mode)))?;
            }
        }
        Ok(self.stats)
    }

    #[allow(clippy::many_single_char_names)] // i, j, k, n: offsets in one buffer
    fn copy_sparse(&mut self, file: &fs::File, data: &mut dyn Read, e: &Entry) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let mut off: u64 = 0;
        // The end of the last block written: the file (new, empty) is that long.
        let mut written: u64 = 0;
        let mut buf = std::mem::take(&mut self.buf);
        let res = (|| {
            loop {
                let n = read_full(data, &mut buf)
                    .map_err(|err| Error::Other(format!("{}: {err}", show(&e.path))))?;
                if n == 0 {
                    break;
                }
                // Write only the 4 KiB blocks that hold data: zero blocks become holes.
                let mut i = 0;
                while i < n {
                    let end = (i + 4096).min(n);
                    if buf[i..end].iter().all(|&b| b == 0) {
                        i = end;
                        continue;
                    }
                    let mut j = end;
                    while j < n {
                        let k = (j + 4096).min(n);
                        if buf[j..k].iter().all(|&b| b == 0) {
                            break;
                        }
                        j = k;
                    }
                    file.write_all_at(&buf[i..j], off + i as u64)
                        .map_err(|err| {
                            Error::io(self.root_path.join(OsStr::from_bytes(&e.path)), err)
                        })?;
                    written = off + j as u64;
                    i = j;
                }
                off += n as u64;
            }
            if off != e.size {
                return Err(Error::Other(format!(
                    "{}: expected {} bytes of data, got {off}",
                    show(&e.path),
                    e.size
                )));
            }
            // Only a file that ends in a hole needs its length set.
            if written < off {
                file.set_len(off).map_err(|err| {
                    Error::io(self.root_path.join(OsStr::from_bytes(&e.path)), err)
                })?;
            }
            Ok(())
        })();
        self.buf = buf;
        self.stats.bytes += off;
        res
    }

    fn wants_xattr(&mut self, name: &[u8]) -> bool {
        let n = String::from_utf8_lossy(name);
        if self.opts.xattrs_exclude.iter().any(|g| glob_match(g, &n)) {
            self.stats.xattrs_skipped += 1;
            return false;
        }
        true
    }

    /// Whether to chown a node we made to `e`'s owner, and the mode to give it: as root,
    /// a chown unless the node already has that owner; as anyone else, no chown, and
    /// setuid/setgid bits dropped where the owner differs (counted once per entry).
    fn owner_mode(&mut self, e: &Entry) -> (bool, u32) {
        let me = self.me;
        let mine = e.uid == u64::from(me.0) && e.gid == u64::from(me.1);
        let mut mode = e.mode & 0o7777;
        if !self.privileged && !mine {
            self.stats.owner_skipped += 1;
            if mode & 0o6000 != 0 {
                mode &= !0o6000;
                self.stats.setid_masked += 1;
            }
        }
        (self.privileged && !(mine && self.born_mine), mode)
    }

    /// Owner, mode (unless `None`: the node was made with it), xattrs, times, through the
    /// entry's own descriptor; `owner_mode` is what [`Target::owner_mode`] said.
    fn meta_fd(
        &mut self,
        fd: std::os::fd::BorrowedFd<'_>,
        e: &Entry,
        (chown, mode): (bool, Option<u32>),
    ) -> Result<()> {
        let at = |err: Errno| errno_at(&e.path, err);
        if chown {
            rustix::fs::fchown(fd, Some(uid(e.uid)), Some(gid(e.gid))).map_err(at)?;
        }
        if let Some(mode) = mode {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(at)?;
        }
        for (k, v) in &e.xattrs {
            if !self.wants_xattr(k) {
                continue;
            }
            match rustix::fs::fsetxattr(fd, OsStr::from_bytes(k), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::PERM | Errno::NOTSUP | Errno::ACCESS) if !self.privileged => {
                    self.stats.xattrs_skipped += 1;
                }
                Err(err) => {
                    return Err(Error::Other(format!(
                        "{}: setting xattr {}: {}",
                        show(&e.path),
                        String::from_utf8_lossy(k),
                        io::Error::from(err)
                    )));
                }
            }
        }
        let t = timestamps(e);
        rustix::fs::futimens(fd, &t).map_err(at)
    }

    /// The same for entries without a usable descriptor (symlinks, devices, FIFOs), by
    /// name in their parent, never following the last component.
    fn meta_at(&mut self, pfd: &OwnedFd, e: &Entry) -> Result<()> {
        let at = |err: Errno| errno_at(&e.path, err);
        let name = OsStr::from_bytes(e.name());
        let (chown, mode) = self.owner_mode(e);
        if chown {
            rustix::fs::chownat(
                pfd,
                name,
                Some(uid(e.uid)),
                Some(gid(e.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(at)?;
        }
        if e.kind != Kind::Symlink {
            // chmodat follows symlinks, but this name is the node we just made in a private
            // staging directory: nothing can have swapped it.
            rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(at)?;
        }
        if !e.xattrs.is_empty() {
            let mut proc_path = format!("/proc/self/fd/{}/", pfd.as_raw_fd()).into_bytes();
            proc_path.extend_from_slice(e.name());
            for (k, v) in &e.xattrs {
                if !self.wants_xattr(k) {
                    continue;
                }
                match rustix::fs::lsetxattr(
                    OsStr::from_bytes(&proc_path),
                    OsStr::from_bytes(k),
                    v,
                    XattrFlags::empty(),
                ) {
                    Ok(()) => {}
                    Err(Errno::PERM | Errno::NOTSUP | Errno::ACCESS)
                        if !self.privileged || e.kind == Kind::Symlink =>
                    {
                        self.stats.xattrs_skipped += 1;
                    }
                    Err(err) => {
                        return Err(Error::Other(format!(
                            "{}: setting xattr {}: {}",
                            show(&e.path),
                            String::from_utf8_lossy(k),
                            io::Error::from(err)
                        )));
                    }
                }
            }
        }
        let t = timestamps(e);
        rustix::fs::utimensat(pfd, name, &t, AtFlags::SYMLINK_NOFOLLOW).map_err(at)
    }
}

impl Entry {
    /// The last component of a hardlink's target path.
    fn name_of_link(&self) -> &[u8] {
        Entry::name_of(&self.link)
    }

    /// The last component of `path`.
    pub fn name_of(path: &[u8]) -> &[u8] {
        match path.iter().rposition(|&b| b == b'/') {
            Some(i) => &path[i + 1..],
            None => path,
        }
    }
}

/// The process umask, from `/proc/self/status` (reading it with umask(2) would change it
/// for a moment, for every thread); `None` when it cannot be read.
fn umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

fn uid(u: u64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u as u32)
}

fn gid(g: u64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g as u32)
}

fn timestamps(e: &Entry) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: e.mtime.sec,
        tv_nsec: i64::from(e.mtime.nsec) as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Reads until `buf` is full or the stream ends; the bytes read.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A glob with `*` as the only wildcard.
pub fn glob_match(glob: &str, s: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == s;
    }
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(pos) = rest.find(part) else {
                return false;
            };
            rest = &rest[pos + part.len()..];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("security.*", "security.selinux"));
        assert!(glob_match("*", "user.x"));
        assert!(glob_match("user.*.x", "user.a.b.x"));
        assert!(!glob_match("trusted.*", "user.x"));
        assert!(glob_match("user.x", "user.x"));
    }
}
