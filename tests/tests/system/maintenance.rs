//! When a box restarts to apply a staged set (issue 12), with real
//! processes: `apply = "approval"` waits for `banalytics-box approve`, or
//! for a portal synchronisation of the staged set when
//! `approval_from_portal = true` (and only then); `apply = "window"` waits
//! for its maintenance window and says so to the portal and in `status`;
//! a busy lease (the probe's drill) defers the restart until it is
//! released, and never longer than `max_defer`.

use std::{
    os::unix::process::ExitStatusExt,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use banalytics_tests::e2e::{
    env_uuid, BoxSettings, ManagedBox, ModuleSpec, PortalApi, PortalProcess, EXIT_RESTART,
};
use serde_json::json;

use crate::probation::{drill, world, ALPHA, BROKEN};

/// How long a synchronisation, a restart and a commit may take on a loaded
/// two-core machine with debug builds.
pub(crate) const CONVERGE: Duration = Duration::from_secs(60);

/// How long a box that must not restart is watched.
const QUIET: Duration = Duration::from_secs(3);

pub(crate) struct Scene {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) portal: PortalProcess,
    pub(crate) env: String,
    pub(crate) b: ManagedBox,
}

/// A portal with a one-module set for a fresh box whose upgrade center has
/// `upgrade_extra`, and a probe; the box runs and has staged the set.
pub(crate) fn staged_box(n: usize, upgrade_extra: &str) -> Result<Scene> {
    let dir = tempfile::tempdir()?;
    let portal = PortalProcess::start(&dir.path().join("portal"), None, &[])?;
    let env = env_uuid(1200 + n);
    let set = vec![ModuleSpec::new("com.example.cam:alpha:1.0", 20_000)];
    portal.publish_all(&dir.path().join("files"), &set)?;
    portal.assign_set(&env, &[set[0].coordinates.clone()])?;
    let mut settings = BoxSettings::new(&portal, Some(&env));
    settings.upgrade_extra = upgrade_extra.to_owned();
    settings.components = "[components.probe]\nkind = \"probe\"\n".to_owned();
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    b.run_until(CONVERGE, "the set to be staged", |b| {
        b.sync_report().filter(|s| s["state"] == "staged")
    })?;
    Ok(Scene {
        _dir: dir,
        portal,
        env,
        b,
    })
}

impl Scene {
    /// The box still runs after `QUIET`: nothing restarted it.
    fn still_running(&mut self, what: &str) -> Result<()> {
        std::thread::sleep(QUIET);
        ensure!(
            self.b.is_running(),
            "{what}: the box stopped: {}",
            self.b.log_tail(20)
        );
        Ok(())
    }

    fn expect_restart(&mut self, what: &str) -> Result<()> {
        let exit = self.b.wait_exit(CONVERGE)?;
        ensure!(
            exit.code() == Some(EXIT_RESTART),
            "{what}: {exit:?} (signal {:?}); {}",
            exit.signal(),
            self.b.log_tail(20)
        );
        Ok(())
    }

    fn busy_drill(&self, hold: bool) -> Result<()> {
        let pong = self.b.home().exchange(
            "probe.busy-drill",
            json!({"to": "probe", "seq": 7, "hold": hold}),
            "probe.pong",
            Duration::from_secs(10),
        )?;
        ensure!(pong.is_ok(), "the probe answered the drill: {pong:?}");
        Ok(())
    }

