//! The HTTP side: one client per registry repository, with auth (anonymous, Basic, Bearer
//! tokens), bounded retries with backoff, and registry errors turned into one clear line.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::http::{Response, header};

use super::RegistryOptions;
use super::auth::{Challenge, Credentials, auth_files, find_credentials, parse_challenges};
use super::reference::RegistryRef;
use crate::{Error, Result};

/// Attempts per request (the first and the retries) on 429, 5xx and dropped connections.
pub(crate) const MAX_ATTEMPTS: u32 = 5;
/// The first retry waits this long; each further one twice as long (0.25 s .. 2 s).
const BACKOFF_START: Duration = Duration::from_millis(250);
/// A `Retry-After` longer than this is not waited for: the request fails instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Error bodies and token answers larger than this are cut: they are only read for messages.
const MAX_SMALL_BODY: u64 = 1 << 20;

/// A request body, re-creatable for each attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body<'a> {
    /// No body at all (GET, HEAD).
    None,
    /// Bytes (`Content-Length` set, `0` for an empty POST, as some proxies demand).
    Bytes(&'a [u8]),
    /// A file streamed from disk, never read into memory.
    File(&'a Path),
}

/// A client for one repository of one registry.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    /// The ref being worked on, first in every error message.
    pub shown: String,
    creds: Option<Credentials>,
    files: Vec<PathBuf>,
    scopes: Vec<String>,
    authorization: Option<String>,
    host: String,
    /// Where warnings go.
    pub log: Option<crate::cli::Log>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `r`'s repository. `scopes` are the token scopes its requests need
    /// (`repository:REPO:pull`, `...:pull,push`).
    pub fn new(r: &RegistryRef, opts: &RegistryOptions, scopes: Vec<String>) -> Result<Client> {
        let files = auth_files();
        let creds = find_credentials(&r.host, &files)?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("stackbuild/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_mins(5)))
            // A stalled transfer is a dropped connection: retried, not waited on forever.
            .timeout_per_read(Some(Duration::from_mins(2)))
            .timeout_per_write(Some(Duration::from_mins(2)))
            .max_redirects(5)
            .build()
            .into();
        let scheme = if opts.tls_verify { "https" } else { "http" };
        Ok(Client {
            agent,
            base: format!("{scheme}://{}", r.api_host()),
            shown: r.to_string(),
            creds,
            files,
            scopes,
            authorization: None,
            host: r.host.clone(),
            log: opts.log,
        })
    }

    /// `base + path` for a path, or the URL itself when absolute (upload locations).
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else if path_or_url.starts_with('/') {
            format!("{}{path_or_url}", self.base)
        } else {
            format!("{}/{path_or_url}", self.base)
        }
    }

    /// Sends a request: authenticates on a 401 challenge (once), retries 429, 5xx and dropped
    /// connections with backoff. Returns the final response whatever its status.
    pub fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Response<ureq::Body>> {
        self.send_with(method, url, headers, body, MAX_ATTEMPTS)
    }

    /// [`send`](Client::send) with at most `attempts` attempts (1 for a request that must not
    /// be repeated as it is, such as the PUT that completes an upload session).
    pub fn send_with(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        attempts: u32,
    ) -> Result<Response<ureq::Body>> {
        let mut reauthed = false;
        let mut attempt = 1;
        loop {
            match self.send_once(method, url, headers, body) {
                Err(e) if retryable(&e) && attempt < attempts => {
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(e) => {
                    return Err(self.error(
                        None,
                        format!(
                            "{method} {url}: {}{}",
                            describe(&e, self.base.starts_with("https:")),
                            if attempt > 1 {
                                format!(" (tried {attempt} times)")
                            } else {
                                String::new()
                            }
                        ),
                    ));
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 401 && !reauthed {
                        reauthed = true;
                        if self.authenticate(&resp)? {
                            continue;
                        }
                        return Ok(resp);
                    }
                    if (status == 429 || (500..600).contains(&status) && status != 501)
                        && attempt < attempts
                    {
                        let wait = retry_after(&resp).unwrap_or_else(|| backoff(attempt));
                        if wait <= MAX_RETRY_AFTER {
                            std::thread::sleep(wait);
                            attempt += 1;
                            continue;
                        }
                    }
                    return Ok(resp);
                }
            }
        }
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Response<ureq::Body>, ureq::Error> {
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = &self.authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        match body {
            Body::None => self.agent.run(req.body(())?),
            Body::Bytes(b) => self.agent.run(req.body(b)?),
            Body::File(p) => {
                let f = File::open(p)?;
                self.agent.run(req.body(f)?)
            }
        }
    }

    /// Answers a 401's challenge. Returns whether there is something new to try.
    fn authenticate(&mut self, resp: &Response<ureq::Body>) -> Result<bool> {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(bearer)?;
            self.authorization = Some(format!("Bearer {token}"));
            return Ok(true);
        }
        if challenges.iter().any(|c| c.scheme == "basic")
            && let Some(creds) = &self.creds
        {
            let h = creds.basic_header();
            if self.authorization.as_ref() != Some(&h) {
                self.authorization = Some(h);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Gets a Bearer token from the challenge's realm, for our scopes and the challenge's,
    /// with our Basic credentials when we have some (anonymous otherwise).
    fn fetch_token(&mut self, c: &Challenge) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let realm = c.params.get("realm").ok_or_else(|| {
            self.error(
                Some(401),
                "the registry asks for a Bearer token but names no realm to get it from".into(),
            )
        })?;
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(self.error(
                Some(401),
                format!("token realm {realm:?} is not an http(s) URL"),
            ));
        }
        let mut scopes = self.scopes.clone();
        if let Some(s) = c.params.get("scope") {
            scopes.extend(s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned));
        }
        let scopes = merge_scopes(&scopes);
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = c.params.get("service") {
            query.push(("service", s));
        }
        for s in &scopes {
            query.push(("scope", s));
        }
        let mut url = realm.clone();
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 && !realm.contains('?') {
                '?'
            } else {
                '&'
            });
            url.push_str(k);
            url.push('=');
            url.push_str(&percent_encode(v));
        }
        let basic = self.creds.as_ref().map(Credentials::basic_header);
        let mut attempt = 1;
        let mut resp = loop {
            let mut req = self.agent.get(&url);
            if let Some(b) = &basic {
                req = req.header(header::AUTHORIZATION, b);
            }
            match req.call() {
                Err(e) if retryable(&e) && attempt < MAX_ATTEMPTS => {
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(self.error(None, format!("token from {realm}: {e}"))),
                Ok(r)
                    if (r.status().as_u16() == 429 || r.status().is_server_error())
                        && attempt < MAX_ATTEMPTS =>
                {
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Ok(r) => break r,
            }
        };
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.unauthorized(status));
        }
        if status != 200 {
            let msg = registry_message(&mut resp);
            return Err(self.error(
                Some(status),
                format!("token from {realm}: {msg} (HTTP {status})"),
            ));
        }
        let t: Token = resp
            .body_mut()
            .with_config()
            .limit(MAX_SMALL_BODY)
            .read_json()
            .map_err(|e| self.error(None, format!("token from {realm}: {e}")))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.error(None, format!("token from {realm}: no token in the answer")))
    }

    /// An error on this client's ref.
    pub fn error(&self, status: Option<u16>, message: String) -> Error {
        Error::Registry {
            reference: self.shown.clone(),
            status,
            message,
        }
    }

    /// The error for a 401/403 that our credentials (or their absence) did not get past.
    pub fn unauthorized(&self, status: u16) -> Error {
        let word = if status == 403 {
            "denied"
        } else {
            "unauthorized"
        };
        let message = match &self.creds {
            Some(c) => format!(
                "{word}: wrong user name or password (credentials from {})",
                c.source.display()
            ),
            None => format!(
                "{word}: the registry wants credentials and there are none for {} (looked in {})",
                self.host,
                self.files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.error(Some(status), message)
    }

    /// Turns an unexpected response into an error: `doing: what the registry said (HTTP n)`.
    pub fn status_error(&self, mut resp: Response<ureq::Body>, doing: &str) -> Error {
        let status = resp.status().as_u16();
        if status == 401 {
            return self.unauthorized(status);
        }
        let msg = registry_message(&mut resp);
        if status == 403 && self.creds.is_some() {
            return self.error(
                Some(status),
                format!(
                    "{doing}: denied: {msg} (credentials from {})",
                    self.creds
                        .as_ref()
                        .map(|c| c.source.display().to_string())
                        .unwrap_or_default()
                ),
            );
        }
        self.error(Some(status), format!("{doing}: {msg} (HTTP {status})"))
    }
}

/// The message of a registry's error body (`{"errors":[{"code","message","detail"}]}`), or the
/// start of whatever else it sent, or the status's reason.
fn registry_message(resp: &mut Response<ureq::Body>) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<One>,
    }
    #[derive(serde::Deserialize)]
    struct One {
        code: Option<String>,
        message: Option<String>,
    }
    let reason = resp
        .status()
        .canonical_reason()
        .unwrap_or("error")
        .to_lowercase();
    let mut text = String::new();
    // An unreadable error body still leaves the status to report; that is enough.
    let _ = resp
        .body_mut()
        .as_reader()
        .take(MAX_SMALL_BODY)
        .read_to_string(&mut text);
    if let Ok(e) = serde_json::from_str::<Errors>(&text) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|o| match (&o.code, &o.message) {
                (_, Some(m)) if !m.is_empty() => m.clone(),
                (Some(c), _) => c.to_lowercase().replace('_', " "),
                _ => reason.clone(),
            })
            .collect();
        return if parts.is_empty() {
            reason
        } else {
            parts.join("; ")
        };
    }
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        Some(l) if l.len() <= 200 && !l.starts_with('<') => l.to_owned(),
        _ => reason,
    }
}

