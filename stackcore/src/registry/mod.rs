//! Registries: pulling images into the store and pushing stashes, over the OCI distribution
//! API (v1.1), natively.
//!
//! | module | what it owns |
//! |---|---|
//! | [`reference`](mod@reference) | `docker://HOST[:PORT]/REPO[:TAG\|@DIGEST]` |
//! | [`platform`] | `--platform os/arch[/variant]`, picking from an image index |
//! | [`creds`] | `--creds USER[:PASSWORD]`, the password asked for on the terminal |
//! | [`text`] | escaping what a registry wrote before it is printed |
//! | `timeouts` | connect, idle and transfer-rate limits (`--connect-timeout` ...) |
//! | `auth` | auth files, credential helpers and `WWW-Authenticate` challenges (feature `registry`) |
//! | `client` | the HTTP client: auth, retries, registry error messages (feature `registry`) |
//! | `pull`, `push` | moving images (feature `registry`) |
//!
//! Ref parsing and platform picking are always built, so tools can validate arguments; the
//! HTTP client (ureq, rustls) is behind the `registry` feature. Without it, opening a
//! `docker://` ref is a clear error.
//!
//! A pull goes into the store first: every blob is verified against its digest and size while
//! it streams into the store (never held in memory), blobs the store has are not fetched, and
//! the image is kept under `HOST[:PORT]/REPO:TAG`, then used by digest. A push sends each blob
//! the registry lacks (HEAD first; a cross-repository mount when the blob came from another
//! repository of the same registry), then the manifest, byte for byte as stored, so the
//! registry's digest is ours.

use std::path::PathBuf;

use crate::Result;

use crate::cli::Log;

pub mod creds;
/// `--platform` (kept at `registry::platform` for callers that name it there).
pub use crate::platform;
pub mod reference;
pub mod text;
mod timeouts;

#[cfg(feature = "registry")]
pub mod auth;
#[cfg(feature = "registry")]
mod client;
#[cfg(feature = "registry")]
mod origins;
#[cfg(feature = "registry")]
mod pull;
#[cfg(feature = "registry")]
mod push;

pub use platform::PlatformSpec;
#[cfg(feature = "registry")]
pub use pull::{PullOutcome, pull, pull_ref};
#[cfg(feature = "registry")]
pub use push::{PushOutcome, push};
pub use reference::RegistryRef;
pub use timeouts::Timeouts;

/// The flags of every tool that talks to a registry (`stash --push`, `unstash`,
/// `stackmerge`, `stackbuild`): how to reach it and whose credentials to use. Flatten it
/// into a clap `Cli` with `#[command(flatten)]` (or through [`RegistryArgs`]).
#[derive(Debug, Clone, clap::Args)]
pub struct AccessArgs {
    /// Verify registry TLS certificates against the system's CA roots; false speaks plain
    /// HTTP, for a registry on a private network.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub tls_verify: bool,
    /// The auth file to look in first (containers-auth.json(5) or docker's config.json);
    /// default: `$REGISTRY_AUTH_FILE`. The usual places are looked in after it.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// The registry's user name and password, instead of any auth file; without
    /// `:PASSWORD`, it is asked for on the terminal (not echoed).
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub creds: Option<String>,
    /// A directory of TLS files for the registry (containers-certs.d(5)): `*.crt` CA
    /// certificates to trust, `*.cert` + `*.key` a client certificate to present.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Give up on connecting after this long [env: `STACKBUILD_CONNECT_TIMEOUT`; default 30].
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
    /// Give up on a connection that sends or takes no byte for this long
    /// [env: `STACKBUILD_IDLE_TIMEOUT`; default 120].
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,
    /// Give up on a transfer slower than this many bytes per second over --speed-time
    /// [env: `STACKBUILD_SPEED_LIMIT`; default 1024; 0 never].
    #[arg(long, value_name = "BYTES")]
    pub speed_limit: Option<u64>,
    /// The window --speed-limit is measured over [env: `STACKBUILD_SPEED_TIME`; default 120].
    #[arg(long, value_name = "SECONDS")]
    pub speed_time: Option<u64>,
}

impl AccessArgs {
    /// The options these flags ask for, with progress lines going to `log`. Asks for the
    /// `--creds` password on the terminal when it was left out.
    pub fn options(
        &self,
        platform: Option<PlatformSpec>,
        log: Option<Log>,
    ) -> Result<RegistryOptions> {
        let creds = match &self.creds {
            None => None,
            Some(c) => Some(creds::from_flag(c)?),
        };
        Ok(RegistryOptions {
            tls_verify: self.tls_verify,
            platform,
            log,
            authfile: self.authfile.clone(),
            creds,
            cert_dir: self.cert_dir.clone(),
            timeouts: Timeouts::from_flags_and_env(
                [
                    self.connect_timeout,
                    self.idle_timeout,
                    self.speed_limit,
                    self.speed_time,
                ],
                |k| std::env::var(k).ok(),
            )?,
        })
    }
}

/// The registry flags of every tool that reads refs (`unstash`, `stackmerge`,
/// `stackbuild`): flatten it into a clap `Cli` with `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// How to reach registries.
    #[command(flatten)]
    pub access: AccessArgs,
    /// The image to pull from an image index (default: linux on this machine's architecture).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<PlatformSpec>,
}

impl RegistryArgs {
    /// The options these flags ask for, with progress lines going to `log`.
    pub fn options(&self, log: Option<Log>) -> Result<RegistryOptions> {
        self.access.options(self.platform.clone(), log)
    }
}

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Verify TLS against the system's CA roots (`true`), or speak plain HTTP
    /// (`--tls-verify=false`, for a registry on a private network).
    pub tls_verify: bool,
    /// Which image of an image index to pull; default: linux on this machine's architecture.
    pub platform: Option<PlatformSpec>,
    /// Where progress lines go; `None` is silent.
    pub log: Option<Log>,
    /// `--authfile`: looked in first.
    pub authfile: Option<PathBuf>,
    /// `--creds`: used instead of any auth file.
    pub creds: Option<creds::UserPassword>,
    /// `--cert-dir`.
    pub cert_dir: Option<PathBuf>,
    /// Connect, idle and transfer-rate limits.
    pub timeouts: Timeouts,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            platform: None,
            log: None,
            authfile: None,
            creds: None,
            cert_dir: None,
            timeouts: Timeouts::default(),
        }
    }
}

impl RegistryOptions {
    #[cfg_attr(not(feature = "registry"), allow(dead_code))]
    pub(crate) fn step(&self, msg: impl std::fmt::Display) {
        if let Some(log) = &self.log {
            log.step(msg);
        }
    }
}
