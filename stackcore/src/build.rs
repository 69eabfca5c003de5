//! The `stackbuild` workflow: plan, then execute.
//!
//! [`Plan::new`] resolves every stash (pulling with `--from-registry`) before anything is
//! written (for a dry run it also reads the stashes' package databases); the plan names the stashes by
//! digest, where they are stacked, how the descriptions are merged, what the packages step
//! writes and the exact kiwi-ng command. `--dry-run` prints it ([`Plan::text`],
//! [`Plan::report`]); [`execute`] runs it:
//! 1. stack the stashes into `TARGET/build/image-root` with the one-pass writer, keeping
//!    the package database files as the layers are read, and write the merged databases
//!    before the root is renamed into place (`--strict` refusals leave no root);
//! 2. with `--merge`, merge the stashes' descriptions (and overlay `--description` on them,
//!    into a copy of that directory);
//! 3. run kiwi-ng (unless told to stop once the root is prepared, or kiwi-ng is not on
//!    `PATH`), its output on our stderr, and collect the files it wrote.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::Context as _;

use crate::Error;
use crate::apply::{Source, stack_to_dir};
use crate::cli::Log;
use crate::extract::ExtractOptions;
use crate::image::{BlobSource, Image, ImageRef};
use crate::kiwi;
use crate::manifest::{PackagesReport, SCHEMA, StackbuildReport, StackedStash, StepReport};
use crate::open::{OpenOptions, open_ref, open_registry};
use crate::packages::{Analysis, Checks, Mode};
use crate::process::{shell_words, which};
use crate::registry::{RegistryOptions, RegistryRef};

/// What to build: `stackbuild`'s flags, resolved.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The stashes (NAME or NAME:TAG, or any ref), lowest first.
    pub stashes: Vec<String>,
    /// Where kiwi-ng writes the image; the root is prepared in `TARGET/build/image-root`.
    pub target_dir: PathBuf,
    /// A description to build on top of the stacked root (`system build`).
    pub description: Option<PathBuf>,
    /// Merge the stashes' descriptions (and overlay `description` on them).
    pub merge: bool,
    /// Pull each stash as `URI/NAME` from this registry first.
    pub from_registry: Option<String>,
    /// kiwi-ng `--type`.
    pub image_type: Option<String>,
    /// kiwi-ng `--profile`s.
    pub profiles: Vec<String>,
    /// More arguments for kiwi-ng's system build/create.
    pub kiwi_args: Vec<String>,
    /// What to do with the stashes' package databases.
    pub packages: Mode,
    /// Refuse a stack with package problems: no root is left.
    pub strict: bool,
    /// Only the plan is wanted (`--dry-run`): the package databases are read up front to
    /// report them, instead of as the stack reads the layers.
    pub dry_run: bool,
    /// The store.
    pub store: PathBuf,
    /// How to reach a registry.
    pub registry: RegistryOptions,
}

/// Everything a build will do, decided before anything is written.
#[derive(Debug)]
pub struct Plan {
    /// `--target-dir`, absolute.
    pub target: PathBuf,
    /// `TARGET/build/image-root`.
    pub image_root: PathBuf,
    /// The stashes, lowest first, resolved to digests.
    pub stashes: Vec<StackedStash>,
    /// The opened stashes, in the same order.
    pub sources: Vec<Source>,
    /// `--packages` and `--strict`, for the stack.
    pub checks: Checks,
    /// For a dry run: what the packages step found, and what it would write.
    pub packages: Option<Analysis>,
    /// Merge the stashes' descriptions.
    pub merge: bool,
    /// The user's `--description` directory.
    pub overlay: Option<PathBuf>,
    /// Where a merged `--description` is copied: `TARGET/build/description`.
    pub merged_description_dir: PathBuf,
    /// The description kiwi-ng builds (`None`: the root's own, `system create`).
    pub description: Option<PathBuf>,
    /// The kiwi-ng command, word by word.
    pub kiwi_command: Vec<String>,
    /// The steps taken so far (resolve, packages).
    pub steps: Vec<StepReport>,
    started: Instant,
}

/// Whether kiwi-ng ran, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KiwiRun {
    /// Stopped once the root was prepared, as asked (`--prepare-only`).
    PrepareOnly,
    /// kiwi-ng is not on `PATH`: the root is prepared, the build is not done.
    Missing,
    /// kiwi-ng ran and exited so.
    Ran(ExitStatus),
}

