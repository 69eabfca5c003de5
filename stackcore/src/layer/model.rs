//! The overlay model: the tree an image (or a stack of sources) ends up as, computed from
//! layer indexes alone, without writing a file.
//!
//! Each node remembers which change produced it (its [`Origin`]), so a writer can write
//! each winning entry once and skip every entry a later layer replaces or deletes. Hardlinks
//! share an inode number; the entry a hardlink was linked to is "needed" even when a later
//! layer replaces its path, because the link was made to that name at that moment.
//!
//! Where lexical paths stop describing what an extractor would do (an entry below a
//! symlink, a hardlink or whiteout reached through one), the model sets `complex`, and
//! writers fall back to applying every change in order.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::index::{Change, LayerIndex};
use crate::digest::Digest;
use crate::entry::{Entry, Kind, is_below, parent};

/// Which change produced a node: `(source, layer, change)` numbers.
pub type Origin = (u32, u32, u32);

/// One entry of the modelled tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// The entry (a `Hardlink` entry keeps its kind and target).
    pub entry: Entry,
    /// Content digest of a file, when known.
    pub digest: Option<Digest>,
    /// Inode number within the model: names of one hardlink group share it.
    pub inode: u64,
    /// The change that produced this name.
    pub origin: Origin,
    /// The change that carried this inode's data (differs from `origin` for hardlinks).
    pub data_origin: Origin,
    /// A directory nobody declared: created as a parent.
    pub implicit: bool,
}

/// The modelled tree.
#[derive(Debug, Default, Clone)]
pub struct Model {
    /// Nodes by path; the root is `""`.
    pub nodes: BTreeMap<Vec<u8>, Node>,
    /// Data origins that surviving hardlinks need, even if their own path was replaced,
    /// with the path each was written at.
    pub needed: HashMap<Origin, Vec<u8>>,
    /// True when lexical paths no longer predict the extracted tree (see the module docs).
    pub complex: bool,
    next_inode: u64,
}

/// A type, content or metadata conflict between two sources of a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The path.
    pub path: Vec<u8>,
    /// The lower source's number.
    pub lower: u32,
    /// The upper (winning) source's number.
    pub upper: u32,
    /// `type`, `content` or `metadata`.
    pub kind: &'static str,
}

impl Model {
    /// An empty tree with only a root directory.
    pub fn new() -> Self {
        let mut m = Model::default();
        let mut root = Entry::new(Vec::new(), Kind::Dir);
        root.mode = 0o755;
        m.insert_node(root, None, (0, 0, 0), true);
        m
    }

    fn insert_node(
        &mut self,
        entry: Entry,
        digest: Option<Digest>,
        origin: Origin,
        implicit: bool,
    ) {
        self.next_inode += 1;
        let inode = self.next_inode;
        let path = entry.path.clone();
        self.nodes.insert(
            path,
            Node {
                entry,
                digest,
                inode,
                origin,
                data_origin: origin,
                implicit,
            },
        );
    }

    /// Removes `path` and everything below it.
    pub fn remove_tree(&mut self, path: &[u8]) {
        self.nodes.remove(path);
        self.remove_below(path);
    }

    /// Removes everything strictly below `dir`.
    pub fn remove_below(&mut self, dir: &[u8]) {
        let below: Vec<Vec<u8>> = self.below(dir).map(|(p, _)| p.clone()).collect();
        for p in below {
            self.nodes.remove(&p);
        }
    }

