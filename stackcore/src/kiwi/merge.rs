//! Applying one overlay to the base tree: `km:reset`, the `<image>` attributes,
//! then the children by kind (section, container, atomic, textset, setreplace), and at the
//! end the `primary` fix-up.
//!
//! kiwi never merges; it reads every active section in document order, first occurrence
//! wins. So "the overlay wins" can only be expressed by editing the base *in place*,
//! which is what every rule here does.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};

use super::table::{self, Key, Kind, NEEDS_CHILD, Spec, TOP_ORDER};
use super::xml::{Element, KM_NS, Node, local_name};
use super::{Diag, Level};
use crate::{Error, Result};

/// Attributes that identify an element best, shown first in messages.
const TELLING: &[&str] = &[
    "name",
    "image",
    "alias",
    "type",
    "from",
    "profiles",
    "arch",
    "number",
    "provider",
    "action",
    "interface",
];

/// A short human description of an element for messages: `<package name="vim">`. Shows
/// identifying attributes first (stash exports order attributes alphabetically, which would
/// otherwise hide `image=` behind `btrfs_*`), at most three.
pub fn describe(el: &Element) -> String {
    let mut shown: Vec<&super::xml::Attr> = Vec::new();
    for t in TELLING {
        shown.extend(el.attrs.iter().find(|a| a.name == *t));
    }
    for a in &el.attrs {
        if !a.is_km() && !a.is_ns_decl() && !shown.iter().any(|s| s.name == a.name) {
            shown.push(a);
        }
    }
    let mut s = format!("<{}", el.name);
    for a in shown.iter().take(3) {
        let _ = write!(s, " {}=\"{}\"", a.name, a.value);
    }
    if shown.len() > 3 {
        s.push_str(" …");
    }
    s.push('>');
    s
}

/// Checks every `km:` attribute of an overlay: an unknown directive or value is an input
/// error (exit 2), never silently ignored.
pub fn check_directives(root: &Element, origin: &str) -> Result<()> {
    fn walk(el: &Element, is_root: bool, origin: &str) -> Result<()> {
        for a in el.attrs.iter().filter(|a| a.ns.as_deref() == Some(KM_NS)) {
            let bad = |why: &str| {
                Err(Error::Usage(format!(
                    "{origin}: {} on <{}>: {why}",
                    a.name, el.name
                )))
            };
            match local_name(&a.name) {
                "action" => {
                    if !matches!(a.value.as_str(), "merge" | "replace" | "remove") {
                        return bad("unknown action (allowed: merge, replace, remove)");
                    }
                    if is_root {
                        return bad("not allowed on <image>");
                    }
                }
                "remove-attributes" => {}
                "reset" => {
                    if !is_root {
                        return bad("only allowed on the overlay's <image>");
                    }
                    for kind in a.value.split_whitespace() {
                        if kind == "description" || !TOP_ORDER.contains(&kind) {
                            return bad(&format!("cannot reset {kind:?}"));
                        }
                    }
                }
                _ => return bad("unknown kiwimerge directive"),
            }
        }
        for c in el.elements() {
            walk(c, false, origin)?;
        }
        Ok(())
    }
    walk(root, true, origin)
}

/// Index of the first of the contiguous comments right before `idx`.
fn leading_start(children: &[Node], idx: usize) -> usize {
    let mut start = idx;
    while start > 0 && matches!(children[start - 1], Node::Comment(_)) {
        start -= 1;
    }
    start
}

/// Deletes the element at `idx` together with its leading comments.
fn delete_at(children: &mut Vec<Node>, idx: usize) {
    let start = leading_start(children, idx);
    children.drain(start..=idx);
}

/// Deletes the elements at `idxs` (any order) with their leading comments.
fn delete_all(children: &mut Vec<Node>, idxs: &[usize]) {
    let mut idxs = idxs.to_vec();
    idxs.sort_unstable();
    for &i in idxs.iter().rev() {
        delete_at(children, i);
    }
}

fn comment_nodes(comments: &[String]) -> impl Iterator<Item = Node> + '_ {
    comments.iter().map(|c| Node::Comment(c.clone()))
}

