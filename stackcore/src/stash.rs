//! Stashing a root tree: the whole tree the first time, only the difference after that.
//!
//! The difference is computed against the image as it stands (its overlay model, from the
//! cached layer indexes), never by unpacking it. "Changed" is rsync's quick check (type,
//! mode, owner, size, mtime in ns, xattrs, link target, device numbers), or the content
//! digest with `checksum`. A hardlink group is written whole whenever any of its members
//! changed, joined or left, so links never point at stale data. Deleted paths get explicit
//! `.wh.NAME` whiteouts (only the topmost deleted path of a subtree); a type change needs
//! none, since the new entry replaces what was there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::entry::{Entry, Kind, parent};
use crate::image::{BlobSource, Image};
use crate::layer::compress::Compression;
use crate::layer::model::{Model, Node};
use crate::layer::write::LayerWriter;
use crate::legacy::WholeSecondLayers;
use crate::oci::Store;
use crate::oci::types::{
    Descriptor, History, ImageConfig, Manifest, RootFs, RunConfig, host_arch, media,
};
use crate::tree::{Opener, WalkOptions, Walked, walk};
use crate::{Error, Result};

/// The label naming the maintainer (the description's `<author>`), as the original plugin sets it.
pub const LABEL_MAINTAINER: &str = "io.osinside.kiwi.maintainer";
/// The label naming what made the image.
pub const LABEL_META: &str = "io.osinside.kiwi.meta";
/// The history comment of every stash layer.
pub const HISTORY_COMMENT: &str = "KIWI Root Tree Stash";
/// What made the image (history `created_by`, label `io.osinside.kiwi.meta`).
pub const PREPARER: &str = concat!(
    "stackbuild ",
    env!("CARGO_PKG_VERSION"),
    " (kiwi-ng system stash compatible)"
);

pub use crate::imageref::{MAX_NAME, valid_name, valid_tag};

pub mod import;
pub mod listing;
pub mod notes;
pub mod target;

/// What to stash.
#[derive(Debug, Clone)]
pub struct StashOptions {
    /// The root tree.
    pub root: PathBuf,
    /// Stash name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// The description's author (the maintainer label).
    pub author: Option<String>,
    /// Layer compression.
    pub compression: Compression,
    /// Compression threads (0 = all cores).
    pub threads: usize,
    /// Compare contents instead of size and mtime.
    pub checksum: bool,
    /// The image's creation time, seconds since the epoch.
    pub created: i64,
}

/// What a stash did.
#[derive(Debug, Clone)]
pub struct StashOutcome {
    /// `oci:STORE:NAME:TAG`.
    pub reference: String,
    /// The store.
    pub store: PathBuf,
    /// Stash name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// The manifest digest the tag points at.
    pub manifest: Digest,
    /// The new layer, if one was added.
    pub layer: Option<LayerOutcome>,
    /// Layers added (0 or 1).
    pub layers_added: u32,
    /// Layers in the image.
    pub layers: usize,
    /// Entries in the tree.
    pub entries: u64,
    /// Entries new since the previous stash (all of them the first time).
    pub added: u64,
    /// Entries changed.
    pub changed: u64,
    /// Paths deleted (whiteouts written).
    pub deleted: u64,
    /// File bytes written into the layer.
    pub bytes: u64,
    /// Sockets left out.
    pub sockets_skipped: u64,
    /// Mount points kept as empty directories.
    pub mount_points: u64,
    /// Directories left out whole: the store, when it is inside the root.
    pub left_out: Vec<PathBuf>,
}

/// The layer a stash added.
#[derive(Debug, Clone)]
pub struct LayerOutcome {
    /// Blob digest.
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// Uncompressed digest.
    pub diff_id: Digest,
    /// Uncompressed size.
    pub tar_size: u64,
}

