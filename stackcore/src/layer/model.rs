//! The overlay model: the tree an image (or a stack of sources) ends up as, computed from
//! layer indexes alone, without writing a file.
//!
//! Each node remembers which change produced its name (its [`Origin`]) and which change
//! carried its inode's data (`data_origin`). Names of one hardlink group share an inode
//! number and a data origin; each node describes the file completely (a second name of a
//! symlink is a `Symlink` node), so a writer writes each final inode once, at its first
//! final name, links the others to it, and skips every entry a later layer or source
//! replaces or deletes.
//!
//! Where lexical paths stop describing what an extractor would do (an entry below a
//! symlink, a hardlink or whiteout reached through one, a link to nothing), the model sets
//! `complex`, and writers fall back to applying that image's changes in order.
//!
//! Between sources, [`Model::overlay`] follows what `rsync -aHAX` does (rsync 3.x, checked
//! against 3.5.0): see its documentation for the rules.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::index::{Change, LayerIndex};
use crate::digest::Digest;
use crate::entry::{Entry, Kind, Mtime, is_below, parent};

/// Which change produced a node: `(source, layer, change)` numbers.
pub type Origin = (u32, u32, u32);

/// One entry of the modelled tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// The entry, complete: a second name of a hardlink group has the group's kind and
    /// metadata (never `Kind::Hardlink`).
    pub entry: Entry,
    /// Content digest of a file, when known.
    pub digest: Option<Digest>,
    /// Inode number within the model: names of one hardlink group share it.
    pub inode: u64,
    /// The change that produced this name.
    pub origin: Origin,
    /// The change that carried this inode's data (the same for every name of the inode).
    pub data_origin: Origin,
    /// A directory nobody declared: created as a parent.
    pub implicit: bool,
}

/// The modelled tree.
#[derive(Debug, Default, Clone)]
pub struct Model {
    /// Nodes by path; the root is `""`.
    pub nodes: BTreeMap<Vec<u8>, Node>,
    /// True when lexical paths no longer predict the extracted tree (see the module docs).
    pub complex: bool,
    next_inode: u64,
}

/// What differs between the lower and the upper entry of a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictKind {
    /// Different kinds of entry (a file over a directory, a symlink over a file...).
    Type,
    /// Same kind, different content (file data, symlink target, device numbers).
    Content,
    /// Same content, different owner, mode, mtime or xattrs.
    Metadata,
}

/// How a conflict was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// The upper entry replaced the lower one (a directory over a directory: its metadata).
    Upper,
    /// rsync's quick check: a file of the same size and mtime (to the second) is left
    /// alone, so the lower content stays; the upper owner, mode and xattrs are applied in
    /// place, to every name of the lower inode.
    LowerContentKept,
    /// rsync fails here (it cannot delete a non-empty directory to make way for a
    /// non-directory); the upper entry wins, as an overlay would, and the directory's
    /// contents are gone.
    UpperOverNonEmptyDir,
}

/// A type, content or metadata conflict between two sources of a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The path.
    pub path: Vec<u8>,
    /// The lower source's number.
    pub lower: u32,
    /// The upper source's number.
    pub upper: u32,
    /// What differs.
    pub kind: ConflictKind,
    /// What the result holds.
    pub resolution: Resolution,
}

impl Model {
    /// An empty tree with only a root directory.
    pub fn new() -> Self {
        Self::new_root()
    }

    /// The same as [`Model::new`], under a name that does not look like `Default` (which
    /// gives a tree without even a root).
    pub fn new_root() -> Self {
        let mut m = Model::default();
        let mut root = Entry::new(Vec::new(), Kind::Dir);
        root.mode = 0o755;
        m.insert_node(root, None, (0, 0, 0), true);
        m
    }

