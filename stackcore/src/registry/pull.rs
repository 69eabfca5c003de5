//! Pulling an image into the store: manifest (through an image index if need be), config and
//! layers, each verified while it streams to disk, then named `HOST/REPO:TAG`.

use std::io::{self, Read, Write};

use super::RegistryOptions;
use super::client::{Body, Client, backoff, header_str};
use super::origins;
use super::platform::PlatformSpec;
use super::reference::RegistryRef;
use super::text::{escape, quote};
use crate::digest::Digest;
use crate::image::{BlobSource, Image};
use crate::oci::Store;
use crate::oci::store::MAX_JSON_BLOB;
use crate::oci::types::{Descriptor, Index, Manifest, media};
use crate::{Error, Result};

/// Every manifest kind we read, for `Accept`.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Attempts at a blob whose transfer keeps breaking off (each resumes where the last stopped).
const BLOB_ATTEMPTS: u32 = 5;

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    /// The `docker://` ref pulled.
    pub reference: String,
    /// The manifest now in the store (one platform's, when the ref named an index).
    pub descriptor: Descriptor,
    /// The name it is kept under in the store: `HOST/REPO:TAG` (or `HOST/REPO@DIGEST`).
    pub ref_name: String,
    /// Blobs fetched from the registry.
    pub blobs_fetched: usize,
    /// Blobs the store already had.
    pub blobs_present: usize,
    /// Bytes fetched (blobs only).
    pub bytes_fetched: u64,
}

/// Pulls `reference` (`[docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]`) into `store`. Returns the
/// manifest's descriptor and the name it is kept under; open it with
/// [`Image::from_descriptor`] and it is exactly what was pulled, by digest.
pub fn pull(
    store: &Store,
    reference: &str,
    opts: &RegistryOptions,
) -> Result<(Descriptor, String)> {
    let r = RegistryRef::parse(reference)?;
    let o = pull_ref(store, &r, opts)?;
    Ok((o.descriptor, o.ref_name))
}

/// Pulls `r` into `store`, with counts.
pub fn pull_ref(store: &Store, r: &RegistryRef, opts: &RegistryOptions) -> Result<PullOutcome> {
    let mut c = Client::new(r, opts, vec![format!("repository:{}:pull", r.repo)])?;
    opts.step(format_args!("pulling {r}"));
    let (mut media_type, mut bytes) = fetch_manifest(&mut c, r, &r.reference(), r.digest.as_ref())?;
    let mut picked = None; // the platform picked from an index, kept with the store's entry
    if media_type == media::INDEX || media_type == media::DOCKER_LIST {
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
            c.error(
                None,
                format!(
                    "the image index is not valid JSON: {}",
                    escape(&e.to_string())
                ),
            )
        })?;
        let spec = opts.platform.clone().unwrap_or_else(PlatformSpec::host);
        let child = spec.pick(&index).cloned().ok_or_else(|| {
            c.error(
                None,
                format!(
                    "the image index has no {spec} image (it has: {}); choose one with --platform",
                    escape(&PlatformSpec::offered(&index))
                ),
            )
        })?;
        if child.size > MAX_JSON_BLOB {
            return Err(c.error(
                None,
                format!(
                    "manifest {}: the index says it is {} bytes, more than a manifest may be \
                     ({MAX_JSON_BLOB}); refused before downloading it",
                    child.digest, child.size
                ),
            ));
        }
        opts.step(format_args!("{spec}: manifest {}", child.digest));
        picked.clone_from(&child.platform);
        (media_type, bytes) =
            fetch_manifest(&mut c, r, child.digest.as_str(), Some(&child.digest))?;
        if bytes.len() as u64 != child.size {
            return Err(c.error(
                None,
                format!(
                    "manifest {}: the index says {} bytes, the registry sent {}",
                    child.digest,
                    child.size,
                    bytes.len()
                ),
            ));
        }
    }
    if media_type != media::MANIFEST && media_type != media::DOCKER_MANIFEST {
        return Err(c.error(
            None,
            format!(
                "manifest media type {} is not supported",
                quote(&media_type)
            ),
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        c.error(
            None,
            format!("the manifest is not valid JSON: {}", escape(&e.to_string())),
        )
    })?;
    check_manifest(&c, &manifest)?;
    if manifest.config.size > MAX_JSON_BLOB {
        return Err(c.error(
            None,
            format!(
                "config {}: the manifest says it is {} bytes, more than an image config may be \
                 ({MAX_JSON_BLOB}); refused before downloading it",
                manifest.config.digest, manifest.config.size
            ),
        ));
    }

    let mut out = PullOutcome {
        reference: r.to_string(),
        descriptor: Descriptor {
            platform: picked,
            ..Descriptor::new(&media_type, Digest::of(&bytes), bytes.len() as u64)
        },
        ref_name: r.ref_name(),
        blobs_fetched: 0,
        blobs_present: 0,
        bytes_fetched: 0,
    };
    let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .collect();
    let missing: u64 = blobs
        .iter()
        .filter(|d| !store.has_blob(&d.digest))
        .map(|d| d.size)
        .sum();
    let task = crate::progress::task(format!("pulling {r}"), Some(missing));
    for desc in &blobs {
        if store.has_blob(&desc.digest) {
            tracing::debug!(blob = %desc.digest, "already in the store: not fetched");
            out.blobs_present += 1;
            continue;
        }
        opts.step(format_args!(
            "fetching blob {} ({} bytes)",
            desc.digest, desc.size
        ));
        fetch_blob(&mut c, store, r, desc)?;
        task.advance(0, 1);
        out.blobs_fetched += 1;
        out.bytes_fetched += desc.size;
    }
    drop(task);
    // The manifest last: until it is in, nothing refers to the blobs above.
    store.write_blob(&bytes)?;
    // Refuse to name an image that cannot be opened (layer/diff_id counts, config type).
    Image::from_descriptor(
        BlobSource::Layout(store.clone()),
        out.descriptor.clone(),
        out.ref_name.clone(),
    )?;
    store.set_ref(&out.ref_name, &out.descriptor)?;
    for desc in &blobs {
        if let Err(e) = origins::add(store, &desc.digest, &r.repository())
            && let Some(log) = &opts.log
        {
            log.warn(format_args!(
                "could not note where {} came from ({e}); a later push will upload it instead of mounting it",
                desc.digest
            ));
        }
    }
    opts.step(format_args!(
        "pulled {} as {} ({} blobs fetched, {} bytes; {} already in the store)",
        out.descriptor.digest,
        out.ref_name,
        out.blobs_fetched,
        out.bytes_fetched,
        out.blobs_present
    ));
    Ok(out)
}

