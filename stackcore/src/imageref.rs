//! Image references: the grammar every tool reads a ref with, and the name and tag rules.
//!
//! | form | meaning |
//! |---|---|
//! | `NAME[:TAG]` | a stash in the default store (or `--store`); `HOST[:PORT]/REPO:TAG` for a pulled image |
//! | `oci:DIR[:NAME[:TAG]]` | an OCI image layout directory |
//! | `oci-archive:FILE[:NAME[:TAG]]` | a tar of an OCI image layout (the original plugin's stashes) |
//! | `docker-archive:FILE[:NAME[:TAG]]` | a `docker save` / `podman save` tar |
//! | `docker://HOST[:PORT]/REPO[:TAG\|@DIGEST]` | an image in a registry |
//!
//! Parsing is pure: it looks at no file and no store. Opening a ref is
//! [`crate::open::open_ref`].

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The longest stash name: a name becomes a file name (its lock), and registries cap a
/// repository path component well below 255 bytes; 128 matches the tag limit.
pub const MAX_NAME: usize = 128;

/// The container-name rule of the original plugin, plus a length limit ([`MAX_NAME`]).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// The tag rule (OCI distribution): `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The transports a ref can name, for messages.
pub const TRANSPORTS: &str =
    "NAME[:TAG], oci:DIR, oci-archive:FILE, docker-archive:FILE, docker://HOST/REPO";

/// Transports other container tools know that we do not read: a ref starting with one of
/// these names and a `:` means that transport, never a stash of that name.
const UNSUPPORTED: &[&str] = &[
    "containers-storage",
    "docker-daemon",
    "dir",
    "ostree",
    "sif",
    "tarball",
    "docker",
];

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `NAME[:TAG]` in the store.
    Stash {
        /// Name (may contain `/` for pulled images, `HOST/REPO`).
        name: String,
        /// Tag (`latest` when not given).
        tag: String,
    },
    /// `oci:DIR[:REF]`.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The ref name inside it, if given.
        name: Option<String>,
    },
    /// `oci-archive:FILE[:REF]`.
    Archive {
        /// The archive.
        file: PathBuf,
        /// The ref name inside it, if given.
        name: Option<String>,
    },
    /// `docker-archive:FILE[:NAME[:TAG]]`.
    DockerArchive {
        /// The archive.
        file: PathBuf,
        /// One of its `RepoTags`, if given.
        name: Option<String>,
    },
    /// `docker://HOST/REPO[:TAG|@DIGEST]`.
    Registry(String),
}

impl ImageRef {
    /// Parses a reference.
    pub fn parse(s: &str) -> Result<ImageRef> {
        let usage = |msg: &str| Error::Usage(format!("image ref {s:?}: {msg}"));
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, name) = split_dir(rest);
            if dir.is_empty() {
                return Err(usage("no directory after oci:"));
            }
            return Ok(ImageRef::Layout {
                dir: dir.into(),
                name,
            });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, name) = split_dir(rest);
            if file.is_empty() {
                return Err(usage("no file after oci-archive:"));
            }
            return Ok(ImageRef::Archive {
                file: file.into(),
                name,
            });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (file, name) = split_dir(rest);
            if file.is_empty() {
                return Err(usage("no file after docker-archive:"));
            }
            return Ok(ImageRef::DockerArchive {
                file: file.into(),
                name,
            });
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            if rest.is_empty() {
                return Err(usage("no registry after docker://"));
            }
            return Ok(ImageRef::Registry(rest.to_owned()));
        }
        if s.is_empty() {
            return Err(Error::Usage("empty image ref".into()));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(unknown(s, &format!("{scheme}://")));
        }
        if let Some((prefix, _)) = s.split_once(':')
            && UNSUPPORTED.contains(&prefix)
        {
            return Err(Error::Usage(format!(
                "image ref {s:?}: the transport {prefix}: is not supported (these are: {TRANSPORTS})"
            )));
        }
        let (name, tag) = split_tag(s);
        if name.is_empty() || tag.is_empty() {
            return Err(usage("expected NAME[:TAG]"));
        }
        // A `:` left in the name is a port (`HOST:PORT/REPO`) or not a ref at all.
        if let Some(colon) = name.find(':')
            && !is_port(&name[colon + 1..])
        {
            return Err(unknown(s, &format!("{}:", &name[..colon])));
        }
        Ok(ImageRef::Stash {
            name: name.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

/// `PORT/...` after a host's `:`.
fn is_port(rest: &str) -> bool {
    rest.split_once('/').is_some_and(|(port, repo)| {
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !repo.is_empty()
    })
}

fn unknown(s: &str, prefix: &str) -> Error {
    Error::Usage(format!(
        "image ref {s:?}: unknown transport {prefix} (these are: {TRANSPORTS})"
    ))
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_name = |f: &mut fmt::Formatter<'_>, name: &Option<String>| {
            name.as_ref().map_or(Ok(()), |n| write!(f, ":{n}"))
        };
        match self {
            ImageRef::Stash { name, tag } => write!(f, "{name}:{tag}"),
            ImageRef::Layout { dir, name } => {
                write!(f, "oci:{}", dir.display())?;
                with_name(f, name)
            }
            ImageRef::Archive { file, name } => {
                write!(f, "oci-archive:{}", file.display())?;
                with_name(f, name)
            }
            ImageRef::DockerArchive { file, name } => {
                write!(f, "docker-archive:{}", file.display())?;
                with_name(f, name)
            }
            ImageRef::Registry(r) => write!(f, "docker://{r}"),
        }
    }
}

