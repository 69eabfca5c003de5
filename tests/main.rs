//! Integration tests: the real binaries, alone and in pipes.
#![allow(clippy::format_push_string, clippy::format_collect)] // test dumps build text freely

mod util;

mod cli;
mod hardening;
mod hostile;
mod incremental;
mod jsonschema;
mod kiwimerge;
mod points;
mod registry;
mod stackbuild;
mod stackmerge;
mod stash;
