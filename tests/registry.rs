//! Registries: push and pull against Debian's `docker-registry` (the distribution project's
//! registry), started per test on 127.0.0.1 with a free port and killed when the test ends.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use sha2::Digest as _;

use crate::skip;
use crate::stash::{RICH, extras};
use crate::util::{Workdir, assert_same, dump, have, is_root, json, output, run};

pub(crate) const REGISTRY: &str = "docker-registry";

/// A running registry; killed (by its PID) and reaped on drop, whatever the test did.
pub(crate) struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Registry {
    /// Starts a registry storing under `w/NAME-data`, with no auth.
    pub(crate) fn start(w: &Workdir, name: &str) -> Result<Registry> {
        Registry::start_with(w, name, "")
    }

    /// Starts a registry with htpasswd (Basic) auth.
    fn start_htpasswd(w: &Workdir, name: &str, htpasswd: &Path) -> Result<Registry> {
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
            htpasswd.display()
        );
        Registry::start_with(w, name, &auth)
    }

    /// Starts a registry with `auth` (a YAML `auth:` section, or nothing).
    fn start_with(w: &Workdir, name: &str, auth: &str) -> Result<Registry> {
        // A free port: bind port 0, note what the kernel gave, let it go.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = w.path(&format!("{name}-data"));
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            data.display()
        );
        let config_path = w.path(&format!("{name}-config.yml"));
        fs::write(&config_path, config)?;
        let log = w.path(&format!("{name}.log"));
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting docker-registry")?;
        let mut reg = Registry { child, port, log };
        reg.wait_ready()?;
        Ok(reg)
    }

    /// Waits until `GET /v2/` answers.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "docker-registry exited ({status}) before answering:\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            // Any answer will do: 200, 401 with auth on, 400 from a TLS port spoken to in
            // plain HTTP.
            if http_status(self.port, "/v2/").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry on port {} did not answer GET /v2/ within 30 s:\n{}",
                    self.port,
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn url(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.host())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Best effort: the child may have died already; either way it is reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of a plain `GET` (HTTP/1.0, so the server closes when done).
fn http_status(port: u16, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    Ok(text.get(9..12).context("status line")?.parse()?)
}

/// Skips when the registry binary is missing (`.ci/run` installs it).
macro_rules! need_registry {
    () => {
        if !have(REGISTRY) {
            skip!("docker-registry not installed (.ci/run installs it)");
        }
    };
}

fn b64(bytes: &[u8]) -> String {
    b64_with(
        bytes,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        true,
    )
}

/// base64url without padding, as JWTs use.
fn b64url(bytes: &[u8]) -> String {
    b64_with(
        bytes,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        false,
    )
}

fn b64_with(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Writes an auth file (containers-auth.json shape) for `host`.
fn auth_file(path: &Path, host: &str, user: &str, pass: &str) -> Result<()> {
    let v =
        serde_json::json!({"auths": {host: {"auth": b64(format!("{user}:{pass}").as_bytes())}}});
    fs::write(path, serde_json::to_vec_pretty(&v)?)?;
    Ok(())
}

/// Writes an auth file with the same credentials for each of `hosts`.
fn auth_file_hosts(path: &Path, hosts: &[&str], user: &str, pass: &str) -> Result<()> {
    let auth = b64(format!("{user}:{pass}").as_bytes());
    let auths: serde_json::Map<String, Value> = hosts
        .iter()
        .map(|h| ((*h).to_owned(), serde_json::json!({ "auth": auth })))
        .collect();
    fs::write(
        path,
        serde_json::to_vec_pretty(&serde_json::json!({ "auths": auths }))?,
    )?;
    Ok(())
}

/// A small tree that any user can stash and get back exactly.
const PLAIN: &str = r"
d . 755 0:0
d etc 755 0:0
f etc/os-release 644 0:0 NAME=test\n
d usr 755 0:0
d usr/bin 755 0:0
f usr/bin/tool 755 0:0 @200000
h usr/bin/tool2 usr/bin/tool
l usr/bin/link tool
t etc/os-release 1700000000.5
";

fn plain_tree(w: &Workdir, rel: &str) -> Result<PathBuf> {
    // Owners become the running user's where it is not root (util::owner_as_run).
    w.tree(rel, PLAIN)
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

#[test]
fn privileged_registry_push_inspect_pull_every_attribute() -> Result<()> {
    need_registry!();
    if !is_root() {
        skip!("needs root (owners, devices, security xattrs)");
    }
    let w = Workdir::new("registry-roundtrip")?;
    let reg = Registry::start(&w, "reg")?;
    let root = w.tree("root", RICH)?;
    extras(&root)?;
    let before = dump(&root)?;
    let dest = reg.url("ns/x:latest");
    let out = run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--push",
        &dest,
        "--tls-verify=false",
        "--json",
    ]))?;
    let report = json(&out)?;
    let manifest = report["manifest"].as_str().context("manifest")?.to_owned();
    assert_eq!(report["pushed"]["ref"], dest.as_str());
    assert_eq!(report["pushed"]["digest"], manifest.as_str());
    assert_eq!(report["pushed"]["blobs_uploaded"], 2, "{report}"); // config + layer
    assert_eq!(report["pushed"]["blobs_skipped"], 0, "{report}");

    // skopeo sees the same manifest digest, and the same bytes.
    if have("skopeo") {
        let inspect = json(&run(w.cmd("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &dest,
        ]))?)?;
        assert_eq!(inspect["Digest"], manifest.as_str());
        let raw = w
            .cmd("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", &dest])
            .output()?;
        assert!(raw.status.success());
        assert_eq!(sha256_hex(&raw.stdout), manifest);
    } else {
        eprintln!("skopeo not installed: skipping the skopeo inspect check");
    }

    // Pulled into another store and written out: the same tree in every attribute.
    let out = run(w.bin("unstash").args([
        &dest,
        "--tls-verify=false",
        "--store",
        "store2",
        "--to",
        "back",
        "--json",
    ]))?;
    let report = json(&out)?;
    assert_eq!(report["digest"], manifest.as_str());
    assert_eq!(report["pulled"]["blobs_fetched"], 2, "{report}");
    assert_same(&before, &dump(&w.path("back"))?)?;
    let blocks = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(w.path("back/sparse"))?);
    assert!(blocks < 64, "sparse file came back with {blocks} blocks");
    Ok(())
}

