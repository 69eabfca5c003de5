fn main() -> std::process::ExitCode {
    stackcore::cli::run_main::<stackmerge::Cli>(stackmerge::run)
}
