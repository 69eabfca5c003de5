//! rpm: the sqlite rpmdb (`usr/lib/sysimage/rpm/rpmdb.sqlite`, or `var/lib/rpm/` as a
//! directory). The older Berkeley DB (`Packages`) and ndb (`Packages.db`) backends are
//! detected and reported, not merged.
//!
//! Reading and merging use the host's `rpmdb`: each source's database is copied into a
//! scratch root and exported (`rpmdb --exportdb`: every package's header); the headers are
//! parsed here (name, epoch, version, release, arch, files); for a merge, the uppermost
//! source's header of each (name, arch) is imported into a new, empty database
//! (`rpmdb --importdb`), so rpm builds every index table itself.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Db, Found, MergedFile, Pkg, Tree, compare, version};
use crate::manifest::{ManagerReport, PackageWarning};
use crate::{Error, Result};

/// Where an rpmdb may live, newest layout first.
const DB_DIRS: [&str; 2] = ["usr/lib/sysimage/rpm", "var/lib/rpm"];

/// The 8 bytes before each header in `--exportdb` output.
const MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];

/// One package header: its identity and its blob (without the magic).
#[derive(Debug, Clone)]
struct Header {
    name: String,
    arch: String,
    version: String,
    files: Vec<Vec<u8>>,
    blob: Vec<u8>,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses one header blob (index entries, then the data store).
fn parse_header(blob: &[u8]) -> Option<Header> {
    let il = be32(blob, 0)? as usize;
    let dl = be32(blob, 4)? as usize;
    let data_at = 8 + il.checked_mul(16)?;
    let data = blob.get(data_at..data_at.checked_add(dl)?)?;
    let mut strings: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    let mut ints: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for e in 0..il {
        let at = 8 + e * 16;
        let tag = be32(blob, at)?;
        let ty = be32(blob, at + 4)?;
        let off = be32(blob, at + 8)? as usize;
        let count = be32(blob, at + 12)? as usize;
        match ty {
            // STRING, STRING_ARRAY, I18NSTRING: NUL-terminated strings
            6 | 8 | 9 => {
                let mut v = Vec::new();
                let mut p = off;
                for _ in 0..count.max(1) {
                    let rest = data.get(p..)?;
                    let end = rest.iter().position(|&c| c == 0)?;
                    v.push(rest[..end].to_vec());
                    p += end + 1;
                    if ty == 6 {
                        break;
                    }
                }
                strings.insert(tag, v);
            }
            // INT32
            4 => {
                let v = (0..count)
                    .map(|i| be32(data, off + i * 4))
                    .collect::<Option<Vec<_>>>()?;
                ints.insert(tag, v);
            }
            _ => {}
        }
    }
    let s = |tag: u32| {
        strings
            .get(&tag)
            .and_then(|v| v.first())
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let name = s(1000)?;
    let mut version = format!("{}-{}", s(1001)?, s(1002).unwrap_or_default());
    if let Some(epoch) = ints.get(&1003).and_then(|v| v.first()) {
        version = format!("{epoch}:{version}");
    }
    let arch = s(1022).unwrap_or_default();
    let mut files = Vec::new();
    if let (Some(base), Some(dirs), Some(idx)) =
        (strings.get(&1117), strings.get(&1118), ints.get(&1116))
    {
        for (b, i) in base.iter().zip(idx) {
            if let Some(d) = dirs.get(*i as usize) {
                let mut p = d.strip_prefix(b"/").unwrap_or(d).to_vec();
                p.extend_from_slice(b);
                files.push(p);
            }
        }
    }
    Some(Header {
        name,
        arch,
        version,
        files,
        blob: blob.to_vec(),
    })
}

/// Splits `--exportdb` output into header blobs.
fn split_export(bytes: &[u8]) -> Result<Vec<Header>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let bad = || Error::Other(format!("rpmdb --exportdb: no package header at byte {at}"));
        if bytes.get(at..at + 8) != Some(&MAGIC[..]) {
            return Err(bad());
        }
        let il = be32(bytes, at + 8).ok_or_else(bad)? as usize;
        let dl = be32(bytes, at + 12).ok_or_else(bad)? as usize;
        let end = at + 16 + il * 16 + dl;
        let blob = bytes.get(at + 8..end).ok_or_else(bad)?;
        out.push(parse_header(blob).ok_or_else(bad)?);
        at = end;
    }
    Ok(out)
}