    /// The nodes strictly below `dir`, in path order.
    pub fn below<'a>(
        &'a self,
        dir: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Node)> + 'a {
        let mut start = dir.to_vec();
        if !dir.is_empty() {
            start.push(b'/');
        }
        self.nodes
            .range(start..)
            .take_while(move |(p, _)| is_below(p, dir))
    }

    /// True if some proper ancestor of `path` is a non-directory in the model.
    fn ancestor_not_dir(&self, path: &[u8]) -> Option<Vec<u8>> {
        let mut p = parent(path);
        loop {
            if let Some(n) = self.nodes.get(p)
                && n.entry.kind != Kind::Dir
            {
                return Some(p.to_vec());
            }
            if p.is_empty() {
                return None;
            }
            p = parent(p);
        }
    }

    /// Creates missing parents of `path` as implicit directories; a non-directory parent
    /// is replaced by a directory, except a symlink, which an extractor would follow.
    fn ensure_parents(&mut self, path: &[u8], origin: Origin) {
        if path.is_empty() {
            return;
        }
        if let Some(blocker) = self.ancestor_not_dir(path) {
            // A hardlink may name a symlink (its node keeps only the kind `Hardlink`):
            // an extractor follows it as well.
            if self
                .nodes
                .get(&blocker)
                .is_some_and(|n| matches!(n.entry.kind, Kind::Symlink | Kind::Hardlink))
            {
                self.complex = true;
            }
            self.nodes.remove(&blocker);
        }
        let mut missing = Vec::new();
        let mut p = parent(path);
        while !self.nodes.contains_key(p) {
            missing.push(p.to_vec());
            if p.is_empty() {
                break;
            }
            p = parent(p);
        }
        for m in missing.into_iter().rev() {
            let mut d = Entry::new(m, Kind::Dir);
            d.mode = 0o755;
            self.insert_node(d, None, origin, true);
        }
    }

    /// Applies one layer of one image, with overlay semantics: whiteouts and opaque markers
    /// first (they only hide what lies below this layer), then the entries in order.
    pub fn apply_layer(&mut self, source: u32, layer: u32, index: &LayerIndex) {
        for c in &index.changes {
            match c {
                Change::Opaque(dir) => {
                    if self.ancestor_not_dir(dir).is_some() {
                        self.complex = true;
                    }
                    self.remove_below(dir);
                }
                Change::Whiteout(p) => {
                    if self.ancestor_not_dir(p).is_some() {
                        self.complex = true;
                    }
                    self.remove_tree(p);
                }
                Change::Put(..) => {}
            }
        }
        for (i, c) in index.changes.iter().enumerate() {
            if let Change::Put(e, digest) = c {
                self.put(e.clone(), digest.clone(), (source, layer, i as u32));
            }
        }
    }

    /// Puts one entry: replaces what is at its path (a directory over a directory keeps the
    /// children), links hardlinks to their target's inode.
    pub fn put(&mut self, entry: Entry, digest: Option<Digest>, origin: Origin) {
        self.ensure_parents(&entry.path, origin);
        let path = entry.path.clone();
        if let Some(old) = self.nodes.get(&path)
            && old.entry.kind == Kind::Dir
            && entry.kind != Kind::Dir
        {
            self.remove_below(&path);
        }
        if entry.kind == Kind::Hardlink {
            if self.ancestor_not_dir(&entry.link).is_some() {
                self.complex = true;
            }
            match self.nodes.get(&entry.link) {
                Some(target) if target.entry.kind != Kind::Dir => {
                    // A second name of the target's inode: it has the inode's metadata.
                    let t = target.entry.clone();
                    let (inode, data_origin, digest) =
                        (target.inode, target.data_origin, target.digest.clone());
                    // The writer links by name, so the entry that put the target's name
                    // there must be written, even if a later layer replaces it.
                    let (name_origin, name_path) = (target.origin, target.entry.path.clone());
                    let entry = Entry {
                        path: entry.path,
                        link: entry.link,
                        kind: Kind::Hardlink,
                        ..t
                    };
                    self.needed.insert(name_origin, name_path);
                    self.nodes.insert(
                        path,
                        Node {
                            entry,
                            digest,
                            inode,
                            origin,
                            data_origin,
                            implicit: false,
                        },
                    );
                }
                // A link to nothing (or to a directory): the extractor refuses it; the
                // sequential path reports the error.
                _ => self.complex = true,
            }
            return;
        }
        self.insert_node(entry, digest, origin, false);
    }

    /// Every origin a writer must write: the final nodes' origins and the needed data.
    pub fn wanted(&self) -> HashSet<Origin> {
        let mut w: HashSet<Origin> = self
            .nodes
            .values()
            .filter(|n| !n.implicit)
            .map(|n| n.origin)
            .collect();
        w.extend(self.needed.keys().copied());
        w
    }

    /// The needed data origins that no final node has, with their paths: a writer writes
    /// them for the links that need them and removes them afterwards. Sets `complex` when
    /// such a path now lies below a non-directory, where removing it could hit another file.
    pub fn transient(&mut self) -> Vec<(Origin, Vec<u8>)> {
        // Implicit directories (the root among them) carry the origin of the entry that
        // made them, not one of their own: they must not make that entry look final.
        let finals: HashSet<Origin> = self
            .nodes
            .values()
            .filter(|n| !n.implicit)
            .map(|n| n.origin)
            .collect();
        let mut t: Vec<(Origin, Vec<u8>)> = self
            .needed
            .iter()
            .filter(|(o, _)| !finals.contains(o))
            .map(|(o, p)| (*o, p.clone()))
            .collect();
        t.sort();
        if t.iter()
            .any(|(_, p)| p.is_empty() || self.ancestor_not_dir(p).is_some())
        {
            self.complex = true;
        }
        t
    }

    /// Groups of names that share an inode (only groups of two or more).
    pub fn link_groups(&self) -> HashMap<u64, Vec<Vec<u8>>> {
        let mut g: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
        for (p, n) in &self.nodes {
            if n.entry.kind != Kind::Dir {
                g.entry(n.inode).or_default().push(p.clone());
            }
        }
        g.retain(|_, v| v.len() > 1);
        g
    }

    /// Lays `upper` (another source's complete tree) over this one the way
    /// `rsync -aHAX upper/ this/` would (no `--delete`, no `--inplace`): directories merge
    /// and take the upper metadata; anything else replaces what was there. Where rsync would
    /// fail (a non-directory over a directory) the upper source wins as an overlay would.
    /// Returns the conflicts.
    pub fn overlay(
        &mut self,
        upper: Model,
        lower_of: impl Fn(&Node) -> u32,
        upper_no: u32,
    ) -> Vec<Conflict> {
        let mut conflicts = Vec::new();
        let inode_base = self.next_inode;
        self.complex |= upper.complex;
        self.needed.extend(upper.needed);
        for (path, mut node) in upper.nodes {
            node.inode += inode_base;
            self.next_inode = self.next_inode.max(node.inode);
            if let Some(old) = self.nodes.get(&path) {
                let kind = if old.entry.kind != node.entry.kind
                    && !(is_file_like(old.entry.kind) && is_file_like(node.entry.kind))
                {
                    Some("type")
                } else if node.entry.kind != Kind::Dir
                    && old.digest.is_some()
                    && old.digest != node.digest
                    || old.entry.size != node.entry.size
                    || old.entry.link != node.entry.link && old.entry.kind == Kind::Symlink
                {
                    Some("content")
                } else if !old.entry.same_metadata(&node.entry) && !old.implicit && !node.implicit {
                    Some("metadata")
                } else {
                    None
                };
                if let Some(kind) = kind
                    && !(old.entry.kind == Kind::Dir
                        && node.entry.kind == Kind::Dir
                        && kind != "metadata")
                {
                    conflicts.push(Conflict {
                        path: path.clone(),
                        lower: lower_of(old),
                        upper: upper_no,
                        kind,
                    });
                }
                let old_dir = old.entry.kind == Kind::Dir;
                if old_dir && node.entry.kind != Kind::Dir {
                    self.remove_below(&path);
                }
                if node.implicit && old_dir {
                    continue; // an undeclared upper directory does not change the lower one
                }
            }
            self.nodes.insert(path, node);
        }
        conflicts
    }
}

