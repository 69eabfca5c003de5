//! Access points of a gzip layer, cached beside its layer index: where a decoder can start
//! in the middle of the deflate stream (the technique of zlib's `examples/zran.c`). At a
//! deflate block boundary about every [`SPACING`] bytes of uncompressed output, a point
//! records the uncompressed offset, the compressed offset in bits and the [`WINDOW`] bytes
//! of output before it. With them, the blocks between points are inflated on several
//! threads at once (`layer/read.rs`), and a layer's bytes and digests stay what they are.
//!
//! ```text
//! stackbuild access points 1\n
//! sha256:<layer digest>\n
//! sha256:<digest of the body>\n
//! <body>: u64 uncompressed size, u32 count, then per point u64 uncompressed offset,
//!         u64 compressed bit offset (from the start of the blob), u32 window length, window
//! ```
//!
//! Little-endian, fixed-width. Decoding checks the names, the digest and that the points
//! make sense (increasing, spans of at most [`MAX_SPAN`], whole windows); anything else is
//! "no points" and the layer is read on one thread. A file that passes and still does not
//! fit the layer (written by hand, say) is caught when used: every block must end exactly
//! at the next point, and every window must equal the output before it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// The first line; a different encoding gets a different number.
const MAGIC: &[u8] = b"stackbuild access points 1\n";

/// Uncompressed bytes between points, at least (a point goes at the first block boundary
/// after this many).
pub const SPACING: u64 = 1 << 20;
/// The window a point carries: deflate's distance limit.
pub const WINDOW: usize = 32 << 10;
/// The most uncompressed bytes between two points (or after the last) a file may claim:
/// bounds the memory a block in flight takes. zlib ends a deflate block after at most
/// 32768 symbols of 258 bytes (8.4 MB), so a point after at least [`SPACING`] bytes always
/// fits.
pub const MAX_SPAN: u64 = 16 << 20;

/// Points a recorder keeps at most: when it has this many, it drops every other one and
/// goes on at twice the spacing, so their windows take 32 MiB at most, whatever the
/// layer's size (a layer of up to 8 GiB gets points).
pub const MAX_POINTS: usize = 1024;

/// Drops every other point of a full list (keeping the last), for twice the spacing.
pub fn thin(points: &mut Vec<Point>) {
    let mut i = 0;
    points.retain(|_| {
        i += 1;
        i % 2 == 0
    });
}

/// One access point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Uncompressed offset.
    pub out: u64,
    /// Compressed offset in bits, from the start of the blob.
    pub bit: u64,
    /// The output before `out`: its last [`WINDOW`] bytes (all of it, if shorter).
    pub window: Vec<u8>,
}

/// A layer's access points (after its start, which needs none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Points {
    /// Uncompressed size of the whole layer.
    pub size: u64,
    /// Points in stream order.
    pub points: Vec<Point>,
}

impl Points {
    /// Whether the points make sense on their own (see the module docs).
    fn sane(&self) -> bool {
        let mut prev_out = 0;
        let mut prev_bit = 0;
        for p in &self.points {
            if p.out <= prev_out
                || p.out - prev_out > MAX_SPAN
                || p.bit <= prev_bit
                || p.window.len() as u64 != p.out.min(WINDOW as u64)
            {
                return false;
            }
            (prev_out, prev_bit) = (p.out, p.bit);
        }
        !self.points.is_empty() && self.size >= prev_out && self.size - prev_out <= MAX_SPAN
    }
}

