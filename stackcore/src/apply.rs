//! Writing images and directories into a target: one image (`unstash`) or a stack of
//! sources (`stackmerge`).
//!
//! With a plan (the overlay [`Model`] computed from layer indexes), each winning entry is
//! written once: entries a later layer replaces or deletes are skipped, layers with nothing
//! left to give are not even read, and directories are made at the end with their final
//! metadata. Where the model cannot predict the result (see [`Model::complex`]), or for an
//! image of one layer, the layers are applied in order instead, whiteouts and all.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::entry::{Entry, Kind, parent};
use crate::extract::Target;
use crate::image::Image;
use crate::layer::index::{Change, classify};
use crate::layer::model::{Conflict, Model};
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
    },
}

impl Source {
    /// Walks a directory source.
    pub fn dir(path: PathBuf) -> Result<Source> {
        let mut entries = Vec::new();
        walk(&path, &WalkOptions::default(), &mut |w| {
            entries.push((w.entry, w.source));
            Ok(())
        })?;
        Ok(Source::Dir { path, entries })
    }

    /// How to name it in messages and reports.
    pub fn name(&self) -> String {
        match self {
            Source::Image(i) => i.name.clone(),
            Source::Dir { path, .. } => path.display().to_string(),
        }
    }

    fn model(&self, s: u32) -> Result<Model> {
        match self {
            Source::Image(img) => img.model(s),
            Source::Dir { entries, .. } => {
                let mut m = Model::new();
                for (i, (e, _)) in entries.iter().enumerate() {
                    m.put(e.clone(), None, (s, 0, i as u32));
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
        let mut model: Option<Model> = None;
        let mut conflicts = Vec::new();
        for (s, src) in sources.iter().enumerate() {
            let m = src.model(s as u32)?;
            match &mut model {
                None => model = Some(m),
                Some(lower) => conflicts.extend(lower.overlay(m, |n| n.origin.0, s as u32)),
            }
        }
        let Some(model) = model else {
            return Err(Error::Usage("nothing to stack: no sources".into()));
        };
        Ok(Plan { model, conflicts })
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

/// Writes `sources` into `target` as `plan` says. Returns whether the plan was followed
/// (`false`: the layers were applied in order because the plan could not predict them).
pub fn write(sources: &[Source], plan: &mut Plan, target: &mut Target) -> Result<bool> {
    let transient = plan.model.transient();
    if plan.model.complex {
        if let [Source::Image(img)] = sources {
            sequential(img, target)?;
            return Ok(false);
        }
        return Err(Error::Other(
            "a source writes through a symlink or links across replaced paths; stackmerge cannot \
             plan that: unstash that image first and stack the directory"
                .into(),
        ));
    }
    let wanted = plan.model.wanted();
    let layers: HashSet<(u32, u32)> = wanted.iter().map(|o| (o.0, o.1)).collect();
    for (s, src) in sources.iter().enumerate() {
        let s = s as u32;
        match src {
            Source::Image(img) => {
                for l in 0..img.manifest.layers.len() as u32 {
                    if !layers.contains(&(s, l)) {
                        continue; // everything this layer holds is replaced or deleted above
                    }
                    let mut stream = img.open_layer(l as usize)?;
                    let digest = stream.digest.clone();
                    let mut i = 0u32;
                    while let Some(h) = stream
                        .tar
                        .next_header()
                        .map_err(|e| crate::layer::read::layer_error(&digest, &e))?
                    {
                        let change = classify(h.entry)
                            .map_err(|e| crate::layer::read::layer_error(&digest, &e))?;
                        if let Change::Put(e, _) = change
                            && e.kind != Kind::Dir
                            && wanted.contains(&(s, l, i))
                        {
                            target.put(&e, &mut stream.tar.data())?;
                        }
                        i += 1;
                    }
                    stream.finish()?;
                }
            }
            Source::Dir { entries, .. } => {
                for (i, (e, path)) in entries.iter().enumerate() {
                    if e.kind == Kind::Dir || !wanted.contains(&(s, 0, i as u32)) {
                        continue;
                    }
                    if e.kind == Kind::File {
                        let mut f = File::options()
                            .read(true)
                            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                            .open(path)
                            .map_err(|err| Error::io(path, err))?;
                        target.put(e, &mut f)?;
                    } else {
                        target.put(e, &mut io::empty())?;
                    }
                }
            }
        }
    }
    for (_, path) in &transient {
        if !plan.model.nodes.contains_key(path) {
            target.remove(path)?;
        }
    }
    for node in plan.model.nodes.values() {
        if node.entry.kind == Kind::Dir {
            target.ensure_dir(&node.entry, node.implicit)?;
        }
    }
    Ok(true)
}

/// Applies an image's layers in order, as a plain extractor would: whiteouts hide what the
/// layers below put there, never what this layer put.
pub fn sequential(img: &Image, target: &mut Target) -> Result<()> {
    for l in 0..img.manifest.layers.len() {
        let mut stream = img.open_layer(l)?;
        let digest = stream.digest.clone();
        let err = |e: io::Error| crate::layer::read::layer_error(&digest, &e);
        let mut current: HashSet<Vec<u8>> = HashSet::new();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        while let Some(h) = stream.tar.next_header().map_err(err)? {
            let change = classify(h.entry).map_err(err)?;
            let key = match &change {
                Change::Put(e, _) => e.path.clone(),
                Change::Whiteout(p) => [b"\0wh/".as_slice(), p].concat(),
                Change::Opaque(p) => [b"\0opq/".as_slice(), p].concat(),
            };
            if !seen.insert(key) {
                return Err(err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "duplicate path in one layer: {}",
                        String::from_utf8_lossy(crate::layer::index::change_path(&change))
                    ),
                )));
            }
            match change {
                Change::Opaque(dir) => target.prune(&dir, &current)?,
                Change::Whiteout(p) => {
                    if current.contains(&p) {
                        continue; // this layer's own entry: a whiteout only hides lower layers
                    }
                    if current.iter().any(|c| crate::entry::is_below(c, &p)) {
                        target.prune(&p, &current)?;
                    } else {
                        target.remove(&p)?;
                    }
                }
                Change::Put(e, _) => {
                    target.put(&e, &mut stream.tar.data())?;
                    let mut p = e.path.clone();
                    loop {
                        let fresh = current.insert(p.clone());
                        if p.is_empty() || !fresh {
                            break;
                        }
                        p = parent(&p).to_vec();
                    }
                }
            }
        }
        stream.finish()?;
    }
    Ok(())
}

/// What an unstash did.
#[derive(Debug, Clone, serde::Serialize)]
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
    if img.manifest.layers.len() <= 1 {
        // One layer: applying it in order is already one pass, and needs no index; its
        // size is checked first when the index is cached anyway (every layer a stash wrote).
        if let (Some(store), Some(layer)) = (img.source.cache_store(), img.manifest.layers.first())
            && let Some(index) =
                crate::layer::LayerIndex::load_cached(&store.cache_dir(), &layer.digest)
        {
            let mut model = Model::new();
            model.apply_layer(0, 0, &index);
            crate::space::check_room(target.path(), model.nodes.values().map(|n| &n.entry))?;
        }
        sequential(&img, target)?;
        return Ok(false);
    }
    let sources = [Source::Image(Box::new(img))];
    let mut plan = Plan::new(&sources)?;
    crate::space::check_room(target.path(), plan.model.nodes.values().map(|n| &n.entry))?;
    write(&sources, &mut plan, target)
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
            let mut f = File::options()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&w.source)
                .map_err(|err| Error::io(&w.source, err))?;
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
