//! Progress of long work (stashing, writing trees, pulls and pushes), reported to whatever the
//! binary installed: bars on a terminal, nothing otherwise.
//!
//! The library knows nothing of terminals: it calls [`task`] when long work starts and
//! [`Task::advance`] as bytes and files go by. A binary installs one [`Progress`] sink at
//! start ([`install`]); with none installed every call is a no-op.
//!
//! Why a process-wide sink rather than a parameter: progress crosses every layer (stash walks
//! a tree, the registry client streams blobs, the extractor writes files), and threading a
//! handle through each signature would touch every caller for something that never changes
//! what the library computes. One sink per process is what a command-line tool has anyway.

use std::sync::OnceLock;

/// Where progress goes. Implementations must be cheap to call per file.
pub trait Progress: Send + Sync {
    /// Long work starts: `what` says what for people; `total` is the bytes expected, if known.
    fn begin(&self, what: &str, total: Option<u64>);
    /// `bytes` more bytes and `files` more entries are done.
    fn advance(&self, bytes: u64, files: u64);
    /// The work begun last is done (also called when it failed).
    fn end(&self);
    /// Prints one line for people on stderr without tearing a bar in progress.
    fn message(&self, line: &str) {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "{line}"); // stderr gone: nothing to tell
    }
}

static SINK: OnceLock<Box<dyn Progress>> = OnceLock::new();

/// Installs the process's sink. Returns `false` (and drops `sink`) if one is installed already.
pub fn install(sink: Box<dyn Progress>) -> bool {
    SINK.set(sink).is_ok()
}

/// Long work in progress; ends when dropped, on success or failure.
#[derive(Debug)]
#[must_use = "the task ends when this is dropped"]
pub struct Task {
    live: bool,
}

/// Starts a task (see [`Progress::begin`]).
pub fn task(what: impl std::fmt::Display, total: Option<u64>) -> Task {
    match SINK.get() {
        Some(s) => {
            s.begin(&what.to_string(), total);
            Task { live: true }
        }
        None => Task { live: false },
    }
}

impl Task {
    /// Reports `bytes` and `files` more done.
    pub fn advance(&self, bytes: u64, files: u64) {
        if self.live
            && let Some(s) = SINK.get()
        {
            s.advance(bytes, files);
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if self.live
            && let Some(s) = SINK.get()
        {
            s.end();
        }
    }
}

/// Prints `line` through the installed sink; `false` if there is none (print it yourself).
pub fn message(line: &str) -> bool {
    match SINK.get() {
        Some(s) => {
            s.message(line);
            true
        }
        None => false,
    }
}

/// Reports bytes and files to the task in progress, if any: for code deep below the one that
/// started the task (the extractor writing a file).
pub fn advance(bytes: u64, files: u64) {
    if let Some(s) = SINK.get() {
        s.advance(bytes, files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Count(AtomicU64, AtomicU64);

    impl Progress for Count {
        fn begin(&self, _: &str, _: Option<u64>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn advance(&self, bytes: u64, _: u64) {
            self.1.fetch_add(bytes, Ordering::Relaxed);
        }
        fn end(&self) {}
    }

    #[test]
    fn tasks_reach_the_installed_sink() {
        // The sink is process-wide and other unit tests stash and extract in parallel:
        // count only what this test's thread reports.
        static C: Count = Count(AtomicU64::new(0), AtomicU64::new(0));
        static ME: OnceLock<std::thread::ThreadId> = OnceLock::new();
        struct Fwd<F: Fn() -> bool + Send + Sync>(F);
        impl<F: Fn() -> bool + Send + Sync> Progress for Fwd<F> {
            fn begin(&self, w: &str, t: Option<u64>) {
                if (self.0)() {
                    C.begin(w, t);
                }
            }
            fn advance(&self, b: u64, f: u64) {
                if (self.0)() {
                    C.advance(b, f);
                }
            }
            fn end(&self) {}
        }
        let mine = || ME.get() == Some(&std::thread::current().id());
        ME.set(std::thread::current().id()).expect("set once");
        assert!(install(Box::new(Fwd(mine))));
        assert!(!install(Box::new(Fwd(mine))), "one sink per process");
        let t = task("x", Some(10));
        t.advance(4, 1);
        advance(6, 1);
        drop(t);
        assert_eq!(C.0.load(Ordering::Relaxed), 1);
        assert_eq!(C.1.load(Ordering::Relaxed), 10);
    }
}