#[test]
fn registry_pull_keeps_the_image_under_its_registry_name_and_dedups() -> Result<()> {
    need_registry!();
    let w = Workdir::new("registry-pull")?;
    let reg = Registry::start(&w, "reg")?;
    plain_tree(&w, "root")?;
    let before = dump(&w.path("root"))?;
    let dest = reg.url("ns/x:v1");
    let out = run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "plain",
        "--push",
        &dest,
        "--tls-verify=false",
        "--json",
        "--quiet",
    ]))?;
    let manifest = json(&out)?["manifest"]
        .as_str()
        .context("manifest")?
        .to_owned();

    let pull = |to: &str, what: &str| -> Result<Value> {
        json(&run(w.bin("unstash").args([
            what,
            "--tls-verify=false",
            "--store",
            "pulled",
            "--to",
            to,
            "--json",
            "--quiet",
        ]))?)
    };
    let first = pull("back1", &dest)?;
    assert_eq!(first["pulled"]["blobs_fetched"], 2, "{first}");
    assert_eq!(
        first["pulled"]["ref_name"],
        format!("{}/ns/x:v1", reg.host())
    );
    assert_same(&before, &dump(&w.path("back1"))?)?;
    // Again: every blob is in the store already; nothing is fetched.
    let second = pull("back2", &dest)?;
    assert_eq!(second["pulled"]["blobs_fetched"], 0, "{second}");
    assert_eq!(second["pulled"]["blobs_present"], 2, "{second}");
    // By digest: the same image.
    let by_digest = format!("docker://{}/ns/x@{manifest}", reg.host());
    let third = pull("back3", &by_digest)?;
    assert_eq!(third["digest"], manifest.as_str());
    assert_same(&before, &dump(&w.path("back3"))?)?;
    // Kept under HOST/REPO:TAG: usable as a local name, and listed.
    run(w.bin("unstash").args([
        &format!("{}/ns/x:v1", reg.host()),
        "--store",
        "pulled",
        "--to",
        "back4",
        "--quiet",
    ]))?;
    assert_same(&before, &dump(&w.path("back4"))?)?;
    let index: Value = serde_json::from_slice(&fs::read(w.path("pulled/index.json"))?)?;
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .context("manifests")?
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert!(
        names.contains(&format!("{}/ns/x:v1", reg.host()).as_str()),
        "{names:?}"
    );
    let listing = json(&run(w
        .bin("stash")
        .args(["--list", "--store", "pulled", "--json"]))?)?;
    let listed: Vec<String> = listing["stashes"]
        .as_array()
        .context("stashes")?
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["name"].as_str().unwrap_or("?"),
                r["tag"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert!(
        listed.contains(&format!("{}/ns/x:v1", reg.host())),
        "{listed:?}"
    );
    // Unknown tags and unreachable registries fail with one line naming the ref.
    let missing = reg.url("ns/x:nope");
    let o = output(w.bin("unstash").args([
        &missing,
        "--tls-verify=false",
        "--store",
        "pulled",
        "--to",
        "nope",
        "--quiet",
    ]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!("error: {missing}: not in the registry")),
        "{err}"
    );
    assert!(!w.path("nope").exists());
    Ok(())
}

#[test]
fn registry_second_tag_and_second_repo_upload_no_blob_twice() -> Result<()> {
    need_registry!();
    let w = Workdir::new("registry-dedup")?;
    let reg = Registry::start(&w, "reg")?;
    plain_tree(&w, "root")?;
    let stash = |extra: &[&str]| -> Result<Value> {
        let mut c = w.bin("stash");
        c.args(["--store", "store", "--container-name", "plain", "--json"])
            .args(["--tls-verify=false", "--quiet"])
            .args(extra);
        json(&run(&mut c)?)
    };
    let first = stash(&["--root", "root", "--push", &reg.url("ns/x:latest")])?;
    assert_eq!(first["pushed"]["blobs_uploaded"], 2, "{first}");
    // The same stash under a second tag: every blob is there; only the manifest is sent.
    let second = stash(&["--push", &reg.url("ns/x:second")])?;
    assert_eq!(second["pushed"]["blobs_uploaded"], 0, "{second}");
    assert_eq!(second["pushed"]["blobs_skipped"], 2, "{second}");
    assert_eq!(second["pushed"]["digest"], first["manifest"]);
    assert_eq!(second["ref"], first["ref"]);
    // Another repository of the same registry: mounted, not uploaded.
    let third = stash(&["--push", &reg.url("other/y:latest")])?;
    assert_eq!(third["pushed"]["blobs_uploaded"], 0, "{third}");
    assert_eq!(third["pushed"]["blobs_mounted"], 2, "{third}");
    // A change: only the new layer and the new config go up.
    fs::write(w.path("root/etc/new"), b"new file\n")?;
    let fourth = stash(&["--root", "root", "--push", &reg.url("ns/x:latest")])?;
    assert_eq!(fourth["layers"], 2, "{fourth}");
    assert_eq!(fourth["pushed"]["blobs_uploaded"], 2, "{fourth}");
    assert_eq!(fourth["pushed"]["blobs_skipped"], 1, "{fourth}");
    // Without --json: the pushed ref on stdout.
    let line = run(w.bin("stash").args([
        "--store",
        "store",
        "--container-name",
        "plain",
        "--push",
        &reg.url("ns/x:third"),
        "--tls-verify=false",
        "--quiet",
    ]))?;
    assert_eq!(line.trim(), reg.url("ns/x:third"));
    // Both tags resolve to what the registry was given.
    if have("skopeo") {
        for (tag, want) in [
            ("second", &first["manifest"]),
            ("latest", &fourth["manifest"]),
        ] {
            let inspect = json(&run(w.cmd("skopeo").args([
                "inspect",
                "--tls-verify=false",
                &reg.url(&format!("ns/x:{tag}")),
            ]))?)?;
            assert_eq!(&inspect["Digest"], want, "{tag}");
        }
    }
    Ok(())
}

#[test]
fn registry_basic_auth_with_credentials_from_an_auth_file() -> Result<()> {
    need_registry!();
    if !have("htpasswd") {
        skip!("htpasswd not installed (apache2-utils; .ci/run installs it)");
    }
    let w = Workdir::new("registry-auth")?;
    let line = run(w.cmd("htpasswd").args(["-Bbn", "builder", "s3cret pass"]))?;
    fs::write(w.path("htpasswd"), line.trim())?;
    let reg = Registry::start_htpasswd(&w, "reg", &w.path("htpasswd"))?;
    plain_tree(&w, "root")?;
    let before = dump(&w.path("root"))?;
    let good = w.path("auth.json");
    auth_file(&good, &reg.host(), "builder", "s3cret pass")?;
    let bad = w.path("wrong.json");
    auth_file(&bad, &reg.host(), "builder", "not it")?;
    let none = w.path("none.json");
    auth_file(&none, "elsewhere.example:5000", "x", "y")?;
    let dest = reg.url("ns/x:latest");

    let stash = |auth: &Path| {
        let mut c = w.bin("stash");
        c.args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            "plain",
        ])
        .args(["--push", &dest, "--tls-verify=false", "--json", "--quiet"])
        .env("REGISTRY_AUTH_FILE", auth)
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", w.path("home"));
        c
    };
    // Wrong password: exit 1, one clear line naming the ref and where the credentials came from.
    let o = output(&mut stash(&bad))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let want = format!(
        "{dest}: unauthorized: wrong user name or password (credentials from {})",
        bad.display()
    );
    assert!(err.contains(&want), "wanted {want:?} in:\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // No credentials for this registry: says so, and where it looked.
    let o = output(&mut stash(&none))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unauthorized: the registry wants credentials and there are none for")
            && err.contains(&none.display().to_string()),
        "{err}"
    );
    // The right ones: pushed.
    let report = json(&run(&mut stash(&good))?)?;
    assert_eq!(report["pushed"]["blobs_uploaded"], 2, "{report}");
    // Pull with them too; a wrong password fails the pull the same way.
    let pull = |auth: &Path, to: &str| {
        let mut c = w.bin("unstash");
        c.args([&dest, "--tls-verify=false", "--store", "pulled", "--to", to])
            .arg("--quiet")
            .env("REGISTRY_AUTH_FILE", auth)
            .env_remove("XDG_RUNTIME_DIR")
            .env("HOME", w.path("home"));
        c
    };
    let o = output(&mut pull(&bad, "back-bad"))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&want), "{err}");
    assert!(!w.path("back-bad").exists());
    run(&mut pull(&good, "back"))?;
    assert_same(&before, &dump(&w.path("back"))?)?;
    // Docker's config.json is read too, when nothing earlier has credentials.
    fs::create_dir_all(w.path("home/.docker"))?;
    auth_file(
        &w.path("home/.docker/config.json"),
        &reg.host(),
        "builder",
        "s3cret pass",
    )?;
    run(&mut pull(&w.path("absent.json"), "back-docker"))?;
    assert_same(&before, &dump(&w.path("back-docker"))?)?;
    Ok(())
}

