//! Gzip layers inflated on several threads from the access points the store caches: the
//! same trees and digests as one thread, whatever wrote the gzip stream, and points that
//! do not fit refused in one line, removed and recorded again.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Result, ensure};
use sha2::{Digest as _, Sha256};

use crate::util::{Workdir, dump, have, json, output, run};

/// A tree with about 6 MB of file data that compresses like real files (part text, part
/// noise), so a layer of it has several access points.
fn big_tree(w: &Workdir) -> Result<PathBuf> {
    let root = w.tree(
        "root",
        "d etc 755 0:0\nf etc/hostname 644 0:0 box\\n\nd usr 755 0:0\n",
    )?;
    let mut x: u32 = 7;
    for (i, len) in [2_500_000usize, 3_000_000, 700_000].into_iter().enumerate() {
        let data: Vec<u8> = (0..len)
            .map(|j| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if j % 7 < 4 {
                    b"the quick brown fox "[j % 20]
                } else {
                    (x >> 16) as u8
                }
            })
            .collect();
        fs::write(root.join(format!("usr/data{i}")), data)?;
    }
    Ok(root)
}

fn hex(digest: &serde_json::Value) -> String {
    digest
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_owned()
}

fn points_file(store: &Path, layer: &str) -> PathBuf {
    store.join(".stackbuild/cache/points").join(layer)
}

fn unstash(w: &Workdir, name: &str, to: &str, threads: &str) -> Result<String> {
    run(w.bin("unstash").args([
        name,
        "--store",
        "store",
        "--quiet",
        "--threads",
        threads,
        "--to",
        to,
    ]))?;
    dump(&w.path(to))
}

#[test]
fn parallel_reads_give_the_trees_and_diff_ids_of_one_thread() -> Result<()> {
    let w = Workdir::new("points-ours")?;
    big_tree(&w)?;
    let stashed = json(&run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "big",
        "--json",
        "--quiet",
    ]))?)?;
    let layer = hex(&stashed["layer"]["digest"]);
    let store = w.path("store");
    let file = points_file(&store, &layer);
    ensure!(file.exists(), "the stash noted no access points");
    let want = unstash(&w, "big", "seq", "1")?;
    ensure!(
        want == dump(&w.path("root"))?,
        "one thread: not the stashed tree"
    );
    // The points a first read records, in place of the stash's.
    fs::remove_file(&file)?;
    ensure!(
        unstash(&w, "big", "recording", "2")? == want,
        "recording read"
    );
    ensure!(file.exists(), "no access points recorded");
    for threads in ["1", "2", "8"] {
        ensure!(
            unstash(&w, "big", &format!("out-{threads}"), threads)? == want,
            "{threads} threads"
        );
        let merged = format!("merged-{threads}");
        run(w.bin("stackmerge").args([
            "--store",
            "store",
            "--quiet",
            "--threads",
            threads,
            "--into",
            &merged,
            "big",
        ]))?;
        ensure!(
            dump(&w.path(&merged))? == want,
            "stackmerge, {threads} threads"
        );
    }
    // Without the index cache the diff_id is not pinned: the parallel read hashes it.
    fs::remove_file(store.join(".stackbuild/cache/index").join(&layer))?;
    ensure!(unstash(&w, "big", "unpinned", "2")? == want, "unpinned");
    ensure!(file.exists(), "the points are kept");
    Ok(())
}

/// The store's image `name` with its layer recompressed by `program` (reading stdin,
/// writing stdout), as `name9`: same config and `diff_id`, another layer blob.
fn recompressed(w: &Workdir, name: &str, program: &[&str]) -> Result<String> {
    let store = w.path("store");
    let blob = |hex: &str| store.join("blobs/sha256").join(hex);
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(store.join("index.json"))?)?;
    let entry = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter().find(|d| {
                d["annotations"]["org.opencontainers.image.ref.name"] == format!("{name}:latest")
            })
        })
        .cloned()
        .expect("the image");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(&hex(&entry["digest"])))?)?;
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(fs::File::open(blob(&hex(
        &manifest["layers"][0]["digest"],
    )))?)
    .read_to_end(&mut tar)?;
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let feeder = std::thread::spawn(move || stdin.write_all(&tar));
    let gz = child.wait_with_output()?;
    feeder.join().expect("feeder")?;
    ensure!(gz.status.success(), "{program:?}");
    let put = |bytes: &[u8]| -> Result<(String, usize)> {
        let hex = format!("{:x}", Sha256::digest(bytes));
        fs::write(blob(&hex), bytes)?;
        Ok((hex, bytes.len()))
    };
    let (layer, size) = put(&gz.stdout)?;
    manifest["layers"][0]["digest"] = format!("sha256:{layer}").into();
    manifest["layers"][0]["size"] = size.into();
    let (m, msize) = put(&serde_json::to_vec(&manifest)?)?;
    let mut new = entry;
    new["digest"] = format!("sha256:{m}").into();
    new["size"] = msize.into();
    new["annotations"]["org.opencontainers.image.ref.name"] = format!("{name}9:latest").into();
    index["manifests"].as_array_mut().expect("list").push(new);
    fs::write(store.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(layer)
}

