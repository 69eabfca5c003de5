//! `stash`: keep a root tree as a layer of an OCI image in the store.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use stackcore::Error;
use stackcore::cli::{Log, print_json, print_line, store_path};
use stackcore::image::{BlobSource, Image};
use stackcore::layer::Compression;
use stackcore::manifest::{
    ImportedStash, PushReport, SCHEMA, SkippedStash, StashImportReport, StashList, StashOutput,
    StashPushReport, StashReport, StashRow,
};
use stackcore::oci::Store;
use stackcore::registry::{RegistryOptions, RegistryRef, push};
use stackcore::stash::{StashOptions, stash, valid_name, valid_tag};

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
    /// The store (an OCI image layout); default: `$KIWI_STASH_HOME`, else
    /// `/var/lib/kiwi-stash` for root, else `$XDG_DATA_HOME/kiwi-stash`.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// List the stashes instead (and the original plugin's, from /var/tmp/kiwi-stash).
    #[arg(long, conflicts_with_all = ["root", "container_name"])]
    pub list: bool,
    /// Copy the original plugin's stashes (`kiwi-ng system stash` archives in
    /// /var/tmp/kiwi-stash) into the store, tags kept: each NAME[:TAG] given, or all of them.
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
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = threads_arg)]
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
    /// Print a JSON report on stdout instead of the ref.
    #[arg(long)]
    pub json: bool,
    /// No progress bars or step lines on stderr (warnings and errors still show).
    #[arg(long, short)]
    pub quiet: bool,
    /// More detail on stderr: -v info, -vv debug (caches, plans, skipped blobs), -vvv trace.
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `--threads N`: a count up to [`stackcore::layer::compress::MAX_THREADS`].
fn threads_arg(s: &str) -> Result<usize, String> {
    let max = stackcore::layer::compress::MAX_THREADS;
    match s.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "expected a thread count from 0 (all cores) to {max}"
        )),
    }
}

