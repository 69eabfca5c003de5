//! `stash --import-legacy`: what an import did, as step lines, refs and the `--json` report.

use std::path::Path;

use crate::image::split_tag;
use crate::legacy::ImportOutcome;
use crate::manifest::{ImportedStash, SCHEMA, SkippedStash, StashImportReport};

/// The lines saying what was imported and skipped (or that `legacy_home` had nothing).
pub fn steps(outcome: &ImportOutcome, legacy_home: &Path) -> Vec<String> {
    let mut lines: Vec<String> = outcome
        .imported
        .iter()
        .map(|i| {
            format!(
                "imported {} from {} ({} layers, {} bytes written)",
                i.name,
                i.archive.display(),
                i.layers,
                i.bytes
            )
        })
        .collect();
    lines.extend(outcome.skipped.iter().map(|s| {
        format!(
            "skipped {}: the store has it already ({}); {} left alone",
            s.name,
            s.manifest,
            s.archive.display()
        )
    }));
    if lines.is_empty() {
        lines.push(format!(
            "no kiwi-ng system stash archives in {}",
            legacy_home.display()
        ));
    }
    lines
}

/// `oci:STORE:NAME:TAG` of each stash imported, a line each, in order: the text output.
pub fn refs(outcome: &ImportOutcome, store: &Path) -> String {
    let mut out = String::new();
    for i in &outcome.imported {
        out.push_str(&store_ref(store, &i.name));
        out.push('\n');
    }
    out
}

/// The `--json` report of an import into `store` from `legacy_home`.
pub fn report(outcome: &ImportOutcome, store: &Path, legacy_home: &Path) -> StashImportReport {
    let owned = |full: &str| {
        let (n, t) = split_tag(full);
        (n.to_owned(), t.to_owned())
    };
    StashImportReport {
        schema: SCHEMA,
        store: store.display().to_string(),
        legacy_home: legacy_home.display().to_string(),
        imported: outcome
            .imported
            .iter()
            .map(|i| {
                let (name, tag) = owned(&i.name);
                ImportedStash {
                    reference: store_ref(store, &i.name),
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
                let (name, tag) = owned(&s.name);
                SkippedStash {
                    reference: store_ref(store, &s.name),
                    name,
                    tag,
                    archive: s.archive.display().to_string(),
                    manifest: s.manifest.to_string(),
                    reason: "already in the store".to_owned(),
                }
            })
            .collect(),
        bytes: outcome.bytes,
    }
}

/// `oci:STORE:NAME:TAG`.
fn store_ref(store: &Path, full: &str) -> String {
    format!("oci:{}:{full}", store.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::legacy::{Imported, Skipped};

    fn outcome() -> ImportOutcome {
        ImportOutcome {
            imported: vec![Imported {
                name: "base:v1".into(),
                archive: "/l/base/base.tar".into(),
                archive_manifest: Digest::of(b"archive"),
                manifest: Digest::of(b"store"),
                layers: 2,
                bytes: 300,
            }],
            skipped: vec![Skipped {
                name: "app:latest".into(),
                archive: "/l/app/app.tar".into(),
                manifest: Digest::of(b"had"),
            }],
            bytes: 300,
        }
    }

    #[test]
    fn steps_refs_and_report() {
        let home = Path::new("/l");
        let store = Path::new("/s");
        let o = outcome();
        assert_eq!(
            steps(&o, home),
            [
                "imported base:v1 from /l/base/base.tar (2 layers, 300 bytes written)".to_owned(),
                format!(
                    "skipped app:latest: the store has it already ({}); /l/app/app.tar left alone",
                    Digest::of(b"had")
                ),
            ]
        );
        assert_eq!(refs(&o, store), "oci:/s:base:v1\n");
        let r = report(&o, store, home);
        assert_eq!(
            (r.schema, r.store.as_str(), r.legacy_home.as_str(), r.bytes),
            (SCHEMA, "/s", "/l", 300)
        );
        let i = &r.imported[0];
        assert_eq!(
            (
                i.reference.as_str(),
                i.name.as_str(),
                i.tag.as_str(),
                i.archive.as_str()
            ),
            ("oci:/s:base:v1", "base", "v1", "/l/base/base.tar")
        );
        assert_eq!(i.archive_manifest, Digest::of(b"archive").to_string());
        assert_eq!(i.manifest, Digest::of(b"store").to_string());
        assert_eq!((i.layers, i.bytes), (2, 300));
        let s = &r.skipped[0];
        assert_eq!(
            (
                s.reference.as_str(),
                s.name.as_str(),
                s.tag.as_str(),
                s.archive.as_str()
            ),
            ("oci:/s:app:latest", "app", "latest", "/l/app/app.tar")
        );
        assert_eq!(s.manifest, Digest::of(b"had").to_string());
        assert_eq!(s.reason, "already in the store");
        assert_eq!((r.imported.len(), r.skipped.len()), (1, 1));
    }

    #[test]
    fn nothing_to_import_says_where_it_looked() {
        let none = ImportOutcome::default();
        assert_eq!(
            steps(&none, Path::new("/l")),
            ["no kiwi-ng system stash archives in /l"]
        );
        assert_eq!(refs(&none, Path::new("/s")), "");
    }
}
