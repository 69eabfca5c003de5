//! What every tool owes its users at the edge: `--help` as committed, man pages and
//! completions, JSON that matches its committed schema, pipes, quiet and plain stderr, and a
//! broken pipe that is no error.

use std::fs;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use serde_json::Value;

use crate::jsonschema::validate;
use crate::util::{Workdir, dump, json, output, pipe, run, workspace};

const TOOLS: [&str; 5] = ["stash", "unstash", "stackmerge", "kiwimerge", "stackbuild"];

/// A small tree anyone can stash: owned by whoever runs the test, no devices or security
/// xattrs.
fn tree() -> String {
    let me = format!(
        "{}:{}",
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw()
    );
    format!(
        r"
d . 755 {me}
d etc 755 {me}
f etc/os-release 644 {me} NAME=test\n
f etc/big 644 {me} @200000
l etc/link os-release
d image 755 {me}
f image/config.xml 644 {me} <image schemaversion='7.4' name='cli-os'><description type='system'><author>A</author></description></image>
"
    )
}

fn clap_commands() -> Vec<clap::Command> {
    vec![
        stash::Cli::command(),
        unstash::Cli::command(),
        stackmerge::Cli::command(),
        kiwimerge::Cli::command(),
        stackbuild::Cli::command(),
    ]
}

/// Compares `got` with the committed `tests/snapshots/NAME`; `UPDATE_SNAPSHOTS=1` writes it.
fn snapshot(name: &str, got: &str) -> Result<()> {
    let path = workspace().join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        fs::create_dir_all(path.parent().expect("parent"))?;
        fs::write(&path, got)?;
        return Ok(());
    }
    let want = fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: no snapshot; run with UPDATE_SNAPSHOTS=1 to write it",
            path.display()
        )
    })?;
    if want != got {
        bail!(
            "{name} differs from {} (UPDATE_SNAPSHOTS=1 rewrites it, then review the diff):\n--- want\n{want}\n--- got\n{got}",
            path.display()
        );
    }
    Ok(())
}

#[test]
fn help_of_every_tool_matches_its_snapshot_and_has_examples() -> Result<()> {
    let w = Workdir::new("cli_help")?;
    for tool in TOOLS {
        // A fixed width: clap wraps to the terminal, and a test has none.
        let text = run(w.bin(tool).arg("--help").env("COLUMNS", "100"))?;
        assert!(
            text.contains("Example"),
            "{tool} --help has no examples:\n{text}"
        );
        snapshot(&format!("{tool}.help.txt"), &text)?;
    }
    Ok(())
}

#[test]
fn man_pages_and_completions_generate_for_every_tool() -> Result<()> {
    for mut cmd in clap_commands() {
        let name = cmd.get_name().to_owned();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        let page = String::from_utf8(page)?;
        assert!(
            page.contains(&format!(".TH {name}")),
            "{name}: no man header"
        );
        assert!(
            page.contains("\\-\\-help"),
            "{name}: man page lists no flags"
        );
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, &name, &mut script);
            let script = String::from_utf8(script)?;
            assert!(
                script.contains(&name) && script.contains("help"),
                "{name} {shell}: empty completion"
            );
        }
    }
    Ok(())
}

