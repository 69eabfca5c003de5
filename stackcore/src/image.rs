//! Image references and opening images from a store, an OCI layout or an OCI archive.
//!
//! | form | meaning |
//! |---|---|
//! | `NAME[:TAG]` | a stash in the default store (or `--store`) |
//! | `oci:DIR[:NAME[:TAG]]` | an OCI image layout directory |
//! | `oci-archive:FILE[:NAME[:TAG]]` | a tar of an OCI image layout (the original plugin's stashes) |
//! | `docker://HOST[:PORT]/REPO[:TAG\|@DIGEST]` | an image in a registry |

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::{Digest, VerifyReader};
use crate::error::IoContext;
use crate::layer::index::{LayerIndex, layer_index};
use crate::layer::model::Model;
use crate::layer::points::PointsCache;
use crate::layer::read::{LayerStream, open_layer};
use crate::oci::Store;
use crate::oci::store::read_json_blob;
use crate::oci::types::{Descriptor, ImageConfig, Index, Manifest, host_arch, media};
use crate::tar::{TarReader, normalize_path};
use crate::{Error, Result};

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `NAME[:TAG]` in the store.
    Stash {
        /// Name (may contain `/` for pulled images, `HOST/REPO`).
        name: String,
        /// Tag (`latest` when not given).
        tag: String,
    },
    /// `oci:DIR[:REF]`.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The ref name inside it, if given.
        name: Option<String>,
    },
    /// `oci-archive:FILE[:REF]`.
    Archive {
        /// The archive.
        file: PathBuf,
        /// The ref name inside it, if given.
        name: Option<String>,
    },
    /// `docker://HOST/REPO[:TAG|@DIGEST]`.
    Registry(String),
}

impl ImageRef {
    /// Parses a reference.
    pub fn parse(s: &str) -> Result<ImageRef> {
        let usage = |msg: &str| Error::Usage(format!("image ref {s:?}: {msg}"));
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, name) = split_dir(rest);
            if dir.is_empty() {
                return Err(usage("no directory after oci:"));
            }
            return Ok(ImageRef::Layout {
                dir: dir.into(),
                name,
            });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, name) = split_dir(rest);
            if file.is_empty() {
                return Err(usage("no file after oci-archive:"));
            }
            return Ok(ImageRef::Archive {
                file: file.into(),
                name,
            });
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            if rest.is_empty() {
                return Err(usage("no registry after docker://"));
            }
            return Ok(ImageRef::Registry(rest.to_owned()));
        }
        if s.is_empty() {
            return Err(Error::Usage("empty image ref".into()));
        }
        if s.contains("://") {
            return Err(usage(
                "unknown transport (expected oci:, oci-archive: or docker://)",
            ));
        }
        let (name, tag) = split_tag(s);
        if name.is_empty() || tag.is_empty() {
            return Err(usage("expected NAME[:TAG]"));
        }
        Ok(ImageRef::Stash {
            name: name.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Stash { name, tag } => write!(f, "{name}:{tag}"),
            ImageRef::Layout { dir, name } => {
                write!(f, "oci:{}", dir.display())?;
                name.as_ref().map_or(Ok(()), |n| write!(f, ":{n}"))
            }
            ImageRef::Archive { file, name } => {
                write!(f, "oci-archive:{}", file.display())?;
                name.as_ref().map_or(Ok(()), |n| write!(f, ":{n}"))
            }
            ImageRef::Registry(r) => write!(f, "docker://{r}"),
        }
    }
}

/// `DIR[:REF]`: the directory ends at the first `:`, as skopeo and umoci read it.
fn split_dir(s: &str) -> (&str, Option<String>) {
    match s.split_once(':') {
        Some((d, r)) if !r.is_empty() => (d, Some(r.to_owned())),
        Some((d, _)) => (d, None),
        None => (s, None),
    }
}

/// `NAME[:TAG]`: the tag follows the last `:` that has no `/` after it (`HOST:PORT/REPO`
/// has no tag).
pub fn split_tag(s: &str) -> (&str, &str) {
    match s.rfind(':') {
        Some(i) if !s[i + 1..].contains('/') => (&s[..i], &s[i + 1..]),
        _ => (s, "latest"),
    }
}

