//! Integration tests: the real binaries, alone and in pipes.

mod util;

mod stash;
mod hostile;
