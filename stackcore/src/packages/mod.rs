//! Package databases in a stack: which package manager each source has, what the stack does
//! to its packages, and (with [`Mode::Merge`]) a database for the result that lists every
//! package of every source, the uppermost source's entry winning.
//!
//! Without a merge a stack behaves as a sequence of `rsync` does: the uppermost source's
//! database file replaces the others whole, and packages installed only below are on disk but
//! unknown to the package manager (`lost` in the report). A stack keeps the database files
//! as it reads the layers that hold them ([`Capture`]: every layer still read once, its
//! digests checked, nothing unpacked twice) and reports, checks and merges before its result
//! is renamed into place; [`run_checks`] reads them on their own, for a report before
//! anything is written (`stackbuild --dry-run`).
//!
//! | manager | database read | merged |
//! |---|---|---|
//! | dpkg | `var/lib/dpkg/status`, `info/*.list`, `alternatives/*`, `diversions`, `statoverride` | by this module |
//! | rpm | `rpmdb.sqlite` (under `usr/lib/sysimage/rpm` or `var/lib/rpm`) | with the host's `rpmdb --exportdb`/`--importdb` |
//! | apk | `lib/apk/db/installed` | by this module |
//! | pacman | `var/lib/pacman/local/*/desc` | one directory per package: the overlay already merges it |

mod dpkg;
mod rpm;
mod simple;
mod version;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::apply::Source;
use crate::entry::Kind;
use crate::manifest::{
    FileConflict, ManagerReport, ManagerResult, ManagerSource, PackageChange, PackageWarning,
    PackagesReport,
};
use crate::{Error, Result};

/// What a stack does with package databases (`--packages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Write a merged database into the result.
    Merge,
    /// Report what the stack does to packages; change no file.
    Report,
    /// Do not read package databases.
    Off,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Merge => "merge",
            Mode::Report => "report",
            Mode::Off => "off",
        }
    }
}

/// The `--packages` and `--strict` flags `stackmerge` and `stackbuild` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PackagesArgs {
    /// Package databases (dpkg, rpm, apk, pacman): `merge` writes one that lists every
    /// package of every source (the uppermost winning), `report` only says what the stack
    /// does to packages, `off` does not look [possible values: merge, report, off].
    #[arg(long = "packages", value_name = "MODE", hide_possible_values = true)]
    pub mode: Option<Mode>,
    /// Fail (exit 1, nothing written) when the stack loses or downgrades a package, two
    /// packages own one path, or the sources' distributions, architectures or usr-merge
    /// differ.
    #[arg(long)]
    pub strict: bool,
}

/// One source's package-related files, read without unpacking it.
#[derive(Debug, Default)]
pub struct Tree {
    /// How the source is named in reports.
    pub name: String,
    /// Contents of the regular files this module reads, by path (no leading `/`).
    files: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Kind (and symlink target) of every entry of the source.
    kinds: HashMap<Vec<u8>, (Kind, Vec<u8>)>,
}

/// The most this module reads of one file.
const FILE_LIMIT: u64 = 1 << 30;

/// Whether this module reads `path` (relative, no leading `/`).
fn wanted(path: &[u8]) -> bool {
    const EXACT: &[&[u8]] = &[
        b"var/lib/dpkg/status",
        b"var/lib/dpkg/diversions",
        b"var/lib/dpkg/statoverride",
        b"var/lib/apt/extended_states",
        b"etc/os-release",
        b"usr/lib/os-release",
        b"usr/lib/sysimage/rpm/rpmdb.sqlite",
        b"var/lib/rpm/rpmdb.sqlite",
        b"usr/lib/sysimage/rpm/rpmdb.sqlite-wal",
        b"var/lib/rpm/rpmdb.sqlite-wal",
        b"lib/apk/db/installed",
        b"etc/apk/world",
    ];
    EXACT.contains(&path)
        || (path.starts_with(b"var/lib/dpkg/info/") && path.ends_with(b".list"))
        || path.starts_with(b"var/lib/dpkg/alternatives/")
        || (path.starts_with(b"var/lib/pacman/local/")
            && (path.ends_with(b"/desc") || path.ends_with(b"/files")))
}

/// An image source's package files to read: (layer, change number) -> their paths.
type Wants = BTreeMap<(u32, u32), Vec<Vec<u8>>>;