/// Whether a SOURCE argument is a path rather than an image ref (DESIGN.md "Image
/// references"): it starts with `/`, `./` or `../`, or names an existing path.
pub fn is_path_arg(s: &str) -> bool {
    s.starts_with('/')
        || s.starts_with("./")
        || s.starts_with("../")
        || s == "."
        || s == ".."
        || Path::new(s).exists()
}

/// Where blobs come from.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// Our store: its layer-index cache is read and written.
    Layout(Store),
    /// Another OCI layout (`oci:DIR` naming a directory that is not the store). Read only:
    /// whoever made it could have forged its cache directory or aimed it elsewhere with a
    /// symlink, so layer indexes are neither read from nor written into it.
    Foreign(Store),
    /// An OCI archive, read in place.
    Archive(Arc<Archive>),
}

impl BlobSource {
    /// Opens a blob; the reader fails at its end unless digest and size match.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<VerifyReader<Box<dyn Read + Send>>> {
        match self {
            BlobSource::Layout(store) | BlobSource::Foreign(store) => {
                let r = store.open_blob(desc)?.into_inner();
                Ok(VerifyReader::new(
                    Box::new(r),
                    desc.digest.clone(),
                    Some(desc.size),
                    format!("blob {}", desc.digest),
                ))
            }
            BlobSource::Archive(a) => a.open_blob(desc),
        }
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, desc: &Descriptor) -> Result<T> {
        read_json_blob(self.open_blob(desc)?, desc)
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<Index> {
        match self {
            BlobSource::Layout(s) | BlobSource::Foreign(s) => s.read_index(),
            BlobSource::Archive(a) => a.index(),
        }
    }

    /// The store whose cache holds layer indexes (our own layouts only).
    pub fn cache_store(&self) -> Option<&Store> {
        match self {
            BlobSource::Layout(s) => Some(s),
            BlobSource::Foreign(_) | BlobSource::Archive(_) => None,
        }
    }
}

/// An OCI archive: a plain tar of a layout, read in place by offset.
#[derive(Debug)]
pub struct Archive {
    path: PathBuf,
    files: HashMap<Vec<u8>, (u64, u64)>,
}

impl Archive {
    /// Indexes the archive's members.
    pub fn open(path: &Path) -> Result<Archive> {
        let file = File::open(path).at(path)?;
        let counter = Counting {
            inner: io::BufReader::new(file),
            pos: 0,
        };
        let mut tar = TarReader::new(counter);
        let mut files = HashMap::new();
        let bad = |e: io::Error| {
            Error::Other(format!(
                "{}: not a readable OCI archive: {e}",
                path.display()
            ))
        };
        while let Some(h) = tar.next_header().map_err(bad)? {
            if h.entry.kind == crate::entry::Kind::File {
                let name = normalize_path(&h.entry.path).map_err(bad)?;
                let pos = tar_pos(&mut tar);
                // Two members of one name: tools disagree on which one counts (the first,
                // the last), so the archive could be two different images.
                if files.insert(name.clone(), (pos, h.data_size)).is_some() {
                    return Err(bad(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("two members named {}", String::from_utf8_lossy(&name)),
                    )));
                }
            }
        }
        Ok(Archive {
            path: path.to_path_buf(),
            files,
        })
    }

    fn member(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        let (off, len) = *self.files.get(name.as_bytes()).ok_or_else(|| {
            Error::Other(format!("{}: no {name} in the archive", self.path.display()))
        })?;
        let mut f = File::open(&self.path).at(&self.path)?;
        f.seek(SeekFrom::Start(off)).at(&self.path)?;
        Ok(Box::new(io::BufReader::new(f).take(len)))
    }

    fn index(&self) -> Result<Index> {
        let mut bytes = Vec::new();
        self.member("index.json")?
            .read_to_end(&mut bytes)
            .at(&self.path)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Other(format!(
                "{}: index.json: bad JSON: {e}",
                self.path.display()
            ))
        })
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<VerifyReader<Box<dyn Read + Send>>> {
        let r = self.member(&format!("blobs/sha256/{}", desc.digest.hex()))?;
        Ok(VerifyReader::new(
            r,
            desc.digest.clone(),
            Some(desc.size),
            format!("blob {}", desc.digest),
        ))
    }
}

struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn tar_pos<R: Read>(tar: &mut TarReader<Counting<R>>) -> u64 {
    // After a header, the reader sits at the start of that entry's data.
    tar.inner_pos()
}

impl<R: Read> TarReader<Counting<R>> {
    fn inner_pos(&mut self) -> u64 {
        self.inner_ref().pos
    }
}

/// An opened image: its manifest, config and where its blobs are.
#[derive(Debug, Clone)]
pub struct Image {
    /// Where the blobs are.
    pub source: BlobSource,
    /// The manifest's descriptor.
    pub manifest_desc: Descriptor,
    /// The manifest.
    pub manifest: Manifest,
    /// The config.
    pub config: ImageConfig,
    /// How the user named it.
    pub name: String,
    /// Layer indexes already built, for sources without an index cache on disk (other
    /// layouts, archives): planning and the in-order writer both need them, and reading a
    /// layer once for both is enough.
    indexes: Arc<std::sync::Mutex<HashMap<usize, LayerIndex>>>,
}

impl Image {
    /// Opens `r`; `store` is the default store for `NAME[:TAG]` refs. A `docker://` ref is
    /// pulled into `store` first, over TLS and for this machine's platform; for other
    /// registry options use [`crate::registry::open_image`].
    pub fn open(r: &ImageRef, store: &Path) -> Result<Image> {
        match r {
            ImageRef::Stash { name, tag } => {
                let s = Store::open(store).map_err(|e| match e {
                    Error::Other(m) if !store.exists() => Error::Other(format!(
                        "no stash {name}:{tag}: the store {} does not exist ({m})",
                        store.display()
                    )),
                    e => e,
                })?;
                let full = format!("{name}:{tag}");
                let desc = s.resolve(&full)?.ok_or_else(|| {
                    Error::Other(format!(
                        "no stash {full} in {} (stash --list shows what is there)",
                        s.root().display()
                    ))
                })?;
                Image::from_descriptor(BlobSource::Layout(s), desc, full)
            }
            ImageRef::Layout { dir, name } => {
                let s = Store::open(dir)?;
                let index = s.read_index()?;
                let desc = pick(&index, name.as_deref(), &r.to_string())?;
                let src = if same_dir(s.root(), store) {
                    BlobSource::Layout(s) // `oci:STORE:NAME:TAG`, as stash prints it
                } else {
                    BlobSource::Foreign(s)
                };
                Image::from_descriptor(src, desc, r.to_string())
            }
            ImageRef::Archive { file, name } => {
                let a = Arc::new(Archive::open(file)?);
                let src = BlobSource::Archive(a);
                let index = src.index()?;
                let desc = pick(&index, name.as_deref(), &r.to_string())?;
                Image::from_descriptor(src, desc, r.to_string())
            }
            ImageRef::Registry(_) => {
                crate::registry::open_image(r, store, &crate::registry::RegistryOptions::default())
            }
        }
    }