/// Replaces the element at `idx`; overlay comments, if any, replace the base's leading ones.
fn replace_at(children: &mut Vec<Node>, idx: usize, new: Element, comments: &[String]) {
    if comments.is_empty() {
        children[idx] = Node::Element(new);
    } else {
        let start = leading_start(children, idx);
        let nodes: Vec<Node> = comment_nodes(comments)
            .chain([Node::Element(new)])
            .collect();
        children.splice(start..=idx, nodes);
    }
}

/// Where a new child named `name` goes in `parent` (the insert position).
fn insert_pos(parent: &Element, name: &str, top_level: bool) -> usize {
    let ch = &parent.children;
    if let Some(i) = ch
        .iter()
        .rposition(|n| matches!(n, Node::Element(e) if e.name == name))
    {
        return i + 1;
    }
    if top_level && let Some(rank) = TOP_ORDER.iter().position(|k| *k == name) {
        let later = ch.iter().position(|n| {
            matches!(n, Node::Element(e)
                if TOP_ORDER.iter().position(|k| *k == e.name).is_some_and(|r| r > rank))
        });
        if let Some(i) = later {
            return leading_start(ch, i);
        }
    }
    ch.len()
}

fn insert_into(parent: &mut Element, new: Element, comments: &[String], top_level: bool) {
    let pos = insert_pos(parent, &new.name, top_level);
    let nodes: Vec<Node> = comment_nodes(comments)
        .chain([Node::Element(new)])
        .collect();
    parent.children.splice(pos..pos, nodes);
}

/// The element children of `el` with their leading comments, in order.
fn with_comments(el: &Element) -> Vec<(&Element, Vec<String>)> {
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for n in &el.children {
        match n {
            Node::Comment(c) => pending.push(c.clone()),
            Node::Element(e) => out.push((e, std::mem::take(&mut pending))),
            _ => {}
        }
    }
    out
}

/// Indices (into `parent.children`) of the elements matching `o` under `spec`.
fn find(parent: &Element, o: &Element, spec: Spec, key: &Key) -> Vec<usize> {
    parent
        .children
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n {
            Node::Element(e)
                if (spec.any_name() || (e.name == o.name && e.ns == o.ns))
                    && spec.key(e) == *key =>
            {
                Some(i)
            }
            _ => None,
        })
        .collect()
}

fn child_mut(parent: &mut Element, idx: usize) -> &mut Element {
    match &mut parent.children[idx] {
        Node::Element(e) => e,
        _ => unreachable!("index of an element child"),
    }
}

/// Applies overlays to a base tree, collecting diagnostics.
#[derive(Debug)]
pub struct Merger<'d> {
    diags: &'d mut Vec<Diag>,
    origin: String,
}

type SeenMap = HashMap<(String, Key), HashSet<(String, Key)>>;

impl<'d> Merger<'d> {
    /// A merger that reports into `diags`; `origin` names the overlay in messages.
    pub fn new(diags: &'d mut Vec<Diag>, origin: &str) -> Self {
        Merger {
            diags,
            origin: origin.to_owned(),
        }
    }

    fn warn(&mut self, code: &'static str, msg: impl fmt::Display) {
        self.diags.push(Diag {
            level: Level::Warning,
            code,
            message: format!("{}: {msg}", self.origin),
        });
    }

    /// Applies the overlay `o_root` to `base` (both `<image>` roots, already upgraded).
    pub fn apply(&mut self, base: &mut Element, o_root: &Element) {
        if let Some(kinds) = o_root.km_attr("reset") {
            let kinds: Vec<&str> = kinds.split_whitespace().collect();
            let idxs: Vec<usize> = base
                .children
                .iter()
                .enumerate()
                .filter_map(|(i, n)| match n {
                    Node::Element(e) if e.ns.is_none() && kinds.contains(&e.name.as_str()) => {
                        Some(i)
                    }
                    _ => None,
                })
                .collect();
            delete_all(&mut base.children, &idxs);
        }
        for a in &o_root.attrs {
            if a.is_km() || (a.name == "schemaversion" && a.ns.is_none()) {
                continue;
            }
            if a.is_ns_decl() {
                if !base.attrs.iter().any(|b| b.name == a.name) {
                    base.attrs.push(a.clone());
                }
                continue;
            }
            base.set_attr(&a.name, &a.value);
            if let Some(b) = base.attrs.iter_mut().find(|b| b.name == a.name) {
                b.ns.clone_from(&a.ns);
            }
        }
        self.remove_attributes(base, o_root);

        let mut seen_top: HashSet<(String, Key)> = HashSet::new();
        let mut seen_sections: SeenMap = HashMap::new();
        for (o, comments) in with_comments(o_root) {
            match table::lookup("image", o) {
                Some(spec) if spec.kind == Kind::Section => {
                    self.merge_section(base, o, &comments, spec, &mut seen_sections);
                }
                Some(spec) => self.merge_one(base, o_root, o, &comments, spec, &mut seen_top, true),
                None => self.merge_unknown(base, o, &comments),
            }
        }
    }