#[test]
fn registry_image_index_picks_the_platform() -> Result<()> {
    need_registry!();
    if !have("skopeo") {
        skip!("skopeo not installed (needed to push an image index)");
    }
    let w = Workdir::new("registry-index")?;
    let reg = Registry::start(&w, "reg")?;
    let a = plain_tree(&w, "a")?;
    let b = plain_tree(&w, "b")?;
    fs::write(b.join("etc/os-release"), b"NAME=other\n")?;
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
    let ma = stash("a", "for-amd")?;
    let mb = stash("b", "for-arm")?;
    // An image index over both, written into the store beside them.
    let desc = |m: &Value, arch: &str, variant: Option<&str>| -> Result<Value> {
        let digest = m["manifest"].as_str().context("manifest")?;
        let size = fs::metadata(w.path(&format!(
            "store/blobs/sha256/{}",
            digest.trim_start_matches("sha256:")
        )))?
        .len();
        let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        Ok(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size, "platform": platform,
        }))
    };
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other_arch = if host_arch == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [desc(&ma, host_arch, None)?, desc(&mb, other_arch, Some("v9"))?],
    });
    let bytes = serde_json::to_vec(&index)?;
    let digest = sha256_hex(&bytes);
    fs::write(
        w.path(&format!(
            "store/blobs/sha256/{}",
            digest.trim_start_matches("sha256:")
        )),
        &bytes,
    )?;
    let mut layout: Value = serde_json::from_slice(&fs::read(w.path("store/index.json"))?)?;
    layout["manifests"]
        .as_array_mut()
        .context("manifests")?
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": bytes.len(),
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

    let unstash = |to: &str, extra: &[&str]| {
        let mut c = w.bin("unstash");
        c.args([&dest, "--tls-verify=false", "--store", "pulled", "--to", to])
            .args(["--json", "--quiet"])
            .args(extra);
        c
    };
    // This machine's platform by default; another with --platform.
    let got = json(&run(&mut unstash("host", &[]))?)?;
    assert_eq!(got["digest"], ma["manifest"]);
    assert_same(&dump(&a)?, &dump(&w.path("host"))?)?;
    let other = format!("linux/{other_arch}");
    let got = json(&run(&mut unstash("other", &["--platform", &other]))?)?;
    assert_eq!(got["digest"], mb["manifest"]);
    assert_same(&dump(&b)?, &dump(&w.path("other"))?)?;
    // A platform the index lacks: a clear error listing what it has.
    let o = output(&mut unstash("none", &["--platform", "linux/mips64le"]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the image index has no linux/mips64le image")
            && err.contains(&format!("linux/{other_arch}/v9")),
        "{err}"
    );
    // A bad --platform is bad usage.
    let o = output(&mut unstash("bad", &["--platform", "linux"]))?;
    assert_eq!(o.status.code(), Some(2));
    Ok(())
}

#[test]
fn registry_refs_and_flags_are_checked_before_any_network() -> Result<()> {
    let w = Workdir::new("registry-usage")?;
    plain_tree(&w, "root")?;
    // --push wants a docker:// ref.
    let o = output(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "x1",
        "--push",
        "oci:/tmp/x",
    ]))?;
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // A push of an existing stash needs its name.
    let o =
        output(
            w.bin("stash")
                .args(["--store", "store", "--push", "docker://127.0.0.1:1/ns/x"]),
        )?;
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // Uppercase repositories do not exist.
    let o = output(w.bin("unstash").args([
        "docker://127.0.0.1:1/NS/x",
        "--store",
        "store",
        "--to",
        "out",
    ]))?;
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // Nothing listening: exit 1, the ref named, nothing written.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let r = format!("docker://127.0.0.1:{port}/ns/x:latest");
    let o = output(w.bin("unstash").args([
        &r,
        "--tls-verify=false",
        "--store",
        "store",
        "--to",
        "out",
        "--quiet",
    ]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("error: {r}: ")), "{err}");
    assert!(!w.path("out").exists());
    Ok(())
}

/// How a [`Flaky`] proxy fails the connections it fails.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Reads the request, then closes without a word (a dropped connection).
    Drop,
    /// Answers `503 Service Unavailable`.
    Unavailable,
    /// Forwards, but cuts the connection after this many bytes of answers.
    Cut(u64),
}

