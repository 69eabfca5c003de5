//! The OCI image-layout store: `oci-layout`, `index.json`, `blobs/sha256/`.
//!
//! Writers stream a blob into a temp file (hashing as they go), fsync it and rename it to its
//! digest; `index.json` is replaced the same way under an exclusive lock, re-read under that
//! lock, so a crash or a second writer never leaves a store that reads wrong.
//! Our own bookkeeping (locks, temp files, caches) lives in `.stackbuild/`, which other
//! tools ignore.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;

use super::types::{Descriptor, Index, OciLayout, REF_NAME};
use crate::digest::{Digest, HashWriter, VerifyReader};
use crate::error::IoContext;
use crate::{Error, Result};

/// JSON blobs (manifests, configs, indexes) larger than this are refused: a real one is a few KiB.
pub const MAX_JSON_BLOB: u64 = 4 << 20;

/// Our directory inside the layout.
const OWN_DIR: &str = ".stackbuild";

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// A writer's shared hold on the `writers` lock, for as long as any clone of the store
    /// lives. `stash --gc` takes that lock exclusively, so it never runs while a writer has
    /// blobs in the store that no manifest references yet (a layer written, its manifest
    /// not yet tagged): gc would take them for garbage.
    writer: Option<Arc<Lock>>,
}

/// The lock every writer holds shared and gc holds exclusively.
pub const WRITERS_LOCK: &str = "writers";

/// Where the store is when `--store` is not given: `$KIWI_STASH_HOME`, else
/// `/var/lib/kiwi-stash` for root, else `$XDG_DATA_HOME/kiwi-stash`
/// (`~/.local/share/kiwi-stash`).
pub fn default_store_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KIWI_STASH_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/kiwi-stash");
    }
    if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("kiwi-stash");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/kiwi-stash")
}

