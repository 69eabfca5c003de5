//! `cargo xtask bench`: our tools against what users would otherwise run, same tree, one run.
//! Filled in by the performance work (issue 9); for now it times stash and unstash against
//! `tar | pigz | sha256sum` and `umoci unpack` on a tree given with `--root`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::{cargo, root, sh};

/// Benchmark options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The root tree to measure on.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Rounds per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

fn time(
    mut setup: impl FnMut() -> Result<()>,
    mut c: impl FnMut() -> Command,
    rounds: usize,
) -> Result<f64> {
    let mut secs = Vec::new();
    for _ in 0..rounds {
        setup()?;
        let mut cmd = c();
        let start = Instant::now();
        let out = cmd.output()?;
        let t = start.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        secs.push(t);
    }
    secs.sort_by(f64::total_cmp);
    Ok(secs[secs.len() / 2])
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    let Some(tree) = args.root.clone() else {
        bail!("give --root DIR (a root tree, e.g. a debootstrap'ed Debian minbase)");
    };
    sh(cargo().args(["build", "--release", "--bins"]))?;
    let bin = |n: &str| root().join("target/release").join(n);
    let work = root().join("target/bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let store = work.join("store");
    let stash = time(
        || {
            let _ = std::fs::remove_dir_all(&store);
            Ok(())
        },
        || {
            let mut c = Command::new(bin("stash"));
            c.arg("--quiet")
                .arg("--store")
                .arg(&store)
                .arg("--root")
                .arg(&tree)
                .args(["--container-name", "bench"]);
            c
        },
        args.rounds,
    )?;
    let anchor = time(
        || Ok(()),
        || {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!(
                "tar --xattrs -C '{}' -cf - . | pigz -6 | sha256sum >/dev/null",
                tree.display()
            ));
            c
        },
        args.rounds,
    )?;
    println!(
        "{:<44} {:>9} {:>9} {:>7}",
        "task", "ours s", "anchor s", "ratio"
    );
    println!(
        "{:<44} {stash:>9.2} {anchor:>9.2} {:>7.2}",
        "stash (gzip) vs tar | pigz | sha256sum",
        stash / anchor
    );
    Ok(())
}
