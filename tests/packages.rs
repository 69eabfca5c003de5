//! Package databases in a stack, on real databases made by the real tools: probe packages
//! built here with `dpkg-deb -b` and `rpmbuild`, installed with `dpkg --root` into copies of
//! the Debian minbase root and with `rpm --root` into empty roots, stashed, stacked, and the
//! result checked with `dpkg-query`, `dpkg --audit`, `update-alternatives`, `rpm -qa`,
//! `rpm -qf` and `rpm -V`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::skip;
use crate::util::{Workdir, copy_tree, debian_minbase, have, is_root, json, output, run};

/// A probe .deb: `files` are (path, content) under the package root; `postinst` a script.
fn deb(
    w: &Workdir,
    name: &str,
    version: &str,
    files: &[(&str, &str)],
    postinst: Option<&str>,
) -> Result<PathBuf> {
    let dir = w.path(&format!("debs/{name}-{version}"));
    fs::create_dir_all(dir.join("DEBIAN"))?;
    fs::write(
        dir.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Probe <probe@example.org>\n\
             Section: misc\nPriority: optional\nDescription: stackbuild probe {name}\n a package made by a test\n"
        ),
    )?;
    for (path, content) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent"))?;
        fs::write(&p, content)?;
    }
    if let Some(script) = postinst {
        let p = dir.join("DEBIAN/postinst");
        fs::write(&p, format!("#!/bin/sh\nset -e\n{script}\n"))?;
        run(Command::new("chmod").arg("755").arg(&p))?;
    }
    let out = w.path(&format!("debs/{name}_{version}_all.deb"));
    run(Command::new("dpkg-deb")
        .args(["-b", "--root-owner-group", "-Zgzip"])
        .arg(&dir)
        .arg(&out))?;
    Ok(out)
}

/// A copy of the Debian minbase root at `rel` with `debs` installed by dpkg.
fn debian_with(w: &Workdir, rel: &str, debs: &[&Path]) -> Result<PathBuf> {
    let root = w.path(rel);
    copy_tree(&debian_minbase()?, &root)?;
    if !debs.is_empty() {
        run(Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg("--force-unsafe-io")
            .arg("-i")
            .args(debs))?;
    }
    Ok(root)
}

fn stash(w: &Workdir, root: &str, name: &str) -> Result<()> {
    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        root,
        "--container-name",
        name,
        "--quiet",
    ]))?;
    Ok(())
}

/// `dpkg-query -W` of a root: `name version` lines.
fn installed(root: &Path) -> Result<String> {
    run(Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\\n"]))
}

fn has(list: &str, line: &str) -> bool {
    list.lines().any(|l| l.trim_end() == line)
}

/// The `packages.managers[manager]` entry of a report.
fn manager<'a>(report: &'a serde_json::Value, name: &str) -> Result<&'a serde_json::Value> {
    report["packages"]["managers"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["manager"] == name))
        .with_context(|| format!("no {name} in {}", report["packages"]))
}

fn change<'a>(m: &'a serde_json::Value, package: &str) -> Option<&'a serde_json::Value> {
    m["changes"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["package"] == package))
}

