//! The harness: a fresh directory per test, the real binaries, full-metadata tree dumps.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// The directory holding the built binaries: `$STACK_BIN_DIR`, else the test executable's
/// directory minus `deps/` (cargo's layout).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STACK_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Whether we run as root (tests named `privileged_*` need it).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The owner a test tree gets for a spec's `uid:gid`: as asked when we run as root, else
/// the running user's own (an ordinary user cannot give files away).
pub fn owner_as_run(uid: u32, gid: u32) -> (u32, u32) {
    if is_root() {
        (uid, gid)
    } else {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    }
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Skips the rest of a test: says why on stderr and records the skip (see [`record_skip`]),
/// so `cargo xtask test` counts it as skipped, not passed.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        $crate::util::record_skip(true, &format!($($arg)*));
        return Ok(());
    }};
}

/// The environment variable naming the file where skips are recorded, one line each
/// (`cargo xtask test` sets it and counts them in its closing summary).
pub const SKIP_LOG: &str = "STACK_SKIP_LOG";

/// Records that the running test skipped all of itself (`whole`) or a part of it, with the
/// reason: a line on stderr (written directly, so `cargo test` does not capture it), and a
/// line `skip|part TEST REASON` appended to the file `$STACK_SKIP_LOG` names, if set.
pub fn record_skip(whole: bool, why: &str) {
    // libtest runs each test on a thread named after it.
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed-test")
        .to_owned();
    let what = if whole { "skip" } else { "part" };
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED{}: {name}: {why}",
        if whole { "" } else { " part" }
    );
    if let Some(log) = std::env::var_os(SKIP_LOG) {
        let line = format!("{what} {name} {}\n", why.replace('\n', " "));
        let res = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = res {
            panic!("recording a skip in {}: {e}", Path::new(&log).display());
        }
    }
}

/// A fresh directory for one test, removed afterwards (kept with `KEEP_TEST_DIRS=1`).
#[derive(Debug)]
pub struct Workdir {
    pub root: PathBuf,
}

impl Workdir {
    pub fn new(name: &str) -> Result<Workdir> {
        let base =
            std::env::var_os("STACK_TEST_TMP").map_or_else(std::env::temp_dir, PathBuf::from);
        let root = base.join(format!("stackbuild-test-{name}-{}", std::process::id()));
        if root.exists() {
            force_remove(&root)?;
        }
        fs::create_dir_all(&root)?;
        Ok(Workdir { root })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A command for one of our binaries, run in the work directory.
    pub fn bin(&self, name: &str) -> Command {
        let path = bin_dir().join(name);
        assert!(
            path.exists(),
            "{} not built: run `cargo xtask test` (or cargo build --workspace)",
            path.display()
        );
        let mut c = Command::new(path);
        c.current_dir(&self.root);
        c.env_remove("KIWI_STASH_HOME");
        c.env("STACKBUILD_LEGACY_STASH_HOME", self.root.join("no-legacy"));
        c
    }

    /// Any command, run in the work directory.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.root);
        c
    }

    /// Builds a tree from a small text spec (see [`build_tree`]).
    pub fn tree(&self, rel: &str, spec: &str) -> Result<PathBuf> {
        let dir = self.path(rel);
        build_tree(&dir, spec)?;
        Ok(dir)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_none() && !std::thread::panicking() {
            let _ = force_remove(&self.root);
        }
    }
}

