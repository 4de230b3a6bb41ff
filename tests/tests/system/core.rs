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
    poll_until,
    portal::{ModuleType, Portal, PortalConfig, PortalHandle, PublishRequest},
    DEADLINE, PLATFORM,
};
use serde_json::Value;

use crate::watchdog::{Heard, WATCHDOG};

/// A synchronisation, restarts and a verdict on a loaded two-core machine.
const CONVERGE: Duration = Duration::from_secs(90);

const CORE_2: &str = "com.banalytics.box:core:2.0";

fn portal(dir: &Path) -> Result<PortalHandle> {
    Ok(Portal::spawn(PortalConfig::new(dir.join("portal")))?)
}

/// Publishes `bytes` as the core `coordinates` built for this platform.
pub(crate) fn publish_core(
    portal: &PortalHandle,
    dir: &Path,
    coordinates: &str,
    bytes: &[u8],
) -> Result<()> {
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

/// Core 2.0: the test's own `banalytics-box` with bytes appended.
fn core_2() -> Result<Vec<u8>> {
    let mut exe = std::fs::read(box_bin())?;
    exe.extend_from_slice(b"\nbanalytics core 2.0\n");
    Ok(exe)
}

/// Publishes `bytes` as the core `coordinates`, assigns it alone to
/// environment number `n` and starts a box of that environment.
fn box_assigned_core(
    portal: &PortalHandle,
    dir: &Path,
    coordinates: &str,
    bytes: &[u8],
    n: usize,
) -> Result<(String, ManagedBox)> {
    publish_core(portal, dir, coordinates, bytes)?;
    let env = env_uuid(n);
    portal.assign_set(&env, &[coordinates.to_owned()])?;
    let mut b = ManagedBox::new(&settings(portal, &env))?;
    b.spawn()?;
    Ok((env, b))
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
    let (env, mut b) = box_assigned_core(&portal, dir.path(), CORE_2, &core_2()?, 401)?;

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
    // The request that names the core is sent on the commit, beside
    // `installed`; frames of two kinds may reach the portal in either order.
    b.run_until(DEADLINE, "the portal to hear core 2.0", |_| {
        let report = portal.environment_report(&env).ok()??;
        (report.last_core_module?["version"] == "2.0").then_some(())
    })?;
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

#[test]
fn a_core_of_the_set_speaks_to_the_service_manager_through_the_launchers_relay() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = portal(dir.path())?;
    publish_core(&portal, dir.path(), CORE_2, &core_2()?)?;
    let env = env_uuid(403);
    portal.assign_set(&env, &[CORE_2.to_owned()])?;
    let mut b = ManagedBox::new(&settings(&portal, &env))?;
    let socket = dir.path().join("notify.sock");
    let heard = Heard::listen(&socket)?;
    b.set_env("NOTIFY_SOCKET", socket.to_str().context("utf-8 path")?);
    b.set_env("WATCHDOG_USEC", &WATCHDOG.as_micros().to_string());
    b.spawn()?;

    let v = verdict(&portal, &mut b, &env)?;
    ensure!(v.status == "installed", "{v}");
    let core = running_core(&mut b)?;
    ensure!(core["origin"] == "module-set", "{core}");
    ensure!(
        b.path().join("state/notify-relay.sock").exists(),
        "the launcher relays its core's notifications"
    );
    let started = heard.times("STATUS=starting core 2.0 (on probation)");
    ensure!(
        started.len() == 1,
        "the launcher says what it starts: {:?}",
        heard.all()
    );
    ensure!(
        heard.times("READY=1").iter().any(|t| *t > started[0]),
        "the core's READY=1 reaches the service manager: {:?}",
        heard.all()
    );
    let committed = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    ensure!(
        heard.pings_between(committed, std::time::Instant::now()) >= 2,
        "the committed core's pings are relayed: {:?}",
        heard.all()
    );
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_core_of_the_set_with_the_launchers_own_bytes_is_the_launcher_reporting_the_sets_version(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = portal(dir.path())?;
    let core_1 = "com.banalytics.box:core:1.0";
    let (env, mut b) =
        box_assigned_core(&portal, dir.path(), core_1, &std::fs::read(box_bin())?, 402)?;

    let v = verdict(&portal, &mut b, &env)?;
    ensure!(v.status == "installed", "{v}");
    let core = running_core(&mut b)?;
    ensure!(
        core["version"] == "1.0" && core["origin"] == "launcher",
        "the launcher is core 1.0 of the set: {core}"
    );
    ensure!(
        core["pid"].as_u64().map(|p| p as u32) == b.pid(),
        "no child: the launcher runs the components itself: {core}"
    );
    ensure!(b.stop()?.success());
    Ok(())
}

/// A set whose core is `bytes` is rolled back after two starts, with
/// `reason` in `installation_cancelled` and in `status`; the launcher is
/// the core again and the link is up.
fn broken_core_is_rolled_back(n: usize, bytes: &[u8], reason: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let portal = portal(dir.path())?;
    let (env, mut b) = box_assigned_core(&portal, dir.path(), CORE_2, bytes, 410 + n)?;

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

#[test]
fn a_core_that_hangs_after_it_reported_ready_is_rolled_back() -> Result<()> {
    let _machine = crate::machine::shared();
    // Writes the readiness line on the launcher's pipe, then sleeps deaf
    // to SIGTERM (an ignored signal stays ignored across exec), so the
    // launcher must escalate to SIGKILL.
    broken_core_is_rolled_back(
        5,
        br#"#!/bin/bash
fd=$(printf '%s' "$BANALYTICS_LAUNCHER" | sed -n 's/.*"ready_fd":\([0-9]*\).*/\1/p')
eval "echo ready >&$fd"
trap '' TERM
exec sleep 600
"#,
        "the core did not commit within",
    )
}

#[test]
fn a_set_whose_core_speaks_only_a_newer_launcher_handshake_is_refused_before_download() -> Result<()>
{
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = portal(dir.path())?;
    let file = dir.path().join("core-2.0");
    std::fs::write(&file, core_2()?)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
    let mut req = PublishRequest::native(
        CORE_2,
        ModuleType::Core,
        "bin",
        [(PLATFORM.to_owned(), file)],
    );
    req.launcher_handshakes = Some(vec![2]);
    portal.publish_module(&req)?;
    let env = env_uuid(430);
    portal.assign_set(&env, &[CORE_2.to_owned()])?;
    let mut b = ManagedBox::new(&settings(&portal, &env))?;
    b.spawn()?;

    let v = verdict(&portal, &mut b, &env)?;
    ensure!(
        v.status == "installation_cancelled"
            && v.message.contains("launcher handshake versions [2]")
            && v.message.contains("speaks version 1")
            && v.message.contains("install a banalytics-box package"),
        "refused, naming the launcher to install: {v}"
    );
    let fetched: Vec<String> = portal
        .stats()
        .paths
        .into_keys()
        .filter(|p| p.contains("/core/2.0/"))
        .collect();
    ensure!(
        fetched.is_empty(),
        "nothing of the core was fetched: {fetched:?}"
    );
    ensure!(b.exits().is_empty(), "no restart: {:?}", b.exits());
    ensure!(
        !b.path()
            .join("modules-upgrade/modules-info.properties")
            .exists(),
        "nothing staged"
    );
    ensure!(b.stop()?.success());
    Ok(())
}

#[test]
fn a_committed_core_that_refuses_the_launchers_handshake_leaves_the_launchers_own_build_running(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let portal = portal(dir.path())?;
    let (env, mut b) = box_assigned_core(&portal, dir.path(), CORE_2, &core_2()?, 431)?;
    let v = verdict(&portal, &mut b, &env)?;
    ensure!(v.status == "installed", "{v}");
    ensure!(running_core(&mut b)?["origin"] == "module-set");
    ensure!(b.stop()?.success());

    // An older package under the committed set: its core now refuses the
    // launcher's handshake, as a core of a newer handshake would.
    let core = b.path().join("modules/banalytics-box");
    std::fs::write(
        &core,
        "#!/bin/sh\necho 'banalytics-box: the launcher speaks handshake version 1, this core 2' >&2\nexit 3\n",
    )?;
    std::fs::set_permissions(&core, std::fs::Permissions::from_mode(0o755))?;
    let exits = b.exits().len();
    b.spawn()?;
    let core = running_core(&mut b)?;
    ensure!(
        core["origin"] == "launcher",
        "the launcher's own build runs: {core}"
    );
    let why = core["fallback"].as_str().unwrap_or_default();
    ensure!(
        why.contains("refused this launcher's handshake version 1")
            && why.contains("keeps the set"),
        "status says why: {core}"
    );
    ensure!(
        b.exits().len() == exits,
        "no restart loop: {:?}",
        &b.exits()[exits..]
    );
    ensure!(
        b.installed()?.contains(&CORE_2.to_owned()),
        "the set is kept: {:?}",
        b.installed()?
    );
    let text = b.home().cli(&["status"])?;
    let text = String::from_utf8_lossy(&text.stdout);
    ensure!(
        text.contains("core: not the set's: the set's core 2.0 refused"),
        "{text}"
    );
    portal.wait_connected(&env, DEADLINE)?;
    let asked = b.home().cli(&["upgrade"])?;
    ensure!(asked.status.success(), "{asked:?}");
    b.run_until(DEADLINE, "the portal to hear why", |_| {
        let report = portal.environment_report(&env).ok()??;
        let build = report.last_core_build?;
        build["fallback"]
            .as_str()
            .is_some_and(|f| f.contains("refused this launcher's handshake"))
            .then_some(())
    })?;
    ensure!(b.stop()?.success());
    Ok(())
}

/// Copies the tree `from` to `to` (files, folders, symlinks, modes).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
            std::fs::set_permissions(&dst, std::fs::metadata(&src)?.permissions())?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// A box of `env` whose home is a copy of `template`.
fn box_from(settings: &BoxSettings, template: &Path) -> Result<ManagedBox> {
    let b = ManagedBox::new(settings)?;
    std::fs::remove_dir_all(b.path())?;
    copy_tree(template, &b.path())?;
    Ok(b)
}

/// Whether the home's lock is free: no launcher and no core of it runs. A
/// service manager waits the same way for the unit's processes to be gone
/// before it starts the unit again.
fn lock_free(home: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(home.join("state/host.lock"))
    else {
        return true;
    };
    // Closing the file releases the lock.
    file.try_lock().is_ok()
}

fn committed(b: &ManagedBox) -> bool {
    b.status().is_ok_and(|s| {
        s["host"]["running"] == true
            && s["upgrade"]["probation"].is_null()
            && s["core"]["origin"] == "module-set"
    })
}

/// Points reached in the core (the launcher's child), not the launcher:
/// the core's own and the commit, which the running core does.
fn in_the_core(point: &str) -> bool {
    point.starts_with("core.") || point.starts_with("commit.")
}

/// The points on the path of a start that applies a staged set with a new
/// core and runs it: the launcher's preparation (the swap, the probation
/// count), its hop to the core, the core's handshake and the commit. Other
/// points the core passes (a component's, such as the portal outbox's) are
/// their own tests' business.
fn on_the_launchers_path(point: &str) -> bool {
    [
        "launcher.",
        "core.",
        "apply.",
        "probation.",
        "commit.",
        "rollback.",
    ]
    .iter()
    .any(|p| point.starts_with(p))
}

#[test]
fn a_kill_at_every_point_of_the_launchers_path_leaves_a_box_on_the_old_or_the_new_core(
) -> Result<()> {
    let _machine = crate::machine::shared();
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir()?;
    let portal = portal(dir.path())?;
    publish_core(&portal, dir.path(), CORE_2, &core_2()?)?;
    let env = env_uuid(420);
    portal.assign_set(&env, &[CORE_2.to_owned()])?;
    let settings = settings(&portal, &env);

    // The home as the start that stages core 2.0 leaves it: every run
    // below starts from a copy.
    let mut first = ManagedBox::new(&settings)?;
    first.spawn()?;
    let staged = first.wait_exit(CONVERGE)?;
    ensure!(
        staged.code() == Some(75) && first.path().join("modules-upgrade").is_dir(),
        "the first start stages core 2.0 and exits for a restart: {staged}: {}",
        first.log_tail(20)
    );
    let template = dir.path().join("staged-home");
    copy_tree(&first.path(), &template)?;
    drop(first);

    // A clean run: the points the launcher and its core pass, in order.
    let mut b = box_from(&settings, &template)?;
    b.spawn_with_env(&[("BANALYTICS_FAILPOINT_TRACE", "1")])?;
    poll_until(CONVERGE, "core 2.0 running, committed", || {
        committed(&b).then_some(())
    })
    .with_context(|| b.log_tail(20))?;
    ensure!(b.stop()?.success(), "{}", b.log_tail(20));
    let mut points: Vec<String> = Vec::new();
    for p in b.log().lines().filter_map(|l| l.strip_prefix("failpoint ")) {
        if on_the_launchers_path(p) && !points.iter().any(|q| q == p) {
            points.push(p.to_owned());
        }
    }
    drop(b);
    for expected in [
        "apply.journal-written",
        "probation.counted",
        "launcher.prepared",
        "launcher.identified",
        "launcher.core-spawning",
        "launcher.core-spawned",
        "core.handshake-taken",
        "core.ready-sent",
        "launcher.core-ready",
        "commit.begin",
        "launcher.core-exited",
    ] {
        ensure!(
            points.iter().any(|p| p == expected),
            "{expected} not traced: {points:?}"
        );
    }

    let mut outcomes = Vec::new();
    for point in &points {
        let mut b = box_from(&settings, &template)?;
        b.spawn_with_env(&[("BANALYTICS_FAILPOINT", point)])?;
        // Until the point kills a process, or, for a point on the way out
        // (`launcher.core-exited`), until the box runs and is stopped.
        let running = poll_until(CONVERGE, "the box to end or commit", || {
            if !b.is_running() {
                Some(false)
            } else {
                committed(&b).then_some(true)
            }
        })
        .with_context(|| format!("{point}: {}", b.log_tail(20)))?;
        let ended = if running {
            b.stop()?
        } else {
            b.wait_exit(DEADLINE)?
        };
        let log = b.log();
        ensure!(
            log.contains(&format!("failpoint {point} reached")),
            "{point}: not reached ({ended}): {}",
            b.log_tail(20)
        );
        if in_the_core(point) {
            ensure!(
                ended.code().is_some() && log.contains("killed by signal 9 (SIGKILL)"),
                "{point}: the core, not the launcher, is killed there, and the launcher says so ({ended}): {}",
                b.log_tail(20)
            );
        } else {
            ensure!(
                ended.signal() == Some(libc::SIGKILL),
                "{point}: the launcher is killed there ({ended}): {}",
                b.log_tail(20)
            );
        }

        // Started again as a service manager does: once the unit's
        // processes are gone, and again on 75.
        poll_until(DEADLINE, "the home lock released", || {
            lock_free(&b.path()).then_some(())
        })
        .with_context(|| point.clone())?;
        b.spawn()?;
        let core = running_core(&mut b).with_context(|| point.clone())?;
        let pid = core["pid"].as_u64().context("core pid")?;
        let exe_link = std::fs::read_link(format!("/proc/{pid}/exe"))
            .with_context(|| format!("{point}: core {core}"))?;
        match core["origin"].as_str() {
            Some("module-set") => ensure!(
                core["version"] == "2.0" && exe_link == b.path().join("modules/banalytics-box"),
                "{point}: the set's core 2.0 runs: {core}, {}",
                exe_link.display()
            ),
            Some("launcher") => ensure!(
                Some(pid as u32) == b.pid() && exe_link == box_bin().canonicalize()?,
                "{point}: the launcher's own core runs: {core}, {}",
                exe_link.display()
            ),
            _ => anyhow::bail!("{point}: neither the old nor the new core: {core}"),
        }
        portal
            .wait_connected(&env, DEADLINE)
            .with_context(|| format!("{point}: the portal link"))?;
        ensure!(b.stop()?.success(), "{point}: {}", b.log_tail(20));
        outcomes.push(format!(
            "{point} -> {} {}",
            core["origin"].as_str().unwrap_or("?"),
            core["version"].as_str().unwrap_or("?")
        ));
    }
    eprintln!("launcher path: {} failpoints: {outcomes:?}", points.len());
    Ok(())
}