impl Store {
    /// Opens an existing layout for reading.
    pub fn open(path: &Path) -> Result<Store> {
        let root = absolute(path)?;
        if fs::symlink_metadata(&root).is_ok_and(|m| m.file_type().is_symlink()) {
            store_dir_meta(&root)?; // the same words as a writer's for a link to elsewhere
        }
        let layout = root.join("oci-layout");
        let text = read_small(&layout).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::Other(format!(
                    "{}: not an OCI image layout (no oci-layout file)",
                    root.display()
                ))
            } else {
                Error::io(&layout, e)
            }
        })?;
        let parsed: OciLayout = serde_json::from_slice(&text)
            .map_err(|e| Error::Other(format!("{}: bad JSON: {e}", layout.display())))?;
        if !parsed.image_layout_version.starts_with("1.") {
            return Err(Error::Other(format!(
                "{}: image layout version {} not supported",
                layout.display(),
                parsed.image_layout_version
            )));
        }
        Ok(Store { root, writer: None })
    }

    /// Opens a layout for writing, creating it when `path` is absent or an empty directory.
    /// An existing directory that is not a layout is refused and left untouched, as is one
    /// that the caller does not own or that others can write to.
    pub fn open_for_write(path: &Path) -> Result<Store> {
        let root = absolute(path)?;
        match fs::symlink_metadata(&root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = root.parent() {
                    fs::create_dir_all(parent).at(parent)?;
                }
                match fs::create_dir(&root) {
                    Ok(()) => {
                        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).at(&root)?;
                    }
                    // Another writer made it first: it is checked like any existing store.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io(&root, e)),
                }
            }
            Err(e) => return Err(Error::io(&root, e)),
            Ok(_) => {}
        }
        let meta = store_dir_meta(&root)?;
        check_writable_by_us_only(&root, &meta)?;
        if !root.join("oci-layout").exists() {
            if !only_an_unfinished_layout(&root)? {
                return Err(Error::Usage(format!(
                    "store {}: exists and is not an OCI image layout; refusing to write into it \
                     (give --store an empty or new directory)",
                    root.display()
                )));
            }
            // Two writers may find the same new directory: one makes the layout, under the
            // store lock, and the other finds it made (it must never write a fresh, empty
            // index.json over the first one's stash).
            let bare = Store {
                root: root.clone(),
                writer: None,
            };
            let _lock = bare.lock("store")?;
            if !root.join("oci-layout").exists() {
                init_layout(&root)?;
            }
        }
        let mut store = Store::open(&root)?;
        fs::create_dir_all(store.tmp_dir()).at(store.tmp_dir())?;
        store.writer = Some(Arc::new(store.lock_shared(WRITERS_LOCK)?));
        // What a killed writer left behind; the next writer tidies it up.
        super::maint::clean_stale_temps(&store)?;
        // A store we write is ours: `oci:` refs to it read its caches (see `mark.rs`).
        super::mark::mark(&store)?;
        Ok(store)
    }

    /// Opens an existing layout for maintenance (`--remove`, `--gc`): like a writer, it must
    /// belong to the caller and be writable by nobody else; unlike one, it is never created
    /// and holds no `writers` lock (gc takes that exclusively itself).
    pub fn open_for_maintenance(path: &Path) -> Result<Store> {
        let root = absolute(path)?;
        if let Err(e) = fs::symlink_metadata(&root) {
            return Err(if e.kind() == io::ErrorKind::NotFound {
                Error::Usage(format!("store {}: does not exist", root.display()))
            } else {
                Error::io(&root, e)
            });
        }
        let meta = store_dir_meta(&root)?;
        let store = Store::open(&root)?;
        check_writable_by_us_only(&root, &meta)?;
        fs::create_dir_all(store.tmp_dir()).at(store.tmp_dir())?;
        Ok(store)
    }

    /// The layout's directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a blob.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the store has a blob.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob; the reader fails at its end unless digest and size match `desc`.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<VerifyReader<File>> {
        let path = self.blob_path(&desc.digest);
        let file = open_regular(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound {
                    what: "blob",
                    name: desc.digest.to_string(),
                    place: Some(self.root.clone()),
                }
            } else {
                Error::io(&path, e)
            }
        })?;
        let what = format!("blob {}", desc.digest);
        Ok(VerifyReader::new(
            file,
            desc.digest.clone(),
            Some(desc.size),
            what,
        ))
    }

    /// Reads and parses a JSON blob, verified.
    pub fn read_json<T: DeserializeOwned>(&self, desc: &Descriptor) -> Result<T> {
        read_json_blob(self.open_blob(desc)?, desc)
    }

    /// A writer for a new blob.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::new(self)
    }

    /// Writes `bytes` as a blob and returns its digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes).at(&w.tmp)?;
        let (d, _) = w.commit()?;
        Ok(d)
    }

    /// Reads `index.json`.
    pub fn read_index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let bytes = read_small(&path).at(&path)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Other(format!("{}: bad JSON: {e}", path.display())))
    }

    /// The manifest descriptor tagged `name` (`NAME:TAG`), if any.
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .find(|d| d.ref_name() == Some(name)))
    }

    /// Points `name` (`NAME:TAG`) at `manifest`, replacing what it pointed at. Takes the store
    /// lock, re-reads `index.json` under it, and replaces the file atomically.
    pub fn set_ref(&self, name: &str, manifest: &Descriptor) -> Result<()> {
        self.update_index(|index| {
            let mut desc = manifest.clone();
            desc.annotations
                .insert(REF_NAME.to_owned(), name.to_owned());
            index.manifests.retain(|d| d.ref_name() != Some(name));
            index.manifests.push(desc);
        })
    }

    /// Removes `name` from the index; returns whether it was there.
    pub fn remove_ref(&self, name: &str) -> Result<bool> {
        let mut found = false;
        self.update_index(|index| {
            let before = index.manifests.len();
            index.manifests.retain(|d| d.ref_name() != Some(name));
            found = before != index.manifests.len();
        })?;
        Ok(found)
    }

    /// Runs `f` on the index under the store lock and writes the result atomically.
    pub fn update_index(&self, f: impl FnOnce(&mut Index)) -> Result<()> {
        let _lock = self.lock("store")?;
        let mut index = self.read_index()?;
        f(&mut index);
        index
            .manifests
            .sort_by(|a, b| a.ref_name().cmp(&b.ref_name()));
        let mut bytes = serde_json::to_vec(&index).expect("index serialises");
        bytes.push(b'\n');
        crate::failpoint::hit("index-before-rename");
        write_atomic(&self.root.join("index.json"), &bytes, &self.tmp_dir())?;
        crate::failpoint::hit("index-after-rename");
        Ok(())
    }

    /// Takes the exclusive lock called `name` (`store` for the index, a stash name for that
    /// stash); it is released when the guard drops.
    pub fn lock(&self, name: &str) -> Result<Lock> {
        let (file, path) = self.lock_file(name)?;
        file.lock().at(&path)?;
        Ok(Lock { _file: file })
    }

    /// Takes the lock called `name` shared (many holders at once, none exclusive).
    pub fn lock_shared(&self, name: &str) -> Result<Lock> {
        let (file, path) = self.lock_file(name)?;
        file.lock_shared().at(&path)?;
        Ok(Lock { _file: file })
    }

    /// Takes the exclusive lock called `name` if nobody holds it; `None` if someone does.
    pub fn try_lock(&self, name: &str) -> Result<Option<Lock>> {
        let (file, path) = self.lock_file(name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    /// The path of the lock file called `name` (tests wait on it through `/proc/locks`).
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.root
            .join(OWN_DIR)
            .join("locks")
            .join(format!("{name}.lock"))
    }

    fn lock_file(&self, name: &str) -> Result<(File, PathBuf)> {
        let path = self.lock_path(name);
        let dir = path.parent().expect("lock dir");
        fs::create_dir_all(dir).at(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .at(&path)?;
        Ok((file, path))
    }

    /// Where temp files go (same file system as the blobs, so rename works).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(OWN_DIR).join("tmp")
    }

    /// Where caches go: safe to delete.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join(OWN_DIR).join("cache")
    }
}

