//! The gzip member reader (`stackcore::layer::read::Gunzip`) on arbitrary bytes and on
//! real gzip streams:
//! - arbitrary input, read through a buffer of a size the input picks: no panic, no hang,
//!   and no more output than deflate can make of it (1032:1 at most);
//! - the rest of the input as data, written by flate2 as one to three gzip members (with
//!   and without a file name in the header), read back through a small buffered reader:
//!   the same bytes, whatever the member and buffer boundaries.
#![no_main]

use std::io::{BufReader, Read, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;
use stackcore::layer::read::Gunzip;

/// Reads `r` to its end or first error, in reads of at most `chunk` bytes; returns the bytes
/// made and whether it ended cleanly.
fn drain(r: &mut impl Read, chunk: usize, cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => {
                assert!(n <= chunk, "read returned more than the buffer");
                out.extend_from_slice(&buf[..n]);
                assert!(out.len() <= cap, "more output than deflate can make");
            }
            Err(_) => return (out, false),
        }
    }
}

fn members(data: &[u8], cuts: &[usize], named: bool) -> Vec<u8> {
    let mut gz = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        let end = end.clamp(start, data.len());
        let mut b = flate2::GzBuilder::new();
        if named {
            b = b.filename("layer.tar").comment("fuzz");
        }
        let mut e: GzEncoder<Vec<u8>> = b.write(Vec::new(), Compression::fast());
        e.write_all(&data[start..end]).expect("in memory");
        gz.extend_from_slice(&e.finish().expect("in memory"));
        start = end;
    }
    gz
}

fuzz_target!(|input: &[u8]| {
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(pick & 0x3f);
    let bufcap = 1 + usize::from(pick >> 6) * 7;

    // Arbitrary bytes.
    let cap = 1032 * input.len() + 1024;
    let mut g = Gunzip::new(BufReader::with_capacity(bufcap, rest));
    let _ = drain(&mut g, chunk, cap);

    // Real members of the same bytes.
    let n = rest.len();
    let cuts: Vec<usize> = match pick % 3 {
        0 => Vec::new(),
        1 => vec![n / 2],
        _ => vec![n / 3, 2 * n / 3],
    };
    let gz = members(rest, &cuts, pick & 0x80 != 0);
    let mut g = Gunzip::new(BufReader::with_capacity(bufcap, &gz[..]));
    let (out, ok) = drain(&mut g, chunk, usize::MAX);
    assert!(ok, "a well-formed gzip stream of {} members failed", cuts.len() + 1);
    assert_eq!(out, rest, "gzip round trip");
});
