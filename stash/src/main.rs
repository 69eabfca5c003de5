fn main() -> std::process::ExitCode {
    stackcore::cli::run_main::<stash::Cli>(stash::run)
}