impl Tree {
    /// Reads what this module needs of `src`: an image's files from the layers that hold
    /// their final versions (each such layer read once), a directory's from disk.
    pub fn read(src: &Source) -> Result<Tree> {
        let Source::Image(img) = src else {
            return Tree::from_dir(src);
        };
        let (mut t, wants) = Tree::plan(src.name(), &img.model(0)?)?;
        let mut by_layer: BTreeMap<u32, HashMap<u32, &[Vec<u8>]>> = BTreeMap::new();
        for ((layer, change), paths) in &wants {
            by_layer.entry(*layer).or_default().insert(*change, paths);
        }
        for (layer, want) in by_layer {
            let mut stream = img.open_layer(layer as usize)?;
            let digest = stream.digest.clone();
            let err = |e: std::io::Error| crate::layer::read::layer_error(&digest, &e);
            let mut i = 0u32;
            while stream.tar.next_header().map_err(err)?.is_some() {
                if let Some(paths) = want.get(&i) {
                    let mut bytes = Vec::new();
                    stream.tar.data().read_to_end(&mut bytes).map_err(err)?;
                    t.keep(paths, bytes);
                }
                i += 1;
            }
            // Read to the end: the bytes count only once the digests check out.
            stream.finish()?;
        }
        Ok(t)
    }

    /// An image source's tree without file contents, from its plan (`model`), and which
    /// entries of which layers hold the files this module reads.
    fn plan(name: String, model: &crate::layer::model::Model) -> Result<(Tree, Wants)> {
        let mut t = Tree {
            name,
            ..Tree::default()
        };
        if model.complex {
            return Err(Error::Other(format!(
                "{}: its layers write through symlinks; its package database is not read",
                t.name
            )));
        }
        let mut wants = Wants::new();
        for (path, node) in &model.nodes {
            t.kinds
                .insert(path.clone(), (node.entry.kind, node.entry.link.clone()));
            if node.entry.kind == Kind::File && wanted(path) {
                if node.entry.size > FILE_LIMIT {
                    return Err(Error::Other(format!(
                        "{}: {} is {} bytes, too big for a package database",
                        t.name,
                        String::from_utf8_lossy(path),
                        node.entry.size
                    )));
                }
                let (_, layer, change) = node.data_origin;
                wants.entry((layer, change)).or_default().push(path.clone());
            }
        }
        Ok((t, wants))
    }

    /// A directory source's tree, its files read from disk.
    fn from_dir(src: &Source) -> Result<Tree> {
        let mut t = Tree {
            name: src.name(),
            ..Tree::default()
        };
        if let Source::Dir { entries, .. } = src {
            for (e, disk) in entries {
                let kind = if e.kind == Kind::Hardlink {
                    Kind::File
                } else {
                    e.kind
                };
                t.kinds.insert(e.path.clone(), (kind, e.link.clone()));
                if kind == Kind::File && wanted(&e.path) {
                    let bytes = std::fs::read(disk).map_err(|err| Error::io(disk, err))?;
                    t.files.insert(e.path.clone(), bytes);
                }
            }
        }
        Ok(t)
    }

    /// Keeps `bytes` as the contents of `paths`.
    fn keep(&mut self, paths: &[Vec<u8>], bytes: Vec<u8>) {
        if let Some((last, rest)) = paths.split_last() {
            for p in rest {
                self.files.insert(p.clone(), bytes.clone());
            }
            self.files.insert(last.clone(), bytes);
        }
    }