/// Dropped or refused connections and timeouts are retried; TLS failures, bad URLs and
/// unknown hosts are not (they do not get better by waiting).
fn retryable(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionReset
                | K::ConnectionAborted
                | K::ConnectionRefused
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::TimedOut
                | K::Interrupted
                | K::NotConnected
        ),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed => true,
        _ => false,
    }
}

/// A transport error for people, with a hint when TLS failed: an untrusted certificate, or
/// TLS spoken to a plain-HTTP registry.
fn describe(e: &ureq::Error, tls: bool) -> String {
    let text = e.to_string();
    let tls_failed = matches!(e, ureq::Error::Tls(_) | ureq::Error::Rustls(_))
        || matches!(e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData);
    if !(tls && tls_failed) {
        return text;
    }
    if text.contains("certificate") {
        format!(
            "{text} (the registry's certificate is not trusted by this system's CA roots; \
             add its CA to them, or point SSL_CERT_FILE at it)"
        )
    } else {
        format!(
            "{text} (TLS failed; for a plain-HTTP registry on a private network give \
             --tls-verify=false)"
        )
    }
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    BACKOFF_START * 2u32.pow(attempt.saturating_sub(1).min(6))
}

fn retry_after(resp: &Response<ureq::Body>) -> Option<Duration> {
    resp.headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Merges token scopes (`TYPE:NAME:ACTION[,ACTION]`) by resource, keeping the order in which
/// resources and actions first appear: `repository:a:pull` and `repository:a:pull,push` ask
/// for one thing, `repository:a:pull,push`. Anything not of that shape is kept as it is.
fn merge_scopes(scopes: &[String]) -> Vec<String> {
    let mut merged: Vec<(String, Vec<String>)> = Vec::new();
    let mut other: Vec<String> = Vec::new();
    for s in scopes {
        let Some((resource, actions)) = s.rsplit_once(':').filter(|(r, _)| r.contains(':')) else {
            if !other.contains(s) {
                other.push(s.clone());
            }
            continue;
        };
        let slot = if let Some(i) = merged.iter().position(|(r, _)| r == resource) {
            &mut merged[i].1
        } else {
            merged.push((resource.to_owned(), Vec::new()));
            &mut merged.last_mut().expect("just pushed").1
        };
        for a in actions.split(',').filter(|a| !a.is_empty()) {
            if !slot.iter().any(|x| x == a) {
                slot.push(a.to_owned());
            }
        }
    }
    merged
        .into_iter()
        .map(|(r, a)| format!("{r}:{}", a.join(",")))
        .chain(other)
        .collect()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}"); // writing to a String cannot fail
        }
    }
    out
}

