//! One file-system entry with all the metadata a root tree needs, independent of where it
//! came from (a walked directory, a tar header, a layer index).

use std::fmt;

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (`link` is the target).
    Symlink,
    /// Another name for an earlier file (`link` is that file's path).
    Hardlink,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Named pipe.
    Fifo,
}

/// Seconds and nanoseconds since the epoch.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Mtime {
    /// Seconds (may be negative).
    pub sec: i64,
    /// Nanoseconds, < 1e9.
    pub nsec: u32,
}

/// An entry. `path` is relative to the tree's root, without leading `/` or `./` and without a
/// trailing `/`; the root itself is the empty path. Paths are bytes: Linux names need not be
/// UTF-8.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Relative path.
    pub path: Vec<u8>,
    /// Kind.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Modification time.
    pub mtime: Mtime,
    /// Content size (regular files only).
    pub size: u64,
    /// Symlink target, or hardlink target path.
    pub link: Vec<u8>,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes (POSIX ACLs and capabilities among them), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// An entry of `kind` at `path` with zeroed metadata.
    pub fn new(path: Vec<u8>, kind: Kind) -> Self {
        Entry {
            path,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: Mtime::default(),
            size: 0,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }

    /// The last path component.
    pub fn name(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.path[i + 1..],
            None => &self.path,
        }
    }

    /// Whether the metadata rsync's quick check looks at is equal (type, mode, owner, size,
    /// mtime in ns, xattrs, link target, device numbers). Paths are not compared.
    pub fn same_metadata(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.size == other.size
            && self.mtime == other.mtime
            && self.link == other.link
            && self.dev_major == other.dev_major
            && self.dev_minor == other.dev_minor
            && self.xattrs == other.xattrs
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} {:o} {}:{} size={} mtime={}.{:09}",
            String::from_utf8_lossy(&self.path),
            self.kind,
            self.mode,
            self.uid,
            self.gid,
            self.size,
            self.mtime.sec,
            self.mtime.nsec
        )?;
        if !self.link.is_empty() {
            write!(f, " -> {}", String::from_utf8_lossy(&self.link))?;
        }
        if matches!(self.kind, Kind::Char | Kind::Block) {
            write!(f, " dev={},{}", self.dev_major, self.dev_minor)?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " {}={}B", String::from_utf8_lossy(k), v.len())?;
        }
        Ok(())
    }
}

/// Joins a parent path and a name (`""` is the root).
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// The parent of a path (`""` for top-level names).
pub fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Whether `path` lies strictly below `dir`.
pub fn is_below(path: &[u8], dir: &[u8]) -> bool {
    if dir.is_empty() {
        return !path.is_empty();
    }
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}
