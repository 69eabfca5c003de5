//! Inflating a gzip layer on several threads from its access points (`layer/points.rs`),
//! with the same result as one sequential inflate, or an error.
//!
//! The compressed stream is cut at the points into spans; worker threads inflate the spans,
//! each from its point's bit offset with its point's window as the dictionary, and this
//! thread hands their output on in order. Nothing in the points is trusted:
//! - a span's inflate must stop at a deflate block boundary exactly at the next point's bit
//!   offset, having made exactly the bytes the points say;
//! - before a span's output is handed on, the window its inflate started from must equal the
//!   last 32 KiB actually handed on before it.
//!
//! By induction, every span then starts from the state a sequential inflate has at that
//! point (its bit position, at a block boundary, and its window), so it makes the same
//! bytes: the output is the sequential inflate's, and a pinned `diff_id` stays sound. The
//! first span starts after the gzip header with an empty window; the last must end the
//! deflate stream, followed by the member's trailer (its size checked) and nothing else.
//! A mismatch is an error naming the points file, which is removed: the next read is
//! sequential and records the points again. Errors of the blob itself (its digest, its size)
//! come first, as they would without points.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use super::inflate::RawInflate;
use super::points::{MAX_SPAN, Points, WINDOW};
use super::read::{Chunk, Prefetch, gzip_header, gzip_trailer};

/// Uncompressed bytes in flight (being inflated, or waiting for their turn) at most, beside
/// one span: bounds memory whatever the thread count.
const MAX_BYTES_IN_FLIGHT: u64 = 24 << 20;

/// One span to inflate.
struct Job {
    /// Span number: 0 starts after the header, `k` at point `k - 1`.
    seq: usize,
    /// The compressed bytes, from the byte the span's first bit is in.
    data: Vec<u8>,
    /// Offset of `data[0]` in the blob.
    first_byte: u64,
    /// Bit offset of the span's start in the blob.
    start_bit: u64,
    /// Bit offset of the next point (none for the last span).
    end_bit: Option<u64>,
    /// Bytes the span must make.
    expect: usize,
    /// A buffer for them.
    out: Vec<u8>,
}

/// Why the points do not fit: the caller names the file.
struct Misfit(String);

/// Inflates the rest of the gzip stream `raw` (at its start) on `threads` workers and sends
/// it to `tx` in chunks, then returns `raw`, at the end of the member. `file` is the points
/// file, removed if they do not fit.
pub(crate) fn par_gunzip(
    mut raw: Prefetch,
    pts: Points,
    threads: usize,
    file: &Path,
    tx: &SyncSender<Chunk>,
    recycled: &Receiver<Vec<u8>>,
) -> io::Result<Prefetch> {
    let header = gzip_header(&mut raw)?;
    match run(&mut raw, header, &Arc::new(pts), threads, tx, recycled) {
        Ok(()) => Ok(raw),
        Err(Run::Io(e)) => Err(e),
        Err(Run::Misfit(Misfit(why))) => {
            // The blob's own errors first: read it to its end, where its checks report.
            io::copy(&mut raw, &mut io::sink())?;
            let _ = std::fs::remove_file(file); // gone already is as good
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "access points in {} do not fit the layer ({why}); removed, the next read \
                     records them again",
                    file.display()
                ),
            ))
        }
    }
}

enum Run {
    Io(io::Error),
    Misfit(Misfit),
}

impl From<io::Error> for Run {
    fn from(e: io::Error) -> Self {
        Run::Io(e)
    }
}

impl From<Misfit> for Run {
    fn from(m: Misfit) -> Self {
        Run::Misfit(m)
    }
}