/// A TCP proxy in front of the registry that fails the first `failures` connections, then
/// forwards the rest: the registry stays real, only the network misbehaves.
struct Flaky {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes sent from the registry to the client, over all connections.
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Flaky {
    fn start(target: u16, failures: usize, fault: Fault) -> Result<Flaky> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let connections = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt, sent) = (connections.clone(), stop.clone(), answered.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                let Ok((mut client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let n = count.fetch_add(1, Ordering::Relaxed);
                let limit = match fault {
                    Fault::Cut(k) if n < failures => Some(k),
                    _ => None,
                };
                if n < failures && limit.is_none() {
                    let mut buf = [0u8; 4096];
                    let _ = client.read(&mut buf);
                    if let Fault::Unavailable = fault {
                        let _ = client.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                    continue; // dropped here
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let (mut client, mut server) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client, &mut server);
                    let _ = server.shutdown(std::net::Shutdown::Write);
                });
                let sent = sent.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    let mut total = 0u64;
                    while let Ok(got) = s2.read(&mut buf) {
                        let take = limit.map_or(got as u64, |k| (got as u64).min(k - total));
                        if got == 0 || c2.write_all(&buf[..take as usize]).is_err() {
                            break;
                        }
                        total += take;
                        sent.fetch_add(take, Ordering::Relaxed);
                        if limit.is_some_and(|k| total >= k) {
                            break;
                        }
                    }
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                    let _ = s2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Ok(Flaky {
            port,
            connections,
            answered,
            stop,
        })
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn registry_dropped_connections_and_503s_are_retried_then_given_up() -> Result<()> {
    need_registry!();
    let w = Workdir::new("registry-retry")?;
    let reg = Registry::start(&w, "reg")?;
    plain_tree(&w, "root")?;
    let before = dump(&w.path("root"))?;
    // Pushed through a proxy that drops the first two connections: the push retries.
    let flaky = Flaky::start(reg.port, 2, Fault::Drop)?;
    let dest = format!("docker://127.0.0.1:{}/ns/x:latest", flaky.port);
    let report = json(&run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "plain",
        "--push",
        &dest,
        "--tls-verify=false",
        "--json",
        "--quiet",
    ]))?)?;
    assert_eq!(report["pushed"]["blobs_uploaded"], 2, "{report}");
    assert!(flaky.connections() > 2);
    // Pulled through one that answers 503 three times: the pull retries.
    let flaky = Flaky::start(reg.port, 3, Fault::Unavailable)?;
    let src = format!("docker://127.0.0.1:{}/ns/x:latest", flaky.port);
    run(w.bin("unstash").args([
        &src,
        "--tls-verify=false",
        "--store",
        "pulled",
        "--to",
        "back",
        "--quiet",
    ]))?;
    assert_same(&before, &dump(&w.path("back"))?)?;
    // A registry that never recovers: bounded attempts, then one line with the status.
    let flaky = Flaky::start(reg.port, usize::MAX, Fault::Unavailable)?;
    let src = format!("docker://127.0.0.1:{}/ns/x:latest", flaky.port);
    let started = Instant::now();
    let o = output(w.bin("unstash").args([
        &src,
        "--tls-verify=false",
        "--store",
        "pulled2",
        "--to",
        "back2",
        "--quiet",
    ]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("(HTTP 503)"), "{err}");
    assert_eq!(flaky.connections(), 5, "5 attempts, then give up");
    assert!(started.elapsed() < Duration::from_secs(30));
    Ok(())
}

#[test]
fn registry_damaged_blob_is_refused_and_nothing_is_named() -> Result<()> {
    need_registry!();
    let w = Workdir::new("registry-damaged")?;
    let reg = Registry::start(&w, "reg")?;
    plain_tree(&w, "root")?;
    let dest = reg.url("ns/x:latest");
    let report = json(&run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "plain",
        "--push",
        &dest,
        "--tls-verify=false",
        "--json",
        "--quiet",
    ]))?)?;
    // Flip one byte of the layer where the registry keeps it (it serves what it has).
    let layer = report["layer"]["digest"].as_str().context("layer")?;
    let hex = layer.trim_start_matches("sha256:");
    let data = w.path(&format!(
        "reg-data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = fs::read(&data).with_context(|| format!("{}", data.display()))?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&data, &bytes)?;
    let o = output(w.bin("unstash").args([
        &dest,
        "--tls-verify=false",
        "--store",
        "pulled",
        "--to",
        "back",
        "--quiet",
    ]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "blob {layer} (damaged or tampered with in transit): digest mismatch"
        )),
        "{err}"
    );
    // Nothing under the layer's digest, no name for the image, no tree.
    assert!(!w.path(&format!("pulled/blobs/sha256/{hex}")).exists());
    let index = fs::read_to_string(w.path("pulled/index.json"))?;
    assert!(!index.contains("ns/x"), "{index}");
    assert!(!w.path("back").exists());
    Ok(())
}

/// A token service for the registry's Bearer auth (distribution's `auth.token`): checks
/// Basic credentials and issues RS256 JWTs signed by a throwaway key whose self-signed
/// certificate the registry trusts. The registry stays the real one; this is the separate
/// auth server every token-auth deployment has.
struct TokenServer {
    port: u16,
    cert: PathBuf,
    /// One line per request: `SCOPES|authorized` or `SCOPES|refused`.
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

const TOKEN_SERVICE: &str = "test-registry";
const TOKEN_ISSUER: &str = "test-issuer";

impl TokenServer {
    /// `users`: `(name, password, repository prefix they may use; "" for all)`.
    fn start(w: &Workdir, users: &[(&str, &str, &str)]) -> Result<TokenServer> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let key = w.path("token-key.pem");
        let cert = w.path("token-cert.pem");
        run(w
            .cmd("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args([
                "-keyout".as_ref(),
                key.as_os_str(),
                "-out".as_ref(),
                cert.as_os_str(),
                "-subj".as_ref(),
                "/CN=test-token-issuer".as_ref(),
                "-days".as_ref(),
                "2".as_ref(),
            ]))?;
        let der = w
            .cmd("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()?;
        anyhow::ensure!(der.status.success(), "openssl x509 failed");
        let x5c = b64(&der.stdout);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (seen.clone(), stop.clone());
        let accounts: Vec<(String, String, String)> = users
            .iter()
            .map(|(u, p, prefix)| {
                (
                    format!("basic {}", b64(format!("{u}:{p}").as_bytes())),
                    (*u).to_owned(),
                    (*prefix).to_owned(),
                )
            })
            .collect();
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let path = text.split(' ').nth(1).unwrap_or("").to_owned();
                let account = accounts.iter().find(|(want, _, _)| {
                    text.lines().any(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("authorization: ")
                            .is_some_and(|v| v.eq_ignore_ascii_case(want))
                    })
                });
                let authorized = account.is_some();
                let (user, prefix) = account.map_or(("anonymous", ""), |(_, u, p)| (u, p));
                let query = path.split_once('?').map_or("", |(_, q)| q);
                let scopes: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(percent_decode)
                    .collect();
                let service_ok = query
                    .split('&')
                    .any(|kv| kv == format!("service={TOKEN_SERVICE}"));
                // Anonymous requests get read-only tokens, as on public registries.
                let anonymous = !text.to_ascii_lowercase().contains("\r\nauthorization:");
                let granted: Vec<String> = if anonymous {
                    scopes
                        .iter()
                        .filter_map(|s| {
                            let (res, actions) = s.rsplit_once(':')?;
                            actions
                                .split(',')
                                .any(|a| a == "pull")
                                .then(|| format!("{res}:pull"))
                        })
                        .collect()
                } else {
                    // Each account reaches only its own repositories.
                    scopes
                        .iter()
                        .filter(|s| {
                            s.strip_prefix("repository:")
                                .is_some_and(|r| r.starts_with(prefix))
                        })
                        .cloned()
                        .collect()
                };
                let verdict = match (service_ok, authorized, anonymous) {
                    (true, true, _) => "authorized",
                    (true, false, true) => "anonymous",
                    _ => "refused",
                };
                log.lock()
                    .expect("lock")
                    .push(format!("{}|{verdict}", scopes.join(" ")));
                let answer = if verdict == "refused" {
                    let body =
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    match jwt(&key, &x5c, user, &granted) {
                        Ok(t) => {
                            let body = format!(r#"{{"token":"{t}","expires_in":300}}"#);
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                        }
                        Err(e) => format!(
                            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{e}",
                            e.to_string().len()
                        ),
                    }
                };
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        Ok(TokenServer {
            port,
            cert,
            seen,
            stop,
        })
    }

    /// The registry's `auth:` section pointing at this server.
    fn registry_auth(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    \
             issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.port,
            self.cert.display()
        )
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len() + 1
            && let Ok(v) = u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An RS256 JWT granting `scopes` (`repository:NAME:ACTIONS`), signed with `openssl dgst`.
fn jwt(key: &Path, x5c: &str, user: &str, scopes: &[String]) -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let access: Vec<Value> = scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header)?),
        b64url(&serde_json::to_vec(&claims)?)
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(signing_input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "openssl dgst -sign failed");
    Ok(format!("{signing_input}.{}", b64url(&out.stdout)))
}

