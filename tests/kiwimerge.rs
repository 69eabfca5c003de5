//! `kiwimerge` through its binary: the six worked examples byte for byte, exit codes,
//! hostile XML, and a corpus of real descriptions checked against kiwi itself.
//!
//! The kiwi cross-checks need `python3 -m pip install kiwi==11.1.6`; without it they record
//! a skip (see `util::record_skip`). The corpus is not part of the repository: it is used
//! where a checkout has it beside the workspace (see `shared_dir`), else those tests skip.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

/// The directory holding the built binaries: `$STACK_BIN_DIR`, else the test exe's
/// directory minus `deps/`.
fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STACK_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test exe path");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn kiwimerge_path() -> PathBuf {
    let p = bin_dir().join("kiwimerge");
    assert!(
        p.exists(),
        "{} missing: run `cargo build -p kiwimerge` or `cargo xtask test`",
        p.display()
    );
    p
}

fn kiwimerge<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(kiwimerge_path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running kiwimerge")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kiwimerge/examples")
}

fn shared_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/kiwimerge");
    d.join("corpus").is_dir().then_some(d)
}

/// Records that `test` skipped a part of itself, or (`whole`) all of it: the caller then
/// returns. `cargo xtask test` counts whole skips as skipped and notes partial ones.
fn skip(why: &str, whole: bool) {
    crate::util::record_skip(whole, why);
}