    fn remove_attributes(&mut self, b: &mut Element, o: &Element) {
        if let Some(list) = o.km_attr("remove-attributes") {
            for name in list.split_whitespace() {
                if !b.remove_attr(name) {
                    self.warn(
                        "W4",
                        format!(
                            "km:remove-attributes: {} has no attribute {name:?}",
                            describe(b)
                        ),
                    );
                }
            }
        }
    }

    /// G4 attribute merge: overlay attributes override in place or are appended.
    fn merge_attrs(&mut self, b: &mut Element, o: &Element) {
        for a in o.attrs.iter().filter(|a| !a.is_km()) {
            if a.is_ns_decl() {
                if !b.attrs.iter().any(|x| x.name == a.name) {
                    b.attrs.push(a.clone());
                }
            } else {
                b.set_attr(&a.name, &a.value);
            }
        }
        if b.name == "type" && o.attr("primary") == Some("true") {
            b.overlay_primary = true;
        }
        self.remove_attributes(b, o);
    }

    /// A copy of overlay element `o` ready to insert (G2): removals inside are dropped,
    /// directives stripped, empty NEEDS-CHILD elements dropped. `None` if nothing is left.
    fn prepare_copy(&mut self, o: &Element) -> Option<Element> {
        let mut c = o.clone();
        if c.km_attr("remove-attributes").is_some() {
            self.warn(
                "W4",
                format!(
                    "km:remove-attributes on {} ignored: it is inserted, not merged",
                    describe(o)
                ),
            );
        }
        self.clean_inserted(&mut c);
        c.strip_km();
        if NEEDS_CHILD.contains(&c.name.as_str()) && !c.has_element_children() {
            self.warn(
                "W6",
                format!("{} not inserted: it would be empty", describe(o)),
            );
            return None;
        }
        Some(c)
    }