/// Stashes `opts.root` into `store` as `NAME:TAG`.
pub fn stash(store: &Store, opts: &StashOptions) -> Result<StashOutcome> {
    let full = format!("{}:{}", opts.name, opts.tag);
    // Held from reading the previous image to moving the tag: a second stash of this name
    // computes its diff against our result.
    let _name_lock = store.lock(&format!("stash-{}", opts.name))?;
    let previous = match store.resolve(&full)? {
        Some(desc) => Some(Image::from_descriptor(
            BlobSource::Layout(store.clone()),
            desc,
            full.clone(),
        )?),
        None => None,
    };
    let mut walk_opts = WalkOptions::stash();
    // The store inside the root (`--root /` with the default store, say) is left out: a
    // stash holding its own store would grow with every stash. Its lock is held, so it is
    // there for the whole walk.
    let st = rustix::fs::stat(store.root()).map_err(|e| Error::io(store.root(), e.into()))?;
    walk_opts.leave_out.push((st.st_dev, st.st_ino));
    let mut walked: Vec<Walked> = Vec::new();
    // The previous image's model (read from the cached layer indexes) and the walk of the
    // tree need nothing from each other: on a re-stash with no change they are most of the
    // time, so they run side by side.
    let (model, stats) = std::thread::scope(|s| {
        let model = s.spawn(|| match &previous {
            Some(img) => img.model(0),
            None => Ok(Model::default()),
        });
        let stats = walk(&opts.root, &walk_opts, &mut |w| {
            // In a layer, `.wh.NAME` means "delete NAME": a file so named cannot be stored
            // as itself, and every reader would take it for a whiteout. Refuse before
            // writing.
            if w.entry.name().starts_with(crate::tar::WHITEOUT_PREFIX) {
                return Err(Error::Other(format!(
                    "{}: names starting with .wh. cannot be stashed: in an OCI layer they mean \"delete\"",
                    w.source.display()
                )));
            }
            walked.push(w);
            Ok(())
        });
        let model = model.join().expect("the model thread does not panic");
        Ok::<_, Error>((model?, stats?))
    })?;

    // Layers the original plugin wrote (imported by `stash --import-legacy`) hold mtimes
    // rounded to the second: that rounding is no change.
    let rounded = previous
        .as_ref()
        .map(|p| WholeSecondLayers::of(&p.manifest))
        .unwrap_or_default();
    // From here on files are opened relative to their directories' descriptors, each
    // directory and file checked to be the one the walk saw.
    let mut opener = Opener::new(&opts.root, &walked)?;
    let decision = decide(
        &walked,
        &model,
        &walk_opts,
        opts.checksum,
        &rounded,
        &mut opener,
    )?;
    let mut outcome = StashOutcome {
        reference: String::new(),
        store: store.root().to_path_buf(),
        name: opts.name.clone(),
        tag: opts.tag.clone(),
        manifest: Digest::of(b""),
        layer: None,
        layers_added: 0,
        layers: previous.as_ref().map_or(0, |p| p.manifest.layers.len()),
        entries: walked.len() as u64,
        added: decision.added,
        changed: decision.changed,
        deleted: decision.whiteouts.len() as u64,
        bytes: 0,
        sockets_skipped: stats.sockets,
        mount_points: stats.mount_points,
        left_out: stats
            .left_out
            .iter()
            .map(|p| opts.root.join(std::ffi::OsStr::from_bytes(p)))
            .collect(),
    };
    outcome.reference = format!("oci:{}:{full}", store.root().display());

    if let Some(prev) = &previous
        && decision.emit.is_empty()
        && decision.whiteouts.is_empty()
    {
        tracing::debug!("no change since {full}: no layer");
        outcome.manifest = prev.digest().clone();
        return Ok(outcome);
    }

    // Refuse what no reader would take back before writing anything.
    for e in decision.emit.values() {
        crate::tar::check_limits(e, &opts.root)?;
    }
    let total: u64 = decision
        .emit
        .values()
        .filter(|e| e.kind == Kind::File)
        .map(|e| e.size)
        .sum();
    tracing::debug!(
        entries = decision.emit.len(),
        whiteouts = decision.whiteouts.len(),
        bytes = total,
        "writing the layer"
    );
    let task = crate::progress::task(format!("stashing {}", opts.root.display()), Some(total));
    let mut layer = LayerWriter::new(store, opts.compression, opts.threads)?;
    for (i, w) in walked.iter().enumerate() {
        let Some(entry) = decision.emit.get(&i) else {
            continue;
        };
        task.advance(
            if entry.kind == Kind::File {
                entry.size
            } else {
                0
            },
            1,
        );
        if entry.kind == Kind::File {
            let mut f = opener.open(w)?;
            layer.put(entry, Some(&mut f))?;
        } else {
            layer.put(entry, None)?;
        }
    }
    for p in &decision.whiteouts {
        layer.whiteout(p)?;
    }
    outcome.bytes = layer.bytes();
    let written = layer.finish(store)?;
    drop(task);
    crate::failpoint::hit("stash-after-layer");

    let created = crate::timefmt::rfc3339(opts.created);
    let author = opts.author.clone().unwrap_or_default();
    let history = History {
        created: Some(created.clone()),
        created_by: Some(PREPARER.to_owned()),
        author: Some(author.clone()),
        comment: Some(HISTORY_COMMENT.to_owned()),
        ..History::default()
    };
    let (mut config, mut layers) = match &previous {
        Some(p) => (p.config.clone(), p.manifest.layers.clone()),
        None => (
            ImageConfig {
                created: None,
                author: None,
                architecture: host_arch().to_owned(),
                os: "linux".to_owned(),
                config: None,
                rootfs: RootFs {
                    kind: "layers".to_owned(),
                    diff_ids: Vec::new(),
                },
                history: Vec::new(),
                extra: BTreeMap::new(),
            },
            Vec::new(),
        ),
    };
    config.created = Some(created);
    config.author = Some(author.clone());
    let run = config.config.get_or_insert_with(RunConfig::default);
    run.entrypoint = Some(vec!["/bin/sh".to_owned()]);
    let labels = run.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(LABEL_MAINTAINER.to_owned(), author);
    labels.insert(LABEL_META.to_owned(), PREPARER.to_owned());
    config.rootfs.diff_ids.push(written.diff_id.clone());
    config.history.push(history);
    layers.push(written.descriptor.clone());

    let config_bytes = serde_json::to_vec(&config).expect("config serialises");
    let config_digest = store.write_blob(&config_bytes)?;
    crate::failpoint::hit("stash-after-config");
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::MANIFEST.to_owned()),
        config: Descriptor::new(media::CONFIG, config_digest, config_bytes.len() as u64),
        layers,
        annotations: BTreeMap::new(),
        extra: BTreeMap::new(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
    let manifest_digest = store.write_blob(&manifest_bytes)?;
    crate::failpoint::hit("stash-before-index");
    store.set_ref(
        &full,
        &Descriptor::new(
            media::MANIFEST,
            manifest_digest.clone(),
            manifest_bytes.len() as u64,
        ),
    )?;

    outcome.manifest = manifest_digest;
    outcome.layers = manifest.layers.len();
    outcome.layers_added = 1;
    outcome.layer = Some(LayerOutcome {
        digest: written.descriptor.digest.clone(),
        size: written.descriptor.size,
        media_type: written.descriptor.media_type.clone(),
        diff_id: written.diff_id,
        tar_size: written.tar_size,
    });
    Ok(outcome)
}

