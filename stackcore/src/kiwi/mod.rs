//! KIWI image description merging: the library behind `kiwimerge` (its behaviour for users:
//! README.md, section kiwimerge).
//!
//! kiwi itself never merges descriptions; it reads every active section in document order
//! and the first occurrence wins. To let an overlay win, kiwimerge edits the base in place
//! and writes one canonical description that kiwi reads as intended.
//!
//! The API takes bytes plus an optional include directory, so a description read from an
//! OCI image (a stash's `image/config.xml`) is loaded the same way as a file:
//!
//! ```
//! use stackcore::kiwi::{load_description, merge, MergeOptions};
//! let base = load_description(br#"<image name="a" schemaversion="8.5"><preferences><version>1</version></preferences></image>"#, "base", None)?;
//! let overlay = load_description(br#"<image><preferences><version>2</version></preferences></image>"#, "overlay", None)?;
//! let out = merge(base, vec![overlay], &MergeOptions::default())?;
//! assert!(out.xml.contains("<version>2</version>"));
//! # Ok::<(), stackcore::Error>(())
//! ```
//!
//! | module | what it owns |
//! |---|---|
//! | [`xml`] | the tree, parsing with hostile-input limits, canonical output (§3) |
//! | [`table`] | kinds and keys of every KIWI element (§4, §5.2) |
//! | [`merge`](mod@merge) | applying an overlay, directives, the `primary` fix-up (§5) |
//! | [`include`](mod@include) | `<include>` resolution (§6) |
//! | [`upgrade`] | schema versions 7.4 → 8.5 (§7) |
//! | [`lint`] | E1, W1–W9 (§8) |
//! | [`select`] | `--select-arch/-profiles/-type` (§9) |
//! | [`build`](mod@build) | what `stackbuild` needs: the kiwi-ng command, the stashes' descriptions merged, the usr-merge lint |

pub mod build;
pub mod include;
pub mod lint;
pub mod merge;
mod schematron;
pub mod select;
pub mod table;
pub mod upgrade;
pub mod xml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use build::{bootstrap_over_usr_merge, kiwi_command, merge_descriptions};
pub use select::Selection;
pub use upgrade::Version;

use crate::{Error, Result};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Reported; exit 0 unless `--strict`.
    Warning,
    /// A lint error: the output is written, exit 1.
    Error,
}

/// One diagnostic: a lint or a directive that had no effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    /// Warning or error.
    pub level: Level,
    /// The lint id (`E1`, `W4`, …), or empty for general notices.
    pub code: &'static str,
    /// What happened, naming the input.
    pub message: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Warning => "warning",
            Level::Error => "error",
        };
        if self.code.is_empty() {
            write!(f, "{level}: {}", self.message)
        } else {
            write!(f, "{level}: {}: {}", self.code, self.message)
        }
    }
}

/// A parsed KIWI description (base or overlay) and where its includes resolve.
#[derive(Debug, Clone)]
pub struct Description {
    /// The parsed document.
    pub doc: xml::Document,
    /// A name for messages (a path, or an image ref and path inside it).
    pub origin: String,
    /// The directory `this://` includes resolve against; `None` for bytes without one.
    pub include_dir: Option<PathBuf>,
}

/// Parses `bytes` as a KIWI description. `origin` names it in messages; `include_dir` is
/// the directory its `<include>` elements resolve against (the directory of the file, or
/// `None` when the bytes come from somewhere without one, such as an image).
pub fn load_description(
    bytes: &[u8],
    origin: &str,
    include_dir: Option<&Path>,
) -> Result<Description> {
    let doc = xml::parse(bytes, origin)?;
    if doc.root.name != "image" || doc.root.ns.is_some() {
        return Err(Error::Usage(format!(
            "{origin}: root element is <{}>, not <image>: not a KIWI description",
            doc.root.name
        )));
    }
    Ok(Description {
        doc,
        origin: origin.to_owned(),
        include_dir: include_dir.map(Path::to_path_buf),
    })
}

/// The description file for `path`: the file itself, or in a directory the one kiwi picks
/// (`config.xml`, then `image/config.xml`, then the first `*.kiwi` by name).
pub fn description_file(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    for cand in [path.join("config.xml"), path.join("image/config.xml")] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    let mut kiwis = Vec::new();
    for e in
        std::fs::read_dir(path).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?
    {
        let p = e
            .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?
            .path();
        if p.extension().is_some_and(|x| x == "kiwi") && p.is_file() {
            kiwis.push(p);
        }
    }
    kiwis.sort();
    kiwis.into_iter().next().ok_or_else(|| {
        Error::Usage(format!(
            "{}: no config.xml, image/config.xml or *.kiwi in this directory",
            path.display()
        ))
    })
}

