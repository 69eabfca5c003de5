//! `cargo xtask e2e`: the flagship scenario, end to end, with real components.
//!
//! A Debian 12 minbase root is pushed as a container image (no KIWI description) into
//! Debian's `docker-registry` on 127.0.0.1, then `stackbuild --from-registry` pulls it and
//! builds the VM description in `tests/fixtures/vm/` on top (profile `bios`). The raw disk
//! boots under qemu (TCG) behind a copy-on-write overlay; we log in as root on the serial
//! console, check `/etc/os-release`, and power off. Then the same with `--merge`: the VM
//! description overlaid by kiwimerge on a stash that carries its own description.
//!
//! Every step has a time limit; qemu and the registry are always stopped at the end. Each
//! step's time is printed; the serial logs are kept under `target/e2e/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, root, sh};

/// e2e options.
#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    /// Only boot the `*.raw` disk in this kiwi target directory (log in, check, power off).
    #[arg(long, value_name = "DIR")]
    pub boot_only: Option<PathBuf>,
    /// Only the plain scenario (skip the --merge one).
    #[arg(long, conflicts_with = "merge_only")]
    pub no_merge: bool,
    /// Only the --merge scenario.
    #[arg(long)]
    pub merge_only: bool,
    /// Build the images but do not boot them.
    #[arg(long)]
    pub no_boot: bool,
}

/// A child process killed (by its PID) when dropped.
struct Guard(Child, &'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill(); // it may have exited already
        let _ = self.0.wait();
        eprintln!("e2e: stopped {}", self.1);
    }
}

fn bin(name: &str) -> PathBuf {
    root().join("target/debug").join(name)
}

/// Runs a command with a time limit; returns stdout. stderr streams through.
fn run_limited(c: &mut Command, limit: Duration, what: &str) -> Result<String> {
    eprintln!("e2e: $ {}", crate::show(c));
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let out = reader.join().unwrap_or_default();
            if !status.success() {
                bail!("{what} failed ({status})");
            }
            return Ok(out);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: no result within {}s: killed", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts Debian's docker-registry on 127.0.0.1 with storage under `dir`.
fn start_registry(dir: &Path) -> Result<(Guard, u16)> {
    let port = free_port()?;
    std::fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )?;
    let log = std::fs::File::create(dir.join("registry.log"))?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting docker-registry (apt-get install docker-registry)")?;
    let guard = Guard(child, "docker-registry");
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut head = [0u8; 12];
            if s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") {
                return Ok((guard, port));
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("docker-registry did not answer on 127.0.0.1:{port} within 30s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Debian mirror of this machine's apt configuration (`scripts/debian-mirror.sh`).
fn debian_mirror() -> Result<String> {
    let out = run_limited(
        &mut Command::new(root().join("scripts/debian-mirror.sh")),
        Duration::from_secs(10),
        "debian-mirror.sh",
    )?;
    Ok(out.trim().to_owned())
}

/// Copies the VM description with the mirror filled in.
fn render_vm(dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    let template = std::fs::read_to_string(root().join("tests/fixtures/vm/config.xml"))?;
    std::fs::write(
        dest.join("config.xml"),
        template.replace("@DEBIAN_MIRROR@", &debian_mirror()?),
    )?;
    Ok(())
}

struct Timer(Vec<(String, f64)>);

impl Timer {
    fn time<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let r = f();
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "e2e: [{name}] {secs:.1}s{}",
            if r.is_err() { " (failed)" } else { "" }
        );
        self.0.push((name.to_owned(), secs));
        r
    }
}

