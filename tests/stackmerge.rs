//! stackmerge: the stacked tree equals what a sequence of `rsync -aHAX SRC/ DIR/` gives,
//! for directories and for stashed images; conflicts are resolved upward and reported.

use std::fs;
use std::path::Path;

use anyhow::Result;

use crate::skip;
use crate::stash::RICH;
use crate::util::{Workdir, assert_same, dump, have, is_root, json, output, pipe, run};

/// Added to [`RICH`] for the lower tree: what the upper tree overlaps with controlled
/// mtimes (rsync's quick check looks at size and mtime to the second).
const LOWER_EXTRA: &str = r"
f q 644 0:0 AAAA
h q2 q
t q 1000000000.5
h etc/shadow-link etc/shadow
t etc/shadow 1650000000.0
d merged 755 0:0
f merged/keep 644 0:0 lower only
t merged 1500000000.25
d samesec 755 0:0
t samesec 1500000000.25
d empty 755 0:0
f df 644 0:0 a file that becomes a directory
l ln-retarget old-target
l ln-same same-target
t ln-same 1000.5
f group-a 644 0:0 one group
h group-b group-a
f lone-1 644 0:0 same
f lone-2 644 0:0 same
t lone-1 1400000000.0
t lone-2 1400000000.0
d lead 755 0:0
f lead/z 644 0:0 AAAA
f leadb 644 0:0 BBBB
t lead/z 1400000000.0
t leadb 1400000000.0
";

/// The upper tree: every kind of overlap rsync handles without failing.
const UPPER: &str = r"
d . 700 0:0
x . user.rootattr upper
d etc 750 0:0
t etc 1300000000.5
# another size: a new file; etc/passwd-hardlink keeps the old content
f etc/passwd 644 0:0 root:x:0:0::/root:/bin/bash\n
t etc/passwd 1700000001.0
# same size, same second: rsync keeps the lower content and applies mode and xattrs (the
# ACL goes) in place, to etc/shadow-link as well
f etc/shadow 600 0:42 SECRET\n
t etc/shadow 1650000000.9
d usr 755 0:0
d usr/bin 755 0:0
# same size and second: setuid added in place (ping4, ping6 too), capability removed
f usr/bin/ping 4755 0:0 @3000
t usr/bin/ping 1600000000.5
d newdir 750 1000:1000
f newdir/file 640 1000:1000 new\n
h newdir/link newdir/file
x newdir/file user.x 1
x newdir/file system.posix_acl_access 0x0200000001000600ffffffff02000400e803000004000400ffffffff10000400ffffffff20000000ffffffff
f q 600 0:0 BBBB
t q 1000000000.7
d df 755 0:0
f df/in 644 0:0 inside
f empty 644 0:0 a file over an empty directory
l ln-retarget new-target
l ln-same same-target
t ln-same 2000.5
d lib 755 0:0
p lib/fifo 644
b lib/sda 660 8:1
c lib/null 600 1:3
d merged 755 0:0
f merged/new 644 0:0 upper
t merged 1500000000.75
d samesec 700 0:0
t samesec 1500000000.9
f group-b 644 0:0 replaced
f lone-1 644 0:0 same
h lone-2 lone-1
t lone-1 1400000000.0
# one group over two up-to-date files: rsync visits leadb before lead/z and links lead/z to it
d lead 755 0:0
f lead/z 644 0:0 CCCC
h leadb lead/z
t lead/z 1400000000.0
";

/// A lower tree with every kind and attribute, plus the overlaps.
fn lower_spec() -> String {
    format!("{RICH}\n{LOWER_EXTRA}")
}

/// Gives every entry whose mtime is recent (not set by the spec) the time `sec.111111111`.
/// rsync only sets a new symlink's, device's or directory's mtime when it differs from the
/// current one by a second or more, so a tree made a moment ago would keep the time rsync
/// made it at; real trees are older than that.
fn restamp(dir: &Path, sec: i64) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let mut stack = vec![dir.to_path_buf()];
    let mut all = Vec::new();
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p)?;
        if m.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
        if m.mtime() > now - 3600 {
            all.push(p);
        }
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        let t = rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: 111_111_111,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &p,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