    fn clean_inserted(&mut self, el: &mut Element) {
        if el.name == "type" && el.attr("primary") == Some("true") {
            el.overlay_primary = true;
        }
        let removes: Vec<usize> = el
            .children
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n {
                Node::Element(e) if e.km_attr("action") == Some("remove") => Some(i),
                _ => None,
            })
            .collect();
        for &i in &removes {
            if let Node::Element(e) = &el.children[i] {
                let d = describe(e);
                self.warn(
                    "W4",
                    format!(
                        "km:action=\"remove\" on {d} has no effect: its parent {} is new",
                        describe(el)
                    ),
                );
            }
        }
        delete_all(&mut el.children, &removes);
        let mut empties = Vec::new();
        for (i, n) in el.children.iter_mut().enumerate() {
            if let Node::Element(e) = n {
                if e.km_attr("remove-attributes").is_some() {
                    self.warn(
                        "W4",
                        format!(
                            "km:remove-attributes on {} ignored: it is inserted, not merged",
                            describe(e)
                        ),
                    );
                }
                self.clean_inserted(e);
                if NEEDS_CHILD.contains(&e.name.as_str()) && !e.has_element_children() {
                    self.warn("W6", format!("{} dropped: it became empty", describe(e)));
                    empties.push(i);
                }
            }
        }
        delete_all(&mut el.children, &empties);
    }

    fn insert(&mut self, parent: &mut Element, o: &Element, comments: &[String], top: bool) {
        if let Some(c) = self.prepare_copy(o) {
            insert_into(parent, c, comments, top);
        }
    }

    /// G8: an element the table does not know is carried over unless an identical one
    /// exists. With `km:action="remove"`, identical elements (directives aside) are deleted.
    fn merge_unknown(&mut self, parent: &mut Element, o: &Element, comments: &[String]) {
        let mut copy = o.clone();
        copy.strip_km();
        let same: Vec<usize> = parent
            .children
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n {
                Node::Element(e) => {
                    let mut e = e.clone();
                    e.strip_km();
                    (e == copy).then_some(i)
                }
                _ => None,
            })
            .collect();
        if o.km_attr("action") == Some("remove") {
            if same.is_empty() {
                self.warn(
                    "W4",
                    format!(
                        "km:action=\"remove\": no element identical to {} in the base",
                        describe(o)
                    ),
                );
            }
            delete_all(&mut parent.children, &same);
        } else if same.is_empty() {
            self.warn(
                "W5",
                format!("unknown element {} carried over", describe(o)),
            );
            insert_into(parent, copy, comments, false);
        }
    }

    /// G1/G2/G3/G4/G6/G7 for `o` under a single base parent `b`.
    #[allow(clippy::too_many_arguments)] // the rule needs the parent on both sides plus G9 state
    fn merge_one(
        &mut self,
        b: &mut Element,
        o_parent: &Element,
        o: &Element,
        comments: &[String],
        spec: Spec,
        seen: &mut HashSet<(String, Key)>,
        top: bool,
    ) {
        let key = spec.key(o);
        if !seen.insert((o.name.clone(), key.clone())) {
            if spec.kind != Kind::SetReplace {
                self.warn(
                    "W4",
                    format!(
                        "{} repeats a key in the same overlay parent; the first occurrence wins",
                        describe(o)
                    ),
                );
            }
            return;
        }
        let action = o.km_attr("action");
        let hits = find(b, o, spec, &key);
        if action == Some("remove") {
            if hits.is_empty() {
                self.warn(
                    "W4",
                    format!("km:action=\"remove\": no {} in the base", describe(o)),
                );
            }
            delete_all(&mut b.children, &hits);
            return;
        }
        if spec.kind == Kind::SetReplace && action != Some("replace") {
            self.set_replace(b, o_parent, &o.name, &hits, top);
            return;
        }
        let Some((&first, rest)) = hits.split_first() else {
            self.insert(b, o, comments, top);
            return;
        };
        match spec.kind {
            Kind::TextSet if action != Some("replace") => {}
            Kind::Container | Kind::Section if action != Some("replace") => {
                delete_all(&mut b.children, rest);
                let target = child_mut(b, first);
                self.merge_attrs(target, o);
                self.merge_children(target, o);
            }
            _ => {
                let Some(copy) = self.prepare_copy(o) else {
                    return;
                };
                delete_all(&mut b.children, rest);
                replace_at(&mut b.children, first, copy, comments);
            }
        }
    }

    /// G7: all base elements named `name` are replaced, at the first one's position, by all
    /// overlay elements of that name.
    fn set_replace(
        &mut self,
        b: &mut Element,
        o_parent: &Element,
        name: &str,
        hits: &[usize],
        top: bool,
    ) {
        let news: Vec<(Element, Vec<String>)> = with_comments(o_parent)
            .into_iter()
            .filter(|(e, _)| e.name == name && e.km_attr("action").is_none())
            .filter_map(|(e, c)| self.prepare_copy(e).map(|e| (e, c)))
            .collect();
        let Some((&first, rest)) = hits.split_first() else {
            for (e, c) in news {
                insert_into(b, e, &c, top);
            }
            return;
        };
        delete_all(&mut b.children, rest);
        // As for atomic replacement: base comments stay unless the overlay brings its own.
        let start = if news.first().is_some_and(|(_, c)| !c.is_empty()) {
            leading_start(&b.children, first)
        } else {
            first
        };
        let nodes: Vec<Node> = news
            .into_iter()
            .flat_map(|(e, c)| {
                comment_nodes(&c)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .chain([Node::Element(e)])
            })
            .collect();
        b.children.splice(start..=first, nodes);
    }

    /// Merges the children of overlay container `o` into base element `b`.
    fn merge_children(&mut self, b: &mut Element, o: &Element) {
        let parent = local_name(&b.name).to_owned();
        let mut seen = HashSet::new();
        for (c, comments) in with_comments(o) {
            match table::lookup(&parent, c) {
                Some(spec) => self.merge_one(b, o, c, &comments, spec, &mut seen, false),
                None => self.merge_unknown(b, c, &comments),
            }
        }
    }

    /// G5: an overlay section merges into the group of base sections with its key.
    fn merge_section(
        &mut self,
        root: &mut Element,
        o: &Element,
        comments: &[String],
        spec: Spec,
        seen_map: &mut SeenMap,
    ) {
        let key = spec.key(o);
        let group = find(root, o, spec, &key);
        let action = o.km_attr("action");
        if action == Some("remove") {
            if group.is_empty() {
                self.warn(
                    "W4",
                    format!("km:action=\"remove\": no {} in the base", describe(o)),
                );
            }
            delete_all(&mut root.children, &group);
            return;
        }
        let seen = seen_map.entry((o.name.clone(), key.clone())).or_default();
        if action == Some("replace") || group.is_empty() {
            let Some(copy) = self.prepare_copy(o) else {
                return;
            };
            for c in copy.elements() {
                if let Some(cs) = table::lookup(&o.name, c) {
                    seen.insert((c.name.clone(), cs.key(c)));
                }
            }
            if let Some((&first, rest)) = group.split_first() {
                let first_el = first;
                // Deleting later members first keeps `first` valid.
                delete_all(&mut root.children, rest);
                replace_at(&mut root.children, first_el, copy, comments);
            } else {
                insert_into(root, copy, comments, true);
            }
            return;
        }
        let head = group[0];
        self.merge_attrs(child_mut(root, head), o);
        let parent = o.name.clone();
        for (c, ccomments) in with_comments(o) {
            let Some(cspec) = table::lookup(&parent, c) else {
                let exists = group.iter().any(|&m| {
                    child_mut(root, m).elements().any(|e| {
                        let mut e = e.clone();
                        e.strip_km();
                        let mut cc = c.clone();
                        cc.strip_km();
                        e == cc
                    })
                });
                if !exists {
                    self.merge_unknown(child_mut(root, head), c, &ccomments);
                }
                continue;
            };
            let ckey = cspec.key(c);
            let seen = seen_map.entry((o.name.clone(), key.clone())).or_default();
            if !seen.insert((c.name.clone(), ckey.clone())) {
                self.warn("W4", format!("{} repeats a key in the same overlay section group; the first occurrence wins", describe(c)));
                continue;
            }
            // All hits across the group, in document order.
            let hits: Vec<(usize, usize)> = group
                .iter()
                .flat_map(|&m| {
                    let member = child_mut(root, m);
                    find(member, c, cspec, &ckey)
                        .into_iter()
                        .map(move |i| (m, i))
                })
                .collect();
            let caction = c.km_attr("action");
            if caction == Some("remove") {
                if hits.is_empty() {
                    self.warn(
                        "W4",
                        format!("km:action=\"remove\": no {} in the base", describe(c)),
                    );
                }
                Self::delete_hits(root, &hits);
                continue;
            }
            let Some((&(fm, fi), rest)) = hits.split_first() else {
                self.insert(child_mut(root, head), c, &ccomments, false);
                continue;
            };
            match cspec.kind {
                Kind::TextSet if caction != Some("replace") => {}
                Kind::Container | Kind::Section if caction != Some("replace") => {
                    Self::delete_hits(root, rest);
                    let target = child_mut(child_mut(root, fm), fi);
                    self.merge_attrs(target, c);
                    self.merge_children(target, c);
                }
                _ => {
                    let Some(copy) = self.prepare_copy(c) else {
                        continue;
                    };
                    Self::delete_hits(root, rest);
                    replace_at(&mut child_mut(root, fm).children, fi, copy, &ccomments);
                }
            }
        }
        // Members of a NEEDS-CHILD kind emptied by this overlay are dropped.
        if NEEDS_CHILD.contains(&o.name.as_str()) {
            let empty: Vec<usize> = group
                .iter()
                .copied()
                .filter(|&m| !child_mut(root, m).has_element_children())
                .collect();
            for &m in &empty {
                let d = describe(child_mut(root, m));
                self.warn("W6", format!("{d} dropped: it became empty"));
            }
            delete_all(&mut root.children, &empty);
        }
    }

    /// Deletes (member, child) hits; per member in descending order so indices stay valid.
    fn delete_hits(root: &mut Element, hits: &[(usize, usize)]) {
        let members: BTreeSet<usize> = hits.iter().map(|h| h.0).collect();
        for m in members {
            let idxs: Vec<usize> = hits.iter().filter(|h| h.0 == m).map(|h| h.1).collect();
            delete_all(&mut child_mut(root, m).children, &idxs);
        }
    }
}

