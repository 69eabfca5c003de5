//! The JSON documents the tools print with `--json`: one place for the contract that scripts
//! and the other tools rely on.
//!
//! Every document carries `"schema": 1` ([`SCHEMA`]). A change that removes or retypes a field
//! raises it; adding a field does not. `cargo xtask schema` writes a JSON Schema of each
//! tool's output to `schema/<tool>.json` (derived from these types), and
//! `cargo xtask schema --check` fails when the committed files drift from them.
//!
//! The types are owned and flat on purpose: the internal outcome types ([`StashOutcome`],
//! [`UnstashOutcome`], ...) may change shape; these change only with [`SCHEMA`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apply::{StackOutcome, UnstashOutcome};
use crate::extract::ExtractStats;
#[cfg(feature = "registry")]
use crate::registry::{PullOutcome, PushOutcome};
use crate::stash::StashOutcome;

/// The version of every document here.
pub const SCHEMA: u32 = 1;

/// `stash --root DIR --json`: what a stash did (and, with `--push`, what the push did).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StashReport {
    /// The version of this document's shape: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// `oci:STORE:NAME:TAG`, the stash's ref (feed it to `unstash -`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// The store (absolute).
    pub store: PathBuf,
    /// Stash name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// The manifest digest the tag points at.
    pub manifest: String,
    /// The layer this stash added; null when nothing changed.
    pub layer: Option<LayerReport>,
    /// Layers added (0 or 1).
    pub layers_added: u32,
    /// Layers in the image.
    pub layers: u64,
    /// Entries in the tree.
    pub entries: u64,
    /// Entries new since the previous stash (all of them the first time).
    pub added: u64,
    /// Entries changed.
    pub changed: u64,
    /// Paths deleted (whiteouts written).
    pub deleted: u64,
    /// File bytes written into the layer.
    pub bytes: u64,
    /// Sockets left out.
    pub sockets_skipped: u64,
    /// Mount points kept as empty directories.
    pub mount_points: u64,
    /// With `--push`: what the push did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<PushReport>,
    /// Wall-clock seconds of the stash (the push has its own).
    pub seconds: f64,
}

impl StashReport {
    /// The report of `o`, which took `seconds`.
    pub fn new(o: &StashOutcome, pushed: Option<PushReport>, seconds: f64) -> Self {
        StashReport {
            schema: SCHEMA,
            reference: o.reference.clone(),
            store: o.store.clone(),
            name: o.name.clone(),
            tag: o.tag.clone(),
            manifest: o.manifest.to_string(),
            layer: o.layer.as_ref().map(|l| LayerReport {
                digest: l.digest.to_string(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: l.diff_id.to_string(),
                tar_size: l.tar_size,
            }),
            layers_added: o.layers_added,
            layers: o.layers as u64,
            entries: o.entries,
            added: o.added,
            changed: o.changed,
            deleted: o.deleted,
            bytes: o.bytes,
            sockets_skipped: o.sockets_skipped,
            mount_points: o.mount_points,
            pushed,
            seconds,
        }
    }
}

/// The layer a stash added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerReport {
    /// Blob digest (`sha256:...`).
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Media type (`application/vnd.oci.image.layer.v1.tar+gzip`, `...+zstd`, `...tar`).
    pub media_type: String,
    /// Digest of the uncompressed tar (the config's `diff_id`).
    pub diff_id: String,
    /// Uncompressed size.
    pub tar_size: u64,
}

/// What a push to a registry did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushReport {
    /// `docker://HOST/REPO:TAG`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The manifest digest, the same in the store and in the registry.
    pub digest: String,
    /// Blobs uploaded.
    pub blobs_uploaded: u64,
    /// Blobs the registry already had in that repository.
    pub blobs_skipped: u64,
    /// Blobs mounted from another repository of the registry.
    pub blobs_mounted: u64,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

#[cfg(feature = "registry")]
impl PushReport {
    /// The report of `p`, which took `seconds`.
    pub fn new(p: &PushOutcome, seconds: f64) -> Self {
        PushReport {
            reference: p.reference.clone(),
            digest: p.digest.to_string(),
            blobs_uploaded: p.blobs_uploaded as u64,
            blobs_skipped: p.blobs_skipped as u64,
            blobs_mounted: p.blobs_mounted as u64,
            bytes_uploaded: p.bytes_uploaded,
            seconds,
        }
    }
}

/// `stash --container-name NAME [--tag T] --push DEST --json`: an existing stash published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StashPushReport {
    /// The version of this document's shape: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// The stash's own ref, `oci:STORE:NAME:TAG`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Stash name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// The manifest digest.
    pub manifest: String,
    /// What the push did.
    pub pushed: PushReport,
}

