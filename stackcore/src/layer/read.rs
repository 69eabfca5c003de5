//! Opening a layer blob as a verified, decompressed tar stream.

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::inflate::{RawInflate, Step};
use super::points::{self, Point, Points, PointsCache};
use crate::digest::{Digest, Verifier, VerifyReader};
use crate::oci::{Descriptor, media};
use crate::tar::TarReader;
use crate::{Error, Result};

/// A decompressor chosen by media type.
#[allow(clippy::large_enum_variant)] // one per layer stream; boxing buys nothing
pub enum Decoder<R: BufRead> {
    /// gzip.
    Gzip(Gunzip<R>),
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
                Decoder::Gzip(Gunzip::new(inner).map_err(|e| Error::Other(format!("gzip: {e}")))?)
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
            Decoder::Gzip(d) => d.inner,
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

/// A gzip stream of any number of members (RFC 1952), inflated with zlib-rs, without the
/// CRC-32 of each member: every layer read is checked by the blob's SHA-256 and by its
/// `diff_id` (hashed, or pinned by the store's record of an earlier check), which leave the
/// CRC nothing to find. Skipping it (and `flate2`'s gzip wrapper) takes the inflating thread,
/// the longest of an unstash, from 243 to 216 ms for a minbase layer (171 MB of tar). Each
/// member's size (ISIZE, modulo 2^32) is still checked, and a header or trailer cut short, a
/// reserved flag or trailing bytes that are not a member are errors.
///
/// Told to [`record`](Gunzip::record), it also notes access points as it goes (see
/// `layer/points.rs`), for a stream of one member.
#[derive(Debug)]
pub struct Gunzip<R> {
    inner: R,
    z: RawInflate,
    /// Bytes out of the current member, modulo 2^32 (as ISIZE counts them).
    size: u32,
    state: GunzipState,
    /// Bytes taken from `inner` so far.
    pos: u64,
    /// Bytes out so far, all members.
    out: u64,
    members: u32,
    recorder: Option<Recorder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GunzipState {
    /// Before the first member: a header must come.
    First,
    /// Between members: a header, or the end.
    Between,
    /// Inside a member's deflate data.
    Body,
}

/// Access points noted during a sequential read.
#[derive(Debug)]
struct Recorder {
    points: Vec<Point>,
    /// Where the last point is (0: the start).
    last: u64,
    /// Uncompressed bytes from one point to the next, at least.
    spacing: u64,
    /// The latest output, kept only near where the next point may go.
    tail: Vec<u8>,
    /// The stream cannot have points (a second member, a span too long).
    failed: bool,
}

impl Recorder {
    /// Takes note of `made`, the output of one step that ended at `out` bytes out and `pos`
    /// bytes in.
    fn saw(&mut self, made: &[u8], out: u64, step: &Step, pos: u64) {
        if self.failed {
            return;
        }
        let due = self.last + self.spacing;
        if out + points::WINDOW as u64 > due {
            let keep = &made[made.len().saturating_sub(points::WINDOW)..];
            self.tail.extend_from_slice(keep);
            if self.tail.len() > 2 * points::WINDOW {
                self.tail.drain(..self.tail.len() - points::WINDOW);
            }
        }
        if step.boundary && out >= due {
            if out - self.last > points::MAX_SPAN {
                self.failed = true;
                return;
            }
            let window = self.tail[self.tail.len().saturating_sub(points::WINDOW)..].to_vec();
            self.points.push(Point {
                out,
                bit: pos * 8 - u64::from(step.pending_bits),
                window,
            });
            self.last = out;
            self.tail.clear();
            if self.points.len() == points::MAX_POINTS {
                points::thin(&mut self.points);
                self.spacing *= 2;
                // Spans that long would be refused when read back.
                self.failed = self.spacing > points::MAX_SPAN / 2;
            }
        }
    }
}

fn gzip_error(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn byte(r: &mut impl BufRead) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).map_err(|e| cut_short(e, "header"))?;
    Ok(b[0])
}

/// Reads a member header, checking what matters (magic, method, no reserved flags) and
/// skipping the optional fields; returns its length.
pub(crate) fn gzip_header(r: &mut impl BufRead) -> io::Result<u64> {
    let mut h = [0u8; 10];
    r.read_exact(&mut h).map_err(|e| cut_short(e, "header"))?;
    if h[..3] != [0x1f, 0x8b, 8] {
        return Err(gzip_error("not a gzip member (bad magic or method)"));
    }
    let mut len = 10;
    let flags = h[3];
    if flags & 0xe0 != 0 {
        return Err(gzip_error("reserved header flags set"));
    }
    if flags & 4 != 0 {
        let xlen = u16::from_le_bytes([byte(r)?, byte(r)?]);
        let skipped = io::copy(&mut r.take(u64::from(xlen)), &mut io::sink())?;
        if skipped != u64::from(xlen) {
            return Err(gzip_error("header cut short"));
        }
        len += 2 + skipped;
    }
    for field in [8u8, 16] {
        // FNAME, FCOMMENT: zero-terminated.
        if flags & field != 0 {
            len += 1;
            while byte(r)? != 0 {
                len += 1;
            }
        }
    }
    if flags & 2 != 0 {
        byte(r)?;
        byte(r)?; // FHCRC
        len += 2;
    }
    Ok(len)
}

/// Checks a member's trailer against the member's size (modulo 2^32).
pub(crate) fn gzip_trailer(t: [u8; 8], size: u32) -> io::Result<()> {
    if u32::from_le_bytes([t[4], t[5], t[6], t[7]]) != size {
        return Err(gzip_error(
            "member size in the trailer does not match its data",
        ));
    }
    Ok(())
}

impl<R: BufRead> Gunzip<R> {
    /// Reads the gzip stream `inner`.
    pub fn new(inner: R) -> io::Result<Self> {
        Ok(Gunzip {
            inner,
            z: RawInflate::new()?,
            size: 0,
            state: GunzipState::First,
            pos: 0,
            out: 0,
            members: 0,
            recorder: None,
        })
    }