/// What [`execute`] did.
#[derive(Debug)]
pub struct Outcome {
    /// The `--json` report.
    pub report: StackbuildReport,
    /// Whether kiwi-ng ran.
    pub kiwi: KiwiRun,
}

impl Plan {
    /// Resolves every stash (and, for a dry run, reads the package databases); writes
    /// nothing. Bad usage (an
    /// existing image root, a `--description` that is not a directory) is
    /// [`Error::Usage`].
    pub fn new(opts: &BuildOptions, log: &Log) -> anyhow::Result<Plan> {
        let started = Instant::now();
        let target = std::path::absolute(&opts.target_dir)?;
        let image_root = target.join("build/image-root");
        if image_root.exists() {
            return Err(Error::Usage(format!(
                "image root {} already exists; give a new --target-dir or remove it",
                image_root.display()
            ))
            .into());
        }
        if let Some(d) = &opts.description
            && !d.is_dir()
        {
            return Err(
                Error::Usage(format!("--description {}: not a directory", d.display())).into(),
            );
        }
        let mut steps = Vec::new();

        // Every stash, before anything is written.
        let t = Instant::now();
        let open = OpenOptions {
            store: opts.store.clone(),
            registry: opts.registry.clone(),
        };
        let mut stashes = Vec::new();
        let mut sources = Vec::new();
        for name in &opts.stashes {
            let img = open_stash(name, opts.from_registry.as_deref(), &open)?;
            stashes.push(stacked_stash(name, &img, &opts.store));
            sources.push(Source::Image(Box::new(img)));
        }
        steps.push(step("resolve", t, None));
        for s in &stashes {
            log.step(format_args!(
                "stash {} = {} ({} layers)",
                s.name, s.digest, s.layers
            ));
        }

        // The stashes' package databases are read as the stack reads the layers; a dry run
        // has no stack, so it reads them here, to report (and refuse, with --strict).
        let checks = Checks {
            mode: opts.packages,
            strict: opts.strict,
            log: *log,
        };
        let packages = if opts.dry_run {
            let t = Instant::now();
            let packages = crate::packages::run_checks(&sources, opts.packages, opts.strict, log)?;
            steps.push(packages_step(t, &packages));
            Some(packages)
        } else {
            None
        };

        let merged_description_dir = target.join("build/description");
        let description = match (&opts.description, opts.merge) {
            (Some(_), true) => Some(merged_description_dir.clone()),
            (Some(d), false) => Some(std::path::absolute(d)?),
            (None, _) => None,
        };
        let kiwi_command = kiwi::kiwi_command(
            opts.image_type.as_deref(),
            &opts.profiles,
            &target,
            &image_root,
            description.as_deref(),
            &opts.kiwi_args,
        );
        Ok(Plan {
            target,
            image_root,
            stashes,
            sources,
            checks,
            packages,
            merge: opts.merge,
            overlay: opts.description.clone(),
            merged_description_dir,
            description,
            kiwi_command,
            steps,
            started,
        })
    }

    /// The plan for people, one line a step (what `--dry-run` prints).
    pub fn text(&self) -> String {
        let mut plan = String::new();
        let _ = writeln!(plan, "# stackbuild plan (nothing is written)");
        for (i, s) in self.stashes.iter().enumerate() {
            let _ = writeln!(
                plan,
                "stack {}: {} {} ({} layers)",
                i + 1,
                s.reference,
                s.digest,
                s.layers
            );
        }
        let _ = writeln!(plan, "into: {}", self.image_root.display());
        if self.merge {
            let _ = writeln!(
                plan,
                "merge: the stashes' image/config.xml, lowest first{}",
                self.overlay.as_ref().map_or(String::new(), |d| format!(
                    ", then {} overlaid into a copy at {}",
                    d.display(),
                    self.merged_description_dir.display()
                ))
            );
        } else if self.overlay.is_none() {
            let _ = writeln!(plan, "description: the last stash's image/config.xml");
        }
        if let Some(packages) = &self.packages {
            for line in packages.summary() {
                let _ = writeln!(plan, "{line}");
            }
            for w in &packages.writes {
                let _ = writeln!(plan, "packages: write {} (merged)", w.path.display());
            }
        } else {
            let _ = writeln!(
                plan,
                "packages: {} (read as the stack reads the layers)",
                self.checks.mode.as_str()
            );
        }
        let _ = writeln!(plan, "run: {}", shell_words(&self.kiwi_command));
        plan
    }