fn have_kiwi() -> bool {
    Command::new("python3")
        .args(["-c", "import kiwi"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python(script: &str, args: &[&Path]) -> Result<Output> {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .context("running python3")
}

/// Loads each file with kiwi's `XMLDescription.load()` (RELAX NG + Schematron); prints
/// `REJECT <path>: <reason>` per rejected file.
const KIWI_LOAD: &str = r"
import sys, logging
logging.disable(logging.CRITICAL)
from kiwi.xml_description import XMLDescription
for p in sys.argv[1:]:
    try:
        XMLDescription(p).load()
        print('OK ' + p)
    except Exception as e:
        print('REJECT ' + p + ': ' + type(e).__name__ + ': ' + str(e).splitlines()[0] if str(e) else '')
";

/// kiwi's own include + upgrade of argv[1] compared with argv[2] as element trees
/// (attributes as sets, comments and whitespace ignored). Exit 1 with a diff otherwise.
const KIWI_ORACLE: &str = r"
import sys, logging, difflib
logging.disable(logging.CRITICAL)
from lxml import etree
from kiwi.markup import Markup
def norm(e):
    kids = [c for c in e if isinstance(c.tag, str)]
    text = (e.text or '').strip() if not kids else ''
    return (e.tag, tuple(sorted(e.attrib.items())), text, tuple(norm(c) for c in kids))
def flat(t, p=''):
    out = [p + t[0] + ' ' + repr(t[1]) + ' ' + t[2]]
    for c in t[3]:
        out += flat(c, p + '  ')
    return out
m = Markup.new(sys.argv[1])
ref = norm(etree.parse(m.get_xml_description()).getroot())
got = norm(etree.parse(sys.argv[2]).getroot())
if ref != got:
    print('\n'.join(difflib.unified_diff(flat(ref), flat(got), 'kiwi', 'kiwimerge', lineterm='')))
    sys.exit(1)
";

/// Runs kiwi's `check_image_type_unique` for the default selection and every profile of
/// argv[1]; prints the selections that conflict, comma separated (`<default>` for none).
const KIWI_TYPE_UNIQUE: &str = r"
import sys, logging
logging.disable(logging.CRITICAL)
from kiwi.xml_description import XMLDescription
from kiwi.xml_state import XMLState
from kiwi.runtime_checker import RuntimeChecker
xml = XMLDescription(sys.argv[1]).load()
profiles = [p.get_name() for ps in xml.get_profiles() for p in ps.get_profile()]
bad = []
for sel in [None] + [[p] for p in profiles]:
    try:
        RuntimeChecker(XMLState(xml, sel)).check_image_type_unique()
    except Exception as e:
        if 'Conflicting image type' not in str(e):
            raise
        bad.append(sel[0] if sel else '<default>')
print(','.join(bad))
";

/// Compares what kiwi's `XMLState` getters say about argv[1] and argv[2] for the default
/// selection and every profile: build type (exported), version, package manager, locale,
/// package lists, users with groups, repositories, collections, archives, ignores,
/// drivers, strip lists. Prints `SELECTIONS n`, then one `DIFF` line per difference.
const KIWI_EQUIVALENT: &str = r"
import sys, logging, io
logging.disable(logging.CRITICAL)
from kiwi.xml_description import XMLDescription
from kiwi.xml_state import XMLState
def facts(path):
    xml = XMLDescription(path).load()
    profiles = [p.get_name() for ps in xml.get_profiles() for p in ps.get_profile()]
    out = {}
    for sel in [None] + [[p] for p in profiles]:
        name = sel[0] if sel else '<default>'
        try:
            st = XMLState(xml, sel)
        except Exception as e:
            out[name] = type(e).__name__
            continue
        def g(f):
            try:
                return f()
            except Exception as e:
                return 'raises ' + type(e).__name__
        def typ():
            b = io.StringIO()
            st.build_type.export(b, 0)
            return b.getvalue()
        def repos():
            return [(r.get_alias(), r.get_type(), r.get_priority(), r.get_imageinclude(), r.get_source().get_path(), r.get_profiles(), r.get_arch()) for r in st.get_repository_sections()]
        def users():
            return sorted((u.get_name(), u.get_password(), u.get_home(), tuple(sorted(st.get_user_groups(u.get_name())))) for u in st.get_users())
        out[name] = dict(
            type=g(typ), version=g(st.get_image_version), pm=g(st.get_package_manager), locale=g(st.get_locale),
            system=g(st.get_system_packages), bootstrap=g(st.get_bootstrap_packages),
            delete=g(lambda: st.get_to_become_deleted_packages(True)), uninstall=g(lambda: st.get_to_become_deleted_packages(False)),
            users=g(users), repos=g(repos), collections=g(st.get_system_collections), bcollections=g(st.get_bootstrap_collections),
            archives=g(st.get_system_archives), barchives=g(st.get_bootstrap_archives), ignores=g(st.get_system_ignore_packages),
            drivers=g(st.get_drivers_list), strip=g(lambda: [st.get_strip_list(t) for t in ('delete', 'tools', 'libs')]),
        )
    return out
a, b = facts(sys.argv[1]), facts(sys.argv[2])
bad = [(k, f) for k in a for f in (a[k] if isinstance(a[k], dict) else {'': 0}) if (a[k].get(f) if isinstance(a[k], dict) else a[k]) != (b.get(k, {}).get(f) if isinstance(b.get(k), dict) else b.get(k))]
print('SELECTIONS', len(a))
for k, f in bad:
    print('DIFF', k, f, repr(a[k][f] if isinstance(a[k], dict) else a[k])[:300], '!=', repr(b[k][f] if isinstance(b[k], dict) else b[k])[:300])
sys.exit(1 if bad or a.keys() != b.keys() else 0)
";

#[test]
fn kiwimerge_examples_byte_exact() -> Result<()> {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir())? {
        let dir = entry?.path();
        let base = ["base.xml", "base.kiwi"]
            .iter()
            .map(|b| dir.join(b))
            .find(|p| p.exists())
            .context("no base")?;
        let out = kiwimerge([base.as_path(), &dir.join("overlay.xml")])?;
        ensure!(
            out.status.code() == Some(0),
            "{}: exit {:?}: {}",
            dir.display(),
            out.status,
            stderr(&out)
        );
        let want = std::fs::read(dir.join("expected.xml"))?;
        ensure!(
            out.stdout == want,
            "{}: output differs from expected.xml:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        seen += 1;
    }
    assert_eq!(seen, 6, "six worked examples");
    Ok(())
}

#[test]
fn kiwimerge_examples_warnings() -> Result<()> {
    let ex = examples_dir();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "01-container-stash-to-vm",
            "base.xml",
            &["W6: ", "<users> dropped: it became empty"],
        ),
        ("03-repos-users", "base.xml", &["<users> dropped"]),
        (
            "04-profiles-preferences",
            "base.xml",
            &["W6: ", "primary removed from <type image=\"oem\""],
        ),
    ];
    for (dir, base, wants) in cases {
        let d = ex.join(dir);
        let out = kiwimerge([d.join(base), d.join("overlay.xml")])?;
        let err = stderr(&out);
        for w in *wants {
            ensure!(err.contains(w), "{dir}: want {w:?} in stderr:\n{err}");
        }
        ensure!(
            err.lines().all(|l| l.starts_with("kiwimerge: warning: ")),
            "{dir}: {err}"
        );
    }
    Ok(())
}

#[test]
fn kiwimerge_output_file_is_written_atomically() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = examples_dir().join("05-containerconfig");
    let out_path = tmp.path().join("merged.xml");
    let out = kiwimerge([
        d.join("base.xml").as_os_str(),
        d.join("overlay.xml").as_os_str(),
        "-o".as_ref(),
        out_path.as_os_str(),
    ])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(out.stdout.is_empty(), "nothing on stdout with -o");
    assert_eq!(
        std::fs::read(&out_path)?,
        std::fs::read(d.join("expected.xml"))?
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("merged.xml")],
        "no temp file left behind"
    );
    Ok(())
}

/// Writes `files` (relative path, content) under a fresh temp dir.
fn tree(files: &[(&str, &str)]) -> Result<tempfile::TempDir> {
    let tmp = tempfile::tempdir()?;
    for (p, s) in files {
        let path = tmp.path().join(p);
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(path, s)?;
    }
    Ok(tmp)
}

const BASE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<image schemaversion="8.5" name="b">
    <description type="system"><author>A</author><contact>c</contact><specification>s</specification></description>
    <preferences><version>1</version><packagemanager>zypper</packagemanager><type image="oem"/></preferences>
    <packages type="image"><package name="a"/></packages>
