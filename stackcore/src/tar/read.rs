//! Strict tar reader: ustar, PAX (`x`, `g`) and GNU long names (`L`, `K`).

use std::io::{self, Read};

use super::limits;
use crate::entry::{Entry, Kind, Mtime};

/// One header as read, with the path and link exactly as the archive spells them (see
/// [`normalize_path`]).
#[derive(Debug, Clone)]
pub struct Header {
    /// The entry; `path` and `link` are raw.
    pub entry: Entry,
    /// Bytes of data that follow.
    pub data_size: u64,
}

/// Reads headers one by one; the caller reads or skips each entry's data.
#[derive(Debug)]
pub struct TarReader<R> {
    inner: R,
    remaining: u64,
    pad: u64,
    done: bool,
}

/// The largest size a ustar header holds in octal (11 digits).
const USTAR_SIZE_MAX: u64 = 0o777_7777_7777;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: Read> TarReader<R> {
    /// Reads from `inner`, which must yield the uncompressed tar.
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            remaining: 0,
            pad: 0,
            done: false,
        }
    }

    /// The next header, or `None` at the end marker (after checking that only zeros follow).
    pub fn next_header(&mut self) -> io::Result<Option<Header>> {
        if self.done {
            return Ok(None);
        }
        self.skip_data()?;
        let mut pax_path: Option<Vec<u8>> = None;
        let mut pax_link: Option<Vec<u8>> = None;
        let mut gnu_path: Option<Vec<u8>> = None;
        let mut gnu_link: Option<Vec<u8>> = None;
        let mut pax_size: Option<u64> = None;
        let mut pax_uid: Option<u64> = None;
        let mut pax_gid: Option<u64> = None;
        let mut pax_mtime: Option<Mtime> = None;
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut pending_meta = false;
        loop {
            let mut block = [0u8; 512];
            if !read_block(&mut self.inner, &mut block)? {
                return Err(bad("tar: truncated (no end-of-archive marker)"));
            }
            if block.iter().all(|&b| b == 0) {
                if pending_meta {
                    return Err(bad("tar: extended header not followed by an entry"));
                }
                let mut second = [0u8; 512];
                if read_block(&mut self.inner, &mut second)? && second.iter().any(|&b| b != 0) {
                    return Err(bad("tar: a single zero block in the middle of the archive"));
                }
                // Only zero padding may follow (tar writers pad to a record size).
                let mut rest = [0u8; 8192];
                loop {
                    let n = self.inner.read(&mut rest)?;
                    if n == 0 {
                        break;
                    }
                    if rest[..n].iter().any(|&b| b != 0) {
                        return Err(bad("tar: data after the end-of-archive marker"));
                    }
                }
                self.done = true;
                return Ok(None);
            }
            verify_checksum(&block)?;
            // The block's fields through `tar`'s typed header; their numbers are parsed by
            // our `parse_number`, which reads what Go and GNU tar read (blank fields are 0,
            // base-256 too) and refuses negative or overflowing base-256.
            let header = tar::Header::from_byte_slice(&block);
            let old = header.as_old();
            let typeflag = old.linkflag[0];
            let size = parse_number(&old.size).map_err(|e| bad(format!("tar header size: {e}")))?;
            match header.entry_type() {
                tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {
                    if size > limits::PAX_HEADER {
                        return Err(bad(format!(
                            "tar: PAX header of {size} bytes exceeds the {} byte limit",
                            limits::PAX_HEADER
                        )));
                    }
                    let body = self.read_body(size)?;
                    if header.entry_type() == tar::EntryType::XGlobalHeader {
                        continue; // global headers (git archive's comment) carry nothing we apply
                    }
                    pending_meta = true;
                    for (key, value) in parse_pax(&body)? {
                        match key.as_slice() {
                            b"path" => pax_path = Some(value),
                            b"linkpath" => pax_link = Some(value),
                            b"size" => pax_size = Some(parse_decimal(&value, "size")?),
                            b"uid" => pax_uid = Some(parse_decimal(&value, "uid")?),
                            b"gid" => pax_gid = Some(parse_decimal(&value, "gid")?),
                            b"mtime" => pax_mtime = Some(parse_pax_time(&value)?),
                            k if k.starts_with(b"SCHILY.xattr.") => {
                                if value.len() > limits::XATTR_VALUE {
                                    return Err(bad(format!(
                                        "tar: xattr {} value of {} bytes exceeds the {} byte limit",
                                        String::from_utf8_lossy(&k[13..]),
                                        value.len(),
                                        limits::XATTR_VALUE
                                    )));
                                }
                                xattrs.push((k[13..].to_vec(), value));
                            }
                            k if k.starts_with(b"GNU.sparse.") => {
                                return Err(bad("tar: sparse entries are not supported"));
                            }
                            _ => {} // atime, ctime, uname, gname, comment, hdrcharset, ...
                        }
                    }
                }
                tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                    if size > limits::PATH as u64 + 1 {
                        return Err(bad(format!(
                            "tar: GNU long name of {size} bytes is too long"
                        )));
                    }
                    let mut body = self.read_body(size)?;
                    while body.last() == Some(&0) {
                        body.pop();
                    }
                    pending_meta = true;
                    if header.entry_type() == tar::EntryType::GNULongName {
                        gnu_path = Some(body);
                    } else {
                        gnu_link = Some(body);
                    }
                }
                entry_type => {
                    let kind = match entry_type {
                        tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                        tar::EntryType::Link => Kind::Hardlink,
                        tar::EntryType::Symlink => Kind::Symlink,
                        tar::EntryType::Char => Kind::Char,
                        tar::EntryType::Block => Kind::Block,
                        tar::EntryType::Directory => Kind::Dir,
                        tar::EntryType::Fifo => Kind::Fifo,
                        tar::EntryType::GNUSparse => {
                            return Err(bad("tar: GNU sparse entries are not supported"));
                        }
                        _ => {
                            return Err(bad(format!(
                                "tar: unknown entry type {:?}",
                                char::from(typeflag).escape_default().to_string()
                            )));
                        }
                    };
                    // The ustar name with its prefix (POSIX ustar only: GNU's old format
                    // keeps other fields there), unless PAX or a GNU long name gave one.
                    let path = pax_path
                        .or(gnu_path)
                        .unwrap_or_else(|| header.path_bytes().into_owned());
                    let link = pax_link.or(gnu_link).unwrap_or_else(|| {
                        header
                            .link_name_bytes()
                            .map(std::borrow::Cow::into_owned)
                            .unwrap_or_default()
                    });
                    // A writer puts the size in PAX and 0 in the header only when it does
                    // not fit the 11 octal digits (Go's archive/tar). A smaller PAX size over
                    // a 0 is a parser differential: a reader that ignores PAX would take
                    // this entry's data for the next headers (CVE-2025-62518).
                    let data_size = match pax_size {
                        Some(p) if p != size && (size != 0 || p <= USTAR_SIZE_MAX) => {
                            return Err(bad(format!(
                                "tar: {}: PAX size {p} disagrees with header size {size}",
                                String::from_utf8_lossy(&path)
                            )));
                        }
                        Some(p) => p,
                        None => size,
                    };
                    // A v7-style regular file whose name ends in '/' is a directory.
                    let kind = if kind == Kind::File && typeflag == 0 && path.ends_with(b"/") {
                        Kind::Dir
                    } else {
                        kind
                    };
                    if kind != Kind::File && data_size != 0 {
                        return Err(bad(format!(
                            "tar: {}: a {kind:?} entry with {data_size} bytes of data",
                            String::from_utf8_lossy(&path)
                        )));
                    }
                    if path.len() > limits::PATH || link.len() > limits::PATH {
                        return Err(bad(format!(
                            "tar: a path of {} bytes exceeds the {} byte limit",
                            path.len().max(link.len()),
                            limits::PATH
                        )));
                    }
                    if path.contains(&0) || link.contains(&0) {
                        return Err(bad("tar: NUL byte in a path"));
                    }
                    let num = |f: &[u8], what: &str| {
                        parse_number(f).map_err(|e| {
                            bad(format!(
                                "tar: {}: {what}: {e}",
                                String::from_utf8_lossy(&path)
                            ))
                        })
                    };
                    let mode = num(&old.mode, "mode")? as u32 & 0o7777;
                    let uid = match pax_uid {
                        Some(u) => u,
                        None => num(&old.uid, "uid")?,
                    };
                    let gid = match pax_gid {
                        Some(g) => g,
                        None => num(&old.gid, "gid")?,
                    };
                    // Owners are 32-bit, and (uid_t)-1 tells chown "leave it": a larger
                    // number would silently become another owner (2^32 is root).
                    let id = |v: u64, what: &str| {
                        if v >= u64::from(u32::MAX) {
                            return Err(bad(format!(
                                "tar: {}: {what} {v} is out of range",
                                String::from_utf8_lossy(&path)
                            )));
                        }
                        Ok(v)
                    };
                    let (uid, gid) = (id(uid, "uid")?, id(gid, "gid")?);
                    let mtime = match pax_mtime {
                        Some(t) => t,
                        None => Mtime {
                            sec: i64::try_from(num(&old.mtime, "mtime")?).map_err(|_| {
                                bad(format!(
                                    "tar: {}: mtime out of range",
                                    String::from_utf8_lossy(&path)
                                ))
                            })?,
                            nsec: 0,
                        },
                    };
                    let dev = |f: &[u8], what: &str| {
                        u32::try_from(num(f, what)?).map_err(|_| {
                            bad(format!(
                                "tar: {}: {what} out of range",
                                String::from_utf8_lossy(&path)
                            ))
                        })
                    };
                    // Device numbers exist in ustar and GNU headers (a v7 header has no
                    // such fields: 0, as Go's reader has it).
                    let (dev_major, dev_minor) = match (kind, header.as_ustar(), header.as_gnu()) {
                        (Kind::Char | Kind::Block, Some(u), _) => (
                            dev(&u.dev_major, "devmajor")?,
                            dev(&u.dev_minor, "devminor")?,
                        ),
                        (Kind::Char | Kind::Block, None, Some(g)) => (
                            dev(&g.dev_major, "devmajor")?,
                            dev(&g.dev_minor, "devminor")?,
                        ),
                        _ => (0, 0),
                    };
                    xattrs.sort();
                    if xattrs.windows(2).any(|w| w[0].0 == w[1].0) {
                        return Err(bad(format!(
                            "tar: {}: duplicate xattr",
                            String::from_utf8_lossy(&path)
                        )));
                    }
                    self.remaining = data_size;
                    self.pad = super::padding(data_size) as u64;
                    let entry = Entry {
                        path,
                        kind,
                        mode,
                        uid,
                        gid,
                        mtime,
                        size: if kind == Kind::File { data_size } else { 0 },
                        link: if matches!(kind, Kind::Symlink | Kind::Hardlink) {
                            link
                        } else {
                            Vec::new()
                        },
                        dev_major,
                        dev_minor,
                        xattrs,
                    };
                    return Ok(Some(Header { entry, data_size }));
                }
            }
        }
    }

    /// Reads the current entry's data.
    pub fn data(&mut self) -> DataReader<'_, R> {
        DataReader { tar: self }
    }

    /// Skips what is left of the current entry's data and its padding.
    pub fn skip_data(&mut self) -> io::Result<()> {
        let n = self.remaining + self.pad;
        if n > 0 {
            let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
            if copied != n {
                return Err(bad("tar: truncated entry data"));
            }
        }
        self.remaining = 0;
        self.pad = 0;
        Ok(())
    }

    /// The underlying reader, borrowed.
    pub fn inner_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying reader (to finish it: checks digests at its end).
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_body(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let mut body = vec![0u8; size as usize];
        self.inner
            .read_exact(&mut body)
            .map_err(|_| bad("tar: truncated extended header"))?;
        let pad = super::padding(size);
        let mut padding = [0u8; 512];
        self.inner
            .read_exact(&mut padding[..pad])
            .map_err(|_| bad("tar: truncated extended header"))?;
        Ok(body)
    }
}

