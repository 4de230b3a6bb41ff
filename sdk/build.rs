//! Records the compiler and target this SDK is built with, for the build
//! identity a plugin declares (`plugin::RUSTC_VERSION`, `plugin::TARGET`).

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BANALYTICS_RUSTC_VERSION={version}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=BANALYTICS_TARGET={target}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
