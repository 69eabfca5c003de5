//! Opening any image ref: the one entry point every tool calls.
//!
//! | ref | opened from |
//! |---|---|
//! | `NAME[:TAG]` | the store ([`find_stash`]), else the original plugin's archive ([`crate::legacy`]) |
//! | `oci:DIR[:NAME[:TAG]]` | the layout; a store of ours (the store itself, or one marked as ours, see [`crate::oci::mark`]) with its caches, any other read-only |
//! | `oci-archive:FILE[:NAME[:TAG]]` | the archive, in place |
//! | `docker-archive:FILE[:NAME[:TAG]]` | the archive, in place |
//! | `docker://HOST/REPO[:TAG\|@DIGEST]` | pulled into the store first, then opened from it by digest |
//!
//! A pulled image is kept in the store under `HOST/REPO:TAG` and can be opened offline by
//! that name afterwards, for the platform it was pulled for (kept on its `index.json` entry
//! when a pull picked it from an image index, else its config's): opening it by name for
//! another platform (`--platform`, else this machine's) is refused; pull it again for that
//! one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::Archive;
use crate::image::{BlobSource, Image, pick};
use crate::imageref::ImageRef;
use crate::manifest::PullReport;
use crate::oci::Store;
use crate::oci::types::Descriptor;
use crate::platform::PlatformSpec;
use crate::registry::{RegistryOptions, RegistryRef};
use crate::{Error, Result};

/// Where `NAME[:TAG]` refs are found and `docker://` refs are pulled to, and how.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The store (`--store`, else the default store).
    pub store: PathBuf,
    /// TLS, platform and progress for registries; the platform also picks from local
    /// image indexes and is checked against pulled images opened by name.
    pub registry: RegistryOptions,
}

impl OpenOptions {
    /// The store at `store`, registries with default options.
    pub fn new(store: &Path) -> OpenOptions {
        OpenOptions {
            store: store.to_path_buf(),
            registry: RegistryOptions::default(),
        }
    }
}

/// An opened ref.
#[derive(Debug)]
pub struct Opened {
    /// The image.
    pub image: Image,
    /// For a `docker://` ref: what the pull did.
    pub pulled: Option<PullReport>,
}

/// Opens any image ref.
pub fn open_ref(r: &ImageRef, opts: &OpenOptions) -> Result<Opened> {
    let platform = opts
        .registry
        .platform
        .clone()
        .unwrap_or_else(PlatformSpec::host);
    let image = match r {
        ImageRef::Registry(text) => {
            let rr = RegistryRef::parse(text)?;
            return open_registry(&rr, opts);
        }
        ImageRef::Stash { name, tag } => {
            // The original plugin's archives answer for names the store lacks.
            if let Some(img) = crate::legacy::open_unless_stored(&opts.store, name, tag)? {
                return Ok(Opened {
                    image: img,
                    pulled: None,
                });
            }
            let (src, desc) = find_stash(&opts.store, name, tag)?
                .ok_or_else(|| no_stash(&opts.store, name, tag))?;
            // The platform a pull picked from an image index is kept on the store's entry.
            let recorded = desc.platform.as_ref().map(PlatformSpec::of);
            let img = Image::from_descriptor_for(src, desc, format!("{name}:{tag}"), &platform)?;
            let have = recorded.unwrap_or_else(|| PlatformSpec::of_config(&img.config));
            check_platform(&have, name, tag, opts.registry.platform.as_ref())?;
            img
        }
        ImageRef::Layout { dir, name } => {
            let s = Store::open(dir)?;
            let index = s.read_index()?;
            let desc = pick(&index, name.as_deref(), &r.to_string())?;
            let src = if is_our_store(&s, &opts.store) {
                tracing::debug!(layout = %s.root().display(), "a store of ours: its layer-index cache is used");
                BlobSource::Layout(s)
            } else {
                BlobSource::Foreign(s)
            };
            Image::from_descriptor_for(src, desc, r.to_string(), &platform)?
        }
        ImageRef::Archive { file, name } => {
            let a = Archive::open(file)?;
            let src = BlobSource::Archive(Arc::new(a));
            let index = src.index()?;
            let desc = pick(&index, name.as_deref(), &r.to_string())?;
            Image::from_descriptor_for(src, desc, r.to_string(), &platform)?
        }
        ImageRef::DockerArchive { file, name } => {
            let a = Archive::open_docker(file)?;
            let desc = a.docker_image(name.as_deref(), &r.to_string())?;
            Image::from_descriptor_for(
                BlobSource::Archive(Arc::new(a)),
                desc,
                r.to_string(),
                &platform,
            )?
        }
    };
    Ok(Opened {
        image,
        pulled: None,
    })
}

