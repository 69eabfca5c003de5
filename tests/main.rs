//! Integration tests: the real binaries, alone and in pipes.

mod util;

mod registry;
mod stash;