/// Options of a merge (the `kiwimerge` flags).
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// The output schema version; must be ≥ every input's. Default: the max of the inputs.
    pub schema_version: Option<Version>,
    /// Carry `<include>` elements instead of resolving them.
    pub keep_includes: bool,
    /// Materialise the base for this selection before merging.
    pub selection: Selection,
    /// Run the §8 lints.
    pub lint: bool,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            schema_version: None,
            keep_includes: false,
            selection: Selection::default(),
            lint: true,
        }
    }
}

/// The merged description and what was noticed on the way.
#[derive(Debug, Clone)]
pub struct MergeOutput {
    /// The canonical merged XML.
    pub xml: String,
    /// Warnings and lint errors, in the order found.
    pub diags: Vec<Diag>,
}

impl MergeOutput {
    /// Whether any diagnostic is an error (exit 1).
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.level == Level::Error)
    }
}

fn version_of(d: &Description) -> Result<Option<Version>> {
    d.doc
        .root
        .attr("schemaversion")
        .map(|v| {
            v.parse()
                .map_err(|e: Error| Error::Usage(format!("{}: {e}", d.origin)))
        })
        .transpose()
}

/// Merges `overlays` onto `base`, left to right, following the kiwimerge pipeline.
/// Input errors are [`Error::Usage`]; lint findings are in the returned diagnostics.
pub fn merge(
    mut base: Description,
    mut overlays: Vec<Description>,
    opts: &MergeOptions,
) -> Result<MergeOutput> {
    let mut diags = Vec::new();
    for o in &overlays {
        merge::check_directives(&o.doc.root, &o.origin)?;
    }
    // Includes, before the version step (kiwi resolves them before upgrading).
    for d in std::iter::once(&mut base).chain(overlays.iter_mut()) {
        if opts.keep_includes {
            if d.doc.root.elements().any(|e| e.name == "include") {
                diags.push(Diag {
                    level: Level::Warning,
                    code: "",
                    message: format!("{}: <include> kept: merging cannot see inside it; write the output where its this:// paths resolve", d.origin),
                });
            }
        } else {
            include::resolve_includes(&mut d.doc, &d.origin, d.include_dir.as_deref())?;
        }
    }
    // Versions.
    let base_v = version_of(&base)?
        .ok_or_else(|| Error::Usage(format!("{}: BASE has no schemaversion", base.origin)))?;
    let mut versions = vec![base_v];
    for o in &overlays {
        versions.push(version_of(o)?.unwrap_or(base_v));
    }
    for (v, d) in versions
        .iter()
        .zip(std::iter::once(&base).chain(overlays.iter()))
    {
        if *v < upgrade::MIN {
            return Err(Error::Usage(format!(
                "{}: schemaversion {v} < {}; upgrade it first (kiwi 9.x: `kiwi-ng image info --description DIR --print-xml`)",
                d.origin,
                upgrade::MIN
            )));
        }
    }
    let max = versions.iter().copied().max().unwrap_or(base_v);
    let target = match opts.schema_version {
        Some(v) if v < max => {
            return Err(Error::Usage(format!(
                "--schema-version {v} is lower than an input's schemaversion {max}"
            )));
        }
        Some(v) => v,
        None => max,
    };
    if target > upgrade::MAX_KNOWN {
        diags.push(Diag {
            level: Level::Warning,
            code: "",
            message: format!(
                "schemaversion {target} is newer than {}: passed through without conversion",
                upgrade::MAX_KNOWN
            ),
        });
    }
    upgrade::upgrade(&mut base.doc.root, versions[0], target);
    for (o, v) in overlays.iter_mut().zip(&versions[1..]) {
        upgrade::upgrade(&mut o.doc.root, *v, target);
    }
    // Materialise, merge, fix up.
    select::materialise(&mut base.doc.root, &opts.selection)?;
    for o in &overlays {
        merge::Merger::new(&mut diags, &o.origin).apply(&mut base.doc.root, &o.doc.root);
    }
    merge::primary_fixup(&mut base.doc.root, &mut diags);
    base.doc.root.strip_km();
    base.doc.root.set_attr("schemaversion", &target.to_string());
    if opts.lint {
        let roots: Vec<&xml::Element> = overlays.iter().map(|o| &o.doc.root).collect();
        lint::lint(&base.doc.root, &roots, &mut diags);
    }
    Ok(MergeOutput {
        xml: xml::serialize(&base.doc),
        diags,
    })
}
