//! What a box tells the portal and the operator about a synchronisation
//! (issue 20), with real processes: a box already on its target set
//! reports `installed` (nothing changed), so a rollout that includes it
//! goes on; `upgrade` says what came of the request (joined a running
//! synchronisation, found the staged set waiting and for what), and is
//! refused at once while the portal link is down, with nothing about it
//! for the portal.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use banalytics_tests::{
    e2e::{env_uuid, BoxSettings, ManagedBox, ModuleSpec, PortalApi, PortalProcess},
    portal::rollout::{RolloutSpec, RolloutState, DEFAULT_WAVES},
};
use serde_json::Value;

/// How long a synchronisation, a restart and a commit may take on a loaded
/// two-core machine with debug builds.
const CONVERGE: Duration = Duration::from_secs(90);

/// The status message of `installed` for a set with nothing to do
/// (`portal_link::NOTHING_CHANGED`).
const NOTHING_CHANGED: &str = "nothing changed: the installed set is the target set";

/// A portal with `set` published under `dir`.
fn portal_with(dir: &std::path::Path, set: &[ModuleSpec]) -> Result<PortalProcess> {
    let portal = PortalProcess::start(&dir.join("portal"), None, &[])?;
    portal.publish_all(&dir.join("files"), set)?;
    Ok(portal)
}

fn coordinates(set: &[ModuleSpec]) -> Vec<String> {
    set.iter().map(|s| s.coordinates.clone()).collect()
}

/// Supervises `b` until the portal has `installed` from `env`.
fn until_installed(b: &mut ManagedBox, portal: &PortalProcess, env: &str) -> Result<()> {
    b.run_until(CONVERGE, "the set to be installed", |_| {
        let lines = portal.statuses(env).ok()?;
        lines.iter().any(|l| l.status == "installed").then_some(())
    })
}

/// `upgrade` on `b`: its exit status, stdout and stderr, and how long it
/// took.
fn upgrade(b: &ManagedBox) -> Result<(bool, String, String, Duration)> {
    let asked = Instant::now();
    let out = b.home().cli(&["upgrade"])?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        asked.elapsed(),
    ))
}

/// The `details` of the box's Portal Integration in `status`.
fn portal_details(b: &ManagedBox) -> Option<Value> {
    let status = b.status().ok()?;
    status["components"]
        .as_array()?
        .iter()
        .find(|c| c["kind"] == "portal-integration")
        .map(|c| c["details"].clone())
}

#[test]
fn a_rollout_over_three_boxes_one_already_on_its_set_finishes_without_a_halt() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let set = vec![ModuleSpec::new("com.example.roll:alpha:1.0", 20_000)];
    let portal = portal_with(dir.path(), &set)?;
    let target = coordinates(&set);
    let envs: Vec<String> = (0..3).map(|i| env_uuid(1400 + i)).collect();
    // The first box is on the set before the rollout; the others have
    // nothing assigned (their first synchronisation is cancelled: an
    // empty set).
    portal.assign_set(&envs[0], &target)?;
    let mut boxes = envs
        .iter()
        .map(|env| ManagedBox::new(&BoxSettings::new(&portal, Some(env))))
        .collect::<Result<Vec<_>>>()?;
    for b in &mut boxes {
        b.spawn()?;
    }
    until_installed(&mut boxes[0], &portal, &envs[0])?;
    for b in &mut boxes[1..] {
        b.run_until(CONVERGE, "the first synchronisation to end", |b| {
            b.sync_report().filter(|s| s["finished_ms"].is_u64())
        })?;
    }
    boxes[0].run_until(CONVERGE, "the set to be committed", |b| {
        b.status()
            .ok()
            .filter(|s| s["upgrade"]["probation"].is_null())
    })?;
    let before = portal.statuses(&envs[0])?.len();

    // Waves of one box each, the box already on the set first: its wave
    // must end for the others to start. No failure is tolerated.
    let admin = portal.admin();
    let spec = RolloutSpec {
        name: "alpha 1.0".into(),
        target: target.clone(),
        environments: envs.clone(),
        waves: DEFAULT_WAVES.to_vec(),
        failure_threshold_percent: 0,
        report_timeout_ms: 60_000,
    };
    let id = portal.block_on(admin.start_rollout(&spec))?.id;
    let start = Instant::now();
    let rollout = loop {
        for b in &mut boxes {
            b.supervise()?;
        }
        let r = portal
            .block_on(admin.rollouts())?
            .into_iter()
            .find(|r| r.id == id)
            .context("the rollout")?;
        match &r.state {
            RolloutState::Finished => break r,
            RolloutState::Running => {}
            other => bail!(
                "the rollout stopped: {other:?}; statuses of the box on the set: {:?}",
                portal
                    .statuses(&envs[0])?
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
        }
        ensure!(
            start.elapsed() < CONVERGE * 2,
            "the rollout did not finish: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("rollout over 3 boxes finished in {:?}", start.elapsed());
    ensure!(
        (rollout.installed(), rollout.failed()) == (3, 0),
        "{rollout:?}"
    );
    // The box on the set: its modules' `downloaded`, then `installed`
    // (nothing changed), the verdict that ends the synchronisation on the
    // console.
    let lines = portal.statuses(&envs[0])?;
    let after: Vec<String> = lines[before..].iter().map(ToString::to_string).collect();
    let last = lines.last().context("statuses")?;
    ensure!(
        last.status == "installed" && last.module.is_empty() && last.message == NOTHING_CHANGED,
        "{after:?}"
    );
    ensure!(
        lines[before..lines.len() - 1]
            .iter()
            .all(|l| l.status == "downloaded"),
        "{after:?}"
    );
    for b in &mut boxes {
        b.stop()?;
    }
    Ok(())
}

#[test]
fn upgrade_while_the_staged_set_waits_for_approval_says_it_waits_and_for_what() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let set = vec![ModuleSpec::new("com.example.ask:alpha:1.0", 20_000)];
    let portal = portal_with(dir.path(), &set)?;
    let env = env_uuid(1410);
    portal.assign_set(&env, &coordinates(&set))?;
    let mut settings = BoxSettings::new(&portal, Some(&env));
    settings.upgrade_extra = "apply = \"approval\"".into();
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    b.run_until(CONVERGE, "the set to be staged", |b| {
        b.sync_report().filter(|s| s["state"] == "staged")
    })?;
    let (ok, out, err, _) = upgrade(&b)?;
    ensure!(ok, "upgrade: {out} {err}");
    ensure!(
        out.contains("staged already") && out.contains("waits for approval"),
        "upgrade says the set waits and for what: {out}"
    );
    ensure!(b.is_running(), "nothing applied it: {}", b.log_tail(10));
    b.stop()?;
    Ok(())
}

#[test]
fn upgrade_during_a_running_synchronisation_says_it_joined_it() -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    // 512 KiB at 32 KiB/s: some 16 s of downloading to join.
    let set = vec![ModuleSpec::new("com.example.ask:big:1.0", 512 * 1024)];
    let portal = portal_with(dir.path(), &set)?;
    let env = env_uuid(1411);
    portal.assign_set(&env, &coordinates(&set))?;
    let mut settings = BoxSettings::new(&portal, Some(&env));
    settings.upgrade_extra = "max_download_rate = \"32 KiB/s\"".into();
    let mut b = ManagedBox::new(&settings)?;
    b.spawn()?;
    b.run_until(CONVERGE, "the download to run", |b| {
        b.sync_report().filter(|s| s["state"] == "downloading")
    })?;
    let (ok, out, err, _) = upgrade(&b)?;
    ensure!(ok, "upgrade: {out} {err}");
    ensure!(
        out.contains("joined the synchronisation that was running")
            && out.contains("trigger: first-run"),
        "upgrade says it joined the running synchronisation: {out}"
    );
    let sync = b.sync_report().context("the host runs")?;
    ensure!(
        sync["state"] == "downloading" && sync["skipped_triggers"] == 1,
        "{sync}"
    );
    b.stop()?;
    Ok(())
}

