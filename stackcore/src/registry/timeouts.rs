//! How long a registry may keep us waiting: a connect timeout, an idle timeout (no byte in
//! either direction for that long) and a minimum transfer rate over a window, as curl's
//! `--speed-limit`/`--speed-time` do. The defaults let a multi-GB layer cross a slow link
//! (1 KiB/s is about 86 MB a day) and stop a peer that has gone quiet within minutes.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The limits, from flags, else environment variables, else the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting (TCP and TLS handshake); `None` waits as long as the system does.
    pub connect: Option<Duration>,
    /// No byte read or written for this long ends the attempt; also the time allowed for
    /// the whole response head to arrive.
    pub idle: Option<Duration>,
    /// Fewer bytes per second than this, averaged over `speed_time`, ends the transfer;
    /// 0 never does.
    pub speed_limit: u64,
    /// The window `speed_limit` is measured over.
    pub speed_time: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Some(Duration::from_secs(30)),
            idle: Some(Duration::from_mins(2)),
            speed_limit: 1024,
            speed_time: Duration::from_mins(2),
        }
    }
}

/// The environment variables, in the order of [`Timeouts::from_flags_and_env`]'s flags.
pub const ENV: [&str; 4] = [
    "STACKBUILD_CONNECT_TIMEOUT",
    "STACKBUILD_IDLE_TIMEOUT",
    "STACKBUILD_SPEED_LIMIT",
    "STACKBUILD_SPEED_TIME",
];

const FLAGS: [&str; 4] = [
    "--connect-timeout",
    "--idle-timeout",
    "--speed-limit",
    "--speed-time",
];

impl Timeouts {
    /// `flags` are `--connect-timeout`, `--idle-timeout` (seconds), `--speed-limit` (bytes
    /// per second), `--speed-time` (seconds); each one not given is read from its `ENV`
    /// variable through `env`, else defaults. A 0 timeout means none.
    pub fn from_flags_and_env(
        flags: [Option<u64>; 4],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Timeouts> {
        let mut v = [0u64; 4];
        let d = Timeouts::default();
        let defaults = [
            d.connect.map_or(0, |x| x.as_secs()),
            d.idle.map_or(0, |x| x.as_secs()),
            d.speed_limit,
            d.speed_time.as_secs(),
        ];
        for i in 0..4 {
            v[i] = match flags[i] {
                Some(x) => x,
                None => match env(ENV[i]).filter(|s| !s.trim().is_empty()) {
                    Some(s) => s.trim().parse().map_err(|_| {
                        Error::Usage(format!(
                            "${}={s:?}: expected a whole number (like {})",
                            ENV[i], FLAGS[i]
                        ))
                    })?,
                    None => defaults[i],
                },
            };
        }
        let secs = |n: u64| (n > 0).then(|| Duration::from_secs(n));
        if v[2] > 0 && v[3] == 0 {
            return Err(Error::Usage(
                "--speed-time 0: a --speed-limit needs a window of at least 1 second".into(),
            ));
        }
        Ok(Timeouts {
            connect: secs(v[0]),
            idle: secs(v[1]),
            speed_limit: v[2],
            speed_time: Duration::from_secs(v[3]),
        })
    }

    /// `inner` with the transfer-rate limit enforced on it.
    #[cfg_attr(not(feature = "registry"), allow(dead_code))] // the HTTP client's
    pub(crate) fn paced<R>(&self, inner: R) -> Paced<R> {
        Paced {
            inner,
            limit: self.speed_limit,
            window: self.speed_time,
            since: Instant::now(),
            bytes: 0,
        }
    }
}

/// A reader (a body downloading, or a file uploading as fast as the connection takes it)
/// that fails with `TimedOut` once fewer than `limit` bytes per second went through it over
/// a whole window.
#[derive(Debug)]
#[cfg_attr(not(feature = "registry"), allow(dead_code))] // the HTTP client's
pub(crate) struct Paced<R> {
    inner: R,
    limit: u64,
    window: Duration,
    since: Instant,
    bytes: u64,
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.limit == 0 {
            return Ok(n);
        }
        self.bytes += n as u64;
        let elapsed = self.since.elapsed();
        if elapsed >= self.window {
            let need = self.limit.saturating_mul(self.window.as_secs().max(1));
            if self.bytes < need {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "slower than {} bytes/s over {} s ({} bytes in {:.0} s; see --speed-limit)",
                        self.limit,
                        self.window.as_secs(),
                        self.bytes,
                        elapsed.as_secs_f64()
                    ),
                ));
            }
            self.since = Instant::now();
            self.bytes = 0;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_environment_which_beats_the_defaults() -> Result<()> {
        let none = |_: &str| None;
        assert_eq!(
            Timeouts::from_flags_and_env([None; 4], none)?,
            Timeouts::default()
        );
        let env = |k: &str| match k {
            "STACKBUILD_IDLE_TIMEOUT" => Some("7".to_owned()),
            "STACKBUILD_SPEED_LIMIT" => Some("0".to_owned()),
            "STACKBUILD_CONNECT_TIMEOUT" => Some("9".to_owned()),
            _ => None,
        };
        let t = Timeouts::from_flags_and_env([Some(0), None, None, Some(3)], env)?;
        assert_eq!(
            t,
            Timeouts {
                connect: None,
                idle: Some(Duration::from_secs(7)),
                speed_limit: 0,
                speed_time: Duration::from_secs(3),
            }
        );
        let bad = |k: &str| (k == "STACKBUILD_SPEED_TIME").then(|| "soon".to_owned());
        let e = Timeouts::from_flags_and_env([None; 4], bad)
            .expect_err("not a number")
            .to_string();
        assert!(e.contains("$STACKBUILD_SPEED_TIME=\"soon\""), "{e}");
        assert!(Timeouts::from_flags_and_env([None, None, Some(5), Some(0)], none).is_err());
        Ok(())
    }

    #[test]
    fn a_slow_reader_fails_once_a_window_has_passed() {
        // A zero-length window: the first read that moves fewer bytes than the limit fails.
        let t = Timeouts {
            speed_limit: 1 << 30,
            speed_time: Duration::ZERO,
            ..Timeouts::default()
        };
        let mut r = t.paced(&b"abc"[..]);
        let e = r.read(&mut [0u8; 8]).expect_err("too slow");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("--speed-limit"), "{e}");
        // No limit: reads pass through.
        let t = Timeouts {
            speed_limit: 0,
            ..t
        };
        let mut out = Vec::new();
        t.paced(&b"abc"[..])
            .read_to_end(&mut out)
            .expect("unlimited");
        assert_eq!(out, b"abc");
    }
}
