//! The original plugin's stashes (`kiwi-ng system stash` archives) used by name and imported.
//!
//! The archive is made by the real original, kiwi-ng 11.1.6 (with the umoci and podman it
//! runs), once while any test here needs it: a first stash of a tree, then a second after a
//! change (so the archive has two layers of umoci's, one with a whiteout). The original
//! writes to the fixed `/var/tmp/kiwi-stash` and `podman load`s the result, so it runs in a
//! private mount namespace with a temporary directory over `/var/tmp` (and over
//! `/var/lib/containers`, podman's blob-info cache, when that exists), and podman's storage
//! and run files are pointed into the same temporary directory. Tests skip, saying so,
//! without root, kiwi-ng, umoci, podman or unshare.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

use anyhow::{Context, Result, bail};

use crate::skip;
use crate::util::{
    Workdir, build_tree, copy_tree, dump, fixture, force_remove, have, is_root, json, output, run,
    workspace,
};

const NAME: &str = "legacy-probe";

/// The tree of the first stash; every entry gets a sub-second mtime, some below half a
/// second, some above (umoci rounds to the nearest second).
const FIRST: &str = "
d . 755 0:0
d etc 755 0:0
f etc/hostname 644 0:0 legacy\\n
f etc/shadow 640 0:42 root:*:19000::::::\\n
d usr 755 0:0
d usr/bin 755 0:0
f usr/bin/tool 4755 0:0 #!/bin/sh\\necho tool\\n
h usr/bin/tool-again usr/bin/tool
l usr/bin/sh-link tool
d home 755 0:0
d home/user 700 1000:1000
f home/user/notes 600 1000:1000 @70000
x home/user/notes user.comment kept
c opt-console 620 5:1
p opt-fifo 644
d var 755 0:0
f var/gone 644 0:0 bye\\n
f var/changes 644 0:0 v1\\n
d dev 755 0:0
d proc 555 0:0
";

/// The mtimes of the first stash, set after image/config.xml is written.
const FIRST_TIMES: &str = "
t . 1600000000.250000000
t etc 1600000001.750000000
t etc/hostname 1600000002.499999999
t etc/shadow 1600000003.500000000
t usr 1600000004.100000000
t usr/bin 1600000005.900000000
t usr/bin/tool 1600000006.000000001
t usr/bin/sh-link 1600000007.600000000
t home 1600000008.300000000
t home/user 1600000009.800000000
t home/user/notes 1600000010.200000000
t opt-console 1600000011.700000000
t opt-fifo 1600000012.400000000
t var 1600000013.650000000
t var/gone 1600000014.350000000
t var/changes 1600000015.550000000
t dev 1600000016.450000000
t proc 1600000017.950000000
t image 1600000018.150000000
t image/config.xml 1600000019.850000000
";

/// What changes before the second stash (var/gone is deleted first).
const SECOND: &str = "
f var/changes 644 0:0 v2, longer\\n
f etc/added 644 0:0 new\\n
t var 1600001013.650000000
t var/changes 1600001015.550000000
t etc 1600001001.250000000
t etc/added 1600001020.750000000
";

/// The original's archive and the tree it holds now.
struct Original {
    dir: PathBuf,
}

impl Original {
    /// The original's stash home (`/var/tmp/kiwi-stash` as the original saw it).
    fn home(&self) -> PathBuf {
        self.dir.join("vartmp/kiwi-stash")
    }

    fn archive(&self) -> PathBuf {
        self.home().join(NAME).join(format!("{NAME}.tar"))
    }

    /// The tree the archive holds, as it was on disk (mtimes before umoci rounded them).
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

impl Drop for Original {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = force_remove(&self.dir);
        }
    }
}

/// Why the original cannot run here, if it cannot.
fn why_not() -> Option<String> {
    if !is_root() {
        return Some("needs root (kiwi-ng system stash refuses to run without it)".into());
    }
    let missing: Vec<&str> = ["kiwi-ng", "umoci", "podman", "unshare", "mount"]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "needs the original (kiwi-ng system stash) and what it runs; missing: {}",
            missing.join(", ")
        )
    })
}

