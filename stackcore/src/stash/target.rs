//! What `stash --root DIR` stashes as: the root checked, the name and tag resolved.
//!
//! The name is `--container-name`, else the `<image name=...>` of `ROOT/image/config.xml`
//! (read as the tree is: nothing below the root through a symlink); the author comes from the
//! same description. Every refusal is a usage error naming the flag or file it came from.

use std::path::{Path, PathBuf};

use super::StashOptions;
use crate::imageref::{MAX_NAME, valid_name, valid_tag};
use crate::layer::Compression;
use crate::oci::Store;
use crate::oci::types::Descriptor;
use crate::registry::RegistryRef;
use crate::{Error, Result};

/// The most of `image/config.xml` that is read.
const MAX_DESCRIPTION: u64 = 16 << 20;

/// A root and the `NAME:TAG` it is stashed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The root tree.
    pub root: PathBuf,
    /// Stash name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// The description's author, for the image's maintainer label.
    pub author: Option<String>,
}

impl Target {
    /// Checks `root` and resolves the name (`container_name`, else the root's description)
    /// and `tag`.
    pub fn resolve(root: &Path, container_name: Option<&str>, tag: &str) -> Result<Self> {
        check_root(root)?;
        let desc_path = root.join("image/config.xml");
        let facts =
            match crate::tree::read_beneath(root, &["image", "config.xml"], MAX_DESCRIPTION)? {
                Some(xml) => Some(crate::description::facts(
                    &xml,
                    &desc_path.display().to_string(),
                )?),
                None => None,
            };
        let name = match (container_name, &facts) {
            (Some(n), _) => n.to_owned(),
            (None, Some(f)) => f.name.clone().ok_or_else(|| {
                Error::Usage(format!(
                    "{}: no <image name=...>; give --container-name NAME",
                    desc_path.display()
                ))
            })?,
            (None, None) => {
                return Err(Error::Usage(format!(
                    "{} has no image/config.xml to take the stash name from; give --container-name NAME",
                    root.display()
                )));
            }
        };
        let whence = if container_name.is_some() {
            "--container-name".to_owned()
        } else {
            desc_path.display().to_string()
        };
        check_name_and_tag(&name, &whence, tag)?;
        Ok(Self {
            root: root.to_path_buf(),
            name,
            tag: tag.to_owned(),
            author: facts.and_then(|f| f.author),
        })
    }

    /// The options that stash this target now (or at `SOURCE_DATE_EPOCH`).
    pub fn options(self, compression: Compression, threads: usize, checksum: bool) -> StashOptions {
        StashOptions {
            root: self.root,
            name: self.name,
            tag: self.tag,
            author: self.author,
            compression,
            threads,
            checksum,
            created: crate::timefmt::now_or_source_date_epoch(),
        }
    }

    /// `NAME:TAG`.
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// Whether the store lacks `NAME:TAG` while the original plugin's archives under
    /// `legacy_home` have it: the stash then starts afresh and the old one stays apart.
    pub fn legacy_stays_apart(&self, store: &Store, legacy_home: &Path) -> Result<bool> {
        if store.resolve(&self.full_name())?.is_some() {
            return Ok(false);
        }
        match crate::legacy::find(legacy_home, &self.name, &self.tag) {
            Ok(found) => Ok(found.is_some()),
            // This only decides whether to print a hint. An archive that cannot be read is
            // reported by `stash --list` and refused by `--import-legacy`; it must not stop
            // a stash that never reads it.
            Err(e) => {
                tracing::debug!(error = %e, "the original plugin's archive is unreadable: no hint");
                Ok(false)
            }
        }
    }
}

