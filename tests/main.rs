//! Integration tests: the real binaries, alone and in pipes.

mod kiwimerge;