    /// Notes access points while reading (see `layer/points.rs`): take them with
    /// [`Gunzip::points`] at the end.
    pub fn record(&mut self) {
        self.recorder = Some(Recorder {
            points: Vec::new(),
            last: 0,
            spacing: points::SPACING,
            tail: Vec::new(),
            failed: false,
        });
    }

    /// The access points noted, once the whole stream was read, if it has any.
    pub fn points(&mut self) -> Option<Points> {
        let r = self.recorder.take()?;
        let ended = self.state == GunzipState::Between && self.members == 1;
        (ended && !r.failed && !r.points.is_empty() && self.out - r.last <= points::MAX_SPAN)
            .then_some(Points {
                size: self.out,
                points: r.points,
            })
    }

    /// Reads a member's trailer and checks its size.
    fn trailer(&mut self) -> io::Result<()> {
        let mut t = [0u8; 8];
        self.inner
            .read_exact(&mut t)
            .map_err(|e| cut_short(e, "trailer"))?;
        self.pos += 8;
        gzip_trailer(t, self.size)
    }
}

fn cut_short(e: io::Error, what: &str) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::UnexpectedEof, format!("{what} cut short"))
    } else {
        e
    }
}

impl<R: BufRead> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                GunzipState::First | GunzipState::Between => {
                    if self.state == GunzipState::Between && self.inner.fill_buf()?.is_empty() {
                        return Ok(0);
                    }
                    self.pos += gzip_header(&mut self.inner)?;
                    self.z.reset()?;
                    self.size = 0;
                    self.members += 1;
                    if self.members > 1
                        && let Some(r) = &mut self.recorder
                    {
                        r.failed = true;
                    }
                    self.state = GunzipState::Body;
                }
                GunzipState::Body => {
                    let input = self.inner.fill_buf()?;
                    if input.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "deflate data cut short",
                        ));
                    }
                    let step = self.z.inflate(input, buf, self.recorder.is_some())?;
                    self.inner.consume(step.used);
                    self.pos += step.used as u64;
                    self.out += step.made as u64;
                    self.size = self.size.wrapping_add(step.made as u32);
                    if let Some(r) = &mut self.recorder {
                        r.saw(&buf[..step.made], self.out, &step, self.pos);
                    }
                    if step.end {
                        self.trailer()?;
                        self.state = GunzipState::Between;
                    } else if step.used == 0 && step.made == 0 {
                        return Err(gzip_error("deflate data makes no progress"));
                    }
                    if step.made > 0 {
                        return Ok(step.made);
                    }
                }
            }
        }
    }
}

