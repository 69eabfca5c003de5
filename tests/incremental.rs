//! Incremental stash: a second stash adds one layer with exactly the difference.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;

use crate::skip;
use crate::util::{
    DumpOpts, Workdir, assert_same, build_tree, dump, dump_with, have, is_root, json, run,
};

const V1: &str = r"
d . 755 0:0
d etc 755 0:0
f etc/samesize 644 0:0 aaaa
f etc/mtime 644 0:0 m
f etc/mode 644 0:0 m
f etc/owner 644 0:0 o
f etc/xadd 644 0:0 x
f etc/xdel 644 0:0 x
x etc/xdel user.gone yes
l etc/link target-one
f etc/unchanged 644 0:0 same
f etc/shared 644 0:0 shared
f swap-file-to-dir 644 0:0 was a file
d swap-dir-to-file 755 0:0
f swap-dir-to-file/child 644 0:0 c
d gone 755 0:0
d gone/sub 755 0:0
f gone/sub/deep 644 0:0 d
d fresh 755 0:0
f fresh/old1 644 0:0 1
f fresh/keep 644 0:0 k
t etc/samesize 1000000000.1
t etc/mtime 1000000000.2
t etc/mode 1000000000.3
t etc/owner 1000000000.4
t etc/xadd 1000000000.5
t etc/xdel 1000000000.6
t etc/link 1000000000.7
t etc/unchanged 1000000000.8
t etc/shared 1000000000.9
t fresh/keep 1000000001.1
t fresh 1000000002
t etc 1000000003
t . 1000000004
";

/// Changes the V1 tree in every way the quick check must see.
fn change(root: &Path) -> Result<()> {
    fs::write(root.join("etc/samesize"), "bbbb")?;
    build_tree(
        root,
        "t etc/samesize 1100000000.1\nt etc/mtime 1700000000.5",
    )?;
    fs::set_permissions(root.join("etc/mode"), fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::lchown(root.join("etc/owner"), Some(1000), Some(1000))?;
    rustix::fs::lsetxattr(
        root.join("etc/xadd"),
        "user.new",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )?;
    rustix::fs::lremovexattr(root.join("etc/xdel"), "user.gone")?;
    fs::remove_file(root.join("etc/link"))?;
    std::os::unix::fs::symlink("target-two", root.join("etc/link"))?;
    fs::hard_link(root.join("etc/shared"), root.join("etc/shared-link"))?;
    fs::remove_file(root.join("swap-file-to-dir"))?;
    fs::create_dir(root.join("swap-file-to-dir"))?;
    fs::write(root.join("swap-file-to-dir/child"), "now a dir")?;
    fs::remove_dir_all(root.join("swap-dir-to-file"))?;
    fs::write(root.join("swap-dir-to-file"), "now a file")?;
    fs::remove_dir_all(root.join("gone"))?;
    fs::remove_dir_all(root.join("fresh"))?;
    build_tree(
        root,
        r"
d fresh 755 0:0
f fresh/keep 644 0:0 k
f fresh/new1 644 0:0 new
t fresh/keep 1000000001.1
t swap-file-to-dir/child 1000000005
t swap-file-to-dir 1000000006
t swap-dir-to-file 1000000007
t fresh/new1 1000000008
t fresh 1000000002
t etc 1000000003
t . 1000000004
",
    )?;
    // The xattr and owner changes touched ctime only; their mtimes stay: only the quick
    // check's other fields can see them.
    Ok(())
}

/// The second layer's entries, in order (a snapshot: walk order, then whiteouts). The
/// unchanged directories above them (`./`, `etc/`, `fresh/`) are there too, as buildah and
/// docker write them: containers/storage would make each missing one 0755 root:root.
const SECOND_LAYER: &str = "\
./
etc/
etc/link
etc/mode
etc/mtime
etc/owner
etc/samesize
etc/shared
etc/shared-link
etc/xadd
etc/xdel
fresh/
fresh/new1
swap-dir-to-file
swap-file-to-dir/
swap-file-to-dir/child
fresh/.wh.old1
.wh.gone
";

fn layer_listing(store: &Path, report: &serde_json::Value) -> Result<String> {
    let digest = report["layer"]["digest"].as_str().unwrap();
    let blob = store
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&blob)
        .output()?;
    anyhow::ensure!(out.status.success(), "tar -tzf failed");
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn privileged_second_stash_adds_exactly_the_difference() -> Result<()> {
    if !is_root() {
        skip!("needs root (owner changes)");
    }
    let w = Workdir::new("incremental")?;
    let root = w.tree("root", V1)?;
    let first = json(&run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "inc",
        "--json",
    ]))?)?;
    assert_eq!(first["layers"], 1);
    change(&root)?;
    let second = json(&run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "inc",
        "--json",
    ]))?)?;
    assert_eq!(second["layers_added"], 1);
    assert_eq!(second["layers"], 2);
    assert_eq!(second["deleted"], 2);
    assert_eq!(second["added"], 3, "{second}");
    assert_eq!(second["changed"], 10, "{second}");
    assert_eq!(layer_listing(&w.path("store"), &second)?, SECOND_LAYER);

    // Our unstash gives the changed tree, attribute for attribute.
    run(w
        .bin("unstash")
        .args(["inc", "--store", "store", "--to", "back"]))?;
    assert_same(&dump(&root)?, &dump(&w.path("back"))?)?;
    // So does umoci (to the second: umoci 0.4.7 may not keep nanoseconds).
    if have("umoci") {
        run(w
            .cmd("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:inc:latest", w.path("store").display()))
            .arg("bundle"))?;
        let opts = DumpOpts {
            mtime_seconds: true,
            ..DumpOpts::default()
        };
        assert_same(
            &dump_with(&root, opts)?,
            &dump_with(&w.path("bundle/rootfs"), opts)?,
        )?;
    } else {
        eprintln!("SKIPPED part: umoci not installed");
    }
    Ok(())
}

