//! dpkg: `var/lib/dpkg/status` (one stanza per package), the file lists in `info/*.list`,
//! `alternatives/NAME`, `diversions` and `statoverride`.
//!
//! The merge keeps every stanza's text as it is (field order, folding, comments of fields
//! dpkg does not know), the uppermost source's stanza winning per package name and
//! architecture, and writes them sorted by name then architecture, as dpkg does.
//! Alternatives are merged by choice, diversions and stat overrides by path; `info/*` comes
//! through the stack as it is (each package's files keep their own names). apt's
//! `var/lib/apt/extended_states` (auto-installed marks) is merged as the status is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Db, Found, MergedFile, Pkg, Tree, compare, version};
use crate::manifest::{ManagerReport, PackageWarning};

const STATUS: &str = "var/lib/dpkg/status";
const ALTERNATIVES: &str = "var/lib/dpkg/alternatives/";
const DIVERSIONS: &str = "var/lib/dpkg/diversions";
const STATOVERRIDE: &str = "var/lib/dpkg/statoverride";
/// apt's record of automatically installed packages (the same stanza format).
const APT_EXTENDED: &str = "var/lib/apt/extended_states";

/// One stanza of a status file.
#[derive(Debug, Clone)]
struct Stanza {
    /// Its lines as written, without the blank line after it.
    raw: Vec<u8>,
    name: String,
    arch: String,
    version: String,
    /// The third word of `Status:` (`installed`, `config-files`, ...).
    state: String,
}

fn parse_status(bytes: &[u8]) -> Vec<Stanza> {
    let mut out = Vec::new();
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut flush = |lines: &mut Vec<&[u8]>| {
        if lines.is_empty() {
            return;
        }
        let mut s = Stanza {
            raw: lines.join(&b'\n'),
            name: String::new(),
            arch: String::new(),
            version: String::new(),
            state: String::new(),
        };
        for l in lines.iter() {
            if l.first().is_some_and(|c| *c == b' ' || *c == b'\t') {
                continue;
            }
            let Some(colon) = l.iter().position(|&c| c == b':') else {
                continue;
            };
            let key = &l[..colon];
            let value = String::from_utf8_lossy(&l[colon + 1..]).trim().to_owned();
            match key {
                b"Package" => s.name = value,
                b"Architecture" => s.arch = value,
                b"Version" => s.version = value,
                b"Status" => value
                    .split_whitespace()
                    .nth(2)
                    .unwrap_or("")
                    .clone_into(&mut s.state),
                _ => {}
            }
        }
        if !s.name.is_empty() {
            out.push(s);
        }
        lines.clear();
    };
    for line in bytes.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            flush(&mut lines);
        } else {
            lines.push(line);
        }
    }
    flush(&mut lines);
    out
}

/// One source's dpkg database.
#[derive(Debug, Clone)]
pub(super) struct Source {
    stanzas: Vec<Stanza>,
    db: Db,
}

/// Every source's dpkg database (tree index, parsed), or `None` when no source has one.
pub(super) fn read_all(
    trees: &[Tree],
    _warnings: &mut [PackageWarning],
) -> Option<Vec<(usize, Source)>> {
    let mut found = Vec::new();
    for (ti, t) in trees.iter().enumerate() {
        let Some(status) = t.file(STATUS) else {
            continue;
        };
        let stanzas = parse_status(status);
        // File lists by package (`NAME.list`, or `NAME:ARCH.list` for Multi-Arch: same).
        let mut lists: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for (path, bytes) in t.files_under("var/lib/dpkg/info/") {
            let file = String::from_utf8_lossy(&path["var/lib/dpkg/info/".len()..]).into_owned();
            let Some(pkg) = file.strip_suffix(".list") else {
                continue;
            };
            let files = bytes
                .split(|&c| c == b'\n')
                .filter_map(|l| l.strip_prefix(b"/"))
                .filter(|l| !l.is_empty() && *l != b".")
                .map(<[u8]>::to_vec)
                .collect();
            lists.insert(pkg.to_owned(), files);
        }
        let mut db = Db::default();
        for s in &stanzas {
            let files = lists
                .get(&format!("{}:{}", s.name, s.arch))
                .or_else(|| lists.get(&s.name))
                .cloned()
                .unwrap_or_default();
            db.packages.insert(
                (s.name.clone(), s.arch.clone()),
                Pkg {
                    version: s.version.clone(),
                    present: !matches!(s.state.as_str(), "not-installed" | "config-files" | ""),
                    files,
                },
            );
        }
        found.push((ti, Source { stanzas, db }));
    }
    (!found.is_empty()).then_some(found)
}

