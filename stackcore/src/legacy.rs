//! The original plugin's stashes. `kiwi-ng system stash` kept each stash as an OCI archive,
//! `HOME/NAME/NAME.tar`, with HOME `/var/tmp/kiwi-stash` (`$STACKBUILD_LEGACY_STASH_HOME`
//! points elsewhere), every tag of it under the ref name `NAME:TAG`.
//!
//! - [`list`]: every stash in those archives (`stash --list` shows them in a section of their
//!   own);
//! - [`open_unless_stored`]: a bare `NAME[:TAG]` that the store lacks and an archive has opens
//!   the archive's image, with a note saying so; where both have it, the store's wins;
//! - [`import`]: copies archives' images into the store (`stash --import-legacy`), leaving
//!   the archives where they are;
//! - [`WholeSecondLayers`]: the original's umoci wrote each mtime rounded to the second. An
//!   imported layer is marked so ([`MTIME_ROUNDING`]), and a later stash on top of it does not
//!   count that rounding as a change.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
use crate::entry::{Kind, Mtime};
use crate::error::IoContext;
use crate::image::{Archive, BlobSource, Image, split_tag};
use crate::layer::model::Node;
use crate::oci::Store;
use crate::oci::types::{Descriptor, Manifest};
use crate::stash::{valid_name, valid_tag};
use crate::{Error, Result};

/// The variable that moves the original's stash home (for tests and unusual setups).
pub const HOME_ENV: &str = "STACKBUILD_LEGACY_STASH_HOME";
/// The original's stash home.
pub const DEFAULT_HOME: &str = "/var/tmp/kiwi-stash";
/// The layer annotation `stash --import-legacy` sets on each layer it imports: its mtimes
/// were rounded to the second (value [`ROUNDED_TO_SECONDS`]) by the original's umoci.
pub const MTIME_ROUNDING: &str = "stackbuild.mtime-rounding";
/// The value of [`MTIME_ROUNDING`].
pub const ROUNDED_TO_SECONDS: &str = "second";

/// Where the original plugin kept its stashes.
pub fn home() -> PathBuf {
    std::env::var_os(HOME_ENV).map_or_else(|| PathBuf::from(DEFAULT_HOME), PathBuf::from)
}

/// `HOME/NAME/NAME.tar`, for a valid stash name only (anything else could climb out of HOME).
pub fn archive_path(home: &Path, name: &str) -> Option<PathBuf> {
    valid_name(name).then(|| home.join(name).join(format!("{name}.tar")))
}

/// One stash in one of the original's archives.
#[derive(Debug, Clone)]
pub struct LegacyStash {
    /// The archive.
    pub file: PathBuf,
    /// Stash name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// The image, read in place from the archive.
    pub image: Image,
}

impl LegacyStash {
    /// `oci-archive:FILE:NAME:TAG`, a ref that opens it whatever the store holds.
    pub fn reference(&self) -> String {
        format!(
            "oci-archive:{}:{}:{}",
            self.file.display(),
            self.name,
            self.tag
        )
    }

    /// `NAME:TAG`.
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

/// Every stash in the archives under `home`, by directory name, then in archive order. An
/// archive that cannot be read is left out and described in the second list.
pub fn list(home: &Path) -> (Vec<LegacyStash>, Vec<String>) {
    let mut stashes = Vec::new();
    let mut problems = Vec::new();
    let Ok(dirs) = std::fs::read_dir(home) else {
        return (stashes, problems);
    };
    let mut names: Vec<String> = dirs
        .filter_map(std::result::Result::ok)
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let file = home.join(&name).join(format!("{name}.tar"));
        if !file.is_file() {
            continue;
        }
        match in_archive(&file, &name) {
            Ok(found) => stashes.extend(found),
            Err(e) => problems.push(e.to_string()),
        }
    }
    (stashes, problems)
}

/// The stashes of one archive; `dir_name` names those without a ref name (`NAME:latest`).
fn in_archive(file: &Path, dir_name: &str) -> Result<Vec<LegacyStash>> {
    let src = BlobSource::Archive(Arc::new(Archive::open(file)?));
    let index = src.index()?;
    let mut out = Vec::new();
    for desc in index.manifests {
        let full = desc
            .ref_name()
            .map_or_else(|| format!("{dir_name}:latest"), str::to_owned);
        let image = Image::from_descriptor(src.clone(), desc, full.clone())
            .map_err(|e| Error::Other(format!("{}: {full}: {e}", file.display())))?;
        let (name, tag) = split_tag(&full);
        out.push(LegacyStash {
            file: file.to_path_buf(),
            name: name.to_owned(),
            tag: tag.to_owned(),
            image,
        });
    }
    Ok(out)
}