    fn fresh_inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.next_inode
    }

    fn insert_node(
        &mut self,
        entry: Entry,
        digest: Option<Digest>,
        origin: Origin,
        implicit: bool,
    ) {
        let inode = self.fresh_inode();
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

    /// The nearest proper ancestor of `path` that is a non-directory in the model.
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
    /// children), makes a hardlink another name of its target's inode.
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
                    // A second name of the target's inode: the data is the one the target
                    // name holds now, even if a later layer replaces that name.
                    let node = Node {
                        entry: Entry {
                            path: entry.path,
                            ..target.entry.clone()
                        },
                        digest: target.digest.clone(),
                        inode: target.inode,
                        origin,
                        data_origin: target.data_origin,
                        implicit: false,
                    };
                    self.nodes.insert(path, node);
                }
                // A link to nothing (or to a directory): the extractor refuses it; the
                // sequential path reports the error.
                _ => self.complex = true,
            }
            return;
        }
        self.insert_node(entry, digest, origin, false);
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

    /// Lays `upper` (another source's complete tree, source number `upper_no`) over this
    /// one the way `rsync -aHAX upper/ this/` does (no `--delete`, no `--inplace`),
    /// visiting the upper names in rsync's order (see [`rsync_order`]), and returns the
    /// conflicts:
    ///
    /// - a directory merges with a directory and takes its metadata (an implicit upper
    ///   directory changes nothing); it replaces a non-directory;
    /// - a non-directory that rsync's quick check finds up to date (a file of the same size
    ///   and mtime to the second, a symlink to the same target, a device with the same
    ///   numbers, a FIFO) keeps the lower inode and its content; the upper owner, mode and
    ///   xattrs are applied in place, so every name of the lower inode gets them;
    /// - any other non-directory is a new inode: the other names of a lower hardlink group
    ///   keep the old one;
    /// - the second and later names of an upper hardlink group are linked to the first;
    /// - an existing mtime that equals the upper one to the second is left as it is (rsync
    ///   compares seconds), unless its xattrs changed or, for a directory, its entries did;
    /// - where rsync fails (a non-directory over a non-empty directory) the upper entry wins.
    pub fn overlay(&mut self, upper: Model, upper_no: u32) -> Vec<Conflict> {
        let mut conflicts = Vec::new();
        self.complex |= upper.complex;
        // Upper inode -> the merged inode and the path of its first name.
        let mut assigned: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
        // Lower inodes rsync updated in place, with the metadata it set (the last one wins).
        let mut touched: HashMap<u64, Entry> = HashMap::new();
        // Directories whose entries rsync changed (their mtime moved), and merged
        // directories with their lower mtime.
        let mut dirtied: HashSet<Vec<u8>> = HashSet::new();
        let mut merged_dirs: Vec<(Vec<u8>, Mtime)> = Vec::new();
        let mut conflict = |path: &[u8], lower: &Node, kind, resolution| {
            conflicts.push(Conflict {
                path: path.to_vec(),
                lower: lower.origin.0,
                upper: upper_no,
                kind,
                resolution,
            });
        };
        for (path, u) in rsync_order(upper.nodes) {
            if u.entry.kind == Kind::Dir {
                if let Some(o) = self.nodes.get_mut(&path)
                    && o.entry.kind == Kind::Dir
                {
                    if u.implicit {
                        continue; // an undeclared upper directory does not change the lower one
                    }
                    if !o.implicit && !o.entry.same_metadata(&u.entry) {
                        conflict(&path, o, ConflictKind::Metadata, Resolution::Upper);
                    }
                    if keeps_mtime(&o.entry, &u.entry) {
                        merged_dirs.push((path.clone(), o.entry.mtime));
                    }
                    o.entry = u.entry;
                    o.origin = u.origin;
                    o.implicit = false;
                    continue;
                }
                if let Some(o) = self.nodes.get(&path) {
                    conflict(&path, o, ConflictKind::Type, Resolution::Upper);
                }
                dirtied.insert(parent(&path).to_vec());
                let inode = self.fresh_inode();
                self.nodes.insert(path, Node { inode, ..u });
                continue;
            }
            let mut old = self.nodes.remove(&path);
            let mut resolution = Resolution::Upper;
            if let Some(o) = &old
                && o.entry.kind == Kind::Dir
            {
                if self.below(&path).next().is_some() {
                    resolution = Resolution::UpperOverNonEmptyDir;
                    self.remove_below(&path);
                }
                conflict(&path, o, ConflictKind::Type, resolution);
                dirtied.insert(parent(&path).to_vec());
                old = None;
            }
            if let Some((inode, leader)) = assigned.get(&u.inode)
                && let Some(l) = self.nodes.get(leader)
            {
                // rsync -H links a later name of a group to the first name's file.
                let node = Node {
                    entry: Entry {
                        path: path.clone(),
                        ..l.entry.clone()
                    },
                    digest: l.digest.clone(),
                    inode: *inode,
                    origin: u.origin,
                    data_origin: l.data_origin,
                    implicit: false,
                };
                if let Some(o) = &old {
                    if o.inode != *inode {
                        dirtied.insert(parent(&path).to_vec());
                    }
                    if let Some(kind) = conflict_kind(o, &u) {
                        conflict(&path, o, kind, Resolution::Upper);
                    }
                } else {
                    dirtied.insert(parent(&path).to_vec());
                }
                self.nodes.insert(path, node);
                continue;
            }
            match old {
                Some(o) if up_to_date(&o.entry, &u.entry) => {
                    let kind = conflict_kind(&o, &u);
                    if let Some(kind) = kind {
                        let r = if kind == ConflictKind::Content {
                            Resolution::LowerContentKept
                        } else {
                            Resolution::Upper
                        };
                        conflict(&path, &o, kind, r);
                    }
                    let mut entry = u.entry;
                    if keeps_mtime(&o.entry, &entry) {
                        entry.mtime = o.entry.mtime;
                    }
                    touched.insert(o.inode, entry.clone());
                    assigned.insert(u.inode, (o.inode, path.clone()));
                    self.nodes.insert(
                        path,
                        Node {
                            entry,
                            digest: o.digest,
                            inode: o.inode,
                            origin: u.origin,
                            data_origin: o.data_origin,
                            implicit: false,
                        },
                    );
                }
                old => {
                    if let Some(o) = &old
                        && let Some(kind) = conflict_kind(o, &u)
                    {
                        conflict(&path, o, kind, resolution);
                    }
                    dirtied.insert(parent(&path).to_vec());
                    let inode = self.fresh_inode();
                    assigned.insert(u.inode, (inode, path.clone()));
                    self.nodes.insert(path, Node { inode, ..u });
                }
            }
        }
        // In-place updates reach every name of the inode.
        if !touched.is_empty() {
            for n in self.nodes.values_mut() {
                if n.entry.kind != Kind::Dir
                    && let Some(e) = touched.get(&n.inode)
                {
                    n.entry.mode = e.mode;
                    n.entry.uid = e.uid;
                    n.entry.gid = e.gid;
                    n.entry.mtime = e.mtime;
                    n.entry.xattrs.clone_from(&e.xattrs);
                }
            }
        }
        for (path, lower) in merged_dirs {
            if let Some(n) = self.nodes.get_mut(&path)
                && !dirtied.contains(&path)
            {
                n.entry.mtime = lower;
            }
        }
        conflicts
    }
}

