//! apk (`lib/apk/db/installed`, one text record per package, and `etc/apk/world`) and
//! pacman (`var/lib/pacman/local/NAME-VERSION/`, one directory per package).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Db, Found, MergedFile, Pkg, Tree, compare, version};
use crate::manifest::{ManagerReport, PackageWarning};

const APK: &str = "lib/apk/db/installed";
const APK_WORLD: &str = "etc/apk/world";
const PACMAN: &str = "var/lib/pacman/local/";

/// One `installed` record: its text and identity.
struct ApkRecord {
    text: Vec<u8>,
    name: String,
    arch: String,
    version: String,
    files: Vec<Vec<u8>>,
}

fn parse_apk(bytes: &[u8]) -> Vec<ApkRecord> {
    let mut out = Vec::new();
    for block in bytes
        .split(|&c| c == b'\n')
        .collect::<Vec<_>>()
        .split(|l| l.is_empty())
    {
        if block.is_empty() {
            continue;
        }
        let mut r = ApkRecord {
            text: block.join(&b'\n'),
            name: String::new(),
            arch: String::new(),
            version: String::new(),
            files: Vec::new(),
        };
        let mut dir: Vec<u8> = Vec::new();
        for l in block {
            let (k, v) = (l.first().copied(), l.get(2..).unwrap_or_default());
            match k {
                Some(b'P') => r.name = String::from_utf8_lossy(v).into_owned(),
                Some(b'V') => r.version = String::from_utf8_lossy(v).into_owned(),
                Some(b'A') => r.arch = String::from_utf8_lossy(v).into_owned(),
                Some(b'F') => dir = v.to_vec(),
                Some(b'R') => {
                    let mut p = dir.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(v);
                    r.files.push(p);
                }
                _ => {}
            }
        }
        if !r.name.is_empty() {
            out.push(r);
        }
    }
    out
}

