//! `stackcore`: everything the stackbuild tools share.
//!
//! The five binaries (`stash`, `unstash`, `stackmerge`, `kiwimerge`, `stackbuild`) own their
//! flags and messages; every file format and every piece of logic two of them need lives here.
//!
//! | module | what it owns |
//! |---|---|
//! | [`cli`] | `run_main`: error printing, exit codes, reading a ref from stdin |
//! | [`error`] | the typed [`Error`] and [`Result`] |
//! | [`kiwi`] | KIWI description parsing, merging, upgrading and linting (`kiwimerge`) |
#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod kiwi;

pub use error::{Error, Result};