#[test]
fn no_change_adds_no_layer_and_keeps_the_digest() -> Result<()> {
    let w = Workdir::new("nochange")?;
    w.tree(
        "root",
        "d etc 755 0:0\nf etc/a 644 0:0 a\nl etc/l a\nh etc/h etc/a\n",
    )?;
    let stash = |w: &Workdir| {
        run(w.bin("stash").args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            "same",
            "--json",
        ]))
    };
    let first = json(&stash(&w)?)?;
    let out = w
        .bin("stash")
        .args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            "same",
        ])
        .output()?;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        first["ref"].as_str().unwrap(),
        "the ref is still printed"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no change"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = json(&stash(&w)?)?;
    assert_eq!(again["layers_added"], 0);
    assert_eq!(again["layers"], 1);
    assert_eq!(again["manifest"], first["manifest"]);
    // The layer-index cache is safe to delete, and never trusted over a mismatch.
    fs::remove_dir_all(w.path("store/.stackbuild/cache"))?;
    assert_eq!(
        json(&stash(&w)?)?["layers_added"],
        0,
        "rebuilt from the layers"
    );
    let cache = w.path("store/.stackbuild/cache/index");
    for e in fs::read_dir(&cache)? {
        fs::write(e?.path(), b"{\"garbage\": true}")?;
    }
    assert_eq!(
        json(&stash(&w)?)?["layers_added"],
        0,
        "a damaged cache is rebuilt"
    );
    fs::write(w.path("root/etc/b"), "b")?;
    let changed = json(&stash(&w)?)?;
    assert_eq!(changed["layers_added"], 1);
    assert_eq!(changed["added"], 1);
    Ok(())
}

