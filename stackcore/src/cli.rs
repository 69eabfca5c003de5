//! The edge every binary shares: parse flags, run, print the error chain, map the exit code.
//!
//! Exit codes (README.md "Exit status"): 0 done, 1 failed, 2 bad usage or unusable input.
//! A broken pipe anywhere in the chain is success: `stash --list | head -1` must not complain.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::Error;

/// An error that only carries an exit code: the tool has already said what it needed to.
#[derive(Debug, thiserror::Error)]
#[error("exit {0}")]
pub struct Exit(pub u8);

/// Parses `C` from the command line, runs `run`, and turns its result into an exit code.
pub fn run_main<C: Parser>(run: fn(C) -> anyhow::Result<()>) -> ExitCode {
    let cli = C::parse(); // clap prints usage errors itself and exits 2
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(report(&e)),
    }
}

/// Prints `e` (one line: what failed and where, then the causes) and returns its exit code.
pub fn report(e: &anyhow::Error) -> u8 {
    if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
        return *code;
    }
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::BrokenPipe
        {
            return 0;
        }
        if let Some(Error::Io { cause: source, .. }) = cause.downcast_ref::<Error>()
            && source.kind() == io::ErrorKind::BrokenPipe
        {
            return 0;
        }
    }
    let usage = e
        .chain()
        .any(|c| matches!(c.downcast_ref::<Error>(), Some(Error::Usage(_))));
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "error: {e:#}");
    if usage { 2 } else { 1 }
}

/// Resolves a ref argument: `-` reads one from stdin, either a bare line or the JSON object
/// another tool printed with `--json` (its `"ref"` field).
pub fn ref_arg(arg: &str) -> crate::Result<String> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    let mut text = String::new();
    io::stdin().lock().read_to_string_lossy(&mut text)?;
    parse_ref_text(&text)
}

/// The ref in `text`: a JSON object's `"ref"` field, or the first non-empty line.
pub fn parse_ref_text(text: &str) -> crate::Result<String> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|e| Error::Usage(format!("stdin: not a JSON object with a \"ref\": {e}")))?;
        return v
            .get("ref")
            .and_then(|r| r.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Usage("stdin: JSON object has no \"ref\" field".into()));
    }
    trimmed
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Error::Usage("stdin: expected an image ref, got nothing".into()))
}

trait ReadLossy {
    fn read_to_string_lossy(&mut self, out: &mut String) -> crate::Result<()>;
}

impl<R: BufRead> ReadLossy for R {
    fn read_to_string_lossy(&mut self, out: &mut String) -> crate::Result<()> {
        let mut buf = Vec::new();
        self.read_to_end(&mut buf)
            .map_err(|e| Error::io("<stdin>", e))?;
        out.push_str(&String::from_utf8_lossy(&buf));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_from_line_or_json() -> crate::Result<()> {
        assert_eq!(parse_ref_text("\n oci:/s:a:b \n")?, "oci:/s:a:b");
        assert_eq!(
            parse_ref_text(r#"{"schema":1,"ref":"oci:/s:a:b"}"#)?,
            "oci:/s:a:b"
        );
        assert!(parse_ref_text("").is_err());
        assert!(parse_ref_text("{\"x\":1}").is_err());
        Ok(())
    }

    #[test]
    fn common_args_parse() {
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            common: CommonArgs,
        }
        // (arguments, store, json, quiet, verbose)
        type Case<'a> = (&'a [&'a str], Option<&'a str>, bool, bool, u8);
        let cases: &[Case<'_>] = &[
            (&[], None, false, false, 0),
            (&["--store", "/s", "--json"], Some("/s"), true, false, 0),
            (&["-q", "-vv"], None, false, true, 2),
            (
                &["--quiet", "--verbose", "-v", "--store=/t"],
                Some("/t"),
                false,
                true,
                2,
            ),
        ];
        for (args, store, json, quiet, verbose) in cases {
            let cli = Cli::try_parse_from(std::iter::once("tool").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let c = cli.common;
            assert_eq!(
                c.store.as_deref(),
                store.map(std::path::Path::new),
                "{args:?}"
            );
            assert_eq!(
                (c.json, c.quiet, c.verbose),
                (*json, *quiet, *verbose),
                "{args:?}"
            );
            assert_eq!(c.log("tool").quiet, *quiet);
            if let Some(s) = store {
                assert_eq!(c.store_dir(), std::path::Path::new(s));
            }
        }
        assert!(
            Cli::try_parse_from(["tool", "--store"]).is_err(),
            "--store needs a DIR"
        );
    }
}

/// The store a tool uses: `--store`, else the default place (see
/// [`crate::oci::default_store_path`]).
pub fn store_path(flag: Option<&std::path::Path>) -> std::path::PathBuf {
    flag.map_or_else(crate::oci::default_store_path, std::path::Path::to_path_buf)
}

/// The flags every tool with a store and a report shares: `--store`, `--json`, `--quiet`,
/// `--verbose`. Each binary flattens it into its `Cli`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// The store (an OCI image layout) of stashes and pulled images; default:
    /// `$KIWI_STASH_HOME`, else `/var/lib/kiwi-stash` for root, else `$XDG_DATA_HOME/kiwi-stash`.
    #[arg(long, value_name = "DIR")]
    pub store: Option<std::path::PathBuf>,
    /// Print a JSON report on stdout (one line).
    #[arg(long)]
    pub json: bool,
    /// No progress bars or step lines on stderr (warnings and errors still show).
    #[arg(long, short)]
    pub quiet: bool,
    /// More detail on stderr: -v info, -vv debug (caches, plans, skipped blobs), -vvv trace.
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl CommonArgs {
    /// The store: `--store`, else the default place.
    pub fn store_dir(&self) -> std::path::PathBuf {
        store_path(self.store.as_deref())
    }

    /// Step lines and warnings for `tool`, silenced as `--quiet` says.
    pub fn log(&self, tool: &'static str) -> Log {
        Log {
            quiet: self.quiet,
            tool,
        }
    }
}

/// Messages for people, on stderr: one plain line per step, silenced by `--quiet`.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    /// `--quiet`.
    pub quiet: bool,
    /// The tool's name, prefixed to each line.
    pub tool: &'static str,
}

impl Log {
    /// One step line.
    pub fn step(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            say(&format!("{}: {msg}", self.tool));
        }
    }

    /// A warning; shown even with `--quiet`.
    pub fn warn(&self, msg: impl std::fmt::Display) {
        say(&format!("{}: warning: {msg}", self.tool));
    }
}

/// One line on stderr, through the progress sink when one is installed (so a bar is not torn).
fn say(line: &str) {
    if !crate::progress::message(line) {
        // stderr closed: there is no one left to tell
        let _ = writeln!(io::stderr().lock(), "{line}");
    }
}

/// Prints `value` as one line of JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Writes `text` to stdout as it is; a closed stdout is an error `run_main` treats as success.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `--threads N`: a count from 0 (all cores) up to [`crate::layer::compress::MAX_THREADS`].
pub fn threads_arg(s: &str) -> Result<usize, String> {
    let max = crate::layer::compress::MAX_THREADS;
    match s.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "expected a thread count from 0 (all cores) to {max}"
        )),
    }
}

/// Prints one line on stdout.
pub fn print_line(line: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
