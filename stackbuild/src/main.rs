fn main() -> std::process::ExitCode {
    stackcore::cli::run_main::<stackbuild::Cli>(stackbuild::run)
}
