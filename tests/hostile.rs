//! Hostile images: hand-made OCI layouts whose layers try to write outside the target, and
//! damaged images. Every case runs the real `unstash` and checks that it either refused
//! (exit 1, one `error:` line, no target and no staging directory left) or kept the result
//! inside the target, and in both cases that canary trees outside the target (one beside
//! it, one at an absolute path under /tmp) are untouched: content, mode, owner, mtime,
//! link count, and the directories' own mtimes (so even a file created and removed again
//! outside is noticed).
//!
//! Ported from containerd `pkg/archive/tar_test.go` (`TestBreakouts`), umoci
//! `oci/layer/tar_extract_test.go` and published tar-extraction CVEs. Paths a case aims
//! at `/etc` in the original aim at the absolute canary here, so a failing test damages a
//! scratch directory, not the host.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{Context, Result, bail, ensure};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::skip;
use crate::util::{Workdir, build_tree, dump, force_remove, is_root, output};

// ---------------------------------------------------------------------------------------
// Raw tar bytes, written by hand so that any name, size or record can be said.

const REG: u8 = b'0';
const LNK: u8 = b'1';
const SYM: u8 = b'2';
const CHR: u8 = b'3';
const DIR: u8 = b'5';
const FIFO: u8 = b'6';

/// A tar stream being written: headers, PAX records and data exactly as asked.
#[derive(Debug, Default)]
struct Tar(Vec<u8>);

/// One header's fields.
#[derive(Debug, Clone)]
struct Hdr<'a> {
    name: &'a [u8],
    kind: u8,
    size: u64,
    mode: u32,
    link: &'a [u8],
    dev: (u32, u32),
    mtime: u64,
    uid: u64,
}

impl<'a> Hdr<'a> {
    fn new(name: &'a [u8], kind: u8) -> Self {
        Hdr {
            name,
            kind,
            size: 0,
            mode: if kind == DIR { 0o755 } else { 0o644 },
            link: b"",
            dev: (0, 0),
            mtime: 1_600_000_000,
            uid: 0,
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}\0", v, w = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

impl Tar {
    /// One raw ustar header block. Names longer than the field get a PAX `path` (and
    /// `linkpath`) record first, as a real writer would.
    fn header(&mut self, h: &Hdr<'_>) -> &mut Self {
        let mut pax: Vec<(&[u8], Vec<u8>)> = Vec::new();
        if h.name.len() > 100 {
            pax.push((b"path", h.name.to_vec()));
        }
        if h.link.len() > 100 {
            pax.push((b"linkpath", h.link.to_vec()));
        }
        if !pax.is_empty() {
            let recs: Vec<(&[u8], &[u8])> = pax.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            self.pax(&recs);
        }
        let mut b = [0u8; 512];
        let n = h.name.len().min(100);
        b[..n].copy_from_slice(&h.name[..n]);
        octal(&mut b[100..108], u64::from(h.mode));
        octal(&mut b[108..116], h.uid);
        octal(&mut b[116..124], h.uid);
        octal(&mut b[124..136], h.size);
        octal(&mut b[136..148], h.mtime);
        b[156] = h.kind;
        let l = h.link.len().min(100);
        b[157..157 + l].copy_from_slice(&h.link[..l]);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        octal(&mut b[329..337], u64::from(h.dev.0));
        octal(&mut b[337..345], u64::from(h.dev.1));
        b[148..156].fill(b' ');
        let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&b);
        self
    }

    /// A PAX extended header (`x`) with these records.
    fn pax(&mut self, records: &[(&[u8], &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut len = base + 1;
            while len != base + len.to_string().len() {
                len = base + len.to_string().len();
            }
            body.extend_from_slice(len.to_string().as_bytes());
            body.push(b' ');
            body.extend_from_slice(k);
            body.push(b'=');
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut h = Hdr::new(b"PaxHeaders/x", b'x');
        h.size = body.len() as u64;
        self.header(&h);
        self.data(&body)
    }

    /// Data and its padding to the next block.
    fn data(&mut self, d: &[u8]) -> &mut Self {
        self.0.extend_from_slice(d);
        let pad = (512 - d.len() % 512) % 512;
        self.0.resize(self.0.len() + pad, 0);
        self
    }

    fn file(&mut self, name: &str, content: &str) -> &mut Self {
        self.file_bytes(name.as_bytes(), content.as_bytes())
    }

    fn file_bytes(&mut self, name: &[u8], content: &[u8]) -> &mut Self {
        let mut h = Hdr::new(name, REG);
        h.size = content.len() as u64;
        self.header(&h).data(content)
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.header(&Hdr::new(name.as_bytes(), DIR))
    }

    fn dir_mode(&mut self, name: &str, mode: u32) -> &mut Self {
        let mut h = Hdr::new(name.as_bytes(), DIR);
        h.mode = mode;
        self.header(&h)
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = Hdr::new(name.as_bytes(), SYM);
        h.link = target.as_bytes();
        h.mode = 0o777;
        self.header(&h)
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = Hdr::new(name.as_bytes(), LNK);
        h.link = target.as_bytes();
        self.header(&h)
    }

    /// An empty regular file: a whiteout when its name starts with `.wh.`.
    fn whiteout(&mut self, name: &str) -> &mut Self {
        self.file(name, "")
    }

    /// The end-of-archive marker.
    fn end(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        std::mem::take(&mut self.0)
    }

    /// The bytes so far, without an end marker (for truncation and garbage cases).
    fn raw(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

// ---------------------------------------------------------------------------------------
// OCI layouts built around those tars.

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const PLAIN: &str = "application/vnd.oci.image.layer.v1.tar";

fn sha256(b: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(b))
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(b).expect("gzip to memory");
    e.finish().expect("gzip to memory")
}

/// One layer: the bytes its descriptor describes, and what is actually stored.
#[derive(Debug, Clone)]
struct Layer {
    /// The blob as the descriptor's digest and size describe it.
    blob: Vec<u8>,
    /// What the blob file holds, when different (a damaged blob).
    stored: Option<Vec<u8>>,
    media_type: String,
    /// `sha256:` of the uncompressed tar.
    diff_id: String,
}

impl Layer {
    fn gz(tar: &[u8]) -> Layer {
        Layer {
            blob: gzip(tar),
            stored: None,
            media_type: GZIP.into(),
            diff_id: format!("sha256:{}", sha256(tar)),
        }
    }

    fn plain(tar: &[u8]) -> Layer {
        Layer {
            blob: tar.to_vec(),
            stored: None,
            media_type: PLAIN.into(),
            diff_id: format!("sha256:{}", sha256(tar)),
        }
    }
}

/// The JSON documents of a layout, open to tampering before they are written.
#[derive(Debug)]
struct Docs {
    config: Value,
    /// Its `config` descriptor is filled in when still null.
    manifest: Value,
    config_raw: Option<Vec<u8>>,
    manifest_raw: Option<Vec<u8>>,
    index_raw: Option<Vec<u8>>,
    /// The media type the index's descriptor gives the manifest.
    manifest_desc_media: String,
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes an OCI layout with one image, ref name `img:v1`.
fn write_layout(dir: &Path, layers: &[Layer], tweak: impl FnOnce(&mut Docs)) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let put = |bytes: &[u8]| -> Result<Value> {
        let hex = sha256(bytes);
        fs::write(blobs.join(&hex), bytes)?;
        Ok(json!({"digest": format!("sha256:{hex}"), "size": bytes.len()}))
    };
    let mut descs = Vec::new();
    for l in layers {
        let hex = sha256(&l.blob);
        fs::write(blobs.join(&hex), l.stored.as_ref().unwrap_or(&l.blob))?;
        descs.push(json!({
            "mediaType": l.media_type,
            "digest": format!("sha256:{hex}"),
            "size": l.blob.len(),
        }));
    }
    let mut docs = Docs {
        config: json!({
            "architecture": host_arch(),
            "os": "linux",
            "config": {},
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
        }),
        manifest: json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": null,
            "layers": descs,
        }),
        config_raw: None,
        manifest_raw: None,
        index_raw: None,
        manifest_desc_media: MANIFEST.into(),
    };
    tweak(&mut docs);
    let config = match docs.config_raw.take() {
        Some(raw) => raw,
        None => serde_json::to_vec(&docs.config)?,
    };
    let mut cdesc = put(&config)?;
    cdesc["mediaType"] = json!(CONFIG);
    if docs.manifest["config"].is_null() {
        docs.manifest["config"] = cdesc;
    }
    let manifest = match docs.manifest_raw.take() {
        Some(raw) => raw,
        None => serde_json::to_vec(&docs.manifest)?,
    };
    let mut mdesc = put(&manifest)?;
    mdesc["mediaType"] = json!(docs.manifest_desc_media);
    mdesc["annotations"] = json!({"org.opencontainers.image.ref.name": "img:v1"});
    let index = match docs.index_raw.take() {
        Some(raw) => raw,
        None => serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [mdesc],
        }))?,
    };
    fs::write(dir.join("index.json"), index)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// One case: a workdir with a canary beside the target and one at an absolute path.

/// The canary trees' shape: what a hostile image would like to overwrite, chmod, link to
/// or delete.
fn canary_spec() -> String {
    let me = format!(
        "{}:{}",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    );
    format!(
        "d . 755 {me}
d etc 755 {me}
f etc/passwd 644 {me} canary\\n
f etc/shadow 600 {me} secret\\n
d etc/sub 700 {me}
f etc/sub/file 640 {me} deep\\n
t etc/sub/file 1000000000.1
t etc/sub 1000000000.2
t etc/passwd 1000000000.3
t etc/shadow 1000000000.4
t etc 1000000000.5
t . 1000000000.6
"
    )
}

#[derive(Debug)]
struct Case {
    w: Workdir,
    /// The absolute canary, `/tmp/stackbuild-canary-<pid>-<case>`.
    abs: PathBuf,
    before: (String, String),
    planned: Option<bool>,
    /// Run unstash with `STACKBUILD_UNPLANNED=1` (layers applied in order).
    unplanned: bool,
}

impl Case {
    fn new(name: &str) -> Result<Case> {
        let w = Workdir::new(&format!("hostile-{name}"))?;
        build_tree(&w.path("outside"), &canary_spec())?;
        let abs = PathBuf::from(format!(
            "/tmp/stackbuild-canary-{}-{name}",
            std::process::id()
        ));
        if abs.exists() {
            force_remove(&abs)?;
        }
        build_tree(&abs, &canary_spec())?;
        let before = (dump(&w.path("outside"))?, dump(&abs)?);
        Ok(Case {
            w,
            abs,
            before,
            planned: None,
            unplanned: false,
        })
    }

    /// The absolute canary as a string, for names and link targets.
    fn a(&self) -> String {
        self.abs.display().to_string()
    }

    /// The absolute canary without its leading `/`: where in-root resolution puts it.
    fn a_rel(&self) -> String {
        self.a().trim_start_matches('/').to_owned()
    }

    fn target(&self) -> PathBuf {
        self.w.path("target")
    }