/// `stash --list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StashList {
    /// The version of this document's shape: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// The store listed.
    pub store: String,
    /// Its stashes, in index order.
    pub stashes: Vec<StashRow>,
    /// The original plugin's archives (`/var/tmp/kiwi-stash/NAME/NAME.tar`).
    pub legacy: Vec<StashRow>,
}

/// One stash in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StashRow {
    /// `oci:STORE:NAME:TAG` or `oci-archive:FILE:NAME:TAG`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// Manifest digest.
    pub digest: String,
    /// Manifest, config and layers, in bytes.
    pub size: u64,
    /// Layers.
    pub layers: u64,
    /// The config's `created` time (RFC 3339), if any.
    pub created: Option<String>,
    /// Present when the stash cannot be read (its manifest or config is missing or damaged):
    /// why. `digest` and `size` are then the tag's own descriptor's, `layers` 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

/// `stash --remove NAME[:TAG] --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StashRemoveReport {
    /// The version of this document's shape: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// The store.
    pub store: String,
    /// The `NAME:TAG` removed.
    pub removed: String,
    /// The manifest it pointed at (its blobs stay until `--gc`).
    pub manifest: String,
}

/// `stash --gc --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StashGcReport {
    /// The version of this document's shape: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// The store.
    pub store: String,
    /// Blobs kept (referenced).
    pub blobs_kept: u64,
    /// Unreferenced blobs removed.
    pub blobs_removed: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Temp files of runs no longer alive, removed.
    pub temp_removed: u64,
    /// Their bytes.
    pub temp_bytes: u64,
    /// Stale cached layer indexes removed.
    pub caches_removed: u64,
    /// Their bytes.
    pub cache_bytes: u64,
    /// All bytes freed.
    pub bytes_freed: u64,
}

/// `stash --verify --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StashVerifyReport {
    /// The version of this document's shape: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// The store.
    pub store: String,
    /// Whether nothing is wrong.
    pub ok: bool,
    /// Blob files hashed.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Manifests checked.
    pub manifests: u64,
    /// Everything wrong, one entry per damaged or missing blob.
    pub problems: Vec<StoreProblem>,
}

/// One thing wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreProblem {
    /// The blob (`sha256:...`), or the file, that is wrong.
    pub blob: String,
    /// What is wrong with it.
    pub problem: String,
    /// The tags whose images need it.
    pub refs: Vec<String>,
}

/// Every document `stash --json` prints: which one depends on the flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // built once, printed, dropped
pub enum StashOutput {
    /// `stash --root DIR --json`.
    Stash(StashReport),
    /// `stash --container-name NAME --push DEST --json`.
    Push(StashPushReport),
    /// `stash --list --json`.
    List(StashList),
    /// `stash --remove NAME[:TAG] --json`.
    Remove(StashRemoveReport),
    /// `stash --gc --json`.
    Gc(StashGcReport),
    /// `stash --verify --json`.
    Verify(StashVerifyReport),
    /// `stash --import-legacy [NAME[:TAG]...] --json`.
    ImportLegacy(StashImportReport),
}

/// `stash --import-legacy [NAME[:TAG]...] --json`: the original plugin's stashes copied into
/// the store (the archives stay where they are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StashImportReport {
    /// The version of this document's shape: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// The store imported into.
    pub store: String,
    /// Where the original's archives are (`/var/tmp/kiwi-stash`, or
    /// `$STACKBUILD_LEGACY_STASH_HOME`).
    pub legacy_home: String,
    /// Stashes copied into the store.
    pub imported: Vec<ImportedStash>,
    /// Stashes not copied: the store has that `NAME:TAG` already.
    pub skipped: Vec<SkippedStash>,
    /// Bytes written into the store (blobs it did not have).
    pub bytes: u64,
}

/// One stash `stash --import-legacy` copied into the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedStash {
    /// `oci:STORE:NAME:TAG`, its ref in the store.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// The archive it came from.
    pub archive: String,
    /// The manifest digest in the archive.
    pub archive_manifest: String,
    /// The manifest digest in the store: the archive's manifest with each layer annotated
    /// `stackbuild.mtime-rounding: second` (config and layers are the archive's blobs).
    pub manifest: String,
    /// Layers.
    pub layers: u64,
    /// Bytes written for it.
    pub bytes: u64,
}

