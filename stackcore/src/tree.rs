//! Walking a root tree: every entry with its metadata, in a deterministic order.
//!
//! The order is depth-first with the names of each directory sorted by their bytes
//! (GNU tar's `--sort=name`): parents come before their children, and the same tree always
//! gives the same sequence. Symlinks are never followed. The walk stays on the root's file
//! system: a mount point below the root is kept as an empty directory (rsync `-x`).
//!
//! Nothing is resolved by path below the root: each directory is opened relative to its
//! parent's descriptor (`openat` with `O_NOFOLLOW`), and checked with `fstat` to be the
//! directory its parent's listing saw (device and inode), so a directory swapped for a
//! symlink, or for another directory, while the walk runs is an error ("changed while being
//! stashed"), never a way out of the tree. [`Opener`] opens the walked files the same way.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::entry::{Entry, Kind, Mtime, join};
use crate::{Error, Result};

/// What to walk and what to leave out.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Top-level directories whose contents are left out (the directories are kept):
    /// `dev`, `proc`, `sys` for a stash, as the original plugin does.
    pub skip_contents: Vec<Vec<u8>>,
    /// Directories left out whole, by `(st_dev, st_ino)`: the store, when it is inside the
    /// root (a stash must not hold itself).
    pub leave_out: Vec<(u64, u64)>,
}

impl WalkOptions {
    /// What `stash` leaves out: the contents of `dev/`, `proc/` and `sys/`.
    pub fn stash() -> Self {
        WalkOptions {
            skip_contents: vec![b"dev".to_vec(), b"proc".to_vec(), b"sys".to_vec()],
            leave_out: Vec::new(),
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
    /// Paths of the directories left out whole ([`WalkOptions::leave_out`]).
    pub left_out: Vec<Vec<u8>>,
}

/// Walks `root`, calling `visit` for each entry, the root itself first (path `""`).
///
/// Directories are listed (names read and sorted, then every entry's `lstat`, symlink
/// target and extended attributes) by a few worker threads, the most recently found
/// directory first, so the one the walk needs next is usually ready; `visit` runs on the
/// calling thread in the order above, whatever the workers' timing. Hardlink groups follow
/// that order too: the first name met is the one the others point to.
pub fn walk(
    root: &Path,
    opts: &WalkOptions,
    visit: &mut dyn FnMut(Walked) -> Result<()>,
) -> Result<WalkStats> {
    let root_fd = open_root(root)?;
    let st = rustix::fs::fstat(&root_fd).map_err(|e| Error::io(root, e.into()))?;
    let ctx = Context {
        root,
        opts,
        root_dev: st.st_dev,
    };
    let shared = Shared::default();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let _guard = PanicGuard(&shared);
                work(&ctx, &shared);
            });
        }
        let mut consumer = Consumer {
            shared: &shared,
            links: HashMap::new(),
            stats: WalkStats::default(),
        };
        let result = (|| {
            let top = entry(
                root.to_path_buf(),
                Vec::new(),
                &st,
                Xattrs::Fd(root_fd.as_fd()),
                None,
            )?;
            let job = shared.submit(vec![JobDir {
                parent: Parent::Root(root_fd),
                name: Vec::new(),
                rel: Vec::new(),
                source: root.to_path_buf(),
                inode: (st.st_dev, st.st_ino),
            }])[0];
            consumer.visit(top, visit)?;
            consumer.dir(job, visit)
        })();
        shared.finish();
        result.map(|()| consumer.stats)
    })
}

/// Opens the root directory (following a symlink given as the root itself, as every reader
/// of a path does; nothing below it is followed).
pub fn open_root(root: &Path) -> Result<OwnedFd> {
    match rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::NOTDIR) => {
            Err(Error::Usage(format!("{}: not a directory", root.display())))
        }
        Err(e) => Err(Error::io(root, e.into())),
    }
}

/// The error for an entry that is not what the walk saw any more.
pub fn changed(source: &Path, what: &str) -> Error {
    Error::Other(format!(
        "{}: changed while being stashed ({what}); nothing was stored, stash again once the \
         tree is still",
        source.display()
    ))
}