fn run(
    raw: &mut Prefetch,
    header: u64,
    pts: &Arc<Points>,
    threads: usize,
    tx: &SyncSender<Chunk>,
    recycled: &Receiver<Vec<u8>>,
) -> Result<(), Run> {
    let spans = pts.points.len() + 1;
    let start = |k: usize| {
        if k == 0 {
            (0, header * 8)
        } else {
            let p = &pts.points[k - 1];
            (p.out, p.bit)
        }
    };
    let end_out = |k: usize| pts.points.get(k).map_or(pts.size, |p| p.out);
    if pts.points[0].bit <= header * 8 {
        return Err(Misfit("the first point is inside the gzip header".into()).into());
    }
    // More workers than spans in flight would only wait.
    let threads = threads.clamp(1, 64);
    let max_jobs = 2 * threads;
    let (job_tx, job_rx) = sync_channel::<Job>(max_jobs);
    let (res_tx, res_rx) = sync_channel::<(usize, Result<Vec<u8>, Misfit>)>(max_jobs);
    let job_rx = Arc::new(Mutex::new(job_rx));
    for _ in 0..threads {
        let (rx, tx, pts) = (Arc::clone(&job_rx), res_tx.clone(), Arc::clone(pts));
        std::thread::spawn(move || worker(&rx, &tx, &pts));
    }
    drop(res_tx);

    let mut read = header; // bytes of `raw` taken
    let mut carry: Option<u8> = None; // the byte a point's bit offset falls in
    let mut next_job = 0;
    let mut next_out = 0;
    let (mut jobs, mut bytes) = (0usize, 0u64); // in flight, until handed on
    let mut pending: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut tail: Vec<u8> = Vec::with_capacity(2 * WINDOW);
    while next_out < spans {
        while next_job < spans
            && (jobs == 0
                || (jobs < max_jobs
                    && bytes + (end_out(next_job) - start(next_job).0) <= MAX_BYTES_IN_FLIGHT))
        {
            let (out, start_bit) = start(next_job);
            let expect = end_out(next_job) - out;
            let end_bit = pts.points.get(next_job).map(|p| p.bit);
            let first_byte = start_bit / 8;
            let mut data = Vec::new();
            if first_byte < read {
                data.push(carry.ok_or_else(|| Misfit("points out of order".into()))?);
            }
            if let Some(end) = end_bit {
                let upto = end.div_ceil(8);
                take(raw, &mut data, upto - read)?;
                read = upto;
                carry = (end % 8 != 0).then(|| data[data.len() - 1]);
            } else {
                // The last span: the rest of the blob, which holds the trailer too.
                let limit = MAX_SPAN + (1 << 20);
                let n = raw.by_ref().take(limit + 1).read_to_end(&mut data)?;
                if n as u64 > limit {
                    return Err(Misfit("the last span is too long".into()).into());
                }
                read += n as u64;
            }
            // A buffer the reader is done with: no new pages to fault in (a tenth of the
            // CPU time of a parallel read went to them).
            let out = recycled.try_recv().unwrap_or_default();
            let job = Job {
                seq: next_job,
                out,
                data,
                first_byte,
                start_bit,
                end_bit,
                expect: expect as usize,
            };
            job_tx
                .send(job)
                .map_err(|_| io::Error::other("an inflating thread stopped"))?;
            jobs += 1;
            bytes += expect;
            next_job += 1;
        }
        let (seq, res) = res_rx
            .recv()
            .map_err(|_| io::Error::other("an inflating thread stopped"))?;
        pending.insert(seq, res?);
        while let Some(block) = pending.remove(&next_out) {
            if next_out > 0 && pts.points[next_out - 1].window != tail {
                return Err(Misfit(format!(
                    "the window of point {next_out} is not the output before it"
                ))
                .into());
            }
            if block.len() >= WINDOW {
                tail.clear();
                tail.extend_from_slice(&block[block.len() - WINDOW..]);
            } else {
                tail.extend_from_slice(&block);
                if tail.len() > WINDOW {
                    tail.drain(..tail.len() - WINDOW);
                }
            }
            jobs -= 1;
            bytes -= block.len() as u64;
            let n = block.len();
            if n > 0 && tx.send(Ok((block, n))).is_err() {
                return Err(io::Error::other("the layer reader stopped").into());
            }
            next_out += 1;
        }
    }
    Ok(())
}

/// Takes exactly `n` bytes of `raw` into `data`; the blob ending first means the points
/// claim more than there is.
fn take(raw: &mut Prefetch, data: &mut Vec<u8>, n: u64) -> Result<(), Run> {
    let mut left = n as usize;
    data.reserve(left);
    while left > 0 {
        let buf = raw.fill_buf()?;
        if buf.is_empty() {
            return Err(Misfit("a point is past the end of the blob".into()).into());
        }
        let k = buf.len().min(left);
        data.extend_from_slice(&buf[..k]);
        raw.consume(k);
        left -= k;
    }
    Ok(())
}

