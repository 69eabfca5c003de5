//! PAX header writer. Deterministic: the same entry always gives the same bytes.

use std::fmt::Write as _;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::entry::{Entry, Kind};
use crate::{Error, Result};

/// Writes a tar stream entry by entry.
#[derive(Debug)]
pub struct Builder<W: Write> {
    out: W,
    header: Vec<u8>,
    buf: Vec<u8>,
    /// File bytes written.
    pub bytes: u64,
}

impl<W: Write> Builder<W> {
    /// Writes into `out`.
    pub fn new(out: W) -> Self {
        Builder {
            out,
            header: Vec::with_capacity(4096),
            buf: vec![0u8; 1 << 20],
            bytes: 0,
        }
    }

    /// Appends an entry; a regular file's contents come from `data` (exactly `e.size` bytes,
    /// or the file changed while being read, which is an error naming it). Returns the
    /// SHA-256 of a file's contents.
    pub fn put(&mut self, e: &Entry, data: Option<&mut dyn Read>) -> Result<Option<Digest>> {
        self.header.clear();
        write_header(&mut self.header, e);
        // An I/O error kept as one, so a closed pipe reads as `BrokenPipe` to `run_main`.
        let err = |x: io::Error| Error::io("tar output", x);
        self.out.write_all(&self.header).map_err(err)?;
        if e.kind != Kind::File {
            return Ok(None);
        }
        let data = data.ok_or_else(|| Error::Other("file entry without data".into()))?;
        let show = || String::from_utf8_lossy(&e.path).into_owned();
        let mut hash = Sha256::new();
        let mut left = e.size;
        while left > 0 {
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = data
                .read(&mut self.buf[..want])
                .map_err(|x| Error::Other(format!("{}: {x}", show())))?;
            if n == 0 {
                return Err(Error::Other(format!(
                    "{}: file shrank while being read",
                    show()
                )));
            }
            hash.update(&self.buf[..n]);
            self.out.write_all(&self.buf[..n]).map_err(err)?;
            left -= n as u64;
        }
        if data
            .read(&mut self.buf[..1])
            .map_err(|x| Error::Other(format!("{}: {x}", show())))?
            != 0
        {
            return Err(Error::Other(format!(
                "{}: file grew while being read",
                show()
            )));
        }
        self.out
            .write_all(&[0u8; 512][..padding(e.size)])
            .map_err(err)?;
        self.bytes += e.size;
        Ok(Some(Digest::from_hash(hash.finalize().into())))
    }

    /// Appends a whiteout marker for `path` (`.wh.NAME` in its directory).
    pub fn whiteout(&mut self, path: &[u8]) -> Result<()> {
        let dir = crate::entry::parent(path);
        let name = Entry::name_of(path);
        let mut marker = Entry::new(
            crate::entry::join(dir, &[b".wh.".as_slice(), name].concat()),
            Kind::File,
        );
        marker.mode = 0o644;
        self.put(&marker, Some(&mut io::empty()))?;
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        self.out
            .write_all(&END_OF_ARCHIVE)
            .map_err(|x| Error::io("tar output", x))?;
        Ok(self.out)
    }
}

/// Two zero blocks end an archive.
pub const END_OF_ARCHIVE: [u8; 1024] = [0; 1024];

/// Bytes of zero padding after `size` bytes of data.
pub fn padding(size: u64) -> usize {
    ((512 - (size % 512)) % 512) as usize
}

const MAX_OCTAL_7: u64 = 0o7_777_777;
const MAX_OCTAL_11: u64 = 0o77_777_777_777;

