//! `banalytics-box`: thin glue over [`banalytics_runtime::cli`].

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

fn main() -> std::process::ExitCode {
    banalytics_runtime::cli::main()
}