/// `e`, an error from opening `r`, with the ref in front where the error does not name it
/// already (a registry's errors do).
pub fn opening_error(r: &ImageRef, e: Error) -> anyhow::Error {
    match r {
        ImageRef::Registry(_) => e.into(),
        _ => anyhow::Error::from(e).context(format!("opening {r}")),
    }
}

/// Where a `NAME:TAG` is looked up: the store's `index.json`. `Ok(None)` when the store has
/// no such name, or there is no store at `store` yet. This is the one place a bare name
/// resolves in the store; names it lacks may still be the original plugin's archives
/// ([`crate::legacy::open_unless_stored`], asked first by [`open_ref`]).
pub fn find_stash(store: &Path, name: &str, tag: &str) -> Result<Option<(BlobSource, Descriptor)>> {
    if !store.exists() {
        return Ok(None);
    }
    let s = Store::open(store)?;
    Ok(s.resolve(&format!("{name}:{tag}"))?
        .map(|d| (BlobSource::Layout(s), d)))
}

fn no_stash(store: &Path, name: &str, tag: &str) -> Error {
    let shown = std::path::absolute(store).unwrap_or_else(|_| store.to_path_buf());
    if store.exists() {
        Error::Other(format!(
            "no stash {name}:{tag} in {} (stash --list shows what is there)",
            shown.display()
        ))
    } else {
        Error::Other(format!(
            "no stash {name}:{tag}: the store {} does not exist",
            shown.display()
        ))
    }
}

/// A layout is ours when it is the store the tool was given, or carries our mark.
fn is_our_store(layout: &Store, store: &Path) -> bool {
    same_dir(layout.root(), store) || crate::oci::mark::is_ours(layout)
}

/// A pulled image (`HOST/REPO:TAG`) is used offline only for the platform it was pulled
/// for: `--platform`, else this machine's. A stash of ours (no `/` in its name) is checked
/// only against an explicit `--platform`.
fn check_platform(
    have: &PlatformSpec,
    name: &str,
    tag: &str,
    asked: Option<&PlatformSpec>,
) -> Result<()> {
    let pulled = name.contains('/');
    let want = match asked {
        Some(p) => p.clone(),
        None if pulled => PlatformSpec::host(),
        None => return Ok(()),
    };
    if want.matches(have) {
        return Ok(());
    }
    let hint = if pulled {
        format!("; pull it for {want} with docker://{name}:{tag} --platform {want}")
    } else {
        String::new()
    };
    Err(Error::Other(format!(
        "{name}:{tag} in the store is a {have} image, not {want}{hint}"
    )))
}

/// Pulls `r` into the store and opens exactly what was pulled, by digest.
#[cfg(feature = "registry")]
pub fn open_registry(r: &RegistryRef, opts: &OpenOptions) -> Result<Opened> {
    let s = Store::open_for_write(&opts.store).map_err(|e| {
        let m = format!("opening store {} to pull into: {e}", opts.store.display());
        match e {
            Error::Usage(_) => Error::Usage(m),
            _ => Error::Other(m),
        }
    })?;
    let pulled = crate::registry::pull_ref(&s, r, &opts.registry)?;
    let image = Image::from_descriptor(
        BlobSource::Layout(s),
        pulled.descriptor.clone(),
        pulled.ref_name.clone(),
    )?;
    Ok(Opened {
        image,
        pulled: Some(PullReport::from(&pulled)),
    })
}

/// Without the `registry` feature: a clear error.
#[cfg(not(feature = "registry"))]
pub fn open_registry(r: &RegistryRef, _opts: &OpenOptions) -> Result<Opened> {
    Err(Error::Usage(format!(
        "{r}: this build has no registry support (stackcore feature \"registry\")"
    )))
}

/// Whether two paths name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