    /// A regular file's contents.
    fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path.as_bytes()).map(Vec::as_slice)
    }

    /// The regular files read whose paths start with `prefix`.
    fn files_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.files
            .range(prefix.as_bytes().to_vec()..)
            .take_while(move |(p, _)| p.starts_with(prefix.as_bytes()))
            .map(|(p, b)| (p.as_slice(), b.as_slice()))
    }

    /// The entry's kind and symlink target.
    fn kind(&self, path: &[u8]) -> Option<&(Kind, Vec<u8>)> {
        self.kinds.get(path)
    }

    /// `path` with symlinks in its leading components resolved (relative targets within
    /// the tree; a few hops), as a file list's `/bin/ls` is `usr/bin/ls` in a usr-merged root.
    fn resolve(&self, path: &[u8]) -> Vec<u8> {
        let mut cur: Vec<u8> = path.to_vec();
        for _ in 0..8 {
            let mut changed = false;
            let mut end = 0;
            while end < cur.len() {
                let next = cur[end..]
                    .iter()
                    .position(|&b| b == b'/')
                    .map_or(cur.len(), |i| end + i);
                if next == cur.len() {
                    break; // the last component is the entry itself
                }
                let prefix = &cur[..next];
                if let Some((Kind::Symlink, link)) = self.kind(prefix) {
                    let base = crate::entry::parent(prefix).to_vec();
                    let target = if link.starts_with(b"/") {
                        link[1..].to_vec()
                    } else {
                        normalize(&crate::entry::join(&base, link))
                    };
                    let mut n = target;
                    n.extend_from_slice(&cur[next..]);
                    cur = normalize(&n);
                    changed = true;
                    break;
                }
                end = next + 1;
            }
            if !changed {
                break;
            }
        }
        cur
    }

    /// Whether `path` (resolved, a final symlink followed too) is a directory in this tree.
    fn is_dir(&self, path: &[u8]) -> bool {
        let mut p = self.resolve(path);
        for _ in 0..8 {
            match self.kind(&p) {
                Some((Kind::Dir, _)) => return true,
                Some((Kind::Symlink, link)) => {
                    let target = if link.starts_with(b"/") {
                        link[1..].to_vec()
                    } else {
                        crate::entry::join(crate::entry::parent(&p), link)
                    };
                    p = self.resolve(&normalize(&target));
                }
                _ => return false,
            }
        }
        false
    }

    /// `ID` and `VERSION_ID` of the tree's os-release, when it has one.
    fn os_release(&self) -> Option<(String, String)> {
        let text = self
            .file("etc/os-release")
            .or_else(|| self.file("usr/lib/os-release"))?;
        let text = String::from_utf8_lossy(text);
        let mut id = String::new();
        let mut version = String::new();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
            match k.trim() {
                "ID" => id = v,
                "VERSION_ID" => version = v,
                _ => {}
            }
        }
        (!id.is_empty()).then_some((id, version))
    }

    /// Whether `bin` is a symlink (usr-merged), a directory (not), or absent.
    fn usr_merged(&self) -> Option<bool> {
        match self.kind(b"bin") {
            Some((Kind::Symlink, _)) => Some(true),
            Some((Kind::Dir, _)) => Some(false),
            _ => None,
        }
    }
}

/// `a/./b/../c` to `a/c`, without a leading `/`.
fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join(&b'/')
}

/// One package as a database lists it.
#[derive(Debug, Clone)]
pub(crate) struct Pkg {
    /// Its version as the manager writes it.
    pub version: String,
    /// Whether it is installed (its files are on disk), not only remembered.
    pub present: bool,
    /// The files it owns (no leading `/`), for file conflicts.
    pub files: Vec<Vec<u8>>,
}

/// One source's database of one manager: packages by (name, arch).
#[derive(Debug, Clone, Default)]
pub(crate) struct Db {
    pub packages: BTreeMap<(String, String), Pkg>,
}

/// A file to write into the result when merging: its path (relative) and contents.
#[derive(Debug, Clone)]
pub struct MergedFile {
    /// Relative path in the result.
    pub path: PathBuf,
    /// The new contents.
    pub bytes: Vec<u8>,
}

/// What the module found and, when merging, what it will write.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The `packages` section of the reports.
    pub report: PackagesReport,
    /// Files to write into the result (empty unless merging).
    pub writes: Vec<MergedFile>,
}

impl Analysis {
    /// The analysis of `--packages off`.
    pub fn off() -> Analysis {
        Analysis {
            report: PackagesReport::empty(Mode::Off.as_str()),
            writes: Vec::new(),
        }
    }