/// Two Debian stashes: `deb-low` with probe-low, probe-ver 1.0, probe-own-x (owns
/// /usr/bin/probe-shared) and the probe-alt alternative at priority 10; `deb-high` with
/// probe-high, probe-ver 2.0, probe-own-y (owns the same path) and probe-alt-two at 20.
fn two_debian_stashes(w: &Workdir) -> Result<()> {
    let low = deb(
        w,
        "probe-low",
        "1.0",
        &[("usr/bin/probe-low", "low\n")],
        None,
    )?;
    let v1 = deb(
        w,
        "probe-ver",
        "1.0",
        &[("usr/share/probe-ver/v", "1\n")],
        None,
    )?;
    let v2 = deb(
        w,
        "probe-ver",
        "2.0",
        &[("usr/share/probe-ver/v", "2.0\n")],
        None,
    )?;
    let x = deb(
        w,
        "probe-own-x",
        "1",
        &[("usr/bin/probe-shared", "x\n")],
        None,
    )?;
    let y = deb(
        w,
        "probe-own-y",
        "1",
        &[("usr/bin/probe-shared", "y\n")],
        None,
    )?;
    let high = deb(
        w,
        "probe-high",
        "1.0",
        &[("usr/bin/probe-high", "high\n")],
        None,
    )?;
    let alt1 = deb(
        w,
        "probe-alt-one",
        "1",
        &[("usr/bin/probe-alt-one", "one\n")],
        Some(
            "update-alternatives --install /usr/bin/probe-alt probe-alt /usr/bin/probe-alt-one 10",
        ),
    )?;
    let alt2 = deb(
        w,
        "probe-alt-two",
        "1",
        &[("usr/bin/probe-alt-two", "two\n")],
        Some(
            "update-alternatives --install /usr/bin/probe-alt probe-alt /usr/bin/probe-alt-two 20",
        ),
    )?;
    debian_with(w, "low", &[&low, &v1, &x, &alt1])?;
    debian_with(w, "high", &[&high, &v2, &y, &alt2])?;
    stash(w, "low", "deb-low")?;
    stash(w, "high", "deb-high")?;
    Ok(())
}

fn need_dpkg() -> bool {
    is_root() && have("dpkg") && have("dpkg-deb") && have("mmdebstrap")
}

