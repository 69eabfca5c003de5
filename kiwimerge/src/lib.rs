//! `kiwimerge`: see the README and `kiwimerge --help`.

use clap::Parser;

/// Command line of `kiwimerge`.
#[derive(Debug, Parser)]
#[command(name = "kiwimerge", version, about)]
pub struct Cli {}

/// Runs `kiwimerge`.
pub fn run(_cli: Cli) -> anyhow::Result<()> {
    anyhow::bail!("kiwimerge: not implemented yet")
}
