//! stash and unstash: the bit-exact round trip, determinism, interop with umoci and skopeo,
//! names, stores and listings.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use anyhow::Result;

use crate::skip;
use crate::util::{
    DumpOpts, Workdir, assert_same, dump, dump_with, have, is_root, json, output, pipe, run,
};

/// A tree with every file kind and every kind of metadata (needs root for owners, devices
/// and security xattrs).
pub const RICH: &str = r"
d . 755 0:0
d etc 755 0:0
f etc/passwd 644 0:0 root:x:0:0::/root:/bin/sh\n
f etc/shadow 640 0:42 secret\n
h etc/passwd-hardlink etc/passwd
d etc/ssl 700 0:0
f etc/ssl/key 400 0:0 private
d usr 755 0:0
d usr/bin 755 0:0
f usr/bin/su 4755 0:0 @5000
f usr/bin/wall 2755 0:5 @100
f usr/bin/ping 755 0:0 @3000
h usr/bin/ping6 usr/bin/ping
h usr/bin/ping4 usr/bin/ping
l usr/bin/relative ../../etc/passwd
l absolute /etc/passwd
l dangling does/not/exist
d tmp 1777 0:0
d home 755 0:0
d home/user 750 1000:1000
f home/user/file 600 1000:1000 user data\n
f home/user/empty 644 1000:1000
d lib 755 0:0
c lib/null 666 1:3
b lib/sda 660 8:0
p lib/fifo 600
d dev 755 0:0
d proc 555 0:0
d sys 555 0:0
d image 755 0:0
f image/config.xml 644 0:0 <image schemaversion='7.4' name='rich-os'><description type='system'><author>Jane Doe</author></description></image>
x usr/bin/ping security.capability 0x0100000200200000000000000000000000000000
x home/user/file user.comment hello
x etc/shadow system.posix_acl_access 0x0200000001000600ffffffff02000400e803000004000400ffffffff10000400ffffffff20000000ffffffff
x etc/ssl trusted.overlay.test value
x . user.rootattr root
t etc/passwd 1700000000.123456789
t usr/bin/ping 1600000000.000000001
t usr/bin/relative 1500000000.5
t home/user 1400000000.999999999
t etc 1300000000.25
t . 1200000000.75
t lib/fifo 1100000000.1
";

/// Adds what the text spec cannot say: long and non-UTF-8 names, a sparse file, an xattr
/// with an empty value (which a PAX reader following POSIX strictly would take for "unset":
/// ours keeps it, umoci and GNU tar drop it, so only the round trip through our own tools
/// adds it).
pub fn extras(root: &std::path::Path) -> Result<()> {
    let long_dir = root.join("x".repeat(120));
    fs::create_dir(&long_dir)?;
    fs::write(long_dir.join("y".repeat(250)), b"long name")?;
    let raw = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1");
    fs::write(root.join(raw), b"not utf-8")?;
    let f = fs::File::create(root.join("sparse"))?;
    f.set_len(64 << 20)?;
    std::os::unix::fs::FileExt::write_at(&f, b"tail", (64 << 20) - 4)?;
    // Files that end in a hole, or are nothing but one, keep their length on the way out
    // (the extractor sets a length only where its last write falls short).
    let f = fs::File::create(root.join("sparse-head"))?;
    f.set_len(3 << 20)?;
    std::os::unix::fs::FileExt::write_at(&f, b"head", 0)?;
    fs::write(root.join("zeros"), vec![0u8; 10_000])?;
    Ok(())
}

