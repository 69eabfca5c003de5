//! `stackmerge`: lay image refs and directories over each other, lowest first, into a new
//! directory, as a sequence of `rsync -aHAX SRC/ DIR/` would, in one pass, and report the
//! conflicts.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use stackcore::Error;
use stackcore::apply::{Source, StackOutcome, plan_stack, stack_to_dir};
use stackcore::cli::{Log, print_json, print_text, ref_arg, store_path};
use stackcore::extract::ExtractOptions;
use stackcore::image::{ImageRef, is_path_arg};
use stackcore::layer::model::ConflictKind;
use stackcore::manifest::StackmergeReport;
use stackcore::open::{OpenOptions, open_ref, opening_error};

const EXAMPLES: &str = "\
Examples:
  stackmerge --into /tmp/root base:latest extra:v1     # two stashes, base lowest
  stackmerge --into root oci:/srv/layout:os:1 ./overlay-dir --json
  stash --root r --json | stackmerge --into out base -  # the ref on stdin as the top
  stackmerge --into root docker://registry.example.org/os/base:v1 ./site  # pulled first
  stackmerge --into root --dry-run --packages merge base extra  # the plan, nothing written

A SOURCE that starts with /, ./ or ../, or names an existing path, is a directory; anything
else is an image ref. Where rsync would fail (a file or symlink over a non-empty directory,
e.g. a usr-merge `lib -> usr/lib` over a `lib/` directory) the upper source wins and the
path is reported.

Package databases (dpkg, rpm, apk, pacman) are read and reported: by default the result
holds the uppermost source's database, as rsync leaves it, and the report names the
packages that database no longer lists (`lost`). `--packages merge` writes a database that
lists every source's packages instead; `--strict` fails (exit 1, nothing written) on lost
or downgraded packages, file-owner conflicts and mismatched sources.";

/// Lay image refs and directories over each other, lowest first, into a new directory:
/// the result of `rsync -aHAX SRC/ DIR/` for each source in order, with each final file
/// written once.
#[derive(Debug, Parser)]
#[command(name = "stackmerge", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// Write the stacked tree here (must not exist, or be empty); it appears only when
    /// complete.
    #[arg(long, value_name = "DIR")]
    pub into: PathBuf,
    /// The sources, lowest first: `NAME[:TAG]`, `oci:DIR[:NAME[:TAG]]`,
    /// `oci-archive:FILE[:NAME[:TAG]]`, `docker-archive:FILE[:NAME[:TAG]]`, `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` (pulled into
    /// the store first), a directory, or `-` to read one ref (or another tool's --json) from
    /// stdin.
    #[arg(value_name = "SOURCE", required = true)]
    pub sources: Vec<String>,
    #[command(flatten)]
    pub registry: stackcore::registry::RegistryArgs,
    /// `--packages` (default `report`: no file changed, as rsync would) and `--strict`.
    #[command(flatten)]
    pub packages: stackcore::packages::PackagesArgs,
    /// Do not restore xattrs whose names match GLOB (`*` wildcard); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub xattrs_exclude: Vec<String>,
    /// Print the plan (sources, conflicts, what the stack does to the package databases)
    /// and write nothing; with `--json`, the report with `dry_run: true` and no `stats`.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Threads that inflate a gzip layer which has access points in the store's cache
    /// (default: all cores where there are more than 2, else 1; the result is the same at any
    /// count; at most 256).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = stackcore::cli::threads_arg)]
    pub threads: usize,
    #[command(flatten)]
    pub common: stackcore::cli::CommonArgs,
}

/// How many conflict lines the human summary shows before it says "and N more".
const SHOWN_CONFLICTS: usize = 20;

/// Opens one SOURCE argument.
fn open_source(arg: &str, opts: &OpenOptions, stdin_used: &mut bool) -> anyhow::Result<Source> {
    if arg != "-" && is_path_arg(arg) {
        let path = PathBuf::from(arg);
        return Source::dir(path).with_context(|| format!("reading source directory {arg}"));
    }
    if arg == "-" {
        if *stdin_used {
            return Err(
                Error::Usage("only one SOURCE can be - (stdin is read once)".into()).into(),
            );
        }
        *stdin_used = true;
    }
    let text = ref_arg(arg)?;
    let r = ImageRef::parse(&text)?;
    let img = open_ref(&r, opts).map_err(|e| opening_error(&r, e))?.image;
    Ok(Source::Image(Box::new(img)))
}

