//! Crash at every step of staging: the real box is killed with SIGKILL at
//! each failpoint of the Stager while it builds set B over an installed set
//! A; `banalytics-box apply` then recovers in a fresh process. `modules/`
//! is exactly A or exactly B (with the models of the same side), a marker
//! never stands beside incomplete content, a second recovery changes
//! nothing, and `data/` and `config/` are byte identical.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    box_bin,
    fixtures::{publish, tree},
    poll_until,
    portal::{Portal, PortalConfig, PortalHandle},
    TempHome, DEADLINE,
};

const ENV: &str = "5f0c7a1e-0000-4000-8000-00000000c0de";

fn config(portal: &PortalHandle) -> String {
    format!(
        "[components.portal]\nkind = \"portal-integration\"\nportal_url = \"{}\"\n\n[components.upgrade-center]\nkind = \"software-upgrade-center\"\nrepository_url = \"{}\"\nhealth_grace_s = 0.3\n",
        portal.portal_url(),
        portal.repo_url()
    )
}

/// A home with set A installed (staged by a first run, applied) and B
/// assigned at the portal.
fn home_with_a(portal: &PortalHandle) -> Result<TempHome> {
    portal.assign(ENV, &["com.example:alpha:1.0", "com.example:beta:1.0"])?;
    let home = TempHome::new(&config(portal))?;
    banalytics_tests::e2e::register_home(portal, &home.path(), ENV)?;
    std::fs::create_dir_all(home.path().join("data"))?;
    std::fs::write(home.path().join("data/recording.bin"), vec![3u8; 10_000])?;
    let first = home.start(0)?;
    ensure!(
        first.wait(DEADLINE)?.code() == Some(75),
        "first run did not stage A"
    );
    ensure!(apply(&home)?, "apply failed");
    commit(&home)?;
    portal.assign(ENV, &["com.example:alpha:2.0", "com.example:gamma:1.0"])?;
    Ok(home)
}

/// Runs the box until the set on probation is committed, then stops it: a
/// set staged while another is on probation waits for its verdict, and
/// this test is about staging, not probation.
fn commit(home: &TempHome) -> Result<()> {
    let run = home.start(100)?;
    poll_until(DEADLINE, "the applied set committed", || {
        let out = home.cli(&["status", "--json"]).ok()?;
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (s["host"]["running"] == true && s["upgrade"]["probation"].is_null()).then_some(())
    })?;
    ensure!(
        run.signal_and_wait(libc::SIGTERM)?.success(),
        "the box did not stop"
    );
    Ok(())
}

fn apply(home: &TempHome) -> Result<bool> {
    Ok(Command::new(box_bin())
        .arg("--home")
        .arg(home.path())
        .arg("apply")
        .output()?
        .status
        .success())
}

/// Runs the box with `env`, asks it to synchronise, and waits for it to end
/// (killed at a failpoint, or exit 75 after staging).
fn sync_once(
    home: &TempHome,
    portal: &PortalHandle,
    n: usize,
    env: &[(&str, &str)],
) -> Result<(std::process::ExitStatus, String)> {
    let log = home.log_path(n);
    let mut cmd = Command::new(box_bin());
    cmd.arg("--home")
        .arg(home.path())
        .arg("run")
        .stderr(std::fs::File::create(&log)?);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    // The link is up; the upgrade center may not have started yet: the
    // host's bus keeps the EVT_SYNC_SOFT for it until every component
    // started.
    let ready = poll_until(DEADLINE, "the box to connect", || {
        portal
            .environment(ENV)
            .filter(|e| e.live_connections > 0)
            .map(|_| ())
    });
    if let Err(e) = ready {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    ensure!(portal.sync(ENV) >= 1, "sync not delivered");
    let status = poll_until(DEADLINE, "the box to end", || {
        child.try_wait().ok().flatten()
    });
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context(std::fs::read_to_string(&log).unwrap_or_default()));
        }
    };
    poll_until(DEADLINE, "the portal to see the box go", || {
        portal
            .environment(ENV)
            .filter(|e| e.live_connections == 0)
            .map(|_| ())
    })?;
    Ok((status, std::fs::read_to_string(&log)?))
}

#[test]
fn staging_survives_a_kill_at_every_step() -> Result<()> {
    let _machine = crate::machine::shared();
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir()?;
    let portal = Portal::spawn(PortalConfig::new(dir.path().join("portal")))?;
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files)?;
    for (a, v) in [
        ("alpha", "1.0"),
        ("beta", "1.0"),
        ("alpha", "2.0"),
        ("gamma", "1.0"),
    ] {
        publish(&portal, &files, a, v, Some(b"shared"))?;
    }

    // A clean run: the failpoints staging passes, and the trees of A and B.
    let home = home_with_a(&portal)?;
    let a = (
        tree(&home.path().join("modules")),
        tree(&home.path().join("models")),
    );
    let (status, log) = sync_once(&home, &portal, 1, &[("BANALYTICS_FAILPOINT_TRACE", "1")])?;
    ensure!(
        status.code() == Some(75),
        "clean staging ended with {status}: {log}"
    );
    let points: Vec<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix("failpoint "))
        .filter(|p| p.starts_with("stage."))
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    ensure!(points.len() >= 7, "{points:?}");
    let staged_b = tree(&home.path().join("modules-upgrade"));
    ensure!(apply(&home)?);
    let b = (
        tree(&home.path().join("modules")),
        tree(&home.path().join("models")),
    );
    ensure!(a != b);
    eprintln!("staging: {} failpoints: {points:?}", points.len());

    for point in &points {
        portal.assign(ENV, &["com.example:alpha:1.0", "com.example:beta:1.0"])?;
        let home = home_with_a(&portal).with_context(|| point.clone())?;
        let sentinel = (
            tree(&home.path().join("data")),
            tree(&home.path().join("config")),
        );
        let (status, log) = sync_once(&home, &portal, 2, &[("BANALYTICS_FAILPOINT", point)])?;
        ensure!(
            status.signal() == Some(libc::SIGKILL),
            "{point}: not killed there ({status}): {log}"
        );
        ensure!(
            (
                tree(&home.path().join("modules")),
                tree(&home.path().join("models"))
            ) == a,
            "{point}: staging changed the active set"
        );
        let marker = home.path().join("modules-upgrade/modules-info.properties");
        if marker.exists() {
            ensure!(
                tree(&home.path().join("modules-upgrade")) == staged_b,
                "{point}: marker beside incomplete content"
            );
        }
        ensure!(apply(&home)?, "{point}: recovery failed");
        let active = (
            tree(&home.path().join("modules")),
            tree(&home.path().join("models")),
        );
        ensure!(
            active == a || active == b,
            "{point}: neither A nor B after recovery"
        );
        ensure!(
            (
                tree(&home.path().join("data")),
                tree(&home.path().join("config"))
            ) == sentinel,
            "{point}: data/ or config/ changed"
        );
        let settled = tree(home.path().as_path());
        ensure!(apply(&home)?);
        ensure!(
            tree(home.path().as_path()) == settled,
            "{point}: a second recovery changed something"
        );
    }
    Ok(())
}
