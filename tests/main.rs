//! Integration tests: the real binaries, alone and in pipes.

mod util;

mod hostile;
mod stash;