struct Decision {
    /// Walk index → the entry to write (hardlink groups rewritten with their first name as
    /// the data carrier).
    emit: BTreeMap<usize, Entry>,
    whiteouts: Vec<Vec<u8>>,
    added: u64,
    changed: u64,
}

/// Decides what the new layer holds.
fn decide(
    walked: &[Walked],
    model: &Model,
    walk_opts: &WalkOptions,
    checksum: bool,
    rounded: &WholeSecondLayers,
    opener: &mut Opener<'_>,
) -> Result<Decision> {
    let mut d = Decision {
        emit: BTreeMap::new(),
        whiteouts: Vec::new(),
        added: 0,
        changed: 0,
    };
    let by_path: HashMap<&[u8], usize> = walked
        .iter()
        .enumerate()
        .map(|(i, w)| (w.entry.path.as_slice(), i))
        .collect();

    // Hardlink groups of the new tree, by inode, in walk order.
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, w) in walked.iter().enumerate() {
        if matches!(w.entry.kind, Kind::File | Kind::Hardlink) && w.nlink > 1 {
            groups.entry(w.inode).or_default().push(i);
        }
    }
    let model_groups = model.link_groups();

    let mut decided_groups: HashSet<(u64, u64)> = HashSet::new();
    for (i, w) in walked.iter().enumerate() {
        let e = &w.entry;
        let old = model.nodes.get(&e.path);
        match e.kind {
            Kind::File | Kind::Hardlink => {
                let members: Vec<usize> = groups.get(&w.inode).cloned().unwrap_or_else(|| vec![i]);
                if !decided_groups.insert(w.inode) && members.len() > 1 {
                    continue;
                }
                let leader = &walked[members[0]];
                let unchanged = group_unchanged(
                    leader,
                    &members,
                    walked,
                    model,
                    &model_groups,
                    &by_path,
                    rounded,
                    checksum.then_some(&mut *opener),
                )?;
                if unchanged {
                    continue;
                }
                for (k, &m) in members.iter().enumerate() {
                    let mut entry = walked[m].entry.clone();
                    if k == 0 {
                        entry.kind = Kind::File;
                        entry.link.clear();
                        entry.size = leader.entry.size;
                    } else {
                        entry.kind = Kind::Hardlink;
                        entry.link.clone_from(&leader.entry.path);
                        entry.size = 0;
                    }
                    count(&mut d, model.nodes.contains_key(&entry.path));
                    d.emit.insert(m, entry);
                }
            }
            _ => {
                let same = old.is_some_and(|n| n.entry.kind == e.kind && meta_equal(n, e, rounded));
                if !same {
                    count(&mut d, old.is_some());
                    d.emit.insert(i, e.clone());
                }
            }
        }
    }

    // Deleted paths: in the image, not in the tree, below a directory that stays one.
    for p in model.nodes.keys() {
        if p.is_empty() || by_path.contains_key(p.as_slice()) {
            continue;
        }
        let pp = parent(p);
        if walk_opts.skip_contents.iter().any(|s| s == pp) {
            continue; // dev/, proc/, sys/ contents are never stashed, so never deleted
        }
        let parent_stays_dir = by_path
            .get(pp)
            .is_some_and(|&i| walked[i].entry.kind == Kind::Dir)
            && model
                .nodes
                .get(pp)
                .is_some_and(|n| n.entry.kind == Kind::Dir);
        if parent_stays_dir {
            d.whiteouts.push(p.clone());
        }
    }

    // Every directory above what the layer holds, with its current metadata, as buildah and
    // docker write their layers: containers/storage and containerd apply a layer into an
    // empty directory and make a parent the layer lacks 0755 root:root with the current
    // time, which overlayfs then shows in place of the real one (a 0700 /root readable by
    // all). Not counted as changed; unchanged trees still get no layer.
    let mut parents: Vec<usize> = Vec::new();
    let mut climbed: HashSet<&[u8]> = HashSet::new();
    let emitted = d.emit.values().map(|e| e.path.as_slice());
    for path in emitted.chain(d.whiteouts.iter().map(Vec::as_slice)) {
        let mut p = path;
        while !p.is_empty() {
            p = parent(p);
            if !climbed.insert(p) {
                break; // its ancestors are in already
            }
            match by_path.get(p) {
                Some(&i) if walked[i].entry.kind == Kind::Dir => parents.push(i),
                _ => {}
            }
        }
    }
    for i in parents {
        d.emit.entry(i).or_insert_with(|| walked[i].entry.clone());
    }
    Ok(d)
}

