//! Refs: `oci:` refs of our own stores on the fast path (and foreign look-alikes not),
//! `docker-archive:` from skopeo and podman, archive edges, transports we do not read, and
//! the platform a pulled image is kept for.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::registry::Registry;
use crate::skip;
use crate::stash::{RICH, extras};
use crate::util::{Workdir, assert_same, dump, have, is_root, json, output, run};

const SMALL: &str = "d . 755 0:0\nd etc 750 0:0\nf etc/conf 640 0:0 a=1\\n\nf big 644 0:0 @70000\n";

/// `cmd` must fail with `code` and one line on stderr holding every piece of `want`.
fn refused(cmd: &mut Command, code: i32, want: &[&str]) -> Result<String> {
    let o = output(cmd.arg("--quiet"))?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    ensure!(
        o.status.code() == Some(code),
        "exit {:?}: {err}",
        o.status.code()
    );
    ensure!(
        err.trim_end().lines().count() == 1,
        "more than one line: {err}"
    );
    for w in want {
        ensure!(err.contains(w), "{w:?} not in: {err}");
    }
    Ok(err)
}

fn layer_hex(store: &Path, name: &str) -> Result<String> {
    let index: Value = serde_json::from_slice(&fs::read(store.join("index.json"))?)?;
    let desc = index["manifests"]
        .as_array()
        .context("manifests")?
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == name)
        .context("no such ref")?;
    let hex = desc["digest"]
        .as_str()
        .context("digest")?
        .trim_start_matches("sha256:");
    let manifest: Value = serde_json::from_slice(&fs::read(store.join("blobs/sha256").join(hex))?)?;
    Ok(manifest["layers"][0]["digest"]
        .as_str()
        .context("layer")?
        .trim_start_matches("sha256:")
        .to_owned())
}

