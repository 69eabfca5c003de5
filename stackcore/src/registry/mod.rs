//! Registries: pulling images into the store and pushing stashes, over the OCI distribution
//! API (v1.1), natively.
//!
//! | module | what it owns |
//! |---|---|
//! | [`reference`](mod@reference) | `docker://HOST[:PORT]/REPO[:TAG\|@DIGEST]` |
//! | `auth` | auth files and `WWW-Authenticate` challenges (feature `registry`) |
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

use crate::cli::Log;

/// `--platform` (kept at `registry::platform` for callers that name it there).
pub use crate::platform;
pub mod reference;

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

/// The registry flags of every tool that reads refs (`unstash`, `stackmerge`,
/// `stackbuild`): flatten it into a clap `Cli` with `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Verify registry TLS certificates against the system's CA roots; false speaks plain
    /// HTTP, for a registry on a private network.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub tls_verify: bool,
    /// The image to pull from an image index (default: linux on this machine's architecture).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<PlatformSpec>,
}

impl RegistryArgs {
    /// The options these flags ask for, with progress lines going to `log`.
    pub fn options(&self, log: Option<Log>) -> RegistryOptions {
        RegistryOptions {
            tls_verify: self.tls_verify,
            platform: self.platform.clone(),
            log,
        }
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
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            platform: None,
            log: None,
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
