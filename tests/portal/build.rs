//! Records the target triple the portal is built for: the platform whose
//! native build `ModuleObject::main_size` reports.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=BANALYTICS_PORTAL_TARGET={target}");
}
