//! Hardening: crash safety, concurrent writers, store maintenance, permissions, hostile
//! input and resource limits, all through the real binaries.
//!
//! Kill points may be timed; assertions never are: whatever moment a kill lands on, the
//! store must read, and the tag must point at the old image or the complete new one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sha2::Digest as _;

use crate::skip;
use crate::util::{Workdir, assert_same, bin_dir, dump, have, is_root, json, output, run};

// ---------------------------------------------------------------------------------------
// Helpers

/// `stash --json --quiet` of `root` as `NAME:TAG` into `store`; returns the report.
fn stash(w: &Workdir, store: &str, root: &str, name: &str, tag: &str) -> Result<serde_json::Value> {
    json(&run(w.bin("stash").args([
        "--store",
        store,
        "--root",
        root,
        "--container-name",
        name,
        "--tag",
        tag,
        "--json",
        "--quiet",
    ]))?)
}

/// `NAME:TAG` → manifest digest, as `stash --list --json` reports it.
fn listing(w: &Workdir, store: &str) -> Result<BTreeMap<String, String>> {
    let v = json(&run(w
        .bin("stash")
        .args(["--store", store, "--list", "--json"]))?)?;
    let mut out = BTreeMap::new();
    for s in v["stashes"].as_array().context("stashes")? {
        out.insert(
            format!(
                "{}:{}",
                s["name"].as_str().unwrap(),
                s["tag"].as_str().unwrap()
            ),
            s["digest"].as_str().unwrap().to_owned(),
        );
    }
    Ok(out)
}

/// `stash --verify` must pass.
fn verify_ok(w: &Workdir, store: &str) -> Result<serde_json::Value> {
    let out = output(
        w.bin("stash")
            .args(["--store", store, "--verify", "--json"]),
    )?;
    ensure!(
        out.status.success(),
        "verify failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&String::from_utf8_lossy(&out.stdout))?;
    ensure!(v["ok"] == true && v["schema"] == 1, "{v}");
    Ok(v)
}

/// Unstashes `NAME:TAG` from `store` into a fresh directory and dumps it.
fn unstash_dump(w: &Workdir, store: &str, reference: &str) -> Result<String> {
    let to = format!("out-{}", reference.replace(':', "-"));
    let _ = fs::remove_dir_all(w.path(&to));
    run(w
        .bin("unstash")
        .args([reference, "--store", store, "--to", &to, "--quiet"]))?;
    let d = dump(&w.path(&to))?;
    fs::remove_dir_all(w.path(&to))?;
    Ok(d)
}

/// The names in a directory (empty if it does not exist).
fn names(dir: &Path) -> Result<Vec<String>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut v: Vec<String> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

/// A tree of `dirs` × `files` small files plus `big` files of 10 MiB (incompressible, so
/// the layer writer spends real time on them).
fn big_tree(root: &Path, dirs: usize, files: usize, big: usize) -> Result<()> {
    fs::create_dir_all(root)?;
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir(&dir)?;
        for f in 0..files {
            fs::write(
                dir.join(format!("f{f:03}")),
                format!("file {d} {f}\n").repeat(3),
            )?;
        }
    }
    for b in 0..big {
        // A SHA-256 chain: cheap, deterministic, and not compressible.
        let mut data = Vec::with_capacity(10 << 20);
        let mut block = sha2::Sha256::digest(format!("seed {b}").as_bytes());
        while data.len() < 10 << 20 {
            data.extend_from_slice(&block);
            block = sha2::Sha256::digest(block);
        }
        fs::write(root.join(format!("big{b}")), &data)?;
    }
    Ok(())
}

/// Runs a command as uid/gid 65534 (nobody), with no supplementary groups.
fn as_nobody(program: &Path) -> Option<Command> {
    if have("setpriv") {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        Some(c)
    } else if have("runuser") {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        Some(c)
    } else {
        None
    }
}

/// Our binary `name` where uid 65534 can run it: in place, or else a copy in the work
/// directory (a clone under `/root` is closed to other users).
fn nobody_can_run(w: &Workdir, name: &str) -> Result<PathBuf> {
    let built = bin_dir().join(name);
    let mut probe = as_nobody(&built).context("no setpriv or runuser")?;
    if probe
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(built);
    }
    let copy = w.path("bin").join(name);
    if !copy.exists() {
        fs::create_dir_all(w.path("bin"))?;
        fs::copy(&built, &copy)?;
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
    }
    Ok(copy)
}

fn chown(p: &Path, uid: u32) -> Result<()> {
    std::os::unix::fs::chown(p, Some(uid), Some(uid))?;
    Ok(())
}

/// Waits until process `pid` is blocked waiting for a file lock (`/proc/locks` shows
/// waiters as `->` lines). Fails if the child exits first.
fn wait_until_blocked_on_lock(child: &mut Child) -> Result<()> {
    let pid = child.id().to_string();
    let start = Instant::now();
    loop {
        let locks = fs::read_to_string("/proc/locks")?;
        if locks.lines().any(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            t.get(1) == Some(&"->") && t.get(5) == Some(&pid.as_str())
        }) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the child exited ({status}) instead of waiting for the lock");
        }
        // Not an assertion on timing: a generous bound so a broken lock cannot hang CI.
        ensure!(
            start.elapsed() < Duration::from_mins(10),
            "never blocked on a lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hold_lock(store: &Path, name: &str) -> Result<fs::File> {
    let path = store.join(format!(".stackbuild/locks/{name}.lock"));
    fs::create_dir_all(path.parent().unwrap())?;
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    f.lock()?;
    Ok(f)
}