/// `stash` prints `oci:STORE:NAME:TAG`; read back with another default store, that ref
/// uses (and fills) the store's layer-index cache, as a bare name does. A copy of the
/// store, mark and cache included, is a foreign layout: its cache is not read, so a forged
/// cache that hides a damaged layer is caught.
#[test]
fn oci_ref_of_our_store_uses_its_cache_and_a_copy_does_not() -> Result<()> {
    let w = Workdir::new("refs-ours")?;
    let root = w.tree("root", SMALL)?;
    let printed = run(w
        .bin("stash")
        .args(["--store", "store", "--root", "root"])
        .args(["--container-name", "demo"]))?;
    let oci_ref = printed.trim().to_owned();
    ensure!(oci_ref.starts_with("oci:"), "{oci_ref}");
    let store = w.path("store");
    ensure!(
        store.join(".stackbuild/store-id").is_file(),
        "the store is not marked"
    );
    let hex = layer_hex(&store, "demo:latest")?;
    let cached = store.join(".stackbuild/cache/index").join(&hex);
    fs::remove_dir_all(store.join(".stackbuild/cache"))?;
    let unstash = |r: &str, to: &str| {
        let mut c = w.bin("unstash");
        c.args([r, "--to", to, "-vv"])
            .env("KIWI_STASH_HOME", w.path("other-store"));
        c
    };
    let merge = |into: &str| -> Result<String> {
        let o = output(
            w.bin("stackmerge")
                .args(["--into", into, &oci_ref, &oci_ref, "-vv"])
                .env("KIWI_STASH_HOME", w.path("other-store")),
        )?;
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        ensure!(o.status.success(), "{err}");
        Ok(err)
    };
    // The first stackmerge of oci: refs fills the store's cache, the second reads it.
    let err = merge("m1")?;
    ensure!(err.contains("a store of ours"), "{err}");
    ensure!(
        cached.is_file(),
        "the oci: ref did not fill the store's cache"
    );
    let err = merge("m2")?;
    ensure!(err.contains("layer index: cache hit"), "{err}");
    assert_same(&dump(&root)?, &dump(&w.path("m2"))?)?;
    let o = output(&mut unstash(&oci_ref, "out"))?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(o.status.success(), "{err}");
    ensure!(err.contains("a store of ours"), "{err}");
    assert_same(&dump(&root)?, &dump(&w.path("out"))?)?;
    ensure!(
        !w.path("other-store").exists(),
        "the default store was created"
    );

    // A copy with the mark and the cache: foreign.
    run(w.cmd("cp").args(["-a", "store", "copy"]))?;
    let copy = w.path("copy");
    let copy_ref = format!("oci:{}:demo:latest", copy.display());
    let o = output(&mut unstash(&copy_ref, "out2"))?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(o.status.success(), "{err}");
    ensure!(
        !err.contains("a store of ours"),
        "a copy passed for ours: {err}"
    );
    // Its cache forged to say the layer adds nothing, and the layer damaged: a reader
    // trusting that cache would never read (nor check) the layer.
    let blob = copy.join("blobs/sha256").join(&hex);
    let mut bytes = fs::read(&blob)?;
    let len = bytes.len();
    bytes[len - 9] ^= 0xff;
    fs::write(&blob, bytes)?;
    let config_diff_id = {
        let index: Value = serde_json::from_slice(&fs::read(copy.join("index.json"))?)?;
        let m = index["manifests"][0]["digest"].as_str().context("d")?;
        let manifest: Value = serde_json::from_slice(&fs::read(
            copy.join("blobs/sha256")
                .join(m.trim_start_matches("sha256:")),
        )?)?;
        let c = manifest["config"]["digest"].as_str().context("c")?;
        let config: Value = serde_json::from_slice(&fs::read(
            copy.join("blobs/sha256")
                .join(c.trim_start_matches("sha256:")),
        )?)?;
        config["rootfs"]["diff_ids"][0]
            .as_str()
            .context("diff_id")?
            .to_owned()
    };
    let tmp = copy.join(".stackbuild/tmp");
    fs::create_dir_all(&tmp)?;
    stackcore::layer::LayerIndex::default().save_cached(
        &copy.join(".stackbuild/cache"),
        &tmp,
        &stackcore::digest::Digest::parse(&format!("sha256:{hex}"))?,
        &stackcore::digest::Digest::parse(&config_diff_id)?,
    );
    ensure!(copy.join(".stackbuild/cache/index").join(&hex).is_file());
    let o = output(&mut unstash(&copy_ref, "out3"))?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        o.status.code() == Some(1),
        "the forged cache was trusted: {err}"
    );
    ensure!(err.contains("digest mismatch"), "{err}");
    ensure!(!w.path("out3").exists(), "partial output");

    // Our store, once others may write to it, is not ours either.
    run(w.cmd("chmod").args(["g+w", "store"]))?;
    let o = output(&mut unstash(&oci_ref, "out4"))?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(o.status.success(), "{err}");
    ensure!(
        !err.contains("a store of ours"),
        "a group-writable store passed: {err}"
    );
    Ok(())
}

/// Unpacks the tar `file` into `dir`, lets `edit` change it, and packs it into `out`.
fn repack(
    w: &Workdir,
    file: &str,
    dir: &str,
    out: &str,
    edit: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    fs::create_dir_all(w.path(dir))?;
    run(w.cmd("tar").args(["-xf", file, "-C", dir]))?;
    edit(&w.path(dir))?;
    run(w.cmd("tar").args(["-cf", out, "-C", dir, "."]))?;
    Ok(())
}

fn docker_manifest(dir: &Path) -> Result<Value> {
    Ok(serde_json::from_slice(&fs::read(
        dir.join("manifest.json"),
    )?)?)
}