fn schema_of(tool: &str) -> Result<Value> {
    let path = workspace().join("schema").join(format!("{tool}.json"));
    let text = fs::read_to_string(&path)
        .with_context(|| format!("{}: run `cargo xtask schema`", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn assert_valid(tool: &str, doc: &Value) -> Result<()> {
    let errs = validate(&schema_of(tool)?, doc);
    if !errs.is_empty() {
        bail!(
            "{tool} --json does not match schema/{tool}.json:\n{}\n{doc:#}",
            errs.join("\n")
        );
    }
    assert_eq!(doc["schema"], 1, "{tool}: unversioned output");
    Ok(())
}

#[test]
fn json_of_every_tool_validates_against_its_committed_schema() -> Result<()> {
    let w = Workdir::new("cli_json_schema")?;
    w.tree("root", &tree())?;
    let first = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--root", "root", "--json", "--quiet"]))?)?;
    assert_valid("stash", &first)?;
    assert!(first["layer"].is_object(), "{first}");
    // No change: the layer is null, and that must validate too.
    let again = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--root", "root", "--json", "--quiet"]))?)?;
    assert_valid("stash", &again)?;
    assert!(again["layer"].is_null(), "{again}");
    let list = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--list", "--json"]))?)?;
    assert_valid("stash", &list)?;
    assert_eq!(list["stashes"][0]["name"], "cli-os", "{list}");
    // Store maintenance: each of its documents too.
    for args in [vec!["--verify", "--json"], vec!["--gc", "--json"]] {
        let doc = json(&run(w
            .bin("stash")
            .args(["--store", "store", "-q"])
            .args(&args))?)?;
        assert_valid("stash", &doc)?;
    }

    let unstashed = json(&run(w.bin("unstash").args([
        "cli-os", "--store", "store", "--to", "out", "--json", "--quiet",
    ]))?)?;
    assert_valid("unstash", &unstashed)?;
    let tar = json(&run(w.bin("unstash").args([
        "cli-os", "--store", "store", "--output", "t.tar", "--json", "--quiet",
    ]))?)?;
    assert_valid("unstash", &tar)?;
    assert!(tar["dest"].is_null(), "{tar}");

    fs::create_dir_all(w.path("overlay/etc"))?;
    fs::write(w.path("overlay/etc/os-release"), "NAME=over\n")?;
    let merged = json(&run(w.bin("stackmerge").args([
        "--store",
        "store",
        "--into",
        "merged",
        "cli-os",
        "./overlay",
        "--json",
        "--quiet",
    ]))?)?;
    assert_valid("stackmerge", &merged)?;
    assert!(
        merged["conflicts"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["path"] == "etc/os-release")),
        "{merged}"
    );

    let plan = json(&run(w.bin("stackbuild").args([
        "--store",
        "store",
        "--stash",
        "cli-os",
        "--target-dir",
        "build",
        "--dry-run",
        "--json",
    ]))?)?;
    assert_valid("stackbuild", &plan)?;
    let prepared = json(&crate::util::run_prepare_only(w.bin("stackbuild").args([
        "--store",
        "store",
        "--stash",
        "cli-os",
        "--target-dir",
        "build",
        "--prepare-only",
        "--json",
        "--quiet",
    ]))?)?;
    assert_valid("stackbuild", &prepared)?;

    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "gone",
        "-q",
    ]))?;
    let removed = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--remove", "gone", "--json", "-q"]))?)?;
    assert_valid("stash", &removed)?;

    // The schema is strict: a field it does not know fails, so drift cannot hide.
    let mut extra = first.clone();
    extra["surprise"] = Value::Bool(true);
    assert!(!validate(&schema_of("stash")?, &extra).is_empty());
    Ok(())
}

#[test]
fn stash_json_pipes_into_unstash() -> Result<()> {
    let w = Workdir::new("cli_pipeline")?;
    w.tree("root", &tree())?;
    let report = run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "piped",
        "--json",
    ]))?;
    let out = pipe(
        w.bin("unstash")
            .args(["-", "--store", "store", "--to", "out"]),
        report.as_bytes(),
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "unstash --to prints nothing on stdout"
    );
    assert_eq!(dump(&w.path("root"))?, dump(&w.path("out"))?);
    Ok(())
}

/// No bars, spinners or colours where stderr is not a terminal: plain lines only.
fn assert_plain(tool: &str, stderr: &[u8]) {
    let text = String::from_utf8_lossy(stderr);
    assert!(
        !stderr.contains(&b'\r') && !stderr.contains(&0x1b),
        "{tool}: terminal control codes on a non-terminal stderr: {text:?}"
    );
    assert!(!text.is_empty(), "{tool}: no step lines");
    for line in text.lines() {
        assert!(
            line.starts_with(&format!("{tool}: ")),
            "{tool}: not a step line: {line:?}"
        );
    }
}