/// One stash `stash --import-legacy` left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SkippedStash {
    /// `oci:STORE:NAME:TAG`, the store's stash of that name.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Name.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// The archive not imported.
    pub archive: String,
    /// The manifest digest the store's `NAME:TAG` points at.
    pub manifest: String,
    /// Why: `already in the store`.
    pub reason: String,
}

/// `unstash REF --to DIR --json` (or `--output FILE --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnstashReport {
    /// The version of this document's shape: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// The ref as given (after reading `-`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// The image's manifest digest.
    pub digest: String,
    /// Layers applied.
    pub layers: u64,
    /// Where the tree is; null for a tar output.
    pub dest: Option<PathBuf>,
    /// Whether the one-pass plan was used (otherwise the layers were applied in order).
    pub planned: bool,
    /// What was written and what could not be restored.
    pub stats: WriteStats,
    /// For a `docker://` ref: what the pull did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled: Option<PullReport>,
    /// Wall-clock seconds of the write.
    pub seconds: f64,
}

impl UnstashReport {
    /// The report of `o` (add `pulled` for a `docker://` ref).
    pub fn new(
        reference: String,
        digest: String,
        layers: usize,
        o: &UnstashOutcome,
        seconds: f64,
    ) -> Self {
        UnstashReport {
            schema: SCHEMA,
            reference,
            digest,
            layers: layers as u64,
            dest: o.dest.clone(),
            planned: o.planned,
            stats: WriteStats::from(&o.stats),
            pulled: None,
            seconds,
        }
    }
}

/// What was written into a tree, and what could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteStats {
    /// Regular files written.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Hardlinks.
    pub hardlinks: u64,
    /// Device nodes and FIFOs.
    pub specials: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Entries whose owner could not be set (not root).
    pub owner_skipped: u64,
    /// Device nodes not created (not root).
    pub devices_skipped: u64,
    /// xattrs not restored (not permitted here, or excluded).
    pub xattrs_skipped: u64,
    /// setuid/setgid bits dropped because the owner could not be restored.
    pub setid_masked: u64,
}

impl From<&ExtractStats> for WriteStats {
    fn from(s: &ExtractStats) -> Self {
        WriteStats {
            files: s.files,
            dirs: s.dirs,
            symlinks: s.symlinks,
            hardlinks: s.hardlinks,
            specials: s.specials,
            bytes: s.bytes,
            owner_skipped: s.owner_skipped,
            devices_skipped: s.devices_skipped,
            xattrs_skipped: s.xattrs_skipped,
            setid_masked: s.setid_masked,
        }
    }
}

/// What a pull from a registry did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PullReport {
    /// The `docker://` ref pulled.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The manifest now in the store (one platform's, when the ref named an index).
    pub descriptor: DescriptorReport,
    /// The name it is kept under in the store: `HOST/REPO:TAG` (or `HOST/REPO@DIGEST`).
    pub ref_name: String,
    /// Blobs fetched from the registry.
    pub blobs_fetched: u64,
    /// Blobs the store already had.
    pub blobs_present: u64,
    /// Bytes fetched (blobs only).
    pub bytes_fetched: u64,
}

#[cfg(feature = "registry")]
impl From<&PullOutcome> for PullReport {
    fn from(p: &PullOutcome) -> Self {
        let d = &p.descriptor;
        // `platform` and uninterpreted fields travel as they are: they are the image-spec's.
        let mut extra: BTreeMap<String, serde_json::Value> = d.extra.clone().into_iter().collect();
        if let Some(platform) = &d.platform
            && let Ok(v) = serde_json::to_value(platform)
        {
            extra.insert("platform".into(), v);
        }
        PullReport {
            reference: p.reference.clone(),
            descriptor: DescriptorReport {
                media_type: d.media_type.clone(),
                digest: d.digest.to_string(),
                size: d.size,
                annotations: d.annotations.clone(),
                extra,
            },
            ref_name: p.ref_name.clone(),
            blobs_fetched: p.blobs_fetched as u64,
            blobs_present: p.blobs_present as u64,
            bytes_fetched: p.bytes_fetched,
        }
    }
}

/// An OCI content descriptor, as the image-spec spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DescriptorReport {
    /// Media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (e.g. `org.opencontainers.image.ref.name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `platform` (in an index) and fields this version does not name.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `stackmerge --into DIR SOURCE... --json` (and `--report FILE`): which source gave the