    /// The `--json` report of the plan: nothing stacked, merged or run yet.
    pub fn report(&self) -> StackbuildReport {
        StackbuildReport {
            schema: SCHEMA,
            target_dir: self.target.clone(),
            image_root: self.image_root.clone(),
            stashes: self.stashes.clone(),
            description: self.description.clone(),
            merged_descriptions: Vec::new(),
            kiwi_command: self.kiwi_command.clone(),
            kiwi_ran: false,
            kiwi_exit: None,
            steps: self.steps.clone(),
            result_files: Vec::new(),
            packages: self.packages.as_ref().map_or_else(
                || PackagesReport::empty(self.checks.mode.as_str()),
                |p| p.report.clone(),
            ),
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// Runs `plan`: stacks (reading, checking and merging the package databases on the way),
/// merges the descriptions and,
/// unless `prepare_only` or kiwi-ng is not on `PATH`, runs kiwi-ng. A kiwi-ng that fails is
/// in the outcome ([`KiwiRun::Ran`]), not an error: the report is still due.
pub fn execute(plan: Plan, prepare_only: bool, log: &Log) -> anyhow::Result<Outcome> {
    let Plan {
        target,
        image_root,
        stashes,
        sources,
        checks,
        packages: _,
        merge,
        overlay,
        merged_description_dir,
        description,
        kiwi_command,
        mut steps,
        started,
    } = plan;

    // Stack.
    let t = Instant::now();
    fs::create_dir_all(target.join("build"))
        .with_context(|| format!("creating {}", target.display()))?;
    log.step(format_args!(
        "stacking {} stashes into {}",
        stashes.len(),
        image_root.display()
    ));
    let task = crate::progress::task("stacking", None);
    let mut stacked = stack_to_dir(
        &sources,
        &image_root,
        &ExtractOptions::default(),
        Some(&checks),
    )
    .context("stacking the stashes")?;
    drop(task);
    let mut packages = std::mem::replace(&mut stacked.packages, Analysis::off());
    packages.note_conflicts(&stacked.conflicts, log);
    let stats = &stacked.stats;
    for w in stats.warnings() {
        log.warn(w);
    }
    steps.push(step(
        "stack",
        t,
        Some(format!(
            "{} files, {} bytes, {} conflicts",
            stats.files,
            stats.bytes,
            stacked.conflicts.len()
        )),
    ));

    // Descriptions.
    let mut merged_from = Vec::new();
    if merge {
        let t = Instant::now();
        let images: Vec<&Image> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Image(img) => Some(&**img),
                Source::Dir { .. } => None,
            })
            .collect();
        merged_from = kiwi::merge_descriptions(
            &images,
            &image_root,
            overlay.as_deref(),
            &merged_description_dir,
            log,
        )?;
        steps.push(step("merge", t, Some(merged_from.join(", "))));
    }
    if let Some(dir) = &description
        && let Some(warning) = kiwi::bootstrap_over_usr_merge(dir, &image_root)
    {
        log.warn(warning);
    }

    let mut report = StackbuildReport {
        schema: SCHEMA,
        target_dir: target.clone(),
        image_root: image_root.clone(),
        stashes,
        description,
        merged_descriptions: merged_from,
        kiwi_command,
        kiwi_ran: false,
        kiwi_exit: None,
        steps,
        result_files: Vec::new(),
        packages: packages.report,
        seconds: 0.0,
    };

    // kiwi-ng.
    let kiwi = if prepare_only {
        log.step(format_args!(
            "root prepared in {}; kiwi-ng not run (--prepare-only)",
            image_root.display()
        ));
        KiwiRun::PrepareOnly
    } else if which("kiwi-ng").is_none() {
        eprintln!(
            "{}: kiwi-ng is not on PATH: the root is prepared in {}; run the command on stdout to build",
            log.tool,
            image_root.display()
        );
        KiwiRun::Missing
    } else {
        let t = Instant::now();
        let cmd = &report.kiwi_command;
        log.step(format_args!("running {}", shell_words(cmd)));
        let status = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(std::io::stderr())
            .stderr(Stdio::inherit())
            .status()
            .context("starting kiwi-ng")?;
        report.kiwi_ran = true;
        report.kiwi_exit = status.code();
        report.steps.push(step("kiwi-ng", t, None));
        report.result_files = result_files(&target, log)?;
        KiwiRun::Ran(status)
    };
    report.seconds = started.elapsed().as_secs_f64();
    if matches!(kiwi, KiwiRun::Ran(s) if s.success()) {
        for f in &report.result_files {
            log.step(format_args!("result: {}", f.display()));
        }
        log.step(format_args!("done in {:.1}s", report.seconds));
    }
    Ok(Outcome { report, kiwi })
}

/// Opens one stash: from a registry, exactly what was pulled, by digest, never a local
/// image of the same name; else any ref.
fn open_stash(
    name: &str,
    from_registry: Option<&str>,
    open: &OpenOptions,
) -> anyhow::Result<Image> {
    Ok(match from_registry {
        Some(uri) => open_registry(&RegistryRef::under(uri, name)?, open)?.image,
        None => {
            open_ref(&ImageRef::parse(name)?, open)
                .with_context(|| format!("stash {name}"))?
                .image
        }
    })
}

/// A stash as the report names it: `oci:STORE:NAME:TAG`, or the original plugin's archive
/// as `oci-archive:FILE:NAME:TAG`.
fn stacked_stash(name: &str, img: &Image, store: &Path) -> StackedStash {
    StackedStash {
        name: name.to_owned(),
        reference: if matches!(img.source, BlobSource::Archive(_)) {
            img.name.clone()
        } else {
            format!(
                "oci:{}:{}",
                std::path::absolute(store)
                    .unwrap_or_else(|_| store.to_path_buf())
                    .display(),
                img.name
            )
        },
        digest: img.digest().to_string(),
        layers: img.manifest.layers.len() as u64,
    }
}

/// The dry run's packages step: what was found and how many files a stack would write.
fn packages_step(since: Instant, packages: &Analysis) -> StepReport {
    step(
        "packages",
        since,
        Some(format!(
            "{} ({} database files to merge)",
            packages.report.mode,
            packages.writes.len()
        )),
    )
}

fn step(name: &str, since: Instant, detail: Option<String>) -> StepReport {
    StepReport {
        name: name.into(),
        seconds: since.elapsed().as_secs_f64(),
        detail,
    }
}

/// The image files kiwi-ng wrote: the `filename`s in its `kiwi.result.json`, else the
/// files in `target`. A `kiwi.result.json` that cannot be read or parsed is said on stderr
/// (the listing stands in for it); a `target` that cannot be listed is an error.
pub fn result_files(target: &Path, log: &Log) -> anyhow::Result<Vec<PathBuf>> {
    let json = target.join("kiwi.result.json");
    match fs::read_to_string(&json)
        .map_err(anyhow::Error::from)
        .and_then(|text| {
            serde_json::from_str::<serde_json::Value>(&text).map_err(anyhow::Error::from)
        }) {
        Ok(v) => {
            let mut files = Vec::new();
            collect_filenames(&v, &mut files);
            if !files.is_empty() {
                files.sort();
                files.dedup();
                return Ok(files);
            }
        }
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => {}
        Err(e) => log.warn(format_args!(
            "{}: {e}; listing the files in {} instead",
            json.display(),
            target.display()
        )),
    }
    let mut files = Vec::new();
    for e in fs::read_dir(target).with_context(|| format!("listing {}", target.display()))? {
        let p = e
            .with_context(|| format!("listing {}", target.display()))?
            .path();
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
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

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: Log = Log {
        quiet: true,
        tool: "test",
    };

    #[test]
    fn result_files_prefer_kiwi_result_json_and_fall_back_to_the_listing() -> anyhow::Result<()> {
        let d = tempfile::tempdir()?;
        let t = d.path();
        fs::write(t.join("a.raw"), b"x")?;
        fs::create_dir(t.join("build"))?;
        // no kiwi.result.json: the files in TARGET (not directories)
        assert_eq!(result_files(t, &LOG)?, vec![t.join("a.raw")]);
        // kiwi's list, nested, de-duplicated and sorted
        let json = r#"{"disk_image":{"filename":"/t/b.raw"},"x":[{"filename":"/t/a.iso"},{"filename":"/t/b.raw"}]}"#;
        fs::write(t.join("kiwi.result.json"), json)?;
        assert_eq!(
            result_files(t, &LOG)?,
            vec![PathBuf::from("/t/a.iso"), PathBuf::from("/t/b.raw")]
        );
        // unparsable: said, and the listing instead
        fs::write(t.join("kiwi.result.json"), "{")?;
        assert_eq!(
            result_files(t, &LOG)?,
            vec![t.join("a.raw"), t.join("kiwi.result.json")]
        );
        // a TARGET that is gone is an error, not an empty list
        assert!(result_files(&t.join("missing"), &LOG).is_err());
        Ok(())
    }
}