    /// What `--strict` refuses: lost and downgraded packages, file conflicts and warnings,
    /// one phrase each; empty when there is none.
    pub fn strict_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.report.managers {
            let count = |c: &str| m.changes.iter().filter(|x| x.change == c).count();
            for what in ["lost", "downgraded"] {
                let n = count(what);
                if n > 0 {
                    out.push(format!("{n} {} package(s) {what}", m.manager));
                }
            }
            if !m.file_conflicts.is_empty() {
                out.push(format!(
                    "{} path(s) owned by different {} packages",
                    m.file_conflicts.len(),
                    m.manager
                ));
            }
        }
        if !self.report.warnings.is_empty() {
            out.push(format!("{} warning(s)", self.report.warnings.len()));
        }
        out
    }

    /// After the stack: a warning for each database file whose lower content the stack kept
    /// under the upper one's metadata (rsync's quick check: same size, same mtime second),
    /// where the report assumed the upper database. A merge rewrites those files anyway.
    pub fn note_conflicts(
        &mut self,
        conflicts: &[crate::apply::ConflictReport],
        log: &crate::cli::Log,
    ) {
        if self.report.mode != Mode::Report.as_str() {
            return;
        }
        for c in conflicts {
            if c.resolution == crate::layer::model::Resolution::LowerContentKept
                && self.report.managers.iter().any(|m| m.database == c.path)
            {
                let w = PackageWarning {
                    kind: "backend".into(),
                    detail: format!(
                        "{}: the result holds {}'s content (same size and mtime as {}'s: \
                         rsync's quick check keeps it), not the upper database reported above",
                        c.path, c.lower, c.upper
                    ),
                };
                log.warn(format_args!("packages: {}", w.detail));
                self.report.warnings.push(w);
            }
        }
    }

    /// A few plain lines for people: per manager, the counts and the notable changes.
    pub fn summary(&self) -> Vec<String> {
        let r = &self.report;
        let mut out = Vec::new();
        for m in &r.managers {
            let per: Vec<String> = m
                .sources
                .iter()
                .map(|s| format!("{} {}", s.source, s.packages))
                .collect();
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for c in &m.changes {
                *counts.entry(c.change.as_str()).or_default() += 1;
            }
            let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            out.push(format!(
                "packages ({}, {}): {}; result {}{}{}",
                m.manager,
                m.database,
                per.join(", "),
                m.result.packages,
                if m.result.merged {
                    " (merged)"
                } else {
                    " (the uppermost database)"
                },
                if counts.is_empty() {
                    String::new()
                } else {
                    format!(": {}", counts.join(", "))
                }
            ));
            for c in m
                .changes
                .iter()
                .filter(|c| c.change == "lost" || c.change == "downgraded")
                .take(10)
            {
                out.push(format!(
                    "  {} {}:{} ({})",
                    c.change,
                    c.package,
                    c.arch,
                    c.versions.join(" -> ")
                ));
            }
            for f in m.file_conflicts.iter().take(10) {
                out.push(format!(
                    "  /{} is owned by {} (the file of {} is on disk)",
                    f.path,
                    f.packages.join(" and "),
                    f.winner
                ));
            }
        }
        out
    }
}

/// How a stack treats package databases: `--packages`, `--strict`, and where it says what
/// it found.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// `--packages`.
    pub mode: Mode,
    /// `--strict`.
    pub strict: bool,
    /// Where the few lines go.
    pub log: crate::cli::Log,
}

impl Checks {
    /// Says what `analysis` found on stderr (a few lines, warnings even with `--quiet`), and
    /// with `strict` refuses a stack with problems (see [`Analysis::strict_problems`]).
    fn tell(&self, analysis: Analysis) -> Result<Analysis> {
        for line in analysis.summary() {
            self.log.step(line);
        }
        for w in &analysis.report.warnings {
            self.log.warn(format_args!("packages: {}", w.detail));
        }
        if self.strict {
            let problems = analysis.strict_problems();
            if !problems.is_empty() {
                return Err(Error::Other(format!(
                    "--strict: {}; nothing written (see the lines above, or --packages report --json)",
                    problems.join(", ")
                )));
            }
        }
        Ok(analysis)
    }

    /// The analysis of the files a stack kept in `capture` (see [`Capture`]), said and
    /// checked as [`run_checks`] does.
    pub fn finish(&self, capture: Capture) -> Result<Analysis> {
        let mut report = PackagesReport::empty(self.mode.as_str());
        report.warnings = capture.warnings;
        self.tell(analyze_trees(&capture.trees, self.mode, report)?)
    }
}

/// What a run that must report before it writes (`stackbuild --dry-run`) does: [`analyze`]
/// the sources, reading the layers that hold their package files, then say what it found
/// and check it as [`Checks`] does. A stack does better with a [`Capture`]: it keeps the
/// files from the layer reads it makes anyway.
pub fn run_checks(
    sources: &[Source],
    mode: Mode,
    strict: bool,
    log: &crate::cli::Log,
) -> Result<Analysis> {
    let checks = Checks {
        mode,
        strict,
        log: *log,
    };
    checks.tell(analyze(sources, mode)?)
}