/// Runs `stackmerge`.
#[allow(clippy::needless_pass_by_value)] // the signature `run_main` calls
pub fn run(cli: Cli) -> anyhow::Result<()> {
    stackui::init(cli.common.quiet, cli.common.verbose);
    stackcore::layer::read::set_read_threads(cli.threads);
    let log = Log {
        quiet: cli.common.quiet,
        tool: "stackmerge",
    };
    let opts = OpenOptions {
        store: store_path(cli.common.store.as_deref()),
        registry: cli.registry.options(Some(log))?,
    };
    let mut stdin_used = false;
    let sources = cli
        .sources
        .iter()
        .map(|a| open_source(a, &opts, &mut stdin_used))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = ExtractOptions {
        xattrs_exclude: cli.xattrs_exclude.clone(),
    };
    let start = Instant::now();
    let mode = cli
        .packages
        .mode
        .unwrap_or(stackcore::packages::Mode::Report);
    if cli.dry_run {
        return dry_run(&cli, &sources, mode, &log);
    }
    // The package databases are read as the stack reads the layers, reported (and merged,
    // or refused with --strict) before the result is renamed into place.
    let checks = stackcore::packages::Checks {
        mode,
        strict: cli.packages.strict,
        log,
    };
    log.step(format_args!(
        "stacking {} sources into {}",
        sources.len(),
        cli.into.display()
    ));
    let task =
        stackcore::progress::task(format_args!("stacking into {}", cli.into.display()), None);
    let mut outcome = stack_to_dir(&sources, &cli.into, &opts, Some(&checks))
        .with_context(|| format!("stacking into {}", cli.into.display()))?;
    drop(task);
    let secs = start.elapsed().as_secs_f64();
    for s in &outcome.sources {
        let how = if s.planned {
            ""
        } else {
            " (could not be planned: unstashed layer by layer first)"
        };
        log.step(format_args!("  {}: {} entries{how}", s.name, s.entries));
    }
    for line in conflict_lines(&outcome) {
        log.step(format_args!("  {line}"));
    }
    let t = &outcome.totals;
    if t.rsync_fails > 0 {
        log.warn(format_args!(
            "{} paths where rsync would fail (a non-directory over a non-empty directory): \
             the upper source won",
            t.rsync_fails
        ));
    }
    for w in outcome.stats.warnings() {
        log.warn(w);
    }
    log.step(format_args!(
        "done in {secs:.2}s: {} entries, {} conflicts ({} type, {} content, {} metadata), \
         {} files, {} bytes written",
        t.entries,
        t.conflicts,
        t.type_,
        t.content,
        t.metadata,
        outcome.stats.files,
        outcome.stats.bytes
    ));
    outcome.packages.note_conflicts(&outcome.conflicts, &log);
    let mut report = StackmergeReport::new(&outcome, secs);
    report.packages = outcome.packages.report.clone();
    write_report(&cli, &report)
}

/// `--dry-run`: the plan on stdout (or the report, `--json`), nothing written. With
/// `--strict`, package problems fail it as they would fail the stack.
fn dry_run(
    cli: &Cli,
    sources: &[Source],
    mode: stackcore::packages::Mode,
    log: &Log,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let outcome = plan_stack(sources, &cli.into)?;
    let mut packages = stackcore::packages::run_checks(sources, mode, cli.packages.strict, log)?;
    packages.note_conflicts(&outcome.conflicts, log);
    let mut report = StackmergeReport::new(&outcome, start.elapsed().as_secs_f64());
    report.packages = packages.report.clone();
    report.dry_run = true;
    if cli.report.is_some() || cli.common.json {
        return write_report(cli, &report);
    }
    let mut plan = String::from("# stackmerge plan (nothing is written)\n");
    for (i, s) in outcome.sources.iter().enumerate() {
        let digest = s
            .digest
            .as_deref()
            .map_or(String::new(), |d| format!(" {d}"));
        let unplanned = if s.planned {
            ""
        } else {
            " (unstashed layer by layer first: a layer writes through a symlink)"
        };
        let _ = writeln!(
            plan,
            "source {}: {} {}{digest}, {} entries{unplanned}",
            i + 1,
            s.name,
            s.kind,
            s.entries
        );
    }
    let t = &outcome.totals;
    let _ = writeln!(
        plan,
        "into: {}\nentries: {}, conflicts: {} ({} type, {} content, {} metadata), {} where \
         rsync would fail",
        outcome.dest.display(),
        t.entries,
        t.conflicts,
        t.type_,
        t.content,
        t.metadata,
        t.rsync_fails
    );
    for line in conflict_lines(&outcome)
        .into_iter()
        .chain(packages.summary())
    {
        let _ = writeln!(plan, "{line}");
    }
    for w in &packages.writes {
        let _ = writeln!(plan, "packages: write {} (merged)", w.path.display());
    }
    print_text(&plan)
}

/// Type and content conflicts, a line each up to [`SHOWN_CONFLICTS`]; metadata ones (a
/// directory's mtime, mostly) are only in the totals and the JSON.
fn conflict_lines(outcome: &StackOutcome) -> Vec<String> {
    let notable: Vec<_> = outcome
        .conflicts
        .iter()
        .filter(|c| c.kind != ConflictKind::Metadata)
        .collect();
    let mut lines: Vec<String> = notable
        .iter()
        .take(SHOWN_CONFLICTS)
        .map(|c| {
            format!(
                "conflict {}: {} ({} over {}, {})",
                c.path,
                stackcore::manifest::serde_name(&c.kind),
                c.upper,
                c.lower,
                stackcore::manifest::serde_name(&c.resolution)
            )
        })
        .collect();
    if notable.len() > SHOWN_CONFLICTS {
        lines.push(format!(
            "... and {} more type and content conflicts (--json lists them all)",
            notable.len() - SHOWN_CONFLICTS
        ));
    }
    lines
}

/// The report to `--report FILE` and, with `--json`, stdout.
fn write_report(cli: &Cli, report: &StackmergeReport) -> anyhow::Result<()> {
    if let Some(file) = &cli.report {
        let mut bytes = serde_json::to_vec_pretty(&report)?;
        bytes.push(b'\n');
        std::fs::write(file, bytes).with_context(|| format!("writing {}", file.display()))?;
    }
    if cli.common.json {
        print_json(report)?;
    }
    Ok(())
}
