//! Schema versions and the 7.4 → 8.5 upgrade: the seven mechanical rules of
//! kiwi's `convert*.xsl` chain, each applied only when the upgrade crosses its version.

use std::fmt;

use super::xml::{Element, Node};
use crate::{Error, Result};

/// A schema version, compared as an integer pair (so 7.10 > 7.9, unlike kiwi's XSLT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl std::str::FromStr for Version {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Usage(format!(
                "schema version {s:?} is not of the form MAJOR.MINOR"
            ))
        };
        let (a, b) = s.trim().split_once('.').ok_or_else(bad)?;
        Ok(Version(
            a.parse().map_err(|_| bad())?,
            b.parse().map_err(|_| bad())?,
        ))
    }
}

/// The oldest version kiwi 10/11 (and kiwimerge) accept.
pub const MIN: Version = Version(7, 4);
/// The newest version kiwimerge knows how to upgrade to.
pub const MAX_KNOWN: Version = Version(8, 5);

/// Upgrades the tree under `root` from `from` to `to`, applying each rule whose target
/// version `v` satisfies `from < v <= to`.
pub fn upgrade(root: &mut Element, from: Version, to: Version) {
    let crosses = |v: Version| from < v && v <= to;
    root.walk_mut(&mut |el| {
        if el.ns.is_some() {
            return;
        }
        match el.name.as_str() {
            "containerconfig" if crosses(Version(7, 5)) => {
                if let Some(tags) = el.attr("additionaltags").map(str::to_owned) {
                    el.remove_attr("additionaltags");
                    el.set_attr("additionalnames", &format!(":{}", tags.replace(',', ",:")));
                }
            }
            "packagemanager" if crosses(Version(7, 6)) && el.text() == "dnf" => {
                el.children = vec![Node::Text("dnf4".to_owned())];
            }
            "repository" => {
                if crosses(Version(8, 1)) && el.attr("type") == Some("rpm-dir") {
                    el.remove_attr("type");
                }
                if crosses(Version(8, 2)) {
                    el.remove_attr("use_for_bootstrap");
                }
            }
            "type" => {
                if crosses(Version(8, 3))
                    && let Some(v) = el.attr("btrfs_root_is_snapshot").map(str::to_owned)
                {
                    el.remove_attr("btrfs_root_is_snapshot");
                    el.set_attr("btrfs_root_is_snapper_snapshot", &v);
                }
                if crosses(Version(8, 5)) {
                    el.remove_attr("vga");
                }
            }
            "bootloader" if crosses(Version(8, 4)) => {
                if let Some(c) = el.attr("console").map(str::to_owned) {
                    el.remove_attr("console");
                    match c.split_once(' ') {
                        Some((out, inp)) => {
                            el.set_attr("output_console", out);
                            el.set_attr("input_console", inp);
                        }
                        None => el.set_attr("output_console", &c),
                    }
                }
            }
            _ => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kiwi::xml::{parse, serialize};

    #[test]
    fn rules_fire_only_when_crossed() -> Result<()> {
        let input = r#"<image><preferences><packagemanager>dnf</packagemanager><type image="oem" btrfs_root_is_snapshot="true" vga="1"><bootloader console="serial console"/><containerconfig name="c" additionaltags="a,b"/></type><type image="iso"><bootloader console="gfxterm"/></type></preferences><repository type="rpm-dir" use_for_bootstrap="true"/></image>"#;
        let cases: &[(Version, Version, &[&str], &[&str])] = &[
            (
                Version(7, 4),
                Version(8, 5),
                &[
                    "dnf4",
                    r#"additionalnames=":a,:b""#,
                    r#"<type image="oem" btrfs_root_is_snapper_snapshot="true">"#,
                    r#"output_console="serial" input_console="console""#,
                    r#"<bootloader output_console="gfxterm"/>"#,
                    "<repository/>",
                ],
                &["vga", "use_for_bootstrap", "additionaltags"],
            ),
            (
                Version(7, 5),
                Version(7, 6),
                &["dnf4", "additionaltags", "rpm-dir", "vga"],
                &["additionalnames"],
            ),
            (
                Version(8, 2),
                Version(8, 4),
                &[
                    "use_for_bootstrap",
                    "rpm-dir",
                    "vga",
                    "snapper",
                    "output_console",
                ],
                &[" console=\""],
            ),
            (
                Version(8, 5),
                Version(8, 5),
                &["btrfs_root_is_snapshot", "console=\"serial console\""],
                &["snapper"],
            ),
        ];
        for (from, to, has, lacks) in cases {
            let mut doc = parse(input.as_bytes(), "t")?;
            upgrade(&mut doc.root, *from, *to);
            let out = serialize(&doc);
            for h in *has {
                assert!(out.contains(h), "{from}->{to}: want {h} in {out}");
            }
            for l in *lacks {
                assert!(
                    !out.contains(l),
                    "{from}->{to}: {l} should be gone in {out}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn versions_parse_and_compare() -> Result<()> {
        assert!("7.10".parse::<Version>()? > "7.9".parse::<Version>()?);
        assert_eq!("8.5".parse::<Version>()?, MAX_KNOWN);
        for bad in ["8", "x.y", "8.5.1", ""] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        Ok(())
    }
}