#[test]
fn privileged_roundtrip_every_kind_and_attribute() -> Result<()> {
    if !is_root() {
        skip!("needs root (owners, devices, security xattrs)");
    }
    let w = Workdir::new("roundtrip")?;
    let root = w.tree("root", RICH)?;
    extras(&root)?;
    rustix::fs::lsetxattr(
        root.join("usr/bin/su"),
        "user.empty",
        b"",
        rustix::fs::XattrFlags::empty(),
    )?;
    let before = dump(&root)?;
    let out = run(w
        .bin("stash")
        .args(["--store", "store", "--root", "root", "--json"]))?;
    let report = json(&out)?;
    assert_eq!(report["schema"], 1);
    assert_eq!(report["name"], "rich-os");
    assert_eq!(report["tag"], "latest");
    let reference = report["ref"].as_str().unwrap().to_owned();
    assert_eq!(
        reference,
        format!("oci:{}:rich-os:latest", w.path("store").display())
    );
    run(w.bin("unstash").args([&reference, "--to", "back"]))?;
    assert_same(&before, &dump(&w.path("back"))?)?;
    // Sparse files stay sparse on the way back out.
    let blocks = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(w.path("back/sparse"))?);
    assert!(blocks < 64, "sparse file came back with {blocks} blocks");
    Ok(())
}

#[test]
fn privileged_roundtrip_through_a_pipe_and_a_tar() -> Result<()> {
    if !is_root() {
        skip!("needs root");
    }
    let w = Workdir::new("pipe")?;
    let root = w.tree("root", RICH)?;
    extras(&root)?;
    let out = run(w
        .bin("stash")
        .args(["--store", "store", "--root", "root", "--json", "--quiet"]))?;
    // `stash --json | unstash -`: the JSON object on stdin.
    let piped = pipe(
        w.bin("unstash").args(["-", "--to", "back", "--quiet"]),
        out.as_bytes(),
    )?;
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_same(&dump(&root)?, &dump(&w.path("back"))?)?;
    // --output: one tar that GNU tar extracts to the same tree.
    run(w
        .bin("unstash")
        .args(["rich-os", "--store", "store", "--output", "tree.tar"]))?;
    fs::create_dir(w.path("untar"))?;
    run(w.cmd("tar").args([
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--same-owner",
        "-xpf",
        "tree.tar",
        "-C",
        "untar",
    ]))?;
    // GNU tar keeps POSIX ACLs in SCHILY.acl.* records, not as the raw xattr we store, so it
    // does not restore them from our tar: compare without them.
    let no_acl = |d: String| -> String {
        d.lines()
            .map(|l| {
                l.split(" xattr:system.posix_acl_access=")
                    .next()
                    .unwrap_or(l)
                    .to_owned()
                    + "\n"
            })
            .collect()
    };
    let opts = DumpOpts {
        no_root: true,
        ..DumpOpts::default()
    };
    assert_same(
        &no_acl(dump_with(&root, opts)?),
        &no_acl(dump_with(&w.path("untar"), opts)?),
    )?;
    Ok(())
}

#[test]
fn dev_proc_sys_contents_are_left_out() -> Result<()> {
    let w = Workdir::new("devprocsys")?;
    let root = w.tree(
        "root",
        "d dev 755 0:0\nd proc 755 0:0\nd sys 755 0:0\nd etc 755 0:0\n",
    )?;
    for f in ["dev/fake", "proc/1", "sys/kernel", "etc/kept"] {
        fs::write(root.join(f), b"x")?;
    }
    // Read-only, as on a live system (after the files: an ordinary user could not add them).
    for d in ["proc", "sys"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o555))?;
    }
    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "dps",
    ]))?;
    run(w
        .bin("unstash")
        .args(["dps", "--store", "store", "--to", "back"]))?;
    for gone in ["dev/fake", "proc/1", "sys/kernel"] {
        assert!(!w.path("back").join(gone).exists(), "{gone} was stashed");
    }
    for kept in ["dev", "proc", "sys", "etc/kept"] {
        assert!(w.path("back").join(kept).exists(), "{kept} missing");
    }
    Ok(())
}

/// The layer digest of a small fixed tree. It changes only when the layer format does
/// (tar headers, entry order, gzip blocks): a deliberate change updates it.
const PINNED_LAYER: &str =
    "sha256:76ffd94edfaef1bd3c2b67add0b71f33af30cff6e1e89c74383c11997d1ae6ab";

const FIXED: &str = r"
d . 755 0:0
d a 755 0:0
f a/one 644 0:0 one\n
f a/two 600 0:0 @70000
l a/link one
h a/hard a/one
d b 700 0:0
t a/one 1000000000.5
t a/two 1000000001
t a/link 1000000002
t a 1000000003
t b 1000000004
t . 1000000005
";