    fn approve(&self) -> Result<()> {
        let out = self.b.home().cli(&["approve"])?;
        ensure!(
            out.status.success(),
            "approve: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

#[test]
fn approval_from_the_cli_applies_the_staged_set_and_the_portal_heard_what_it_waited_for(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let mut s = staged_box(1, "apply = \"approval\"")?;
    let report = s.b.sync_report().unwrap_or_default();
    ensure!(
        report["waits_for"]
            .as_str()
            .is_some_and(|w| w.contains("banalytics-box approve")),
        "status says what the set waits for: {report}"
    );
    let text = s.b.home().cli(&["status"])?;
    let text = String::from_utf8_lossy(&text.stdout);
    ensure!(text.contains("waits for approval"), "status: {text}");
    let lines = s
        .portal
        .wait_for_status(&s.env, "downloaded", 0, CONVERGE)?;
    ensure!(
        lines
            .iter()
            .any(|l| l.status == "downloaded" && l.message.contains("waits for approval")),
        "the downloaded status tells the portal: {:?}",
        lines.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    s.still_running("not approved yet")?;

    s.approve()?;
    s.expect_restart("approved")?;
    s.b.spawn()?;
    s.portal.wait_for_status(&s.env, "installed", 0, CONVERGE)?;
    ensure!(s.b.installed()? == ["com.example.cam:alpha:1.0"]);
    // Nothing staged any more: nothing to approve.
    let out = s.b.home().cli(&["approve"])?;
    ensure!(
        !out.status.success(),
        "approve with nothing staged is refused"
    );
    Ok(())
}

/// The wait for the approval survives a restart for another reason (a
/// power cut, a crash: here SIGKILL): the start after it does not apply
/// the staged set, `status` still says what it waits for, and it is
/// applied once approved. (Before, the next start applied it.)
#[test]
fn a_staged_set_waiting_for_approval_is_not_applied_by_a_restart_for_another_reason() -> Result<()>
{
    let _machine = crate::machine::shared();
    let mut s = staged_box(5, "apply = \"approval\"")?;
    s.b.kill()?;
    s.b.spawn()?;
    let report =
        s.b.run_until(CONVERGE, "the first synchronisation after the kill", |b| {
            b.sync_report().filter(|r| r["finished_ms"].is_u64())
        })?;
    ensure!(
        report["result"] == "the target set is staged already",
        "the held set is not staged again: {report}"
    );
    ensure!(
        s.b.installed()?.is_empty(),
        "applied at the start after the kill: {}",
        s.b.log_tail(20)
    );
    let status = s.b.status()?;
    ensure!(
        status["upgrade"]["staged_waits_for"]
            .as_str()
            .is_some_and(|w| w.contains("banalytics-box approve")),
        "{}",
        status["upgrade"]
    );
    s.still_running("held after the kill")?;

    s.approve()?;
    s.expect_restart("approved")?;
    s.b.spawn()?;
    s.portal.wait_for_status(&s.env, "installed", 0, CONVERGE)?;
    ensure!(s.b.installed()? == ["com.example.cam:alpha:1.0"]);
    ensure!(
        !s.b.home().path().join("state/apply-hold.json").exists(),
        "the hold went before the restart"
    );
    Ok(())
}

#[test]
fn a_portal_sync_of_the_staged_set_is_no_approval_unless_approval_from_portal() -> Result<()> {
    let _machine = crate::machine::shared();
    let mut s = staged_box(2, "apply = \"approval\"")?;
    let before = s.b.sync_report().unwrap_or_default()["started_ms"].clone();
    ensure!(
        s.portal.sync_env(&s.env)? == 1,
        "the portal reached the box"
    );
    s.b.run_until(CONVERGE, "the portal's synchronisation to end", |b| {
        b.sync_report()
            .filter(|r| r["started_ms"] != before && r["finished_ms"].is_u64())
    })?;
    let report = s.b.sync_report().unwrap_or_default();
    ensure!(
        report["result"] == "the target set is staged already",
        "{report}"
    );
    s.still_running("a portal sync without approval_from_portal")?;
    s.b.stop()?;
    Ok(())
}

#[test]
fn a_portal_sync_of_the_staged_set_approves_it_with_approval_from_portal() -> Result<()> {
    let _machine = crate::machine::shared();
    let mut s = staged_box(3, "apply = \"approval\"\napproval_from_portal = true")?;
    let report = s.b.sync_report().unwrap_or_default();
    ensure!(
        report["waits_for"]
            .as_str()
            .is_some_and(|w| w.contains("from the portal")),
        "{report}"
    );
    s.still_running("before the portal's synchronisation")?;
    ensure!(
        s.portal.sync_env(&s.env)? == 1,
        "the portal reached the box"
    );
    s.expect_restart("approved by the portal")?;
    ensure!(
        s.b.log().contains("approved by portal"),
        "{}",
        s.b.log_tail(20)
    );
    Ok(())
}

#[test]
fn a_closed_maintenance_window_holds_the_restart_and_the_portal_hears_until_when() -> Result<()> {
    let _machine = crate::machine::shared();
    // New Year's midnight in Berlin, for a minute: closed whenever the
    // test runs (except at that minute).
    let mut s = staged_box(
        4,
        "apply = \"window\"\nmaintenance_window = { schedule = \"0 0 1 1 *\", duration = \"1m\", timezone = \"Europe/Berlin\" }",
    )?;
    let report = s.b.sync_report().unwrap_or_default();
    let waits = report["waits_for"].as_str().unwrap_or_default().to_owned();
    ensure!(
        waits.contains("maintenance window")
            && waits.contains("-01-01T00:00:00+01:00[Europe/Berlin]"),
        "{report}"
    );
    let lines = s
        .portal
        .wait_for_status(&s.env, "downloaded", 0, CONVERGE)?;
    ensure!(
        lines
            .iter()
            .any(|l| l.status == "downloaded" && l.message == waits),
        "the downloaded status tells the portal: {:?}",
        lines.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    s.still_running("outside the window")?;
    s.b.stop()?;
    Ok(())
}

#[test]
fn a_busy_lease_defers_the_restart_until_it_is_released() -> Result<()> {
    let _machine = crate::machine::shared();
    let mut s = staged_box(5, "apply = \"approval\"\nmax_defer = \"10m\"")?;
    s.busy_drill(true)?;
    s.approve()?;
    s.b.run_until(CONVERGE, "the restart to wait for the lease", |b| {
        let status = b.status().ok()?;
        status["busy"]["restart_deferred_until_ms"].as_u64()?;
        Some(())
    })?;
    let status = s.b.status()?;
    ensure!(
        status["busy"]["leases"][0]["holder"] == "probe"
            && status["busy"]["leases"][0]["lease"] == "drill",
        "{}",
        status["busy"]
    );
    let busy = |l: &banalytics_tests::e2e::StatusLine| {
        l.status == "downloaded" && l.message.contains("waits for busy components (probe/drill")
    };
    banalytics_tests::poll_until(CONVERGE, "the portal to hear of the busy probe", || {
        s.portal
            .statuses(&s.env)
            .ok()?
            .iter()
            .any(busy)
            .then_some(())
    })
    .with_context(|| s.b.log_tail(30))?;
    s.still_running("while the probe is busy")?;
    s.busy_drill(false)?;
    s.expect_restart("the lease released")?;
    ensure!(
        s.b.log().contains("busy leases released"),
        "{}",
        s.b.log_tail(20)
    );
    Ok(())
}

#[test]
fn a_busy_lease_never_defers_the_restart_beyond_max_defer() -> Result<()> {
    let _machine = crate::machine::shared();
    let mut s = staged_box(6, "apply = \"approval\"\nmax_defer = \"4s\"")?;
    s.busy_drill(true)?;
    let approved = Instant::now();
    s.approve()?;
    s.expect_restart("max_defer passed")?;
    let waited = approved.elapsed();
    ensure!(
        waited >= Duration::from_secs(4),
        "restarted after {waited:?}, before max_defer"
    );
    let log = s.b.log();
    ensure!(
        log.contains("busy leases still held after max_defer") && log.contains("probe/drill"),
        "the log names who held the lease: {}",
        s.b.log_tail(20)
    );
    Ok(())
}

#[test]
fn the_busy_gate_also_holds_the_restart_a_failed_probation_causes() -> Result<()> {
    let _machine = crate::machine::shared();
    let w = world()?;
    let env = env_uuid(1207);
    w.portal.assign_set(&env, &[ALPHA.into(), BROKEN.into()])?;
    let mut settings = BoxSettings::new(&w.portal, Some(&env));
    settings.max_boot_attempts = 2;
    settings.upgrade_extra = "max_defer = \"3s\"".into();
    // `drill` fails while the broken module is installed; `busy` holds
    // its lease from its start on.
    settings.components = format!(
        "{}[components.busy]\nkind = \"probe\"\nbusy_lease_at_start = true\n",
        drill("stop")
    );
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    let staged = b.wait_exit(CONVERGE)?;
    ensure!(
        staged.code() == Some(EXIT_RESTART),
        "{staged:?}: {}",
        b.log_tail(20)
    );
    // The set starts on probation, `drill` fails, the verdict asks for a
    // restart: the busy lease holds it for max_defer.
    b.spawn()?;
    let started = Instant::now();
    let failed = b.wait_exit(CONVERGE)?;
    let waited = started.elapsed();
    ensure!(
        failed.code() == Some(EXIT_RESTART),
        "{failed:?}: {}",
        b.log_tail(20)
    );
    let log = std::fs::read_to_string(b.home().log_path(2))?;
    let verdict = log
        .find("of the new module set failed")
        .context("the probation verdict in the second start's log")?;
    let deferred = log
        .find("restart deferred until the busy leases are released")
        .context("the deferral in the second start's log")?;
    ensure!(verdict < deferred, "the deferral follows the verdict");
    ensure!(
        log.contains("busy leases still held after max_defer") && log.contains("busy/drill"),
        "the log names who held the lease: {}",
        b.log_tail(20)
    );
    ensure!(
        waited >= Duration::from_secs(3),
        "restarted after {waited:?}"
    );
    Ok(())
}
