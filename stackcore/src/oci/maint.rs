//! Store maintenance: garbage collection, verification, and tidying what killed writers left.
//!
//! Both start from `index.json` and follow every descriptor down (image indexes to manifests,
//! manifests to their config and layers), which is the whole of what the store must keep.
//! [`gc`] removes the rest under the locks that keep writers out; [`verify`] takes no lock,
//! since it only reads, and a store is consistent at every instant (blobs appear by rename,
//! whole and fsynced, and `index.json` is replaced the same way).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::store::{Store, WRITERS_LOCK, read_json_blob, temp_owner};
use super::types::{Descriptor, ImageConfig, media};
use crate::digest::Digest;
use crate::error::IoContext;
use crate::{Error, Result};

/// How deep image indexes may nest (an index of indexes of manifests is already unusual).
const MAX_DEPTH: usize = 8;

/// One thing wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The blob (`sha256:...`), or the file, that is wrong.
    pub blob: String,
    /// What is wrong with it.
    pub problem: String,
    /// The tags whose images need it.
    pub refs: Vec<String>,
    /// Whether what the blob references is unknown, so gc cannot tell garbage from data.
    pub blocks_gc: bool,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Blob files hashed.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Manifests checked.
    pub manifests: u64,
    /// Everything wrong, one entry per damaged or missing blob.
    pub problems: Vec<Problem>,
}

/// What [`gc`] removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Blobs kept (referenced).
    pub blobs_kept: u64,
    /// Unreferenced blobs removed.
    pub blobs_removed: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Temp files of runs that are no longer alive, removed.
    pub temp_removed: u64,
    /// Their bytes.
    pub temp_bytes: u64,
    /// Cached layer indexes of layers no longer in the store (or unreadable), removed.
    pub caches_removed: u64,
    /// Their bytes.
    pub cache_bytes: u64,
}

impl GcReport {
    /// All bytes freed.
    pub fn bytes_freed(&self) -> u64 {
        self.blob_bytes + self.temp_bytes + self.cache_bytes
    }
}

/// The blobs `index.json` reaches, and what is wrong on the way.
#[derive(Debug, Default)]
struct Reach {
    /// Blob → the tags that need it.
    blobs: BTreeMap<Digest, BTreeSet<String>>,
    manifests: u64,
    problems: Vec<Problem>,
}

impl Reach {
    fn problem(&mut self, digest: &Digest, tag: &str, problem: String, blocks_gc: bool) {
        if let Some(p) = self
            .problems
            .iter_mut()
            .find(|p| p.blob == digest.as_str() && p.problem == problem)
        {
            if !p.refs.iter().any(|r| r == tag) {
                p.refs.push(tag.to_owned());
            }
            p.blocks_gc |= blocks_gc;
            return;
        }
        self.problems.push(Problem {
            blob: digest.to_string(),
            problem,
            refs: vec![tag.to_owned()],
            blocks_gc,
        });
    }
}

fn reach(store: &Store) -> Result<Reach> {
    let index = store.read_index()?;
    let mut r = Reach::default();
    for (i, desc) in index.manifests.iter().enumerate() {
        let tag = desc.ref_name().map_or_else(
            || format!("(untagged entry {i} of index.json)"),
            str::to_owned,
        );
        visit(store, desc, &tag, 0, &mut r);
    }
    Ok(r)
}