/// The report, and with `merge` the merged files.
pub(super) fn finish(
    trees: &[Tree],
    found: &[(usize, Source)],
    merge: bool,
    warnings: &mut Vec<PackageWarning>,
) -> (ManagerReport, Vec<MergedFile>) {
    let dbs: Found = found.iter().map(|(ti, s)| (*ti, s.db.clone())).collect();
    let report = compare("dpkg", STATUS, trees, &dbs, merge, version::dpkg, warnings);
    let mut writes = Vec::new();
    if merge && found.len() > 1 {
        writes.push(MergedFile {
            path: PathBuf::from(STATUS),
            bytes: merge_status(found.iter().map(|(_, s)| s.stanzas.as_slice())),
        });
        let sources: Vec<&Tree> = found.iter().map(|(ti, _)| &trees[*ti]).collect();
        // apt's auto-installed marks, merged the same way, so `apt-get autoremove` still
        // knows which packages of a lower source were only dependencies.
        let extended: Vec<Vec<Stanza>> = sources
            .iter()
            .filter_map(|t| t.file(APT_EXTENDED))
            .map(parse_status)
            .collect();
        if extended.len() > 1 {
            writes.push(MergedFile {
                path: PathBuf::from(APT_EXTENDED),
                bytes: merge_status(extended.iter().map(Vec::as_slice)),
            });
        }
        writes.extend(merge_alternatives(&sources, warnings));
        for (file, key) in [(DIVERSIONS, 3usize), (STATOVERRIDE, 1)] {
            if let Some(bytes) = merge_records(&sources, file, key) {
                writes.push(MergedFile {
                    path: PathBuf::from(file),
                    bytes,
                });
            }
        }
    }
    (report, writes)
}

/// The status stanzas of every source, lowest first, merged: the uppermost stanza of each
/// (name, arch) kept verbatim, sorted as dpkg writes them.
fn merge_status<'a>(sources: impl Iterator<Item = &'a [Stanza]>) -> Vec<u8> {
    let mut merged: BTreeMap<(String, String), &Stanza> = BTreeMap::new();
    for stanzas in sources {
        for s in stanzas {
            merged.insert((s.name.clone(), s.arch.clone()), s);
        }
    }
    let mut out = Vec::new();
    for s in merged.values() {
        out.extend_from_slice(&s.raw);
        out.extend_from_slice(b"\n\n");
    }
    out
}

/// One choice of an alternative: path, priority, slave name -> slave path.
type Choice = (Vec<u8>, Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>);

/// An `alternatives/NAME` file.
#[derive(Debug, Clone, PartialEq)]
struct Alternative {
    mode: Vec<u8>,
    link: Vec<u8>,
    /// (slave name, slave link)
    slaves: Vec<(Vec<u8>, Vec<u8>)>,
    choices: Vec<Choice>,
}

fn parse_alternative(bytes: &[u8]) -> Option<Alternative> {
    let mut lines = bytes.split(|&c| c == b'\n');
    let mut next = || lines.next().map(<[u8]>::to_vec);
    let mode = next()?;
    let link = next()?;
    let mut slaves = Vec::new();
    loop {
        let name = next()?;
        if name.is_empty() {
            break;
        }
        slaves.push((name, next()?));
    }
    let mut choices = Vec::new();
    loop {
        let path = next()?;
        if path.is_empty() {
            break;
        }
        let priority = next()?;
        let mut map = BTreeMap::new();
        for (name, _) in &slaves {
            let p = next()?;
            if !p.is_empty() {
                map.insert(name.clone(), p);
            }
        }
        choices.push((path, priority, map));
    }
    Some(Alternative {
        mode,
        link,
        slaves,
        choices,
    })
}

fn write_alternative(a: &Alternative) -> Vec<u8> {
    let mut out = Vec::new();
    let mut line = |l: &[u8]| {
        out.extend_from_slice(l);
        out.push(b'\n');
    };
    line(&a.mode);
    line(&a.link);
    for (n, l) in &a.slaves {
        line(n);
        line(l);
    }
    line(b"");
    for (path, priority, map) in &a.choices {
        line(path);
        line(priority);
        for (n, _) in &a.slaves {
            line(map.get(n).map_or(&b""[..], Vec::as_slice));
        }
    }
    line(b"");
    out
}