/// Opens `name` in `dir` without following a symlink, without blocking (a FIFO or device
/// swapped in), and checks that it is still what the walk saw: same type, device and inode.
fn open_checked(
    dir: BorrowedFd<'_>,
    name: &[u8],
    source: &Path,
    want: FileType,
    inode: (u64, u64),
) -> Result<OwnedFd> {
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if want == FileType::Directory {
        flags |= OFlags::DIRECTORY;
    } else {
        flags |= OFlags::NOCTTY;
    }
    let fd = match rustix::fs::openat(dir, OsStr::from_bytes(name), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return Err(changed(source, "now a symlink or of another type"));
        }
        Err(rustix::io::Errno::NOENT) => return Err(changed(source, "removed")),
        Err(e) => return Err(Error::io(source, e.into())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(source, e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != want {
        return Err(changed(source, "now of another type"));
    }
    if (st.st_dev, st.st_ino) != inode {
        return Err(changed(source, "replaced by another file"));
    }
    Ok(fd)
}

/// Opens walked files below a root, each relative to its parent directory's descriptor, the
/// chain of directories from the root opened one component at a time and each checked
/// against the walk. Consecutive files of one directory share its descriptor.
#[derive(Debug)]
pub struct Opener<'a> {
    root: &'a Path,
    /// Directory path (relative to the root) → the walk's `(st_dev, st_ino)`.
    dirs: HashMap<&'a [u8], (u64, u64)>,
    /// The open directories from the root down: `(relative path, descriptor)`.
    chain: Vec<(Vec<u8>, OwnedFd)>,
}

impl<'a> Opener<'a> {
    /// Opens `root`, which must still be the directory the walk started from.
    pub fn new(root: &'a Path, walked: &'a [Walked]) -> Result<Self> {
        let dirs: HashMap<&[u8], (u64, u64)> = walked
            .iter()
            .filter(|w| w.entry.kind == Kind::Dir)
            .map(|w| (w.entry.path.as_slice(), w.inode))
            .collect();
        let fd = open_root(root)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(root, e.into()))?;
        if dirs.get(b"".as_slice()) != Some(&(st.st_dev, st.st_ino)) {
            return Err(changed(root, "the root was replaced"));
        }
        Ok(Opener {
            root,
            dirs,
            chain: vec![(Vec::new(), fd)],
        })
    }

    /// Opens the regular file `w` for reading.
    pub fn open(&mut self, w: &Walked) -> Result<std::fs::File> {
        crate::failpoint::hit_with("stash-before-open", &w.entry.path);
        let path = w.entry.path.as_slice();
        let dir = crate::entry::parent(path);
        // Keep the longest open prefix of `dir`, then open the rest one name at a time.
        let keep = self
            .chain
            .iter()
            .rposition(|(rel, _)| {
                rel.is_empty()
                    || (dir.starts_with(rel) && (dir.len() == rel.len() || dir[rel.len()] == b'/'))
            })
            .unwrap_or(0);
        self.chain.truncate(keep + 1);
        while self.chain.last().expect("the root stays").0.len() < dir.len() {
            let (top, fd) = self.chain.last().expect("the root stays");
            let start = if top.is_empty() { 0 } else { top.len() + 1 };
            let end = dir[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(dir.len(), |p| start + p);
            let rel = dir[..end].to_vec();
            let source = self.root.join(OsStr::from_bytes(&rel));
            let inode = *self
                .dirs
                .get(rel.as_slice())
                .ok_or_else(|| changed(&source, "not a directory of the walk"))?;
            let sub = open_checked(
                fd.as_fd(),
                &dir[start..end],
                &source,
                FileType::Directory,
                inode,
            )?;
            self.chain.push((rel, sub));
        }
        let fd = &self.chain.last().expect("the root stays").1;
        let file = open_checked(
            fd.as_fd(),
            w.entry.name(),
            &w.source,
            FileType::RegularFile,
            w.inode,
        )?;
        Ok(std::fs::File::from(file))
    }
}

/// At most this many threads list directories (more only queue for the same disk).
const MAX_WORKERS: usize = 4;

/// What every worker reads.
struct Context<'a> {
    root: &'a Path,
    opts: &'a WalkOptions,
    root_dev: u64,
}