/// The nodes in the order rsync visits them (checked with 3.5.0, whose incremental
/// recursion lists each directory's entries by name, then each subdirectory's, depth first):
/// `b` before `a/z`. It decides which name of an upper hardlink group comes first (the one
/// the others are linked to) and which in-place attribute change comes last.
fn rsync_order(nodes: BTreeMap<Vec<u8>, Node>) -> Vec<(Vec<u8>, Node)> {
    fn components(p: &[u8]) -> impl Iterator<Item = &[u8]> {
        p.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }
    let mut v: Vec<(Vec<u8>, Node)> = nodes.into_iter().collect();
    v.sort_by(|(a, _), (b, _)| {
        components(parent(a))
            .cmp(components(parent(b)))
            .then_with(|| Entry::name_of(a).cmp(Entry::name_of(b)))
    });
    v
}

/// rsync's quick check for an existing non-directory: left alone (only its attributes are
/// set) when this is true.
fn up_to_date(lower: &Entry, upper: &Entry) -> bool {
    match (lower.kind, upper.kind) {
        (Kind::File, Kind::File) => lower.size == upper.size && lower.mtime.sec == upper.mtime.sec,
        (Kind::Symlink, Kind::Symlink) => lower.link == upper.link,
        (Kind::Char, Kind::Char) | (Kind::Block, Kind::Block) => {
            (lower.dev_major, lower.dev_minor) == (upper.dev_major, upper.dev_minor)
        }
        (Kind::Fifo, Kind::Fifo) => true,
        _ => false,
    }
}