</image>
"#;

#[test]
fn kiwimerge_exit_codes_and_diagnostics() -> Result<()> {
    struct Case {
        name: &'static str,
        files: &'static [(&'static str, &'static str)],
        args: &'static [&'static str],
        code: i32,
        stderr_has: &'static [&'static str],
        stdout_has: &'static [&'static str],
        stdout_lacks: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "nested include",
            files: &[
                ("o.xml", r#"<image><include from="this://i.xml"/></image>"#),
                ("i.xml", r#"<image><include from="this://j.xml"/></image>"#),
                ("j.xml", "<image/>"),
            ],
            args: &["base.xml", "o.xml"],
            code: 2,
            stderr_has: &["nested <include"],
            stdout_has: &[],
            stdout_lacks: &["<image"],
        },
        Case {
            name: "missing include",
            files: &[(
                "o.xml",
                r#"<image><include from="this://nope.xml"/></image>"#,
            )],
            args: &["base.xml", "o.xml"],
            code: 2,
            stderr_has: &["nope.xml"],
            stdout_has: &[],
            stdout_lacks: &["<image"],
        },
        Case {
            name: "unknown km attribute",
            files: &[(
                "o.xml",
                r#"<image xmlns:k="urn:kiwimerge:1"><packages type="image" k:frobnicate="1"/></image>"#,
            )],
            args: &["base.xml", "o.xml"],
            code: 2,
            stderr_has: &["unknown kiwimerge directive"],
            stdout_has: &[],
            stdout_lacks: &["<image"],
        },
        Case {
            name: "unknown km:action",
            files: &[(
                "o.xml",
                r#"<image xmlns:km="urn:kiwimerge:1"><packages type="image"><package name="a" km:action="delete"/></packages></image>"#,
            )],
            args: &["base.xml", "o.xml"],
            code: 2,
            stderr_has: &["unknown action"],
            stdout_has: &[],
            stdout_lacks: &[],
        },
        Case {
            name: "schema version below an input",
            files: &[("o.xml", "<image/>")],
            args: &["--schema-version", "8.4", "base.xml", "o.xml"],
            code: 2,
            stderr_has: &["--schema-version 8.4 is lower"],
            stdout_has: &[],
            stdout_lacks: &[],
        },
        Case {
            name: "schema 6.8 refused",
            files: &[("o.xml", r#"<image schemaversion="6.8"/>"#)],
            args: &["base.xml", "o.xml"],
            code: 2,
            stderr_has: &["schemaversion 6.8 < 7.4; upgrade it first"],
            stdout_has: &[],
            stdout_lacks: &[],
        },
        Case {
            name: "not a description",
            files: &[("o.xml", "<foo/>")],
            args: &["base.xml", "o.xml"],
            code: 2,
            stderr_has: &["not <image>"],
            stdout_has: &[],
            stdout_lacks: &[],
        },
        Case {
            name: "image ref that is not there",
            files: &[],
            args: &["--store", "no-store", "missing-stash:1", "base.xml"],
            code: 2,
            stderr_has: &["missing-stash:1"],
            stdout_has: &[],
            stdout_lacks: &[],
        },
        Case {
            name: "remove without match warns",
            files: &[(
                "o.xml",
                r#"<image xmlns:km="urn:kiwimerge:1"><packages type="image"><package name="zz" km:action="remove"/></packages></image>"#,
            )],
            args: &["base.xml", "o.xml"],
            code: 0,
            stderr_has: &[
                "kiwimerge: warning: W4: ",
                "no <package name=\"zz\"> in the base",
            ],
            stdout_has: &["<package name=\"a\"/>"],
            stdout_lacks: &["zz", "km:"],
        },
        Case {
            name: "strict makes warnings exit 1, output still written",
            files: &[(
                "o.xml",
                r#"<image xmlns:km="urn:kiwimerge:1"><packages type="image"><package name="zz" km:action="remove"/></packages></image>"#,
            )],
            args: &["--strict", "base.xml", "o.xml"],
            code: 1,
            stderr_has: &["W4"],
            stdout_has: &["</image>\n"],
            stdout_lacks: &[],
        },
        Case {
            name: "remove inside a new section",
            files: &[(
                "o.xml",
                r#"<image xmlns:km="urn:kiwimerge:1"><packages type="delete"><package name="x" km:action="remove"/><package name="y"/></packages></image>"#,
            )],
            args: &["base.xml", "o.xml"],
            code: 0,
            stderr_has: &["W4: ", "its parent <packages type=\"delete\"> is new"],
            stdout_has: &["<packages type=\"delete\">\n        <package name=\"y\"/>"],
            stdout_lacks: &["name=\"x\""],
        },
        Case {
            name: "new NEEDS-CHILD section left empty is not inserted",
            files: &[(
                "o.xml",
                r#"<image xmlns:km="urn:kiwimerge:1"><users><user name="x" km:action="remove"/></users></image>"#,
            )],
            args: &["base.xml", "o.xml"],
            code: 0,
            stderr_has: &["W6: ", "<users> not inserted: it would be empty"],
            stdout_has: &[],
            stdout_lacks: &["<users"],
        },
        Case {
            name: "E1 exits 1 with output; --no-lint silences it",
            files: &[(
                "o.xml",
                r#"<image><preferences arch="x86_64"><type image="oem"/></preferences></image>"#,
            )],
            args: &["base.xml", "o.xml"],
            code: 1,
            stderr_has: &[
                "kiwimerge: error: E1: ",
                "<type image=\"oem\"> is not unique in the default selection",
            ],
            stdout_has: &["<preferences arch=\"x86_64\">"],
            stdout_lacks: &[],
        },
        Case {
            name: "disjoint arch sets do not conflict",
            files: &[
                (
                    "b2.xml",
                    r#"<image schemaversion="8.5" name="b"><preferences arch="aarch64"><version>1</version><type image="oem"/></preferences></image>"#,
                ),
                (
                    "o.xml",
                    r#"<image><preferences arch="x86_64"><type image="oem"/></preferences></image>"#,
                ),
            ],
            args: &["b2.xml", "o.xml"],
            code: 0,
            stderr_has: &[],
            stdout_has: &[],
            stdout_lacks: &[],
        },
        Case {
            name: "no-lint",
            files: &[(
                "o.xml",
                r#"<image><preferences arch="x86_64"><type image="oem"/></preferences></image>"#,
            )],
            args: &["--no-lint", "base.xml", "o.xml"],
            code: 0,
            stderr_has: &[],
            stdout_has: &[],
            stdout_lacks: &[],
        },
        Case {
            name: "lints W1 W2 W3 W7 W8 W9",
            files: &[
                (
                    "b2.xml",
                    r#"<image schemaversion="8.5" name="b"><profiles><profile name="P" description="p"/></profiles><preferences><locale>en_US</locale><type image="docker" derived_from="x"/></preferences><packages type="image" profiles="Q"/><packages type="image" profiles="P, Q"/></image>"#,
                ),
                (
                    "o.xml",
                    r#"<image><preferences profiles="P"><locale>de_DE</locale><type image="oem" filesystem="xfs" btrfs_root_is_snapper_snapshot="true"/></preferences></image>"#,
                ),
            ],
            args: &["b2.xml", "o.xml"],
            code: 0,
            stderr_has: &[
                "W1: ",
                "undeclared profile \"Q\"",
                "W2: ",
                "W3: ",
                "W7: ",
                "W8: ",
                "btrfs_root_is_snapper_snapshot needs filesystem=\"btrfs\"",
                "W9: ",
                "<locale> of overlay",
            ],
            stdout_has: &[],
            stdout_lacks: &[],
        },
        Case {
            name: "select-type keeps one type and makes it primary",
            files: &[("o.xml", "<image/>")],
            args: &["--select-type", "oem", "base.xml", "o.xml"],
            code: 0,
            stderr_has: &[],
            stdout_has: &["<type image=\"oem\" primary=\"true\"/>"],
            stdout_lacks: &[],
        },
        Case {
            name: "select-type without such a type",
            files: &[("o.xml", "<image/>")],
            args: &["--select-type", "iso", "base.xml", "o.xml"],
            code: 2,
            stderr_has: &["no <type image=\"iso\">"],
            stdout_has: &[],
            stdout_lacks: &["<image"],
        },
        Case {
            name: "BOM and XML declaration on the image line",
            files: &[(
                "o.xml",
                "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?><image name=\"b\u{e4}\"><preferences><version>2</version></preferences></image>",
            )],
            args: &["base.xml", "o.xml"],
            code: 0,
            stderr_has: &[],
            stdout_has: &[
                "<image schemaversion=\"8.5\" name=\"b\u{e4}\">",
                "<version>2</version>",
            ],
            stdout_lacks: &["<version>1</version>"],
        },
        Case {
            name: "includes resolved in place",
            files: &[
                (
                    "inc/b.xml",
                    r#"<image schemaversion="7.4" name="i"><preferences><version>1</version><packagemanager>dnf</packagemanager></preferences><include from="this://c.xml"/><packages type="image"/></image>"#,
                ),
                (
                    "inc/c.xml",
                    r#"<image><!-- top --><repository alias="r" use_for_bootstrap="true"><source path="p"/></repository></image>"#,
                ),
                ("o.xml", "<image/>"),
            ],
            args: &["--schema-version", "8.5", "inc/b.xml", "o.xml"],
            code: 0,
            stderr_has: &[],
            stdout_has: &[
                "</preferences>\n    <repository alias=\"r\">\n",
                "<packagemanager>dnf4</packagemanager>",
                "schemaversion=\"8.5\"",
            ],
            stdout_lacks: &["<include", "top", "use_for_bootstrap"],
        },
        Case {
            name: "--keep-includes carries them",
            files: &[
                (
                    "inc/b.xml",
                    r#"<image schemaversion="8.5" name="i"><preferences><version>1</version></preferences><include from="this://c.xml"/></image>"#,
                ),
                ("o.xml", r#"<image><include from="this://d.xml"/></image>"#),
            ],
            args: &["--keep-includes", "inc/b.xml", "o.xml"],
            code: 0,
            stderr_has: &["<include> kept"],
            stdout_has: &[
                "<include from=\"this://c.xml\"/>\n    <include from=\"this://d.xml\"/>\n</image>",
            ],
            stdout_lacks: &[],
        },
        Case {
            name: "km:reset and remove-attributes on the root",
            files: &[(
                "o.xml",
                r#"<image xmlns:km="urn:kiwimerge:1" km:reset="packages" km:remove-attributes="name"/>"#,
            )],
            args: &["base.xml", "o.xml"],
            code: 0,
            stderr_has: &[],
            stdout_has: &["<image schemaversion=\"8.5\">"],
            stdout_lacks: &["<packages", "xmlns:km"],
        },
    ];
    for c in &cases {
        let mut files = vec![("base.xml", BASE)];
        files.extend_from_slice(c.files);
        let tmp = tree(&files)?;
        let out = Command::new(kiwimerge_path())
            .args(c.args)
            .current_dir(tmp.path())
            .output()?;
        let err = stderr(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.code() == Some(c.code),
            "{}: exit {:?}, want {}; stderr:\n{err}",
            c.name,
            out.status.code(),
            c.code
        );
        for w in c.stderr_has {
            ensure!(err.contains(w), "{}: want {w:?} in stderr:\n{err}", c.name);
        }
        if c.code == 2 {
            ensure!(
                out.stdout.is_empty(),
                "{}: nothing may be written on exit 2",
                c.name
            );
        }
        for w in c.stdout_has {
            ensure!(
                stdout.contains(w),
                "{}: want {w:?} in output:\n{stdout}",
                c.name
            );
        }
        for w in c.stdout_lacks {
            ensure!(
                !stdout.contains(w),
                "{}: {w:?} must not be in output:\n{stdout}",
                c.name
            );
        }
    }
    Ok(())
}

#[test]
fn kiwimerge_finds_descriptions_in_directories() -> Result<()> {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("d/config.xml", BASE),
                ("d/image/config.xml", "<foo/>"),
                ("d/a.kiwi", "<foo/>"),
            ],
            "d",
        ),
        (&[("d/image/config.xml", BASE), ("d/a.kiwi", "<foo/>")], "d"),
        (&[("d/b.kiwi", "<foo/>"), ("d/a.kiwi", BASE)], "d"),
    ];
    for (files, arg) in cases {
        let tmp = tree(files)?;
        std::fs::write(tmp.path().join("o.xml"), "<image/>")?;
        let out = Command::new(kiwimerge_path())
            .args([*arg, "o.xml"])
            .current_dir(tmp.path())
            .output()?;
        ensure!(out.status.success(), "{files:?}: {}", stderr(&out));
        ensure!(
            String::from_utf8_lossy(&out.stdout).contains("name=\"b\""),
            "{files:?}"
        );
    }
    let tmp = tree(&[("d/x.txt", "")])?;
    let out = Command::new(kiwimerge_path())
        .args(["d", "d"])
        .current_dir(tmp.path())
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    ensure!(
        stderr(&out).contains("no config.xml, image/config.xml or *.kiwi"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn kiwimerge_refuses_hostile_xml_quickly() -> Result<()> {
    let laughs = {
        let mut s =
            String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE image [\n<!ENTITY lol \"lol\">\n");
        for i in 1..10 {
            let prev = if i == 1 {
                "lol".to_owned()
            } else {
                format!("lol{}", i - 1)
            };
            let body = format!("&{prev};").repeat(10);
            let _ = writeln!(s, "<!ENTITY lol{i} \"{body}\">");
        }
        s.push_str("]>\n<image schemaversion=\"8.5\" name=\"x\">&lol9;</image>\n");
        s
    };
    let deep = format!(
        "<image schemaversion=\"8.5\" name=\"x\">{}{}</image>",
        "<a>".repeat(10_000),
        "</a>".repeat(10_000)
    );
    let big = format!(
        "<image schemaversion=\"8.5\" name=\"x\"><!--{}--></image>",
        "x".repeat(17 * 1024 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("billion laughs", laughs.into_bytes(), "DOCTYPE is not allowed"),
        ("external entity", b"<!DOCTYPE image [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><image schemaversion=\"8.5\" name=\"x\">&x;</image>".to_vec(), "DOCTYPE is not allowed"),
        ("undeclared entity", b"<image schemaversion=\"8.5\" name=\"x\"><description>&x;</description></image>".to_vec(), "text"),
        ("entity in attribute", b"<image schemaversion=\"8.5\" name=\"&x;\"/>".to_vec(), "<image name>"),
        ("deep nesting", deep.into_bytes(), "nested deeper than"),
        ("over 16 MiB", big.into_bytes(), "more than the limit"),
        ("not UTF-8", b"<image schemaversion=\"8.5\" name=\"\xe9\"/>".to_vec(), "only UTF-8"),
    ];
    let tmp = tempfile::tempdir()?;
    let overlay = tmp.path().join("o.xml");
    std::fs::write(&overlay, "<image/>")?;
    for (name, bytes, want) in &cases {
        let p = tmp.path().join("hostile.xml");
        std::fs::write(&p, bytes)?;
        let start = Instant::now();
        let out = kiwimerge([&p, &overlay])?;
        let took = start.elapsed();
        ensure!(
            out.status.code() == Some(2),
            "{name}: exit {:?}",
            out.status.code()
        );
        ensure!(
            stderr(&out).contains(want),
            "{name}: want {want:?} in {}",
            stderr(&out)
        );
        ensure!(out.stdout.is_empty(), "{name}: wrote output");
        ensure!(took < Duration::from_secs(2), "{name}: took {took:?}");
        if *name == "billion laughs" {
            let _ = writeln!(
                std::io::stderr(),
                "kiwimerge_refuses_hostile_xml_quickly: billion laughs refused in {took:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn kiwimerge_expected_outputs_load_in_kiwi() -> Result<()> {
    if !have_kiwi() {
        skip(
            "python3 cannot import kiwi (pip install kiwi==11.1.6)",
            true,
        );
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(examples_dir())? {
        let dir = entry?.path();
        let base = ["base.xml", "base.kiwi"]
            .iter()
            .map(|b| dir.join(b))
            .find(|p| p.exists())
            .context("no base")?;
        let out = kiwimerge([base.as_path(), &dir.join("overlay.xml")])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        let p = tmp.path().join(format!(
            "{}.xml",
            dir.file_name().context("name")?.to_string_lossy()
        ));
        std::fs::write(&p, &out.stdout)?;
        files.push(p);
    }
    // A negative control: kiwi must reject what kiwimerge would never write.
    let bad = tmp.path().join("control.xml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&files[0])?.replace("</image>", "<foo/></image>"),
    )?;
    files.push(bad);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = python(KIWI_LOAD, &refs)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rejected: Vec<&str> = text.lines().filter(|l| l.starts_with("REJECT")).collect();
    ensure!(
        rejected.len() == 1 && rejected[0].contains("control.xml"),
        "kiwi verdicts:\n{text}{}",
        stderr(&out)
    );
    Ok(())
}

/// The loadable corpus bases (09 is schema 6.8) and whether they declare profiles.
fn corpus_bases(corpus: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(corpus)? {
        let p = e?.path();
        let name = p
            .file_name()
            .context("name")?
            .to_string_lossy()
            .into_owned();
        if p.is_dir() {
            v.push(p.join("AlmaLinux-OS.kiwi"));
        } else if p.extension().is_some_and(|x| x == "kiwi")
            || (p.extension().is_some_and(|x| x == "xml") && !name.starts_with("09-"))
        {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn declared_profiles(xml: &str) -> Vec<String> {
    xml.split("<profile name=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_owned))
        .collect()
}

#[test]
fn kiwimerge_corpus_normalisation_matches_kiwi() -> Result<()> {
    let Some(shared) = shared_dir() else {
        skip("corpus not found", true);
        return Ok(());
    };
    let corpus = shared.join("corpus");
    let tmp = tempfile::tempdir()?;
    let empty = tmp.path().join("empty.xml");
    std::fs::write(&empty, "<image/>")?;

    let refused = kiwimerge([
        corpus.join("09-kiwidesc-leap-42.3-schema68.xml"),
        empty.clone(),
    ])?;
    assert_eq!(refused.status.code(), Some(2), "6.8 is refused");
    ensure!(
        stderr(&refused).contains("schemaversion 6.8 < 7.4"),
        "{}",
        stderr(&refused)
    );

    let kiwi = have_kiwi();
    if !kiwi {
        skip(
            "python3 cannot import kiwi: oracle comparison not run",
            false,
        );
    }
    let bases = corpus_bases(&corpus)?;
    assert_eq!(bases.len(), 9, "nine loadable corpus descriptions");
    let mut compared = 0;
    for base in &bases {
        let out = kiwimerge([
            "--schema-version".as_ref(),
            "8.5".as_ref(),
            base.as_os_str(),
            empty.as_os_str(),
        ])?;
        // corpus/06 conflicts on purpose (E1, exit 1); everything else merges cleanly.
        let want = i32::from(base.to_string_lossy().contains("/06-"));
        ensure!(
            out.status.code() == Some(want),
            "{}: exit {:?}: {}",
            base.display(),
            out.status.code(),
            stderr(&out)
        );
        if kiwi {
            let merged = tmp.path().join("merged.xml");
            std::fs::write(&merged, &out.stdout)?;
            let cmp = python(KIWI_ORACLE, &[base, &merged])?;
            ensure!(
                cmp.status.success(),
                "{}: differs from kiwi's include+upgrade:\n{}{}",
                base.display(),
                String::from_utf8_lossy(&cmp.stdout),
                stderr(&cmp)
            );
            compared += 1;
        }
    }
    if kiwi {
        assert_eq!(compared, 9);
    }
    Ok(())
}

#[test]
fn kiwimerge_corpus_self_merge_is_idempotent_and_kiwi_equivalent() -> Result<()> {
    let Some(shared) = shared_dir() else {
        skip("corpus not found", true);
        return Ok(());
    };
    let kiwi = have_kiwi();
    if !kiwi {
        skip(
            "python3 cannot import kiwi: kiwi equivalence not checked",
            false,
        );
    }
    let tmp = tempfile::tempdir()?;
    let mut selections = 0;
    for base in corpus_bases(&shared.join("corpus"))? {
        let bb = kiwimerge([&base, &base])?;
        ensure!(
            matches!(bb.status.code(), Some(0 | 1)),
            "{}: {}",
            base.display(),
            stderr(&bb)
        );
        let p = tmp.path().join("bb.xml");
        std::fs::write(&p, &bb.stdout)?;
        let bbb = kiwimerge([&p, &base])?;
        ensure!(
            bb.stdout == bbb.stdout,
            "{}: merge(B,B) != merge(merge(B,B),B)",
            base.display()
        );
        if kiwi {
            let out = python(KIWI_EQUIVALENT, &[&base, &p])?;
            let text = String::from_utf8_lossy(&out.stdout);
            ensure!(
                out.status.success(),
                "{}: merge(B,B) is not kiwi-equivalent to B:\n{text}{}",
                base.display(),
                stderr(&out)
            );
            selections += text
                .lines()
                .find_map(|l| l.strip_prefix("SELECTIONS "))
                .context("selection count")?
                .trim()
                .parse::<usize>()?;
        }
    }
    if kiwi {
        assert_eq!(
            selections, 68,
            "default + every profile over the 9 loadable bases"
        );
    }
    Ok(())
}

#[test]
fn kiwimerge_corpus_vm_overlay_smoke() -> Result<()> {
    let Some(shared) = shared_dir() else {
        skip("corpus not found", true);
        return Ok(());
    };
    let overlay = examples_dir().join("01-container-stash-to-vm/overlay.xml");
    let kiwi = have_kiwi();
    if !kiwi {
        skip(
            "python3 cannot import kiwi: kiwi cross-checks not run",
            false,
        );
    }
    let tmp = tempfile::tempdir()?;
    let mut plain_e1 = 0;
    let mut flattened = Vec::new(); // (file, kiwimerge printed W8)
    for base in corpus_bases(&shared.join("corpus"))? {
        let name = base
            .file_name()
            .context("name")?
            .to_string_lossy()
            .into_owned();
        let plain = kiwimerge([&base, &overlay])?;
        let err = stderr(&plain);
        let e1: BTreeSet<String> = err
            .lines()
            .filter(|l| l.contains("error: E1: "))
            .filter_map(|l| l.split(" is not unique in ").nth(1))
            .map(|s| {
                let sel = s.split(':').next().unwrap_or("");
                sel.strip_prefix("profile ")
                    .map_or_else(|| "<default>".to_owned(), str::to_owned)
            })
            .collect();
        let profiles = declared_profiles(&String::from_utf8_lossy(&plain.stdout));
        // A profile-free base has nothing to collide with; every profiled one collides.
        let want = i32::from(!profiles.is_empty());
        ensure!(
            plain.status.code() == Some(want),
            "{name}: exit {:?}:\n{err}",
            plain.status.code()
        );
        ensure!(
            !plain.stdout.is_empty(),
            "{name}: output is written even with lint errors"
        );
        plain_e1 += usize::from(!e1.is_empty());
        if kiwi {
            let p = tmp.path().join(format!("plain-{name}"));
            std::fs::write(&p, &plain.stdout)?;
            let out = python(KIWI_TYPE_UNIQUE, &[&p])?;
            ensure!(out.status.success(), "{name}: {}", stderr(&out));
            let kiwi_says: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
                .trim()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            ensure!(
                e1 == kiwi_says,
                "{name}: E1 for {e1:?}, kiwi conflicts for {kiwi_says:?}"
            );
        }
        for p in &profiles {
            let out = kiwimerge([
                "--select-arch".as_ref(),
                "x86_64".as_ref(),
                "--select-profiles".as_ref(),
                p.as_ref(),
                base.as_os_str(),
                overlay.as_os_str(),
            ])?;
            ensure!(
                out.status.code() == Some(0),
                "{name} --select-profiles {p}: exit {:?}:\n{}",
                out.status.code(),
                stderr(&out)
            );
            let f = tmp.path().join(format!("sel-{p}-{name}"));
            std::fs::write(&f, &out.stdout)?;
            flattened.push((f, stderr(&out).contains("W8: ")));
        }
    }
    assert_eq!(plain_e1, 7, "E1 fires for the 7 profiled bases");
    if kiwi {
        // kiwi's Schematron rejects a flattened merge exactly when kiwimerge warned W8
        // (the VM overlay sets filesystem="xfs" on types with btrfs_* attributes).
        let refs: Vec<&Path> = flattened.iter().map(|(p, _)| p.as_path()).collect();
        let out = python(KIWI_LOAD, &refs)?;
        let text = String::from_utf8_lossy(&out.stdout);
        for (p, w8) in &flattened {
            let rejected = text
                .lines()
                .any(|l| l.starts_with(&format!("REJECT {}", p.display())));
            ensure!(
                rejected == *w8,
                "{}: kiwi rejects={rejected}, W8={w8}\n{text}",
                p.display()
            );
        }
        ensure!(
            flattened.iter().any(|f| f.1) && flattened.iter().any(|f| !f.1),
            "both outcomes exercised"
        );
    }
    Ok(())
}

#[test]
fn kiwimerge_stash_exports_vm_overlay() -> Result<()> {
    let Some(shared) = shared_dir() else {
        skip("shared kiwimerge material not found", true);
        return Ok(());
    };
    let exports = shared.join("fixtures/root-exports");
    if !exports.is_dir() {
        skip("fixtures/root-exports not found", true);
        return Ok(());
    }
    let overlay = examples_dir().join("01-container-stash-to-vm/overlay.xml");
    // What kiwi wrote into <root>/image/config.xml, with the selection the root was built
    // for (corpus/SOURCES.md), as stackbuild would call kiwimerge.
    let cases: &[(&str, &[&str])] = &[
        ("02-docker.image-config.xml", &[]),
        (
            "01-microos.image-config.xml",
            &["--select-arch", "x86_64", "--select-profiles", "Standard"],
        ),
        (
            "07-almalinux.image-config.xml",
            &[
                "--select-arch",
                "x86_64",
                "--select-profiles",
                "Container-Base-Generic",
                "--select-type",
                "oci",
            ],
        ),
    ];
    let tmp = tempfile::tempdir()?;
    let mut outputs = Vec::new();
    for (file, args) in cases {
        let base = exports.join(file);
        let out = Command::new(kiwimerge_path())
            .args(*args)
            .arg(&base)
            .arg(&overlay)
            .output()?;
        ensure!(
            out.status.code() == Some(0),
            "{file}: exit {:?}:\n{}",
            out.status.code(),
            stderr(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let types: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("<type "))
            .collect();
        ensure!(
            types.iter().any(|t| t.contains(" image=\"oem\"")),
            "{file}: the VM type is there: {types:?}"
        );
        ensure!(
            !types.iter().any(|t| t.contains(" image=\"docker\"")),
            "{file}: no docker type is left: {types:?}"
        );
        let p = tmp.path().join(file);
        std::fs::write(&p, &out.stdout)?;
        outputs.push((p, stderr(&out).contains("W8: ")));
    }
    if !have_kiwi() {
        skip(
            "python3 cannot import kiwi: kiwi verdicts not checked",
            true,
        );
        return Ok(());
    }
    let refs: Vec<&Path> = outputs.iter().map(|(p, _)| p.as_path()).collect();
    let out = python(KIWI_LOAD, &refs)?;
    let text = String::from_utf8_lossy(&out.stdout);
    for (p, w8) in &outputs {
        let rejected = text
            .lines()
            .any(|l| l.starts_with(&format!("REJECT {}", p.display())));
        ensure!(
            rejected == *w8,
            "{}: kiwi rejects={rejected}, W8={w8}\n{text}",
            p.display()
        );
    }
    Ok(())
}

/// BASE may be a stash: its `image/config.xml` is read from the image, not unpacked.
#[test]
fn base_from_a_stash() -> anyhow::Result<()> {
    let w = crate::util::Workdir::new("kiwimerge-stash")?;
    w.tree(
        "root",
        "d etc 755 0:0\nf etc/big 644 0:0 @3000000\nd image 755 0:0\n",
    )?;
    std::fs::copy(
        crate::util::fixture("kiwimerge/examples/01-container-stash-to-vm/base.xml"),
        w.path("root/image/config.xml"),
    )?;
    crate::util::run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "with-desc",
    ]))?;
    let from_image = crate::util::run(
        w.bin("kiwimerge").args([
            "--store",
            "store",
            "with-desc",
            &crate::util::fixture("kiwimerge/examples/01-container-stash-to-vm/overlay.xml")
                .display()
                .to_string(),
        ]),
    )?;
    let expected = std::fs::read_to_string(crate::util::fixture(
        "kiwimerge/examples/01-container-stash-to-vm/expected.xml",
    ))?;
    assert_eq!(
        from_image, expected,
        "the stash's description merged like the file itself"
    );
    // A stash without a description is unusable input: exit 2.
    w.tree("bare", "d etc 755 0:0\n")?;
    crate::util::run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "bare",
        "--container-name",
        "no-desc",
    ]))?;
    let out = crate::util::output(w.bin("kiwimerge").args([
        "--store",
        "store",
        "no-desc",
        "root/image/config.xml",
    ]))?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no image/config.xml"));
    Ok(())
}
