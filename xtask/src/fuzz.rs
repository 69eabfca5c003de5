//! `cargo xtask fuzz`: every cargo-fuzz target of `fuzz/` for a while each (nightly only).
//!
//! Kept out of `cargo xtask ci`: a cold fuzz build takes minutes, and coverage-guided
//! fuzzing finds things over hours, not in a CI gate. The committed seeds (`fuzz/corpus/`)
//! stay small; what a run discovers goes to `target/fuzz-corpus/`, and crashes to
//! `fuzz/artifacts/`.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{root, sh};

/// The targets, in `fuzz/Cargo.toml`.
const TARGETS: &[&str] = &["tar_entries", "oci_json", "kiwi_xml", "gzip_members"];

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Targets to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    targets: Vec<String>,
}

/// `cargo +nightly ...` through rustup's proxy, without the variables the outer (stable)
/// cargo set for us.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly").current_dir(root().join("fuzz"));
    for v in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "CARGO_TARGET_DIR",
    ] {
        c.env_remove(v);
    }
    c
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let has = |args: &[&str]| {
        nightly_cargo()
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has(&["--version"]) {
        bail!("no nightly toolchain (rustup toolchain install nightly)");
    }
    if !has(&["fuzz", "--version"]) {
        bail!("cargo-fuzz is not installed (cargo install cargo-fuzz)");
    }
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    for t in targets {
        let work = root().join("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&work)?;
        sh(nightly_cargo()
            .args(["fuzz", "run", "-O", t])
            .arg(&work)
            .arg(root().join("fuzz/corpus").join(t))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .args(["-max_len=65536", "-print_final_stats=1"]))?;
    }
    Ok(())
}