#[test]
fn privileged_packages_dpkg_merge_report_and_strict() -> Result<()> {
    if !need_dpkg() {
        skip!("needs root, dpkg and mmdebstrap (a Debian minbase root)");
    }
    let w = Workdir::new("packages-dpkg")?;
    two_debian_stashes(&w)?;

    // The default: report, no file changed. The result's database is deb-high's, whole.
    let out = run(w.bin("stackmerge").args([
        "--store", "store", "--into", "plain", "deb-low", "deb-high", "--json",
    ]))?;
    let report = json(&out)?;
    assert_eq!(report["packages"]["mode"], "report");
    ensure!(
        fs::read(w.path("plain/var/lib/dpkg/status"))?
            == fs::read(w.path("high/var/lib/dpkg/status"))?,
        "report mode changed the status file"
    );
    let m = manager(&report, "dpkg")?;
    assert_eq!(m["database"], "var/lib/dpkg/status");
    assert_eq!(m["result"]["merged"], false);
    let lost = change(m, "probe-low").context("probe-low not reported")?;
    assert_eq!(lost["change"], "lost");
    assert_eq!(lost["versions"], serde_json::json!(["1.0"]));
    assert_eq!(lost["sources"], serde_json::json!(["deb-low:latest"]));
    assert_eq!(
        change(m, "probe-high").context("probe-high")?["change"],
        "added"
    );
    let ver = change(m, "probe-ver").context("probe-ver")?;
    assert_eq!(ver["change"], "upgraded");
    assert_eq!(ver["versions"], serde_json::json!(["1.0", "2.0"]));
    assert_eq!(
        m["file_conflicts"],
        serde_json::json!([{"path": "usr/bin/probe-shared",
                             "packages": ["probe-own-x", "probe-own-y"],
                             "winner": "probe-own-y"}])
    );
    // The minbase packages both sources share are not listed.
    ensure!(
        change(m, "dpkg").is_none(),
        "an unchanged package is listed"
    );
    let counts: Vec<u64> = m["sources"]
        .as_array()
        .context("sources")?
        .iter()
        .map(|s| s["packages"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(counts.len(), 2);
    assert_eq!(m["result"]["packages"], counts[1]);
    let plain = installed(&w.path("plain"))?;
    ensure!(!plain.contains("probe-low"), "{plain}");
    ensure!(w.path("plain/usr/bin/probe-low").exists());

    // --strict refuses that stack before writing anything.
    let o = output(w.bin("stackmerge").args([
        "--store", "store", "--into", "strict", "deb-low", "deb-high", "--strict",
    ]))?;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(err.contains("--strict") && err.contains("lost"), "{err}");
    ensure!(!w.path("strict").exists(), "--strict wrote the target");

    // --packages merge: every package of both, dpkg agrees with the files on disk.
    let out = run(w.bin("stackmerge").args([
        "--store",
        "store",
        "--into",
        "merged",
        "deb-low",
        "deb-high",
        "--json",
        "--packages",
        "merge",
    ]))?;
    let report = json(&out)?;
    assert_eq!(report["packages"]["mode"], "merge");
    let m = manager(&report, "dpkg")?;
    assert_eq!(m["result"]["merged"], true);

    // --dry-run says the same before anything is written: the same sources, conflicts and
    // package changes, the database file it would write, and no target.
    let dry = json(&run(w.bin("stackmerge").args([
        "--store",
        "store",
        "--into",
        "dry",
        "deb-low",
        "deb-high",
        "--json",
        "--packages",
        "merge",
        "--dry-run",
    ]))?)?;
    ensure!(!w.path("dry").exists(), "--dry-run wrote the target");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(report["dry_run"], false);
    assert_eq!(dry["totals"], report["totals"]);
    assert_eq!(dry["conflicts"], report["conflicts"]);
    assert_eq!(dry["packages"], report["packages"]);
    assert_eq!(dry["stats"]["files"], 0);
    let text = run(w.bin("stackmerge").args([
        "--store",
        "store",
        "--into",
        "dry",
        "deb-low",
        "deb-high",
        "--packages",
        "merge",
        "--dry-run",
    ]))?;
    ensure!(
        text.starts_with("# stackmerge plan (nothing is written)\n")
            && text.contains("source 2: deb-high:latest image sha256:")
            && text.contains("packages (dpkg, var/lib/dpkg/status)")
            && text.contains("packages: write var/lib/dpkg/status (merged)"),
        "{text}"
    );
    ensure!(!w.path("dry").exists(), "--dry-run wrote the target");
    assert_eq!(
        change(m, "probe-low").context("probe-low")?["change"],
        "kept"
    );
    assert_eq!(
        m["result"]["packages"],
        counts[1] + 3,
        "probe-low, probe-own-x, probe-alt-one"
    );
    let merged = installed(&w.path("merged"))?;
    for line in [
        "probe-low 1.0 ii",
        "probe-high 1.0 ii",
        "probe-ver 2.0 ii",
        "probe-own-x 1 ii",
        "probe-own-y 1 ii",
        "probe-alt-one 1 ii",
        "probe-alt-two 1 ii",
    ] {
        ensure!(has(&merged, line), "{line} missing from:\n{merged}");
    }
    let admindir = format!("--admindir={}", w.path("merged/var/lib/dpkg").display());
    let audit = run(Command::new("dpkg").arg(&admindir).arg("--audit"))?;
    ensure!(audit.trim().is_empty(), "dpkg --audit: {audit}");
    let owner = run(Command::new("dpkg-query")
        .arg(&admindir)
        .args(["-S", "/usr/bin/probe-low"]))?;
    ensure!(owner.starts_with("probe-low:"), "{owner}");
    let owners = run(Command::new("dpkg-query")
        .arg(&admindir)
        .args(["-S", "/usr/bin/probe-shared"]))?;
    ensure!(
        owners.contains("probe-own-x") && owners.contains("probe-own-y"),
        "{owners}"
    );
    // Every minbase package is still there, once.
    let base = installed(&w.path("low"))?;
    for l in base.lines().filter(|l| !l.starts_with("probe-")) {
        ensure!(
            merged.lines().filter(|m| *m == l).count() == 1,
            "{l} not once in:\n{merged}"
        );
    }
    // Sorted by name, as dpkg writes it, and each stanza as deb-low or deb-high wrote it.
    let status = fs::read_to_string(w.path("merged/var/lib/dpkg/status"))?;
    let names: Vec<&str> = status
        .lines()
        .filter_map(|l| l.strip_prefix("Package: "))
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    let low_status = fs::read_to_string(w.path("low/var/lib/dpkg/status"))?;
    let stanza = low_status
        .split("\n\n")
        .find(|s| s.starts_with("Package: probe-low\n"))
        .context("probe-low stanza")?;
    ensure!(
        status.contains(&format!("{stanza}\n\n")),
        "stanza not verbatim"
    );
    // The alternative knows both choices.
    let q = run(Command::new("update-alternatives")
        .arg("--root")
        .arg(w.path("merged"))
        .args(["--query", "probe-alt"]))?;
    ensure!(
        q.contains("Alternative: /usr/bin/probe-alt-one\nPriority: 10")
            && q.contains("Alternative: /usr/bin/probe-alt-two\nPriority: 20"),
        "{q}"
    );

    // Downgrade: the other order.
    let out = run(w.bin("stackmerge").args([
        "--store",
        "store",
        "--into",
        "down",
        "deb-high",
        "deb-low",
        "--json",
        "--packages",
        "merge",
    ]))?;
    let report = json(&out)?;
    let m = manager(&report, "dpkg")?;
    let ver = change(m, "probe-ver").context("probe-ver")?;
    assert_eq!(ver["change"], "downgraded");
    assert_eq!(ver["versions"], serde_json::json!(["2.0", "1.0"]));
    ensure!(has(&installed(&w.path("down"))?, "probe-ver 1.0 ii"));
    let o = output(w.bin("stackmerge").args([
        "--store",
        "store",
        "--into",
        "down-strict",
        "deb-high",
        "deb-low",
        "--packages",
        "merge",
        "--strict",
    ]))?;
    assert_eq!(o.status.code(), Some(1));
    ensure!(String::from_utf8_lossy(&o.stderr).contains("downgraded"));

    // --packages off: no section content, no file changed.
    let out = run(w.bin("stackmerge").args([
        "--store",
        "store",
        "--into",
        "off",
        "deb-low",
        "deb-high",
        "--json",
        "--packages",
        "off",
    ]))?;
    let report = json(&out)?;
    assert_eq!(
        report["packages"],
        serde_json::json!({"mode": "off", "managers": [], "warnings": []})
    );
    Ok(())
}

#[test]
fn privileged_packages_three_sources_image_over_directory() -> Result<()> {
    if !need_dpkg() {
        skip!("needs root, dpkg and mmdebstrap (a Debian minbase root)");
    }
    let w = Workdir::new("packages-three")?;
    two_debian_stashes(&w)?;
    let dir_deb = deb(
        &w,
        "probe-dir",
        "3.0",
        &[("usr/bin/probe-dir", "dir\n")],
        None,
    )?;
    let dir = debian_with(&w, "dirsrc", &[&dir_deb])?;
    let out = run(w
        .bin("stackmerge")
        .args([
            "--store",
            "store",
            "--into",
            "three",
            "--json",
            "--packages",
            "merge",
        ])
        .arg(&dir)
        .args(["deb-low", "deb-high"]))?;
    let report = json(&out)?;
    let m = manager(&report, "dpkg")?;
    let sources: Vec<&str> = m["sources"]
        .as_array()
        .context("sources")?
        .iter()
        .filter_map(|s| s["source"].as_str())
        .collect();
    assert_eq!(
        sources,
        [
            dir.to_string_lossy().as_ref(),
            "deb-low:latest",
            "deb-high:latest"
        ]
    );
    let c = change(m, "probe-dir").context("probe-dir")?;
    assert_eq!(c["change"], "kept");
    assert_eq!(c["sources"], serde_json::json!([dir.to_string_lossy()]));
    let list = installed(&w.path("three"))?;
    for line in [
        "probe-dir 3.0 ii",
        "probe-low 1.0 ii",
        "probe-high 1.0 ii",
        "probe-ver 2.0 ii",
    ] {
        ensure!(has(&list, line), "{line} missing from:\n{list}");
    }
    let audit = run(Command::new("dpkg")
        .arg(format!(
            "--admindir={}",
            w.path("three/var/lib/dpkg").display()
        ))
        .arg("--audit"))?;
    ensure!(audit.trim().is_empty(), "dpkg --audit: {audit}");
    Ok(())
}

/// PATH without the directories that hold kiwi-ng.
fn path_without_kiwi() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|d| !d.join("kiwi-ng").exists())
        .collect();
    std::env::join_paths(dirs)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn privileged_packages_stackbuild_merges_by_default_without_kiwi() -> Result<()> {
    if !need_dpkg() {
        skip!("needs root, dpkg and mmdebstrap (a Debian minbase root)");
    }
    let w = Workdir::new("packages-stackbuild")?;
    two_debian_stashes(&w)?;
    let path = path_without_kiwi();
    // --dry-run shows the package changes and writes nothing.
    let plan = run(w
        .bin("stackbuild")
        .env("PATH", &path)
        .args([
            "--store", "store", "--stash", "deb-low", "--stash", "deb-high",
        ])
        .args(["--target-dir", "T", "--dry-run"]))?;
    ensure!(
        plan.contains("packages (dpkg, var/lib/dpkg/status)"),
        "{plan}"
    );
    ensure!(
        plan.contains("packages: write var/lib/dpkg/status (merged)"),
        "{plan}"
    );
    ensure!(!w.path("T").exists(), "--dry-run wrote");
    // --prepare-only exits 0 without kiwi-ng, and the root's database is merged.
    let o = output(
        w.bin("stackbuild")
            .env("PATH", &path)
            .args([
                "--store", "store", "--stash", "deb-low", "--stash", "deb-high",
            ])
            .args(["--target-dir", "T", "--prepare-only", "--json"]),
    )?;
    ensure!(
        o.status.success(),
        "stackbuild --prepare-only without kiwi-ng: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let report = json(&String::from_utf8_lossy(&o.stdout))?;
    assert_eq!(report["kiwi_ran"], false);
    assert_eq!(report["packages"]["mode"], "merge");
    assert_eq!(manager(&report, "dpkg")?["result"]["merged"], true);
    let list = installed(&w.path("T/build/image-root"))?;
    for line in ["probe-low 1.0 ii", "probe-high 1.0 ii", "probe-ver 2.0 ii"] {
        ensure!(has(&list, line), "{line} missing from:\n{list}");
    }
    // Without --prepare-only, a missing kiwi-ng is still a failed build.
    let o = output(w.bin("stackbuild").env("PATH", &path).args([
        "--store",
        "store",
        "--stash",
        "deb-low",
        "--target-dir",
        "T2",
    ]))?;
    assert_eq!(o.status.code(), Some(1));
    ensure!(w.path("T2/build/image-root/usr/bin/dpkg").exists());
    // --packages report keeps the upper stash's database.
    run(w
        .bin("stackbuild")
        .env("PATH", &path)
        .args([
            "--store", "store", "--stash", "deb-low", "--stash", "deb-high",
        ])
        .args([
            "--target-dir",
            "T3",
            "--prepare-only",
            "--packages",
            "report",
        ]))?;
    ensure!(!installed(&w.path("T3/build/image-root"))?.contains("probe-low"));
    Ok(())
}

/// A probe .rpm (noarch) owning `files` ((path, content)); returns its path.
fn rpm_pkg(w: &Workdir, name: &str, version: &str, files: &[(&str, &str)]) -> Result<PathBuf> {
    let top = w.path("rpmbuild");
    let spec = w.path(&format!("rpmbuild/{name}-{version}.spec"));
    fs::create_dir_all(&top)?;
    let mut install = String::new();
    let mut list = String::new();
    for (path, content) in files {
        install.push_str(&format!(
            "mkdir -p %{{buildroot}}/$(dirname {path})\nprintf '{content}' > %{{buildroot}}/{path}\n"
        ));
        list.push_str(&format!("/{path}\n"));
    }
    fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: {version}\nRelease: 1\nSummary: stackbuild probe\nLicense: MIT\n\
             BuildArch: noarch\n%description\na package made by a test\n%install\n{install}\
             %files\n{list}"
        ),
    )?;
    run(Command::new("rpmbuild")
        .args(["-bb", "--quiet"])
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("--define")
        .arg(format!("_rpmdir {}", top.join("out").display()))
        .arg(&spec))?;
    Ok(top.join(format!("out/noarch/{name}-{version}-1.noarch.rpm")))
}

