//! Layer compression: gzip on all cores with output identical at any thread count, zstd,
//! or none.
//!
//! Parallel gzip works as pigz does: the stream is cut into fixed 1 MiB blocks, each block is
//! deflated on its own with the previous block's last 32 KiB as a preset dictionary and ends
//! in a sync flush, and the pieces are concatenated into one gzip member. Block boundaries
//! depend only on the byte count, never on the thread count or on how the caller's writes
//! are sized, so the same tar always gives the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};

use super::points::{self, Point, Points};
use crate::oci::media;

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip at `level` (1-9); what every client reads. Default level 6.
    Gzip(u32),
    /// zstd at `level` (1-19); umoci before 0.5 cannot read it. Default level 3.
    Zstd(i32),
    /// No compression: fastest for a local store.
    None,
}

impl Compression {
    /// Parses `gzip`, `zstd` or `none`, with an optional level.
    pub fn parse(name: &str, level: Option<i32>) -> crate::Result<Self> {
        match name {
            "gzip" => {
                let l = level.unwrap_or(6);
                if !(1..=9).contains(&l) {
                    return Err(crate::Error::Usage(format!(
                        "gzip level {l}: must be 1 to 9"
                    )));
                }
                Ok(Compression::Gzip(l as u32))
            }
            "zstd" => {
                let l = level.unwrap_or(3);
                if !(1..=19).contains(&l) {
                    return Err(crate::Error::Usage(format!(
                        "zstd level {l}: must be 1 to 19"
                    )));
                }
                Ok(Compression::Zstd(l))
            }
            "none" => Ok(Compression::None),
            other => Err(crate::Error::Usage(format!(
                "compression {other:?}: expected gzip, zstd or none"
            ))),
        }
    }

    /// The OCI layer media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip(_) => media::LAYER_GZIP,
            Compression::Zstd(_) => media::LAYER_ZSTD,
            Compression::None => media::LAYER_TAR,
        }
    }
}

/// Compresses into `W`.
pub enum Compressor<W: Write + Send + 'static> {
    /// Parallel gzip.
    Gzip(ParGzip<W>),
    /// zstd (multi-threaded with at least one worker, so the output does not depend on the
    /// worker count), fed from a thread of its own.
    Zstd(Offload<W>),
    /// Pass-through.
    None(W),
}

impl<W: Write + Send + 'static> std::fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compressor::Gzip(_) => "Compressor::Gzip",
            Compressor::Zstd(_) => "Compressor::Zstd",
            Compressor::None(_) => "Compressor::None",
        })
    }
}

