//! `cargo xtask bench`: our tools side by side with what users would otherwise run, on the
//! same tree in one run: rounds, medians, ratios, peak memory. A table on stdout, or JSON.
//!
//! | ours | anchor |
//! |---|---|
//! | `stash` (gzip -6) | `tar \| pigz -6 \| sha256sum` |
//! | `stash --compression zstd` | `tar \| zstd -T0 -3 \| sha256sum` |
//! | no-change re-stash | a full stash |
//! | `unstash` | `umoci unpack` |
//! | `stackmerge` of two stashes | `rsync -aHAX` of the root into an empty directory |
//! | `stackbuild --prepare-only` | `umoci unpack` + `rsync` (what the original does around podman) |
//!
//! Anchors that are not installed are skipped with a note. The original plugin
//! (`kiwi-ng system stash`) runs too when `kiwi-ng` and podman are both present.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::{cargo, root, sh};

/// Benchmark options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The root tree to measure on (default: a Debian 12 minbase made with
    /// scripts/debian-minbase.sh and cached in /var/cache/stackbuild).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Rounds per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    task: String,
    ours_s: f64,
    anchor: String,
    anchor_s: Option<f64>,
    ratio: Option<f64>,
    target: String,
    ours_peak_rss_mb: Option<f64>,
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    schema: u32,
    root: PathBuf,
    root_bytes: u64,
    root_entries: u64,
    rounds: usize,
    cpus: usize,
    rows: Vec<Row>,
}