#[test]
fn privileged_same_tree_same_digest_at_any_thread_count() -> Result<()> {
    if !is_root() {
        skip!("needs root (the pinned tree is owned by 0:0)");
    }
    let w = Workdir::new("determinism")?;
    w.tree("root", FIXED)?;
    let mut digests = Vec::new();
    for (store, threads) in [("s1", "1"), ("s2", "2"), ("s3", "7")] {
        let out = run(w.bin("stash").args([
            "--store",
            store,
            "--root",
            "root",
            "--container-name",
            "fixed",
            "--threads",
            threads,
            "--json",
        ]))?;
        digests.push(json(&out)?["layer"]["digest"].as_str().unwrap().to_owned());
    }
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[0], digests[2]);
    assert_eq!(
        digests[0], PINNED_LAYER,
        "the layer format changed: update PINNED_LAYER if that was meant"
    );
    // zstd too.
    let z1 = json(&run(w.bin("stash").args([
        "--store",
        "z1",
        "--root",
        "root",
        "--container-name",
        "fixed",
        "--threads",
        "1",
        "--compression",
        "zstd",
        "--json",
    ]))?)?;
    let z2 = json(&run(w.bin("stash").args([
        "--store",
        "z2",
        "--root",
        "root",
        "--container-name",
        "fixed",
        "--threads",
        "2",
        "--compression",
        "zstd",
        "--json",
    ]))?)?;
    assert_eq!(z1["layer"]["digest"], z2["layer"]["digest"]);
    assert_eq!(
        z1["layer"]["diff_id"],
        json(&run(w.bin("stash").args([
            "--store",
            "s4",
            "--root",
            "root",
            "--container-name",
            "fixed",
            "--json"
        ]))?)?["layer"]["diff_id"]
    );
    // SOURCE_DATE_EPOCH makes the manifest reproducible too.
    let m1 = json(&run(w
        .bin("stash")
        .args([
            "--store",
            "e1",
            "--root",
            "root",
            "--container-name",
            "fixed",
            "--json",
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000"))?)?;
    let m2 = json(&run(w
        .bin("stash")
        .args([
            "--store",
            "e2",
            "--root",
            "root",
            "--container-name",
            "fixed",
            "--json",
            "--threads",
            "1",
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000"))?)?;
    assert_eq!(m1["manifest"], m2["manifest"]);
    Ok(())
}

#[test]
fn privileged_umoci_and_skopeo_read_our_stash() -> Result<()> {
    if !is_root() {
        skip!("needs root");
    }
    if !have("umoci") || !have("skopeo") {
        skip!("umoci or skopeo not installed (.ci/run installs them)");
    }
    let w = Workdir::new("interop")?;
    let root = w.tree("root", RICH)?;
    extras(&root)?;
    let store = w.path("store");
    run(w.bin("stash").args(["--store", "store", "--root", "root"]))?;
    // umoci unpack --image STORE:NAME:TAG, as README.md promises.
    run(w
        .cmd("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:rich-os:latest", store.display()))
        .arg("bundle"))?;
    let opts = DumpOpts {
        mtime_seconds: true,
        no_root: false,
        no_dir_mtime: false,
    };
    assert_same(
        &dump_with(&root, opts)?,
        &dump_with(&w.path("bundle/rootfs"), opts)?,
    )?;
    // skopeo inspect sees the labels the original plugin sets.
    let inspect = json(&run(w
        .cmd("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:rich-os:latest", store.display())))?)?;
    assert_eq!(inspect["Labels"]["io.osinside.kiwi.maintainer"], "Jane Doe");
    assert!(
        inspect["Labels"]["io.osinside.kiwi.meta"]
            .as_str()
            .is_some_and(|s| s.contains("stackbuild"))
    );
    let config = json(&run(w
        .cmd("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:rich-os:latest", store.display())))?)?;
    assert_eq!(config["config"]["Entrypoint"][0], "/bin/sh");
    assert_eq!(config["history"][0]["comment"], "KIWI Root Tree Stash");
    assert_eq!(config["history"][0]["author"], "Jane Doe");
    // skopeo copies it to another layout and we read that back: the layout is standard.
    run(w
        .cmd("skopeo")
        .args(["copy"])
        .arg(format!("oci:{}:rich-os:latest", store.display()))
        .arg(format!("oci:{}:copy", w.path("copied").display())))?;
    run(w
        .bin("unstash")
        .arg(format!("oci:{}:copy", w.path("copied").display()))
        .args(["--to", "back"]))?;
    assert_same(&dump(&root)?, &dump(&w.path("back"))?)?;
    Ok(())
}

#[test]
fn privileged_oci_archive_of_the_original_plugin_is_readable_and_listed() -> Result<()> {
    if !is_root() || !have("skopeo") {
        skip!("needs root and skopeo");
    }
    let w = Workdir::new("legacy")?;
    let root = w.tree("root", RICH)?;
    run(w.bin("stash").args(["--store", "store", "--root", "root"]))?;
    // The original keeps HOME/NAME/NAME.tar, an OCI archive written by skopeo.
    fs::create_dir_all(w.path("legacy/old-os"))?;
    run(w
        .cmd("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:rich-os:latest", w.path("store").display()))
        .arg(format!(
            "oci-archive:{}:old-os:latest",
            w.path("legacy/old-os/old-os.tar").display()
        )))?;
    let listing = run(w
        .bin("stash")
        .args(["--list", "--store", "store"])
        .env("STACKBUILD_LEGACY_STASH_HOME", w.path("legacy")))?;
    assert!(listing.contains("rich-os:latest"), "{listing}");
    assert!(
        listing.contains("kiwi-ng system stash archives"),
        "{listing}"
    );
    assert!(listing.contains("old-os:latest"), "{listing}");
    let listed = json(&run(w
        .bin("stash")
        .args(["--list", "--store", "store", "--json"])
        .env("STACKBUILD_LEGACY_STASH_HOME", w.path("legacy")))?)?;
    assert_eq!(listed["stashes"][0]["layers"], 1);
    assert_eq!(listed["legacy"][0]["name"], "old-os");
    let legacy_ref = listed["legacy"][0]["ref"].as_str().unwrap().to_owned();
    run(w.bin("unstash").args([&legacy_ref, "--to", "back"]))?;
    assert_same(&dump(&root)?, &dump(&w.path("back"))?)?;
    // By name, as the original's users have it in their scripts: the store has no old-os.
    let out = output(
        w.bin("unstash")
            .args(["old-os", "--store", "store", "--to", "by-name"])
            .env("STACKBUILD_LEGACY_STASH_HOME", w.path("legacy")),
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("old-os.tar") && err.contains("--import-legacy"),
        "{err}"
    );
    assert_same(&dump(&root)?, &dump(&w.path("by-name"))?)?;
    // Imported: its blobs are the store's already (skopeo copied them), the tag is new.
    let report = json(&run(w
        .bin("stash")
        .args(["--import-legacy", "--store", "store", "--json"])
        .env("STACKBUILD_LEGACY_STASH_HOME", w.path("legacy")))?)?;
    assert_eq!(report["imported"][0]["name"], "old-os", "{report}");
    assert_eq!(report["imported"][0]["layers"], 1, "{report}");
    run(w
        .bin("unstash")
        .args(["old-os", "--store", "store", "--to", "imported"]))?;
    assert_same(&dump(&root)?, &dump(&w.path("imported"))?)?;
    Ok(())
}

#[test]
fn names_tags_and_descriptions() -> Result<()> {
    let w = Workdir::new("names")?;
    w.tree("root", "d etc 755 0:0\n")?;
    // No description and no --container-name: say how to fix it.
    let out = output(w.bin("stash").args(["--store", "store", "--root", "root"]))?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--container-name"), "{err}");
    assert!(
        !w.path("store").exists(),
        "a refused stash created the store"
    );
    // An invalid name quotes the rule.
    let out = output(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name=-bad",
    ]))?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("^[0-9a-zA-Z][0-9a-zA-Z-]*[0-9a-zA-Z]$"));
    // The name comes from the description; an invalid one there is named too.
    fs::create_dir_all(w.path("root/image"))?;
    fs::write(
        w.path("root/image/config.xml"),
        "<image schemaversion='7.4' name='my_os'><description><author>x</author></description></image>",
    )?;
    let out = output(w.bin("stash").args(["--store", "store", "--root", "root"]))?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("image/config.xml"));
    let ok = run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "my-os",
        "--tag",
        "v1.2",
    ]))?;
    assert_eq!(
        ok.trim(),
        format!("oci:{}:my-os:v1.2", w.path("store").display())
    );
    // A missing --root.
    let out = output(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "nope",
        "--container-name",
        "x1",
    ]))?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    Ok(())
}