/// The `requires` closure of every declared profile.
pub fn profile_closures(root: &Element) -> HashMap<String, BTreeSet<String>> {
    let mut requires: HashMap<String, Vec<String>> = HashMap::new();
    for ps in root.elements().filter(|e| e.name == "profiles") {
        for p in ps.elements().filter(|e| e.name == "profile") {
            let Some(name) = p.attr("name") else { continue };
            let reqs = p
                .elements()
                .filter(|r| r.name == "requires")
                .filter_map(|r| r.attr("profile").map(str::to_owned));
            requires.entry(name.to_owned()).or_default().extend(reqs);
        }
    }
    requires
        .keys()
        .map(|p| (p.clone(), closure(&requires, std::iter::once(p.as_str()))))
        .collect()
}

/// The names in `start` plus everything they require, transitively.
pub fn closure<'a, S: std::hash::BuildHasher>(
    requires: &HashMap<String, Vec<String>, S>,
    start: impl Iterator<Item = &'a str>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = start.map(str::to_owned).collect();
    while let Some(p) = todo.pop() {
        if out.insert(p.clone())
            && let Some(rs) = requires.get(&p)
        {
            todo.extend(rs.iter().cloned());
        }
    }
    out
}

/// A section's scope: (profiles token set, arch token set), `None` = ⊥.
pub type Scope = (Option<BTreeSet<String>>, Option<BTreeSet<String>>);

