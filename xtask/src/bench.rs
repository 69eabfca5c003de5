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
//! | the same, of two zstd stashes | the same |
//! | `stackmerge --packages merge` of two Debian stashes | the same with `--packages off` |
//! | `stash` of the same tree | `kiwi-ng system stash`: the original plugin (umoci, rsync, skopeo, podman) |
//! | `stackbuild --prepare-only` of two stashes | `podman image mount` + `rsync` per stash, as the original `system stackbuild` does |
//!
//! Anchors that are not installed are skipped with a note. The original plugin's rows need
//! `kiwi-ng` with `kiwi-stackbuild-plugin`, podman, umoci, skopeo and rsync, and root; they
//! use the name `stackbuild-bench-original` in /var/tmp/kiwi-stash and podman's storage, and
//! remove it at the end.

use std::fmt::Write as _;
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
    /// Also measure on a bigger tree: DIR, or without one a Debian 12 of the standard
    /// variant with build-essential (about 900 MB) made with scripts/debian-toolchain.sh
    /// and cached in /var/cache/stackbuild. Its rows are named `big: ...`.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    #[allow(clippy::option_option)] // clap's shape for a flag whose value may be left out
    pub big_root: Option<Option<PathBuf>>,
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
    /// None: the row could not run (its note says why).
    ours_s: Option<f64>,
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
    /// The tree of the `big: ` rows, if measured.
    big_root: Option<PathBuf>,
    big_root_bytes: Option<u64>,
    big_root_entries: Option<u64>,
    /// Where the outputs were written.
    output_fs: String,
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

/// The command line of one side of a comparison for round `i`. Every round writes into
/// directories of its own: nothing is deleted while the bench measures (see [`run`]).
type Side<'a> = &'a dyn Fn(usize) -> String;

/// What [`compare`] measured: medians, and our largest peak RSS.
struct Compared {
    ours: f64,
    rss: Option<f64>,
    anchor: Option<f64>,
}

/// Runs `ours` and `anchor` in alternate rounds (so drift on a noisy machine falls on both
/// alike), each after a `sync` that is not timed, and `before_anchor` (not timed) before
/// each anchor round.
/// Runs `ours` and `anchor` in alternate rounds, `before_anchor` untimed before each anchor
/// run and `after` untimed after every run of either (see [`Clean`]).
fn compare(
    rounds: usize,
    ours: Side<'_>,
    anchor: Option<Side<'_>>,
    before_anchor: &str,
    after: &Clean,
) -> Result<Compared> {
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    let mut rss: Option<f64> = None;
    for i in 0..rounds {
        timed("sync")?;
        let r = timed(&ours(i))?;
        after.run()?;
        mine.push(r.secs);
        if let Some(b) = r.rss_mb {
            rss = Some(rss.map_or(b, |a: f64| a.max(b)));
        }
        if let Some(anchor) = anchor {
            if !before_anchor.is_empty() {
                timed(before_anchor)?;
            }
            timed("sync")?;
            theirs.push(timed(&anchor(i))?.secs);
            after.run()?;
        }
        eprintln!(
            "xtask:   round {}: ours {:.2} s{}",
            i + 1,
            r.secs,
            theirs
                .last()
                .map_or(String::new(), |t| format!(", anchor {t:.2} s"))
        );
    }
    Ok(Compared {
        ours: median(mine),
        rss,
        anchor: (!theirs.is_empty()).then(|| median(theirs)),
    })
}

/// What to remove after each timed run, so that every run writes to a file system in the
/// same state: a shell command that removes the round's output trees and trims the file
/// system (`fstrim`, which gives the loop device's pages in /dev/shm back). Without it the
/// later runs of a row, ours and the anchor's alike, ran on a fuller file system and paid
/// for it in the kernel: `rsync -aHAX` 0.76 s on a fresh one, 1.2 s with 7 GB written.
struct Clean(Option<String>);

impl Clean {
    /// Nothing to remove.
    const NONE: Clean = Clean(None);