fn worker(
    rx: &Mutex<Receiver<Job>>,
    tx: &SyncSender<(usize, Result<Vec<u8>, Misfit>)>,
    pts: &Points,
) {
    let mut z = None;
    loop {
        let Ok(Ok(job)) = rx.lock().map(|r| r.recv()) else {
            return;
        };
        let res = inflate_span(&mut z, job, pts);
        if tx.send(res).is_err() {
            return;
        }
    }
}

/// Inflates one span and checks that it ends where the points say.
fn inflate_span(
    z: &mut Option<RawInflate>,
    job: Job,
    pts: &Points,
) -> (usize, Result<Vec<u8>, Misfit>) {
    let seq = job.seq;
    (seq, inflate_job(z, job, pts))
}

fn inflate_job(z: &mut Option<RawInflate>, job: Job, pts: &Points) -> Result<Vec<u8>, Misfit> {
    let misfit = |what: &str| Misfit(format!("span {}: {what}", job.seq));
    let z = match z {
        Some(z) => {
            z.reset().map_err(|e| misfit(&e.to_string()))?;
            z
        }
        None => z.insert(RawInflate::new().map_err(|e| misfit(&e.to_string()))?),
    };
    let mut used = 0;
    let skip = (job.start_bit % 8) as u32;
    if skip > 0 {
        let first = *job.data.first().ok_or_else(|| misfit("no data"))?;
        z.prime(8 - skip, first >> skip)
            .map_err(|e| misfit(&e.to_string()))?;
        used = 1;
    }
    if job.seq > 0 {
        z.set_dictionary(&pts.points[job.seq - 1].window)
            .map_err(|e| misfit(&e.to_string()))?;
    }
    // One byte of room more than expected: a span that makes more shows.
    let mut out = job.out;
    out.clear();
    out.resize(job.expect + 1, 0);
    let mut made = 0;
    loop {
        let s = z
            .inflate(&job.data[used..], &mut out[made..], true)
            .map_err(|e| misfit(&e.to_string()))?;
        used += s.used;
        made += s.made;
        if made > job.expect {
            return Err(misfit("makes more bytes than the points say"));
        }
        if s.end {
            if job.end_bit.is_some() || made != job.expect {
                return Err(misfit("the deflate stream ends early"));
            }
            let trailer: &[u8; 8] = job.data[used..]
                .try_into()
                .map_err(|_| misfit("the gzip trailer is not all that follows"))?;
            gzip_trailer(*trailer, pts.size as u32).map_err(|e| misfit(&e.to_string()))?;
            break;
        }
        if let Some(end) = job.end_bit
            && s.boundary
            && made == job.expect
        {
            let bit = (job.first_byte + used as u64) * 8 - u64::from(s.pending_bits);
            if bit == end {
                break;
            }
            if bit > end {
                return Err(misfit("no block boundary at the next point"));
            }
        }
        if s.used == 0 && s.made == 0 {
            return Err(misfit("the data ends before the next point"));
        }
    }
    out.truncate(made);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::compress::tests::sample;
    use crate::layer::points::Point;
    use crate::layer::read::{Gunzip, pump};
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// `data` through an external compressor (`gzip -9`, `pigz`).
    fn external(program: &[&str], data: &[u8]) -> io::Result<Vec<u8>> {
        let mut child = Command::new(program[0])
            .args(&program[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = data.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output()?;
        feeder.join().expect("feeder")?;
        assert!(out.status.success(), "{program:?}");
        Ok(out.stdout)
    }

    /// The stream and the points a sequential read records.
    fn recorded(gz: &[u8]) -> io::Result<(Vec<u8>, Points)> {
        let mut g = Gunzip::new(io::BufReader::with_capacity(64 << 10, gz))?;
        g.record();
        let mut out = Vec::new();
        g.read_to_end(&mut out)?;
        let pts = g.points().expect("points");
        Ok((out, pts))
    }

    /// Inflates `gz` from `pts` on `threads` workers, as `open_layer` does.
    fn parallel(gz: &[u8], pts: Points, threads: usize, file: &Path) -> io::Result<Vec<u8>> {
        let blob = gz.to_vec();
        let raw = Prefetch::start(move |tx, recycled| {
            let res = pump(&blob[..], tx, recycled).map(drop);
            let _ = tx.send(res.map(|()| (Vec::new(), 0)));
        });
        let (tx, rx) = sync_channel(4);
        let file = file.to_path_buf();
        let worker = std::thread::spawn(move || {
            let (_keep, recycled) = sync_channel(1);
            par_gunzip(raw, pts, threads, &file, &tx, &recycled).and_then(|mut raw| {
                let mut rest = Vec::new();
                raw.read_to_end(&mut rest)?;
                assert!(rest.is_empty(), "the member is all of the blob");
                Ok(())
            })
        });
        let mut out = Vec::new();
        for chunk in rx {
            let (buf, n) = chunk?;
            out.extend_from_slice(&buf[..n]);
        }
        worker.join().expect("worker")?;
        Ok(out)
    }

    /// Our gzip stream of `data` and the points the compressor noted.
    fn ours(data: &[u8]) -> io::Result<(Vec<u8>, Points)> {
        let mut ours =
            crate::layer::Compressor::new(Vec::new(), crate::layer::Compression::Gzip(6), 2)?;
        ours.write_all(data)?;
        let (gz, pts) = ours.finish_with_points()?;
        Ok((gz, pts.expect("points")))
    }

    fn streams(data: &[u8]) -> io::Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(vec![
            ("ours", ours(data)?.0),
            ("gzip -9", external(&["gzip", "-9", "-c"], data)?),
            ("pigz", external(&["pigz", "-c"], data)?),
        ])
    }

    #[test]
    fn parallel_equals_sequential_at_any_thread_count() -> io::Result<()> {
        let data = sample((6 << 20) + 12345);
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("points");
        for (name, gz) in streams(&data)? {
            let (out, pts) = recorded(&gz)?;
            assert_eq!(out, data, "{name}: sequential");
            assert!(pts.points.len() >= 5, "{name}: {} points", pts.points.len());
            assert_eq!(pts.size, data.len() as u64);
            if name == "gzip -9" {
                assert!(
                    pts.points.iter().any(|p| p.bit % 8 != 0),
                    "bit-level points"
                );
            }
            for threads in [1, 2, 8] {
                let got = parallel(&gz, pts.clone(), threads, &file)?;
                assert!(got == data, "{name}: {threads} threads");
            }
        }
        // The points our compressor notes while writing, at every 1 MiB block's end.
        let (gz, pts) = ours(&data)?;
        assert_eq!(pts.points.len(), 6);
        assert!(
            pts.points
                .iter()
                .all(|p| p.out % (1 << 20) == 0 && p.bit % 8 == 0)
        );
        for threads in [1, 2, 8] {
            assert!(
                parallel(&gz, pts.clone(), threads, &file)? == data,
                "{threads} threads"
            );
        }
        Ok(())
    }

    #[test]
    fn points_that_do_not_fit_are_refused_and_removed() -> io::Result<()> {
        let data = sample(4 << 20);
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("points");
        for (name, gz) in streams(&data)? {
            let (_, pts) = recorded(&gz)?;
            let mut cases: Vec<(&str, Points)> = Vec::new();
            let mut p = pts.clone();
            p.points[1].window[100] ^= 1;
            cases.push(("window", p));
            let mut p = pts.clone();
            p.points[1].bit += 1;
            cases.push(("bit offset", p));
            let mut p = pts.clone();
            p.points[2].bit -= 8;
            cases.push(("byte offset", p));
            let mut p = pts.clone();
            p.points[1].out += 1;
            cases.push(("uncompressed offset", p));
            let mut p = pts.clone();
            p.size += 1;
            cases.push(("size", p));
            // A point moved to another boundary, with that boundary's true window: still
            // refused, the spans no longer say what the stream makes.
            let mut p = pts.clone();
            let Point { out, bit, window } = pts.points[2].clone();
            p.points[1] = Point { out, bit, window };
            p.points.remove(2);
            cases.push(("merged", p.clone()));
            for (what, p) in cases {
                std::fs::write(&file, b"x")?;
                let e = parallel(&gz, p.clone(), 2, &file).map(drop);
                if what == "merged" {
                    // Two spans made one: as valid as any, and the same bytes.
                    assert!(e.is_ok(), "{name}: {what}: {e:?}");
                    continue;
                }
                let e = e.expect_err(what).to_string();
                assert!(
                    e.contains("do not fit") && !e.contains('\n'),
                    "{name}: {what}: {e}"
                );
                assert!(!file.exists(), "{name}: {what}: removed");
            }
        }
        Ok(())
    }
}