#[test]
fn checksum_sees_content_that_the_quick_check_misses() -> Result<()> {
    let w = Workdir::new("checksum")?;
    w.tree(
        "root",
        "d etc 755 0:0\nf etc/a 644 0:0 aaaa\nt etc/a 1000000000.5\nt etc 1000000001",
    )?;
    let stash = |extra: &[&str]| {
        let mut c = w.bin("stash");
        c.args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            "sum",
            "--json",
        ])
        .args(extra);
        run(&mut c)
    };
    stash(&[])?;
    // Same size, same mtime, other content: rsync's quick check cannot tell.
    fs::write(w.path("root/etc/a"), "bbbb")?;
    build_tree(&w.path("root"), "t etc/a 1000000000.5\nt etc 1000000001")?;
    assert_eq!(json(&stash(&[])?)?["layers_added"], 0);
    let with = json(&stash(&["--checksum"])?)?;
    assert_eq!(with["layers_added"], 1);
    assert_eq!(with["changed"], 1);
    run(w
        .bin("unstash")
        .args(["sum", "--store", "store", "--to", "back"]))?;
    assert_eq!(fs::read_to_string(w.path("back/etc/a"))?, "bbbb");
    Ok(())
}

#[test]
fn hardlink_groups_stay_right_when_members_change() -> Result<()> {
    let w = Workdir::new("linkgroups")?;
    let root = w.tree(
        "root",
        "d d 755 0:0\nf d/a 644 0:0 one\nh d/b d/a\nh d/c d/a\nf d/x 644 0:0 x\n",
    )?;
    let stash = || {
        run(w.bin("stash").args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            "links",
            "--json",
        ]))
    };
    stash()?;
    // The first name of the group leaves; another name is replaced by a new file; a new
    // name joins the x group.
    fs::remove_file(root.join("d/a"))?;
    fs::remove_file(root.join("d/c"))?;
    fs::write(root.join("d/c"), "separate")?;
    fs::hard_link(root.join("d/x"), root.join("d/y"))?;
    stash()?;
    run(w
        .bin("unstash")
        .args(["links", "--store", "store", "--to", "back"]))?;
    let opts = DumpOpts {
        no_dir_mtime: false,
        ..DumpOpts::default()
    };
    assert_same(&dump_with(&root, opts)?, &dump_with(&w.path("back"), opts)?)?;
    Ok(())
}

/// The reproduction of a second stash podman saw wrongly: a 0700 `root/` and a 0750
/// 1234:5678 `var/lib/app/`, whose files then change (contents only), and a file deleted
/// from `var/lib/app/` whose directory's mtime is then put back.
const HOMES: &str = r"
d . 755 0:0
d root 700 0:0
f root/.bashrc 644 0:0 one
d var 755 0:0
d var/lib 755 0:0
d var/lib/app 750 1234:5678
f var/lib/app/state 640 1234:5678 one
f var/lib/app/old 640 1234:5678 old
d etc 755 0:0
f etc/hostname 644 0:0 host
t root 1500000000.250000000
t var/lib/app 1500000001.500000000
t var/lib 1500000002.750000000
t var 1500000003.125000000
t . 1500000004.0
";

/// The change: contents of two files, one file gone; every directory keeps its metadata.
fn change_homes(root: &Path) -> Result<()> {
    fs::write(root.join("root/.bashrc"), "two")?;
    fs::write(root.join("var/lib/app/state"), "two")?;
    fs::remove_file(root.join("var/lib/app/old"))?;
    build_tree(root, "t var/lib/app 1500000001.500000000\n")
}

/// Stashes `root` as `homes` twice around [`change_homes`]; returns the second report.
fn stash_homes_twice(w: &Workdir) -> Result<serde_json::Value> {
    let root = w.tree("root", HOMES)?;
    let stash = || {
        run(w.bin("stash").args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            "homes",
            "--json",
        ]))
    };
    stash()?;
    change_homes(&root)?;
    let second = json(&stash()?)?;
    assert_eq!(second["layers_added"], 1, "{second}");
    Ok(second)
}

/// The `dump` lines of `dir` by path.
fn lines_by_path(dump: &str) -> std::collections::BTreeMap<String, String> {
    dump.lines()
        .map(|l| (l.split(' ').nth(1).unwrap_or("").to_owned(), l.to_owned()))
        .collect()
}