fn spawn(c: &mut Command) -> Result<Child> {
    Ok(c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
}

fn finish(child: Child) -> Result<String> {
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------
// Crash safety

/// Every named failpoint of a stash, in the order a run reaches them.
const FAILPOINTS: &[&str] = &[
    "blob-before-rename",
    "blob-after-rename",
    "stash-after-layer",
    "stash-after-config",
    "stash-before-index",
    "index-before-rename",
    "index-after-rename",
];

#[test]
fn stash_killed_at_every_failpoint_and_at_timed_points_leaves_a_good_store() -> Result<()> {
    let w = Workdir::new("killed")?;
    // An earlier stash of another name, and the old version of the one we kill.
    w.tree("other", "d etc 755 0:0\nf etc/other 644 0:0 other\\n\n")?;
    w.tree("v1", "d etc 755 0:0\nf etc/os-release 644 0:0 v1\\n\n")?;
    let other_dump = dump(&w.path("other"))?;
    let v1_dump = dump(&w.path("v1"))?;
    stash(&w, "store", "other", "other", "latest")?;
    // The large tree: 20 000 files and 30 MiB of incompressible data.
    big_tree(&w.path("v2"), 100, 200, 3)?;
    let v2_dump = dump(&w.path("v2"))?;

    // Measure one full run, into a scratch copy of the store.
    crate::util::copy_tree(&w.path("store"), &w.path("scratch"))?;
    stash(&w, "scratch", "v1", "big", "m")?;
    let start = Instant::now();
    stash(&w, "scratch", "v2", "big", "m")?;
    let full = start.elapsed();
    fs::remove_dir_all(w.path("scratch"))?;
    eprintln!("full stash of the large tree: {full:?}");

    let mut points: Vec<(String, Option<&str>, Option<Duration>)> = FAILPOINTS
        .iter()
        .map(|f| (format!("failpoint {f}"), Some(*f), None))
        .collect();
    for frac in [0.1, 0.3, 0.5, 0.7, 0.9] {
        points.push((
            format!("kill -9 at {:.0}% of a run", frac * 100.0),
            None,
            Some(full.mul_f64(frac)),
        ));
    }
    // What each tag must hold: the tags of killed runs end up old (v1) or new (v2).
    let mut expect: BTreeMap<String, &str> = BTreeMap::new();
    expect.insert("other:latest".into(), "other");
    let trees: BTreeMap<&str, &str> = [
        ("other", other_dump.as_str()),
        ("v1", v1_dump.as_str()),
        ("v2", v2_dump.as_str()),
    ]
    .into();
    let mut last_killed: Option<u32> = None;
    for (k, (what, failpoint, delay)) in points.iter().enumerate() {
        let tag = format!("p{k}");
        let full_ref = format!("big:{tag}");
        // The old image: this tag's first stash. Being a writer, it also tidies up after
        // the previous kill.
        stash(&w, "store", "v1", "big", &tag)?;
        if let Some(pid) = last_killed {
            let left: Vec<String> = names(&w.path("store/.stackbuild/tmp"))?
                .into_iter()
                .filter(|n| n.contains(&format!("-{pid}-")))
                .collect();
            ensure!(
                left.is_empty(),
                "temp files of the killed run survived the next writer: {left:?}"
            );
        }
        let before = listing(&w, "store")?;
        let mut cmd = w.bin("stash");
        cmd.args([
            "--store",
            "store",
            "--root",
            "v2",
            "--container-name",
            "big",
            "--tag",
            &tag,
            "--quiet",
        ]);
        if let Some(f) = failpoint {
            cmd.env("STACKBUILD_FAILPOINT", f);
        }
        let mut child = spawn(&mut cmd)?;
        let child_pid = child.id();
        last_killed = Some(child_pid);
        let status = if let Some(d) = delay {
            std::thread::sleep(*d);
            // SIGKILL; an error here means it had already exited, which is fine too.
            let _ = child.kill();
            child.wait()?
        } else {
            let out = child.wait_with_output()?;
            ensure!(
                String::from_utf8_lossy(&out.stderr).contains("failpoint"),
                "{what}: the failpoint was never reached: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.status
        };
        ensure!(
            failpoint.is_none() || !status.success(),
            "{what}: the run was not stopped"
        );
        let leftovers = names(&w.path("store/.stackbuild/tmp"))?
            .into_iter()
            .filter(|n| n.contains(&format!("-{child_pid}-")))
            .count();
        if *failpoint == Some("blob-before-rename") {
            // The half-made layer is there for the next writer to clean up.
            ensure!(
                leftovers == 1,
                "{what}: {leftovers} temp files left, want 1"
            );
        }

        // The store reads; every earlier stash is as it was; the tag is old or new.
        let after = listing(&w, "store")?;
        for (r, digest) in &before {
            if *r != full_ref {
                ensure!(
                    after.get(r) == Some(digest),
                    "{what}: {r} changed or vanished"
                );
            }
        }
        ensure!(
            after.len() == before.len(),
            "{what}: stashes {before:?} became {after:?}"
        );
        verify_ok(&w, "store").with_context(|| what.clone())?;
        let got = unstash_dump(&w, "store", &full_ref)?;
        let now = if got == v1_dump {
            "v1"
        } else if got == v2_dump {
            "v2"
        } else {
            assert_same(&v2_dump, &got).with_context(|| format!("{what}: {full_ref}"))?;
            unreachable!()
        };
        eprintln!("{what}: {full_ref} holds {now} ({status})");
        if *failpoint == Some("index-after-rename") {
            ensure!(
                now == "v2",
                "{what}: the index was renamed, yet the tag is old"
            );
        } else if failpoint.is_some() {
            ensure!(
                now == "v1",
                "{what}: the tag moved before the index was renamed"
            );
        }
        expect.insert(full_ref, now);
    }

    // Every stash, once more, in full; then gc removes what the killed runs left, and the
    // store still verifies and reads.
    for (r, tree) in &expect {
        assert_same(trees[tree], &unstash_dump(&w, "store", r)?).with_context(|| r.clone())?;
    }
    let gc = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--gc", "--json", "--quiet"]))?)?;
    ensure!(
        gc["blobs_removed"].as_u64() > Some(0),
        "the killed runs' layers were not collected: {gc}"
    );
    verify_ok(&w, "store")?;
    for (r, tree) in &expect {
        assert_same(trees[tree], &unstash_dump(&w, "store", r)?).with_context(|| r.clone())?;
    }
    ensure!(names(&w.path("store/.stackbuild/tmp"))?.is_empty());
    Ok(())
}

#[test]
fn privileged_a_stash_that_runs_out_of_space_leaves_the_store_as_it_was() -> Result<()> {
    if !is_root() {
        skip!("needs root to mount a tmpfs");
    }
    let w = Workdir::new("enospc")?;
    fs::create_dir(w.path("small"))?;
    let mount = Mount::tmpfs(&w.path("small"), "4m")?;
    w.tree("a", "d etc 755 0:0\nf etc/a 644 0:0 a\\n\n")?;
    big_tree(&w.path("b"), 1, 1, 1)?;
    stash(&w, "small/store", "a", "aa", "latest")?;
    let before = listing(&w, "small/store")?;
    let out = output(w.bin("stash").args([
        "--store",
        "small/store",
        "--root",
        "b",
        "--container-name",
        "bb",
    ]))?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("No space left on device"), "{err}");
    ensure!(listing(&w, "small/store")? == before);
    verify_ok(&w, "small/store")?;
    ensure!(
        names(&w.path("small/store/.stackbuild/tmp"))?.is_empty(),
        "the failed run left temp files"
    );
    drop(mount);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Concurrent writers

#[test]
fn three_concurrent_stashes_into_one_store_all_land() -> Result<()> {
    let w = Workdir::new("concurrent")?;
    for t in ["t1", "t2", "t3"] {
        big_tree(&w.path(t), 10, 100, 0)?;
        fs::write(w.path(t).join("which"), t)?;
    }
    // Different names, at once.
    let children = ["t1", "t2", "t3"]
        .iter()
        .map(|t| {
            spawn(w.bin("stash").args([
                "--store",
                "store",
                "--root",
                t,
                "--container-name",
                &format!("n-{t}"),
                "--json",
                "--quiet",
            ]))
        })
        .collect::<Result<Vec<_>>>()?;
    for c in children {
        finish(c)?;
    }
    let l = listing(&w, "store")?;
    ensure!(l.len() == 3, "{l:?}");
    for t in ["t1", "t2", "t3"] {
        assert_same(
            &dump(&w.path(t))?,
            &unstash_dump(&w, "store", &format!("n-{t}:latest"))?,
        )?;
    }

    // One name, three at once, on top of an existing image: they serialize on the name's
    // lock, so each diff is against the previous result and the image gains three layers.
    w.tree("base", "d etc 755 0:0\n")?;
    stash(&w, "store", "base", "same", "latest")?;
    let children = ["t1", "t2", "t3"]
        .iter()
        .map(|t| {
            spawn(w.bin("stash").args([
                "--store",
                "store",
                "--root",
                t,
                "--container-name",
                "same",
                "--json",
                "--quiet",
            ]))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut reports = Vec::new();
    for (c, t) in children.into_iter().zip(["t1", "t2", "t3"]) {
        reports.push((t, json(&finish(c)?)?));
    }
    let mut layers: Vec<u64> = reports
        .iter()
        .map(|(_, r)| r["layers"].as_u64().unwrap())
        .collect();
    layers.sort_unstable();
    ensure!(
        layers == [2, 3, 4],
        "the three runs did not stack their layers: {layers:?}"
    );
    let tag = listing(&w, "store")?["same:latest"].clone();
    let (last, _) = reports
        .iter()
        .find(|(_, r)| r["manifest"] == tag.as_str())
        .context("the tag points at none of the runs' results")?;
    assert_same(
        &dump(&w.path(last))?,
        &unstash_dump(&w, "store", "same:latest")?,
    )?;
    verify_ok(&w, "store")?;
    Ok(())
}

#[test]
fn the_index_is_reread_under_the_lock() -> Result<()> {
    let w = Workdir::new("reread")?;
    w.tree("root", "d etc 755 0:0\n")?;
    stash(&w, "store", "root", "first", "latest")?;
    let store = w.path("store");
    let lock = hold_lock(&store, "store")?;
    let mut child = spawn(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "second",
        "--quiet",
    ]))?;
    wait_until_blocked_on_lock(&mut child)?;
    // Another writer's update lands while `second` waits: `second` must keep it, which it
    // only can by reading the index after it has the lock.
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(store.join("index.json"))?)?;
    let mut copy = index["manifests"][0].clone();
    copy["annotations"]["org.opencontainers.image.ref.name"] = "injected:latest".into();
    index["manifests"].as_array_mut().unwrap().push(copy);
    fs::write(store.join("index.json"), serde_json::to_vec(&index)?)?;
    drop(lock);
    finish(child)?;
    let l = listing(&w, "store")?;
    ensure!(
        l.keys().cloned().collect::<Vec<_>>()
            == ["first:latest", "injected:latest", "second:latest"],
        "{l:?}"
    );
    Ok(())
}

#[test]
fn two_stashes_of_one_name_serialize_on_its_lock() -> Result<()> {
    let w = Workdir::new("namelock")?;
    w.tree("root", "d etc 755 0:0\n")?;
    stash(&w, "store", "root", "other", "latest")?;
    let lock = hold_lock(&w.path("store"), "stash-held")?;
    let mut child = spawn(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "held",
        "--quiet",
    ]))?;
    wait_until_blocked_on_lock(&mut child)?;
    // Blocked on the name's lock (not a timing question: it cannot proceed until we let go).
    ensure!(child.try_wait()?.is_none());
    ensure!(!listing(&w, "store")?.contains_key("held:latest"));
    // Other names are not held up.
    stash(&w, "store", "root", "free", "latest")?;
    drop(lock);
    finish(child)?;
    ensure!(listing(&w, "store")?.contains_key("held:latest"));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Store maintenance

#[test]
fn remove_gc_and_verify() -> Result<()> {
    let w = Workdir::new("maint")?;
    w.tree("a", "d etc 755 0:0\nf etc/a 644 0:0 only in a\\n\n")?;
    w.tree("b", "d etc 755 0:0\nf etc/b 644 0:0 only in b\\n\n")?;
    stash(&w, "store", "a", "aa", "latest")?;
    stash(&w, "store", "b", "bb", "v1")?;
    let b_dump = dump(&w.path("b"))?;
    let v = verify_ok(&w, "store")?;
    ensure!(v["manifests"] == 2 && v["blobs"] == 6, "{v}");

    // --remove: unknown names fail, a known one goes, the blobs stay until --gc.
    let out = output(
        w.bin("stash")
            .args(["--store", "store", "--remove", "nope"]),
    )?;
    assert_eq!(out.status.code(), Some(1));
    ensure!(String::from_utf8_lossy(&out.stderr).contains("no stash nope:latest"));
    let r = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--remove", "aa", "--json"]))?)?;
    ensure!(r["schema"] == 1 && r["removed"] == "aa:latest", "{r}");
    ensure!(listing(&w, "store")?.keys().collect::<Vec<_>>() == ["bb:v1"]);
    ensure!(names(&w.path("store/blobs/sha256"))?.len() == 6);

    // Leftovers: a temp file of a dead process goes, one of a live process (us) stays.
    let tmp = w.path("store/.stackbuild/tmp");
    fs::write(tmp.join("blob-99999999-0"), b"half a blob")?;
    let live = format!("blob-{}-0", std::process::id());
    fs::write(tmp.join(&live), b"in flight")?;
    let gc = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--gc", "--json"]))?)?;
    ensure!(gc["schema"] == 1, "{gc}");
    ensure!(
        gc["blobs_removed"] == 3 && gc["blobs_kept"] == 3,
        "a's layer, config and manifest: {gc}"
    );
    ensure!(gc["temp_removed"] == 1 && gc["temp_bytes"] == 11, "{gc}");
    ensure!(gc["caches_removed"] == 1, "a's layer index: {gc}");
    let freed = gc["blob_bytes"].as_u64().unwrap()
        + gc["temp_bytes"].as_u64().unwrap()
        + gc["cache_bytes"].as_u64().unwrap();
    ensure!(gc["bytes_freed"] == freed && freed > 0, "{gc}");
    ensure!(names(&tmp)? == std::slice::from_ref(&live));
    fs::remove_file(tmp.join(&live))?;
    verify_ok(&w, "store")?;
    assert_same(&b_dump, &unstash_dump(&w, "store", "bb:v1")?)?;
    // Nothing left to collect.
    let gc = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--gc", "--json"]))?)?;
    ensure!(gc["bytes_freed"] == 0, "{gc}");
    Ok(())
}

#[test]
fn verify_names_each_damaged_blob() -> Result<()> {
    let w = Workdir::new("damage")?;
    w.tree("a", "d etc 755 0:0\nf etc/a 644 0:0 aaaa\\n\n")?;
    w.tree("b", "d etc 755 0:0\nf etc/b 644 0:0 bbbb\\n\n")?;
    let first = stash(&w, "store", "a", "aa", "latest")?;
    let second = stash(&w, "store", "b", "bb", "latest")?;
    let blob = |d: &serde_json::Value| {
        w.path("store/blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    // a's layer: one bit flipped, same size. b's manifest: gone.
    let layer = first["layer"]["digest"].clone();
    let path = blob(&layer);
    let mut bytes = fs::read(&path)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    fs::write(&path, &bytes)?;
    fs::remove_file(blob(&second["manifest"]))?;

    let out = output(w.bin("stash").args(["--store", "store", "--verify"]))?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (digest, what) in [
        (layer.as_str().unwrap(), "content hashes to"),
        (second["manifest"].as_str().unwrap(), "missing"),
    ] {
        ensure!(
            err.lines()
                .any(|l| l.contains("damaged") && l.contains(digest) && l.contains(what)),
            "{digest} ({what}) not named in:\n{err}"
        );
    }
    let out = output(
        w.bin("stash")
            .args(["--store", "store", "--verify", "--json"]),
    )?;
    assert_eq!(out.status.code(), Some(1));
    let v = json(&String::from_utf8_lossy(&out.stdout))?;
    ensure!(
        v["ok"] == false && v["problems"].as_array().unwrap().len() == 2,
        "{v}"
    );
    ensure!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["blob"] == layer && p["refs"][0] == "aa:latest")
    );
    // gc refuses to guess what a missing manifest referenced.
    let out = output(w.bin("stash").args(["--store", "store", "--gc"]))?;
    assert_eq!(out.status.code(), Some(1));
    ensure!(String::from_utf8_lossy(&out.stderr).contains("gc removed nothing"));
    // unstash refuses the damaged layer too.
    let out = output(
        w.bin("unstash")
            .args(["a", "--store", "store", "--to", "back"]),
    )?;
    assert_eq!(out.status.code(), Some(1));
    ensure!(!w.path("back").exists());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Ownership and permissions

#[test]
fn privileged_a_writer_refuses_a_store_it_does_not_own_or_others_can_write() -> Result<()> {
    if !is_root() {
        skip!("needs root to chown the store to another user");
    }
    let w = Workdir::new("owner")?;
    w.tree("root", "d etc 755 0:0\n")?;
    stash(&w, "store", "root", "mine", "latest")?;
    let store = w.path("store");
    let index = fs::read(store.join("index.json"))?;
    let write_cmds: [&[&str]; 3] = [
        &["--root", "root", "--container-name", "theirs"],
        &["--remove", "mine"],
        &["--gc"],
    ];
    chown(&store, 65534)?;
    for args in write_cmds {
        let out = output(w.bin("stash").args(["--store", "store"]).args(args))?;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            err.contains("owned by uid 65534, not by you (uid 0)"),
            "{args:?}: {err}"
        );
    }
    chown(&store, 0)?;
    for mode in [0o777, 0o775, 0o757] {
        fs::set_permissions(&store, fs::Permissions::from_mode(mode))?;
        for args in write_cmds {
            let out = output(w.bin("stash").args(["--store", "store"]).args(args))?;
            assert_eq!(out.status.code(), Some(1), "{mode:o} {args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                err.contains("writable by group or others") && err.contains("chmod go-w"),
                "{mode:o} {args:?}: {err}"
            );
        }
        // Readers are not writers: listing and verifying still work.
        ensure!(listing(&w, "store")?.contains_key("mine:latest"));
        verify_ok(&w, "store")?;
    }
    ensure!(
        fs::read(store.join("index.json"))? == index,
        "a refused writer changed the index"
    );
    fs::set_permissions(&store, fs::Permissions::from_mode(0o755))?;
    // The directories inside count as much as the top one.
    for (sub, uid, mode) in [
        ("blobs/sha256", 0, 0o777),
        ("blobs", 65534, 0o755),
        (".stackbuild", 0, 0o775),
    ] {
        let p = store.join(sub);
        chown(&p, uid)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        let out = output(
            w.bin("stash")
                .args(["--store", "store"])
                .args(write_cmds[0]),
        )?;
        assert_eq!(out.status.code(), Some(1), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            err.contains(&p.display().to_string())
                && (err.contains("owned by uid 65534") || err.contains("writable by group")),
            "{sub}: {err}"
        );
        chown(&p, 0)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
    }
    stash(&w, "store", "root", "theirs", "latest")?;
    Ok(())
}

#[test]
fn privileged_readers_need_only_read_access() -> Result<()> {
    if !is_root() {
        skip!("needs root to run as another user");
    }
    let Some(mut probe) = as_nobody(Path::new("/bin/true")) else {
        skip!("neither setpriv nor runuser is installed");
    };
    if !probe.status()?.success() {
        skip!("cannot switch to uid 65534 here");
    }
    let w = Workdir::new("readers")?;
    // Owned by 65534 throughout, so it comes back identical for that user.
    w.tree(
        "root",
        "d . 755 65534:65534\nd etc 755 65534:65534\nf etc/conf 644 65534:65534 x=1\\n\n",
    )?;
    stash(&w, "store", "root", "shared", "latest")?;
    fs::create_dir(w.path("mine"))?;
    chown(&w.path("mine"), 65534)?;
    let bin = |name: &str| as_nobody(&nobody_can_run(&w, name).unwrap()).expect("checked above");
    let list = run(bin("stash")
        .current_dir(&w.root)
        .args(["--store", "store", "--list"]))?;
    ensure!(list.contains("shared:latest"), "{list}");
    run(bin("stash")
        .current_dir(&w.root)
        .args(["--store", "store", "--verify"]))?;
    run(bin("unstash").current_dir(&w.root).args([
        "shared",
        "--store",
        "store",
        "--to",
        "mine/back",
    ]))?;
    assert_same(&dump(&w.path("root"))?, &dump(&w.path("mine/back"))?)?;
    // The same user may not write into root's store.
    let out = output(bin("stash").current_dir(&w.root).args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "intruder",
    ]))?;
    assert_eq!(out.status.code(), Some(1));
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("owned by uid 0, not by you (uid 65534)")
    );
    Ok(())
}