/// `rpm --root ROOT --dbpath /usr/lib/sysimage/rpm` with the sqlite backend.
fn rpm(root: &Path) -> Command {
    let mut c = Command::new("rpm");
    c.arg("--root")
        .arg(root)
        .args(["--dbpath", "/usr/lib/sysimage/rpm"])
        .args(["--define", "_db_backend sqlite"]);
    c
}

/// An empty root at `rel` with `rpms` installed by rpm into a new sqlite database.
fn rpm_root(w: &Workdir, rel: &str, rpms: &[&Path]) -> Result<PathBuf> {
    let root = w.path(rel);
    fs::create_dir_all(&root)?;
    run(rpm(&root).args(["-i", "--nodeps"]).args(rpms))?;
    Ok(root)
}

#[test]
fn privileged_packages_rpm_sqlite_merge() -> Result<()> {
    if !is_root() || !have("rpm") || !have("rpmbuild") || !have("rpmdb") {
        skip!("needs root, rpm and rpmbuild (apt-get install rpm)");
    }
    let w = Workdir::new("packages-rpm")?;
    let pa = rpm_pkg(&w, "probe-a", "1.0", &[("usr/bin/probe-a", "a\\n")])?;
    let v1 = rpm_pkg(&w, "probe-ver", "1.0", &[("usr/share/probe-ver/v", "1\\n")])?;
    let v2 = rpm_pkg(
        &w,
        "probe-ver",
        "2.0",
        // Not the size of 1.0's: a file of one size and mtime second (rpmbuild sets it) is
        // the same file to rsync's quick check, which stackmerge follows, keeping the lower.
        &[("usr/share/probe-ver/v", "2.0\\n")],
    )?;
    let px = rpm_pkg(&w, "probe-own-x", "1", &[("usr/bin/probe-shared", "x\\n")])?;
    let py = rpm_pkg(&w, "probe-own-y", "1", &[("usr/bin/probe-shared", "yy\\n")])?;
    let pb = rpm_pkg(&w, "probe-b", "1.0", &[("usr/bin/probe-b", "b\\n")])?;
    rpm_root(&w, "low", &[&pa, &v1, &px])?;
    // A second apart: two databases of one size and one mtime second are the same file to
    // rsync's quick check, which keeps the lower one's content (stackmerge does as rsync).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    rpm_root(&w, "high", &[&pb, &v2, &py])?;
    stash(&w, "low", "rpm-low")?;
    stash(&w, "high", "rpm-high")?;

    // The default keeps rpm-high's database and says what it lost.
    let report = json(&run(w.bin("stackmerge").args([
        "--store", "store", "--into", "plain", "rpm-low", "rpm-high", "--json",
    ]))?)?;
    let m = manager(&report, "rpm")?;
    assert_eq!(m["database"], "usr/lib/sysimage/rpm/rpmdb.sqlite");
    assert_eq!(
        m["sources"],
        serde_json::json!([{"source": "rpm-low:latest", "packages": 3},
                           {"source": "rpm-high:latest", "packages": 3}])
    );
    assert_eq!(
        m["result"],
        serde_json::json!({"packages": 3, "merged": false})
    );
    assert_eq!(change(m, "probe-a").context("probe-a")?["change"], "lost");
    assert_eq!(change(m, "probe-a").context("probe-a")?["arch"], "noarch");
    assert_eq!(change(m, "probe-b").context("probe-b")?["change"], "added");
    let ver = change(m, "probe-ver").context("probe-ver")?;
    assert_eq!(ver["change"], "upgraded");
    assert_eq!(ver["versions"], serde_json::json!(["1.0-1", "2.0-1"]));
    assert_eq!(
        m["file_conflicts"],
        serde_json::json!([{"path": "usr/bin/probe-shared",
                             "packages": ["probe-own-x", "probe-own-y"],
                             "winner": "probe-own-y"}])
    );
    let qa = run(rpm(&w.path("plain")).arg("-qa"))?;
    ensure!(!qa.contains("probe-a"), "{qa}");

    // Merged: rpm itself lists, finds and verifies every package of both.
    let report = json(&run(w.bin("stackmerge").args([
        "--store",
        "store",
        "--into",
        "merged",
        "rpm-low",
        "rpm-high",
        "--json",
        "--packages",
        "merge",
    ]))?)?;
    let m = manager(&report, "rpm")?;
    assert_eq!(
        m["result"],
        serde_json::json!({"packages": 5, "merged": true})
    );
    let root = w.path("merged");
    let mut qa: Vec<String> = run(rpm(&root).arg("-qa"))?
        .lines()
        .map(str::to_owned)
        .collect();
    qa.sort();
    assert_eq!(
        qa,
        [
            "probe-a-1.0-1.noarch",
            "probe-b-1.0-1.noarch",
            "probe-own-x-1-1.noarch",
            "probe-own-y-1-1.noarch",
            "probe-ver-2.0-1.noarch"
        ]
    );
    assert_eq!(
        run(rpm(&root).args(["-qf", "/usr/bin/probe-a"]))?.trim(),
        "probe-a-1.0-1.noarch"
    );
    let owners = run(rpm(&root).args(["-qf", "/usr/bin/probe-shared"]))?;
    ensure!(
        owners.contains("probe-own-x") && owners.contains("probe-own-y"),
        "{owners}"
    );
    for p in ["probe-a", "probe-b", "probe-ver", "probe-own-y"] {
        let v = output(rpm(&root).args(["-V", p]))?;
        ensure!(
            v.status.success() && v.stdout.is_empty(),
            "rpm -V {p}: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }
    // probe-own-x's file is probe-own-y's: rpm -V says so.
    let v = output(rpm(&root).args(["-V", "probe-own-x"]))?;
    ensure!(
        !v.status.success(),
        "rpm -V probe-own-x passed over probe-own-y's file"
    );
    let check = output(Command::new("rpmdb").arg("--root").arg(&root).args([
        "--dbpath",
        "/usr/lib/sysimage/rpm",
        "--verifydb",
    ]))?;
    ensure!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The other order downgrades probe-ver; the result says 1.0.
    let report = json(&run(w.bin("stackmerge").args([
        "--store",
        "store",
        "--into",
        "down",
        "rpm-high",
        "rpm-low",
        "--json",
        "--packages",
        "merge",
    ]))?)?;
    let ver_change = change(manager(&report, "rpm")?, "probe-ver")
        .context("probe-ver")?
        .clone();
    assert_eq!(ver_change["change"], "downgraded");
    let q = run(rpm(&w.path("down")).args(["-q", "probe-ver"]))?;
    assert_eq!(q.trim(), "probe-ver-1.0-1.noarch");
    Ok(())
}

/// A copy of the Debian minbase root at `rel` with `package` installed by apt-get inside
/// it (chroot), from the mirror this machine's apt uses.
fn debian_apt(w: &Workdir, rel: &str, package: &str) -> Result<PathBuf> {
    let root = w.path(rel);
    copy_tree(&debian_minbase()?, &root)?;
    fs::write(
        root.join("etc/apt/sources.list"),
        format!("deb {} bookworm main\n", crate::util::debian_mirror()?),
    )?;
    fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf"))?;
    run(Command::new("chroot")
        .arg(&root)
        .args(["apt-get", "update", "-qq"]))?;
    run(Command::new("chroot")
        .arg(&root)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args([
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            package,
        ]))?;
    Ok(root)
}

#[test]
fn privileged_packages_apt_installs_stack_with_stackbuild() -> Result<()> {
    if !need_dpkg() || !have("chroot") {
        skip!("needs root, dpkg, chroot and mmdebstrap (a Debian minbase root)");
    }
    let w = Workdir::new("packages-apt")?;
    debian_apt(&w, "with-less", "less")?;
    debian_apt(&w, "with-nano", "nano")?;
    stash(&w, "with-less", "deb-less")?;
    stash(&w, "with-nano", "deb-nano")?;

    // stackmerge's default: the issue as a user meets it, now said in the report.
    let o = output(w.bin("stackmerge").args([
        "--store", "store", "--into", "plain", "deb-less", "deb-nano", "--json",
    ]))?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!(
        "stackmerge deb-less deb-nano (report):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report = json(&String::from_utf8_lossy(&o.stdout))?;
    let m = manager(&report, "dpkg")?;
    assert_eq!(change(m, "less").context("less")?["change"], "lost");
    assert_eq!(change(m, "nano").context("nano")?["change"], "added");

    // stackbuild merges: apt and dpkg agree with the files on disk.
    let o = output(
        w.bin("stackbuild")
            .env("PATH", path_without_kiwi())
            .args([
                "--store", "store", "--stash", "deb-less", "--stash", "deb-nano",
            ])
            .args(["--target-dir", "T", "--prepare-only", "--json"]),
    )?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!(
        "stackbuild (merge):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report = json(&String::from_utf8_lossy(&o.stdout))?;
    let m = manager(&report, "dpkg")?;
    assert_eq!(change(m, "less").context("less")?["change"], "kept");
    let root = w.path("T/build/image-root");
    run(Command::new("chroot").arg(&root).args(["apt-get", "check"]))?;
    let listed = run(Command::new("chroot")
        .arg(&root)
        .args(["dpkg", "-l", "less", "nano"]))?;
    for p in ["less", "nano"] {
        ensure!(
            listed.lines().any(|x| x.starts_with(&format!("ii  {p} "))),
            "{p} not installed:\n{listed}"
        );
    }
    let audit = run(Command::new("chroot").arg(&root).args(["dpkg", "--audit"]))?;
    ensure!(audit.trim().is_empty(), "dpkg --audit: {audit}");
    let owner = run(Command::new("chroot")
        .arg(&root)
        .args(["dpkg", "-S", "/usr/bin/less"]))?;
    ensure!(owner.starts_with("less:"), "{owner}");
    // apt's auto-installed marks of both stashes survive (autoremove sees both).
    let auto = |r: &Path| -> Result<std::collections::BTreeSet<String>> {
        Ok(
            run(Command::new("chroot").arg(r).args(["apt-mark", "showauto"]))?
                .lines()
                .map(str::to_owned)
                .collect(),
        )
    };
    let mut want = auto(&w.path("with-less"))?;
    want.extend(auto(&w.path("with-nano"))?);
    assert_eq!(auto(&root)?, want);
    Ok(())
}

#[test]
fn mismatched_distributions_and_usr_merge_are_warned_and_strict_fails() -> Result<()> {
    let w = Workdir::new("packages-warnings")?;
    w.tree(
        "deb",
        "d etc 755 0:0\nf etc/os-release 644 0:0 ID=debian\\nVERSION_ID=\"12\"\\n\nd usr 755 0:0\nd usr/bin 755 0:0\nl bin usr/bin\n",
    )?;
    w.tree(
        "suse",
        "d etc 755 0:0\nf etc/os-release 644 0:0 ID=\"opensuse-leap\"\\nVERSION_ID=\"15.6\"\\n\nd bin 755 0:0\n",
    )?;
    let out = run(w
        .bin("stackmerge")
        .args(["--into", "out", "--json", "./deb", "./suse"]))?;
    let report = json(&out)?;
    let warnings = report["packages"]["warnings"]
        .as_array()
        .context("warnings")?;
    let kinds: Vec<&str> = warnings.iter().filter_map(|w| w["kind"].as_str()).collect();
    assert_eq!(kinds, ["distribution", "usr-merge"]);
    let detail = warnings[0]["detail"].as_str().unwrap_or_default();
    ensure!(
        detail.contains("./deb is debian 12") && detail.contains("./suse is opensuse-leap 15.6"),
        "{detail}"
    );
    assert_eq!(report["packages"]["managers"], serde_json::json!([]));
    let o = output(
        w.bin("stackmerge")
            .args(["--into", "strict", "--strict", "./deb", "./suse"]),
    )?;
    assert_eq!(o.status.code(), Some(1));
    ensure!(String::from_utf8_lossy(&o.stderr).contains("2 warning(s)"));
    ensure!(!w.path("strict").exists());
    Ok(())
}