/// The original's stash `NAME:TAG` under `home`, if its archive has it.
pub fn find(home: &Path, name: &str, tag: &str) -> Result<Option<LegacyStash>> {
    let Some(file) = archive_path(home, name) else {
        return Ok(None);
    };
    if !file.is_file() {
        return Ok(None);
    }
    Ok(in_archive(&file, name)?
        .into_iter()
        .find(|s| s.name == name && s.tag == tag))
}

/// The lookup of a bare `NAME:TAG` (the one call [`crate::open::open_ref`] makes for it): when the store
/// at `store_dir` lacks it and the original's archive has it, that image (named by its
/// `oci-archive:` ref), with a note on stderr saying so and how to import it. When both have
/// the name, `None` and a note that the store's is used (none when the store's came from
/// [`import`]: its layers carry [`MTIME_ROUNDING`]); when the archive has nothing of that
/// name, `None` and no note.
pub fn open_unless_stored(store_dir: &Path, name: &str, tag: &str) -> Result<Option<Image>> {
    let home = home();
    let Some(file) = archive_path(&home, name) else {
        return Ok(None);
    };
    if !file.is_file() {
        return Ok(None);
    }
    let full = format!("{name}:{tag}");
    // A store that cannot be opened has nothing; its own errors come from the caller's
    // lookup when the archive does not have the name either.
    let stored = Store::open(store_dir)
        .ok()
        .and_then(|s| s.resolve(&full).ok().flatten().map(|d| (s, d)));
    if let Some((store, desc)) = stored {
        // Once imported (then stashed on, perhaps), the store's is the archive's successor:
        // nothing to point out.
        let imported = store
            .read_json::<Manifest>(&desc)
            .is_ok_and(|m| WholeSecondLayers::of(&m).any());
        if imported {
            return Ok(None);
        }
        note(&format!(
            "{full}: using the store's (in {}); the original plugin's archive {} has a stash \
             of that name too (oci-archive:{}:{full} reads it)",
            store_dir.display(),
            file.display(),
            file.display()
        ));
        return Ok(None);
    }
    let Some(found) = find(&home, name, tag)? else {
        return Ok(None);
    };
    note(&format!(
        "{full} is not in the store {}: using the original plugin's stash archive {} \
         (`stash --import-legacy {full}` copies it into the store)",
        store_dir.display(),
        file.display()
    ));
    let reference = found.reference();
    let mut image = found.image;
    image.name = reference;
    Ok(Some(image))
}

/// One line on stderr, prefixed with the running tool's name, shown even with `--quiet`:
/// it says which image a name stands for.
fn note(msg: &str) {
    let tool = std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "stackbuild".to_owned());
    let line = format!("{tool}: note: {msg}");
    if !crate::progress::message(&line) {
        use std::io::Write as _;
        let _ = writeln!(io::stderr().lock(), "{line}"); // stderr gone: nobody to tell
    }
}

/// What [`import`] did.
#[derive(Debug, Clone, Default)]
pub struct ImportOutcome {
    /// Stashes copied into the store.
    pub imported: Vec<Imported>,
    /// Stashes the store had already (by `NAME:TAG`), left as they were.
    pub skipped: Vec<Skipped>,
    /// Bytes written into the store (blobs it did not have).
    pub bytes: u64,
}

/// One stash copied into the store.
#[derive(Debug, Clone)]
pub struct Imported {
    /// `NAME:TAG`.
    pub name: String,
    /// The archive it came from (left in place).
    pub archive: PathBuf,
    /// The manifest digest in the archive.
    pub archive_manifest: Digest,
    /// The manifest digest in the store (the archive's, with each layer marked
    /// [`MTIME_ROUNDING`]).
    pub manifest: Digest,
    /// Layers.
    pub layers: usize,
    /// Bytes written for it (blobs the store did not have, and the manifest).
    pub bytes: u64,
}

/// One stash not imported because the store has that `NAME:TAG` already.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// `NAME:TAG`.
    pub name: String,
    /// The archive.
    pub archive: PathBuf,
    /// The manifest digest the store's `NAME:TAG` points at.
    pub manifest: Digest,
}

