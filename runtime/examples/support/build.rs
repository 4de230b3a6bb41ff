//! Builds a workspace package for a benchmark, into the benchmark's own
//! target folder and profile, so that it measures what it was built with.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Runs `cargo build --quiet {args}` for this example's target folder and
/// profile; returns the profile folder the artifacts are in.
pub fn cargo_build(args: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target = profile_dir.parent().expect("target dir");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(workspace)
        .args(["build", "--quiet"])
        .args(args)
        .arg("--target-dir")
        .arg(target);
    // `release`, or `dist`, the shipped build (Cargo.toml); else debug.
    if let Some(profile) = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| ["release", "dist"].contains(n))
    {
        cargo.args(["--profile", profile]);
    }
    assert!(
        cargo.status().expect("cargo").success(),
        "cargo build {}",
        args.join(" ")
    );
    profile_dir.to_owned()
}
