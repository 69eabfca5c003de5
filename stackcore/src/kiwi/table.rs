//! The merge semantics table: for an element under a given parent, its merge kind
//! and the key that identifies it. Everything the merge knows about KIWI's vocabulary is
//! here, so a schema change is a table change.

use std::collections::BTreeSet;

use super::xml::Element;

/// How an element merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// S: a section; all base sections with the same key form a group (G5).
    Section,
    /// C: attribute merge plus recursive children (G4).
    Container,
    /// A: replaced whole (G3).
    Atomic,
    /// T: a set of texts, matched by trimmed text (G6).
    TextSet,
    /// R: the overlay's elements of this name replace the base's as a set (G7).
    SetReplace,
}

/// One component of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// An attribute compared as an exact string (absent is its own value).
    Attr(&'static str),
    /// A comma-list attribute compared as a token set.
    Set(&'static str),
    /// `alias` if set, else `source/@path` (repositories).
    RepoId,
    /// The element's namespace URI (children of `<extension>`).
    NsUri,
    /// The trimmed text (textset kinds).
    Text,
}

/// A component value of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyVal {
    /// An exact string; `None` when the attribute is absent.
    Str(Option<String>),
    /// A token set; `None` is the unscoped value ⊥ (absent or empty attribute).
    Set(Option<BTreeSet<String>>),
}

/// The key of an element; two elements of the same name match if their keys are equal.
pub type Key = Vec<KeyVal>;

/// The semantics of one element: its kind and key parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The merge kind.
    pub kind: Kind,
    key: &'static [Part],
}

const NONE: &[Part] = &[];
const NAME: &[Part] = &[Part::Attr("name")];
const NAME_ARCH: &[Part] = &[Part::Attr("name"), Part::Set("arch")];
const SCOPE: &[Part] = &[Part::Set("profiles"), Part::Set("arch")];

#[allow(clippy::unnecessary_wraps)] // keeps each table row on one line
const fn s(kind: Kind, key: &'static [Part]) -> Option<Spec> {
    Some(Spec { kind, key })
}

/// Preferences scalars: singletons replaced where they first occur in a group.
pub const PREF_SCALARS: &[&str] = &[
    "version",
    "packagemanager",
    "locale",
    "keytable",
    "timezone",
    "release-version",
    "bootsplash-theme",
    "bootloader-theme",
    "rpm-locale-filtering",
    "rpm-check-signatures",
    "rpm-excludedocs",
];

/// Kinds that the schema requires to have at least one element child.
pub const NEEDS_CHILD: &[&str] = &[
    "users",
    "drivers",
    "strip",
    "profiles",
    "containers",
    "certificates",
    "environment",
    "labels",
    "expose",
    "volumes",
    "partitions",
    "luksformat",
];

/// The canonical order of `<image>` children, used to place a new top-level kind.
pub const TOP_ORDER: &[&str] = &[
    "include",
    "description",
    "profiles",
    "preferences",
    "users",
    "drivers",
    "strip",
    "repository",
    "containers",
    "certificates",
    "packages",
    "extension",
];

/// The semantics of `child` under the element named `parent`, or `None` for an element the
/// table does not know.
#[allow(clippy::match_same_arms)] // rows are grouped by parent, as in the merge table, not by result
pub fn lookup(parent: &str, child: &Element) -> Option<Spec> {
    use Kind::{Atomic as A, Container as C, Section as S, SetReplace as R, TextSet as T};
    let name = child.name.as_str();
    if parent == "extension" {
        return s(A, &[Part::NsUri]);
    }
    // Elements in a foreign namespace outside <extension> are unknown (G8).
    if child.ns.is_some() {
        return None;
    }
    match (parent, name) {
        ("image", "include") => s(A, &[Part::Attr("from")]),
        ("image", "description" | "certificates" | "extension") => s(C, NONE),
        ("image", "preferences" | "users") => s(S, SCOPE),
        ("image", "profiles") => s(S, NONE),
        ("image", "drivers") => s(S, &[Part::Set("profiles")]),
        ("image", "strip" | "packages") => s(S, &[Part::Attr("type"), Part::Set("profiles")]),
        ("image", "repository") => s(A, &[Part::RepoId, Part::Set("profiles"), Part::Set("arch")]),
        ("image", "containers") => s(
            S,
            &[
                Part::Attr("source"),
                Part::Attr("backend"),
                Part::Set("profiles"),
                Part::Set("arch"),
            ],
        ),
        ("description", "author" | "specification" | "license") => s(A, NONE),
        ("description", "contact") => s(R, NONE),
        ("certificates", "certificate") => s(A, NAME),
        ("preferences", "showlicense") => s(T, &[Part::Text]),
        ("preferences", "type") => s(C, &[Part::Attr("image")]),
        ("preferences", n) if PREF_SCALARS.contains(&n) => s(A, NONE),
        (
            "type",
            "bootloader" | "containerconfig" | "oemconfig" | "machine" | "systemdisk"
            | "partitions" | "installmedia" | "luksformat",
        )
        | ("bootloader", "bootloadersettings")
        | ("bootloadersettings" | "containerconfig", "environment")
        | ("containerconfig", "expose" | "volumes" | "labels") => s(C, NONE),
        ("type", "size")
        | ("containerconfig", "entrypoint" | "subcommand" | "stopsignal" | "history")
        | ("machine", "vmdisk" | "vmdvd") => s(A, NONE),
        ("type", "vagrantconfig") => s(A, &[Part::Attr("provider")]),
        ("type" | "installmedia", "initrd") => s(C, &[Part::Attr("action")]),
        ("initrd", "dracut") => s(A, &[Part::Attr("module"), Part::Attr("driver")]),
        ("bootloadersettings", "shimoption" | "installoption" | "configoption")
        | ("environment", "env")
        | ("volumes" | "systemdisk", "volume")
        | ("labels", "label")
        | ("partitions", "partition")
        | ("luksformat", "option")
        | ("users", "user")
        | ("packages", "archive") => s(A, NAME),
        ("bootloader", "securelinux") => {
            s(A, &[Part::Attr("hkd_ca_cert"), Part::Attr("hkd_sign_cert")])
        }
        ("expose", "port") => s(A, &[Part::Attr("number")]),
        ("oemconfig", n) if n.starts_with("oem-") => s(A, NONE),
        ("machine", "vmconfig-entry") => s(T, &[Part::Text]),
        ("machine", "vmnic") => s(A, &[Part::Attr("interface")]),
        ("profiles", "profile") => s(C, NAME),
        ("profile", "requires") => s(A, &[Part::Attr("profile"), Part::Set("arch")]),
        ("drivers" | "strip", "file")
        | (
            "packages",
            "package" | "namedCollection" | "collectionModule" | "product" | "ignore" | "file",
        ) => s(A, NAME_ARCH),
        ("containers", "container") => s(
            A,
            &[Part::Attr("name"), Part::Attr("path"), Part::Set("arch")],
        ),
        _ => None,
    }
}