#[test]
fn privileged_an_incremental_layer_holds_every_parent_with_its_metadata() -> Result<()> {
    if !is_root() {
        skip!("needs root (owners, and GNU tar restoring them)");
    }
    let w = Workdir::new("parents")?;
    let second = stash_homes_twice(&w)?;
    // Only the changes are counted; the parents ride along.
    assert_eq!(second["changed"], 2, "{second}");
    assert_eq!(second["deleted"], 1, "{second}");
    assert_eq!(
        layer_listing(&w.path("store"), &second)?,
        "./\nroot/\nroot/.bashrc\nvar/\nvar/lib/\nvar/lib/app/\nvar/lib/app/state\n\
         var/lib/app/.wh.old\n"
    );
    // GNU tar unpacks the layer alone: every directory in it has the tree's mode, owner and
    // mtime to the nanosecond.
    let digest = second["layer"]["digest"].as_str().unwrap();
    let blob = w
        .path("store/blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    fs::create_dir(w.path("layer"))?;
    run(w.cmd("tar").args(["-xzpf"]).arg(&blob).args([
        "--numeric-owner",
        "--xattrs",
        "-C",
        "layer",
    ]))?;
    let tree = lines_by_path(&dump(&w.path("root"))?);
    let layer = lines_by_path(&dump(&w.path("layer"))?);
    for dir in [".", "root", "var", "var/lib", "var/lib/app"] {
        assert_eq!(
            layer.get(dir),
            tree.get(dir),
            "directory {dir} in the layer"
        );
    }
    // Our unstash is unchanged by the extra entries.
    run(w
        .bin("unstash")
        .args(["homes", "--store", "store", "--to", "back"]))?;
    assert_same(&dump(&w.path("root"))?, &dump(&w.path("back"))?)?;
    Ok(())
}

/// Podman on a storage of its own (overlay driver, temporary root and runroot): never the
/// machine's. Unmounts and removes its images when dropped.
struct Podman {
    conf: std::path::PathBuf,
    graph: std::path::PathBuf,
    run: std::path::PathBuf,
    mounted: Vec<String>,
    /// Holds `run`: podman wants a runroot path shorter than 50 bytes.
    _short: tempfile::TempDir,
}

impl Podman {
    fn new(w: &Workdir) -> Result<Podman> {
        let graph = w.path("podman/graph");
        let short = tempfile::Builder::new()
            .prefix("sbpod")
            .tempdir_in("/tmp")?;
        let run = short.path().to_path_buf();
        fs::create_dir_all(&graph)?;
        let conf = w.path("podman/storage.conf");
        fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                graph.display(),
                run.display()
            ),
        )?;
        Ok(Podman {
            conf,
            graph,
            run,
            mounted: Vec::new(),
            _short: short,
        })
    }

    fn cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new("podman");
        c.env("CONTAINERS_STORAGE_CONF", &self.conf)
            .arg("--root")
            .arg(&self.graph)
            .arg("--runroot")
            .arg(&self.run)
            .args(["--storage-driver", "overlay", "--events-backend", "none"]);
        c
    }

    /// Pulls `source` (`oci:DIR:NAME:TAG`) and mounts it; returns the mount point.
    fn pull_and_mount(&mut self, source: &str) -> Result<std::path::PathBuf> {
        let out = run(self.cmd().args(["pull", "--quiet", source]))?;
        let id = out.lines().last().unwrap_or("").trim().to_owned();
        anyhow::ensure!(!id.is_empty(), "podman pull printed no image id");
        let mnt = run(self.cmd().args(["image", "mount", &id]))?;
        self.mounted.push(id);
        Ok(std::path::PathBuf::from(mnt.trim()))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for id in &self.mounted {
            let _ = self
                .cmd()
                .args(["image", "unmount", "--force", id])
                .output();
        }
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
    }
}

