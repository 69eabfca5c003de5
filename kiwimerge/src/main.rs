fn main() -> std::process::ExitCode {
    stackcore::cli::run_main::<kiwimerge::Cli>(kiwimerge::run)
}
