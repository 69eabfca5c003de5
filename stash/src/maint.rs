//! `stash --remove`, `--gc`, `--verify`: the store maintenance a user expects.

use std::path::Path;

use anyhow::Context as _;
use stackcore::Error;
use stackcore::cli::{Exit, Log, print_json};
use stackcore::manifest::{
    SCHEMA, StashGcReport, StashOutput, StashRemoveReport, StashVerifyReport, StoreProblem,
};
use stackcore::oci::Store;
use stackcore::oci::maint::{self, Problem};
use stackcore::stash::valid_name;

/// `stash --remove NAME[:TAG]`: untags one stash. Holds that name's lock, so it never
/// interleaves with a stash of the same name; the blobs stay until `--gc`.
pub fn remove(store_dir: &Path, reference: &str, json: bool, log: Log) -> anyhow::Result<()> {
    let (name, tag) = stackcore::image::split_tag(reference);
    if name.is_empty() || tag.is_empty() {
        return Err(Error::Usage(format!("--remove {reference:?}: expected NAME[:TAG]")).into());
    }
    let full = format!("{name}:{tag}");
    let store = Store::open_for_maintenance(store_dir)
        .with_context(|| format!("opening store {}", store_dir.display()))?;
    // Pulled images (HOST/REPO) have no name lock: only stashes are made under one.
    let _name_lock = if valid_name(name) {
        Some(store.lock(&format!("stash-{name}"))?)
    } else {
        None
    };
    let Some(desc) = store.resolve(&full)? else {
        return Err(Error::Other(format!(
            "no stash {full} in {} (stash --list shows what is there)",
            store.root().display()
        ))
        .into());
    };
    if !store.remove_ref(&full)? {
        return Err(Error::Other(format!("{full} vanished from the store meanwhile")).into());
    }
    log.step(format_args!(
        "removed {full} ({}); stash --gc frees the blobs no other stash uses",
        desc.digest
    ));
    if json {
        print_json(&StashOutput::Remove(StashRemoveReport {
            schema: SCHEMA,
            store: store.root().display().to_string(),
            removed: full.clone(),
            manifest: desc.digest.to_string(),
        }))?;
    }
    Ok(())
}

/// `stash --gc`.
pub fn gc(store_dir: &Path, json: bool, log: Log) -> anyhow::Result<()> {
    let store = Store::open_for_maintenance(store_dir)
        .with_context(|| format!("opening store {}", store_dir.display()))?;
    let report = maint::gc(&store, &mut || {
        log.step("waiting for running stashes to finish");
    })
    .context("collecting garbage")?;
    log.step(format_args!(
        "removed {} unreferenced blobs ({} bytes), {} stale temp files ({} bytes), {} stale \
         caches ({} bytes); {} bytes freed, {} blobs kept",
        report.blobs_removed,
        report.blob_bytes,
        report.temp_removed,
        report.temp_bytes,
        report.caches_removed,
        report.cache_bytes,
        report.bytes_freed(),
        report.blobs_kept
    ));
    if json {
        print_json(&StashOutput::Gc(StashGcReport {
            schema: SCHEMA,
            store: store.root().display().to_string(),
            blobs_kept: report.blobs_kept,
            blobs_removed: report.blobs_removed,
            blob_bytes: report.blob_bytes,
            temp_removed: report.temp_removed,
            temp_bytes: report.temp_bytes,
            caches_removed: report.caches_removed,
            cache_bytes: report.cache_bytes,
            bytes_freed: report.bytes_freed(),
        }))?;
    }
    Ok(())
}

/// `stash --verify`: exits 1 when anything is wrong, after naming each damaged blob.
pub fn verify(store_dir: &Path, json: bool, log: Log) -> anyhow::Result<()> {
    let store =
        Store::open(store_dir).with_context(|| format!("opening store {}", store_dir.display()))?;
    let report = maint::verify(&store).context("verifying")?;
    for p in &report.problems {
        eprintln!("stash: damaged: {}", describe(p));
    }
    if json {
        print_json(&StashOutput::Verify(StashVerifyReport {
            schema: SCHEMA,
            store: store.root().display().to_string(),
            ok: report.problems.is_empty(),
            blobs: report.blobs,
            bytes: report.bytes,
            manifests: report.manifests,
            problems: report
                .problems
                .iter()
                .map(|p| StoreProblem {
                    blob: p.blob.clone(),
                    problem: p.problem.clone(),
                    refs: p.refs.clone(),
                })
                .collect(),
        }))?;
    }
    if report.problems.is_empty() {
        log.step(format_args!(
            "{}: {} blobs ({} bytes) and {} manifests verified, no damage",
            store.root().display(),
            report.blobs,
            report.bytes,
            report.manifests
        ));
        return Ok(());
    }
    eprintln!(
        "error: store {}: {} problems in {} blobs ({} manifests checked)",
        store.root().display(),
        report.problems.len(),
        report.blobs,
        report.manifests
    );
    Err(Exit(1).into())
}

fn describe(p: &Problem) -> String {
    if p.refs.is_empty() {
        format!("{}: {}", p.blob, p.problem)
    } else {
        format!(
            "{}: {} (needed by {})",
            p.blob,
            p.problem,
            p.refs.join(", ")
        )
    }
}