#[test]
fn a_store_that_is_not_a_layout_is_refused_and_untouched() -> Result<()> {
    let w = Workdir::new("badstore")?;
    w.tree("root", "d etc 755 0:0\n")?;
    fs::create_dir(w.path("notastore"))?;
    fs::write(w.path("notastore/precious"), b"keep me")?;
    let out = output(w.bin("stash").args([
        "--store",
        "notastore",
        "--root",
        "root",
        "--container-name",
        "abc",
    ]))?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an OCI image layout"));
    let names: Vec<_> = fs::read_dir(w.path("notastore"))?
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("precious")]);
    // A world-writable store is refused for writing.
    run(w.bin("stash").args([
        "--store",
        "open",
        "--root",
        "root",
        "--container-name",
        "abc",
    ]))?;
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut fs::metadata(w.path("open"))?.permissions(),
        0o777,
    );
    fs::set_permissions(
        w.path("open"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )?;
    let out = output(w.bin("stash").args([
        "--store",
        "open",
        "--root",
        "root",
        "--container-name",
        "abc",
    ]))?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("writable by group or others"));
    Ok(())
}

#[test]
fn default_store_comes_from_kiwi_stash_home() -> Result<()> {
    let w = Workdir::new("home")?;
    w.tree("root", "d etc 755 0:0\n")?;
    let home = w.path("stashes");
    let out = run(w
        .bin("stash")
        .args(["--root", "root", "--container-name", "envy"])
        .env("KIWI_STASH_HOME", &home))?;
    assert_eq!(out.trim(), format!("oci:{}:envy:latest", home.display()));
    let listing = run(w.bin("stash").arg("--list").env("KIWI_STASH_HOME", &home))?;
    assert!(listing.contains("envy:latest"));
    run(w
        .bin("unstash")
        .args(["envy", "--to", "back"])
        .env("KIWI_STASH_HOME", &home))?;
    assert!(w.path("back/etc").is_dir());
    Ok(())
}

