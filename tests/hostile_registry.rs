//! A hostile registry: a small HTTP stub on 127.0.0.1 that answers as a registry chooses
//! to, and logs which headers each of its origins received. What it proves: credentials stay
//! with their origin, what a registry writes is printed as data, slow peers are bounded, and
//! size and redirect lies are refused before anything is downloaded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::util::{Workdir, output};

/// One request as the stub saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
}

/// What the stub does with a request.
pub(crate) enum Answer {
    /// Status, headers, body.
    Plain(u16, Vec<(String, String)>, Vec<u8>),
    /// Status and headers, then the body a byte at a time with this pause between bytes.
    Trickle(u16, Vec<(String, String)>, Vec<u8>, Duration),
    /// The response head a byte at a time with this pause between bytes.
    TrickleHead(Duration),
    /// Reads the request and never answers (until the client gives up).
    Silent,
}

type Handler = dyn Fn(&Seen, &[u8]) -> Answer + Send + Sync;

/// A stub server on its own port; stopped on drop.
pub(crate) struct Stub {
    pub port: u16,
    log: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    pub(crate) fn start(
        handler: impl Fn(&Seen, &[u8]) -> Answer + Send + Sync + 'static,
    ) -> Result<Stub> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (l, halt) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (l, h, halt) = (l.clone(), handler.clone(), halt.clone());
                std::thread::spawn(move || {
                    // A client that goes away mid-answer is what some tests want.
                    let _ = serve(conn, &l, &*h, &halt);
                });
            }
        });
        Ok(Stub { port, log, stop })
    }

    pub(crate) fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    conn: TcpStream,
    log: &Mutex<Vec<Seen>>,
    handler: &Handler,
    halt: &AtomicBool,
) -> Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let mut body = Vec::new();
    if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        r.by_ref().take(n).read_to_end(&mut body)?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = u64::from_str_radix(size.trim(), 16)?;
            let mut chunk = Vec::new();
            r.by_ref().take(n + 2).read_to_end(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n as usize]);
        }
    }
    let seen = Seen {
        method,
        path,
        headers,
    };
    log.lock().expect("log").push(seen.clone());
    let head = |status: u16, hs: &[(String, String)], len: usize| {
        let mut t =
            format!("HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {len}\r\n");
        for (k, v) in hs {
            t.push_str(&format!("{k}: {v}\r\n"));
        }
        t.push_str("\r\n");
        t
    };
    match handler(&seen, &body) {
        Answer::Plain(status, hs, b) => {
            w.write_all(head(status, &hs, b.len()).as_bytes())?;
            w.write_all(&b)?;
        }
        Answer::Trickle(status, hs, b, pause) => {
            w.write_all(head(status, &hs, b.len()).as_bytes())?;
            for byte in b {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                w.write_all(&[byte])?;
                std::thread::sleep(pause);
            }
        }
        Answer::TrickleHead(pause) => {
            for byte in head(200, &[], 0).bytes().chain(std::iter::repeat(b'x')) {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                w.write_all(&[byte])?;
                std::thread::sleep(pause);
            }
        }
        Answer::Silent => {
            let mut b = [0u8; 1];
            // Until the client hangs up (or the test ends).
            while !halt.load(Ordering::Relaxed) && matches!(r.read(&mut b), Ok(1)) {}
        }
    }
    Ok(())
}

fn plain(status: u16, hs: &[(&str, &str)], body: &str) -> Answer {
    Answer::Plain(
        status,
        hs.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body.as_bytes().to_vec(),
    )
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(b))
}

/// A one-file tree stashed into `store` as `xx:latest`.
fn stashed(w: &Workdir) -> Result<()> {
    let (u, g) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    w.tree(
        "root",
        &format!("d . 755 {u}:{g}\nf hello 644 {u}:{g} hi\\n\n"),
    )?;
    let o = output(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "xx",
        "--quiet",
    ]))?;
    anyhow::ensure!(o.status.success(), "stash: {o:?}");
    Ok(())
}

const BASIC: &str = "Basic YnVpbGRlcjpzM2NyZXQ="; // builder:s3cret