/// `DIR[:REF]`: the directory ends at the first `:`, as skopeo and umoci read it.
fn split_dir(s: &str) -> (&str, Option<String>) {
    match s.split_once(':') {
        Some((d, r)) if !r.is_empty() => (d, Some(r.to_owned())),
        Some((d, _)) => (d, None),
        None => (s, None),
    }
}

/// `NAME[:TAG]`: the tag follows the last `:` that has no `/` after it (`HOST:PORT/REPO`
/// has no tag).
pub fn split_tag(s: &str) -> (&str, &str) {
    match s.rfind(':') {
        Some(i) if !s[i + 1..].contains('/') => (&s[..i], &s[i + 1..]),
        _ => (s, "latest"),
    }
}

/// Whether a SOURCE argument is a path rather than an image ref: it starts with `/`, `./`
/// or `../`, or names an existing path.
pub fn is_path_arg(s: &str) -> bool {
    s.starts_with('/')
        || s.starts_with("./")
        || s.starts_with("../")
        || s == "."
        || s == ".."
        || Path::new(s).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stash(name: &str, tag: &str) -> ImageRef {
        ImageRef::Stash {
            name: name.into(),
            tag: tag.into(),
        }
    }

    fn layout(dir: &str, name: Option<&str>) -> ImageRef {
        ImageRef::Layout {
            dir: dir.into(),
            name: name.map(Into::into),
        }
    }

    fn archive(file: &str, name: Option<&str>) -> ImageRef {
        ImageRef::Archive {
            file: file.into(),
            name: name.map(Into::into),
        }
    }

    fn docker_archive(file: &str, name: Option<&str>) -> ImageRef {
        ImageRef::DockerArchive {
            file: file.into(),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn parses_every_form() -> Result<()> {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let pulled_by_digest = format!("127.0.0.1:5000/ns/x@{digest}");
        let table: Vec<(&str, ImageRef, String)> = vec![
            ("base", stash("base", "latest"), "base:latest".into()),
            ("base:v1", stash("base", "v1"), "base:v1".into()),
            (
                "127.0.0.1:5000/ns/x:v1",
                stash("127.0.0.1:5000/ns/x", "v1"),
                "127.0.0.1:5000/ns/x:v1".into(),
            ),
            (
                "127.0.0.1:5000/ns/x",
                stash("127.0.0.1:5000/ns/x", "latest"),
                "127.0.0.1:5000/ns/x:latest".into(),
            ),
            (
                "docker.io/library/debian:12",
                stash("docker.io/library/debian", "12"),
                "docker.io/library/debian:12".into(),
            ),
            // What a pull by digest alone keeps: the name and tag join back to the ref name.
            (
                &pulled_by_digest,
                stash("127.0.0.1:5000/ns/x@sha256", &"ab".repeat(32)),
                pulled_by_digest.clone(),
            ),
            ("oci:/s", layout("/s", None), "oci:/s".into()),
            ("oci:/s:", layout("/s", None), "oci:/s".into()),
            (
                "oci:/s:base:v1",
                layout("/s", Some("base:v1")),
                "oci:/s:base:v1".into(),
            ),
            (
                "oci:rel/dir:x",
                layout("rel/dir", Some("x")),
                "oci:rel/dir:x".into(),
            ),
            (
                "oci-archive:a.tar",
                archive("a.tar", None),
                "oci-archive:a.tar".into(),
            ),
            (
                "oci-archive:/v/old/old.tar:old:1",
                archive("/v/old/old.tar", Some("old:1")),
                "oci-archive:/v/old/old.tar:old:1".into(),
            ),
            (
                "docker-archive:d.tar",
                docker_archive("d.tar", None),
                "docker-archive:d.tar".into(),
            ),
            (
                "docker-archive:/t/d.tar:localhost/app:v2",
                docker_archive("/t/d.tar", Some("localhost/app:v2")),
                "docker-archive:/t/d.tar:localhost/app:v2".into(),
            ),
            (
                "docker://h.io/ns/x:v1",
                ImageRef::Registry("h.io/ns/x:v1".into()),
                "docker://h.io/ns/x:v1".into(),
            ),
            (
                "docker://debian",
                ImageRef::Registry("debian".into()),
                "docker://debian".into(),
            ),
        ];
        for (input, want, shown) in table {
            let got = ImageRef::parse(input)?;
            assert_eq!(got, want, "{input}");
            assert_eq!(got.to_string(), shown, "{input}");
        }
        Ok(())
    }

    #[test]
    fn refuses_what_is_not_a_ref() {
        // input, a piece the one-line message must hold
        let table = [
            ("", "empty image ref"),
            ("oci:", "no directory after oci:"),
            ("oci::x", "no directory after oci:"),
            ("oci-archive:", "no file after oci-archive:"),
            ("docker-archive:", "no file after docker-archive:"),
            ("docker://", "no registry after docker://"),
            ("base:", "expected NAME[:TAG]"),
            (":v1", "expected NAME[:TAG]"),
            (
                "docker-daemon:busybox:latest",
                "transport docker-daemon: is not supported",
            ),
            (
                "docker-daemon:busybox",
                "transport docker-daemon: is not supported",
            ),
            (
                "containers-storage:localhost/x:v1",
                "transport containers-storage: is not supported",
            ),
            ("dir:/tmp/x", "transport dir: is not supported"),
            ("docker:x", "transport docker: is not supported"),
            ("foo:bar:baz", "unknown transport foo:"),
            ("http://h.io/x", "unknown transport http://"),
            ("oci-archiv:/f.tar:x", "unknown transport oci-archiv:"),
            ("h.io:port/x:v1", "unknown transport h.io:"),
            ("h.io:5000/:v1", "unknown transport h.io:"),
        ];
        for (input, want) in table {
            match ImageRef::parse(input) {
                Err(Error::Usage(m)) => {
                    assert!(m.contains(want), "{input:?}: {m}");
                    assert!(!m.contains('\n'), "{input:?}: {m}");
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
        // Every unknown-transport message names the transports that work.
        let Err(Error::Usage(m)) = ImageRef::parse("foo:bar:baz") else {
            panic!("foo:bar:baz was accepted");
        };
        assert!(m.contains(TRANSPORTS), "{m}");
    }

    #[test]
    fn name_and_tag_rules() {
        for good in ["ab", "a-b", "Base2", &"x".repeat(MAX_NAME)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "a",
            "-ab",
            "ab-",
            "a_b",
            "a.b",
            "a/b",
            "a:b",
            &"x".repeat(MAX_NAME + 1),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        for good in ["latest", "_x", "v1.2-rc_3", &"t".repeat(128)] {
            assert!(valid_tag(good), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a b", &"t".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn splits_tags_and_recognises_paths() {
        assert_eq!(split_tag("a:b"), ("a", "b"));
        assert_eq!(split_tag("a"), ("a", "latest"));
        assert_eq!(split_tag("h:5000/r"), ("h:5000/r", "latest"));
        assert_eq!(split_tag("h:5000/r:t"), ("h:5000/r", "t"));
        for p in ["/x", "./x", "../x", ".", ".."] {
            assert!(is_path_arg(p), "{p}");
        }
        assert!(!is_path_arg("surely-no-such-path-here:v1"));
    }
}
