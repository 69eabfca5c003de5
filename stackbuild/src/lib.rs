//! `stackbuild`: stack stashes into a root tree and build an OS image from it with `kiwi-ng`.
//!
//! Flags and wiring only: the workflow (a plan, then its execution) is `stackcore::build`.

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;
use stackcore::build::{BuildOptions, KiwiRun, Plan, execute};
use stackcore::cli::{Exit, Log, print_json, print_line, print_text, store_path};
use stackcore::process::shell_words;

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

/// Runs `stackbuild`: the plan, printed with `--dry-run`, else executed.
#[allow(clippy::needless_pass_by_value)] // the signature `run_main` calls
pub fn run(cli: Cli) -> anyhow::Result<()> {
    stackui::init(cli.common.quiet, cli.common.verbose);
    let log = Log {
        quiet: cli.common.quiet,
        tool: "stackbuild",
    };
    let json = cli.common.json;
    let opts = BuildOptions {
        store: store_path(cli.common.store.as_deref()),
        registry: cli.registry.options(cli.platform.clone(), Some(log))?,
        stashes: cli.stashes,
        target_dir: cli.target_dir,
        description: cli.description,
        merge: cli.merge,
        from_registry: cli.from_registry,
        image_type: cli.image_type,
        profiles: cli.profiles,
        kiwi_args: cli.kiwi_args,
        packages: cli
            .packages
            .mode
            .unwrap_or(stackcore::packages::Mode::Merge),
        strict: cli.packages.strict,
        dry_run: cli.dry_run,
    };
    let plan = Plan::new(&opts, &log)?;
    if cli.dry_run {
        // Not print!: a closed stdout must be an error run_main can see, not a panic.
        return if json {
            print_json(&plan.report())
        } else {
            print_text(&plan.text())
        };
    }

    let image_root = plan.image_root.clone();
    let outcome = execute(plan, cli.prepare_only, &log)?;
    if json {
        print_json(&outcome.report)?;
    }
    match outcome.kiwi {
        // The command on stdout, for whoever runs kiwi-ng later.
        KiwiRun::PrepareOnly | KiwiRun::Missing if !json => {
            print_line(shell_words(&outcome.report.kiwi_command))?;
        }
        KiwiRun::Ran(status) if !status.success() => bail!(
            "kiwi-ng failed ({}); the prepared root is in {}",
            status.code().map_or_else(
                || "killed by a signal".to_owned(),
                |c| format!("exit code {c}")
            ),
            image_root.display()
        ),
        _ => {}
    }
    // --prepare-only stops by choice, whether kiwi-ng is installed or not; without it, a
    // missing kiwi-ng is a failed build.
    if outcome.kiwi == KiwiRun::Missing {
        return Err(Exit(1).into());
    }
    Ok(())
}