/// The walk's shared state: directories waiting to be listed, and listings waiting to be
/// visited, under one lock (taken a few times per directory, not per entry).
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Directories to list, as a stack: the last pushed is listed first.
    jobs: Vec<Job>,
    /// Listings made and not yet visited, by job number.
    listed: HashMap<usize, Listing>,
    next_id: usize,
    /// The walk is over (done or failed): workers stop.
    finished: bool,
    /// A worker panicked: nobody waits for it.
    broken: bool,
}

struct Job {
    id: usize,
    dir: JobDir,
}

/// A directory to list: `name` in the open directory `parent`, which the walk saw as `inode`;
/// or, for the root, its descriptor (`open`), opened and checked already.
struct JobDir {
    parent: Parent,
    name: Vec<u8>,
    rel: Vec<u8>,
    source: PathBuf,
    inode: (u64, u64),
}

enum Parent {
    /// A listed directory, shared by the jobs of its subdirectories (the stream's own
    /// descriptor: no second open of the same directory).
    Dir(Arc<rustix::fs::Dir>),
    /// The root itself.
    Root(OwnedFd),
}

/// One directory's entries in name order, up to its first error.
struct Listing {
    items: Vec<Item>,
    error: Option<Error>,
    sockets: u64,
    mount_points: u64,
    left_out: Vec<Vec<u8>>,
}

struct Item {
    walked: Walked,
    /// The job listing this directory's contents, when the walk descends into it.
    sub: Option<usize>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues directories to list; returns their job numbers, in the same order.
    fn submit(&self, dirs: Vec<JobDir>) -> Vec<usize> {
        if dirs.is_empty() {
            return Vec::new();
        }
        let mut st = self.lock();
        let first = st.next_id;
        let ids: Vec<usize> = (first..first + dirs.len()).collect();
        st.next_id += dirs.len();
        // In reverse, so that the first subdirectory is listed first.
        for (id, dir) in ids.iter().zip(dirs).rev() {
            st.jobs.push(Job { id: *id, dir });
        }
        drop(st);
        self.changed.notify_all();
        ids
    }

    fn finish(&self) {
        self.lock().finished = true;
        self.changed.notify_all();
    }
}

/// Marks the walk broken when a worker unwinds, so the consumer does not wait forever for
/// a listing that will not come (the panic itself surfaces when the scope joins).
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().broken = true;
            self.0.changed.notify_all();
        }
    }
}

