//! `stackbuild`: stack stashes into a root tree and build an OS image from it with `kiwi-ng`.
//!
//! The steps, each a line on stderr (and a timed entry in `--json`):
//! 1. resolve every stash (by digest) before anything is written;
//! 2. stack them into `TARGET/build/image-root` with stackmerge's one-pass writer;
//! 3. with `--merge`, merge the stashes' descriptions with kiwimerge (and overlay
//!    `--description` on them, into a copy of that directory);
//! 4. run `kiwi-ng system create` (rebuild) or `kiwi-ng system build --allow-existing-root`
//!    (build on top), its output on our stderr.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;
use stackcore::Error;
use stackcore::apply::{Source, stack_to_dir};
use stackcore::cli::{Exit, Log, print_json, print_line, store_path};
use stackcore::extract::ExtractOptions;
use stackcore::image::{Image, ImageRef};
use stackcore::kiwi::{MergeOptions, load_description, merge};
use stackcore::manifest::{SCHEMA, StackbuildReport, StackedStash, StepReport};

const EXAMPLES: &str = "\
Examples:
  stackbuild --stash my-os --target-dir /tmp/out                 # rebuild from a stash
  stackbuild --stash base --stash app --target-dir out           # a stack, lowest first
  stackbuild --stash base --description vm/ --target-dir out --profile bios
  stackbuild --stash base --stash app --merge --target-dir out   # merge their descriptions
  stackbuild --stash base --target-dir out --dry-run             # the plan, nothing written
  stackbuild --stash base --target-dir out -- --signing-key k    # more kiwi-ng arguments
  stackbuild --stash base --from-registry registry.example.org/os --target-dir out";

/// Stack stashes into a root tree and build an OS image from it with kiwi-ng: the
/// `kiwi-ng system stackbuild` command line, without podman.
#[derive(Debug, Parser)]
#[command(name = "stackbuild", version, about, after_help = EXAMPLES)]
#[allow(clippy::struct_excessive_bools)] // command-line switches
pub struct Cli {
    /// A stash to stack (NAME or NAME:TAG), lowest first; repeat for a stack.
    #[arg(long = "stash", value_name = "NAME", required = true)]
    pub stashes: Vec<String>,
    /// Where kiwi-ng writes the image; the root is prepared in TARGET/build/image-root.
    #[arg(long, value_name = "DIR")]
    pub target_dir: PathBuf,
    /// Build this KIWI description on top of the stacked root (kiwi-ng system build);
    /// without it the image is rebuilt from the root's own description (system create).
    #[arg(long, value_name = "DIR")]
    pub description: Option<PathBuf>,
    /// Merge the stashes' descriptions with kiwimerge (lowest first; stashes without one are
    /// skipped) instead of keeping the last stash's; with --description, overlay that on them.
    #[arg(long)]
    pub merge: bool,
    /// Pull each stash as URI/NAME from this registry first (`HOST[:PORT]/NAMESPACE`, or with
    /// `docker://`), and build from exactly what was pulled, by digest.
    #[arg(long, value_name = "URI")]
    pub from_registry: Option<String>,
    /// How to reach the registry of --from-registry.
    #[command(flatten)]
    pub registry: stackcore::registry::AccessArgs,
    /// The image to pull from an image index (default: linux on this machine's architecture).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", requires = "from_registry")]
    pub platform: Option<stackcore::registry::PlatformSpec>,
    /// The image type to build (kiwi-ng --type).
    #[arg(long = "type", value_name = "T")]
    pub image_type: Option<String>,
    /// A profile to select (kiwi-ng --profile); repeatable.
    #[arg(long = "profile", value_name = "P")]
    pub profiles: Vec<String>,
    /// Print the plan (stashes and digests, merges, the kiwi-ng command) and change nothing.
    #[arg(long, conflicts_with = "prepare_only")]
    pub dry_run: bool,
    /// Stop once the root is prepared; print the kiwi-ng command instead of running it.
    #[arg(long)]
    pub prepare_only: bool,
    /// `--packages` (default `merge`: the image's package database lists every stash's
    /// packages) and `--strict`.
    #[command(flatten)]
    pub packages: stackcore::packages::PackagesArgs,
    #[command(flatten)]
    pub common: stackcore::cli::CommonArgs,
    /// Arguments for kiwi-ng's system build/create, after `--`.
    #[arg(last = true, value_name = "KIWI_ARGS")]
    pub kiwi_args: Vec<String>,
}