/// `stash --import-legacy [NAME[:TAG]...]`: copies the original's stashes from `home` into
/// `store` (every one when `wanted` is empty). Every archive is read and every name found
/// before anything is written; each blob is verified against its digest and size as it is
/// written, each layer's `diff_id` is checked (its index cached on the way), and the tag is
/// set last, so a failure leaves no tag on a partial image. A `NAME:TAG` the store has
/// already is skipped, whatever it holds.
pub fn import(store: &Store, home: &Path, wanted: &[String]) -> Result<ImportOutcome> {
    let chosen = choose(home, wanted)?;
    let mut out = ImportOutcome::default();
    for s in chosen {
        let full = s.full_name();
        // Serialises with a stash of the same name (which holds this lock from reading the
        // previous image to moving the tag).
        let _name_lock = store.lock(&format!("stash-{}", s.name))?;
        if let Some(desc) = store.resolve(&full)? {
            out.skipped.push(Skipped {
                name: full,
                archive: s.file.clone(),
                manifest: desc.digest,
            });
            continue;
        }
        let img = &s.image;
        let mut bytes = 0;
        for desc in std::iter::once(&img.manifest.config).chain(&img.manifest.layers) {
            bytes += copy_blob(&img.source, store, desc)
                .map_err(|e| Error::Other(format!("{}: {full}: {e}", s.file.display())))?;
        }
        let mut manifest: Manifest = img.manifest.clone();
        for l in &mut manifest.layers {
            l.annotations
                .insert(MTIME_ROUNDING.to_owned(), ROUNDED_TO_SECONDS.to_owned());
        }
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
        let had = store.has_blob(&Digest::of(&manifest_bytes));
        let digest = store.write_blob(&manifest_bytes)?;
        if !had {
            bytes += manifest_bytes.len() as u64;
        }
        let desc = Descriptor::new(
            &img.manifest_desc.media_type,
            digest.clone(),
            manifest_bytes.len() as u64,
        );
        // Every layer read once: its diff_id checked against the config, its index cached
        // for the stashes that follow.
        let stored = Image::from_descriptor(
            BlobSource::Layout(store.clone()),
            desc.clone(),
            full.clone(),
        )?;
        for i in 0..stored.manifest.layers.len() {
            stored
                .layer_index(i)
                .map_err(|e| Error::Other(format!("{}: {full}: {e}", s.file.display())))?;
        }
        store.set_ref(&full, &desc)?;
        out.bytes += bytes;
        out.imported.push(Imported {
            name: full,
            archive: s.file.clone(),
            archive_manifest: img.digest().clone(),
            manifest: digest,
            layers: manifest.layers.len(),
            bytes,
        });
    }
    Ok(out)
}

/// The stashes `wanted` names (each `NAME[:TAG]`, tag `latest` by default), or all of them.
fn choose(home: &Path, wanted: &[String]) -> Result<Vec<LegacyStash>> {
    if wanted.is_empty() {
        let (all, problems) = list(home);
        if let Some(p) = problems.first() {
            return Err(Error::Other(p.clone()));
        }
        // A ref name inside an archive is the archive writer's word: it becomes a tag in the
        // store and names a lock file, so it must be a stash name and tag.
        if let Some(bad) = all
            .iter()
            .find(|s| !valid_name(&s.name) || !valid_tag(&s.tag))
        {
            return Err(Error::Other(format!(
                "{}: holds {:?}, which is not a NAME:TAG a stash can have; nothing imported \
                 (name the others: stash --import-legacy NAME[:TAG]...)",
                bad.file.display(),
                bad.full_name()
            )));
        }
        return Ok(all);
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        let (name, tag) = split_tag(w);
        if !valid_name(name) || !valid_tag(tag) {
            return Err(Error::Usage(format!(
                "--import-legacy {w:?}: expected NAME[:TAG], NAME a stash name"
            )));
        }
        if !seen.insert(format!("{name}:{tag}")) {
            continue;
        }
        let found = find(home, name, tag)?.ok_or_else(|| {
            Error::Other(format!(
                "--import-legacy {name}:{tag}: no such stash among the original plugin's in {} \
                 (stash --list shows them)",
                home.display()
            ))
        })?;
        out.push(found);
    }
    Ok(out)
}

/// Copies one blob into the store unless it is there; returns the bytes written. The blob
/// enters the store only if its content has the descriptor's digest and size.
fn copy_blob(src: &BlobSource, store: &Store, desc: &Descriptor) -> Result<u64> {
    if store.has_blob(&desc.digest) {
        return Ok(0);
    }
    let mut reader = src.open_blob(desc)?;
    let mut w = store.blob_writer()?;
    io::copy(&mut reader, &mut w).at(format!("blob {}", desc.digest))?;
    w.commit_verified(&desc.digest, desc.size)?;
    Ok(desc.size)
}

