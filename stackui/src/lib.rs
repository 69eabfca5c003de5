//! The terminal edge the five tools share: progress bars and log levels, both on stderr.
//!
//! `stackcore` reports progress through [`stackcore::progress`] and logs through `tracing`; it
//! knows nothing of terminals. Each binary calls [`init`] once with its `--quiet` and
//! `-v/--verbose`:
//!
//! - stderr a terminal, no `--quiet`: an indicatif bar per long task (bytes, files, rate), and
//!   the step lines printed above it;
//! - stderr not a terminal (a log file, CI, a pipe): no bars and no escape codes, only the
//!   plain step lines [`stackcore::cli::Log`] prints;
//! - `--quiet`: neither (warnings and errors still show);
//! - `-v`: info events from the library, `-vv` debug (cache hits, plan or fallback, blobs
//!   skipped), `-vvv` trace. Without it, only warnings.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use stackcore::progress::Progress;
use tracing_subscriber::filter::LevelFilter;

/// Sets up stderr: the log level from `verbose` (the count of `-v`), and progress
/// bars when stderr is a terminal and `quiet` is false. Call once, first thing in `run`.
pub fn init(quiet: bool, verbose: u8) {
    let terminal = std::io::stderr().is_terminal();
    // A second init (tests calling run twice) keeps the first subscriber: fine.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level(verbose))
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .without_time()
        .try_init();
    if terminal && !quiet {
        let _ = stackcore::progress::install(Box::new(Bars::default()));
    }
}

/// The level `-v` repeated `verbose` times asks for.
pub fn level(verbose: u8) -> LevelFilter {
    match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// One bar at a time: the task begun last.
#[derive(Debug, Default)]
pub struct Bars {
    current: Mutex<Option<ProgressBar>>,
    files: Arc<AtomicU64>,
}

/// With a known total: a bar; without: a spinner. Both show bytes, files and the byte rate.
const WITH_TOTAL: &str = "{spinner} {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} \
                          {files} files {binary_bytes_per_sec} {eta}";
const WITHOUT_TOTAL: &str = "{spinner} {msg} {binary_bytes} {files} files {binary_bytes_per_sec}";

impl Bars {
    /// The style for a bar with or without a total; its `{files}` reads `files`.
    pub fn style(total: bool, files: &Arc<AtomicU64>) -> ProgressStyle {
        let files = Arc::clone(files);
        ProgressStyle::with_template(if total { WITH_TOTAL } else { WITHOUT_TOTAL })
            .expect("the templates are constants, checked by a test")
            .progress_chars("=> ")
            .with_key(
                "files",
                move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", files.load(Ordering::Relaxed));
                },
            )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        // A panic while holding the lock leaves a bar in an unknown state, nothing worse.
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Progress for Bars {
    fn begin(&self, what: &str, total: Option<u64>) {
        let mut cur = self.lock();
        if let Some(old) = cur.take() {
            old.finish_and_clear();
        }
        self.files.store(0, Ordering::Relaxed);
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr())
            .with_style(Self::style(total.is_some(), &self.files))
            .with_message(what.to_owned());
        bar.tick(); // drawn at once: a short task still shows what it is doing
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        *cur = Some(bar);
    }

    fn advance(&self, bytes: u64, files: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
        if let Some(bar) = self.lock().as_ref() {
            bar.inc(bytes);
        }
    }

    fn end(&self) {
        if let Some(bar) = self.lock().take() {
            bar.finish_and_clear();
        }
    }

    fn message(&self, line: &str) {
        match self.lock().as_ref() {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        let files = Arc::new(AtomicU64::new(0));
        for total in [true, false] {
            let _ = Bars::style(total, &files);
        }
    }

    #[test]
    fn verbose_raises_the_level() {
        assert_eq!(level(0), LevelFilter::WARN);
        assert_eq!(level(2), LevelFilter::DEBUG);
        assert_eq!(level(9), LevelFilter::TRACE);
    }

    #[test]
    fn a_hidden_bar_counts_and_ends() {
        let bars = Bars::default();
        bars.begin("x", Some(10));
        bars.advance(4, 2);
        assert_eq!(bars.files.load(Ordering::Relaxed), 2);
        bars.end();
        assert!(bars.lock().is_none());
    }
}
