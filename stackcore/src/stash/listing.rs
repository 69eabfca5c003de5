//! `stash --list`: the store's stashes and the original plugin's archives, as rows.
//!
//! A tag whose image cannot be read is listed as damaged (with why) rather than failing the
//! listing; an archive that cannot be read is left out and described in the warnings.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::Result;
use crate::image::{BlobSource, Image, split_tag};
use crate::manifest::{SCHEMA, StashList, StashRow};
use crate::oci::Store;

/// Everything `stash --list` shows.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The store listed.
    pub store: PathBuf,
    /// Its stashes, in index order.
    pub stashes: Vec<StashRow>,
    /// Where the original plugin's archives were looked for.
    pub legacy_home: PathBuf,
    /// The stashes in those archives.
    pub legacy: Vec<StashRow>,
    /// Damaged tags and unreadable archives, one line each, for stderr.
    pub warnings: Vec<String>,
}

/// Why a row's image could not be read, and what its descriptor still says.
struct Damaged {
    digest: String,
    size: u64,
    why: String,
}

/// The one place a [`StashRow`] is made: from the image, or from what is known of a
/// damaged one.
fn row(reference: String, full: &str, image: std::result::Result<&Image, Damaged>) -> StashRow {
    let (name, tag) = split_tag(full);
    let (name, tag) = (name.to_owned(), tag.to_owned());
    match image {
        Ok(img) => StashRow {
            reference,
            name,
            tag,
            digest: img.digest().to_string(),
            size: img.size(),
            layers: img.manifest.layers.len() as u64,
            created: img.config.created.clone(),
            damaged: None,
        },
        Err(d) => StashRow {
            reference,
            name,
            tag,
            digest: d.digest,
            size: d.size,
            layers: 0,
            created: None,
            damaged: Some(d.why),
        },
    }
}

/// Lists the store at `store_dir` (none there: no stashes) and the archives under
/// `legacy_home`.
pub fn list(store_dir: &Path, legacy_home: &Path) -> Result<Listing> {
    let mut stashes = Vec::new();
    let mut warnings = Vec::new();
    if store_dir.join("oci-layout").exists() {
        let store = Store::open(store_dir)?;
        for desc in store.read_index()?.manifests {
            // An index entry without a ref name is no stash (nothing can name it): not listed.
            let Some(full) = desc.ref_name().map(str::to_owned) else {
                continue;
            };
            let reference = format!("oci:{}:{full}", store.root().display());
            let damaged = Damaged {
                digest: desc.digest.to_string(),
                size: desc.size,
                why: String::new(),
            };
            match Image::from_descriptor(BlobSource::Layout(store.clone()), desc, full.clone()) {
                Ok(img) => stashes.push(row(reference, &full, Ok(&img))),
                Err(e) => {
                    warnings.push(format!(
                        "{full} is damaged: {e} (stash --verify checks the store)"
                    ));
                    let why = e.to_string();
                    stashes.push(row(reference, &full, Err(Damaged { why, ..damaged })));
                }
            }
        }
    }
    let (found, problems) = crate::legacy::list(legacy_home);
    warnings.extend(problems);
    let legacy = found
        .iter()
        .map(|s| row(s.reference(), &s.full_name(), Ok(&s.image)))
        .collect();
    Ok(Listing {
        store: store_dir.to_path_buf(),
        stashes,
        legacy_home: legacy_home.to_path_buf(),
        legacy,
        warnings,
    })
}

impl Listing {
    /// The `--json` document.
    pub fn to_json(&self) -> StashList {
        StashList {
            schema: SCHEMA,
            store: self.store.display().to_string(),
            stashes: self.stashes.clone(),
            legacy: self.legacy.clone(),
        }
    }

    /// The text tables: the store's, then the archives' (if any) with the ref that works.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# store {}", self.store.display()); // a String: cannot fail
        table(&mut out, &self.stashes);
        if !self.legacy.is_empty() {
            let _ = writeln!(
                out,
                "# kiwi-ng system stash archives ({}): use them as shown; \
                 stash --import-legacy copies them into the store",
                self.legacy_home.display()
            );
            let shown: Vec<StashRow> = self
                .legacy
                .iter()
                .map(|r| shown_legacy(r, &self.stashes))
                .collect();
            table(&mut out, &shown);
        }
        out
    }
}

