//! `banalytics-portal`: the reference portal (protocol, repository, admin
//! commands). All of it lives in the `banalytics_portal` library.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::process::ExitCode;

fn main() -> ExitCode {
    match banalytics_portal::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
