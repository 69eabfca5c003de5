//! `stackmerge`: see the README and `stackmerge --help`.

use clap::Parser;

/// Command line of `stackmerge`.
#[derive(Debug, Parser)]
#[command(name = "stackmerge", version, about)]
pub struct Cli {}

/// Runs `stackmerge`.
pub fn run(_cli: Cli) -> anyhow::Result<()> {
    anyhow::bail!("stackmerge: not implemented yet")
}
