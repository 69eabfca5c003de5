//! `stash`: keep a root tree as a layer of an OCI image in the store.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use stackcore::cli::{Log, print_json, print_line, print_text};
use stackcore::layer::Compression;
use stackcore::manifest::{PushReport, SCHEMA, StashOutput, StashPushReport, StashReport};
use stackcore::oci::Store;
use stackcore::registry::{RegistryOptions, RegistryRef, push};
use stackcore::stash::notes::{self, Note};
use stackcore::stash::target::{self, Target};
use stackcore::stash::{import, listing, stash};

mod maint;

const EXAMPLES: &str = "\
Examples:
  stash --root build/image-root                 # name from image/config.xml, tag latest
  stash --root rootfs --container-name base --tag v1 --json
  stash --list
  stash --import-legacy                         # copy kiwi-ng system stash's archives in
  stash --root r --json | unstash - --to copy   # pipes take the ref or the JSON
  stash --root r --container-name base --push docker://registry.example.org/os/base:v1
  stash --container-name base --tag v1 --push docker://127.0.0.1:5000/os/base:v1 --tls-verify=false

Store maintenance (each takes --store and --json):
  stash --remove base:v1      # untag a stash (its blobs stay until --gc)
  stash --gc                  # remove unreferenced blobs, stale temp files, stale caches
  stash --verify              # hash every blob, check every image's references; exit 1
                              # naming each damaged blob";

/// Keep a root tree as an OCI image: the whole tree the first time, only what changed after.
#[derive(Debug, Parser)]
#[allow(clippy::struct_excessive_bools)] // command-line switches
#[command(name = "stash", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// The root tree to stash (e.g. a KIWI `build/image-root`).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present_any = ["list", "push", "remove", "gc", "verify", "import_legacy"]
    )]
    pub root: Option<PathBuf>,
    /// Stash name; default: the `<image name=...>` of ROOT/image/config.xml.
    #[arg(long, value_name = "NAME")]
    pub container_name: Option<String>,
    /// Tag.
    #[arg(long, default_value = "latest")]
    pub tag: String,
    /// List the stashes instead (and the original plugin's, from /var/tmp/kiwi-stash).
    #[arg(long, conflicts_with_all = ["root", "container_name"])]
    pub list: bool,
    /// Copy the original plugin's stashes (`kiwi-ng system stash` archives in
    /// /var/tmp/kiwi-stash) into the store, tags kept: each `NAME[:TAG]` given, or all of them.
    /// A NAME:TAG the store has already is skipped. The archives stay where they are.
    #[arg(long, value_name = "NAME", num_args = 0..,
          conflicts_with_all = ["root", "container_name", "list", "remove", "gc", "verify", "push"])]
    pub import_legacy: Option<Vec<String>>,
    /// Layer compression.
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
    pub compression: String,
    /// Compression level (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,
    /// Compression threads (default: all cores; the output is the same at any count; at most
    /// 256).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = stackcore::cli::threads_arg)]
    pub threads: usize,
    /// Compare file contents instead of size and mtime to find changes.
    #[arg(long)]
    pub checksum: bool,
    /// Push the stash to a registry: `docker://HOST[:PORT]/REPO[:TAG]`. With --root, the stash
    /// just made; without, the existing stash --container-name NAME --tag TAG.
    #[arg(long, value_name = "DEST", conflicts_with = "list")]
    pub push: Option<String>,
    /// How to reach the registry of --push.
    #[command(flatten)]
    pub registry: stackcore::registry::AccessArgs,
    /// Remove the stash `NAME[:TAG]` (tag default: latest) from the store; its blobs stay until
    /// --gc.
    #[arg(long, value_name = "NAME[:TAG]", conflicts_with_all = ["root", "container_name", "list", "gc", "verify", "push"])]
    pub remove: Option<String>,
    /// Remove what no stash references: blobs, temp files of killed runs, stale caches.
    /// Waits for running stashes to finish.
    #[arg(long, conflicts_with_all = ["root", "container_name", "list", "verify", "push"])]
    pub gc: bool,
    /// Check the store: every blob's digest, every stash's manifest, config and layers
    /// present with the right sizes. Exits 1 naming each damaged blob. Needs read access only.
    #[arg(long, conflicts_with_all = ["root", "container_name", "list", "push"])]
    pub verify: bool,
    #[command(flatten)]
    pub common: stackcore::cli::CommonArgs,
}