/// final tree what, and every conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StackmergeReport {
    /// The version of this document's shape: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// The target directory.
    pub into: PathBuf,
    /// Each source, lowest first.
    pub sources: Vec<MergedSource>,
    /// Every conflicting path, in the order the sources met.
    pub conflicts: Vec<MergeConflict>,
    /// Totals.
    pub totals: MergeTotals,
    /// What was written and what could not be restored.
    pub stats: WriteStats,
    /// What the stack does to the sources' package databases.
    pub packages: PackagesReport,
    /// `--dry-run`: nothing was written, `stats` are all zero.
    pub dry_run: bool,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl StackmergeReport {
    /// The report of `o`, which took `seconds` (its `packages` section empty: set it).
    pub fn new(o: &StackOutcome, seconds: f64) -> Self {
        StackmergeReport {
            schema: SCHEMA,
            into: o.dest.clone(),
            sources: o
                .sources
                .iter()
                .map(|s| MergedSource {
                    name: s.name.clone(),
                    kind: s.kind.to_owned(),
                    digest: s.digest.clone(),
                    entries: s.entries,
                    planned: s.planned,
                })
                .collect(),
            conflicts: o
                .conflicts
                .iter()
                .map(|c| MergeConflict {
                    path: c.path.clone(),
                    lower: c.lower.clone(),
                    upper: c.upper.clone(),
                    kind: serde_name(&c.kind),
                    resolution: serde_name(&c.resolution),
                })
                .collect(),
            totals: MergeTotals {
                sources: o.totals.sources as u64,
                entries: o.totals.entries,
                conflicts: o.totals.conflicts,
                type_: o.totals.type_,
                content: o.totals.content,
                metadata: o.totals.metadata,
                rsync_fails: o.totals.rsync_fails,
            },
            stats: WriteStats::from(&o.stats),
            packages: PackagesReport::default(),
            dry_run: false,
            seconds,
        }
    }
}

/// One source of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergedSource {
    /// How it was named on the command line (a ref or a path).
    pub name: String,
    /// `image` or `dir`.
    pub kind: String,
    /// An image's manifest digest (null for a directory).
    pub digest: Option<String>,
    /// Entries of the final tree this source provided.
    pub entries: u64,
    /// False when an image could not be planned and was unstashed layer by layer first.
    pub planned: bool,
}

/// A path two sources both provide, differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeConflict {
    /// The path, relative to the target (`/` for the root).
    pub path: String,
    /// The lower source's name.
    pub lower: String,
    /// The upper source's name.
    pub upper: String,
    /// What differs: `type`, `content` or `metadata`.
    #[schemars(extend("enum" = ["type", "content", "metadata"]))]
    pub kind: String,
    /// What the result holds: `upper`, `lower-content-kept` or `upper-over-non-empty-dir`.
    #[schemars(extend("enum" = ["upper", "lower-content-kept", "upper-over-non-empty-dir"]))]
    pub resolution: String,
}

/// Totals of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeTotals {
    /// Sources stacked.
    pub sources: u64,
    /// Entries in the final tree.
    pub entries: u64,
    /// Conflicts of every kind.
    pub conflicts: u64,
    /// Type conflicts.
    #[serde(rename = "type")]
    pub type_: u64,
    /// Content conflicts.
    pub content: u64,
    /// Metadata conflicts.
    pub metadata: u64,
    /// Paths where rsync would fail (a non-directory over a non-empty directory).
    pub rsync_fails: u64,
}