/// The package files of a stack's sources, kept while the stack reads the layers that hold
/// them (that read checks every digest), so that no layer is inflated a second time: also
/// the files a later layer or source replaces, from layers the stack then reads only for
/// them. A directory source's files are read from disk when it is added.
#[derive(Debug, Default)]
pub struct Capture {
    /// Each source's tree, lowest first.
    trees: Vec<Tree>,
    /// (source, layer, change number) -> the paths whose contents that entry holds.
    wants: HashMap<(u32, u32, u32), Vec<Vec<u8>>>,
    /// Sources whose database is not read, as warnings.
    warnings: Vec<PackageWarning>,
}

impl Capture {
    /// Adds the next source, `model` its plan (numbered as source `s`).
    pub fn add(&mut self, s: u32, src: &Source, model: &crate::layer::model::Model) {
        let tree = match src {
            Source::Image(_) => Tree::plan(src.name(), model).map(|(t, wants)| {
                for ((layer, change), paths) in wants {
                    self.wants.insert((s, layer, change), paths);
                }
                t
            }),
            Source::Dir { .. } => Tree::from_dir(src),
        };
        let tree = tree.unwrap_or_else(|e| {
            self.warnings.push(PackageWarning {
                kind: "backend".into(),
                detail: e.to_string(),
            });
            Tree {
                name: src.name(),
                ..Tree::default()
            }
        });
        self.trees.push(tree);
    }

    /// The (source, layer) pairs that hold a wanted file.
    pub fn layers(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.wants.keys().map(|&(s, l, _)| (s, l))
    }

    /// Whether entry `change` of `layer` of source `s` holds a wanted file.
    pub fn wants(&self, s: u32, layer: u32, change: u32) -> bool {
        self.wants.contains_key(&(s, layer, change))
    }

    /// Keeps the contents of that entry.
    pub fn keep(&mut self, s: u32, layer: u32, change: u32, bytes: Vec<u8>) {
        if let (Some(paths), Some(tree)) = (
            self.wants.get(&(s, layer, change)),
            self.trees.get_mut(s as usize),
        ) {
            tree.keep(paths, bytes);
        }
    }
}

/// Reads every source's package databases and works out what the stack does to them in
/// `mode`; with [`Mode::Merge`], also the merged database files.
pub fn analyze(sources: &[Source], mode: Mode) -> Result<Analysis> {
    if mode == Mode::Off {
        return Ok(Analysis::off());
    }
    let mut report = PackagesReport::empty(mode.as_str());
    let mut trees = Vec::with_capacity(sources.len());
    for src in sources {
        match Tree::read(src) {
            Ok(t) => trees.push(t),
            Err(e) => {
                report.warnings.push(PackageWarning {
                    kind: "backend".into(),
                    detail: e.to_string(),
                });
                trees.push(Tree {
                    name: src.name(),
                    ..Tree::default()
                });
            }
        }
    }
    analyze_trees(&trees, mode, report)
}

fn analyze_trees(trees: &[Tree], mode: Mode, mut report: PackagesReport) -> Result<Analysis> {
    let merge = mode == Mode::Merge;
    let mut writes = Vec::new();
    distribution_warnings(trees, &mut report.warnings);

    if let Some(found) = dpkg::read_all(trees, &mut report.warnings) {
        let (m, w) = dpkg::finish(trees, &found, merge, &mut report.warnings);
        report.managers.push(m);
        writes.extend(w);
    }
    // Reading rpm needs the host's rpmdb: in report mode its failure is a warning, in
    // merge mode it stops the run (the result would lie).
    match rpm::analyze(trees, merge, &mut report.warnings, &mut writes) {
        Ok(Some(m)) => report.managers.push(m),
        Ok(None) => {}
        Err(e) if !merge => report.warnings.push(PackageWarning {
            kind: "backend".into(),
            detail: format!("rpm: {e}"),
        }),
        Err(e) => return Err(e),
    }
    if let Some(m) = simple::apk(trees, merge, &mut report.warnings, &mut writes) {
        report.managers.push(m);
    }
    if let Some(m) = simple::pacman(trees, &mut report.warnings) {
        report.managers.push(m);
    }
    Ok(Analysis { report, writes })
}