    /// Opens the image a manifest (or image index) descriptor points at.
    pub fn from_descriptor(source: BlobSource, desc: Descriptor, name: String) -> Result<Image> {
        let mut desc = desc;
        if desc.media_type == media::INDEX || desc.media_type == media::DOCKER_LIST {
            let index: Index = source.read_json(&desc)?;
            check_media_type(index.media_type.as_deref(), &desc)?;
            check_unambiguous(&index.extra, &["config", "layers"], &desc)?;
            desc = pick_platform(&index, &name)?;
        }
        if desc.media_type != media::MANIFEST && desc.media_type != media::DOCKER_MANIFEST {
            return Err(Error::Other(format!(
                "{name}: manifest media type {:?} is not supported",
                desc.media_type
            )));
        }
        let manifest: Manifest = source.read_json(&desc)?;
        check_media_type(manifest.media_type.as_deref(), &desc)?;
        check_unambiguous(&manifest.extra, &["manifests"], &desc)?;
        if manifest.schema_version != 2 {
            return Err(Error::Other(format!(
                "{name}: manifest schema version {} not supported",
                manifest.schema_version
            )));
        }
        if manifest.config.media_type != media::CONFIG
            && manifest.config.media_type != media::DOCKER_CONFIG
        {
            return Err(Error::Other(format!(
                "{name}: config media type {:?} is not supported",
                manifest.config.media_type
            )));
        }
        let config: ImageConfig = source.read_json(&manifest.config)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::Other(format!(
                "{name}: the manifest has {} layers but the config {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        for l in &manifest.layers {
            crate::layer::read::Decoder::new(io::empty(), &l.media_type)
                .map_err(|e| Error::Other(format!("{name}: layer {}: {e}", l.digest)))?;
        }
        Ok(Image {
            source,
            manifest_desc: desc,
            manifest,
            config,
            name,
            indexes: Arc::default(),
        })
    }

    /// Opens layer `i` as a verified tar stream. Its `diff_id` is checked unless our store
    /// has checked it before (a stash wrote the layer, or an index was read from it) and
    /// the config names the same one.
    pub fn open_layer(&self, i: usize) -> Result<LayerStream> {
        let desc = &self.manifest.layers[i];
        let diff_id = &self.config.rootfs.diff_ids[i];
        let pinned = self.source.cache_store().is_some_and(|store| {
            LayerIndex::cached_diff_id(&store.cache_dir(), &desc.digest).as_ref() == Some(diff_id)
        });
        let points = self.source.cache_store().map(|s| PointsCache {
            cache_dir: s.cache_dir(),
            tmp_dir: s.tmp_dir(),
        });
        open_layer(
            self.source.open_blob(desc)?,
            desc,
            diff_id,
            pinned,
            points.as_ref(),
        )
    }

    /// The index of layer `i` (cached in our store).
    pub fn layer_index(&self, i: usize) -> Result<LayerIndex> {
        let desc = &self.manifest.layers[i];
        let store = self.source.cache_store();
        if store.is_none()
            && let Some(index) = self.indexes.lock().ok().and_then(|m| m.get(&i).cloned())
        {
            return Ok(index);
        }
        let index = layer_index(store, &desc.digest, || self.open_layer(i))?;
        if store.is_none()
            && let Ok(mut memo) = self.indexes.lock()
        {
            memo.insert(i, index.clone());
        }
        Ok(index)
    }

    /// The modelled tree of the whole image, as source number `source`.
    pub fn model(&self, source: u32) -> Result<Model> {
        let mut m = Model::new();
        for i in 0..self.manifest.layers.len() {
            let index = self.layer_index(i)?;
            m.apply_layer(source, i as u32, &index);
        }
        Ok(m)
    }

    /// The clearest account of `e`, an error met while reading this image's layers: when a
    /// layer blob does not match its descriptor's digest or size, that is the cause, and is
    /// reported instead (a damaged blob makes the decompressor or the tar reader fail
    /// first, with a message about the symptom).
    ///
    /// Only the layers the message names are checked (layer errors say `layer DIGEST:`):
    /// a failure of the target (a full disk, a refused hardlink) costs no re-reading.
    pub fn explain(&self, e: Error) -> Error {
        let text = e.to_string();
        for desc in &self.manifest.layers {
            if !text.contains(desc.digest.as_str()) {
                continue;
            }
            let damaged = self
                .source
                .open_blob(desc)
                .and_then(|blob| blob.finish().map_err(Error::from));
            if let Err(damaged) = damaged {
                return damaged; // names the blob and what is wrong with it
            }
        }
        e
    }

    /// The sum of the layers' compressed sizes.
    pub fn size(&self) -> u64 {
        self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
            + self.manifest.config.size
            + self.manifest_desc.size
    }

    /// The manifest digest.
    pub fn digest(&self) -> &Digest {
        &self.manifest_desc.digest
    }
}

/// Whether two paths name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn check_media_type(doc: Option<&str>, desc: &Descriptor) -> Result<()> {
    match doc {
        Some(m) if m != desc.media_type => Err(Error::Other(format!(
            "blob {}: its mediaType {m:?} disagrees with its descriptor's {:?}",
            desc.digest, desc.media_type
        ))),
        _ => Ok(()),
    }
}

