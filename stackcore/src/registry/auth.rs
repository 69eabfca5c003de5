//! Registry credentials and challenges: auth files (containers-auth.json(5) and docker's
//! `config.json`, which share the `auths` shape), the credential helpers they name, and
//! `WWW-Authenticate` headers (RFC 7235).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::{Error, Result};

/// A user name and password for one registry, and where they came from.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
    /// Where they came from, for error messages: an auth file's path, `--creds`, or a
    /// credential helper and the file that named it.
    pub source: String,
}

impl fmt::Debug for Credentials {
    // Never print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Authorization: Basic ...` value.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// How long a credential helper may take to answer.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// The auth files we read, first match wins, in containers-auth.json(5)'s order and then
/// docker's: `authfile` (`--authfile`) or `$REGISTRY_AUTH_FILE`;
/// `$XDG_RUNTIME_DIR/containers/auth.json` (root without it: `/run/containers/0/auth.json`,
/// where podman writes); `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/...`);
/// `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`); `~/.dockercfg`.
pub fn auth_files(authfile: Option<&Path>) -> Vec<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = var("HOME");
    let mut files = Vec::new();
    if let Some(f) = authfile
        .map(Path::to_path_buf)
        .or_else(|| var("REGISTRY_AUTH_FILE"))
    {
        files.push(f);
    }
    match var("XDG_RUNTIME_DIR") {
        Some(d) => files.push(d.join("containers/auth.json")),
        None if rustix::process::geteuid().is_root() => {
            files.push(PathBuf::from("/run/containers/0/auth.json"));
        }
        None => {}
    }
    if let Some(d) = var("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config"))) {
        files.push(d.join("containers/auth.json"));
    }
    if let Some(d) = var("DOCKER_CONFIG").or_else(|| home.as_ref().map(|h| h.join(".docker"))) {
        files.push(d.join("config.json"));
    }
    if let Some(h) = &home {
        files.push(h.join(".dockercfg"));
    }
    files
}

/// The credentials for `host` (`HOST[:PORT]`) and its repository `repo` (for
/// per-namespace keys) from the first auth file that has some, through its credential
/// helpers when it names them. A missing file is skipped; one that cannot be read or parsed
/// is an error, since silently going on anonymously would turn a typo into a confusing
/// "unauthorized".
pub fn find_credentials(host: &str, repo: &str, files: &[PathBuf]) -> Result<Option<Credentials>> {
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(file, e)),
        };
        let found = match lookup_in(&text, host, repo, file)? {
            Found::Nothing => continue,
            Found::Auth(username, password) => {
                Some((username, password, file.display().to_string()))
            }
            Found::Helper(name) => run_helper(&name, host, file)?.map(|(u, p)| {
                (
                    u,
                    p,
                    format!("docker-credential-{name}, named in {}", file.display()),
                )
            }),
        };
        if let Some((username, password, source)) = found {
            return Ok(Some(Credentials {
                username,
                password,
                source,
            }));
        }
    }
    Ok(None)
}

/// What an auth file says about a registry.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Nothing,
    /// A user name and password.
    Auth(String, String),
    /// Ask this credential helper (`docker-credential-NAME`).
    Helper(String),
}

/// Finds `host` in the `auths` of an auth file's text. Keys may carry a scheme and a path
/// (`https://index.docker.io/v1/`), as docker writes them.
pub fn lookup(text: &str, host: &str, file: &Path) -> Result<Option<(String, String)>> {
    Ok(match lookup_in(text, host, "", file)? {
        Found::Auth(u, p) => Some((u, p)),
        _ => None,
    })
}