#[test]
fn privileged_unreadable_input_is_named() -> Result<()> {
    if !is_root() {
        skip!("needs root to make files another user cannot read");
    }
    let Some(mut probe) = as_nobody(Path::new("/bin/true")) else {
        skip!("neither setpriv nor runuser is installed");
    };
    if !probe.status()?.success() {
        skip!("cannot switch to uid 65534 here");
    }
    let w = Workdir::new("unreadable")?;
    fs::create_dir(w.path("store"))?;
    chown(&w.path("store"), 65534)?;
    let stash_as_nobody = |root: &str| -> Result<std::process::Output> {
        output(
            as_nobody(&nobody_can_run(&w, "stash")?)
                .unwrap()
                .current_dir(&w.root)
                .args(["--store", "store", "--root", root, "--container-name", "x1"]),
        )
    };
    // A root-owned 0600 file in the tree.
    w.tree(
        "file",
        "d etc 755 0:0\nf etc/passwd 644 0:0 root:x:0:0\\n\nf etc/shadow 600 0:0 secret\\n\n",
    )?;
    // A root-owned 0700 directory in the tree.
    w.tree(
        "dir",
        "d etc 755 0:0\nd etc/ssl 700 0:0\nf etc/ssl/key 600 0:0 k\n",
    )?;
    // An unreadable --root.
    w.tree("closed", "d . 700 0:0\nd etc 755 0:0\n")?;
    for (root, code, named) in [
        ("file", 1, "file/etc/shadow: Permission denied"),
        ("dir", 1, "dir/etc/ssl: Permission denied"),
        ("closed", 2, "--root closed: cannot read the directory"),
    ] {
        let out = stash_as_nobody(root)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{root}: {err}");
        ensure!(err.contains(named), "{root}: want {named:?} in {err}");
        ensure!(
            !listing(&w, "store")?.contains_key("x1:latest"),
            "{root}: a failed stash was tagged"
        );
        ensure!(
            names(&w.path("store/.stackbuild/tmp"))?.is_empty(),
            "{root}: temp files left behind"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Hostile arguments and input

#[test]
fn bad_arguments_exit_with_their_code_and_say_why() -> Result<()> {
    let w = Workdir::new("badargs")?;
    w.tree("bare", "d etc 755 0:0\n")?;
    fs::write(w.path("a-file"), b"x")?;
    w.tree(
        "bomb",
        "d image 755 0:0\nf image/config.xml 644 0:0 <?xml version=\"1.0\"?><!DOCTYPE image [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]><image schemaversion=\"7.4\" name=\"&c;\"/>\n",
    )?;
    let long = "a".repeat(300);
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--root", "missing", "--container-name", "x1"],
            2,
            "--root missing: No such file",
        ),
        (
            vec!["--root", "a-file", "--container-name", "x1"],
            2,
            "--root a-file: not a directory",
        ),
        (
            vec!["--root", "bare"],
            2,
            "no image/config.xml to take the stash name from; give --container-name NAME",
        ),
        (
            vec!["--root", "bare", "--container-name", "bad_name"],
            2,
            "^[0-9a-zA-Z][0-9a-zA-Z-]*[0-9a-zA-Z]$",
        ),
        (
            vec!["--root", "bare", "--container-name", &long],
            2,
            "cannot be used as a stash name",
        ),
        (
            vec!["--root", "bare", "--container-name", "x1", "--tag=-t"],
            2,
            "tag \"-t\"",
        ),
        (vec!["--root", "bomb"], 2, "DOCTYPE is not allowed"),
        (vec!["--remove", "x1"], 2, "does not exist"),
        (vec!["--gc"], 2, "does not exist"),
        (vec!["--verify"], 1, "not an OCI image layout"),
        (vec!["--gc", "--root", "bare"], 2, "cannot be used with"),
    ];
    for (args, code, want) in cases {
        let out = output(w.bin("stash").args(["--store", "store"]).args(&args))?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        ensure!(err.contains(want), "{args:?}: want {want:?} in {err}");
        ensure!(out.stdout.is_empty(), "{args:?}: wrote to stdout");
        ensure!(!w.path("store").exists(), "{args:?}: created the store");
    }
    Ok(())
}

#[test]
fn unstash_into_a_non_empty_directory_touches_nothing() -> Result<()> {
    let w = Workdir::new("nonempty")?;
    w.tree("root", "d etc 755 0:0\nf etc/a 644 0:0 a\n")?;
    stash(&w, "store", "root", "img", "latest")?;
    w.tree("parent/dest", "f keep 600 0:0 precious\n")?;
    let before = dump(&w.path("parent"))?;
    let out = output(
        w.bin("unstash")
            .args(["img", "--store", "store", "--to", "parent/dest"]),
    )?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("exists and is not empty"), "{err}");
    assert_same(&before, &dump(&w.path("parent"))?)?;
    // A file in the way is refused the same way.
    let out =
        output(
            w.bin("unstash")
                .args(["img", "--store", "store", "--to", "parent/dest/keep"]),
        )?;
    assert_eq!(out.status.code(), Some(2));
    assert_same(&before, &dump(&w.path("parent"))?)?;
    Ok(())
}

