//! Registry credentials and challenges: auth files (containers-auth.json(5) and docker's
//! `config.json`, which share the `auths` shape) and `WWW-Authenticate` headers (RFC 7235).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::{Error, Result};

/// A user name and password for one registry, and the file they came from.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
    /// The auth file they were read from (named in error messages).
    pub source: PathBuf,
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

/// The auth files we read, first match wins: `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.docker/config.json` (podman's and skopeo's
/// order, then docker's).
pub fn auth_files() -> Vec<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let mut files = Vec::new();
    if let Some(f) = var("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = var("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(d).join("containers/auth.json"));
    }
    if let Some(h) = var("HOME") {
        files.push(PathBuf::from(h).join(".docker/config.json"));
    }
    files
}

/// The credentials for `host` (`HOST[:PORT]`) from the first auth file that has some.
/// A missing file is skipped; one that cannot be read or parsed is an error, since silently
/// going on anonymously would turn a typo into a confusing "unauthorized".
pub fn find_credentials(host: &str, files: &[PathBuf]) -> Result<Option<Credentials>> {
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(file, e)),
        };
        if let Some((username, password)) = lookup(&text, host, file)? {
            return Ok(Some(Credentials {
                username,
                password,
                source: file.clone(),
            }));
        }
    }
    Ok(None)
}

/// Finds `host` in the `auths` of an auth file's text. Keys may carry a scheme and a path
/// (`https://index.docker.io/v1/`), as docker writes them.
pub fn lookup(text: &str, host: &str, file: &Path) -> Result<Option<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct AuthFile {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        auth: Option<String>,
    }
    let bad = |msg: String| Error::Other(format!("auth file {}: {msg}", file.display()));
    let parsed: AuthFile = serde_json::from_str(text).map_err(|e| bad(format!("bad JSON: {e}")))?;
    let wanted = |key: &str| {
        let k = normalize_key(key);
        k == host
            || (host == super::reference::DOCKER_HUB
                && (k == "index.docker.io" || k == "registry-1.docker.io"))
    };
    // An exact key beats a normalized one (`HOST` over `https://HOST/v1/`).
    let entry = parsed
        .auths
        .get(host)
        .or_else(|| parsed.auths.iter().find(|(k, _)| wanted(k)).map(|(_, v)| v));
    let Some(auth) = entry
        .and_then(|e| e.auth.as_deref())
        .filter(|a| !a.is_empty())
    else {
        return Ok(None);
    };
    let decoded = STANDARD
        .decode(auth.trim())
        .map_err(|e| bad(format!("auths.{host}.auth: not base64: {e}")))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| bad(format!("auths.{host}.auth: not UTF-8 user:password")))?;
    let (user, pass) = decoded.split_once(':').ok_or_else(|| {
        bad(format!(
            "auths.{host}.auth: expected base64 of user:password"
        ))
    })?;
    Ok(Some((user.to_owned(), pass.to_owned())))
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
        let got =
            find_credentials("h:1", &[missing.clone(), a.clone(), b.clone()])?.expect("found in b");
        assert_eq!(
            (got.username.as_str(), got.source.as_path()),
            ("second", b.as_path())
        );
        std::fs::write(&a, entry("first")).map_err(|e| Error::io(&a, e))?;
        let got = find_credentials("h:1", &[a.clone(), b.clone()])?.expect("found in a");
        assert_eq!(got.username, "first");
        assert_eq!(
            got.basic_header(),
            format!("Basic {}", STANDARD.encode(format!("first:{PASSWORD}")))
        );
        // A word no temp directory's random name can hold (the Debug output shows the path).
        assert!(!format!("{got:?}").contains(PASSWORD));
        assert!(find_credentials("nope:1", &[a, b])?.is_none());
        Ok(())
    }
}