#[test]
fn a_whiteout_name_in_the_tree_is_refused() -> Result<()> {
    let w = Workdir::new("whname")?;
    w.tree("root", "d etc 755 0:0\nf etc/.wh.passwd 644 0:0 x\n")?;
    let out = output(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "wh",
    ]))?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(".wh.passwd") && err.contains("cannot be stashed"),
        "{err}"
    );
    let listing = run(w
        .bin("stash")
        .args(["--list", "--store", "store", "--json"]))?;
    assert_eq!(
        json(&listing)?["stashes"].as_array().map(Vec::len),
        Some(0),
        "nothing was tagged"
    );
    Ok(())
}

/// The store records each layer's checked `diff_id` with its index, and later reads of the
/// layer lean on it instead of hashing the tar again: only for a config that names that
/// same `diff_id`. An image in our own store whose config names another one for a stashed
/// layer is refused, as anywhere else, and leaves no target.
#[test]
fn a_config_naming_another_diff_id_for_a_stashed_layer_is_refused() -> Result<()> {
    use sha2::Digest as _;
    let w = Workdir::new("pin")?;
    w.tree("root", "d etc 755 0:0\nf etc/motd 644 0:0 hello\n")?;
    run(w.bin("stash").args([
        "--quiet",
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "good",
    ]))?;
    // A second image over the same layer blob, with a config that names another diff_id.
    let blob = |d: &str| w.path(&format!("store/blobs/sha256/{}", &d[7..]));
    let put = |bytes: &[u8]| -> Result<(String, usize)> {
        let d = format!("sha256:{:x}", sha2::Sha256::digest(bytes));
        fs::write(blob(&d), bytes)?;
        Ok((d, bytes.len()))
    };
    let mut index = json(&fs::read_to_string(w.path("store/index.json"))?)?;
    let good = index["manifests"][0].clone();
    let mut manifest = json(&fs::read_to_string(blob(
        good["digest"].as_str().unwrap_or(""),
    ))?)?;
    let mut config = json(&fs::read_to_string(blob(
        manifest["config"]["digest"].as_str().unwrap_or(""),
    ))?)?;
    let other = format!("sha256:{:x}", sha2::Sha256::digest(b"another tar"));
    config["rootfs"]["diff_ids"][0] = serde_json::json!(other);
    let (d, n) = put(&serde_json::to_vec(&config)?)?;
    manifest["config"]["digest"] = serde_json::json!(d);
    manifest["config"]["size"] = serde_json::json!(n);
    let (d, n) = put(&serde_json::to_vec(&manifest)?)?;
    let mut forged = good.clone();
    forged["digest"] = serde_json::json!(d);
    forged["size"] = serde_json::json!(n);
    forged["annotations"]["org.opencontainers.image.ref.name"] = serde_json::json!("forged:latest");
    index["manifests"]
        .as_array_mut()
        .expect("a list")
        .push(forged);
    fs::write(w.path("store/index.json"), serde_json::to_vec(&index)?)?;

    // The stashed image reads back (its layer's diff_id pinned by the store's record).
    run(w
        .bin("unstash")
        .args(["--quiet", "good", "--store", "store", "--to", "back"]))?;
    assert_same(&dump(&w.path("root"))?, &dump(&w.path("back"))?)?;
    let out = output(
        w.bin("unstash")
            .args(["--quiet", "forged", "--store", "store", "--to", "bad"]),
    )?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("diff_id") && err.contains(&other) && err.lines().count() == 1,
        "{err}"
    );
    assert!(!w.path("bad").exists(), "a refused image left a target");
    Ok(())
}