/// Runs the scenario.
pub fn run(args: &E2eArgs) -> Result<()> {
    if let Some(dir) = &args.boot_only {
        return boot(dir, &dir.join("serial.log"));
    }
    sh(cargo().args(["build", "--workspace", "--bins", "--all-features"]))?;
    let work = root().join("target/e2e");
    if work.exists() {
        // Leftovers of an earlier run: kiwi's build roots can hold bind mounts only when a
        // run was killed mid-way; remove what is ours.
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let mut t = Timer(Vec::new());
    let minbase = t.time("debian minbase (cached)", || {
        let out = run_limited(
            &mut Command::new(root().join("scripts/debian-minbase.sh")),
            Duration::from_mins(15),
            "debian-minbase.sh",
        )?;
        Ok(PathBuf::from(out.trim()))
    })?;
    let (_registry, port) = t.time("start registry", || start_registry(&work.join("registry")))?;
    let registry = format!("127.0.0.1:{port}/e2e");
    let store = work.join("store");

    // A container root: no KIWI description; pushed, then dropped from the local store so
    // that the build can only use what it pulls.
    t.time("stash + push the container root", || {
        run_limited(
            Command::new(bin("stash"))
                .arg("--store")
                .arg(work.join("push-store"))
                .arg("--root")
                .arg(&minbase)
                .args([
                    "--container-name",
                    "debian-min",
                    "--tls-verify=false",
                    "--push",
                ])
                .arg(format!("docker://{registry}/debian-min:latest")),
            Duration::from_mins(10),
            "stash --push",
        )
    })?;
    let vm = work.join("vm");
    render_vm(&vm)?;
    let target = work.join("vm-build");
    if !args.merge_only {
        plain(args, &mut t, &store, &registry, &vm, &target, &work)?;
    }
    if !args.no_merge {
        merge(args, &mut t, &minbase, &registry, &vm, &work)?;
    }
    eprintln!("\ne2e: step times");
    for (name, secs) in &t.0 {
        eprintln!("  {secs:>7.1}s  {name}");
    }
    eprintln!("e2e: passed; serial logs in {}", work.display());
    Ok(())
}

/// The container from the registry, with the VM description on top.
fn plain(
    args: &E2eArgs,
    t: &mut Timer,
    store: &Path,
    registry: &str,
    vm: &Path,
    target: &Path,
    work: &Path,
) -> Result<()> {
    let report = t.time(
        "stackbuild --from-registry --description vm --profile bios",
        || {
            run_limited(
                Command::new(bin("stackbuild"))
                    .arg("--store")
                    .arg(store)
                    .args([
                        "--stash",
                        "debian-min",
                        "--from-registry",
                        registry,
                        "--tls-verify=false",
                        "--description",
                    ])
                    .arg(vm)
                    .arg("--target-dir")
                    .arg(target)
                    .args(["--profile", "bios", "--json"]),
                Duration::from_mins(40),
                "stackbuild (VM)",
            )
        },
    )?;
    print_stackbuild_steps(&report);
    if !args.no_boot {
        t.time("boot to a root shell and power off", || {
            boot(target, &work.join("serial-vm.log"))
        })?;
    }
    Ok(())
}

/// A stash with a description of its own; --merge overlays the VM description on it.
fn merge(
    args: &E2eArgs,
    t: &mut Timer,
    minbase: &Path,
    registry: &str,
    vm: &Path,
    work: &Path,
) -> Result<()> {
    let store = work.join("store");
    {
        // A Debian root that carries its own description (type tbz): --merge overlays the VM
        // description on it, so the result keeps the stash's settings and gains the VM type.
        let with_desc = work.join("debian-with-description");
        run_limited(
            Command::new("cp").arg("-a").arg(minbase).arg(&with_desc),
            Duration::from_mins(5),
            "cp -a",
        )?;
        std::fs::create_dir_all(with_desc.join("image"))?;
        std::fs::copy(
            root().join("tests/fixtures/stackbuild/debian-tbz.xml"),
            with_desc.join("image/config.xml"),
        )?;
        t.time("stash + push the described root", || {
            run_limited(
                Command::new(bin("stash"))
                    .arg("--store")
                    .arg(work.join("push-store"))
                    .arg("--root")
                    .arg(&with_desc)
                    .args(["--tls-verify=false", "--push"])
                    .arg(format!("docker://{registry}/debian-min-described:latest"))
                    .args(["--container-name", "debian-min-described"]),
                Duration::from_mins(10),
                "stash --push (described)",
            )
        })?;
        let target_m = work.join("vm-merge-build");
        let report = t.time(
            "stackbuild --merge --description vm --profile bios --type oem",
            || {
                run_limited(
                    Command::new(bin("stackbuild"))
                        .arg("--store")
                        .arg(&store)
                        .args([
                            "--stash",
                            "debian-min-described",
                            "--from-registry",
                            registry,
                            "--tls-verify=false",
                        ])
                        .args(["--merge", "--description"])
                        .arg(vm)
                        .arg("--target-dir")
                        .arg(&target_m)
                        .args(["--profile", "bios", "--type", "oem", "--json"]),
                    Duration::from_mins(40),
                    "stackbuild --merge (VM)",
                )
            },
        )?;
        print_stackbuild_steps(&report);
        let merged = std::fs::read_to_string(target_m.join("build/description/config.xml"))?;
        for want in [
            r#"image="oem""#,
            r#"image="tbz""#,
            "linux-image-amd64",
            r#"<package name="base-files"/>"#,
        ] {
            if !merged.contains(want) {
                bail!("the merged description lacks {want}:\n{merged}");
            }
        }
        if !args.no_boot {
            t.time("boot the --merge image", || {
                boot(&target_m, &work.join("serial-vm-merge.log"))
            })?;
        }
    }

    Ok(())
}

fn print_stackbuild_steps(report: &str) {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(report) {
        for s in v["steps"].as_array().into_iter().flatten() {
            eprintln!(
                "e2e:   stackbuild {:<8} {:>7.1}s",
                s["name"].as_str().unwrap_or("?"),
                s["seconds"].as_f64().unwrap_or(0.0)
            );
        }
    }
}

/// Boots `target/*.raw` behind a qcow2 overlay, logs in on the serial console, checks
/// `/etc/os-release`, powers off. The serial output goes to `log`.
fn boot(target: &Path, log: &Path) -> Result<()> {
    let raw = std::fs::read_dir(target)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "raw"))
        .with_context(|| format!("no *.raw disk in {}", target.display()))?;
    let overlay = target.join("boot-overlay.qcow2");
    let _ = std::fs::remove_file(&overlay);
    sh(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&raw)
        .arg(&overlay))?;
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine", "pc", "-m", "1024", "-smp", "2", "-display", "none", "-monitor", "none",
            "-serial", "stdio",
        ])
        .args(["-no-reboot", "-nic", "none", "-drive"])
        .arg(format!("file={},format=qcow2,if=virtio", overlay.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let guard = Guard(child, "qemu");
    let seen = Arc::new(Mutex::new(String::new()));
    let mut file = std::fs::File::create(log)?;
    let sink = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = file.write_all(&buf[..n]);
            sink.lock()
                .expect("serial buffer")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let start = Instant::now();
    let mut from = 0usize;
    let mut expect = |pattern: &str, limit: Duration| -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let s = seen.lock().expect("serial buffer");
                if let Some(i) = s[from..].find(pattern) {
                    from += i + pattern.len();
                    eprintln!(
                        "e2e:   serial: {pattern:?} after {:.0}s",
                        start.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "serial console: no {pattern:?} within {}s (log: {})",
                    limit.as_secs(),
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    expect("login:", Duration::from_mins(10))?;
    stdin.write_all(b"root\n")?;
    expect("Password:", Duration::from_mins(1))?;
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"linux\n")?;
    expect("#", Duration::from_mins(2))?;
    // A shell proves itself by computing: the echo of the command line shows `$((6*7))`,
    // only the shell's answer shows 42.
    stdin.write_all(b"echo shell-$((6*7))\n")?;
    expect("shell-42", Duration::from_mins(1))?;
    stdin.write_all(b"cat /etc/os-release\n")?;
    expect(
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"",
        Duration::from_mins(1),
    )?;
    stdin.write_all(b"poweroff\n")?;
    let mut guard = guard;
    let deadline = Instant::now() + Duration::from_mins(3);
    loop {
        if guard.0.try_wait()?.is_some() {
            eprintln!(
                "e2e:   powered off after {:.0}s",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the VM did not power off within 180s (it is killed now)");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
