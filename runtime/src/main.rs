//! `banalytics-box`: thin glue over [`banalytics_runtime::cli`].

fn main() -> std::process::ExitCode {
    banalytics_runtime::cli::main()
}