#[test]
fn hostile_registry_upload_location_on_another_origin_gets_no_credentials() -> Result<()> {
    let w = Workdir::new("hostile-registry-location")?;
    stashed(&w)?;
    // Origin B: where the registry sends uploads. It accepts anything, and logs.
    let b = Stub::start(|_, _| plain(201, &[], ""))?;
    let b_origin = b.origin();
    // Origin A: the registry, with Basic auth, naming B as every upload's Location.
    let a = Stub::start(move |req, body| {
        if req.headers.get("authorization").map(String::as_str) != Some(BASIC) {
            return plain(401, &[("WWW-Authenticate", "Basic realm=\"r\"")], "");
        }
        match req.method.as_str() {
            "HEAD" => plain(404, &[], ""),
            "POST" => plain(
                202,
                &[("Location", &format!("{b_origin}/upload/1?s=2"))],
                "",
            ),
            "PUT" if req.path.contains("/manifests/") => {
                plain(201, &[("Docker-Content-Digest", &sha256(body))], "")
            }
            _ => plain(200, &[], "{}"),
        }
    })?;
    fs_auth(&w, &a.host())?;
    let dest = format!("docker://{}/ns/x:latest", a.host());
    let o = output(
        w.bin("stash")
            .args([
                "--store",
                "store",
                "--container-name",
                "xx",
                "--push",
                &dest,
            ])
            .args(["--tls-verify=false", "--quiet"])
            .env("REGISTRY_AUTH_FILE", w.path("auth.json"))
            .env("HOME", w.path("home"))
            .env("XDG_RUNTIME_DIR", w.path("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG"),
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let at_b = b.seen();
    assert_eq!(at_b.len(), 2, "config and layer uploaded to B: {at_b:?}");
    for r in &at_b {
        assert_eq!(r.method, "PUT");
        assert!(
            r.path.starts_with("/upload/1?s=2&digest=sha256%3A"),
            "{r:?}"
        );
        assert!(
            !r.headers.contains_key("authorization"),
            "B got credentials: {r:?}"
        );
    }
    // A got them (the push did authenticate), on every request after the challenge.
    let at_a = a.seen();
    assert!(
        at_a.iter()
            .filter(|r| r.headers.get("authorization").map(String::as_str) == Some(BASIC))
            .count()
            >= 4,
        "{at_a:?}"
    );
    Ok(())
}

fn fs_auth(w: &Workdir, host: &str) -> Result<()> {
    let v = serde_json::json!({"auths": {host: {"auth": "YnVpbGRlcjpzM2NyZXQ="}}});
    std::fs::write(w.path("auth.json"), serde_json::to_vec(&v)?)?;
    Ok(())
}

#[test]
fn hostile_registry_token_realm_on_another_origin_gets_no_credentials() -> Result<()> {
    let w = Workdir::new("hostile-registry-realm")?;
    // The realm, on another port: it gives a token to anyone, and logs.
    let realm = Stub::start(|_, _| plain(200, &[], r#"{"token":"tok-123"}"#))?;
    let realm_url = format!("{}/token", realm.origin());
    let a = Stub::start(move |req, _| {
        if req.headers.get("authorization").map(String::as_str) != Some("Bearer tok-123") {
            let c = format!("Bearer realm=\"{realm_url}\",service=\"s\"");
            return plain(401, &[("WWW-Authenticate", &c)], "");
        }
        plain(
            404,
            &[("Content-Type", "application/json")],
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
    })?;
    fs_auth(&w, &a.host())?;
    let src = format!("docker://{}/ns/x:latest", a.host());
    let o = output(
        w.bin("unstash")
            .args([
                &src,
                "--tls-verify=false",
                "--store",
                "s",
                "--to",
                "out",
                "--quiet",
            ])
            .env("REGISTRY_AUTH_FILE", w.path("auth.json"))
            .env("HOME", w.path("home"))
            .env("XDG_RUNTIME_DIR", w.path("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG"),
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("\"manifest unknown\" (HTTP 404)"), "{err}");
    let at_realm = realm.seen();
    assert_eq!(at_realm.len(), 1, "{at_realm:?}");
    assert!(
        !at_realm[0].headers.contains_key("authorization"),
        "the realm got the registry's credentials: {at_realm:?}"
    );
    // The token went to the registry (its 404 is what came back).
    assert!(
        a.seen()
            .iter()
            .any(|r| r.headers.get("authorization").map(String::as_str) == Some("Bearer tok-123"))
    );
    Ok(())
}

#[test]
fn hostile_registry_text_is_escaped_and_on_one_line() -> Result<()> {
    let w = Workdir::new("hostile-registry-escape")?;
    let a = Stub::start(|req, _| {
        if req.path.ends_with("/manifests/evil") {
            // A manifest whose media type carries an escape sequence.
            return plain(
                200,
                &[("Content-Type", "application/json")],
                "{\"schemaVersion\":2,\"mediaType\":\"application/x\\u001b[31mred\"}",
            );
        }
        plain(
            400,
            &[("Content-Type", "application/json")],
            "{\"errors\":[{\"code\":\"X\",\"message\":\"\\u001b]0;owned\\u0007\\u001b[2Jbad\\nerror: forged line\"}]}",
        )
    })?;
    for (tag, want) in [
        (
            "latest",
            r#""\x1b]0;owned\x07\x1b[2Jbad\nerror: forged line" (HTTP 400)"#,
        ),
        (
            "evil",
            r#"manifest media type "application/x\x1b[31mred" is not supported"#,
        ),
    ] {
        let src = format!("docker://{}/ns/x:{tag}", a.host());
        let o = output(w.bin("unstash").args([
            &src,
            "--tls-verify=false",
            "--store",
            "s",
            "--to",
            "out",
            "--quiet",
        ]))?;
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            !o.stderr.contains(&0x1b) && !o.stderr.contains(&0x07),
            "raw control bytes: {err:?}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&format!("error: {src}: ")), "{err}");
        assert!(err.contains(want), "wanted {want} in {err}");
    }
    Ok(())
}

#[test]
fn hostile_registry_slow_peers_are_given_up_on() -> Result<()> {
    let w = Workdir::new("hostile-registry-slow")?;
    // A body at a byte per 200 ms, far below the 100 bytes/s asked for.
    let trickle = Stub::start(|_, _| {
        Answer::Trickle(
            200,
            vec![("Content-Type".into(), "application/json".into())],
            vec![b' '; 4000],
            Duration::from_millis(200),
        )
    })?;
    let src = format!("docker://{}/ns/x:latest", trickle.host());
    let o = output(
        w.bin("unstash")
            .args([&src, "--tls-verify=false", "--store", "s", "--to", "out"])
            .env("STACKBUILD_SPEED_LIMIT", "100")
            .env("STACKBUILD_SPEED_TIME", "1"),
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("slower than 100 bytes/s over 1 s"), "{err}");
    assert!(!w.path("out").exists());

    // A response head at a byte per 100 ms: the head must arrive within the idle timeout.
    let head = Stub::start(|_, _| Answer::TrickleHead(Duration::from_millis(100)))?;
    let src = format!("docker://{}/ns/x:latest", head.host());
    let o = output(w.bin("unstash").args([
        &src,
        "--tls-verify=false",
        "--store",
        "s",
        "--to",
        "out",
        "--idle-timeout",
        "1",
    ]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("timeout"), "{err}");
    // Progress while waiting to retry, then given up after the second time out.
    assert!(err.contains("trying again in"), "{err}");
    assert!(err.contains("(tried 2 times)"), "{err}");
    assert_eq!(head.seen().len(), 2, "{:?}", head.seen());

    // A server that reads the request and never answers.
    let silent = Stub::start(|_, _| Answer::Silent)?;
    let src = format!("docker://{}/ns/x:latest", silent.host());
    let o = output(
        w.bin("unstash")
            .args([
                &src,
                "--tls-verify=false",
                "--store",
                "s",
                "--to",
                "out",
                "--quiet",
            ])
            .env("STACKBUILD_IDLE_TIMEOUT", "1"),
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("timeout") && err.contains("(tried 2 times)"),
        "{err}"
    );
    // A bad value is bad usage.
    let o = output(
        w.bin("unstash")
            .args([&src, "--tls-verify=false", "--store", "s", "--to", "out"])
            .env("STACKBUILD_IDLE_TIMEOUT", "soon"),
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("$STACKBUILD_IDLE_TIMEOUT=\"soon\""), "{err}");
    Ok(())
}

#[test]
fn hostile_registry_huge_config_and_file_redirects_are_refused() -> Result<()> {
    let w = Workdir::new("hostile-registry-edges")?;
    let config_digest = format!("sha256:{}", "ab".repeat(32));
    let layer_digest = format!("sha256:{}", "cd".repeat(32));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 100_000_000},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": 10}],
    })
    .to_string();
    let a = Stub::start(move |req, _| {
        if req.path.ends_with("/manifests/huge") {
            return plain(
                200,
                &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                &manifest,
            );
        }
        if req.path.ends_with("/manifests/file") {
            return plain(302, &[("Location", "file:///etc/passwd")], "");
        }
        // Every blob: 100 MB of nothing, if anyone asked.
        plain(404, &[], "")
    })?;
    let src = format!("docker://{}/ns/x:huge", a.host());
    let o = output(w.bin("unstash").args([
        &src,
        "--tls-verify=false",
        "--store",
        "s",
        "--to",
        "out",
        "--quiet",
    ]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("100000000 bytes, more than an image config may be"),
        "{err}"
    );
    assert!(
        a.seen().iter().all(|r| !r.path.contains("/blobs/")),
        "a blob was asked for: {:?}",
        a.seen()
    );
    let src = format!("docker://{}/ns/x:file", a.host());
    let o = output(w.bin("unstash").args([
        &src,
        "--tls-verify=false",
        "--store",
        "s",
        "--to",
        "out",
        "--quiet",
    ]))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(r#"redirected to "file:///etc/passwd", which is not an http(s) URL: refused"#),
        "{err}"
    );
    assert!(!err.contains("too many redirects"), "{err}");
    Ok(())
}

/// Blob bytes by digest.
type Blobs = BTreeMap<String, Vec<u8>>;

/// The blobs of the stash `xx:latest` in `w/store`: (manifest bytes, its config and layers).
fn stored_image(w: &Workdir) -> Result<(Vec<u8>, Blobs)> {
    let blob = |d: &str| -> Result<Vec<u8>> {
        let hex = d.strip_prefix("sha256:").unwrap_or(d);
        Ok(std::fs::read(w.path(&format!("store/blobs/sha256/{hex}")))?)
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("store/index.json"))?)?;
    let m = index["manifests"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|d| d["digest"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no manifest in the store: {index}"))?;
    let manifest = blob(&m)?;
    let parsed: serde_json::Value = serde_json::from_slice(&manifest)?;
    let mut blobs = BTreeMap::new();
    let layers = parsed["layers"].as_array().cloned().unwrap_or_default();
    for d in std::iter::once(&parsed["config"]).chain(&layers) {
        let digest = d["digest"].as_str().unwrap_or_default().to_owned();
        blobs.insert(digest.clone(), blob(&digest)?);
    }
    Ok((manifest, blobs))
}

#[test]
fn hostile_registry_blob_redirect_to_another_origin_gets_no_credentials() -> Result<()> {
    let w = Workdir::new("hostile-registry-redirect")?;
    stashed(&w)?;
    let (manifest, blobs) = stored_image(&w)?;
    // Origin B: a "CDN" serving the blobs by digest, logging what it got.
    let cdn_blobs = blobs.clone();
    let b = Stub::start(move |req, _| {
        let digest = req.path.trim_start_matches("/cdn/");
        match cdn_blobs.get(digest) {
            Some(bytes) => Answer::Plain(200, Vec::new(), bytes.clone()),
            None => plain(404, &[], ""),
        }
    })?;
    let b_origin = b.origin();
    // Origin A: the registry, with Basic auth; its blobs answer 307 to B, relative to
    // nothing, and once through a relative redirect on its own origin first.
    let a = Stub::start(move |req, _| {
        if req.headers.get("authorization").map(String::as_str) != Some(BASIC) {
            return plain(401, &[("WWW-Authenticate", "Basic realm=\"r\"")], "");
        }
        if req.path.contains("/manifests/") {
            return Answer::Plain(
                200,
                vec![(
                    "Content-Type".into(),
                    "application/vnd.oci.image.manifest.v1+json".into(),
                )],
                manifest.clone(),
            );
        }
        if let Some(d) = req.path.strip_prefix("/v2/ns/x/blobs/") {
            return plain(302, &[("Location", &format!("../moved/{d}"))], "");
        }
        if let Some(d) = req.path.strip_prefix("/v2/ns/x/moved/") {
            return plain(307, &[("Location", &format!("{b_origin}/cdn/{d}"))], "");
        }
        plain(404, &[], "")
    })?;
    fs_auth(&w, &a.host())?;
    let src = format!("docker://{}/ns/x:latest", a.host());
    let o = output(
        w.bin("unstash")
            .args([
                &src,
                "--tls-verify=false",
                "--store",
                "pulled",
                "--to",
                "back",
                "--quiet",
            ])
            .env("REGISTRY_AUTH_FILE", w.path("auth.json"))
            .env("HOME", w.path("home"))
            .env("XDG_RUNTIME_DIR", w.path("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG"),
    )?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(std::fs::read(w.path("back/hello"))?, b"hi\n");
    let at_b = b.seen();
    assert_eq!(at_b.len(), blobs.len(), "{at_b:?}");
    for r in &at_b {
        assert!(
            !r.headers.contains_key("authorization"),
            "B got credentials: {r:?}"
        );
    }
    // The same-origin hop kept them (A answered it, which it does only with them).
    assert!(
        a.seen()
            .iter()
            .any(|r| r.path.starts_with("/v2/ns/x/moved/")
                && r.headers.get("authorization").map(String::as_str) == Some(BASIC))
    );
    Ok(())
}