#[test]
fn off_a_terminal_progress_is_plain_lines_and_quiet_is_silent() -> Result<()> {
    let w = Workdir::new("cli_plain")?;
    w.tree("root", &tree())?;
    let stash = output(w.bin("stash").args(["--store", "store", "--root", "root"]))?;
    assert!(stash.status.success());
    assert_plain("stash", &stash.stderr);
    let unstash = output(
        w.bin("unstash")
            .args(["cli-os", "--store", "store", "--to", "out"]),
    )?;
    assert!(unstash.status.success());
    assert_plain("unstash", &unstash.stderr);
    let merge = output(
        w.bin("stackmerge")
            .args(["--store", "store", "--into", "m", "cli-os", "./root"]),
    )?;
    assert!(merge.status.success());
    assert_plain("stackmerge", &merge.stderr);

    fs::write(w.path("root/etc/new"), "x")?;
    for (tool, args) in [
        (
            "stash",
            vec!["--store", "store", "--root", "root", "--quiet"],
        ),
        (
            "unstash",
            vec!["cli-os", "--store", "store", "--to", "out2", "-q"],
        ),
        (
            "stackbuild",
            vec![
                "--store",
                "store",
                "--stash",
                "cli-os",
                "--target-dir",
                "b",
                "--dry-run",
                "--quiet",
            ],
        ),
        (
            "stackmerge",
            vec!["--store", "store", "--into", "m2", "cli-os", "./root", "-q"],
        ),
    ] {
        let out = output(w.bin(tool).args(&args))?;
        assert!(out.status.success(), "{tool} {args:?}");
        assert!(
            out.stderr.is_empty(),
            "{tool} --quiet printed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn on_a_terminal_there_are_bars_unless_quiet() -> Result<()> {
    if !crate::util::have("script") {
        crate::skip!("script (util-linux) is not installed: no pseudo-terminal to test with");
    }
    let w = Workdir::new("cli_tty")?;
    w.tree("root", &tree())?;
    let stash = crate::util::bin_dir().join("stash");
    // script(1) runs the command on a pseudo-terminal and copies what it drew to stdout.
    let on_tty = |args: &str| -> Result<Vec<u8>> {
        let out = output(
            w.cmd("script")
                .args(["-qec"])
                .arg(format!("{} {args}", stash.display()))
                .arg("/dev/null")
                .env("TERM", "xterm")
                .env_remove("KIWI_STASH_HOME"),
        )?;
        assert!(
            out.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(out.stdout)
    };
    let drawn = on_tty("--store store --root root --container-name aa")?;
    // Escape codes only: a terminal turns every \n into \r\n anyway.
    assert!(
        drawn.contains(&0x1b),
        "no bar drawn on a terminal: {:?}",
        String::from_utf8_lossy(&drawn)
    );
    let quiet = on_tty("--store store --root root --container-name bb --quiet")?;
    assert!(
        !quiet.contains(&0x1b),
        "--quiet drew on the terminal: {:?}",
        String::from_utf8_lossy(&quiet)
    );
    Ok(())
}

#[test]
fn kiwimerge_quiet_drops_warnings_but_not_the_output() -> Result<()> {
    let w = Workdir::new("cli_kiwimerge_quiet")?;
    let d = workspace().join("tests/fixtures/kiwimerge/examples/01-container-stash-to-vm");
    let (base, overlay) = (d.join("base.xml"), d.join("overlay.xml"));
    let loud = output(w.bin("kiwimerge").arg(&base).arg(&overlay))?;
    assert!(!loud.stderr.is_empty(), "the example warns");
    let quiet = output(w.bin("kiwimerge").arg(&base).arg(&overlay).arg("-q"))?;
    assert_eq!(quiet.status.code(), Some(0));
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    assert_eq!(quiet.stdout, loud.stdout);
    Ok(())
}

#[test]
fn verbose_shows_the_library_at_work() -> Result<()> {
    let w = Workdir::new("cli_verbose")?;
    w.tree("root", &tree())?;
    run(w
        .bin("stash")
        .args(["--store", "store", "--root", "root", "-q"]))?;
    let out = output(
        w.bin("stash")
            .args(["--store", "store", "--root", "root", "-vv"]),
    )?;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("DEBUG") && text.contains("no change"),
        "{text}"
    );
    assert!(
        !out.stderr.contains(&0x1b),
        "colour off a terminal: {text:?}"
    );
    Ok(())
}

#[test]
fn a_closed_pipe_on_stdout_exits_quietly() -> Result<()> {
    let w = Workdir::new("cli_broken_pipe")?;
    w.tree("root", &tree())?;
    run(w
        .bin("stash")
        .args(["--store", "store", "--root", "root", "-q"]))?;
    for args in [
        vec!["stash", "--store", "store", "--list"],
        vec!["stash", "--store", "store", "--list", "--json"],
        vec![
            "unstash", "cli-os", "--store", "store", "--output", "-", "-q",
        ],
        vec![
            "stackbuild",
            "--store",
            "store",
            "--stash",
            "cli-os",
            "--target-dir",
            "b",
            "--dry-run",
        ],
    ] {
        // The reading end is closed before the tool starts: its first write fails with EPIPE.
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let out = w
            .bin(args[0])
            .args(&args[1..])
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("error") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    Ok(())
}

#[test]
fn errors_say_what_and_where_and_exit_as_designed() -> Result<()> {
    let w = Workdir::new("cli_errors")?;
    // Bad usage: 2, one line naming the flag.
    let out = output(w.bin("stash").args(["--root", "missing", "--store", "s"]))?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("--root missing"),
        "{err}"
    );
    // A failure: 1, what failed, then the cause.
    let out = output(
        w.bin("unstash")
            .args(["nothing-here", "--store", "store", "--to", "o"]),
    )?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("nothing-here"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!w.path("o").exists(), "nothing half-written");
    Ok(())
}
