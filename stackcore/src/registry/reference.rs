//! `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`: registry image references.
//!
//! The grammar is the distribution project's `reference` package, less what we do not need:
//! a first component with a `.` or a `:`, or `localhost`, is the registry host; otherwise the
//! host is Docker Hub (`docker.io`) and a one-component repository gets `library/`, as every
//! docker-compatible client reads it.

use std::fmt;

use crate::digest::Digest;
use crate::imageref::valid_tag;
use crate::{Error, Result};

/// Docker Hub's name in refs and auth files.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API endpoint: `docker.io` itself serves no `/v2/`.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed registry image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `HOST[:PORT]` as written (`docker.io` when none was).
    pub host: String,
    /// The repository (`ns/x`).
    pub repo: String,
    /// The tag, if given.
    pub tag: Option<String>,
    /// The digest, if given (it wins over the tag when both are).
    pub digest: Option<Digest>,
}

impl RegistryRef {
    /// Parses `[docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]`.
    pub fn parse(s: &str) -> Result<RegistryRef> {
        let shown = if s.starts_with("docker://") {
            s.to_owned()
        } else {
            format!("docker://{s}")
        };
        let usage = |msg: &str| Error::Usage(format!("{shown}: {msg}"));
        let rest = s.strip_prefix("docker://").unwrap_or(s);
        if rest.is_empty() {
            return Err(usage("no registry or repository"));
        }
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|e| usage(&e.to_string()))?),
            ),
            None => (rest, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(usage(&format!(
                "tag {t:?} must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"
            )));
        }
        let (host, repo) = match name.split_once('/') {
            Some((h, r)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_owned(), r.to_owned())
            }
            Some(_) => (DOCKER_HUB.to_owned(), name.to_owned()),
            None => (DOCKER_HUB.to_owned(), format!("library/{name}")),
        };
        if !valid_host(&host) {
            return Err(usage(&format!("{host:?} is not a registry HOST[:PORT]")));
        }
        if !valid_repo(&repo) {
            return Err(usage(&format!(
                "repository {repo:?} must be lowercase components of letters, digits and \
                 single separators (. _ __ -), joined by /"
            )));
        }
        Ok(RegistryRef {
            host,
            repo,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// `NAME[:TAG]` under a registry URI, as `stackbuild --from-registry URI` takes it:
    /// `HOST[:PORT][/NAMESPACE]`, with or without `docker://`.
    pub fn under(uri: &str, name: &str) -> Result<RegistryRef> {
        let base = uri
            .strip_prefix("docker://")
            .unwrap_or(uri)
            .trim_end_matches('/');
        if base.is_empty() {
            return Err(Error::Usage(format!(
                "registry {uri:?}: expected HOST[:PORT][/NAMESPACE]"
            )));
        }
        if base.contains('@')
            || base
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':') && base.contains('/'))
        {
            return Err(Error::Usage(format!(
                "registry {uri:?}: expected HOST[:PORT][/NAMESPACE], without a tag or digest"
            )));
        }
        RegistryRef::parse(&format!("{base}/{name}"))
    }

    /// The host the API is reached at (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        if self.host == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.host
        }
    }

    /// The tag or digest a manifest request names (`latest` when neither was given).
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The name a pulled image is kept under in the store: `HOST/REPO:TAG`, or
    /// `HOST/REPO@DIGEST` when pulled by digest alone.
    pub fn ref_name(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{}/{}:{t}", self.host, self.repo),
            (None, Some(d)) => format!("{}/{}@{d}", self.host, self.repo),
            (None, None) => format!("{}/{}:latest", self.host, self.repo),
        }
    }

    /// `HOST/REPO`, which names where a blob came from.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.host, self.repo)
    }

    /// The same repository, with another tag and no digest.
    #[must_use]
    pub fn with_tag(&self, tag: &str) -> RegistryRef {
        RegistryRef {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker://{}/{}", self.host, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    let name_ok = if let Some(v6) = name.strip_prefix('[') {
        v6.strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    port_ok && name_ok
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255 bytes.
fn valid_repo(repo: &str) -> bool {
    repo.len() <= 255 && repo.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or any number of `-`.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_clients_accept() -> Result<()> {
        // input, host, repo, tag, has digest, ref name
        type Row<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, bool, &'a str);
        let table: &[Row] = &[
            (
                "docker://127.0.0.1:5000/ns/x:v1",
                "127.0.0.1:5000",
                "ns/x",
                Some("v1"),
                false,
                "127.0.0.1:5000/ns/x:v1",
            ),
            (
                "127.0.0.1:5000/ns/x",
                "127.0.0.1:5000",
                "ns/x",
                None,
                false,
                "127.0.0.1:5000/ns/x:latest",
            ),
            (
                "localhost/x",
                "localhost",
                "x",
                None,
                false,
                "localhost/x:latest",
            ),
            (
                "registry.example.org/a/b/c:1.0",
                "registry.example.org",
                "a/b/c",
                Some("1.0"),
                false,
                "registry.example.org/a/b/c:1.0",
            ),
            (
                "debian:12",
                "docker.io",
                "library/debian",
                Some("12"),
                false,
                "docker.io/library/debian:12",
            ),
            (
                "opensuse/leap",
                "docker.io",
                "opensuse/leap",
                None,
                false,
                "docker.io/opensuse/leap:latest",
            ),
            (
                "[::1]:5000/my_repo/a__b.c-d",
                "[::1]:5000",
                "my_repo/a__b.c-d",
                None,
                false,
                "[::1]:5000/my_repo/a__b.c-d:latest",
            ),
        ];
        for &(input, host, repo, tag, has_digest, name) in table {
            let r = RegistryRef::parse(input)?;
            assert_eq!(r.host, host, "{input}");
            assert_eq!(r.repo, repo, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.is_some(), has_digest, "{input}");
            assert_eq!(r.ref_name(), name, "{input}");
        }
        let d = "sha256:".to_owned() + &"ab".repeat(32);
        let by_digest = RegistryRef::parse(&format!("h.io:1/x@{d}"))?;
        assert_eq!(by_digest.reference(), d);
        assert_eq!(by_digest.ref_name(), format!("h.io:1/x@{d}"));
        assert_eq!(by_digest.to_string(), format!("docker://h.io:1/x@{d}"));
        let both = RegistryRef::parse(&format!("h.io/x:t@{d}"))?;
        assert_eq!(both.reference(), d);
        assert_eq!(both.ref_name(), "h.io/x:t");
        assert_eq!(RegistryRef::parse("debian")?.api_host(), DOCKER_HUB_API);
        Ok(())
    }

    #[test]
    fn names_under_a_registry_uri() -> Result<()> {
        let table = [
            (
                "127.0.0.1:5000/builds",
                "base",
                "docker://127.0.0.1:5000/builds/base",
            ),
            (
                "docker://127.0.0.1:5000/builds/",
                "base:v1",
                "docker://127.0.0.1:5000/builds/base:v1",
            ),
            (
                "registry.example.org",
                "os/base:2",
                "docker://registry.example.org/os/base:2",
            ),
            ("localhost:5000", "x", "docker://localhost:5000/x"),
        ];
        for (uri, name, want) in table {
            assert_eq!(
                RegistryRef::under(uri, name)?.to_string(),
                want,
                "{uri} {name}"
            );
        }
        for (uri, name) in [
            ("", "x"),
            ("docker://", "x"),
            ("h.io/ns:tag", "x"),
            ("h.io/ns", "BAD"),
        ] {
            assert!(RegistryRef::under(uri, name).is_err(), "{uri} {name}");
        }
        Ok(())
    }

    #[test]
    fn refuses_what_registries_refuse() {
        for bad in [
            "docker://",
            "h.io/UPPER",
            "h.io/x:",
            "h.io/x:bad/tag",
            "h.io/x@sha256:short",
            "h.io/x@md5:abc",
            "h.io//x",
            "h.io/x/",
            "h.io/-x",
            "h.io/a...b",
            "h.io:99999/x",
            "h.io:/x",
            "-h.io/x",
        ] {
            assert!(RegistryRef::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
