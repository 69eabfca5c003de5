//! `stash`: see the README and `stash --help`.

use clap::Parser;

/// Command line of `stash`.
#[derive(Debug, Parser)]
#[command(name = "stash", version, about)]
pub struct Cli {}

/// Runs `stash`.
pub fn run(_cli: Cli) -> anyhow::Result<()> {
    anyhow::bail!("stash: not implemented yet")
}