/// Appends the header(s) of `e` to `out`: a PAX extended header when some field does not fit
/// ustar (long or non-ASCII names, sub-second mtimes, large ids or sizes, xattrs), then the
/// ustar header. Directory names get a trailing `/`; the root is `./`.
pub fn write_header(out: &mut Vec<u8>, e: &Entry) {
    let mut name = if e.path.is_empty() {
        b".".to_vec()
    } else {
        e.path.clone()
    };
    if e.kind == Kind::Dir {
        name.push(b'/');
    }
    let size = if e.kind == Kind::File { e.size } else { 0 };

    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let needs_pax_name = |n: &[u8]| n.len() > 100 || !n.is_ascii();
    // Names that are not UTF-8 go into PAX as their raw bytes, without `hdrcharset=BINARY`:
    // GNU tar 1.34 (in C, POSIX and UTF-8 locales) and our reader take the bytes as they
    // are (tests/stash.rs checks both); Go's archive/tar keeps PAX values as byte strings
    // and does not read hdrcharset.
    if needs_pax_name(&name) {
        pax.push((b"path".to_vec(), name.clone()));
    }
    if needs_pax_name(&e.link) {
        pax.push((b"linkpath".to_vec(), e.link.clone()));
    }
    if size > MAX_OCTAL_11 {
        pax.push((b"size".to_vec(), size.to_string().into_bytes()));
    }
    if e.uid > MAX_OCTAL_7 {
        pax.push((b"uid".to_vec(), e.uid.to_string().into_bytes()));
    }
    if e.gid > MAX_OCTAL_7 {
        pax.push((b"gid".to_vec(), e.gid.to_string().into_bytes()));
    }
    let sec_fits = (0..=MAX_OCTAL_11 as i64).contains(&e.mtime.sec);
    if e.mtime.nsec != 0 || !sec_fits {
        let mut v = e.mtime.sec.to_string();
        if e.mtime.nsec != 0 {
            let _ = write!(v, ".{:09}", e.mtime.nsec);
        }
        pax.push((b"mtime".to_vec(), v.into_bytes()));
    }
    for (k, v) in &e.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        pax.push((key, v.clone()));
    }

    if !pax.is_empty() {
        let body = pax_body(&pax);
        let h = ustar(
            b"PaxHeader",
            0o644,
            0,
            0,
            body.len() as u64,
            0,
            b'x',
            b"",
            0,
            0,
        );
        out.extend_from_slice(&h);
        out.extend_from_slice(&body);
        out.resize(out.len() + padding(body.len() as u64), 0);
    }

    let typeflag = match e.kind {
        Kind::File => b'0',
        Kind::Hardlink => b'1',
        Kind::Symlink => b'2',
        Kind::Char => b'3',
        Kind::Block => b'4',
        Kind::Dir => b'5',
        Kind::Fifo => b'6',
    };
    let short_name: &[u8] = if needs_pax_name(&name) {
        &name[..0]
    } else {
        &name
    };
    let short_link: &[u8] = if needs_pax_name(&e.link) {
        &e.link[..0]
    } else {
        &e.link
    };
    let h = ustar(
        short_name,
        u64::from(e.mode & 0o7777),
        e.uid.min(MAX_OCTAL_7),
        e.gid.min(MAX_OCTAL_7),
        if size > MAX_OCTAL_11 { 0 } else { size },
        if sec_fits { e.mtime.sec as u64 } else { 0 },
        typeflag,
        short_link,
        e.dev_major,
        e.dev_minor,
    );
    out.extend_from_slice(&h);
}

fn pax_body(pax: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in pax {
        pax_record(&mut body, k, v);
    }
    body
}