fn rpmdb(root: &Path, dbpath: &str) -> Command {
    let mut c = Command::new("rpmdb");
    c.arg("--root")
        .arg(root)
        .arg("--dbpath")
        .arg(format!("/{dbpath}"))
        .args(["--define", "_db_backend sqlite"])
        .stderr(Stdio::piped());
    c
}

fn failed(what: &str, out: &std::process::Output) -> Error {
    Error::Other(format!(
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Every package header of one sqlite rpmdb (its bytes, and its write-ahead log when it
/// has one: what the last rpm run wrote may still be there), through the host's rpmdb.
fn export(db: &[u8], wal: Option<&[u8]>, dbpath: &str) -> Result<Vec<Header>> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let dir = scratch.path().join(dbpath);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let file = dir.join("rpmdb.sqlite");
    std::fs::write(&file, db).map_err(|e| Error::io(&file, e))?;
    if let Some(wal) = wal {
        let file = dir.join("rpmdb.sqlite-wal");
        std::fs::write(&file, wal).map_err(|e| Error::io(&file, e))?;
    }
    let out = rpmdb(scratch.path(), dbpath)
        .arg("--exportdb")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("rpmdb", e))?;
    if !out.status.success() {
        return Err(failed("rpmdb --exportdb", &out));
    }
    split_export(&out.stdout)
}

/// A new sqlite rpmdb holding `headers`, made by the host's `rpmdb --importdb`.
fn import(headers: &[&Header]) -> Result<Vec<u8>> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let dbpath = DB_DIRS[0];
    let mut stream = Vec::new();
    for h in headers {
        stream.extend_from_slice(&MAGIC);
        stream.extend_from_slice(&h.blob);
    }
    let mut child = rpmdb(scratch.path(), dbpath)
        .arg("--importdb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("rpmdb", e))?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&stream));
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("rpmdb", e))?;
    let wrote = writer
        .join()
        .map_err(|_| Error::Other("rpmdb --importdb: writer panicked".into()))?;
    if !out.status.success() {
        return Err(failed("rpmdb --importdb", &out));
    }
    wrote.map_err(|e| Error::io("rpmdb --importdb", e))?;
    let file = scratch.path().join(dbpath).join("rpmdb.sqlite");
    std::fs::read(&file).map_err(|e| Error::io(&file, e))
}

fn have_rpmdb() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("rpmdb").is_file()))
}

