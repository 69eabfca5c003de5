//! `stackmerge`: lay image refs and directories over each other, lowest first, into a new
//! directory, as a sequence of `rsync -aHAX SRC/ DIR/` would, in one pass, and report the
//! conflicts.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use stackcore::Error;
use stackcore::apply::{Source, stack_to_dir};
use stackcore::cli::{Log, print_json, ref_arg, store_path};
use stackcore::extract::ExtractOptions;
use stackcore::image::{BlobSource, Image, ImageRef, is_path_arg};
use stackcore::layer::model::ConflictKind;
use stackcore::manifest::StackmergeReport;
use stackcore::oci::Store;
use stackcore::registry::{RegistryOptions, RegistryRef, pull_ref};

const EXAMPLES: &str = "\
Examples:
  stackmerge --into /tmp/root base:latest extra:v1     # two stashes, base lowest
  stackmerge --into root oci:/srv/layout:os:1 ./overlay-dir --json
  stash --root r --json | stackmerge --into out base -  # the ref on stdin as the top
  stackmerge --into root docker://registry.example.org/os/base:v1 ./site  # pulled first

A SOURCE that starts with /, ./ or ../, or names an existing path, is a directory; anything
else is an image ref. Where rsync would fail (a file or symlink over a non-empty directory,
e.g. a usr-merge `lib -> usr/lib` over a `lib/` directory) the upper source wins and the
path is reported.";

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
    /// `oci-archive:FILE[:NAME[:TAG]]`, `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` (pulled into
    /// the store first), a directory, or `-` to read one ref (or another tool's --json) from
    /// stdin.
    #[arg(value_name = "SOURCE", required = true)]
    pub sources: Vec<String>,
    /// The store for `NAME[:TAG]` refs, and where `docker://` refs are pulled to.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub registry: stackcore::registry::RegistryArgs,
    /// Do not restore xattrs whose names match GLOB (`*` wildcard); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub xattrs_exclude: Vec<String>,
    /// Print the JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Threads that inflate a gzip layer which has access points in the store's cache
    /// (default: all cores where there are more than 2, else 1; the result is the same at any
    /// count).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// No progress bars or step lines on stderr (warnings and errors still show).
    #[arg(long, short)]
    pub quiet: bool,
    /// More detail on stderr: -v info, -vv debug (caches, plans, skipped blobs), -vvv trace.
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How many conflict lines the human summary shows before it says "and N more".
const SHOWN_CONFLICTS: usize = 20;

/// Opens one SOURCE argument.
fn open_source(
    arg: &str,
    store: &Path,
    registry: &RegistryOptions,
    stdin_used: &mut bool,
) -> anyhow::Result<Source> {
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
    let img = match &r {
        // The registry's errors name the ref already; no context line repeating it.
        ImageRef::Registry(text) => {
            let rr = RegistryRef::parse(text)?;
            let s = Store::open_for_write(store)
                .with_context(|| format!("opening store {} to pull into", store.display()))?;
            let pulled = pull_ref(&s, &rr, registry)?;
            Image::from_descriptor(
                BlobSource::Layout(s),
                pulled.descriptor.clone(),
                pulled.ref_name.clone(),
            )?
        }
        _ => Image::open(&r, store).with_context(|| format!("opening {r}"))?,
    };
    Ok(Source::Image(Box::new(img)))
}

/// Runs `stackmerge`.
#[allow(clippy::needless_pass_by_value)] // the signature `run_main` calls
pub fn run(cli: Cli) -> anyhow::Result<()> {
    stackui::init(cli.quiet, cli.verbose);
    stackcore::layer::read::set_read_threads(cli.threads);
    let log = Log {
        quiet: cli.quiet,
        tool: "stackmerge",
    };
    let store = store_path(cli.store.as_deref());
    let registry = cli.registry.options(Some(log));
    let mut stdin_used = false;
    let sources = cli
        .sources
        .iter()
        .map(|a| open_source(a, &store, &registry, &mut stdin_used))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = ExtractOptions {
        xattrs_exclude: cli.xattrs_exclude.clone(),
    };
    let start = Instant::now();
    log.step(format_args!(
        "stacking {} sources into {}",
        sources.len(),
        cli.into.display()
    ));
    let task =
        stackcore::progress::task(format_args!("stacking into {}", cli.into.display()), None);
    let outcome = stack_to_dir(&sources, &cli.into, &opts)
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
    // Type and content conflicts are worth a line each; metadata ones (a directory's mtime,
    // mostly) only in the totals and the JSON.
    let notable: Vec<_> = outcome
        .conflicts
        .iter()
        .filter(|c| c.kind != ConflictKind::Metadata)
        .collect();
    for c in notable.iter().take(SHOWN_CONFLICTS) {
        log.step(format_args!(
            "  conflict {}: {} ({} over {}, {})",
            c.path,
            serde_plain(&c.kind),
            c.upper,
            c.lower,
            serde_plain(&c.resolution)
        ));
    }
    let t = &outcome.totals;
    if notable.len() > SHOWN_CONFLICTS {
        log.step(format_args!(
            "  ... and {} more type and content conflicts (--json lists them all)",
            notable.len() - SHOWN_CONFLICTS
        ));
    }
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
    let report = StackmergeReport::new(&outcome, secs);
    if let Some(file) = &cli.report {
        let mut bytes = serde_json::to_vec_pretty(&report)?;
        bytes.push(b'\n');
        std::fs::write(file, bytes).with_context(|| format!("writing {}", file.display()))?;
    }
    if cli.json {
        print_json(&report)?;
    }
    Ok(())
}

/// A unit enum's serde name (`type`, `lower-content-kept`...).
fn serde_plain(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