/// Follows one descriptor: the blob must be there with the descriptor's size, and a manifest
/// or index is read for what it references in turn.
fn visit(store: &Store, desc: &Descriptor, tag: &str, depth: usize, r: &mut Reach) {
    r.blobs
        .entry(desc.digest.clone())
        .or_default()
        .insert(tag.to_owned());
    let is_index = desc.media_type == media::INDEX || desc.media_type == media::DOCKER_LIST;
    let is_manifest =
        desc.media_type == media::MANIFEST || desc.media_type == media::DOCKER_MANIFEST;
    let path = store.blob_path(&desc.digest);
    let size = match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            r.problem(
                &desc.digest,
                tag,
                "not a regular file".into(),
                is_index || is_manifest,
            );
            return;
        }
        Err(e) => {
            let what = if e.kind() == io::ErrorKind::NotFound {
                "missing".to_owned()
            } else {
                format!("unreadable: {e}")
            };
            r.problem(&desc.digest, tag, what, is_index || is_manifest);
            return;
        }
    };
    if size != desc.size {
        r.problem(
            &desc.digest,
            tag,
            format!("is {size} bytes, its descriptor says {}", desc.size),
            is_index || is_manifest,
        );
        return;
    }
    if !(is_index || is_manifest) {
        return;
    }
    if depth >= MAX_DEPTH {
        r.problem(
            &desc.digest,
            tag,
            format!("image indexes nested deeper than {MAX_DEPTH}"),
            true,
        );
        return;
    }
    let doc: Value = match store.read_json(desc) {
        Ok(v) => v,
        Err(e) => {
            r.problem(&desc.digest, tag, format!("unreadable: {e}"), true);
            return;
        }
    };
    if let Some(m) = doc.get("mediaType").and_then(Value::as_str)
        && m != desc.media_type
    {
        r.problem(
            &desc.digest,
            tag,
            format!(
                "its mediaType {m:?} disagrees with its descriptor's {:?}",
                desc.media_type
            ),
            false,
        );
    }
    let children = |key: &str| -> std::result::Result<Vec<Descriptor>, String> {
        match doc.get(key) {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_value::<Vec<Descriptor>>(v.clone())
                .map_err(|e| format!("bad \"{key}\": {e}")),
        }
    };
    if is_index {
        match children("manifests") {
            Ok(list) => {
                for child in &list {
                    visit(store, child, tag, depth + 1, r);
                }
            }
            Err(e) => r.problem(&desc.digest, tag, e, true),
        }
        return;
    }
    r.manifests += 1;
    let config = doc
        .get("config")
        .cloned()
        .map(serde_json::from_value::<Descriptor>);
    let layers = children("layers");
    let (config, layers) = match (config, layers) {
        (Some(Ok(c)), Ok(l)) => (c, l),
        (None, _) => {
            r.problem(&desc.digest, tag, "manifest without a config".into(), true);
            return;
        }
        (Some(Err(e)), _) => {
            r.problem(&desc.digest, tag, format!("bad \"config\": {e}"), true);
            return;
        }
        (_, Err(e)) => {
            r.problem(&desc.digest, tag, e, true);
            return;
        }
    };
    for layer in &layers {
        visit(store, layer, tag, depth + 1, r);
    }
    let problems_before = r.problems.len();
    visit(store, &config, tag, depth + 1, r);
    if r.problems.len() != problems_before {
        return; // the config itself is missing or the wrong size: said already
    }
    let parsed = File::open(store.blob_path(&config.digest))
        .map_err(|e| Error::io(store.blob_path(&config.digest), e))
        .and_then(|f| read_json_blob::<ImageConfig>(f, &config));
    match parsed {
        Ok(c) if c.rootfs.diff_ids.len() != layers.len() => r.problem(
            &config.digest,
            tag,
            format!(
                "config lists {} diff_ids for the manifest's {} layers",
                c.rootfs.diff_ids.len(),
                layers.len()
            ),
            false,
        ),
        Ok(_) => {}
        Err(e) => r.problem(
            &config.digest,
            tag,
            format!("unreadable config: {e}"),
            false,
        ),
    }
}