/// Runs `stash`.
#[allow(clippy::needless_pass_by_value)] // the signature `run_main` calls
pub fn run(cli: Cli) -> anyhow::Result<()> {
    stackui::init(cli.quiet, cli.verbose);
    let log = Log {
        quiet: cli.quiet,
        tool: "stash",
    };
    let store_dir = store_path(cli.store.as_deref());
    if cli.list {
        return list(&store_dir, cli.json);
    }
    if let Some(r) = &cli.remove {
        return maint::remove(&store_dir, r, cli.json, log);
    }
    if cli.gc {
        return maint::gc(&store_dir, cli.json, log);
    }
    if cli.verify {
        return maint::verify(&store_dir, cli.json, log);
    }
    if let Some(names) = &cli.import_legacy {
        return import_legacy(&store_dir, names, cli.json, log);
    }
    let push_to = cli
        .push
        .as_deref()
        .map(|d| {
            if d.starts_with("docker://") {
                RegistryRef::parse(d)
            } else {
                Err(Error::Usage(format!(
                    "--push {d:?}: expected docker://HOST[:PORT]/REPO[:TAG]"
                )))
            }
        })
        .transpose()?;
    let registry: RegistryOptions = cli.registry.options(None, Some(log))?;
    let Some(root) = cli.root.clone() else {
        let dest = push_to.expect("clap requires --root unless --push or --list");
        return push_existing(&cli, &store_dir, &dest, &registry);
    };
    // A symlink to a directory is accepted as --root (as for --store); nothing below the
    // root is followed.
    let meta = std::fs::metadata(&root).map_err(|e| {
        let link = std::fs::read_link(&root)
            .map(|t| format!(" (a symlink to {})", t.display()))
            .unwrap_or_default();
        Error::Usage(format!("--root {}{link}: {e}", root.display()))
    })?;
    if !meta.is_dir() {
        let what = std::fs::read_link(&root).map_or_else(
            |_| "not a directory".to_owned(),
            |t| format!("a symlink to {}, which is not a directory", t.display()),
        );
        return Err(Error::Usage(format!("--root {}: {what}", root.display())).into());
    }
    if let Err(e) = std::fs::read_dir(&root) {
        return Err(Error::Usage(format!(
            "--root {}: cannot read the directory: {e} (stash runs as any user, but needs to \
             read the whole tree)",
            root.display()
        ))
        .into());
    }
    let desc_path = root.join("image/config.xml");
    // Read as the tree is: nothing below the root through a symlink.
    let facts = match stackcore::tree::read_beneath(&root, &["image", "config.xml"], 16 << 20)? {
        Some(xml) => Some(stackcore::description::facts(
            &xml,
            &desc_path.display().to_string(),
        )?),
        None => None,
    };
    let name = match (&cli.container_name, &facts) {
        (Some(n), _) => n.clone(),
        (None, Some(f)) => f.name.clone().ok_or_else(|| {
            Error::Usage(format!(
                "{}: no <image name=...>; give --container-name NAME",
                desc_path.display()
            ))
        })?,
        (None, None) => {
            return Err(Error::Usage(format!(
                "{} has no image/config.xml to take the stash name from; give --container-name NAME",
                root.display()
            ))
            .into());
        }
    };
    if !valid_name(&name) {
        let whence = if cli.container_name.is_some() {
            "--container-name".to_owned()
        } else {
            desc_path.display().to_string()
        };
        return Err(Error::Usage(format!(
            "name {name:?} (from {whence}) cannot be used as a stash name: it must match \
             ^[0-9a-zA-Z][0-9a-zA-Z-]*[0-9a-zA-Z]$ (letters, digits and dashes, starting and \
             ending with a letter or digit) and be at most {} bytes long; give another with \
             --container-name",
            stackcore::stash::MAX_NAME
        ))
        .into());
    }
    if !valid_tag(&cli.tag) {
        return Err(Error::Usage(format!(
            "tag {:?}: must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}",
            cli.tag
        ))
        .into());
    }
    let compression = Compression::parse(&cli.compression, cli.compression_level)?;
    let store = Store::open_for_write(&store_dir)
        .with_context(|| format!("opening store {}", store_dir.display()))?;
    let opts = StashOptions {
        root: root.clone(),
        name: name.clone(),
        tag: cli.tag.clone(),
        author: facts.and_then(|f| f.author),
        compression,
        threads: cli.threads,
        checksum: cli.checksum,
        created: stackcore::timefmt::now_or_source_date_epoch(),
    };
    let full = format!("{name}:{}", cli.tag);
    if store.resolve(&full)?.is_none()
        && stackcore::legacy::find(&stackcore::legacy::home(), &name, &cli.tag)
            .is_ok_and(|s| s.is_some())
    {
        log.warn(format_args!(
            "{full} is new to the store, so this stash holds the whole tree; the original \
             plugin's {full} stays apart (stash --import-legacy {full} first, to stash on top of it)"
        ));
    }
    log.step(format_args!(
        "stashing {} as {name}:{} into {}",
        root.display(),
        cli.tag,
        store.root().display()
    ));
    let start = Instant::now();
    let outcome = stash(&store, &opts).with_context(|| format!("stashing {}", root.display()))?;
    let secs = start.elapsed().as_secs_f64();
    if outcome.layers_added == 0 {
        log.step(format_args!(
            "no change since the last stash of {name}:{}: no layer added",
            cli.tag
        ));
    } else if let Some(l) = &outcome.layer {
        log.step(format_args!(
            "added layer {} ({} bytes; {} added, {} changed, {} deleted) in {secs:.2}s",
            l.digest, l.size, outcome.added, outcome.changed, outcome.deleted
        ));
    }
    if outcome.sockets_skipped > 0 {
        log.warn(format_args!(
            "{} sockets left out (they cannot be stashed)",
            outcome.sockets_skipped
        ));
    }
    for dir in &outcome.left_out {
        log.warn(format_args!(
            "{} is the store, inside the root: left out of the stash",
            dir.display()
        ));
    }
    if outcome.mount_points > 0 {
        log.step(format_args!(
            "{} mount points kept as empty directories",
            outcome.mount_points
        ));
    }
    let pushed = match &push_to {
        Some(dest) => {
            let desc = store
                .resolve(&format!("{name}:{}", cli.tag))?
                .with_context(|| format!("{name}:{} vanished from the store", cli.tag))?;
            let t = Instant::now();
            let p = push(&store, &desc, dest, &registry)
                .with_context(|| format!("pushing stash {name}:{}", cli.tag))?;
            Some((p, t.elapsed().as_secs_f64()))
        }
        None => None,
    };
    if cli.json {
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
    store_dir: &std::path::Path,
    dest: &RegistryRef,
    registry: &RegistryOptions,
) -> anyhow::Result<()> {
    let name = cli.container_name.as_deref().ok_or_else(|| {
        Error::Usage("--push without --root pushes an existing stash: name it with --container-name NAME [--tag TAG]".into())
    })?;
    let full = format!("{name}:{}", cli.tag);
    let store =
        Store::open(store_dir).with_context(|| format!("opening store {}", store_dir.display()))?;
    let desc = store.resolve(&full)?.ok_or_else(|| {
        Error::Other(format!(
            "no stash {full} in {} (stash --list shows what is there)",
            store.root().display()
        ))
    })?;
    let start = Instant::now();
    let pushed =
        push(&store, &desc, dest, registry).with_context(|| format!("pushing stash {full}"))?;
    if cli.json {
        print_json(&StashOutput::Push(StashPushReport {
            schema: SCHEMA,
            reference: format!("oci:{}:{full}", store.root().display()),
            name: name.to_owned(),
            tag: cli.tag.clone(),
            manifest: desc.digest.to_string(),
            pushed: PushReport::new(&pushed, start.elapsed().as_secs_f64()),
        }))
    } else {
        print_line(&pushed.reference)
    }
}

fn list(store_dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    if store_dir.join("oci-layout").exists() {
        let store = Store::open(store_dir)?;
        for desc in store.read_index()?.manifests {
            let Some(full) = desc.ref_name().map(str::to_owned) else {
                continue;
            };
            let (name, tag) = stackcore::image::split_tag(&full);
            let reference = format!("oci:{}:{full}", store.root().display());
            let (digest, size) = (desc.digest.to_string(), desc.size);
            // One damaged tag is listed as such; the rest are listed as usual.
            let row = match Image::from_descriptor(
                BlobSource::Layout(store.clone()),
                desc,
                full.clone(),
            ) {
                Ok(img) => StashRow {
                    reference,
                    name: name.to_owned(),
                    tag: tag.to_owned(),
                    digest: img.digest().to_string(),
                    size: img.size(),
                    layers: img.manifest.layers.len() as u64,
                    created: img.config.created.clone(),
                    damaged: None,
                },
                Err(e) => {
                    eprintln!(
                        "stash: warning: {full} is damaged: {e} (stash --verify checks the store)"
                    );
                    StashRow {
                        reference,
                        name: name.to_owned(),
                        tag: tag.to_owned(),
                        digest,
                        size,
                        layers: 0,
                        created: None,
                        damaged: Some(e.to_string()),
                    }
                }
            };
            rows.push(row);
        }
    }
    let home = stackcore::legacy::home();
    let (found, problems) = stackcore::legacy::list(&home);
    for p in problems {
        eprintln!("stash: warning: {p}");
    }
    let legacy: Vec<StashRow> = found.iter().map(legacy_row).collect();
    if json {
        return print_json(&StashOutput::List(StashList {
            schema: SCHEMA,
            store: store_dir.display().to_string(),
            stashes: rows,
            legacy,
        }));
    }
    let mut out = String::new();
    let _ = writeln!(out, "# store {}", store_dir.display());
    table(&mut out, &rows);
    if !legacy.is_empty() {
        let _ = writeln!(
            out,
            "# kiwi-ng system stash archives ({}): use them as shown; \
             stash --import-legacy copies them into the store",
            home.display()
        );
        // The ref that works: the bare name, unless the store has a stash of that name.
        let shown: Vec<StashRow> = found
            .iter()
            .zip(legacy)
            .map(|(s, mut row)| {
                let full = s.full_name();
                if rows.iter().any(|r| format!("{}:{}", r.name, r.tag) == full) {
                    row.name.clone_from(&row.reference);
                    row.tag.clear();
                }
                row
            })
            .collect();
        table(&mut out, &shown);
    }
    print_text(&out)
}

/// Writes `text` to stdout; a closed stdout is an error `run_main` treats as success.
fn print_text(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, text.as_bytes())?;
    std::io::Write::flush(&mut stdout)?;
    Ok(())
}