/// Warnings when the sources' os-release `ID`/`VERSION_ID` or usr-merge differ.
fn distribution_warnings(trees: &[Tree], warnings: &mut Vec<PackageWarning>) {
    let os: Vec<(String, (String, String))> = trees
        .iter()
        .filter_map(|t| t.os_release().map(|o| (t.name.clone(), o)))
        .collect();
    if os.windows(2).any(|w| w[0].1 != w[1].1) {
        warnings.push(PackageWarning {
            kind: "distribution".into(),
            detail: format!(
                "the sources are different distributions: {}",
                os.iter()
                    .map(|(n, (id, v))| format!("{n} is {id} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let merged: Vec<(String, bool)> = trees
        .iter()
        .filter_map(|t| t.usr_merged().map(|m| (t.name.clone(), m)))
        .collect();
    if merged.iter().any(|m| m.1) && merged.iter().any(|m| !m.1) {
        warnings.push(PackageWarning {
            kind: "usr-merge".into(),
            detail: format!(
                "a usr-merged root (/bin a symlink) is stacked with one that is not: {}",
                merged
                    .iter()
                    .map(|(n, m)| format!("{n} {}", if *m { "merged" } else { "not merged" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
}

/// The architecture most of `db`'s packages are built for (not `all`, `noarch`, `any`).
pub(crate) fn main_arch(db: &Db) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, arch) in db.packages.keys() {
        if !matches!(arch.as_str(), "all" | "noarch" | "any" | "") {
            *counts.entry(arch.as_str()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(a, n)| (*n, std::cmp::Reverse(*a)))
        .map(|(a, _)| a.to_owned())
}

/// The sources with a database of one manager: tree index and its database.
pub(crate) type Found = Vec<(usize, Db)>;

/// The common part of every manager's report: counts, changes, file conflicts, and an
/// architecture warning. `result` is what the result's database lists.
pub(crate) fn compare(
    manager: &str,
    database: &str,
    trees: &[Tree],
    found: &Found,
    merged: bool,
    cmp: fn(&str, &str) -> std::cmp::Ordering,
    warnings: &mut Vec<PackageWarning>,
) -> ManagerReport {
    let name = |i: usize| trees[i].name.clone();
    // What the result lists, and from which source (index into `found`).
    let mut result: BTreeMap<(String, String), (usize, &Pkg)> = BTreeMap::new();
    if merged {
        for (fi, (_, db)) in found.iter().enumerate() {
            for (k, p) in &db.packages {
                result.insert(k.clone(), (fi, p));
            }
        }
    } else if let Some((_, db)) = found.last() {
        let fi = found.len() - 1;
        for (k, p) in &db.packages {
            result.insert(k.clone(), (fi, p));
        }
    }
    let mut keys: BTreeSet<&(String, String)> = BTreeSet::new();
    for (_, db) in found {
        keys.extend(db.packages.keys().filter(|k| db.packages[*k].present));
    }
    let mut changes = Vec::new();
    for key in keys {
        let holders: Vec<(usize, &Pkg)> = found
            .iter()
            .enumerate()
            .filter_map(|(fi, (_, db))| db.packages.get(key).filter(|p| p.present).map(|p| (fi, p)))
            .collect();
        if holders.len() == found.len()
            && holders.iter().all(|h| h.1.version == holders[0].1.version)
        {
            continue; // the same in every database: nothing to say
        }
        let mut versions: Vec<String> = Vec::new();
        for (_, p) in &holders {
            if !versions.contains(&p.version) {
                versions.push(p.version.clone());
            }
        }
        let change = match result.get(key) {
            Some((r, p)) if p.present => match holders.iter().rev().find(|(fi, _)| fi < r) {
                Some((_, lower)) => match cmp(&p.version, &lower.version) {
                    std::cmp::Ordering::Greater => "upgraded",
                    std::cmp::Ordering::Less => "downgraded",
                    std::cmp::Ordering::Equal => "kept",
                },
                None if *r + 1 < found.len() => "kept",
                None => "added",
            },
            _ => "lost",
        };
        changes.push(PackageChange {
            package: key.0.clone(),
            arch: key.1.clone(),
            change: change.into(),
            versions,
            sources: holders.iter().map(|(fi, _)| name(found[*fi].0)).collect(),
        });
    }

    // Paths that packages of different names own in different sources.
    let mut owners: BTreeMap<Vec<u8>, Vec<(usize, String)>> = BTreeMap::new();
    for (fi, (ti, db)) in found.iter().enumerate() {
        let tree = &trees[*ti];
        for ((pname, _), p) in &db.packages {
            if !p.present {
                continue;
            }
            for f in &p.files {
                let path = tree.resolve(f);
                if tree.kind(&path).is_none() || tree.is_dir(&path) {
                    continue; // not there (a diverted or removed file), or a directory
                }
                let v = owners.entry(path).or_default();
                if !v.iter().any(|(s, n)| *s == fi && n == pname) {
                    v.push((fi, pname.clone()));
                }
            }
        }
    }
    let mut file_conflicts = Vec::new();
    for (path, v) in owners {
        let mut names: Vec<String> = Vec::new();
        for (_, n) in &v {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let across = v
            .iter()
            .any(|(s1, n1)| v.iter().any(|(s2, n2)| s1 != s2 && n1 != n2));
        if !across {
            continue;
        }
        let winner = v.iter().max_by_key(|(s, _)| *s).map(|(_, n)| n.clone());
        file_conflicts.push(FileConflict {
            path: String::from_utf8_lossy(&path).into_owned(),
            packages: names,
            winner: winner.unwrap_or_default(),
        });
    }

    let arches: Vec<(String, String)> = found
        .iter()
        .filter_map(|(ti, db)| main_arch(db).map(|a| (name(*ti), a)))
        .collect();
    if arches.windows(2).any(|w| w[0].1 != w[1].1) {
        warnings.push(PackageWarning {
            kind: "architecture".into(),
            detail: format!(
                "{} packages of different architectures: {}",
                manager,
                arches
                    .iter()
                    .map(|(n, a)| format!("{n} {a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }

    ManagerReport {
        manager: manager.into(),
        database: database.into(),
        sources: found
            .iter()
            .map(|(ti, db)| ManagerSource {
                source: name(*ti),
                packages: db.packages.values().filter(|p| p.present).count() as u64,
            })
            .collect(),
        result: ManagerResult {
            packages: result.values().filter(|(_, p)| p.present).count() as u64,
            merged,
        },
        changes,
        file_conflicts,
    }
}

/// Writes the merged database files into `dest` (the stacked result): each through a
/// temporary file beside it, renamed over the stacked one, keeping that file's mode and
/// owner.
pub fn write_merged(dest: &Path, writes: &[MergedFile]) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    for w in writes {
        let path = dest.join(&w.path);
        let dir = path.parent().unwrap_or(dest);
        let meta = std::fs::symlink_metadata(&path).ok();
        if meta.as_ref().is_some_and(|m| !m.file_type().is_file()) {
            return Err(Error::Other(format!(
                "{}: not a regular file in the result; the merged database is not written",
                path.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".stackmerge-packages-")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        std::io::Write::write_all(&mut tmp, &w.bytes).map_err(|e| Error::io(tmp.path(), e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(tmp.path(), e))?;
        let mode = meta.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(tmp.path(), e))?;
        if let Some(m) = &meta {
            // Not root: the owner stays ours, as for every file the stack wrote.
            let _ = std::os::unix::fs::lchown(tmp.path(), Some(m.uid()), Some(m.gid()));
        }
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize(b"usr/./lib/../bin/ls"), b"usr/bin/ls");
        assert_eq!(normalize(b"/a//b/"), b"a/b");
    }

    #[test]
    fn resolves_usr_merge_links() {
        let mut t = Tree::default();
        t.kinds
            .insert(b"bin".to_vec(), (Kind::Symlink, b"usr/bin".to_vec()));
        t.kinds
            .insert(b"lib64".to_vec(), (Kind::Symlink, b"/usr/lib64".to_vec()));
        t.kinds.insert(b"usr/bin".to_vec(), (Kind::Dir, Vec::new()));
        assert_eq!(t.resolve(b"bin/ls"), b"usr/bin/ls");
        assert_eq!(t.resolve(b"lib64/ld.so"), b"usr/lib64/ld.so");
        assert_eq!(t.resolve(b"bin"), b"bin");
        assert!(t.is_dir(b"usr/bin"));
        assert!(t.is_dir(b"bin"), "a symlink to a directory");
        assert!(!t.is_dir(b"lib64"), "a symlink to nothing");
    }
}