/// Fetches a manifest or index; returns its media type and bytes, checked against `expect`
/// (a by-digest request) or against the registry's `Docker-Content-Digest` (a by-tag one).
fn fetch_manifest(
    c: &mut Client,
    r: &RegistryRef,
    reference: &str,
    expect: Option<&Digest>,
) -> Result<(String, Vec<u8>)> {
    let url = c.url(&format!("/v2/{}/manifests/{reference}", r.repo));
    let resp = c.send("GET", &url, &[("Accept", MANIFEST_ACCEPT)], Body::None)?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Err(c.status_error(resp, "not in the registry"));
    }
    if status != 200 {
        return Err(c.status_error(resp, &format!("fetching manifest {reference}")));
    }
    let content_type = header_str(&resp, "content-type")
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let header_digest = header_str(&resp, "docker-content-digest").map(str::to_owned);
    let mut bytes = Vec::new();
    c.reader(resp)
        .take(MAX_JSON_BLOB + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            c.error(
                None,
                format!("reading manifest {reference}: {}", escape(&e.to_string())),
            )
        })?;
    if bytes.len() as u64 > MAX_JSON_BLOB {
        return Err(c.error(
            None,
            format!("manifest {reference}: larger than {MAX_JSON_BLOB} bytes; refused"),
        ));
    }
    let digest = Digest::of(&bytes);
    if let Some(want) = expect
        && &digest != want
    {
        return Err(c.error(
            None,
            format!("manifest {want}: the registry sent content with digest {digest}"),
        ));
    }
    if expect.is_none()
        && let Some(h) = header_digest
        && h.starts_with("sha256:")
        && h != digest.as_str()
    {
        return Err(c.error(
            None,
            format!(
                "manifest {reference}: the registry says its digest is {}, the content's is {digest}",
                escape(&h)
            ),
        ));
    }
    Ok((media_type_of(&bytes, &content_type), bytes))
}

/// The document's own `mediaType` when it has one; else the `Content-Type`; else a guess
/// from its shape (OCI allows leaving `mediaType` out).
fn media_type_of(bytes: &[u8], content_type: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    let peek: Option<Peek> = serde_json::from_slice(bytes).ok();
    if let Some(m) = peek.as_ref().and_then(|p| p.media_type.clone()) {
        return m;
    }
    let known = [
        media::MANIFEST,
        media::INDEX,
        media::DOCKER_MANIFEST,
        media::DOCKER_LIST,
    ];
    if known.contains(&content_type) {
        return content_type.to_owned();
    }
    if peek.is_some_and(|p| p.manifests.is_some()) {
        media::INDEX.to_owned()
    } else {
        media::MANIFEST.to_owned()
    }
}