/// The bytes of the points file of layer `layer`.
pub fn encode(layer: &Digest, p: &Points) -> Vec<u8> {
    let mut body = Vec::with_capacity(12 + p.points.len() * (20 + WINDOW));
    body.extend_from_slice(&p.size.to_le_bytes());
    body.extend_from_slice(&(p.points.len() as u32).to_le_bytes());
    for pt in &p.points {
        body.extend_from_slice(&pt.out.to_le_bytes());
        body.extend_from_slice(&pt.bit.to_le_bytes());
        body.extend_from_slice(&(pt.window.len() as u32).to_le_bytes());
        body.extend_from_slice(&pt.window);
    }
    let mut out = Vec::with_capacity(MAGIC.len() + 2 * 72 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(layer.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(Digest::of(&body).as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&body);
    out
}

/// The points in `bytes` if they are a whole, intact, sensible points file of layer `layer`.
pub fn decode(layer: &Digest, bytes: &[u8]) -> Option<Points> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let rest = rest
        .strip_prefix(layer.as_str().as_bytes())?
        .strip_prefix(b"\n")?;
    let nl = rest.iter().position(|&c| c == b'\n')?;
    let (digest, body) = (&rest[..nl], &rest[nl + 1..]);
    if digest != Digest::of(body).as_str().as_bytes() {
        return None;
    }
    let mut r = body;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (r.get(..n)?, r.get(n..)?);
        r = tail;
        Some(head)
    };
    let size = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let mut points = Vec::with_capacity(count.min(body.len() / 20));
    for _ in 0..count {
        let out = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let bit = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let window = take(len)?.to_vec();
        points.push(Point { out, bit, window });
    }
    let p = Points { size, points };
    (take(1).is_none() && p.sane()).then_some(p)
}

/// Where the points of layer `digest` live under the store's cache directory.
pub fn file(cache_dir: &Path, digest: &Digest) -> PathBuf {
    cache_dir.join("points").join(digest.hex())
}

/// The points of layer `digest`, if cached and intact.
pub fn load(cache_dir: &Path, digest: &Digest) -> Option<Points> {
    decode(digest, &fs::read(file(cache_dir, digest)).ok()?)
}

/// Caches the points of layer `digest`. Failing to is no error: the next read records them
/// again.
pub fn save(cache_dir: &Path, tmp_dir: &Path, digest: &Digest, p: &Points) {
    let file = file(cache_dir, digest);
    if file
        .parent()
        .is_some_and(|dir| fs::create_dir_all(dir).is_ok())
    {
        let _ = crate::oci::store::write_atomic(&file, &encode(digest, p), tmp_dir);
    }
}

/// Where a layer's points are cached, for the layer reader to use and to record them.
#[derive(Debug, Clone)]
pub struct PointsCache {
    /// The store's cache directory.
    pub cache_dir: PathBuf,
    /// The store's directory for temporary files.
    pub tmp_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Points {
        Points {
            size: 3 * SPACING + 5,
            points: (1..=3)
                .map(|i| Point {
                    out: i * SPACING + i,
                    bit: i * 4_000_000 + i,
                    window: vec![i as u8; WINDOW],
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let layer = Digest::of(b"layer");
        let p = sample();
        let bytes = encode(&layer, &p);
        assert_eq!(decode(&layer, &bytes), Some(p.clone()));
        assert_eq!(decode(&Digest::of(b"other"), &bytes), None);
        for i in (0..bytes.len()).step_by(997) {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert_eq!(decode(&layer, &b), None, "byte {i} flipped");
        }
        assert_eq!(decode(&layer, &bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn thinning_keeps_every_second_point_and_the_last() {
        let mut pts: Vec<Point> = (1..=MAX_POINTS as u64)
            .map(|i| Point {
                out: i * SPACING,
                bit: i * 100,
                window: Vec::new(),
            })
            .collect();
        thin(&mut pts);
        assert_eq!(pts.len(), MAX_POINTS / 2);
        assert!(
            pts.iter()
                .enumerate()
                .all(|(i, p)| p.out == (2 * i as u64 + 2) * SPACING)
        );
    }

    #[test]
    fn nonsense_is_refused_even_with_a_good_digest() {
        let layer = Digest::of(b"layer");
        let mut cases = Vec::new();
        let mut p = sample();
        p.points[1].out = p.points[0].out;
        cases.push(p);
        let mut p = sample();
        p.points[2].bit = 1;
        cases.push(p);
        let mut p = sample();
        p.points[0].window.pop();
        cases.push(p);
        let mut p = sample();
        p.size = p.points[2].out + MAX_SPAN + 1;
        cases.push(p);
        let mut p = sample();
        p.points.clear();
        cases.push(p);
        for p in cases {
            assert_eq!(decode(&layer, &encode(&layer, &p)), None, "{:?}", p.size);
        }
    }
}
