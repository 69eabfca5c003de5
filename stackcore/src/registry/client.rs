//! The HTTP side: one client per registry repository, with auth (anonymous, Basic, Bearer
//! tokens), bounded retries with backoff, redirects followed by hand, deadlines, and registry
//! errors turned into one clear line.
//!
//! Credentials are bound to their origin (scheme, host and port): the registry's go only to
//! the registry, never to an upload `Location`, a redirect or a token realm elsewhere (a
//! realm on another origin gets the credentials configured for that origin, if any, and the
//! token it gives goes only to the registry); an https registry's http realm is refused.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::http::{Response, Uri, header};

use super::RegistryOptions;
use super::auth::{Challenge, Credentials, auth_files, find_credentials, parse_challenges};
use super::reference::RegistryRef;
use super::text::{escape, quote};
use super::timeouts::Timeouts;
use crate::{Error, Result};

/// Attempts per request (the first and the retries) on 429, 5xx and dropped connections.
pub(crate) const MAX_ATTEMPTS: u32 = 5;
/// Attempts per request that timed out: a peer that went quiet twice is not waited on again.
const MAX_TIMEOUT_ATTEMPTS: u32 = 2;
/// The first retry waits this long; each further one twice as long (0.25 s .. 2 s).
const BACKOFF_START: Duration = Duration::from_millis(250);
/// A `Retry-After` longer than this is not waited for: the request fails instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Error bodies and token answers larger than this are cut: they are only read for messages.
const MAX_SMALL_BODY: u64 = 1 << 20;
/// Redirects followed per request.
const MAX_REDIRECTS: u32 = 5;

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