/// What [`Image::from_descriptor`] would refuse, refused before any layer is fetched.
fn check_manifest(c: &Client, m: &Manifest) -> Result<()> {
    if m.schema_version != 2 {
        return Err(c.error(
            None,
            format!("manifest schema version {} not supported", m.schema_version),
        ));
    }
    if m.config.media_type != media::CONFIG && m.config.media_type != media::DOCKER_CONFIG {
        return Err(c.error(
            None,
            format!(
                "config media type {} is not an image config (not a container image?)",
                quote(&m.config.media_type)
            ),
        ));
    }
    for l in &m.layers {
        crate::layer::read::Decoder::new(io::empty(), &l.media_type).map_err(|e| {
            c.error(
                None,
                format!("layer {}: {}", l.digest, escape(&e.to_string())),
            )
        })?;
    }
    Ok(())
}

/// Streams one blob into the store, verified against its digest and size before it is named.
/// A transfer that breaks off resumes where it stopped (`Range`), or starts over when the
/// registry does not do ranges.
fn fetch_blob(c: &mut Client, store: &Store, r: &RegistryRef, desc: &Descriptor) -> Result<()> {
    let url = c.url(&format!("/v2/{}/blobs/{}", r.repo, desc.digest));
    let mut attempt = 1;
    let mut w = store.blob_writer()?;
    let mut have: u64 = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let range = format!("bytes={have}-");
        let headers: &[(&str, &str)] = if have > 0 {
            &[("Range", range.as_str())]
        } else {
            &[]
        };
        let resp = c.send("GET", &url, headers, Body::None)?;
        match resp.status().as_u16() {
            200 if have > 0 => {
                // No ranges here: start over.
                w = store.blob_writer()?;
                have = 0;
            }
            200 => {}
            206 if have > 0
                && header_str(&resp, "content-range")
                    .is_some_and(|v| v.starts_with(&format!("bytes {have}-"))) => {}
            status @ (206 | 416) if have > 0 => {
                return Err(c.error(
                    Some(status),
                    format!(
                        "fetching blob {}: resuming at byte {have} got a range the registry \
                         did not promise",
                        desc.digest
                    ),
                ));
            }
            _ => return Err(c.status_error(resp, &format!("fetching blob {}", desc.digest))),
        }
        // One byte past the size is enough to tell "too long" without reading on.
        let mut body = c.reader(resp).take(desc.size.saturating_sub(have) + 1);
        let broke = loop {
            match body.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    w.write_all(&buf[..n])
                        .map_err(|e| Error::io(store.tmp_dir(), e))?;
                    have += n as u64;
                    crate::progress::advance(n as u64, 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        let Some(e) = broke else {
            return w
                .commit_verified(&desc.digest, desc.size)
                .map_err(|e| c.error(None, e.to_string()));
        };
        if attempt >= BLOB_ATTEMPTS {
            return Err(c.error(
                None,
                format!(
                    "fetching blob {}: {} (tried {attempt} times)",
                    desc.digest,
                    escape(&e.to_string())
                ),
            ));
        }
        attempt += 1;
        std::thread::sleep(backoff(attempt - 1));
        if let Some(log) = &c.log {
            log.warn(format_args!(
                "blob {}: transfer broke off at byte {have} of {} ({}); resuming",
                desc.digest,
                desc.size,
                escape(&e.to_string())
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_from_document_header_or_shape() {
        let table = [
            (
                r#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#,
                "application/json",
                media::INDEX,
            ),
            (
                r#"{"schemaVersion":2}"#,
                media::DOCKER_MANIFEST,
                media::DOCKER_MANIFEST,
            ),
            (r#"{"manifests":[]}"#, "text/plain", media::INDEX),
            (r#"{"layers":[]}"#, "", media::MANIFEST),
        ];
        for (body, ct, want) in table {
            assert_eq!(media_type_of(body.as_bytes(), ct), want, "{body}");
        }
    }

    #[test]
    fn error_mentions_the_ref() {
        let e = Error::Registry {
            reference: "docker://h/x:latest".into(),
            status: Some(401),
            message: "unauthorized: x".into(),
        };
        assert_eq!(e.to_string(), "docker://h/x:latest: unauthorized: x");
    }
}