fn table(out: &mut String, rows: &[StashRow]) {
    let _ = writeln!(
        out,
        "{:<40} {:<19} {:>12} {:>6}  CREATED",
        "NAME:TAG", "DIGEST", "SIZE", "LAYERS"
    );
    for r in rows {
        let short = r
            .digest
            .strip_prefix("sha256:")
            .map_or(r.digest.as_str(), |h| &h[..12]);
        let created = match &r.damaged {
            Some(why) => format!("DAMAGED: {why}"),
            None => r.created.clone().unwrap_or_else(|| "-".to_owned()),
        };
        let _ = writeln!(
            out,
            "{:<40} sha256:{short} {:>12} {:>6}  {created}",
            if r.tag.is_empty() {
                r.name.clone() // a whole ref
            } else {
                format!("{}:{}", r.name, r.tag)
            },
            r.size,
            r.layers,
        );
    }
}

/// A listing row for one of the original plugin's stashes.
fn legacy_row(s: &stackcore::legacy::LegacyStash) -> StashRow {
    StashRow {
        reference: s.reference(),
        name: s.name.clone(),
        tag: s.tag.clone(),
        digest: s.image.digest().to_string(),
        size: s.image.size(),
        layers: s.image.manifest.layers.len() as u64,
        created: s.image.config.created.clone(),
        damaged: None,
    }
}

