//! `banalytics-box run` refuses a bad `box.toml` before anything starts, and
//! says where and what it accepts.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::process::Command;

fn refuse(config: &str) -> (i32, String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("config")).unwrap();
    let file = home.join("config/box.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_banalytics-box"))
        .arg("--home")
        .arg(&home)
        .arg("run")
        .output()
        .unwrap();
    assert!(
        !home.join("state/control.sock").exists(),
        "a refused host must not listen"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file,
    )
}

const HEAD: &str = "[log]\nlevel = \"info\"\n\n[components.alpha]\nkind = \"probe\"\n";

#[test]
fn refuses_an_unknown_key_naming_file_line_and_accepted_keys() {
    let (code, err, file) = refuse(&format!("{HEAD}colour = \"red\"\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}:6:", file.display())), "{err}");
    assert!(err.contains("colour"), "{err}");
    assert!(err.contains("fail_while_file"), "accepted keys: {err}");
}

#[test]
fn refuses_an_unknown_host_key_naming_file_line_and_accepted_keys() {
    let (code, err, file) = refuse("[log]\nlevel = \"info\"\ncolour = 1\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}:3:", file.display())), "{err}");
    assert!(err.contains("level") && err.contains("format"), "{err}");
}

#[test]
fn refuses_an_unknown_kind_naming_file_line_and_accepted_kinds() {
    let (code, err, file) = refuse("\n[components.cam]\nkind = \"camera\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}:3:", file.display())), "{err}");
    assert!(err.contains("\"camera\""), "{err}");
    assert!(
        err.contains("accepted kinds: probe, portal-integration, software-upgrade-center"),
        "{err}"
    );
}

#[test]
fn refuses_a_5min_restart_policy_naming_file_line_and_accepted_values() {
    let (code, err, file) = refuse(&format!("{HEAD}restart_on_failure = \"5min\"\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}:6:", file.display())), "{err}");
    assert!(err.contains("\"5min\""), "{err}");
    assert!(err.contains("stop, immediate, 10s, 30s, 1min"), "{err}");
}

#[test]
fn refuses_a_configured_component_id() {
    let (code, err, _) = refuse(&format!("{HEAD}id = \"x\"\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be configured"), "{err}");
}