/// What `text` (an auth file, or docker's old `.dockercfg`, which is the `auths` map alone)
/// says about `host` and its repository `repo`: a helper in `credHelpers` first, then the
/// most specific `auths` key (`HOST/NS/REPO`, `HOST/NS`, `HOST`), then `credsStore`.
pub fn lookup_in(text: &str, host: &str, repo: &str, file: &Path) -> Result<Found> {
    #[derive(serde::Deserialize)]
    struct AuthFile {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
        #[serde(default, rename = "credHelpers")]
        cred_helpers: BTreeMap<String, String>,
        #[serde(default, rename = "credsStore")]
        creds_store: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        auth: Option<String>,
    }
    let bad = |msg: String| Error::Other(format!("auth file {}: {msg}", file.display()));
    let legacy = file.file_name().is_some_and(|n| n == ".dockercfg");
    let parsed: AuthFile = if legacy {
        AuthFile {
            auths: serde_json::from_str(text).map_err(|e| bad(format!("bad JSON: {e}")))?,
            cred_helpers: BTreeMap::new(),
            creds_store: None,
        }
    } else {
        serde_json::from_str(text).map_err(|e| bad(format!("bad JSON: {e}")))?
    };
    let is_host = |key: &str| {
        let k = normalize_key(key);
        k == host
            || (host == super::reference::DOCKER_HUB
                && (k == "index.docker.io" || k == "registry-1.docker.io"))
    };
    if let Some((_, name)) = parsed.cred_helpers.iter().find(|(k, _)| is_host(k)) {
        return Ok(Found::Helper(name.clone()));
    }
    // The most specific key: HOST/NS/REPO over HOST/NS over HOST (podman's per-namespace
    // keys), an exact HOST over a normalized one (`https://HOST/v1/`).
    let full = format!("{host}/{repo}");
    let specificity = |key: &str| -> Option<usize> {
        if key.contains("://") {
            return is_host(key).then_some(0);
        }
        if key == host {
            return Some(2);
        }
        let k = key.trim_end_matches('/');
        if k.contains('/') {
            // A namespace key matches its namespace only.
            return (!repo.is_empty() && (full == k || full.starts_with(&format!("{k}/"))))
                .then(|| 2 + k.len());
        }
        is_host(key).then_some(1)
    };
    let entry = parsed
        .auths
        .iter()
        .filter(|(_, e)| e.auth.as_deref().is_some_and(|a| !a.is_empty()))
        .filter_map(|(k, e)| specificity(k).map(|s| (s, k, e)))
        .max_by_key(|(s, _, _)| *s);
    if let Some((_, key, e)) = entry {
        let auth = e.auth.as_deref().unwrap_or_default();
        let decoded = STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(format!("auths.{key}.auth: not base64: {e}")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| bad(format!("auths.{key}.auth: not UTF-8 user:password")))?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| {
            bad(format!(
                "auths.{key}.auth: expected base64 of user:password"
            ))
        })?;
        return Ok(Found::Auth(user.to_owned(), pass.to_owned()));
    }
    if let Some(store) = parsed.creds_store.filter(|s| !s.is_empty()) {
        return Ok(Found::Helper(store));
    }
    Ok(Found::Nothing)
}

/// Runs `docker-credential-NAME get` with the server on stdin (the docker-credential-helpers
/// protocol) and reads `{"Username","Secret"}` from its stdout. "Not found" is `None`; any
/// other failure, or no answer within [`HELPER_TIMEOUT`], is one line naming the helper.
/// What the helper prints is never logged: it is the secret.
fn run_helper(name: &str, host: &str, file: &Path) -> Result<Option<(String, String)>> {
    use std::io::{Read as _, Write as _};
    use std::process::{Command, Stdio};
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let program = format!("docker-credential-{name}");
    let fail = |msg: String| {
        Error::Other(format!(
            "credential helper {program} (named in {}): {msg}",
            file.display()
        ))
    };
    // Docker Hub's helpers know it by docker's old index URL.
    let server = if host == super::reference::DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    tracing::debug!(helper = %program, server, "asking a credential helper");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its stdin is judged by its exit status below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.by_ref().take(1 << 20).read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.by_ref().take(1 << 16).read_to_end(&mut b);
        b
    });
    let deadline = std::time::Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| fail(e.to_string()))? {
            break s;
        }
        if std::time::Instant::now() > deadline {
            // Our own child, by its handle; reaped right after.
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "no answer within {} s",
                HELPER_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let said = String::from_utf8_lossy(if out.iter().any(|b| !b.is_ascii_whitespace()) {
            &out
        } else {
            &err
        })
        .into_owned();
        // The helpers' own words for "no such entry" (credentials.ErrCredentialsNotFound).
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let line = said
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let code = status
            .code()
            .map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));
        return Err(fail(format!("{} ({code})", super::text::quote(line))));
    }
    let a: Answer = serde_json::from_slice(&out)
        .map_err(|_| fail("its answer is not the JSON of the credential helper protocol".into()))?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some((a.username, a.secret)))
}