/// The apk part: reported, and merged record by record (the uppermost winning), with
/// `etc/apk/world` the union of the sources' lines (else `apk` would remove the packages
/// only a lower world asked for).
pub(super) fn apk(
    trees: &[Tree],
    merge: bool,
    warnings: &mut Vec<PackageWarning>,
    writes: &mut Vec<MergedFile>,
) -> Option<ManagerReport> {
    let mut records = Vec::new();
    for (ti, t) in trees.iter().enumerate() {
        if let Some(b) = t.file(APK) {
            records.push((ti, parse_apk(b)));
        }
    }
    if records.is_empty() {
        return None;
    }
    let found: Found = records
        .iter()
        .map(|(ti, rs)| {
            let mut db = Db::default();
            for r in rs {
                db.packages.insert(
                    (r.name.clone(), r.arch.clone()),
                    Pkg {
                        version: r.version.clone(),
                        present: true,
                        files: r.files.clone(),
                    },
                );
            }
            (*ti, db)
        })
        .collect();
    let report = compare("apk", APK, trees, &found, merge, version::rpm, warnings);
    if merge && records.len() > 1 {
        let mut order: Vec<(String, String)> = Vec::new();
        let mut texts: BTreeMap<(String, String), &[u8]> = BTreeMap::new();
        for (_, rs) in &records {
            for r in rs {
                let k = (r.name.clone(), r.arch.clone());
                if texts.insert(k.clone(), &r.text).is_none() {
                    order.push(k);
                }
            }
        }
        let mut out = Vec::new();
        for k in &order {
            out.extend_from_slice(texts[k]);
            out.extend_from_slice(b"\n\n");
        }
        writes.push(MergedFile {
            path: PathBuf::from(APK),
            bytes: out,
        });
        let mut world: Vec<String> = trees
            .iter()
            .filter_map(|t| t.file(APK_WORLD))
            .flat_map(|b| {
                String::from_utf8_lossy(b)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        world.sort();
        world.dedup();
        if !world.is_empty() {
            writes.push(MergedFile {
                path: PathBuf::from(APK_WORLD),
                bytes: format!("{}\n", world.join("\n")).into_bytes(),
            });
        }
    }
    Some(report)
}

/// A pacman `desc` file's `%NAME%`, `%VERSION%` and `%ARCH%`.
fn parse_desc(bytes: &[u8]) -> (String, String, String) {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    let (mut n, mut v, mut a) = (String::new(), String::new(), String::new());
    while let Some(l) = lines.next() {
        let slot = match l {
            "%NAME%" => &mut n,
            "%VERSION%" => &mut v,
            "%ARCH%" => &mut a,
            _ => continue,
        };
        lines.next().unwrap_or_default().clone_into(slot);
    }
    (n, v, a)
}

/// The pacman part. Its database is one directory per package, so the stack's union of
/// directories is already the merged database, in every mode; where two sources have one
/// package at different versions, the result holds both directories, which pacman refuses:
/// reported with a warning and `merged: false`.
pub(super) fn pacman(trees: &[Tree], warnings: &mut Vec<PackageWarning>) -> Option<ManagerReport> {
    let mut found: Found = Vec::new();
    for (ti, t) in trees.iter().enumerate() {
        let mut db = Db::default();
        let mut files: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        for (path, bytes) in t.files_under(PACMAN) {
            if let Some(dir) = path.strip_suffix(b"/files") {
                let list = String::from_utf8_lossy(bytes)
                    .lines()
                    .skip_while(|l| *l != "%FILES%")
                    .skip(1)
                    .take_while(|l| !l.is_empty())
                    .map(|l| l.as_bytes().to_vec())
                    .collect();
                files.insert(dir.to_vec(), list);
            }
        }
        for (path, bytes) in t.files_under(PACMAN) {
            if let Some(dir) = path.strip_suffix(b"/desc") {
                let (n, v, a) = parse_desc(bytes);
                if !n.is_empty() {
                    db.packages.insert(
                        (n, a),
                        Pkg {
                            version: v,
                            present: true,
                            files: files.remove(dir).unwrap_or_default(),
                        },
                    );
                }
            }
        }
        if !db.packages.is_empty() {
            found.push((ti, db));
        }
    }
    if found.is_empty() {
        return None;
    }
    let mut report = compare(
        "pacman",
        "var/lib/pacman/local",
        trees,
        &found,
        true,
        version::rpm,
        warnings,
    );
    let twice: Vec<String> = report
        .changes
        .iter()
        .filter(|c| c.versions.len() > 1)
        .map(|c| format!("{} ({})", c.package, c.versions.join(", ")))
        .collect();
    if !twice.is_empty() {
        report.result.merged = false;
        warnings.push(PackageWarning {
            kind: "backend".into(),
            detail: format!(
                "pacman: the result has a database directory per version for {}: remove \
                 the older ones from var/lib/pacman/local",
                twice.join(", ")
            ),
        });
    }
    Some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apk_records_and_files() {
        let db = b"C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nF:lib\nR:ld-musl-x86_64.so.1\nR:libc.musl-x86_64.so.1\n\n\
                   P:busybox\nV:1.36.1-r5\nA:x86_64\nF:bin\nR:busybox\n\n";
        let rs = parse_apk(db);
        assert_eq!(rs.len(), 2);
        assert_eq!(
            (rs[0].name.as_str(), rs[0].version.as_str()),
            ("musl", "1.2.4-r2")
        );
        assert_eq!(rs[0].files[1], b"lib/libc.musl-x86_64.so.1".to_vec());
        assert_eq!(
            rs[1].text,
            b"P:busybox\nV:1.36.1-r5\nA:x86_64\nF:bin\nR:busybox".to_vec()
        );
    }

    #[test]
    fn pacman_desc_fields() {
        let desc = b"%NAME%\nbash\n\n%VERSION%\n5.2.026-1\n\n%ARCH%\nx86_64\n\n%DESC%\nshell\n";
        assert_eq!(
            parse_desc(desc),
            ("bash".into(), "5.2.026-1".into(), "x86_64".into())
        );
    }
}