/// A unit enum's serde name (`type`, `lower-content-kept`...).
pub fn serde_name(v: &impl Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `stackbuild ... --json`: the steps, times and result files (also printed by `--dry-run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StackbuildReport {
    /// The version of this document's shape: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// `--target-dir`, absolute.
    pub target_dir: PathBuf,
    /// `TARGET/build/image-root`.
    pub image_root: PathBuf,
    /// The stashes stacked, lowest first.
    pub stashes: Vec<StackedStash>,
    /// The description kiwi-ng builds (null: the root's own, `system create`).
    pub description: Option<PathBuf>,
    /// With `--merge`: the descriptions merged, lowest first.
    pub merged_descriptions: Vec<String>,
    /// The kiwi-ng command line, word by word.
    pub kiwi_command: Vec<String>,
    /// Whether kiwi-ng ran.
    pub kiwi_ran: bool,
    /// Its exit code (null if it did not run or was killed by a signal).
    pub kiwi_exit: Option<i32>,
    /// The steps taken, in order.
    pub steps: Vec<StepReport>,
    /// The image files kiwi-ng wrote.
    pub result_files: Vec<PathBuf>,
    /// What the stack does to the stashes' package databases.
    pub packages: PackagesReport,
    /// Wall-clock seconds, all steps.
    pub seconds: f64,
}

/// One stash of a stack, resolved to a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StackedStash {
    /// As given to `--stash`.
    pub name: String,
    /// `oci:STORE:NAME:TAG`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
    /// Layers.
    pub layers: u64,
}

/// One timed step of a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepReport {
    /// `resolve`, `stack`, `merge` or `kiwi-ng`.
    pub name: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// A short summary, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What a stack does to the sources' package databases (`--packages`), in both
/// `stackmerge` and `stackbuild` reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackagesReport {
    /// `merge` (a merged database is written), `report` (no file changed) or `off`.
    #[schemars(extend("enum" = ["merge", "report", "off"]))]
    pub mode: String,
    /// One entry per package manager some source has.
    pub managers: Vec<ManagerReport>,
    /// Mismatches between the sources, and databases that could not be read or merged.
    pub warnings: Vec<PackageWarning>,
}

impl PackagesReport {
    /// An empty report in `mode`.
    pub fn empty(mode: &str) -> Self {
        PackagesReport {
            mode: mode.to_owned(),
            managers: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// One package manager's databases in a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagerReport {
    /// `dpkg`, `rpm`, `apk` or `pacman`.
    #[schemars(extend("enum" = ["dpkg", "rpm", "apk", "pacman"]))]
    pub manager: String,
    /// The database in the result, relative to its root (`var/lib/dpkg/status`...).
    pub database: String,
    /// The sources that have this database, lowest first, with their package counts.
    pub sources: Vec<ManagerSource>,
    /// The result's database.
    pub result: ManagerResult,
    /// Packages the sources disagree about (absent from some, or at different versions).
    pub changes: Vec<PackageChange>,
    /// Paths that packages of different names own in different sources.
    pub file_conflicts: Vec<FileConflict>,
}

/// One source's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagerSource {
    /// The source's name.
    pub source: String,
    /// Installed packages it lists.
    pub packages: u64,
}

/// The result's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagerResult {
    /// Installed packages it lists.
    pub packages: u64,
    /// Whether it lists every source's packages (false: it is the uppermost source's alone,
    /// as a sequence of rsync leaves it).
    pub merged: bool,
}

/// What the stack did to one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageChange {
    /// Package name.
    pub package: String,
    /// Its architecture (`amd64`, `all`, `x86_64`, `noarch`...).
    pub arch: String,
    /// `added` (only the uppermost database with it has it), `upgraded`/`downgraded` (the
    /// result's version against the nearest lower source's), `kept` (a lower source's entry
    /// kept where an upper database lacks it, or the same version), `lost` (installed in a
    /// lower source, absent from the result's database though its files are on disk).
    #[schemars(extend("enum" = ["added", "upgraded", "downgraded", "lost", "kept"]))]
    pub change: String,
    /// Its distinct versions, in source order.
    pub versions: Vec<String>,
    /// The sources that have it installed, lowest first.
    pub sources: Vec<String>,
}

/// A path packages of different names own in different sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConflict {
    /// The path, relative to the root.
    pub path: String,
    /// The owning packages, in source order.
    pub packages: Vec<String>,
    /// The package whose file the result holds (the uppermost source's).
    pub winner: String,
}

/// Something about the sources' packages worth a person's attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageWarning {
    /// `distribution` (os-release `ID` or `VERSION_ID` differ), `architecture` (the packages'
    /// main architectures differ), `usr-merge` (a usr-merged root with one that is not),
    /// `backend` (a database that cannot be read or merged).
    #[schemars(extend("enum" = ["distribution", "architecture", "usr-merge", "backend"]))]
    pub kind: String,
    /// What, in words.
    pub detail: String,
}

/// The JSON Schema of each tool's `--json` output, by tool name, as `cargo xtask schema`
/// writes them.
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("stash", schemars::schema_for!(StashOutput)),
        ("unstash", schemars::schema_for!(UnstashReport)),
        ("stackmerge", schemars::schema_for!(StackmergeReport)),
        ("stackbuild", schemars::schema_for!(StackbuildReport)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_names_its_version_field() {
        for (tool, schema) in schemas() {
            let v = schema.as_value();
            let text = v.to_string();
            assert!(text.contains("\"schema\""), "{tool}: {text}");
        }
    }

    #[test]
    fn stash_output_reads_back_as_the_right_variant() -> anyhow::Result<()> {
        let list = StashList {
            schema: SCHEMA,
            store: "/s".into(),
            stashes: Vec::new(),
            legacy: Vec::new(),
        };
        let text = serde_json::to_string(&StashOutput::List(list.clone()))?;
        let back: StashOutput = serde_json::from_str(&text)?;
        assert_eq!(back, StashOutput::List(list));
        Ok(())
    }
}
