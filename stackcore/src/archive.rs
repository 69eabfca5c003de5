//! Image archives read in place: `oci-archive:` (a tar of an OCI image layout) and
//! `docker-archive:` (what `docker save`, `podman save` and `skopeo copy ... docker-archive:`
//! write).
//!
//! The tar is indexed once (member name to offset and size); blobs are then read by offset,
//! never more bytes than their descriptor gives. A docker archive has no manifest of the
//! OCI kind: its `manifest.json` names a config file and layer files. That is turned into an
//! OCI manifest whose digests hold what can be checked: the config's digest is computed
//! (and must match its file name when the name is one), an uncompressed layer's digest is
//! its `diff_id` from the config (checked as it is read), a compressed layer's is computed
//! when the archive is opened (a docker archive records no digest for it).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::{Digest, VerifyReader};
use crate::entry::Kind;
use crate::error::IoContext;
use crate::oci::store::MAX_JSON_BLOB;
use crate::oci::types::{Descriptor, ImageConfig, Index, Manifest, REF_NAME, media};
use crate::tar::{TarReader, normalize_path};
use crate::{Error, Result};

/// How many symlinks a member name may go through.
const MAX_LINKS: usize = 8;

/// A tar of an image, indexed for reading in place.
#[derive(Debug)]
pub struct Archive {
    path: PathBuf,
    /// Regular members: name to (offset, size).
    files: HashMap<Vec<u8>, (u64, u64)>,
    /// Symlink members: name to target (docker archives link legacy `ID/layer.tar` names
    /// to the layer files).
    links: HashMap<Vec<u8>, Vec<u8>>,
    /// Documents made up when the archive was opened (a docker archive's manifests), by
    /// digest.
    made: HashMap<Digest, Vec<u8>>,
    /// Blobs of a docker archive: digest to member name.
    named: HashMap<Digest, Vec<u8>>,
    /// A docker archive's images, as an index with one entry per image (`RepoTags` as
    /// annotations); `None` for an OCI archive.
    docker: Option<Vec<DockerImage>>,
}

/// One image of a docker archive.
#[derive(Debug, Clone)]
struct DockerImage {
    tags: Vec<String>,
    manifest: Descriptor,
}

/// One `manifest.json` entry.
#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

impl Archive {
    /// Indexes an OCI archive's members.
    pub fn open(path: &Path) -> Result<Archive> {
        Archive::scan(path)
    }

