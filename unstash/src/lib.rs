//! `unstash`: see the README and `unstash --help`.

use clap::Parser;

/// Command line of `unstash`.
#[derive(Debug, Parser)]
#[command(name = "unstash", version, about)]
pub struct Cli {}

/// Runs `unstash`.
pub fn run(_cli: Cli) -> anyhow::Result<()> {
    anyhow::bail!("unstash: not implemented yet")
}
