//! Pushing an image from the store: every blob the registry lacks (HEAD first; a
//! cross-repository mount when the blob came from another repository of the same registry;
//! else an upload streamed from disk), then the manifest, byte for byte.

use std::io::Read;

use super::RegistryOptions;
use super::client::{
    Body, Client, MAX_ATTEMPTS, Origin, backoff, header_str, percent_encode, resolve,
};
use super::origins;
use super::reference::RegistryRef;
use super::text::{escape, quote};
use crate::digest::Digest;
use crate::oci::Store;
use crate::oci::store::MAX_JSON_BLOB;
use crate::oci::types::{Descriptor, Manifest, media};
use crate::{Error, Result};

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// `docker://HOST/REPO:TAG`.
    pub reference: String,
    /// The manifest digest, the same in the store and in the registry.
    pub digest: Digest,
    /// Blobs uploaded.
    pub blobs_uploaded: usize,
    /// Blobs the registry already had in that repository.
    pub blobs_skipped: usize,
    /// Blobs mounted from another repository of the registry instead of uploaded.
    pub blobs_mounted: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
}

/// How one blob got there.
enum Sent {
    Skipped,
    Mounted,
    Uploaded,
}

/// Pushes the image whose manifest is `manifest` (in `store`) to `dest`, which names a tag
/// (`latest` when it names none).
pub fn push(
    store: &Store,
    manifest: &Descriptor,
    dest: &RegistryRef,
    opts: &RegistryOptions,
) -> Result<PushOutcome> {
    if dest.digest.is_some() {
        return Err(Error::Usage(format!(
            "{dest}: push to a tag (docker://HOST/REPO:TAG), not a digest"
        )));
    }
    let dest = dest.with_tag(dest.tag.as_deref().unwrap_or("latest"));
    if manifest.media_type != media::MANIFEST && manifest.media_type != media::DOCKER_MANIFEST {
        return Err(Error::Other(format!(
            "{}: cannot push a {}: only image manifests are pushed",
            manifest.digest,
            quote(&manifest.media_type)
        )));
    }
    if manifest.size > MAX_JSON_BLOB {
        return Err(Error::Other(format!(
            "manifest {}: {} bytes is too large",
            manifest.digest, manifest.size
        )));
    }
    let mut bytes = Vec::new();
    store
        .open_blob(manifest)?
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Other(format!("reading manifest {}: {e}", manifest.digest)))?;
    let parsed: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("manifest {}: bad JSON: {e}", manifest.digest)))?;
    let mut blobs: Vec<&Descriptor> = Vec::new();
    for d in std::iter::once(&parsed.config).chain(&parsed.layers) {
        if !blobs.iter().any(|b| b.digest == d.digest) {
            blobs.push(d);
        }
    }
    // Where each blob could be mounted from: another repository of this registry.
    let mounts: Vec<Option<String>> = blobs
        .iter()
        .map(|d| {
            origins::get(store, &d.digest).into_iter().find_map(|o| {
                let (host, repo) = o.split_once('/')?;
                (host == dest.host && repo != dest.repo).then(|| repo.to_owned())
            })
        })
        .collect();
    let mut scopes = vec![format!("repository:{}:pull,push", dest.repo)];
    for from in mounts.iter().flatten() {
        let s = format!("repository:{from}:pull");
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let mut c = Client::new(&dest, opts, scopes)?;
    opts.step(format_args!("pushing {} to {dest}", manifest.digest));
    let mut out = PushOutcome {
        reference: dest.to_string(),
        digest: manifest.digest.clone(),
        blobs_uploaded: 0,
        blobs_skipped: 0,
        blobs_mounted: 0,
        bytes_uploaded: 0,
    };
    let total = blobs.iter().map(|d| d.size).sum();
    let task = crate::progress::task(format!("pushing to {dest}"), Some(total));
    for (desc, from) in blobs.iter().zip(&mounts) {
        match push_blob(&mut c, store, &dest, desc, from.as_deref(), opts)? {
            Sent::Skipped => {
                tracing::debug!(blob = %desc.digest, "the registry has it: not uploaded");
                out.blobs_skipped += 1;
            }
            Sent::Mounted => out.blobs_mounted += 1,
            Sent::Uploaded => {
                out.blobs_uploaded += 1;
                out.bytes_uploaded += desc.size;
            }
        }
        task.advance(desc.size, 1);
    }
    drop(task);
    let url = c.url(&format!("/v2/{}/manifests/{}", dest.repo, dest.reference()));
    let resp = c.send(
        "PUT",
        &url,
        &[("Content-Type", manifest.media_type.as_str())],
        Body::Bytes(&bytes),
    )?;
    if resp.status().as_u16() != 201 {
        return Err(c.status_error(resp, "storing the manifest"));
    }
    if let Some(h) = header_str(&resp, "docker-content-digest")
        && h != manifest.digest.as_str()
    {
        return Err(c.error(
            None,
            format!(
                "the registry stored the manifest as {}, not {}: it rewrote it",
                escape(h),
                manifest.digest
            ),
        ));
    }
    for desc in &blobs {
        if let Err(e) = origins::add(store, &desc.digest, &dest.repository())
            && let Some(log) = &opts.log
        {
            log.warn(format_args!(
                "could not note that {} is in {} ({e}); later pushes may upload it again",
                desc.digest,
                dest.repository()
            ));
        }
    }
    opts.step(format_args!(
        "pushed {dest}@{} ({} blobs uploaded, {} bytes; {} already there, {} mounted)",
        out.digest, out.blobs_uploaded, out.bytes_uploaded, out.blobs_skipped, out.blobs_mounted
    ));
    Ok(out)
}

