//! `cargo xtask demo`: the main job on a small sample root, start to end.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, root, sh};

fn bin(name: &str) -> Command {
    Command::new(root().join("target/debug").join(name))
}

/// Runs one of our tools, shows the command, returns its stdout.
fn tool(c: &mut Command) -> Result<String> {
    eprintln!(
        "\n$ {}",
        super::show(c).replace(&root().display().to_string(), ".")
    );
    let out = c.output().with_context(|| "running a tool")?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    if !out.status.success() {
        bail!("failed ({})", out.status);
    }
    Ok(stdout)
}

fn sample_root(dir: &Path, name: &str, files: &[(&str, &str)]) -> Result<()> {
    fs::create_dir_all(dir.join("image"))?;
    for d in ["dev", "proc", "sys", "etc", "usr/bin", "var/lib"] {
        fs::create_dir_all(dir.join(d))?;
    }
    fs::write(
        dir.join("image/config.xml"),
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<image schemaversion=\"7.4\" name=\"{name}\">\n  \
             <description type=\"system\">\n    <author>Demo Builder</author>\n    \
             <contact>demo@example.org</contact>\n    <specification>stackbuild demo root</specification>\n  \
             </description>\n  <preferences>\n    <version>1.0.0</version>\n    \
             <packagemanager>apt</packagemanager>\n    <type image=\"tbz\"/>\n  </preferences>\n</image>\n"
        ),
    )?;
    for (path, content) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent"))?;
        fs::write(&p, content)?;
    }
    Ok(())
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Installs a one-file package into the sample root `dir` with the host's dpkg (no chroot,
/// no root needed), so the stack has real package databases to report on; a machine
/// without dpkg gets roots without one. Returns whether it did.
fn install_package(dir: &Path, work: &Path, name: &str) -> Result<bool> {
    if !have("dpkg") || !have("dpkg-deb") {
        return Ok(false);
    }
    let pkg = work.join(format!("pkg-{name}"));
    fs::create_dir_all(pkg.join("DEBIAN"))?;
    fs::create_dir_all(pkg.join("usr/bin"))?;
    fs::write(
        pkg.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: Demo Builder \
             <demo@example.org>\nDescription: stackbuild demo package {name}\n"
        ),
    )?;
    fs::write(pkg.join("usr/bin").join(name), "#!/bin/sh\necho demo\n")?;
    let deb = work.join(format!("{name}.deb"));
    sh(Command::new("dpkg-deb")
        .args(["-b", "--root-owner-group"])
        .arg(&pkg)
        .arg(&deb))?;
    let admin = dir.join("var/lib/dpkg");
    for d in ["info", "updates"] {
        fs::create_dir_all(admin.join(d))?;
    }
    if !admin.join("status").exists() {
        fs::write(admin.join("status"), "")?;
    }
    sh(Command::new("dpkg")
        .arg(format!("--instdir={}", dir.display()))
        .arg(format!("--admindir={}", admin.display()))
        .args(["--force-script-chrootless", "--force-not-root", "-i"])
        .arg(&deb))?;
    Ok(true)
}

