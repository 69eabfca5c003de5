//! `cargo xtask test [--as-user[=UID]]`: build the binaries, run every test, and close with
//! one honest line: `N passed, N failed, N skipped`.
//!
//! A test that cannot run here (a tool missing, root needed) returns early through the
//! harness's `skip!`, which libtest counts as passed; the harness also appends a line to the
//! file `$STACK_SKIP_LOG` names (tests/util.rs `record_skip`), and this task subtracts those
//! from the passed count.
//!
//! `--as-user` runs the built test executables as an ordinary user (uid 65534, `nobody`,
//! unless given) through `setpriv`, with a fresh `HOME` and `XDG_RUNTIME_DIR`: every test
//! must then pass or skip, and the ones that need root are named `privileged_*` and skip.
//! Doc tests are left out of that mode (they build nothing that depends on the user).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{cargo, sh, show};

/// The variable the integration harness reads (tests/util.rs `SKIP_LOG`).
const SKIP_LOG: &str = "STACK_SKIP_LOG";

/// Totals over every `test result:` line.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds one libtest summary line (`test result: ok. 3 passed; 0 failed; 1 ignored; ...`).
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `c`, copying its stdout through while adding up its `test result:` lines.
/// Returns whether it exited 0.
fn run_counted(c: &mut Command, totals: &mut Totals) -> Result<bool> {
    eprintln!("xtask: $ {}", show(c));
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", show(c)))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        totals.add_line(&line);
        writeln!(out, "{line}")?;
    }
    drop(out);
    Ok(child.wait()?.success())
}

/// The skip log: (test -> reason) for whole skips, and for tests that skipped a part.
fn read_skips(log: &Path) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let text = match std::fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", log.display())),
    };
    let mut whole = BTreeMap::new();
    let mut part = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ' ');
        let (Some(kind), Some(test)) = (f.next(), f.next()) else {
            continue;
        };
        let why = f.next().unwrap_or("").to_owned();
        match kind {
            "skip" => {
                whole.insert(test.to_owned(), why);
            }
            _ => {
                part.insert(test.to_owned(), why);
            }
        }
    }
    // A test that skipped a part and then all of itself counts once, as skipped.
    part.retain(|t, _| !whole.contains_key(t));
    Ok((whole, part))
}

pub fn run(as_user: Option<u32>) -> Result<()> {
    sh(cargo().args(["build", "--workspace", "--all-features", "--bins"]))?;
    let scratch =
        std::env::temp_dir().join(format!("stackbuild-xtask-test-{}", std::process::id()));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    std::fs::create_dir_all(&scratch)?;
    let log = scratch.join("skips");
    std::fs::write(&log, "")?;
    let mut totals = Totals::default();
    let res = match as_user {
        None => run_counted(
            cargo()
                .args(["test", "--workspace", "--all-features", "--no-fail-fast"])
                .env(SKIP_LOG, &log),
            &mut totals,
        ),
        Some(uid) => run_as_user(uid, &scratch, &log, &mut totals),
    };
    let skips = read_skips(&log);
    let _ = std::fs::remove_dir_all(&scratch);
    let ok = res?;
    let (whole, part) = skips?;
    for (test, why) in &whole {
        eprintln!("xtask: skipped {test}: {why}");
    }
    for (test, why) in &part {
        eprintln!("xtask: skipped a part of {test}: {why}");
    }
    let skipped = whole.len() as u64;
    let mut line = format!(
        "{} passed, {} failed, {skipped} skipped",
        totals.passed.saturating_sub(skipped),
        totals.failed
    );
    if totals.ignored > 0 {
        let _ = write!(line, ", {} ignored", totals.ignored);
    }
    if !part.is_empty() {
        let _ = write!(line, " ({} more skipped a part)", part.len());
    }
    println!("xtask: {line}");
    if !ok || totals.failed > 0 {
        bail!("tests failed: {line}");
    }
    Ok(())
}

/// One test executable as cargo built it, and the package directory cargo would run it in.
struct TestExe {
    exe: PathBuf,
    dir: PathBuf,
}

/// Builds the test executables and lists them (`cargo test --no-run`, JSON messages).
fn test_executables() -> Result<Vec<TestExe>> {
    let out = cargo()
        .args([
            "test",
            "--workspace",
            "--all-features",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed ({})", out.status);
    }
    let mut exes = Vec::new();
    for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let msg: serde_json::Value = serde_json::from_slice(line)?;
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(exe), Some(manifest)) =
            (msg["executable"].as_str(), msg["manifest_path"].as_str())
        else {
            continue;
        };
        let dir = Path::new(manifest)
            .parent()
            .context("manifest path")?
            .to_path_buf();
        exes.push(TestExe {
            exe: PathBuf::from(exe),
            dir,
        });
    }
    if exes.is_empty() {
        bail!("cargo test --no-run listed no test executables");
    }
    Ok(exes)
}

/// Runs every test executable as `uid` (its own group too, no supplementary groups).
fn run_as_user(uid: u32, scratch: &Path, log: &Path, totals: &mut Totals) -> Result<bool> {
    if !rustix::process::geteuid().is_root() {
        bail!("--as-user needs root (it drops to the given user with setpriv)");
    }
    if uid == 0 {
        bail!("--as-user: uid 0 is root; name an ordinary user's uid");
    }
    // What a login session gives a user: a home and a private runtime directory (skopeo
    // looks for auth.json under $XDG_RUNTIME_DIR, else in root's /run/containers).
    let home = scratch.join("home");
    let runtime = scratch.join("run");
    std::fs::create_dir_all(&home)?;
    std::fs::create_dir_all(&runtime)?;
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    for p in [scratch, &home, &runtime, log] {
        std::os::unix::fs::chown(p, Some(uid), Some(uid))
            .with_context(|| format!("chown {}", p.display()))?;
    }
    let mut ok = true;
    for t in test_executables()? {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(&t.exe)
            .current_dir(&t.dir)
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("CARGO_MANIFEST_DIR", &t.dir)
            .env(SKIP_LOG, log);
        ok &= run_counted(&mut c, totals)?;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_add_up() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 106 passed; 25 failed; 2 ignored; 0 measured; 0 filtered out; finished in 15.67s");
        t.add_line("running 3 tests");
        t.add_line("test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        assert_eq!((t.passed, t.failed, t.ignored), (107, 26, 2));
    }

    #[test]
    fn skips_are_read_once_each() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-skips-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("skips");
        std::fs::write(
            &log,
            "skip a::one needs root\npart b::two kiwi missing: oracle not run\npart a::one x\n",
        )?;
        let (whole, part) = read_skips(&log)?;
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(
            whole.into_iter().collect::<Vec<_>>(),
            [("a::one".to_owned(), "needs root".to_owned())]
        );
        assert_eq!(part.keys().collect::<Vec<_>>(), ["b::two"]);
        Ok(())
    }
}
