//! Writing images and directories into a target: one image (`unstash`) or a stack of
//! sources (`stackmerge`).
//!
//! With a plan (the overlay [`Model`] computed from layer indexes and directory walks),
//! each final inode is written once, at its first final name, and its other names are
//! linked to it: entries a later layer or source replaces or deletes are skipped, layers
//! with nothing left to give are not even read, and directories are made at the end with
//! their final metadata. Where the model cannot predict an image (see [`Model::complex`]),
//! or for an image of one layer, that image's layers are applied in order instead,
//! whiteouts and all (for a stack: into a scratch directory that then serves as a
//! directory source).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::entry::{Entry, Kind};
use crate::extract::{ExtractOptions, ExtractStats, Staging, Target};
use crate::image::Image;
use crate::layer::index::{Change, classify};
use crate::layer::model::{Conflict, ConflictKind, Model, Origin, Resolution};
use crate::layer::read::LayerStream;
use crate::tree::{WalkOptions, walk};
use crate::{Error, Result};

/// One source of a stack.
#[derive(Debug)]
pub enum Source {
    /// An image: its layers with overlay semantics.
    Image(Box<Image>),
    /// A directory, read without following symlinks.
    Dir {
        /// Its path.
        path: PathBuf,
        /// Its entries with their paths on disk, in walk order.
        entries: Vec<(Entry, PathBuf)>,
        /// Directories to treat as undeclared (an image's implicit parents, when the image
        /// was unstashed into a scratch directory first).
        implicit: HashSet<Vec<u8>>,
    },
}

impl Source {
    /// Walks a directory source. Nothing below it is followed, but the directory itself may be
    /// a symlink to one, as `rsync SRC/` follows it.
    pub fn dir(path: PathBuf) -> Result<Source> {
        let mut entries = Vec::new();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        let root = if meta.file_type().is_symlink() {
            std::fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?
        } else {
            path.clone()
        };
        walk(&root, &WalkOptions::default(), &mut |w| {
            entries.push((w.entry, w.source));
            Ok(())
        })?;
        Ok(Source::Dir {
            path,
            entries,
            implicit: HashSet::new(),
        })
    }

    /// How to name it in messages and reports.
    pub fn name(&self) -> String {
        match self {
            Source::Image(i) => i.name.clone(),
            Source::Dir { path, .. } => path.display().to_string(),
        }
    }

    /// The modelled tree of this source alone, as source number `s`.
    pub fn model(&self, s: u32) -> Result<Model> {
        match self {
            Source::Image(img) => img.model(s),
            Source::Dir {
                entries, implicit, ..
            } => {
                let mut m = Model::new();
                for (i, (e, _)) in entries.iter().enumerate() {
                    m.put(e.clone(), None, (s, 0, i as u32));
                }
                for p in implicit {
                    if let Some(n) = m.nodes.get_mut(p)
                        && n.entry.kind == Kind::Dir
                    {
                        n.implicit = true;
                    }
                }
                Ok(m)
            }
        }
    }
}

/// The planned result of a stack.
#[derive(Debug)]
pub struct Plan {
    /// The final tree.
    pub model: Model,
    /// Conflicts between sources.
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    /// Models `sources` laid over each other in order (`rsync -aHAX` semantics between
    /// sources, overlay semantics between the layers of one image).
    pub fn new(sources: &[Source]) -> Result<Plan> {
        let models = sources
            .iter()
            .enumerate()
            .map(|(s, src)| src.model(s as u32))
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan::from_models(models))
    }

    /// Lays the sources' models over each other, lowest first.
    pub fn from_models(models: Vec<Model>) -> Plan {
        let mut models = models.into_iter();
        let mut model = models.next().unwrap_or_else(Model::new_root);
        let mut conflicts = Vec::new();
        for (s, m) in models.enumerate() {
            conflicts.extend(model.overlay(m, s as u32 + 1));
        }
        Plan { model, conflicts }
    }

    /// How many final entries each source provided.
    pub fn provided(&self, sources: usize) -> Vec<u64> {
        let mut v = vec![0u64; sources];
        for n in self.model.nodes.values().filter(|n| !n.implicit) {
            if let Some(c) = v.get_mut(n.origin.0 as usize) {
                *c += 1;
            }
        }
        v
    }
}