/// Runs the demo.
pub fn run() -> Result<()> {
    sh(cargo().args(["build", "--workspace", "--bins", "--all-features"]))?;
    let work = root().join("target/demo");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let store = work.join("store");
    let base = work.join("base-root");
    sample_root(
        &base,
        "demo-base",
        &[
            ("etc/os-release", "NAME=\"Demo\"\nVERSION_ID=\"1\"\n"),
            ("etc/hostname", "demo\n"),
            ("usr/bin/hello", "#!/bin/sh\necho hello\n"),
            ("var/lib/state", "1\n"),
        ],
    )?;
    std::os::unix::fs::symlink("../usr/bin/hello", base.join("etc/hello-link"))?;
    let with_packages = install_package(&base, &work, "demo-hello")?;
    fs::hard_link(base.join("usr/bin/hello"), base.join("usr/bin/hello-again"))?;

    eprintln!("# 1. stash a root tree (the whole tree: the first layer)");
    let r = tool(
        bin("stash")
            .arg("--store")
            .arg(&store)
            .arg("--root")
            .arg(&base),
    )?;
    eprintln!("\n# 2. change it and stash again: only the difference becomes a layer");
    fs::write(base.join("etc/hostname"), "demo-2\n")?;
    fs::remove_file(base.join("var/lib/state"))?;
    fs::write(base.join("etc/motd"), "welcome\n")?;
    tool(
        bin("stash")
            .arg("--store")
            .arg(&store)
            .arg("--root")
            .arg(&base)
            .arg("--json"),
    )?;
    eprintln!("\n# 3. stash again without a change: no layer, same ref");
    tool(
        bin("stash")
            .arg("--store")
            .arg(&store)
            .arg("--root")
            .arg(&base),
    )?;

    let extra = work.join("extra-root");
    sample_root(
        &extra,
        "demo-extra",
        &[
            ("etc/motd", "extra says hi\n"),
            ("opt/extra/tool", "#!/bin/sh\n"),
        ],
    )?;
    install_package(&extra, &work, "demo-extra-tool")?;
    eprintln!("\n# 4. a second stash with a description of its own");
    tool(
        bin("stash")
            .arg("--store")
            .arg(&store)
            .arg("--root")
            .arg(&extra)
            .args(["--tag", "v1"]),
    )?;

    eprintln!("\n# 5. list the store");
    tool(bin("stash").arg("--list").arg("--store").arg(&store))?;

    eprintln!("\n# 6. unstash: the merged tree of every layer");
    let out = work.join("unstashed");
    tool(bin("unstash").arg(r.trim()).arg("--to").arg(&out))?;
    let hostname = fs::read_to_string(out.join("etc/hostname"))?;
    if hostname != "demo-2\n" || out.join("var/lib/state").exists() {
        bail!("the unstashed tree is not the stashed one");
    }
    eprintln!(
        "unstashed tree in {}: etc/hostname = {}",
        out.display(),
        hostname.trim()
    );

    eprintln!(
        "\n# 7. stackmerge: the two stashes stacked, base lowest, with a conflict report and \
         the package report (by default the upper dpkg database wins, as with rsync: \
         demo-hello is 'lost')"
    );
    let stacked = work.join("stacked");
    tool(
        bin("stackmerge")
            .arg("--store")
            .arg(&store)
            .arg("--into")
            .arg(&stacked)
            .args(["demo-base", "demo-extra:v1", "--json"]),
    )?;
    let motd = fs::read_to_string(stacked.join("etc/motd"))?;
    let hostname = fs::read_to_string(stacked.join("etc/hostname"))?;
    if motd != "extra says hi\n"
        || hostname != "demo-2\n"
        || !stacked.join("opt/extra/tool").exists()
    {
        bail!("the stacked tree is not base with extra on top");
    }
    eprintln!(
        "stacked tree in {}: etc/motd = {} (from the upper stash)",
        stacked.display(),
        motd.trim()
    );

    eprintln!(
        "\n# 8. kiwimerge: the base stash's description (read from the image) with a small overlay"
    );
    let overlay = work.join("overlay.xml");
    fs::write(
        &overlay,
        "<image name=\"demo-merged\">\n  <preferences>\n    <version>2.0.0</version>\n    \
         <timezone>UTC</timezone>\n  </preferences>\n  <packages type=\"image\">\n    \
         <package name=\"vim\"/>\n  </packages>\n</image>\n",
    )?;
    let merged = tool(
        bin("kiwimerge")
            .arg("--store")
            .arg(&store)
            .arg("demo-base")
            .arg(&overlay),
    )?;
    if !merged.contains("demo-merged") || !merged.contains("<version>2.0.0</version>") {
        bail!("kiwimerge did not overlay the description");
    }

    eprintln!("\n# 9. stackbuild: the plan, then the stacked root prepared for kiwi-ng");
    let target = work.join("build");
    tool(
        bin("stackbuild")
            .arg("--store")
            .arg(&store)
            .args([
                "--stash",
                "demo-base",
                "--stash",
                "demo-extra:v1",
                "--merge",
                "--dry-run",
                "--target-dir",
            ])
            .arg(&target),
    )?;
    tool(
        bin("stackbuild")
            .arg("--store")
            .arg(&store)
            .args([
                "--stash",
                "demo-base",
                "--stash",
                "demo-extra:v1",
                "--merge",
                "--prepare-only",
                "--target-dir",
            ])
            .arg(&target),
    )?;
    eprintln!(
        "root prepared in {} (run the command above to build the image with kiwi-ng)",
        target.join("build/image-root").display()
    );
    if with_packages {
        // stackbuild merges package databases by default: both packages are installed.
        let list = tool(
            Command::new("dpkg-query")
                .arg(format!(
                    "--admindir={}",
                    target.join("build/image-root/var/lib/dpkg").display()
                ))
                .args(["-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\\n"]),
        )?;
        if !list.contains("demo-hello 1.0 ii") || !list.contains("demo-extra-tool 1.0 ii") {
            bail!("the prepared root's dpkg database does not list both stashes' packages");
        }
    }

    eprintln!("\n# done: store {}", store.display());
    Ok(())
}