/// A resolved stash, and its image until it is stacked.
#[derive(Debug)]
struct StashInfo {
    report: StackedStash,
    image: Option<Image>,
}

/// Runs `stackbuild`.
#[allow(clippy::needless_pass_by_value)] // the signature `run_main` calls
pub fn run(cli: Cli) -> anyhow::Result<()> {
    stackui::init(cli.common.quiet, cli.common.verbose);
    let log = Log {
        quiet: cli.common.quiet,
        tool: "stackbuild",
    };
    let start = Instant::now();
    let store = store_path(cli.common.store.as_deref());
    let target = std::path::absolute(&cli.target_dir)?;
    let image_root = target.join("build/image-root");
    if image_root.exists() {
        return Err(Error::Usage(format!(
            "image root {} already exists; give a new --target-dir or remove it",
            image_root.display()
        ))
        .into());
    }
    if let Some(d) = &cli.description
        && !d.is_dir()
    {
        return Err(Error::Usage(format!("--description {}: not a directory", d.display())).into());
    }
    let registry = cli.registry.options(cli.platform.clone(), Some(log))?;
    let mut steps = Vec::new();

    // 1. Resolve every stash before anything is written.
    let t = Instant::now();
    let mut stashes = Vec::new();
    for name in &cli.stashes {
        // From a registry: exactly what was pulled, by digest, never a local image of the
        // same name.
        let opts = stackcore::open::OpenOptions {
            store: store.clone(),
            registry: registry.clone(),
        };
        let img = if let Some(uri) = &cli.from_registry {
            let r = stackcore::registry::RegistryRef::under(uri, name)?;
            stackcore::open::open_registry(&r, &opts)?.image
        } else {
            let r = ImageRef::parse(name)?;
            stackcore::open::open_ref(&r, &opts)
                .with_context(|| format!("stash {name}"))?
                .image
        };
        stashes.push(StashInfo {
            report: StackedStash {
                name: name.clone(),
                reference: if matches!(img.source, stackcore::image::BlobSource::Archive(_)) {
                    img.name.clone() // the original plugin's archive, `oci-archive:FILE:NAME:TAG`
                } else {
                    format!(
                        "oci:{}:{}",
                        std::path::absolute(&store)
                            .unwrap_or_else(|_| store.clone())
                            .display(),
                        img.name
                    )
                },
                digest: img.digest().to_string(),
                layers: img.manifest.layers.len() as u64,
            },
            image: Some(img),
        });
    }
    steps.push(StepReport {
        name: "resolve".into(),
        seconds: t.elapsed().as_secs_f64(),
        detail: None,
    });
    for StashInfo { report: s, .. } in &stashes {
        log.step(format_args!(
            "stash {} = {} ({} layers)",
            s.name, s.digest, s.layers
        ));
    }

    // The stashes' package databases: read as the stack reads the layers, reported, and (by
    // default) merged into the stacked root before it is renamed into place; with --strict,
    // a stack with problems leaves nothing. A dry run reads them on their own, to report.
    let sources: Vec<Source> = stashes
        .iter_mut()
        .map(|s| Source::Image(Box::new(s.image.take().expect("opened once"))))
        .collect();
    let checks = stackcore::packages::Checks {
        mode: cli
            .packages
            .mode
            .unwrap_or(stackcore::packages::Mode::Merge),
        strict: cli.packages.strict,
        log,
    };

    let merged_desc_dir = target.join("build/description");
    let description = match (&cli.description, cli.merge) {
        (Some(_), true) => Some(merged_desc_dir.clone()),
        (Some(d), false) => Some(std::path::absolute(d)?),
        (None, _) => None,
    };
    let kiwi_command = kiwi_command(&cli, &target, &image_root, description.as_deref());

    if cli.dry_run {
        let t = Instant::now();
        let packages = stackcore::packages::run_checks(&sources, checks.mode, checks.strict, &log)?;
        steps.push(StepReport {
            name: "packages".into(),
            seconds: t.elapsed().as_secs_f64(),
            detail: Some(format!(
                "{} ({} database files to merge)",
                packages.report.mode,
                packages.writes.len()
            )),
        });
        let mut plan = String::new();
        let _ = writeln!(plan, "# stackbuild plan (nothing is written)");
        for (i, StashInfo { report: s, .. }) in stashes.iter().enumerate() {
            let _ = writeln!(
                plan,
                "stack {}: {} {} ({} layers)",
                i + 1,
                s.reference,
                s.digest,
                s.layers
            );
        }
        let _ = writeln!(plan, "into: {}", image_root.display());
        if cli.merge {
            let _ = writeln!(
                plan,
                "merge: the stashes' image/config.xml, lowest first{}",
                cli.description.as_ref().map_or(String::new(), |d| format!(
                    ", then {} overlaid into a copy at {}",
                    d.display(),
                    merged_desc_dir.display()
                ))
            );
        } else if cli.description.is_none() {
            let _ = writeln!(plan, "description: the last stash's image/config.xml");
        }
        for line in packages.summary() {
            let _ = writeln!(plan, "{line}");
        }
        for w in &packages.writes {
            let _ = writeln!(plan, "packages: write {} (merged)", w.path.display());
        }
        let _ = writeln!(plan, "run: {}", shell_words(&kiwi_command));
        if cli.common.json {
            return print_json(&StackbuildReport {
                schema: SCHEMA,
                target_dir: target,
                image_root,
                stashes: stashes.into_iter().map(|s| s.report).collect(),
                description,
                merged_descriptions: Vec::new(),
                kiwi_command,
                kiwi_ran: false,
                kiwi_exit: None,
                steps,
                result_files: Vec::new(),
                packages: packages.report,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        // Not print!: a closed stdout must be an error run_main can see, not a panic.
        let mut stdout = std::io::stdout().lock();
        std::io::Write::write_all(&mut stdout, plan.as_bytes())?;
        std::io::Write::flush(&mut stdout)?;
        return Ok(());
    }

    // 2. Stack.
    let t = Instant::now();
    fs::create_dir_all(target.join("build"))
        .with_context(|| format!("creating {}", target.display()))?;
    log.step(format_args!(
        "stacking {} stashes into {}",
        stashes.len(),
        image_root.display()
    ));
    let task = stackcore::progress::task("stacking", None);
    let mut stacked = stack_to_dir(
        &sources,
        &image_root,
        &ExtractOptions::default(),
        Some(&checks),
    )
    .context("stacking the stashes")?;
    drop(task);
    let mut packages =
        std::mem::replace(&mut stacked.packages, stackcore::packages::Analysis::off());
    packages.note_conflicts(&stacked.conflicts, &log);
    let stats = &stacked.stats;
    for w in stats.warnings() {
        log.warn(w);
    }
    steps.push(StepReport {
        name: "stack".into(),
        seconds: t.elapsed().as_secs_f64(),
        detail: Some(format!(
            "{} files, {} bytes, {} conflicts",
            stats.files,
            stats.bytes,
            stacked.conflicts.len()
        )),
    });

    // 3. Descriptions.
    let mut merged_from = Vec::new();
    if cli.merge {
        let t = Instant::now();
        merged_from = merge_descriptions(
            &sources,
            &image_root,
            cli.description.as_deref(),
            &merged_desc_dir,
            &log,
        )?;
        steps.push(StepReport {
            name: "merge".into(),
            seconds: t.elapsed().as_secs_f64(),
            detail: Some(merged_from.join(", ")),
        });
    }

    if let Some(dir) = &description
        && let Some(warning) = bootstrap_over_usr_merge(dir, &image_root)
    {
        log.warn(warning);
    }

    // 4. kiwi-ng.
    let mut summary = StackbuildReport {
        schema: SCHEMA,
        target_dir: target.clone(),
        image_root: image_root.clone(),
        stashes: stashes.into_iter().map(|s| s.report).collect(),
        description,
        merged_descriptions: merged_from,
        kiwi_command: kiwi_command.clone(),
        kiwi_ran: false,
        kiwi_exit: None,
        steps,
        result_files: Vec::new(),
        packages: packages.report,
        seconds: 0.0,
    };
    let kiwi_found = which("kiwi-ng").is_some();
    if cli.prepare_only || !kiwi_found {
        if cli.prepare_only {
            log.step(format_args!(
                "root prepared in {}; kiwi-ng not run (--prepare-only)",
                image_root.display()
            ));
        } else {
            eprintln!(
                "stackbuild: kiwi-ng is not on PATH: the root is prepared in {}; run the command on stdout to build",
                image_root.display()
            );
        }
        summary.seconds = start.elapsed().as_secs_f64();
        if cli.common.json {
            print_json(&summary)?;
        } else {
            print_line(shell_words(&kiwi_command))?;
        }
        // --prepare-only stops here by choice, whether kiwi-ng is installed or not; without
        // it, a missing kiwi-ng is a failed build.
        return if cli.prepare_only {
            Ok(())
        } else {
            Err(Exit(1).into())
        };
    }

    let t = Instant::now();
    log.step(format_args!("running {}", shell_words(&kiwi_command)));
    let status = Command::new(&kiwi_command[0])
        .args(&kiwi_command[1..])
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .context("starting kiwi-ng")?;
    summary.kiwi_ran = true;
    summary.kiwi_exit = status.code();
    summary.steps.push(StepReport {
        name: "kiwi-ng".into(),
        seconds: t.elapsed().as_secs_f64(),
        detail: None,
    });
    summary.result_files = result_files(&target);
    summary.seconds = start.elapsed().as_secs_f64();
    if cli.common.json {
        print_json(&summary)?;
    }
    if !status.success() {
        bail!(
            "kiwi-ng failed ({}); the prepared root is in {}",
            status.code().map_or_else(
                || "killed by a signal".to_owned(),
                |c| format!("exit code {c}")
            ),
            image_root.display()
        );
    }
    for f in &summary.result_files {
        log.step(format_args!("result: {}", f.display()));
    }
    log.step(format_args!("done in {:.1}s", summary.seconds));
    Ok(())
}

/// The kiwi-ng command line, as the original plugin builds it: global `--type` and sorted,
/// de-duplicated `--profile`s before `system`, the user's arguments last.
fn kiwi_command(
    cli: &Cli,
    target: &Path,
    image_root: &Path,
    description: Option<&Path>,
) -> Vec<String> {
    let mut c = vec!["kiwi-ng".to_owned()];
    if let Some(t) = &cli.image_type {
        c.extend(["--type".to_owned(), t.clone()]);
    }
    let mut profiles = cli.profiles.clone();
    profiles.sort();
    profiles.dedup();
    for p in profiles {
        c.extend(["--profile".to_owned(), p]);
    }
    match description {
        Some(d) => c.extend([
            "system".to_owned(),
            "build".to_owned(),
            "--description".to_owned(),
            d.display().to_string(),
            "--target-dir".to_owned(),
            target.display().to_string(),
            "--allow-existing-root".to_owned(),
        ]),
        None => c.extend([
            "system".to_owned(),
            "create".to_owned(),
            "--root".to_owned(),
            image_root.display().to_string(),
            "--target-dir".to_owned(),
            target.display().to_string(),
        ]),
    }
    c.extend(cli.kiwi_args.iter().cloned());
    c
}

/// Merges the stashes' descriptions (lowest first) into the stacked root's
/// `image/config.xml`; with `description`, overlays that on the result into a copy of that
/// directory at `copy`. Returns what was merged, for the report.
fn merge_descriptions(
    sources: &[Source],
    image_root: &Path,
    description: Option<&Path>,
    copy: &Path,
    log: &Log,
) -> anyhow::Result<Vec<String>> {
    let mut descs = Vec::new();
    let mut names = Vec::new();
    for src in sources {
        let Source::Image(img) = src else { continue };
        match img.read_file(b"image/config.xml", 16 << 20)? {
            Some(bytes) => {
                let origin = format!("{}:image/config.xml", img.name);
                descs.push(load_description(&bytes, &origin, None)?);
                names.push(origin);
            }
            None => log.step(format_args!(
                "{} has no image/config.xml: skipped in the merge",
                img.name
            )),
        }
    }
    let opts = MergeOptions::default();
    let mut merged: Option<String> = None;
    if !descs.is_empty() {
        let base = descs.remove(0);
        let out = merge(base, descs, &opts)?;
        report_diags(&out.diags, log);
        fs::create_dir_all(image_root.join("image"))?;
        fs::write(image_root.join("image/config.xml"), &out.xml)?;
        log.step(format_args!(
            "merged {} descriptions into {}/image/config.xml",
            names.len(),
            image_root.display()
        ));
        merged = Some(out.xml);
    }
    if let Some(dir) = description {
        let file = description_file(dir)?;
        copy_dir(dir, copy)?;
        let bytes = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let overlay = load_description(&bytes, &file.display().to_string(), Some(dir))?;
        let xml = match merged {
            Some(base_xml) => {
                let base =
                    load_description(base_xml.as_bytes(), "the stashes' merged description", None)?;
                let out = merge(base, vec![overlay], &opts)?;
                report_diags(&out.diags, log);
                out.xml
            }
            None => {
                // No stash brought a description: D alone, as kiwi would read it.
                String::from_utf8(bytes)?
            }
        };
        let dest = copy.join(file.file_name().expect("file name"));
        fs::write(&dest, xml)?;
        names.push(file.display().to_string());
        log.step(format_args!(
            "description {} overlaid into {}",
            dir.display(),
            dest.display()
        ));
    }
    Ok(names)
}

fn report_diags(diags: &[stackcore::kiwi::Diag], log: &Log) {
    for d in diags {
        log.warn(d);
    }
}

/// A warning when `description` would install bootstrap packages with apt over a stacked
/// root whose `/bin` or `/lib` is a usr-merge symlink: kiwi unpacks bootstrap packages with
/// `dpkg-deb` straight over the root, which turns those symlinks into directories, and the
/// build then fails in the `usrmerge` package, long after the stack. Bootstrap packages
/// belong in the first build of a root, not in one built on top of it.
fn bootstrap_over_usr_merge(description: &Path, image_root: &Path) -> Option<String> {
    let merged = ["bin", "lib"].iter().any(|d| {
        fs::symlink_metadata(image_root.join(d)).is_ok_and(|m| m.file_type().is_symlink())
    });
    if !merged {
        return None;
    }
    let file = description_file(description).ok()?;
    let bytes = fs::read(&file).ok()?;
    // A description that does not load is kiwi's to report.
    let desc = load_description(&bytes, &file.display().to_string(), None).ok()?;
    let mut apt = false;
    let mut bootstrap = Vec::new();
    desc.doc.root.walk(&mut |el| match el.name.as_str() {
        "packagemanager" => apt |= matches!(el.text().trim(), "apt" | "apt-get"),
        "packages" if el.attr("type") == Some("bootstrap") => bootstrap.extend(
            el.elements()
                .filter(|p| p.name == "package")
                .filter_map(|p| p.attr("name").map(str::to_owned)),
        ),
        _ => {}
    });
    if !apt || bootstrap.is_empty() {
        return None;
    }
    Some(format!(
        "{}: bootstrap packages ({}) are unpacked by kiwi with dpkg-deb over the stacked \
         root, whose /bin and /lib are usr-merge symlinks: the build is likely to fail in \
         usrmerge; list them under <packages type=\"image\"> instead",
        file.display(),
        bootstrap.join(", ")
    ))
}

/// The description file in a description directory, searched as kiwi does.
fn description_file(dir: &Path) -> anyhow::Result<PathBuf> {
    for name in ["config.xml", "image/config.xml"] {
        if dir.join(name).is_file() {
            return Ok(dir.join(name));
        }
    }
    let mut kiwis: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "kiwi"))
        .collect();
    kiwis.sort();
    kiwis.into_iter().next().ok_or_else(|| {
        Error::Usage(format!(
            "{}: no config.xml or *.kiwi description",
            dir.display()
        ))
        .into()
    })
}

/// Copies a description directory (files, directories, symlinks; modes kept).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_dir(&src, &dst)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else {
            fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// The image files kiwi-ng wrote: its `kiwi.result.json` list, else the files in TARGET.
fn result_files(target: &Path) -> Vec<PathBuf> {
    if let Ok(text) = fs::read_to_string(target.join("kiwi.result.json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
    {
        let mut files: Vec<PathBuf> = Vec::new();
        collect_filenames(&v, &mut files);
        if !files.is_empty() {
            files.sort();
            files.dedup();
            return files;
        }
    }
    let mut files: Vec<PathBuf> = fs::read_dir(target)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn collect_filenames(v: &serde_json::Value, out: &mut Vec<PathBuf>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "filename"
                    && let Some(s) = x.as_str()
                {
                    out.push(PathBuf::from(s));
                } else {
                    collect_filenames(x, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_filenames(x, out)),
        _ => {}
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path: OsString = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A command line a shell reads back as the same words.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