/// The rpm part of the analysis: `None` when no source has an rpm database.
pub(super) fn analyze(
    trees: &[Tree],
    merge: bool,
    warnings: &mut Vec<PackageWarning>,
    writes: &mut Vec<MergedFile>,
) -> Result<Option<ManagerReport>> {
    // (tree, dbpath, bytes) of every sqlite database
    let mut sqlite = Vec::new();
    let mut old_backends = 0;
    for (ti, t) in trees.iter().enumerate() {
        if let Some((dir, bytes)) = DB_DIRS
            .iter()
            .find_map(|d| t.file(&format!("{d}/rpmdb.sqlite")).map(|b| (*d, b)))
        {
            sqlite.push((ti, dir, bytes));
            continue;
        }
        for d in DB_DIRS {
            for (file, backend) in [("Packages", "Berkeley DB"), ("Packages.db", "ndb")] {
                let p = format!("{d}/{file}");
                if t.kind(p.as_bytes()).is_some() {
                    old_backends += 1;
                    warnings.push(PackageWarning {
                        kind: "backend".into(),
                        detail: format!(
                            "{}: /{p} is an rpm {backend} database: reported, not read or merged \
                             (convert it with `rpmdb --rebuilddb --define '_db_backend sqlite'`)",
                            t.name
                        ),
                    });
                }
            }
        }
    }
    if sqlite.is_empty() {
        return Ok(None);
    }
    if !have_rpmdb() {
        warnings.push(PackageWarning {
            kind: "backend".into(),
            detail: "rpm databases found, but this machine has no rpmdb to read them \
                     (install rpm)"
                .into(),
        });
        return Ok(None);
    }
    let mut headers: Vec<(usize, Vec<Header>)> = Vec::new();
    for (ti, dir, bytes) in &sqlite {
        let wal = trees[*ti].file(&format!("{dir}/rpmdb.sqlite-wal"));
        let h = export(bytes, wal, dir)
            .map_err(|e| Error::Other(format!("{}: {e}", trees[*ti].name)))?;
        headers.push((*ti, h));
    }
    let found: Found = headers
        .iter()
        .map(|(ti, hs)| {
            let mut db = Db::default();
            for h in hs {
                db.packages.insert(
                    (h.name.clone(), h.arch.clone()),
                    Pkg {
                        version: h.version.clone(),
                        present: true,
                        files: h.files.clone(),
                    },
                );
            }
            (*ti, db)
        })
        .collect();
    let (_, top_dir, _) = sqlite[sqlite.len() - 1];
    let database = format!("{top_dir}/rpmdb.sqlite");
    let can_merge = merge && sqlite.len() > 1 && old_backends == 0;
    if merge && old_backends > 0 {
        warnings.push(PackageWarning {
            kind: "backend".into(),
            detail: "rpm: some sources have an older database backend; the sqlite databases \
                     are not merged either"
                .into(),
        });
    }
    let report = compare(
        "rpm",
        &database,
        trees,
        &found,
        can_merge || (merge && sqlite.len() == 1 && old_backends == 0),
        version::rpm,
        warnings,
    );
    if can_merge {
        let mut winners: BTreeMap<(String, String), &Header> = BTreeMap::new();
        for (_, hs) in &headers {
            for h in hs {
                winners.insert((h.name.clone(), h.arch.clone()), h);
            }
        }
        let list: Vec<&Header> = winners.into_values().collect();
        writes.push(MergedFile {
            path: PathBuf::from(&database),
            bytes: import(&list)?,
        });
        // The upper source's write-ahead log and its index belong to the database replaced:
        // emptied, so sqlite does not apply them to the new one.
        let top = &trees[sqlite[sqlite.len() - 1].0];
        for suffix in ["-wal", "-shm"] {
            let p = format!("{database}{suffix}");
            if top.kind(p.as_bytes()).is_some() {
                writes.push(MergedFile {
                    path: PathBuf::from(p),
                    bytes: Vec::new(),
                });
            }
        }
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header as rpm lays it out: entries, then the data store.
    fn header(entries: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, bytes, count) in entries {
            for v in [*tag, *ty, data.len() as u32, *count] {
                index.extend_from_slice(&v.to_be_bytes());
            }
            data.extend_from_slice(bytes);
        }
        let mut blob = Vec::new();
        blob.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
        blob.extend_from_slice(&index);
        blob.extend_from_slice(&data);
        blob
    }

    #[test]
    fn parses_identity_and_files() {
        let blob = header(&[
            (1000, 6, b"probe\0", 1),
            (1001, 6, b"1.0\0", 1),
            (1002, 6, b"2\0", 1),
            (1003, 4, &3u32.to_be_bytes(), 1),
            (1022, 6, b"x86_64\0", 1),
            (1116, 4, &[0, 0, 0, 0, 0, 0, 0, 1], 2),
            (1117, 8, b"tool\0probe.conf\0", 2),
            (1118, 8, b"/usr/bin/\0/etc/\0", 2),
        ]);
        let mut export = MAGIC.to_vec();
        export.extend_from_slice(&blob);
        export.extend_from_slice(&MAGIC);
        export.extend_from_slice(&blob);
        let hs = split_export(&export).expect("splits");
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[0].name, "probe");
        assert_eq!(hs[0].version, "3:1.0-2");
        assert_eq!(hs[0].arch, "x86_64");
        assert_eq!(
            hs[0].files,
            vec![b"usr/bin/tool".to_vec(), b"etc/probe.conf".to_vec()]
        );
        assert!(split_export(&export[..export.len() - 1]).is_err());
    }
}