/// Checks the whole store: every blob file's content against its name, and every tag's
/// manifests, configs and layers present with the sizes their descriptors give, and each
/// config's `diff_ids` matching its manifest's layers.
pub fn verify(store: &Store) -> Result<VerifyReport> {
    let reach = reach(store)?;
    let mut report = VerifyReport {
        manifests: reach.manifests,
        ..VerifyReport::default()
    };
    let mut problems = reach.problems;
    let dir = store.root().join("blobs/sha256");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .at(&dir)?
        .map(|e| e.map(|e| e.file_name()).at(&dir))
        .collect::<Result<_>>()?;
    names.sort();
    let mut buf = vec![0u8; 1 << 20];
    for name in names {
        let path = dir.join(&name);
        let shown = name.to_string_lossy().into_owned();
        let Ok(digest) = Digest::parse(&format!("sha256:{shown}")) else {
            problems.push(Problem {
                blob: path.display().to_string(),
                problem: "stray file in blobs/sha256 (not a sha256 digest name)".into(),
                refs: Vec::new(),
                blocks_gc: false,
            });
            continue;
        };
        let refs = |d: &Digest| {
            reach
                .blobs
                .get(d)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()
        };
        match hash_file(&path, &mut buf) {
            Ok((got, size)) => {
                report.blobs += 1;
                report.bytes += size;
                if got != digest {
                    problems.push(Problem {
                        blob: digest.to_string(),
                        refs: refs(&digest),
                        problem: format!("content hashes to {got}: damaged"),
                        blocks_gc: false,
                    });
                }
            }
            Err(e) => problems.push(Problem {
                blob: digest.to_string(),
                refs: refs(&digest),
                problem: format!("unreadable: {e}"),
                blocks_gc: false,
            }),
        }
    }
    problems.sort_by(|a, b| a.blob.cmp(&b.blob).then(a.problem.cmp(&b.problem)));
    report.problems = problems;
    Ok(report)
}

fn hash_file(path: &Path, buf: &mut [u8]) -> io::Result<(Digest, u64)> {
    let mut f = File::open(path)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Digest::from_hash(hash.finalize().into()), size))
}

