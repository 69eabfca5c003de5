//! A layer's index: the list of changes it makes, without its file contents.
//!
//! Built by reading the layer once (every digest checked), then cached in the store under
//! the layer's blob digest, so planning an unstash, a stack or an incremental stash does not
//! read every layer in full each time. The cache is safe to delete, is rebuilt when missing,
//! and is never trusted over a mismatch: it records the layer digest it describes and a
//! checksum of its own contents, and either failing means "rebuild".

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::entry::{Entry, Kind, parent};
use crate::tar::{OPAQUE, WHITEOUT_PREFIX, normalize_path};
use crate::{Error, Result};

/// One change a layer makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Create or replace an entry (`path` and hardlink targets normalised). Files carry the
    /// SHA-256 of their contents.
    Put(Entry, Option<Digest>),
    /// `.wh.NAME`: delete this path from the layers below.
    Whiteout(Vec<u8>),
    /// `.wh..wh..opq`: delete everything below this directory from the layers below.
    Opaque(Vec<u8>),
}

/// Turns a raw tar header's entry into a [`Change`]: normalises the path with chroot
/// semantics and recognises whiteouts (a regular file named `.wh.*`). Refuses names that
/// cannot be valid: `.wh.`, `.wh..`, `.wh...`, other `.wh..wh.*`, a non-directory at the
/// root, a hardlink to the root.
pub fn classify(mut e: Entry) -> io::Result<Change> {
    let raw = e.path.clone();
    e.path = normalize_path(&raw)?;
    let show = || String::from_utf8_lossy(&raw).into_owned();
    let bad = |msg: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {msg}", show()));
    let name = e.name().to_vec();
    // Files named `.wh.*` cannot exist in an image (layer.md): the prefix is a marker, valid
    // only as the last component of a regular file. Anywhere else it would be written out
    // as content and read back by other tools as a whiteout.
    if parent(&e.path)
        .split(|&b| b == b'/')
        .any(|c| c.starts_with(WHITEOUT_PREFIX))
        || (e.kind != Kind::File && name.starts_with(WHITEOUT_PREFIX))
    {
        return Err(bad(
            "names starting with .wh. are reserved for whiteouts (only an empty regular file may have one)",
        ));
    }
    if e.kind == Kind::File && name.starts_with(WHITEOUT_PREFIX) {
        let dir = parent(&e.path).to_vec();
        if name == OPAQUE {
            return Ok(Change::Opaque(dir));
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty()
            || target == b"."
            || target == b".."
            || target.starts_with(WHITEOUT_PREFIX)
        {
            return Err(bad("invalid whiteout name"));
        }
        return Ok(Change::Whiteout(crate::entry::join(&dir, target)));
    }
    if e.path.is_empty() && e.kind != Kind::Dir {
        return Err(bad(&format!("a {:?} entry for the root directory", e.kind)));
    }
    if e.kind == Kind::Hardlink {
        e.link = normalize_path(&e.link)?;
        if e.link.is_empty() {
            return Err(bad("hardlink to the root directory"));
        }
        if e.link == e.path {
            return Err(bad("hardlink to itself"));
        }
    }
    if e.kind == Kind::Symlink && e.link.is_empty() {
        return Err(bad("symlink with an empty target"));
    }
    Ok(Change::Put(e, None))
}

/// The changes of one layer, in tar order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerIndex {
    /// The changes.
    pub changes: Vec<Change>,
}

impl LayerIndex {
    /// Reads a whole layer stream (verifying it) into an index.
    pub fn read(mut layer: super::read::LayerStream) -> Result<LayerIndex> {
        let digest = layer.digest.clone();
        let err = |e: io::Error| Error::layer(&digest, e);
        let mut changes = Vec::new();
        let mut seen = DuplicateCheck::default();
        let mut buf = vec![0u8; 256 << 10];
        while let Some(h) = layer.tar.next_header().map_err(err)? {
            let mut change = classify(h.entry).map_err(err)?;
            seen.check(&change).map_err(err)?;
            if let Change::Put(e, digest) = &mut change
                && e.kind == Kind::File
            {
                let mut hash = Sha256::new();
                let mut data = layer.tar.data();
                loop {
                    let n = data.read(&mut buf).map_err(err)?;
                    if n == 0 {
                        break;
                    }
                    hash.update(&buf[..n]);
                }
                *digest = Some(Digest::from_hash(hash.finalize().into()));
            }
            changes.push(change);
        }
        layer.finish()?;
        Ok(LayerIndex { changes })
    }

    /// Loads the cached index of layer `digest` from `cache_dir`, if present and intact.
    pub fn load_cached(cache_dir: &Path, digest: &Digest) -> Option<LayerIndex> {
        let bytes = fs::read(cache_file(cache_dir, digest)).ok()?;
        super::cache::decode(digest, &bytes)
    }

    /// The `diff_id` recorded with the cached index of layer `digest` (see
    /// `layer/cache.rs`), if the cache file is present and intact.
    pub fn cached_diff_id(cache_dir: &Path, digest: &Digest) -> Option<Digest> {
        let bytes = fs::read(cache_file(cache_dir, digest)).ok()?;
        super::cache::diff_id(digest, &bytes)
    }

    /// Stores this index as the cached index of layer `digest`, which was checked to
    /// decompress to `diff_id`. Failing to cache is not an error worth failing a run for:
    /// the index is rebuilt next time.
    pub fn save_cached(&self, cache_dir: &Path, tmp_dir: &Path, digest: &Digest, diff_id: &Digest) {
        let bytes = super::cache::encode(digest, diff_id, self);
        let file = cache_file(cache_dir, digest);
        if file
            .parent()
            .is_some_and(|dir| fs::create_dir_all(dir).is_ok())
        {
            let _ = crate::oci::store::write_atomic(&file, &bytes, tmp_dir);
        }
    }
}