    /// Writes the layout and runs `unstash oci:LAYOUT:img:v1 --to target`.
    fn unstash(&mut self, layers: &[Layer], tweak: impl FnOnce(&mut Docs)) -> Result<Output> {
        let layout = self.w.path("layout");
        write_layout(&layout, layers, tweak)?;
        self.run_unstash()
    }

    fn run_unstash(&mut self) -> Result<Output> {
        let r = format!("oci:{}:img:v1", self.w.path("layout").display());
        // Under timeout(1): a hostile layout that makes unstash hang fails the case.
        let mut cmd = self.w.cmd("timeout");
        cmd.arg("60")
            .arg(crate::util::bin_dir().join("unstash"))
            .args(["--quiet", "--json", &r, "--to", "target"]);
        cmd.env_remove("KIWI_STASH_HOME");
        if self.unplanned {
            cmd.env("STACKBUILD_UNPLANNED", "1");
        }
        let out = output(&mut cmd)?;
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout)
                .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
            self.planned = v["planned"].as_bool();
        }
        Ok(out)
    }

    /// The canaries are exactly as they were, and nothing new sits beside the target.
    fn check_canaries(&self) -> Result<()> {
        let now = (dump(&self.w.path("outside"))?, dump(&self.abs)?);
        crate::util::assert_same(&self.before.0, &now.0).context("canary beside the target")?;
        crate::util::assert_same(&self.before.1, &now.1).context("canary at an absolute path")?;
        let mut names: Vec<String> = fs::read_dir(&self.w.root)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        names.sort();
        names.retain(|n| n != "layout" && n != "outside" && n != "target");
        ensure!(
            names.is_empty(),
            "left beside the target (a staging directory, or a write outside): {names:?}"
        );
        Ok(())
    }

    /// Refused: exit 1, one `error:` line naming the problem, no target, canaries intact.
    fn refused(&self, out: &Output, needle: &str) -> Result<()> {
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1),
            "expected exit 1, got {}; stderr: {stderr}",
            out.status
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        ensure!(
            lines.len() == 1 && lines[0].starts_with("error: "),
            "expected one error line, got: {stderr}"
        );
        eprintln!("refused: {}", lines[0]);
        ensure!(
            lines[0].contains(needle),
            "error line does not say {needle:?}: {}",
            lines[0]
        );
        ensure!(
            !self.target().exists() && fs::symlink_metadata(self.target()).is_err(),
            "a refused unstash left a target behind"
        );
        self.check_canaries()
    }

    /// Contained: exit 0, canaries intact; returns a listing of the target.
    fn contained(&self, out: &Output) -> Result<Listing> {
        ensure!(
            out.status.success(),
            "expected success, got {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        self.check_canaries()?;
        listing(&self.target())
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_none() && !std::thread::panicking() {
            let _ = force_remove(&self.abs); // best effort: a scratch dir under /tmp
        }
    }
}

/// What a target holds: path → `d`, `f:CONTENT`, `l:TARGET`, `c`, `p`, with link counts of
/// files above one shown as `f:CONTENT:nlink=N`.
#[derive(Debug)]
struct Listing(BTreeMap<String, String>);

fn listing(root: &Path) -> Result<Listing> {
    fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, String>) -> Result<()> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let p = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = fs::symlink_metadata(root.join(&p))?;
            let ft = m.file_type();
            let v = if ft.is_dir() {
                walk(root, &p, out)?;
                "d".to_owned()
            } else if ft.is_symlink() {
                format!("l:{}", fs::read_link(root.join(&p))?.display())
            } else if ft.is_file() {
                let c = String::from_utf8_lossy(&fs::read(root.join(&p))?).into_owned();
                if m.nlink() > 1 {
                    format!("f:{c}:nlink={}", m.nlink())
                } else {
                    format!("f:{c}")
                }
            } else {
                "other".to_owned()
            };
            out.insert(p, v);
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out)?;
    Ok(Listing(out))
}

impl Listing {
    fn has(&self, path: &str, what: &str) -> Result<&Self> {
        match self.0.get(path) {
            Some(v) if v == what => Ok(self),
            other => bail!(
                "{path}: expected {what:?}, found {other:?} in {:#?}",
                self.0
            ),
        }
    }

    fn lacks(&self, path: &str) -> Result<&Self> {
        ensure!(
            !self.0.contains_key(path),
            "{path} should not exist: {:#?}",
            self.0
        );
        Ok(self)
    }

    /// The path of the only file holding `content`.
    fn find(&self, content: &str) -> Result<String> {
        let want = format!("f:{content}");
        let hits: Vec<&String> = self
            .0
            .iter()
            .filter(|(_, v)| **v == want)
            .map(|(k, _)| k)
            .collect();
        ensure!(
            hits.len() == 1,
            "{content:?} found at {hits:?}: {:#?}",
            self.0
        );
        Ok(hits[0].clone())
    }
}

/// A harmless lower layer, so that an image of it plus the hostile layers has more than one
/// layer and goes through the planner (index, model, one-pass writer).
fn base_layer() -> Layer {
    Layer::gz(&Tar::default().dir("base").file("base/keep", "keep").end())
}

/// Runs `layers` (each a tar) three times: alone (one layer: the sequential path; several:
/// as the model decides), on top of [`base_layer`] (always several layers: planned unless
/// the model is complex), and on top of it again with the planner switched off, calling
/// `check` on each outcome.
fn both_ways(
    name: &str,
    layers: impl Fn(&Case) -> Vec<Vec<u8>>,
    check: impl Fn(&Case, &Output) -> Result<()>,
) -> Result<()> {
    for (with_base, unplanned) in [(false, false), (true, false), (true, true)] {
        let variant = format!(
            "{name}-{}",
            match (with_base, unplanned) {
                (false, _) => "bare",
                (true, false) => "based",
                (true, true) => "unplanned",
            }
        );
        let mut c = Case::new(&variant)?;
        c.unplanned = unplanned;
        let mut ls: Vec<Layer> = layers(&c).iter().map(|t| Layer::gz(t)).collect();
        if with_base {
            ls.insert(0, base_layer());
        }
        let out = c.unstash(&ls, |_| {})?;
        check(&c, &out).with_context(|| format!("case {variant}"))?;
        eprintln!(
            "{variant}: exit {:?}, planned {:?}",
            out.status.code(),
            c.planned
        );
    }
    Ok(())
}

fn refused_both_ways(
    name: &str,
    needle: &str,
    layers: impl Fn(&Case) -> Vec<Vec<u8>>,
) -> Result<()> {
    both_ways(name, layers, |c, out| c.refused(out, needle))
}

// ---------------------------------------------------------------------------------------
// Names: `..`, absolute paths, the root itself (umoci TestUnpackEntrySanitiseScoping).