/// Opens `path` for reading if it is a regular file. In a layout someone else made, a
/// FIFO would block the open or the read forever and a device (`/dev/zero` behind a
/// symlink) would never end; `O_NONBLOCK` keeps the open itself from waiting.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Reads a small layout file (`oci-layout`, `index.json`): a regular file of at most
/// [`MAX_JSON_BLOB`] bytes.
pub(crate) fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_regular(path)?
        .take(MAX_JSON_BLOB + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_JSON_BLOB {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_JSON_BLOB} bytes"),
        ));
    }
    Ok(bytes)
}

/// Parses a verified JSON blob; refuses oversized ones.
pub fn read_json_blob<T: DeserializeOwned>(reader: impl Read, desc: &Descriptor) -> Result<T> {
    if desc.size > MAX_JSON_BLOB {
        return Err(Error::Other(format!(
            "blob {}: {} bytes is too large for a {}",
            desc.digest, desc.size, desc.media_type
        )));
    }
    let mut bytes = Vec::with_capacity(desc.size as usize);
    let mut reader = reader;
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Other(format!("reading {}: {e}", desc.digest)))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Other(format!(
            "blob {} ({}): bad JSON: {e}",
            desc.digest, desc.media_type
        ))
    })
}

/// An exclusive lock held until drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// A blob being written: a temp file that becomes `blobs/sha256/<digest>` on [`commit`],
/// and disappears on drop otherwise.
///
/// [`commit`]: BlobWriter::commit
#[derive(Debug)]
pub struct BlobWriter {
    out: Option<HashWriter<BufWriter<File>>>,
    tmp: PathBuf,
    blobs: PathBuf,
}