/// Whether rsync leaves an existing entry's mtime as it is when it brings its attributes up
/// to date: it compares mtimes to the second, but a change of xattrs (other than POSIX ACLs,
/// which `-A` handles apart) makes it set the upper mtime exactly (checked with 3.5.0).
fn keeps_mtime(lower: &Entry, upper: &Entry) -> bool {
    let plain = |e: &Entry| {
        e.xattrs
            .iter()
            .filter(|(k, _)| !k.starts_with(b"system.posix_acl_"))
            .cloned()
            .collect::<Vec<_>>()
    };
    lower.mtime.sec == upper.mtime.sec && plain(lower) == plain(upper)
}

/// What differs between two entries at one path, if anything.
fn conflict_kind(lower: &Node, upper: &Node) -> Option<ConflictKind> {
    let (l, u) = (&lower.entry, &upper.entry);
    if l.kind != u.kind {
        return Some(ConflictKind::Type);
    }
    let content = match u.kind {
        Kind::File => match (&lower.digest, &upper.digest) {
            (Some(a), Some(b)) => a != b || l.size != u.size,
            _ => l.size != u.size,
        },
        Kind::Symlink => l.link != u.link,
        Kind::Char | Kind::Block => (l.dev_major, l.dev_minor) != (u.dev_major, u.dev_minor),
        _ => false,
    };
    if content {
        Some(ConflictKind::Content)
    } else if !l.same_metadata(u) {
        Some(ConflictKind::Metadata)
    } else {
        None
    }
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
    fn replaced_link_source_still_carries_the_data() {
        let mut m = Model::new();
        for (l, c) in [file("a"), link("b", "a"), file("a")]
            .into_iter()
            .enumerate()
        {
            m.apply_layer(0, l as u32, &LayerIndex { changes: vec![c] });
        }
        let (a, b) = (&m.nodes[b"a".as_slice()], &m.nodes[b"b".as_slice()]);
        assert_eq!(b.data_origin, (0, 0, 0), "the first a carries b's data");
        assert_eq!(b.entry.kind, Kind::File);
        assert_eq!(a.data_origin, (0, 2, 0));
        assert_ne!(a.inode, b.inode);
    }

    fn tree(s: u32, changes: Vec<Change>) -> Model {
        let mut m = Model::new();
        m.apply_layer(s, 0, &LayerIndex { changes });
        m
    }

    fn timed(c: Change, sec: i64, nsec: u32, size: u64, mode: u32) -> Change {
        let Change::Put(mut e, d) = c else {
            unreachable!()
        };
        e.mtime = Mtime { sec, nsec };
        e.size = size;
        e.mode = mode;
        Change::Put(e, d)
    }

    #[test]
    fn overlay_follows_rsync() {
        // Lower: a group {a, b, c} and a file q linked as q2; a non-empty dir ne.
        let mut lower = tree(
            0,
            vec![
                timed(file("a"), 10, 0, 4, 0o644),
                link("b", "a"),
                link("c", "a"),
                timed(file("q"), 20, 5, 4, 0o644),
                link("q2", "q"),
                dir("ne"),
                file("ne/x"),
            ],
        );
        let upper = tree(
            1,
            vec![
                // a: another size: a new file; b and c keep the old inode.
                timed(file("a"), 10, 0, 9, 0o644),
                // ne: a file over a non-empty directory: rsync fails, the upper wins.
                file("ne"),
                // q: same size and second: rsync keeps it and chmods it in place.
                timed(file("q"), 20, 9, 4, 0o600),
            ],
        );
        let conflicts = lower.overlay(upper, 1);
        let n = |p: &str| lower.nodes[p.as_bytes()].clone();
        assert_ne!(n("a").inode, n("b").inode);
        assert_eq!(n("b").inode, n("c").inode);
        assert_eq!(n("a").data_origin, (1, 0, 0));
        assert_eq!(n("q").inode, n("q2").inode);
        assert_eq!(n("q").data_origin, (0, 0, 3), "quick check: lower content");
        assert_eq!(
            n("q2").entry.mode,
            0o600,
            "in-place chmod reaches every name"
        );
        assert_eq!(n("q").entry.mtime.nsec, 5, "rsync compares seconds");
        assert!(!lower.nodes.contains_key(b"ne/x".as_slice()));
        assert_eq!(n("ne").entry.kind, Kind::File);
        let find = |p: &str| conflicts.iter().find(|c| c.path == p.as_bytes()).cloned();
        assert_eq!(find("a").map(|c| c.kind), Some(ConflictKind::Content));
        assert_eq!(find("q").map(|c| c.kind), Some(ConflictKind::Metadata));
        let ne = find("ne").expect("ne conflict");
        assert_eq!(
            (ne.kind, ne.resolution, ne.lower, ne.upper),
            (ConflictKind::Type, Resolution::UpperOverNonEmptyDir, 0, 1)
        );
    }

    #[test]
    fn rsync_visits_a_directory_before_its_subdirectories() {
        // Lower: a/z and b, different contents, same size and mtime. Upper: one group of
        // both names. rsync visits b first (the root's entries come before a's), finds it up
        // to date, and links a/z to it: both names get b's content.
        let mut lower = tree(
            0,
            vec![
                dir("a"),
                timed(file("a/z"), 1, 0, 4, 0o644),
                timed(file("b"), 1, 0, 4, 0o644),
            ],
        );
        let upper = tree(
            1,
            vec![
                dir("a"),
                timed(file("a/z"), 1, 0, 4, 0o644),
                link("b", "a/z"),
            ],
        );
        lower.overlay(upper, 1);
        let (z, b) = (
            &lower.nodes[b"a/z".as_slice()],
            &lower.nodes[b"b".as_slice()],
        );
        assert_eq!(z.inode, b.inode);
        assert_eq!(z.data_origin, (0, 0, 2), "b's lower data");
    }

    #[test]
    fn upper_group_links_names_to_its_first() {
        let mut lower = tree(
            0,
            vec![
                timed(file("x"), 1, 0, 4, 0o644),
                timed(file("y"), 1, 0, 4, 0o644),
            ],
        );
        let upper = tree(1, vec![timed(file("x"), 1, 0, 4, 0o644), link("y", "x")]);
        let conflicts = lower.overlay(upper, 1);
        let (x, y) = (&lower.nodes[b"x".as_slice()], &lower.nodes[b"y".as_slice()]);
        assert_eq!(x.inode, y.inode);
        assert_eq!(
            x.data_origin,
            (0, 0, 0),
            "x was up to date: its lower data stays"
        );
        assert!(conflicts.is_empty(), "{conflicts:?}");
    }

    #[test]
    fn whited_out_link_source_still_carries_the_surviving_name() {
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
        // The root shares origin (0, 0, 0) with the first entry: the whiteout must still
        // remove `a`, and `b` keeps a's data.
        assert!(!m.nodes.contains_key(b"a".as_slice()));
        assert_eq!(m.nodes[b"b".as_slice()].data_origin, (0, 0, 0));
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