/// Reads one entry's data (bounded by its size).
#[derive(Debug)]
pub struct DataReader<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tar.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.tar.remaining).unwrap_or(usize::MAX));
        let n = self.tar.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(bad("tar: truncated entry data"));
        }
        self.tar.remaining -= n as u64;
        Ok(n)
    }
}

fn read_block(r: &mut impl Read, block: &mut [u8; 512]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < 512 {
        match r.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(bad("tar: truncated header block")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Checks the header checksum, taken as unsigned or (as some old writers summed it)
/// signed bytes; `tar::Header::cksum` knows only the first and no base-256. The sum
/// counts the checksum field itself as eight spaces.
fn verify_checksum(block: &[u8; 512]) -> io::Result<()> {
    let field = &tar::Header::from_byte_slice(block).as_old().cksum;
    let stored = parse_number(field).map_err(|_| bad("tar: header checksum field unreadable"))?;
    let spaces = 8 * u64::from(b' ');
    let unsigned = |bytes: &[u8]| bytes.iter().map(|&b| u64::from(b)).sum::<u64>();
    let signed = |bytes: &[u8]| bytes.iter().map(|&b| i64::from(b as i8)).sum::<i64>();
    let unsigned = unsigned(block) - unsigned(field) + spaces;
    let signed = signed(block) - signed(field) + spaces as i64;
    if stored == unsigned || stored as i64 == signed {
        Ok(())
    } else {
        Err(bad("tar: header checksum mismatch (not a tar, or damaged)"))
    }
}

/// A numeric header field: octal ASCII (space or NUL padded), or GNU base-256.
fn parse_number(f: &[u8]) -> Result<u64, String> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        if f[0] & 0x40 != 0 {
            return Err("negative base-256 number".into());
        }
        let mut v: u64 = u64::from(f[0] & 0x3f);
        for &b in &f[1..] {
            if v > (u64::MAX >> 8) {
                return Err("base-256 number too large".into());
            }
            v = (v << 8) | u64::from(b);
        }
        return Ok(v);
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&s).map_err(|_| "not octal".to_string())?;
    u64::from_str_radix(text, 8).map_err(|_| format!("{text:?} is not octal"))
}

fn parse_decimal(v: &[u8], what: &str) -> io::Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            bad(format!(
                "tar: PAX {what} {:?} is not a number",
                String::from_utf8_lossy(v)
            ))
        })
}