/// The existing stash `--container-name NAME --tag TAG` in the store at `store_dir`, for
/// `--push` without `--root`: the store and the stash's manifest descriptor.
pub fn existing(
    store_dir: &Path,
    name: Option<&str>,
    tag: &str,
) -> anyhow::Result<(Store, Descriptor)> {
    use anyhow::Context as _;
    let name = name.ok_or_else(|| {
        Error::Usage(
            "--push without --root pushes an existing stash: name it with --container-name \
             NAME [--tag TAG]"
                .into(),
        )
    })?;
    let store =
        Store::open(store_dir).with_context(|| format!("opening store {}", store_dir.display()))?;
    let desc = store.resolve(&format!("{name}:{tag}"))?.ok_or_else(|| {
        Error::Other(format!(
            "no stash {name}:{tag} in {} (stash --list shows what is there)",
            store.root().display()
        ))
    })?;
    Ok((store, desc))
}

/// `--push DEST`: a `docker://HOST[:PORT]/REPO[:TAG]` ref, nothing else.
pub fn push_dest(dest: &str) -> Result<RegistryRef> {
    if dest.starts_with("docker://") {
        RegistryRef::parse(dest)
    } else {
        Err(Error::Usage(format!(
            "--push {dest:?}: expected docker://HOST[:PORT]/REPO[:TAG]"
        )))
    }
}

/// A symlink to a directory is accepted as the root (as for `--store`); nothing below the
/// root is followed.
fn check_root(root: &Path) -> Result<()> {
    let meta = std::fs::metadata(root).map_err(|e| {
        let link = std::fs::read_link(root)
            .map(|t| format!(" (a symlink to {})", t.display()))
            .unwrap_or_default();
        Error::Usage(format!("--root {}{link}: {e}", root.display()))
    })?;
    if !meta.is_dir() {
        let what = std::fs::read_link(root).map_or_else(
            |_| "not a directory".to_owned(),
            |t| format!("a symlink to {}, which is not a directory", t.display()),
        );
        return Err(Error::Usage(format!("--root {}: {what}", root.display())));
    }
    if let Err(e) = std::fs::read_dir(root) {
        return Err(Error::Usage(format!(
            "--root {}: cannot read the directory: {e} (stash runs as any user, but needs to \
             read the whole tree)",
            root.display()
        )));
    }
    Ok(())
}