/// The token set of a comma-list attribute value: split on `,` without trimming, as kiwi
/// does. Absent or empty is ⊥ (`None`).
pub fn token_set(value: Option<&str>) -> Option<BTreeSet<String>> {
    match value {
        None | Some("") => None,
        Some(v) => Some(v.split(',').map(str::to_owned).collect()),
    }
}

impl Spec {
    /// The key of `el` under this spec.
    pub fn key(&self, el: &Element) -> Key {
        self.key
            .iter()
            .map(|p| match *p {
                Part::Attr(a) => KeyVal::Str(el.attr(a).map(str::to_owned)),
                Part::Set(a) => KeyVal::Set(token_set(el.attr(a))),
                Part::RepoId => KeyVal::Str(el.attr("alias").map(str::to_owned).or_else(|| {
                    el.elements()
                        .find(|c| c.name == "source")
                        .and_then(|s| s.attr("path"))
                        .map(|p| format!("source:{p}"))
                })),
                Part::NsUri => KeyVal::Str(el.ns.clone()),
                Part::Text => KeyVal::Str(Some(el.text().trim().to_owned())),
            })
            .collect()
    }

    /// Whether elements of different names can match: children of `<extension>` are keyed
    /// by namespace alone, because kiwi allows one top-level element per namespace.
    pub fn any_name(&self) -> bool {
        self.key.contains(&Part::NsUri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(name: &str, attrs: &[(&str, &str)]) -> Element {
        let mut e = Element::new(name);
        for (k, v) in attrs {
            e.set_attr(k, v);
        }
        e
    }

    #[test]
    fn kinds_and_keys() {
        let cases: &[(&str, Element, Element, Kind, bool)] = &[
            (
                "image",
                el("preferences", &[("profiles", "a,b")]),
                el("preferences", &[("profiles", "b,a")]),
                Kind::Section,
                true,
            ),
            (
                "image",
                el("preferences", &[]),
                el("preferences", &[("profiles", "")]),
                Kind::Section,
                true,
            ),
            (
                "image",
                el("preferences", &[("profiles", "a, b")]),
                el("preferences", &[("profiles", "a,b")]),
                Kind::Section,
                false,
            ),
            (
                "packages",
                el("package", &[("name", "x")]),
                el("package", &[("name", "x"), ("arch", "x86_64")]),
                Kind::Atomic,
                false,
            ),
            (
                "packages",
                el("package", &[("name", "x"), ("bootinclude", "true")]),
                el("package", &[("name", "x")]),
                Kind::Atomic,
                true,
            ),
            (
                "preferences",
                el("type", &[("image", "oem"), ("primary", "true")]),
                el("type", &[("image", "oem")]),
                Kind::Container,
                true,
            ),
            (
                "image",
                el("repository", &[("alias", "a"), ("type", "rpm-md")]),
                el("repository", &[("alias", "a")]),
                Kind::Atomic,
                true,
            ),
            (
                "image",
                el("packages", &[("type", "image")]),
                el("packages", &[("type", "delete")]),
                Kind::Section,
                false,
            ),
        ];
        for (parent, a, b, kind, same) in cases {
            let sa = lookup(parent, a).expect("known");
            let sb = lookup(parent, b).expect("known");
            assert_eq!(sa.kind, *kind, "{parent}/{}", a.name);
            assert_eq!(
                sa.key(a) == sb.key(b),
                *same,
                "{parent}/{} {:?} vs {:?}",
                a.name,
                a.attrs,
                b.attrs
            );
        }
        assert!(lookup("image", &el("foo", &[])).is_none());
        assert!(lookup("preferences", &el("version", &[])).is_some_and(|s| s.kind == Kind::Atomic));
    }
}