/// Runs `stash`.
#[allow(clippy::needless_pass_by_value)] // the signature `run_main` calls
pub fn run(cli: Cli) -> anyhow::Result<()> {
    stackui::init(cli.common.quiet, cli.common.verbose);
    let log = cli.common.log("stash");
    let store_dir = cli.common.store_dir();
    if cli.list {
        return list(&store_dir, cli.common.json, log);
    }
    if let Some(r) = &cli.remove {
        return maint::remove(&store_dir, r, cli.common.json, log);
    }
    if cli.gc {
        return maint::gc(&store_dir, cli.common.json, log);
    }
    if cli.verify {
        return maint::verify(&store_dir, cli.common.json, log);
    }
    if let Some(names) = &cli.import_legacy {
        return import_legacy(&store_dir, names, cli.common.json, log);
    }
    let push_to = cli.push.as_deref().map(target::push_dest).transpose()?;
    let registry: RegistryOptions = cli.registry.options(None, Some(log))?;
    let Some(root) = cli.root.as_deref() else {
        let dest = push_to.expect("clap requires --root unless --push or --list");
        return push_existing(&cli, &store_dir, &dest, &registry);
    };
    let target = Target::resolve(root, cli.container_name.as_deref(), &cli.tag)?;
    let compression = Compression::parse(&cli.compression, cli.compression_level)?;
    let store = Store::open_for_write(&store_dir)
        .with_context(|| format!("opening store {}", store_dir.display()))?;
    let full = target.full_name();
    if target.legacy_stays_apart(&store, &stackcore::legacy::home())? {
        log.warn(format_args!(
            "{full} is new to the store, so this stash holds the whole tree; the original \
             plugin's {full} stays apart (stash --import-legacy {full} first, to stash on top of it)"
        ));
    }
    log.step(format_args!(
        "stashing {} as {full} into {}",
        root.display(),
        store.root().display()
    ));
    let opts = target.options(compression, cli.threads, cli.checksum);
    let start = Instant::now();
    let outcome = stash(&store, &opts).with_context(|| format!("stashing {}", root.display()))?;
    let secs = start.elapsed().as_secs_f64();
    for note in notes::notes(&outcome, secs) {
        match note {
            Note::Step(line) => log.step(line),
            Note::Warn(line) => log.warn(line),
        }
    }
    let pushed = match &push_to {
        Some(dest) => {
            let desc = store
                .resolve(&full)?
                .with_context(|| format!("{full} vanished from the store"))?;
            let t = Instant::now();
            let p = push(&store, &desc, dest, &registry)
                .with_context(|| format!("pushing stash {full}"))?;
            Some((p, t.elapsed().as_secs_f64()))
        }
        None => None,
    };
    if cli.common.json {
        print_json(&StashOutput::Stash(StashReport::new(
            &outcome,
            pushed.as_ref().map(|(p, t)| PushReport::new(p, *t)),
            secs,
        )))
    } else {
        print_line(&outcome.reference)
    }
}

/// `stash --container-name NAME [--tag T] --push DEST`: publishes an existing stash. Prints
/// the pushed ref (or, with --json, the stash's ref and the push report).
fn push_existing(
    cli: &Cli,
    store_dir: &Path,
    dest: &RegistryRef,
    registry: &RegistryOptions,
) -> anyhow::Result<()> {
    let (store, desc) = target::existing(store_dir, cli.container_name.as_deref(), &cli.tag)?;
    let name = cli.container_name.clone().unwrap_or_default(); // `existing` required it
    let full = format!("{name}:{}", cli.tag);
    let start = Instant::now();
    let pushed =
        push(&store, &desc, dest, registry).with_context(|| format!("pushing stash {full}"))?;
    if cli.common.json {
        print_json(&StashOutput::Push(StashPushReport {
            schema: SCHEMA,
            reference: format!("oci:{}:{full}", store.root().display()),
            name,
            tag: cli.tag.clone(),
            manifest: desc.digest.to_string(),
            pushed: PushReport::new(&pushed, start.elapsed().as_secs_f64()),
        }))
    } else {
        print_line(&pushed.reference)
    }
}

/// `stash --list`: the store's stashes, then the original plugin's archives.
fn list(store_dir: &Path, json: bool, log: Log) -> anyhow::Result<()> {
    let listing = listing::list(store_dir, &stackcore::legacy::home())?;
    for w in &listing.warnings {
        log.warn(w);
    }
    if json {
        return print_json(&StashOutput::List(listing.to_json()));
    }
    print_text(&listing.text())
}

/// `stash --import-legacy [NAME[:TAG]...]`: prints the ref of each stash imported (or, with
/// --json, the report); says on stderr what was imported and skipped.
fn import_legacy(store_dir: &Path, names: &[String], json: bool, log: Log) -> anyhow::Result<()> {
    let home = stackcore::legacy::home();
    let store = Store::open_for_write(store_dir)
        .with_context(|| format!("opening store {}", store_dir.display()))?;
    let outcome = stackcore::legacy::import(&store, &home, names)
        .context("importing the original plugin's stashes")?;
    for line in import::steps(&outcome, &home) {
        log.step(line);
    }
    if json {
        return print_json(&StashOutput::ImportLegacy(import::report(
            &outcome,
            store.root(),
            &home,
        )));
    }
    print_text(&import::refs(&outcome, store.root()))
}
