//! SHA-256 digests as OCI writes them (`sha256:` + 64 lowercase hex), and hashing writers/readers.

use std::fmt;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// A validated `sha256:<64 hex>` digest. Only sha256 is accepted: it is what every tool writes,
/// and refusing the rest keeps a hostile `index.json` from naming paths like `../x`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Self> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::Other(format!("digest {s:?}: not a sha256 digest")))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::Other(format!(
                "digest {s:?}: expected sha256: and 64 lowercase hex digits"
            )));
        }
        Ok(Digest(s.to_owned()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hash(Sha256::digest(bytes).into())
    }

    /// From a finished SHA-256 state.
    pub fn from_hash(hash: [u8; 32]) -> Self {
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in hash {
            use fmt::Write as _;
            let _ = write!(s, "{b:02x}");
        }
        Digest(s)
    }

    /// The 64 hex digits, which name the blob file.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The whole `sha256:...` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes and counts what passes through it.
#[derive(Debug)]
pub struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }
    /// Returns the inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::from_hash(self.hash.finalize().into()),
            self.len,
        )
    }
    /// The digest and byte count of what has passed so far.
    pub fn peek(&self) -> (Digest, u64) {
        (
            Digest::from_hash(self.hash.clone().finalize().into()),
            self.len,
        )
    }
    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Checks that a stream of bytes has the expected digest and size: the bytes are given to
/// [`Verifier::update`] as they pass, and [`Verifier::finish`] checks at the end. Errors name
/// `what`. [`VerifyReader`] is one wrapped around a reader; the layer reader runs one on a
/// thread of its own.
#[derive(Debug)]
pub struct Verifier {
    hash: Sha256,
    len: u64,
    expected: Digest,
    size: Option<u64>,
    what: String,
    checked: bool,
}

impl Verifier {
    /// Expects `expected` over exactly `size` bytes (when given).
    pub fn new(expected: Digest, size: Option<u64>, what: impl Into<String>) -> Self {
        Verifier {
            hash: Sha256::new(),
            len: 0,
            expected,
            size,
            what: what.into(),
            checked: false,
        }
    }

    /// Takes the next bytes; refuses bytes past the expected size.
    pub fn update(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.len += bytes.len() as u64;
        if let Some(size) = self.size
            && self.len > size
        {
            return Err(Error::SizeMismatch {
                what: self.what.clone(),
                expected: size,
                found: None,
            }
            .into_io());
        }
        Ok(())
    }

    /// The end of the stream: checks size and digest (once; later calls pass).
    pub fn finish(&mut self) -> io::Result<()> {
        if self.checked {
            return Ok(());
        }
        if let Some(size) = self.size
            && size != self.len
        {
            return Err(Error::SizeMismatch {
                what: self.what.clone(),
                expected: size,
                found: Some(self.len),
            }
            .into_io());
        }
        let got = Digest::from_hash(self.hash.clone().finalize().into());
        if got != self.expected {
            return Err(Error::DigestMismatch {
                what: self.what.clone(),
                expected: self.expected.clone(),
                found: got,
            }
            .into_io());
        }
        self.checked = true;
        Ok(())
    }
}

/// A reader that checks, at end of stream, that what it read has the expected digest and size,
/// and refuses to read past the expected size. The error names `what`.
#[derive(Debug)]
pub struct VerifyReader<R> {
    inner: R,
    check: Verifier,
}

impl<R: Read> VerifyReader<R> {
    /// Wraps `inner`, expecting `expected` over exactly `size` bytes (when given).
    pub fn new(inner: R, expected: Digest, size: Option<u64>, what: impl Into<String>) -> Self {
        VerifyReader {
            inner,
            check: Verifier::new(expected, size, what),
        }
    }

    /// The wrapped reader (what it has not yet yielded is not checked).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads to the end (the caller may stop early, e.g. after a tar end marker) and checks.
    pub fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(())
    }
}

impl<R: Read> Read for VerifyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.check.finish()?;
            return Ok(0);
        }
        self.check.update(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_malformed() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(Digest::parse(&good).is_ok());
        for bad in [
            "sha256:abc".to_owned(),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:../{}", "a".repeat(61)),
            String::new(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verify_reader_catches_mismatch() {
        let data = b"hello";
        let d = Digest::of(data);
        let mut ok = VerifyReader::new(&data[..], d.clone(), Some(5), "blob");
        assert!(io::copy(&mut ok, &mut io::sink()).is_ok());
        let mut short = VerifyReader::new(&data[..], d.clone(), Some(6), "blob");
        assert!(io::copy(&mut short, &mut io::sink()).is_err());
        let mut wrong = VerifyReader::new(&b"hellO"[..], d, Some(5), "blob");
        assert!(io::copy(&mut wrong, &mut io::sink()).is_err());
    }
}