#[test]
fn a_path_over_4096_bytes_is_refused_by_stash() -> Result<()> {
    let w = Workdir::new("deep")?;
    fs::create_dir(w.path("root"))?;
    // 25 components of 200 bytes: 5 025 bytes, made one directory at a time (no single
    // path the kernel would refuse).
    let mut dir = rustix::fs::open(
        w.path("root"),
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )?;
    let comp = "c".repeat(200);
    for _ in 0..25 {
        rustix::fs::mkdirat(&dir, comp.as_str(), rustix::fs::Mode::from_raw_mode(0o755))?;
        dir = rustix::fs::openat(
            &dir,
            comp.as_str(),
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )?;
    }
    let out = output(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "deep",
    ]))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    ensure!(err.contains("exceeds the 4096-byte limit"), "{err}");
    ensure!(!listing(&w, "store")?.contains_key("deep:latest"));
    Ok(())
}

/// A minimal tar writer for hostile layers (the tests never trust our own writer to make
/// input our reader must refuse).
mod rawtar {
    fn octal(field: &mut [u8], v: u64) {
        let digits = field.len() - 1;
        let s = format!("{v:0digits$o}");
        field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    }

    pub fn header(name: &[u8], typeflag: u8, size: u64) -> Vec<u8> {
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 0);
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h.to_vec()
    }

    fn pad(out: &mut Vec<u8>) {
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    /// A PAX `x` header carrying `body` as is.
    pub fn pax_raw(out: &mut Vec<u8>, body: &[u8]) {
        out.extend(header(b"PaxHeader", b'x', body.len() as u64));
        out.extend_from_slice(body);
        pad(out);
    }

    pub fn record(key: &str, value: &[u8]) -> Vec<u8> {
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        let mut r = format!("{len} {key}=").into_bytes();
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    }

    pub fn file(out: &mut Vec<u8>, name: &[u8], data: &[u8]) {
        out.extend(header(name, b'0', data.len() as u64));
        out.extend_from_slice(data);
        pad(out);
    }

    pub fn end(out: &mut Vec<u8>) {
        out.extend_from_slice(&[0u8; 1024]);
    }
}