#[test]
fn a_store_inside_the_root_is_left_out_and_said_so() -> Result<()> {
    let w = Workdir::new("store-inside")?;
    let me = format!(
        "{}:{}",
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw()
    );
    w.tree(
        "root",
        &format!("d etc 755 {me}\nd var/lib 755 {me}\nf etc/hostname 644 {me} box\nf var/lib/keep 644 {me} k\n"),
    )?;
    // The store at var/lib/kiwi-stash of the root, as `--root /` with the default store has it.
    let stash = || {
        output(w.bin("stash").args([
            "--store",
            "root/var/lib/kiwi-stash",
            "--root",
            "root",
            "--container-name",
            "inside",
            "--json",
        ]))
    };
    let first = stash()?;
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(
        err.lines().any(|l| l.contains("root/var/lib/kiwi-stash")
            && l.contains("the store, inside the root: left out")),
        "not said: {err}"
    );
    // Its own blobs grew the store; the next stash sees no change.
    let second = stash()?;
    assert!(second.status.success());
    assert_eq!(
        json(&String::from_utf8_lossy(&second.stdout))?["layers_added"],
        0
    );
    // The image is the tree without the store.
    run(w.bin("unstash").args([
        "inside",
        "--store",
        "root/var/lib/kiwi-stash",
        "--to",
        "back",
    ]))?;
    let want: String = dump(&w.path("root"))?
        .lines()
        .filter(|l| {
            !l.split(' ')
                .nth(1)
                .unwrap_or("")
                .starts_with("var/lib/kiwi-stash")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_same(&want, &dump(&w.path("back"))?)?;
    Ok(())
}

#[test]
fn thread_counts_above_the_limit_are_refused_or_clamped_never_a_panic() -> Result<()> {
    let w = Workdir::new("threads")?;
    w.tree("root", "f a 644 0:0 @3000000\nf b 644 0:0 b\n")?;
    let stash = |name: &str, threads: Option<&str>, env: Option<&str>| {
        let mut c = w.bin("stash");
        c.args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            name,
            "--json",
        ]);
        if let Some(t) = threads {
            c.args(["--threads", t]);
        }
        if let Some(e) = env {
            c.env("STACKBUILD_THREADS", e);
        }
        output(&mut c)
    };
    let refused = stash("many", Some("100000"), None)?;
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("--threads"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The limit itself, and an environment asking for more (clamped): the same layer as one.
    let one = stash("one", Some("1"), None)?;
    let at_limit = stash("limit", Some("256"), None)?;
    let env = stash("env", None, Some("100000"))?;
    let digest = |o: &std::process::Output| -> Result<String> {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Ok(json(&String::from_utf8_lossy(&o.stdout))?["layer"]["digest"].to_string())
    };
    assert_eq!(digest(&one)?, digest(&at_limit)?);
    assert_eq!(digest(&one)?, digest(&env)?);
    Ok(())
}

#[test]
fn symlinked_store_and_root_are_accepted_by_readers_and_writers_alike() -> Result<()> {
    let w = Workdir::new("symlinks")?;
    w.tree("real-root", "f a 644 0:0 a\n")?;
    fs::create_dir(w.path("real-store"))?;
    std::os::unix::fs::symlink("real-store", w.path("store"))?;
    std::os::unix::fs::symlink("real-root", w.path("root"))?;
    // Writers.
    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "ln",
    ]))?;
    assert!(w.path("real-store/index.json").is_file());
    run(w.bin("stash").args(["--store", "store", "--gc"]))?;
    run(w.bin("stash").args(["--store", "store", "--verify"]))?;
    // Readers.
    let list = run(w.bin("stash").args(["--store", "store", "--list"]))?;
    assert!(list.contains("ln:latest"), "{list}");
    run(w
        .bin("unstash")
        .args(["ln", "--store", "store", "--to", "back"]))?;
    assert_same(&dump(&w.path("real-root"))?, &dump(&w.path("back"))?)?;

    // A symlink to a file: refused by both, with the same words.
    fs::write(w.path("file"), "x")?;
    std::os::unix::fs::symlink("file", w.path("file-link"))?;
    let writer = output(w.bin("stash").args([
        "--store",
        "file-link",
        "--root",
        "root",
        "--container-name",
        "ln",
    ]))?;
    let reader = output(
        w.bin("unstash")
            .args(["ln", "--store", "file-link", "--to", "back2"]),
    )?;
    for (who, o) in [("stash", &writer), ("unstash", &reader)] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{who}: {err}");
        assert!(
            err.contains("a symlink to file, which is not a directory") && err.lines().count() == 1,
            "{who}: {err}"
        );
    }
    let root = output(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "file-link",
        "--container-name",
        "ln",
    ]))?;
    let err = String::from_utf8_lossy(&root.stderr);
    assert_eq!(root.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--root file-link: a symlink to file, which is not a directory"),
        "{err}"
    );
    assert!(!w.path("back2").exists());
    Ok(())
}

