//! Writing a layer: entries → PAX tar → compressor → blob, hashing the tar (`diff_id`) and
//! the blob (digest) as the bytes stream past, in one pass.

use std::io::Read;

use super::compress::{Compression, Compressor};
use super::index::{Change, LayerIndex};
use crate::digest::{Digest, HashWriter};
use crate::entry::Entry;
use crate::oci::store::BlobWriter;
use crate::oci::{Descriptor, Store};
use crate::tar::Builder;
use crate::{Error, Result};

/// A layer being written.
#[derive(Debug)]
pub struct LayerWriter {
    tar: Builder<HashWriter<Compressor<BlobWriter>>>,
    compression: Compression,
    index: LayerIndex,
}

/// A finished layer.
#[derive(Debug, Clone)]
pub struct WrittenLayer {
    /// The blob's descriptor.
    pub descriptor: Descriptor,
    /// The uncompressed tar's digest.
    pub diff_id: Digest,
    /// The uncompressed tar's size.
    pub tar_size: u64,
    /// Its index (also cached in the store).
    pub index: LayerIndex,
}

impl LayerWriter {
    /// Starts a layer blob in `store`.
    pub fn new(store: &Store, compression: Compression, threads: usize) -> Result<Self> {
        let blob = store.blob_writer()?;
        let comp = Compressor::new(blob, compression, threads)
            .map_err(|e| Error::Other(format!("compressor: {e}")))?;
        Ok(LayerWriter {
            tar: Builder::new(HashWriter::new(comp)),
            compression,
            index: LayerIndex::default(),
        })
    }

    /// Appends an entry (see [`Builder::put`]).
    pub fn put(&mut self, e: &Entry, data: Option<&mut dyn Read>) -> Result<()> {
        let digest = self.tar.put(e, data)?;
        self.index.changes.push(Change::Put(e.clone(), digest));
        Ok(())
    }

    /// Appends a whiteout for `path`.
    pub fn whiteout(&mut self, path: &[u8]) -> Result<()> {
        self.tar.whiteout(path)?;
        self.index.changes.push(Change::Whiteout(path.to_vec()));
        Ok(())
    }

    /// File bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.tar.bytes
    }

    /// Ends the tar, the compression and the blob.
    pub fn finish(self, store: &Store) -> Result<WrittenLayer> {
        let (comp, diff_id, tar_size) = self.tar.finish()?.finish();
        let (blob, points) = comp
            .finish_with_points()
            .map_err(|x| Error::Other(format!("writing layer: {x}")))?;
        let (digest, size) = blob.commit()?;
        self.index
            .save_cached(&store.cache_dir(), &store.tmp_dir(), &digest, &diff_id);
        if let Some(points) = points {
            super::points::save(&store.cache_dir(), &store.tmp_dir(), &digest, &points);
        }
        Ok(WrittenLayer {
            descriptor: Descriptor::new(self.compression.media_type(), digest, size),
            diff_id,
            tar_size,
            index: self.index,
        })
    }
}
