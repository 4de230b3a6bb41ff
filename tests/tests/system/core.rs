//! The core self-update (issue 9) with the real `banalytics-box` as the
//! installed launcher and the reference portal: a core module of the set
//! runs as the launcher's child and reports itself; broken cores are
//! counted by the launcher and rolled back with how they failed.
//!
//! The new core is the test's own `banalytics-box` with bytes appended (an
//! ELF runs the same with trailing bytes; its SHA-256 differs), published
//! as `com.banalytics.box:core:2.0` for this platform: no second build.

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use anyhow::{ensure, Context, Result};
use banalytics_tests::{
    box_bin,
    e2e::{env_uuid, BoxSettings, ManagedBox, PortalApi, StatusLine},
    portal::{ModuleType, Portal, PortalConfig, PortalHandle, PublishRequest},
    DEADLINE, PLATFORM,
};
use serde_json::Value;

/// A synchronisation, restarts and a verdict on a loaded two-core machine.
const CONVERGE: Duration = Duration::from_secs(90);

const CORE_2: &str = "com.banalytics.box:core:2.0";

fn portal(dir: &Path) -> Result<PortalHandle> {
    Ok(Portal::spawn(PortalConfig::new(dir.join("portal")))?)
}

/// Publishes `bytes` as the core `coordinates` built for this platform.
fn publish_core(portal: &PortalHandle, dir: &Path, coordinates: &str, bytes: &[u8]) -> Result<()> {
    let file = dir.join(coordinates.replace(':', "_"));
    std::fs::write(&file, bytes)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
    portal.publish_module(&PublishRequest::native(
        coordinates,
        ModuleType::Core,
        "bin",
        [(PLATFORM.to_owned(), file)],
    ))?;
    Ok(())
}

fn settings(portal: &PortalHandle, env: &str) -> BoxSettings {
    let mut s = BoxSettings::new(portal, Some(env));
    s.max_boot_attempts = 2;
    s.health_grace_s = 1.0;
    s
}

/// The portal's statuses for `env` until `installed` or
/// `installation_cancelled`.
fn verdict(portal: &PortalHandle, b: &mut ManagedBox, env: &str) -> Result<StatusLine> {
    b.run_until(CONVERGE, "installed or installation_cancelled", |_| {
        portal
            .statuses(env)
            .ok()?
            .into_iter()
            .find(|l| l.status == "installed" || l.status == "installation_cancelled")
    })
}

fn running_core(b: &mut ManagedBox) -> Result<Value> {
    b.run_until(DEADLINE, "the host running, committed", |b| {
        let s = b.status().ok()?;
        (s["host"]["running"] == true && s["upgrade"]["probation"].is_null())
            .then(|| s["core"].clone())
    })
}

#[test]
fn a_core_of_the_set_runs_as_the_launchers_child_and_reports_itself() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = portal(dir.path())?;
    let mut exe = std::fs::read(box_bin())?;
    exe.extend_from_slice(b"\nbanalytics core 2.0\n");
    publish_core(&portal, dir.path(), CORE_2, &exe)?;
    let env = env_uuid(401);
    portal.assign_set(&env, &[CORE_2.to_owned()])?;
    let mut b = ManagedBox::new(&settings(&portal, &env))?;
    b.spawn()?;

    let v = verdict(&portal, &mut b, &env)?;
    ensure!(v.status == "installed", "{v}");
    let core = running_core(&mut b)?;
    ensure!(
        core["version"] == "2.0" && core["origin"] == "module-set",
        "status reports the core of the set: {core}"
    );
    let pid = core["pid"].as_u64().context("core pid")?;
    let exe_link = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    ensure!(
        exe_link == b.path().join("modules/banalytics-box"),
        "the running core is the set's file: {}",
        exe_link.display()
    );
    ensure!(
        Some(pid as u32) != b.pid(),
        "the core runs as the launcher's child, not as the launcher"
    );
    let report = portal.environment_report(&env)?.context("env")?;
    let last = report.last_core_module.context("GET_ENV_MOD_REQ")?;
    ensure!(
        last["version"] == "2.0",
        "the portal hears core 2.0: {last}"
    );
    ensure!(
        b.stop()?.success(),
        "SIGTERM reaches the core through the launcher"
    );
    ensure!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "no core outlives the launcher"
    );
    Ok(())
}

/// A set whose core is `bytes` is rolled back after two starts, with
/// `reason` in `installation_cancelled` and in `status`; the launcher is
/// the core again and the link is up.
fn broken_core_is_rolled_back(n: usize, bytes: &[u8], reason: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let portal = portal(dir.path())?;
    publish_core(&portal, dir.path(), CORE_2, bytes)?;
    let env = env_uuid(410 + n);
    portal.assign_set(&env, &[CORE_2.to_owned()])?;
    let mut b = ManagedBox::new(&settings(&portal, &env))?;
    b.spawn()?;

    let v = verdict(&portal, &mut b, &env)?;
    ensure!(
        v.status == "installation_cancelled" && v.message.contains(reason),
        "cancelled with {reason:?}: {v}"
    );
    let core = running_core(&mut b)?;
    ensure!(
        core["origin"] == "launcher",
        "back on the launcher's core: {core}"
    );
    let status = b.status()?;
    let quarantined = status["upgrade"]["quarantined"]["reason"]
        .as_str()
        .unwrap_or_default();
    ensure!(quarantined.contains(reason), "status says why: {status}");
    // Staged, then two failed starts, then the rollback start that runs.
    ensure!(b.exits() == [75, 75, 75], "{:?}", b.exits());
    portal.wait_connected(&env, DEADLINE)?;
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_core_that_exits_at_start_is_rolled_back_with_its_exit_status() -> Result<()> {
    let _machine = crate::machine::shared();
    broken_core_is_rolled_back(1, b"#!/bin/sh\nexit 1\n", "the core exited with status 1")
}

#[test]
fn a_core_that_crashes_is_rolled_back_with_its_signal() -> Result<()> {
    let _machine = crate::machine::shared();
    broken_core_is_rolled_back(
        2,
        b"#!/bin/sh\nkill -SEGV $$\n",
        "killed by signal 11 (SIGSEGV)",
    )
}

#[test]
fn a_core_that_is_not_an_executable_for_this_machine_is_rolled_back() -> Result<()> {
    let _machine = crate::machine::shared();
    // An ELF header for another machine would do the same: execve refuses
    // it with ENOEXEC.
    broken_core_is_rolled_back(
        3,
        &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0xde, 0xad],
        "could not be started",
    )
}

#[test]
fn a_core_that_hangs_before_its_components_start_is_rolled_back() -> Result<()> {
    let _machine = crate::machine::shared();
    broken_core_is_rolled_back(
        4,
        b"#!/bin/sh\nexec sleep 600\n",
        "did not start its components within",
    )
}