/// Writes an OCI layout at `dir` holding one image `NAME:latest` of uncompressed `layers`.
fn oci_layout(dir: &Path, name: &str, layers: &[Vec<u8>]) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> Result<String> {
        let hex = format!("{:x}", sha2::Sha256::digest(bytes));
        fs::write(blobs.join(&hex), bytes)?;
        Ok(format!("sha256:{hex}"))
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let d = put(l)?;
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": l.len()
        }));
        diff_ids.push(d);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))?;
    let c = put(&config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": descs
    }))?;
    let m = put(&manifest)?;
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": m, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": format!("{name}:latest")}
            }]
        }))?,
    )?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

#[test]
fn layers_over_the_resource_limits_are_refused_with_clear_errors() -> Result<()> {
    let w = Workdir::new("limits")?;
    let long_name = "n".repeat(256);
    let long_path = vec!["p".repeat(200); 21].join("/");
    let mut cases: Vec<(&str, Vec<u8>, String)> = Vec::new();
    let mut t = Vec::new();
    rawtar::pax_raw(
        &mut t,
        &rawtar::record("path", format!("etc/{long_name}").as_bytes()),
    );
    rawtar::file(&mut t, b"placeholder", b"x");
    rawtar::end(&mut t);
    cases.push((
        "name",
        t,
        "a name of 256 bytes exceeds the 255 byte limit".into(),
    ));
    let mut t = Vec::new();
    rawtar::pax_raw(&mut t, &rawtar::record("path", long_path.as_bytes()));
    rawtar::file(&mut t, b"placeholder", b"x");
    rawtar::end(&mut t);
    cases.push((
        "path",
        t,
        format!(
            "a path of {} bytes exceeds the 4096 byte limit",
            long_path.len()
        ),
    ));
    let mut t = Vec::new();
    let mut body = Vec::new();
    while body.len() <= 1 << 20 {
        body.extend(rawtar::record("comment", &vec![b'c'; 60_000]));
    }
    let pax_len = body.len();
    rawtar::pax_raw(&mut t, &body);
    rawtar::file(&mut t, b"f", b"x");
    rawtar::end(&mut t);
    cases.push((
        "pax",
        t,
        format!("PAX header of {pax_len} bytes exceeds the 1048576 byte limit"),
    ));
    let mut t = Vec::new();
    rawtar::pax_raw(
        &mut t,
        &rawtar::record("SCHILY.xattr.user.big", &vec![b'v'; (64 << 10) + 1]),
    );
    rawtar::file(&mut t, b"f", b"x");
    rawtar::end(&mut t);
    cases.push((
        "xattr",
        t,
        "xattr user.big value of 65537 bytes exceeds the 65536 byte limit".into(),
    ));
    for (what, layer, want) in cases {
        let dir = w.path(&format!("layout-{what}"));
        oci_layout(&dir, what, &[layer])?;
        let to = format!("out-{what}");
        let out =
            output(
                w.bin("unstash")
                    .args([&format!("oci:{}:{what}", dir.display()), "--to", &to]),
            )?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        ensure!(err.contains(&want), "{what}: want {want:?} in {err}");
        ensure!(!w.path(&to).exists(), "{what}: left a target behind");
        ensure!(
            names(&w.root)?.iter().all(|n| !n.contains("stackbuild-")),
            "{what}: left a staging directory: {:?}",
            names(&w.root)?
        );
    }
    Ok(())
}