/// A header's value as text, if present and readable.
pub(crate) fn header_str<'a>(resp: &'a Response<ureq::Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_bodies_become_one_line() {
        let table = [
            (
                404,
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#,
                "manifest unknown",
            ),
            (
                400,
                r#"{"errors":[{"code":"DIGEST_INVALID","message":""},{"code":"SIZE_INVALID","message":"bad size"}]}"#,
                "digest invalid; bad size",
            ),
            (
                429,
                "toomanyrequests: slow down\nmore",
                "toomanyrequests: slow down",
            ),
            (502, "<html><body>Bad Gateway</body></html>", "bad gateway"),
            (500, "", "internal server error"),
            (503, r#"{"errors":[]}"#, "service unavailable"),
        ];
        for (status, body, want) in table {
            let mut resp = Response::builder()
                .status(status)
                .body(ureq::Body::builder().data(body))
                .expect("response");
            assert_eq!(registry_message(&mut resp), want, "{body}");
        }
    }

    #[test]
    fn merges_token_scopes_by_resource() {
        let table: &[(&[&str], &[&str])] = &[
            (
                &["repository:ns/x:pull,push", "repository:ns/x:pull"],
                &["repository:ns/x:pull,push"],
            ),
            (
                &[
                    "repository:ns/x:pull",
                    "repository:other/y:pull",
                    "repository:ns/x:push",
                ],
                &["repository:ns/x:pull,push", "repository:other/y:pull"],
            ),
            (
                &["registry:catalog:*", "odd", "odd"],
                &["registry:catalog:*", "odd"],
            ),
            (
                &["repository:127.0.0.1:5000/x:pull"],
                &["repository:127.0.0.1:5000/x:pull"],
            ),
        ];
        for (input, want) in table {
            let input: Vec<String> = input.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(merge_scopes(&input), *want, "{input:?}");
        }
    }

    #[test]
    fn encodes_queries_and_backs_off() {
        assert_eq!(
            percent_encode("repository:ns/x:pull,push"),
            "repository%3Ans%2Fx%3Apull%2Cpush"
        );
        assert_eq!(percent_encode("a-b_c.d~"), "a-b_c.d~");
        let waits: Vec<u128> = (1..MAX_ATTEMPTS).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000]);
    }
}