fn is_file_like(k: Kind) -> bool {
    matches!(k, Kind::File | Kind::Hardlink)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str) -> Change {
        Change::Put(
            Entry {
                mode: 0o644,
                ..Entry::new(p.as_bytes().to_vec(), Kind::File)
            },
            None,
        )
    }
    fn dir(p: &str) -> Change {
        Change::Put(
            Entry {
                mode: 0o755,
                ..Entry::new(p.as_bytes().to_vec(), Kind::Dir)
            },
            None,
        )
    }
    fn link(p: &str, t: &str) -> Change {
        Change::Put(
            Entry {
                link: t.as_bytes().to_vec(),
                ..Entry::new(p.as_bytes().to_vec(), Kind::Hardlink)
            },
            None,
        )
    }
    fn paths(m: &Model) -> Vec<String> {
        m.nodes
            .keys()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    #[test]
    fn whiteouts_and_opaque_hide_only_lower_layers() {
        let mut m = Model::new();
        m.apply_layer(
            0,
            0,
            &LayerIndex {
                changes: vec![dir("d"), file("d/a"), file("d/b"), file("x")],
            },
        );
        m.apply_layer(
            0,
            1,
            &LayerIndex {
                changes: vec![
                    file("d/c"),
                    Change::Opaque(b"d".to_vec()),
                    Change::Whiteout(b"x".to_vec()),
                ],
            },
        );
        assert_eq!(paths(&m), ["", "d", "d/c"]);
        assert!(!m.complex);
    }

    #[test]
    fn replaced_link_source_is_still_needed() {
        let mut m = Model::new();
        m.apply_layer(
            0,
            0,
            &LayerIndex {
                changes: vec![file("a")],
            },
        );
        m.apply_layer(
            0,
            1,
            &LayerIndex {
                changes: vec![link("b", "a")],
            },
        );
        m.apply_layer(
            0,
            2,
            &LayerIndex {
                changes: vec![file("a")],
            },
        );
        let w = m.wanted();
        assert!(w.contains(&(0, 0, 0)), "the first a carries b's data");
        assert!(w.contains(&(0, 2, 0)));
        assert_eq!(m.nodes[b"b".as_slice()].data_origin, (0, 0, 0));
    }

    #[test]
    fn whited_out_link_source_is_transient() {
        // The root (and implicit parents) share origin (0, 0, 0) with the first entry.
        let mut m = Model::new();
        m.apply_layer(
            0,
            0,
            &LayerIndex {
                changes: vec![file("a")],
            },
        );
        m.apply_layer(
            0,
            1,
            &LayerIndex {
                changes: vec![link("b", "a")],
            },
        );
        m.apply_layer(
            0,
            2,
            &LayerIndex {
                changes: vec![Change::Whiteout(b"a".to_vec())],
            },
        );
        assert_eq!(m.transient(), [((0, 0, 0), b"a".to_vec())]);
    }

    #[test]
    fn entry_below_symlink_is_complex() {
        let mut m = Model::new();
        let sl = Change::Put(
            Entry {
                link: b"/etc".to_vec(),
                ..Entry::new(b"l".to_vec(), Kind::Symlink)
            },
            None,
        );
        m.apply_layer(0, 0, &LayerIndex { changes: vec![sl] });
        m.apply_layer(
            0,
            1,
            &LayerIndex {
                changes: vec![file("l/passwd")],
            },
        );
        assert!(m.complex);
    }
}