/// A worker: lists directories until the walk is over.
fn work(ctx: &Context<'_>, shared: &Shared) {
    // The working directory to go back to after each listing (a command this thread runs,
    // a failpoint's, starts there).
    let home = rustix::fs::open(
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let own_cwd = home.is_some() && private_cwd();
    loop {
        let job = {
            let mut st = shared.lock();
            loop {
                if st.finished {
                    return;
                }
                if let Some(job) = st.jobs.pop() {
                    break job;
                }
                st = shared
                    .changed
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let listing = list(ctx, shared, job.dir, own_cwd);
        if let (true, Some(home)) = (own_cwd, &home) {
            let _ = rustix::process::fchdir(home);
        }
        shared.lock().listed.insert(job.id, listing);
        shared.changed.notify_all();
    }
}

/// Lists one directory: every entry's metadata, and a job for each subdirectory to walk.
fn list(ctx: &Context<'_>, shared: &Shared, dir: JobDir, own_cwd: bool) -> Listing {
    let mut listing = Listing {
        items: Vec::new(),
        error: None,
        sockets: 0,
        mount_points: 0,
        left_out: Vec::new(),
    };
    let mut subdirs = Vec::new();
    if let Err(e) = list_into(ctx, dir, own_cwd, &mut listing, &mut subdirs) {
        listing.error = Some(e);
    }
    let (items, dirs): (Vec<usize>, Vec<_>) = subdirs.into_iter().unzip();
    for (item, id) in items.into_iter().zip(shared.submit(dirs)) {
        listing.items[item].sub = Some(id);
    }
    listing
}

fn list_into(
    ctx: &Context<'_>,
    job: JobDir,
    own_cwd: bool,
    listing: &mut Listing,
    subdirs: &mut Vec<(usize, JobDir)>,
) -> Result<()> {
    let dir = job.source.as_path();
    let rel = job.rel.as_slice();
    crate::failpoint::hit_with("walk-before-list", rel);
    // Relative to the parent's descriptor, no symlink followed, and still the directory the
    // parent's listing saw: a directory swapped for a link (or another directory) since is
    // an error, never a way out of the tree.
    let fd = match job.parent {
        Parent::Root(fd) => fd,
        Parent::Dir(parent) => open_checked(
            parent.fd().map_err(|e| Error::io(dir, e.into()))?,
            &job.name,
            dir,
            FileType::Directory,
            job.inode,
        )?,
    };
    let mut reader = rustix::fs::Dir::new(fd).map_err(|e| Error::io(dir, e.into()))?;
    let mut names: Vec<Vec<u8>> = Vec::new();
    while let Some(item) = reader.read() {
        let item = item.map_err(|e| Error::io(dir, e.into()))?;
        let name = item.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort_unstable();
    let reader = Arc::new(reader);
    let dirfd = reader.fd().map_err(|e| Error::io(dir, e.into()))?;
    // In this very directory (the descriptor, not its path): its entries' extended
    // attributes are then read by their bare names.
    let in_dir = own_cwd && rustix::process::fchdir(dirfd).is_ok();
    for name in names {
        let name = OsStr::from_bytes(&name);
        let source = dir.join(name);
        let path = join(rel, name.as_bytes());
        // The kernel cannot name it (lstat would fail with ENAMETOOLONG), and no tar
        // reader, ours included, accepts a longer path: say so plainly.
        // (+1: a directory's tar name ends in '/'.)
        if source.as_os_str().len() >= crate::tar::limits::PATH
            || path.len() + 1 > crate::tar::limits::PATH
        {
            return Err(Error::Other(format!(
                "{}/{}...: a path of {} bytes ({} from /) exceeds the {}-byte limit \
                 (PATH_MAX) of the kernel and of tar readers; it cannot be stashed",
                ctx.root.display(),
                String::from_utf8_lossy(&path[..path.len().min(60)]),
                path.len(),
                source.as_os_str().len(),
                crate::tar::limits::PATH
            )));
        }
        let st = match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Vanished between readdir and lstat (a live tree): nothing to stash.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(Error::io(&source, e.into())),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Socket {
            listing.sockets += 1;
            continue;
        }
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory
            && ctx.opts.leave_out.contains(&(st.st_dev, st.st_ino))
        {
            listing.left_out.push(path);
            continue;
        }
        let xattrs = if in_dir {
            Xattrs::Cwd(dirfd, name)
        } else {
            Xattrs::At(dirfd, name)
        };
        let walked = entry(source, path, &st, xattrs, Some(name))?;
        let descend = walked.entry.kind == Kind::Dir
            && !(rel.is_empty() && ctx.opts.skip_contents.iter().any(|s| s == name.as_bytes()))
            && {
                let same = st.st_dev == ctx.root_dev;
                if !same {
                    listing.mount_points += 1;
                }
                same
            };
        if descend {
            let sub = JobDir {
                parent: Parent::Dir(Arc::clone(&reader)),
                name: name.as_bytes().to_vec(),
                rel: walked.entry.path.clone(),
                source: walked.source.clone(),
                inode: walked.inode,
            };
            subdirs.push((listing.items.len(), sub));
        }
        listing.items.push(Item { walked, sub: None });
    }
    Ok(())
}

/// One entry from its `lstat`; `xattrs` names it for its extended attributes and, when it is
/// in a directory (`name`), for `readlinkat`.
fn entry(
    source: PathBuf,
    path: Vec<u8>,
    st: &rustix::fs::Stat,
    xattrs: Xattrs<'_>,
    name: Option<&OsStr>,
) -> Result<Walked> {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::CharacterDevice => Kind::Char,
        FileType::BlockDevice => Kind::Block,
        FileType::Fifo => Kind::Fifo,
        _ => Kind::File,
    };
    let mut e = Entry::new(path, kind);
    e.mode = st.st_mode & 0o7777;
    e.uid = u64::from(st.st_uid);
    e.gid = u64::from(st.st_gid);
    e.mtime = Mtime {
        sec: st.st_mtime,
        nsec: st.st_mtime_nsec as u32,
    };
    match kind {
        Kind::File => e.size = st.st_size as u64,
        Kind::Symlink => {
            let (Xattrs::At(dirfd, _) | Xattrs::Cwd(dirfd, _), Some(name)) = (&xattrs, name) else {
                return Err(changed(&source, "the root is a symlink"));
            };
            e.link = rustix::fs::readlinkat(dirfd, name, Vec::new())
                .map_err(|err| Error::io(&source, err.into()))?
                .into_bytes();
        }
        Kind::Char | Kind::Block => {
            e.dev_major = rustix::fs::major(st.st_rdev);
            e.dev_minor = rustix::fs::minor(st.st_rdev);
        }
        _ => {}
    }
    e.xattrs = match xattrs {
        Xattrs::Fd(fd) => read_xattrs_of(&source, &XattrTarget::Fd(fd))?,
        Xattrs::Cwd(_, name) => read_xattrs_of(&source, &XattrTarget::Path(Path::new(name)))?,
        Xattrs::At(dirfd, name) => match proc_fd_path(dirfd, name) {
            Some(p) => read_xattrs_of(&source, &XattrTarget::Path(&p))?,
            None => read_xattrs(&source)?,
        },
    };
    Ok(Walked {
        entry: e,
        source,
        inode: (st.st_dev, st.st_ino),
        nlink: st.st_nlink,
    })
}

/// Visits the listings in walk order, on the caller's thread.
struct Consumer<'a> {
    shared: &'a Shared,
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: WalkStats,
}

impl Consumer<'_> {
    fn dir(&mut self, job: usize, visit: &mut dyn FnMut(Walked) -> Result<()>) -> Result<()> {
        let listing = {
            let mut st = self.shared.lock();
            loop {
                if let Some(l) = st.listed.remove(&job) {
                    break l;
                }
                if st.broken {
                    return Err(Error::Other("walking the tree: a worker failed".into()));
                }
                st = self
                    .shared
                    .changed
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        self.stats.sockets += listing.sockets;
        self.stats.mount_points += listing.mount_points;
        self.stats.left_out.extend(listing.left_out);
        for item in listing.items {
            self.visit(item.walked, visit)?;
            if let Some(sub) = item.sub {
                self.dir(sub, visit)?;
            }
        }
        listing.error.map_or(Ok(()), Err)
    }

    /// Makes a second name of a hardlinked file a `Kind::Hardlink` to the first, and visits.
    fn visit(&mut self, mut w: Walked, visit: &mut dyn FnMut(Walked) -> Result<()>) -> Result<()> {
        if w.entry.kind != Kind::Dir && w.nlink > 1 {
            if let Some(first) = self.links.get(&w.inode) {
                w.entry.kind = Kind::Hardlink;
                w.entry.link.clone_from(first);
                w.entry.size = 0;
            } else {
                self.links.insert(w.inode, w.entry.path.clone());
            }
        }
        visit(w)
    }
}

/// Where an entry's extended attributes are read from.
#[derive(Clone, Copy)]
enum Xattrs<'a> {
    /// An open descriptor (the root).
    Fd(BorrowedFd<'a>),
    /// A name in an open directory.
    At(BorrowedFd<'a>, &'a OsStr),
    /// A name in an open directory that is also this thread's working directory.
    Cwd(BorrowedFd<'a>, &'a OsStr),
}

/// Gives the calling thread a working directory of its own (`unshare(CLONE_FS)`), so that a
/// walk worker can `fchdir` into the directory it lists and read its entries' extended
/// attributes by bare name: no `*xattrat` calls before Linux 6.13, and a full path could
/// lead through a directory swapped for a symlink since. Other threads' working directory
/// is untouched. `false` where it is not allowed (a seccomp filter): then
/// `/proc/self/fd/DIRFD/NAME` is used, which costs a few microseconds more per entry.
fn private_cwd() -> bool {
    // Deprecated only because CLONE_FILES could hide descriptors from other threads; this is
    // CLONE_FS alone (working directory, root, umask), which cannot.
    #[allow(deprecated)]
    let r = rustix::thread::unshare(rustix::thread::UnshareFlags::FS);
    r.is_ok()
}

/// `/proc/self/fd/DIRFD/NAME`: the kernel resolves `DIRFD` to the open directory itself, not
/// to its path, so the `l*xattr` calls read `NAME` in that very directory (and do not follow
/// it). `None` where `/proc` is not mounted; the caller then uses the full path.
fn proc_fd_path(dirfd: BorrowedFd<'_>, name: &OsStr) -> Option<PathBuf> {
    static PROC: OnceLock<bool> = OnceLock::new();
    if !*PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        return None;
    }
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dirfd.as_raw_fd()));
    p.push(name);
    Some(p)
}