/// `stash --import-legacy [NAME[:TAG]...]`: prints the ref of each stash imported (or, with
/// --json, the report); says on stderr what was skipped.
fn import_legacy(
    store_dir: &std::path::Path,
    names: &[String],
    json: bool,
    log: Log,
) -> anyhow::Result<()> {
    let home = stackcore::legacy::home();
    let store = Store::open_for_write(store_dir)
        .with_context(|| format!("opening store {}", store_dir.display()))?;
    let outcome = stackcore::legacy::import(&store, &home, names)
        .context("importing the original plugin's stashes")?;
    let store_ref = |full: &str| format!("oci:{}:{full}", store.root().display());
    for i in &outcome.imported {
        log.step(format_args!(
            "imported {} from {} ({} layers, {} bytes written)",
            i.name,
            i.archive.display(),
            i.layers,
            i.bytes
        ));
    }
    for s in &outcome.skipped {
        log.step(format_args!(
            "skipped {}: the store has it already ({}); {} left alone",
            s.name,
            s.manifest,
            s.archive.display()
        ));
    }
    if outcome.imported.is_empty() && outcome.skipped.is_empty() {
        log.step(format_args!(
            "no kiwi-ng system stash archives in {}",
            home.display()
        ));
    }
    if json {
        let split = |full: &str| {
            let (n, t) = stackcore::image::split_tag(full);
            (n.to_owned(), t.to_owned())
        };
        return print_json(&StashOutput::ImportLegacy(StashImportReport {
            schema: SCHEMA,
            store: store.root().display().to_string(),
            legacy_home: home.display().to_string(),
            imported: outcome
                .imported
                .iter()
                .map(|i| {
                    let (name, tag) = split(&i.name);
                    ImportedStash {
                        reference: store_ref(&i.name),
                        name,
                        tag,
                        archive: i.archive.display().to_string(),
                        archive_manifest: i.archive_manifest.to_string(),
                        manifest: i.manifest.to_string(),
                        layers: i.layers as u64,
                        bytes: i.bytes,
                    }
                })
                .collect(),
            skipped: outcome
                .skipped
                .iter()
                .map(|s| {
                    let (name, tag) = split(&s.name);
                    SkippedStash {
                        reference: store_ref(&s.name),
                        name,
                        tag,
                        archive: s.archive.display().to_string(),
                        manifest: s.manifest.to_string(),
                        reason: "already in the store".to_owned(),
                    }
                })
                .collect(),
            bytes: outcome.bytes,
        }));
    }
    let mut text = String::new();
    for i in &outcome.imported {
        let _ = writeln!(text, "{}", store_ref(&i.name));
    }
    print_text(&text)
}