impl<W: Write + Send + 'static> Compressor<W> {
    /// A compressor using `threads` worker threads (0 = all cores; at most [`MAX_THREADS`],
    /// more are not started: the output is the same at any count).
    pub fn new(out: W, c: Compression, threads: usize) -> io::Result<Self> {
        let threads = if threads == 0 {
            available_threads()
        } else {
            threads
        }
        .min(MAX_THREADS);
        Ok(match c {
            Compression::Gzip(level) => Compressor::Gzip(ParGzip::new(out, level, threads)?),
            Compression::Zstd(level) => {
                let mut e = zstd::stream::write::Encoder::new(out, level)?;
                e.multithread(threads as u32)?;
                e.include_checksum(false)?;
                Compressor::Zstd(Offload::start(e))
            }
            Compression::None => Compressor::None(out),
        })
    }

    /// Ends the stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        Ok(self.finish_with_points()?.0)
    }

    /// Ends the stream and returns the inner writer, and for gzip the access points of the
    /// stream (see `layer/points.rs`): the end of every 1 MiB block, where the sync flush
    /// leaves the decoder at a block boundary on a byte boundary, with the block's last
    /// 32 KiB (the next block's dictionary) as the window. Noting them changes no byte.
    pub fn finish_with_points(self) -> io::Result<(W, Option<Points>)> {
        match self {
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => Ok((z.finish()?, None)),
            Compressor::None(w) => Ok((w, None)),
        }
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

/// zstd's multi-threaded API makes the caller wait while it hands input to its workers; on
/// its own thread, that wait no longer stalls the caller's reading and hashing of files.
/// Input goes over in 1 MiB chunks through a channel bounded at four, so memory stays flat.
pub struct Offload<W: Write + Send + 'static> {
    tx: Option<SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
    handle: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> Offload<W> {
    fn start(mut enc: zstd::stream::write::Encoder<'static, W>) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let handle = std::thread::spawn(move || {
            for chunk in rx {
                enc.write_all(&chunk)?;
            }
            enc.finish()
        });
        Offload {
            tx: Some(tx),
            buf: Vec::with_capacity(BLOCK),
            handle: Some(handle),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        if self.tx.as_ref().expect("open").send(chunk).is_err() {
            // The thread stopped: its result says why.
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("zstd thread stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> io::Result<W> {
        self.tx = None;
        let handle = self
            .handle
            .take()
            .ok_or_else(|| io::Error::other("zstd thread already joined"))?;
        handle
            .join()
            .map_err(|_| io::Error::other("zstd thread panicked"))?
    }

    fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

impl<W: Write + Send + 'static> Write for Offload<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == BLOCK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> std::fmt::Debug for Offload<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send + 'static> Drop for Offload<W> {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let _ = self.join(); // an abandoned stream: the blob writer's drop removes the file
        }
    }
}

/// The most compression threads a layer uses: more only queue for the same cores, and each
/// costs a few MiB of buffers (`--threads` above it is refused).
pub const MAX_THREADS: usize = 256;

/// The number of threads to use when not told: `$STACKBUILD_THREADS`, else all cores.
pub fn available_threads() -> usize {
    std::env::var("STACKBUILD_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Uncompressed bytes per independently deflated block. Part of the output format: changing it
/// changes every gzip layer digest.
const BLOCK: usize = 1 << 20;
/// Preset dictionary size (deflate's window).
const DICT: usize = 32 << 10;

struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Arc<Vec<u8>>,
    last: bool,
}

/// Parallel, deterministic gzip writer.
pub struct ParGzip<W: Write> {
    out: W,
    level: u32,
    block: Vec<u8>,
    dict: Arc<Vec<u8>>,
    crc: crc32fast::Hasher,
    total: u64,
    next_seq: u64,
    next_write: u64,
    pool: Option<Pool>,
    pending: BTreeMap<u64, Vec<u8>>,
    /// Bytes written to `out` so far.
    written: u64,
    /// The window after each block not yet written (the next block's dictionary).
    windows: BTreeMap<u64, Arc<Vec<u8>>>,
    /// Access points so far, one every `step` blocks.
    points: Vec<Point>,
    step: u64,
}

impl<W: Write> std::fmt::Debug for ParGzip<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParGzip")
            .field("level", &self.level)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

struct Pool {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<io::Result<(u64, Vec<u8>)>>,
    threads: Vec<JoinHandle<()>>,
    in_flight: usize,
    max_in_flight: usize,
}

impl<W: Write> ParGzip<W> {
    fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        // Fixed header: no name, mtime 0, OS 255 (unknown), so nothing varies between runs.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        let pool = if threads > 1 {
            Some(Pool::start(threads, level)?)
        } else {
            None
        };
        Ok(ParGzip {
            out,
            level,
            block: Vec::with_capacity(BLOCK),
            dict: Arc::new(Vec::new()),
            crc: crc32fast::Hasher::new(),
            total: 0,
            next_seq: 0,
            next_write: 0,
            pool,
            pending: BTreeMap::new(),
            written: 10,
            windows: BTreeMap::new(),
            points: Vec::new(),
            step: 1,
        })
    }

    /// Writes block `seq`'s deflate data (in order), noting the access point at its end.
    fn emit(&mut self, seq: u64, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        if let Some(window) = self.windows.remove(&seq)
            && (seq + 1).is_multiple_of(self.step)
        {
            self.points.push(Point {
                out: (seq + 1) * BLOCK as u64,
                bit: self.written * 8,
                window: window.to_vec(),
            });
            if self.points.len() == points::MAX_POINTS {
                points::thin(&mut self.points);
                self.step *= 2;
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(
            &mut self.block,
            Vec::with_capacity(if last { 0 } else { BLOCK }),
        );
        let dict = Arc::clone(&self.dict);
        if !last {
            let start = data.len().saturating_sub(DICT);
            self.dict = Arc::new(data[start..].to_vec());
            self.windows.insert(self.next_seq, Arc::clone(&self.dict));
        }
        let job = Job {
            seq: self.next_seq,
            data,
            dict,
            last,
        };
        self.next_seq += 1;
        if self.pool.is_none() {
            let out = deflate_block(&job, self.level)?;
            self.emit(job.seq, &out)?;
            self.next_write += 1;
        } else {
            {
                loop {
                    let pool = self.pool.as_mut().expect("pool");
                    if pool.in_flight < pool.max_in_flight {
                        break;
                    }
                    let (seq, bytes) = pool.recv()?;
                    self.pending.insert(seq, bytes);
                    self.drain_ready()?;
                }
                let pool = self.pool.as_mut().expect("pool");
                pool.jobs
                    .as_ref()
                    .expect("open")
                    .send(job)
                    .map_err(|_| io::Error::other("gzip worker died"))?;
                pool.in_flight += 1;
            }
        }
        Ok(())
    }

    fn drain_ready(&mut self) -> io::Result<()> {
        while let Some(bytes) = self.pending.remove(&self.next_write) {
            self.emit(self.next_write, &bytes)?;
            self.next_write += 1;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<(W, Option<Points>)> {
        self.dispatch(true)?;
        if let Some(mut pool) = self.pool.take() {
            while pool.in_flight > 0 {
                let (seq, bytes) = pool.recv()?;
                self.pending.insert(seq, bytes);
            }
            pool.stop();
            self.drain_ready()?;
        }
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.total as u32).to_le_bytes())?;
        let pts = (!self.points.is_empty()).then(|| Points {
            size: self.total,
            points: std::mem::take(&mut self.points),
        });
        Ok((self.out, pts))
    }
}

impl<W: Write> Write for ParGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.total += n as u64;
        if self.block.len() == BLOCK {
            self.dispatch(false)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Pool {
    fn start(threads: usize, level: u32) -> io::Result<Pool> {
        let (jobs_tx, jobs_rx) = sync_channel::<Job>(threads * 2);
        let (res_tx, res_rx) = sync_channel(threads * 4);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let handles = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&jobs_rx);
                let tx = res_tx.clone();
                // A thread the system will not give is an error, not a panic.
                std::thread::Builder::new().spawn(move || {
                    loop {
                        let Ok(Ok(job)) = rx.lock().map(|r| r.recv()) else {
                            return;
                        };
                        let res = deflate_block(&job, level).map(|b| (job.seq, b));
                        if tx.send(res).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| {
                io::Error::other(format!("starting {threads} compression threads: {e}"))
            })?;
        Ok(Pool {
            jobs: Some(jobs_tx),
            results: res_rx,
            threads: handles,
            in_flight: 0,
            max_in_flight: threads * 3,
        })
    }

    fn recv(&mut self) -> io::Result<(u64, Vec<u8>)> {
        let r = self
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip worker died"))?;
        self.in_flight -= 1;
        r
    }

    fn stop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join(); // a worker only ends by returning; a panic already reported itself
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

fn deflate_block(job: &Job, level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !job.dict.is_empty() {
        c.set_dictionary(&job.dict).map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&job.data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == job.data.len();
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => break,
            _ if !job.last && all_in && room_left => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// `len` bytes, part text, part pseudo-random: compressible, but not trivially.
    pub(crate) fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 1;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 7 < 4 {
                    b'a' + (i % 13) as u8
                } else {
                    (x >> 16) as u8
                }
            })
            .collect()
    }

    #[test]
    fn gzip_same_bytes_at_any_thread_count_and_decodes() -> io::Result<()> {
        let data = sample(3 * BLOCK + 12345);
        let mut outs = Vec::new();
        for threads in [1, 2, 5] {
            let mut c = Compressor::new(Vec::new(), Compression::Gzip(6), threads)?;
            // Odd write sizes: block boundaries must not depend on them.
            for chunk in data.chunks(1000 + threads * 77) {
                c.write_all(chunk)?;
            }
            outs.push(c.finish()?);
        }
        assert_eq!(outs[0], outs[1]);
        assert_eq!(outs[0], outs[2]);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&outs[0][..]).read_to_end(&mut back)?;
        assert_eq!(back, data);
        Ok(())
    }

    #[test]
    fn zstd_same_bytes_at_any_thread_count() -> io::Result<()> {
        let data = sample(2 * BLOCK);
        let mut outs = Vec::new();
        for threads in [1, 2, 4] {
            let mut c = Compressor::new(Vec::new(), Compression::Zstd(3), threads)?;
            c.write_all(&data)?;
            outs.push(c.finish()?);
        }
        assert_eq!(outs[0], outs[1]);
        assert_eq!(outs[0], outs[2]);
        assert_eq!(zstd::decode_all(&outs[0][..])?, data);
        Ok(())
    }

    #[test]
    fn empty_stream_is_valid_gzip() -> io::Result<()> {
        let out = Compressor::new(Vec::new(), Compression::Gzip(6), 2)?.finish()?;
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut back)?;
        assert!(back.is_empty());
        Ok(())
    }
}
