//! Raw deflate decoding through zlib's own API (zlib-rs, the inflater `flate2` uses here),
//! for what `flate2` does not expose: stopping at deflate block boundaries (`Z_BLOCK`),
//! the decoder's bit position there (`data_type`), and starting in the middle of a stream
//! from such a boundary (`inflatePrime` and `inflateSetDictionary`). Those are what access
//! points (see `layer/points.rs`) are recorded and used with.
//!
//! This module is the one place of the crate with `unsafe`: the calls into the C-shaped
//! API, each on a stream this type alone owns, with pointers into slices that live for the
//! call.
#![allow(unsafe_code)] // the zlib API takes raw pointers; see the module docs

use std::io;

use libz_rs_sys::{
    Z_BLOCK, Z_BUF_ERROR, Z_NO_FLUSH, Z_OK, Z_STREAM_END, inflate, inflateEnd, inflateInit2_,
    inflatePrime, inflateReset, inflateSetDictionary, z_stream, zlibVersion,
};

/// A raw deflate decoder (no zlib or gzip wrapper).
pub struct RawInflate {
    /// Boxed: zlib's state points back at its stream, which must not move.
    strm: Box<z_stream>,
}

// SAFETY: the stream and its state are owned by this value alone and hold no pointer into
// anything else between calls; moving the whole to another thread is what zlib allows.
unsafe impl Send for RawInflate {}

impl std::fmt::Debug for RawInflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawInflate")
            .field("total_in", &self.strm.total_in)
            .field("total_out", &self.strm.total_out)
            .finish_non_exhaustive()
    }
}

/// What one call of [`RawInflate::inflate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Input bytes consumed.
    pub used: usize,
    /// Output bytes made.
    pub made: usize,
    /// The deflate stream ended (its last block is decoded).
    pub end: bool,
    /// The decoder stopped at the end of a deflate block that is not the last (only with
    /// `block`).
    pub boundary: bool,
    /// Bits of the last consumed byte the decoder has not used yet.
    pub pending_bits: u32,
}

impl RawInflate {
    /// A new decoder.
    pub fn new() -> io::Result<Self> {
        let mut strm = Box::new(z_stream::default());
        // SAFETY: `strm` is a zeroed stream (no allocator: zlib-rs's own); the version and
        // size are the library's own.
        let ret = unsafe {
            inflateInit2_(
                &raw mut *strm,
                -15,
                zlibVersion(),
                size_of::<z_stream>() as i32,
            )
        };
        if ret != Z_OK {
            return Err(io::Error::other(format!("inflateInit2 failed ({ret})")));
        }
        Ok(RawInflate { strm })
    }

    /// Back to the start of a stream, keeping the allocations.
    pub fn reset(&mut self) -> io::Result<()> {
        // SAFETY: an initialized stream.
        let ret = unsafe { inflateReset(&raw mut *self.strm) };
        check(ret, "inflateReset")
    }

    /// Feeds the decoder `bits` (1 to 7) bits of `value` ahead of its input: the unused
    /// part of the byte a block boundary falls in.
    pub fn prime(&mut self, bits: u32, value: u8) -> io::Result<()> {
        // SAFETY: an initialized stream.
        let ret = unsafe { inflatePrime(&raw mut *self.strm, bits as i32, i32::from(value)) };
        check(ret, "inflatePrime")
    }

    /// Sets the window (the output that precedes the data about to be decoded).
    pub fn set_dictionary(&mut self, window: &[u8]) -> io::Result<()> {
        // SAFETY: an initialized stream; the pointer and length are `window`'s, read during
        // the call only.
        let ret = unsafe {
            inflateSetDictionary(&raw mut *self.strm, window.as_ptr(), window.len() as u32)
        };
        check(ret, "inflateSetDictionary")
    }

