//! `cargo xtask`: CI, the demo, benchmarks, release packaging (binaries, man pages,
//! completions) and the JSON Schemas of the tools' output.
//!
//! Plain `std::process::Command` keeps this crate's dependencies to clap and serde.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};

mod bench;
mod demo;
mod e2e;
mod fuzz;
mod test;

/// Project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Everything CI checks: fmt, clippy -D warnings, schema drift, all tests, docs.
    Ci,
    /// Build the binaries, then run every test; the last line counts passed, failed, skipped.
    Test {
        /// Run the test executables as this ordinary user (uid; 65534, nobody, if no value):
        /// every test must pass or skip there; those that need root are `privileged_*`.
        #[arg(long, value_name = "UID", num_args = 0..=1, default_missing_value = "65534")]
        as_user: Option<u32>,
    },
    /// Build the tools and run the main job on a sample root tree.
    Demo,
    /// Time our tools against the ones users would otherwise use, side by side.
    Bench(bench::BenchArgs),
    /// Release binaries, man pages, shell completions and JSON Schemas into target/dist/.
    Dist,
    /// Write the JSON Schema of each tool's --json output into `schema/TOOL.json`.
    Schema {
        /// Write nothing; fail if a committed schema differs from the types (CI).
        #[arg(long)]
        check: bool,
    },
    /// The flagship end to end: registry container -> VM disk -> boot to a shell (as root).
    E2e(e2e::E2eArgs),
    /// Run the cargo-fuzz targets for a while each (needs nightly and cargo-fuzz).
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.task {
        Task::Ci => ci(),
        Task::Test { as_user } => test::run(as_user),
        Task::Demo => demo::run(),
        Task::Bench(args) => bench::run(&args),
        Task::Dist => dist(),
        Task::Schema { check } => schema(check),
        Task::E2e(args) => e2e::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `$CARGO`, else `cargo`.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command, echoing it, failing on a non-zero exit.
pub fn sh(c: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", show(c));
    let start = Instant::now();
    let status = c.status().with_context(|| format!("running {}", show(c)))?;
    if !status.success() {
        bail!("{} failed ({status})", show(c));
    }
    eprintln!("xtask: ok ({:.1}s)", start.elapsed().as_secs_f64());
    Ok(())
}

pub fn show(c: &Command) -> String {
    std::iter::once(c.get_program().to_string_lossy().into_owned())
        .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ci() -> Result<()> {
    sh(cargo().args(["fmt", "--all", "--check"]))?;
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    schema(true)?;
    test::run(None)?;
    sh(cargo()
        .args(["doc", "--workspace", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    Ok(())
}

/// Every tool's clap definition, for man pages and completions.
fn commands() -> Vec<clap::Command> {
    vec![
        stash::Cli::command(),
        unstash::Cli::command(),
        stackmerge::Cli::command(),
        kiwimerge::Cli::command(),
        stackbuild::Cli::command(),
    ]
}

fn dist() -> Result<()> {
    let dist = root().join("target/dist");
    let man = dist.join("man/man1");
    let comp = dist.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    for mut cmd in commands() {
        let name = cmd.get_name().to_owned();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(man.join(format!("{name}.1")), page)?;
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            clap_complete::generate_to(shell, &mut cmd, &name, &comp)?;
        }
    }
    let schemas = dist.join("schema");
    std::fs::create_dir_all(&schemas)?;
    for (tool, text) in schema_texts()? {
        std::fs::write(schemas.join(format!("{tool}.json")), text)?;
    }
    sh(cargo().args(["build", "--release", "--bins"]))?;
    // The target dir may be elsewhere (CARGO_TARGET_DIR); ask cargo's own variable first.
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), PathBuf::from)
        .join("release");
    for b in ["stash", "unstash", "stackmerge", "kiwimerge", "stackbuild"] {
        let from = release.join(b);
        std::fs::copy(&from, dist.join(b))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    eprintln!(
        "xtask: binaries, man pages, completions and schemas in {}",
        dist.display()
    );
    Ok(())
}

/// Each tool's schema as committed: pretty JSON with a final newline.
fn schema_texts() -> Result<Vec<(&'static str, String)>> {
    stackcore::manifest::schemas()
        .into_iter()
        .map(|(tool, schema)| Ok((tool, serde_json::to_string_pretty(&schema)? + "\n")))
        .collect()
}

/// `cargo xtask schema [--check]`: the schemas in `schema/` follow the types in
/// `stackcore::manifest`; `--check` fails on drift, like `cargo fmt --check`.
fn schema(check: bool) -> Result<()> {
    let dir = root().join("schema");
    let mut drift = Vec::new();
    for (tool, text) in schema_texts()? {
        let path = dir.join(format!("{tool}.json"));
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if old == text {
            continue;
        }
        if check {
            drift.push(path.display().to_string());
        } else {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("xtask: wrote {}", path.display());
        }
    }
    if !drift.is_empty() {
        bail!(
            "JSON Schemas out of date (run `cargo xtask schema` and commit): {}",
            drift.join(", ")
        );
    }
    if check {
        eprintln!("xtask: schemas in {} match the types", dir.display());
    }
    Ok(())
}
