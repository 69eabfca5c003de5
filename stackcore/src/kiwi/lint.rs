//! Lints over the merged tree. They mirror the kiwi runtime checks that a merge
//! can break, so a problem shows up here rather than half way through a build.

use std::collections::{BTreeMap, BTreeSet};

use super::merge::{co_active, describe, profile_closures, scope};
use super::schematron::{
    BOOTLOADER_ATTR_IMAGES, BOOTLOADER_ATTR_NAMES, BTRFS_ATTRS, REPO_ATTR_TYPES, TYPE_ATTR_IMAGES,
};
use super::table::{PREF_SCALARS, token_set};
use super::xml::Element;
use super::{Diag, Level};

fn warn(diags: &mut Vec<Diag>, code: &'static str, message: String) {
    diags.push(Diag {
        level: Level::Warning,
        code,
        message,
    });
}

/// Runs every lint of §8 on the merged `root`. `overlays` are the (upgraded) overlay roots,
/// needed for W9.
pub fn lint(root: &Element, overlays: &[&Element], diags: &mut Vec<Diag>) {
    e1_type_unique(root, diags);
    w1_undeclared_profiles(root, diags);
    if !root
        .elements()
        .filter(|p| p.name == "preferences")
        .any(|p| p.elements().any(|c| c.name == "version"))
    {
        warn(
            diags,
            "W2",
            "no <version> in any <preferences>: kiwi-ng system build requires one".into(),
        );
    }
    root.walk(&mut |el| {
        if el.name == "type"
            && matches!(el.attr("image"), Some("docker" | "oci"))
            && el.attr("derived_from").is_some()
        {
            warn(
                diags,
                "W3",
                format!("{} keeps derived_from: built on an existing (stash) root, kiwi imports that container again", describe(el)),
            );
        }
    });
    w7_token_whitespace(root, diags);
    w8_schematron(root, diags);
    w9_shadowed(root, overlays, diags);
}

/// The selections kiwi can be run with: the default (`import="true"` profiles) and each
/// declared profile alone, each closed over `requires`.
fn selections(root: &Element) -> Vec<(String, BTreeSet<String>)> {
    let closures = profile_closures(root);
    let mut imports = BTreeSet::new();
    for ps in root.elements().filter(|e| e.name == "profiles") {
        for p in ps
            .elements()
            .filter(|e| e.name == "profile" && e.attr("import") == Some("true"))
        {
            if let Some(n) = p.attr("name") {
                imports.extend(closures.get(n).cloned().unwrap_or_default());
            }
        }
    }
    let mut out = vec![("the default selection".to_owned(), imports)];
    let mut names: Vec<_> = closures.into_iter().collect();
    names.sort();
    for (name, c) in names {
        out.push((format!("profile {name}"), c));
    }
    out
}

fn active(sel: &BTreeSet<String>, el: &Element) -> bool {
    match token_set(el.attr("profiles")) {
        None => true,
        Some(ps) => ps.iter().any(|p| sel.contains(p)),
    }
}

/// E1, kiwi's `check_image_type_unique`, arch-aware.
fn e1_type_unique(root: &Element, diags: &mut Vec<Diag>) {
    for (what, sel) in selections(root) {
        // image -> arch sets of the active sections holding such a type
        let mut seen: BTreeMap<&str, Vec<Option<BTreeSet<String>>>> = BTreeMap::new();
        let mut conflicts = BTreeSet::new();
        for p in root
            .elements()
            .filter(|e| e.name == "preferences" && active(&sel, e))
        {
            let arch = token_set(p.attr("arch"));
            for t in p.elements().filter(|e| e.name == "type") {
                let image = t.attr("image").unwrap_or("");
                let prev = seen.entry(image).or_default();
                if prev.iter().any(|a| match (a, &arch) {
                    (Some(x), Some(y)) => x.iter().any(|v| y.contains(v)),
                    _ => true,
                }) {
                    conflicts.insert(image);
                }
                prev.push(arch.clone());
            }
        }
        for image in conflicts {
            diags.push(Diag {
                level: Level::Error,
                code: "E1",
                message: format!(
                    "<type image=\"{image}\"> is not unique in {what}: kiwi fails with \"Conflicting image type setup\" (use --select-profiles/--select-type, or km:action=\"remove\")"
                ),
            });
        }
    }
}

fn declared_profiles(root: &Element) -> BTreeSet<String> {
    root.elements()
        .filter(|e| e.name == "profiles")
        .flat_map(|ps| {
            ps.elements()
                .filter_map(|p| p.attr("name").map(str::to_owned))
        })
        .collect()
}