/// `skopeo copy oci:STORE:NAME:TAG docker-archive:F:NAME:TAG`: read by unstash and
/// stackmerge, by its tag or as its only image, with every attribute; gzip layers inside
/// read too; a damaged layer or config is refused.
#[test]
fn privileged_docker_archive_from_skopeo() -> Result<()> {
    if !is_root() {
        skip!("needs root (the tree has devices and other owners)");
    }
    if !have("skopeo") {
        skip!("skopeo not installed (.ci/run installs it)");
    }
    let w = Workdir::new("refs-docker-archive")?;
    let root = w.tree("root", RICH)?;
    extras(&root)?;
    run(w.bin("stash").args(["--store", "store", "--root", "root"]))?;
    // A second stash: two layers, the second with a change and a deletion.
    fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/bash\n")?;
    fs::remove_file(root.join("zeros"))?;
    run(w.bin("stash").args(["--store", "store", "--root", "root"]))?;
    run(w.cmd("skopeo").args([
        "copy",
        &format!("oci:{}:rich-os:latest", w.path("store").display()),
        &format!("docker-archive:{}:rich/os:v1", w.path("d.tar").display()),
    ]))?;
    let want = dump(&root)?;
    run(w.bin("unstash").args(["docker-archive:d.tar", "--to", "a"]))?;
    assert_same(&want, &dump(&w.path("a"))?)?;
    let report = json(&run(w.bin("unstash").args([
        "docker-archive:d.tar:rich/os:v1",
        "--to",
        "b",
        "--json",
    ]))?)?;
    ensure!(report["layers"] == 2, "{report}");
    assert_same(&want, &dump(&w.path("b"))?)?;
    run(w
        .bin("stackmerge")
        .args(["--into", "m", "docker-archive:d.tar:docker.io/rich/os:v1"]))?;
    assert_same(&want, &dump(&w.path("m"))?)?;
    refused(
        w.bin("unstash")
            .args(["docker-archive:d.tar:rich/os:v2", "--to", "x"]),
        1,
        &["no image named", "rich/os:v1"],
    )?;
    // Read as the other kind of archive: said what it is.
    refused(
        w.bin("unstash").args(["oci-archive:d.tar", "--to", "x"]),
        1,
        &["a docker archive", "docker-archive:"],
    )?;
    run(w.cmd("skopeo").args([
        "copy",
        &format!("oci:{}:rich-os:latest", w.path("store").display()),
        &format!("oci-archive:{}:rich-os:latest", w.path("o.tar").display()),
    ]))?;
    refused(
        w.bin("unstash").args(["docker-archive:o.tar", "--to", "x"]),
        1,
        &["an OCI archive", "oci-archive:"],
    )?;

    // gzip layers inside a docker archive: no digest recorded, the diff_ids checked.
    repack(&w, "d.tar", "gz", "g.tar", |dir| {
        let mut m = docker_manifest(dir)?;
        for layer in m[0]["Layers"].as_array_mut().context("Layers")? {
            let name = layer.as_str().context("layer")?.to_owned();
            run(Command::new("gzip").arg("-n").arg(dir.join(&name)))?;
            *layer = Value::from(format!("{name}.gz"));
        }
        fs::write(dir.join("manifest.json"), serde_json::to_vec(&m)?)?;
        Ok(())
    })?;
    run(w.bin("unstash").args(["docker-archive:g.tar", "--to", "g"]))?;
    assert_same(&want, &dump(&w.path("g"))?)?;

    // A changed byte in a layer (a file's contents, the tar still well formed).
    repack(&w, "d.tar", "bad-layer", "bl.tar", |dir| {
        let m = docker_manifest(dir)?;
        let name = m[0]["Layers"][1].as_str().context("layer")?;
        let path = dir.join(name);
        let mut bytes = fs::read(&path)?;
        let at = bytes
            .windows(4)
            .position(|w| w == b"bash")
            .context("no file contents to change")?;
        bytes[at] = b'd';
        fs::write(&path, bytes).map_err(Into::into)
    })?;
    refused(
        w.bin("unstash")
            .args(["docker-archive:bl.tar", "--to", "x"]),
        1,
        &["digest mismatch"],
    )?;
    ensure!(!w.path("x").exists(), "partial output");
    // A config that is not what its name says.
    repack(&w, "d.tar", "bad-config", "bc.tar", |dir| {
        let m = docker_manifest(dir)?;
        let name = m[0]["Config"].as_str().context("config")?;
        let mut bytes = fs::read(dir.join(name))?;
        bytes.push(b' ');
        fs::write(dir.join(name), bytes).map_err(Into::into)
    })?;
    refused(
        w.bin("unstash")
            .args(["docker-archive:bc.tar", "--to", "x"]),
        1,
        &["digest mismatch", "its name says"],
    )?;
    Ok(())
}