/// `alternatives/NAME` files that several sources have, merged by choice (the uppermost
/// source's header and choice entries winning; slaves only a lower source knows kept).
fn merge_alternatives(sources: &[&Tree], warnings: &mut Vec<PackageWarning>) -> Vec<MergedFile> {
    let mut by_name: BTreeMap<Vec<u8>, Vec<(&str, &[u8])>> = BTreeMap::new();
    for t in sources {
        for (path, bytes) in t.files_under(ALTERNATIVES) {
            by_name
                .entry(path.to_vec())
                .or_default()
                .push((t.name.as_str(), bytes));
        }
    }
    let mut out = Vec::new();
    for (path, versions) in by_name {
        if versions.len() < 2 || versions.windows(2).all(|w| w[0].1 == w[1].1) {
            continue;
        }
        let mut merged: Option<Alternative> = None;
        for (name, bytes) in &versions {
            let Some(upper) = parse_alternative(bytes) else {
                warnings.push(PackageWarning {
                    kind: "backend".into(),
                    detail: format!(
                        "{name}: /{} is not an update-alternatives file; the uppermost one is kept",
                        String::from_utf8_lossy(&path)
                    ),
                });
                merged = None;
                break;
            };
            merged = Some(match merged {
                None => upper,
                Some(lower) => {
                    let mut m = upper.clone();
                    for s in lower.slaves {
                        if !m.slaves.iter().any(|u| u.0 == s.0) {
                            m.slaves.push(s);
                        }
                    }
                    let mut choices = lower.choices;
                    for c in upper.choices {
                        match choices.iter_mut().find(|l| l.0 == c.0) {
                            Some(l) => *l = c,
                            None => choices.push(c),
                        }
                    }
                    m.choices = choices;
                    m
                }
            });
        }
        if let Some(m) = merged {
            out.push(MergedFile {
                path: PathBuf::from(String::from_utf8_lossy(&path).into_owned()),
                bytes: write_alternative(&m),
            });
        }
    }
    out
}

/// A file of fixed-size records (`diversions`: 3 lines, keyed by the first;
/// `statoverride`: 1 line, keyed by the path after the owner, group and mode), merged by
/// key, the uppermost winning; `None` unless two sources have it and they differ.
fn merge_records(sources: &[&Tree], file: &str, lines_per: usize) -> Option<Vec<u8>> {
    let have: Vec<&[u8]> = sources.iter().filter_map(|t| t.file(file)).collect();
    if have.len() < 2 || have.windows(2).all(|w| w[0] == w[1]) {
        return None;
    }
    let mut order: Vec<Vec<u8>> = Vec::new();
    let mut records: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for bytes in have {
        let lines: Vec<&[u8]> = bytes
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        for rec in lines.chunks(lines_per) {
            let key = if lines_per == 1 {
                rec[0]
                    .splitn(4, |&c| c == b' ')
                    .nth(3)
                    .unwrap_or(rec[0])
                    .to_vec()
            } else {
                rec[0].to_vec()
            };
            let mut text = rec.join(&b'\n');
            text.push(b'\n');
            if records.insert(key.clone(), text).is_none() {
                order.push(key);
            }
        }
    }
    let mut out = Vec::new();
    for k in &order {
        out.extend_from_slice(&records[k]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\n\
                     Version: 1:1.2.13-1\nDescription: compression\n multi-line\n\n\
                     Package: less\nStatus: install ok installed\nArchitecture: amd64\nVersion: 590-2\n\n";
    const B: &str = "Package: less\nStatus: install ok installed\nArchitecture: amd64\nVersion: 608-2\nX-Extra: kept\n\n\
                     Package: gone\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1\n\n";

    #[test]
    fn status_stanzas_merge_verbatim_and_sorted() {
        let a = parse_status(A.as_bytes());
        let b = parse_status(B.as_bytes());
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].version, "1:1.2.13-1");
        assert_eq!(b[1].state, "config-files");
        let merged = String::from_utf8(merge_status([a.as_slice(), b.as_slice()].into_iter()))
            .expect("utf-8");
        assert_eq!(
            merged,
            "Package: gone\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1\n\n\
             Package: less\nStatus: install ok installed\nArchitecture: amd64\nVersion: 608-2\nX-Extra: kept\n\n\
             Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\n\
             Version: 1:1.2.13-1\nDescription: compression\n multi-line\n\n"
        );
    }

    #[test]
    fn alternatives_round_trip_and_merge_by_choice() {
        let text = b"auto\n/usr/bin/pager\npager.1.gz\n/usr/share/man/man1/pager.1.gz\n\n\
                     /bin/less\n77\n/usr/share/man/man1/less.1.gz\n/bin/more\n50\n\n\n";
        let a = parse_alternative(text).expect("parses");
        assert_eq!(a.choices.len(), 2);
        assert_eq!(write_alternative(&a), text.to_vec());
    }
}
