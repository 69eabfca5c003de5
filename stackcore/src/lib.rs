//! `stackcore`: everything the stackbuild tools share.
//!
//! The five binaries (`stash`, `unstash`, `stackmerge`, `kiwimerge`, `stackbuild`) own their
//! flags and messages; every file format and every piece of logic two of them need lives here.
//!
//! | module | what it owns |
//! |---|---|
//! | [`apply`] | writing an image or a stack of sources into a directory, once per entry |
//! | [`build`] | the `stackbuild` workflow: a plan (stashes by digest, stacking, description merge, packages, the kiwi-ng command), then its execution |
//! | [`atomic`] | output files that appear whole or not at all (temporary file, then rename) |
//! | [`cli`] | `run_main`: error printing, exit codes, reading a ref from stdin; the shared flags (`CommonArgs`) |
//! | [`error`] | the typed [`Error`] and [`Result`] |
//! | [`digest`] | `sha256:` digests, hashing writers, verifying readers |
//! | [`entry`] | one file-system entry and its metadata |
//! | [`tree`] | walking a root tree in a deterministic order |
//! | [`tar`] | the PAX tar codec (strict reader, deterministic writer) |
//! | [`layer`] | layer compression, reading, indexes and the overlay model |
//! | [`manifest`] | the versioned `--json` documents and their JSON Schemas |
//! | [`oci`] | OCI JSON types and the image-layout store |
//! | [`packages`] | package databases in a stack: detect, report, merge (dpkg, rpm, apk, pacman) |
//! | [`extract`] | writing entries into a directory without ever escaping it |
//! | [`imageref`] | the image ref grammar; name and tag rules |
//! | [`open`] | opening any ref: the store, layouts, archives, registries (pulled first) |
//! | [`image`] | an opened image: manifest, config, blobs, layer reading |
//! | [`platform`] | `--platform os/arch[/variant]`, normalised; picking from an image index |
//! | [`archive`] | `oci-archive:` and `docker-archive:` tars, read in place |
//! | [`progress`] | progress of long work, reported to the sink a binary installs |
//! | [`registry`] | `docker://` refs; pulling and pushing over the OCI distribution API (feature `registry`) |
//! | [`legacy`] | the original plugin's stash archives: by name, listed, imported |
//! | [`stash`] | stashing a tree: full the first time, the difference after that; the root, name and tag checks, the store listing, the import report |
//! | [`space`] | free-space checks before writing a tree |
//! | [`description`] | name and author from a root's `image/config.xml` |
//! | [`timefmt`] | RFC 3339 timestamps |
//! | [`process`] | other programs: found on `PATH`, their command lines shown as a shell reads them |
//! | [`failpoint`] | named crash points for tests |
//! | [`kiwi`] | KIWI description parsing, merging, upgrading and linting (`kiwimerge`) |
#![warn(missing_docs)]

pub mod apply;
pub mod archive;
pub mod atomic;
pub mod build;
pub mod cli;
pub mod description;
pub mod digest;
pub mod entry;
pub mod error;
pub mod extract;
pub mod failpoint;
pub mod image;
pub mod imageref;
pub mod kiwi;
pub mod layer;
pub mod legacy;
pub mod manifest;
pub mod oci;
pub mod open;
pub mod packages;
pub mod platform;
pub mod process;
pub mod progress;
pub mod registry;
pub mod space;
pub mod stash;
pub mod tar;
pub mod timefmt;
pub mod tree;

pub use error::{Error, Result};
