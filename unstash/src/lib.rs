//! `unstash`: write an image's merged root tree to a directory or as one tar stream.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use stackcore::Error;
use stackcore::apply::{unstash_to_dir, unstash_to_tar};
use stackcore::cli::{print_json, ref_arg};
use stackcore::extract::ExtractOptions;
use stackcore::image::ImageRef;
use stackcore::manifest::UnstashReport;
use stackcore::open::{open_ref, opening_error};

const EXAMPLES: &str = "\
Examples:
  unstash myimage --to /tmp/root                 # a stash in the default store
  unstash oci:/var/lib/kiwi-stash:myimage:v1 --to root
  unstash oci-archive:/var/tmp/kiwi-stash/old/old.tar --to root
  unstash docker-archive:saved.tar:myapp:v2 --to root   # docker save / podman save output
  unstash myimage --output - | tar -tvf -        # the merged tree as one tar
  stash --root r --json | unstash - --to copy
  unstash docker://registry.example.org/os/base:v1 --to root   # pulled into the store first
  unstash docker://127.0.0.1:5000/ns/x --tls-verify=false --to root";

/// Write an image's merged root tree (every layer applied, whiteouts honoured) to a
/// directory or a tar stream; nothing is ever written outside the target.
#[derive(Debug, Parser)]
#[command(name = "unstash", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// The image: `NAME[:TAG]`, `oci:DIR[:NAME[:TAG]]`, `oci-archive:FILE[:NAME[:TAG]]`,
    /// `docker-archive:FILE[:NAME[:TAG]]`, `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` (pulled
    /// into the store first, kept as
    /// `HOST/REPO:TAG`), or `-` to read a ref (or another tool's --json) from stdin.
    #[arg(value_name = "REF")]
    pub image: String,
    /// Write the tree here (must not exist, or be empty); it appears only when complete.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "output",
        conflicts_with = "output"
    )]
    pub to: Option<PathBuf>,
    /// Write the merged tree as one uncompressed tar to FILE, or - for stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub registry: stackcore::registry::RegistryArgs,
    /// Do not restore xattrs whose names match GLOB (`*` wildcard); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub xattrs_exclude: Vec<String>,
    /// Threads that inflate a gzip layer which has access points in the store's cache
    /// (default: all cores where there are more than 2, else 1; the result is the same at any
    /// count; at most 256).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = stackcore::cli::threads_arg)]
    pub threads: usize,
    #[command(flatten)]
    pub common: stackcore::cli::CommonArgs,
}

/// Runs `unstash`.
#[allow(clippy::needless_pass_by_value)] // the signature `run_main` calls
pub fn run(cli: Cli) -> anyhow::Result<()> {
    stackui::init(cli.common.quiet, cli.common.verbose);
    stackcore::layer::read::set_read_threads(cli.threads);
    let log = cli.common.log("unstash");
    let text = ref_arg(&cli.image)?;
    let r = ImageRef::parse(&text)?;
    let store = cli.common.store_dir();
    let opts = stackcore::open::OpenOptions {
        store,
        registry: cli.registry.options(Some(log))?,
    };
    let opened = open_ref(&r, &opts).map_err(|e| opening_error(&r, e))?;
    let (img, pulled) = (opened.image, opened.pulled);
    let digest = img.digest().clone();
    let layers = img.manifest.layers.len();
    let opts = ExtractOptions {
        xattrs_exclude: cli.xattrs_exclude.clone(),
    };
    let start = Instant::now();
    let task = stackcore::progress::task(format_args!("writing {r}"), None);
    let outcome = if let Some(dest) = &cli.to {
        log.step(format_args!(
            "writing {r} ({layers} layers) to {}",
            dest.display()
        ));
        unstash_to_dir(img, dest, opts)
            .with_context(|| format!("unstashing {r} to {}", dest.display()))?
    } else {
        let output = cli.output.clone().expect("clap requires --to or --output");
        if output.as_os_str() == "-" {
            if cli.common.json {
                return Err(Error::Usage("--json and --output - both want stdout".into()).into());
            }
            let scratch = std::env::temp_dir();
            let mut out = std::io::stdout().lock();
            unstash_to_tar(img, &mut out, &scratch, opts)
                .with_context(|| format!("unstashing {r}"))?
        } else {
            let output = std::path::absolute(&output)?;
            let dir = output
                .parent()
                .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf);
            // Whole or not at all: a failed run leaves no partial archive behind.
            let file = stackcore::atomic::AtomicFile::create(&output)?;
            let mut w = std::io::BufWriter::new(file);
            let outcome = unstash_to_tar(img, &mut w, &dir, opts)
                .with_context(|| format!("unstashing {r}"))?;
            let file = w
                .into_inner()
                .map_err(|e| Error::io(&output, e.into_error()))?;
            file.commit()?;
            outcome
        }
    };
    drop(task);
    for w in outcome.stats.warnings() {
        log.warn(w);
    }
    let secs = start.elapsed().as_secs_f64();
    log.step(format_args!(
        "done in {secs:.2}s: {} files, {} dirs, {} symlinks, {} hardlinks, {} bytes",
        outcome.stats.files,
        outcome.stats.dirs,
        outcome.stats.symlinks,
        outcome.stats.hardlinks,
        outcome.stats.bytes
    ));
    if cli.common.json {
        let mut report =
            UnstashReport::new(r.to_string(), digest.to_string(), layers, &outcome, secs);
        report.pulled = pulled;
        print_json(&report)?;
    }
    Ok(())
}
