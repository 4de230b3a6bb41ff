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

/// Runs a client command of the binary against the portal of `data`.
fn portal_cmd(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_banalytics-portal"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env("BANALYTICS_PORTAL_TOKEN", "serve-test-token")
        .output()
        .unwrap()
}

#[test]
fn environments_add_prints_the_secret_once_and_revoke_and_rotate_manage_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_banalytics-portal"))
        .args(["serve", "--open-registration", "--data"])
        .arg(dir.path())
        .env("BANALYTICS_PORTAL_TOKEN", "serve-test-token")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening "), "{line}");

    let add = portal_cmd(dir.path(), &["environments", "add", "--name", "kitchen"]);
    assert!(add.status.success(), "{add:?}");
    let text = String::from_utf8(add.stdout).unwrap();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in {text}"))
            .to_string()
    };
    let (uuid, secret) = (value("environmentUuid"), value("environmentSecret"));
    assert_eq!(uuid.len(), 36);
    // The database (its file and its log) keeps the UUID, not the secret.
    let stored: String = ["portal.db", "portal.db-wal"]
        .iter()
        .filter_map(|f| std::fs::read(dir.path().join(f)).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect();
    assert!(stored.contains(&uuid) && !stored.contains(&secret));

    let rotate = portal_cmd(dir.path(), &["environments", "rotate-secret", &uuid]);
    assert!(rotate.status.success(), "{rotate:?}");
    let revoke = portal_cmd(dir.path(), &["environments", "revoke", &uuid]);
    assert!(revoke.status.success(), "{revoke:?}");
    let list = portal_cmd(dir.path(), &["environments"]);
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(
        listed.contains(&format!("{uuid} (kitchen) revoked")),
        "{listed}"
    );
    let unknown = portal_cmd(dir.path(), &["environments", "revoke", "never-added"]);
    assert!(!unknown.status.success());

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(err.contains("open registration"), "warned at start: {err}");
}