/// The final inodes by data origin: the entry to write (the first final name, with the
/// final metadata) and the other names to link to it.
fn final_inodes(model: &Model) -> HashMap<Origin, (&Entry, Vec<&[u8]>)> {
    let mut inodes: HashMap<Origin, (&Entry, Vec<&[u8]>)> = HashMap::new();
    for (p, n) in &model.nodes {
        if n.entry.kind == Kind::Dir {
            continue;
        }
        inodes
            .entry(n.data_origin)
            .and_modify(|(_, others)| others.push(p))
            .or_insert((&n.entry, Vec::new()));
    }
    inodes
}

fn put_inode(
    target: &mut Target,
    (entry, others): &(&Entry, Vec<&[u8]>),
    data: &mut dyn Read,
) -> Result<()> {
    target.put(entry, data)?;
    for name in others {
        let mut link = Entry::new(name.to_vec(), Kind::Hardlink);
        link.link.clone_from(&entry.path);
        target.put(&link, &mut io::empty())?;
    }
    Ok(())
}

/// Opens `path` for reading without following a symlink in its last component.
pub(crate) fn open_nofollow(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|err| Error::io(path, err))
}

/// A layer opened before it is needed, so that it decompresses while the caller plans:
/// (source, layer, stream). Dropped unused when the plan does not need it.
pub type Early = Option<(u32, u32, LayerStream)>;

/// Opens layer 0 of `src` early, when it is an image: the lowest layer of the lowest image
/// is nearly always part of the result.
fn open_early(s: u32, src: &Source) -> Result<Early> {
    match src {
        Source::Image(img) if !img.manifest.layers.is_empty() => {
            Ok(Some((s, 0, img.open_layer(0)?)))
        }
        _ => Ok(None),
    }
}