fn normalize_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased (`bearer`, `basic`).
    pub scheme: String,
    /// Its parameters, names lowercased (`realm`, `service`, `scope`, `error`).
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` value: one or more challenges, each a scheme and
/// comma-separated `name=value` or `name="quoted, \"escaped\""` parameters.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip(|b| b == b' ' || b == b'\t' || b == b',');
        if p.done() {
            break;
        }
        let token = p.token();
        if token.is_empty() {
            // Not a token character: give up on the rest rather than guess.
            break;
        }
        p.skip(|b| b == b' ' || b == b'\t');
        if p.peek() == Some(b'=') && !out.is_empty() {
            // `name=value`: a parameter of the current challenge.
            p.i += 1;
            p.skip(|b| b == b' ' || b == b'\t');
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }
    /// An RFC 7230 token (also the token68 of Basic credentials, `=` padding aside).
    fn token(&mut self) -> String {
        let start = self.i;
        self.skip(|b| {
            b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b) // ':' and '/' for lenient unquoted URLs
        });
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    fn quoted(&mut self) -> String {
        self.i += 1; // opening quote
        let mut v = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        v.push(n);
                        self.i += 1;
                    }
                }
                _ => v.push(b),
            }
        }
        String::from_utf8_lossy(&v).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        // header, then each challenge's scheme and parameters
        type Row<'a> = (&'a str, &'a [(&'a str, &'a [(&'a str, &'a str)])]);
        let table: &[Row] = &[
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#,
                &[(
                    "bearer",
                    &[
                        ("realm", "https://auth.docker.io/token"),
                        ("scope", "repository:library/debian:pull"),
                        ("service", "registry.docker.io"),
                    ],
                )],
            ),
            (
                r#"Basic realm="basic-realm""#,
                &[("basic", &[("realm", "basic-realm")])],
            ),
            (
                r#"bearer Realm = "http://h/t", scope="repository:a:pull,push", error="insufficient_scope""#,
                &[(
                    "bearer",
                    &[
                        ("error", "insufficient_scope"),
                        ("realm", "http://h/t"),
                        ("scope", "repository:a:pull,push"),
                    ],
                )],
            ),
            (
                r#"Basic realm="a \"quoted\" realm", Bearer realm=https://h/token,service=s"#,
                &[
                    ("basic", &[("realm", r#"a "quoted" realm"#)]),
                    ("bearer", &[("realm", "https://h/token"), ("service", "s")]),
                ],
            ),
            ("Negotiate", &[("negotiate", &[])]),
            ("", &[]),
        ];
        for &(header, want) in table {
            let got = parse_challenges(header);
            let want: Vec<Challenge> = want
                .iter()
                .map(|(scheme, params)| Challenge {
                    scheme: (*scheme).to_owned(),
                    params: params
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                })
                .collect();
            assert_eq!(got, want, "{header}");
        }
    }

    #[test]
    fn reads_auth_files() -> Result<()> {
        let f = Path::new("/x/auth.json");
        let enc = |s: &str| STANDARD.encode(s);
        let text = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}},"other.io":{{}}}},"credsStore":"x"}}"#,
            enc("user:pa:ss"),
            enc("hub:pw")
        );
        assert_eq!(
            lookup(&text, "127.0.0.1:5000", f)?,
            Some(("user".into(), "pa:ss".into()))
        );
        assert_eq!(
            lookup(&text, "docker.io", f)?,
            Some(("hub".into(), "pw".into()))
        );
        assert_eq!(lookup(&text, "127.0.0.1:5001", f)?, None);
        assert_eq!(lookup(&text, "other.io", f)?, None);
        assert_eq!(lookup("{}", "h", f)?, None);
        let err = lookup(r#"{"auths":{"h":{"auth":"!!"}}}"#, "h", f)
            .expect_err("bad base64")
            .to_string();
        assert!(
            err.contains("/x/auth.json") && err.contains("base64"),
            "{err}"
        );
        assert!(
            lookup(
                &format!(r#"{{"auths":{{"h":{{"auth":"{}"}}}}}}"#, enc("nocolon")),
                "h",
                f
            )
            .is_err()
        );
        assert!(lookup("not json", "h", f).is_err());
        Ok(())
    }

    #[test]
    fn helpers_namespaces_and_legacy_files() -> Result<()> {
        let f = Path::new("/x/auth.json");
        let enc = |s: &str| STANDARD.encode(s);
        let text = format!(
            r#"{{"auths":{{"h:9/ns":{{"auth":"{}"}},"h:1":{{"auth":"{}"}},"h:1/ns":{{"auth":"{}"}},"h:1/ns/deep/x":{{"auth":"{}"}}}},
                "credHelpers":{{"helped.io":"pass"}},"credsStore":"desktop"}}"#,
            enc("nine:z"),
            enc("host:a"),
            enc("ns:b"),
            enc("deep:c")
        );
        let table = [
            ("h:1", "other/x", Found::Auth("host".into(), "a".into())),
            ("h:1", "ns/x", Found::Auth("ns".into(), "b".into())),
            ("h:1", "nsx/y", Found::Auth("host".into(), "a".into())),
            ("h:9", "other/x", Found::Helper("desktop".into())),
            ("h:9", "ns/x", Found::Auth("nine".into(), "z".into())),
            ("h:1", "ns/deep/x", Found::Auth("deep".into(), "c".into())),
            ("helped.io", "ns/x", Found::Helper("pass".into())),
            ("elsewhere.io", "ns/x", Found::Helper("desktop".into())),
        ];
        for (host, repo, want) in table {
            assert_eq!(lookup_in(&text, host, repo, f)?, want, "{host}/{repo}");
        }
        // Docker's old ~/.dockercfg: the auths map alone.
        let legacy = format!(
            r#"{{"https://h:2":{{"auth":"{}","email":"e"}}}}"#,
            enc("old:pw")
        );
        assert_eq!(
            lookup_in(&legacy, "h:2", "x", Path::new("/home/u/.dockercfg"))?,
            Found::Auth("old".into(), "pw".into())
        );
        Ok(())
    }

    const PASSWORD: &str = "hunter2-never-printed";

    #[test]
    fn finds_credentials_in_order() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        let entry = |who: &str| {
            format!(
                r#"{{"auths":{{"h:1":{{"auth":"{}"}}}}}}"#,
                STANDARD.encode(format!("{who}:{PASSWORD}"))
            )
        };
        std::fs::write(&b, entry("second")).map_err(|e| Error::io(&b, e))?;
        let missing = dir.path().join("missing.json");
        let got = find_credentials("h:1", "ns/x", &[missing.clone(), a.clone(), b.clone()])?
            .expect("found in b");
        assert_eq!(
            (got.username.as_str(), got.source.as_str()),
            ("second", b.display().to_string().as_str())
        );
        std::fs::write(&a, entry("first")).map_err(|e| Error::io(&a, e))?;
        let got = find_credentials("h:1", "ns/x", &[a.clone(), b.clone()])?.expect("found in a");
        assert_eq!(got.username, "first");
        assert_eq!(
            got.basic_header(),
            format!("Basic {}", STANDARD.encode(format!("first:{PASSWORD}")))
        );
        // A word no temp directory's random name can hold (the Debug output shows the path).
        assert!(!format!("{got:?}").contains(PASSWORD));
        assert!(find_credentials("nope:1", "ns/x", &[a, b])?.is_none());
        Ok(())
    }
}