fn w1_undeclared_profiles(root: &Element, diags: &mut Vec<Diag>) {
    let declared = declared_profiles(root);
    let mut reported = BTreeSet::new();
    for el in root.elements() {
        for tok in token_set(el.attr("profiles")).unwrap_or_default() {
            if !declared.contains(&tok) && reported.insert(tok.clone()) {
                warn(
                    diags,
                    "W1",
                    format!(
                        "{} names undeclared profile {tok:?}: such a section is never active",
                        describe(el)
                    ),
                );
            }
        }
    }
}

fn w7_token_whitespace(root: &Element, diags: &mut Vec<Diag>) {
    root.walk(&mut |el| {
        for attr in ["profiles", "arch"] {
            if let Some(v) = el.attr(attr)
                && v.split(',').any(|t| t.trim() != t)
            {
                warn(
                    diags,
                    "W7",
                    format!(
                        "{}: a {attr} token has surrounding whitespace, which kiwi never matches",
                        describe(el)
                    ),
                );
            }
        }
    });
}

/// The subset of kiwi's Schematron rules a merge typically breaks (tables in `schematron`).
fn w8_schematron(root: &Element, diags: &mut Vec<Diag>) {
    fn allowed(table: &[(&str, &str)], attr: &str, value: &str) -> Option<bool> {
        table
            .iter()
            .find(|(a, _)| *a == attr)
            .map(|(_, types)| types.contains(value))
    }
    root.walk(&mut |el| match el.name.as_str() {
        "type" => {
            let image = el.attr("image").unwrap_or("");
            for a in &el.attrs {
                if allowed(TYPE_ATTR_IMAGES, &a.name, image) == Some(false) {
                    warn(diags, "W8", format!("{}: attribute {} is not allowed for image=\"{image}\"", describe(el), a.name));
                }
                if BTRFS_ATTRS.contains(&a.name.as_str())
                    && el.attr("filesystem").is_some_and(|f| f != "btrfs")
                {
                    warn(diags, "W8", format!("{}: {} needs filesystem=\"btrfs\"", describe(el), a.name));
                }
            }
            if image == "oem"
                && el.attr("derived_from").is_some()
                && !el.attr("format").is_some_and(|f| f.starts_with("oci:") || f.starts_with("docker:"))
            {
                warn(diags, "W8", format!("{}: derived_from on oem needs format=\"oci:…\" or \"docker:…\"", describe(el)));
            }
            for b in el.elements().filter(|b| b.name == "bootloader") {
                let name = b.attr("name").unwrap_or("");
                for a in &b.attrs {
                    if allowed(BOOTLOADER_ATTR_IMAGES, &a.name, image) == Some(false) {
                        warn(diags, "W8", format!("{} in image=\"{image}\": attribute {} is not allowed for this image type", describe(b), a.name));
                    }
                    if allowed(BOOTLOADER_ATTR_NAMES, &a.name, name) == Some(false) {
                        warn(diags, "W8", format!("{}: attribute {} is not allowed for bootloader {name:?}", describe(b), a.name));
                    }
                }
            }
        }
        "packages" => {
            let ptype = el.attr("type").unwrap_or("");
            if ptype != "bootstrap" && el.elements().any(|c| c.name == "collectionModule") {
                warn(diags, "W8", format!("{}: <collectionModule> is only allowed in bootstrap packages", describe(el)));
            }
            if el.attr("bootstrap_package").is_some() && package_manager(root).is_some_and(|pm| pm != "apt") {
                warn(diags, "W8", format!("{}: bootstrap_package is only allowed with the apt package manager", describe(el)));
            }
        }
        "repository" => {
            let rtype = el.attr("type").unwrap_or("");
            for a in &el.attrs {
                if allowed(REPO_ATTR_TYPES, &a.name, rtype) == Some(false) {
                    warn(diags, "W8", format!("{}: attribute {} is not allowed for repository type {rtype:?}", describe(el), a.name));
                }
            }
        }
        _ => {}
    });
}

/// The first `<packagemanager>` in document order (kiwi is first-wins).
fn package_manager(root: &Element) -> Option<String> {
    root.elements()
        .filter(|p| p.name == "preferences")
        .flat_map(Element::elements)
        .find(|c| c.name == "packagemanager")
        .map(|c| c.text().trim().to_owned())
}

