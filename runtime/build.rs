//! Rebuilds the runtime when `BANALYTICS_CORE_VERSION` changes: it names
//! this build's version (`launcher::BUILD_VERSION`), read with
//! `option_env!`, which cargo does not track by itself.

fn main() {
    println!("cargo:rerun-if-env-changed=BANALYTICS_CORE_VERSION");
    println!("cargo:rerun-if-changed=build.rs");
}