fn push_blob(
    c: &mut Client,
    store: &Store,
    dest: &RegistryRef,
    desc: &Descriptor,
    mount_from: Option<&str>,
    opts: &RegistryOptions,
) -> Result<Sent> {
    let head = c.url(&format!("/v2/{}/blobs/{}", dest.repo, desc.digest));
    let resp = c.send("HEAD", &head, &[], Body::None)?;
    match resp.status().as_u16() {
        200 => return Ok(Sent::Skipped),
        404 => {}
        _ => return Err(c.status_error(resp, &format!("checking for blob {}", desc.digest))),
    }
    let path = store.blob_path(&desc.digest);
    let on_disk = std::fs::metadata(&path)
        .map_err(|e| Error::io(&path, e))?
        .len();
    if on_disk != desc.size {
        return Err(Error::Other(format!(
            "blob {}: {} bytes in the store, the manifest says {}; run stash --verify",
            desc.digest, on_disk, desc.size
        )));
    }
    let uploads = c.url(&format!("/v2/{}/blobs/uploads/", dest.repo));
    let mut attempt = 1;
    loop {
        // A mount answers 201 when done, or 202 with an upload session to use instead.
        let start = match mount_from {
            Some(from) => {
                let url = format!(
                    "{uploads}?mount={}&from={}",
                    percent_encode(desc.digest.as_str()),
                    percent_encode(from)
                );
                let resp = c.send("POST", &url, &[], Body::Bytes(&[]))?;
                match resp.status().as_u16() {
                    201 => {
                        opts.step(format_args!("mounted blob {} from {from}", desc.digest));
                        return Ok(Sent::Mounted);
                    }
                    202 => resp,
                    // No right to read the other repository (token registries answer 401 or
                    // 403), or it is gone: a mount is only a shortcut, so upload instead.
                    status => {
                        opts.step(format_args!(
                            "mounting blob {} from {from} refused (HTTP {status}); uploading it",
                            desc.digest
                        ));
                        c.send("POST", &uploads, &[], Body::Bytes(&[]))?
                    }
                }
            }
            None => c.send("POST", &uploads, &[], Body::Bytes(&[]))?,
        };
        if start.status().as_u16() != 202 {
            return Err(c.status_error(start, &format!("starting the upload of {}", desc.digest)));
        }
        let location = header_str(&start, "location").ok_or_else(|| {
            c.error(
                None,
                format!(
                    "starting the upload of {}: no Location in the answer",
                    desc.digest
                ),
            )
        })?;
        // Relative to the URL it answered; on another origin it gets no credentials of
        // ours (see `Client::send_once`).
        let mut put = resolve(&uploads, location);
        if Origin::of(&put).is_none() {
            return Err(c.error(
                None,
                format!(
                    "starting the upload of {}: the upload Location {} is not an http(s) URL",
                    desc.digest,
                    quote(&put)
                ),
            ));
        }
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str("digest=");
        put.push_str(&percent_encode(desc.digest.as_str()));
        opts.step(format_args!(
            "uploading blob {} ({} bytes)",
            desc.digest, desc.size
        ));
        // One attempt per session: a broken-off PUT leaves the session in an unknown state,
        // so a retry starts a new one.
        let sent = c.send_with(
            "PUT",
            &put,
            &[("Content-Type", "application/octet-stream")],
            Body::File(&path),
            1,
        );
        let retry = match &sent {
            Err(_) => true,
            Ok(r) => r.status().is_server_error() || r.status().as_u16() == 429,
        };
        if retry && attempt < MAX_ATTEMPTS {
            std::thread::sleep(backoff(attempt));
            attempt += 1;
            continue;
        }
        let resp = sent?;
        if resp.status().as_u16() != 201 {
            return Err(c.status_error(resp, &format!("uploading blob {}", desc.digest)));
        }
        return Ok(Sent::Uploaded);
    }
}