/// Removes a tree even where modes forbid it.
pub fn force_remove(p: &Path) -> Result<()> {
    let _ = Command::new("chmod").args(["-R", "u+rwx"]).arg(p).status();
    if p.exists() {
        fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// Runs `c`, fails with its stderr unless it exits 0, returns stdout.
pub fn run(c: &mut Command) -> Result<String> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a `stackbuild --prepare-only` command and returns its stdout. With kiwi-ng on PATH
/// it must exit 0; without, it prepares the root all the same but exits 1 and says so
/// (README: stackbuild), so that is what is checked there instead.
pub fn run_prepare_only(c: &mut Command) -> Result<String> {
    if have("kiwi-ng") {
        return run(c);
    }
    let out = output(c)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(1) || !stderr.contains("kiwi-ng is not on PATH") {
        bail!(
            "{c:?} without kiwi-ng: want exit 1 and a note, got {}:\nstderr: {stderr}",
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `c` and returns its whole output, whatever the exit status.
pub fn output(c: &mut Command) -> Result<Output> {
    c.output().with_context(|| format!("running {c:?}"))
}

/// Runs `c` with `input` on stdin. The input is written on its own thread while this one
/// drains stdout and stderr, so a child that writes before it has read everything cannot
/// deadlock against us. A child that exits without reading all of it is not an error here
/// (the caller checks its status and output).
pub fn pipe(c: &mut Command, input: &[u8]) -> Result<Output> {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {c:?}"))?;
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || match stdin.write_all(&input) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    });
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the stdin writer panicked"))?
        .context("writing the child's stdin")?;
    Ok(out)
}

/// Builds a tree from a spec, one entry per line:
///
/// ```text
/// d  PATH MODE UID:GID                     directory
/// f  PATH MODE UID:GID CONTENT             file ("\n" escapes allowed; "@N" = N bytes of a pattern)
/// l  PATH TARGET                           symlink (owned by 0:0)
/// h  PATH EXISTING                         hardlink
/// c  PATH MODE MAJOR:MINOR                 char device
/// b  PATH MODE MAJOR:MINOR                 block device
/// p  PATH MODE                             fifo
/// x  PATH NAME VALUE                       xattr (VALUE "0x.." for hex)
/// t  PATH SECONDS.NANOS                    mtime (after everything else)
/// ```
///
/// Run by an ordinary user, every `UID:GID` becomes the running user's own (see
/// [`owner_as_run`]): tests where owners are the point need root and are named
/// `privileged_*`; the others compare trees with each other, which holds either way.
pub fn build_tree(dir: &Path, spec: &str) -> Result<()> {
    fs::create_dir_all(dir)?;
    let mut times = Vec::new();
    for line in spec
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.splitn(5, ' ').filter(|s| !s.is_empty()).collect();
        let p = if parts[1] == "." {
            dir.to_path_buf()
        } else {
            dir.join(parts[1])
        };
        let owner = |s: &str| -> Result<(u32, u32)> {
            let (u, g) = s.split_once(':').context("UID:GID")?;
            Ok(owner_as_run(u.parse()?, g.parse()?))
        };
        let mode = |s: &str| u32::from_str_radix(s, 8).context("octal mode");
        match parts[0] {
            "d" => {
                fs::create_dir_all(&p)?;
                let (u, g) = owner(parts[3])?;
                std::os::unix::fs::lchown(&p, Some(u), Some(g))?;
                fs::set_permissions(
                    &p,
                    std::os::unix::fs::PermissionsExt::from_mode(mode(parts[2])?),
                )?;
            }
            "f" => {
                let content = parts.get(4).copied().unwrap_or("");
                let bytes: Vec<u8> = if let Some(n) = content.strip_prefix('@') {
                    let n: usize = n.parse()?;
                    (0..n).map(|i| (i * 7 % 251) as u8).collect()
                } else {
                    content.replace("\\n", "\n").into_bytes()
                };
                fs::write(&p, bytes)?;
                let (u, g) = owner(parts[3])?;
                std::os::unix::fs::lchown(&p, Some(u), Some(g))?;
                fs::set_permissions(
                    &p,
                    std::os::unix::fs::PermissionsExt::from_mode(mode(parts[2])?),
                )?;
            }
            "l" => std::os::unix::fs::symlink(parts[2], &p)?,
            "h" => fs::hard_link(dir.join(parts[2]), &p)?,
            "c" | "b" | "p" => {
                let ft = match parts[0] {
                    "c" => rustix::fs::FileType::CharacterDevice,
                    "b" => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                let dev = if parts[0] == "p" {
                    0
                } else {
                    let (ma, mi) = parts[3].split_once(':').context("MAJOR:MINOR")?;
                    rustix::fs::makedev(ma.parse()?, mi.parse()?)
                };
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &p,
                    ft,
                    rustix::fs::Mode::from_raw_mode(mode(parts[2])?),
                    dev,
                )?;
                fs::set_permissions(
                    &p,
                    std::os::unix::fs::PermissionsExt::from_mode(mode(parts[2])?),
                )?;
            }
            "x" => {
                let v = parts[3];
                let value = if let Some(hex) = v.strip_prefix("0x") {
                    (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                        .collect::<Result<Vec<u8>, _>>()?
                } else {
                    v.as_bytes().to_vec()
                };
                rustix::fs::lsetxattr(&p, parts[2], &value, rustix::fs::XattrFlags::empty())
                    .with_context(|| format!("setxattr {} {}", p.display(), parts[2]))?;
            }
            "t" => {
                let (s, n) = parts[2].split_once('.').unwrap_or((parts[2], "0"));
                times.push((p, s.parse::<i64>()?, n.parse::<i64>()?));
            }
            other => bail!("unknown spec line kind {other:?}: {line}"),
        }
    }
    // Deepest first, so setting a file's time does not disturb its directory's afterwards.
    times.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (p, s, n) in times {
        let t = rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: n as _,
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

/// Options for [`dump`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpOpts {
    /// Compare mtimes to the second only (umoci 0.4.7 may drop nanoseconds).
    pub mtime_seconds: bool,
    /// Leave out directory mtimes.
    pub no_dir_mtime: bool,
    /// Leave out the root directory's own line.
    pub no_root: bool,
}

/// One line per entry, every attribute that matters: type, mode, owner, size, mtime in
/// nanoseconds, xattrs (with values), symlink target, device numbers, content hash, and the
/// hardlink group (the first path of the group in sorted order).
pub fn dump(dir: &Path) -> Result<String> {
    dump_with(dir, DumpOpts::default())
}

pub fn dump_with(dir: &Path, opts: DumpOpts) -> Result<String> {
    let mut paths = Vec::new();
    collect(dir, Path::new(""), &mut paths)?;
    paths.sort();
    let mut groups: HashMap<(u64, u64), String> = HashMap::new();
    let mut out = String::new();
    for rel in paths {
        if opts.no_root && rel.as_os_str().is_empty() {
            continue;
        }
        let full = dir.join(&rel);
        let m = fs::symlink_metadata(&full)?;
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else if ft.is_socket() {
            's'
        } else {
            'f'
        };
        let name = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned()
        };
        let mtime = if kind == 'd' && opts.no_dir_mtime {
            "-".to_string()
        } else if opts.mtime_seconds {
            m.mtime().to_string()
        } else {
            format!("{}.{:09}", m.mtime(), m.mtime_nsec())
        };
        let mut line = format!(
            "{kind} {name} {:o} {}:{} {mtime}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        );
        match kind {
            'f' => {
                let mut h = sha2::Sha256::new();
                let mut f = fs::File::open(&full)?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    sha2::Digest::update(&mut h, &buf[..n]);
                }
                let sum = sha2::Digest::finalize(h);
                line += &format!(" size={} sha256={:x}", m.len(), sum);
                if m.nlink() > 1 {
                    let g = groups
                        .entry((m.dev(), m.ino()))
                        .or_insert_with(|| name.clone());
                    line += &format!(" link-group={g}");
                }
            }
            'l' => {
                line += &format!(
                    " -> {}",
                    String::from_utf8_lossy(fs::read_link(&full)?.as_os_str().as_bytes())
                );
            }
            'c' | 'b' => {
                line += &format!(
                    " dev={},{}",
                    rustix::fs::major(m.rdev()),
                    rustix::fs::minor(m.rdev())
                );
            }
            _ => {}
        }
        for (k, v) in xattrs(&full)? {
            line += &format!(
                " xattr:{}={}",
                String::from_utf8_lossy(&k),
                v.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
        }
        out += &line;
        out.push('\n');
    }
    Ok(out)
}

use sha2::Digest as _;

fn collect(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    out.push(rel.to_path_buf());
    let full = dir.join(rel);
    if fs::symlink_metadata(&full)?.is_dir() {
        for e in fs::read_dir(&full)? {
            let e = e?;
            collect(dir, &rel.join(e.file_name()), out)?;
        }
    }
    Ok(())
}

fn xattrs(p: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(p, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 65536];
        let k = rustix::fs::lgetxattr(p, OsStr::from_bytes(name), &mut v[..])?;
        v.truncate(k);
        out.push((name.to_vec(), v));
    }
    out.sort();
    Ok(out)
}

/// Parses one line of JSON.
pub fn json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text.trim()).with_context(|| format!("not JSON: {text}"))
}

/// Compares two dumps line by line and fails with the differing lines.
pub fn assert_same(want: &str, got: &str) -> Result<()> {
    if want == got {
        return Ok(());
    }
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let mut msg = String::new();
    for l in &w {
        if !g.contains(l) {
            msg += &format!("- {l}\n");
        }
    }
    for l in &g {
        if !w.contains(l) {
            msg += &format!("+ {l}\n");
        }
    }
    bail!("trees differ (- expected, + got):\n{msg}")
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// A test fixture file.
pub fn fixture(rel: &str) -> PathBuf {
    workspace().join("tests/fixtures").join(rel)
}

/// The Debian 12 minbase root, made once and cached outside the clone
/// (`scripts/debian-minbase.sh`).
pub fn debian_minbase() -> Result<PathBuf> {
    let out =
        run(Command::new(workspace().join("scripts/debian-minbase.sh")).stderr(Stdio::inherit()))?;
    Ok(PathBuf::from(out.trim()))
}

/// The Debian mirror this machine's apt uses (`scripts/debian-mirror.sh`).
pub fn debian_mirror() -> Result<String> {
    Ok(run(&mut Command::new(
        workspace().join("scripts/debian-mirror.sh"),
    ))?
    .trim()
    .to_owned())
}

/// Copies a tree with `cp -a` (every attribute kept).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    run(Command::new("cp").arg("-a").arg(from).arg(to))?;
    Ok(())
}