    /// Removes `globs` under `work` when it is the bench's own file system (elsewhere a
    /// delete can slow whichever tool runs next: see [`run`]).
    fn trees(loop_fs: bool, work: &Path, globs: &[&str]) -> Clean {
        if !loop_fs {
            return Clean::NONE;
        }
        let w = q(work);
        let rm: Vec<String> = globs.iter().map(|g| format!("{w}/{g}")).collect();
        Clean(Some(format!(
            "rm -rf {}; fstrim {w} 2>/dev/null; true",
            rm.join(" ")
        )))
    }

    fn run(&self) -> Result<()> {
        if let Some(cmd) = &self.0 {
            timed(cmd)?;
        }
        Ok(())
    }
}

fn median(mut secs: Vec<f64>) -> f64 {
    secs.sort_by(f64::total_cmp);
    secs[secs.len() / 2]
}

/// Round `i`'s own directory `NAME-i` under `work`, quoted for the shell.
fn round_dir(work: &Path, name: &str, i: usize) -> String {
    q(&work.join(format!("{name}-{i}")))
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Runs the benchmark.
///
/// Every round writes into directories of its own, on a file system made for the run
/// (ext4 with its journal, as a build host has it, on a loop device; root only), removed
/// untimed after the round (see [`Clean`]); the file system goes at the end. On an ext4
/// without a journal (this machine's root) the kernel skips recently deleted inodes when it allocates new ones (`recently_deleted` in
/// `find_inode_bit`), for a while after the delete: an unstash after `rm -rf` of an earlier
/// tree took 3-5 s instead of 0.6 s, all of it in the kernel, so whichever tool ran after a
/// delete lost and the ratios depended on the order of the rounds. With the journal the
/// check is off: 0.57-0.67 s with or without a delete before.
pub fn run(args: &BenchArgs) -> Result<()> {
    let tree = match &args.root {
        Some(r) => std::path::absolute(r)?,
        None => made_tree("scripts/debian-minbase.sh")?,
    };
    let big = match &args.big_root {
        Some(None) => Some(made_tree("scripts/debian-toolchain.sh")?),
        Some(Some(r)) => Some(std::path::absolute(r)?),
        None => None,
    };
    sh(cargo().args(["build", "--release", "--bins", "--all-features"]))?;
    let bench = root().join("target/bench");
    // What an interrupted run left: its mount and its image in /dev/shm.
    let _ = Command::new("umount").arg(bench.join("fs")).output();
    for e in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name()
            .to_string_lossy()
            .starts_with("stackbuild-bench-")
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir_all(&bench);
    std::fs::create_dir_all(&bench)?;
    let fs = OutputFs::new(&bench);
    let result = measure_all(args, &tree, big.as_deref(), &fs);
    drop(fs);
    let _ = std::fs::remove_dir_all(&bench);
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:<40} {:>8} {:<38} {:>9} {:>7} {:>8} {:>9}",
            "task", "ours s", "anchor", "anchor s", "ratio", "target", "peak MB"
        );
        for r in &report.rows {
            println!(
                "{:<40} {:>8} {:<38} {:>9} {:>7} {:>8} {:>9}",
                r.task,
                r.ours_s.map_or("-".into(), |o| format!("{o:.2}")),
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

/// Makes (once, cached) a root tree with `script` (in scripts/) and returns its path.
fn made_tree(script: &str) -> Result<PathBuf> {
    let out = Command::new(root().join(script)).output()?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn measure_all(args: &BenchArgs, tree: &Path, big: Option<&Path>, fs: &OutputFs) -> Result<Report> {
    let (bytes, entries) = tree_size(tree)?;
    let mut rows = Vec::new();
    measure_tree(args, tree, "", fs, &mut rows)?;
    let mut big_size = None;
    if let Some(big) = big {
        big_size = Some(tree_size(big)?);
        measure_tree(args, big, "big: ", fs, &mut rows)?;
    }
    Ok(Report {
        schema: 2,
        root: tree.to_path_buf(),
        root_bytes: bytes,
        root_entries: entries,
        big_root: big.map(Path::to_path_buf),
        big_root_bytes: big_size.map(|s| s.0),
        big_root_entries: big_size.map(|s| s.1),
        output_fs: fs.kind.clone(),
        rounds: args.rounds.max(1),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        rows,
    })
}

/// Measures one row with `f`; a row that cannot run (a tool missing or failing) becomes a
/// row with a note, and the bench goes on.
fn attempt(rows: &mut Vec<Row>, task: &str, anchor: &str, f: impl FnOnce() -> Result<Row>) {
    match f() {
        Ok(r) => rows.push(r),
        Err(e) => {
            // The last line of a failed command's stderr says the most.
            let text = format!("{e:#}");
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            // `CMD failed: STDERR`: the task names the command.
            let why = last.rsplit_once(" failed: ").map_or(last, |(_, e)| e);
            let why: String = why.chars().take(300).collect();
            eprintln!("xtask: note: {task}: could not run: {why}");
            rows.push(Row {
                task: task.to_owned(),
                ours_s: None,
                anchor: anchor.to_owned(),
                anchor_s: None,
                ratio: None,
                target: "-".to_owned(),
                ours_peak_rss_mb: None,
                note: Some(format!("could not run: {why}")),
            });
        }
    }
}

/// The rows of one tree; `label` prefixes the task names (and names the round directories)
/// of any tree but the first, where the original plugin's rows are left out.
fn measure_tree(
    args: &BenchArgs,
    tree: &Path,
    label: &str,
    fs: &OutputFs,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let work = fs.dir.as_path();
    let trees = |globs: &[&str]| Clean::trees(fs.image.is_some(), work, globs);
    let bin = |n: &str| q(&root().join("target/release").join(n));
    let dir = if label.is_empty() { "" } else { "big-" };
    let wi = |n: &str, i: usize| round_dir(work, &format!("{dir}{n}"), i);
    let task = |t: &str| format!("{label}{t}");
    let t = q(tree);
    let (bytes, entries) = tree_size(tree)?;
    let n = args.rounds.max(1);
    eprintln!(
        "xtask: bench on {} ({} MB, {entries} entries), {n} rounds each, writing to {}",
        tree.display(),
        bytes >> 20,
        fs.kind
    );

    // stash (gzip) vs tar | pigz | sha256sum; each round into a new store.
    let stash = |store: &str| {
        format!(
            "{} --quiet --store {store} --root {t} --container-name bench >/dev/null",
            bin("stash")
        )
    };
    let mut full = None;
    attempt(
        rows,
        &task("stash (gzip -6)"),
        "tar | pigz -6 | sha256sum",
        || {
            let pigz = |_| format!("tar --xattrs -C {t} -cf - . | pigz -6 | sha256sum >/dev/null");
            let c = compare(
                n,
                &|i| stash(&wi("store", i)),
                have("pigz").then_some(&pigz as Side<'_>),
                "",
                &Clean::NONE,
            )?;
            full = Some(c.ours);
            Ok(row(
                &task("stash (gzip -6)"),
                &c,
                "tar | pigz -6 | sha256sum",
                "<= 0.8",
                have("pigz"),
            ))
        },
    );

    // zstd
    attempt(
        rows,
        &task("stash --compression zstd"),
        "tar | zstd -T0 -3 | sha256sum",
        || {
            let zstd =
                |_| format!("tar --xattrs -C {t} -cf - . | zstd -T0 -3 -q | sha256sum >/dev/null");
            let c = compare(
                n,
                &|i| {
                    format!(
                        "{} --quiet --store {} --root {t} --container-name bench --compression zstd >/dev/null",
                        bin("stash"),
                        wi("zstore", i)
                    )
                },
                have("zstd").then_some(&zstd as Side<'_>),
                "",
                &Clean::NONE,
            )?;
            Ok(row(
                &task("stash --compression zstd"),
                &c,
                "tar | zstd -T0 -3 | sha256sum",
                "-",
                have("zstd"),
            ))
        },
    );

    // no-change re-stash (into the first round's store) vs a full stash
    attempt(rows, &task("no-change re-stash"), "full stash", || {
        let mut c = compare(n, &|_| stash(&wi("store", 0)), None, "", &Clean::NONE)?;
        c.anchor = full;
        Ok(row(
            &task("no-change re-stash"),
            &c,
            "full stash",
            "<= 0.05",
            true,
        ))
    });

    let store = work.join(format!("{dir}store-0"));
    let zstore = work.join(format!("{dir}zstore-0"));
    // unstash vs umoci unpack, on all cores and on one.
    let mut umoci_s = None;
    for threads in ["", " --threads 1"] {
        let name = task(&format!("unstash{threads}"));
        attempt(rows, &name, "umoci unpack", || {
            let umoci = |i| {
                format!(
                    "umoci unpack --image {}:bench:latest {} >/dev/null 2>&1",
                    q(&store),
                    wi("bundle", i)
                )
            };
            let anchor = (threads.is_empty() && have("umoci")).then_some(&umoci as Side<'_>);
            let mut c = compare(
                n,
                &|i| {
                    format!(
                        "{} --quiet bench --store {} --to {}{threads}",
                        bin("unstash"),
                        q(&store),
                        wi("out", i)
                    )
                },
                anchor,
                "",
                &trees(&["*out-*", "*bundle-*"]),
            )?;
            if threads.is_empty() {
                umoci_s = c.anchor;
            } else {
                c.anchor = umoci_s;
            }
            Ok(row(&name, &c, "umoci unpack", "<= 0.35", have("umoci")))
        });
    }

    // stackmerge of two stashes vs rsync -aHAX of the root
    let small = work.join(format!("{dir}small"));
    std::fs::create_dir_all(small.join("etc"))?;
    std::fs::write(small.join("etc/motd"), "stacked on top\n")?;
    // The second time with zstd stashes, which decompress several times faster than gzip.
    for (store, flags, prefix, what, target) in [
        (&store, "", "", "stackmerge of two stashes", "<= 0.5"),
        (
            &zstore,
            " --compression zstd",
            "z",
            "stackmerge, zstd stashes",
            "-",
        ),
    ] {
        let small_stashed = timed(&format!(
            "{} --quiet --store {} --root {} --container-name small{flags} >/dev/null",
            bin("stash"),
            q(store),
            q(&small)
        ));
        let mut rsync_s = None;
        for threads in ["", " --threads 1"] {
            let name = task(&format!("{what}{threads}"));
            attempt(rows, &name, "rsync -aHAX of the root", || {
                if let Err(e) = &small_stashed {
                    bail!("stashing the small tree: {e:#}");
                }
                let rsync = |i| format!("rsync -aHAX {t}/ {}/", wi(&format!("{prefix}rsynced"), i));
                let anchor = (threads.is_empty() && have("rsync")).then_some(&rsync as Side<'_>);
                let mut c = compare(
                    n,
                    &|i| {
                        format!(
                            "{} --quiet --store {} --into {} bench small{threads}",
                            bin("stackmerge"),
                            q(store),
                            wi(&format!("{prefix}merged"), i)
                        )
                    },
                    anchor,
                    "",
                    &trees(&["*merged-*", "*rsynced-*"]),
                )?;
                if threads.is_empty() {
                    rsync_s = c.anchor;
                } else {
                    c.anchor = rsync_s;
                }
                Ok(row(
                    &name,
                    &c,
                    "rsync -aHAX of the root",
                    target,
                    have("rsync"),
                ))
            });
        }
    }
    if !label.is_empty() {
        return Ok(());
    }

    // What reading and merging the package databases adds to a stack of two Debian stashes
    // (the root stashed again under a second name): --packages merge against off.
    timed(&format!(
        "{} --quiet --store {} --root {t} --container-name bench-packages >/dev/null",
        bin("stash"),
        q(&store)
    ))?;
    let packages = |mode: &str, dir: &str, i: usize| {
        format!(
            "{} --quiet --store {} --into {} --packages {mode} bench bench-packages",
            bin("stackmerge"),
            q(&store),
            wi(dir, i)
        )
    };
    let merge = |i| packages("merge", "pkgmerged", i);
    let off = |i| packages("off", "pkgoff", i);
    let c = compare(
        n,
        &merge,
        Some(&off as Side<'_>),
        "",
        &trees(&["pkgmerged-*", "pkgoff-*"]),
    )?;
    rows.push(row(
        "stackmerge --packages merge",
        &c,
        "stackmerge --packages off",
        "<= 1.1",
        true,
    ));

    // The prepare step of a stackbuild, ours against the original's.
    let prepare = |i| {
        format!(
            "{} --quiet --store {} --stash bench --stash small --target-dir {} --prepare-only >/dev/null",
            bin("stackbuild"),
            q(&store),
            wi("prepared", i)
        )
    };
    if let Some(missing) = original_missing() {
        eprintln!("xtask: note: the original plugin is not run: {missing}");
        attempt(rows, "stackbuild --prepare-only", ORIGINAL_PREPARE, || {
            let c = compare(n, &prepare, None, "", &trees(&["prepared-*"]))?;
            Ok(row(
                "stackbuild --prepare-only",
                &c,
                ORIGINAL_PREPARE,
                "-",
                false,
            ))
        });
    } else {
        let after = trees(&["prepared-*", "original-prepared-*"]);
        match original(n, tree, work, &bin, &prepare, &after) {
            Ok(r) => rows.extend(r),
            Err(e) => attempt(rows, "the original plugin's rows", ORIGINAL_STASH, || {
                Err(e)
            }),
        }
    }
    Ok(())
}

fn row(task: &str, c: &Compared, anchor: &str, target: &str, installed: bool) -> Row {
    Row {
        task: task.to_owned(),
        ours_s: Some(c.ours),
        anchor: anchor.to_owned(),
        anchor_s: c.anchor,
        ratio: c.anchor.map(|a| c.ours / a),
        target: target.to_owned(),
        ours_peak_rss_mb: c.rss,
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

/// The file system the rounds write to: a fresh ext4 (with its journal) on a loop device
/// when we are root and have mkfs.ext4, else a directory beside it, said in `kind`. The
/// loop device's image lives in /dev/shm when that has room, so the kernel's writeback of
/// earlier rounds to the disk does not land in later ones (with the image on disk, the
/// later rows ran up to 0.4 s slower than the same commands run alone). Unmounted and
/// removed when dropped.
struct OutputFs {
    dir: PathBuf,
    image: Option<PathBuf>,
    kind: String,
}

/// Room the outputs of one bench run need: about 25 trees and a few stores of the root.
const OUTPUT_FS_BYTES: u64 = 12 << 30;

impl OutputFs {
    fn new(bench: &Path) -> Self {
        let dir = bench.join("fs");
        let _ = std::fs::create_dir_all(&dir);
        let in_ram = rustix::fs::statvfs("/dev/shm")
            .is_ok_and(|v| v.f_bavail * v.f_frsize >= OUTPUT_FS_BYTES);
        let image = if in_ram {
            PathBuf::from(format!(
                "/dev/shm/stackbuild-bench-{}.img",
                std::process::id()
            ))
        } else {
            bench.join("fs.img")
        };
        let made = rustix::process::geteuid().is_root()
            // Sparse: only the blocks the rounds write take room.
            && std::fs::File::create(&image)
                .and_then(|f| f.set_len(OUTPUT_FS_BYTES))
                .is_ok()
            // Inode tables and journal written now, not by the kernel's ext4lazyinit thread
            // in the background of the first rounds (a first stash took 17 s with it).
            && Command::new("mkfs.ext4")
                .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
                .arg(&image)
                .status()
                .is_ok_and(|s| s.success())
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
        if made {
            return OutputFs {
                dir,
                kind: format!(
                    "a new ext4 (with journal) on a loop device backed by {}",
                    image.display()
                ),
                image: Some(image),
            };
        }
        let _ = std::fs::remove_file(&image);
        eprintln!(
            "xtask: note: no loop-mounted ext4 for the outputs (needs root and mkfs.ext4): \
             writing to {}, where earlier deletes can slow whichever tool runs next",
            dir.display()
        );
        OutputFs {
            kind: dir.display().to_string(),
            dir,
            image: None,
        }
    }
}

impl Drop for OutputFs {
    fn drop(&mut self) {
        if let Some(image) = &self.image {
            let _ = Command::new("umount").arg(&self.dir).status();
            let _ = std::fs::remove_file(image);
        }
    }
}

/// The original plugin's stash.
const ORIGINAL_STASH: &str = "kiwi-ng system stash (the original)";

/// What the original `system stackbuild` does before kiwi-ng runs, per stash.
const ORIGINAL_PREPARE: &str = "podman image mount + rsync per stash";

/// The name the original plugin's stash gets in this bench (in /var/tmp/kiwi-stash and in
/// podman's storage; both removed at the end).
const ORIGINAL_NAME: &str = "stackbuild-bench-original";

/// Why the original plugin cannot run here, if it cannot.
fn original_missing() -> Option<String> {
    let missing: Vec<&str> = ["kiwi-ng", "podman", "umoci", "skopeo", "rsync"]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "not installed: {} (apt-get install podman umoci skopeo rsync; \
             python3 -m pip install kiwi kiwi-stackbuild-plugin)",
            missing.join(", ")
        ));
    }
    let plugin = Command::new("kiwi-ng")
        .args(["system", "stash", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    (!plugin).then(|| {
        "kiwi-ng has no `system stash` (python3 -m pip install kiwi-stackbuild-plugin)".to_owned()
    })
}

/// The original plugin side by side with ours: `kiwi-ng system stash` against `stash` on
/// the same tree (a copy of it that holds the image/config.xml the plugin requires), and
/// the original stackbuild's preparation (`podman image mount` + `rsync` with kiwi's sync
/// options, per stash, of the images ours stashed) against `stackbuild --prepare-only`.
fn original(
    n: usize,
    tree: &Path,
    work: &Path,
    bin: &dyn Fn(&str) -> String,
    prepare: Side<'_>,
    after_prepare: &Clean,
) -> Result<Vec<Row>> {
    let wi = |n: &str, i: usize| round_dir(work, n, i);
    let copy = work.join("original-root");
    timed(&format!("cp -a {}/. {}", q(tree), q(&copy)))?;
    std::fs::create_dir_all(copy.join("image"))?;
    // A description without profiles: the plugin reads it with none selected.
    std::fs::copy(
        root().join("tests/fixtures/stackbuild/debian-tbz.xml"),
        copy.join("image/config.xml"),
    )?;
    let image = format!("localhost/{ORIGINAL_NAME}:latest");
    let stash_home = Path::new("/var/tmp/kiwi-stash").join(ORIGINAL_NAME);
    let clean = format!(
        "rm -rf {}; podman rmi -f {image} >/dev/null 2>&1; true",
        q(&stash_home)
    );
    let mut podman_images = Vec::new();
    let result = (|| {
        let mut rows = Vec::new();
        let theirs = |_| {
            format!(
                "kiwi-ng system stash --root {} --container-name {ORIGINAL_NAME} >/dev/null 2>&1",
                q(&copy)
            )
        };
        let c = compare(
            n,
            &|i| {
                format!(
                    "{} --quiet --store {} --root {} --container-name {ORIGINAL_NAME} >/dev/null",
                    bin("stash"),
                    wi("original-store", i),
                    q(&copy)
                )
            },
            Some(&theirs),
            &clean,
            &Clean::NONE,
        )?;
        rows.push(row(
            "stash (same tree)",
            &c,
            ORIGINAL_STASH,
            "<= 0.167",
            true,
        ));

        // Both stashes of the prepare row, in podman's storage as the original keeps them.
        let store = work.join("store-0");
        for stash in ["bench", "small"] {
            let name = format!("localhost/stackbuild-bench-{stash}:latest");
            timed(&format!(
                "skopeo copy -q oci:{}:{stash}:latest containers-storage:{name}",
                q(&store)
            ))?;
            podman_images.push(name);
        }
        let theirs = |i| {
            let root = wi("original-prepared", i) + "/build/image-root";
            let mut script = format!("set -e; mkdir -p {root}");
            for name in &podman_images {
                let _ = write!(
                    script,
                    "; m=$(podman image mount {name}); \
                     rsync --archive --hard-links --xattrs --acls --one-file-system --inplace \
                     \"$m/\" {root}/; podman image umount --force {name} >/dev/null"
                );
            }
            script
        };
        let c = compare(n, prepare, Some(&theirs), "", after_prepare)?;
        rows.push(row(
            "stackbuild --prepare-only",
            &c,
            ORIGINAL_PREPARE,
            "-",
            true,
        ));
        Ok(rows)
    })();
    let _ = timed(&clean);
    if !podman_images.is_empty() {
        let _ = timed(&format!(
            "podman rmi -f {} >/dev/null 2>&1; true",
            podman_images.join(" ")
        ));
    }
    result
}
