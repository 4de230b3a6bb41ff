//! Records the target triple the tests are built for: the platform of the
//! boxes they start, whose native modules are published per platform.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=BANALYTICS_TESTS_TARGET={target}");
}
