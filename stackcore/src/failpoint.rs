//! Named failpoints: `STACKBUILD_FAILPOINT=NAME` makes the process abort (as `kill -9`
//! would stop it) when it reaches `NAME`, so tests can stop a run at its dangerous moments
//! without timing luck. Costs one environment lookup per point reached.
//!
//! With `STACKBUILD_FAILPOINT_RUN=COMMAND` as well, the process does not abort: it runs
//! `sh -c COMMAND` there, waits for it and goes on, so a test can change the world at that
//! exact moment (swap a directory for a symlink between a stash's walk and its reads). Points
//! reached once per entry pass its path (relative to the root) in `STACKBUILD_FAILPOINT_ARG`.
//!
//! The points, in the order a stash reaches them: `walk-before-list` (each directory, before
//! it is opened and listed), `stash-before-open` (each file, before it is opened for the
//! layer), `blob-before-rename` and `blob-after-rename` (each blob: the layer, then config
//! and manifest), `stash-after-layer`, `stash-after-config`, `stash-before-index`,
//! `index-before-rename`, `index-after-rename`; and `gc-after-blob` (gc, after removing one
//! blob).

use std::os::unix::ffi::OsStrExt;

/// Aborts the process if `STACKBUILD_FAILPOINT` names `name` (or runs the test's command).
pub fn hit(name: &str) {
    hit_with(name, b"");
}

/// [`hit`], passing `arg` (a path) to the test's command.
pub fn hit_with(name: &str, arg: &[u8]) {
    if let Some(v) = std::env::var_os("STACKBUILD_FAILPOINT")
        && v == name
    {
        if let Some(cmd) = std::env::var_os("STACKBUILD_FAILPOINT_RUN") {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("STACKBUILD_FAILPOINT_ARG", std::ffi::OsStr::from_bytes(arg))
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("failpoint {name}: the command failed: {status:?}; aborting");
                std::process::abort();
            }
            return;
        }
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
