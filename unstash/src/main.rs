fn main() -> std::process::ExitCode {
    stackcore::cli::run_main::<unstash::Cli>(unstash::run)
}