#[test]
fn a_damaged_tag_is_listed_as_damaged_and_the_rest_as_usual() -> Result<()> {
    let w = Workdir::new("list-damaged")?;
    w.tree("root", "f a 644 0:0 a\n")?;
    let mut manifests = Vec::new();
    for name in ["good", "dangling"] {
        let r = json(&run(w.bin("stash").args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            name,
            "--tag",
            "t",
            "--json",
        ]))?)?;
        manifests.push(r["manifest"].as_str().unwrap().to_owned());
    }
    // Both name the same manifest: give `dangling` one of its own that is then lost.
    w.tree("root", "f b 644 0:0 b\n")?;
    let r = json(&run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "dangling",
        "--tag",
        "t",
        "--json",
    ]))?)?;
    let lost = r["manifest"].as_str().unwrap().to_owned();
    assert_ne!(lost, manifests[0]);
    fs::remove_file(
        w.path("store/blobs/sha256")
            .join(lost.strip_prefix("sha256:").unwrap()),
    )?;

    let text = output(w.bin("stash").args(["--store", "store", "--list"]))?;
    let (out, err) = (
        String::from_utf8_lossy(&text.stdout),
        String::from_utf8_lossy(&text.stderr),
    );
    assert!(text.status.success(), "{err}");
    let line = |n: &str| {
        out.lines()
            .find(|l| l.starts_with(n))
            .unwrap_or("")
            .to_owned()
    };
    assert!(!line("good:t").contains("DAMAGED"), "{out}");
    assert!(line("dangling:t").contains("DAMAGED: "), "{out}");
    assert!(err.contains("dangling:t is damaged"), "{err}");

    let v = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--list", "--json"]))?)?;
    let rows = v["stashes"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    for r in rows {
        if r["name"] == "good" {
            assert!(r.get("damaged").is_none(), "{r}");
            assert_eq!(r["layers"], 1);
        } else {
            assert!(r["damaged"].as_str().is_some_and(|d| !d.is_empty()), "{r}");
            assert_eq!(r["digest"], lost.as_str());
            assert_eq!(r["layers"], 0);
        }
    }
    Ok(())
}

