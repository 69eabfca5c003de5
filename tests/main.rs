//! Integration tests: the real binaries, alone and in pipes.
#![allow(clippy::format_push_string, clippy::format_collect)] // test dumps build text freely

mod util;

mod cli;
mod hardening;
mod hostile;
mod hostile_registry;
mod incremental;
mod jsonschema;
mod kiwimerge;
mod legacy;
mod packages;
mod points;
mod refs;
mod registry;
mod stackbuild;
mod stackmerge;
mod stash;