    /// Decodes from `input` into `output`; with `block`, stops at the end of every deflate
    /// block. No progress at all (more input needed, or no room) is `used == made == 0`.
    pub fn inflate(&mut self, input: &[u8], output: &mut [u8], block: bool) -> io::Result<Step> {
        let avail_in = input.len().min(u32::MAX as usize) as u32;
        let avail_out = output.len().min(u32::MAX as usize) as u32;
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = avail_out;
        // SAFETY: an initialized stream, whose input and output pointers are the slices'
        // for exactly their lengths; both are cleared before returning, so no pointer
        // outlives the borrows.
        let ret = unsafe {
            inflate(
                &raw mut *self.strm,
                if block { Z_BLOCK } else { Z_NO_FLUSH },
            )
        };
        let used = (avail_in - self.strm.avail_in) as usize;
        let made = (avail_out - self.strm.avail_out) as usize;
        self.strm.next_in = std::ptr::null();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        let data_type = self.strm.data_type;
        match ret {
            Z_OK | Z_STREAM_END | Z_BUF_ERROR => Ok(Step {
                used,
                made,
                end: ret == Z_STREAM_END,
                // 128: at the end of a block; 64: that block was the last (no point after it).
                boundary: ret == Z_OK && data_type & (128 | 64) == 128,
                pending_bits: (data_type & 7) as u32,
            }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("deflate: {}", self.message(ret)),
            )),
        }
    }

    fn message(&self, ret: i32) -> String {
        if self.strm.msg.is_null() {
            return format!("error {ret}");
        }
        // SAFETY: zlib's messages are static, NUL-terminated strings.
        unsafe { std::ffi::CStr::from_ptr(self.strm.msg) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for RawInflate {
    fn drop(&mut self) {
        // SAFETY: an initialized stream, ended once.
        unsafe { inflateEnd(&raw mut *self.strm) };
    }
}

fn check(ret: i32, what: &str) -> io::Result<()> {
    if ret == Z_OK {
        Ok(())
    } else {
        Err(io::Error::other(format!("{what} failed ({ret})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::compress::tests::sample;
    use std::io::Write;

    /// Decodes a raw deflate stream block by block, recording each boundary's bit position
    /// and output count, then restarts from every boundary with the window and the primed
    /// bits: what access points rely on.
    #[test]
    fn restarts_at_every_block_boundary() -> io::Result<()> {
        let data = sample(600_000);
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(9));
        enc.write_all(&data)?;
        let deflated = enc.finish()?;
        let mut z = RawInflate::new()?;
        let mut out = vec![0u8; data.len() + 1];
        let (mut used, mut made) = (0, 0);
        let mut boundaries = Vec::new();
        loop {
            let s = z.inflate(&deflated[used..], &mut out[made..], true)?;
            used += s.used;
            made += s.made;
            if s.end {
                break;
            }
            assert!(s.used > 0 || s.made > 0, "progress");
            if s.boundary {
                boundaries.push((used as u64 * 8 - u64::from(s.pending_bits), made));
            }
        }
        assert_eq!(&out[..made], &data[..]);
        assert!(boundaries.len() > 2, "{boundaries:?}");
        assert!(boundaries.iter().any(|(bit, _)| bit % 8 != 0));
        for &(bit, at) in &boundaries {
            let mut z = RawInflate::new()?;
            let mut input = &deflated[(bit / 8) as usize..];
            if bit % 8 != 0 {
                z.prime(8 - (bit % 8) as u32, input[0] >> (bit % 8))?;
                input = &input[1..];
            }
            z.set_dictionary(&data[at.saturating_sub(32 << 10)..at])?;
            let mut rest = vec![0u8; data.len() - at + 1];
            let (mut at_in, mut at_out) = (0, 0);
            loop {
                let s = z.inflate(&input[at_in..], &mut rest[at_out..], false)?;
                at_in += s.used;
                at_out += s.made;
                if s.end {
                    break;
                }
                assert!(s.used > 0 || s.made > 0, "progress from bit {bit}");
            }
            assert_eq!(&rest[..at_out], &data[at..], "from bit {bit}");
        }
        Ok(())
    }
}