    /// Indexes a docker archive and makes up an OCI manifest for each of its images.
    pub fn open_docker(path: &Path) -> Result<Archive> {
        let mut a = Archive::scan(path)?;
        let bytes = match a.small_member("manifest.json") {
            Ok(b) => b,
            Err(_) if a.lookup("index.json").is_some() => {
                return Err(Error::Other(format!(
                    "{}: an OCI archive (index.json, no manifest.json): read it as oci-archive:{}",
                    path.display(),
                    path.display()
                )));
            }
            Err(e) => return Err(e),
        };
        let entries: Vec<DockerEntry> = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Other(format!(
                "{}: manifest.json: not a docker archive manifest: {e}",
                path.display()
            ))
        })?;
        let mut images = Vec::new();
        for entry in &entries {
            images.push(a.make_docker_image(entry)?);
        }
        a.docker = Some(images);
        Ok(a)
    }

    fn scan(path: &Path) -> Result<Archive> {
        // A device (`/dev/zero`) or a pipe has no end to find, nor offsets to come back to.
        let file = crate::oci::store::open_regular(path).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                Error::Other(format!(
                    "{}: not a regular file (an archive is read in place)",
                    path.display()
                ))
            } else {
                Error::io(path, e)
            }
        })?;
        let counter = Counting {
            inner: io::BufReader::new(file),
            pos: 0,
        };
        let mut tar = TarReader::new(counter);
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let bad = |e: io::Error| {
            Error::Other(format!(
                "{}: not a readable image archive: {e}",
                path.display()
            ))
        };
        while let Some(h) = tar.next_header().map_err(bad)? {
            let kind = h.entry.kind;
            if kind != Kind::File && kind != Kind::Symlink {
                continue;
            }
            let name = normalize_path(&h.entry.path).map_err(bad)?;
            let pos = tar.inner_ref().pos;
            // Two members of one name: tools disagree on which one counts (the first,
            // the last), so the archive could be two different images.
            let twice = if kind == Kind::File {
                files.insert(name.clone(), (pos, h.data_size)).is_some()
                    || links.contains_key(&name)
            } else {
                links.insert(name.clone(), h.entry.link.clone()).is_some()
                    || files.contains_key(&name)
            };
            if twice {
                return Err(bad(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("two members named {}", String::from_utf8_lossy(&name)),
                )));
            }
        }
        Ok(Archive {
            path: path.to_path_buf(),
            files,
            links,
            made: HashMap::new(),
            named: HashMap::new(),
            docker: None,
        })
    }

    /// The archive file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is a docker archive.
    pub fn is_docker(&self) -> bool {
        self.docker.is_some()
    }

    /// A member's (offset, size), through symlinks.
    fn lookup(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = normalize_path(name.as_bytes()).ok()?;
        for _ in 0..MAX_LINKS {
            if let Some(&at) = self.files.get(&name) {
                return Some(at);
            }
            let target = self.links.get(&name)?;
            let joined = if target.starts_with(b"/") {
                target.clone()
            } else {
                let mut j = crate::entry::parent(&name).to_vec();
                j.push(b'/');
                j.extend_from_slice(target);
                j
            };
            name = resolve_dots(&joined)?;
        }
        None
    }

    /// Member `name`, at most `limit` bytes of it (a longer member is read only that far:
    /// the caller's size check then fails).
    fn member(&self, name: &str, limit: u64) -> Result<Box<dyn Read + Send>> {
        let (off, len) = self.lookup(name).ok_or_else(|| {
            Error::Other(format!("{}: no {name} in the archive", self.path.display()))
        })?;
        let mut f = File::open(&self.path).at(&self.path)?;
        f.seek(SeekFrom::Start(off)).at(&self.path)?;
        Ok(Box::new(io::BufReader::new(f).take(len.min(limit))))
    }

    /// A JSON document of at most [`MAX_JSON_BLOB`] bytes.
    fn small_member(&self, name: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.member(name, MAX_JSON_BLOB + 1)?
            .read_to_end(&mut bytes)
            .at(&self.path)?;
        if bytes.len() as u64 > MAX_JSON_BLOB {
            return Err(Error::Other(format!(
                "{}: {name} is larger than {MAX_JSON_BLOB} bytes; refusing to read it",
                self.path.display()
            )));
        }
        Ok(bytes)
    }

    /// The archive's index: `index.json` of an OCI archive; for a docker archive, one
    /// entry per image, named by its first `RepoTags` entry.
    pub fn index(&self) -> Result<Index> {
        if let Some(images) = &self.docker {
            let manifests = images
                .iter()
                .map(|i| {
                    let mut d = i.manifest.clone();
                    if let Some(t) = i.tags.first() {
                        d.annotations.insert(REF_NAME.to_owned(), t.clone());
                    }
                    d
                })
                .collect();
            return Ok(Index {
                schema_version: 2,
                media_type: None,
                manifests,
                annotations: std::collections::BTreeMap::new(),
                extra: std::collections::BTreeMap::new(),
            });
        }
        let bytes = match self.small_member("index.json") {
            Err(_)
                if self.lookup("index.json").is_none()
                    && self.lookup("manifest.json").is_some() =>
            {
                return Err(Error::Other(format!(
                    "{}: a docker archive (manifest.json, no index.json): read it as docker-archive:{}",
                    self.path.display(),
                    self.path.display()
                )));
            }
            r => r?,
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Other(format!(
                "{}: index.json: bad JSON: {e}",
                self.path.display()
            ))
        })
    }

    /// The image of a docker archive that `name` names (one of its `RepoTags`, with
    /// `docker.io/library/` and `localhost/` optional and `:latest` implied), or its only
    /// image when `name` is `None`.
    pub fn docker_image(&self, name: Option<&str>, shown: &str) -> Result<Descriptor> {
        let images = self.docker.as_deref().unwrap_or_default();
        let all = || {
            let tags: Vec<&str> = images
                .iter()
                .flat_map(|i| i.tags.iter().map(String::as_str))
                .collect();
            if tags.is_empty() {
                "none tagged".to_owned()
            } else {
                tags.join(", ")
            }
        };
        match name {
            None if images.len() == 1 => Ok(images[0].manifest.clone()),
            None => Err(Error::Usage(format!(
                "{shown}: holds {} images; name one with :NAME:TAG (there are: {})",
                images.len(),
                all()
            ))),
            Some(n) => {
                let want = short_tag(n);
                images
                    .iter()
                    .find(|i| i.tags.iter().any(|t| short_tag(t) == want))
                    .map(|i| i.manifest.clone())
                    .ok_or_else(|| {
                        Error::Other(format!(
                            "{shown}: no image named {n:?} (there are: {})",
                            all()
                        ))
                    })
            }
        }
    }

    /// Opens a blob; the reader fails at its end unless digest and size match.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<VerifyReader<Box<dyn Read + Send>>> {
        let r: Box<dyn Read + Send> = if let Some(bytes) = self.made.get(&desc.digest) {
            Box::new(io::Cursor::new(bytes.clone()))
        } else if let Some(name) = self.named.get(&desc.digest) {
            self.member(&String::from_utf8_lossy(name), desc.size.saturating_add(1))?
        } else if self.docker.is_some() {
            return Err(Error::Other(format!(
                "{}: no blob {} in the archive",
                self.path.display(),
                desc.digest
            )));
        } else {
            self.member(
                &format!("blobs/sha256/{}", desc.digest.hex()),
                desc.size.saturating_add(1),
            )?
        };
        Ok(VerifyReader::new(
            r,
            desc.digest.clone(),
            Some(desc.size),
            format!("blob {}", desc.digest),
        ))
    }

    fn make_docker_image(&mut self, entry: &DockerEntry) -> Result<DockerImage> {
        let shown = |m: &str| format!("{}: {m}", self.path.display());
        let config_bytes = self.small_member(&entry.config)?;
        let config_digest = Digest::of(&config_bytes);
        if let Some(hex) = digest_in_name(&entry.config)
            && hex != config_digest.hex()
        {
            return Err(Error::Other(shown(&format!(
                "config {}: digest mismatch: its name says sha256:{hex}, its bytes are {config_digest}",
                entry.config
            ))));
        }
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::Other(shown(&format!("config {}: bad JSON: {e}", entry.config))))?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(Error::Other(shown(&format!(
                "manifest.json lists {} layers but the config {} diff_ids",
                entry.layers.len(),
                config.rootfs.diff_ids.len()
            ))));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let (_, size) = self
                .lookup(name)
                .ok_or_else(|| Error::Other(shown(&format!("no {name} in the archive"))))?;
            let mut magic = [0u8; 4];
            let got = read_up_to(&mut self.member(name, 4)?, &mut magic).at(&self.path)?;
            let (media_type, digest) = match &magic[..got] {
                [0x1f, 0x8b, ..] => (media::LAYER_GZIP, self.hash_member(name, size)?),
                [0x28, 0xb5, 0x2f, 0xfd] => (media::LAYER_ZSTD, self.hash_member(name, size)?),
                // Uncompressed: the bytes are the tar whose digest the config gives, which
                // the read checks.
                _ => (media::LAYER_TAR, diff_id.clone()),
            };
            self.named.insert(digest.clone(), name.as_bytes().to_vec());
            layers.push(Descriptor::new(media_type, digest, size));
        }
        self.named
            .insert(config_digest.clone(), entry.config.as_bytes().to_vec());
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::MANIFEST.to_owned()),
            config: Descriptor::new(media::CONFIG, config_digest, config_bytes.len() as u64),
            layers,
            annotations: std::collections::BTreeMap::new(),
            extra: std::collections::BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::Other(shown(&format!("manifest: {e}"))))?;
        let desc = Descriptor::new(media::MANIFEST, Digest::of(&bytes), bytes.len() as u64);
        self.made.insert(desc.digest.clone(), bytes);
        Ok(DockerImage {
            tags: entry.repo_tags.clone().unwrap_or_default(),
            manifest: desc,
        })
    }

    fn hash_member(&self, name: &str, size: u64) -> Result<Digest> {
        let mut w = crate::digest::HashWriter::new(io::sink());
        io::copy(&mut self.member(name, size)?, &mut w).at(&self.path)?;
        Ok(w.finish().1)
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `HEX` of a member named `HEX.json`, `HEX.tar` or `blobs/sha256/HEX`.
fn digest_in_name(name: &str) -> Option<&str> {
    let base = name
        .strip_prefix("blobs/sha256/")
        .or_else(|| name.strip_suffix(".json"))?;
    (base.len() == 64
        && base
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(base)
}

/// A `RepoTags` entry in the short form: without `docker.io/library/`, `docker.io/` or
/// `localhost/`, with `:latest` when it has no tag.
fn short_tag(t: &str) -> String {
    let t = t
        .strip_prefix("docker.io/library/")
        .or_else(|| t.strip_prefix("docker.io/"))
        .or_else(|| t.strip_prefix("localhost/"))
        .unwrap_or(t);
    let (name, tag) = crate::imageref::split_tag(t);
    format!("{name}:{tag}")
}

/// Resolves `.` and `..` in a member path (none may climb above the archive's top).
fn resolve_dots(p: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join(&b'/'))
}

struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tags_and_names() {
        assert_eq!(short_tag("docker.io/library/debian"), "debian:latest");
        assert_eq!(short_tag("localhost/app:v2"), "app:v2");
        assert_eq!(short_tag("h:5000/x"), "h:5000/x:latest");
        let hex = "a".repeat(64);
        assert_eq!(digest_in_name(&format!("{hex}.json")), Some(hex.as_str()));
        assert_eq!(
            digest_in_name(&format!("blobs/sha256/{hex}")),
            Some(hex.as_str())
        );
        assert_eq!(digest_in_name("abc/json"), None);
        assert_eq!(resolve_dots(b"a/../b/./c"), Some(b"b/c".to_vec()));
        assert_eq!(resolve_dots(b"../x"), None);
    }
}