/// Removes what nothing references: blobs no tag reaches, temp files of runs that are no
/// longer alive, and cached layer indexes of layers no longer in the store. Holds the
/// `writers` lock exclusively (so no writer is between writing a blob and tagging it) and
/// the store lock (so no tag moves meanwhile). `waiting` is called once if writers are
/// running and gc has to wait for them.
///
/// Refuses to remove anything when a manifest or image index cannot be read, since what it
/// references is then unknown: run [`verify`] to see why.
pub fn gc(store: &Store, waiting: &mut dyn FnMut()) -> Result<GcReport> {
    let _writers = if let Some(l) = store.try_lock(WRITERS_LOCK)? {
        l
    } else {
        waiting();
        store.lock(WRITERS_LOCK)?
    };
    let _store = store.lock("store")?;
    let reach = reach(store)?;
    let blocking: Vec<&Problem> = reach.problems.iter().filter(|p| p.blocks_gc).collect();
    if !blocking.is_empty() {
        let list: Vec<String> = blocking
            .iter()
            .map(|p| format!("{} ({}): {}", p.blob, p.refs.join(", "), p.problem))
            .collect();
        return Err(Error::Other(format!(
            "store {} is damaged, so what it still needs is unknown; gc removed nothing \
             (stash --verify lists the damage): {}",
            store.root().display(),
            list.join("; ")
        )));
    }
    let mut report = GcReport::default();
    let dir = store.root().join("blobs/sha256");
    for item in fs::read_dir(&dir).at(&dir)? {
        let item = item.at(&dir)?;
        let name = item.file_name();
        let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) else {
            continue; // not ours to judge: verify reports stray files
        };
        if reach.blobs.contains_key(&digest) {
            report.blobs_kept += 1;
            continue;
        }
        let path = item.path();
        let size = item.metadata().at(&path)?.len();
        match fs::remove_file(&path) {
            Ok(()) => {
                report.blobs_removed += 1;
                report.blob_bytes += size;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        crate::failpoint::hit("gc-after-blob");
    }
    let (n, bytes) = clean_stale_temps(store)?;
    report.temp_removed = n;
    report.temp_bytes = bytes;
    // Layer indexes and access points (`layer/points.rs`) of layers no longer here, or
    // damaged.
    for kind in ["index", "points"] {
        let cache = store.cache_dir().join(kind);
        match fs::read_dir(&cache) {
            Ok(items) => {
                for item in items {
                    let item = item.at(&cache)?;
                    let name = item.file_name();
                    let path = item.path();
                    let keep = Digest::parse(&format!("sha256:{}", name.to_string_lossy()))
                        .ok()
                        .filter(|d| store.has_blob(d))
                        .is_some_and(|d| match kind {
                            "index" => {
                                crate::layer::LayerIndex::load_cached(&store.cache_dir(), &d)
                                    .is_some()
                            }
                            _ => crate::layer::points::load(&store.cache_dir(), &d).is_some(),
                        });
                    if keep {
                        continue;
                    }
                    let size = item.metadata().at(&path)?.len();
                    match fs::remove_file(&path) {
                        Ok(()) => {
                            report.caches_removed += 1;
                            report.cache_bytes += size;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(&path, e)),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&cache, e)),
        }
    }
    Ok(report)
}

/// Removes the temp files (`.stackbuild/tmp/PREFIX-PID-N`) of processes that are no longer
/// alive: a killed run's half-written blob or index. Files of live processes, ours included,
/// are left alone. Returns how many were removed and their bytes.
pub fn clean_stale_temps(store: &Store) -> Result<(u64, u64)> {
    let dir = store.tmp_dir();
    let items = match fs::read_dir(&dir) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let (mut n, mut bytes) = (0u64, 0u64);
    for item in items {
        let item = item.at(&dir)?;
        let Some(pid) = temp_owner(&item.file_name().to_string_lossy()) else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let path = item.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // another cleaner
            Err(e) => return Err(Error::io(&path, e)),
        };
        if !meta.is_file() {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                n += 1;
                bytes += meta.size();
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok((n, bytes))
}

/// Whether process `pid` exists (a process of another user counts: `EPERM`).
pub(crate) fn alive(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return true;
    }
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(p),
        Err(rustix::io::Errno::SRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_their_pid() {
        assert_eq!(temp_owner("blob-1234-0"), Some(1234));
        assert_eq!(temp_owner("write-7-12"), Some(7));
        assert_eq!(temp_owner("a-b-1234-3"), Some(1234));
        assert_eq!(temp_owner("blob-x-0"), None);
        assert_eq!(temp_owner("blob-12"), None);
        assert_eq!(temp_owner("blob-12-"), None);
        assert_eq!(temp_owner("blob-0-1"), None);
    }

    #[test]
    fn gc_and_verify_on_a_small_store() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let store = Store::open_for_write(&tmp.path().join("s"))?;
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = store.write_blob(config)?;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{c}","size":{}}},"layers":[]}}"#,
            media::MANIFEST,
            media::CONFIG,
            config.len()
        );
        let m = store.write_blob(manifest.as_bytes())?;
        store.set_ref(
            "a:latest",
            &Descriptor::new(media::MANIFEST, m.clone(), manifest.len() as u64),
        )?;
        let junk = store.write_blob(b"unreferenced")?;
        // A temp file of a process that cannot exist (pid_max is at most 2^22).
        fs::write(store.tmp_dir().join("blob-99999999-0"), b"half")?;
        let v = verify(&store)?;
        assert_eq!((v.blobs, v.manifests, v.problems.len()), (3, 1, 0), "{v:?}");
        drop(store);
        let store = Store::open_for_maintenance(&tmp.path().join("s"))?;
        let g = gc(&store, &mut || {})?;
        assert_eq!((g.blobs_removed, g.blobs_kept), (1, 2));
        assert_eq!(g.blob_bytes, 12);
        assert_eq!((g.temp_removed, g.temp_bytes), (1, 4));
        assert!(!store.has_blob(&junk));
        // Damage the config: verify names it; gc still works (a config references nothing).
        fs::write(
            store.blob_path(&c),
            br#"{"rootfs":{"type":"layers","diff_ids":[]}}xx"#,
        )?;
        let v = verify(&store)?;
        assert!(
            v.problems.iter().any(|p| p.blob == c.as_str()),
            "{:?}",
            v.problems
        );
        // A missing manifest blocks gc.
        fs::remove_file(store.blob_path(&m))?;
        let err = gc(&store, &mut || {}).unwrap_err().to_string();
        assert!(err.contains("removed nothing"), "{err}");
        assert!(store.has_blob(&c));
        Ok(())
    }
}
