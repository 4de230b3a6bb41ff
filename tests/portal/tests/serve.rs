//! The `banalytics-portal` binary as an operator runs it: `serve` starts,
//! says where it listens and where the console is, prints the admin token
//! made at the first start once, and stops on SIGTERM.

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
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        lines.push(line);
    }
    assert!(
        lines[0].starts_with("listening http://127.0.0.1:"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("console http://127.0.0.1:"),
        "{lines:?}"
    );
    let token = lines[2]
        .strip_prefix("admin token ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the token is printed at the first start: {lines:?}"))
        .to_string();
    let stored = std::fs::read_to_string(dir.path().join("admin-token.sha256")).unwrap();
    assert!(!stored.contains(&token), "only the hash is stored");
    assert!(dir.path().join("portal.addr").is_file());
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(!dir.path().join("portal.addr").exists());

    // A second start keeps the token and does not print it again.
    let mut child = Command::new(env!("CARGO_BIN_EXE_banalytics-portal"))
        .args(["serve", "--data"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!rest.contains("admin token"), "{rest}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("admin-token.sha256")).unwrap(),
        stored
    );
}