/// Writes `sources` into `target` as `model` (their plan) says: the directories, then each
/// final inode once, in the order the sources and layers hold them. The model must not be
/// `complex`. `early` is used if the plan needs it; without one, the first layer to read is
/// opened before the directories are made. With `capture`, the package files it wants are
/// kept as their layers are read, and layers holding only such files are read for them.
pub fn write(
    sources: &[&Source],
    model: &Model,
    target: &mut Target,
    early: Early,
    mut capture: Option<&mut crate::packages::Capture>,
) -> Result<()> {
    if model.complex {
        return Err(Error::Other(
            "a source writes through a symlink or links to nothing; it must be applied in \
             order, not planned"
                .into(),
        ));
    }
    let inodes = final_inodes(model);
    let mut layers: HashSet<(u32, u32)> = inodes.keys().map(|o| (o.0, o.1)).collect();
    if let Some(c) = &capture {
        layers.extend(c.layers());
    }
    let mut early = match early {
        Some(e) if layers.contains(&(e.0, e.1)) => Some(e),
        _ => sources
            .iter()
            .enumerate()
            .find_map(|(s, src)| match src {
                Source::Image(img) => (0..img.manifest.layers.len() as u32)
                    .find(|&l| layers.contains(&(s as u32, l)))
                    .map(|l| (s as u32, l, img)),
                Source::Dir { .. } => None,
            })
            .map(|(s, l, img)| img.open_layer(l as usize).map(|stream| (s, l, stream)))
            .transpose()?,
    };
    // The directories first, parents before children (their metadata comes last, in
    // `Target::finish`): every file's parent is then there when the file comes.
    for node in model.nodes.values() {
        if node.entry.kind == Kind::Dir {
            target.ensure_dir(&node.entry, node.implicit)?;
        }
    }
    for (s, src) in sources.iter().enumerate() {
        let s = s as u32;
        match src {
            Source::Image(img) => {
                for l in 0..img.manifest.layers.len() as u32 {
                    if !layers.contains(&(s, l)) {
                        continue; // everything this layer holds is replaced or deleted above
                    }
                    let mut stream = match early.take_if(|(es, el, _)| (*es, *el) == (s, l)) {
                        Some((_, _, stream)) => stream,
                        None => img.open_layer(l as usize)?,
                    };
                    let digest = stream.digest.clone();
                    let mut i = 0u32;
                    while let Some(h) = stream
                        .tar
                        .next_header()
                        .map_err(|e| Error::layer(&digest, e))?
                    {
                        let change = classify(h.entry).map_err(|e| Error::layer(&digest, e))?;
                        let inode = match change {
                            Change::Put(e, _) if e.kind != Kind::Dir => inodes.get(&(s, l, i)),
                            _ => None,
                        };
                        match capture.as_deref_mut() {
                            Some(c) if c.wants(s, l, i) => {
                                let mut bytes = Vec::new();
                                stream
                                    .tar
                                    .data()
                                    .read_to_end(&mut bytes)
                                    .map_err(|e| Error::layer(&digest, e))?;
                                if let Some(inode) = inode {
                                    put_inode(target, inode, &mut bytes.as_slice())?;
                                }
                                c.keep(s, l, i, bytes);
                            }
                            _ => {
                                if let Some(inode) = inode {
                                    put_inode(target, inode, &mut stream.tar.data())?;
                                }
                            }
                        }
                        i += 1;
                    }
                    stream.finish()?;
                }
            }
            Source::Dir { entries, .. } => {
                for (i, (e, path)) in entries.iter().enumerate() {
                    let Some(inode) = inodes.get(&(s, 0, i as u32)) else {
                        continue;
                    };
                    if e.kind == Kind::File {
                        put_inode(target, inode, &mut open_nofollow(path)?)?;
                    } else if e.kind != Kind::Dir {
                        put_inode(target, inode, &mut io::empty())?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Applies an image's layers in order, as a plain extractor would, with overlay semantics:
/// a layer's whiteouts and opaque markers hide what the layers below left there and never
/// what the layer itself puts, so they are applied first, wherever they sit in its tar
/// (from the layer's index, as the planner does). Applied where they appear, one could act
/// on the layer's own entries, even through a symlink the same layer just made. `first`,
/// if given, is layer 0 already opened.
pub fn sequential(img: &Image, target: &mut Target, mut first: Option<LayerStream>) -> Result<()> {
    for l in 0..img.manifest.layers.len() {
        if l > 0 {
            // Nothing lies below the first layer: its markers have nothing to hide.
            for change in img.layer_index(l)?.changes {
                match change {
                    Change::Opaque(dir) => target.prune(&dir, &HashSet::new())?,
                    Change::Whiteout(p) => target.remove(&p)?,
                    Change::Put(..) => {}
                }
            }
        }
        let mut stream = match first.take() {
            Some(stream) if l == 0 => stream,
            _ => img.open_layer(l)?,
        };
        let digest = stream.digest.clone();
        let err = |e: io::Error| Error::layer(&digest, e);
        let mut seen = crate::layer::index::DuplicateCheck::default();
        while let Some(h) = stream.tar.next_header().map_err(err)? {
            let change = classify(h.entry).map_err(err)?;
            seen.check(&change).map_err(err)?;
            if let Change::Put(e, _) = change {
                target.put(&e, &mut stream.tar.data())?;
            }
        }
        stream.finish()?;
    }
    Ok(())
}

/// What an unstash did.
#[derive(Debug, Clone)]
pub struct UnstashOutcome {
    /// Where the tree is (absent for a tar output).
    pub dest: Option<PathBuf>,
    /// Whether the one-pass plan was used (otherwise the layers were applied in order).
    pub planned: bool,
    /// What was written and what could not be restored.
    pub stats: crate::extract::ExtractStats,
}

/// Writes `img`'s merged tree to `dest` (absent or empty), through a staging directory.
pub fn unstash_to_dir(
    img: Image,
    dest: &std::path::Path,
    opts: crate::extract::ExtractOptions,
) -> Result<UnstashOutcome> {
    let staging = crate::extract::Staging::new(dest)?;
    let mut target = Target::open(staging.path(), opts)?;
    let planned = write_image(img, &mut target)?;
    let stats = target.finish()?;
    let dest = staging.commit()?;
    Ok(UnstashOutcome {
        dest: Some(dest),
        planned,
        stats,
    })
}

fn write_image(img: Image, target: &mut Target) -> Result<bool> {
    let explain = img.clone();
    write_layers(img, target).map_err(|e| explain.explain(e))
}

fn write_layers(img: Image, target: &mut Target) -> Result<bool> {
    // Layer 0 starts decompressing while the index is read and the room checked.
    let mut first = if img.manifest.layers.is_empty() {
        None
    } else {
        Some(img.open_layer(0)?)
    };
    // STACKBUILD_UNPLANNED: apply the layers in order even where a plan is possible, so
    // tests can check the planner against the plain extractor it must agree with.
    if img.manifest.layers.len() <= 1 || std::env::var_os("STACKBUILD_UNPLANNED").is_some() {
        // One layer: applying it in order is already one pass, and needs no index.
        // Its size is checked first when its index is cached anyway (every layer a stash
        // wrote).
        if let (Some(store), [layer]) = (img.source.cache_store(), img.manifest.layers.as_slice())
            && let Some(index) =
                crate::layer::LayerIndex::load_cached(&store.cache_dir(), &layer.digest)
        {
            let mut model = Model::new();
            model.apply_layer(0, 0, &index);
            crate::space::check_room(target.path(), model.nodes.values().map(|n| &n.entry))?;
        }
        sequential(&img, target, first)?;
        return Ok(false);
    }
    let model = img.model(0)?;
    let sources = [Source::Image(Box::new(img))];
    crate::space::check_room(target.path(), model.nodes.values().map(|n| &n.entry))?;
    if model.complex {
        if let [Source::Image(img)] = &sources {
            tracing::debug!(image = %img.name, "the plan cannot predict this image: its layers in order");
            sequential(img, target, first)?;
        }
        return Ok(false);
    }
    let [source] = &sources;
    write(
        &[source],
        &model,
        target,
        first.take().map(|f| (0, 0, f)),
        None,
    )?;
    Ok(true)
}

/// Writes `img`'s merged tree as one uncompressed tar to `out`, by way of a staging
/// directory under `scratch` (removed afterwards).
pub fn unstash_to_tar(
    img: Image,
    out: &mut dyn io::Write,
    scratch: &std::path::Path,
    opts: crate::extract::ExtractOptions,
) -> Result<UnstashOutcome> {
    let staging =
        crate::extract::Staging::new(&scratch.join(format!("unstash-tar-{}", std::process::id())))?;
    let mut target = Target::open(staging.path(), opts)?;
    let planned = write_image(img, &mut target)?;
    let stats = target.finish()?;
    let mut tar = crate::tar::Builder::new(out);
    walk(staging.path(), &WalkOptions::default(), &mut |w| {
        if w.entry.kind == Kind::File {
            let mut f = open_nofollow(&w.source)?;
            tar.put(&w.entry, Some(&mut f))?;
        } else {
            tar.put(&w.entry, None)?;
        }
        Ok(())
    })?;
    tar.finish()?
        .flush()
        .map_err(|e| Error::io("<output>", e))?;
    drop(staging);
    Ok(UnstashOutcome {
        dest: None,
        planned,
        stats,
    })
}

/// One source in a stack's report.
#[derive(Debug, Clone)]
pub struct SourceReport {
    /// How the user named it (a ref or a path).
    pub name: String,
    /// `image` or `dir`.
    pub kind: &'static str,
    /// The manifest digest of an image.
    pub digest: Option<String>,
    /// Entries of the final tree this source provided (undeclared parents not counted).
    pub entries: u64,
    /// False when the image could not be planned and was unstashed, layer after layer, into
    /// a scratch directory first.
    pub planned: bool,
}

/// One conflict in a stack's report.
#[derive(Debug, Clone)]
pub struct ConflictReport {
    /// The path, relative to the target (`/` for the root).
    pub path: String,
    /// The lower source's name.
    pub lower: String,
    /// The upper source's name.
    pub upper: String,
    /// What differs.
    pub kind: ConflictKind,
    /// What the result holds.
    pub resolution: Resolution,
}

/// Totals of a stack's report.
#[derive(Debug, Clone, Default)]
pub struct StackTotals {
    /// Sources stacked.
    pub sources: usize,
    /// Entries in the final tree.
    pub entries: u64,
    /// Conflicts of every kind.
    pub conflicts: u64,
    /// Type conflicts.
    pub type_: u64,
    /// Content conflicts.
    pub content: u64,
    /// Metadata conflicts.
    pub metadata: u64,
    /// Paths where the result differs from what a sequence of `rsync -aHAX` gives, because
    /// rsync fails there (a non-directory over a non-empty directory).
    pub rsync_fails: u64,
}

/// What a stack did.
#[derive(Debug, Clone)]
pub struct StackOutcome {
    /// The target.
    pub dest: PathBuf,
    /// Each source, lowest first.
    pub sources: Vec<SourceReport>,
    /// Every conflicting path, in the order the sources met.
    pub conflicts: Vec<ConflictReport>,
    /// Totals.
    pub totals: StackTotals,
    /// What was written and what could not be restored.
    pub stats: ExtractStats,
    /// What the stack did to the sources' package databases (mode `off` without checks).
    pub packages: crate::packages::Analysis,
}

fn show_path(p: &[u8]) -> String {
    if p.is_empty() {
        "/".into()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

/// Lays `sources` over each other, lowest first, into `dest` (absent or empty), as a
/// sequence of `rsync -aHAX SRC/ DEST/` would, with the upper source winning where rsync
/// would fail; each final inode is written once. The tree is built in a staging directory
/// beside `dest` and renamed into place when complete.
///
/// An image the model cannot plan (a layer writes through a symlink, a hardlink points at
/// nothing) is unstashed layer after layer into a scratch directory beside `dest` first,
/// and stacked from there.
///
/// With `packages` (not `--packages off`), the sources' package files are kept as the stack
/// reads their layers; the analysis is said and checked (`--strict`) once the tree is
/// complete, and with `--packages merge` the merged database files are written into it, all
/// before the staging directory is renamed into place: a refused or failed run leaves
/// nothing behind.
pub fn stack_to_dir(
    sources: &[Source],
    dest: &Path,
    opts: &ExtractOptions,
    packages: Option<&crate::packages::Checks>,
) -> Result<StackOutcome> {
    let staging = Staging::new(dest)?;
    let dest_name = dest
        .file_name()
        .map_or_else(|| "target".into(), |n| n.to_string_lossy().into_owned());
    let mut reports = Vec::with_capacity(sources.len());
    let mut models = Vec::with_capacity(sources.len());
    // What each source is written from: itself, or the scratch directory it was unstashed to.
    let mut fallbacks: Vec<Option<Source>> = Vec::with_capacity(sources.len());
    let mut scratch = Vec::new();
    let mut skipped = ExtractStats::default();
    let mut early = match sources.first() {
        Some(src) => open_early(0, src)?,
        None => None,
    };
    let mut capture = packages
        .filter(|c| c.mode != crate::packages::Mode::Off)
        .map(|_| crate::packages::Capture::default());
    for (s, src) in sources.iter().enumerate() {
        let s = s as u32;
        let mut model = src.model(s)?;
        if let Some(c) = &mut capture {
            c.add(s, src, &model);
        }
        let mut fallback = None;
        let mut report = source_report(src);
        if let Source::Image(img) = src
            && model.complex
        {
            tracing::debug!(source = %report.name, "the plan cannot predict this image: unstashing it first");
            let nominal = dest.with_file_name(format!(".{dest_name}.stackmerge-source-{s}"));
            let dir = Staging::new(&nominal)?;
            let mut t = Target::open(dir.path(), opts.clone())?;
            let first = early.take_if(|e| e.0 == s).map(|e| e.2);
            sequential(img, &mut t, first)
                .map_err(|e| Error::Other(format!("{}: {e}", report.name)))?;
            add_skipped(&mut skipped, &t.finish()?);
            let implicit = model
                .nodes
                .iter()
                .filter(|(_, n)| n.implicit)
                .map(|(p, _)| p.clone())
                .collect();
            let mut walked = Source::dir(dir.path().to_path_buf())?;
            if let Source::Dir { implicit: i, .. } = &mut walked {
                *i = implicit;
            }
            model = walked.model(s)?;
            fallback = Some(walked);
            scratch.push(dir);
            report.planned = false;
        }
        models.push(model);
        reports.push(report);
        fallbacks.push(fallback);
    }
    let plan = Plan::from_models(models);
    let used: Vec<&Source> = sources
        .iter()
        .zip(&fallbacks)
        .map(|(src, f)| f.as_ref().unwrap_or(src))
        .collect();
    let mut target = Target::open(staging.path(), opts.clone())?;
    write(&used, &plan.model, &mut target, early, capture.as_mut())?;
    let mut stats = target.finish()?;
    add_skipped(&mut stats, &skipped);
    let packages = match (packages, capture) {
        (Some(checks), Some(capture)) => {
            let analysis = checks.finish(capture)?;
            crate::packages::write_merged(staging.path(), &analysis.writes)?;
            analysis
        }
        _ => crate::packages::Analysis::off(),
    };
    let dest = staging.commit()?;
    drop(fallbacks);
    drop(scratch);
    let (conflicts, totals) = summarize(&plan, &mut reports);
    Ok(StackOutcome {
        dest,
        sources: reports,
        conflicts,
        totals,
        stats,
        packages,
    })
}

/// What [`stack_to_dir`] would do with `sources`, with nothing written: each source's
/// entries, the conflicts and the totals (`stats` empty, `packages` off: a dry run reads
/// the package databases with [`crate::packages::run_checks`]). `dest` is checked as the
/// stack checks it. An image the model cannot plan exactly (a layer writes through a
/// symlink, a hardlink points at nothing) is reported `planned: false`, its entries and
/// conflicts those of its layers as listed; the stack unstashes it first.
pub fn plan_stack(sources: &[Source], dest: &Path) -> Result<StackOutcome> {
    let dest = crate::extract::check_dest(dest)?;
    let mut reports = Vec::with_capacity(sources.len());
    let mut models = Vec::with_capacity(sources.len());
    for (s, src) in sources.iter().enumerate() {
        let model = src.model(s as u32)?;
        let mut report = source_report(src);
        report.planned = !model.complex;
        models.push(model);
        reports.push(report);
    }
    let plan = Plan::from_models(models);
    let (conflicts, totals) = summarize(&plan, &mut reports);
    Ok(StackOutcome {
        dest,
        sources: reports,
        conflicts,
        totals,
        stats: ExtractStats::default(),
        packages: crate::packages::Analysis::off(),
    })
}

/// A source as the stack reports it, its entries not yet counted.
fn source_report(src: &Source) -> SourceReport {
    let (kind, digest) = match src {
        Source::Image(img) => ("image", Some(img.digest().to_string())),
        Source::Dir { .. } => ("dir", None),
    };
    SourceReport {
        name: src.name(),
        kind,
        digest,
        entries: 0,
        planned: true,
    }
}

/// Each source's entries (into `reports`), and the plan's conflicts and totals, named.
fn summarize(plan: &Plan, reports: &mut [SourceReport]) -> (Vec<ConflictReport>, StackTotals) {
    let n = reports.len();
    for (r, count) in reports.iter_mut().zip(plan.provided(n)) {
        r.entries = count;
    }
    let mut totals = StackTotals {
        sources: n,
        entries: plan.model.nodes.values().filter(|n| !n.implicit).count() as u64,
        ..StackTotals::default()
    };
    let name = |s: u32| {
        reports
            .get(s as usize)
            .map_or_else(String::new, |r| r.name.clone())
    };
    let conflicts = plan
        .conflicts
        .iter()
        .map(|c| {
            totals.conflicts += 1;
            match c.kind {
                ConflictKind::Type => totals.type_ += 1,
                ConflictKind::Content => totals.content += 1,
                ConflictKind::Metadata => totals.metadata += 1,
            }
            if c.resolution == Resolution::UpperOverNonEmptyDir {
                totals.rsync_fails += 1;
            }
            ConflictReport {
                path: show_path(&c.path),
                lower: name(c.lower),
                upper: name(c.upper),
                kind: c.kind,
                resolution: c.resolution,
            }
        })
        .collect();
    (conflicts, totals)
}

/// Adds what a scratch unstash could not restore to the run's counts (it is said once).
fn add_skipped(to: &mut ExtractStats, from: &ExtractStats) {
    to.owner_skipped += from.owner_skipped;
    to.devices_skipped += from.devices_skipped;
    to.xattrs_skipped += from.xattrs_skipped;
    to.setid_masked += from.setid_masked;
}