#[test]
fn registry_bearer_token_auth_with_credentials_from_an_auth_file() -> Result<()> {
    need_registry!();
    if !have("openssl") {
        skip!("openssl not installed (needed to sign the test token service's JWTs)");
    }
    let w = Workdir::new("registry-bearer")?;
    let tokens = TokenServer::start(
        &w,
        &[
            ("builder", "t0ken pass", ""),
            ("team-b", "b pass", "team-b/"),
        ],
    )?;
    let reg = Registry::start_with(&w, "reg", &tokens.registry_auth())?;
    plain_tree(&w, "root")?;
    let before = dump(&w.path("root"))?;
    // The token service is another origin (another port): credentials go to it only when
    // they are configured for it too, as here, not because the registry named it.
    let token_host = format!("127.0.0.1:{}", tokens.port);
    let good = w.path("auth.json");
    auth_file_hosts(&good, &[&reg.host(), &token_host], "builder", "t0ken pass")?;
    let bad = w.path("wrong.json");
    auth_file_hosts(&bad, &[&reg.host(), &token_host], "builder", "nope")?;
    let dest = reg.url("ns/x:latest");
    let with_auth = |c: &mut Command, auth: &Path| {
        c.env("REGISTRY_AUTH_FILE", auth)
            .env_remove("XDG_RUNTIME_DIR")
            .env("HOME", w.path("home"));
    };
    let mut push = w.bin("stash");
    push.args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "plain",
    ])
    .args(["--push", &dest, "--tls-verify=false", "--json", "--quiet"]);
    with_auth(&mut push, &good);
    let report = json(&run(&mut push)?)?;
    assert_eq!(report["pushed"]["blobs_uploaded"], 2, "{report}");
    // The token service was asked for push rights on the repository, with our credentials.
    let seen = tokens.seen();
    assert!(
        seen.iter()
            .any(|l| l == "repository:ns/x:pull,push|authorized"),
        "{seen:?}"
    );
    // A pull through a token too.
    let mut pull = w.bin("unstash");
    pull.args([
        &dest,
        "--tls-verify=false",
        "--store",
        "pulled",
        "--to",
        "back",
    ])
    .arg("--quiet");
    with_auth(&mut pull, &good);
    run(&mut pull)?;
    assert_same(&before, &dump(&w.path("back"))?)?;
    // The token service refuses a wrong password: the same clear line as Basic auth.
    let mut pull = w.bin("unstash");
    pull.args([
        &dest,
        "--tls-verify=false",
        "--store",
        "pulled2",
        "--to",
        "back2",
    ])
    .arg("--quiet");
    with_auth(&mut pull, &bad);
    let o = output(&mut pull)?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let want = format!(
        "{dest}: unauthorized: wrong user name or password (credentials from {})",
        bad.display()
    );
    assert!(err.contains(&want), "wanted {want:?} in:\n{err}");
    // No credentials at all: an anonymous token pulls, but cannot push.
    let none = w.path("none.json");
    let mut pull = w.bin("unstash");
    pull.args([
        &dest,
        "--tls-verify=false",
        "--store",
        "pulled3",
        "--to",
        "back3",
    ])
    .arg("--quiet");
    with_auth(&mut pull, &none);
    run(&mut pull)?;
    assert_same(&before, &dump(&w.path("back3"))?)?;
    assert!(
        tokens
            .seen()
            .iter()
            .any(|l| l == "repository:ns/x:pull|anonymous"),
        "{:?}",
        tokens.seen()
    );
    let mut push = w.bin("stash");
    push.args(["--store", "store", "--container-name", "plain"])
        .args([
            "--push",
            &reg.url("ns/anon:latest"),
            "--tls-verify=false",
            "--quiet",
        ]);
    with_auth(&mut push, &none);
    let o = output(&mut push)?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unauthorized: the registry wants credentials and there are none for"),
        "{err}"
    );
    // Another account, on the same build host and store, that may not read ns/x: the mount
    // from ns/x is refused, so the blobs are uploaded instead, and the push succeeds.
    let team_b = w.path("team-b.json");
    auth_file_hosts(&team_b, &[&reg.host(), &token_host], "team-b", "b pass")?;
    let mut push = w.bin("stash");
    push.args(["--store", "store", "--container-name", "plain", "--json"])
        .args(["--push", &reg.url("team-b/y:latest"), "--tls-verify=false"]);
    with_auth(&mut push, &team_b);
    let o = output(&mut push)?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("from ns/x refused (HTTP 401); uploading it"),
        "{err}"
    );
    let report = json(&String::from_utf8_lossy(&o.stdout))?;
    assert_eq!(report["pushed"]["blobs_uploaded"], 2, "{report}");
    assert_eq!(report["pushed"]["blobs_mounted"], 0, "{report}");
    Ok(())
}

