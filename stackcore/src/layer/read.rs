//! Opening a layer blob as a verified, decompressed tar stream.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use flate2::bufread::MultiGzDecoder;

use crate::digest::{Digest, Verifier, VerifyReader};
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

/// Opens a layer: `blob` is the raw (verified) blob reader, `diff_id` the expected digest of
/// the uncompressed tar (from the image config).
///
/// The layer is read ahead of the caller by a pipeline of threads, each handing 1 MiB chunks
/// to the next, so that an unstash decompresses and hashes while it writes files: one thread
/// reads the blob and checks its digest and size, one decompresses, one computes the
/// `diff_id` (a SHA-256 of the whole uncompressed stream) over the chunks it passes on, and
/// the caller reads the tar. Measured on a Debian minbase stackmerge with gzip layers, the
/// decompressing thread is the longest (inflate is nearly all of it), then the writing
/// one; a hash on either made the whole run that much longer. The caller sees the end of
/// the stream only once every check passed.
///
/// `pinned` says the store has already checked that this blob decompresses to `diff_id`
/// (see `layer/cache.rs`): then the blob's digest, checked as ever, is enough, and the
/// uncompressed stream is not hashed again (a quarter of the CPU time of a gzip unstash's
/// reading side: 105 of 425 ms).
pub fn open_layer<R: Read + Send + 'static>(
    blob: VerifyReader<R>,
    desc: &Descriptor,
    diff_id: &Digest,
    pinned: bool,
) -> Result<LayerStream> {
    let raw = Prefetch::start(move |tx, recycled| {
        off_the_critical_path();
        let res = pump(blob, tx, recycled).map(drop);
        let _ = tx.send(res.map(|()| (Vec::new(), 0))); // the reader may be gone
    });
    let decoder = Decoder::new(raw, &desc.media_type)?;
    let tar = Prefetch::start(move |tx, recycled| {
        let res = (|| {
            let decoder = pump(decoder, tx, recycled)?;
            // The uncompressed stream ended: the rest of the blob, to its end and its check.
            io::copy(&mut decoder.into_inner(), &mut io::sink()).map(drop)
        })();
        let _ = tx.send(res.map(|()| (Vec::new(), 0))); // the reader may be gone
    });
    if pinned {
        return Ok(LayerStream {
            tar: TarReader::new(tar),
            digest: desc.digest.clone(),
            diff_id: diff_id.clone(),
        });
    }
    let mut check = Verifier::new(diff_id.clone(), None, "uncompressed tar (diff_id)");
    let checked = Prefetch::start(move |tx, recycled| {
        off_the_critical_path();
        while let Ok(chunk) = tar.rx.recv() {
            // The caller's used buffers go back to the decompressing thread.
            while let Ok(buf) = recycled.try_recv() {
                let _ = tar.recycle.try_send(buf);
            }
            let out = match chunk {
                Ok((buf, 0)) => check.finish().map(|()| (buf, 0)),
                Ok((buf, n)) => check.update(&buf[..n]).map(|()| (buf, n)),
                Err(e) => Err(e),
            };
            let last = !matches!(out, Ok((_, n)) if n > 0);
            if tx.send(out).is_err() || last {
                return;
            }
        }
        // The decompressing thread stopped without a last word: the reader hears it as such.
    });
    Ok(LayerStream {
        tar: TarReader::new(checked),
        digest: desc.digest.clone(),
        diff_id: diff_id.clone(),
    })
}

/// A layer being read.
#[derive(Debug)]
pub struct LayerStream {
    /// The tar reader.
    pub tar: TarReader<Prefetch>,
    /// The blob's digest (for messages).
    pub digest: Digest,
    /// The digest of the uncompressed tar, checked (or pinned by the store's record) once
    /// [`LayerStream::finish`] returns.
    pub diff_id: Digest,
}

impl LayerStream {
    /// Reads to the end and checks every digest; call after the last header.
    pub fn finish(self) -> Result<()> {
        let digest = self.digest;
        let mut rest = self.tar.into_inner();
        let mut b = [0u8; 1];
        // The tar reader stopped at its end marker and read the zero padding after it; what
        // is left is the end of the stream, where the checks report.
        if rest.read(&mut b).map_err(|e| layer_error(&digest, &e))? != 0 {
            return Err(layer_error(
                &digest,
                &io::Error::other("data after the end of the tar"),
            ));
        }
        Ok(())
    }
}

/// Bytes per chunk handed along the pipeline.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between two threads: bounds memory at a few MiB whatever the layer's
/// size.
const AHEAD: usize = 3;

/// A chunk of a stream: a buffer and how many of its bytes are data. Zero bytes mean the
/// end of the stream, with every check passed.
type Chunk = io::Result<(Vec<u8>, usize)>;

/// A reader fed by a thread of its own, which reads (and checks) ahead of it. Buffers it is
/// done with go back to that thread, which would otherwise allocate and zero a new one per
/// chunk (5% of an unstash, in the kernel and in memset).
#[derive(Debug)]
pub struct Prefetch {
    rx: Receiver<Chunk>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    len: usize,
    pos: usize,
    done: bool,
}

impl Prefetch {
    /// Runs `feed` on a new thread: it sends chunks (the last one empty, or an error) and
    /// may take buffers back from the second channel.
    fn start(
        feed: impl FnOnce(&SyncSender<Chunk>, &Receiver<Vec<u8>>) + Send + 'static,
    ) -> Prefetch {
        let (recycle, recycled) = sync_channel(2 * AHEAD + 2);
        let (tx, rx) = sync_channel(AHEAD);
        std::thread::spawn(move || feed(&tx, &recycled));
        Prefetch {
            rx,
            recycle,
            cur: Vec::new(),
            len: 0,
            pos: 0,
            done: false,
        }
    }
}

/// Lowers the calling thread's priority (nice 10; on Linux a thread has its own): for the
/// threads that read the blob and hash, whose work fits in the gaps the decompressing and
/// the writing threads leave. Measured on a minbase stackmerge (gzip, 2 cores, hyperfine,
/// 15 runs): 375 ms with every thread equal, 365 ms with the blob reader at nice 10.
fn off_the_critical_path() {
    let _ = rustix::process::setpriority_process(None, 10); // a hint: failing changes nothing
}

/// Sends `src` in chunks until it ends, and returns it; a read error is sent as the last
/// chunk (and returned as "stopped"). The caller sends the end.
fn pump<S: Read>(
    mut src: S,
    tx: &SyncSender<Chunk>,
    recycled: &Receiver<Vec<u8>>,
) -> io::Result<S> {
    loop {
        let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        let n = crate::extract::read_full(&mut src, &mut buf)?;
        if n == 0 {
            return Ok(src);
        }
        if tx.send(Ok((buf, n))).is_err() {
            // The reader went away: nothing left to read or check for.
            return Err(io::Error::other("the layer reader stopped"));
        }
    }
}

impl BufRead for Prefetch {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.len {
            if self.done {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Ok((_, 0))) => self.done = true,
                Ok(Ok((chunk, n))) => {
                    let used = std::mem::replace(&mut self.cur, chunk);
                    if used.len() == CHUNK {
                        let _ = self.recycle.try_send(used); // full or gone: let it drop
                    }
                    self.len = n;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => return Err(io::Error::other("the layer reading thread stopped")),
            }
        }
        Ok(&self.cur[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

impl Read for Prefetch {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = buf.len().min(avail.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Maps an I/O error from a layer stream to a message naming the layer.
pub fn layer_error(digest: &Digest, e: &io::Error) -> Error {
    Error::Other(format!("layer {digest}: {e}"))
}
