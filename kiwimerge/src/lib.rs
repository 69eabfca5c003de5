//! `kiwimerge`: merge KIWI image descriptions (a base plus overlays) into one description
//! that `kiwi-ng` reads as intended. The logic is in [`stackcore::kiwi`]; this crate owns the
//! flags, where input comes from and where output and diagnostics go.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use stackcore::Error;
use stackcore::cli::Exit;
use stackcore::kiwi::{self, Description, Level, MergeOptions, Selection, Version};

const AFTER_HELP: &str = "\
Directives (namespace urn:kiwimerge:1, conventionally xmlns:km=\"urn:kiwimerge:1\"):
  km:action=\"merge|replace|remove\"   on any keyed overlay element
  km:remove-attributes=\"a b\"         on container elements and <image>
  km:reset=\"repository ...\"          on the overlay <image>: drop all base elements of these kinds

Exit status: 0 merged (warnings possible); 1 lint errors, or warnings with --strict
(the output is still written); 2 unusable input or usage (nothing is written).

Example: turn a container stash description into a VM description
  kiwimerge --select-arch x86_64 root/image/config.xml vm-overlay.xml -o desc/config.xml";

/// Merge KIWI image descriptions: BASE, then each OVERLAY applied left to right.
///
/// The overlay wins: scalars, types, users, repositories and packages are edited in
/// place in BASE, because kiwi itself reads the first occurrence of everything. The output
/// is canonical (4-space indent, one element per line) and byte-deterministic.
#[derive(Debug, Parser)]
#[allow(clippy::struct_excessive_bools)] // command-line switches
#[command(name = "kiwimerge", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// The base description: a file, or a directory searched as kiwi does
    /// (DIR/config.xml, DIR/image/config.xml, the first DIR/*.kiwi).
    #[arg(value_name = "BASE")]
    pub base: String,

    /// Overlays (fragments or complete descriptions), applied in order.
    #[arg(value_name = "OVERLAY", required = true)]
    pub overlays: Vec<String>,

    /// Write the merged description to FILE (atomically) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Output schemaversion; must be >= every input's (default: the max of the inputs).
    #[arg(long, value_name = "V")]
    pub schema_version: Option<String>,

    /// Carry `<include>` elements instead of resolving them.
    #[arg(
        long,
        help = "Do not resolve <include>; carry the elements (keyed by their from=)"
    )]
    pub keep_includes: bool,

    /// Materialise BASE for host architecture A before merging.
    #[arg(long, value_name = "A")]
    pub select_arch: Option<String>,

    /// Materialise BASE for this profile list (comma separated) before merging.
    #[arg(long, value_name = "P", value_delimiter = ',')]
    pub select_profiles: Option<Vec<String>>,

    /// Keep only `<type image=T>` in BASE.
    #[arg(
        long,
        value_name = "T",
        help = "Keep only <type image=T> in BASE and make it primary"
    )]
    pub select_type: Option<String>,

    /// Treat warnings as errors (exit 1; the output is still written).
    #[arg(long)]
    pub strict: bool,

    /// Skip the lints (warnings about directives are still printed).
    #[arg(long)]
    pub no_lint: bool,

    /// Print no warnings on stderr (errors still show; --strict still counts warnings).
    #[arg(long, short)]
    pub quiet: bool,

    /// The store for `NAME[:TAG]` refs (BASE or OVERLAY may be an image: its
    /// `image/config.xml` is read without unpacking the image).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// How to reach a registry, for a `docker://` BASE or OVERLAY.
    #[command(flatten)]
    pub registry: stackcore::registry::RegistryArgs,
}

fn load(
    arg: &str,
    store: &Path,
    registry: &stackcore::registry::RegistryOptions,
) -> stackcore::Result<Description> {
    if !stackcore::image::is_path_arg(arg) {
        return load_from_image(arg, store, registry);
    }
    let file = kiwi::description_file(Path::new(arg))?;
    let bytes =
        std::fs::read(&file).map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
    let dir = file.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    kiwi::load_description(&bytes, &file.display().to_string(), dir)
}

/// Reads `image/config.xml` from an image (the one layer that holds it, not the whole tree).
/// An image that cannot be opened or has no description is unusable input: exit 2.
fn load_from_image(
    arg: &str,
    store: &Path,
    registry: &stackcore::registry::RegistryOptions,
) -> stackcore::Result<Description> {
    let r = stackcore::image::ImageRef::parse(arg)?;
    let opts = stackcore::open::OpenOptions {
        store: store.to_path_buf(),
        registry: registry.clone(),
    };
    let img = stackcore::open::open_ref(&r, &opts)
        .map_err(|e| Error::Usage(format!("{arg}: {e}")))?
        .image;
    let bytes = img
        .read_file(b"image/config.xml", 16 << 20)
        .map_err(|e| Error::Usage(format!("{arg}: {e}")))?
        .ok_or_else(|| Error::Usage(format!("{arg}: the image has no image/config.xml")))?;
    kiwi::load_description(&bytes, &format!("{arg}:image/config.xml"), None)
}

/// Runs `kiwimerge`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let schema_version = cli
        .schema_version
        .as_deref()
        .map(str::parse::<Version>)
        .transpose()
        .context("--schema-version")?;
    let store = stackcore::cli::store_path(cli.store.as_deref());
    let registry = cli.registry.options(None)?;
    let base = load(&cli.base, &store, &registry)?;
    let overlays = cli
        .overlays
        .iter()
        .map(|o| load(o, &store, &registry))
        .collect::<stackcore::Result<Vec<_>>>()?;
    let opts = MergeOptions {
        schema_version,
        keep_includes: cli.keep_includes,
        selection: Selection {
            arch: cli.select_arch,
            profiles: cli.select_profiles,
            image_type: cli.select_type,
        },
        lint: !cli.no_lint,
    };
    let out = kiwi::merge(base, overlays, &opts)?;

    let mut err = std::io::stderr().lock();
    for d in out
        .diags
        .iter()
        .filter(|d| !(cli.quiet && d.level == Level::Warning))
    {
        // stderr failing is no reason to withhold the merged output
        let _ = writeln!(err, "kiwimerge: {d}");
    }
    if let Some(path) = &cli.output {
        // Via a temporary file and a rename: a reader never sees partial output.
        stackcore::atomic::write(path, out.xml.as_bytes())?;
    } else {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.xml.as_bytes())
            .context("writing to stdout")?;
        stdout.flush().context("writing to stdout")?;
    }
    let warnings = out.diags.iter().any(|d| d.level == Level::Warning);
    if out.has_errors() || (cli.strict && warnings) {
        return Err(Exit(1).into());
    }
    Ok(())
}