/// W9: a preferences scalar an overlay sets is shadowed by an earlier co-active section of
/// another scope (kiwi reads the first occurrence).
fn w9_shadowed(root: &Element, overlays: &[&Element], diags: &mut Vec<Diag>) {
    let closures = profile_closures(root);
    let sections: Vec<&Element> = root
        .elements()
        .filter(|e| e.name == "preferences")
        .collect();
    let mut reported = BTreeSet::new();
    for o in overlays {
        for op in o.elements().filter(|e| e.name == "preferences") {
            let oscope = scope(op);
            for c in op
                .elements()
                .filter(|c| PREF_SCALARS.contains(&c.name.as_str()))
            {
                if c.km_attr("action") == Some("remove") {
                    continue;
                }
                let first = sections.iter().find(|s| {
                    co_active(&oscope, &scope(s), &closures)
                        && s.elements().any(|x| x.name == c.name)
                });
                if let Some(s) = first
                    && scope(s) != oscope
                    && reported.insert((c.name.clone(), describe(op)))
                {
                    warn(
                        diags,
                        "W9",
                        format!(
                            "<{}> of overlay {} is shadowed by the earlier co-active {} (kiwi reads the first)",
                            c.name,
                            describe(op),
                            describe(s)
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;
    use crate::kiwi::xml::parse;

    const PROFILES: &str = r#"<profiles><profile name="A" description="a" import="true"/><profile name="B" description="b"><requires profile="A"/></profile><profile name="C" description="c"/></profiles>"#;

    #[test]
    fn e1_follows_selections_and_arch() -> Result<()> {
        // (body, expected E1 messages' selection names)
        let cases: &[(&str, &[&str])] = &[
            (
                "<preferences><type image=\"oem\"/></preferences><preferences><type image=\"oem\"/></preferences>",
                &[
                    "the default selection",
                    "profile A",
                    "profile B",
                    "profile C",
                ],
            ),
            (
                "<preferences profiles=\"A\"><type image=\"oem\"/></preferences><preferences profiles=\"C\"><type image=\"oem\"/></preferences>",
                &[],
            ),
            // B requires A, so B sees both
            (
                "<preferences profiles=\"A\"><type image=\"oem\"/></preferences><preferences profiles=\"B\"><type image=\"oem\"/></preferences>",
                &["profile B"],
            ),
            // default selection is import="true" A
            (
                "<preferences><type image=\"iso\"/></preferences><preferences profiles=\"A\"><type image=\"iso\"/></preferences>",
                &["the default selection", "profile A", "profile B"],
            ),
            (
                "<preferences arch=\"x86_64\"><type image=\"oem\"/></preferences><preferences arch=\"aarch64,s390x\"><type image=\"oem\"/></preferences>",
                &[],
            ),
            (
                "<preferences arch=\"x86_64\"><type image=\"oem\"/></preferences><preferences><type image=\"oem\"/></preferences>",
                &[
                    "the default selection",
                    "profile A",
                    "profile B",
                    "profile C",
                ],
            ),
            (
                "<preferences><type image=\"oem\"/><type image=\"iso\"/></preferences>",
                &[],
            ),
        ];
        for (body, want) in cases {
            let doc = parse(format!("<image>{PROFILES}{body}</image>").as_bytes(), "t")?;
            let mut diags = Vec::new();
            e1_type_unique(&doc.root, &mut diags);
            let got: Vec<String> = diags
                .iter()
                .map(|d| {
                    d.message
                        .split(" is not unique in ")
                        .nth(1)
                        .unwrap_or("")
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect();
            assert_eq!(got, *want, "{body}");
            assert!(
                diags
                    .iter()
                    .all(|d| d.level == Level::Error && d.code == "E1")
            );
        }
        Ok(())
    }

    #[test]
    fn warnings() -> Result<()> {
        let cases: &[(&str, &[&str])] = &[
            ("<preferences><version>1</version></preferences>", &[]),
            ("<preferences/>", &["W2"]),
            (
                "<preferences><version>1</version></preferences><packages type=\"image\" profiles=\"A,Z\"/>",
                &["W1"],
            ),
            (
                "<preferences><version>1</version></preferences><packages type=\"image\" profiles=\"A, C\"/>",
                &["W1", "W7"],
            ),
            (
                "<preferences><version>1</version><type image=\"oci\" derived_from=\"x\"/></preferences>",
                &["W3"],
            ),
            (
                "<preferences><version>1</version><type image=\"oem\" derived_from=\"x\" format=\"qcow2\"/></preferences>",
                &["W8"],
            ),
            (
                "<preferences><version>1</version><type image=\"oem\" derived_from=\"x\" format=\"oci:qcow2\"/></preferences>",
                &[],
            ),
            (
                "<preferences><version>1</version><type image=\"iso\" filesystem=\"xfs\" btrfs_quota_groups=\"true\"/></preferences>",
                &["W8", "W8"],
            ),
            (
                "<preferences><version>1</version><type image=\"oem\"><bootloader name=\"systemd_boot\" output_console=\"serial\"/></type></preferences>",
                &["W8"],
            ),
            (
                "<preferences><version>1</version></preferences><repository type=\"rpm-md\" architectures=\"amd64\"><source path=\"x\"/></repository>",
                &["W8"],
            ),
        ];
        for (body, want) in cases {
            let doc = parse(format!("<image>{PROFILES}{body}</image>").as_bytes(), "t")?;
            let mut diags = Vec::new();
            lint(&doc.root, &[], &mut diags);
            let got: Vec<&str> = diags.iter().map(|d| d.code).collect();
            assert_eq!(got, *want, "{body}: {diags:?}");
        }
        Ok(())
    }
}