/// `podman save` of a stash pulled into podman's own (temporary) storage.
#[test]
fn privileged_podman_save_archive_is_read() -> Result<()> {
    if !is_root() {
        skip!("needs root (the tree has devices and other owners)");
    }
    if !have("podman") {
        skip!("podman not installed (.ci/run installs it)");
    }
    let w = Workdir::new("refs-podman-save")?;
    let root = w.tree("root", SMALL)?;
    fs::create_dir_all(root.join("usr/bin"))?;
    fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\n")?;
    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "app",
    ]))?;
    // podman refuses a run root path of more than 50 characters.
    let short = ShortDir(PathBuf::from(format!("/tmp/sbp-{}", std::process::id())));
    fs::create_dir_all(&short.0)?;
    let podman = |args: &[&str]| {
        let mut c = w.cmd("podman");
        c.arg("--root")
            .arg(short.0.join("root"))
            .arg("--runroot")
            .arg(short.0.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    let src = format!("oci:{}:app:latest", w.path("store").display());
    run(&mut podman(&["pull", "-q", &src]))?;
    let images = run(&mut podman(&["images", "--format", "{{.ID}}"]))?;
    let id = images.lines().next().context("no image")?.trim().to_owned();
    run(&mut podman(&["tag", &id, "localhost/app:v1"]))?;
    run(&mut podman(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        "p.tar",
        "localhost/app:v1",
    ]))?;
    run(w.bin("unstash").args(["docker-archive:p.tar", "--to", "a"]))?;
    assert_same(&dump(&root)?, &dump(&w.path("a"))?)?;
    run(w
        .bin("stackmerge")
        .args(["--into", "m", "docker-archive:p.tar:app:v1"]))?;
    assert_same(&dump(&root)?, &dump(&w.path("m"))?)?;
    Ok(())
}

/// A directory removed when the test ends.
struct ShortDir(PathBuf);

impl Drop for ShortDir {
    fn drop(&mut self) {
        let _ = crate::util::force_remove(&self.0);
    }
}

/// An archive that is a device ends at once; so does an index.json larger than any real one.
#[test]
fn archive_edges_end_quickly() -> Result<()> {
    let w = Workdir::new("refs-archive-edges")?;
    for r in ["oci-archive:/dev/zero", "docker-archive:/dev/zero"] {
        refused(
            w.bin("unstash").args([r, "--to", "x"]),
            1,
            &["/dev/zero", "not a regular file"],
        )?;
    }
    let layout = w.path("layout");
    fs::create_dir_all(&layout)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut big = b"{\"schemaVersion\":2,\"manifests\":[]".to_vec();
    big.resize(5 << 20, b' ');
    big.push(b'}');
    fs::write(layout.join("index.json"), big)?;
    run(w.cmd("tar").args(["-cf", "big.tar", "-C", "layout", "."]))?;
    refused(
        w.bin("unstash").args(["oci-archive:big.tar", "--to", "x"]),
        1,
        &["index.json is larger than"],
    )?;
    ensure!(!w.path("x").exists(), "partial output");
    Ok(())
}

/// Transports we do not read, and forms that are no ref: bad usage, one line naming the
/// transport and the ones that work.
#[test]
fn unknown_transports_are_bad_usage() -> Result<()> {
    let w = Workdir::new("refs-transports")?;
    for (r, named) in [
        ("docker-daemon:busybox:latest", "docker-daemon:"),
        ("containers-storage:localhost/x:v1", "containers-storage:"),
        ("dir:/tmp/image", "dir:"),
        ("foo:bar:baz", "foo:"),
        ("https://h.io/x", "https://"),
    ] {
        let works = [
            "oci-archive:FILE",
            "docker-archive:FILE",
            "docker://HOST/REPO",
        ];
        let mut want = vec![named];
        want.extend(works);
        refused(w.bin("unstash").args([r, "--to", "x"]), 2, &want)?;
        refused(w.bin("stackmerge").args(["--into", "m", r]), 2, &want)?;
    }
    ensure!(
        !w.path("x").exists() && !w.path("m").exists(),
        "output written"
    );
    Ok(())
}