/// A tmpfs mounted for one test, unmounted (lazily, whatever happens) on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Result<Mount> {
        run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at))?;
        Ok(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn privileged_unstash_checks_free_space_before_writing() -> Result<()> {
    if !is_root() {
        skip!("needs root to mount a tmpfs");
    }
    let w = Workdir::new("space")?;
    w.tree("v1", "d etc 755 0:0\nf etc/a 644 0:0 a\\n\n")?;
    stash(&w, "store", "v1", "one", "latest")?;
    stash(&w, "store", "v1", "two", "latest")?;
    // 20 MiB of data (compresses to almost nothing: the layer is small, the tree is not).
    w.tree(
        "v2",
        "d etc 755 0:0\nf etc/a 644 0:0 a\\n\nf zeros 644 0:0\n",
    )?;
    fs::File::options()
        .write(true)
        .open(w.path("v2/zeros"))?
        .write_all(&vec![0u8; 20 << 20])?;
    // "one": a single layer (checked from its cached index); "two": two layers (the plan).
    fs::remove_dir_all(w.path("store"))?;
    stash(&w, "store", "v2", "one", "latest")?;
    stash(&w, "store", "v1", "two", "latest")?;
    stash(&w, "store", "v2", "two", "latest")?;
    fs::create_dir(w.path("small"))?;
    let mount = Mount::tmpfs(&w.path("small"), "8m")?;
    for image in ["one", "two"] {
        let out = output(
            w.bin("unstash")
                .args([image, "--store", "store", "--to", "small/out"]),
        )?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{image}: {err}");
        ensure!(
            err.contains("not enough free space") && err.contains("nothing was written"),
            "{image}: {err}"
        );
        ensure!(
            names(&w.path("small"))?.is_empty(),
            "{image}: wrote into the tmpfs"
        );
        let out = output(w.bin("unstash").args([
            image,
            "--store",
            "store",
            "--output",
            "small/out.tar",
        ]))?;
        assert_eq!(out.status.code(), Some(1), "{image} as a tar");
        ensure!(
            names(&w.path("small"))?.is_empty(),
            "{image}: wrote into the tmpfs"
        );
    }
    drop(mount);
    // The same images fit elsewhere.
    assert_same(&dump(&w.path("v2"))?, &unstash_dump(&w, "store", "two")?)?;
    Ok(())
}

#[test]
fn privileged_stash_refuses_xattrs_no_reader_would_take_back() -> Result<()> {
    if !is_root() {
        skip!("needs root to mount a tmpfs (ext4 holds no 64 KiB xattr)");
    }
    let w = Workdir::new("bigxattrs")?;
    fs::create_dir(w.path("root"))?;
    let mount = Mount::tmpfs(&w.path("root"), "16m")?;
    fs::write(w.path("root/heavy"), b"x")?;
    // 20 values of 64 KiB: 1.25 MiB of xattrs on one file, which tmpfs accepts and a PAX
    // header over 1 MiB would carry (and every reader of ours refuse).
    for i in 0..20 {
        rustix::fs::setxattr(
            w.path("root/heavy"),
            format!("user.big{i:02}").as_str(),
            &vec![b'v'; 64 << 10],
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    let out = output(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "heavy",
    ]))?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    ensure!(
        err.contains("root/heavy: its metadata (20 xattrs")
            && err.contains("over the 1048576-byte limit"),
        "{err}"
    );
    ensure!(!listing(&w, "store")?.contains_key("heavy:latest"));
    ensure!(names(&w.path("store/.stackbuild/tmp"))?.is_empty());
    drop(mount);
    Ok(())
}

#[test]
fn gc_killed_midway_leaves_a_good_store_and_finishes_next_time() -> Result<()> {
    let w = Workdir::new("gckill")?;
    w.tree("a", "d etc 755 0:0\nf etc/a 644 0:0 a\\n\n")?;
    w.tree("b", "d etc 755 0:0\nf etc/b 644 0:0 b\\n\n")?;
    stash(&w, "store", "a", "aa", "latest")?;
    stash(&w, "store", "b", "bb", "latest")?;
    run(w
        .bin("stash")
        .args(["--store", "store", "--remove", "aa", "--quiet"]))?;
    // Abort right after the first unreferenced blob is gone.
    let out = output(
        w.bin("stash")
            .args(["--store", "store", "--gc"])
            .env("STACKBUILD_FAILPOINT", "gc-after-blob"),
    )?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("failpoint"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    verify_ok(&w, "store")?;
    assert_same(&dump(&w.path("b"))?, &unstash_dump(&w, "store", "bb")?)?;
    let gc = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--gc", "--json", "--quiet"]))?)?;
    ensure!(gc["blobs_removed"] == 2 && gc["blobs_kept"] == 3, "{gc}");
    verify_ok(&w, "store")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// A tree that changes under stash: made deterministic with the failpoint hooks
// (`STACKBUILD_FAILPOINT_RUN` runs a command at the named point, which then goes on).

/// A secret no stash may read: a mode-600 file outside the root, under the names the swaps
/// below point into.
const SECRET: &[u8] = b"TOP-SECRET-4f1c9a-outside-the-root";

/// Every file below `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Result<Vec<PathBuf>> {
    let mut hits = Vec::new();
    if !dir.exists() {
        return Ok(hits);
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let t = e.file_type()?;
        if t.is_dir() {
            hits.extend(files_containing(&p, needle)?);
        } else if t.is_file() {
            let bytes = fs::read(&p)?;
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p);
            }
        }
    }
    Ok(hits)
}

