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