fn count(d: &mut Decision, existed: bool) {
    if existed {
        d.changed += 1;
    } else {
        d.added += 1;
    }
}

/// Metadata equality for the quick check; a model node of a hardlink compares as a file, and
/// an mtime the original plugin rounded to the second (see [`WholeSecondLayers`]) as the
/// exact one it stands for.
fn meta_equal(old: &Node, new: &Entry, rounded: &WholeSecondLayers) -> bool {
    let mut a = old.entry.clone();
    let mut b = new.clone();
    if rounded.same_mtime(old, new.mtime) {
        b.mtime = a.mtime;
    }
    for x in [&mut a, &mut b] {
        if x.kind == Kind::Hardlink {
            x.kind = Kind::File;
            x.link.clear();
        }
    }
    a.same_metadata(&b)
}

#[allow(clippy::too_many_arguments)] // the walk, the model and how to compare them
fn group_unchanged(
    leader: &Walked,
    members: &[usize],
    walked: &[Walked],
    model: &Model,
    model_groups: &HashMap<u64, Vec<Vec<u8>>>,
    by_path: &HashMap<&[u8], usize>,
    rounded: &WholeSecondLayers,
    checksum: Option<&mut Opener<'_>>,
) -> Result<bool> {
    let Some(old) = model.nodes.get(&leader.entry.path) else {
        return Ok(false);
    };
    if !matches!(old.entry.kind, Kind::File | Kind::Hardlink) {
        return Ok(false);
    }
    let mut new_leader = leader.entry.clone();
    new_leader.kind = Kind::File;
    new_leader.link.clear();
    if !meta_equal(old, &new_leader, rounded) {
        return Ok(false);
    }
    // The old group, limited to names still in the tree, must be exactly the new group.
    let old_members: HashSet<&[u8]> = match model_groups.get(&old.inode) {
        Some(g) => g
            .iter()
            .map(Vec::as_slice)
            .filter(|p| by_path.contains_key(p))
            .collect(),
        None => std::iter::once(leader.entry.path.as_slice()).collect(),
    };
    let new_members: HashSet<&[u8]> = members
        .iter()
        .map(|&m| walked[m].entry.path.as_slice())
        .collect();
    if old_members != new_members {
        return Ok(false);
    }
    if let Some(opener) = checksum {
        let Some(want) = &old.digest else {
            return Ok(false);
        };
        let mut f = opener.open(leader)?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(&leader.source, e))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        if Digest::from_hash(hash.finalize().into()) != *want {
            return Ok(false);
        }
    }
    Ok(true)
}