/// The scope of a section element.
pub fn scope(el: &Element) -> Scope {
    (
        table::token_set(el.attr("profiles")),
        table::token_set(el.attr("arch")),
    )
}

fn intersects(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
    a.iter().any(|x| b.contains(x))
}

/// Whether two preferences sections can be active in the same build.
pub fn co_active<S: std::hash::BuildHasher>(
    a: &Scope,
    b: &Scope,
    closures: &HashMap<String, BTreeSet<String>, S>,
) -> bool {
    let arch_ok = match (&a.1, &b.1) {
        (Some(x), Some(y)) => intersects(x, y),
        _ => true,
    };
    let prof_ok = match (&a.0, &b.0) {
        (Some(x), Some(y)) => closures
            .values()
            .any(|c| intersects(c, x) && intersects(c, y)),
        _ => true,
    };
    arch_ok && prof_ok
}

/// A `primary="true"` that came from an overlay clears `primary` on every other
/// type that can be co-active with it, so kiwi's "first primary" is the overlay's.
pub fn primary_fixup(root: &mut Element, diags: &mut Vec<Diag>) {
    let closures = profile_closures(root);
    // (preferences index, type index) of every overlay-primary type.
    let mut winners = Vec::new();
    for (pi, n) in root.children.iter().enumerate() {
        if let Node::Element(p) = n
            && p.name == "preferences"
        {
            for (ti, t) in p.children.iter().enumerate() {
                if let Node::Element(t) = t
                    && t.name == "type"
                    && t.overlay_primary
                    && t.attr("primary") == Some("true")
                {
                    winners.push((pi, ti, scope(p)));
                }
            }
        }
    }
    for (wpi, wti, wscope) in &winners {
        for (pi, n) in root.children.iter_mut().enumerate() {
            let Node::Element(p) = n else { continue };
            if p.name != "preferences" || !co_active(wscope, &scope(p), &closures) {
                continue;
            }
            let pdesc = describe(p);
            for (ti, t) in p.children.iter_mut().enumerate() {
                if let Node::Element(t) = t
                    && t.name == "type"
                    && (pi, ti) != (*wpi, *wti)
                    && !(t.overlay_primary && winners.iter().any(|w| (w.0, w.1) == (pi, ti)))
                    && t.remove_attr("primary")
                {
                    diags.push(Diag {
                        level: Level::Warning,
                        code: "W6",
                        message: format!(
                            "primary removed from {} in {pdesc}: an overlay made another co-active type primary",
                            describe(t)
                        ),
                    });
                }
            }
        }
    }
    root.walk_mut(&mut |e| e.overlay_primary = false);
}

#[cfg(test)]
mod tests {
    use crate::Result;
    use crate::kiwi::{MergeOptions, load_description, merge, xml};