/// Where a URL points: scheme, host and port (the default port filled in), lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an absolute `http(s)://` URL; `None` for anything else.
    pub(crate) fn of(url: &str) -> Option<Origin> {
        let u: Uri = url.parse().ok()?;
        let scheme = u.scheme_str()?.to_ascii_lowercase();
        let port = u.port_u16().or(match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        })?;
        Some(Origin {
            host: u.host()?.to_ascii_lowercase(),
            scheme,
            port,
        })
    }

    /// `HOST[:PORT]` as auth files key it (the port left out when it is the default).
    fn auth_key(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Resolves a `Location` against the URL it answered: absolute, scheme-relative (`//h/p`),
/// absolute-path (`/p`) or relative (`p`, beside the last path segment).
pub(crate) fn resolve(base: &str, location: &str) -> String {
    let location = location.trim();
    if location.contains("://") || location.split_once(':').is_some_and(|(s, _)| is_scheme(s)) {
        return location.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    if let Some(r) = location.strip_prefix("//") {
        return format!("{scheme}://{r}");
    }
    let authority = rest.split('/').next().unwrap_or(rest);
    let (rel, query) = match location.find(['?', '#']) {
        Some(i) => location.split_at(i),
        None => (location, ""),
    };
    let path = if rel.starts_with('/') {
        rel.to_owned()
    } else {
        let base_path = rest[authority.len()..]
            .split(['?', '#'])
            .next()
            .unwrap_or("");
        let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{rel}")
    };
    format!(
        "{scheme}://{authority}{}{query}",
        remove_dot_segments(&path)
    )
}

/// An absolute path with `.` and `..` segments applied (RFC 3986 section 5.2.4); `..`
/// never climbs above the root.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn is_scheme(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// A client for one repository of one registry.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    origin: Origin,
    /// The ref being worked on, first in every error message.
    pub shown: String,
    creds: Option<Credentials>,
    files: Vec<PathBuf>,
    scopes: Vec<String>,
    /// The `Authorization` value for the registry's origin, and nowhere else.
    authorization: Option<String>,
    host: String,
    /// Connect, idle and rate limits.
    pub timeouts: Timeouts,
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
        let files = auth_files(opts.authfile.as_deref());
        let creds = match &opts.creds {
            Some(c) => Some(Credentials {
                username: c.user.clone(),
                password: c.password.clone(),
                source: "--creds".into(),
            }),
            None => find_credentials(&r.host, &r.repo, &files)?,
        };
        let t = opts.timeouts;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls_config(opts.cert_dir.as_deref())?)
            .user_agent(concat!("stackbuild/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(t.connect)
            // The response head must arrive within one idle period; a peer that sends it a
            // byte at a time is not waited on longer.
            .timeout_recv_response(t.idle)
            // A stalled transfer is a dropped connection: retried, not waited on forever.
            .timeout_per_read(t.idle)
            .timeout_per_write(t.idle)
            // Redirects are followed by hand (see `send_with`): each hop's scheme is checked
            // and credentials stay with their origin.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .build()
            .into();
        let scheme = if opts.tls_verify { "https" } else { "http" };
        let base = format!("{scheme}://{}", r.api_host());
        let origin = Origin::of(&base)
            .ok_or_else(|| Error::Usage(format!("{r}: {base} is not a URL we can reach")))?;
        Ok(Client {
            agent,
            base,
            origin,
            shown: r.to_string(),
            creds,
            files,
            scopes,
            authorization: None,
            host: r.host.clone(),
            timeouts: t,
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

    /// Whether `url` is on the registry's own origin (where its credentials may go).
    fn is_registry(&self, url: &str) -> bool {
        Origin::of(url).as_ref() == Some(&self.origin)
    }

    /// A response body as a reader, with the transfer-rate limit enforced on it.
    pub fn reader(&self, resp: Response<ureq::Body>) -> impl Read + use<> {
        self.timeouts.paced(resp.into_body().into_reader())
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
        let mut timeouts = 0;
        let mut redirects = 0;
        let mut method = method.to_owned();
        let mut url = url.to_owned();
        let mut body = body;
        loop {
            match self.send_once(&method, &url, headers, body) {
                Err(e)
                    if retryable(&e) && attempt < attempts && timeouts < MAX_TIMEOUT_ATTEMPTS =>
                {
                    if is_timeout(&e) {
                        timeouts += 1;
                        if timeouts >= MAX_TIMEOUT_ATTEMPTS {
                            return Err(self.transport_error(&method, &url, &e, attempt));
                        }
                    }
                    let wait = backoff(attempt);
                    self.retrying(&method, &url, &describe(&e, false), attempt, attempts, wait);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => return Err(self.transport_error(&method, &url, &e, attempt)),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if matches!(status, 301 | 302 | 303 | 307 | 308)
                        && let Some(location) = header_str(&resp, "location")
                    {
                        let next = resolve(&url, location);
                        if Origin::of(&next).is_none() {
                            return Err(self.error(
                                Some(status),
                                format!(
                                    "{method} {}: redirected to {}, which is not an http(s) URL: refused",
                                    escape(&url),
                                    quote(&next)
                                ),
                            ));
                        }
                        redirects += 1;
                        if redirects > MAX_REDIRECTS {
                            return Err(self.error(
                                Some(status),
                                format!(
                                    "{method} {}: more than {MAX_REDIRECTS} redirects",
                                    escape(&url)
                                ),
                            ));
                        }
                        tracing::debug!(from = %escape(&url), to = %escape(&next), status, "redirected");
                        if status == 303 && method != "HEAD" {
                            method = "GET".into();
                            body = Body::None;
                        }
                        url = next;
                        continue;
                    }
                    if status == 401 && !reauthed && self.is_registry(&url) {
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
                            self.retrying(
                                &method,
                                &url,
                                &format!("HTTP {status}"),
                                attempt,
                                attempts,
                                wait,
                            );
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

    /// A progress line while waiting to try again, so a slow registry is never silent.
    fn retrying(&self, method: &str, url: &str, why: &str, attempt: u32, of: u32, wait: Duration) {
        if let Some(log) = &self.log {
            log.step(format_args!(
                "{method} {}: {why}; trying again in {:.1} s (attempt {} of {of})",
                escape(url),
                wait.as_secs_f64(),
                attempt + 1
            ));
        }
    }

    fn transport_error(&self, method: &str, url: &str, e: &ureq::Error, attempt: u32) -> Error {
        self.error(
            None,
            format!(
                "{method} {}: {}{}",
                escape(url),
                describe(e, self.base.starts_with("https:")),
                if attempt > 1 {
                    format!(" (tried {attempt} times)")
                } else {
                    String::new()
                }
            ),
        )
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
        // The registry's credentials (or its token) go to the registry's origin only: never
        // to an upload Location or redirect on another host, port or scheme.
        if let Some(a) = &self.authorization
            && self.is_registry(url)
        {
            req = req.header(header::AUTHORIZATION, a);
        }
        match body {
            Body::None => self.agent.run(req.body(())?),
            Body::Bytes(b) => self.agent.run(req.body(b)?),
            Body::File(p) => {
                let f = File::open(p)?;
                let len = f.metadata()?.len();
                let paced = self.timeouts.paced(f);
                self.agent.run(
                    req.header(header::CONTENT_LENGTH, len)
                        .body(ureq::SendBody::from_owned_reader(paced))?,
                )
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

    /// The credentials a token realm may get: the registry's own when the realm is on the
    /// registry's origin (or is Docker Hub's token service, for Docker Hub), else those
    /// configured for the realm's own origin, else none (an anonymous token).
    fn realm_credentials(&self, realm: &Origin) -> Result<Option<Credentials>> {
        if *realm == self.origin
            || (self.host == super::reference::DOCKER_HUB
                && realm.scheme == "https"
                && realm.host == "auth.docker.io"
                && realm.port == 443)
        {
            return Ok(self.creds.clone());
        }
        find_credentials(&realm.auth_key(), "", &self.files)
    }

    /// Gets a Bearer token from the challenge's realm, for our scopes and the challenge's,
    /// with the credentials that realm may have (anonymous otherwise).
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
        let shown = escape(realm);
        let Some(realm_origin) = Origin::of(realm) else {
            return Err(self.error(
                Some(401),
                format!("token realm {} is not an http(s) URL", quote(realm)),
            ));
        };
        if self.origin.scheme == "https" && realm_origin.scheme == "http" {
            return Err(self.error(
                Some(401),
                format!(
                    "token realm {shown} is plain http while the registry is https: refused \
                     (credentials and tokens would cross the network in clear text)"
                ),
            ));
        }
        let creds = self.realm_credentials(&realm_origin)?;
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
        let basic = creds.as_ref().map(Credentials::basic_header);
        let mut attempt = 1;
        let mut resp = loop {
            let mut req = self.agent.get(&url);
            if let Some(b) = &basic {
                req = req.header(header::AUTHORIZATION, b);
            }
            match req.call() {
                Err(e) if retryable(&e) && attempt < MAX_ATTEMPTS && !is_timeout(&e) => {
                    let wait = backoff(attempt);
                    self.retrying(
                        "GET",
                        realm,
                        &describe(&e, false),
                        attempt,
                        MAX_ATTEMPTS,
                        wait,
                    );
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => {
                    return Err(self.error(
                        None,
                        format!(
                            "token from {shown}: {}",
                            describe(&e, realm_origin.scheme == "https")
                        ),
                    ));
                }
                Ok(r)
                    if (r.status().as_u16() == 429 || r.status().is_server_error())
                        && attempt < MAX_ATTEMPTS =>
                {
                    let wait = backoff(attempt);
                    let why = format!("HTTP {}", r.status().as_u16());
                    self.retrying("GET", realm, &why, attempt, MAX_ATTEMPTS, wait);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Ok(r) => break r,
            }
        };
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.unauthorized_with(status, creds.as_ref()));
        }
        if status != 200 {
            let msg = registry_message(&mut resp, &self.timeouts);
            return Err(self.error(
                Some(status),
                format!("token from {shown}: {msg} (HTTP {status})"),
            ));
        }
        let mut text = String::new();
        self.reader(resp)
            .take(MAX_SMALL_BODY)
            .read_to_string(&mut text)
            .map_err(|e| {
                self.error(
                    None,
                    format!("token from {shown}: {}", escape(&e.to_string())),
                )
            })?;
        let t: Token = serde_json::from_str(&text).map_err(|e| {
            self.error(None, format!("token from {shown}: not a token answer: {e}"))
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.error(None, format!("token from {shown}: no token in the answer")))
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
        self.unauthorized_with(status, self.creds.as_ref())
    }

    fn unauthorized_with(&self, status: u16, creds: Option<&Credentials>) -> Error {
        let word = if status == 403 {
            "denied"
        } else {
            "unauthorized"
        };
        let message = match creds {
            Some(c) => format!(
                "{word}: wrong user name or password (credentials from {})",
                c.source
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
        let msg = registry_message(&mut resp, &self.timeouts);
        if status == 403 && self.creds.is_some() {
            return self.error(
                Some(status),
                format!(
                    "{doing}: denied: {msg} (credentials from {})",
                    self.creds
                        .as_ref()
                        .map(|c| c.source.clone())
                        .unwrap_or_default()
                ),
            );
        }
        self.error(Some(status), format!("{doing}: {msg} (HTTP {status})"))
    }
}

/// The TLS setup: the system's CA roots, or with `--cert-dir` its `*.crt` CAs (and the
/// system's bundle beside them), and its `*.cert` + `*.key` client certificate.
fn tls_config(cert_dir: Option<&Path>) -> Result<ureq::tls::TlsConfig> {
    use ureq::tls::{ClientCert, PemItem, RootCerts, TlsConfig, parse_pem};
    let Some(dir) = cert_dir else {
        return Ok(TlsConfig::builder()
            .root_certs(RootCerts::PlatformVerifier)
            .build());
    };
    let bad = |msg: String| Error::Usage(format!("--cert-dir {}: {msg}", dir.display()));
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let read = |p: &Path| std::fs::read(p).map_err(|e| bad(format!("{}: {e}", p.display())));
    let certs_in = |p: &Path| -> Result<Vec<ureq::tls::Certificate<'static>>> {
        let bytes = read(p)?;
        let mut out = Vec::new();
        for item in parse_pem(&bytes) {
            if let PemItem::Certificate(c) =
                item.map_err(|e| bad(format!("{}: {e}", p.display())))?
            {
                out.push(c.to_owned());
            }
        }
        Ok(out)
    };
    let ext = |p: &Path, e: &str| p.extension().is_some_and(|x| x == e);
    let mut roots = Vec::new();
    for p in names.iter().filter(|p| ext(p, "crt")) {
        let c = certs_in(p)?;
        if c.is_empty() {
            return Err(bad(format!("{}: no PEM certificate in it", p.display())));
        }
        roots.extend(c);
    }
    let mut client = None;
    // The first `*.cert` (in name order) with its `*.key` is the client certificate.
    if let Some(cert) = names.iter().find(|p| ext(p, "cert")) {
        let key_path = cert.with_extension("key");
        let chain = certs_in(cert)?;
        let key_bytes = read(&key_path).map_err(|_| {
            bad(format!(
                "{}: no {} beside it",
                cert.display(),
                key_path.display()
            ))
        })?;
        let key = parse_pem(&key_bytes)
            .filter_map(std::result::Result::ok)
            .find_map(|i| match i {
                PemItem::PrivateKey(k) => Some(k.to_owned()),
                _ => None,
            })
            .ok_or_else(|| bad(format!("{}: no PEM private key in it", key_path.display())))?;
        if chain.is_empty() {
            return Err(bad(format!("{}: no PEM certificate in it", cert.display())));
        }
        client = Some(ClientCert::new_with_certs(&chain, key));
    }
    let roots = if roots.is_empty() {
        RootCerts::PlatformVerifier
    } else {
        // The directory's CAs are added to the system's, as containers-certs.d(5) says: the
        // system bundle (or $SSL_CERT_FILE) is read beside them.
        let bundle = std::env::var_os("SSL_CERT_FILE").map_or_else(
            || PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            PathBuf::from,
        );
        if let Ok(bytes) = std::fs::read(&bundle) {
            roots.extend(parse_pem(&bytes).filter_map(|i| match i {
                Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
                _ => None,
            }));
        }
        RootCerts::new_with_certs(&roots)
    };
    Ok(TlsConfig::builder()
        .root_certs(roots)
        .client_cert(client)
        .build())
}

/// The message of a registry's error body (`{"errors":[{"code","message","detail"}]}`), or the
/// start of whatever else it sent, quoted and escaped on one line; or the status's reason.
fn registry_message(resp: &mut Response<ureq::Body>, timeouts: &Timeouts) -> String {
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
    let mut bytes = Vec::new();
    // An unreadable error body still leaves the status to report; that is enough.
    let _ = timeouts
        .paced(resp.body_mut().as_reader())
        .take(MAX_SMALL_BODY)
        .read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    if let Ok(e) = serde_json::from_str::<Errors>(&text) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .filter_map(|o| match (&o.code, &o.message) {
                (_, Some(m)) if !m.is_empty() => Some(m.clone()),
                (Some(c), _) => Some(c.to_lowercase().replace('_', " ")),
                _ => None,
            })
            .collect();
        return if parts.is_empty() {
            reason
        } else {
            quote(&parts.join("; "))
        };
    }
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        Some(l) if l.len() <= 200 && !l.starts_with('<') => quote(l),
        _ => reason,
    }
}

/// Dropped or refused connections and timeouts are retried; TLS failures, bad URLs and
/// unknown hosts are not (they do not get better by waiting).
fn is_timeout(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Timeout(_))
        || matches!(e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

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
    // ureq's messages can carry what the peer sent (a malformed header, say).
    let text = escape(&e.to_string());
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
                "\"manifest unknown\"",
            ),
            (
                400,
                r#"{"errors":[{"code":"DIGEST_INVALID","message":""},{"code":"SIZE_INVALID","message":"bad size"}]}"#,
                "\"digest invalid; bad size\"",
            ),
            (
                429,
                "toomanyrequests: slow down\nmore",
                "\"toomanyrequests: slow down\"",
            ),
            (
                400,
                r#"{"errors":[{"code":"X","message":"\u001b]0;owned\u0007bad\nerror: forged"}]}"#,
                "\"\\x1b]0;owned\\x07bad\\nerror: forged\"",
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
            assert_eq!(
                registry_message(&mut resp, &Timeouts::default()),
                want,
                "{body}"
            );
        }
    }

    #[test]
    fn origins_and_redirect_targets() {
        let o = |u: &str| Origin::of(u).map(|o| o.to_string());
        assert_eq!(
            o("https://Reg.Example/v2/").as_deref(),
            Some("https://reg.example:443")
        );
        assert_eq!(o("http://h:5000/x").as_deref(), Some("http://h:5000"));
        assert_eq!(o("http://h/x"), o("http://h:80/y"));
        assert_ne!(o("http://h:5000/x"), o("https://h:5000/x"));
        assert_eq!(o("file:///etc/passwd"), None);
        assert_eq!(o("/relative"), None);
        let base = "http://h:5000/v2/ns/blobs/uploads/abc?x=1";
        let table = [
            ("https://other:1/p", "https://other:1/p"),
            ("//other/p", "http://other/p"),
            ("/v2/ns/blobs/sha", "http://h:5000/v2/ns/blobs/sha"),
            ("def", "http://h:5000/v2/ns/blobs/uploads/def"),
            ("../x?y=1/../z", "http://h:5000/v2/ns/blobs/x?y=1/../z"),
            ("./a/./b/..", "http://h:5000/v2/ns/blobs/uploads/a/"),
            ("/a/../../etc/./x", "http://h:5000/etc/x"),
            ("file:///etc/passwd", "file:///etc/passwd"),
            ("gopher:x", "gopher:x"),
        ];
        for (location, want) in table {
            assert_eq!(resolve(base, location), want, "{location}");
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