/// Builds the lower and upper trees, with old mtimes throughout.
fn trees(w: &Workdir) -> Result<()> {
    restamp(&w.tree("lower", &lower_spec())?, 1_111_111_111)?;
    restamp(&w.tree("upper", UPPER)?, 1_222_222_222)?;
    Ok(())
}

fn rsync_twice(w: &Workdir, lower: &str, upper: &str, into: &str) -> Result<()> {
    for src in [lower, upper] {
        run(w
            .cmd("rsync")
            .arg("-aHAX")
            .arg(format!("{src}/"))
            .arg(format!("{into}/")))?;
    }
    Ok(())
}

#[test]
fn privileged_two_trees_give_what_rsync_twice_gives() -> Result<()> {
    if !is_root() {
        skip!("needs root (owners, devices, security xattrs)");
    }
    if !have("rsync") {
        skip!("needs rsync");
    }
    let w = Workdir::new("merge-dirs")?;
    trees(&w)?;
    rsync_twice(&w, "lower", "upper", "want")?;
    let out = run(w
        .bin("stackmerge")
        .args(["--into", "got", "./lower", "./upper", "--json"]))?;
    assert_same(&dump(&w.path("want"))?, &dump(&w.path("got"))?)?;

    // The things rsync does that are easy to get wrong, spelled out.
    let got = w.path("got");
    assert_eq!(
        fs::read(got.join("q"))?,
        b"AAAA",
        "quick check keeps the lower q"
    );
    assert_eq!(fs::read(got.join("group-a"))?, b"one group");
    assert_eq!(
        fs::read(got.join("lead/z"))?,
        b"BBBB",
        "rsync's order picks leadb"
    );
    assert_eq!(
        fs::read(got.join("etc/passwd-hardlink"))?,
        b"root:x:0:0::/root:/bin/sh\n"
    );
    let report = json(&out)?;
    assert_eq!(report["schema"], 1);
    let sources = report["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["name"], "./lower");
    assert_eq!(sources[1]["kind"], "dir");
    assert!(sources[1]["entries"].as_u64().unwrap() > 10);
    let conflict = |path: &str| {
        report["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == path)
            .cloned()
    };
    let q = conflict("q").expect("q conflict");
    assert_eq!(
        q["kind"], "metadata",
        "no digests for directories: sizes agree"
    );
    let df = conflict("df").expect("df conflict");
    assert_eq!(
        (&df["kind"], &df["lower"], &df["upper"]),
        (&"type".into(), &"./lower".into(), &"./upper".into())
    );
    assert_eq!(conflict("etc/passwd").expect("passwd")["kind"], "content");
    assert_eq!(report["totals"]["rsync_fails"], 0);
    Ok(())
}

/// Stashes `root` as `name` into `store`.
fn stash(w: &Workdir, root: &str, name: &str) -> Result<String> {
    let out = run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        root,
        "--container-name",
        name,
        "--json",
        "--quiet",
    ]))?;
    Ok(json(&out)?["ref"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn privileged_two_stashes_give_what_unstash_then_rsync_gives() -> Result<()> {
    if !is_root() {
        skip!("needs root (owners, devices, security xattrs)");
    }
    if !have("rsync") {
        skip!("needs rsync");
    }
    let w = Workdir::new("merge-images")?;
    trees(&w)?;
    stash(&w, "lower", "low")?;
    // A second, incremental layer: a file replaced, one deleted, one added, a group split.
    fs::write(w.path("lower/etc/hostname"), "second layer\n")?;
    fs::remove_file(w.path("lower/merged/keep"))?;
    fs::remove_file(w.path("lower/etc/passwd"))?;
    fs::write(w.path("lower/etc/passwd"), "replaced in layer 2\n")?;
    restamp(&w.path("lower"), 1_333_333_333)?;
    let low = stash(&w, "lower", "low")?;
    stash(&w, "upper", "up")?;
    // The upper image's own whiteout hides its own lone-1, never the lower source's.
    fs::remove_file(w.path("upper/lone-1"))?;
    restamp(&w.path("upper"), 1_222_222_223)?;
    let up = stash(&w, "upper", "up")?;

    run(w.bin("unstash").args([&low, "--to", "un-low", "--quiet"]))?;
    run(w.bin("unstash").args([&up, "--to", "un-up", "--quiet"]))?;
    rsync_twice(&w, "un-low", "un-up", "want")?;
    // One by ref from the store, one from stdin as another tool's JSON.
    let piped = pipe(
        w.bin("stackmerge")
            .args(["--store", "store", "--into", "got", "low", "-", "--json"]),
        format!("{{\"schema\":1,\"ref\":\"{up}\"}}").as_bytes(),
    )?;
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_same(&dump(&w.path("want"))?, &dump(&w.path("got"))?)?;
    assert_eq!(fs::read(w.path("got/lone-1"))?, b"same");
    let report = json(&String::from_utf8_lossy(&piped.stdout))?;
    // Each final file was written once, its other names linked: nothing a later layer or
    // source replaced was written at all.
    let got = dump(&w.path("got"))?;
    let names: Vec<&str> = got.lines().filter(|l| l.starts_with("f ")).collect();
    let inodes: std::collections::HashSet<&str> = names
        .iter()
        .map(|l| {
            l.split(" link-group=").nth(1).map_or_else(
                || l.split(' ').nth(1).unwrap_or_default(),
                |g| g.split(' ').next().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(report["stats"]["files"], inodes.len());
    assert_eq!(report["stats"]["hardlinks"], names.len() - inodes.len());
    let sources = report["sources"].as_array().expect("sources");
    assert_eq!(sources[0]["kind"], "image");
    assert_eq!(sources[0]["planned"], true);
    // Images carry digests: the quick check that kept the lower q is a content conflict.
    let q = report["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "q")
        .cloned()
        .expect("q");
    assert_eq!(
        (&q["kind"], &q["resolution"]),
        (&"content".into(), &"lower-content-kept".into())
    );
    Ok(())
}

#[test]
fn a_replaced_name_leaves_the_rest_of_its_hardlink_group_alone() -> Result<()> {
    let w = Workdir::new("merge-hardlinks")?;
    let me = format!(
        "{}:{}",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    );
    restamp(
        &w.tree(
            "lower",
            &format!("f a 644 {me} old\nh b a\nh c a\nt a 1000.0\n"),
        )?,
        1_111_111_111,
    )?;
    restamp(
        &w.tree("upper", &format!("f b 644 {me} new content\n"))?,
        1_222_222_222,
    )?;
    run(w
        .bin("stackmerge")
        .args(["--into", "got", "./lower", "./upper", "--quiet"]))?;
    let got = w.path("got");
    assert_eq!(fs::read(got.join("a"))?, b"old");
    assert_eq!(fs::read(got.join("c"))?, b"old");
    assert_eq!(fs::read(got.join("b"))?, b"new content");
    let ino = |p: &str| -> Result<u64> {
        Ok(std::os::unix::fs::MetadataExt::ino(&fs::symlink_metadata(
            got.join(p),
        )?))
    };
    assert_eq!(ino("a")?, ino("c")?);
    assert_ne!(ino("a")?, ino("b")?);
    if have("rsync") {
        rsync_twice(&w, "lower", "upper", "want")?;
        assert_same(&dump(&w.path("want"))?, &dump(&got)?)?;
    }
    Ok(())
}

#[test]
fn type_conflicts_resolve_upward_and_are_reported() -> Result<()> {
    let w = Workdir::new("merge-types")?;
    let me = format!(
        "{}:{}",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    );
    w.tree(
        "lower",
        &format!(
            "d lib 755 {me}\nf lib/libc.so 644 {me} lower libc\nd usr/lib 755 {me}\n\
             d ne 755 {me}\nf ne/x 644 {me} x\nf dir-over-file 644 {me} file\n\
             l bin usr/bin\nd usr/bin 755 {me}\n"
        ),
    )?;
    w.tree(
        "upper",
        &format!(
            "l lib usr/lib\nd usr/lib 755 {me}\nf usr/lib/libc.so 644 {me} upper libc\n\
             f ne 644 {me} a file now\nd dir-over-file 755 {me}\nf dir-over-file/in 644 {me} in\n\
             d bin 755 {me}\nf bin/sh 755 {me} sh\n"
        ),
    )?;
    let out = run(w.bin("stackmerge").args([
        "--into",
        "got",
        "./lower",
        "./upper",
        "--json",
        "--report",
        "report.json",
    ]))?;
    let got = w.path("got");
    assert_eq!(fs::read_link(got.join("lib"))?, Path::new("usr/lib"));
    assert_eq!(
        fs::read(got.join("lib/libc.so"))?,
        b"upper libc",
        "through the symlink"
    );
    assert_eq!(fs::read(got.join("ne"))?, b"a file now");
    assert_eq!(fs::read(got.join("dir-over-file/in"))?, b"in");
    // A directory over a usr-merge symlink replaces the symlink, as rsync (without -K) does;
    // usr/bin is left alone.
    assert!(fs::symlink_metadata(got.join("bin"))?.is_dir());
    assert_eq!(fs::read(got.join("bin/sh"))?, b"sh");
    assert_eq!(fs::read_dir(got.join("usr/bin"))?.count(), 0);
    let report = json(&out)?;
    assert_eq!(report, json(&fs::read_to_string(w.path("report.json"))?)?);
    let conflicts = report["conflicts"].as_array().expect("conflicts");
    for (path, resolution) in [
        ("lib", "upper-over-non-empty-dir"),
        ("ne", "upper-over-non-empty-dir"),
        ("dir-over-file", "upper"),
        ("bin", "upper"),
    ] {
        let c = conflicts
            .iter()
            .find(|c| c["path"] == path)
            .unwrap_or_else(|| panic!("{path} not reported: {conflicts:?}"));
        assert_eq!(c["kind"], "type", "{path}");
        assert_eq!(c["resolution"], resolution, "{path}");
        assert_eq!(c["lower"], "./lower");
        assert_eq!(c["upper"], "./upper");
    }
    assert_eq!(report["totals"]["rsync_fails"], 2);
    assert_eq!(report["totals"]["type"], 4);
    Ok(())
}

#[test]
fn a_bad_source_fails_with_one_line_and_leaves_nothing() -> Result<()> {
    let w = Workdir::new("merge-bad")?;
    fs::create_dir(w.path("ok"))?;
    fs::write(w.path("ok/a"), b"a")?;
    for args in [
        vec!["--into", "got", "./ok", "./missing"],
        vec!["--store", "store", "--into", "got", "./ok", "no-such-stash"],
    ] {
        let out = output(w.bin("stackmerge").args(&args))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        let left: Vec<String> = fs::read_dir(&w.root)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        assert_eq!(left, ["ok"], "{args:?} left something behind");
    }
    // A target that is not empty is refused (bad usage), untouched.
    fs::create_dir(w.path("full"))?;
    fs::write(w.path("full/x"), b"x")?;
    let out = output(w.bin("stackmerge").args(["--into", "full", "./ok"]))?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(fs::read_dir(w.path("full"))?.count(), 1);
    Ok(())
}

/// One ustar header and its data, padded: enough to hand-make a layer our own `stash`
/// would never write.
fn ustar(out: &mut Vec<u8>, name: &str, kind: u8, mode: u32, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 1_234_567_890);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// Writes a blob into an OCI layout; returns its digest and size.
fn blob(layout: &Path, bytes: &[u8]) -> Result<(String, usize)> {
    use sha2::Digest as _;
    let hex = format!("{:x}", sha2::Sha256::digest(bytes));
    fs::create_dir_all(layout.join("blobs/sha256"))?;
    fs::write(layout.join("blobs/sha256").join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len()))
}

/// An image whose second layer writes through a symlink the first one made
/// (`lib -> usr/lib`, then `lib/b`): the model cannot plan that from paths alone.
fn image_through_a_symlink(layout: &Path) -> Result<()> {
    let mut l1 = Vec::new();
    ustar(&mut l1, "./", b'5', 0o755, "", b"");
    ustar(&mut l1, "usr/", b'5', 0o755, "", b"");
    ustar(&mut l1, "usr/lib/", b'5', 0o755, "", b"");
    ustar(&mut l1, "usr/lib/a", b'0', 0o644, "", b"layer one\n");
    ustar(&mut l1, "lib", b'2', 0o777, "usr/lib", b"");
    l1.resize(l1.len() + 1024, 0);
    let mut l2 = Vec::new();
    ustar(&mut l2, "lib/b", b'0', 0o644, "", b"through the link\n");
    l2.resize(l2.len() + 1024, 0);
    let layers: Vec<(String, usize)> = [l1, l2]
        .iter()
        .map(|l| blob(layout, l))
        .collect::<Result<_>>()?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.0).collect::<Vec<_>>()},
    });
    let (cd, cs) = blob(layout, &serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s,
        })).collect::<Vec<_>>(),
    });
    let (md, ms) = blob(layout, &serde_json::to_vec(&manifest)?)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "trick:1"},
        }],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(())
}