/// The original's archive, made once while any test holds it.
fn original() -> Result<Arc<Original>> {
    static SHARED: Mutex<Weak<Original>> = Mutex::new(Weak::new());
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(o) = shared.upgrade() {
        return Ok(o);
    }
    let base = std::env::var_os("STACK_TEST_TMP").map_or_else(std::env::temp_dir, PathBuf::from);
    let o = Arc::new(Original {
        dir: base.join(format!(
            "stackbuild-test-legacy-original-{}",
            std::process::id()
        )),
    });
    if o.dir.exists() {
        force_remove(&o.dir)?;
    }
    for d in [
        "vartmp",
        "varlib-containers",
        "storage",
        "run",
        "podman-tmp",
    ] {
        fs::create_dir_all(o.dir.join(d))?;
    }
    fs::write(
        o.dir.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            o.dir.join("storage").display(),
            o.dir.join("run").display()
        ),
    )?;
    fs::write(
        o.dir.join("containers.conf"),
        format!(
            "[engine]\ntmp_dir = \"{}\"\n",
            o.dir.join("podman-tmp").display()
        ),
    )?;
    let root = o.root();
    build_tree(&root, FIRST)?;
    fs::create_dir_all(root.join("image"))?;
    fs::copy(
        fixture("stackbuild/debian-tbz.xml"),
        root.join("image/config.xml"),
    )?;
    build_tree(&root, FIRST_TIMES)?;
    stash_with_the_original(&o)?;
    fs::remove_file(root.join("var/gone"))?;
    build_tree(&root, SECOND)?;
    stash_with_the_original(&o)?;
    *shared = Arc::downgrade(&o);
    Ok(o)
}

/// `kiwi-ng system stash --root ROOT --container-name NAME`, with /var/tmp and podman's
/// storage in the fixture's directory.
fn stash_with_the_original(o: &Original) -> Result<()> {
    const SCRIPT: &str = r#"set -e
mount --bind "$1" /var/tmp
if [ -d /var/lib/containers ]; then mount --bind "$2" /var/lib/containers; fi
exec kiwi-ng system stash --root "$3" --container-name "$4""#;
    let out = output(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                SCRIPT,
                "sh",
            ])
            .arg(o.dir.join("vartmp"))
            .arg(o.dir.join("varlib-containers"))
            .arg(o.root())
            .arg(NAME)
            .env("CONTAINERS_STORAGE_CONF", o.dir.join("storage.conf"))
            .env("CONTAINERS_CONF", o.dir.join("containers.conf"))
            .current_dir(&o.dir),
    )?;
    if !out.status.success() {
        bail!(
            "kiwi-ng system stash failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !o.archive().is_file() {
        bail!("kiwi-ng system stash wrote no {}", o.archive().display());
    }
    Ok(())
}

/// One of our tools, reading the original's stash home.
fn tool(w: &Workdir, o: &Original, name: &str) -> Command {
    let mut c = w.bin(name);
    c.env("STACKBUILD_LEGACY_STASH_HOME", o.home());
    c
}

