//! Materialising a stash base for one arch, profile selection and type.
//!
//! A stash description keeps every profile of the original, but the root was built for one
//! selection. Reducing the base to that selection first lets an overlay target it without
//! colliding with the other profiles' types (E1). Document order is kept, so kiwi's
//! first-wins outcome for that selection does not change.

use std::collections::{BTreeSet, HashMap};

use super::merge::closure;
use super::table::token_set;
use super::xml::{Element, Node};
use crate::{Error, Result};

/// What to select; `None` leaves that dimension alone.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Host architecture (`uname -m`).
    pub arch: Option<String>,
    /// Profile names, as given to kiwi's `--profile`.
    pub profiles: Option<Vec<String>>,
    /// The image type to keep (kiwi's `--type`).
    pub image_type: Option<String>,
}

impl Selection {
    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.arch.is_none() && self.profiles.is_none() && self.image_type.is_none()
    }
}

/// Applies `sel` to the base `root` in the order arch, profiles, type.
pub fn materialise(root: &mut Element, sel: &Selection) -> Result<()> {
    if let Some(arch) = &sel.arch {
        select_arch(root, arch);
    }
    if let Some(profiles) = &sel.profiles {
        select_profiles(root, profiles)?;
    }
    if let Some(t) = &sel.image_type {
        select_type(root, t)?;
    }
    Ok(())
}

/// Drops the element children of `el` for which `drop` says so, with their leading comments.
fn retain_elements(el: &mut Element, drop: &mut dyn FnMut(&mut Element) -> bool) {
    let mut out: Vec<Node> = Vec::with_capacity(el.children.len());
    let mut pending: Vec<Node> = Vec::new();
    for n in std::mem::take(&mut el.children) {
        match n {
            Node::Comment(_) => pending.push(n),
            Node::Element(mut e) => {
                if drop(&mut e) {
                    pending.clear();
                } else {
                    out.append(&mut pending);
                    out.push(Node::Element(e));
                }
            }
            other => {
                out.append(&mut pending);
                out.push(other);
            }
        }
    }
    out.append(&mut pending);
    el.children = out;
}

fn select_arch(el: &mut Element, arch: &str) {
    retain_elements(el, &mut |c| {
        if c.name != "machine"
            && let Some(set) = token_set(c.attr("arch"))
        {
            if !set.contains(arch) {
                return true;
            }
            c.remove_attr("arch");
        }
        select_arch(c, arch);
        false
    });
}

fn select_profiles(root: &mut Element, wanted: &[String]) -> Result<()> {
    let mut requires: HashMap<String, Vec<String>> = HashMap::new();
    for ps in root.elements().filter(|e| e.name == "profiles") {
        for p in ps.elements().filter(|e| e.name == "profile") {
            if let Some(n) = p.attr("name") {
                let reqs = p
                    .elements()
                    .filter(|r| r.name == "requires")
                    .filter_map(|r| r.attr("profile").map(str::to_owned));
                requires.entry(n.to_owned()).or_default().extend(reqs);
            }
        }
    }
    for w in wanted {
        if !requires.contains_key(w) {
            return Err(Error::Usage(format!(
                "--select-profiles: profile {w:?} is not declared in BASE"
            )));
        }
    }
    let active: BTreeSet<String> = closure(&requires, wanted.iter().map(String::as_str));
    retain_elements(root, &mut |c| {
        if c.name == "profiles" {
            return true;
        }
        if let Some(set) = token_set(c.attr("profiles")) {
            if !set.iter().any(|p| active.contains(p)) {
                return true;
            }
            c.remove_attr("profiles");
        }
        false
    });
    Ok(())
}

fn select_type(root: &mut Element, image: &str) -> Result<()> {
    let mut kept = 0;
    for p in root.elements_mut().filter(|e| e.name == "preferences") {
        retain_elements(p, &mut |t| {
            if t.name != "type" {
                return false;
            }
            if t.attr("image") == Some(image) {
                kept += 1;
                t.set_attr("primary", "true");
                false
            } else {
                true
            }
        });
    }
    if kept == 0 {
        return Err(Error::Usage(format!(
            "--select-type: BASE has no <type image=\"{image}\"> left to select"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kiwi::xml::{parse, serialize};

    #[test]
    fn selects() -> Result<()> {
        let base = r#"<image><profiles><profile name="A" description="a"><requires profile="B"/></profile><profile name="B" description="b"/><profile name="C" description="c"/></profiles><preferences><version>1</version></preferences><preferences profiles="A"><type image="oem"/><type image="iso" primary="true"/></preferences><preferences profiles="B" arch="x86_64,aarch64"><type image="pxe"/></preferences><preferences profiles="C"><type image="oem"/></preferences><preferences arch="s390x"><!-- z --><type image="oem"/></preferences><packages type="image"><package name="x" arch="aarch64"/><package name="y" arch="x86_64"/></packages><machine arch="s390x"/></image>"#;
        let cases: &[(Selection, &str)] = &[
            (
                Selection {
                    arch: Some("x86_64".into()),
                    profiles: Some(vec!["A".into()]),
                    image_type: Some("oem".into()),
                },
                r#"<image><preferences><version>1</version></preferences><preferences><type image="oem" primary="true"/></preferences><preferences/><packages type="image"><package name="y"/></packages><machine arch="s390x"/></image>"#,
            ),
            (
                Selection {
                    arch: Some("s390x".into()),
                    ..Selection::default()
                },
                r#"<image><profiles><profile name="A" description="a"><requires profile="B"/></profile><profile name="B" description="b"/><profile name="C" description="c"/></profiles><preferences><version>1</version></preferences><preferences profiles="A"><type image="oem"/><type image="iso" primary="true"/></preferences><preferences profiles="C"><type image="oem"/></preferences><preferences><!-- z --><type image="oem"/></preferences><packages type="image"/><machine arch="s390x"/></image>"#,
            ),
        ];
        for (sel, want) in cases {
            let mut doc = parse(base.as_bytes(), "t")?;
            materialise(&mut doc.root, sel)?;
            assert_eq!(
                serialize(&doc),
                serialize(&parse(want.as_bytes(), "w")?),
                "{sel:?}"
            );
        }
        let mut doc = parse(base.as_bytes(), "t")?;
        assert!(
            materialise(
                &mut doc.root,
                &Selection {
                    profiles: Some(vec!["Z".into()]),
                    ..Selection::default()
                }
            )
            .is_err()
        );
        let mut doc = parse(base.as_bytes(), "t")?;
        assert!(
            materialise(
                &mut doc.root,
                &Selection {
                    image_type: Some("kis".into()),
                    ..Selection::default()
                }
            )
            .is_err()
        );
        Ok(())
    }
}