#[test]
fn an_image_the_plan_cannot_handle_is_unstashed_first() -> Result<()> {
    let w = Workdir::new("merge-complex")?;
    image_through_a_symlink(&w.path("layout"))?;
    let me = format!(
        "{}:{}",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    );
    restamp(
        &w.tree(
            "lower",
            &format!("d usr/lib 755 {me}\nf usr/lib/old 644 {me} old\nf etc-x 644 {me} x\n"),
        )?,
        1_111_111_111,
    )?;
    let out = run(w.bin("stackmerge").args([
        "--into",
        "got",
        "./lower",
        "oci:layout:trick:1",
        "--json",
        "--quiet",
    ]))?;
    let got = w.path("got");
    assert_eq!(fs::read(got.join("usr/lib/b"))?, b"through the link\n");
    assert_eq!(fs::read(got.join("usr/lib/old"))?, b"old");
    let report = json(&out)?;
    assert_eq!(report["sources"][1]["planned"], false);
    assert_eq!(report["sources"][1]["kind"], "image");
    // No scratch directory is left beside the target.
    let left: Vec<String> = fs::read_dir(&w.root)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert!(left.iter().all(|n| !n.starts_with('.')), "{left:?}");
    if have("rsync") {
        run(w
            .bin("unstash")
            .args(["oci:layout:trick:1", "--to", "un", "--quiet"]))?;
        rsync_twice(&w, "lower", "un", "want")?;
        assert_same(&dump(&w.path("want"))?, &dump(&got)?)?;
    }
    Ok(())
}

#[test]
fn a_registry_image_is_pulled_then_stacked() -> Result<()> {
    if !have(crate::registry::REGISTRY) {
        skip!("docker-registry not installed (.ci/run installs it)");
    }
    let w = Workdir::new("merge-registry")?;
    let reg = crate::registry::Registry::start(&w, "reg")?;
    let me = format!(
        "{}:{}",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    );
    w.tree("up", &format!("f motd 644 {me} from the registry\n"))?;
    let dest = reg.url("ns/up:v1");
    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "up",
        "--container-name",
        "up",
        "--push",
        &dest,
        "--tls-verify=false",
        "--quiet",
    ]))?;
    w.tree(
        "low",
        &format!("f motd 644 {me} local\nf keep 644 {me} kept\n"),
    )?;
    let out = run(w.bin("stackmerge").args([
        "--store",
        "pulled",
        "--into",
        "got",
        "./low",
        &dest,
        "--tls-verify=false",
        "--json",
        "--quiet",
    ]))?;
    assert_eq!(fs::read(w.path("got/motd"))?, b"from the registry");
    assert_eq!(fs::read(w.path("got/keep"))?, b"kept");
    assert_eq!(json(&out)?["sources"][1]["kind"], "image");
    Ok(())
}