/// Checks that the headers of `e` stay within the limits every reader of ours enforces
/// ([`super::limits`]), so that nothing is stashed that could not be unstashed: the
/// path (with a directory's `/`), the link target, and the PAX extended header, which
/// carries the xattrs (a tmpfs holds more than 1 MiB of them on one file).
///
/// Messages name the entry as `root` joined with its path.
pub fn check_limits(e: &Entry, root: &std::path::Path) -> Result<()> {
    use super::limits;
    use std::os::unix::ffi::OsStrExt;
    let show = || {
        root.join(std::ffi::OsStr::from_bytes(&e.path))
            .display()
            .to_string()
    };
    let name_len = e.path.len().max(1) + usize::from(e.kind == Kind::Dir);
    if name_len > limits::PATH || e.link.len() > limits::PATH {
        return Err(Error::Other(format!(
            "{}: a path of {} bytes exceeds the {}-byte limit of tar readers",
            show(),
            name_len.max(e.link.len()),
            limits::PATH
        )));
    }
    let mut header = Vec::new();
    write_header(&mut header, e);
    let first = tar::Header::from_byte_slice(&header[..512]);
    if header.len() > 512 && first.entry_type() == tar::EntryType::XHeader {
        // The PAX header's own size, as a reader sees it (we wrote it in plain octal).
        let pax = first.entry_size().expect("our own octal size field");
        if pax > limits::PAX_HEADER {
            let xattrs: usize = e.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
            return Err(Error::Other(format!(
                "{}: its metadata ({} xattrs, {xattrs} bytes) needs a PAX header of {pax} bytes, \
                 over the {}-byte limit of tar readers; it cannot be stashed",
                show(),
                e.xattrs.len(),
                limits::PAX_HEADER
            )));
        }
    }
    Ok(())
}

/// One PAX record: `"LEN KEY=VALUE\n"`, where LEN counts the whole record including itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// One ustar header block, its fields set through `tar::Header`. Every value fits its field
/// in octal here ([`write_header`] clamps and carries the real value in PAX), so `tar` writes
/// the same zero-padded, NUL-terminated octal that layers have always had; device numbers
/// only for devices; then the checksum ([`checksum`]).
#[allow(clippy::too_many_arguments)] // the ustar header has these fields; a struct adds nothing
fn ustar(
    name: &[u8],
    mode: u64,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    typeflag: u8,
    link: &[u8],
    major: u32,
    minor: u32,
) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name);
    old.linkname[..link.len()].copy_from_slice(link);
    h.set_mode(mode as u32);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::new(typeflag));
    if matches!(typeflag, b'3' | b'4') {
        // A ustar header always has these fields.
        h.set_device_major(major).expect("ustar header");
        h.set_device_minor(minor).expect("ustar header");
    }
    checksum(&mut h);
    *h.as_bytes()
}

/// The checksum as GNU tar writes it: six octal digits, NUL, space (`tar::Header::set_cksum`
/// writes seven digits and a NUL, which would change every layer's bytes and digest).
fn checksum(h: &mut tar::Header) {
    h.as_old_mut().cksum = [b' '; 8];
    let sum: u32 = h.as_bytes().iter().map(|&b| u32::from(b)).sum();
    h.as_old_mut()
        .cksum
        .copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for (k, v) in [("path", "a"), ("path", &"x".repeat(90)), ("mtime", "1.5")] {
            let mut out = Vec::new();
            pax_record(&mut out, k.as_bytes(), v.as_bytes());
            let text = String::from_utf8(out.clone()).unwrap();
            let len: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "{text}");
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn check_limits_matches_what_readers_refuse() {
        let mut e = Entry::new(b"f".to_vec(), Kind::File);
        assert!(check_limits(&e, std::path::Path::new("")).is_ok());
        // 16 xattrs of 64 KiB: 1 MiB of values alone, over the limit with their records.
        e.xattrs = (0..16)
            .map(|i| (format!("user.x{i:02}").into_bytes(), vec![b'v'; 64 << 10]))
            .collect();
        let err = check_limits(&e, std::path::Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("over the 1048576-byte limit"), "{err}");
        e.xattrs.truncate(15);
        assert!(check_limits(&e, std::path::Path::new("")).is_ok());
        let mut deep = Entry::new(vec![b'a'; 4096], Kind::Dir);
        assert!(
            check_limits(&deep, std::path::Path::new("")).is_err(),
            "4096 bytes and a '/'"
        );
        deep.kind = Kind::File;
        assert!(check_limits(&deep, std::path::Path::new("")).is_ok());
    }
}