/// Refuses a name or tag the store cannot hold; `whence` says where the name came from.
fn check_name_and_tag(name: &str, whence: &str, tag: &str) -> Result<()> {
    if !valid_name(name) {
        return Err(Error::Usage(format!(
            "name {name:?} (from {whence}) cannot be used as a stash name: it must match \
             ^[0-9a-zA-Z][0-9a-zA-Z-]*[0-9a-zA-Z]$ (letters, digits and dashes, starting and \
             ending with a letter or digit) and be at most {MAX_NAME} bytes long; give another \
             with --container-name"
        )));
    }
    if !valid_tag(tag) {
        return Err(Error::Usage(format!(
            "tag {tag:?}: must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a case expects: the name and author, or a usage error containing these words.
    enum Want {
        Ok(&'static str, Option<&'static str>),
        Usage(&'static [&'static str]),
    }

    const DESC: &str = r#"<?xml version="1.0"?>
<image schemaversion="7.4" name="from-desc"><description type="system">
<author>A. Uthor</author></description></image>"#;

    #[test]
    fn resolve_name_tag_and_author() -> Result<()> {
        // (case, config.xml, --container-name, --tag, want)
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a str, Want);
        let cases: &[Case<'_>] = &[
            (
                "name and author from the description",
                Some(DESC),
                None,
                "latest",
                Want::Ok("from-desc", Some("A. Uthor")),
            ),
            (
                "--container-name wins over the description",
                Some(DESC),
                Some("given"),
                "v1",
                Want::Ok("given", Some("A. Uthor")),
            ),
            (
                "--container-name without a description",
                None,
                Some("given"),
                "v1",
                Want::Ok("given", None),
            ),
            (
                "no description, no name",
                None,
                None,
                "latest",
                Want::Usage(&["has no image/config.xml", "--container-name NAME"]),
            ),
            (
                "a description without a name",
                Some("<image/>"),
                None,
                "latest",
                Want::Usage(&["no <image name=...>", "config.xml"]),
            ),
            (
                "a bad name from the flag names the flag",
                None,
                Some("-bad"),
                "latest",
                Want::Usage(&["name \"-bad\" (from --container-name)", "at most 128 bytes"]),
            ),
            (
                "a bad name from the description names the file",
                Some(r#"<image name="a_b"></image>"#),
                None,
                "latest",
                Want::Usage(&["name \"a_b\" (from ", "image/config.xml)"]),
            ),
            (
                "a bad tag",
                None,
                Some("ok"),
                ".dot",
                Want::Usage(&["tag \".dot\": must match"]),
            ),
            (
                "a tag too long",
                None,
                Some("ok"),
                &"t".repeat(129),
                Want::Usage(&["tag \"ttt"]),
            ),
        ];
        for (case, desc, name, tag, want) in cases {
            let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
            if let Some(xml) = desc {
                std::fs::create_dir(dir.path().join("image")).map_err(|e| Error::io("image", e))?;
                std::fs::write(dir.path().join("image/config.xml"), xml)
                    .map_err(|e| Error::io("config.xml", e))?;
            }
            let got = Target::resolve(dir.path(), *name, tag);
            match (want, got) {
                (Want::Ok(n, a), Ok(t)) => {
                    assert_eq!(t.name, *n, "{case}");
                    assert_eq!(t.tag, *tag, "{case}");
                    assert_eq!(t.author.as_deref(), *a, "{case}");
                    assert_eq!(t.root, dir.path(), "{case}");
                    assert_eq!(t.full_name(), format!("{n}:{tag}"), "{case}");
                }
                (Want::Usage(words), Err(Error::Usage(msg))) => {
                    for w in *words {
                        assert!(msg.contains(w), "{case}: {msg:?} lacks {w:?}");
                    }
                }
                (_, got) => panic!("{case}: unexpected {got:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn root_must_be_a_readable_directory() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").map_err(|e| Error::io("file", e))?;
        let real = dir.path().join("real");
        std::fs::create_dir(&real).map_err(|e| Error::io("real", e))?;
        let to_dir = dir.path().join("to-dir");
        let to_file = dir.path().join("to-file");
        let dangling = dir.path().join("dangling");
        for (link, target) in [(&to_dir, &real), (&to_file, &file)] {
            std::os::unix::fs::symlink(target, link).map_err(|e| Error::io("symlink", e))?;
        }
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling)
            .map_err(|e| Error::io("symlink", e))?;
        // (root, None when accepted, else words of the usage error)
        let cases: &[(&Path, Option<&[&str]>)] = &[
            (&real, None),
            (&to_dir, None), // a symlink to a directory is accepted, as for --store
            (&file, Some(&["not a directory"])),
            (
                &to_file,
                Some(&["a symlink to", "which is not a directory"]),
            ),
            (&dangling, Some(&["(a symlink to", "nowhere)"])),
            (&dir.path().join("missing"), Some(&["--root", "missing"])),
        ];
        for (root, want) in cases {
            match (want, Target::resolve(root, Some("nn"), "latest")) {
                (None, Ok(t)) => assert_eq!(t.name, "nn"),
                (Some(words), Err(Error::Usage(msg))) => {
                    for w in *words {
                        assert!(msg.contains(w), "{}: {msg:?} lacks {w:?}", root.display());
                    }
                }
                (_, got) => panic!("{}: unexpected {got:?}", root.display()),
            }
        }
        Ok(())
    }

    #[test]
    fn push_dest_takes_docker_refs_only() {
        assert!(push_dest("docker://127.0.0.1:5000/os/base:v1").is_ok());
        for bad in ["oci:/s:a:b", "127.0.0.1:5000/os/base", "base:v1", ""] {
            assert!(
                matches!(push_dest(bad), Err(Error::Usage(m)) if m.contains("expected docker://")),
                "{bad}"
            );
        }
    }
}
