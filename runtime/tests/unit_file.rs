//! The shipped systemd unit passes `systemd-analyze verify`, with the
//! executable its `ExecStart=` names present: a root folder of the test's
//! own holds the unit, the system's units it refers to and this build's
//! `banalytics-box` at the unit's path.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{path::Path, process::Command};

const UNIT: &str = include_str!("../../packaging/banalytics-box.service");

/// The `ExecStart=` executable of the unit.
fn exec_start() -> &'static str {
    UNIT.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|l| l.split_whitespace().next())
        .expect("the unit has an ExecStart=")
}

fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("systemd-analyze");
    }
    // `.ci/run` installs Debian's systemd when it is missing.
    assert!(
        std::env::var_os("CI").is_none(),
        "systemd-analyze is missing in CI (Debian's systemd package)"
    );
    eprintln!("systemd-analyze not found (Debian's systemd package): not verifying the unit");
    None
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(link, target).unwrap();
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    copy_dir(
        Path::new("/usr/lib/systemd/system"),
        &root.join("usr/lib/systemd/system"),
    );
    let unit = root.join("etc/systemd/system/banalytics-box.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, UNIT).unwrap();
    let verify = || {
        Command::new(analyze)
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg("--man=no")
            .arg(&unit)
            .output()
            .unwrap()
    };
    // Without the executable it is refused: the check is real.
    let refused = verify();
    assert!(
        !refused.status.success(),
        "verify accepts a unit whose executable is missing"
    );
    let exe = root.join(exec_start().trim_start_matches('/'));
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_banalytics-box"), &exe).unwrap();
    let out = verify();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "Type=notify",
        "NotifyAccess=all",
        "WatchdogSec=",
        // The package's paths and user (README, "packaging/").
        "ExecStart=/usr/bin/banalytics-box run",
        "User=banalytics",
        "Environment=BANALYTICS_HOME=/var/lib/banalytics",
        "WorkingDirectory=/var/lib/banalytics",
        // Its hardening.
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/banalytics",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service landlock_create_ruleset landlock_add_rule landlock_restrict_self",
        "LockPersonality=yes",
    ] {
        assert!(
            UNIT.lines().any(|l| l.starts_with(key)),
            "the unit sets {key}"
        );
    }
}