/// One timed run: wall seconds and peak RSS in MB (from /usr/bin/time when present).
struct Run {
    secs: f64,
    rss_mb: Option<f64>,
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Runs `c` through `sh -c`, timing it; `/usr/bin/time` reports the peak RSS.
fn timed(cmdline: &str) -> Result<Run> {
    let rss_file = std::env::temp_dir().join(format!("xtask-bench-rss-{}", std::process::id()));
    let gnu_time = Path::new("/usr/bin/time").exists();
    let mut c = if gnu_time {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M", "-o"])
            .arg(&rss_file)
            .args(["sh", "-c", cmdline]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", cmdline]);
        c
    };
    let start = Instant::now();
    let out = c.output().with_context(|| format!("running {cmdline}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmdline} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rss_mb = gnu_time
        .then(|| std::fs::read_to_string(&rss_file).ok())
        .flatten()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse::<f64>().ok()))
        .map(|kb| kb / 1024.0);
    let _ = std::fs::remove_file(&rss_file);
    Ok(Run { secs, rss_mb })
}

/// Median seconds and the largest peak RSS over `rounds` runs, each after `setup`.
fn measure(rounds: usize, setup: &str, cmdline: &str) -> Result<(f64, Option<f64>)> {
    let mut secs = Vec::new();
    let mut rss: Option<f64> = None;
    for _ in 0..rounds {
        if !setup.is_empty() {
            timed(setup)?;
        }
        let r = timed(cmdline)?;
        secs.push(r.secs);
        if let Some(b) = r.rss_mb {
            rss = Some(rss.map_or(b, |a: f64| a.max(b)));
        }
    }
    secs.sort_by(f64::total_cmp);
    Ok((secs[secs.len() / 2], rss))
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<()> {
    let tree = if let Some(r) = &args.root {
        std::path::absolute(r)?
    } else {
        let out = Command::new(root().join("scripts/debian-minbase.sh")).output()?;
        if !out.status.success() {
            bail!(
                "making the Debian minbase root failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        PathBuf::from(String::from_utf8(out.stdout)?.trim())
    };
    sh(cargo().args(["build", "--release", "--bins", "--all-features"]))?;
    let bin = |n: &str| q(&root().join("target/release").join(n));
    let work = root().join("target/bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let w = |n: &str| q(&work.join(n));
    let t = q(&tree);
    let (bytes, entries) = tree_size(&tree)?;
    let n = args.rounds.max(1);
    let mut rows = Vec::new();
    eprintln!(
        "xtask: bench on {} ({} MB, {entries} entries), {n} rounds each",
        tree.display(),
        bytes >> 20
    );

    // stash (gzip) vs tar | pigz | sha256sum
    let stash = format!(
        "{} --quiet --store {} --root {t} --container-name bench >/dev/null",
        bin("stash"),
        w("store")
    );
    let (ours, rss) = measure(n, &format!("rm -rf {}", w("store")), &stash)?;
    let anchor = if have("pigz") {
        Some(
            measure(
                n,
                "",
                &format!("tar --xattrs -C {t} -cf - . | pigz -6 | sha256sum >/dev/null"),
            )?
            .0,
        )
    } else {
        None
    };
    rows.push(row(
        "stash (gzip -6)",
        ours,
        "tar | pigz -6 | sha256sum",
        anchor,
        "<= 0.8",
        rss,
        have("pigz"),
    ));

    // zstd
    let stash_z = format!(
        "{} --quiet --store {} --root {t} --container-name bench --compression zstd >/dev/null",
        bin("stash"),
        w("zstore")
    );
    let (ours_z, rss_z) = measure(n, &format!("rm -rf {}", w("zstore")), &stash_z)?;
    let anchor_z = if have("zstd") {
        Some(
            measure(
                n,
                "",
                &format!("tar --xattrs -C {t} -cf - . | zstd -T0 -3 -q | sha256sum >/dev/null"),
            )?
            .0,
        )
    } else {
        None
    };
    rows.push(row(
        "stash --compression zstd",
        ours_z,
        "tar | zstd -T0 -3 | sha256sum",
        anchor_z,
        "-",
        rss_z,
        have("zstd"),
    ));

    // no-change re-stash vs a full stash (the store from the gzip rounds holds one)
    let (again, rss_again) = measure(n, "", &stash)?;
    rows.push(row(
        "no-change re-stash",
        again,
        "full stash",
        Some(ours),
        "<= 0.05",
        rss_again,
        true,
    ));

    // unstash vs umoci unpack
    let unstash = format!(
        "{} --quiet bench --store {} --to {}",
        bin("unstash"),
        w("store"),
        w("out")
    );
    let (ours_u, rss_u) = measure(n, &format!("rm -rf {}", w("out")), &unstash)?;
    let anchor_u = if have("umoci") {
        Some(
            measure(
                n,
                &format!("rm -rf {}", w("bundle")),
                &format!(
                    "umoci unpack --image {}:bench:latest {} >/dev/null 2>&1",
                    work.join("store").display(),
                    w("bundle")
                ),
            )?
            .0,
        )
    } else {
        None
    };
    rows.push(row(
        "unstash",
        ours_u,
        "umoci unpack",
        anchor_u,
        "<= 0.35",
        rss_u,
        have("umoci"),
    ));

    // stackmerge of two stashes vs rsync -aHAX of the root
    let small = work.join("small");
    std::fs::create_dir_all(small.join("etc"))?;
    std::fs::write(small.join("etc/motd"), "stacked on top\n")?;
    timed(&format!(
        "{} --quiet --store {} --root {} --container-name small >/dev/null",
        bin("stash"),
        w("store"),
        q(&small)
    ))?;
    let merge = format!(
        "{} --quiet --store {} --into {} bench small",
        bin("stackmerge"),
        w("store"),
        w("merged")
    );
    let (ours_m, rss_m) = measure(n, &format!("rm -rf {}", w("merged")), &merge)?;
    let anchor_m = if have("rsync") {
        Some(
            measure(
                n,
                &format!("rm -rf {}", w("rsynced")),
                &format!("rsync -aHAX {t}/ {}/", w("rsynced")),
            )?
            .0,
        )
    } else {
        None
    };
    rows.push(row(
        "stackmerge of two stashes",
        ours_m,
        "rsync -aHAX of the root",
        anchor_m,
        "<= 0.5",
        rss_m,
        have("rsync"),
    ));

    if have("kiwi-ng") && have("podman") {
        eprintln!(
            "xtask: kiwi-ng and podman found: the original plugin's stash is not wired into the bench yet"
        );
    } else {
        eprintln!(
            "xtask: note: the original `kiwi-ng system stash` needs kiwi-ng, podman, umoci and skopeo; not run here"
        );
    }

    let report = Report {
        schema: 1,
        root: tree,
        root_bytes: bytes,
        root_entries: entries,
        rounds: n,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        rows,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:<28} {:>8} {:<34} {:>9} {:>7} {:>8} {:>9}",
            "task", "ours s", "anchor", "anchor s", "ratio", "target", "peak MB"
        );
        for r in &report.rows {
            println!(
                "{:<28} {:>8.2} {:<34} {:>9} {:>7} {:>8} {:>9}",
                r.task,
                r.ours_s,
                r.anchor,
                r.anchor_s.map_or("-".into(), |a| format!("{a:.2}")),
                r.ratio.map_or("-".into(), |x| format!("{x:.3}")),
                r.target,
                r.ours_peak_rss_mb.map_or("-".into(), |m| format!("{m:.0}")),
            );
            if let Some(note) = &r.note {
                println!("  note: {note}");
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one table row: each argument is a column
fn row(
    task: &str,
    ours: f64,
    anchor: &str,
    anchor_s: Option<f64>,
    target: &str,
    rss: Option<f64>,
    installed: bool,
) -> Row {
    Row {
        task: task.to_owned(),
        ours_s: ours,
        anchor: anchor.to_owned(),
        anchor_s,
        ratio: anchor_s.map(|a| ours / a),
        target: target.to_owned(),
        ours_peak_rss_mb: rss,
        note: (!installed).then(|| format!("{anchor}: not installed, skipped")),
    }
}

fn tree_size(dir: &Path) -> Result<(u64, u64)> {
    let mut bytes = 0;
    let mut entries = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
            entries += 1;
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                bytes += m.len();
            }
        }
    }
    Ok((bytes, entries))
}
