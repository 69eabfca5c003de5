//! stackbuild with the real kiwi-ng on a real Debian root.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::skip;
use crate::util::{
    Workdir, copy_tree, debian_minbase, debian_mirror, fixture, have, is_root, json, output, run,
};

/// Stashes the Debian minbase root (with a tbz description) as `debian-min`, and a small
/// tree with a description of its own as `extra-bits`.
fn two_stashes(w: &Workdir) -> Result<()> {
    let root = w.path("debian");
    copy_tree(&debian_minbase()?, &root)?;
    fs::create_dir_all(root.join("image"))?;
    fs::copy(
        fixture("stackbuild/debian-tbz.xml"),
        root.join("image/config.xml"),
    )?;
    let t = Instant::now();
    run(w
        .bin("stash")
        .args(["--store", "store", "--root", "debian", "--quiet"]))?;
    eprintln!(
        "stash of the Debian minbase root: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    w.tree(
        "extra",
        "d etc 755 0:0\nf etc/stackbuild-extra 644 0:0 from the second stash\\n\nd image 755 0:0\n",
    )?;
    fs::copy(
        fixture("stackbuild/extra.xml"),
        w.path("extra/image/config.xml"),
    )?;
    run(w
        .bin("stash")
        .args(["--store", "store", "--root", "extra", "--quiet"]))?;
    Ok(())
}

fn tar_xz(dir: &Path) -> Result<PathBuf> {
    fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.xz"))
        .with_context(|| format!("no *.tar.xz in {}", dir.display()))
}

fn listing(tarball: &Path) -> Result<String> {
    run(std::process::Command::new("tar").arg("-tJf").arg(tarball))
}