#[test]
fn upgrade_with_the_portal_down_is_refused_within_a_second_and_the_portal_hears_nothing_of_it(
) -> Result<()> {
    let _machine = crate::machine::shared();
    let dir = tempfile::tempdir()?;
    let set = vec![ModuleSpec::new("com.example.ask:alpha:1.0", 20_000)];
    let mut portal = portal_with(dir.path(), &set)?;
    let env = env_uuid(1412);
    portal.assign_set(&env, &coordinates(&set))?;
    let mut b = ManagedBox::new(&BoxSettings::new(&portal, Some(&env)))?;
    b.spawn()?;
    until_installed(&mut b, &portal, &env)?;
    b.run_until(CONVERGE, "the set to be committed", |b| {
        b.status()
            .ok()
            .filter(|s| s["host"]["running"] == true && s["upgrade"]["probation"].is_null())
    })?;
    let before = portal.statuses(&env)?;

    let (addr, data) = (portal.addr(), portal.data_dir().to_path_buf());
    portal.kill()?;
    b.run_until(CONVERGE, "the box to see the link down", |b| {
        portal_details(b).filter(|d| d["connected"] == false)
    })?;
    let (ok, out, err, took) = upgrade(&b)?;
    eprintln!("upgrade with the portal down answered in {took:?}");
    ensure!(!ok, "refused with a non-zero exit: {out} {err}");
    ensure!(
        took < Duration::from_secs(1),
        "refused within a second, not {took:?}"
    );
    ensure!(
        err.contains("refused") && err.contains("not connected to the portal"),
        "the refusal says why: {err}"
    );
    let sync = b.sync_report().context("the host runs")?;
    ensure!(
        sync["state"] == "refused"
            && sync["result"]
                .as_str()
                .is_some_and(|r| r.contains("not connected")),
        "status shows the refusal: {sync}"
    );
    let text = b.home().cli(&["status"])?;
    let text = String::from_utf8_lossy(&text.stdout);
    ensure!(text.contains("refused (trigger: local)"), "status: {text}");
    ensure!(
        b.log()
            .contains("the operator's synchronisation was refused"),
        "the log says so: {}",
        b.log_tail(10)
    );

    // The portal comes back: the box reconnects and sends nothing about
    // the refused request.
    let portal = PortalProcess::start(&data, Some(addr), &[])?;
    portal.wait_connected(&env, CONVERGE)?;
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        b.supervise()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = portal.statuses(&env)?;
    let new: Vec<String> = lines
        .iter()
        .skip(before.len().min(lines.len()))
        .map(ToString::to_string)
        .collect();
    ensure!(
        lines.len() <= before.len() && lines.iter().all(|l| l.status != "installation_cancelled"),
        "statuses after the reconnection: {new:?} (all: {:?})",
        lines.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    ensure!(b.home().cli(&["status"]).is_ok(), "the box still answers");
    b.stop()?;
    Ok(())
}