impl BlobWriter {
    fn new(store: &Store) -> Result<Self> {
        let (file, tmp) = temp_file(&store.tmp_dir(), "blob")?;
        Ok(BlobWriter {
            out: Some(HashWriter::new(BufWriter::with_capacity(1 << 20, file))),
            tmp,
            blobs: store.root.join("blobs/sha256"),
        })
    }

    /// Flushes, fsyncs and renames the blob into place; returns its digest and size.
    pub fn commit(mut self) -> Result<(Digest, u64)> {
        let out = self.out.take().expect("not committed twice");
        let (buf, digest, size) = out.finish();
        let file = buf
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().at(&self.tmp)?;
        drop(file);
        crate::failpoint::hit("blob-before-rename");
        let dest = self.blobs.join(digest.hex());
        fs::rename(&self.tmp, &dest).at(&dest)?;
        sync_dir(&self.blobs)?;
        crate::failpoint::hit("blob-after-rename");
        Ok((digest, size))
    }

    /// Like [`commit`](BlobWriter::commit), but only when the content has digest `want` and
    /// `want_size` bytes; otherwise the temp file is dropped and nothing enters the store.
    pub fn commit_verified(self, want: &Digest, want_size: u64) -> Result<()> {
        let out = self.out.as_ref().expect("not committed twice");
        let (digest, size) = out.peek();
        if size != want_size {
            return Err(Error::SizeMismatch {
                what: format!("blob {want}"),
                expected: want_size,
                found: Some(size),
            });
        }
        if &digest != want {
            return Err(Error::DigestMismatch {
                what: format!("blob {want} (damaged or tampered with in transit)"),
                expected: want.clone(),
                found: digest,
            });
        }
        self.commit().map(|_| ())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("writer open").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("writer open").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            // Not committed: the temp file is garbage. Failing to remove it leaves a file
            // that `stash --gc` removes later, so the error is safe to ignore.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a new temp file `DIR/PREFIX-PID-N` (`O_EXCL`), mode 0644. The pid in the name is
/// how a later writer or gc tells a killed run's leftovers from a live run's files (see
/// [`temp_owner`]); that crash-cleanup protocol is why the store makes its own temporary
/// files rather than `tempfile`'s randomly named ones (output files outside a store go
/// through [`crate::atomic`]).
pub fn temp_file(dir: &Path, prefix: &str) -> Result<(File, PathBuf)> {
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{prefix}-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
}

/// The pid that made temp file `name` (`PREFIX-PID-N`), if the name has that shape.
pub fn temp_owner(name: &str) -> Option<i32> {
    let mut parts = name.rsplitn(3, '-');
    let n = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// Writes `bytes` to `path` through a fsynced temp file in `tmp_dir` and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8], tmp_dir: &Path) -> Result<()> {
    fs::create_dir_all(tmp_dir).at(tmp_dir)?;
    let (mut file, tmp) = temp_file(tmp_dir, "write")?;
    let res = (|| {
        file.write_all(bytes).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        fs::rename(&tmp, path).at(path)?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp); // best effort; gc removes what is left
    }
    res
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// The `index.json` of a new layout.
const EMPTY_INDEX: &[u8] =
    b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}\n";

/// Whether a directory without `oci-layout` is empty, or holds only what a writer makes
/// before it (our own directory; empty `blobs/sha256`; an empty `index.json`), so making
/// the layout there loses nothing: a new store, or one whose first writer was killed.
fn only_an_unfinished_layout(root: &Path) -> Result<bool> {
    for item in fs::read_dir(root).at(root)? {
        let item = item.at(root)?;
        let ok = match item.file_name().to_str() {
            Some(OWN_DIR) => true,
            Some("blobs") => {
                let sha = item.path().join("sha256");
                fs::read_dir(&sha).map_or_else(
                    |e| e.kind() == io::ErrorKind::NotFound,
                    |mut d| d.next().is_none(),
                ) && fs::read_dir(item.path())
                    .at(item.path())?
                    .all(|e| e.is_ok_and(|e| e.file_name() == "sha256"))
            }
            Some("index.json") => fs::read(item.path()).is_ok_and(|b| b == EMPTY_INDEX),
            _ => false,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn init_layout(root: &Path) -> Result<()> {
    let blobs = root.join("blobs/sha256");
    fs::create_dir_all(&blobs).at(&blobs)?;
    let tmp = root.join(OWN_DIR).join("tmp");
    write_atomic(&root.join("index.json"), EMPTY_INDEX, &tmp)?;
    // oci-layout last: its presence is what makes the directory a layout.
    write_atomic(
        &root.join("oci-layout"),
        b"{\"imageLayoutVersion\":\"1.0.0\"}\n",
        &tmp,
    )
}

pub(crate) fn check_writable_by_us_only(root: &Path, meta: &fs::Metadata) -> Result<()> {
    check_owned(root, root, meta)?;
    // The directories whose entries decide what the store holds: someone who can write
    // into one of them can swap a blob or the index as surely as through the top.
    for sub in ["blobs", "blobs/sha256", OWN_DIR] {
        let path = root.join(sub);
        match fs::symlink_metadata(&path) {
            Ok(m) => check_owned(root, &path, &m)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(())
}

fn check_owned(root: &Path, path: &Path, meta: &fs::Metadata) -> Result<()> {
    let uid = rustix::process::geteuid().as_raw();
    let what = if path == root {
        format!("store {}", root.display())
    } else {
        format!("store {}: {}", root.display(), path.display())
    };
    if meta.uid() != uid {
        return Err(Error::Other(format!(
            "{what}: owned by uid {}, not by you (uid {uid}); refusing to write into a store \
             another user controls",
            meta.uid()
        )));
    }
    if !meta.file_type().is_symlink() && meta.mode() & 0o022 != 0 {
        return Err(Error::Other(format!(
            "{what}: writable by group or others (mode {:o}); refusing to write, since anyone \
             could swap its blobs (chmod go-w it)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The metadata of an existing store directory. A symlink to a directory is accepted, by
/// readers and writers alike (the directory it points to is the store, and is what a writer
/// checks); a symlink to anything else, or to nothing, is refused saying so.
fn store_dir_meta(root: &Path) -> Result<fs::Metadata> {
    let meta = fs::symlink_metadata(root).at(root)?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(root).at(root)?;
        return match fs::metadata(root) {
            Ok(m) if m.is_dir() => Ok(m),
            Ok(_) => Err(Error::Usage(format!(
                "store {}: a symlink to {}, which is not a directory (a store may be a symlink \
                 to a directory)",
                root.display(),
                target.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Usage(format!(
                "store {}: a symlink to {}, which does not exist",
                root.display(),
                target.display()
            ))),
            Err(e) => Err(Error::io(root, e)),
        };
    }
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "store {}: exists and is not a directory",
            root.display()
        )));
    }
    Ok(meta)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).at(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::types::{Index, media};

    fn fresh() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_for_write(&dir.path().join("store")).expect("new store");
        (dir, store)
    }

    fn read_all(store: &Store, desc: &Descriptor) -> Result<Vec<u8>> {
        let mut r = store.open_blob(desc)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn a_new_store_is_a_layout_that_opens() {
        let (_dir, store) = fresh();
        let root = store.root().to_path_buf();
        assert_eq!(
            fs::read_to_string(root.join("oci-layout")).unwrap(),
            "{\"imageLayoutVersion\":\"1.0.0\"}\n"
        );
        assert_eq!(fs::read(root.join("index.json")).unwrap(), EMPTY_INDEX);
        let again = Store::open(&root).unwrap();
        let index: Index = again.read_index().unwrap();
        assert!(index.manifests.is_empty());
    }

    #[test]
    fn blobs_are_named_by_their_digest_and_read_back_verified() {
        let (_dir, store) = fresh();
        let d = store.write_blob(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert!(store.has_blob(&d));
        assert_eq!(fs::read(store.blob_path(&d)).unwrap(), b"hello");
        // Writing it again changes nothing.
        assert_eq!(store.write_blob(b"hello").unwrap(), d);
        let desc = Descriptor::new("application/octet-stream", d, 5);
        assert_eq!(read_all(&store, &desc).unwrap(), b"hello");
        // Nothing is left in the temp directory.
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn damage_is_a_typed_error_naming_the_blob() {
        let (_dir, store) = fresh();
        let d = store.write_blob(b"hello").unwrap();
        let path = store.blob_path(&d);
        let mut perms = fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        fs::set_permissions(&path, perms).unwrap();
        fs::write(&path, b"jello").unwrap();
        let desc = Descriptor::new("application/octet-stream", d.clone(), 5);
        match read_all(&store, &desc).unwrap_err() {
            Error::DigestMismatch {
                expected, found, ..
            } => {
                assert_eq!(expected, d);
                assert_eq!(found, Digest::of(b"jello"));
            }
            other => panic!("want a digest mismatch, got {other:?}"),
        }
        let short = Descriptor::new("application/octet-stream", d.clone(), 4);
        let err = read_all(&store, &short).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SizeMismatch {
                    expected: 4,
                    found: None,
                    ..
                }
            ),
            "{err:?}"
        );
        fs::remove_file(&path).unwrap();
        let err = store.open_blob(&desc).unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { what: "blob", name, .. } if *name == d.to_string()),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing from"), "{err}");
    }

    #[test]
    fn an_unverified_blob_never_enters_the_store() {
        let (_dir, store) = fresh();
        let want = Digest::of(b"right");
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"wrong").unwrap();
        let err = w.commit_verified(&want, 5).unwrap_err();
        assert!(
            matches!(&err, Error::DigestMismatch { expected, .. } if *expected == want),
            "{err:?}"
        );
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"right!").unwrap();
        let err = w.commit_verified(&want, 5).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SizeMismatch {
                    expected: 5,
                    found: Some(6),
                    ..
                }
            ),
            "{err:?}"
        );
        // A writer dropped half way leaves nothing either.
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"half").unwrap();
        drop(w);
        assert!(!store.has_blob(&want));
        assert_eq!(
            fs::read_dir(store.root().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn refs_are_set_replaced_and_removed_under_their_names() {
        let (_dir, store) = fresh();
        let a = Descriptor::new(media::MANIFEST, store.write_blob(b"{}").unwrap(), 2);
        let b = Descriptor::new(media::MANIFEST, store.write_blob(b"[]").unwrap(), 2);
        store.set_ref("os:latest", &a).unwrap();
        store.set_ref("app:1", &b).unwrap();
        assert_eq!(
            store.resolve("os:latest").unwrap().unwrap().digest,
            a.digest
        );
        store.set_ref("os:latest", &b).unwrap();
        let index = store.read_index().unwrap();
        assert_eq!(index.manifests.len(), 2, "replaced, not added");
        // Sorted by name, so the file is the same whatever order refs came in.
        let names: Vec<_> = index
            .manifests
            .iter()
            .filter_map(|d| d.ref_name())
            .collect();
        assert_eq!(names, ["app:1", "os:latest"]);
        assert_eq!(
            store.resolve("os:latest").unwrap().unwrap().digest,
            b.digest
        );
        assert!(store.remove_ref("app:1").unwrap());
        assert!(!store.remove_ref("app:1").unwrap());
        assert!(store.resolve("app:1").unwrap().is_none());
    }

    #[test]
    fn a_directory_that_is_not_a_layout_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious"), b"x").unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not an OCI image layout"), "{err}");
        assert!(Store::open_for_write(dir.path()).is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["precious"]);
    }

    #[test]
    fn temp_names_carry_the_writer_pid() {
        let dir = tempfile::tempdir().unwrap();
        let (_f, path) = temp_file(dir.path(), "blob").unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(temp_owner(&name), Some(std::process::id() as i32));
    }
}