fn print_steps(report: &serde_json::Value) {
    for s in report["steps"].as_array().into_iter().flatten() {
        eprintln!(
            "  {:<8} {:>7.1}s",
            s["name"].as_str().unwrap_or("?"),
            s["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    eprintln!(
        "  total    {:>7.1}s",
        report["seconds"].as_f64().unwrap_or(0.0)
    );
}

#[test]
fn privileged_stackbuild_rebuilds_a_stack_with_kiwi() -> Result<()> {
    if !is_root() || !have("kiwi-ng") {
        skip!("needs root and kiwi-ng (.ci/run installs kiwi==11.1.6)");
    }
    let w = Workdir::new("stackbuild-rebuild")?;
    two_stashes(&w)?;
    let out = run(w.bin("stackbuild").args([
        "--store",
        "store",
        "--stash",
        "debian-min",
        "--stash",
        "extra-bits",
        "--target-dir",
        "T",
        "--json",
    ]))?;
    let report = json(&out)?;
    eprintln!(
        "stackbuild rebuild of Debian minbase + a small stash (original with podman: ~60 s):"
    );
    print_steps(&report);
    assert_eq!(report["kiwi_exit"], 0);
    assert_eq!(report["kiwi_command"][1], "system");
    assert_eq!(report["kiwi_command"][2], "create");
    // The last stash's description wins, as in the original.
    let tarball = tar_xz(&w.path("T"))?;
    assert!(
        tarball.to_string_lossy().contains("extra-bits"),
        "{}",
        tarball.display()
    );
    let files = listing(&tarball)?;
    assert!(
        files.contains("etc/stackbuild-extra"),
        "a file of the second stash is missing"
    );
    assert!(
        files.contains("usr/bin/dpkg"),
        "a file of the Debian stash is missing"
    );
    assert!(report["result_files"].as_array().is_some_and(|r| {
        r.iter()
            .any(|f| f.as_str().is_some_and(|f| f.ends_with(".tar.xz")))
    }));
    Ok(())
}

#[test]
fn privileged_stackbuild_merges_descriptions_without_network() -> Result<()> {
    if !is_root() || !have("kiwi-ng") || !have("unshare") {
        skip!("needs root, kiwi-ng and unshare");
    }
    let w = Workdir::new("stackbuild-merge")?;
    two_stashes(&w)?;
    // A rebuild from local stashes needs no repository: run it with no network at all.
    let bin = crate::util::bin_dir().join("stackbuild");
    let out = run(w.cmd("unshare").arg("-n").arg(bin).args([
        "--store",
        "store",
        "--stash",
        "debian-min",
        "--stash",
        "extra-bits",
        "--merge",
        "--target-dir",
        "T",
        "--json",
    ]))?;
    let report = json(&out)?;
    eprintln!("stackbuild --merge, no network:");
    print_steps(&report);
    let merged = fs::read_to_string(w.path("T/build/image-root/image/config.xml"))?;
    assert!(merged.contains(r#"name="extra-bits""#), "{merged}");
    assert!(
        merged.contains("<version>2.0.0</version>"),
        "the upper description's version wins:\n{merged}"
    );
    assert!(
        merged.contains(r#"<package name="base-files"/>"#)
            && merged.contains(r#"<package name="extra-tool"/>"#),
        "packages are the union:\n{merged}"
    );
    assert_eq!(
        report["merged_descriptions"].as_array().map(Vec::len),
        Some(2)
    );
    let tarball = tar_xz(&w.path("T"))?;
    assert!(
        tarball
            .to_string_lossy()
            .contains("extra-bits.x86_64-2.0.0"),
        "{}",
        tarball.display()
    );
    Ok(())
}

#[test]
fn privileged_stackbuild_builds_a_description_on_a_stash_without_one() -> Result<()> {
    if !is_root() || !have("kiwi-ng") {
        skip!("needs root and kiwi-ng");
    }
    let w = Workdir::new("stackbuild-ontop")?;
    // A container-like root: no image/config.xml of its own.
    copy_tree(&debian_minbase()?, &w.path("container"))?;
    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "container",
        "--container-name",
        "debian-container",
        "--quiet",
    ]))?;
    fs::create_dir(w.path("desc"))?;
    let template = fs::read_to_string(fixture("stackbuild/on-top/config.xml"))?;
    fs::write(
        w.path("desc/config.xml"),
        template.replace("@DEBIAN_MIRROR@", &debian_mirror()?),
    )?;
    let out = run(w.bin("stackbuild").args([
        "--store",
        "store",
        "--stash",
        "debian-container",
        "--description",
        "desc",
        "--target-dir",
        "T",
        "--json",
    ]))?;
    let report = json(&out)?;
    eprintln!("stackbuild --description on a stash without one:");
    print_steps(&report);
    assert_eq!(report["kiwi_command"][2], "build");
    assert!(
        report["kiwi_command"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--allow-existing-root")
    );
    let files = listing(&tar_xz(&w.path("T"))?)?;
    assert!(
        files.contains("usr/bin/less"),
        "the description's package is missing"
    );
    assert!(
        files.contains("usr/bin/dpkg"),
        "the stash's files are missing"
    );
    Ok(())
}

fn small_stashes(w: &Workdir) -> Result<()> {
    w.tree("a", "d etc 755 0:0\nf etc/a 644 0:0 a\nd image 755 0:0\n")?;
    fs::copy(
        fixture("stackbuild/debian-tbz.xml"),
        w.path("a/image/config.xml"),
    )?;
    w.tree("b", "d etc 755 0:0\nf etc/b 644 0:0 b\nd image 755 0:0\n")?;
    fs::copy(
        fixture("stackbuild/extra.xml"),
        w.path("b/image/config.xml"),
    )?;
    run(w
        .bin("stash")
        .args(["--store", "store", "--root", "a", "--quiet"]))?;
    run(w
        .bin("stash")
        .args(["--store", "store", "--root", "b", "--quiet"]))?;
    Ok(())
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() -> Result<()> {
    let w = Workdir::new("stackbuild-dry")?;
    small_stashes(&w)?;
    let before = crate::util::dump(&w.path("store"))?;
    let out = run(w.bin("stackbuild").args([
        "--store",
        "store",
        "--stash",
        "debian-min",
        "--stash",
        "extra-bits",
        "--target-dir",
        "T",
        "--dry-run",
        "--profile",
        "b",
        "--profile",
        "a",
        "--profile",
        "b",
        "--type",
        "tbz",
        "--",
        "--signing-key",
        "k",
    ]))?;
    assert!(!w.path("T").exists(), "--dry-run created the target");
    assert_eq!(
        before,
        crate::util::dump(&w.path("store"))?,
        "--dry-run changed the store"
    );
    assert!(
        out.contains("debian-min") && out.contains("extra-bits") && out.contains("sha256:"),
        "{out}"
    );
    let t = w.path("T");
    let want = format!(
        "run: kiwi-ng --type tbz --profile a --profile b system create --root {}/build/image-root --target-dir {} --signing-key k",
        t.display(),
        t.display()
    );
    assert!(out.contains(&want), "{out}\nwant: {want}");
    Ok(())
}

#[test]
fn a_bad_stash_fails_before_anything_is_written() -> Result<()> {
    let w = Workdir::new("stackbuild-bad")?;
    small_stashes(&w)?;
    let out = output(w.bin("stackbuild").args([
        "--store",
        "store",
        "--stash",
        "debian-min",
        "--stash",
        "no-such",
        "--target-dir",
        "T",
    ]))?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such"), "{err}");
    assert!(!w.path("T").exists(), "a failed run left the target behind");
    // An existing image root is refused (exit 2) and left alone.
    fs::create_dir_all(w.path("T2/build/image-root"))?;
    fs::write(w.path("T2/build/image-root/keep"), "x")?;
    let out = output(w.bin("stackbuild").args([
        "--store",
        "store",
        "--stash",
        "debian-min",
        "--target-dir",
        "T2",
    ]))?;
    assert_eq!(out.status.code(), Some(2));
    assert!(w.path("T2/build/image-root/keep").exists());
    Ok(())
}

#[test]
fn without_kiwi_the_root_is_prepared_and_the_command_printed() -> Result<()> {
    let w = Workdir::new("stackbuild-nokiwi")?;
    small_stashes(&w)?;
    // A PATH without kiwi-ng: prepare, say so, print the command, exit 1.
    let out = output(
        w.bin("stackbuild")
            .args([
                "--store",
                "store",
                "--stash",
                "debian-min",
                "--stash",
                "extra-bits",
                "--target-dir",
                "T",
            ])
            .env("PATH", "/nonexistent"),
    )?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("kiwi-ng is not on PATH"));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("kiwi-ng system create --root "));
    assert_eq!(fs::read_to_string(w.path("T/build/image-root/etc/a"))?, "a");
    assert_eq!(fs::read_to_string(w.path("T/build/image-root/etc/b"))?, "b");
    // The last stash's description is the root's, as in the original.
    assert!(
        fs::read_to_string(w.path("T/build/image-root/image/config.xml"))?.contains("extra-bits")
    );
    // --prepare-only stops there by choice: exit 0 (where kiwi-ng is installed).
    let ok = crate::util::run_prepare_only(w.bin("stackbuild").args([
        "--store",
        "store",
        "--stash",
        "debian-min",
        "--target-dir",
        "T3",
        "--prepare-only",
    ]))?;
    assert!(ok.starts_with("kiwi-ng system create"));
    assert!(w.path("T3/build/image-root/etc/a").exists());
    Ok(())
}

/// A description built on top of a usr-merged root with apt bootstrap packages gets a
/// warning before kiwi runs (kiwi would unpack them over /bin and /lib with dpkg-deb); one
/// with image packages only, or a root without the symlinks, does not.
#[test]
fn bootstrap_packages_over_a_usr_merged_root_are_warned_about() -> Result<()> {
    let w = Workdir::new("stackbuild-bootstrap")?;
    w.tree(
        "merged",
        "d usr 755 0:0\nd usr/bin 755 0:0\nd usr/lib 755 0:0\nl bin usr/bin\nl lib usr/lib\n",
    )?;
    w.tree("plain", "d bin 755 0:0\nd lib 755 0:0\n")?;
    for name in ["merged", "plain"] {
        run(w.bin("stash").args([
            "--store",
            "store",
            "--root",
            name,
            "--container-name",
            name,
            "--quiet",
        ]))?;
    }
    let description = |dir: &str, packages: &str| -> Result<()> {
        fs::create_dir_all(w.path(dir))?;
        fs::write(
            w.path(&format!("{dir}/config.xml")),
            format!(
                r#"<?xml version="1.0"?>
<image schemaversion="7.4" name="on-top">
  <description type="system"><author>t</author><contact>t@example.org</contact><specification>t</specification></description>
  <preferences><version>1.0.0</version><packagemanager>apt</packagemanager><type image="tbz"/></preferences>
  {packages}
</image>"#
            ),
        )?;
        Ok(())
    };
    description(
        "with-bootstrap",
        r#"<packages type="bootstrap"><package name="usrmerge"/><package name="dpkg"/></packages>"#,
    )?;
    description(
        "image-only",
        r#"<packages type="image"><package name="less"/></packages>"#,
    )?;
    let prepare = |stash: &str, desc: &str, target: &str| -> Result<String> {
        let out = output(w.bin("stackbuild").args([
            "--store",
            "store",
            "--stash",
            stash,
            "--description",
            desc,
            "--target-dir",
            target,
            "--prepare-only",
        ]))?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        // Exit 0; 1 only where kiwi-ng is not installed (the root is prepared either way).
        assert!(
            out.status.code() == Some(0) || err.contains("kiwi-ng is not on PATH"),
            "{err}"
        );
        assert!(fs::symlink_metadata(w.path(&format!("{target}/build/image-root/bin"))).is_ok());
        Ok(err)
    };
    let err = prepare("merged", "with-bootstrap", "T1")?;
    let warning: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warning.len(), 1, "{err}");
    assert!(
        warning[0].starts_with("stackbuild: warning: ")
            && warning[0].contains("with-bootstrap/config.xml")
            && warning[0].contains("(usrmerge, dpkg)")
            && warning[0].contains("usr-merge symlinks"),
        "{err}"
    );
    for (stash, desc, target) in [
        ("merged", "image-only", "T2"),
        ("plain", "with-bootstrap", "T3"),
    ] {
        let err = prepare(stash, desc, target)?;
        assert!(!err.contains("warning"), "{stash} + {desc}: {err}");
    }
    Ok(())
}
