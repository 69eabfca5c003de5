//! An opened image: its manifest, config and where its blobs are ([`BlobSource`]), and reading
//! its layers. Which ref names which image, and pulling, are [`crate::open`]'s.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

pub use crate::archive::Archive;
pub use crate::imageref::{ImageRef, is_path_arg, split_tag};

use crate::digest::{Digest, VerifyReader};
use crate::layer::index::{LayerIndex, layer_index};
use crate::layer::model::Model;
use crate::layer::points::PointsCache;
use crate::layer::read::{LayerStream, open_layer};
use crate::oci::Store;
use crate::oci::store::read_json_blob;
use crate::oci::types::{Descriptor, ImageConfig, Index, Manifest, media};
use crate::platform::PlatformSpec;
use crate::{Error, Result};

/// Where blobs come from.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// A store of ours: its layer-index cache is read and written.
    Layout(Store),
    /// Another OCI layout (`oci:DIR` naming a directory that is not a store of ours, see
    /// [`crate::oci::mark`]). Read only:
    /// whoever made it could have forged its cache directory or aimed it elsewhere with a
    /// symlink, so layer indexes are neither read from nor written into it.
    Foreign(Store),
    /// An OCI or docker archive, read in place.
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
    /// Opens the image a manifest (or image index) descriptor points at; from an image
    /// index, this machine's platform.
    pub fn from_descriptor(source: BlobSource, desc: Descriptor, name: String) -> Result<Image> {
        Image::from_descriptor_for(source, desc, name, &PlatformSpec::host())
    }

    /// Opens the image a manifest (or image index) descriptor points at; from an image
    /// index, the image for `platform`.
    pub fn from_descriptor_for(
        source: BlobSource,
        desc: Descriptor,
        name: String,
        platform: &PlatformSpec,
    ) -> Result<Image> {
        let mut desc = desc;
        if desc.media_type == media::INDEX || desc.media_type == media::DOCKER_LIST {
            let index: Index = source.read_json(&desc)?;
            check_media_type(index.media_type.as_deref(), &desc)?;
            check_unambiguous(&index.extra, &["config", "layers"], &desc)?;
            desc = platform.pick(&index).cloned().ok_or_else(|| {
                Error::Other(format!(
                    "{name}: the image index has no {platform} image (it has: {})",
                    PlatformSpec::offered(&index)
                ))
            })?;
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
    /// the config names the same one, or the layer is an uncompressed tar whose blob digest
    /// (checked as it is read) is that `diff_id`.
    pub fn open_layer(&self, i: usize) -> Result<LayerStream> {
        let desc = &self.manifest.layers[i];
        let diff_id = &self.config.rootfs.diff_ids[i];
        let uncompressed = desc.media_type == media::LAYER_TAR
            || desc.media_type == "application/vnd.docker.image.rootfs.diff.tar";
        let pinned = (uncompressed && &desc.digest == diff_id)
            || self.source.cache_store().is_some_and(|store| {
                LayerIndex::cached_diff_id(&store.cache_dir(), &desc.digest).as_ref()
                    == Some(diff_id)
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
    /// The layers the error names ([`Error::blob_digests`]) are checked; an error naming
    /// none is checked against every layer, unless it is an I/O error on a path (a full
    /// disk costs no re-reading).
    pub fn explain(&self, e: Error) -> Error {
        // The layers the error names; where it names none and is not an error on a path of
        // ours (a full disk, say), any of them may be behind it.
        let named = e.blob_digests();
        let suspect =
            |d: &Digest| named.contains(&d) || (named.is_empty() && !matches!(e, Error::Io { .. }));
        for desc in &self.manifest.layers {
            if !suspect(&desc.digest) {
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

/// The image `name` names in an OCI layout's `index.json` (`:latest` implied), or its only
/// image when `name` is `None`.
pub(crate) fn pick(index: &Index, name: Option<&str>, shown: &str) -> Result<Descriptor> {
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
        let err = |e: io::Error| Error::layer(&digest, e);
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