#[test]
fn dotdot_and_absolute_names_land_inside() -> Result<()> {
    both_ways(
        "scoping",
        |c| {
            vec![
                Tar::default()
                    .file("../../x", "x")
                    .file("/abs", "abs")
                    .file("/../file", "file")
                    .file("./a/../../b", "b")
                    .file("dir/../../../outside/etc/passwd", "rel")
                    .file(&format!("{}/etc/passwd", c.a()), "absolute")
                    .file(
                        &format!("../../../../../../../../..{}/etc/shadow", c.a()),
                        "deep",
                    )
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?
                .has("x", "f:x")?
                .has("abs", "f:abs")?
                .has("file", "f:file")?
                .has("b", "f:b")?
                .has("outside/etc/passwd", "f:rel")?
                .has(&format!("{}/etc/passwd", c.a_rel()), "f:absolute")?
                .has(&format!("{}/etc/shadow", c.a_rel()), "f:deep")?;
            Ok(())
        },
    )
}

/// umoci `TestUnpackEntryParentDir`: parents nobody declared are created.
#[test]
fn missing_parents_are_created() -> Result<()> {
    both_ways(
        "parents",
        |_| vec![Tar::default().file("a/b/c/d", "deep").end()],
        |c, out| {
            c.contained(out)?
                .has("a", "d")?
                .has("a/b/c", "d")?
                .has("a/b/c/d", "f:deep")?;
            Ok(())
        },
    )
}

/// containerd `SymlinkParentDirectory`, `SymlinkEmptyFilename`; umoci CVE-2021-29136: an entry
/// that is the root itself but not a directory.
#[test]
fn non_directory_entries_for_the_root_are_refused() -> Result<()> {
    let cases: [(&str, &str, u8); 9] = [
        ("sym-dotdot", "..", SYM),
        ("sym-empty", "", SYM),
        ("sym-slashdot", "/.", SYM),
        ("sym-dot", ".", SYM),
        ("sym-dotslash", "./", SYM),
        ("sym-slash", "/", SYM),
        ("sym-updown", "a/..", SYM),
        ("file-empty", "", REG),
        ("file-dotdot", "../..", REG),
    ];
    for (name, path, kind) in cases {
        refused_both_ways(&format!("root-{name}"), "root directory", |c| {
            let mut t = Tar::default();
            let a = c.a();
            let mut h = Hdr::new(path.as_bytes(), kind);
            h.link = a.as_bytes();
            t.header(&h);
            vec![t.file("after", "after").end()]
        })?;
    }
    Ok(())
}

/// umoci CVE-2021-29136: the `/.` symlink comes in a lower layer, files in a higher one.
#[test]
fn cve_2021_29136_root_symlink_in_lower_layer() -> Result<()> {
    refused_both_ways("cve-2021-29136", "root directory", |c| {
        vec![
            Tar::default().symlink("/.", &c.a()).end(),
            Tar::default().file("etc/passwd", "pwned").end(),
        ]
    })
}

// ---------------------------------------------------------------------------------------
// Symlinks (containerd TestBreakouts, umoci TestUnpackEntrySymlinkScoping).

/// umoci `TestUnpackEntrySymlinkScoping`: whatever a symlink points at, a write through it
/// resolves as if the target were `/`.
#[test]
fn writes_through_symlinks_stay_inside() -> Result<()> {
    let targets = |c: &Case| {
        vec![
            "/".to_owned(),
            "/../".to_owned(),
            "/../../../../../".to_owned(),
            "/./.././../".to_owned(),
            "..".to_owned(),
            "../../../..".to_owned(),
            "../outside".to_owned(),
            "../outside/etc".to_owned(),
            format!("{}/etc", c.a()),
            format!("../../../../../../../../..{}/etc", c.a()),
            format!("/dummy/../{}/etc", c.a()),
        ]
    };
    let probe = Case::new("symlink-scoping-probe")?;
    let n = targets(&probe).len();
    drop(probe);
    for i in 0..n {
        for across in [false, true] {
            both_ways(
                &format!("symlink-scoping-{i}-{}", if across { "x" } else { "1" }),
                |c| {
                    let t = targets(c)[i].clone();
                    if across {
                        vec![
                            Tar::default().symlink("link", &t).end(),
                            Tar::default().file("link/escaped", "pwned").end(),
                        ]
                    } else {
                        vec![
                            Tar::default()
                                .symlink("link", &t)
                                .file("link/escaped", "pwned")
                                .end(),
                        ]
                    }
                },
                |c, out| {
                    let l = c.contained(out)?;
                    l.find("pwned")?;
                    Ok(())
                },
            )?;
        }
    }
    Ok(())
}

/// containerd `SymlinkAbsolute`, `SymlinkUpAndOut`, `SymlinkMultipleAbsolute`,
/// `SymlinkMultipleRelative`, `SymlinkSlashEnded`, `SymlinkParentRelative`: with the link's
/// target present inside, the write lands there.
#[test]
fn symlink_breakouts_resolve_in_root() -> Result<()> {
    type Build = fn(&Case, &mut Tar);
    let cases: [(&str, Build); 6] = [
        ("absolute", |c, t| {
            t.symlink("localetc", &format!("{}/etc", c.a()));
        }),
        ("up-and-out", |c, t| {
            t.dir("dummy")
                .symlink("localetc", &format!("/dummy/../{}/etc", c.a()));
        }),
        ("multiple-absolute", |c, t| {
            t.symlink("l1", &c.a()).symlink("localetc", "/l1/etc");
        }),
        ("multiple-relative", |c, t| {
            t.symlink("l1", "../../../../../../../..")
                .symlink("localetc", &format!("l1/{}/etc", c.a_rel()));
        }),
        ("slash-ended", |c, t| {
            t.symlink("localetc/", &format!("{}/etc", c.a()));
        }),
        ("parent-relative", |c, t| {
            t.dir("localetc").dir("localetc/sub");
            // `localetc/sub/..` is `localetc` (a duplicate of the directory above is what
            // this case is about, so the directory goes in a lower layer below).
            let _ = c;
        }),
    ];
    for (name, build) in cases {
        for across in [false, true] {
            both_ways(
                &format!("breakout-{name}-{}", if across { "x" } else { "1" }),
                |c| {
                    let mut t = Tar::default();
                    t.dir(&format!("{}/etc", c.a_rel()));
                    build(c, &mut t);
                    if name == "parent-relative" {
                        let lower = t.end();
                        let mut u = Tar::default();
                        u.symlink("localetc/sub/..", &format!("{}/etc", c.a()));
                        u.file("localetc/unbroken", "unbroken");
                        return vec![lower, u.end()];
                    }
                    if across {
                        vec![
                            t.end(),
                            Tar::default().file("localetc/unbroken", "unbroken").end(),
                        ]
                    } else {
                        vec![t.file("localetc/unbroken", "unbroken").end()]
                    }
                },
                |c, out| {
                    let l = c.contained(out)?;
                    l.has(&format!("{}/etc/unbroken", c.a_rel()), "f:unbroken")?;
                    Ok(())
                },
            )?;
        }
    }
    Ok(())
}

/// containerd `SymlinkEmptyFile` and CVE-2018-20990: a symlink (or hardlink) followed by a
/// regular file of the same name replaces the link; it never writes through it.
#[test]
fn file_over_link_replaces_the_link() -> Result<()> {
    // In one layer this is a duplicate path, which the layer format forbids.
    refused_both_ways("file-over-symlink-1", "duplicate path", |c| {
        vec![
            Tar::default()
                .symlink("localpasswd", &format!("{}/etc/passwd", c.a()))
                .file("localpasswd", "")
                .end(),
        ]
    })?;
    for (i, target) in ["abs", "../outside/etc/passwd"].into_iter().enumerate() {
        both_ways(
            &format!("file-over-symlink-x{i}"),
            |c| {
                let t = if target == "abs" {
                    format!("{}/etc/passwd", c.a())
                } else {
                    target.to_owned()
                };
                vec![
                    Tar::default().symlink("localpasswd", &t).end(),
                    Tar::default().file("localpasswd", "").end(),
                ]
            },
            |c, out| {
                c.contained(out)?.has("localpasswd", "f:")?;
                Ok(())
            },
        )?;
    }
    // CVE-2018-20990 with a hardlink: the other name keeps the old content.
    both_ways(
        "file-over-hardlink",
        |_| {
            vec![
                Tar::default()
                    .file("victim", "orig")
                    .hardlink("h", "victim")
                    .end(),
                Tar::default().file("h", "new").end(),
            ]
        },
        |c, out| {
            c.contained(out)?
                .has("victim", "f:orig")?
                .has("h", "f:new")?;
            Ok(())
        },
    )
}

/// containerd `SymlinkOverrideDirectory(Relative)`: a symlink replacing a lower directory,
/// then a file below it.
#[test]
fn symlink_over_directory() -> Result<()> {
    for (i, rel) in [false, true].into_iter().enumerate() {
        both_ways(
            &format!("symlink-over-dir-{i}"),
            |c| {
                let t = if rel {
                    "../outside/etc".to_owned()
                } else {
                    format!("{}/etc", c.a())
                };
                vec![
                    Tar::default().dir("localetc").file("localetc/x", "x").end(),
                    Tar::default()
                        .symlink("localetc", &t)
                        .file("localetc/unbroken", "unbroken")
                        .end(),
                ]
            },
            |c, out| {
                let l = c.contained(out)?;
                l.find("unbroken")?;
                l.lacks("localetc/x")?;
                Ok(())
            },
        )?;
    }
    refused_both_ways("symlink-over-dir-1layer", "duplicate path", |c| {
        vec![
            Tar::default()
                .dir("localetc")
                .symlink("localetc", &format!("{}/etc", c.a()))
                .file("localetc/unbroken", "unbroken")
                .end(),
        ]
    })
}

/// containerd `DirectoryOverrideSymlink(AndHardlink)`, CVE-2026-33056: a directory entry
/// over a symlink replaces the link; its mode and times never reach the link's target.
#[test]
fn directory_over_symlink() -> Result<()> {
    for (i, rel) in [false, true].into_iter().enumerate() {
        both_ways(
            &format!("dir-over-symlink-{i}"),
            |c| {
                let t = if rel {
                    "../outside/etc".to_owned()
                } else {
                    format!("{}/etc", c.a())
                };
                vec![
                    Tar::default().symlink("localetc", &t).end(),
                    Tar::default()
                        .dir_mode("localetc", 0o777)
                        .file("localetc/x", "x")
                        .end(),
                ]
            },
            |c, out| {
                c.contained(out)?
                    .has("localetc", "d")?
                    .has("localetc/x", "f:x")?;
                Ok(())
            },
        )?;
    }
    both_ways(
        "dir-over-symlink-and-hardlink",
        |c| {
            vec![
                Tar::default()
                    .symlink("localetc", &format!("{}/etc", c.a()))
                    .hardlink("localetc-hl", "localetc")
                    .end(),
                Tar::default()
                    .dir_mode("localetc-hl", 0o777)
                    .dir_mode("localetc", 0o777)
                    .file("localetc/x", "x")
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?
                .has("localetc", "d")?
                .has("localetc-hl", "d")?;
            Ok(())
        },
    )?;
    refused_both_ways("dir-over-symlink-1layer", "duplicate path", |c| {
        vec![
            Tar::default()
                .symlink("localetc", &format!("{}/etc", c.a()))
                .dir_mode("localetc", 0o777)
                .end(),
        ]
    })
}

/// RUSTSEC-2021-0080: `symlink → ..` then `symlink/a/b/c`: no directory appears outside.
#[test]
fn rustsec_2021_0080_directories_through_dotdot_symlink() -> Result<()> {
    for (i, t) in ["..", "../outside", "../../../../../.."]
        .into_iter()
        .enumerate()
    {
        for across in [false, true] {
            both_ways(
                &format!("rustsec-2021-0080-{i}-{across}"),
                |_| {
                    let mut a = Tar::default();
                    a.symlink("symlink", t);
                    if across {
                        vec![a.end(), Tar::default().dir("symlink/a/b/c").end()]
                    } else {
                        vec![a.dir("symlink/a/b/c").end()]
                    }
                },
                |c, out| {
                    let l = c.contained(out)?;
                    ensure!(
                        l.0.iter().any(|(p, v)| p.ends_with("a/b/c") && v == "d"),
                        "a/b/c not created inside: {:#?}",
                        l.0
                    );
                    Ok(())
                },
            )?;
        }
    }
    Ok(())
}

/// umoci `TestUnpackEntryNonDirParent` (umoci#546): `nondir` then `nondir/foo/bar/baz`:
/// the file is replaced by a directory.
#[test]
fn non_directory_parent_is_replaced() -> Result<()> {
    for across in [false, true] {
        both_ways(
            &format!("nondir-parent-{across}"),
            |_| {
                let mut a = Tar::default();
                a.file("nondir", "file");
                if across {
                    vec![
                        a.end(),
                        Tar::default().file("nondir/foo/bar/baz", "baz").end(),
                    ]
                } else {
                    vec![a.file("nondir/foo/bar/baz", "baz").end()]
                }
            },
            |c, out| {
                c.contained(out)?
                    .has("nondir", "d")?
                    .has("nondir/foo/bar/baz", "f:baz")?;
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// The harness itself: a change outside the target, of content, mode or time, or a new
/// file beside it, is noticed (so every case above can fail).
#[test]
fn harness_notices_writes_outside() -> Result<()> {
    type Damage = fn(&Case) -> Result<()>;
    let damages: [Damage; 5] = [
        |c| Ok(fs::write(c.w.path("outside/etc/passwd"), "pwned")?),
        |c| {
            Ok(fs::set_permissions(
                c.abs.join("etc"),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )?)
        },
        |c| {
            fs::write(c.abs.join("etc/sub/new"), "")?;
            Ok(fs::remove_file(c.abs.join("etc/sub/new"))?)
        },
        |c| {
            Ok(fs::hard_link(
                c.abs.join("etc/shadow"),
                c.w.path("outside/link"),
            )?)
        },
        |c| Ok(fs::create_dir(c.w.path(".target.stackbuild-1"))?),
    ];
    for (i, damage) in damages.into_iter().enumerate() {
        let c = Case::new(&format!("harness-{i}"))?;
        c.check_canaries()?;
        damage(&c)?;
        ensure!(c.check_canaries().is_err(), "damage {i} went unnoticed");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Hardlinks (containerd Hardlink*, HardlinkSymlink*).

/// Hardlink targets that would lie outside: each names, in-root, a file that does not
/// exist, so the link is refused; with the same file present inside, it links to that.
#[test]
fn hardlinks_to_outside_paths() -> Result<()> {
    type Build = fn(&Case, &mut Tar);
    let cases: [(&str, Build); 7] = [
        ("relative", |c, t| {
            t.dir("breakouts")
                .symlink(
                    "breakouts/d1",
                    &format!("../../../../../../../..{}/etc", c.a()),
                )
                .hardlink("breakouts/mypasswd", "breakouts/d1/passwd");
        }),
        ("down-and-out", |c, t| {
            t.dir("breakouts")
                .symlink("breakouts/d1", "../..")
                .hardlink(
                    "breakouts/mypasswd",
                    &format!("breakouts/d1/{}/etc/passwd", c.a_rel()),
                );
        }),
        ("absolute", |c, t| {
            t.symlink("localetc", &format!("{}/etc", c.a()))
                .hardlink("mypasswd", "localetc/passwd");
        }),
        ("relative-long", |c, t| {
            t.hardlink(
                "mypasswd",
                &format!("../../../../../../../../..{}/etc/passwd", c.a()),
            );
        }),
        ("relative-up-and-out", |c, t| {
            t.dir("breakouts").hardlink(
                "mypasswd",
                &format!("breakouts/../../../../../../..{}/etc/passwd", c.a()),
            );
        }),
        ("direct-relative", |_, t| {
            t.hardlink("mypasswd", "../outside/etc/passwd");
        }),
        ("direct-absolute", |c, t| {
            t.hardlink("mypasswd", &format!("{}/etc/passwd", c.a()));
        }),
    ];
    for (name, build) in cases {
        refused_both_ways(&format!("hardlink-{name}"), "does not exist", |c| {
            let mut t = Tar::default();
            build(c, &mut t);
            vec![t.end()]
        })?;
        both_ways(
            &format!("hardlink-{name}-inside"),
            |c| {
                let mut t = Tar::default();
                t.dir(&format!("{}/etc", c.a_rel()))
                    .file(&format!("{}/etc/passwd", c.a_rel()), "inside")
                    .dir("outside/etc")
                    .file("outside/etc/passwd", "inside");
                build(c, &mut t);
                vec![t.end()]
            },
            |c, out| {
                let l = c.contained(out)?;
                let p =
                    l.0.iter()
                        .find(|(p, _)| p.ends_with("mypasswd"))
                        .map(|(p, v)| (p.clone(), v.clone()));
                ensure!(
                    p.as_ref().is_some_and(|(_, v)| v == "f:inside:nlink=2"),
                    "mypasswd should be a second name of the inside file: {p:?}"
                );
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// containerd `HardlinkSymlinkBeforeCreateTarget`, `HardlinkSymlinkRelative`,
/// `HardlinkSymlinkAbsolute`, `HardlinkSymlinkChmod`: a hardlink to a symlink links the
/// symlink itself; nothing is created, linked or chmod'ed through it.
#[test]
fn hardlinks_to_symlinks_link_the_symlink() -> Result<()> {
    for (i, rel) in [false, true].into_iter().enumerate() {
        for across in [false, true] {
            both_ways(
                &format!("hardlink-symlink-{i}-{across}"),
                |c| {
                    let t = if rel {
                        "../outside/etc/passwd".to_owned()
                    } else {
                        format!("{}/etc/passwd", c.a())
                    };
                    let mut a = Tar::default();
                    a.symlink("passwdlink", &t);
                    let mut h = Hdr::new(b"hlink", LNK);
                    h.link = b"passwdlink";
                    h.mode = 0o777; // HardlinkSymlinkChmod: never applied to anything
                    h.mtime = 1;
                    if across {
                        let mut b = Tar::default();
                        b.header(&h);
                        vec![a.end(), b.end()]
                    } else {
                        a.header(&h);
                        // HardlinkSymlinkBeforeCreateTarget: the name appears afterwards.
                        a.dir(&format!("{}/etc", c.a_rel()));
                        vec![a.end()]
                    }
                },
                |c, out| {
                    let l = c.contained(out)?;
                    let link = l.0.get("hlink").cloned().unwrap_or_default();
                    ensure!(link.starts_with("l:"), "hlink should be a symlink: {link}");
                    let m = fs::symlink_metadata(c.target().join("hlink"))?;
                    ensure!(m.nlink() == 2, "hlink shares the symlink's inode");
                    Ok(())
                },
            )?;
        }
    }
    Ok(())
}

/// A hardlink to a directory, to itself, or to a whiteout is refused.
#[test]
fn hardlinks_to_directories_and_themselves_are_refused() -> Result<()> {
    refused_both_ways("hardlink-dir", "is a directory", |_| {
        vec![Tar::default().dir("d").hardlink("l", "d").end()]
    })?;
    refused_both_ways("hardlink-self", "itself", |_| {
        vec![Tar::default().hardlink("l", "./l").end()]
    })?;
    refused_both_ways("hardlink-root", "root directory", |_| {
        vec![Tar::default().hardlink("l", "/..").end()]
    })
}

// ---------------------------------------------------------------------------------------
// Whiteouts.

/// containerd `WhiteoutRoot`, `WhiteoutRootParent`, `WhiteoutCurrentDirectory`,
/// `WhiteoutParent`, and the other reserved `.wh..wh.` names.
#[test]
fn invalid_whiteout_names_are_refused() -> Result<()> {
    for (i, name) in [
        ".wh.",
        ".wh..",
        ".wh...",
        "etc/.wh..",
        "etc/.wh...",
        "etc/.wh.",
        ".wh..wh.foo",
        "etc/.wh..wh.plnk",
    ]
    .into_iter()
    .enumerate()
    {
        refused_both_ways(&format!("whiteout-invalid-{i}"), "whiteout", |_| {
            vec![
                Tar::default().dir("etc").file("etc/passwd", "p").end(),
                Tar::default().whiteout(name).end(),
            ]
        })?;
    }
    Ok(())
}

/// containerd `WhiteoutSymlink`: a whiteout removes the link, not its target.
#[test]
fn whiteout_removes_the_symlink_not_its_target() -> Result<()> {
    both_ways(
        "whiteout-symlink",
        |c| {
            vec![
                Tar::default()
                    .dir("etc")
                    .file("etc/passwd", "inside")
                    .symlink("passwdlink", "/etc/passwd")
                    .symlink("outlink", &format!("{}/etc/passwd", c.a()))
                    .symlink("reldir", "../outside/etc")
                    .end(),
                Tar::default()
                    .whiteout(".wh.passwdlink")
                    .whiteout(".wh.outlink")
                    .whiteout(".wh.reldir")
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?
                .has("etc/passwd", "f:inside")?
                .lacks("passwdlink")?
                .lacks("outlink")?
                .lacks("reldir")?;
            Ok(())
        },
    )
}

/// containerd `WhiteoutSymlinkPath`, `WhiteoutDeadSymlinkParent`: whiteouts below a symlink
/// resolve in-root (or find nothing), never outside. Opaque markers likewise.
#[test]
fn whiteouts_through_symlinks_stay_inside() -> Result<()> {
    for (i, marker) in [".wh.passwd", ".wh.sub", ".wh..wh..opq"]
        .into_iter()
        .enumerate()
    {
        for (j, t) in ["abs", "../outside/etc", "/nonexistent/dir"]
            .into_iter()
            .enumerate()
        {
            both_ways(
                &format!("whiteout-via-symlink-{i}-{j}"),
                |c| {
                    let t = if t == "abs" {
                        format!("{}/etc", c.a())
                    } else {
                        t.to_owned()
                    };
                    vec![
                        Tar::default()
                            .dir("etc")
                            .file("etc/passwd", "inside")
                            .symlink("localetc", &t)
                            .end(),
                        Tar::default().whiteout(&format!("localetc/{marker}")).end(),
                    ]
                },
                |c, out| {
                    c.contained(out)?.has("etc/passwd", "f:inside")?;
                    Ok(())
                },
            )?;
        }
    }
    Ok(())
}

/// containerd `WhiteoutRelativePath`: `dne/../.wh.etc` whites out `etc`, and a whiteout
/// aimed outside (`../.wh.outside`, an absolute path) only reaches inside.
#[test]
fn whiteout_paths_are_normalised_in_root() -> Result<()> {
    both_ways(
        "whiteout-relative",
        |c| {
            vec![
                Tar::default()
                    .dir("etc")
                    .file("etc/passwd", "inside")
                    .dir("keep")
                    .end(),
                Tar::default()
                    .whiteout("dne/../.wh.etc")
                    .whiteout("../.wh.outside")
                    .whiteout(&format!("{}/.wh.etc", c.a()))
                    .whiteout(&format!("../../../../../../../..{}/etc/.wh.passwd", c.a()))
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?.lacks("etc")?.has("keep", "d")?;
            Ok(())
        },
    )
}

/// Files named `.wh.*` cannot exist in an image (layer.md): a directory, symlink or
/// device with such a name, or a path below one (containerd `WhiteoutDirectoryName`), is
/// refused rather than written as content or taken for a whiteout.
#[test]
fn reserved_names_that_are_not_whiteouts_are_refused() -> Result<()> {
    type Build = fn(&mut Tar);
    let cases: [(&str, Build); 4] = [
        ("dir", |t| {
            t.dir(".wh.etc").file(".wh.etc/somefile", "x");
        }),
        ("below", |t| {
            t.file(".wh.etc/somefile", "x");
        }),
        ("symlink", |t| {
            t.symlink(".wh.etc", "/");
        }),
        ("hardlink", |t| {
            t.file("f", "f").hardlink(".wh.etc", "f");
        }),
    ];
    for (name, build) in cases {
        refused_both_ways(&format!("reserved-{name}"), ".wh.", |_| {
            let mut t = Tar::default();
            build(&mut t);
            vec![
                Tar::default().dir("etc").file("etc/passwd", "p").end(),
                t.end(),
            ]
        })?;
    }
    Ok(())
}

/// umoci `TestUnpackEntryWhiteout`, `TestUnpackOpaqueWhiteout`: whiteouts hide lower layers
/// only, opaque markers apply before the layer's own entries wherever they sit.
#[test]
fn whiteouts_and_opaque_markers_hide_lower_layers_only() -> Result<()> {
    both_ways(
        "whiteout-semantics",
        |_| {
            vec![
                Tar::default()
                    .dir("d")
                    .file("d/a", "a")
                    .dir("d/sub")
                    .file("d/sub/b", "b")
                    .file("x", "x")
                    .file("y", "y")
                    .end(),
                Tar::default()
                    .file("d/c", "c")
                    .whiteout("d/.wh..wh..opq")
                    .whiteout(".wh.x")
                    .file("z", "z")
                    .whiteout(".wh.z")
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?
                .has("d/c", "f:c")?
                .lacks("d/a")?
                .lacks("d/sub")?
                .lacks("x")?
                .has("y", "f:y")?
                .has("z", "f:z")?;
            Ok(())
        },
    )
}

// ---------------------------------------------------------------------------------------
// Parser differentials and damaged images: always refused.

/// CVE-2025-62518, CVE-2026-33055: a PAX `size` that disagrees with the header's, either
/// way round, or stands in for a header size of 0 that a ustar-only reader would use (and
/// then read the smuggled entry hidden in the data).
#[test]
fn pax_size_disagreement_is_refused() -> Result<()> {
    let smuggled = Tar::default().file("smuggled", "s").raw();
    let cases: [(&str, u64, u64); 3] =
        [("bigger", 3, 1024), ("smaller", 1024, 3), ("zero", 0, 1024)];
    for (name, header_size, pax_size) in cases {
        refused_both_ways(&format!("pax-size-{name}"), "size", |_| {
            let mut t = Tar::default();
            t.pax(&[(b"size", pax_size.to_string().as_bytes())]);
            let mut h = Hdr::new(b"f", REG);
            h.size = header_size;
            t.header(&h);
            let mut body = smuggled.clone();
            body.resize(
                usize::try_from(header_size.max(pax_size)).expect("small"),
                0,
            );
            t.data(&body[..usize::try_from(header_size.max(pax_size)).expect("small")]);
            vec![t.end()]
        })?;
    }
    Ok(())
}

/// Malformed tar streams: trailing garbage, no end marker, a lone zero block, a bad
/// checksum, an unknown entry type, data on a non-file entry.
#[test]
fn malformed_tar_streams_are_refused() -> Result<()> {
    type Build = fn() -> Vec<u8>;
    let cases: [(&str, &str, Build); 7] = [
        ("garbage-after-end", "after the end", || {
            let mut t = Tar::default().file("a", "a").end();
            t.extend_from_slice(b"garbage");
            t
        }),
        ("no-end-marker", "truncated", || {
            Tar::default().file("a", "a").raw()
        }),
        ("truncated-data", "truncated", || {
            let mut t = Tar::default().file("a", &"x".repeat(2000)).raw();
            t.truncate(1024);
            t
        }),
        ("lone-zero-block", "zero block", || {
            let mut t = Tar::default().file("a", "a").raw();
            t.extend_from_slice(&[0u8; 512]);
            t.extend_from_slice(&Tar::default().file("b", "b").end());
            t
        }),
        ("bad-checksum", "checksum", || {
            let mut t = Tar::default().file("a", "a").end();
            t[0] = b'b';
            t
        }),
        ("unknown-type", "unknown entry type", || {
            Tar::default().header(&Hdr::new(b"x", b'Z')).end()
        }),
        ("symlink-with-data", "bytes of data", || {
            let mut h = Hdr::new(b"s", SYM);
            h.link = b"t";
            h.size = 3;
            Tar::default().header(&h).data(b"abc").end()
        }),
    ];
    for (name, needle, build) in cases {
        refused_both_ways(&format!("tar-{name}"), needle, |_| vec![build()])?;
    }
    Ok(())
}

/// layer.md: a layer MUST NOT contain duplicate paths (however they are spelled).
#[test]
fn duplicate_paths_in_one_layer_are_refused() -> Result<()> {
    type Build = fn(&mut Tar);
    let cases: [(&str, Build); 4] = [
        ("file", |t| {
            t.file("a", "1").file("a", "2");
        }),
        ("spelling", |t| {
            t.file("d/a", "1").file("./d/../d//a", "2");
        }),
        ("dir", |t| {
            t.dir("d").dir("/d/");
        }),
        ("whiteout", |t| {
            t.whiteout(".wh.x").whiteout("./.wh.x");
        }),
    ];
    for (name, build) in cases {
        refused_both_ways(&format!("duplicate-{name}"), "duplicate path", |_| {
            let mut t = Tar::default();
            build(&mut t);
            vec![t.end()]
        })?;
    }
    Ok(())
}

/// umoci hardening.bats and issue 2: damaged blobs and documents, each refused with one
/// line, leaving no target.
#[test]
fn damaged_images_are_refused() -> Result<()> {
    type Tweak = fn(&mut Vec<Layer>, &mut Docs);
    let good = || Tar::default().dir("etc").file("etc/passwd", "p").end();
    let cases: [(&str, &str, Tweak); 16] = [
        ("digest-mismatch", "digest mismatch", |ls, _| {
            if let Some(l) = ls.get_mut(1) {
                let mut b = l.blob.clone();
                let n = b.len();
                b[n - 9] ^= 0xff;
                l.stored = Some(b);
            }
        }),
        ("size-too-big", "bytes", |_, d| {
            let n = d.manifest["layers"][1]["size"].as_u64().unwrap_or(0);
            d.manifest["layers"][1]["size"] = json!(n + 1);
        }),
        ("size-too-small", "bytes", |_, d| {
            let n = d.manifest["layers"][1]["size"].as_u64().unwrap_or(0);
            d.manifest["layers"][1]["size"] = json!(n.saturating_sub(1));
        }),
        ("diff-id-mismatch", "diff_id", |_, d| {
            d.config["rootfs"]["diff_ids"][1] = json!(format!("sha256:{}", sha256(b"other")));
        }),
        ("diff-id-count", "diff_ids", |_, d| {
            d.config["rootfs"]["diff_ids"]
                .as_array_mut()
                .expect("array")
                .pop();
        }),
        ("unknown-media-type", "not supported", |_, d| {
            d.manifest["layers"][1]["mediaType"] =
                json!("application/vnd.oci.image.layer.v1.tar+bzip2");
        }),
        ("bad-json-manifest", "bad JSON", |_, d| {
            d.manifest_raw = Some(b"{\"schemaVersion\": 2, \"layers\": [".to_vec());
        }),
        ("bad-json-config", "bad JSON", |_, d| {
            d.config_raw = Some(b"{\"rootfs\": nope}".to_vec());
        }),
        ("bad-json-index", "bad JSON", |_, d| {
            d.index_raw = Some(b"[]".to_vec());
        }),
        ("wrong-types-manifest", "bad JSON", |_, d| {
            d.manifest["layers"] = json!("not a list");
        }),
        ("digest-uppercase", "digest", |_, d| {
            let s = d.manifest["layers"][1]["digest"]
                .as_str()
                .unwrap_or("")
                .to_uppercase();
            d.manifest["layers"][1]["digest"] = json!(s.replace("SHA256", "sha256"));
        }),
        ("digest-traversal", "digest", |_, d| {
            d.manifest["layers"][1]["digest"] =
                json!(format!("sha256:../../../outside/etc/{}", "a".repeat(44)));
        }),
        ("digest-short", "digest", |_, d| {
            d.manifest["layers"][1]["digest"] = json!("sha256:abc");
        }),
        ("digest-sha512", "digest", |_, d| {
            d.manifest["layers"][1]["digest"] = json!(format!("sha512:{}", "a".repeat(128)));
        }),
        ("digest-in-diff-ids", "digest", |_, d| {
            d.config["rootfs"]["diff_ids"][1] = json!("sha256:xyz");
        }),
        ("digest-in-index", "digest", |_, d| {
            d.index_raw = Some(
                format!(
                    r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MANIFEST}","digest":"sha256:{}","size":1,"annotations":{{"org.opencontainers.image.ref.name":"img:v1"}}}}]}}"#,
                    "G".repeat(64)
                )
                .into_bytes(),
            );
        }),
    ];
    for (name, needle, tweak) in cases {
        let mut c = Case::new(&format!("damaged-{name}"))?;
        let mut ls = vec![base_layer(), Layer::gz(&good())];
        // The layer part of the tweak now, the document part once the documents exist.
        let mut scratch = Vec::new();
        tweak(&mut ls, &mut empty_docs());
        let out = c.unstash(&ls, |d| tweak(&mut scratch, d))?;
        c.refused(&out, needle)
            .with_context(|| format!("case damaged-{name}"))?;
    }
    Ok(())
}

/// Documents that only a tweak of the layers fills in.
fn empty_docs() -> Docs {
    Docs {
        config: json!({"rootfs": {"diff_ids": [null, null]}}),
        manifest: json!({"layers": [{}, {}]}),
        config_raw: None,
        manifest_raw: None,
        index_raw: None,
        manifest_desc_media: MANIFEST.into(),
    }
}

/// Compressed streams that are not what their media type says.
#[test]
fn damaged_compression_is_refused() -> Result<()> {
    let tar = Tar::default()
        .dir("etc")
        .file("etc/passwd", &"p".repeat(5000))
        .end();
    let gz = gzip(&tar);
    let cases: [(&str, Layer); 4] = [
        (
            "truncated-gzip",
            Layer {
                blob: gz[..gz.len() / 2].to_vec(),
                ..Layer::gz(&tar)
            },
        ),
        (
            "not-gzip",
            Layer {
                media_type: GZIP.into(),
                ..Layer::plain(&tar)
            },
        ),
        (
            "garbage-after-gzip",
            Layer {
                blob: [gz.as_slice(), b"garbage"].concat(),
                ..Layer::gz(&tar)
            },
        ),
        (
            "gzip-as-plain",
            Layer {
                media_type: PLAIN.into(),
                ..Layer::gz(&tar)
            },
        ),
    ];
    for (name, layer) in cases {
        for with_base in [false, true] {
            let mut c = Case::new(&format!("compression-{name}-{with_base}"))?;
            let mut ls = vec![layer.clone()];
            if with_base {
                ls.insert(0, base_layer());
            }
            let out = c.unstash(&ls, |_| {})?;
            c.refused(&out, "layer")
                .with_context(|| format!("case compression-{name}-{with_base}"))?;
        }
    }
    Ok(())
}

/// CVE-2021-41190: a document whose mediaType disagrees with its descriptor, or that
/// could be read both as a manifest and as an index.
#[test]
fn cve_2021_41190_ambiguous_documents_are_refused() -> Result<()> {
    type Tweak = fn(&mut Docs);
    let cases: [(&str, &str, Tweak); 4] = [
        ("manifest-says-index", "disagrees", |d| {
            d.manifest["mediaType"] = json!(INDEX);
        }),
        ("descriptor-says-index", "disagrees", |d| {
            d.manifest_desc_media = INDEX.into();
        }),
        ("manifest-with-manifests", "ambiguous", |d| {
            d.manifest
                .as_object_mut()
                .expect("object")
                .remove("mediaType");
            d.manifest["manifests"] = json!([]);
        }),
        ("index-with-layers", "ambiguous", |d| {
            d.manifest
                .as_object_mut()
                .expect("object")
                .remove("mediaType");
            d.manifest["manifests"] = json!([]);
            d.manifest_desc_media = INDEX.into();
        }),
    ];
    for (name, needle, tweak) in cases {
        let mut c = Case::new(&format!("cve-2021-41190-{name}"))?;
        let out = c.unstash(&[Layer::gz(&Tar::default().file("f", "f").end())], tweak)?;
        c.refused(&out, needle)
            .with_context(|| format!("case {name}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Resource limits (issue 8).

#[test]
fn resource_limits_are_enforced() -> Result<()> {
    let long_name = "a".repeat(256);
    let long_path = format!("{}f", "d/".repeat(2100));
    let long_link = "l/".repeat(2100);
    let big_comment = vec![b'c'; (1 << 20) + 1];
    let big_xattr = vec![b'x'; (64 << 10) + 1];
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("name", "255", Tar::default().file(&long_name, "x").end()),
        ("path", "4096", Tar::default().file(&long_path, "x").end()),
        (
            "link",
            "4096",
            Tar::default().symlink("s", &long_link).end(),
        ),
        (
            "pax-record",
            "limit",
            Tar::default()
                .pax(&[(b"comment", &big_comment)])
                .file("f", "x")
                .end(),
        ),
        (
            "xattr-value",
            "limit",
            Tar::default()
                .pax(&[(b"SCHILY.xattr.user.big", &big_xattr)])
                .file("f", "x")
                .end(),
        ),
    ];
    let mut cases = cases;
    let mut gnu = Tar::default();
    let mut h = Hdr::new(b"././@LongLink", b'L');
    h.size = 5000;
    gnu.header(&h).data(&[b'a'; 5000]).file("f", "x");
    cases.push(("gnu-long-name", "too long", gnu.end()));
    for (name, needle, tar) in cases {
        refused_both_ways(&format!("limit-{name}"), needle, |_| vec![tar.clone()])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Devices and owners (root only).

#[test]
fn privileged_devices_and_owners_stay_inside() -> Result<()> {
    if !is_root() {
        skip!("needs root (mknod, chown)");
    }
    both_ways(
        "devices",
        |c| {
            let mut t = Tar::default();
            t.dir("dev")
                .symlink("devdir", &format!("{}/etc", c.a()))
                .symlink("reldir", "../outside/etc");
            let mut null = Hdr::new(b"dev/null", CHR);
            null.dev = (1, 3);
            null.mode = 0o666;
            t.header(&null);
            let mut via = Hdr::new(b"devdir/null", CHR);
            via.dev = (1, 3);
            t.header(&via);
            let mut fifo = Hdr::new(b"reldir/fifo", FIFO);
            fifo.uid = 4242;
            t.header(&fifo);
            // An owner and mode on a symlink to the canary: applied to the link only.
            let mut owned = Hdr::new(b"ownedlink", SYM);
            owned.link = b"../outside/etc/passwd";
            owned.uid = 4242;
            t.header(&owned);
            let mut abs_owned = Hdr::new(b"absownedlink", SYM);
            let a = format!("{}/etc/passwd", c.a());
            abs_owned.link = a.as_bytes();
            abs_owned.uid = 4242;
            t.header(&abs_owned);
            vec![t.end()]
        },
        |c, out| {
            let l = c.contained(out)?;
            l.has("dev/null", "other")?;
            ensure!(
                l.0.iter().filter(|(_, v)| *v == "other").count() == 3,
                "three nodes inside: {:#?}",
                l.0
            );
            let m = fs::symlink_metadata(c.target().join("ownedlink"))?;
            ensure!(m.uid() == 4242, "the link itself is chowned");
            Ok(())
        },
    )
}

// ---------------------------------------------------------------------------------------
// The layout itself as an attacker's tool: unstash reads it, never writes into it.

/// A foreign layout whose `.stackbuild` directory (where our store keeps its layer-index
/// cache) is a symlink out of it: planning a multi-layer image writes nothing there.
#[test]
fn foreign_layout_is_only_read() -> Result<()> {
    for (i, rel) in [false, true].into_iter().enumerate() {
        let mut c = Case::new(&format!("foreign-layout-{i}"))?;
        let layout = c.w.path("layout");
        fs::create_dir_all(&layout)?;
        let aim = if rel { "../outside".to_owned() } else { c.a() };
        std::os::unix::fs::symlink(&aim, layout.join(".stackbuild"))?;
        let ls = [
            base_layer(),
            Layer::gz(&Tar::default().file("f", "f").end()),
        ];
        let out = c.unstash(&ls, |_| {})?;
        c.contained(&out)?
            .has("f", "f:f")?
            .has("base/keep", "f:keep")?;
        ensure!(c.planned == Some(true), "the planner ran");
    }
    // And an ordinary foreign layout gains nothing either.
    let mut c = Case::new("foreign-layout-plain")?;
    let ls = [
        base_layer(),
        Layer::gz(&Tar::default().file("f", "f").end()),
    ];
    let out = c.unstash(&ls, |_| {})?;
    c.contained(&out)?;
    ensure!(
        !c.w.path("layout/.stackbuild").exists(),
        "unstash wrote into the layout it read"
    );
    Ok(())
}

/// A layer-index cache shipped inside a foreign layout is not trusted: it claims the
/// damaged layer adds nothing (so a planner trusting it would never read, nor verify,
/// that layer).
#[test]
fn forged_layer_index_cache_is_not_trusted() -> Result<()> {
    let mut c = Case::new("forged-cache")?;
    let mut damaged = Layer::gz(&Tar::default().file("f", "f").end());
    let mut b = damaged.blob.clone();
    let n = b.len();
    b[n - 9] ^= 0xff;
    damaged.stored = Some(b);
    let hex = sha256(&damaged.blob);
    // A well-formed cache entry (what our own store would hold) saying "no changes", and
    // that the layer was checked to decompress to the config's diff_id.
    let cache = c.w.path("layout/.stackbuild/cache");
    let tmp = c.w.path("layout/.stackbuild/tmp");
    fs::create_dir_all(&tmp)?;
    stackcore::layer::LayerIndex::default().save_cached(
        &cache,
        &tmp,
        &stackcore::digest::Digest::parse(&format!("sha256:{hex}"))?,
        &stackcore::digest::Digest::parse(&damaged.diff_id)?,
    );
    ensure!(
        cache.join("index").join(&hex).is_file(),
        "the forged cache was written"
    );
    let out = c.unstash(&[base_layer(), damaged], |_| {})?;
    c.refused(&out, "digest mismatch")
}

/// An opaque marker on a symlink (to an in-root directory, or out): like a whiteout, it
/// never acts through the link in its last component, so the directory it points to
/// keeps its children, whichever way the layers are written.
#[test]
fn opaque_marker_through_an_in_root_symlink() -> Result<()> {
    both_ways(
        "opaque-via-symlink",
        |_| {
            vec![
                Tar::default()
                    .dir("real")
                    .file("real/a", "a")
                    .symlink("link", "/real")
                    .symlink("out", "../outside/etc")
                    .end(),
                Tar::default()
                    .whiteout("link/.wh..wh..opq")
                    .whiteout("out/.wh..wh..opq")
                    .file("z", "z")
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?
                .has("real/a", "f:a")?
                .has("link", "l:/real")?
                .has("z", "f:z")?;
            Ok(())
        },
    )
}

/// The target's own mode when no entry declares the root: the same whichever way the
/// layers were written (0755, as tar gives directories it has to make).
#[test]
fn undeclared_root_gets_the_same_mode_either_way() -> Result<()> {
    both_ways(
        "root-mode",
        |_| vec![Tar::default().file("f", "f").end()],
        |c, out| {
            c.contained(out)?;
            let mode = fs::metadata(c.target())?.mode() & 0o7777;
            ensure!(
                mode == 0o755,
                "target mode {mode:o} (planned {:?})",
                c.planned
            );
            Ok(())
        },
    )
}

/// Symlink loops and long chains: resolving through them fails cleanly (ELOOP) or
/// replaces the link; nothing outside is touched.
#[test]
fn symlink_loops_are_refused_or_contained() -> Result<()> {
    both_ways(
        "symlink-loop",
        |_| {
            vec![
                Tar::default()
                    .symlink("a", "b")
                    .symlink("b", "a")
                    .file("a/x", "x")
                    .end(),
            ]
        },
        |c, out| {
            if out.status.success() {
                c.contained(out)?.find("x")?;
                Ok(())
            } else {
                c.refused(out, "symbolic links")
            }
        },
    )?;
    both_ways(
        "symlink-chain",
        |c| {
            let mut t = Tar::default();
            t.symlink("l0", &format!("{}/etc", c.a()));
            for i in 1..50 {
                t.symlink(&format!("l{i}"), &format!("l{}", i - 1));
            }
            vec![t.file("l49/x", "x").end()]
        },
        |c, out| {
            if out.status.success() {
                c.contained(out)?.find("x")?;
                Ok(())
            } else {
                c.refused(out, "symbolic links")
            }
        },
    )
}

/// `unstash --output -` goes through a scratch staging directory: a hostile image is
/// contained there too, and the tar it prints holds the in-root result.
#[test]
fn tar_output_of_a_hostile_image_stays_contained() -> Result<()> {
    let c = Case::new("tar-output")?;
    let a = c.a();
    let t = Tar::default()
        .symlink("localetc", &format!("{a}/etc"))
        .file("localetc/unbroken", "unbroken")
        .symlink("rel", "../outside/etc")
        .file("rel/passwd", "pwned")
        .hardlink("h", "../outside/etc/shadow")
        .end();
    write_layout(&c.w.path("layout"), &[Layer::gz(&t)], |_| {})?;
    let r = format!("oci:{}:img:v1", c.w.path("layout").display());
    let scratch = c.w.path("scratch");
    fs::create_dir(&scratch)?;
    let out = output(
        c.w.bin("unstash")
            .env("TMPDIR", &scratch)
            .args(["--quiet", &r, "--output", "-"]),
    )?;
    ensure!(
        fs::read_dir(&scratch)?.next().is_none(),
        "a refused unstash left its scratch staging directory"
    );
    fs::remove_dir(&scratch)?;
    c.refused(&out, "does not exist")?;
    // Without the hardlink it succeeds, and the links are plain entries of the tar.
    let t = Tar::default()
        .symlink("localetc", &format!("{a}/etc"))
        .file("localetc/unbroken", "unbroken")
        .symlink("rel", "../outside/etc")
        .file("rel/passwd", "pwned")
        .end();
    write_layout(&c.w.path("layout"), &[Layer::gz(&t)], |_| {})?;
    let out = output(c.w.bin("unstash").args(["--quiet", &r, "--output", "-"]))?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.check_canaries()?;
    let list = crate::util::pipe(c.w.cmd("tar").arg("-tvf").arg("-"), &out.stdout)?;
    let list = String::from_utf8_lossy(&list.stdout);
    ensure!(
        list.contains("unbroken") && list.contains("passwd"),
        "{list}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Hardlink semantics across layers (go-containerregistry#977, image-spec#1204, kaniko#282).

#[test]
fn hardlinks_across_layers() -> Result<()> {
    // A link to a file of a lower layer.
    both_ways(
        "hl-lower",
        |_| {
            vec![
                Tar::default().dir("bin").file("bin/a", "A").end(),
                Tar::default().hardlink("bin/b", "bin/a").end(),
            ]
        },
        |c, out| {
            c.contained(out)?
                .has("bin/a", "f:A:nlink=2")?
                .has("bin/b", "f:A:nlink=2")?;
            Ok(())
        },
    )?;
    // A link whose target a later layer whites out: the link keeps the data.
    both_ways(
        "hl-target-whited-out",
        |_| {
            vec![
                Tar::default().file("a", "A").end(),
                Tar::default().hardlink("b", "a").end(),
                Tar::default().whiteout(".wh.a").end(),
            ]
        },
        |c, out| {
            c.contained(out)?.lacks("a")?.has("b", "f:A")?;
            Ok(())
        },
    )?;
    // A later layer replaces one name of a group: the other names keep the old content.
    both_ways(
        "hl-group-split",
        |_| {
            vec![
                Tar::default()
                    .file("a", "old")
                    .hardlink("b", "a")
                    .hardlink("c", "a")
                    .end(),
                Tar::default().file("b", "new").end(),
            ]
        },
        |c, out| {
            c.contained(out)?
                .has("a", "f:old:nlink=2")?
                .has("b", "f:new")?
                .has("c", "f:old:nlink=2")?;
            Ok(())
        },
    )?;
    // A link whose parent directory has no entry in the tar.
    both_ways(
        "hl-implicit-parent",
        |_| {
            vec![
                Tar::default()
                    .file("x/y/a", "A")
                    .hardlink("p/q/b", "x/y/a")
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?
                .has("p/q", "d")?
                .has("p/q/b", "f:A:nlink=2")?;
            Ok(())
        },
    )
}

/// Modes that an extractor must not trip over (umoci#222): a file of mode 000, a 0500
/// directory with children, a 0000 directory; restored exactly, nothing left writable.
#[test]
fn privileged_restrictive_modes_are_restored_after_the_children() -> Result<()> {
    if !is_root() {
        skip!("needs root to read back through a mode-000 directory");
    }
    both_ways(
        "modes",
        |_| {
            let mut t = Tar::default();
            let mut f = Hdr::new(b"ro/none", REG);
            f.mode = 0;
            f.size = 4;
            t.dir_mode("ro", 0o500);
            t.header(&f).data(b"data");
            t.dir_mode("ro/sub", 0);
            t.file("ro/sub/deep", "deep");
            vec![t.end()]
        },
        |c, out| {
            c.contained(out)?
                .has("ro/none", "f:data")?
                .has("ro/sub/deep", "f:deep")?;
            let mode = |p: &str| -> Result<u32> {
                Ok(fs::symlink_metadata(c.target().join(p))?.mode() & 0o7777)
            };
            ensure!(mode("ro")? == 0o500 && mode("ro/none")? == 0 && mode("ro/sub")? == 0);
            Ok(())
        },
    )
}

// ---------------------------------------------------------------------------------------
// The planner against the plain extractor: random layer stacks over a few names, written
// both ways, must give the same tree (or both fail), and never reach outside.

/// xorshift64*: a fixed, dependency-free sequence, so a failure names a reproducible seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        usize::try_from(x >> 33).expect("31 bits") % n
    }

    fn path(&mut self) -> String {
        let depth = 1 + self.below(3);
        (0..depth)
            .map(|_| ["a", "b", "c"][self.below(3)])
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Adds one entry to a tar.
type AddEntry = Box<dyn Fn(&mut Tar)>;

/// Random layers, and what they hold in words (for a failure message).
fn random_layers(seed: u64) -> (Vec<Vec<u8>>, String) {
    let mut text = String::new();
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let layers = 2 + r.below(3);
    // Files put so far: odd seeds link to them rather than to names that may not exist.
    let mut files: Vec<String> = Vec::new();
    let tars = (0..layers)
        .map(|l| {
            text += &format!("layer {l}:");
            let mut t = Tar::default();
            let mut used = std::collections::HashSet::new();
            for _ in 0..=r.below(6) {
                let p = r.path();
                // Odd seeds: no symlinks, more hardlinks and markers (the planner's ground).
                let pick = if seed % 2 == 1 {
                    [0, 1, 3, 6, 6, 7, 8][r.below(7)]
                } else {
                    r.below(9)
                };
                let (key, add): (String, AddEntry) = match pick {
                    0..=2 => {
                        let content = format!("c{}", r.below(100));
                        text += &format!(" f {p}={content};");
                        files.push(p.clone());
                        (
                            p.clone(),
                            Box::new(move |t| {
                                t.file(&p, &content);
                            }),
                        )
                    }
                    3 => {
                        let mode = [0o755, 0o700, 0o555][r.below(3)];
                        text += &format!(" d {p} {mode:o};");
                        (
                            p.clone(),
                            Box::new(move |t| {
                                t.dir_mode(&p, mode);
                            }),
                        )
                    }
                    4 | 5 => {
                        let to = match r.below(6) {
                            0 => r.path(),
                            1 => format!("/{}", r.path()),
                            2 => format!("../{}", r.path()),
                            3 => "..".to_owned(),
                            4 => "/".to_owned(),
                            _ => "../outside/etc".to_owned(),
                        };
                        text += &format!(" l {p}->{to};");
                        (
                            p.clone(),
                            Box::new(move |t| {
                                t.symlink(&p, &to);
                            }),
                        )
                    }
                    6 => {
                        let to = if seed % 2 == 1 && !files.is_empty() {
                            files[r.below(files.len())].clone()
                        } else {
                            r.path()
                        };
                        if to == p {
                            continue;
                        }
                        text += &format!(" h {p}=>{to};");
                        (
                            p.clone(),
                            Box::new(move |t| {
                                t.hardlink(&p, &to);
                            }),
                        )
                    }
                    7 => {
                        let (dir, name) = p.rsplit_once('/').unwrap_or(("", &p));
                        let wh = if dir.is_empty() {
                            format!(".wh.{name}")
                        } else {
                            format!("{dir}/.wh.{name}")
                        };
                        text += &format!(" {wh};");
                        (
                            format!("wh:{p}"),
                            Box::new(move |t| {
                                t.whiteout(&wh);
                            }),
                        )
                    }
                    _ => {
                        text += &format!(" {p}/opq;");
                        (
                            format!("opq:{p}"),
                            Box::new(move |t| {
                                t.whiteout(&format!("{p}/.wh..wh..opq"));
                            }),
                        )
                    }
                };
                if used.insert(key) {
                    add(&mut t);
                }
            }
            text.push('\n');
            t.end()
        })
        .collect();
    (tars, text)
}

#[test]
fn planner_agrees_with_in_order_extraction() -> Result<()> {
    let seeds: u64 = std::env::var("HOSTILE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let opts = crate::util::DumpOpts {
        no_dir_mtime: true,
        ..Default::default()
    };
    let mut planned = 0;
    for seed in 0..seeds {
        let mut c = Case::new(&format!("differential-{seed}"))?;
        let (tars, text) = random_layers(seed);
        let ls: Vec<Layer> = tars.iter().map(|t| Layer::gz(t)).collect();
        write_layout(&c.w.path("layout"), &ls, |_| {})?;
        let r = format!("oci:{}:img:v1", c.w.path("layout").display());
        let mut results = Vec::new();
        for unplanned in [true, false] {
            let mut cmd = c.w.bin("unstash");
            cmd.args(["--quiet", "--json", &r, "--to", "target"]);
            if unplanned {
                cmd.env("STACKBUILD_UNPLANNED", "1");
            }
            let out = output(&mut cmd)?;
            c.check_canaries()
                .with_context(|| format!("seed {seed}, unplanned {unplanned}"))?;
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout)?;
                if !unplanned && v["planned"] == json!(true) {
                    planned += 1;
                }
                results.push(Ok(crate::util::dump_with(&c.target(), opts)?));
                force_remove(&c.target())?;
            } else {
                results.push(Err(String::from_utf8_lossy(&out.stderr).into_owned()));
            }
        }
        c.planned = None;
        match (&results[0], &results[1]) {
            (Ok(a), Ok(b)) => crate::util::assert_same(a, b)
                .with_context(|| format!("seed {seed}: in order (-) vs planned (+)\n{text}"))?,
            (Err(_), Err(_)) => {}
            (a, b) => bail!("seed {seed}: in order {a:?}, planned {b:?}\n{text}"),
        }
    }
    eprintln!("{seeds} random stacks, {planned} written by the planner");
    ensure!(
        planned > seeds / 8,
        "too few stacks exercised the planner: {planned}"
    );
    Ok(())
}

/// A whiteout in the same layer as entries at or below its path: the lower layers' content
/// goes, this layer's stays, whether the whiteout comes before or after them in the tar.
#[test]
fn whiteout_next_to_its_own_layers_entries() -> Result<()> {
    for after in [false, true] {
        both_ways(
            &format!("whiteout-same-layer-{after}"),
            |_| {
                let lower = Tar::default()
                    .dir("c")
                    .file("c/a", "a")
                    .dir("c/sub")
                    .file("c/sub/b", "b")
                    .end();
                let mut t = Tar::default();
                if !after {
                    t.whiteout(".wh.c");
                }
                t.dir("c").file("c/new", "new").dir("c/sub");
                if after {
                    t.whiteout(".wh.c");
                }
                vec![lower, t.end()]
            },
            |c, out| {
                c.contained(out)?
                    .has("c/new", "f:new")?
                    .has("c/sub", "d")?
                    .lacks("c/a")?
                    .lacks("c/sub/b")?;
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// Directories nobody declared are 0755 whatever the caller's umask, as the planner makes
/// them; declared ones keep their mode.
#[test]
fn implicit_directories_ignore_the_umask() -> Result<()> {
    for layers in [1, 2] {
        let c = Case::new(&format!("umask-{layers}"))?;
        let mut ls = vec![Layer::gz(
            &Tar::default().file("a/b/f", "f").dir_mode("d", 0o750).end(),
        )];
        if layers == 2 {
            ls.push(Layer::gz(&Tar::default().file("x/y", "y").end()));
        }
        write_layout(&c.w.path("layout"), &ls, |_| {})?;
        let r = format!("oci:{}:img:v1", c.w.path("layout").display());
        let bin = crate::util::bin_dir().join("unstash");
        let out = output(
            c.w.cmd("sh")
                .arg("-c")
                .arg("umask 077 && exec \"$0\" \"$@\"")
                .arg(&bin)
                .args(["--quiet", &r, "--to", "target"]),
        )?;
        c.contained(&out)?;
        for (p, want) in [("", 0o755), ("a", 0o755), ("a/b", 0o755), ("d", 0o750)] {
            let mode = fs::metadata(c.target().join(p))?.mode() & 0o7777;
            ensure!(
                mode == want,
                "{layers} layers: {p:?} has mode {mode:o}, not {want:o}"
            );
        }
    }
    Ok(())
}

/// A whiteout reached through a symlink its own layer made: whiteouts only hide what lower
/// layers left, so it never deletes the layer's own entries (differential seed 974).
#[test]
fn whiteout_through_its_own_layers_symlink() -> Result<()> {
    both_ways(
        "whiteout-own-symlink",
        |_| {
            vec![
                Tar::default().dir("a").file("a/c", "lower").end(),
                Tar::default()
                    .symlink("a", "..")
                    .file("c/b", "mine")
                    .whiteout("a/.wh.c")
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?.has("a", "l:..")?.has("c/b", "f:mine")?;
            Ok(())
        },
    )?;
    both_ways(
        "whiteout-own-symlink-1",
        |_| {
            vec![
                Tar::default()
                    .symlink("a", "..")
                    .file("c/b", "mine")
                    .whiteout("a/.wh.c")
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?.has("c/b", "f:mine")?;
            Ok(())
        },
    )
}

/// Layout files that are not regular files: a FIFO would block unstash forever, a symlink
/// to `/dev/zero` would never end (or fill memory); oversized documents are refused too.
#[test]
fn layout_files_that_are_not_regular_files_are_refused() -> Result<()> {
    type Damage = fn(&Path, &str) -> Result<()>;
    let cases: [(&str, &str, Damage); 5] = [
        ("index-dev-zero", "regular file", |l, _| {
            fs::remove_file(l.join("index.json"))?;
            Ok(std::os::unix::fs::symlink(
                "/dev/zero",
                l.join("index.json"),
            )?)
        }),
        ("oci-layout-dev-zero", "regular file", |l, _| {
            fs::remove_file(l.join("oci-layout"))?;
            Ok(std::os::unix::fs::symlink(
                "/dev/zero",
                l.join("oci-layout"),
            )?)
        }),
        ("index-fifo", "regular file", |l, _| {
            fs::remove_file(l.join("index.json"))?;
            mkfifo(&l.join("index.json"))
        }),
        ("blob-fifo", "regular file", |l, hex| {
            let blob = l.join("blobs/sha256").join(hex);
            fs::remove_file(&blob)?;
            mkfifo(&blob)
        }),
        ("index-huge", "larger than", |l, _| {
            let mut text = fs::read(l.join("index.json"))?;
            text.resize(5 << 20, b' ');
            Ok(fs::write(l.join("index.json"), text)?)
        }),
    ];
    for (name, needle, damage) in cases {
        let mut c = Case::new(&format!("layout-file-{name}"))?;
        let layer = Layer::gz(&Tar::default().file("f", "f").end());
        let hex = sha256(&layer.blob);
        let layout = c.w.path("layout");
        write_layout(&layout, &[base_layer(), layer], |_| {})?;
        damage(&layout, &hex)?;
        let out = c.run_unstash()?;
        c.refused(&out, needle)
            .with_context(|| format!("case {name}"))?;
    }
    Ok(())
}

fn mkfifo(p: &Path) -> Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )?;
    Ok(())
}

/// Owners that do not fit Linux's 32-bit ids (2^32 would wrap to root, 2^32-1 means "leave
/// unchanged" to chown) are refused, in PAX records and in base-256 header fields.
#[test]
fn out_of_range_owners_are_refused() -> Result<()> {
    for (i, uid) in ["4294967296", "4294967295", "18446744073709551615"]
        .into_iter()
        .enumerate()
    {
        refused_both_ways(&format!("owner-{i}"), "out of range", |_| {
            vec![
                Tar::default()
                    .pax(&[(b"uid", uid.as_bytes())])
                    .file("f", "x")
                    .end(),
            ]
        })?;
    }
    refused_both_ways("owner-gid", "out of range", |_| {
        vec![
            Tar::default()
                .pax(&[(b"gid", b"4294967296")])
                .file("f", "x")
                .end(),
        ]
    })
}

/// A hardlink to a symlink, later used as a parent directory: an extractor follows it
/// like the symlink it is, and the planner must not pretend it is a plain file to replace
/// (differential seed 1460).
#[test]
fn hardlinked_symlink_as_a_parent() -> Result<()> {
    both_ways(
        "hardlinked-symlink-parent",
        |_| {
            vec![
                Tar::default()
                    .dir("d")
                    .symlink("l", "d")
                    .hardlink("h", "l")
                    .symlink("out", "../outside/etc")
                    .hardlink("hout", "out")
                    .end(),
                Tar::default()
                    .file("h/x", "x")
                    .file("hout/passwd", "pwned")
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?
                .has("d/x", "f:x")?
                .has("h", "l:d")?
                .has("hout/passwd", "f:pwned")?;
            Ok(())
        },
    )
}

/// An `oci-archive:` whose tar names a layout file twice (`index.json` and
/// `./index.json`): which one a reader takes decides which image it sees, so it is refused.
#[test]
fn oci_archive_with_duplicate_members_is_refused() -> Result<()> {
    let c = Case::new("archive-duplicate")?;
    let layout = c.w.path("layout");
    write_layout(
        &layout,
        &[Layer::gz(&Tar::default().file("f", "f").end())],
        |_| {},
    )?;
    let mut t = Tar::default();
    let mut names = vec!["oci-layout".to_owned(), "index.json".to_owned()];
    for e in fs::read_dir(layout.join("blobs/sha256"))? {
        names.push(format!("blobs/sha256/{}", e?.file_name().to_string_lossy()));
    }
    for n in &names {
        t.file_bytes(n.as_bytes(), &fs::read(layout.join(n))?);
    }
    let good = {
        let mut g = Tar::default();
        g.0.clone_from(&t.0);
        g.end()
    };
    t.file_bytes(b"./index.json", br#"{"schemaVersion":2,"manifests":[]}"#);
    let bad = t.end();
    fs::write(layout.join("good.tar"), good)?;
    fs::write(layout.join("bad.tar"), bad)?;
    let run = |name: &str| -> Result<Output> {
        let r = format!("oci-archive:{}:img:v1", layout.join(name).display());
        output(c.w.bin("unstash").args(["--quiet", &r, "--to", "target"]))
    };
    let out = run("good.tar")?;
    c.contained(&out)?.has("f", "f:f")?;
    force_remove(&c.target())?;
    let out = run("bad.tar")?;
    c.refused(&out, "two members named index.json")
}

/// Unmounts a test mount when dropped.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status(); // best effort
    }
}

/// A layer bigger than the free space: the run ends with one line naming the problem, and
/// neither the target nor its staging directory is left on the full file system.
#[test]
fn privileged_full_disk_fails_cleanly() -> Result<()> {
    if !is_root() {
        skip!("needs root (mounts a 1 MiB tmpfs)");
    }
    let c = Case::new("disk-full")?;
    let small = c.w.path("small");
    fs::create_dir(&small)?;
    let mounted = output(
        c.w.cmd("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&small),
    )?;
    if !mounted.status.success() {
        fs::remove_dir(&small)?;
        skip!(
            "cannot mount a tmpfs here: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
    }
    let guard = Unmount(small.clone());
    // Incompressible-ish bytes: zeros would become holes and take no space.
    let mut r = Rng(7);
    let big: Vec<u8> = (0..2 << 20)
        .map(|_| u8::try_from(r.below(256)).expect("byte"))
        .collect();
    let mut t = Tar::default();
    t.file("small-first", "s").file_bytes(b"big", &big);
    write_layout(&c.w.path("layout"), &[Layer::gz(&t.end())], |_| {})?;
    let r = format!("oci:{}:img:v1", c.w.path("layout").display());
    let out = output(
        c.w.bin("unstash")
            .args(["--quiet", &r, "--to", "small/target"]),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "exit {}: {stderr}",
        out.status
    );
    ensure!(
        stderr.lines().count() == 1 && stderr.contains("No space left on device"),
        "{stderr}"
    );
    let left: Vec<_> = fs::read_dir(&small)?.collect();
    ensure!(left.is_empty(), "left on the full file system: {left:?}");
    drop(guard);
    fs::remove_dir(&small)?;
    c.check_canaries()
}

/// Both names of a hardlink group whited out by later layers: the planner writes the data
/// for the link and removes it again, and no directory made for it stays behind
/// (differential seed 1966).
#[test]
fn whited_out_link_group_leaves_no_directories() -> Result<()> {
    both_ways(
        "whited-out-group",
        |_| {
            vec![
                Tar::default()
                    .file("d/e/a", "a")
                    .hardlink("l", "d/e/a")
                    .end(),
                Tar::default().whiteout(".wh.d").end(),
                Tar::default().whiteout(".wh.l").file("z", "z").end(),
            ]
        },
        |c, out| {
            let l = c.contained(out)?;
            l.has("z", "f:z")?;
            let left: Vec<&String> = l.0.keys().filter(|k| !k.starts_with("base")).collect();
            ensure!(left == ["z"], "only z should be left: {left:?}");
            Ok(())
        },
    )
}

/// A directory first made as a parent through an in-root symlink, then declared under its
/// real name: the declared mode wins, whichever name sorts first.
#[test]
fn implicit_directory_through_a_symlink_keeps_its_declared_mode() -> Result<()> {
    both_ways(
        "implicit-via-symlink",
        |_| {
            vec![
                Tar::default()
                    .dir("z")
                    .symlink("a", "z")
                    .file("a/new/x", "x")
                    .dir_mode("z/new", 0o700)
                    .end(),
            ]
        },
        |c, out| {
            c.contained(out)?.has("z/new/x", "f:x")?;
            let mode = fs::metadata(c.target().join("z/new"))?.mode() & 0o7777;
            ensure!(mode == 0o700, "z/new has mode {mode:o}");
            Ok(())
        },
    )
}

// ---------------------------------------------------------------------------------------
// The same images stacked by stackbuild (the path registry pulls take): one stash, or the
// same stash twice (two sources: the planner's rsync-like merge between sources).

#[test]
fn stackbuild_stacks_hostile_images_contained() -> Result<()> {
    type Build = fn(&Case) -> Vec<Vec<u8>>;
    // Without kiwi-ng, --prepare-only prepares the root all the same and exits 1 saying so.
    let kiwi = crate::util::have("kiwi-ng");
    let cases: [(&str, Build); 5] = [
        ("symlink-write", |c| {
            vec![
                Tar::default()
                    .symlink("l", &format!("{}/etc", c.a()))
                    .symlink("r", "../outside/etc")
                    .end(),
                Tar::default()
                    .file("l/pwned", "pwned")
                    .file("r/pwned", "pwned")
                    .end(),
            ]
        }),
        ("hardlink-symlink-chmod", |c| {
            let mut t = Tar::default();
            t.symlink("passwdlink", &format!("{}/etc/passwd", c.a()));
            let mut h = Hdr::new(b"hlink", LNK);
            h.link = b"passwdlink";
            h.mode = 0o777;
            t.header(&h);
            vec![t.end(), Tar::default().file("x", "x").end()]
        }),
        ("dir-over-symlink", |c| {
            vec![
                Tar::default()
                    .symlink("localetc", &format!("{}/etc", c.a()))
                    .end(),
                Tar::default()
                    .dir_mode("localetc", 0o777)
                    .file("localetc/x", "x")
                    .end(),
            ]
        }),
        ("whiteout-via-symlink", |c| {
            vec![
                Tar::default()
                    .symlink("localetc", &format!("{}/etc", c.a()))
                    .symlink("rel", "../outside/etc")
                    .end(),
                Tar::default()
                    .whiteout("localetc/.wh.passwd")
                    .whiteout("rel/.wh..wh..opq")
                    .end(),
            ]
        }),
        ("hardlink-outside", |_| {
            vec![
                Tar::default().file("x", "x").end(),
                Tar::default().hardlink("h", "../outside/etc/passwd").end(),
            ]
        }),
    ];
    for (name, build) in cases {
        for copies in [1, 2] {
            let c = Case::new(&format!("stackbuild-{name}-{copies}"))?;
            let ls: Vec<Layer> = build(&c).iter().map(|t| Layer::gz(t)).collect();
            write_layout(&c.w.path("layout"), &ls, |_| {})?;
            let mut cmd = c.w.bin("stackbuild");
            cmd.args(["--quiet", "--prepare-only", "--store", "layout"]);
            for _ in 0..copies {
                cmd.args(["--stash", "img:v1"]);
            }
            cmd.args(["--target-dir", "target"]);
            let out = output(&mut cmd)?;
            let what = format!("stackbuild case {name}, {copies} cop(ies)");
            c.check_canaries().context(what.clone())?;
            let root = c.w.path("target/build/image-root");
            let prepared = out.status.success()
                || (!kiwi
                    && out.status.code() == Some(1)
                    && String::from_utf8_lossy(&out.stderr).contains("kiwi-ng is not on PATH"));
            if prepared {
                ensure!(root.is_dir(), "{what}: no image root");
            } else {
                ensure!(
                    out.status.code() == Some(1) && !root.exists(),
                    "{what}: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                let build = c.w.path("target/build");
                if build.exists() {
                    let left: Vec<_> = fs::read_dir(&build)?.collect();
                    ensure!(left.is_empty(), "{what}: left in target/build: {left:?}");
                }
            }
            eprintln!("{what}: exit {:?}", out.status.code());
        }
    }
    Ok(())
}