/// A pulled image is kept for the platform it was pulled for: offline, the same name for
/// another platform is refused; `--platform` is normalised (`uname -m` names work).
#[test]
fn registry_offline_copy_keeps_its_platform() -> Result<()> {
    if !have("skopeo") {
        skip!("skopeo not installed (needed to push an image index)");
    }
    let w = Workdir::new("refs-platform")?;
    let reg = Registry::start(&w, "reg")?;
    let a = w.tree("a", SMALL)?;
    let b = w.tree("b", SMALL)?;
    fs::write(b.join("etc/conf"), b"other\n")?;
    let stash = |root: &str, name: &str| -> Result<Value> {
        json(&run(w.bin("stash").args([
            "--store",
            "store",
            "--root",
            root,
            "--container-name",
            name,
            "--json",
            "--quiet",
        ]))?)
    };
    let ma = stash("a", "for-host")?;
    let mb = stash("b", "for-other")?;
    let (host, host_uname) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", "x86_64"),
        "aarch64" => ("arm64", "aarch64"),
        other => (other, other),
    };
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    let desc = |m: &Value, arch: &str| -> Result<Value> {
        let digest = m["manifest"].as_str().context("manifest")?;
        let size = fs::metadata(
            w.path("store/blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )?
        .len();
        Ok(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        }))
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [desc(&ma, host)?, desc(&mb, other)?],
    });
    let bytes = serde_json::to_vec(&index)?;
    let digest = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&bytes));
    fs::write(w.path("store/blobs/sha256").join(&digest), &bytes)?;
    let mut layout: Value = serde_json::from_slice(&fs::read(w.path("store/index.json"))?)?;
    layout["manifests"]
        .as_array_mut()
        .context("manifests")?
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{digest}"), "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi:latest"},
        }));
    fs::write(w.path("store/index.json"), serde_json::to_vec(&layout)?)?;
    let dest = reg.url("ns/multi:latest");
    run(w.cmd("skopeo").args([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi:latest", w.path("store").display()),
        &dest,
    ]))?;
    let offline = dest.trim_start_matches("docker://").to_owned();
    let unstash = |r: &str, to: &str, extra: &[&str]| {
        let mut c = w.bin("unstash");
        c.args([
            r,
            "--tls-verify=false",
            "--store",
            "pulled",
            "--to",
            to,
            "--json",
        ])
        .args(extra);
        c
    };
    // Pulled for the other platform, written the way uname -m would.
    let other_uname = if other == "arm64" {
        "aarch64"
    } else {
        "x86_64"
    };
    let got = json(&run(&mut unstash(
        &dest,
        "o1",
        &["--platform", &format!("linux/{other_uname}")],
    ))?)?;
    ensure!(got["digest"] == mb["manifest"], "{got}");
    ensure!(
        got["pulled"]["descriptor"]["platform"]["architecture"] == other,
        "{got}"
    );
    // Offline, that name is the other platform's: refused for this machine's...
    refused(
        &mut unstash(&offline, "x", &[]),
        1,
        &[
            &format!("a linux/{other} image, not linux/{host}"),
            "--platform",
        ],
    )?;
    ensure!(!w.path("x").exists(), "partial output");
    // ...and used for its own.
    let got = json(&run(&mut unstash(
        &offline,
        "o2",
        &["--platform", &format!("linux/{other}")],
    ))?)?;
    ensure!(got["digest"] == mb["manifest"], "{got}");
    assert_same(&dump(&b)?, &dump(&w.path("o2"))?)?;
    // Online, pulled again for this machine; then the name is this machine's.
    let got = json(&run(&mut unstash(
        &dest,
        "h1",
        &["--platform", &format!("linux/{host_uname}")],
    ))?)?;
    ensure!(got["digest"] == ma["manifest"], "{got}");
    let got = json(&run(&mut unstash(&offline, "h2", &[]))?)?;
    ensure!(got["digest"] == ma["manifest"], "{got}");
    assert_same(&dump(&a)?, &dump(&w.path("h2"))?)?;
    Ok(())
}
