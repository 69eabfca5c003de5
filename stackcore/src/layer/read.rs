//! Opening a layer blob as a verified, decompressed tar stream.

use std::io::{self, BufRead, BufReader, Read};

use flate2::bufread::MultiGzDecoder;

use crate::digest::{Digest, VerifyReader};
use crate::oci::{Descriptor, media};
use crate::tar::TarReader;
use crate::{Error, Result};

/// A decompressor chosen by media type.
#[allow(clippy::large_enum_variant)] // one per layer stream; boxing buys nothing
pub enum Decoder<R: BufRead> {
    /// gzip.
    Gzip(MultiGzDecoder<R>),
    /// zstd.
    Zstd(zstd::stream::read::Decoder<'static, R>),
    /// Uncompressed.
    Plain(R),
}

impl<R: BufRead> std::fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decoder::Gzip(_) => "Decoder::Gzip",
            Decoder::Zstd(_) => "Decoder::Zstd",
            Decoder::Plain(_) => "Decoder::Plain",
        })
    }
}

impl<R: BufRead> Decoder<R> {
    /// A decoder for `media_type`; unknown media types are refused.
    pub fn new(inner: R, media_type: &str) -> Result<Self> {
        Ok(match media_type {
            media::LAYER_GZIP | media::DOCKER_LAYER_GZIP => {
                Decoder::Gzip(MultiGzDecoder::new(inner))
            }
            media::LAYER_ZSTD | media::DOCKER_LAYER_ZSTD => Decoder::Zstd(
                zstd::stream::read::Decoder::with_buffer(inner)
                    .map_err(|e| Error::Other(format!("zstd: {e}")))?,
            ),
            media::LAYER_TAR => Decoder::Plain(inner),
            other => {
                return Err(Error::Other(format!(
                    "layer media type {other:?} is not supported"
                )));
            }
        })
    }

    /// The compressed reader, for draining what the decompressor did not need.
    pub fn into_inner(self) -> R {
        match self {
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
            Decoder::Plain(r) => r,
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Name the format: "incomplete deflate stream" alone does not say which layer
        // property is broken.
        let named = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        match self {
            Decoder::Gzip(d) => d.read(buf).map_err(|e| named("gzip", e)),
            Decoder::Zstd(d) => d.read(buf).map_err(|e| named("zstd", e)),
            Decoder::Plain(r) => r.read(buf),
        }
    }
}

/// A layer's tar stream: the blob's digest and size and the tar's `diff_id` are checked by the
/// time [`LayerStream::finish`] returns.
pub type LayerTar<R> = TarReader<VerifyReader<Decoder<BufReader<VerifyReader<R>>>>>;

/// Opens a layer: `blob` is the raw (verified) blob reader, `diff_id` the expected digest of
/// the uncompressed tar (from the image config).
pub fn open_layer<R: Read>(
    blob: VerifyReader<R>,
    desc: &Descriptor,
    diff_id: Option<&Digest>,
) -> Result<LayerStream<R>> {
    let decoder = Decoder::new(BufReader::with_capacity(256 << 10, blob), &desc.media_type)?;
    let what = "uncompressed tar (diff_id)";
    let check = match diff_id {
        Some(d) => VerifyReader::new(decoder, d.clone(), None, what),
        None => VerifyReader::unchecked(decoder, what),
    };
    Ok(LayerStream {
        tar: TarReader::new(check),
        digest: desc.digest.clone(),
    })
}

/// A layer being read.
#[derive(Debug)]
pub struct LayerStream<R: Read> {
    /// The tar reader.
    pub tar: LayerTar<R>,
    /// The blob's digest (for messages).
    pub digest: Digest,
}

impl<R: Read> LayerStream<R> {
    /// Reads to the end and checks every digest; call after the last header. A blob that
    /// does not match its descriptor is reported as such, before what it decompressed to.
    pub fn finish(self) -> Result<()> {
        let digest = self.digest;
        let wrap = |e: io::Error| Error::Other(format!("layer {digest}: {e}"));
        let mut check = self.tar.into_inner();
        // The tar reader read to the end of the uncompressed stream, where the diff_id check
        // fires; one more read returns that verdict again.
        let mut b = [0u8; 1];
        let tail = match check.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(_) => Err(io::Error::other("data after the end of the tar")),
            Err(e) => Err(e),
        };
        let blob = check.into_inner().into_inner().into_inner();
        blob.finish().map_err(wrap)?;
        tail.map_err(wrap)
    }
}

/// Maps an I/O error from a layer stream to a message naming the layer.
pub fn layer_error(digest: &Digest, e: &io::Error) -> Error {
    Error::Other(format!("layer {digest}: {e}"))
}
