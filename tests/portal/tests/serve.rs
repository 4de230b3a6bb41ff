//! The `banalytics-portal` binary as an operator runs it: `serve` starts,
//! says where it listens, and stops on SIGTERM.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

#[test]
fn serve_prints_its_url_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_banalytics-portal"))
        .args(["serve", "--data"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening http://127.0.0.1:"), "{line:?}");
    assert!(dir.path().join("portal.addr").is_file());
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(!dir.path().join("portal.addr").exists());
}
