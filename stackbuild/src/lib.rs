//! `stackbuild`: see the README and `stackbuild --help`.

use clap::Parser;

/// Command line of `stackbuild`.
#[derive(Debug, Parser)]
#[command(name = "stackbuild", version, about)]
pub struct Cli {}

/// Runs `stackbuild`.
pub fn run(_cli: Cli) -> anyhow::Result<()> {
    anyhow::bail!("stackbuild: not implemented yet")
}