/// Runs `c`, which must succeed; returns stdout and stderr.
fn run_both(c: &mut Command) -> Result<(String, String)> {
    let out = output(c)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("{c:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    }
    Ok((stdout, stderr))
}

/// A dump with each mtime rounded to the second as umoci 0.4.7 writes it (Go's
/// `Time.Round`: half a second and more rounds up).
fn rounded_as_umoci(dump: &str) -> Result<String> {
    let mut out = String::new();
    for line in dump.lines() {
        let mut fields: Vec<String> = line.split(' ').map(str::to_owned).collect();
        let (s, n) = fields[4]
            .split_once('.')
            .with_context(|| format!("no SECONDS.NANOS mtime in {line}"))?;
        let (s, n): (i64, u32) = (s.parse()?, n.parse()?);
        fields[4] = format!("{}.000000000", if n >= 500_000_000 { s + 1 } else { s });
        out += &fields.join(" ");
        out.push('\n');
    }
    Ok(out)
}

/// The dump of a tree the original stashed, as its archive holds it: mtimes rounded, and
/// without `dev/` and `proc/` contents (there are none here).
fn as_archived(root: &Path) -> Result<String> {
    rounded_as_umoci(&dump(root)?)
}

/// The archive's manifest digest, as `stash --list --json` reads it.
fn archive_digest(w: &Workdir, o: &Original) -> Result<String> {
    let listed = json(&run(
        tool(w, o, "stash").args(["--list", "--store", "store", "--json"])
    )?)?;
    let row = &listed["legacy"][0];
    assert_eq!(row["name"], NAME, "{listed}");
    assert_eq!(row["layers"], 2, "two stashes by the original: {listed}");
    Ok(row["digest"].as_str().context("digest")?.to_owned())
}

#[test]
fn privileged_an_original_stash_opens_by_name_in_every_tool() -> Result<()> {
    if let Some(why) = why_not() {
        skip!("{why}");
    }
    let o = original()?;
    let w = Workdir::new("legacy-by-name")?;
    let archive = o.archive().display().to_string();
    let want = as_archived(&o.root())?;

    let (_, err) =
        run_both(tool(&w, &o, "unstash").args([NAME, "--store", "store", "--to", "back"]))?;
    assert_eq!(err.matches("note:").count(), 1, "{err}");
    assert!(err.contains(&archive), "the note names the archive: {err}");
    assert!(
        err.contains(&format!("stash --import-legacy {NAME}:latest")),
        "the note says how to import it: {err}"
    );
    assert_eq!(want, dump(&w.path("back"))?, "unstash NAME");
    assert!(
        !w.path("store").exists(),
        "reading by name created the store"
    );

    let (_, err) =
        run_both(tool(&w, &o, "stackmerge").args(["--store", "store", "--into", "merged", NAME]))?;
    assert!(err.contains(&archive), "{err}");
    assert_eq!(want, dump(&w.path("merged"))?, "stackmerge NAME");

    let digest = archive_digest(&w, &o)?;
    let (plan, err) = run_both(tool(&w, &o, "stackbuild").args([
        "--store",
        "store",
        "--stash",
        NAME,
        "--target-dir",
        "T",
        "--dry-run",
    ]))?;
    assert!(err.contains(&archive), "{err}");
    assert!(
        plan.contains(&digest),
        "the plan names the archive's image: {plan}"
    );
    assert!(!w.path("T").exists(), "--dry-run wrote the target");
    let report = json(&run(tool(&w, &o, "stackbuild").args([
        "--store",
        "store",
        "--stash",
        NAME,
        "--target-dir",
        "T",
        "--dry-run",
        "--json",
    ]))?)?;
    assert_eq!(report["stashes"][0]["digest"], digest.as_str(), "{report}");
    assert_eq!(
        report["stashes"][0]["ref"],
        format!("oci-archive:{archive}:{NAME}:latest"),
        "{report}"
    );

    // kiwimerge reads the stash's image/config.xml (debian-min's) as BASE.
    let (merged, err) = run_both(
        tool(&w, &o, "kiwimerge")
            .args(["--store", "store", NAME])
            .arg(fixture("stackbuild/extra.xml")),
    )?;
    assert!(err.contains(&archive), "{err}");
    assert!(
        merged.contains("base-files") && merged.contains("extra-tool"),
        "{merged}"
    );
    Ok(())
}

#[test]
fn privileged_the_store_wins_over_an_original_stash_of_the_same_name() -> Result<()> {
    if let Some(why) = why_not() {
        skip!("{why}");
    }
    let o = original()?;
    let w = Workdir::new("legacy-shadowed")?;
    let archive_ref = format!("oci-archive:{}:{NAME}:latest", o.archive().display());

    // Only the archive has it: the listing shows the bare name, which works.
    let listing = run(tool(&w, &o, "stash").args(["--list", "--store", "store"]))?;
    let legacy = listing
        .split("# kiwi-ng system stash archives")
        .nth(1)
        .with_context(|| format!("no section for the original's stashes: {listing}"))?;
    assert!(legacy.contains(&format!("\n{NAME}:latest ")), "{listing}");

    let other = w.tree("other", "d etc 755 0:0\nf etc/mine 644 0:0 ours\n")?;
    // A stash of a name only the original has starts anew, and says how not to.
    let (_, err) = run_both(
        tool(&w, &o, "stash")
            .args(["--store", "store", "--container-name", NAME, "--root"])
            .arg(&other),
    )?;
    assert!(
        err.contains(&format!("stash --import-legacy {NAME}:latest first")),
        "{err}"
    );
    let (_, err) =
        run_both(tool(&w, &o, "unstash").args([NAME, "--store", "store", "--to", "back"]))?;
    assert_eq!(dump(&other)?, dump(&w.path("back"))?, "the store's stash");
    assert_eq!(err.matches("note:").count(), 1, "{err}");
    assert!(
        err.contains("using the store's") && err.contains(&archive_ref),
        "{err}"
    );

    // Now the bare name is the store's: the listing gives the archive's own ref, and it works.
    let listing = run(tool(&w, &o, "stash").args(["--list", "--store", "store"]))?;
    let legacy = listing
        .split("# kiwi-ng system stash archives")
        .nth(1)
        .with_context(|| listing.clone())?;
    assert!(legacy.contains(&format!("\n{archive_ref} ")), "{listing}");
    let (_, err) = run_both(tool(&w, &o, "unstash").args([
        &archive_ref,
        "--store",
        "store",
        "--to",
        "theirs",
    ]))?;
    assert!(
        !err.contains("note:"),
        "an explicit ref needs no note: {err}"
    );
    assert_eq!(as_archived(&o.root())?, dump(&w.path("theirs"))?);
    Ok(())
}

/// A file's SHA-256, to show the archive is left as it was.
fn file_digest(p: &Path) -> Result<String> {
    use sha2::Digest as _;
    Ok(format!("{:x}", sha2::Sha256::digest(fs::read(p)?)))
}

fn read_json(p: &Path) -> Result<serde_json::Value> {
    serde_json::from_slice(&fs::read(p)?).with_context(|| p.display().to_string())
}

/// The manifest `NAME:latest` points at in an OCI layout directory.
fn manifest_in(layout: &Path) -> Result<serde_json::Value> {
    let index = read_json(&layout.join("index.json"))?;
    let desc = index["manifests"]
        .as_array()
        .context("manifests")?
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == format!("{NAME}:latest"))
        .with_context(|| format!("no {NAME}:latest in {index}"))?;
    let digest = desc["digest"].as_str().context("digest")?;
    read_json(&layout.join("blobs/sha256").join(&digest["sha256:".len()..]))
}