/// Where the cached index of layer `digest` lives under `cache_dir`.
fn cache_file(cache_dir: &Path, digest: &Digest) -> std::path::PathBuf {
    cache_dir.join("index").join(digest.hex())
}

/// Refuses a second change of the same path in one layer (image-spec layer.md: a layer MUST
/// NOT contain duplicate paths); whiteouts and opaque markers count apart from entries.
#[derive(Debug, Default)]
pub struct DuplicateCheck(std::collections::HashSet<Vec<u8>>);

impl DuplicateCheck {
    /// Records `change`, failing if its path was seen before in this layer.
    pub fn check(&mut self, change: &Change) -> io::Result<()> {
        let key = match change {
            Change::Put(e, _) => e.path.clone(),
            Change::Whiteout(p) => [b"\0wh/".as_slice(), p].concat(),
            Change::Opaque(p) => [b"\0opq/".as_slice(), p].concat(),
        };
        if self.0.insert(key) {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "duplicate path in one layer: {}",
                String::from_utf8_lossy(change_path(change))
            ),
        ))
    }
}

/// The path a change is about.
pub fn change_path(c: &Change) -> &[u8] {
    match c {
        Change::Put(e, _) => &e.path,
        Change::Whiteout(p) | Change::Opaque(p) => p,
    }
}

/// Reads the index of an image's layer from the store's cache, or from the layer itself
/// (then caches it). `open` opens the verified layer stream.
pub fn layer_index(
    store: Option<&crate::oci::Store>,
    digest: &Digest,
    open: impl FnOnce() -> Result<super::read::LayerStream>,
) -> Result<LayerIndex> {
    if let Some(store) = store
        && let Some(index) = LayerIndex::load_cached(&store.cache_dir(), digest)
    {
        tracing::debug!(layer = %digest, "layer index: cache hit");
        return Ok(index);
    }
    tracing::debug!(layer = %digest, "layer index: cache miss, reading the layer");
    let stream = open()?;
    let diff_id = stream.diff_id.clone();
    let index = LayerIndex::read(stream)?;
    if let Some(store) = store {
        index.save_cached(&store.cache_dir(), &store.tmp_dir(), digest, &diff_id);
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind, link: &str) -> Entry {
        Entry {
            link: link.as_bytes().to_vec(),
            ..Entry::new(path.as_bytes().to_vec(), kind)
        }
    }

    /// What `classify` makes of a raw name: `put PATH`, `wh PATH`, `opq PATH`, or `err`.
    fn outcome(path: &str, kind: Kind, link: &str) -> String {
        match classify(entry(path, kind, link)) {
            Ok(Change::Put(e, _)) => format!("put {}", String::from_utf8_lossy(&e.path)),
            Ok(Change::Whiteout(p)) => format!("wh {}", String::from_utf8_lossy(&p)),
            Ok(Change::Opaque(p)) => format!("opq {}", String::from_utf8_lossy(&p)),
            Err(_) => "err".into(),
        }
    }

    #[test]
    fn classify_table() {
        use Kind::{Dir, File, Hardlink, Symlink};
        for (path, kind, link, want) in [
            ("etc/passwd", File, "", "put etc/passwd"),
            ("/../file", File, "", "put file"),
            ("../../etc/", Dir, "", "put etc"),
            ("./", Dir, "", "put "),
            ("/", Dir, "", "put "),
            // The root itself as anything but a directory (CVE-2021-29136).
            ("", File, "", "err"),
            ("..", Symlink, "/", "err"),
            ("/.", Symlink, "/", "err"),
            ("a/..", Symlink, "/", "err"),
            // Whiteouts.
            (".wh.etc", File, "", "wh etc"),
            ("etc/.wh.passwd", File, "", "wh etc/passwd"),
            ("dne/../.wh.etc", File, "", "wh etc"),
            ("/../.wh.x", File, "", "wh x"),
            ("etc/.wh..wh..opq", File, "", "opq etc"),
            (".wh..wh..opq", File, "", "opq "),
            (".wh.", File, "", "err"),
            (".wh..", File, "", "err"),
            (".wh...", File, "", "err"),
            ("etc/.wh..", File, "", "err"),
            ("etc/.wh...", File, "", "err"),
            (".wh..wh.plnk", File, "", "err"),
            // `.wh.` names that are not whiteouts (layer.md: cannot exist in an image).
            (".wh.etc", Dir, "", "err"),
            (".wh.etc/somefile", File, "", "err"),
            (".wh.x", Symlink, "/", "err"),
            (".wh.x", Hardlink, "f", "err"),
            ("a/.wh.b/.wh.c", File, "", "err"),
            ("a.wh.b", File, "", "put a.wh.b"),
            // Links.
            ("s", Symlink, "", "err"),
            ("s", Symlink, "../../x", "put s"),
            ("h", Hardlink, "/..", "err"),
            ("h", Hardlink, "./h", "err"),
            ("h", Hardlink, "../../etc/passwd", "put h"),
        ] {
            assert_eq!(
                outcome(path, kind, link),
                want,
                "{path:?} {kind:?} -> {link:?}"
            );
        }
    }

    #[test]
    fn hardlink_targets_are_normalised() {
        let Ok(Change::Put(e, _)) = classify(entry("h", Kind::Hardlink, "/../../etc/passwd"))
        else {
            panic!("not a put");
        };
        assert_eq!(e.link, b"etc/passwd");
    }
}