enum XattrTarget<'a> {
    Path(&'a Path),
    Fd(BorrowedFd<'a>),
}

impl XattrTarget<'_> {
    fn list(&self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrTarget::Path(p) => rustix::fs::llistxattr(*p, buf),
            XattrTarget::Fd(fd) => rustix::fs::flistxattr(fd, buf),
        }
    }
    fn list_query(&self) -> rustix::io::Result<usize> {
        match self {
            XattrTarget::Path(p) => rustix::fs::llistxattr_query(*p),
            XattrTarget::Fd(fd) => rustix::fs::flistxattr_query(fd),
        }
    }
    fn get(&self, name: &OsStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrTarget::Path(p) => rustix::fs::lgetxattr(*p, name, buf),
            XattrTarget::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
        }
    }
    fn get_query(&self, name: &OsStr) -> rustix::io::Result<usize> {
        match self {
            XattrTarget::Path(p) => rustix::fs::lgetxattr_query(*p, name),
            XattrTarget::Fd(fd) => rustix::fs::fgetxattr_query(fd, name),
        }
    }
}

/// All extended attributes of `path` (not following a symlink), sorted by name.
pub fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    read_xattrs_of(path, &XattrTarget::Path(path))
}

/// All extended attributes of `target` (`path` names it in errors), sorted by name.
fn read_xattrs_of(path: &Path, target: &XattrTarget<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match target.list(&mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = target.list_query().map_err(|e| Error::io(path, e.into()))?;
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
            match target.get(OsStr::from_bytes(name), &mut value[..]) {
                Ok(n) => break Some(n),
                Err(rustix::io::Errno::RANGE) => {
                    let need = target
                        .get_query(OsStr::from_bytes(name))
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

/// Reads the regular file at `rel` (names below `root`, e.g. `["image", "config.xml"]`) the
/// way the walk reads: each name opened relative to its directory without following a
/// symlink or blocking. `None` when it is absent; an error when it is a symlink, not a
/// regular file, or larger than `max` bytes.
pub fn read_beneath(root: &Path, rel: &[&str], max: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let mut dir = open_root(root)?;
    let mut shown = root.to_path_buf();
    for (i, name) in rel.iter().enumerate() {
        shown.push(name);
        let last = i + 1 == rel.len();
        let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        if !last {
            flags |= OFlags::DIRECTORY;
        }
        let fd = match rustix::fs::openat(&dir, *name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                return Err(Error::Other(format!(
                    "{}: a symlink or not a directory; stash reads nothing through a link",
                    shown.display()
                )));
            }
            Err(e) => return Err(Error::io(&shown, e.into())),
        };
        dir = fd;
    }
    let st = rustix::fs::fstat(&dir).map_err(|e| Error::io(&shown, e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::Other(format!(
            "{}: not a regular file",
            shown.display()
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(dir)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(&shown, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::Other(format!(
            "{}: larger than {max} bytes",
            shown.display()
        )));
    }
    Ok(Some(bytes))
}