    /// Merges `overlay` onto `base` (both wrapped in `<image>`), returns canonical output
    /// and the diagnostic codes.
    fn run(base: &str, overlay: &str) -> Result<(String, Vec<&'static str>)> {
        let b = load_description(
            format!(r#"<image schemaversion="8.5" name="b">{base}</image>"#).as_bytes(),
            "base",
            None,
        )?;
        let o = load_description(
            format!(r#"<image xmlns:km="urn:kiwimerge:1">{overlay}</image>"#).as_bytes(),
            "overlay",
            None,
        )?;
        let opts = MergeOptions {
            lint: false,
            ..MergeOptions::default()
        };
        let out = merge(b, vec![o], &opts)?;
        Ok((out.xml, out.diags.iter().map(|d| d.code).collect()))
    }

    fn canon(inner: &str) -> Result<String> {
        let doc = xml::parse(
            format!(r#"<image schemaversion="8.5" name="b">{inner}</image>"#).as_bytes(),
            "want",
        )?;
        Ok(xml::serialize(&doc))
    }

    #[test]
    fn merge_rules() -> Result<()> {
        // (rule, base, overlay, expected, diagnostic codes)
        let cases: &[(&str, &str, &str, &str, &[&str])] = &[
            (
                "G1 removes every section of the group, with leading comments",
                "<!--c--><users><user name=\"a\"/></users><users><user name=\"b\"/></users><users profiles=\"P\"><user name=\"c\"/></users>",
                "<users km:action=\"remove\"/>",
                "<users profiles=\"P\"><user name=\"c\"/></users>",
                &[],
            ),
            (
                "G1 remove without match warns",
                "<packages type=\"image\"><package name=\"a\" arch=\"x86_64\"/></packages>",
                "<packages type=\"image\"><package name=\"a\" km:action=\"remove\"/></packages>",
                "<packages type=\"image\"><package name=\"a\" arch=\"x86_64\"/></packages>",
                &["W4"],
            ),
            (
                "G3 atomic replace keeps position, drops later duplicates",
                "<packages type=\"image\"><package name=\"a\"/><package name=\"b\"/><package name=\"a\"/></packages>",
                "<packages type=\"image\"><package name=\"a\" bootinclude=\"true\"/></packages>",
                "<packages type=\"image\"><package name=\"a\" bootinclude=\"true\"/><package name=\"b\"/></packages>",
                &[],
            ),
            (
                "G3 km:action=replace on a container",
                "<preferences><type image=\"oem\" filesystem=\"btrfs\"><bootloader name=\"grub2\"/></type></preferences>",
                "<preferences><type image=\"oem\" filesystem=\"xfs\" km:action=\"replace\"/></preferences>",
                "<preferences><type image=\"oem\" filesystem=\"xfs\"/></preferences>",
                &[],
            ),
            (
                "G4 attribute merge and remove-attributes",
                "<preferences><type image=\"oem\" a=\"1\" b=\"2\"><oemconfig><oem-swap>true</oem-swap></oemconfig></type></preferences>",
                "<preferences><type image=\"oem\" b=\"3\" c=\"4\" km:remove-attributes=\"a zz\"><oemconfig><oem-resize>false</oem-resize></oemconfig></type></preferences>",
                "<preferences><type image=\"oem\" b=\"3\" c=\"4\"><oemconfig><oem-swap>true</oem-swap><oem-resize>false</oem-resize></oemconfig></type></preferences>",
                &["W4"],
            ),
            (
                "G5 child found in the second group member; emptied member dropped",
                "<preferences><version>1</version></preferences><preferences><locale>en</locale><timezone>UTC</timezone></preferences>",
                "<preferences><locale>de</locale><timezone km:action=\"remove\"/><keytable>us</keytable></preferences>",
                "<preferences><version>1</version><keytable>us</keytable></preferences><preferences><locale>de</locale></preferences>",
                &[],
            ),
            (
                "G5 NEEDS-CHILD member left empty is dropped",
                "<users><user name=\"a\"/></users><users><user name=\"b\"/></users>",
                "<users><user name=\"b\" km:action=\"remove\"/></users>",
                "<users><user name=\"a\"/></users>",
                &["W6"],
            ),
            (
                "G6 textset inserts only new texts",
                "<preferences><showlicense>a</showlicense></preferences>",
                "<preferences><showlicense> a </showlicense><showlicense>b</showlicense></preferences>",
                "<preferences><showlicense>a</showlicense><showlicense>b</showlicense></preferences>",
                &[],
            ),
            (
                "G7 contacts replaced as a set at the first one's position",
                "<description type=\"system\"><author>x</author><contact>a</contact><contact>b</contact><specification>s</specification></description>",
                "<description type=\"system\"><contact>c</contact><contact>d</contact></description>",
                "<description type=\"system\"><author>x</author><contact>c</contact><contact>d</contact><specification>s</specification></description>",
                &[],
            ),
            (
                "G7 keeps base comments when the overlay has none",
                "<description type=\"system\"><!--who--><contact>a</contact></description>",
                "<description type=\"system\"><contact>c</contact></description>",
                "<description type=\"system\"><!--who--><contact>c</contact></description>",
                &[],
            ),
            (
                "G8 unknown element carried once",
                "<foo a=\"1\"/>",
                "<foo a=\"1\"/><bar/>",
                "<foo a=\"1\"/><bar/>",
                &["W5"],
            ),
            (
                "G9 first occurrence wins within an overlay section group",
                "<preferences><locale>en</locale></preferences>",
                "<preferences><locale>de</locale></preferences><preferences><locale>fr</locale></preferences>",
                "<preferences><locale>de</locale></preferences>",
                &["W4"],
            ),
            (
                "insert position: canonical order at image level, after same name inside",
                "<description type=\"system\"/><preferences/><packages type=\"image\"/>",
                "<repository alias=\"r\"><source path=\"p\"/></repository><profiles><profile name=\"P\" description=\"p\"/></profiles>",
                "<description type=\"system\"/><profiles><profile name=\"P\" description=\"p\"/></profiles><preferences/><repository alias=\"r\"><source path=\"p\"/></repository><packages type=\"image\"/>",
                &[],
            ),
            (
                "repository keyed by source path without alias; scope is part of the key",
                "<repository type=\"rpm-md\"><source path=\"a\"/></repository><repository profiles=\"P\"><source path=\"a\"/></repository>",
                "<repository km:action=\"remove\"><source path=\"a\"/></repository>",
                "<repository profiles=\"P\"><source path=\"a\"/></repository>",
                &[],
            ),
            (
                "extension children keyed by namespace",
                "<extension xmlns:x=\"urn:x\"><x:a v=\"1\"/></extension>",
                "<extension xmlns:x=\"urn:x\"><x:b v=\"2\"/></extension>",
                "<extension xmlns:x=\"urn:x\"><x:b v=\"2\"/></extension>",
                &[],
            ),
            (
                "km:action=remove inside a new element is dropped with a warning",
                "",
                "<users profiles=\"P\"><user name=\"a\"/><user name=\"b\" km:action=\"remove\"/></users>",
                "<users profiles=\"P\"><user name=\"a\"/></users>",
                &["W4"],
            ),
            (
                "primary fix-up clears co-active types only",
                "<profiles><profile name=\"A\" description=\"a\"/><profile name=\"B\" description=\"b\"/></profiles><preferences profiles=\"A\"><type image=\"oem\" primary=\"true\"/></preferences><preferences profiles=\"B\"><type image=\"oem\" primary=\"true\"/></preferences>",
                "<preferences profiles=\"A\"><type image=\"iso\" primary=\"true\"/></preferences>",
                "<profiles><profile name=\"A\" description=\"a\"/><profile name=\"B\" description=\"b\"/></profiles><preferences profiles=\"A\"><type image=\"oem\"/><type image=\"iso\" primary=\"true\"/></preferences><preferences profiles=\"B\"><type image=\"oem\" primary=\"true\"/></preferences>",
                &["W6"],
            ),
            (
                "comments: replacing atomic brings overlay comments, merged container drops them",
                "<!--old--><repository alias=\"r\"><source path=\"a\"/></repository><preferences><!--keep--><type image=\"oem\"/></preferences>",
                "<!--new--><repository alias=\"r\"><source path=\"b\"/></repository><preferences><!--dropped--><type image=\"oem\" format=\"qcow2\"/></preferences>",
                "<!--new--><repository alias=\"r\"><source path=\"b\"/></repository><preferences><!--keep--><type image=\"oem\" format=\"qcow2\"/></preferences>",
                &[],
            ),
        ];
        for (rule, base, overlay, want, codes) in cases {
            let (got, diags) = run(base, overlay)?;
            assert_eq!(got, canon(want)?, "{rule}");
            assert_eq!(&diags, codes, "{rule}");
        }
        Ok(())
    }
}