/// `stash --json` output against the committed schema/stash.json.
fn assert_valid(doc: &serde_json::Value) -> Result<()> {
    let schema = read_json(&workspace().join("schema/stash.json"))?;
    let errs = crate::jsonschema::validate(&schema, doc);
    if !errs.is_empty() {
        bail!(
            "does not match schema/stash.json:\n{}\n{doc:#}",
            errs.join("\n")
        );
    }
    Ok(())
}

#[test]
fn privileged_import_legacy_copies_the_original_stash_into_the_store() -> Result<()> {
    if let Some(why) = why_not() {
        skip!("{why}");
    }
    let o = original()?;
    let w = Workdir::new("legacy-import")?;
    let before = file_digest(&o.archive())?;
    let archive_manifest = archive_digest(&w, &o)?;

    let report = json(&run(tool(&w, &o, "stash").args([
        "--import-legacy",
        "--store",
        "store",
        "--json",
    ]))?)?;
    assert_valid(&report)?;
    let store = w.path("store");
    let imported = &report["imported"][0];
    assert_eq!(
        report["imported"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(report["skipped"], serde_json::json!([]), "{report}");
    assert_eq!(imported["name"], NAME);
    assert_eq!(imported["tag"], "latest");
    assert_eq!(imported["archive"], o.archive().display().to_string());
    assert_eq!(imported["archive_manifest"], archive_manifest.as_str());
    assert_eq!(imported["layers"], 2);
    assert_eq!(
        imported["ref"],
        format!("oci:{}:{NAME}:latest", store.display())
    );
    // The store held nothing: every blob in it is one the import wrote.
    let mut written = 0;
    for b in fs::read_dir(store.join("blobs/sha256"))? {
        written += b?.metadata()?.len();
    }
    assert_eq!(report["bytes"], written, "{report}");
    assert_eq!(imported["bytes"], written, "{report}");

    // The archive's config and layer blobs as they are; each layer marked as the original's.
    let layout = w.path("archive-layout");
    fs::create_dir_all(&layout)?;
    run(w
        .cmd("tar")
        .arg("-xf")
        .arg(o.archive())
        .arg("-C")
        .arg(&layout))?;
    let theirs = manifest_in(&layout)?;
    let ours = manifest_in(&store)?;
    assert_eq!(ours["config"], theirs["config"]);
    let layers = ours["layers"].as_array().context("layers")?;
    assert_eq!(layers.len(), 2);
    for (mine, orig) in layers
        .iter()
        .zip(theirs["layers"].as_array().context("layers")?)
    {
        assert_eq!(mine["digest"], orig["digest"]);
        assert_eq!(mine["size"], orig["size"]);
        assert_eq!(mine["mediaType"], orig["mediaType"]);
        assert_eq!(
            mine["annotations"]["stackbuild.mtime-rounding"], "second",
            "{ours}"
        );
    }
    run(w.bin("stash").args(["--verify", "--store", "store"]))?;

    // A second import skips it and writes nothing.
    let index = fs::read(store.join("index.json"))?;
    let again = json(&run(tool(&w, &o, "stash").args([
        "--import-legacy",
        NAME,
        "--store",
        "store",
        "--json",
    ]))?)?;
    assert_valid(&again)?;
    assert_eq!(again["imported"], serde_json::json!([]), "{again}");
    assert_eq!(again["bytes"], 0, "{again}");
    assert_eq!(again["skipped"][0]["name"], NAME, "{again}");
    assert_eq!(
        again["skipped"][0]["reason"], "already in the store",
        "{again}"
    );
    assert_eq!(
        again["skipped"][0]["manifest"], imported["manifest"],
        "{again}"
    );
    assert_eq!(index, fs::read(store.join("index.json"))?);
    assert_eq!(
        before,
        file_digest(&o.archive())?,
        "the archive was changed"
    );

    // Naming a stash the original does not have fails, writing nothing.
    let out =
        output(tool(&w, &o, "stash").args(["--import-legacy", "no-such", "--store", "store"]))?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such:latest"), "{err}");
    assert!(out.stdout.is_empty());

    // The imported tree is the archive's, as umoci unpacks either.
    let (_, err) =
        run_both(tool(&w, &o, "unstash").args([NAME, "--store", "store", "--to", "ours"]))?;
    assert!(!err.contains("note:"), "the store has it now: {err}");
    run(w
        .cmd("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{NAME}:latest", layout.display()))
        .arg("bundle-archive"))?;
    run(w
        .cmd("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{NAME}:latest", store.display()))
        .arg("bundle-store"))?;
    let ours = dump(&w.path("ours"))?;
    assert_eq!(
        dump(&w.path("bundle-archive/rootfs"))?,
        ours,
        "umoci unpack of the archive"
    );
    assert_eq!(
        dump(&w.path("bundle-store/rootfs"))?,
        ours,
        "umoci unpack of the import"
    );
    assert_eq!(
        as_archived(&o.root())?,
        ours,
        "the tree the original stashed"
    );
    Ok(())
}