#[test]
fn the_description_is_not_read_through_a_symlink_out_of_the_root() -> Result<()> {
    let w = Workdir::new("desc-link")?;
    w.tree("root", "d image 755 0:0\nf a 644 0:0 a\n")?;
    fs::write(
        w.path("outside.xml"),
        r#"<image schemaversion="7.4" name="leaked"><description type="system"><author>x</author></description></image>"#,
    )?;
    std::os::unix::fs::symlink(w.path("outside.xml"), w.path("root/image/config.xml"))?;
    let out = output(w.bin("stash").args(["--store", "store", "--root", "root"]))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("image/config.xml: a symlink") && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        !w.path("store/index.json").exists()
            || !run(w.bin("stash").args(["--store", "store", "--list"]))?.contains("leaked")
    );
    Ok(())
}

/// Names that are not UTF-8 are written into PAX as raw bytes, without
/// `hdrcharset=BINARY`; GNU tar and our own unstash both give the same bytes back.
#[test]
fn non_utf8_names_round_trip_without_hdrcharset() -> Result<()> {
    use std::ffi::OsStr;
    if !have("tar") {
        skip!("GNU tar not installed");
    }
    let w = Workdir::new("non-utf8")?;
    let root = w.tree("root", "d . 755 0:0\n")?;
    let dir = root.join(OsStr::from_bytes(b"d\xff\xfe"));
    fs::create_dir(&dir)?;
    fs::write(dir.join(OsStr::from_bytes(b"f\xe9\x80name")), b"x")?;
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"tgt\xff"),
        root.join(OsStr::from_bytes(b"ln\xc3")),
    )?;
    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "raw",
        "-q",
    ]))?;
    run(w
        .bin("unstash")
        .args(["raw", "--store", "store", "--output", "raw.tar", "-q"]))?;
    let tar = fs::read(w.path("raw.tar"))?;
    assert!(
        !tar.windows(10).any(|x| x == b"hdrcharset"),
        "no hdrcharset record"
    );
    let raw: &[u8] = b"path=d\xff\xfe/f\xe9\x80name\n";
    assert!(
        tar.windows(raw.len()).any(|x| x == raw),
        "the raw name in PAX"
    );
    let want = dump(&root)?;
    for locale in ["C", "C.UTF-8"] {
        let to = w.path(&format!("gnu-{locale}"));
        fs::create_dir(&to)?;
        run(w
            .cmd("tar")
            .env("LC_ALL", locale)
            .arg("-xpf")
            .arg(w.path("raw.tar"))
            .arg("-C")
            .arg(&to))?;
        assert_same(&want, &dump(&to)?)?;
    }
    run(w
        .bin("unstash")
        .args(["raw", "--store", "store", "--to", "ours", "-q"]))?;
    assert_same(&want, &dump(&w.path("ours"))?)
}