#[test]
fn layers_of_gzip_9_and_pigz_read_in_parallel() -> Result<()> {
    let w = Workdir::new("points-foreign")?;
    big_tree(&w)?;
    run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "big",
        "--quiet",
    ]))?;
    let want = dump(&w.path("root"))?;
    for program in [&["gzip", "-9", "-c"][..], &["pigz", "-c"]] {
        if !have(program[0]) {
            eprintln!("SKIPPED: {} not installed", program[0]);
            continue;
        }
        let layer = recompressed(&w, "big", program)?;
        // First read: sequential, the diff_id hashed, the points recorded.
        ensure!(
            unstash(&w, "big9", "first", "2")? == want,
            "{program:?}: first read"
        );
        ensure!(
            points_file(&w.path("store"), &layer).exists(),
            "{program:?}: points"
        );
        for threads in ["1", "2", "8"] {
            let to = format!("out-{threads}");
            ensure!(
                unstash(&w, "big9", &to, threads)? == want,
                "{program:?}: {threads} threads"
            );
            fs::remove_dir_all(w.path(&to))?;
        }
        fs::remove_dir_all(w.path("first"))?;
        run(w
            .bin("stash")
            .args(["--store", "store", "--remove", "big9"]))?;
    }
    Ok(())
}

#[test]
fn points_that_do_not_fit_are_refused_in_one_line_and_recorded_again() -> Result<()> {
    let w = Workdir::new("points-tampered")?;
    big_tree(&w)?;
    let stashed = json(&run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "big",
        "--json",
        "--quiet",
    ]))?)?;
    let layer = hex(&stashed["layer"]["digest"]);
    let want = dump(&w.path("root"))?;
    let file = points_file(&w.path("store"), &layer);
    let good = fs::read(&file)?; // noted by the stash
    let digest = stackcore::digest::Digest::parse(&format!("sha256:{layer}"))?;
    let pts = stackcore::layer::points::decode(&digest, &good).expect("intact points");
    let mut window = pts.clone();
    window.points[1].window[5] ^= 0x40;
    let mut offset = pts.clone();
    offset.points[2].bit += 8;
    for (what, bad) in [("window", window), ("offset", offset)] {
        // Well-formed files (their digest line matches): only using them shows the misfit.
        fs::write(&file, stackcore::layer::points::encode(&digest, &bad))?;
        let out = output(w.bin("unstash").args([
            "big",
            "--store",
            "store",
            "--quiet",
            "--threads",
            "2",
            "--to",
            "bad",
        ]))?;
        ensure!(out.status.code() == Some(1), "{what}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            err.lines().count() == 1
                && err.contains("do not fit")
                && err.contains(&file.display().to_string()),
            "{what}: {err}"
        );
        ensure!(!w.path("bad").exists(), "{what}: no partial output");
        ensure!(!file.exists(), "{what}: removed");
        // The next read works, on one thread, and records them again; the one after uses
        // them.
        ensure!(
            unstash(&w, "big", "again", "2")? == want,
            "{what}: next read"
        );
        ensure!(file.exists(), "{what}: recorded again");
        ensure!(
            unstash(&w, "big", "parallel", "2")? == want,
            "{what}: read after"
        );
        ensure!(file.exists(), "{what}: the new points fit");
        fs::remove_dir_all(w.path("again"))?;
        fs::remove_dir_all(w.path("parallel"))?;
    }
    Ok(())
}

#[test]
fn a_cut_or_extended_blob_is_refused_as_without_points() -> Result<()> {
    let w = Workdir::new("points-blob")?;
    big_tree(&w)?;
    let stashed = json(&run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "big",
        "--json",
        "--quiet",
    ]))?)?;
    let layer = hex(&stashed["layer"]["digest"]);
    let file = points_file(&w.path("store"), &layer);
    ensure!(file.exists(), "the stash noted points");
    let path = w.path("store/blobs/sha256").join(&layer);
    let good = fs::read(&path)?;
    let mut perms = fs::metadata(&path)?.permissions();
    #[allow(clippy::permissions_set_readonly_false)] // the test's own file
    perms.set_readonly(false);
    fs::set_permissions(&path, perms)?;
    let mut longer = good.clone();
    longer.extend_from_slice(b"more");
    for (what, bytes) in [
        ("cut", &good[..good.len() * 2 / 3]),
        ("cut in the trailer", &good[..good.len() - 3]),
        ("extended", &longer[..]),
    ] {
        fs::write(&path, bytes)?;
        let mut errs = Vec::new();
        for threads in ["1", "2"] {
            let out = output(w.bin("unstash").args([
                "big",
                "--store",
                "store",
                "--threads",
                threads,
                "--to",
                "bad",
            ]))?;
            ensure!(out.status.code() == Some(1), "{what}, {threads}: {out:?}");
            ensure!(!w.path("bad").exists(), "{what}: no partial output");
            errs.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        ensure!(
            errs[0] == errs[1],
            "{what}: the same error with points:\n{}\n{}",
            errs[0],
            errs[1]
        );
        ensure!(
            !errs[1].contains("do not fit") && file.exists(),
            "{what}: the blob is blamed, not the points"
        );
    }
    Ok(())
}

#[test]
fn gc_removes_the_points_of_layers_no_longer_there() -> Result<()> {
    let w = Workdir::new("points-gc")?;
    big_tree(&w)?;
    let stashed = json(&run(w.bin("stash").args([
        "--store",
        "store",
        "--root",
        "root",
        "--container-name",
        "big",
        "--json",
        "--quiet",
    ]))?)?;
    let file = points_file(&w.path("store"), &hex(&stashed["layer"]["digest"]));
    ensure!(file.exists(), "points noted");
    run(w.bin("stash").args(["--store", "store", "--remove", "big"]))?;
    let gc = json(&run(w
        .bin("stash")
        .args(["--store", "store", "--gc", "--json"]))?)?;
    ensure!(
        gc["caches_removed"] == 2,
        "the layer's index and points: {gc}"
    );
    ensure!(!file.exists(), "points removed");
    Ok(())
}