#[test]
fn registry_docker_schema2_images_pull_too() -> Result<()> {
    need_registry!();
    if !have("skopeo") {
        skip!("skopeo not installed (needed to write a Docker schema 2 image)");
    }
    let w = Workdir::new("registry-docker-v2s2")?;
    let reg = Registry::start(&w, "reg")?;
    plain_tree(&w, "root")?;
    let before = dump(&w.path("root"))?;
    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "plain",
        "--quiet",
    ]))?;
    // skopeo converts our OCI image to Docker's manifest, config and layer media types.
    let dest = reg.url("ns/docker:latest");
    run(w.cmd("skopeo").args([
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:plain:latest", w.path("store").display()),
        &dest,
    ]))?;
    let raw = w
        .cmd("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &dest])
        .output()?;
    let manifest: Value = serde_json::from_slice(&raw.stdout)?;
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let report = json(&run(w.bin("unstash").args([
        &dest,
        "--tls-verify=false",
        "--store",
        "pulled",
        "--to",
        "back",
        "--json",
        "--quiet",
    ]))?)?;
    assert_eq!(report["digest"], sha256_hex(&raw.stdout));
    assert_same(&before, &dump(&w.path("back"))?)?;
    // And it goes back up unchanged: pushed from the store, the digest stays.
    let o = run(w.bin("stash").args([
        "--store",
        "pulled",
        "--container-name",
        &format!("{}/ns/docker", reg.host()),
        "--push",
        &reg.url("ns/again:latest"),
        "--tls-verify=false",
        "--json",
        "--quiet",
    ]))?;
    let pushed = json(&o)?;
    assert_eq!(pushed["pushed"]["digest"], report["digest"]);
    assert_eq!(pushed["pushed"]["blobs_mounted"], 2, "{pushed}");
    Ok(())
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it: `(ca.pem, srv.pem, srv.key)`.
fn test_certificates(w: &Workdir) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let p = |n: &str| w.path(n).display().to_string();
    run(w.cmd("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-subj",
        "/CN=stackbuild test CA",
        "-days",
        "2",
    ]))?;
    run(w.cmd("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("srv.key"),
        "-out",
        &p("srv.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]))?;
    fs::write(
        w.path("srv.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    run(w.cmd("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("srv.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("srv.pem"),
        "-days",
        "2",
        "-extfile",
        &p("srv.ext"),
    ]))?;
    Ok((w.path("ca.pem"), w.path("srv.pem"), w.path("srv.key")))
}

#[test]
fn registry_https_is_verified_against_the_system_roots() -> Result<()> {
    need_registry!();
    if !have("openssl") {
        skip!("openssl not installed (needed to make a test CA)");
    }
    let w = Workdir::new("registry-https")?;
    let (ca, cert, key) = test_certificates(&w)?;
    let tls = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    );
    // The `tls:` block belongs under `http:`, which the config ends with when auth is empty.
    let reg = Registry::start_with(&w, "reg", &tls)?;
    plain_tree(&w, "root")?;
    let before = dump(&w.path("root"))?;
    let dest = reg.url("ns/x:latest");
    let push = |extra_env: Option<&Path>| {
        let mut c = w.bin("stash");
        c.args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            "plain",
        ])
        .args(["--push", &dest, "--json", "--quiet"])
        .env_remove("SSL_CERT_DIR");
        match extra_env {
            // rustls-platform-verifier reads the system roots through rustls-native-certs,
            // which honours SSL_CERT_FILE as OpenSSL does: the test CA becomes "the system's".
            Some(f) => c.env("SSL_CERT_FILE", f),
            None => c.env_remove("SSL_CERT_FILE"),
        };
        c
    };
    // A CA the system does not trust: refused, at once, saying why.
    let started = Instant::now();
    let o = output(&mut push(None))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("error: pushing stash plain:latest: {dest}: ")),
        "{err}"
    );
    assert!(
        err.contains("certificate is not trusted by this system's CA roots"),
        "{err}"
    );
    assert!(
        !err.contains("tried"),
        "TLS failures are not retried: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Trusted: pushed and pulled over HTTPS.
    let report = json(&run(&mut push(Some(&ca)))?)?;
    assert_eq!(report["pushed"]["blobs_uploaded"], 2, "{report}");
    run(w
        .bin("unstash")
        .args([&dest, "--store", "pulled", "--to", "back", "--quiet"])
        .env("SSL_CERT_FILE", &ca))?;
    assert_same(&before, &dump(&w.path("back"))?)?;

    // Other tools read docker:// refs too (through stackcore::open::open_ref):
    // kiwimerge takes a pushed stash's image/config.xml as its base.
    fs::create_dir_all(w.path("root/image"))?;
    fs::write(
        w.path("root/image/config.xml"),
        r#"<?xml version="1.0" encoding="utf-8"?>
<image schemaversion="8.5" name="b">
    <description type="system"><author>A</author><contact>c</contact><specification>s</specification></description>
    <preferences><version>1</version><packagemanager>zypper</packagemanager><type image="oem"/></preferences>
    <packages type="image"><package name="from-the-registry"/></packages>
</image>
"#,
    )?;
    run(&mut push(Some(&ca)))?;
    fs::write(
        w.path("overlay.xml"),
        r#"<image><packages type="image"><package name="from-the-overlay"/></packages></image>"#,
    )?;
    let merged = run(w
        .bin("kiwimerge")
        .args([dest.as_str(), "overlay.xml", "--store", "pulled"])
        .env("SSL_CERT_FILE", &ca))?;
    assert!(
        merged.contains(r#"<package name="from-the-registry"/>"#)
            && merged.contains(r#"<package name="from-the-overlay"/>"#),
        "{merged}"
    );
    Ok(())
}

#[test]
fn registry_broken_off_blob_download_resumes_where_it_stopped() -> Result<()> {
    need_registry!();
    let w = Workdir::new("registry-resume")?;
    let reg = Registry::start(&w, "reg")?;
    plain_tree(&w, "root")?;
    // 4 MiB that gzip cannot shrink, so the layer is about that big.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(w.path("root/usr/bin/noise"), &noise)?;
    let before = dump(&w.path("root"))?;
    let report = json(&run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "plain",
        "--push",
        &reg.url("ns/x:latest"),
        "--tls-verify=false",
        "--json",
        "--quiet",
    ]))?)?;
    let layer_size = report["layer"]["size"].as_u64().context("layer size")?;
    assert!(layer_size > 4_000_000, "{report}");
    // The first connection is cut 2 MiB into its answers: in the middle of the layer.
    let flaky = Flaky::start(reg.port, 1, Fault::Cut(2 << 20))?;
    let src = format!("docker://127.0.0.1:{}/ns/x:latest", flaky.port);
    let o = output(w.bin("unstash").args([
        &src,
        "--tls-verify=false",
        "--store",
        "pulled",
        "--to",
        "back",
        "--quiet",
    ]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("transfer broke off at byte") && err.contains("resuming"),
        "{err}"
    );
    assert_same(&before, &dump(&w.path("back"))?)?;
    // Resumed, not started over: what crossed the wire is about one layer, not one and a half.
    let answered = flaky.answered.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        answered < layer_size + (512 << 10),
        "{answered} bytes sent for a {layer_size}-byte layer"
    );
    Ok(())
}

#[test]
fn registry_stackbuild_from_registry_stacks_exactly_what_it_pulled() -> Result<()> {
    need_registry!();
    let w = Workdir::new("registry-stackbuild")?;
    let reg = Registry::start(&w, "reg")?;
    plain_tree(&w, "root")?;
    let pushed = json(&run(w.bin("stash").args([
        "--store",
        "push-store",
        "--root",
        "root",
        "--container-name",
        "base",
        "--push",
        &reg.url("builds/base:latest"),
        "--tls-verify=false",
        "--json",
        "--quiet",
    ]))?)?;
    // A local stash of the same name with other contents: the original plugin would build
    // from it; we must not.
    let decoy = plain_tree(&w, "decoy")?;
    fs::write(decoy.join("etc/os-release"), b"NAME=decoy\n")?;
    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "decoy",
        "--container-name",
        "base",
        "--quiet",
    ]))?;
    let out = crate::util::run_prepare_only(w.bin("stackbuild").args([
        "--store",
        "store",
        "--stash",
        "base",
        "--from-registry",
        &format!("{}/builds", reg.host()),
        "--tls-verify=false",
        "--target-dir",
        "T",
        "--prepare-only",
        "--quiet",
    ]))?;
    let root = w.path("T/build/image-root");
    assert_eq!(
        fs::read_to_string(root.join("etc/os-release"))?,
        "NAME=test\n",
        "{out}"
    );
    let opts = crate::util::DumpOpts {
        no_root: true,
        ..Default::default()
    };
    assert_same(
        &crate::util::dump_with(&w.path("root"), opts)?,
        &crate::util::dump_with(&root, opts)?,
    )?;
    // The pulled image is in the store under its registry name, with the pushed digest.
    let index = fs::read_to_string(w.path("store/index.json"))?;
    assert!(
        index.contains(&format!("{}/builds/base:latest", reg.host()))
            && index.contains(pushed["manifest"].as_str().context("manifest")?),
        "{index}"
    );
    Ok(())
}

