//! Named failpoints: `STACKBUILD_FAILPOINT=NAME` makes the process abort (as `kill -9`
//! would stop it) when it reaches `NAME`, so tests can stop a run at its dangerous moments
//! without timing luck. Costs one environment lookup per point reached.
//!
//! The points, in the order a stash reaches them: `blob-before-rename` and
//! `blob-after-rename` (each blob: the layer, then config and manifest),
//! `stash-after-layer`, `stash-after-config`, `stash-before-index`, `index-before-rename`,
//! `index-after-rename`; and `gc-after-blob` (gc, after removing one blob).

/// Aborts the process if `STACKBUILD_FAILPOINT` names `name`.
pub fn hit(name: &str) {
    if let Some(v) = std::env::var_os("STACKBUILD_FAILPOINT")
        && v == name
    {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