/// Threads that inflate a gzip layer with access points: 0 = all cores (see
/// [`set_read_threads`]).
static READ_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many threads inflate a gzip layer that has access points (`--threads`; 0 = all
/// cores, `$STACKBUILD_THREADS` if set). With 1, every layer is inflated on one thread.
pub fn set_read_threads(n: usize) {
    READ_THREADS.store(n, Ordering::Relaxed);
}

/// The inflating threads: as set, or by default all cores when there are more than two.
/// On two, the reading pipeline already keeps both busy (a minbase unstash: the inflating
/// thread 230 ms of CPU, the writing one 203 ms, the blob reader 52 ms), so spreading the
/// inflate over them cannot shorten a run, and costs a little more CPU in all (see README,
/// "Benchmarks").
fn read_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    match READ_THREADS.load(Ordering::Relaxed) {
        0 if std::env::var_os("STACKBUILD_THREADS").is_some() => {
            super::compress::available_threads()
        }
        0 if cores > 2 => cores,
        0 => 1,
        n => n,
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
/// A gzip layer of our store with access points (`cache`, see `layer/points.rs`) is
/// inflated on several threads ([`set_read_threads`]; `layer/par.rs`), with the same
/// bytes as one; without them, its first read records them.
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
    cache: Option<&PointsCache>,
) -> Result<LayerStream> {
    let raw = Prefetch::start(move |tx, recycled| {
        off_the_critical_path();
        let res = pump(blob, tx, recycled).map(drop);
        let _ = tx.send(res.map(|()| (Vec::new(), 0))); // the reader may be gone
    });
    let gzip = matches!(
        desc.media_type.as_str(),
        media::LAYER_GZIP | media::DOCKER_LAYER_GZIP
    );
    let threads = read_threads();
    let cache = cache.filter(|_| gzip);
    let file = cache.map(|c| points::file(&c.cache_dir, &desc.digest));
    let pts = match (cache, threads) {
        (Some(c), 2..) => points::load(&c.cache_dir, &desc.digest),
        _ => None,
    };
    let tar = if let (Some(pts), Some(file)) = (pts, file.clone()) {
        Prefetch::start(move |tx, recycled| {
            let res = super::par::par_gunzip(raw, pts, threads, &file, tx, recycled)
                // The end of the member: the rest of the blob, to its end and its check.
                .and_then(|mut raw| io::copy(&mut raw, &mut io::sink()).map(drop));
            let _ = tx.send(res.map(|()| (Vec::new(), 0))); // the reader may be gone
        })
    } else {
        let mut decoder = Decoder::new(raw, &desc.media_type)?;
        // Record access points where there are none yet.
        let record = cache
            .zip(file)
            .filter(|(_, file)| !file.exists())
            .map(|(c, _)| (c.clone(), desc.digest.clone()));
        if let (Decoder::Gzip(g), Some(_)) = (&mut decoder, &record) {
            g.record();
        }
        Prefetch::start(move |tx, recycled| {
            let res = (|| {
                let mut decoder = pump(decoder, tx, recycled)?;
                let pts = match &mut decoder {
                    Decoder::Gzip(g) => g.points(),
                    _ => None,
                };
                // The uncompressed stream ended: the rest of the blob, to its end and its check.
                io::copy(&mut decoder.into_inner(), &mut io::sink())?;
                if let (Some(pts), Some((c, digest))) = (pts, record) {
                    points::save(&c.cache_dir, &c.tmp_dir, &digest, &pts);
                }
                Ok(())
            })();
            let _ = tx.send(res.map(|()| (Vec::new(), 0))); // the reader may be gone
        })
    };
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
pub(crate) type Chunk = io::Result<(Vec<u8>, usize)>;

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
    pub(crate) fn start(
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
pub(crate) fn pump<S: Read>(
    mut src: S,
    tx: &SyncSender<Chunk>,
    recycled: &Receiver<Vec<u8>>,
) -> io::Result<S> {
    loop {
        let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        buf.resize(CHUNK, 0); // a no-op but for a buffer of the parallel inflate
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
                    if used.capacity() >= CHUNK {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::compress::tests::sample;
    use std::io::Write;

    fn gunzip(gz: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // Small reads too: a member may end anywhere in a caller's buffer.
        let mut g = Gunzip::new(io::BufReader::with_capacity(4096, gz))?;
        let mut buf = [0u8; 1000];
        loop {
            let n = g.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    fn flate2_gunzip(gz: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(gz).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn gunzip_reads_what_flate2_reads() -> io::Result<()> {
        let data = sample(3 << 20);
        let mut ours =
            crate::layer::Compressor::new(Vec::new(), crate::layer::Compression::Gzip(6), 2)?;
        ours.write_all(&data)?;
        let ours = ours.finish()?;
        // Every optional header field, a second member, an empty third one.
        let mut fancy = flate2::GzBuilder::new()
            .filename("name")
            .comment("comment")
            .extra(vec![b'X', b'Y', 2, 0, 7, 7])
            .write(Vec::new(), flate2::Compression::new(1));
        fancy.write_all(&data[..100_000])?;
        let mut fancy = fancy.finish()?;
        // FHCRC: the low 16 bits of the CRC-32 of the header before it.
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        plain.write_all(b"with a header crc")?;
        let plain = plain.finish()?;
        let mut hcrc = plain[..10].to_vec();
        hcrc[3] |= 2;
        let crc16 = (crc32fast::hash(&hcrc) & 0xffff) as u16;
        hcrc.extend_from_slice(&crc16.to_le_bytes());
        hcrc.extend_from_slice(&plain[10..]);
        fancy.extend_from_slice(&hcrc);
        fancy.extend_from_slice(
            &flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6)).finish()?,
        );
        for gz in [&ours, &fancy] {
            assert_eq!(gunzip(gz)?, flate2_gunzip(gz)?);
        }
        assert_eq!(gunzip(&ours)?, data);
        Ok(())
    }

    #[test]
    fn gunzip_refuses_what_is_broken() -> io::Result<()> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&sample(200_000))?;
        let gz = e.finish()?;
        let n = gz.len();
        let mut size = gz.clone();
        size[n - 1] ^= 1;
        let mut trailing = gz.clone();
        trailing.extend_from_slice(b"garbage!!!!!");
        let mut reserved = gz.clone();
        reserved[3] |= 0x20;
        let mut deflate = gz.clone();
        deflate[40] ^= 0xff;
        let cases: [(&str, &[u8]); 7] = [
            ("empty", b""),
            ("header cut", &gz[..6]),
            ("data cut", &gz[..n / 2]),
            ("trailer cut", &gz[..n - 3]),
            ("size", &size),
            ("trailing bytes", &trailing),
            ("reserved flag", &reserved),
        ];
        for (what, bytes) in cases {
            assert!(gunzip(bytes).is_err(), "{what}");
        }
        // Damaged deflate data is an error or different bytes (the digests catch those).
        assert!(gunzip(&deflate).map_or(true, |d| d != sample(200_000)));
        Ok(())
    }
}