#[test]
fn registry_https_registry_with_an_http_token_realm_is_refused() -> Result<()> {
    need_registry!();
    if !have("openssl") {
        skip!("openssl not installed (needed to make a test CA)");
    }
    let w = Workdir::new("registry-http-realm")?;
    let (ca, cert, key) = test_certificates(&w)?;
    // The realm: plain http on another port, logging whatever reaches it.
    let realm = crate::hostile_registry::Stub::start(|_, _| {
        crate::hostile_registry::Answer::Plain(200, Vec::new(), br#"{"token":"t"}"#.to_vec())
    })?;
    let config = format!(
        "  tls:\n    certificate: {}\n    key: {}\nauth:\n  token:\n    realm: {}/token\n    \
         service: s\n    issuer: i\n    rootcertbundle: {}\n",
        cert.display(),
        key.display(),
        realm.origin(),
        ca.display()
    );
    let reg = Registry::start_with(&w, "reg", &config)?;
    plain_tree(&w, "root")?;
    // Credentials for both, so only the refusal keeps them from the realm.
    auth_file_hosts(
        &w.path("auth.json"),
        &[&reg.host(), &realm.host()],
        "builder",
        "s3cret",
    )?;
    let dest = reg.url("ns/x:latest");
    let o = output(
        w.bin("stash")
            .args([
                "--store",
                "store",
                "--root",
                "root",
                "--container-name",
                "plain",
            ])
            .args(["--push", &dest, "--quiet"])
            .env("SSL_CERT_FILE", &ca)
            .env("REGISTRY_AUTH_FILE", w.path("auth.json"))
            .env("HOME", w.path("home"))
            .env("XDG_RUNTIME_DIR", w.path("run")),
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let want = format!(
        "{dest}: token realm {}/token is plain http while the registry is https: refused",
        realm.origin()
    );
    assert!(err.contains(&want), "wanted {want:?} in:\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        realm.seen().is_empty(),
        "the realm was asked: {:?}",
        realm.seen()
    );
    Ok(())
}

/// An environment with no credentials anywhere but where a test puts them: HOME, XDG dirs
/// and docker's config dir all inside the test directory.
fn isolated(w: &Workdir, c: &mut Command) {
    c.env("HOME", w.path("home"))
        .env("XDG_RUNTIME_DIR", w.path("run"))
        .env("XDG_CONFIG_HOME", w.path("home/.config"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG");
}

/// Starts an htpasswd registry for `builder` / `s3cret pass`, with a stash `plain` pushed
/// to it as `ns/x:latest`; returns the registry and the pushed tree's dump.
fn basic_auth_registry(w: &Workdir) -> Result<(Registry, String)> {
    let line = run(w.cmd("htpasswd").args(["-Bbn", "builder", "s3cret pass"]))?;
    fs::write(w.path("htpasswd"), line.trim())?;
    let reg = Registry::start_htpasswd(w, "reg", &w.path("htpasswd"))?;
    plain_tree(w, "root")?;
    fs::create_dir_all(w.path("run"))?;
    fs::create_dir_all(w.path("home"))?;
    let before = dump(&w.path("root"))?;
    let mut c = w.bin("stash");
    c.args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "plain",
    ])
    .args([
        "--push",
        &reg.url("ns/x:latest"),
        "--tls-verify=false",
        "--quiet",
    ])
    .args(["--creds", "builder:s3cret pass"]);
    isolated(w, &mut c);
    run(&mut c)?;
    Ok((reg, before))
}

/// `unstash REF --to TO` from the test's registry, isolated, with `extra` arguments.
fn pull_cmd(w: &Workdir, reg: &Registry, to: &str, extra: &[&str]) -> Command {
    let mut c = w.bin("unstash");
    c.args([&reg.url("ns/x:latest"), "--tls-verify=false", "--store"])
        .arg(format!("{to}-store"))
        .args(["--to", to])
        .args(extra);
    isolated(w, &mut c);
    c
}

#[test]
fn registry_credentials_from_flags_files_and_helpers() -> Result<()> {
    need_registry!();
    if !have("htpasswd") {
        skip!("htpasswd not installed (apache2-utils; .ci/run installs it)");
    }
    let w = Workdir::new("registry-creds")?;
    let (reg, before) = basic_auth_registry(&w)?;
    // Nothing anywhere: unauthorized, naming every place looked in, in order.
    let o = output(&mut pull_cmd(&w, &reg, "none", &["--quiet"]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let home = w.path("home");
    let order = [
        w.path("run/containers/auth.json"),
        home.join(".config/containers/auth.json"),
        home.join(".docker/config.json"),
        home.join(".dockercfg"),
    ]
    .map(|p| p.display().to_string())
    .join(", ");
    assert!(err.contains(&format!("(looked in {order})")), "{err}");
    // --creds without a password and no terminal: bad usage, said so, nothing asked.
    let o = output(pull_cmd(&w, &reg, "nopw", &["--creds", "builder"]).stdin(Stdio::null()))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("stdin is not a terminal"), "{err}");
    // --creds USER on a terminal (util-linux `script` gives it one): asked for, not echoed.
    if have("script") {
        let cmd = pull_cmd(&w, &reg, "prompted", &["--creds", "builder", "--quiet"]);
        let line = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut sh = w.cmd("script");
        sh.args(["-qefc", &line, "/dev/null"]);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        let mut child = sh
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut out = child.stdout.take().context("stdout")?;
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        // Until the prompt: then the password is typed.
        while !String::from_utf8_lossy(&seen).contains("Password for builder: ") {
            anyhow::ensure!(
                out.read(&mut byte)? == 1,
                "no prompt: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.push(byte[0]);
        }
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(b"s3cret pass\n")?;
        out.read_to_end(&mut seen)?;
        drop(stdin);
        let status = child.wait()?;
        let shown = String::from_utf8_lossy(&seen);
        assert!(status.success(), "{shown}");
        assert!(
            !shown.contains("s3cret"),
            "the password was echoed: {shown:?}"
        );
        assert_same(&before, &dump(&w.path("prompted"))?)?;
    }
    // --authfile.
    auth_file(&w.path("a.json"), &reg.host(), "builder", "s3cret pass")?;
    let authfile = w.path("a.json").display().to_string();
    run(&mut pull_cmd(
        &w,
        &reg,
        "authfile",
        &["--authfile", &authfile, "--quiet"],
    ))?;
    assert_same(&before, &dump(&w.path("authfile"))?)?;
    // $XDG_CONFIG_HOME/containers/auth.json, with a per-namespace key beating the host's.
    fs::create_dir_all(w.path("home/.config/containers"))?;
    let v = serde_json::json!({"auths": {
        reg.host(): {"auth": b64(b"builder:wrong")},
        format!("{}/ns", reg.host()): {"auth": b64(b"builder:s3cret pass")},
    }});
    fs::write(w.path("home/.config/containers/auth.json"), v.to_string())?;
    run(&mut pull_cmd(&w, &reg, "xdg", &["--quiet"]))?;
    assert_same(&before, &dump(&w.path("xdg"))?)?;
    fs::remove_file(w.path("home/.config/containers/auth.json"))?;

    // Credential helpers on PATH, named by docker's config.json ($DOCKER_CONFIG).
    let bin = w.path("bin");
    fs::create_dir_all(&bin)?;
    let helper = |name: &str, script: &str| -> Result<()> {
        let p = bin.join(format!("docker-credential-{name}"));
        fs::write(&p, script)?;
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(())
    };
    helper(
        "good",
        &format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 9\nread -r server\necho \"$server\" >> {}\n\
             if [ \"$server\" = {} ]; then\n  printf '%s' '{{\"ServerURL\":\"'\"$server\"'\",\
             \"Username\":\"builder\",\"Secret\":\"s3cret pass\"}}'\nelse\n  \
             echo 'credentials not found in native keychain'; exit 1\nfi\n",
            w.path("asked").display(),
            reg.host()
        ),
    )?;
    helper(
        "broken",
        "#!/bin/sh\nprintf '\\033[31mboom\\nerror: forged\\n' >&2\nexit 3\n",
    )?;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let docker = w.path("docker");
    fs::create_dir_all(&docker)?;
    for (i, config) in [
        serde_json::json!({"credHelpers": {reg.host(): "good"}}),
        serde_json::json!({"auths": {reg.host(): {}}, "credsStore": "good"}),
    ]
    .iter()
    .enumerate()
    {
        fs::write(docker.join("config.json"), config.to_string())?;
        let to = format!("helper{i}");
        let o = output(
            pull_cmd(&w, &reg, &to, &["-vvv"])
                .env("DOCKER_CONFIG", &docker)
                .env("PATH", &path),
        )?;
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{config}: {err}");
        assert_same(&before, &dump(&w.path(&to))?)?;
        // Never the secret, in any form, even at -vvv.
        for secret in ["s3cret pass".to_owned(), b64(b"builder:s3cret pass")] {
            assert!(!err.contains(&secret), "{secret} in:\n{err}");
        }
        assert!(
            err.contains("docker-credential-good"),
            "-vvv names the helper: {err}"
        );
    }
    assert_eq!(
        fs::read_to_string(w.path("asked"))?,
        format!("{0}\n{0}\n", reg.host()),
        "the server on the helper's stdin"
    );
    // A helper that fails: one line naming it, its words escaped.
    fs::write(
        docker.join("config.json"),
        serde_json::json!({"credHelpers": {reg.host(): "broken"}}).to_string(),
    )?;
    let o = output(
        pull_cmd(&w, &reg, "broken", &["--quiet"])
            .env("DOCKER_CONFIG", &docker)
            .env("PATH", &path),
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let want = format!(
        "credential helper docker-credential-broken (named in {}): \"\\x1b[31mboom\" (exit 3)",
        docker.join("config.json").display()
    );
    assert!(err.contains(&want), "wanted {want:?} in:\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A helper that is not installed: the same, saying so.
    fs::write(
        docker.join("config.json"),
        serde_json::json!({"credHelpers": {reg.host(): "absent"}}).to_string(),
    )?;
    let o = output(pull_cmd(&w, &reg, "absent", &["--quiet"]).env("DOCKER_CONFIG", &docker))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("credential helper docker-credential-absent (named in")
            && err.contains("cannot run it"),
        "{err}"
    );
    Ok(())
}

/// Where podman as root without `XDG_RUNTIME_DIR` keeps its logins.
const ROOT_AUTH: &str = "/run/containers/0/auth.json";
/// Logs out of a test registry again, whatever happened.
struct Logout<'a>(&'a Workdir, String, bool);
impl Drop for Logout<'_> {
    fn drop(&mut self) {
        let mut c = self.0.cmd("podman");
        c.args(["logout", &self.1])
            .env_remove("XDG_RUNTIME_DIR")
            .env("HOME", self.0.path("home"));
        // Best effort: an entry that is not there is fine.
        let _ = c.output();
        // A file this test made, now empty, goes too (best effort, as above).
        if !self.2 {
            let _ = fs::remove_file(ROOT_AUTH);
        }
    }
}

#[test]
fn privileged_registry_podman_login_is_found_with_and_without_xdg_runtime_dir() -> Result<()> {
    need_registry!();
    if !is_root() {
        skip!("podman writes /run/containers/0/auth.json for root only");
    }
    if !have("podman") || !have("htpasswd") {
        skip!("podman or htpasswd not installed (.ci/run installs them)");
    }
    let w = Workdir::new("registry-podman-login")?;
    let (reg, before) = basic_auth_registry(&w)?;
    let login = |xdg: bool| -> Result<()> {
        let mut c = w.cmd("podman");
        c.args([
            "login",
            "--tls-verify=false",
            "-u",
            "builder",
            "--password-stdin",
        ])
        .arg(reg.host());
        isolated(&w, &mut c);
        if !xdg {
            c.env_remove("XDG_RUNTIME_DIR");
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(b"s3cret pass")?;
        let o = child.wait_with_output()?;
        anyhow::ensure!(
            o.status.success(),
            "podman login: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(())
    };
    // With XDG_RUNTIME_DIR: $XDG_RUNTIME_DIR/containers/auth.json.
    login(true)?;
    assert!(w.path("run/containers/auth.json").exists());
    run(&mut pull_cmd(&w, &reg, "xdg", &["--quiet"]))?;
    assert_same(&before, &dump(&w.path("xdg"))?)?;
    fs::remove_file(w.path("run/containers/auth.json"))?;
    // Without (root): /run/containers/0/auth.json. Logged out again whatever happens, so the
    // machine keeps no entry for this test's port.
    let _logout = Logout(&w, reg.host(), Path::new(ROOT_AUTH).exists());
    login(false)?;
    let text = fs::read_to_string(ROOT_AUTH)?;
    assert!(text.contains(&reg.host()), "{text}");
    let mut c = pull_cmd(&w, &reg, "no-xdg", &["--quiet"]);
    c.env_remove("XDG_RUNTIME_DIR");
    run(&mut c)?;
    assert_same(&before, &dump(&w.path("no-xdg"))?)?;
    Ok(())
}

#[test]
fn registry_client_certificate_from_cert_dir() -> Result<()> {
    need_registry!();
    if !have("openssl") {
        skip!("openssl not installed (needed to make a test CA)");
    }
    let w = Workdir::new("registry-cert-dir")?;
    let (ca, cert, key) = test_certificates(&w)?;
    let p = |n: &str| w.path(n).display().to_string();
    // A client certificate signed by the same CA.
    run(w.cmd("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("client.key"),
        "-out",
        &p("client.csr"),
        "-subj",
        "/CN=builder",
    ]))?;
    fs::write(
        w.path("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )?;
    run(w.cmd("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("client.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("client.pem"),
        "-days",
        "2",
        "-extfile",
        &p("client.ext"),
    ]))?;
    let certs = w.path("certs.d");
    fs::create_dir_all(&certs)?;
    fs::copy(&ca, certs.join("ca.crt"))?;
    fs::copy(w.path("client.pem"), certs.join("client.cert"))?;
    fs::copy(w.path("client.key"), certs.join("client.key"))?;
    let tls = format!(
        "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
        cert.display(),
        key.display(),
        ca.display()
    );
    let reg = Registry::start_with(&w, "reg", &tls)?;
    plain_tree(&w, "root")?;
    let before = dump(&w.path("root"))?;
    let dest = reg.url("ns/x:latest");
    let push = |extra: &[&str]| {
        let mut c = w.bin("stash");
        c.args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            "plain",
        ])
        .args(["--push", &dest, "--quiet"])
        .args(extra)
        .env_remove("SSL_CERT_DIR");
        isolated(&w, &mut c);
        c
    };
    // The CA trusted (through SSL_CERT_FILE) but no client certificate: refused by the registry.
    let o = output(push(&[]).env("SSL_CERT_FILE", &ca))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // --cert-dir: its CA and its client certificate, and nothing else needed.
    let dir = certs.display().to_string();
    run(push(&["--cert-dir", &dir]).env_remove("SSL_CERT_FILE"))?;
    run(w
        .bin("unstash")
        .args([
            &dest,
            "--store",
            "pulled",
            "--to",
            "back",
            "--quiet",
            "--cert-dir",
            &dir,
        ])
        .env_remove("SSL_CERT_FILE"))?;
    assert_same(&before, &dump(&w.path("back"))?)?;
    // A key without its certificate's pair is a clear usage error.
    fs::remove_file(certs.join("client.key"))?;
    let o = output(&mut push(&["--cert-dir", &dir]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("--cert-dir {dir}: ")) && err.contains("client.key"),
        "{err}"
    );
    Ok(())
}