/// How an archive's row is shown: as `NAME:TAG`, unless the store has a stash of that
/// name, which the bare name would open; then as its whole ref.
fn shown_legacy(legacy: &StashRow, stashes: &[StashRow]) -> StashRow {
    let mut row = legacy.clone();
    if stashes
        .iter()
        .any(|r| r.name == legacy.name && r.tag == legacy.tag)
    {
        row.name.clone_from(&row.reference);
        row.tag.clear();
    }
    row
}

/// One table: a header line, then a line per row. Writing to a `String` cannot fail.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stash_row(reference: &str, name: &str, tag: &str, damaged: Option<&str>) -> StashRow {
        StashRow {
            reference: reference.into(),
            name: name.into(),
            tag: tag.into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 1234,
            layers: 2,
            created: Some("2024-01-02T03:04:05Z".into()),
            damaged: damaged.map(str::to_owned),
        }
    }

    #[test]
    fn text_tables() {
        let listing = Listing {
            store: "/s".into(),
            stashes: vec![
                stash_row("oci:/s:base:v1", "base", "v1", None),
                stash_row("oci:/s:bad:latest", "bad", "latest", Some("blob missing")),
            ],
            legacy_home: "/var/tmp/kiwi-stash".into(),
            legacy: vec![
                stash_row("oci-archive:/l/base/base.tar:base:v1", "base", "v1", None),
                stash_row(
                    "oci-archive:/l/old/old.tar:old:latest",
                    "old",
                    "latest",
                    None,
                ),
            ],
            warnings: Vec::new(),
        };
        let text = listing.text();
        let lines: Vec<&str> = text.lines().collect();
        let header = "NAME:TAG                                 DIGEST                      SIZE LAYERS  CREATED";
        // (line, what it must start with, what it must end with)
        let want: &[(usize, &str, &str)] = &[
            (0, "# store /s", "/s"),
            (1, header, "CREATED"),
            (
                2,
                "base:v1 ",
                "sha256:abababababab         1234      2  2024-01-02T03:04:05Z",
            ),
            (3, "bad:latest ", "DAMAGED: blob missing"),
            (
                4,
                "# kiwi-ng system stash archives (/var/tmp/kiwi-stash)",
                "into the store",
            ),
            (5, header, "CREATED"),
            // the store has base:v1, so the archive's is shown by its whole ref
            (
                6,
                "oci-archive:/l/base/base.tar:base:v1 ",
                "2024-01-02T03:04:05Z",
            ),
            (7, "old:latest ", "2024-01-02T03:04:05Z"),
        ];
        assert_eq!(lines.len(), want.len(), "{text}");
        for (i, start, end) in want {
            assert!(lines[*i].starts_with(start), "line {i}: {:?}", lines[*i]);
            assert!(lines[*i].ends_with(end), "line {i}: {:?}", lines[*i]);
        }
        let json = listing.to_json();
        assert_eq!((json.schema, json.store.as_str()), (SCHEMA, "/s"));
        assert_eq!(json.stashes, listing.stashes);
        assert_eq!(
            json.legacy, listing.legacy,
            "JSON keeps NAME and TAG as they are"
        );
    }

    #[test]
    fn no_legacy_no_second_table() {
        let listing = Listing {
            store: "/s".into(),
            stashes: Vec::new(),
            legacy_home: "/l".into(),
            legacy: Vec::new(),
            warnings: Vec::new(),
        };
        assert_eq!(listing.text().lines().count(), 2);
    }

    #[test]
    fn nothing_there_lists_nothing() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| crate::Error::io("tempdir", e))?;
        let l = list(&dir.path().join("no-store"), &dir.path().join("no-home"))?;
        assert!(l.stashes.is_empty() && l.legacy.is_empty() && l.warnings.is_empty());
        Ok(())
    }
}