/// Every file of `dir` with its contents (the store before and after a refused stash),
/// but the empty lock files a stash leaves for its name.
fn snapshot(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            if e.path().ends_with(".stackbuild/locks") {
                continue;
            }
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), fs::read(e.path()).unwrap_or_default());
            }
        }
    }
    Ok(out)
}

/// Stashes `root` with `STACKBUILD_FAILPOINT=point` running `script` there (in the work
/// directory), uncompressed so that a leaked secret would show in the blob as it is. Fails
/// the test, instead of hanging it, if stash blocks (a FIFO opened for reading would).
fn stash_with_swap(w: &Workdir, root: &str, point: &str, script: &str) -> Result<(i32, String)> {
    let mut cmd = w.bin("stash");
    cmd.args([
        "--store",
        "store",
        "--root",
        root,
        "--container-name",
        "raced",
        "--compression",
        "none",
        "--quiet",
    ])
    .env("STACKBUILD_FAILPOINT", point)
    .env("STACKBUILD_FAILPOINT_RUN", script);
    let mut child = spawn(&mut cmd)?;
    let start = Instant::now();
    // A watchdog against a hang, not a timing assertion: any finite time passes.
    while child.try_wait()?.is_none() {
        if start.elapsed() > Duration::from_mins(5) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("stash blocked on the swapped-in entry (killed after 300 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn a_tree_changed_between_walk_and_read_is_refused_and_nothing_outside_is_read() -> Result<()> {
    // (case, failpoint, the path it fires at, the swap)
    let cases = [
        (
            "a directory swapped for a symlink to outside, before its file is read",
            "stash-before-open",
            "d/f",
            "mv R/d R/d.moved && ln -s \"$PWD/outside\" R/d",
        ),
        (
            "a directory swapped for a symlink to outside, before a subdirectory is listed",
            "walk-before-list",
            "d/sub",
            "mv R/d R/d.moved && ln -s \"$PWD/outside\" R/d",
        ),
        (
            "a file swapped for a symlink to the secret",
            "stash-before-open",
            "d/f",
            "rm R/d/f && ln -s \"$PWD/outside/f\" R/d/f",
        ),
        (
            "a file swapped for a FIFO (a blocking open would hang stash)",
            "stash-before-open",
            "d/f",
            "rm R/d/f && mkfifo R/d/f",
        ),
        (
            "a file swapped for another file of the same size",
            "stash-before-open",
            "d/f",
            "printf 'INSIDE-2' > R/other && mv R/other R/d/f",
        ),
    ];
    for (i, (what, point, at, swap)) in cases.iter().enumerate() {
        let w = Workdir::new(&format!("swap{i}"))?;
        let spec = "d . 755 0:0\nd d 755 0:0\nf d/f 644 0:0 INSIDE-1\nd d/sub 755 0:0\n\
                    f d/sub/f 644 0:0 inside-sub\n";
        w.tree("root", spec)?;
        // The same layout outside, holding the secret (mode 600) where the swaps point.
        fs::create_dir_all(w.path("outside/sub"))?;
        for f in ["outside/f", "outside/sub/f"] {
            fs::write(w.path(f), SECRET)?;
            fs::set_permissions(w.path(f), fs::Permissions::from_mode(0o600))?;
        }
        // A store that already holds a stash, to show it is left exactly as it was.
        w.tree("first", "f a 644 0:0 a\n")?;
        stash(&w, "store", "first", "first", "latest")?;
        let before = snapshot(&w.path("store"))?;

        let script = format!(
            "[ \"$STACKBUILD_FAILPOINT_ARG\" = {at} ] || exit 0; {}",
            swap.replace("R/", "root/")
        );
        let (code, stderr) = stash_with_swap(&w, "root", point, &script)?;
        ensure!(code == 1, "{what}: exit {code}, want 1: {stderr}");
        ensure!(
            stderr.lines().count() == 1 && stderr.contains("changed while being stashed"),
            "{what}: want one line saying the tree changed: {stderr:?}"
        );
        let after = snapshot(&w.path("store"))?;
        ensure!(
            after == before,
            "{what}: the store changed: {:?}",
            after
                .keys()
                .filter(|k| before.get(*k) != after.get(*k))
                .collect::<Vec<_>>()
        );
        let leaked = files_containing(&w.path("store"), SECRET)?;
        ensure!(leaked.is_empty(), "{what}: the secret is in {leaked:?}");
        // Once the tree is still, the same stash goes through.
        run(w.bin("stash").args([
            "--store",
            "store",
            "--root",
            "root",
            "--container-name",
            "quiet",
            "--quiet",
        ]))?;
        ensure!(
            files_containing(&w.path("store"), SECRET)?.is_empty(),
            "{what}: a later stash read the secret"
        );
    }
    Ok(())
}

#[test]
fn a_rerun_removes_the_staging_directory_of_a_killed_unstash() -> Result<()> {
    let w = Workdir::new("staging")?;
    w.tree("root", "d d 755 0:0\nf d/a 644 0:0 a\n")?;
    stash(&w, "store", "root", "st", "latest")?;
    let unstash = || {
        let mut c = w.bin("unstash");
        c.args(["st", "--store", "store", "--to", "back", "--quiet"]);
        c
    };
    // Killed (abort, as kill -9) with the tree written, just before the rename into place.
    let killed = output(unstash().env("STACKBUILD_FAILPOINT", "staging-before-commit"))?;
    ensure!(
        !killed.status.success() && String::from_utf8_lossy(&killed.stderr).contains("failpoint"),
        "the failpoint was not reached: {killed:?}"
    );
    let staging = |w: &Workdir| -> Result<Vec<String>> {
        Ok(names(&w.root)?
            .into_iter()
            .filter(|n| n.starts_with(".back.stackbuild-"))
            .collect())
    };
    let left = staging(&w)?;
    ensure!(
        left.len() == 1,
        "want the killed run's staging dir: {left:?}"
    );
    ensure!(!w.path("back").exists());
    // One of a live process (this test's) is not the rerun's to remove.
    let live = format!(".back.stackbuild-{}", std::process::id());
    fs::create_dir(w.path(&live))?;
    run(&mut unstash())?;
    ensure!(
        staging(&w)? == vec![live],
        "left after the rerun: {:?}",
        staging(&w)?
    );
    assert_same(&dump(&w.path("root"))?, &dump(&w.path("back"))?)?;
    Ok(())
}