/// CVE-2021-41190: a document that carries the other kind's fields could be read as a
/// manifest by one tool and as an index by another, so it is refused (image-spec 1.0.2).
fn check_unambiguous(
    extra: &std::collections::BTreeMap<String, serde_json::Value>,
    foreign: &[&str],
    desc: &Descriptor,
) -> Result<()> {
    match foreign.iter().find(|f| extra.contains_key(**f)) {
        Some(f) => Err(Error::Other(format!(
            "blob {}: a {} with a {f:?} field is ambiguous (CVE-2021-41190)",
            desc.digest, desc.media_type
        ))),
        None => Ok(()),
    }
}

fn pick(index: &Index, name: Option<&str>, shown: &str) -> Result<Descriptor> {
    let names: Vec<&str> = index
        .manifests
        .iter()
        .filter_map(Descriptor::ref_name)
        .collect();
    match name {
        Some(n) => {
            let with_latest = format!("{n}:latest");
            index
                .manifests
                .iter()
                .find(|d| d.ref_name() == Some(n))
                .or_else(|| {
                    if n.contains(':') {
                        None
                    } else {
                        index
                            .manifests
                            .iter()
                            .find(|d| d.ref_name() == Some(&with_latest))
                    }
                })
                .cloned()
                .ok_or_else(|| {
                    Error::Other(format!(
                        "{shown}: no image named {n:?} (there are: {})",
                        names.join(", ")
                    ))
                })
        }
        None if index.manifests.len() == 1 => Ok(index.manifests[0].clone()),
        None => Err(Error::Usage(format!(
            "{shown}: holds {} images; name one with :NAME:TAG (there are: {})",
            index.manifests.len(),
            names.join(", ")
        ))),
    }
}

fn pick_platform(index: &Index, name: &str) -> Result<Descriptor> {
    let arch = host_arch();
    index
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .cloned()
        .ok_or_else(|| Error::Other(format!("{name}: the image index has no linux/{arch} image")))
}

impl Image {
    /// The contents of the regular file `path` in the image's merged tree (`None` when it
    /// is absent or not a regular file), read from the one layer that holds its final
    /// version, without unpacking anything else. Files over `limit` bytes are refused.
    pub fn read_file(&self, path: &[u8], limit: u64) -> Result<Option<Vec<u8>>> {
        let model = self.model(0)?;
        if model.complex {
            return Err(Error::Other(format!(
                "{}: its layers write through symlinks; unstash it to read {}",
                self.name,
                String::from_utf8_lossy(path)
            )));
        }
        let Some(node) = model.nodes.get(path) else {
            return Ok(None);
        };
        if !matches!(
            node.entry.kind,
            crate::entry::Kind::File | crate::entry::Kind::Hardlink
        ) {
            return Ok(None);
        }
        if node.entry.size > limit {
            return Err(Error::Other(format!(
                "{}: {} is {} bytes, more than the {limit} this reads",
                self.name,
                String::from_utf8_lossy(path),
                node.entry.size
            )));
        }
        let (_, layer, index) = node.data_origin;
        let mut stream = self.open_layer(layer as usize)?;
        let digest = stream.digest.clone();
        let err = |e: io::Error| crate::layer::read::layer_error(&digest, &e);
        let mut i = 0u32;
        let mut found = None;
        while let Some(_h) = stream.tar.next_header().map_err(err)? {
            if i == index {
                let mut bytes = Vec::new();
                stream.tar.data().read_to_end(&mut bytes).map_err(err)?;
                found = Some(bytes);
            }
            i += 1;
        }
        // Read to the end: the bytes count only once the layer's digests check out.
        stream.finish()?;
        match found {
            Some(bytes) => Ok(Some(bytes)),
            None => Err(Error::Other(format!(
                "{}: layer {layer} ended before entry {index}",
                self.name
            ))),
        }
    }
}