/// Which layers of an image hold mtimes rounded to the second by the original's umoci (those
/// `stash --import-legacy` marked with [`MTIME_ROUNDING`]).
#[derive(Debug, Clone, Default)]
pub struct WholeSecondLayers(Vec<bool>);

impl WholeSecondLayers {
    /// The marked layers of `manifest`.
    pub fn of(manifest: &Manifest) -> Self {
        WholeSecondLayers(
            manifest
                .layers
                .iter()
                .map(|l| {
                    l.annotations.get(MTIME_ROUNDING).map(String::as_str)
                        == Some(ROUNDED_TO_SECONDS)
                })
                .collect(),
        )
    }

    /// Whether any layer is marked.
    pub fn any(&self) -> bool {
        self.0.iter().any(|m| *m)
    }

    /// Whether `new` counts as the mtime `old` has: equal, or `old` was written by the
    /// original into a marked layer and is `new` as umoci rounds it. A file's metadata is
    /// its data carrier's; anything else's, its own entry's.
    pub fn same_mtime(&self, old: &Node, new: Mtime) -> bool {
        if old.entry.mtime == new {
            return true;
        }
        let origin = if matches!(old.entry.kind, Kind::File | Kind::Hardlink) {
            old.data_origin
        } else {
            old.origin
        };
        self.0.get(origin.1 as usize).copied().unwrap_or(false)
            && old.entry.mtime == rounded_as_umoci(new)
    }
}

/// An mtime as umoci 0.4.7 writes it into a layer: Go's `archive/tar` rounds to the nearest
/// second (`Time.Round`, half up) when the format is not chosen.
pub fn rounded_as_umoci(t: Mtime) -> Mtime {
    Mtime {
        sec: if t.nsec >= 500_000_000 {
            t.sec + 1
        } else {
            t.sec
        },
        nsec: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umoci_rounds_half_up() {
        let t = |sec, nsec| Mtime { sec, nsec };
        assert_eq!(rounded_as_umoci(t(10, 0)), t(10, 0));
        assert_eq!(rounded_as_umoci(t(10, 499_999_999)), t(10, 0));
        assert_eq!(rounded_as_umoci(t(10, 500_000_000)), t(11, 0));
        assert_eq!(rounded_as_umoci(t(-3, 750_000_000)), t(-2, 0));
    }

    #[test]
    fn only_marked_layers_forgive_the_rounding() {
        use crate::entry::Entry;
        use crate::oci::types::media;
        let t = |sec, nsec| Mtime { sec, nsec };
        let layer = |marked: bool| {
            let mut d = Descriptor::new(media::LAYER_GZIP, Digest::of(b""), 0);
            if marked {
                d.annotations
                    .insert(MTIME_ROUNDING.to_owned(), ROUNDED_TO_SECONDS.to_owned());
            }
            d
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: None,
            config: layer(false),
            layers: vec![layer(true), layer(false)],
            annotations: std::collections::BTreeMap::new(),
            extra: std::collections::BTreeMap::new(),
        };
        let marked = WholeSecondLayers::of(&manifest);
        assert!(marked.any());
        let node = |layer: u32, kind: Kind, mtime: Mtime| {
            let mut entry = Entry::new(b"etc/x".to_vec(), kind);
            entry.mtime = mtime;
            Node {
                entry,
                digest: None,
                inode: 1,
                origin: (0, layer, 0),
                data_origin: (0, layer, 0),
                implicit: false,
            }
        };
        let old = node(0, Kind::File, t(11, 0));
        assert!(marked.same_mtime(&old, t(10, 750_000_000)));
        assert!(marked.same_mtime(&old, t(11, 250_000_000)));
        assert!(!marked.same_mtime(&old, t(11, 500_000_000)), "rounds to 12");
        assert!(!marked.same_mtime(&old, t(12, 0)), "a whole second later");
        let dir = node(0, Kind::Dir, t(11, 0));
        assert!(marked.same_mtime(&dir, t(11, 1)));
        // Our own layers keep nanoseconds: no rounding forgiven there.
        let ours = node(1, Kind::File, t(11, 0));
        assert!(!marked.same_mtime(&ours, t(11, 1)));
        assert!(!WholeSecondLayers::default().same_mtime(&old, t(11, 1)));
    }

    #[test]
    fn names_that_are_not_stash_names_never_become_paths() {
        let home = Path::new("/h");
        assert_eq!(
            archive_path(home, "old-os"),
            Some(PathBuf::from("/h/old-os/old-os.tar"))
        );
        for bad in ["..", "a/../b", "x", "-a", "host:5000/repo", ""] {
            assert_eq!(archive_path(home, bad), None, "{bad}");
        }
    }
}