fn parse_pax_time(v: &[u8]) -> io::Result<Mtime> {
    let s = std::str::from_utf8(v).map_err(|_| bad("tar: PAX mtime is not text"))?;
    let err = || bad(format!("tar: PAX mtime {s:?} is not a time"));
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    let sec: i64 = int.parse().map_err(|_| err())?;
    let mut nsec: u32 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nsec += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    if neg {
        // -1.25 is 1.25 s before the epoch: sec -2, nsec 0.75e9.
        if nsec == 0 {
            return Ok(Mtime { sec: -sec, nsec: 0 });
        }
        return Ok(Mtime {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        });
    }
    Ok(Mtime { sec, nsec })
}

fn parse_pax(body: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("tar: malformed PAX record"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("tar: malformed PAX record length"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("tar: malformed PAX record"));
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("tar: PAX record without '='"))?;
        let key = record[..eq].to_vec();
        if out.iter().any(|(k, _): &(Vec<u8>, Vec<u8>)| *k == key) {
            return Err(bad(format!(
                "tar: duplicate PAX record {:?}",
                String::from_utf8_lossy(&key)
            )));
        }
        out.push((key, record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Normalises an archive path lexically, with chroot semantics: leading `/` and `./` go,
/// `.` components go, `..` pops a component and is clamped at the root (`/../etc` is `etc`,
/// as umoci and containerd do). Returns `""` for the root itself. Rejects component names
/// over 255 bytes.
pub fn normalize_path(raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => {
                if c.len() > limits::NAME {
                    return Err(bad(format!(
                        "tar: a name of {} bytes exceeds the {} byte limit: {}...",
                        c.len(),
                        limits::NAME,
                        String::from_utf8_lossy(&c[..40])
                    )));
                }
                parts.push(c);
            }
        }
    }
    Ok(parts.join(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::{END_OF_ARCHIVE, write_header};

    #[test]
    fn normalize_table() {
        for (raw, want) in [
            ("etc/passwd", "etc/passwd"),
            ("./etc/", "etc"),
            ("/etc//passwd", "etc/passwd"),
            ("../../etc/passwd", "etc/passwd"),
            ("/../file", "file"),
            ("a/../../b", "b"),
            ("./", ""),
            ("..", ""),
            ("dne/../.wh.etc", ".wh.etc"),
        ] {
            assert_eq!(
                normalize_path(raw.as_bytes()).unwrap(),
                want.as_bytes(),
                "{raw}"
            );
        }
    }

    #[test]
    fn pax_time_parses() {
        assert_eq!(
            parse_pax_time(b"1.5").unwrap(),
            Mtime {
                sec: 1,
                nsec: 500_000_000
            }
        );
        assert_eq!(
            parse_pax_time(b"-1.25").unwrap(),
            Mtime {
                sec: -2,
                nsec: 750_000_000
            }
        );
        assert_eq!(parse_pax_time(b"12").unwrap(), Mtime { sec: 12, nsec: 0 });
        assert!(parse_pax_time(b"1e5").is_err());
    }

    #[test]
    fn header_round_trip() {
        let long = "d/".repeat(80) + "f\u{e9}";
        let mut entries = vec![
            Entry {
                mode: 0o4755,
                uid: 0,
                gid: 0,
                size: 3,
                ..Entry::new(b"bin/su".to_vec(), Kind::File)
            },
            Entry {
                uid: 5_000_000,
                gid: 7,
                mtime: Mtime {
                    sec: 1_700_000_000,
                    nsec: 123_456_789,
                },
                ..Entry::new(long.into_bytes(), Kind::Dir)
            },
            Entry {
                link: b"../x".to_vec(),
                ..Entry::new(vec![b'n', 0xff], Kind::Symlink)
            },
            Entry {
                dev_major: 8,
                dev_minor: 1,
                ..Entry::new(b"dev/sda1".to_vec(), Kind::Block)
            },
            Entry::new(b"".to_vec(), Kind::Dir),
        ];
        entries[0].xattrs = vec![(b"security.capability".to_vec(), vec![1, 0, 0, 2, 0, 0xff])];
        let mut buf = Vec::new();
        for e in &entries {
            write_header(&mut buf, e);
            if e.kind == Kind::File {
                buf.extend_from_slice(b"abc");
                buf.resize(buf.len() + crate::tar::padding(3), 0);
            }
        }
        buf.extend_from_slice(&END_OF_ARCHIVE);
        let mut r = TarReader::new(&buf[..]);
        for want in &entries {
            let h = r.next_header().unwrap().unwrap();
            let mut got = h.entry;
            got.path = normalize_path(&got.path).unwrap();
            assert_eq!(&got, want);
        }
        assert!(r.next_header().unwrap().is_none());
    }

    #[test]
    fn refuses_pax_size_disagreement_and_garbage() {
        let e = Entry {
            size: 3,
            ..Entry::new(b"f".to_vec(), Kind::File)
        };
        let mut buf = Vec::new();
        write_header(&mut buf, &e);
        // Prepend a PAX header claiming another size.
        let mut pax = Vec::new();
        let body = b"12 size=100\n";
        let mut h = [0u8; 512];
        h[..1].copy_from_slice(b"p");
        h[156] = b'x';
        h[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        pax.extend_from_slice(&h);
        pax.extend_from_slice(body);
        pax.resize(1024, 0);
        pax.extend_from_slice(&buf);
        pax.extend_from_slice(&[b'a'; 512]);
        pax.extend_from_slice(&END_OF_ARCHIVE);
        assert!(TarReader::new(&pax[..]).next_header().is_err());

        // Header size 0 with a PAX size that would have fitted the header.
        let mut zero = Vec::new();
        let body = b"13 size=1024\n";
        let mut h = [0u8; 512];
        h[..1].copy_from_slice(b"p");
        h[156] = b'x';
        h[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        zero.extend_from_slice(&h);
        zero.extend_from_slice(body);
        zero.resize(1024, 0);
        write_header(&mut zero, &Entry::new(b"f".to_vec(), Kind::File));
        zero.extend_from_slice(&[0u8; 1024]);
        zero.extend_from_slice(&END_OF_ARCHIVE);
        let err = TarReader::new(&zero[..]).next_header().unwrap_err();
        assert!(err.to_string().contains("PAX size 1024"), "{err}");

        let mut garbage = buf.clone();
        garbage.extend_from_slice(&[b'a'; 512]);
        garbage.extend_from_slice(&END_OF_ARCHIVE);
        garbage.extend_from_slice(b"trailing");
        let mut r = TarReader::new(&garbage[..]);
        r.next_header().unwrap().unwrap();
        assert!(r.next_header().is_err());
    }
}