#[test]
fn privileged_a_stash_after_import_adds_only_the_difference() -> Result<()> {
    if let Some(why) = why_not() {
        skip!("{why}");
    }
    let o = original()?;
    let w = Workdir::new("legacy-restash")?;
    let root = w.path("root");
    copy_tree(&o.root(), &root)?;
    run(tool(&w, &o, "stash").args(["--import-legacy", "--store", "store", "--quiet"]))?;
    let stash = |w: &Workdir| -> Result<serde_json::Value> {
        json(&run(w.bin("stash").args([
            "--store",
            "store",
            "--container-name",
            NAME,
            "--root",
            "root",
            "--json",
        ]))?)
    };

    // The same tree: every mtime differs from the archive's below the second, nothing else.
    let same = stash(&w)?;
    let touched = same["added"].as_u64().unwrap_or(99)
        + same["changed"].as_u64().unwrap_or(99)
        + same["deleted"].as_u64().unwrap_or(99);
    assert!(
        touched <= 3,
        "a re-stash of the same tree rewrote {touched} entries: {same}"
    );
    assert_ne!(
        dump(&root)?,
        as_archived(&root)?,
        "the tree has sub-second mtimes"
    );

    // A real change is one: new content, and an mtime a whole second later.
    fs::write(root.join("etc/hostname"), "legacy-too\n")?;
    let t = rustix::fs::Timespec {
        tv_sec: 1_600_000_009,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        root.join("etc/shadow"),
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    let changed = stash(&w)?;
    assert_eq!(changed["layers_added"], 1, "{changed}");
    assert_eq!(changed["layers"], 3, "{changed}");
    assert_eq!(changed["added"], 0, "{changed}");
    assert_eq!(changed["deleted"], 0, "{changed}");
    let n = changed["changed"].as_u64().context("changed")?;
    assert!((2..=4).contains(&n), "changed {n}: {changed}");
    run(w
        .bin("unstash")
        .args([NAME, "--store", "store", "--to", "back"]))?;
    let back = dump(&w.path("back"))?;
    assert_eq!(as_archived(&root)?, rounded_as_umoci(&back)?);
    // What the new layer holds comes back exact.
    let now = dump(&root)?;
    for path in ["etc/hostname", "etc/shadow"] {
        let line = |d: &str| {
            d.lines()
                .find(|l| l.split(' ').nth(1) == Some(path))
                .map(str::to_owned)
        };
        assert_eq!(line(&now), line(&back), "{path}");
    }
    Ok(())
}