#[test]
fn privileged_podman_sees_a_second_stash_as_we_stashed_it() -> Result<()> {
    if !is_root() {
        skip!("needs root (podman image mount on overlay)");
    }
    if !have("podman") {
        skip!("podman not installed");
    }
    let w = Workdir::new("podman-parents")?;
    stash_homes_twice(&w)?;
    let mut podman = Podman::new(&w)?;
    let mnt = podman.pull_and_mount(&format!("oci:{}:homes:latest", w.path("store").display()))?;
    let tree = lines_by_path(&dump(&w.path("root"))?);
    let seen = lines_by_path(&dump(&mnt)?);
    // The issue's check: /root 0700 and /var/lib/app 0750 1234:5678, with the old mtimes.
    for dir in ["root", "var/lib/app", "var/lib", "var"] {
        assert_eq!(seen.get(dir), tree.get(dir), "podman's {dir}");
    }
    assert!(tree["root"].starts_with("d root 700 0:0 1500000000.250000000"));
    assert!(tree["var/lib/app"].starts_with("d var/lib/app 750 1234:5678 1500000001.500000000"));
    // And the whole image podman mounts is our unstash of it, but for the mount point itself,
    // which containers/storage makes (0555, mounted now).
    run(w
        .bin("unstash")
        .args(["homes", "--store", "store", "--to", "back"]))?;
    let opts = DumpOpts {
        no_root: true,
        ..DumpOpts::default()
    };
    assert_same(&dump_with(&w.path("back"), opts)?, &dump_with(&mnt, opts)?)?;
    Ok(())
}

#[test]
fn privileged_podman_sees_a_second_stash_of_debian_as_our_unstash() -> Result<()> {
    if !is_root() {
        skip!("needs root (podman image mount on overlay, a Debian root's owners)");
    }
    if !have("podman") {
        skip!("podman not installed");
    }
    let w = Workdir::new("podman-debian")?;
    let root = w.path("root");
    crate::util::copy_tree(&crate::util::debian_minbase()?, &root)?;
    // A stash leaves out the contents of dev/ (and proc/, sys/): so does this tree, so that
    // it compares whole.
    for sub in ["dev", "proc", "sys"] {
        for e in fs::read_dir(root.join(sub))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                fs::remove_dir_all(e.path())?;
            } else {
                fs::remove_file(e.path())?;
            }
        }
    }
    let stash = || {
        run(w.bin("stash").args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            "deb",
            "--json",
        ]))
    };
    stash()?;
    // Contents changed deep in directories that keep their metadata, one file deleted (its
    // directory's mtime put back), one directory of another owner added.
    let keep = fs::symlink_metadata(root.join("usr/share/doc/dpkg"))?;
    fs::write(root.join("root/.bashrc"), "# changed\n")?;
    fs::write(root.join("etc/debian_version"), "12.99\n")?;
    let doc = fs::read_dir(root.join("usr/share/doc/dpkg"))?
        .filter_map(std::result::Result::ok)
        .find(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .expect("a file in usr/share/doc/dpkg");
    fs::remove_file(doc.path())?;
    let t = rustix::fs::Timespec {
        tv_sec: std::os::unix::fs::MetadataExt::mtime(&keep),
        tv_nsec: std::os::unix::fs::MetadataExt::mtime_nsec(&keep) as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        root.join("usr/share/doc/dpkg"),
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::empty(),
    )?;
    build_tree(
        &root,
        "d var/lib/app 750 1234:5678\nf var/lib/app/state 640 1234:5678 s\n",
    )?;
    let second = json(&stash()?)?;
    assert_eq!(second["layers_added"], 1, "{second}");

    run(w
        .bin("unstash")
        .args(["deb", "--store", "store", "--to", "back"]))?;
    assert_same(&dump(&root)?, &dump(&w.path("back"))?)?;
    let mut podman = Podman::new(&w)?;
    let mnt = podman.pull_and_mount(&format!("oci:{}:deb:latest", w.path("store").display()))?;
    // Every attribute of every entry, but the mount point itself (containers/storage's).
    let opts = DumpOpts {
        no_root: true,
        ..DumpOpts::default()
    };
    assert_same(&dump_with(&w.path("back"), opts)?, &dump_with(&mnt, opts)?)?;
    Ok(())
}
